//! The controller network (KRaft's `CONTROLLER` listener): openraft's AppendEntries, Vote and
//! InstallSnapshot RPCs, and requests forwarded to the raft leader, over TCP.
//!
//! Wire format: every message is one frame, a 4-byte big-endian length followed by that many bytes
//! of JSON ([`Envelope`] from the caller, [`Response`] back). A connection carries one request at a
//! time; the caller keeps idle connections per peer for reuse. JSON keeps the format debuggable with
//! `nc` and costs little at metadata rates (a few entries per heartbeat).
//!
//! **Architecture Invariant:** nothing that arrives on the controller port can crash the node or
//! grow memory without bound: a frame over [`MAX_FRAME_BYTES`] or one that does not decode closes
//! that connection only (after a [`Response::Rejected`] saying why), a frame body must arrive within
//! [`FRAME_BODY_TIMEOUT`], and at most [`MAX_CONNECTIONS`] connections are served at once. Raft
//! RPCs are checked structurally before openraft sees them (entries follow `prev_log_id`, terms
//! and indexes in range, snapshot chunks within [`MAX_SNAPSHOT_BYTES`], an assembled snapshot
//! decodes), because openraft stops its core on what a correct peer never sends.
//!
//! The listener authenticates nobody: like KRaft's `CONTROLLER` listener over PLAINTEXT, it must
//! only be reachable by the controllers. A well-formed but forged raft message (a higher term)
//! can still disturb the quorum; only authentication would prevent that.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::snapshot_transport::{Chunked, SnapshotTransport, Streaming};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::forward::{self, LeaderOp, LeaderReply};
use crate::liveness::Liveness;
use crate::quorum::QuorumView;
use crate::raft::{NodeId, Raft, TypeConfig};
use crate::types::ClusterState;

/// Largest frame accepted or sent on the controller port. Raft entries are small metadata
/// commands (at most `max_payload_entries` per AppendEntries) and snapshots travel in chunks of
/// [`crate::raft::SNAPSHOT_CHUNK_BYTES`], whose JSON is at most ~4x their size.
pub(crate) const MAX_FRAME_BYTES: usize = 16 << 20;
/// Once a frame's length has arrived, its body must follow within this time; a peer that stalls
/// mid-frame loses its connection instead of holding a task forever.
pub(crate) const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once on the controller port; more are closed as they are accepted.
/// Each voter keeps a few pooled connections to each other voter, so this is ample for 5 voters.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// Idle connections kept per peer for reuse.
const MAX_IDLE_PER_PEER: usize = 4;
/// After a failed dial, the next dial to that peer waits this long, doubling up to
/// [`DIAL_BACKOFF_MAX`]; RPCs in between fail at once as `Unreachable`.
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(50);
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Largest snapshot a node receives. Snapshot chunks are written at their offset into memory, so
/// this also bounds what one forged chunk can make the node allocate.
pub(crate) const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;
/// Terms and log indexes above these are refused: no real cluster gets near them, and a forged
/// `u64::MAX` would overflow when the node next increments it.
const MAX_TERM: u64 = 1 << 48;
const MAX_INDEX: u64 = 1 << 56;
/// How long [`probe`] waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// A forwarded request carries the caller's remaining time; the leader never waits longer than this.
const MAX_FORWARD_WAIT: Duration = Duration::from_secs(120);
/// Forwarded requests (other than heartbeats) served at once; more are answered "unavailable" at
/// once (nothing done, the requester retries), so that forwarding cannot take every connection
/// slot and every task of the leader from the raft RPCs.
pub(crate) const MAX_CONCURRENT_FORWARDS: usize = 32;
/// A connection with no request for this long is closed. Pooled raft connections are redialed
/// transparently; this reclaims slots held by idle forwarding clients.
pub(crate) const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The `to` of a request for whichever node listens at the address dialed: a node that knows a
/// controller only by its address (`controller.quorum.bootstrap.servers`) sends it. Accepted for
/// forwarded requests only (a non-leader answers with the leader's id and address), never for raft
/// RPCs.
pub(crate) const ANY_NODE: NodeId = u64::MAX;

/// One request frame. `to` is the node id the caller believes it is talking to, so that a voter
/// configured with the wrong address is refused rather than silently joining the wrong node's log.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) to: NodeId,
    pub(crate) body: Request,
}

/// [`Envelope`] as the caller serializes it, without taking the request by value.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    to: NodeId,
    body: &'a Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A request for the leader (KRaft's forwarding to the active controller); `timeout_ms` is
    /// what the caller still waits, so the leader gives up no later than the caller does.
    Forward {
        op: LeaderOp,
        timeout_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Forward(LeaderReply),
    /// The request never reached raft (too large, undecodable, addressed to another node); the
    /// connection is closed after this frame.
    Rejected(String),
}

// ---------------------------------------------------------------------------------------------
// Frames.

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "controller frame of {} bytes exceeds the {MAX_FRAME_BYTES} byte limit",
                    body.len()
                ),
            )
        })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Why reading a frame failed; `TooLarge` and `Stalled` are the peer's fault and worth a reply.
