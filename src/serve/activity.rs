//! In-flight work and the idle timer.
//!
//! Every unit of work (a client connection) holds an [`InFlightGuard`]; the
//! count goes down only when the guard drops, so work cannot be forgotten on
//! an early return. [`InFlight::idle`] is the idle timer: it arms when the
//! last guard drops, disarms when a new one is taken, and re-checks the count
//! when it fires — the same rule as systemd-socket-proxyd's.
//!
//! A guard that turns out not to be work ([`InFlightGuard::void`]: a
//! connection whose request a rule answered, a client turned away by
//! `--wake-from`) held the count up while it lived, but does not move the
//! idle timer: the timer counts from the end of the last real work.
//!
//! The run's count of work is *listed* ([`InFlight::listed`]): each guard
//! taken with [`InFlight::enter_as`] is an entry of a [`WorkList`] while it
//! lives, which `idlegate status --connections` shows.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::serve::work::{Entry, Traffic, Unit, WorkList, WorkView};

/// The count of work in flight, shared by the accept loops and the idle timer.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Guards alive right now.
    count: AtomicUsize,
    /// Woken whenever the count leaves or reaches zero.
    edge: Notify,
    /// When the count was made: what `last_end` counts from.
    born: Instant,
    /// When the last real work ended (a guard not voided dropped), in
    /// nanoseconds after `born` plus one; 0 = never. An atomic, not a lock:
    /// every connection and request stores it.
    last_end: AtomicU64,
    /// Each unit of work, when the count is listed (boxed: a count of its
    /// own per client connection, never listed, is kept small).
    list: Option<Box<WorkList>>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new(None)
    }
}

impl Shared {
    fn new(list: Option<Box<WorkList>>) -> Shared {
        Shared {
            count: AtomicUsize::new(0),
            edge: Notify::new(),
            born: Instant::now(),
            last_end: AtomicU64::new(0),
            list,
        }
    }

    fn last_end(&self) -> Option<Instant> {
        match self.last_end.load(Ordering::SeqCst) {
            0 => None,
            n => Some(self.born + Duration::from_nanos(n - 1)),
        }
    }

    fn work_ended(&self) {
        let nanos = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_end.fetch_max(nanos + 1, Ordering::SeqCst);
    }
}

/// Where the idle timer stands: what the serve loop's timer tells, and
/// `idlegate status`, `STATUS=` and the metrics show, so they keep no clock
/// of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Countdown {
    /// Fires at this instant if nothing arrives.
    At(Instant),
    /// Work is in flight: the timer starts when it ends.
    Busy,
    /// The timer fired and `--busy-cmd` is asked whether to start it over.
    Asking,
    /// No idle timeout.
    Never,
    /// Not armed: there is no backend to stop (`--listen`, the backend
    /// stopped; the next client starts it).
    NothingToStop,
}

/// Proof that one unit of work is in flight; dropping it ends the work.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard lives"]
pub struct InFlightGuard {
    shared: Arc<Shared>,
    /// Whether its end counts as the end of work (see [`InFlightGuard::void`]).
    real: bool,
    /// Its entry in the list, when the count is listed.
    listed: Option<(u64, Arc<Entry>)>,
}

impl InFlightGuard {
    /// Where the bytes this work moves are counted (`None` for a guard
    /// that is not listed).
    pub fn traffic(&self) -> Option<&Traffic> {
        self.listed.as_ref().map(|(_, entry)| &entry.traffic)
    }

    /// Its entry, for a body that counts bytes after the guard moved on.
    pub fn entry(&self) -> Option<Arc<Entry>> {
        self.listed.as_ref().map(|(_, entry)| entry.clone())
    }

    /// Ends this guard as not having been work: the count goes down, but the
    /// idle timer does not start over from now.
    pub fn void(mut self) {
        self.real = false;
    }
}

impl InFlight {
    /// A new, empty count.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty count that lists each unit of work taken with
    /// [`InFlight::enter_as`]: the run's own.
    pub fn listed() -> Self {
        InFlight {
            shared: Arc::new(Shared::new(Some(Box::default()))),
        }
    }

