//! Keeps `STATUS=` (sd_notify), the state file and the metrics' snapshot
//! current while idlegate serves: the backend's state, the work in flight,
//! the time to idle exit and the activation number.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::phases::Starts;
use crate::backend::BackendState;
use crate::report::notify::Notifier;
use crate::report::start_history;
use crate::report::status::{self, AtIdle, IdleIn, Snapshot};
use crate::serve::activity::{Countdown, InFlight};

/// How often, at most, the status line is refreshed for a change of the
/// in-flight count alone (a change of the backend's state is told at once),
/// and how often the count is looked at while work is in flight.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// The backend's state in a few words for the administrator (`STATUS=`,
/// `idlegate status`), details included that the waiting page keeps from
/// visitors: while it starts, its own status text (`--ready-notify`) or what
/// the start waits for (`nothing accepted connections on 127.0.0.1:8080`);
/// once failed, why.
fn describe_backend(
    state: &BackendState,
    own_status: Option<&str>,
    waiting_for: Option<&str>,
) -> String {
    let text = match (state, own_status, waiting_for) {
        (BackendState::Starting, Some(text), _) => format!("{} ({text})", state.describe()),
        (BackendState::Starting, None, Some(detail)) => format!("{}: {detail}", state.describe()),
        (BackendState::Failed { reason, .. }, _, _) => format!("{}: {reason}", state.describe()),
        _ => state.describe().to_owned(),
    };
    text.replace(['\n', '\r'], " ")
}

/// What the status reporter watches of the backend.
pub struct BackendView {
    /// Its state.
    pub state: tokio::sync::watch::Receiver<BackendState>,
    /// Its own status text while it starts.
    pub status: tokio::sync::watch::Receiver<Option<Arc<str>>>,
    /// Who woke it.
    pub wake: Arc<crate::wake::WakeGate>,
    /// What a start in progress waits for, in detail.
    pub progress: crate::backend::progress::Progress,
    /// The times of its starts.
    pub starts: Arc<Starts>,
}

/// What the status reporter shows of the idle timer: the timer's own
/// countdown, never a clock of its own.
pub struct IdleView {
    /// Where the serve loop's idle timer stands.
    pub countdown: tokio::sync::watch::Receiver<Countdown>,
    /// What happens when it fires.
    pub at_idle: AtIdle,
}

/// Keeps `STATUS=` and the state file current: backend state, work in
/// flight, time to idle exit, activation number.
pub async fn keep_current(
    notifier: Arc<Notifier>,
    backend: BackendView,
    in_flight: InFlight,
    idle: IdleView,
    state_file: Option<std::path::PathBuf>,
    activation: u64,
    snapshots: tokio::sync::watch::Sender<Option<Snapshot>>,
) {
    let BackendView {
        mut state,
        status: mut backend_status,
        wake,
        progress,
        starts,
    } = backend;
    let IdleView {
        mut countdown,
        at_idle,
    } = idle;
    notifier.wait_ready().await;
    let mut last = String::new();
    let mut last_countdown = None;
    let mut last_start = None;
    let mut files = Files {
        state_file,
        starts_saved: starts.histogram().count,
    };
    let mut sent_at = tokio::time::Instant::now();
    loop {
        let count_changed = in_flight.changed();
        tokio::pin!(count_changed);
        count_changed.as_mut().enable();
        let busy = in_flight.count();
        let timer = *countdown.borrow_and_update();
        let snapshot = Snapshot {
            pid: std::process::id(),
            running: true,
            backend: describe_backend(
                &state.borrow_and_update(),
                backend_status.borrow_and_update().as_deref(),
                crate::backend::progress::detail(&progress).as_deref(),
            ),
            in_flight: busy,
            at_idle,
            idle_in: IdleIn::at(timer, tokio::time::Instant::now()),
            activation,
            woken_by: wake.woken_by().map(str::to_owned),
            last_start: starts.last(),
        };
        let line = snapshot.status_line();
        snapshots.send_replace(Some(snapshot.clone()));
        // The state file says when the timer fires, so it is written when
        // that moves even if the line, in whole seconds, does not.
        if line != last || last_countdown != Some(timer) || snapshot.last_start != last_start {
            sent_at = tokio::time::Instant::now();
            if line != last {
                notifier.status(&line);
            }
            last_countdown = Some(timer);
            last_start.clone_from(&snapshot.last_start);
            files.write(&snapshot);
            last = line;
        }
        files.note_starts(&starts);
        if !next_change(
            &mut state,
            &mut backend_status,
            &mut countdown,
            count_changed,
            sent_at,
            busy > 0,
        )
        .await
        {
            return;
        }
    }
}

