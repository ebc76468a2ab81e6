//! The user docs stay true: every complete config example in README.md and
//! docs/ passes `idlegate check`, every relative link resolves (anchors too),
//! and docs/reference.md names every flag of `--help` and every key of
//! config/reference.toml.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// At least this many complete `NAME.toml` examples are in the docs.
const MIN_EXAMPLES: usize = 33;

/// The first line that makes a ```toml block a complete file to check.
const SYSTEM_FILE: &str = "# /etc/idlegate/";
/// The same, for a user's manager.
const USER_FILE: &str = "# ~/.config/idlegate/";

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files users read: the root's, deploy/README.md and docs/**.
fn doc_files() -> Vec<PathBuf> {
    fn markdown_in(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && recurse {
                markdown_in(&path, true, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    markdown_in(&root(), false, &mut files);
    markdown_in(&root().join("docs"), true, &mut files);
    files.push(root().join("deploy/README.md"));
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("README.md")));
    files
}

/// `path` relative to the root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A fenced block: the line its fence opens on (1-based), its info string
/// and its lines, the fence's indentation taken off.
struct Block {
    line: usize,
    info: String,
    lines: Vec<String>,
}

/// The fenced blocks of a Markdown text, and its lines outside them.
fn blocks(text: &str) -> (Vec<Block>, Vec<(usize, &str)>) {
    let (mut found, mut prose) = (Vec::new(), Vec::new());
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            Some((_, block)) if trimmed.starts_with("```") => found.push(block),
            Some((fence_indent, mut block)) => {
                let cut = indent.min(fence_indent);
                block.lines.push(line[cut..].to_string());
                open = Some((fence_indent, block));
            }
            None if trimmed.starts_with("```") => {
                let info = trimmed.trim_start_matches('`').trim().to_string();
                let block = Block {
                    line: i + 1,
                    info,
                    lines: Vec::new(),
                };
                open = Some((indent, block));
            }
            None => prose.push((i + 1, line)),
        }
    }
    (found, prose)
}

/// A complete config file shown in the docs.
struct Example {
    /// Where: `docs/x.md:12`.
    place: String,
    /// NAME, of NAME.toml.
    name: String,
    /// Under ~/.config/idlegate (a user's manager) rather than /etc/idlegate.
    user: bool,
    text: String,
}

/// Every ```toml block whose first line names its file under /etc/idlegate
/// or ~/.config/idlegate.
fn examples() -> Vec<Example> {
    let mut found = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for block in blocks(&text).0 {
            let Some(first) = block.lines.first().filter(|_| block.info == "toml") else {
                continue;
            };
            let (rest, user) = match (
                first.trim().strip_prefix(SYSTEM_FILE),
                first.trim().strip_prefix(USER_FILE),
            ) {
                (Some(rest), _) => (rest, false),
                (_, Some(rest)) => (rest, true),
                _ => continue,
            };
            let place = format!("{}:{}", shown(&file), block.line);
            let name = rest
                .strip_suffix(".toml")
                .unwrap_or_else(|| panic!("{place}: the first line names no NAME.toml: {first}"));
            found.push(Example {
                place,
                name: name.to_string(),
                user,
                text: block.lines.join("\n") + "\n",
            });
        }
    }
    found
}

