//! Is the backend answering yet? Connect to its address with a fast backoff.
//!
//! A probe connection is opened and closed; a refused or missing socket means
//! "not yet". The first retry comes within a millisecond or two and the delay
//! stays low, so the wait adds little to the backend's own start time.

use std::io;
use std::time::Duration;

use crate::address::Address;
use crate::net::Stream;

/// The first delay between probes.
const FIRST_DELAY: Duration = Duration::from_millis(1);
/// The longest delay between probes.
const MAX_DELAY: Duration = Duration::from_millis(10);

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

    /// The delay to wait now; the following one is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

/// Whether a failed connect may succeed later, as the backend comes up.
pub fn is_not_ready_yet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EAGAIN)
        || e.raw_os_error() == Some(libc::ECONNREFUSED)
}

/// Probes `address` until it accepts a connection. Never returns an error for
/// "not yet"; the caller bounds the wait with its own deadline.
pub async fn wait_until_accepting(address: &Address) -> io::Result<()> {
    let mut backoff = Backoff::probe();
    loop {
        match Stream::connect(address).await {
            Ok(_probe) => return Ok(()),
            Err(e) if is_not_ready_yet(&e) => tokio::time::sleep(backoff.next_delay()).await,
            Err(e) => return Err(e),
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

    #[tokio::test]
    async fn waits_for_a_late_listener() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let address = Address::parse(&addr.to_string()).unwrap();
        let waiter = tokio::spawn(async move { wait_until_accepting(&address).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
