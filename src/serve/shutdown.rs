//! How idlegate is told to stop: the first request is graceful (drain, then
//! stop the backend), a second one hurries (skip the drain).
//!
//! The core only sees a [`Shutdown`]; `main` turns SIGTERM and SIGINT into it.

use tokio_util::sync::CancellationToken;

/// The stop requests, as the core sees them.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    graceful: CancellationToken,
    hurry: CancellationToken,
}

impl Shutdown {
    /// No stop requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a stop: the first call is graceful, later ones hurry.
    pub fn request(&self) {
        if self.graceful.is_cancelled() {
            self.hurry.cancel();
        } else {
            self.graceful.cancel();
        }
    }

    /// Completes once a stop was requested.
    pub async fn requested(&self) {
        self.graceful.cancelled().await
    }

    /// Completes once a second stop was requested.
    pub async fn hurried(&self) {
        self.hurry.cancelled().await
    }
}

/// Turns SIGTERM and SIGINT into stop requests, and SIGHUP (a unit's
/// `ExecReload=`) into a call of `on_hangup`, for as long as the runtime runs.
pub fn forward_signals(
    shutdown: Shutdown,
    on_hangup: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!(target: "idlegate::shutdown", "SIGHUP received: reloading the configuration");
                    on_hangup();
                    continue;
                }
            };
            if shutdown.graceful.is_cancelled() {
                tracing::info!(target: "idlegate::shutdown", "{name} received again: closing connections now");
            } else {
                tracing::info!(target: "idlegate::shutdown", "{name} received: stopping");
            }
            shutdown.request();
        }
    });
    Ok(())
}
