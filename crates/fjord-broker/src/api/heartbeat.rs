//! Heartbeat (key 12): keeps a member's session alive and tells it when a rebalance started.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Ctx;
use crate::now_ms;

pub fn handle(ctx: &Ctx<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = ctx.state.groups.lock().heartbeat(
        &req.group_id.0,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        now_ms(),
    );
    HeartbeatResponse::default().with_error_code(code)
}
