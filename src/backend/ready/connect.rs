//! Is the backend answering yet? Connect to its address with a fast backoff.
//!
//! A probe connection is opened and closed; a refused or missing socket means
//! "not yet". The first retry comes within a millisecond or two and the delay
//! stays low, so the wait adds little to the backend's own start time.
//!
//! A UDP address has no connection to open: the probe sends one empty
//! datagram, and an ICMP "port unreachable" coming back (`ECONNREFUSED` on the
//! probe socket) means "not yet"; no refusal within a settle time
//! ([`UDP_SETTLE_LOOPBACK`] or [`UDP_SETTLE`]) means ready. A backend that is
//! up receives that one empty datagram.

use std::io;
use std::time::Duration;

use crate::address::Address;
use crate::backoff::Backoff;
use crate::net::Stream;

/// Whether a failed connect may succeed later, as the backend comes up.
pub fn is_not_ready_yet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::WouldBlock
            // A host that sleeps (Wake-on-LAN) or reboots answers no ARP.
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    ) || e.raw_os_error() == Some(libc::EAGAIN)
        || e.raw_os_error() == Some(libc::ECONNREFUSED)
}

/// How long a UDP probe to a non-loopback address waits for a refusal before
/// it counts the port as open.
pub const UDP_SETTLE: Duration = Duration::from_millis(50);
/// The same on loopback, where a refusal is usually queued before the send
/// returns (a port mapped into a container answers through a bridge).
pub const UDP_SETTLE_LOOPBACK: Duration = Duration::from_millis(5);

/// How long one HTTP readiness probe may take to get its answer.
const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one probe connection may take to be accepted: a host waking from
/// sleep drops the first SYNs, and the kernel's own retries would wait
/// longer and longer (up to about two minutes) before the next.
const CONNECT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The pause after "no route to host": the kernel may give that answer at
/// once for a while, and probing a sleeping host every millisecond is waste.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(200);

/// Whether `e` says the host (not the port) cannot be reached.
fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
    )
}

/// Probes `address` until it accepts a connection. Never returns an error for
/// "not yet"; the caller bounds the wait with its own deadline.
pub async fn wait_until_accepting(address: &Address) -> io::Result<()> {
    wait_until_ready(address, None).await
}

/// Probes `address` until it accepts a connection and, with `http_path`,
/// until `GET http_path` gets an HTTP status line back (any status): a port
/// forwarder that accepts and then closes is "not yet", not "ready".
pub async fn wait_until_ready(address: &Address, http_path: Option<&str>) -> io::Result<()> {
    let mut backoff = Backoff::probe();
    if let Address::Udp { addrs, .. } = address {
        let target = addrs[0];
        loop {
            match udp_port_open(target).await {
                Ok(true) => return Ok(()),
                Ok(false) => tokio::time::sleep(backoff.next_delay()).await,
                Err(e) if is_unreachable(&e) => tokio::time::sleep(UNREACHABLE_RETRY).await,
                Err(e) if is_not_ready_yet(&e) => tokio::time::sleep(backoff.next_delay()).await,
                Err(e) => return Err(e),
            }
        }
    }
    loop {
        let connect = tokio::time::timeout(CONNECT_PROBE_TIMEOUT, Stream::connect(address));
        let Ok(connected) = connect.await else {
            continue;
        };
        match connected {
            Ok(probe) => match http_path {
                None => return Ok(()),
                Some(path) => {
                    let answer = tokio::time::timeout(
                        HTTP_PROBE_TIMEOUT,
                        http_answers(probe, address, path),
                    );
                    if let Ok(Ok(true)) = answer.await {
                        return Ok(());
                    }
                    tokio::time::sleep(backoff.next_delay()).await
                }
            },
            Err(e) if is_unreachable(&e) => tokio::time::sleep(UNREACHABLE_RETRY).await,
            Err(e) if is_not_ready_yet(&e) => tokio::time::sleep(backoff.next_delay()).await,
            Err(e) => return Err(e),
        }
    }
}

/// Sends one empty datagram to `target` and tells whether the port is open:
/// not refused (no ICMP "port unreachable") within the settle time.
async fn udp_port_open(target: std::net::SocketAddr) -> io::Result<bool> {
    // A plain non-blocking socket: each look below must be a real receive,
    // and an error queued on the socket wakes no tokio reader.
    let probe = std::net::UdpSocket::bind(crate::net::any_port_like(target))?;
    probe.set_nonblocking(true)?;
    probe.connect(target)?;
    match probe.send(&[]) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(false),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let settle = if target.ip().is_loopback() {
        UDP_SETTLE_LOOPBACK
    } else {
        UDP_SETTLE
    };
    // A refusal is a failed receive, an answer (an echo) a successful one,
    // silence through the settle time means the datagram was taken.
    let looked = || -> io::Result<Option<bool>> {
        let mut sink = [0u8; 1];
        match probe.recv(&mut sink) {
            Ok(_) => Ok(Some(true)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Some(false)),
            Err(e) => Err(e),
        }
    };
    if let Some(open) = looked()? {
        return Ok(open);
    }
    tokio::time::sleep(settle).await;
    Ok(looked()?.unwrap_or(true))
}

/// Sends one `GET` and tells whether an HTTP status line came back.
async fn http_answers(mut probe: Stream, address: &Address, path: &str) -> io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = match address {
        Address::Tcp { text, .. } | Address::Udp { text, .. } => text.as_str(),
        Address::Unix(_) => "localhost",
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: idlegate-readiness\r\nConnection: close\r\n\r\n");
    probe.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match probe.read(&mut head[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got >= 9 && head.starts_with(b"HTTP/1.") && head[8] == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sleeping host (no ARP answer, no route) is "not yet", with a
    /// pause of its own; a bad address is not.
    #[test]
    fn an_unreachable_host_is_not_ready_yet() {
        for errno in [libc::EHOSTUNREACH, libc::ENETUNREACH] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(is_not_ready_yet(&e) && is_unreachable(&e), "{e}");
        }
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(is_not_ready_yet(&refused) && !is_unreachable(&refused));
        assert!(!is_not_ready_yet(&io::Error::from_raw_os_error(
            libc::EAFNOSUPPORT
        )));
    }

    #[tokio::test]
    async fn an_http_probe_needs_a_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = Address::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        // First a forwarder-like peer that accepts and closes, then a real answer.
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            2
        });
        tokio::time::timeout(
            Duration::from_secs(30),
            wait_until_ready(&address, Some("/healthz")),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            server.await.unwrap(),
            2,
            "the closed connection did not count as ready"
        );
    }

    #[tokio::test]
    async fn waits_for_a_late_listener() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let address = Address::parse(&addr.to_string()).unwrap();
        let waiter = tokio::spawn(async move { wait_until_accepting(&address).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
