//! The backend as a child process: spawned in its own process group, its
//! output turned into log lines, stopped with SIGTERM to the whole group and
//! SIGKILL after the grace period.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::backend::kinds::pull::PullWatch;
use crate::backend::progress::{waiting_for, Progress, Stage};
use crate::sys;

/// How many of the backend's last stderr lines a failure report quotes.
const STDERR_TAIL_LINES: usize = 5;

/// Variables the backend (or a ready command) must not inherit: they describe idlegate's own
/// activation and notification socket, not the backend's.
pub const PRIVATE_VARS: [&str; 4] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
];

/// A running backend process and what watches it.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// The process group: the child's pid, as it leads its own group.
    pgid: u32,
    /// The command line, for messages.
    command: String,
    /// The last lines the backend wrote to stderr.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// The tasks turning stdout and stderr into log lines.
    pumps: Vec<JoinHandle<()>>,
}

/// A child of idlegate's: `argv`, stdin closed, in its own process group,
/// killed with the handle, without idlegate's own activation and notify
/// variables, prepared by `sys::prepare_child`.
pub fn child_command(argv: &[&str]) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for var in PRIVATE_VARS {
        cmd.env_remove(var);
    }
    sys::prepare_child(&mut cmd);
    cmd
}

/// The command line as a person reads it.
pub fn describe(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Process {
    /// Starts `argv` in a new process group, with stdin closed and output
    /// logged; `role` names it in the log ("backend", "start command", …).
    pub fn spawn(argv: &[String], role: &str) -> std::io::Result<Process> {
        Self::spawn_with_env(argv, role, &[])
    }

    /// [`Process::spawn`] with variables of idlegate's own for the process
    /// (`NOTIFY_SOCKET` for `--ready-notify`).
    pub fn spawn_with_env(
        argv: &[String],
        role: &str,
        env: &[(&str, String)],
    ) -> std::io::Result<Process> {
        Self::spawn_watched(argv, role, env, None)
    }

    /// [`Process::spawn_with_env`], its output also told as the start's
    /// `progress` where it is about an image pull (see [`crate::backend::kinds::pull`]).
    pub fn spawn_watched(
        argv: &[String],
        role: &str,
        env: &[(&str, String)],
        progress: Option<Progress>,
    ) -> std::io::Result<Process> {
        let command = describe(argv);
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut cmd = child_command(&words);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn()?;
        let pgid = child.id().expect("a just-spawned child has a pid");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
        let mut pumps = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            let output = Output {
                pid: pgid,
                name: "stdout",
                tail: None,
                progress: progress.clone(),
            };
            pumps.push(tokio::spawn(pump(out, output)));
        }
        if let Some(err) = child.stderr.take() {
            let output = Output {
                pid: pgid,
                name: "stderr",
                tail: Some(stderr_tail.clone()),
                progress,
            };
            pumps.push(tokio::spawn(pump(err, output)));
        }
        tracing::info!(target: "idlegate::backend::process", pid = pgid, "{role} started: {command}");
        Ok(Process {
            child,
            pgid,
            command,
            stderr_tail,
            pumps,
        })
    }

    /// The process id of the backend (and its process group).
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits for the backend to exit by itself.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The backend's last stderr lines, joined for a one-line report; waits
    /// briefly for the output pumps so the lines written just before exit count.
    pub async fn stderr_tail(&mut self) -> String {
        let pumps = std::mem::take(&mut self.pumps);
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            for p in pumps {
                let _ = p.await;
            }
        })
        .await;
        let tail = self.stderr_tail.lock().expect("tail lock");
        tail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// Stops the backend: SIGTERM to its group, SIGKILL to the group once the
    /// leader exited or `grace` passed, so no process of the group survives.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.kill_group();
            return Some(status);
        }
        if let Err(e) = sys::signal_group(self.pgid, libc::SIGTERM) {
            tracing::warn!(target: "idlegate::backend::process", pid = self.pgid, "cannot send SIGTERM to the backend: {e}");
        }
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(e)) => {
                tracing::warn!(target: "idlegate::backend::process", pid = self.pgid, "cannot wait for the backend: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(target: "idlegate::backend::process",
                    pid = self.pgid,
                    "backend still running {grace:?} after SIGTERM; sending SIGKILL"
                );
                None
            }
        };
        self.kill_group();
        match status {
            Some(s) => Some(s),
            None => self.child.wait().await.ok(),
        }
    }

    /// SIGKILL to every process left in the group (none, normally).
    fn kill_group(&self) {
        match sys::signal_group(self.pgid, libc::SIGKILL) {
            Ok(true) => tracing::debug!(target: "idlegate::backend::process",
                pid = self.pgid,
                "killed what was left of the backend's process group"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(target: "idlegate::backend::process",
                pid = self.pgid,
                "cannot kill the backend's process group: {e}"
            ),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A Process dropped without stop() (a start abandoned, a panic) still
        // takes its whole group with it.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
        }
    }
}

/// Copies one output stream of the backend into the log, a line an event.
///
/// Reads until the pipe closes whatever the bytes are (never leaving the
/// backend blocked on a full pipe); lines that are not UTF-8 are shown lossily.
/// Where one of the backend's output streams goes besides the log.
struct Output {
    pid: u32,
    name: &'static str,
    /// The last lines kept, for stderr.
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    /// The start's progress, told the image pulls seen.
    progress: Option<Progress>,
}

async fn pump(stream: impl AsyncRead + Unpin, output: Output) {
    const MAX_LINE: usize = 4096;
    let Output {
        pid,
        name,
        tail,
        progress,
    } = output;
    let mut pulls = PullWatch::default();
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                let end = buf.len() - usize::from(buf.ends_with(b"\n"));
                let mut line = String::from_utf8_lossy(&buf[..end.min(MAX_LINE)]).into_owned();
                if line.ends_with('\r') {
                    line.pop();
                }
                tracing::info!(target: "idlegate::backend::output", pid, stream = name, "{line}");
                if let Some(progress) = &progress {
                    if let Some(what) = pulls.progress(&line) {
                        tracing::info!(target: "idlegate::backend", pid, "{what}");
                        waiting_for(progress, Stage::PullingImage, what);
                    }
                }
                if let Some(tail) = &tail {
                    let mut tail = tail.lock().expect("tail lock");
                    if tail.len() == STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
            Err(e) => {
                tracing::debug!(target: "idlegate::backend::process", pid, stream = name, "stopped reading backend output: {e}");
                return;
            }
        }
    }
}
