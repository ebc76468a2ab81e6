//! The container tests' engines, podman and Docker, behind one type, so that
//! each scenario runs against both ([`on_each_engine!`]); and a small API
//! proxy that plays an engine of another API range (Docker 29's floor).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::activator::Activator;
use super::docker::{docker, Docker};
use super::http::get;
use super::podman::{podman, unique_name, EngineService, Podman, IMAGE, PAGE};
use super::{args, free_port, tempdir, ActivatorBuilder};

/// A container engine of the tests.
#[derive(Clone, Copy)]
pub enum Engine {
    /// podman, its API served per test by `podman system service`.
    Podman(&'static Podman),
    /// The run's private dockerd.
    Docker(&'static Docker),
}

/// Runs each named scenario `fn NAME(engine: Engine)` as two tests,
/// `NAME::podman` and `NAME::docker`, each skipped without its engine.
#[macro_export]
macro_rules! on_each_engine {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn podman() {
                if let Some(engine) = $crate::support::engine::Engine::podman() {
                    super::$name(engine);
                }
            }
            #[test]
            fn docker() {
                if let Some(engine) = $crate::support::engine::Engine::docker() {
                    super::$name(engine);
                }
            }
        }
    )*};
}

impl Engine {
    /// podman, if installed (or required).
    pub fn podman() -> Option<Engine> {
        podman().map(Engine::Podman)
    }

    /// The private dockerd, if installed (or required).
    pub fn docker() -> Option<Engine> {
        docker().map(Engine::Docker)
    }

    /// `podman` or `docker`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Podman(_) => "podman",
            Engine::Docker(_) => "docker",
        }
    }

    /// The engine's command line tool with `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        match self {
            Engine::Podman(p) => p.command(args),
            Engine::Docker(d) => d.command(args),
        }
    }

    /// Runs the tool to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        match self {
            Engine::Podman(p) => p.run(args),
            Engine::Docker(d) => d.run(args),
        }
    }

    /// Runs the tool, panicking unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        match self {
            Engine::Podman(p) => p.ok(args),
            Engine::Docker(d) => d.ok(args),
        }
    }

    /// A `{{…}}` field of `container inspect`, or `None` without such a container.
    pub fn inspect(&self, name: &str, field: &str) -> Option<String> {
        let out = self.run(&["container", "inspect", "--format", field, name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `running`, `paused`, `exited`, … or `None` without such a container.
    pub fn status(&self, name: &str) -> Option<String> {
        self.inspect(name, "{{.State.Status}}")
    }

    /// The environment idlegate needs for this engine's tool (podman's
    /// containers.conf; nothing for Docker).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Engine::Podman(p) => vec![("CONTAINERS_CONF", p.conf().display().to_string())],
            Engine::Docker(_) => vec![],
        }
    }

    /// The engine API for one test (podman's service on a socket in `dir`,
    /// stopped when the returned value is dropped; the shared dockerd's).
    pub fn api(&self, dir: &Path) -> Api {
        match self {
            Engine::Podman(p) => {
                let service = EngineService::start(p, dir);
                Api {
                    socket: service.socket.clone(),
                    _service: Some(service),
                }
            }
            Engine::Docker(d) => Api {
                socket: d.socket.clone(),
                _service: None,
            },
        }
    }

    /// `create` flags of a healthcheck that passes once `/tmp/ok` exists
    /// (for Docker what an image's `HEALTHCHECK` sets). podman's checks run
    /// from systemd timers, absent here: the test runs them
    /// ([`Engine::run_healthcheck`]). dockerd runs Docker's itself.
    pub fn health_flags(&self) -> Vec<&'static str> {
        match self {
            Engine::Podman(_) => vec![
                "--health-cmd",
                r#"["/bin/busybox", "test", "-e", "/tmp/ok"]"#,
                "--health-interval",
                "1h",
            ],
            // Docker's flag takes a shell command (CMD-SHELL); failing
            // checks leave it `starting`, not `unhealthy`.
            Engine::Docker(_) => vec![
                "--health-cmd",
                "/bin/busybox test -e /tmp/ok",
                "--health-interval",
                "200ms",
                "--health-retries",
                "1000000",
            ],
        }
    }

    /// Runs the healthcheck now (podman), or leaves it to dockerd.
    pub fn run_healthcheck(&self, name: &str) {
        if let Engine::Podman(p) = self {
            p.ok(&["healthcheck", "run", name]);
        }
    }
}

