//! Settings: the TOML file and the command line merged, checked, and turned
//! into a [`Config`] before anything starts.
//!
//! Flags override the file; lists given as flags replace the file's lists.
//! Every error names the flag (`--idle-timeout`) or the key and file
//! (`idle-timeout in demo.toml`) and the bad value, on one line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod error;
mod explain;
mod file;
mod resolve;
mod summary;

pub use error::{ConfigError, Origin};
pub use resolve::is_unit_name;

use crate::address::{Address, Names, UpstreamSpec};
use crate::backend::kinds::container::{Container, IdleAction};
use crate::backend::kinds::engine::{Engine, EngineAddress};
use crate::backend::kinds::group::{Group, Member};
use crate::backend::kinds::hooks::Hooks;
use crate::backend::kinds::lease::Leases;
use crate::backend::kinds::swarm::SwarmService;
use crate::backend::{BackendKind, BackendSpec};
use crate::cli::Cli;
use crate::wake::WakeSettings;

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
    /// The user's waiting page (`--waiting-page FILE`), read at start; the
    /// built-in page when `None`.
    pub waiting_page_template: Option<std::sync::Arc<str>>,
    /// The service's name on the waiting page (`--name`); the `Host` asked
    /// for when `None`.
    pub service_name: Option<std::sync::Arc<str>>,
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
/// TCP mode's business), systemd-socket-proxyd's `--connections-max`. At 128,
/// 256 busy keep-alive clients cost the proxy and the backend 2 us more per
/// request (a request waiting for a turn is a wake more), 6% of the
/// throughput (BENCHMARKS.md).
pub const DEFAULT_UPSTREAM_CONNECTIONS_MAX: usize = 256;
/// Default for `--header-read-timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an HTML client waits before `--waiting-page` answers it.
pub const WAITING_PAGE_AFTER: Duration = Duration::from_secs(1);
/// The state file's name in `$RUNTIME_DIRECTORY`.
pub const STATE_FILE_NAME: &str = "idlegate.state";
/// The cap on request header bytes in HTTP mode.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The validated settings idlegate runs with, in the groups a reload treats
/// alike (see [`crate::serve::reload`]): `sockets` and `http` only change when
/// idlegate starts again, `timeouts` at once, `backend` at its next start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The sockets and where their traffic goes.
    pub sockets: Sockets,
    /// The timeouts.
    pub timeouts: Timeouts,
    /// How the backend is run and when it is ready.
    pub backend: BackendConfig,
    /// HTTP mode settings (used by upstreams in `http` mode).
    pub http: HttpSettings,
    /// What idlegate reports, and where.
    pub observability: Observability,
    /// `[systemd]`, when the file has it: what the unit generator needs;
    /// idlegate ignores it when it runs.
    pub systemd: Option<SystemdSettings>,
    /// Which clients may wake the backend.
    pub wake: WakeSettings,
    /// Asked when the idle timer fires, before the backend stops: exit 0 =
    /// busy, the timer starts over (`--busy-cmd`). Only a restart changes it.
    pub busy_cmd: Option<String>,
}

/// The `[systemd]` table, which only the unit generator ([`crate::units`]) reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemdSettings {
    /// Where systemd listens: one list per upstream, in upstream order, of
    /// `ListenStream=` (or, for a UDP upstream, `ListenDatagram=`) values.
    /// Empty: the file's `listen` addresses are used.
    pub listen: Vec<Vec<String>>,
    /// The unit that is the backend (a Quadlet container's service, or any
    /// unit): idlegate's service is bound to it, and it stops when unneeded.
    pub backend_unit: Option<String>,
    /// The user idlegate runs as; `None`: a dynamic user.
    pub user: Option<String>,
    /// Whether the sockets listen from boot on (a `sockets.target.wants` link).
    pub enable: bool,
    /// Extra `Key=value` lines for the service's `[Service]`.
    pub service: Vec<String>,
    /// Extra `Key=value` lines for each socket's `[Socket]`.
    pub socket: Vec<String>,
    /// The windows the service is held awake in (`NAME-awake.timer`).
    pub awake: Vec<crate::wake::schedule::Window>,
}

