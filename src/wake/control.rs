//! The control socket: how the backend's side holds the service awake.
//!
//! A unit passes a Unix stream socket named `control`
//! (`FileDescriptorName=control` on a socket unit of the service's), which
//! systemd holds like the others: connecting to it starts a stopped
//! idlegate. `idlegate inhibit` connects and sends one line, `inhibit WHY`;
//! idlegate counts the connection as one unit of work, starts the backend,
//! answers `ready` (or `failed: REASON`) once it is ready, and holds it
//! until the connection closes: when the command `inhibit` ran ends, or when
//! `inhibit` dies, even by SIGKILL (the kernel closes its socket).
//!
//! Without one passed (`--listen`, or a unit with no control socket), an
//! idlegate with a state file binds its own beside it ([`own_path`], see
//! [`crate::own_socket`]) while it runs, so `inhibit` reaches it; when it
//! does not run, nothing answers there, and `inhibit` says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::serve::context::ServeContext;
use crate::serve::work::Unit;

/// The control socket an idlegate with the state file `state_file` binds
/// itself when none is passed: `STATE_FILE.control`.
pub fn own_path(state_file: &Path) -> PathBuf {
    crate::own_socket::beside(state_file, ".control")
}

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request line.
const REQUEST_MAX: u64 = 1024;

/// Serves the control socket for as long as the run lasts.
pub async fn serve(listener: UnixListener, shared: ServeContext) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(hold(stream, shared.clone()));
            }
            Err(e) => {
                tracing::debug!(target: "idlegate", "control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One `inhibit` client: work while its connection is open.
async fn hold(stream: UnixStream, shared: ServeContext) {
    let who = match stream.peer_cred() {
        Ok(cred) => match cred.pid() {
            Some(pid) => format!("pid {pid} (uid {})", cred.uid()),
            None => format!("uid {}", cred.uid()),
        },
        Err(_) => "a client".to_owned(),
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(REQUEST_MAX));
    let mut line = String::new();
    let request = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let why = match (request, line.trim_end().strip_prefix("inhibit")) {
        (Ok(Ok(n)), Some(rest)) if n > 0 && (rest.is_empty() || rest.starts_with(' ')) => {
            rest.trim().to_owned()
        }
        _ => {
            let _ = write
                .write_all(b"error: expected the line: inhibit WHY\n")
                .await;
            return;
        }
    };
    let why = if why.is_empty() {
        "no reason given".to_owned()
    } else {
        why
    };
    tracing::info!(target: "idlegate", "inhibited by {who}: {why}");
    let work = shared.in_flight.enter_as(Unit::Inhibitor {
        who: who.clone(),
        why: why.clone(),
    });
    let deadline = tokio::time::Instant::now() + shared.backend.start_timeout();
    // It waits for the start: one nobody else waits for goes on for it.
    let watching = shared.backend.watch_start();
    let answer = match shared.backend.wait_ready(deadline).await {
        Ok(()) => "ready\n".to_owned(),
        Err(e) => format!("failed: {e}\n"),
    };
    drop(watching);
    if write.write_all(answer.as_bytes()).await.is_err() || answer != "ready\n" {
        return;
    }
    // Held until the client closes (or dies), or idlegate stops.
    let mut reader = reader.into_inner().into_inner();
    let mut sink = [0u8; 64];
    tokio::select! {
        _ = async { while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {} } => {}
        _ = shared.close.cancelled() => {}
    }
    drop(work);
    tracing::info!(target: "idlegate", "inhibitor released: {who}: {why}");
}
