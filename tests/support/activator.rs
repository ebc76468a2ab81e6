//! A stand-in for a systemd `.socket` unit: it holds listening sockets across
//! idlegate's runs, starts the real binary with `LISTEN_FDS`, `LISTEN_PID` and
//! `LISTEN_FDNAMES` when a client waits and idlegate is not running, and
//! records every exit status — as systemd does with `Accept=no`.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A socket the activator holds, with its `FileDescriptorName=`.
pub enum Socket {
    /// A TCP listener.
    Tcp(std::net::TcpListener, String),
    /// A Unix stream listener.
    Unix(std::os::unix::net::UnixListener, String),
    /// A UDP socket (`ListenDatagram=`).
    Udp(std::net::UdpSocket, String),
}

impl Socket {
    fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(l, _) => l.as_raw_fd(),
            Socket::Unix(l, _) => l.as_raw_fd(),
            Socket::Udp(s, _) => s.as_raw_fd(),
        }
    }
    fn name(&self) -> &str {
        match self {
            Socket::Tcp(_, n) | Socket::Unix(_, n) | Socket::Udp(_, n) => n,
        }
    }
}

/// What the activator saw. Its lock ignores poisoning: a test that panics
/// while waiting on it must still let `Drop` stop idlegate, not abort the run.
#[derive(Default)]
struct Record {
    activations: usize,
    exits: Vec<ExitStatus>,
    running: Option<u32>,
}

/// The running activator; dropping it stops idlegate and the activator thread.
pub struct Activator {
    record: Arc<(Mutex<Record>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where idlegate's stderr goes, every run appended.
    pub log_path: PathBuf,
    /// The TCP addresses held, in order (Unix sockets are skipped).
    pub tcp_addrs: Vec<std::net::SocketAddr>,
    /// The UDP addresses held, in order.
    pub udp_addrs: Vec<std::net::SocketAddr>,
    _dir: Arc<tempfile::TempDir>,
}

/// What to run and with which sockets.
pub struct ActivatorBuilder {
    sockets: Vec<Socket>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: Arc<tempfile::TempDir>,
}

impl ActivatorBuilder {
    /// An activator that will run idlegate with `args`.
    pub fn new(dir: Arc<tempfile::TempDir>, args: &[String]) -> Self {
        ActivatorBuilder {
            sockets: Vec::new(),
            args: args.to_vec(),
            env: Vec::new(),
            dir,
        }
    }

    /// Holds a new TCP socket on 127.0.0.1 (a free port) named `name`.
    pub fn tcp(mut self, name: &str) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind activator socket");
        self.sockets.push(Socket::Tcp(l, name.to_owned()));
        self
    }

    /// Holds a new Unix socket at `path` named `name`.
    pub fn unix(mut self, path: &std::path::Path, name: &str) -> Self {
        let l = std::os::unix::net::UnixListener::bind(path).expect("bind activator unix socket");
        self.sockets.push(Socket::Unix(l, name.to_owned()));
        self
    }

    /// Holds a new UDP socket on 127.0.0.1 (a free port) named `name`.
    pub fn udp(mut self, name: &str) -> Self {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind activator udp socket");
        self.sockets.push(Socket::Udp(s, name.to_owned()));
        self
    }

