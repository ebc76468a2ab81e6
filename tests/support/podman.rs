//! Real podman for the container tests: a containers.conf that works on these
//! machines (runc, explicit ulimits), a test image built locally from
//! busybox-static (no registry is reachable), containers removed on drop, and
//! the engine API service on a private socket.
//!
//! Without podman the tests are skipped, unless `IDLEGATE_REQUIRE_PODMAN=1`
//! (set by `.ci/run`), which makes a missing podman a failure.
//!
//! Self-contained: `benches/containers.rs` uses it too.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a podman step may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// The locally built image: busybox at /bin/busybox, a page at /www/index.html.
pub const IMAGE: &str = "localhost/idlegate-test-busybox:latest";
/// An image with the test backend (`/test_backend`, with the shared
/// libraries it links) and busybox: see [`Podman::backend_image`].
pub const BACKEND_IMAGE: &str = "localhost/idlegate-test-backend:latest";
/// What `GET /` answers from the image's web server.
pub const PAGE: &str = "hello from the container\n";

/// The podman set-up shared by all tests of one run.
pub struct Podman {
    conf: PathBuf,
}

/// The podman set-up, or `None` (test skipped) when podman is not installed
/// and not required.
pub fn podman() -> Option<&'static Podman> {
    static PODMAN: OnceLock<Option<Podman>> = OnceLock::new();
    PODMAN.get_or_init(set_up).as_ref()
}

fn set_up() -> Option<Podman> {
    let required = std::env::var_os("IDLEGATE_REQUIRE_PODMAN").is_some_and(|v| v == "1");
    let found = Command::new("podman")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !required,
            "IDLEGATE_REQUIRE_PODMAN=1 but podman is not installed (apt-get install podman runc busybox-static)"
        );
        eprintln!("podman not installed: container test skipped (IDLEGATE_REQUIRE_PODMAN=1 makes this a failure)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("idlegate-podman-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let podman = Podman { conf };
    podman.build_image(&dir);
    Some(podman)
}

impl Podman {
    /// The containers.conf every podman call (and idlegate's) must use.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// A podman command with this set-up's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs podman to completion within [`PATIENCE`].
    pub fn run(&self, args: &[&str]) -> Output {
        run_to_end(self.command(args), &format!("podman {args:?}"))
    }

    /// Runs podman and panics with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        stdout_if_ok(self.run(args), &format!("podman {args:?}"))
    }

    /// A `{{…}}` field of `podman container inspect`, or `None` if there is no such container.
    pub fn inspect(&self, name: &str, field: &str) -> Option<String> {
        let out = self.run(&["container", "inspect", "--format", field, name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Builds (once per test run) [`BACKEND_IMAGE`]: the dynamically linked
    /// `test_backend` with the libraries `ldd` names, at their host paths,
    /// and busybox; returns the image name.
    pub fn backend_image(&self, test_backend: &Path) -> &'static str {
        static BUILT: OnceLock<()> = OnceLock::new();
        BUILT.get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("idlegate-backend-image-{}", std::process::id()));
            let tar = backend_rootfs(test_backend, &dir);
            self.import(&tar, "/test_backend", BACKEND_IMAGE);
            let _ = std::fs::remove_dir_all(&dir);
        });
        BACKEND_IMAGE
    }

    /// `podman import`s the tarball `tar` as `image`, whose command is `cmd`
    /// (see [`image_cmd`]).
    fn import(&self, tar: &Path, cmd: &str, image: &str) {
        self.ok(&[
            "import",
            "--quiet",
            "--change",
            &image_cmd(cmd),
            tar.to_str().unwrap(),
            image,
        ]);
    }

    fn build_image(&self, dir: &Path) {
        let tar = busybox_rootfs(dir);
        self.import(&tar, BUSYBOX_CMD, IMAGE);
        let _ = std::fs::remove_file(&tar);
    }
}

/// The command of [`IMAGE`]: busybox httpd serving [`PAGE`] on port 8080.
pub const BUSYBOX_CMD: &str = r#""/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www""#;

/// The `--change` of an import that sets the image's command to `cmd` (a
/// JSON array's inside, or one path).
pub fn image_cmd(cmd: &str) -> String {
    if cmd.starts_with('"') {
        format!("CMD [{cmd}]")
    } else {
        format!("CMD [\"{cmd}\"]")
    }
}

/// The host's static busybox.
fn busybox() -> &'static str {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is missing (apt-get install busybox-static)")
}

/// The tarball of [`IMAGE`]'s tree, made in `dir`: busybox at /bin/busybox
/// (and /bin/sh), [`PAGE`] at /www/index.html, `Healthy` at /www/health.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "www", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("www/index.html"), PAGE).unwrap();
    // What an app's health endpoint answers (the Docker guide's ready-cmd asks it).
    std::fs::write(root.join("www/health"), "Healthy").unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let tar = tar(&root, &dir.join("rootfs.tar"));
    let _ = std::fs::remove_dir_all(&root);
    tar
}

/// The tarball of [`BACKEND_IMAGE`]'s tree, made in `dir`: the dynamically
/// linked `test_backend` with the libraries `ldd` names, at their host
/// paths, and busybox.
pub fn backend_rootfs(test_backend: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(test_backend, root.join("test_backend")).unwrap();
    std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
    let ldd = Command::new("ldd").arg(test_backend).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let lib = Path::new(lib);
        let target = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(lib, target).unwrap();
    }
    tar(&root, &dir.join("rootfs.tar"))
}

/// `tar`s the tree at `root` into `tar`.
fn tar(root: &Path, tar: &Path) -> PathBuf {
    let status = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of {}", root.display());
    tar.to_owned()
}

/// A container name unique to this test run.
pub fn unique_name(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "idlegate-test-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container name that is removed (with its container) when dropped.
pub struct ContainerName<'a> {
    podman: &'a Podman,
    /// The name.
    pub name: String,
}

impl<'a> ContainerName<'a> {
    /// A fresh name; nothing is created yet.
    pub fn new(podman: &'a Podman, what: &str) -> Self {
        ContainerName {
            podman,
            name: unique_name(what),
        }
    }
}

impl Drop for ContainerName<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// `podman system service` on a private socket; stopped and reaped on drop.
pub struct EngineService {
    child: Child,
    /// The API socket.
    pub socket: PathBuf,
}

impl EngineService {
    /// Starts the service and waits until its socket answers `/_ping`.
    pub fn start(podman: &Podman, dir: &Path) -> EngineService {
        let socket = dir.join("podman.sock");
        let child = podman
            .command(&[
                "system",
                "service",
                "--time=0",
                &format!("unix://{}", socket.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start podman system service");
        let service = EngineService { child, socket };
        let deadline = Instant::now() + PATIENCE;
        while !service.pings() {
            assert!(
                Instant::now() < deadline,
                "the podman API socket never answered"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        service
    }

    fn pings(&self) -> bool {
        pings(&self.socket)
    }
}

/// Whether the engine API on `socket` answers `GET /_ping` with 200.
pub fn pings(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PATIENCE));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ")
}

impl Drop for EngineService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion (see [`wait_output`]), its output captured.
pub fn run_to_end(mut cmd: Command, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    wait_output(child, what)
}

/// `out`'s stdout; panics with its stderr unless it succeeded.
pub fn stdout_if_ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for `child`'s output, killing it after a deadline.
pub fn wait_output(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + PATIENCE * 4;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {:?}", PATIENCE * 4);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
