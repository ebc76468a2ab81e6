//! How idlegate reaches a container engine's API: the one place that opens a
//! connection ([`Transport::connect`]), whatever the address says.
//!
//! - `unix:///path`: the engine's socket on this host;
//! - `tcp://HOST:PORT`: plain, or TLS (rustls) with Docker's files `ca.pem`,
//!   `cert.pem` and `key.pem` from one directory: the server is verified
//!   against `ca.pem`, idlegate shows `cert.pem`;
//! - `ssh://[USER@]HOST[:PORT][/PATH]`: the system's `ssh` as a child per
//!   connection, its stdin and stdout the stream (its config, keys and
//!   known_hosts apply; `BatchMode=yes`, so it never asks for a password).
//!   Without a path it runs `docker system dial-stdio` on the host, as the
//!   docker CLI does; with one it forwards to that socket on the host (see
//!   [`super::ssh`]).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use super::ssh::SshSaid;
use super::ssh::{self, SshConnection, SshError};
use tokio::net::{TcpStream, UnixStream};

/// Where the engine's API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineAddress {
    /// A Unix socket on this host.
    Unix(PathBuf),
    /// A TCP address, with TLS when `tls` names the certificate directory.
    Tcp {
        /// The host name or address.
        host: String,
        /// The port.
        port: u16,
        /// The directory holding `ca.pem`, `cert.pem` and `key.pem`.
        tls: Option<PathBuf>,
    },
    /// A host reached through the system's `ssh`.
    Ssh {
        /// The login, if given (else ssh's own default).
        user: Option<String>,
        /// The host.
        host: String,
        /// The port, if given.
        port: Option<u16>,
        /// The engine socket on the host; `None` runs `docker system dial-stdio`.
        socket: Option<PathBuf>,
    },
}

/// The certificate files of a TLS directory, as Docker names them.
pub const TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

impl EngineAddress {
    /// Reads `unix:///path`, `tcp://HOST:PORT` or `ssh://[USER@]HOST[:PORT][/PATH]`;
    /// the error says what is wrong, for the caller to name the flag.
    pub fn parse(url: &str) -> Result<EngineAddress, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected unix:///PATH, tcp://HOST:PORT or ssh://USER@HOST")?;
        match scheme {
            "unix" if rest.starts_with('/') => Ok(EngineAddress::Unix(PathBuf::from(rest))),
            "unix" => Err("expected an absolute path after unix://".into()),
            "tcp" => {
                let (host, port) = host_port(rest.trim_end_matches('/'))?;
                let port = port.ok_or("expected tcp://HOST:PORT (the port is needed)")?;
                Ok(EngineAddress::Tcp {
                    host,
                    port,
                    tls: None,
                })
            }
            "ssh" => {
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], Some(&rest[i..])),
                    None => (rest, None),
                };
                let (user, hostport) = match authority.rsplit_once('@') {
                    Some((user, h)) if !user.is_empty() => (Some(user.to_owned()), h),
                    Some(_) => return Err("an empty user before @".into()),
                    None => (None, authority),
                };
                let (host, port) = host_port(hostport)?;
                Ok(EngineAddress::Ssh {
                    user,
                    host,
                    port,
                    socket: path.filter(|p| *p != "/").map(PathBuf::from),
                })
            }
            other => Err(format!(
                "unknown scheme {other}:// (expected unix, tcp or ssh)"
            )),
        }
    }

    /// Whether this is plain TCP to an address other than loopback, which
    /// hands root on the engine's host to anyone on the path.
    pub fn is_plain_remote_tcp(&self) -> bool {
        match self {
            EngineAddress::Tcp {
                host, tls: None, ..
            } => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let loopback = bare == "localhost"
                    || bare
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                !loopback
            }
            _ => false,
        }
    }

    /// The socket path, when this is a Unix socket.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            EngineAddress::Unix(path) => Some(path),
            _ => None,
        }
    }
}

/// `HOST[:PORT]` (IPv6 in brackets).
fn host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an unclosed [ in the host")?;
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (text.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("expected a host".into());
    }
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| format!("bad port {p:?}")))
        .transpose()?;
    Ok((host, port))
}

