//! Idle exit: status 0 and no backend left behind, many activation cycles,
//! a slow response outliving the idle timeout, `--connection-idle-timeout`,
//! and `--listen` mode, which stops the backend and keeps listening.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::activator::describe;
use crate::support::*;

#[test]
fn idle_exit_is_status_0_and_leaves_no_backend_process() {
    let fixture = Fixture::tcp().idle("300ms").pid_file();
    let grandchild_file = fixture.file("grandchild.pid");
    let Gate { act, pid_file, .. } = fixture
        .backend(&["--grandchild-pid-file", grandchild_file.to_str().unwrap()])
        .start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "ping\n").unwrap(), "ping\n");
    let backend_pid = read_pid(&pid_file);
    let grandchild_pid = read_pid(&grandchild_file);
    let status = act.wait_exit(1, PATIENCE);
    assert_eq!(
        status.code(),
        Some(0),
        "idle exit is status 0, got {}; log:\n{}",
        describe(&status),
        act.log()
    );
    assert!(process_gone(backend_pid), "the backend outlived idlegate");
    assert!(
        wait_gone(grandchild_pid, Duration::from_secs(5)),
        "a process of the backend's group outlived idlegate"
    );
    let log = act.log();
    assert!(log.contains("idle for 300ms"), "{log}");
    // The log targets users filter on (RUST_LOG, journal greps) stay put.
    for line in [
        " INFO idlegate::backend::process: backend started: ",
        " INFO idlegate::backend: backend ready on ",
        " INFO idlegate: idle for 300ms: stopping the backend and exiting",
        " INFO idlegate::backend: backend stopped: ",
    ] {
        assert!(log.contains(line), "{line:?} missing from:\n{log}");
    }

    // The socket stayed with the activator: the next client activates again.
    assert_eq!(
        exchange_str(act.tcp_addrs[0], "again\n").unwrap(),
        "again\n"
    );
    assert_eq!(act.activations(), 2);
}

#[test]
fn many_clients_across_many_activations_lose_nothing() {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 11;
    const PER_ROUND: usize = 5;
    let act = Fixture::tcp().idle("300ms").start();
    let addr = act.tcp_addrs[0];
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut rng = Xorshift::new(0x9E37_79B9_u32.wrapping_mul(client as u32 + 1));
                for round in 0..ROUNDS {
                    for i in 0..PER_ROUND {
                        let msg = format!("client {client} round {round} request {i}\n");
                        match exchange_str(addr, &msg) {
                            Ok(answer) if answer == msg => {}
                            other => failures.push(format!("{msg:?}: {other:?}")),
                        }
                        std::thread::sleep(Duration::from_millis(rng.below(60) as u64));
                    }
                    // Everybody pauses around the idle timeout, so idlegate exits
                    // (or is about to) just as the next round starts.
                    barrier.wait();
                    std::thread::sleep(Duration::from_millis(250 + rng.below(300) as u64));
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:#?}\nlog:\n{}",
        failures.len(),
        CLIENTS * ROUNDS * PER_ROUND,
        act.log()
    );
    let exits = act.exits();
    assert!(
        exits.len() >= 3,
        "expected several activation cycles, saw {} exits",
        exits.len()
    );
    assert!(
        exits.iter().all(|s| s.code() == Some(0)),
        "every run exits 0: {:?}",
        exits.iter().map(describe).collect::<Vec<_>>()
    );
}

