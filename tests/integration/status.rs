//! `idlegate status` reads the state file of a running idlegate (never its
//! socket) and `STATUS=` carries the same facts.

use std::process::Command;

use crate::support::*;

fn status(state: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(idlegate_bin())
        .args(["status", "--state-file"])
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn status_reports_a_running_instance_and_counts_activations() {
    let fixture = Fixture::tcp()
        .idle("1s")
        .default_stop_timeout()
        .socket("status");
    let state = fixture.file("idlegate.state");
    let act = fixture
        .extra(&["--state-file", state.to_str().unwrap()])
        .start();
    assert_eq!(
        status(&state).0,
        Some(3),
        "not running before the first client"
    );

    for activation in 1..=2 {
        assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
        wait_until("a status with the backend ready", PATIENCE, || {
            let (code, text) = status(&state);
            code == Some(0)
                && text.contains("backend: backend ready")
                && text.contains(&format!("activation {activation})"))
                && text.contains("idle exit: in ")
        });
        assert_eq!(act.wait_exit(activation, PATIENCE).code(), Some(0));
        let (code, text) = status(&state);
        assert_eq!(code, Some(3), "{text}");
        assert!(text.contains("not running"), "{text}");
    }
    // Asking never wakes idlegate.
    assert_eq!(act.activations(), 2);
}

#[test]
fn status_without_a_state_file_is_a_usage_error() {
    let out = Command::new(idlegate_bin())
        .arg("status")
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state-file"));
}

/// `--metrics`: Prometheus text on an address of its own; scraping it all
/// along does not keep idlegate up.
#[test]
fn metrics_are_served_and_scraping_does_not_keep_idlegate_up() {
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let act = Fixture::tcp()
        .idle("500ms")
        .default_stop_timeout()
        .extra(&["--metrics", &metrics.to_string()])
        .socket("metrics")
        .start();
    assert_eq!(exchange_str(act.tcp_addrs[0], "x\n").unwrap(), "x\n");
    let scrape = || crate::support::http::get(metrics, "/metrics", &[]).map(|r| r.text());
    wait_until("metrics with the backend ready", PATIENCE, || {
        scrape().is_ok_and(|t| {
            t.contains("idlegate_backend_ready 1") && t.contains("idlegate_activation 1")
        })
    });
    // Scrape without pause: idlegate still exits on idle.
    let deadline = std::time::Instant::now() + PATIENCE;
    while act.exits().is_empty() {
        let _ = scrape();
        assert!(act.activations() == 1, "scraping never activates");
        assert!(
            std::time::Instant::now() < deadline,
            "scraping kept idlegate up"
        );
    }
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert!(
        scrape().is_err(),
        "the endpoint is down while idlegate is not running"
    );
}

/// A state file that cannot be read is "unknown" (exit 4, as `systemctl`
/// says for an unknown unit), with the reason; it is never "not running".
#[test]
fn an_unreadable_state_file_is_unknown_not_stopped() {
    let dir = tempdir();
    let status_of = |path: &std::path::Path| {
        let out = Command::new(idlegate_bin())
            .args(["status", "--state-file"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let wrong = dir.path().join("no-such-dir").join("idlegate.state");
    let (code, text) = status_of(&wrong);
    assert_eq!(code, Some(4), "{text}");
    assert!(
        text.contains("cannot read the state file") && text.contains("No such file or directory"),
        "{text}"
    );
    let (code, text) = status_of(dir.path());
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("Is a directory"), "{text}");
    let garbage = dir.path().join("garbage.state");
    std::fs::write(&garbage, "hello\n").unwrap();
    let (code, text) = status_of(&garbage);
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("not an idlegate state file"), "{text}");
    // In the right directory, before the first activation: not running.
    assert_eq!(status(&dir.path().join("idlegate.state")).0, Some(3));
}
