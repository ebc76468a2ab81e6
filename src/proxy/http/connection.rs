//! One client connection's life: HTTP/1 or HTTP/2 by its first bytes, and
//! an idle HTTP/1 keep-alive connection parked down to its socket.
//!
//! hyper keeps a connection's read and write buffers (8 KiB each) and its
//! state for as long as the connection lives, also while it waits for a next
//! request that may never come. An HTTP/1 connection with no request for
//! [`PARK_AFTER`] is therefore taken back from hyper at a message boundary
//! (its socket and any bytes already read) and kept as just that until the
//! client sends again; a new hyper connection then takes it over.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::headers::detached;
use super::io::Prefixed;
use super::{Answering, HttpProxy, ProxyBody};
use crate::net::{Peer, Stream};
use crate::serve::activity::{InFlight, InFlightGuard};

/// How long an HTTP/1 connection waits for its next request in hyper's
/// hands before it is parked.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(10);

/// How often a connection with a request in flight is looked at again for
/// quiet: it parks between [`PARK_AFTER`] and this much later than that.
const BUSY_RECHECK: Duration = Duration::from_millis(100);

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How much of the client's first bytes is read at once.
const FIRST_READ: usize = 2048;

/// The protocol a client speaks, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Waits for the client's first bytes, at most `wait` and until `close`:
/// which protocol they start, and the bytes; `None` if the client left or
/// sent nothing in time.
pub(super) async fn first_bytes(
    stream: &mut Stream,
    wait: Duration,
    close: &CancellationToken,
) -> Option<(Protocol, Bytes)> {
    let mut first = BytesMut::with_capacity(FIRST_READ);
    let read = async {
        loop {
            match stream.read_buf(&mut first).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let n = first.len().min(H2_PREFACE.len());
            if first[..n] != H2_PREFACE[..n] {
                return Some(Protocol::Http1);
            }
            if n == H2_PREFACE.len() {
                return Some(Protocol::Http2);
            }
        }
    };
    let protocol = tokio::select! {
        protocol = read => protocol?,
        _ = tokio::time::sleep(wait) => {
            no_request_within(wait);
            return None;
        }
        _ = close.cancelled() => return None,
    };
    Some((protocol, first.freeze()))
}

/// Logs why a connection closes: no request came within `wait`.
fn no_request_within(wait: Duration) {
    tracing::debug!(
        "closing the connection: no request within {} (--header-read-timeout)",
        humantime::format_duration(wait)
    );
}

/// Whether a connection's requests have been quiet for `park_after`; if
/// not, `check` is set to look again when they may have been.
fn quiet_for(
    requests: &InFlight,
    park_after: Duration,
    check: Pin<&mut tokio::time::Sleep>,
) -> bool {
    let now = Instant::now();
    match requests.quiet_since() {
        Some(since) if since + park_after <= now => true,
        Some(since) => {
            check.reset(since + park_after);
            false
        }
        None => {
            check.reset(now + BUSY_RECHECK);
            false
        }
    }
}

pin_project_lite::pin_project! {
    /// A parked connection's wait: until the client sends something (or
    /// closes), `close` asks, or the header read timeout passes. Written out
    /// rather than a `select!` of three futures: it is most of what a parked
    /// connection's task holds.
    struct Parked<'a> {
        io: &'a Prefixed,
        #[pin]
        deadline: tokio::time::Sleep,
        #[pin]
        close: tokio_util::sync::WaitForCancellationFuture<'a>,
    }
}

/// How a parked connection's wait ended.
#[derive(Debug, PartialEq, Eq)]
enum Unparked {
    /// The client sent something, or closed.
    Readable,
    /// Closing: the connection is to end.
    Closing,
    /// No request within the header read timeout.
    TimedOut,
}

impl<'a> Parked<'a> {
    /// Waits on `io` until `deadline` or until `close` asks.
    fn new(io: &'a Prefixed, deadline: Instant, close: &'a CancellationToken) -> Parked<'a> {
        Parked {
            io,
            deadline: tokio::time::sleep_until(deadline),
            close: close.cancelled(),
        }
    }
}

impl Future for Parked<'_> {
    type Output = Unparked;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Unparked> {
        let this = self.project();
        match this.io.stream().poll_read_ready(cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Unparked::Readable),
            Poll::Ready(Err(_)) => return Poll::Ready(Unparked::Closing),
            Poll::Pending => {}
        }
        if this.close.poll(cx).is_ready() {
            return Poll::Ready(Unparked::Closing);
        }
        this.deadline.poll(cx).map(|()| Unparked::TimedOut)
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; its connection's first-request guard ends
    /// with the answer.
    struct Answered<F> {
        #[pin]
        handled: F,
        first: Option<InFlightGuard>,
        // A request an `[[answer]]` rule answered: its connection was not
        // work after all.
        probe: bool,
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Answered<F> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.handled.poll(cx));
        match this.first.take() {
            Some(first) if *this.probe => first.void(),
            first => drop(first),
        }
        Poll::Ready(Ok(response))
    }
}

