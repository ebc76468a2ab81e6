//! HTTP mode behind a port forwarder (docker-proxy, rootless podman's
//! rootlessport): the forwarder accepts at once and resets until the app
//! behind it listens, so readiness by connect says "ready" while requests
//! meet resets. A request on a backend that has just started is held and
//! sent again until the app answers, within `--start-timeout`; one on a
//! backend that has answered is never sent twice.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::forwarder::Forwarder;
use crate::support::http::{get, Conn};
use crate::support::real;
use crate::support::*;

/// How many cold starts the holding test makes.
const COLD_STARTS: usize = 3;

/// The app behind the forwarder: the test backend listening on `app` after
/// `delay_ms`, and the forwarder in front of it, idlegate's upstream.
fn behind_a_forwarder(delay_ms: &str, extra: &[&str]) -> (Gate, Forwarder) {
    let app: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let forwarder = Forwarder::start(app);
    let backend = test_backend_bin().display().to_string();
    let app_text = app.to_string();
    let gate = Fixture::http()
        .upstream(&forwarder.addr.to_string())
        .idle("300ms")
        .extra(extra)
        .command(&[
            backend.as_str(),
            "--listen",
            &app_text,
            "--http",
            "--delay-ms",
            delay_ms,
        ])
        .start();
    (gate, forwarder)
}

/// A body that shows any byte out of place.
fn body() -> Vec<u8> {
    (0..20_000u32).map(|i| b'a' + (i % 23) as u8).collect()
}

/// The app listens 1.5 s after it starts, behind a forwarder that resets
/// until then: without `--ready-http`, the held GET and POST (its body
/// kept and sent whole each time) of every cold start get the app's answer.
#[test]
fn requests_are_held_while_a_port_forwarder_resets_for_a_booting_app() {
    let (act, forwarder) = behind_a_forwarder("1500", &[]);
    let addr = act.tcp_addrs[0];
    for n in 1..=COLD_STARTS {
        assert!(act.running().is_none(), "run {n} is not a cold start");
        let post = std::thread::spawn(move || {
            let mut conn = Conn::connect(addr)?;
            conn.request("POST", "/echo", &[], &body())
        });
        let got = get(addr, "/", &[]).unwrap();
        assert_eq!(
            (got.status, got.text().as_str()),
            (200, "hello\n"),
            "cold start {n}: {got:?}; log:\n{}",
            act.log()
        );
        let posted = post.join().unwrap().unwrap();
        assert_eq!(posted.status, 200, "cold start {n}: {posted:?}");
        assert!(
            posted.body == body(),
            "cold start {n}: the body came back changed ({} bytes)",
            posted.body.len()
        );
        act.wait_exit_0(n, PATIENCE);
    }
    assert!(
        forwarder.turned_away() >= COLD_STARTS,
        "the forwarder did turn connections away: {}",
        forwarder.turned_away()
    );
    let log = act.log();
    assert!(!log.contains(" 502 ") && !log.contains(" 504 "), "{log}");
    assert!(log.contains("holding the request"), "{log}");
}

/// An app that never listens behind the forwarder: the held request gets a
/// 504 at `--start-timeout`, not before and not much after, and the hold
/// is logged once for it, not once per try.
#[test]
fn a_request_held_for_an_app_that_never_listens_is_a_504_at_the_start_timeout() {
    let (act, forwarder) = behind_a_forwarder("600000", &["--start-timeout", "2s"]);
    let started = Instant::now();
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}; log:\n{}", act.log());
    assert!(
        r.text()
            .contains("still closed connections before answering at the start timeout"),
        "{}",
        r.text()
    );
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(
        forwarder.turned_away() > 2,
        "sent again: {}",
        forwarder.turned_away()
    );
    let log = act.log();
    assert_eq!(log.matches("holding the request").count(), 1, "{log}");
    assert_eq!(
        log.matches("GET /: 127.0.0.1").count(),
        1,
        "the 504's reason, once: {log}"
    );
}

/// A request that reaches an app which has answered before and meets a
/// reset is not sent again: the POST reaches the forwarder once, and its
/// client gets the 502.
#[test]
fn a_reset_from_an_app_that_has_answered_is_not_sent_again() {
    let (act, forwarder) = behind_a_forwarder("0", &[]);
    let addr = act.tcp_addrs[0];
    let warm = get(addr, "/", &[]).unwrap();
    assert_eq!(warm.status, 200, "{warm:?}; log:\n{}", act.log());
    // (The first request may have been held while the app came up.)
    let warm_log = act.log().len();
    forwarder.cut_requests(Some("POST "));
    let mut conn = Conn::connect(addr).unwrap();
    let r = conn.request("POST", "/echo", &[], b"once only").unwrap();
    assert_eq!(r.status, 502, "{r:?}; log:\n{}", act.log());
    assert_eq!(
        forwarder.cut(),
        1,
        "the POST went once; log:\n{}",
        act.log()
    );
    let log = act.log();
    assert!(!log[warm_log..].contains("holding the request"), "{log}");
    forwarder.cut_requests(None);
    assert_eq!(get(addr, "/", &[]).unwrap().status, 200);
}

/// The same hold with an h2c upstream: nginx (HTTP/2 only) listening 1.5 s
/// after its start behind the forwarder; the held request gets its answer.
#[test]
fn an_h2c_request_is_held_while_a_port_forwarder_resets_for_a_booting_nginx() {
    let dir = tempdir();
    let port = free_port();
    let conf = real::Nginx::h2c_config(dir.path(), port);
    let app: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let forwarder = Forwarder::start(app);
    let nginx = real::Nginx::backend_argv(&conf).join(" ");
    let act = Fixture::http()
        .dir(&dir)
        .upstream(&forwarder.addr.to_string())
        .default_stop_timeout()
        .extra(&["--upstream-protocol", "h2c"])
        .command(&["/bin/sh", "-c", &format!("sleep 1.5; exec {nginx}")])
        .start();
    let asked = get(act.tcp_addrs[0], "/protocol", &[]).unwrap();
    assert_eq!(
        (asked.status, asked.text().as_str()),
        (200, "HTTP/2.0\n"),
        "{asked:?}; log:\n{}",
        act.log()
    );
    assert!(
        forwarder.turned_away() > 0,
        "the forwarder turned none away"
    );
    assert!(act.log().contains("holding the request"), "{}", act.log());
}

/// With `--ready-http`, the app itself answered the probe: a reset on the
/// first request is the app's, not a forwarder's, and is not held.
#[test]
fn a_reset_after_the_ready_http_probe_was_answered_is_not_held() {
    let (act, forwarder) = behind_a_forwarder("300", &["--ready-http", "/"]);
    forwarder.cut_requests(Some("POST "));
    let addr = act.tcp_addrs[0];
    let mut conn = Conn::connect(addr).unwrap();
    let r = conn.request("POST", "/echo", &[], b"once only").unwrap();
    assert_eq!(r.status, 502, "{r:?}; log:\n{}", act.log());
    assert!(
        forwarder.turned_away() > 0,
        "the probe met the forwarder first"
    );
    assert_eq!(
        forwarder.cut(),
        1,
        "the POST went once; log:\n{}",
        act.log()
    );
    assert!(!act.log().contains("holding the request"), "{}", act.log());
}
