//! ElectLeaders (key 43): move each partition's leadership to its preferred replica (the first of its replica
//! list) when that replica is live and in sync, as `kafka-leader-election.sh --election-type preferred` asks.
//! Each election is a committed metadata command; the state machine answers ELECTION_NOT_NEEDED when the preferred
//! replica already leads and PREFERRED_LEADER_NOT_AVAILABLE when it is fenced or out of sync. An unclean election
//! (type 1, KIP-460, `kafka-leader-election.sh --election-type unclean`) gives a partition without a live leader
//! one even outside the ISR, whatever the topic's `unclean.leader.election.enable` says: ELECTION_NOT_NEEDED when
//! it has a live leader, ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica is live.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use std::collections::BTreeMap;

use super::{str_bytes, Ctx};
use fjord_meta::{Command, CommandResult};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// The error code and message for an election's committed outcome.
fn answer(
    topic: &str,
    p: i32,
    outcome: Result<CommandResult, fjord_meta::Error>,
) -> (i16, Option<String>) {
    match outcome {
        Ok(CommandResult::Ok) => (0, None),
        Ok(CommandResult::ElectionNotNeeded) => (
            E::ElectionNotNeeded.code(),
            Some(
                "the preferred replica already leads, or the partition has a live leader"
                    .to_string(),
            ),
        ),
        Ok(CommandResult::PreferredLeaderNotAvailable) => (
            E::PreferredLeaderNotAvailable.code(),
            Some("the preferred replica is fenced or not in the in-sync replicas".to_string()),
        ),
        Ok(CommandResult::EligibleLeadersNotAvailable) => (
            E::EligibleLeadersNotAvailable.code(),
            Some("no replica of the partition is live".to_string()),
        ),
        Ok(CommandResult::UnknownTopic) => (
            E::UnknownTopicOrPartition.code(),
            Some(format!("{topic}-{p} does not exist")),
        ),
        Ok(other) => (E::UnknownServerError.code(), Some(format!("{other:?}"))),
        Err(e) => (crate::Error::from(e).code(), None),
    }
}

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
            let unclean = ctx.version >= 1 && req.election_type == UNCLEAN;
            let (code, message) =
                if ctx.version >= 1 && ![PREFERRED, UNCLEAN].contains(&req.election_type) {
                    (
                        E::InvalidRequest.code(),
                        Some(format!(
                            "unknown election type {}: 0 is preferred, 1 is unclean",
                            req.election_type
                        )),
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
                } else if unclean {
                    if meta.is_live(meta.topics[&topic].partitions[p as usize].leader) {
                        (
                            E::ElectionNotNeeded.code(),
                            Some("the partition has a live leader".to_string()),
                        )
                    } else {
                        let cmd = Command::ElectUncleanLeader {
                            topic: topic.clone(),
                            partition: p,
                        };
                        answer(&topic, p, state.meta.propose(cmd).await)
                    }
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
                    answer(&topic, p, state.meta.propose(cmd).await)
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
