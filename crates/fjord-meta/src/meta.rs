//! [`Meta`], the handle the broker holds: open/bootstrap, read the state, propose commands, and
//! in a controller quorum forward to the leader and change the voters.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::forward::{self, LeaderOp, LeaderReply};
use crate::liveness::Liveness;
use crate::log_store::LogStore;
use crate::network::{self, Server, TcpNetwork};
use crate::quorum::{QuorumStatus, QuorumView};
use crate::raft::{self, NoNetwork, NodeId, Raft};
use crate::state_machine::StateMachine;
use crate::types::{BrokerInfo, ClusterState, Command, CommandResult};
use crate::{Error, Result};

/// How long `open` waits for this node to become the metadata leader. A single voter elects itself
/// within one election timeout; anything much longer means the store is broken.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long [`Meta::open_quorum`] waits for a leader and for this node to catch up with it. Long
/// enough for the other voters of a cluster being started together to come up.
pub const QUORUM_OPEN_WAIT: Duration = Duration::from_secs(60);
/// Default bound of a proposal or voter change in a quorum (Kafka's `request.timeout.ms` is 30 s),
/// including finding the leader and retrying while there is none. See [`Meta::set_request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between attempts to reach a leader while none is known or it is unreachable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// A command the leader has committed is waited for locally at least this long, even when the
/// request's own deadline is nearly over: a follower applies within a heartbeat or two.
const MIN_APPLY_WAIT: Duration = Duration::from_secs(2);

/// Clone-able handle to the metadata store (an `Arc` inside).
#[derive(Clone)]
pub struct Meta {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's raft id (its broker id).
    id: NodeId,
    raft: Raft,
    state_rx: watch::Receiver<Arc<ClusterState>>,
    /// Set by the first `shutdown`; later proposals fail fast with [`Error::Shutdown`] instead of
    /// reaching a stopped raft core.
    shut_down: AtomicBool,
    /// `None` for a one-voter store opened with [`Meta::open`], which has no network at all.
    quorum: Option<Quorum>,
    /// The leader's record of broker heartbeats (see [`crate::liveness`]).
    liveness: Arc<Liveness>,
    /// The tasks started by [`Meta::start_liveness`]; aborted by `shutdown`.
    liveness_tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The leader's view of its followers' progress (DescribeQuorum).
    view: Arc<QuorumView>,
}

/// How a node of a networked quorum finds the quorum and what it is ([`Meta::open_node`]).
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// `controller.quorum.voters`: the static voter set (the first start of a voter initializes raft
    /// with it); may be empty when `bootstrap` is given.
    pub voters: BTreeMap<i32, SocketAddr>,
    /// `controller.quorum.bootstrap.servers` (KIP-853): controllers known by address only, asked to
    /// add this node as an observer.
    pub bootstrap: Vec<SocketAddr>,
    /// Where this node listens for raft RPCs and forwarded requests (a controller's CONTROLLER
    /// listener; an observer's metadata listener). Port 0 picks a free one, which peers learn.
    pub listen: SocketAddr,
    /// The host peers dial when `listen` is a wildcard address (`0.0.0.0`, `::`), which cannot be dialed;
    /// ignored otherwise.
    pub advertised_host: Option<String>,
    /// The broker registered for this node; `None` on a controller-only node.
    pub broker: Option<BrokerInfo>,
    /// Bound on finding the quorum and catching up with it.
    pub open_wait: Duration,
}

/// The networked part of a controller-quorum member.
struct Quorum {
    net: TcpNetwork,
    /// Taken (and stopped) by `shutdown`.
    server: Mutex<Option<Server>>,
    listen: SocketAddr,
    request_timeout_ms: AtomicU64,
}

impl Quorum {
    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.load(Ordering::Relaxed))
    }
}

fn raft_err(e: impl std::fmt::Display) -> Error {
    Error::Raft(e.to_string())
}

impl Meta {
    /// Opens (or bootstraps) the store in `dir` (e.g. `<log.dirs>/__meta`). When the store is new,
    /// initializes a one-voter cluster with `node_id`, waits (bounded) until this node is leader,
    /// then proposes `RegisterBroker(self_info)` if the registered info differs. Survives kill -9:
    /// committed entries are fsynced before they are acknowledged.
    pub async fn open(dir: &Path, node_id: i32, self_info: BrokerInfo) -> Result<Meta> {
        let raft_id = check_ids(node_id, &self_info)?;
        std::fs::create_dir_all(dir)?;
        let log_store = LogStore::open(dir)?;
        let (state_machine, state_rx) = StateMachine::open(dir)?;

        let config = Arc::new(raft::config().validate().map_err(raft_err)?);
        let raft = Raft::new(raft_id, config, NoNetwork, log_store, state_machine)
            .await
            .map_err(raft_err)?;
        let view = QuorumView::new(None);
        QuorumView::watch(&view, &raft);
        let meta = Meta {
            inner: Arc::new(Inner {
                id: raft_id,
                raft,
                view,
                liveness: Arc::new(Liveness::new(state_rx.clone())),
                state_rx,
                shut_down: AtomicBool::new(false),
                quorum: None,
                liveness_tasks: Mutex::new(Vec::new()),
            }),
        };

        match meta.bootstrap(raft_id, self_info).await {
            Ok(()) => Ok(meta),
            Err(e) => {
                // Do not leave a raft core running on a directory the caller believes is closed.
                let _ = meta.shutdown().await;
                Err(e)
            }
        }
    }

