//! Socket addresses as users write them: `HOST:PORT`, `unix:/path` (or a bare
//! absolute path, as systemd-socket-proxyd takes it), `udp:HOST:PORT`, and
//! `NAME=ADDR` routes.
//!
//! Names are resolved once, when the configuration is read, so nothing on the
//! connection path waits for a resolver.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A parsed and resolved address: a stream (TCP, Unix) or a UDP one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A TCP address, with every socket address its host resolved to.
    Tcp {
        /// What the user wrote, for messages.
        text: String,
        /// The resolved addresses, tried in order.
        addrs: Vec<SocketAddr>,
    },
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// A UDP address (`udp:HOST:PORT`), with every socket address its host resolved to.
    Udp {
        /// What the user wrote after `udp:`, for messages.
        text: String,
        /// The resolved addresses; the first is used.
        addrs: Vec<SocketAddr>,
    },
}

/// Why an address could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    /// The text is not of a form we understand.
    #[error("'{0}' is not an address: expected HOST:PORT, unix:/path, /path or udp:HOST:PORT")]
    Syntax(String),
    /// The host name did not resolve.
    #[error("'{text}' does not resolve: {reason}")]
    Resolve {
        /// What the user wrote.
        text: String,
        /// The resolver's answer.
        reason: String,
    },
}

/// Whether parsing an address looks its host name up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Names {
    /// Resolve it now (a start: host names are resolved once).
    #[default]
    Resolve,
    /// Keep it unresolved, its socket addresses empty: for the unit
    /// generator, which runs early at boot, before any name service.
    Keep,
}

impl Address {
    /// Parses `text` and resolves its host name, if any.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        Self::parse_with(text, Names::Resolve)
    }

    /// Parses `text`, resolving its host name only if `names` says so.
    pub fn parse_with(text: &str, names: Names) -> Result<Self, AddressError> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::Syntax(text.to_owned()));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        if let Some(rest) = text.strip_prefix("udp:") {
            return match Self::parse_host_port(rest.trim_start(), names) {
                Ok((text, addrs)) => Ok(Address::Udp { text, addrs }),
                Err(AddressError::Syntax(_)) => Err(AddressError::Syntax(text.to_owned())),
                Err(e) => Err(e),
            };
        }
        let (text, addrs) = Self::parse_host_port(text, names)?;
        Ok(Address::Tcp { text, addrs })
    }

    /// Whether this is a UDP address.
    pub fn is_udp(&self) -> bool {
        matches!(self, Address::Udp { .. })
    }

    /// The first socket address a host resolved to; `None` for a Unix path.
    pub fn first_socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Tcp { addrs, .. } | Address::Udp { addrs, .. } => addrs.first().copied(),
            Address::Unix(_) => None,
        }
    }

    /// `HOST:PORT`, resolved: the text as written and its socket addresses.
    fn parse_host_port(
        text: &str,
        names: Names,
    ) -> Result<(String, Vec<SocketAddr>), AddressError> {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(AddressError::Syntax(text.to_owned()));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(AddressError::Syntax(text.to_owned()));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok((text.to_owned(), vec![addr]));
        }
        if host.starts_with('[') || host.contains(':') {
            // A bracketed or bare IPv6 literal that did not parse above.
            return Err(AddressError::Syntax(text.to_owned()));
        }
        if names == Names::Keep {
            return Ok((text.to_owned(), Vec::new()));
        }
        let addrs: Vec<SocketAddr> = text
            .to_socket_addrs()
            .map_err(|e| AddressError::Resolve {
                text: text.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(AddressError::Resolve {
                text: text.to_owned(),
                reason: "no addresses".into(),
            });
        }
        Ok((text.to_owned(), addrs))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { text, .. } => f.write_str(text),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Udp { text, .. } => write!(f, "udp:{text}"),
        }
    }
}

/// How a socket's traffic is forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A byte stream, copied both ways; a connection is in flight while open.
    #[default]
    Tcp,
    /// HTTP/1.1 and h2c, forwarded with hyper; a request is in flight until its
    /// response is sent, an idle keep-alive connection is not.
    Http,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Mode::Tcp),
            "http" => Ok(Mode::Http),
            _ => Err("expected tcp or http".into()),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        })
    }
}

/// What HTTP mode speaks to an upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c): gRPC and other
    /// HTTP/2-only backends; requests share one connection.
    H2c,
}

impl std::str::FromStr for UpstreamProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http1" | "http/1.1" => Ok(UpstreamProtocol::Http1),
            "h2c" => Ok(UpstreamProtocol::H2c),
            _ => Err("expected http1 or h2c".into()),
        }
    }
}

impl std::fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        })
    }
}

/// Which PROXY protocol header to send upstream (`--proxy-protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    /// The text header: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl std::str::FromStr for ProxyProtocolVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "v1" | "1" => Ok(ProxyProtocolVersion::V1),
            "v2" | "2" => Ok(ProxyProtocolVersion::V2),
            _ => Err("expected v1 or v2".into()),
        }
    }
}