/// The sockets: where traffic goes, what to bind when not activated, how
/// many connections at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sockets {
    /// Where traffic goes, in the order given.
    pub upstreams: Vec<UpstreamSpec>,
    /// Addresses to bind when not socket-activated.
    pub listen: Vec<Address>,
    /// The most connections served at once.
    pub connections_max: usize,
}

/// The timeouts; the serve loops read them live, so a reload applies them at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long nothing may be in flight before idle exit; `None` = never.
    pub idle: Option<Duration>,
    /// TCP mode: a connection quiet both ways this long is closed; `None` = never.
    pub connection_idle: Option<Duration>,
    /// UDP: a client's flow is live while a datagram moved within this long.
    pub udp_flow: Duration,
    /// How long a client may wait for the backend to become ready.
    pub start: Duration,
    /// Grace for the backend after SIGTERM and for connections to drain.
    pub stop: Duration,
}

/// How the backend is run: at most one way is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    /// Already running, or someone else's to run: only waited for.
    External,
    /// A program idlegate starts as its child (the trailing COMMAND).
    Command(Vec<String>),
    /// Containers started in order and stopped in reverse order through the
    /// engine API (`--container`, repeatable).
    Container {
        /// Their names or ids, in start order (at least one).
        names: Vec<String>,
        /// The engine's API as given (`--engine`, `--engine-socket`); see
        /// [`Config::find_engine_socket`] for the default.
        engine: Option<EngineAddress>,
        /// Plain TCP to another host is allowed (`--engine-insecure`).
        engine_insecure: bool,
        /// What each container gets when idle.
        idle_action: IdleAction,
        /// Where the instances sharing a container count who uses it (see
        /// [`crate::backend::kinds::lease`]); set by [`Config::find_engine_socket`].
        lease_dir: Option<PathBuf>,
    },
    /// A Docker Swarm service scaled from 0 on demand and back to 0 when
    /// idle (`--swarm-service`).
    Swarm {
        /// Its name or id.
        service: String,
        /// How many tasks it runs while up (`--swarm-replicas`).
        replicas: u64,
        /// The manager's engine API as given (`--engine`, `--engine-socket`);
        /// see [`Config::find_engine_socket`] for the default.
        engine: Option<EngineAddress>,
        /// Plain TCP to another host is allowed (`--engine-insecure`).
        engine_insecure: bool,
    },
    /// Systemd units started in order and stopped in reverse order
    /// (`--unit`, repeatable; at least one).
    Unit(Vec<String>),
    /// Shell commands that start and stop the backend (`--start-cmd`, `--stop-cmd`).
    Hooks {
        /// Run on demand.
        start: Option<String>,
        /// Run when idle or stopping.
        stop: Option<String>,
    },
}

/// When the backend counts as ready, beyond its ready addresses accepting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// What to probe, when not every upstream (`--ready`).
    pub address: Option<Address>,
    /// Readiness needs an HTTP answer (any status) to `GET` this path.
    pub http: Option<String>,
    /// Readiness needs this shell command to exit 0 (`--ready-cmd`).
    pub cmd: Option<String>,
    /// Readiness needs the backend's own `READY=1` (`--ready-notify`).
    pub notify: bool,
    /// Where `--ready-notify` makes the backend's notify socket (see
    /// [`Config::find_notify_dir`]).
    pub notify_dir: PathBuf,
}

/// How the backend is run and when it is ready; a reload applies it at the
/// backend's next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// How it is run.
    pub run: Run,
    /// When it is ready.
    pub readiness: Readiness,
    /// Wake its host at each start (`--wake-on-lan`).
    pub wake_on_lan: Option<crate::backend::kinds::wake_on_lan::WakeOnLan>,
    /// Cancel a start nobody has waited for this long (`--cancel-abandoned-start`).
    pub cancel_abandoned_start: Option<Duration>,
    /// Hold at most this many clients while a start is in progress (`--hold-max`).
    pub hold_max: Option<usize>,
}

