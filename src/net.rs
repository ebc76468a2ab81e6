//! TCP and Unix stream sockets behind one type each, so the proxy does not care
//! which kind a listener or an upstream is; and UDP sockets, which have no
//! connections to accept and are served by [`crate::proxy::udp`] instead: a
//! [`Listener`] is one or the other, and only a [`StreamListener`] accepts.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::address::Address;

/// Who is at the other end of a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client at this address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket client (no address worth showing).
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// The wildcard address of `target`'s family with port 0: what a socket that
/// talks to `target` binds (`0.0.0.0:0` or `[::]:0`).
pub fn any_port_like(target: std::net::SocketAddr) -> std::net::SocketAddr {
    if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// A listening socket, passed by the service manager or bound by `--listen`.
#[derive(Debug)]
pub enum Listener {
    /// A stream socket: connections to accept.
    Stream(StreamListener),
    /// A UDP socket (`ListenDatagram=`, `--listen udp:…`): nothing to accept,
    /// its datagrams are read by [`crate::proxy::udp::UdpForwarder::serve`].
    Datagram(std::sync::Arc<tokio::net::UdpSocket>),
}

/// A listening stream socket.
#[derive(Debug)]
pub enum StreamListener {
    /// TCP, IPv4 or IPv6.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix(UnixListener),
}

/// A connected stream socket: a client or an upstream.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
}

impl StreamListener {
    /// Accepts one client; TCP clients get `TCP_NODELAY`, as small messages must
    /// not wait for Nagle.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            StreamListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::Tcp(peer)))
            }
            StreamListener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), Peer::Unix))
            }
        }
    }
}

impl Stream {
    /// Who is at the other end.
    pub fn peer(&self) -> Peer {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Peer::Tcp).unwrap_or(Peer::Unix),
            Stream::Unix(_) => Peer::Unix,
        }
    }

    /// For a TCP connection: (the peer's address, our local address).
    pub fn tcp_addresses(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        match self {
            Stream::Tcp(s) => Some((s.peer_addr().ok()?, s.local_addr().ok()?)),
            Stream::Unix(_) => None,
        }
    }

    /// Whether the stream has something to read (or its end); if not, `cx`
    /// is woken once it has. Holds nothing between polls.
    pub fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Returns once the peer has closed its sending side (or reset the
    /// connection), without reading anything: bytes it sent stay for later.
    ///
    /// It watches a duplicate of the socket, registered on its own, so the
    /// readiness it clears to wait past bytes already there is not the
    /// stream's: a later read of the stream still sees them.
    pub async fn closed_by_peer(&self) {
        let Ok(watched) = self.duplicate() else {
            // Out of descriptors: the client is taken as waiting.
            return std::future::pending().await;
        };
        let ready = Interest::READABLE;
        let pass = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
        loop {
            let now = match &watched {
                Stream::Tcp(s) => s.ready(ready).await,
                Stream::Unix(s) => s.ready(ready).await,
            };
            match now {
                // Bytes to read are no end: their readiness is cleared (the
                // read "would block") and the next event is waited for.
                Ok(r) if !r.is_read_closed() => {
                    let _ = match &watched {
                        Stream::Tcp(s) => s.try_io(ready, pass),
                        Stream::Unix(s) => s.try_io(ready, pass),
                    };
                }
                _ => return,
            }
        }
    }

    /// Another descriptor of the same socket, registered with the runtime
    /// on its own (closing it leaves the connection open).
    fn duplicate(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => {
                let fd = s.as_fd().try_clone_to_owned()?;
                Stream::Tcp(TcpStream::from_std(std::net::TcpStream::from(fd))?)
            }
            Stream::Unix(s) => {
                let fd = s.as_fd().try_clone_to_owned()?;
                Stream::Unix(UnixStream::from_std(std::os::unix::net::UnixStream::from(
                    fd,
                ))?)
            }
        })
    }

    /// Splits the stream into a reading and a writing half that can be used at once.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }

    /// Connects to `address`, trying each resolved TCP address in turn.
    pub async fn connect(address: &Address) -> io::Result<Stream> {
        match address {
            Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            Address::Tcp { addrs, .. } => {
                let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
                for addr in addrs {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Address::Udp { .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{address} is a UDP address: no stream connects to it"),
            )),
        }
    }
}

/// The reading half of a [`Stream`] (see [`Stream::split`]).
pub enum ReadHalf<'a> {
    /// TCP.
    Tcp(tokio::net::tcp::ReadHalf<'a>),
    /// A Unix stream socket.
    Unix(tokio::net::unix::ReadHalf<'a>),
}

/// The writing half of a [`Stream`] (see [`Stream::split`]).
pub enum WriteHalf<'a> {
    /// TCP.
    Tcp(tokio::net::tcp::WriteHalf<'a>),
    /// A Unix stream socket.
    Unix(tokio::net::unix::WriteHalf<'a>),
}

/// The whole socket behind a half, for what needs only a shared reference.
#[derive(Clone, Copy)]
pub enum SocketRef<'a> {
    /// TCP.
    Tcp(&'a TcpStream),
    /// A Unix stream socket.
    Unix(&'a UnixStream),
}

impl ReadHalf<'_> {
    /// The socket this half reads from.
    pub fn socket(&self) -> SocketRef<'_> {
        match self {
            ReadHalf::Tcp(h) => SocketRef::Tcp(h.as_ref()),
            ReadHalf::Unix(h) => SocketRef::Unix(h.as_ref()),
        }
    }
}

impl WriteHalf<'_> {
    /// The socket this half writes to.
    pub fn socket(&self) -> SocketRef<'_> {
        match self {
            WriteHalf::Tcp(h) => SocketRef::Tcp(h.as_ref()),
            WriteHalf::Unix(h) => SocketRef::Unix(h.as_ref()),
        }
    }
}

impl SocketRef<'_> {
    /// The socket's descriptor, for `splice(2)`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            SocketRef::Tcp(s) => s.as_fd(),
            SocketRef::Unix(s) => s.as_fd(),
        }
    }

    /// Waits until the socket may be ready for `interest` (it can be a false alarm).
    pub async fn ready(&self, interest: Interest) -> io::Result<()> {
        match self {
            SocketRef::Tcp(s) => s.ready(interest).await.map(drop),
            SocketRef::Unix(s) => s.ready(interest).await.map(drop),
        }
    }

    /// Runs a non-blocking operation on the socket; `WouldBlock` clears the
    /// readiness so that the next [`SocketRef::ready`] waits for the kernel.
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            SocketRef::Tcp(s) => s.try_io(interest, f),
            SocketRef::Unix(s) => s.try_io(interest, f),
        }
    }
}

/// Implements `poll_read` for an enum of a TCP and a Unix variant.
macro_rules! read_by_variant {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Implements `poll_write`, `poll_flush` and `poll_shutdown` for an enum of
/// a TCP and a Unix variant, plus any extra methods given.
macro_rules! write_by_variant {
    ($ty:ty $(, $extra:item)*) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Unix(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
                }
            }

            $($extra)*
        }
    };
}

read_by_variant!(ReadHalf<'_>);
read_by_variant!(Stream);
write_by_variant!(WriteHalf<'_>);
write_by_variant!(
    Stream,
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    },
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }
);

impl hyper_util::client::legacy::connect::Connection for Stream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// Whether an accept error is about resources (back off) rather than one client.
pub fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
