//! The supervisor: the one task that owns the backend (its process, its
//! start hook or container, its readiness probe) and the only one that
//! changes its [`BackendState`]. It answers the handles' requests (start,
//! stop, reconfigure, a refused connection) and notices a backend that dies.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::failure::Failure;
use super::hold::Abandonment;
use super::kinds::process::Process;
use super::kinds::run_command::RunCommand;
use super::kinds::{Launched, StartStep};
use super::phases::{self, Starts};
use super::progress::{clear, Progress};
use super::ready::notify_socket::{BackendStatus, NotifySocket};
use super::ready::probe::Probe;
use super::{BackendSpec, BackendState, Request, ShutDownCause};
use crate::serve::activity::{InFlight, InFlightGuard};

/// The first delay before retrying a failed start.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest delay before retrying a failed start.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// A backend that stayed ready this long before dying starts its failure count afresh.
const HEALTHY_UPTIME: Duration = Duration::from_secs(10);

/// The start in progress: start hook (if any), then readiness, under a deadline.
type Starting =
    Pin<Box<dyn Future<Output = Result<Result<(), Failure>, tokio::time::error::Elapsed>> + Send>>;

/// The task that owns the backend process.
pub(super) struct Supervisor {
    /// Shared with the handles: reset at every start.
    answered: Arc<AtomicBool>,
    spec: BackendSpec,
    state: watch::Sender<BackendState>,
    requests: mpsc::UnboundedReceiver<Request>,
    /// The running child, for a command backend.
    process: Option<Process>,
    /// The readiness probe of the start in progress, bounded by the start timeout.
    probe: Option<Starting>,
    /// When the start in progress began.
    started_at: Instant,
    /// Since when the backend has been ready.
    ready_since: Option<Instant>,
    /// Failed starts (and early deaths) in a row.
    failures: u32,
    /// A start hook ran (or was running) or the container was started, so
    /// the stop action is due.
    stop_due: bool,
    /// What the start in progress waits for, when more than readiness.
    progress: Progress,
    /// The backend command, when it is `podman run` / `docker run`.
    run_command: Option<RunCommand>,
    /// Settings from a reload, taken up at the next start.
    next_spec: Option<BackendSpec>,
    /// Shared with the handles: incremented at every start.
    generation: Arc<AtomicU64>,
    /// A start asked for during the retry backoff, due then.
    pending_start: Option<Instant>,
    /// The work count in which a start in progress is counted.
    in_flight: InFlight,
    /// Held from the start of a start to its end, ready or failed.
    starting: Option<InFlightGuard>,
    /// The backend's own status text, while it starts.
    status: BackendStatus,
    /// The times of the starts, shared with the handles.
    starts: Arc<Starts>,
    /// Whether the start in progress is abandoned.
    abandonment: Abandonment,
}

impl Supervisor {
    /// The supervisor of `spec`, talking through these channels and shared values.
    pub(super) fn new(
        spec: BackendSpec,
        state: watch::Sender<BackendState>,
        requests: mpsc::UnboundedReceiver<Request>,
        answered: Arc<AtomicBool>,
        generation: Arc<AtomicU64>,
        in_flight: InFlight,
        status: BackendStatus,
    ) -> Supervisor {
        let run_command = spec.kind.run_command();
        Supervisor {
            answered,
            spec,
            state,
            requests,
            process: None,
            probe: None,
            started_at: Instant::now(),
            ready_since: None,
            failures: 0,
            stop_due: false,
            progress: Progress::default(),
            run_command,
            next_spec: None,
            generation,
            pending_start: None,
            in_flight,
            starting: None,
            status,
            starts: Arc::default(),
            abandonment: Abandonment::default(),
        }
    }

    /// Follows who waits for each start, to cancel one nobody waits for
    /// any more (`--cancel-abandoned-start`).
    pub(super) fn following(mut self, abandonment: Abandonment) -> Supervisor {
        self.abandonment = abandonment;
        self
    }

    /// What the start in progress waits for, shared with the handles.
    pub(super) fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The times of the starts, shared with the handles.
    pub(super) fn starts(&self) -> Arc<Starts> {
        self.starts.clone()
    }
}

async fn wait_exit(process: &mut Option<Process>) -> std::io::Result<std::process::ExitStatus> {
    match process {
        Some(p) => p.wait().await,
        None => std::future::pending().await,
    }
}

