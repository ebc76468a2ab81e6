//! One run, from the sockets it is given to its exit: the backend spawned,
//! the context every accept loop and connection shares, the reporting and
//! the control socket started, the sockets served until idle or a stop, then
//! the backend stopped and the state file's last word written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::activation::{self, RuntimeSockets};
use crate::backend::{self, Backend};
use crate::config::Config;
use crate::report::notify::Notifier;
use crate::report::{connections, metrics, reporter, start_history, status};
use crate::serve::activity::{Countdown, InFlight};
use crate::serve::context::ServeContext;
use crate::serve::listener::{self, Endpoint, Forwarder};
use crate::serve::shutdown::Shutdown;
use crate::serve::{reload, Exit};
use crate::wake::{self, control};
use crate::{address, net, serve};

/// The listeners of a run besides its sockets.
#[derive(Debug, Default)]
pub struct Listeners {
    /// `--metrics`.
    pub metrics: Option<tokio::net::TcpListener>,
    /// The control socket (a passed socket named `control`, see [`control`]).
    pub control: Option<tokio::net::UnixListener>,
}

/// After the backend stopped for good, how long clients still waiting for it
/// are given to receive their refusal before the process exits.
const FLUSH_GRACE: Duration = Duration::from_millis(500);

/// Serves `sockets` until idle (activated: exit), a stop request, or the end of
/// an `Accept=yes` connection; the backend is stopped before this returns.
pub async fn run(
    sockets: RuntimeSockets,
    config: Config,
    notifier: Notifier,
    shutdown: Shutdown,
    reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
    listeners: Listeners,
) -> Exit {
    let in_flight = InFlight::listed();
    let backend = Backend::spawn(config.backend_spec(), in_flight.clone());
    let notifier = Arc::new(notifier);
    let (live_tx, live) = tokio::sync::watch::channel(config.timeouts);
    let (countdown, at_idle) = countdown_at_start(&sockets);
    let shared = ServeContext {
        backend: backend.clone(),
        in_flight,
        connections: InFlight::new(),
        close: CancellationToken::new(),
        slots: Arc::new(Semaphore::new(config.sockets.connections_max)),
        live,
        wake: Arc::new(wake::WakeGate::new(config.wake.clone())),
        busy_cmd: config.busy_cmd.as_deref().map(Arc::from),
        countdown: Arc::new(tokio::sync::watch::channel(countdown).0),
    };
    let state_file = config.observability.state_file.clone();
    let activation = state_file.as_deref().map_or(1, |path| {
        let (previous, last_start) = status::previous_run(path);
        let recent = start_history::load(&start_history::path_for(path));
        backend.starts().remember(last_start, &recent);
        previous + 1
    });
    start_reporting(
        &shared,
        &notifier,
        at_idle,
        state_file.clone(),
        activation,
        listeners.metrics,
    );
    let listing = state_file
        .as_deref()
        .and_then(|path| serve_listing(path, &shared.in_flight));
    if let Some(control) = listeners.control {
        tokio::spawn(control::serve(control, shared.clone()));
    }
    tokio::spawn(reload::apply_reloads(
        reloads,
        config.clone(),
        backend.clone(),
        live_tx,
        notifier.clone(),
    ));

    let exit = serve_sockets(sockets, &config, &shared, &shutdown, &notifier).await;
    let last = LastWord {
        listing,
        state_file: state_file.as_deref(),
        activation,
    };
    finish(exit, &backend, &shared, &notifier, last).await;
    exit
}

/// Until the idle timer runs and tells: an activated run has a client
/// waiting, a bound one no backend yet, an `Accept=yes` one no timer.
fn countdown_at_start(sockets: &RuntimeSockets) -> (Countdown, status::AtIdle) {
    match sockets {
        activation::Sockets::Activated(_) => (Countdown::Busy, status::AtIdle::Exit),
        activation::Sockets::Bound(_) => (Countdown::NothingToStop, status::AtIdle::StopBackend),
        activation::Sockets::Connection { .. } => (Countdown::Never, status::AtIdle::Exit),
    }
}

