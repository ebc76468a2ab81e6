//! The resolved settings in a few readable lines, as `idlegate check` prints
//! them: each socket to its upstream, the backend, readiness, the timeouts.

use std::fmt::Write;
use std::time::Duration;

use super::{Config, Run};
use crate::backend::process::describe;

/// A duration as the flags take it, or `never`/`off`.
fn duration(d: Option<Duration>, none: &str) -> String {
    d.map_or_else(
        || none.to_owned(),
        |d| humantime::format_duration(d).to_string(),
    )
}

impl Config {
    /// The settings in a few lines (no trailing newline).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (i, u) in self.sockets.upstreams.iter().enumerate() {
            let socket = match &u.socket_name {
                Some(name) => format!("socket {name}"),
                None => format!("socket {}", i + 1),
            };
            let mode = if u.address.is_udp() {
                "udp".to_owned()
            } else {
                u.mode.to_string()
            };
            let proxy = u
                .proxy_protocol
                .map(|v| format!(", PROXY protocol {}", format!("{v:?}").to_lowercase()))
                .unwrap_or_default();
            let h2c = if u.protocol == crate::address::UpstreamProtocol::H2c {
                ", h2c upstream"
            } else {
                ""
            };
            let _ = writeln!(out, "{socket} -> {} ({mode}{proxy}{h2c})", u.address);
        }
        if !self.sockets.listen.is_empty() {
            let listen: Vec<String> = self.sockets.listen.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                out,
                "listen (when not socket-activated): {}",
                listen.join(", ")
            );
        }
        let _ = writeln!(out, "backend: {}", self.backend_line());
        if let Some(wake) = &self.backend.wake_on_lan {
            let _ = writeln!(
                out,
                "wake-on-lan: {} through {}, at each start and every {} until ready",
                wake.mac,
                wake.address,
                duration(Some(crate::backend::wake_on_lan::REPEAT), ""),
            );
        }
        let _ = writeln!(out, "ready: {}", self.ready_line());
        let t = &self.timeouts;
        let _ = writeln!(
            out,
            "timeouts: idle {}, start {}, stop {}, connection idle {}, UDP flow {}",
            duration(t.idle, "never"),
            duration(Some(t.start), ""),
            duration(Some(t.stop).filter(|d| !d.is_zero()), "0s"),
            duration(t.connection_idle, "off"),
            duration(Some(t.udp_flow), ""),
        );
        let _ = write!(out, "connections: at most {}", self.sockets.connections_max);
        if self
            .sockets
            .upstreams
            .iter()
            .any(|u| u.mode == super::Mode::Http && !u.address.is_udp())
        {
            let h = &self.http;
            let _ = write!(
                out,
                "\nhttp: header read timeout {}, at most {} connection(s) per upstream, X-Forwarded-* {}, waiting page {}",
                duration(Some(h.header_read_timeout), ""),
                h.upstream_connections_max,
                if h.forwarded_headers { "on" } else { "off" },
                match (h.waiting_page, &h.waiting_page_template) {
                    (None, _) => "off",
                    (Some(_), None) => "on",
                    (Some(_), Some(_)) => "on (own template)",
                },
            );
        }
        out
    }

    fn backend_line(&self) -> String {
        match &self.backend.run {
            Run::External => match self.systemd.as_ref().and_then(|s| s.backend_unit.as_ref()) {
                Some(unit) => format!("the unit {unit}, started by systemd; idlegate waits for it"),
                None => "external: idlegate only waits for it".to_owned(),
            },
            Run::Command(argv) => format!("the command `{}`", describe(argv)),
            Run::Container {
                names,
                engine_socket,
                idle_action,
                ..
            } => {
                let action = match idle_action {
                    crate::backend::container::IdleAction::Stop => "stopped",
                    crate::backend::container::IdleAction::Pause => "paused",
                };
                let socket = engine_socket
                    .as_ref()
                    .map(|p| format!(" through {}", p.display()))
                    .unwrap_or_default();
                format!(
                    "{} {}{socket}, {action} when idle",
                    plural(names, "the container", "the containers"),
                    in_order(names)
                )
            }
            Run::Unit(units) => format!(
                "{} {}, through systemctl start/stop",
                plural(units, "the unit", "the units"),
                in_order(units)
            ),
            Run::Hooks { start, stop } => {
                let said = |c: &Option<String>| {
                    c.as_ref()
                        .map_or_else(|| "none".to_owned(), |c| format!("`{c}`"))
                };
                format!("start command {}, stop command {}", said(start), said(stop))
            }
        }
    }

    fn ready_line(&self) -> String {
        let r = &self.backend.readiness;
        let addresses: Vec<String> = self
            .ready_addresses()
            .iter()
            .map(|a| a.to_string())
            .collect();
        let verb = if addresses.len() == 1 {
            "accepts"
        } else {
            "accept"
        };
        let mut line = format!("when {} {verb} connections", addresses.join(" and "));
        if let Some(path) = &r.http {
            let _ = write!(line, ", then GET {path} is answered");
        }
        if r.notify {
            let _ = write!(line, ", after the backend's READY=1");
        }
        if let Some(cmd) = &r.cmd {
            let _ = write!(line, ", then `{cmd}` exits 0");
        }
        line
    }
}

/// `one` for a single item, else `many`.
fn plural<'a>(items: &[String], one: &'a str, many: &'a str) -> &'a str {
    if items.len() == 1 {
        one
    } else {
        many
    }
}

/// `a`, or `a then b then c` (started in that order).
fn in_order(items: &[String]) -> String {
    items.join(" then ")
}
