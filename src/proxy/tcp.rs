//! TCP mode: hold the client until the backend is ready, connect upstream,
//! then copy bytes both ways with half-close passed through.
//!
//! Each client's first bytes are kept (up to [`REPLAY_MAX`]) until its
//! upstream connection sends its first byte, for two cases where an upstream
//! closes (or resets) before that without meaning it:
//! - until the backend has sent its first byte after a start, a rootless port
//!   forwarder (rootlessport, pasta, slirp4netns) may accept for an app that
//!   is not listening yet and then close: the upstream is connected again and
//!   the bytes replayed, until the client's start timeout;
//! - a client that connected just as the backend crashed reached the dying
//!   process's listener: once the backend is found dead (within
//!   [`DEATH_GRACE`]), the client is held for the restart and its bytes are
//!   replayed to the new backend, once (a request that itself kills the
//!   backend is not replayed again). An upstream that stays ready meant the
//!   close, and the client gets it.

use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{close_politely, connect_upstream, ConnectError, DEATH_GRACE};
use crate::address::Address;
use crate::backend::hold::Hold;
use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::net::Stream;
use crate::serve::work::Traffic;
use crate::wake::refused::HeldMode;

/// The most client bytes kept for a replay; past it the connection is copied as is.
pub const REPLAY_MAX: usize = 64 * 1024;

/// One TCP-mode client, with what serving it needs.
#[derive(Debug)]
pub struct TcpClient<'a> {
    /// Where it goes.
    pub upstream: &'a Address,
    /// The backend it waits for.
    pub backend: &'a Backend,
    /// `--connection-idle-timeout`, if set.
    pub quiet_limit: Option<Duration>,
    /// The PROXY protocol header to send first, if any.
    pub proxy_header: Option<&'a [u8]>,
    /// Who may wake the backend (`--wake-from`), and who woke it.
    pub wake: &'a crate::wake::WakeGate,
    /// The client.
    pub peer: crate::net::Peer,
    /// Where the bytes moved each way are counted, if anywhere.
    pub traffic: Option<&'a Traffic>,
}

