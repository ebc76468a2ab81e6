//! The answers idlegate gives itself: a failure's status and text, an
//! `[[answer]]` rule's.

use std::error::Error as _;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::backend::BackendError;
use crate::proxy::ConnectError;

/// What a backend error means to an HTTP client.
pub(super) fn status_for(e: &BackendError) -> StatusCode {
    match e {
        BackendError::Failed(_) => StatusCode::BAD_GATEWAY,
        BackendError::StartTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        BackendError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Finds why a client request failed: a connect error of ours, or the upstream's.
pub(super) fn classify(e: &hyper_util::client::legacy::Error) -> (StatusCode, String) {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(connect) = s.downcast_ref::<ConnectError>() {
            let status = match connect {
                ConnectError::Backend(b) => status_for(b),
                ConnectError::Timeout { .. }
                | ConnectError::Quiet(_)
                | ConnectError::NoFreeConnection { .. } => StatusCode::GATEWAY_TIMEOUT,
                ConnectError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            };
            return (status, connect.to_string());
        }
        source = s.source();
    }
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why.push_str(": ");
        why.push_str(&s.to_string());
        source = s.source();
    }
    (
        StatusCode::BAD_GATEWAY,
        format!("upstream request failed: {why}"),
    )
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
