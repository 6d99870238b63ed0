//! DeleteGroups (key 42): delete empty groups and their committed offsets (tombstones in `__consumer_offsets`).
//! Each group is answered by its coordinator only: NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS per group
//! elsewhere, and the write's failure per group when the tombstones could not be written.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Ctx;

pub async fn handle(ctx: &Ctx<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let names: Vec<&str> = req.groups_names.iter().map(|g| g.0.as_str()).collect();
    let codes = crate::groups::delete_groups(ctx.state, &names).await;
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
