//! Real Docker for the container tests: one private dockerd per test run
//! (Debian's docker.io, 20.10), with its own data root, exec root, socket,
//! pid file and bridge in a short temporary directory, so that it neither
//! touches nor meets the host's Docker, a parallel test run's, or podman.
//!
//! The daemon's flags, found by trying them on the test machine:
//! - `--bridge igd<pid>`: a bridge of its own (made here, with a free
//!   10.213.N.0/24), as two daemons on the default `docker0` would hand out
//!   the same addresses;
//! - `--iptables=false --ip-masq=false --ip-forward=false`: no host firewall
//!   rules (the default adds chains and sets the FORWARD policy to DROP, and
//!   leaves them behind); published ports then go through docker-proxy, the
//!   userland forwarder, which is what the tests want to meet;
//! - `--shutdown-timeout 1`: a quick end of the run;
//! - the storage driver is dockerd's default (overlay2 works here).
//!
//! The daemon is its own process group, started by a thread that lives as
//! long as the test process, with a parent-death signal (SIGTERM): if the
//! test run is killed, dockerd stops too. At a normal end of the run an
//! `atexit` handler stops it, reaps it by pid and removes its mounts,
//! directory and bridge; a directory left by a killed run (its pid gone)
//! is cleaned up by the next run.
//!
//! The Swarm tests get a second private dockerd ([`swarm`]), made a
//! single-node swarm manager (`docker swarm init --advertise-addr
//! 127.0.0.1`, its cluster port a free one instead of 2377), so that the
//! shared one stays a plain engine (and the one that is not a manager).
//! Its gossip port is Docker's fixed 7946: two swarm test runs at once
//! would meet there.
//!
//! Without dockerd the Docker tests are skipped, unless
//! `IDLEGATE_REQUIRE_DOCKER=1` (set by `.ci/run`), which makes a missing
//! dockerd a failure.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::podman::{
    busybox_rootfs, image_cmd, pings, run_to_end, stdout_if_ok, BUSYBOX_CMD, IMAGE,
};

/// Debian's Docker CLI (`/usr/local/bin/docker` may be an unrelated newer one).
pub const DOCKER_CLI: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// How long dockerd may take to answer.
const PATIENCE: Duration = Duration::from_secs(60);

/// The private dockerd shared by all tests of one run.
#[derive(Debug)]
pub struct Docker {
    /// Its directory: data root, exec root, socket, pid file.
    dir: PathBuf,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its pid.
    pid: i32,
    /// Its bridge.
    bridge: String,
    /// Its TLS listener on 127.0.0.1 (`--tlsverify`).
    pub tls_port: u16,
    /// The certificates of that listener and of its clients.
    pub certs: super::tls::Certs,
}

static DOCKER: OnceLock<Option<Docker>> = OnceLock::new();
static SWARM: OnceLock<Option<Docker>> = OnceLock::new();

/// The private dockerd, or `None` (test skipped) when Docker is not
/// installed (or this is not root) and not required.
pub fn docker() -> Option<&'static Docker> {
    DOCKER.get_or_init(|| set_up("igd")).as_ref()
}

/// A second private dockerd, a single-node swarm manager, or `None` as
/// for [`docker`].
pub fn swarm() -> Option<&'static Docker> {
    SWARM
        .get_or_init(|| {
            let docker = set_up("igs")?;
            let listen = format!("127.0.0.1:{}", super::free_port());
            docker.ok(&[
                "swarm",
                "init",
                "--advertise-addr",
                "127.0.0.1",
                "--listen-addr",
                &listen,
            ]);
            Some(docker)
        })
        .as_ref()
}

