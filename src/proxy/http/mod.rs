//! HTTP mode: idlegate speaks HTTP/1.1 and h2c to clients and HTTP/1.1 (its
//! own pool) or h2c to the upstream, so it can tell an idle keep-alive
//! connection from work.
//!
//! A request is in flight from its arrival until its response body is fully
//! sent: the guard lives in the response body. An upgraded connection
//! (WebSocket, CONNECT) is in flight for its whole life. An open keep-alive
//! connection with no request is not in flight, so it never delays idle exit;
//! at exit it is closed gracefully (HTTP/1 close when idle, HTTP/2 GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::either::Either as OneOf;
use tokio_util::sync::CancellationToken;

use super::ConnectError;
use crate::address::{Address, UpstreamProtocol};
use crate::backend::Backend;
use crate::config::HttpSettings;
use crate::net::Peer;
use crate::serve::activity::{InFlight, InFlightGuard};
use crate::serve::work::{RequestLine, Unit};
use crate::wake::refused::HeldMode;
use crate::wake::{self, WakeGate, When};

mod answers;
mod client;
mod connection;
mod forward;
mod headers;
mod io;
mod tracked;
mod tunnel;
mod waiting;

use answers::{plain, refused_while_starting, rule_answer, status_for};
use client::UpstreamPool;
pub use client::{
    Lease, UpstreamBody, UpstreamConnection, UpstreamConnector, UpstreamResponse, HOLD_BODY_MAX,
};
use connection::ClientConnection;
use headers::accepts_html;
pub use io::{Counted, Prefixed};
pub use tracked::{RequestLog, Tracked};
pub use waiting::EventStream;

/// The first delay before a request held for a backend that has just
/// started is sent again (see [`HttpProxy::send_again`]); it doubles up to
/// [`HOLD_MAX_DELAY`], so an app that comes up is reached within 50 ms
/// without a connection per millisecond meanwhile.
const HOLD_FIRST_DELAY: Duration = Duration::from_millis(2);
/// The longest delay between two sends of a held request.
const HOLD_MAX_DELAY: Duration = Duration::from_millis(50);
/// How long an idle pooled h2c connection to the upstream is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client that got the waiting page counts as work: it is
/// expected back with its event stream or its reload, and must not find
/// idlegate gone (and the backend it woke stopped) when it comes.
const WAITING_PAGE_HOLD: Duration = Duration::from_secs(waiting::RELOAD_SECS + 2);

/// The body of every response idlegate sends: the upstream's, or its own
/// (an answer, or the waiting page's event stream).
pub type ProxyBody = Tracked<Either<UpstreamResponse, Either<Full<Bytes>, EventStream>>>;

/// A request being answered (boxed: hyper takes an HTTP/1 connection back
/// from a service whose futures can move).
type Answering = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// How requests reach the upstream.
enum Route {
    /// HTTP/1.1 on idlegate's own pool, each connection driven by the
    /// client task whose request uses it.
    Http1(Arc<UpstreamPool>),
    /// h2c through hyper-util's pooled client (a connection's streams are
    /// many clients' requests at once: it drives itself).
    H2c(Box<Client<UpstreamConnector, UpstreamBody>>),
}

/// Forwards HTTP for one route: the server side for clients and a pool of
/// connections to the upstream.
pub struct HttpProxy {
    route: Route,
    /// The server side for HTTP/1 clients and for HTTP/2 ones.
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    backend: Backend,
    in_flight: InFlight,
    settings: HttpSettings,
    /// The authority put in upstream URIs; the pool has one upstream anyway.
    authority: String,
    /// One permit per request that may be under way upstream
    /// (`--upstream-connections-max`): a request beyond them waits here, not
    /// in the pool, where each waiter would start a connect of its own.
    upstream_requests: Arc<Semaphore>,
    /// The upstream, for messages.
    upstream: Address,
    /// HTTP/1.1 or h2c to it.
    protocol: UpstreamProtocol,
    /// The answer rules.
    wake: Arc<WakeGate>,
    /// Since when clients wait for the current start, for the waiting page.
    waiting_since: waiting::WaitClock,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be forwarded to a cold backend.
enum NotReady {
    /// The client waited past the threshold: it gets the waiting page.
    WaitingPage,
    /// The start failed or timed out: this answer says so.
    Failed(Response<Full<Bytes>>),
    /// `--hold-max` requests are held for the start already.
    Refused(crate::backend::hold::HoldRefused),
}

/// What the answer to a forwarded request needs besides the response.
struct Answer<'a> {
    /// The client's side of an upgrade it asked for, and its request line.
    client_upgrade: Option<(hyper::upgrade::OnUpgrade, RequestLine)>,
    /// Whether it was a `CONNECT` (a `2xx` agrees to the tunnel).
    is_connect: bool,
    peer: Peer,
    client: &'a ClientConnection,
}

