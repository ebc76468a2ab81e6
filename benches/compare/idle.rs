//! The idle keep-alive connections phase: each proxy started afresh and
//! alone, its RSS before and with many idle keep-alive clients open.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::common::{find, request_first_byte};
use super::{Contender, Running};

/// The value of `name` (lowercase) in a lowercased response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Reads one `200` response off `s`: the head, then `Content-Length` bytes
/// of body, or a chunked body up to its last chunk.
fn read_response(s: &mut TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                let status = head.lines().next().unwrap_or_default().to_string();
                return Err(io::Error::new(io::ErrorKind::InvalidData, status));
            }
            let body = &buf[end + 4..];
            let complete = match header(&head, "content-length") {
                Some(len) => len.parse().is_ok_and(|len: usize| body.len() >= len),
                None => body.ends_with(b"0\r\n\r\n"),
            };
            if complete {
                return Ok(());
            }
        }
        match s.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// How long a contender may take to answer one idle-phase request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A keep-alive connection to `addr` that has had one `GET /` answered.
fn keep_alive_exchange(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    match read_response(&mut s) {
        // A read timeout is EAGAIN on Linux: say what it means.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {ANSWER_TIMEOUT:?}"),
            ))
        }
        r => r.map(|()| s),
    }
}

/// Whether the peer has left `s` open: nothing to read, no end of stream.
fn still_open(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    let open = s.set_nonblocking(true).is_ok()
        && matches!(s.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    let _ = s.set_nonblocking(false);
    open
}

/// A contender's resident memory around idle keep-alive connections, KiB.
struct IdleMemory {
    /// Started, one request answered, no client connected.
    before: u64,
    /// With every connection answered once and left open.
    with_idle: u64,
    /// How many connections the proxy still held open after the reading.
    open: usize,
}

/// Starts `contender` afresh in front of `backend`, opens `n` keep-alive
/// connections one after another (so an HTTP proxy reuses one upstream
/// connection), each answered once and kept, and reads the RSS around them.
fn idle_memory(contender: Contender, backend: SocketAddr, n: usize) -> Result<IdleMemory, String> {
    let running = Running::start(contender, backend);
    let addr = running.addr(backend);
    request_first_byte(addr);
    let rss = || running.rss_kib().ok_or("no RSS (the proxy exited?)");
    let before = rss()?;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let s = keep_alive_exchange(addr).map_err(|e| format!("connection {}: {e}", i + 1))?;
        clients.push(s);
    }
    let with_idle = rss()?;
    let open = clients.iter().filter(|s| still_open(s)).count();
    Ok(IdleMemory {
        before,
        with_idle,
        open,
    })
}

/// The idle keep-alive connections section of the report, a line at a time.
pub fn idle_memory_report(proxies: &[Contender], backend: SocketAddr, n: usize) -> Vec<String> {
    let mut lines = vec![
        format!("## Idle keep-alive connections (RSS, KiB; {n} clients, one `GET /` answered on each, all left open)\n"),
        "| contender | before | with the idle clients | still open | KiB per idle connection |".into(),
        "|---|---|---|---|---|".into(),
    ];
    for c in proxies {
        lines.push(match idle_memory(*c, backend, n) {
            Ok(m) => format!(
                "| {} | {} | {} | {} | {:.1} |",
                c.name(),
                m.before,
                m.with_idle,
                m.open,
                (m.with_idle as f64 - m.before as f64) / n as f64
            ),
            Err(e) => format!("| {} | failed: {e} | | | |", c.name()),
        });
    }
    lines.push(String::new());
    lines.push(
        "Resident memory of the proxy (nginx's workers included); kernel socket buffers are \
         not in it."
            .into(),
    );
    lines
}
