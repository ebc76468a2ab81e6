//! What a start in progress is waiting for (the probe's step, a container's
//! health, the ready command's last words), kept for the report when the
//! start times out.

use std::sync::{Arc, Mutex};

/// What a start in progress is waiting for, for the log when it times out.
pub type Progress = Arc<Mutex<Option<String>>>;

/// Says what the start now waits for (`None`: nothing beyond the addresses).
pub fn waiting_for(progress: &Progress, what: Option<String>) {
    *progress.lock().expect("progress lock") = what;
}
