//! TCP mode: hold the client until the backend is ready, connect upstream,
//! then copy bytes both ways with half-close passed through.

use std::time::Duration;

use tokio::time::Instant;

use super::{close_politely, connect_upstream};
use crate::address::Address;
use crate::backend::Backend;
use crate::net::{Peer, Stream};

/// Buffer size of each copy direction.
const COPY_BUFFER: usize = 32 * 1024;

/// Serves one client to the end: connect upstream (held until ready), then
/// copy both ways until both directions reached end-of-file.
pub async fn serve(
    mut client: Stream,
    peer: Peer,
    upstream: &Address,
    backend: &Backend,
    start_timeout: Duration,
) {
    let deadline = Instant::now() + start_timeout;
    let mut up = match connect_upstream(backend, upstream, deadline).await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!("closing client {peer}: {e}");
            close_politely(client).await;
            return;
        }
    };
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, COPY_BUFFER, COPY_BUFFER)
        .await
    {
        Ok((sent, received)) => {
            tracing::debug!("client {peer} done: {sent} bytes to {upstream}, {received} back")
        }
        Err(e) => tracing::debug!("client {peer} ended: {e}"),
    }
}
