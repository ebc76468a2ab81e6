//! What every accept loop and every connection of one run share: the
//! backend, the work counts, the close signal, the connection slots and the
//! settings a reload may change.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::config::Timeouts;
use crate::serve::activity::InFlight;

/// What every accept loop and connection of a run shares.
#[derive(Clone, Debug)]
pub struct ServeContext {
    /// The backend all routes forward to.
    pub backend: Backend,
    /// Work in flight, for the idle timer: TCP connections, HTTP requests, upgrades.
    pub in_flight: InFlight,
    /// Open client connections of either mode, for the drain at exit.
    pub connections: InFlight,
    /// Cancelled to ask HTTP connections to finish gracefully (idle exit, stop).
    pub close: CancellationToken,
    /// One permit per open connection (`--connections-max`).
    pub slots: Arc<Semaphore>,
    /// The settings a reload may change while serving.
    pub live: watch::Receiver<Timeouts>,
    /// Which clients may wake the backend, and what that did.
    pub wake: Arc<crate::wake::WakeGate>,
    /// Asked when the idle timer fires (`--busy-cmd`).
    pub busy_cmd: Option<Arc<str>>,
    /// Where the idle timer stands, as the timer itself tells it: what the
    /// status shows.
    pub countdown: Arc<watch::Sender<crate::serve::activity::Countdown>>,
}

impl ServeContext {
    /// The live settings now.
    pub fn live(&self) -> Timeouts {
        *self.live.borrow()
    }
}
