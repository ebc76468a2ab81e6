//! One file puts a service behind idlegate: `idlegate check`, `idlegate
//! units`, the generator, the `[systemd]` table at run time, the manual and
//! the completions. (The generated units under a real systemd are checked by
//! tests/e2e/verify-units.sh and nspawn-deploy.sh.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `check` validates as a start would, prints the settings, and starts,
/// binds and takes nothing: not the backend, not the passed descriptors
/// (LISTEN_FDS names fd 3 of this very process, which is not open).
#[test]
fn check_prints_the_settings_and_starts_nothing() {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let pid_file = dir.path().join("backend.pid");
    let mut argv = vec![
        "check".to_owned(),
        "--upstream".into(),
        backend.clone(),
        "--idle-timeout".into(),
        "3s".into(),
    ];
    argv.extend(backend_command(
        &backend,
        &["--pid-file", pid_file.to_str().unwrap()],
    ));
    let script = "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec \"$0\" \"$@\"";
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(idlegate_bin())
        .args(&argv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("socket 1 -> {backend} (tcp)")),
        "{stdout}"
    );
    assert!(stdout.contains("backend: the command `"), "{stdout}");
    assert!(
        stdout.contains("timeouts: idle 3s, start 1m, stop 10s"),
        "{stdout}"
    );
    assert!(!pid_file.exists(), "check started the backend");
    assert!(
        std::net::TcpListener::bind(&backend).is_ok(),
        "something listens on the backend's port"
    );
}

