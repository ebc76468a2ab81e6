//! idlegate's own HTTP/1.1 client to the upstream: the request and response
//! on the wire (`wire`), one connection driven by the task whose request
//! uses it (`http1_conn`), the pool of them (`pool`), and the connector with
//! what can go wrong upstream (`upstream`).
//!
//! It knows nothing of the server side: what it needs from both sides (a
//! stream with bytes in front, a body that counts its bytes) lives in
//! `super::io`.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::io::Counted;

mod http1_conn;
mod pool;
mod resend;
mod upstream;
mod wire;

pub(super) use http1_conn::Upgraded;
pub(super) use pool::UpstreamPool;
pub use pool::{Lease, UpstreamResponse};
pub use resend::HOLD_BODY_MAX;
pub(super) use resend::{Ready, Resend};
pub(super) use upstream::UpstreamError;
pub use upstream::{UpstreamConnection, UpstreamConnector};

/// The body of a request sent upstream: the client's as it comes, or one
/// kept whole (none at all, or a short one read first), which can be sent
/// again.
pub type UpstreamBody = Either<Counted<Incoming>, Full<Bytes>>;
