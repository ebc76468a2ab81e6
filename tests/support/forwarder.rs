//! A stand-in for a port forwarder (docker-proxy, rootlessport): it listens
//! at once and accepts every connection, then connects to the app behind it;
//! while the app is not listening it resets the client's connection (closes
//! it with `SO_LINGER` 0), and closes every other one with a FIN, as
//! docker-proxy and rootlessport do. Once the app listens it copies bytes
//! both ways.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the forwarder saw.
#[derive(Default)]
struct Counts {
    /// Connections turned away because the app was not listening.
    turned_away: AtomicUsize,
    /// Connections reset on their first bytes, by [`Forwarder::cut_requests`].
    cut: AtomicUsize,
    /// Bytes from the client that begin with this are cut off instead of
    /// forwarded.
    cutting: Mutex<Option<Vec<u8>>>,
    /// Whether the forwarder is to stop.
    stop: AtomicBool,
}

/// The forwarder, running in threads of the test process until dropped.
pub struct Forwarder {
    /// Where it listens.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    /// A forwarder on a free port of 127.0.0.1 in front of `app`.
    pub fn start(app: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let accepting = std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                match TcpStream::connect_timeout(&app, Duration::from_secs(5)) {
                    Ok(app) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || forward(client, app, &shared));
                    }
                    Err(_) => {
                        shared.turned_away.fetch_add(1, Ordering::SeqCst);
                        if n % 2 == 0 {
                            reset(&client);
                        }
                        drop(client);
                    }
                }
            }
        });
        Forwarder {
            addr,
            counts,
            accepting: Some(accepting),
        }
    }

    /// How many connections it turned away (reset or closed) because the
    /// app was not listening.
    pub fn turned_away(&self) -> usize {
        self.counts.turned_away.load(Ordering::SeqCst)
    }

    /// From now on, bytes from a client that begin with `prefix` (a
    /// request line's start, `POST `) are not forwarded: their connection
    /// is reset and counted. `None` forwards everything again.
    pub fn cut_requests(&self, prefix: Option<&str>) {
        *self.counts.cutting.lock().unwrap() = prefix.map(|p| p.as_bytes().to_vec());
    }

    /// How many connections it reset on their bytes.
    pub fn cut(&self) -> usize {
        self.counts.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.counts.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the stop.
        let _ = TcpStream::connect(self.addr);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

/// Makes the socket's close a reset.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Copies both ways; bytes from the client that [`Forwarder::cut_requests`]
/// names reset the connection instead.
fn forward(client: TcpStream, app: TcpStream, counts: &Arc<Counts>) {
    let cut_this = Arc::new(AtomicBool::new(false));
    let (client_back, app_back) = (client.try_clone().unwrap(), app.try_clone().unwrap());
    let back_cut = cut_this.clone();
    let back = std::thread::spawn(move || {
        let (mut from, mut to) = (app_back, client_back);
        let _ = std::io::copy(&mut from, &mut to);
        if !back_cut.load(Ordering::SeqCst) {
            let _ = to.shutdown(Shutdown::Write);
        }
    });
    let (mut from, mut to) = (client, app);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
            Ok(n) if cuts(counts, &buf[..n]) => {
                counts.cut.fetch_add(1, Ordering::SeqCst);
                cut_this.store(true, Ordering::SeqCst);
                reset(&from);
                let _ = to.shutdown(Shutdown::Both);
                break;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    drop(from);
    let _ = back.join();
}

/// Whether `bytes` from a client are to be cut off.
fn cuts(counts: &Counts, bytes: &[u8]) -> bool {
    let cutting = counts.cutting.lock().unwrap();
    cutting
        .as_ref()
        .is_some_and(|prefix| bytes.starts_with(prefix))
}
