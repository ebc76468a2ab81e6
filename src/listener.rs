//! The accept loop of one socket: take a connection slot, accept, count the
//! connection as in flight, and hand it to its own task. It survives accept
//! errors (EMFILE backs off and logs) and always stops when told.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::activity::InFlight;
use crate::backend::Backend;
use crate::net::Listener;
use crate::proxy;
use crate::readiness::Backoff;

/// One socket and where its clients go.
pub type Route = crate::activation::Route<Listener>;

/// What every accept loop shares.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The backend all routes forward to.
    pub backend: Backend,
    /// Counts open connections for the idle timer.
    pub in_flight: InFlight,
    /// One permit per open connection (`--connections-max`).
    pub slots: Arc<Semaphore>,
    /// How long a client may wait for the backend.
    pub start_timeout: Duration,
}

/// Whether an accept error is about resources (back off) rather than one client.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts clients on `route` until `stop` is cancelled.
pub async fn accept_loop(route: Arc<Route>, shared: Shared, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        // Take a slot before accepting: at the limit, clients wait in the
        // kernel's backlog instead of being accepted and reset.
        let slot = tokio::select! {
            slot = shared.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = route.listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
                let guard = shared.in_flight.enter();
                let route = route.clone();
                let backend = shared.backend.clone();
                let start_timeout = shared.start_timeout;
                tokio::spawn(async move {
                    tracing::debug!("client {peer} on {}", route.label);
                    proxy::serve(client, &peer, &route.upstream, &backend, start_timeout).await;
                    drop(guard);
                    drop(slot);
                });
            }
            Err(e) if is_resource_exhaustion(&e) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    "accept on {} failed: {e}; pausing {}ms",
                    route.label,
                    delay.as_millis()
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Err(e) => tracing::debug!("accept on {} failed: {e}", route.label),
        }
    }
}
