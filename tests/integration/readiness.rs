//! Readiness beyond "the port accepts": `--ready-cmd` and `--ready-notify`
//! hold the first clients until the backend says it serves (the polite test
//! backend here; PostgreSQL and Redis in `real_servers`).

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::support::*;

/// idlegate in front of the test backend with `extra` flags and backend flags.
fn start(
    dir: std::sync::Arc<tempfile::TempDir>,
    extra: &[&str],
    backend_extra: &[&str],
) -> crate::support::activator::Activator {
    Fixture::tcp()
        .dir(&dir)
        .default_stop_timeout()
        .extra(extra)
        .backend(backend_extra)
        .socket("ready")
        .start()
        .act
}

/// Sends a line on a new connection from a thread; the thread returns the echo.
fn held_client(addr: std::net::SocketAddr) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"first\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

#[test]
fn ready_cmd_holds_clients_until_it_succeeds() {
    let dir = tempdir();
    let runs = dir.path().join("runs");
    let flag = dir.path().join("serving");
    let ready_cmd = format!("echo run >> {}; test -e {}", runs.display(), flag.display());
    let act = start(dir.clone(), &["--ready-cmd", &ready_cmd], &[]);
    let client = held_client(act.tcp_addrs[0]);
    // The backend listens, and the command has failed twice since: the client
    // must still be held.
    wait_until("two failed runs of the ready command", PATIENCE, || {
        std::fs::read_to_string(&runs).is_ok_and(|t| t.lines().count() >= 2)
    });
    assert!(
        act.log().contains("test backend: listening"),
        "{}",
        act.log()
    );
    assert!(
        !client.is_finished(),
        "forwarded before the ready command succeeded"
    );
    assert!(!act.log().contains("backend ready"), "{}", act.log());
    std::fs::write(&flag, "").unwrap();
    assert_eq!(client.join().unwrap(), "first\n");
    assert!(act.log().contains("backend ready"), "{}", act.log());
}

#[test]
fn a_ready_cmd_that_never_succeeds_fails_the_start_with_its_output() {
    let dir = tempdir();
    let act = start(
        dir,
        &[
            "--ready-cmd",
            "echo 'still loading' >&2; exit 1",
            "--start-timeout",
            "1s",
        ],
        &[],
    );
    let answer = exchange(act.tcp_addrs[0], b"x\n").unwrap();
    assert!(answer.is_empty(), "closed, not forwarded: {answer:?}");
    let reason = "not ready within the start timeout (1s): the ready command `echo 'still loading' >&2; exit 1` failed: exit status: 1; last output: still loading";
    wait_until(
        "the start failure with the command's output",
        PATIENCE,
        || act.log().contains(reason),
    );
}

#[test]
fn ready_notify_waits_for_ready_1_and_shows_the_backend_status() {
    let dir = tempdir();
    let flag = dir.path().join("loaded");
    let state = dir.path().join("idlegate.state");
    let act = start(
        dir.clone(),
        &["--ready-notify", "--state-file", state.to_str().unwrap()],
        &["--notify-when-exists", flag.to_str().unwrap()],
    );
    let client = held_client(act.tcp_addrs[0]);
    let status = || {
        let out = std::process::Command::new(idlegate_bin())
            .args(["status", "--state-file"])
            .arg(&state)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let waiting = format!("backend: backend starting (waiting for {})", flag.display());
    wait_until(
        "the backend's STATUS= in idlegate's status",
        PATIENCE,
        || status().contains(&waiting),
    );
    assert!(
        act.log().contains("test backend: listening"),
        "{}",
        act.log()
    );
    assert!(!client.is_finished(), "forwarded before READY=1");
    std::fs::write(&flag, "").unwrap();
    assert_eq!(client.join().unwrap(), "first\n");
    wait_until("the backend ready in the status", PATIENCE, || {
        status().contains("backend: backend ready\n")
    });
}

#[test]
fn ready_notify_needs_a_backend_command() {
    let (code, err) = run_idlegate(
        &[
            "--upstream",
            "127.0.0.1:9",
            "--ready-notify",
            "--unit",
            "x.service",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--ready-notify needs a backend COMMAND"),
        "{err}"
    );
    let (code, err) = run_idlegate(&["--upstream", "127.0.0.1:9", "--ready-cmd", " "], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--ready-cmd"), "{err}");
}
