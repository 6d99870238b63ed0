//! JoinGroup (key 11): enter a consumer group's rebalance; the answer waits until the join phase completes.
//! Only on the group's coordinator (NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS elsewhere); a join parked
//! when the coordinator resigns is answered NOT_COORDINATOR.

use std::time::Duration;

use fjord_coordinator::{JoinRequest, JoinResult, Reply};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{str_bytes, Ctx};
use crate::now_ms;

pub async fn handle(ctx: &Ctx<'_>, req: JoinGroupRequest) -> JoinGroupResponse {
    let rebalance_timeout = if ctx.version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let jr = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.unwrap_or("").to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: rebalance_timeout,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let member_id = jr.member_id.clone();
    let groups = &ctx.state.groups;
    let served = groups.ensure_served(ctx.state, &jr.group_id).await;
    let joined = served.and_then(|()| {
        let mut c = groups.coordinator_for(ctx.state, &jr.group_id)?;
        Ok(c.join(jr, now_ms()))
    });
    let reply = match joined {
        Ok(reply) => reply,
        Err(code) => {
            return JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1)
                .with_protocol_name((ctx.version < 7).then(|| str_bytes("")))
                .with_member_id(str_bytes(&member_id))
        }
    };
    let result = match reply {
        Reply::Now(r) => r,
        // Bounded: the coordinator answers by the rebalance timeout; the margin covers its clock's tick.
        Reply::Later(rx) => {
            let wait =
                Duration::from_millis(rebalance_timeout.max(0) as u64) + Duration::from_secs(5);
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => JoinResult {
                    error: E::UnknownMemberId.code(),
                    member_id,
                    generation_id: -1,
                    ..Default::default()
                },
                Err(_) => JoinResult {
                    error: E::RebalanceInProgress.code(),
                    member_id,
                    generation_id: -1,
                    ..Default::default()
                },
            }
        }
    };
    let v = ctx.version;
    // Before v7 the protocol name is not nullable.
    let protocol_name = match result.protocol_name {
        Some(p) => Some(str_bytes(&p)),
        None if v < 7 => Some(str_bytes("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation_id)
        .with_protocol_type(if v >= 7 {
            result.protocol_type.as_deref().map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&result.leader))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&id))
                        .with_group_instance_id(if v >= 5 {
                            instance.as_deref().map(str_bytes)
                        } else {
                            None
                        })
                        .with_metadata(metadata)
                })
                .collect(),
        )
}
