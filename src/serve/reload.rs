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

use tokio::sync::{mpsc, watch};

use crate::backend::Backend;
use crate::config::{Config, Timeouts};
use crate::report::notify::Notifier;

/// The settings `new` changes that only a restart applies.
pub fn needing_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let (old, sockets) = (&running.sockets, &new.sockets);
    let mut changed = Vec::new();
    if old.upstreams != sockets.upstreams {
        changed.push("upstream/mode");
    }
    if old.listen != sockets.listen {
        changed.push("listen");
    }
    if old.connections_max != sockets.connections_max {
        changed.push("connections-max");
    }
    if running.http != new.http {
        changed.push("the HTTP options");
    }
    if running.wake != new.wake {
        changed.push("answer/wake-from");
    }
    if running.busy_cmd != new.busy_cmd {
        changed.push("busy-cmd");
    }
    changed
}

/// `running` with every setting a reload may change taken from `new`.
pub fn merge(running: &Config, new: Config) -> Config {
    Config {
        sockets: running.sockets.clone(),
        http: running.http.clone(),
        wake: running.wake.clone(),
        busy_cmd: running.busy_cmd.clone(),
        ..new
    }
}

/// Applies each reloaded configuration as it arrives, for as long as `reloads` is open.
pub async fn apply_reloads(
    mut reloads: mpsc::UnboundedReceiver<Config>,
    mut running: Config,
    backend: Backend,
    live: watch::Sender<Timeouts>,
    notifier: Arc<Notifier>,
) {
    while let Some(new) = reloads.recv().await {
        let fixed = needing_restart(&running, &new);
        if !fixed.is_empty() {
            tracing::warn!(target: "idlegate::reload",
                "reload: {} changed; that takes effect when idlegate starts again (the running values stay)",
                fixed.join(", ")
            );
        }
        let merged = merge(&running, new);
        let spec = merged.backend_spec();
        let backend_changed = spec != running.backend_spec();
        live.send_replace(merged.timeouts);
        backend.reconfigure(spec);
        let idle = merged
            .timeouts
            .idle
            .map(|t| humantime::format_duration(t).to_string())
            .unwrap_or_else(|| "never".into());
        tracing::info!(target: "idlegate::reload",
            "configuration reloaded: idle timeout {idle}, start timeout {}, stop timeout {}{}",
            humantime::format_duration(merged.timeouts.start),
            humantime::format_duration(merged.timeouts.stop),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("idlegate").chain(args.iter().copied()),
        )
        .unwrap();
        Config::from_cli(cli).unwrap()
    }

    #[test]
    fn a_reload_swaps_the_live_groups_and_keeps_the_ones_a_restart_changes() {
        let running = config(&[
            "--upstream",
            "127.0.0.1:1",
            "--idle-timeout",
            "1min",
            "--",
            "app",
        ]);
        let new = config(&[
            "--upstream",
            "127.0.0.1:2",
            "--mode",
            "http",
            "--idle-timeout",
            "5s",
            "--unit",
            "app.service",
        ]);
        assert_eq!(needing_restart(&running, &new), ["upstream/mode"]);
        let merged = merge(&running, new.clone());
        assert_eq!(merged.sockets, running.sockets);
        assert_eq!(merged.http, running.http);
        assert_eq!(merged.timeouts, new.timeouts);
        assert_eq!(merged.backend, new.backend);
        assert_ne!(merged.backend_spec(), running.backend_spec());
    }
}
