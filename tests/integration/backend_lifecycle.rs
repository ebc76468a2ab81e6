//! The backend's life under idlegate: a missing command, an exit at start or
//! later, a client that meets a dying backend, a backend that stops
//! accepting, never becomes ready or ignores SIGTERM, and an external one.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_missing_backend_command_closes_clients_promptly_and_retries_later() {
    let act = Fixture::tcp()
        .upstream("127.0.0.1:9")
        .command(&["/nonexistent/legacy-app", "--port", "9"])
        .start();
    let attempts = || {
        act.log()
            .lines()
            .filter(|l| {
                l.contains("ERROR") && l.contains("cannot start `/nonexistent/legacy-app --port 9`")
            })
            .count()
    };
    let mut seen = 0;
    for attempt in 1..=2 {
        let started = Instant::now();
        let answer = exchange(act.tcp_addrs[0], b"hello\n");
        assert_eq!(
            answer.as_deref().ok(),
            Some(&b""[..]),
            "attempt {attempt}: a clean close (no data, no reset), got {answer:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
        let now = attempts();
        assert!(
            now > seen,
            "client {attempt} made idlegate try the start again: {}",
            act.log()
        );
        seen = now;
    }
    assert!(
        act.running().is_some() && act.exits().is_empty(),
        "a backend failure is not idlegate's exit"
    );
}

#[test]
fn a_backend_exiting_at_start_is_reported_and_a_later_start_succeeds() {
    let fixture = Fixture::tcp();
    let flag = fixture.file("allowed");
    let act = fixture
        .backend(&["--fail-unless-exists", flag.to_str().unwrap()])
        .start();
    let started = Instant::now();
    let answer = exchange(act.tcp_addrs[0], b"hello\n").unwrap();
    assert!(answer.is_empty(), "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = act.log();
    assert!(log.contains("exited during start: exit status: 4"), "{log}");
    assert!(
        log.contains("is missing, failing at start"),
        "the backend's last stderr is quoted: {log}"
    );

    std::fs::write(&flag, "").unwrap();
    // The next client retries (after the short backoff) and is served.
    assert_eq!(
        exchange_str(act.tcp_addrs[0], "hello\n").unwrap(),
        "hello\n"
    );
    assert_eq!(act.activations(), 1);
}

#[test]
fn a_backend_that_dies_later_is_restarted_by_the_next_client() {
    let act = Fixture::tcp().start();
    let first = exchange_str(act.tcp_addrs[0], "PID\n").unwrap();
    let _ = exchange(act.tcp_addrs[0], b"CRASH\n");
    wait_until("the crash to be logged", PATIENCE, || {
        act.log().contains("exited: exit status: 3")
    });
    let second = exchange_str(act.tcp_addrs[0], "PID\n").unwrap();
    assert_ne!(first, second, "a new backend process serves");
    assert!(act.exits().is_empty());
}

/// A client that reaches the backend's listener just as it dies (accepted,
/// then closed without a byte) is held for the restart and its bytes are
/// replayed to the new backend; a request that itself kills the backend is
/// replayed once, not again and again.
#[test]
fn a_client_that_reaches_a_dying_backend_is_replayed_to_the_restarted_one() {
    let act = Fixture::tcp().socket("crash").start();
    let addr = act.tcp_addrs[0];
    let first = exchange_str(addr, "PID\n").unwrap();
    assert_eq!(exchange_str(addr, "CRASH-NEXT\n").unwrap(), "armed\n");
    // This one is accepted by the dying backend, which then exits.
    let second = exchange_str(addr, "PID\n").unwrap();
    assert!(
        !second.is_empty(),
        "the client was dropped; log:\n{}",
        act.log()
    );
    assert_ne!(first, second, "a new backend process answered");
    // Its 4 bytes, or none yet if the reset came before they were read.
    let log = act.log();
    assert!(
        log.contains("replaying its first 4 bytes to the restarted backend")
            || log.contains("replaying its first 0 bytes to the restarted backend"),
        "{log}"
    );

    // A request that kills every backend it reaches: one replay, then the close.
    let answer = exchange(addr, b"CRASH\n").unwrap_or_else(|e| panic!("{e}; log:\n{}", act.log()));
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(
        act.log().matches("replaying its first").count(),
        2,
        "one replay per connection; log:\n{}",
        act.log()
    );
    let third = exchange_str(addr, "PID\n").unwrap();
    assert!(!third.is_empty() && third != second);
    assert!(act.exits().is_empty());
}

/// A backend that is up but has stopped accepting (it closed its listening
/// socket) is replaced: the client that met the refusals waits for the new
/// one instead of failing, and the log says why.
#[test]
fn a_backend_that_stops_accepting_is_replaced() {
    let Gate { act, backend, .. } = Fixture::tcp().start();
    let addr = act.tcp_addrs[0];
    let first = exchange_str(addr, "PID\n").unwrap();
    assert_eq!(exchange_str(addr, "UNLISTEN\n").unwrap(), "unlistening\n");
    assert_eq!(
        exchange_str(addr, "still served\n").unwrap(),
        "still served\n"
    );
    assert_ne!(exchange_str(addr, "PID\n").unwrap(), first, "a new backend");
    let log = act.log();
    assert!(
        log.contains(&format!(
            "the backend stopped accepting connections on {backend} (refused while ready)"
        )),
        "{log}"
    );
}

#[test]
fn external_backend_is_waited_for_and_left_running() {
    let dir = tempdir();
    let port = free_port();
    // systemd-socket-proxyd's spelling, as an existing unit would have it.
    let a = args(&["--exit-idle-time=300ms", &format!("127.0.0.1:{port}")]);
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || exchange_str(addr, "late\n"));
    act.wait_running(1, PATIENCE);
    // The external backend comes up only after the client connected.
    std::thread::sleep(Duration::from_millis(300));
    let backend = External::start(&format!("127.0.0.1:{port}"));
    assert_eq!(client.join().unwrap().unwrap(), "late\n");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
    let mut backend = backend;
    assert!(
        backend.0.try_wait().unwrap().is_none(),
        "an external backend is not idlegate's to stop"
    );
}

#[test]
fn a_backend_never_ready_fails_at_the_start_timeout_and_is_killed() {
    let Gate { act, pid_file, .. } = Fixture::tcp()
        .extra(&["--start-timeout", "1s"])
        .backend(&["--delay-ms", "600000"])
        .pid_file()
        .start();
    let started = Instant::now();
    let answer = exchange(act.tcp_addrs[0], b"hello\n").unwrap();
    assert!(answer.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "closed after {waited:?}"
    );
    assert!(
        wait_gone(read_pid(&pid_file), PATIENCE),
        "the backend of a failed start must not live on"
    );
    let log = act.log();
    assert!(
        log.contains("not ready within the start timeout (1s)"),
        "{log}"
    );
    assert!(act.exits().is_empty());
}

#[test]
fn a_backend_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let Gate { act, pid_file, .. } = Fixture::tcp()
        .idle("200ms")
        .stop_timeout("1s")
        .backend(&["--ignore-sigterm"])
        .pid_file()
        .start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let status = act.wait_exit(1, PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", act.log());
    assert!(process_gone(read_pid(&pid_file)));
    assert!(act.log().contains("sending SIGKILL"), "{}", act.log());
}
