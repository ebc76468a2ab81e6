//! Bad input: every usage and configuration error exits 2 with one line that
//! names the flag or key and the value, before anything starts.

use crate::support::*;

fn assert_usage_error(args: &[&str], env: &[(&str, &str)], must_contain: &[&str]) {
    let (code, stderr) = run_idlegate(args, env);
    assert_eq!(
        code,
        Some(2),
        "idlegate {args:?} should exit 2; stderr: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    for word in must_contain {
        assert!(stderr.contains(word), "{word:?} missing from: {stderr}");
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    assert_usage_error(&["--bogus"], &[], &["--bogus"]);
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--idle-timeout", "soon"],
        &[],
        &["--idle-timeout", "soon"],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--start-timeout=-3s"],
        &[],
        &["--start-timeout", "-3s"],
    );
    assert_usage_error(&["--upstream", "nowhere"], &[], &["--upstream", "nowhere"]);
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--connections-max", "many"],
        &[],
        &["--connections-max", "many"],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--log-level", "loud"],
        &[],
        &["--log-level", "loud"],
    );
    assert_usage_error(&["--idle-timeout", "5s"], &[], &["--upstream"]);
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--listen", "here"],
        &[],
        &["--listen", "here"],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--proxy-protocol", "v3"],
        &[],
        &["--proxy-protocol", "v3"],
    );
    assert_usage_error(
        &[
            "--upstream",
            "127.0.0.1:1",
            "--mode",
            "http",
            "--upstream-protocol",
            "h3",
        ],
        &[],
        &["--upstream-protocol", "h3"],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--upstream-protocol", "h2c"],
        &[],
        &["--upstream-protocol", "h2c is for HTTP mode"],
    );
    assert_usage_error(
        &[
            "--upstream",
            "127.0.0.1:1",
            "--proxy-protocol",
            "v1",
            "--mode",
            "http",
        ],
        &[],
        &["--proxy-protocol", "X-Forwarded-For"],
    );
    assert_usage_error(
        &[
            "--upstream",
            "127.0.0.1:1",
            "--connection-idle-timeout",
            "soon",
        ],
        &[],
        &["--connection-idle-timeout", "soon"],
    );
    assert_usage_error(
        &[
            "--upstream",
            "127.0.0.1:1",
            "--upstream-connections-max",
            "0",
        ],
        &[],
        &["--upstream-connections-max", "'0'"],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--ready-cmd", ""],
        &[],
        &["--ready-cmd"],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--ready-notify"],
        &[],
        &["--ready-notify", "COMMAND"],
    );
    let dir = tempdir();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "upstream = \"127.0.0.1:1\"\nupstream-connections-max = -4\n",
    )
    .unwrap();
    assert_usage_error(
        &["--config", file.to_str().unwrap()],
        &[],
        &["upstream-connections-max", "bad.toml", "-4"],
    );
}

#[test]
fn no_sockets_is_a_usage_error() {
    assert_usage_error(
        &["--upstream", "127.0.0.1:1"],
        &[],
        &["no sockets", "--listen"],
    );
    // LISTEN_PID of another process: not activated, as sd_listen_fds decides.
    assert_usage_error(
        &["--upstream", "127.0.0.1:1"],
        &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")],
        &["no sockets"],
    );
}

#[test]
fn bad_config_files_exit_2_naming_the_key() {
    let dir = tempdir();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        "upstream = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:0\"\nidle-timeot = \"5s\"\n",
    )
    .unwrap();
    assert_usage_error(
        &["--config", unknown.to_str().unwrap()],
        &[],
        &["idle-timeot", "unknown.toml:3"],
    );

    let bad_value = dir.path().join("bad.toml");
    std::fs::write(
        &bad_value,
        "upstream = \"127.0.0.1:1\"\nstop-timeout = \"whenever\"\n",
    )
    .unwrap();
    assert_usage_error(
        &["--config", bad_value.to_str().unwrap()],
        &[],
        &["stop-timeout", "whenever", "bad.toml"],
    );

    let not_toml = dir.path().join("broken.toml");
    std::fs::write(&not_toml, "upstream = [\n").unwrap();
    assert_usage_error(
        &["--config", not_toml.to_str().unwrap()],
        &[],
        &["broken.toml"],
    );

    assert_usage_error(
        &["--config", "/nonexistent/idlegate.toml"],
        &[],
        &["--config", "/nonexistent/idlegate.toml"],
    );
}