/// Serves the run's sockets: the passed connection, or the accept loops
/// until idle or a stop.
async fn serve_sockets(
    sockets: RuntimeSockets,
    config: &Config,
    shared: &ServeContext,
    shutdown: &Shutdown,
    notifier: &Notifier,
) -> Exit {
    match sockets {
        activation::Sockets::Connection { stream, upstream } => {
            let forwarder = Forwarder::new(&upstream, shared, &config.http);
            serve_passed_connection(stream, upstream, forwarder, shared, shutdown, notifier).await
        }
        activation::Sockets::Activated(routes) => {
            // A client is already waiting: start the backend while we accept,
            // unless some clients must not wake it (then the first that
            // needs it starts it).
            if !config.wake.lazy() {
                shared.backend.start();
            }
            let endpoints = Endpoint::all(routes, shared, &config.http);
            announce(notifier, &endpoints, "socket-activated", config);
            serve::serve_until_idle(&endpoints, shared, shutdown).await
        }
        activation::Sockets::Bound(routes) => {
            let endpoints = Endpoint::all(routes, shared, &config.http);
            announce(notifier, &endpoints, "listening", config);
            serve::serve_and_stop_backend_when_idle(&endpoints, shared, shutdown).await
        }
    }
}

/// What the end of a run closes and writes beside the state file.
struct LastWord<'a> {
    /// The list of work's socket, if it is served.
    listing: Option<connections::Served>,
    /// The state file, if any.
    state_file: Option<&'a std::path::Path>,
    /// This run's activation number.
    activation: u64,
}

/// The end of a run: the summary and goodbye, the backend stopped, the
/// refusals given a moment to reach their clients, the state file's last word.
async fn finish(
    exit: Exit,
    backend: &Backend,
    shared: &ServeContext,
    notifier: &Notifier,
    last: LastWord<'_>,
) {
    if let Some(summary) = shared.wake.summary() {
        tracing::info!(target: "idlegate", "{summary}");
    }
    say_goodbye(exit, serve::activated_idle_timeout(shared), notifier);
    let cause = match exit {
        Exit::Stopped => backend::ShutDownCause::StopRequested,
        Exit::Idle | Exit::ConnectionDone => backend::ShutDownCause::Idle,
    };
    backend.shut_down(cause).await;
    // Requests still waiting for the backend have just been answered (HTTP
    // 503, TCP close): give those answers a moment to reach their clients.
    if shared.connections.count() > 0 {
        let _ = tokio::time::timeout(FLUSH_GRACE, shared.connections.drained()).await;
    }
    if let Some(listing) = last.listing {
        listing.close();
    }
    if let Some(path) = last.state_file {
        write_last_state(path, backend, last.activation);
    }
    tracing::info!(target: "idlegate", "exiting");
}

/// Keeps `STATUS=`, the state file and the metrics current, when any is wanted.
fn start_reporting(
    shared: &ServeContext,
    notifier: &Arc<Notifier>,
    at_idle: status::AtIdle,
    state_file: Option<std::path::PathBuf>,
    activation: u64,
    metrics: Option<tokio::net::TcpListener>,
) {
    let (snapshots, latest) = tokio::sync::watch::channel(None);
    if notifier.is_enabled() || state_file.is_some() || metrics.is_some() {
        tokio::spawn(reporter::keep_current(
            notifier.clone(),
            reporter::BackendView {
                state: shared.backend.subscribe(),
                status: shared.backend.subscribe_status(),
                wake: shared.wake.clone(),
                progress: shared.backend.progress(),
                starts: shared.backend.starts(),
            },
            shared.in_flight.clone(),
            reporter::IdleView {
                countdown: shared.countdown.subscribe(),
                at_idle,
            },
            state_file,
            activation,
            snapshots,
        ));
    }
    if let Some(listener) = metrics {
        tokio::spawn(metrics::serve(
            listener,
            latest,
            shared.connections.clone(),
            shared.wake.clone(),
            shared.backend.starts(),
        ));
    }
}

