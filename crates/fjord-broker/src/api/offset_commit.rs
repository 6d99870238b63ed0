//! OffsetCommit (key 8): validate membership, make the commits durable in `__consumer_offsets`, then make them
//! visible to OffsetFetch.

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
    let check = broker.groups.lock().check_commit(
        &group,
        req.generation_id_or_member_epoch,
        &req.member_id,
        req.group_instance_id.as_deref(),
        now,
    );
    let max_metadata = broker.groups.lock().config().max_metadata_bytes;
    let meta = broker.meta.state();
    let mut valid = Vec::new();
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.name.0.to_string();
        let known = meta.topics.get(&topic);
        let mut tc = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let code = match check {
                Err(c) => c,
                Ok(())
                    if known.is_none_or(|k| {
                        p.partition_index < 0 || p.partition_index as usize >= k.partitions.len()
                    }) =>
                {
                    E::UnknownTopicOrPartition.code()
                }
                Ok(())
                    if p.committed_metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > max_metadata) =>
                {
                    E::OffsetMetadataTooLarge.code()
                }
                Ok(()) => {
                    valid.push((
                        (topic.clone(), p.partition_index),
                        CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_deref().unwrap_or("").to_string(),
                            commit_timestamp: now,
                        },
                    ));
                    0
                }
            };
            tc.push(code);
        }
        codes.push(tc);
    }
    if !valid.is_empty() {
        let records = broker.groups.lock().commit_records(&group, &valid);
        match broker.groups.persist(broker, records).await {
            Ok(()) => broker.groups.lock().apply_commit(&group, valid, now),
            Err(e) => {
                tracing::error!(%group, error = %e, "persisting offset commit failed");
                // Nothing was acknowledged: every partition that passed validation reports the failure.
                for tc in codes.iter_mut() {
                    for c in tc.iter_mut() {
                        if *c == 0 {
                            *c = E::CoordinatorNotAvailable.code();
                        }
                    }
                }
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
