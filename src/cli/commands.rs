//! The subcommands beside serving, each returning its exit status:
//! `idlegate status`, `idlegate check`, `idlegate units FILE` and
//! `idlegate generator` (what systemd runs as a generator), plus `--generate`
//! for the manual and the shell completions. Errors are one line,
//! `idlegate: …`, with status 2 for usage and configuration.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{
    Cli, Generate, GeneratorArgs, InhibitArgs, ScopeArgs, StatusArgs, Subcommand, UnitsArgs,
};
use crate::config::{Config, ConfigError};
use crate::units::{self, generator, Scope};

/// Exit status of a usage or configuration error.
pub const USAGE: u8 = 2;

/// Runs `subcommand` and returns its exit status.
pub fn run(subcommand: Subcommand) -> u8 {
    match subcommand {
        Subcommand::Check(cli) => check(*cli),
        Subcommand::Units(args) => units(args),
        Subcommand::Status(args) => status(args),
        Subcommand::Inhibit(args) => inhibit(args),
        Subcommand::Generator(args) => generator(args),
    }
}

/// Prints `idlegate: ERROR` on stderr and returns `code`.
pub fn fail(code: u8, error: &dyn std::fmt::Display) -> u8 {
    eprintln!("idlegate: {error}");
    code
}

/// Help and version go to stdout with status 0; any other clap error becomes
/// one line (clap's first) with status 2. `args` are the ones parsed: an
/// error in a subcommand's arguments names the subcommand and its usage.
pub fn clap_error(e: clap::Error, args: &[OsString]) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            0
        }
        _ => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // "the following required arguments were not provided:" names them below.
            if let Some(said) = crate::cli::split_duration(args) {
                return fail(USAGE, &said);
            }
            let line = match lines.next().filter(|_| first.ends_with(':')) {
                Some(next) => format!("{first} {}", next.trim()),
                None => first.to_owned(),
            };
            let mut command = crate::cli::command();
            command.build();
            let name = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
            match command.find_subcommand_mut(name) {
                Some(sub) if name != "help" => {
                    let usage = sub.render_usage().to_string();
                    let usage = usage.trim().trim_start_matches("Usage: ");
                    fail(USAGE, &format!("{name}: usage: {usage}: {line}"))
                }
                _ => fail(USAGE, &format!("{line} (see idlegate --help)")),
            }
        }
    }
}

/// The flags and the config file, validated, with the defaults that depend
/// on the environment filled in (engine socket, state file, notify directory).
pub fn resolve_config(cli: Cli) -> Result<Config, ConfigError> {
    Config::from_cli(cli)
        .and_then(|c| c.find_engine_socket(|k| std::env::var_os(k), |p| p.exists()))
        .map(|c| c.find_state_file(|k| std::env::var_os(k)))
        .map(|c| c.find_notify_dir(|k| std::env::var_os(k)))
}

/// `idlegate status [--state-file PATH] [--connections] [--json]`: reads
/// the state file a running idlegate keeps (never its proxied socket) and
/// prints what it is doing, with `--connections` each unit of work in flight
/// (asked of the running idlegate on its connections socket, which a stopped
/// one does not have), with `--json` as a JSON document; exit 0 when it
/// runs, 3 when it does not, 4 when the state (or the list) cannot be read.
pub fn status(args: StatusArgs) -> u8 {
    let StatusArgs {
        state_file: path,
        connections,
        json,
    } = args;
    let found = Config::default_state_file(|k| std::env::var_os(k));
    let Some(path) = path.or(found) else {
        return fail(
            USAGE,
            &"status: give --state-file PATH (the one idlegate runs with; default $RUNTIME_DIRECTORY/idlegate.state)",
        );
    };
    let reading = crate::report::status::read(&path);
    let mut code = reading.exit_status();
    if code == crate::report::status::UNKNOWN {
        eprintln!("{}", reading.text(&path));
        return code;
    }
    let work = match (&reading, connections) {
        (_, false) => None,
        (crate::report::status::Reading::Running(s), true) => {
            match crate::report::connections::fetch(&path) {
                Ok(listing) if listing.pid == s.pid => Some(listing.work),
                Ok(listing) => {
                    code = crate::report::status::UNKNOWN;
                    eprintln!(
                    "idlegate: cannot list the work in flight: pid {} answered, the state file says {}",
                    listing.pid, s.pid
                );
                    None
                }
                Err(e) => {
                    code = crate::report::status::UNKNOWN;
                    eprintln!("idlegate: cannot list the work in flight: {e}");
                    None
                }
            }
        }
        // Not running: nothing is in flight.
        (_, true) => Some(Vec::new()),
    };
    if json {
        println!("{:#}", reading.json(work.as_deref()));
    } else {
        println!("{}", reading.text(&path));
        if let Some(work) = &work {
            println!("{}", crate::report::status::work_text(work));
        }
    }
    code
}

