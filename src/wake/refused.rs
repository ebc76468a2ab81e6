//! Clients refused while the backend starts (`--hold-max`): counted by
//! mode for the metrics, and told once per activation in the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How a refused client was served, which says how it was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldMode {
    /// HTTP mode: a 503 with `Retry-After`.
    Http,
    /// TCP mode: closed at once.
    Tcp,
    /// UDP: the datagram dropped.
    Udp,
}

impl HeldMode {
    /// Every mode, in the order the metrics list them.
    pub const ALL: [HeldMode; 3] = [HeldMode::Http, HeldMode::Tcp, HeldMode::Udp];

    /// The mode's name, as the metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            HeldMode::Http => "http",
            HeldMode::Tcp => "tcp",
            HeldMode::Udp => "udp",
        }
    }
}

/// The clients refused in this run while the backend started.
#[derive(Debug, Default)]
pub struct Refusals {
    /// By mode, in [`HeldMode::ALL`]'s order.
    counts: [AtomicU64; 3],
    /// Whether the log has told of a refusal in this run.
    told: AtomicBool,
}

impl Refusals {
    /// Counts a client refused because `max` clients are held already; the
    /// first one of the run is logged (one line, not one per client).
    pub fn refuse(&self, mode: HeldMode, max: usize) {
        self.counts[mode as usize].fetch_add(1, Ordering::Relaxed);
        if !self.told.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "idlegate",
                "{max} client(s) are held for the backend's start (--hold-max): refusing the clients beyond them until it is ready (HTTP 503, TCP close, UDP drop; counted in idlegate_refused_while_starting_total)"
            );
        }
    }

    /// The clients of `mode` refused so far.
    pub fn count(&self, mode: HeldMode) -> u64 {
        self.counts[mode as usize].load(Ordering::Relaxed)
    }
}
