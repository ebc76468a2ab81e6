//! idlegate's integration tests: the real binary, started by a real activator
//! that holds the sockets as systemd does, in front of real backend processes.

#[path = "../support/mod.rs"]
mod support;

mod activation;
mod backend_lifecycle;
mod connections;
mod containers;
mod docs;
mod forwarding;
mod groups;
mod guides;
mod http;
mod idle_exit;
mod inhibit;
mod kinds;
mod limits;
mod notify;
mod port_forwarder;
mod readiness;
mod real_servers;
mod reload;
mod remote_engines;
mod shutdown;
mod soak;
mod start_phases;
mod starts;
mod status;
mod swarm;
mod udp;
mod units;
mod upstream_http1;
mod usage;
mod wake;
mod wake_on_lan;