/// The files the reporter keeps: the state file, and the start history
/// beside it.
struct Files {
    /// The state file, if any.
    state_file: Option<std::path::PathBuf>,
    /// How many starts the saved history has seen.
    starts_saved: u64,
}

impl Files {
    /// Replaces the state file with `snapshot` (a failure is logged).
    fn write(&self, snapshot: &Snapshot) {
        if let Some(path) = &self.state_file {
            if let Err(e) = status::write(path, snapshot) {
                tracing::debug!(target: "idlegate", "state file {}: {e}", path.display());
            }
        }
    }

    /// Saves the start history after each new start.
    fn note_starts(&mut self, starts: &Starts) {
        let Some(path) = &self.state_file else {
            return;
        };
        let count = starts.histogram().count;
        if count != self.starts_saved {
            start_history::save(&start_history::path_for(path), &starts.recent());
            self.starts_saved = count;
        }
    }
}

/// Waits until the status is worth telling again: a change of the backend's
/// state at once; changes of the count and of the timer, which may come with
/// every request, at most every STATUS_INTERVAL after `sent_at` (the last one
/// always told); at least every second, and while work is in flight
/// (`busy`) every STATUS_INTERVAL: `count_changed` resolves only when the
/// count leaves or reaches zero (waking the reporter at every request would
/// cost every request), and its other changes (an upgrade's request ending
/// as its tunnel goes on) are told as soon. `false` once the backend's
/// watches close: the reporter ends.
async fn next_change(
    state: &mut tokio::sync::watch::Receiver<BackendState>,
    backend_status: &mut tokio::sync::watch::Receiver<Option<Arc<str>>>,
    countdown: &mut tokio::sync::watch::Receiver<Countdown>,
    count_changed: impl std::future::Future<Output = ()>,
    sent_at: tokio::time::Instant,
    busy: bool,
) -> bool {
    let look_again = if busy {
        STATUS_INTERVAL
    } else {
        Duration::from_secs(1)
    };
    tokio::select! {
        changed = state.changed() => if changed.is_err() { return false },
        changed = backend_status.changed() => if changed.is_err() { return false },
        _ = async {
            tokio::select! {
                _ = count_changed => {}
                changed = countdown.changed() => if changed.is_err() {
                    std::future::pending::<()>().await
                },
            }
        } => {
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep_until(sent_at + STATUS_INTERVAL) => {}
            }
        }
        _ = tokio::time::sleep(look_again) => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The administrator sees what a start waits for, addresses included,
    /// and why it failed; the backend's own status text comes first.
    #[test]
    fn the_backend_is_described_with_its_details() {
        let waiting = Some("nothing accepted connections on 127.0.0.1:8080");
        assert_eq!(
            describe_backend(&BackendState::Starting, None, waiting),
            "backend starting: nothing accepted connections on 127.0.0.1:8080"
        );
        assert_eq!(
            describe_backend(&BackendState::Starting, Some("loading"), waiting),
            "backend starting (loading)"
        );
        assert_eq!(
            describe_backend(&BackendState::Ready, None, waiting),
            "backend ready"
        );
        let failed = BackendState::Failed {
            reason: Arc::new(crate::backend::failure::Failure::StartTimeout {
                timeout: Duration::from_secs(2),
                waiting_for: "nothing accepted connections on 127.0.0.1:8080".into(),
                stderr: String::new(),
            }),
            retry_at: tokio::time::Instant::now(),
        };
        assert_eq!(
            describe_backend(&failed, None, None),
            "backend failed: not ready within the start timeout (2s): \
             nothing accepted connections on 127.0.0.1:8080"
        );
    }

    /// What a test reporter is fed, kept alive while it runs.
    struct Fed {
        state: tokio::sync::watch::Sender<BackendState>,
        _status: tokio::sync::watch::Sender<Option<Arc<str>>>,
        _countdown: tokio::sync::watch::Sender<Countdown>,
    }

    /// A reporter of `in_flight` (the backend starting, the timer busy),
    /// and where its snapshots arrive.
    fn reporter(in_flight: &InFlight) -> (Fed, tokio::sync::watch::Receiver<Option<Snapshot>>) {
        let notifier = Arc::new(Notifier::disabled());
        notifier.ready("test");
        let (state_tx, state) = tokio::sync::watch::channel(BackendState::Starting);
        let (status_tx, backend_status) = tokio::sync::watch::channel(None);
        let (countdown_tx, countdown) = tokio::sync::watch::channel(Countdown::Busy);
        let (snapshots, latest) = tokio::sync::watch::channel(None);
        tokio::spawn(keep_current(
            notifier,
            BackendView {
                state,
                status: backend_status,
                wake: Arc::default(),
                progress: Arc::default(),
                starts: Arc::default(),
            },
            in_flight.clone(),
            IdleView {
                countdown,
                at_idle: AtIdle::Exit,
            },
            None,
            1,
            snapshots,
        ));
        let fed = Fed {
            state: state_tx,
            _status: status_tx,
            _countdown: countdown_tx,
        };
        (fed, latest)
    }

    /// A change of the backend's state reaches `STATUS=` (and the state
    /// file, and the metrics) at once, even right after a count change.
    #[tokio::test(start_paused = true)]
    async fn the_status_follows_a_backend_state_change_at_once() {
        let in_flight = InFlight::new();
        let (fed, latest) = reporter(&in_flight);
        let state_tx = &fed.state;
        let described = |latest: &tokio::sync::watch::Receiver<Option<Snapshot>>| {
            latest
                .borrow()
                .as_ref()
                .map(|s| (s.backend.clone(), s.in_flight))
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(described(&latest), Some(("backend starting".into(), 0)));
        let work = in_flight.enter();
        tokio::time::sleep(Duration::from_millis(1)).await;
        state_tx.send_replace(BackendState::Ready);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(described(&latest), Some(("backend ready".into(), 1)));
        drop(work);
        // A count change alone is told within the status interval.
        tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(described(&latest), Some(("backend ready".into(), 0)));
    }

    /// A change of the count that does not cross zero (an upgrade's request
    /// ending as its tunnel goes on: 2 to 1) is told within the status
    /// interval too, not at the next second's look: `idlegate status` and
    /// `status --connections` agree once the work has settled.
    #[tokio::test(start_paused = true)]
    async fn a_count_change_away_from_zero_is_told_within_the_interval() {
        let in_flight = InFlight::new();
        let (_fed, latest) = reporter(&in_flight);
        let count = |latest: &tokio::sync::watch::Receiver<Option<Snapshot>>| {
            latest.borrow().as_ref().map(|s| s.in_flight)
        };
        let tunnel = in_flight.enter();
        tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(count(&latest), Some(1));
        let request = in_flight.enter();
        tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(count(&latest), Some(2), "1 to 2 within the interval");
        drop(request);
        tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(count(&latest), Some(1), "2 to 1 within the interval");
        drop(tunnel);
        tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(count(&latest), Some(0));
    }
}
