//! A deliberately legacy backend for idlegate's tests and benches: it knows
//! nothing of socket activation, binds its address after an optional delay,
//! and answers a tiny line protocol.
//!
//! ```text
//! test_backend --listen 127.0.0.1:8081 [--delay-ms 500] [--pid-file F]
//!              [--exit-at-start CODE] [--fail-unless-exists F] [--ignore-sigterm]
//!              [--grandchild-pid-file F] [--http] [--forward-to ADDR]
//!              [--notify-when-exists F]
//! ```
//! With `--notify-when-exists F` it speaks sd_notify to `$NOTIFY_SOCKET`: a
//! `STATUS=` line at start, and `READY=1` once the file F exists (it serves
//! before that, as servers that accept before they are ready do).
//! With `--forward-to ADDR` it is a port forwarder like rootlessport: it
//! listens at once, and for each client connects to ADDR, closing the client
//! straight away when nothing listens there yet.
//! ```text
//! ```
//! With `--http` it is an HTTP/1.1 server instead (see [`http`] below for its paths).
//! With `--udp` it is a UDP echo server: every datagram is sent back to its
//! sender as it came (an empty one too), except `CRASH`, on which the whole
//! backend exits with status 3.
//! Otherwise the first line a client sends chooses what happens:
//! - `SLOW <count> <interval_ms>`: writes `tick <i>` lines at that pace, then closes;
//! - `COUNT`: reads until the client's end-of-file, then answers the byte count;
//! - `PID`: answers the backend's process id;
//! - `CRASH`: the whole backend exits with status 3 at once;
//! - `CRASH-NEXT`: answers `armed`; the next connection accepted makes the
//!   whole backend exit with status 3 before it reads a byte (a client that
//!   reached a dying backend);
//! - `UNLISTEN`: the backend closes its listening socket but lives on
//!   (answers `unlistening`): it is up, and refuses every new connection;
//! - anything else: echoed back, and so is the rest of the stream, until end-of-file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixListener;
use std::time::Duration;

struct Options {
    listen: String,
    delay: Duration,
    pid_file: Option<String>,
    exit_at_start: Option<i32>,
    fail_unless_exists: Option<String>,
    ignore_sigterm: bool,
    grandchild_pid_file: Option<String>,
    http: bool,
    udp: bool,
    forward_to: Option<String>,
    notify_when_exists: Option<String>,
}

fn parse() -> Options {
    let mut o = Options {
        listen: String::new(),
        delay: Duration::ZERO,
        pid_file: None,
        exit_at_start: None,
        fail_unless_exists: None,
        ignore_sigterm: false,
        grandchild_pid_file: None,
        http: false,
        udp: false,
        forward_to: None,
        notify_when_exists: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--listen" => o.listen = value(),
            "--delay-ms" => o.delay = Duration::from_millis(value().parse().expect("--delay-ms")),
            "--pid-file" => o.pid_file = Some(value()),
            "--exit-at-start" => o.exit_at_start = Some(value().parse().expect("--exit-at-start")),
            "--fail-unless-exists" => o.fail_unless_exists = Some(value()),
            "--grandchild-pid-file" => o.grandchild_pid_file = Some(value()),
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--http" => o.http = true,
            "--udp" => o.udp = true,
            "--forward-to" => o.forward_to = Some(value()),
            "--notify-when-exists" => o.notify_when_exists = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!o.listen.is_empty(), "--listen is required");
    o
}

trait Conn: Read + Write + Send + 'static {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Conn>>;
    fn shutdown_write(&self);
}

impl Conn for std::net::TcpStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

