//! HTTP mode's HTTP/1.1 client side: how idlegate treats odd-but-legal (and
//! some illegal) responses from the upstream, written byte by byte by the
//! scripted upstream of `support::scripted`.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::support::http::{get, Conn};
use crate::support::scripted::{
    pattern, raw_connect, raw_head, read_all, with_length, Exchange, Head, Next, Upstream,
};
use crate::support::*;

/// How long an answer that should be prompt may take on a loaded machine.
const PROMPT: Duration = Duration::from_secs(10);

/// 1. A chunked body with chunk extensions and trailers reaches a client
///    that takes trailers: the body dechunked, the trailer intact.
#[test]
fn chunk_extensions_are_dropped_and_trailers_pass() {
    let up = Upstream::start(|ex| {
        ex.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
              5;ext=1\r\nhello\r\n7;name=\"a quoted value\";flag\r\n, world\r\n0\r\n\
              X-Checksum: 42\r\n\r\n",
        )?;
        Ok(Next::KeepOpen)
    });
    let act = up.gate();
    let r = get(act.tcp_addrs[0], "/ext", &[("TE", "trailers")]).unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello, world"),
        "{r:?}"
    );
    assert_eq!(
        r.trailers,
        vec![("x-checksum".to_owned(), "42".to_owned())],
        "{r:?}"
    );
}

/// A script answering HTTP/1.0, the body ending where the upstream closes.
fn http10_until_close(body: Vec<u8>) -> impl Fn(&mut Exchange) -> io::Result<Next> {
    move |ex| {
        ex.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")?;
        ex.write(&body)?;
        Ok(Next::Close)
    }
}

/// 2. An HTTP/1.0 answer without `Content-Length`, delimited by the upstream's
///    close: the client gets all of it, on one kept-alive connection, each
///    answer from a new upstream connection, under idlegate's own status
///    line (RFC 9110 §6.2). Passing the `HTTP/1.0` line through (as hyper's
///    client did) tells an HTTP/1.1 client the connection will close (RFC
///    9112 §9.3): every client of an HTTP/1.0 backend (Python's
///    `http.server`) lost keep-alive.
#[test]
fn a_close_delimited_http10_answer_keeps_the_clients_connection() {
    let body = pattern(100_000);
    let up = Upstream::start(http10_until_close(body.clone()));
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    for path in ["/one", "/two"] {
        conn.send("GET", path, &[], b"").unwrap();
        let r = conn.read_response(false).unwrap_or_else(|e| {
            panic!("{path}: {e}; the client's connection did not survive the first answer")
        });
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body == body, "the body differs: {} bytes", r.body.len());
    }
    assert_ne!(
        up.request("/one"),
        up.request("/two"),
        "a new upstream connection"
    );
    // The status line idlegate sends is its own.
    let mut s = raw_connect(act.tcp_addrs[0]);
    s.write_all(b"GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, _) = raw_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}

/// A script for the keep-alive cases: `/small` is a short 200.
fn small(ex: &mut Exchange) -> io::Result<Next> {
    ex.write(&with_length("200 OK", b"small"))?;
    Ok(Next::KeepOpen)
}

/// An upstream that answers the requests `special` picks with `raw`, and
/// the rest with [`small`], keeping its connections open.
fn answering(special: fn(&Head) -> bool, raw: &'static [u8]) -> Upstream {
    Upstream::start(move |ex| {
        if special(&ex.head) {
            ex.write(raw)?;
            return Ok(Next::KeepOpen);
        }
        small(ex)
    })
}

/// 3. A HEAD answer's `Content-Length` announces a body that never comes:
///    the client gets the header and no body, and both of its connections
///    go on to the next request.
#[test]
fn a_head_answer_has_no_body_and_keeps_both_connections() {
    let up = answering(
        |head| head.method == "HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n",
    );
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let head = conn.request("HEAD", "/head", &[], b"").unwrap();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-length"), Some("1234"), "{head:?}");
    let next = conn.request("GET", "/small", &[], b"").unwrap();
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "small"),
        "{next:?}"
    );
    assert_eq!(
        up.request("/head"),
        up.request("/small"),
        "the upstream connection is reused"
    );
}

