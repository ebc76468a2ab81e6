//! The config's unit tests: flags over keys, the file forms, and
//! every setting's validation.

use super::file::parse_file;
use super::*;
use clap::Parser;

/// Fuzz-style: the reference and demo configs, mutated thousands of
/// times, each read and validated in full: errors are fine, panics not.
#[test]
fn mutated_config_files_never_panic() {
    let seeds = [
        include_str!("../../config/reference.toml"),
        include_str!("../../config/demo.toml"),
        "[[upstream]]\naddress = \"127.0.0.1:1\"\nsocket = \"http\"\nmode = \"http\"\n",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.toml");
    let mut noise = crate::fuzz_support::Noise::new(0xC0F1);
    for i in 0..3_000 {
        let text = noise.mutate(seeds[i % seeds.len()]);
        std::fs::write(&path, &text).unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            ..Cli::default()
        };
        if let Err(e) = Config::from_cli(cli) {
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("idlegate").chain(args.iter().copied())).unwrap()
}

#[test]
fn durations() {
    assert_eq!(
        parse_duration("30s").unwrap(),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_duration("5min").unwrap(),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        parse_duration("300ms").unwrap(),
        Some(Duration::from_millis(300))
    );
    assert_eq!(parse_duration("7").unwrap(), Some(Duration::from_secs(7)));
    assert_eq!(parse_duration("0").unwrap(), None);
    assert_eq!(parse_duration("infinity").unwrap(), None);
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("").is_err());
}

/// Found by `fuzz/run.sh`: a quoted value with an escaped newline was
/// echoed as it is, and the error took two lines.
#[test]
fn an_error_naming_a_value_with_a_newline_stays_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nl.toml");
    std::fs::write(&path, "upstream = \"127..00ar\\\\\\n conpppppp\"\n").unwrap();
    let e = Config::from_file(&path).unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("\\n conpppppp"), "{e}");
}

#[test]
fn defaults_and_flags() {
    let c = Config::from_cli(cli(&["--upstream", "127.0.0.1:1"])).unwrap();
    assert_eq!(c.timeouts.idle, Some(DEFAULT_IDLE_TIMEOUT));
    assert_eq!(c.timeouts.start, DEFAULT_START_TIMEOUT);
    assert_eq!(c.timeouts.stop, DEFAULT_STOP_TIMEOUT);
    assert_eq!(c.sockets.connections_max, DEFAULT_CONNECTIONS_MAX);
    assert_eq!(c.backend.run, Run::External);

    let c = Config::from_cli(cli(&[
        "--exit-idle-time=3s",
        "-c",
        "7",
        "127.0.0.1:9",
        "--",
        "app",
        "--port",
        "9",
    ]))
    .unwrap();
    assert_eq!(c.timeouts.idle, Some(Duration::from_secs(3)));
    assert_eq!(c.sockets.connections_max, 7);
    assert_eq!(c.sockets.upstreams[0].address.to_string(), "127.0.0.1:9");
    assert_eq!(c.backend.run, Run::Command(args(&["app", "--port", "9"])));
}

