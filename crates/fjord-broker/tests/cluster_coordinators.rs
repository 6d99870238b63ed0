//! Coordinator migration in an in-process three-broker cluster (Kafka's `onElection`/`onResignation`): the group
//! and transaction coordinators serve exactly the keys whose `__consumer_offsets` / `__transaction_state`
//! partition their broker leads, load a partition from its replicated log when they become its leader, and
//! forget it when they stop leading it. Raw protocol, so that every error code is seen as a client sees it.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::cluster::*;
use common::{s, Client};
use fjord_broker::groups::OFFSETS_TOPIC;
use fjord_broker::transactions::TXN_TOPIC;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Internal topics replicated to every broker, and rebalances that start at once.
const PROPS: &[(&str, &str)] = &[
    ("offsets.topic.replication.factor", "3"),
    ("transaction.state.log.replication.factor", "3"),
    ("transaction.state.log.min.isr", "2"),
    ("group.initial.rebalance.delay.ms", "0"),
];

/// Starts three brokers and waits until all are unfenced (internal topics need three live brokers).
async fn start() -> Cluster {
    let cluster = Cluster::start(3, PROPS).await;
    cluster
        .wait(LIMIT, "every broker is live", |c| {
            c.live()
                .all(|b| b.state().meta.state().live_brokers().len() == 3)
        })
        .await;
    cluster
}

/// FindCoordinator (v3) through broker `via`: (error, coordinator node).
async fn find(cluster: &Cluster, via: i32, key: &str, key_type: i8) -> (i16, i32) {
    let mut c = Client::connect(cluster.node(via)).await;
    let r = c
        .send(
            3,
            &FindCoordinatorRequest::default()
                .with_key(s(key))
                .with_key_type(key_type),
        )
        .await;
    (r.error_code, r.node_id.0)
}

/// Asks `via` for the coordinator until one is named, bounded.
async fn coordinator(cluster: &Cluster, via: i32, key: &str, key_type: i8) -> i32 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let (err, node) = find(cluster, via, key, key_type).await;
        if err == 0 && node >= 0 {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {key}: error {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a coordinator error is one a client retries after looking the coordinator up again.
fn retriable(code: i16) -> bool {
    code == E::NotCoordinator.code()
        || code == E::CoordinatorLoadInProgress.code()
        || code == E::CoordinatorNotAvailable.code()
}

fn partition_leader(
    b: &fjord_broker::Broker,
    topic: &str,
    p: usize,
) -> (i32, i32, Vec<i32>, Vec<i32>) {
    let st = b.state().meta.state();
    let pm = &st.topics[topic].partitions[p];
    (
        pm.leader,
        pm.leader_epoch,
        pm.replicas.clone(),
        pm.isr.clone(),
    )
}

async fn offset_fetch_v8(c: &mut Client, group: &str) -> (i16, Option<i64>) {
    let r = c
        .send(
            8,
            &OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0])]))]),
        )
        .await;
    let g = &r.groups[0];
    let offset = g
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.committed_offset);
    (g.error_code, offset)
}

async fn heartbeat(c: &mut Client, group: &str, generation: i32, member: &str) -> i16 {
    c.send(
        3,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member)),
    )
    .await
    .error_code
}

async fn commit(c: &mut Client, group: &str, generation: i32, member: &str, offset: i64) -> i16 {
    let r = c
        .send(
            8,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id_or_member_epoch(generation)
                .with_member_id(s(member))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)])]),
        )
        .await;
    r.topics[0].partitions[0].error_code
}

/// A consumer joins `group` alone on its coordinator and syncs: (member id, generation).
async fn join_and_sync(c: &mut Client, group: &str) -> (i16, String, i32) {
    let join = |member: String| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(s(&member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::new())])
    };
    let first = c.send(5, &join(String::new())).await;
    if first.error_code != E::MemberIdRequired.code() {
        return (first.error_code, String::new(), -1);
    }
    let member = first.member_id.to_string();
    let joined = c.send(5, &join(member.clone())).await;
    assert_eq!(joined.error_code, 0, "join");
    let synced = c
        .send(
            3,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(joined.generation_id)
                .with_member_id(s(&member))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(Bytes::from_static(b"t-0"))]),
        )
        .await;
    assert_eq!(synced.error_code, 0, "sync");
    (0, member, joined.generation_id)
}