/// 4. 204 and 304 (this one with the `Content-Length` of the representation
///    it stands for) have no body: the next requests on both connections go on.
#[test]
fn no_content_and_not_modified_have_no_body_and_keep_both_connections() {
    let up = Upstream::start(|ex| {
        match ex.head.path.as_str() {
            "/204" => ex.write(b"HTTP/1.1 204 No Content\r\nX-Seen: 204\r\n\r\n")?,
            "/304" => ex.write(
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n",
            )?,
            _ => return small(ex),
        }
        Ok(Next::KeepOpen)
    });
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let r = conn.request("GET", "/204", &[], b"").unwrap();
    assert_eq!((r.status, r.header("x-seen")), (204, Some("204")), "{r:?}");
    let r = conn
        .request("GET", "/304", &[("If-None-Match", "\"v1\"")], b"")
        .unwrap();
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")), "{r:?}");
    let r = conn.request("GET", "/small", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "small"), "{r:?}");
    let upstream = up.request("/204");
    assert_eq!(
        up.request("/304"),
        upstream,
        "the upstream connection is reused"
    );
    assert_eq!(
        up.request("/small"),
        upstream,
        "the upstream connection is reused"
    );
}

/// 5. Interim responses (100, 103) before the final one: the client gets
///    the final 200 and its body (the interim ones are not asserted).
#[test]
fn interim_responses_before_the_final_one() {
    let up = Upstream::start(|ex| {
        ex.write(
            b"HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        )?;
        ex.write(&with_length("200 OK", b"final"))?;
        Ok(Next::KeepOpen)
    });
    let act = up.gate();
    let mut s = raw_connect(act.tcp_addrs[0]);
    s.write_all(b"GET /interim HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let raw = read_all(&mut s);
    let text = String::from_utf8_lossy(&raw);
    eprintln!("interim: the client saw {text:?}");
    // Skip any interim heads the client was given.
    let mut rest = &text[..];
    while rest.starts_with("HTTP/1.1 1") {
        rest = &rest[rest.find("\r\n\r\n").expect("an interim head's end") + 4..];
    }
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(rest.ends_with("\r\n\r\nfinal"), "{text}");
}

/// 6. Obsolete line folding in a response header (RFC 9112 §5.2): the client
///    gets the 200 and the value, its fold replaced by spaces, on one line.
#[test]
fn a_folded_response_header_is_unfolded() {
    let up = Upstream::start(|ex| {
        ex.write(b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok")?;
        Ok(Next::KeepOpen)
    });
    let raw = raw_answer(&up, "/folded");
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw:?}");
    assert!(raw.ends_with("\r\n\r\nok"), "{raw:?}");
    eprintln!("folded: the client saw {raw:?}");
    let line = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-folded:"))
        .unwrap_or_else(|| panic!("no x-folded header: {raw:?}"));
    let value = line["x-folded:".len()..].trim();
    assert!(
        value.starts_with('a')
            && value.ends_with('b')
            && value[1..value.len() - 1].trim().is_empty(),
        "the value, unfolded on one line: {line:?} in {raw:?}"
    );
}

/// 7. A reason phrase of the upstream's own passes through as it is.
#[test]
fn a_custom_reason_phrase_passes_through() {
    let up = Upstream::start(|ex| {
        ex.write(&with_length("200 Fine Thanks", b"ok"))?;
        Ok(Next::KeepOpen)
    });
    let raw = raw_answer(&up, "/reason");
    assert!(raw.starts_with("HTTP/1.1 200 Fine Thanks\r\n"), "{raw:?}");
    assert!(raw.ends_with("\r\n\r\nok"), "{raw:?}");
}

/// What a client sees, byte for byte, of the answer to a `GET path` (with
/// `Connection: close`) through idlegate in front of `up`.
fn raw_answer(up: &Upstream, path: &str) -> String {
    let act = up.gate();
    let mut s = raw_connect(act.tcp_addrs[0]);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    String::from_utf8_lossy(&read_all(&mut s)).into_owned()
}

/// 8. The upstream closes a kept-alive connection (no `Connection: close`)
///    right after answering, or after a pause: the client's next request on
///    its own kept-alive connection succeeds all the same, on a new upstream
///    connection.
#[test]
fn an_upstream_closing_a_kept_alive_connection_costs_no_request() {
    let up = Upstream::start(|ex| match ex.head.path.as_str() {
        "/close-now" => {
            ex.write(&with_length("200 OK", b"first"))?;
            Ok(Next::Close)
        }
        "/close-later" => {
            ex.write(&with_length("200 OK", b"first"))?;
            Ok(Next::CloseAfter(Duration::from_millis(200)))
        }
        _ => small(ex),
    });
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    for (i, path) in ["/close-now", "/close-later"].into_iter().enumerate() {
        let r = conn.request("GET", path, &[], b"").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "first"), "{r:?}");
        let closed = up.request(path);
        if i == 1 {
            // The close comes while the connection is idle in idlegate's
            // pool; the client's next request comes well after it (no event
            // says when idlegate has seen the FIN: this pause is the case).
            up.closed(closed);
            std::thread::sleep(Duration::from_millis(300));
        }
        let r = conn.request("GET", "/small", &[], b"").unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "small"),
            "after {path}: {r:?}; log:\n{}",
            act.log()
        );
        assert_ne!(up.request("/small"), closed, "a new upstream connection");
    }
}

