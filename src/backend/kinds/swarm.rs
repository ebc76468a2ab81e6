//! A Docker Swarm service as the backend (`--swarm-service NAME`): scaled
//! from 0 to `--swarm-replicas N` through the engine API on demand, started
//! once N of its tasks run, and scaled back to 0 when idle.
//!
//! Scaling rewrites only `Mode.Replicated.Replicas` of the service's spec
//! (`GET /services/NAME`, then `POST /services/NAME/update?version=V` with
//! the rest of the spec as it was). A task of this start that the swarm
//! rejects or fails (an image missing, no node that fits) ends the start at
//! once with the task's own words, instead of at the start timeout.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::backend::kinds::engine::{encode, error_message, Engine, EngineError};
use crate::backend::kinds::wake_on_lan::engine_answers;
use crate::backend::progress::{waiting_for, Progress, Stage};
use crate::backoff::Backoff;

/// The longest pause between two looks at the service's tasks.
const MAX_POLL: Duration = Duration::from_millis(250);
/// How often a started service's tasks are looked at while the readiness
/// probe runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// How long a stop waits for its tasks to end beyond its grace period.
const STOP_MARGIN: Duration = Duration::from_secs(30);
/// How long a start waits for the tasks an earlier stop ends.
const START_SETTLE: Duration = Duration::from_secs(30);

/// A replicated Swarm service known to a manager's engine by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmService {
    /// The engine of a manager node.
    pub engine: Engine,
    /// The service's name (or id).
    pub name: String,
    /// How many tasks it runs while up.
    pub replicas: u64,
    /// An unreachable engine is waited for, not a failure (its host is woken
    /// by Wake-on-LAN meanwhile; the start timeout bounds the wait).
    pub wait_for_engine: bool,
}

/// Why a Swarm service could not be scaled or did not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The engine is not a manager of a swarm (503).
    #[error("swarm service {service}: the engine at {socket} is not a swarm manager: {message}")]
    NotManager {
        /// The service.
        service: String,
        /// The engine's address (socket path or URL).
        socket: String,
        /// The engine's message.
        message: String,
    },
    /// The swarm has no such service (404).
    #[error("swarm service {service}: no such service (engine socket {socket})")]
    NoSuchService {
        /// The service.
        service: String,
        /// The engine's address (socket path or URL).
        socket: String,
    },
    /// The engine refused a request.
    #[error(
        "swarm service {service}: {action} failed: {status} {message} (engine socket {socket})"
    )]
    Refused {
        /// The service.
        service: String,
        /// The engine's address (socket path or URL).
        socket: String,
        /// What was asked (`inspect`, `scale`, `list tasks`).
        action: &'static str,
        /// The HTTP status.
        status: StatusCode,
        /// The engine's message.
        message: String,
    },
    /// An answer idlegate cannot use (a service in global mode, bad JSON).
    #[error("swarm service {service}: {reason} (engine socket {socket})")]
    Unusable {
        /// The service.
        service: String,
        /// The engine's address (socket path or URL).
        socket: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A task of this start was rejected or failed, or cannot be placed.
    #[error("swarm service {service}: task {task} {state}: {reason}")]
    Task {
        /// The service.
        service: String,
        /// The task's id.
        task: String,
        /// Its state (`rejected`, `failed`, `pending`).
        state: String,
        /// Its `Status.Err`, else its `Status.Message`.
        reason: String,
    },
    /// The engine could not be reached or spoke no known API.
    #[error("swarm service {service}: {}", for_service(source, service))]
    Engine {
        /// The service.
        service: String,
        /// What the engine client said.
        source: EngineError,
    },
}

