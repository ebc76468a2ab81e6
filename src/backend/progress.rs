//! What a start in progress is waiting for (the probe's step, a container's
//! health, the ready command's last words): in plain words for a visitor
//! (the waiting page), and in detail, addresses and commands included, for
//! the log when the start times out.

use std::sync::{Arc, Mutex};

/// The stage a start has reached, as a visitor is told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A container is being started (or unpaused).
    StartingContainer,
    /// A Swarm service's tasks do not all run yet.
    SwarmTasks,
    /// A `podman run` or `docker run` backend pulls its image.
    PullingImage,
    /// A container's healthcheck has not passed yet.
    ContainerHealth,
    /// `--ready-notify`: no `READY=1` yet.
    AppNotify,
    /// Nothing accepts connections on a ready address yet.
    Accepting,
    /// `--ready-http`: no HTTP answer yet.
    Answering,
    /// `--ready-cmd` has not succeeded yet.
    ReadyCommand,
}

impl Stage {
    /// The stage in plain words, with no address, command or engine message.
    pub fn plain(self) -> &'static str {
        match self {
            Stage::StartingContainer => "starting the container",
            Stage::SwarmTasks => "starting the service",
            Stage::PullingImage => "downloading the container image",
            Stage::ContainerHealth => "waiting for the container to report healthy",
            Stage::AppNotify => "waiting for the app to report ready",
            Stage::Accepting => "waiting for the app to accept connections",
            Stage::Answering => "waiting for the app to answer",
            Stage::ReadyCommand => "waiting for the app to be ready",
        }
    }
}

/// What a start waits for: its stage, and the details for the log.
#[derive(Clone, Debug)]
pub struct Waiting {
    /// For a visitor.
    pub stage: Stage,
    /// For the log (`container web is not healthy (health: starting)`).
    pub detail: String,
}

/// What a start in progress is waiting for (`None`: nothing beyond the
/// addresses).
pub type Progress = Arc<Mutex<Option<Waiting>>>;

/// Says what the start now waits for.
pub fn waiting_for(progress: &Progress, stage: Stage, detail: String) {
    *progress.lock().expect("progress lock") = Some(Waiting { stage, detail });
}

/// Says the start waits for nothing beyond the addresses.
pub fn clear(progress: &Progress) {
    *progress.lock().expect("progress lock") = None;
}

/// What the start waits for, in detail for the log and the administrator.
pub fn detail(progress: &Progress) -> Option<String> {
    let waiting = progress.lock().expect("progress lock");
    waiting.as_ref().map(|w| w.detail.clone())
}