/// Waits until `node` answers OffsetFetch for `group` with `want`, retrying while it loads; returns its
/// answer (bounded).
async fn fetch_until(cluster: &Cluster, node: i32, group: &str, want: (i16, Option<i64>)) {
    let deadline = Instant::now() + LIMIT;
    let mut c = Client::connect(cluster.node(node)).await;
    loop {
        let got = offset_fetch_v8(&mut c, group).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker {node} answers OffsetFetch for {group} with {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_follow_the_group_coordinator_across_leadership_moves_and_shutdowns() {
    let mut cluster = start().await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "t", 3, &[]).await;

    // The first lookup creates __consumer_offsets with three replicas; the group's partition leader coordinates.
    let first = coordinator(&cluster, 1, "g", 0).await;
    let offsets = partition_leader(cluster.node(1), OFFSETS_TOPIC, 0);
    assert_eq!(offsets.2.len(), 3, "offsets.topic.replication.factor=3");
    let mut cc = Client::connect(cluster.node(first)).await;
    let deadline = Instant::now() + LIMIT;
    let (member, generation) = loop {
        let (err, member, generation) = join_and_sync(&mut cc, "g").await;
        if err == 0 {
            break (member, generation);
        }
        assert!(retriable(err) && Instant::now() < deadline, "join: {err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(commit(&mut cc, "g", generation, &member, 42).await, 0);
    assert_eq!(offset_fetch_v8(&mut cc, "g").await, (0, Some(42)));

    // The other brokers do not coordinate the group, in every version's way of saying so.
    let p = fjord_coordinator::records::partition_for("g", 2) as usize;
    for other in (1..=3).filter(|b| *b != first) {
        let mut oc = Client::connect(cluster.node(other)).await;
        let nc = E::NotCoordinator.code();
        assert_eq!(offset_fetch_v8(&mut oc, "g").await, (nc, None));
        let v5 = oc
            .send(
                5,
                &OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0])])),
            )
            .await;
        assert_eq!(v5.error_code, nc, "v2-v7: the top-level error");
        let v1 = oc
            .send(
                1,
                &OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0])])),
            )
            .await;
        assert_eq!(
            v1.topics[0].partitions[0].error_code, nc,
            "v0-v1: every partition"
        );
        assert_eq!(heartbeat(&mut oc, "g", generation, &member).await, nc);
        assert_eq!(commit(&mut oc, "g", generation, &member, 7).await, nc);
        let listed = oc.send(4, &ListGroupsRequest::default()).await;
        assert!(
            listed.groups.is_empty(),
            "ListGroups lists only owned groups"
        );
    }

    // A leadership move while the coordinator keeps running (it is fenced once; its heartbeats unfence it):
    // it resigns at once, and the new leader loads the group from its replica of the log.
    cluster
        .node(first)
        .state()
        .meta
        .propose(fjord_meta::Command::FenceBroker { id: first })
        .await
        .unwrap();
    cluster
        .wait(LIMIT, "the group's partition has a new leader", |c| {
            c.live().all(|b| {
                let (leader, ..) = partition_leader(b, OFFSETS_TOPIC, p);
                leader >= 0 && leader != first
            })
        })
        .await;
    fetch_until(&cluster, first, "g", (E::NotCoordinator.code(), None)).await;
    let mut old = Client::connect(cluster.node(first)).await;
    assert_eq!(
        heartbeat(&mut old, "g", generation, &member).await,
        E::NotCoordinator.code(),
        "the old coordinator sends the member to look for the new one"
    );
    let second = coordinator(&cluster, first, "g", 0).await;
    assert_ne!(second, first);
    fetch_until(&cluster, second, "g", (0, Some(42))).await;
    let mut sc = Client::connect(cluster.node(second)).await;
    assert_eq!(
        heartbeat(&mut sc, "g", generation, &member).await,
        0,
        "the stable group and its member were loaded with the log"
    );
    assert_eq!(commit(&mut sc, "g", generation, &member, 43).await, 0);

    // Controlled shutdown of the coordinator: leadership moves to an in-sync replica, which loads the group.
    cluster
        .wait(LIMIT, "the group's partition is fully in sync again", |c| {
            c.live()
                .all(|b| partition_leader(b, OFFSETS_TOPIC, p).3.len() == 3)
        })
        .await;
    cluster.stop(second).await;
    let via = (1..=3).find(|b| *b != second).unwrap();
    let third = coordinator(&cluster, via, "g", 0).await;
    assert_ne!(third, second);
    assert_eq!(
        third,
        partition_leader(cluster.node(via), OFFSETS_TOPIC, p).0,
        "FindCoordinator names the partition's new leader"
    );
    fetch_until(&cluster, third, "g", (0, Some(43))).await;
    cluster.shutdown().await;
}

