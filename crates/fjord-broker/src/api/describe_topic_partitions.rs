//! DescribeTopicPartitions (key 75, KIP-966): topics and their partitions (leader, epoch, replicas, ISR, offline
//! replicas) for admin tools, paged so a topic with many partitions does not make one huge response. Kafka 4's
//! AdminClient `describeTopics` (and so `kafka-topics.sh --describe`) uses it instead of Metadata.
//!
//! As Kafka's handler: an empty topic list means every topic; topics are answered in name order; the response
//! holds at most `min(response_partition_limit, max.request.partition.size.limit)` partitions and, when more remain,
//! a `next_cursor` naming the first one left out. A cursor starts at its topic and partition (its topic must be
//! among those asked for). Unknown topics asked for by name get UNKNOWN_TOPIC_OR_PARTITION; nothing is
//! auto-created. Fjord has no eligible leader replicas (KIP-966's ELR), so those lists are empty.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::metadata::partition_view;
use super::{str_bytes, Ctx};

pub fn handle(
    ctx: &Ctx<'_>,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let broker = ctx.state;
    let state = broker.meta.state();
    let all = req.topics.is_empty();
    let mut names: Vec<String> = if all {
        state.topics.keys().cloned().collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (first_topic, first_partition) = match &req.cursor {
        Some(c) => {
            let topic = c.topic_name.0.to_string();
            if !all && !names.contains(&topic) {
                // Kafka fails the whole request: INVALID_REQUEST for every topic asked for.
                tracing::debug!(%topic, "DescribeTopicPartitions cursor outside the topics asked for");
                return DescribeTopicPartitionsResponse::default().with_topics(
                    names
                        .iter()
                        .map(|n| {
                            DescribeTopicPartitionsResponseTopic::default()
                                .with_error_code(E::InvalidRequest.code())
                                .with_name(Some(TopicName(str_bytes(n))))
                                .with_topic_authorized_operations(i32::MIN)
                        })
                        .collect(),
                );
            }
            (Some(topic), c.partition_index.max(0))
        }
        None => (None, 0),
    };
    let configured = broker
        .config
        .props
        .get("max.request.partition.size.limit")
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(2000);
    let limit = if req.response_partition_limit > 0 {
        req.response_partition_limit.min(configured)
    } else {
        configured
    }
    .max(1) as usize;

    let mut topics = Vec::new();
    let mut left = limit;
    let mut next_cursor = None;
    for name in names
        .iter()
        .filter(|n| first_topic.as_ref().is_none_or(|f| *n >= f))
    {
        let Some(t) = state.topics.get(name) else {
            if !all {
                topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(E::UnknownTopicOrPartition.code())
                        .with_name(Some(TopicName(str_bytes(name))))
                        .with_topic_authorized_operations(i32::MIN),
                );
            }
            continue;
        };
        let start = if first_topic.as_ref() == Some(name) {
            first_partition as usize
        } else {
            0
        };
        if left == 0 {
            next_cursor = Some((name.clone(), start as i32));
            break;
        }
        let mut partitions = Vec::new();
        for (i, p) in t.partitions.iter().enumerate().skip(start) {
            if left == 0 {
                next_cursor = Some((name.clone(), i as i32));
                break;
            }
            left -= 1;
            let (leader, offline) = partition_view(broker, &state, name, i as i32, p);
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(if leader == -1 {
                        E::LeaderNotAvailable.code()
                    } else {
                        0
                    })
                    .with_partition_index(i as i32)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replicas.iter().map(|b| BrokerId(*b)).collect())
                    .with_isr_nodes(p.isr.iter().map(|b| BrokerId(*b)).collect())
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![]))
                    .with_offline_replicas(offline.into_iter().map(BrokerId).collect()),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_topic_id(t.id)
                .with_is_internal(t.internal)
                .with_partitions(partitions)
                .with_topic_authorized_operations(i32::MIN),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor.map(|(topic, partition)| {
            Cursor::default()
                .with_topic_name(TopicName(str_bytes(&topic)))
                .with_partition_index(partition)
        }))
}