/// Serves the list of work beside the state file at `path`, for `idlegate
/// status --connections` (a failure is logged: serving goes on without it).
fn serve_listing(path: &std::path::Path, in_flight: &InFlight) -> Option<connections::Served> {
    connections::Served::open(path, in_flight.clone())
        .map_err(|e| {
            tracing::warn!(target: "idlegate",
                "no list of work for `idlegate status --connections`: {}: {e}",
                connections::path_for(path).display()
            )
        })
        .ok()
}

/// Serves the one connection systemd passed (`Accept=yes`) until it ends, or
/// a stop request and the stop timeout.
async fn serve_passed_connection(
    stream: net::Stream,
    upstream: address::UpstreamSpec,
    forwarder: Forwarder,
    shared: &ServeContext,
    shutdown: &Shutdown,
    notifier: &Notifier,
) -> Exit {
    notifier.ready("serving one connection");
    tracing::info!(target: "idlegate",
        "serving one passed connection (Accept=yes) to {upstream} ({})",
        upstream.mode
    );
    let peer = stream.peer();
    let connection = shared.connections.enter();
    let served = listener::serve_client(&forwarder, upstream, stream, peer, shared, ());
    tokio::select! {
        _ = served => {}
        _ = async {
            shutdown.requested().await;
            shared.close.cancel();
            tokio::select! {
                _ = tokio::time::sleep(shared.live().stop) => {}
                _ = shutdown.hurried() => {}
            }
        } => {}
    }
    drop(connection);
    Exit::ConnectionDone
}

/// The log line and `STOPPING=1` of the end of a run.
/// `idle` is the idle timeout in force (a reload may have changed it, and
/// an activation that never woke the backend has a short one).
fn say_goodbye(exit: Exit, idle: Option<Duration>, notifier: &Notifier) {
    match exit {
        Exit::Idle => {
            let idle = idle.map(humantime::format_duration);
            tracing::info!(target: "idlegate",
                "idle for {}: stopping the backend and exiting",
                idle.map(|d| d.to_string()).unwrap_or_default()
            );
            notifier.stopping("idle: stopping the backend and exiting");
        }
        Exit::Stopped | Exit::ConnectionDone => {
            notifier.stopping("stopping the backend and exiting")
        }
    }
}

/// The state file's last word: not running, the backend as it was left.
fn write_last_state(path: &std::path::Path, backend: &Backend, activation: u64) {
    let last = status::Snapshot {
        pid: std::process::id(),
        running: false,
        backend: backend.state().describe().to_owned(),
        in_flight: 0,
        at_idle: status::AtIdle::Exit,
        idle_in: status::IdleIn::Never,
        activation,
        woken_by: None,
        last_start: backend.starts().last(),
    };
    if let Err(e) = status::write(path, &last) {
        tracing::debug!(target: "idlegate", "state file {}: {e}", path.display());
    }
    let recent = backend.starts().recent();
    if !recent.is_empty() {
        start_history::save(&start_history::path_for(path), &recent);
    }
}

fn announce(notifier: &Notifier, endpoints: &[Arc<Endpoint>], how: &str, config: &Config) {
    for e in endpoints {
        let upstream = &e.upstream;
        let mode = if upstream.address.is_udp() {
            "udp".to_owned()
        } else {
            upstream.mode.to_string()
        };
        tracing::info!(target: "idlegate", "{how}: {} -> {} ({mode})", e.label, upstream.address);
    }
    let idle = match config.timeouts.idle {
        Some(t) => format!("idle timeout {}", humantime::format_duration(t)),
        None => "no idle timeout".to_owned(),
    };
    notifier.ready(&format!("{how} on {} socket(s); {idle}", endpoints.len()));
}
