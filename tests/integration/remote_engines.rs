//! Engines beyond a local socket (`--engine`): the test run's private
//! dockerd through its TLS listener on 127.0.0.1 (certificates made with
//! openssl, [`crate::support::tls`]), named by `--engine` and
//! `--engine-tls-dir` or by Docker's own variables; clients the engine does
//! not trust, and an engine idlegate does not trust, fail cleanly.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::docker::{docker, Docker};
use crate::support::engine::{self, create, gets_the_page, status, Engine, Name};
use crate::support::sshd::Sshd;
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

/// idlegate with the TLS files in `tls_dir`: see [`refused`].
fn refused_with(d: &'static Docker, tls_dir: &Path, want: &str) {
    let url = format!("tcp://127.0.0.1:{}", d.tls_port);
    let tls_dir = tls_dir.to_str().unwrap();
    refused(&["--engine", &url, "--engine-tls-dir", tls_dir], &[], want);
}

/// idlegate with the engine flags `engine` and `env`: the client is closed
/// promptly (not after the start timeout) and the log says `want`.
fn refused(engine: &[&str], env: &[(&str, &str)], want: &str) {
    let dir = tempdir();
    let mut a = args(&[
        "--container",
        "idlegate-test-never-reached",
        "--upstream",
        "127.0.0.1:9",
        "--idle-timeout",
        "60s",
    ]);
    a.extend(args(engine));
    let mut builder = ActivatorBuilder::new(dir, &a).tcp("web");
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let act = builder.start();
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

/// `--engine ssh://root@127.0.0.1:PORT[/SOCKET]` through a private sshd whose
/// sessions reach the private dockerd.
fn through_ssh(what: &str, socket: bool) {
    let Some((d, c, port)) = created(what) else {
        return;
    };
    let dir = tempdir();
    let Some(sshd) = Sshd::start(dir.path(), &d.host()) else {
        return;
    };
    let mut url = format!("ssh://root@127.0.0.1:{}", sshd.port);
    if socket {
        url.push_str(d.socket.to_str().unwrap());
    }
    let a = container_args(&c.name, port, &["--engine", &url]);
    let path = Sshd::path_with(&sshd.with_key);
    a_cold_start_and_an_idle_stop(d, &c, &a, &[("PATH", &path)]);
}

#[test]
fn an_ssh_engine_runs_docker_system_dial_stdio_on_the_host() {
    through_ssh("ssh", false);
}

#[test]
fn an_ssh_engine_with_a_socket_path_forwards_to_that_socket() {
    through_ssh("ssh-socket", true);
}

#[test]
fn an_ssh_login_that_asks_for_a_password_is_refused_cleanly_naming_batchmode() {
    let Some(d) = docker() else { return };
    let dir = tempdir();
    let Some(sshd) = Sshd::start(dir.path(), &d.host()) else {
        return;
    };
    let url = format!("ssh://root@127.0.0.1:{}", sshd.port);
    let path = Sshd::path_with(&sshd.without_key);
    refused(
        &["--engine", &url],
        &[("PATH", &path)],
        "Permission denied (publickey,password,keyboard-interactive). \
         (ssh runs with BatchMode=yes and cannot answer a password prompt",
    );
}

/// The held client of `act` is served once the engine on `socket` answers
/// on 127.0.0.1:`engine_port`, 2 s after the first magic packet reached
/// `packets`; that engine goes on until the returned value is dropped.
pub(crate) fn served_by_a_late_engine(
    act: &crate::support::activator::Activator,
    packets: &std::net::UdpSocket,
    engine_port: u16,
    socket: &Path,
) -> TcpEngine {
    let addr = act.tcp_addrs[0];
    let client = std::thread::spawn(move || crate::support::http::get(addr, "/", &[]));
    let mut buf = [0u8; 512];
    let len = packets.recv(&mut buf).expect("the first magic packet");
    assert_eq!(len, 102, "a magic packet");
    let woke = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let engine = TcpEngine::start(engine_port, socket);
    let answer = client.join().unwrap().unwrap();
    assert_eq!(
        (answer.status, answer.text()),
        (200, crate::support::podman::PAGE.to_owned()),
        "{}",
        act.log()
    );
    assert!(woke.elapsed() >= Duration::from_secs(2));
    engine
}

/// The engine API on a TCP port of 127.0.0.1, copied to and from the
/// private dockerd's socket: an engine whose host just woke.
pub(crate) struct TcpEngine {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TcpEngine {
    /// Serves `socket`'s API on 127.0.0.1:`port` until dropped.
    fn start(port: u16, socket: &Path) -> TcpEngine {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (socket, stopping) = (socket.to_owned(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(engine) = std::os::unix::net::UnixStream::connect(&socket) else {
                    continue;
                };
                let (mut c2, mut e2) = (client.try_clone().unwrap(), engine.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut e2);
                    let _ = e2.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut e) = (client, engine);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut e, &mut c);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        TcpEngine { addr, stop }
    }
}

impl Drop for TcpEngine {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accept loop, which sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// With `--wake-on-lan`, an engine that does not answer yet is waited for:
/// the magic packets go out, the engine appears 2 s after the first, and
/// the held client is served by the container it then starts.
#[test]
fn with_wake_on_lan_an_engine_that_appears_late_is_waited_for() {
    let Some((d, c, port)) = created("wol") else {
        return;
    };
    let packets = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    packets.set_read_timeout(Some(PATIENCE)).unwrap();
    let to = packets.local_addr().unwrap().to_string();
    let engine_port = free_port();
    let url = format!("tcp://127.0.0.1:{engine_port}");
    let a = container_args(
        &c.name,
        port,
        &[
            "--engine",
            &url,
            "--wake-on-lan",
            "02-00-5e-10-00-01",
            "--wake-on-lan-address",
            &to,
            "--start-timeout",
            "60s",
        ],
    );
    let act = ActivatorBuilder::new(tempdir(), &a).tcp("web").start();
    let _engine = served_by_a_late_engine(&act, &packets, engine_port, &d.socket);
    let log = act.log();
    assert!(
        log.contains(&format!(
            "waiting for the engine of container {}, its host waking",
            c.name
        )),
        "{log}"
    );
    assert_eq!(act.wait_exit(1, PATIENCE).code(), Some(0), "{}", act.log());
    assert_eq!(
        status(Engine::Docker(d), &c.name).as_deref(),
        Some("exited")
    );
}
