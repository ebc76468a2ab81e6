//! Container backends with real engines: by name through the engine API,
//! against podman and the test run's private dockerd alike
//! ([`on_each_engine!`]), and as a `podman run` command. Skipped without
//! the engine unless `IDLEGATE_REQUIRE_PODMAN=1` / `IDLEGATE_REQUIRE_DOCKER=1`
//! (CI sets both).

use std::sync::mpsc;

use crate::on_each_engine;
use crate::support::activator::Activator;
use crate::support::engine::{
    activate, container_args, create, engine_args, gets_the_page, status, Container, Engine, Name,
    VersionProxy, TOO_OLD,
};
use crate::support::http::get;
use crate::support::podman::{podman, ContainerName, IMAGE, PAGE};
use crate::support::*;
use std::io::{Read, Write};
use std::path::Path;

on_each_engine!(
    engine_api_starts_the_container_and_stops_it_when_idle,
    engine_api_waits_for_the_healthcheck,
    idle_action_pause_freezes_and_thaws_the_container,
    a_stop_of_the_service_stops_a_paused_container,
    engine_errors_name_the_container_and_the_socket,
    the_engine_socket_is_found_through_docker_host,
    an_engine_with_docker_29s_floor_is_spoken_to_at_its_newest_version,
    an_engine_that_stops_is_named_and_idlegate_still_exits,
    http_mode_holds_requests_until_a_late_app_listens_behind_the_port_forwarder,
);

/// idlegate with `--container NAME` through `socket` in front of nothing:
/// the client is closed, not answered, and the log says `want`.
fn the_client_is_closed_and_the_log_says(
    dir: std::sync::Arc<tempfile::TempDir>,
    socket: &Path,
    container: &str,
    env: &[(&'static str, String)],
    want: &str,
) {
    let a = args(&[
        "--container",
        container,
        "--engine-socket",
        socket.to_str().unwrap(),
        "--upstream",
        "127.0.0.1:9",
        "--idle-timeout",
        "60s",
    ]);
    let mut builder = ActivatorBuilder::new(dir, &a).tcp("web");
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let act = builder.start();
    let answer = exchange(act.tcp_addrs[0], b"hello\n").unwrap();
    assert!(answer.is_empty(), "the client is closed, not answered");
    wait_until(&format!("{want:?} in the log"), PATIENCE, || {
        act.log().contains(want)
    });
}

/// Two cold starts through the engine API on `socket`, each ended by the
/// idle exit, which stops the container.
fn two_cold_starts(engine: Engine, socket: &Path, c: &Name) -> Activator {
    let dir = tempdir();
    let port = free_port();
    create(engine, &c.name, port, &[], &[]);
    let a = engine_args(
        &c.name,
        socket,
        port,
        &["--idle-timeout", "1s", "--stop-timeout", "1s"],
    );
    let act = activate(engine, &dir, &a);
    for round in 1..=2 {
        gets_the_page(&act);
        assert_eq!(status(engine, &c.name).as_deref(), Some("running"));
        assert_eq!(
            act.wait_exit(round, PATIENCE).code(),
            Some(0),
            "{}",
            act.log()
        );
        assert_eq!(
            status(engine, &c.name).as_deref(),
            Some("exited"),
            "idle exit stopped the container"
        );
    }
    let log = act.log();
    assert_eq!(
        log.matches(&format!("starting container {}", c.name))
            .count(),
        2,
        "{log}"
    );
    assert!(
        log.contains(&format!("stopping container {}", c.name)),
        "{log}"
    );
    act
}

fn engine_api_starts_the_container_and_stops_it_when_idle(engine: Engine) {
    let f = engine.container("api");
    two_cold_starts(engine, &f.api.socket, &f.c);
}

/// Docker 29 refuses every client below API 1.44 (here a proxy in front of
/// the real engine plays it): idlegate asks `/version` and speaks 1.52.
fn an_engine_with_docker_29s_floor_is_spoken_to_at_its_newest_version(engine: Engine) {
    let dir = tempdir();
    let api = engine.api(dir.path());
    let proxy = VersionProxy::start(
        dir.path().join("docker29.sock"),
        ((1, 44), (1, 52)),
        api.socket.clone(),
        "1.41",
    );
    let c = Name::new(engine, "floor");
    let act = two_cold_starts(engine, &proxy.socket, &c);
    let seen = proxy.seen();
    assert_eq!(
        seen.iter()
            .filter(|l| l.starts_with("GET /version "))
            .count(),
        2,
        "the version is asked once per run (here two runs): {seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|l| !l.starts_with("GET /version "))
            .all(|l| l.contains(" /v1.52/")),
        "{seen:?}; {}",
        act.log()
    );
}

/// An engine whose API range idlegate does not know at all gets one line
/// that names both ranges (no real engine behind it is needed).
#[test]
fn an_engine_outside_idlegates_api_range_is_named_with_both_ranges() {
    let dir = tempdir();
    let nothing = dir.path().join("nothing.sock");
    let proxy = VersionProxy::start(
        dir.path().join("future.sock"),
        ((1, 55), (1, 60)),
        nothing.clone(),
        "1.60",
    );
    let want = format!(
        "container engine at {} speaks API 1.55 to 1.60; idlegate speaks 1.24 to 1.52",
        proxy.socket.display()
    );
    the_client_is_closed_and_the_log_says(dir.clone(), &proxy.socket, "web", &[], &want);
    // An engine whose /version claims what it refuses: its own "too old"
    // answer is told as a version refusal.
    let (claims, accepts) = (((1, 24), (1, 41)), ((1, 44), (1, 52)));
    let liar_socket = dir.path().join("liar.sock");
    let liar = VersionProxy::claiming(liar_socket, claims, accepts, nothing, "1.52");
    let want = format!(
        "container web: the engine at {} refuses API 1.41: {TOO_OLD}; idlegate speaks 1.24 to 1.52",
        liar.socket.display()
    );
    the_client_is_closed_and_the_log_says(tempdir(), &liar.socket, "web", &[], &want);
}

fn engine_api_waits_for_the_healthcheck(engine: Engine) {
    let f = engine.container("health");
    // Healthy once /tmp/ok exists.
    f.create(&engine.health_flags(), &[]);
    let act = f.activate(&f.args(&["--idle-timeout", "60s", "--start-timeout", "120s"]));
    let (tx, rx) = mpsc::channel();
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || {
        let _ = tx.send(get(addr, "/", &[]).map(|r| r.status));
    });
    wait_until("idlegate to wait for the healthcheck", PATIENCE, || {
        act.log().contains("to become healthy (now starting)")
    });
    // The app answers on its port already, yet the client is held: not healthy.
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], f.port));
    wait_until("the container's port to answer", PATIENCE, || {
        get(direct, "/", &[]).is_ok_and(|r| r.status == 200)
    });
    assert!(
        rx.try_recv().is_err(),
        "the client waited for health: {}",
        act.log()
    );
    engine.ok(&["exec", &f.c.name, "/bin/busybox", "touch", "/tmp/ok"]);
    engine.run_healthcheck(&f.c.name);
    let status = rx
        .recv_timeout(PATIENCE)
        .expect("the client is answered once healthy");
    assert_eq!(status.unwrap(), 200, "{}", act.log());
    client.join().unwrap();
    assert!(
        act.log()
            .contains(&format!("container {} is healthy", f.c.name)),
        "{}",
        act.log()
    );
    // The wait for health is a phase of the start of its own.
    assert!(
        act.log().contains("ms (started ") && act.log().contains(", healthy "),
        "{}",
        act.log()
    );
}

