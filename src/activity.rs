//! In-flight work and the idle timer.
//!
//! Every unit of work (a client connection) holds an [`InFlightGuard`]; the
//! count goes down only when the guard drops, so work cannot be forgotten on
//! an early return. [`InFlight::idle`] is the idle timer: it arms when the
//! last guard drops, disarms when a new one is taken, and re-checks the count
//! when it fires — the same rule as systemd-socket-proxyd's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The count of work in flight, shared by the accept loops and the idle timer.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Guards alive right now.
    count: AtomicUsize,
    /// Woken whenever the count leaves or reaches zero.
    edge: Notify,
}

/// Proof that one unit of work is in flight; dropping it ends the work.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard lives"]
pub struct InFlightGuard {
    shared: Arc<Shared>,
}

impl InFlight {
    /// A new, empty count.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more unit of work until the returned guard drops.
    pub fn enter(&self) -> InFlightGuard {
        if self.shared.count.fetch_add(1, Ordering::SeqCst) == 0 {
            self.shared.edge.notify_waiters();
        }
        InFlightGuard {
            shared: self.shared.clone(),
        }
    }

    /// How much work is in flight now.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Resolves when the count next leaves or reaches zero: what a status
    /// reporter waits on. Pin it and call `enable` before reading the count,
    /// so a change between the read and the wait is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.edge.notified()
    }

    /// Waits until the count has been zero for `timeout` without interruption.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let edge = self.shared.edge.notified();
            tokio::pin!(edge);
            // Register before reading the count, so an edge between the read and
            // the wait is not missed.
            edge.as_mut().enable();
            if self.count() != 0 {
                edge.await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {
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
}