/// Starts a private dockerd in `/tmp/PREFIX-PID` on the bridge `PREFIXPID`.
fn set_up(prefix: &str) -> Option<Docker> {
    let required = std::env::var_os("IDLEGATE_REQUIRE_DOCKER").is_some_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !Path::new(DOCKERD).exists() || !Path::new(DOCKER_CLI).exists() || !root {
        assert!(
            !required,
            "IDLEGATE_REQUIRE_DOCKER=1 but {DOCKERD} or {DOCKER_CLI} is missing or this is not root \
             (apt-get install docker.io)"
        );
        eprintln!("dockerd not installed (or not root): Docker test skipped (IDLEGATE_REQUIRE_DOCKER=1 makes this a failure)");
        return None;
    }
    clean_up_earlier_runs();
    let me = std::process::id();
    // Short: containerd's sockets live under the exec root.
    let dir = PathBuf::from(format!("/tmp/{prefix}-{me}"));
    std::fs::create_dir_all(&dir).unwrap();
    let bridge = format!("{prefix}{me}");
    make_bridge(&bridge);
    let socket = dir.join("d.sock");
    let certs = super::tls::make(&dir.join("tls"));
    let tls_port = super::free_port();
    let mut cmd = Command::new(DOCKERD);
    let server = |file: &str| certs.server.join(file);
    cmd.arg("--tlsverify")
        .arg("--tlscacert")
        .arg(server("ca.pem"))
        .arg("--tlscert")
        .arg(server("server-cert.pem"))
        .arg("--tlskey")
        .arg(server("server-key.pem"))
        .args(["-H", &format!("tcp://127.0.0.1:{tls_port}")]);
    cmd.arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("x"))
        .arg("--pidfile")
        .arg(dir.join("pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(["--bridge", &bridge])
        .args(["--iptables=false", "--ip-masq=false", "--ip-forward=false"])
        .args(["--shutdown-timeout", "1"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("log")).unwrap())
        .stderr(std::fs::File::create(dir.join("log")).unwrap());
    // SAFETY: between fork and exec only setpgid and prctl run, both
    // async-signal-safe, taking integers only.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    // The parent-death signal follows the thread that forked: one that
    // lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = cmd.spawn();
        let _ = tx.send(child.map(|c| c.id()));
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().unwrap().expect("start dockerd") as i32;
    let docker = Docker {
        dir,
        socket,
        pid,
        bridge,
        tls_port,
        certs,
    };
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: stop_at_exit is an extern "C" fn without arguments.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(stop_at_exit);
    });
    let deadline = Instant::now() + PATIENCE;
    while !docker.pings() {
        assert!(
            Instant::now() < deadline,
            "the private dockerd never answered; its log:\n{}",
            std::fs::read_to_string(docker.dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let images = docker.dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let tar = busybox_rootfs(&images);
    docker.import(&tar, BUSYBOX_CMD, IMAGE);
    let _ = std::fs::remove_dir_all(&images);
    Some(docker)
}

/// At the end of the test run: each dockerd stopped and reaped, its mounts,
/// directory and bridge removed.
extern "C" fn stop_at_exit() {
    for docker in [DOCKER.get(), SWARM.get()].into_iter().flatten().flatten() {
        stop_dockerd(docker.pid);
        remove_leftovers(&docker.dir, &docker.bridge);
    }
}

/// SIGTERM to dockerd (SIGKILL to its group if it outlasts [`PATIENCE`]),
/// reaped if it is our child.
fn stop_dockerd(pid: i32) {
    // SAFETY: kill and waitpid take integers and a local status.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut status = 0;
            let reaped = libc::waitpid(pid, &mut status, libc::WNOHANG);
            if reaped == pid || (reaped < 0 && libc::kill(pid, 0) != 0) {
                return;
            }
            if Instant::now() > deadline {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Unmounts what is mounted under `dir`, removes it and deletes `bridge`.
fn remove_leftovers(dir: &Path, bridge: &str) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    // The deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = Command::new("ip")
        .args(["link", "del", bridge])
        .stderr(Stdio::null())
        .status();
}

/// Removes what a killed earlier run left: its dockerd (still running if
/// the test process was SIGKILLed before the signal reached it), mounts,
/// directory and bridge.
fn clean_up_earlier_runs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((prefix, pid)) = ["igd", "igs"].into_iter().find_map(|prefix| {
            let pid = name.strip_prefix(prefix)?.strip_prefix('-')?;
            Some((prefix, pid.parse::<u32>().ok()?))
        }) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Some(dockerd) = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let alive = std::fs::read_link(format!("/proc/{dockerd}/exe"))
                .is_ok_and(|exe| exe == Path::new(DOCKERD));
            if alive {
                stop_dockerd(dockerd);
            }
        }
        remove_leftovers(&dir, &format!("{prefix}{pid}"));
    }
}

/// Makes the bridge `name` with a free 10.213.N.1/24, up.
fn make_bridge(name: &str) {
    let addresses = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip (iproute2)");
    let used = String::from_utf8_lossy(&addresses.stdout).into_owned();
    let start = std::process::id() % 250;
    let n = (0..250)
        .map(|i| (start + i) % 250 + 1)
        .find(|n| !used.contains(&format!("10.213.{n}.")))
        .expect("a free 10.213.N.0/24");
    for args in [
        vec!["link", "add", name, "type", "bridge"],
        vec!["addr", "add", &format!("10.213.{n}.1/24"), "dev", name],
        vec!["link", "set", name, "up"],
    ] {
        let status = Command::new("ip").args(&args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    }
}

impl Docker {
    /// A docker command talking to this dockerd.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.args(args)
            .env("DOCKER_HOST", self.host())
            .stdin(Stdio::null());
        cmd
    }

    /// `unix://` and the socket: what `DOCKER_HOST` says.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs docker to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        run_to_end(self.command(args), &format!("docker {args:?}"))
    }

    /// Runs docker and panics with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        stdout_if_ok(self.run(args), &format!("docker {args:?}"))
    }

    fn import(&self, tar: &Path, cmd: &str, image: &str) {
        self.ok(&[
            "import",
            "--change",
            &image_cmd(cmd),
            tar.to_str().unwrap(),
            image,
        ]);
    }

    fn pings(&self) -> bool {
        pings(&self.socket)
    }
}
