//! Heartbeat (key 12): keeps a member's session alive and tells it when a rebalance started. NOT_COORDINATOR
//! (or COORDINATOR_LOAD_IN_PROGRESS) when the group's `__consumer_offsets` partition is not led (or not yet
//! loaded) here.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Ctx;
use crate::now_ms;

pub fn handle(ctx: &Ctx<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    let mut c = match ctx.state.groups.coordinator_for(ctx.state, &req.group_id.0) {
        Ok(c) => c,
        Err(code) => return HeartbeatResponse::default().with_error_code(code),
    };
    let code = c.heartbeat(
        &req.group_id.0,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        now_ms(),
    );
    HeartbeatResponse::default().with_error_code(code)
}
