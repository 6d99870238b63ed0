//! DeleteGroups (key 42): delete empty groups and their committed offsets (tombstones in `__consumer_offsets`).
//! Each group is answered by its coordinator only: NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS per group
//! elsewhere, and the write's failure per group when the tombstones could not be written.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Ctx;

pub async fn handle(ctx: &Ctx<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let groups = &ctx.state.groups;
    let mut codes: Vec<i16> = Vec::with_capacity(req.groups_names.len());
    let mut records = Vec::new();
    for g in &req.groups_names {
        match groups.coordinator_for(ctx.state, &g.0) {
            Ok(mut c) => {
                codes.push(c.delete(&g.0));
                records.extend(c.take_records());
            }
            Err(code) => codes.push(code),
        }
    }
    if let Err(e) = groups.persist(ctx.state, records).await {
        tracing::error!(error = %e, "persisting group deletion failed");
        let failed = crate::groups::write_error_code(&e);
        for c in codes.iter_mut().filter(|c| **c == 0) {
            *c = failed;
        }
    } else {
        // The tombstones of deleted KIP-848 groups: a group fails only when its own write did.
        let names: Vec<&str> = req.groups_names.iter().map(|g| g.0.as_str()).collect();
        let failed = groups.flush_consumer_groups(ctx.state, &names).await;
        for (c, g) in codes.iter_mut().zip(&names) {
            if *c == 0 {
                if let Some(code) = failed.get(*g) {
                    *c = *code;
                }
            }
        }
    }
    DeleteGroupsResponse::default().with_results(
        req.groups_names
            .into_iter()
            .zip(codes)
            .map(|(g, code)| {
                DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(code)
            })
            .collect(),
    )
}
