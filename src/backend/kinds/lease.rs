//! A reference count on a container that several idlegate instances use
//! (one database behind two apps), which the engine API does not keep.
//!
//! Each instance that starts the container leaves a lease in the shared
//! directory: `DIR/CONTAINER/PID`, holding the process's start time (so a
//! reused pid is not taken for the instance that left it). At its stop an
//! instance removes its own lease and stops (or pauses) the container only
//! when no live instance still holds one; leases of instances that are gone
//! (SIGKILLed, crashed) are removed then. A lock file, `DIR/CONTAINER.lock`,
//! makes "take a lease" and "release, look, stop" one step each, so a start
//! never slips between another instance's look and its stop.
//!
//! The instances must see each other's pids: one host, one pid namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shared lease directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leases {
    /// The directory every instance sharing a container uses.
    pub dir: PathBuf,
}

/// A lock on one container's leases, released when dropped.
pub struct Locked {
    /// The container's lease directory.
    dir: PathBuf,
    /// Holds the lock.
    _file: File,
}

/// How often a waiting instance tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(20);

impl Leases {
    /// Locks `container`'s leases (waiting while another instance holds the lock).
    pub async fn lock(&self, container: &str) -> io::Result<Locked> {
        let name = file_name(container);
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{name}.lock")))?;
        while !crate::sys::try_lock_exclusive(file.as_fd())? {
            tokio::time::sleep(LOCK_RETRY).await;
        }
        Ok(Locked { dir, _file: file })
    }
}

impl Locked {
    /// Leaves this process's lease.
    pub fn take(&self) -> io::Result<()> {
        let (pid, started) = me()?;
        std::fs::write(self.dir.join(pid.to_string()), started)
    }

    /// Removes this process's lease (if any) and the leases of processes
    /// that are gone; returns the pids of the live instances that still hold one.
    pub fn release(&self) -> io::Result<Vec<u32>> {
        let (pid, _) = me()?;
        match std::fs::remove_file(self.dir.join(pid.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut holders = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let holder = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok());
            let live = holder.is_some_and(|pid| {
                let written = std::fs::read_to_string(&path).unwrap_or_default();
                start_time(pid).is_ok_and(|started| started == written)
            });
            match holder {
                Some(pid) if live => holders.push(pid),
                _ => {
                    tracing::info!(target: "idlegate::backend",
                        "removing the stale lease {}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        holders.sort_unstable();
        Ok(holders)
    }
}

/// This process's pid and start time.
fn me() -> io::Result<(u32, String)> {
    let pid = std::process::id();
    Ok((pid, start_time(pid)?))
}

/// A process's start time (field 22 of `/proc/PID/stat`, clock ticks since boot).
fn start_time(pid: u32) -> io::Result<String> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc stat"))
}

/// A container name as a file name (names and ids are safe already).
fn file_name(container: &str) -> String {
    container
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_counts_while_its_process_lives() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases {
            dir: dir.path().to_owned(),
        };
        let locked = leases.lock("db").await.unwrap();
        locked.take().unwrap();
        // Another live process (our parent, with its real start time) holds
        // one, and a gone one left one.
        let parent = std::os::unix::process::parent_id();
        let live = dir.path().join(format!("db/{parent}"));
        std::fs::write(&live, start_time(parent).unwrap()).unwrap();
        std::fs::write(dir.path().join("db/4194305"), "1").unwrap();
        // A reused pid: a live pid, but another start time.
        std::fs::write(dir.path().join("db/1"), "no such time").unwrap();
        assert_eq!(locked.release().unwrap(), vec![parent]);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            vec![parent.to_string()],
            "ours and the stale ones are gone"
        );
        std::fs::remove_file(&live).unwrap();
        assert!(locked.release().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_lock_waits_for_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases {
            dir: dir.path().to_owned(),
        };
        let first = leases.lock("a/b").await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(100), leases.lock("a/b")).await;
        assert!(second.is_err(), "the second waits");
        drop(first);
        let _second = leases.lock("a/b").await.unwrap();
    }
}
