//! A backend command that is `podman run …` or `docker run …`: the process
//! idlegate supervises is only the engine's client, and when that client is
//! killed (its container's PID 1 ignored SIGTERM, or idlegate itself was
//! SIGKILLed) the container goes on running. This module finds such a
//! container by its `--name` and removes it, saying so loudly.

use std::time::Duration;

/// How long an engine CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// A `podman run` / `docker run` command line, as far as idlegate needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCommand {
    /// The engine program, as given (`podman`, `/usr/bin/docker`).
    engine: String,
    /// The container's `--name`, if given.
    name: Option<String>,
    /// Whether `--replace` is given (podman then removes an old container itself).
    replace: bool,
}

impl RunCommand {
    /// Recognises `ENGINE [GLOBAL-OPTIONS] [container] run [OPTIONS] IMAGE …`
    /// where ENGINE is podman or docker.
    pub fn parse(argv: &[String]) -> Option<RunCommand> {
        let program = argv.first()?;
        let base = program.rsplit('/').next().unwrap_or(program);
        if base != "podman" && base != "docker" {
            return None;
        }
        // Before `run`: global options (with their values) and `container`.
        let run_at = argv.iter().position(|a| a == "run")?;
        let before = &argv[1..run_at];
        let plausible = before.iter().enumerate().all(|(i, a)| {
            a.starts_with('-')
                || a == "container"
                || (i > 0 && before[i - 1].starts_with('-') && !before[i - 1].contains('='))
        });
        if !plausible {
            return None;
        }
        let mut args = argv[run_at + 1..].iter().map(String::as_str);
        let mut name = None;
        let mut replace = false;
        while let Some(arg) = args.next() {
            if arg == "--" {
                break;
            }
            if arg == "--replace" {
                replace = true;
            } else if name.is_some() {
                // The first --name wins: a later one may be the app's own flag.
            } else if arg == "--name" {
                name = args.next().map(str::to_owned);
            } else if let Some(value) = arg.strip_prefix("--name=") {
                name = Some(value.to_owned());
            }
            if name.is_some() && replace {
                break;
            }
        }
        Some(RunCommand {
            engine: program.clone(),
            name,
            replace,
        })
    }

    /// A warning for the log when the container cannot be found later, if so.
    pub fn unnamed_warning(&self) -> Option<String> {
        self.name.is_none().then(|| {
            format!(
                "the backend command is `{} run` without --name: if that client is killed, \
                 its container keeps running and idlegate cannot find it; add --name NAME",
                self.engine
            )
        })
    }

    /// Before a start: removes a container of the same name left by an earlier
    /// run, so `run --name` does not fail with "name already in use".
    pub async fn remove_leftover_before_start(&self) {
        let Some(name) = &self.name else { return };
        if self.replace {
            return;
        }
        if let Some(running) = self.is_running(name).await {
            tracing::error!(target: "idlegate::backend::run_command",
                "container {name} left behind by an earlier `{} run` (was idlegate killed?) \
                 is still there ({}); removing it",
                self.engine,
                if running { "running" } else { "stopped" }
            );
            self.remove(name).await;
        }
    }

    /// After the client process stopped: removes its container if it is
    /// still running (the client was killed before the container stopped).
    pub async fn remove_leftover_after_stop(&self) {
        let Some(name) = &self.name else { return };
        if self.is_running(name).await == Some(true) {
            tracing::error!(target: "idlegate::backend::run_command",
                "container {name} is still running after `{} run` stopped (its PID 1 may \
                 ignore SIGTERM: use `run --init`, or a --stop-cmd); removing it",
                self.engine
            );
            self.remove(name).await;
        }
    }

    /// Whether the container exists (`Some`) and runs (`true`).
    async fn is_running(&self, name: &str) -> Option<bool> {
        let argv = self.argv(&[
            "container",
            "inspect",
            "--format",
            "{{.State.Running}}",
            name,
        ]);
        let (ok, out) = capture(&argv).await?;
        ok.then(|| out.trim() == "true")
    }

    async fn remove(&self, name: &str) {
        let argv = self.argv(&["rm", "--force", name]);
        match capture(&argv).await {
            Some((true, _)) => {
                tracing::info!(target: "idlegate::backend::run_command", "removed container {name}")
            }
            Some((false, out)) => {
                tracing::error!(target: "idlegate::backend::run_command", "`{}` failed: {}", argv.join(" "), out.trim())
            }
            None => {
                tracing::error!(target: "idlegate::backend::run_command", "`{}` could not run", argv.join(" "))
            }
        }
    }

    fn argv(&self, args: &[&str]) -> Vec<String> {
        std::iter::once(self.engine.clone())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect()
    }
}

/// Runs an engine CLI command; returns whether it succeeded and its stdout
/// (its stderr when it failed), or `None` when it could not run.
async fn capture(argv: &[String]) -> Option<(bool, String)> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(CLI_TIMEOUT, command.output())
        .await
        .ok()?
        .ok()?;
    let ok = output.status.success();
    let text = if ok { output.stdout } else { output.stderr };
    Some((ok, String::from_utf8_lossy(&text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<RunCommand> {
        RunCommand::parse(&line.split(' ').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn recognises_run_commands() {
        let run = parse("podman run --rm --name web -p 127.0.0.1:8080:80 img --name app").unwrap();
        assert_eq!(run.name.as_deref(), Some("web"));
        assert!(!run.replace);
        let run = parse("/usr/bin/docker --log-level warn container run --name=db --replace img")
            .unwrap();
        assert_eq!(run.engine, "/usr/bin/docker");
        assert_eq!(run.name.as_deref(), Some("db"));
        assert!(run.replace);
        assert!(parse("podman run img").unwrap().unnamed_warning().is_some());
        assert_eq!(parse("podman start web"), None);
        assert_eq!(parse("python3 -m http.server"), None);
        assert_eq!(parse("podman exec web run"), None);
    }
}
