//! The list of work in flight, unit by unit: what `idlegate status
//! --connections` shows (who keeps the service awake).
//!
//! [`crate::serve::activity::InFlight`] counts the work; a listed count also keeps
//! an [`Entry`] for each guard, with what the unit is, since when, and the
//! bytes it moved each way ([`Traffic`], counted by the copy loops as the
//! bytes move). [`WorkList::views`] is a moment's copy, as plain data
//! ([`WorkView`]) that travels as JSON to `idlegate status`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Method};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::net::Peer;

/// What one unit of work in flight is.
#[derive(Debug)]
pub enum Unit {
    /// A client connection in TCP mode, for its whole life.
    Connection {
        /// The client.
        client: Peer,
    },
    /// An HTTP connection until its first request is answered (each request
    /// counts for itself from then on).
    HttpConnection {
        /// The client.
        client: Peer,
    },
    /// An HTTP request, from its headers to the end of its response.
    Request {
        /// The client.
        client: Peer,
        /// What it asked: method, Host and path.
        what: RequestLine,
    },
    /// A connection upgraded by a request (WebSocket, CONNECT), tunnelled.
    Upgrade {
        /// The client.
        client: Peer,
        /// The request that upgraded it.
        what: RequestLine,
    },
    /// A UDP flow: a client's datagrams and their replies.
    Flow {
        /// The client.
        client: SocketAddr,
    },
    /// An `idlegate inhibit` holding the service awake.
    Inhibitor {
        /// Its process (`pid 4242 (uid 0)`).
        who: String,
        /// Its `--why`.
        why: String,
    },
    /// The backend's start, until it is ready or has failed.
    BackendStart,
    /// A client that got the waiting page, expected back when it reloads.
    WaitingPage {
        /// The client.
        client: Peer,
    },
}

/// An HTTP request's method, Host and path (cheap to keep: the parts
/// share the request's buffers).
#[derive(Clone, Debug)]
pub struct RequestLine {
    /// The method.
    pub method: Method,
    /// The Host header (or the URI's authority), if any.
    pub host: Option<HeaderValue>,
    /// The path and query.
    pub path: http::uri::PathAndQuery,
}

