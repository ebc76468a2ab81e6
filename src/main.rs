//! The `idlegate` binary: parse and validate everything, take the sockets, set
//! up logging, then hand over to [`idlegate::run`] on a tokio runtime.
//!
//! Exit status: 0 for an idle exit or a clean stop, 2 for usage and
//! configuration errors (one line naming the flag or key), 1 for failures at run time.

use std::process::ExitCode;
use std::time::Duration;

use idlegate::activation::{self, ActivationEnv};
use idlegate::cli::commands::{self, USAGE};
use idlegate::cli::{self, Invocation};
use idlegate::own_socket::OwnSocket;
use idlegate::{Config, Notifier, Shutdown};

const RUNTIME: u8 = 1;

fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    ExitCode::from(commands::fail(code, error))
}

fn main() -> ExitCode {
    idlegate::one_malloc_heap();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cli::parse_from(&args) {
        Ok(Invocation::Serve(cli)) => *cli,
        Ok(Invocation::Run(subcommand)) => return ExitCode::from(commands::run(subcommand)),
        Err(e) => return ExitCode::from(commands::clap_error(e, &args)),
    };
    if let Some(what) = cli.generate {
        return ExitCode::from(commands::generate(what));
    }
    let mut config = match commands::resolve_config(cli) {
        Ok(c) => c,
        Err(e) => return fail(USAGE, &e),
    };
    let log_level = init_tracing(config.observability.log_level.as_deref());
    config.sockets.connections_max =
        idlegate::serve::limits::fit_connections(config.sockets.connections_max);

    let (sockets, mut control) = match activation::take_sockets(
        &ActivationEnv::from_process(),
        std::process::id(),
        &config.sockets.upstreams,
        &config.sockets.listen,
        config.backend.run.manages_backend(),
    ) {
        Ok(s) => s,
        Err(e) => return fail(USAGE, &e),
    };
    let own_control = match (&control, &config.observability.state_file, &sockets) {
        (None, Some(state), activation::Sockets::Activated(_) | activation::Sockets::Bound(_)) => {
            bind_own_control(state).map(|(own, listener)| {
                control = Some(listener);
                own
            })
        }
        _ => None,
    };
    let metrics = match bind_metrics(&config) {
        Ok(m) => m,
        Err(e) => return fail(USAGE, &e),
    };
    let notifier = match Notifier::connect(std::env::var_os("NOTIFY_SOCKET").as_deref()) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(
                "NOTIFY_SOCKET: cannot connect ({e}); not reporting to the service manager"
            );
            Notifier::disabled()
        }
    };

    let result = serve(sockets, config, notifier, metrics, control, log_level);
    // idlegate's own control socket goes now.
    drop(own_control);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(RUNTIME, &e),
    }
}

/// `--metrics`' listener, bound before the runtime starts.
fn bind_metrics(config: &Config) -> Result<Option<std::net::TcpListener>, String> {
    config
        .observability
        .metrics
        .map(std::net::TcpListener::bind)
        .transpose()
        .map_err(|e| {
            let addr = config
                .observability
                .metrics
                .map(|a| a.to_string())
                .unwrap_or_default();
            format!("--metrics {addr}: cannot bind: {e}")
        })
}

/// Runs idlegate on a tokio runtime until it exits; SIGHUP rereads the
/// configuration.
fn serve(
    sockets: activation::StdSockets,
    config: Config,
    notifier: Notifier,
    metrics: Option<std::net::TcpListener>,
    control: Option<std::os::unix::net::UnixListener>,
    log_level: LogLevel,
) -> Result<idlegate::serve::Exit, String> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Err(format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        let sockets = sockets
            .into_tokio()
            .map_err(|e| format!("cannot use the sockets: {e}"))?;
        let listeners = own_listeners(metrics, control)?;
        let shutdown = Shutdown::new();
        let (reloads, reloaded) = tokio::sync::mpsc::unbounded_channel();
        idlegate::serve::shutdown::forward_signals(shutdown.clone(), move || {
            match reread_config() {
                Ok(config) => {
                    log_level.set(config.observability.log_level.as_deref());
                    let _ = reloads.send(config);
                }
                Err(e) => tracing::error!("reload: {e}; keeping the running configuration"),
            }
        })
        .map_err(|e| format!("cannot handle signals: {e}"))?;
        Ok::<_, String>(
            idlegate::run(sockets, config, notifier, shutdown, reloaded, listeners).await,
        )
    });
    // Connections still open after the drain are closed here, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// With a state file and no control socket passed, idlegate's own beside the
/// state file, so `idlegate inhibit --state-file` reaches it (a failure is
/// logged: serving goes on without it).
fn bind_own_control(
    state: &std::path::Path,
) -> Option<(OwnSocket, std::os::unix::net::UnixListener)> {
    let path = idlegate::wake::control::own_path(state);
    match OwnSocket::bind(&path) {
        Ok(bound) => {
            tracing::debug!("control socket for `idlegate inhibit`: {}", path.display());
            Some(bound)
        }
        Err(e) => {
            tracing::warn!(
                "no control socket for `idlegate inhibit`: {}: {e}",
                path.display()
            );
            None
        }
    }
}

/// The metrics listener and the control socket, handed to the runtime.
fn own_listeners(
    metrics: Option<std::net::TcpListener>,
    control: Option<std::os::unix::net::UnixListener>,
) -> Result<idlegate::Listeners, String> {
    let metrics = match metrics {
        Some(l) => {
            l.set_nonblocking(true)
                .map_err(|e| format!("--metrics: {e}"))?;
            Some(tokio::net::TcpListener::from_std(l).map_err(|e| format!("--metrics: {e}"))?)
        }
        None => None,
    };
    let control = match control {
        Some(l) => {
            l.set_nonblocking(true)
                .map_err(|e| format!("the control socket: {e}"))?;
            Some(
                tokio::net::UnixListener::from_std(l)
                    .map_err(|e| format!("the control socket: {e}"))?,
            )
        }
        None => None,
    };
    Ok(idlegate::Listeners { metrics, control })
}

/// The flags and the config file read again, as at start (SIGHUP).
fn reread_config() -> Result<Config, String> {
    let cli = match cli::parse_from(std::env::args_os()).map_err(|e| e.to_string())? {
        Invocation::Serve(cli) => *cli,
        Invocation::Run(_) => return Err("not serving".into()),
    };
    let mut config = commands::resolve_config(cli).map_err(|e| e.to_string())?;
    config.sockets.connections_max =
        idlegate::serve::limits::fit_connections(config.sockets.connections_max);
    Ok(config)
}

/// Changes the log filter of a running idlegate (a reload).
struct LogLevel(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
);

impl LogLevel {
    /// Sets the filter as `--log-level`/`log-level` (or, unset, `RUST_LOG`) says.
    fn set(&self, level: Option<&str>) {
        if let Err(e) = self.0.reload(log_filter(level)) {
            tracing::warn!("reload: cannot change the log level: {e}");
        }
    }
}

fn log_filter(level: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

/// Logs go to stderr, one line per event. Under journald (`JOURNAL_STREAM`) no
/// timestamps or colours, as the journal adds its own.
fn init_tracing(level: Option<&str>) -> LogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(level));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let color = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(color);
    let registry = tracing_subscriber::registry().with(filter);
    if journal {
        registry.with(format.without_time()).init();
    } else {
        registry.with(format).init();
    }
    LogLevel(handle)
}
