//! The command line, as clap sees it: spelling only, no meaning.
//!
//! Values stay strings here; [`crate::config`] turns them (and the config
//! file) into a validated [`crate::config::Config`], so every error names the
//! flag or key it came from in the same words.
//!
//! [`commands`] runs the subcommands beside serving; [`manual`] renders the
//! manual page.

pub mod commands;
pub mod manual;

use std::path::PathBuf;

use clap::Parser;

/// idlegate: an exit-on-idle reverse proxy for systemd socket activation.
///
/// Started by a .socket unit, it starts the backend on demand, holds clients
/// until the backend is ready, forwards every connection, and after the idle
/// timeout with nothing in flight stops the backend and exits 0.
#[derive(Debug, Default, Parser)]
#[command(name = "idlegate", version, about, long_about = None, args_override_self = true)]
#[command(after_help = "Examples:\n  \
    idlegate --upstream 127.0.0.1:8080 --idle-timeout 5min -- /usr/bin/legacy-app --port 8080\n  \
    systemd-socket-activate -l 127.0.0.1:8000 idlegate --upstream 127.0.0.1:8080 -- python3 -m http.server 8080\n  \
    idlegate --listen 127.0.0.1:8000 --upstream 127.0.0.1:8080 -- python3 -m http.server 8080")]
pub struct Cli {
    /// Where traffic goes: HOST:PORT, unix:/path, or udp:HOST:PORT for a UDP
    /// socket; NAME=ADDR binds it to the passed socket named NAME
    /// (FileDescriptorName=). Repeat for several sockets.
    #[arg(long, value_name = "ADDR")]
    pub upstream: Vec<String>,

    /// The upstream, as systemd-socket-proxyd takes it (HOST:PORT or /path).
    #[arg(value_name = "UPSTREAM")]
    pub positional_upstream: Option<String>,

    /// Bind ADDR (HOST:PORT, unix:/path, udp:HOST:PORT) itself when not
    /// socket-activated (repeatable). Idle then stops the backend and keeps
    /// listening instead of exiting.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,

    /// Stop the backend and exit 0 after this long with nothing in flight
    /// (30s, 5min; 0 = never). [default: 5min]
    #[arg(long, value_name = "DURATION", visible_alias = "exit-idle-time")]
    pub idle_timeout: Option<String>,

    /// TCP mode: close a connection that moved no byte either way for this
    /// long, so a forgotten client cannot keep the backend up. [default: off]
    #[arg(long, value_name = "DURATION")]
    pub connection_idle_timeout: Option<String>,

    /// UDP: a client's flow (its own upstream socket) lives while a datagram
    /// moved either way within this long; a live flow is in flight. [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub udp_flow_timeout: Option<String>,

    /// How long a client may wait for the backend to become ready, and, once
    /// it has just started, for its first answer while a port forwarder in
    /// front of it still closes connections (HTTP mode holds such requests,
    /// bodies of up to 64 KiB included, and sends them again). [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub start_timeout: Option<String>,

    /// Grace for the backend after SIGTERM, and for connections to drain on
    /// shutdown. [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,

    /// At most this many connections at once; beyond it clients wait in the
    /// kernel's backlog. [default: 4096]
    #[arg(short = 'c', long, value_name = "N")]
    pub connections_max: Option<String>,

    /// Probe ADDR instead of every upstream to decide the backend is ready.
    #[arg(long, value_name = "ADDR")]
    pub ready: Option<String>,

    /// How traffic is forwarded: tcp (a byte stream) or http (requests; idle
    /// keep-alive connections do not count as activity). [default: tcp]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,

    /// TCP mode: send a PROXY protocol header (v1 or v2) first on each
    /// upstream connection, so the backend sees the real client address.
    #[arg(long, value_name = "VERSION")]
    pub proxy_protocol: Option<String>,

    /// HTTP mode: speak http1 (HTTP/1.1, pooled keep-alive connections) or
    /// h2c (HTTP/2 over cleartext with prior knowledge, for gRPC and other
    /// HTTP/2-only backends) to the upstreams. [default: http1]
    #[arg(long, value_name = "PROTOCOL")]
    pub upstream_protocol: Option<String>,

