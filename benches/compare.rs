//! idlegate side by side with systemd-socket-proxyd, the HTTP reverse
//! proxies users already run (nginx `proxy_pass` with upstream keep-alive,
//! Caddy `reverse_proxy`) and a direct connection, in one run, in turns
//! (A B C D A B C D …), reported as medians and ratios.
//!
//! `cargo bench` runs it; `IDLEGATE_BENCH_QUICK=1` shortens every phase. A
//! contender or tool that is not installed is named as skipped, with the
//! command that installs it. Nothing here is a pass/fail test.
//!
//! Phases (cold start is `benches/cold_start.rs`, containers `benches/containers.rs`):
//! 1. warm keep-alive small responses (wrk, at 16, 64 and 256 connections);
//! 2. warm, a new connection per request (wrk, `Connection: close`);
//! 3. bulk: one 1 GiB response;
//! 4. footprint: idlegate's RSS activated, under load, after; binary size;
//! 5. idle keep-alive connections: each proxy's RSS before and with 1000
//!    idle keep-alive clients open (200 quick), per connection (issue 19).
//!
//! The backend is the bench's own: a minimal HTTP/1.1 server on a thread of
//! its own, faster than either proxy, answering `hello, world` or 1 GiB.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::reverse_proxies::{self, ReverseProxy};
use common::*;

const PROXYD: &str = "/lib/systemd/systemd-socket-proxyd";
/// systemd-socket-proxyd's `--connections-max`: idlegate's default, as its
/// own (256) would cap the idle-connections phase.
const PROXYD_CONNECTIONS_MAX: &str = "--connections-max=4096";
/// Idle keep-alive client connections held open at once (quick: fewer).
const IDLE_CONNECTIONS: usize = 1000;
const IDLE_CONNECTIONS_QUICK: usize = 200;
/// Descriptors the hungriest contender holds per forwarded connection:
/// systemd-socket-proxyd's client, upstream and two splice pipes.
const DESCRIPTORS_PER_CONNECTION: u64 = 6;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Direct,
    Proxyd,
    IdlegateTcp,
    IdlegateHttp,
    Nginx,
    Caddy,
}

/// A contender running: nothing (direct), a proxy activated as systemd
/// does, or a reverse proxy on a port of its own.
enum Running {
    Direct,
    Activated(Activated),
    Proxy(ReverseProxy),
}

impl Running {
    fn start(contender: Contender, backend: SocketAddr) -> Running {
        match contender {
            Contender::Direct => Running::Direct,
            Contender::Nginx => {
                Running::Proxy(ReverseProxy::start(reverse_proxies::Kind::Nginx, backend))
            }
            Contender::Caddy => {
                Running::Proxy(ReverseProxy::start(reverse_proxies::Kind::Caddy, backend))
            }
            _ => Running::Activated(activate(contender, backend, fresh_listener())),
        }
    }

    fn addr(&self, backend: SocketAddr) -> SocketAddr {
        match self {
            Running::Direct => backend,
            Running::Activated(a) => a.addr(),
            Running::Proxy(p) => p.addr(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Running::Direct => None,
            Running::Activated(a) => Some(a.child.id()),
            Running::Proxy(p) => Some(p.pid()),
        }
    }

    /// Resident memory, a reverse proxy's workers included.
    fn rss_kib(&self) -> Option<u64> {
        reverse_proxies::rss_tree_kib(self.pid()?)
    }
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Direct => "direct",
            Contender::Proxyd => "systemd-socket-proxyd",
            Contender::IdlegateTcp => "idlegate tcp",
            Contender::IdlegateHttp => "idlegate http",
            Contender::Nginx => "nginx proxy_pass",
            Contender::Caddy => "caddy reverse_proxy",
        }
    }
}

/// `contender` activated in front of `backend`, with `listener` as its socket.
fn activate(contender: Contender, backend: SocketAddr, listener: TcpListener) -> Activated {
    let idlegate = env!("CARGO_BIN_EXE_idlegate");
    let upstream = backend.to_string();
    let argv: Vec<String> = match contender {
        Contender::Proxyd => vec![PROXYD.into(), PROXYD_CONNECTIONS_MAX.into(), upstream],
        Contender::IdlegateTcp | Contender::IdlegateHttp => {
            let mode = if contender == Contender::IdlegateHttp {
                "http"
            } else {
                "tcp"
            };
            vec![
                idlegate.into(),
                "--upstream".into(),
                upstream,
                "--mode".into(),
                mode.into(),
                "--idle-timeout".into(),
                "0".into(),
                "--log-level".into(),
                "warn".into(),
            ]
        }
        _ => unreachable!("{contender:?} is not activated"),
    };
    Activated::spawn(&argv, listener, &[])
}

/// A contender's wrk samples: requests/s, p50 ms, p99 ms, one entry per run.
type WrkSamples = (Contender, Vec<f64>, Vec<f64>, Vec<f64>);

