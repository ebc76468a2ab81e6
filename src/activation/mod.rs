//! Where the sockets come from: the service manager (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`, as `sd_listen_fds_with_names` reads them),
//! or `--listen` when idlegate is not socket-activated; and which upstream
//! serves each of them.
//!
//! Everything here runs before the runtime starts, and every error is a usage
//! error (exit 2): a unit file and its socket do not match.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;

pub mod error;

pub use error::{ActivationError, FdLabel};

use crate::address::{Address, UpstreamSpec};
use crate::net;
use crate::sys::{self, SocketKind};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The activation variables, read by `main` from the environment.
#[derive(Clone, Debug, Default)]
pub struct ActivationEnv {
    /// `LISTEN_PID`.
    pub listen_pid: Option<String>,
    /// `LISTEN_FDS`.
    pub listen_fds: Option<String>,
    /// `LISTEN_FDNAMES`.
    pub listen_fdnames: Option<String>,
}

impl ActivationEnv {
    /// Reads the three variables from this process's environment.
    pub fn from_process() -> Self {
        ActivationEnv {
            listen_pid: std::env::var("LISTEN_PID").ok(),
            listen_fds: std::env::var("LISTEN_FDS").ok(),
            listen_fdnames: std::env::var("LISTEN_FDNAMES").ok(),
        }
    }

    /// The passed descriptors and their names, or `None` when this process was
    /// not socket-activated (no `LISTEN_PID`, or another process's).
    fn passed(&self, our_pid: u32) -> Result<Option<Vec<(RawFd, String)>>, ActivationError> {
        let Some(pid) = &self.listen_pid else {
            return Ok(None);
        };
        let Some(fds) = &self.listen_fds else {
            return Ok(None);
        };
        match pid.trim().parse::<u32>() {
            Ok(pid) if pid == our_pid => {}
            Ok(_) => return Ok(None),
            Err(_) => {
                return Err(ActivationError::Env {
                    var: "LISTEN_PID",
                    value: pid.clone(),
                })
            }
        }
        let count = fds
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ActivationError::Env {
                var: "LISTEN_FDS",
                value: fds.clone(),
            })?;
        let names: Vec<String> = match &self.listen_fdnames {
            Some(names) => names.split(':').map(str::to_owned).collect(),
            None => vec!["unknown".to_owned(); count as usize],
        };
        if names.len() != count as usize {
            return Err(ActivationError::NamesCount {
                names: names.len(),
                fds: count as usize,
            });
        }
        Ok(Some(
            names
                .into_iter()
                .enumerate()
                .map(|(i, n)| (LISTEN_FDS_START + i as RawFd, n))
                .collect(),
        ))
    }
}

/// A listening socket before the runtime exists.
#[derive(Debug)]
pub enum StdListener {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// Unix stream.
    Unix(std::os::unix::net::UnixListener),
    /// UDP.
    Udp(std::net::UdpSocket),
}

impl StdListener {
    /// Whether this is a datagram socket, which needs a `udp:` upstream.
    fn is_udp(&self) -> bool {
        matches!(self, StdListener::Udp(_))
    }

    /// Hands the socket to the running tokio runtime.
    pub fn into_tokio(self) -> std::io::Result<net::Listener> {
        Ok(match self {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(l)?;
                net::Listener::Stream(net::StreamListener::Tcp(l))
            }
            StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                let l = tokio::net::UnixListener::from_std(l)?;
                net::Listener::Stream(net::StreamListener::Unix(l))
            }
            StdListener::Udp(s) => {
                s.set_nonblocking(true)?;
                net::Listener::Datagram(std::sync::Arc::new(tokio::net::UdpSocket::from_std(s)?))
            }
        })
    }
}

/// A connected socket (systemd `Accept=yes`) before the runtime exists.
#[derive(Debug)]
pub enum StdStream {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// Unix stream.
    Unix(std::os::unix::net::UnixStream),
}

impl StdStream {
    /// Hands the socket to the running tokio runtime.
    pub fn into_tokio(self) -> std::io::Result<net::Stream> {
        Ok(match self {
            StdStream::Tcp(s) => {
                s.set_nonblocking(true)?;
                let _ = s.set_nodelay(true);
                net::Stream::Tcp(tokio::net::TcpStream::from_std(s)?)
            }
            StdStream::Unix(s) => {
                s.set_nonblocking(true)?;
                net::Stream::Unix(tokio::net::UnixStream::from_std(s)?)
            }
        })
    }
}

/// One listening socket and the upstream that serves it.
#[derive(Debug)]
pub struct Route<L> {
    /// The socket clients connect to.
    pub listener: L,
    /// Where their traffic goes, and how.
    pub upstream: UpstreamSpec,
    /// How logs name the socket: `fd 3 (http)` or the `--listen` address.
    pub label: String,
}