#[test]
fn flags_override_the_config_file() {
    // Both the file and the flag hold a bad idle timeout: the error names the
    // flag's value, so the flag was the one used.
    let dir = tempdir();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "upstream = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:1\"\nidle-timeout = \"bad\"\n",
    )
    .unwrap();
    let (code, stderr) = run_idlegate(
        &[
            "--config",
            file.to_str().unwrap(),
            "--idle-timeout",
            "also-bad",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--idle-timeout: invalid value 'also-bad'"),
        "{stderr}"
    );
}

#[test]
fn every_example_config_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            idlegate::Config::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "config/ should hold the demo and the reference config"
    );
}

#[test]
fn help_and_version_exit_0() {
    let (code, _) = run_idlegate(&["--help"], &[]);
    assert_eq!(code, Some(0));
    let (code, _) = run_idlegate(&["--version"], &[]);
    assert_eq!(code, Some(0));
}

/// `--wake-on-lan` takes a MAC address and `--wake-on-lan-address` an
/// IP:PORT; the address alone wakes nobody.
#[test]
fn wake_on_lan_mistakes_exit_2_naming_the_flag_or_key() {
    let up = ["--upstream", "127.0.0.1:1"];
    let with = |more: &[&'static str]| [&up[..], more].concat();
    assert_usage_error(
        &with(&["--wake-on-lan", "aa:bb:cc"]),
        &[],
        &["--wake-on-lan", "'aa:bb:cc'", "MAC"],
    );
    assert_usage_error(
        &with(&[
            "--wake-on-lan",
            "aa:bb:cc:dd:ee:ff",
            "--wake-on-lan-address",
            "nas.lan",
        ]),
        &[],
        &["--wake-on-lan-address", "'nas.lan'"],
    );
    assert_usage_error(
        &with(&[
            "--wake-on-lan",
            "aa:bb:cc:dd:ee:ff",
            "--wake-on-lan-address",
            "192.168.1.255:0",
        ]),
        &[],
        &["--wake-on-lan-address", "'192.168.1.255:0'", "port"],
    );
    assert_usage_error(
        &with(&["--wake-on-lan-address", "192.168.1.255:9"]),
        &[],
        &["--wake-on-lan-address", "--wake-on-lan MAC"],
    );
    let dir = tempdir();
    let file = dir.path().join("nas.toml");
    std::fs::write(
        &file,
        "upstream = \"127.0.0.1:1\"\nwake-on-lan = \"aa-bb-cc-dd-ee\"\n",
    )
    .unwrap();
    assert_usage_error(
        &["--config", file.to_str().unwrap()],
        &[],
        &["wake-on-lan in", "nas.toml", "'aa-bb-cc-dd-ee'"],
    );
}

/// A space inside a duration (`--idle-timeout 5 min`): the shell splits it,
/// and the unit is said to be the stray word it is, not an address.
#[test]
fn a_duration_split_by_a_space_is_explained() {
    let said = "a duration takes no space: --idle-timeout 5min";
    assert_usage_error(
        &["--idle-timeout", "5", "min"],
        &[],
        &["`min` was read as the upstream address", said],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:1", "--idle-timeout", "5", "min"],
        &[],
        &["`min` was read as the upstream address", said],
    );
    assert_usage_error(
        &[
            "check",
            "--idle-timeout",
            "1h",
            "30min",
            "--upstream",
            "127.0.0.1:1",
        ],
        &[],
        &["`30min`", "--idle-timeout 1h30min"],
    );
    // The positional UPSTREAM already given: clap finds `s` unexpected.
    assert_usage_error(
        &["127.0.0.1:1", "--start-timeout", "5", "s", "--", "true"],
        &[],
        &["`s`", "a duration takes no space: --start-timeout 5s"],
    );
}

/// The subcommands are clap's: `help`, `help NAME`, `NAME --help`, and
/// `--help` lists them; a positional UPSTREAM and `-- COMMAND` still serve.
#[test]
fn help_lists_and_explains_the_subcommands() {
    for args in [&["--help"][..], &["help"]] {
        let (code, out, err) = run_idlegate_output(args, &[]);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(out.contains("Subcommands:"), "{args:?}: {out}");
        for name in ["check", "units", "status", "inhibit", "generator"] {
            assert!(
                out.contains(&format!("\n  {name} ")),
                "{args:?} lacks {name}: {out}"
            );
        }
        assert!(out.contains("[UPSTREAM] [-- <COMMAND>...]"), "{out}");
    }
    for args in [&["help", "units"][..], &["units", "--help"]] {
        let (code, out, err) = run_idlegate_output(args, &[]);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            out.contains("Usage: idlegate units [OPTIONS] <FILE>"),
            "{out}"
        );
        assert!(out.contains("--idlegate <PATH>"), "{out}");
    }
    let (code, out, _) = run_idlegate_output(&["check", "--help"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--idle-timeout"), "{out}");
    let (code, out, _) = run_idlegate_output(&["inhibit", "--help"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("-- <CMD>..."), "{out}");
    // A subcommand's usage error names it and its usage, one line.
    assert_usage_error(&["units"], &[], &["units: usage: idlegate units", "<FILE>"]);
    assert_usage_error(&["status", "--bogus"], &[], &["status:", "--bogus"]);
    // Not an address: the old wording, not a subcommand's.
    assert_usage_error(&["nowhere"], &[], &["UPSTREAM", "nowhere"]);
}

fn config_error(text: &str, must_contain: &[&str]) {
    let dir = tempdir();
    let file = dir.path().join("f.toml");
    std::fs::write(&file, text).unwrap();
    assert_usage_error(
        &["check", "--config", file.to_str().unwrap()],
        &[],
        must_contain,
    );
}

/// Type errors say what the key takes and what was found, at the file's
/// line and column; a bad duration names its line without parser jargon.
#[test]
fn config_type_errors_say_what_the_key_takes() {
    config_error(
        "upstream = \"127.0.0.1:1\"\nconnections-max = \"many\"\n",
        &[
            "f.toml:2:19: connections-max: expected a whole number",
            "found a string",
        ],
    );
    config_error(
        "upstream = \"127.0.0.1:1\"\ncommand = 5\n",
        &["f.toml:2:11: command: expected a string or a list of strings, found an integer"],
    );
    config_error(
        "upstream = \"127.0.0.1:1\"\nidle-timeout = true\n",
        &[
            "idle-timeout: expected a duration such as \"5min\"",
            "found a boolean",
        ],
    );
    config_error(
        "upstream = \"127.0.0.1:1\"\n[systemd]\nlisten = \"80\"\n",
        &["f.toml:3:10: listen: expected a list", "found a string"],
    );
    let dir = tempdir();
    let file = dir.path().join("f.toml");
    std::fs::write(
        &file,
        "upstream = \"127.0.0.1:1\"\n\nidle-timeout = \"whenever\"\n",
    )
    .unwrap();
    let (code, stderr) = run_idlegate(&["check", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("idle-timeout in "), "{stderr}");
    assert!(
        stderr.contains("f.toml: invalid value 'whenever' on line 3:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("expected a duration such as 5min"),
        "{stderr}"
    );
    for jargon in ["expected number at", "i64", "sequence", "untagged"] {
        assert!(!stderr.contains(jargon), "{stderr}");
    }
}

/// A misspelt key gets a "did you mean"; a top-level key written below a
/// table gets TOML's scoping explained.
#[test]
fn config_key_mistakes_are_explained() {
    config_error(
        "upstream = \"127.0.0.1:1\"\nidle-timeot = \"5s\"\n",
        &["f.toml:2:1: unknown field `idle-timeot`: did you mean `idle-timeout`?"],
    );
    config_error(
        "upstream = \"127.0.0.1:1\"\nmode = \"http\"\n[[answer]]\npath = \"/health\"\nstatus = 200\nidle-timeout = \"5s\"\n",
        &[
            "f.toml:6:1: unknown field `idle-timeout` in [[answer]]",
            "TOML puts every key after a `[[answer]]` header into that table",
            "top-level keys such as `idle-timeout` go above the first table",
        ],
    );
}
