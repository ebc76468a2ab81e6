//! idlegate's own pool of HTTP/1.1 connections to the upstream.
//!
//! hyper-util's pooled client drives each upstream connection from a task of
//! its own: every request and every chunk of every response crosses from
//! the client connection's task to that task and back, which is where HTTP
//! mode's latency went (a p99 of 4 ms at 16 connections). Here the client
//! connection's task drives the upstream connection itself while one of its
//! requests uses it (see `http1_conn`): the request is sent and its
//! response's head read in the service future, its body in the response
//! body. A connection whose response ended goes back to the pool; whoever
//! takes it next looks at it once first, which finds one the upstream closed
//! meanwhile. A request nothing of which reached the upstream is sent on a
//! new connection; one the connection took and closed without an answer is
//! the caller's to send again (the upstream's keep-alive timeout racing the
//! request, or the backend dying).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::http1_conn::{BodyState, Http1Connection, Outbound, SendError, Upgraded};
use super::upstream::{UpstreamConnector, UpstreamError};
use super::wire::ResponseHead;

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP/1.1 connections to one upstream that no request uses.
pub struct UpstreamPool {
    connector: UpstreamConnector,
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
#[derive(Debug)]
pub struct Lease {
    /// Boxed: a lease moves from the pool to a request's future and back.
    conn: Box<Http1Connection>,
    /// Where it goes back when its response has ended.
    pool: Arc<UpstreamPool>,
    /// The backend's run the connection was made to.
    generation: u64,
    /// Whether it served a request before this one.
    reused: bool,
}

impl Lease {
    /// Back to the pool, if the connection takes another request.
    fn release(mut self) {
        if self.conn.reusable() {
            self.conn.rest();
            self.pool.clone().keep(self);
        }
    }
}

impl UpstreamPool {
    /// An empty pool connecting through `connector`.
    pub(in crate::proxy::http) fn new(connector: UpstreamConnector) -> Arc<UpstreamPool> {
        Arc::new(UpstreamPool {
            connector,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// Sends `out` on a pooled connection, or on a new one (made by
    /// `deadline`) when none is idle or `fresh` asks for one; once more on a
    /// new one when nothing of it reached a pooled connection. With `run`,
    /// only to that start of the backend: a new connection made to a later
    /// one is [`UpstreamError::Restarted`].
    pub(in crate::proxy::http) async fn send(
        self: &Arc<Self>,
        out: Outbound,
        fresh: bool,
        run: Option<u64>,
        deadline: Instant,
    ) -> Result<Response<UpstreamResponse>, UpstreamError> {
        let mut lease = match self.take(fresh).await {
            Some(lease) => lease,
            // Boxed: connecting is rarer than reusing, and large.
            None => Box::pin(self.connect(deadline, run)).await?,
        };
        let out = match lease.conn.send(out).await {
            Ok(head) => return Ok(UpstreamResponse::of(head, lease)),
            Err(SendError::Unsent(out, _)) if lease.reused => out,
            Err(SendError::Unsent(_, error) | SendError::Failed(error)) => {
                return Err(UpstreamError::Request {
                    error,
                    reused: lease.reused,
                })
            }
        };
        tracing::debug!(target: "idlegate::proxy::http::pool", "a pooled upstream connection ended before it took the request; sending it on a new one");
        let mut lease = Box::pin(self.connect(deadline, run)).await?;
        match lease.conn.send(out).await {
            Ok(head) => Ok(UpstreamResponse::of(head, lease)),
            Err(SendError::Unsent(_, error) | SendError::Failed(error)) => {
                Err(UpstreamError::Request {
                    error,
                    reused: false,
                })
            }
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
                    && lease.conn.poll_idle(cx)
                {
                    lease.reused = true;
                    return Poll::Ready(Some(lease));
                }
            }
            Poll::Ready(None)
        })
        .await
    }

    /// A new connection, made by `deadline` (to start `run` of the
    /// backend, if given).
    async fn connect(
        self: &Arc<Self>,
        deadline: Instant,
        run: Option<u64>,
    ) -> Result<Lease, UpstreamError> {
        let generation = self.connector.backend.generation();
        let io = self.connector.connect(deadline).await?;
        if run.is_some_and(|run| run != self.connector.backend.generation()) {
            return Err(UpstreamError::Restarted);
        }
        Ok(Lease {
            conn: Box::new(Http1Connection::new(io)),
            pool: self.clone(),
            generation,
            reused: false,
        })
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

/// An upstream response's body: read from a pooled connection, which goes
/// back to the pool at its end, or from an h2c stream.
pub struct UpstreamResponse(Source);

enum Source {
    /// From idlegate's own HTTP/1.1 connection.
    Pooled {
        /// How far it has been read.
        state: BodyState,
        /// The connection, until the body's end.
        lease: Option<Lease>,
    },
    /// From a connection someone else drives (hyper-util's client).
    Driven(Incoming),
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::Pooled { state, .. } => f.debug_struct("Pooled").field("state", state).finish(),
            Source::Driven(body) => f.debug_tuple("Driven").field(body).finish(),
        }
    }
}

impl UpstreamResponse {
    /// The response `head` says, its body read from `lease`'s connection
    /// (which goes back to the pool at once when there is none).
    fn of(head: ResponseHead, lease: Lease) -> Response<UpstreamResponse> {
        let state = BodyState::of(head.framing);
        let lease = match state {
            BodyState::Done => {
                lease.release();
                None
            }
            _ => Some(lease),
        };
        head.response
            .map(|()| UpstreamResponse(Source::Pooled { state, lease }))
    }

    /// A body whose connection someone else drives (hyper-util's client).
    pub(in crate::proxy::http) fn driven(body: Incoming) -> UpstreamResponse {
        UpstreamResponse(Source::Driven(body))
    }

    /// The upstream's side of an upgrade the response agreed to.
    pub(in crate::proxy::http) fn upgraded(&mut self) -> Option<Upgraded> {
        match &mut self.0 {
            Source::Pooled {
                state: BodyState::Switched,
                lease,
            } => lease.take().map(|lease| (*lease.conn).upgraded()),
            _ => None,
        }
    }
}

impl Body for UpstreamResponse {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().0 {
            Source::Pooled { state, lease } => {
                let Some(held) = lease else {
                    return Poll::Ready(None);
                };
                let polled = held.conn.poll_body(state, cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => *lease = None,
                    Poll::Ready(_) if matches!(state, BodyState::Done) => {
                        if let Some(lease) = lease.take() {
                            lease.release();
                        }
                    }
                    _ => {}
                }
                polled.map(|p| p.map(|r| r.map_err(Into::into)))
            }
            Source::Driven(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|p| p.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Pooled { state, lease } => {
                lease.is_none() || matches!(state, BodyState::Done | BodyState::Switched)
            }
            Source::Driven(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Source::Pooled {
                state: BodyState::Length(n),
                ..
            } => SizeHint::with_exact(*n),
            Source::Pooled {
                state: BodyState::Done | BodyState::Switched,
                ..
            } => SizeHint::with_exact(0),
            Source::Pooled { .. } => SizeHint::default(),
            Source::Driven(body) => body.size_hint(),
        }
    }
}
