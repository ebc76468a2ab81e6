//! A small client for the Docker-compatible container engine API (podman and
//! docker both speak it), with hyper's client over whatever [`transport`]
//! opens: the engine's Unix socket, TCP (with TLS) or ssh.
//!
//! Only what idlegate needs: inspect a container, start, stop, pause and
//! unpause it, and any request with a JSON body for a Swarm service
//! ([`Engine::request`]; the plumbing is in `exchange.rs`). Every error
//! names the engine and the container.
//!
//! The API version is negotiated once per run (the first request asks the
//! unversioned `GET /version`): engines refuse clients outside their range,
//! Docker 29 every version below 1.44, Docker 20.10 every one above 1.41.

use std::sync::Arc;
use std::time::Duration;

mod exchange;
mod find;
mod ssh;
pub mod transport;

pub use exchange::{encode, error_message};
pub use find::{find_engine, FindError};
pub use transport::{EngineAddress, Transport, TransportError};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;

/// The API versions idlegate speaks. 1.24 (Docker 1.12) is the first with a
/// container's `State.Health`; the endpoints used (inspect, start, stop with
/// `t`, pause, unpause) are unchanged up to 1.52 (Docker 29), the newest known.
pub const API_VERSIONS: (ApiVersion, ApiVersion) = (ApiVersion(1, 24), ApiVersion(1, 52));

/// Where the engine's socket is looked for when neither `--engine` nor
/// `--engine-socket` is given, after `$CONTAINER_HOST` and `$DOCKER_HOST`:
/// `$XDG_RUNTIME_DIR/podman/podman.sock` and `$XDG_RUNTIME_DIR/docker.sock`
/// (rootless podman and Docker), then these.
pub const SYSTEM_SOCKETS: [&str; 2] = ["/run/podman/podman.sock", "/var/run/docker.sock"];

/// Why an engine request failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached.
    #[error("container {container}: cannot reach the engine socket {socket}: {source}")]
    Connect {
        /// The engine's socket path or URL.
        socket: String,
        /// The container's name or id.
        container: String,
        /// What connecting said (not found, permission denied, refused, a TLS error).
        source: TransportError,
    },
    /// The HTTP exchange itself failed or timed out.
    #[error("container engine socket {socket}: {reason}")]
    Protocol {
        /// The engine's socket path or URL.
        socket: String,
        /// What went wrong.
        reason: String,
    },
    /// The engine does not know the container.
    #[error("container {container}: no such container (engine socket {socket})")]
    NoSuchContainer {
        /// The engine's socket path or URL.
        socket: String,
        /// The container's name or id.
        container: String,
    },
    /// No API version is known to both the engine and idlegate.
    #[error(
        "container engine at {socket} speaks API {} to {}; idlegate speaks {} to {}",
        engine.0, engine.1, API_VERSIONS.0, API_VERSIONS.1
    )]
    Version {
        /// The engine's socket path or URL.
        socket: String,
        /// The engine's range, lowest and highest.
        engine: (ApiVersion, ApiVersion),
    },
    /// The engine refused the negotiated API version after all (its
    /// `/version` did not tell the truth).
    #[error(
        "container {container}: the engine at {socket} refuses API {version}: {message}; \
         idlegate speaks {} to {}",
        API_VERSIONS.0, API_VERSIONS.1
    )]
    VersionRefused {
        /// The engine's socket path or URL.
        socket: String,
        /// The container's name or id.
        container: String,
        /// The version asked for.
        version: ApiVersion,
        /// The engine's message (`client version 1.41 is too old. …`).
        message: String,
    },
    /// The engine refused the request.
    #[error("container {container}: {action} failed: {status} {message} (engine socket {socket})")]
    Refused {
        /// The engine's socket path or URL.
        socket: String,
        /// The container's name or id.
        container: String,
        /// What was asked (`start`, `stop`, …).
        action: &'static str,
        /// The HTTP status.
        status: StatusCode,
        /// The engine's message.
        message: String,
    },
}

impl EngineError {
    /// Whether the engine could not be reached at all (refused, no route,
    /// timed out): its host may be asleep or booting.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, EngineError::Connect { source, .. } if source.is_unreachable())
    }
}

/// The part of a container's state idlegate looks at.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `exited`, …
    #[serde(default)]
    pub status: String,
    /// Whether its process runs (true also when paused).
    #[serde(default)]
    pub running: bool,
    /// Whether it is frozen.
    #[serde(default)]
    pub paused: bool,
    /// The exit code of its last run.
    #[serde(default)]
    pub exit_code: i64,
    /// Its healthcheck's state, when it has one.
    #[serde(default)]
    pub health: Option<Health>,
}

