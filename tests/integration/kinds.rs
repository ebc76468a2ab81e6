//! Backend kinds beyond a child process: start/stop commands, a systemd unit,
//! and readiness that a port forwarder cannot fool.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::http::get;
use crate::support::*;

#[test]
fn start_and_stop_commands_run_the_backend() {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let pid_file = dir.path().join("backend.pid");
    let bin = test_backend_bin();
    let start = format!(
        "{} --listen {backend} --pid-file {} --delay-ms 300 >/dev/null 2>&1 &",
        bin.display(),
        pid_file.display()
    );
    let stop = format!("kill $(cat {})", pid_file.display());
    let a = args(&[
        "--upstream",
        &backend,
        "--idle-timeout",
        "300ms",
        "--start-cmd",
        &start,
        "--stop-cmd",
        &stop,
    ]);
    let act = ActivatorBuilder::new(dir.clone(), &a).tcp("http").start();
    assert_eq!(
        exchange_str(act.tcp_addrs[0], "hooked\n").unwrap(),
        "hooked\n"
    );
    let pid = read_pid(&pid_file);
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(
        wait_gone(pid, PATIENCE),
        "the stop command stopped the backend"
    );
    assert!(
        act.log().contains("stopping backend: /bin/sh -c 'kill"),
        "{}",
        act.log()
    );
}

#[test]
fn a_failing_start_command_closes_the_client_and_says_why() {
    let dir = tempdir();
    let a = args(&[
        "--upstream",
        "127.0.0.1:9",
        "--idle-timeout",
        "60s",
        "--start-cmd",
        "echo no engine here >&2; exit 7",
    ]);
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
    let started = Instant::now();
    assert_eq!(exchange(act.tcp_addrs[0], b"x\n").unwrap(), b"");
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = act.log();
    assert!(log.contains("the start command `/bin/sh -c"), "{log}");
    assert!(
        log.contains("failed: exit status: 7; last stderr: no engine here"),
        "{log}"
    );
}

#[test]
fn a_unit_is_started_and_stopped_with_systemctl() {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    // systemctl itself is not what is tested: a stand-in on PATH records the
    // calls and runs the backend as the unit would.
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let calls = dir.path().join("calls");
    let pid_file = dir.path().join("backend.pid");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {calls}\ncase \"$1\" in\n  start) {bin} --listen {backend} --pid-file {pid} >/dev/null 2>&1 & ;;\n  stop) kill $(cat {pid}) ;;\nesac\n",
        calls = calls.display(),
        bin = test_backend_bin().display(),
        pid = pid_file.display()
    );
    let systemctl = bin_dir.join("systemctl");
    std::fs::write(&systemctl, script).unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let a = args(&[
        "--upstream",
        &backend,
        "--idle-timeout",
        "300ms",
        "--unit",
        "web.service",
    ]);
    let act = ActivatorBuilder::new(dir.clone(), &a)
        .tcp("http")
        .env("PATH", &path)
        .start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "unit\n").unwrap(), "unit\n");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "start web.service\nstop web.service\n"
    );
    assert!(wait_gone(read_pid(&pid_file), PATIENCE));
}

#[test]
fn ready_http_waits_for_the_app_behind_a_port_forwarder() {
    let dir = tempdir();
    let front = format!("127.0.0.1:{}", free_port());
    let app = format!("127.0.0.1:{}", free_port());
    let bin = test_backend_bin();
    // A forwarder that accepts at once, in front of an app that binds 1.5 s later.
    let command = format!(
        "{bin} --listen {front} --forward-to {app} & exec {bin} --http --listen {app} --delay-ms 1500",
        bin = bin.display()
    );
    let a = args(&[
        "--mode",
        "http",
        "--upstream",
        &front,
        "--ready-http",
        "/",
        "--idle-timeout",
        "60s",
        "--",
        "/bin/sh",
        "-c",
        &command,
    ]);
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
    let started = Instant::now();
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello\n"),
        "{}",
        act.log()
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
}

#[test]
fn two_ways_of_running_the_backend_are_a_usage_error() {
    let (code, stderr) = run_idlegate(
        &[
            "--upstream",
            "127.0.0.1:1",
            "--unit",
            "a.service",
            "--",
            "app",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--unit"), "{stderr}");
    let (code, stderr) = run_idlegate(
        &["--upstream", "127.0.0.1:1", "--ready-http", "healthz"],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--ready-http"), "{stderr}");
}

#[test]
fn tcp_mode_replays_the_first_bytes_past_a_forwarder_that_closes() {
    let dir = tempdir();
    let front = format!("127.0.0.1:{}", free_port());
    let app = format!("127.0.0.1:{}", free_port());
    let bin = test_backend_bin();
    // The forwarder accepts at once (so the plain readiness probe passes) and
    // closes every connection until the app binds, 1.5 s later.
    let command = format!(
        "{bin} --listen {front} --forward-to {app} & exec {bin} --listen {app} --delay-ms 1500",
        bin = bin.display()
    );
    let a = args(&[
        "--upstream",
        &front,
        "--idle-timeout",
        "60s",
        "--",
        "/bin/sh",
        "-c",
        &command,
    ]);
    let act = ActivatorBuilder::new(dir, &a).tcp("tcp").start();
    let started = Instant::now();
    assert_eq!(
        exchange_str(act.tcp_addrs[0], "first client\n").unwrap(),
        "first client\n",
        "{}",
        act.log()
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // Once the app answered, connections are copied straight away.
    assert_eq!(
        exchange_str(act.tcp_addrs[0], "second\n").unwrap(),
        "second\n"
    );
}