#[test]
fn every_config_example_in_the_docs_passes_check() {
    let examples = examples();
    assert!(
        examples.len() >= MIN_EXAMPLES,
        "{} complete config examples (```toml starting `# /etc/idlegate/NAME.toml`) in the docs, \
         at least {MIN_EXAMPLES} expected",
        examples.len()
    );
    let dir = tempdir();
    let home = dir.path().join("home");
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(home.join(".config/idlegate")).unwrap();
    std::fs::create_dir_all(&etc).unwrap();
    // A container example names no engine socket when the usual one exists
    // on the reader's host: stand one in, so `check` finds it here too.
    let engine = dir.path().join("engine.sock");
    std::fs::write(&engine, "").unwrap();
    let engine_url = format!("unix://{}", engine.display());
    let mut failures = Vec::new();
    for example in &examples {
        let path = match example.user {
            true => home.join(".config/idlegate"),
            false => etc.clone(),
        }
        .join(format!("{}.toml", example.name));
        std::fs::write(&path, &example.text).unwrap();
        let env = [
            ("HOME", home.to_str().unwrap()),
            ("CONTAINER_HOST", engine_url.as_str()),
        ];
        let (code, stdout, stderr) =
            run_idlegate_output(&["check", "--config", path.to_str().unwrap()], &env);
        if code != Some(0) {
            failures.push(format!(
                "{}: `idlegate check` exited {code:?}: {}",
                example.place,
                stderr.trim()
            ));
        } else if !stdout.contains("systemd units:") && example.text.contains("[systemd]") {
            failures.push(format!("{}: no units named: {stdout}", example.place));
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// GitHub's anchor for a heading: lowercase, punctuation but `-` and `_`
/// dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown text's headings, a repeated one numbered as
/// GitHub does (`x`, `x-1`, …).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in blocks(text).1 {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let n = seen.entry(base.clone()).or_default();
        out.push(match *n {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        *n += 1;
    }
    out
}

/// The targets of a line's links, `[text](target)`, outside code spans.
fn link_targets(line: &str) -> Vec<String> {
    let prose: String = line
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim().to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line_no, line) in blocks(&text).1 {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let place = format!("{}:{line_no}", shown(&file));
                let linked = match path {
                    "" => file.clone(),
                    path => file.parent().unwrap().join(path),
                };
                if !linked.exists() {
                    failures.push(format!("{place}: {target}: no such file"));
                    continue;
                }
                let is_md = linked.extension().is_some_and(|e| e == "md");
                if anchor.is_empty() || !is_md {
                    continue;
                }
                let linked_text = std::fs::read_to_string(&linked).unwrap();
                if !anchors(&linked_text).iter().any(|a| a == anchor) {
                    failures.push(format!(
                        "{place}: {target}: no heading with the anchor #{anchor}"
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser blind?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(
        slug("Where HTTP mode's time goes, and what is left"),
        "where-http-modes-time-goes-and-what-is-left"
    );
    assert_eq!(
        slug("`[systemd]`: the generator's table"),
        "systemd-the-generators-table"
    );
    assert_eq!(anchors("# A\n```\n# not\n```\n## A\n"), ["a", "a-1"]);
    assert_eq!(
        link_targets("see [x](a.md#b) and `[y](not)` or ![z](c.svg)"),
        ["a.md#b", "c.svg"]
    );
}

/// Every long flag (and visible alias) of the command and its subcommands.
fn long_flags(command: &clap::Command, out: &mut Vec<String>) {
    for arg in command.get_arguments() {
        out.extend(arg.get_long().map(|l| format!("--{l}")));
        if let Some(aliases) = arg.get_visible_aliases() {
            out.extend(aliases.iter().map(|a| format!("--{a}")));
        }
    }
    for sub in command.get_subcommands() {
        long_flags(sub, out);
    }
}

/// The keys and tables of config/reference.toml, commented-out ones too.
fn reference_keys() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("config/reference.toml")).unwrap();
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with('[') && line.ends_with(']') {
            keys.push(line.to_string());
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            keys.push(key.to_string());
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn the_reference_names_every_flag_and_key() {
    let reference = std::fs::read_to_string(root().join("docs/reference.md")).unwrap();
    let mut command = idlegate::cli::command();
    command.build();
    let mut flags = Vec::new();
    long_flags(&command, &mut flags);
    assert!(flags.len() > 40, "only {} flags found", flags.len());
    let keys = reference_keys();
    assert!(keys.len() > 40, "only {} keys found: {keys:?}", keys.len());
    let missing: Vec<String> = flags
        .iter()
        .filter(|f| !reference.contains(&format!("`{f}")))
        .chain(
            keys.iter()
                .filter(|k| !reference.contains(&format!("`{k}"))),
        )
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md does not name (in backquotes): {}",
        missing.join(", ")
    );
}