fn idle_action_pause_freezes_and_thaws_the_container(engine: Engine) {
    let f = engine.created("pause");
    let act = f.activate(&f.args(&["--idle-action", "pause", "--idle-timeout", "1s"]));
    for round in 1..=2 {
        let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, PAGE.to_owned()),
            "{}",
            act.log()
        );
        assert_eq!(
            act.wait_exit(round, PATIENCE).code(),
            Some(0),
            "{}",
            act.log()
        );
        assert_eq!(
            status(engine, &f.c.name).as_deref(),
            Some("paused"),
            "idle exit paused the container"
        );
    }
    assert!(
        act.log()
            .contains(&format!("unpausing container {}", f.c.name)),
        "{}",
        act.log()
    );
}

/// With `--idle-action pause`, a stop of the service (SIGTERM) stops the
/// container as `--idle-action stop` would: while it runs, and while an
/// idle pause left it paused (`--listen`: idlegate outlives the pause).
fn a_stop_of_the_service_stops_a_paused_container(engine: Engine) {
    let f = engine.created("stop-paused");
    let flags = ["--idle-action", "pause", "--stop-timeout", "2s"];
    // Running, socket-activated.
    let mut extra = flags.to_vec();
    extra.extend(["--idle-timeout", "600s"]);
    let act = f.activate(&f.args(&extra));
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(r.status, 200, "{}", act.log());
    act.signal(libc::SIGTERM);
    act.wait_exit_0(1, PATIENCE);
    assert_eq!(
        status(engine, &f.c.name).as_deref(),
        Some("exited"),
        "a stop while running: {}",
        act.log()
    );
    // Paused by the idle timeout, idlegate still listening.
    let front = format!("127.0.0.1:{}", free_port());
    let mut extra = flags.to_vec();
    extra.extend(["--idle-timeout", "1s", "--listen", &front]);
    let a = f.args(&extra);
    let log = f.dir.path().join("listen.log");
    let mut command = std::process::Command::new(idlegate_bin());
    command
        .args(&a)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stderr(std::fs::File::create(&log).unwrap());
    for (key, value) in engine.env() {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let addr: std::net::SocketAddr = front.parse().unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("idlegate to listen", PATIENCE, || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    let r = get(addr, "/", &[]).unwrap();
    assert_eq!(r.status, 200, "{}", read_log());
    wait_until("the idle pause", PATIENCE, || {
        read_log().contains("idle: backend stopped; still listening")
    });
    assert_eq!(status(engine, &f.c.name).as_deref(), Some("paused"));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    assert_eq!(wait_child(&mut child).code(), Some(0), "{}", read_log());
    assert_eq!(
        status(engine, &f.c.name).as_deref(),
        Some("exited"),
        "a stop while paused: {}",
        read_log()
    );
    assert!(
        read_log().contains(&format!("stopping the paused container {}", f.c.name)),
        "{}",
        read_log()
    );
}

fn engine_errors_name_the_container_and_the_socket(engine: Engine) {
    let dir = tempdir();
    let api = engine.api(dir.path());
    let want = format!(
        "container idlegate-test-no-such-container: no such container (engine socket {})",
        api.socket.display()
    );
    let name = "idlegate-test-no-such-container";
    the_client_is_closed_and_the_log_says(dir, &api.socket, name, &engine.env(), &want);
}

/// Without `--engine-socket`, `$DOCKER_HOST` (a `unix://` URL) names it.
fn the_engine_socket_is_found_through_docker_host(engine: Engine) {
    let Container {
        dir, api, c, port, ..
    } = engine.created("docker-host");
    let a = container_args(
        &c.name,
        port,
        &["--idle-timeout", "1s", "--stop-timeout", "1s"],
    );
    let host = format!("unix://{}", api.socket.display());
    let mut builder = ActivatorBuilder::new(dir.clone(), &a)
        .tcp("web")
        .env("DOCKER_HOST", &host)
        .env("CONTAINER_HOST", "")
        .env("XDG_RUNTIME_DIR", dir.path().to_str().unwrap());
    for (key, value) in engine.env() {
        builder = builder.env(key, &value);
    }
    let act = builder.start();
    gets_the_page(&act);
    act.wait_exit_0(1, PATIENCE);
    assert_eq!(status(engine, &c.name).as_deref(), Some("exited"));
}

/// The engine goes away while its container runs (here the socket idlegate
/// was given stops answering): the idle stop's failure names the socket,
/// and idlegate still exits 0.
fn an_engine_that_stops_is_named_and_idlegate_still_exits(engine: Engine) {
    let Container {
        dir, api, c, port, ..
    } = engine.created("gone");
    let mut proxy = VersionProxy::start(
        dir.path().join("engine.sock"),
        ((1, 24), (1, 41)),
        api.socket.clone(),
        "1.41",
    );
    let a = engine_args(
        &c.name,
        &proxy.socket,
        port,
        &["--idle-timeout", "2s", "--stop-timeout", "1s"],
    );
    let act = activate(engine, &dir, &a);
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(r.status, 200, "{}", act.log());
    proxy.stop();
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    let want = format!(
        "container {}: cannot reach the engine socket {}",
        c.name,
        proxy.socket.display()
    );
    assert!(act.log().contains(&want), "{}", act.log());
    assert_eq!(
        status(engine, &c.name).as_deref(),
        Some("running"),
        "nothing stopped it"
    );
}

/// Docker publishes a port through docker-proxy, which accepts at once and
/// resets until the app inside listens. In HTTP mode without
/// `--ready-http`, an app that listens 1.5 s after its container starts
/// still answers every cold start's first request: it is held and sent
/// again, as TCP mode replays.
fn http_mode_holds_requests_until_a_late_app_listens_behind_the_port_forwarder(engine: Engine) {
    let Container {
        dir, api, c, port, ..
    } = engine.container("late-http");
    let script = "/bin/busybox sleep 1.5; exec /bin/busybox httpd -f -p 8080 -h /www";
    create(engine, &c.name, port, &[], &["/bin/sh", "-c", script]);
    let a = args(&[
        "--container",
        &c.name,
        "--engine-socket",
        api.socket.to_str().unwrap(),
        "--upstream",
        &format!("127.0.0.1:{port}"),
        "--mode",
        "http",
        "--idle-timeout",
        "1s",
        "--stop-timeout",
        "1s",
        "--start-timeout",
        "60s",
    ]);
    let act = activate(engine, &dir, &a);
    for round in 1..=3 {
        let r = get(act.tcp_addrs[0], "/", &[("Connection", "close")]).unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, PAGE.to_owned()),
            "cold start {round}: {}",
            act.log()
        );
        act.wait_exit_0(round, PATIENCE);
        assert_eq!(status(engine, &c.name).as_deref(), Some("exited"));
    }
}

