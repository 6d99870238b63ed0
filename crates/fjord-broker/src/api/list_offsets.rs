//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest local (-4) and
//! offset-by-timestamp lookups.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Ctx;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;

pub fn handle(ctx: &Ctx<'_>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let broker = ctx.state;
    let meta = broker.meta.state();
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let part = match broker.partitions.online(&name, p.partition_index) {
                        Ok(Some(part)) => part,
                        Ok(None) => return resp.with_error_code(E::UnknownTopicOrPartition.code()),
                        Err(e) => return resp.with_error_code(e.code()),
                    };
                    let epoch = meta
                        .topics
                        .get(&name)
                        .and_then(|t| t.partitions.get(p.partition_index as usize))
                        .map(|p| p.leader_epoch)
                        .unwrap_or(-1);
                    // leader_epoch exists from v4; older versions must leave it at its default.
                    let resp = if ctx.version >= 4 {
                        resp.with_leader_epoch(epoch)
                    } else {
                        resp
                    };
                    let (start, hw) = part.offsets();
                    match p.timestamp {
                        // read_committed consumers see the end of the log at the last stable offset.
                        LATEST if read_committed => resp.with_offset(part.last_stable_offset()),
                        LATEST => resp.with_offset(hw),
                        EARLIEST | EARLIEST_LOCAL => resp.with_offset(start),
                        MAX_TIMESTAMP => match part.max_timestamp() {
                            Some((offset, ts)) => resp.with_offset(offset).with_timestamp(ts),
                            None => resp,
                        },
                        ts if ts >= 0 => match part.offset_for_timestamp(ts) {
                            Ok(Some((offset, ts))) => resp.with_offset(offset).with_timestamp(ts),
                            Ok(None) => resp,
                            Err(e) => resp.with_error_code(e.code()),
                        },
                        _ => resp.with_error_code(E::InvalidRequest.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
