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
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::either::Either as OneOf;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{ConnectError, DEATH_GRACE};
use crate::address::{Address, UpstreamProtocol};
use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::config::HttpSettings;
use crate::net::Peer;
use crate::serve::activity::{InFlight, InFlightGuard};
use crate::serve::work::{RequestLine, Unit};
use crate::wake::{self, WakeGate, When};

mod answers;
mod connection;
mod headers;
mod http1_conn;
mod pool;
mod tracked;
mod tunnel;
mod upstream;
mod waiting;
mod wire;

use answers::{classify, plain, rule_answer, status_for};
use connection::ClientConnection;
pub use connection::Prefixed;
use headers::{accepts_html, strip_hop_by_hop, wants_upgrade};
use pool::UpstreamPool;
pub use pool::{Lease, UpstreamResponse};
pub use tracked::{Counted, RequestLog, Tracked};
use tunnel::{tunnel, ClientSide};
use upstream::{Resend, UpstreamError};
pub use upstream::{UpstreamConnection, UpstreamConnector, HOLD_BODY_MAX};
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

/// The body of a request sent upstream: the client's as it comes, or one
/// kept whole (none at all, or a short one read first), which can be sent
/// again.
pub type UpstreamBody = Either<Counted<Incoming>, Full<Bytes>>;

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

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
        on_connection: InFlightGuard,
        close: CancellationToken,
        rule: Option<usize>,
        client: Arc<ClientConnection>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let rule = rule.map(|i| &self.wake.settings.answers[i]);
        let mut log = RequestLog {
            // A request a rule matches is never work: a monitor's probe
            // keeps no backend up.
            _in_flight: rule.is_none().then(|| {
                self.in_flight.enter_as(Unit::Request {
                    client: peer,
                    what: RequestLine::of(&req),
                })
            }),
            _on_connection: on_connection,
            upstream_turn: None,
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| req.uri().to_string()),
            // Until a response exists: the client went away first (nginx's 499).
            status: 499,
            started,
            span: tracing::Span::current(),
        };
        if let Some(rule) = rule {
            if rule.when == When::Always || !self.backend.is_ready() {
                self.wake.count_answered();
                tracing::debug!(
                    "{} {}: answered by the rule {}",
                    log.method,
                    log.path,
                    rule.describe()
                );
                return self.local(rule_answer(rule), log);
            }
        }
        if !self.backend.is_ready() {
            self.wake
                .waking(|| format!("{peer}: {} {}", log.method, log.path));
            if self.settings.waiting_page.is_some() && req.uri().path() == waiting::EVENTS_PATH {
                return self.waiting_events(started, close, log);
            }
            // Boxed, as the other paths taken rarely: what a request's
            // future holds while it waits upstream stays small.
            match Box::pin(self.wait_for_backend(&req, started)).await {
                Ok(()) => {}
                Err(NotReady::WaitingPage) => {
                    self.expect_reload(close, peer);
                    return self.local(self.waiting_page(&req, started), log);
                }
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
        self.forward(req, peer, log, &client).await
    }

    /// Sends `req` upstream (once more after a backend death, when it can
    /// be) and hands its response back, an upgrade tunnelled. (Not an
    /// `async fn`: the request, its record and its client would be kept in
    /// its future twice, as its arguments and as its locals.)
    fn forward<'a>(
        &'a self,
        mut req: Request<Incoming>,
        peer: Peer,
        log: RequestLog,
        client: &'a ClientConnection,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'a {
        let upgrade = wants_upgrade(&req);
        if upgrade && self.protocol == UpstreamProtocol::H2c {
            let why = "an upgrade (WebSocket, CONNECT) cannot be forwarded to an h2c upstream";
            tracing::warn!("{} {}: {why}", log.method, log.path);
            let answer = self.local(plain(StatusCode::NOT_IMPLEMENTED, why.into()), log);
            return OneOf::Left(std::future::ready(answer));
        }
        let client_upgrade = upgrade.then(|| (hyper::upgrade::on(&mut req), RequestLine::of(&req)));
        let is_connect = req.method() == Method::CONNECT;
        let req = self.upstream_request(req, peer, upgrade);
        let again = (!upgrade).then(|| Resend::of(&req)).flatten();
        // While the backend has just started, a short body is read whole
        // first, so that the request can be held and sent again as a
        // bodiless one is (a port forwarder may close on it).
        let keep =
            again.is_none() && !upgrade && !self.backend.has_answered() && Resend::can_keep(&req);
        let counted = log.entry();
        let req = req.map(|body| match again {
            Some(_) => Either::Right(Full::default()),
            None => Either::Left(Counted {
                inner: body,
                work: counted,
            }),
        });
        let deadline = log.started + self.backend.start_timeout();
        let generation = self.backend.generation();
        OneOf::Right(async move {
            let (req, again) = match keep {
                false => (req, again),
                // Boxed: rare (a body at a cold start), and large.
                true => match Box::pin(Resend::keep(req)).await {
                    Ok(kept) => (kept.request(), Some(kept)),
                    Err(e) => {
                        let why = format!("the request's body could not be read: {e}");
                        tracing::info!("{} {}: {why}", log.method, log.path);
                        return self.local(plain(StatusCode::BAD_REQUEST, why), log);
                    }
                },
            };
            let mut sent = self.send(req, false, None, deadline).await;
            if let (Err(_), Some(again)) = (&sent, &again) {
                sent = Box::pin(self.send_again(sent, again, generation, deadline, &log)).await;
            }
            let answer = Answer {
                client_upgrade,
                is_connect,
                peer,
                client,
            };
            self.answer(sent, answer, log)
        })
    }

    /// The client's response to what the upstream said (or why it said
    /// nothing), an agreed upgrade's tunnel started.
    fn answer(
        &self,
        sent: Result<Response<UpstreamResponse>, UpstreamError>,
        answer: Answer<'_>,
        mut log: RequestLog,
    ) -> Response<ProxyBody> {
        let Answer {
            client_upgrade,
            is_connect,
            peer,
            client,
        } = answer;
        match sent {
            Ok(mut resp) => {
                if !self.backend.has_answered() {
                    self.backend.mark_answered();
                }
                let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    || (is_connect && resp.status().is_success());
                match client_upgrade {
                    Some((client_upgrade, what)) if switched => {
                        // Only an HTTP/1.1 upstream takes upgrades, and its
                        // agreeing answer always hands the connection over.
                        match resp.body_mut().upgraded() {
                            Some(upstream) => {
                                let work = self
                                    .in_flight
                                    .enter_as(Unit::Upgrade { client: peer, what });
                                let client_side = match client.expect_upgrade() {
                                    Some(socket) => ClientSide::Socket(socket),
                                    None => ClientSide::Upgrade(client_upgrade),
                                };
                                tokio::spawn(tunnel(client_side, upstream, work).in_current_span());
                            }
                            None => tracing::debug!(
                                "upgrade failed upstream: no connection to hand over"
                            ),
                        }
                        strip_hop_by_hop(resp.headers_mut(), !is_connect);
                    }
                    _ => strip_hop_by_hop(resp.headers_mut(), false),
                }
                log.status = resp.status().as_u16();
                resp.map(|body| Tracked {
                    inner: Either::Left(body),
                    log: Some(log),
                })
            }
            Err(e) => {
                let (status, why) = classify(&e);
                tracing::warn!("{} {}: {why}", log.method, log.path);
                self.local(plain(status, why), log)
            }
        }
    }

    /// Sends a request again on a new connection when its connection closed
    /// without an answer:
    /// - while the backend has just started (nothing upstream has answered
    ///   since its start), with a backoff until `deadline`, any request kept
    ///   whole: a port forwarder (docker-proxy, rootlessport) accepts and
    ///   closes until the app behind it listens, as TCP mode replays (the
    ///   held request never goes to a later start of the backend);
    /// - a bodiless idempotent request at once when the connection was kept
    ///   alive (its close may have raced the request), and, once, to the
    ///   restarted backend when the backend died within the grace (as TCP
    ///   mode replays a client's first bytes). A request sent again at once
    ///   before the backend's death was found out may meet the dying
    ///   backend: the restarted one still gets it.
    async fn send_again(
        &self,
        mut sent: Result<Response<UpstreamResponse>, UpstreamError>,
        again: &Resend,
        generation: u64,
        deadline: Instant,
        log: &RequestLog,
    ) -> Result<Response<UpstreamResponse>, UpstreamError> {
        let (mut after_close, mut to_restarted, mut resent) = (true, true, false);
        let mut held: Option<(Backoff, u32)> = None;
        while let Err(e) = &sent {
            if !e.closed_before_answering() {
                break;
            }
            if self.backend.generation() == generation && !self.backend.has_answered() {
                let (backoff, tries) = held.get_or_insert_with(|| {
                    tracing::info!(
                        "{} {}: {e} while the backend starts (a port forwarder in front of an app not listening yet?); holding the request and sending it again until the start timeout",
                        log.method,
                        log.path
                    );
                    (Backoff::new(HOLD_FIRST_DELAY, HOLD_MAX_DELAY), 0)
                });
                let delay = backoff.next_delay();
                if Instant::now() + delay >= deadline {
                    let upstream = self.upstream.clone();
                    sent = Err(ConnectError::Closing { upstream }.into());
                    break;
                }
                tokio::time::sleep(delay).await;
                *tries += 1;
                sent = self
                    .send(again.request(), true, Some(generation), deadline)
                    .await;
                continue;
            }
            if !again.idempotent() {
                break;
            }
            if e.reused() && after_close {
                after_close = false;
                to_restarted = self.backend.generation() == generation;
            } else if to_restarted && self.backend.left_ready(generation, DEATH_GRACE).await {
                to_restarted = false;
            } else {
                break;
            }
            resent = true;
            sent = self.send(again.request(), true, None, deadline).await;
        }
        if let (Some((_, tries)), Ok(_)) = (&held, &sent) {
            tracing::debug!(
                "{} {}: answered after {tries} more tries",
                log.method,
                log.path
            );
        }
        match (resent, self.backend.generation() != generation) {
            (false, _) => {}
            (true, true) => tracing::info!(
                "{} {}: the backend died as the request reached it; sent it again to the restarted backend",
                log.method,
                log.path
            ),
            (true, false) => tracing::debug!(
                "{} {}: the upstream closed the connection as the request reached it; sent it again on a new connection",
                log.method,
                log.path
            ),
        }
        sent
    }

    /// Sends `req` upstream (on a new connection if `fresh`, only to start
    /// `run` of the backend if given).
    /// (Not an `async fn`: the request would be kept in its future beside
    /// the route's own, which takes it over.)
    fn send(
        &self,
        req: Request<UpstreamBody>,
        fresh: bool,
        run: Option<u64>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Response<UpstreamResponse>, UpstreamError>> + Send + '_ {
        match &self.route {
            Route::Http1(pool) => OneOf::Left(pool.request(req, fresh, run, deadline)),
            Route::H2c(client) => {
                // The pooled client connects by itself: a held request
                // checks the backend's run before it goes, as near as it can.
                let restarted = run.is_some_and(|run| {
                    run != self.backend.generation() || !self.backend.is_ready()
                });
                let sent = client.request(req);
                OneOf::Right(async move {
                    if restarted {
                        return Err(UpstreamError::Restarted);
                    }
                    match sent.await {
                        Ok(resp) => Ok(resp.map(UpstreamResponse::driven)),
                        Err(e) => Err(UpstreamError::Pooled(e)),
                    }
                })
            }
        }
    }

    /// Waits for a cold backend; an HTML client that waited past the
    /// threshold gets the waiting page instead, when it is enabled.
    async fn wait_for_backend(
        &self,
        req: &Request<Incoming>,
        started: Instant,
    ) -> Result<(), NotReady> {
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

    /// Counts a client that got the waiting page as work until its reload
    /// is due (a stop request ends that at once).
    fn expect_reload(&self, close: CancellationToken, client: Peer) {
        let expected = self.in_flight.enter_as(Unit::WaitingPage { client });
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
            since.elapsed(),
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

    /// Rewrites a client request for the upstream: HTTP/1.1, absolute URI for
    /// the pool, Host as the client sent it, hop-by-hop headers out,
    /// `X-Forwarded-*` in.
    fn upstream_request(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        upgrade: bool,
    ) -> Request<Incoming> {
        let host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        // HTTP/2 has no Host header: the client's Host is the :authority
        // (a Host beside it is a duplicate to nginx, a 400).
        let h2c = self.protocol == UpstreamProtocol::H2c;
        if req.method() == Method::CONNECT {
            // The authority form, as it came.
        } else if h2c {
            // The absolute form hyper-util's client wants, whose authority
            // becomes the `:authority`.
            let authority = host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .filter(|h| h.parse::<http::uri::Authority>().is_ok())
                .unwrap_or(&self.authority);
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            if let Ok(uri) = format!("http://{authority}{path}").parse() {
                *req.uri_mut() = uri;
            }
        } else if req.uri().authority().is_some() {
            // The origin form on an HTTP/1.1 connection (an HTTP/2 client's
            // request, or an absolute-form one, says its authority in Host).
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(
                req.uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            );
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        // `TE: trailers` says the client takes trailers: the one TE value a
        // proxy that streams trailers through passes on.
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        strip_hop_by_hop(headers, upgrade);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        match &host {
            _ if h2c => {
                headers.remove(header::HOST);
            }
            Some(host) => {
                headers.insert(header::HOST, host.clone());
            }
            None => {}
        }
        if self.settings.forwarded_headers {
            if let Peer::Tcp(addr) = peer {
                let ip = addr.ip().to_string();
                let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                    Some(before) => format!("{before}, {ip}"),
                    None => ip,
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert("x-forwarded-for", v);
                }
            }
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
            if let Some(host) = host {
                headers.insert("x-forwarded-host", host);
            }
        }
        req
    }
}
