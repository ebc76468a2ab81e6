//! An ordered group of backends (`--container db --container app`,
//! `--unit a --unit b`): each is started and ready before the next starts,
//! and they are stopped (or paused) in reverse order.
//!
//! A failed start needs no rollback of its own here: the supervisor stops
//! the whole group after any failure, and a member that never ran is left
//! as it is (see [`Container::stop`]).

use std::time::Duration;

use super::container::Container;
use super::failure::Failure;
use super::hooks::Hooks;
use super::progress::{waiting_for, Progress};

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
    /// first failure ends the start (it names the member).
    pub async fn start(&self, progress: &Progress) -> Result<(), Failure> {
        for member in &self.members {
            match member {
                Member::Container(container) => container.start(progress).await?,
                Member::Unit(hooks) => hooks.start().await?,
            }
            waiting_for(progress, None);
        }
        Ok(())
    }

    /// Stops (or pauses) each member, the last started first, each with `grace`.
    pub async fn stop(&self, grace: Duration) {
        for member in self.members.iter().rev() {
            match member {
                Member::Container(container) => match container.stop(grace).await {
                    Ok(()) => {}
                    Err(e) => tracing::error!(target: "idlegate::backend", "{e}"),
                },
                Member::Unit(hooks) => hooks.stop(grace).await,
            }
        }
    }
}
