//! OffsetForLeaderEpoch (key 23, KIP-101/KIP-279/KIP-320): where a given leader epoch ended in a partition's
//! log. Followers use it to find where their log diverges from a new leader's; consumers use it to detect that
//! the log they were reading was truncated under them (a fetch position beyond the end offset of the epoch it
//! was read in).

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Ctx;

pub fn handle(ctx: &Ctx<'_>, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let broker = ctx.state;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let res = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let part = match broker.partitions.online(&name, p.partition) {
                        Ok(Some(part)) => part,
                        Ok(None) => return res.with_error_code(E::UnknownTopicOrPartition.code()),
                        Err(e) => return res.with_error_code(e.code()),
                    };
                    // The requester's view of the current leader epoch, when given (v2+), must be ours: an older
                    // one is fenced, a newer one means our metadata is behind (Kafka's checks). Only the leader
                    // answers a consumer; a follower (replica_id >= 0 in v3+) may ask the leader too.
                    if let Err(e) = part.check_leader(p.current_leader_epoch) {
                        return res.with_error_code(e.code());
                    }
                    let (epoch, end) = part.end_offset_for_epoch(p.leader_epoch);
                    res.with_leader_epoch(epoch).with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
