//! What the raft leader does for a request that any node may make: propose a command, give a read
//! index, change the voters. A follower sends the [`LeaderOp`] over the controller listener, as a
//! KRaft broker forwards to the active controller; the leader runs the same [`execute`] for its
//! own requests.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::liveness::Liveness;
use crate::quorum::{QuorumStatus, QuorumView};
use crate::raft::{NodeId, Raft, TypeConfig};
use crate::types::{Command, CommandResult};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum LeaderOp {
    Propose(Command),
    /// The leader's commit index, confirmed with a quorum (raft's ReadIndex): a node that has
    /// applied up to it has seen everything committed before the request.
    ReadIndex,
    /// Adds `id` as a learner at `addr`, waits until it caught up, then makes it a voter.
    AddVoter {
        id: NodeId,
        addr: String,
    },
    /// Makes `id` a learner (a KRaft observer) whose controller listener is at `addr`: added if it
    /// is not a member, its address updated if it is a learner elsewhere, nothing done if it is a
    /// voter. Sent by a node itself when it starts outside the voter set.
    AddLearner {
        id: NodeId,
        addr: String,
    },
    /// Removes `id` from the voters; it stays a learner (an observer) as long as it runs, as a
    /// removed KRaft voter does, so that a broker on the same node keeps its metadata.
    RemoveVoter {
        id: NodeId,
    },
    /// Broker `broker` is alive (KRaft's BrokerHeartbeat). Recorded in the leader's memory only,
    /// never written to the log; see [`crate::liveness`]. Safe to send twice.
    Heartbeat {
        broker: i32,
    },
    /// The quorum's replication progress as the leader sees it (KRaft's DescribeQuorum). Read from
    /// the leader's memory, never written; safe to send twice.
    DescribeQuorum,
}

/// The leader's answer. The variants say precisely whether the op took effect, because that is
/// what decides whether the requester may retry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum LeaderReply {
    /// Committed (and applied on the leader) at log `index`; `result` is the state machine's verdict.
    Applied { result: CommandResult, index: u64 },
    /// Answer to [`LeaderOp::ReadIndex`].
    ReadIndex { index: Option<u64> },
    /// The node is not the leader and did nothing; `leader` is who it believes leads.
    NotLeader { leader: Option<(NodeId, String)> },
    /// Nothing was done: the leader could not be reached, or could not confirm it still has a
    /// quorum. Safe to retry.
    Unavailable(String),
    /// The op may or may not take effect (e.g. appended but not committed in time). Not retried.
    Indeterminate(String),
    /// The op was refused and did nothing (e.g. removing the last voter).
    Refused(String),
    /// Answer to [`LeaderOp::Heartbeat`]: the leader recorded it.
    HeartbeatAck,
    /// Answer to [`LeaderOp::DescribeQuorum`].
    Quorum(QuorumStatus),
}

fn not_leader(f: ForwardToLeader<NodeId, BasicNode>) -> LeaderReply {
    LeaderReply::NotLeader {
        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
    }
}

/// Records a heartbeat from `broker` if this node is the leader (without confirming leadership
/// with a quorum: a heartbeat must stay cheap, and a deposed leader's table is discarded with its
/// term); otherwise says who leads.
pub(crate) fn heartbeat(raft: &Raft, liveness: &Liveness, broker: i32) -> LeaderReply {
    let term = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader || m.current_leader != Some(m.id) {
            let leader = m.current_leader.and_then(|l| {
                let node = m.membership_config.membership().get_node(&l)?;
                Some((l, node.addr.clone()))
            });
            return LeaderReply::NotLeader { leader };
        }
        m.current_term
    };
    liveness.record(term, broker);
    LeaderReply::HeartbeatAck
}

/// The quorum's state if this node leads (from its memory, without confirming leadership: the answer
/// is informational and names the term it belongs to); otherwise says who leads.
pub(crate) fn describe_quorum(raft: &Raft, view: Option<&QuorumView>) -> LeaderReply {
    if let Some(status) = view.and_then(|v| v.status(raft)) {
        return LeaderReply::Quorum(status);
    }
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let leader = m.current_leader.filter(|l| *l != m.id).and_then(|l| {
        let node = m.membership_config.membership().get_node(&l)?;
        Some((l, node.addr.clone()))
    });
    LeaderReply::NotLeader { leader }
}

