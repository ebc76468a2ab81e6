//! The HTTP reverse proxies users already run, as contenders for HTTP mode:
//! nginx with `proxy_pass` and upstream keep-alive (tuned, and as the bench
//! had it before issue 32), and Caddy with
//! `reverse_proxy` (Debian's packages), each on a port of its own with a
//! config written to a temporary directory.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts nginx.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Where Debian puts Caddy.
pub const CADDY: &str = "/usr/bin/caddy";

/// Which reverse proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// nginx as a user tunes it for the load: two workers (one a core),
    /// `proxy_pass` to an upstream block that keeps `keepalive` idle
    /// connections (at least the clients of the load), `keepalive_requests`
    /// [`NGINX_KEEPALIVE_REQUESTS`] on both sides, HTTP/1.1 upstream, no
    /// access log.
    Nginx {
        /// The upstream block's `keepalive`: idle upstream connections kept.
        keepalive: usize,
    },
    /// nginx as this bench had it before issue 32: the same, but
    /// `keepalive 64` and nginx's default `keepalive_requests` (1000), so at
    /// more clients than 64 it opens and closes upstream connections.
    NginxKeepalive64,
    /// Caddy 2: `reverse_proxy` (keep-alive upstream by default), no admin
    /// endpoint, no automatic HTTPS.
    Caddy,
}

/// The tuned nginx's `keepalive_requests`, for client and upstream
/// connections: high enough that no wrk run reaches it.
pub const NGINX_KEEPALIVE_REQUESTS: u64 = 100_000_000;

/// A running reverse proxy, stopped when dropped.
pub struct ReverseProxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ReverseProxy {
    /// Starts `kind` in front of `backend` on a free port of 127.0.0.1 and
    /// waits until it accepts.
    pub fn start(kind: Kind, backend: SocketAddr) -> ReverseProxy {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut cmd = match kind {
            Kind::Nginx { .. } | Kind::NginxKeepalive64 => {
                let conf = dir.path().join("nginx.conf");
                std::fs::write(&conf, nginx_conf(kind, dir.path(), addr, backend))
                    .expect("write nginx.conf");
                let mut cmd = Command::new(NGINX);
                cmd.arg("-c")
                    .arg(&conf)
                    .arg("-e")
                    .arg(dir.path().join("error.log"));
                cmd
            }
            Kind::Caddy => {
                let conf = dir.path().join("Caddyfile");
                std::fs::write(
                    &conf,
                    format!(
                        "{{\n  admin off\n  auto_https off\n}}\n\
                         http://{addr} {{\n  reverse_proxy {backend}\n}}\n"
                    ),
                )
                .expect("write Caddyfile");
                let mut cmd = Command::new(CADDY);
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&conf)
                    .env("XDG_DATA_HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path())
                    .env("HOME", dir.path());
                cmd
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the reverse proxy");
        let proxy = ReverseProxy {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "{kind:?} never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process (nginx's master; its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ReverseProxy {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's configuration for `kind`, its temporary files under `dir`.
fn nginx_conf(kind: Kind, dir: &Path, addr: SocketAddr, backend: SocketAddr) -> String {
    let d = dir.display();
    let (keepalive, requests) = match kind {
        Kind::Nginx { keepalive } => (
            keepalive,
            format!("keepalive_requests {NGINX_KEEPALIVE_REQUESTS}; "),
        ),
        _ => (64, String::new()),
    };
    format!(
        "daemon off;\nuser root;\nworker_processes 2;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  {requests}\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         upstream backend {{ server {backend}; keepalive {keepalive}; {requests}}}\n\
         server {{\n    listen {addr};\n    location / {{\n\
         proxy_pass http://backend;\n      proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n\
         proxy_max_temp_file_size 0;\n    }}\n  }}\n}}\n"
    )
}
