//! What idlegate tells the world about a run, without waking anything:
//! `STATUS=` and the other sd_notify messages ([`notify`]), the state file
//! that `idlegate status` reads ([`status`]), kept current by [`reporter`],
//! the Prometheus endpoint ([`metrics`]), the list of work on the
//! connections socket ([`connections`]) and the last starts' totals
//! ([`start_history`]).

pub mod connections;
pub mod metrics;
pub mod notify;
pub mod reporter;
pub mod start_history;
pub mod status;
