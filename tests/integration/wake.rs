//! Wake control: requests answered without waking the backend (`--answer`,
//! `[[answer]]`), clients outside `--wake-from` turned away, and the short
//! run of an activation that never started the backend.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::support::http::{get, Monitor};
use crate::support::*;

/// A monitor's probe loop: each probe activates idlegate, is answered by the
/// rule, and idlegate exits 0 soon after (not after the idle timeout); the
/// backend never starts.
#[test]
fn a_probe_loop_is_answered_without_starting_the_backend() {
    let fixture = Fixture::http().idle("60s").pid_file();
    let state = fixture.file("idlegate.state");
    let state = state.to_str().unwrap().to_owned();
    let gate = fixture
        .extra(&["--answer", "/healthz=200", "--state-file", &state])
        .start();
    for i in 1..=3 {
        let started = Instant::now();
        let r = get(
            gate.tcp_addrs[0],
            "/healthz",
            &[("User-Agent", "Uptime-Kuma/1.23")],
        )
        .unwrap();
        assert_eq!(r.status, 200, "probe {i}");
        gate.wait_exit_0(i, PATIENCE);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "probe {i}: idlegate waited out the idle timeout"
        );
    }
    assert!(!gate.pid_file.exists(), "a probe started the backend");
    let log = gate.log();
    assert_eq!(
        log.matches("answered 1 request(s) by the [[answer]] rules, without waking the backend")
            .count(),
        3,
        "{log}"
    );
    // The exit's line says the short wait that applied, not the timeout.
    assert_eq!(
        log.matches("idle for 500ms: stopping the backend and exiting")
            .count(),
        3,
        "{log}"
    );
    // A request the rules do not match wakes the backend as usual.
    let r = get(gate.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    assert!(gate.pid_file.exists());
    // The log says who woke it.
    let log = gate.log();
    let woke = log
        .lines()
        .filter(|l| l.contains("activated by 127.0.0.1:"))
        .collect::<Vec<_>>();
    assert_eq!(woke.len(), 1, "{log}");
    assert!(woke[0].ends_with(": GET /"), "{log}");
    // So does `idlegate status`.
    wait_until("idlegate status to say who woke it", PATIENCE, || {
        let (_, out, _) = run_idlegate_output(&["status", "--state-file", &state], &[]);
        out.lines()
            .any(|l| l.starts_with("woken by: 127.0.0.1:") && l.ends_with(": GET /"))
    });
}

