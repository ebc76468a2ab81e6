//! SIGHUP (a unit's `ExecReload=`): the config file is read again; good
//! settings apply without dropping a connection, a bad file is refused and
//! the running configuration kept.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use crate::support::activator::Activator;
use crate::support::*;

/// A config file for a test backend on `backend`, with `extra` TOML lines.
fn write_config(path: &Path, backend: &str, pid_file: &Path, extra: &str) {
    let text = format!(
        "upstream = \"{backend}\"\ncommand = [\"{}\", \"--listen\", \"{backend}\", \"--pid-file\", \"{}\"]\n{extra}\n",
        test_backend_bin().display(),
        pid_file.display()
    );
    std::fs::write(path, text).unwrap();
}

/// A fresh directory with a config file (idle timeout `idle`) and idlegate
/// activated with it: (dir, config path, backend address, pid file, activator).
fn start(
    idle: &str,
) -> (
    std::sync::Arc<tempfile::TempDir>,
    std::path::PathBuf,
    String,
    std::path::PathBuf,
    Activator,
) {
    let dir = tempdir();
    let config = dir.path().join("idlegate.toml");
    let backend = format!("127.0.0.1:{}", free_port());
    let pid_file = dir.path().join("backend.pid");
    write_config(
        &config,
        &backend,
        &pid_file,
        &format!("idle-timeout = \"{idle}\""),
    );
    let a = args(&["--config", config.to_str().unwrap()]);
    let act = ActivatorBuilder::new(dir.clone(), &a).tcp("reload").start();
    (dir, config, backend, pid_file, act)
}

fn echo(conn: &mut TcpStream, line: &str) -> String {
    conn.write_all(line.as_bytes()).unwrap();
    let mut got = vec![0u8; line.len()];
    conn.read_exact(&mut got).unwrap();
    String::from_utf8(got).unwrap()
}

fn reload_and_wait_for(act: &Activator, line: &str) {
    let before = act.log().matches(line).count();
    act.signal(libc::SIGHUP);
    wait_until(&format!("{line:?} in the log"), PATIENCE, || {
        act.log().matches(line).count() > before
    });
}

#[test]
fn sighup_applies_a_new_idle_timeout_without_dropping_a_connection() {
    let (_dir, config, backend, pid_file, act) = start("1h");
    let mut conn = TcpStream::connect(act.tcp_addrs[0]).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(echo(&mut conn, "before\n"), "before\n");
    write_config(&config, &backend, &pid_file, "idle-timeout = \"300ms\"");
    reload_and_wait_for(&act, "configuration reloaded: idle timeout 300ms");
    assert_eq!(
        echo(&mut conn, "after\n"),
        "after\n",
        "the connection survived"
    );
    drop(conn);
    // With the old hour-long timeout this would not happen within the patience.
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
}

#[test]
fn a_bad_config_on_sighup_is_refused_and_the_running_one_kept() {
    let (_dir, config, backend, pid_file, act) = start("1h");
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    write_config(&config, &backend, &pid_file, "idle-timeout = \"soon\"");
    reload_and_wait_for(&act, "keeping the running configuration");
    let log = act.log();
    let want = format!(
        "reload: idle-timeout in {}: invalid value 'soon'",
        config.display()
    );
    assert!(log.contains(&want), "{log}");
    assert_eq!(exchange_str(act.tcp_addrs[0], "y\n").unwrap(), "y\n");
    assert!(act.exits().is_empty(), "still running: {}", act.log());
}

#[test]
fn a_new_backend_command_applies_at_the_next_start_and_fixed_settings_wait() {
    let (dir, config, backend, first, act) = start("300ms");
    let second = dir.path().join("second.pid");
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let first_pid = read_pid(&first);
    // A new command line for the backend, and a new mode, which needs a restart.
    write_config(
        &config,
        &backend,
        &second,
        "idle-timeout = \"300ms\"\nmode = \"http\"",
    );
    reload_and_wait_for(&act, "the backend's new settings apply at its next start");
    assert!(
        act.log().contains("reload: upstream/mode changed"),
        "{}",
        act.log()
    );
    assert!(!second.exists(), "the running backend is left alone");
    // Still TCP mode, and the same backend, until it next starts.
    assert_eq!(exchange_str(act.tcp_addrs[0], "y\n").unwrap(), "y\n");
    assert_eq!(read_pid(&first), first_pid);
    let _ = exchange(act.tcp_addrs[0], b"CRASH\n");
    // A client racing the crash could reach the dying backend: wait until
    // idlegate has seen it go.
    wait_until("idlegate to see the crash", PATIENCE, || {
        act.log().contains("exited: exit status: 3")
    });
    assert_eq!(exchange_str(act.tcp_addrs[0], "z\n").unwrap(), "z\n");
    assert_ne!(
        read_pid(&second),
        first_pid,
        "restarted with the new command"
    );
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
}

/// `ready-cmd` (like the other readiness settings) changes with a reload at
/// the backend's next start.
#[test]
fn a_new_ready_cmd_applies_at_the_next_start() {
    let (dir, config, backend, pid_file, act) = start("60s");
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let probed = dir.path().join("probed");
    write_config(
        &config,
        &backend,
        &pid_file,
        &format!(
            "idle-timeout = \"60s\"\nready-cmd = \"echo yes >> {}\"",
            probed.display()
        ),
    );
    reload_and_wait_for(&act, "the backend's new settings apply at its next start");
    assert!(!probed.exists(), "not run for the backend already up");
    let _ = exchange(act.tcp_addrs[0], b"CRASH\n");
    wait_until("idlegate to see the crash", PATIENCE, || {
        act.log().contains("exited: exit status: 3")
    });
    assert_eq!(exchange_str(act.tcp_addrs[0], "y\n").unwrap(), "y\n");
    assert!(probed.exists(), "the next start ran the ready command");
}

/// A reload that changes the idle timeout changes the timer the status
/// shows and the exit's log line (which said the startup timeout).
#[test]
fn a_reloaded_idle_timeout_is_the_status_countdown_and_the_exit_line() {
    let dir = tempdir();
    let config = dir.path().join("idlegate.toml");
    let state = dir.path().join("idlegate.state");
    let backend = format!("127.0.0.1:{}", free_port());
    let pid_file = dir.path().join("backend.pid");
    let lines = |idle: &str| {
        format!(
            "idle-timeout = \"{idle}\"\nstate-file = \"{}\"",
            state.display()
        )
    };
    write_config(&config, &backend, &pid_file, &lines("1h"));
    let a = args(&["--config", config.to_str().unwrap()]);
    let act = ActivatorBuilder::new(dir.clone(), &a).tcp("reload").start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let idle_in = || status_json(&state)["idle_in_ms"].as_u64();
    wait_until("the status of the hour-long timer", PATIENCE, || {
        idle_in().is_some_and(|ms| ms > 3_500_000)
    });
    write_config(&config, &backend, &pid_file, &lines("3s"));
    reload_and_wait_for(&act, "configuration reloaded: idle timeout 3s");
    wait_until("the status of the reloaded timer", PATIENCE, || {
        idle_in().is_some_and(|ms| ms <= 3000)
    });
    act.wait_exit_0(1, PATIENCE);
    let log = act.log();
    assert!(
        log.contains("idle for 3s: stopping the backend and exiting"),
        "{log}"
    );
    assert!(!log.contains("idle for 1h"), "{log}");
}
