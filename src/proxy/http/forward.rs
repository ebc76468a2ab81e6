//! Sending a request upstream and answering the client with what came
//! back: the request rewritten for the upstream, sent again when its
//! connection closed without an answer, an agreed upgrade tunnelled.
//! (Its log lines keep the target `idlegate::proxy::http`, where they were
//! written before this file was split out.)

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::either::Either as OneOf;
use tracing::Instrument;

use super::answers::{classify, plain};
use super::client::{Ready, Resend, UpstreamError, UpstreamResponse};
use super::connection::ClientConnection;
use super::headers::{strip_hop_by_hop, wants_upgrade};
use super::io::Counted;
use super::tracked::{RequestLog, Tracked};
use super::tunnel::{tunnel, ClientSide};
use super::{Answer, HttpProxy, ProxyBody, Route, HOLD_FIRST_DELAY, HOLD_MAX_DELAY};
use crate::address::UpstreamProtocol;
use crate::backoff::Backoff;
use crate::proxy::{ConnectError, DEATH_GRACE};
use crate::serve::work::{RequestLine, Unit};

/// The `X-Forwarded-*` names, made once (a name given as a string is
/// copied each time it is inserted).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `X-Forwarded-For`'s value: the one `before` it (if any), then the
/// client's (`client`: its address as the connection wrote it once).
fn forwarded_for(before: Option<&HeaderValue>, client: &HeaderValue) -> HeaderValue {
    let Some(before) = before else {
        return client.clone();
    };
    let mut value = Vec::with_capacity(before.len() + 2 + client.len());
    value.extend_from_slice(before.as_bytes());
    value.extend_from_slice(b", ");
    value.extend_from_slice(client.as_bytes());
    // Two valid values joined by `, ` are a valid value.
    HeaderValue::from_maybe_shared(Bytes::from(value)).unwrap_or_else(|_| client.clone())
}

