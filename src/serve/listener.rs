//! The accept loop of one socket: take a connection slot, accept, hand the
//! connection to its own task in the socket's mode. It survives accept
//! errors (EMFILE backs off and logs) and always stops when told.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::address::{Mode, UpstreamSpec};
use crate::backoff::Backoff;
use crate::config::HttpSettings;
use crate::net::{Listener, Peer, Stream, StreamListener};
use crate::proxy;
use crate::proxy::http::HttpProxy;
use crate::proxy::udp::UdpForwarder;
use crate::serve::context::ServeContext;
use crate::serve::work::Unit;

/// One socket and where its clients go.
pub type Route = crate::activation::Route<Listener>;

/// How a stream socket's connections are forwarded.
#[derive(Clone, Debug)]
pub enum Forwarder {
    /// Bytes both ways; the connection is the unit of work.
    Tcp,
    /// HTTP; the request is the unit of work.
    Http(Arc<HttpProxy>),
}

impl Forwarder {
    /// How to forward a stream's connections to `upstream`, by its mode.
    pub fn new(upstream: &UpstreamSpec, shared: &ServeContext, http: &HttpSettings) -> Forwarder {
        match upstream.mode {
            Mode::Tcp => Forwarder::Tcp,
            Mode::Http => Forwarder::Http(HttpProxy::new(
                upstream.address.clone(),
                upstream.protocol,
                shared.backend.clone(),
                shared.in_flight.clone(),
                http.clone(),
                shared.wake.clone(),
            )),
        }
    }
}

/// A socket and how its clients are served, by the kind of socket.
#[derive(Debug)]
pub enum Clients {
    /// A stream socket: connections to accept, each forwarded.
    Stream {
        /// The socket the connections arrive on.
        listener: StreamListener,
        /// How each is forwarded.
        forwarder: Forwarder,
    },
    /// A datagram socket: datagrams to read, per client flow; a live flow is
    /// the unit of work.
    Datagram {
        /// The socket the datagrams arrive on and replies leave from.
        socket: Arc<UdpSocket>,
        /// Its flows, to the `udp:` upstream.
        flows: Arc<UdpForwarder>,
    },
}

impl Clients {
    /// How to serve `listener`'s clients: a UDP socket (activation pairs it
    /// with a `udp:` upstream) by flows, a stream socket by its upstream's mode.
    fn of(
        listener: Listener,
        upstream: &UpstreamSpec,
        shared: &ServeContext,
        http: &HttpSettings,
    ) -> Clients {
        match listener {
            Listener::Datagram(socket) => Clients::Datagram {
                socket,
                flows: Arc::new(UdpForwarder::new(
                    upstream.address.clone(),
                    upstream.proxy_protocol.is_some(),
                )),
            },
            Listener::Stream(listener) => Clients::Stream {
                listener,
                forwarder: Forwarder::new(upstream, shared, http),
            },
        }
    }
}

/// A socket, its upstream, and how its clients are served.
#[derive(Debug)]
pub struct Endpoint {
    /// Where its traffic goes, and how.
    pub upstream: UpstreamSpec,
    /// How logs name the socket: `fd 3 (http)` or the `--listen` address.
    pub label: String,
    /// The socket and how its clients are served, ready to use.
    pub clients: Clients,
}

impl Endpoint {
    /// The endpoints of `routes`, each with how its clients are served.
    pub fn all(
        routes: Vec<Route>,
        shared: &ServeContext,
        http: &HttpSettings,
    ) -> Vec<Arc<Endpoint>> {
        routes
            .into_iter()
            .map(|route| {
                Arc::new(Endpoint {
                    clients: Clients::of(route.listener, &route.upstream, shared, http),
                    upstream: route.upstream,
                    label: route.label,
                })
            })
            .collect()
    }
}

/// Serves `endpoint` until `stop` is cancelled: accepts its clients, or for a
/// UDP socket reads its datagrams.
pub async fn accept_loop(endpoint: Arc<Endpoint>, shared: ServeContext, stop: CancellationToken) {
    match &endpoint.clients {
        Clients::Datagram { socket, flows } => {
            let label = endpoint.label.clone();
            flows
                .clone()
                .serve(socket.clone(), label, shared, stop)
                .await
        }
        Clients::Stream {
            listener,
            forwarder,
        } => accept_streams(&endpoint, listener, forwarder, shared, stop).await,
    }
}

