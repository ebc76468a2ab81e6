//! The core in TCP mode, end to end: activation, the backend on demand,
//! readiness, forwarding, in-flight tracking and idle exit.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_missing_backend_command_closes_clients_promptly_and_retries_later() {
    let dir = tempdir();
    let a = idlegate_args(
        "127.0.0.1:9",
        "60s",
        args(&["--", "/nonexistent/legacy-app", "--port", "9"]),
    );
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
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
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let flag = dir.path().join("allowed");
    let a = idlegate_args(
        &backend,
        "60s",
        backend_command(&backend, &["--fail-unless-exists", flag.to_str().unwrap()]),
    );
    let act = ActivatorBuilder::new(dir.clone(), &a).tcp("http").start();
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
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let a = idlegate_args(&backend, "60s", backend_command(&backend, &[]));
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
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
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let a = idlegate_args(&backend, "60s", backend_command(&backend, &[]));
    let act = ActivatorBuilder::new(dir, &a).tcp("crash").start();
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
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let a = idlegate_args(&backend, "60s", backend_command(&backend, &[]));
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
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
fn connections_max_keeps_excess_clients_waiting_not_reset() {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let mut a = idlegate_args(&backend, "60s", Vec::new());
    a.extend(args(&["--connections-max", "2"]));
    a.extend(backend_command(&backend, &[]));
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
    let open = |msg: &[u8]| {
        let mut s = TcpStream::connect(act.tcp_addrs[0]).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(msg).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg);
        s
    };
    let first = open(b"one\n");
    let _second = open(b"two\n");
    let mut third = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    third.write_all(b"three\n").unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 6];
    let err = third
        .read(&mut buf)
        .expect_err("the third client must wait while two are open");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "waiting, not reset: {err}"
    );
    drop(first);
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    third.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"three\n");
}

/// With few descriptors (LimitNOFILE=100) idlegate serves as many
/// connections as fit and keeps the rest waiting in the backlog: every client
/// is served in the end, none meets EMFILE.
#[test]
fn a_low_descriptor_limit_holds_excess_clients_instead_of_failing_them() {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let _backend = External::start(&backend);
    let a = args(&["--upstream", &backend, "--idle-timeout", "60s"]);
    let act = ActivatorBuilder::new(dir, &a)
        .tcp("limited")
        .env("IDLEGATE_TEST_NOFILE", "100")
        .start();
    let mut clients: Vec<TcpStream> = (0..60)
        .map(|i| {
            let mut c = TcpStream::connect(act.tcp_addrs[0]).unwrap();
            c.set_read_timeout(Some(PATIENCE)).unwrap();
            c.write_all(format!("client {i:02}\n").as_bytes()).unwrap();
            c
        })
        .collect();
    // The first ones are served while all stay open; closing each frees a slot.
    for (i, c) in clients.iter_mut().enumerate() {
        let mut echo = [0u8; 10];
        c.read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("client {i}: {e}: {}", act.log()));
        assert_eq!(echo, *format!("client {i:02}\n").as_bytes());
        c.shutdown(Shutdown::Both).unwrap();
    }
    let log = act.log();
    // (100 - 64 kept aside - those open at start) / 2 per connection.
    let fitted: usize = log
        .split("serving at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fitted limit logged: {log}"));
    assert!((10..=17).contains(&fitted), "fitted to {fitted}: {log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Thousands of connections open at once are all served: idlegate raises its
/// own descriptor limit, and none is refused or reset.
#[test]
fn two_thousand_concurrent_connections_are_served() {
    const CLIENTS: usize = 2000;
    // This test holds the client ends; the backend it starts inherits the limit.
    raise_open_files_limit(3 * CLIENTS as u64 + 256);
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let _backend = External::start(&backend);
    let a = args(&["--upstream", &backend, "--idle-timeout", "60s"]);
    let act = ActivatorBuilder::new(dir, &a).tcp("many").start();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = TcpStream::connect(act.tcp_addrs[0]).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        c.write_all(format!("{i:05}\n").as_bytes()).unwrap();
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut echo = [0u8; 6];
        c.read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("client {i}: {e}: {}", act.log()));
        assert_eq!(echo, *format!("{i:05}\n").as_bytes());
    }
    assert!(act.exits().is_empty());
    assert!(!act.log().contains("Too many open files"), "{}", act.log());
}

/// Raises this process's soft open-files limit to at least `want` (root's
/// hard limit allows it).
fn raise_open_files_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
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
fn sd_notify_reports_ready_status_and_stopping() {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let socket_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let a = idlegate_args(&backend, "300ms", backend_command(&backend, &[]));
    let act = ActivatorBuilder::new(dir.clone(), &a)
        .tcp("http")
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .start();
    // While a connection is open the state holds still, so the status
    // (sent at most 4 times a second, changes coalesced) must reach "ready".
    let mut client = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"hi\n").unwrap();
    let mut echo = [0u8; 3];
    client.read_exact(&mut echo).unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !messages
        .iter()
        .any(|m: &String| m.contains("STATUS=backend ready"))
    {
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}: {messages:?}"));
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    drop(client);
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
    notify.set_nonblocking(true).unwrap();
    while let Ok(n) = notify.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        messages.first().is_some_and(|m| m.starts_with("READY=1\n")),
        "{messages:?}"
    );
    assert!(
        messages
            .last()
            .is_some_and(|m| m.starts_with("STOPPING=1\n")),
        "STOPPING=1 comes last: {messages:?}"
    );
}

#[test]
fn a_backend_never_ready_fails_at_the_start_timeout_and_is_killed() {
    let (act, pid_file) = delayed_backend("600000", "60s", &["--start-timeout", "1s"]);
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
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let pid_file = dir.path().join("backend.pid");
    let a = args(&[
        "--upstream",
        &backend,
        "--idle-timeout",
        "200ms",
        "--stop-timeout",
        "1s",
    ]);
    let mut a = a;
    a.extend(backend_command(
        &backend,
        &["--ignore-sigterm", "--pid-file", pid_file.to_str().unwrap()],
    ));
    let act = ActivatorBuilder::new(dir.clone(), &a).tcp("http").start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let status = act.wait_exit(1, PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", act.log());
    assert!(process_gone(read_pid(&pid_file)));
    assert!(act.log().contains("sending SIGKILL"), "{}", act.log());
}

#[test]
fn under_journald_log_lines_carry_no_timestamp() {
    let dir = tempdir();
    let port = free_port();
    let _backend = External::start(&format!("127.0.0.1:{port}"));
    let a = args(&[
        "--upstream",
        &format!("127.0.0.1:{port}"),
        "--idle-timeout",
        "200ms",
    ]);
    let act = ActivatorBuilder::new(dir, &a)
        .tcp("http")
        .env("JOURNAL_STREAM", "8:12345")
        .start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
    let log = act.log();
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(!line.starts_with("20"), "no timestamp expected: {line}");
        assert!(!line.contains('\u{1b}'), "no colour expected: {line}");
    }
}