    /// Adds an environment variable for idlegate.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts holding the sockets and activating on demand.
    pub fn start(self) -> Activator {
        let log_path = self.dir.path().join(format!("idlegate-{}.log", unique()));
        let tcp_addrs = self
            .sockets
            .iter()
            .filter_map(|s| match s {
                Socket::Tcp(l, _) => Some(l.local_addr().unwrap()),
                Socket::Unix(..) | Socket::Udp(..) => None,
            })
            .collect();
        let udp_addrs = self
            .sockets
            .iter()
            .filter_map(|s| match s {
                Socket::Udp(s, _) => Some(s.local_addr().unwrap()),
                _ => None,
            })
            .collect();
        let record = Arc::new((Mutex::new(Record::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (record, stop, log_path) = (record.clone(), stop.clone(), log_path.clone());
            let (sockets, args, env) = (self.sockets, self.args, self.env);
            std::thread::spawn(move || activate_loop(sockets, args, env, log_path, record, stop))
        };
        Activator {
            record,
            stop,
            thread: Some(thread),
            log_path,
            tcp_addrs,
            udp_addrs,
            _dir: self.dir,
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn spawn_idlegate(
    sockets: &[Socket],
    args: &[String],
    env: &[(String, String)],
    log: &std::path::Path,
) -> std::process::Child {
    let fds: Vec<RawFd> = sockets.iter().map(Socket::fd).collect();
    let names: Vec<&str> = sockets.iter().map(Socket::name).collect();
    spawn_with_fds(&fds, &names, args, env, log)
}

/// Starts idlegate as systemd would: `fds` become 3, 4, …, with `LISTEN_FDS`,
/// `LISTEN_FDNAMES` and `LISTEN_PID` (its own pid) set; output appended to `log`.
pub fn spawn_with_fds(
    fds: &[RawFd],
    names: &[&str],
    args: &[String],
    env: &[(String, String)],
    log: &std::path::Path,
) -> std::process::Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be idlegate's own pid: the shell's, which exec keeps.
    // IDLEGATE_TEST_NOFILE sets the open-files limit (soft and hard), as
    // LimitNOFILE= does.
    cmd.arg("-c")
        .arg(
            r#"if [ -n "$IDLEGATE_TEST_NOFILE" ]; then ulimit -n "$IDLEGATE_TEST_NOFILE"; fi; LISTEN_PID=$$ exec "$0" "$@""#,
        )
        .arg(crate::support::idlegate_bin())
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let fds = fds.to_vec();
    // SAFETY: between fork and exec only fcntl and dup2 run, both
    // async-signal-safe, on descriptors this process owns; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0 as RawFd; 16];
            for (i, fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().take(fds.len()).enumerate() {
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*fd);
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn idlegate")
}

fn poll_readable(sockets: &[Socket], timeout_ms: i32) -> bool {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: fds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    n > 0
}

fn activate_loop(
    sockets: Vec<Socket>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    record: Arc<(Mutex<Record>, Condvar)>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        if !poll_readable(&sockets, 20) {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut child = spawn_idlegate(&sockets, &args, &env, &log);
        {
            let (m, c) = &*record;
            let mut r = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            r.activations += 1;
            r.running = Some(child.id());
            c.notify_all();
        }
        let status = child.wait().expect("wait idlegate");
        let (m, c) = &*record;
        let mut r = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.running = None;
        r.exits.push(status);
        c.notify_all();
    }
}

impl Activator {
    /// How many times idlegate was started.
    pub fn activations(&self) -> usize {
        self.record
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .activations
    }

    /// Every exit status so far.
    pub fn exits(&self) -> Vec<ExitStatus> {
        self.record
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .exits
            .clone()
    }

    /// The pid of the running idlegate, if one runs.
    pub fn running(&self) -> Option<u32> {
        self.record
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .running
    }

    /// Waits until `n` runs have exited; returns the n-th exit status.
    pub fn wait_exit(&self, n: usize, timeout: Duration) -> ExitStatus {
        let (m, c) = &*self.record;
        let deadline = Instant::now() + timeout;
        let mut r = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while r.exits.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "idlegate run {n} did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            r = c
                .wait_timeout(r, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        r.exits[n - 1]
    }

    /// Waits until `n` runs have exited, and asserts that the n-th exited 0
    /// (else: how it ended, and idlegate's log).
    #[track_caller]
    pub fn wait_exit_0(&self, n: usize, timeout: Duration) {
        let status = self.wait_exit(n, timeout);
        assert_eq!(
            status.code(),
            Some(0),
            "{}; log:\n{}",
            describe(&status),
            self.log()
        );
    }

    /// Waits until idlegate runs (activation `n` started); returns its pid.
    pub fn wait_running(&self, n: usize, timeout: Duration) -> u32 {
        let (m, c) = &*self.record;
        let deadline = Instant::now() + timeout;
        let mut r = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if r.activations >= n {
                if let Some(pid) = r.running {
                    return pid;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "idlegate activation {n} not running within {timeout:?}; log:\n{}",
                self.log()
            );
            r = c
                .wait_timeout(r, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Sends `signal` to the running idlegate.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.running().expect("idlegate is not running");
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }

    /// Everything idlegate logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Exit code of a status, or a description of the signal that ended it.
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown".into(),
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(pid) = self.running() {
            // SAFETY: kill(2) on a pid we spawned; the activator thread reaps it.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.running() == Some(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.running() == Some(pid) {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
