//! toml's errors said in the config file's terms: the line and column, the
//! key, what the key takes and what was found instead of serde's Rust words
//! (`expected i64`, `untagged enum OneOrMany`), a "did you mean" for a
//! misspelt key, and TOML's scoping for a top-level key written under a table.

use serde::de::DeserializeOwned;

/// Where in the file a toml error is, and what to say about it.
pub(super) struct Explained {
    /// 1-based line.
    pub(super) line: usize,
    /// 1-based column (in characters).
    pub(super) column: usize,
    /// One line.
    pub(super) message: String,
}

/// Explains `error`, which toml gave for `text` read as a `File` (the file
/// form, whose top-level keys a misplaced key is checked against).
pub(super) fn explain<File: DeserializeOwned>(text: &str, error: &toml::de::Error) -> Explained {
    let start = error.span().map_or(0, |s| s.start.min(text.len()));
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    let said = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let table = table_at(before);
    let message = if let Some(rest) = said.strip_prefix("unknown field `") {
        unknown_key::<File>(rest, table.as_deref()).unwrap_or(said)
    } else if said.starts_with("invalid type") || said.starts_with("data did not match any variant")
    {
        wrong_type(text, start, table.as_deref()).unwrap_or(said)
    } else {
        said
    };
    Explained {
        line,
        column,
        message,
    }
}

/// The header (`answer`, `systemd`) of the table `before` ends in, if any.
fn table_at(before: &str) -> Option<String> {
    before.lines().rev().find_map(|l| {
        let l = l.trim();
        let inner = l.strip_prefix('[')?.split(']').next()?;
        Some(inner.trim_start_matches('[').trim().to_owned())
    })
}

/// `unknown field `X`, expected one of `a`, `b``: with a "did you mean", or
/// TOML's scoping when X is a top-level key written under a table.
fn unknown_key<File: DeserializeOwned>(rest: &str, table: Option<&str>) -> Option<String> {
    let (key, list) = rest.split_once('`')?;
    let known = backticked(list);
    let header = table.map(|t| match t {
        "answer" | "upstream" => format!("[[{t}]]"),
        _ => format!("[{t}]"),
    });
    if let Some(header) = header.as_ref().filter(|_| !known.iter().any(|k| k == key)) {
        if top_level_keys::<File>().iter().any(|k| k == key) {
            return Some(format!(
                "unknown field `{key}` in {header}: TOML puts every key after a `{header}` header into that table, so top-level keys such as `{key}` go above the first table"
            ));
        }
    }
    let closest = known
        .iter()
        .map(|k| (distance(key, k), k))
        .min_by_key(|(d, _)| *d)?;
    let near = (key.chars().count() / 4).clamp(1, 3);
    if closest.0 <= near {
        let inside = header.map(|h| format!(" in {h}")).unwrap_or_default();
        return Some(format!(
            "unknown field `{key}`{inside}: did you mean `{}`?",
            closest.1
        ));
    }
    None
}

/// The words between backticks in `text`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys of the file's top level, as serde knows them.
fn top_level_keys<File: DeserializeOwned>() -> Vec<String> {
    match toml::from_str::<File>("\"?\" = 0") {
        Err(e) => backticked(e.message().split_once("expected").map_or("", |(_, l)| l)),
        Ok(_) => Vec::new(),
    }
}

/// The edit distance between `a` and `b` in characters, a swap of two
/// neighbours counting as one edit (`paht` is one from `path`).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j - 1] + cost)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// A value of the wrong type at `start`: `KEY: expected WHAT, found KIND`.
fn wrong_type(text: &str, start: usize, table: Option<&str>) -> Option<String> {
    let value = text.get(start..)?;
    let line_start = text.get(..start)?.trim_end_matches([' ', '\t']);
    if value.starts_with('[') && (line_start.is_empty() || line_start.ends_with('\n')) {
        // A `[[upstream]]` table as a whole: one of its values has a wrong type.
        let key = table_at(value.lines().next()?)?;
        let what = takes(None, &key)?;
        return Some(format!(
            "{key}: expected {what}, found a table with a value of another type"
        ));
    }
    let key = key_at(text.get(..start)?)?;
    let what = takes(table, &key)?;
    let found = match kind(value) {
        "a list" if what.contains("list") => "a list holding another type",
        found => found,
    };
    Some(format!("{key}: expected {what}, found {found}"))
}

/// The key whose value starts at the end of `before`: the last `KEY =`
/// before it (a list may span lines), its last dotted part, unquoted.
fn key_at(before: &str) -> Option<String> {
    let line = before.lines().rev().find(|l| l.contains('='))?;
    let key = line.split('=').next()?.trim();
    let key = key.rsplit('.').next()?.trim().trim_matches(['"', '\'']);
    (!key.is_empty()).then(|| key.to_owned())
}

/// What the value starting `value` is, in TOML's words.
fn kind(value: &str) -> &'static str {
    let value = value.trim_start();
    match value.chars().next() {
        Some('"' | '\'') => "a string",
        Some('[') => "a list",
        Some('{') => "an inline table",
        Some('t' | 'f') => "a boolean",
        Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => {
            let number: String = value
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ']')
                .collect();
            if number.contains(['-', ':']) && number.len() > 5 {
                "a date"
            } else if number.contains(['.', 'e', 'E']) || number.contains("inf") {
                "a decimal number"
            } else {
                "an integer"
            }
        }
        _ => "another type",
    }
}

