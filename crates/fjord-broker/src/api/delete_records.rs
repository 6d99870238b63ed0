//! DeleteRecords (key 21): move a partition's log start offset forward (-1 means the high watermark).

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::Ctx;
use crate::admin::is_internal_topic;

pub async fn handle(ctx: &Ctx<'_>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let broker = ctx.state;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let res = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    if is_internal_topic(&name) {
                        // Kafka's answer (ReplicaManager, "Cannot delete records of internal topic"; the response has no
                        // message field): only the coordinators decide what leaves these logs.
                        return res.with_error_code(E::InvalidTopicException.code());
                    }
                    let part = match broker.partitions.online(&name, p.partition_index) {
                        Ok(Some(part)) => part,
                        Ok(None) => return res.with_error_code(E::UnknownTopicOrPartition.code()),
                        Err(e) => return res.with_error_code(e.code()),
                    };
                    if let Err(e) = part.check_leader(-1) {
                        return res.with_error_code(e.code());
                    }
                    let (_, hw) = part.offsets();
                    let target = if p.offset == -1 { hw } else { p.offset };
                    if target < 0 || target > hw {
                        return res.with_error_code(E::OffsetOutOfRange.code());
                    }
                    match part.delete_records_before(target) {
                        Ok(low) => res.with_low_watermark(low),
                        Err(e) => res.with_error_code(e.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
