//! HTTP mode end to end: requests (not connections) are the unit of work,
//! cold starts are ridden through, failures get real HTTP answers.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::http::{get, Conn, KeepAlive, Response};
use crate::support::*;

#[test]
fn an_idle_keep_alive_connection_does_not_delay_idle_exit() {
    let act = Fixture::http().idle("300ms").start();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let r = conn.request("GET", "/", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    // The connection stays open and quiet: idlegate must still exit on time.
    act.wait_exit_0(1, PATIENCE);
    assert!(
        conn.closed_cleanly().expect("a clean close, not a reset"),
        "the idle connection is closed"
    );
    // The client's next request, on a new connection, activates again.
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(act.activations(), 2);
}

/// A connection accepted just before the idle timer fires, whose request has
/// not arrived yet, is work: closing it unread at the idle exit would reset
/// the request (the soak test caught this once in 1400 requests).
#[test]
fn a_new_connection_waiting_for_its_first_request_is_not_cut_off() {
    let act = Fixture::http().idle("300ms").start();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    // Longer than the idle timeout, with the request not sent yet.
    std::thread::sleep(Duration::from_millis(900));
    assert!(
        act.exits().is_empty(),
        "no idle exit under an unread connection"
    );
    let r = conn.request("GET", "/", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    // Once answered, the quiet keep-alive connection no longer holds it up.
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
}

#[test]
fn a_streaming_response_keeps_idlegate_up() {
    let act = Fixture::http().idle("500ms").start();
    let started = Instant::now();
    // 6 ticks 300 ms apart: 1.5 s of body, three times the idle timeout.
    let r = get(act.tcp_addrs[0], "/slow?n=6&ms=300", &[]).unwrap();
    assert_eq!(r.text().lines().count(), 6, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(
        act.exits().is_empty(),
        "exited mid-response; log:\n{}",
        act.log()
    );
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
    assert_eq!(act.activations(), 1);
}

#[test]
fn an_open_upgraded_connection_keeps_idlegate_up() {
    let act = Fixture::http().idle("300ms").start();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let r = upgrade_to_echo(&mut conn);
    assert_eq!(r.header("upgrade"), Some("echo"));
    // Quiet for three idle timeouts: an upgraded connection is in flight all along.
    std::thread::sleep(Duration::from_millis(900));
    assert!(
        act.exits().is_empty(),
        "exited with an open upgraded connection; log:\n{}",
        act.log()
    );
    echo_and_close(&mut conn, b"ping over the upgrade");
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
}

/// Asks the test backend to upgrade `conn` to its echo protocol.
fn upgrade_to_echo(conn: &mut Conn) -> Response {
    let r = conn
        .request(
            "GET",
            "/upgrade",
            &[("Connection", "Upgrade"), ("Upgrade", "echo")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    r
}

/// Sends `message` over an upgraded echo connection, reads it back, and
/// ends the connection.
fn echo_and_close(conn: &mut Conn, message: &[u8]) {
    let s = conn.stream();
    s.write_all(message).unwrap();
    let mut buf = vec![0u8; message.len()];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, message);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

/// A keep-alive connection quiet for a while is parked (idlegate lets
/// hyper's buffers go and keeps the socket) and taken up again by what the
/// client sends next: a request, a request that arrives in pieces with
/// pauses between them, a request with a body, and an upgrade.
#[test]
fn a_quiet_keep_alive_connection_serves_what_comes_next() {
    let act = Fixture::http().start();
    let quiet = || std::thread::sleep(Duration::from_millis(300));
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let pid = conn.request("GET", "/pid", &[], b"").unwrap();
    assert_eq!(pid.status, 200, "{pid:?}");
    quiet();
    let again = conn.request("GET", "/pid", &[], b"").unwrap();
    assert_eq!(
        again.text(),
        pid.text(),
        "the same backend, on the same connection"
    );
    quiet();
    for piece in [
        &b"GET / HT"[..],
        b"TP/1.1\r\nHost: pieces",
        b".local\r\n",
        b"\r\n",
    ] {
        conn.stream().write_all(piece).unwrap();
        quiet();
    }
    let pieces = conn.read_response(false).unwrap();
    assert_eq!((pieces.status, pieces.text().as_str()), (200, "hello\n"));
    quiet();
    let echoed = conn
        .request("POST", "/echo", &[], b"a body after a pause")
        .unwrap();
    assert_eq!(echoed.text(), "a body after a pause");
    quiet();
    upgrade_to_echo(&mut conn);
    echo_and_close(&mut conn, b"ping after parking");
}

#[test]
fn keep_alive_clients_across_many_activations_lose_nothing() {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 6;
    let act = Fixture::http().idle("300ms").start();
    let addr = act.tcp_addrs[0];
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = KeepAlive::new(addr);
                let mut failures = Vec::new();
                let mut rng = Xorshift::new(0x2545_F491_u32.wrapping_mul(client as u32 + 7));
                for round in 0..ROUNDS {
                    for i in 0..PER_ROUND {
                        match c.get(&format!("/status/200?c={client}&r={round}&i={i}")) {
                            Ok(r) if r.status == 200 => {}
                            other => failures.push(format!(
                                "client {client} round {round} request {i}: {other:?}"
                            )),
                        }
                        std::thread::sleep(Duration::from_millis(rng.below(40) as u64));
                    }
                    barrier.wait();
                    std::thread::sleep(Duration::from_millis(250 + rng.below(300) as u64));
                }
                (failures, c.retries)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in threads {
        failures.extend(t.join().unwrap().0);
    }
    assert!(failures.is_empty(), "{failures:#?}\nlog:\n{}", act.log());
    let exits = act.exits();
    assert!(
        exits.len() >= 3,
        "expected several activation cycles, saw {}",
        exits.len()
    );
    assert!(exits.iter().all(|s| s.code() == Some(0)));
}

#[test]
fn a_missing_backend_is_a_prompt_502() {
    let act = Fixture::http()
        .upstream("127.0.0.1:9")
        .default_stop_timeout()
        .command(&["/nonexistent/app"])
        .start();
    let started = Instant::now();
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.text().contains("cannot start `/nonexistent/app`"),
        "{}",
        r.text()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        act.log().contains("GET / 502"),
        "the answer is logged like a proxied one: {}",
        act.log()
    );
}

#[test]
fn a_backend_never_ready_is_a_504_after_the_start_timeout() {
    let act = Fixture::http()
        .extra(&["--start-timeout", "1s"])
        .backend(&["--delay-ms", "600000"])
        .start();
    let started = Instant::now();
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
}

#[test]
fn a_backend_dying_mid_response_truncates_it_and_the_next_request_restarts_it() {
    let act = Fixture::http().start();
    let first_pid = get(act.tcp_addrs[0], "/pid", &[]).unwrap().text();
    let started = Instant::now();
    let r = get(act.tcp_addrs[0], "/crash", &[]);
    assert!(
        r.is_err(),
        "a truncated response must not look complete: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    wait_until("the crash to be logged", PATIENCE, || {
        act.log().contains("exited: exit status: 3")
    });
    let r = get(act.tcp_addrs[0], "/pid", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(r.text(), first_pid, "a new backend answers");
}

#[test]
fn forwarded_headers_are_added_and_hop_by_hop_headers_removed() {
    let Gate { act, dir, .. } = Fixture::http().start();
    let r = get(
        act.tcp_addrs[0],
        "/headers",
        &[
            ("Host", "example.test:8443"),
            ("Connection", "keep-alive, x-secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic eA=="),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Kept", "yes"),
        ],
    )
    .unwrap();
    let seen = r.text();
    assert!(seen.contains("host: example.test:8443\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-host: example.test:8443\n"),
        "{seen}"
    );
    assert!(seen.contains("x-kept: yes\n"), "{seen}");
    for gone in ["x-secret", "keep-alive", "proxy-authorization"] {
        assert!(
            !seen.contains(&format!("{gone}:")),
            "{gone} must not be forwarded: {seen}"
        );
    }
    drop(act);

    let act = Fixture::http()
        .dir(&dir)
        .extra(&["--no-forwarded-headers"])
        .start();
    let seen = get(act.tcp_addrs[0], "/headers", &[]).unwrap().text();
    assert!(!seen.contains("x-forwarded"), "{seen}");
}

#[test]
fn large_bodies_pass_unchanged_both_ways() {
    const SIZE: usize = 100 * 1024 * 1024;
    let act = Fixture::http().start();
    let r = get(act.tcp_addrs[0], &format!("/bytes/{SIZE}"), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), SIZE);
    assert!(r.body.iter().all(|b| *b == b'x'));

    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    // Write the upload from another thread while this one reads the echo, as
    // the echo streams back before the upload ends.
    let mut writer = conn.stream().try_clone().unwrap();
    let upload = body.clone();
    let sender = std::thread::spawn(move || {
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            upload.len()
        );
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&upload).unwrap();
    });
    let r = conn.read_response(false).unwrap();
    sender.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the echoed body differs");
}

#[test]
fn the_waiting_page_is_for_html_clients_after_the_threshold_only() {
    let act = Fixture::http()
        .extra(&["--waiting-page"])
        .backend(&["--delay-ms", "3000"])
        .start();
    let addr = act.tcp_addrs[0];
    let api = std::thread::spawn(move || {
        let started = Instant::now();
        (
            get(addr, "/", &[("Accept", "application/json")]),
            started.elapsed(),
        )
    });
    let started = Instant::now();
    let page = get(addr, "/", &[("Accept", "text/html,application/xhtml+xml")]).unwrap();
    let waited = started.elapsed();
    assert_eq!(page.status, 503, "{page:?}");
    assert!(page.header("retry-after").is_some());
    assert!(page.text().contains("Starting"), "{}", page.text());
    assert!(
        waited >= Duration::from_millis(900),
        "only after the threshold: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2900),
        "before the backend was ready: {waited:?}"
    );
    let (api, api_waited) = api.join().unwrap();
    let api = api.unwrap();
    assert_eq!(api.status, 200, "a non-HTML client keeps waiting: {api:?}");
    assert!(api_waited >= Duration::from_millis(2900));
    // Once ready, HTML clients are served normally.
    let page = get(addr, "/", &[("Accept", "text/html")]).unwrap();
    assert_eq!(page.status, 200);
}

/// The waiting page says when to come back (`Retry-After`, a refresh for
/// browsers without scripts), and its event stream, answered by idlegate
/// itself, tells the progress every second and then `ready`: the content
/// is there.
#[test]
fn the_waiting_page_event_stream_tells_progress_then_ready() {
    let act = Fixture::http()
        .extra(&["--waiting-page"])
        .backend(&["--delay-ms", "4000"])
        .start();
    let addr = act.tcp_addrs[0];
    let page = get(
        addr,
        "/",
        &[("Accept", "text/html"), ("Host", "photos.lan")],
    )
    .unwrap();
    assert_eq!(page.status, 503, "{page:?}");
    assert_eq!(page.header("retry-after"), Some("2"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let html = page.text();
    assert!(
        html.contains(r#"<noscript><meta http-equiv="refresh" content="2"></noscript>"#),
        "{html}"
    );
    assert!(html.contains("Starting photos.lan"), "{html}");
    assert!(html.contains("/.idlegate/events"), "{html}");
    // The stream ends when the backend is ready.
    let events = get(
        addr,
        "/.idlegate/events",
        &[("Accept", "text/event-stream")],
    )
    .unwrap();
    assert_eq!(events.status, 200, "{events:?}");
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let text = events.text();
    assert!(
        text.contains("event: progress\ndata: {\"progress\":\"starting"),
        "{text}"
    );
    assert!(text.matches("event: progress").count() >= 2, "{text}");
    assert!(
        text.trim_end().ends_with("}") && text.contains("event: ready"),
        "{text}"
    );
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: ready"), "{text}");
    let content = get(addr, "/", &[("Accept", "text/html")]).unwrap();
    assert_eq!((content.status, content.text().as_str()), (200, "hello\n"));
    // Once ready, the path is the backend's.
    let passed = get(addr, "/.idlegate/events", &[]).unwrap();
    assert_eq!(passed.status, 404, "{passed:?}");
}

/// A start that fails ends the event stream with `failed` and the reason.
#[test]
fn the_waiting_page_event_stream_tells_a_failed_start_and_why() {
    let act = Fixture::http()
        .extra(&["--waiting-page", "--start-timeout", "3s"])
        .backend(&["--delay-ms", "60000"])
        .start();
    let addr = act.tcp_addrs[0];
    let page = get(addr, "/", &[("Accept", "text/html")]).unwrap();
    assert_eq!(page.status, 503, "{page:?}");
    let events = get(
        addr,
        "/.idlegate/events",
        &[("Accept", "text/event-stream")],
    )
    .unwrap();
    let text = events.text();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: failed"), "{text}");
    assert!(
        last.contains("failed: not ready within the start timeout (3s)"),
        "{text}"
    );
}

/// Gets the waiting page as a browser does, then asks for its event stream,
/// on a connection left for the caller to read.
fn waiting_page_events(addr: std::net::SocketAddr) -> Conn {
    let page = get(addr, "/", &[("Accept", "text/html")]).unwrap();
    assert_eq!(page.status, 503, "{page:?}");
    let mut conn = Conn::connect(addr).unwrap();
    conn.send(
        "GET",
        "/.idlegate/events",
        &[("Accept", "text/event-stream")],
        b"",
    )
    .unwrap();
    conn
}

/// With `--ready-notify`, the backend's own `STATUS=` is the progress the
/// event stream tells, until its `READY=1`.
#[test]
fn the_waiting_page_event_stream_tells_the_backends_own_status() {
    let fixture = Fixture::http();
    let flag = fixture.file("loaded");
    let act = fixture
        .extra(&["--waiting-page", "--ready-notify"])
        .backend(&["--notify-when-exists", flag.to_str().unwrap()])
        .start();
    let addr = act.tcp_addrs[0];
    let mut conn = waiting_page_events(addr);
    // Raw bytes: each event is one chunk, whole.
    let mut seen = String::new();
    let mut read_until = |want: &str, seen: &mut String| {
        let mut buf = [0u8; 4096];
        while !seen.contains(want) {
            let n = conn.stream().read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended before {want:?}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    let status = format!("\"progress\":\"starting: waiting for {}\"", flag.display());
    read_until(&status, &mut seen);
    std::fs::write(&flag, "").unwrap();
    read_until("event: ready", &mut seen);
    let content = get(addr, "/", &[("Accept", "text/html")]).unwrap();
    assert_eq!(content.status, 200, "{content:?}");
}

/// An open event stream is work, but never holds idlegate past a stop: it
/// ends at once, and idlegate exits 0.
#[test]
fn a_stop_ends_the_waiting_page_event_stream() {
    let act = Fixture::http()
        .extra(&["--waiting-page"])
        .backend(&["--delay-ms", "60000"])
        .start();
    let addr = act.tcp_addrs[0];
    let mut conn = waiting_page_events(addr);
    // The stream is under way once its first bytes arrive.
    conn.stream().peek(&mut [0u8; 1]).unwrap();
    let stopped = Instant::now();
    act.signal(libc::SIGTERM);
    let events = conn.read_response(false).unwrap();
    let took = stopped.elapsed();
    assert_eq!(events.status, 200, "{events:?}");
    assert!(
        events.text().contains("event: progress"),
        "{}",
        events.text()
    );
    assert!(
        took < Duration::from_secs(5),
        "the stream ended {took:?} after the stop"
    );
    act.wait_exit_0(1, PATIENCE);
}

/// `--waiting-page=FILE`: the user's page, its placeholders filled, every
/// value HTML-escaped.
#[test]
fn a_waiting_page_template_is_filled_and_escaped() {
    let fixture = Fixture::http().backend(&["--delay-ms", "3000"]);
    let template = fixture.file("page.html");
    std::fs::write(
        &template,
        "<h1>{{service}}</h1><p>{{progress}}</p><i>{{retry_after}} {{events}} {{nope}}</i>{{script}}",
    )
    .unwrap();
    let flag = format!("--waiting-page={}", template.display());
    let act = fixture.extra(&[&flag]).start();
    let page = get(
        act.tcp_addrs[0],
        "/",
        &[("Accept", "text/html"), ("Host", "a<b>\"c")],
    )
    .unwrap();
    assert_eq!(page.status, 503, "{page:?}");
    let html = page.text();
    assert!(
        html.starts_with("<h1>a&lt;b&gt;&quot;c</h1><p>starting"),
        "{html}"
    );
    assert!(
        html.contains("</p><i>2 /.idlegate/events {{nope}}</i><script>"),
        "{html}"
    );
    assert!(html.contains("new EventSource"), "{html}");
}

/// With an idle timeout shorter than the backend's start, a browser that got
/// the waiting page and reloads it as the page says reaches the content: the
/// start it asked for finishes before any idle exit.
#[test]
fn a_waiting_page_reload_reaches_the_content_with_a_short_idle_timeout() {
    let act = Fixture::http()
        .idle("1s")
        .extra(&["--waiting-page"])
        .backend(&["--delay-ms", "4000"])
        .start();
    let addr = act.tcp_addrs[0];
    let mut pages = 0;
    loop {
        let page = get(addr, "/", &[("Accept", "text/html")]).unwrap();
        if page.status == 200 {
            break;
        }
        assert_eq!(page.status, 503, "{page:?}");
        pages += 1;
        assert!(
            pages < 10,
            "still the waiting page after {pages} reloads; log:\n{}",
            act.log()
        );
        // The browser's think time: the page reloads after Retry-After.
        let after: u64 = page.header("retry-after").unwrap().parse().unwrap();
        std::thread::sleep(Duration::from_secs(after));
    }
    assert!(
        pages >= 1,
        "the start outlasted the waiting page's threshold"
    );
    assert_eq!(
        act.activations(),
        1,
        "no idle exit while the start was in progress; log:\n{}",
        act.log()
    );
}

#[test]
fn h2c_clients_are_served_too() {
    let act = Fixture::http().start();
    let addr = act.tcp_addrs[0];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use http_body_util::{BodyExt, Empty};
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri(format!("http://{addr}/headers"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(PATIENCE, send.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(&format!("host: {addr}")), "{text}");
    });
}

#[test]
fn trailers_pass_through_to_clients_that_take_them() {
    let act = Fixture::http().start();
    let r = get(act.tcp_addrs[0], "/trailers", &[("TE", "trailers")]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body with trailers\n");
    assert_eq!(
        r.trailers,
        vec![("x-checksum".to_owned(), "42".to_owned())],
        "{r:?}"
    );
}

#[test]
fn slow_headers_and_huge_headers_are_cut_off() {
    let act = Fixture::http()
        .extra(&["--header-read-timeout", "1s"])
        .start();
    // A client that never finishes its headers is closed after the timeout.
    let mut slow = Conn::connect(act.tcp_addrs[0]).unwrap();
    slow.stream()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.stream().read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "closed after {waited:?}"
    );
    // Headers over the cap get an error status or a close, never a forward.
    let big = "x".repeat(100 * 1024);
    let r = get(act.tcp_addrs[0], "/headers", &[("X-Big", &big)]);
    if let Ok(r) = r {
        assert!(r.status == 431 || r.status == 400, "{}", r.status);
    }
    // Meanwhile ordinary clients are served.
    assert_eq!(get(act.tcp_addrs[0], "/", &[]).unwrap().status, 200);
}

#[test]
fn unix_upstream_in_http_mode() {
    let fixture = Fixture::http().idle("300ms");
    let sock = fixture.file("backend.sock");
    let upstream = format!("unix:{}", sock.display());
    let act = fixture.upstream(&upstream).start();
    let r = get(act.tcp_addrs[0], "/headers", &[("Host", "site.test")]).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("host: site.test\n"), "{}", r.text());
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
}

#[test]
fn a_request_still_waiting_at_shutdown_gets_a_503_with_connection_close() {
    let act = Fixture::http()
        .backend(&["--delay-ms", "600000"])
        .stop_timeout("1s")
        .start();
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || get(addr, "/", &[]));
    act.wait_running(1, PATIENCE);
    wait_until("the backend to be starting", PATIENCE, || {
        act.log().contains("backend started")
    });
    act.signal(libc::SIGTERM);
    let r = client
        .join()
        .unwrap()
        .expect("an answer, not a dropped connection");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0));
}

/// Reads until the server closes `conn`; panics on a reset or at the deadline.
fn wait_closed(conn: &mut Conn, what: &str) {
    let mut rest = Vec::new();
    conn.stream()
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("{what}: not closed cleanly: {e}"));
}

/// A connection that sends no request (a browser's preconnected socket, a
/// client stuck in the HTTP/1-or-h2 sniffing, or one that never ends its
/// headers) is closed once the header read timeout passes, and stops counting
/// as work: idlegate exits within idle timeout plus header read timeout,
/// whether the silent connection was the activating one or came after a
/// request.
#[test]
fn a_connection_that_sends_no_request_is_closed_after_the_header_read_timeout() {
    let act = Fixture::http()
        .idle("1s")
        .extra(&["--header-read-timeout", "1s"])
        .start();
    let addr = act.tcp_addrs[0];

    // Activated by a connection that never sends a byte.
    let mut silent = Conn::connect(addr).unwrap();
    act.wait_exit_0(1, PATIENCE);
    wait_closed(&mut silent, "the activating silent connection");

    // A request, then three connections that never complete one.
    let r = get(addr, "/", &[]).unwrap();
    assert_eq!(r.status, 200);
    let started = Instant::now();
    let mut silent = Conn::connect(addr).unwrap();
    let mut sniffing = Conn::connect(addr).unwrap();
    sniffing.stream().write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let mut partial = Conn::connect(addr).unwrap();
    partial
        .stream()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    wait_closed(&mut silent, "a silent connection");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "a silent connection was cut before its header read timeout"
    );
    wait_closed(&mut sniffing, "a connection stopped in the h2 preface");
    wait_closed(&mut partial, "a connection with unfinished headers");
    act.wait_exit_0(2, PATIENCE);
    assert_eq!(act.activations(), 2, "log:\n{}", act.log());
}

