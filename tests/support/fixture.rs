//! The setups the tests share: idlegate in front of a backend on a free port
//! ([`Fixture`]), a backend the test runs itself ([`External`]), and waiting
//! for an idlegate the test spawned ([`wait_child`]).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::activator::Activator;
use super::{
    args, backend_command, free_port, tempdir, test_backend_bin, ActivatorBuilder, PATIENCE,
};

/// A backend the test runs itself (idlegate's external-backend case), killed
/// when dropped.
pub struct External(pub Child);

impl External {
    /// The test backend listening on `listen`, its output discarded.
    pub fn start(listen: &str) -> External {
        let child = Command::new(test_backend_bin())
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn external backend");
        External(child)
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What kind of traffic a [`Fixture`] serves.
enum Kind {
    /// TCP mode, idlegate's default.
    Tcp,
    /// `--mode http`, the test backend with `--http`.
    Http,
    /// A UDP socket, a `udp:` upstream, the test backend with `--udp`.
    Udp,
}

/// What runs behind a [`Fixture`]'s idlegate.
enum Backend {
    /// The test backend on the upstream address, with these flags.
    Test(Vec<String>),
    /// Another backend command.
    Command(Vec<String>),
    /// No backend command: the test runs one itself (see [`External`]), or none.
    External,
}

/// The setup most tests share, as a builder: a fresh directory, the upstream
/// on a free port of 127.0.0.1, idlegate with `--upstream`, `--idle-timeout`
/// (60 s unless set) and `--stop-timeout 5s` in front of the test backend,
/// and an activator holding one socket named `http` (UDP: `dns`).
///
/// `Fixture::tcp().idle("300ms").backend(&["--delay-ms", "500"]).pid_file().start()`
/// gives a [`Gate`]: the activator (which the gate derefs to), the upstream
/// address, the backend's pid file and the directory. [`Fixture::args`] gives
/// idlegate's arguments to a test that runs idlegate itself.
pub struct Fixture {
    kind: Kind,
    dir: Arc<tempfile::TempDir>,
    upstream: String,
    idle: String,
    stop_timeout: Option<String>,
    extra: Vec<String>,
    backend: Backend,
    socket: String,
    unix_socket: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// A started [`Fixture`].
pub struct Gate {
    /// The activator running idlegate.
    pub act: Activator,
    /// The upstream address, as the backend listens on it (no `udp:`).
    pub backend: String,
    /// Where [`Fixture::pid_file`] has the test backend write its pid.
    pub pid_file: PathBuf,
    /// The test's directory (the activator keeps it too).
    pub dir: Arc<tempfile::TempDir>,
}

/// A [`Gate`] is used as its activator.
impl std::ops::Deref for Gate {
    type Target = Activator;

    fn deref(&self) -> &Activator {
        &self.act
    }
}

impl Fixture {
    /// TCP mode.
    pub fn tcp() -> Fixture {
        Fixture::new(Kind::Tcp, &[], "http")
    }

    /// HTTP mode (`--mode http`), the test backend speaking HTTP.
    pub fn http() -> Fixture {
        Fixture::new(Kind::Http, &["--http"], "http")
    }

    /// A UDP socket and a `udp:` upstream, the test backend echoing datagrams.
    pub fn udp() -> Fixture {
        Fixture::new(Kind::Udp, &["--udp"], "dns")
    }

    /// A fixture of `kind`, the test backend with `backend` flags first, the
    /// socket named `socket`.
    fn new(kind: Kind, backend: &[&str], socket: &str) -> Fixture {
        Fixture {
            kind,
            dir: tempdir(),
            upstream: format!("127.0.0.1:{}", free_port()),
            idle: "60s".into(),
            stop_timeout: Some("5s".into()),
            extra: Vec::new(),
            backend: Backend::Test(args(backend)),
            socket: socket.into(),
            unix_socket: None,
            env: Vec::new(),
        }
    }

    /// The idle timeout (`--idle-timeout`).
    pub fn idle(mut self, idle: &str) -> Self {
        self.idle = idle.into();
        self
    }

    /// More idlegate flags, after the usual ones.
    pub fn extra(mut self, flags: &[&str]) -> Self {
        self.extra.extend(args(flags));
        self
    }

    /// The stop timeout (`--stop-timeout`).
    pub fn stop_timeout(mut self, timeout: &str) -> Self {
        self.stop_timeout = Some(timeout.into());
        self
    }

    /// More flags for the test backend.
    pub fn backend(mut self, flags: &[&str]) -> Self {
        match &mut self.backend {
            Backend::Test(f) => f.extend(args(flags)),
            _ => panic!("backend flags are for the test backend"),
        }
        self
    }

    /// No `--stop-timeout`: idlegate's own default applies.
    pub fn default_stop_timeout(mut self) -> Self {
        self.stop_timeout = None;
        self
    }

    /// The test backend writes its pid to [`Gate::pid_file`] (`backend.pid`
    /// in the directory).
    pub fn pid_file(self) -> Self {
        let pid_file = self.file("backend.pid");
        self.backend(&["--pid-file", pid_file.to_str().unwrap()])
    }

    /// The upstream address instead of a free port of 127.0.0.1 (`unix:PATH`
    /// for a Unix socket).
    pub fn upstream(mut self, addr: &str) -> Self {
        self.upstream = addr.into();
        self
    }

    /// Another backend command instead of the test backend.
    pub fn command<S: AsRef<str>>(mut self, argv: &[S]) -> Self {
        self.backend = Backend::Command(argv.iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }

    /// The name of the activator's socket (`FileDescriptorName=`).
    pub fn socket(mut self, name: &str) -> Self {
        self.socket = name.into();
        self
    }

    /// An environment variable for idlegate.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// No backend command: idlegate waits for an external backend.
    pub fn external(mut self) -> Self {
        self.backend = Backend::External;
        self
    }

    /// The activator holds a Unix socket at `path` instead of a TCP one.
    pub fn unix_socket(mut self, path: &Path) -> Self {
        self.unix_socket = Some(path.to_owned());
        self
    }

    /// Another test's directory instead of a fresh one.
    pub fn dir(mut self, dir: &Arc<tempfile::TempDir>) -> Self {
        self.dir = dir.clone();
        self
    }

    /// The upstream address, for a test that starts the backend itself.
    pub fn upstream_addr(&self) -> &str {
        &self.upstream
    }

    /// A path in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// idlegate's arguments, for a test that runs idlegate itself.
    pub fn args(&self) -> Vec<String> {
        let mut a = match self.kind {
            Kind::Http => args(&["--mode", "http"]),
            Kind::Tcp | Kind::Udp => Vec::new(),
        };
        let upstream = match self.kind {
            Kind::Udp => format!("udp:{}", self.upstream),
            Kind::Tcp | Kind::Http => self.upstream.clone(),
        };
        a.extend(args(&[
            "--upstream",
            &upstream,
            "--idle-timeout",
            &self.idle,
        ]));
        if let Some(timeout) = &self.stop_timeout {
            a.extend(args(&["--stop-timeout", timeout]));
        }
        a.extend(self.extra.iter().cloned());
        match &self.backend {
            Backend::Test(flags) => {
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                a.extend(backend_command(&self.upstream, &flags));
            }
            Backend::Command(argv) => {
                a.push("--".into());
                a.extend(argv.iter().cloned());
            }
            Backend::External => {}
        }
        a
    }

    /// Starts the activator.
    pub fn start(self) -> Gate {
        let mut b = ActivatorBuilder::new(self.dir.clone(), &self.args());
        b = match (&self.kind, &self.unix_socket) {
            (_, Some(path)) => b.unix(path, &self.socket),
            (Kind::Udp, None) => b.udp(&self.socket),
            (Kind::Tcp | Kind::Http, None) => b.tcp(&self.socket),
        };
        for (key, value) in &self.env {
            b = b.env(key, value);
        }
        Gate {
            act: b.start(),
            pid_file: self.file("backend.pid"),
            backend: self.upstream,
            dir: self.dir,
        }
    }
}

/// Waits for an idlegate the test spawned itself to exit; kills it and
/// panics if it still runs after [`PATIENCE`].
pub fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "idlegate did not exit: {:?}",
                child.wait().map(|s| s.signal())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An idlegate the test spawned with `--listen` (not socket-activated: it
/// binds its socket itself and stops the backend at idle), killed if still
/// running when dropped.
pub struct Listening {
    /// idlegate.
    pub child: Child,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// Its stderr.
    pub log: PathBuf,
}

impl Fixture {
    /// Spawns idlegate with `--listen` on a free port, `extra` flags and the
    /// fixture's, and waits until it listens.
    pub fn spawn_listening(&self, extra: &[&str]) -> Listening {
        let front = format!("127.0.0.1:{}", free_port());
        let mut a = args(&["--listen", &front]);
        a.extend(args(extra));
        a.extend(self.args());
        let log = self.file("listen.log");
        let child = super::spawn_not_activated(&a, &log);
        let addr: std::net::SocketAddr = front.parse().unwrap();
        super::wait_until("idlegate to listen", PATIENCE, || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Listening { child, addr, log }
    }
}

impl Listening {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits for its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) to our own child, which has not been reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        wait_child(&mut self.child)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
