//! What a bad setting is reported as: one line naming the flag or the key
//! and file, and the value.

use std::fmt;
use std::path::PathBuf;

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
        /// The line it is on, once known (see [`ConfigError::locate`]).
        line: Option<usize>,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Key { key, file, .. } => {
                write!(f, "{key} in {}", one_line(&file.display().to_string()))
            }
        }
    }
}

impl Origin {
    /// ` on line N` for a key whose line is known, else nothing.
    fn on_line(&self) -> String {
        match self {
            Origin::Key {
                line: Some(line), ..
            } => format!(" on line {line}"),
            _ => String::new(),
        }
    }
}

/// A setting that cannot be used; idlegate exits 2 with this as its one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value was given but is not valid.
    #[error("{origin}: invalid value '{}'{}: {}", one_line(value), origin.on_line(), one_line(reason))]
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
    #[error("{}:{line}:{column}: {}", one_line(&path.display().to_string()), one_line(message))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message, on one line.
        message: String,
    },
}

impl ConfigError {
    /// A bad value of a key in the file whose text is `text`, with the line
    /// the key is on (the first `KEY =` line; a key repeated in tables, as
    /// `[[answer]]`'s, gets the first one's).
    pub(super) fn locate(self, text: &str) -> ConfigError {
        match self {
            ConfigError::Invalid {
                origin:
                    Origin::Key {
                        key,
                        file,
                        line: None,
                    },
                value,
                reason,
            } => {
                // `answer.path`: the table's key `path`.
                let bare = key.rsplit('.').next().unwrap_or(key);
                let line = text
                    .lines()
                    .position(|l| {
                        let l = l.trim_start();
                        let rest = l
                            .strip_prefix(bare)
                            .or_else(|| l.strip_prefix(&format!("\"{bare}\"")));
                        rest.is_some_and(|r| r.trim_start().starts_with('='))
                    })
                    .map(|i| i + 1);
                ConfigError::Invalid {
                    origin: Origin::Key { key, file, line },
                    value,
                    reason,
                }
            }
            other => other,
        }
    }
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
