//! DescribeQuorum (key 55): the metadata quorum as KRaft describes it, the raft log standing in for
//! `__cluster_metadata` partition 0: the leader, its epoch (the raft term), the high watermark (one past the
//! last committed entry) and every voter and observer with its log end offset and when the leader last heard
//! from it and last saw it caught up. What `kafka-metadata-quorum.sh describe --status/--replication` shows.
//!
//! Only the raft leader knows its followers' progress, so any broker answers by asking the leader (as a Kafka
//! broker forwards this request to the active controller); with no leader within the bound, the partition
//! answers NOT_LEADER_OR_FOLLOWER, as a Kafka controller that does not lead.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use super::{str_bytes, Ctx};

/// The topic name KRaft gives its metadata log.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// How long a request waits for a metadata leader to answer (an election takes about a second).
const LEADER_WAIT: Duration = Duration::from_secs(5);

pub async fn handle(ctx: &Ctx<'_>, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let wants_metadata = req.topics.iter().any(|t| {
        t.topic_name.as_str() == METADATA_TOPIC
            && t.partitions.iter().any(|p| p.partition_index == 0)
    });
    let status = if wants_metadata {
        Some(ctx.state.meta.describe_quorum(LEADER_WAIT).await)
    } else {
        None
    };
    let listener_name = controller_listener_name(ctx);
    // The codec refuses to encode a field the version lacks: timestamps came in v1, messages and nodes in v2.
    let v = ctx.version;
    let replica = |r: &fjord_meta::ReplicaProgress| replica(r, v);
    let mut nodes: Vec<Node> = Vec::new();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = PartitionData::default().with_partition_index(p.partition_index);
                    if t.topic_name.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                        return base
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1);
                    }
                    match &status {
                        Some(Ok(s)) => {
                            if nodes.is_empty() && v >= 2 {
                                nodes = s
                                    .voters
                                    .iter()
                                    .chain(&s.observers)
                                    .map(|r| node(r.id, &r.controller_addr, &listener_name))
                                    .collect();
                            }
                            base.with_leader_id(BrokerId(s.leader_id))
                                .with_leader_epoch(
                                    i32::try_from(s.leader_epoch).unwrap_or(i32::MAX),
                                )
                                .with_high_watermark(s.high_watermark)
                                .with_current_voters(s.voters.iter().map(replica).collect())
                                .with_observers(s.observers.iter().map(replica).collect())
                        }
                        Some(Err(e)) => base
                            .with_error_code(ResponseError::NotLeaderOrFollower.code())
                            .with_error_message((v >= 2).then(|| str_bytes(&e.to_string())))
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1),
                        None => base,
                    }
                })
                .collect();
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_topics(topics)
        .with_nodes(nodes)
}

fn replica(r: &fjord_meta::ReplicaProgress, version: i16) -> ReplicaState {
    let state = ReplicaState::default()
        .with_replica_id(BrokerId(r.id))
        .with_log_end_offset(r.log_end_offset);
    if version < 1 {
        return state;
    }
    state
        .with_last_fetch_timestamp(r.last_fetch_ms.unwrap_or(-1))
        .with_last_caught_up_timestamp(r.last_caught_up_ms.unwrap_or(-1))
}

/// A voter's endpoint for v2's `nodes`: its controller listener as the membership records it.
fn node(id: i32, addr: &str, listener_name: &str) -> Node {
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(0)),
        None => (addr, 0),
    };
    Node::default()
        .with_node_id(BrokerId(id))
        .with_listeners(vec![Listener::default()
            .with_name(str_bytes(listener_name))
            .with_host(str_bytes(host))
            .with_port(port)])
}

/// The first of `controller.listener.names`; a one-voter broker without a controller listener records its
/// client address in the membership, so its listener is the client one.
fn controller_listener_name(ctx: &Ctx<'_>) -> String {
    let configured = ctx
        .state
        .config
        .props
        .get("controller.listener.names")
        .and_then(|n| {
            n.split(',')
                .map(str::trim)
                .find(|n| !n.is_empty())
                .map(str::to_string)
        });
    match (configured, ctx.state.config.controller_listener) {
        (Some(name), Some(_)) => name,
        _ => "PLAINTEXT".to_string(),
    }
}
