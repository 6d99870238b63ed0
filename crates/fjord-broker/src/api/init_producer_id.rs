//! InitProducerId (key 22): a producer id for an idempotent producer (KIP-98). Transactional ids are refused
//! until the transaction coordinator exists (issue #5).

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Ctx;

pub async fn handle(ctx: &Ctx<'_>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let refused = |code: E| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        tracing::info!("refusing a transactional producer: transactions are not supported yet");
        return refused(E::TransactionalIdAuthorizationFailed);
    }
    // A producer re-initialising (KIP-360) simply gets a fresh id: without transactions there is no state
    // to fence, and a new id restarts its sequences at 0 everywhere.
    match ctx.state.producer_ids.allocate(&ctx.state.meta).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            refused(E::CoordinatorNotAvailable)
        }
    }
}
