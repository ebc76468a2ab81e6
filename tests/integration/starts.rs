//! Steering a start: `--cancel-abandoned-start` stops a backend whose
//! waiting clients have all gone, `--hold-max` refuses the clients beyond a
//! number while it starts.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::http::{get, Response};
use crate::support::{exchange, free_port, process_gone, read_pid, wait_gone, Fixture, PATIENCE};

/// What the log says when a start is cancelled with a grace of 1 s.
const ABANDONED: &str = "start abandoned: no client waited for 1s; stopping backend";

/// A request for the backend's pid, as a client sends it.
const GET_PID: &[u8] = b"GET /pid HTTP/1.1\r\nHost: a\r\n\r\n";

/// A client that sends `first` and leaves after 0.5 s, as a user who gives up.
fn leave_after_half_a_second(addr: SocketAddr, first: &[u8]) {
    let mut client = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    client.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(500));
}

/// With `--cancel-abandoned-start 1s`, a backend that needs 10 s to listen,
/// whose one client left after 0.5 s, is stopped a second later, and
/// idlegate exits 0 as after an idle stop.
fn an_abandoned_start_is_cancelled(fixture: Fixture, first: &[u8]) {
    let gate = fixture
        .extra(&["--cancel-abandoned-start", "1s"])
        .backend(&["--delay-ms", "10000"])
        .pid_file()
        .start();
    let started = Instant::now();
    leave_after_half_a_second(gate.tcp_addrs[0], first);
    let left = Instant::now();
    let pid = read_pid(&gate.pid_file);
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "the backend of the abandoned start still runs: {}",
        gate.log()
    );
    let gone_after = left.elapsed();
    assert!(
        gone_after >= Duration::from_millis(900),
        "stopped {gone_after:?} after the client left, before the 1 s grace"
    );
    gate.wait_exit_0(1, PATIENCE);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "it took as long as the start itself"
    );
    let log = gate.log();
    assert_eq!(log.matches(ABANDONED).count(), 1, "{log}");
}

#[test]
fn a_tcp_start_whose_client_left_is_cancelled_and_idlegate_exits_0() {
    an_abandoned_start_is_cancelled(Fixture::tcp(), b"hello\n");
}

#[test]
fn an_http_start_whose_request_left_is_cancelled_and_idlegate_exits_0() {
    an_abandoned_start_is_cancelled(Fixture::http(), GET_PID);
}

#[test]
fn without_the_flag_a_start_whose_client_left_goes_on() {
    let gate = Fixture::tcp()
        .backend(&["--delay-ms", "3000"])
        .pid_file()
        .start();
    leave_after_half_a_second(gate.tcp_addrs[0], b"hello\n");
    let pid = read_pid(&gate.pid_file);
    let backend: SocketAddr = gate.backend.parse().unwrap();
    crate::support::wait_until("the backend to listen", PATIENCE, || {
        TcpStream::connect(backend).is_ok()
    });
    assert!(!process_gone(pid), "{}", gate.log());
    assert!(gate.exits().is_empty(), "{}", gate.log());
    assert!(!gate.log().contains("start abandoned"), "{}", gate.log());
}

#[test]
fn a_client_arriving_within_the_grace_keeps_the_start_going() {
    let gate = Fixture::http()
        .extra(&["--cancel-abandoned-start", "1s"])
        .backend(&["--delay-ms", "3000"])
        .pid_file()
        .start();
    leave_after_half_a_second(gate.tcp_addrs[0], GET_PID);
    // 0.3 s into the grace of the start nobody waits for now.
    std::thread::sleep(Duration::from_millis(300));
    let r = get(gate.tcp_addrs[0], "/pid", &[]).unwrap();
    assert_eq!(r.status, 200, "{r:?} {}", gate.log());
    assert_eq!(r.text().trim(), read_pid(&gate.pid_file).to_string());
    assert!(!gate.log().contains("start abandoned"), "{}", gate.log());
    assert!(gate.exits().is_empty());
}

/// The backend's start time in the `--hold-max` tests.
const START: Duration = Duration::from_secs(3);

