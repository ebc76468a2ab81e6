//! Wake-on-LAN (`--wake-on-lan MAC`): a backend on a host that sleeps.
//!
//! At each start idlegate sends the host's magic packet, and again every
//! [`REPEAT`] while the start waits for the upstream: a datagram may be lost,
//! and a host in deep sleep may miss the first one. The repeats belong to the
//! start ([`WakeOnLan::during`]) and end with it, ready or failed. A packet
//! that cannot be sent is logged and does not fail the start: the host may
//! be awake already, or woken by someone else.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::time::Duration;

use crate::backend::kinds::engine::{Engine, EngineError};
use crate::backend::progress::{waiting_for, Progress, Stage};
use crate::backoff::Backoff;

/// How often the magic packet is sent again while a start waits.
pub const REPEAT: Duration = Duration::from_secs(3);

/// Default for `--wake-on-lan-address`: the local network's broadcast, on
/// the discard port that Wake-on-LAN tools use.
pub const DEFAULT_ADDRESS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, 9));

/// The length of a magic packet: six `0xFF`, then the MAC sixteen times.
pub const PACKET_LEN: usize = 6 + 16 * 6;

/// A hardware (MAC) address, written `aa:bb:cc:dd:ee:ff` or
/// `aa-bb-cc-dd-ee-ff`, in either case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress([u8; 6]);

impl FromStr for MacAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<MacAddress, String> {
        let expected = || "expected a MAC address such as aa:bb:cc:dd:ee:ff".to_owned();
        let separator = if text.contains(':') { ':' } else { '-' };
        let mut bytes = [0u8; 6];
        let mut parts = text.trim().split(separator);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(expected)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(expected());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| expected())?;
        }
        if parts.next().is_some() {
            return Err(expected());
        }
        Ok(MacAddress(bytes))
    }
}

/// `AA:BB:CC:DD:EE:FF`.
impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

impl MacAddress {
    /// The magic packet that wakes this host: six `0xFF`, then the address
    /// sixteen times.
    pub fn magic_packet(&self) -> [u8; PACKET_LEN] {
        let mut packet = [0xFF; PACKET_LEN];
        for copy in packet[6..].chunks_exact_mut(6) {
            copy.copy_from_slice(&self.0);
        }
        packet
    }
}

/// Whom to wake, and where to send the packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WakeOnLan {
    /// The sleeping host's network card (`--wake-on-lan`).
    pub mac: MacAddress,
    /// Where the packet goes, usually a broadcast address (`--wake-on-lan-address`).
    pub address: SocketAddr,
}

impl WakeOnLan {
    /// Runs `start` to its end, sending the magic packet at once and every
    /// [`REPEAT`] meanwhile.
    pub async fn during<T>(&self, start: impl Future<Output = T>) -> T {
        tokio::select! {
            biased;
            done = start => done,
            never = self.keep_waking() => match never {},
        }
    }

