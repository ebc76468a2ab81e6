//! UDP: a datagram socket (`ListenDatagram=`, `--listen udp:…`) forwarded to a
//! `udp:` upstream.
//!
//! Each client address is a *flow* with an upstream socket of its own, so the
//! backend sees one source port per client and its replies go back to the
//! right one, sent from the activated socket. A flow is work in flight while a
//! datagram moved either way within `--udp-flow-timeout`; then it ends and its
//! socket closes.
//!
//! A new flow waits for the backend: the datagram that started it and those
//! that follow are queued (up to [`FLOW_QUEUE`] datagrams per flow and
//! [`QUEUED_BYTES_MAX`] bytes for all flows) and sent, in order, once it is
//! ready. Datagrams beyond those bounds are dropped with one warning per flow.
//! With `--hold-max`, the datagram of a new flow beyond that many held is
//! dropped (counted). A UDP client cannot be seen leaving: a held flow
//! waits for the start (see `--cancel-abandoned-start`) until the backend
//! is ready or its start timeout passes.
//! Datagrams that arrive after idlegate stopped reading stay in the socket,
//! which systemd keeps, for the next activation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::address::Address;
use crate::backend::hold::Hold;
use crate::backend::Backend;
use crate::backoff::Backoff;
use crate::config::Timeouts;
use crate::net;
use crate::proxy::proxy_protocol;
use crate::serve::context::ServeContext;
use crate::serve::work::{Entry, Traffic, Unit};
use crate::wake::refused::HeldMode;

/// The most datagrams one flow queues while the backend is not taking them.
pub const FLOW_QUEUE: usize = 1024;

/// The most bytes all flows together queue while the backend is not taking them.
pub const QUEUED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The largest UDP payload.
const DATAGRAM_MAX: usize = 65_536;

/// One UDP socket's flows, kept across the accept loop's restarts so a
/// client keeps its flow (and its source port at the backend).
#[derive(Debug)]
pub struct UdpForwarder {
    /// The upstream, a `udp:` address, for messages.
    upstream: Address,
    /// The upstream's socket address that flows send to (the first its host
    /// resolved to; `None` for a Unix path, which takes no datagrams).
    to: Option<SocketAddr>,
    /// Send a PROXY protocol v2 header before each datagram.
    proxy_protocol: bool,
    /// The live flows, by client address.
    flows: Mutex<HashMap<SocketAddr, FlowHandle>>,
    /// Bytes queued in every flow now.
    queued: AtomicUsize,
}

#[derive(Debug)]
struct FlowHandle {
    datagrams: mpsc::Sender<Vec<u8>>,
    /// Whether a drop was already reported for this flow.
    dropping: bool,
}

/// What a flow needs from its socket's loop.
struct FlowContext {
    client: SocketAddr,
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    header: Option<Vec<u8>>,
    backend: Backend,
    /// The live settings: the flow timeout, which a reload changes at once.
    live: watch::Receiver<Timeouts>,
    /// The forwarder: its upstream, its queued-bytes count, and the flows lock
    /// that orders a flow's end against new datagrams.
    forwarder: Arc<UdpForwarder>,
    close: CancellationToken,
    /// The flow's entry in the list of work: where its bytes are counted.
    work: Option<Arc<Entry>>,
}

impl UdpForwarder {
    /// A forwarder to `upstream` (a `udp:` address; datagrams go to the first
    /// of its resolved addresses), with a PROXY v2 header on each datagram
    /// when `proxy_protocol` is set.
    pub fn new(upstream: Address, proxy_protocol: bool) -> Self {
        UdpForwarder {
            to: upstream.first_socket_addr(),
            upstream,
            proxy_protocol,
            flows: Mutex::new(HashMap::new()),
            queued: AtomicUsize::new(0),
        }
    }