async fn poll_probe(
    probe: &mut Option<Starting>,
) -> Result<Result<(), Failure>, tokio::time::error::Elapsed> {
    match probe {
        Some(p) => p.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Runs until the handles are gone or idlegate shuts the backend down.
    pub(super) async fn run(mut self) {
        loop {
            let abandon_at = self.abandonment.due();
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(Request::Start) => self.request_start().await,
                    Some(Request::Reconfigure(spec)) => self.next_spec = Some(*spec),
                    Some(Request::Refused { generation, upstream }) => {
                        if generation == self.generation.load(Ordering::Acquire)
                            && *self.state.borrow() == BackendState::Ready
                        {
                            self.fail(Failure::StoppedAccepting { upstream }).await;
                        }
                    }
                    Some(Request::Stop { only_if_idle, done }) => {
                        let stopped = self.stop(only_if_idle.as_ref(), false).await;
                        let _ = done.send(stopped);
                    }
                    Some(Request::ShutDown { why, done }) => {
                        self.stop(None, why == ShutDownCause::StopRequested).await;
                        self.set(BackendState::ShutDown);
                        let _ = done.send(());
                        break;
                    }
                    None => {
                        self.stop(None, false).await;
                        break;
                    }
                },
                status = wait_exit(&mut self.process) => self.on_exit(status).await,
                result = poll_probe(&mut self.probe) => self.on_probe(result).await,
                _ = sleep_until(self.pending_start) => {
                    self.pending_start = None;
                    self.begin_start().await;
                }
                () = self.abandonment.changed() => self.follow_waiters(),
                _ = sleep_until(abandon_at) => self.abandon().await,
            }
        }
        // Refuse every later request: the handles see ShutDown and give up.
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Start | Request::Reconfigure(_) | Request::Refused { .. } => {}
                Request::Stop { done, .. } => {
                    let _ = done.send(true);
                }
                Request::ShutDown { done, .. } => {
                    let _ = done.send(());
                }
            }
        }
        self.set(BackendState::ShutDown);
    }

    fn set(&mut self, state: BackendState) {
        let starting = state == BackendState::Starting;
        self.state.send_replace(state);
        if !starting {
            // The start is over, ready or not: no longer work of its own,
            // and the backend's own start-up status is stale.
            self.abandonment.disarm();
            self.starting = None;
            self.status.send_if_modified(|s| s.take().is_some());
        }
    }

    async fn request_start(&mut self) {
        let now = self.state.borrow().clone();
        match now {
            BackendState::Stopped => self.begin_start().await,
            BackendState::Failed { retry_at, .. } if retry_at <= Instant::now() => {
                self.begin_start().await
            }
            BackendState::Failed { retry_at, .. } => {
                if self.pending_start.is_none() {
                    self.pending_start = Some(retry_at);
                }
            }
            BackendState::Starting
            | BackendState::Ready
            | BackendState::Stopping
            | BackendState::ShutDown => {}
        }
    }

    async fn begin_start(&mut self) {
        if !matches!(
            *self.state.borrow(),
            BackendState::Stopped | BackendState::Failed { .. }
        ) {
            return;
        }
        if let Some(spec) = self.next_spec.take() {
            self.run_command = spec.kind.run_command();
            self.spec = spec;
        }
        self.started_at = self.starts.begin();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.answered.store(false, Ordering::Relaxed);
        clear(&self.progress);
        if let Some(run) = self.run_command.clone() {
            run.remove_leftover_before_start().await;
        }
        let launched = self.notify_socket().and_then(|notify| {
            let launched = self.spec.kind.launch(notify.as_ref(), &self.progress)?;
            Ok((notify, launched))
        });
        let (notify, launched) = match launched {
            Ok(launched) => launched,
            Err(failure) => return self.fail(failure).await,
        };
        let step = self.keep(launched);
        self.starting = Some(
            self.in_flight
                .enter_as(crate::serve::work::Unit::BackendStart),
        );
        self.set(BackendState::Starting);
        self.abandonment.begin();
        self.follow_waiters();
        let probe = Probe {
            notify,
            status: self.status.clone(),
            ready: self.spec.ready.clone(),
            ready_http: self.spec.ready_http.clone(),
            ready_cmd: self.spec.ready_cmd.clone(),
            progress: self.progress.clone(),
            starts: self.starts.clone(),
        };
        let deadline = self.started_at + self.spec.start_timeout;
        let wake_on_lan = self.spec.wake_on_lan.clone();
        let watched = step.as_ref().and_then(StartStep::watched);
        self.probe = Some(Box::pin(tokio::time::timeout_at(deadline, async move {
            let start = async {
                if let Some(step) = step {
                    step.run(&probe.progress, &probe.starts).await?;
                }
                match watched {
                    Some(watched) => tokio::select! {
                        ready = probe.run() => ready,
                        failed = watched.first_failure() => Err(failed),
                    },
                    None => probe.run().await,
                }
            };
            match wake_on_lan {
                Some(wake) => wake.during(start).await,
                None => start.await,
            }
        })));
    }

    /// Keeps what a launch gave: the child process, or the start step still
    /// to run (a container, a unit, a command), which is returned.
    fn keep(&mut self, launched: Launched) -> Option<StartStep> {
        match launched {
            Launched::Process(p) => {
                self.starts.mark(phases::STARTED);
                self.process = Some(p);
                None
            }
            Launched::Step(step) => {
                self.stop_due = true;
                Some(step)
            }
            Launched::Nothing => {
                tracing::info!(target: "idlegate::backend",
                    "waiting for the external backend on {}",
                    self.spec.ready_list()
                );
                None
            }
        }
    }

    /// Notes who waits for the start in progress (see [`Abandonment`]).
    fn follow_waiters(&mut self) {
        let starting = *self.state.borrow() == BackendState::Starting;
        self.abandonment
            .follow(self.spec.cancel_abandoned_start, starting);
    }

    /// Cancels the start in progress, which nobody has waited for since
    /// `--cancel-abandoned-start`: the backend is stopped as when idle.
    async fn abandon(&mut self) {
        self.abandonment.disarm();
        if *self.state.borrow() != BackendState::Starting || !self.abandonment.nobody() {
            return;
        }
        let grace = self.spec.cancel_abandoned_start.unwrap_or_default();
        tracing::info!(target: "idlegate::backend",
            "start abandoned: no client waited for {}; stopping backend",
            humantime::format_duration(grace)
        );
        self.abandonment
            .cancelled(self.generation.load(Ordering::Acquire));
        self.stop(None, false).await;
    }

    /// A notify socket for this start, with `--ready-notify`.
    fn notify_socket(&self) -> Result<Option<NotifySocket>, Failure> {
        let Some(dir) = &self.spec.ready_notify else {
            return Ok(None);
        };
        NotifySocket::bind(dir)
            .map(Some)
            .map_err(|error| Failure::NotifySocket {
                dir: dir.clone(),
                error,
            })
    }

    async fn on_probe(&mut self, result: Result<Result<(), Failure>, tokio::time::error::Elapsed>) {
        self.probe = None;
        match result {
            Ok(Ok(())) => {
                let took = self.starts.ready();
                tracing::info!(target: "idlegate::backend",
                    "backend ready on {} after {}ms ({})",
                    self.spec.ready_list(),
                    took.total_ms,
                    took.breakdown()
                );
                self.ready_since = Some(Instant::now());
                if self.spec.ready_http.is_some() {
                    // The app itself answered the probe: no port forwarder
                    // hides it any more (see `Backend::has_answered`).
                    self.answered.store(true, Ordering::Relaxed);
                }
                self.set(BackendState::Ready);
            }
            Ok(Err(reason)) => self.fail(reason).await,
            Err(_) => {
                let waiting_for = self.progress.lock().expect("progress lock").take();
                let waiting_for = waiting_for.map(|w| w.detail);
                let stderr = match &mut self.process {
                    Some(p) => p.stderr_tail().await,
                    None => String::new(),
                };
                let failure = Failure::StartTimeout {
                    timeout: self.spec.start_timeout,
                    waiting_for: waiting_for.unwrap_or_else(|| {
                        format!("nothing accepted connections on {}", self.spec.ready_list())
                    }),
                    stderr,
                };
                self.fail(failure).await;
            }
        }
    }

    async fn on_exit(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        let status = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown status ({e})"),
        };
        let failure = Failure::Exited {
            stderr: p.stderr_tail().await,
            command: p.command().to_owned(),
            pid: p.pid(),
            status,
            during_start: self.probe.take().is_some(),
        };
        // The leader is gone; take the rest of its group with it.
        p.stop(Duration::ZERO).await;
        self.after_process_stop().await;
        if let Some(since) = self.ready_since.take() {
            if since.elapsed() >= HEALTHY_UPTIME {
                self.failures = 0;
            }
        }
        self.fail(failure).await;
    }

    /// Records a failed start (or a death), stops what is left, and sets the backoff.
    async fn fail(&mut self, reason: Failure) {
        self.probe = None;
        self.ready_since = None;
        if let Some(p) = self.process.take() {
            p.stop(self.spec.stop_timeout).await;
            self.after_process_stop().await;
        }
        self.run_stop_hook(false).await;
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_RETRY_DELAY
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(MAX_RETRY_DELAY);
        tracing::error!(target: "idlegate::backend",
            "backend failed: {reason}; the next connection retries (not before {}ms)",
            delay.as_millis()
        );
        self.set(BackendState::Failed {
            reason: Arc::new(reason),
            retry_at: Instant::now() + delay,
        });
    }

    /// Stops the backend (`only_if_idle`: unless work is in flight);
    /// `for_good` (a stop of the service) stops a container that pauses when
    /// idle, a paused one too, instead of pausing it.
    async fn stop(&mut self, only_if_idle: Option<&InFlight>, for_good: bool) -> bool {
        let previous = self.state.borrow().clone();
        if let Some(in_flight) = only_if_idle {
            if matches!(
                previous,
                BackendState::Stopped
                    | BackendState::Failed { .. }
                    | BackendState::ShutDown
                    // A start in progress is work: it is never stopped as idle.
                    | BackendState::Starting
            ) {
                return false;
            }
            // Announce the stop before looking at the count: a connection that
            // counted itself before this fence is seen below; one that counts
            // itself after it sees Stopping and waits for the restart.
            self.set(BackendState::Stopping);
            fence(Ordering::SeqCst);
            if in_flight.count() > 0 {
                self.set(previous);
                return false;
            }
        }
        self.pending_start = None;
        self.probe = None;
        self.ready_since = None;
        self.failures = 0;
        if let Some(p) = self.process.take() {
            self.set(BackendState::Stopping);
            let pid = p.pid();
            tracing::info!(target: "idlegate::backend", pid, "stopping backend");
            match p.stop(self.spec.stop_timeout).await {
                Some(status) => {
                    tracing::info!(target: "idlegate::backend", pid, "backend stopped: {status}")
                }
                None => {
                    tracing::warn!(target: "idlegate::backend", pid, "backend stopped; its exit status is unknown")
                }
            }
            self.after_process_stop().await;
        }
        self.run_stop_hook(for_good).await;
        self.set(BackendState::Stopped);
        true
    }

    /// Removes the container a killed `podman run` left running, if any.
    async fn after_process_stop(&mut self) {
        if let Some(run) = self.run_command.clone() {
            run.remove_leftover_after_stop().await;
        }
    }

    /// Runs the stop hook or stops the container, if a start made it due;
    /// a hook is bounded by the stop timeout. `for_good` stops a container
    /// that pauses when idle, and one an idle pause left paused.
    async fn run_stop_hook(&mut self, for_good: bool) {
        if !std::mem::take(&mut self.stop_due) {
            if for_good {
                self.spec.kind.stop_paused(self.spec.stop_timeout).await;
            }
            return;
        }
        if self.spec.kind.stop_takes_time() {
            self.set(BackendState::Stopping);
        }
        self.spec
            .kind
            .stop_started(self.spec.stop_timeout, for_good)
            .await;
    }
}

