//! Serving until idle: the accept loops started and stopped, the idle timer,
//! the idle exit that never cuts off an accepted client, and the drain at
//! a stop.

pub mod activity;
pub mod busy;
pub mod context;
pub mod limits;
pub mod listener;
pub mod reload;
pub mod run;
pub mod shutdown;
pub mod work;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::BackendState;
use crate::serve::activity::Countdown;
use crate::serve::context::ServeContext;
use crate::serve::listener::Endpoint;
use crate::serve::shutdown::Shutdown;

/// How a run ended (each is exit status 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Nothing was in flight for the idle timeout.
    Idle,
    /// A stop was requested (SIGTERM, SIGINT).
    Stopped,
    /// The single `Accept=yes` connection ended.
    ConnectionDone,
}

fn spawn_accept_loops(
    endpoints: &[Arc<Endpoint>],
    shared: &ServeContext,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    endpoints
        .iter()
        .map(|e| {
            tokio::spawn(listener::accept_loop(
                e.clone(),
                shared.clone(),
                stop.child_token(),
            ))
        })
        .collect()
}

async fn stop_accepting(accepting: CancellationToken, loops: Vec<tokio::task::JoinHandle<()>>) {
    accepting.cancel();
    for l in loops {
        let _ = l.await;
    }
}

