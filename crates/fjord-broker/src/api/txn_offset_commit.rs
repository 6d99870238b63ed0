//! TxnOffsetCommit (key 28): a transactional producer commits a consumer group's offsets as part of its
//! transaction (consume-transform-produce). The offsets are written to `__consumer_offsets` as a
//! transactional batch of the producer and become visible to OffsetFetch only when the commit marker lands
//! there; an abort drops them.

use fjord_coordinator::CommittedOffset;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::init_producer_id::fenced_code;
use super::Ctx;
use crate::groups::OFFSETS_TOPIC;
use crate::now_ms;

pub async fn handle(ctx: &Ctx<'_>, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let broker = ctx.state;
    let group = req.group_id.0.to_string();
    let now = now_ms();
    // Like Kafka: an empty member id and a negative generation skip the membership check (v0-v2 carry none).
    let mut check = if req.member_id.is_empty() && req.generation_id < 0 {
        if group.is_empty() {
            Err(E::InvalidGroupId.code())
        } else {
            Ok(())
        }
    } else {
        broker.groups.lock().check_commit(
            &group,
            req.generation_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
            now,
        )
    };
    if check.is_ok() {
        // The group's partition must be in the producer's open transaction (AddOffsetsToTxn), or the
        // offsets could never be resolved by a marker.
        let p = broker.groups.lock().partition_for(&group);
        if let Err(e) = broker
            .transactions
            .verify(
                &req.transactional_id,
                req.producer_id.0,
                req.producer_epoch,
                &(OFFSETS_TOPIC.to_string(), p),
            )
            .await
        {
            tracing::info!(transactional_id = %req.transactional_id.0, %group, error = %e, "TxnOffsetCommit refused");
            check = Err(fenced_code(&e, ctx.version, 2));
        }
    }
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
        if let Err(e) = broker
            .groups
            .persist_txn_offsets(broker, records, req.producer_id.0, req.producer_epoch)
            .await
        {
            tracing::error!(%group, error = %e, "persisting transactional offset commit failed");
            for tc in codes.iter_mut() {
                for c in tc.iter_mut() {
                    if *c == 0 {
                        *c = E::CoordinatorNotAvailable.code();
                    }
                }
            }
        }
    }
    TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .into_iter()
            .zip(codes)
            .map(|(t, tc)| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(tc)
                            .map(|(p, c)| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(c)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
