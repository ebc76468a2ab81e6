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
//!   before anything starts.
//! - [`activation`]: the passed sockets (`LISTEN_FDS`…) or `--listen`, paired with upstreams.
//! - [`listener`]: the accept loop; [`proxy`]: one connection, held then copied both ways.
//! - [`backend`]: the backend's lifecycle (start, ready, stop), one supervisor task;
//!   [`readiness`]: the probe.
//! - [`activity`]: in-flight guards and the idle timer.
//! - [`shutdown`], [`notify`]: stop requests in, sd_notify out.
//! - [`net`], [`address`], `sys`: sockets and addresses; the only `unsafe` code is in `sys`.
//!
//! The core, [`run`], takes sockets, a config and a [`Shutdown`]; it never binds,
//! reads the environment or installs signal handlers (that is `main`'s job).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
pub mod activity;
pub mod address;
pub mod backend;
pub mod cli;
pub mod config;
pub mod listener;
pub mod net;
pub mod notify;
pub mod proxy;
pub mod readiness;
pub mod shutdown;
mod sys;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use activation::RuntimeSockets;
use activity::InFlight;
use backend::{Backend, BackendSpec, BackendState};
pub use config::Config;
use listener::{Route, Shared};
pub use notify::Notifier;
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

/// How often, at most, the status line is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// Serves `sockets` until idle (activated: exit), a stop request, or the end of
/// an `Accept=yes` connection; the backend is stopped before this returns.
pub async fn run(
    sockets: RuntimeSockets,
    config: Config,
    notifier: Notifier,
    shutdown: Shutdown,
) -> Exit {
    let backend = Backend::spawn(BackendSpec {
        command: config.command.clone(),
        ready: config.ready_address().clone(),
        start_timeout: config.start_timeout,
        stop_timeout: config.stop_timeout,
    });
    let in_flight = InFlight::new();
    let notifier = Arc::new(notifier);
    if notifier.is_enabled() {
        tokio::spawn(report_status(
            notifier.clone(),
            backend.subscribe(),
            in_flight.clone(),
        ));
    }
    let shared = Shared {
        backend: backend.clone(),
        in_flight: in_flight.clone(),
        slots: Arc::new(Semaphore::new(config.connections_max)),
        start_timeout: config.start_timeout,
    };

    let exit = match sockets {
        activation::Sockets::Connection { stream, upstream } => {
            notifier.ready("serving one connection");
            tracing::info!("serving one passed connection (Accept=yes) to {upstream}");
            let guard = in_flight.enter();
            let served = proxy::serve(
                stream,
                "passed connection",
                &upstream,
                &backend,
                config.start_timeout,
            );
            tokio::select! {
                _ = served => {}
                _ = drain_after_request(&shutdown, &in_flight, config.stop_timeout) => {}
            }
            drop(guard);
            Exit::ConnectionDone
        }
        activation::Sockets::Activated(routes) => {
            // A client is already waiting: start the backend while we accept.
            backend.start();
            let routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
            announce(&notifier, &routes, "socket-activated", &config);
            serve_until_idle(&routes, &shared, &config, &shutdown).await
        }
        activation::Sockets::Bound(routes) => {
            let routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
            announce(&notifier, &routes, "listening", &config);
            serve_and_stop_backend_when_idle(&routes, &shared, &config, &shutdown).await
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
    tracing::info!("exiting");
    exit
}

fn announce(notifier: &Notifier, routes: &[Arc<Route>], how: &str, config: &Config) {
    for route in routes {
        tracing::info!("{how}: {} -> {}", route.label, route.upstream);
    }
    let idle = match config.idle_timeout {
        Some(t) => format!("idle timeout {}", humantime::format_duration(t)),
        None => "no idle timeout".to_owned(),
    };
    notifier.ready(&format!("{how} on {} socket(s); {idle}", routes.len()));
}

fn spawn_accept_loops(
    routes: &[Arc<Route>],
    shared: &Shared,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    routes
        .iter()
        .map(|route| {
            tokio::spawn(listener::accept_loop(
                route.clone(),
                shared.clone(),
                stop.child_token(),
            ))
        })
        .collect()
}

async fn idle_timer(in_flight: &InFlight, timeout: Option<Duration>) {
    match timeout {
        Some(t) => in_flight.idle(t).await,
        None => std::future::pending().await,
    }
}

/// Activated: serve until idle or a stop request. At idle, accepting stops
/// first; a connection that raced in before that is served and the idle timer
/// starts over, so no accepted client is ever cut off by an idle exit.
async fn serve_until_idle(
    routes: &[Arc<Route>],
    shared: &Shared,
    config: &Config,
    shutdown: &Shutdown,
) -> Exit {
    loop {
        let accepting = CancellationToken::new();
        let loops = spawn_accept_loops(routes, shared, &accepting);
        let idle = tokio::select! {
            _ = idle_timer(&shared.in_flight, config.idle_timeout) => true,
            _ = shutdown.requested() => false,
        };
        accepting.cancel();
        for l in loops {
            let _ = l.await;
        }
        if !idle {
            drain(shutdown, &shared.in_flight, config.stop_timeout).await;
            return Exit::Stopped;
        }
        if shared.in_flight.count() == 0 {
            return Exit::Idle;
        }
        tracing::debug!("a connection arrived as the idle timer fired; serving on");
    }
}

/// Bound by `--listen`: idle stops the backend but keeps listening; the next
/// client starts it again.
async fn serve_and_stop_backend_when_idle(
    routes: &[Arc<Route>],
    shared: &Shared,
    config: &Config,
    shutdown: &Shutdown,
) -> Exit {
    let accepting = CancellationToken::new();
    let loops = spawn_accept_loops(routes, shared, &accepting);
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
            idle_timer(&shared.in_flight, config.idle_timeout).await;
            if shared.backend.stop_if_idle(&shared.in_flight).await {
                tracing::info!("idle: backend stopped; still listening");
            }
        }
    };
    tokio::select! {
        _ = idle_stops => {}
        _ = shutdown.requested() => {}
    }
    accepting.cancel();
    for l in loops {
        let _ = l.await;
    }
    drain(shutdown, &shared.in_flight, config.stop_timeout).await;
    Exit::Stopped
}

