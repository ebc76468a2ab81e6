//! `idlegate inhibit` and the control socket: the backend's side holding
//! the service awake, through a socket the activator holds as systemd does
//! (named `control`), so connecting wakes a stopped idlegate.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// idlegate in front of the test backend (idle timeout 1 s, pid file),
/// activated by its TCP socket or by its control socket at `control`.
fn service(control: &Path) -> (crate::support::activator::Activator, std::path::PathBuf) {
    let dir = tempdir();
    let fixture = Fixture::tcp().dir(&dir).idle("1s").pid_file();
    let pid_file = fixture.file("backend.pid");
    let act = ActivatorBuilder::new(dir, &fixture.args())
        .tcp("http")
        .unix(control, "control")
        .start();
    (act, pid_file)
}

/// `idlegate inhibit --control CONTROL`, outside any activation.
fn inhibit_on(control: &Path) -> Command {
    let mut cmd = Command::new(idlegate_bin());
    cmd.args(["inhibit", "--control", control.to_str().unwrap()])
        .stdin(Stdio::null())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    cmd
}

fn inhibit(control: &Path, command: &[&str]) -> Command {
    let mut cmd = inhibit_on(control);
    cmd.args(["--why", "nightly backup", "--"]).args(command);
    cmd
}

/// `inhibit` wakes the stopped service (idlegate and its backend), holds it
/// past the idle timeout while its command runs, and the hold ends when
/// `inhibit` is SIGKILLed: idlegate then exits on idle.
#[test]
fn inhibit_wakes_the_service_holds_it_and_a_sigkill_releases_it() {
    let dir = tempdir();
    let control = dir.path().join("control");
    let (act, pid_file) = service(&control);
    let mut held = inhibit(&control, &["sleep", "600"]);
    held.process_group(0);
    let mut held = held.spawn().unwrap();
    wait_until("the backend to start for the inhibitor", PATIENCE, || {
        pid_file.exists()
    });
    wait_until("idlegate to log the hold", PATIENCE, || {
        act.log().contains("inhibited by pid ")
    });
    assert!(act.log().contains(": nightly backup"), "{}", act.log());
    // Three times the idle timeout, nothing else in flight: still up.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        act.exits().is_empty(),
        "idle exit under a hold:\n{}",
        act.log()
    );
    assert!(act.running().is_some());
    // SIGKILL to inhibit and its command: the kernel closes the connection.
    kill_group(held.id());
    let _ = held.wait();
    act.wait_exit_0(1, PATIENCE);
    assert!(act.log().contains("inhibitor released"), "{}", act.log());
    let backend = read_pid(&pid_file);
    assert!(
        wait_gone(backend, PATIENCE),
        "backend {backend} still running"
    );
}

/// SIGKILL to the whole process group of `pid` (inhibit and its command).
fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    let sent = unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
}

