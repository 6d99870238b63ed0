//! SyncGroup (key 14): the leader hands out assignments; every member waits for its own. Only on the group's
//! coordinator (NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS elsewhere).

use std::time::Duration;

use fjord_coordinator::{Reply, SyncRequest, SyncResult};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{str_bytes, Ctx};
use crate::now_ms;

/// Longest a member waits for the leader's assignment; the coordinator's own deadline (the rebalance
/// timeout) normally ends the wait first.
const MAX_SYNC_WAIT: Duration = Duration::from_secs(600);

pub async fn handle(ctx: &Ctx<'_>, req: SyncGroupRequest) -> SyncGroupResponse {
    let sr = SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let reply = match ctx.state.groups.coordinator_for(ctx.state, &sr.group_id) {
        Ok(mut c) => c.sync(sr, now_ms()),
        Err(code) => return SyncGroupResponse::default().with_error_code(code),
    };
    let result = match reply {
        Reply::Now(r) => r,
        Reply::Later(rx) => match tokio::time::timeout(MAX_SYNC_WAIT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => SyncResult {
                error: E::UnknownMemberId.code(),
                ..Default::default()
            },
            Err(_) => SyncResult {
                error: E::RebalanceInProgress.code(),
                ..Default::default()
            },
        },
    };
    if result.error == 0 {
        // A completed rebalance is written to __consumer_offsets before members act on it.
        let records = ctx.state.groups.lock().take_records();
        if let Err(e) = ctx.state.groups.persist(ctx.state, records).await {
            // Kafka answers the members then (the assignment stands in memory); the group's state is written
            // again at its next change.
            tracing::error!(error = %e, "persisting group metadata failed");
        }
    }
    let v5 = ctx.version >= 5;
    SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_protocol_type(if v5 {
            result.protocol_type.as_deref().map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(if v5 {
            result.protocol_name.as_deref().map(str_bytes)
        } else {
            None
        })
        .with_assignment(result.assignment)
}