enum ReadError {
    /// The peer closed the connection cleanly between frames.
    Closed,
    /// No request began within the idle timeout (see [`read_request`]).
    Idle,
    TooLarge(u32),
    Stalled,
    Io(io::Error),
}

/// The next request frame on a served connection: [`ReadError::Idle`] if none begins within
/// `idle` (the connection is then closed; a frame begun in time has [`FRAME_BODY_TIMEOUT`]).
async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    idle: Duration,
) -> Result<Vec<u8>, ReadError> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(idle, r.read(&mut first)).await {
        Err(_) => return Err(ReadError::Idle),
        Ok(Ok(0)) => return Err(ReadError::Closed),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(ReadError::Io(e)),
    }
    read_frame(&mut (&first[..]).chain(r)).await
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let len = match r.read_u32().await {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    };
    if len as usize > MAX_FRAME_BYTES {
        return Err(ReadError::TooLarge(len));
    }
    // Grown as bytes arrive rather than allocated from the claimed length, so a peer that claims
    // 16 MiB and sends 10 bytes costs 10 bytes.
    let mut body = Vec::new();
    let read = tokio::time::timeout(
        FRAME_BODY_TIMEOUT,
        r.take(u64::from(len)).read_to_end(&mut body),
    )
    .await
    .map_err(|_| ReadError::Stalled)?
    .map_err(ReadError::Io)?;
    if read != len as usize {
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed after {read} of {len} frame bytes"),
        )));
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Client side: a pool of connections per peer, shared by every openraft client and by forwarding.

/// The raft network factory; clones share the connection pool and the per-peer status.
#[derive(Clone)]
pub(crate) struct TcpNetwork {
    shared: Arc<Shared>,
}

struct Shared {
    /// This node's id, for `Timeout` errors.
    id: NodeId,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Test-only dial addresses per peer, overriding the membership's (see [`TcpNetwork::route_for_test`]).
    routes: Mutex<HashMap<NodeId, String>>,
}

struct Peer {
    addr: String,
    idle: Vec<TcpStream>,
    /// Consecutive failed dials; 0 after any successful exchange.
    failures: u32,
    /// No dial before this instant (backoff after a failed dial).
    next_dial: Option<Instant>,
    /// The last failure talking to this peer, cleared by a successful exchange. Reported when
    /// the quorum cannot be reached, so the operator sees which voter is down and why.
    last_error: Option<String>,
    /// When an exchange with this peer last succeeded (DescribeQuorum's last fetch time).
    last_ok: Option<SystemTime>,
    /// Since when every dial was refused (nothing listens on the peer's controller port: its process is
    /// gone), cleared by any successful exchange.
    refused_since: Option<Instant>,
}

impl Peer {
    fn new(addr: &str) -> Peer {
        Peer {
            addr: addr.to_string(),
            idle: Vec::new(),
            failures: 0,
            next_dial: None,
            last_error: None,
            last_ok: None,
            refused_since: None,
        }
    }
}

/// How one exchange with a peer failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Could not connect (or backing off after failing to): the request was not sent.
    Unreachable(io::Error),
    /// The request may have been sent, but no response arrived in time.
    Timeout(Duration),
    /// The connection broke after the request may have been sent.
    Network(io::Error),
}