    /// Reads `socket` until `stop` is cancelled, handing each datagram to its
    /// client's flow (a new one starts the backend if needed).
    pub async fn serve(
        self: Arc<Self>,
        socket: Arc<UdpSocket>,
        label: String,
        shared: ServeContext,
        stop: CancellationToken,
    ) {
        let Some(upstream) = self.to else {
            tracing::error!(
                "{label}: upstream {} takes no datagrams: a UDP socket needs a udp:HOST:PORT upstream",
                self.upstream
            );
            return;
        };
        let local = socket.local_addr().ok();
        let mut buf = vec![0u8; DATAGRAM_MAX];
        let mut backoff = Backoff::resources();
        let mut sweep_at = 64;
        while let Some((n, client)) = receive(&socket, &mut buf, &label, &mut backoff, &stop).await
        {
            let mut flows = self.flows.lock().expect("flows lock");
            let Some(datagram) = self.to_live_flow(&mut flows, client, &buf[..n], &mut sweep_at)
            else {
                continue;
            };
            // Held until the backend is ready: at most --hold-max flows.
            let hold = match shared.backend.hold() {
                Ok(hold) => hold,
                Err(refused) => {
                    shared.wake.refused.refuse(HeldMode::Udp, refused.max);
                    continue;
                }
            };
            let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    "{label}: --connections-max reached; dropping a datagram from {client}"
                );
                continue;
            };
            let (tx, rx) = mpsc::channel(FLOW_QUEUE);
            let mut handle = FlowHandle {
                datagrams: tx,
                dropping: false,
            };
            if self.enqueue(&mut handle, client, datagram).is_some() {
                continue;
            }
            flows.insert(client, handle);
            drop(flows);
            tracing::debug!("client {client} on {label}: new UDP flow");
            let header = match (self.proxy_protocol, local) {
                (true, Some(local)) => Some(proxy_protocol::datagram_header(client, local)),
                _ => None,
            };
            // The flow is work in flight, and an open connection for the
            // drain, until it ends.
            let work = shared.in_flight.enter_as(Unit::Flow { client });
            let context = FlowContext {
                work: work.entry(),
                client,
                socket: socket.clone(),
                upstream,
                header,
                backend: shared.backend.clone(),
                live: shared.live.clone(),
                forwarder: self.clone(),
                close: shared.close.clone(),
            };
            let guards = (work, shared.connections.enter(), slot);
            let span = tracing::info_span!("flow", %client);
            tokio::spawn(async move {
                run_flow(context, rx, hold).instrument(span).await;
                drop(guards);
            });
        }
    }

    /// Queues `datagram` on `client`'s live flow; gives it back when there is
    /// none or it has ended (a new flow is then started), and now and then
    /// forgets the flows that ended.
    fn to_live_flow(
        &self,
        flows: &mut HashMap<SocketAddr, FlowHandle>,
        client: SocketAddr,
        datagram: &[u8],
        sweep_at: &mut usize,
    ) -> Option<Vec<u8>> {
        let datagram = datagram.to_vec();
        let datagram = match flows.get_mut(&client) {
            Some(flow) => self.enqueue(flow, client, datagram)?,
            None => datagram,
        };
        flows.remove(&client);
        if flows.len() >= *sweep_at {
            flows.retain(|_, f| !f.datagrams.is_closed());
            *sweep_at = (flows.len() * 2).max(64);
        }
        Some(datagram)
    }

    /// Queues `datagram` on `flow`; gives it back if the flow has ended.
    fn enqueue(
        &self,
        flow: &mut FlowHandle,
        client: SocketAddr,
        datagram: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let size = datagram.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > QUEUED_BYTES_MAX {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            if flow.datagrams.is_closed() {
                return Some(datagram);
            }
            self.report_drop(flow, client, "all flows together queue too many bytes");
            return None;
        }
        match flow.datagrams.try_send(datagram) {
            Ok(()) => {
                flow.dropping = false;
                None
            }
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                self.report_drop(flow, client, "its queue is full");
                None
            }
            Err(TrySendError::Closed(datagram)) => {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                Some(datagram)
            }
        }
    }

    fn report_drop(&self, flow: &mut FlowHandle, client: SocketAddr, why: &str) {
        if !flow.dropping {
            flow.dropping = true;
            tracing::warn!(
                "dropping datagrams from {client} until {} takes them: {why}",
                self.upstream
            );
        }
    }
}

/// The next datagram on `socket` (its length in `buf`, and its sender), past
/// failed reads (paused with `backoff` when out of resources); `None` once
/// `stop` is cancelled.
async fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    label: &str,
    backoff: &mut Backoff,
    stop: &CancellationToken,
) -> Option<(usize, SocketAddr)> {
    loop {
        let received = tokio::select! {
            r = socket.recv_from(buf) => r,
            _ = stop.cancelled() => return None,
        };
        match received {
            Ok(r) => return Some(r),
            Err(e) => {
                let go_on = backoff
                    .survive(
                        &e,
                        stop,
                        |delay| {
                            tracing::warn!(
                                "receive on {label} failed: {e}; pausing {}ms",
                                delay.as_millis()
                            )
                        },
                        // An ICMP error for an earlier reply, or a truncated read.
                        || tracing::debug!("receive on {label}: {e}"),
                    )
                    .await;
                if !go_on {
                    return None;
                }
            }
        }
    }
}