fn handle(conn: Box<dyn Conn>) -> std::io::Result<()> {
    let mut writer = conn.try_clone_box()?;
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let words: Vec<&str> = first.split_whitespace().collect();
    match words.as_slice() {
        ["SLOW", count, interval] => {
            let count: u32 = count.parse().unwrap_or(1);
            let interval = Duration::from_millis(interval.parse().unwrap_or(100));
            for i in 0..count {
                writer.write_all(format!("tick {i}\n").as_bytes())?;
                std::thread::sleep(interval);
            }
        }
        ["COUNT"] => {
            let mut n = 0u64;
            let mut buf = [0u8; 65536];
            loop {
                match reader.read(&mut buf)? {
                    0 => break,
                    k => n += k as u64,
                }
            }
            writer.write_all(format!("{n}\n").as_bytes())?;
        }
        ["PID"] => writer.write_all(format!("{}\n", std::process::id()).as_bytes())?,
        ["CRASH"] => {
            eprintln!("test backend: crashing on request");
            std::process::exit(3);
        }
        ["CRASH-NEXT"] => {
            CRASH_NEXT.store(true, std::sync::atomic::Ordering::SeqCst);
            writer.write_all(b"armed\n")?;
        }
        ["UNLISTEN"] => {
            let fd = LISTENER_FD.load(std::sync::atomic::Ordering::SeqCst);
            // SAFETY: shutdown on our own listening socket; accept then fails.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
            eprintln!("test backend: stopped listening on request");
            writer.write_all(b"unlistening\n")?;
        }
        _ => {
            writer.write_all(first.as_bytes())?;
            std::io::copy(&mut reader, &mut writer)?;
        }
    }
    writer.shutdown_write();
    Ok(())
}

/// Set by `CRASH-NEXT`: the next accepted connection ends the process.
static CRASH_NEXT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The listening socket, for `UNLISTEN`.
static LISTENER_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

fn serve<C: Conn>(incoming: impl Iterator<Item = std::io::Result<C>>) {
    for conn in incoming {
        match conn {
            Ok(_) if CRASH_NEXT.load(std::sync::atomic::Ordering::SeqCst) => {
                eprintln!("test backend: crashing as armed, a connection accepted");
                std::process::exit(3);
            }
            Ok(c) => {
                std::thread::spawn(move || {
                    let _ = handle(Box::new(c));
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // UNLISTEN: stay up, accept nothing.
                loop {
                    std::thread::park();
                }
            }
            Err(e) => eprintln!("test backend: accept: {e}"),
        }
    }
}

// The grandchild is never waited for on purpose: idlegate must kill it with the group.
#[allow(clippy::zombie_processes)]
fn main() {
    let o = parse();
    if let Some(path) = &o.pid_file {
        std::fs::write(path, std::process::id().to_string()).expect("write pid file");
    }
    if o.ignore_sigterm {
        // SAFETY: setting a signal disposition to SIG_IGN touches no memory.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    if let Some(path) = &o.grandchild_pid_file {
        // A helper in the same process group, as shell-wrapped apps have.
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        std::fs::write(path, child.id().to_string()).expect("write grandchild pid file");
    }
    eprintln!("test backend: starting (pid {})", std::process::id());
    if let Some(code) = o.exit_at_start {
        eprintln!("test backend: failing at start on purpose with status {code}");
        std::process::exit(code);
    }
    if let Some(path) = &o.fail_unless_exists {
        if !std::path::Path::new(path).exists() {
            eprintln!("test backend: {path} is missing, failing at start");
            std::process::exit(4);
        }
    }
    std::thread::sleep(o.delay);
    if let Some(flag) = o.notify_when_exists.clone() {
        std::thread::spawn(move || notify_when_exists(&flag));
    }
    if o.http {
        http::serve(&o.listen);
        return;
    }
    if let Some(target) = &o.forward_to {
        forward(&o.listen, target);
        return;
    }
    if o.udp {
        let socket = std::net::UdpSocket::bind(&o.listen).expect("bind udp");
        eprintln!("test backend: listening on udp {}", o.listen);
        let mut buf = vec![0u8; 65536];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if &buf[..n] == b"CRASH" => {
                    eprintln!("test backend: crashing on request");
                    std::process::exit(3);
                }
                Ok((n, from)) => {
                    let _ = socket.send_to(&buf[..n], from);
                }
                Err(e) => eprintln!("test backend: udp receive: {e}"),
            }
        }
    }
    if let Some(path) = o.listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).expect("bind unix");
        LISTENER_FD.store(
            std::os::fd::AsRawFd::as_raw_fd(&l),
            std::sync::atomic::Ordering::SeqCst,
        );
        eprintln!("test backend: listening on {}", o.listen);
        serve(l.incoming());
    } else {
        let l = TcpListener::bind(&o.listen).expect("bind tcp");
        LISTENER_FD.store(
            std::os::fd::AsRawFd::as_raw_fd(&l),
            std::sync::atomic::Ordering::SeqCst,
        );
        eprintln!("test backend: listening on {}", o.listen);
        serve(l.incoming());
    }
}