/// `--upstream-connections-max 1`: a second request waits while the one
/// upstream connection is busy, gets it once free, and one that cannot get
/// it within its start timeout is a 504 saying why.
#[test]
fn requests_beyond_the_upstream_connections_wait_for_a_free_one() {
    let act = Fixture::http()
        .extra(&["--upstream-connections-max", "1", "--start-timeout", "2s"])
        .start();
    let addr = act.tcp_addrs[0];
    // A request whose response is under way (its first tick read) holds the
    // one upstream connection for `ticks` × 200 ms.
    let busy = |ticks: u32| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            s,
            "GET /slow?n={ticks}&ms=200 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("tick 0") {
            assert_eq!(
                s.read(&mut byte).unwrap(),
                1,
                "{}",
                String::from_utf8_lossy(&seen)
            );
            seen.push(byte[0]);
        }
        std::thread::spawn(move || {
            let mut rest = String::new();
            s.read_to_string(&mut rest).unwrap();
            rest.matches("tick").count()
        })
    };
    // Busy for 1 s: a request behind it waits and is served.
    let slow = busy(5);
    let queued = get(addr, "/", &[]).unwrap();
    assert_eq!((queued.status, queued.text().as_str()), (200, "hello\n"));
    assert_eq!(slow.join().unwrap(), 4, "the rest of the slow response");
    // Busy for longer than the start timeout: the one behind it gives up.
    let slow = busy(20);
    let refused = get(addr, "/", &[]).unwrap();
    assert_eq!(refused.status, 504, "{refused:?}");
    assert!(
        refused.text().contains("--upstream-connections-max"),
        "{}",
        refused.text()
    );
    assert_eq!(slow.join().unwrap(), 19);
}

