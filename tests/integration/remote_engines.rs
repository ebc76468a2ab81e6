//! Engines beyond a local socket (`--engine`): the test run's private
//! dockerd through its TLS listener on 127.0.0.1 (certificates made with
//! openssl, [`crate::support::tls`]), named by `--engine` and
//! `--engine-tls-dir` or by Docker's own variables; clients the engine does
//! not trust, and an engine idlegate does not trust, fail cleanly.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::docker::{docker, Docker};
use crate::support::engine::{self, create, gets_the_page, status, Engine, Name};
use crate::support::*;

/// `docker` and a stopped container on a free port, for one test.
fn created(what: &str) -> Option<(&'static Docker, Name, u16)> {
    let d = docker()?;
    let c = Name::new(Engine::Docker(d), what);
    let port = free_port();
    create(Engine::Docker(d), &c.name, port, &[], &[]);
    Some((d, c, port))
}

/// [`engine::container_args`] with a quick idle exit.
fn container_args(name: &str, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = engine::container_args(
        name,
        port,
        &["--idle-timeout", "1s", "--stop-timeout", "1s"],
    );
    a.extend(args(extra));
    a
}

/// A cold start and an idle stop of `c` by idlegate with `a` and `env`.
fn a_cold_start_and_an_idle_stop(d: &'static Docker, c: &Name, a: &[String], env: &[(&str, &str)]) {
    let dir = tempdir();
    let mut builder = ActivatorBuilder::new(dir, a)
        .tcp("web")
        .env("CONTAINER_HOST", "")
        .env("DOCKER_HOST", "");
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let act = builder.start();
    gets_the_page(&act);
    let engine = Engine::Docker(d);
    assert_eq!(status(engine, &c.name).as_deref(), Some("running"));
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(
        status(engine, &c.name).as_deref(),
        Some("exited"),
        "the idle exit stopped the container: {}",
        act.log()
    );
}

#[test]
fn a_tls_engine_named_by_engine_and_engine_tls_dir() {
    let Some((d, c, port)) = created("tls-flag") else {
        return;
    };
    let url = format!("tcp://127.0.0.1:{}", d.tls_port);
    let client = d.certs.client.to_str().unwrap();
    let a = container_args(
        &c.name,
        port,
        &["--engine", &url, "--engine-tls-dir", client],
    );
    a_cold_start_and_an_idle_stop(d, &c, &a, &[]);
}

#[test]
fn a_tls_engine_named_by_docker_host_and_dockers_tls_variables() {
    let Some((d, c, port)) = created("tls-env") else {
        return;
    };
    let url = format!("tcp://127.0.0.1:{}", d.tls_port);
    let client = d.certs.client.to_str().unwrap();
    let a = container_args(&c.name, port, &[]);
    let env = [
        ("DOCKER_HOST", url.as_str()),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", client),
    ];
    a_cold_start_and_an_idle_stop(d, &c, &a, &env);
}

/// idlegate with the TLS files in `tls_dir`: the client is closed promptly,
/// idlegate keeps running (`--listen`-less activation: it exits as after any
/// failed start), and the log says `want`.
fn refused_with(d: &'static Docker, tls_dir: &Path, want: &str) {
    let dir = tempdir();
    let url = format!("tcp://127.0.0.1:{}", d.tls_port);
    let a = args(&[
        "--container",
        "idlegate-test-never-reached",
        "--engine",
        &url,
        "--engine-tls-dir",
        tls_dir.to_str().unwrap(),
        "--upstream",
        "127.0.0.1:9",
        "--idle-timeout",
        "60s",
    ]);
    let act = ActivatorBuilder::new(dir, &a).tcp("web").start();
    let began = Instant::now();
    let answer = exchange(act.tcp_addrs[0], b"hello\n").unwrap();
    assert!(answer.is_empty(), "the client is closed, not answered");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "promptly, not after the start timeout: {:?}\n{}",
        began.elapsed(),
        act.log()
    );
    wait_until(&format!("{want:?} in the log"), PATIENCE, || {
        act.log().contains(want)
    });
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_cleanly() {
    let Some(d) = docker() else { return };
    refused_with(d, &d.certs.stranger, "BadCertificate");
}

#[test]
fn an_engine_certificate_from_an_unknown_ca_is_refused_cleanly() {
    let Some(d) = docker() else { return };
    let dir = tempdir();
    // The right client certificate, but trusting only the other CA.
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for file in ["cert.pem", "key.pem"] {
        std::fs::copy(d.certs.client.join(file), tls.join(file)).unwrap();
    }
    let other_ca = d.certs.stranger.parent().unwrap().join("other-ca/ca.pem");
    std::fs::copy(other_ca, tls.join("ca.pem")).unwrap();
    refused_with(d, &tls, "invalid peer certificate: UnknownIssuer");
}