/// What idlegate reports, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observability {
    /// The log level asked for, if any.
    pub log_level: Option<String>,
    /// Where `idlegate status` finds this instance's state (see [`Config::find_state_file`]).
    pub state_file: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Run {
    /// Whether idlegate starts and stops the backend (rather than only waiting for it).
    pub fn manages_backend(&self) -> bool {
        *self != Run::External
    }

    /// The engine API a container or a Swarm service is driven through.
    pub fn engine(&self) -> Option<&EngineAddress> {
        match self {
            Run::Container { engine, .. } | Run::Swarm { engine, .. } => engine.as_ref(),
            _ => None,
        }
    }

    /// How the supervisor runs it; `wake_on_lan`: its host is woken at
    /// each start, so a remote engine is waited for.
    fn kind(&self, wake_on_lan: bool) -> BackendKind {
        match self {
            Run::External => BackendKind::External,
            Run::Command(argv) => BackendKind::Process(argv.clone()),
            Run::Container {
                names,
                engine,
                idle_action,
                lease_dir,
                ..
            } => {
                // One client for all members: the API version is asked once.
                let engine = Engine::new(
                    engine
                        .clone()
                        .unwrap_or_else(|| EngineAddress::Unix(PathBuf::new())),
                );
                BackendKind::Group(Group {
                    members: names
                        .iter()
                        .map(|name| {
                            Member::Container(Container {
                                engine: engine.clone(),
                                name: name.clone(),
                                idle_action: *idle_action,
                                leases: lease_dir.clone().map(|dir| Leases { dir }),
                                wait_for_engine: wake_on_lan
                                    && !matches!(engine.address(), EngineAddress::Unix(_)),
                            })
                        })
                        .collect(),
                })
            }
            Run::Swarm {
                service,
                replicas,
                engine,
                ..
            } => {
                let engine = engine
                    .clone()
                    .unwrap_or_else(|| EngineAddress::Unix(PathBuf::new()));
                BackendKind::Swarm(SwarmService {
                    wait_for_engine: wake_on_lan && !matches!(engine, EngineAddress::Unix(_)),
                    engine: Engine::new(engine),
                    name: service.clone(),
                    replicas: *replicas,
                })
            }
            Run::Unit(units) => BackendKind::Group(Group {
                members: units.iter().map(|u| Member::Unit(Hooks::unit(u))).collect(),
            }),
            Run::Hooks { start, stop } => {
                BackendKind::Hooks(Hooks::shell(start.as_deref(), stop.as_deref()))
            }
        }
    }
}

impl Config {
    /// How the supervisor runs the backend: the one place a [`BackendSpec`]
    /// is made from the settings.
    pub fn backend_spec(&self) -> BackendSpec {
        let readiness = &self.backend.readiness;
        BackendSpec {
            kind: self.backend.run.kind(self.backend.wake_on_lan.is_some()),
            ready_http: readiness.http.clone(),
            ready_cmd: readiness.cmd.clone(),
            ready_notify: readiness.notify.then(|| readiness.notify_dir.clone()),
            ready: self.ready_addresses(),
            start_timeout: self.timeouts.start,
            stop_timeout: self.timeouts.stop,
            wake_on_lan: self.backend.wake_on_lan.clone(),
            cancel_abandoned_start: self.backend.cancel_abandoned_start,
            hold_max: self.backend.hold_max,
        }
    }