/// The retry backoff, in paused time.
#[cfg(test)]
mod tests {
    use super::super::{
        Backend, BackendError, BackendKind, BackendSpec, BackendState, ShutDownCause,
    };
    use super::*;

    fn spec(kind: BackendKind) -> BackendSpec {
        BackendSpec::never_ready(kind)
    }

    /// Each client waits for the next start, which fails: the delays before
    /// a retry double from 100 ms up to 10 s, and each failure names its cause.
    #[tokio::test(start_paused = true)]
    async fn failed_starts_are_retried_after_doubling_delays_up_to_ten_seconds() {
        let missing = vec!["/nonexistent/idlegate-test-backend".to_owned()];
        let backend = Backend::spawn(spec(BackendKind::Process(missing)), InFlight::new());
        let mut delays = Vec::new();
        for _ in 0..9 {
            let deadline = Instant::now() + Duration::from_secs(3600);
            let Err(BackendError::Failed(failure)) = backend.wait_ready(deadline).await else {
                panic!("the start should fail");
            };
            assert!(matches!(*failure, Failure::Spawn { .. }), "{failure}");
            let BackendState::Failed { retry_at, .. } = backend.state() else {
                panic!("failed");
            };
            delays.push((retry_at - Instant::now()).as_millis());
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        backend.shut_down(ShutDownCause::StopRequested).await;
    }

    /// A client whose start timeout ends before the retry is due gets the
    /// failure at once, without waiting.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_cannot_outlast_the_backoff_gets_the_failure_at_once() {
        let missing = vec!["/nonexistent/idlegate-test-backend".to_owned()];
        let backend = Backend::spawn(spec(BackendKind::Process(missing)), InFlight::new());
        let long = Instant::now() + Duration::from_secs(3600);
        for _ in 0..4 {
            let _ = backend.wait_ready(long).await;
        }
        // The retry is 1.6 s away now.
        let start = Instant::now();
        let short = start + Duration::from_millis(500);
        assert!(matches!(
            backend.wait_ready(short).await,
            Err(BackendError::Failed(_))
        ));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
