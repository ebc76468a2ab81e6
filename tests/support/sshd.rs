//! A private sshd on 127.0.0.1 for the `ssh://` engine tests (Debian's
//! openssh-server): its own host key, config and `authorized_keys` in the
//! test's directory, a key made for the test, and `SetEnv` giving every
//! session the private dockerd as `DOCKER_HOST` and Debian's docker CLI
//! first on `PATH`. idlegate runs `ssh` from its `PATH`: the test puts a
//! wrapper there that adds `-F` with the test's client config (ssh reads
//! `~/.ssh` from the password database, not `$HOME`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, wait_until, PATIENCE};

/// A running sshd, stopped and reaped when dropped.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// A directory holding an `ssh` wrapper that logs in with the test's key.
    pub with_key: PathBuf,
    /// A directory holding an `ssh` wrapper with no key (a password is all
    /// that is left).
    pub without_key: PathBuf,
    /// Where sshd logs.
    pub log: PathBuf,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen {}", path.display());
}

/// `dir/bin/ssh`: the system's ssh with the client config `config`.
fn wrapper(dir: &Path, config: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let config_file = dir.join("ssh_config");
    std::fs::write(&config_file, config).unwrap();
    let script = format!(
        "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
        config_file.display()
    );
    let ssh = bin.join("ssh");
    std::fs::write(&ssh, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

impl Sshd {
    /// Starts sshd under `dir`, its sessions' `DOCKER_HOST` being `docker_host`;
    /// `None` (test skipped) without sshd or root.
    pub fn start(dir: &Path, docker_host: &str) -> Option<Sshd> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !Path::new("/usr/sbin/sshd").exists() || !root {
            assert!(
                !std::env::var_os("IDLEGATE_REQUIRE_DOCKER").is_some_and(|v| v == "1"),
                "IDLEGATE_REQUIRE_DOCKER=1 but /usr/sbin/sshd is missing or this is not root \
                 (apt-get install openssh-server)"
            );
            eprintln!("sshd not installed (or not root): ssh engine test skipped");
            return None;
        }
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("id"));
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication yes\n\
             SetEnv DOCKER_HOST={docker_host} PATH=/usr/bin:/bin:/usr/sbin:/sbin\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let client = |identity: &str| {
            format!(
                "Host 127.0.0.1\n  IdentityFile {identity}\n  IdentitiesOnly yes\n  \
                 IdentityAgent none\n  UserKnownHostsFile {}/known_hosts\n  \
                 StrictHostKeyChecking accept-new\n  LogLevel ERROR\n",
                dir.display()
            )
        };
        let with_key = wrapper(&dir.join("key"), &client(&format!("{}/id", dir.display())));
        let without_key = wrapper(&dir.join("nokey"), &client("/nonexistent/id"));
        let log = dir.join("log");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sshd");
        let sshd = Sshd {
            child,
            port,
            with_key,
            without_key,
            log,
        };
        wait_until("sshd accepting", PATIENCE, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(sshd)
    }

    /// `PATH` for idlegate with the wrapper in `bin` first.
    pub fn path_with(bin: &Path) -> String {
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