/// `idlegate inhibit [--state-file F] [--control PATH] [--why TEXT] -- CMD…`:
/// holds the service awake while CMD runs (see [`crate::wake::control`]);
/// with `--during WINDOW…` instead of CMD, to the end of the window now is
/// in ([`crate::wake::inhibit::run_during`]). The
/// control socket is PATH, else the one of the state file (F, else
/// `$RUNTIME_DIRECTORY/idlegate.state`, see [`control_of`]). Connecting wakes a stopped idlegate;
/// CMD runs once the backend is ready, and `inhibit` exits with its status
/// ([`crate::wake::inhibit::NOT_RUNNING`] when nothing holds the socket).
pub fn inhibit(args: InhibitArgs) -> u8 {
    let InhibitArgs {
        state_file: state,
        control,
        why,
        during,
        command,
    } = args;
    let windows = match during
        .iter()
        .map(|w| {
            w.parse()
                .map_err(|e| format!("inhibit: --during {w:?}: {e}"))
        })
        .collect::<Result<Vec<crate::wake::schedule::Window>, String>>()
    {
        Ok(windows) => windows,
        Err(e) => return fail(USAGE, &e),
    };
    if command.is_empty() && windows.is_empty() {
        return fail(
            USAGE,
            &"inhibit: give the command to run after --, or --during WINDOW",
        );
    }
    let state = state.or_else(|| Config::default_state_file(|k| std::env::var_os(k)));
    let Some(socket) = control.or_else(|| state.as_deref().map(control_of)) else {
        return fail(
            USAGE,
            &"inhibit: give --control PATH or --state-file F (the control socket is beside it)",
        );
    };
    let why = why
        .map(|w| w.to_string_lossy().replace('\n', " "))
        .unwrap_or_else(|| {
            let words = command.iter().map(|a| a.to_string_lossy().into_owned());
            let windows = windows.iter().map(|w| format!("awake {w}"));
            words.chain(windows).collect::<Vec<_>>().join(" ")
        });
    if windows.is_empty() {
        crate::wake::inhibit::run(&socket, &why, &command)
    } else {
        crate::wake::inhibit::run_during(&socket, &why, &windows)
    }
}

/// The control socket of the state file `state`, the first that exists
/// of: `control` beside it (a socket systemd holds), `DIR.control` beside
/// its directory DIR, as the generated units have it
/// (`/run/idlegate/NAME.control` for `/run/idlegate/NAME/idlegate.state`),
/// and `STATE.control`, the one idlegate binds itself while it runs when
/// none is passed ([`crate::wake::control::own_path`]); none: that last one.
fn control_of(state: &Path) -> PathBuf {
    let own = crate::wake::control::own_path(state);
    let held = state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .into_iter()
        .flat_map(|dir| {
            let mut generated = dir.as_os_str().to_owned();
            generated.push(".control");
            [dir.join("control"), PathBuf::from(generated)]
        });
    held.chain([own.clone()])
        .find(|path| path.exists())
        .unwrap_or(own)
}

/// `idlegate check [--config FILE] [FLAGS…] [-- COMMAND…]`: validates the
/// settings as a start would (binding nothing, starting nothing, ignoring
/// `LISTEN_FDS`) and prints them; a file with a `[systemd]` table is also
/// checked as the generator would, and its units named.
pub fn check(cli: Cli) -> u8 {
    let file = cli.config.clone();
    let config = match resolve_config(cli) {
        Ok(config) => config,
        Err(e) => return fail(USAGE, &e),
    };
    let mut out = config.summary();
    if let Some(file) = file.filter(|_| config.systemd.is_some()) {
        match units::for_file(&file, scope_of(&file), Path::new("idlegate")) {
            Ok(units) => {
                let names: Vec<&str> = units.files.iter().map(|f| f.path.as_str()).collect();
                out.push_str(&format!("\nsystemd units: {}", names.join(", ")));
                if !units.wanted.is_empty() {
                    out.push_str(" (sockets enabled)");
                }
                out.push_str(&awake_lines(&config, &units));
            }
            Err(e) => return fail(USAGE, &e),
        }
    }
    println!("{out}");
    for warning in config.warnings(owner_and_mode) {
        eprintln!("idlegate: warning: {warning}");
    }
    0
}

