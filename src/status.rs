//! What a running idlegate is doing, for `systemctl status` (`STATUS=`) and
//! for `idlegate status`, which reads a small state file instead of touching
//! the proxied socket, so asking never wakes or keeps up the backend.
//!
//! The state file is `key=value` lines, replaced atomically (written beside
//! and renamed) on every change, at most a few times a second.

use std::io;
use std::path::Path;
use std::time::Duration;

/// A moment's view of the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// idlegate's process id.
    pub pid: u32,
    /// Whether it is still serving (false in the last file it writes).
    pub running: bool,
    /// The backend's state, in a few words.
    pub backend: String,
    /// Work in flight.
    pub in_flight: usize,
    /// Time left until idle exit, when nothing is in flight and a timeout is set.
    pub idle_exit_in: IdleExit,
    /// Which activation of the socket this run is (1 for the first run that
    /// kept a state file here).
    pub activation: u64,
    /// The client that woke the backend in this activation, if one did
    /// (`192.168.1.20:51234: GET /photos`).
    pub woken_by: Option<String>,
}

/// When idlegate will exit on idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleExit {
    /// After this long, if nothing arrives.
    In(Duration),
    /// Work is in flight: the timer starts when it ends.
    Busy,
    /// No idle timeout.
    Never,
}

impl Snapshot {
    /// The `STATUS=` line.
    pub fn status_line(&self) -> String {
        let idle = match self.idle_exit_in {
            IdleExit::In(d) => format!("; idle exit in {}", whole_seconds(d)),
            IdleExit::Busy | IdleExit::Never => String::new(),
        };
        format!(
            "{}; {} in flight{idle}; activation {}",
            self.backend, self.in_flight, self.activation
        )
    }

    fn to_file_text(&self) -> String {
        let idle = match self.idle_exit_in {
            IdleExit::In(d) => d.as_millis().to_string(),
            IdleExit::Busy => "busy".into(),
            IdleExit::Never => "never".into(),
        };
        let woken_by = self
            .woken_by
            .as_ref()
            .map(|w| format!("woken_by={}\n", w.replace('\n', " ")))
            .unwrap_or_default();
        format!(
            "pid={}\nrunning={}\nbackend={}\nin_flight={}\nidle_exit_in_ms={idle}\nactivation={}\n{woken_by}",
            self.pid,
            if self.running { "yes" } else { "no" },
            self.backend.replace('\n', " "),
            self.in_flight,
            self.activation
        )
    }

    fn from_file_text(text: &str) -> Option<Snapshot> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        };
        Some(Snapshot {
            pid: get("pid")?.parse().ok()?,
            running: get("running")? == "yes",
            backend: get("backend")?.to_owned(),
            in_flight: get("in_flight")?.parse().ok()?,
            idle_exit_in: match get("idle_exit_in_ms")? {
                "busy" => IdleExit::Busy,
                "never" => IdleExit::Never,
                ms => IdleExit::In(Duration::from_millis(ms.parse().ok()?)),
            },
            activation: get("activation")?.parse().ok()?,
            woken_by: get("woken_by").map(str::to_owned),
        })
    }
}

fn whole_seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Replaces the state file atomically with `snapshot`.
pub fn write(path: &Path, snapshot: &Snapshot) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, snapshot.to_file_text())?;
    std::fs::rename(&tmp, path)
}

/// The activation number of the run before this one, from its state file (0 if none).
pub fn previous_activation(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| Snapshot::from_file_text(&t))
        .map_or(0, |s| s.activation)
}

/// `idlegate status`'s exit status when the state file cannot be read.
pub const UNKNOWN: u8 = 4;

/// `idlegate status`: the report for the state file at `path`, and whether
/// idlegate runs (exit status 0), does not (3, as `systemctl status` for an
/// inactive unit), or cannot be told because the state file cannot be read
/// (4, as `systemctl` for an unknown unit: a wrong path, no permission, a
/// file that is not a state file).
pub fn report(path: &Path) -> (String, u8) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && parent_exists(path) => {
            return (
                format!(
                    "idlegate: not running (no state file at {} yet: not activated since its directory was made)",
                    path.display()
                ),
                3,
            )
        }
        Err(e) => {
            return (
                format!(
                    "idlegate: unknown: cannot read the state file {}: {e}",
                    path.display()
                ),
                UNKNOWN,
            )
        }
    };
    let Some(s) = Snapshot::from_file_text(&text) else {
        return (
            format!(
                "idlegate: unknown: {} is not an idlegate state file",
                path.display()
            ),
            UNKNOWN,
        );
    };
    let alive = s.running && Path::new(&format!("/proc/{}", s.pid)).exists();
    if !alive {
        return (
            format!(
                "idlegate: not running (activation {} ended; the next connection starts it)",
                s.activation
            ),
            3,
        );
    }
    let idle = match s.idle_exit_in {
        IdleExit::In(d) => format!("in {} if nothing arrives", whole_seconds(d)),
        IdleExit::Busy => "when the work in flight ends".into(),
        IdleExit::Never => "never (no idle timeout)".into(),
    };
    let woken = s
        .woken_by
        .map(|w| format!("\nwoken by: {w}"))
        .unwrap_or_default();
    (
        format!(
            "idlegate: running (pid {}, activation {})\nbackend: {}\nin flight: {}\nidle exit: {idle}{woken}",
            s.pid, s.activation, s.backend, s.in_flight
        ),
        0,
    )
}

/// Whether the directory that should hold `path` exists: a missing state
/// file there means "not activated yet", elsewhere a wrong path.
fn parent_exists(path: &Path) -> bool {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.is_dir(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_round_trips() {
        let s = Snapshot {
            pid: 42,
            running: true,
            backend: "backend ready".into(),
            in_flight: 3,
            idle_exit_in: IdleExit::In(Duration::from_millis(2500)),
            activation: 7,
            woken_by: Some("192.168.1.20:51234: GET /photos".into()),
        };
        assert_eq!(Snapshot::from_file_text(&s.to_file_text()), Some(s.clone()));
        assert_eq!(
            s.status_line(),
            "backend ready; 3 in flight; idle exit in 2s; activation 7"
        );
    }
}
