//! OffsetCommit (key 8): validate membership, make the commits durable in `__consumer_offsets` (fsynced and
//! replicated to the in-sync replicas), then make them visible to OffsetFetch. Only on the group's coordinator:
//! every partition answers NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while loading) elsewhere, and
//! NOT_COORDINATOR too when this broker stopped leading the partition before the write was acknowledged.

use fjord_coordinator::CommittedOffset;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::Ctx;
use crate::now_ms;

pub async fn handle(ctx: &Ctx<'_>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let broker = ctx.state;
    let group = req.group_id.0.to_string();
    let now = now_ms();
    let check = match broker.groups.ensure_served(broker, &group).await {
        Err(code) => Err(code),
        Ok(()) => broker
            .groups
            .coordinator_for(broker, &group)
            .and_then(|mut c| {
                c.check_commit(
                    &group,
                    req.generation_id_or_member_epoch,
                    &req.member_id,
                    req.group_instance_id.as_deref(),
                    false,
                    now,
                )
            }),
    };
    let topics = req.topics.iter().map(|t| {
        let parts = t.partitions.iter().map(|p| CommitPartition {
            index: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: p.committed_leader_epoch,
            metadata: p.committed_metadata.as_deref(),
        });
        (t.name.0.to_string(), parts.collect())
    });
    let (valid, mut codes) = validate(ctx, check, topics, now);
    if !valid.is_empty() {
        let records = broker.groups.lock().commit_records(&group, &valid);
        match broker.groups.persist_commit(broker, records).await {
            Ok(()) => {
                // Replicated, so acknowledged. Should the coordinator have resigned meanwhile, its successor
                // loads the commit from the log.
                if let Ok(mut c) = broker.groups.coordinator_for(broker, &group) {
                    c.apply_commit(&group, valid, now);
                }
            }
            Err(e) => {
                tracing::error!(%group, error = %e, "persisting offset commit failed");
                not_acknowledged(&mut codes, crate::groups::commit_error_code(&e));
            }
        }
    }
    OffsetCommitResponse::default().with_topics(
        req.topics
            .into_iter()
            .zip(codes)
            .map(|(t, tc)| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(tc)
                            .map(|(p, c)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(c)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// One partition of an OffsetCommit or TxnOffsetCommit request.
pub(super) struct CommitPartition<'a> {
    pub index: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a str>,
}

/// An offset that passed validation, for `commit_records` / `apply_commit`.
pub(super) type Commit = ((String, i32), CommittedOffset);

/// Offsets to commit after the membership `check`, and one error code per requested partition: an unknown
/// topic or partition, or metadata over `offset.metadata.max.bytes`, fails just that partition.
pub(super) fn validate<'a>(
    ctx: &Ctx<'_>,
    check: Result<(), i16>,
    topics: impl Iterator<Item = (String, Vec<CommitPartition<'a>>)>,
    now: i64,
) -> (Vec<Commit>, Vec<Vec<i16>>) {
    let max_metadata = ctx.state.groups.lock().config().max_metadata_bytes;
    let meta = ctx.state.meta.state();
    let mut valid = Vec::new();
    let mut codes = Vec::new();
    for (topic, parts) in topics {
        let known = meta.topics.get(&topic);
        let tc = parts
            .into_iter()
            .map(|p| match check {
                Err(c) => c,
                Ok(())
                    if known
                        .is_none_or(|k| p.index < 0 || p.index as usize >= k.partitions.len()) =>
                {
                    E::UnknownTopicOrPartition.code()
                }
                Ok(()) if p.metadata.is_some_and(|m| m.len() > max_metadata) => {
                    E::OffsetMetadataTooLarge.code()
                }
                Ok(()) => {
                    valid.push((
                        (topic.clone(), p.index),
                        CommittedOffset {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                            metadata: p.metadata.unwrap_or("").to_string(),
                            commit_timestamp: now,
                        },
                    ));
                    0
                }
            })
            .collect();
        codes.push(tc);
    }
    (valid, codes)
}

/// Persisting failed, so nothing was acknowledged: every partition that passed validation reports `code`
/// (NOT_COORDINATOR when this broker stopped leading the group's partition, else COORDINATOR_NOT_AVAILABLE).
pub(super) fn not_acknowledged(codes: &mut [Vec<i16>], code: i16) {
    for c in codes.iter_mut().flatten() {
        if *c == 0 {
            *c = code;
        }
    }
}
