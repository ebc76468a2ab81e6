//! Cold start of a podman container backend, in turns, in one run:
//!
//! - `podman start` -> the port answers: the container's own start time, the floor;
//! - idlegate `--container` (engine API): client connect -> first response
//!   byte through a freshly activated idlegate that starts the container;
//! - idlegate `--container --idle-action pause`: the same, waking a paused one;
//! - idlegate `-- podman run --rm --init …`: the command kind.
//!
//! The image is built locally from busybox-static (busybox httpd); podman
//! uses a private containers.conf (runc, explicit ulimits). Without podman
//! the bench says it is skipped and how to install it. `IDLEGATE_BENCH_QUICK=1`
//! takes fewer samples. Writes target/bench-containers.md.

mod common;
#[path = "../tests/support/podman.rs"]
mod podman;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use podman::{podman, ContainerName, EngineService, Podman, IMAGE};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    PodmanStart,
    ApiStart,
    Api,
    ApiPause,
    PodmanRun,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PodmanStart => "`podman start` -> port answers (floor)",
            Kind::ApiStart => "engine API start -> port answers (floor of the API)",
            Kind::Api => "idlegate --container (engine API)",
            Kind::ApiPause => "idlegate --container --idle-action pause",
            Kind::PodmanRun => "idlegate -- podman run --rm --init",
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One cold start of `kind`, in ms; leaves the container stopped (or paused).
fn sample(kind: Kind, podman: &Podman, socket: &Path, name: &str, port: u16) -> f64 {
    let upstream = format!("127.0.0.1:{port}");
    let addr: SocketAddr = upstream.parse().unwrap();
    if kind == Kind::PodmanStart || kind == Kind::ApiStart {
        let started = Instant::now();
        if kind == Kind::PodmanStart {
            podman.ok(&["start", name]);
        } else {
            api_start(socket, name);
        }
        let deadline = started + Duration::from_secs(60);
        loop {
            if try_first_byte(addr).is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never answered");
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = started.elapsed();
        podman.ok(&["stop", "--time", "0", name]);
        return t.as_secs_f64() * 1000.0;
    }
    let idlegate = env!("CARGO_BIN_EXE_idlegate");
    let socket = socket.display().to_string();
    let publish = format!("127.0.0.1:{port}:8080");
    let mut argv: Vec<&str> = vec![
        idlegate,
        "--upstream",
        &upstream,
        "--idle-timeout",
        "100ms",
        "--log-level",
        "warn",
    ];
    match kind {
        Kind::Api | Kind::ApiPause => {
            argv.extend(["--container", name, "--engine-socket", &socket]);
            argv.extend(["--stop-timeout", "0"]);
            if kind == Kind::ApiPause {
                argv.extend(["--idle-action", "pause"]);
            }
        }
        Kind::PodmanRun => argv.extend([
            "--", "podman", "run", "--rm", "--init", "--name", name, "-p", &publish, IMAGE,
        ]),
        Kind::PodmanStart | Kind::ApiStart => unreachable!(),
    }
    let argv: Vec<String> = argv.into_iter().map(String::from).collect();
    let listener = fresh_listener();
    let at = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || request_first_byte(at));
    std::thread::sleep(Duration::from_millis(2));
    let conf = podman.conf().display().to_string();
    let mut proxy = Activated::spawn(&argv, listener, &[("CONTAINERS_CONF", &conf)]);
    let t = client.join().unwrap();
    assert!(
        proxy.wait_exit(Duration::from_secs(60)),
        "idlegate did not exit when idle"
    );
    t.as_secs_f64() * 1000.0
}

/// `POST /containers/NAME/start` on the engine socket, as idlegate sends it.
fn api_start(socket: &Path, name: &str) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("engine socket");
    write!(
        s,
        "POST /v1.41/containers/{name}/start HTTP/1.0\r\nHost: d\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(" 204 "), "start {name}: {answer}");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !installed("podman") || !Path::new("/bin/busybox").exists() {
        println!("skipped: container cold start (podman or busybox missing; apt-get install podman runc catatonit busybox-static)");
        return;
    }
    let runs = if std::env::var_os("IDLEGATE_BENCH_QUICK").is_some() {
        5
    } else {
        20
    };
    let Some(podman) = podman() else { return };
    let dir = tempfile::tempdir().unwrap();
    let service = EngineService::start(podman, dir.path());
    let kinds = [
        Kind::PodmanStart,
        Kind::ApiStart,
        Kind::Api,
        Kind::ApiPause,
        Kind::PodmanRun,
    ];
    let containers: Vec<ContainerName> = (0..kinds.len())
        .map(|_| ContainerName::new(podman, "bench"))
        .collect();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let ports: Vec<u16> = kinds.iter().map(|_| free_port()).collect();
    for i in 0..4 {
        let publish = format!("127.0.0.1:{}:8080", ports[i]);
        podman.ok(&["create", "--name", names[i], "-p", &publish, IMAGE]);
    }
    // The paused kind wakes a paused container: pause it once first.
    sample(Kind::ApiPause, podman, &service.socket, names[3], ports[3]);
    let mut samples: Vec<Vec<f64>> = kinds.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, kind) in kinds.iter().enumerate() {
            samples[i].push(sample(*kind, podman, &service.socket, names[i], ports[i]));
        }
    }
    drop(containers);
    drop(service);

    let mut report = format!(
        "## Cold start, podman container backend (ms; {runs} runs each, in turns)\n\n\
         | how | p50 | p90 | p99 | p50 minus `podman start` | p50 minus API start |\n\
         |---|---|---|---|---|---|\n"
    );
    let cli_floor = median(&mut samples[0].clone());
    let api_floor = median(&mut samples[1].clone());
    for (kind, s) in kinds.iter().zip(samples.iter_mut()) {
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p50 = percentile(s, 0.5);
        report.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:+.1} | {:+.1} |\n",
            kind.name(),
            p50,
            percentile(s, 0.9),
            percentile(s, 0.99),
            p50 - cli_floor,
            p50 - api_floor
        ));
    }
    println!("{report}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-containers.md");
    if std::fs::write(&out, &report).is_ok() {
        println!("report written to {}", out.display());
    }
}