impl fmt::Display for EngineAddress {
    /// A Unix socket shows as its path (as the errors always named it), the
    /// others as their URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineAddress::Unix(path) => write!(f, "{}", path.display()),
            EngineAddress::Tcp { host, port, tls } => {
                write!(f, "tcp://{host}:{port}")?;
                match tls {
                    Some(_) => write!(f, " (TLS)"),
                    None => Ok(()),
                }
            }
            EngineAddress::Ssh {
                user,
                host,
                port,
                socket,
            } => {
                write!(f, "ssh://")?;
                if let Some(user) = user {
                    write!(f, "{user}@")?;
                }
                write!(f, "{host}")?;
                if let Some(port) = port {
                    write!(f, ":{port}")?;
                }
                if let Some(socket) = socket {
                    write!(f, "{}", socket.display())?;
                }
                Ok(())
            }
        }
    }
}

/// Why a connection to the engine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting failed (no such socket, refused, no route, timed out).
    #[error("{0}")]
    Unreachable(io::Error),
    /// The TLS files could not be read, or the handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// `ssh` could not be started.
    #[error("cannot run ssh: {0}")]
    Ssh(io::Error),
    /// `ssh` gave up (a refused login, an unknown host key, no such socket).
    #[error("{0}")]
    SshExited(String),
}

impl TransportError {
    /// Whether the engine's host may merely be asleep or not up yet.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TransportError::Unreachable(_))
    }
}

/// Opens connections to one engine; the TLS settings are read once.
pub struct Transport {
    address: EngineAddress,
    tls: tokio::sync::OnceCell<tokio_rustls::TlsConnector>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transport({})", self.address)
    }
}

/// How long a connect (TCP and TLS handshake, an ssh login) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Transport {
    /// A transport to `address`.
    pub fn new(address: EngineAddress) -> Transport {
        Transport {
            address,
            tls: tokio::sync::OnceCell::new(),
        }
    }

    /// Where it goes.
    pub fn address(&self) -> &EngineAddress {
        &self.address
    }

    /// A fresh connection to the engine, for one HTTP/1.1 exchange.
    pub async fn connect(&self) -> Result<EngineStream, TransportError> {
        match &self.address {
            EngineAddress::Unix(path) => UnixStream::connect(path)
                .await
                .map(|s| EngineStream::new(Inner::Unix(s)))
                .map_err(TransportError::Unreachable),
            EngineAddress::Tcp { host, port, tls } => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((bare, *port)))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                    .map_err(TransportError::Unreachable)?;
                let Some(dir) = tls else {
                    return Ok(EngineStream::new(Inner::Tcp(tcp)));
                };
                let connector = self
                    .tls
                    .get_or_try_init(|| async { tls_connector(dir) })
                    .await?;
                let name = rustls::pki_types::ServerName::try_from(bare.to_owned())
                    .map_err(|e| TransportError::Tls(format!("server name {bare}: {e}")))?;
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                    .map_err(|e| TransportError::Tls(e.to_string()))?;
                Ok(EngineStream::new(Inner::Tls(Box::new(stream))))
            }
            EngineAddress::Ssh {
                user,
                host,
                port,
                socket,
            } => {
                let (connection, said) = ssh::connect(
                    user.as_deref(),
                    host,
                    *port,
                    socket.as_deref(),
                    CONNECT_TIMEOUT,
                )
                .await
                .map_err(|e| match e {
                    SshError::Spawn(e) => TransportError::Ssh(e),
                    SshError::Unreachable(e) => TransportError::Unreachable(e),
                    SshError::Exited(said) => TransportError::SshExited(said),
                })?;
                Ok(match connection {
                    SshConnection::Pipes(pipes) => EngineStream {
                        inner: Inner::Ssh(pipes),
                        said: Some(said),
                        _keep: None,
                    },
                    SshConnection::Forwarded { stream, keep } => EngineStream {
                        inner: Inner::Unix(stream),
                        said: Some(said),
                        _keep: Some(keep),
                    },
                })
            }
        }
    }
}