    /// HTTP mode: answer a browser that waited over a second for a cold
    /// backend with a 503 "starting" page that shows the start's progress
    /// and lands on the content once it is up; once a start is known (kept
    /// beside the state file), "usually ready in about N s" and a progress
    /// bar. With FILE: your own page, a template with {{service}},
    /// {{waited}}, {{progress}}, {{expected}}, {{expected_ms}},
    /// {{retry_after}}, {{events}} and {{script}}.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub waiting_page: Option<Option<std::path::PathBuf>>,

    /// HTTP mode: the service's name on the waiting page. [default: the Host
    /// asked for without its port, unless it is an address]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// HTTP mode: do not add X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host.
    #[arg(long)]
    pub no_forwarded_headers: bool,

    /// HTTP mode: answer requests for PATH with STATUS without starting the
    /// backend, while it is asleep (a monitor's health check); they never
    /// count as work. Repeatable; the file's answer tables say more.
    #[arg(long, value_name = "PATH=STATUS")]
    pub answer: Vec<String>,

    /// TCP mode: while the backend is not up, only clients from these
    /// address ranges (CIDR) start it; others are closed at once. Repeatable.
    #[arg(long, value_name = "CIDR")]
    pub wake_from: Vec<String>,

    /// When the idle timer fires, ask this shell command first: exit 0 means
    /// the backend is busy (a scan, a transcode) and the timer starts over;
    /// a failure, or no answer within 10 s, means not busy.
    #[arg(long, value_name = "CMD")]
    pub busy_cmd: Option<String>,

    /// HTTP mode: how long a client may take to send a request's headers. [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub header_read_timeout: Option<String>,

    /// The backend is this systemd unit: `systemctl start` it on demand and
    /// `systemctl stop` it when idle (a quadlet .container generates such a unit).
    /// Repeat for a group: started in order, each active before the next,
    /// stopped in reverse order.
    #[arg(long, value_name = "NAME.service")]
    pub unit: Vec<String>,

    /// The backend is started by this shell command (it should return once
    /// the backend is launched, e.g. `podman start web`).
    #[arg(long, value_name = "SHELL-COMMAND")]
    pub start_cmd: Option<String>,

    /// The backend is stopped by this shell command, when idle or stopping.
    #[arg(long, value_name = "SHELL-COMMAND")]
    pub stop_cmd: Option<String>,

    /// The backend's host sleeps: send it a Wake-on-LAN magic packet for
    /// this MAC (aa:bb:cc:dd:ee:ff) at each start, and every 3 s while the
    /// start waits for the upstream.
    #[arg(long, value_name = "MAC")]
    pub wake_on_lan: Option<String>,

    /// Where --wake-on-lan's packet goes (a broadcast address of the host's
    /// network, or the host itself). [default: 255.255.255.255:9]
    #[arg(long, value_name = "ADDR:PORT")]
    pub wake_on_lan_address: Option<String>,

    /// The backend is this container, started (or unpaused) by name through
    /// the engine API on demand and stopped (or paused) when idle. Repeat for
    /// a group (a database, then its app): started in order, each healthy (or
    /// running, without a healthcheck) before the next, stopped in reverse order.
    #[arg(long, value_name = "NAME")]
    pub container: Vec<String>,

    /// The backend is this Docker Swarm service, scaled from 0 to
    /// --swarm-replicas through the engine API (of a manager node) on demand,
    /// ready once its tasks run, and scaled back to 0 when idle.
    #[arg(long, value_name = "NAME")]
    pub swarm_service: Option<String>,

    /// With --swarm-service: how many tasks it runs while up. [default: 1]
    #[arg(long, value_name = "N")]
    pub swarm_replicas: Option<String>,

    /// The container engine's API socket (podman or docker). [default: the
    /// first that exists of $CONTAINER_HOST, $DOCKER_HOST (unix://),
    /// $XDG_RUNTIME_DIR/podman/podman.sock, $XDG_RUNTIME_DIR/docker.sock,
    /// /run/podman/podman.sock, /var/run/docker.sock]
    #[arg(long, value_name = "PATH")]
    pub engine_socket: Option<PathBuf>,

    /// The container engine's API as a URL: unix:///PATH, tcp://HOST:PORT
    /// (TLS with --engine-tls-dir or DOCKER_TLS_VERIFY=1 + DOCKER_CERT_PATH;
    /// plain only to loopback unless --engine-insecure), or
    /// ssh://USER@HOST[:PORT][/SOCKET] (the system's ssh, BatchMode=yes).
    /// [default: $DOCKER_HOST / $CONTAINER_HOST, else as --engine-socket]
    #[arg(long, value_name = "URL")]
    pub engine: Option<String>,

