//! A deliberately small HTTP/1.1 client for the tests: every byte on the wire
//! is ours to see, so a clean close, a reset and a truncated body are told apart.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::PATIENCE;

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for 101).
    pub body: Vec<u8>,
    /// Trailer fields after a chunked body, names lowercase.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection, reusable for keep-alive requests.
pub struct Conn {
    reader: BufReader<TcpStream>,
    /// Whether the last request got at least a status line.
    answered: bool,
}

impl Conn {
    /// Connects with generous timeouts.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, PATIENCE)?;
        s.set_read_timeout(Some(PATIENCE))?;
        s.set_write_timeout(Some(PATIENCE))?;
        Ok(Conn {
            reader: BufReader::new(s),
            answered: false,
        })
    }

    /// The socket, for raw use after an upgrade or to check for a close.
    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Sends one request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.answered = false;
        self.send(method, path, headers, body)?;
        self.read_response(method == "HEAD")
    }

    /// Sends a request (with `Content-Length` when there is a body).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            head.push_str("Host: test.local\r\n");
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Reads one response: Content-Length, chunked, or until close.
    pub fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        let status_line = self.line()?;
        self.answered = true;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap_or((&line, ""));
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head_only || status == 101 || status == 204 || status == 304 {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                let size_line = self.line()?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("bad chunk size {size_line:?}"),
                            )
                        })?;
                if size == 0 {
                    loop {
                        let line = self.line()?;
                        if line.is_empty() {
                            break;
                        }
                        let (n, v) = line.split_once(':').unwrap_or((&line, ""));
                        resp.trailers
                            .push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                    break;
                }
                let start = resp.body.len();
                resp.body.resize(start + size, 0);
                self.reader.read_exact(&mut resp.body[start..])?;
                self.line()?;
            }
        } else if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            resp.body.resize(len, 0);
            self.reader.read_exact(&mut resp.body)?;
        } else {
            self.reader.read_to_end(&mut resp.body)?;
        }
        Ok(resp)
    }

    /// Whether the server closed this connection cleanly (EOF, no reset) by now.
    pub fn closed_cleanly(&mut self) -> io::Result<bool> {
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    Conn::connect(addr)?.request("GET", path, headers, b"")
}

/// A keep-alive client that, like a browser, retries an idempotent request
/// once on a new connection when a reused one was closed before any answer.
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<Conn>,
    /// How many requests needed that retry.
    pub retries: usize,
}

impl KeepAlive {
    /// A client for `addr`; it connects on first use.
    pub fn new(addr: SocketAddr) -> Self {
        KeepAlive {
            addr,
            conn: None,
            retries: 0,
        }
    }

    /// GET `path`, reusing the connection when it is still open.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        if let Some(mut conn) = self.conn.take() {
            match conn.request("GET", path, &[], b"") {
                Ok(r) => {
                    self.keep(conn, &r);
                    return Ok(r);
                }
                Err(e)
                    if !conn.answered
                        && matches!(
                            e.kind(),
                            io::ErrorKind::UnexpectedEof
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::BrokenPipe
                        ) =>
                {
                    self.retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = Conn::connect(self.addr)?;
        let r = conn.request("GET", path, &[], b"")?;
        self.keep(conn, &r);
        Ok(r)
    }

    fn keep(&mut self, conn: Conn, r: &Response) {
        if !r
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            self.conn = Some(conn);
        }
    }
}

/// A monitor probing `GET /status/204` (the test backend answers 204) on
/// its own thread, as an uptime checker does, until stopped.
pub struct Monitor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Monitor {
    /// Probes `addr` every `every`.
    pub fn start(addr: SocketAddr, every: std::time::Duration) -> Monitor {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut forwarded = 0;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = get(addr, "/status/204", &[]) {
                    // 204: the backend answered; anything else: a rule.
                    forwarded += usize::from(r.status == 204);
                }
                std::thread::sleep(every);
            }
            forwarded
        });
        Monitor { stop, thread }
    }

    /// Stops probing; returns how many probes reached the backend.
    pub fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