/// An `--upstream` value: an address, optionally bound to a socket name, and
/// how to speak to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// The `LISTEN_FDNAMES` name this upstream serves, from `NAME=ADDR`.
    pub socket_name: Option<String>,
    /// Where the traffic goes.
    pub address: Address,
    /// Byte stream or HTTP.
    pub mode: Mode,
    /// TCP mode: send this PROXY protocol header first on each upstream connection.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// HTTP mode: HTTP/1.1 or h2c to the upstream.
    pub protocol: UpstreamProtocol,
}

impl AsRef<UpstreamSpec> for UpstreamSpec {
    fn as_ref(&self) -> &UpstreamSpec {
        self
    }
}

impl UpstreamSpec {
    /// Parses `ADDR` or `NAME=ADDR`.
    ///
    /// A name is what systemd allows in `FileDescriptorName=`: printable, no
    /// colon, no slash; so `unix:/run/a=b` stays a plain path.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        Self::parse_with(text, Names::Resolve)
    }

    /// [`UpstreamSpec::parse`], resolving the host name only if `names` says so.
    pub fn parse_with(text: &str, names: Names) -> Result<Self, AddressError> {
        if let Some((name, rest)) = text.split_once('=') {
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != ':' && c != '/' && c != '[');
            if is_name {
                return Ok(UpstreamSpec {
                    socket_name: Some(name.to_owned()),
                    address: Address::parse_with(rest, names)?,
                    mode: Default::default(),
                    proxy_protocol: None,
                    protocol: Default::default(),
                });
            }
        }
        Ok(UpstreamSpec {
            socket_name: None,
            address: Address::parse_with(text, names)?,
            mode: Default::default(),
            proxy_protocol: None,
            protocol: Default::default(),
        })
    }
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.socket_name {
            Some(name) => write!(f, "{name}={}", self.address),
            None => self.address.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz-style: thousands of hostile strings, never a panic.
    #[test]
    fn hostile_addresses_never_panic() {
        const PIECES: &[&str] = &[
            "127.0.0.1",
            "::1",
            "[::1]",
            "[",
            "]",
            ":",
            "8080",
            "0",
            "65535",
            "65536",
            "-1",
            "99999999999999999999",
            "unix:",
            "unix:/",
            "/",
            "/tmp/x.sock",
            "=",
            "http=",
            "a=",
            "@",
            " ",
            "\u{0}",
            "é",
            "%",
            "..",
            "0.0.0.0",
            "[fe80::1%1]",
            "\n",
            "udp:",
            "udp:[::1]:53",
        ];
        let mut noise = crate::fuzz_support::Noise::new(0xADD2);
        for _ in 0..20_000 {
            let text: String = (0..1 + noise.below(6))
                .map(|_| noise.pick(PIECES))
                .collect();
            let _ = Address::parse(&text);
            let _ = UpstreamSpec::parse(&text);
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Address::parse("127.0.0.1:8080").unwrap(),
            Address::Tcp {
                text: "127.0.0.1:8080".into(),
                addrs: vec!["127.0.0.1:8080".parse().unwrap()]
            }
        );
        assert!(matches!(
            Address::parse("[::1]:80").unwrap(),
            Address::Tcp { .. }
        ));
        assert_eq!(
            Address::parse("unix:/run/x.sock").unwrap(),
            Address::Unix("/run/x.sock".into())
        );
        assert_eq!(
            Address::parse("/run/x.sock").unwrap(),
            Address::Unix("/run/x.sock".into())
        );
        assert!(
            matches!(Address::parse("localhost:80").unwrap(), Address::Tcp { addrs, .. } if !addrs.is_empty())
        );
        assert_eq!(
            Address::parse("udp:127.0.0.1:53").unwrap(),
            Address::Udp {
                text: "127.0.0.1:53".into(),
                addrs: vec!["127.0.0.1:53".parse().unwrap()]
            }
        );
        assert_eq!(
            Address::parse("udp:[::1]:53").unwrap().to_string(),
            "udp:[::1]:53"
        );
        let spec = UpstreamSpec::parse("dns=udp:127.0.0.1:5353").unwrap();
        assert_eq!(spec.socket_name.as_deref(), Some("dns"));
        assert!(spec.address.is_udp());
        for bad in [
            "",
            "8080",
            "host:",
            ":80",
            "host:99999",
            "unix:",
            "[::1:80",
            "udp:",
            "udp:53",
            "udp:/run/x.sock",
        ] {
            assert!(
                matches!(Address::parse(bad), Err(AddressError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn named_upstreams() {
        let spec = UpstreamSpec::parse("https=127.0.0.1:8443").unwrap();
        assert_eq!(spec.socket_name.as_deref(), Some("https"));
        let spec = UpstreamSpec::parse("unix:/run/a=b").unwrap();
        assert_eq!(spec.socket_name, None);
        assert_eq!(spec.address, Address::Unix("/run/a=b".into()));
        assert!(UpstreamSpec::parse("web=nonsense").is_err());
    }
}