/// Returns once nothing has been in flight for the idle timeout and
/// `--busy-cmd`, if any, does not say busy (busy: the timer starts over).
/// `activated`: an activation that has not started the backend (with wake
/// control), or whose start was abandoned, returns after [`UNWOKEN_GRACE`]
/// instead (see [`unwoken_grace`]). Where the timer stands is told in
/// `shared.countdown` all along.
async fn idle_timer(shared: &ServeContext, activated: bool) {
    loop {
        quiet_for_the_idle_timeout(shared, activated).await;
        match &shared.busy_cmd {
            // Only a backend that was started can be busy.
            Some(cmd) if shared.backend.generation() > 0 => {
                shared.countdown.send_replace(Countdown::Asking);
                if !busy::is_busy(cmd, busy::BUSY_CMD_TIMEOUT).await {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Returns once nothing has been in flight for the idle timeout, as a reload
/// may have changed it meanwhile (a change re-arms the timer).
async fn quiet_for_the_idle_timeout(shared: &ServeContext, activated: bool) {
    let idle = |timeout: Option<Duration>| async move {
        let short = || activated && unwoken(shared);
        shared
            .in_flight
            .idle_telling(
                || unwoken_grace(timeout, short()),
                |countdown| {
                    shared
                        .countdown
                        .send_if_modified(|now| std::mem::replace(now, countdown) != countdown);
                },
            )
            .await
    };
    let mut live = shared.live.clone();
    loop {
        let timeout = live.borrow_and_update().idle;
        tokio::select! {
            _ = idle(timeout) => return,
            changed = live.changed() => if changed.is_err() {
                // No more reloads: this timeout is final.
                return idle(timeout).await;
            },
        }
    }
}

/// The idle timeout an activated run's timer waits now: the live one, or
/// [`UNWOKEN_GRACE`] for an activation that has not started the backend.
pub fn activated_idle_timeout(shared: &ServeContext) -> Option<Duration> {
    unwoken_grace(shared.live().idle, unwoken(shared))
}

/// Whether an activated run has no backend it woke to keep: with wake
/// control it never started it, or its start was abandoned
/// (`--cancel-abandoned-start`): either exits after [`UNWOKEN_GRACE`].
fn unwoken(shared: &ServeContext) -> bool {
    let backend = &shared.backend;
    (shared.wake.settings.lazy() && backend.generation() == 0) || backend.start_abandoned()
}

/// With wake control, how long an activation that never started the
/// backend waits with nothing in flight before it exits.
const UNWOKEN_GRACE: Duration = Duration::from_millis(500);

/// The idle timeout that applies: with wake control, an activation that
/// never started the backend (it only answered rules, or closed clients
/// outside `--wake-from`) exits after [`UNWOKEN_GRACE`] with nothing in
/// flight: a monitor costs one short run, not the idle timeout. Once the
/// backend was started, the idle timeout applies.
fn unwoken_grace(timeout: Option<Duration>, unwoken: bool) -> Option<Duration> {
    match (unwoken, timeout) {
        (true, Some(t)) => Some(t.min(UNWOKEN_GRACE)),
        (true, None) => Some(UNWOKEN_GRACE),
        (false, t) => t,
    }
}

/// Activated: serve until idle or a stop request. At idle, accepting stops
/// first; work that raced in before that is served and the idle timer starts
/// over, so no accepted client is ever cut off by an idle exit. Idle HTTP
/// keep-alive connections are then closed gracefully.
pub async fn serve_until_idle(
    endpoints: &[Arc<Endpoint>],
    shared: &ServeContext,
    shutdown: &Shutdown,
) -> Exit {
    loop {
        let accepting = CancellationToken::new();
        let loops = spawn_accept_loops(endpoints, shared, &accepting);
        let idle = tokio::select! {
            _ = idle_timer(shared, true) => true,
            _ = shutdown.requested() => false,
        };
        stop_accepting(accepting, loops).await;
        if !idle {
            drain(shutdown, shared, shared.live().stop).await;
            return Exit::Stopped;
        }
        if shared.in_flight.count() == 0 {
            // Nothing in flight: what is open are idle HTTP connections. Close
            // them; a request that races in is still answered before they go.
            drain(shutdown, shared, shared.live().stop).await;
            return Exit::Idle;
        }
        tracing::debug!(target: "idlegate", "work arrived as the idle timer fired; serving on");
    }
}

/// Bound by `--listen`: idle stops the backend but keeps listening; the next
/// client starts it again.
pub async fn serve_and_stop_backend_when_idle(
    endpoints: &[Arc<Endpoint>],
    shared: &ServeContext,
    shutdown: &Shutdown,
) -> Exit {
    let accepting = CancellationToken::new();
    let loops = spawn_accept_loops(endpoints, shared, &accepting);
    let mut state = shared.backend.subscribe();
    let idle_stops = async {
        loop {
            // Arm the idle timer only while there is a backend to stop.
            if !matches!(
                *state.borrow(),
                BackendState::Starting | BackendState::Ready
            ) {
                shared.countdown.send_replace(Countdown::NothingToStop);
            }
            if state
                .wait_for(|s| matches!(s, BackendState::Starting | BackendState::Ready))
                .await
                .is_err()
            {
                return;
            }
            idle_timer(shared, false).await;
            if shared.backend.stop_if_idle(&shared.in_flight).await {
                tracing::info!(target: "idlegate", "idle: backend stopped; still listening");
            }
        }
    };
    tokio::select! {
        _ = idle_stops => {}
        _ = shutdown.requested() => {}
    }
    stop_accepting(accepting, loops).await;
    drain(shutdown, shared, shared.live().stop).await;
    Exit::Stopped
}

/// With accepting stopped: asks HTTP connections to finish gracefully and
/// lets open connections and work finish, up to `grace` (a second stop
/// request cuts it short).
pub async fn drain(shutdown: &Shutdown, shared: &ServeContext, grace: Duration) {
    shared.close.cancel();
    if shared.backend.is_external() && !shared.backend.is_ready() {
        // Nothing of idlegate's brings an external backend up, and a stop
        // while it is down usually means it is going or gone (systemd stops
        // a service bound to a backend that failed): the clients held for
        // it get their answer now, not at the end of the grace.
        tracing::info!(target: "idlegate",
            "stopping while the external backend is not ready: closing the clients held for it"
        );
        shared
            .backend
            .shut_down(crate::backend::ShutDownCause::StopRequested)
            .await;
    }
    let (open, busy) = (shared.connections.count(), shared.in_flight.count());
    if open == 0 && busy == 0 {
        return;
    }
    tracing::info!(target: "idlegate",
        "stopping: waiting up to {} for {open} connection(s) and {busy} unit(s) of work to finish",
        humantime::format_duration(grace)
    );
    tokio::select! {
        _ = async { shared.connections.drained().await; shared.in_flight.drained().await } => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(target: "idlegate", "stop timeout reached; closing {} connection(s)", shared.connections.count());
        }
        _ = shutdown.hurried() => {
            tracing::warn!(target: "idlegate", "second stop request; closing {} connection(s) now", shared.connections.count());
        }
    }
}

/// The timer logic, in paused time: what a reload does to the idle timer,
/// and how long the drain waits.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kinds::hooks::Hooks;
    use crate::backend::{Backend, BackendKind, BackendSpec};
    use crate::config::Timeouts;
    use crate::serve::activity::InFlight;
    use tokio::sync::watch;
    use tokio::time::Instant;

    const STOP: Duration = Duration::from_secs(10);

    fn timeouts(idle: Option<u64>) -> Timeouts {
        Timeouts {
            idle: idle.map(Duration::from_secs),
            connection_idle: None,
            udp_flow: Duration::from_secs(30),
            start: Duration::from_secs(60),
            stop: STOP,
        }
    }

    /// A run's context around a backend with nothing to start or stop.
    fn context(idle: Option<u64>) -> (ServeContext, watch::Sender<Timeouts>) {
        let (live_tx, live) = watch::channel(timeouts(idle));
        let in_flight = InFlight::new();
        let spec = BackendSpec {
            stop_timeout: STOP,
            ..BackendSpec::never_ready(BackendKind::Hooks(Hooks {
                start: None,
                stop: None,
            }))
        };
        let shared = ServeContext {
            backend: Backend::spawn(spec, in_flight.clone()),
            in_flight,
            connections: InFlight::new(),
            close: CancellationToken::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(8)),
            live,
            wake: Arc::default(),
            busy_cmd: None,
            countdown: Arc::new(watch::channel(Countdown::Busy).0),
        };
        (shared, live_tx)
    }

    /// When the idle timer of `shared` fires, in seconds from now (`None`:
    /// not within a day).
    fn fires_after(shared: &ServeContext) -> tokio::task::JoinHandle<Option<u64>> {
        let shared = shared.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            let day = Duration::from_secs(86_400);
            tokio::time::timeout(day, idle_timer(&shared, false))
                .await
                .ok()
                .map(|()| start.elapsed().as_secs())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_fires_after_the_idle_timeout_with_nothing_in_flight() {
        let (shared, _live) = context(Some(60));
        assert_eq!(fires_after(&shared).await.unwrap(), Some(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_re_arms_the_idle_timer_with_the_new_timeout() {
        let (shared, live) = context(Some(60));
        let timer = fires_after(&shared);
        tokio::time::sleep(Duration::from_secs(10)).await;
        live.send_replace(timeouts(Some(5)));
        assert_eq!(timer.await.unwrap(), Some(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_to_never_disarms_the_idle_timer_and_a_later_one_arms_it() {
        let (shared, live) = context(Some(60));
        let timer = fires_after(&shared);
        tokio::time::sleep(Duration::from_secs(10)).await;
        live.send_replace(timeouts(None));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!timer.is_finished());
        live.send_replace(timeouts(Some(30)));
        assert_eq!(timer.await.unwrap(), Some(3640));
    }

    /// What the timer tells is when it fires: a voided guard (a probe)
    /// leaves the deadline where it was, a reload moves it, work makes it busy.
    #[tokio::test(start_paused = true)]
    async fn the_countdown_is_the_timers_own_deadline() {
        let (shared, live) = context(Some(60));
        let start = Instant::now();
        let timer = fires_after(&shared);
        let told = || *shared.countdown.borrow();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(told(), Countdown::At(start + Duration::from_secs(60)));
        let probe = shared.in_flight.enter();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(told(), Countdown::Busy);
        probe.void();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            told(),
            Countdown::At(start + Duration::from_secs(60)),
            "a probe does not move the deadline"
        );
        live.send_replace(timeouts(Some(5)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(told(), Countdown::At(start + Duration::from_secs(17)));
        drop(shared.in_flight.enter());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            told(),
            Countdown::At(start + Duration::from_secs(18)),
            "real work moves it"
        );
        assert_eq!(timer.await.unwrap(), Some(18));
    }

    #[tokio::test(start_paused = true)]
    async fn work_in_flight_holds_the_idle_timer_until_it_ends() {
        let (shared, _live) = context(Some(60));
        let work = shared.in_flight.enter();
        let timer = fires_after(&shared);
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(work);
        assert_eq!(timer.await.unwrap(), Some(660));
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_for_an_open_connection_up_to_the_stop_timeout() {
        let (shared, _live) = context(Some(60));
        let shutdown = Shutdown::new();
        let _stuck = shared.connections.enter();
        let start = Instant::now();
        drain(&shutdown, &shared, STOP).await;
        assert_eq!(start.elapsed(), STOP);
        assert!(
            shared.close.is_cancelled(),
            "HTTP connections were asked to close"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_when_the_last_connection_does() {
        let (shared, _live) = context(Some(60));
        let connection = shared.connections.enter();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(connection);
        });
        let start = Instant::now();
        drain(&Shutdown::new(), &shared, STOP).await;
        assert_eq!(start.elapsed().as_secs(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_stop_request_ends_the_drain_at_once() {
        let (shared, _live) = context(Some(60));
        let shutdown = Shutdown::new();
        let _stuck = shared.connections.enter();
        shutdown.request();
        let second = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            second.request();
        });
        let start = Instant::now();
        drain(&shutdown, &shared, STOP).await;
        assert_eq!(start.elapsed().as_secs(), 2);
    }
}