/// Parses wrk's `--latency` output: (requests/s, p50 ms, p99 ms).
fn parse_wrk(out: &str) -> Option<(f64, f64, f64)> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let lat = |p: &str| {
        out.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == p).then(|| w.next()).flatten().and_then(to_ms)
        })
    };
    Some((rps, lat("50%")?, lat("99%")?))
}

fn to_ms(v: &str) -> Option<f64> {
    for (suffix, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    None
}

fn wrk(addr: SocketAddr, connections: usize, seconds: u64, close: bool) -> Option<(f64, f64, f64)> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{addr}/"));
    let out = cmd.output().ok()?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn bulk(addr: SocketAddr) -> f64 {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /bulk HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    assert!(
        total >= BULK_BYTES,
        "bulk transfer cut short at {total} bytes"
    );
    total as f64 / started.elapsed().as_secs_f64() / (1024.0 * 1024.0)
}

/// Raises the soft open-files limit to the hard one, for the bench and the
/// contenders it starts (they inherit it); returns the soft limit in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return 0;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        limit.rlim_cur = limit.rlim_max;
    }
    limit.rlim_cur as u64
}

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
fn idle_memory_report(proxies: &[Contender], backend: SocketAddr, n: usize) -> Vec<String> {
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery: nothing to list.
    }
    let quick = std::env::var_os("IDLEGATE_BENCH_QUICK").is_some();
    let (rounds, seconds) = if quick { (2, 2) } else { (3, 5) };
    let idle_clients = if quick {
        IDLE_CONNECTIONS_QUICK
    } else {
        IDLE_CONNECTIONS
    };
    // Before any contender starts: they inherit the limit.
    let open_files = raise_open_files_limit();
    let mut report = String::new();
    let mut say = |line: String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };

    let backend = start_backend();
    let mut proxies = vec![Contender::IdlegateTcp, Contender::IdlegateHttp];
    if installed(PROXYD) {
        proxies.insert(0, Contender::Proxyd);
    } else {
        say(format!(
            "skipped: systemd-socket-proxyd ({PROXYD} missing; apt-get install systemd)"
        ));
    }
    for (contender, path, package) in [
        (Contender::Nginx, reverse_proxies::NGINX, "nginx"),
        (Contender::Caddy, reverse_proxies::CADDY, "caddy"),
    ] {
        if installed(path) {
            proxies.push(contender);
        } else {
            say(format!(
                "skipped: {} ({path} missing; apt-get install {package})",
                contender.name()
            ));
        }
    }
    let needed = DESCRIPTORS_PER_CONNECTION * idle_clients as u64 + 64;
    if open_files < needed {
        say(format!(
            "note: the open-files limit is {open_files}, the idle-connections phase may need \
             {needed}; raise it (ulimit -n {needed}) if a contender fails there"
        ));
    }
    let has_wrk = installed("wrk");
    if !has_wrk {
        say("skipped: the wrk phases (wrk missing; apt-get install wrk)".into());
    }

    say(format!(
        "# idlegate benchmarks ({} cores, {} rounds, {seconds}s per wrk run)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rounds
    ));

    // 1-3. Warm: each proxy activated once, then every contender in turns.
    let mut all = vec![Contender::Direct];
    all.extend(proxies.iter().copied());
    let running: Vec<(Contender, Running)> = all
        .iter()
        .map(|c| {
            let running = Running::start(*c, backend);
            request_first_byte(running.addr(backend));
            (*c, running)
        })
        .collect();
    let addr_of = |c: &(Contender, Running)| c.1.addr(backend);
    let idlegate_rss_idle: Vec<(Contender, Option<u64>)> =
        running.iter().map(|(c, p)| (*c, p.rss_kib())).collect();

    // Peak RSS by contender and number of wrk connections.
    let mut peak_rss: Vec<(Contender, usize, u64)> = Vec::new();
    if has_wrk {
        // Keep-alive at three concurrencies: a single-threaded proxy falls
        // behind as clients are added, so one level alone would mislead. The
        // levels go up, so each footprint column holds the peak so far.
        for (title, close, connections) in [
            ("keep-alive small responses", false, 16),
            ("a new connection per request", true, 16),
            ("keep-alive small responses", false, 64),
            ("keep-alive small responses", false, 256),
        ] {
            let mut results: Vec<WrkSamples> =
                all.iter().map(|c| (*c, vec![], vec![], vec![])).collect();
            for _ in 0..rounds {
                for (i, entry) in running.iter().enumerate() {
                    let sampler = entry.1.pid();
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let peak = {
                        let stop = stop.clone();
                        std::thread::spawn(move || {
                            let mut peak = 0u64;
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                if let Some(v) = sampler.and_then(reverse_proxies::rss_tree_kib) {
                                    peak = peak.max(v);
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            peak
                        })
                    };
                    let r = wrk(addr_of(entry), connections, seconds, close);
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let peak = peak.join().unwrap();
                    if peak > 0 {
                        match peak_rss
                            .iter_mut()
                            .find(|(c, n, _)| *c == entry.0 && *n == connections)
                        {
                            Some((_, _, p)) => *p = (*p).max(peak),
                            None => peak_rss.push((entry.0, connections, peak)),
                        }
                    }
                    if let Some((rps, p50, p99)) = r {
                        results[i].1.push(rps);
                        results[i].2.push(p50);
                        results[i].3.push(p99);
                    }
                }
            }
            say(format!(
                "## Warm: {title} (wrk -t1 -c{connections}; medians of {rounds} runs)\n"
            ));
            say("| contender | req/s | p50 ms | p99 ms | req/s vs systemd-socket-proxyd | vs nginx proxy_pass | vs caddy reverse_proxy | vs direct |".into());
            say("|---|---|---|---|---|---|---|---|".into());
            let mut medians: Vec<(Contender, f64, f64, f64)> = results
                .iter_mut()
                .map(|(c, r, a, b)| (*c, median(r), median(a), median(b)))
                .collect();
            let base = |who: Contender, m: &[(Contender, f64, f64, f64)]| {
                m.iter().find(|x| x.0 == who).map(|x| x.1)
            };
            let (proxyd, nginx, caddy, direct) = (
                base(Contender::Proxyd, &medians),
                base(Contender::Nginx, &medians),
                base(Contender::Caddy, &medians),
                base(Contender::Direct, &medians),
            );
            for (c, rps, p50, p99) in medians.iter_mut() {
                let vs = |b: Option<f64>| {
                    b.map(|b| format!("{:.2}x", *rps / b))
                        .unwrap_or_else(|| "n/a".into())
                };
                say(format!(
                    "| {} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {} |",
                    c.name(),
                    rps,
                    p50,
                    p99,
                    vs(proxyd),
                    vs(nginx),
                    vs(caddy),
                    vs(direct)
                ));
            }
            say(String::new());
        }
    }

    // Bulk compares the byte movers (the HTTP reverse proxies buffer a
    // response their own way, which is not what this phase measures).
    let movers: Vec<&(Contender, Running)> = running
        .iter()
        .filter(|(c, _)| !matches!(c, Contender::Nginx | Contender::Caddy))
        .collect();
    let mut bulk_results: Vec<(Contender, Vec<f64>)> =
        movers.iter().map(|(c, _)| (*c, vec![])).collect();
    // Bulk swings more than the rest: a few more rounds, still cheap.
    for _ in 0..rounds + 2 {
        for (i, entry) in movers.iter().enumerate() {
            bulk_results[i].1.push(bulk(addr_of(entry)));
        }
    }
    say(format!(
        "## Bulk: one 1 GiB response (MiB/s, median of {})\n",
        rounds + 2
    ));
    say("| contender | MiB/s | vs systemd-socket-proxyd | vs direct |".into());
    say("|---|---|---|---|".into());
    let medians: Vec<(Contender, f64)> = bulk_results
        .iter_mut()
        .map(|(c, v)| (*c, median(v)))
        .collect();
    let base = |who: Contender| medians.iter().find(|x| x.0 == who).map(|x| x.1);
    for (c, m) in &medians {
        let vs = |b: Option<f64>| {
            b.map(|b| format!("{:.2}x", m / b))
                .unwrap_or_else(|| "n/a".into())
        };
        say(format!(
            "| {} | {:.0} | {} | {} |",
            c.name(),
            m,
            vs(base(Contender::Proxyd)),
            vs(base(Contender::Direct))
        ));
    }
    say(String::new());

    say("## Footprint (RSS, KiB)\n".into());
    say("| contender | just activated (after one request) | peak, 16 connections | peak so far, 64 | peak so far, 256 | after |".into());
    say("|---|---|---|---|---|---|".into());
    for (c, p) in &running {
        if matches!(p, Running::Direct) {
            continue;
        }
        let idle = idlegate_rss_idle
            .iter()
            .find(|x| x.0 == *c)
            .and_then(|x| x.1)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into());
        let peak = |connections: usize| {
            peak_rss
                .iter()
                .find(|x| x.0 == *c && x.1 == connections)
                .map(|x| x.2.to_string())
                .unwrap_or_else(|| "?".into())
        };
        let (p16, p64, p256) = (peak(16), peak(64), peak(256));
        let after = p
            .rss_kib()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into());
        say(format!(
            "| {} | {idle} | {p16} | {p64} | {p256} | {after} |",
            c.name()
        ));
    }
    let size = std::fs::metadata(env!("CARGO_BIN_EXE_idlegate"))
        .map(|m| m.len())
        .unwrap_or(0);
    say(format!(
        "\nidlegate binary: {} KiB (the profile cargo bench built: release)",
        size / 1024
    ));
    drop(running);
    say(String::new());

    // 5. Idle keep-alive connections, each proxy started afresh and alone.
    for line in idle_memory_report(&proxies, backend, idle_clients) {
        say(line);
    }

    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-report.md");
    if std::fs::write(&out, &report).is_ok() {
        println!("\nreport written to {}", out.display());
    }
}