    /// With a tcp:// engine: the directory holding Docker's TLS files
    /// ca.pem, cert.pem and key.pem (the engine is verified, idlegate shows its cert).
    #[arg(long, value_name = "DIR")]
    pub engine_tls_dir: Option<PathBuf>,

    /// Allow a plain (no TLS) tcp:// engine on another host.
    #[arg(long)]
    pub engine_insecure: bool,

    /// With --container: `stop` the container when idle, or `pause` it (frozen
    /// in memory, wakes in milliseconds); a stop of idlegate (SIGTERM) stops
    /// it either way, a paused one too. [default: stop]
    #[arg(long, value_name = "ACTION")]
    pub idle_action: Option<String>,

    /// Ready only once `GET PATH` gets an HTTP answer (any status), not merely
    /// a connection: port forwarders accept before the app inside listens.
    #[arg(long, value_name = "PATH")]
    pub ready_http: Option<String>,

    /// Ready only once this shell command exits 0 (run after the ready
    /// addresses accept, again with a backoff until the start timeout), for
    /// servers that accept before they serve: `pg_isready -h 127.0.0.1 -p 5432`.
    #[arg(long, value_name = "SHELL-COMMAND")]
    pub ready_cmd: Option<String>,

    /// Ready only once the backend COMMAND sends READY=1 to the NOTIFY_SOCKET
    /// idlegate gives it (sd_notify, as under Type=notify); its STATUS= text
    /// shows in idlegate's status while it starts.
    #[arg(long)]
    pub ready_notify: bool,

    /// HTTP mode: at most N connections to each upstream; requests beyond
    /// them wait for a free one (within the start timeout), so a herd of
    /// clients never floods the backend. [default: 256]
    #[arg(long, value_name = "N")]
    pub upstream_connections_max: Option<String>,

    /// Cancel a start that nobody has waited for this long: once every
    /// client held for it (and every waiting page) has gone, the backend is
    /// stopped as when idle. For starts that cost minutes or memory; a TCP
    /// client that closed its sending side counts as gone. [default: off]
    #[arg(long, value_name = "DURATION")]
    pub cancel_abandoned_start: Option<String>,

    /// Hold at most N clients while the backend starts; beyond them HTTP
    /// answers 503 with Retry-After, TCP closes, UDP drops the datagram, at
    /// once (counted in --metrics). [default: no limit]
    #[arg(long, value_name = "N")]
    pub hold_max: Option<String>,