/// Runs `client` from 6 threads at once; each answer with how long it took.
fn six_at_once<T: Send + 'static>(
    addr: SocketAddr,
    client: fn(SocketAddr) -> T,
) -> Vec<(T, Duration)> {
    let threads: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let sent = Instant::now();
                let answer = client(addr);
                (answer, sent.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The one warning of an activation's refusals.
const REFUSING: &str = "held for the backend's start (--hold-max)";

#[test]
fn http_requests_beyond_hold_max_get_a_503_with_retry_after_at_once() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gate = Fixture::http()
        .extra(&["--hold-max", "3", "--metrics", &metrics.to_string()])
        .backend(&["--delay-ms", &START.as_millis().to_string()])
        .pid_file()
        .start();
    let answers = six_at_once(gate.tcp_addrs[0], |addr| get(addr, "/pid", &[]).unwrap());
    let (held, refused): (Vec<&(Response, Duration)>, Vec<_>) =
        answers.iter().partition(|(r, _)| r.status == 200);
    assert_eq!(held.len(), 3, "{answers:?} {}", gate.log());
    assert_eq!(refused.len(), 3, "{answers:?}");
    let pid = read_pid(&gate.pid_file).to_string();
    for (r, took) in &held {
        assert_eq!(r.text().trim(), pid);
        assert!(*took >= START - Duration::from_millis(500), "{took:?}");
    }
    for (r, took) in &refused {
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.header("retry-after").is_some(), "{r:?}");
        assert!(*took < START / 2, "refused after {took:?}, not at once");
    }
    let scraped = get(metrics, "/metrics", &[]).unwrap().text();
    assert!(
        scraped.contains("idlegate_refused_while_starting_total{mode=\"http\"} 3\n"),
        "{scraped}"
    );
    assert_eq!(gate.log().matches(REFUSING).count(), 1, "{}", gate.log());
}

#[test]
fn tcp_clients_beyond_hold_max_are_closed_at_once() {
    let gate = Fixture::tcp()
        .extra(&["--hold-max", "3"])
        .backend(&["--delay-ms", &START.as_millis().to_string()])
        .start();
    let answers = six_at_once(gate.tcp_addrs[0], |addr| {
        exchange(addr, b"hello\n").unwrap()
    });
    let (held, refused): (Vec<&(Vec<u8>, Duration)>, Vec<_>) =
        answers.iter().partition(|(answer, _)| !answer.is_empty());
    assert_eq!(held.len(), 3, "{answers:?} {}", gate.log());
    assert_eq!(refused.len(), 3, "{answers:?}");
    for (answer, took) in &held {
        assert_eq!(answer, b"hello\n");
        assert!(*took >= START - Duration::from_millis(500), "{took:?}");
    }
    for (_, took) in &refused {
        assert!(*took < START / 2, "closed after {took:?}, not at once");
    }
    assert_eq!(gate.log().matches(REFUSING).count(), 1, "{}", gate.log());
}

#[test]
fn udp_flows_beyond_hold_max_are_dropped_and_counted() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gate = Fixture::udp()
        .extra(&["--hold-max", "1", "--metrics", &metrics.to_string()])
        .backend(&["--delay-ms", "1000"])
        .start();
    let addr = gate.udp_addrs[0];
    let clients: Vec<std::net::UdpSocket> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("client {i}").as_bytes(), addr).unwrap();
    }
    // The held flow is answered once the backend is up.
    let mut buf = [0u8; 64];
    clients[0].set_read_timeout(Some(PATIENCE)).unwrap();
    let (n, _) = clients[0].recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"client 0");
    // The others' datagrams were dropped: counted, and never answered.
    let scraped = get(metrics, "/metrics", &[]).unwrap().text();
    assert!(
        scraped.contains("idlegate_refused_while_starting_total{mode=\"udp\"} 2\n"),
        "{scraped} {}",
        gate.log()
    );
    for c in &clients[1..] {
        c.set_nonblocking(true).unwrap();
        assert!(
            c.recv_from(&mut buf).is_err(),
            "a dropped datagram was answered"
        );
    }
    assert_eq!(gate.log().matches(REFUSING).count(), 1, "{}", gate.log());
}

