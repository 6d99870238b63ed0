//! CreatePartitions (key 37): grow a topic's partition count, with optional explicit replica lists.

use std::collections::HashMap;

use fjord_meta::{Command, CommandResult};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, Ctx};
use crate::admin::{assign_replicas, ApiError, MAX_PARTITIONS_PER_TOPIC};
use crate::BrokerState;

async fn grow(
    broker: &BrokerState,
    name: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), ApiError> {
    // A view as fresh as the quorum's (see admin::create_topic).
    let _ = broker.meta.sync().await;
    let state = broker.meta.state();
    let Some(topic) = state.topics.get(name) else {
        return Err(ApiError::new(
            E::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        ));
    };
    let current = topic.partitions.len() as i32;
    if count <= current {
        return Err(ApiError::new(
            E::InvalidPartitions,
            format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
        ));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(ApiError::new(
            E::InvalidPartitions,
            format!("{count} partitions exceed the limit of {MAX_PARTITIONS_PER_TOPIC} per topic."),
        ));
    }
    let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
    let new = match assignments {
        Some(a) => {
            if a.len() as i32 != count - current {
                return Err(ApiError::new(
                    E::InvalidReplicaAssignment,
                    format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        count - current,
                        a.len()
                    ),
                ));
            }
            for r in &a {
                if r.len() != rf || r.iter().any(|b| !state.brokers.contains_key(b)) {
                    return Err(ApiError::new(
                        E::InvalidReplicaAssignment,
                        format!("Replica list {r:?} must name {rf} registered brokers."),
                    ));
                }
            }
            a
        }
        None => {
            let live = state.live_brokers().len();
            if live < rf {
                return Err(ApiError::new(
                    E::InvalidReplicationFactor,
                    format!(
                        "The topic's replication factor is {rf} but only {live} broker(s) are registered and unfenced."
                    ),
                ));
            }
            assign_replicas(&state, current, count - current, rf as i16)
        }
    };
    if validate_only {
        return Ok(());
    }
    let cmd = Command::CreatePartitions {
        name: name.to_string(),
        new_assignments: new,
    };
    match broker.meta.propose(cmd).await.map_err(crate::Error::from)? {
        CommandResult::Ok => {}
        CommandResult::UnknownTopic => {
            return Err(ApiError::new(
                E::UnknownTopicOrPartition,
                format!("Topic '{name}' does not exist."),
            ))
        }
        CommandResult::InvalidPartitions(m) => return Err(ApiError::new(E::InvalidPartitions, m)),
        other => {
            return Err(ApiError::new(
                E::UnknownServerError,
                format!("unexpected result {other:?}"),
            ))
        }
    }
    broker.sync_partitions()?;
    Ok(())
}

pub async fn handle(ctx: &Ctx<'_>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = if counts[&name] > 1 {
            Err(ApiError::new(
                E::InvalidRequest,
                format!("Topic '{name}' appears more than once in the request."),
            ))
        } else {
            let a = t.assignments.map(|a| {
                a.into_iter()
                    .map(|x| x.broker_ids.into_iter().map(|b| b.0).collect())
                    .collect()
            });
            grow(ctx.state, &name, t.count, a, req.validate_only).await
        };
        let res = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(()) => res,
            Err(e) => res
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(&e.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
