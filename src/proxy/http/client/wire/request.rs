//! A request on the wire: its head written out, and how its body follows
//! (as it is, or chunked).

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;
use http_body::Body;

use super::response::content_length;
use crate::proxy::http::headers::put_uri;

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
    // A `BytesMut` frozen, not a `Vec` turned into `Bytes`: that copies
    // again when it has room to spare.
    let mut head = BytesMut::with_capacity(64 + size);
    // The URI as hyper's client writes it: origin, authority or `*` form.
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.extend_from_slice(b" ");
    put_uri(&mut head, req.uri());
    head.extend_from_slice(b" HTTP/1.1\r\n");
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
    (head.freeze(), outgoing)
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
    let mut end = BytesMut::from(&b"0\r\n"[..]);
    put_fields(&mut end, trailers.iter());
    end.extend_from_slice(b"\r\n");
    end.freeze()
}

/// Writes header fields as HTTP/1.1 lines.
fn put_fields<'h>(
    out: &mut BytesMut,
    fields: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};
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
}
