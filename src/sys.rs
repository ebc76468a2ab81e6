//! The few operating-system calls that std and tokio do not offer safely.
//!
//! Every `unsafe` block of the crate lives here, each one a plain libc call on
//! integers or on a stack buffer it owns, with the reason it is sound beside it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What a descriptor passed by the service manager turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// A listening TCP socket (IPv4 or IPv6).
    TcpListener,
    /// A listening Unix stream socket.
    UnixListener,
    /// A connected TCP socket (systemd `Accept=yes`).
    TcpConnected,
    /// A connected Unix stream socket (systemd `Accept=yes`).
    UnixConnected,
    /// A UDP socket, IPv4 or IPv6 (`ListenDatagram=`).
    Udp,
    /// A datagram socket of another family (a Unix one).
    Datagram,
    /// Any other socket (sequential packets, netlink, …).
    Other,
}

/// Why a passed descriptor cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// The descriptor number is not open in this process.
    #[error("is not open")]
    Closed(RawFd),
    /// The descriptor is open but is not a socket.
    #[error("is not a socket")]
    NotSocket(RawFd),
    /// A system call on the descriptor failed.
    #[error("cannot be inspected (fd {fd}): {source}")]
    Io {
        /// The descriptor.
        fd: RawFd,
        /// What the kernel said.
        source: io::Error,
    },
}

fn getsockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the buffer is a c_int we own and `len` says its exact size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tells what kind of socket `fd` is, without taking ownership of it.
pub fn classify(fd: RawFd) -> Result<SocketKind, FdError> {
    // SAFETY: F_GETFD only reads the descriptor flags of an integer fd.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(FdError::Closed(fd));
    }
    let ty = match getsockopt_int(fd, libc::SO_TYPE) {
        Ok(ty) => ty,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => return Err(FdError::NotSocket(fd)),
        Err(source) => return Err(FdError::Io { fd, source }),
    };
    let domain =
        getsockopt_int(fd, libc::SO_DOMAIN).map_err(|source| FdError::Io { fd, source })?;
    let listening =
        getsockopt_int(fd, libc::SO_ACCEPTCONN).map_err(|source| FdError::Io { fd, source })? != 0;
    Ok(match (ty, domain, listening) {
        (libc::SOCK_DGRAM, libc::AF_INET | libc::AF_INET6, _) => SocketKind::Udp,
        (libc::SOCK_DGRAM, _, _) => SocketKind::Datagram,
        (libc::SOCK_STREAM, libc::AF_INET | libc::AF_INET6, true) => SocketKind::TcpListener,
        (libc::SOCK_STREAM, libc::AF_INET | libc::AF_INET6, false) => SocketKind::TcpConnected,
        (libc::SOCK_STREAM, libc::AF_UNIX, true) => SocketKind::UnixListener,
        (libc::SOCK_STREAM, libc::AF_UNIX, false) => SocketKind::UnixConnected,
        _ => SocketKind::Other,
    })
}

/// Takes ownership of a descriptor the service manager passed us, and marks it
/// close-on-exec so the backend never inherits systemd's sockets.
///
/// The caller must make sure that nothing else in the process owns `fd`; the
/// activation module calls this exactly once per passed descriptor number.
pub fn adopt_passed_fd(fd: RawFd) -> Result<OwnedFd, FdError> {
    // SAFETY: plain fcntl on an integer descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(FdError::Closed(fd));
    }
    // SAFETY: as above; only sets FD_CLOEXEC.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(FdError::Io {
            fd,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: the descriptor is open (checked above) and, per the systemd
    // protocol, handed to this process to own; activation adopts each number once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to every process of process group `pgid`.
///
/// Returns `Ok(false)` when the group no longer exists.
pub fn signal_group(pgid: u32, signal: libc::c_int) -> io::Result<bool> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Ok(false);
    };
    if pgid <= 1 {
        // Never signal our own group or every process: a pgid of 0 or 1 is a bug.
        return Ok(false);
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        Ok(true)
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(false)
        } else {
            Err(e)
        }
    }
}

/// Prepares the child `cmd` will start (a backend or a hook): between fork
/// and exec it gets the open-files limit idlegate inherited back
/// ([`restore_open_files_limit`]) and dies with idlegate ([`die_with_parent`]).
pub fn prepare_child(cmd: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child of a multi-threaded
    // process, where only async-signal-safe calls are allowed: it calls
    // getrlimit, setrlimit, prctl and getppid, reads an atomic, and
    // allocates nothing (its errors are raw errno values, which std passes
    // to the parent as they are).
    unsafe {
        cmd.pre_exec(move || {
            restore_open_files_limit()?;
            die_with_parent(parent)
        });
    }
}

