//! What a running idlegate is doing, for `systemctl status` (`STATUS=`) and
//! for `idlegate status`, which reads a small state file instead of touching
//! the proxied socket, so asking never wakes or keeps up the backend.
//!
//! The state file is `key=value` lines, replaced atomically (written beside
//! and renamed) on every change, at most a few times a second.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::backend::phases::StartTimes;
use crate::serve::work::WorkView;

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
    /// What idlegate does at idle.
    pub at_idle: AtIdle,
    /// Time left until it does, as the idle timer says.
    pub idle_in: IdleIn,
    /// Which activation of the socket this run is (1 for the first run that
    /// kept a state file here).
    pub activation: u64,
    /// The client that woke the backend in this activation, if one did
    /// (`192.168.1.20:51234: GET /photos`).
    pub woken_by: Option<String>,
    /// The last start's times (this run's, or an earlier run's).
    pub last_start: Option<StartTimes>,
}

/// What idlegate does once idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtIdle {
    /// Stops the backend and exits (activated by systemd).
    Exit,
    /// Stops the backend and keeps listening (`--listen`: it bound its
    /// sockets itself).
    StopBackend,
}

impl AtIdle {
    /// Its name in the state file and the JSON report.
    fn key(self) -> &'static str {
        match self {
            AtIdle::Exit => "exit",
            AtIdle::StopBackend => "stop-backend",
        }
    }

    /// Its name in the report for people and `STATUS=`.
    fn words(self) -> &'static str {
        match self {
            AtIdle::Exit => "idle exit",
            AtIdle::StopBackend => "backend stop",
        }
    }
}

/// When idlegate next acts on idle ([`AtIdle`]): the idle timer's own
/// countdown ([`crate::serve::activity::Countdown`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleIn {
    /// After this long, if nothing arrives.
    In(Duration),
    /// Work is in flight: the timer starts when it ends.
    Busy,
    /// The timer fired and `--busy-cmd` is being asked.
    Asking,
    /// No idle timeout.
    Never,
    /// There is no backend to stop (`--listen`, the backend stopped).
    NothingToStop,
}

impl IdleIn {
    /// The countdown of `countdown` at `now`.
    pub fn at(countdown: crate::serve::activity::Countdown, now: tokio::time::Instant) -> IdleIn {
        use crate::serve::activity::Countdown;
        match countdown {
            Countdown::At(deadline) => IdleIn::In(deadline.saturating_duration_since(now)),
            Countdown::Busy => IdleIn::Busy,
            Countdown::Asking => IdleIn::Asking,
            Countdown::Never => IdleIn::Never,
            Countdown::NothingToStop => IdleIn::NothingToStop,
        }
    }

    /// Its value in the state file: milliseconds, or a word.
    fn word(self) -> String {
        match self {
            IdleIn::In(d) => d.as_millis().to_string(),
            IdleIn::Busy => "busy".into(),
            IdleIn::Asking => "asking-busy-cmd".into(),
            IdleIn::Never => "never".into(),
            IdleIn::NothingToStop => "nothing-to-stop".into(),
        }
    }

    /// Its value in the JSON report: milliseconds as a number, or a word.
    fn value(self) -> serde_json::Value {
        match self {
            IdleIn::In(d) => serde_json::json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            other => other.word().into(),
        }
    }

    fn parse(text: &str) -> Option<IdleIn> {
        Some(match text {
            "busy" => IdleIn::Busy,
            "asking-busy-cmd" => IdleIn::Asking,
            "never" => IdleIn::Never,
            "nothing-to-stop" => IdleIn::NothingToStop,
            ms => IdleIn::In(Duration::from_millis(ms.parse().ok()?)),
        })
    }
}

impl Snapshot {
    /// The time to idle exit, as `idle_exit_in_ms` has always said it: with
    /// `--listen` idlegate never exits on idle.
    fn idle_exit_in(&self) -> IdleIn {
        match self.at_idle {
            AtIdle::Exit => self.idle_in,
            AtIdle::StopBackend => IdleIn::Never,
        }
    }

