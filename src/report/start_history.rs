//! The totals of the backend's last starts, kept beside the state file
//! (`STATE_FILE.starts`, one number of milliseconds a line, the oldest
//! first) across activations, so that the waiting page of the next cold
//! start can tell how long it usually takes.
//!
//! Losing it costs only the estimate: a missing or unreadable file is no
//! history (with a debug line in the log), and a failed write is logged the
//! same way.

use std::io;
use std::path::{Path, PathBuf};

use crate::backend::phases::RECENT;

/// The history's file beside the state file at `state_file`.
pub fn path_for(state_file: &Path) -> PathBuf {
    let mut path = state_file.as_os_str().to_owned();
    path.push(".starts");
    PathBuf::from(path)
}

/// The totals in the file at `path`, the oldest first; none when it is
/// missing or not a history.
pub fn load(path: &Path) -> Vec<u64> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::debug!(target: "idlegate", "no start history in {}: {e}", path.display());
            return Vec::new();
        }
    };
    match parse(&text) {
        Some(totals) => totals,
        None => {
            tracing::debug!(target: "idlegate",
                "{} is not a start history: ignored", path.display()
            );
            Vec::new()
        }
    }
}

/// The totals `text` lists; `None` if a line is not a number.
fn parse(text: &str) -> Option<Vec<u64>> {
    let totals = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    let skip = totals.len().saturating_sub(RECENT);
    Some(totals[skip..].to_vec())
}

/// Replaces the file at `path` with `totals` (written beside and renamed).
fn write(path: &Path, totals: &[u64]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let text: String = totals.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Saves `totals` at `path`; a failure is logged, never fatal.
pub fn save(path: &Path, totals: &[u64]) {
    if let Err(e) = write(path, totals) {
        tracing::debug!(target: "idlegate", "start history {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_round_trips_and_a_corrupt_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("idlegate.state"));
        assert!(path.ends_with("idlegate.state.starts"));
        assert_eq!(load(&path), Vec::<u64>::new(), "missing: no history");
        save(&path, &[2100, 1900]);
        assert_eq!(load(&path), [2100, 1900]);
        std::fs::write(&path, "2100\nnot a number\n").unwrap();
        assert_eq!(load(&path), Vec::<u64>::new(), "corrupt: no history");
        assert_eq!(parse("1\n2\n3\n4\n5\n6\n7\n"), Some(vec![3, 4, 5, 6, 7]));
    }
}
