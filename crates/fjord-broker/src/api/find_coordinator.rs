//! FindCoordinator (key 10): which broker coordinates a consumer group or a transactional id: the leader of the
//! key's partition of `__consumer_offsets` or `__transaction_state` (Kafka's `partitionFor`), or this broker
//! while the transaction topic does not exist yet (its first use creates it). The first group lookup creates `__consumer_offsets`, as in Kafka. Advertising
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
    let meta = ctx.state.meta.state();
    // (node, host, port) of the coordinator for `key`, or an error code when its partition has no leader.
    let locate = |key: &StrBytes| -> Result<(i32, String, i32), i16> {
        let topic = if req.key_type == KEY_TYPE_GROUP {
            crate::groups::OFFSETS_TOPIC
        } else {
            crate::transactions::TXN_TOPIC
        };
        let Some(t) = meta.topics.get(topic) else {
            let (host, port) = &ctx.state.advertised;
            return Ok((ctx.state.config.node_id, host.clone(), *port));
        };
        let n = t.partitions.len() as i32;
        let p = fjord_coordinator::records::partition_for(key, n.max(1));
        let leader = t.partitions.get(p as usize).map_or(-1, |p| p.leader);
        if leader == ctx.state.config.node_id {
            let (host, port) = &ctx.state.advertised;
            return Ok((leader, host.clone(), *port));
        }
        match meta.brokers.get(&leader) {
            Some(b) => Ok((leader, b.host.clone(), b.port)),
            None => Err(E::CoordinatorNotAvailable.code()),
        }
    };
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
                match locate(k) {
                    Ok((node, host, port)) => c
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(&host))
                        .with_port(port),
                    Err(code) => c
                        .with_error_code(code)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
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
    match locate(&req.key) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(&host))
            .with_port(port),
        Err(code) => FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
