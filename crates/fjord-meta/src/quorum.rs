//! The state of the controller quorum as KRaft's DescribeQuorum reports it: the leader, its term, the
//! commit point, and how far each voter and observer has replicated the metadata log and when it was last
//! heard from. Only the raft leader knows its followers' progress, so a follower asks the leader
//! ([`crate::forward::LeaderOp::DescribeQuorum`]).
//!
//! Offsets are raft log positions in Kafka's convention: a log end offset is one past the last entry a
//! replica holds, the high watermark one past the last entry the leader applied (hence committed).
//! Timestamps are wall-clock milliseconds since the Unix epoch, `None` where unknown (Kafka's -1).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::network::TcpNetwork;
use crate::raft::{NodeId, Raft};

/// The quorum as the raft leader sees it; a plain value, safe to hand to the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// The raft leader's node id (its broker id).
    pub leader_id: i32,
    /// The leader's raft term: KRaft's leader epoch.
    pub leader_epoch: u64,
    /// One past the last entry the leader applied, which is committed (Kafka's high watermark).
    pub high_watermark: i64,
    /// The voters of the current membership, by id, the leader included.
    pub voters: Vec<ReplicaProgress>,
    /// Members that replicate without voting (learners being added as voters).
    pub observers: Vec<ReplicaProgress>,
}

/// One replica of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    pub id: i32,
    /// Its controller listener (`host:port`), as the membership records it.
    pub controller_addr: String,
    /// One past the last entry the leader knows it holds; 0 when nothing is known to match yet.
    pub log_end_offset: i64,
    /// When the leader last exchanged a raft RPC with it successfully (for the leader itself: now).
    pub last_fetch_ms: Option<i64>,
    /// The last time it was known to hold every entry the leader had (for the leader itself: now).
    pub last_caught_up_ms: Option<i64>,
}

/// What the leader remembers between two looks at the raft metrics: when each follower was last seen
/// caught up. Kept per raft term, like the liveness table: a new leader starts afresh.
pub(crate) struct QuorumView {
    net: Option<TcpNetwork>,
    caught_up: Mutex<(Option<u64>, BTreeMap<NodeId, i64>)>,
    /// The last (term, leader) this node saw, and how many different ones it has seen.
    leader_seen: Mutex<Option<(u64, NodeId)>>,
    leader_changes: AtomicU64,
}

/// What this node knows of the controller leadership, for its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerMetrics {
    /// Raft leaders this node has observed since it opened: each new (term, leader) counts once, so a
    /// failover counts one change on every node that saw it, and the first leader seen counts too.
    pub leader_changes: u64,
    /// Whether this node is the raft leader (Kafka's ActiveControllerCount).
    pub active: bool,
    /// The raft leader this node knows of.
    pub leader: Option<i32>,
    /// The raft term this node is in (KRaft's leader epoch).
    pub epoch: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A raft index as a Kafka-style exclusive offset.
fn end_offset(index: Option<u64>) -> i64 {
    index.map_or(0, |i| i64::try_from(i).unwrap_or(i64::MAX - 1) + 1)
}

impl QuorumView {
    /// `net` is the quorum's network (for the time of the last exchange with each peer); `None` for a
    /// one-voter store without one.
    pub(crate) fn new(net: Option<TcpNetwork>) -> Arc<QuorumView> {
        Arc::new(QuorumView {
            net,
            caught_up: Mutex::new((None, BTreeMap::new())),
            leader_seen: Mutex::new(None),
            leader_changes: AtomicU64::new(0),
        })
    }

    /// Counts a new leader if `m` names one this node has not seen in this term.
    fn note_leader(&self, m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) {
        let Some(leader) = m.current_leader else {
            return;
        };
        let mut seen = self.leader_seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != Some((m.current_term, leader)) {
            *seen = Some((m.current_term, leader));
            self.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This node's view of the controller leadership (see [`ControllerMetrics`]).
    pub(crate) fn controller_metrics(&self, raft: &Raft) -> ControllerMetrics {
        let m = raft.metrics().borrow().clone();
        // The watch task may not have run since the last change: count it now rather than a scrape late.
        self.note_leader(&m);
        ControllerMetrics {
            leader_changes: self.leader_changes.load(Ordering::Relaxed),
            active: m.state == ServerState::Leader && m.current_leader == Some(m.id),
            leader: m.current_leader.and_then(|l| i32::try_from(l).ok()),
            epoch: m.current_term,
        }
    }

    /// Follows `raft`'s metrics for as long as both exist, recording when followers catch up: the
    /// metrics change whenever replication progresses, so a follower that catches up and then falls
    /// behind again is seen in between.
    pub(crate) fn watch(view: &Arc<QuorumView>, raft: &Raft) {
        let weak: Weak<QuorumView> = Arc::downgrade(view);
        let mut rx = raft.metrics();
        tokio::spawn(async move {
            loop {
                {
                    let Some(view) = weak.upgrade() else { return };
                    let m = rx.borrow_and_update().clone();
                    view.note_leader(&m);
                    view.observe(&m);
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn observe(
        &self,
        m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    ) -> BTreeMap<NodeId, i64> {
        let mut guard = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
        let leading = m.state == ServerState::Leader && m.current_leader == Some(m.id);
        if !leading {
            *guard = (None, BTreeMap::new());
            return BTreeMap::new();
        }
        if guard.0 != Some(m.current_term) {
            *guard = (Some(m.current_term), BTreeMap::new());
        }
        let now = now_ms();
        if let Some(repl) = &m.replication {
            for (id, matched) in repl {
                let matched = matched.map(|l| l.index);
                if matched.is_some() && matched >= m.last_log_index {
                    // Caught up as of the last successful exchange, which is when it told us so.
                    let at = self
                        .net
                        .as_ref()
                        .and_then(|n| n.last_ok(*id))
                        .map(to_ms)
                        .unwrap_or(now);
                    let e = guard.1.entry(*id).or_insert(at);
                    *e = (*e).max(at);
                }
            }
        }
        guard.1.clone()
    }

    /// The quorum as this node sees it, if it is the leader; `None` otherwise.
    pub(crate) fn status(&self, raft: &Raft) -> Option<QuorumStatus> {
        let m = raft.metrics().borrow().clone();
        let leading = m.state == ServerState::Leader && m.current_leader == Some(m.id);
        if !leading {
            return None;
        }
        let caught_up = self.observe(&m);
        let now = now_ms();
        let membership = m.membership_config.membership();
        let replica = |id: NodeId| -> ReplicaProgress {
            let addr = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            let id32 = i32::try_from(id).unwrap_or(i32::MAX);
            if id == m.id {
                return ReplicaProgress {
                    id: id32,
                    controller_addr: addr,
                    log_end_offset: end_offset(m.last_log_index),
                    last_fetch_ms: Some(now),
                    last_caught_up_ms: Some(now),
                };
            }
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map(|l| l.index);
            ReplicaProgress {
                id: id32,
                controller_addr: addr,
                log_end_offset: end_offset(matched),
                last_fetch_ms: self.net.as_ref().and_then(|n| n.last_ok(id)).map(to_ms),
                last_caught_up_ms: caught_up.get(&id).copied(),
            }
        };
        let voters: Vec<ReplicaProgress> = membership.voter_ids().map(replica).collect();
        let observers: Vec<ReplicaProgress> = membership.learner_ids().map(replica).collect();
        Some(QuorumStatus {
            leader_id: i32::try_from(m.id).unwrap_or(i32::MAX),
            leader_epoch: m.current_term,
            high_watermark: end_offset(m.last_applied.map(|l| l.index)),
            voters,
            observers,
        })
    }
}