/// One client's flow: wait for the backend, then relay both ways until no
/// datagram moved for the flow timeout (or idlegate closes). A datagram for a
/// backend that is no longer ready starts it again first.
async fn run_flow(mut c: FlowContext, mut datagrams: mpsc::Receiver<Vec<u8>>, hold: Option<Hold>) {
    let Some(up) = open_flow(&c, &mut datagrams, hold).await else {
        return;
    };
    let mut reply = Vec::with_capacity(DATAGRAM_MAX);
    let mut framed = Vec::new();
    let mut last = Instant::now();
    let mut timeout = c.live.borrow_and_update().udp_flow;
    let mut reloads = true;
    let expiry = tokio::time::sleep(timeout);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            d = datagrams.recv() => {
                let Some(d) = d else { break };
                c.forwarder.queued.fetch_sub(d.len(), Ordering::Relaxed);
                last = Instant::now();
                if !forward(&c, &up, &mut framed, &d).await {
                    break;
                }
            }
            r = up.recv_buf(&mut reply) => {
                match r {
                    Ok(_) => {
                        last = Instant::now();
                        match c.socket.send_to(&reply, c.client).await {
                            Ok(n) => {
                                c.backend.note_reply();
                                c.count(|t| t.to_client(n as u64))
                            }
                            Err(e) => tracing::debug!("reply to {}: {e}", c.client),
                        }
                    }
                    Err(e) => refused(&c, &e),
                }
                reply.clear();
            }
            _ = &mut expiry => {
                let due = last + timeout;
                if Instant::now() < due {
                    expiry.as_mut().reset(due);
                    continue;
                }
                // Close the queue under the flows lock: a datagram the socket's
                // loop queues now either lands before (and is sent) or finds
                // the queue closed (and starts a new flow); none is lost.
                let flows = c.forwarder.flows.lock().expect("flows lock");
                if datagrams.is_empty() {
                    datagrams.close();
                    drop(flows);
                    tracing::debug!(
                        "UDP flow of {} ended: no datagram for {}",
                        c.client,
                        humantime::format_duration(timeout)
                    );
                    break;
                }
                drop(flows);
                expiry.as_mut().reset(Instant::now() + timeout);
            }
            changed = c.live.changed(), if reloads => match changed {
                Ok(()) => {
                    // A reload: the new flow timeout counts from the last datagram.
                    timeout = c.live.borrow_and_update().udp_flow;
                    expiry.as_mut().reset(last + timeout);
                }
                Err(_) => reloads = false, // No more reloads: this timeout is final.
            },
            _ = c.close.cancelled() => break,
        }
    }
}

/// Waits for the backend (held for its start by `_hold`) and opens the
/// flow's socket to the upstream; on a failure the queued datagrams are
/// dropped (and the log says why).
async fn open_flow(
    c: &FlowContext,
    datagrams: &mut mpsc::Receiver<Vec<u8>>,
    _hold: Option<Hold>,
) -> Option<UdpSocket> {
    let deadline = Instant::now() + c.backend.start_timeout();
    let ready = tokio::select! {
        r = c.backend.wait_ready(deadline) => r,
        _ = c.close.cancelled() => return None,
    };
    if let Err(e) = ready {
        let dropped = datagrams.len();
        tracing::warn!("dropping {dropped} datagram(s): {e}");
        datagrams.close();
        while let Ok(d) = datagrams.try_recv() {
            c.forwarder.queued.fetch_sub(d.len(), Ordering::Relaxed);
        }
        return None;
    }
    match upstream_socket(c.upstream).await {
        Ok(up) => Some(up),
        Err(e) => {
            tracing::warn!("cannot open a UDP socket to {}: {e}", c.forwarder.upstream);
            None
        }
    }
}

/// Sends one client datagram upstream (behind its PROXY header, if any),
/// first starting a backend that is no longer ready; `false` when idlegate
/// closes meanwhile.
async fn forward(c: &FlowContext, up: &UdpSocket, framed: &mut Vec<u8>, d: &[u8]) -> bool {
    if !c.backend.is_ready() {
        // The backend died or was failed since (a crash, a refusal): start
        // it again; what follows queues meanwhile.
        let deadline = Instant::now() + c.backend.start_timeout();
        let ready = tokio::select! {
            r = c.backend.wait_ready(deadline) => r,
            _ = c.close.cancelled() => return false,
        };
        if let Err(e) = ready {
            tracing::warn!("dropping a datagram: {e}");
            return true;
        }
    }
    let sent = match &c.header {
        Some(h) => {
            framed.clear();
            framed.extend_from_slice(h);
            framed.extend_from_slice(d);
            up.send(framed).await
        }
        None => up.send(d).await,
    };
    match sent {
        Ok(_) => c.count(|t| t.from_client(d.len() as u64)),
        Err(e) => refused(c, &e),
    }
    true
}

impl FlowContext {
    /// Counts bytes into the flow's traffic, when it is listed.
    fn count(&self, add: impl FnOnce(&Traffic)) {
        if let Some(work) = &self.work {
            add(&work.traffic);
        }
    }
}

/// An error on the upstream socket: a refusal (ICMP port unreachable) while
/// the backend counts as ready means it stopped serving that port.
fn refused(c: &FlowContext, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::ConnectionRefused && c.backend.is_ready() {
        tracing::warn!(
            "{} refused a datagram from {} although the backend is ready",
            c.forwarder.upstream,
            c.client
        );
        c.backend
            .report_refused(c.backend.generation(), &c.forwarder.upstream);
    } else {
        tracing::debug!("UDP flow of {} to {}: {e}", c.client, c.forwarder.upstream);
    }
}

/// A socket of the upstream's family on an ephemeral port, connected to it, so
/// that only its replies arrive there.
async fn upstream_socket(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let up = UdpSocket::bind(net::any_port_like(upstream)).await?;
    up.connect(upstream).await?;
    Ok(up)
}
