//! The resolution of flags over the file, one function per group of
//! settings: the sockets and their upstreams, the timeouts, the backend, HTTP
//! mode, and what idlegate reports. Each takes its values out of the flags and
//! the file, checks them, and names the flag or key of a bad one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{FileConfig, OneOrMany, RawDuration, RawUpstream, Upstreams};
use super::*;
use crate::address::{Address, UpstreamSpec};
use crate::backend::container::IdleAction;
use crate::cli::Cli;

fn file_origin(key: &'static str, file: &Path) -> Origin {
    Origin::Key {
        key,
        file: file.to_owned(),
    }
}

/// Chooses the flag's value over the file's, remembering where it came from.
fn pick<T>(
    flag: Option<T>,
    flag_name: &'static str,
    file: Option<T>,
    key: &'static str,
    path: &Path,
) -> Option<(T, Origin)> {
    match (flag, file) {
        (Some(v), _) => Some((v, Origin::Flag(flag_name))),
        (None, Some(v)) => Some((v, file_origin(key, path))),
        (None, None) => None,
    }
}

fn duration_setting(
    value: Option<(String, Origin)>,
    default: Duration,
    zero_allowed: bool,
) -> Result<Option<Duration>, ConfigError> {
    let Some((text, origin)) = value else {
        return Ok(Some(default));
    };
    match parse_duration(&text) {
        Ok(None) if !zero_allowed => Err(ConfigError::Invalid {
            origin,
            value: text,
            reason: "must be a finite duration greater than 0".into(),
        }),
        Ok(d) => Ok(d),
        Err(reason) => Err(ConfigError::Invalid {
            origin,
            value: text,
            reason,
        }),
    }
}

/// A count of at least 1 (a semaphore's permits), or `default`.
fn count_setting(value: Option<(String, Origin)>, default: usize) -> Result<usize, ConfigError> {
    let Some((text, origin)) = value else {
        return Ok(default);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 && n <= tokio::sync::Semaphore::MAX_PERMITS => Ok(n),
        _ => Err(ConfigError::Invalid {
            origin,
            value: text,
            reason: "expected a whole number of at least 1".into(),
        }),
    }
}

fn address_setting(text: String, origin: Origin) -> Result<Address, ConfigError> {
    Address::parse(&text).map_err(|e| ConfigError::Invalid {
        origin,
        value: text,
        reason: e.to_string(),
    })
}

/// The sockets: where traffic goes, what to bind when not activated, how
/// many connections at once.
pub(super) struct Sockets {
    pub upstreams: Vec<UpstreamSpec>,
    pub listen: Vec<Address>,
    pub connections_max: usize,
}

