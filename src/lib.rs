//! idlegate: an exit-on-idle reverse proxy sidecar for systemd socket activation.
//!
//! systemd holds the listening sockets and starts idlegate on the first
//! connection. idlegate starts the backend on demand, holds clients until the
//! backend answers, forwards every connection, and once nothing has been in
//! flight for the idle timeout, stops the backend and exits 0 — systemd keeps
//! the sockets, so the next client simply activates it again.
//!
//! # Layout
//! - [`cli`]: the command line (clap), the subcommands, the manual;
//!   [`config`]: it and the TOML file merged and validated into a [`Config`]
//!   before anything starts.
//! - [`activation`]: the passed sockets (`LISTEN_FDS`…) or `--listen`, paired with upstreams.
//! - [`serve`]: the serve-until-idle loop, the accept loops, the in-flight
//!   guards and the idle timer, reload, shutdown, the descriptor limits.
//! - [`proxy`]: one connection, held then forwarded (TCP, UDP flows, HTTP).
//! - [`backend`]: the backend's lifecycle (start, ready, stop): the handle and
//!   its supervisor; [`backend::kinds`]: a process, hooks, containers, groups,
//!   Wake-on-LAN; [`backend::ready`]: the readiness probe of a start.
//! - [`wake`]: who may wake the backend (answer rules, `--wake-from`, the
//!   control socket, inhibit, `--busy-cmd`).
//! - [`report`]: `STATUS=` and sd_notify, the state file, metrics, the list of work.
//! - [`units`]: the systemd units of one config file and the generator.
//! - [`net`], [`address`], [`backoff`], [`own_socket`], `sys`: sockets,
//!   addresses, retry delays, the Unix sockets idlegate binds itself; the
//!   only `unsafe` code is in `sys`.
//!
//! The core, [`run`], takes sockets, a config and a [`Shutdown`]; it never binds,
//! reads the environment or installs signal handlers (that is `main`'s job).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
pub mod address;
pub mod backend;
pub mod backoff;
pub mod cli;
pub mod config;
#[cfg(test)]
mod fuzz_support;
pub mod net;
pub mod own_socket;
pub mod proxy;
pub mod report;
pub mod serve;
mod sys;
pub mod units;
pub mod wake;

pub use activation::RuntimeSockets;
pub use config::Config;
pub use report::notify::Notifier;
pub use serve::run::Listeners;
pub use serve::shutdown::Shutdown;
use serve::Exit;
pub use sys::one_malloc_heap;

/// Serves `sockets` until idle (activated: exit), a stop request, or the end of
/// an `Accept=yes` connection; the backend is stopped before this returns.
/// See [`serve::run`].
pub async fn run(
    sockets: RuntimeSockets,
    config: Config,
    notifier: Notifier,
    shutdown: Shutdown,
    reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
    listeners: Listeners,
) -> Exit {
    serve::run::run(sockets, config, notifier, shutdown, reloads, listeners).await
}
