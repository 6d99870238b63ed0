//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest local (-4) and
//! offset-by-timestamp lookups, each bounded by what the request's isolation level may read (the high watermark,
//! or the last stable offset for read_committed).

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
                    // Only the leader answers (a follower's log may hold data above the high watermark, or lag).
                    if let Err(e) = part.check_leader(p.current_leader_epoch) {
                        return resp.with_error_code(e.code());
                    }
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
                    // read_committed consumers see the end of the log at the last stable offset.
                    let fetchable = if read_committed {
                        part.last_stable_offset()
                    } else {
                        hw
                    };
                    // As Kafka (`ReplicaManager.fetchOffsetForTimestamp`): an offset found at or above what the
                    // isolation level may read is no answer, so a timestamp never points into an open transaction.
                    let found = |r: Option<(i64, i64)>| match r.filter(|(o, _)| *o < fetchable) {
                        Some((offset, ts)) => resp.clone().with_offset(offset).with_timestamp(ts),
                        None => resp.clone(),
                    };
                    match p.timestamp {
                        LATEST => resp.with_offset(fetchable),
                        EARLIEST | EARLIEST_LOCAL => resp.with_offset(start),
                        MAX_TIMESTAMP => found(part.max_timestamp()),
                        // A timestamp lookup reads and decompresses batches: off the async workers.
                        ts if ts >= 0 => match crate::blocking(|| part.offset_for_timestamp(ts)) {
                            Ok(r) => found(r),
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
