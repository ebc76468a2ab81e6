//! Who waits for a start: the clients held for it (a TCP connection, an
//! HTTP request, a UDP flow), at most `--hold-max` of them, and those that
//! only watch it (the waiting page's visitors, `idlegate inhibit`).
//!
//! The supervisor follows the count: with `--cancel-abandoned-start`, a
//! start that had waiters and has had none for that long is cancelled.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How many wait for the start in progress now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Clients held for the start (bounded by `--hold-max`).
    pub held: usize,
    /// Of them, those seen closing while held: still held (a TCP client may
    /// only have closed its sending side), no longer waiting.
    pub left: usize,
    /// Waiting page visitors and `inhibit` clients: not held, still waiting.
    pub watching: usize,
}

impl Waiting {
    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.held == self.left && self.watching == 0
    }
}

/// The count of waiters, shared by the handles and the supervisor.
#[derive(Debug)]
pub(super) struct Holds {
    /// The count now; the supervisor subscribes to it.
    waiting: watch::Sender<Waiting>,
    /// `--hold-max`; 0 for no limit.
    max: AtomicUsize,
}

impl Holds {
    /// A count of none, with `--hold-max` `max`.
    pub(super) fn new(max: Option<usize>) -> Arc<Holds> {
        Arc::new(Holds {
            waiting: watch::channel(Waiting::default()).0,
            max: AtomicUsize::new(max.unwrap_or(0)),
        })
    }

    /// A new `--hold-max` (a reload), for the clients to come.
    pub(super) fn set_max(&self, max: Option<usize>) {
        self.max.store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// A receiver that sees every change of the count.
    pub(super) fn subscribe(&self) -> watch::Receiver<Waiting> {
        self.waiting.subscribe()
    }

    /// The count now.
    pub(super) fn now(&self) -> Waiting {
        *self.waiting.borrow()
    }

    /// Holds one more client, unless `--hold-max` are held already.
    pub(super) fn hold(self: &Arc<Self>) -> Result<Hold, HoldRefused> {
        let max = self.max.load(Ordering::Relaxed);
        let taken = self.waiting.send_if_modified(|w| {
            if max != 0 && w.held >= max {
                return false;
            }
            w.held += 1;
            true
        });
        match taken {
            true => Ok(Hold {
                holds: self.clone(),
                held: true,
                left: false,
            }),
            false => Err(HoldRefused { max }),
        }
    }

    /// Counts one more watcher (never refused).
    pub(super) fn watch(self: &Arc<Self>) -> Hold {
        self.waiting.send_modify(|w| w.watching += 1);
        Hold {
            holds: self.clone(),
            held: false,
            left: false,
        }
    }
}

/// One waiter, counted until dropped.
#[derive(Debug)]
pub struct Hold {
    holds: Arc<Holds>,
    /// Held (counted against `--hold-max`) rather than watching.
    held: bool,
    /// The client was seen closing.
    left: bool,
}

impl Hold {
    /// The client closed while held: it keeps its place under `--hold-max`
    /// but no longer counts as waiting for the start.
    pub fn client_left(&mut self) {
        if self.held && !std::mem::replace(&mut self.left, true) {
            self.holds.waiting.send_modify(|w| w.left += 1);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let (held, left) = (self.held, self.left);
        self.holds.waiting.send_modify(|w| {
            match held {
                true => w.held -= 1,
                false => w.watching -= 1,
            }
            if left {
                w.left -= 1;
            }
        });
    }
}

/// A client beyond `--hold-max` while the backend starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{max} client(s) are held for the start already (--hold-max)")]
pub struct HoldRefused {
    /// The limit.
    pub max: usize,
}

/// What the supervisor follows to cancel a start nobody waits for any more
/// (`--cancel-abandoned-start`).
#[derive(Debug)]
pub(super) struct Abandonment {
    /// Who waits for the start in progress.
    waiting: watch::Receiver<Waiting>,
    /// Shared with the handles: the start last cancelled for it.
    abandoned: Arc<AtomicU64>,
    /// Whether the start in progress has had a waiter (a start nobody asked
    /// for, at activation or by `inhibit`, is never cancelled).
    had_waiters: bool,
    /// When the start in progress is cancelled if still nobody waits.
    at: Option<Instant>,
}

/// Following nobody: no start is ever abandoned.
impl Default for Abandonment {
    fn default() -> Self {
        Abandonment::new(
            watch::channel(Waiting::default()).1,
            Arc::new(AtomicU64::new(0)),
        )
    }
}

impl Abandonment {
    /// Following `waiting`, telling cancelled starts in `abandoned`.
    pub(super) fn new(waiting: watch::Receiver<Waiting>, abandoned: Arc<AtomicU64>) -> Self {
        Abandonment {
            waiting,
            abandoned,
            had_waiters: false,
            at: None,
        }
    }