/// What a client connection shares with its requests.
#[derive(Debug)]
pub struct ClientConnection {
    /// The client.
    pub(super) peer: Peer,
    /// Asks the connection to finish gracefully.
    pub(super) close: CancellationToken,
    /// Every line about this client carries it.
    pub(super) span: tracing::Span,
    /// The client's IP address as `X-Forwarded-For` adds it (written once
    /// per connection, not per request); none for a Unix socket's client.
    forwarded_for: Option<HeaderValue>,
    /// This connection's own requests, from their headers to the end of
    /// their responses: what the header read timeout waits for.
    requests: InFlight,
    /// Counts the connection as work until its first request has been
    /// answered (the request's own guard takes over from there).
    first_request: Mutex<Option<InFlightGuard>>,
    /// Whether the client speaks HTTP/1 (known from its first bytes).
    http1: AtomicBool,
    /// HTTP/1: where an upgraded request's tunnel waits for the socket,
    /// which hyper hands back once the `101` is sent. HTTP/2 never uses it
    /// (hyper upgrades a stream itself).
    upgrade: Mutex<Option<oneshot::Sender<Prefixed>>>,
    /// Requests begun on the connection.
    begun: AtomicU64,
}

impl ClientConnection {
    /// The shared state of a new connection from `peer`, whose protocol is
    /// not known yet.
    fn new(
        peer: Peer,
        close: CancellationToken,
        first_request: InFlightGuard,
        span: tracing::Span,
    ) -> ClientConnection {
        let forwarded_for = match peer {
            Peer::Tcp(addr) => HeaderValue::try_from(addr.ip().to_string()).ok(),
            Peer::Unix => None,
        };
        ClientConnection {
            peer,
            close,
            span,
            forwarded_for,
            requests: InFlight::new(),
            first_request: Mutex::new(Some(first_request)),
            http1: AtomicBool::new(false),
            upgrade: Mutex::new(None),
            begun: AtomicU64::new(0),
        }
    }

    /// The client's IP address as `X-Forwarded-For` adds it; none for a
    /// Unix socket's client.
    pub(super) fn forwarded_for(&self) -> Option<&HeaderValue> {
        self.forwarded_for.as_ref()
    }

    /// The client's first bytes say it speaks `protocol`.
    fn speaks(&self, protocol: Protocol) {
        self.http1
            .store(protocol == Protocol::Http1, Ordering::Relaxed);
    }

    /// Counts a request begun; the first one takes the first-request guard.
    pub(super) fn begin(&self) -> Option<InFlightGuard> {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.first_request
            .lock()
            .expect("first-request lock")
            .take()
    }

    /// How many requests have begun.
    pub(super) fn begun(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }

    /// HTTP/1: a receiver for the socket of the connection being upgraded
    /// now; `None` for HTTP/2.
    pub(super) fn expect_upgrade(&self) -> Option<oneshot::Receiver<Prefixed>> {
        if !self.http1.load(Ordering::Relaxed) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        *self.upgrade.lock().expect("upgrade lock") = Some(tx);
        Some(rx)
    }

    /// Hands `io` to the upgrade waiting for it; gives it back if none does.
    pub(super) fn upgraded(&self, io: Prefixed) -> Result<(), Prefixed> {
        let waiting = self.upgrade.lock().expect("upgrade lock").take();
        match waiting {
            Some(tx) => tx.send(io),
            None => Err(io),
        }
    }
}

