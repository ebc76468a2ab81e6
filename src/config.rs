//! Settings: the TOML file and the command line merged, checked, and turned
//! into a [`Config`] before anything starts.
//!
//! Flags override the file; lists given as flags replace the file's lists.
//! Every error names the flag (`--idle-timeout`) or the key and file
//! (`idle-timeout in demo.toml`) and the bad value, on one line.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::address::{Address, UpstreamSpec};
use crate::backend::container::{Container, IdleAction};
use crate::cli::Cli;
use crate::engine::Engine;

/// Default for `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for `--start-timeout`.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for `--stop-timeout`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `--udp-flow-timeout`.
pub const DEFAULT_UDP_FLOW_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `--connections-max`.
pub const DEFAULT_CONNECTIONS_MAX: usize = 4096;

/// How a socket's traffic is forwarded (it lives beside the addresses it
/// qualifies).
pub use crate::address::Mode;

/// Settings of HTTP mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Answer HTML clients that waited this long with a "starting" page; `None` = never.
    pub waiting_page: Option<Duration>,
    /// Add `X-Forwarded-For`, `-Proto` and `-Host`.
    pub forwarded_headers: bool,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// The most bytes of request headers accepted.
    pub max_header_bytes: usize,
    /// The most connections to one upstream at once.
    pub upstream_connections_max: usize,
}

/// Default for `--upstream-connections-max`: below what a stock backend
/// takes at once (nginx's 512 or 768 worker connections, PostgreSQL's 100 is
/// TCP mode's business), far above what two cores keep busy.
pub const DEFAULT_UPSTREAM_CONNECTIONS_MAX: usize = 128;
/// Default for `--header-read-timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an HTML client waits before `--waiting-page` answers it.
pub const WAITING_PAGE_AFTER: Duration = Duration::from_secs(1);
/// The state file's name in `$RUNTIME_DIRECTORY`.
pub const STATE_FILE_NAME: &str = "idlegate.state";
/// The cap on request header bytes in HTTP mode.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The validated settings idlegate runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where traffic goes, in the order given.
    pub upstreams: Vec<UpstreamSpec>,
    /// Addresses to bind when not socket-activated.
    pub listen: Vec<Address>,
    /// How long nothing may be in flight before idle exit; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// TCP mode: a connection quiet both ways this long is closed; `None` = never.
    pub connection_idle_timeout: Option<Duration>,
    /// UDP: a client's flow is live while a datagram moved within this long.
    pub udp_flow_timeout: Duration,
    /// How long a client may wait for the backend to become ready.
    pub start_timeout: Duration,
    /// Grace for the backend after SIGTERM and for connections to drain.
    pub stop_timeout: Duration,
    /// The most connections served at once.
    pub connections_max: usize,
    /// What to probe for readiness, when not the first upstream.
    pub ready: Option<Address>,
    /// The backend program and its arguments, if idlegate starts it.
    pub command: Option<Vec<String>>,
    /// A systemd unit to start and stop as the backend (`--unit`).
    pub unit: Option<String>,
    /// A shell command that starts the backend (`--start-cmd`).
    pub start_cmd: Option<String>,
    /// A shell command that stops the backend (`--stop-cmd`).
    pub stop_cmd: Option<String>,
    /// A container to start and stop by name through the engine API (`--container`).
    pub container: Option<String>,
    /// The engine's API socket as given (`--engine-socket`); see
    /// [`Config::find_engine_socket`] for the default.
    pub engine_socket: Option<PathBuf>,
    /// What the container gets when idle.
    pub idle_action: IdleAction,
    /// Readiness needs an HTTP answer (any status) to `GET` this path.
    pub ready_http: Option<String>,
    /// Readiness needs this shell command to exit 0 (`--ready-cmd`).
    pub ready_cmd: Option<String>,
    /// Readiness needs the backend's own `READY=1` (`--ready-notify`).
    pub ready_notify: bool,
    /// Where `--ready-notify` makes the backend's notify socket (see
    /// [`Config::find_notify_dir`]).
    pub notify_dir: PathBuf,
    /// The log level asked for, if any.
    pub log_level: Option<String>,
    /// Where `idlegate status` finds this instance's state (see [`Config::find_state_file`]).
    pub state_file: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
    /// HTTP mode settings (used by upstreams in `http` mode).
    pub http: HttpSettings,
}

impl Config {
    /// Whether idlegate starts and stops the backend (rather than only waiting for it).
    pub fn manages_backend(&self) -> bool {
        self.command.is_some()
            || self.container.is_some()
            || self.unit.is_some()
            || self.start_cmd.is_some()
            || self.stop_cmd.is_some()
    }

