//! What idlegate's integration tests share: the activator (a `.socket` unit
//! stand-in), the test backend, clients with deadlines, and process checks.
#![allow(dead_code)]

pub mod activator;
pub mod docker;
pub mod engine;
pub mod fixture;
pub mod forwarder;
pub mod http;
pub mod podman;
pub mod real;
pub mod scripted;
pub mod sshd;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use activator::ActivatorBuilder;
pub use fixture::{wait_child, External, Fixture, Gate};

/// A generous deadline for anything that should take well under a second.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The idlegate binary under test.
pub fn idlegate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_idlegate"))
}

/// The test backend (`examples/test_backend.rs`), built by `cargo test`.
pub fn test_backend_bin() -> PathBuf {
    let bin = idlegate_bin();
    let path = bin.parent().unwrap().join("examples").join("test_backend");
    assert!(
        path.exists(),
        "{} is missing: run the tests with cargo test, which builds the examples",
        path.display()
    );
    path
}

/// A fresh temporary directory, shared by a test's activator and files.
pub fn tempdir() -> Arc<tempfile::TempDir> {
    Arc::new(tempfile::tempdir().expect("tempdir"))
}

/// A TCP port on 127.0.0.1 that is free now, chosen below the kernel's
/// ephemeral range so no outgoing connection of a parallel test takes it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12000;
        let port = 20000 + (base - 20000 + offset) % 12000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// idlegate's arguments for a test backend on `backend_addr`, with extra backend flags.
pub fn backend_command(backend_addr: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--".to_owned(),
        test_backend_bin().display().to_string(),
        "--listen".into(),
        backend_addr.into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// idlegate with `args`, not socket-activated (so `--listen` applies), its
/// stderr in `log`.
pub fn spawn_not_activated(args: &[String], log: &Path) -> std::process::Child {
    std::process::Command::new(idlegate_bin())
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Strings from string slices.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Connects, sends `payload`, closes the sending side, and reads the whole
/// answer; every step has a deadline so a hang fails the test instead.
pub fn exchange(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, PATIENCE)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.set_write_timeout(Some(PATIENCE))?;
    s.write_all(payload)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// [`exchange`] as text.
pub fn exchange_str(addr: SocketAddr, payload: &str) -> std::io::Result<String> {
    exchange(addr, payload.as_bytes()).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Whether `pid` no longer runs (gone, or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// Waits until `pid` is gone; false if it still runs at the deadline.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    process_gone(pid)
}

/// Waits for a file to hold a pid, and returns it.
pub fn read_pid(path: &Path) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `cond` holds, or panics with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs idlegate to completion with `args` and no sockets passed; returns
/// (status code, stderr). For usage errors, which exit before serving.
pub fn run_idlegate(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (code, _, stderr) = run_idlegate_output(args, env);
    (code, stderr)
}

/// [`run_idlegate`], with its stdout too: (status code, stdout, stderr).
pub fn run_idlegate_output(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = std::process::Command::new(idlegate_bin());
    cmd.args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while it runs: a manual page is more than a pipe holds.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code(),
                reader.join().unwrap(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("idlegate {args:?} did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `idlegate status`'s exit status and text for the state file `state`.
pub fn status_text(state: &Path) -> (Option<i32>, String) {
    let (code, out, _) =
        run_idlegate_output(&["status", "--state-file", state.to_str().unwrap()], &[]);
    (code, out)
}

/// `idlegate status --json`'s document for the state file `state`.
pub fn status_json(state: &Path) -> serde_json::Value {
    let (_, out, err) = run_idlegate_output(
        &["status", "--json", "--state-file", state.to_str().unwrap()],
        &[],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?} {err}"))
}

/// A small deterministic random source (xorshift32), so think times vary
/// between clients yet every run of a test is the same.
pub struct Xorshift(u32);

impl Xorshift {
    /// A source seeded from `seed` (any value; 0 is mapped away).
    pub fn new(seed: u32) -> Self {
        Xorshift(seed.max(1))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0 % n
    }
}
