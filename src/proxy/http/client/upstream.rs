//! The upstream side: the connector (held until the backend is ready,
//! bounded by `--upstream-connections-max`) and what can go wrong upstream
//! (sending a request again is `resend`'s).

use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::wire::{cut_off, WireError};
use crate::address::Address;
use crate::backend::Backend;
use crate::net::Stream;
use crate::proxy::{connect_upstream, ConnectError};

/// Connects the pooled client to the upstream, holding it until the backend
/// is ready, whatever the request URI says; at most `--upstream-connections-max`
/// connections at once (a request beyond them waits for a pooled connection
/// to come free, or for a slot, within its start timeout).
#[derive(Clone, Debug)]
pub struct UpstreamConnector {
    pub(in crate::proxy::http) backend: Backend,
    pub(in crate::proxy::http) upstream: Address,
    /// One permit per upstream connection that may be open.
    pub(in crate::proxy::http) slots: Arc<Semaphore>,
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<UpstreamConnection>;
    type Error = ConnectError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let deadline = Instant::now() + this.backend.start_timeout();
            this.connect(deadline).await.map(TokioIo::new)
        })
    }
}

impl UpstreamConnector {
    /// A new connection to the upstream, once the backend is ready and a
    /// slot is free, by `deadline`.
    pub(in crate::proxy::http) async fn connect(
        &self,
        deadline: Instant,
    ) -> Result<UpstreamConnection, ConnectError> {
        let slot = self.slots.clone().acquire_owned();
        let slot = match tokio::time::timeout_at(deadline, slot).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(ConnectError::NoFreeConnection {
                    upstream: self.upstream.clone(),
                })
            }
        };
        let stream = connect_upstream(&self.backend, &self.upstream, deadline).await?;
        Ok(UpstreamConnection {
            stream,
            _slot: slot,
        })
    }
}

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub(in crate::proxy::http) enum UpstreamError {
    /// No connection to it.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Sent on idlegate's own connection, the request failed.
    #[error("upstream request failed: {}", chain(error))]
    Request {
        /// What went wrong.
        error: WireError,
        /// Whether the connection had served a request before.
        reused: bool,
    },
    /// Sent through hyper-util's client (h2c), the request failed.
    #[error("upstream request failed: {}", chain(.0))]
    Pooled(hyper_util::client::legacy::Error),
    /// Held for a backend that had just started, the request found it
    /// started again (it died meanwhile): it did not go to the new run.
    #[error("the backend stopped while the request was held for it")]
    Restarted,
}

impl UpstreamError {
    /// The connect error of ours inside, if that is what it is.
    pub(in crate::proxy::http) fn connect_error(&self) -> Option<&ConnectError> {
        match self {
            UpstreamError::Connect(e) => Some(e),
            UpstreamError::Request { .. } | UpstreamError::Restarted => None,
            UpstreamError::Pooled(e) => {
                let mut source = e.source();
                while let Some(s) = source {
                    if let Some(connect) = s.downcast_ref::<ConnectError>() {
                        return Some(connect);
                    }
                    source = s.source();
                }
                None
            }
        }
    }

    /// Whether the request's connection closed or was reset before the
    /// response came (not a connect error of ours), or the request found the
    /// backend started again before it went.
    pub(in crate::proxy::http) fn closed_before_answering(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => false,
            UpstreamError::Restarted => true,
            UpstreamError::Request { error, .. } => error.closed_before_answering(),
            UpstreamError::Pooled(e) => {
                self.connect_error().is_none() && e.source().is_some_and(closed_before_answering)
            }
        }
    }

    /// Whether the request went on a kept-alive connection, which the
    /// upstream may have closed as the request arrived.
    pub(in crate::proxy::http) fn reused(&self) -> bool {
        matches!(self, UpstreamError::Request { reused: true, .. })
    }
}

/// An error and its sources, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why.push_str(": ");
        why.push_str(&s.to_string());
        source = s.source();
    }
    why
}

/// A connection to the upstream, holding its slot until it closes.
#[derive(Debug)]
pub struct UpstreamConnection {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
}

impl UpstreamConnection {
    /// The socket and the slot it holds.
    pub(in crate::proxy::http) fn into_parts(self) -> (Stream, OwnedSemaphorePermit) {
        (self.stream, self._slot)
    }
}

impl tokio::io::AsyncRead for UpstreamConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for UpstreamConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl hyper_util::client::legacy::connect::Connection for UpstreamConnection {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.stream.connected()
    }
}

/// Whether a request failed because its connection closed or was reset
/// before the response came: `e` or one of its sources says so.
pub(in crate::proxy::http) fn closed_before_answering(
    e: &(dyn std::error::Error + 'static),
) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return cut_off(io);
        }
        source = s.source();
    }
    false
}
