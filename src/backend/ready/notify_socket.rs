//! `--ready-notify`: a `NOTIFY_SOCKET` of idlegate's own for the backend
//! command, so a server that speaks sd_notify (PostgreSQL, `redis-server
//! --supervised systemd`, `podman run --sdnotify=container`) says itself when
//! it serves: its `READY=1` is the readiness, its `STATUS=` text is shown in
//! idlegate's status while it starts.
//!
//! The socket is a datagram socket at a path (conmon, which relays a
//! container's `READY=1`, cannot send to an abstract `@name`), with a random
//! name in the runtime or temporary directory, writable by every user (a
//! backend may run as another user: `setpriv --reuid=postgres`), removed when
//! the start is over. Like `NotifyAccess=all`, any process that finds it can
//! send to it.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixDatagram;
use tokio::sync::watch;

/// The backend's own status text (`STATUS=`), while it starts.
pub type BackendStatus = watch::Sender<Option<Arc<str>>>;

/// A bound notify socket, waiting for the backend's messages; its file is
/// removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds a fresh socket with a name of its own in `dir`.
    pub fn bind(dir: &Path) -> io::Result<NotifySocket> {
        use std::os::unix::fs::PermissionsExt;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let path = dir.join(format!(
            "idlegate-{}-{random:016x}.notify",
            std::process::id()
        ));
        let socket = std::os::unix::net::UnixDatagram::bind(&path)?;
        // From here on the file is removed on drop, whatever fails next.
        let this = NotifySocket {
            socket: {
                socket.set_nonblocking(true)?;
                UnixDatagram::from_std(socket)?
            },
            path,
        };
        std::fs::set_permissions(&this.path, std::fs::Permissions::from_mode(0o666))?;
        Ok(this)
    }

    /// The value of `NOTIFY_SOCKET` for the backend.
    pub fn env_value(&self) -> String {
        self.path.display().to_string()
    }

    /// Waits for `READY=1`; every `STATUS=` before it goes to `status`.
    pub async fn wait_ready(&self, status: &BackendStatus) -> io::Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).await?;
            if take_message(&String::from_utf8_lossy(&buf[..n]), status) {
                return Ok(());
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one sd_notify message; whether it says `READY=1`.
fn take_message(message: &str, status: &BackendStatus) -> bool {
    let mut ready = false;
    for line in message.lines() {
        if line == "READY=1" {
            ready = true;
        } else if let Some(text) = line.strip_prefix("STATUS=") {
            tracing::debug!(target: "idlegate::backend::notify_socket", "backend status: {text}");
            status.send_replace(Some(text.into()));
        }
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_and_status_arrive_through_the_socket_which_is_removed_after() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let socket = NotifySocket::bind(dir.path()).unwrap();
        let path = PathBuf::from(socket.env_value());
        assert!(path.starts_with(dir.path()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666, "writable by a backend of another user");
        let (status, mut seen) = watch::channel(None);
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender
            .send_to(b"STATUS=loading 10%\nMAINPID=1\n", &path)
            .unwrap();
        sender.send_to(b"STATUS=loading 90%", &path).unwrap();
        sender.send_to(b"READY=1\nSTATUS=ready", &path).unwrap();
        socket.wait_ready(&status).await.unwrap();
        assert_eq!(seen.borrow_and_update().as_deref(), Some("ready"));
        drop(socket);
        assert!(!path.exists(), "removed");
    }

    #[test]
    fn a_message_without_ready_is_only_status() {
        let (status, seen) = watch::channel(None);
        assert!(!take_message("STATUS=starting up\nRELOADING=0", &status));
        assert_eq!(seen.borrow().as_deref(), Some("starting up"));
        assert!(take_message("READY=1", &status));
    }
}