/// A monitor that keeps probing a running service is forwarded to it (the
/// rule says `asleep`) but is not work: the service still exits on idle.
#[test]
fn a_monitor_probing_a_running_service_does_not_keep_it_up() {
    let gate = Fixture::http()
        .idle("2s")
        .extra(&["--answer", "/status/204=503"])
        .start();
    let r = get(gate.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(r.status, 200);
    let monitor = Monitor::start(gate.tcp_addrs[0], Duration::from_millis(200));
    // Without the rule the probes, 200 ms apart, would keep it up forever.
    gate.wait_exit_0(1, PATIENCE);
    let forwarded = monitor.stop();
    assert!(
        forwarded >= 3,
        "only {forwarded} probe(s) reached the running backend"
    );
}

/// An `[[answer]]` table: method, user agent, source, body, Retry-After, and
/// `when = "always"`, which answers even while the backend is up.
#[test]
fn answer_tables_match_and_answer_as_written() {
    let gate = Fixture::http().idle("60s").pid_file();
    let config = gate.file("rules.toml");
    std::fs::write(
        &config,
        r#"
[[answer]]
path-prefix = "/robots"
user-agent = "(?i)bot|crawler"
source = ["127.0.0.0/8"]
status = 200
body = "User-agent: *\nDisallow: /"
when = "always"

[[answer]]
method = "GET"
path = "/"
retry-after = "2min"
"#,
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let gate = gate
        .extra(&["--config", config.to_str().unwrap(), "--metrics", &metrics])
        .start();
    // Asleep: GET / is answered by the second rule, 503 and Retry-After.
    let r = get(gate.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("120")));
    let r = get(
        gate.tcp_addrs[0],
        "/robots.txt",
        &[("User-Agent", "Googlebot/2.1")],
    )
    .unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "User-agent: *\nDisallow: /\n")
    );
    assert!(!gate.pid_file.exists());
    // Not a bot: forwarded, so the backend starts (and answers 404: it has no robots).
    let r = get(
        gate.tcp_addrs[0],
        "/robots.txt",
        &[("User-Agent", "curl/8")],
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert!(gate.pid_file.exists());
    // Up now: `asleep` (the default) forwards GET / to the backend...
    let r = get(gate.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    // ...and `always` still answers the bot itself.
    let r = get(
        gate.tcp_addrs[0],
        "/robots.txt",
        &[("User-Agent", "a crawler")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(gate.activations(), 1);
    // The metrics count what the rules answered and the one wake.
    let text = get(metrics.parse().unwrap(), "/metrics", &[])
        .unwrap()
        .text();
    assert!(text.contains("\nidlegate_answered_total 3\n"), "{text}");
    assert!(text.contains("\nidlegate_wakes_total 1\n"), "{text}");
    assert!(text.contains("\nidlegate_turned_away_total 0\n"), "{text}");
}

/// TCP mode: a client from outside `--wake-from` gets a prompt close (a FIN)
/// and starts nothing, and idlegate exits soon after; a client from inside
/// starts the backend as usual.
#[test]
fn a_client_outside_wake_from_is_closed_and_starts_nothing() {
    let gate = Fixture::tcp()
        .idle("60s")
        .pid_file()
        .extra(&["--wake-from", "10.0.0.0/8", "--wake-from", "192.168.0.0/16"])
        .start();
    let started = Instant::now();
    let mut client = std::net::TcpStream::connect(gate.tcp_addrs[0]).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 16];
    let n = client.read(&mut buf).expect("a clean close, not a reset");
    assert_eq!(n, 0, "end of file");
    assert!(started.elapsed() < Duration::from_secs(10), "not prompt");
    gate.wait_exit_0(1, PATIENCE);
    assert!(!gate.pid_file.exists(), "the backend was started");
    assert!(
        gate.log().contains(
            "closed 1 connection(s) from outside --wake-from, without waking the backend"
        ),
        "{}",
        gate.log()
    );

    let gate = Fixture::tcp()
        .idle("1s")
        .pid_file()
        .extra(&["--wake-from", "127.0.0.0/8"])
        .start();
    let answer = exchange_str(gate.tcp_addrs[0], "hello").unwrap();
    assert_eq!(answer, "hello");
    assert!(gate.pid_file.exists());
    gate.wait_exit_0(1, PATIENCE);
    assert!(
        gate.log().contains("activated by 127.0.0.1:"),
        "{}",
        gate.log()
    );
}

#[test]
fn wake_control_errors_name_the_flag_or_key() {
    for (args, expected) in [
        (
            &["--upstream", "127.0.0.1:1", "--answer", "/x=200"][..],
            "--answer/[[answer]] answers HTTP requests",
        ),
        (
            &[
                "--upstream",
                "127.0.0.1:1",
                "--mode",
                "http",
                "--answer",
                "healthz=200",
            ],
            "--answer: invalid value 'healthz=200'",
        ),
        (
            &[
                "--upstream",
                "127.0.0.1:1",
                "--mode",
                "http",
                "--answer",
                "/x=99",
            ],
            "--answer: invalid value '99'",
        ),
        (
            &["--upstream", "127.0.0.1:1", "--wake-from", "10.0.0.0/33"],
            "--wake-from: invalid value '10.0.0.0/33'",
        ),
        (
            &[
                "--upstream",
                "127.0.0.1:1",
                "--mode",
                "http",
                "--wake-from",
                "10.0.0.0/8",
            ],
            "--wake-from is for TCP mode",
        ),
    ] {
        let (code, err) = run_idlegate(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("idlegate: {expected}")),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let dir = tempdir();
    let file = dir.path().join("bad.toml");
    for (text, expected) in [
        ("[[answer]]\nstatus = 200\n", "a rule needs path"),
        (
            "[[answer]]\npath = \"/x\"\nuser-agent = \"(\"\n",
            "answer.user-agent in ",
        ),
        (
            "[[answer]]\npath = \"/x\"\nwhen = \"sometimes\"\n",
            "answer.when in ",
        ),
        (
            "[[answer]]\npath = \"/x\"\nsource = \"10.0.0.0/40\"\n",
            "answer.source in ",
        ),
    ] {
        std::fs::write(
            &file,
            format!("upstream = \"127.0.0.1:1\"\nmode = \"http\"\n{text}"),
        )
        .unwrap();
        let (code, err) = run_idlegate(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.contains(expected), "{text}: {err}");
    }
}

/// `--busy-cmd` says busy while a flag file exists: idlegate stays up past
/// the idle timeout with nothing in flight, and exits once it says not busy.
#[test]
fn busy_cmd_postpones_the_idle_exit_until_it_says_not_busy() {
    let fixture = Fixture::tcp().idle("1s");
    let flag = fixture.file("scanning");
    std::fs::write(&flag, "").unwrap();
    let busy = format!("test -e {}", flag.display());
    let gate = fixture.extra(&["--busy-cmd", &busy]).start();
    assert_eq!(exchange_str(gate.tcp_addrs[0], "hello").unwrap(), "hello");
    wait_until("the busy command to be asked twice", PATIENCE, || {
        gate.log().matches("busy: `test -e").count() >= 2
    });
    assert!(
        gate.exits().is_empty(),
        "exited while busy:\n{}",
        gate.log()
    );
    std::fs::remove_file(&flag).unwrap();
    gate.wait_exit_0(1, PATIENCE);
    assert!(gate.log().contains("not busy: `test -e"), "{}", gate.log());
}

/// A busy command that hangs is bounded (10 s) and counts as not busy.
#[test]
fn a_hanging_busy_cmd_is_bounded() {
    let gate = Fixture::tcp()
        .idle("1s")
        .extra(&["--busy-cmd", "sleep 600"])
        .start();
    assert_eq!(exchange_str(gate.tcp_addrs[0], "hello").unwrap(), "hello");
    gate.wait_exit_0(1, PATIENCE);
    assert!(
        gate.log()
            .contains("--busy-cmd `sleep 600` did not finish within 10s: taken as not busy"),
        "{}",
        gate.log()
    );
}