/// A script echoing a request's body back with `Content-Length`, saying how
/// it was framed upstream.
fn echo(ex: &mut Exchange) -> io::Result<Next> {
    let framing = if ex.head.chunked() {
        "chunked"
    } else {
        "length"
    };
    let body = ex.body()?;
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nX-Framing: {framing}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(&body);
    ex.write(&r)?;
    Ok(Next::KeepOpen)
}

/// 9. Request bodies reach the upstream byte for byte: one uploaded chunked
///    in pieces, and one of 1 MiB with `Content-Length`.
#[test]
fn request_bodies_reach_the_upstream_exactly() {
    let up = Upstream::start(echo);
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let big = pattern(5000);
    let mut pieces: Vec<Vec<u8>> = vec![
        b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        b"3\r\nabc\r\n".to_vec(),
        b"10;ext=x\r\n0123456789abcdef\r\n".to_vec(),
        format!("{:x}\r\n", big.len()).into_bytes(),
    ];
    pieces.push(big.clone());
    pieces.push(b"\r\n1\r\nZ\r\n0\r\n\r\n".to_vec());
    for piece in &pieces {
        conn.stream().write_all(piece).unwrap();
        conn.stream().flush().unwrap();
    }
    let r = conn.read_response(false).unwrap();
    let mut want = b"abc0123456789abcdef".to_vec();
    want.extend_from_slice(&big);
    want.push(b'Z');
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == want, "the chunked upload differs: {:?}", r.text());
    eprintln!(
        "a chunked upload went upstream as {:?}",
        r.header("x-framing")
    );

    let body = pattern(1024 * 1024 + 3);
    let r = conn.request("POST", "/length", &[], &body).unwrap();
    assert_eq!(
        (r.status, r.header("x-framing")),
        (200, Some("length")),
        "{:?}",
        r.headers
    );
    assert!(r.body == body, "the 1 MiB upload differs");
    assert_eq!(
        up.request("/chunked"),
        up.request("/length"),
        "the upstream connection is reused"
    );
}

