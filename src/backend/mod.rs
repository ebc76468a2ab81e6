//! The backend's lifecycle: start on demand, wait until ready, stop when idle.
//!
//! One task (the supervisor) owns the backend process and is the only one to
//! change its [`BackendState`]; everybody else holds a cheap [`Backend`]
//! handle, reads the state from a watch channel, and asks for a start or a
//! stop. A connection arriving while the backend is ready pays one atomic read.
//!
//! Failed starts are retried on demand with capped exponential backoff, so a
//! broken backend can neither crash-loop nor busy-loop idlegate.

pub mod failure;
pub mod hold;
pub mod kinds;
pub mod phases;
pub mod progress;
pub mod ready;
mod supervisor;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::address::Address;
use crate::serve::activity::InFlight;
pub use failure::Failure;
use hold::{Hold, HoldRefused, Holds};
use kinds::run_command::RunCommand;
pub use kinds::BackendKind;
use supervisor::Supervisor;

/// What idlegate knows about the backend and how to run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// How the backend is started and stopped.
    pub kind: BackendKind,
    /// The addresses that must all accept before the backend is "ready" (at least one).
    pub ready: Vec<Address>,
    /// With a path, "ready" needs an HTTP answer to `GET path` on the first
    /// ready address, not just a connection.
    pub ready_http: Option<String>,
    /// Ready only once this shell command exits 0 (`--ready-cmd`).
    pub ready_cmd: Option<String>,
    /// Ready only once the backend command sends `READY=1` (`--ready-notify`)
    /// to a socket made in this directory.
    pub ready_notify: Option<std::path::PathBuf>,
    /// How long a start may take before it counts as failed.
    pub start_timeout: Duration,
    /// Grace after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Wake the backend's host at each start (`--wake-on-lan`).
    pub wake_on_lan: Option<kinds::wake_on_lan::WakeOnLan>,
    /// Cancel a start nobody has waited for this long (`--cancel-abandoned-start`).
    pub cancel_abandoned_start: Option<Duration>,
    /// Hold at most this many clients while a start is in progress (`--hold-max`).
    pub hold_max: Option<usize>,
}

/// A spec for the tests.
#[cfg(test)]
impl BackendSpec {
    /// A backend of `kind` that is never ready (its ready address refuses):
    /// start timeout 60 s, stop timeout 1 s, nothing else set.
    pub fn never_ready(kind: BackendKind) -> BackendSpec {
        BackendSpec {
            kind,
            ready: vec![Address::parse("127.0.0.1:1").expect("an address")],
            ready_http: None,
            ready_cmd: None,
            ready_notify: None,
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(1),
            wake_on_lan: None,
            cancel_abandoned_start: None,
            hold_max: None,
        }
    }
}

impl BackendSpec {
    /// The ready addresses, for the log.
    pub fn ready_list(&self) -> String {
        let list: Vec<String> = self.ready.iter().map(|a| a.to_string()).collect();
        list.join(", ")
    }
}

/// Where the backend is in its lifecycle.
#[derive(Clone, Debug)]
pub enum BackendState {
    /// Not running; the next connection starts it.
    Stopped,
    /// Started (or being probed), not answering yet.
    Starting,
    /// Answering on its address.
    Ready,
    /// Being stopped.
    Stopping,
    /// The last start failed (or the backend died); a new start is allowed
    /// from `retry_at` on.
    Failed {
        /// Why.
        reason: Arc<Failure>,
        /// When a new start may begin.
        retry_at: Instant,
    },
    /// idlegate is shutting down: the backend will not start again.
    ShutDown,
}

