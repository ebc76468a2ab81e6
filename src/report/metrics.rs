//! `--metrics ADDR`: a Prometheus text endpoint on an address of its own.
//!
//! It is not one of the activated sockets and is not counted as work, so a
//! scrape can neither start idlegate nor keep it (or the backend) up: while
//! idlegate is idle and not running, the endpoint is simply down.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::backend::phases::{Histogram, Starts, BUCKETS};
use crate::report::status::{AtIdle, IdleIn, Snapshot};
use crate::serve::activity::InFlight;
use crate::wake::WakeGate;

/// Serves the metrics until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    snapshots: watch::Receiver<Option<Snapshot>>,
    connections: InFlight,
    wake: Arc<WakeGate>,
    starts: Arc<Starts>,
) {
    let shared = Arc::new((snapshots, connections, wake, starts));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<Incoming>| {
                let mut text = render(shared.0.borrow().as_ref(), shared.1.count(), &shared.2);
                text.push_str(&render_starts(&shared.3.histogram()));
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(text)))
                            .expect("a valid response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `idlegate_refused_while_starting_total{mode=...}`: the clients beyond
/// `--hold-max` while the backend started.
fn refused_while_starting(out: &mut String, wake: &WakeGate) {
    let name = "idlegate_refused_while_starting_total";
    out.push_str(&format!(
        "# HELP {name} Clients refused at once in this run because --hold-max clients were held for the backend's start.\n# TYPE {name} counter\n"
    ));
    for mode in crate::wake::refused::HeldMode::ALL {
        let count = wake.refused.count(mode);
        out.push_str(&format!("{name}{{mode=\"{}\"}} {count}\n", mode.name()));
    }
}

/// The exposition text for `snapshot` (the status reporter's latest).
pub fn render(snapshot: Option<&Snapshot>, connections: usize, wake: &WakeGate) -> String {
    let mut out = String::new();
    for (name, help, value) in [
        (
            "idlegate_wakes_total",
            "Times a client woke the backend in this run (0 or 1).",
            u64::from(wake.woken_by().is_some()),
        ),
        (
            "idlegate_answered_total",
            "Requests answered by the [[answer]] rules in this run, without waking the backend.",
            wake.answered(),
        ),
        (
            "idlegate_turned_away_total",
            "Connections closed in this run because they came from outside --wake-from.",
            wake.turned_away(),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    refused_while_starting(&mut out, wake);
    let mut metric = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    metric(
        "idlegate_connections",
        "Open client connections.",
        connections.to_string(),
    );
    if let Some(s) = snapshot {
        metric(
            "idlegate_in_flight",
            "Work in flight: TCP connections, HTTP requests and upgrades.",
            s.in_flight.to_string(),
        );
        metric(
            "idlegate_backend_ready",
            "1 when the backend answers.",
            u8::from(s.backend == "backend ready").to_string(),
        );
        metric(
            "idlegate_activation",
            "Which activation of the socket this run is.",
            s.activation.to_string(),
        );
        if let IdleIn::In(d) = s.idle_in {
            let (name, help) = match s.at_idle {
                AtIdle::Exit => (
                    "idlegate_idle_exit_seconds",
                    "Seconds until idle exit if nothing arrives.",
                ),
                AtIdle::StopBackend => (
                    "idlegate_backend_stop_seconds",
                    "Seconds until the idle backend is stopped if nothing arrives (idlegate keeps listening).",
                ),
            };
            metric(name, help, format!("{:.1}", d.as_secs_f64()));
        }
    }
    out
}

/// The start histogram's exposition text: one observation per start of
/// this run that became ready, from its request to ready.
pub fn render_starts(h: &Histogram) -> String {
    let name = "idlegate_start_duration_seconds";
    let mut out = format!(
        "# HELP {name} Backend starts in this run, from the start's request to ready.\n# TYPE {name} histogram\n"
    );
    for (bound, count) in BUCKETS.iter().zip(h.buckets) {
        out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {count}\n"));
    }
    out.push_str(&format!(
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {:.3}\n{name}_count {}\n",
        h.count, h.sum, h.count
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cumulative buckets, as Prometheus wants them, bounded by `+Inf`.
    #[test]
    fn the_start_histogram_is_prometheus_text() {
        let mut h = Histogram::default();
        h.buckets[5..].iter_mut().for_each(|c| *c = 1);
        h.count = 2;
        h.sum = 2.0 + 400.0;
        let text = render_starts(&h);
        assert!(
            text.contains("# TYPE idlegate_start_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegate_start_duration_seconds_bucket{le=\"0.05\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegate_start_duration_seconds_bucket{le=\"2.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegate_start_duration_seconds_bucket{le=\"300\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegate_start_duration_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegate_start_duration_seconds_sum 402.000\n"),
            "{text}"
        );
        assert!(
            text.contains("idlegate_start_duration_seconds_count 2\n"),
            "{text}"
        );
    }
}
