//! Limits: `--connections-max`, a low descriptor limit, and thousands of
//! concurrent connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::support::*;

#[test]
fn connections_max_keeps_excess_clients_waiting_not_reset() {
    let act = Fixture::tcp().extra(&["--connections-max", "2"]).start();
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
    let fixture = Fixture::tcp()
        .default_stop_timeout()
        .external()
        .socket("limited")
        .env("IDLEGATE_TEST_NOFILE", "100");
    let _backend = External::start(fixture.upstream_addr());
    let act = fixture.start();
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
    let fixture = Fixture::tcp()
        .default_stop_timeout()
        .external()
        .socket("many");
    let _backend = External::start(fixture.upstream_addr());
    let act = fixture.start();
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