    /// Counts one more unit of work until the returned guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.enter_listing(None)
    }

    /// Counts `unit` as work until the returned guard drops, and lists it
    /// meanwhile if this count is listed.
    pub fn enter_as(&self, unit: Unit) -> InFlightGuard {
        self.enter_listing(Some(unit))
    }

    fn enter_listing(&self, unit: Option<Unit>) -> InFlightGuard {
        // Listed before it is counted: whoever sees the count sees the entry.
        let listed = match (&self.shared.list, unit) {
            (Some(list), Some(unit)) => Some(list.add(unit)),
            _ => None,
        };
        if self.shared.count.fetch_add(1, Ordering::SeqCst) == 0 {
            self.shared.edge.notify_waiters();
        }
        InFlightGuard {
            shared: self.shared.clone(),
            real: true,
            listed,
        }
    }

    /// Each unit of work in flight now (empty for a count that is not listed).
    pub fn views(&self) -> Vec<WorkView> {
        self.shared
            .list
            .as_deref()
            .map(WorkList::views)
            .unwrap_or_default()
    }

    /// How much work is in flight now.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Since when nothing has been in flight (the end of the last real
    /// work, or the count's making); `None` while something is. Read
    /// without waiting, for a caller that looks now and then rather than
    /// being woken at every change.
    pub fn quiet_since(&self) -> Option<Instant> {
        (self.count() == 0).then(|| self.shared.last_end().unwrap_or(self.shared.born))
    }

    /// Resolves when the count next leaves or reaches zero: what a status
    /// reporter waits on. Pin it and call `enable` before reading the count,
    /// so a change between the read and the wait is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.edge.notified()
    }

    /// Waits until the count is zero and no real work has ended for
    /// `timeout` (counted from this call at the earliest).
    pub async fn idle(&self, timeout: Duration) {
        self.idle_telling(|| Some(timeout), |_| {}).await
    }

    /// [`InFlight::idle`] for a timeout that may change with what the work
    /// did (`timeout` is asked again at every edge of the count; `None`:
    /// none, wait for the next edge), telling `tell` where the timer stands
    /// whenever that changes: the one clock `idlegate status` shows.
    pub async fn idle_telling(
        &self,
        mut timeout: impl FnMut() -> Option<Duration>,
        mut tell: impl FnMut(Countdown),
    ) {
        let armed = Instant::now();
        loop {
            let edge = self.shared.edge.notified();
            tokio::pin!(edge);
            // Register before reading the count, so an edge between the read and
            // the wait is not missed.
            edge.as_mut().enable();
            if self.count() != 0 {
                tell(Countdown::Busy);
                edge.await;
                continue;
            }
            let Some(timeout) = timeout() else {
                tell(Countdown::Never);
                edge.await;
                continue;
            };
            let since = self.shared.last_end().map_or(armed, |end| end.max(armed));
            tell(Countdown::At(since + timeout));
            tokio::select! {
                _ = tokio::time::sleep_until(since + timeout) => {
                    if self.count() == 0 {
                        return;
                    }
                }
                _ = edge => {}
            }
        }
    }

    /// Waits until nothing is in flight (no timer): the drain on shutdown.
    pub async fn drained(&self) {
        loop {
            let edge = self.shared.edge.notified();
            tokio::pin!(edge);
            edge.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            edge.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.real {
            // Before the count goes down: a timer that sees zero sees this end.
            self.shared.work_ended();
        }
        if let (Some(list), Some((id, _))) = (&self.shared.list, &self.listed) {
            list.remove(*id);
        }
        if self.shared.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.edge.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_a_quiet_period() {
        let in_flight = InFlight::new();
        let start = Instant::now();
        in_flight.idle(Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        let guard = in_flight.enter();
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                in_flight.idle(Duration::from_secs(5)).await;
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "a guard keeps it busy however long");
        drop(guard);
        let elapsed = waiter.await.unwrap();
        assert_eq!(elapsed, Duration::from_secs(65));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_during_the_timer_restarts_it() {
        let in_flight = InFlight::new();
        let task = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                in_flight.idle(Duration::from_secs(5)).await;
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let g = in_flight.enter();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(g);
        assert_eq!(task.await.unwrap(), Duration::from_secs(9));
        assert_eq!(in_flight.count(), 0);
    }

    /// A voided guard (a probe answered by a rule) holds the timer while it
    /// lives but does not restart it: probes every 2 s under a 5 s timeout
    /// do not keep it from firing.
    #[tokio::test(start_paused = true)]
    async fn voided_guards_do_not_restart_the_timer() {
        let in_flight = InFlight::new();
        drop(in_flight.enter());
        let start = Instant::now();
        let task = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.idle(Duration::from_secs(5)).await })
        };
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let probe = in_flight.enter();
            tokio::time::sleep(Duration::from_millis(100)).await;
            probe.void();
        }
        task.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_since_is_the_end_of_the_last_real_work() {
        let in_flight = InFlight::new();
        let born = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            in_flight.quiet_since(),
            Some(born),
            "never busy: since its making"
        );
        let guard = in_flight.enter();
        assert_eq!(in_flight.quiet_since(), None);
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(guard);
        let ended = Instant::now();
        let probe = in_flight.enter();
        tokio::time::sleep(Duration::from_secs(1)).await;
        probe.void();
        assert_eq!(
            in_flight.quiet_since(),
            Some(ended),
            "a voided guard's end is not work's end"
        );
    }
}