/// A request that reaches a dying backend (it dies before answering) is sent
/// again, once, to the restarted backend when it has no body and an
/// idempotent method; one that kills every backend gets a 502 after that.
#[test]
fn a_request_that_reaches_a_dying_backend_is_sent_again_to_the_restarted_one() {
    let act = Fixture::http().start();
    let addr = act.tcp_addrs[0];
    let mut conn = KeepAlive::new(addr);
    let first = conn.get("/pid").unwrap().text();
    assert_eq!(conn.get("/crash-next").unwrap().text(), "armed\n");
    let second = get(addr, "/pid", &[]).unwrap();
    assert_eq!(second.status, 200, "{second:?}; log:\n{}", act.log());
    assert_ne!(first, second.text(), "a new backend answered");
    assert!(act
        .log()
        .contains("GET /pid: the backend died as the request reached it"));

    let poison = get(addr, "/crash-now", &[]).unwrap();
    assert_eq!(poison.status, 502, "{poison:?}");
    assert_eq!(
        act.log()
            .matches("sent it again to the restarted backend")
            .count(),
        2,
        "once per request; log:\n{}",
        act.log()
    );
    // A request with a body is not sent twice.
    let mut c = Conn::connect(addr).unwrap();
    let r = c.request("POST", "/crash-now", &[], b"payload").unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(act.log().matches("sent it again").count(), 2);
    assert_eq!(get(addr, "/", &[]).unwrap().status, 200);
}
