//! Partition reassignment (KIP-455: AlterPartitionReassignments, ListPartitionReassignments) on a cluster of
//! in-process brokers: a move under continuous acks=all load, cancellation, the errors Kafka gives, and the
//! follower replication throttle.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::{s, Client};
use fjord_broker::Broker;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::*;

/// AlterPartitionReassignments for partitions of one topic: (partition, target or None to cancel). Returns each
/// partition's (error code, message).
async fn reassign(
    c: &mut Client,
    topic: &str,
    parts: &[(i32, Option<&[i32]>)],
) -> Vec<(i16, Option<String>)> {
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(
                parts
                    .iter()
                    .map(|(p, r)| {
                        ReassignablePartition::default()
                            .with_partition_index(*p)
                            .with_replicas(r.map(|r| r.iter().map(|b| BrokerId(*b)).collect()))
                    })
                    .collect(),
            )]);
    let resp = c.send(0, &req).await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.responses.len(), 1);
    resp.responses[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.error_code,
                p.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect()
}

/// ListPartitionReassignments of every topic: topic -> partition -> (replicas, adding, removing).
async fn list(c: &mut Client) -> BTreeMap<(String, i32), (Vec<i32>, Vec<i32>, Vec<i32>)> {
    let resp = c
        .send(
            0,
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(resp.error_code, 0);
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            out.insert(
                (t.name.0.to_string(), p.partition_index),
                (
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                ),
            );
        }
    }
    out
}

/// Every (offset, value) the broker's replica of `topic`-0 holds, up to its log end.
fn local_records(b: &Broker, topic: &str) -> BTreeMap<i64, String> {
    let p = b.state().partitions.get(topic, 0).expect("hosted here");
    let mut buf = p.read_to_log_end(0, 256 << 20).unwrap();
    let mut out = BTreeMap::new();
    for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).unwrap() {
        for r in set.records {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            out.insert(r.offset, v);
        }
    }
    out
}

/// (leader, replicas, isr) of partition 0 of `topic` as the Metadata API of the broker at `c` reports it.
async fn metadata(c: &mut Client, topic: &str) -> (i32, Vec<i32>, Vec<i32>) {
    let md = c
        .send(
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(TopicName(s(topic))))])),
        )
        .await;
    let p = &md.topics[0].partitions[0];
    (
        p.leader_id.0,
        p.replica_nodes.iter().map(|b| b.0).collect(),
        p.isr_nodes.iter().map(|b| b.0).collect(),
    )
}

/// An acks=all producer that follows the partition's leader (through Metadata) and records what was
/// acknowledged: (offset, value). Runs until `stop`.
fn spawn_producer(
    addrs: BTreeMap<i32, SocketAddr>,
    topic: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, String)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let any = *addrs.values().next().unwrap();
        let mut mc = Client::connect_to(any).await;
        let mut leader = metadata(&mut mc, topic).await.0;
        let mut lc = Client::connect_to(addrs[&leader]).await;
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            let v = format!("v{n:06}-{}", "x".repeat(200));
            let (err, base) = produce(&mut lc, topic, -1, 5_000, &[&v]).await;
            if err == 0 {
                acked.lock().unwrap().push((base, v));
                n += 1;
                continue;
            }
            // Not acknowledged (leader moved, ISR change): find the leader and send the next value there.
            n += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let l = metadata(&mut mc, topic).await.0;
            if l >= 0 && l != leader {
                leader = l;
                lc = Client::connect_to(addrs[&leader]).await;
            }
        }
    })
}

/// Whether log directory `dir` holds any directory of partition `name` (`r-0`), including one renamed for
/// deletion and not yet removed.
fn holds_copy(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(name))
}

