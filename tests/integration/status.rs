//! `idlegate status` reads the state file of a running idlegate (never its
//! socket) and `STATUS=` carries the same facts.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::http::{get, Monitor};
use crate::support::*;

#[test]
fn status_reports_a_running_instance_and_counts_activations() {
    let fixture = Fixture::tcp()
        .idle("1s")
        .default_stop_timeout()
        .socket("status");
    let state = fixture.file("idlegate.state");
    let act = fixture
        .extra(&["--state-file", state.to_str().unwrap()])
        .start();
    assert_eq!(
        status_text(&state).0,
        Some(3),
        "not running before the first client"
    );

    for activation in 1..=2 {
        assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
        wait_until("a status with the backend ready", PATIENCE, || {
            let (code, text) = status_text(&state);
            code == Some(0)
                && text.contains("backend: backend ready")
                && text.contains(&format!("activation {activation})"))
                && text.contains("idle exit: in ")
        });
        assert_eq!(act.wait_exit(activation, PATIENCE).code(), Some(0));
        let (code, text) = status_text(&state);
        assert_eq!(code, Some(3), "{text}");
        assert!(text.contains("not running"), "{text}");
    }
    // Asking never wakes idlegate.
    assert_eq!(act.activations(), 2);
}

#[test]
fn status_without_a_state_file_is_a_usage_error() {
    let out = Command::new(idlegate_bin())
        .arg("status")
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state-file"));
}

/// `--metrics`: Prometheus text on an address of its own; scraping it all
/// along does not keep idlegate up.
#[test]
fn metrics_are_served_and_scraping_does_not_keep_idlegate_up() {
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let act = Fixture::tcp()
        .idle("500ms")
        .default_stop_timeout()
        .extra(&["--metrics", &metrics.to_string()])
        .socket("metrics")
        .start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let scrape = || crate::support::http::get(metrics, "/metrics", &[]).map(|r| r.text());
    wait_until("metrics with the backend ready", PATIENCE, || {
        scrape().is_ok_and(|t| {
            t.contains("idlegate_backend_ready 1") && t.contains("idlegate_activation 1")
        })
    });
    // Scrape without pause: idlegate still exits on idle.
    let deadline = std::time::Instant::now() + PATIENCE;
    while act.exits().is_empty() {
        let _ = scrape();
        assert!(act.activations() == 1, "scraping never activates");
        assert!(
            std::time::Instant::now() < deadline,
            "scraping kept idlegate up"
        );
    }
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(
        scrape().is_err(),
        "the endpoint is down while idlegate is not running"
    );
}

