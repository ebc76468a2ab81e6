//! Which engine idlegate talks to: `--engine` / `--engine-socket`, else
//! `$CONTAINER_HOST` (podman's) and `$DOCKER_HOST` (Docker's, any scheme),
//! else the first usual socket that exists; with Docker's TLS variables
//! (`DOCKER_TLS_VERIFY=1`, `DOCKER_CERT_PATH`) for a `tcp://` one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::transport::{EngineAddress, TLS_FILES};
use super::SYSTEM_SOCKETS;

/// Why no engine could be settled on.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No engine given and none of the usual places has a socket.
    #[error("no container engine socket found (tried {tried}); give --engine-socket PATH")]
    NoSocket {
        /// The places looked at, comma-separated.
        tried: String,
    },
    /// An environment variable holds an engine URL idlegate cannot read.
    #[error("${var}={value:?}: {reason}")]
    BadUrl {
        /// `DOCKER_HOST` or `CONTAINER_HOST`.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS directory lacks one of Docker's files.
    #[error(
        "the engine's TLS directory {dir} has no {file} (it needs ca.pem, cert.pem and key.pem)"
    )]
    TlsFile {
        /// The directory.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// Plain TCP to a host other than this one.
    #[error(
        "{address} is plain TCP to another host: anyone on the way gets root on it; \
         give TLS (--engine-tls-dir DIR, or DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH) \
         or --engine-insecure"
    )]
    PlainRemote {
        /// The engine's URL.
        address: String,
    },
}

/// Settles the engine: `explicit` if given, else `$CONTAINER_HOST`, then
/// `$DOCKER_HOST` (a `unix://` one only if its socket exists), then
/// `$XDG_RUNTIME_DIR/podman/podman.sock`, `$XDG_RUNTIME_DIR/docker.sock` and
/// [`SYSTEM_SOCKETS`], the first that exists. A `tcp://` engine without a
/// TLS directory gets Docker's (`$DOCKER_CERT_PATH`, else `~/.docker`) when
/// `DOCKER_TLS_VERIFY` is set; plain TCP beyond loopback needs `insecure`.
pub fn find_engine(
    explicit: Option<&EngineAddress>,
    insecure: bool,
    env: impl Fn(&str) -> Option<OsString>,
    exists: impl Fn(&Path) -> bool,
) -> Result<EngineAddress, FindError> {
    let mut found = match explicit {
        Some(address) => address.clone(),
        None => from_environment(&env, &exists)?,
    };
    if let EngineAddress::Tcp {
        tls: tls @ None, ..
    } = &mut found
    {
        let verify = env("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty() && v != "0");
        if verify {
            let dir = env("DOCKER_CERT_PATH")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".docker")));
            *tls = dir;
        }
    }
    if let EngineAddress::Tcp { tls: Some(dir), .. } = &found {
        if let Some(file) = TLS_FILES.into_iter().find(|f| !exists(&dir.join(f))) {
            return Err(FindError::TlsFile {
                dir: dir.clone(),
                file,
            });
        }
    }
    if found.is_plain_remote_tcp() && !insecure {
        return Err(FindError::PlainRemote {
            address: found.to_string(),
        });
    }
    Ok(found)
}

fn from_environment(
    env: &impl Fn(&str) -> Option<OsString>,
    exists: &impl Fn(&Path) -> bool,
) -> Result<EngineAddress, FindError> {
    let mut candidates = Vec::new();
    for var in ["CONTAINER_HOST", "DOCKER_HOST"] {
        let Some(url) = env(var).and_then(|v| v.into_string().ok()) else {
            continue;
        };
        if url.is_empty() {
            continue;
        }
        match EngineAddress::parse(&url) {
            Ok(EngineAddress::Unix(path)) => candidates.push(path),
            // Nothing to look at on this host: taken as said.
            Ok(remote) if candidates.is_empty() => return Ok(remote),
            Ok(_) => {}
            Err(reason) => {
                return Err(FindError::BadUrl {
                    var,
                    value: url,
                    reason,
                })
            }
        }
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR") {
        candidates.push(Path::new(&dir).join("podman/podman.sock"));
        candidates.push(Path::new(&dir).join("docker.sock"));
    }
    candidates.extend(SYSTEM_SOCKETS.iter().map(PathBuf::from));
    if let Some(found) = candidates.iter().find(|p| exists(p)) {
        return Ok(EngineAddress::Unix(found.clone()));
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(FindError::NoSocket {
        tried: tried.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn unix(path: &str) -> EngineAddress {
        EngineAddress::Unix(PathBuf::from(path))
    }

    #[test]
    fn explicit_socket_wins() {
        let found = find_engine(Some(&unix("/x.sock")), false, env(&[]), |_| false).unwrap();
        assert_eq!(found, unix("/x.sock"));
    }

    #[test]
    fn default_socket_order() {
        let vars = [
            ("CONTAINER_HOST", "unix:///ch.sock"),
            ("DOCKER_HOST", "tcp://1.2.3.4:2375"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ];
        let find = |exists: &dyn Fn(&Path) -> bool| find_engine(None, false, env(&vars), exists);
        assert_eq!(find(&|_| true).unwrap(), unix("/ch.sock"));
        let only = |want: &'static str| move |p: &Path| p == Path::new(want);
        assert_eq!(
            find(&only("/run/user/1000/docker.sock")).unwrap(),
            unix("/run/user/1000/docker.sock"),
            "rootless Docker"
        );
        assert_eq!(
            find(&only("/run/user/1000/podman/podman.sock")).unwrap(),
            unix("/run/user/1000/podman/podman.sock")
        );
        assert_eq!(
            find(&only("/var/run/docker.sock")).unwrap(),
            unix("/var/run/docker.sock")
        );
        let err = find(&|_| false).unwrap_err().to_string();
        assert_eq!(
            err,
            "no container engine socket found (tried /ch.sock, /run/user/1000/podman/podman.sock, \
             /run/user/1000/docker.sock, /run/podman/podman.sock, /var/run/docker.sock); give --engine-socket PATH"
        );
    }

    #[test]
    fn docker_host_and_its_tls_variables() {
        let vars = [
            ("DOCKER_HOST", "tcp://nas.lan:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/etc/nas-certs"),
        ];
        assert_eq!(
            find_engine(None, false, env(&vars), |_| true).unwrap(),
            EngineAddress::Tcp {
                host: "nas.lan".into(),
                port: 2376,
                tls: Some("/etc/nas-certs".into())
            }
        );
        let err = find_engine(None, false, env(&vars), |p| !p.ends_with("key.pem"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the engine's TLS directory /etc/nas-certs has no key.pem (it needs ca.pem, cert.pem and key.pem)"
        );
        let plain = [("DOCKER_HOST", "tcp://nas.lan:2375"), ("HOME", "/root")];
        let err = find_engine(None, false, env(&plain), |_| true).unwrap_err();
        assert!(matches!(err, FindError::PlainRemote { .. }), "{err}");
        assert!(find_engine(None, true, env(&plain), |_| true).is_ok());
        let ssh = [("CONTAINER_HOST", "ssh://core@nas/run/podman/podman.sock")];
        assert!(matches!(
            find_engine(None, false, env(&ssh), |_| false).unwrap(),
            EngineAddress::Ssh { .. }
        ));
        let bad = [("DOCKER_HOST", "npipe:////./pipe/docker_engine")];
        assert_eq!(
            find_engine(None, false, env(&bad), |_| true).unwrap_err().to_string(),
            "$DOCKER_HOST=\"npipe:////./pipe/docker_engine\": unknown scheme npipe:// (expected unix, tcp or ssh)"
        );
    }
}
