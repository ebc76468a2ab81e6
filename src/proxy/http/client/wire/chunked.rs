//! A chunked body decoded (RFC 9112 §7.1) out of a read buffer.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::response::header_map;
use super::{WireError, MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS};

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
    use http::HeaderValue;

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
}