/// An engine API socket for one test.
pub struct Api {
    /// The socket.
    pub socket: PathBuf,
    _service: Option<EngineService>,
}

/// A container name unique to this run, removed (with its container) when dropped.
pub struct Name {
    engine: Engine,
    /// The name.
    pub name: String,
}

impl Name {
    /// A fresh name; nothing is created yet.
    pub fn new(engine: Engine, what: &str) -> Name {
        Name {
            engine,
            name: unique_name(what),
        }
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = self.engine.run(&["rm", "--force", &self.name]);
    }
}

pub fn activate(
    engine: Engine,
    dir: &std::sync::Arc<tempfile::TempDir>,
    a: &[String],
) -> Activator {
    let mut builder = ActivatorBuilder::new(dir.clone(), a).tcp("web");
    for (key, value) in engine.env() {
        builder = builder.env(key, &value);
    }
    builder.start()
}

/// `running`, `paused`, `exited`, … or `None` when there is no such container.
pub fn status(engine: Engine, name: &str) -> Option<String> {
    engine.status(name)
}

/// idlegate's flags for container `name` through the engine API on
/// `socket`, in HTTP mode, in front of its published `port`, with `extra`
/// flags. Ready once the app answers (`--ready-http`): Docker's
/// docker-proxy accepts on the port before the app inside listens (HTTP
/// mode without it has a test of its own).
pub fn engine_args(name: &str, socket: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = container_args(name, port, extra);
    a.extend(args(&["--engine-socket", socket.to_str().unwrap()]));
    a
}

/// idlegate's flags for the container `name` publishing the page on `port`
/// (HTTP mode, ready at `GET /`), the engine left to `extra` or the environment.
pub fn container_args(name: &str, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "--container",
        name,
        "--upstream",
        &format!("127.0.0.1:{port}"),
        "--mode",
        "http",
        "--ready-http",
        "/",
    ]);
    a.extend(args(extra));
    a
}

/// `create` with the test image, publishing `port` on 127.0.0.1.
pub fn create(engine: Engine, name: &str, port: u16, extra: &[&str], command: &[&str]) {
    let publish = format!("127.0.0.1:{port}:8080");
    let mut a = vec!["create", "--name", name, "-p", &publish];
    a.extend_from_slice(extra);
    a.push(IMAGE);
    a.extend_from_slice(command);
    engine.ok(&a);
}

/// `GET /` through `act` answers the test image's page.
pub fn gets_the_page(act: &Activator) {
    let r = get(act.tcp_addrs[0], "/", &[]).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, PAGE.to_owned()),
        "{}",
        act.log()
    );
}

/// What a container scenario starts from: its directory, the engine API, a
/// container name unique to the run and a free port to publish. Dropped in
/// this order: the container, the API, the directory.
pub struct Container {
    /// The container's name (removed with its container when dropped).
    pub c: Name,
    /// The engine API.
    pub api: Api,
    /// The test's directory.
    pub dir: Arc<tempfile::TempDir>,
    /// The port the container publishes.
    pub port: u16,
    /// The engine.
    pub engine: Engine,
}

impl Engine {
    /// A [`Container`] named after `what`; nothing is created yet.
    pub fn container(self, what: &str) -> Container {
        let dir = tempdir();
        let api = self.api(dir.path());
        let c = Name::new(self, what);
        let port = free_port();
        Container {
            c,
            api,
            dir,
            port,
            engine: self,
        }
    }

    /// A [`Container`] named after `what`, created from the test image.
    pub fn created(self, what: &str) -> Container {
        let f = self.container(what);
        f.create(&[], &[]);
        f
    }
}

