//! The request and answer plumbing of the engine client: one request on a
//! fresh connection from the [`super::transport`], at the negotiated API
//! version, with a JSON body when there is one, and the engine's error
//! message read back.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::{ssh, Engine, EngineError, TransportError};

/// How long a request may take beyond the time it asks the engine to wait.
const REQUEST_SLACK: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

impl Engine {
    /// One request at the negotiated API version; an engine that refuses the
    /// version after all gets an error that says so.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        takes: Duration,
        container: &str,
    ) -> Result<(StatusCode, Bytes), EngineError> {
        self.send(method, path, Bytes::new(), takes, container)
            .await
    }

    /// One request at the negotiated API version with a JSON `body` (none
    /// when empty), for the other kinds that speak to the engine (a Swarm
    /// service); `subject` names what it is about in the errors.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        subject: &str,
    ) -> Result<(StatusCode, Bytes), EngineError> {
        self.send(method, path, body, Duration::ZERO, subject).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        takes: Duration,
        container: &str,
    ) -> Result<(StatusCode, Bytes), EngineError> {
        let version = self.version(container).await?;
        let (status, body) = self
            .exchange(method, format!("/v{version}{path}"), body, takes, container)
            .await?;
        if status == StatusCode::BAD_REQUEST {
            let message = error_message(&body);
            if message.starts_with("client version")
                && (message.contains("too old") || message.contains("too new"))
            {
                return Err(EngineError::VersionRefused {
                    socket: self.socket.clone(),
                    container: container.to_owned(),
                    version,
                    message,
                });
            }
        }
        Ok((status, body))
    }

    /// One request on a fresh connection; `takes` is how long the engine may
    /// legitimately take (a stop's grace), on top of [`REQUEST_SLACK`].
    pub(super) async fn exchange(
        &self,
        method: Method,
        uri: String,
        body: Bytes,
        takes: Duration,
        container: &str,
    ) -> Result<(StatusCode, Bytes), EngineError> {
        let exchange = async {
            let stream = self
                .transport
                .connect()
                .await
                .map_err(|source| EngineError::Connect {
                    socket: self.socket.clone(),
                    container: container.to_owned(),
                    source,
                })?;
            let ssh_said = stream.ssh_said();
            let result = self.round_trip(stream, method, uri, body, container).await;
            match (result, ssh_said) {
                (Err(EngineError::Protocol { socket, reason }), Some(said)) => {
                    let said = said.text().await;
                    match said.as_deref().filter(|s| ssh::host_unreachable(s)) {
                        Some(text) => Err(EngineError::Connect {
                            socket,
                            container: container.to_owned(),
                            source: TransportError::Unreachable(std::io::Error::other(text)),
                        }),
                        None => Err(EngineError::Protocol {
                            socket,
                            reason: ssh::explain(reason, said),
                        }),
                    }
                }
                (result, _) => result,
            }
        };
        match tokio::time::timeout(takes + REQUEST_SLACK, exchange).await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Protocol {
                socket: self.socket.clone(),
                reason: format!(
                    "container {container}: no answer within {}s",
                    (takes + REQUEST_SLACK).as_secs()
                ),
            }),
        }
    }
    /// One HTTP/1.1 request over `stream` and its whole answer.
    async fn round_trip(
        &self,
        stream: super::transport::EngineStream,
        method: Method,
        uri: String,
        body: Bytes,
        container: &str,
    ) -> Result<(StatusCode, Bytes), EngineError> {
        let protocol = |e: hyper::Error| EngineError::Protocol {
            socket: self.socket.clone(),
            reason: format!("container {container}: {}", chain(&e)),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, "localhost");
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body)).expect("a valid request");
        let response = sender.send_request(request).await.map_err(protocol)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(protocol)?
            .to_bytes();
        Ok((status, body))
    }
}

/// `e` and its sources, `: `-separated (hyper's own text is only the outermost).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The engine's message in an error answer: its JSON `message`, else the text.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned())
}

/// Percent-encodes a container name for a URL path (names are usually safe already).
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded() {
        assert_eq!(encode("web-1_a.b"), "web-1_a.b");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