/// 10. The upstream answers 413 (with `Connection: close`) before reading a
///     large upload, and then reads and drops what still comes, as servers
///     do: the client gets the 413 while it is still sending. (The 413
///     reaches the client without `Connection: close`, the header being
///     hop-by-hop, and hyper's server then closes the client's connection:
///     the rest of the upload meets a broken pipe.)
#[test]
fn an_early_answer_before_the_upload_is_read_reaches_the_client() {
    const UPLOAD: usize = 8 * 1024 * 1024;
    let up = Upstream::start(|ex| {
        ex.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\n\
              Content-Length: 9\r\nConnection: close\r\n\r\ntoo large",
        )?;
        // A lingering close: the answer is not lost to a reset.
        ex.stream().shutdown(Shutdown::Write)?;
        let mut sink = [0u8; 65536];
        while matches!(ex.reader.read(&mut sink), Ok(n) if n > 0) {}
        Ok(Next::Done)
    });
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let mut writer = conn.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let head = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {UPLOAD}\r\n\r\n");
        writer.write_all(head.as_bytes())?;
        let piece = pattern(64 * 1024);
        let mut sent = 0;
        while sent < UPLOAD {
            writer.write_all(&piece)?;
            sent += piece.len();
            // A client sending slowly-ish, so the answer comes mid-upload.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok::<usize, io::Error>(sent)
    });
    let started = Instant::now();
    let r = conn.read_response(false);
    let took = started.elapsed();
    let sent = sender.join().unwrap();
    let r =
        r.unwrap_or_else(|e| panic!("no 413 but {e}; the upload: {sent:?}; log:\n{}", act.log()));
    assert_eq!((r.status, r.text().as_str()), (413, "too large"), "{r:?}");
    assert!(took < PROMPT, "the 413 took {took:?}");
    up.request("/upload");
    eprintln!("early 413: {:?}; the upload ended with {sent:?}", r.headers);
}

/// 11a. Garbage instead of a status line is a prompt 502.
#[test]
fn garbage_from_the_upstream_is_a_prompt_502() {
    let up = Upstream::start(|ex| {
        ex.write(b"NOT HTTP\r\n\r\n")?;
        Ok(Next::Close)
    });
    assert_prompt_502(&up.gate(), "/garbage");
}

/// 11b. A connection closed with no answer at all, by an upstream that has
///      answered since its start, is a prompt 502 (before its first answer
///      it may be a port forwarder's: see `port_forwarder.rs`).
#[test]
fn an_upstream_closing_without_an_answer_is_a_prompt_502() {
    let up = Upstream::start(|ex| {
        if ex.head.path == "/warm" {
            ex.write(b"HTTP/1.1 204 No Content\r\n\r\n")?;
        }
        Ok(Next::Close)
    });
    let act = up.gate();
    assert_eq!(get(act.tcp_addrs[0], "/warm", &[]).unwrap().status, 204);
    assert_prompt_502(&act, "/silent");
}

/// A request for `path` through `act` gets a 502 within [`PROMPT`].
fn assert_prompt_502(act: &Gate, path: &str) {
    let started = Instant::now();
    let r = get(act.tcp_addrs[0], path, &[]).unwrap();
    eprintln!(
        "{path}: {} {:?} after {:?}",
        r.status,
        r.text(),
        started.elapsed()
    );
    assert_eq!(r.status, 502, "{r:?}");
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
}

/// 11c. A `Content-Length` body cut off half way is a truncated response at
///      the client, promptly: never a hang, never a complete-looking one.
#[test]
fn a_truncated_body_is_truncated_at_the_client() {
    let up = Upstream::start(|ex| {
        ex.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n")?;
        ex.write(&pattern(5000))?;
        Ok(Next::Close)
    });
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    conn.stream().set_read_timeout(Some(PROMPT)).unwrap();
    let started = Instant::now();
    let r = conn.request("GET", "/truncated", &[], b"");
    let e = r.expect_err("a truncated response must not look complete");
    eprintln!(
        "truncated: {e} after {:?}; log:\n{}",
        started.elapsed(),
        act.log()
    );
    assert!(
        !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "a hang, not a close: {e}"
    );
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
}