    async fn bootstrap(&self, raft_id: NodeId, self_info: BrokerInfo) -> Result<()> {
        let raft = &self.inner.raft;
        if !raft.is_initialized().await.map_err(raft_err)? {
            let node = BasicNode {
                addr: format!("{}:{}", self_info.host, self_info.port),
            };
            match raft.initialize(BTreeMap::from([(raft_id, node)])).await {
                Ok(()) => tracing::info!(
                    node_id = raft_id,
                    "initialized a new one-voter metadata cluster"
                ),
                // Already initialized (e.g. a racing start): the goal state is reached anyway.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(raft_err(e)),
            }
        }

        let metrics = raft
            .wait(Some(LEADER_WAIT))
            .current_leader(raft_id, "metadata leader election")
            .await
            .map_err(|_| Error::NotLeader)?;
        // A new leader's first entry (and everything before it) must be applied before the state
        // is trustworthy; otherwise `state()` right after `open` could miss committed commands.
        if let Some(last) = metrics.last_log_index {
            raft.wait(Some(LEADER_WAIT))
                .applied_index_at_least(Some(last), "metadata replay")
                .await
                .map_err(raft_err)?;
        }

        if self.state().cluster_id.is_empty() {
            self.propose(Command::Bootstrap {
                cluster_id: new_cluster_id(),
            })
            .await?;
        }
        if self.state().registration_needed(&self_info) {
            self.propose(Command::RegisterBroker(self_info)).await?;
        }
        Ok(())
    }

    /// Opens (or bootstraps) one member of a controller quorum (KRaft's
    /// `controller.quorum.voters=1@host:port,...`): the store in `dir`, and the controller
    /// listener on `listen`, which serves raft RPCs and requests forwarded to the leader. A combined
    /// broker and controller node: [`Meta::open_node`] with `voters`, this node a voter if it is
    /// listed, and `self_info` registered as a broker.
    pub async fn open_quorum(
        dir: &Path,
        node_id: i32,
        voters: BTreeMap<i32, SocketAddr>,
        listen: SocketAddr,
        self_info: BrokerInfo,
    ) -> Result<Meta> {
        Self::open_quorum_with_wait(dir, node_id, voters, listen, self_info, QUORUM_OPEN_WAIT).await
    }

    /// [`Meta::open_quorum`] with a different bound on waiting for the quorum.
    pub async fn open_quorum_with_wait(
        dir: &Path,
        node_id: i32,
        voters: BTreeMap<i32, SocketAddr>,
        listen: SocketAddr,
        self_info: BrokerInfo,
        open_wait: Duration,
    ) -> Result<Meta> {
        Self::open_node(
            dir,
            node_id,
            QuorumConfig {
                voters,
                bootstrap: Vec::new(),
                listen,
                advertised_host: None,
                broker: Some(self_info),
                open_wait,
            },
        )
        .await
    }

