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
use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::net::Stream;
use crate::serve::work::Traffic;

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
        serve(client, self).await
    }
}

async fn serve(client: Stream, c: TcpClient<'_>) -> bool {
    let TcpClient {
        upstream,
        backend,
        quiet_limit,
        proxy_header,
        wake,
        peer,
        traffic,
    } = c;
    if !backend.is_ready() && !wake.may_wake(peer) {
        wake.count_turned_away();
        tracing::debug!(
            "closing the client: the backend is not up, and the client is outside --wake-from"
        );
        close_politely(client).await;
        return false;
    }
    if !backend.is_ready() {
        wake.waking(|| peer.to_string());
    }
    let unlisted = Traffic::default();
    let traffic = traffic.unwrap_or(&unlisted);
    forward(
        client,
        upstream,
        backend,
        quiet_limit,
        proxy_header,
        traffic,
    )
    .await;
    true
}

/// Connects upstream (held until the backend is ready), then copies both ways.
async fn forward(
    mut client: Stream,
    upstream: &Address,
    backend: &Backend,
    quiet_limit: Option<Duration>,
    proxy_header: Option<&[u8]>,
    traffic: &Traffic,
) {
    let start_timeout = backend.start_timeout();
    let deadline = Instant::now() + start_timeout;
    let connected = match connect(backend, upstream, deadline, proxy_header).await {
        Ok(up) => {
            let first = FirstByte {
                upstream,
                backend,
                deadline,
                proxy_header,
                quiet_limit,
                traffic,
            };
            first.wait(&mut client, up).await
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
    match super::copy::bidirectional(&mut client, &mut up, quiet_limit, traffic).await {
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

/// Connects to the upstream (held until the backend is ready) and sends the
/// PROXY protocol header first, if there is one.
async fn connect(
    backend: &Backend,
    upstream: &Address,
    deadline: Instant,
    proxy_header: Option<&[u8]>,
) -> Result<Stream, ConnectError> {
    let mut up = connect_upstream(backend, upstream, deadline).await?;
    if let Some(header) = proxy_header {
        up.write_all(header)
            .await
            .map_err(|source| ConnectError::Upstream {
                upstream: upstream.clone(),
                source,
            })?;
    }
    Ok(up)
}

fn log_quiet(quiet: Duration) {
    tracing::info!(
        "closing the connection: no bytes either way for {} (--connection-idle-timeout)",
        humantime::format_duration(quiet)
    );
}

/// What the wait for the upstream's first byte needs.
struct FirstByte<'a> {
    upstream: &'a Address,
    backend: &'a Backend,
    deadline: Instant,
    proxy_header: Option<&'a [u8]>,
    /// `--connection-idle-timeout`: it applies here too, counted from the
    /// upstream connect and from each byte of the client's.
    quiet_limit: Option<Duration>,
    /// Where the bytes moved are counted.
    traffic: &'a Traffic,
}

impl FirstByte<'_> {
    /// Forwards the client's bytes, keeping a copy, until the upstream sends its
    /// first byte (forwarded too); an upstream that closes before that is
    /// connected again and the copy replayed. Returns the upstream that answered,
    /// and whether the client has already finished sending.
    async fn wait(
        &self,
        client: &mut Stream,
        mut up: Stream,
    ) -> Result<(Stream, bool), ConnectError> {
        let upstream = self.upstream;
        let mut kept: Vec<u8> = Vec::new();
        let mut client_done = false;
        // Small: every connection passes here once (the copy after it has
        // a stack buffer of its own), and more bytes just take more reads.
        let mut buf = vec![0u8; 4 * 1024];
        let mut first = vec![0u8; 2 * 1024];
        let mut backoff = Backoff::probe();
        let mut moved = Instant::now();
        let mut generation = self.backend.generation();
        let mut replayed_after_death = false;
        loop {
            let quiet_until = self.quiet_limit.map(|limit| moved + limit);
            tokio::select! {
                read = client.read(&mut buf), if !client_done => match read {
                    Ok(0) | Err(_) => {
                        client_done = true;
                        let _ = up.shutdown().await;
                    }
                    Ok(n) => {
                        moved = Instant::now();
                        self.traffic.from_client(n as u64);
                        if kept.len() + n > REPLAY_MAX {
                            // Too much to keep: no replay for this one, copy as is.
                            let _ = up.write_all(&buf[..n]).await;
                            return Ok((up, false));
                        }
                        kept.extend_from_slice(&buf[..n]);
                        let _ = up.write_all(&buf[..n]).await;
                    }
                },
                read = up.read(&mut first) => match read {
                    Ok(n) if n > 0 => {
                        self.backend.mark_answered();
                        self.traffic.to_client(n as u64);
                        let _ = client.write_all(&first[..n]).await;
                        return Ok((up, client_done));
                    }
                    _ if client_done && kept.is_empty() => {
                        // Nothing sent and nothing to replay: an ordinary close.
                        return Ok((up, true));
                    }
                    _ => {
                        if self.backend.has_answered() {
                            // A warm backend that closed without a word meant
                            // it, unless it is found dead (replayed once).
                            if replayed_after_death
                                || !self.backend.left_ready(generation, DEATH_GRACE).await
                            {
                                return Ok((up, client_done));
                            }
                        } else {
                            // Starting up: a port forwarder's close, retried.
                            let delay = backoff.next_delay();
                            if Instant::now() + delay >= self.deadline {
                                return Err(ConnectError::Closing { upstream: upstream.clone() });
                            }
                            tracing::debug!("{upstream} closed before answering; connecting again to replay {} bytes", kept.len());
                            tokio::time::sleep(delay).await;
                        }
                        let fresh = connect(self.backend, upstream, self.deadline, self.proxy_header).await?;
                        if self.backend.generation() != generation {
                            // The backend was started again meanwhile: it died
                            // under this client. Bytes that killed it twice
                            // are not replayed again: the client gets the close.
                            if replayed_after_death {
                                return Ok((up, client_done));
                            }
                            replayed_after_death = true;
                            tracing::info!(
                                "the backend died as the client reached it; replaying its first {} bytes to the restarted backend",
                                kept.len()
                            );
                        }
                        generation = self.backend.generation();
                        up = fresh;
                        moved = Instant::now();
                        if !kept.is_empty() {
                            let _ = up.write_all(&kept).await;
                        }
                        if client_done {
                            let _ = up.shutdown().await;
                        }
                    }
                },
                _ = sleep_until(quiet_until) => {
                    return Err(ConnectError::Quiet(self.quiet_limit.unwrap_or_default()));
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
