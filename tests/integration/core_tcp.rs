//! The core in TCP mode, end to end: activation, the backend on demand,
//! readiness, forwarding, in-flight tracking and idle exit.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::support::*;

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
