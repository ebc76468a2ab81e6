//! The systemd generator (systemd.generator(7)): at boot and at every
//! `daemon-reload`, each `NAME.toml` in the config directory becomes its
//! units in the generator's output directory. A bad file is logged in one
//! line and skipped; the others are generated, and the generator exits 0, as
//! a generator must never break a boot.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{for_file, Scope, Units};

/// The directory a scope's files are read from: `/etc/idlegate`, or
/// `$XDG_CONFIG_HOME/idlegate` (else `~/.config/idlegate`) for a user.
pub fn config_dir(
    scope: Scope,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    match scope {
        Scope::System => Some(PathBuf::from("/etc/idlegate")),
        Scope::User => env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("idlegate")),
    }
}

/// Generates the units of every `*.toml` in `config_dir` into `out` (the
/// generator's "normal" directory), for idlegate at `bin`; errors go to `log`.
pub fn generate(config_dir: &Path, out: &Path, scope: Scope, bin: &Path, log: &mut dyn Write) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(config_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        // No directory, no services.
        Err(_) => return,
    };
    files.sort();
    for file in files {
        let result = for_file(&file, scope, bin)
            .map_err(|e| e.to_string())
            .and_then(|units| {
                write_units(&units, out)
                    .map_err(|e| format!("cannot write its units in {}: {e}", out.display()))
            });
        if let Err(error) = result {
            let _ = writeln!(log, "idlegate: {}: skipped: {error}", file.display());
        }
    }
}

/// Where a generator's lines go when systemd runs it: the journal, by its
/// native socket. (A generator's stderr goes to the kernel log, which a
/// container's journal never reads.) A line the journal does not take goes
/// to stderr.
pub struct JournalLog {
    socket: Option<std::os::unix::net::UnixDatagram>,
    line: Vec<u8>,
}

/// The journal's native socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

impl JournalLog {
    /// A log to the journal, if its socket is there.
    pub fn new() -> JournalLog {
        JournalLog {
            socket: std::os::unix::net::UnixDatagram::unbound().ok(),
            line: Vec::new(),
        }
    }

    fn send(&self, message: &[u8]) -> bool {
        let Some(socket) = &self.socket else {
            return false;
        };
        let mut entry = b"PRIORITY=3\nSYSLOG_IDENTIFIER=idlegate-generator\nMESSAGE=".to_vec();
        entry.extend_from_slice(message);
        entry.push(b'\n');
        socket.send_to(&entry, JOURNAL_SOCKET).is_ok()
    }
}

impl Default for JournalLog {
    fn default() -> JournalLog {
        JournalLog::new()
    }
}

impl Write for JournalLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=end).collect();
            let message = &line[..line.len() - 1];
            if !self.send(message) {
                std::io::stderr().write_all(&line)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `units` under `out`, with their `sockets.target.wants` and
/// `timers.target.wants` links.
fn write_units(units: &Units, out: &Path) -> std::io::Result<()> {
    for file in &units.files {
        let path = out.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.text)?;
    }
    for (target, wanted) in [
        ("sockets.target.wants", &units.wanted),
        ("timers.target.wants", &units.timers),
    ] {
        if wanted.is_empty() {
            continue;
        }
        let wants = out.join(target);
        std::fs::create_dir_all(&wants)?;
        for unit in wanted {
            let link = wants.join(unit);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new("..").join(unit), &link)?;
        }
    }
    Ok(())
}