/// Runs `op` on this node, which the caller believes is the leader, within `timeout`.
pub(crate) async fn execute(raft: &Raft, op: LeaderOp, timeout: Duration) -> LeaderReply {
    let deadline = Instant::now() + timeout;
    // Confirm leadership with a quorum first. A leader cut off from its followers would otherwise
    // append the entry and wait for a commit that may come much later or never, leaving the
    // requester unsure whether it happened; this way a minority leader answers "unavailable" and
    // has done nothing.
    let read_index = match tokio::time::timeout_at(deadline, raft.get_read_log_id()).await {
        Err(_) => {
            return LeaderReply::Unavailable(format!(
                "the leader could not confirm a quorum of voters within {timeout:?}"
            ))
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            return not_leader(f)
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
            return LeaderReply::Unavailable(format!("the leader lost its quorum: {q}"))
        }
        Ok(Err(RaftError::Fatal(f))) => {
            return LeaderReply::Refused(format!("raft stopped on the leader: {f}"))
        }
        Ok(Ok((read, _applied))) => read.map(|l| l.index),
    };
    match op {
        LeaderOp::ReadIndex => LeaderReply::ReadIndex { index: read_index },
        // Served by `heartbeat`, which needs the liveness table; never routed here.
        LeaderOp::Heartbeat { .. } => {
            LeaderReply::Refused("a heartbeat is not a leader operation".into())
        }
        // Served by `describe_quorum`, which needs the quorum view; never routed here.
        LeaderOp::DescribeQuorum => {
            LeaderReply::Refused("DescribeQuorum is not a leader operation".into())
        }
        LeaderOp::Propose(cmd) => {
            if let Some(why) = refuse(&cmd) {
                return LeaderReply::Refused(why);
            }
            write(deadline, raft.client_write(cmd)).await
        }
        LeaderOp::AddVoter { id, addr } => {
            let membership = raft.metrics().borrow().membership_config.clone();
            if membership.membership().voter_ids().any(|v| v == id) {
                // Already done (e.g. a retry after an indeterminate answer): succeed idempotently.
                return LeaderReply::Applied {
                    result: CommandResult::Ok,
                    index: read_index.unwrap_or(0),
                };
            }
            // Blocking: returns once the learner has caught up, so that promoting it does not
            // leave the quorum waiting for a voter that still has to replay the whole log.
            let learner = write(deadline, raft.add_learner(id, BasicNode { addr }, true)).await;
            if !matches!(learner, LeaderReply::Applied { .. }) {
                return learner;
            }
            write(
                deadline,
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
            )
            .await
        }
        LeaderOp::AddLearner { id, addr } => {
            let membership = raft.metrics().borrow().membership_config.clone();
            let membership = membership.membership();
            let known = membership.get_node(&id).map(|n| n.addr.clone());
            let is_voter = membership.voter_ids().any(|v| v == id);
            if is_voter || known.as_deref() == Some(addr.as_str()) {
                return LeaderReply::Applied {
                    result: CommandResult::Ok,
                    index: read_index.unwrap_or(0),
                };
            }
            let node = BasicNode { addr };
            if known.is_some() {
                // A learner that restarted elsewhere (e.g. on another port): a learner does not vote, so
                // replacing its address cannot split a quorum.
                write(
                    deadline,
                    raft.change_membership(
                        ChangeMembers::SetNodes(std::collections::BTreeMap::from([(id, node)])),
                        false,
                    ),
                )
                .await
            } else {
                // Not blocking: returns once the membership entry committed; the learner catches up on its own.
                write(deadline, raft.add_learner(id, node, false)).await
            }
        }
        LeaderOp::RemoveVoter { id } => {
            let membership = raft.metrics().borrow().membership_config.clone();
            let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
            if !voters.contains(&id) {
                return LeaderReply::Refused(format!(
                    "node {id} is not a voter (voters: {voters:?})"
                ));
            }
            if voters.len() == 1 {
                return LeaderReply::Refused(format!("node {id} is the last voter"));
            }
            // `retain: true`: the removed node stays a learner (a KRaft observer), so a broker on it keeps
            // following the metadata.
            write(
                deadline,
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true),
            )
            .await
        }
    }
}

/// Largest producer-id block one command may reserve. The broker asks for small blocks; the bound
/// keeps a command from any node (forwarding makes proposals reachable over the controller port)
/// from overflowing `next_producer_id`, which would make every replica's apply panic at once.
const MAX_PRODUCER_ID_BLOCK: i64 = 1 << 20;

/// Why the leader refuses to propose `cmd`, if it does: only commands whose apply could harm
/// every replica alike. Everything else is judged by the state machine as usual.
fn refuse(cmd: &Command) -> Option<String> {
    if let Err(why) = check_command_size(cmd) {
        return Some(why);
    }
    match cmd {
        Command::AllocateProducerIds { count } if *count > MAX_PRODUCER_ID_BLOCK => Some(format!(
            "a producer id block of {count} is larger than {MAX_PRODUCER_ID_BLOCK}"
        )),
        _ => None,
    }
}

/// Largest serialized [`Command`] accepted. One raft entry must fit in an AppendEntries frame
/// with others (see [`crate::raft::MAX_PAYLOAD_ENTRIES`]) far below the controller port's frame
/// limit; an entry that never fits would be resent forever and stall replication.
pub(crate) const MAX_COMMAND_BYTES: usize = 1 << 20;

/// `Err(why)` if `cmd` is too large to be a raft entry.
pub(crate) fn check_command_size(cmd: &Command) -> Result<(), String> {
    let size = serde_json::to_vec(cmd).map_or(usize::MAX, |b| b.len());
    if size > MAX_COMMAND_BYTES {
        return Err(format!(
            "a metadata command of {size} bytes exceeds the {MAX_COMMAND_BYTES} byte limit"
        ));
    }
    Ok(())
}

async fn write(
    deadline: Instant,
    fut: impl Future<
        Output = Result<
            ClientWriteResponse<TypeConfig>,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >,
    >,
) -> LeaderReply {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(Ok(resp)) => LeaderReply::Applied {
            result: resp.data,
            index: resp.log_id.index,
        },
        // openraft answers ForwardToLeader either before appending, or when the appended entry
        // was truncated by a new leader: in both cases it was never committed.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => not_leader(f),
        // Another membership change is still in flight (e.g. nodes joining as observers together): nothing was
        // done, and the requester retries until its deadline, by when the other change has long committed.
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(e),
        )))) => LeaderReply::Unavailable(e.to_string()),
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            LeaderReply::Refused(e.to_string())
        }
        Ok(Err(RaftError::Fatal(f))) => {
            LeaderReply::Indeterminate(format!("raft stopped on the leader while writing: {f}"))
        }
        Err(_) => LeaderReply::Indeterminate(
            "appended by the leader but not committed before the deadline; it may still be committed"
                .into(),
        ),
    }
}
