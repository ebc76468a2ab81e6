//! An ordered group of backends (`--container db --container app`,
//! `--unit a --unit b`): each is started and ready before the next starts,
//! and they are stopped (or paused) in reverse order.
//!
//! A failed start needs no rollback of its own here: the supervisor stops
//! the whole group after any failure, and a member that never ran is left
//! as it is (see [`Container::stop`]).

use std::time::Duration;

use crate::backend::failure::Failure;
use crate::backend::kinds::container::Container;
use crate::backend::kinds::hooks::Hooks;
use crate::backend::phases::{self, Starts};
use crate::backend::progress::{clear, Progress};

/// How often a started group's containers are looked at while the
/// readiness probe runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// One backend of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    /// A container through the engine API: ready when healthy, or running
    /// when it has no healthcheck.
    Container(Container),
    /// A systemd unit through `systemctl start`/`stop`: ready when the start
    /// job is done, that is when systemd reports it active.
    Unit(Hooks),
}

/// Backends started in order and stopped in reverse order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// In start order.
    pub members: Vec<Member>,
}

impl Group {
    /// Starts each member in order, each ready before the next starts; the
    /// first failure ends the start (it names the member). Each member's
    /// start and health are phases of `starts`.
    pub async fn start(&self, progress: &Progress, starts: &Starts) -> Result<(), Failure> {
        for member in &self.members {
            match member {
                Member::Container(container) => container.start(progress, starts).await?,
                Member::Unit(hooks) => {
                    hooks.start().await?;
                    starts.mark(phases::STARTED);
                }
            }
            clear(progress);
        }
        Ok(())
    }

    /// Resolves when a container of the group is found stopped (polled every
    /// 250 ms), with the failure that names it; never without containers.
    /// Raced against the readiness probe after the start, so that a member
    /// without a healthcheck that ran for a moment and exited fails the
    /// start at once, by name, instead of at the start timeout.
    pub async fn first_stopped(&self) -> Failure {
        let containers: Vec<&Container> = self
            .members
            .iter()
            .filter_map(|m| match m {
                Member::Container(c) => Some(c),
                Member::Unit(_) => None,
            })
            .collect();
        if containers.is_empty() {
            return std::future::pending().await;
        }
        loop {
            for container in &containers {
                if let Err(failure) = container.check_running().await {
                    return failure;
                }
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }

    /// Stops (or pauses) each member, the last started first, each with
    /// `grace`; `for_good` stops containers that pause when idle.
    pub async fn stop(&self, grace: Duration, for_good: bool) {
        for member in self.members.iter().rev() {
            match member {
                Member::Container(container) => match container.stop(grace, for_good).await {
                    Ok(()) => {}
                    Err(e) => tracing::error!(target: "idlegate::backend", "{e}"),
                },
                Member::Unit(hooks) => hooks.stop(grace).await,
            }
        }
    }

    /// Stops the members paused when idle (by this run or an earlier one),
    /// the last first; the others, not started by this run, are left alone.
    pub async fn stop_paused(&self, grace: Duration) {
        for member in self.members.iter().rev() {
            if let Member::Container(container) = member {
                if container.pauses() {
                    if let Err(e) = container.stop(grace, true).await {
                        tracing::error!(target: "idlegate::backend", "{e}");
                    }
                }
            }
        }
    }
}
