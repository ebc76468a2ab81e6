//! A deliberately legacy backend for idlegate's tests and benches: it knows
//! nothing of socket activation, binds its address after an optional delay,
//! and answers a tiny line protocol.
//!
//! ```text
//! test_backend --listen 127.0.0.1:8081 [--delay-ms 500] [--pid-file F]
//!              [--exit-at-start CODE] [--fail-unless-exists F] [--ignore-sigterm]
//!              [--grandchild-pid-file F]
//! ```
//! The first line a client sends chooses what happens:
//! - `SLOW <count> <interval_ms>`: writes `tick <i>` lines at that pace, then closes;
//! - `COUNT`: reads until the client's end-of-file, then answers the byte count;
//! - `PID`: answers the backend's process id;
//! - `CRASH`: the whole backend exits with status 3 at once;
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
        _ => {
            writer.write_all(first.as_bytes())?;
            std::io::copy(&mut reader, &mut writer)?;
        }
    }
    writer.shutdown_write();
    Ok(())
}

fn serve<C: Conn>(incoming: impl Iterator<Item = std::io::Result<C>>) {
    for conn in incoming {
        match conn {
            Ok(c) => {
                std::thread::spawn(move || {
                    let _ = handle(Box::new(c));
                });
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
    if let Some(path) = o.listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).expect("bind unix");
        eprintln!("test backend: listening on {}", o.listen);
        serve(l.incoming());
    } else {
        let l = TcpListener::bind(&o.listen).expect("bind tcp");
        eprintln!("test backend: listening on {}", o.listen);
        serve(l.incoming());
    }
}
