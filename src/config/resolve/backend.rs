//! How the backend is run (a COMMAND, `--container`, `--swarm-service`, `--unit`, hooks) and
//! when it is ready (`--ready`, `--ready-http`, `--ready-cmd`, `--ready-notify`).

use std::path::{Path, PathBuf};

use super::super::file::{FileConfig, OneOrMany, RawDuration};
use super::{address_setting, count_setting, file_origin, list_setting, text_setting};
use crate::address::{Names, UpstreamSpec};
use crate::backend::kinds::container::IdleAction;
use crate::backend::kinds::engine::EngineAddress;
use crate::cli::Cli;
use crate::config::{BackendConfig, ConfigError, Readiness, Run};
use std::mem::take;

/// How the backend is run and when it is ready.
pub(in crate::config) fn backend(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    upstreams: &[UpstreamSpec],
    names: Names,
) -> Result<BackendConfig, ConfigError> {
    let run = run(cli, file, path)?;
    let readiness = readiness(cli, file, path, upstreams, names)?;
    if readiness.notify && !matches!(run, Run::Command(_)) {
        return Err(ConfigError::Usage(
            "--ready-notify needs a backend COMMAND, which it gives NOTIFY_SOCKET (a --unit's own READY=1 is systemd's to wait for)".into(),
        ));
    }
    let wake_on_lan = super::wake_on_lan::wake_on_lan(cli, file, path)?;
    let (cancel_abandoned_start, hold_max) = start_limits(cli, file, path)?;
    Ok(BackendConfig {
        run,
        readiness,
        wake_on_lan,
        cancel_abandoned_start,
        hold_max,
    })
}

