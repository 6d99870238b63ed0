//! ListTransactions (key 66): the transactional ids this coordinator knows, filtered by state names, producer
//! ids and (v1, KIP-994) a minimum running time. Unknown state names are echoed back as Kafka does. Only the
//! ids whose `__transaction_state` partition this broker leads (clients ask every broker);
//! COORDINATOR_LOAD_IN_PROGRESS and no list while one of those partitions is loading, as Kafka answers.

use fjord_coordinator::txn::TxnState;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId};

use super::{str_bytes, Ctx};
use crate::now_ms;

pub async fn handle(ctx: &Ctx<'_>, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut wanted_states = Vec::new();
    for s in &req.state_filters {
        match TxnState::from_name(s) {
            Some(st) => wanted_states.push(st),
            None => unknown.push(s.clone()),
        }
    }
    let now = now_ms();
    let all = match ctx.state.transactions.snapshot(ctx.state).await {
        Ok(all) => all,
        Err(code) => {
            return ListTransactionsResponse::default()
                .with_error_code(code)
                .with_unknown_state_filters(unknown)
        }
    };
    let states = all
        .into_iter()
        .filter(|m| req.state_filters.is_empty() || wanted_states.contains(&m.state))
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        .filter(|m| {
            req.duration_filter < 0
                || (m.state == TxnState::Ongoing && now - m.start_ms >= req.duration_filter)
        })
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(str_bytes(&m.transactional_id).into())
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