/// Accepts a stream socket's clients until `stop` is cancelled, each served
/// by `forwarder` in a task of its own.
async fn accept_streams(
    endpoint: &Arc<Endpoint>,
    listener: &StreamListener,
    forwarder: &Forwarder,
    shared: ServeContext,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::resources();
    let label = &endpoint.label;
    loop {
        // Take a slot before accepting: at the limit, clients wait in the
        // kernel's backlog instead of being accepted and reset.
        let slot = tokio::select! {
            slot = shared.slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = Backoff::resources();
                let connection = shared.connections.enter();
                tracing::debug!(target: "idlegate::listener", "client {peer} on {label}");
                // The future is spawned as it is (awaited in a task's
                // async block, it would be there twice: task size).
                tokio::spawn(serve_client(
                    forwarder,
                    RouteUpstream(endpoint.clone()),
                    client,
                    peer,
                    &shared,
                    (connection, slot),
                ));
            }
            Err(e) => {
                let go_on = backoff
                    .survive(
                        &e,
                        &stop,
                        |delay| {
                            tracing::warn!(target: "idlegate::listener",
                                "accept on {label} failed: {e}; pausing {}ms",
                                delay.as_millis()
                            )
                        },
                        || {
                            tracing::debug!(target: "idlegate::listener", "accept on {label} failed: {e}")
                        },
                    )
                    .await;
                if !go_on {
                    return;
                }
            }
        }
    }
}

/// A route's upstream, held through its endpoint: nothing is copied per
/// connection.
struct RouteUpstream(Arc<Endpoint>);

impl AsRef<UpstreamSpec> for RouteUpstream {
    fn as_ref(&self) -> &UpstreamSpec {
        &self.0.upstream
    }
}

/// Serves one client connection to its end in `forwarder`'s mode: what the
/// accept loop spawns for each connection and what an `Accept=yes` run
/// awaits. The connection counts as work from this call on (taken before any
/// await, so an idle exit that looks right after the accept sees it): in TCP
/// mode for its whole life, in HTTP mode until its first request is answered
/// (then each request counts for itself). `held` is dropped once the
/// client is served.
pub fn serve_client(
    forwarder: &Forwarder,
    upstream: impl AsRef<UpstreamSpec> + Send + 'static,
    client: Stream,
    peer: Peer,
    shared: &ServeContext,
    held: impl Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let work = shared.in_flight.enter_as(match forwarder {
        Forwarder::Http(_) => Unit::HttpConnection { client: peer },
        Forwarder::Tcp => Unit::Connection { client: peer },
    });
    // Every line about this client carries it: `client{peer=…}:`.
    let span = tracing::info_span!(target: "idlegate::listener", "client", %peer);
    // A future per mode, each holding only what it uses: a connection's task
    // is as large as its future for as long as the connection lives.
    let served = match forwarder {
        Forwarder::Tcp => {
            let proxy_header = upstream
                .as_ref()
                .proxy_protocol
                .map(|v| proxy::proxy_protocol::header(v, client.tcp_addresses()));
            let backend = shared.backend.clone();
            let quiet_limit = shared.live().connection_idle;
            let wake = shared.wake.clone();
            Either::Left(async move {
                // Captured (not moved into a local, which would be a
                // second copy), and so dropped when the client is served.
                let _ = &held;
                let tcp = proxy::tcp::TcpClient {
                    upstream: &upstream.as_ref().address,
                    backend: &backend,
                    quiet_limit,
                    proxy_header: proxy_header.as_deref(),
                    wake: &wake,
                    peer,
                    traffic: work.traffic(),
                };
                // Boxed: its copy buffers would size every connection's
                // task, HTTP mode's too.
                if Box::pin(tcp.serve(client).instrument(span)).await {
                    drop(work);
                } else {
                    work.void();
                }
            })
        }
        Forwarder::Http(http) => {
            let (http, close) = (http.clone(), shared.close.clone());
            // Not wrapped in an async block: what it captured would be in
            // the task twice. The span is entered only where a line is
            // logged, not at every poll of the connection (a measurable cost
            // in HTTP mode).
            Either::Right(http.serve_connection(client, peer, close, work, span, held))
        }
    };
    served
}
