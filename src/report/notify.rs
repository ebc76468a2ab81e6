//! The systemd notification protocol (`sd_notify`): `READY=1`, `STATUS=…`,
//! `STOPPING=1`, sent as datagrams to `$NOTIFY_SOCKET`.
//!
//! Sending never blocks and never fails the caller: a service manager that is
//! gone or slow costs a dropped status line, nothing more.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Talks to the service manager, or does nothing when not run under one.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<UnixDatagram>,
    /// Where the service is: `STATUS=` lines go out only between `READY=1`
    /// and `STOPPING=1`, so that they neither precede the one nor bury the other.
    phase: tokio::sync::watch::Sender<Phase>,
}

/// Where the service is, as told to the service manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    Stopping,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            socket: None,
            phase: tokio::sync::watch::Sender::new(Phase::Starting),
        }
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// Connects to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for
    /// the abstract namespace); `None` means not run under a service manager.
    pub fn connect(notify_socket: Option<&std::ffi::OsStr>) -> io::Result<Self> {
        let Some(target) = notify_socket.filter(|t| !t.is_empty()) else {
            return Ok(Self::disabled());
        };
        let socket = UnixDatagram::unbound()?;
        let bytes = target.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.connect_addr(&addr)?;
        } else {
            socket.connect(Path::new(target))?;
        }
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket: Some(socket),
            ..Notifier::default()
        })
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    fn send(&self, message: &str) {
        if let Some(socket) = &self.socket {
            if let Err(e) = socket.send(message.as_bytes()) {
                tracing::debug!(target: "idlegate::notify", "sd_notify: cannot send {message:?}: {e}");
            }
        }
    }

    /// `READY=1`, with a first status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}\n", one_line(status)));
        self.phase.send_if_modified(|p| {
            let was = *p == Phase::Starting;
            if was {
                *p = Phase::Ready;
            }
            was
        });
    }

    /// `STATUS=…`: what `systemctl status` shows; only between `READY=1` and
    /// `STOPPING=1`.
    pub fn status(&self, status: &str) {
        if *self.phase.borrow() == Phase::Ready {
            self.send(&format!("STATUS={}\n", one_line(status)));
        }
    }

    /// `STOPPING=1`, with a last status line.
    pub fn stopping(&self, status: &str) {
        self.phase.send_replace(Phase::Stopping);
        self.send(&format!("STOPPING=1\nSTATUS={}\n", one_line(status)));
    }

    /// Returns once `READY=1` (or `STOPPING=1`) has been sent.
    pub async fn wait_ready(&self) {
        let mut phase = self.phase.subscribe();
        let _ = phase.wait_for(|p| *p != Phase::Starting).await;
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::connect(Some(path.as_os_str())).unwrap();
        assert!(notifier.is_enabled());
        notifier.ready("listening");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=listening\n");
    }

    #[test]
    fn absent_socket_means_disabled() {
        assert!(!Notifier::connect(None).unwrap().is_enabled());
        let n = Notifier::disabled();
        n.status("nothing happens");
    }
}
