//! HTTP/1.1 on the wire to the upstream, without I/O: a request's head
//! written out, a response's head parsed (RFC 9112), a chunked body decoded.
//!
//! hyper's client parses a response in place, its header values slices of
//! the connection's read buffer, and reads on while they are held, which
//! takes a second buffer per connection; it also hands every request to the
//! connection through a channel of its own. Here a response's head is copied
//! out as it is parsed, so one read buffer serves the connection, and the
//! task that sends a request writes it itself.

use std::io::Write as _;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;

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

/// Whether `e` says the peer closed or reset the connection.
pub(in crate::proxy::http) fn cut_off(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// How a request's body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::proxy::http) enum Outgoing {
    /// No body.
    Empty,
    /// This many bytes, as `Content-Length` says.
    Length(u64),
    /// Chunked, ended by the last chunk (with the trailers, if any).
    Chunked,
}

/// A request's head as bytes, and how its body follows. The body decides
/// the framing: a `Content-Length` that does not match a body of known
/// length is replaced, one of unknown length is chunked.
pub(in crate::proxy::http) fn request_head<B: Body>(req: &Request<B>) -> (Bytes, Outgoing) {
    let stated = content_length(req.headers()).ok().flatten();
    let body = req.body();
    let outgoing = if body.is_end_stream() && stated.map_or(true, |n| n == 0) {
        Outgoing::Empty
    } else {
        match body.size_hint().exact() {
            Some(n) => Outgoing::Length(n),
            None => Outgoing::Chunked,
        }
    };
    let keep_length = matches!((outgoing, stated), (Outgoing::Length(n), Some(s)) if n == s)
        || (outgoing == Outgoing::Empty && stated.is_some());
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(64 + size);
    // The URI as hyper's client writes it: origin, authority or `*` form.
    let _ = write!(head, "{} {} HTTP/1.1\r\n", req.method(), req.uri());
    let fields = req.headers().iter();
    put_fields(
        &mut head,
        fields.filter(|(name, _)| keep_length || *name != header::CONTENT_LENGTH),
    );
    match outgoing {
        Outgoing::Length(n) if !keep_length => {
            let _ = write!(head, "content-length: {n}\r\n");
        }
        Outgoing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    head.extend_from_slice(b"\r\n");
    (Bytes::from(head), outgoing)
}

/// A chunk of a chunked request body: its size line, the data, its end.
pub(in crate::proxy::http) fn chunk(data: Bytes) -> [Bytes; 3] {
    [
        Bytes::from(format!("{:x}\r\n", data.len())),
        data,
        Bytes::from_static(b"\r\n"),
    ]
}

/// The last chunk of a chunked request body, with its trailers.
pub(in crate::proxy::http) fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let Some(trailers) = trailers.filter(|t| !t.is_empty()) else {
        return Bytes::from_static(b"0\r\n\r\n");
    };
    let mut end = b"0\r\n".to_vec();
    put_fields(&mut end, trailers.iter());
    end.extend_from_slice(b"\r\n");
    Bytes::from(end)
}

/// Writes header fields as HTTP/1.1 lines.
fn put_fields<'h>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

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
    /// An interim (1xx) response of this many bytes, passed over.
    Interim(usize),
    /// A final response's head of this many bytes.
    Final(ResponseHead, usize),
}

/// Parses the response head at the start of `buf`, the answer to a request
/// with `method`.
pub(in crate::proxy::http) fn parse_response(
    buf: &[u8],
    method: &Method,
) -> Result<Parsed, WireError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let mut config = httparse::ParserConfig::default();
    config.allow_obsolete_multiline_headers_in_responses(true);
    let len = match config.parse_response(&mut parsed, buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::Invalid("more than 100 header fields"))
        }
        Err(_) => return Err(WireError::Invalid("not an HTTP/1.x response head")),
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| WireError::Invalid("status code out of range"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Interim(len));
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = header_map(parsed.headers)?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Some(reason) = parsed.reason {
        if status.canonical_reason() != Some(reason) {
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()) {
                response.extensions_mut().insert(reason);
            }
        }
    }
    let close = connection_has(&headers, "close");
    let mut keep_alive = match version {
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
    Ok(Parsed::Final(
        ResponseHead {
            response,
            framing,
            keep_alive: keep_alive && framing != Framing::Switch,
        },
        len,
    ))
}

