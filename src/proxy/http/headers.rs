//! Headers a proxy must not pass on, what a request's headers ask for, and
//! a request's head taken out of the connection's read buffer.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use hyper::body::Incoming;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
/// `Trailer` is not among them: it names the trailer fields end to end.
pub(super) static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// How many [`HOP_BY_HOP`] headers there are.
const HOP_BY_HOP_COUNT: usize = 8;

/// Where `Connection` is in [`HOP_BY_HOP`]: removed first, with the names it
/// lists.
const CONNECTION_AT: usize = 0;

/// Where the header `name` (any case) is in [`HOP_BY_HOP`].
fn hop_by_hop_index(name: &str) -> Option<usize> {
    // Lengths differ for most names: they are told apart at once.
    HOP_BY_HOP
        .iter()
        .position(|hop| hop.as_str().eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop headers, and those the `Connection` header names. An
/// upgrade keeps `Upgrade` and says `Connection: upgrade` again.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Which of them are there, in one pass over the names (usually none or
    // one, `Connection`): only those are looked up again to be removed.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    if present[CONNECTION_AT] {
        // Taken out first (the usual single one moved, not copied): the
        // names it lists go next.
        let more: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .skip(1)
            .cloned()
            .collect();
        let first = headers.remove(header::CONNECTION);
        for token in first
            .iter()
            .chain(&more)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            // A hop-by-hop one (`keep-alive`, usually) goes below if it is
            // there; any other is looked up and removed.
            if hop_by_hop_index(token).is_none() {
                headers.remove(token);
            }
        }
    }
    for (at, name) in HOP_BY_HOP.iter().enumerate() {
        if present[at] && at != CONNECTION_AT {
            headers.remove(name);
        }
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether the request asks to switch protocols (or tunnel): such a
/// connection is in flight for as long as it lives.
pub(super) fn wants_upgrade(req: &Request<Incoming>) -> bool {
    if req.method() == Method::CONNECT {
        return true;
    }
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// `req` with its URI and header values copied into one allocation of their
/// own. hyper parses a request in place, so its parts share the buffer the
/// client's connection reads into; hyper reads on while the request is under
/// way (to see the client leave), finds that buffer held, and takes another
/// 8 KiB for each request in flight. A value that does not copy cleanly stays
/// as it was.
pub(super) fn detached<B>(req: Request<B>) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let values: usize = parts.headers.values().map(HeaderValue::len).sum();
    let mut copy = BytesMut::with_capacity(values + 64);
    put_uri(&mut copy, &parts.uri);
    let uri_len = copy.len();
    for value in parts.headers.values() {
        copy.extend_from_slice(value.as_bytes());
    }
    let copy = copy.freeze();
    if let Ok(uri) = Uri::from_maybe_shared(copy.slice(..uri_len)) {
        parts.uri = uri;
    }
    let mut at = uri_len;
    for value in parts.headers.values_mut() {
        let end = at + value.len();
        if let Ok(mut copied) = HeaderValue::from_maybe_shared(copy.slice(at..end)) {
            copied.set_sensitive(value.is_sensitive());
            *value = copied;
        }
        at = end;
    }
    Request::from_parts(parts, body)
}

/// Writes `uri` as its `Display` does, without the formatting machinery (a
/// measurable cost per request).
pub(super) fn put_uri(buf: &mut BytesMut, uri: &Uri) {
    if let Some(scheme) = uri.scheme() {
        buf.extend_from_slice(scheme.as_str().as_bytes());
        buf.extend_from_slice(b"://");
    }
    if let Some(authority) = uri.authority() {
        buf.extend_from_slice(authority.as_str().as_bytes());
    }
    buf.extend_from_slice(uri.path().as_bytes());
    if let Some(query) = uri.query() {
        buf.extend_from_slice(b"?");
        buf.extend_from_slice(query.as_bytes());
    }
}

/// Whether the request's `Accept` takes HTML.
pub(super) fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn only_hop_by_hop_headers_and_those_connection_names_in_any_case_go() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("X-Private"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" Keep-Alive ,TE"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("proxy-connection", HeaderValue::from_static("close"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        h.insert(header::HOST, HeaderValue::from_static("example.org"));
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host"]);

        // None there: nothing changes, an upgrade asked for or not.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.org"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2);
        assert!(!h.contains_key(header::CONNECTION));

        for (i, hop) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(&hop.as_str().to_uppercase()), Some(i));
        }
        assert_eq!(hop_by_hop_index("x-private"), None);
    }

    #[test]
    fn a_uri_is_written_as_displayed() {
        for uri in [
            "/",
            "/a/b?c=d&e",
            "*",
            "example.org:443",
            "http://example.org",
            "http://user@example.org:8080/p?q",
            "https://[::1]/x?",
        ] {
            let uri: Uri = uri.parse().unwrap();
            let mut written = BytesMut::new();
            put_uri(&mut written, &uri);
            assert_eq!(&written[..], uri.to_string().as_bytes(), "{uri:?}");
        }
    }

    #[test]
    fn a_detached_request_keeps_its_head_but_not_the_read_buffer() {
        let read = bytes::Bytes::from_static(b"/a/b?c=d example.org one two \xe9t\xe9");
        let shared =
            |r: std::ops::Range<usize>| HeaderValue::from_maybe_shared(read.slice(r)).unwrap();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(Uri::from_maybe_shared(read.slice(0..8)).unwrap())
            .body(())
            .unwrap();
        let h = req.headers_mut();
        h.insert(header::HOST, shared(9..20));
        h.append("x-list", shared(21..24));
        h.append("x-list", shared(25..28));
        let mut secret = shared(29..32);
        secret.set_sensitive(true);
        h.insert(header::AUTHORIZATION, secret);
        let before = req.headers().clone();

        let req = detached(req);

        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.headers(), &before);
        let values: Vec<_> = req.headers().get_all("x-list").iter().collect();
        assert_eq!(values, ["one", "two"]);
        assert!(req.headers()[header::AUTHORIZATION].is_sensitive());
        let inside = |p: *const u8| read.as_ptr_range().contains(&p);
        assert!(!inside(req.uri().path().as_ptr()));
        assert!(req
            .headers()
            .values()
            .all(|v| !inside(v.as_bytes().as_ptr())));
    }

    #[test]
    fn a_detached_request_keeps_absolute_and_authority_forms() {
        for uri in ["http://example.org:8080/x?y", "example.org:443", "*"] {
            let req = Request::builder().uri(uri).body(()).unwrap();
            assert_eq!(detached(req).uri(), uri);
        }
    }
}
