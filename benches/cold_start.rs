//! Cold start, measured from the exec of a socket-activated proxy (started as
//! systemd starts it, with a client already waiting on the socket) to the
//! client's first response byte; contenders in turns, in one run:
//!
//! 1a. the backend already running: idlegate (tcp, http) and
//!     systemd-socket-proxyd, the activation cost alone;
//! 1b. a process backend that idlegate starts and that binds after 0, 50 or
//!     500 ms, against that backend's own spawn -> first response byte
//!     without idlegate: the difference is idlegate's overhead;
//! and idlegate's exec -> `READY=1` (the `sh` shim that sets `LISTEN_PID`,
//! measured alone, subtracted).
//!
//! Prints markdown tables, writes target/bench-cold-start.md and draws every
//! distribution in target/bench-cold-start.svg. `IDLEGATE_BENCH_QUICK=1`
//! takes fewer samples. The backend is this bench's own binary in `--serve`
//! mode.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PROXYD: &str = "/lib/systemd/systemd-socket-proxyd";

/// One labelled set of samples, in ms.
type Series = (String, Vec<f64>);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve") {
        serve(&args[at + 1], args[at + 2].parse().unwrap());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var_os("IDLEGATE_BENCH_QUICK").is_some();
    let runs = if quick { 10 } else { 40 };
    let mut report = String::new();
    let mut say = |line: String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };
    let mut plotted: Vec<Series> = Vec::new();

    // 1a. Backend already running.
    let backend = start_backend();
    let mut proxies: Vec<(&str, Vec<String>)> = Vec::new();
    if installed(PROXYD) {
        proxies.push((
            "systemd-socket-proxyd",
            vec![PROXYD.into(), backend.to_string()],
        ));
    } else {
        say(format!(
            "skipped: systemd-socket-proxyd ({PROXYD} missing; apt-get install systemd)"
        ));
    }
    for mode in ["tcp", "http"] {
        let mut argv = idlegate_argv(backend, "0");
        argv.extend(["--mode".into(), mode.into()]);
        proxies.push((
            if mode == "tcp" {
                "idlegate tcp"
            } else {
                "idlegate http"
            },
            argv,
        ));
    }
    let mut samples: Vec<Vec<f64>> = proxies.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, (_, argv)) in proxies.iter().enumerate() {
            let (t, proxy) = exec_to_first_byte(argv);
            samples[i].push(t);
            drop(proxy);
        }
    }
    say("## Cold start, backend already running (proxy exec -> first response byte, ms)\n".into());
    say("| contender | p50 | p90 | p99 | p50 vs systemd-socket-proxyd |".into());
    say("|---|---|---|---|---|".into());
    let proxyd = proxies
        .iter()
        .position(|(n, _)| *n == "systemd-socket-proxyd")
        .map(|i| median(&mut samples[i].clone()));
    for ((name, _), s) in proxies.iter().zip(samples) {
        let (p50, row) = row(name, s.clone());
        let ratio = proxyd
            .map(|p| format!("{:.2}x", p50 / p))
            .unwrap_or_else(|| "n/a".into());
        say(format!("{row} {ratio} |"));
        plotted.push((format!("backend up: {name}"), s));
    }
    say(String::new());

    // 1b. A process backend that binds after a delay.
    say(
        "## Cold start, process backend binding after a delay (exec -> first response byte, ms)\n"
            .into(),
    );
    let shim = median(&mut (0..runs).map(|_| shim_alone()).collect::<Vec<_>>());
    say(format!(
        "(The activation shim, `sh -c 'LISTEN_PID=$$ exec …'`, which systemd does not need, takes {shim:.2} ms of each idlegate figure.)\n"
    ));
    say("| backend delay | backend alone p50 | through idlegate p50 | idlegate p90 | idlegate p99 | overhead at p50 | overhead without the shim |".into());
    say("|---|---|---|---|---|---|---|".into());
    let me = std::env::current_exe().unwrap();
    for delay in [0u64, 50, 500] {
        let n = if delay >= 500 { runs.min(15) } else { runs };
        let (mut alone, mut through) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let serve = [
                me.display().to_string(),
                "--serve".into(),
                addr.to_string(),
                delay.to_string(),
            ];
            alone.push(backend_alone(&serve, addr));
            let mut argv = idlegate_argv(addr, "100ms");
            argv.push("--".into());
            argv.extend(serve.iter().cloned());
            let (t, mut proxy) = exec_to_first_byte(&argv);
            through.push(t);
            assert!(
                proxy.wait_exit(Duration::from_secs(30)),
                "idlegate did not exit when idle"
            );
        }
        let a = median(&mut alone.clone());
        through.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let t = percentile(&through, 0.5);
        say(format!(
            "| {delay} ms | {a:.2} | {t:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} |",
            percentile(&through, 0.9),
            percentile(&through, 0.99),
            t - a,
            t - a - shim
        ));
        plotted.push((format!("{delay} ms backend alone"), alone));
        plotted.push((format!("{delay} ms backend through idlegate"), through));
    }
    say(String::new());

    // exec -> READY=1.
    let (mut ready, mut shim) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ready.push(exec_to_ready(backend));
        shim.push(shim_alone());
    }
    let (r, s) = (median(&mut ready), median(&mut shim));
    say(format!(
        "exec -> READY=1: {r:.2} ms through the `sh -c 'LISTEN_PID=$$ exec …'` shim, which alone takes {s:.2} ms: idlegate's own {:.2} ms (medians of {runs})\n",
        r - s
    ));

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let svg = target.join("bench-cold-start.svg");
    if std::fs::write(&svg, plot(&plotted)).is_ok() {
        say(format!("plot: {}", svg.display()));
    }
    let _ = std::fs::write(target.join("bench-cold-start.md"), &report);
}

