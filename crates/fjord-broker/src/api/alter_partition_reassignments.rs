//! AlterPartitionReassignments (key 45, KIP-455): for each partition, either a new target replica list (the
//! first is the preferred leader) or null to cancel the reassignment in progress. Each is one committed
//! `AlterReassignment` command; the state machine makes the replicas the union of current and target, the
//! leader's ISR checks add the new replicas once caught up, and the `AlterPartition` that brings the last of them
//! into the ISR completes the reassignment (see `fjord_meta::TopicMeta::reassignments`). Errors as Kafka's
//! controller gives them: UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (empty, duplicate or unregistered
//! brokers), NO_REASSIGNMENT_IN_PROGRESS for a cancellation of nothing, and (v1, KIP-860) INVALID_REPLICATION_FACTOR
//! when the request forbids changing the replication factor.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};

use super::{str_bytes, Ctx};
use fjord_meta::{Command, CommandResult};

pub async fn handle(
    ctx: &Ctx<'_>,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let state = ctx.state;
    let _ = state.meta.sync().await;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.name.0.to_string();
        let mut out = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let target: Option<Vec<i32>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let (code, message) = reassign_one(ctx, &req, &topic, p.partition_index, target).await;
            out.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_error_message(message.map(|m| str_bytes(&m))),
            );
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(out),
        );
    }
    if let Err(e) = state.sync_partitions() {
        tracing::error!(error = %e, "applying metadata after partition reassignments failed");
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

async fn reassign_one(
    ctx: &Ctx<'_>,
    req: &AlterPartitionReassignmentsRequest,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
) -> (i16, Option<String>) {
    let state = ctx.state;
    let meta = state.meta.state();
    let Some(t) = meta.topics.get(topic) else {
        return unknown(topic, partition);
    };
    let Some(pm) = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
    else {
        return unknown(topic, partition);
    };
    if let Some(target) = &target {
        if ctx.version >= 1 && !req.allow_replication_factor_change {
            let original =
                pm.replicas.len() - t.reassignment(partition).map_or(0, |r| r.adding.len());
            if target.len() != original {
                return (
                    E::InvalidReplicationFactor.code(),
                    Some(format!(
                        "The replication factor is changed from {original} to {}",
                        target.len()
                    )),
                );
            }
        }
    }
    let cmd = Command::AlterReassignment {
        topic: topic.to_string(),
        partition,
        target,
    };
    match state.meta.propose(cmd).await {
        Ok(CommandResult::Ok) => (0, None),
        Ok(CommandResult::UnknownTopic) => unknown(topic, partition),
        Ok(CommandResult::NoReassignmentInProgress) => (
            E::NoReassignmentInProgress.code(),
            Some(format!(
                "no reassignment of {topic}-{partition} is in progress"
            )),
        ),
        Ok(CommandResult::InvalidReplicaAssignment(m)) => {
            (E::InvalidReplicaAssignment.code(), Some(m))
        }
        Ok(other) => (E::UnknownServerError.code(), Some(format!("{other:?}"))),
        Err(e) => {
            let e = crate::Error::from(e);
            (e.code(), Some(e.to_string()))
        }
    }
}

fn unknown(topic: &str, partition: i32) -> (i16, Option<String>) {
    (
        E::UnknownTopicOrPartition.code(),
        Some(format!("{topic}-{partition} does not exist")),
    )
}