/// The client side of TLS from Docker's files in `dir`.
fn tls_connector(dir: &Path) -> Result<tokio_rustls::TlsConnector, TransportError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file = |name: &str| dir.join(name);
    let bad = |name: &str, e: &dyn fmt::Display| {
        TransportError::Tls(format!("{}: {e}", file(name).display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file("ca.pem")).map_err(|e| bad("ca.pem", &e))? {
        let cert = cert.map_err(|e| bad("ca.pem", &e))?;
        roots.add(cert).map_err(|e| bad("ca.pem", &e))?;
    }
    let chain = CertificateDer::pem_file_iter(file("cert.pem"))
        .map_err(|e| bad("cert.pem", &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cert.pem", &e))?;
    let key = PrivateKeyDer::from_pem_file(file("key.pem")).map_err(|e| bad("key.pem", &e))?;
    // ring rather than aws-lc-rs: a small, quick build; rustls marks it
    // deprecated only for its lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("cert.pem/key.pem", &e))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One connection to the engine: an `AsyncRead + AsyncWrite` byte stream.
pub struct EngineStream {
    inner: Inner,
    said: Option<SshSaid>,
    /// What must live as long as the stream (an ssh forwarding it).
    _keep: Option<Box<dyn Send + Sync>>,
}

impl fmt::Debug for EngineStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineStream")
    }
}

enum Inner {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Ssh(Box<ssh::SshPipes>),
}

impl EngineStream {
    fn new(inner: Inner) -> EngineStream {
        EngineStream {
            inner,
            said: None,
            _keep: None,
        }
    }

    /// For an ssh connection, a handle on what ssh says on its stderr (why
    /// it failed), readable after the stream is handed away.
    pub fn ssh_said(&self) -> Option<SshSaid> {
        self.said.clone()
    }
}

impl AsyncRead for EngineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Inner::Ssh(p) => Pin::new(&mut p.stdout).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EngineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Unix(s) => Pin::new(s).poll_write(cx, data),
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            Inner::Ssh(p) => Pin::new(&mut p.stdin).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Unix(s) => Pin::new(s).poll_flush(cx),
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Inner::Ssh(p) => Pin::new(&mut p.stdin).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Inner::Ssh(p) => Pin::new(&mut p.stdin).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read() {
        let p = |u: &str| EngineAddress::parse(u);
        assert_eq!(
            p("unix:///run/docker.sock").unwrap(),
            EngineAddress::Unix("/run/docker.sock".into())
        );
        assert_eq!(
            p("tcp://nas.lan:2376").unwrap(),
            EngineAddress::Tcp {
                host: "nas.lan".into(),
                port: 2376,
                tls: None
            }
        );
        assert_eq!(
            p("ssh://root@127.0.0.1:2222/run/podman/podman.sock").unwrap(),
            EngineAddress::Ssh {
                user: Some("root".into()),
                host: "127.0.0.1".into(),
                port: Some(2222),
                socket: Some("/run/podman/podman.sock".into()),
            }
        );
        assert_eq!(
            p("ssh://nas").unwrap().to_string(),
            "ssh://nas",
            "user and port are ssh's own defaults"
        );
        assert!(p("tcp://nas").unwrap_err().contains("port"));
        assert!(p("http://nas:80")
            .unwrap_err()
            .contains("unknown scheme http://"));
        assert!(p("unix://run.sock").is_err());
        assert!(p("/run/docker.sock").is_err());
    }

    #[test]
    fn plain_tcp_is_only_safe_on_loopback() {
        let p = |u: &str| EngineAddress::parse(u).unwrap();
        assert!(!p("tcp://127.0.0.1:2375").is_plain_remote_tcp());
        assert!(!p("tcp://[::1]:2375").is_plain_remote_tcp());
        assert!(!p("tcp://localhost:2375").is_plain_remote_tcp());
        assert!(p("tcp://192.168.1.5:2375").is_plain_remote_tcp());
        let EngineAddress::Tcp { host, port, .. } = p("tcp://nas:2376") else {
            unreachable!()
        };
        let tls = EngineAddress::Tcp {
            host,
            port,
            tls: Some("/etc/docker-certs".into()),
        };
        assert!(!tls.is_plain_remote_tcp());
    }
}
