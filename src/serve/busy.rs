//! `--busy-cmd`: work idlegate cannot see (a library scan, a transcode, a
//! backup with no connection open). When the idle timer fires, the command
//! is asked first: exit 0 means busy, and the timer starts over; a failure
//! or a timeout means not busy.

use std::process::Stdio;
use std::time::Duration;

use crate::backend::kinds::process::child_command;

/// How long the command may take before it counts as "not busy".
pub const BUSY_CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `command` (run by `/bin/sh -c`) says the backend is busy, within
/// `limit`; what it said goes to the log.
pub async fn is_busy(command: &str, limit: Duration) -> bool {
    let mut cmd = child_command(&["/bin/sh", "-c", command]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(target: "idlegate", "--busy-cmd `{command}` cannot run ({e}): taken as not busy");
            return false;
        }
    };
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!(target: "idlegate", "busy: `{command}` exited 0; the idle timer starts over");
            true
        }
        Ok(Ok(status)) => {
            tracing::info!(target: "idlegate", "not busy: `{command}` {status}");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(target: "idlegate", "--busy-cmd `{command}`: {e}: taken as not busy");
            false
        }
        Err(_) => {
            // Its whole group: a pipeline or a script's children too.
            if let Some(pid) = child.id() {
                let _ = crate::sys::signal_group(pid, libc::SIGKILL);
            }
            tracing::warn!(target: "idlegate",
                "--busy-cmd `{command}` did not finish within {}: taken as not busy",
                humantime::format_duration(limit)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_0_is_busy_anything_else_is_not() {
        let limit = Duration::from_secs(30);
        assert!(is_busy("exit 0", limit).await);
        assert!(!is_busy("exit 3", limit).await);
        assert!(!is_busy("/nonexistent/command", limit).await);
        let started = std::time::Instant::now();
        assert!(!is_busy("sleep 30", Duration::from_millis(300)).await);
        assert!(started.elapsed() < Duration::from_secs(10), "not bounded");
    }
}
