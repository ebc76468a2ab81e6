//! The PROXY protocol header (HAProxy's, versions 1 and 2) that tells a
//! backend who the client is, sent first on each upstream connection; for
//! UDP, a v2 header with the datagram transport before every datagram (as
//! dnsdist and PowerDNS read it).

use std::net::SocketAddr;

use crate::address::ProxyProtocolVersion as Version;

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a client at `source` that connected to `destination`
/// (`None` for a Unix socket client: the header says so, UNKNOWN / LOCAL).
pub fn header(version: Version, addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    // Both of one family; a mixed pair (IPv4-mapped) is sent as IPv6.
    let addresses = addresses.map(|(s, d)| match (s, d) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (s, d),
        _ => (to_v6(s), to_v6(d)),
    });
    match version {
        Version::V1 => match addresses {
            Some((s, d)) => {
                let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
                .into_bytes()
            }
            None => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        Version::V2 => {
            let mut h = V2_SIGNATURE.to_vec();
            match addresses {
                Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
                    h.extend([0x21, 0x11, 0, 12]);
                    h.extend(s.ip().octets());
                    h.extend(d.ip().octets());
                    h.extend(s.port().to_be_bytes());
                    h.extend(d.port().to_be_bytes());
                }
                Some((SocketAddr::V6(s), SocketAddr::V6(d))) => {
                    h.extend([0x21, 0x21, 0, 36]);
                    h.extend(s.ip().octets());
                    h.extend(d.ip().octets());
                    h.extend(s.port().to_be_bytes());
                    h.extend(d.port().to_be_bytes());
                }
                _ => h.extend([0x20, 0x00, 0, 0]), // LOCAL, no address
            }
            h
        }
    }
}

/// The v2 header for a UDP datagram from `source` to `destination`.
pub fn datagram_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut h = header(Version::V2, Some((source, destination)));
    // The family and transport byte: STREAM (0x_1) becomes DGRAM (0x_2).
    h[13] = (h[13] & 0xF0) | 0x02;
    h
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let s: SocketAddr = "192.0.2.1:56324".parse().unwrap();
        let d: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert_eq!(
            header(Version::V1, Some((s, d))),
            b"PROXY TCP4 192.0.2.1 127.0.0.1 56324 443\r\n"
        );
        assert_eq!(header(Version::V1, None), b"PROXY UNKNOWN\r\n");
        let v2 = header(Version::V2, Some((s, d)));
        assert_eq!(&v2[..12], &V2_SIGNATURE);
        assert_eq!(&v2[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&v2[16..20], &[192, 0, 2, 1]);
        assert_eq!(&v2[24..26], &56324u16.to_be_bytes());
        assert_eq!(v2.len(), 28);
        let s6: SocketAddr = "[2001:db8::1]:1000".parse().unwrap();
        let v1 = header(Version::V1, Some((s6, d)));
        assert_eq!(v1, b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 1000 443\r\n");
        assert_eq!(header(Version::V2, None)[12..], [0x20, 0, 0, 0]);
        let udp = datagram_header(s, d);
        assert_eq!(&udp[12..16], &[0x21, 0x12, 0, 12]);
        assert_eq!(&udp[16..], &v2[16..]);
        assert_eq!(datagram_header(s6, d)[13], 0x22);
    }
}