impl RequestLine {
    /// What `req` asks.
    pub fn of<B>(req: &http::Request<B>) -> RequestLine {
        let host = req.headers().get(http::header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        RequestLine {
            method: req.method().clone(),
            host,
            path: req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        }
    }
}

/// The bytes one unit of work moved each way, counted as they move.
#[derive(Debug, Default)]
pub struct Traffic {
    from_client: AtomicU64,
    to_client: AtomicU64,
}

impl Traffic {
    /// Counts `n` bytes from the client on their way upstream.
    pub fn from_client(&self, n: u64) {
        self.from_client.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` bytes on their way to the client.
    pub fn to_client(&self, n: u64) {
        self.to_client.fetch_add(n, Ordering::Relaxed);
    }

    /// The bytes from the client and to it so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.from_client.load(Ordering::Relaxed),
            self.to_client.load(Ordering::Relaxed),
        )
    }
}

/// One unit of work in the list.
#[derive(Debug)]
pub struct Entry {
    unit: Unit,
    since: Instant,
    /// The bytes it moved.
    pub traffic: Traffic,
}

/// The units of work in flight, by a number of their own.
#[derive(Debug, Default)]
pub struct WorkList {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
}

impl WorkList {
    /// Lists `unit` from now on; the number takes it off again.
    pub fn add(&self, unit: Unit) -> (u64, Arc<Entry>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            unit,
            since: Instant::now(),
            traffic: Traffic::default(),
        });
        self.lock().insert(id, entry.clone());
        (id, entry)
    }

    /// Takes the unit numbered `id` off the list.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// A moment's view of the list, the oldest first.
    pub fn views(&self) -> Vec<WorkView> {
        let entries: Vec<Arc<Entry>> = self.lock().values().cloned().collect();
        let now = Instant::now();
        let mut views: Vec<(Instant, WorkView)> =
            entries.iter().map(|e| (e.since, e.view(now))).collect();
        views.sort_by_key(|(since, _)| *since);
        views.into_iter().map(|(_, v)| v).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // A panic while the lock was held cannot leave the map half-changed.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Entry {
    fn view(&self, now: Instant) -> WorkView {
        let (bytes_from_client, bytes_to_client) = self.traffic.totals();
        let mut view = WorkView {
            kind: String::new(),
            client: None,
            age_ms: u64::try_from(now.saturating_duration_since(self.since).as_millis())
                .unwrap_or(u64::MAX),
            bytes_from_client,
            bytes_to_client,
            method: None,
            host: None,
            path: None,
            why: None,
        };
        let (kind, client) = match &self.unit {
            Unit::Connection { client } => ("connection", Some(client.to_string())),
            Unit::HttpConnection { client } => ("http-connection", Some(client.to_string())),
            Unit::Request { client, what } => {
                view.describe(what);
                ("request", Some(client.to_string()))
            }
            Unit::Upgrade { client, what } => {
                view.describe(what);
                ("upgrade", Some(client.to_string()))
            }
            Unit::Flow { client } => ("udp-flow", Some(client.to_string())),
            Unit::Inhibitor { who, why } => {
                view.why = Some(why.clone());
                ("inhibitor", Some(who.clone()))
            }
            Unit::BackendStart => ("backend-start", None),
            Unit::WaitingPage { client } => ("waiting-page", Some(client.to_string())),
        };
        view.kind = kind.to_owned();
        view.client = client;
        view
    }
}

/// One unit of work in flight, as `idlegate status --connections` gets it
/// (one element of the JSON document's `work` list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkView {
    /// `connection` (TCP mode), `request`, `upgrade`, `http-connection`
    /// (before its first response), `udp-flow`, `inhibitor`,
    /// `backend-start` or `waiting-page`.
    pub kind: String,
    /// The client's address (`unix` for a Unix socket client); for an
    /// inhibitor, its process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// How long it has been in flight, in milliseconds.
    pub age_ms: u64,
    /// Bytes from the client (request bodies in HTTP mode).
    pub bytes_from_client: u64,
    /// Bytes to the client (response bodies in HTTP mode).
    pub bytes_to_client: u64,
    /// An HTTP request's method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// An HTTP request's Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// An HTTP request's path and query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An inhibitor's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl WorkView {
    fn describe(&mut self, what: &RequestLine) {
        self.method = Some(what.method.to_string());
        self.host = what
            .host
            .as_ref()
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
        self.path = Some(what.path.as_str().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_list_shows_each_unit_with_its_age_and_bytes_oldest_first() {
        let list = WorkList::default();
        let client: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let (tcp, entry) = list.add(Unit::Connection {
            client: Peer::Tcp(client),
        });
        entry.traffic.from_client(10);
        entry.traffic.to_client(2000);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let req = http::Request::get("/photos?page=2")
            .header("host", "photos.lan")
            .body(())
            .unwrap();
        let (_, _) = list.add(Unit::Request {
            client: Peer::Tcp(client),
            what: RequestLine::of(&req),
        });
        let views = list.views();
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].kind, "connection");
        assert_eq!(views[0].age_ms, 3000);
        assert_eq!(
            (views[0].bytes_from_client, views[0].bytes_to_client),
            (10, 2000)
        );
        assert_eq!(views[1].kind, "request");
        assert_eq!(views[1].method.as_deref(), Some("GET"));
        assert_eq!(views[1].host.as_deref(), Some("photos.lan"));
        assert_eq!(views[1].path.as_deref(), Some("/photos?page=2"));
        list.remove(tcp);
        assert_eq!(list.views().len(), 1);
        let json = serde_json::to_string(&list.views()).unwrap();
        assert!(!json.contains("why"), "absent fields are left out: {json}");
        let back: Vec<WorkView> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list.views());
    }
}