/// Two failures are the same when they are one failure (the same start).
impl PartialEq for BackendState {
    fn eq(&self, other: &BackendState) -> bool {
        match (self, other) {
            (
                BackendState::Failed { reason, retry_at },
                BackendState::Failed {
                    reason: other_reason,
                    retry_at: other_retry_at,
                },
            ) => Arc::ptr_eq(reason, other_reason) && retry_at == other_retry_at,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for BackendState {}

impl BackendState {
    /// A few words for `systemctl status`.
    pub fn describe(&self) -> &'static str {
        match self {
            BackendState::Stopped => "backend stopped",
            BackendState::Starting => "backend starting",
            BackendState::Ready => "backend ready",
            BackendState::Stopping => "backend stopping",
            BackendState::Failed { .. } => "backend failed",
            BackendState::ShutDown => "shutting down",
        }
    }
}

/// Why a client cannot be forwarded.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    /// The start failed, or the backend is in its retry backoff.
    #[error("backend failed: {0}")]
    Failed(Arc<Failure>),
    /// The backend did not become ready within the client's start timeout.
    #[error("backend not ready within the start timeout ({0:?})")]
    StartTimeout(Duration),
    /// idlegate is shutting down.
    #[error("idlegate is shutting down")]
    ShuttingDown,
    /// The start this client waited for was cancelled: every client had
    /// left (`--cancel-abandoned-start`).
    #[error(
        "the start was cancelled: every client waiting for it had left (--cancel-abandoned-start)"
    )]
    Abandoned,
}

enum Request {
    Start,
    Reconfigure(Box<BackendSpec>),
    Refused {
        generation: u64,
        upstream: Address,
    },
    Stop {
        only_if_idle: Option<InFlight>,
        done: oneshot::Sender<bool>,
    },
    ShutDown {
        why: ShutDownCause,
        done: oneshot::Sender<()>,
    },
}

/// Why idlegate shuts the backend down for good, which decides what becomes
/// of a container paused when idle (`--idle-action pause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutDownCause {
    /// The idle exit (or the end of an `Accept=yes` connection): a
    /// container is paused, as when idle, so the next start is quick.
    Idle,
    /// A stop of the service (SIGTERM, SIGINT): containers are stopped, a
    /// paused one too, as `--idle-action stop` would.
    StopRequested,
}

/// A handle on the backend; clone it freely.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Whether any upstream connection has sent a byte since the last start:
    /// until then a closed connection may be a port forwarder whose app is not
    /// listening yet (see `proxy::tcp`).
    answered: Arc<AtomicBool>,
    state: watch::Receiver<BackendState>,
    requests: mpsc::UnboundedSender<Request>,
    /// How long a client may wait for a start, in ms (changed by a reload).
    start_timeout_ms: Arc<AtomicU64>,
    /// Counts starts, so a report about an earlier run is not held against this one.
    generation: Arc<AtomicU64>,
    /// The backend's own status text (`--ready-notify`'s `STATUS=`).
    status: watch::Receiver<Option<Arc<str>>>,
    /// Whether the backend is external (idlegate only waits for it).
    external: Arc<AtomicBool>,
    /// What the start in progress waits for (a container's health, the probe's step).
    progress: progress::Progress,
    /// The times of the starts: their phases, the histogram, the recent totals.
    starts: Arc<phases::Starts>,
    /// Who waits for the start in progress.
    holds: Arc<Holds>,
    /// The start last cancelled because nobody waited for it any more (0: none).
    abandoned: Arc<AtomicU64>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Start => "Start",
            Request::Reconfigure(_) => "Reconfigure",
            Request::Refused { .. } => "Refused",
            Request::Stop { .. } => "Stop",
            Request::ShutDown { .. } => "ShutDown",
        })
    }
}

