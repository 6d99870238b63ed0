//! DeleteGroups (key 42): delete empty groups and their committed offsets (tombstones in `__consumer_offsets`).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Ctx;

pub async fn handle(ctx: &Ctx<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let (codes, records) = {
        let mut c = ctx.state.groups.lock();
        let codes: Vec<i16> = req.groups_names.iter().map(|g| c.delete(&g.0)).collect();
        (codes, c.take_records())
    };
    if let Err(e) = ctx.state.groups.persist(ctx.state, records).await {
        tracing::error!(error = %e, "persisting group deletion failed");
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
