//! Why a start failed, or why a backend that was up is counted as failed:
//! one type, whose text is the log line (`backend failed: …`) and what an
//! HTTP client's 502 says.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::kinds::engine::EngineError;
use super::kinds::swarm::SwarmError;
use crate::address::Address;

/// Why the backend failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The backend command could not be started.
    #[error("cannot start `{command}`: {error}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A start or stop command failed (`--start-cmd`, `--unit`).
    #[error(transparent)]
    Hook(#[from] HookFailure),
    /// The container engine failed a request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A Swarm service could not be scaled, or its task failed.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The container stopped before it was ready.
    #[error("container {name} stopped during start ({status}, exit code {exit_code})")]
    ContainerStopped {
        /// The container.
        name: String,
        /// The engine's word for its state.
        status: String,
        /// Its main process's exit code.
        exit_code: i64,
    },
    /// `--ready-notify`: the backend's notify socket could not be made.
    #[error("cannot make the backend's notify socket in {}: {error}", dir.display())]
    NotifySocket {
        /// The directory it was to be made in.
        dir: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// `--ready-notify`: the notify socket failed while waiting for `READY=1`.
    #[error("the backend's notify socket failed: {0}")]
    Notify(std::io::Error),
    /// A ready address could not be probed at all.
    #[error("probing {address} failed: {error}")]
    Probe {
        /// The ready address.
        address: Address,
        /// What the probe said.
        error: std::io::Error,
    },
    /// `--ready-cmd` cannot succeed: it cannot be run, or the shell cannot run it.
    #[error("{0}")]
    ReadyCommand(String),
    /// Not ready within the start timeout.
    #[error("not ready within the start timeout ({}): {waiting_for}{}", humantime::format_duration(*timeout), StderrTail(stderr))]
    StartTimeout {
        /// The start timeout.
        timeout: Duration,
        /// What the start was still waiting for.
        waiting_for: String,
        /// The backend process's last stderr lines, if any.
        stderr: String,
    },
    /// The backend process exited, during its start or later.
    #[error("`{command}` (pid {pid}) exited{}: {status}{}", if *during_start { " during start" } else { "" }, StderrTail(stderr))]
    Exited {
        /// The command line.
        command: String,
        /// Its pid (the process group).
        pid: u32,
        /// How it ended.
        status: String,
        /// Whether it had not become ready yet.
        during_start: bool,
        /// Its last stderr lines, if any.
        stderr: String,
    },
    /// The upstream refused connections while the backend was ready.
    #[error("the backend stopped accepting connections on {upstream} (refused while ready)")]
    StoppedAccepting {
        /// The upstream that refused.
        upstream: Address,
    },
}

impl Failure {
    /// Why, in plain words for a visitor: no address, command, probe error
    /// or engine message (those are in the log and `idlegate status`).
    pub fn plain(&self) -> String {
        let text = match self {
            Failure::Spawn { .. } => "the app could not be started",
            Failure::Hook(_) => "the start command failed",
            Failure::Engine(_) => "the container engine could not start it",
            Failure::Swarm(SwarmError::Task { .. }) => "the service's task could not run",
            Failure::Swarm(_) => "the swarm could not start it",
            Failure::ContainerStopped { .. } => "the container stopped during its start",
            Failure::NotifySocket { .. }
            | Failure::Notify(_)
            | Failure::Probe { .. }
            | Failure::ReadyCommand(_) => "its readiness could not be checked",
            Failure::StartTimeout { timeout, .. } => {
                return format!(
                    "not ready within the start timeout ({})",
                    humantime::format_duration(*timeout)
                )
            }
            Failure::Exited {
                during_start: true, ..
            } => "the app stopped during its start",
            Failure::Exited { .. } => "the app stopped",
            Failure::StoppedAccepting { .. } => "the app stopped accepting connections",
        };
        text.to_owned()
    }
}

/// Why a start or stop command failed.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    /// It could not be run.
    #[error("cannot run the {what} command `{command}`: {error}")]
    Spawn {
        /// `start` or `stop`.
        what: &'static str,
        /// The command line.
        command: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("{what} command `{command}`: {error}")]
    Wait {
        /// `start` or `stop`.
        what: &'static str,
        /// The command line.
        command: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error(
        "the {what} command `{command}` failed: {status}{}",
        StderrTail(stderr)
    )]
    Status {
        /// `start` or `stop`.
        what: &'static str,
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its last stderr lines, if any.
        stderr: String,
    },
}

/// `; last stderr: …`, or nothing when there was none.
struct StderrTail<'a>(&'a str);

impl fmt::Display for StderrTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "; last stderr: {}", self.0)
        }
    }
}