impl Backend {
    /// Creates the handle and spawns the supervisor task on the current runtime.
    ///
    /// A start in progress counts as work in `in_flight`: a client asked for
    /// it, so an idle exit waits until it has finished, ready or failed
    /// (a client that got the waiting page comes back for the real content).
    pub fn spawn(spec: BackendSpec, in_flight: InFlight) -> Backend {
        let (state_tx, state_rx) = watch::channel(BackendState::Stopped);
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let start_timeout_ms = Arc::new(AtomicU64::new(millis(spec.start_timeout)));
        let generation = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicBool::new(false));
        let (status_tx, status) = watch::channel(None);
        let external = Arc::new(AtomicBool::new(spec.kind == BackendKind::External));
        let holds = Holds::new(spec.hold_max);
        let abandoned = Arc::new(AtomicU64::new(0));
        if let Some(warning) = spec
            .kind
            .run_command()
            .as_ref()
            .and_then(RunCommand::unnamed_warning)
        {
            tracing::warn!("{warning}");
        }
        let supervisor = Supervisor::new(
            spec,
            state_tx,
            requests_rx,
            answered.clone(),
            generation.clone(),
            in_flight,
            status_tx,
        )
        .following(hold::Abandonment::new(holds.subscribe(), abandoned.clone()));
        let progress = supervisor.progress();
        let starts = supervisor.starts();
        tokio::spawn(supervisor.run());
        Backend {
            answered,
            state: state_rx,
            requests,
            start_timeout_ms,
            generation,
            status,
            external,
            progress,
            starts,
            holds,
            abandoned,
        }
    }

    /// Which start of the backend is the current one.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reports that `upstream` has kept refusing connections although the
    /// backend of start `generation` is ready: it stopped accepting. The
    /// supervisor then fails that run (stopping what it started), and the
    /// next client starts it again.
    pub fn report_refused(&self, generation: u64, upstream: &Address) {
        let _ = self.requests.send(Request::Refused {
            generation,
            upstream: upstream.clone(),
        });
    }

    /// How long a client may wait for the backend to become ready.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms.load(Ordering::Relaxed))
    }

    /// New settings from a reload: the client start timeout applies at once,
    /// the rest at the backend's next start (a running backend is stopped the
    /// way it was started).
    pub fn reconfigure(&self, spec: BackendSpec) {
        self.start_timeout_ms
            .store(millis(spec.start_timeout), Ordering::Relaxed);
        self.external
            .store(spec.kind == BackendKind::External, Ordering::Relaxed);
        self.holds.set_max(spec.hold_max);
        let _ = self.requests.send(Request::Reconfigure(Box::new(spec)));
    }

    /// Asks for a start now, without waiting (activation: a client is waiting).
    pub fn start(&self) {
        let _ = self.requests.send(Request::Start);
    }

    /// Whether an upstream connection has sent a byte since the backend
    /// last started (or `--ready-http`'s probe got its answer). Until then
    /// the backend has just started, and an
    /// upstream connection that closes before answering may be a port
    /// forwarder's in front of an app not listening yet: both modes then
    /// hold the client and send its bytes (TCP) or its request (HTTP) again.
    pub fn has_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// Records that an upstream connection sent a byte: the backend really
    /// serves (and the first answer after a start ends its last phase).
    pub fn mark_answered(&self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Relaxed);
        }
        self.starts.answered();
    }

    /// Records that a reply went to a client where no upstream connection
    /// tells (UDP): the first after a start ends its last phase, as
    /// [`Backend::mark_answered`] does for a connection.
    pub fn note_reply(&self) {
        self.starts.answered();
    }

    /// The times of the backend's starts (see [`phases`]).
    pub fn starts(&self) -> Arc<phases::Starts> {
        self.starts.clone()
    }

    /// How long a start of this backend usually takes, once one is known.
    pub fn expected_start(&self) -> Option<Duration> {
        self.starts.expected()
    }

    /// Whether idlegate only waits for the backend (no command, container,
    /// unit or hooks: someone else starts it).
    pub fn is_external(&self) -> bool {
        self.external.load(Ordering::Relaxed)
    }

    /// Whether the backend answers now (one atomic read, for the hot path).
    pub fn is_ready(&self) -> bool {
        *self.state.borrow() == BackendState::Ready
    }

    /// The state now.
    pub fn state(&self) -> BackendState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<BackendState> {
        self.state.clone()
    }

    /// A receiver of the backend's own status text while it starts
    /// (`STATUS=` sent to `--ready-notify`'s socket), `None` otherwise.
    pub fn subscribe_status(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.status.clone()
    }

    /// What the start in progress waits for beyond a plain connection, when
    /// idlegate knows (`container web is not healthy (health: starting)`).
    pub fn waiting_for(&self) -> Option<String> {
        progress::detail(&self.progress)
    }

    /// What starts wait for, shared: [`Backend::waiting_for`] of every
    /// start to come.
    pub fn progress(&self) -> progress::Progress {
        self.progress.clone()
    }

    /// The stage the start in progress has reached, in plain words for a
    /// visitor, when idlegate knows more than "starting".
    pub fn stage(&self) -> Option<progress::Stage> {
        let waiting = self.progress.lock().expect("progress lock");
        waiting.as_ref().map(|w| w.stage)
    }

    /// Counts a client held until the backend is ready (drop the hold when
    /// it is served or gone): `None` when the backend is ready, an error when
    /// `--hold-max` clients are held already.
    pub fn hold(&self) -> Result<Option<Hold>, HoldRefused> {
        if self.is_ready() {
            return Ok(None);
        }
        self.holds.hold().map(Some)
    }

    /// Counts a client that waits for the start without being held (a
    /// waiting page's visitor, `idlegate inhibit`): never refused.
    pub fn watch_start(&self) -> Hold {
        self.holds.watch()
    }

    /// Who waits for the start now.
    pub fn waiting(&self) -> hold::Waiting {
        self.holds.now()
    }

    /// Whether the last start was cancelled because nobody waited for it
    /// any more, and none began since.
    pub fn start_abandoned(&self) -> bool {
        let last = self.abandoned.load(Ordering::Acquire);
        last != 0 && last == self.generation()
    }

    /// Waits until the backend is ready, starting it if needed, until `deadline`.
    ///
    /// A client that waited for a start attempt which then failed gets the
    /// failure at once; one that arrives during the retry backoff waits for the
    /// retry when it falls before its deadline.
    pub async fn wait_ready(&self, deadline: Instant) -> Result<(), BackendError> {
        if *self.state.borrow() == BackendState::Ready {
            return Ok(());
        }
        let mut state = self.state.clone();
        let mut requested = false;
        loop {
            let now = state.borrow_and_update().clone();
            match now {
                BackendState::Ready => return Ok(()),
                BackendState::ShutDown => return Err(BackendError::ShuttingDown),
                BackendState::Failed { reason, retry_at } if requested || retry_at > deadline => {
                    return Err(BackendError::Failed(reason))
                }
                // The start this client asked for was cancelled, as every
                // client had left: it does not start it again.
                BackendState::Stopped if requested && self.start_abandoned() => {
                    return Err(BackendError::Abandoned)
                }
                BackendState::Failed { .. } | BackendState::Stopped => {
                    if self.requests.send(Request::Start).is_err() {
                        return Err(BackendError::ShuttingDown);
                    }
                    requested = true;
                }
                BackendState::Starting => requested = true,
                BackendState::Stopping => {}
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(BackendError::ShuttingDown),
                Err(_) => return Err(BackendError::StartTimeout(self.start_timeout())),
            }
        }
    }

    /// Whether the backend of start `generation` stops being ready (it died,
    /// failed or is being stopped) within `grace`: how a connection that the
    /// upstream closed without a word tells a dying backend from a backend
    /// that meant it.
    pub async fn left_ready(&self, generation: u64, grace: Duration) -> bool {
        if self.generation() != generation {
            return true;
        }
        let mut state = self.state.clone();
        let left = |s: &BackendState| *s != BackendState::Ready;
        let check = async {
            let _ = state.wait_for(left).await;
        };
        tokio::time::timeout(grace, check).await.is_ok() || self.generation() != generation
    }

    /// Stops the backend (it starts again on demand). Returns when it is stopped.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self
            .requests
            .send(Request::Stop {
                only_if_idle: None,
                done,
            })
            .is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Stops the backend unless work is in flight at the moment of stopping;
    /// returns whether a running (or starting) backend was stopped. Safe against a connection racing in: either
    /// the connection sees the backend stopping, or the stop sees the connection.
    pub async fn stop_if_idle(&self, in_flight: &InFlight) -> bool {
        let (done, wait) = oneshot::channel();
        if self
            .requests
            .send(Request::Stop {
                only_if_idle: Some(in_flight.clone()),
                done,
            })
            .is_err()
        {
            return false;
        }
        wait.await.unwrap_or(false)
    }

    /// Stops the backend for good: idlegate is exiting, for the reason `why`.
    pub async fn shut_down(&self, why: ShutDownCause) {
        let (done, wait) = oneshot::channel();
        if self.requests.send(Request::ShutDown { why, done }).is_ok() {
            let _ = wait.await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
