//! Byte-level wrappers both sides of the HTTP proxy use: a stream with bytes
//! already read from it in front ([`Prefixed`]: a client's connection taken
//! back from hyper, an upstream connection handed over for an upgrade), and
//! bodies and streams that count their bytes into a request's entry in the
//! list of work.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::Stream;
use crate::serve::work::Entry;

/// A client's stream with bytes already read from it in front.
#[derive(Debug)]
pub struct Prefixed {
    prefix: Bytes,
    stream: Stream,
}

impl Prefixed {
    /// `stream`, whose next bytes are `prefix`.
    pub(super) fn new(prefix: Bytes, stream: Stream) -> Prefixed {
        Prefixed { prefix, stream }
    }

    /// Puts `read` (read from this stream, not yet used) in front again.
    pub(super) fn unread(mut self, read: Bytes) -> Prefixed {
        // An empty `Bytes` can still hold the buffer it was cut from
        // (hyper's read buffer): only bytes are kept, never a buffer.
        if read.is_empty() {
            if self.prefix.is_empty() {
                self.prefix = Bytes::new();
            }
        } else if self.prefix.is_empty() {
            self.prefix = read;
        } else {
            let mut both = BytesMut::with_capacity(read.len() + self.prefix.len());
            both.extend_from_slice(&read);
            both.extend_from_slice(&self.prefix);
            self.prefix = both.freeze();
        }
        self
    }

    /// The stream under the prefix.
    pub(super) fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The stream under the prefix, to read from.
    pub(super) fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Lets the buffer the bytes were read into go.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A request body that counts its bytes as from the client.
#[derive(Debug)]
pub struct Counted<B> {
    pub(super) inner: B,
    pub(super) work: Option<Arc<Entry>>,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(work)) = (&polled, &this.work) {
            if let Some(data) = frame.data_ref() {
                work.traffic.from_client(data.remaining() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's side of an upgraded connection, counting what is read
/// from it and written to it.
pub(super) struct CountedIo<T> {
    pub(super) io: T,
    pub(super) work: Option<Arc<Entry>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for CountedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(work)) = (&polled, &this.work) {
            work.traffic
                .from_client((buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(work)) = (&polled, &this.work) {
            work.traffic.to_client(*n as u64);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
