//! The waiting page (`--waiting-page`): the 503 an HTML client gets while a
//! cold backend starts, and the event stream that keeps it current.
//!
//! The page is a template, the built-in one or the user's, with a few
//! placeholders. Its script listens to [`EVENTS_PATH`] (server-sent events,
//! answered by idlegate itself while the backend is not ready): the seconds
//! waited, the start's progress and, once a start is known, how long one
//! usually takes (`expected_ms`, also shown on the page with a progress
//! bar), then `ready` (the page reloads onto the
//! real content) or `failed` (the page shows why). Without scripts the page
//! reloads itself every [`RELOAD_SECS`], which is also its `Retry-After`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::Full;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendState};

/// The path of the event stream, answered by idlegate while the backend is
/// not ready (and passed on to the backend once it is).
pub(super) const EVENTS_PATH: &str = "/.idlegate/events";

/// The page's reload interval without scripts, in seconds, and its
/// `Retry-After`.
pub(super) const RELOAD_SECS: u64 = 2;

/// How often the stream tells the time waited when nothing else changes.
const TICK: Duration = Duration::from_secs(1);

/// The built-in page: a template like the user's.
const BUILT_IN: &str = include_str!("waiting.html");

/// The page's script: follows the event stream, shows the progress in the
/// elements with the ids `idlegate-progress` and `idlegate-waited` and in
/// the title, the expected wait in `idlegate-expected` and the `<progress>`
/// `idlegate-bar` (filling towards it), reloads once the backend is ready.
const SCRIPT: &str = include_str!("waiting.js");

/// What the page knows of the wait: how long the client has waited so
/// far, and how long a start usually takes, once one is known.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wait {
    /// Since the first client of this start arrived.
    pub waited: Duration,
    /// The median of the last starts' totals.
    pub expected: Option<Duration>,
}

/// "usually ready in about N s", or nothing before the first start.
fn expected_words(expected: Option<Duration>) -> String {
    expected
        .map(|e| {
            let secs = (e.as_millis() + 500) / 1000;
            format!("usually ready in about {} s", secs.max(1))
        })
        .unwrap_or_default()
}