/// A KIP-848 heartbeat (ConsumerGroupHeartbeat v0) of a member of `group` subscribed to topic `t`.
async fn consumer_heartbeat(
    c: &mut Client,
    group: &str,
    member: &str,
    epoch: i32,
    owned: Option<&[(uuid::Uuid, Vec<i32>)]>,
) -> ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    c.send(
        0,
        &ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
            .with_topic_partitions(owned.map(|o| {
                o.iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(*id)
                            .with_partitions(ps.clone())
                    })
                    .collect()
            })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip848_member_keeps_its_epoch_and_assignment_when_the_coordinator_moves() {
    let mut cluster = start().await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "t", 3, &[]).await;
    let first = coordinator(&cluster, 1, "k", 0).await;
    let mut cc = Client::connect(cluster.node(first)).await;
    let deadline = Instant::now() + LIMIT;
    let joined = loop {
        let r = consumer_heartbeat(&mut cc, "k", "", 0, None).await;
        if r.error_code == 0 {
            break r;
        }
        assert!(
            retriable(r.error_code) && Instant::now() < deadline,
            "join: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let member = joined.member_id.clone().expect("a member id").to_string();
    let epoch = joined.member_epoch;
    let owned: Vec<(uuid::Uuid, Vec<i32>)> = joined
        .assignment
        .expect("an assignment")
        .topic_partitions
        .into_iter()
        .map(|tp| (tp.topic_id, tp.partitions))
        .collect();
    assert_eq!(owned.iter().map(|(_, ps)| ps.len()).sum::<usize>(), 1);
    let settled = consumer_heartbeat(&mut cc, "k", &member, epoch, Some(&owned)).await;
    assert_eq!((settled.error_code, settled.member_epoch), (0, epoch));

    // The coordinator's partition moves to another broker, which loads the group from its replica of the log.
    let p = fjord_coordinator::records::partition_for("k", 2) as usize;
    cluster
        .wait(LIMIT, "the group's partition is fully in sync", |c| {
            c.live()
                .all(|b| partition_leader(b, OFFSETS_TOPIC, p).3.len() == 3)
        })
        .await;
    cluster.stop(first).await;
    let via = (1..=3).find(|b| *b != first).unwrap();
    let second = coordinator(&cluster, via, "k", 0).await;
    assert_ne!(second, first);
    let mut sc = Client::connect(cluster.node(second)).await;
    let deadline = Instant::now() + LIMIT;
    let resumed = loop {
        let r = consumer_heartbeat(&mut sc, "k", &member, epoch, Some(&owned)).await;
        if !retriable(r.error_code) || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The member carries on: same epoch, nothing to reconcile (no assignment in the answer).
    assert_eq!(
        (resumed.error_code, resumed.member_epoch),
        (0, epoch),
        "{resumed:?}"
    );
    assert!(resumed.assignment.is_none(), "{resumed:?}");
    cluster.shutdown().await;
}

fn txn_batch(pid: i64, epoch: i16, seq: i32, value: &'static [u8]) -> Bytes {
    let r = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: fjord_broker::now_ms(),
        key: None,
        value: Some(Bytes::from_static(value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[r],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

async fn init_producer(c: &mut Client, id: &str) -> InitProducerIdResponse {
    c.send(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await
}

async fn add_partition(c: &mut Client, id: &str, pid: i64, epoch: i16) -> i16 {
    let r = c
        .send(
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s(id)))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("d")))
                    .with_partitions(vec![0])]),
        )
        .await;
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

async fn produce_txn(c: &mut Client, id: &str, batch: Bytes) -> i16 {
    let r = c
        .send(
            9,
            &ProduceRequest::default()
                .with_transactional_id(Some(TransactionalId(s(id))))
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(s("d")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch))])]),
        )
        .await;
    r.responses[0].partition_responses[0].error_code
}