/// A bad setting: `check` prints the very line a start prints, status 2.
/// `protocol` in an `[[upstream]]` table of the file is that upstream's;
/// the top-level `upstream-protocol` the others'.
#[test]
fn check_shows_each_upstreams_protocol() {
    let dir = tempdir();
    let file = dir.path().join("grpc.toml");
    std::fs::write(
        &file,
        r#"mode = "http"
[[upstream]]
socket = "grpc"
address = "127.0.0.1:50051"
protocol = "h2c"
[[upstream]]
socket = "web"
address = "127.0.0.1:8080"
"#,
    )
    .unwrap();
    let (code, out, err) = run_idlegate_output(&["check", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("socket grpc -> 127.0.0.1:50051 (http, h2c upstream)"),
        "{out}"
    );
    assert!(out.contains("socket web -> 127.0.0.1:8080 (http)"), "{out}");
}

#[test]
fn check_of_a_bad_setting_prints_the_line_a_start_prints_with_status_2() {
    for bad in [
        &["--upstream", "nowhere"][..],
        &["--upstream", "127.0.0.1:1", "--idle-timeout", "soon"],
        &[
            "--upstream",
            "127.0.0.1:1",
            "--waiting-page=/nonexistent/page.html",
        ],
        &[
            "--upstream",
            "127.0.0.1:1",
            "--unit",
            "a.service",
            "--",
            "app",
        ],
    ] {
        let (start_code, start_err) = run_idlegate(bad, &[]);
        let mut check = vec!["check"];
        check.extend_from_slice(bad);
        let (code, stdout, stderr) = run_idlegate_output(&check, &[]);
        assert_eq!((start_code, code), (Some(2), Some(2)), "{bad:?}: {stderr}");
        assert_eq!(stderr, start_err, "{bad:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}

/// Copies `recipe` (deploy/RECIPE/NAME.toml) into a fresh config directory.
fn config_dir_with(files: &[(&str, &str)]) -> std::sync::Arc<tempfile::TempDir> {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("etc").join(name), text).unwrap();
    }
    dir
}

fn generate(dir: &Path) -> (Option<i32>, String, PathBuf) {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let etc = dir.join("etc");
    let (code, _, stderr) = run_idlegate_output(
        &[
            "generator",
            "--config-dir",
            etc.to_str().unwrap(),
            "--idlegate",
            "/usr/bin/idlegate",
            out.to_str().unwrap(),
            "/nonexistent/early",
            "/nonexistent/late",
        ],
        &[],
    );
    (code, stderr, out)
}

/// Every file under `dir`, as relative path -> text (links as `-> target`).
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.file_type().is_symlink() {
                files.push((
                    rel,
                    format!("-> {}", std::fs::read_link(&path).unwrap().display()),
                ));
            } else {
                files.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// The generator writes each good file's units and links, skips a bad file
/// with one line naming it, and exits 0; `units FILE` prints the same units
/// and `check --config FILE` the same error.
#[test]
fn the_generator_writes_good_files_skips_bad_ones_and_exits_0() {
    let tidings = std::fs::read_to_string(repo().join("deploy/tidings/tidings.toml")).unwrap();
    let dir = config_dir_with(&[
        ("tidings.toml", &tidings),
        (
            "broken.toml",
            "upstream = \"127.0.0.1:1\"\n[systemd]\nlisten = [\"80\", \"81\"]\n",
        ),
        (
            "bad@name.toml",
            "upstream = \"127.0.0.1:1\"\n[systemd]\nlisten = [\"82\"]\n",
        ),
        ("README", "not a config file"),
    ]);
    let (code, stderr, out) = generate(dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("bad@name.toml: skipped:"), "{stderr}");
    assert!(
        lines[1].contains("broken.toml: skipped: systemd.listen in ")
            && lines[1].contains("one entry per upstream"),
        "{stderr}"
    );
    let files = tree(&out);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "sockets.target.wants/tidings-control.socket",
            "sockets.target.wants/tidings-https.socket",
            "sockets.target.wants/tidings.socket",
            "tidings-backend.service.d/50-idlegate-tidings.conf",
            "tidings-control.socket",
            "tidings-https.socket",
            "tidings.service",
            "tidings.socket",
        ]
    );

    // `units` prints exactly what the generator wrote.
    let tidings_file = dir.path().join("etc/tidings.toml");
    let (code, printed, stderr) = run_idlegate_output(
        &[
            "units",
            "--idlegate",
            "/usr/bin/idlegate",
            tidings_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    for (name, text) in files.iter().filter(|(_, t)| !t.starts_with("-> ")) {
        assert!(
            printed.contains(&format!("# {name}\n{text}")),
            "{name} differs:\n{printed}"
        );
    }

    // `check` reports the skipped file's error, with status 2.
    let broken = dir.path().join("etc/broken.toml");
    let (code, _, stderr) =
        run_idlegate_output(&["check", "--config", broken.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2));
    assert!(
        lines[1].ends_with(stderr.trim().strip_prefix("idlegate: ").unwrap()),
        "{stderr}"
    );
}

/// A unit file's directives, by section, without comments, and without
/// what differs by design between the two forms: the description and
/// documentation, how the settings reach idlegate (ExecStart=,
/// Environment=IDLEGATE_…), the runtime directory's name, and [Install]
/// (the generator links instead). RestrictAddressFamilies= lines, which
/// add up, are merged into one.
fn directives(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut set = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let key = line.split('=').next().unwrap_or("");
        let by_design = [
            "Description",
            "SourcePath",
            "ExecStart",
            "RuntimeDirectory",
            "WantedBy",
        ];
        if by_design.contains(&key) || line.starts_with("Environment=IDLEGATE_") {
            continue;
        }
        if key == "RestrictAddressFamilies" {
            // Lines of this list add up (systemd.exec(5)).
            families.extend(
                line["RestrictAddressFamilies=".len()..]
                    .split_whitespace()
                    .map(str::to_owned),
            );
            continue;
        }
        set.insert(format!("{section} {line}"));
    }
    if !families.is_empty() {
        let families: Vec<String> = families.into_iter().collect();
        set.insert(format!(
            "[Service] RestrictAddressFamilies={}",
            families.join(" ")
        ));
    }
    set
}

/// The one-file form of each deploy/ recipe makes the units the recipe
/// spells out by hand (directive for directive, but for what differs by
/// design), and the tidings backend's drop-in gives the Quadlet container
/// the [Unit] lines the hand-written form puts in its .container file.
#[test]
fn the_one_file_forms_match_the_hand_written_units() {
    let deploy = repo().join("deploy");
    // The one-file form, its name in /etc/idlegate, and (generated, hand-written) unit pairs.
    type Recipe<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let recipes: [Recipe; 3] = [
        (
            "tidings/tidings.toml",
            "tidings.toml",
            &[
                ("tidings.socket", "tidings/tidings.socket"),
                ("tidings-https.socket", "tidings/tidings-https.socket"),
                ("tidings-control.socket", "tidings/tidings-control.socket"),
                ("tidings.service", "tidings/tidings.service"),
            ],
        ),
        (
            "process/tidings.toml",
            "tidings.toml",
            &[
                ("tidings.socket", "tidings/tidings.socket"),
                ("tidings-https.socket", "tidings/tidings-https.socket"),
                ("tidings-control.socket", "tidings/tidings-control.socket"),
                ("tidings.service", "process/tidings.service"),
            ],
        ),
        (
            "dns/dns-on-demand.toml",
            "dns-on-demand.toml",
            &[
                ("dns-on-demand.socket", "dns/dns-on-demand.socket"),
                (
                    "dns-on-demand-control.socket",
                    "dns/dns-on-demand-control.socket",
                ),
                ("dns-on-demand.service", "dns/dns-on-demand.service"),
            ],
        ),
    ];
    for (source, name, pairs) in recipes {
        let text = std::fs::read_to_string(deploy.join(source)).unwrap();
        let dir = config_dir_with(&[(name, &text)]);
        let (code, stderr, out) = generate(dir.path());
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "{source}");
        for (generated, hand) in pairs.iter() {
            let generated_text = std::fs::read_to_string(out.join(generated)).unwrap();
            let hand_text = std::fs::read_to_string(deploy.join(hand)).unwrap();
            let (g, h) = (directives(&generated_text), directives(&hand_text));
            let missing: Vec<_> = h.difference(&g).collect();
            let extra: Vec<_> = g.difference(&h).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{source} -> {generated} against deploy/{hand}: missing {missing:?}, extra {extra:?}"
            );
        }
    }
    let text = std::fs::read_to_string(deploy.join("tidings/tidings.toml")).unwrap();
    let dir = config_dir_with(&[("tidings.toml", &text)]);
    let (_, _, out) = generate(dir.path());
    let drop_in = directives(
        &std::fs::read_to_string(out.join("tidings-backend.service.d/50-idlegate-tidings.conf"))
            .unwrap(),
    );
    let container = directives(
        &std::fs::read_to_string(deploy.join("tidings/tidings-backend.container")).unwrap(),
    );
    for line in &drop_in {
        assert!(
            container.contains(line),
            "{line} is not in tidings-backend.container"
        );
    }
}

