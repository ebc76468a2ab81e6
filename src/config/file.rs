//! The config file as written: serde's view of the TOML, read with the line
//! of any error.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// A duration in the config file: a humantime string, or a number of seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl RawDuration {
    pub(super) fn text(self) -> String {
        match self {
            RawDuration::Seconds(s) => s.to_string(),
            RawDuration::Text(t) => t,
        }
    }
}

/// One string or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// An upstream in the config file: `"ADDR"`, `"NAME=ADDR"`, or a table.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawUpstream {
    Text(String),
    Table(UpstreamTable),
}

/// `[[upstream]]` with `address`, and optionally `socket` and `mode`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamTable {
    pub(super) address: String,
    pub(super) socket: Option<String>,
    pub(super) mode: Option<String>,
    #[serde(rename = "proxy-protocol")]
    pub(super) proxy_protocol: Option<String>,
    /// HTTP mode: `http1` or `h2c` to this upstream.
    pub(super) protocol: Option<String>,
}

/// One upstream entry or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Upstreams {
    One(RawUpstream),
    Many(Vec<RawUpstream>),
}

/// The config file as written; every key is optional and unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct FileConfig {
    pub(super) upstream: Option<Upstreams>,
    pub(super) mode: Option<String>,
    pub(super) proxy_protocol: Option<String>,
    pub(super) upstream_protocol: Option<String>,
    pub(super) waiting_page: Option<WaitingPageKey>,
    pub(super) name: Option<String>,
    pub(super) forwarded_headers: Option<bool>,
    pub(super) header_read_timeout: Option<RawDuration>,
    pub(super) listen: Option<OneOrMany>,
    pub(super) idle_timeout: Option<RawDuration>,
    pub(super) connection_idle_timeout: Option<RawDuration>,
    pub(super) udp_flow_timeout: Option<RawDuration>,
    pub(super) start_timeout: Option<RawDuration>,
    pub(super) stop_timeout: Option<RawDuration>,
    pub(super) connections_max: Option<i64>,
    pub(super) ready: Option<String>,
    pub(super) command: Option<OneOrMany>,
    pub(super) unit: Option<OneOrMany>,
    pub(super) start_cmd: Option<String>,
    pub(super) stop_cmd: Option<String>,
    pub(super) wake_on_lan: Option<String>,
    pub(super) wake_on_lan_address: Option<String>,
    pub(super) ready_http: Option<String>,
    pub(super) ready_cmd: Option<String>,
    pub(super) ready_notify: Option<bool>,
    pub(super) upstream_connections_max: Option<i64>,
    pub(super) cancel_abandoned_start: Option<RawDuration>,
    pub(super) hold_max: Option<i64>,
    pub(super) container: Option<OneOrMany>,
    pub(super) engine_socket: Option<PathBuf>,
    pub(super) engine: Option<String>,
    pub(super) engine_tls_dir: Option<PathBuf>,
    pub(super) engine_insecure: Option<bool>,
    pub(super) swarm_service: Option<String>,
    pub(super) swarm_replicas: Option<i64>,
    pub(super) idle_action: Option<String>,
    pub(super) log_level: Option<String>,
    pub(super) state_file: Option<PathBuf>,
    pub(super) metrics: Option<String>,
    /// Only the unit generator reads it (see [`crate::units`]).
    pub(super) systemd: Option<SystemdTable>,
    pub(super) answer: Option<Vec<AnswerTable>>,
    pub(super) wake_from: Option<OneOrMany>,
    pub(super) busy_cmd: Option<String>,
}

/// `[[answer]]`: a request idlegate answers itself.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct AnswerTable {
    pub(super) path: Option<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) method: Option<String>,
    /// A list of substrings, or one regular expression.
    pub(super) user_agent: Option<OneOrMany>,
    pub(super) source: Option<OneOrMany>,
    pub(super) status: Option<i64>,
    pub(super) body: Option<String>,
    pub(super) retry_after: Option<RawDuration>,
    pub(super) when: Option<String>,
}

/// `[systemd]`: what the unit generator needs beyond idlegate's own settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct SystemdTable {
    pub(super) listen: Option<Vec<OneOrMany>>,
    pub(super) backend_unit: Option<String>,
    pub(super) user: Option<String>,
    pub(super) enable: Option<bool>,
    pub(super) service: Option<Vec<String>>,
    pub(super) socket: Option<Vec<String>>,
    pub(super) awake: Option<Vec<String>>,
}

/// The file parsed, and its text (to find the line of a bad value later).
pub(super) fn read_file(path: &Path) -> Result<(FileConfig, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((parse_file(&text, path)?, text))
}

pub(super) fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let explained = super::explain::explain::<FileConfig>(text, &e);
        ConfigError::Parse {
            path: path.to_owned(),
            line: explained.line,
            column: explained.column,
            message: explained.message,
        }
    })
}

/// `waiting-page`: `true` for the built-in page, or the path of a template.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum WaitingPageKey {
    /// On (the built-in page) or off.
    Switch(bool),
    /// The user's page.
    Template(std::path::PathBuf),
}
