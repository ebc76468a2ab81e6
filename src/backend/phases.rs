//! Where the time of a start goes: each start's phases (the backend started,
//! healthy, accepting, ready, the first byte of its answer), the starts of
//! this run as a histogram for `--metrics`, and the last few starts' totals,
//! from which the waiting page tells how long a start usually takes.
//!
//! A phase ends at a mark, and each phase is the difference of two
//! monotonic instants taken as whole milliseconds since the start began, so
//! the phases always add up to the total exactly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The backend was started: its process spawned, the engine said started,
/// the unit's start job done or the start command returned.
pub const STARTED: &str = "started";
/// A container's healthcheck passed.
pub const HEALTHY: &str = "healthy";
/// The backend sent `READY=1` (`--ready-notify`).
pub const NOTIFIED: &str = "notified";
/// Every ready address accepts connections.
pub const ACCEPTING: &str = "accepting";
/// `--ready-http` got its answer, `--ready-cmd` succeeded.
pub const READY: &str = "ready";
/// The first byte of an answer went to a client, after the start.
pub const FIRST_BYTE: &str = "first_byte";

/// How many starts' totals are remembered for the expected wait.
pub const RECENT: usize = 5;

/// The upper bounds of the start histogram's buckets, in seconds: from a
/// warm container's unpause to a model server's minutes.
pub const BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// One phase of a start.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Phase {
    /// What ended it ([`STARTED`], [`ACCEPTING`], …).
    pub name: String,
    /// How long it took.
    pub ms: u64,
}

/// A start's time, whole and by phase; the phases add up to the total.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StartTimes {
    /// From the start's request to its last mark.
    pub total_ms: u64,
    /// In the order they first happened; a phase that happened more than
    /// once (each member of a group started) is one, its times added.
    pub phases: Vec<Phase>,
}

impl StartTimes {
    /// The times of a start begun at `begun` with `marks` (each a phase's
    /// end, in order).
    fn from_marks(begun: Instant, marks: &[(&'static str, Instant)]) -> StartTimes {
        let since = |at: Instant| millis(at.saturating_duration_since(begun));
        let mut phases: Vec<Phase> = Vec::new();
        let mut before = 0;
        for &(name, at) in marks {
            let now = since(at).max(before);
            let ms = now - before;
            before = now;
            match phases.iter_mut().find(|p| p.name == name) {
                Some(phase) => phase.ms += ms,
                None => phases.push(Phase {
                    name: name.to_owned(),
                    ms,
                }),
            }
        }
        StartTimes {
            total_ms: before,
            phases,
        }
    }

    /// The phases for people: `started 120ms, accepting 80ms, ready 49ms`.
    pub fn breakdown(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| format!("{} {}ms", p.name.replace('_', " "), p.ms))
            .collect();
        phases.join(", ")
    }

    /// Its value in the state file: `249 started:120 accepting:80 ready:49`.
    pub fn to_field(&self) -> String {
        let mut out = self.total_ms.to_string();
        for p in &self.phases {
            out.push_str(&format!(" {}:{}", p.name, p.ms));
        }
        out
    }

    /// The times a state file's value says; `None` for anything else.
    pub fn parse_field(text: &str) -> Option<StartTimes> {
        let mut words = text.split_whitespace();
        let total_ms = words.next()?.parse().ok()?;
        let phases = words
            .map(|w| {
                let (name, ms) = w.split_once(':')?;
                Some(Phase {
                    name: name.to_owned(),
                    ms: ms.parse().ok()?,
                })
            })
            .collect::<Option<Vec<Phase>>>()?;
        let sum: u64 = phases.iter().map(|p| p.ms).sum();
        (sum == total_ms).then_some(StartTimes { total_ms, phases })
    }
}

/// The starts of this run, as Prometheus counts them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Starts no longer than each of [`BUCKETS`].
    pub buckets: [u64; BUCKETS.len()],
    /// Starts.
    pub count: u64,
    /// Their seconds added up.
    pub sum: f64,
}

impl Histogram {
    /// Counts a start of `seconds`.
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The start in progress and the starts before it.
#[derive(Debug, Default)]
struct Record {
    /// When the start in progress (or the last one) began.
    begun: Option<Instant>,
    /// Its phases' ends so far.
    marks: Vec<(&'static str, Instant)>,
    /// The last start that became ready, the first byte after it included
    /// once it went out; or the last start an earlier run told.
    last: Option<StartTimes>,
    /// The starts of this run.
    histogram: Histogram,
    /// The totals of the last [`RECENT`] starts, the oldest first, earlier
    /// runs' included.
    recent: VecDeque<u64>,
}

/// The times of the backend's starts, shared by the supervisor (which marks
/// the phases), the proxy (the first byte) and the reporting.
#[derive(Debug, Default)]
pub struct Starts {
    record: Mutex<Record>,
    /// A start became ready and no answer has gone out since.
    first_byte_due: AtomicBool,
}

impl Starts {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().expect("starts lock")
    }

    /// A start begins now; returns when.
    pub fn begin(&self) -> Instant {
        let now = Instant::now();
        self.first_byte_due.store(false, Ordering::Relaxed);
        let mut record = self.record();
        record.begun = Some(now);
        record.marks.clear();
        now
    }

    /// The phase `name` of the start in progress ends now.
    pub fn mark(&self, name: &'static str) {
        self.record().marks.push((name, Instant::now()));
    }

