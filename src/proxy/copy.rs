//! TCP mode's byte copy, both ways at once, with half-close passed through.
//!
//! Each direction starts with plain reads and writes through a small buffer,
//! which is cheapest for the small messages of most protocols. A direction
//! whose read fills the whole buffer is a bulk flow: it switches to
//! `splice(2)` through a pipe of its own, so the kernel moves the bytes from
//! one socket to the other without copying them through idlegate.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::time::Instant;

use crate::net::{ReadHalf, SocketRef, Stream, WriteHalf};
use crate::sys;

/// The buffer of a direction in copy mode; a read that fills it means bulk.
const BUFFER: usize = 16 * 1024;
/// The pipe of a direction in splice mode: the largest an unprivileged
/// process may ask for (fs.pipe-max-size), so one pair of splices moves up to
/// 1 MiB: 19-39 ticks of CPU per GiB against 39-47 with 256 KiB pipes, measured.
const PIPE: usize = 1024 * 1024;

/// The error that ends a copy quiet for longer than its limit.
#[derive(Debug, thiserror::Error)]
#[error("no bytes either way for {0:?}")]
pub struct Quiet(pub Duration);

/// When bytes last moved, either way (kept only when a quiet limit is set:
/// without one, the per-read clock read is skipped).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    tracking: bool,
}

impl Activity {
    fn new(tracking: bool) -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            tracking,
        }
    }

    fn touch(&self) {
        if !self.tracking {
            return;
        }
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Returns once no bytes moved for `limit`.
    async fn quiet_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if last.elapsed() >= limit {
                return;
            }
            tokio::time::sleep_until(last + limit).await;
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions reached
/// end-of-file (each end-of-file is passed on as a write shutdown); returns
/// the bytes moved each way. An error in either direction ends both, and so
/// does `quiet_limit` without a byte either way (a [`Quiet`] error).
pub async fn bidirectional(
    a: &mut Stream,
    b: &mut Stream,
    quiet_limit: Option<Duration>,
) -> io::Result<(u64, u64)> {
    let (a_read, a_write) = a.split();
    let (b_read, b_write) = b.split();
    let activity = Activity::new(quiet_limit.is_some());
    let copying = async {
        tokio::try_join!(
            one_way(a_read, b_write, &activity),
            one_way(b_read, a_write, &activity)
        )
    };
    match quiet_limit {
        None => copying.await,
        Some(limit) => tokio::select! {
            copied = copying => copied,
            _ = activity.quiet_for(limit) => Err(io::Error::new(io::ErrorKind::TimedOut, Quiet(limit))),
        },
    }
}

async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    activity: &Activity,
) -> io::Result<u64> {
    let mut total = 0u64;
    if copy(&mut from, &mut to, &mut total, true, activity).await? == Copied::All {
        return Ok(total);
    }
    let Ok((pipe_out, pipe_in)) = sys::pipe(PIPE) else {
        copy(&mut from, &mut to, &mut total, false, activity).await?;
        return Ok(total);
    };
    loop {
        let n = match fill(from.socket(), &pipe_in).await {
            Ok(n) => n,
            // The socket kind cannot splice: copy instead.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                copy(&mut from, &mut to, &mut total, false, activity).await?;
                return Ok(total);
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(total);
        }
        activity.touch();
        drain(&pipe_out, to.socket(), n).await?;
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
async fn copy(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    total: &mut u64,
    until_bulk: bool,
    activity: &Activity,
) -> io::Result<Copied> {
    // Read into spare capacity, never zeroed: a connection of small messages
    // touches (and keeps resident) only the first page of its buffer.
    let mut buf = Vec::with_capacity(BUFFER);
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(Copied::All);
        }
        activity.touch();
        to.write_all(&buf).await?;
        *total += n as u64;
        if until_bulk && n == BUFFER {
            return Ok(Copied::UntilBulk);
        }
    }
}

/// Splices what the socket has (up to the pipe's size) into the empty pipe.
async fn fill(from: SocketRef<'_>, pipe_in: &OwnedFd) -> io::Result<usize> {
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
async fn drain(pipe_out: &OwnedFd, to: SocketRef<'_>, mut n: usize) -> io::Result<()> {
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
