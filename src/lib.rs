//! idlegate: an exit-on-idle reverse proxy sidecar for systemd socket activation.
//!
//! systemd holds the listening sockets and starts idlegate on the first
//! connection. idlegate starts the backend on demand, holds clients until the
//! backend answers, forwards every connection, and once nothing has been in
//! flight for the idle timeout, stops the backend and exits 0 — systemd keeps
//! the sockets, so the next client simply activates it again.
//!
//! The code map (what lives in each folder), the path of a connection and
//! of the idle timer, and the invariants are in `ARCHITECTURE.md` at the
//! repository root.
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
pub use serve::run::{run, Listeners};
pub use serve::shutdown::Shutdown;
pub use sys::one_malloc_heap;
