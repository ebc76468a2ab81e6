//! A Unix socket idlegate binds itself beside its state file while it runs
//! (the list of work's, and the control socket's when systemd passes none),
//! mode 0600 (the service's user and root), removed when it exits.
//!
//! Unlike the sockets systemd holds, such a socket exists only while
//! idlegate runs: a client finds nothing there (or, after a run that was
//! killed, a socket nobody answers on) and knows idlegate is not running.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// `state_file`'s path with `suffix` added (`idlegate.state.control`).
pub fn beside(state_file: &Path, suffix: &str) -> PathBuf {
    let mut path = state_file.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// A socket file idlegate bound, removed when this drops (if it is still
/// the one bound).
#[derive(Debug)]
pub struct OwnSocket {
    path: PathBuf,
    /// The socket file's device and inode: what is removed is ours.
    identity: (u64, u64),
}

impl OwnSocket {
    /// Binds a listening socket at `path`, mode 0600, replacing a socket a
    /// killed run left there (nobody answers on it). A socket somebody
    /// answers on is another running idlegate's: `AddrInUse`, left alone.
    pub fn bind(path: &Path) -> io::Result<(OwnSocket, UnixListener)> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another idlegate with this state file answers there",
                    ));
                }
                std::fs::remove_file(path)?
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ))
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let meta = std::fs::symlink_metadata(path)?;
        let own = OwnSocket {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        };
        Ok((own, listener))
    }
}

/// Dropped, it removes the socket file, if it is still the one bound.
impl Drop for OwnSocket {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
