//! Metadata (key 3): brokers, controller, and topics with their partitions' leaders, replicas and ISR.
//! Unknown topics are created here when `auto.create.topics.enable` is on and the request allows it, as Kafka
//! does; creation goes through the metadata quorum, so the response already describes the new topic.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{str_bytes, Ctx};
use crate::admin::{create_topic, is_internal_topic, NewTopic};
use crate::groups::{ensure_offsets_topic, OFFSETS_TOPIC};
use crate::transactions::{ensure_txn_topic, TXN_TOPIC};

enum Wanted {
    All,
    Some(Vec<(Option<String>, Uuid)>),
}

pub async fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let broker = ctx.state;
    let wanted = match req.topics {
        None => Wanted::All,
        // v0 has no null array: an empty list means all topics.
        Some(t) if t.is_empty() && ctx.version == 0 => Wanted::All,
        Some(t) => Wanted::Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let allow_create =
        (ctx.version < 4 || req.allow_auto_topic_creation) && broker.config.auto_create_topics;
    let mut create_errors = std::collections::HashMap::new();
    if let (Wanted::Some(list), true) = (&wanted, allow_create) {
        let state = broker.meta.state();
        for (name, _) in list {
            let Some(name) = name else { continue };
            if state.topics.contains_key(name) || fjord_meta::validate_topic_name(name).is_err() {
                continue;
            }
            if is_internal_topic(name) {
                // As Kafka's AutoTopicCreationManager: a coordinator's topic is created with the coordinator's
                // settings (compacted, its partition count), never with a client's defaults; other internal
                // names are not this broker's to create.
                let created = match name.as_str() {
                    OFFSETS_TOPIC => ensure_offsets_topic(broker).await,
                    TXN_TOPIC => ensure_txn_topic(broker).await,
                    _ => continue,
                };
                if let Err(e) = created {
                    tracing::warn!(topic = %name, error = %e, "auto-create failed");
                    create_errors.insert(name.clone(), e.code());
                }
                continue;
            }
            let t = NewTopic {
                name: name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: vec![],
                configs: vec![],
            };
            match create_topic(broker, t, false).await {
                Ok(_) => tracing::info!(topic = %name, "auto-created topic"),
                Err(e) if e.code == E::TopicAlreadyExists.code() => {}
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e.message, "auto-create failed");
                    create_errors.insert(name.clone(), e.code);
                }
            }
        }
    }

    let state = broker.meta.state();
    let describe = |t: &fjord_meta::TopicMeta| -> MetadataResponseTopic {
        let partitions = t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (leader, offline) = partition_view(broker, &state, &t.name, i as i32, p);
                MetadataResponsePartition::default()
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
                    .with_offline_replicas(offline.into_iter().map(BrokerId).collect())
            })
            .collect();
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(&t.name))))
            .with_topic_id(t.id)
            .with_is_internal(t.internal)
            .with_partitions(partitions)
            .with_topic_authorized_operations(i32::MIN)
    };
    let topics = match wanted {
        Wanted::All => state.topics.values().map(describe).collect(),
        Wanted::Some(list) => list
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(n) => state.topics.get(n),
                    None => state.topic_by_id(&id),
                };
                match (found, name) {
                    (Some(t), _) => describe(t),
                    (None, Some(n)) => {
                        let code = if let Some(c) = create_errors.get(&n) {
                            *c
                        } else if fjord_meta::validate_topic_name(&n).is_err() {
                            E::InvalidTopicException.code()
                        } else {
                            E::UnknownTopicOrPartition.code()
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code)
                            .with_name(Some(TopicName(str_bytes(&n))))
                            .with_topic_authorized_operations(i32::MIN)
                    }
                    (None, None) => MetadataResponseTopic::default()
                        .with_error_code(E::UnknownTopicId.code())
                        .with_topic_id(id)
                        .with_topic_authorized_operations(i32::MIN),
                }
            })
            .collect(),
    };
    // Live brokers only: clients never dial a fenced one.
    let brokers = state
        .brokers
        .values()
        .filter(|b| state.is_live(b.id))
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&state.cluster_id)))
        .with_controller_id(BrokerId(super::reported_controller(ctx, &state)))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}

/// A partition's leader as clients should see it (-1 when it has none that can serve) and its offline replicas.
/// A replica here whose log directory is offline (or whose directory could not be opened) is an offline replica;
/// with it as leader the partition has none, as Kafka's metadata cache reports once the controller has moved
/// leadership off a failed directory: LEADER_NOT_AVAILABLE, leader -1, the replica in offline_replicas (v5+).
/// Replicas on fenced brokers are offline too (Kafka lists them in offline_replicas), and so are those the
/// metadata marks offline (their broker reported its directory failed), whichever broker answers.
pub(super) fn partition_view(
    broker: &crate::BrokerState,
    state: &fjord_meta::ClusterState,
    topic: &str,
    index: i32,
    p: &fjord_meta::PartitionMeta,
) -> (i32, Vec<i32>) {
    let offline: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|&b| {
            !state.is_live(b)
                || p.offline.contains(&b)
                || (b == broker.config.node_id && broker.partitions.is_offline(topic, index))
        })
        .collect();
    let leader_alive = state.is_live(p.leader) && !offline.contains(&p.leader);
    (if leader_alive { p.leader } else { -1 }, offline)
}
