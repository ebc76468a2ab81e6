//! The `[systemd]` table, which only the unit generator reads: checked here
//! like every other key, so `idlegate check` and a start reject the same
//! files the generator skips.

use std::path::Path;

use super::super::file::{FileConfig, OneOrMany, SystemdTable};
use super::file_origin;
use crate::address::UpstreamSpec;
use crate::config::{ConfigError, Run, SystemdSettings};
use crate::wake::schedule::Window;

/// The `[systemd]` table, checked against the upstreams and the backend.
pub(in crate::config) fn systemd(
    file: &mut FileConfig,
    path: &Path,
    upstreams: &[UpstreamSpec],
    run: &Run,
) -> Result<Option<SystemdSettings>, ConfigError> {
    let Some(table) = file.systemd.take() else {
        return Ok(None);
    };
    let SystemdTable {
        listen,
        backend_unit,
        user,
        enable,
        service,
        socket,
        awake,
    } = table;
    let listen = listen
        .unwrap_or_default()
        .into_iter()
        .map(OneOrMany::into_vec)
        .collect::<Vec<_>>();
    check_listen(&listen, path, upstreams)?;
    if let Some(unit) = &backend_unit {
        check_word(
            unit,
            "systemd.backend-unit",
            path,
            is_unit_name,
            "a unit name such as app.service",
        )?;
        if *run != Run::External {
            return Err(ConfigError::Usage(format!(
                "systemd.backend-unit in {}: the backend is the unit {unit}, which systemd starts: remove command, container, unit, start-cmd and stop-cmd",
                path.display()
            )));
        }
    }
    if let Some(user) = &user {
        check_word(user, "systemd.user", path, is_user_name, "a user name")?;
    }
    let service = service.unwrap_or_default();
    let socket = socket.unwrap_or_default();
    for (lines, key) in [(&service, "systemd.service"), (&socket, "systemd.socket")] {
        for line in lines {
            check_word(
                line,
                key,
                path,
                is_directive,
                "a directive such as Key=value",
            )?;
        }
    }
    let awake = awake
        .unwrap_or_default()
        .iter()
        .map(|text| {
            text.parse::<Window>().map_err(|e| ConfigError::Invalid {
                origin: file_origin("systemd.awake", path),
                value: text.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(SystemdSettings {
        listen,
        backend_unit,
        user,
        enable: enable.unwrap_or(false),
        service,
        socket,
        awake,
    }))
}

/// One list of addresses per upstream, each a `ListenStream=`/`ListenDatagram=` value.
fn check_listen(
    listen: &[Vec<String>],
    path: &Path,
    upstreams: &[UpstreamSpec],
) -> Result<(), ConfigError> {
    if listen.is_empty() {
        return Ok(());
    }
    if listen.len() != upstreams.len() {
        return Err(ConfigError::Invalid {
            origin: file_origin("systemd.listen", path),
            value: format!("{listen:?}"),
            reason: format!(
                "give one entry per upstream, in upstream order ({} upstream(s))",
                upstreams.len()
            ),
        });
    }
    for addresses in listen {
        if addresses.is_empty() {
            return Err(ConfigError::Invalid {
                origin: file_origin("systemd.listen", path),
                value: "[]".into(),
                reason: "an upstream's entry lists no address".into(),
            });
        }
        for address in addresses {
            check_word(
                address,
                "systemd.listen",
                path,
                |a| !a.contains(char::is_whitespace),
                "an address such as 80, 127.0.0.1:8080 or /run/app.sock",
            )?;
        }
    }
    Ok(())
}

fn check_word(
    value: &str,
    key: &'static str,
    path: &Path,
    valid: impl Fn(&str) -> bool,
    expected: &str,
) -> Result<(), ConfigError> {
    if !value.is_empty() && !value.contains(char::is_control) && valid(value) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        origin: file_origin(key, path),
        value: value.to_owned(),
        reason: format!("expected {expected}"),
    })
}

/// A unit name as systemd takes it: a name, a dot and a type.
pub fn is_unit_name(name: &str) -> bool {
    const TYPES: [&str; 6] = [
        ".service", ".target", ".socket", ".mount", ".scope", ".slice",
    ];
    name.len() <= 255
        && TYPES
            .iter()
            .any(|t| name.len() > t.len() && name.ends_with(t))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// A user name (or number) as `User=` takes it.
fn is_user_name(name: &str) -> bool {
    name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// `Key=value`, one line.
fn is_directive(line: &str) -> bool {
    match line.split_once('=') {
        Some((key, _)) => !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
        None => false,
    }
}
