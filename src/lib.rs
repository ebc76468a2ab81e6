//! idlegate: an exit-on-idle reverse proxy sidecar for systemd socket activation.
//!
//! systemd holds the listening sockets and starts idlegate on the first
//! connection. idlegate starts the backend on demand, holds clients until the
//! backend answers, forwards every connection, and once nothing has been in
//! flight for the idle timeout, stops the backend and exits 0 — systemd keeps
//! the sockets, so the next client simply activates it again.
//!
//! # Layout
//! - [`cli`], [`config`]: the command line and the TOML file, merged and validated
//!   before anything starts; [`reload`]: SIGHUP's new settings applied while serving.
//! - [`activation`]: the passed sockets (`LISTEN_FDS`…) or `--listen`, paired with upstreams.
//! - this file: [`run`], the serve-until-idle loop, the idle timer, the drain and
//!   the status reporter; [`context`]: what the accept loops and connections of a
//!   run share.
//! - [`listener`]: the accept loop; [`proxy`]: one connection, held then copied both ways
//!   (or, for a UDP socket, its datagrams by client flow: [`proxy::udp`]; HTTP:
//!   [`proxy::http`]).
//! - [`backend`]: the backend's lifecycle (start, ready, stop), one supervisor task, one
//!   file per kind (a process, `podman run`, a container through [`engine`], hooks), the
//!   ready command and the backend's own notify socket; [`readiness`]: the probe;
//!   [`backoff`]: the delays between retries.
//! - [`activity`]: in-flight guards and the idle timer.
//! - [`shutdown`], [`notify`]: stop requests in, sd_notify out; [`status`]: `STATUS=` and
//!   the state file; [`metrics`]: the Prometheus endpoint.
//! - [`net`], [`address`], [`limits`], `sys`: sockets, addresses, descriptor limits; the
//!   only `unsafe` code is in `sys`.
//!
//! The core, [`run`], takes sockets, a config and a [`Shutdown`]; it never binds,
//! reads the environment or installs signal handlers (that is `main`'s job).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
pub mod activity;
pub mod address;
pub mod backend;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod context;
pub mod engine;
#[cfg(test)]
mod fuzz_support;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod shutdown;
pub mod status;
mod sys;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use activation::RuntimeSockets;
use activity::InFlight;
use backend::{Backend, BackendState};
pub use config::Config;
use context::ServeContext;
use listener::{Endpoint, Forwarder, Route};
pub use notify::Notifier;
use proxy::http::HttpProxy;
use proxy::udp::UdpForwarder;
pub use shutdown::Shutdown;

/// How a run ended (each is exit status 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Nothing was in flight for the idle timeout.
    Idle,
    /// A stop was requested (SIGTERM, SIGINT).
    Stopped,
    /// The single `Accept=yes` connection ended.
    ConnectionDone,
}

/// After the backend stopped for good, how long clients still waiting for it
/// are given to receive their refusal before the process exits.
const FLUSH_GRACE: Duration = Duration::from_millis(500);

