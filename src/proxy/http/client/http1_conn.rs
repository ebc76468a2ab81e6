//! One HTTP/1.1 connection to the upstream, driven by the task whose request
//! uses it: the request's head written, its body sent alongside as it comes,
//! the response's head read, then its body, all through one read buffer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::upstream::UpstreamConnection;
use super::wire::{self, ChunkedDecoder, Decoded, Outgoing, Parsed, ResponseHead, WireError};
use super::UpstreamBody;
use crate::proxy::http::io::Prefixed;

/// The read buffer's size to begin with: a page, which holds a response
/// head; reads that fill it grow it for a large body.
const INITIAL_READ: usize = 4096;
/// The most a read asks for once reads keep filling the buffer.
const MAX_READ: usize = 256 * 1024;
/// Less room than this in the read buffer is made room for before a read.
const MIN_ROOM: usize = 2048;
/// How much of a request's body may wait to be written before the next
/// piece is taken from the client.
const SEND_AHEAD: usize = 64 * 1024;

/// A request ready to go: its head as bytes, and its body.
pub(in crate::proxy::http) struct Outbound {
    /// The request line and header fields.
    pub head: Bytes,
    /// How the body is framed.
    pub outgoing: Outgoing,
    /// The body.
    pub body: UpstreamBody,
    /// The method (a `HEAD` or `CONNECT` request's response is read apart).
    pub method: Method,
}

impl Outbound {
    /// `req` for the wire: its head written out, its body to follow.
    pub(in crate::proxy::http) fn of(req: Request<UpstreamBody>) -> Outbound {
        let (head, outgoing) = wire::request_head(&req);
        let method = req.method().clone();
        Outbound {
            head,
            outgoing,
            body: req.into_body(),
            method,
        }
    }
}

/// Why a request got no response head.
pub(in crate::proxy::http) enum SendError {
    /// Nothing of it reached the upstream: it can go on another connection.
    Unsent(Outbound, WireError),
    /// It failed.
    Failed(WireError),
}

/// A request's body on its way out.
struct Sending {
    body: UpstreamBody,
    /// What `Content-Length` leaves to send; `None` when chunked.
    left: Option<u64>,
}

/// How far a response's body has been read.
#[derive(Debug)]
pub(in crate::proxy::http) enum BodyState {
    /// This much to go (never 0).
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
    /// Until the upstream closes.
    UntilClose,
    /// Read to its end (or none).
    Done,
    /// The connection is to be handed over (an upgrade).
    Switched,
}

impl BodyState {
    /// The state a body framed as `framing` starts in.
    pub(in crate::proxy::http) fn of(framing: wire::Framing) -> BodyState {
        match framing {
            wire::Framing::Empty | wire::Framing::Length(0) => BodyState::Done,
            wire::Framing::Length(n) => BodyState::Length(n),
            wire::Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            wire::Framing::UntilClose => BodyState::UntilClose,
            wire::Framing::Switch => BodyState::Switched,
        }
    }
}