/// Arranges for the calling process to receive SIGKILL when the thread that
/// forked it dies, so a backend never outlives a killed idlegate.
///
/// Meant to run between fork and exec (`pre_exec`): prctl and getppid are
/// async-signal-safe. `parent` is idlegate's pid, read before the fork: if it
/// died in between, the child is already orphaned and gives up at once
/// (`ESRCH`; nothing is allocated here).
fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid has no arguments and cannot fail.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// A pipe for `splice(2)`: (read end, write end), both non-blocking and
/// close-on-exec, sized to `size` bytes when the kernel allows.
pub fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Past the per-user pipe budget (fs.pipe-user-pages-soft) the full size is
    // refused: a quarter of it is tried, then the default size stays.
    for size in [size, size / 4] {
        // SAFETY: fcntl on a descriptor we own; failure only leaves the size as it was.
        if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) } >= 0 {
            break;
        }
    }
    Ok((read, write))
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel, without
/// blocking; one of the two must be a pipe. `Ok(0)` is end-of-file on `from`.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: splice takes two descriptors the caller keeps open for the call,
    // null offsets (both are streams), and flags; it touches no memory of ours.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives what the stream socket has, up to `buf.len()` bytes, without
/// waiting; returns the part of `buf` that now holds them (empty at
/// end-of-file). `buf` may be uninitialised: a fresh stack buffer per read
/// costs nothing to prepare.
pub fn recv<'b>(
    from: BorrowedFd<'_>,
    buf: &'b mut [std::mem::MaybeUninit<u8>],
) -> io::Result<&'b [u8]> {
    // SAFETY: recv writes at most `buf.len()` bytes into the buffer we hold
    // exclusively, and reports how many; only those are read back below.
    let n = unsafe {
        libc::recv(
            from.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the first `n` (<= buf.len()) bytes.
    Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n as usize) })
}

/// Sends what of `buf` the stream socket takes now, without waiting and
/// without SIGPIPE; returns how many bytes it took.
pub fn send(to: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: send reads at most `buf.len()` bytes from a slice we borrow.
    let n = unsafe {
        libc::send(
            to.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Bytes sent on a stream socket that its peer has not read yet (SIOCOUTQ,
/// the same request as TIOCOUTQ); for tests that must know a peer read.
#[cfg(test)]
pub fn unread_by_peer(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int into a live local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut queued) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(queued.max(0) as usize)
}

/// The soft open-files limit before [`raise_open_files_limit`], for child
/// processes (0: not raised). It mirrors the process-wide rlimit, which is
/// global by nature.
static INHERITED_OPEN_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Raises the soft limit on open descriptors to the hard limit (systemd's
/// default soft limit is 1024 for programs that might still use select(2));
/// returns the soft limit now in force. Children get the old one back
/// ([`restore_open_files_limit`]), as Go's runtime does.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            INHERITED_OPEN_FILES.store(limit.rlim_cur as u64, std::sync::atomic::Ordering::Relaxed);
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok(limit.rlim_cur as u64)
}

/// In a child between fork and exec: puts back the soft open-files limit
/// idlegate started with. Async-signal-safe (an atomic load and setrlimit).
fn restore_open_files_limit() -> io::Result<()> {
    let soft = INHERITED_OPEN_FILES.load(std::sync::atomic::Ordering::Relaxed);
    if soft == 0 {
        return Ok(());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on structs we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) < 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = soft as libc::rlim_t;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Takes an exclusive `flock(2)` on an open file without waiting: `false`
/// when another open file holds it. Closing the file releases it, so a
/// killed holder never leaves it taken.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock takes an integer descriptor, kept open by the borrow, and flags.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
        _ => Err(e),
    }
}

/// Keeps glibc's allocator to one heap (arena) for the whole process, unless
/// `MALLOC_ARENA_MAX` in the environment says how many: with one heap per
/// runtime thread, the memory freed in one stays there for that thread, and
/// HTTP mode held 5-8 KiB more per active connection at 256 (34-37 KiB
/// against 29), for no measurable speed on 2 cores (requests get their
/// small allocations from glibc's per-thread cache, not the heap). To be
/// called before the runtime's threads start.
pub fn one_malloc_heap() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers and changes only the allocator's
    // settings, which glibc guards itself; a failure leaves them as they were.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Now on the local wall clock: the day of the week (0 Monday .. 6 Sunday)
/// and the seconds after midnight (60 of a leap second included), in UTC
/// if the local time cannot be had.
pub fn local_weekday_and_second() -> (u8, u32) {
    // SAFETY: time(NULL) writes nothing; localtime_r reads the time_t and
    // writes into the zeroed struct tm we own (a plain C struct, for which
    // all zeros is a valid value), and returns NULL on failure.
    let (tm, ok) = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        let ok = !libc::localtime_r(&now, &mut tm).is_null();
        (tm, ok)
    };
    if !ok {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // 1970-01-01 was a Thursday (3, counted from Monday).
        return (((secs / 86400 + 3) % 7) as u8, (secs % 86400) as u32);
    }
    let weekday = ((tm.tm_wday + 6) % 7) as u8;
    let second = (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec).max(0) as u32;
    (weekday, second)
}