pub(super) fn sockets(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Sockets, ConfigError> {
    let upstreams = upstreams(cli, file, path)?;
    let listen_texts: Vec<(String, Origin)> = if !cli.listen.is_empty() {
        std::mem::take(&mut cli.listen)
            .into_iter()
            .map(|l| (l, Origin::Flag("--listen")))
            .collect()
    } else {
        file.listen
            .take()
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(|l| (l, file_origin("listen", path)))
            .collect()
    };
    let listen = listen_texts
        .into_iter()
        .map(|(t, o)| address_setting(t, o))
        .collect::<Result<Vec<_>, _>>()?;

    let connections_max = count_setting(
        pick(
            cli.connections_max.take(),
            "--connections-max",
            file.connections_max.take().map(|n| n.to_string()),
            "connections-max",
            path,
        ),
        DEFAULT_CONNECTIONS_MAX,
    )?;
    Ok(Sockets {
        upstreams,
        listen,
        connections_max,
    })
}

fn proxy_version(
    text: String,
    origin: Origin,
) -> Result<crate::proxy::proxy_protocol::Version, ConfigError> {
    text.parse().map_err(|reason| ConfigError::Invalid {
        origin,
        value: text,
        reason,
    })
}

/// What an upstream gets when it says nothing of its own.
struct UpstreamDefaults {
    mode: Mode,
    proxy_protocol: Option<crate::proxy::proxy_protocol::Version>,
}

impl UpstreamDefaults {
    /// The mode of `address`: UDP is forwarded datagram by datagram whatever
    /// the mode.
    fn mode_for(&self, address: &Address) -> Mode {
        if address.is_udp() {
            Mode::Tcp
        } else {
            self.mode
        }
    }
}

/// An `[[upstream]]` table of the file.
fn upstream_table(
    t: super::file::UpstreamTable,
    defaults: &UpstreamDefaults,
    path: &Path,
) -> Result<UpstreamSpec, ConfigError> {
    let origin = file_origin("upstream", path);
    let address = Address::parse(&t.address).map_err(|e| ConfigError::Invalid {
        origin: origin.clone(),
        value: t.address.clone(),
        reason: e.to_string(),
    })?;
    let mode = match t.mode {
        None => defaults.mode_for(&address),
        Some(m) => match m.parse() {
            Ok(Mode::Http) if address.is_udp() => {
                return Err(ConfigError::Invalid {
                    origin: file_origin("upstream.mode", path),
                    value: m,
                    reason: format!("{address} is UDP, forwarded datagram by datagram: HTTP mode is for stream upstreams"),
                })
            }
            Ok(mode) => mode,
            Err(reason) => {
                return Err(ConfigError::Invalid {
                    origin: file_origin("upstream.mode", path),
                    value: m,
                    reason,
                })
            }
        },
    };
    if let Some(name) = &t.socket {
        if name.is_empty() || name.contains(':') {
            return Err(ConfigError::Invalid {
                origin: file_origin("upstream.socket", path),
                value: name.clone(),
                reason: "a socket name is a FileDescriptorName= value: not empty, no ':'".into(),
            });
        }
    }
    let proxy_protocol = match t.proxy_protocol {
        None => defaults.proxy_protocol,
        Some(v) => Some(proxy_version(
            v,
            file_origin("upstream.proxy-protocol", path),
        )?),
    };
    Ok(UpstreamSpec {
        socket_name: t.socket,
        address,
        mode,
        proxy_protocol,
    })
}

/// The upstreams, from `--upstream` flags, else systemd-socket-proxyd's
/// positional, else the file; with their modes and PROXY protocol versions.
fn upstreams(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Vec<UpstreamSpec>, ConfigError> {
    let default_mode = match pick(cli.mode.take(), "--mode", file.mode.take(), "mode", path) {
        None => Mode::Tcp,
        Some((text, origin)) => text.parse().map_err(|reason| ConfigError::Invalid {
            origin,
            value: text,
            reason,
        })?,
    };
    let default_proxy_protocol = pick(
        cli.proxy_protocol.take(),
        "--proxy-protocol",
        file.proxy_protocol.take(),
        "proxy-protocol",
        path,
    )
    .map(|(text, origin)| proxy_version(text, origin))
    .transpose()?;
    // Upstreams: --upstream flags, else systemd-socket-proxyd's positional, else the file.
    if cli.positional_upstream.is_some() && !cli.upstream.is_empty() {
        return Err(ConfigError::Usage(
            "give the upstream either as --upstream or as the positional UPSTREAM, not both".into(),
        ));
    }
    let defaults = UpstreamDefaults {
        mode: default_mode,
        proxy_protocol: default_proxy_protocol,
    };
    let parse_text = |text: String, origin: Origin| {
        UpstreamSpec::parse(&text)
            .map(|spec| UpstreamSpec {
                mode: defaults.mode_for(&spec.address),
                proxy_protocol: defaults.proxy_protocol,
                ..spec
            })
            .map_err(|e| ConfigError::Invalid {
                origin,
                value: text,
                reason: e.to_string(),
            })
    };
    let mut upstreams = Vec::new();
    if let Some(p) = cli.positional_upstream.take() {
        upstreams.push(parse_text(p, Origin::Flag("UPSTREAM"))?);
    } else if !cli.upstream.is_empty() {
        for u in std::mem::take(&mut cli.upstream) {
            upstreams.push(parse_text(u, Origin::Flag("--upstream"))?);
        }
    } else if let Some(entries) = file.upstream.take() {
        let entries = match entries {
            Upstreams::One(one) => vec![one],
            Upstreams::Many(many) => many,
        };
        for entry in entries {
            let origin = file_origin("upstream", path);
            upstreams.push(match entry {
                RawUpstream::Text(text) => parse_text(text, origin)?,
                RawUpstream::Table(t) => upstream_table(t, &defaults, path)?,
            });
        }
    }
    check_upstreams(&upstreams)?;
    Ok(upstreams)
}

/// What must hold of the upstreams together.
fn check_upstreams(upstreams: &[UpstreamSpec]) -> Result<(), ConfigError> {
    if let Some(u) = upstreams
        .iter()
        .find(|u| u.proxy_protocol.is_some() && u.mode == Mode::Http)
    {
        return Err(ConfigError::Usage(format!(
            "--proxy-protocol/proxy-protocol is for TCP mode; the HTTP mode upstream {} gets X-Forwarded-For instead",
            u.address
        )));
    }
    if let Some(u) = upstreams.iter().find(|u| {
        u.address.is_udp() && u.proxy_protocol == Some(crate::proxy::proxy_protocol::Version::V1)
    }) {
        return Err(ConfigError::Usage(format!(
            "--proxy-protocol/proxy-protocol v1 has no UDP form; the UDP upstream {} needs v2",
            u.address
        )));
    }
    if upstreams.is_empty() {
        return Err(ConfigError::Usage(
            "--upstream: missing: say where traffic goes, e.g. --upstream 127.0.0.1:8080".into(),
        ));
    }
    let named = upstreams.iter().filter(|u| u.socket_name.is_some()).count();
    if named != 0 && named != upstreams.len() {
        return Err(ConfigError::Usage(
            "--upstream: either every upstream is NAME=ADDR or none is (mixing names and positions is ambiguous)".into(),
        ));
    }
    Ok(())
}

/// The timeouts.
pub(super) struct Timeouts {
    pub idle: Option<Duration>,
    pub connection_idle: Option<Duration>,
    pub udp_flow: Duration,
    pub start: Duration,
    pub stop: Duration,
}

pub(super) fn timeouts(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Timeouts, ConfigError> {
    let idle = pick(
        cli.idle_timeout.take(),
        "--idle-timeout",
        file.idle_timeout.take().map(RawDuration::text),
        "idle-timeout",
        path,
    );
    let start = pick(
        cli.start_timeout.take(),
        "--start-timeout",
        file.start_timeout.take().map(RawDuration::text),
        "start-timeout",
        path,
    );
    let stop = pick(
        cli.stop_timeout.take(),
        "--stop-timeout",
        file.stop_timeout.take().map(RawDuration::text),
        "stop-timeout",
        path,
    );
    let idle_timeout = duration_setting(idle, DEFAULT_IDLE_TIMEOUT, true)?;
    let connection_idle_timeout = match pick(
        cli.connection_idle_timeout.take(),
        "--connection-idle-timeout",
        file.connection_idle_timeout.take().map(RawDuration::text),
        "connection-idle-timeout",
        path,
    ) {
        None => None,
        given => duration_setting(given, Duration::ZERO, true)?,
    };
    let udp_flow_timeout = duration_setting(
        pick(
            cli.udp_flow_timeout.take(),
            "--udp-flow-timeout",
            file.udp_flow_timeout.take().map(RawDuration::text),
            "udp-flow-timeout",
            path,
        ),
        DEFAULT_UDP_FLOW_TIMEOUT,
        false,
    )?
    .unwrap_or(DEFAULT_UDP_FLOW_TIMEOUT);
    let start_timeout =
        duration_setting(start, DEFAULT_START_TIMEOUT, false)?.unwrap_or(DEFAULT_START_TIMEOUT);
    // A stop timeout of 0 is valid: SIGKILL at once, no drain.
    let stop_timeout =
        duration_setting(stop, DEFAULT_STOP_TIMEOUT, true)?.unwrap_or(Duration::ZERO);

    Ok(Timeouts {
        idle: idle_timeout,
        connection_idle: connection_idle_timeout,
        udp_flow: udp_flow_timeout,
        start: start_timeout,
        stop: stop_timeout,
    })
}

/// How the backend is run and when it is ready.
pub(super) struct BackendSettings {
    pub ready: Option<Address>,
    pub command: Option<Vec<String>>,
    pub unit: Option<String>,
    pub start_cmd: Option<String>,
    pub stop_cmd: Option<String>,
    pub container: Option<String>,
    pub engine_socket: Option<PathBuf>,
    pub idle_action: IdleAction,
    pub ready_http: Option<String>,
    pub ready_cmd: Option<String>,
    pub ready_notify: bool,
}

pub(super) fn backend(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    upstreams: &[UpstreamSpec],
) -> Result<BackendSettings, ConfigError> {
    let kind = backend_kind(cli, file, path)?;
    let ready = readiness(cli, file, path, upstreams, kind.command.is_some())?;
    Ok(BackendSettings {
        ready: ready.ready,
        command: kind.command,
        unit: kind.unit,
        start_cmd: kind.start_cmd,
        stop_cmd: kind.stop_cmd,
        container: kind.container,
        engine_socket: kind.engine_socket,
        idle_action: kind.idle_action,
        ready_http: ready.ready_http,
        ready_cmd: ready.ready_cmd,
        ready_notify: ready.ready_notify,
    })
}

/// How the backend is run: at most one of a command, a container, a unit,
/// start/stop commands.
struct BackendKindSettings {
    command: Option<Vec<String>>,
    unit: Option<String>,
    start_cmd: Option<String>,
    stop_cmd: Option<String>,
    container: Option<String>,
    engine_socket: Option<PathBuf>,
    idle_action: IdleAction,
}

fn backend_kind(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<BackendKindSettings, ConfigError> {
    let command = if !cli.command.is_empty() {
        Some(std::mem::take(&mut cli.command))
    } else {
        match file.command.take().map(OneOrMany::into_vec) {
            Some(v) if v.is_empty() || v[0].is_empty() => {
                return Err(ConfigError::Invalid {
                    origin: file_origin("command", path),
                    value: format!("{v:?}"),
                    reason: "the program name is empty".into(),
                })
            }
            other => other,
        }
    };

    let unit = pick(cli.unit.take(), "--unit", file.unit.take(), "unit", path);
    let start_cmd = pick(
        cli.start_cmd.take(),
        "--start-cmd",
        file.start_cmd.take(),
        "start-cmd",
        path,
    );
    let stop_cmd = pick(
        cli.stop_cmd.take(),
        "--stop-cmd",
        file.stop_cmd.take(),
        "stop-cmd",
        path,
    );
    let container = pick(
        cli.container.take(),
        "--container",
        file.container.take(),
        "container",
        path,
    );
    for (value, what) in [
        (&container, "a container name"),
        (&unit, "a unit name"),
        (&start_cmd, "a command"),
        (&stop_cmd, "a command"),
    ] {
        if let Some((text, origin)) = value {
            if text.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    origin: origin.clone(),
                    value: text.clone(),
                    reason: format!("expected {what}"),
                });
            }
        }
    }
    let kinds = [
        command.is_some().then_some("a backend COMMAND"),
        container.as_ref().map(|_| "--container"),
        unit.as_ref().map(|_| "--unit"),
        (start_cmd.is_some() || stop_cmd.is_some()).then_some("--start-cmd/--stop-cmd"),
    ];
    let given: Vec<&str> = kinds.into_iter().flatten().collect();
    if given.len() > 1 {
        return Err(ConfigError::Usage(format!(
            "{} and {} both say how to run the backend: give one",
            given[0], given[1]
        )));
    }
    let engine_socket = pick(
        cli.engine_socket.take(),
        "--engine-socket",
        file.engine_socket.take(),
        "engine-socket",
        path,
    );
    let idle_action = match pick(
        cli.idle_action.take(),
        "--idle-action",
        file.idle_action.take(),
        "idle-action",
        path,
    ) {
        None => IdleAction::default(),
        Some((text, origin)) => text.parse().map_err(|reason| ConfigError::Invalid {
            origin: origin.clone(),
            value: text.clone(),
            reason,
        })?,
    };
    if container.is_none() {
        for (given, name) in [
            (engine_socket.is_some(), "--engine-socket"),
            (idle_action != IdleAction::default(), "--idle-action"),
        ] {
            if given {
                return Err(ConfigError::Usage(format!("{name} needs --container NAME")));
            }
        }
    }
    Ok(BackendKindSettings {
        command,
        unit: unit.map(|(u, _)| u),
        start_cmd: start_cmd.map(|(c, _)| c),
        stop_cmd: stop_cmd.map(|(c, _)| c),
        container: container.map(|(c, _)| c),
        engine_socket: engine_socket.map(|(p, _)| p),
        idle_action,
    })
}

/// When the backend counts as ready, beyond its ready addresses accepting.
struct Readiness {
    ready: Option<Address>,
    ready_http: Option<String>,
    ready_cmd: Option<String>,
    ready_notify: bool,
}

fn readiness(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    upstreams: &[UpstreamSpec],
    has_command: bool,
) -> Result<Readiness, ConfigError> {
    let ready = pick(
        cli.ready.take(),
        "--ready",
        file.ready.take(),
        "ready",
        path,
    )
    .map(|(t, o)| address_setting(t, o))
    .transpose()?;

    let ready_http = match pick(
        cli.ready_http.take(),
        "--ready-http",
        file.ready_http.take(),
        "ready-http",
        path,
    ) {
        Some((p, origin)) if !p.starts_with('/') || p.contains(char::is_whitespace) => {
            return Err(ConfigError::Invalid {
                origin,
                value: p,
                reason: "expected a path such as /healthz".into(),
            })
        }
        other => other.map(|(p, _)| p),
    };
    if ready_http.is_some() {
        let probed = ready
            .as_ref()
            .or_else(|| upstreams.first().map(|u| &u.address));
        if let Some(udp) = probed.filter(|a| a.is_udp()) {
            return Err(ConfigError::Usage(format!(
                "--ready-http probes the first ready address, and {udp} is UDP: give --ready HOST:PORT of a TCP port"
            )));
        }
    }

    let ready_cmd = match pick(
        cli.ready_cmd.take(),
        "--ready-cmd",
        file.ready_cmd.take(),
        "ready-cmd",
        path,
    ) {
        Some((text, origin)) if text.trim().is_empty() => {
            return Err(ConfigError::Invalid {
                origin,
                value: text,
                reason: "expected a command".into(),
            })
        }
        other => other.map(|(c, _)| c),
    };
    let ready_notify = cli.ready_notify || file.ready_notify.take().unwrap_or(false);
    if ready_notify && !has_command {
        return Err(ConfigError::Usage(
            "--ready-notify needs a backend COMMAND, which it gives NOTIFY_SOCKET (a --unit's own READY=1 is systemd's to wait for)".into(),
        ));
    }

    Ok(Readiness {
        ready,
        ready_http,
        ready_cmd,
        ready_notify,
    })
}

/// HTTP mode's settings.
pub(super) fn http(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<HttpSettings, ConfigError> {
    let upstream_connections_max = count_setting(
        pick(
            cli.upstream_connections_max.take(),
            "--upstream-connections-max",
            file.upstream_connections_max.take().map(|n| n.to_string()),
            "upstream-connections-max",
            path,
        ),
        DEFAULT_UPSTREAM_CONNECTIONS_MAX,
    )?;

    let header_read_timeout = duration_setting(
        pick(
            cli.header_read_timeout.take(),
            "--header-read-timeout",
            file.header_read_timeout.take().map(RawDuration::text),
            "header-read-timeout",
            path,
        ),
        DEFAULT_HEADER_READ_TIMEOUT,
        false,
    )?
    .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT);
    let waiting_page = cli.waiting_page || file.waiting_page.take().unwrap_or(false);
    let forwarded_headers =
        !cli.no_forwarded_headers && file.forwarded_headers.take().unwrap_or(true);
    let http = HttpSettings {
        waiting_page: waiting_page.then_some(WAITING_PAGE_AFTER),
        forwarded_headers,
        header_read_timeout,
        max_header_bytes: MAX_HEADER_BYTES,
        upstream_connections_max,
    };

    Ok(http)
}

/// What idlegate reports, and how: log level, state file, metrics.
pub(super) struct Observability {
    pub log_level: Option<String>,
    pub state_file: Option<PathBuf>,
    pub metrics: Option<std::net::SocketAddr>,
}

pub(super) fn observability(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Observability, ConfigError> {
    let log_level = match pick(
        cli.log_level.take(),
        "--log-level",
        file.log_level.take(),
        "log-level",
        path,
    ) {
        None => None,
        Some((level, origin)) => {
            let lower = level.to_ascii_lowercase();
            if !["error", "warn", "info", "debug", "trace", "off"].contains(&lower.as_str()) {
                return Err(ConfigError::Invalid {
                    origin,
                    value: level,
                    reason: "expected error, warn, info, debug, trace or off".into(),
                });
            }
            Some(lower)
        }
    };

    let state_file = pick(
        cli.state_file.take(),
        "--state-file",
        file.state_file.take(),
        "state-file",
        path,
    )
    .map(|(p, _)| p);
    let metrics = match pick(
        cli.metrics.take(),
        "--metrics",
        file.metrics.take(),
        "metrics",
        path,
    ) {
        None => None,
        Some((text, origin)) => match address_setting(text.clone(), origin.clone())? {
            Address::Tcp { addrs, .. } => addrs.first().copied(),
            Address::Unix(_) | Address::Udp { .. } => {
                return Err(ConfigError::Invalid {
                    origin,
                    value: text,
                    reason: "expected HOST:PORT".into(),
                })
            }
        },
    };
    Ok(Observability {
        log_level,
        state_file,
        metrics,
    })
}
