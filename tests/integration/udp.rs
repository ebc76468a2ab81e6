//! UDP: datagram sockets (`ListenDatagram=`, `--listen udp:…`), with the test
//! backend as a UDP echo server that binds late. Every datagram sent must come
//! back: none may be dropped by idlegate while the backend starts, across an
//! idle exit, or across a re-activation.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::support::activator::{describe, Activator};
use crate::support::*;

/// A client socket on 127.0.0.1 that waits at most [`PATIENCE`] for a reply.
fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Receives `n` datagrams on `s`, failing loudly if one does not come.
fn receive(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 2048];
    (0..n)
        .map(|i| {
            let (len, _) = s
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("reply {} of {n} did not come: {e}", i + 1));
            buf[..len].to_vec()
        })
        .collect()
}

/// Sends `count` datagrams to `addr` one by one, each answered before a pause
/// of `min_us` plus up to `spread_us` microseconds (random, from `seed`).
fn echo_one_by_one(addr: SocketAddr, count: usize, seed: u32, min_us: u64, spread_us: u32) {
    let c = client();
    let mut rng = Xorshift::new(seed);
    for i in 0..count {
        let d = format!("datagram {i}").into_bytes();
        c.send_to(&d, addr).unwrap();
        assert_eq!(receive(&c, 1)[0], d, "datagram {i}");
        std::thread::sleep(Duration::from_micros(min_us + rng.below(spread_us) as u64));
    }
}

/// idlegate with a UDP socket named `dns` in front of a test UDP echo backend
/// that binds after `delay_ms`; returns the activator and the backend's pid file.
fn udp_gate(
    delay_ms: &str,
    flow: &str,
    idle: &str,
    extra: &[&str],
) -> (Activator, std::path::PathBuf) {
    let Gate { act, pid_file, .. } = Fixture::udp()
        .idle(idle)
        .extra(&["--udp-flow-timeout", flow])
        .extra(extra)
        .backend(&["--delay-ms", delay_ms])
        .pid_file()
        .start();
    (act, pid_file)
}

#[test]
fn a_cold_start_queues_every_datagram_until_a_late_backend_binds() {
    let (act, pid_file) = udp_gate("400", "30s", "1h", &[]);
    let addr = act.udp_addrs[0];
    let c = client();
    let sent: BTreeSet<Vec<u8>> = (0..50).map(|i| format!("query {i}").into_bytes()).collect();
    for d in &sent {
        c.send_to(d, addr).unwrap();
    }
    let got: BTreeSet<Vec<u8>> = receive(&c, sent.len()).into_iter().collect();
    assert_eq!(got, sent, "every datagram sent during the start came back");
    assert!(
        read_pid(&pid_file) > 0,
        "the backend was started by the first datagram"
    );
    assert_eq!(act.activations(), 1);
    let log = act.log();
    assert!(
        log.contains(&format!(
            "socket-activated: fd 3 (dns) -> udp:{}",
            "127.0.0.1"
        )) && log.contains(" (udp)"),
        "{log}"
    );
    assert!(log.contains("backend ready on udp:"), "{log}");
}

