//! Forwarding in TCP mode: bytes both ways and the half-close, bulk flows,
//! the PROXY protocol, sockets routed to upstreams by name or position, Unix
//! sockets, and a backend with several upstreams ready only when all accept.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::support::*;

#[test]
fn half_close_reaches_the_backend_and_the_answer_still_comes_back() {
    let act = Fixture::tcp().start();
    let mut payload = b"COUNT\n".to_vec();
    payload.extend(std::iter::repeat_n(b'x', 300_000));
    // The backend answers only after it saw our end-of-file.
    let answer = exchange(act.tcp_addrs[0], &payload).unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "300000\n");
}

/// Large flows take the splice path: 24 MiB of varied bytes each way, to a
/// TCP and to a Unix upstream, arrive unchanged, and the half-close still
/// passes through.
#[test]
fn bulk_bytes_pass_unchanged_both_ways() {
    let dir = tempdir();
    let back = dir.path().join("bulk.sock");
    let mut random = Xorshift::new(7);
    let mut payload = b"bulk\n".to_vec();
    payload.extend((0..24 << 20).map(|_| random.below(256) as u8));
    let payload = std::sync::Arc::new(payload);
    for upstream in [
        format!("127.0.0.1:{}", free_port()),
        format!("unix:{}", back.display()),
    ] {
        let act = Fixture::tcp()
            .dir(&dir)
            .upstream(&upstream)
            .socket("bulk")
            .start();
        let mut s = TcpStream::connect(act.tcp_addrs[0]).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let writer = {
            let (mut w, payload) = (s.try_clone().unwrap(), payload.clone());
            std::thread::spawn(move || {
                w.write_all(&payload).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut echoed = Vec::with_capacity(payload.len());
        s.read_to_end(&mut echoed).unwrap();
        writer.join().unwrap();
        assert_eq!(
            echoed.len(),
            payload.len(),
            "{upstream}: every byte came back"
        );
        assert!(
            echoed == *payload,
            "{upstream}: the bytes came back unchanged"
        );
    }
}

/// Sockets named http and https (in that order), routed by `--upstream NAME=ADDR`.
fn http_and_https(
    dir: std::sync::Arc<tempfile::TempDir>,
    routes: &[(&str, &str)],
) -> crate::support::activator::Activator {
    let mut a = args(&["--idle-timeout", "60s"]);
    for (name, addr) in routes {
        a.extend(args(&["--upstream", &format!("{name}={addr}")]));
    }
    ActivatorBuilder::new(dir, &a)
        .tcp("http")
        .tcp("https")
        .start()
}

/// With several upstreams the backend is ready only when every one accepts
/// (a web server's TLS port often opens after its plain one).
#[test]
fn every_upstream_must_accept_before_clients_are_forwarded() {
    let dir = tempdir();
    let (plain, tls) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let act = http_and_https(dir, &[("http", &plain), ("https", &tls)]);
    let _plain_backend = External::start(&plain);
    let mut client = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    client.write_all(b"held\n").unwrap();
    wait_until("idlegate to wait for both upstreams", PATIENCE, || {
        act.log().contains(&format!(
            "waiting for the external backend on {plain}, {tls}"
        ))
    });
    // The plain upstream answers, yet the client is held for the other one.
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut echo = [0u8; 5];
    assert!(
        client.read_exact(&mut echo).is_err(),
        "held while {tls} is down"
    );
    let _tls_backend = External::start(&tls);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"held\n");
}

/// `--proxy-protocol v1|v2`: the backend gets the client's real address in
/// a PROXY header before the client's bytes (the echo backend sends it all back).
#[test]
fn the_proxy_protocol_header_carries_the_client_address() {
    for version in ["v1", "v2"] {
        let act = Fixture::tcp()
            .extra(&["--proxy-protocol", version])
            .socket("proxied")
            .start();
        let mut c = TcpStream::connect(act.tcp_addrs[0]).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let (client, server) = (c.local_addr().unwrap(), act.tcp_addrs[0]);
        c.write_all(b"hello\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let mut want = match version {
            "v1" => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                client.ip(),
                server.ip(),
                client.port(),
                server.port()
            )
            .into_bytes(),
            _ => {
                let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                h.extend([0x21, 0x11, 0, 12]);
                h.extend([127, 0, 0, 1, 127, 0, 0, 1]);
                h.extend(client.port().to_be_bytes());
                h.extend(server.port().to_be_bytes());
                h
            }
        };
        want.extend(b"hello\n");
        assert_eq!(got, want, "{version}: {}", act.log());
    }
}

/// Two external backends on free ports of 127.0.0.1: the ports, then the backends.
fn two_backends() -> (u16, u16, External, External) {
    let (p1, p2) = (free_port(), free_port());
    let b1 = External::start(&format!("127.0.0.1:{p1}"));
    let b2 = External::start(&format!("127.0.0.1:{p2}"));
    (p1, p2, b1, b2)
}

#[test]
fn named_sockets_route_to_their_own_upstreams() {
    let dir = tempdir();
    let (p1, p2, b1, b2) = two_backends();
    // Given in the opposite order to the sockets: names, not positions, decide.
    let act = http_and_https(
        dir,
        &[
            ("https", &format!("127.0.0.1:{p2}")),
            ("http", &format!("127.0.0.1:{p1}")),
        ],
    );
    let http = exchange_str(act.tcp_addrs[0], "PID\n").unwrap();
    let https = exchange_str(act.tcp_addrs[1], "PID\n").unwrap();
    assert_eq!(http.trim(), b1.0.id().to_string());
    assert_eq!(https.trim(), b2.0.id().to_string());
    assert_eq!(act.activations(), 1);
}

#[test]
fn positional_upstreams_follow_socket_order_and_counts_must_match() {
    let dir = tempdir();
    let (p1, p2, b1, b2) = two_backends();
    let a = args(&[
        "--upstream",
        &format!("127.0.0.1:{p1}"),
        "--upstream",
        &format!("127.0.0.1:{p2}"),
    ]);
    let act = ActivatorBuilder::new(dir.clone(), &a)
        .tcp("a")
        .tcp("b")
        .start();
    assert_eq!(
        exchange_str(act.tcp_addrs[0], "PID\n").unwrap().trim(),
        b1.0.id().to_string()
    );
    assert_eq!(
        exchange_str(act.tcp_addrs[1], "PID\n").unwrap().trim(),
        b2.0.id().to_string()
    );
    drop(act);

    // Two sockets, one upstream: a usage error, exit 2, before serving anyone.
    let a = args(&["--upstream", &format!("127.0.0.1:{p1}")]);
    let act = ActivatorBuilder::new(dir.clone(), &a)
        .tcp("a")
        .tcp("b")
        .start();
    let _client = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(2));
    assert!(act.log().contains("2 sockets were passed"), "{}", act.log());
    drop(act);

    // A name that no socket has.
    let a = args(&["--upstream", &format!("web=127.0.0.1:{p1}")]);
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
    let _client = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(2));
    assert!(
        act.log().contains("no passed socket is named 'web'"),
        "{}",
        act.log()
    );
}

#[test]
fn unix_listener_and_unix_upstream() {
    let fixture = Fixture::tcp().idle("300ms").socket("front");
    let front = fixture.file("front.sock");
    let back = fixture.file("back.sock");
    let act = fixture
        .upstream(&format!("unix:{}", back.display()))
        .backend(&["--delay-ms", "200"])
        .unix_socket(&front)
        .start();
    let mut s = std::os::unix::net::UnixStream::connect(&front).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"over unix\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "over unix\n");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
}
