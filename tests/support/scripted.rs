//! A scripted HTTP/1 upstream: a raw server on 127.0.0.1:0 whose answers a
//! test writes byte by byte, to see how idlegate treats odd-but-legal (and
//! some illegal) responses.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Fixture, Gate, PATIENCE};

/// What the scripted upstream reports to the test.
#[derive(Debug)]
pub enum Event {
    /// A request head was read on upstream connection `conn`.
    Request { conn: usize, path: String },
    /// The script closed upstream connection `conn`.
    Closed { conn: usize },
}

/// A request head as the upstream read it.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
    }
}

/// One request on an upstream connection, as a script sees it.
pub struct Exchange<'a> {
    pub reader: &'a mut BufReader<TcpStream>,
    pub head: Head,
    body_read: bool,
}

impl Exchange<'_> {
    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// The request body (Content-Length or chunked, decoded here).
    pub fn body(&mut self) -> io::Result<Vec<u8>> {
        self.body_read = true;
        let mut body = Vec::new();
        if self.head.chunked() {
            loop {
                let size_line = self.line()?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                        .map_err(|_| io::Error::other(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    while !self.line()?.is_empty() {}
                    return Ok(body);
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..])?;
                assert_eq!(self.line()?, "", "a chunk ends with CRLF");
            }
        }
        if let Some(len) = self.head.header("content-length") {
            body.resize(len.parse().unwrap(), 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(body)
    }

    /// Writes raw bytes to the connection.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// A tunnel's upstream end (after a `101` the script wrote): echoes
    /// what comes until the client's close, then closes its side.
    pub fn echo_until_close(&mut self) -> io::Result<Next> {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.reader.read(&mut buf)?;
            if n == 0 {
                self.stream().shutdown(Shutdown::Write)?;
                return Ok(Next::Done);
            }
            self.write(&buf[..n])?;
        }
    }
}

/// What the upstream does with a connection after a script's answer.
pub enum Next {
    /// Reads the next request (after the rest of this one's body).
    KeepOpen,
    /// Closes the connection at once.
    Close,
    /// Closes the connection after a pause.
    CloseAfter(Duration),
    /// The script is done with the connection (it closed or tunnelled it).
    Done,
}

type Script = dyn Fn(&mut Exchange) -> io::Result<Next> + Send + Sync;

/// A raw HTTP/1 server on 127.0.0.1:0 answering every request with what the
/// script writes, one thread per connection; stopped and reaped when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    events: mpsc::Receiver<Event>,
    /// Events received while waiting for another.
    backlog: RefCell<VecDeque<Event>>,
    stop: Arc<AtomicBool>,
    /// A handle on every accepted connection, to end them all on drop.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start(
        script: impl Fn(&mut Exchange) -> io::Result<Next> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let acceptor = {
            let (stop, streams, threads) = (stop.clone(), streams.clone(), threads.clone());
            std::thread::spawn(move || {
                for (conn, stream) in listener.incoming().enumerate() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    streams.lock().unwrap().push(stream.try_clone().unwrap());
                    let (tx, script) = (tx.clone(), script.clone());
                    let thread = std::thread::spawn(move || {
                        let _ = serve(conn, stream, &tx, &*script);
                    });
                    threads.lock().unwrap().push(thread);
                }
            })
        };
        Upstream {
            addr,
            events,
            backlog: RefCell::new(VecDeque::new()),
            stop,
            streams,
            threads,
            acceptor: Some(acceptor),
        }
    }

    /// Waits for the first event `want` picks, keeping the others.
    pub fn wait<T>(&self, what: &str, want: impl Fn(&Event) -> Option<T>) -> T {
        let mut backlog = self.backlog.borrow_mut();
        if let Some(i) = backlog.iter().position(|e| want(e).is_some()) {
            return want(&backlog.remove(i).unwrap()).unwrap();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => match want(&e) {
                    Some(t) => return t,
                    None => backlog.push_back(e),
                },
                Err(_) => panic!("the upstream saw no {what}; it saw {backlog:?}"),
            }
        }
    }

    /// The upstream connection the next request for `path` came on.
    pub fn request(&self, path: &str) -> usize {
        self.wait(&format!("request for {path}"), |e| match e {
            Event::Request { conn, path: p } if p == path => Some(*conn),
            _ => None,
        })
    }

    /// Waits until the script closed upstream connection `conn`.
    pub fn closed(&self, conn: usize) {
        self.wait(&format!("close of connection {conn}"), |e| match e {
            Event::Closed { conn: c } if *c == conn => Some(()),
            _ => None,
        })
    }

    /// idlegate in HTTP mode in front of this upstream (an external backend).
    pub fn gate(&self) -> Gate {
        Fixture::http()
            .upstream(&self.addr.to_string())
            .external()
            .start()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Reads a request head; `None` on a close before any byte (a readiness probe).
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let mut request_line = lines[0].split(' ');
    let method = request_line.next().unwrap().to_owned();
    let path = request_line.next().unwrap_or("").to_owned();
    let headers = lines[1..]
        .iter()
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Ok(Some(Head {
        method,
        path,
        headers,
    }))
}

/// One upstream connection: request after request, each answered by `script`.
fn serve(
    conn: usize,
    stream: TcpStream,
    tx: &mpsc::Sender<Event>,
    script: &Script,
) -> io::Result<()> {
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let _ = tx.send(Event::Request {
            conn,
            path: head.path.clone(),
        });
        let mut exchange = Exchange {
            reader: &mut reader,
            head,
            body_read: false,
        };
        let close_after = match script(&mut exchange)? {
            Next::KeepOpen => {
                if !exchange.body_read {
                    exchange.body()?;
                }
                continue;
            }
            Next::Close => Duration::ZERO,
            Next::CloseAfter(pause) => pause,
            Next::Done => return Ok(()),
        };
        std::thread::sleep(close_after);
        let _ = reader.get_ref().shutdown(Shutdown::Both);
        let _ = tx.send(Event::Closed { conn });
        return Ok(());
    }
}

/// A response with `Content-Length` for `body`.
pub fn with_length(status: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// `len` bytes that are not all alike.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads a raw response head off `s` (up to and including the empty line),
/// and whatever came after it in the same reads.
pub fn raw_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = seen.split_off(end + 4);
            return (String::from_utf8_lossy(&seen).into_owned(), rest);
        }
        let n = s.read(&mut buf).expect("a response head");
        assert!(
            n > 0,
            "closed before the head ended: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

/// A raw client connection with deadlines.
pub fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Everything until the server closes `s`.
pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("a clean close");
    out
}
