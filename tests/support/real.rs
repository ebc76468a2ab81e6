//! Real third-party servers as idlegate backends — PostgreSQL 15, Redis and
//! nginx — and headless Chromium as a real browser client, as Debian 12
//! packages them (postgresql-15, redis-server + redis-tools, nginx-light,
//! nghttp2-client, chromium).
//!
//! Each backend helper gives the argv idlegate should run (in the foreground,
//! the server being idlegate's direct child, exiting on SIGTERM) and a shell
//! command that succeeds once the server answers. Every process started here
//! is reaped here; ports come from the caller (use [`super::free_port`]).
//!
//! What these servers do that matters to idlegate (measured on a 2-core
//! Debian 12 machine):
//! - postgres accepts TCP connections a few milliseconds before it serves
//!   them, answering `FATAL: the database system is starting up` meanwhile
//!   (≈5–10 ms after a clean shutdown; ≈0.6 s after
//!   [`PgCluster::prepare_crash_recovery`] with 2M rows). With
//!   `NOTIFY_SOCKET` set it sends `READY=1` once it serves, and
//!   `STOPPING=1` on SIGTERM. SIGTERM is a *smart* shutdown: it waits for
//!   connected sessions to end.
//! - redis-server accepts connections at once, then answers every command
//!   with `-LOADING Redis is loading the dataset in memory` until its
//!   dump is loaded (≈1 s for 2M keys). With `--supervised systemd` it sends
//!   `STATUS=Redis is loading...\n`, then `STATUS=Ready to accept
//!   connections\n` and `READY=1\n` after loading, `STOPPING=1\n` on SIGTERM.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{wait_until, PATIENCE};

fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs `cmd` to completion (stdin closed) within `timeout`: `Ok(stdout)`
/// if it exits 0, else `Err(stderr, stdout, then "[status: command]")`.
/// It runs in a process group of its own, SIGKILLed at the deadline (so a
/// shell pipeline dies whole) and reaped.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    // Drain both pipes while waiting, so a chatty command cannot block.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the group of a child not reaped yet.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(format!("{err}{out}[{s}: {cmd:?}]")),
        None => Err(format!("{err}{out}[killed after {timeout:?}: {cmd:?}]")),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Whether the shell command `cmd` exits 0 (within [`PATIENCE`]).
pub fn shell_ok(cmd: &str) -> bool {
    run_with_timeout(Command::new("sh").arg("-c").arg(cmd), PATIENCE).is_ok()
}

/// Polls the shell command `cmd` until it exits 0; panics with `what` after `timeout`.
pub fn wait_shell_ok(what: &str, cmd: &str, timeout: Duration) {
    wait_until(what, timeout, || shell_ok(cmd));
}