/// `inhibit` returns its command's exit status, and runs it only once the
/// backend is ready.
#[test]
fn inhibit_runs_its_command_once_ready_and_returns_its_status() {
    let dir = tempdir();
    let control = dir.path().join("control");
    let (act, pid_file) = service(&control);
    let check = format!("test -e {} && exit 7", pid_file.display());
    let out = inhibit(&control, &["sh", "-c", &check]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    act.wait_exit_0(1, PATIENCE);
}

/// Without `--control`, the state file finds the control socket where the
/// generated units put it: `/run/idlegate/NAME.control` beside the
/// directory `/run/idlegate/NAME` of the state file.
#[test]
fn inhibit_finds_the_generated_units_control_socket_from_the_state_file() {
    let dir = tempdir();
    let control = dir.path().join("tidings.control");
    std::fs::create_dir(dir.path().join("tidings")).unwrap();
    let state = dir.path().join("tidings/idlegate.state");
    let (act, pid_file) = service(&control);
    let check = format!("test -e {} && exit 5", pid_file.display());
    let out = Command::new(idlegate_bin())
        .args(["inhibit", "--state-file", state.to_str().unwrap()])
        .args(["--", "sh", "-c", &check])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    act.wait_exit_0(1, PATIENCE);
}

#[test]
fn inhibit_errors() {
    let (code, err) = run_idlegate(&["inhibit", "sleep", "1"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.starts_with("idlegate: inhibit: usage:"), "{err}");
    let (code, err) = run_idlegate(&["inhibit", "--"], &[]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run_idlegate(&["inhibit", "--", "true"], &[("RUNTIME_DIRECTORY", "")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--control PATH or --state-file"), "{err}");
    let (code, err) = run_idlegate(
        &["inhibit", "--control", "/nonexistent/control", "--", "true"],
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot connect to the control socket /nonexistent/control"),
        "{err}"
    );
    // In a directory that exists, nothing there: not running.
    let dir = tempdir();
    let control = dir.path().join("control");
    let (code, err) = run_idlegate(
        &[
            "inhibit",
            "--control",
            control.to_str().unwrap(),
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("idlegate is not running"), "{err}");
}

/// A passed socket named control that is not a listening Unix stream
/// socket is a usage error naming it.
#[test]
fn a_control_socket_must_be_a_unix_stream_socket() {
    let fixture = Fixture::tcp();
    let dir = tempdir();
    let act = ActivatorBuilder::new(dir, &fixture.args())
        .tcp("http")
        .tcp("control")
        .start();
    let _ = std::net::TcpStream::connect(act.tcp_addrs[0]);
    let status = act.wait_exit(1, PATIENCE);
    assert_eq!(status.code(), Some(2), "{}", act.log());
    assert!(act.log().contains("(control)"), "{}", act.log());
    assert!(act.log().contains("control socket"), "{}", act.log());
}

/// Without systemd (`--listen`, a state file, no control socket passed)
/// idlegate binds its own control socket beside the state file (0600),
/// replacing a stale one a killed run left, and removes it at exit:
/// `inhibit --state-file` reaches it and holds the backend past the idle
/// timeout; with idlegate not running, `inhibit` says so with its own exit
/// status (69), whether the socket is stale or gone.
#[test]
fn without_systemd_inhibit_reaches_idlegates_own_control_socket() {
    let fixture = Fixture::tcp().idle("1s").pid_file();
    let state = fixture.file("idlegate.state");
    let own = fixture.file("idlegate.state.control");
    let pid_file = fixture.file("backend.pid");
    let inhibit = |script: &str| {
        let (code, _, err) = run_idlegate_output(
            &[
                "inhibit",
                "--state-file",
                state.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                script,
            ],
            &[("RUNTIME_DIRECTORY", "")],
        );
        (code, err)
    };
    // What a killed idlegate leaves: a socket file nobody answers on.
    drop(std::os::unix::net::UnixListener::bind(&own).unwrap());
    let (code, err) = inhibit("exit 0");
    assert_eq!(code, Some(69), "{err}");
    assert!(
        err.starts_with(
            "idlegate: inhibit: idlegate is not running: nothing holds its control socket"
        ) && err.contains("idlegate.state.control"),
        "{err}"
    );

    let mut idlegate = fixture.spawn_listening(&["--state-file", state.to_str().unwrap()]);
    let mode = std::fs::metadata(&own).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The command runs once the backend is ready, and the hold keeps it up
    // for 2.5 times the idle timeout.
    let script = format!(
        "test -e {pid} || exit 1; sleep 2.5; kill -0 $(cat {pid}) && exit 6",
        pid = pid_file.display()
    );
    let (code, err) = inhibit(&script);
    assert_eq!(code, Some(6), "{err}\n{}", idlegate.log());
    assert!(
        idlegate.log().contains("inhibited by pid "),
        "{}",
        idlegate.log()
    );
    // Released, the backend is stopped on idle; idlegate keeps listening.
    let backend = read_pid(&pid_file);
    assert!(wait_gone(backend, PATIENCE), "{}", idlegate.log());
    let stopped = idlegate.stop();
    assert_eq!(stopped.code(), Some(0), "{}", idlegate.log());
    assert!(!own.exists(), "the own control socket is removed at exit");
    let (code, err) = inhibit("exit 0");
    assert_eq!(code, Some(69), "{err}");
}

/// `HH:MM:SS..HH:MM:SS` from `from` to `to` seconds after now, in UTC (the
/// time zone `during` gives `inhibit`); the week's days do not matter.
fn window_from_now(from: i64, to: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let clock = |at: i64| {
        let s = at.rem_euclid(86400);
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    format!("{}..{}", clock(now + from), clock(now + to))
}

/// `inhibit --during WINDOW` on `control`, in UTC.
fn during(control: &Path, window: &str) -> Command {
    let mut cmd = inhibit_on(control);
    cmd.args(["--during", window])
        .env("TZ", "UTC")
        .stderr(Stdio::piped());
    cmd
}

/// `inhibit --during` a window that began a minute ago wakes the service
/// with no client and holds it past the idle timeout to the window's end;
/// then it exits 0 and idlegate exits on idle. Had idlegate exited
/// meanwhile, the hold would have ended early: status 1.
#[test]
fn inhibit_during_a_window_holds_the_service_to_its_end() {
    let dir = tempdir();
    let control = dir.path().join("control");
    let (act, pid_file) = service(&control);
    let window = window_from_now(-60, 10);
    let spawned = std::time::Instant::now();
    let held = during(&control, &window).spawn().unwrap();
    wait_until("the backend to start for the window", PATIENCE, || {
        pid_file.exists()
    });
    let out = held.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", act.log());
    assert!(err.contains("the window ended: released"), "{err}");
    let held_for = spawned.elapsed();
    assert!(
        held_for >= Duration::from_secs(8),
        "released after {held_for:?}, before the window's end ({window}): {err}"
    );
    assert!(act.log().contains(": awake "), "{}", act.log());
    act.wait_exit_0(1, PATIENCE);
    let backend = read_pid(&pid_file);
    assert!(wait_gone(backend, PATIENCE), "backend {backend} still up");
}

/// Outside every window `inhibit --during` exits 0 at once and wakes
/// nothing; a bad window is a usage error naming it.
#[test]
fn inhibit_during_no_window_wakes_nothing_and_bad_windows_are_refused() {
    let dir = tempdir();
    let control = dir.path().join("control");
    let (act, pid_file) = service(&control);
    let later = window_from_now(3600, 7200);
    let out = during(&control, &later).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("nothing to hold"), "{err}");
    assert!(act.exits().is_empty() && act.running().is_none());
    assert!(!pid_file.exists());
    let (code, err) = run_idlegate(
        &[
            "inhibit",
            "--control",
            "x",
            "--during",
            "Fri..Mon 08:00..18:00",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--during \"Fri..Mon 08:00..18:00\""), "{err}");
    let (code, err) = run_idlegate(
        &[
            "inhibit",
            "--control",
            "x",
            "--during",
            "08:00..09:00",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
}
