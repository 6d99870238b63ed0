//! ListPartitionReassignments (key 46, KIP-455): the reassignments in progress, from a view synced with the
//! metadata quorum: each partition's current replicas (the union of the original and target ones) with the
//! adding and removing replicas. Null topics lists every reassignment; named partitions that do not exist or are
//! not being reassigned are left out, as Kafka's controller does.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{str_bytes, Ctx};

pub async fn handle(
    ctx: &Ctx<'_>,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let state = ctx.state;
    let _ = state.meta.sync().await;
    let meta = state.meta.state();
    let wanted: Vec<(String, Option<Vec<i32>>)> = match &req.topics {
        None => meta.topics.keys().map(|n| (n.clone(), None)).collect(),
        Some(ts) => ts
            .iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes.clone())))
            .collect(),
    };
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let mut topics = Vec::new();
    for (name, partitions) in wanted {
        let Some(t) = meta.topics.get(&name) else {
            continue;
        };
        let indexes: Vec<i32> =
            partitions.unwrap_or_else(|| t.reassignments.keys().copied().collect());
        let mut out = Vec::new();
        for i in indexes {
            let (Some(r), Some(p)) = (
                t.reassignment(i),
                usize::try_from(i).ok().and_then(|i| t.partitions.get(i)),
            ) else {
                continue;
            };
            if out
                .iter()
                .any(|o: &OngoingPartitionReassignment| o.partition_index == i)
            {
                continue;
            }
            out.push(
                OngoingPartitionReassignment::default()
                    .with_partition_index(i)
                    .with_replicas(ids(&p.replicas))
                    .with_adding_replicas(ids(&r.adding))
                    .with_removing_replicas(ids(&r.removing)),
            );
        }
        if !out.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partitions(out),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