fn addrs(cluster: &Cluster, n: i32) -> BTreeMap<i32, SocketAddr> {
    (1..=n).map(|i| (i, cluster.node(i).local_addr())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_other_brokers_under_acks_all_load_keeping_every_acknowledged_record()
{
    let cluster = Cluster::start(4, &[("replica.lag.time.max.ms", "2000")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create_on(&mut c, "r", &[1, 2, 3]).await;
    cluster
        .wait(Duration::from_secs(10), "r-0 on its replicas", |c| {
            (1..=3).all(|b| c.node(b).state().partitions.get("r", 0).is_some())
        })
        .await;
    let r1_dir = cluster
        .node(1)
        .state()
        .partitions
        .get("r", 0)
        .unwrap()
        .log_dir()
        .to_path_buf();
    assert!(holds_copy(&r1_dir, "r-0"));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let producer = spawn_producer(addrs(&cluster, 4), "r", stop.clone(), acked.clone());
    cluster
        .wait(Duration::from_secs(20), "some records acknowledged", |_| {
            acked.lock().unwrap().len() >= 100
        })
        .await;

    // Broker 4 does not fetch yet, so the reassignment is observably in progress.
    cluster.node(4).state().replication.pause_for_test(true);
    assert_eq!(
        reassign(&mut c, "r", &[(0, Some(&[4, 3, 2]))]).await,
        vec![(0, None)]
    );
    let listed = list(&mut c).await;
    assert_eq!(
        listed.get(&("r".to_string(), 0)),
        Some(&(vec![4, 3, 2, 1], vec![4], vec![1])),
        "in progress: replicas are the union, 4 adding, 1 removing"
    );
    // Every broker's Metadata answer shows the union while the move is in flight.
    let mut c4 = Client::connect(cluster.node(4)).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "broker 4 applied the reassignment",
            |c| placement(c.node(4), "r").is_some_and(|(_, r, _)| r == vec![4, 3, 2, 1]),
        )
        .await;
    let (leader, replicas, isr) = metadata(&mut c4, "r").await;
    assert_eq!((leader, replicas), (1, vec![4, 3, 2, 1]));
    assert!(!isr.contains(&4), "broker 4 is not in sync yet: {isr:?}");
    // The producer keeps being acknowledged while the move is in flight.
    let in_flight = acked.lock().unwrap().len();
    cluster
        .wait(
            Duration::from_secs(10),
            "writes acknowledged during the move",
            |_| acked.lock().unwrap().len() >= in_flight + 20,
        )
        .await;
    let started = Instant::now();
    cluster.node(4).state().replication.pause_for_test(false);

    // It completes on its own once 4 has caught up: replicas and ISR are the targets, 4 (the first target) leads.
    cluster
        .wait(
            Duration::from_secs(30),
            "the reassignment completes everywhere",
            |c| {
                c.live().all(|b| {
                    let st = b.state().meta.state();
                    let p = &st.topics["r"].partitions[0];
                    let mut isr = p.isr.clone();
                    isr.sort_unstable();
                    p.leader == 4
                        && p.replicas == vec![4, 3, 2]
                        && isr == vec![2, 3, 4]
                        && st.topics["r"].reassignments.is_empty()
                })
            },
        )
        .await;
    eprintln!(
        "reassignment completed {:?} after broker 4 started fetching",
        started.elapsed()
    );
    assert!(
        list(&mut c).await.is_empty(),
        "nothing in progress any more"
    );
    let le = cluster.node(4).state().meta.state().topics["r"].partitions[0].leader_epoch;
    assert!(le >= 1, "the leader change bumped the leader epoch");

    // The producer goes on against the new leader.
    let at_completion = acked.lock().unwrap().len();
    cluster
        .wait(
            Duration::from_secs(20),
            "records acknowledged by the new leader",
            |_| acked.lock().unwrap().len() >= at_completion + 50,
        )
        .await;
    stop.store(true, Ordering::Release);
    tokio::time::timeout(Duration::from_secs(15), producer)
        .await
        .expect("the producer stops")
        .unwrap();

    // Removed broker 1 dropped its replica and its data.
    cluster
        .wait(Duration::from_secs(10), "broker 1 dropped r-0", |c| {
            c.node(1).state().partitions.get("r", 0).is_none() && !holds_copy(&r1_dir, "r-0")
        })
        .await;

    // Every acknowledged record is on every new replica at its offset, and a consumer reads up to them all.
    let acked = acked.lock().unwrap().clone();
    let last = acked.iter().map(|(o, _)| *o).max().unwrap();
    cluster
        .wait(
            Duration::from_secs(10),
            "the replicas reach the last acknowledged record",
            |c| {
                (2..=4).all(|b| {
                    c.node(b)
                        .state()
                        .partitions
                        .get("r", 0)
                        .is_some_and(|p| p.high_watermark() > last)
                })
            },
        )
        .await;
    for b in [4, 3, 2] {
        let held = local_records(cluster.node(b), "r");
        for (o, v) in &acked {
            assert_eq!(
                held.get(o),
                Some(v),
                "broker {b} lacks acknowledged offset {o}"
            );
        }
    }
    let mut lc = Client::connect(cluster.node(4)).await;
    let (err, hw, bytes) = fetch(&mut lc, "r", last).await;
    assert_eq!(err, 0);
    assert!(hw > last && bytes > 0, "hw {hw}, last acknowledged {last}");
    // The old leader no longer serves it: clients are told to look for the leader.
    let mut c1 = Client::connect(cluster.node(1)).await;
    assert_eq!(
        produce(&mut c1, "r", -1, 1_000, &["late"]).await.0,
        E::NotLeaderOrFollower.code()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_reverts_to_the_original_replicas_and_errors_are_kafkas() {
    let cluster = Cluster::start(3, &[]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create_on(&mut c, "k", &[1, 2]).await;
    cluster
        .wait(Duration::from_secs(10), "k-0 on its replicas", |c| {
            (1..=2).all(|b| c.node(b).state().partitions.get("k", 0).is_some())
        })
        .await;
    assert_eq!(produce(&mut c, "k", -1, 5_000, &["a", "b"]).await, (0, 0));

    // Broker 3 cannot catch up while paused: the reassignment stays in progress until cancelled.
    cluster.node(3).state().replication.pause_for_test(true);
    assert_eq!(
        reassign(&mut c, "k", &[(0, Some(&[3, 2]))]).await,
        vec![(0, None)]
    );
    assert_eq!(
        list(&mut c).await.get(&("k".to_string(), 0)),
        Some(&(vec![3, 2, 1], vec![3], vec![1]))
    );
    cluster
        .wait(
            Duration::from_secs(10),
            "broker 3 hosts its new replica",
            |c| c.node(3).state().partitions.get("k", 0).is_some(),
        )
        .await;
    let k3_dir = cluster
        .node(3)
        .state()
        .partitions
        .get("k", 0)
        .unwrap()
        .log_dir()
        .to_path_buf();
    assert!(holds_copy(&k3_dir, "k-0"));
    assert_eq!(reassign(&mut c, "k", &[(0, None)]).await, vec![(0, None)]);
    assert!(list(&mut c).await.is_empty());
    cluster
        .wait(
            Duration::from_secs(10),
            "every broker back on the original replicas",
            |c| {
                // As Kafka: the original replicas in the order of the union (target first), the leader kept.
                c.live()
                    .all(|b| placement(b, "k") == Some((1, vec![2, 1], vec![1, 2])))
            },
        )
        .await;
    cluster
        .wait(Duration::from_secs(10), "broker 3 dropped its copy", |c| {
            c.node(3).state().partitions.get("k", 0).is_none() && !holds_copy(&k3_dir, "k-0")
        })
        .await;
    cluster.node(3).state().replication.pause_for_test(false);
    // Cancelling again: nothing in progress.
    let r = reassign(&mut c, "k", &[(0, None)]).await;
    assert_eq!(r[0].0, E::NoReassignmentInProgress.code(), "{r:?}");

    // Errors, per partition, with nothing changed.
    let r = reassign(
        &mut c,
        "k",
        &[
            (0, Some(&[])),
            (0, Some(&[2, 2])),
            (0, Some(&[1, 9])),
            (5, Some(&[1])),
            (-1, None),
        ],
    )
    .await;
    let codes: Vec<i16> = r.iter().map(|x| x.0).collect();
    assert_eq!(
        codes,
        vec![
            E::InvalidReplicaAssignment.code(),
            E::InvalidReplicaAssignment.code(),
            E::InvalidReplicaAssignment.code(),
            E::UnknownTopicOrPartition.code(),
            E::UnknownTopicOrPartition.code(),
        ],
        "{r:?}"
    );
    assert!(r[2].1.as_deref().is_some_and(|m| m.contains('9')), "{r:?}");
    let r = reassign(&mut c, "nope", &[(0, Some(&[1]))]).await;
    assert_eq!(r[0].0, E::UnknownTopicOrPartition.code());
    // v1 with allow_replication_factor_change = false (KIP-860).
    let req = AlterPartitionReassignmentsRequest::default()
        .with_allow_replication_factor_change(false)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(TopicName(s("k")))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(0)
                .with_replicas(Some(vec![
                    BrokerId(1),
                    BrokerId(2),
                    BrokerId(3),
                ]))])]);
    let resp = c.send(1, &req).await;
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        E::InvalidReplicationFactor.code()
    );
    assert!(cluster
        .live()
        .all(|b| placement(b, "k") == Some((1, vec![2, 1], vec![1, 2]))));
    // Listing named partitions that do not exist or do not move lists nothing.
    let resp = c
        .send(
            0,
            &ListPartitionReassignmentsRequest::default().with_topics(Some(vec![
                ListPartitionReassignmentsTopics::default()
                    .with_name(TopicName(s("k")))
                    .with_partition_indexes(vec![0, 7]),
                ListPartitionReassignmentsTopics::default()
                    .with_name(TopicName(s("nope")))
                    .with_partition_indexes(vec![0]),
            ])),
        )
        .await;
    assert_eq!((resp.error_code, resp.topics.len()), (0, 0));

    // A shrink within the ISR completes at once (no adding replica): 2 leads.
    assert_eq!(
        reassign(&mut c, "k", &[(0, Some(&[2]))]).await,
        vec![(0, None)]
    );
    cluster
        .wait(Duration::from_secs(10), "k-0 only on broker 2", |c| {
            c.live()
                .all(|b| placement(b, "k") == Some((2, vec![2], vec![2])))
                && c.node(1).state().partitions.get("k", 0).is_none()
        })
        .await;
    let mut c2 = Client::connect(cluster.node(2)).await;
    // Every broker shows the new placement; broker 2 may still be taking up the leadership it was handed
    // (NOT_LEADER_OR_FOLLOWER for a moment, as a client would see and retry), bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = produce(&mut c2, "k", -1, 5_000, &["c"]).await;
    while got.0 == E::NotLeaderOrFollower.code() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = produce(&mut c2, "k", -1, 5_000, &["c"]).await;
    }
    assert_eq!(got, (0, 2));
    cluster.shutdown().await;
}