/// Sends `signal` to `child` if it has not been reaped yet.
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped (its pid is
    // still ours, even as a zombie).
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Waits for `child` to exit within `timeout`; SIGKILLs and reaps it after
/// that. Returns its exit status, or `None` if it had to be killed.
pub fn reap_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A Unix datagram socket at `path` for `NOTIFY_SOCKET`, writable by every
/// user: a backend that drops to another user (postgres runs as `postgres`)
/// cannot send to a root-owned socket with the default mode 0755, and its
/// `sd_notify` then fails silently. Abstract names (`@name`) need no such care.
pub fn bind_notify_socket(path: &Path) -> std::os::unix::net::UnixDatagram {
    let socket = std::os::unix::net::UnixDatagram::bind(path).expect("bind notify socket");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
    socket
}

// ---------------------------------------------------------------- PostgreSQL

/// Where Debian's PostgreSQL 15 binaries are.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL 15 cluster (a data directory owned by the `postgres` user,
/// trust authentication, superuser `postgres`), not running.
pub struct PgCluster {
    /// The data directory; also the directory of its Unix socket.
    pub dir: PathBuf,
    /// Its TCP port on 127.0.0.1, free when the cluster was made.
    pub port: u16,
}

impl PgCluster {
    /// Makes a new cluster in a fresh directory under `parent` (about 0.5 s).
    /// `parent` gets search permission for others, so the `postgres` user can
    /// reach its data directory; `parent`'s own ancestors must allow that
    /// already (a tempdir under /tmp does).
    pub fn init(parent: &Path) -> PgCluster {
        assert!(
            Path::new(PG_BIN).join("postgres").exists(),
            "PostgreSQL 15 is missing (apt-get install postgresql-15)"
        );
        let mode = std::fs::metadata(parent).unwrap().permissions().mode();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
        let dir = parent.join(format!("pgdata-{}", unique()));
        let port = super::free_port();
        // The socket path must fit in sun_path (108 bytes).
        assert!(
            dir.join(format!(".s.PGSQL.{port}")).as_os_str().len() < 100,
            "{} is too long for a Unix socket directory",
            dir.display()
        );
        std::fs::create_dir(&dir).unwrap();
        let chown = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success(), "chown postgres {}", dir.display());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut initdb = as_postgres(&format!("{PG_BIN}/initdb"));
        initdb
            .arg("-D")
            .arg(&dir)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .args(["--no-sync", "--no-instructions"]);
        if let Err(e) = run_with_timeout(&mut initdb, PATIENCE * 2) {
            panic!("initdb failed: {e}");
        }
        PgCluster { dir, port }
    }

    /// The backend command for idlegate: postgres in the foreground as user
    /// `postgres` via `setpriv`, which execs, so postgres is the direct child
    /// (same pid); SIGTERM shuts it down (smart: after sessions end) and it
    /// exits 0. Listens on 127.0.0.1:`port` and a socket in [`Self::dir`];
    /// fsync off.
    pub fn backend_argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = [
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(format!("{PG_BIN}/postgres"));
        argv.extend(["-D".into(), self.dir.display().to_string()]);
        argv.extend(["-k".into(), self.dir.display().to_string()]);
        argv.extend(["-p".into(), self.port.to_string()]);
        for setting in [
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ] {
            argv.extend(["-c".into(), setting.into()]);
        }
        argv
    }

    /// A shell command that exits 0 once postgres serves queries (`pg_isready`
    /// exits 1 while it answers "starting up", 2 while nothing answers).
    pub fn ready_cmd(&self) -> String {
        format!(
            "{PG_BIN}/pg_isready -q -h 127.0.0.1 -p {} -U postgres -d postgres -t 5",
            self.port
        )
    }

    /// Starts [`Self::backend_argv`] directly (not under idlegate), output to `log`.
    pub fn spawn(&self, log: &Path) -> Child {
        spawn_logged(&self.backend_argv(), &[], log)
    }

    /// Leaves the cluster needing crash recovery, so its next start answers
    /// "the database system is starting up" / "not yet accepting connections"
    /// for a while (2M rows: ≈0.6 s here; 3M ≈1.1 s): starts postgres, writes
    /// `rows` rows of WAL with no checkpoint, and stops it with SIGQUIT
    /// (immediate shutdown). Only the next start recovers; takes ≈1 s per
    /// million rows.
    pub fn prepare_crash_recovery(&self, rows: u64) {
        let log = self.dir.with_extension("crash.log");
        let mut argv = self.backend_argv();
        for setting in ["max_wal_size=8GB", "checkpoint_timeout=1h"] {
            argv.extend(["-c".into(), setting.into()]);
        }
        let mut child = spawn_logged(&argv, &[], &log);
        let ready = self.ready_cmd();
        let deadline = Instant::now() + PATIENCE;
        while !shell_ok(&ready) {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                signal(&child, libc::SIGQUIT);
                reap_within(&mut child, PATIENCE);
                panic!(
                    "postgres did not become ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let sql = format!(
            "CREATE TABLE crash_{n} AS SELECT g, md5(g::text) FROM generate_series(1, {rows}) g",
            n = unique()
        );
        let written = psql_query(self.port, &sql);
        signal(&child, libc::SIGQUIT);
        let status = reap_within(&mut child, PATIENCE);
        assert!(status.is_some(), "postgres ignored SIGQUIT");
        if let Err(e) = written {
            panic!("writing WAL failed: {e}");
        }
    }
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
        program,
    ])
    .current_dir("/");
    cmd
}

/// Runs `sql` with psql as `postgres` on 127.0.0.1:`port` (unaligned, tuples
/// only, stop on error, 10 s connect timeout, [`PATIENCE`] overall): the
/// output without its final newline, or `Err` starting with psql's stderr.
pub fn psql_query(port: u16, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new(format!("{PG_BIN}/psql"));
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-At",
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE");
    run_with_timeout(&mut cmd, PATIENCE).map(|out| out.trim_end_matches('\n').to_owned())
}

// --------------------------------------------------------------------- Redis

/// A Redis dump with enough keys that loading it takes a visible while.
pub struct RedisData {
    /// The directory holding `dump.rdb`.
    pub dir: PathBuf,
    /// How many keys it holds (`key:0` … with values `value:0` …).
    pub keys: usize,
}

/// A key count whose dump loads in ≈1 s here (LOADING phase) and is made
/// in ≈2.3 s. For comparison: 1M keys load in ≈0.45 s (made in ≈1 s),
/// 3M in ≈1.6 s (made in ≈3.5 s).
pub const REDIS_LOADING_KEYS: usize = 2_000_000;

