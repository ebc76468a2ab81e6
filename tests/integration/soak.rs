//! Soak: clients with random think times that straddle a short idle timeout,
//! for hundreds of activation cycles, in TCP and HTTP mode. The only
//! acceptable failure count is zero.
//!
//! Kept out of the default run (`#[ignore]`); `.ci/run` runs them:
//! `cargo test --test integration -- --ignored --nocapture soak`.
//! `IDLEGATE_SOAK_CYCLES` sets the activation cycles (default 300).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::activator::describe;
use crate::support::http::KeepAlive;
use crate::support::*;

/// Idle timeout of the soaked idlegate: short, so the think times straddle it.
const IDLE: &str = "40ms";
/// Client threads.
const CLIENTS: u32 = 3;
/// The longest think time between two requests of one client, ms.
const THINK_MAX_MS: u32 = 160;
/// How long a soak may take before it counts as stuck.
const SOAK_DEADLINE: Duration = Duration::from_secs(600);

fn cycles() -> usize {
    std::env::var("IDLEGATE_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Starts idlegate from `fixture` with the soak's idle timeout, and runs
/// `CLIENTS` threads of `request` (on idlegate's address) with random think
/// times until the activator has seen `cycles()` activations.
fn soak(
    mode: &str,
    fixture: Fixture,
    request: impl Fn(SocketAddr, u32, u64, &mut Option<KeepAlive>) -> Result<(), String>
        + Send
        + Sync
        + 'static,
) {
    let act = fixture
        .idle(IDLE)
        .default_stop_timeout()
        .socket("soak")
        .start();
    let addr = act.tcp_addrs[0];
    let want = cycles();
    let stop = Arc::new(AtomicBool::new(false));
    let request = Arc::new(request);
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (stop, request) = (stop.clone(), request.clone());
            std::thread::spawn(move || {
                let mut rng = Xorshift::new(0x5EED_u32.wrapping_mul(client + 3));
                let (mut done, mut failures) = (0u64, Vec::new());
                let mut keep_alive = None;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = request(addr, client, done, &mut keep_alive) {
                        failures.push(e);
                    }
                    done += 1;
                    std::thread::sleep(Duration::from_millis(rng.below(THINK_MAX_MS) as u64));
                }
                (done, failures)
            })
        })
        .collect();
    while act.activations() < want && started.elapsed() < SOAK_DEADLINE {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut requests, mut failures) = (0, Vec::new());
    for t in threads {
        let (done, f) = t.join().unwrap();
        requests += done;
        failures.extend(f);
    }
    let activations = act.activations();
    let exits = act.exits();
    println!(
        "soak {mode}: {requests} requests, {activations} activations, {} failures, in {:.0} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(
        activations >= want,
        "only {activations} activations in {SOAK_DEADLINE:?}"
    );
    assert!(
        exits.iter().all(|s| s.code() == Some(0)),
        "every run exits 0: {:?}",
        exits.iter().map(describe).collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "soak: run by .ci/run"]
fn soak_tcp() {
    soak("tcp", Fixture::tcp(), |addr, client, n, _| {
        let msg = format!("client {client} request {n}\n");
        match exchange_str(addr, &msg) {
            Ok(answer) if answer == msg => Ok(()),
            other => Err(format!("{msg:?}: {other:?}")),
        }
    });
}

#[test]
#[ignore = "soak: run by .ci/run"]
fn soak_http() {
    soak("http", Fixture::http(), |addr, client, n, keep_alive| {
        // Odd clients keep their connection alive across activations, as
        // browsers do; even ones open one per request.
        let answer = if client % 2 == 1 {
            keep_alive
                .get_or_insert_with(|| KeepAlive::new(addr))
                .get("/")
        } else {
            crate::support::http::get(addr, "/", &[])
        };
        match answer {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!(
                "client {client} request {n}: {:?}",
                other.map(|r| r.status)
            )),
        }
    });
}