impl TcpNetwork {
    pub(crate) fn new(id: NodeId) -> TcpNetwork {
        TcpNetwork {
            shared: Arc::new(Shared {
                id,
                peers: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// From now on, dials `target` at `addr` instead of the membership's address (`None`: the membership's
    /// again). Fault-injection tests route each node's controller traffic through a proxy per pair of nodes,
    /// which the shared membership cannot express. Pooled connections to the old address are dropped.
    pub(crate) fn route_for_test(&self, target: NodeId, addr: Option<String>) {
        let mut routes = self.shared.routes.lock().unwrap_or_else(|e| e.into_inner());
        match addr {
            Some(a) => routes.insert(target, a),
            None => routes.remove(&target),
        };
    }

    fn routed(&self, target: NodeId, addr: &str) -> String {
        let routes = self.shared.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .get(&target)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Peer>> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is a
        // single field store), so a poisoned lock is still usable.
        self.shared
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Some(last error)` for a peer whose last exchange failed, `None` if it succeeded or was
    /// never attempted.
    pub(crate) fn last_error(&self, target: NodeId) -> Option<String> {
        self.peers().get(&target).and_then(|p| p.last_error.clone())
    }

    /// Since when every dial to `target` was refused, if the latest dials were.
    pub(crate) fn refused_since(&self, target: NodeId) -> Option<Instant> {
        self.peers().get(&target).and_then(|p| p.refused_since)
    }

    /// When the last exchange with `target` succeeded, if one did.
    pub(crate) fn last_ok(&self, target: NodeId) -> Option<SystemTime> {
        self.peers().get(&target).and_then(|p| p.last_ok)
    }

    /// An idle connection to `target` if there is one (`true`: reused), else a new one.
    async fn checkout(&self, target: NodeId, addr: &str) -> Result<(TcpStream, bool), io::Error> {
        {
            let mut peers = self.peers();
            let peer = peers.entry(target).or_insert_with(|| Peer::new(addr));
            if peer.addr != addr {
                // The membership moved this node: old connections go to the wrong place.
                *peer = Peer::new(addr);
            }
            if let Some(conn) = peer.idle.pop() {
                return Ok((conn, true));
            }
            if let Some(at) = peer.next_dial {
                if Instant::now() < at {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!(
                            "not redialing {addr} yet after {} failed attempts: {}",
                            peer.failures,
                            peer.last_error.as_deref().unwrap_or("unknown error")
                        ),
                    ));
                }
            }
        }
        match TcpStream::connect(addr).await {
            Ok(conn) => {
                // Frames are written whole; Nagle would only delay heartbeats.
                let _ = conn.set_nodelay(true);
                Ok((conn, false))
            }
            Err(e) => {
                let mut peers = self.peers();
                if let Some(peer) = peers.get_mut(&target).filter(|p| p.addr == addr) {
                    peer.failures = peer.failures.saturating_add(1);
                    let backoff = DIAL_BACKOFF_MIN
                        .saturating_mul(1 << peer.failures.min(8))
                        .min(DIAL_BACKOFF_MAX);
                    peer.next_dial = Some(Instant::now() + backoff);
                    peer.last_error = Some(format!("connect to {addr}: {e}"));
                    if e.kind() == io::ErrorKind::ConnectionRefused {
                        peer.refused_since.get_or_insert_with(Instant::now);
                    } else {
                        peer.refused_since = None;
                    }
                }
                Err(e)
            }
        }
    }

    fn checkin(&self, target: NodeId, addr: &str, conn: TcpStream) {
        let mut peers = self.peers();
        if let Some(peer) = peers.get_mut(&target).filter(|p| p.addr == addr) {
            peer.failures = 0;
            peer.next_dial = None;
            peer.last_error = None;
            peer.refused_since = None;
            peer.last_ok = Some(SystemTime::now());
            if peer.idle.len() < MAX_IDLE_PER_PEER {
                peer.idle.push(conn);
            }
        }
    }

    fn drop_idle(&self, target: NodeId) {
        if let Some(peer) = self.peers().get_mut(&target) {
            peer.idle.clear();
        }
    }

    fn note_failure(&self, target: NodeId, addr: &str, what: &str) {
        if let Some(peer) = self.peers().get_mut(&target).filter(|p| p.addr == addr) {
            peer.last_error = Some(what.to_string());
        }
    }

    /// Sends `body` to `target` and reads one response, within `ttl` in total.
    ///
    /// With `reuse`, a pooled connection may be used, and if it turns out dead (the peer
    /// restarted since) the request is sent once more on a fresh connection; only requests that
    /// are safe to receive twice may set it (raft RPCs are: a peer answers a duplicate
    /// AppendEntries or Vote the same way).
    pub(crate) async fn call(
        &self,
        target: NodeId,
        addr: &str,
        body: &Request,
        ttl: Duration,
        reuse: bool,
    ) -> Result<Response, CallError> {
        let addr = &self.routed(target, addr);
        let frame = serde_json::to_vec(&EnvelopeRef { to: target, body })
            .map_err(|e| CallError::Unreachable(io::Error::other(e)))?;
        let result = tokio::time::timeout(ttl, async {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let (mut conn, reused) = if reuse {
                    self.checkout(target, addr).await
                } else {
                    self.checkout_fresh(target, addr).await
                }
                .map_err(CallError::Unreachable)?;
                match exchange(&mut conn, &frame).await {
                    Ok(resp) => {
                        self.checkin(target, addr, conn);
                        return Ok(resp);
                    }
                    Err(_) if reused && attempts == 1 => {
                        // The peer closed it (e.g. restarted); the other idle ones are as stale.
                        self.drop_idle(target);
                        continue;
                    }
                    Err(e) => return Err(CallError::Network(e)),
                }
            }
        })
        .await;
        let result = result.unwrap_or(Err(CallError::Timeout(ttl)));
        match &result {
            // The dial already recorded why it failed.
            Ok(_) | Err(CallError::Unreachable(_)) => {}
            Err(CallError::Network(e)) => {
                self.note_failure(target, addr, &format!("connection to {addr} failed: {e}"))
            }
            Err(CallError::Timeout(t)) => self.note_failure(
                target,
                addr,
                &format!("no response from {addr} within {t:?}"),
            ),
        }
        result
    }

    async fn checkout_fresh(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<(TcpStream, bool), io::Error> {
        {
            let mut peers = self.peers();
            let peer = peers.entry(target).or_insert_with(|| Peer::new(addr));
            if peer.addr != addr {
                *peer = Peer::new(addr);
            }
        }
        // Bypasses the dial backoff too: a forward is a user request and should see the truth now.
        let conn = TcpStream::connect(addr).await.inspect_err(|e| {
            self.note_failure(target, addr, &format!("connect to {addr}: {e}"));
        })?;
        let _ = conn.set_nodelay(true);
        Ok((conn, false))
    }

    /// Sends a heartbeat for `broker` to the leader `target` at `addr`, within `timeout`. Unlike
    /// other forwarded ops it may reuse a pooled connection (and be sent twice): recording a
    /// heartbeat twice is harmless.
    pub(crate) async fn heartbeat(
        &self,
        target: NodeId,
        addr: &str,
        broker: i32,
        timeout: Duration,
    ) -> LeaderReply {
        let req = Request::Forward {
            op: LeaderOp::Heartbeat { broker },
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(target, addr, &req, timeout, true).await {
            Ok(Response::Forward(reply)) => reply,
            Ok(Response::Rejected(msg)) => {
                LeaderReply::Refused(format!("node {target} at {addr} refused: {msg}"))
            }
            Ok(other) => LeaderReply::Unavailable(format!(
                "node {target} at {addr} answered a heartbeat with {}",
                response_kind(&other)
            )),
            Err(e) => LeaderReply::Unavailable(format!(
                "heartbeat to leader {target} at {addr} failed: {e:?}"
            )),
        }
    }

    /// Forwards `op` to the leader `target` at `addr`. Uses a fresh connection, never a pooled
    /// one: a pooled connection that turns out dead would leave it unknown whether the leader
    /// received the op, and forwarded ops are not safe to send twice.
    pub(crate) async fn forward(
        &self,
        target: NodeId,
        addr: &str,
        op: LeaderOp,
        timeout: Duration,
    ) -> LeaderReply {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let req = Request::Forward { op, timeout_ms };
        // A little slack so that the leader's own verdict on a timeout arrives before ours.
        match self
            .call(
                target,
                addr,
                &req,
                timeout + Duration::from_millis(200),
                false,
            )
            .await
        {
            Ok(Response::Forward(reply)) => reply,
            Ok(Response::Rejected(msg)) => {
                LeaderReply::Refused(format!("node {target} at {addr} refused: {msg}"))
            }
            Ok(other) => LeaderReply::Indeterminate(format!(
                "node {target} at {addr} answered a forwarded request with {}",
                response_kind(&other)
            )),
            Err(CallError::Unreachable(e)) => {
                LeaderReply::Unavailable(format!("leader {target} at {addr} is unreachable: {e}"))
            }
            Err(CallError::Timeout(t)) => LeaderReply::Indeterminate(format!(
                "no answer from leader {target} at {addr} within {t:?}"
            )),
            Err(CallError::Network(e)) => LeaderReply::Indeterminate(format!(
                "connection to leader {target} at {addr} failed after sending: {e}"
            )),
        }
    }
}

/// Tries a TCP connection to each of `peers` at once, within [`PROBE_TIMEOUT`]; returns why
/// each one that could not be reached failed. Used only to explain an error (which voters are
/// down), never to decide anything.
pub(crate) async fn probe(peers: Vec<(NodeId, String)>) -> Vec<(NodeId, String, String)> {
    let mut probes = JoinSet::new();
    for (id, addr) in peers {
        probes.spawn(async move {
            let failure = match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(&addr)).await
            {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no connection within {PROBE_TIMEOUT:?}")),
            };
            failure.map(|f| (id, addr, f))
        });
    }
    let mut down: Vec<_> = probes.join_all().await.into_iter().flatten().collect();
    down.sort();
    down
}

fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::AppendEntries(_) => "an AppendEntries response",
        Response::Vote(_) => "a Vote response",
        Response::InstallSnapshot(_) => "an InstallSnapshot response",
        Response::Forward(_) => "a forward response",
        Response::Rejected(_) => "a rejection",
    }
}

async fn exchange(conn: &mut TcpStream, frame: &[u8]) -> io::Result<Response> {
    write_frame(conn, frame).await?;
    let body = match read_frame(conn).await {
        Ok(b) => b,
        Err(ReadError::Closed) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the connection without answering",
            ))
        }
        Err(ReadError::TooLarge(n)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response frame of {n} bytes exceeds the {MAX_FRAME_BYTES} byte limit"),
            ))
        }
        Err(ReadError::Stalled | ReadError::Idle) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stalled in the middle of a response frame",
            ))
        }
        Err(ReadError::Io(e)) => return Err(e),
    };
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// openraft's client for one peer; cheap, backed by the shared pool.
pub(crate) struct PeerClient {
    net: TcpNetwork,
    target: NodeId,
    addr: String,
}

impl PeerClient {
    async fn rpc<E: std::error::Error>(
        &self,
        req: Request,
        action: RPCTypes,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, BasicNode, E>> {
        // Give up at the soft limit, so that we report why before openraft drops the future at
        // the hard one.
        let ttl = option.soft_ttl();
        match self
            .net
            .call(self.target, &self.addr, &req, ttl, true)
            .await
        {
            Ok(Response::Rejected(msg)) => {
                Err(RPCError::Network(NetworkError::new(&io::Error::other(
                    format!("node {} at {} refused: {msg}", self.target, self.addr),
                ))))
            }
            Ok(resp) => Ok(resp),
            Err(CallError::Unreachable(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(CallError::Timeout(timeout)) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.net.shared.id,
                target: self.target,
                timeout,
            })),
            Err(CallError::Network(e)) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(&self, resp: &Response) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Network(NetworkError::new(&io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "node {} at {} answered with {}",
                self.target,
                self.addr,
                response_kind(resp)
            ),
        )))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .rpc(
                Request::AppendEntries(rpc),
                RPCTypes::AppendEntries,
                &option,
            )
            .await?
        {
            Response::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .rpc(
                Request::InstallSnapshot(rpc),
                RPCTypes::InstallSnapshot,
                &option,
            )
            .await?
        {
            Response::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .rpc(Request::Vote(rpc), RPCTypes::Vote, &option)
            .await?
        {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    /// Replication to an unreachable peer retries after 100 ms, doubling up to 1 s, so a voter
    /// that comes back is caught up within about a second.
    fn backoff(&self) -> Backoff {
        Backoff::new((0u32..).map(|i| {
            Duration::from_millis(100)
                .saturating_mul(1 << i.min(4))
                .min(Duration::from_secs(1))
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Server side.

/// The controller listener's accept loop. Dropping or [`Server::stop`]ping it closes the listener
/// and every connection it serves.
pub(crate) struct Server {
    task: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl Server {
    pub(crate) fn spawn(
        listener: TcpListener,
        id: NodeId,
        raft: Raft,
        liveness: Arc<Liveness>,
        view: Arc<QuorumView>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let node = Node {
            id,
            raft,
            inbox: Arc::new(tokio::sync::Mutex::new(None)),
            liveness,
            view: Some(view),
            forwards: Arc::new(Semaphore::new(MAX_CONCURRENT_FORWARDS)),
            idle_timeout: IDLE_CONNECTION_TIMEOUT,
        };
        let task = tokio::spawn(accept_loop(listener, node));
        Ok(Server {
            task: Some(task),
            local_addr,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection, and returns once the port is released.
    pub(crate) async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What every connection of the controller listener serves.
#[derive(Clone)]
struct Node {
    id: NodeId,
    raft: Raft,
    /// The snapshot being received in chunks, shared by all connections (the leader may send
    /// successive chunks on different pooled connections).
    inbox: Arc<tokio::sync::Mutex<Option<Streaming<TypeConfig>>>>,
    /// Where heartbeats are recorded when this node leads.
    liveness: Arc<Liveness>,
    /// Answers DescribeQuorum when this node leads.
    view: Option<Arc<QuorumView>>,
    /// Bounds forwarded requests served at once ([`MAX_CONCURRENT_FORWARDS`]).
    forwards: Arc<Semaphore>,
    idle_timeout: Duration,
}

async fn accept_loop(listener: TcpListener, node: Node) {
    // Owned here so that aborting this task aborts every connection task with it.
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. out of file descriptors: back off rather than spin.
                tracing::warn!(error = %e, "controller listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_CONNECTIONS {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "controller listener full; closing new connection");
            continue;
        }
        let _ = stream.set_nodelay(true);
        conns.spawn(serve_connection(stream, peer, node.clone()));
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, node: Node) {
    let id = node.id;
    loop {
        let frame = match read_request(&mut stream, node.idle_timeout).await {
            Ok(f) => f,
            Err(ReadError::Closed) => return,
            Err(ReadError::Idle) => {
                tracing::debug!(%peer, timeout = ?node.idle_timeout, "closing an idle controller connection");
                return;
            }
            Err(ReadError::TooLarge(n)) => {
                let msg = format!(
                    "frame of {n} bytes exceeds the {MAX_FRAME_BYTES} byte limit of the controller listener"
                );
                tracing::warn!(%peer, "{msg}; closing the connection");
                reject(&mut stream, msg).await;
                return;
            }
            Err(ReadError::Stalled) => {
                tracing::warn!(%peer, timeout = ?FRAME_BODY_TIMEOUT, "controller frame body did not arrive in time; closing the connection");
                return;
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "controller connection failed");
                return;
            }
        };
        let env: Envelope = match serde_json::from_slice(&frame) {
            Ok(env) => env,
            Err(e) => {
                let msg = format!("undecodable controller request: {e}");
                tracing::warn!(%peer, "{msg}; closing the connection");
                reject(&mut stream, msg).await;
                return;
            }
        };
        let to_any = env.to == ANY_NODE && matches!(env.body, Request::Forward { .. });
        if env.to != id && !to_any {
            let msg = format!(
                "this is node {id}, not node {}; check controller.quorum.voters",
                env.to
            );
            tracing::warn!(%peer, "{msg}");
            reject(&mut stream, msg).await;
            return;
        }
        if let Err(why) = check(&env.body) {
            let msg = format!("invalid controller request: {why}");
            tracing::warn!(%peer, "{msg}; closing the connection");
            reject(&mut stream, msg).await;
            return;
        }
        let resp = handle(&node, env.body).await;
        if let Response::Rejected(msg) = &resp {
            tracing::warn!(%peer, "{msg}; closing the connection");
            reject(&mut stream, msg.clone()).await;
            return;
        }
        let bytes = match serde_json::to_vec(&resp) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot encode a controller response");
                return;
            }
        };
        if let Err(e) = write_frame(&mut stream, &bytes).await {
            tracing::debug!(%peer, error = %e, "controller connection failed while answering");
            return;
        }
    }
}

async fn reject(stream: &mut TcpStream, msg: String) {
    if let Ok(bytes) = serde_json::to_vec(&Response::Rejected(msg)) {
        // Best effort: the connection is closed right after either way.
        let _ = tokio::time::timeout(Duration::from_secs(1), write_frame(stream, &bytes)).await;
    }
}

async fn handle(node: &Node, req: Request) -> Response {
    let raft = &node.raft;
    match req {
        Request::AppendEntries(rpc) => Response::AppendEntries(raft.append_entries(rpc).await),
        Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => receive_snapshot_chunk(node, rpc).await,
        Request::Forward {
            op: LeaderOp::Heartbeat { broker },
            ..
        } => Response::Forward(forward::heartbeat(raft, &node.liveness, broker)),
        // Read from memory, like a heartbeat: takes no forwarding slot.
        Request::Forward {
            op: LeaderOp::DescribeQuorum,
            ..
        } => Response::Forward(forward::describe_quorum(raft, node.view.as_deref())),
        Request::Forward { op, timeout_ms } => {
            let Ok(_permit) = node.forwards.clone().try_acquire_owned() else {
                return Response::Forward(LeaderReply::Unavailable(format!(
                    "node {} is already serving {MAX_CONCURRENT_FORWARDS} forwarded requests",
                    node.id
                )));
            };
            let timeout = Duration::from_millis(timeout_ms).min(MAX_FORWARD_WAIT);
            Response::Forward(forward::execute(raft, op, timeout).await)
        }
    }
}

/// Structural checks on a raft RPC before openraft sees it. openraft trusts its peers: entries
/// that do not follow `prev_log_id` trip its assertions and stop the raft core, and a term near
/// `u64::MAX` overflows later. A peer running this code never sends such a request, so refusing
/// it costs nothing and keeps a stray or hostile client from stopping the node.
fn check(req: &Request) -> Result<(), String> {
    fn check_log_id(what: &str, id: &crate::raft::LogId) -> Result<(), String> {
        if id.leader_id.term > MAX_TERM || id.index > MAX_INDEX {
            return Err(format!("{what} {id} is out of range"));
        }
        Ok(())
    }
    let check_vote = |vote: &openraft::Vote<NodeId>| {
        if vote.leader_id.term > MAX_TERM {
            return Err(format!("term {} is out of range", vote.leader_id.term));
        }
        Ok(())
    };
    match req {
        Request::AppendEntries(rpc) => {
            check_vote(&rpc.vote)?;
            let mut prev = rpc.prev_log_id;
            if let Some(p) = &prev {
                check_log_id("prev_log_id", p)?;
            }
            for entry in &rpc.entries {
                let id = entry.log_id;
                check_log_id("entry", &id)?;
                let expected = prev.map_or(0, |p| p.index + 1);
                if id.index != expected {
                    return Err(format!(
                        "entry {id} does not follow {prev:?} (expected index {expected})"
                    ));
                }
                if prev.is_some_and(|p| p.leader_id.term > id.leader_id.term) {
                    return Err(format!("entry {id} has a lower term than {prev:?}"));
                }
                if id.leader_id.term > rpc.vote.leader_id.term {
                    return Err(format!(
                        "entry {id} has a higher term than the sender's vote {}",
                        rpc.vote
                    ));
                }
                prev = Some(id);
            }
            if let Some(c) = &rpc.leader_commit {
                check_log_id("leader_commit", c)?;
            }
            Ok(())
        }
        Request::Vote(rpc) => {
            check_vote(&rpc.vote)?;
            match &rpc.last_log_id {
                Some(l) => check_log_id("last_log_id", l),
                None => Ok(()),
            }
        }
        Request::InstallSnapshot(rpc) => {
            check_vote(&rpc.vote)?;
            if let Some(l) = &rpc.meta.last_log_id {
                check_log_id("snapshot last_log_id", l)?;
            }
            let end = rpc.offset.checked_add(rpc.data.len() as u64);
            if end.is_none_or(|end| end > MAX_SNAPSHOT_BYTES) {
                return Err(format!(
                    "snapshot chunk at offset {} of {} bytes goes beyond the {MAX_SNAPSHOT_BYTES} byte limit",
                    rpc.offset,
                    rpc.data.len()
                ));
            }
            Ok(())
        }
        Request::Forward { .. } => Ok(()),
    }
}

/// openraft's `Raft::install_snapshot`, plus one check: the assembled snapshot must decode as
/// [`ClusterState`] before it is installed. openraft treats a snapshot the state machine cannot
/// install as a storage failure and stops the raft core, so an undecodable snapshot (corrupt, or
/// not from a peer at all) is refused here instead.
async fn receive_snapshot_chunk(node: &Node, req: InstallSnapshotRequest<TypeConfig>) -> Response {
    let raft = &node.raft;
    let req_vote = req.vote;
    let my_vote = raft.metrics().borrow().vote;
    if req_vote < my_vote {
        // From a stale leader: answer with our vote, which makes it step down.
        return Response::InstallSnapshot(Ok(InstallSnapshotResponse { vote: my_vote }));
    }
    let finished = {
        let mut inbox = node.inbox.lock().await;
        Chunked::receive_snapshot(&mut inbox, raft, req).await
    };
    let snapshot = match finished {
        Err(e) => return Response::InstallSnapshot(Err(e)),
        Ok(None) => {
            return Response::InstallSnapshot(Ok(InstallSnapshotResponse { vote: my_vote }))
        }
        Ok(Some(snapshot)) => snapshot,
    };
    if let Err(e) = serde_json::from_slice::<ClusterState>(snapshot.snapshot.get_ref()) {
        return Response::Rejected(format!(
            "snapshot {} does not decode as cluster metadata: {e}",
            snapshot.meta.snapshot_id
        ));
    }
    Response::InstallSnapshot(
        raft.install_full_snapshot(req_vote, snapshot)
            .await
            .map(|r| InstallSnapshotResponse { vote: r.vote })
            .map_err(RaftError::Fatal),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"hello").await.unwrap();
        assert_eq!(read_frame(&mut b).await.ok(), Some(b"hello".to_vec()));

        a.write_all(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            read_frame(&mut b).await,
            Err(ReadError::TooLarge(n)) if n as usize == MAX_FRAME_BYTES + 1
        ));

        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        let err = write_frame(&mut a, &big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_not_a_short_frame() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(ReadError::Io(_))));
    }

    fn vote() -> VoteRequest<NodeId> {
        VoteRequest::new(openraft::Vote::new(1, 1), None)
    }

    #[tokio::test]
    async fn a_peer_that_refuses_connections_is_unreachable_at_once() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut net = TcpNetwork::new(1);
        let mut client = net
            .new_client(
                2,
                &BasicNode {
                    addr: addr.to_string(),
                },
            )
            .await;
        let start = Instant::now();
        let err = client
            .vote(vote(), RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(net
            .last_error(2)
            .is_some_and(|e| e.contains(&addr.to_string())));
        // Within the dial backoff the next attempt fails without dialing, still as Unreachable.
        let err = client
            .vote(vote(), RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out_within_the_rpc_option() {
        // Accepted by the kernel (backlog) but never read: the request goes out, no answer comes.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let mut net = TcpNetwork::new(1);
        let mut client = net
            .new_client(
                2,
                &BasicNode {
                    addr: addr.to_string(),
                },
            )
            .await;
        let start = Instant::now();
        let err = client
            .vote(vote(), RPCOption::new(Duration::from_millis(400)))
            .await
            .unwrap_err();
        assert!(matches!(err, RPCError::Timeout(_)), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        drop(silent);
    }

    /// A fake peer that grants every vote; with `close_after_each` it closes each connection after
    /// one answer. Returns its address and the number of connections it accepted.
    async fn vote_granting_peer(
        close_after_each: bool,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    while let Ok(frame) = read_frame(&mut conn).await {
                        let env: Envelope = serde_json::from_slice(&frame).unwrap();
                        let Request::Vote(req) = env.body else {
                            panic!("expected a vote")
                        };
                        let resp = Response::Vote(Ok(VoteResponse::new(req.vote, None, true)));
                        let bytes = serde_json::to_vec(&resp).unwrap();
                        write_frame(&mut conn, &bytes).await.unwrap();
                        if close_after_each {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn rpcs_reuse_one_connection() {
        let (addr, accepted) = vote_granting_peer(false).await;
        let mut net = TcpNetwork::new(1);
        let mut client = net
            .new_client(
                2,
                &BasicNode {
                    addr: addr.to_string(),
                },
            )
            .await;
        for _ in 0..5 {
            let resp = client
                .vote(vote(), RPCOption::new(Duration::from_secs(5)))
                .await
                .unwrap();
            assert!(resp.vote_granted);
        }
        // A second client for the same peer (openraft makes one per election) shares the pool.
        let mut other = net
            .new_client(
                2,
                &BasicNode {
                    addr: addr.to_string(),
                },
            )
            .await;
        other
            .vote(vote(), RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_by_the_peer_is_replaced_transparently() {
        let (addr, accepted) = vote_granting_peer(true).await;
        let mut net = TcpNetwork::new(1);
        let mut client = net
            .new_client(
                2,
                &BasicNode {
                    addr: addr.to_string(),
                },
            )
            .await;
        for _ in 0..3 {
            client
                .vote(vote(), RPCOption::new(Duration::from_secs(5)))
                .await
                .expect("a dead pooled connection is retried on a fresh one");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(net.last_error(2), None);
    }

    #[tokio::test]
    async fn a_forward_to_a_leader_that_never_answers_is_indeterminate_within_its_bound() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let net = TcpNetwork::new(1);
        let start = Instant::now();
        let reply = net
            .forward(2, &addr, LeaderOp::ReadIndex, Duration::from_millis(300))
            .await;
        assert!(matches!(reply, LeaderReply::Indeterminate(_)), "{reply:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        drop(silent);

        // Nothing listening: the request was never sent, so the caller may retry elsewhere.
        let reply = net
            .forward(2, &addr, LeaderOp::ReadIndex, Duration::from_millis(300))
            .await;
        assert!(matches!(reply, LeaderReply::Unavailable(_)), "{reply:?}");
    }

    /// A served node around an uninitialized one-voter raft (it leads nothing), with `permits`
    /// forwarding slots and the given idle timeout.
    async fn test_node(
        dir: &std::path::Path,
        permits: usize,
        idle_timeout: Duration,
    ) -> (Node, Arc<Semaphore>) {
        let log_store = crate::log_store::LogStore::open(dir).unwrap();
        let (sm, state_rx) = crate::state_machine::StateMachine::open(dir).unwrap();
        let config = Arc::new(crate::raft::config().validate().unwrap());
        let raft = Raft::new(1, config, crate::raft::NoNetwork, log_store, sm)
            .await
            .unwrap();
        let forwards = Arc::new(Semaphore::new(permits));
        let node = Node {
            id: 1,
            raft,
            inbox: Arc::new(tokio::sync::Mutex::new(None)),
            liveness: Arc::new(Liveness::new(state_rx)),
            view: None,
            forwards: forwards.clone(),
            idle_timeout,
        };
        (node, forwards)
    }

    fn forward_req(op: LeaderOp) -> Request {
        Request::Forward {
            op,
            timeout_ms: 500,
        }
    }

    #[tokio::test]
    async fn forwarded_requests_beyond_the_bound_are_unavailable_but_heartbeats_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let (node, forwards) = test_node(dir.path(), 1, IDLE_CONNECTION_TIMEOUT).await;
        let held = forwards.clone().try_acquire_owned().unwrap();
        let resp = handle(&node, forward_req(LeaderOp::ReadIndex)).await;
        assert!(
            matches!(&resp, Response::Forward(LeaderReply::Unavailable(m)) if m.contains("already serving")),
            "{resp:?}"
        );
        // Heartbeats take no slot: this node is no leader, and says so.
        let resp = handle(&node, forward_req(LeaderOp::Heartbeat { broker: 2 })).await;
        assert!(
            matches!(resp, Response::Forward(LeaderReply::NotLeader { .. })),
            "{resp:?}"
        );
        drop(held);
        // With a free slot the request reaches raft (which is not the leader).
        let resp = handle(&node, forward_req(LeaderOp::ReadIndex)).await;
        assert!(
            matches!(resp, Response::Forward(LeaderReply::NotLeader { .. })),
            "{resp:?}"
        );
        assert_eq!(forwards.available_permits(), 1, "the slot is released");
        node.raft.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_but_a_busy_one_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let idle = Duration::from_millis(300);
        let (node, _) = test_node(dir.path(), 4, idle).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(accept_loop(listener, node.clone()));

        // A connection that sends a request every 100 ms stays open past the idle timeout.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let frame = serde_json::to_vec(&EnvelopeRef {
            to: 1,
            body: &forward_req(LeaderOp::Heartbeat { broker: 2 }),
        })
        .unwrap();
        for _ in 0..6 {
            let resp = exchange(&mut busy, &frame).await.unwrap();
            assert!(matches!(
                resp,
                Response::Forward(LeaderReply::NotLeader { .. })
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // One that says nothing is closed after the idle timeout.
        let mut quiet = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), quiet.read(&mut buf))
            .await
            .expect("closed within the bound")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        assert!(
            start.elapsed() >= idle - Duration::from_millis(50),
            "{:?}",
            start.elapsed()
        );
        server.abort();
        node.raft.shutdown().await.unwrap();
    }

    #[test]
    fn an_append_entries_frame_of_largest_commands_stays_far_below_the_frame_limit() {
        use crate::forward::{check_command_size, MAX_COMMAND_BYTES};
        use crate::raft::MAX_PAYLOAD_ENTRIES;
        let worst = MAX_COMMAND_BYTES * MAX_PAYLOAD_ENTRIES as usize;
        assert!(worst <= MAX_FRAME_BYTES / 2, "{worst}");

        let config = |len: usize| crate::types::Command::AlterBrokerConfigs {
            set: std::collections::BTreeMap::from([("k".to_string(), "v".repeat(len))]),
            delete: vec![],
            replace_all: false,
        };
        let overhead = serde_json::to_vec(&config(0)).unwrap().len();
        assert_eq!(
            check_command_size(&config(MAX_COMMAND_BYTES - overhead)),
            Ok(())
        );
        let err = check_command_size(&config(MAX_COMMAND_BYTES - overhead + 1)).unwrap_err();
        assert!(err.contains("exceeds the 1048576 byte limit"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_connection_between_frames_is_clean() {
        let (a, mut b) = tokio::io::duplex(1024);
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(ReadError::Closed)));
    }
}
