//! An upgraded connection (WebSocket, CONNECT): both sides handed over by
//! hyper, then copied both ways while it counts as work.

use hyper_util::rt::TokioIo;

use super::connection::Prefixed;
use super::pool::Lease;
use super::tracked::CountedIo;
use crate::activity::InFlightGuard;

/// The client's side of an upgraded connection.
pub(super) enum ClientSide {
    /// HTTP/1: the socket, once hyper has sent the `101` and handed it back.
    Socket(tokio::sync::oneshot::Receiver<Prefixed>),
    /// HTTP/2: the stream hyper upgrades itself.
    Upgrade(hyper::upgrade::OnUpgrade),
}

/// Copies an upgraded connection both ways; it is in flight until it ends.
pub(super) async fn tunnel(
    client: ClientSide,
    upstream: hyper::upgrade::OnUpgrade,
    conn: Option<Lease>,
    guard: InFlightGuard,
) {
    // idlegate's own upstream connection hands its socket over when it is
    // driven past the response's head.
    if let Some(conn) = conn {
        conn.finish().await;
    }
    let upstream = match upstream.await {
        Ok(upstream) => TokioIo::new(upstream),
        Err(e) => {
            tracing::debug!("upgrade failed upstream: {e}");
            return;
        }
    };
    match client {
        ClientSide::Socket(socket) => match socket.await {
            Ok(socket) => copy_tunnel(socket, upstream, guard).await,
            Err(_) => tracing::debug!("upgrade failed: the client connection ended first"),
        },
        ClientSide::Upgrade(upgrade) => match upgrade.await {
            Ok(upgraded) => copy_tunnel(TokioIo::new(upgraded), upstream, guard).await,
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        },
    }
}

/// Copies both ways between the two sides of a tunnel until it ends,
/// counting the client's bytes.
async fn copy_tunnel<C>(
    client: C,
    mut upstream: TokioIo<hyper::upgrade::Upgraded>,
    guard: InFlightGuard,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut client = CountedIo {
        io: client,
        work: guard.entry(),
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
    drop(guard);
}
