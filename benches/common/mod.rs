//! What the benches share: a proxy started as systemd starts it, a timed
//! first response byte, percentiles, and tool lookup.
#![allow(dead_code)]

pub mod procfs;
pub mod reverse_proxies;
pub mod wrk;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A proxy started as systemd starts it: the socket as fd 3, `LISTEN_FDS=1`,
/// `LISTEN_PID` its own pid (through `sh -c exec`).
pub struct Activated {
    /// The proxy process.
    pub child: Child,
    listener: TcpListener,
}

impl Activated {
    /// Starts `argv` with `listener` passed as fd 3 and extra `env`.
    pub fn spawn(argv: &[String], listener: TcpListener, env: &[(&str, &str)]) -> Activated {
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
            .args(argv)
            .env("LISTEN_FDS", "1")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only fcntl/dup2 between fork and exec, on our own descriptor.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start proxy");
        Activated { child, listener }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// The proxy's resident memory now.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Waits for the proxy to exit by itself (idle exit), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        if !self.wait_exit(Duration::from_secs(30)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connect, `GET /`, and the time until the first response byte.
pub fn request_first_byte(addr: SocketAddr) -> Duration {
    try_first_byte(addr).expect("a response")
}

/// Like [`request_first_byte`], `None` when the connection fails or closes first.
pub fn try_first_byte(addr: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).ok()?;
    let t = started.elapsed();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    Some(t)
}

/// The `p` quantile (0..=1) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Sorts the samples and returns their median.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    percentile(v, 0.5)
}

/// Whether a program (a path or a name on PATH) is there.
pub fn installed(path: &str) -> bool {
    Path::new(path).exists()
        || Command::new("sh")
            .args(["-c", &format!("command -v {path}")])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A fresh listening socket on a free port, to pass as the activated one.
pub fn fresh_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// The bulk response's size.
pub const BULK_BYTES: u64 = 1 << 30;

/// The bench's own backend: HTTP/1.1 keep-alive, `GET /bulk` sends 1 GiB.
pub fn start_backend() -> SocketAddr {
    start_backend_thread().0
}

/// Like [`start_backend`], with the id of the one thread that serves it
/// (for [`procfs::cpu_own_thread_us`]).
pub fn start_backend_thread() -> (SocketAddr, i64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tid_tx.send(procfs::current_tid());
        serve_backend(listener)
    });
    (addr, tid_rx.recv().expect("the backend thread's id"))
}

/// Serves the bench's backend on `listener` until the process ends.
pub fn serve_backend(listener: TcpListener) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(serve_backend_conn(s));
        }
    });
}

async fn serve_backend_conn(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const HELLO: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    loop {
        let Some(end) = find(&buf[..filled], b"\r\n\r\n") else {
            if filled == buf.len() {
                return;
            }
            match s.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let close = head.contains("connection: close");
        if head.starts_with("get /bulk") {
            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {BULK_BYTES}\r\n\r\n");
            if s.write_all(h.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![0u8; 256 * 1024];
            let mut left = BULK_BYTES;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
        } else if s.write_all(HELLO).await.is_err() {
            return;
        }
        buf.copy_within(end + 4..filled, 0);
        filled -= end + 4;
        if close {
            return;
        }
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
