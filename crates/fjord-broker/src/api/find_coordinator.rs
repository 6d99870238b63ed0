//! FindCoordinator (key 10): which broker coordinates a consumer group or a transactional id. With one
//! broker it is always this one. The first group lookup creates `__consumer_offsets`, as in Kafka. Advertising
//! this API also matters to librdkafka, which enables LZ4 only for brokers that have it.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, Ctx};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if req.key_type == KEY_TYPE_GROUP {
        if let Err(e) = crate::groups::ensure_offsets_topic(ctx.state).await {
            tracing::error!(error = %e, "cannot create __consumer_offsets");
            return FindCoordinatorResponse::default()
                .with_error_code(E::CoordinatorNotAvailable.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
        }
    }
    let (host, port) = &ctx.state.advertised;
    let node = ctx.state.config.node_id;
    let answer = |key: &StrBytes| -> (i16, Option<String>) {
        if req.key_type != KEY_TYPE_GROUP && req.key_type != KEY_TYPE_TRANSACTION {
            return (
                E::InvalidRequest.code(),
                Some(format!("Unsupported key type {}.", req.key_type)),
            );
        }
        if key.is_empty() {
            return (
                E::InvalidRequest.code(),
                Some("The coordinator key must not be empty.".into()),
            );
        }
        (0, None)
    };
    if ctx.version >= 4 {
        // Batched (KIP-699): one entry per key.
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg) = answer(k);
                let c = Coordinator::default()
                    .with_key(k.clone())
                    .with_error_code(code);
                if code != 0 {
                    return c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_message(msg.map(|m| str_bytes(&m)));
                }
                c.with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(*port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, msg) = answer(&req.key);
    if code != 0 {
        return FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_error_message(if ctx.version >= 1 {
                msg.map(|m| str_bytes(&m))
            } else {
                None
            })
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(node))
        .with_host(str_bytes(host))
        .with_port(*port)
}