    /// Opens (or bootstraps) a node of a networked quorum, whatever its roles:
    ///
    /// - **A voter's first start** (`node_id` in `config.voters`, empty store): initializes raft with
    ///   exactly `voters` as the membership. Every voter does the same, which openraft documents as safe
    ///   when the membership is identical (whoever initializes first wins; the others find the cluster
    ///   formed). `voters` must therefore be the same on every voter.
    /// - **Any other node** (a broker-only node, a controller to be added with AddRaftVoter, or a node that
    ///   is a learner in its stored membership): asks the quorum to make it a learner, a KRaft observer,
    ///   at its listener's address (KIP-853's observers; they replicate the log and never vote). The request
    ///   goes to any controller of `voters` or `bootstrap` (`controller.quorum.bootstrap.servers`, known by
    ///   address only) and on to the leader. Repeated at every start, so a learner that listens elsewhere
    ///   since is found again.
    /// - **Later starts of a member**: `voters` is ignored; the membership is what the raft log says
    ///   (voters may have been added or removed since).
    ///
    /// Then waits (at most `open_wait`) until a leader is known and this node has applied everything
    /// committed before it asked, and registers `config.broker` if it is given and changed (a
    /// controller-only node registers nothing and is never a broker). The error says which voters could
    /// not be reached.
    pub async fn open_node(dir: &Path, node_id: i32, config: QuorumConfig) -> Result<Meta> {
        let raft_id = NodeId::try_from(node_id)
            .map_err(|_| invalid_input(format!("node id {node_id} < 0")))?;
        if let Some(info) = &config.broker {
            check_ids(node_id, info)?;
        }
        if config.voters.is_empty() && config.bootstrap.is_empty() {
            return Err(invalid_input(
                "neither controller.quorum.voters nor controller.quorum.bootstrap.servers names a controller"
                    .into(),
            ));
        }
        let voter_nodes = config
            .voters
            .iter()
            .map(|(&id, addr)| {
                let id = NodeId::try_from(id)
                    .map_err(|_| invalid_input(format!("voter id {id} < 0")))?;
                Ok((
                    id,
                    BasicNode {
                        addr: addr.to_string(),
                    },
                ))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        std::fs::create_dir_all(dir)?;
        let log_store = LogStore::open(dir)?;
        let (state_machine, state_rx) = StateMachine::open(dir)?;
        let listen = config.listen;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("cannot listen for controllers on {listen}: {e}"),
            ))
        })?;

        let raft_config = Arc::new(raft::quorum_config().validate().map_err(raft_err)?);
        let net = TcpNetwork::new(raft_id);
        let raft = Raft::new(raft_id, raft_config, net.clone(), log_store, state_machine)
            .await
            .map_err(raft_err)?;
        let liveness = Arc::new(Liveness::new(state_rx.clone()));
        let view = QuorumView::new(Some(net.clone()));
        QuorumView::watch(&view, &raft);
        let server = Server::spawn(
            listener,
            raft_id,
            raft.clone(),
            liveness.clone(),
            view.clone(),
        )?;
        let meta = Meta {
            inner: Arc::new(Inner {
                id: raft_id,
                raft,
                view,
                liveness,
                liveness_tasks: Mutex::new(Vec::new()),
                state_rx,
                shut_down: AtomicBool::new(false),
                quorum: Some(Quorum {
                    net,
                    listen: server.local_addr(),
                    server: Mutex::new(Some(server)),
                    request_timeout_ms: AtomicU64::new(millis(DEFAULT_REQUEST_TIMEOUT)),
                }),
            }),
        };
        // What this node asks to be known as when it joins as an observer.
        let bound = server_addr(&meta);
        let own_addr = match (&config.advertised_host, bound.ip().is_unspecified()) {
            (Some(host), true) => format!("{host}:{}", bound.port()),
            _ => bound.to_string(),
        };
        let contacts: Vec<(NodeId, String)> = voter_nodes
            .iter()
            .filter(|(&id, _)| id != raft_id)
            .map(|(&id, n)| (id, n.addr.clone()))
            .chain(
                config
                    .bootstrap
                    .iter()
                    .map(|a| (network::ANY_NODE, a.to_string())),
            )
            .collect();
        match meta
            .join(
                raft_id,
                voter_nodes,
                contacts,
                own_addr,
                config.broker,
                config.open_wait,
            )
            .await
        {
            Ok(()) => Ok(meta),
            Err(e) => {
                let _ = meta.shutdown().await;
                Err(e)
            }
        }
    }

    async fn join(
        &self,
        raft_id: NodeId,
        voters: BTreeMap<NodeId, BasicNode>,
        contacts: Vec<(NodeId, String)>,
        own_addr: String,
        self_info: Option<BrokerInfo>,
        open_wait: Duration,
    ) -> Result<()> {
        let raft = &self.inner.raft;
        let deadline = Instant::now() + open_wait;
        let initialized = raft.is_initialized().await.map_err(raft_err)?;
        if !initialized && voters.contains_key(&raft_id) {
            match raft.initialize(voters.clone()).await {
                Ok(()) => tracing::info!(
                    node_id = raft_id,
                    voters = ?voters.keys().collect::<Vec<_>>(),
                    "initialized a new metadata quorum"
                ),
                // Another voter initialized first and already replicated to us: same goal state.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(raft_err(e)),
            }
        } else {
            let is_voter = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                m.membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == raft_id)
            };
            if !is_voter {
                self.join_as_learner(raft_id, own_addr, &contacts, deadline)
                    .await?;
            }
        }

        let stored_addr = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .get_node(&raft_id)
                .map(|n| n.addr.clone())
        };
        if let (Some(stored), Some(listen)) = (stored_addr, self.controller_addr()) {
            if stored != listen.to_string() {
                // E.g. a store created by `Meta::open` (which records the Kafka listener), or a
                // voter moved to another port: peers dial what the membership says.
                tracing::warn!(
                    node_id = raft_id,
                    %stored,
                    %listen,
                    "the raft membership gives this node another controller address than the one it listens on"
                );
            }
        }

        let reply = self
            .run(LeaderOp::ReadIndex, deadline)
            .await
            .map_err(|e| match e {
                Error::NoQuorum(detail) => Error::NoQuorum(format!(
                    "node {raft_id} could not join the metadata quorum: {detail}"
                )),
                e => e,
            })?;
        if let LeaderReply::ReadIndex { index } = reply {
            self.await_applied(index, deadline).await?;
        }

        if self.state().cluster_id.is_empty() {
            // Every voter of a new cluster may get here; the first Bootstrap applied wins.
            self.propose(Command::Bootstrap {
                cluster_id: new_cluster_id(),
            })
            .await?;
        }
        if let Some(self_info) = self_info {
            if self.state().registration_needed(&self_info) {
                self.propose(Command::RegisterBroker(self_info)).await?;
            }
        }
        Ok(())
    }

    /// Asks the quorum, through any of `contacts`, to make this node a learner at its listener's address;
    /// follows the answers to the leader. Retries until `deadline` while no controller can do it.
    async fn join_as_learner(
        &self,
        raft_id: NodeId,
        addr: String,
        contacts: &[(NodeId, String)],
        deadline: Instant,
    ) -> Result<()> {
        let quorum = self.quorum()?;
        let op = LeaderOp::AddLearner {
            id: raft_id,
            addr: addr.clone(),
        };
        let mut problems: Vec<String> = Vec::new();
        loop {
            for (id, contact) in contacts {
                let mut target = (*id, contact.clone());
                // At most one hop: a contact that does not lead names the leader.
                for _ in 0..2 {
                    if self.inner.shut_down.load(Ordering::Acquire) {
                        return Err(Error::Shutdown);
                    }
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(Error::NoQuorum(format!(
                            "node {raft_id} could not join the metadata quorum as an observer within the open bound: {}",
                            problems.join("; ")
                        )));
                    }
                    let reply = quorum
                        .net
                        .forward(target.0, &target.1, op.clone(), remaining)
                        .await;
                    match reply {
                        LeaderReply::Applied { .. } => {
                            tracing::info!(
                                node_id = raft_id,
                                %addr,
                                "joined the metadata quorum as an observer (raft learner)"
                            );
                            return Ok(());
                        }
                        LeaderReply::NotLeader {
                            leader: Some(leader),
                        } if leader != target => target = leader,
                        LeaderReply::Refused(why) => {
                            return Err(Error::Refused(format!(
                                "the controller at {} refused to add node {raft_id} as an observer: {why}",
                                target.1
                            )))
                        }
                        other => {
                            problems.push(format!("{}: {other:?}", target.1));
                            if problems.len() > 8 {
                                problems.remove(0);
                            }
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(RETRY_PAUSE * 4).await;
        }
    }

    /// Runs `op` on the leader, wherever it is, until `deadline`: locally when this node leads,
    /// otherwise forwarded over the controller listener. Retries while no leader is known or the
    /// leader says it did nothing; returns `Applied` or `ReadIndex`, or an error that says whether
    /// the op may have taken effect.
    async fn run(&self, op: LeaderOp, deadline: Instant) -> Result<LeaderReply> {
        let quorum = self.quorum()?;
        let raft = &self.inner.raft;
        let started = Instant::now();
        let mut last_problem = String::from("no leader elected");
        loop {
            if self.inner.shut_down.load(Ordering::Acquire) {
                return Err(Error::Shutdown);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NoQuorum(format!(
                    "no metadata leader accepted the request within {:?} ({last_problem}); {}",
                    now - started,
                    self.quorum_report().await
                )));
            }
            let remaining = deadline - now;
            let (leader, leader_addr) = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                if let Err(fatal) = &m.running_state {
                    return Err(match fatal {
                        Fatal::Stopped => Error::Shutdown,
                        f => raft_err(f),
                    });
                }
                let addr = m
                    .current_leader
                    .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                (m.current_leader, addr.map(|n| n.addr))
            };
            let reply = match (leader, leader_addr) {
                (Some(l), _) if l == self.inner.id => match op {
                    LeaderOp::DescribeQuorum => {
                        forward::describe_quorum(raft, Some(&self.inner.view))
                    }
                    _ => forward::execute(raft, op.clone(), remaining).await,
                },
                (Some(l), Some(addr)) => quorum.net.forward(l, &addr, op.clone(), remaining).await,
                (Some(l), None) => {
                    LeaderReply::Unavailable(format!("leader {l} has no address in the membership"))
                }
                (None, _) => LeaderReply::Unavailable("no leader elected".into()),
            };
            match reply {
                LeaderReply::Applied { .. }
                | LeaderReply::ReadIndex { .. }
                | LeaderReply::HeartbeatAck
                | LeaderReply::Quorum(_) => return Ok(reply),
                LeaderReply::NotLeader { leader } => {
                    last_problem = match leader {
                        Some((id, addr)) => format!("leadership moving to node {id} at {addr}"),
                        None => "leadership moving, new leader not known yet".into(),
                    }
                }
                LeaderReply::Unavailable(msg) => last_problem = msg,
                LeaderReply::Indeterminate(msg) => return Err(Error::Indeterminate(msg)),
                LeaderReply::Refused(msg) => return Err(Error::Refused(msg)),
            }
            tokio::time::sleep(RETRY_PAUSE.min(deadline - Instant::now().min(deadline))).await;
        }
    }

    /// Waits until this node applied log `index`, so that [`Meta::state`] includes it.
    async fn await_applied(&self, index: Option<u64>, deadline: Instant) -> Result<()> {
        let Some(index) = index else {
            return Ok(());
        };
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_APPLY_WAIT);
        match self
            .inner
            .raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "local apply of a committed entry")
            .await
        {
            Ok(_) => Ok(()),
            Err(WaitError::ShuttingDown) => Err(Error::Shutdown),
            Err(WaitError::Timeout(..)) => Err(Error::Raft(format!(
                "log index {index} is committed but node {} did not apply it within {wait:?}",
                self.inner.id
            ))),
        }
    }

    fn quorum(&self) -> Result<&Quorum> {
        self.inner.quorum.as_ref().ok_or_else(|| {
            Error::Refused(
                "this metadata store is a single voter without a controller listener (opened with Meta::open)"
                    .into(),
            )
        })
    }

    /// Which voters this node cannot reach and why, for errors when there is no quorum. Probes
    /// every other voter now rather than trusting the last RPC: a follower may not have talked to
    /// another follower for a long time.
    async fn quorum_report(&self) -> String {
        let Ok(quorum) = self.quorum() else {
            return String::new();
        };
        let (voters, leader, others) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let others: Vec<(NodeId, String)> = voters
                .iter()
                .filter(|&&v| v != self.inner.id)
                .map(|&v| {
                    let addr = membership.get_node(&v).map(|n| n.addr.clone());
                    (v, addr.unwrap_or_default())
                })
                .collect();
            (voters, m.current_leader, others)
        };
        if voters.is_empty() {
            return format!(
                "node {} is not a member of the controller quorum yet (add it with add_voter on a member)",
                self.inner.id
            );
        }
        let down = network::probe(others.clone()).await;
        let unreachable: Vec<String> = down
            .iter()
            .map(|(id, addr, why)| format!("{id}@{addr} ({why})"))
            .collect();
        // Reachable, but the last raft RPC failed (e.g. the voter stalls): worth naming too.
        let failing: Vec<String> = others
            .iter()
            .filter(|(id, _)| !down.iter().any(|(d, _, _)| d == id))
            .filter_map(|(id, addr)| {
                let why = quorum.net.last_error(*id)?;
                Some(format!("{id}@{addr} ({why})"))
            })
            .collect();
        format!(
            "voters {voters:?}, leader {leader:?}, unreachable voters: [{}]{}",
            unreachable.join(", "),
            if failing.is_empty() {
                String::new()
            } else {
                format!(
                    ", voters whose last request failed: [{}]",
                    failing.join(", ")
                )
            }
        )
    }

    /// The address the controller listener is bound to (`None` for a store opened with
    /// [`Meta::open`]).
    pub fn controller_addr(&self) -> Option<SocketAddr> {
        self.inner.quorum.as_ref().map(|q| q.listen)
    }

    /// The raft leader this node knows of, as a broker id.
    pub fn leader(&self) -> Option<i32> {
        let leader = self.inner.raft.metrics().borrow().current_leader;
        leader.and_then(|l| i32::try_from(l).ok())
    }

    /// The controller quorum as its raft leader sees it (KRaft's DescribeQuorum): answered here when
    /// this node leads, asked of the leader otherwise; waits for a leader at most `timeout` (capped by
    /// the request timeout) and fails with [`Error::NoQuorum`] when none answers.
    pub async fn describe_quorum(&self, timeout: Duration) -> Result<QuorumStatus> {
        if let Some(status) = self.inner.view.status(&self.inner.raft) {
            return Ok(status);
        }
        let quorum = self.quorum().map_err(|_| Error::NotLeader)?;
        let deadline = Instant::now() + timeout.min(quorum.request_timeout());
        match self.run(LeaderOp::DescribeQuorum, deadline).await? {
            LeaderReply::Quorum(status) => Ok(status),
            other => Err(Error::Raft(format!(
                "unexpected leader reply to DescribeQuorum: {other:?}"
            ))),
        }
    }

    /// This node's view of the controller leadership, for its metrics: leader changes observed, whether it
    /// leads, who does, in which term.
    pub fn controller_metrics(&self) -> crate::ControllerMetrics {
        self.inner.view.controller_metrics(&self.inner.raft)
    }

    /// The voters in the membership this node knows (during a change, those of the joint config).
    pub fn voters(&self) -> BTreeSet<i32> {
        let membership = self.inner.raft.metrics().borrow().membership_config.clone();
        membership
            .membership()
            .voter_ids()
            .filter_map(|v| i32::try_from(v).ok())
            .collect()
    }

    /// Bounds [`Meta::propose`], [`Meta::add_voter`] and [`Meta::remove_voter`] in a quorum,
    /// including the search for a leader ([`DEFAULT_REQUEST_TIMEOUT`] unless set).
    pub fn set_request_timeout(&self, timeout: Duration) {
        if let Some(q) = &self.inner.quorum {
            q.request_timeout_ms
                .store(millis(timeout), Ordering::Relaxed);
        }
    }

    /// Test only (fault injection): this node dials voter `id` at `addr` from now on instead of the
    /// address the membership holds (`None`: the membership's again), so a test can put a proxy between
    /// each pair of nodes. No effect without a quorum.
    #[doc(hidden)]
    pub fn route_peer_for_test(&self, id: i32, addr: Option<SocketAddr>) {
        if let (Some(q), Ok(id)) = (&self.inner.quorum, NodeId::try_from(id)) {
            q.net.route_for_test(id, addr.map(|a| a.to_string()));
        }
    }

    /// Adds node `id`, whose controller listener is at `addr`, to the voters of a live quorum:
    /// first as a learner until it has caught up with the log, then as a voter (openraft's
    /// `add_learner` then `change_membership`). Runs on the leader from any member. The new node
    /// must be running, opened with [`Meta::open_quorum`] (not in its `voters`, empty store).
    /// Succeeds at once if `id` already is a voter.
    pub async fn add_voter(&self, id: i32, addr: SocketAddr) -> Result<()> {
        let id = NodeId::try_from(id).map_err(|_| invalid_input(format!("voter id {id} < 0")))?;
        self.change_voters(LeaderOp::AddVoter {
            id,
            addr: addr.to_string(),
        })
        .await
    }

    /// Removes voter `id` from a live quorum (it leaves the cluster; stop it afterwards). Runs on
    /// the leader from any member; the leader may remove itself, and then steps down.
    pub async fn remove_voter(&self, id: i32) -> Result<()> {
        let id = NodeId::try_from(id).map_err(|_| invalid_input(format!("voter id {id} < 0")))?;
        self.change_voters(LeaderOp::RemoveVoter { id }).await
    }

    async fn change_voters(&self, op: LeaderOp) -> Result<()> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        let deadline = Instant::now() + self.quorum()?.request_timeout();
        match self.run(op, deadline).await? {
            LeaderReply::Applied { index, .. } => self.await_applied(Some(index), deadline).await,
            other => Err(Error::Raft(format!(
                "unexpected leader reply to a voter change: {other:?}"
            ))),
        }
    }

    /// Catches this node up with the quorum: returns once it has applied everything committed before the call
    /// (raft's ReadIndex through the leader), so that a following [`Meta::state`] is at least that fresh. A
    /// one-voter store is always caught up. Fails with `NoQuorum` when no leader answers within the request
    /// timeout.
    pub async fn sync(&self) -> Result<()> {
        let Ok(quorum) = self.quorum() else {
            return Ok(());
        };
        let deadline = Instant::now() + quorum.request_timeout();
        if let LeaderReply::ReadIndex { index } = self.run(LeaderOp::ReadIndex, deadline).await? {
            self.await_applied(index, deadline).await?;
        }
        Ok(())
    }

    /// The latest applied state; cheap (an `Arc` clone).
    pub fn state(&self) -> Arc<ClusterState> {
        self.inner.state_rx.borrow().clone()
    }

    /// A receiver that sees every newly applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.state_rx.clone()
    }

    /// Proposes through raft and waits until the command is committed and applied; returns the
    /// state machine's verdict. When this returns, [`Meta::state`] already includes the command.
    ///
    /// In a quorum any member may propose: a follower forwards the command to the leader and then
    /// waits until it applied the command itself too. While there is no leader (an election, or
    /// no quorum), it retries until the request timeout, then fails with [`Error::NoQuorum`]
    /// (nothing was proposed) or [`Error::Indeterminate`] (proposed, outcome unknown).
    ///
    /// A command larger than 1 MiB serialized is refused up front ([`Error::Refused`]): a raft
    /// entry must fit in a replication frame.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        forward::check_command_size(&cmd).map_err(Error::Refused)?;
        if let Some(quorum) = &self.inner.quorum {
            let deadline = Instant::now() + quorum.request_timeout();
            return match self.run(LeaderOp::Propose(cmd), deadline).await? {
                LeaderReply::Applied { result, index } => {
                    self.await_applied(Some(index), deadline).await?;
                    Ok(result)
                }
                other => Err(Error::Raft(format!(
                    "unexpected leader reply to a proposal: {other:?}"
                ))),
            };
        }
        match self.inner.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Error::NotLeader),
            Err(RaftError::Fatal(Fatal::Stopped)) => Err(Error::Shutdown),
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Resolves when the raft core stopped on its own, on a fatal error (a storage error in the metadata
    /// directory, a panic): nothing can be committed any more and the broker must stop. Never resolves after
    /// a normal [`Meta::shutdown`]. The text says what failed.
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Err(fatal) = &rx.borrow_and_update().running_state {
                if !matches!(fatal, Fatal::Stopped) {
                    return fatal.to_string();
                }
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Stops the raft core. Everything acknowledged is already durable, so this only ends tasks;
    /// calling it again is a no-op.
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_liveness_tasks();
        if let Some(quorum) = &self.inner.quorum {
            // Release the port (and every peer connection) before the raft core stops, so that a
            // restart in the same process can bind it again.
            let server = quorum
                .server
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(mut server) = server {
                server.stop().await;
            }
        }
        self.inner.raft.shutdown().await.map_err(raft_err)
    }
}

