//! `idlegate inhibit`'s side of the control socket (see [`crate::control`]):
//! connect, ask, wait until the backend is ready, run the command while the
//! connection stays open.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

/// How long `inhibit` waits for idlegate to say the backend is ready.
const READY_WAIT: Duration = Duration::from_secs(15 * 60);

/// Holds the service behind `socket` awake while `command` runs; returns
/// the command's exit status (128 + N for a signal), or 1 when the service
/// cannot be reached or its backend fails.
pub fn run(socket: &Path, why: &str, command: &[OsString]) -> u8 {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
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