/// Every generated service has a control socket (`idlegate inhibit`):
/// `NAME-control.socket`, a Unix socket named `control` beside the runtime
/// directory (in the user's `%t` for a user's manager), root's or the
/// user's only, among the service's sockets, and linked with `enable`.
#[test]
fn the_generated_units_have_a_control_socket() {
    let tidings = std::fs::read_to_string(repo().join("deploy/tidings/tidings.toml")).unwrap();
    let dir = config_dir_with(&[("tidings.toml", &tidings)]);
    let file = dir.path().join("etc/tidings.toml");
    for (scope, path) in [
        ("--system", "/run/idlegate/tidings.control"),
        ("--user", "%t/idlegate/tidings.control"),
    ] {
        let (code, printed, stderr) =
            run_idlegate_output(&["units", scope, file.to_str().unwrap()], &[]);
        assert_eq!(code, Some(0), "{scope}: {stderr}");
        let unit = |name: &str| -> BTreeSet<String> {
            let start = printed
                .find(&format!("# {name}\n"))
                .unwrap_or_else(|| panic!("{scope}: no {name}:\n{printed}"));
            let text = &printed[start..];
            // Each file is printed as "# NAME\nTEXT\n", TEXT ending in a newline.
            let end = text.find("\n\n# ").map_or(text.len(), |e| e + 1);
            directives(&text[..end])
        };
        let control = unit("tidings-control.socket");
        let want: BTreeSet<String> = [
            format!("[Socket] ListenStream={path}"),
            "[Socket] FileDescriptorName=control".to_owned(),
            "[Socket] Service=tidings.service".to_owned(),
            "[Socket] SocketMode=0600".to_owned(),
        ]
        .into();
        assert_eq!(control, want, "{scope}");
        let service = unit("tidings.service");
        let sockets = "tidings.socket tidings-https.socket tidings-control.socket";
        for line in [
            format!("[Unit] Requires={sockets}"),
            format!("[Unit] After={sockets}"),
            format!("[Service] Sockets={sockets}"),
        ] {
            assert!(service.contains(&line), "{scope}: {line} in {service:?}");
        }
        assert!(
            printed.contains(
                "# sockets.target.wants/tidings-control.socket -> ../tidings-control.socket\n"
            ),
            "{scope}: enable = true links the control socket too"
        );
    }
}