impl HttpProxy {
    /// Builds the proxy for one route.
    pub fn new(
        upstream: Address,
        protocol: UpstreamProtocol,
        backend: Backend,
        in_flight: InFlight,
        settings: HttpSettings,
        wake: Arc<WakeGate>,
    ) -> Arc<HttpProxy> {
        let authority = match &upstream {
            Address::Tcp { text, .. } if text.parse::<http::uri::Authority>().is_ok() => {
                text.clone()
            }
            _ => "upstream".to_owned(),
        };
        let connector = UpstreamConnector {
            backend: backend.clone(),
            upstream: upstream.clone(),
            slots: Arc::new(Semaphore::new(settings.upstream_connections_max)),
        };
        let route = match protocol {
            UpstreamProtocol::Http1 => Route::Http1(UpstreamPool::new(connector)),
            // Prior knowledge, every request a stream of one connection.
            UpstreamProtocol::H2c => Route::H2c(Box::new(
                Client::builder(TokioExecutor::new())
                    .set_host(false)
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .http2_only(true)
                    .build(connector),
            )),
        };
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192));
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
        Arc::new(HttpProxy {
            route,
            http1,
            http2,
            backend,
            in_flight,
            upstream_requests: Arc::new(Semaphore::new(settings.upstream_connections_max)),
            upstream,
            protocol,
            settings,
            authority,
            wake,
            waiting_since: waiting::WaitClock::default(),
        })
    }

    /// The `[[answer]]` rule `req` from `peer` matches, by its index.
    fn answer_rule(&self, req: &Request<Incoming>, peer: Peer) -> Option<usize> {
        if self.wake.settings.answers.is_empty() {
            return None;
        }
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let (method, path) = (req.method().as_str(), req.uri().path());
        wake::first_match(&self.wake.settings.answers, method, path, agent, peer)
    }

    /// Answers `req` from `client`: by an `[[answer]]` rule, or upstream once
    /// the backend is ready and the request has a turn there.
    ///
    /// Not an `async fn`: what a request's future holds (it is boxed per
    /// request) is what forwarding it needs, and nothing twice. A request
    /// that must wait for the backend or for a turn upstream is the rare
    /// case, boxed apart.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        on_connection: InFlightGuard,
        rule: Option<usize>,
        client: Arc<ClientConnection>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        let started = Instant::now();
        let rule = rule.map(|i| &self.wake.settings.answers[i]);
        let mut log = RequestLog {
            // A request a rule matches is never work: a monitor's probe
            // keeps no backend up.
            _in_flight: rule.is_none().then(|| {
                self.in_flight.enter_as(Unit::Request {
                    client: client.peer,
                    what: RequestLine::of(&req),
                })
            }),
            _on_connection: on_connection,
            upstream_turn: None,
            method: req.method().clone(),
            path: tracked::Target(req.uri().clone()),
            // Until a response exists: the client went away first (nginx's 499).
            status: 499,
            started,
            span: client.span.clone(),
        };
        if let Some(rule) = rule {
            if rule.when == When::Always || !self.backend.is_ready() {
                self.wake.count_answered();
                client.span.in_scope(|| {
                    tracing::debug!(
                        "{} {}: answered by the rule {}",
                        log.method,
                        log.path,
                        rule.describe()
                    )
                });
                return OneOf::Left(std::future::ready(self.local(rule_answer(rule), log)));
            }
        }
        if self.backend.is_ready() {
            // A turn upstream (HTTP/1.1: one connection per request under
            // way) free now.
            if let Ok(turn) = self.upstream_requests.clone().try_acquire_owned() {
                log.upstream_turn = Some(turn);
                return OneOf::Right(OneOf::Left(self.forward(req, log, client)));
            }
        }
        OneOf::Right(OneOf::Right(Box::pin(
            self.wait_then_forward(req, log, client),
        )))
    }

    /// Waits for a cold backend, then for a turn upstream, within the start
    /// timeout, and forwards `req`.
    async fn wait_then_forward(
        self: Arc<Self>,
        req: Request<Incoming>,
        mut log: RequestLog,
        client: Arc<ClientConnection>,
    ) -> Response<ProxyBody> {
        let started = log.started;
        if !self.backend.is_ready() {
            let peer = client.peer;
            self.wake
                .waking(|| format!("{peer}: {} {}", log.method, log.path));
            if self.settings.waiting_page.is_some() && req.uri().path() == waiting::EVENTS_PATH {
                return self.waiting_events(started, client.close.clone(), log);
            }
            match self.wait_for_backend(&req, started).await {
                Ok(()) => {}
                Err(NotReady::WaitingPage) => {
                    self.expect_reload(client.close.clone(), peer);
                    return self.local(self.waiting_page(&req, started), log);
                }
                Err(NotReady::Refused(refused)) => return self.refuse(refused, &req, started, log),
                Err(NotReady::Failed(resp)) => return self.local(resp, log),
            }
        }
        // Wait for a turn upstream (HTTP/1.1: one connection per request
        // under way), within the start timeout.
        let turn = self.upstream_requests.clone().acquire_owned();
        match tokio::time::timeout_at(started + self.backend.start_timeout(), turn).await {
            Ok(Ok(turn)) => log.upstream_turn = Some(turn),
            _ => {
                let why = ConnectError::NoFreeConnection {
                    upstream: self.upstream.clone(),
                };
                tracing::warn!("{} {}: {why}", log.method, log.path);
                return self.local(plain(StatusCode::GATEWAY_TIMEOUT, why.to_string()), log);
            }
        }
        self.forward(req, log, client).await
    }

    /// Waits for a cold backend; an HTML client that waited past the
    /// threshold gets the waiting page instead, when it is enabled, and one
    /// beyond `--hold-max` is refused.
    async fn wait_for_backend(
        &self,
        req: &Request<Incoming>,
        started: Instant,
    ) -> Result<(), NotReady> {
        // Held (and counted for --hold-max) until the wait ends.
        let _hold = self.backend.hold().map_err(NotReady::Refused)?;
        let deadline = started + self.backend.start_timeout();
        let wait = self.backend.wait_ready(deadline);
        let result = match self
            .settings
            .waiting_page
            .filter(|_| accepts_html(req.headers()))
        {
            Some(after) => tokio::select! {
                result = wait => result,
                _ = tokio::time::sleep_until(started + after) => return Err(NotReady::WaitingPage),
            },
            None => wait.await,
        };
        result.map_err(|e| {
            tracing::warn!("{} {}: {e}", req.method(), req.uri());
            NotReady::Failed(plain(status_for(&e), e.to_string()))
        })
    }

    /// A request beyond `--hold-max` while the backend starts: 503 with
    /// `Retry-After` at once; an HTML client gets the waiting page (a 503
    /// with `Retry-After` too), when it is enabled.
    fn refuse(
        &self,
        refused: crate::backend::hold::HoldRefused,
        req: &Request<Incoming>,
        arrived: Instant,
        log: RequestLog,
    ) -> Response<ProxyBody> {
        self.wake.refused.refuse(HeldMode::Http, refused.max);
        tracing::debug!("{} {}: refused: {refused}", log.method, log.path);
        if self.settings.waiting_page.is_some() && accepts_html(req.headers()) {
            return self.local(self.waiting_page(req, arrived), log);
        }
        self.local(refused_while_starting(refused, waiting::RELOAD_SECS), log)
    }

    /// Counts a client that got the waiting page as work, and as waiting
    /// for the start, until its reload is due (a stop request ends that at
    /// once).
    fn expect_reload(&self, close: CancellationToken, client: Peer) {
        let expected = (
            self.in_flight.enter_as(Unit::WaitingPage { client }),
            self.backend.watch_start(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(WAITING_PAGE_HOLD) => {}
                _ = close.cancelled() => {}
            }
            drop(expected);
        });
    }

    /// The waiting page for `req`, which arrived at `arrived`.
    fn waiting_page(&self, req: &Request<Incoming>, arrived: Instant) -> Response<Full<Bytes>> {
        let since = self.waiting_since.since(self.backend.generation(), arrived);
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host());
        let service = waiting::service_name(self.settings.service_name.as_deref(), host);
        waiting::page(
            self.settings.waiting_page_template.as_deref(),
            service,
            waiting::Wait {
                waited: since.elapsed(),
                expected: self.backend.expected_start(),
            },
            &waiting::progress(&self.backend),
        )
    }

    /// The waiting page's event stream, answered here while the backend is
    /// not ready; the request is work until the stream ends.
    fn waiting_events(
        &self,
        arrived: Instant,
        close: CancellationToken,
        mut log: RequestLog,
    ) -> Response<ProxyBody> {
        let since = self.waiting_since.since(self.backend.generation(), arrived);
        let resp = waiting::events(self.backend.clone(), since, close);
        log.status = resp.status().as_u16();
        resp.map(|body| Tracked {
            inner: Either::Right(Either::Right(body)),
            log: Some(log),
        })
    }

    fn local(&self, resp: Response<Full<Bytes>>, mut log: RequestLog) -> Response<ProxyBody> {
        log.status = resp.status().as_u16();
        resp.map(|body| Tracked {
            inner: Either::Right(Either::Left(body)),
            log: Some(log),
        })
    }
}
