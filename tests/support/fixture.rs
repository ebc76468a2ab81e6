//! The setups the core tests share: a backend the test runs itself, the usual
//! idlegate arguments, and waiting for an idlegate the test spawned.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::activator::Activator;
use super::{
    args, backend_command, free_port, tempdir, test_backend_bin, ActivatorBuilder, PATIENCE,
};

/// A backend the test runs itself (idlegate's external-backend case), killed
/// when dropped.
pub struct External(pub Child);

impl External {
    /// The test backend listening on `listen`, its output discarded.
    pub fn start(listen: &str) -> External {
        let child = Command::new(test_backend_bin())
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn external backend");
        External(child)
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test backend that binds after `delay_ms` and writes its pid file, with
/// idlegate in front (idle timeout `idle`, `extra` flags): the activator and
/// the backend's pid file.
pub fn delayed_backend(
    delay_ms: &str,
    idle: &str,
    extra: &[&str],
) -> (Activator, std::path::PathBuf) {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let pid_file = dir.path().join("backend.pid");
    let mut a = idlegate_args(&backend, idle, Vec::new());
    a.extend(args(extra));
    a.extend(backend_command(
        &backend,
        &[
            "--delay-ms",
            delay_ms,
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    ));
    let act = ActivatorBuilder::new(dir, &a).tcp("http").start();
    (act, pid_file)
}

/// idlegate's arguments for `upstream` with idle timeout `idle`, a 5 s stop
/// timeout, and then `backend` (a backend command, or nothing).
pub fn idlegate_args(upstream: &str, idle: &str, backend: Vec<String>) -> Vec<String> {
    let mut a = args(&[
        "--upstream",
        upstream,
        "--idle-timeout",
        idle,
        "--stop-timeout",
        "5s",
    ]);
    a.extend(backend);
    a
}

/// Waits for an idlegate the test spawned itself to exit; kills it and
/// panics if it still runs after [`PATIENCE`].
pub fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "idlegate did not exit: {:?}",
                child.wait().map(|s| s.signal())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
