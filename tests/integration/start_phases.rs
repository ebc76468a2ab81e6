//! Where a cold start's time goes: its phases in the ready log line, in
//! `idlegate status` (after the exit too), the start histogram of
//! `--metrics`, and the expected wait the waiting page tells from the last
//! starts, kept beside the state file across activations.

use crate::support::engine::{gets_the_page, Engine};
use crate::support::http::get;
use crate::support::*;

/// The last start that `idlegate status --json` tells after the exit (exit
/// status 3): its phases' names and ms, checked to add up to its total.
fn last_start_after_exit(state: &std::path::Path) -> (u64, Vec<(String, u64)>) {
    let (code, text) = status_text(state);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("\nlast start: "), "{text}");
    let doc = status_json(state);
    assert_eq!(doc["running"], false, "{doc}");
    let total = doc["last_start"]["total_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total: {doc}"));
    let phases: Vec<(String, u64)> = doc["last_start"]["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("no phases: {doc}"))
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_owned();
            (name, p["ms"].as_u64().unwrap())
        })
        .collect();
    let sum: u64 = phases.iter().map(|(_, ms)| ms).sum();
    assert_eq!(sum, total, "the phases add up to the total: {doc}");
    (total, phases)
}

fn names(phases: &[(String, u64)]) -> Vec<&str> {
    phases.iter().map(|(n, _)| n.as_str()).collect()
}

/// A process backend that binds after 300 ms: the ready line breaks the
/// start down, and the status keeps the last start after idlegate exited,
/// the first byte to the client included.
#[test]
fn a_process_start_is_broken_down_and_the_breakdown_outlives_the_exit() {
    let fixture = Fixture::tcp()
        .idle("500ms")
        .default_stop_timeout()
        .backend(&["--delay-ms", "300"]);
    let state = fixture.file("idlegate.state");
    // A corrupt start history is no history, and is replaced.
    std::fs::write(fixture_history(&state), "garbage\n").unwrap();
    let act = fixture
        .extra(&["--state-file", state.to_str().unwrap()])
        .start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    let log = act.log();
    let line = log
        .lines()
        .find(|l| l.contains("backend ready on "))
        .unwrap_or_else(|| panic!("no ready line: {log}"));
    assert!(line.contains("ms (started "), "{line}");
    assert!(line.contains(", accepting "), "{line}");
    let (total, phases) = last_start_after_exit(&state);
    assert_eq!(names(&phases), ["started", "accepting", "first_byte"]);
    let history = std::fs::read_to_string(fixture_history(&state)).unwrap();
    assert_eq!(history, format!("{}\n", total - phases[2].1));
    assert!(
        phases[1].1 >= 250,
        "the backend bound after 300 ms: {phases:?}"
    );
    // The ready line's total is the start up to ready, without the first byte.
    let to_ready = total - phases[2].1;
    assert!(
        line.contains(&format!(
            "after {to_ready}ms (started {}ms, accepting {}ms)",
            phases[0].1, phases[1].1
        )),
        "{line} vs {phases:?}"
    );
}

/// `--metrics`: one observation of `idlegate_start_duration_seconds` per
/// start (with `--listen`, the backend stops when idle and starts again in
/// the same run).
#[test]
fn the_start_histogram_counts_each_start() {
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let fixture = Fixture::tcp()
        .idle("500ms")
        .backend(&["--delay-ms", "200"])
        .pid_file();
    let mut idlegate = fixture.spawn_listening(&["--metrics", &metrics.to_string()]);
    let count = || {
        let text = get(metrics, "/metrics", &[])
            .map(|r| r.text())
            .unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("idlegate_start_duration_seconds_count "))?;
        assert!(
            text.contains("# TYPE idlegate_start_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("idlegate_start_duration_seconds_bucket{le=\"0.05\"} 0\n"),
            "every start waited for a 200 ms bind: {text}"
        );
        line.rsplit(' ').next()?.parse::<u64>().ok()
    };
    assert_eq!(exchange_str(idlegate.addr, "one\n").unwrap(), "one\n");
    let mut first = 0;
    wait_until("the first start counted", PATIENCE, || {
        first = count().unwrap_or(0);
        first >= 1
    });
    let pid = read_pid(&fixture.file("backend.pid"));
    assert!(wait_gone(pid, PATIENCE), "idle stops the backend");
    assert_eq!(exchange_str(idlegate.addr, "two\n").unwrap(), "two\n");
    wait_until("the second start counted", PATIENCE, || {
        count() == Some(first + 1)
    });
    assert_eq!(idlegate.stop().code(), Some(0), "{}", idlegate.log());
}