/// `--cancel-abandoned-start` (off by default, `0` too) and `--hold-max`
/// (no limit by default).
fn start_limits(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<(Option<std::time::Duration>, Option<usize>), ConfigError> {
    let cancel = given!(
        cli,
        file,
        path,
        cancel_abandoned_start,
        "cancel-abandoned-start",
        RawDuration::text
    );
    let cancel = super::optional_duration(cancel, None)?;
    let hold_max = given!(cli, file, path, hold_max, "hold-max", |n| n.to_string());
    let hold_max = match hold_max {
        Some(value) => Some(super::count_setting(Some(value), 1)?),
        None => None,
    };
    Ok((cancel, hold_max))
}

/// The trailing COMMAND, else the file's `command`.
fn command(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Option<Vec<String>>, ConfigError> {
    if !cli.command.is_empty() {
        return Ok(Some(std::mem::take(&mut cli.command)));
    }
    match file.command.take().map(OneOrMany::into_vec) {
        Some(v) if v.is_empty() || v[0].is_empty() => Err(ConfigError::Invalid {
            origin: file_origin("command", path),
            value: format!("{v:?}"),
            reason: "the program name is empty".into(),
        }),
        other => Ok(other),
    }
}

/// How the backend is run: at most one of a command, a container, a Swarm
/// service, a unit, start/stop commands.
fn run(cli: &mut Cli, file: &mut FileConfig, path: &Path) -> Result<Run, ConfigError> {
    let command = command(cli, file, path)?;
    let units = group_names(take(&mut cli.unit), file.unit.take(), "unit", path)?;
    let start_cmd = given!(cli, file, path, start_cmd, "start-cmd");
    let stop_cmd = given!(cli, file, path, stop_cmd, "stop-cmd");
    let containers = group_names(
        take(&mut cli.container),
        file.container.take(),
        "container",
        path,
    )?;
    let start_cmd = text_setting(start_cmd, "a command")?;
    let stop_cmd = text_setting(stop_cmd, "a command")?;
    let swarm = swarm_service(cli, file, path)?;
    let kinds = [
        command.is_some().then_some("a backend COMMAND"),
        (!containers.is_empty()).then_some("--container"),
        swarm.is_some().then_some("--swarm-service"),
        (!units.is_empty()).then_some("--unit"),
        (start_cmd.is_some() || stop_cmd.is_some()).then_some("--start-cmd/--stop-cmd"),
    ];
    let given: Vec<&str> = kinds.into_iter().flatten().collect();
    if given.len() > 1 {
        return Err(ConfigError::Usage(format!(
            "{} and {} both say how to run the backend: give one",
            given[0], given[1]
        )));
    }
    let (engine, engine_insecure, idle_action) = container_options(cli, file, path)?;
    if !containers.is_empty() {
        return Ok(Run::Container {
            names: containers,
            engine,
            engine_insecure,
            idle_action,
            lease_dir: None,
        });
    }
    if idle_action != IdleAction::default() {
        return Err(ConfigError::Usage(
            "--idle-action needs --container NAME".into(),
        ));
    }
    if let Some((service, replicas)) = swarm {
        return Ok(Run::Swarm {
            service,
            replicas,
            engine,
            engine_insecure,
        });
    }
    for (given, name) in [
        (engine.is_some(), "--engine/--engine-socket"),
        (engine_insecure, "--engine-insecure"),
    ] {
        if given {
            return Err(ConfigError::Usage(format!(
                "{name} needs --container NAME or --swarm-service NAME"
            )));
        }
    }
    Ok(match command {
        Some(argv) => Run::Command(argv),
        None if !units.is_empty() => Run::Unit(units),
        None if start_cmd.is_some() || stop_cmd.is_some() => Run::Hooks {
            start: start_cmd,
            stop: stop_cmd,
        },
        None => Run::External,
    })
}

/// The names of a group (`--container`, `--unit`: the flags, else the
/// file's `key`): none empty, none twice.
fn group_names(
    flags: Vec<String>,
    file: Option<OneOrMany>,
    key: &'static str,
    path: &Path,
) -> Result<Vec<String>, ConfigError> {
    let flag = if key == "unit" {
        "--unit"
    } else {
        "--container"
    };
    let values = list_setting(flags, flag, file, key, path);
    let mut names: Vec<String> = Vec::with_capacity(values.len());
    for (text, origin) in values {
        let reason = if text.trim().is_empty() {
            format!("expected a {key} name")
        } else if names.contains(&text) {
            "given twice: each member of a group is started once".into()
        } else {
            names.push(text);
            continue;
        };
        return Err(ConfigError::Invalid {
            origin,
            value: text,
            reason,
        });
    }
    Ok(names)
}

/// `--swarm-service` and its `--swarm-replicas` (default 1), which need it.
fn swarm_service(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Option<(String, u64)>, ConfigError> {
    let service = given!(cli, file, path, swarm_service, "swarm-service");
    let replicas = given!(cli, file, path, swarm_replicas, "swarm-replicas", |n| n
        .to_string());
    let service = match service {
        Some((name, origin)) if name.trim().is_empty() => {
            return Err(ConfigError::Invalid {
                origin,
                value: name,
                reason: "expected a service name".into(),
            })
        }
        Some((name, _)) => name,
        None if replicas.is_some() => {
            return Err(ConfigError::Usage(
                "--swarm-replicas needs --swarm-service NAME".into(),
            ))
        }
        None => return Ok(None),
    };
    let replicas = count_setting(replicas, 1)?;
    Ok(Some((service, replicas as u64)))
}

/// `--engine`, `--engine-socket`, `--engine-tls-dir`, `--engine-insecure`
/// (a container's or a Swarm service's) and `--idle-action` (a container's
/// only).
fn container_options(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<(Option<EngineAddress>, bool, IdleAction), ConfigError> {
    let engine = engine_address(cli, file, path)?;
    let insecure = cli.engine_insecure || file.engine_insecure.take().unwrap_or(false);
    let idle_action = match given!(cli, file, path, idle_action, "idle-action") {
        None => IdleAction::default(),
        Some((text, origin)) => text.parse().map_err(|reason| ConfigError::Invalid {
            origin,
            value: text,
            reason,
        })?,
    };
    Ok((engine, insecure, idle_action))
}

/// `--engine URL` or `--engine-socket PATH` (an alias of `unix://PATH`), not
/// both, with `--engine-tls-dir` for a `tcp://` one.
fn engine_address(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Option<EngineAddress>, ConfigError> {
    let socket = given!(cli, file, path, engine_socket, "engine-socket");
    let url = given!(cli, file, path, engine, "engine");
    let tls_dir = given!(cli, file, path, engine_tls_dir, "engine-tls-dir");
    let mut address = match (url, socket) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Usage(
                "--engine and --engine-socket (keys engine, engine-socket) both name the engine: give one"
                    .into(),
            ))
        }
        (Some((text, origin)), None) => {
            Some(
                EngineAddress::parse(&text).map_err(|reason| ConfigError::Invalid {
                    origin,
                    value: text,
                    reason,
                })?,
            )
        }
        (None, Some((socket, _))) => Some(EngineAddress::Unix(socket)),
        (None, None) => None,
    };
    if let Some((dir, origin)) = tls_dir {
        match &mut address {
            Some(EngineAddress::Tcp { tls, .. }) => *tls = Some(dir),
            _ => {
                return Err(ConfigError::Invalid {
                    origin,
                    value: dir.display().to_string(),
                    reason: "TLS needs a tcp:// engine (--engine tcp://HOST:PORT)".into(),
                })
            }
        }
    }
    Ok(address)
}

/// When the backend counts as ready, beyond its ready addresses accepting.
fn readiness(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    upstreams: &[UpstreamSpec],
    names: Names,
) -> Result<Readiness, ConfigError> {
    let address = given!(cli, file, path, ready, "ready")
        .map(|(t, o)| address_setting(t, o, names))
        .transpose()?;

    let http = match given!(cli, file, path, ready_http, "ready-http") {
        Some((p, origin)) if !p.starts_with('/') || p.contains(char::is_whitespace) => {
            return Err(ConfigError::Invalid {
                origin,
                value: p,
                reason: "expected a path such as /healthz".into(),
            })
        }
        other => other.map(|(p, _)| p),
    };
    if http.is_some() {
        let probed = address
            .as_ref()
            .or_else(|| upstreams.first().map(|u| &u.address));
        if let Some(udp) = probed.filter(|a| a.is_udp()) {
            return Err(ConfigError::Usage(format!(
                "--ready-http probes the first ready address, and {udp} is UDP: give --ready HOST:PORT of a TCP port"
            )));
        }
    }
    let cmd = given!(cli, file, path, ready_cmd, "ready-cmd");
    Ok(Readiness {
        address,
        http,
        cmd: text_setting(cmd, "a command")?,
        notify: cli.ready_notify || file.ready_notify.take().unwrap_or(false),
        notify_dir: PathBuf::from("/tmp"),
    })
}