/// Broker liveness (KRaft's broker heartbeats and fencing).
impl Meta {
    /// Starts this node's liveness tasks (replacing any started before; stopped by
    /// [`Meta::shutdown`]):
    ///
    /// - every `heartbeat_interval`, a heartbeat for this node's broker id to the raft leader
    ///   (recorded in the leader's memory, no raft write; a fenced broker that heartbeats is
    ///   unfenced with [`Command::UnfenceBroker`]);
    /// - while this node leads, every `heartbeat_interval`, [`Command::FenceBroker`] for each
    ///   registered, unfenced broker (other than this node's) whose last heartbeat is older than
    ///   `session_timeout`. A new leader counts every broker as seen when it took over.
    ///
    /// Kafka's defaults are `broker.heartbeat.interval.ms=2000` and
    /// `broker.session.timeout.ms=9000`.
    pub fn start_liveness(&self, heartbeat_interval: Duration, session_timeout: Duration) {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return;
        }
        let heartbeat_interval = heartbeat_interval.max(Duration::from_millis(1));
        let weak = Arc::downgrade(&self.inner);
        let heartbeats = tokio::spawn(heartbeat_loop(weak.clone(), heartbeat_interval));
        let judge = tokio::spawn(judge_loop(weak, heartbeat_interval, session_timeout));
        let old = std::mem::replace(
            &mut *self
                .inner
                .liveness_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            vec![heartbeats, judge],
        );
        for task in old {
            task.abort();
        }
    }

    /// Time since each broker's last heartbeat, as the raft leader sees it (for
    /// `fjord cluster status`); empty on a node that does not lead.
    pub fn last_heartbeat_ages(&self) -> BTreeMap<i32, Duration> {
        match self.leading_term() {
            Some(term) => self.inner.liveness.ages(term),
            None => BTreeMap::new(),
        }
    }

    fn stop_liveness_tasks(&self) {
        let tasks = std::mem::take(
            &mut *self
                .inner
                .liveness_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for task in tasks {
            task.abort();
        }
    }

    /// The raft term in which this node is the leader, if it is.
    fn leading_term(&self) -> Option<u64> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(m.id)).then_some(m.current_term)
    }

    fn broker_id(&self) -> i32 {
        i32::try_from(self.inner.id).unwrap_or(i32::MAX)
    }

    /// One heartbeat for this node's broker to the leader, wherever it is; failures are only
    /// logged (the next one follows in an interval, and the leader tolerates a session's worth).
    async fn send_heartbeat(&self, timeout: Duration) {
        let broker = self.broker_id();
        let (leader, addr) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let addr = m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
            (m.current_leader, addr.map(|n| n.addr))
        };
        let reply = match (leader, addr, &self.inner.quorum) {
            (Some(l), _, _) if l == self.inner.id => {
                forward::heartbeat(&self.inner.raft, &self.inner.liveness, broker)
            }
            (Some(l), Some(addr), Some(quorum)) => {
                quorum.net.heartbeat(l, &addr, broker, timeout).await
            }
            _ => LeaderReply::Unavailable("no leader known".into()),
        };
        if !matches!(reply, LeaderReply::HeartbeatAck) {
            tracing::debug!(broker, ?reply, "broker heartbeat not recorded");
        }
    }

    /// As leader: fences silent brokers and unfences returned ones. Proposes only locally (never
    /// forwarded: a deposed leader's view of liveness is not the new leader's).
    async fn judge_liveness(
        &self,
        heartbeat_interval: Duration,
        session_timeout: Duration,
        propose_timeout: Duration,
    ) {
        let Some(term) = self.leading_term() else {
            self.inner.liveness.step_down();
            return;
        };
        let own = self.broker_id();
        let state = self.state();
        let verdict = self
            .inner
            .liveness
            .judge(term, &state, session_timeout, own);
        for id in verdict.unfence {
            tracing::info!(broker = id, "fenced broker heartbeats again; unfencing it");
            self.propose_as_leader(Command::UnfenceBroker { id }, propose_timeout)
                .await;
        }
        for id in verdict.fence {
            if !self.inner.liveness.still_silent(term, id, session_timeout) {
                continue;
            }
            tracing::warn!(
                broker = id,
                ?session_timeout,
                "no heartbeat from broker within the session timeout; fencing it"
            );
            self.propose_as_leader(Command::FenceBroker { id }, propose_timeout)
                .await;
        }
        // A fast path beside the session timeout: a broker whose controller port has refused every connection
        // for two heartbeat intervals, and which has not heartbeated since the refusals began, has no process
        // listening (it crashed or stopped); waiting out its whole session only delays its partitions' failover.
        // A live process never refuses (its listener lives as long as it does); a restarting one fences itself.
        let Some(quorum) = self.inner.quorum.as_ref() else {
            return;
        };
        let state = self.state();
        let now = tokio::time::Instant::now();
        for &id in state.brokers.keys() {
            if id == own || !state.is_live(id) {
                continue;
            }
            let Ok(node) = NodeId::try_from(id) else {
                continue;
            };
            let Some(since) = quorum.net.refused_since(node).map(Instant::from_std) else {
                continue;
            };
            let heard_since = self
                .inner
                .liveness
                .last_heartbeat(term, id)
                .is_some_and(|seen| seen >= since);
            // Two intervals of refusals: a broker that heartbeats on time is heard from in between.
            if now - since < heartbeat_interval * 2 || heard_since {
                continue;
            }
            tracing::warn!(
                broker = id,
                refused_for = ?(now - since),
                "the broker's controller port refuses connections and it sent no heartbeat since; fencing it"
            );
            self.propose_as_leader(Command::FenceBroker { id }, propose_timeout)
                .await;
        }
    }

    async fn propose_as_leader(&self, cmd: Command, timeout: Duration) {
        let reply =
            forward::execute(&self.inner.raft, LeaderOp::Propose(cmd.clone()), timeout).await;
        if !matches!(reply, LeaderReply::Applied { .. }) {
            tracing::debug!(?cmd, ?reply, "liveness proposal did not apply");
        }
    }
}

