//! What a running idlegate is doing, for `systemctl status` (`STATUS=`) and
//! for `idlegate status`, which reads a small state file instead of touching
//! the proxied socket, so asking never wakes or keeps up the backend.
//!
//! The state file is `key=value` lines, replaced atomically (written beside
//! and renamed) on every change, at most a few times a second.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::work::WorkView;

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

/// What a state file says about its idlegate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// No state file yet in an existing directory: not activated since the
    /// directory was made.
    NotYet,
    /// Not running: the last run (this activation) ended, or was killed.
    Ended {
        /// The activation that ended.
        activation: u64,
    },
    /// Running, as the snapshot says.
    Running(Snapshot),
    /// The state file cannot be read, or is not one: why.
    Unknown(String),
}

/// Reads the state file at `path`.
pub fn read(path: &Path) -> Reading {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && parent_exists(path) => {
            return Reading::NotYet
        }
        Err(e) => {
            return Reading::Unknown(format!(
                "cannot read the state file {}: {e}",
                path.display()
            ))
        }
    };
    let Some(s) = Snapshot::from_file_text(&text) else {
        return Reading::Unknown(format!("{} is not an idlegate state file", path.display()));
    };
    if s.running && Path::new(&format!("/proc/{}", s.pid)).exists() {
        Reading::Running(s)
    } else {
        Reading::Ended {
            activation: s.activation,
        }
    }
}

impl Reading {
    /// `idlegate status`'s exit status: 0 when idlegate runs, 3 when it
    /// does not (as `systemctl status` for an inactive unit), 4 when it
    /// cannot be told (as `systemctl` for an unknown unit: a wrong path, no
    /// permission, a file that is not a state file).
    pub fn exit_status(&self) -> u8 {
        match self {
            Reading::Running(_) => 0,
            Reading::NotYet | Reading::Ended { .. } => 3,
            Reading::Unknown(_) => UNKNOWN,
        }
    }

    /// The report, in lines for people; `path` is the state file read.
    pub fn text(&self, path: &Path) -> String {
        let s = match self {
            Reading::NotYet => {
                return format!(
                    "idlegate: not running (no state file at {} yet: not activated since its directory was made)",
                    path.display()
                )
            }
            Reading::Ended { activation } => {
                return format!(
                    "idlegate: not running (activation {activation} ended; the next connection starts it)"
                )
            }
            Reading::Unknown(why) => return format!("idlegate: unknown: {why}"),
            Reading::Running(s) => s,
        };
        let idle = match s.idle_exit_in {
            IdleExit::In(d) => format!("in {} if nothing arrives", whole_seconds(d)),
            IdleExit::Busy => "when the work in flight ends".into(),
            IdleExit::Never => "never (no idle timeout)".into(),
        };
        let woken = s
            .woken_by
            .as_ref()
            .map(|w| format!("\nwoken by: {w}"))
            .unwrap_or_default();
        format!(
            "idlegate: running (pid {}, activation {})\nbackend: {}\nin flight: {}\nidle exit: {idle}{woken}",
            s.pid, s.activation, s.backend, s.in_flight
        )
    }

    /// The report as a JSON document for scripts, with the list of work
    /// when it was asked for.
    pub fn json(&self, work: Option<&[WorkView]>) -> serde_json::Value {
        let mut doc = match self {
            Reading::NotYet => serde_json::json!({ "running": false }),
            Reading::Ended { activation } => {
                serde_json::json!({ "running": false, "activation": activation })
            }
            Reading::Unknown(why) => serde_json::json!({ "running": null, "error": why }),
            Reading::Running(s) => serde_json::json!({
                "running": true,
                "pid": s.pid,
                "activation": s.activation,
                "backend": s.backend,
                "in_flight": s.in_flight,
                "idle_exit_in_ms": match s.idle_exit_in {
                    IdleExit::In(d) => serde_json::json!(d.as_millis() as u64),
                    IdleExit::Busy => serde_json::json!("busy"),
                    IdleExit::Never => serde_json::json!("never"),
                },
                "woken_by": s.woken_by,
            }),
        };
        if let Some(work) = work {
            doc["work"] = serde_json::json!(work);
        }
        doc
    }
}

/// `idlegate status`: the report for the state file at `path` and its
/// exit status (see [`Reading::exit_status`]).
pub fn report(path: &Path) -> (String, u8) {
    let reading = read(path);
    (reading.text(path), reading.exit_status())
}

/// The list of work, in lines for people: what each unit is, its client,
/// its age and the bytes it moved.
pub fn work_text(work: &[WorkView]) -> String {
    if work.is_empty() {
        return "work in flight: none".to_owned();
    }
    let mut out = format!(
        "work in flight ({}; in: bytes from the client, out: to it):",
        work.len()
    );
    for w in work {
        let age = whole_seconds(Duration::from_millis(w.age_ms));
        let mut line = format!(
            "\n  {:<15} {:<22} {:>8}",
            w.kind,
            w.client.as_deref().unwrap_or("-"),
            age
        );
        if let Some(method) = &w.method {
            line.push_str(&format!(
                "  {method} {}{}",
                w.host.as_deref().unwrap_or(""),
                w.path.as_deref().unwrap_or("")
            ));
        }
        if let Some(why) = &w.why {
            line.push_str(&format!("  why: {why}"));
        }
        if matches!(
            w.kind.as_str(),
            "connection" | "request" | "upgrade" | "udp-flow"
        ) {
            line.push_str(&format!(
                "  {} in, {} out",
                bytes(w.bytes_from_client),
                bytes(w.bytes_to_client)
            ));
        }
        out.push_str(&line);
    }
    out
}

/// `n` bytes, in B, KiB, MiB or GiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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
