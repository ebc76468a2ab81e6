//! Running out of descriptors while accepting (EMFILE) is survived: the
//! accept loop logs it, backs off, and serves the waiting client once
//! descriptors are free again.
//!
//! The descriptor fitting in `idlegate::serve::limits` keeps the binary from getting
//! there in every setup the other tests build, so this test runs the real
//! serve loop in its own process (a test binary of its own) and takes every
//! free descriptor itself while a client waits in the backlog.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use idlegate::activation::{Route, Sockets, StdListener};
use idlegate::{Config, Notifier, Shutdown};

const PATIENCE: Duration = Duration::from_secs(30);

/// Log lines, as the test's tracing subscriber writes them.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An echo server on a thread of its own: the backend.
fn echo_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let mut writer = conn;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

/// Opens /dev/null until the process runs out of descriptors.
fn take_every_descriptor() -> Vec<std::fs::File> {
    let mut taken = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => taken.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return taken,
            Err(e) => panic!("open /dev/null: {e}"),
        }
    }
}

#[test]
fn accept_survives_running_out_of_descriptors() {
    // A low limit, so that taking every descriptor is quick.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct, for this test process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = 256.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let backend = echo_backend();
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let front_addr = front.local_addr().unwrap();
    let cli = idlegate::cli::Cli::try_parse_from([
        "idlegate",
        "--upstream",
        &backend.to_string(),
        "--idle-timeout",
        "1h",
    ])
    .unwrap();
    let config = Config::from_cli(cli).unwrap();
    let sockets = Sockets::Bound(vec![Route {
        listener: StdListener::Tcp(front),
        upstream: config.sockets.upstreams[0].clone(),
        label: front_addr.to_string(),
    }]);
    let shutdown = Shutdown::new();
    let (_reloads, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let served = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let sockets = sockets.into_tokio().unwrap();
                idlegate::run(
                    sockets,
                    config,
                    Notifier::disabled(),
                    shutdown,
                    reload_rx,
                    idlegate::Listeners::default(),
                )
                .await
            })
        })
    };

    // Every descriptor but one taken; the client takes that one and waits in
    // the backlog, as idlegate's accept fails.
    let mut taken = take_every_descriptor();
    drop(taken.pop());
    let mut client = TcpStream::connect(front_addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"still here\n").unwrap();
    // It logs, pauses, tries again with a longer pause, and does not give up.
    let deadline = Instant::now() + PATIENCE;
    while !log.text().contains("pausing 100ms") {
        assert!(
            Instant::now() < deadline,
            "no second EMFILE with a longer pause logged: {}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = log.text();
    assert!(
        text.contains("Too many open files (os error 24); pausing 50ms"),
        "{text}"
    );

    // Descriptors back: the waiting client is served.
    drop(taken);
    let mut echo = [0u8; 11];
    client
        .read_exact(&mut echo)
        .unwrap_or_else(|e| panic!("client not served after EMFILE: {e}: {}", log.text()));
    assert_eq!(&echo, b"still here\n");
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }

    shutdown.request();
    let exit = served.join().unwrap();
    assert_eq!(exit, idlegate::serve::Exit::Stopped);
    let text = log.text();
    assert!(!text.contains("panicked"), "{text}");
}