/// idlegate's flags for `podman run --rm --init --name NAME` of `image`
/// publishing `port` on 127.0.0.1, in HTTP mode, idle timeout 1 s.
fn podman_run_args(name: &str, port: u16, image: &str) -> Vec<String> {
    let upstream = format!("127.0.0.1:{port}");
    let publish = format!("127.0.0.1:{port}:8080");
    args(&[
        "--upstream",
        &upstream,
        "--mode",
        "http",
        "--idle-timeout",
        "1s",
        "--stop-timeout",
        "20s",
        "--",
        "podman",
        "run",
        "--rm",
        "--init",
        "--name",
        name,
        "-p",
        &publish,
        image,
    ])
}

/// `podman run` as the backend command, with `--init` so SIGTERM stops the app.
#[test]
fn podman_run_command_starts_and_removes_its_container() {
    let Some(podman) = podman() else { return };
    let dir = tempdir();
    let c = ContainerName::new(podman, "run");
    let a = podman_run_args(&c.name, free_port(), IMAGE);
    let act = activate(Engine::Podman(podman), &dir, &a);
    for round in 1..=2 {
        let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, PAGE.to_owned()),
            "{}",
            act.log()
        );
        assert_eq!(
            act.wait_exit(round, PATIENCE).code(),
            Some(0),
            "{}",
            act.log()
        );
        assert_eq!(
            podman.inspect(&c.name, "{{.State.Running}}"),
            None,
            "--rm removed it"
        );
    }
    assert!(
        !act.log().contains("removing it"),
        "a clean stop: {}",
        act.log()
    );
}