    /// Keep a small state file here for `idlegate status` (backend state, work
    /// in flight, time to idle exit, activations, the last start's phases),
    /// and beside it (PATH.starts) the last starts' times, for the waiting
    /// page's expected wait. [default: $RUNTIME_DIRECTORY/idlegate.state when
    /// systemd sets RUNTIME_DIRECTORY]
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Serve Prometheus metrics on this HOST:PORT of its own (not an activated
    /// socket: scraping neither starts idlegate nor keeps it up), the
    /// histogram idlegate_start_duration_seconds of this run's starts
    /// (request to ready) included.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,

    /// TOML file with the same settings; flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the manual page (man) or a shell's completions, and exit.
    #[arg(long, value_name = "WHAT", value_enum)]
    pub generate: Option<Generate>,

    /// error, warn, info, debug or trace (RUST_LOG filters take effect when this is not given).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// The backend: a long-running program that listens on the upstream address.
    /// Without it the backend is external and idlegate only waits for it.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The manual page, idlegate(1), in roff.
    Man,
    /// Completions for bash.
    CompleteBash,
    /// Completions for zsh.
    CompleteZsh,
    /// Completions for fish.
    CompleteFish,
}

/// The subcommands beside serving. `idlegate NAME …` runs one; any other
/// first argument (a flag, the positional UPSTREAM) serves, as before they
/// existed (see [`command`]).
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Validate the settings as a start would (binding nothing, starting
    /// nothing, ignoring LISTEN_FDS) and print them; a file with a [systemd]
    /// table is also checked as the generator would, and its units named.
    #[command(after_help = "Example:\n  idlegate check --config /etc/idlegate/tidings.toml")]
    Check(Box<Cli>),
    /// Print the units the generator writes for FILE, each under a `# PATH`
    /// line, to read before trusting them.
    Units(UnitsArgs),
    /// Print what a running idlegate is doing, from its state file. Exit 0
    /// when it runs, 3 when it does not, 4 when the state (or the list)
    /// cannot be read.
    Status(StatusArgs),
    /// Hold the service awake while CMD runs: connect to idlegate's control
    /// socket (which wakes a stopped idlegate), wait until the backend is
    /// ready, run CMD and exit with its status. With --during WINDOW instead,
    /// hold it to the end of the window now is in ([systemd] awake).
    Inhibit(InhibitArgs),
    /// systemd's generator protocol: every NAME.toml in /etc/idlegate (for a
    /// user, ~/.config/idlegate) becomes NAME.socket, NAME-control.socket and
    /// NAME.service (with [systemd] awake, NAME-awake.timer and its service)
    /// in NORMAL_DIR. A bad file is logged and skipped; exits 0.
    Generator(GeneratorArgs),
}

/// `--user`/`--system`: which systemd instance the units are for.
#[derive(Debug, Default, clap::Args)]
pub struct ScopeArgs {
    /// User units (default: $SYSTEMD_SCOPE, else system units).
    #[arg(long, overrides_with = "system")]
    pub user: bool,
    /// System units.
    #[arg(long, overrides_with = "user")]
    pub system: bool,
}

/// `idlegate units`.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct UnitsArgs {
    /// `--user` or `--system`.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// The idlegate the units run. [default: this very binary]
    #[arg(long, value_name = "PATH")]
    pub idlegate: Option<PathBuf>,
    /// The config file, NAME.toml.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `idlegate status`.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct StatusArgs {
    /// The state file the idlegate runs with. [default:
    /// $RUNTIME_DIRECTORY/idlegate.state]
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Also list every unit of work in flight (asked of the running idlegate;
    /// asking never wakes a stopped one).
    #[arg(long)]
    pub connections: bool,
    /// Print a JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `idlegate inhibit`.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct InhibitArgs {
    /// Find the control socket beside this state file. [default:
    /// $RUNTIME_DIRECTORY/idlegate.state]
    #[arg(long, value_name = "F")]
    pub state_file: Option<PathBuf>,
    /// The control socket. [default: `control` beside the state file, else
    /// DIR.control beside its directory DIR, as the generated units have it]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Why, as `idlegate status --connections` shows it. [default: CMD, or
    /// the windows]
    #[arg(long, value_name = "TEXT")]
    pub why: Option<std::ffi::OsString>,
    /// Instead of CMD: hold the service awake to the end of this window, if
    /// now is inside it, e.g. "Mon..Fri 08:00..18:00" (weekdays and start
    /// as systemd's OnCalendar=, then ..END; repeatable); outside every
    /// window exit 0 at once, waking nothing. What `[systemd] awake`'s
    /// NAME-awake.service runs, to have an office app warm at 8:00.
    #[arg(long, value_name = "WINDOW", conflicts_with = "command")]
    pub during: Vec<String>,
    /// The command to run while the service is held awake.
    #[arg(last = true, value_name = "CMD", required_unless_present = "during")]
    pub command: Vec<std::ffi::OsString>,
}

/// `idlegate generator`.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct GeneratorArgs {
    /// `--user` or `--system`.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Read the NAME.toml files here. [default: /etc/idlegate, for a user
    /// ~/.config/idlegate]
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// The idlegate the units run. [default: this very binary]
    #[arg(long, value_name = "PATH")]
    pub idlegate: Option<PathBuf>,
    /// Where the units go (systemd passes three directories; the first is used).
    #[arg(value_name = "NORMAL_DIR")]
    pub normal: PathBuf,
    /// systemd's early directory (unused).
    #[arg(value_name = "EARLY_DIR")]
    pub early: Option<PathBuf>,
    /// systemd's late directory (unused).
    #[arg(value_name = "LATE_DIR")]
    pub late: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Serve (no subcommand): the flags.
    Serve(Box<Cli>),
    /// Run a subcommand.
    Run(Subcommand),
}

