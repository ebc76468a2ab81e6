//! Wake control: which clients may wake a sleeping backend.
//!
//! - [`AnswerRule`]: HTTP requests idlegate answers itself (`[[answer]]`,
//!   `--answer PATH=STATUS`): a monitor's probe, a crawler. They never start
//!   the backend and never count as work; a rule with `when = "asleep"`
//!   lets them through to a backend that is up, still not counting as work.
//! - [`Cidr`]: TCP mode's `--wake-from`: while the backend is not up, only a
//!   client from these ranges starts it; others are closed at once.
//! - [`control`]: the control socket that holds the service awake, and
//!   [`inhibit`]: `idlegate inhibit`, its client; [`schedule`]: the windows
//!   of `[systemd] awake` that `inhibit --during` holds the service through;
//!   [`refused`]: the clients turned away beyond `--hold-max`.

pub mod control;
pub mod inhibit;
pub mod refused;
pub mod schedule;

use std::fmt;
use std::net::IpAddr;

use crate::net::Peer;

/// An address range, `ADDR/BITS` or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| {
            "expected an address range such as 192.168.1.0/24 or fd00::/8".to_owned()
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.trim().parse::<u8>() {
                Ok(b) if b <= max => b,
                _ => return Err(format!("the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { network, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.bits)
    }
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Whether `peer` is in any of `ranges`. A Unix socket client is local:
/// always in.
pub fn from_any(peer: Peer, ranges: &[Cidr]) -> bool {
    match peer {
        Peer::Tcp(addr) => ranges.iter().any(|r| r.contains(addr.ip())),
        Peer::Unix => true,
    }
}

/// When a rule answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    /// Only while the backend is not ready; while it is, the request is
    /// forwarded (and still does not count as work).
    #[default]
    Asleep,
    /// Always, even when the backend is up.
    Always,
}

impl std::str::FromStr for When {
    type Err = String;

    fn from_str(text: &str) -> Result<When, String> {
        match text {
            "asleep" => Ok(When::Asleep),
            "always" => Ok(When::Always),
            _ => Err("expected asleep or always".into()),
        }
    }
}

/// How a rule matches the `User-Agent` header.
#[derive(Clone, Debug)]
pub enum UserAgent {
    /// Any of these substrings (case-insensitive).
    Contains(Vec<String>),
    /// This regular expression.
    Pattern(regex_lite::Regex),
}

impl PartialEq for UserAgent {
    fn eq(&self, other: &UserAgent) -> bool {
        match (self, other) {
            (UserAgent::Contains(a), UserAgent::Contains(b)) => a == b,
            (UserAgent::Pattern(a), UserAgent::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for UserAgent {}

impl UserAgent {
    fn matches(&self, agent: &str) -> bool {
        match self {
            UserAgent::Contains(parts) => {
                let agent = agent.to_ascii_lowercase();
                parts
                    .iter()
                    .any(|p| agent.contains(&p.to_ascii_lowercase()))
            }
            UserAgent::Pattern(re) => re.is_match(agent),
        }
    }
}

/// A request idlegate answers itself. Every condition given must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerRule {
    /// The path, exactly (without the query).
    pub path: Option<String>,
    /// The path starts with this.
    pub path_prefix: Option<String>,
    /// The method (upper case).
    pub method: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<UserAgent>,
    /// The client's address is in one of these (empty: any).
    pub source: Vec<Cidr>,
    /// The answer's status.
    pub status: u16,
    /// The answer's body.
    pub body: String,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// When it answers.
    pub when: When,
}

/// Default status of an answer: the service is asleep.
pub const DEFAULT_STATUS: u16 = 503;

impl AnswerRule {
    /// `--answer PATH=STATUS`: that exact path answered with that status
    /// while the backend is asleep.
    pub fn for_path(path: &str, status: u16) -> AnswerRule {
        AnswerRule {
            path: Some(path.to_owned()),
            path_prefix: None,
            method: None,
            user_agent: None,
            source: Vec::new(),
            status,
            body: String::new(),
            retry_after: None,
            when: When::Asleep,
        }
    }

    /// Whether the request (`method`, `path` without the query, its
    /// `User-Agent`, from `peer`) matches.
    pub fn matches(&self, method: &str, path: &str, agent: Option<&str>, peer: Peer) -> bool {
        self.path.as_deref().map_or(true, |p| p == path)
            && self
                .path_prefix
                .as_deref()
                .map_or(true, |p| path.starts_with(p))
            && self.method.as_deref().map_or(true, |m| m == method)
            && self
                .user_agent
                .as_ref()
                .map_or(true, |u| agent.is_some_and(|a| u.matches(a)))
            && (self.source.is_empty() || from_any(peer, &self.source))
    }

    /// What it says, for the log: `GET /healthz -> 200`.
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if let Some(m) = &self.method {
            what.push(m.clone());
        }
        match (&self.path, &self.path_prefix) {
            (Some(p), _) => what.push(p.clone()),
            (None, Some(p)) => what.push(format!("{p}*")),
            (None, None) => what.push("*".into()),
        }
        if self.user_agent.is_some() {
            what.push("(user agent)".into());
        }
        if !self.source.is_empty() {
            let s: Vec<String> = self.source.iter().map(|c| c.to_string()).collect();
            what.push(format!("from {}", s.join(" ")));
        }
        format!("{} -> {}", what.join(" "), self.status)
    }
}

/// The first rule of `rules` that matches, by its index.
pub fn first_match(
    rules: &[AnswerRule],
    method: &str,
    path: &str,
    agent: Option<&str>,
    peer: Peer,
) -> Option<usize> {
    rules
        .iter()
        .position(|r| r.matches(method, path, agent, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Peer {
        Peer::Tcp(std::net::SocketAddr::new(ip.parse().unwrap(), 1234))
    }

    #[test]
    fn ranges_hold_their_addresses_ipv4_mapped_included() {
        let lan: Cidr = "192.168.1.0/24".parse().unwrap();
        assert!(lan.contains("192.168.1.20".parse().unwrap()));
        assert!(lan.contains("::ffff:192.168.1.20".parse().unwrap()));
        assert!(!lan.contains("192.168.2.1".parse().unwrap()));
        let one: Cidr = "10.0.0.7".parse().unwrap();
        assert!(
            one.contains("10.0.0.7".parse().unwrap()) && !one.contains("10.0.0.8".parse().unwrap())
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let ula: Cidr = "fd00::/8".parse().unwrap();
        assert!(
            ula.contains("fd12::1".parse().unwrap()) && !ula.contains("fe80::1".parse().unwrap())
        );
        for bad in ["192.168.1.0/33", "nowhere", "10.0.0.0/x", "fd00::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(from_any(Peer::Unix, &[one]));
    }

    #[test]
    fn a_rule_matches_when_every_condition_holds() {
        let mut rule = AnswerRule::for_path("/healthz", 200);
        assert!(rule.matches("GET", "/healthz", None, peer("10.0.0.1")));
        assert!(!rule.matches("GET", "/healthz/deep", None, peer("10.0.0.1")));
        rule.path = None;
        rule.path_prefix = Some("/api/".into());
        rule.method = Some("HEAD".into());
        rule.user_agent = Some(UserAgent::Contains(vec!["Uptime-Kuma".into()]));
        rule.source = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(rule.matches("HEAD", "/api/x", Some("uptime-kuma/1.23"), peer("10.1.2.3")));
        assert!(!rule.matches("GET", "/api/x", Some("Uptime-Kuma/1.23"), peer("10.1.2.3")));
        assert!(!rule.matches("HEAD", "/api/x", None, peer("10.1.2.3")));
        assert!(!rule.matches("HEAD", "/api/x", Some("Uptime-Kuma"), peer("192.168.0.1")));
        rule.user_agent = Some(UserAgent::Pattern(
            regex_lite::Regex::new("(?i)bot|crawler").unwrap(),
        ));
        assert!(rule.matches("HEAD", "/api/x", Some("Googlebot/2.1"), peer("10.1.2.3")));
        assert_eq!(
            rule.describe(),
            "HEAD /api/* (user agent) from 10.0.0.0/8 -> 200"
        );
    }
}

/// Wake control; only a restart changes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WakeSettings {
    /// HTTP mode: requests idlegate answers itself (`[[answer]]`, `--answer`).
    pub answers: Vec<AnswerRule>,
    /// TCP mode: while the backend is not up, only these clients start it (`--wake-from`).
    pub wake_from: Vec<Cidr>,
}

impl WakeSettings {
    /// Whether the backend starts only when a client needs it, rather than
    /// at activation: when some clients must not wake it.
    pub fn lazy(&self) -> bool {
        !self.answers.is_empty() || !self.wake_from.is_empty()
    }
}

/// A run's wake settings and what they did, shared by its proxies.
#[derive(Debug, Default)]
pub struct WakeGate {
    /// The settings: answer rules, `--wake-from`.
    pub settings: WakeSettings,
    answered: std::sync::atomic::AtomicU64,
    turned_away: std::sync::atomic::AtomicU64,
    /// The client that woke the backend in this activation, once known.
    woken_by: std::sync::OnceLock<String>,
    /// Clients refused while the backend started (`--hold-max`).
    pub refused: refused::Refusals,
}

impl WakeGate {
    /// The gate of these settings.
    pub fn new(settings: WakeSettings) -> WakeGate {
        WakeGate {
            settings,
            ..WakeGate::default()
        }
    }

    /// Whether `peer` may start a backend that is not up (TCP mode).
    pub fn may_wake(&self, peer: Peer) -> bool {
        let ranges = &self.settings.wake_from;
        ranges.is_empty() || from_any(peer, ranges)
    }

    /// Notes that `who` (a client, and in HTTP mode its request line) needs
    /// the backend while it is not up: the first of an activation is the one
    /// that woke it, and is logged (`activated by 192.168.1.20: GET /photos`).
    pub fn waking(&self, who: impl FnOnce() -> String) {
        if self.woken_by.get().is_none() {
            let mut first = false;
            let by = self.woken_by.get_or_init(|| {
                first = true;
                who()
            });
            if first {
                tracing::info!(target: "idlegate", "activated by {by}");
            }
        }
    }

    /// The client that woke the backend in this activation, if any did.
    pub fn woken_by(&self) -> Option<&str> {
        self.woken_by.get().map(String::as_str)
    }

    /// Requests answered by a rule so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections turned away by `--wake-from` so far.
    pub fn turned_away(&self) -> u64 {
        self.turned_away.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a request answered by a rule.
    pub fn count_answered(&self) {
        self.answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a client closed because it may not wake the backend.
    pub fn count_turned_away(&self) {
        self.turned_away
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The activation's summary line, if anything was answered or turned away.
    pub fn summary(&self) -> Option<String> {
        let (answered, turned) = (self.answered(), self.turned_away());
        let mut parts = Vec::new();
        if answered > 0 {
            parts.push(format!(
                "answered {answered} request(s) by the [[answer]] rules"
            ));
        }
        if turned > 0 {
            parts.push(format!(
                "closed {turned} connection(s) from outside --wake-from"
            ));
        }
        (!parts.is_empty()).then(|| format!("{}, without waking the backend", parts.join("; ")))
    }
}
