//! LeaveGroup (key 13): one member (v0-v2) or a batch of members (v3+, KIP-345) leave a group. Only on the
//! group's coordinator: elsewhere the top-level error is NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while
//! loading), with no member results, as Kafka answers.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{str_bytes, Ctx};
use crate::now_ms;

pub async fn handle(ctx: &Ctx<'_>, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let (codes, records) = {
        let mut c = match ctx.state.groups.coordinator_for(ctx.state, &req.group_id.0) {
            Ok(c) => c,
            Err(code) => return LeaveGroupResponse::default().with_error_code(code),
        };
        let codes = c.leave(&req.group_id.0, &members, now_ms());
        (codes, c.take_records())
    };
    if let Err(e) = ctx.state.groups.persist(ctx.state, records).await {
        tracing::error!(error = %e, "persisting group metadata failed");
    }
    if ctx.version < 3 {
        return LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0));
    }
    LeaveGroupResponse::default().with_members(
        members
            .into_iter()
            .zip(codes)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(&id))
                    .with_group_instance_id(instance.as_deref().map(str_bytes))
                    .with_error_code(code)
            })
            .collect(),
    )
}