/// Sends `STATUS=` now and `READY=1` once `flag` exists, to `$NOTIFY_SOCKET`
/// (a path, or `@name` in the abstract namespace).
fn notify_when_exists(flag: &str) {
    use std::os::linux::net::SocketAddrExt;
    let target = std::env::var("NOTIFY_SOCKET").expect("--notify-when-exists needs NOTIFY_SOCKET");
    let addr = match target.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
        None => std::os::unix::net::SocketAddr::from_pathname(&target),
    }
    .expect("NOTIFY_SOCKET address");
    let socket = std::os::unix::net::UnixDatagram::unbound().expect("notify socket");
    let send = |m: &str| {
        socket
            .send_to_addr(m.as_bytes(), &addr)
            .expect("sd_notify send")
    };
    send(&format!("STATUS=waiting for {flag}\n"));
    while !std::path::Path::new(flag).exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("test backend: {flag} exists: READY=1");
    send("READY=1\nSTATUS=serving\n");
}

/// The backend as a plain HTTP/1.1 server (no socket activation, no h2).
///
/// - `GET /` answers `hello`; `GET /pid` the process id;
/// - `GET /headers` lists the request headers it received, `name: value` a line;
/// - `POST /echo` streams the request body back;
/// - `GET /bytes/N` sends N bytes;
/// - `GET /slow?n=N&ms=M` sends N `tick` lines M ms apart;
/// - `GET /crash` sends part of a body, then the process exits with status 3;
/// - `GET /crash-now` makes the process exit with status 3 without an answer;
/// - `GET /crash-next` answers `armed`; the next request makes the process
///   exit with status 3 before it answers (a request that reached a dying backend);
/// - `GET /upgrade` with `Connection: upgrade` switches protocols and echoes bytes;
/// - `GET /status/N` answers with status N;
/// - `GET /trailers` sends a chunked body followed by the trailer `x-checksum: 42`.
mod http {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::{Body, Frame};
    use http_body_util::{Either, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;

    type Out = Either<Full<Bytes>, Either<Incoming, Generated>>;

    /// A body made up as it is sent: N bytes, ticks, or a crash midway.
    enum Generated {
        Bytes(u64),
        Ticks {
            left: u32,
            n: u32,
            interval: Duration,
            sleep: Pin<Box<tokio::time::Sleep>>,
        },
        Crash {
            sent: bool,
            sleep: Pin<Box<tokio::time::Sleep>>,
        },
        Trailers {
            step: u8,
        },
    }

    static CHUNK: [u8; 65536] = [b'x'; 65536];

    impl Body for Generated {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.get_mut() {
                Generated::Bytes(left) => {
                    if *left == 0 {
                        return Poll::Ready(None);
                    }
                    let n = (*left).min(CHUNK.len() as u64) as usize;
                    *left -= n as u64;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
                }
                Generated::Ticks {
                    left,
                    n,
                    interval,
                    sleep,
                } => {
                    if *left == 0 {
                        return Poll::Ready(None);
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let i = *n - *left;
                    *left -= 1;
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + *interval);
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!("tick {i}\n"))))))
                }
                Generated::Trailers { step } => {
                    *step += 1;
                    match *step {
                        1 => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                            b"body with trailers\n",
                        ))))),
                        2 => {
                            let mut t = hyper::HeaderMap::new();
                            t.insert("x-checksum", "42".parse().unwrap());
                            Poll::Ready(Some(Ok(Frame::trailers(t))))
                        }
                        _ => Poll::Ready(None),
                    }
                }
                Generated::Crash { sent, sleep } => {
                    if !*sent {
                        *sent = true;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                            b"partial\n",
                        )))));
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    eprintln!("test backend: crashing mid-response on request");
                    std::process::exit(3);
                }
            }
        }
    }

    use std::future::Future;

    fn full(status: StatusCode, text: String) -> Response<Out> {
        let mut r = Response::new(Either::Left(Full::new(Bytes::from(text))));
        *r.status_mut() = status;
        r
    }

    fn generated(body: Generated) -> Response<Out> {
        Response::new(Either::Right(Either::Right(body)))
    }

    async fn handle(mut req: Request<Incoming>) -> Result<Response<Out>, Infallible> {
        let path = req.uri().path().to_owned();
        if path == "/crash-now" || super::CRASH_NEXT.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("test backend: crashing before answering {path}");
            std::process::exit(3);
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let param = |name: &str| -> Option<u64> {
            query.split('&').find_map(|kv| {
                kv.strip_prefix(name)
                    .and_then(|v| v.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
            })
        };
        Ok(match path.as_str() {
            "/" => full(StatusCode::OK, "hello\n".into()),
            "/pid" => full(StatusCode::OK, format!("{}\n", std::process::id())),
            "/crash-next" => {
                super::CRASH_NEXT.store(true, std::sync::atomic::Ordering::SeqCst);
                full(StatusCode::OK, "armed\n".into())
            }
            "/headers" => {
                let mut text = String::new();
                for (name, value) in req.headers() {
                    text.push_str(&format!("{}: {}\n", name, value.to_str().unwrap_or("?")));
                }
                full(StatusCode::OK, text)
            }
            "/echo" => Response::new(Either::Right(Either::Left(req.into_body()))),
            "/slow" => {
                let n = param("n").unwrap_or(3) as u32;
                let interval = Duration::from_millis(param("ms").unwrap_or(100));
                generated(Generated::Ticks {
                    left: n,
                    n,
                    interval,
                    sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                })
            }
            "/crash" => generated(Generated::Crash {
                sent: false,
                sleep: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
            }),
            "/upgrade" => {
                let on_upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(upgraded) = on_upgrade.await {
                        let mut io = TokioIo::new(upgraded);
                        let (mut r, mut w) = tokio::io::split(&mut io);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                    }
                });
                let mut r = full(StatusCode::SWITCHING_PROTOCOLS, String::new());
                r.headers_mut().insert("upgrade", "echo".parse().unwrap());
                r.headers_mut()
                    .insert("connection", "upgrade".parse().unwrap());
                r
            }
            p if p.starts_with("/bytes/") => {
                generated(Generated::Bytes(p[7..].parse().unwrap_or(0)))
            }
            "/trailers" => {
                let mut r = generated(Generated::Trailers { step: 0 });
                r.headers_mut()
                    .insert("trailer", "x-checksum".parse().unwrap());
                r
            }
            p if p.starts_with("/status/") => {
                let code = p[8..]
                    .parse()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::BAD_REQUEST);
                full(code, format!("{code}\n"))
            }
            _ => full(StatusCode::NOT_FOUND, "not found\n".into()),
        })
    }

    /// Serves HTTP/1.1 on `listen` (TCP or `unix:`) forever.
    pub fn serve(listen: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            enum L {
                Tcp(tokio::net::TcpListener),
                Unix(tokio::net::UnixListener),
            }
            let listener = match listen.strip_prefix("unix:") {
                Some(path) => {
                    let _ = std::fs::remove_file(path);
                    L::Unix(tokio::net::UnixListener::bind(path).expect("bind unix"))
                }
                None => L::Tcp(
                    tokio::net::TcpListener::bind(listen)
                        .await
                        .expect("bind tcp"),
                ),
            };
            eprintln!("test backend: listening on {listen} (http)");
            loop {
                let service = hyper::service::service_fn(handle);
                let builder = hyper::server::conn::http1::Builder::new();
                match &listener {
                    L::Tcp(l) => {
                        let Ok((s, _)) = l.accept().await else {
                            continue;
                        };
                        tokio::spawn(async move {
                            let _ = builder
                                .serve_connection(TokioIo::new(s), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                    L::Unix(l) => {
                        let Ok((s, _)) = l.accept().await else {
                            continue;
                        };
                        tokio::spawn(async move {
                            let _ = builder
                                .serve_connection(TokioIo::new(s), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                }
            }
        });
    }
}

/// A port forwarder: accepts at once, connects onward per client, and closes
/// the client when the target does not answer yet.
fn forward(listen: &str, target: &str) {
    let l = TcpListener::bind(listen).expect("bind forwarder");
    eprintln!("test backend: forwarding {listen} to {target}");
    for client in l.incoming() {
        let Ok(client) = client else { continue };
        let target = target.to_owned();
        std::thread::spawn(move || {
            let Ok(upstream) = std::net::TcpStream::connect(&target) else {
                return; // dropped: the client sees its connection closed
            };
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (mut c, mut u) = (client, upstream);
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
                let _ = u2.shutdown(Shutdown::Write);
            });
            let _ = std::io::copy(&mut u, &mut c);
            let _ = c.shutdown(Shutdown::Write);
            let _ = up.join();
        });
    }
}