/// What `key` (in `table`) takes, in words.
fn takes(table: Option<&str>, key: &str) -> Option<&'static str> {
    const DURATION: &str = "a duration such as \"5min\" or \"30s\" (or a number of seconds)";
    const STRINGS: &str = "a string or a list of strings";
    Some(match (table, key) {
        (
            None,
            "idle-timeout"
            | "connection-idle-timeout"
            | "udp-flow-timeout"
            | "start-timeout"
            | "stop-timeout"
            | "header-read-timeout"
            | "cancel-abandoned-start",
        )
        | (Some("answer"), "retry-after") => DURATION,
        (None, "connections-max" | "upstream-connections-max" | "hold-max") => {
            "a whole number such as 64"
        }
        (Some("answer"), "status") => "an HTTP status such as 503",
        (None, "forwarded-headers" | "ready-notify") | (Some("systemd"), "enable") => {
            "true or false"
        }
        (None, "waiting-page") => "true, false or the path of a page template",
        (None, "listen" | "command" | "unit" | "container" | "wake-from")
        | (Some("answer"), "user-agent" | "source") => STRINGS,
        (None, "upstream") => {
            "an address such as \"127.0.0.1:8080\", a list of them, or [[upstream]] tables"
        }
        (None, "answer") => "[[answer]] tables",
        (None, "systemd") => "a [systemd] table",
        (Some("systemd"), "listen") => {
            "a list with an entry per upstream, each an address or a list of them, such as [\"80\"]"
        }
        (Some("systemd"), "service" | "socket") => "a list of \"Key=value\" strings",
        _ => "a string",
    })
}

#[cfg(test)]
mod tests {
    use super::super::file::FileConfig;
    use super::*;

    fn said(text: &str) -> String {
        let e = toml::from_str::<FileConfig>(text).unwrap_err();
        let x = explain::<FileConfig>(text, &e);
        format!("{}:{}: {}", x.line, x.column, x.message)
    }

    #[test]
    fn type_errors_say_what_the_key_takes() {
        assert_eq!(
            said("upstream = \"127.0.0.1:1\"\nconnections-max = \"many\"\n"),
            "2:19: connections-max: expected a whole number such as 64, found a string"
        );
        assert_eq!(
            said("command = 5\n"),
            "1:11: command: expected a string or a list of strings, found an integer"
        );
        let e = said("idle-timeout = true\n");
        assert!(
            e.starts_with("1:16: idle-timeout: expected a duration such as \"5min\""),
            "{e}"
        );
        assert!(e.ends_with("found a boolean"), "{e}");
        let e = said("[systemd]\nlisten = \"80\"\n");
        assert!(
            e.starts_with("2:10: listen: expected a list with an entry per upstream"),
            "{e}"
        );
        assert!(e.ends_with("found a string"), "{e}");
        let e = said("mode = \"http\"\n[[answer]]\npath = \"/\"\nstatus = \"503\"\n");
        assert_eq!(
            e,
            "4:10: status: expected an HTTP status such as 503, found a string"
        );
        assert!(!said("upstream = 5\n").contains("untagged"));
        let e = said("[[upstream]]\naddress = 5\n");
        assert!(e.starts_with("1:1: upstream: expected an address"), "{e}");
        assert!(
            e.ends_with("found a table with a value of another type"),
            "{e}"
        );
        assert_eq!(
            said("listen = [\"127.0.0.1:1\", 5]\n"),
            "1:10: listen: expected a string or a list of strings, found a list holding another type"
        );
    }

    #[test]
    fn a_misspelt_key_gets_a_did_you_mean() {
        assert_eq!(
            said("idle-timeot = \"5s\"\n"),
            "1:1: unknown field `idle-timeot`: did you mean `idle-timeout`?"
        );
        assert_eq!(
            said("[[answer]]\npaht = \"/\"\n"),
            "2:1: unknown field `paht` in [[answer]]: did you mean `path`?"
        );
        let far = said("bogus = 1\n");
        assert!(
            far.starts_with("1:1: unknown field `bogus`, expected one of"),
            "{far}"
        );
    }

    #[test]
    fn a_top_level_key_under_a_table_is_explained() {
        let e = said("mode = \"http\"\n[[answer]]\npath = \"/h\"\nidle-timeout = \"5s\"\n");
        assert!(
            e.starts_with("4:1: unknown field `idle-timeout` in [[answer]]: TOML puts every key after a `[[answer]]` header into that table"),
            "{e}"
        );
        assert!(e.contains("above the first table"), "{e}");
        let e = said("[systemd]\nuser = \"root\"\nbusy-cmd = \"true\"\n");
        assert!(e.contains("`[systemd]` header"), "{e}");
    }

    #[test]
    fn distances() {
        assert_eq!(distance("idle-timeot", "idle-timeout"), 1);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("paht", "path"), 1);
    }
}
