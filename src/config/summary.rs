//! The resolved settings in a few readable lines, as `idlegate check` prints
//! them: each socket to its upstream, the backend, readiness, the timeouts.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, Run};
use crate::backend::kinds::process::describe;
use crate::wake::{AnswerRule, UserAgent, When};

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
        self.write_socket_lines(&mut out);
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
                duration(Some(crate::backend::kinds::wake_on_lan::REPEAT), ""),
            );
        }
        let _ = writeln!(out, "ready: {}", self.ready_line());
        if let Some(line) = self.start_limits_line() {
            let _ = writeln!(out, "while starting: {line}");
        }
        for rule in &self.wake.answers {
            let _ = writeln!(out, "answer: {}", answer_line(rule));
        }
        if !self.wake.wake_from.is_empty() {
            let ranges: Vec<String> = self.wake.wake_from.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(out, "wake from: {} only", ranges.join(", "));
        }
        if let Some(cmd) = &self.busy_cmd {
            let _ = writeln!(
                out,
                "busy command: `{cmd}`, asked when the idle timer fires (exit 0: busy, the timer starts over)"
            );
        }
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
        self.write_http_line(&mut out);
        out
    }

    /// `--hold-max` and `--cancel-abandoned-start`, when either is set.
    fn start_limits_line(&self) -> Option<String> {
        let b = &self.backend;
        let held = b.hold_max.map(|n| {
            format!("at most {n} client(s) held, those beyond refused at once (HTTP 503, TCP close, UDP drop)")
        });
        let cancel = b.cancel_abandoned_start.map(|d| {
            format!(
                "a start nobody waited for {} is cancelled",
                duration(Some(d), "")
            )
        });
        let parts: Vec<String> = [held, cancel].into_iter().flatten().collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Each socket to its upstream, one line each: `socket web -> 127.0.0.1:8080 (http)`.
    fn write_socket_lines(&self, out: &mut String) {
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
    }

    /// The HTTP settings, on a line of their own when a socket is in HTTP mode.
    fn write_http_line(&self, out: &mut String) {
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
    }

    /// What `check` warns about though a start would work: a generated
    /// service (a `[systemd]` table without `user`) runs as a dynamic user,
    /// which cannot open a container engine's socket that is not
    /// world-writable. `owner_and_mode` gives a path's owner and mode bits,
    /// `None` when it does not exist.
    pub fn warnings(&self, owner_and_mode: impl Fn(&Path) -> Option<(u32, u32)>) -> Vec<String> {
        if !matches!(&self.systemd, Some(s) if s.user.is_none()) {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        for socket in self.engine_sockets() {
            let Some((owner, mode)) = owner_and_mode(&socket) else {
                continue;
            };
            if mode & 0o002 != 0 {
                continue;
            }
            let owner = match owner {
                0 => "root".to_owned(),
                uid => format!("uid {uid}"),
            };
            warnings.push(format!(
                "the generated service runs as a dynamic user (DynamicUser=yes: [systemd] has no user), which cannot open the container engine's socket {} (owner {owner}, mode {:04o}); set `user = \"root\"` in [systemd] (or a user in the socket's group, such as docker)",
                socket.display(),
                mode & 0o7777
            ));
        }
        warnings
    }

    /// The engine sockets the backend needs: its containers', or the usual
    /// system socket of a `docker` or `podman` command.
    fn engine_sockets(&self) -> Vec<PathBuf> {
        let engine = |command: &str| -> Option<PathBuf> {
            let program = command.split_whitespace().next()?;
            match program.rsplit('/').next()? {
                "docker" => Some(PathBuf::from("/var/run/docker.sock")),
                "podman" => Some(PathBuf::from("/run/podman/podman.sock")),
                _ => None,
            }
        };
        match &self.backend.run {
            Run::Container { engine, .. } | Run::Swarm { engine, .. } => engine
                .iter()
                .filter_map(|e| e.unix_path().map(Path::to_path_buf))
                .collect(),
            Run::Command(argv) => argv.first().and_then(|p| engine(p)).into_iter().collect(),
            Run::Hooks { start, stop } => {
                let mut sockets: Vec<PathBuf> = [start, stop]
                    .into_iter()
                    .flatten()
                    .filter_map(|c| engine(c))
                    .collect();
                sockets.dedup();
                sockets
            }
            Run::External | Run::Unit(_) => Vec::new(),
        }
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
                engine,
                idle_action,
                ..
            } => {
                let action = match idle_action {
                    crate::backend::kinds::container::IdleAction::Stop => "stopped",
                    crate::backend::kinds::container::IdleAction::Pause => "paused",
                };
                let socket = engine
                    .as_ref()
                    .map(|e| format!(" through {e}"))
                    .unwrap_or_default();
                format!(
                    "{} {}{socket}, {action} when idle",
                    plural(names, "the container", "the containers"),
                    in_order(names)
                )
            }
            Run::Swarm {
                service,
                replicas,
                engine,
                ..
            } => {
                let socket = engine
                    .as_ref()
                    .map(|e| format!(" through {e}"))
                    .unwrap_or_default();
                let tasks = if *replicas == 1 { "task" } else { "tasks" };
                format!("the swarm service {service}{socket}, scaled to {replicas} {tasks} on demand and to 0 when idle")
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

/// An answer rule as `check` shows it: `GET /health from 10.0.0.0/8 -> 200 while asleep`.
fn answer_line(rule: &AnswerRule) -> String {
    let mut line = format!(
        "{} {}",
        rule.method.as_deref().unwrap_or("any method"),
        match (&rule.path, &rule.path_prefix) {
            (Some(path), _) => path.clone(),
            (None, Some(prefix)) => format!("{prefix}*"),
            (None, None) => "any path".to_owned(),
        }
    );
    match &rule.user_agent {
        Some(UserAgent::Contains(parts)) => {
            let _ = write!(line, " with a User-Agent containing {}", parts.join(" or "));
        }
        Some(UserAgent::Pattern(re)) => {
            let _ = write!(line, " with a User-Agent matching /{}/", re.as_str());
        }
        None => {}
    }
    if !rule.source.is_empty() {
        let ranges: Vec<String> = rule.source.iter().map(|c| c.to_string()).collect();
        let _ = write!(line, " from {}", ranges.join(", "));
    }
    let _ = write!(line, " -> {}", rule.status);
    if let Some(seconds) = rule.retry_after {
        let _ = write!(line, " (Retry-After {seconds})");
    }
    line.push_str(match rule.when {
        When::Asleep => " while the backend is asleep, else forwarded (never work)",
        When::Always => " always (never forwarded)",
    });
    line
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