impl RedisData {
    /// Writes `dir/dump.rdb` with `keys` keys: a throw-away redis-server on
    /// a Unix socket in `dir` runs `DEBUG POPULATE keys` and `SAVE`, then
    /// stops.
    pub fn create(dir: &Path, keys: usize) -> RedisData {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join(format!("populate-{}.sock", unique()));
        assert!(
            socket.as_os_str().len() < 100,
            "{} is too long",
            socket.display()
        );
        let log = dir.join("populate.log");
        let dir_s = dir.display().to_string();
        let socket_s = socket.display().to_string();
        let argv = [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            &socket_s,
            "--unixsocketperm",
            "700",
            "--dir",
            &dir_s,
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--enable-debug-command",
            "local",
        ];
        let mut child = spawn_logged(&super::args(&argv), &[], &log);
        let cli = |args: &[&str]| {
            run_with_timeout(
                Command::new("redis-cli")
                    .arg("-e")
                    .arg("-s")
                    .arg(&socket)
                    .args(args),
                PATIENCE * 2,
            )
        };
        let deadline = Instant::now() + PATIENCE;
        while !cli(&["ping"]).is_ok_and(|o| o.trim() == "PONG") {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                reap_within(&mut child, Duration::ZERO);
                panic!(
                    "the populating redis-server did not answer:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let made = cli(&["debug", "populate", &keys.to_string()]).and_then(|_| cli(&["save"]));
        signal(&child, libc::SIGTERM);
        let stopped = reap_within(&mut child, PATIENCE);
        let _ = std::fs::remove_file(&socket);
        if let Err(e) = made {
            panic!("making the redis dump failed: {e}");
        }
        assert!(
            stopped.is_some(),
            "the populating redis-server ignored SIGTERM"
        );
        assert!(dir.join("dump.rdb").exists(), "no dump.rdb in {dir_s}");
        RedisData {
            dir: dir.to_owned(),
            keys,
        }
    }

    /// The backend command for idlegate: redis-server in the foreground on
    /// 127.0.0.1:`port`, loading this dump (never saving); it exits 0 on
    /// SIGTERM. Append `--supervised systemd` to have it send `READY=1`
    /// (after loading) to `NOTIFY_SOCKET`.
    pub fn backend_argv(&self, port: u16) -> Vec<String> {
        let port = port.to_string();
        let dir = self.dir.display().to_string();
        super::args(&[
            "redis-server",
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
    }

    /// A shell command that exits 0 once redis on `port` answers PING with
    /// PONG (not `-LOADING`).
    pub fn ready_cmd(&self, port: u16) -> String {
        format!("redis-cli -h 127.0.0.1 -p {port} ping 2>/dev/null | grep -q PONG")
    }
}

/// Runs one redis command with redis-cli on 127.0.0.1:`port` (within
/// [`PATIENCE`]): the reply as redis-cli prints it without the final
/// newline, or `Err` for an error reply (e.g. `LOADING …`) or no connection.
pub fn redis_cmd(port: u16, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-e", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run_with_timeout(&mut cmd, PATIENCE).map(|out| out.trim_end_matches('\n').to_owned())
}

// --------------------------------------------------------------------- nginx

/// nginx as a plain HTTP/1.1 backend (no HTTP/2 on its listener).
pub struct Nginx;

/// What nginx serves at `/` from [`Nginx::config`].
pub const NGINX_PAGE: &str = "hello from nginx\n";

impl Nginx {
    /// Writes `dir/nginx.conf` (one per directory): one process (`master_process
    /// off`, so SIGTERM or SIGKILL leaves no worker behind), `worker_connections`
    /// connections at most, listening on 127.0.0.1:`port`, serving
    /// [`NGINX_PAGE`] at `/`; pid, logs and temp files inside `dir`, no access
    /// log. Returns the config's path.
    pub fn config(dir: &Path, port: u16, worker_connections: u32) -> PathBuf {
        Nginx::write_config(dir, port, worker_connections, "")
    }

    /// [`Nginx::config`] with HTTP/2 only on the listener (cleartext, prior
    /// knowledge: h2c). Both answer `/protocol` with the protocol they were
    /// asked in (`HTTP/2.0`) and `/host` with the host asked for.
    pub fn h2c_config(dir: &Path, port: u16) -> PathBuf {
        Nginx::write_config(dir, port, 512, " http2")
    }

    fn write_config(dir: &Path, port: u16, worker_connections: u32, listen: &str) -> PathBuf {
        let www = dir.join("www");
        let tmp = dir.join("nginx-tmp");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(www.join("index.html"), NGINX_PAGE).unwrap();
        let d = dir.display();
        let t = tmp.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid "{d}/nginx.pid";
error_log "{d}/error.log" warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    client_body_temp_path "{t}/body";
    proxy_temp_path "{t}/proxy";
    fastcgi_temp_path "{t}/fastcgi";
    uwsgi_temp_path "{t}/uwsgi";
    scgi_temp_path "{t}/scgi";
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port}{listen};
        root "{www}";
        location / {{ }}
        location = /protocol {{ return 200 "$server_protocol\n"; }}
        location = /host {{ return 200 "$host\n"; }}
    }}
}}
"#,
            www = www.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        path
    }

    /// The backend command for idlegate: `nginx -c CONF -e DIR/error.log`,
    /// in the foreground (the config says `daemon off`); exits 0 on SIGTERM.
    /// Errors go to `error.log` next to the config, startup ones included.
    pub fn backend_argv(conf: &Path) -> Vec<String> {
        let error_log = conf.parent().unwrap().join("error.log");
        vec![
            "nginx".into(),
            "-c".into(),
            conf.display().to_string(),
            "-e".into(),
            error_log.display().to_string(),
        ]
    }
}

