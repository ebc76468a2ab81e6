//! The connections socket: how `idlegate status --connections` asks a
//! running idlegate for its list of work without waking anything.
//!
//! idlegate binds it itself, beside its state file (`STATE_FILE.connections`),
//! while it runs, and removes it when it exits: a stopped idlegate has no
//! socket there, so asking finds nothing to connect to and starts nothing
//! (unlike the proxied and control sockets, which systemd holds). Each
//! client gets one JSON document, [`Listing`], and the close; nothing it
//! sends is read. The socket is mode 0600: the service's user and root.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::own_socket::{self, OwnSocket};
use crate::serve::activity::InFlight;
use crate::serve::work::WorkView;

/// How long `status` waits for the answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer `status` reads.
const ANSWER_MAX: u64 = 64 * 1024 * 1024;

/// What the socket answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The answering idlegate's process id.
    pub pid: u32,
    /// Each unit of work in flight, the oldest first.
    pub work: Vec<WorkView>,
}

/// The connections socket of the state file at `state_file`.
pub fn path_for(state_file: &Path) -> PathBuf {
    own_socket::beside(state_file, ".connections")
}

/// The socket while it is served; [`Served::close`] removes it.
#[derive(Debug)]
pub struct Served {
    /// Removed when dropped.
    socket: OwnSocket,
    task: JoinHandle<()>,
}

impl Served {
    /// Binds the socket beside `state_file` (replacing a socket a killed
    /// run left there, which nobody answers on) and answers with
    /// `in_flight`'s list until closed.
    pub fn open(state_file: &Path, in_flight: InFlight) -> io::Result<Served> {
        let (socket, listener) = OwnSocket::bind(&path_for(state_file))?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let task = tokio::spawn(answer(listener, in_flight));
        Ok(Served { socket, task })
    }

    /// Stops answering and removes the socket (if it is still ours).
    pub fn close(self) {
        self.task.abort();
        drop(self.socket);
    }
}

async fn answer(listener: UnixListener, in_flight: InFlight) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let listing = Listing {
            pid: std::process::id(),
            work: in_flight.views(),
        };
        tokio::spawn(async move {
            let Ok(mut json) = serde_json::to_vec(&listing) else {
                return;
            };
            json.push(b'\n');
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, stream.write_all(&json)).await;
        });
    }
}

/// Asks the idlegate whose state file is `state_file` for its list of work.
pub fn fetch(state_file: &Path) -> Result<Listing, String> {
    let path = path_for(state_file);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let read = async {
            let stream = tokio::net::UnixStream::connect(&path).await?;
            let mut text = Vec::new();
            stream.take(ANSWER_MAX).read_to_end(&mut text).await?;
            Ok::<_, io::Error>(text)
        };
        let text = match tokio::time::timeout(ANSWER_TIMEOUT, read).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => return Err(format!("{}: {e}", path.display())),
            Err(_) => return Err(format!("{}: no answer within 5s", path.display())),
        };
        serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a list of work: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Peer;
    use crate::serve::work::Unit;

    #[test]
    fn the_socket_lists_the_work_and_goes_away_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("idlegate.state");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let in_flight = InFlight::listed();
        let _guard = in_flight.enter_as(Unit::Connection {
            client: Peer::Tcp("127.0.0.1:4000".parse().unwrap()),
        });
        // A socket a killed run left behind is replaced.
        drop(std::os::unix::net::UnixListener::bind(path_for(&state)).unwrap());
        let served = runtime
            .block_on(async { Served::open(&state, in_flight.clone()) })
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path_for(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let listing = fetch(&state).unwrap();
        assert_eq!(listing.pid, std::process::id());
        assert_eq!(listing.work.len(), 1);
        assert_eq!(listing.work[0].client.as_deref(), Some("127.0.0.1:4000"));
        // A second instance with the same state file leaves it alone.
        let second = runtime.block_on(async { Served::open(&state, InFlight::listed()) });
        assert_eq!(second.unwrap_err().kind(), io::ErrorKind::AddrInUse);
        assert_eq!(fetch(&state).unwrap().work.len(), 1);
        runtime.block_on(async { served.close() });
        assert!(!path_for(&state).exists());
        assert!(fetch(&state).is_err());
    }
}