/// IncrementalAlterConfigs of one resource (2: topic, 4: broker): `Some(v)` sets, `None` deletes.
async fn alter_configs(c: &mut Client, ty: i8, name: &str, configs: &[(&str, Option<&str>)]) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(s(name))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(if v.is_some() { 0 } else { 1 })
                            .with_value(v.map(s))
                    })
                    .collect(),
            ),
    ]);
    let r = c.send(1, &req).await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
}

/// Bytes of `topic`-0 broker `b` holds (0 before it hosts the partition).
fn held_bytes(b: &Broker, topic: &str) -> usize {
    b.state()
        .partitions
        .get(topic, 0)
        .map_or(0, |p| p.read_to_log_end(0, 256 << 20).unwrap().len())
}

fn completed(b: &Broker, topic: &str, replicas: &[i32]) -> bool {
    let st = b.state().meta.state();
    let p = &st.topics[topic].partitions[0];
    p.replicas == replicas
        && replicas.iter().all(|r| p.isr.contains(r))
        && st.topics[topic].reassignments.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_follower_catches_up_at_the_throttle_rate_and_others_at_full_speed() {
    throttled_move(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_leader_serves_a_new_replica_at_the_throttle_rate_and_others_at_full_speed() {
    throttled_move(true).await;
}

/// Moves th-0 and fast-0 from broker 1 to [1, 2] with th-0's copy throttled, on the follower side (broker 2's
/// fetches) or on the leader side (broker 1's answers).
async fn throttled_move(leader_side: bool) {
    const RATE: usize = 50_000;
    let cluster = Cluster::start(3, &[("replica.lag.time.max.ms", "2000")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create_on(&mut c, "th", &[1]).await;
    create_on(&mut c, "fast", &[1]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "both partitions on broker 1",
            |c| {
                ["th", "fast"]
                    .iter()
                    .all(|t| c.node(1).state().partitions.get(t, 0).is_some())
            },
        )
        .await;
    let v = "y".repeat(400);
    let values = [v.as_str(); 5];
    for topic in ["th", "fast"] {
        for _ in 0..200 {
            assert_eq!(produce(&mut c, topic, 1, 5_000, &values).await.0, 0);
        }
    }
    let total = held_bytes(cluster.node(1), "th");
    assert!(total > 400_000, "{total}");

    // Follower side: the cluster-wide follower rate, and th-0's replica on broker 2 throttled. Leader side:
    // broker 1's own leader rate, and th-0's replica on broker 1 throttled. fast-0 is not throttled.
    let (rate_key, resource, replicas_key, replica, applier) = if leader_side {
        (
            "leader.replication.throttled.rate",
            "1",
            "leader.replication.throttled.replicas",
            "0:1",
            1,
        )
    } else {
        (
            "follower.replication.throttled.rate",
            "",
            "follower.replication.throttled.replicas",
            "0:2",
            2,
        )
    };
    alter_configs(&mut c, 4, resource, &[(rate_key, Some(&RATE.to_string()))]).await;
    alter_configs(&mut c, 2, "th", &[(replicas_key, Some(replica))]).await;
    cluster
        .wait(Duration::from_secs(10), "the throttle applied", |c| {
            let st = c.node(applier).state().meta.state();
            st.broker_configs.keys().any(|k| k.ends_with(rate_key))
                && st.topics["th"].configs.contains_key(replicas_key)
        })
        .await;

    let t0 = Instant::now();
    assert_eq!(
        reassign(&mut c, "th", &[(0, Some(&[1, 2]))]).await,
        vec![(0, None)]
    );
    assert_eq!(
        reassign(&mut c, "fast", &[(0, Some(&[1, 2]))]).await,
        vec![(0, None)]
    );
    // Sampled: broker 2 never holds more of th than the rate allows since t0 (plus the bucket's first
    // second and one batch beyond the budget), while fast's reassignment completes at full speed.
    let bound = |elapsed: f64| ((elapsed + 1.0) * RATE as f64 * 1.25) as usize + 4096;
    let mut fast_done_at = None;
    let mut last = 0;
    // At least 3 s, and until fast completed (at most 15 s: a loaded machine may be slow).
    while t0.elapsed() < Duration::from_secs(3)
        || (fast_done_at.is_none() && t0.elapsed() < Duration::from_secs(15))
    {
        let held = held_bytes(cluster.node(2), "th");
        let elapsed = t0.elapsed().as_secs_f64();
        assert!(
            held <= bound(elapsed),
            "broker 2 copied {held} bytes of th in {elapsed:.2} s at a throttle of {RATE} B/s"
        );
        last = held;
        if fast_done_at.is_none() && completed(cluster.node(2), "fast", &[1, 2]) {
            fast_done_at = Some((t0.elapsed(), held));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (fast_time, th_then) =
        fast_done_at.expect("the unthrottled reassignment completed within 15 s");
    eprintln!("fast completed after {fast_time:?}; th copied {th_then} of {total} bytes then, {last} at the end of sampling");
    assert!(
        th_then < total,
        "the throttled copy was not slower than the unthrottled one"
    );
    assert!(last > 0, "the throttled follower makes progress");
    assert!(!completed(cluster.node(1), "th", &[1, 2]));

    // Without the rate, th catches up and its reassignment completes.
    alter_configs(&mut c, 4, resource, &[(rate_key, None)]).await;
    cluster
        .wait(
            Duration::from_secs(20),
            "th's reassignment completes",
            |c| c.live().all(|b| completed(b, "th", &[1, 2])),
        )
        .await;
    assert_eq!(held_bytes(cluster.node(2), "th"), total);
    cluster.shutdown().await;
}
