//! The answers idlegate gives itself: a failure's status and text, an
//! `[[answer]]` rule's.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::client::UpstreamError;
use crate::backend::BackendError;
use crate::proxy::ConnectError;

/// What a backend error means to an HTTP client.
pub(super) fn status_for(e: &BackendError) -> StatusCode {
    match e {
        BackendError::Failed(_) => StatusCode::BAD_GATEWAY,
        BackendError::StartTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        BackendError::ShuttingDown | BackendError::Abandoned => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// What an upstream failure means to the client, and why it failed.
pub(super) fn classify(e: &UpstreamError) -> (StatusCode, String) {
    match e.connect_error() {
        Some(connect) => {
            let status = match connect {
                ConnectError::Backend(b) => status_for(b),
                ConnectError::Timeout { .. }
                | ConnectError::Closing { .. }
                | ConnectError::Quiet(_)
                | ConnectError::NoFreeConnection { .. } => StatusCode::GATEWAY_TIMEOUT,
                ConnectError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            };
            (status, connect.to_string())
        }
        None => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

pub(super) fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The answer to a request beyond `--hold-max` while the backend starts:
/// 503, to come back after `retry_after` seconds.
pub(super) fn refused_while_starting(
    refused: crate::backend::hold::HoldRefused,
    retry_after: u64,
) -> Response<Full<Bytes>> {
    let text = format!("the service is starting and {refused}: retry in a moment");
    let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// The answer of an `[[answer]]` rule.
pub(super) fn rule_answer(rule: &crate::wake::AnswerRule) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = plain(status, rule.body.clone());
    if let Some(seconds) = rule.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    resp
}
