//! Container backends with real podman: by name through the engine API, and
//! as a `podman run` command. Skipped without podman unless
//! `IDLEGATE_REQUIRE_PODMAN=1` (CI sets it).

use std::sync::mpsc;

use crate::support::activator::Activator;
use crate::support::http::get;
use crate::support::podman::{podman, ContainerName, EngineService, Podman, IMAGE, PAGE};
use crate::support::*;
use std::io::{Read, Write};

pub(crate) fn activate(
    podman: &Podman,
    dir: &std::sync::Arc<tempfile::TempDir>,
    a: &[String],
) -> Activator {
    ActivatorBuilder::new(dir.clone(), a)
        .tcp("web")
        .env("CONTAINERS_CONF", podman.conf().to_str().unwrap())
        .start()
}

/// `running`, `paused`, `exited`, … or `None` when there is no such container.
pub(crate) fn status(podman: &Podman, name: &str) -> Option<String> {
    podman.inspect(name, "{{.State.Status}}")
}

/// idlegate's flags for container `name` through `engine`, in HTTP mode,
/// in front of its published `port`, with `extra` flags.
pub(crate) fn engine_args(
    name: &str,
    engine: &EngineService,
    port: u16,
    extra: &[&str],
) -> Vec<String> {
    let mut a = args(&[
        "--container",
        name,
        "--engine-socket",
        engine.socket.to_str().unwrap(),
        "--upstream",
        &format!("127.0.0.1:{port}"),
        "--mode",
        "http",
    ]);
    a.extend(args(extra));
    a
}

/// `podman create` with the test image, publishing `port` on 127.0.0.1.
pub(crate) fn create(podman: &Podman, name: &str, port: u16, extra: &[&str], command: &[&str]) {
    let publish = format!("127.0.0.1:{port}:8080");
    let mut a = vec!["create", "--name", name, "-p", &publish];
    a.extend_from_slice(extra);
    a.push(IMAGE);
    a.extend_from_slice(command);
    podman.ok(&a);
}

#[test]
fn engine_api_starts_the_container_and_stops_it_when_idle() {
    let Some(podman) = podman() else { return };
    let dir = tempdir();
    let engine = EngineService::start(podman, dir.path());
    let c = ContainerName::new(podman, "api");
    let port = free_port();
    create(podman, &c.name, port, &[], &[]);
    let a = engine_args(
        &c.name,
        &engine,
        port,
        &["--idle-timeout", "1s", "--stop-timeout", "1s"],
    );
    let act = activate(podman, &dir, &a);
    for round in 1..=2 {
        let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, PAGE.to_owned()),
            "{}",
            act.log()
        );
        assert_eq!(status(podman, &c.name).as_deref(), Some("running"));
        assert_eq!(
            act.wait_exit(round, PATIENCE).code(),
            Some(0),
            "{}",
            act.log()
        );
        assert_eq!(
            status(podman, &c.name).as_deref(),
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
}

#[test]
fn engine_api_waits_for_the_healthcheck() {
    let Some(podman) = podman() else { return };
    let dir = tempdir();
    let engine = EngineService::start(podman, dir.path());
    let c = ContainerName::new(podman, "health");
    let port = free_port();
    // Healthy once /tmp/ok exists. Nothing runs the check on a schedule here
    // (no systemd timers on the test machine): the test runs it.
    create(
        podman,
        &c.name,
        port,
        &[
            "--health-cmd",
            r#"["/bin/busybox", "test", "-e", "/tmp/ok"]"#,
            "--health-interval",
            "1h",
        ],
        &[],
    );
    let a = engine_args(
        &c.name,
        &engine,
        port,
        &["--idle-timeout", "60s", "--start-timeout", "120s"],
    );
    let act = activate(podman, &dir, &a);
    let (tx, rx) = mpsc::channel();
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || {
        let _ = tx.send(get(addr, "/", &[]).map(|r| r.status));
    });
    wait_until("idlegate to wait for the healthcheck", PATIENCE, || {
        act.log().contains("to become healthy (now starting)")
    });
    // The app answers on its port already, yet the client is held: not healthy.
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the container's port to answer", PATIENCE, || {
        get(direct, "/", &[]).is_ok_and(|r| r.status == 200)
    });
    assert!(
        rx.try_recv().is_err(),
        "the client waited for health: {}",
        act.log()
    );
    podman.ok(&["exec", &c.name, "/bin/busybox", "touch", "/tmp/ok"]);
    podman.ok(&["healthcheck", "run", &c.name]);
    let status = rx
        .recv_timeout(PATIENCE)
        .expect("the client is answered once healthy");
    assert_eq!(status.unwrap(), 200, "{}", act.log());
    client.join().unwrap();
    assert!(
        act.log()
            .contains(&format!("container {} is healthy", c.name)),
        "{}",
        act.log()
    );
}

#[test]
fn idle_action_pause_freezes_and_thaws_the_container() {
    let Some(podman) = podman() else { return };
    let dir = tempdir();
    let engine = EngineService::start(podman, dir.path());
    let c = ContainerName::new(podman, "pause");
    let port = free_port();
    create(podman, &c.name, port, &[], &[]);
    let a = engine_args(
        &c.name,
        &engine,
        port,
        &["--idle-action", "pause", "--idle-timeout", "1s"],
    );
    let act = activate(podman, &dir, &a);
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
            status(podman, &c.name).as_deref(),
            Some("paused"),
            "idle exit paused the container"
        );
    }
    assert!(
        act.log()
            .contains(&format!("unpausing container {}", c.name)),
        "{}",
        act.log()
    );
}

#[test]
fn engine_errors_name_the_container_and_the_socket() {
    let Some(podman) = podman() else { return };
    let dir = tempdir();
    let engine = EngineService::start(podman, dir.path());
    let socket = engine.socket.display().to_string();
    let a = args(&[
        "--container",
        "idlegate-test-no-such-container",
        "--engine-socket",
        &socket,
        "--upstream",
        "127.0.0.1:9",
        "--idle-timeout",
        "60s",
    ]);
    let act = activate(podman, &dir, &a);
    let answer = exchange(act.tcp_addrs[0], b"hello\n").unwrap();
    assert!(answer.is_empty(), "the client is closed, not answered");
    let want = format!(
        "container idlegate-test-no-such-container: no such container (engine socket {socket})"
    );
    wait_until("the engine error in the log", PATIENCE, || {
        act.log().contains(&want)
    });
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
    let act = activate(podman, &dir, &a);
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
    let act = activate(podman, &dir, &a);
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
    let act = activate(podman, &dir, &a);
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
        let act = activate(podman, &dir, &a);
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
    // Needs no podman: the socket is not there.
    let dir = tempdir();
    let socket = dir.path().join("no-engine.sock");
    let socket = socket.display().to_string();
    let a = args(&[
        "--container",
        "web",
        "--engine-socket",
        &socket,
        "--upstream",
        "127.0.0.1:9",
        "--idle-timeout",
        "60s",
    ]);
    let act = ActivatorBuilder::new(dir.clone(), &a).tcp("web").start();
    let answer = exchange(act.tcp_addrs[0], b"hello\n").unwrap();
    assert!(answer.is_empty(), "the client is closed, not answered");
    let want = format!(
        "container web: cannot reach the engine socket {socket}: No such file or directory"
    );
    wait_until("the engine error in the log", PATIENCE, || {
        act.log().contains(&want)
    });
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
    let act = activate(podman, &dir, &a);
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