/// The waiting page for a client in `wait`, from `template` (the built-in
/// page when `None`).
pub(super) fn page(
    template: Option<&str>,
    service: &str,
    wait: Wait,
    progress: &str,
) -> Response<Full<Bytes>> {
    let reload = RELOAD_SECS.to_string();
    let script = format!(
        "<script>{}</script>",
        SCRIPT
            .replace("EVENTS_PATH", EVENTS_PATH)
            .replace("RELOAD_SECS", &reload)
    );
    let html = fill(
        template.unwrap_or(BUILT_IN),
        &[
            ("service", &escape(service)),
            ("waited", &wait.waited.as_secs().to_string()),
            ("progress", &escape(progress)),
            ("expected", &expected_words(wait.expected)),
            (
                "expected_ms",
                &wait.expected.map_or(0, |e| e.as_millis()).to_string(),
            ),
            ("retry_after", &reload),
            ("events", EVENTS_PATH),
            ("script", &script),
        ],
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(RELOAD_SECS));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `template` with each `{{name}}` of `values` replaced (the values are
/// already safe HTML); other text, unknown placeholders too, stays as is.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let known = after.find("}}").and_then(|close| {
            let name = after[..close].trim();
            let value = values.iter().find(|(n, _)| *n == name)?.1;
            Some((value, close))
        });
        match known {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` safe in HTML text and in quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where the start stands, in the plain words the page shows: the stage,
/// the backend's own `STATUS=`, or why it failed, never an address, a probe
/// error or an engine message (those are in the log).
pub(super) fn progress(backend: &Backend) -> String {
    match backend.state() {
        BackendState::Starting => {
            let own = backend.subscribe_status().borrow().clone();
            match (own, backend.stage()) {
                (Some(own), _) => format!("starting: {own}"),
                (None, Some(stage)) => format!("starting: {}", stage.plain()),
                (None, None) => "starting".to_owned(),
            }
        }
        BackendState::Failed { reason, .. } => format!("failed: {}", reason.plain()),
        BackendState::Stopping => "stopping, to start again".to_owned(),
        BackendState::ShutDown => "shutting down".to_owned(),
        BackendState::Stopped => "starting".to_owned(),
        BackendState::Ready => "ready".to_owned(),
    }
}

/// The service's name for the page: the configured one, else the `Host`
/// asked for without its port, unless that is an address (an address says
/// nothing to a visitor and is not shown).
pub(super) fn service_name<'a>(configured: Option<&'a str>, host: Option<&'a str>) -> &'a str {
    if let Some(name) = configured {
        return name;
    }
    let name = host.map(str::trim).and_then(|host| {
        if host.starts_with('[') {
            return None;
        }
        let name = host.split_once(':').map_or(host, |(name, _)| name);
        (!name.is_empty() && name.parse::<std::net::IpAddr>().is_err()).then_some(name)
    });
    name.unwrap_or("the service")
}

/// When the wait for the current start began, for the time waited: the
/// earliest arrival of a client the page was shown to during this start.
#[derive(Debug, Default)]
pub(super) struct WaitClock {
    /// The start (its generation) and its earliest waiting client.
    since: Mutex<Option<(u64, Instant)>>,
}

impl WaitClock {
    /// When the wait for start `generation` began, `arrived` being one
    /// client's arrival.
    pub(super) fn since(&self, generation: u64, arrived: Instant) -> Instant {
        let mut since = self.since.lock().expect("wait clock lock");
        match *since {
            Some((g, at)) if g == generation && at <= arrived => at,
            _ => {
                *since = Some((generation, arrived));
                arrived
            }
        }
    }
}

/// The event stream's answer: its body follows `backend` until it is ready
/// or failed, `close` is cancelled, the client leaves, or the start timeout
/// passes (the browser then connects again).
pub(super) fn events(
    backend: Backend,
    since: Instant,
    close: CancellationToken,
) -> Response<EventStream> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(follow(backend, since, close, tx));
    let mut resp = Response::new(EventStream(rx));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A buffering proxy in front (nginx) passes each event on at once.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Sends the events: `progress` at every change and every [`TICK`], then
/// `ready` or `failed`.
async fn follow(
    backend: Backend,
    since: Instant,
    close: CancellationToken,
    tx: mpsc::Sender<Bytes>,
) {
    let give_up = Instant::now() + backend.start_timeout();
    // The visitor waits for the start as long as its stream is open.
    let _watching = backend.watch_start();
    let mut state = backend.subscribe();
    let mut own_status = backend.subscribe_status();
    let retry = format!("retry: {}\n\n", RELOAD_SECS * 1000);
    if tx.send(Bytes::from(retry)).await.is_err() {
        return;
    }
    // A start seen under way, or begun, while this stream ran: its failure
    // is final, where an earlier one, whose retry comes in time, is not.
    let first_start = backend.generation();
    let mut started = false;
    loop {
        let now = state.borrow_and_update().clone();
        own_status.borrow_and_update();
        let (name, text) = match now {
            BackendState::Ready => ("ready", progress(&backend)),
            BackendState::Failed { retry_at, .. }
                if started || backend.generation() != first_start || retry_at > give_up =>
            {
                ("failed", progress(&backend))
            }
            BackendState::ShutDown => return,
            BackendState::Stopped | BackendState::Failed { .. } => {
                // The browser still waits: the start it asked for is due
                // (after an earlier failure's backoff).
                backend.start();
                ("progress", "starting".to_owned())
            }
            BackendState::Starting => {
                started = true;
                ("progress", progress(&backend))
            }
            BackendState::Stopping => ("progress", progress(&backend)),
        };
        let mut data = serde_json::json!({
            "waited": since.elapsed().as_secs(),
            "waited_ms": u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
            "progress": text,
        });
        if let Some(expected) = backend.expected_start() {
            data["expected_ms"] = u64::try_from(expected.as_millis())
                .unwrap_or(u64::MAX)
                .into();
            data["expected"] = expected_words(Some(expected)).into();
        }
        let event = format!("event: {name}\ndata: {data}\n\n");
        if tx.send(Bytes::from(event)).await.is_err() || name != "progress" {
            return;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = own_status.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = tokio::time::sleep_until(give_up) => return,
            _ = close.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}

/// The body of the event stream: the events as [`follow`] sends them; it
/// ends when that task does.
#[derive(Debug)]
pub struct EventStream(mpsc::Receiver<Bytes>);

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn wait(waited: u64, expected_ms: Option<u64>) -> Wait {
        Wait {
            waited: Duration::from_secs(waited),
            expected: expected_ms.map(Duration::from_millis),
        }
    }

    async fn text(resp: Response<Full<Bytes>>) -> String {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_kept() {
        let filled = fill(
            "<p>{{service}} {{ waited }} {{nope}} {{progress}</p>",
            &[("service", "web"), ("waited", "3"), ("progress", "x")],
        );
        assert_eq!(filled, "<p>web 3 {{nope}} {{progress}</p>");
    }

    #[tokio::test]
    async fn values_are_escaped_on_the_page() {
        let resp = page(
            Some("<title>{{service}}</title><p>{{progress}}</p>{{retry_after}}"),
            "<b>\"x\"&'y'",
            wait(4, None),
            "starting: <script>",
        );
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            text(resp).await,
            "<title>&lt;b&gt;&quot;x&quot;&amp;&#39;y&#39;</title><p>starting: &lt;script&gt;</p>2"
        );
    }

    #[tokio::test]
    async fn the_built_in_page_reloads_without_scripts_and_listens_with_them() {
        let text = text(page(None, "web", wait(1, None), "starting")).await;
        assert!(
            text.contains("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"),
            "{text}"
        );
        assert!(
            text.contains("new EventSource(\"/.idlegate/events\")"),
            "{text}"
        );
        assert!(!text.contains("{{"), "{text}");
        assert!(!text.contains("RELOAD_SECS"), "{text}");
    }

    #[test]
    fn the_service_is_named_by_its_host_never_by_an_address() {
        let cases = [
            (None, Some("photos.lan"), "photos.lan"),
            (None, Some("photos.lan:8080"), "photos.lan"),
            (None, Some("127.0.0.1:40869"), "the service"),
            (None, Some("192.168.1.20"), "the service"),
            (None, Some("[::1]:8080"), "the service"),
            (None, Some(""), "the service"),
            (None, None, "the service"),
            (Some("Photos"), Some("photos.lan"), "Photos"),
            (Some("Photos"), Some("127.0.0.1:8080"), "Photos"),
        ];
        for (configured, host, want) in cases {
            assert_eq!(
                service_name(configured, host),
                want,
                "{configured:?} {host:?}"
            );
        }
    }

    #[test]
    fn stages_and_failures_are_told_in_plain_words() {
        use crate::backend::progress::Stage;
        use crate::backend::Failure;
        let stages = [
            Stage::StartingContainer,
            Stage::PullingImage,
            Stage::ContainerHealth,
            Stage::AppNotify,
            Stage::Accepting,
            Stage::Answering,
            Stage::ReadyCommand,
        ];
        for stage in stages {
            let words = stage.plain();
            assert!(
                words.chars().all(|c| c.is_ascii_lowercase() || c == ' '),
                "{words}"
            );
        }
        let address = crate::address::Address::parse("127.0.0.1:9").unwrap();
        let failures = [
            Failure::StartTimeout {
                timeout: Duration::from_secs(3),
                waiting_for: "nothing accepted connections on 127.0.0.1:9".into(),
                stderr: "listening on 127.0.0.1:9".into(),
            },
            Failure::Probe {
                address: address.clone(),
                error: std::io::Error::other("no route"),
            },
            Failure::StoppedAccepting { upstream: address },
            Failure::ContainerStopped {
                name: "web".into(),
                status: "exited".into(),
                exit_code: 3,
            },
            Failure::Exited {
                command: "/usr/bin/app --listen 127.0.0.1:9".into(),
                pid: 7,
                status: "exit status: 1".into(),
                during_start: true,
                stderr: "bind 127.0.0.1:9: in use".into(),
            },
        ];
        for failure in failures {
            let plain = failure.plain();
            assert!(
                !plain.contains("127.0.0.1") && !plain.contains("web") && !plain.contains("pid"),
                "{plain} (from {failure})"
            );
        }
        assert_eq!(
            Failure::StartTimeout {
                timeout: Duration::from_secs(3),
                waiting_for: String::new(),
                stderr: String::new(),
            }
            .plain(),
            "not ready within the start timeout (3s)"
        );
    }

    #[tokio::test]
    async fn the_built_in_page_shows_the_name_the_stage_and_the_time_waited() {
        let text = text(page(
            None,
            "photos.lan",
            wait(7, Some(2400)),
            "starting: waiting for the app to answer",
        ))
        .await;
        assert!(text.contains("<h1>Starting photos.lan…</h1>"), "{text}");
        assert!(
            text.contains(">starting: waiting for the app to answer</p>"),
            "{text}"
        );
        assert!(
            text.contains("<span id=\"idlegate-waited\">7</span>"),
            "{text}"
        );
        assert!(text.contains(">usually ready in about 2 s</p>"), "{text}");
        assert!(text.contains("data-expected-ms=\"2400\""), "{text}");
    }

    #[test]
    fn the_clock_keeps_the_earliest_arrival_of_a_start() {
        let clock = WaitClock::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(clock.since(1, t1), t1);
        assert_eq!(clock.since(1, t0), t0);
        assert_eq!(clock.since(1, t1), t0);
        assert_eq!(clock.since(2, t1), t1, "a new start waits afresh");
    }
}
