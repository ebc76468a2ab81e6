//! What keeps a request in flight and logs it: the guard lives in the
//! response body until its last frame is sent or it is dropped. And what
//! counts the bytes of a request's bodies, and of an upgraded connection,
//! into its entry in the list of work.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::serve::activity::InFlightGuard;
use crate::serve::work::{Entry, Traffic};

/// One request's record: counts it as in flight and logs it when its
/// response is done (or abandoned).
#[derive(Debug)]
pub struct RequestLog {
    pub(super) _in_flight: Option<InFlightGuard>,
    /// Keeps the connection's header read timeout from running meanwhile.
    pub(super) _on_connection: InFlightGuard,
    /// The request's turn upstream, until its response is done.
    pub(super) upstream_turn: Option<OwnedSemaphorePermit>,
    pub(super) method: Method,
    /// The request's target, as logged.
    pub(super) path: Target,
    pub(super) status: u16,
    pub(super) started: Instant,
    /// The client's span, for the access log line.
    pub(super) span: tracing::Span,
}

impl RequestLog {
    /// The request's entry in the list of work, if it is work.
    pub(super) fn entry(&self) -> Option<Arc<Entry>> {
        self._in_flight.as_ref().and_then(InFlightGuard::entry)
    }

    fn traffic(&self) -> Option<&Traffic> {
        self._in_flight.as_ref().and_then(InFlightGuard::traffic)
    }
}

/// A request's target as logs show it: its path and query, or the URI
/// when it has none (`CONNECT`'s authority, `*`). A clone of the URI, whose
/// parts share the request's bytes: logging a request copies nothing.
#[derive(Debug)]
pub(super) struct Target(pub(super) http::Uri);

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.path_and_query() {
            Some(path) => path.fmt(f),
            None => self.0.fmt(f),
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        self.span.in_scope(|| {
            tracing::info!(
                target: "idlegate::access",
                "{} {} {} {}ms",
                self.method,
                self.path,
                self.status,
                self.started.elapsed().as_millis()
            )
        });
    }
}

/// A response body that keeps its request in flight until the last frame is
/// sent or the body is dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    pub(super) inner: B,
    pub(super) log: Option<RequestLog>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(traffic)) = (
                    frame.data_ref(),
                    this.log.as_ref().and_then(RequestLog::traffic),
                ) {
                    traffic.to_client(data.remaining() as u64);
                }
            }
            Poll::Ready(None | Some(Err(_))) => {
                this.log.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
