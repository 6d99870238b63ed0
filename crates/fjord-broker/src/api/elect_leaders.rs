//! ElectLeaders (key 43): move each partition's leadership to its preferred replica (the first of its replica
//! list) when that replica is live and in sync, as `kafka-leader-election.sh --election-type preferred` asks.
//! Each election is a committed metadata command; the state machine answers ELECTION_NOT_NEEDED when the preferred
//! replica already leads and PREFERRED_LEADER_NOT_AVAILABLE when it is fenced or out of sync. Unclean elections
//! (type 1) are refused: Fjord never elects a replica outside the ISR.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use std::collections::BTreeMap;

use super::{str_bytes, Ctx};
use fjord_meta::{Command, CommandResult};

const PREFERRED: i8 = 0;

pub async fn handle(ctx: &Ctx<'_>, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let state = ctx.state;
    let _ = state.meta.sync().await;
    let meta = state.meta.state();
    // Null topic_partitions: every partition of every topic (Kafka's "all partitions" form).
    let wanted: BTreeMap<String, Vec<i32>> = match &req.topic_partitions {
        None => meta
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions.len() as i32).collect()))
            .collect(),
        Some(tps) => {
            let mut m: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for tp in tps {
                m.entry(tp.topic.0.to_string())
                    .or_default()
                    .extend(tp.partitions.iter().copied());
            }
            m
        }
    };
    let mut results = Vec::with_capacity(wanted.len());
    for (topic, partitions) in wanted {
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let (code, message) = if ctx.version >= 1 && req.election_type != PREFERRED {
                (
                    E::InvalidRequest.code(),
                    Some(
                        "unclean leader election is not supported: Fjord only elects in-sync replicas"
                            .to_string(),
                    ),
                )
            } else if meta
                .topics
                .get(&topic)
                .is_none_or(|t| p < 0 || p as usize >= t.partitions.len())
            {
                (
                    E::UnknownTopicOrPartition.code(),
                    Some(format!("{topic}-{p} does not exist")),
                )
            } else if meta.topics[&topic].partitions[p as usize].replicas.first()
                == Some(&meta.topics[&topic].partitions[p as usize].leader)
            {
                // Settled from the synced view, without a raft entry: a request for every partition of a large
                // cluster costs proposals only for the partitions that move.
                (
                    E::ElectionNotNeeded.code(),
                    Some("the preferred replica already leads".to_string()),
                )
            } else {
                let cmd = Command::ElectPreferredLeader {
                    topic: topic.clone(),
                    partition: p,
                };
                match state.meta.propose(cmd).await {
                    Ok(CommandResult::Ok) => (0, None),
                    Ok(CommandResult::ElectionNotNeeded) => (
                        E::ElectionNotNeeded.code(),
                        Some("the preferred replica already leads".to_string()),
                    ),
                    Ok(CommandResult::PreferredLeaderNotAvailable) => (
                        E::PreferredLeaderNotAvailable.code(),
                        Some(
                            "the preferred replica is fenced or not in the in-sync replicas"
                                .to_string(),
                        ),
                    ),
                    Ok(CommandResult::UnknownTopic) => (
                        E::UnknownTopicOrPartition.code(),
                        Some(format!("{topic}-{p} does not exist")),
                    ),
                    Ok(other) => (E::UnknownServerError.code(), Some(format!("{other:?}"))),
                    Err(e) => (crate::Error::from(e).code(), None),
                }
            };
            out.push(
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(code)
                    .with_error_message(message.map(|m| str_bytes(&m))),
            );
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(TopicName(str_bytes(&topic)))
                .with_partition_result(out),
        );
    }
    if let Err(e) = state.sync_partitions() {
        tracing::error!(error = %e, "applying metadata after leader elections failed");
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}