async fn heartbeat_loop(weak: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let meta = Meta { inner };
        if meta.inner.shut_down.load(Ordering::Acquire) {
            return;
        }
        // A controller-only node is no broker: it has nothing to heartbeat for.
        if !meta.state().brokers.contains_key(&meta.broker_id()) {
            continue;
        }
        meta.send_heartbeat(interval).await;
    }
}

async fn judge_loop(weak: Weak<Inner>, interval: Duration, session_timeout: Duration) {
    // Judging is an in-memory look at the heartbeat table, so it runs far more often than heartbeats arrive: a
    // silent broker is fenced within 5% of a session after its session ends, not up to a heartbeat interval
    // later (with Kafka's defaults, 9.0-9.45 s after its last heartbeat instead of 9-11 s).
    let every = (session_timeout / 20).clamp(
        Duration::from_millis(10),
        interval.max(Duration::from_millis(10)),
    );
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A fencing proposal waits no longer than a session: by then the next verdict is due.
    let propose_timeout = session_timeout
        .max(interval)
        .max(Duration::from_millis(500));
    loop {
        let liveness = match weak.upgrade() {
            Some(inner) => inner.liveness.clone(),
            None => return,
        };
        tokio::select! {
            _ = ticks.tick() => {}
            _ = liveness.wake.notified() => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        let meta = Meta { inner };
        if meta.inner.shut_down.load(Ordering::Acquire) {
            return;
        }
        meta.judge_liveness(interval, session_timeout, propose_timeout)
            .await;
    }
}

/// The address the controller listener of a networked node is bound to.
fn server_addr(meta: &Meta) -> SocketAddr {
    meta.inner
        .quorum
        .as_ref()
        .map(|q| q.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn invalid_input(msg: String) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The raft id for `node_id`, checking that `self_info` describes the same node.
fn check_ids(node_id: i32, self_info: &BrokerInfo) -> Result<NodeId> {
    let raft_id =
        NodeId::try_from(node_id).map_err(|_| invalid_input(format!("node id {node_id} < 0")))?;
    if self_info.id != node_id {
        return Err(invalid_input(format!(
            "broker info id {} differs from node id {node_id}",
            self_info.id
        )));
    }
    Ok(raft_id)
}

/// Kafka's cluster id format: a random UUID as 22 characters of unpadded base64url.
fn new_cluster_id() -> String {
    base64url_nopad(uuid::Uuid::new_v4().as_bytes())
}

fn base64url_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // 1 input byte -> 2 chars, 2 -> 3, 3 -> 4.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url_nopad(b""), "");
        assert_eq!(base64url_nopad(b"f"), "Zg");
        assert_eq!(base64url_nopad(b"fo"), "Zm8");
        assert_eq!(base64url_nopad(b"foo"), "Zm9v");
        assert_eq!(base64url_nopad(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url_nopad(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn cluster_id_is_22_url_safe_chars() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
