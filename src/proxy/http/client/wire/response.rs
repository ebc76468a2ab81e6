//! A response's head parsed (RFC 9112): split off the read buffer, its
//! values slices of it, with how its body is delimited.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::{WireError, MAX_HEAD, MAX_HEADERS};

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::proxy::http) enum Framing {
    /// No body.
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
    /// No body: the connection is handed over (`101`, or a `CONNECT`'s `2xx`).
    Switch,
}

/// A final response's head, parsed.
#[derive(Debug)]
pub(in crate::proxy::http) struct ResponseHead {
    /// Status, headers and (for a non-standard one) the reason phrase.
    pub response: Response<()>,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the connection takes another request after this response.
    pub keep_alive: bool,
}

/// What the start of a read buffer holds.
#[derive(Debug)]
pub(in crate::proxy::http) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response, passed over.
    Interim,
    /// A final response's head.
    Final(ResponseHead),
}

/// Parses the response head at the start of `buf`, the answer to a request
/// with `method`, and takes a whole one (interim or final) out of it: a
/// final head's values are slices of it, not copies.
pub(in crate::proxy::http) fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Parsed, WireError> {
    let Some(raw) = RawHead::scan(buf)? else {
        return Ok(Parsed::Partial);
    };
    let status = StatusCode::from_u16(raw.code)
        .map_err(|_| WireError::Invalid("status code out of range"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(raw.len);
        return Ok(Parsed::Interim);
    }
    let head = buf.split_to(raw.len).freeze();
    let mut headers = raw.header_map(&head)?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Some(reason) = raw.reason.map(|r| &head[r.0..r.1]) {
        if status.canonical_reason().map(str::as_bytes) != Some(reason) {
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.to_vec()) {
                response.extensions_mut().insert(reason);
            }
        }
    }
    let close = connection_has(&headers, "close");
    let mut keep_alive = match raw.version {
        Version::HTTP_10 => connection_has(&headers, "keep-alive") && !close,
        _ => !close,
    };
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS
        || (method == Method::CONNECT && status.is_success())
    {
        Framing::Switch
    } else if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if let Some(chunked) =
        last_transfer_coding(&headers).map(|c| c.eq_ignore_ascii_case("chunked"))
    {
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            // Beside a Transfer-Encoding, which overrides it, a
            // Content-Length is a smuggling attempt: the connection cannot
            // be trusted after this response, and the length not passed on.
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            // Not chunked last: the body ends with the connection.
            keep_alive = false;
            Framing::UntilClose
        }
    } else {
        match content_length(&headers) {
            Ok(Some(n)) => Framing::Length(n),
            Ok(None) => {
                keep_alive = false;
                Framing::UntilClose
            }
            Err(()) => return Err(WireError::Invalid("invalid Content-Length")),
        }
    };
    *response.headers_mut() = headers;
    Ok(Parsed::Final(ResponseHead {
        response,
        framing,
        keep_alive: keep_alive && framing != Framing::Switch,
    }))
}

/// Where a response head's parts are in the read buffer: found there, then
/// taken as slices of the head once it is split off (no borrow of the buffer
/// in between).
struct RawHead {
    /// The head's length.
    len: usize,
    code: u16,
    version: Version,
    /// The reason phrase's start and end.
    reason: Option<(usize, usize)>,
    /// Each field's name and value, as start and end (as many as there
    /// are: an array for the most would be zeroed and copied per response).
    fields: Vec<((usize, usize), (usize, usize))>,
}

