//! `--ready-notify`: a `NOTIFY_SOCKET` of idlegate's own for the backend
//! command, so a server that speaks sd_notify (PostgreSQL, `redis-server
//! --supervised systemd`, `podman run --sdnotify=container`) says itself when
//! it serves: its `READY=1` is the readiness, its `STATUS=` text is shown in
//! idlegate's status while it starts.
//!
//! The socket is a datagram socket in the abstract namespace (`@name`, as
//! systemd's `sd_notify` reads it): no file to place, own or clean up, and
//! reachable by a backend that runs as another user (`runuser -u postgres`).
//! The name has 64 random bits; a process that reads the names in
//! `/proc/net/unix` can still send to it, as with `NotifyAccess=all`.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::Arc;

use tokio::net::UnixDatagram;
use tokio::sync::watch;

/// The backend's own status text (`STATUS=`), while it starts.
pub type BackendStatus = watch::Sender<Option<Arc<str>>>;

/// A bound notify socket, waiting for the backend's messages.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    name: String,
}

impl NotifySocket {
    /// Binds a fresh socket with a name of its own.
    pub fn bind() -> io::Result<NotifySocket> {
        use std::os::linux::net::SocketAddrExt;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!("idlegate/{}/notify/{random:016x}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        socket.set_nonblocking(true)?;
        Ok(NotifySocket {
            socket: UnixDatagram::from_std(socket)?,
            name,
        })
    }

    /// The value of `NOTIFY_SOCKET` for the backend.
    pub fn env_value(&self) -> String {
        format!("@{}", self.name)
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

/// Reads one sd_notify message; whether it says `READY=1`.
fn take_message(message: &str, status: &BackendStatus) -> bool {
    let mut ready = false;
    for line in message.lines() {
        if line == "READY=1" {
            ready = true;
        } else if let Some(text) = line.strip_prefix("STATUS=") {
            tracing::debug!("backend status: {text}");
            status.send_replace(Some(text.into()));
        }
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_and_status_arrive_through_the_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let socket = NotifySocket::bind().unwrap();
        let value = socket.env_value();
        let name = value.strip_prefix('@').unwrap();
        let (status, mut seen) = watch::channel(None);
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        sender
            .send_to_addr(b"STATUS=loading 10%\nMAINPID=1\n", &addr)
            .unwrap();
        sender.send_to_addr(b"STATUS=loading 90%", &addr).unwrap();
        sender
            .send_to_addr(b"READY=1\nSTATUS=ready", &addr)
            .unwrap();
        socket.wait_ready(&status).await.unwrap();
        assert_eq!(seen.borrow_and_update().as_deref(), Some("ready"));
    }

    #[test]
    fn a_message_without_ready_is_only_status() {
        let (status, seen) = watch::channel(None);
        assert!(!take_message("STATUS=starting up\nRELOADING=0", &status));
        assert_eq!(seen.borrow().as_deref(), Some("starting up"));
        assert!(take_message("READY=1", &status));
    }
}
