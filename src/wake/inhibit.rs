//! `idlegate inhibit`'s side of the control socket (see [`crate::wake::control`]):
//! connect, ask, wait until the backend is ready, run the command while the
//! connection stays open; or, `--during`, keep it open to a window's end.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use super::schedule::{self, Window};

/// `inhibit`'s exit status when idlegate is not running and nothing holds
/// its control socket (as sysexits' `EX_UNAVAILABLE`).
pub const NOT_RUNNING: u8 = 69;

/// How long `inhibit` waits for idlegate to say the backend is ready.
const READY_WAIT: Duration = Duration::from_secs(15 * 60);

/// How often a hold `--during` windows looks at the clock again: the wall
/// clock may be set, or the machine may sleep, meanwhile.
const CLOCK_CHECK: Duration = Duration::from_secs(60);

/// Holds the service behind `socket` awake while `command` runs; returns
/// the command's exit status (128 + N for a signal), [`NOT_RUNNING`] when
/// nothing holds the socket, or 1 when the service cannot be reached
/// otherwise or its backend fails.
pub fn run(socket: &Path, why: &str, command: &[OsString]) -> u8 {
    match hold(socket, why) {
        Ok(stream) => hold_while(stream, command),
        Err(code) => code,
    }
}

/// Holds the service behind `socket` awake until the end of the window of
/// `windows` that now is in (of the latest, in several); returns 0 at the
/// end, or at once when now is in none (nothing is woken), else as [`run`]
/// does: [`NOT_RUNNING`], or 1 when the service cannot be reached, its
/// backend fails, or idlegate ends the hold before the end.
pub fn run_during(socket: &Path, why: &str, windows: &[Window]) -> u8 {
    if schedule::left(windows, schedule::now()).is_none() {
        eprintln!(
            "idlegate: inhibit: now is outside {}: nothing to hold",
            list(windows)
        );
        return 0;
    }
    let mut stream = match hold(socket, why) {
        Ok(stream) => stream,
        Err(code) => return code,
    };
    eprintln!("idlegate: inhibit: holding the service awake: {why}");
    let mut sink = [0u8; 64];
    while let Some(left) = schedule::left(windows, schedule::now()) {
        let wait = Duration::from_secs(u64::from(left.max(1))).min(CLOCK_CHECK);
        let read = stream
            .set_read_timeout(Some(wait))
            .and_then(|()| stream.read(&mut sink));
        match read {
            Ok(0) => {
                eprintln!("idlegate: inhibit: idlegate ended the hold before the window's end");
                return 1;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("idlegate: inhibit: the hold on the control socket failed: {e}");
                return 1;
            }
        }
    }
    eprintln!("idlegate: inhibit: the window ended: released");
    0
}

/// `"A", "B"`.
fn list(windows: &[Window]) -> String {
    let quoted: Vec<String> = windows
        .iter()
        .map(|w| format!("{:?}", w.to_string()))
        .collect();
    quoted.join(", ")
}

/// Connects to `socket`, asks for a hold and waits until the backend is
/// ready: the connection that holds it, or the exit status to end with.
fn hold(socket: &Path, why: &str) -> Result<UnixStream, u8> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if nothing_holds(socket, &e) => {
            eprintln!(
                "idlegate: inhibit: idlegate is not running: nothing holds its control socket {} ({e})",
                socket.display()
            );
            return Err(NOT_RUNNING);
        }
        Err(e) => {
            eprintln!(
                "idlegate: inhibit: cannot connect to the control socket {}: {e}",
                socket.display()
            );
            return Err(1);
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
            return Err(1);
        }
        Ok(_) => {
            eprintln!("idlegate: inhibit: {}", answer.trim_end());
            return Err(1);
        }
        Err(e) => {
            eprintln!(
                "idlegate: inhibit: no answer on the control socket {}: {e}",
                socket.display()
            );
            return Err(1);
        }
    }
    Ok(stream)
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
