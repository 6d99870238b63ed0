//! DescribeTransactions (key 65): state, producer, timeout and partitions of transactional ids. An id
//! coordinated elsewhere gets NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while loading) in its entry.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::{str_bytes, Ctx};

pub async fn handle(
    ctx: &Ctx<'_>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let s = TransactionState::default()
            .with_transactional_id(id.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let m = match ctx.state.transactions.describe(ctx.state, &id).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                states.push(s.with_error_code(E::TransactionalIdNotFound.code()));
                continue;
            }
            Err(e) => {
                states.push(s.with_error_code(e.code()));
                continue;
            }
        };
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &m.partitions {
            topics.entry(t).or_default().push(*p);
        }
        states.push(
            s.with_transaction_state(str_bytes(m.state.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            TopicData::default()
                                .with_topic(TopicName(str_bytes(t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                ),
        );
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