async fn end_txn(c: &mut Client, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    c.send(
        3,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    )
    .await
    .error_code
}

/// The transaction markers in a replica's log: (commit?, coordinator epoch), in log order.
fn markers(log: &Bytes) -> Vec<(bool, i32)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    for b in fjord_log::batch_headers(log) {
        let batch = log.slice(pos..pos + b.size);
        pos += b.size;
        if !b.is_control {
            continue;
        }
        let set = fjord_log::decode_records_bounded(&mut batch.clone()).unwrap();
        for r in set.records {
            let key = r.key.unwrap();
            let value = r.value.unwrap();
            let commit = i16::from_be_bytes([key[2], key[3]]) == 1;
            let epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
            out.push((commit, epoch));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_transaction_coordinator_loads_fences_and_aborts_with_its_own_epoch() {
    let mut cluster = start().await;
    let id = "tx";
    // The first InitProducerId creates __transaction_state; its partition's leader coordinates the id.
    let deadline = Instant::now() + LIMIT;
    let (first, pid, epoch0) = loop {
        let node = coordinator(&cluster, 1, id, 1).await;
        let mut c = Client::connect(cluster.node(node)).await;
        let r = init_producer(&mut c, id).await;
        if r.error_code == 0 {
            break (node, r.producer_id.0, r.producer_epoch);
        }
        assert!(
            retriable(r.error_code) && Instant::now() < deadline,
            "InitProducerId: {}",
            r.error_code
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let p = fjord_coordinator::records::partition_for(id, 2) as usize;
    let (leader, epoch_before, replicas, _) = partition_leader(cluster.node(first), TXN_TOPIC, p);
    assert_eq!(leader, first);
    assert_eq!(
        replicas.len(),
        3,
        "transaction.state.log.replication.factor=3"
    );
    let configs = cluster.node(first).state().meta.state().topics[TXN_TOPIC]
        .configs
        .clone();
    assert_eq!(
        configs.get("min.insync.replicas").map(String::as_str),
        Some("2"),
        "transaction.state.log.min.isr=2 is the topic's min.insync.replicas"
    );
    assert_eq!(
        replicas[0], first,
        "the first replica leads a new partition"
    );
    for other in (1..=3).filter(|b| *b != first) {
        let mut oc = Client::connect(cluster.node(other)).await;
        assert_eq!(
            init_producer(&mut oc, id).await.error_code,
            E::NotCoordinator.code()
        );
        assert_eq!(
            end_txn(&mut oc, id, pid, epoch0, true).await,
            E::NotCoordinator.code()
        );
    }

    // A data partition placed like the transaction's partition, so that both move to the same broker on failover
    // (markers are written by the coordinator's broker, which must lead the data partition: see the report on
    // WriteTxnMarkers).
    let mut c = Client::connect(cluster.node(first)).await;
    let created = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s("d")))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(
                            replicas.iter().map(|b| BrokerId(*b)).collect(),
                        )])]),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    cluster
        .wait(
            LIMIT,
            "d-0 and the transaction's partition are in sync everywhere",
            |c| {
                c.live().all(|b| {
                    b.state().partitions.get("d", 0).is_some()
                        && placement(b, "d").is_some_and(|(_, _, isr)| isr.len() == 3)
                })
            },
        )
        .await;

    // One committed transaction, then one left open.
    assert_eq!(add_partition(&mut c, id, pid, epoch0).await, 0);
    assert_eq!(
        produce_txn(&mut c, id, txn_batch(pid, epoch0, 0, b"committed")).await,
        0
    );
    assert_eq!(end_txn(&mut c, id, pid, epoch0, true).await, 0);
    assert_eq!(add_partition(&mut c, id, pid, epoch0).await, 0);
    assert_eq!(
        produce_txn(&mut c, id, txn_batch(pid, epoch0, 1, b"open")).await,
        0
    );
    cluster
        .wait(
            LIMIT,
            "every replica holds the transaction state and data",
            |c| {
                c.live().all(|b| {
                    partition_leader(b, TXN_TOPIC, p).3.len() == 3
                        && placement(b, "d").is_some_and(|(_, _, isr)| isr.len() == 3)
                })
            },
        )
        .await;

    cluster.stop(first).await;
    let via = (1..=3).find(|b| *b != first).unwrap();
    let second = coordinator(&cluster, via, id, 1).await;
    assert_ne!(second, first);
    let (leader, epoch_after, ..) = partition_leader(cluster.node(via), TXN_TOPIC, p);
    assert_eq!(
        second, leader,
        "FindCoordinator names the partition's new leader"
    );
    assert!(epoch_after > epoch_before);

    // A new producer instance on the new coordinator: the id was loaded (same producer id), the open transaction
    // is aborted and the epoch bumped, fencing the old instance.
    let mut sc = Client::connect(cluster.node(second)).await;
    let deadline = Instant::now() + LIMIT;
    let r = loop {
        let r = init_producer(&mut sc, id).await;
        if r.error_code == 0 {
            break r;
        }
        assert!(
            retriable(r.error_code) && Instant::now() < deadline,
            "InitProducerId on the new coordinator: {}",
            r.error_code
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        r.producer_id.0, pid,
        "the transactional id was loaded from the log"
    );
    assert!(r.producer_epoch > epoch0, "the epoch is bumped");
    assert_eq!(
        end_txn(&mut sc, id, pid, epoch0, true).await,
        E::ProducerFenced.code(),
        "the old instance is fenced"
    );

    // d-0's log: the commit marker of the first coordinator, then the abort marker of the second, written with
    // the new leader epoch of the transaction's partition; nothing is left open.
    let d = cluster.node(second).state().partitions.get("d", 0).unwrap();
    let log = d.read_to_log_end(0, 1 << 20).unwrap();
    assert_eq!(
        markers(&log),
        vec![(true, epoch_before), (false, epoch_after)],
        "markers carry their coordinator's epoch"
    );
    assert_eq!(d.last_stable_offset(), d.log_end_offset());
    let described = sc
        .send(
            0,
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s(id))]),
        )
        .await;
    let st = &described.transaction_states[0];
    assert_eq!(st.error_code, 0);
    assert_eq!(st.producer_epoch, r.producer_epoch);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_reach_partitions_led_by_other_brokers_through_write_txn_markers() {
    let cluster = start().await;
    let id = "remote-tx";
    let deadline = Instant::now() + LIMIT;
    let (coord, pid, epoch) = loop {
        let node = coordinator(&cluster, 1, id, 1).await;
        let mut c = Client::connect(cluster.node(node)).await;
        let r = init_producer(&mut c, id).await;
        if r.error_code == 0 {
            break (node, r.producer_id.0, r.producer_epoch);
        }
        assert!(
            retriable(r.error_code) && Instant::now() < deadline,
            "InitProducerId: {}",
            r.error_code
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // d-0 led by a broker that does not coordinate the transaction.
    let data_leader = (1..=3).find(|b| *b != coord).unwrap();
    let replicas: Vec<i32> = std::iter::once(data_leader)
        .chain((1..=3).filter(|b| *b != data_leader))
        .collect();
    let mut c = Client::connect(cluster.node(coord)).await;
    let created = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s("d")))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(
                            replicas.iter().map(|b| BrokerId(*b)).collect(),
                        )])]),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    cluster
        .wait(LIMIT, "d-0 exists everywhere, led elsewhere", |c| {
            c.live().all(|b| {
                b.state().partitions.get("d", 0).is_some()
                    && placement(b, "d")
                        .is_some_and(|(l, _, isr)| l == data_leader && isr.len() == 3)
            })
        })
        .await;
    let mut dc = Client::connect(cluster.node(data_leader)).await;
    // KIP-890: d-0's leader asks the coordinator before a transaction's first batch there; a partition never
    // added is refused instead of opening a transaction no marker would end.
    assert_eq!(
        produce_txn(&mut dc, id, txn_batch(pid, epoch, 0, b"stray")).await,
        E::InvalidTxnState.code()
    );
    let d = cluster
        .node(data_leader)
        .state()
        .partitions
        .get("d", 0)
        .unwrap();
    assert_eq!(d.log_end_offset(), 0, "the stray batch was not written");
    // Commit one transaction, abort the next: both markers are written by d-0's leader on the coordinator's
    // request, with the coordinator's epoch.
    assert_eq!(add_partition(&mut c, id, pid, epoch).await, 0);
    assert_eq!(
        produce_txn(&mut dc, id, txn_batch(pid, epoch, 0, b"committed")).await,
        0
    );
    assert_eq!(end_txn(&mut c, id, pid, epoch, true).await, 0);
    assert_eq!(add_partition(&mut c, id, pid, epoch).await, 0);
    assert_eq!(
        produce_txn(&mut dc, id, txn_batch(pid, epoch, 1, b"aborted")).await,
        0
    );
    assert_eq!(end_txn(&mut c, id, pid, epoch, false).await, 0);
    // The ended transaction admits no more batches without a new AddPartitionsToTxn.
    assert_eq!(
        produce_txn(&mut dc, id, txn_batch(pid, epoch, 2, b"late")).await,
        E::InvalidTxnState.code()
    );
    let p = fjord_coordinator::records::partition_for(id, 2) as usize;
    let (_, coord_epoch, ..) = partition_leader(cluster.node(coord), TXN_TOPIC, p);
    let log = d.read_to_log_end(0, 1 << 20).unwrap();
    assert_eq!(
        markers(&log),
        vec![(true, coord_epoch), (false, coord_epoch)]
    );
    assert_eq!(
        d.last_stable_offset(),
        d.log_end_offset(),
        "no transaction is left open on d-0"
    );

    // TxnOffsetCommit on a group coordinator that does not coordinate the transaction: verified with the
    // transaction's coordinator too, so offsets outside the transaction are refused.
    let mut group = None;
    for i in 0..64 {
        let g = format!("g{i}");
        if coordinator(&cluster, 1, &g, 0).await != coord {
            group = Some(g);
            break;
        }
    }
    let group = group.expect("a group coordinated by another broker");
    let group_coord = coordinator(&cluster, 1, &group, 0).await;
    let mut gc = Client::connect(cluster.node(group_coord)).await;
    let commit = |g: &str| {
        use kafka_protocol::messages::txn_offset_commit_request::{
            TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
        };
        TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_group_id(GroupId(s(g)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("d")))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)])])
    };
    let r = gc.send(3, &commit(&group)).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        E::InvalidTxnState.code(),
        "the group's partition is not in the transaction"
    );
    let r = c
        .send(
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(s(&group))),
        )
        .await;
    assert_eq!(r.error_code, 0);
    let r = gc.send(3, &commit(&group)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(end_txn(&mut c, id, pid, epoch, true).await, 0);
    cluster.shutdown().await;
}
