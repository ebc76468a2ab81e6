//! Configuration reload (SIGHUP, a unit's `ExecReload=`): the binary parses
//! the flags and the config file again and hands the new [`Config`] here.
//!
//! - at once: `idle-timeout`, `stop-timeout` (for the drain), `start-timeout`
//!   (for clients' waits), `connection-idle-timeout` (for new connections),
//!   `udp-flow-timeout` (for live flows too), `log-level` (applied by the binary);
//! - at the backend's next start: how it is run and probed (`command`,
//!   `container`, `unit`, hooks, `ready`, `ready-http`, the timeouts it gets);
//! - only when idlegate starts again: what shapes the sockets and the
//!   connections (`upstream`, `listen`, `mode`, `connections-max`, the HTTP
//!   options); a change there is logged and the running value kept.
//!
//! No connection is dropped by a reload.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::backend::{Backend, BackendSpec};
use crate::config::Config;
use crate::notify::Notifier;

/// The settings the serve loops read each time they need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Nothing in flight this long: idle exit (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Grace for open connections when stopping.
    pub stop_timeout: Duration,
    /// TCP mode: how long a new connection may stay quiet both ways.
    pub connection_idle_timeout: Option<Duration>,
    /// UDP: how long a new flow lives after its last datagram.
    pub udp_flow_timeout: Duration,
}

impl Live {
    /// The live settings of `config`.
    pub fn of(config: &Config) -> Live {
        Live {
            idle_timeout: config.idle_timeout,
            stop_timeout: config.stop_timeout,
            connection_idle_timeout: config.connection_idle_timeout,
            udp_flow_timeout: config.udp_flow_timeout,
        }
    }
}

/// How the supervisor runs the backend, from `config`.
pub fn backend_spec(config: &Config) -> BackendSpec {
    BackendSpec {
        kind: config.backend_kind(),
        ready_http: config.ready_http.clone(),
        ready_cmd: config.ready_cmd.clone(),
        ready_notify: config.ready_notify.then(|| config.notify_dir.clone()),
        ready: config.ready_addresses(),
        start_timeout: config.start_timeout,
        stop_timeout: config.stop_timeout,
    }
}

/// The settings `new` changes that only a restart applies.
pub fn needing_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.upstreams != new.upstreams {
        changed.push("upstream/mode");
    }
    if running.listen != new.listen {
        changed.push("listen");
    }
    if running.connections_max != new.connections_max {
        changed.push("connections-max");
    }
    if running.http != new.http {
        changed.push("the HTTP options");
    }
    changed
}

/// `running` with every setting a reload may change taken from `new`.
pub fn merge(running: &Config, new: Config) -> Config {
    Config {
        upstreams: running.upstreams.clone(),
        listen: running.listen.clone(),
        connections_max: running.connections_max,
        http: running.http.clone(),
        ..new
    }
}

/// Applies each reloaded configuration as it arrives, for as long as `reloads` is open.
pub async fn apply_reloads(
    mut reloads: mpsc::UnboundedReceiver<Config>,
    mut running: Config,
    backend: Backend,
    live: watch::Sender<Live>,
    notifier: Arc<Notifier>,
) {
    while let Some(new) = reloads.recv().await {
        let fixed = needing_restart(&running, &new);
        if !fixed.is_empty() {
            tracing::warn!(
                "reload: {} changed; that takes effect when idlegate starts again (the running values stay)",
                fixed.join(", ")
            );
        }
        let merged = merge(&running, new);
        let spec = backend_spec(&merged);
        let backend_changed = spec != backend_spec(&running);
        live.send_replace(Live::of(&merged));
        backend.reconfigure(spec);
        let idle = merged
            .idle_timeout
            .map(|t| humantime::format_duration(t).to_string())
            .unwrap_or_else(|| "never".into());
        tracing::info!(
            "configuration reloaded: idle timeout {idle}, start timeout {}, stop timeout {}{}",
            humantime::format_duration(merged.start_timeout),
            humantime::format_duration(merged.stop_timeout),
            if backend_changed {
                "; the backend's new settings apply at its next start"
            } else {
                ""
            }
        );
        notifier.status("configuration reloaded");
        running = merged;
    }
}