#[test]
fn waiting_page_bare_or_with_a_template() {
    for words in [
        &["--waiting-page", "127.0.0.1:9", "--", "app"][..],
        &["--waiting-page", "--upstream", "127.0.0.1:9"],
        &["--upstream", "127.0.0.1:9", "--waiting-page", "--", "app"],
        &["127.0.0.1:9", "--waiting-page", "--", "app"],
    ] {
        let c = Config::from_cli(cli(words)).unwrap();
        assert!(c.http.waiting_page.is_some(), "{words:?}");
        assert_eq!(c.http.waiting_page_template, None, "{words:?}");
        assert_eq!(c.sockets.upstreams[0].address.to_string(), "127.0.0.1:9");
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    std::fs::write(&page, "<p>{{progress}}</p>").unwrap();
    let flag = format!("--waiting-page={}", page.display());
    for words in [
        &[&flag, "127.0.0.1:9"][..],
        &["--waiting-page", page.to_str().unwrap(), "127.0.0.1:9"],
        &[
            "--upstream",
            "127.0.0.1:9",
            "--waiting-page",
            page.to_str().unwrap(),
        ],
    ] {
        let c = Config::from_cli(cli(words)).unwrap();
        assert!(c.http.waiting_page.is_some(), "{words:?}");
        assert_eq!(
            c.http.waiting_page_template.as_deref(),
            Some("<p>{{progress}}</p>"),
            "{words:?}"
        );
    }

    let missing = dir.path().join("missing.html");
    let flag = format!("--waiting-page={}", missing.display());
    let e = Config::from_cli(cli(&[&flag, "127.0.0.1:9"]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--waiting-page: invalid value"), "{e}");
    assert!(e.contains("missing.html") && !e.contains('\n'), "{e}");

    let conf = dir.path().join("c.toml");
    let key = format!(
        "upstream = \"127.0.0.1:9\"\nwaiting-page = {:?}\n",
        page.display().to_string()
    );
    std::fs::write(&conf, key).unwrap();
    let c = Config::from_file(&conf).unwrap();
    assert_eq!(
        c.http.waiting_page_template.as_deref(),
        Some("<p>{{progress}}</p>")
    );
    std::fs::write(
        &conf,
        "upstream = \"127.0.0.1:9\"\nwaiting-page = \"/nope/x.html\"\n",
    )
    .unwrap();
    let e = Config::from_file(&conf).unwrap_err().to_string();
    assert!(e.starts_with("waiting-page in "), "{e}");
    std::fs::write(&conf, "upstream = \"127.0.0.1:9\"\nwaiting-page = true\n").unwrap();
    let c = Config::from_file(&conf).unwrap();
    assert!(c.http.waiting_page.is_some() && c.http.waiting_page_template.is_none());
}

#[test]
fn the_service_name_from_the_flag_or_the_key_never_empty() {
    let c = Config::from_cli(cli(&["--name", " Photos ", "127.0.0.1:9"])).unwrap();
    assert_eq!(c.http.service_name.as_deref(), Some("Photos"));
    let c = Config::from_cli(cli(&["127.0.0.1:9"])).unwrap();
    assert_eq!(c.http.service_name, None);
    let e = Config::from_cli(cli(&["--name", " ", "127.0.0.1:9"]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--name: invalid value"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, "upstream = \"127.0.0.1:9\"\nname = \"Photos\"\n").unwrap();
    let c = Config::from_file(&conf).unwrap();
    assert_eq!(c.http.service_name.as_deref(), Some("Photos"));
}

#[test]
fn a_flag_given_twice_takes_the_last_value_and_lists_append() {
    let c = Config::from_cli(cli(&[
        "--upstream",
        "127.0.0.1:1",
        "--upstream",
        "127.0.0.1:2",
        "--idle-timeout",
        "1s",
        "--idle-timeout",
        "2s",
    ]))
    .unwrap();
    assert_eq!(c.timeouts.idle, Some(Duration::from_secs(2)));
    assert_eq!(c.sockets.upstreams.len(), 2);
}

#[test]
fn errors_name_the_flag_and_value() {
    let e = Config::from_cli(cli(&[
        "--upstream",
        "127.0.0.1:1",
        "--idle-timeout",
        "soon",
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("--idle-timeout: invalid value 'soon'"), "{e}");
    let e = Config::from_cli(cli(&["--upstream", "nowhere"]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--upstream: invalid value 'nowhere'"), "{e}");
    let e = Config::from_cli(cli(&["--upstream", "127.0.0.1:1", "-c", "0"]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--connections-max: invalid value '0'"), "{e}");
    let e = Config::from_cli(cli(&["--upstream", "127.0.0.1:1", "--start-timeout", "0"]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--start-timeout"), "{e}");
    let e = Config::from_cli(cli(&[])).unwrap_err().to_string();
    assert!(e.starts_with("--upstream: missing"), "{e}");
}

#[test]
fn file_keys_and_unknown_keys() {
    let path = Path::new("x.toml");
    let file = parse_file(
        "upstream = \"127.0.0.1:5\"\nidle-timeout = 0\ncommand = [\"sleep\", \"9\"]\n",
        path,
    )
    .unwrap();
    let c = Config::merge(cli(&["--idle-timeout", "2s"]), file, path).unwrap();
    assert_eq!(
        c.timeouts.idle,
        Some(Duration::from_secs(2)),
        "the flag wins over the file"
    );
    assert_eq!(c.backend.run, Run::Command(args(&["sleep", "9"])));

    let e = parse_file("upstream = \"127.0.0.1:5\"\n\nbogus = 1\n", path)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("x.toml:3:1: unknown field `bogus`"), "{e}");
    assert!(!e.contains('\n'));

    let file = parse_file(
        "upstream = \"127.0.0.1:5\"\nstop-timeout = \"fast\"\n",
        path,
    )
    .unwrap();
    let e = Config::merge(Cli::default(), file, path)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("stop-timeout in x.toml: invalid value 'fast'"),
        "{e}"
    );
}

/// How the backend is run, from a file `x.toml` with `text` and `flags`.
fn run(text: &str, flags: &[&str]) -> Result<Run, ConfigError> {
    let path = Path::new("x.toml");
    let file = parse_file(&format!("upstream = \"127.0.0.1:5\"\n{text}"), path).unwrap();
    Config::merge(cli(flags), file, path).map(|c| c.backend.run)
}

#[test]
fn containers_and_units_are_groups_in_the_order_given() {
    let containers = |names: &[&str]| Run::Container {
        names: args(names),
        engine: None,
        engine_insecure: false,
        idle_action: IdleAction::Stop,
        lease_dir: None,
    };
    assert_eq!(
        run("container = \"web\"\n", &[]).unwrap(),
        containers(&["web"])
    );
    assert_eq!(
        run("container = [\"db\", \"app\"]\n", &[]).unwrap(),
        containers(&["db", "app"])
    );
    assert_eq!(
        run(
            "container = \"x\"\n",
            &["--container", "db", "--container", "app"]
        )
        .unwrap(),
        containers(&["db", "app"]),
        "the flags replace the file's list"
    );
    assert_eq!(
        run("unit = [\"a.service\", \"b.service\"]\n", &[]).unwrap(),
        Run::Unit(args(&["a.service", "b.service"]))
    );
    assert_eq!(
        run("", &["--unit", "a.service"]).unwrap(),
        Run::Unit(args(&["a.service"]))
    );
    let e = run("", &["--container", "db", "--container", "db"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("given twice"), "{e}");
    let e = run("", &["--container", "db", "--unit", "a.service"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--container and --unit"), "{e}");
}

#[test]
fn a_swarm_service_is_a_backend_kind_of_its_own() {
    let swarm = |replicas: u64, socket: Option<&str>| Run::Swarm {
        service: "web".into(),
        replicas,
        engine: socket.map(|s| EngineAddress::Unix(s.into())),
        engine_insecure: false,
    };
    assert_eq!(
        run("swarm-service = \"web\"\n", &[]).unwrap(),
        swarm(1, None)
    );
    assert_eq!(
        run(
            "swarm-service = \"web\"\nswarm-replicas = 3\nengine-socket = \"/d.sock\"\n",
            &[]
        )
        .unwrap(),
        swarm(3, Some("/d.sock"))
    );
    assert_eq!(
        run("", &["--swarm-service", "web", "--swarm-replicas", "2"]).unwrap(),
        swarm(2, None)
    );
    let error = |text: &str, flags: &[&str]| run(text, flags).unwrap_err().to_string();
    let e = error("swarm-service = \"web\"\n", &["--container", "db"]);
    assert!(e.contains("--container and --swarm-service"), "{e}");
    let e = error("", &["--swarm-service", "web", "--", "app"]);
    assert!(e.contains("COMMAND and --swarm-service"), "{e}");
    let e = error("swarm-replicas = 2\n", &[]);
    assert!(e.contains("--swarm-replicas needs --swarm-service"), "{e}");
    let e = error("swarm-service = \"web\"\nswarm-replicas = 0\n", &[]);
    assert!(e.starts_with("swarm-replicas in x.toml"), "{e}");
    let e = error("", &["--swarm-service", "web", "--idle-action", "pause"]);
    assert!(e.contains("--idle-action needs --container"), "{e}");
    let e = error("engine-socket = \"/d.sock\"\n", &[]);
    assert!(
        e.contains("--engine/--engine-socket needs --container NAME or --swarm-service NAME"),
        "{e}"
    );
}

/// `check`'s warning: a dynamic user and an engine socket it cannot open.
#[test]
fn a_dynamic_user_and_a_root_only_engine_socket_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.toml");
    let config = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Config::from_file_with(&path, Names::Keep).unwrap()
    };
    let docker = "upstream = \"127.0.0.1:1\"\ncontainer = \"web\"\nengine-socket = \"/var/run/docker.sock\"\n";
    let root_only = |_: &Path| Some((0, 0o140660));
    let open = |_: &Path| Some((0, 0o140666));
    let generated = config(&format!("{docker}[systemd]\nlisten = [\"80\"]\n"));
    let warnings = generated.warnings(root_only);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("/var/run/docker.sock (owner root, mode 0660)"),
        "{warnings:?}"
    );
    assert!(generated.warnings(open).is_empty());
    assert!(
        generated.warnings(|_: &Path| None).is_empty(),
        "no socket, no warning"
    );
    let as_root = config(&format!("{docker}[systemd]\nuser = \"root\"\n"));
    assert!(as_root.warnings(root_only).is_empty());
    assert!(
        config(docker).warnings(root_only).is_empty(),
        "not a generated service"
    );
    let command = config("upstream = \"127.0.0.1:1\"\ncommand = [\"/usr/bin/docker\", \"run\", \"web\"]\n[systemd]\n");
    assert!(command.warnings(root_only)[0].contains("/var/run/docker.sock"));
    let podman =
        config("upstream = \"127.0.0.1:1\"\nstart-cmd = \"podman start web\"\n[systemd]\n");
    assert!(podman.warnings(root_only)[0].contains("/run/podman/podman.sock"));
}

#[test]
fn the_engine_is_a_url_or_a_socket_not_both() {
    use crate::backend::kinds::engine::EngineAddress;
    let path = Path::new("x.toml");
    let resolve = |text: &str, flags: &[&str]| {
        let file = parse_file(&format!("upstream = \"127.0.0.1:5\"\n{text}"), path).unwrap();
        Config::merge(cli(flags), file, path).map_err(|e| e.to_string())
    };
    let engine = |c: Config| match c.backend.run {
        Run::Container { engine, .. } => engine,
        other => panic!("{other:?}"),
    };
    let c = resolve(
        "container = \"web\"\nengine = \"tcp://nas:2376\"\nengine-tls-dir = \"/etc/certs\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        engine(c),
        Some(EngineAddress::Tcp {
            host: "nas".into(),
            port: 2376,
            tls: Some("/etc/certs".into())
        })
    );
    let c = resolve("container = \"web\"\n", &["--engine-socket", "/s.sock"]).unwrap();
    assert_eq!(engine(c), Some(EngineAddress::Unix("/s.sock".into())));
    let e = resolve(
        "container = \"web\"\nengine-socket = \"/s.sock\"\n",
        &["--engine", "unix:///t.sock"],
    )
    .unwrap_err();
    assert!(e.contains("--engine and --engine-socket"), "{e}");
    let e = resolve("container = \"web\"\nengine = \"ftp://nas\"\n", &[]).unwrap_err();
    assert!(
        e.starts_with("engine in x.toml: invalid value 'ftp://nas'"),
        "{e}"
    );
    let e = resolve("container = \"web\"\n", &["--engine-tls-dir", "/c"]).unwrap_err();
    assert!(e.contains("TLS needs a tcp:// engine"), "{e}");
    let e = resolve("", &["--engine-insecure"]).unwrap_err();
    assert_eq!(
        e,
        "--engine-insecure needs --container NAME or --swarm-service NAME"
    );
}

/// `--cancel-abandoned-start` and `--hold-max`: off by default, from the
/// flags over the file, a bad value named by its flag or key, and told by
/// `idlegate check`.
#[test]
fn start_limits_from_the_flags_and_the_file() {
    let c = Config::from_cli(cli(&["127.0.0.1:9"])).unwrap();
    assert_eq!(c.backend.cancel_abandoned_start, None);
    assert_eq!(c.backend.hold_max, None);
    assert!(!c.summary().contains("while starting"), "{}", c.summary());

    let c = Config::from_cli(cli(&[
        "--cancel-abandoned-start",
        "30s",
        "--hold-max",
        "3",
        "127.0.0.1:9",
    ]))
    .unwrap();
    assert_eq!(
        c.backend.cancel_abandoned_start,
        Some(Duration::from_secs(30))
    );
    assert_eq!(c.backend.hold_max, Some(3));
    let spec = c.backend_spec();
    assert_eq!(spec.cancel_abandoned_start, Some(Duration::from_secs(30)));
    assert_eq!(spec.hold_max, Some(3));
    let summary = c.summary();
    assert!(
        summary.contains("while starting: at most 3 client(s) held")
            && summary.contains("a start nobody waited for 30s is cancelled"),
        "{summary}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    std::fs::write(
        &path,
        "upstream = \"127.0.0.1:9\"\ncancel-abandoned-start = \"2min\"\nhold-max = 10\n",
    )
    .unwrap();
    let c = Config::from_file(&path).unwrap();
    assert_eq!(
        c.backend.cancel_abandoned_start,
        Some(Duration::from_secs(120))
    );
    assert_eq!(c.backend.hold_max, Some(10));

    std::fs::write(&path, "upstream = \"127.0.0.1:9\"\nhold-max = 0\n").unwrap();
    let e = Config::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("hold-max") && e.contains("at least 1"), "{e}");
    let e = Config::from_cli(cli(&["--cancel-abandoned-start", "soon", "127.0.0.1:9"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--cancel-abandoned-start"), "{e}");
}
