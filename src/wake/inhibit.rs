//! `idlegate inhibit`'s side of the control socket (see [`crate::wake::control`]):
//! connect, ask, wait until the backend is ready, run the command while the
//! connection stays open.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

/// `inhibit`'s exit status when idlegate is not running and nothing holds
/// its control socket (as sysexits' `EX_UNAVAILABLE`).
pub const NOT_RUNNING: u8 = 69;

/// How long `inhibit` waits for idlegate to say the backend is ready.
const READY_WAIT: Duration = Duration::from_secs(15 * 60);

/// Holds the service behind `socket` awake while `command` runs; returns
/// the command's exit status (128 + N for a signal), [`NOT_RUNNING`] when
/// nothing holds the socket, or 1 when the service cannot be reached
/// otherwise or its backend fails.
pub fn run(socket: &Path, why: &str, command: &[OsString]) -> u8 {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if nothing_holds(socket, &e) => {
            eprintln!(
                "idlegate: inhibit: idlegate is not running: nothing holds its control socket {} ({e})",
                socket.display()
            );
            return NOT_RUNNING;
        }
        Err(e) => {
            eprintln!(
                "idlegate: inhibit: cannot connect to the control socket {}: {e}",
                socket.display()
            );
            return 1;
        }
    };
    let asked = stream
        .write_all(format!("inhibit {why}\n").as_bytes())
        .and_then(|()| stream.set_read_timeout(Some(READY_WAIT)));
    let mut answer = String::new();
    let read = asked.and_then(|()| BufReader::new(&stream).read_line(&mut answer));
    match read {
        Ok(_) if answer == "ready\n" => {}
        Ok(_) if answer.is_empty() => {
            eprintln!("idlegate: inhibit: idlegate closed the control socket without an answer");
            return 1;
        }
        Ok(_) => {
            eprintln!("idlegate: inhibit: {}", answer.trim_end());
            return 1;
        }
        Err(e) => {
            eprintln!(
                "idlegate: inhibit: no answer on the control socket {}: {e}",
                socket.display()
            );
            return 1;
        }
    }
    hold_while(stream, command)
}

/// Whether connecting to `socket` failed with `error` because nothing
/// holds it: refused (a socket file nobody answers on: a killed idlegate's),
/// or no socket file in a directory that exists (a wrong directory is a
/// wrong path, not a stopped idlegate).
fn nothing_holds(socket: &Path, error: &std::io::Error) -> bool {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => true,
        std::io::ErrorKind::NotFound => match socket.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.is_dir(),
            _ => true,
        },
        _ => false,
    }
}

/// Runs `command` while `stream` holds the service; its exit status.
fn hold_while(stream: UnixStream, command: &[OsString]) -> u8 {
    // The hold lasts as long as `stream`: until the command ends, or this
    // process dies (the kernel closes the socket).
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status();
    drop(stream);
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            (None, None) => 1,
        },
        Err(e) => {
            eprintln!(
                "idlegate: inhibit: cannot run {}: {e}",
                command[0].to_string_lossy()
            );
            127
        }
    }
}
