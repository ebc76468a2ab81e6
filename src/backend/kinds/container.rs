//! A container backend driven by name through the engine API (`--container`):
//! start or unpause it on demand, wait for its healthcheck, and stop or pause
//! it when idle.

use std::time::Duration;

use crate::backend::failure::Failure;
use crate::backend::kinds::engine::{ContainerState, Engine, EngineError};
use crate::backend::kinds::lease::Leases;
use crate::backend::kinds::wake_on_lan::engine_answers;
use crate::backend::phases::{self, Starts};
use crate::backend::progress::{waiting_for, Progress, Stage};
use crate::backoff::Backoff;

/// What happens to the container when idlegate stops the backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdleAction {
    /// `stop`: the container's processes end (its memory is freed).
    #[default]
    Stop,
    /// `pause`: its processes are frozen in memory and thaw in milliseconds.
    Pause,
}

impl std::str::FromStr for IdleAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "stop" => Ok(IdleAction::Stop),
            "pause" => Ok(IdleAction::Pause),
            _ => Err("expected stop or pause".into()),
        }
    }
}

/// A container known to the engine by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The engine that runs it.
    pub engine: Engine,
    /// Its name (or id).
    pub name: String,
    /// Stop or pause when idle.
    pub idle_action: IdleAction,
    /// Where the instances sharing it count who uses it: it is stopped (or
    /// paused) only when no other live instance holds a lease.
    pub leases: Option<Leases>,
    /// An unreachable engine is waited for, not a failure (its host is woken
    /// by Wake-on-LAN meanwhile; the start timeout bounds the wait).
    pub wait_for_engine: bool,
}

/// The longest pause between two looks at a starting container.
const MAX_POLL: Duration = Duration::from_millis(250);

impl Container {
    /// Starts (or unpauses) the container and returns once it runs and, if it
    /// has a healthcheck, is healthy: the phases [`phases::STARTED`] and
    /// [`phases::HEALTHY`] of `starts`.
    pub async fn start(&self, progress: &Progress, starts: &Starts) -> Result<(), Failure> {
        let name = &self.name;
        let what = format!("container {name} has not started yet");
        waiting_for(progress, Stage::StartingContainer, what);
        self.take_lease().await;
        if self.wait_for_engine {
            let subject = format!("container {name}");
            engine_answers(&self.engine, &subject, progress, Stage::StartingContainer).await?;
        }
        let state = self.inspect().await?;
        if state.paused {
            tracing::info!(target: "idlegate::backend::container", "unpausing container {name}");
            self.engine.unpause(name).await?;
        } else if !state.running {
            tracing::info!(target: "idlegate::backend::container", "starting container {name}");
            self.engine.start(name).await?;
        } else {
            tracing::info!(target: "idlegate::backend::container", "container {name} is already running");
        }
        starts.mark(phases::STARTED);
        let mut backoff = Backoff::new(Duration::from_millis(5), MAX_POLL);
        let mut last_health = String::new();
        loop {
            let state = self.inspect().await?;
            if !state.running {
                return Err(Failure::ContainerStopped {
                    name: name.clone(),
                    status: state.status,
                    exit_code: state.exit_code,
                });
            }
            match state.health_status() {
                None => return Ok(()),
                Some("healthy") => {
                    if !last_health.is_empty() {
                        tracing::info!(target: "idlegate::backend::container", "container {name} is healthy");
                    }
                    starts.mark(phases::HEALTHY);
                    return Ok(());
                }
                Some(health) => {
                    if health != last_health {
                        tracing::info!(target: "idlegate::backend::container",
                            "waiting for container {name} to become healthy (now {health})"
                        );
                        let what = format!("container {name} is not healthy (health: {health})");
                        waiting_for(progress, Stage::ContainerHealth, what);
                        last_health = health.to_owned();
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Stops or pauses the container, as `idle_action` says (`for_good`:
    /// stops it whatever it says, a paused one too); the engine gives it
    /// `grace` after the stop signal.
    /// Another live instance's lease leaves it as it is.
    pub async fn stop(&self, grace: Duration, for_good: bool) -> Result<(), EngineError> {
        let name = &self.name;
        // Held until the stop is done, so no instance starts it meanwhile.
        let mut _locked = None;
        if let Some(leases) = &self.leases {
            let released = match leases.lock(name).await {
                Ok(locked) => locked.release().map(|holders| (locked, holders)),
                Err(e) => Err(e),
            };
            match released {
                Ok((_, holders)) if !holders.is_empty() => {
                    let pids: Vec<String> = holders.iter().map(u32::to_string).collect();
                    tracing::info!(target: "idlegate::backend::container",
                        "container {name} is still used by another idlegate (pid {}): left running",
                        pids.join(", ")
                    );
                    return Ok(());
                }
                Ok((locked, _)) => _locked = Some(locked),
                Err(e) => tracing::warn!(target: "idlegate::backend::container",
                    "container {name}: cannot read its leases in {}: {e}; stopping it anyway",
                    leases.dir.display()
                ),
            }
        }
        match self.idle_action {
            IdleAction::Pause if for_good => {
                let state = self.inspect().await?;
                if !state.running {
                    return Ok(());
                }
                if state.paused {
                    // Thawed first, so that its app gets the stop signal and
                    // ends as it would when running.
                    tracing::info!(target: "idlegate::backend::container", "stopping the paused container {name}");
                    self.engine.unpause(name).await?;
                } else {
                    tracing::info!(target: "idlegate::backend::container", "stopping container {name}");
                }
                self.engine.stop(name, grace).await
            }
            IdleAction::Stop => {
                tracing::info!(target: "idlegate::backend::container", "stopping container {name}");
                self.engine.stop(name, grace).await
            }
            IdleAction::Pause => {
                let state = self.inspect().await?;
                if !state.running || state.paused {
                    return Ok(());
                }
                tracing::info!(target: "idlegate::backend::container", "pausing container {name}");
                self.engine.pause(name).await
            }
        }
    }

    /// Whether the idle action leaves it paused rather than stopped.
    pub fn pauses(&self) -> bool {
        self.idle_action == IdleAction::Pause
    }

    /// Leaves this instance's lease, so that another instance sharing the
    /// container does not stop it under us; without one, it still starts.
    async fn take_lease(&self) {
        let Some(leases) = &self.leases else {
            return;
        };
        let name = &self.name;
        let taken = match leases.lock(name).await {
            Ok(locked) => locked.take(),
            Err(e) => Err(e),
        };
        if let Err(e) = taken {
            tracing::warn!(target: "idlegate::backend::container",
                "container {name}: cannot take a lease in {}: {e}; another idlegate sharing it may stop it",
                leases.dir.display()
            );
        }
    }

    /// Whether the container runs now; `Err` names it, stopped (with its
    /// status and exit code) or not to be found.
    pub async fn check_running(&self) -> Result<(), Failure> {
        let state = self.inspect().await?;
        if state.running {
            return Ok(());
        }
        Err(Failure::ContainerStopped {
            name: self.name.clone(),
            status: state.status,
            exit_code: state.exit_code,
        })
    }

    async fn inspect(&self) -> Result<ContainerState, EngineError> {
        self.engine.inspect(&self.name).await
    }
}
