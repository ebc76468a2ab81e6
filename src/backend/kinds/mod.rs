//! How the backend is run, and what each kind does at a start and a stop:
//! a child process ([`process`](crate::backend::kinds::process)), start and stop commands
//! ([`hooks`](crate::backend::kinds::hooks)), an ordered group of containers or units
//! ([`group`](crate::backend::kinds::group)), or nothing (external).
//!
//! Beside them: [`container`] through the engine API ([`engine`]), shared by
//! several instances ([`lease`]); `podman run` ([`run_command`], its image
//! [`pull`]); a Docker [`swarm`] service; and [`wake_on_lan`] for a backend on a host that sleeps.

pub mod container;
pub mod engine;
pub mod group;
pub mod hooks;
pub mod lease;
pub mod process;
pub mod pull;
pub mod run_command;
pub mod swarm;
pub mod wake_on_lan;

use std::time::Duration;

use crate::backend::failure::Failure;
use crate::backend::kinds::group::Group;
use crate::backend::kinds::hooks::Hooks;
use crate::backend::kinds::process::Process;
use crate::backend::kinds::run_command::RunCommand;
use crate::backend::kinds::swarm::SwarmService;
use crate::backend::phases::{self, Starts};
use crate::backend::progress::Progress;
use crate::backend::ready::notify_socket::NotifySocket;

/// How the backend is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Already running, or managed by someone else: only waited for.
    External,
    /// A long-running child process idlegate starts and stops.
    Process(Vec<String>),
    /// Commands that start and stop the backend and return (`--start-cmd`,
    /// `--stop-cmd`).
    Hooks(Hooks),
    /// Containers through the engine API (`--container`) or systemd units
    /// (`--unit`), started in order and stopped in reverse order.
    Group(Group),
    /// A Docker Swarm service scaled from 0 on demand and back to 0 when
    /// idle (`--swarm-service`).
    Swarm(SwarmService),
}

/// What a start began: the child process, or the step the probe runs
/// before waiting for readiness.
// Made once per start and unpacked at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Launched {
    /// The backend process, running.
    Process(Process),
    /// A start command or a container start, to run inside the start timeout.
    Step(StartStep),
    /// Nothing to start: the backend is someone else's.
    Nothing,
}

/// A kind's start that takes time, run inside the start timeout.
pub(super) enum StartStep {
    /// Run the start command.
    Hooks(Hooks),
    /// Start (or unpause) each member in order, each ready before the next.
    Group(Group),
    /// Scale the Swarm service up and wait for its tasks.
    Swarm(SwarmService),
}

impl BackendKind {
    /// The command, when it is `podman run` / `docker run` (see [`RunCommand`]).
    pub(super) fn run_command(&self) -> Option<RunCommand> {
        match self {
            BackendKind::Process(argv) => RunCommand::parse(argv),
            _ => None,
        }
    }

    /// Begins a start: spawns the process (given `--ready-notify`'s socket;
    /// a `podman run` tells its image pull as `progress`), or hands back the
    /// step to run.
    pub(super) fn launch(
        &self,
        notify: Option<&NotifySocket>,
        progress: &Progress,
    ) -> Result<Launched, Failure> {
        match self {
            BackendKind::Process(argv) => {
                let env: Vec<_> = notify
                    .iter()
                    .map(|n| ("NOTIFY_SOCKET", n.env_value()))
                    .collect();
                let pulls = RunCommand::parse(argv).map(|_| progress.clone());
                Process::spawn_watched(argv, "backend", &env, pulls)
                    .map(Launched::Process)
                    .map_err(|error| Failure::Spawn {
                        command: process::describe(argv),
                        error,
                    })
            }
            BackendKind::Hooks(hooks) => Ok(Launched::Step(StartStep::Hooks(hooks.clone()))),
            BackendKind::Group(g) => Ok(Launched::Step(StartStep::Group(g.clone()))),
            BackendKind::Swarm(s) => Ok(Launched::Step(StartStep::Swarm(s.clone()))),
            BackendKind::External => Ok(Launched::Nothing),
        }
    }

    /// Whether stopping runs something of its own (a stop command, the
    /// engine), so the state shows `Stopping` meanwhile.
    pub(super) fn stop_takes_time(&self) -> bool {
        match self {
            BackendKind::Hooks(hooks) => hooks.stop.is_some(),
            BackendKind::Group(_) | BackendKind::Swarm(_) => true,
            BackendKind::Process(_) | BackendKind::External => false,
        }
    }

    /// Stops what a start step began: runs the stop command, or stops (or,
    /// unless `for_good`, pauses) the group in reverse order, with `grace`.
    /// A process is stopped by its owner.
    pub(super) async fn stop_started(&self, grace: Duration, for_good: bool) {
        match self {
            BackendKind::Hooks(hooks) => hooks.stop(grace).await,
            BackendKind::Group(group) => {
                group.stop(grace, for_good).await;
                tracing::info!(target: "idlegate::backend", "backend stopped");
            }
            BackendKind::Swarm(service) => match service.stop(grace).await {
                Ok(()) => tracing::info!(target: "idlegate::backend", "backend stopped"),
                Err(e) => tracing::error!(target: "idlegate::backend", "{e}"),
            },
            BackendKind::Process(_) | BackendKind::External => {}
        }
    }

    /// On a stop for good with nothing started by this run: stops the
    /// containers an idle pause left paused (see [`Group::stop_paused`]).
    pub(super) async fn stop_paused(&self, grace: Duration) {
        if let BackendKind::Group(group) = self {
            group.stop_paused(grace).await;
        }
    }
}

/// What a start watches while the readiness probe runs, so that a backend
/// that ends meanwhile fails the start at once instead of at the timeout.
pub(super) enum Watched {
    /// A group's containers (see [`Group::first_stopped`]).
    Group(Group),
    /// A Swarm service's tasks (see [`SwarmService::first_failed_task`]).
    Swarm(SwarmService),
}

impl Watched {
    /// Resolves with the failure that names what ended, if anything does.
    pub(super) async fn first_failure(&self) -> Failure {
        match self {
            Watched::Group(group) => group.first_stopped().await,
            Watched::Swarm(service) => service.first_failed_task().await.into(),
        }
    }
}

impl StartStep {
    /// What to watch while the readiness probe runs, if the step starts a
    /// group or a Swarm service (see [`Watched::first_failure`]).
    pub(super) fn watched(&self) -> Option<Watched> {
        match self {
            StartStep::Group(group) => Some(Watched::Group(group.clone())),
            StartStep::Swarm(service) => Some(Watched::Swarm(service.clone())),
            StartStep::Hooks(_) => None,
        }
    }

    /// Runs the step to its end, marking its phases in `starts`.
    pub(super) async fn run(self, progress: &Progress, starts: &Starts) -> Result<(), Failure> {
        match self {
            StartStep::Hooks(hooks) => {
                hooks.start().await?;
                starts.mark(phases::STARTED);
            }
            StartStep::Group(group) => group.start(progress, starts).await?,
            StartStep::Swarm(service) => {
                service.start(progress).await?;
                starts.mark(phases::STARTED);
            }
        }
        Ok(())
    }
}