/// The whole command: the serving flags and the subcommands, for parsing,
/// `--help`, the manual and the completions. A subcommand is only recognised
/// as the first argument (`args_conflicts_with_subcommands`), so a positional
/// UPSTREAM and a `-- COMMAND` after flags mean what they always meant.
pub fn command() -> clap::Command {
    use clap::{CommandFactory, Subcommand as _};
    let serve = Cli::command();
    let about = serve.get_about().cloned();
    // The enum's own doc comment would replace the command's.
    Subcommand::augment_subcommands(serve)
        .about(about.unwrap_or_default())
        .args_conflicts_with_subcommands(true)
        .subcommand_value_name("SUBCOMMAND")
        .subcommand_help_heading("Subcommands")
}

/// Parses `args` (the program's name first) into what it asks for.
pub fn parse_from<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let matches = command().try_get_matches_from(args)?;
    if matches.subcommand_name().is_some() {
        Subcommand::from_arg_matches(&matches).map(Invocation::Run)
    } else {
        Cli::from_arg_matches(&matches).map(|cli| Invocation::Serve(Box::new(cli)))
    }
}

/// The units a duration may have (humantime's), which a shell splits off
/// when a space is typed before them (`--idle-timeout 5 min`).
pub const DURATION_UNITS: &[&str] = &[
    "nsec", "ns", "usec", "us", "msec", "ms", "seconds", "second", "sec", "s", "minutes", "minute",
    "min", "m", "hours", "hour", "hr", "h", "days", "day", "d", "weeks", "week", "w", "months",
    "month", "M", "years", "year", "y",
];

/// The flags that take a duration.
const DURATION_FLAGS: &[&str] = &[
    "--idle-timeout",
    "--exit-idle-time",
    "--connection-idle-timeout",
    "--udp-flow-timeout",
    "--start-timeout",
    "--stop-timeout",
    "--header-read-timeout",
    "--cancel-abandoned-start",
];

/// How `FLAG VALUE UNIT` is written: `a duration takes no space: --idle-timeout 5min`.
pub fn no_space(flag: &str, value: &str, unit: &str) -> String {
    format!("a duration takes no space: {flag} {value}{unit}")
}

/// A duration flag's number followed by a unit as an argument of its own
/// (`--start-timeout 5 s`), said as clap would not: the unit is the
/// argument clap found unexpected.
pub fn split_duration(args: &[std::ffi::OsString]) -> Option<String> {
    let words: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    let bare = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    words.iter().enumerate().find_map(|(i, word)| {
        let (flag, value, unit) = match word.split_once('=') {
            Some((flag, value)) => (flag, value, *words.get(i + 1)?),
            None => (*word, *words.get(i + 1)?, *words.get(i + 2)?),
        };
        (DURATION_FLAGS.contains(&flag) && bare(value) && DURATION_UNITS.contains(&unit)).then(
            || {
                format!(
                    "`{unit}` after {flag} {value} is an argument of its own; {}",
                    no_space(flag, value, unit)
                )
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, clap::Error> {
        parse_from(std::iter::once("idlegate").chain(args.iter().copied()))
    }

    #[test]
    fn the_positional_upstream_and_command_still_serve() {
        let Ok(Invocation::Serve(cli)) = parse(&["127.0.0.1:8080", "--", "app", "check"]) else {
            panic!("not served");
        };
        assert_eq!(cli.positional_upstream.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(cli.command, ["app", "check"]);
        // A subcommand's name after a flag is what it always was: the UPSTREAM.
        let Ok(Invocation::Serve(cli)) = parse(&["--idle-timeout", "5s", "check"]) else {
            panic!("not served");
        };
        assert_eq!(cli.positional_upstream.as_deref(), Some("check"));
        assert!(matches!(
            parse(&["check", "--upstream", "127.0.0.1:1"]),
            Ok(Invocation::Run(Subcommand::Check(_)))
        ));
        let e = parse(&["help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn a_split_duration_is_found() {
        let args =
            |words: &[&str]| -> Vec<std::ffi::OsString> { words.iter().map(Into::into).collect() };
        let said = split_duration(&args(&["idlegate", "x:1", "--stop-timeout", "3", "min"]));
        assert!(said.unwrap().ends_with("--stop-timeout 3min"));
        assert!(split_duration(&args(&["idlegate", "--stop-timeout", "3s", "min"])).is_none());
        assert!(split_duration(&args(&["idlegate", "--mode", "3", "s"])).is_none());
    }
}