/// The `expected_ms` of the event stream's events, each one.
fn expected_in_events(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|d| d["expected_ms"].as_u64())
        .collect()
}

/// A backend that takes about 2 s: after two starts, the third start's
/// events carry `expected_ms` near 2000, and the waiting page, as headless
/// Chromium renders it, says how long a start usually takes and shows a
/// progress bar. Each start is an activation of its own: the totals are
/// kept beside the state file.
#[test]
fn after_two_starts_the_waiting_page_tells_the_expected_wait() {
    let fixture = Fixture::http()
        .idle("500ms")
        .default_stop_timeout()
        .backend(&["--delay-ms", "2000"]);
    let state = fixture.file("idlegate.state");
    let act = fixture
        .extra(&["--waiting-page", "--state-file", state.to_str().unwrap()])
        .start();
    let addr = act.tcp_addrs[0];
    for activation in 1..=2 {
        let page = get(addr, "/", &[]).unwrap();
        assert_eq!(page.status, 200, "{page:?}");
        assert_eq!(act.wait_exit(activation, PATIENCE).code(), Some(0));
    }
    let history = std::fs::read_to_string(fixture_history(&state)).unwrap();
    assert_eq!(history.lines().count(), 2, "{history}");
    // The third start: the page and its events.
    let page = get(addr, "/", &[("Accept", "text/html")]).unwrap();
    let events = [("Accept", "text/event-stream")];
    let text = get(addr, "/.idlegate/events", &events).unwrap().text();
    assert_eq!(page.status, 503, "{page:?}");
    let html = page.text();
    assert!(html.contains("usually ready in about "), "{html}");
    let expected = expected_in_events(&text);
    assert!(!expected.is_empty(), "no expected_ms: {text}");
    for ms in expected {
        assert!(
            (1900..=8000).contains(&ms),
            "expected_ms {ms}, not near 2000: {text}"
        );
    }
    assert_eq!(act.wait_exit(3, PATIENCE).code(), Some(0), "{}", act.log());
    // The fourth start, in a browser.
    let dom = real::dump_dom(
        &format!("http://127.0.0.1:{}/", addr.port()),
        act.dir.path(),
        &[],
    );
    assert!(dom.contains("id=\"idlegate-waited\""), "{dom}");
    assert!(dom.contains(">usually ready in about "), "{dom}");
    let bar = dom
        .split("<progress")
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .unwrap_or_else(|| panic!("no progress bar: {dom}"));
    assert!(
        bar.contains("id=\"idlegate-bar\"") && bar.contains("value=\"") && !bar.contains("hidden"),
        "the script shows the bar: <progress{bar}>"
    );
    assert_eq!(act.wait_exit(4, PATIENCE).code(), Some(0), "{}", act.log());
}

/// The start history's file beside the state file `state`.
fn fixture_history(state: &std::path::Path) -> std::path::PathBuf {
    let mut path = state.as_os_str().to_owned();
    path.push(".starts");
    path.into()
}

/// A container through podman's API: the engine's start, the app
/// accepting, `--ready-http`'s answer and the first byte, adding up to the
/// total, still told after the exit.
#[test]
fn a_container_start_is_broken_down_and_outlives_the_exit() {
    let Some(engine) = Engine::podman() else {
        return;
    };
    let f = engine.created("phases");
    let state = f.dir.path().join("idlegate.state");
    let act = f.activate(&f.args(&[
        "--idle-timeout",
        "1s",
        "--state-file",
        state.to_str().unwrap(),
    ]));
    gets_the_page(&act);
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    let (total, phases) = last_start_after_exit(&state);
    assert_eq!(
        names(&phases),
        ["started", "accepting", "ready", "first_byte"],
        "{}",
        act.log()
    );
    assert!(total > 0, "{phases:?}");
    assert!(
        act.log().contains("ms (started "),
        "the ready line breaks the start down: {}",
        act.log()
    );
}

/// UDP: the first reply to a client ends the start's last phase.
#[test]
fn a_udp_start_ends_with_the_first_reply() {
    let fixture = Fixture::udp().idle("500ms").default_stop_timeout();
    let state = fixture.file("idlegate.state");
    let act = fixture
        .extra(&["--udp-flow-timeout", "200ms"])
        .extra(&["--state-file", state.to_str().unwrap()])
        .start();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.send_to(b"query", act.udp_addrs[0]).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf).expect("the reply");
    assert_eq!(&buf[..n], b"query");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    let (_, phases) = last_start_after_exit(&state);
    assert_eq!(names(&phases), ["started", "accepting", "first_byte"]);
}