/// The sockets idlegate serves, and how it ends when idle.
#[derive(Debug)]
pub enum Sockets<L, S> {
    /// Passed by the service manager: idle means exit, the manager keeps the sockets.
    Activated(Vec<Route<L>>),
    /// Bound by idlegate (`--listen`): idle means stop the backend and keep listening.
    Bound(Vec<Route<L>>),
    /// One connection passed by an `Accept=yes` socket: serve it, then exit.
    Connection {
        /// The client.
        stream: S,
        /// Where it goes, and how.
        upstream: UpstreamSpec,
    },
}

/// [`Sockets`] as taken before the runtime starts.
pub type StdSockets = Sockets<StdListener, StdStream>;
/// [`Sockets`] ready for the runtime.
pub type RuntimeSockets = Sockets<net::Listener, net::Stream>;

impl StdSockets {
    /// Hands every socket to the running tokio runtime.
    pub fn into_tokio(self) -> std::io::Result<RuntimeSockets> {
        let convert =
            |routes: Vec<Route<StdListener>>| -> std::io::Result<Vec<Route<net::Listener>>> {
                routes
                    .into_iter()
                    .map(|r| {
                        Ok(Route {
                            listener: r.listener.into_tokio()?,
                            upstream: r.upstream,
                            label: r.label,
                        })
                    })
                    .collect()
            };
        Ok(match self {
            Sockets::Activated(r) => Sockets::Activated(convert(r)?),
            Sockets::Bound(r) => Sockets::Bound(convert(r)?),
            Sockets::Connection { stream, upstream } => Sockets::Connection {
                stream: stream.into_tokio()?,
                upstream,
            },
        })
    }
}

enum Passed {
    Listener(StdListener),
    Connected(StdStream),
}

fn adopt(fd: RawFd, name: &str) -> Result<Passed, ActivationError> {
    let label = || FdLabel {
        fd,
        name: name.to_owned(),
    };
    let kind = sys::classify(fd).map_err(|source| ActivationError::Fd {
        name: label(),
        source,
    })?;
    let unsupported = |what| {
        Err(ActivationError::Unsupported {
            name: label(),
            what,
        })
    };
    match kind {
        SocketKind::Datagram => return unsupported("Unix datagram sockets (ListenDatagram=/path)"),
        SocketKind::Other => return unsupported("sockets other than TCP and Unix streams"),
        _ => {}
    }
    let owned: OwnedFd = sys::adopt_passed_fd(fd).map_err(|source| ActivationError::Fd {
        name: label(),
        source,
    })?;
    Ok(match kind {
        SocketKind::TcpListener => Passed::Listener(StdListener::Tcp(owned.into())),
        SocketKind::UnixListener => Passed::Listener(StdListener::Unix(owned.into())),
        SocketKind::Udp => Passed::Listener(StdListener::Udp(owned.into())),
        SocketKind::TcpConnected => Passed::Connected(StdStream::Tcp(owned.into())),
        SocketKind::UnixConnected => Passed::Connected(StdStream::Unix(owned.into())),
        SocketKind::Datagram | SocketKind::Other => unreachable!("rejected above"),
    })
}

/// Takes the passed sockets (or binds `listen`) and pairs each with its
/// upstream; a passed socket named `control` is the control socket
/// ([`crate::wake::control`]), returned apart.
///
/// `has_command` is whether idlegate starts the backend itself: an `Accept=yes`
/// connection cannot have one, as every connection would start its own.
pub fn take_sockets(
    env: &ActivationEnv,
    our_pid: u32,
    upstreams: &[UpstreamSpec],
    listen: &[Address],
    has_command: bool,
) -> Result<(StdSockets, Option<std::os::unix::net::UnixListener>), ActivationError> {
    match env.passed(our_pid)? {
        Some(mut passed) => {
            let control = split_off_control(&mut passed)?;
            Ok((take_passed(passed, upstreams, has_command)?, control))
        }
        None => Ok((bind_listen(upstreams, listen)?, None)),
    }
}

/// The `LISTEN_FDNAMES` name of the control socket ([`crate::wake::control`]).
pub const CONTROL_NAME: &str = "control";

/// Takes the passed socket named `control` out of `passed`, if there is one.
fn split_off_control(
    passed: &mut Vec<(RawFd, String)>,
) -> Result<Option<std::os::unix::net::UnixListener>, ActivationError> {
    let Some(i) = passed.iter().position(|(_, name)| name == CONTROL_NAME) else {
        return Ok(None);
    };
    let (fd, name) = passed.remove(i);
    if passed.iter().any(|(_, n)| n == CONTROL_NAME) {
        return Err(ActivationError::Mismatch(
            "more than one passed socket is named control: give the control socket one ListenStream=".into(),
        ));
    }
    match adopt(fd, &name)? {
        Passed::Listener(StdListener::Unix(listener)) => Ok(Some(listener)),
        _ => Err(ActivationError::Unsupported {
            name: FdLabel { fd, name },
            what: "a control socket other than a listening Unix stream socket (ListenStream=/path)",
        }),
    }
}

