//! The readiness probe of a start, after the kind's own start step: the
//! backend's `READY=1` (`--ready-notify`), every ready address accepting,
//! the first answering `--ready-http`, then `--ready-cmd` succeeding. What
//! it waits for is kept in [`Progress`] for a start-timeout report, and
//! where each step ends is a phase of the start ([`phases`]).

use crate::address::Address;
use crate::backend::failure::Failure;
use crate::backend::phases::{self, Starts};
use crate::backend::progress::{clear, waiting_for, Progress, Stage};
use crate::backend::ready::command;
use crate::backend::ready::connect;
use crate::backend::ready::notify_socket::{BackendStatus, NotifySocket};

/// What to wait for before the backend counts as ready.
pub(in crate::backend) struct Probe {
    /// `--ready-notify`'s socket for this start.
    pub notify: Option<NotifySocket>,
    /// Where the backend's own `STATUS=` goes.
    pub status: BackendStatus,
    /// The addresses that must all accept.
    pub ready: Vec<Address>,
    /// `--ready-http`: the path the first address must answer.
    pub ready_http: Option<String>,
    /// `--ready-cmd`.
    pub ready_cmd: Option<String>,
    /// What the probe waits for now.
    pub progress: Progress,
    /// Where its phases end: [`phases::NOTIFIED`], [`phases::ACCEPTING`],
    /// then [`phases::READY`] with `--ready-http` or `--ready-cmd`.
    pub starts: std::sync::Arc<Starts>,
}

impl Probe {
    /// Waits until everything says ready; no deadline of its own.
    pub async fn run(self) -> Result<(), Failure> {
        let progress = &self.progress;
        if let Some(notify) = self.notify {
            let what = "no READY=1 from the backend (--ready-notify)";
            waiting_for(progress, Stage::AppNotify, what.into());
            notify
                .wait_ready(&self.status)
                .await
                .map_err(Failure::Notify)?;
            self.starts.mark(phases::NOTIFIED);
        }
        for address in &self.ready {
            let what = format!("nothing accepted connections on {address}");
            waiting_for(progress, Stage::Accepting, what);
            wait_until(address, None).await?;
        }
        self.starts.mark(phases::ACCEPTING);
        if let (Some(path), Some(address)) = (&self.ready_http, self.ready.first()) {
            let what = format!("no HTTP answer to GET {path} on {address}");
            waiting_for(progress, Stage::Answering, what);
            wait_until(address, Some(path)).await?;
            self.starts.mark(phases::READY);
        }
        if let Some(command) = self.ready_cmd {
            let what = format!("the ready command `{command}` has not succeeded yet");
            waiting_for(progress, Stage::ReadyCommand, what);
            command::wait_until_succeeds(&command, progress)
                .await
                .map_err(Failure::ReadyCommand)?;
            self.starts.mark(phases::READY);
        }
        clear(progress);
        Ok(())
    }
}

/// Waits until `address` accepts (and, with `http_path`, answers it).
async fn wait_until(address: &Address, http_path: Option<&str>) -> Result<(), Failure> {
    connect::wait_until_ready(address, http_path)
        .await
        .map_err(|error| Failure::Probe {
            address: address.clone(),
            error,
        })
}
