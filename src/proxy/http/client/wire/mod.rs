//! HTTP/1.1 on the wire to the upstream, without I/O: a request's head
//! written out, a response's head parsed (RFC 9112), a chunked body decoded.
//!
//! hyper's client parses a response in place, its header values slices of
//! the connection's read buffer, and reads on while they are held, which
//! takes a second buffer per connection; it also hands every request to the
//! connection through a channel of its own. Here a response's head is copied
//! out as it is parsed, so one read buffer serves the connection, and the
//! task that sends a request writes it itself.

/// The largest response head taken (hyper's limit for its client).
pub(in crate::proxy::http) const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The most header fields in a response head, or in a trailer section.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, with its extensions.
const MAX_CHUNK_LINE: usize = 4096;

/// Why an upstream response could not be read.
#[derive(Debug, thiserror::Error)]
pub(in crate::proxy::http) enum WireError {
    /// The connection closed before a response began.
    #[error("the upstream closed the connection before answering")]
    ClosedBeforeAnswering,
    /// The connection closed within a response.
    #[error("the upstream closed the connection within its response")]
    Truncated,
    /// What the upstream sent is not HTTP/1.x.
    #[error("invalid response from the upstream: {0}")]
    Invalid(&'static str),
    /// The response's head is larger than [`MAX_HEAD`].
    #[error("the upstream's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// Reading or writing the connection failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The client's request body failed (the client went away).
    #[error("request body: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
    /// The request body is not as long as its `Content-Length` says.
    #[error("the request body does not match its Content-Length")]
    RequestLength,
}

impl WireError {
    /// Whether the connection closed or was reset before the response
    /// began: a request on a kept-alive connection may meet its close.
    pub(in crate::proxy::http) fn closed_before_answering(&self) -> bool {
        match self {
            WireError::ClosedBeforeAnswering => true,
            WireError::Io(e) => cut_off(e),
            _ => false,
        }
    }
}

pub(in crate::proxy::http) use crate::proxy::cut_off;

mod chunked;
mod request;
mod response;

pub(in crate::proxy::http) use chunked::{ChunkedDecoder, Decoded};
pub(in crate::proxy::http) use request::{chunk, last_chunk, request_head, Outgoing};
pub(in crate::proxy::http) use response::{parse_response, Framing, Parsed, ResponseHead};

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use http::Method;

    #[test]
    fn hostile_bytes_from_the_upstream_never_panic() {
        let mut noise = crate::fuzz_support::Noise::new(0x11E1);
        let seeds = [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nx: 1\r\n\r\n",
            "HTTP/1.0 101 Switching\r\nX: a\r\n  b\r\nContent-Length: 3, 3\r\n\r\nabc",
        ];
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..=noise.below(4) {
                let at = noise.below(bytes.len() + 1);
                match noise.below(3) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, noise.below(256) as u8),
                    _ => bytes.insert(at, b"\r\n:; 0f"[noise.below(7)]),
                }
            }
            for method in [Method::GET, Method::HEAD, Method::CONNECT] {
                let mut rest = BytesMut::from(&bytes[..]);
                if let Ok(Parsed::Final(..)) = parse_response(&mut rest, &method) {
                    let mut decoder = ChunkedDecoder::default();
                    while let Ok(Decoded::Data(_) | Decoded::Trailers(_)) =
                        decoder.decode(&mut rest)
                    {}
                }
            }
        }
    }
}
