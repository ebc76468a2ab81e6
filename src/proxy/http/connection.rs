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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
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

/// Waits, parked, until the client sends something (true), or closes,
/// or `close` asks, or `deadline` (the header read timeout `wait` after
/// the last request) passes (false).
async fn parked_until(
    io: &Prefixed,
    deadline: Instant,
    close: &CancellationToken,
    wait: Duration,
    span: &tracing::Span,
) -> bool {
    tokio::select! {
        readable = io.stream().readable() => readable.is_ok(),
        _ = close.cancelled() => false,
        _ = tokio::time::sleep_until(deadline) => {
            span.in_scope(|| no_request_within(wait));
            false
        }
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
    /// Counts the connection as work until its first request has been
    /// answered (the request's own guard takes over from there).
    first_request: Mutex<Option<InFlightGuard>>,
    /// HTTP/1: where an upgraded request's tunnel waits for the socket,
    /// which hyper hands back once the `101` is sent. HTTP/2: `None` (hyper
    /// upgrades a stream itself).
    upgrade: Option<Mutex<Option<oneshot::Sender<Prefixed>>>>,
    /// Requests begun on the connection.
    begun: AtomicU64,
}

impl ClientConnection {
    /// The shared state of a new connection speaking `protocol`.
    pub(super) fn new(protocol: Protocol, first_request: InFlightGuard) -> ClientConnection {
        ClientConnection {
            first_request: Mutex::new(Some(first_request)),
            upgrade: (protocol == Protocol::Http1).then(|| Mutex::new(None)),
            begun: AtomicU64::new(0),
        }
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
        let slot = self.upgrade.as_ref()?;
        let (tx, rx) = oneshot::channel();
        *slot.lock().expect("upgrade lock") = Some(tx);
        Some(rx)
    }

    /// Hands `io` to the upgrade waiting for it; gives it back if none does.
    pub(super) fn upgraded(&self, io: Prefixed) -> Result<(), Prefixed> {
        let waiting = self
            .upgrade
            .as_ref()
            .and_then(|slot| slot.lock().expect("upgrade lock").take());
        match waiting {
            Some(tx) => tx.send(io),
            None => Err(io),
        }
    }
}

impl HttpProxy {
    /// Serves one client connection until it ends, or until `close` asks it
    /// to finish gracefully.
    ///
    /// A connection with no request in progress is closed once the header
    /// read timeout passes without a request's headers: from accept (so a
    /// browser's preconnected socket that never sends a byte is not held
    /// open as work) and from the end of each response.
    pub async fn serve_connection(
        self: Arc<Self>,
        mut stream: Stream,
        peer: Peer,
        close: CancellationToken,
        first_request: InFlightGuard,
        span: tracing::Span,
    ) {
        let header_wait = self.settings.header_read_timeout;
        let first = first_bytes(&mut stream, header_wait, &close);
        let Some((protocol, first)) = first.instrument(span.clone()).await else {
            return;
        };
        let client = Arc::new(ClientConnection::new(protocol, first_request));
        // This connection's own requests, from their headers to the end of
        // their responses: what the header read timeout waits for.
        let requests = InFlight::new();
        let service = self.service(peer, &close, &requests, &client, &span);
        let io = Prefixed::new(first, stream);
        match protocol {
            // Boxed: an HTTP/2 connection's state is large, and would be in
            // every connection's task otherwise.
            Protocol::Http2 => {
                Box::pin(self.serve_http2(io, service, &requests, &close, &span)).await
            }
            Protocol::Http1 => {
                self.serve_http1(io, &service, &requests, &close, &span, &client)
                    .await
            }
        }
    }

    /// The service answering a connection's requests.
    fn service(
        self: &Arc<Self>,
        peer: Peer,
        close: &CancellationToken,
        requests: &InFlight,
        client: &Arc<ClientConnection>,
        span: &tracing::Span,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future = Answering,
    > + Clone {
        let this = self.clone();
        let requests = requests.clone();
        let close = close.clone();
        let client = client.clone();
        let span = span.clone();
        service_fn(move |req| {
            let req = detached(req);
            let this = this.clone();
            let first = client.begin();
            let on_connection = requests.enter();
            let rule = this.answer_rule(&req, peer);
            let handled = this
                .handle(
                    req,
                    peer,
                    on_connection,
                    close.clone(),
                    rule,
                    client.clone(),
                )
                .instrument(span.clone());
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
    async fn serve_http2<S>(
        &self,
        io: Prefixed,
        service: S,
        requests: &InFlight,
        close: &CancellationToken,
        span: &tracing::Span,
    ) where
        S: hyper::service::HttpService<Incoming, ResBody = ProxyBody> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let header_wait = self.settings.header_read_timeout;
        let conn = self.http2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = close.cancelled() => {
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

    /// Serves an HTTP/1 connection to its end, parked while it waits long
    /// for a next request, handed to its tunnel when upgraded.
    async fn serve_http1<S>(
        &self,
        mut io: Prefixed,
        service: &S,
        requests: &InFlight,
        close: &CancellationToken,
        span: &tracing::Span,
        client: &ClientConnection,
    ) where
        S: hyper::service::HttpService<Incoming, ResBody = ProxyBody> + Clone + Unpin,
        S::Future: Unpin,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let header_wait = self.settings.header_read_timeout;
        let park_after = PARK_AFTER.min(header_wait);
        // Since when the connection has had no request: the header read
        // timeout runs from there.
        let mut idle_since = Instant::now();
        loop {
            let begun = client.begun();
            // Boxed: what serving takes (hyper's connection, the quiet
            // check) is not kept in the task of a parked connection.
            let served =
                Box::pin(self.serve_until_quiet(io, service.clone(), requests, close, park_after))
                    .await;
            let Ok((back, parking)) = served.inspect_err(|e| {
                span.in_scope(|| tracing::debug!("http connection ended: {e}"));
            }) else {
                return;
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
                // Its last request ended about `park_after` ago.
                idle_since = Instant::now() - park_after;
            }
            // Part of a request may be in already: a new hyper connection
            // goes on reading it once more comes.
            let deadline = idle_since + header_wait;
            if !parked_until(&io, deadline, close, header_wait, span).await {
                let _ = io.shutdown().await;
                return;
            }
        }
    }

    /// Serves `io` in a hyper connection until it ends (false), `close`
    /// asks (false), or its requests have been quiet for `park_after`
    /// (true); gives the socket back, with what was read and not used.
    async fn serve_until_quiet<S>(
        &self,
        io: Prefixed,
        service: S,
        requests: &InFlight,
        close: &CancellationToken,
        park_after: Duration,
    ) -> hyper::Result<(Prefixed, bool)>
    where
        S: hyper::service::HttpService<Incoming, ResBody = ProxyBody> + Unpin,
        S::Future: Unpin,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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
