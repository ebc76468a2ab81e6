//! The warm phases: every contender in turns under wrk, with the proxy's
//! and the backend's CPU time per request and the proxy's peak RSS.

use std::net::SocketAddr;
use std::time::Duration;

use super::common::wrk::{self, WrkRun};
use super::common::{median, procfs, reverse_proxies};
use super::{Contender, Running, WRK_CONNECTIONS_MAX};

/// A contender's samples in one warm phase, one entry per wrk run.
#[derive(Default)]
struct WarmSamples {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// The proxy's CPU time per request, µs (none for a direct connection).
    proxy_us: Vec<f64>,
    /// The backend's CPU time per request, µs.
    backend_us: Vec<f64>,
}

/// Peak RSS, KiB, by contender and number of wrk connections.
pub type PeakRss = Vec<(Contender, usize, u64)>;

/// The warm phases' setting: the contenders running, in turns, in front of
/// the bench's backend.
pub struct Warm<'a> {
    /// The contenders, each running.
    pub running: &'a [(Contender, Running)],
    /// The bench's backend.
    pub backend: SocketAddr,
    /// The backend's thread, whose CPU time is the backend's.
    pub backend_tid: i64,
    /// wrk runs per contender.
    pub rounds: usize,
    /// Seconds per wrk run.
    pub seconds: u64,
}

impl Warm<'_> {
    /// Runs one phase, every contender in turns, `rounds` times; records
    /// the peak RSS into `peak_rss`; returns the phase's table.
    pub fn phase(&self, phase: (&str, bool, usize), peak_rss: &mut PeakRss) -> Vec<String> {
        let (title, close, connections) = phase;
        let mut samples: Vec<WarmSamples> = self
            .running
            .iter()
            .map(|_| WarmSamples::default())
            .collect();
        for _ in 0..self.rounds {
            for (i, (c, running)) in self.running.iter().enumerate() {
                let (run, peak) = self.measured_run(running, connections, close);
                if let Some(peak) = peak.filter(|p| *p > 0) {
                    match peak_rss
                        .iter_mut()
                        .find(|(x, n, _)| x == c && *n == connections)
                    {
                        Some((_, _, p)) => *p = (*p).max(peak),
                        None => peak_rss.push((*c, connections, peak)),
                    }
                }
                let Some((wrk, proxy_us, backend_us)) = run else {
                    continue;
                };
                let s = &mut samples[i];
                s.rps.push(wrk.rps);
                s.p50.push(wrk.p50);
                s.p99.push(wrk.p99);
                s.proxy_us.extend(proxy_us);
                s.backend_us.extend(backend_us);
            }
        }
        let mut lines = vec![
            format!(
                "## Warm: {title} (wrk -t1 -c{connections}; medians of {} runs)\n",
                self.rounds
            ),
            "| contender | req/s | p50 ms | p99 ms | proxy us/req | backend us/req | req/s vs systemd-socket-proxyd | vs nginx proxy_pass | vs caddy reverse_proxy | vs direct |".into(),
            "|---|---|---|---|---|---|---|---|---|---|".into(),
        ];
        let rps: Vec<(Contender, f64)> = self
            .running
            .iter()
            .zip(samples.iter_mut())
            .map(|((c, _), s)| (*c, median(&mut s.rps)))
            .collect();
        let base = |who: Contender| rps.iter().find(|x| x.0 == who).map(|x| x.1);
        for ((c, r), s) in rps.iter().zip(samples.iter_mut()) {
            let vs = |b: Option<f64>| {
                b.map(|b| format!("{:.2}x", r / b))
                    .unwrap_or_else(|| "n/a".into())
            };
            let us = |v: &mut Vec<f64>| {
                if v.is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.1}", median(v))
                }
            };
            lines.push(format!(
                "| {} | {r:.0} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} |",
                c.name(),
                median(&mut s.p50),
                median(&mut s.p99),
                us(&mut s.proxy_us),
                us(&mut s.backend_us),
                vs(base(Contender::Proxyd)),
                vs(base(Contender::Nginx)),
                vs(base(Contender::Caddy)),
                vs(base(Contender::Direct))
            ));
        }
        lines.push(String::new());
        lines
    }

    /// One wrk run against `running`: what wrk measured with the proxy's and
    /// the backend's CPU time per request around it, and the peak RSS of the
    /// proxy during it (sampled every 100 ms).
    #[allow(clippy::type_complexity)]
    fn measured_run(
        &self,
        running: &Running,
        connections: usize,
        close: bool,
    ) -> (Option<(WrkRun, Option<f64>, Option<f64>)>, Option<u64>) {
        let pid = running.pid();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(v) = pid.and_then(procfs::rss_tree_kib) {
                        peak = peak.max(v);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                peak
            })
        };
        let cpu = || {
            (
                running.cpu_us(),
                procfs::cpu_own_thread_us(self.backend_tid),
            )
        };
        let (proxy_before, backend_before) = cpu();
        let run = wrk::run(running.addr(self.backend), connections, self.seconds, close);
        let (proxy_after, backend_after) = cpu();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().ok();
        let run = run.filter(|r| r.requests > 0).map(|r| {
            let per_request = |before: Option<f64>, after: Option<f64>| {
                Some((after? - before?) / r.requests as f64)
            };
            (
                r,
                per_request(proxy_before, proxy_after),
                per_request(backend_before, backend_after),
            )
        });
        (run, peak)
    }
}

/// What each column of the report means, a line each.
pub fn legend() -> Vec<String> {
    let mut lines: Vec<String> = [
        "## The contenders and the columns\n",
        "- req/s: requests per second wrk completed, median of the runs.",
        "- p50 ms, p99 ms: wrk's median and 99th-percentile latency, median of the runs.",
        "- proxy us/req: the proxy's CPU time (utime+stime from /proc/PID/stat, nginx's \
         master and workers summed) across a wrk run, over the requests wrk made; median \
         (clock ticks, 10 ms on most systems: coarse on short runs).",
        "- backend us/req: the same for the backend behind the contender (the bench's own \
         backend, one thread of the bench process, the same for every contender).",
        "- req/s vs X: this contender's req/s over X's in the same phase.",
        "- MiB/s (bulk): one 1 GiB response read through the contender, median.",
        "- just activated, peak (so far), after (footprint): the proxy's RSS after its first \
         request, its peak during the warm phases up to that one (sampled every 100 ms), and \
         after them, KiB, nginx's workers included.",
        "- KiB per active connection at 256: (peak RSS at 256 wrk connections - RSS just \
         activated) / 256.",
        "- before, with the idle clients (idle table): the RSS of a proxy started afresh after \
         one request, then with every idle client answered once and left open.",
        "- still open: the idle clients the proxy had not closed when they were counted.",
        "- KiB per idle connection: (RSS with the idle clients - RSS before them) / clients.",
        "",
    ]
    .map(String::from)
    .to_vec();
    lines.insert(
        1,
        format!(
            "- nginx proxy_pass: tuned as a user would for this load: 2 workers, upstream \
             `keepalive {WRK_CONNECTIONS_MAX}` (the most wrk connections of a phase), \
             `keepalive_requests {}` for clients and upstream; `{}`: the nginx this bench \
             had before issue 32 (`keepalive 64`, default `keepalive_requests` 1000), in the \
             warm phases only.",
            reverse_proxies::NGINX_KEEPALIVE_REQUESTS,
            Contender::NginxKeepalive64.name()
        ),
    );
    lines
}