    /// The `STATUS=` line.
    pub fn status_line(&self) -> String {
        let idle = match self.idle_in {
            IdleIn::In(d) => format!("; {} in {}", self.at_idle.words(), whole_seconds(d)),
            IdleIn::Asking => format!("; {} unless --busy-cmd says busy", self.at_idle.words()),
            IdleIn::Busy | IdleIn::Never | IdleIn::NothingToStop => String::new(),
        };
        format!(
            "{}; {} in flight{idle}; activation {}",
            self.backend, self.in_flight, self.activation
        )
    }

    /// The state file's text, written at `now` (milliseconds since the
    /// epoch): a reader counts the time to idle down from then.
    fn to_file_text(&self, now: u128) -> String {
        let idle = format!(
            "{}\nat_idle={}\nidle_in_ms={}",
            self.idle_exit_in().word(),
            self.at_idle.key(),
            self.idle_in.word()
        );
        let woken_by = self
            .woken_by
            .as_ref()
            .map(|w| format!("woken_by={}\n", w.replace('\n', " ")))
            .unwrap_or_default();
        let last_start = self
            .last_start
            .as_ref()
            .map(|t| format!("last_start={}\n", t.to_field()))
            .unwrap_or_default();
        format!(
            "pid={}\nrunning={}\nbackend={}\nin_flight={}\nidle_exit_in_ms={idle}\nactivation={}\nwritten_at_ms={now}\n{woken_by}{last_start}",
            self.pid,
            if self.running { "yes" } else { "no" },
            self.backend.replace('\n', " "),
            self.in_flight,
            self.activation
        )
    }

    /// The snapshot in a state file's text, its countdown counted down to
    /// `now` (milliseconds since the epoch) from when it was written.
    fn from_file_text(text: &str, now: u128) -> Option<Snapshot> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        };
        let written: Option<u128> = get("written_at_ms").and_then(|t| t.parse().ok());
        let since_written = written.map_or(Duration::ZERO, |w| {
            Duration::from_millis(u64::try_from(now.saturating_sub(w)).unwrap_or(u64::MAX))
        });
        Some(Snapshot {
            pid: get("pid")?.parse().ok()?,
            running: get("running")? == "yes",
            backend: get("backend")?.to_owned(),
            in_flight: get("in_flight")?.parse().ok()?,
            // A file of an idlegate before `at_idle` had only
            // `idle_exit_in_ms`.
            at_idle: match get("at_idle") {
                Some("stop-backend") => AtIdle::StopBackend,
                _ => AtIdle::Exit,
            },
            idle_in: match IdleIn::parse(get("idle_in_ms").or_else(|| get("idle_exit_in_ms"))?)? {
                IdleIn::In(d) => IdleIn::In(d.saturating_sub(since_written)),
                other => other,
            },
            activation: get("activation")?.parse().ok()?,
            woken_by: get("woken_by").map(str::to_owned),
            last_start: get("last_start").and_then(StartTimes::parse_field),
        })
    }
}

/// Milliseconds since the epoch now.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn whole_seconds(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Replaces the state file atomically with `snapshot`.
pub fn write(path: &Path, snapshot: &Snapshot) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, snapshot.to_file_text(unix_ms()))?;
    std::fs::rename(&tmp, path)
}

