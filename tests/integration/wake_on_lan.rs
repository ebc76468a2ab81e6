//! Wake-on-LAN (`--wake-on-lan MAC`): a UDP socket on 127.0.0.1 stands in for
//! the sleeping host's network. It must receive well-formed magic packets,
//! repeated while the upstream stays down, and the client held meanwhile
//! must be served once the upstream comes up, in TCP and in UDP mode.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The sleeping host's card, as given and as logged.
const MAC: &str = "02-00-5e-10-00-01";
const MAC_LOGGED: &str = "02:00:5E:10:00:01";
const MAC_BYTES: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

/// Where the packets go: a socket that waits at most [`PATIENCE`] for one.
fn packet_listener() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Receives `n` datagrams on `listener`, each a magic packet for [`MAC`]
/// (six 0xFF, then the MAC sixteen times); returns when each came.
fn magic_packets(listener: &UdpSocket, n: usize) -> Vec<Instant> {
    let mut buf = [0u8; 512];
    (0..n)
        .map(|i| {
            let len = listener
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("magic packet {} of {n} did not come: {e}", i + 1));
            let packet = &buf[..len];
            assert_eq!(len, 102, "packet {}: {packet:02x?}", i + 1);
            assert_eq!(packet[..6], [0xFF; 6]);
            for copy in packet[6..].chunks(6) {
                assert_eq!(copy, MAC_BYTES, "packet {}: {packet:02x?}", i + 1);
            }
            Instant::now()
        })
        .collect()
}

/// `fixture` started with an external backend on a sleeping host: the
/// packets go to the listener returned.
fn sleeping_host(fixture: Fixture) -> (UdpSocket, Gate) {
    let listener = packet_listener();
    let to = listener.local_addr().unwrap().to_string();
    let flags = ["--wake-on-lan", MAC, "--wake-on-lan-address", &to];
    (listener, fixture.external().extra(&flags).start())
}

/// A TCP client is held while the packets go out every 3 s; once the
/// backend listens it is served, and the packets stop.
#[test]
fn magic_packets_are_repeated_until_the_upstream_answers_and_the_client_is_served() {
    let (listener, Gate { act, backend, .. }) = sleeping_host(Fixture::tcp());
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || {
        let answer = exchange_str(addr, "woken\n");
        (answer, Instant::now())
    });
    let sent = magic_packets(&listener, 2);
    let between = sent[1] - sent[0];
    assert!(
        between >= Duration::from_millis(2500) && between < Duration::from_secs(10),
        "the packet is repeated every 3 s, not {between:?}"
    );
    assert!(
        !client.is_finished(),
        "the client is held while the host sleeps"
    );

    let up = Instant::now();
    let _backend = External::start(&backend);
    let (answer, served) = client.join().unwrap();
    assert_eq!(answer.unwrap(), "woken\n");
    eprintln!("served {:?} after the backend was started", served - up);

    // The start is over: no more packets (one may have crossed the start).
    listener
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    let mut buf = [0u8; 512];
    let mut late = 0;
    while listener.recv(&mut buf).is_ok() {
        late += 1;
        assert!(late <= 1, "magic packets still sent after the start ended");
    }
    let log = act.log();
    assert!(
        log.contains(&format!(
            "waking {MAC_LOGGED}: magic packet to {}",
            listener.local_addr().unwrap()
        )),
        "{log}"
    );
    assert!(log.contains("backend ready on"), "{log}");
}

/// UDP mode: the datagram sent while the host sleeps is held and answered
/// once the backend is up.
#[test]
fn a_udp_client_is_held_while_the_host_wakes() {
    let (listener, Gate { act, backend, .. }) = sleeping_host(Fixture::udp());
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.send_to(b"query", act.udp_addrs[0]).unwrap();
    magic_packets(&listener, 2);

    let up = Instant::now();
    let child = Command::new(test_backend_bin())
        .args(["--listen", &backend, "--udp"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the UDP backend");
    let _backend = External(child);
    let mut buf = [0u8; 64];
    let len = client
        .recv(&mut buf)
        .expect("the held datagram is answered");
    assert_eq!(&buf[..len], b"query");
    eprintln!("answered {:?} after the backend was started", up.elapsed());
}

/// With `--stop-cmd` the host is put back to sleep when idle (here the
/// command only leaves a mark), and idlegate exits 0.
#[test]
fn the_stop_command_puts_the_host_back_to_sleep_when_idle() {
    let dir = tempdir();
    let mark = dir.path().join("suspended");
    let stop = format!("echo suspended > {}", mark.display());
    let fixture = Fixture::tcp().dir(&dir).idle("300ms");
    let (listener, Gate { act, backend, .. }) =
        sleeping_host(fixture.extra(&["--stop-cmd", &stop]));
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || exchange_str(addr, "woken\n"));
    magic_packets(&listener, 1);
    let _backend = External::start(&backend);
    assert_eq!(client.join().unwrap().unwrap(), "woken\n");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "suspended\n");
}
