//! EndTxn (key 26): commit or abort the producer's transaction; answered once every marker is durable.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::init_producer_id::fenced_code;
use super::Ctx;

pub async fn handle(ctx: &Ctx<'_>, req: EndTxnRequest) -> EndTxnResponse {
    let r = ctx
        .state
        .transactions
        .end_txn(
            ctx.state,
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await;
    let code = match r {
        Ok(()) => 0,
        Err(e) => {
            tracing::info!(transactional_id = %req.transactional_id.0, error = %e, "EndTxn refused");
            fenced_code(&e, ctx.version, 2)
        }
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