/// The idlegate command line in front of `upstream`, idle exit after `idle`.
fn idlegate_argv(upstream: SocketAddr, idle: &str) -> Vec<String> {
    [
        env!("CARGO_BIN_EXE_idlegate"),
        "--upstream",
        &upstream.to_string(),
        "--idle-timeout",
        idle,
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A client waits on a fresh socket; `argv` is activated on it. Returns the
/// time from the exec to the client's first response byte, in ms.
fn exec_to_first_byte(argv: &[String]) -> (f64, Activated) {
    let listener = fresh_listener();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        request_first_byte(addr);
        Instant::now()
    });
    // Let the client connect first: it is the one that triggers activation.
    std::thread::sleep(Duration::from_millis(2));
    let started = Instant::now();
    let proxy = Activated::spawn(argv, listener, &[]);
    let answered = client.join().unwrap();
    (ms(answered - started), proxy)
}

/// The backend started alone: spawn -> first response byte, polling every 0.1 ms.
fn backend_alone(serve: &[String], addr: SocketAddr) -> f64 {
    let started = Instant::now();
    let mut child = Command::new(&serve[0])
        .args(&serve[1..])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the backend");
    let t = loop {
        if try_first_byte(addr).is_some() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the backend never answered"
        );
        std::thread::sleep(Duration::from_micros(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    ms(t)
}

/// idlegate activated with the backend up: exec -> `READY=1` on a notify socket, ms.
fn exec_to_ready(backend: SocketAddr) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let proxy = Activated::spawn(
        &idlegate_argv(backend, "0"),
        fresh_listener(),
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let mut buf = [0u8; 512];
    loop {
        let n = notify.recv(&mut buf).expect("READY=1");
        if buf[..n].starts_with(b"READY=1") {
            break;
        }
    }
    let t = started.elapsed();
    drop(proxy);
    ms(t)
}

/// The activation shim alone: spawn of `sh -c 'LISTEN_PID=$$ exec true'` to its exit.
fn shim_alone() -> f64 {
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", r#"LISTEN_PID=$$ exec "$0""#, "true"])
        .status()
        .unwrap();
    assert!(status.success());
    ms(started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A free port, for a backend that binds it later.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `--serve ADDR DELAY_MS`: sleep, then bind and serve the bench's backend.
fn serve(addr: &str, delay_ms: u64) {
    std::thread::sleep(Duration::from_millis(delay_ms));
    serve_backend(TcpListener::bind(addr).expect("bind the backend's address"));
}

/// A table row's start (`| name | p50 | p90 | p99 |`) and the p50.
fn row(name: &str, mut s: Vec<f64>) -> (f64, String) {
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p50 = percentile(&s, 0.5);
    (
        p50,
        format!(
            "| {name} | {p50:.2} | {:.2} | {:.2} |",
            percentile(&s, 0.9),
            percentile(&s, 0.99)
        ),
    )
}

/// Every series as a row of dots on a shared logarithmic time axis, with its median marked.
fn plot(series: &[Series]) -> String {
    let (left, width, row_h, top) = (330.0, 600.0, 26.0, 30.0);
    let all = series.iter().flat_map(|(_, s)| s.iter().copied());
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (
        10f64.powf(lo.max(0.01).log10().floor()),
        10f64.powf(hi.log10().ceil()),
    );
    let x = |v: f64| left + (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * width;
    let height = top + row_h * series.len() as f64 + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"18\" font-size=\"14\">idlegate cold start: exec -> first response byte (ms, log scale; bar = median)</text>\n",
        left + width + 20.0
    );
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let px = x(decade);
        svg += &format!(
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{decade}</text>\n",
            height - 30.0,
            height - 15.0
        );
        decade *= 10.0;
    }
    for (i, (name, samples)) in series.iter().enumerate() {
        let y = top + row_h * (i as f64 + 0.5);
        let colour = if name.contains("idlegate") {
            "#1f6feb"
        } else {
            "#888"
        };
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{name}</text>\n",
            left - 10.0,
            y + 4.0
        );
        for (j, v) in samples.iter().enumerate() {
            let jitter = ((j * 7919) % 11) as f64 - 5.0;
            svg += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\" fill-opacity=\"0.5\"/>\n",
                x(*v),
                y + jitter
            );
        }
        let m = median(&mut samples.clone());
        svg += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"black\" stroke-width=\"2\"/>\n",
            x(m),
            y - 9.0,
            y + 9.0
        );
    }
    svg + "</svg>\n"
}
