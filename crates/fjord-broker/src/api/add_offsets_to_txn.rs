//! AddOffsetsToTxn (key 25): the consumer group's `__consumer_offsets` partition joins the transaction, so
//! the offsets a TxnOffsetCommit writes there are committed or aborted with it.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::init_producer_id::fenced_code;
use super::Ctx;

pub async fn handle(ctx: &Ctx<'_>, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let r = ctx
        .state
        .transactions
        .add_offsets(
            ctx.state,
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id,
        )
        .await;
    let code = match r {
        Ok(()) => 0,
        Err(e) => {
            tracing::info!(transactional_id = %req.transactional_id.0, error = %e, "AddOffsetsToTxn refused");
            fenced_code(&e, ctx.version, 2)
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
