//! The resolution of flags over the file, one function per group of
//! settings: the sockets and their upstreams, the timeouts, the backend, HTTP
//! mode, and what idlegate reports. Each takes its values out of the flags and
//! the file, checks them, and names the flag or key of a bad one: the
//! sockets in `sockets.rs`, the backend in `backend.rs`, the rest here.

use std::path::Path;
use std::time::Duration;

use super::file::{FileConfig, RawDuration, WaitingPageKey};
use crate::address::{Address, Names};
use crate::cli::Cli;
use crate::config::{
    parse_duration, ConfigError, HttpSettings, Observability, Origin, Timeouts,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT,
    DEFAULT_UDP_FLOW_TIMEOUT, DEFAULT_UPSTREAM_CONNECTIONS_MAX, MAX_HEADER_BYTES,
    WAITING_PAGE_AFTER,
};

/// The flag `--KEY` over the file's `KEY`, each taken out of its side
/// (`field` names both), the file's value mapped by `map` if given; as
/// [`pick`] returns it:
/// `given!(cli, file, path, idle_timeout, "idle-timeout", RawDuration::text)`.
macro_rules! given {
    ($cli:ident, $file:ident, $path:ident, $field:ident, $key:literal) => {
        $crate::config::resolve::pick(
            $cli.$field.take(),
            concat!("--", $key),
            $file.$field.take(),
            $key,
            $path,
        )
    };
    ($cli:ident, $file:ident, $path:ident, $field:ident, $key:literal, $map:expr) => {
        $crate::config::resolve::pick(
            $cli.$field.take(),
            concat!("--", $key),
            $file.$field.take().map($map),
            $key,
            $path,
        )
    };
}

mod backend;
mod sockets;
mod systemd;
mod wake;
mod wake_on_lan;

pub(super) use backend::backend;
pub(super) use sockets::sockets;
pub use systemd::is_unit_name;
pub(super) use systemd::systemd;
pub(super) use wake::wake;

pub(super) fn file_origin(key: &'static str, file: &Path) -> Origin {
    Origin::Key {
        key,
        file: file.to_owned(),
        line: None,
    }
}

/// Chooses the flag's value over the file's, remembering where it came from.
pub(super) fn pick<T>(
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

/// A duration from `value`, where `0`, `infinity` and `never` mean "never"
/// (`None`); `default` when none is given.
pub(super) fn optional_duration(
    value: Option<(String, Origin)>,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    let Some((text, origin)) = value else {
        return Ok(default);
    };
    parse_duration(&text).map_err(|reason| ConfigError::Invalid {
        origin,
        value: text,
        reason,
    })
}

/// A finite duration greater than 0 from `value`, or `default`.
fn finite_duration(
    value: Option<(String, Origin)>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let given = value.clone();
    match optional_duration(value, Some(default))? {
        Some(d) => Ok(d),
        None => {
            let (text, origin) = given.expect("a default was given");
            Err(ConfigError::Invalid {
                origin,
                value: text,
                reason: "must be a finite duration greater than 0".into(),
            })
        }
    }
}

/// A list given as a flag (repeatable) or as the file's key (one value or
/// a list): the flags replace the file's list. Each value with its origin.
pub(super) fn list_setting(
    flags: Vec<String>,
    flag_name: &'static str,
    file: Option<super::file::OneOrMany>,
    key: &'static str,
    path: &Path,
) -> Vec<(String, Origin)> {
    if !flags.is_empty() {
        return flags
            .into_iter()
            .map(|v| (v, Origin::Flag(flag_name)))
            .collect();
    }
    file.map(super::file::OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v, file_origin(key, path)))
        .collect()
}

/// A count of at least 1 (a semaphore's permits), or `default`.
pub(super) fn count_setting(
    value: Option<(String, Origin)>,
    default: usize,
) -> Result<usize, ConfigError> {
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

pub(super) fn address_setting(
    text: String,
    origin: Origin,
    names: Names,
) -> Result<Address, ConfigError> {
    Address::parse_with(&text, names).map_err(|e| ConfigError::Invalid {
        origin,
        value: text,
        reason: e.to_string(),
    })
}

/// A non-empty text setting (`what` it should be, for the error).
pub(super) fn text_setting(
    value: Option<(String, Origin)>,
    what: &str,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some((text, origin)) if text.trim().is_empty() => Err(ConfigError::Invalid {
            origin,
            value: text,
            reason: format!("expected {what}"),
        }),
        other => Ok(other.map(|(text, _)| text)),
    }
}