/// The header fields, copied out of the read buffer (an obsolete line
/// folding becomes one space, as RFC 9112 §5.2 asks).
fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, WireError> {
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
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
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

/// What a chunked body's decoder took from the read buffer.
#[derive(Debug, PartialEq)]
pub(in crate::proxy::http) enum Decoded {
    /// More bytes are needed.
    More,
    /// Some of the body.
    Data(Bytes),
    /// The trailer section (the body ends after it).
    Trailers(HeaderMap),
    /// The body's end.
    End,
}

/// Decodes a chunked body (RFC 9112 §7.1) out of a read buffer.
#[derive(Debug, Default)]
pub(in crate::proxy::http) struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before a chunk's size line.
    #[default]
    Size,
    /// Within a chunk's data, this much to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailer section.
    Trailers,
    /// Ended.
    Done,
}

impl ChunkedDecoder {
    /// Whether the body has ended.
    #[cfg(test)]
    fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes the next piece of the body out of `buf`.
    pub(in crate::proxy::http) fn decode(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((len, 0))) => {
                        buf.advance(len);
                        self.state = ChunkState::Trailers;
                    }
                    Ok(httparse::Status::Complete((len, size))) => {
                        buf.advance(len);
                        self.state = ChunkState::Data(size);
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(WireError::Invalid("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                    Err(_) => return Err(WireError::Invalid("invalid chunk size")),
                },
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = match left {
                        0 => ChunkState::DataEnd,
                        _ => ChunkState::Data(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                    } else if buf.starts_with(b"\n") {
                        buf.advance(1);
                    } else if buf.is_empty() || buf[..] == b"\r"[..] {
                        return Ok(Decoded::More);
                    } else {
                        return Err(WireError::Invalid("chunk data longer than its size"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => return self.trailers(buf),
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }

    /// The trailer section after the last chunk, if it is all there.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        for end in [&b"\r\n"[..], b"\n"] {
            if buf.starts_with(end) {
                buf.advance(end.len());
                self.state = ChunkState::Done;
                return Ok(Decoded::End);
            }
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let trailers = header_map(fields)?;
                buf.advance(len);
                self.state = ChunkState::Done;
                Ok(Decoded::Trailers(trailers))
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(WireError::HeadTooLarge),
            Ok(httparse::Status::Partial) => Ok(Decoded::More),
            Err(_) => Err(WireError::Invalid("invalid trailer section")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn final_head(raw: &str, method: Method) -> ResponseHead {
        match parse_response(raw.as_bytes(), &method).unwrap() {
            Parsed::Final(head, len) => {
                assert_eq!(len, raw.len());
                head
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_head_says_how_its_body_is_framed() {
        let req = Request::get("/a?b=c")
            .header("host", "site")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (head, outgoing) = request_head(&req);
        assert_eq!(&head[..], b"GET /a?b=c HTTP/1.1\r\nhost: site\r\n\r\n");
        assert_eq!(outgoing, Outgoing::Empty);

        let req = Request::post("/")
            .header("content-length", "999")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let (head, outgoing) = request_head(&req);
        assert_eq!(
            &head[..],
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
            "the body's own length wins"
        );
        assert_eq!(outgoing, Outgoing::Length(5));

        let req = Request::post("/")
            .header("content-length", "0")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (head, outgoing) = request_head(&req);
        assert_eq!(&head[..], b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(outgoing, Outgoing::Empty);

        let req = Request::connect("example.org:443")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (head, _) = request_head(&req);
        assert_eq!(&head[..], b"CONNECT example.org:443 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn chunks_and_the_last_chunk_with_trailers() {
        let parts = chunk(Bytes::from_static(b"0123456789abcdef!"));
        assert_eq!(parts.concat(), b"11\r\n0123456789abcdef!\r\n");
        assert_eq!(&last_chunk(None)[..], b"0\r\n\r\n");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("42"));
        assert_eq!(&last_chunk(Some(&trailers))[..], b"0\r\nx-sum: 42\r\n\r\n");
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

        let interim = "HTTP/1.1 100 Continue\r\n\r\n";
        assert!(matches!(
            parse_response(interim.as_bytes(), &Method::POST),
            Ok(Parsed::Interim(n)) if n == interim.len()
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET),
            Ok(Parsed::Partial)
        ));
        for bad in [
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        ] {
            assert!(
                parse_response(bad.as_bytes(), &Method::GET).is_err(),
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
            parse_response(huge.as_bytes(), &Method::GET),
            Err(WireError::HeadTooLarge)
        ));
    }

    fn decode_all(decoder: &mut ChunkedDecoder, buf: &mut BytesMut) -> (Vec<u8>, Vec<Decoded>) {
        let mut data = Vec::new();
        let mut rest = Vec::new();
        loop {
            match decoder.decode(buf).unwrap() {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::More => {
                    rest.push(Decoded::More);
                    return (data, rest);
                }
                Decoded::End => {
                    rest.push(Decoded::End);
                    return (data, rest);
                }
                trailers => rest.push(trailers),
            }
        }
    }

    #[test]
    fn a_chunked_body_is_decoded_byte_by_byte_as_at_once() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\nNEXT";
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&wire[..]);
        let (data, rest) = decode_all(&mut decoder, &mut buf);
        assert_eq!(data, b"hello world");
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("42"));
        assert_eq!(
            rest,
            vec![Decoded::Trailers(trailers.clone()), Decoded::End]
        );
        assert_eq!(&buf[..], b"NEXT", "the next response's bytes are left");

        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut seen = Vec::new();
        for &b in &wire[..] {
            buf.extend_from_slice(&[b]);
            let (d, rest) = decode_all(&mut decoder, &mut buf);
            data.extend_from_slice(&d);
            seen.extend(rest.into_iter().filter(|r| *r != Decoded::More));
            if decoder.is_done() {
                break;
            }
        }
        assert_eq!(data, b"hello world");
        assert_eq!(seen, vec![Decoded::Trailers(trailers), Decoded::End]);
    }

    #[test]
    fn a_chunked_body_without_trailers_or_with_bad_framing() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\n"[..]);
        let (data, rest) = decode_all(&mut decoder, &mut buf);
        assert_eq!((data, rest), (b"abc".to_vec(), vec![Decoded::End]));
        assert!(buf.is_empty());

        for bad in [&b"3\r\nabcd\r\n"[..], b"zz\r\n", b"12345678901234567\r\n"] {
            let mut decoder = ChunkedDecoder::default();
            let mut buf = BytesMut::from(bad);
            let mut failed = false;
            for _ in 0..4 {
                match decoder.decode(&mut buf) {
                    Err(_) => failed = true,
                    Ok(Decoded::Data(_)) => continue,
                    Ok(_) => {}
                }
                break;
            }
            assert!(failed, "{bad:?}");
        }
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&[b';'; MAX_CHUNK_LINE + 2][..]);
        buf[0] = b'1';
        assert!(decoder.decode(&mut buf).is_err());
    }

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
                if let Ok(Parsed::Final(_, len)) = parse_response(&bytes, &method) {
                    let mut rest = BytesMut::from(&bytes[len..]);
                    let mut decoder = ChunkedDecoder::default();
                    while let Ok(Decoded::Data(_) | Decoded::Trailers(_)) =
                        decoder.decode(&mut rest)
                    {}
                }
            }
        }
    }
}
