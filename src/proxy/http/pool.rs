//! idlegate's own pool of HTTP/1.1 connections to the upstream.
//!
//! hyper-util's pooled client drives each upstream connection from a task of
//! its own: every request and every chunk of every response crosses from
//! the client connection's task to that task and back, which is where HTTP
//! mode's latency went (a p99 of 4 ms at 16 connections). Here the client
//! connection's task drives the upstream connection itself while one of its
//! requests uses it: the request is sent and its response read in the
//! service future, then in the response body. A finished connection goes
//! back to the pool undriven (an idle HTTP/1 connection has nothing to do);
//! whoever takes it next polls it once first, which finds one the upstream
//! closed meanwhile. A request the connection ended without taking is sent
//! on a new one; one it took and closed without an answer is the caller's
//! to send again (the upstream's keep-alive timeout racing the request, or
//! the backend dying).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::upstream::{UpstreamConnector, UpstreamError};
use super::UpstreamBody;
use crate::proxy::ConnectError;

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection whose response ended may take to be ready for the
/// next request before it is closed instead of pooled.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection's own future: reads and writes for the requests sent on it.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// The HTTP/1.1 connections to one upstream that no request uses.
pub struct UpstreamPool {
    connector: UpstreamConnector,
    builder: http1::Builder,
    /// The idle connections, the most recently used at the back.
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("upstream", &self.connector.upstream)
            .finish_non_exhaustive()
    }
}

struct Idle {
    lease: Lease,
    since: Instant,
}