/// The engine client's error, whose text names its subject as a container
/// (`container web: cannot reach …`), without that prefix.
fn for_service(error: &EngineError, service: &str) -> String {
    let text = error.to_string();
    match text.strip_prefix(&format!("container {service}: ")) {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// The fields of a task idlegate reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Task {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    desired_state: String,
    #[serde(default)]
    status: TaskStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaskStatus {
    #[serde(default)]
    state: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    err: String,
}

impl Task {
    /// Why the task will not run, if it will not: rejected or failed, or
    /// pending with an error (no node fits).
    fn failure(&self) -> Option<String> {
        let status = &self.status;
        let failed = matches!(status.state.as_str(), "rejected" | "failed" | "orphaned");
        let unplaced = status.state == "pending" && !status.err.is_empty();
        if !failed && !unplaced {
            return None;
        }
        Some(if status.err.is_empty() {
            status.message.clone()
        } else {
            status.err.clone()
        })
    }

    fn running(&self) -> bool {
        self.desired_state == "running" && self.status.state == "running"
    }

    /// Whether its container may still hold what a new task needs (a
    /// host-mode port): any state short of the terminal ones.
    fn live(&self) -> bool {
        !matches!(
            self.status.state.as_str(),
            "complete" | "shutdown" | "failed" | "rejected" | "orphaned" | "remove"
        )
    }
}

impl SwarmService {
    /// Scales the service to its replicas and returns once that many of its
    /// tasks run; a task of this start that fails ends it with its reason.
    pub async fn start(&self, progress: &Progress) -> Result<(), SwarmError> {
        let name = &self.name;
        let want = self.replicas;
        waiting_for(
            progress,
            Stage::SwarmTasks,
            format!("swarm service {name} has no running task yet"),
        );
        if self.wait_for_engine {
            let subject = format!("swarm service {name}");
            engine_answers(&self.engine, &subject, progress, Stage::SwarmTasks)
                .await
                .map_err(|source| SwarmError::Engine {
                    service: name.clone(),
                    source,
                })?;
        }
        // A stop of an earlier run may still be ending its tasks, whose
        // host-mode ports a new task would find taken.
        self.wait_ended(START_SETTLE, |t| t.desired_state != "running")
            .await?;
        // Tasks of earlier starts may have failed: only new ones count.
        let earlier: HashSet<String> = self.tasks().await?.into_iter().map(|t| t.id).collect();
        tracing::info!(target: "idlegate::backend::swarm", "scaling swarm service {name} to {want}");
        self.scale(want).await?;
        let mut backoff = Backoff::new(Duration::from_millis(20), MAX_POLL);
        let mut last = String::new();
        loop {
            let tasks = self.tasks().await?;
            let fresh = tasks.iter().filter(|t| !earlier.contains(&t.id));
            if let Some((task, reason)) = fresh.filter_map(|t| Some((t, t.failure()?))).next() {
                return Err(self.task_failed(task, reason));
            }
            let running = tasks.iter().filter(|t| t.running()).count() as u64;
            if running >= want {
                tracing::info!(target: "idlegate::backend::swarm",
                    "swarm service {name}: {running} of {want} tasks running");
                return Ok(());
            }
            let states: Vec<&str> = tasks
                .iter()
                .filter(|t| t.desired_state == "running")
                .map(|t| t.status.state.as_str())
                .collect();
            let what = format!(
                "swarm service {name}: {running} of {want} tasks running (now {})",
                states.join(", ")
            );
            if what != last {
                tracing::debug!(target: "idlegate::backend::swarm", "{what}");
                waiting_for(progress, Stage::SwarmTasks, what.clone());
                last = what;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Resolves when a task fails (polled every 250 ms) that had not failed
    /// at the first look: raced against the readiness probe after the
    /// start, so that an app that runs for a moment and exits fails the
    /// start at once, with its task's error. A manager that stops answering
    /// ends it too.
    pub async fn first_failed_task(&self) -> SwarmError {
        let mut earlier = None;
        loop {
            let tasks = match self.tasks().await {
                Ok(tasks) => tasks,
                Err(e) => return e,
            };
            let failed = tasks.iter().filter_map(|t| Some((t, t.failure()?)));
            let Some(earlier) = &earlier else {
                earlier = Some(failed.map(|(t, _)| t.id.clone()).collect::<HashSet<_>>());
                continue;
            };
            if let Some((task, reason)) = failed.into_iter().find(|(t, _)| !earlier.contains(&t.id))
            {
                return self.task_failed(task, reason);
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }

    fn task_failed(&self, task: &Task, reason: String) -> SwarmError {
        SwarmError::Task {
            service: self.name.clone(),
            task: task.id.clone(),
            state: task.status.state.clone(),
            reason,
        }
    }

    /// Scales the service to 0 and waits (`grace`, and a margin) for its
    /// tasks to end: the swarm stops them with the stop grace period of the
    /// service's own spec, and the next start needs their ports.
    pub async fn stop(&self, grace: Duration) -> Result<(), SwarmError> {
        let name = &self.name;
        tracing::info!(target: "idlegate::backend::swarm", "scaling swarm service {name} to 0");
        self.scale(0).await?;
        // Every task: the orchestrator may not have marked them yet.
        self.wait_ended(grace + STOP_MARGIN, |_| true).await
    }

    /// Waits up to `patience` until none of its tasks that are `ending`
    /// is still live; only a warning after it.
    async fn wait_ended(
        &self,
        patience: Duration,
        ending: impl Fn(&Task) -> bool,
    ) -> Result<(), SwarmError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Backoff::new(Duration::from_millis(20), MAX_POLL);
        loop {
            let live = self
                .tasks()
                .await?
                .into_iter()
                .filter(|t| ending(t) && t.live())
                .count();
            if live == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(target: "idlegate::backend::swarm",
                    "swarm service {}: {live} stopped tasks still end after {}s",
                    self.name, patience.as_secs());
                return Ok(());
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Sets `Mode.Replicated.Replicas` to `replicas`, the rest of the spec as
    /// it is; nothing is sent when it already says so.
    async fn scale(&self, replicas: u64) -> Result<(), SwarmError> {
        let path = format!("/services/{}", encode(&self.name));
        let answer = self
            .ask(Method::GET, &path, Bytes::new(), "inspect")
            .await?;
        let mut service: serde_json::Value = self.parse(&answer, "inspect")?;
        let version = service["Version"]["Index"].as_u64();
        let spec = &mut service["Spec"];
        let Some(count) = spec
            .pointer_mut("/Mode/Replicated")
            .and_then(|m| m.as_object_mut())
        else {
            return Err(self.unusable("not a replicated service (global mode cannot be scaled)"));
        };
        if count.get("Replicas").and_then(|r| r.as_u64()) == Some(replicas) {
            return Ok(());
        }
        count.insert("Replicas".into(), replicas.into());
        let Some(version) = version else {
            return Err(self.unusable("the inspect answer has no Version.Index"));
        };
        let body = Bytes::from(serde_json::to_vec(spec).expect("a JSON value"));
        let path = format!("{path}/update?version={version}");
        self.ask(Method::POST, &path, body, "scale").await?;
        Ok(())
    }

    /// Every task of the service the manager still knows, old ones too.
    async fn tasks(&self) -> Result<Vec<Task>, SwarmError> {
        let filters = serde_json::json!({ "service": [self.name] }).to_string();
        let path = format!("/tasks?filters={}", encode(&filters));
        let answer = self
            .ask(Method::GET, &path, Bytes::new(), "list tasks")
            .await?;
        self.parse(&answer, "list tasks")
    }

    /// One request; an error answer becomes the error that names its cause.
    async fn ask(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        action: &'static str,
    ) -> Result<Bytes, SwarmError> {
        let (status, answer) = self
            .engine
            .request(method, path, body, &self.name)
            .await
            .map_err(|source| SwarmError::Engine {
                service: self.name.clone(),
                source,
            })?;
        if status.is_success() {
            return Ok(answer);
        }
        let service = self.name.clone();
        let socket = self.engine.address().to_string();
        let message = error_message(&answer);
        Err(match status {
            StatusCode::SERVICE_UNAVAILABLE => SwarmError::NotManager {
                service,
                socket,
                message,
            },
            StatusCode::NOT_FOUND if action == "inspect" => {
                SwarmError::NoSuchService { service, socket }
            }
            _ => SwarmError::Refused {
                service,
                socket,
                action,
                status,
                message,
            },
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        answer: &[u8],
        action: &str,
    ) -> Result<T, SwarmError> {
        serde_json::from_slice(answer)
            .map_err(|e| self.unusable(&format!("unreadable {action} answer: {e}")))
    }

    fn unusable(&self, reason: &str) -> SwarmError {
        SwarmError::Unusable {
            service: self.name.clone(),
            socket: self.engine.address().to_string(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kinds::engine::TransportError;

    fn task(state: &str, err: &str, message: &str) -> Task {
        serde_json::from_value(serde_json::json!({
            "ID": "t1", "DesiredState": "running",
            "Status": {"State": state, "Err": err, "Message": message}
        }))
        .unwrap()
    }

    #[test]
    fn a_failed_or_unplaceable_task_says_why() {
        let missing = "No such image: localhost/nope:latest";
        assert_eq!(
            task("rejected", missing, "preparing").failure().as_deref(),
            Some(missing)
        );
        assert_eq!(
            task("failed", "", "task: non-zero exit (1)")
                .failure()
                .as_deref(),
            Some("task: non-zero exit (1)")
        );
        let unplaced = "no suitable node (insufficient resources on 1 node)";
        assert_eq!(
            task("pending", unplaced, "pending task scheduling")
                .failure()
                .as_deref(),
            Some(unplaced)
        );
        assert_eq!(task("pending", "", "pending").failure(), None);
        assert_eq!(task("preparing", "", "preparing").failure(), None);
        assert!(task("running", "", "started").running());
    }

    #[test]
    fn errors_name_the_service_and_the_cause() {
        let e = SwarmError::NotManager {
            service: "web".into(),
            socket: "/run/docker.sock".into(),
            message: "This node is not a swarm manager.".into(),
        };
        assert_eq!(
            e.to_string(),
            "swarm service web: the engine at /run/docker.sock is not a swarm manager: \
             This node is not a swarm manager."
        );
        let e = SwarmError::Engine {
            service: "web".into(),
            source: EngineError::Connect {
                socket: "/run/docker.sock".into(),
                container: "web".into(),
                source: TransportError::Unreachable(std::io::Error::from_raw_os_error(
                    libc::ENOENT,
                )),
            },
        };
        assert_eq!(
            e.to_string(),
            "swarm service web: cannot reach the engine socket /run/docker.sock: \
             No such file or directory (os error 2)"
        );
        let e = SwarmError::Task {
            service: "web".into(),
            task: "t1".into(),
            state: "rejected".into(),
            reason: "No such image: x".into(),
        };
        assert_eq!(
            e.to_string(),
            "swarm service web: task t1 rejected: No such image: x"
        );
    }
}
