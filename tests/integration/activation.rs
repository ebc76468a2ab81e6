//! How idlegate is activated and what it is handed: the first client held
//! through a cold start, `Accept=yes` connections, and passed descriptors
//! that are not stream sockets.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::support::activator::spawn_with_fds;
use crate::support::*;

#[test]
fn cold_start_holds_the_first_client_until_a_late_backend_binds() {
    let act = Fixture::tcp().backend(&["--delay-ms", "500"]).start();
    let started = Instant::now();
    let answer = exchange_str(act.tcp_addrs[0], "hello\n").expect("the first client is served");
    assert_eq!(answer, "hello\n");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the backend binds only after 500 ms"
    );
    assert_eq!(act.activations(), 1);
    let log = act.log();
    assert!(log.contains("backend ready on"), "{log}");
    assert!(
        log.contains("test backend: listening on"),
        "backend output is logged: {log}"
    );
}

/// A client that gives up while held for a cold backend leaks nothing: the
/// backend still becomes ready, the idle timer applies, idlegate exits 0 and
/// leaves no backend behind.
#[test]
fn a_client_that_gives_up_during_a_cold_start_leaks_nothing() {
    let Gate { act, pid_file, .. } = Fixture::tcp()
        .idle("300ms")
        .backend(&["--delay-ms", "500"])
        .pid_file()
        .start();
    let mut client = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    client.write_all(b"never mind\n").unwrap();
    let pid = read_pid(&pid_file);
    drop(client);
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(act.log().contains("backend ready on"), "{}", act.log());
    assert!(wait_gone(pid, PATIENCE), "the backend was stopped");
}

#[test]
fn accept_yes_connection_is_served_then_idlegate_exits() {
    let dir = tempdir();
    let port = free_port();
    let _backend = External::start(&format!("127.0.0.1:{port}"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    use std::os::fd::AsRawFd;
    let log = dir.path().join("accept.log");
    // systemd-socket-proxyd's own spelling: a positional upstream.
    let mut child = spawn_with_fds(
        &[server_side.as_raw_fd()],
        &["conn"],
        &args(&[&format!("127.0.0.1:{port}")]),
        &[],
        &log,
    );
    drop(server_side);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"single\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    client.read_to_string(&mut out).unwrap();
    assert_eq!(out, "single\n");
    let status = wait_child(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // With a backend command, Accept=yes is a usage error.
    let (mut client, server_side) = {
        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (c, listener.accept().unwrap().0)
    };
    let mut a = args(&["--upstream", &format!("127.0.0.1:{port}")]);
    a.extend(backend_command(&format!("127.0.0.1:{port}"), &[]));
    let mut child = spawn_with_fds(&[server_side.as_raw_fd()], &["conn"], &a, &[], &log);
    drop(server_side);
    assert_eq!(wait_child(&mut child).code(), Some(2));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("Accept=yes"));
    let mut out = Vec::new();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = client.read_to_end(&mut out);
}

#[test]
fn passed_descriptors_that_are_not_stream_sockets_are_usage_errors() {
    use std::os::fd::AsRawFd;
    let dir = tempdir();
    let log = dir.path().join("fds.log");
    let upstream = args(&["--upstream", "127.0.0.1:9"]);

    let file = std::fs::File::open("/dev/null").unwrap();
    let mut child = spawn_with_fds(&[file.as_raw_fd()], &["file"], &upstream, &[], &log);
    assert_eq!(wait_child(&mut child).code(), Some(2));

    // A UDP socket needs a udp: upstream; a Unix datagram socket is not served.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut child = spawn_with_fds(&[udp.as_raw_fd()], &["dns"], &upstream, &[], &log);
    assert_eq!(wait_child(&mut child).code(), Some(2));
    let unix_dgram = std::os::unix::net::UnixDatagram::bind(dir.path().join("dgram")).unwrap();
    let mut child = spawn_with_fds(&[unix_dgram.as_raw_fd()], &["log"], &upstream, &[], &log);
    assert_eq!(wait_child(&mut child).code(), Some(2));

    // LISTEN_FDS=2 with only one descriptor really passed.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = upstream.clone();
    a.extend(args(&["--upstream", "127.0.0.1:10"]));
    let mut child = spawn_with_fds(
        &[tcp.as_raw_fd()],
        &["one"],
        &a,
        &[
            ("LISTEN_FDS".into(), "2".into()),
            ("LISTEN_FDNAMES".into(), "one:two".into()),
        ],
        &log,
    );
    assert_eq!(wait_child(&mut child).code(), Some(2));

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("fd 3 (file) is not a socket"), "{log}");
    assert!(
        log.contains("socket fd 3 (dns) is a UDP socket but its upstream 127.0.0.1:9 is not: write it as udp:HOST:PORT"),
        "{log}"
    );
    assert!(
        log.contains(
            "fd 3 (log): Unix datagram sockets (ListenDatagram=/path) are not supported yet"
        ),
        "{log}"
    );
    assert!(log.contains("fd 4 (two) is not open"), "{log}");
}