/// One upstream connection, used by one request at a time and driven by
/// whoever holds it.
pub struct Lease {
    sender: http1::SendRequest<UpstreamBody>,
    /// `None` once the connection ended (closed, failed or upgraded).
    conn: Option<Driver>,
    /// The backend's run the connection was made to.
    generation: u64,
    /// Whether it served a request before this one.
    reused: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("open", &self.conn.is_some())
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Lets the connection read and write what it can.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!("upstream connection ended: {e}");
                }
                self.conn = None;
            }
        }
    }

    /// Whether the connection takes a request now (after one look at it).
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx);
        self.conn.is_some() && self.sender.is_ready()
    }

    /// Sends `req`, driving the connection until the response's head is in.
    async fn send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<UpstreamBody>>> {
        let sent = self.sender.try_send_request(req);
        tokio::pin!(sent);
        poll_fn(|cx| {
            if let Poll::Ready(result) = sent.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            self.drive(cx);
            if self.conn.is_none() {
                // The connection ended: the request has its answer (an error).
                return sent.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }

    /// Drives the connection until it ends: an upgraded one hands its
    /// socket to the upgrade when it does.
    pub(super) async fn finish(mut self) {
        poll_fn(|cx| {
            self.drive(cx);
            match self.conn {
                Some(_) => Poll::Pending,
                None => Poll::Ready(()),
            }
        })
        .await
    }

    /// Drives the connection until it takes a new request; false if it
    /// ended instead.
    async fn settle(&mut self) -> bool {
        poll_fn(|cx| {
            self.drive(cx);
            if self.conn.is_none() {
                return Poll::Ready(false);
            }
            match self.sender.poll_ready(cx) {
                Poll::Ready(ready) => Poll::Ready(ready.is_ok()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl UpstreamPool {
    /// An empty pool connecting through `connector`.
    pub(super) fn new(connector: UpstreamConnector) -> Arc<UpstreamPool> {
        let mut builder = http1::Builder::new();
        builder.allow_obsolete_multiline_headers_in_responses(true);
        Arc::new(UpstreamPool {
            connector,
            builder,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// Sends `req` on a pooled connection, or on a new one (made by
    /// `deadline`) when none is idle or `fresh` asks for one; once more on a
    /// new one when the connection ended before it took the request.
    pub(super) async fn request(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
        fresh: bool,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let mut lease = match self.take(fresh).await {
            Some(lease) => lease,
            // Boxed: connecting is rarer than reusing, and large.
            None => Box::pin(self.connect(deadline)).await?,
        };
        let req = match lease.send(req).await {
            Ok(resp) => return Ok((resp, lease)),
            Err(mut e) => match e.take_message() {
                Some(req) => req,
                None => {
                    return Err(UpstreamError::Request {
                        error: e.into_error(),
                        reused: lease.reused,
                    })
                }
            },
        };
        tracing::debug!("a pooled upstream connection ended before it took the request; sending it on a new one");
        let mut lease = Box::pin(self.connect(deadline)).await?;
        match lease.send(req).await {
            Ok(resp) => Ok((resp, lease)),
            Err(e) => Err(UpstreamError::Request {
                error: e.into_error(),
                reused: false,
            }),
        }
    }

    /// The most recently used idle connection that still takes requests.
    async fn take(&self, fresh: bool) -> Option<Lease> {
        if fresh {
            return None;
        }
        let generation = self.connector.backend.generation();
        poll_fn(|cx| {
            let mut idle = self.idle.lock().expect("upstream pool lock");
            while let Some(Idle { mut lease, since }) = idle.pop_back() {
                if lease.generation == generation
                    && since.elapsed() < IDLE_TIMEOUT
                    && lease.usable(cx)
                {
                    lease.reused = true;
                    return Poll::Ready(Some(lease));
                }
            }
            Poll::Ready(None)
        })
        .await
    }

    /// A new connection, made by `deadline`.
    async fn connect(&self, deadline: Instant) -> Result<Lease, UpstreamError> {
        let generation = self.connector.backend.generation();
        let io = self.connector.connect(deadline).await?;
        let (sender, conn) = self
            .builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                UpstreamError::Connect(ConnectError::Upstream {
                    upstream: self.connector.upstream.clone(),
                    source: std::io::Error::other(e),
                })
            })?;
        Ok(Lease {
            sender,
            conn: Some(Box::pin(conn.with_upgrades())),
            generation,
            reused: false,
        })
    }

    /// Takes back a connection whose response ended: pooled if it takes
    /// another request (now, or once it has read the response's end).
    fn put(self: &Arc<Self>, mut lease: Lease) {
        if lease.conn.is_none() || lease.sender.is_closed() {
            return;
        }
        if lease.sender.is_ready() {
            self.keep(lease);
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if let Ok(true) = tokio::time::timeout(SETTLE_TIMEOUT, lease.settle()).await {
                pool.keep(lease);
            }
        });
    }

    fn keep(&self, lease: Lease) {
        let mut idle = self.idle.lock().expect("upstream pool lock");
        // The oldest first out when expired (the rest are younger).
        while idle
            .front()
            .is_some_and(|oldest| oldest.since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        idle.push_back(Idle {
            lease,
            since: Instant::now(),
        });
    }
}

/// An upstream response's body: drives its pooled connection while it is
/// read and gives the connection back to the pool at its end.
pub struct UpstreamResponse {
    body: Incoming,
    lease: Option<(Lease, Arc<UpstreamPool>)>,
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl UpstreamResponse {
    /// A body read from a pooled connection, which goes back at its end.
    pub(super) fn pooled(body: Incoming, lease: Lease, pool: Arc<UpstreamPool>) -> Self {
        UpstreamResponse {
            body,
            lease: Some((lease, pool)),
        }
    }

    /// A body whose connection someone else drives (hyper-util's client).
    pub(super) fn driven(body: Incoming) -> Self {
        UpstreamResponse { body, lease: None }
    }
}

impl Body for UpstreamResponse {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some((lease, _)) = &mut this.lease {
            lease.drive(cx);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some((lease, pool)) = this.lease.take() {
                    pool.put(lease);
                }
            }
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamResponse {
    fn drop(&mut self) {
        // hyper does not poll a body that says it has ended (no body, or all
        // of it read): its connection is done with the response all the same.
        // One dropped before its end cannot be reused.
        if let Some((lease, pool)) = self.lease.take() {
            if self.body.is_end_stream() {
                pool.put(lease);
            }
        }
    }
}