/// idlegate accepts the `[systemd]` table and ignores it when it runs.
#[test]
fn a_file_with_a_systemd_table_serves_as_usual() {
    let dir = tempdir();
    let backend = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("app.toml");
    let command: Vec<String> = backend_command(&backend, &[]).split_off(1);
    std::fs::write(
        &config,
        format!(
            "upstream = \"{backend}\"\nidle-timeout = \"1s\"\ncommand = {command:?}\n\n[systemd]\nlisten = [\"80\"]\nuser = \"nobody\"\nenable = true\nservice = [\"StateDirectory=app\"]\n"
        ),
    )
    .unwrap();
    let act = ActivatorBuilder::new(dir, &args(&["--config", config.to_str().unwrap()]))
        .tcp("http")
        .start();
    let answer = exchange_str(act.tcp_addrs[0], "hello").unwrap();
    assert!(answer.contains("hello"), "{answer:?}\n{}", act.log());
    act.wait_exit_0(1, PATIENCE);
}

/// The manual covers every flag `--help` lists, the exit statuses, the
/// environment, the config keys and the `[systemd]` table.
#[test]
fn the_manual_names_every_flag_of_help() {
    let (code, help, _) = run_idlegate_output(&["--help"], &[]);
    assert_eq!(code, Some(0));
    let (code, man, stderr) = run_idlegate_output(&["--generate", "man"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let man = man.replace("\\-", "-");
    let options = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .collect::<Vec<_>>()
        .join(" ");
    let mut flags: Vec<&str> = options
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split(['=', '<']).next().unwrap())
        .collect();
    flags.sort();
    flags.dedup();
    assert!(flags.len() > 25, "{flags:?}");
    for flag in flags {
        assert!(man.contains(flag), "the manual lacks {flag}");
    }
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH \"CONFIGURATION FILE\"",
        ".SH \"THE [systemd] TABLE\"",
        ".SH EXAMPLES",
        "idle-timeout = ",
        "backend-unit",
    ] {
        assert!(man.contains(section), "the manual lacks {section}");
    }
}

