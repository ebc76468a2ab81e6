//! A request kept to be sent again when its connection closed under it,
//! and a request in the form its route sends.

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Request, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};

use super::http1_conn::Outbound;
use super::wire::Outgoing;
use super::UpstreamBody;

/// The most bytes of a request's body kept to send it again: a request
/// whose body is longer (or of unknown length) is streamed, never held.
pub const HOLD_BODY_MAX: u64 = 64 * 1024;

/// A copy of a request kept to send it again if its connection closed
/// under it: a bodiless one, or one whose body (at most [`HOLD_BODY_MAX`]
/// bytes) was read whole before it went.
#[derive(Clone, Debug)]
pub(in crate::proxy::http) struct Resend {
    method: Method,
    /// The body, whole (empty for a bodiless request).
    body: Bytes,
    form: Form,
}

/// The rest of a kept request, in the form its route sends.
#[derive(Clone, Debug)]
enum Form {
    /// HTTP/1.1: its head as it went on the wire (kept by sharing it, not
    /// copied).
    Wire { head: Bytes, outgoing: Outgoing },
    /// h2c: what hyper-util's client takes.
    Parts { uri: Uri, headers: HeaderMap },
}

/// A request ready for its route.
#[derive(Debug)]
pub(in crate::proxy::http) enum Ready {
    /// For idlegate's own HTTP/1.1 pool: its head already on the wire's terms.
    Wire(Outbound),
    /// For hyper-util's h2c client.
    Request(Request<UpstreamBody>),
}

impl Ready {
    /// `req` in the form `wire` (HTTP/1.1) or h2c takes.
    pub(in crate::proxy::http) fn of(req: Request<UpstreamBody>, wire: bool) -> Ready {
        match wire {
            true => Ready::Wire(Outbound::of(req)),
            false => Ready::Request(req),
        }
    }
}

impl Resend {
    /// The copy of a bodiless request (or of one whose body is kept apart).
    pub(in crate::proxy::http) fn of(ready: &Ready) -> Resend {
        let (method, form) = match ready {
            Ready::Wire(out) => (
                out.method.clone(),
                Form::Wire {
                    head: out.head.clone(),
                    outgoing: out.outgoing,
                },
            ),
            Ready::Request(req) => (
                req.method().clone(),
                Form::Parts {
                    uri: req.uri().clone(),
                    headers: req.headers().clone(),
                },
            ),
        };
        Resend {
            method,
            body: Bytes::new(),
            form,
        }
    }

    /// Whether `req`'s body is short enough to be read whole and kept: its
    /// length is known and at most [`HOLD_BODY_MAX`].
    pub(in crate::proxy::http) fn can_keep<B: Body>(req: &Request<B>) -> bool {
        req.body()
            .size_hint()
            .exact()
            .is_some_and(|n| n <= HOLD_BODY_MAX)
    }

    /// The copy of `req`, its body read whole (its bytes counted as the
    /// client's), in the form `wire` (HTTP/1.1) or h2c takes; the client's
    /// error if the body could not be read.
    pub(in crate::proxy::http) async fn keep<B: Body<Data = Bytes>>(
        req: Request<B>,
        wire: bool,
    ) -> Result<Resend, B::Error> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        let req = Request::from_parts(parts, Either::Right(Full::new(body.clone())));
        Ok(Resend {
            body,
            ..Resend::of(&Ready::of(req, wire))
        })
    }

    /// Whether it is bodiless with an idempotent method (RFC 9110 §9.2.2):
    /// then it may be sent again even when it may have reached the app.
    pub(in crate::proxy::http) fn idempotent(&self) -> bool {
        [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ]
        .contains(&self.method)
            && self.body.is_empty()
    }

    /// The request again.
    pub(in crate::proxy::http) fn ready(&self) -> Ready {
        let body = Either::Right(Full::new(self.body.clone()));
        match &self.form {
            Form::Wire { head, outgoing } => Ready::Wire(Outbound {
                head: head.clone(),
                outgoing: *outgoing,
                body,
                method: self.method.clone(),
            }),
            Form::Parts { uri, headers } => {
                let mut req = Request::new(body);
                *req.method_mut() = self.method.clone();
                *req.uri_mut() = uri.clone();
                *req.headers_mut() = headers.clone();
                Ready::Request(req)
            }
        }
    }
}