    /// A start begins: it has had no waiter yet.
    pub(super) fn begin(&mut self) {
        self.had_waiters = false;
        self.at = None;
    }

    /// The start is over (or cancelled): no cancel is due.
    pub(super) fn disarm(&mut self) {
        self.at = None;
    }

    /// Returns when the count of waiters changes (never once no handle is left).
    pub(super) async fn changed(&mut self) {
        if self.waiting.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Takes the count now into account: a start (`starting`) that had
    /// waiters and has none is due to be cancelled after `grace`, unless
    /// one comes meanwhile.
    pub(super) fn follow(&mut self, grace: Option<Duration>, starting: bool) {
        let Some(grace) = grace else {
            return;
        };
        let nobody = self.waiting.borrow_and_update().is_empty();
        if !starting {
            self.at = None;
        } else if !nobody {
            self.had_waiters = true;
            self.at = None;
        } else if self.had_waiters && self.at.is_none() {
            self.at = Some(Instant::now() + grace);
        }
    }

    /// When the start in progress is to be cancelled, if it is.
    pub(super) fn due(&self) -> Option<Instant> {
        self.at
    }

    /// Whether nobody waits now.
    pub(super) fn nobody(&self) -> bool {
        self.waiting.borrow().is_empty()
    }

    /// Tells the handles that start `generation` was cancelled.
    pub(super) fn cancelled(&self, generation: u64) {
        self.abandoned.store(generation, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_are_held_and_a_dropped_hold_frees_its_place() {
        let holds = Holds::new(Some(2));
        let a = holds.hold().unwrap();
        let _b = holds.hold().unwrap();
        assert_eq!(holds.hold().unwrap_err(), HoldRefused { max: 2 });
        let _watcher = holds.watch();
        assert_eq!(
            holds.now(),
            Waiting {
                held: 2,
                left: 0,
                watching: 1
            }
        );
        drop(a);
        let _c = holds.hold().unwrap();
        assert!(holds.hold().is_err());
    }

    #[test]
    fn a_client_that_left_keeps_its_place_but_no_longer_waits() {
        let holds = Holds::new(Some(1));
        let mut a = holds.hold().unwrap();
        a.client_left();
        a.client_left();
        assert!(holds.now().is_empty(), "nobody waits");
        assert!(holds.hold().is_err(), "its place is still taken");
        drop(a);
        assert_eq!(holds.now(), Waiting::default());
    }

    #[test]
    fn without_a_limit_every_client_is_held() {
        let holds = Holds::new(None);
        let all: Vec<Hold> = (0..100).map(|_| holds.hold().unwrap()).collect();
        assert_eq!(holds.now().held, 100);
        drop(all);
        assert!(holds.now().is_empty());
    }

    /// The supervisor's side, in paused time, in front of a backend that
    /// never gets ready: a start is cancelled only once it had waiters and
    /// none has come back for the grace.
    #[tokio::test(start_paused = true)]
    async fn a_start_is_cancelled_once_nobody_has_waited_for_the_grace() {
        use crate::backend::kinds::hooks::Hooks;
        use crate::backend::{Backend, BackendError, BackendKind, BackendSpec, BackendState};
        let spec = BackendSpec {
            start_timeout: Duration::from_secs(3600),
            cancel_abandoned_start: Some(Duration::from_secs(1)),
            ..BackendSpec::never_ready(BackendKind::Hooks(Hooks {
                start: None,
                stop: None,
            }))
        };
        let backend = Backend::spawn(spec, crate::serve::activity::InFlight::new());
        let sleep = |ms| tokio::time::sleep(Duration::from_millis(ms));
        backend.start();
        sleep(5000).await;
        assert_eq!(
            backend.state(),
            BackendState::Starting,
            "nobody ever waited"
        );
        let held = backend.hold().unwrap().unwrap();
        let asked = {
            let backend = backend.clone();
            let deadline = Instant::now() + Duration::from_secs(3600);
            tokio::spawn(async move { backend.wait_ready(deadline).await })
        };
        sleep(5000).await;
        drop(held);
        sleep(900).await;
        assert_eq!(backend.state(), BackendState::Starting, "within the grace");
        let watcher = backend.watch_start();
        sleep(5000).await;
        assert_eq!(backend.state(), BackendState::Starting, "a watcher waits");
        drop(watcher);
        sleep(1100).await;
        assert_eq!(backend.state(), BackendState::Stopped);
        assert!(backend.start_abandoned());
        assert!(matches!(asked.await.unwrap(), Err(BackendError::Abandoned)));
        // A new client starts it again.
        let _again = backend.hold().unwrap().unwrap();
        backend.start();
        sleep(10).await;
        assert_eq!(backend.state(), BackendState::Starting);
        assert!(!backend.start_abandoned());
    }
}