impl HttpProxy {
    /// Serves one client connection until it ends, or until `close` asks it
    /// to finish gracefully; `held` is dropped when it ends.
    ///
    /// A connection with no request in progress is closed once the header
    /// read timeout passes without a request's headers: from accept (so a
    /// browser's preconnected socket that never sends a byte is not held
    /// open as work) and from the end of each response.
    ///
    /// Not an `async fn`: the future is what a connection's task holds for
    /// as long as the connection lives, parked or not, and an `async fn`
    /// keeps its arguments twice (as arguments, and as the locals they are
    /// moved into). What the connection keeps is made here and moved in
    /// once, its shared part behind one `Arc`.
    pub fn serve_connection(
        self: Arc<Self>,
        stream: Stream,
        peer: Peer,
        close: CancellationToken,
        first_request: InFlightGuard,
        span: tracing::Span,
        held: impl Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut io = Prefixed::new(Bytes::new(), stream);
        let client = Arc::new(ClientConnection::new(peer, close, first_request, span));
        async move {
            // Captured, and so dropped when the connection ends.
            let _ = &held;
            let header_wait = self.settings.header_read_timeout;
            // Boxed: only a connection's start waits for it.
            let first = Box::pin(first_bytes(io.stream_mut(), header_wait, &client.close));
            let Some((protocol, first)) = first.instrument(client.span.clone()).await else {
                return;
            };
            io = io.unread(first);
            client.speaks(protocol);
            let service = self.service(&client);
            if protocol == Protocol::Http2 {
                // Boxed: an HTTP/2 connection's state is large, and would be
                // in every connection's task otherwise.
                Box::pin(self.serve_http2(io, service, &client)).await;
                return;
            }
            // HTTP/1 from here, in this block rather than an `async fn` of
            // its own: `io` would be kept twice. Nothing that can be looked
            // up again is kept across a wait either; `idle_since` (since
            // when the connection has had no request: the header read
            // timeout runs from there) cannot.
            let mut idle_since = Instant::now();
            loop {
                let begun = client.begun();
                // Boxed: what serving takes (hyper's connection, the quiet
                // check) is not kept in the task of a parked connection.
                let served = self.serve_until_quiet(io, service.clone(), &client);
                let (back, parking) = match Box::pin(served).await {
                    Ok(served) => served,
                    Err(e) => {
                        let span = &client.span;
                        return span.in_scope(|| tracing::debug!("http connection ended: {e}"));
                    }
                };
                io = match client.upgraded(back) {
                    Ok(()) => return,
                    Err(io) => io,
                };
                if !parking {
                    // The client's close, `Connection: close`, or ours.
                    let _ = io.shutdown().await;
                    return;
                }
                if client.begun() != begun {
                    // Its last request ended about `park_after()` ago.
                    idle_since = Instant::now() - self.park_after();
                }
                // Part of a request may be in already: a new hyper
                // connection goes on reading it once more comes.
                let deadline = idle_since + self.settings.header_read_timeout;
                match Parked::new(&io, deadline, &client.close).await {
                    Unparked::Readable => {}
                    unparked => {
                        if unparked == Unparked::TimedOut {
                            let wait = self.settings.header_read_timeout;
                            client.span.in_scope(|| no_request_within(wait));
                        }
                        let _ = io.shutdown().await;
                        return;
                    }
                }
            }
        }
    }

    /// How long an HTTP/1 connection waits for its next request in hyper's
    /// hands before it is parked.
    fn park_after(&self) -> Duration {
        PARK_AFTER.min(self.settings.header_read_timeout)
    }

    /// The service answering a connection's requests.
    fn service(
        self: &Arc<Self>,
        client: &Arc<ClientConnection>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future = Answering,
    > + Clone {
        let this = self.clone();
        let client = client.clone();
        service_fn(move |req| {
            let req = detached(req);
            let first = client.begin();
            let on_connection = client.requests.enter();
            let rule = this.answer_rule(&req, client.peer);
            let handled = this
                .clone()
                .handle(req, on_connection, rule, client.clone())
                .instrument(client.span.clone());
            // Not awaited in an async block: it would be in the box twice.
            let answered: Answering = Box::pin(Answered {
                handled,
                first,
                probe: rule.is_some(),
            });
            answered
        })
    }

    /// Serves an HTTP/2 connection to its end.
    async fn serve_http2<S>(&self, io: Prefixed, service: S, client: &ClientConnection)
    where
        S: hyper::service::HttpService<Incoming, ResBody = ProxyBody> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let header_wait = self.settings.header_read_timeout;
        let (requests, span) = (&client.requests, &client.span);
        let conn = self.http2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = client.close.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = requests.idle(header_wait) => {
                span.in_scope(|| no_request_within(header_wait));
                // GOAWAY: a request racing in is still answered; a client
                // that leaves the close unanswered is dropped.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    result = conn.as_mut() => result,
                    _ = requests.idle(header_wait) => return,
                }
            }
        };
        if let Err(e) = result {
            span.in_scope(|| tracing::debug!("http connection ended: {e}"));
        }
    }

    /// Serves `io` in a hyper connection until it ends (false), `close`
    /// asks (false), or its requests have been quiet for `park_after`
    /// (true); gives the socket back, with what was read and not used.
    async fn serve_until_quiet<S>(
        &self,
        io: Prefixed,
        service: S,
        client: &ClientConnection,
    ) -> hyper::Result<(Prefixed, bool)>
    where
        S: hyper::service::HttpService<Incoming, ResBody = ProxyBody> + Unpin,
        S::Future: Unpin,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (requests, close) = (&client.requests, &client.close);
        let park_after = self.park_after();
        let mut conn = self.http1.serve_connection(TokioIo::new(io), service);
        let mut finish = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx));
        // Whether the connection went quiet is looked at now and then,
        // not at each request's start and end (which would wake this
        // task twice per request).
        let check = tokio::time::sleep(park_after);
        tokio::pin!(check);
        let parking = loop {
            tokio::select! {
                result = &mut finish => break result.map(|()| false),
                _ = close.cancelled() => {
                    drop(finish);
                    Pin::new(&mut conn).graceful_shutdown();
                    break std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await.map(|()| false);
                }
                _ = check.as_mut() => {
                    if !quiet_for(requests, park_after, check.as_mut()) {
                        continue;
                    }
                    drop(finish);
                    // Closes an idle connection at once (keeping the
                    // socket); a request racing in is answered first.
                    Pin::new(&mut conn).graceful_shutdown();
                    break std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await.map(|()| true);
                }
            }
        }?;
        let parts = conn.into_parts();
        Ok((parts.io.into_inner().unread(parts.read_buf), parking))
    }
}