/// A `podman run` whose image must be pulled first (here from an archive,
/// which podman copies in at every run: no registry is reachable) tells the
/// pull as the start's progress, in the log and to the waiting page, then
/// serves.
#[test]
fn a_podman_run_that_pulls_its_image_tells_the_pull() {
    let Some(podman) = podman() else { return };
    let dir = tempdir();
    let archive = dir.path().join("image.tar");
    podman.ok(&["save", "-o", archive.to_str().unwrap(), IMAGE]);
    let c = ContainerName::new(podman, "pull");
    let image = format!("docker-archive:{}", archive.display());
    let a = podman_run_args(&c.name, free_port(), &image);
    let act = activate(Engine::Podman(podman), &dir, &a);
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, PAGE.to_owned()),
        "{}",
        act.log()
    );
    let log = act.log();
    let pulling = log
        .find("idlegate::backend: pulling the image of the container")
        .unwrap_or_else(|| panic!("no pull told: {log}"));
    let pulled = log
        .find("idlegate::backend: the image of the container is pulled; starting the container")
        .unwrap_or_else(|| panic!("no end of the pull told: {log}"));
    assert!(pulling < pulled, "{log}");
    act.wait_exit_0(1, PATIENCE);
}

/// Without `--init`, busybox httpd as PID 1 ignores the SIGTERM `podman run`
/// forwards; idlegate kills the client after the stop timeout, finds the
/// container still running, says so, and removes it. A container left by an
/// earlier run (idlegate SIGKILLed) is removed before the next start.
#[test]
fn a_container_left_by_a_killed_podman_run_is_named_and_removed() {
    let Some(podman) = podman() else { return };
    let dir = tempdir();
    let c = ContainerName::new(podman, "leftover");
    let port = free_port();
    let upstream = format!("127.0.0.1:{port}");
    let publish = format!("127.0.0.1:{port}:8080");
    // An earlier run's container, still running under the same name.
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &c.name,
        IMAGE,
        "/bin/busybox",
        "sleep",
        "3600",
    ]);
    let a = args(&[
        "--upstream",
        &upstream,
        "--mode",
        "http",
        "--idle-timeout",
        "1s",
        "--stop-timeout",
        "1s",
        "--",
        "podman",
        "run",
        "--rm",
        "--name",
        &c.name,
        "-p",
        &publish,
        IMAGE,
    ]);
    let act = activate(Engine::Podman(podman), &dir, &a);
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, PAGE.to_owned()),
        "{}",
        act.log()
    );
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(
        podman.inspect(&c.name, "{{.State.Running}}"),
        None,
        "no container left"
    );
    let log = act.log();
    assert!(
        log.contains(&format!(
            "container {} left behind by an earlier `podman run`",
            c.name
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "container {} is still running after `podman run` stopped",
            c.name
        )),
        "{log}"
    );
}