/// A state file that cannot be read is "unknown" (exit 4, as `systemctl`
/// says for an unknown unit), with the reason; it is never "not running".
#[test]
fn an_unreadable_state_file_is_unknown_not_stopped() {
    let dir = tempdir();
    let status_of = |path: &std::path::Path| {
        let out = Command::new(idlegate_bin())
            .args(["status", "--state-file"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let wrong = dir.path().join("no-such-dir").join("idlegate.state");
    let (code, text) = status_of(&wrong);
    assert_eq!(code, Some(4), "{text}");
    assert!(
        text.contains("cannot read the state file") && text.contains("No such file or directory"),
        "{text}"
    );
    let (code, text) = status_of(dir.path());
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("Is a directory"), "{text}");
    let garbage = dir.path().join("garbage.state");
    std::fs::write(&garbage, "hello\n").unwrap();
    let (code, text) = status_of(&garbage);
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("not an idlegate state file"), "{text}");
    // In the right directory, before the first activation: not running.
    assert_eq!(status_text(&dir.path().join("idlegate.state")).0, Some(3));
}

/// A monitor probing a running service (forwarded while it is up, but not
/// work) does not move the idle timer, and the status shows that timer:
/// its countdown goes down from call to call, and the backend stops when it
/// said (before, the status kept a clock of its own that every probe
/// restarted: `idle exit: in 3s` at every call).
#[test]
fn the_status_counts_down_the_real_timer_while_a_monitor_probes() {
    let fixture = Fixture::http().idle("4s");
    let state = fixture.file("idlegate.state");
    let gate = fixture
        .extra(&[
            "--answer",
            "/status/204=503",
            "--state-file",
            state.to_str().unwrap(),
        ])
        .start();
    assert_eq!(get(gate.tcp_addrs[0], "/", &[]).unwrap().status, 200);
    let monitor = Monitor::start(gate.tcp_addrs[0], Duration::from_millis(150));
    // (when asked, milliseconds left) while it runs.
    let mut readings: Vec<(Instant, u64)> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while gate.exits().is_empty() {
        assert!(Instant::now() < deadline, "no idle exit: {}", gate.log());
        let asked = Instant::now();
        let doc = status_json(&state);
        if let Some(ms) = doc["idle_in_ms"].as_u64() {
            assert_eq!(doc["idle_exit_in_ms"].as_u64(), Some(ms), "{doc}");
            assert_eq!(doc["at_idle"], "exit", "{doc}");
            readings.push((asked, ms));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let exited = Instant::now();
    let forwarded = monitor.stop();
    assert!(forwarded >= 3, "only {forwarded} probe(s) were forwarded");
    assert_eq!(
        gate.wait_exit(1, PATIENCE).code(),
        Some(0),
        "{}",
        gate.log()
    );
    assert!(readings.len() >= 3, "{readings:?}");
    for pair in readings.windows(2) {
        assert!(
            pair[1].1 <= pair[0].1 + 100,
            "the countdown went up between calls: {readings:?}"
        );
    }
    let (first_at, first_ms) = readings[0];
    let (_, last_ms) = *readings.last().unwrap();
    assert!(
        last_ms + 1500 < first_ms,
        "the countdown did not go down: {readings:?}"
    );
    // The exit came when the first reading said (not before: a reading is
    // taken after it was asked), give or take the polling, the backend's
    // stop and a loaded machine.
    let said = first_at + Duration::from_millis(first_ms);
    assert!(
        exited + Duration::from_millis(300) >= said && exited <= said + Duration::from_secs(5),
        "said {:?} after the first call, exited after {:?}: {readings:?}",
        Duration::from_millis(first_ms),
        exited - first_at
    );
}

/// With `--listen` idlegate does not exit on idle, it stops the backend and
/// keeps listening: the status says so in words and in JSON (where
/// `idle_exit_in_ms` is `never`, and `at_idle`, `idle_in_ms` tell the stop).
#[test]
fn with_listen_the_status_says_the_backend_will_be_stopped() {
    let fixture = Fixture::tcp().idle("4s").pid_file();
    let state = fixture.file("idlegate.state");
    let mut idlegate = fixture.spawn_listening(&["--state-file", state.to_str().unwrap()]);
    let addr = idlegate.addr;
    let nothing = "backend stop: none (the backend is not running; the next client starts it)";
    wait_until("the status before the first client", PATIENCE, || {
        status_text(&state).1.contains(nothing)
    });
    assert_eq!(exchange_str(addr, "one\n").unwrap(), "one\n");
    let pid = read_pid(&fixture.file("backend.pid"));
    wait_until("the status of the backend up", PATIENCE, || {
        let (_, text) = status_text(&state);
        text.contains("backend stop: in ") && text.contains("(idlegate keeps listening)")
    });
    let (_, text) = status_text(&state);
    assert!(!text.contains("idle exit"), "{text}");
    let doc = status_json(&state);
    assert_eq!(doc["at_idle"], "stop-backend", "{doc}");
    assert_eq!(doc["idle_exit_in_ms"], "never", "{doc}");
    assert!(
        doc["idle_in_ms"].as_u64().is_some_and(|ms| ms <= 4000),
        "{doc}"
    );
    assert!(wait_gone(pid, PATIENCE), "idle stops the backend");
    wait_until("the status after the idle stop", PATIENCE, || {
        status_text(&state).1.contains(nothing)
    });
    assert_eq!(status_json(&state)["idle_in_ms"], "nothing-to-stop");
    assert_eq!(idlegate.stop().code(), Some(0), "{}", idlegate.log());
}

/// `--busy-cmd` saying busy starts the idle timer over, and the status
/// shows it: the countdown runs down, then starts again from the timeout
/// while idlegate stays up (a clock of the status's own ran down to 0 and
/// stayed there).
#[test]
fn the_status_shows_the_timer_a_busy_cmd_starts_over() {
    let fixture = Fixture::tcp().idle("2s");
    let state = fixture.file("idlegate.state");
    let flag = fixture.file("scanning");
    std::fs::write(&flag, "").unwrap();
    let busy = format!("test -e {}", flag.display());
    let gate = fixture
        .extra(&["--busy-cmd", &busy, "--state-file", state.to_str().unwrap()])
        .start();
    assert_eq!(exchange_str(gate.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let mut readings = Vec::new();
    let mut restarts = 0;
    let deadline = Instant::now() + PATIENCE;
    while restarts < 2 {
        assert!(
            Instant::now() < deadline,
            "no restart seen: {readings:?}\n{}",
            gate.log()
        );
        if let Some(ms) = status_json(&state)["idle_in_ms"].as_u64() {
            assert!(ms <= 2000, "{ms}");
            // Down below half the timeout, then back above it: started over.
            if readings
                .last()
                .is_some_and(|&last| last < 1000 && ms > 1000)
            {
                restarts += 1;
            }
            readings.push(ms);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gate.exits().is_empty(), "exited while busy: {}", gate.log());
    std::fs::remove_file(&flag).unwrap();
    gate.wait_exit_0(1, PATIENCE);
}

/// The administrator's status says what a start waits for, with the
/// address the waiting page keeps from visitors, and why it failed.
#[test]
fn the_status_names_what_a_start_waits_for_and_why_it_failed() {
    let dir = tempdir();
    let state = dir.path().join("idlegate.state");
    let port = free_port();
    let upstream = format!("127.0.0.1:{port}");
    let a = args(&[
        "--upstream",
        &upstream,
        "--start-timeout",
        "3s",
        "--idle-timeout",
        "5s",
        "--state-file",
        state.to_str().unwrap(),
        "--",
        "sleep",
        "60",
    ]);
    let act = ActivatorBuilder::new(dir.clone(), &a).tcp("web").start();
    let addr = act.tcp_addrs[0];
    // Held while the backend never listens, then closed at the start timeout.
    let client = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    });
    let waiting = format!("backend: backend starting: nothing accepted connections on {upstream}");
    wait_until("the status says what the start waits for", PATIENCE, || {
        status_text(&state).1.contains(&waiting)
    });
    let failed = format!(
        "backend: backend failed: not ready within the start timeout (3s): nothing accepted connections on {upstream}"
    );
    // The failure shows until the idle exit, 5 s after the client was closed.
    wait_until("the status says why the start failed", PATIENCE, || {
        status_text(&state).1.contains(&failed)
    });
    assert!(
        client.join().unwrap().is_empty(),
        "the held client got bytes"
    );
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
}
