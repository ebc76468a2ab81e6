//! The guides' configs run as written. Here the Docker guide's (docs/guides/
//! docker.md): its `docker create` and its `/etc/idlegate/jellyfin.toml`,
//! taken from the markdown, against the test run's private dockerd, with
//! only what must differ in a test replaced: the container's name, image and
//! volumes, the published port, the engine socket, and the idle timeout. The
//! process and PostgreSQL guides run under the real systemd in
//! tests/e2e/deploy-guides.sh.

use std::path::Path;
use std::time::Duration;

use crate::support::engine::{gets_the_page, Engine};
use crate::support::podman::IMAGE;

/// The fenced block that follows `<!-- guide: MARK -->` in docs/guides/GUIDE.
fn guide_block(guide: &str, mark: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/guides")
        .join(guide);
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- guide: {mark} -->");
    let after = text
        .split_once(&marker)
        .unwrap_or_else(|| panic!("{} has no {marker}", path.display()))
        .1;
    let body = after
        .trim_start()
        .split_once('\n')
        .filter(|(fence, _)| fence.starts_with("```"))
        .unwrap_or_else(|| panic!("{marker} in {guide} is not followed by a fenced block"))
        .1;
    body.split_once("\n```")
        .unwrap_or_else(|| panic!("the block after {marker} in {guide} is not closed"))
        .0
        .to_owned()
}

/// `text` with `from` replaced by `to`, which the guide must still say.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the guide no longer says {from:?}: the test's substitutions need an update\n{text}"
    );
    text.replace(from, to)
}

/// The words of the guide's `docker create` (one command, lines joined at
/// a trailing backslash, no quoting), the program name left out.
fn create_args(block: &str) -> Vec<String> {
    let line = block.replace("\\\n", " ");
    assert!(
        !line.contains(['\'', '"', '\n']),
        "not one command without quotes: {block}"
    );
    let mut words = line.split_whitespace().map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some("docker"), "{block}");
    words.collect()
}

/// The guide's container is created as it says (its restart policy, init,
/// no healthcheck, the published port moved to 127.0.0.1), and its config
/// starts it on the first request, waits for `/health` (`ready-cmd`),
/// answers, and stops it at the idle timeout with SIGTERM passed on by the
/// init (exit status 143; the image's PID 1 ignores SIGTERM, so without
/// `--init` the stop would end in SIGKILL, 137).
#[test]
fn the_docker_guides_container_and_config_run_against_dockerd() {
    let Some(engine) = Engine::docker() else {
        return;
    };
    let f = engine.container("guide");
    let (name, port) = (f.c.name.as_str(), f.port.to_string());

    let mut create = guide_block("docker.md", "docker-create");
    create = replaced(&create, "--name jellyfin", &format!("--name {name}"));
    create = replaced(
        &create,
        "-p 127.0.0.1:8097:8096",
        &format!("-p 127.0.0.1:{port}:8080"),
    );
    create = replaced(&create, "jellyfin/jellyfin:latest", IMAGE);
    for host in ["/srv/jellyfin/config", "/srv/jellyfin/cache", "/srv/media"] {
        let here = f.dir.path().join(host.trim_start_matches('/'));
        std::fs::create_dir_all(&here).unwrap();
        create = replaced(
            &create,
            &format!("{host}:"),
            &format!("{}:", here.display()),
        );
    }
    let words = create_args(&create);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    engine.ok(&words);
    assert_eq!(
        engine
            .inspect(name, "{{.HostConfig.RestartPolicy.Name}}")
            .as_deref(),
        Some("no")
    );

    let mut config = guide_block("docker.md", "docker-toml");
    config = replaced(
        &config,
        "container = \"jellyfin\"",
        &format!("container = \"{name}\""),
    );
    config = replaced(
        &config,
        "engine-socket = \"/var/run/docker.sock\"",
        &format!("engine-socket = \"{}\"", f.api.socket.display()),
    );
    config = replaced(&config, "127.0.0.1:8097", &format!("127.0.0.1:{port}"));
    config = replaced(&config, "idle-timeout = \"30min\"", "idle-timeout = \"2s\"");
    let file = f.dir.path().join("jellyfin.toml");
    std::fs::write(&file, &config).unwrap();

    let act = f.activate(&["--config".to_owned(), file.to_str().unwrap().to_owned()]);
    assert_eq!(engine.status(name).as_deref(), Some("created"));
    gets_the_page(&act);
    assert_eq!(
        engine.status(name).as_deref(),
        Some("running"),
        "{}",
        act.log()
    );
    act.wait_exit_0(1, Duration::from_secs(60));
    assert_eq!(
        engine.status(name).as_deref(),
        Some("exited"),
        "{}",
        act.log()
    );
    assert_eq!(
        engine.inspect(name, "{{.State.ExitCode}}").as_deref(),
        Some("143"),
        "the init passed SIGTERM on; {}",
        act.log()
    );
    let log = act.log();
    for line in [
        format!("starting container {name}"),
        format!("stopping container {name}"),
        "idle for 2s: stopping the backend and exiting".to_owned(),
    ] {
        assert!(log.contains(&line), "{line:?} not in the log:\n{log}");
    }
}