impl RawHead {
    /// The head at the start of `buf`, if it is all there.
    fn scan(buf: &[u8]) -> Result<Option<RawHead>, WireError> {
        // Not initialised: httparse fills in what it finds (zeroing room
        // for the most a head may have was a measurable cost per response).
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let mut config = httparse::ParserConfig::default();
        config.allow_obsolete_multiline_headers_in_responses(true);
        let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(WireError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Invalid("more than 100 header fields"))
            }
            Err(_) => return Err(WireError::Invalid("not an HTTP/1.x response head")),
        };
        // httparse's parts are slices of `buf`; an empty one may not be.
        let span = |part: &[u8]| match (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize) {
            Some(start) if !part.is_empty() && start + part.len() <= len => {
                (start, start + part.len())
            }
            _ => (0, 0),
        };
        Ok(Some(RawHead {
            len,
            code: parsed.code.unwrap_or(0),
            version: match parsed.version {
                Some(0) => Version::HTTP_10,
                _ => Version::HTTP_11,
            },
            reason: parsed.reason.map(|r| span(r.as_bytes())),
            fields: parsed
                .headers
                .iter()
                .map(|field| (span(field.name.as_bytes()), span(field.value)))
                .collect(),
        }))
    }

    /// The header fields, their values slices of `head` (an obsolete line
    /// folding becomes one space, as RFC 9112 §5.2 asks: a copy).
    fn header_map(&self, head: &Bytes) -> Result<HeaderMap, WireError> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for &((name_at, name_end), (at, end)) in &self.fields {
            let name = HeaderName::from_bytes(&head[name_at..name_end])
                .map_err(|_| WireError::Invalid("invalid header name"))?;
            let value = if head[at..end].contains(&b'\n') {
                HeaderValue::from_bytes(&unfold(&head[at..end]))
            } else {
                HeaderValue::from_maybe_shared(head.slice(at..end))
            }
            .map_err(|_| WireError::Invalid("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// The header fields, copied out of the read buffer (an obsolete line
/// folding becomes one space, as RFC 9112 §5.2 asks).
pub(super) fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, WireError> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| WireError::Invalid("invalid header name"))?;
        let value = if field.value.contains(&b'\n') {
            HeaderValue::from_bytes(&unfold(field.value))
        } else {
            HeaderValue::from_bytes(field.value)
        }
        .map_err(|_| WireError::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// A folded value on one line: each line break and the white space around
/// it become one space.
fn unfold(value: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(value.len());
    for part in value.split(|&b| b == b'\n') {
        let part = part.trim_ascii();
        if part.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.push(b' ');
        }
        line.extend_from_slice(part);
    }
    line
}

/// Whether the `Connection` header lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The last transfer coding `Transfer-Encoding` lists, if it is there.
fn last_transfer_coding(headers: &HeaderMap) -> Option<&str> {
    let last = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()?;
    let last = last.to_str().unwrap_or("invalid");
    Some(last.rsplit(',').next().unwrap_or(last).trim())
}

/// The length `Content-Length` gives (all its values must agree), if any.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let value = value.to_str().map_err(|_| ())?;
        for n in value.split(',') {
            let n = n.trim();
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = n.parse().map_err(|_| ())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn final_head(raw: &str, method: Method) -> ResponseHead {
        let mut buf = BytesMut::from(raw.as_bytes());
        match parse_response(&mut buf, &method).unwrap() {
            Parsed::Final(head) => {
                assert!(buf.is_empty(), "the whole head is taken");
                head
            }
            other => panic!("{other:?}"),
        }
    }
    #[test]
    fn a_response_head_is_copied_out_with_its_framing() {
        let head = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
            Method::GET,
        );
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.response.headers().get_all("x-a").iter().count(), 2);
        assert!(head.response.extensions().is_empty());

        let head = final_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(head.framing, Framing::Empty);
        let head = final_head("HTTP/1.1 304 Not Modified\r\n\r\n", Method::GET);
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);

        let head = final_head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::GET,
        );
        assert_eq!((head.framing, head.keep_alive), (Framing::Chunked, true));
        let head = final_head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
        );
        assert_eq!((head.framing, head.keep_alive), (Framing::Chunked, false));
        assert!(!head.response.headers().contains_key("content-length"));
        let head = final_head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET,
        );
        assert_eq!(
            (head.framing, head.keep_alive),
            (Framing::UntilClose, false)
        );
        let head = final_head("HTTP/1.0 200 OK\r\n\r\n", Method::GET);
        assert_eq!(
            (head.framing, head.keep_alive),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            head.response.version(),
            Version::HTTP_11,
            "a proxy sends its own version (RFC 9110 §6.2)"
        );
        let head = final_head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert_eq!((head.framing, head.keep_alive), (Framing::Length(0), true));
        let head = final_head(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(!head.keep_alive);
        let head = final_head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            Method::GET,
        );
        assert_eq!((head.framing, head.keep_alive), (Framing::Switch, false));
        let head = final_head(
            "HTTP/1.1 200 Connection established\r\n\r\n",
            Method::CONNECT,
        );
        assert_eq!(head.framing, Framing::Switch);
    }

    #[test]
    fn odd_response_heads() {
        let head = final_head(
            "HTTP/1.1 200 Fine Thanks\r\nX-Folded: a\r\n  b\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert_eq!(head.response.headers()["x-folded"], "a b");
        let reason = head
            .response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(reason.as_bytes(), b"Fine Thanks");

        let mut interim = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP"[..]);
        assert!(matches!(
            parse_response(&mut interim, &Method::POST),
            Ok(Parsed::Interim)
        ));
        assert_eq!(&interim[..], b"HTTP", "the interim head is taken");
        assert!(matches!(
            parse_response(
                &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]),
                &Method::GET
            ),
            Ok(Parsed::Partial)
        ));
        for bad in [
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        ] {
            assert!(
                parse_response(&mut BytesMut::from(bad.as_bytes()), &Method::GET).is_err(),
                "{bad}"
            );
        }
        let head = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
            Method::GET,
        );
        assert_eq!(head.framing, Framing::Length(7));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "x".repeat(MAX_HEAD));
        assert!(matches!(
            parse_response(&mut BytesMut::from(huge.as_bytes()), &Method::GET),
            Err(WireError::HeadTooLarge)
        ));
    }
}
