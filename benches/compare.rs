//! idlegate side by side with systemd-socket-proxyd, the HTTP reverse
//! proxies users already run (nginx `proxy_pass` tuned for the load --
//! `keepalive` [`WRK_CONNECTIONS_MAX`] upstream connections, high
//! `keepalive_requests` --, the same nginx untuned with `keepalive 64` as
//! before issue 32, Caddy `reverse_proxy`) and a direct connection, in one
//! run, in turns (A B C D A B C D …), reported as medians and ratios.
//!
//! `cargo bench` runs it; `IDLEGATE_BENCH_QUICK=1` shortens every phase. A
//! contender or tool that is not installed is named as skipped, with the
//! command that installs it. Nothing here is a pass/fail test.
//!
//! Phases (cold start is `benches/cold_start.rs`, containers `benches/containers.rs`):
//! 1. warm keep-alive small responses (wrk, at 16, 64 and 256 connections),
//!    with the proxy's and the backend's CPU time per request;
//! 2. warm, a new connection per request (wrk, `Connection: close`), the same;
//! 3. bulk: one 1 GiB response;
//! 4. footprint: each proxy's RSS activated, under load (and per active
//!    connection at 256), after; idlegate's binary size;
//! 5. idle keep-alive connections: each proxy's RSS before and with 1000
//!    idle keep-alive clients open (200 quick), per connection (issue 19).
//!
//! The backend is the bench's own: a minimal HTTP/1.1 server on a thread of
//! its own, faster than either proxy, answering `hello, world` or 1 GiB.

mod common;
#[path = "compare/idle.rs"]
mod idle;
#[path = "compare/warm.rs"]
mod warm;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use common::procfs;
use common::reverse_proxies::{self, ReverseProxy};
use common::*;
use idle::idle_memory_report;
use warm::{legend, PeakRss, Warm};

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
/// The warm phases: title, `Connection: close` on each request, wrk
/// connections. The connections go up, so each footprint column holds the
/// peak so far.
const WRK_PHASES: [(&str, bool, usize); 4] = [
    ("keep-alive small responses", false, 16),
    ("a new connection per request", true, 16),
    ("keep-alive small responses", false, 64),
    ("keep-alive small responses", false, WRK_CONNECTIONS_MAX),
];
/// The most wrk connections of a phase: the tuned nginx keeps as many idle
/// upstream connections (`keepalive`).
const WRK_CONNECTIONS_MAX: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Direct,
    Proxyd,
    IdlegateTcp,
    IdlegateHttp,
    Nginx,
    NginxKeepalive64,
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
            Contender::Nginx => Running::Proxy(ReverseProxy::start(
                reverse_proxies::Kind::Nginx {
                    keepalive: WRK_CONNECTIONS_MAX,
                },
                backend,
            )),
            Contender::NginxKeepalive64 => Running::Proxy(ReverseProxy::start(
                reverse_proxies::Kind::NginxKeepalive64,
                backend,
            )),
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
        procfs::rss_tree_kib(self.pid()?)
    }

    /// CPU time used so far, µs, a reverse proxy's workers included.
    fn cpu_us(&self) -> Option<f64> {
        procfs::cpu_tree_us(self.pid()?)
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
            Contender::NginxKeepalive64 => "nginx proxy_pass, keepalive 64 (untuned)",
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

    let (backend, backend_tid) = start_backend_thread();
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
    for line in legend() {
        say(line);
    }

    // 1-3. Warm: each proxy activated once, then every contender in turns.
    let mut all = vec![Contender::Direct];
    all.extend(proxies.iter().copied());
    // The untuned nginx of before issue 32, in the warm phases only.
    if let Some(i) = all.iter().position(|c| *c == Contender::Nginx) {
        all.insert(i + 1, Contender::NginxKeepalive64);
    }
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
    let mut peak_rss: PeakRss = Vec::new();
    if has_wrk {
        // Keep-alive at three concurrencies: a single-threaded proxy falls
        // behind as clients are added, so one level alone would mislead.
        for phase in WRK_PHASES {
            let warm = Warm {
                running: &running,
                backend,
                backend_tid,
                rounds,
                seconds,
            };
            for line in warm.phase(phase, &mut peak_rss) {
                say(line);
            }
        }
    }

    // Bulk compares the byte movers (the HTTP reverse proxies buffer a
    // response their own way, which is not what this phase measures).
    let movers: Vec<&(Contender, Running)> = running
        .iter()
        .filter(|(c, _)| {
            !matches!(
                c,
                Contender::Nginx | Contender::NginxKeepalive64 | Contender::Caddy
            )
        })
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
    say("| contender | just activated (after one request) | peak, 16 connections | peak so far, 64 | peak so far, 256 | after | KiB per active connection at 256 |".into());
    say("|---|---|---|---|---|---|---|".into());
    for (c, p) in &running {
        if matches!(p, Running::Direct) {
            continue;
        }
        let known = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        let activated = idlegate_rss_idle
            .iter()
            .find(|x| x.0 == *c)
            .and_then(|x| x.1);
        let idle = known(activated);
        let peak = |connections: usize| {
            peak_rss
                .iter()
                .find(|x| x.0 == *c && x.1 == connections)
                .map(|x| x.2)
        };
        let per_active = match (peak(WRK_CONNECTIONS_MAX), activated) {
            (Some(p), Some(a)) => {
                format!("{:.1}", (p as f64 - a as f64) / WRK_CONNECTIONS_MAX as f64)
            }
            _ => "?".into(),
        };
        let (p16, p64, p256) = (
            known(peak(16)),
            known(peak(64)),
            known(peak(WRK_CONNECTIONS_MAX)),
        );
        let after = p
            .rss_kib()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into());
        say(format!(
            "| {} | {idle} | {p16} | {p64} | {p256} | {after} | {per_active} |",
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
