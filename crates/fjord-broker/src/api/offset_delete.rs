//! OffsetDelete (key 47): forget committed offsets of partitions the group no longer consumes. Only on the
//! group's coordinator (top-level NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS elsewhere).

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::Ctx;

pub async fn handle(ctx: &Ctx<'_>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let (result, records) = {
        let mut c = match ctx.state.groups.coordinator_for(ctx.state, &req.group_id.0) {
            Ok(c) => c,
            Err(code) => return OffsetDeleteResponse::default().with_error_code(code),
        };
        let r = c.delete_offsets(&req.group_id.0, &wanted);
        (r, c.take_records())
    };
    if let Err(e) = ctx.state.groups.persist_commit(ctx.state, records).await {
        tracing::error!(error = %e, "persisting offset deletion failed");
        return OffsetDeleteResponse::default()
            .with_error_code(crate::groups::write_error_code(&e));
    }
    let codes = match result {
        Ok(c) => c,
        Err(code) => return OffsetDeleteResponse::default().with_error_code(code),
    };
    let mut codes = codes.into_iter();
    OffsetDeleteResponse::default().with_topics(
        req.topics
            .into_iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(codes.next().unwrap_or(0))
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(parts)
            })
            .collect(),
    )
}