/// 12. A large response head (50 headers, one of them 20 KiB) passes intact.
#[test]
fn a_large_response_head_passes_intact() {
    let big = "v".repeat(20 * 1024);
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..50 {
        head.push_str(&format!("X-Header-{i}: value {i}\r\n"));
    }
    head.push_str(&format!("X-Big: {big}\r\nContent-Length: 2\r\n\r\nok"));
    let up = Upstream::start(move |ex| {
        ex.write(head.as_bytes())?;
        Ok(Next::KeepOpen)
    });
    let act = up.gate();
    let r = get(act.tcp_addrs[0], "/big-head", &[]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{:?}", r.status);
    let ours: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-header-"))
        .cloned()
        .collect();
    let want: Vec<(String, String)> = (0..50)
        .map(|i| (format!("x-header-{i}"), format!("value {i}")))
        .collect();
    assert_eq!(ours, want);
    assert!(r.header("x-big") == Some(big.as_str()), "x-big differs");
}

/// 13. Large bodies arrive byte for byte: 1 MiB in 1000 small chunks, each
///     written on its own, and 10 MiB with `Content-Length`.
#[test]
fn large_bodies_arrive_exactly() {
    const CHUNKED: usize = 1024 * 1024;
    const LENGTH: usize = 10 * 1024 * 1024;
    let up = Upstream::start(|ex| {
        if ex.head.path == "/chunks" {
            ex.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let body = pattern(CHUNKED);
            let size = CHUNKED / 1000;
            for (i, chunk) in body.chunks(size).enumerate() {
                let mut c = format!("{:x}", chunk.len()).into_bytes();
                if i % 7 == 0 {
                    c.extend_from_slice(b";n=1");
                }
                c.extend_from_slice(b"\r\n");
                c.extend_from_slice(chunk);
                c.extend_from_slice(b"\r\n");
                ex.write(&c)?;
            }
            ex.write(b"0\r\n\r\n")?;
        } else {
            ex.write(&with_length("200 OK", &pattern(LENGTH)))?;
        }
        Ok(Next::KeepOpen)
    });
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let r = conn.request("GET", "/chunks", &[], b"").unwrap();
    assert_eq!((r.status, r.body.len()), (200, CHUNKED), "{:?}", r.headers);
    assert!(r.body == pattern(CHUNKED), "the chunked body differs");
    let r = conn.request("GET", "/length", &[], b"").unwrap();
    assert_eq!((r.status, r.body.len()), (200, LENGTH), "{:?}", r.headers);
    assert!(r.body == pattern(LENGTH), "the 10 MiB body differs");
}

/// 14. `Transfer-Encoding: chunked` with `Content-Length` too: chunked wins
///     (RFC 9112 §6.3), and the client gets the dechunked body, without the
///     stale length. (hyper's client left `Content-Length: 100` in the
///     headers; with `Transfer-Encoding` stripped as hop-by-hop, the client
///     got an empty close, logged as a 200.)
#[test]
fn transfer_encoding_wins_over_content_length() {
    let up = answering(
        |head| head.path == "/both",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let act = up.gate();
    let mut conn = Conn::connect(act.tcp_addrs[0]).unwrap();
    let r = conn.request("GET", "/both", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"), "{r:?}");
    assert!(
        !(r.header("content-length").is_some() && r.header("transfer-encoding").is_some()),
        "not both framings to the client: {:?}",
        r.headers
    );
    if let Some(len) = r.header("content-length") {
        assert_eq!(len, "11", "{:?}", r.headers);
    }
    let r = conn.request("GET", "/small", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "small"), "{r:?}");
}

/// 15. A 101 whose first tunnelled bytes come in the same write as its head:
///     the client gets the 101, then those bytes, then the echoes.
#[test]
fn bytes_after_a_101_in_the_same_write_reach_the_client() {
    let up = Upstream::start(|ex| {
        ex.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n\
              hello-from-upstream",
        )?;
        ex.echo_until_close()
    });
    let act = up.gate();
    let mut s = raw_connect(act.tcp_addrs[0]);
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .unwrap();
    let (head, mut rest) = raw_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let greeting = b"hello-from-upstream";
    while rest.len() < greeting.len() {
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&rest), "hello-from-upstream");
    for message in [&b"ping"[..], b"a longer message over the tunnel"] {
        s.write_all(message).unwrap();
        let mut echoed = vec![0u8; message.len()];
        s.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_all(&mut s),
        b"",
        "the upstream's close ends the tunnel"
    );
}