#[test]
fn completions_are_made_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("complete-bash", "complete -F _idlegate"),
        ("complete-zsh", "#compdef idlegate"),
        (
            "complete-fish",
            "complete -c idlegate -n \"__fish_idlegate_needs_command\" -l idle-timeout",
        ),
    ] {
        let (code, out, stderr) = run_idlegate_output(&["--generate", shell], &[]);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(out.contains(marker), "{shell}: {out}");
    }
    // The subcommands are completed too, with their own flags.
    let (_, bash, _) = run_idlegate_output(&["--generate", "complete-bash"], &[]);
    for word in [
        "check",
        "units",
        "status",
        "inhibit",
        "generator",
        "--state-file",
    ] {
        assert!(bash.contains(word), "complete-bash lacks {word}");
    }
    let (code, err) = run_idlegate(&["--generate", "tcsh"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--generate"), "{err}");
}

/// `check` shows the busy command and each answer rule.
#[test]
fn check_shows_the_busy_command_and_the_answer_rules() {
    let dir = tempdir();
    let file = dir.path().join("wake.toml");
    std::fs::write(
        &file,
        r#"upstream = "127.0.0.1:8080"
mode = "http"
busy-cmd = "pgrep -x ffmpeg"

[[answer]]
path = "/health"
source = "10.0.0.0/8"
status = 200

[[answer]]
path-prefix = "/robots"
user-agent = ["bot", "crawl"]
when = "always"
"#,
    )
    .unwrap();
    let (code, out, err) = run_idlegate_output(&["check", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    for line in [
        "busy command: `pgrep -x ffmpeg`, asked when the idle timer fires",
        "answer: any method /health from 10.0.0.0/8 -> 200 while the backend is asleep",
        "answer: any method /robots* with a User-Agent containing bot or crawl -> 503 always",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let (code, out, _) = run_idlegate_output(
        &["check", "--upstream", "127.0.0.1:1", "--busy-cmd", "true"],
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("busy command: `true`"), "{out}");
}

/// A container backend behind a generated service (a dynamic user) with an
/// engine socket only root can open: `check` warns, naming the fix, and
/// still exits 0; a world-writable socket or `[systemd] user` is no warning.
#[test]
fn check_warns_when_the_dynamic_user_cannot_open_the_engine_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let socket = dir.path().join("engine.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let file = dir.path().join("web.toml");
    let write = |user: &str| {
        std::fs::write(
            &file,
            format!(
                "upstream = \"127.0.0.1:8080\"\ncontainer = \"web\"\nengine-socket = \"{}\"\n\n[systemd]\nlisten = [\"8080\"]\n{user}",
                socket.display()
            ),
        )
        .unwrap();
    };
    let check = || run_idlegate_output(&["check", "--config", file.to_str().unwrap()], &[]);

    write("");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    let (code, out, err) = check();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("warning: the generated service runs as a dynamic user"),
        "{err}"
    );
    assert!(err.contains(&socket.display().to_string()), "{err}");
    assert!(err.contains("mode 0660"), "{err}");
    assert!(err.contains("user = \"root\""), "{err}");

    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, _, err) = check();
    assert_eq!(code, Some(0));
    assert!(!err.contains("warning"), "{err}");

    write("user = \"root\"\n");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = check();
    assert_eq!(code, Some(0));
    assert!(!err.contains("warning"), "{err}");
}

/// `config/office.toml` (docs/guides/schedules.md): `check` names the awake
/// timer and each window's start as systemd reads it; the generator writes
/// the timer and its service and starts the timer at boot; a bad window
/// exits 2 with one line naming the key and the value, and the generator
/// skips the file with the same line.
#[test]
fn awake_windows_are_checked_shown_and_generated() {
    let office = repo().join("config/office.toml");
    let (code, out, err) =
        run_idlegate_output(&["check", "--config", office.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("office-awake.timer, office-awake.service"),
        "{out}"
    );
    assert!(
        out.contains("awake: Mon..Fri 07:50..18:00: office-awake.timer wakes the service at OnCalendar=Mon..Fri *-*-* 07:50:00 and holds it to the end; started at boot"),
        "{out}"
    );
    let text = std::fs::read_to_string(&office).unwrap();
    let dir = config_dir_with(&[("office.toml", &text)]);
    let (code, stderr, out) = generate(dir.path());
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let files: Vec<(String, String)> = tree(&out);
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    for name in [
        "office-awake.timer",
        "office-awake.service",
        "timers.target.wants/office-awake.timer",
    ] {
        assert!(names.contains(&name), "{name}: {names:?}");
    }
    let bad = text.replace("07:50..18:00", "07:50-18:00");
    let dir = config_dir_with(&[("office.toml", &bad)]);
    let file = dir.path().join("etc/office.toml");
    let (code, _, check) = run_idlegate_output(&["check", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{check}");
    assert_eq!(check.lines().count(), 1, "{check}");
    assert!(
        check.contains("systemd.awake in ") && check.contains("'Mon..Fri 07:50-18:00'"),
        "{check}"
    );
    let (code, skipped, out) = generate(dir.path());
    assert_eq!(code, Some(0));
    assert!(
        skipped.contains(check.trim_start_matches("idlegate: ").trim_end()),
        "{skipped}"
    );
    assert!(tree(&out).is_empty());
}
