//! TCP mode's byte copy, both ways at once, with half-close passed through.
//!
//! Each direction starts with plain reads and writes through a small buffer,
//! which is cheapest for the small messages of most protocols. A direction
//! whose read fills the whole buffer is a bulk flow: it switches to
//! `splice(2)` through a pipe of its own, so the kernel moves the bytes from
//! one socket to the other without copying them through idlegate.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::Interest;

use crate::net::Stream;
use crate::sys;

/// The buffer of a direction in copy mode; a read that fills it means bulk.
const BUFFER: usize = 16 * 1024;
/// The pipe of a direction in splice mode.
const PIPE: usize = 256 * 1024;

/// Copies `a` to `b` and `b` to `a` until both directions reached
/// end-of-file (each end-of-file is passed on as a write shutdown); returns
/// the bytes moved each way. An error in either direction ends both.
pub async fn bidirectional(a: &Stream, b: &Stream) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(a, b), one_way(b, a))
}

async fn one_way(from: &Stream, to: &Stream) -> io::Result<u64> {
    let mut total = 0u64;
    if copy(from, to, &mut total, true).await? == Copied::All {
        return Ok(total);
    }
    let Ok((pipe_out, pipe_in)) = sys::pipe(PIPE) else {
        copy(from, to, &mut total, false).await?;
        return Ok(total);
    };
    loop {
        let n = match fill(from, &pipe_in).await {
            Ok(n) => n,
            // The socket kind cannot splice: copy instead.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                copy(from, to, &mut total, false).await?;
                return Ok(total);
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            let _ = sys::shutdown_write(to.fd());
            return Ok(total);
        }
        drain(&pipe_out, to, n).await?;
        total += n as u64;
    }
}

/// How far [`copy`] went.
#[derive(Debug, PartialEq, Eq)]
enum Copied {
    /// To end-of-file, passed on.
    All,
    /// Until a read filled the buffer: a bulk flow.
    UntilBulk,
}

/// Copy mode, through a buffer, to the end or (with `until_bulk`) until a
/// read fills the buffer; counts into `total`.
async fn copy(from: &Stream, to: &Stream, total: &mut u64, until_bulk: bool) -> io::Result<Copied> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = read(from, &mut buf).await?;
        if n == 0 {
            let _ = sys::shutdown_write(to.fd());
            return Ok(Copied::All);
        }
        write_all(to, &buf[..n]).await?;
        *total += n as u64;
        if until_bulk && n == buf.len() {
            return Ok(Copied::UntilBulk);
        }
    }
}

async fn read(from: &Stream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match from.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                from.ready(Interest::READABLE).await?
            }
            other => return other,
        }
    }
}

async fn write_all(to: &Stream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match to.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.ready(Interest::WRITABLE).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Splices what the socket has (up to the pipe's size) into the empty pipe.
async fn fill(from: &Stream, pipe_in: &OwnedFd) -> io::Result<usize> {
    loop {
        match from.try_io(Interest::READABLE, || {
            sys::splice(from.fd(), pipe_in.as_fd(), PIPE)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                from.ready(Interest::READABLE).await?
            }
            other => return other,
        }
    }
}

/// Splices `n` bytes from the pipe into the socket.
async fn drain(pipe_out: &OwnedFd, to: &Stream, mut n: usize) -> io::Result<()> {
    while n > 0 {
        match to.try_io(Interest::WRITABLE, || {
            sys::splice(pipe_out.as_fd(), to.fd(), n)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => n -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.ready(Interest::WRITABLE).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
