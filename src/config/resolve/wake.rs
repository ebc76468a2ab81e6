//! Wake control: `--answer`/`[[answer]]` (HTTP mode) and `--wake-from`
//! (TCP mode); see [`crate::wake`].

use std::path::Path;

use super::super::file::{AnswerTable, FileConfig, OneOrMany};
use super::{file_origin, list_setting, optional_duration};
use crate::address::Mode;
use crate::address::UpstreamSpec;
use crate::cli::Cli;
use crate::config::{ConfigError, Origin};
use crate::wake::WakeSettings;
use crate::wake::{AnswerRule, Cidr, UserAgent, When, DEFAULT_STATUS};

/// The answer rules and the wake ranges, checked against the upstreams' modes.
pub(in crate::config) fn wake(
    cli: &mut Cli,
    file: &mut FileConfig,
    path: &Path,
    upstreams: &[UpstreamSpec],
) -> Result<WakeSettings, ConfigError> {
    let answers = if !cli.answer.is_empty() {
        std::mem::take(&mut cli.answer)
            .into_iter()
            .map(answer_flag)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        file.answer
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|t| answer_table(t, path))
            .collect::<Result<Vec<_>, _>>()?
    };
    let wake_from = list_setting(
        std::mem::take(&mut cli.wake_from),
        "--wake-from",
        file.wake_from.take(),
        "wake-from",
        path,
    );
    let wake_from = wake_from
        .into_iter()
        .map(|(text, origin)| cidr(text, origin))
        .collect::<Result<Vec<_>, _>>()?;
    let stream = |mode: Mode| {
        upstreams
            .iter()
            .any(|u| u.mode == mode && !u.address.is_udp())
    };
    if !answers.is_empty() && !stream(Mode::Http) {
        return Err(ConfigError::Usage(
            "--answer/[[answer]] answers HTTP requests: it needs an upstream in HTTP mode (--mode http)".into(),
        ));
    }
    if !wake_from.is_empty() && !stream(Mode::Tcp) {
        return Err(ConfigError::Usage(
            "--wake-from is for TCP mode; in HTTP mode, [[answer]] rules say which requests do not wake the backend".into(),
        ));
    }
    Ok(WakeSettings { answers, wake_from })
}

fn cidr(text: String, origin: Origin) -> Result<Cidr, ConfigError> {
    text.parse().map_err(|reason| ConfigError::Invalid {
        origin,
        value: text,
        reason,
    })
}

fn status(value: i64, origin: Origin) -> Result<u16, ConfigError> {
    match u16::try_from(value) {
        Ok(s) if (100..=599).contains(&s) => Ok(s),
        _ => Err(ConfigError::Invalid {
            origin,
            value: value.to_string(),
            reason: "expected an HTTP status, 100 to 599".into(),
        }),
    }
}

/// `--answer PATH=STATUS`.
fn answer_flag(text: String) -> Result<AnswerRule, ConfigError> {
    let origin = Origin::Flag("--answer");
    let invalid = |reason: &str| ConfigError::Invalid {
        origin: origin.clone(),
        value: text.clone(),
        reason: reason.into(),
    };
    let Some((path, code)) = text.rsplit_once('=') else {
        return Err(invalid("expected PATH=STATUS, e.g. /healthz=200"));
    };
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return Err(invalid("expected PATH=STATUS with a path such as /healthz"));
    }
    let code: i64 = code
        .trim()
        .parse()
        .map_err(|_| invalid("expected PATH=STATUS, e.g. /healthz=200"))?;
    Ok(AnswerRule::for_path(path, status(code, origin.clone())?))
}

/// An `[[answer]]` table.
fn answer_table(t: AnswerTable, path: &Path) -> Result<AnswerRule, ConfigError> {
    let key = |k: &'static str| file_origin(k, path);
    if t.path.is_none()
        && t.path_prefix.is_none()
        && t.method.is_none()
        && t.user_agent.is_none()
        && t.source.is_none()
    {
        return Err(ConfigError::Usage(format!(
            "answer in {}: a rule needs path, path-prefix, method, user-agent or source (it would answer every request)",
            path.display()
        )));
    }
    for (value, name) in [
        (&t.path, "answer.path"),
        (&t.path_prefix, "answer.path-prefix"),
    ] {
        if let Some(p) = value.as_ref().filter(|p| !p.starts_with('/')) {
            return Err(ConfigError::Invalid {
                origin: key(name),
                value: p.clone(),
                reason: "expected a path such as /healthz".into(),
            });
        }
    }
    let user_agent = match t.user_agent {
        None => None,
        Some(OneOrMany::Many(parts)) => Some(UserAgent::Contains(parts)),
        Some(OneOrMany::One(pattern)) => Some(UserAgent::Pattern(
            regex_lite::Regex::new(&pattern).map_err(|e| ConfigError::Invalid {
                origin: key("answer.user-agent"),
                value: pattern.clone(),
                reason: format!("not a regular expression: {e}"),
            })?,
        )),
    };
    let source = t
        .source
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|c| cidr(c, key("answer.source")))
        .collect::<Result<Vec<_>, _>>()?;
    let when = match t.when {
        None => When::default(),
        Some(w) => w.parse().map_err(|reason| ConfigError::Invalid {
            origin: key("answer.when"),
            value: w,
            reason,
        })?,
    };
    let retry_after = optional_duration(
        t.retry_after.map(|d| (d.text(), key("answer.retry-after"))),
        None,
    )?
    .map(|d| d.as_secs().max(1));
    Ok(AnswerRule {
        path: t.path,
        path_prefix: t.path_prefix,
        method: t.method.map(|m| m.to_ascii_uppercase()),
        user_agent,
        source,
        status: status(
            t.status.unwrap_or(i64::from(DEFAULT_STATUS)),
            key("answer.status"),
        )?,
        body: t.body.unwrap_or_default(),
        retry_after,
        when,
    })
}