/// `--connection-idle-timeout`: a forgotten, silent connection is closed,
/// stops counting as work, and idlegate exits on idle; a connection that
/// trickles bytes more often than the limit is left alone.
#[test]
fn a_silent_connection_is_closed_after_the_connection_idle_timeout() {
    let fixture = Fixture::tcp()
        .idle("300ms")
        .extra(&["--connection-idle-timeout", "1s"])
        .external()
        .socket("quiet");
    let _backend = External::start(fixture.upstream_addr());
    let act = fixture.start();
    let mut busy = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    busy.set_read_timeout(Some(PATIENCE)).unwrap();
    busy.write_all(b"busy\n").unwrap();
    let mut first = [0u8; 5];
    busy.read_exact(&mut first).unwrap();
    let mut quiet = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    quiet.set_read_timeout(Some(PATIENCE)).unwrap();
    quiet.write_all(b"hello\n").unwrap();
    let mut echo = [0u8; 6];
    quiet.read_exact(&mut echo).unwrap();
    // The busy one echoes a byte every 200 ms while the quiet one waits.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closer = std::thread::spawn(move || {
        let _ = quiet.read_to_end(&mut rest);
        rest
    });
    let mut byte = [0u8; 1];
    while !closer.is_finished() {
        busy.write_all(b"x").unwrap();
        busy.read_exact(&mut byte).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            started.elapsed() < PATIENCE,
            "the quiet connection was never closed"
        );
    }
    assert!(
        closer.join().unwrap().is_empty(),
        "closed, nothing more sent"
    );
    busy.write_all(b"y").unwrap();
    busy.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"y", "the busy connection is still served");
    drop(busy);
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(
        act.log()
            .contains("no bytes either way for 1s (--connection-idle-timeout)"),
        "{}",
        act.log()
    );
}

/// `--connection-idle-timeout` holds on a cold start too: a client held for
/// the backend, that then sends nothing while the backend has not answered
/// (the replay path), is closed and lets idlegate exit.
#[test]
fn a_silent_client_on_a_cold_start_is_closed_after_the_connection_idle_timeout() {
    let Gate { act, pid_file, .. } = Fixture::tcp()
        .idle("300ms")
        .extra(&["--connection-idle-timeout", "1s"])
        .backend(&["--delay-ms", "300"])
        .pid_file()
        .start();
    let mut silent = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let backend_pid = read_pid(&pid_file);
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("the silent client is closed, with a FIN");
    assert!(rest.is_empty(), "nothing was sent to it");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(wait_gone(backend_pid, PATIENCE), "the backend is stopped");
    assert!(
        act.log()
            .contains("no bytes either way for 1s (--connection-idle-timeout)"),
        "{}",
        act.log()
    );
}

#[test]
fn a_slow_response_outlives_the_idle_timeout() {
    let act = Fixture::tcp().idle("1s").start();
    let started = Instant::now();
    // 8 ticks, 500 ms apart: a 4 s response with gaps shorter than the idle
    // timeout but a whole far longer than it.
    let answer = exchange_str(act.tcp_addrs[0], "SLOW 8 500\n").unwrap();
    assert_eq!(answer.lines().count(), 8, "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(3500));
    assert!(
        act.exits().is_empty(),
        "idlegate exited while the response was still streaming"
    );
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
    assert_eq!(act.activations(), 1);
}

#[test]
fn listen_mode_stops_the_backend_when_idle_and_keeps_listening() {
    let fixture = Fixture::tcp().idle("300ms").pid_file();
    let front = format!("127.0.0.1:{}", free_port());
    let pid_file = fixture.file("backend.pid");
    let mut a = args(&["--listen", &front]);
    a.extend(fixture.args());
    let log = fixture.file("listen.log");
    let mut child = spawn_not_activated(&a, &log);
    let addr: std::net::SocketAddr = front.parse().unwrap();
    wait_until("idlegate to listen", PATIENCE, || {
        TcpStream::connect(addr).is_ok()
    });
    assert_eq!(exchange_str(addr, "one\n").unwrap(), "one\n");
    let first_backend = read_pid(&pid_file);
    assert!(wait_gone(first_backend, PATIENCE), "idle stops the backend");
    assert!(
        child.try_wait().unwrap().is_none(),
        "but idlegate keeps listening"
    );
    assert_eq!(exchange_str(addr, "two\n").unwrap(), "two\n");
    wait_until("a new backend", PATIENCE, || {
        read_pid(&pid_file) != first_backend
    });
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    assert_eq!(wait_child(&mut child).code(), Some(0));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("idle: backend stopped; still listening"));
}
