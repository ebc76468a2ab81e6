//! The subcommands beside serving, each returning its exit status:
//! `idlegate status`, `idlegate check`, `idlegate units FILE` and
//! `idlegate generator` (what systemd runs as a generator), plus `--generate`
//! for the manual and the shell completions. Errors are one line,
//! `idlegate: …`, with status 2 for usage and configuration.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Generate};
use crate::config::{Config, ConfigError};
use crate::units::{self, generator, Scope};

/// Exit status of a usage or configuration error.
pub const USAGE: u8 = 2;

/// Runs the subcommand `args` names (`idlegate status|check|units|generator
/// …`) and returns its exit status; `None` when `args` name none (serve).
pub fn subcommand(args: &[OsString]) -> Option<u8> {
    let run: fn(&[OsString]) -> u8 = match args.get(1).and_then(|a| a.to_str())? {
        "status" => status,
        "check" => check,
        "units" => units,
        "generator" => generator,
        "inhibit" => inhibit,
        _ => return None,
    };
    Some(run(&args[2..]))
}

/// Prints `idlegate: ERROR` on stderr and returns `code`.
pub fn fail(code: u8, error: &dyn std::fmt::Display) -> u8 {
    eprintln!("idlegate: {error}");
    code
}

/// Help and version go to stdout with status 0; any other clap error becomes
/// one line (clap's first) with status 2.
pub fn clap_error(e: clap::Error) -> u8 {
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
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            fail(USAGE, &format!("{line} (see idlegate --help)"))
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
pub fn status(args: &[OsString]) -> u8 {
    const USAGE_LINE: &str = "idlegate status [--state-file PATH] [--connections] [--json]";
    let mut path = None;
    let (mut connections, mut json) = (false, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if text == "--state-file" {
            path = rest.next().map(PathBuf::from);
        } else if let Some(p) = text.strip_prefix("--state-file=") {
            path = Some(p.into());
        } else if text == "--connections" {
            connections = true;
        } else if text == "--json" {
            json = true;
        } else {
            return fail(
                USAGE,
                &format!("status: unexpected argument '{text}' (usage: {USAGE_LINE})"),
            );
        }
    }
    let found = Config::default_state_file(|k| std::env::var_os(k));
    let Some(path) = path.or(found) else {
        return fail(
            USAGE,
            &"status: give --state-file PATH (the one idlegate runs with; default $RUNTIME_DIRECTORY/idlegate.state)",
        );
    };
    let reading = crate::status::read(&path);
    let mut code = reading.exit_status();
    if code == crate::status::UNKNOWN {
        eprintln!("{}", reading.text(&path));
        return code;
    }
    let work = match (&reading, connections) {
        (_, false) => None,
        (crate::status::Reading::Running(s), true) => match crate::connections::fetch(&path) {
            Ok(listing) if listing.pid == s.pid => Some(listing.work),
            Ok(listing) => {
                code = crate::status::UNKNOWN;
                eprintln!(
                    "idlegate: cannot list the work in flight: pid {} answered, the state file says {}",
                    listing.pid, s.pid
                );
                None
            }
            Err(e) => {
                code = crate::status::UNKNOWN;
                eprintln!("idlegate: cannot list the work in flight: {e}");
                None
            }
        },
        // Not running: nothing is in flight.
        (_, true) => Some(Vec::new()),
    };
    if json {
        println!("{:#}", reading.json(work.as_deref()));
    } else {
        println!("{}", reading.text(&path));
        if let Some(work) = &work {
            println!("{}", crate::status::work_text(work));
        }
    }
    code
}

/// `idlegate inhibit [--state-file F] [--control PATH] [--why TEXT] -- CMD…`:
/// holds the service awake while CMD runs (see [`crate::control`]). The
/// control socket is PATH, else the one of the state file (F, else
/// `$RUNTIME_DIRECTORY/idlegate.state`, see [`control_of`]). Connecting wakes a stopped idlegate;
/// CMD runs once the backend is ready, and `inhibit` exits with its status
/// ([`crate::inhibit::NOT_RUNNING`] when nothing holds the socket).
pub fn inhibit(args: &[OsString]) -> u8 {
    let Some(split) = args.iter().position(|a| a == "--") else {
        return fail(USAGE, &"inhibit: usage: idlegate inhibit [--state-file F] [--control PATH] [--why TEXT] -- CMD...");
    };
    let (mut options, command) = (args[..split].to_vec(), &args[split + 1..]);
    let taken = (|| {
        let state = take_option(&mut options, "--state-file")?;
        let control = take_option(&mut options, "--control")?;
        let why = take_option(&mut options, "--why")?;
        Ok::<_, String>((state, control, why))
    })();
    let (state, control, why) = match taken {
        Ok(t) => t,
        Err(e) => return fail(USAGE, &format!("inhibit: {e}")),
    };
    if let Some(extra) = options.first() {
        return fail(
            USAGE,
            &format!("inhibit: unexpected argument '{}'", extra.to_string_lossy()),
        );
    }
    if command.is_empty() {
        return fail(USAGE, &"inhibit: give the command to run after --");
    }
    let state = state
        .map(PathBuf::from)
        .or_else(|| Config::default_state_file(|k| std::env::var_os(k)));
    let Some(socket) = control
        .map(PathBuf::from)
        .or_else(|| state.as_deref().map(control_of))
    else {
        return fail(
            USAGE,
            &"inhibit: give --control PATH or --state-file F (the control socket is beside it)",
        );
    };
    let why = why
        .map(|w| w.to_string_lossy().replace('\n', " "))
        .unwrap_or_else(|| {
            command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        });
    crate::inhibit::run(&socket, &why, command)
}

/// The control socket of the state file `state`, the first that exists
/// of: `control` beside it (a socket systemd holds), `DIR.control` beside
/// its directory DIR, as the generated units have it
/// (`/run/idlegate/NAME.control` for `/run/idlegate/NAME/idlegate.state`),
/// and `STATE.control`, the one idlegate binds itself while it runs when
/// none is passed ([`crate::control::own_path`]); none: that last one.
fn control_of(state: &Path) -> PathBuf {
    let own = crate::control::own_path(state);
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
pub fn check(args: &[OsString]) -> u8 {
    let cli = match Cli::try_parse_from(
        std::iter::once(OsString::from("idlegate check")).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
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
            }
            Err(e) => return fail(USAGE, &e),
        }
    }
    println!("{out}");
    0
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

/// Takes `--user`/`--system` out of `args`; the default is the environment's
/// `SYSTEMD_SCOPE` (what systemd tells a generator), else the system.
fn take_scope(args: &mut Vec<OsString>) -> Scope {
    let mut scope = match std::env::var_os("SYSTEMD_SCOPE") {
        Some(s) if s == "user" => Scope::User,
        _ => Scope::System,
    };
    args.retain(|a| match a.to_str() {
        Some("--user") => {
            scope = Scope::User;
            false
        }
        Some("--system") => {
            scope = Scope::System;
            false
        }
        _ => true,
    });
    scope
}

/// Takes `NAME VALUE` (or `NAME=VALUE`) out of `args`: `Ok(None)` when absent.
fn take_option(args: &mut Vec<OsString>, name: &str) -> Result<Option<OsString>, String> {
    let joined = format!("{name}=");
    let Some(i) = args
        .iter()
        .position(|a| a == name || a.to_string_lossy().starts_with(&joined))
    else {
        return Ok(None);
    };
    let arg = args.remove(i);
    if let Some(value) = arg.to_string_lossy().strip_prefix(&joined) {
        return Ok(Some(value.into()));
    }
    if i >= args.len() {
        return Err(format!("{name} needs a value"));
    }
    Ok(Some(args.remove(i)))
}

/// The idlegate the units run: `--idlegate PATH`, else this very binary.
fn unit_binary(args: &mut Vec<OsString>) -> Result<PathBuf, String> {
    Ok(match take_option(args, "--idlegate")? {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/idlegate")),
    })
}

/// `idlegate units [--user] [--idlegate PATH] FILE`: prints the units the
/// generator would write for FILE, each under a `# PATH` line.
pub fn units(args: &[OsString]) -> u8 {
    let mut args = args.to_vec();
    let scope = take_scope(&mut args);
    let bin = match unit_binary(&mut args) {
        Ok(bin) => bin,
        Err(e) => return fail(USAGE, &format!("units: {e}")),
    };
    let [file] = args.as_slice() else {
        return fail(
            USAGE,
            &"units: usage: idlegate units [--user] [--idlegate PATH] FILE",
        );
    };
    match units::for_file(Path::new(file), scope, &bin) {
        Ok(units) => {
            let mut out = String::new();
            for f in &units.files {
                out.push_str(&format!("# {}\n{}\n", f.path, f.text));
            }
            for socket in &units.wanted {
                out.push_str(&format!("# sockets.target.wants/{socket} -> ../{socket}\n"));
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
pub fn generator(args: &[OsString]) -> u8 {
    let mut args = args.to_vec();
    let scope = take_scope(&mut args);
    let options = take_option(&mut args, "--config-dir")
        .and_then(|dir| Ok((dir.map(PathBuf::from), unit_binary(&mut args)?)));
    let (dir, bin) = match options {
        Ok(options) => options,
        Err(e) => return fail(USAGE, &format!("generator: {e}")),
    };
    let Some(out) = args.first().map(PathBuf::from) else {
        return fail(USAGE, &"generator: usage: idlegate generator [--user] [--config-dir DIR] [--idlegate PATH] NORMAL_DIR [EARLY_DIR LATE_DIR]");
    };
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
    let mut command = Cli::command();
    let mut out = std::io::stdout();
    let result = match what {
        Generate::Man => crate::manual::render(command, &mut out),
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
