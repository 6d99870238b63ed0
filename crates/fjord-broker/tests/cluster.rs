//! Several brokers in one process forming a cluster with Kafka's KRaft properties only (`node.id`,
//! `process.roles`, `listeners` with a CONTROLLER listener, `controller.listener.names`,
//! `controller.quorum.voters`), on free 127.0.0.1 ports and temporary directories: placement, leaders,
//! replication by follower fetches, the high watermark, and acks=all waiting for the in-sync replicas.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{s, Client};
use fjord_broker::config::BrokerConfig;
use fjord_broker::Broker;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Runs the futures concurrently (each on its own task) and returns their outputs in order.
async fn join_all<T: Send + 'static>(
    futs: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The properties of node `id` of a cluster whose controllers listen on `controller_ports`.
fn kraft_props(
    id: usize,
    dir: &std::path::Path,
    controller_ports: &[u16],
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let voters: Vec<String> = controller_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect();
    let mut props: BTreeMap<String, String> = [
        ("node.id", id.to_string()),
        ("process.roles", "broker,controller".into()),
        (
            "listeners",
            format!(
                "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{}",
                controller_ports[id - 1]
            ),
        ),
        ("controller.listener.names", "CONTROLLER".into()),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        ("controller.quorum.voters", voters.join(",")),
        ("log.dirs", dir.display().to_string()),
        ("offsets.topic.num.partitions", "2".into()),
        ("transaction.state.log.num.partitions", "2".into()),
        ("replica.fetch.wait.max.ms", "100".into()),
        ("replica.fetch.backoff.ms", "100".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    props
}

struct Cluster {
    brokers: Vec<Option<Broker>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` combined broker+controller nodes at once (each waits for a quorum of the others).
    async fn start(n: usize, extra: &[(&str, &str)]) -> Cluster {
        let ports = free_ports(n);
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let starts = (1..=n).map(|id| {
            let props = kraft_props(id, dirs[id - 1].path(), &ports, extra);
            async move { Broker::start(BrokerConfig::from_properties(props).unwrap()).await }
        });
        let brokers = join_all(starts.collect()).await;
        let brokers: Vec<Option<Broker>> = brokers
            .into_iter()
            .map(|b| Some(b.expect("broker starts")))
            .collect();
        let c = Cluster {
            brokers,
            _dirs: dirs,
        };
        c.wait(Duration::from_secs(20), "every broker registered", |c| {
            c.live().all(|b| b.state().meta.state().brokers.len() == n)
        })
        .await;
        c
    }

    fn live(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.iter().flatten()
    }

    /// The broker with node id `id`.
    fn node(&self, id: i32) -> &Broker {
        self.brokers[(id - 1) as usize]
            .as_ref()
            .expect("that broker is running")
    }

    async fn wait(&self, limit: Duration, what: &str, ok: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&mut self, id: i32) {
        let b = self.brokers[(id - 1) as usize].take().unwrap();
        b.shutdown().await.unwrap();
    }

    async fn shutdown(mut self) {
        for b in self.brokers.iter_mut().filter_map(Option::take) {
            b.shutdown().await.unwrap();
        }
    }
}

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant: the encoder then writes one batch (one batch per partition per request).
            sequence: i as i32 - 1,
            timestamp: fjord_broker::now_ms(),
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut out = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    out.freeze()
}

async fn produce(
    c: &mut Client,
    topic: &str,
    acks: i16,
    timeout_ms: i32,
    values: &[&str],
) -> (i16, i64) {
    let resp = c
        .send(
            9,
            &ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(timeout_ms)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(values)))])]),
        )
        .await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A consumer's fetch of partition 0 at `offset`: (error, high watermark, record bytes).
async fn fetch(c: &mut Client, topic: &str, offset: i64) -> (i16, i64, usize) {
    let resp = c
        .send(
            12,
            &FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)])]),
        )
        .await;
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.as_ref().map_or(0, |r| r.len()),
    )
}

async fn create(c: &mut Client, name: &str, rf: i16, configs: &[(&str, &str)]) {
    let resp = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(1)
                    .with_replication_factor(rf)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    )]),
        )
        .await;
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
}

/// (leader, replicas, isr) of partition 0 of `topic` as broker `b`'s metadata says.
fn placement(b: &Broker, topic: &str) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let st = b.state().meta.state();
    let p = st.topics.get(topic)?.partitions.first()?.clone();
    Some((p.leader, p.replicas, p.isr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_from_kraft_properties_replicate_a_partition_to_every_replica() {
    let cluster = Cluster::start(3, &[]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    let md = c.send(12, &MetadataRequest::default()).await;
    let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3], "Metadata lists every broker");

    create(&mut c, "r", 3, &[]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| c.live().all(|b| b.state().partitions.get("r", 0).is_some()),
        )
        .await;
    let (leader, replicas, isr) = placement(cluster.node(1), "r").unwrap();
    assert_eq!(replicas.len(), 3);
    assert_eq!(isr.len(), 3);
    let mut lc = Client::connect(cluster.node(leader)).await;
    for i in 0..20 {
        let v = format!("v{i}");
        let (err, base) = produce(&mut lc, "r", -1, 10_000, &[&v, &v]).await;
        assert_eq!(err, 0, "acks=all produce {i}");
        assert_eq!(base, i * 2);
    }
    // acks=all answered, so the high watermark passed the data: every in-sync follower had it, durably.
    let leader_part = cluster.node(leader).state().partitions.get("r", 0).unwrap();
    assert_eq!(leader_part.high_watermark(), 40);
    for b in cluster.live() {
        let p = b.state().partitions.get("r", 0).unwrap();
        assert!(
            p.log_end_offset() >= 40,
            "broker {} holds every acknowledged record (log end {})",
            b.state().config.node_id,
            p.log_end_offset()
        );
    }
    // The replicas hold the same bytes.
    let leader_bytes = leader_part.read_to_log_end(0, 1 << 20).unwrap();
    for b in cluster.live() {
        let p = b.state().partitions.get("r", 0).unwrap();
        assert_eq!(p.log_end_offset(), 40);
        let log = p.read_to_log_end(0, 1 << 20).unwrap();
        assert_eq!(
            log,
            leader_bytes,
            "broker {} has the leader's batches",
            b.state().config.node_id
        );
    }

    let (err, hw, bytes) = fetch(&mut lc, "r", 0).await;
    assert_eq!((err, hw), (0, 40));
    assert!(bytes > 0);

    // A follower refuses clients: they refresh metadata and go to the leader.
    let follower = replicas.iter().copied().find(|b| *b != leader).unwrap();
    let mut fc = Client::connect(cluster.node(follower)).await;
    let (err, _) = produce(&mut fc, "r", 1, 1_000, &["x"]).await;
    assert_eq!(err, E::NotLeaderOrFollower.code());
    let (err, _, _) = fetch(&mut fc, "r", 0).await;
    assert_eq!(err, E::NotLeaderOrFollower.code());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_is_not_acknowledged_while_an_in_sync_follower_lacks_the_write() {
    // A lag bound far beyond the test: the paused follower stays in the ISR.
    let cluster = Cluster::start(3, &[("replica.lag.time.max.ms", "600000")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "w", 3, &[("min.insync.replicas", "2")]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| c.live().all(|b| b.state().partitions.get("w", 0).is_some()),
        )
        .await;
    let (leader, replicas, _) = placement(cluster.node(1), "w").unwrap();
    let mut lc = Client::connect(cluster.node(leader)).await;
    assert_eq!(produce(&mut lc, "w", -1, 10_000, &["a"]).await, (0, 0));
    let follower = replicas.iter().copied().find(|b| *b != leader).unwrap();
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(true);
    let (err, _) = produce(&mut lc, "w", -1, 1_000, &["b"]).await;
    assert_eq!(
        err,
        E::RequestTimedOut.code(),
        "acks=all is not acknowledged while an in-sync replica lacks the write"
    );
    // acks=1 is acknowledged by the leader alone; the high watermark still waits for the ISR, so consumers do
    // not see the unreplicated records.
    assert_eq!(produce(&mut lc, "w", 1, 1_000, &["c"]).await.0, 0);
    let (err, hw, _) = fetch(&mut lc, "w", 0).await;
    assert_eq!(
        (err, hw),
        (0, 1),
        "the high watermark stays below what only some of the ISR holds"
    );
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(false);
    cluster
        .wait(Duration::from_secs(10), "the follower caught up", |c| {
            c.node(leader)
                .state()
                .partitions
                .get("w", 0)
                .unwrap()
                .high_watermark()
                == 3
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let cluster = Cluster::start(3, &[("replica.lag.time.max.ms", "1000")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "lag2", 3, &[("min.insync.replicas", "2")]).await;
    create(&mut c, "lag3", 3, &[("min.insync.replicas", "3")]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partitions exist on every broker",
            |c| {
                c.live().all(|b| {
                    b.state().partitions.get("lag2", 0).is_some()
                        && b.state().partitions.get("lag3", 0).is_some()
                })
            },
        )
        .await;
    // A follower of both that leads neither.
    let (l2, r2, _) = placement(cluster.node(1), "lag2").unwrap();
    let (l3, _, _) = placement(cluster.node(1), "lag3").unwrap();
    let follower = r2.iter().copied().find(|b| *b != l2 && *b != l3);
    let Some(follower) = follower else {
        // Both leaders on different brokers cover two of three; the third is a follower of both.
        unreachable!("three replicas, at most two leaders")
    };
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(true);
    let mut c2 = Client::connect(cluster.node(l2)).await;
    let started = Instant::now();
    let (err, base) = produce(&mut c2, "lag2", -1, 15_000, &["x"]).await;
    assert_eq!(
        (err, base),
        (0, 0),
        "acks=all goes through once the lagging follower left the ISR (min.insync.replicas=2)"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before replica.lag.time.max.ms passed"
    );
    let (_, _, isr) = placement(cluster.node(l2), "lag2").unwrap();
    assert!(!isr.contains(&follower) && isr.len() == 2, "ISR {isr:?}");
    // min.insync.replicas=3 cannot be met with the follower out: refused before the append.
    let mut c3 = Client::connect(cluster.node(l3)).await;
    cluster
        .wait(Duration::from_secs(10), "lag3's ISR shrank too", |c| {
            placement(c.node(l3), "lag3").unwrap().2.len() == 2
        })
        .await;
    let (err, _) = produce(&mut c3, "lag3", -1, 5_000, &["y"]).await;
    assert_eq!(err, E::NotEnoughReplicas.code());
    assert_eq!(
        produce(&mut c3, "lag3", 1, 5_000, &["y"]).await.0,
        0,
        "acks=1 does not need the ISR"
    );
    // Back in service, it catches up and rejoins.
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(false);
    cluster
        .wait(
            Duration::from_secs(15),
            "the follower rejoined both ISRs",
            |c| {
                placement(c.node(1), "lag2").unwrap().2.contains(&follower)
                    && placement(c.node(1), "lag3").unwrap().2.contains(&follower)
            },
        )
        .await;
    assert_eq!(produce(&mut c3, "lag3", -1, 5_000, &["z"]).await.0, 0);
    let text = cluster.node(l2).metrics_text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("fjord_isr_shrinks_total ") && !l.ends_with(" 0")),
        "the leader counted its ISR shrink"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_hands_its_partitions_to_an_in_sync_follower_with_every_acknowledged_record(
) {
    let mut cluster = Cluster::start(3, &[]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "f", 3, &[("min.insync.replicas", "2")]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| c.live().all(|b| b.state().partitions.get("f", 0).is_some()),
        )
        .await;
    let (leader, _, _) = placement(cluster.node(1), "f").unwrap();
    let epoch = cluster.node(1).state().meta.state().topics["f"].partitions[0].leader_epoch;
    let mut lc = Client::connect(cluster.node(leader)).await;
    for i in 0..10i64 {
        assert_eq!(
            produce(&mut lc, "f", -1, 10_000, &["a", "b"]).await,
            (0, i * 2)
        );
    }
    // Controlled shutdown (what SIGTERM does): leadership moves before the broker stops.
    cluster.stop(leader).await;
    let other = (1..=3).find(|b| *b != leader).unwrap();
    cluster
        .wait(Duration::from_secs(10), "a new leader", |c| {
            placement(c.node(other), "f").is_some_and(|(l, _, _)| l != leader && l >= 0)
        })
        .await;
    let st = cluster.node(other).state().meta.state();
    let p = &st.topics["f"].partitions[0];
    assert!(p.leader_epoch > epoch, "the new leader has a new epoch");
    assert!(!p.isr.contains(&leader), "the stopped broker left the ISR");
    assert!(!st.is_live(leader), "and is fenced");
    let new_leader = p.leader;
    let mut nc = Client::connect(cluster.node(new_leader)).await;
    // Metadata from any live broker names the new leader and leaves the stopped broker out.
    let md = nc.send(12, &MetadataRequest::default().with_topics(None)).await;
    assert!(md.brokers.iter().all(|b| b.node_id.0 != leader));
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "f"))
        .unwrap();
    assert_eq!(t.partitions[0].leader_id.0, new_leader);
    assert!(t.partitions[0]
        .offline_replicas
        .iter()
        .any(|b| b.0 == leader));
    // Every acknowledged record is there, and writing goes on at the next offset.
    let (err, hw, bytes) = fetch(&mut nc, "f", 0).await;
    assert_eq!((err, hw), (0, 20));
    assert!(bytes > 0);
    assert_eq!(produce(&mut nc, "f", -1, 10_000, &["c"]).await, (0, 20));
    cluster.shutdown().await;
}