/// The `requests:` line of h2load's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2loadResult {
    /// Requests asked for (`-n`).
    pub total: u64,
    /// Requests sent.
    pub started: u64,
    /// Requests answered.
    pub done: u64,
    /// Answered with 2xx or 3xx.
    pub succeeded: u64,
    /// Not answered or answered otherwise.
    pub failed: u64,
    /// Failed by a connection or protocol error.
    pub errored: u64,
    /// Failed by a timeout.
    pub timeout: u64,
}

/// Runs h2load with `args` (within 4 × [`PATIENCE`]) and parses its summary.
/// Note: without `--h1` h2load speaks h2c (prior knowledge), which plain
/// nginx refuses (every request errors).
pub fn h2load(args: &[&str]) -> Result<H2loadResult, String> {
    let out = run_with_timeout(Command::new("h2load").args(args), PATIENCE * 4)?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .ok_or_else(|| format!("no summary from h2load {args:?}:\n{out}"))?;
    let mut r = H2loadResult {
        total: 0,
        started: 0,
        done: 0,
        succeeded: 0,
        failed: 0,
        errored: 0,
        timeout: 0,
    };
    for part in line.split(", ") {
        let (n, what) = part
            .split_once(' ')
            .ok_or_else(|| format!("odd h2load summary: {line}"))?;
        let n: u64 = n
            .parse()
            .map_err(|_| format!("odd h2load summary: {line}"))?;
        match what {
            "total" => r.total = n,
            "started" => r.started = n,
            "done" => r.done = n,
            "succeeded" => r.succeeded = n,
            "failed" => r.failed = n,
            "errored" => r.errored = n,
            "timeout" => r.timeout = n,
            _ => {}
        }
    }
    Ok(r)
}

// ------------------------------------------------------------------ Chromium

/// Headless Chromium on one page, kept open (with its idle connections)
/// until dropped; dropping it stops every process it started.
///
/// As it loads a page it opens a second, speculative connection to the same
/// server. If the first connection stays usable (HTTP/1.1 keep-alive), the
/// second is never used: it sends not a byte and stays open (seen for over
/// 75 s) while the browser runs. Against an HTTP/1.0 server (python's
/// `http.server` by default) it carries the next request (`/favicon.ico`)
/// and is closed with it, so no idle connection remains.
pub struct Browser {
    child: Child,
    /// Chromium's own directory: profile, config, cache, temp files.
    pub dir: PathBuf,
    /// Chromium's stdout and stderr (dbus errors there are harmless).
    pub log_path: PathBuf,
}

