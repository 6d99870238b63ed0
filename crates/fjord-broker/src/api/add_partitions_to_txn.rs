//! AddPartitionsToTxn (key 24): partitions a transaction is about to write to. v0-v3 carry one transaction
//! from a producer; v4+ (KIP-890) batch several and may only verify (`verify_only`) that partitions are
//! already part of the open transaction. Unknown partitions fail with UNKNOWN_TOPIC_OR_PARTITION and make
//! the rest of their request OPERATION_NOT_ATTEMPTED, as in Kafka.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TransactionalId,
};

use super::init_producer_id::fenced_code;
use super::Ctx;

/// One transaction's partitions, added (or verified) together.
async fn one(
    ctx: &Ctx<'_>,
    id: &TransactionalId,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let meta = ctx.state.meta.state();
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let exists = |(t, p): &(String, i32)| {
        meta.topics
            .get(t)
            .is_some_and(|m| *p >= 0 && (*p as usize) < m.partitions.len())
    };
    let mut codes: Vec<i16> = vec![0; wanted.len()];
    if wanted.iter().all(exists) {
        if verify_only {
            for (i, tp) in wanted.iter().enumerate() {
                if let Err(e) = ctx
                    .state
                    .transactions
                    .verify(ctx.state, id, producer_id, epoch, tp)
                    .await
                {
                    codes[i] = fenced_code(&e, ctx.version, 2);
                }
            }
        } else if let Err(e) = ctx
            .state
            .transactions
            .add_partitions(ctx.state, id, producer_id, epoch, &wanted)
            .await
        {
            tracing::info!(transactional_id = %id.0, error = %e, "AddPartitionsToTxn refused");
            codes.fill(fenced_code(&e, ctx.version, 2));
        }
    } else {
        for (i, tp) in wanted.iter().enumerate() {
            codes[i] = if exists(tp) {
                E::OperationNotAttempted.code()
            } else {
                E::UnknownTopicOrPartition.code()
            };
        }
    }
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(codes.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect()
}

pub async fn handle(ctx: &Ctx<'_>, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    if ctx.version <= 3 {
        let results = one(
            ctx,
            &req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let results = one(
            ctx,
            &t.transactional_id,
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
        )
        .await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(out)
}