#[test]
fn an_abandoned_start_runs_the_stop_command_of_start_and_stop_commands() {
    let dir = crate::support::tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let pid_file = dir.path().join("backend.pid");
    let start = format!(
        "{} --listen {backend} --pid-file {} --delay-ms 10000 >/dev/null 2>&1 &",
        crate::support::test_backend_bin().display(),
        pid_file.display()
    );
    let stop = format!("kill $(cat {})", pid_file.display());
    let a = crate::support::args(&[
        "--upstream",
        &backend,
        "--cancel-abandoned-start",
        "1s",
        "--start-cmd",
        &start,
        "--stop-cmd",
        &stop,
    ]);
    let act = crate::support::ActivatorBuilder::new(dir.clone(), &a)
        .tcp("http")
        .start();
    leave_after_half_a_second(act.tcp_addrs[0], b"hello\n");
    let pid = read_pid(&pid_file);
    assert!(wait_gone(pid, Duration::from_secs(5)), "{}", act.log());
    act.wait_exit_0(1, PATIENCE);
    let log = act.log();
    assert!(log.contains(ABANDONED), "{log}");
    assert!(log.contains("stopping backend: /bin/sh -c 'kill"), "{log}");
}

#[test]
fn bound_by_listen_an_abandoned_start_is_cancelled_and_idlegate_keeps_listening() {
    let fixture = Fixture::http().backend(&["--delay-ms", "10000"]).pid_file();
    let pid_file = fixture.file("backend.pid");
    let mut listening = fixture.spawn_listening(&["--cancel-abandoned-start", "1s"]);
    leave_after_half_a_second(listening.addr, GET_PID);
    let pid = read_pid(&pid_file);
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "{}",
        listening.log()
    );
    crate::support::wait_until("the log line", PATIENCE, || {
        listening.log().contains(ABANDONED)
    });
    assert!(listening.child.try_wait().unwrap().is_none(), "it exited");
    // The next client starts the backend again.
    std::fs::remove_file(&pid_file).unwrap();
    let mut again = TcpStream::connect_timeout(&listening.addr, PATIENCE).unwrap();
    again.write_all(GET_PID).unwrap();
    let restarted = read_pid(&pid_file);
    assert_ne!(restarted, pid);
    drop(again);
    assert!(listening.stop().success(), "{}", listening.log());
    assert!(wait_gone(restarted, PATIENCE));
}

crate::on_each_engine!(an_abandoned_container_start_stops_the_container);

/// A container whose app needs 10 s to listen, through the engine API: the
/// start whose client left is cancelled by stopping the container, as idle
/// stops it.
fn an_abandoned_container_start_stops_the_container(engine: crate::support::engine::Engine) {
    use crate::support::engine::status;
    let f = engine.container("abandoned");
    let script = "/bin/busybox sleep 10; exec /bin/busybox httpd -f -p 8080 -h /www";
    f.create(&[], &["/bin/sh", "-c", script]);
    let act = f.activate(&f.args(&[
        "--cancel-abandoned-start",
        "1s",
        "--stop-timeout",
        "1s",
        "--idle-timeout",
        "60s",
    ]));
    leave_after_half_a_second(act.tcp_addrs[0], GET_PID);
    let left = Instant::now();
    crate::support::wait_until("the container to be stopped", PATIENCE, || {
        status(engine, &f.c.name).as_deref() == Some("exited")
    });
    assert!(
        left.elapsed() < Duration::from_secs(8),
        "stopped {:?} after the client left",
        left.elapsed()
    );
    act.wait_exit_0(1, PATIENCE);
    assert!(act.log().contains(ABANDONED), "{}", act.log());
}

#[test]
fn a_browser_beyond_hold_max_gets_the_waiting_page_at_once() {
    let gate = Fixture::http()
        .extra(&["--hold-max", "1", "--waiting-page"])
        .backend(&["--delay-ms", &START.as_millis().to_string()])
        .pid_file()
        .start();
    let addr = gate.tcp_addrs[0];
    let held = std::thread::spawn(move || get(addr, "/pid", &[]).unwrap());
    // The backend runs: the one request it may hold is held.
    let pid = read_pid(&gate.pid_file);
    let sent = Instant::now();
    let page = get(addr, "/", &[("Accept", "text/html")]).unwrap();
    assert!(sent.elapsed() < START / 2, "after {:?}", sent.elapsed());
    assert_eq!(page.status, 503, "{page:?}");
    assert!(page.header("retry-after").is_some(), "{page:?}");
    assert!(page.text().contains("<html"), "{}", page.text());
    let held = held.join().unwrap();
    assert_eq!((held.status, held.text().trim()), (200, &*pid.to_string()));
}