    /// With `--container` or `--swarm-service`, settles the engine: the one
    /// given, else `$CONTAINER_HOST`/`$DOCKER_HOST` or the first socket that
    /// exists of the usual places, with Docker's TLS variables (see
    /// [`crate::backend::kinds::engine::find_engine`]);
    /// and the lease directory: `$XDG_RUNTIME_DIR/idlegate-leases`, else
    /// `/run/idlegate-leases` (outside any service's own `RuntimeDirectory=`,
    /// which systemd may remove while another instance still holds a lease).
    pub fn find_engine_socket(
        mut self,
        env: impl Fn(&str) -> Option<OsString>,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<Config, ConfigError> {
        if let Run::Container {
            names,
            engine,
            engine_insecure,
            lease_dir,
            ..
        } = &mut self.backend.run
        {
            let runtime = env("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_absolute());
            *lease_dir = Some(runtime.map_or_else(
                || PathBuf::from("/run/idlegate-leases"),
                |d| Path::new(&d).join("idlegate-leases"),
            ));
            let found = crate::backend::kinds::engine::find_engine(
                engine.as_ref(),
                *engine_insecure,
                &env,
                &exists,
            )
            .map_err(|e| ConfigError::Usage(format!("--container {}: {e}", names.join(", "))))?;
            *engine = Some(found);
        }
        if let Run::Swarm {
            service,
            engine,
            engine_insecure,
            ..
        } = &mut self.backend.run
        {
            let found = crate::backend::kinds::engine::find_engine(
                engine.as_ref(),
                *engine_insecure,
                &env,
                &exists,
            )
            .map_err(|e| ConfigError::Usage(format!("--swarm-service {service}: {e}")))?;
            *engine = Some(found);
        }
        Ok(self)
    }

    /// The state file: the one given, else `$RUNTIME_DIRECTORY/idlegate.state`
    /// when systemd gives the service a runtime directory (`RuntimeDirectory=`).
    pub fn find_state_file(mut self, env: impl Fn(&str) -> Option<OsString>) -> Config {
        if self.observability.state_file.is_none() {
            self.observability.state_file = Config::default_state_file(env);
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
        self.backend.readiness.notify_dir = first("RUNTIME_DIRECTORY")
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
        if let Some(ready) = &self.backend.readiness.address {
            return vec![ready.clone()];
        }
        let mut addresses: Vec<Address> = Vec::new();
        for upstream in &self.sockets.upstreams {
            if !addresses.contains(&upstream.address) {
                addresses.push(upstream.address.clone());
            }
        }
        addresses
    }
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
        humantime::parse_duration(text).map_err(|_| {
            "expected a duration such as 5min, 30s or 1h30min (a number and a unit: ms, s, min, h, d, w; no space needed; 0 or never for never)".to_owned()
        })?
    };
    Ok(if duration.is_zero() {
        None
    } else {
        Some(duration)
    })
}

impl Config {
    /// Merges the command line with the config file it names, and checks everything.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let (file, text, path) = match &cli.config {
            Some(path) => {
                let (file, text) = file::read_file(path)?;
                (file, text, path.clone())
            }
            None => (file::FileConfig::default(), String::new(), PathBuf::new()),
        };
        Self::merge(cli, file, &path).map_err(|e| e.locate(&text))
    }

    /// Parses a config file on its own (flags empty), as `--config FILE` would.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Self::from_file_with(path, Names::Resolve)
    }

    /// [`Config::from_file`], with host names looked up or kept as `names` says
    /// (the unit generator keeps them: it runs before any name service).
    pub fn from_file_with(path: &Path, names: Names) -> Result<Config, ConfigError> {
        let (file, text) = file::read_file(path)?;
        Self::merge_with(Cli::default(), file, path, names).map_err(|e| e.locate(&text))
    }

    fn merge(cli: Cli, file: file::FileConfig, path: &Path) -> Result<Config, ConfigError> {
        Self::merge_with(cli, file, path, Names::Resolve)
    }

    fn merge_with(
        mut cli: Cli,
        mut file: file::FileConfig,
        path: &Path,
        names: Names,
    ) -> Result<Config, ConfigError> {
        let (cli, file) = (&mut cli, &mut file);
        resolve::untangle_waiting_page(cli);
        resolve::stray_duration(cli)?;
        let sockets = resolve::sockets(cli, file, path, names)?;
        let timeouts = resolve::timeouts(cli, file, path)?;
        let backend = resolve::backend(cli, file, path, &sockets.upstreams, names)?;
        Ok(Config {
            timeouts,
            http: resolve::http(cli, file, path)?,
            observability: resolve::observability(cli, file, path, names)?,
            systemd: resolve::systemd(file, path, &sockets.upstreams, &backend.run)?,
            wake: resolve::wake(cli, file, path, &sockets.upstreams)?,
            busy_cmd: resolve::busy_cmd(cli, file, path)?,
            backend,
            sockets,
        })
    }
}

#[cfg(test)]
mod tests;
