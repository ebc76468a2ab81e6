//! A backend started and stopped by commands that return (`--start-cmd`,
//! `--stop-cmd`, and `--unit` as `systemctl start`/`stop`): each runs to
//! completion, its output logged.

use std::time::Duration;

use crate::backend::failure::HookFailure;
use crate::backend::kinds::process::{self, Process};

/// The start and stop commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    /// Run on demand, before waiting for readiness.
    pub start: Option<Vec<String>>,
    /// Run when idle or stopping.
    pub stop: Option<Vec<String>>,
}

impl Hooks {
    /// `systemctl start UNIT` and `systemctl stop UNIT`.
    pub fn unit(unit: &str) -> Hooks {
        let systemctl = |verb: &str| Some(vec!["systemctl".into(), verb.into(), unit.to_owned()]);
        Hooks {
            start: systemctl("start"),
            stop: systemctl("stop"),
        }
    }

    /// Shell commands (`/bin/sh -c`).
    pub fn shell(start: Option<&str>, stop: Option<&str>) -> Hooks {
        let shell = |c: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), c.to_owned()];
        Hooks {
            start: start.map(shell),
            stop: stop.map(shell),
        }
    }

    /// Runs the start command, if there is one.
    pub async fn start(&self) -> Result<(), HookFailure> {
        match &self.start {
            Some(argv) => run(argv, "start").await,
            None => Ok(()),
        }
    }

    /// Runs the stop command, if there is one, for at most `grace` (at least
    /// a second); what happened goes to the log.
    pub async fn stop(&self, grace: Duration) {
        let Some(argv) = &self.stop else {
            return;
        };
        tracing::info!(target: "idlegate::backend", "stopping backend: {}", process::describe(argv));
        match tokio::time::timeout(grace.max(Duration::from_secs(1)), run(argv, "stop")).await {
            Ok(Ok(())) => tracing::info!(target: "idlegate::backend", "backend stopped"),
            Ok(Err(e)) => tracing::warn!(target: "idlegate::backend", "{e}"),
            Err(_) => tracing::warn!(target: "idlegate::backend",
                "stop command `{}` still running after the stop timeout; killed",
                process::describe(argv)
            ),
        }
    }
}

/// Runs a start or stop command to completion (its output logged); an error
/// says what failed, with its exit status and last stderr lines. Dropping the
/// future kills the command's process group.
async fn run(argv: &[String], what: &'static str) -> Result<(), HookFailure> {
    let mut p =
        Process::spawn(argv, &format!("{what} command")).map_err(|error| HookFailure::Spawn {
            what,
            command: process::describe(argv),
            error,
        })?;
    let status = p.wait().await.map_err(|error| HookFailure::Wait {
        what,
        command: p.command().to_owned(),
        error,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(HookFailure::Status {
        what,
        command: p.command().to_owned(),
        status,
        stderr: p.stderr_tail().await,
    })
}
