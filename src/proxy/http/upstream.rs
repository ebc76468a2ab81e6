//! The upstream side: the pooled client's connector (held until the backend
//! is ready, bounded by `--upstream-connections-max`), and sending a request
//! again when the backend died under it.

use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HeaderMap;
use http::{Method, Request, Uri};
use http_body::Body;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::UpstreamBody;
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
    pub(super) backend: Backend,
    pub(super) upstream: Address,
    /// One permit per upstream connection that may be open.
    pub(super) slots: Arc<Semaphore>,
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
            let slot = this.slots.clone().acquire_owned();
            let slot = match tokio::time::timeout_at(deadline, slot).await {
                Ok(Ok(slot)) => slot,
                _ => {
                    return Err(ConnectError::NoFreeConnection {
                        upstream: this.upstream.clone(),
                    })
                }
            };
            let stream = connect_upstream(&this.backend, &this.upstream, deadline).await?;
            Ok(TokioIo::new(UpstreamConnection {
                stream,
                _slot: slot,
            }))
        })
    }
}

/// A connection to the upstream, holding its slot until it closes.
#[derive(Debug)]
pub struct UpstreamConnection {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
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

/// A copy of a bodiless request with an idempotent method (RFC 9110
/// §9.2.2), to send it again if the backend died under it.
pub(super) struct Resend {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Resend {
    /// The copy, if `req` may be sent again.
    pub(super) fn of(req: &Request<Incoming>) -> Option<Resend> {
        let idempotent = [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ]
        .contains(req.method());
        (idempotent && req.body().is_end_stream()).then(|| Resend {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        })
    }

    /// The request again.
    pub(super) fn request(self) -> Request<UpstreamBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Whether an upstream request failed because its connection closed or was
/// reset before the response came (not a connect error of ours).
pub(super) fn closed_before_answering(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<ConnectError>().is_some() {
            return false;
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}
