//! The manual page, idlegate(1): clap's rendering of the flags (the same
//! definition `--help` uses), then the sections clap does not know: the
//! subcommands, exit statuses, environment, the config file with every key
//! (config/reference.toml itself), the `[systemd]` table, and examples.

use std::io::{self, Write};

/// Every key of the config file with its default, as shipped in `config/`.
const REFERENCE: &str = include_str!("../../config/reference.toml");

/// Writes the manual page of `command` to `out`, in roff.
pub fn render(command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(command);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    out.write_all(SECTIONS.as_bytes())?;
    writeln!(out, ".SH \"CONFIGURATION FILE\"")?;
    writeln!(
        out,
        "The file given with \\fB--config\\fR takes the flags' settings as kebab-case keys; a flag wins over its key. This is config/reference.toml, every key with its default:"
    )?;
    writeln!(out, ".PP\n.nf\n.RS 4")?;
    for line in REFERENCE.lines() {
        writeln!(out, "{}", escape(line))?;
    }
    writeln!(out, ".RE\n.fi")?;
    out.write_all(SYSTEMD.as_bytes())?;
    man.render_version_section(out)
}

/// A line of plain text for roff: backslashes doubled, a leading dot or
/// quote kept from being read as a request.
fn escape(line: &str) -> String {
    let line = line.replace('\\', "\\e").replace('-', "\\-");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

const SECTIONS: &str = r#".SH SUBCOMMANDS
A subcommand is recognised only as the first argument; \fBidlegate help\fR \fINAME\fR or \fBidlegate\fR \fINAME\fR \fB--help\fR prints its options.
.TP
\fBidlegate check\fR [\fB--config\fR \fIFILE\fR] [\fIFLAGS\fR...] [\fB--\fR \fICOMMAND\fR...]
Resolves and validates the settings exactly as a start would, binding nothing, starting nothing and ignoring \fBLISTEN_FDS\fR; prints them in a few lines (with \fB--busy-cmd\fR and each answer rule) and exits 0, or prints the one-line error a start would and exits 2. A file with a \fB[systemd]\fR table is also checked as the generator would, and its units named; when it has no \fBuser\fR and its container backend's engine socket is not world-writable, a warning says that the generated dynamic user cannot open it and to set \fBuser = "root"\fR (or a user in the socket's group).
.TP
\fBidlegate units\fR [\fB--user\fR|\fB--system\fR] [\fB--idlegate\fR \fIPATH\fR] \fIFILE\fR
Prints the units the generator writes for \fIFILE\fR, to read before trusting them.
.TP
\fBidlegate status\fR [\fB--state-file\fR \fIPATH\fR] [\fB--connections\fR] [\fB--json\fR]
Prints what a running idlegate is doing, from its state file (default \fB$RUNTIME_DIRECTORY/idlegate.state\fR), with the idle timer's own countdown to the idle exit (with \fB--listen\fR: to the backend's stop; idlegate keeps listening). \fB--connections\fR adds every unit of work in flight (TCP connections, HTTP requests with method, Host and path, upgraded connections, UDP flows, inhibitors with their reason, a backend start), each with its client, age and bytes each way, asked of the running idlegate on the socket \fIPATH\fR.connections that it keeps beside the state file (mode 0600; a stopped idlegate has none, so asking never wakes it). \fB--json\fR prints the same as a JSON document. Exit 0 when it runs, 3 when it does not, 4 when the state file (or the list) cannot be read.
.TP
\fBidlegate inhibit\fR [\fB--state-file\fR \fIF\fR] [\fB--control\fR \fIPATH\fR] [\fB--why\fR \fITEXT\fR] {\fB--\fR \fICMD\fR... | \fB--during\fR \fIWINDOW\fR...}
Holds the service awake while CMD runs: connects to idlegate's control socket (a passed Unix socket named control; without \fB--control\fR, "control" beside the state file, else \fIDIR\fR.control beside its directory \fIDIR\fR, as the generated units have it, else \fIF\fR.control, which an idlegate with the state file \fIF\fR and no control socket passed binds itself while it runs, mode 0600), which wakes a stopped idlegate, waits until the backend is ready, runs CMD and exits with its status; the hold ends when CMD ends or inhibit dies. Exit 69 when idlegate is not running and nothing holds the socket; 1 when the service cannot be reached otherwise or its backend fails. With \fB--during\fR \fIWINDOW\fR (repeatable; e.g. "Mon..Fri 07:50..18:00": weekdays and a start as OnCalendar= takes them, then ..END, local time) instead of CMD, it holds the service to the end of the window now is in and exits 0 then, or at once, waking nothing, outside every window; 1 also when idlegate ends the hold before the end. It is what the NAME-awake.service of \fB[systemd] awake\fR runs.
.TP
\fBidlegate generator\fR [\fB--user\fR|\fB--system\fR] [\fB--config-dir\fR \fIDIR\fR] [\fB--idlegate\fR \fIPATH\fR] \fINORMAL_DIR\fR [\fIEARLY_DIR\fR \fILATE_DIR\fR]
What systemd runs as /usr/lib/systemd/system-generators/idlegate (and user-generators/idlegate): every \fINAME\fR.toml in /etc/idlegate (for a user, ~/.config/idlegate) becomes \fINAME\fR.socket, \fINAME\fR-control.socket (the control socket, /run/idlegate/\fINAME\fR.control; for a user, %t/idlegate/\fINAME\fR.control) and \fINAME\fR.service. A bad file is logged in one line and skipped; the generator always exits 0.
.SH "EXIT STATUS"
.TP
\fB0\fR
An idle exit, a clean stop (SIGTERM, SIGINT), or the end of an Accept=yes connection.
.TP
\fB1\fR
A failure at run time: the runtime, the sockets' hand-over to it, or the signal handlers could not be set up.
.TP
\fB2\fR
A usage or configuration error, before anything is served: one line on stderr naming the flag, key, variable or descriptor and the bad value.
.TP
\fB3\fR, \fB4\fR
\fBidlegate status\fR: not running; unknown (the state file cannot be read).
.TP
\fB69\fR
\fBidlegate inhibit\fR: idlegate is not running and nothing holds its control socket (otherwise inhibit exits with CMD's status).
.SH ENVIRONMENT
.TP
\fBLISTEN_FDS\fR, \fBLISTEN_PID\fR, \fBLISTEN_FDNAMES\fR
The sockets systemd passes (sd_listen_fds(3)); without them idlegate binds \fB--listen\fR itself.
.TP
\fBNOTIFY_SOCKET\fR
With Type=notify: READY=1, STATUS= (the backend's state, work in flight, time to idle exit) and STOPPING=1 are sent there.
.TP
\fBRUNTIME_DIRECTORY\fR
The state file \fBidlegate status\fR reads is kept there (RuntimeDirectory=), and \fB--ready-notify\fR's socket made there.
.TP
\fBJOURNAL_STREAM\fR
Log lines carry no timestamp and no colour.
.TP
\fBRUST_LOG\fR
The log filter when \fB--log-level\fR is not given (e.g. idlegate=debug).
.TP
\fBCONTAINER_HOST\fR, \fBDOCKER_HOST\fR, \fBXDG_RUNTIME_DIR\fR
Where \fB--container\fR and \fB--swarm-service\fR find the engine's API when neither \fB--engine\fR nor \fB--engine-socket\fR is given (\fBDOCKER_HOST\fR of any scheme: unix://, tcp://, ssh://).
.TP
\fBDOCKER_TLS_VERIFY\fR, \fBDOCKER_CERT_PATH\fR
With a tcp:// engine and no \fB--engine-tls-dir\fR: TLS with ca.pem, cert.pem and key.pem from \fB$DOCKER_CERT_PATH\fR (else ~/.docker), as the docker CLI takes them. \fB$XDG_RUNTIME_DIR/idlegate-leases\fR (else \fB/run/idlegate-leases\fR) holds the leases of the idlegates sharing a container: it is stopped only by the last one.
.TP
\fBSYSTEMD_SCOPE\fR
For \fBidlegate generator\fR: \fBuser\fR makes user units.
.TP
\fBMALLOC_ARENA_MAX\fR
How many heaps glibc's allocator may keep; without it idlegate keeps one (less memory per connection; on many cores under heavy load, set it to the number of cores).
.TP
\fBTOKIO_WORKER_THREADS\fR
How many threads serve connections; default: one per core.
"#;

const SYSTEMD: &str = r#".SH "THE [systemd] TABLE"
Only the generator (and \fBidlegate units\fR, \fBidlegate check\fR) reads it; idlegate accepts it and ignores it when it runs.
.TP
\fBlisten\fR
Where systemd listens: one entry per upstream, in upstream order, each an address or a list of addresses as ListenStream= takes them (80, 127.0.0.1:8080, [::]:443, /run/app.sock); a UDP upstream's become ListenDatagram=. Without it, the file's \fBlisten\fR addresses are used. Named upstreams get a socket unit each (\fINAME\fR.socket for the first, \fINAME\fR-\fISOCKET\fR.socket for the others); unnamed ones share \fINAME\fR.socket.
.TP
\fBbackend-unit\fR
The unit that is the backend, e.g. a Quadlet container's app.service: idlegate's service gets BindsTo= it, and a drop-in orders it after idlegate, stops it when unneeded and lifts its start limit. The backend is then external to idlegate (no command, container or unit keys).
.TP
\fBuser\fR
The user to run as (User=); default: a dynamic user (DynamicUser=yes).
.TP
\fBenable\fR
true: the sockets listen from boot on (sockets.target.wants links, as Quadlet's [Install]), and the awake timer starts at boot (a timers.target.wants link). Default: false; start them with systemctl start \fINAME\fR.socket \fINAME\fR-control.socket (and \fINAME\fR-awake.timer).
.TP
\fBawake\fR
Windows the service is held awake in, with no client, e.g. ["Mon..Fri 07:50..18:00"] to have an office app warm at 8:00: each entry is weekdays (Mon..Sun, ranges and lists; none: every day) and a start time as OnCalendar= takes them, then ..\fIEND\fR (H:MM or H:MM:SS, local time; an end before the start is the next day's). \fINAME\fR-awake.timer fires at each start, and when it starts (a boot inside a window); \fINAME\fR-awake.service then runs \fBidlegate inhibit --during\fR, which wakes the service through the control socket and holds it to the window's end (outside every window it exits at once). After the window the idle timeout applies.
.TP
\fBservice\fR, \fBsocket\fR
Extra Key=value lines for [Service] (e.g. "StateDirectory=app", "MemoryDenyWriteExecute=no" for a JIT backend, "RestrictAddressFamilies=AF_NETLINK") and for each upstream's [Socket] (not the control socket's: change that with a drop-in, e.g. SocketGroup= and SocketMode=0660).
.PP
A backend \fBcommand\fR of the system's manager runs as idlegate's user, inside its sandbox, with a home and a state directory kept between activations: StateDirectory=idlegate/\fINAME\fR and HOME=/var/lib/idlegate/\fINAME\fR. A StateDirectory= line in \fBservice\fR becomes the home instead; an Environment= line that sets HOME is left as it is.
.PP
Removing the Debian package stops every unit the generator made (the system's, and those of running user managers) and reloads systemd.
.SH EXAMPLES
A service behind idlegate, in one file, /etc/idlegate/tidings.toml:
.PP
.nf
.RS 4
upstream = "127.0.0.1:8080"
idle\-timeout = "5min"

[systemd]
listen = ["80"]
backend\-unit = "tidings\-backend.service"
enable = true
.RE
.fi
.PP
Then \fBsystemctl daemon-reload\fR and \fBsystemctl start tidings.socket\fR. In front of a command instead, on a socket systemd holds:
.PP
.nf
.RS 4
systemd\-socket\-activate \-l 127.0.0.1:8000 idlegate \-\-upstream 127.0.0.1:8080 \-\- python3 \-m http.server 8080
.RE
.fi
.SH "SEE ALSO"
systemd.socket(5), systemd.generator(7), sd_listen_fds(3), systemd\-socket\-proxyd(8)
"#;