/// A container's healthcheck state.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy`, `unhealthy` (empty or `none` without a healthcheck).
    #[serde(default)]
    pub status: String,
}

impl ContainerState {
    /// The healthcheck status, if the container has a healthcheck.
    pub fn health_status(&self) -> Option<&str> {
        match self.health.as_ref().map(|h| h.status.as_str()) {
            None | Some("") | Some("none") => None,
            Some(s) => Some(s),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    state: ContainerState,
}

/// An engine API version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl std::str::FromStr for ApiVersion {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (major, minor) = text.trim().split_once('.').ok_or(())?;
        Ok(ApiVersion(
            major.parse().map_err(|_| ())?,
            minor.parse().map_err(|_| ())?,
        ))
    }
}

/// The unversioned `GET /version`'s fields idlegate reads.
#[derive(Deserialize)]
struct VersionAnswer {
    #[serde(rename = "ApiVersion", default)]
    api_version: String,
    #[serde(rename = "MinAPIVersion", default)]
    min_api_version: String,
}

/// The version to speak to an engine whose range is `engine` (lowest,
/// highest): the highest both know, or `None` when the ranges do not meet.
pub fn choose_version(engine: (ApiVersion, ApiVersion)) -> Option<ApiVersion> {
    let (ours_min, ours_max) = API_VERSIONS;
    let chosen = engine.1.min(ours_max);
    (chosen >= ours_min && chosen >= engine.0).then_some(chosen)
}

/// A client for one engine; clones share the negotiated version.
#[derive(Clone, Debug)]
pub struct Engine {
    transport: Arc<Transport>,
    /// The engine's address as errors name it.
    socket: String,
    /// The API version, asked of the engine at the first request.
    version: Arc<tokio::sync::OnceCell<ApiVersion>>,
}

impl PartialEq for Engine {
    fn eq(&self, other: &Engine) -> bool {
        self.transport.address() == other.transport.address()
    }
}

impl Eq for Engine {}

impl Engine {
    /// A client for the engine at `address`.
    pub fn new(address: EngineAddress) -> Engine {
        Engine {
            socket: address.to_string(),
            transport: Arc::new(Transport::new(address)),
            version: Arc::default(),
        }
    }

    /// Where the engine is.
    pub fn address(&self) -> &EngineAddress {
        self.transport.address()
    }