fn take_passed(
    passed: Vec<(RawFd, String)>,
    upstreams: &[UpstreamSpec],
    has_command: bool,
) -> Result<StdSockets, ActivationError> {
    // Classify every descriptor first, so a bad one is reported before any is used.
    let mut sockets = Vec::with_capacity(passed.len());
    for (fd, name) in &passed {
        sockets.push((
            FdLabel {
                fd: *fd,
                name: name.clone(),
            },
            adopt(*fd, name)?,
        ));
    }
    if sockets
        .iter()
        .any(|(_, s)| matches!(s, Passed::Connected(_)))
    {
        return one_connection(sockets, upstreams, has_command);
    }
    let labelled: Vec<(FdLabel, StdListener)> = sockets
        .into_iter()
        .map(|(label, s)| match s {
            Passed::Listener(l) => (label, l),
            Passed::Connected(_) => unreachable!("handled above"),
        })
        .collect();
    let names: Vec<String> = labelled.iter().map(|(l, _)| l.name.clone()).collect();

    if upstreams.iter().all(|u| u.socket_name.is_some()) {
        by_name(labelled, &names, upstreams)
    } else {
        in_order(labelled, &names, upstreams)
    }
}

/// `Accept=yes`: one connected socket, served as one connection to the
/// external backend.
fn one_connection(
    mut sockets: Vec<(FdLabel, Passed)>,
    upstreams: &[UpstreamSpec],
    has_command: bool,
) -> Result<StdSockets, ActivationError> {
    if sockets.len() != 1 {
        return Err(ActivationError::Mismatch(
            "a connected socket (Accept=yes) was passed together with other sockets; idlegate serves either one connection or listening sockets".into(),
        ));
    }
    if has_command {
        return Err(ActivationError::Mismatch(
            "a connected socket (Accept=yes) was passed, but a backend COMMAND was given: every connection would start its own backend; use Accept=no, or drop the COMMAND and run the backend separately".into(),
        ));
    }
    let (label, socket) = sockets.pop().expect("one socket");
    let Passed::Connected(stream) = socket else {
        unreachable!("checked above")
    };
    let upstream = match upstreams {
        [one] => one.clone(),
        _ => match upstreams
            .iter()
            .find(|u| u.socket_name.as_deref() == Some(label.name.as_str()))
        {
            Some(u) => u.clone(),
            None => {
                return Err(ActivationError::Mismatch(format!(
                "one connection ({label}) was passed but {} upstreams given; give one --upstream",
                upstreams.len()
            )))
            }
        },
    };
    if upstream.address.is_udp() {
        return Err(ActivationError::Mismatch(format!(
            "passed socket {label} is a stream connection but its upstream {upstream} is UDP"
        )));
    }
    Ok(Sockets::Connection { stream, upstream })
}

/// Listening sockets paired with upstreams by `FileDescriptorName=`.
fn by_name(
    labelled: Vec<(FdLabel, StdListener)>,
    names: &[String],
    upstreams: &[UpstreamSpec],
) -> Result<StdSockets, ActivationError> {
    for u in upstreams {
        let name = u.socket_name.as_deref().expect("named");
        if !names.iter().any(|n| n == name) {
            return Err(ActivationError::Mismatch(format!(
                "--upstream {u}: no passed socket is named '{name}' (LISTEN_FDNAMES={})",
                names.join(":")
            )));
        }
        if upstreams
            .iter()
            .filter(|o| o.socket_name.as_deref() == Some(name))
            .count()
            > 1
        {
            return Err(ActivationError::Mismatch(format!(
                "--upstream: the name '{name}' is given more than once"
            )));
        }
    }
    let mut routes = Vec::with_capacity(labelled.len());
    for (label, listener) in labelled {
        let Some(u) = upstreams
            .iter()
            .find(|u| u.socket_name.as_deref() == Some(label.name.as_str()))
        else {
            return Err(ActivationError::Mismatch(format!(
                "passed socket {label} has no upstream: add --upstream {}=ADDR",
                label.name
            )));
        };
        routes.push(Route {
            listener,
            upstream: u.clone(),
            label: label.to_string(),
        });
    }
    matching_kinds(routes).map(Sockets::Activated)
}