#[test]
fn several_clients_each_get_their_own_flow_and_only_their_replies() {
    let (act, _) = udp_gate("0", "30s", "1h", &[]);
    let addr = act.udp_addrs[0];
    let clients: Vec<_> = (0..4)
        .map(|k| {
            std::thread::spawn(move || {
                let c = client();
                let mut want = Vec::new();
                for i in 0..40 {
                    let d = format!("client {k} datagram {i}").into_bytes();
                    c.send_to(&d, addr).unwrap();
                    want.push(d);
                    if i % 10 == 9 {
                        // Some in flight at once, then catch up.
                        let got = receive(&c, 10);
                        assert_eq!(
                            got,
                            want[i - 9..=i],
                            "client {k}: replies in order, its own"
                        );
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(act.activations(), 1);
}

#[test]
fn flows_expire_then_idle_exit_and_reactivation_lose_no_datagram() {
    let (act, pid_file) = udp_gate("100", "300ms", "300ms", &[]);
    let addr = act.udp_addrs[0];
    let c = client();
    for round in 0..3 {
        // A burst, answered in full, then silence: the flow expires, the
        // backend stops and idlegate exits 0; the next burst activates it again.
        let burst: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("r{round} d{i}").into_bytes())
            .collect();
        for d in &burst {
            c.send_to(d, addr).unwrap();
        }
        let got: BTreeSet<Vec<u8>> = receive(&c, burst.len()).into_iter().collect();
        assert_eq!(got, burst.into_iter().collect(), "round {round}");
        let backend = read_pid(&pid_file);
        let status = act.wait_exit(round + 1, PATIENCE);
        assert_eq!(status.code(), Some(0), "idle exit {}", describe(&status));
        assert!(wait_gone(backend, PATIENCE), "the backend stopped with it");
    }
    assert_eq!(act.activations(), 3);
    let log = act.log();
    assert!(log.contains("idle for"), "{log}");
}

#[test]
fn datagrams_straddling_the_idle_exit_are_all_answered() {
    // Think times around flow + idle timeout, so some datagrams arrive as the
    // idle timer fires or while idlegate exits; each must be answered, by
    // this run or by the next activation.
    let (act, _) = udp_gate("0", "100ms", "100ms", &[]);
    echo_one_by_one(act.udp_addrs[0], 40, 0x0D9A, 150_000, 150_000);
    assert!(
        act.activations() >= 2,
        "the think times straddled idle exits"
    );
    for status in act.exits() {
        assert_eq!(status.code(), Some(0), "{}", describe(&status));
    }
}

#[test]
fn proxy_protocol_v2_prefixes_every_datagram() {
    let (act, _) = udp_gate("0", "30s", "1h", &["--proxy-protocol", "v2"]);
    let addr = act.udp_addrs[0];
    let c = client();
    let me = c.local_addr().unwrap();
    for payload in [&b"first"[..], b"second"] {
        c.send_to(payload, addr).unwrap();
        // The echo backend sends back what it got: header and payload.
        let got = receive(&c, 1).remove(0);
        assert_eq!(&got[..12], b"\r\n\r\n\0\r\nQUIT\n", "v2 signature");
        assert_eq!(
            &got[12..16],
            &[0x21, 0x12, 0, 12],
            "PROXY, UDP over IPv4, 12 bytes"
        );
        assert_eq!(&got[16..20], &[127, 0, 0, 1], "source address");
        assert_eq!(&got[20..24], &[127, 0, 0, 1], "destination address");
        assert_eq!(&got[24..26], &me.port().to_be_bytes(), "source port");
        assert_eq!(&got[26..28], &addr.port().to_be_bytes(), "destination port");
        assert_eq!(&got[28..], payload);
    }
}

#[test]
fn listen_udp_binds_itself_and_stops_the_backend_when_idle() {
    let fixture = Fixture::udp()
        .idle("200ms")
        .default_stop_timeout()
        .extra(&["--udp-flow-timeout", "200ms"])
        .pid_file();
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let pid_file = fixture.file("backend.pid");
    let mut a = args(&["--listen", &format!("udp:{front}")]);
    a.extend(fixture.args());
    let log = fixture.file("listen.log");
    let mut child = spawn_not_activated(&a, &log);
    let c = client();
    // The socket is bound before idlegate logs that it listens.
    wait_until("idlegate to listen", PATIENCE, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening: udp:")
    });
    c.send_to(b"one", front).unwrap();
    assert_eq!(receive(&c, 1)[0], b"one");
    let first = read_pid(&pid_file);
    assert!(wait_gone(first, PATIENCE), "idle stops the backend");
    assert!(
        child.try_wait().unwrap().is_none(),
        "idlegate keeps listening"
    );
    c.send_to(b"two", front).unwrap();
    assert_eq!(receive(&c, 1)[0], b"two");
    assert_ne!(read_pid(&pid_file), first, "a new backend answered");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "idlegate did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn udp_usage_errors_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--listen", "udp:127.0.0.1:1", "--upstream", "127.0.0.1:2"],
            "write it as udp:HOST:PORT",
        ),
        (
            &["--listen", "127.0.0.1:1", "--upstream", "udp:127.0.0.1:2"],
            "is UDP",
        ),
        (
            &["--upstream", "udp:127.0.0.1:2", "--proxy-protocol", "v1"],
            "v1 has no UDP form",
        ),
        (
            &["--upstream", "udp:127.0.0.1:2", "--udp-flow-timeout", "0"],
            "--udp-flow-timeout",
        ),
        (
            &["--upstream", "udp:127.0.0.1:2", "--ready-http", "/health"],
            "--ready-http",
        ),
        (&["--upstream", "udp:nowhere"], "udp:nowhere"),
    ];
    for (a, want) in cases {
        let (code, stderr) = run_idlegate(a, &[]);
        assert_eq!(code, Some(2), "{a:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{a:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{a:?}: {want:?} missing from {stderr}"
        );
    }
}

#[test]
fn a_reload_shortens_the_flow_timeout_of_live_flows() {
    let dir = tempdir();
    let config = dir.path().join("idlegate.toml");
    let backend = format!("127.0.0.1:{}", free_port());
    let write = |flow: &str| {
        let text = format!(
            "upstream = \"udp:{backend}\"\nidle-timeout = \"300ms\"\nudp-flow-timeout = \"{flow}\"\ncommand = [\"{}\", \"--udp\", \"--listen\", \"{backend}\"]\n",
            test_backend_bin().display()
        );
        std::fs::write(&config, text).unwrap();
    };
    write("1h");
    let a = args(&["--config", config.to_str().unwrap()]);
    let act = ActivatorBuilder::new(dir.clone(), &a).udp("dns").start();
    let addr = act.udp_addrs[0];
    let c = client();
    c.send_to(b"before", addr).unwrap();
    assert_eq!(receive(&c, 1)[0], b"before");
    write("300ms");
    let before = act.log().matches("configuration reloaded").count();
    act.signal(libc::SIGHUP);
    wait_until("the reload in the log", PATIENCE, || {
        act.log().matches("configuration reloaded").count() > before
    });
    // The live flow now ends 300 ms after its last datagram, not in an hour.
    let status = act.wait_exit(1, PATIENCE);
    assert_eq!(
        status.code(),
        Some(0),
        "{}: {}",
        describe(&status),
        act.log()
    );
}

#[test]
fn a_backend_that_crashes_under_a_live_flow_is_started_again_by_its_next_datagram() {
    let (act, pid_file) = udp_gate("0", "30s", "1h", &[]);
    let addr = act.udp_addrs[0];
    let c = client();
    c.send_to(b"one", addr).unwrap();
    assert_eq!(receive(&c, 1)[0], b"one");
    let first = read_pid(&pid_file);
    c.send_to(b"CRASH", addr).unwrap();
    assert!(wait_gone(first, PATIENCE), "the backend crashed");
    wait_until("idlegate to see the crash", PATIENCE, || {
        act.log().contains("exited: exit status: 3")
    });
    // The same client, the same flow: its next datagram starts a new backend.
    c.send_to(b"two", addr).unwrap();
    assert_eq!(receive(&c, 1)[0], b"two", "{}", act.log());
    assert_ne!(read_pid(&pid_file), first, "a new backend answered");
    assert_eq!(act.activations(), 1, "idlegate itself kept running");
}

#[test]
fn a_game_server_with_a_tcp_and_a_udp_port_is_one_backend() {
    // One backend process group serving TCP and UDP (as game servers do):
    // ready once both ports take traffic, stopped when neither has work.
    let dir = tempdir();
    let tcp = format!("127.0.0.1:{}", free_port());
    let udp = format!("127.0.0.1:{}", free_port());
    let (tcp_pid, udp_pid) = (dir.path().join("tcp.pid"), dir.path().join("udp.pid"));
    let bin = test_backend_bin();
    let script = format!(
        "{bin} --listen {tcp} --pid-file {tp} & exec {bin} --udp --delay-ms 300 --listen {udp} --pid-file {up}",
        bin = bin.display(),
        tp = tcp_pid.display(),
        up = udp_pid.display()
    );
    let a = args(&[
        "--upstream",
        &format!("game={tcp}"),
        "--upstream",
        &format!("voice=udp:{udp}"),
        "--udp-flow-timeout",
        "300ms",
        "--idle-timeout",
        "300ms",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let act = ActivatorBuilder::new(dir.clone(), &a)
        .tcp("game")
        .udp("voice")
        .start();
    let c = client();
    // The datagram activates; the late UDP port is waited for, as is the TCP one.
    c.send_to(b"voice 1", act.udp_addrs[0]).unwrap();
    assert_eq!(
        exchange_str(act.tcp_addrs[0], "game 1\n").unwrap(),
        "game 1\n"
    );
    assert_eq!(receive(&c, 1)[0], b"voice 1");
    let log = act.log();
    assert!(
        log.contains(&format!("backend ready on {tcp}, udp:{udp}")),
        "{log}"
    );
    let pids = (read_pid(&tcp_pid), read_pid(&udp_pid));
    let status = act.wait_exit(1, PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", describe(&status));
    assert!(
        wait_gone(pids.0, PATIENCE) && wait_gone(pids.1, PATIENCE),
        "both stopped"
    );
}

#[test]
fn ipv6_clients_and_upstreams_work_too() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let dir = tempdir();
    let front: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let backend = format!("[::1]:{}", free_port());
    let mut a = args(&[
        "--listen",
        &format!("udp:{front}"),
        "--upstream",
        &format!("udp:{backend}"),
        "--proxy-protocol",
        "v2",
    ]);
    a.extend(backend_command(&backend, &["--udp"]));
    let log = dir.path().join("v6.log");
    let mut child = spawn_not_activated(&a, &log);
    wait_until("idlegate to listen", PATIENCE, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening: udp:")
    });
    let c = UdpSocket::bind("[::1]:0").unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.send_to(b"six", front).unwrap();
    let got = receive(&c, 1).remove(0);
    // PROXY v2, UDP over IPv6: 36 address bytes, then the payload.
    assert_eq!(&got[12..16], &[0x21, 0x22, 0, 36]);
    assert_eq!(&got[16..32], &std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(&got[48..50], &c.local_addr().unwrap().port().to_be_bytes());
    assert_eq!(&got[52..], b"six");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn datagrams_that_meet_their_flow_expiring_are_not_lost() {
    // Gaps within 8 ms of a 250 ms flow timeout: many datagrams arrive as
    // their flow ends, and either reach it in time or start a new one. (A
    // reply later than the timeout is lost by design, so the timeout must
    // outlast any stall of a loaded machine: 20 ms and then 50 ms were not
    // always enough with several builds running beside the tests.)
    let (act, _) = udp_gate("0", "250ms", "1h", &[]);
    echo_one_by_one(act.udp_addrs[0], 120, 0xF10E, 242_000, 16_000);
}