/// `--busy-cmd`: what the idle timer asks before the backend stops.
pub(super) fn busy_cmd(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Option<String>, ConfigError> {
    text_setting(given!(cli, file, path, busy_cmd, "busy-cmd"), "a command")
}

/// The timeouts.
pub(super) fn timeouts(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<Timeouts, ConfigError> {
    let idle = given!(
        cli,
        file,
        path,
        idle_timeout,
        "idle-timeout",
        RawDuration::text
    );
    let connection_idle = given!(
        cli,
        file,
        path,
        connection_idle_timeout,
        "connection-idle-timeout",
        RawDuration::text
    );
    let udp_flow = given!(
        cli,
        file,
        path,
        udp_flow_timeout,
        "udp-flow-timeout",
        RawDuration::text
    );
    let start = given!(
        cli,
        file,
        path,
        start_timeout,
        "start-timeout",
        RawDuration::text
    );
    let stop = given!(
        cli,
        file,
        path,
        stop_timeout,
        "stop-timeout",
        RawDuration::text
    );
    Ok(Timeouts {
        idle: optional_duration(idle, Some(DEFAULT_IDLE_TIMEOUT))?,
        connection_idle: optional_duration(connection_idle, None)?,
        udp_flow: finite_duration(udp_flow, DEFAULT_UDP_FLOW_TIMEOUT)?,
        start: finite_duration(start, DEFAULT_START_TIMEOUT)?,
        // A stop timeout of 0 is valid: SIGKILL at once, no drain.
        stop: optional_duration(stop, Some(DEFAULT_STOP_TIMEOUT))?.unwrap_or(Duration::ZERO),
    })
}

/// HTTP mode's settings.
/// `--waiting-page WORD` takes WORD as its template file, but before the
/// template existed a bare `--waiting-page` could stand before the positional
/// UPSTREAM (`--waiting-page 127.0.0.1:9 -- app`): a WORD that is no file, is
/// an address, and leaves no positional UPSTREAM is that UPSTREAM.
pub(super) fn untangle_waiting_page(cli: &mut Cli) {
    let Some(Some(word)) = &cli.waiting_page else {
        return;
    };
    let Some(text) = word.to_str() else {
        return;
    };
    if cli.positional_upstream.is_none()
        && cli.upstream.is_empty()
        && !word.exists()
        && crate::address::UpstreamSpec::parse_with(text, Names::Keep).is_ok()
    {
        cli.positional_upstream = Some(text.to_owned());
        cli.waiting_page = Some(None);
    }
}

pub(super) fn http(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
) -> Result<HttpSettings, ConfigError> {
    let upstream_connections_max = count_setting(
        given!(
            cli,
            file,
            path,
            upstream_connections_max,
            "upstream-connections-max",
            |n| n.to_string()
        ),
        DEFAULT_UPSTREAM_CONNECTIONS_MAX,
    )?;

    let header_read_timeout = finite_duration(
        given!(
            cli,
            file,
            path,
            header_read_timeout,
            "header-read-timeout",
            RawDuration::text
        ),
        DEFAULT_HEADER_READ_TIMEOUT,
    )?;
    let waiting_page = pick(
        cli.waiting_page.take().map(|file| match file {
            Some(template) => WaitingPageKey::Template(template),
            None => WaitingPageKey::Switch(true),
        }),
        "--waiting-page",
        file.waiting_page.take(),
        "waiting-page",
        path,
    );
    let (waiting_page, waiting_page_template) = match waiting_page {
        None | Some((WaitingPageKey::Switch(false), _)) => (false, None),
        Some((WaitingPageKey::Switch(true), _)) => (true, None),
        Some((WaitingPageKey::Template(template), origin)) => {
            let text = std::fs::read_to_string(&template).map_err(|e| ConfigError::Invalid {
                origin,
                value: template.display().to_string(),
                reason: format!("cannot read the page template: {e}"),
            })?;
            (true, Some(text.into()))
        }
    };
    let service_name = match given!(cli, file, path, name, "name") {
        Some((name, origin)) if name.trim().is_empty() => {
            return Err(ConfigError::Invalid {
                origin,
                value: name,
                reason: "the service's name must not be empty".into(),
            })
        }
        Some((name, _)) => Some(name.trim().into()),
        None => None,
    };
    let forwarded_headers =
        !cli.no_forwarded_headers && file.forwarded_headers.take().unwrap_or(true);
    let http = HttpSettings {
        waiting_page: waiting_page.then_some(WAITING_PAGE_AFTER),
        waiting_page_template,
        service_name,
        forwarded_headers,
        header_read_timeout,
        max_header_bytes: MAX_HEADER_BYTES,
        upstream_connections_max,
    };

    Ok(http)
}

/// What idlegate reports, and how: log level, state file, metrics.
pub(super) fn observability(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    names: Names,
) -> Result<Observability, ConfigError> {
    let log_level = match given!(cli, file, path, log_level, "log-level") {
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

    let state_file = given!(cli, file, path, state_file, "state-file").map(|(p, _)| p);
    let metrics = match given!(cli, file, path, metrics, "metrics") {
        None => None,
        Some((text, origin)) => match address_setting(text.clone(), origin.clone(), names)? {
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

/// `--idle-timeout 5 min`: the shell splits the duration, `5` goes to the
/// flag and `min` becomes the positional UPSTREAM, which would then be
/// reported as a bad address (or as a second upstream). Says what happened.
pub(super) fn stray_duration(cli: &Cli) -> Result<(), ConfigError> {
    let Some(word) = cli.positional_upstream.as_deref() else {
        return Ok(());
    };
    let unit = crate::cli::DURATION_UNITS.contains(&word);
    let durationish =
        unit || word.chars().any(|c| c.is_ascii_alphabetic()) && parse_duration(word).is_ok();
    if !durationish || crate::address::UpstreamSpec::parse_with(word, Names::Keep).is_ok() {
        return Ok(());
    }
    let given = [
        ("--idle-timeout", &cli.idle_timeout),
        ("--connection-idle-timeout", &cli.connection_idle_timeout),
        ("--udp-flow-timeout", &cli.udp_flow_timeout),
        ("--start-timeout", &cli.start_timeout),
        ("--stop-timeout", &cli.stop_timeout),
        ("--header-read-timeout", &cli.header_read_timeout),
        ("--cancel-abandoned-start", &cli.cancel_abandoned_start),
    ];
    let given: Vec<(&str, &str)> = given
        .iter()
        .filter_map(|(flag, value)| value.as_deref().map(|v| (*flag, v)))
        .collect();
    // A unit belongs to a bare number; a whole duration (`30min`) to any.
    let bare = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    let Some((flag, value)) = given
        .iter()
        .find(|(_, v)| unit && bare(v))
        .or_else(|| given.last().filter(|_| !unit))
    else {
        return Ok(());
    };
    Err(ConfigError::Usage(format!(
        "`{word}` was read as the upstream address; {}",
        crate::cli::no_space(flag, value, word)
    )))
}