/// Listening sockets paired with upstreams in order.
fn in_order(
    labelled: Vec<(FdLabel, StdListener)>,
    names: &[String],
    upstreams: &[UpstreamSpec],
) -> Result<StdSockets, ActivationError> {
    if upstreams.len() != labelled.len() {
        return Err(ActivationError::Mismatch(format!(
            "{} sockets were passed (LISTEN_FDNAMES={}) but {} --upstream given: give one upstream per socket, in order, or bind them by name with NAME=ADDR",
            labelled.len(),
            names.join(":"),
            upstreams.len()
        )));
    }
    matching_kinds(
        labelled
            .into_iter()
            .zip(upstreams)
            .map(|((label, listener), u)| Route {
                listener,
                upstream: u.clone(),
                label: label.to_string(),
            })
            .collect(),
    )
    .map(Sockets::Activated)
}

/// Checks that datagram sockets go to `udp:` upstreams and stream sockets to
/// stream ones: a UDP socket cannot be forwarded to a TCP port, nor back.
fn matching_kinds(
    routes: Vec<Route<StdListener>>,
) -> Result<Vec<Route<StdListener>>, ActivationError> {
    for r in &routes {
        match (r.listener.is_udp(), r.upstream.address.is_udp()) {
            (true, false) => {
                return Err(ActivationError::Mismatch(format!(
                    "socket {} is a UDP socket but its upstream {} is not: write it as udp:HOST:PORT",
                    r.label, r.upstream
                )))
            }
            (false, true) => {
                return Err(ActivationError::Mismatch(format!(
                    "socket {} is a stream socket but its upstream {} is UDP: pass a datagram socket (ListenDatagram=) or use --listen udp:HOST:PORT",
                    r.label, r.upstream
                )))
            }
            _ => {}
        }
    }
    Ok(routes)
}

fn bind_listen(
    upstreams: &[UpstreamSpec],
    listen: &[Address],
) -> Result<StdSockets, ActivationError> {
    if listen.is_empty() {
        return Err(ActivationError::Mismatch(
            "no sockets: not socket-activated (no LISTEN_FDS for this process) and no --listen given".into(),
        ));
    }
    if upstreams.iter().any(|u| u.socket_name.is_some()) {
        return Err(ActivationError::Mismatch(
            "--upstream NAME=ADDR needs sockets passed by systemd; with --listen give plain addresses, one per --listen".into(),
        ));
    }
    if upstreams.len() != listen.len() {
        return Err(ActivationError::Mismatch(format!(
            "{} --listen but {} --upstream given: give one upstream per listen address, in order",
            listen.len(),
            upstreams.len()
        )));
    }
    let mut routes = Vec::with_capacity(listen.len());
    for (address, upstream) in listen.iter().zip(upstreams) {
        let bind_error = |source| ActivationError::Bind {
            address: address.clone(),
            source,
        };
        let listener = match address {
            Address::Tcp { addrs, .. } => {
                StdListener::Tcp(std::net::TcpListener::bind(&addrs[..]).map_err(bind_error)?)
            }
            Address::Unix(path) => {
                // A socket file left by an earlier run would make bind fail; nothing
                // listens on it any more if it is ours to bind.
                if std::fs::symlink_metadata(path)
                    .map(|m| m.file_type().is_socket())
                    .unwrap_or(false)
                    && std::os::unix::net::UnixStream::connect(path).is_err()
                {
                    let _ = std::fs::remove_file(path);
                }
                StdListener::Unix(std::os::unix::net::UnixListener::bind(path).map_err(bind_error)?)
            }
            Address::Udp { addrs, .. } => {
                StdListener::Udp(std::net::UdpSocket::bind(&addrs[..]).map_err(bind_error)?)
            }
        };
        routes.push(Route {
            listener,
            upstream: upstream.clone(),
            label: address.to_string(),
        });
    }
    matching_kinds(routes).map(Sockets::Bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: &str, fds: &str, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            listen_pid: Some(pid.into()),
            listen_fds: Some(fds.into()),
            listen_fdnames: names.map(Into::into),
        }
    }

    #[test]
    fn activation_variables_follow_sd_listen_fds() {
        assert!(ActivationEnv::default().passed(10).unwrap().is_none());
        assert!(
            env("11", "1", None).passed(10).unwrap().is_none(),
            "another process's LISTEN_PID is ignored"
        );
        let passed = env("10", "2", Some("http:https"))
            .passed(10)
            .unwrap()
            .unwrap();
        assert_eq!(
            passed,
            vec![(3, "http".to_owned()), (4, "https".to_owned())]
        );
        let passed = env("10", "1", None).passed(10).unwrap().unwrap();
        assert_eq!(passed, vec![(3, "unknown".to_owned())]);
        assert!(env("10", "x", None).passed(10).is_err());
        assert!(env("10", "2", Some("a")).passed(10).is_err());
    }
}
