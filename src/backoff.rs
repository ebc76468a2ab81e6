//! Delays that grow between retries: readiness probes and upstream
//! connects, accept and receive loops out of resources, ready commands.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first delay between probes.
const FIRST_DELAY: Duration = Duration::from_millis(1);
/// The longest delay between probes.
const MAX_DELAY: Duration = Duration::from_millis(2);

/// Delays that double from `first` up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff starting at `first` and capped at `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { next: first, max }
    }

    /// The backoff used for readiness probes and upstream connects.
    pub fn probe() -> Self {
        Self::new(FIRST_DELAY, MAX_DELAY)
    }

    /// The backoff of an accept or receive loop out of resources (EMFILE…):
    /// 50 ms doubling to 1 s.
    pub fn resources() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// The delay to wait now; the following one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Survives a failed accept or receive of a socket's loop: out of
    /// resources (EMFILE…), `exhausted` logs the delay and the loop pauses
    /// for it; any other error is about one client and `other` logs it.
    /// `false` once `stop` is cancelled during the pause: the loop ends.
    pub async fn survive(
        &mut self,
        e: &std::io::Error,
        stop: &CancellationToken,
        exhausted: impl FnOnce(Duration),
        other: impl FnOnce(),
    ) -> bool {
        if !crate::net::is_resource_exhaustion(e) {
            other();
            return true;
        }
        let delay = self.next_delay();
        exhausted(delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
    }
}
