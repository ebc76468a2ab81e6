//! The `ssh://` engines: the system's `ssh` as a child per API connection,
//! with `BatchMode=yes` (it never asks for a password) and whatever the
//! user's ssh config, keys and known_hosts say.
//!
//! - Without a path, `ssh HOST docker system dial-stdio`, as the docker CLI
//!   does: the child's stdin and stdout are the stream.
//! - With one (`ssh://core@nas/run/podman/podman.sock`), `ssh -N -L
//!   LOCAL:PATH HOST`: OpenSSH's stream-local forwarding, the channel
//!   (`direct-streamlocal`) podman's remote connections open, to a socket
//!   of idlegate's own in a private temporary directory; the stream is a
//!   connection to it. It needs nothing on the host but sshd (`ssh -W` takes
//!   no socket path, and `socat` or `nc -U` are not always there).
//!
//! The child is killed when the stream is dropped (tokio reaps it).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// An ssh child carrying one connection to the engine.
pub(super) enum SshConnection {
    /// `docker system dial-stdio`: the child's stdin and stdout.
    Pipes(Box<SshPipes>),
    /// A connection to the child's forwarding socket; `keep` (the child and
    /// the socket's directory) lives as long as it.
    Forwarded {
        /// The connection.
        stream: UnixStream,
        /// What must outlive it.
        keep: Box<dyn Send + Sync>,
    },
}

/// An ssh child and its pipes.
pub(super) struct SshPipes {
    /// Killed when the stream is dropped (tokio reaps it).
    pub(super) _child: Child,
    /// The child's stdin: what idlegate writes.
    pub(super) stdin: ChildStdin,
    /// The child's stdout: what idlegate reads.
    pub(super) stdout: ChildStdout,
}

/// Why ssh gave no connection.
#[derive(Debug)]
pub(super) enum SshError {
    /// `ssh` could not be started.
    Spawn(io::Error),
    /// The host could not be reached (or no login within `timeout`).
    Unreachable(io::Error),
    /// ssh gave up and said why.
    Exited(String),
}

/// A connection through ssh to `[user@]host[:port]`: to `socket` on the
/// host if given, else to `docker system dial-stdio` there.
pub(super) async fn connect(
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    socket: Option<&Path>,
    timeout: Duration,
) -> Result<(SshConnection, SshSaid), SshError> {
    let mut cmd = Command::new("ssh");
    cmd.args(["-o", "BatchMode=yes", "-T"]);
    if let Some(port) = port {
        cmd.arg("-p").arg(port.to_string());
    }
    let forward = match socket {
        Some(remote) => {
            let dir = PrivateDir::new().map_err(SshError::Spawn)?;
            let local = dir.0.join("engine.sock");
            cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
                .arg(format!("{}:{}", local.display(), remote.display()));
            Some((dir, local))
        }
        None => None,
    };
    cmd.arg("--").arg(match user {
        Some(user) => format!("{user}@{host}"),
        None => host.to_owned(),
    });
    if forward.is_none() {
        cmd.args(["docker", "system", "dial-stdio"]);
    }
    let pipe = || match forward {
        None => Stdio::piped(),
        Some(_) => Stdio::null(),
    };
    cmd.stdin(pipe())
        .stdout(pipe())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(SshError::Spawn)?;
    let said = SshSaid::listen(&mut child);
    let connection = match forward {
        None => {
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            SshConnection::Pipes(Box::new(SshPipes {
                _child: child,
                stdin,
                stdout,
            }))
        }
        Some((dir, local)) => {
            let stream = forwarded(&mut child, &local, &said, timeout).await?;
            let keep: Box<dyn Send + Sync> = Box::new((Mutex::new(child), dir));
            SshConnection::Forwarded { stream, keep }
        }
    };
    Ok((connection, said))
}

/// A connection to ssh's forwarding socket `local`, once ssh has logged in
/// and made it; ssh's complaint if it exits first.
async fn forwarded(
    child: &mut Child,
    local: &Path,
    said: &SshSaid,
    timeout: Duration,
) -> Result<UnixStream, SshError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(stream) = UnixStream::connect(local).await {
            return Ok(stream);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let reason = said.text().await.unwrap_or_else(|| status.to_string());
            if host_unreachable(&reason) {
                return Err(SshError::Unreachable(io::Error::other(reason)));
            }
            return Err(SshError::Exited(explain(String::new(), Some(reason))));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(SshError::Unreachable(io::ErrorKind::TimedOut.into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A directory only this user can enter, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("idlegate-ssh-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What ssh wrote on its stderr, once it closed it.
#[derive(Clone, Debug, Default)]
pub struct SshSaid {
    text: Arc<Mutex<Option<String>>>,
    done: Arc<tokio::sync::Notify>,
}

impl SshSaid {
    /// Collects `child`'s stderr in the background.
    fn listen(child: &mut Child) -> SshSaid {
        let said = SshSaid::default();
        if let Some(mut stderr) = child.stderr.take() {
            let said = said.clone();
            tokio::spawn(async move {
                let mut text = Vec::new();
                let _ = stderr.read_to_end(&mut text).await;
                *said.text.lock().expect("not poisoned") =
                    Some(String::from_utf8_lossy(&text).into());
                said.done.notify_waiters();
            });
        }
        said
    }

    /// ssh's complaint (its stderr, trimmed), waiting a little for it to
    /// end; `None` if it said nothing.
    pub async fn text(&self) -> Option<String> {
        let notified = self.done.notified();
        let ready = self.text.lock().expect("not poisoned").is_some();
        if !ready {
            let _ = tokio::time::timeout(Duration::from_secs(3), notified).await;
        }
        let text = self.text.lock().expect("not poisoned").clone()?;
        let text = text.trim().replace('\n', "; ");
        (!text.is_empty()).then_some(text)
    }
}

/// Whether ssh could not reach the host at all (`ssh: connect to host nas
/// port 22: No route to host`), rather than being refused by it.
pub(super) fn host_unreachable(said: &str) -> bool {
    said.contains("connect to host")
}

/// A failed exchange over ssh (`reason`, may be empty), with what ssh said;
/// a login refused under `BatchMode=yes` says why no password was tried.
pub(super) fn explain(reason: String, said: Option<String>) -> String {
    let Some(said) = said else { return reason };
    let hint = if said.contains("Permission denied") || said.contains("password") {
        " (ssh runs with BatchMode=yes and cannot answer a password prompt: \
         give the key in ~/.ssh/config or an ssh-agent)"
    } else {
        ""
    };
    if reason.is_empty() {
        format!("ssh said: {said}{hint}")
    } else {
        format!("{reason}; ssh said: {said}{hint}")
    }
}
