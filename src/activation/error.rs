//! What a usage error of the passed sockets says (exit status 2), and how a
//! passed descriptor is named in it.

use std::fmt;
use std::os::fd::RawFd;

use crate::address::Address;
use crate::sys;

/// Why the sockets and the upstreams do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// An activation variable holds nonsense.
    #[error("{var}: invalid value '{value}'")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// `LISTEN_FDNAMES` does not name every descriptor.
    #[error("LISTEN_FDNAMES has {names} names but LISTEN_FDS is {fds}")]
    NamesCount {
        /// How many names.
        names: usize,
        /// How many descriptors.
        fds: usize,
    },
    /// A passed descriptor is unusable.
    #[error("passed socket {name} {source}")]
    Fd {
        /// `fd N (name)`.
        name: FdLabel,
        /// What is wrong with it.
        source: sys::FdError,
    },
    /// A passed descriptor is a socket of a kind idlegate does not serve.
    #[error(
        "passed socket {name}: {what} are not supported yet; pass stream sockets (ListenStream=) or UDP sockets (ListenDatagram=PORT)"
    )]
    Unsupported {
        /// `fd N (name)`.
        name: FdLabel,
        /// What it is.
        what: &'static str,
    },
    /// Upstreams and sockets do not pair up.
    #[error("{0}")]
    Mismatch(String),
    /// A `--listen` address could not be bound.
    #[error("--listen {address}: {source}")]
    Bind {
        /// The address.
        address: Address,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A passed descriptor as logs name it: `fd 3 (http)`.
#[derive(Clone, Debug)]
pub struct FdLabel {
    /// The descriptor number.
    pub fd: RawFd,
    /// Its `LISTEN_FDNAMES` name.
    pub name: String,
}

impl fmt::Display for FdLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fd {} ({})", self.fd, self.name)
    }
}