/// After a stop request: lets in-flight connections finish, up to `grace`
/// (a second request cuts it short).
async fn drain(shutdown: &Shutdown, in_flight: &InFlight, grace: Duration) {
    let open = in_flight.count();
    if open == 0 {
        return;
    }
    tracing::info!(
        "stopping: waiting up to {} for {open} connection(s) to finish",
        humantime::format_duration(grace)
    );
    tokio::select! {
        _ = in_flight.drained() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("stop timeout reached; closing {} connection(s)", in_flight.count());
        }
        _ = shutdown.hurried() => {
            tracing::warn!("second stop request; closing {} connection(s) now", in_flight.count());
        }
    }
}

/// Completes once a stop was requested and the drain period is over.
async fn drain_after_request(shutdown: &Shutdown, in_flight: &InFlight, grace: Duration) {
    shutdown.requested().await;
    // The connection itself holds a guard: wait the grace period or a hurry.
    let _ = in_flight;
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = shutdown.hurried() => {}
    }
}

/// Keeps `STATUS=` current: backend state and connections in flight.
async fn report_status(
    notifier: Arc<Notifier>,
    mut state: tokio::sync::watch::Receiver<BackendState>,
    in_flight: InFlight,
) {
    let mut last = String::new();
    loop {
        let status = format!(
            "{}; {} connection(s) in flight",
            state.borrow_and_update().describe(),
            in_flight.count()
        );
        if status != last {
            notifier.status(&status);
            last = status;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = in_flight.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        tokio::time::sleep(STATUS_INTERVAL).await;
    }
}