    /// How the backend is run, as the supervisor needs it.
    pub fn backend_kind(&self) -> crate::backend::BackendKind {
        use crate::backend::BackendKind;
        let shell = |c: &String| vec!["/bin/sh".to_owned(), "-c".to_owned(), c.clone()];
        if let Some(argv) = &self.command {
            BackendKind::Process(argv.clone())
        } else if let Some(name) = &self.container {
            BackendKind::Container(Container {
                engine: Engine::new(self.engine_socket.clone().unwrap_or_default()),
                name: name.clone(),
                idle_action: self.idle_action,
            })
        } else if let Some(unit) = &self.unit {
            BackendKind::Hooks {
                start: Some(vec!["systemctl".into(), "start".into(), unit.clone()]),
                stop: Some(vec!["systemctl".into(), "stop".into(), unit.clone()]),
            }
        } else if self.start_cmd.is_some() || self.stop_cmd.is_some() {
            BackendKind::Hooks {
                start: self.start_cmd.as_ref().map(shell),
                stop: self.stop_cmd.as_ref().map(shell),
            }
        } else {
            BackendKind::External
        }
    }

    /// With `--container`, settles the engine socket: the one given, else the
    /// first that exists of the usual places (see [`crate::engine::find_socket`]).
    pub fn find_engine_socket(
        mut self,
        env: impl Fn(&str) -> Option<OsString>,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<Config, ConfigError> {
        if let Some(name) = &self.container {
            let socket = crate::engine::find_socket(self.engine_socket.as_deref(), env, exists)
                .map_err(|e| ConfigError::Usage(format!("--container {name}: {e}")))?;
            self.engine_socket = Some(socket);
        }
        Ok(self)
    }

    /// The state file: the one given, else `$RUNTIME_DIRECTORY/idlegate.state`
    /// when systemd gives the service a runtime directory (`RuntimeDirectory=`).
    pub fn find_state_file(mut self, env: impl Fn(&str) -> Option<OsString>) -> Config {
        if self.state_file.is_none() {
            self.state_file = Config::default_state_file(env);
        }
        self
    }

    /// The directory for `--ready-notify`'s socket: `$RUNTIME_DIRECTORY` (the
    /// first), else `$TMPDIR`, else `/tmp`. A path, not an abstract socket:
    /// conmon (`podman run --sdnotify=container`) passes `READY=1` on only to a path.
    pub fn find_notify_dir(mut self, env: impl Fn(&str) -> Option<OsString>) -> Config {
        let first = |key: &str| {
            env(key)
                .map(|v| {
                    v.to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .filter(|d| d.starts_with('/'))
        };
        self.notify_dir = first("RUNTIME_DIRECTORY")
            .or_else(|| first("TMPDIR"))
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        self
    }

    /// `$RUNTIME_DIRECTORY/idlegate.state` (the first directory), if set.
    pub fn default_state_file(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
        let dirs = env("RUNTIME_DIRECTORY")?;
        // systemd separates several directories with ':'; take the first.
        let first = dirs.to_string_lossy().split(':').next()?.to_owned();
        (!first.is_empty()).then(|| PathBuf::from(first).join(STATE_FILE_NAME))
    }

    /// The addresses that must all accept before the backend counts as
    /// ready: `--ready`, or else every upstream (each address once, in order).
    pub fn ready_addresses(&self) -> Vec<Address> {
        if let Some(ready) = &self.ready {
            return vec![ready.clone()];
        }
        let mut addresses: Vec<Address> = Vec::new();
        for upstream in &self.upstreams {
            if !addresses.contains(&upstream.address) {
                addresses.push(upstream.address.clone());
            }
        }
        addresses
    }
}

/// Where a setting came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--idle-timeout`.
    Flag(&'static str),
    /// A key in the config file.
    Key {
        /// The key, e.g. `idle-timeout`.
        key: &'static str,
        /// The file it is in.
        file: PathBuf,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Key { key, file } => {
                write!(f, "{key} in {}", one_line(&file.display().to_string()))
            }
        }
    }
}

/// A setting that cannot be used; idlegate exits 2 with this as its one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value was given but is not valid.
    #[error("{origin}: invalid value '{}': {}", one_line(value), one_line(reason))]
    Invalid {
        /// Which flag or key.
        origin: Origin,
        /// The value as given.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A required setting is missing, or settings contradict each other.
    #[error("{}", one_line(.0))]
    Usage(String),
    /// The config file could not be read.
    #[error("--config: cannot read '{}': {source}", one_line(&path.display().to_string()))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for idlegate.
    #[error("{}:{line}: {}", one_line(&path.display().to_string()), one_line(message))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// The parser's message, on one line.
        message: String,
    },
}

/// `text` with its control characters (a newline in a quoted TOML value)
/// escaped, so an error stays on one line.
fn one_line(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_owned()
    }
}

