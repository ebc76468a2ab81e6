//! Stopping idlegate: SIGTERM drains live connections and still serves a
//! client held for a cold start, a second SIGTERM ends the drain, and a
//! killed idlegate takes its backend with it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::support::*;

/// SIGTERM while the backend is still starting: the held client is still
/// served once it is up (within the stop timeout), then everything stops and
/// idlegate exits 0, leaving no backend.
#[test]
fn sigterm_during_a_cold_start_still_serves_the_held_client() {
    let Gate { act, pid_file, .. } = Fixture::tcp()
        .backend(&["--delay-ms", "800"])
        .pid_file()
        .start();
    let mut conn = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"held\n").unwrap();
    let pid = read_pid(&pid_file);
    act.signal(libc::SIGTERM);
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held\n", "{}", act.log());
    conn.shutdown(Shutdown::Write).unwrap();
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(wait_gone(pid, PATIENCE), "the backend was stopped");
}

/// An external backend is not idlegate's to bring up: a stop while it is
/// down (systemd stopping a service bound to a backend that failed) closes
/// the clients held for it at once, not at the end of the stop timeout.
#[test]
fn sigterm_while_an_external_backend_is_down_closes_its_held_clients_at_once() {
    let act = Fixture::tcp()
        .stop_timeout("60s")
        .external()
        .socket("external")
        .start();
    let mut conn = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"held\n").unwrap();
    wait_until("the client held", PATIENCE, || {
        act.log().contains("waiting for the external backend")
    });
    let started = std::time::Instant::now();
    act.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("closed with a FIN");
    assert!(rest.is_empty());
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "held for {:?} of the 60 s stop timeout",
        started.elapsed()
    );
}

/// A second SIGTERM cuts the drain short: with a minute of stop timeout and
/// a connection that never ends, idlegate still exits 0 at once.
#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let act = Fixture::tcp().stop_timeout("60s").start();
    let mut conn = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"SLOW 100000 100\n").unwrap();
    let mut tick = [0u8; 7];
    conn.read_exact(&mut tick).unwrap();
    act.signal(libc::SIGTERM);
    wait_until("idlegate to start draining", PATIENCE, || {
        act.log().contains("waiting up to 1m")
    });
    act.signal(libc::SIGTERM);
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(act.log().contains("second stop request"), "{}", act.log());
}

#[test]
fn sigterm_drains_a_live_connection_then_stops_the_backend() {
    let Gate { act, pid_file, .. } = Fixture::tcp().pid_file().start();
    let mut conn = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"first\n").unwrap();
    let mut buf = [0u8; 6];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"first\n");

    act.signal(libc::SIGTERM);
    wait_until("idlegate to start draining", PATIENCE, || {
        act.log().contains("waiting up to")
    });
    assert!(
        act.exits().is_empty(),
        "idlegate must wait for the live connection"
    );
    conn.write_all(b"second\n").unwrap();
    let mut buf = [0u8; 7];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(
        &buf, b"second\n",
        "the connection is still served while draining"
    );
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    act.wait_exit_0(1, PATIENCE);
    assert!(process_gone(read_pid(&pid_file)));
}

#[test]
fn the_backend_dies_with_a_killed_idlegate() {
    let Gate { act, pid_file, .. } = Fixture::tcp().pid_file().start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    act.signal(libc::SIGKILL);
    assert_eq!(act.wait_exit(1, PATIENCE).signal(), Some(libc::SIGKILL));
    assert!(
        wait_gone(read_pid(&pid_file), PATIENCE),
        "PR_SET_PDEATHSIG takes the backend down with idlegate"
    );
}