    /// Sends the packet now and every [`REPEAT`], forever; a failure is
    /// logged once as a warning, then at debug level.
    async fn keep_waking(&self) -> Infallible {
        let (mac, address) = (self.mac, self.address);
        let mut ticks = tokio::time::interval(REPEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        let mut warned = false;
        loop {
            ticks.tick().await;
            if first {
                tracing::info!(target: "idlegate::backend", "waking {mac}: magic packet to {address}");
            } else {
                tracing::debug!(target: "idlegate::backend", "waking {mac}: magic packet again to {address}");
            }
            first = false;
            if let Err(e) = self.send().await {
                if warned {
                    tracing::debug!(target: "idlegate::backend", "waking {mac}: cannot send the magic packet to {address}: {e}");
                } else {
                    tracing::warn!(target: "idlegate::backend", "waking {mac}: cannot send the magic packet to {address}: {e}");
                    warned = true;
                }
            }
        }
    }

    /// Sends the magic packet once, from a socket allowed to broadcast.
    async fn send(&self) -> io::Result<()> {
        let socket = tokio::net::UdpSocket::bind(crate::net::any_port_like(self.address)).await?;
        socket.set_broadcast(true)?;
        socket
            .send_to(&self.mac.magic_packet(), self.address)
            .await?;
        Ok(())
    }
}

/// Returns once `engine` answers, retrying with backoff while it is
/// unreachable (its host waking, Wake-on-LAN's packets going out); another
/// error ends the wait. `subject` names what it runs (`container web`,
/// `swarm service web`), `stage` what the waiting page shows meanwhile.
pub async fn engine_answers(
    engine: &Engine,
    subject: &str,
    progress: &Progress,
    stage: Stage,
) -> Result<(), EngineError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut told = false;
    loop {
        match engine.ping().await {
            Ok(()) => {
                if told {
                    tracing::info!(target: "idlegate::backend::engine", "the engine of {subject} answers");
                }
                return Ok(());
            }
            Err(e) if e.is_unreachable() => {
                if !told {
                    tracing::info!(target: "idlegate::backend::engine",
                        "waiting for the engine of {subject}, its host waking: {e}");
                    let what = format!("the engine of {subject} is not reachable yet");
                    waiting_for(progress, stage, what);
                    told = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0xfe];

    #[test]
    fn mac_addresses_are_read_with_colons_or_dashes_in_either_case() {
        for text in [
            "00:1a:2b:3c:4d:fe",
            "00:1A:2B:3C:4D:FE",
            "00-1a-2b-3c-4d-FE",
            " 00:1a:2b:3c:4d:fe ",
        ] {
            assert_eq!(text.parse(), Ok(MacAddress(MAC)), "{text}");
        }
        assert_eq!(MacAddress(MAC).to_string(), "00:1A:2B:3C:4D:FE");
    }

    #[test]
    fn malformed_mac_addresses_are_refused() {
        for text in [
            "",
            "aa:bb:cc",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:fg",
            "aa:bb-cc:dd:ee:ff",
            "aabbccddeeff",
            "a:bb:cc:dd:ee:ff0",
            "+a:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:",
        ] {
            assert!(text.parse::<MacAddress>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn the_magic_packet_is_six_ff_then_the_mac_sixteen_times() {
        let packet = MacAddress(MAC).magic_packet();
        assert_eq!(packet.len(), 102);
        assert_eq!(packet[..6], [0xFF; 6]);
        for copy in packet[6..].chunks(6) {
            assert_eq!(copy, MAC);
        }
    }

    /// A broadcast needs `SO_BROADCAST`, without which the kernel refuses
    /// the send (EACCES); loopback's own broadcast address shows it without
    /// sending anything onto a network.
    #[tokio::test]
    async fn the_packet_may_be_broadcast() {
        let listener = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let wake = WakeOnLan {
            mac: MacAddress(MAC),
            address: SocketAddr::from(([127, 255, 255, 255], port)),
        };
        wake.send().await.expect("a broadcast is allowed");
        let mut buf = [0u8; 200];
        let n = listener.recv(&mut buf).await.unwrap();
        assert_eq!(buf[..n], MacAddress(MAC).magic_packet());
    }

    /// A packet that cannot be sent (port 0 is refused) fails nothing:
    /// the start's own result comes back.
    #[tokio::test(start_paused = true)]
    async fn a_failed_send_does_not_fail_the_start() {
        let wake = WakeOnLan {
            mac: MacAddress(MAC),
            address: "127.0.0.1:0".parse().unwrap(),
        };
        assert!(wake.send().await.is_err());
        let start = async {
            tokio::time::sleep(REPEAT * 3).await;
            "ready"
        };
        assert_eq!(wake.during(start).await, "ready");
    }

    /// The packet goes out at once and every [`REPEAT`] while the start
    /// waits, and stops with it.
    #[tokio::test(start_paused = true)]
    async fn the_packet_is_repeated_while_the_start_waits_and_stops_with_it() {
        let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let wake = WakeOnLan {
            mac: MacAddress(MAC),
            address: listener.local_addr().unwrap(),
        };
        let start = tokio::time::Instant::now();
        let waited = wake
            .during(tokio::time::sleep(REPEAT * 2 + REPEAT / 2))
            .await;
        assert_eq!(waited, ());
        let mut received = Vec::new();
        let mut buf = [0u8; 200];
        while let Ok(n) = listener.try_recv(&mut buf) {
            received.push(buf[..n].to_vec());
        }
        assert_eq!(received.len(), 3, "at 0, 3 s and 6 s");
        for packet in received {
            assert_eq!(packet, MacAddress(MAC).magic_packet());
        }
        assert_eq!(start.elapsed(), REPEAT * 2 + REPEAT / 2);
    }
}
