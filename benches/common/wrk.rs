//! wrk, the load generator of the warm phases: one run and what its
//! `--latency` output says.

use std::net::SocketAddr;
use std::process::Command;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug)]
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 99th percentile latency, ms.
    pub p99: f64,
    /// Requests completed in the run.
    pub requests: u64,
}

/// Runs `wrk -t1 -c<connections> -d<seconds>s --latency` against `addr`,
/// each request with `Connection: close` if `close`.
pub fn run(addr: SocketAddr, connections: usize, seconds: u64, close: bool) -> Option<WrkRun> {
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
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Parses wrk's `--latency` output.
fn parse(out: &str) -> Option<WrkRun> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    // "  123456 requests in 5.00s, 10.00MB read"
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let lat = |p: &str| {
        out.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == p).then(|| w.next()).flatten().and_then(to_ms)
        })
    };
    Some(WrkRun {
        rps,
        p50: lat("50%")?,
        p99: lat("99%")?,
        requests,
    })
}

fn to_ms(v: &str) -> Option<f64> {
    for (suffix, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    None
}
