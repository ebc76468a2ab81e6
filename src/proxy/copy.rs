//! TCP mode's byte copy, both ways at once, with half-close passed through.
//!
//! Each direction starts with plain reads and writes through a small buffer
//! on the stack, which is cheapest for the small messages of most protocols
//! and leaves a waiting connection no buffer to keep. A direction
//! whose read fills the whole buffer is a bulk flow: it switches to
//! `splice(2)` through a pipe of its own, so the kernel moves the bytes from
//! one socket to the other without copying them through idlegate.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::time::Instant;

use crate::net::{ReadHalf, SocketRef, Stream, WriteHalf};
use crate::serve::work::Traffic;
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
/// the bytes moved each way, and counts them into `traffic` as they move
/// (`a` is the client). An error in either direction ends both, and so
/// does `quiet_limit` without a byte either way (a [`Quiet`] error).
pub async fn bidirectional(
    a: &mut Stream,
    b: &mut Stream,
    quiet_limit: Option<Duration>,
    traffic: &Traffic,
) -> io::Result<(u64, u64)> {
    let (a_read, a_write) = a.split();
    let (b_read, b_write) = b.split();
    let activity = Activity::new(quiet_limit.is_some());
    let (from_client, to_client) = (|n| traffic.from_client(n), |n| traffic.to_client(n));
    let copying = async {
        tokio::try_join!(
            one_way(a_read, b_write, &activity, &from_client),
            one_way(b_read, a_write, &activity, &to_client)
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
    moved: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    let mut total = 0u64;
    if copy(&mut from, &mut to, &mut total, true, activity, moved).await? == Copied::All {
        return Ok(total);
    }
    let Ok((pipe_out, pipe_in)) = sys::pipe(PIPE) else {
        copy(&mut from, &mut to, &mut total, false, activity, moved).await?;
        return Ok(total);
    };
    loop {
        let n = match fill(from.socket(), &pipe_in).await {
            Ok(n) => n,
            // The socket kind cannot splice: copy instead.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                copy(&mut from, &mut to, &mut total, false, activity, moved).await?;
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
        moved(n as u64);
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

/// Copy mode, to the end or (with `until_bulk`) until a read fills the
/// buffer; counts into `total`. A waiting connection holds no buffer: each
/// read goes through one on the stack, and only what the peer cannot take at
/// once is kept, on the heap, until it can.
async fn copy(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    total: &mut u64,
    until_bulk: bool,
    activity: &Activity,
    moved: &(dyn Fn(u64) + Sync),
) -> io::Result<Copied> {
    loop {
        from.socket().ready(Interest::READABLE).await?;
        let (n, unsent) = match pass_on(from.socket(), to.socket()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => other?,
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(Copied::All);
        }
        activity.touch();
        if let Some(unsent) = unsent {
            to.write_all(&unsent).await?;
        }
        *total += n as u64;
        moved(n as u64);
        if until_bulk && n == BUFFER {
            return Ok(Copied::UntilBulk);
        }
    }
}

/// One read from `from`, and as much of it as `to` takes now, through a
/// buffer on the stack; returns the bytes read (0 at end-of-file) and a copy
/// of those `to` did not take yet. `WouldBlock`: nothing to read after all.
fn pass_on(from: SocketRef<'_>, to: SocketRef<'_>) -> io::Result<(usize, Option<Vec<u8>>)> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); BUFFER];
    let data = from.try_io(Interest::READABLE, || sys::recv(from.fd(), &mut buf))?;
    if data.is_empty() {
        return Ok((0, None));
    }
    let sent = match to.try_io(Interest::WRITABLE, || sys::send(to.fd(), data)) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    Ok((
        data.len(),
        (sent < data.len()).then(|| data[sent..].to_vec()),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixStream;

    /// Writes to `s` until the kernel takes no more; returns what it took.
    fn fill_send_buffer(s: &UnixStream) -> Vec<u8> {
        let mut taken = Vec::new();
        for chunk in [4096, 1] {
            let bytes = vec![b'q'; chunk];
            loop {
                match sys::send(s.as_fd(), &bytes) {
                    Ok(n) => taken.extend_from_slice(&bytes[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("filling: {e}"),
                }
            }
        }
        taken
    }

    /// A small message the peer cannot take yet is kept, and sent behind what
    /// the peer had queued once it reads; the end-of-file follows it.
    #[tokio::test]
    async fn what_the_peer_cannot_take_yet_is_sent_once_it_can() {
        let (mut client, client_side) = UnixStream::pair().unwrap();
        let (upstream_side, mut upstream) = UnixStream::pair().unwrap();
        let mut expected = fill_send_buffer(&upstream_side);
        assert!(
            expected.len() >= 4096,
            "the send buffer took {} bytes",
            expected.len()
        );
        let copying = tokio::spawn(async move {
            let (mut a, mut b) = (Stream::Unix(client_side), Stream::Unix(upstream_side));
            let traffic = Traffic::default();
            let copied = bidirectional(&mut a, &mut b, None, &traffic).await;
            (copied, traffic.totals())
        });
        client.write_all(b"hello").await.unwrap();
        // Only once the copy has read the message, so it meets the full
        // buffer: the upstream must not start reading before.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sys::unread_by_peer(client.as_fd()).unwrap() > 0 {
            assert!(Instant::now() < deadline, "the copy never read the message");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        client.shutdown().await.unwrap();
        expected.extend_from_slice(b"hello");
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expected.len(), "every byte arrived");
        assert!(got == expected, "the message came after the queued bytes");
        drop(upstream);
        let (copied, counted) = copying.await.unwrap();
        assert_eq!(copied.unwrap(), (5, 0));
        assert_eq!(counted, (5, 0), "counted as they moved");
    }
}
