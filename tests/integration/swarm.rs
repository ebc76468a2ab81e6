//! A Docker Swarm service as the backend (`--swarm-service`), against a
//! private dockerd made a single-node swarm manager
//! ([`crate::support::docker::swarm`]); the shared private dockerd, no
//! manager, for the error it gives. Skipped without Docker unless
//! `IDLEGATE_REQUIRE_DOCKER=1`.
//!
//! Services publish their port with `mode=host` (the ingress routing mesh
//! does not work in this sandbox) and are created with `--no-resolve-image`
//! (the test image is local: there is no registry to ask for its digest).

use std::time::{Duration, Instant};

use crate::remote_engines::served_by_a_late_engine;
use crate::support::docker::{docker, swarm, Docker};
use crate::support::engine::gets_the_page;
use crate::support::podman::{unique_name, IMAGE};
use crate::support::*;

/// A service of the swarm with 0 replicas, removed when dropped.
struct Service<'a> {
    swarm: &'a Docker,
    name: String,
    /// The host port its task publishes.
    port: u16,
}

impl<'a> Service<'a> {
    /// `docker service create` of `image` (with `command`, if given)
    /// publishing its port 8080 on a free host port, scaled to 0.
    fn create(swarm: &'a Docker, what: &str, image: &str, command: &[&str]) -> Service<'a> {
        let name = unique_name(what);
        let port = free_port();
        let publish = format!("mode=host,target=8080,published={port}");
        let mut create = vec![
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--replicas",
            "0",
            "--no-resolve-image",
            "--stop-grace-period",
            "1s",
            "--publish",
            &publish,
            image,
        ];
        create.extend(command);
        swarm.ok(&create);
        Service { swarm, name, port }
    }

    /// idlegate in front of it through the manager's socket, with `more` flags.
    fn activate(&self, more: &[&str]) -> activator::Activator {
        let socket = self.swarm.socket.to_str().unwrap();
        self.activate_through(&["--engine-socket", socket], more)
    }

    /// idlegate in front of it through the `engine` flags, with `more` flags.
    fn activate_through(&self, engine: &[&str], more: &[&str]) -> activator::Activator {
        activate(engine, &self.name, self.port, more)
    }

    /// `Spec.Mode.Replicated.Replicas` as the engine has it.
    fn replicas(&self) -> String {
        let format = "{{.Spec.Mode.Replicated.Replicas}}";
        let out = self
            .swarm
            .ok(&["service", "inspect", "--format", format, &self.name]);
        out.trim().to_owned()
    }

    /// How many of its containers run now.
    fn running_containers(&self) -> usize {
        let label = format!("label=com.docker.swarm.service.name={}", self.name);
        let out = self.swarm.ok(&["ps", "--quiet", "--filter", &label]);
        out.lines().count()
    }
}

impl Drop for Service<'_> {
    fn drop(&mut self) {
        let _ = self.swarm.run(&["service", "rm", &self.name]);
    }
}

/// idlegate in front of `service` on `port`, through the `engine` flags,
/// with `more` flags.
fn activate(engine: &[&str], service: &str, port: u16, more: &[&str]) -> activator::Activator {
    let mut a = args(&[
        "--swarm-service",
        service,
        "--upstream",
        &format!("127.0.0.1:{port}"),
    ]);
    a.extend(args(engine));
    a.extend(args(more));
    ActivatorBuilder::new(tempdir(), &a).tcp("web").start()
}

/// The client gets the clean failure (closed, not answered) well before the
/// start timeout of 120 s, and the log then says `want`.
fn fails_promptly_saying(act: &activator::Activator, want: &str) {
    let asked = Instant::now();
    let answer = exchange(act.tcp_addrs[0], b"hello\n").unwrap();
    let took = asked.elapsed();
    assert!(answer.is_empty(), "the client is closed, not answered");
    eprintln!("the clean failure came after {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "the failure took {took:?}: {}",
        act.log()
    );
    wait_until(&format!("{want:?} in the log"), PATIENCE, || {
        act.log().contains(want)
    });
    assert!(
        act.running().is_some(),
        "idlegate keeps running: {}",
        act.log()
    );
}

#[test]
fn a_swarm_service_scales_from_zero_and_back_over_two_cold_starts() {
    let Some(swarm) = swarm() else { return };
    let service = Service::create(swarm, "swarm", IMAGE, &[]);
    let more = ["--idle-timeout", "1s", "--stop-timeout", "1s"];
    let act = service.activate(&more);
    for round in 1..=2 {
        gets_the_page(&act);
        assert_eq!(service.replicas(), "1");
        assert_eq!(service.running_containers(), 1);
        assert_eq!(
            act.wait_exit(round, PATIENCE).code(),
            Some(0),
            "{}",
            act.log()
        );
        assert_eq!(service.replicas(), "0", "the idle exit scaled it to 0");
        assert_eq!(
            service.running_containers(),
            0,
            "the idle exit waited for its task to end: {} {} {}",
            act.log(),
            swarm.ok(&["service", "ps", "--no-trunc", &service.name]),
            swarm.ok(&["ps", "-a"])
        );
    }
    let log = act.log();
    let scaled = |n: u32| format!("scaling swarm service {} to {n}", service.name);
    assert_eq!(log.matches(&scaled(1)).count(), 2, "{log}");
    assert_eq!(log.matches(&scaled(0)).count(), 2, "{log}");
}