impl HttpProxy {
    /// Sends `req` upstream (once more after a backend death, when it can
    /// be) and hands its response back, an upgrade tunnelled. (Not an
    /// `async fn`: the request, its record and its client would be kept in
    /// its future twice, as its arguments and as its locals.)
    pub(super) fn forward(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        log: RequestLog,
        client: Arc<ClientConnection>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        let peer = client.peer;
        let upgrade = wants_upgrade(&req);
        if upgrade && self.protocol == UpstreamProtocol::H2c {
            let why = "an upgrade (WebSocket, CONNECT) cannot be forwarded to an h2c upstream";
            // Called before the request's future is first polled (in its
            // span): the span is entered for the line.
            client.span.in_scope(|| {
                tracing::warn!(
                    target: "idlegate::proxy::http",
                    "{} {}: {why}",
                    log.method,
                    log.path
                )
            });
            let answer = self.local(plain(StatusCode::NOT_IMPLEMENTED, why.into()), log);
            return OneOf::Left(std::future::ready(answer));
        }
        let client_upgrade = upgrade.then(|| (hyper::upgrade::on(&mut req), RequestLine::of(&req)));
        let is_connect = req.method() == Method::CONNECT;
        let req = self.upstream_request(req, client.forwarded_for(), upgrade);
        let bodiless = !upgrade && req.body().is_end_stream();
        // While the backend has just started, a short body is read whole
        // first, so that the request can be held and sent again as a
        // bodiless one is (a port forwarder may close on it).
        let keep = !bodiless && !upgrade && !self.backend.has_answered() && Resend::can_keep(&req);
        let counted = log.entry();
        let req = req.map(|body| match bodiless {
            true => Either::Right(Full::default()),
            false => Either::Left(Counted {
                inner: body,
                work: counted,
            }),
        });
        let wire = matches!(self.route, Route::Http1(_));
        let deadline = log.started + self.backend.start_timeout();
        let generation = self.backend.generation();
        OneOf::Right(async move {
            let (req, again) = match keep {
                false => {
                    let req = Ready::of(req, wire);
                    let again = bodiless.then(|| Resend::of(&req));
                    (req, again)
                }
                // Boxed: rare (a body at a cold start), and large.
                true => match Box::pin(Resend::keep(req, wire)).await {
                    Ok(kept) => (kept.ready(), Some(kept)),
                    Err(e) => {
                        let why = format!("the request's body could not be read: {e}");
                        tracing::info!(
                            target: "idlegate::proxy::http",
                            "{} {}: {why}",
                            log.method,
                            log.path
                        );
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
                client: &client,
            };
            self.answer(sent, answer, log)
        })
    }

    /// The client's response to what the upstream said (or why it said
    /// nothing), an agreed upgrade's tunnel started.
    pub(super) fn answer(
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
                self.backend.mark_answered();
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
                            None => {
                                tracing::debug!(
                                    target: "idlegate::proxy::http",
                                    "upgrade failed upstream: no connection to hand over"
                                )
                            }
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
                tracing::warn!(
                    target: "idlegate::proxy::http",
                    "{} {}: {why}",
                    log.method,
                    log.path
                );
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
    pub(super) async fn send_again(
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
                        target: "idlegate::proxy::http",
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
                    .send(again.ready(), true, Some(generation), deadline)
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
            sent = self.send(again.ready(), true, None, deadline).await;
        }
        if let (Some((_, tries)), Ok(_)) = (&held, &sent) {
            tracing::debug!(
                target: "idlegate::proxy::http",
                "{} {}: answered after {tries} more tries",
                log.method,
                log.path
            );
        }
        match (resent, self.backend.generation() != generation) {
            (false, _) => {}
            (true, true) => {
                tracing::info!(
                    target: "idlegate::proxy::http",
                    "{} {}: the backend died as the request reached it; sent it again to the restarted backend",
                    log.method,
                    log.path
                )
            }
            (true, false) => {
                tracing::debug!(
                    target: "idlegate::proxy::http",
                    "{} {}: the upstream closed the connection as the request reached it; sent it again on a new connection",
                    log.method,
                    log.path
                )
            }
        }
        sent
    }

    /// Sends `req` upstream (on a new connection if `fresh`, only to start
    /// `run` of the backend if given).
    /// (Not an `async fn`: the request would be kept in its future beside
    /// the route's own, which takes it over.)
    pub(super) fn send(
        &self,
        req: Ready,
        fresh: bool,
        run: Option<u64>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Response<UpstreamResponse>, UpstreamError>> + Send + '_ {
        match (&self.route, req) {
            (Route::Http1(pool), Ready::Wire(out)) => {
                OneOf::Left(pool.send(out, fresh, run, deadline))
            }
            (Route::H2c(client), Ready::Request(req)) => {
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
            (_, req) => unreachable!("{req:?} was made ready for another route"),
        }
    }

    /// Rewrites a client request for the upstream: HTTP/1.1, absolute URI for
    /// the pool, Host as the client sent it, hop-by-hop headers out,
    /// `X-Forwarded-*` in (`client_ip`: the client's address for
    /// `X-Forwarded-For`, if it has one).
    pub(super) fn upstream_request(
        &self,
        mut req: Request<Incoming>,
        client_ip: Option<&HeaderValue>,
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
        self.rewrite_uri(&mut req, host.as_ref(), h2c);
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
            if let Some(client) = client_ip {
                let value = forwarded_for(headers.get(&X_FORWARDED_FOR), client);
                headers.insert(X_FORWARDED_FOR, value);
            }
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            if let Some(host) = host {
                headers.insert(X_FORWARDED_HOST, host);
            }
        }
        req
    }

    /// The request's target in the form the upstream connection wants: the
    /// authority form for CONNECT, the absolute form for h2c, the origin
    /// form for HTTP/1.1.
    fn rewrite_uri(&self, req: &mut Request<Incoming>, host: Option<&HeaderValue>, h2c: bool) {
        if req.method() == Method::CONNECT {
            // The authority form, as it came.
        } else if h2c {
            // The absolute form hyper-util's client wants, whose authority
            // becomes the `:authority`.
            let authority = host
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
    }
}
