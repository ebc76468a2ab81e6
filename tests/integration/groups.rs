//! Groups of container backends with real podman and Docker (`--container db
//! --container app`): started in order, each ready before the next, stopped
//! in reverse order; a failed member stops the ones started before it.
//! Skipped without the engine unless `IDLEGATE_REQUIRE_PODMAN=1` /
//! `IDLEGATE_REQUIRE_DOCKER=1`.

use std::path::Path;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::on_each_engine;
use crate::support::engine::{
    activate, create, engine_args, gets_the_page, status, Container, Engine, Name,
};
use crate::support::http::get;
use crate::support::podman::{IMAGE, PAGE};
use crate::support::*;

on_each_engine!(
    a_group_starts_each_container_once_the_one_before_is_healthy_and_stops_in_reverse,
    a_group_whose_second_container_fails_stops_the_first_and_names_the_failed_one,
    a_container_shared_by_two_idlegates_is_stopped_by_the_last_one_only,
);

/// A container field that is a time, in nanoseconds since the epoch
/// (podman's template gives a time, Docker's an RFC 3339 text).
fn nanos(engine: Engine, name: &str, field: &str) -> i128 {
    let text = engine
        .inspect(name, &format!("{{{{.State.{field}}}}}"))
        .unwrap_or_else(|| panic!("no container {name}"));
    if let Engine::Podman(_) = engine {
        let text = engine
            .inspect(name, &format!("{{{{.State.{field}.UnixNano}}}}"))
            .unwrap();
        return text.trim().parse().unwrap();
    }
    let time =
        humantime::parse_rfc3339(text.trim()).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"));
    time.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// idlegate's flags for the group `names` through the engine API on `socket`, in HTTP mode,
/// in front of `port`, with `extra` flags.
fn group_args(names: &[&str], socket: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = engine_args(names[0], socket, port, extra);
    // Repeated, the flag keeps the order given.
    for name in &names[1..] {
        a.extend(args(&["--container", name]));
    }
    a
}

fn a_group_starts_each_container_once_the_one_before_is_healthy_and_stops_in_reverse(
    engine: Engine,
) {
    let (app, db) = (engine.container("app"), Name::new(engine, "db"));
    // The database is healthy once /tmp/ok exists (Docker: a HEALTHCHECK).
    let mut create_db = vec!["create", "--name", &db.name];
    create_db.extend(engine.health_flags());
    create_db.push(IMAGE);
    engine.ok(&create_db);
    app.create(&[], &[]);
    let a = group_args(
        &[&db.name, &app.c.name],
        &app.api.socket,
        app.port,
        &[
            "--idle-timeout",
            "1s",
            "--stop-timeout",
            "1s",
            "--start-timeout",
            "120s",
        ],
    );
    let act = activate(engine, &app.dir, &a);
    let (tx, rx) = mpsc::channel();
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || {
        let _ = tx.send(get(addr, "/", &[]).map(|r| (r.status, r.text())));
    });
    wait_until(
        "idlegate to wait for the database's health",
        PATIENCE,
        || {
            act.log().contains(&format!(
                "waiting for container {} to become healthy",
                db.name
            ))
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(status(engine, &db.name).as_deref(), Some("running"));
    assert_eq!(
        status(engine, &app.c.name).as_deref(),
        Some("created"),
        "the app waits for its database to be healthy: {}",
        act.log()
    );
    assert!(rx.try_recv().is_err(), "the client is held");
    engine.ok(&["exec", &db.name, "/bin/busybox", "touch", "/tmp/ok"]);
    let before_healthy = now_nanos();
    engine.run_healthcheck(&db.name);
    let answer = rx
        .recv_timeout(PATIENCE)
        .expect("the client is answered once the group is up");
    client.join().unwrap();
    assert_eq!(answer.unwrap(), (200, PAGE.to_owned()), "{}", act.log());
    let app_started = nanos(engine, &app.c.name, "StartedAt");
    assert!(
        nanos(engine, &db.name, "StartedAt") < before_healthy && before_healthy < app_started,
        "the app started after its database became healthy"
    );
    eprintln!(
        "app started {}ms after the database's healthcheck began to pass",
        (app_started - before_healthy) / 1_000_000
    );

    act.wait_exit_0(1, PATIENCE);
    assert_eq!(status(engine, &app.c.name).as_deref(), Some("exited"));
    assert_eq!(status(engine, &db.name).as_deref(), Some("exited"));
    let log = act.log();
    let stopping = |name: &str| {
        log.find(&format!("stopping container {name}"))
            .unwrap_or_else(|| panic!("{name} was not stopped: {log}"))
    };
    assert!(
        stopping(&app.c.name) < stopping(&db.name),
        "reverse order: {log}"
    );
    assert!(
        nanos(engine, &app.c.name, "FinishedAt") <= nanos(engine, &db.name, "FinishedAt"),
        "the app stopped before its database"
    );
}

fn a_group_whose_second_container_fails_stops_the_first_and_names_the_failed_one(engine: Engine) {
    let (app, db) = (engine.container("app"), Name::new(engine, "db"));
    engine.ok(&["create", "--name", &db.name, IMAGE]);
    // The app exits during its start, before its healthcheck ever passes.
    app.create(
        &[
            "--health-cmd",
            r#"["/bin/busybox", "test", "-e", "/tmp/never"]"#,
            "--health-interval",
            "1h",
        ],
        &["/bin/busybox", "sh", "-c", "sleep 0.5; exit 3"],
    );
    // Without a healthcheck it runs for a moment, which is ready for a
    // member; its exit is seen while the port is probed, and named.
    let bare = Name::new(engine, "bare");
    create(
        engine,
        &bare.name,
        app.port,
        &[],
        &["/bin/busybox", "sh", "-c", "sleep 0.5; exit 3"],
    );
    let missing = Name::new(engine, "missing");
    let mut cases = vec![
        (
            &app.c.name,
            format!(
                "container {} stopped during start (exited, exit code 3)",
                app.c.name
            ),
        ),
        (
            &missing.name,
            format!("container {}: no such container", missing.name),
        ),
    ];
    // Docker's docker-proxy accepts on the published port whether or not
    // anything listens inside: the port probe passes at once, and the
    // request meets a reset instead (HTTP mode holding such requests is
    // another test's).
    if let Engine::Podman(_) = engine {
        cases.push((
            &bare.name,
            // podman says exited or stopped, by how soon it is asked.
            format!("container {} stopped during start (", bare.name),
        ));
    }
    for (second, says) in cases {
        let a = group_args(
            &[&db.name, second],
            &app.api.socket,
            app.port,
            &["--idle-timeout", "60s", "--stop-timeout", "1s"],
        );
        let act = activate(engine, &app.dir, &a);
        let r =
            get(act.tcp_addrs[0], "/", &[]).unwrap_or_else(|e| panic!("{e}; log:\n{}", act.log()));
        assert_eq!(r.status, 502, "{}", act.log());
        assert!(r.text().contains(&says), "{}", r.text());
        wait_until("the failure in the log", PATIENCE, || {
            act.log().contains(&format!("backend failed: {says}"))
        });
        wait_until("the database to be stopped again", PATIENCE, || {
            status(engine, &db.name).as_deref() == Some("exited")
        });
        assert!(
            act.log()
                .contains(&format!("stopping container {}", db.name)),
            "{}",
            act.log()
        );
    }
}

/// Two idlegates in front of one database: the first to idle out leaves it
/// running for the other, whose lease is live; a lease left by a process
/// that is gone does not count; the last one stops it.
fn a_container_shared_by_two_idlegates_is_stopped_by_the_last_one_only(engine: Engine) {
    let Container {
        dir,
        api,
        c: db,
        port,
        ..
    } = engine.created("shared");
    let leases = dir.path().join("runtime");
    let stale = leases.join(format!("idlegate-leases/{}", db.name));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("4194305"), "1").unwrap();
    let start = |idle: &str| {
        let a = group_args(
            &[&db.name],
            &api.socket,
            port,
            &["--idle-timeout", idle, "--stop-timeout", "1s"],
        );
        let act = ActivatorBuilder::new(tempdir(), &a)
            .tcp("web")
            .env("XDG_RUNTIME_DIR", leases.to_str().unwrap())
            .start();
        gets_the_page(&act);
        act
    };
    let long = start("600s");
    let holder = long.running().unwrap();
    let short = start("1s");
    short.wait_exit_0(1, PATIENCE);
    assert!(
        short.log().contains(&format!(
            "container {} is still used by another idlegate (pid {holder}): left running",
            db.name
        )),
        "{}",
        short.log()
    );
    assert_eq!(status(engine, &db.name).as_deref(), Some("running"));
    assert!(
        !stale.join("4194305").exists(),
        "the stale lease is removed"
    );

    long.signal(libc::SIGTERM);
    long.wait_exit_0(1, PATIENCE);
    assert!(
        long.log()
            .contains(&format!("stopping container {}", db.name)),
        "{}",
        long.log()
    );
    assert_eq!(status(engine, &db.name).as_deref(), Some("exited"));
    assert_eq!(
        std::fs::read_dir(&stale).unwrap().count(),
        0,
        "no lease is left"
    );
}