/// An upgraded connection's upstream side: the socket, the bytes read past
/// the `101`'s head first, and the slot it holds.
pub(in crate::proxy::http) struct Upgraded {
    /// The socket.
    pub io: Prefixed,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// One HTTP/1.1 connection to the upstream.
pub(in crate::proxy::http) struct Http1Connection {
    io: UpstreamConnection,
    /// What was read and not yet used.
    read: BytesMut,
    /// How much the next read asks for.
    read_size: usize,
    /// What is to be written, in order.
    queue: VecDeque<Bytes>,
    /// The request's body, while it is being sent.
    sending: Option<Sending>,
    /// Whether a piece of the request's body has been taken.
    body_taken: bool,
    /// Whether it can carry another request after this one.
    reusable: bool,
}

impl std::fmt::Debug for Http1Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Connection")
            .field("buffered", &self.read.len())
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl Http1Connection {
    /// A new connection.
    pub(in crate::proxy::http) fn new(io: UpstreamConnection) -> Http1Connection {
        Http1Connection {
            io,
            read: BytesMut::new(),
            read_size: INITIAL_READ,
            queue: VecDeque::new(),
            sending: None,
            body_taken: false,
            reusable: true,
        }
    }

    /// Whether an idle connection takes a request now: the upstream has
    /// neither closed it nor sent anything unasked.
    pub(in crate::proxy::http) fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.read.is_empty() || !self.reusable {
            return false;
        }
        let mut probe = [0u8; 64];
        let mut buf = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io).poll_read(cx, &mut buf).is_pending()
    }

    /// Whether, its response read to the end, the connection can carry
    /// another request.
    pub(in crate::proxy::http) fn reusable(&self) -> bool {
        self.reusable && self.sending.is_none() && self.queue.is_empty() && self.read.is_empty()
    }

    /// The connection handed over, for an upgrade.
    pub(in crate::proxy::http) fn upgraded(self) -> Upgraded {
        let (stream, slot) = self.io.into_parts();
        Upgraded {
            io: Prefixed::new(self.read.freeze(), stream),
            _slot: slot,
        }
    }

    /// Sends `out` and reads its response's head (passing interim ones
    /// over), sending the request's body meanwhile.
    pub(in crate::proxy::http) async fn send(
        &mut self,
        out: Outbound,
    ) -> Result<ResponseHead, SendError> {
        let Outbound {
            head,
            outgoing,
            body,
            method,
        } = out;
        self.queue.push_back(head.clone());
        self.body_taken = false;
        self.sending = match outgoing {
            Outgoing::Empty => None,
            Outgoing::Length(n) => Some(Sending {
                body,
                left: Some(n),
            }),
            Outgoing::Chunked => Some(Sending { body, left: None }),
        };
        let mut write_failed = None;
        let result = poll_fn(|cx| {
            if write_failed.is_none() {
                if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                    match e {
                        // Not even the whole head went: nothing was taken.
                        WireError::Io(_) if !self.body_taken && self.queue_holds_head(&head) => {
                            return Poll::Ready(Err((e, true)))
                        }
                        // The upstream may have answered first: read on.
                        WireError::Io(_) => {
                            self.reusable = false;
                            self.queue.clear();
                            self.sending = None;
                            write_failed = Some(e);
                        }
                        e => return Poll::Ready(Err((e, false))),
                    }
                }
            }
            self.poll_head(&method, cx).map_err(|e| match e {
                WireError::ClosedBeforeAnswering => (write_failed.take().unwrap_or(e), false),
                e => (e, false),
            })
        })
        .await;
        match result {
            Ok(head) => {
                self.reusable &= head.keep_alive;
                Ok(head)
            }
            Err((e, unsent)) => {
                self.reusable = false;
                let sending = self.sending.take();
                if !unsent {
                    return Err(SendError::Failed(e));
                }
                let body = match sending {
                    Some(sending) => sending.body,
                    None => http_body_util::Either::Right(http_body_util::Full::default()),
                };
                let out = Outbound {
                    head,
                    outgoing,
                    body,
                    method,
                };
                Err(SendError::Unsent(out, e))
            }
        }
    }

    /// Whether the head is still (wholly or partly) unwritten: the request
    /// cannot have been taken.
    fn queue_holds_head(&self, head: &Bytes) -> bool {
        self.queue
            .front()
            .is_some_and(|front| front.len() <= head.len() && head.ends_with(front))
    }

    /// Reads a response's head, passing interim (1xx) ones over.
    fn poll_head(
        &mut self,
        method: &Method,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ResponseHead, WireError>> {
        loop {
            if !self.read.is_empty() {
                match wire::parse_response(&mut self.read, method)? {
                    Parsed::Final(head) => return Poll::Ready(Ok(head)),
                    Parsed::Interim => continue,
                    Parsed::Partial => {}
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.read.is_empty() => {
                    return Poll::Ready(Err(WireError::ClosedBeforeAnswering))
                }
                Ok(0) => return Poll::Ready(Err(WireError::Truncated)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Reads the response's body on from `state`, sending what is left of
    /// the request's body alongside.
    pub(in crate::proxy::http) fn poll_body(
        &mut self,
        state: &mut BodyState,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        if self.sending.is_some() || !self.queue.is_empty() {
            match self.poll_send(cx) {
                Poll::Ready(Err(WireError::Io(e))) => {
                    // The upstream answered without taking all of it.
                    tracing::debug!(target: "idlegate::proxy::http::http1_conn", "upstream stopped taking the request body: {e}");
                    self.reusable = false;
                    self.sending = None;
                    self.queue.clear();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                _ => {}
            }
        }
        loop {
            match state {
                BodyState::Done | BodyState::Switched => return Poll::Ready(None),
                BodyState::Length(left) if !self.read.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(self.read.len());
                    *left -= take as u64;
                    if *left == 0 {
                        *state = BodyState::Done;
                    }
                    let data = self.read.split_to(take).freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::UntilClose if !self.read.is_empty() => {
                    let data = self.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::Chunked(decoder) => match decoder.decode(&mut self.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        *state = BodyState::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        *state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                _ => {}
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.reusable = false;
                    if let BodyState::UntilClose = state {
                        *state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(WireError::Truncated)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// Writes what is queued and takes in the request's body as it comes;
    /// ready when all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        loop {
            if let Some(sending) = &mut self.sending {
                if sending.left != Some(0) {
                    let queued: usize = self.queue.iter().map(Bytes::len).sum();
                    if queued < SEND_AHEAD {
                        match Pin::new(&mut sending.body).poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                self.body_taken = true;
                                self.take_frame(frame)?;
                                continue;
                            }
                            Poll::Ready(Some(Err(e))) => {
                                return Poll::Ready(Err(WireError::RequestBody(e)))
                            }
                            Poll::Ready(None) => {
                                self.body_taken = true;
                                self.body_ended()?;
                                continue;
                            }
                            Poll::Pending => {}
                        }
                    }
                } else {
                    // All of a Content-Length body is taken.
                    self.sending = None;
                    continue;
                }
            }
            if self.queue.is_empty() {
                return match self.sending {
                    None => Poll::Ready(Ok(())),
                    Some(_) => Poll::Pending,
                };
            }
            ready!(self.poll_write_queue(cx))?;
        }
    }

    /// Queues a piece of the request's body.
    fn take_frame(&mut self, frame: Frame<Bytes>) -> Result<(), WireError> {
        let Some(sending) = &mut self.sending else {
            return Ok(());
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => match &mut sending.left {
                Some(left) => {
                    *left = left
                        .checked_sub(data.len() as u64)
                        .ok_or(WireError::RequestLength)?;
                    self.queue.push_back(data);
                }
                None => self.queue.extend(wire::chunk(data)),
            },
            Err(frame) => {
                if let (None, Ok(trailers)) = (sending.left, frame.into_trailers()) {
                    self.queue.push_back(wire::last_chunk(Some(&trailers)));
                    self.sending = None;
                }
            }
        }
        Ok(())
    }

    /// The request's body ended: a chunked one is ended on the wire.
    fn body_ended(&mut self) -> Result<(), WireError> {
        match self.sending.take().map(|s| s.left) {
            Some(None) => self.queue.push_back(wire::last_chunk(None::<&HeaderMap>)),
            Some(Some(0)) | None => {}
            Some(Some(_)) => return Err(WireError::RequestLength),
        }
        Ok(())
    }

    /// Writes the queue out, several pieces at once.
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        while !self.queue.is_empty() {
            let io = Pin::new(&mut self.io);
            let written = if self.queue.len() == 1 {
                ready!(io.poll_write(cx, &self.queue[0]))?
            } else {
                let mut slices = [IoSlice::new(&[]); 8];
                let count = self.queue.len().min(slices.len());
                for (slice, part) in slices.iter_mut().zip(&self.queue) {
                    *slice = IoSlice::new(part);
                }
                ready!(io.poll_write_vectored(cx, &slices[..count]))?
            };
            if written == 0 {
                return Poll::Ready(Err(
                    std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                ));
            }
            let mut written = written;
            while written > 0 {
                let front = self.queue.front_mut().expect("written from the queue");
                if front.len() <= written {
                    written -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what the upstream sent into the read buffer: 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < MIN_ROOM {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        // Reads that fill the room ask for more next time; small ones less.
        if read == room && room >= self.read_size / 2 {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if read < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(INITIAL_READ);
        }
        Poll::Ready(Ok(read))
    }

    /// Ready for the pool: a read buffer grown for a large body is let go.
    pub(in crate::proxy::http) fn rest(&mut self) {
        if self.read.capacity() > 2 * INITIAL_READ {
            self.read = BytesMut::new();
        }
        self.read_size = INITIAL_READ;
    }
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("method", &self.method)
            .field("outgoing", &self.outgoing)
            .finish_non_exhaustive()
    }
}