/// A duration in the config file: a humantime string, or a number of seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl RawDuration {
    fn text(self) -> String {
        match self {
            RawDuration::Seconds(s) => s.to_string(),
            RawDuration::Text(t) => t,
        }
    }
}

/// One string or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// An upstream in the config file: `"ADDR"`, `"NAME=ADDR"`, or a table.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum RawUpstream {
    Text(String),
    Table(UpstreamTable),
}

/// `[[upstream]]` with `address`, and optionally `socket` and `mode`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTable {
    address: String,
    socket: Option<String>,
    mode: Option<String>,
    #[serde(rename = "proxy-protocol")]
    proxy_protocol: Option<String>,
}

/// One upstream entry or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Upstreams {
    One(RawUpstream),
    Many(Vec<RawUpstream>),
}

/// The config file as written; every key is optional and unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    upstream: Option<Upstreams>,
    mode: Option<String>,
    proxy_protocol: Option<String>,
    waiting_page: Option<bool>,
    forwarded_headers: Option<bool>,
    header_read_timeout: Option<RawDuration>,
    listen: Option<OneOrMany>,
    idle_timeout: Option<RawDuration>,
    connection_idle_timeout: Option<RawDuration>,
    udp_flow_timeout: Option<RawDuration>,
    start_timeout: Option<RawDuration>,
    stop_timeout: Option<RawDuration>,
    connections_max: Option<i64>,
    ready: Option<String>,
    command: Option<OneOrMany>,
    unit: Option<String>,
    start_cmd: Option<String>,
    stop_cmd: Option<String>,
    ready_http: Option<String>,
    ready_cmd: Option<String>,
    ready_notify: Option<bool>,
    upstream_connections_max: Option<i64>,
    container: Option<String>,
    engine_socket: Option<PathBuf>,
    idle_action: Option<String>,
    log_level: Option<String>,
    state_file: Option<PathBuf>,
    metrics: Option<String>,
}

/// Parses a duration as systemd and humantime users write it: `30s`, `5min`,
/// `1h 30min`, a bare number of seconds; `0`, `infinity` and `never` mean "never".
pub fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    match text {
        "" => return Err("empty duration".into()),
        "infinity" | "never" => return Ok(None),
        _ => {}
    }
    let duration = if text.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(text.parse::<u64>().map_err(|e| e.to_string())?)
    } else {
        humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 30s, 5min, 1h)"))?
    };
    Ok(if duration.is_zero() {
        None
    } else {
        Some(duration)
    })
}

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

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text, path)
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            message,
        }
    })
}

