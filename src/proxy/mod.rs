//! Forwarding clients: what both modes share (holding a client until the
//! backend is ready, connecting upstream, closing politely), and one module
//! per mode.

pub mod copy;
pub mod http;
pub mod proxy_protocol;
pub mod tcp;
pub mod udp;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::address::Address;
use crate::backend::ready::connect::is_not_ready_yet;
use crate::backend::{Backend, BackendError};
use crate::backoff::Backoff;
use crate::net::Stream;

/// How long connects to a ready backend may be refused before it counts as
/// having stopped accepting.
pub const REFUSED_WHILE_READY: Duration = Duration::from_millis(100);

/// How long a warm backend whose connection closed before answering has to
/// show it died (the supervisor sees the exit) before the close counts as
/// meant; a client that reached a dying backend is then replayed once.
pub const DEATH_GRACE: Duration = Duration::from_millis(500);

/// How long a refused client may take to notice the close before we drop it.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Why a client was closed without being forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The backend could not be started or did not become ready.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The backend is ready but its address refused us.
    #[error("cannot connect to {upstream}: {source}")]
    Upstream {
        /// The upstream address.
        upstream: Address,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No byte moved either way for `--connection-idle-timeout` while the
    /// upstream had not answered yet.
    #[error("no bytes either way for {} (--connection-idle-timeout)", humantime::format_duration(*.0))]
    Quiet(Duration),
    /// HTTP mode: every upstream connection stayed busy until the start
    /// timeout (`--upstream-connections-max`).
    #[error("no connection to {upstream} came free within the start timeout (--upstream-connections-max)")]
    NoFreeConnection {
        /// The upstream address.
        upstream: Address,
    },
    /// The upstream kept refusing until the start timeout.
    #[error("{upstream} still refused connections at the start timeout")]
    Timeout {
        /// The upstream address.
        upstream: Address,
    },
    /// The upstream of a backend that had just started kept closing
    /// connections before answering until the start timeout (a port
    /// forwarder in front of an app that never listened).
    #[error("{upstream} still closed connections before answering at the start timeout")]
    Closing {
        /// The upstream address.
        upstream: Address,
    },
}

/// Connects to `upstream` once the backend is ready, holding the caller until
/// `deadline`. A refused connect is retried with a short backoff; one that
/// goes on for [`REFUSED_WHILE_READY`] although the backend is ready means the
/// backend stopped accepting: that is reported (the backend's run fails and
/// the next start replaces it) and the client waits for the restart.
pub async fn connect_upstream(
    backend: &Backend,
    upstream: &Address,
    deadline: Instant,
) -> Result<Stream, ConnectError> {
    let mut backoff = Backoff::probe();
    let mut refused_since: Option<Instant> = None;
    loop {
        backend.wait_ready(deadline).await?;
        let generation = backend.generation();
        match tokio::time::timeout_at(deadline, Stream::connect(upstream)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if is_not_ready_yet(&e) => {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= REFUSED_WHILE_READY && backend.is_ready() {
                    backend.report_refused(generation, upstream);
                    refused_since = None;
                    backoff = Backoff::probe();
                    // Let the report land before waiting for readiness again.
                    tokio::task::yield_now().await;
                    continue;
                }
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    let upstream = upstream.clone();
                    // A reset as the connect completes is an accept and a
                    // close, as a port forwarder does before its app listens
                    // (a loaded machine sees the reset before the connect).
                    return Err(if cut_off(&e) && !backend.has_answered() {
                        ConnectError::Closing { upstream }
                    } else {
                        ConnectError::Upstream {
                            upstream,
                            source: e,
                        }
                    });
                }
                tracing::debug!("{upstream} refused ({e}); retrying");
                tokio::time::sleep(delay).await;
            }
            Ok(Err(e)) => {
                return Err(ConnectError::Upstream {
                    upstream: upstream.clone(),
                    source: e,
                })
            }
            Err(_) => {
                return Err(ConnectError::Timeout {
                    upstream: upstream.clone(),
                })
            }
        }
    }
}

/// Whether `e` says the peer closed or reset the connection.
pub fn cut_off(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// Closes a client we cannot serve with a FIN, not a reset: stop writing, then
/// read and discard what it already sent, for a short while.
pub async fn close_politely(mut client: Stream) {
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let mut total = 0usize;
        while total < 1 << 20 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
