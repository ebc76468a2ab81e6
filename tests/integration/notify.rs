//! What idlegate tells systemd: sd_notify messages, and log lines fit for
//! journald.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::support::*;

#[test]
fn sd_notify_reports_ready_status_and_stopping() {
    let fixture = Fixture::tcp().idle("300ms");
    let socket_path = fixture.file("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let act = fixture
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
    let fixture = Fixture::tcp()
        .idle("200ms")
        .default_stop_timeout()
        .external()
        .env("JOURNAL_STREAM", "8:12345");
    let _backend = External::start(fixture.upstream_addr());
    let act = fixture.start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
    let log = act.log();
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(!line.starts_with("20"), "no timestamp expected: {line}");
        assert!(!line.contains('\u{1b}'), "no colour expected: {line}");
    }
}