    /// Whether the engine answers `GET /_ping` (a reachable engine, whatever
    /// its API version); the error says why not.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.exchange(
            Method::GET,
            "/_ping".into(),
            Bytes::new(),
            Duration::ZERO,
            "(ping)",
        )
        .await
        .map(drop)
    }

    /// The API version to speak: asked of the engine once, then kept.
    async fn version(&self, container: &str) -> Result<ApiVersion, EngineError> {
        let version = self
            .version
            .get_or_try_init(|| async {
                let (status, body) = self
                    .exchange(
                        Method::GET,
                        "/version".into(),
                        Bytes::new(),
                        Duration::ZERO,
                        container,
                    )
                    .await?;
                let unreadable = |why: String| EngineError::Protocol {
                    socket: self.socket.clone(),
                    reason: format!("container {container}: unreadable /version answer: {why}"),
                };
                if !status.is_success() {
                    return Err(unreadable(format!(
                        "{status} {}",
                        String::from_utf8_lossy(&body).trim()
                    )));
                }
                let answer: VersionAnswer =
                    serde_json::from_slice(&body).map_err(|e| unreadable(e.to_string()))?;
                let max: ApiVersion = answer
                    .api_version
                    .parse()
                    .map_err(|()| unreadable(format!("ApiVersion {:?}", answer.api_version)))?;
                // Engines older than API 1.25 do not say their minimum.
                let min = answer.min_api_version.parse().unwrap_or(max);
                let chosen = choose_version((min, max)).ok_or_else(|| EngineError::Version {
                    socket: self.socket.clone(),
                    engine: (min, max),
                })?;
                tracing::debug!(target: "idlegate::backend::engine",
                    "container engine at {} speaks API {min} to {max}: using {chosen}",
                    self.socket
                );
                Ok(chosen)
            })
            .await?;
        Ok(*version)
    }

    /// The container's state.
    pub async fn inspect(&self, container: &str) -> Result<ContainerState, EngineError> {
        let path = format!("/containers/{}/json", encode(container));
        let (status, body) = self
            .call(Method::GET, &path, Duration::ZERO, container)
            .await?;
        self.check(status, &body, container, "inspect")?;
        serde_json::from_slice::<Inspect>(&body)
            .map(|i| i.state)
            .map_err(|e| EngineError::Protocol {
                socket: self.socket.clone(),
                reason: format!("container {container}: unreadable inspect answer: {e}"),
            })
    }

    /// Starts the container; already running is fine.
    pub async fn start(&self, container: &str) -> Result<(), EngineError> {
        self.act(container, "start", "", Duration::ZERO).await
    }

    /// Stops the container, the engine waiting `grace` after the stop signal
    /// before it kills; already stopped is fine.
    pub async fn stop(&self, container: &str, grace: Duration) -> Result<(), EngineError> {
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        self.act(container, "stop", &format!("?t={secs}"), grace)
            .await
    }

    /// Freezes the container's processes.
    pub async fn pause(&self, container: &str) -> Result<(), EngineError> {
        self.act(container, "pause", "", Duration::ZERO).await
    }

    /// Thaws a paused container.
    pub async fn unpause(&self, container: &str) -> Result<(), EngineError> {
        self.act(container, "unpause", "", Duration::ZERO).await
    }

    async fn act(
        &self,
        container: &str,
        action: &'static str,
        query: &str,
        takes: Duration,
    ) -> Result<(), EngineError> {
        let path = format!("/containers/{}/{action}{query}", encode(container));
        let (status, body) = self.call(Method::POST, &path, takes, container).await?;
        // 304: already in the asked state.
        if status == StatusCode::NOT_MODIFIED {
            return Ok(());
        }
        self.check(status, &body, container, action)
    }

    fn check(
        &self,
        status: StatusCode,
        body: &[u8],
        container: &str,
        action: &'static str,
    ) -> Result<(), EngineError> {
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::NOT_FOUND {
            return Err(EngineError::NoSuchContainer {
                socket: self.socket.clone(),
                container: container.to_owned(),
            });
        }
        Err(EngineError::Refused {
            socket: self.socket.clone(),
            container: container.to_owned(),
            action,
            status,
            message: error_message(body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_status() {
        let state: Inspect = serde_json::from_str(
            r#"{"State":{"Status":"running","Running":true,"Paused":false,"ExitCode":0,
                "Health":{"Status":"starting","FailingStreak":0}},"Name":"/web"}"#,
        )
        .unwrap();
        assert_eq!(state.state.health_status(), Some("starting"));
        let state: Inspect =
            serde_json::from_str(r#"{"State":{"Status":"exited","Running":false,"ExitCode":3}}"#)
                .unwrap();
        assert_eq!(state.state.health_status(), None);
        assert_eq!(state.state.exit_code, 3);
    }

    #[test]
    fn errors_name_the_container_and_the_socket() {
        let e = EngineError::Connect {
            socket: "/run/podman/podman.sock".into(),
            container: "web".into(),
            source: TransportError::Unreachable(std::io::Error::from_raw_os_error(libc::EACCES)),
        };
        assert_eq!(
            e.to_string(),
            "container web: cannot reach the engine socket /run/podman/podman.sock: \
             Permission denied (os error 13)"
        );
    }

    #[test]
    fn the_highest_version_both_know_is_chosen() {
        let v = |text: &str| text.parse::<ApiVersion>().unwrap();
        let choose = |min: &str, max: &str| choose_version((v(min), v(max)));
        // Docker 20.10, podman 4 and 5 (their compatible API), Docker 29.
        assert_eq!(choose("1.12", "1.41"), Some(v("1.41")));
        assert_eq!(choose("1.24", "1.41"), Some(v("1.41")));
        assert_eq!(choose("1.44", "1.52"), Some(v("1.52")));
        // A newer engine than idlegate knows: idlegate's newest.
        assert_eq!(choose("1.44", "1.60"), Some(API_VERSIONS.1));
        // 1.9 is below 1.24, not above it.
        assert_eq!(choose("1.9", "1.23"), None);
        assert_eq!(choose("1.55", "1.60"), None);
        let e = EngineError::Version {
            socket: "/run/docker.sock".into(),
            engine: (v("1.55"), v("1.60")),
        };
        assert_eq!(
            e.to_string(),
            "container engine at /run/docker.sock speaks API 1.55 to 1.60; idlegate speaks 1.24 to 1.52"
        );
        assert_eq!(
            EngineError::Version {
                socket: "/s".into(),
                engine: (v("1.12"), v("1.23")),
            }
            .to_string(),
            "container engine at /s speaks API 1.12 to 1.23; idlegate speaks 1.24 to 1.52"
        );
        assert!("1".parse::<ApiVersion>().is_err());
    }
}