/// How often, at most, the status line is refreshed for a change of the
/// in-flight count alone (a change of the backend's state is told at once).
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// Serves `sockets` until idle (activated: exit), a stop request, or the end of
/// an `Accept=yes` connection; the backend is stopped before this returns.
pub async fn run(
    sockets: RuntimeSockets,
    config: Config,
    notifier: Notifier,
    shutdown: Shutdown,
    reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
    metrics: Option<tokio::net::TcpListener>,
) -> Exit {
    let in_flight = InFlight::new();
    let backend = Backend::spawn(reload::backend_spec(&config), in_flight.clone());
    let notifier = Arc::new(notifier);
    let (live_tx, live) = tokio::sync::watch::channel(reload::Live::of(&config));
    let activation = config
        .state_file
        .as_deref()
        .map_or(1, |path| status::previous_activation(path) + 1);
    let (snapshots, latest) = tokio::sync::watch::channel(None);
    if notifier.is_enabled() || config.state_file.is_some() || metrics.is_some() {
        tokio::spawn(report_status(
            notifier.clone(),
            BackendView {
                state: backend.subscribe(),
                status: backend.subscribe_status(),
            },
            in_flight.clone(),
            live.clone(),
            config.state_file.clone(),
            activation,
            snapshots,
        ));
    }
    tokio::spawn(reload::apply_reloads(
        reloads,
        config.clone(),
        backend.clone(),
        live_tx,
        notifier.clone(),
    ));
    let connections = InFlight::new();
    if let Some(listener) = metrics {
        tokio::spawn(metrics::serve(listener, latest, connections.clone()));
    }
    let shared = ServeContext {
        backend: backend.clone(),
        in_flight: in_flight.clone(),
        connections,
        close: CancellationToken::new(),
        slots: Arc::new(Semaphore::new(config.connections_max)),
        live,
    };
    let forwarder = |upstream: &address::UpstreamSpec| match upstream.mode {
        _ if upstream.address.is_udp() => Forwarder::Udp(Arc::new(UdpForwarder::new(
            upstream.address.clone(),
            upstream.proxy_protocol.is_some(),
        ))),
        config::Mode::Tcp => Forwarder::Tcp,
        config::Mode::Http => Forwarder::Http(HttpProxy::new(
            upstream.address.clone(),
            backend.clone(),
            in_flight.clone(),
            config.http.clone(),
        )),
    };
    let endpoints = |routes: Vec<Route>| -> Vec<Arc<Endpoint>> {
        routes
            .into_iter()
            .map(|route| {
                Arc::new(Endpoint {
                    forwarder: forwarder(&route.upstream),
                    route,
                })
            })
            .collect()
    };

    let exit = match sockets {
        activation::Sockets::Connection { stream, upstream } => {
            notifier.ready("serving one connection");
            tracing::info!(
                "serving one passed connection (Accept=yes) to {upstream} ({})",
                upstream.mode
            );
            let peer = stream.peer();
            let connection = shared.connections.enter();
            let served = async {
                match forwarder(&upstream) {
                    Forwarder::Tcp => {
                        let _in_flight = in_flight.enter();
                        let proxy_header = upstream
                            .proxy_protocol
                            .map(|v| proxy::proxy_protocol::header(v, stream.tcp_addresses()));
                        proxy::tcp::serve(
                            stream,
                            peer,
                            &upstream.address,
                            &backend,
                            backend.start_timeout(),
                            shared.live().connection_idle_timeout,
                            proxy_header.as_deref(),
                        )
                        .await
                    }
                    Forwarder::Http(http) => {
                        http.serve_connection(stream, peer, shared.close.clone(), in_flight.enter())
                            .await
                    }
                    Forwarder::Udp(_) => {
                        unreachable!("activation pairs connections with stream upstreams")
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = async {
                    shutdown.requested().await;
                    shared.close.cancel();
                    tokio::select! {
                        _ = tokio::time::sleep(shared.live().stop_timeout) => {}
                        _ = shutdown.hurried() => {}
                    }
                } => {}
            }
            drop(connection);
            Exit::ConnectionDone
        }
        activation::Sockets::Activated(routes) => {
            // A client is already waiting: start the backend while we accept.
            backend.start();
            let endpoints = endpoints(routes);
            announce(&notifier, &endpoints, "socket-activated", &config);
            serve_until_idle(&endpoints, &shared, &shutdown).await
        }
        activation::Sockets::Bound(routes) => {
            let endpoints = endpoints(routes);
            announce(&notifier, &endpoints, "listening", &config);
            serve_and_stop_backend_when_idle(&endpoints, &shared, &shutdown).await
        }
    };

    match exit {
        Exit::Idle => {
            let idle = config.idle_timeout.map(humantime::format_duration);
            tracing::info!(
                "idle for {}: stopping the backend and exiting",
                idle.map(|d| d.to_string()).unwrap_or_default()
            );
            notifier.stopping("idle: stopping the backend and exiting");
        }
        Exit::Stopped | Exit::ConnectionDone => {
            notifier.stopping("stopping the backend and exiting")
        }
    }
    backend.shut_down().await;
    // Requests still waiting for the backend have just been answered (HTTP
    // 503, TCP close): give those answers a moment to reach their clients.
    if shared.connections.count() > 0 {
        let _ = tokio::time::timeout(FLUSH_GRACE, shared.connections.drained()).await;
    }
    if let Some(path) = &config.state_file {
        let last = status::Snapshot {
            pid: std::process::id(),
            running: false,
            backend: backend.state().describe().to_owned(),
            in_flight: 0,
            idle_exit_in: status::IdleExit::Never,
            activation,
        };
        if let Err(e) = status::write(path, &last) {
            tracing::debug!("state file {}: {e}", path.display());
        }
    }
    tracing::info!("exiting");
    exit
}

fn announce(notifier: &Notifier, endpoints: &[Arc<Endpoint>], how: &str, config: &Config) {
    for e in endpoints {
        let upstream = &e.route.upstream;
        let mode = if upstream.address.is_udp() {
            "udp".to_owned()
        } else {
            upstream.mode.to_string()
        };
        tracing::info!("{how}: {} -> {} ({mode})", e.route.label, upstream.address);
    }
    let idle = match config.idle_timeout {
        Some(t) => format!("idle timeout {}", humantime::format_duration(t)),
        None => "no idle timeout".to_owned(),
    };
    notifier.ready(&format!("{how} on {} socket(s); {idle}", endpoints.len()));
}

fn spawn_accept_loops(
    endpoints: &[Arc<Endpoint>],
    shared: &ServeContext,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    endpoints
        .iter()
        .map(|e| {
            tokio::spawn(listener::accept_loop(
                e.clone(),
                shared.clone(),
                stop.child_token(),
            ))
        })
        .collect()
}

async fn stop_accepting(accepting: CancellationToken, loops: Vec<tokio::task::JoinHandle<()>>) {
    accepting.cancel();
    for l in loops {
        let _ = l.await;
    }
}

/// Returns once nothing has been in flight for the idle timeout, as a reload
/// may have changed it meanwhile (a change re-arms the timer).
async fn idle_timer(shared: &ServeContext) {
    let idle = |timeout: Option<Duration>| async move {
        match timeout {
            Some(t) => shared.in_flight.idle(t).await,
            None => std::future::pending().await,
        }
    };
    let mut live = shared.live.clone();
    loop {
        let timeout = live.borrow_and_update().idle_timeout;
        tokio::select! {
            _ = idle(timeout) => return,
            changed = live.changed() => if changed.is_err() {
                // No more reloads: this timeout is final.
                return idle(timeout).await;
            },
        }
    }
}

/// Activated: serve until idle or a stop request. At idle, accepting stops
/// first; work that raced in before that is served and the idle timer starts
/// over, so no accepted client is ever cut off by an idle exit. Idle HTTP
/// keep-alive connections are then closed gracefully.
async fn serve_until_idle(
    endpoints: &[Arc<Endpoint>],
    shared: &ServeContext,
    shutdown: &Shutdown,
) -> Exit {
    loop {
        let accepting = CancellationToken::new();
        let loops = spawn_accept_loops(endpoints, shared, &accepting);
        let idle = tokio::select! {
            _ = idle_timer(shared) => true,
            _ = shutdown.requested() => false,
        };
        stop_accepting(accepting, loops).await;
        if !idle {
            drain(shutdown, shared, shared.live().stop_timeout).await;
            return Exit::Stopped;
        }
        if shared.in_flight.count() == 0 {
            // Nothing in flight: what is open are idle HTTP connections. Close
            // them; a request that races in is still answered before they go.
            drain(shutdown, shared, shared.live().stop_timeout).await;
            return Exit::Idle;
        }
        tracing::debug!("work arrived as the idle timer fired; serving on");
    }
}

/// Bound by `--listen`: idle stops the backend but keeps listening; the next
/// client starts it again.
async fn serve_and_stop_backend_when_idle(
    endpoints: &[Arc<Endpoint>],
    shared: &ServeContext,
    shutdown: &Shutdown,
) -> Exit {
    let accepting = CancellationToken::new();
    let loops = spawn_accept_loops(endpoints, shared, &accepting);
    let mut state = shared.backend.subscribe();
    let idle_stops = async {
        loop {
            // Arm the idle timer only while there is a backend to stop.
            if state
                .wait_for(|s| matches!(s, BackendState::Starting | BackendState::Ready))
                .await
                .is_err()
            {
                return;
            }
            idle_timer(shared).await;
            if shared.backend.stop_if_idle(&shared.in_flight).await {
                tracing::info!("idle: backend stopped; still listening");
            }
        }
    };
    tokio::select! {
        _ = idle_stops => {}
        _ = shutdown.requested() => {}
    }
    stop_accepting(accepting, loops).await;
    drain(shutdown, shared, shared.live().stop_timeout).await;
    Exit::Stopped
}

/// With accepting stopped: asks HTTP connections to finish gracefully and
/// lets open connections and work finish, up to `grace` (a second stop
/// request cuts it short).
async fn drain(shutdown: &Shutdown, shared: &ServeContext, grace: Duration) {
    shared.close.cancel();
    if shared.backend.is_external() && !shared.backend.is_ready() {
        // Nothing of idlegate's brings an external backend up, and a stop
        // while it is down usually means it is going or gone (systemd stops
        // a service bound to a backend that failed): the clients held for
        // it get their answer now, not at the end of the grace.
        tracing::info!(
            "stopping while the external backend is not ready: closing the clients held for it"
        );
        shared.backend.shut_down().await;
    }
    let (open, busy) = (shared.connections.count(), shared.in_flight.count());
    if open == 0 && busy == 0 {
        return;
    }
    tracing::info!(
        "stopping: waiting up to {} for {open} connection(s) and {busy} unit(s) of work to finish",
        humantime::format_duration(grace)
    );
    tokio::select! {
        _ = async { shared.connections.drained().await; shared.in_flight.drained().await } => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("stop timeout reached; closing {} connection(s)", shared.connections.count());
        }
        _ = shutdown.hurried() => {
            tracing::warn!("second stop request; closing {} connection(s) now", shared.connections.count());
        }
    }
}

/// The backend's state in a few words, with its own status text while it
/// starts (`--ready-notify`).
fn describe_backend(state: &BackendState, own_status: Option<&str>) -> String {
    match (state, own_status) {
        (BackendState::Starting, Some(text)) => format!("{} ({text})", state.describe()),
        _ => state.describe().to_owned(),
    }
}

/// What the status reporter watches of the backend.
struct BackendView {
    /// Its state.
    state: tokio::sync::watch::Receiver<BackendState>,
    /// Its own status text while it starts.
    status: tokio::sync::watch::Receiver<Option<Arc<str>>>,
}

/// Keeps `STATUS=` and the state file current: backend state, work in
/// flight, time to idle exit, activation number.
async fn report_status(
    notifier: Arc<Notifier>,
    backend: BackendView,
    in_flight: InFlight,
    live: tokio::sync::watch::Receiver<reload::Live>,
    state_file: Option<std::path::PathBuf>,
    activation: u64,
    snapshots: tokio::sync::watch::Sender<Option<status::Snapshot>>,
) {
    let BackendView {
        mut state,
        status: mut backend_status,
    } = backend;
    notifier.wait_ready().await;
    let mut last = String::new();
    let mut sent_at = tokio::time::Instant::now();
    let mut quiet_since: Option<tokio::time::Instant> = None;
    loop {
        let count_changed = in_flight.changed();
        tokio::pin!(count_changed);
        count_changed.as_mut().enable();
        let busy = in_flight.count();
        let idle_exit_in = match (busy, live.borrow().idle_timeout) {
            (_, None) => status::IdleExit::Never,
            (0, Some(timeout)) => {
                let since = *quiet_since.get_or_insert_with(tokio::time::Instant::now);
                status::IdleExit::In(timeout.saturating_sub(since.elapsed()))
            }
            _ => {
                quiet_since = None;
                status::IdleExit::Busy
            }
        };
        let snapshot = status::Snapshot {
            pid: std::process::id(),
            running: true,
            backend: describe_backend(
                &state.borrow_and_update(),
                backend_status.borrow_and_update().as_deref(),
            ),
            in_flight: busy,
            idle_exit_in,
            activation,
        };
        let line = snapshot.status_line();
        snapshots.send_replace(Some(snapshot.clone()));
        if line != last {
            sent_at = tokio::time::Instant::now();
            notifier.status(&line);
            if let Some(path) = &state_file {
                if let Err(e) = status::write(path, &snapshot) {
                    tracing::debug!("state file {}: {e}", path.display());
                }
            }
            last = line;
        }
        // A change of the backend's state is told at once; changes of the
        // count, which may come with every request, at most every
        // STATUS_INTERVAL (the last one always told).
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            changed = backend_status.changed() => if changed.is_err() { return },
            _ = count_changed => {
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(sent_at + STATUS_INTERVAL) => {}
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change of the backend's state reaches `STATUS=` (and the state
    /// file, and the metrics) at once, even right after a count change.
    #[tokio::test(start_paused = true)]
    async fn the_status_follows_a_backend_state_change_at_once() {
        let notifier = Arc::new(Notifier::disabled());
        notifier.ready("test");
        let (state_tx, state) = tokio::sync::watch::channel(BackendState::Starting);
        let (_status_tx, backend_status) = tokio::sync::watch::channel(None);
        let in_flight = InFlight::new();
        let (_live_tx, live) = tokio::sync::watch::channel(reload::Live {
            idle_timeout: Some(Duration::from_secs(60)),
            stop_timeout: Duration::from_secs(5),
            connection_idle_timeout: None,
            udp_flow_timeout: Duration::from_secs(30),
        });
        let (snapshots, latest) = tokio::sync::watch::channel(None);
        tokio::spawn(report_status(
            notifier,
            BackendView {
                state,
                status: backend_status,
            },
            in_flight.clone(),
            live,
            None,
            1,
            snapshots,
        ));
        let described = |latest: &tokio::sync::watch::Receiver<Option<status::Snapshot>>| {
            latest
                .borrow()
                .as_ref()
                .map(|s| (s.backend.clone(), s.in_flight))
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(described(&latest), Some(("backend starting".into(), 0)));
        let work = in_flight.enter();
        tokio::time::sleep(Duration::from_millis(1)).await;
        state_tx.send_replace(BackendState::Ready);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(described(&latest), Some(("backend ready".into(), 1)));
        drop(work);
        // A count change alone is told within the status interval.
        tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(described(&latest), Some(("backend ready".into(), 0)));
    }
}