impl Config {
    /// Merges the command line with the config file it names, and checks everything.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let (file, path) = match &cli.config {
            Some(path) => (read_file(path)?, path.clone()),
            None => (FileConfig::default(), PathBuf::new()),
        };
        Self::merge(cli, file, &path)
    }

    /// Parses a config file on its own (flags empty), as `--config FILE` would.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Self::merge(Cli::default(), read_file(path)?, path)
    }

    fn merge(cli: Cli, file: FileConfig, path: &Path) -> Result<Config, ConfigError> {
        let default_mode = match pick(cli.mode, "--mode", file.mode, "mode", path) {
            None => Mode::Tcp,
            Some((text, origin)) => text.parse().map_err(|reason| ConfigError::Invalid {
                origin,
                value: text,
                reason,
            })?,
        };
        let proxy_version = |text: String, origin: Origin| {
            text.parse::<crate::proxy::proxy_protocol::Version>()
                .map_err(|reason| ConfigError::Invalid {
                    origin,
                    value: text,
                    reason,
                })
        };
        let default_proxy_protocol = pick(
            cli.proxy_protocol,
            "--proxy-protocol",
            file.proxy_protocol,
            "proxy-protocol",
            path,
        )
        .map(|(text, origin)| proxy_version(text, origin))
        .transpose()?;
        // Upstreams: --upstream flags, else systemd-socket-proxyd's positional, else the file.
        if cli.positional_upstream.is_some() && !cli.upstream.is_empty() {
            return Err(ConfigError::Usage(
                "give the upstream either as --upstream or as the positional UPSTREAM, not both"
                    .into(),
            ));
        }
        // UDP is forwarded datagram by datagram whatever the mode.
        let mode_for = |address: &Address| {
            if address.is_udp() {
                Mode::Tcp
            } else {
                default_mode
            }
        };
        let parse_text = |text: String, origin: Origin| {
            UpstreamSpec::parse(&text)
                .map(|spec| UpstreamSpec {
                    mode: mode_for(&spec.address),
                    proxy_protocol: default_proxy_protocol,
                    ..spec
                })
                .map_err(|e| ConfigError::Invalid {
                    origin,
                    value: text,
                    reason: e.to_string(),
                })
        };
        let mut upstreams = Vec::new();
        if let Some(p) = cli.positional_upstream {
            upstreams.push(parse_text(p, Origin::Flag("UPSTREAM"))?);
        } else if !cli.upstream.is_empty() {
            for u in cli.upstream {
                upstreams.push(parse_text(u, Origin::Flag("--upstream"))?);
            }
        } else if let Some(entries) = file.upstream {
            let entries = match entries {
                Upstreams::One(one) => vec![one],
                Upstreams::Many(many) => many,
            };
            for entry in entries {
                let origin = file_origin("upstream", path);
                upstreams.push(match entry {
                    RawUpstream::Text(text) => parse_text(text, origin)?,
                    RawUpstream::Table(t) => {
                        let address = Address::parse(&t.address)
                            .map_err(|e| ConfigError::Invalid { origin: origin.clone(), value: t.address.clone(), reason: e.to_string() })?;
                        let mode = match t.mode {
                            None => mode_for(&address),
                            Some(m) => match m.parse() {
                                Ok(Mode::Http) if address.is_udp() => return Err(ConfigError::Invalid {
                                    origin: file_origin("upstream.mode", path),
                                    value: m,
                                    reason: format!("{address} is UDP, forwarded datagram by datagram: HTTP mode is for stream upstreams"),
                                }),
                                Ok(mode) => mode,
                                Err(reason) => return Err(ConfigError::Invalid {
                                    origin: file_origin("upstream.mode", path),
                                    value: m,
                                    reason,
                                }),
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
                            None => default_proxy_protocol,
                            Some(v) => Some(proxy_version(v, file_origin("upstream.proxy-protocol", path))?),
                        };
                        UpstreamSpec { socket_name: t.socket, address, mode, proxy_protocol }
                    }
                });
            }
        }
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
            u.address.is_udp()
                && u.proxy_protocol == Some(crate::proxy::proxy_protocol::Version::V1)
        }) {
            return Err(ConfigError::Usage(format!(
                "--proxy-protocol/proxy-protocol v1 has no UDP form; the UDP upstream {} needs v2",
                u.address
            )));
        }
        if upstreams.is_empty() {
            return Err(ConfigError::Usage(
                "--upstream: missing: say where traffic goes, e.g. --upstream 127.0.0.1:8080"
                    .into(),
            ));
        }
        let named = upstreams.iter().filter(|u| u.socket_name.is_some()).count();
        if named != 0 && named != upstreams.len() {
            return Err(ConfigError::Usage(
                "--upstream: either every upstream is NAME=ADDR or none is (mixing names and positions is ambiguous)".into(),
            ));
        }

        let listen_texts: Vec<(String, Origin)> = if !cli.listen.is_empty() {
            cli.listen
                .into_iter()
                .map(|l| (l, Origin::Flag("--listen")))
                .collect()
        } else {
            file.listen
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

        let idle = pick(
            cli.idle_timeout,
            "--idle-timeout",
            file.idle_timeout.map(RawDuration::text),
            "idle-timeout",
            path,
        );
        let start = pick(
            cli.start_timeout,
            "--start-timeout",
            file.start_timeout.map(RawDuration::text),
            "start-timeout",
            path,
        );
        let stop = pick(
            cli.stop_timeout,
            "--stop-timeout",
            file.stop_timeout.map(RawDuration::text),
            "stop-timeout",
            path,
        );
        let idle_timeout = duration_setting(idle, DEFAULT_IDLE_TIMEOUT, true)?;
        let connection_idle_timeout = match pick(
            cli.connection_idle_timeout,
            "--connection-idle-timeout",
            file.connection_idle_timeout.map(RawDuration::text),
            "connection-idle-timeout",
            path,
        ) {
            None => None,
            given => duration_setting(given, Duration::ZERO, true)?,
        };
        let udp_flow_timeout = duration_setting(
            pick(
                cli.udp_flow_timeout,
                "--udp-flow-timeout",
                file.udp_flow_timeout.map(RawDuration::text),
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

        let connections_max = count_setting(
            pick(
                cli.connections_max,
                "--connections-max",
                file.connections_max.map(|n| n.to_string()),
                "connections-max",
                path,
            ),
            DEFAULT_CONNECTIONS_MAX,
        )?;
        let upstream_connections_max = count_setting(
            pick(
                cli.upstream_connections_max,
                "--upstream-connections-max",
                file.upstream_connections_max.map(|n| n.to_string()),
                "upstream-connections-max",
                path,
            ),
            DEFAULT_UPSTREAM_CONNECTIONS_MAX,
        )?;

        let ready = pick(cli.ready, "--ready", file.ready, "ready", path)
            .map(|(t, o)| address_setting(t, o))
            .transpose()?;

        let command = if !cli.command.is_empty() {
            Some(cli.command)
        } else {
            match file.command.map(OneOrMany::into_vec) {
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

        let log_level = match pick(
            cli.log_level,
            "--log-level",
            file.log_level,
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

        let header_read_timeout = duration_setting(
            pick(
                cli.header_read_timeout,
                "--header-read-timeout",
                file.header_read_timeout.map(RawDuration::text),
                "header-read-timeout",
                path,
            ),
            DEFAULT_HEADER_READ_TIMEOUT,
            false,
        )?
        .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT);
        let waiting_page = cli.waiting_page || file.waiting_page.unwrap_or(false);
        let forwarded_headers = !cli.no_forwarded_headers && file.forwarded_headers.unwrap_or(true);
        let http = HttpSettings {
            waiting_page: waiting_page.then_some(WAITING_PAGE_AFTER),
            forwarded_headers,
            header_read_timeout,
            max_header_bytes: MAX_HEADER_BYTES,
            upstream_connections_max,
        };

        let unit = pick(cli.unit, "--unit", file.unit, "unit", path);
        let start_cmd = pick(
            cli.start_cmd,
            "--start-cmd",
            file.start_cmd,
            "start-cmd",
            path,
        );
        let stop_cmd = pick(cli.stop_cmd, "--stop-cmd", file.stop_cmd, "stop-cmd", path);
        let container = pick(
            cli.container,
            "--container",
            file.container,
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
            cli.engine_socket,
            "--engine-socket",
            file.engine_socket,
            "engine-socket",
            path,
        );
        let idle_action = match pick(
            cli.idle_action,
            "--idle-action",
            file.idle_action,
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
        let ready_http = match pick(
            cli.ready_http,
            "--ready-http",
            file.ready_http,
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
            cli.ready_cmd,
            "--ready-cmd",
            file.ready_cmd,
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
        let ready_notify = cli.ready_notify || file.ready_notify.unwrap_or(false);
        if ready_notify && command.is_none() {
            return Err(ConfigError::Usage(
                "--ready-notify needs a backend COMMAND, which it gives NOTIFY_SOCKET (a --unit's own READY=1 is systemd's to wait for)".into(),
            ));
        }

        let state_file = pick(
            cli.state_file,
            "--state-file",
            file.state_file,
            "state-file",
            path,
        )
        .map(|(p, _)| p);
        let metrics = match pick(cli.metrics, "--metrics", file.metrics, "metrics", path) {
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
        Ok(Config {
            metrics,
            state_file,
            container: container.map(|(c, _)| c),
            engine_socket: engine_socket.map(|(p, _)| p),
            idle_action,
            unit: unit.map(|(u, _)| u),
            start_cmd: start_cmd.map(|(c, _)| c),
            stop_cmd: stop_cmd.map(|(c, _)| c),
            ready_http,
            ready_cmd,
            ready_notify,
            notify_dir: PathBuf::from("/tmp"),
            http,
            upstreams,
            listen,
            idle_timeout,
            connection_idle_timeout,
            udp_flow_timeout,
            start_timeout,
            stop_timeout,
            connections_max,
            ready,
            command,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Fuzz-style: the reference and demo configs, mutated thousands of
    /// times, each read and validated in full: errors are fine, panics not.
    #[test]
    fn mutated_config_files_never_panic() {
        let seeds = [
            include_str!("../config/reference.toml"),
            include_str!("../config/demo.toml"),
            "[[upstream]]\naddress = \"127.0.0.1:1\"\nsocket = \"http\"\nmode = \"http\"\n",
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.toml");
        let mut noise = crate::fuzz_support::Noise::new(0xC0F1);
        for i in 0..3_000 {
            let text = noise.mutate(seeds[i % seeds.len()]);
            std::fs::write(&path, &text).unwrap();
            let cli = Cli {
                config: Some(path.clone()),
                ..Cli::default()
            };
            if let Err(e) = Config::from_cli(cli) {
                assert!(!e.to_string().contains('\n'), "one line: {e}");
            }
        }
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("idlegate").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30s").unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("5min").unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("300ms").unwrap(),
            Some(Duration::from_millis(300))
        );
        assert_eq!(parse_duration("7").unwrap(), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("0").unwrap(), None);
        assert_eq!(parse_duration("infinity").unwrap(), None);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    /// Found by `fuzz/run.sh`: a quoted value with an escaped newline was
    /// echoed as it is, and the error took two lines.
    #[test]
    fn an_error_naming_a_value_with_a_newline_stays_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nl.toml");
        std::fs::write(&path, "upstream = \"127..00ar\\\\\\n conpppppp\"\n").unwrap();
        let e = Config::from_file(&path).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("\\n conpppppp"), "{e}");
    }

    #[test]
    fn defaults_and_flags() {
        let c = Config::from_cli(cli(&["--upstream", "127.0.0.1:1"])).unwrap();
        assert_eq!(c.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
        assert_eq!(c.start_timeout, DEFAULT_START_TIMEOUT);
        assert_eq!(c.stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert_eq!(c.connections_max, DEFAULT_CONNECTIONS_MAX);
        assert!(c.command.is_none());

        let c = Config::from_cli(cli(&[
            "--exit-idle-time=3s",
            "-c",
            "7",
            "127.0.0.1:9",
            "--",
            "app",
            "--port",
            "9",
        ]))
        .unwrap();
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.connections_max, 7);
        assert_eq!(c.upstreams[0].address.to_string(), "127.0.0.1:9");
        assert_eq!(c.command.unwrap(), ["app", "--port", "9"]);
    }

    #[test]
    fn a_flag_given_twice_takes_the_last_value_and_lists_append() {
        let c = Config::from_cli(cli(&[
            "--upstream",
            "127.0.0.1:1",
            "--upstream",
            "127.0.0.1:2",
            "--idle-timeout",
            "1s",
            "--idle-timeout",
            "2s",
        ]))
        .unwrap();
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.upstreams.len(), 2);
    }

    #[test]
    fn errors_name_the_flag_and_value() {
        let e = Config::from_cli(cli(&[
            "--upstream",
            "127.0.0.1:1",
            "--idle-timeout",
            "soon",
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--idle-timeout: invalid value 'soon'"), "{e}");
        let e = Config::from_cli(cli(&["--upstream", "nowhere"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--upstream: invalid value 'nowhere'"), "{e}");
        let e = Config::from_cli(cli(&["--upstream", "127.0.0.1:1", "-c", "0"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--connections-max: invalid value '0'"), "{e}");
        let e = Config::from_cli(cli(&["--upstream", "127.0.0.1:1", "--start-timeout", "0"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--start-timeout"), "{e}");
        let e = Config::from_cli(cli(&[])).unwrap_err().to_string();
        assert!(e.starts_with("--upstream: missing"), "{e}");
    }

    #[test]
    fn file_keys_and_unknown_keys() {
        let path = Path::new("x.toml");
        let file = parse_file(
            "upstream = \"127.0.0.1:5\"\nidle-timeout = 0\ncommand = [\"sleep\", \"9\"]\n",
            path,
        )
        .unwrap();
        let c = Config::merge(cli(&["--idle-timeout", "2s"]), file, path).unwrap();
        assert_eq!(
            c.idle_timeout,
            Some(Duration::from_secs(2)),
            "the flag wins over the file"
        );
        assert_eq!(c.command.unwrap(), ["sleep", "9"]);

        let e = parse_file("upstream = \"127.0.0.1:5\"\n\nbogus = 1\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml:3: unknown field `bogus`"), "{e}");
        assert!(!e.contains('\n'));

        let file = parse_file(
            "upstream = \"127.0.0.1:5\"\nstop-timeout = \"fast\"\n",
            path,
        )
        .unwrap();
        let e = Config::merge(Cli::default(), file, path)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("stop-timeout in x.toml: invalid value 'fast'"),
            "{e}"
        );
    }
}
