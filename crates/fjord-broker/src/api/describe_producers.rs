//! DescribeProducers (key 61): the producers with state in each partition (id, epoch, last sequence, open
//! transaction's first offset), for operators hunting a hanging transaction.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::Ctx;

pub fn handle(ctx: &Ctx<'_>, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|p| {
                    let resp = PartitionResponse::default().with_partition_index(*p);
                    let part = match ctx.state.partitions.online(&t.name.0, *p) {
                        Ok(Some(part)) => part,
                        Ok(None) => return resp.with_error_code(E::UnknownTopicOrPartition.code()),
                        Err(e) => return resp.with_error_code(e.code()),
                    };
                    resp.with_active_producers(
                        part.producers()
                            .into_iter()
                            .map(|v| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(v.producer_id))
                                    .with_producer_epoch(i32::from(v.epoch))
                                    .with_last_sequence(v.last_sequence)
                                    .with_last_timestamp(v.last_timestamp)
                                    .with_coordinator_epoch(v.coordinator_epoch)
                                    .with_current_txn_start_offset(v.current_txn_start_offset)
                            })
                            .collect(),
                    )
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