/// Like a rootless port forwarder, a forwarder in the container accepts on the
/// published port before the app listens, then closes. The first client still
/// gets its answer: in TCP mode by replay, in HTTP mode by `--ready-http`.
#[test]
fn an_app_that_binds_late_behind_a_forwarder_is_waited_for() {
    let Some(podman) = podman() else { return };
    for mode in ["tcp", "http"] {
        let dir = tempdir();
        let c = ContainerName::new(podman, "late");
        let port = free_port();
        let upstream = format!("127.0.0.1:{port}");
        let publish = format!("127.0.0.1:{port}:8080");
        let script = "/bin/busybox nc -ll -p 8080 -e /bin/busybox nc 127.0.0.1 8081 & \
                      /bin/busybox sleep 1; exec /bin/busybox httpd -f -p 127.0.0.1:8081 -h /www";
        let mut a = args(&[
            "--upstream",
            &upstream,
            "--mode",
            mode,
            "--idle-timeout",
            "1s",
        ]);
        if mode == "http" {
            a.extend(args(&["--ready-http", "/"]));
        }
        a.extend(args(&[
            "--", "podman", "run", "--rm", "--init", "--name", &c.name, "-p", &publish, IMAGE,
            "/bin/sh", "-c", script,
        ]));
        let act = activate(Engine::Podman(podman), &dir, &a);
        let r = get(act.tcp_addrs[0], "/", &[("Connection", "close")]).unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, PAGE.to_owned()),
            "{mode}: {}",
            act.log()
        );
        assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
        assert_eq!(
            podman.inspect(&c.name, "{{.State.Running}}"),
            None,
            "--rm removed it"
        );
    }
}

#[test]
fn a_missing_engine_socket_fails_the_client_cleanly() {
    // Needs no engine: the socket is not there.
    let dir = tempdir();
    let socket = dir.path().join("no-engine.sock");
    let want = format!(
        "container web: cannot reach the engine socket {}: No such file or directory",
        socket.display()
    );
    the_client_is_closed_and_the_log_says(dir, &socket, "web", &[], &want);
}

/// `--ready-notify` with `podman run --sdnotify=container`: conmon passes the
/// app's own `READY=1` on to idlegate's notify socket, so the held client is
/// forwarded when the app inside says it serves, not when the container or
/// its published port is up.
#[test]
fn ready_notify_through_podman_run_sdnotify_container() {
    let Some(podman) = podman() else { return };
    let image = podman.backend_image(&test_backend_bin());
    let dir = tempdir();
    let c = ContainerName::new(podman, "notify");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let mut a = args(&[
        "--upstream",
        &format!("127.0.0.1:{port}"),
        "--ready-notify",
        "--idle-timeout",
        "60s",
        "--stop-timeout",
        "10s",
        "--",
    ]);
    a.extend(args(&[
        "podman",
        "run",
        "--rm",
        "--init",
        "--sdnotify=container",
        "--name",
        &c.name,
        "-p",
        &publish,
        image,
        "/test_backend",
        "--listen",
        "0.0.0.0:8080",
        "--notify-when-exists",
        "/tmp/serving",
    ]));
    let act = activate(Engine::Podman(podman), &dir, &a);
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE * 2)).unwrap();
        s.write_all(b"PID\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    wait_until("the app listening in its container", PATIENCE * 2, || {
        act.log()
            .contains("test backend: listening on 0.0.0.0:8080")
    });
    assert!(!client.is_finished(), "forwarded before the app's READY=1");
    assert!(!act.log().contains("backend ready"), "{}", act.log());
    podman.ok(&["exec", &c.name, "/bin/busybox", "touch", "/tmp/serving"]);
    let pid = client.join().unwrap();
    assert!(
        pid.trim().parse::<u32>().is_ok(),
        "the app answered: {pid:?}; log:\n{}",
        act.log()
    );
    assert!(act.log().contains("backend ready"), "{}", act.log());
}