impl Container {
    /// `create` with the test image, publishing the port, with `extra` flags
    /// and `command`.
    pub fn create(&self, extra: &[&str], command: &[&str]) {
        create(self.engine, &self.c.name, self.port, extra, command);
    }

    /// idlegate's flags for this container through the API ([`engine_args`]).
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        engine_args(&self.c.name, &self.api.socket, self.port, extra)
    }

    /// idlegate with flags `a`, activated on a TCP socket in the test's directory.
    pub fn activate(&self, a: &[String]) -> Activator {
        activate(self.engine, &self.dir, a)
    }
}

/// Docker 29's answer to a client below its floor.
pub const TOO_OLD: &str = "client version 1.41 is too old. Minimum supported API version is 1.44, \
                           please upgrade your client to a newer version";

/// An engine API proxy on a socket of its own that plays an engine of API
/// `min` to `max` in front of a real one: its `/version` says that range
/// (or `claims`, to play an engine that does not tell the truth), a
/// versioned request outside it gets the 400 a real engine gives, and the
/// others are forwarded to the real engine's `upstream` socket as
/// `forward_as` (the real engine's own version). Stopped when dropped.
pub struct VersionProxy {
    /// The proxy's socket.
    pub socket: PathBuf,
    /// The request lines it got.
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VersionProxy {
    /// Listens on `socket` at once.
    pub fn start(
        socket: PathBuf,
        range: Range,
        upstream: PathBuf,
        forward_as: &'static str,
    ) -> VersionProxy {
        VersionProxy::claiming(socket, range, range, upstream, forward_as)
    }

    /// [`VersionProxy::start`] whose `/version` says `claims`, not `range`.
    pub fn claiming(
        socket: PathBuf,
        claims: Range,
        (min, max): Range,
        upstream: PathBuf,
        forward_as: &'static str,
    ) -> VersionProxy {
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (seen, upstream) = (seen2.clone(), upstream.clone());
                        std::thread::spawn(move || {
                            let _ = serve(client, claims, (min, max), &upstream, forward_as, &seen);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        VersionProxy {
            socket,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The request lines seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops listening (the socket then refuses connections).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for VersionProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An API range, lowest and highest, as (major, minor) pairs.
pub type Range = ((u32, u32), (u32, u32));

/// Answers one request (idlegate's are bodiless, one per connection).
fn serve(
    mut client: UnixStream,
    (claimed_min, claimed_max): Range,
    (min, max): Range,
    upstream: &Path,
    forward_as: &str,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let request_line = head[0].trim_end().to_owned();
    seen.lock().unwrap().push(request_line.clone());
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let answer = |client: &mut UnixStream, status: &str, body: String| {
        write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let show = |(a, b): (u32, u32)| format!("{a}.{b}");
    if target == "/version" {
        let body = format!(
            r#"{{"Version":"29.0.0","ApiVersion":"{}","MinAPIVersion":"{}","Os":"linux"}}"#,
            show(claimed_max),
            show(claimed_min)
        );
        return answer(&mut client, "200 OK", body);
    }
    let versioned = target.strip_prefix("/v").and_then(|rest| {
        let (version, path) = rest.split_once('/')?;
        let (a, b) = version.split_once('.')?;
        Some(((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?), path))
    });
    let path = match versioned {
        Some((v, _)) if v < min => {
            let body = format!(
                r#"{{"message":"client version {} is too old. Minimum supported API version is {}, please upgrade your client to a newer version"}}"#,
                show(v),
                show(min)
            );
            return answer(&mut client, "400 Bad Request", body);
        }
        Some((v, _)) if v > max => {
            let body = format!(
                r#"{{"message":"client version {} is too new. Maximum supported API version is {}"}}"#,
                show(v),
                show(max)
            );
            return answer(&mut client, "400 Bad Request", body);
        }
        Some((_, path)) => format!("/v{forward_as}/{path}"),
        None => target.to_owned(),
    };
    let mut engine = UnixStream::connect(upstream)?;
    write!(
        engine,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    engine.read_to_end(&mut response)?;
    client.write_all(&response)
}