/// A manager reached as a remote engine is (`--engine tcp://…` with
/// Docker's TLS files, the private dockerd's TLS listener): a cold start
/// and the idle stop back to 0.
#[test]
fn a_swarm_manager_reached_over_tls_scales_the_service_from_zero_and_back() {
    let Some(swarm) = swarm() else { return };
    let service = Service::create(swarm, "swarm-tls", IMAGE, &[]);
    let url = format!("tcp://127.0.0.1:{}", swarm.tls_port);
    let client = swarm.certs.client.to_str().unwrap();
    let engine = ["--engine", &url, "--engine-tls-dir", client];
    let more = ["--idle-timeout", "1s", "--stop-timeout", "1s"];
    let act = service.activate_through(&engine, &more);
    gets_the_page(&act);
    assert_eq!(service.replicas(), "1");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(service.replicas(), "0", "{}", act.log());
    assert_eq!(service.running_containers(), 0, "{}", act.log());
}

/// With `--wake-on-lan`, a manager whose engine answers only 2 s after the
/// first magic packet is waited for, and the held client is served by the
/// service it then scales up.
#[test]
fn with_wake_on_lan_a_manager_that_answers_late_is_waited_for() {
    let Some(swarm) = swarm() else { return };
    let service = Service::create(swarm, "swarm-wol", IMAGE, &[]);
    let packets = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    packets.set_read_timeout(Some(PATIENCE)).unwrap();
    let to = packets.local_addr().unwrap().to_string();
    let engine_port = free_port();
    let url = format!("tcp://127.0.0.1:{engine_port}");
    let more = [
        "--wake-on-lan",
        "02-00-5e-10-00-02",
        "--wake-on-lan-address",
        &to,
        "--start-timeout",
        "60s",
        "--idle-timeout",
        "1s",
        "--stop-timeout",
        "1s",
    ];
    let act = service.activate_through(&["--engine", &url], &more);
    let _engine = served_by_a_late_engine(&act, &packets, engine_port, &swarm.socket);
    let log = act.log();
    let waited = format!(
        "waiting for the engine of swarm service {}, its host waking",
        service.name
    );
    assert!(log.contains(&waited), "{log}");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(service.replicas(), "0", "{}", act.log());
}

/// A stop of idlegate (SIGTERM) while the service is up scales it to 0,
/// as it stops a container.
#[test]
fn a_stop_of_idlegate_scales_the_service_to_zero() {
    let Some(swarm) = swarm() else { return };
    let service = Service::create(swarm, "swarm-term", IMAGE, &[]);
    let more = ["--idle-timeout", "60s", "--stop-timeout", "1s"];
    let act = service.activate(&more);
    gets_the_page(&act);
    assert_eq!(service.replicas(), "1");
    act.signal(libc::SIGTERM);
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(service.replicas(), "0", "{}", act.log());
    assert_eq!(service.running_containers(), 0, "{}", act.log());
}

#[test]
fn a_swarm_service_whose_image_is_missing_fails_promptly_with_its_tasks_error() {
    let Some(swarm) = swarm() else { return };
    let image = "localhost/idlegate-test-no-such-image:latest";
    let service = Service::create(swarm, "swarm-missing", image, &[]);
    let dir = tempdir();
    let state = dir.path().join("idlegate.state");
    let state_flag = state.to_str().unwrap();
    let more = [
        "--idle-timeout",
        "60s",
        "--start-timeout",
        "120s",
        "--state-file",
        state_flag,
    ];
    let act = service.activate(&more);
    let want = format!("No such image: {image}");
    let failed = format!("backend failed: swarm service {}: task ", service.name);
    fails_promptly_saying(&act, &failed);
    assert!(act.log().contains(&want), "{}", act.log());
    let status = std::process::Command::new(idlegate_bin())
        .args(["status", "--state-file", state_flag])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&failed) && status.contains(&want),
        "idlegate status names the task's error: {status}"
    );
    wait_until("the failed start scaled it back to 0", PATIENCE, || {
        service.replicas() == "0"
    });
}

/// A task that ran and ended while the readiness probe waits (here for a
/// `--ready-cmd` that never succeeds) fails the start at once, by its error.
#[test]
fn a_swarm_service_whose_app_exits_after_its_task_ran_fails_promptly() {
    let Some(swarm) = swarm() else { return };
    let exits = ["/bin/busybox", "sh", "-c", "sleep 2; exit 3"];
    let service = Service::create(swarm, "swarm-exits", IMAGE, &exits);
    let more = [
        "--idle-timeout",
        "60s",
        "--start-timeout",
        "120s",
        "--ready-cmd",
        "false",
    ];
    let act = service.activate(&more);
    let failed = format!("backend failed: swarm service {}: task ", service.name);
    fails_promptly_saying(&act, &failed);
    let log = act.log();
    assert!(log.contains("non-zero exit (3)"), "{log}");
    let ran = format!("swarm service {}: 1 of 1 tasks running", service.name);
    assert!(log.contains(&ran), "it failed after it ran: {log}");
}

#[test]
fn an_engine_that_is_no_swarm_manager_and_a_missing_service_fail_by_name() {
    let (Some(plain), Some(swarm)) = (docker(), swarm()) else {
        return;
    };
    let missing = unique_name("swarm-none");
    let cases = [
        (
            plain,
            "web",
            format!(
                "swarm service web: the engine at {} is not a swarm manager: \
                 This node is not a swarm manager.",
                plain.socket.display()
            ),
        ),
        (
            swarm,
            missing.as_str(),
            format!(
                "swarm service {missing}: no such service (engine socket {})",
                swarm.socket.display()
            ),
        ),
    ];
    for (engine, service, want) in cases {
        let more = ["--start-timeout", "120s"];
        let socket = ["--engine-socket", engine.socket.to_str().unwrap()];
        let act = activate(&socket, service, free_port(), &more);
        fails_promptly_saying(&act, &want);
    }
}
