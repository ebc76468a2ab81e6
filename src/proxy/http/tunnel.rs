//! An upgraded connection (WebSocket, CONNECT): both sides handed over (the
//! client's by hyper, the upstream's by idlegate's own connection), then copied
//! both ways while it counts as work.

use hyper_util::rt::TokioIo;

use super::connection::Prefixed;
use super::http1_conn::Upgraded;
use super::tracked::CountedIo;
use crate::activity::InFlightGuard;

/// The client's side of an upgraded connection.
pub(super) enum ClientSide {
    /// HTTP/1: the socket, once hyper has sent the `101` and handed it back.
    Socket(tokio::sync::oneshot::Receiver<Prefixed>),
    /// HTTP/2: the stream hyper upgrades itself.
    Upgrade(hyper::upgrade::OnUpgrade),
}

/// The upstream's side of an upgraded connection.
pub(super) enum UpstreamSide {
    /// idlegate's own HTTP/1.1 connection, handed over past the `101`.
    Own(Upgraded),
    /// One hyper upgrades (not expected: h2c upstreams take no upgrades).
    Upgrade(hyper::upgrade::OnUpgrade),
}

/// Copies an upgraded connection both ways; it is in flight until it ends.
pub(super) async fn tunnel(client: ClientSide, upstream: UpstreamSide, guard: InFlightGuard) {
    match upstream {
        UpstreamSide::Own(upgraded) => to_client(client, upgraded.io, guard).await,
        UpstreamSide::Upgrade(upgrade) => match upgrade.await {
            Ok(upgraded) => to_client(client, TokioIo::new(upgraded), guard).await,
            Err(e) => tracing::debug!("upgrade failed upstream: {e}"),
        },
    }
}

/// Waits for the client's side, then copies both ways.
async fn to_client<U>(client: ClientSide, upstream: U, guard: InFlightGuard)
where
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
async fn copy_tunnel<C, U>(client: C, mut upstream: U, guard: InFlightGuard)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
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
