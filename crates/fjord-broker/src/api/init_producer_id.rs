//! InitProducerId (key 22): a producer id and epoch for an idempotent producer, or, with a transactional id,
//! the transaction coordinator's new epoch for that id (fencing older instances, KIP-98; re-initialisation
//! with the current id and epoch, KIP-360).

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Ctx;
use crate::transactions::TxnFailure;
use fjord_coordinator::txn::TxnError;

pub async fn handle(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let refused = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(id) = req.transactional_id.as_deref() {
        if id.is_empty() {
            return refused(E::InvalidRequest.code());
        }
        let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        return match ctx
            .state
            .transactions
            .init_producer_id(ctx.state, id, req.transaction_timeout_ms, expected)
            .await
        {
            Ok((pid, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(e) => {
                tracing::info!(transactional_id = %id, error = %e, "InitProducerId refused");
                refused(fenced_code(&e, ctx.version, 4))
            }
        };
    }
    // An idempotent producer re-initialising (KIP-360) simply gets a fresh id: there is no transaction to
    // fence, and a new id restarts its sequences at 0 everywhere.
    match ctx.state.producer_ids.allocate(&ctx.state.meta).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            refused(E::CoordinatorNotAvailable.code())
        }
    }
}

/// The code for a failure; PRODUCER_FENCED exists only from `since` (KIP-588), older versions hear
/// INVALID_PRODUCER_EPOCH as Kafka answers them.
pub(super) fn fenced_code(e: &TxnFailure, version: i16, since: i16) -> i16 {
    match e {
        TxnFailure::Txn(TxnError::ProducerFenced) if version < since => {
            E::InvalidProducerEpoch.code()
        }
        e => e.code(),
    }
}