    /// The start in progress is ready: its times, counted and remembered.
    pub fn ready(&self) -> StartTimes {
        let mut record = self.record();
        let begun = *record.begun.get_or_insert_with(Instant::now);
        if record.marks.is_empty() {
            record.marks.push((READY, Instant::now()));
        }
        let times = StartTimes::from_marks(begun, &record.marks);
        record.histogram.observe(times.total_ms as f64 / 1000.0);
        record.recent.push_back(times.total_ms);
        while record.recent.len() > RECENT {
            record.recent.pop_front();
        }
        record.last = Some(times.clone());
        self.first_byte_due.store(true, Ordering::Relaxed);
        times
    }

    /// An answer went to a client: the first after a start ends its
    /// [`FIRST_BYTE`] phase. Cheap when it is not the first (one atomic read).
    pub fn answered(&self) {
        if !self.first_byte_due.load(Ordering::Relaxed)
            || !self.first_byte_due.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let mut record = self.record();
        let Some(begun) = record.begun else {
            return;
        };
        record.marks.push((FIRST_BYTE, Instant::now()));
        record.last = Some(StartTimes::from_marks(begun, &record.marks));
    }

    /// The last start's times, if one is known.
    pub fn last(&self) -> Option<StartTimes> {
        self.record().last.clone()
    }

    /// The starts of this run.
    pub fn histogram(&self) -> Histogram {
        self.record().histogram.clone()
    }

    /// The totals of the last few starts, in ms, the oldest first.
    pub fn recent(&self) -> Vec<u64> {
        self.record().recent.iter().copied().collect()
    }

    /// Takes up what earlier runs knew: their last start and the totals of
    /// their last starts (the oldest first).
    pub fn remember(&self, last: Option<StartTimes>, recent: &[u64]) {
        let mut record = self.record();
        if record.last.is_none() {
            record.last = last;
        }
        let skip = recent.len().saturating_sub(RECENT);
        record.recent = recent[skip..].iter().copied().collect();
    }

    /// How long a start usually takes: the median of the last few totals,
    /// once one is known.
    pub fn expected(&self) -> Option<Duration> {
        let mut totals = self.recent();
        totals.sort_unstable();
        let n = totals.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => totals[n / 2],
            _ => (totals[n / 2 - 1] + totals[n / 2]) / 2,
        };
        Some(Duration::from_millis(median))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phases are differences of whole milliseconds since the start began:
    /// rounding never makes them add up to more or less than the total.
    #[test]
    fn the_phases_add_up_to_the_total_exactly() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let marks = [
            (STARTED, at(999)),
            (HEALTHY, at(1_998)),
            (STARTED, at(2_997)),
            (ACCEPTING, at(5_499)),
            (READY, at(7_001)),
        ];
        let times = StartTimes::from_marks(t0, &marks);
        assert_eq!(times.total_ms, 7);
        let sum: u64 = times.phases.iter().map(|p| p.ms).sum();
        assert_eq!(sum, times.total_ms);
        let names: Vec<&str> = times.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [STARTED, HEALTHY, ACCEPTING, READY]);
        assert_eq!(
            times.breakdown(),
            "started 1ms, healthy 1ms, accepting 3ms, ready 2ms"
        );
    }

    #[test]
    fn the_state_file_value_round_trips_and_a_wrong_one_is_none() {
        let times = StartTimes {
            total_ms: 249,
            phases: vec![
                Phase {
                    name: STARTED.into(),
                    ms: 120,
                },
                Phase {
                    name: FIRST_BYTE.into(),
                    ms: 129,
                },
            ],
        };
        assert_eq!(times.to_field(), "249 started:120 first_byte:129");
        assert_eq!(StartTimes::parse_field(&times.to_field()), Some(times));
        for wrong in [
            "",
            "x",
            "249 started",
            "249 started:x",
            "250 started:120 ready:129",
        ] {
            assert_eq!(StartTimes::parse_field(wrong), None, "{wrong}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_is_counted_and_its_first_byte_added_once() {
        let starts = Starts::default();
        starts.begin();
        tokio::time::sleep(Duration::from_millis(300)).await;
        starts.mark(STARTED);
        tokio::time::sleep(Duration::from_millis(1700)).await;
        starts.mark(ACCEPTING);
        let times = starts.ready();
        assert_eq!(times.total_ms, 2000);
        tokio::time::sleep(Duration::from_millis(5)).await;
        starts.answered();
        tokio::time::sleep(Duration::from_millis(5)).await;
        starts.answered();
        let last = starts.last().unwrap();
        assert_eq!(last.total_ms, 2005);
        assert_eq!(
            last.breakdown(),
            "started 300ms, accepting 1700ms, first byte 5ms"
        );
        let h = starts.histogram();
        assert_eq!(h.count, 1);
        assert_eq!(h.buckets[..7], [0, 0, 0, 0, 0, 1, 1]);
        assert!((h.sum - 2.0).abs() < 1e-9);
        assert_eq!(starts.expected(), Some(Duration::from_millis(2000)));
    }

    #[test]
    fn the_expected_wait_is_the_median_of_the_last_starts() {
        let starts = Starts::default();
        assert_eq!(starts.expected(), None);
        starts.remember(None, &[9_000, 1, 2, 1_000, 3_000, 2_000, 60_000]);
        assert_eq!(starts.recent(), [2, 1_000, 3_000, 2_000, 60_000]);
        assert_eq!(starts.expected(), Some(Duration::from_millis(2_000)));
        starts.remember(None, &[1_000, 3_000]);
        assert_eq!(starts.expected(), Some(Duration::from_millis(2_000)));
    }
}
