//! TxnOffsetCommit (key 28): a transactional producer commits a consumer group's offsets as part of its
//! transaction (consume-transform-produce). The offsets are written to `__consumer_offsets` as a
//! transactional batch of the producer and become visible to OffsetFetch only when the commit marker lands
//! there; an abort drops them. Only on the group's coordinator (NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS
//! per partition elsewhere). The group's partition must be in the producer's open transaction (AddOffsetsToTxn):
//! checked in process when this broker also coordinates the transactional id, else asked of the transaction
//! coordinator (KIP-890's AddPartitionsToTxn `verify_only`), whose retriable failures answer
//! COORDINATOR_LOAD_IN_PROGRESS as Kafka does on this path.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::init_producer_id::fenced_code;
use super::offset_commit::{not_acknowledged, validate, CommitPartition};
use super::Ctx;
use crate::groups::OFFSETS_TOPIC;
use crate::now_ms;

pub async fn handle(ctx: &Ctx<'_>, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let broker = ctx.state;
    let group = req.group_id.0.to_string();
    let now = now_ms();
    // Like Kafka: an empty member id and a negative generation skip the membership check (v0-v2 carry none).
    let served = if group.is_empty() {
        Err(E::InvalidGroupId.code())
    } else {
        broker.groups.ensure_served(broker, &group).await
    };
    let mut check = served.and_then(|()| {
        let mut c = broker.groups.coordinator_for(broker, &group)?;
        if req.member_id.is_empty() && req.generation_id < 0 {
            Ok(())
        } else {
            c.check_commit(
                &group,
                req.generation_id,
                &req.member_id,
                req.group_instance_id.as_deref(),
                true,
                now,
            )
        }
    });
    // Taken before the transaction is checked, so that a marker landing between the check and the write
    // refuses the write instead of letting it open a transaction no marker ends.
    let mut guard = None;
    if check.is_ok() {
        match broker
            .groups
            .start_txn_offsets(broker, &group, req.producer_id.0, req.producer_epoch)
        {
            Ok(g) => guard = g,
            Err(e) => check = Err(crate::groups::write_error_code(&e)),
        }
    }
    let local_txn = broker
        .transactions
        .coordinates_here(broker, &req.transactional_id);
    if check.is_ok() && !local_txn {
        let p = broker.groups.partition_of(&group);
        let verified = crate::transactions::verify_remote(
            broker,
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            OFFSETS_TOPIC,
            p,
        )
        .await;
        if let Err((code, why)) = verified {
            tracing::info!(transactional_id = %req.transactional_id.0, %group, %why, "TxnOffsetCommit refused");
            check = Err(if code == E::NotEnoughReplicas.code() {
                E::CoordinatorLoadInProgress.code()
            } else {
                code
            });
        }
    }
    if check.is_ok() && local_txn {
        // The group's partition must be in the producer's open transaction (AddOffsetsToTxn), or the
        // offsets could never be resolved by a marker.
        let p = broker.groups.partition_of(&group);
        if let Err(e) = broker
            .transactions
            .verify(
                broker,
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
        if let Err(e) = broker
            .groups
            .persist_txn_offsets(
                broker,
                records,
                req.producer_id.0,
                req.producer_epoch,
                guard,
            )
            .await
        {
            tracing::error!(%group, error = %e, "persisting transactional offset commit failed");
            not_acknowledged(&mut codes, crate::groups::commit_error_code(&e));
        }
    }
    // Checked and written, refused, or nothing valid to write: the guard is done with either way.
    if let Some(g) = guard {
        broker
            .groups
            .finish_txn_offsets(broker, &group, req.producer_id.0, g);
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