/// `check`'s lines for `[systemd] awake`: each window, with the timer that
/// wakes the service at its start and whether it starts at boot.
fn awake_lines(config: &Config, units: &units::Units) -> String {
    let windows = config.systemd.as_ref().map_or(&[][..], |s| &s.awake[..]);
    let Some(timer) = units
        .files
        .iter()
        .find(|f| f.path.ends_with("-awake.timer"))
    else {
        return String::new();
    };
    let enabled = if units.timers.is_empty() {
        "; start it with systemctl start"
    } else {
        "; started at boot"
    };
    windows
        .iter()
        .map(|w| {
            format!(
                "\nawake: {w}: {} wakes the service at OnCalendar={} and holds it to the end{enabled}",
                timer.path,
                w.on_calendar()
            )
        })
        .collect()
}

/// A path's owner and mode bits, `None` when it cannot be read.
fn owner_and_mode(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.uid(), m.mode()))
}

/// The scope a config file is for: a user's when it lives under their home.
fn scope_of(file: &Path) -> Scope {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    match home {
        Some(home) if home != Path::new("/") && absolute.starts_with(&home) => Scope::User,
        _ => Scope::System,
    }
}

/// The scope `--user`/`--system` name; else the environment's
/// `SYSTEMD_SCOPE` (what systemd tells a generator), else the system.
fn scope(args: &ScopeArgs) -> Scope {
    match (args.user, args.system) {
        (true, _) => Scope::User,
        (_, true) => Scope::System,
        _ => match std::env::var_os("SYSTEMD_SCOPE") {
            Some(s) if s == "user" => Scope::User,
            _ => Scope::System,
        },
    }
}

/// The idlegate the units run: `--idlegate PATH`, else this very binary.
fn unit_binary(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/idlegate"))
    })
}

/// `idlegate units [--user] [--idlegate PATH] FILE`: prints the units the
/// generator would write for FILE, each under a `# PATH` line.
pub fn units(args: UnitsArgs) -> u8 {
    let (scope, bin, file) = (scope(&args.scope), unit_binary(args.idlegate), args.file);
    match units::for_file(&file, scope, &bin) {
        Ok(units) => {
            let mut out = String::new();
            for f in &units.files {
                out.push_str(&format!("# {}\n{}\n", f.path, f.text));
            }
            for socket in &units.wanted {
                out.push_str(&format!("# sockets.target.wants/{socket} -> ../{socket}\n"));
            }
            for timer in &units.timers {
                out.push_str(&format!("# timers.target.wants/{timer} -> ../{timer}\n"));
            }
            print!("{out}");
            0
        }
        Err(e) => fail(USAGE, &e),
    }
}

/// `idlegate generator [--user|--system] [--config-dir DIR] [--idlegate PATH]
/// NORMAL [EARLY LATE]`: systemd's generator protocol. Always exits 0 once it
/// could start: a bad file is logged and skipped.
pub fn generator(args: GeneratorArgs) -> u8 {
    let scope = scope(&args.scope);
    let (dir, bin, out) = (args.config_dir, unit_binary(args.idlegate), args.normal);
    let Some(dir) = dir.or_else(|| generator::config_dir(scope, |k| std::env::var_os(k))) else {
        return 0;
    };
    // Run by systemd (it sets SYSTEMD_SCOPE): lines to the journal.
    let mut log: Box<dyn Write> = match std::env::var_os("SYSTEMD_SCOPE") {
        Some(_) => Box::new(generator::JournalLog::new()),
        None => Box::new(std::io::stderr()),
    };
    generator::generate(&dir, &out, scope, &bin, &mut log);
    let _ = log.flush();
    0
}

/// `--generate man|complete-bash|complete-zsh|complete-fish`: prints the manual page or
/// a shell's completions, made from the same definition as `--help`.
pub fn generate(what: Generate) -> u8 {
    let mut command = crate::cli::command();
    let mut out = std::io::stdout();
    let result = match what {
        Generate::Man => crate::cli::manual::render(command, &mut out),
        Generate::CompleteBash => {
            clap_complete::generate(
                clap_complete::Shell::Bash,
                &mut command,
                "idlegate",
                &mut out,
            );
            Ok(())
        }
        Generate::CompleteZsh => {
            clap_complete::generate(
                clap_complete::Shell::Zsh,
                &mut command,
                "idlegate",
                &mut out,
            );
            Ok(())
        }
        Generate::CompleteFish => {
            clap_complete::generate(
                clap_complete::Shell::Fish,
                &mut command,
                "idlegate",
                &mut out,
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => fail(1, &format!("--generate: {e}")),
    }
}