impl TcpClient<'_> {
    /// Serves the client to the end: connect upstream (held until the
    /// backend is ready, within the start timeout), then copy both ways until
    /// both directions reached end-of-file. Returns `false` for a client
    /// turned away by `--wake-from` (it was not work).
    pub async fn serve(self, client: Stream) -> bool {
        if !self.backend.is_ready() && !self.wake.may_wake(self.peer) {
            self.wake.count_turned_away();
            tracing::debug!(
                "closing the client: the backend is not up, and the client is outside --wake-from"
            );
            close_politely(client).await;
            return false;
        }
        let hold = match self.backend.hold() {
            Ok(hold) => hold,
            Err(refused) => {
                self.wake.refused.refuse(HeldMode::Tcp, refused.max);
                tracing::debug!("closing the client: {refused}");
                close_politely(client).await;
                return false;
            }
        };
        if !self.backend.is_ready() {
            self.wake.waking(|| self.peer.to_string());
        }
        let unlisted = Traffic::default();
        let traffic = self.traffic.unwrap_or(&unlisted);
        self.forward(client, hold, traffic).await;
        true
    }

    /// Connects upstream (held until the backend is ready), then copies both ways.
    async fn forward(&self, mut client: Stream, hold: Option<Hold>, traffic: &Traffic) {
        let deadline = Instant::now() + self.backend.start_timeout();
        let connected = match self.connect_held(&client, hold, deadline).await {
            Ok(up) => {
                self.first_byte(
                    &mut client,
                    up,
                    Replay::new(self.backend, deadline),
                    traffic,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let mut up = match connected {
            Ok((mut up, true)) => {
                // The client already finished sending (and the upstream was told):
                // only the answer is left to copy.
                if let Ok(n) = tokio::io::copy(&mut up, &mut client).await {
                    traffic.to_client(n);
                }
                let _ = client.shutdown().await;
                return;
            }
            Ok((up, false)) => up,
            Err(ConnectError::Quiet(quiet)) => {
                log_quiet(quiet);
                close_politely(client).await;
                return;
            }
            Err(e) => {
                tracing::warn!("closing the client: {e}");
                close_politely(client).await;
                return;
            }
        };
        let upstream = self.upstream;
        match super::copy::bidirectional(&mut client, &mut up, self.quiet_limit, traffic).await {
            Ok((sent, received)) => {
                tracing::debug!(
                    "done: after the first answer, {sent} bytes to {upstream} and {received} back"
                )
            }
            Err(e) => match e
                .get_ref()
                .and_then(|e| e.downcast_ref::<super::copy::Quiet>())
            {
                Some(quiet) => log_quiet(quiet.0),
                None => tracing::debug!("ended: {e}"),
            },
        }
    }

    /// [`TcpClient::connect`] for a client held for the start (`hold`,
    /// until connected): one that closes meanwhile no longer counts as
    /// waiting (see `--cancel-abandoned-start`), and is still served if the
    /// start goes on, as it may only have closed its sending side.
    async fn connect_held(
        &self,
        client: &Stream,
        hold: Option<Hold>,
        deadline: Instant,
    ) -> Result<Stream, ConnectError> {
        let connect = self.connect(deadline);
        tokio::pin!(connect);
        let Some(mut hold) = hold else {
            return connect.await;
        };
        tokio::select! {
            up = &mut connect => return up,
            () = client.closed_by_peer() => {
                hold.client_left();
                tracing::debug!("the client closed while held for the start");
            }
        }
        connect.await
    }

    /// Connects to the upstream (held until the backend is ready) and sends the
    /// PROXY protocol header first, if there is one.
    async fn connect(&self, deadline: Instant) -> Result<Stream, ConnectError> {
        let mut up = connect_upstream(self.backend, self.upstream, deadline).await?;
        if let Some(header) = self.proxy_header {
            up.write_all(header)
                .await
                .map_err(|source| ConnectError::Upstream {
                    upstream: self.upstream.clone(),
                    source,
                })?;
        }
        Ok(up)
    }

    /// Forwards the client's bytes, keeping a copy, until the upstream sends its
    /// first byte (forwarded too); an upstream that closes before that is
    /// connected again and the copy replayed. Returns the upstream that answered,
    /// and whether the client has already finished sending.
    /// `--connection-idle-timeout` applies here too, counted from the upstream
    /// connect and from each byte of the client's.
    async fn first_byte(
        &self,
        client: &mut Stream,
        mut up: Stream,
        mut replay: Replay,
        traffic: &Traffic,
    ) -> Result<(Stream, bool), ConnectError> {
        // Small: every connection passes here once (the copy after it has
        // a stack buffer of its own), and more bytes just take more reads.
        let mut buf = vec![0u8; 4 * 1024];
        let mut first = vec![0u8; 2 * 1024];
        let mut moved = Instant::now();
        loop {
            let quiet_until = self.quiet_limit.map(|limit| moved + limit);
            tokio::select! {
                read = client.read(&mut buf), if !replay.client_done => match read {
                    Ok(0) | Err(_) => {
                        replay.client_done = true;
                        let _ = up.shutdown().await;
                    }
                    Ok(n) => {
                        moved = Instant::now();
                        traffic.from_client(n as u64);
                        let kept = replay.keep(&buf[..n]);
                        let _ = up.write_all(&buf[..n]).await;
                        if !kept {
                            // Too much to keep: no replay for this one, copy as is.
                            return Ok((up, false));
                        }
                    }
                },
                read = up.read(&mut first) => match read {
                    Ok(n) if n > 0 => {
                        self.backend.mark_answered();
                        traffic.to_client(n as u64);
                        let _ = client.write_all(&first[..n]).await;
                        return Ok((up, replay.client_done));
                    }
                    _ => match self.reconnect(&mut replay).await? {
                        Some(fresh) => {
                            up = fresh;
                            moved = Instant::now();
                            replay.resend(&mut up).await;
                        }
                        None => return Ok((up, replay.client_done)),
                    },
                },
                _ = sleep_until(quiet_until) => {
                    return Err(ConnectError::Quiet(self.quiet_limit.unwrap_or_default()));
                }
            }
        }
    }

    /// After the upstream closed before its first byte: a new upstream
    /// connection to replay the kept bytes to, or none when the close is the
    /// client's to get.
    async fn reconnect(&self, replay: &mut Replay) -> Result<Option<Stream>, ConnectError> {
        let upstream = self.upstream;
        if replay.client_done && replay.kept.is_empty() {
            // Nothing sent and nothing to replay: an ordinary close.
            return Ok(None);
        }
        if self.backend.has_answered() {
            // A warm backend that closed without a word meant
            // it, unless it is found dead (replayed once).
            if replay.replayed_after_death
                || !self
                    .backend
                    .left_ready(replay.generation, DEATH_GRACE)
                    .await
            {
                return Ok(None);
            }
        } else {
            // Starting up: a port forwarder's close, retried.
            let delay = replay.backoff.next_delay();
            if Instant::now() + delay >= replay.deadline {
                return Err(ConnectError::Closing {
                    upstream: upstream.clone(),
                });
            }
            tracing::debug!(
                "{upstream} closed before answering; connecting again to replay {} bytes",
                replay.kept.len()
            );
            tokio::time::sleep(delay).await;
        }
        let fresh = self.connect(replay.deadline).await?;
        if self.backend.generation() != replay.generation {
            // The backend was started again meanwhile: it died
            // under this client. Bytes that killed it twice
            // are not replayed again: the client gets the close.
            if replay.replayed_after_death {
                return Ok(None);
            }
            replay.replayed_after_death = true;
            tracing::info!(
                "the backend died as the client reached it; replaying its first {} bytes to the restarted backend",
                replay.kept.len()
            );
        }
        replay.generation = self.backend.generation();
        Ok(Some(fresh))
    }
}

fn log_quiet(quiet: Duration) {
    tracing::info!(
        "closing the connection: no bytes either way for {} (--connection-idle-timeout)",
        humantime::format_duration(quiet)
    );
}

/// A client's first bytes, kept until the upstream sends its first byte, and
/// how connecting again to replay them has gone.
struct Replay {
    /// The client's bytes so far, up to [`REPLAY_MAX`].
    kept: Vec<u8>,
    /// Whether the client has finished sending.
    client_done: bool,
    /// The delays between connects while the backend starts.
    backoff: Backoff,
    /// The backend's start the upstream connection reached.
    generation: u64,
    /// Whether the bytes went to a restarted backend already (once only).
    replayed_after_death: bool,
    /// The client's start timeout.
    deadline: Instant,
}

impl Replay {
    fn new(backend: &Backend, deadline: Instant) -> Replay {
        Replay {
            kept: Vec::new(),
            client_done: false,
            backoff: Backoff::probe(),
            generation: backend.generation(),
            replayed_after_death: false,
            deadline,
        }
    }

    /// Keeps `bytes` for a replay; false when that would pass [`REPLAY_MAX`]
    /// (none are kept then: the connection is copied as is).
    fn keep(&mut self, bytes: &[u8]) -> bool {
        if self.kept.len() + bytes.len() > REPLAY_MAX {
            return false;
        }
        self.kept.extend_from_slice(bytes);
        true
    }

    /// Sends the kept bytes to a new upstream connection, and the client's
    /// end-of-file if it came.
    async fn resend(&self, up: &mut Stream) {
        if !self.kept.is_empty() {
            let _ = up.write_all(&self.kept).await;
        }
        if self.client_done {
            let _ = up.shutdown().await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