/// The activation number of the run before this one (0 if none) and its
/// last start's times, from its state file.
pub fn previous_run(path: &Path) -> (u64, Option<StartTimes>) {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| Snapshot::from_file_text(&t, unix_ms()))
        .map_or((0, None), |s| (s.activation, s.last_start))
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
        /// The last start's times, when a start is known.
        last_start: Option<StartTimes>,
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
    let Some(s) = Snapshot::from_file_text(&text, unix_ms()) else {
        return Reading::Unknown(format!("{} is not an idlegate state file", path.display()));
    };
    if s.running && Path::new(&format!("/proc/{}", s.pid)).exists() {
        Reading::Running(s)
    } else {
        Reading::Ended {
            activation: s.activation,
            last_start: s.last_start,
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
            Reading::Ended {
                activation,
                last_start,
            } => {
                return format!(
                    "idlegate: not running (activation {activation} ended; the next connection starts it){}",
                    last_start_line(last_start.as_ref())
                )
            }
            Reading::Unknown(why) => return format!("idlegate: unknown: {why}"),
            Reading::Running(s) => s,
        };
        let listening = match s.at_idle {
            AtIdle::Exit => "",
            AtIdle::StopBackend => " (idlegate keeps listening)",
        };
        let idle = match s.idle_in {
            IdleIn::In(d) => format!("in {} if nothing arrives{listening}", whole_seconds(d)),
            IdleIn::Busy => "when the work in flight ends".into(),
            IdleIn::Asking => "now, unless --busy-cmd says busy (asking it)".into(),
            IdleIn::Never => "never (no idle timeout)".into(),
            IdleIn::NothingToStop => {
                "none (the backend is not running; the next client starts it)".into()
            }
        };
        let woken = s
            .woken_by
            .as_ref()
            .map(|w| format!("\nwoken by: {w}"))
            .unwrap_or_default();
        format!(
            "idlegate: running (pid {}, activation {})\nbackend: {}\nin flight: {}\n{}: {idle}{woken}{}",
            s.pid,
            s.activation,
            s.backend,
            s.in_flight,
            s.at_idle.words(),
            last_start_line(s.last_start.as_ref())
        )
    }

    /// The report as a JSON document for scripts, with the list of work
    /// when it was asked for.
    pub fn json(&self, work: Option<&[WorkView]>) -> serde_json::Value {
        let mut doc = match self {
            Reading::NotYet => serde_json::json!({ "running": false }),
            Reading::Ended {
                activation,
                last_start,
            } => {
                serde_json::json!({
                    "running": false,
                    "activation": activation,
                    "last_start": last_start,
                })
            }
            Reading::Unknown(why) => serde_json::json!({ "running": null, "error": why }),
            Reading::Running(s) => serde_json::json!({
                "running": true,
                "pid": s.pid,
                "activation": s.activation,
                "backend": s.backend,
                "in_flight": s.in_flight,
                "idle_exit_in_ms": s.idle_exit_in().value(),
                "at_idle": s.at_idle.key(),
                "idle_in_ms": s.idle_in.value(),
                "woken_by": s.woken_by,
                "last_start": s.last_start,
            }),
        };
        if let Some(work) = work {
            doc["work"] = serde_json::json!(work);
        }
        doc
    }
}

/// The report's line about the last start, with a newline before it; empty
/// when no start is known.
fn last_start_line(times: Option<&StartTimes>) -> String {
    times
        .map(|t| format!("\nlast start: {}ms ({})", t.total_ms, t.breakdown()))
        .unwrap_or_default()
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
            at_idle: AtIdle::Exit,
            idle_in: IdleIn::In(Duration::from_millis(2500)),
            activation: 7,
            woken_by: Some("192.168.1.20:51234: GET /photos".into()),
            last_start: StartTimes::parse_field("249 started:120 accepting:80 ready:49"),
        };
        assert!(s.last_start.is_some());
        let text = s.to_file_text(1_000_000);
        assert_eq!(Snapshot::from_file_text(&text, 1_000_000), Some(s.clone()));
        // Read 2 s after it was written, the countdown says 2 s less.
        assert_eq!(
            Snapshot::from_file_text(&text, 1_002_000).map(|s| s.idle_in),
            Some(IdleIn::In(Duration::from_millis(500)))
        );
        assert_eq!(
            s.status_line(),
            "backend ready; 3 in flight; idle exit in 2s; activation 7"
        );
    }
}
