//! `--ready-cmd`: a shell command that says the backend serves, for servers
//! that accept connections before they can answer them (PostgreSQL says
//! "the database system is starting up", Redis `LOADING`). It runs once the
//! ready addresses accept, and again with a backoff until it exits 0; the
//! start timeout bounds the whole wait.

use std::time::Duration;

use crate::backend::kinds::process::child_command;
use crate::backend::progress::{waiting_for, Progress, Stage};
use crate::backoff::Backoff;

/// The first delay between runs of the command.
const FIRST_DELAY: Duration = Duration::from_millis(10);
/// The longest delay between runs of the command.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// How many of the command's last output lines a report quotes.
const OUTPUT_LINES: usize = 3;

/// Runs `command` until it exits 0. What its last failed run said is kept in
/// `progress` for the start-timeout report. A command the shell cannot run
/// (status 126 or 127) fails at once: no retry would change that.
pub async fn wait_until_succeeds(command: &str, progress: &Progress) -> Result<(), String> {
    let mut backoff = Backoff::new(FIRST_DELAY, MAX_DELAY);
    loop {
        let output = child_command(&["/bin/sh", "-c", command])
            .output()
            .await
            .map_err(|e| format!("cannot run the ready command `{command}`: {e}"))?;
        if output.status.success() {
            tracing::debug!(target: "idlegate::backend::ready_command", "the ready command `{command}` succeeded");
            return Ok(());
        }
        let said = last_lines(&output.stdout, &output.stderr);
        let report = if said.is_empty() {
            format!("the ready command `{command}` failed: {}", output.status)
        } else {
            format!(
                "the ready command `{command}` failed: {}; last output: {said}",
                output.status
            )
        };
        if matches!(output.status.code(), Some(126 | 127)) {
            return Err(report);
        }
        waiting_for(progress, Stage::ReadyCommand, report);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The last non-empty lines of stdout then stderr, joined for one log line.
fn last_lines(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(OUTPUT_LINES)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_until_the_command_succeeds_and_keeps_what_it_said() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("count");
        // Fails twice (saying why), succeeds the third time.
        let command = format!(
            "echo x >> {c}; if [ $(wc -l < {c}) -ge 3 ]; then exit 0; fi; echo not yet >&2; exit 1",
            c = counter.display()
        );
        let progress = Progress::default();
        wait_until_succeeds(&command, &progress).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&counter).unwrap().lines().count(),
            3
        );
        let said = progress.lock().unwrap().clone().unwrap().detail;
        assert!(
            said.contains("exit status: 1") && said.contains("not yet"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_fails_at_once() {
        let progress = Progress::default();
        let e = wait_until_succeeds("no-such-program-here --ping", &progress)
            .await
            .unwrap_err();
        assert!(e.contains("127") && e.contains("not found"), "{e}");
    }
}
