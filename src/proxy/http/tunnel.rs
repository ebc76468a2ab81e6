//! An upgraded connection (WebSocket, CONNECT): both sides handed over (the
//! client's by hyper, the upstream's by idlegate's own connection), then copied
//! both ways while it counts as work.

use hyper_util::rt::TokioIo;

use super::client::Upgraded;
use super::io::CountedIo;
use super::io::Prefixed;
use crate::serve::activity::InFlightGuard;

/// The client's side of an upgraded connection.
pub(super) enum ClientSide {
    /// HTTP/1: the socket, once hyper has sent the `101` and handed it back.
    Socket(tokio::sync::oneshot::Receiver<Prefixed>),
    /// HTTP/2: the stream hyper upgrades itself.
    Upgrade(hyper::upgrade::OnUpgrade),
}

/// Copies an upgraded connection both ways once the client's side is handed
/// over; it is in flight until it ends. `upstream` holds its connection slot
/// until then.
pub(super) async fn tunnel(client: ClientSide, mut upstream: Upgraded, guard: InFlightGuard) {
    match client {
        ClientSide::Socket(socket) => match socket.await {
            Ok(socket) => copy_tunnel(socket, &mut upstream.io, guard).await,
            Err(_) => tracing::debug!("upgrade failed: the client connection ended first"),
        },
        ClientSide::Upgrade(upgrade) => match upgrade.await {
            Ok(upgraded) => copy_tunnel(TokioIo::new(upgraded), &mut upstream.io, guard).await,
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        },
    }
}

/// Copies both ways between the two sides of a tunnel until it ends,
/// counting the client's bytes.
async fn copy_tunnel<C>(client: C, upstream: &mut Prefixed, guard: InFlightGuard)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut client = CountedIo {
        io: client,
        work: guard.entry(),
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, upstream).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
    drop(guard);
}