impl Browser {
    /// Starts `chromium --headless` on `url`, everything it writes kept in a
    /// fresh directory under `dir`, and waits until its DevTools endpoint is
    /// up (the browser runs; the page may still be loading: check that the
    /// backend got the request).
    pub fn open(url: &str, dir: &Path) -> Browser {
        let (mut chromium, own) = headless_chromium(dir);
        let log_path = own.join("chromium.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = chromium
            .arg("--remote-debugging-port=0")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("chromium is missing (apt-get install chromium)");
        let mut browser = Browser {
            child,
            dir: own,
            log_path,
        };
        let deadline = Instant::now() + PATIENCE * 2;
        while !browser.log().contains("DevTools listening on") {
            let exited = browser.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "chromium did not start ({exited:?}):\n{}",
                browser.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        browser
    }

    /// The title of the browser's page now, asked of its DevTools endpoint
    /// (`/json/list`); `None` while it cannot tell.
    pub fn title(&self) -> Option<String> {
        let log = self.log();
        let (_, after) = log.split_once("DevTools listening on ws://")?;
        let authority = after.split('/').next()?;
        let addr: std::net::SocketAddr = authority.parse().ok()?;
        // DevTools answers only a Host that is an address or localhost.
        let list = super::http::get(addr, "/json/list", &[("Host", authority)]).ok()?;
        let targets: serde_json::Value = serde_json::from_slice(&list.body).ok()?;
        targets
            .as_array()?
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["title"].as_str())
            .map(str::to_owned)
    }

    /// The browser process's pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything Chromium wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many established TCP connections Chromium's processes hold to
    /// 127.0.0.1:`port` (read from /proc).
    pub fn connections_to(&self, port: u16) -> usize {
        let inodes: std::collections::HashSet<u64> = self
            .processes()
            .into_iter()
            .flat_map(socket_inodes)
            .collect();
        established_to(port)
            .into_iter()
            .filter(|inode| inodes.contains(inode))
            .count()
    }

    /// Live processes that are Chromium's: in its process group, or naming
    /// its directory (the crash handlers leave the group).
    fn processes(&self) -> Vec<u32> {
        chromium_processes(Some(self.child.id() as i64), &self.dir)
    }
}

/// The page at `url` as headless Chromium has rendered it once loaded
/// (`--dump-dom`: the document after its scripts ran), Chromium's files in
/// a fresh directory under `dir`; `args` go before the URL. Panics if
/// Chromium fails or takes over twice [`PATIENCE`].
pub fn dump_dom(url: &str, dir: &Path, args: &[&str]) -> String {
    let (mut chromium, own) = headless_chromium(dir);
    let dumped = run_with_timeout(chromium.args(args).arg("--dump-dom").arg(url), PATIENCE * 2);
    // Its crash handler leaves the process group: ended here.
    for pid in chromium_processes(None, &own) {
        // SAFETY: kill(2) on a process naming Chromium's own directory.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    dumped.unwrap_or_else(|e| panic!("chromium --dump-dom {url}: {e}"))
}

/// `chromium --headless` with a fresh directory of its own under `dir`
/// (returned) for its profile, config, cache and temp files.
fn headless_chromium(dir: &Path) -> (Command, PathBuf) {
    let own = dir.join(format!("chromium-{}", unique()));
    for sub in ["profile", "config", "cache", "tmp"] {
        std::fs::create_dir_all(own.join(sub)).unwrap();
    }
    let mut chromium = Command::new("chromium");
    chromium
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", own.join("profile").display()))
        // The crash handler's database and Chromium's temp files stay here.
        .env("XDG_CONFIG_HOME", own.join("config"))
        .env("XDG_CACHE_HOME", own.join("cache"))
        .env("TMPDIR", own.join("tmp"));
    (chromium, own)
}

/// Live processes in process group `pgid`, or naming `dir` on their command line.
fn chromium_processes(pgid: Option<i64>, dir: &Path) -> Vec<u32> {
    let marker = dir.display().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let in_group = pgid.is_some() && fields.get(2).and_then(|g| g.parse::<i64>().ok()) == pgid;
        let names_dir = || {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                .unwrap_or(false)
        };
        if in_group || names_dir() {
            found.push(pid);
        }
    }
    found
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group we created (the browser is
        // not reaped yet, so the group id is still ours).
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        if reap_within(&mut self.child, Duration::from_secs(10)).is_none() {
            eprintln!("chromium ignored SIGTERM for 10 s; killed");
        }
        // Children reparented away from the browser: kill any left and wait
        // until they are gone (their reaper is init, not us).
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("chromium processes {left:?} outlived the browser");
                break;
            }
            for pid in left {
                // SAFETY: kill(2) on a process found by our group or directory.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The socket inodes a process holds open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?.to_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The socket inodes of every established TCP connection (of any process)
/// whose remote end is port `port` (IPv4 and IPv6).
pub fn established_to(port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let remote_port = f[2]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) {
                if let Ok(inode) = f[9].parse() {
                    inodes.push(inode);
                }
            }
        }
    }
    inodes
}

// -------------------------------------------------------------------- shared

/// Starts `argv` (stdin closed, stdout and stderr appended to `log`) with
/// extra environment `env`.
pub fn spawn_logged(argv: &[String], env: &[(&str, &str)], log: &Path) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env_remove("NOTIFY_SOCKET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"))
}
