//! A seeded fault schedule against an in-process three-broker cluster (RF=3, min.insync.replicas=2): idempotent
//! acks=all producers write steadily to three partitions while brokers crash (no controlled shutdown, no flush:
//! `Broker::crash_for_test`), stop cleanly, restart, stall their replication, and are isolated from the others or
//! have their links stalled by the loopback proxies (`common::net`: every link between brokers, and the
//! producers' connections through the advertised addresses, pass through them). Afterwards every acknowledged
//! batch must be in its partition exactly once, in sequence order, and every replica must hold the same batches.
//!
//! A librdkafka consumer group reads throughout and must read every offset below the high watermarks.
//!
//! The seed is printed; `CHAOS_SEED=<n>` replays a schedule, `CHAOS_SECS=<n>` runs longer (the README documents
//! a long run). Real processes killed with SIGKILL are tested in `crates/fjord/tests/cluster_failover.rs`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::cluster::{free_ports, kraft_props};
use common::net::{Mode, Net};
use common::s;
use fjord_broker::config::BrokerConfig;
use fjord_broker::Broker;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "chaos";
const PARTITIONS: i32 = 3;

/// xorshift64*: a tiny deterministic generator, so a printed seed replays the schedule's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A connection that reports failures instead of panicking (brokers die under it).
struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    async fn connect(port: u16) -> Option<Conn> {
        let stream = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .ok()?
        .ok()?;
        Some(Conn {
            stream,
            correlation: 0,
        })
    }

    async fn send<R: Request>(&mut self, version: i16, req: &R) -> Option<R::Response> {
        self.correlation += 1;
        let frame = common::frame(version, self.correlation, req);
        let io = async {
            self.stream.write_all(&frame).await.ok()?;
            let n = self.stream.read_i32().await.ok()?;
            let mut body = vec![0u8; usize::try_from(n).ok()?];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(10), io)
            .await
            .ok()??;
        let mut buf = Bytes::from(body);
        let h = ResponseHeader::decode(&mut buf, R::Response::header_version(version)).ok()?;
        if h.correlation_id != self.correlation {
            return None;
        }
        R::Response::decode(&mut buf, version).ok()
    }
}

/// Each broker's properties and, while running, the broker.
struct Nodes {
    props: Vec<BTreeMap<String, String>>,
    brokers: Vec<Option<Broker>>,
    net: Net,
}

impl Nodes {
    async fn start(&mut self, i: usize) {
        let cfg = BrokerConfig::from_properties(self.props[i].clone()).unwrap();
        let b = Broker::start(cfg).await.expect("a broker restarts");
        self.net.attach(i as i32 + 1, &b);
        self.brokers[i] = Some(b);
    }

    fn running(&self) -> Vec<usize> {
        (0..self.brokers.len())
            .filter(|i| self.brokers[*i].is_some())
            .collect()
    }
}

fn batch(pid: i64, epoch: i16, seq: i32, n: usize, partition: i32) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: fjord_broker::now_ms(),
            key: None,
            value: Some(Bytes::from(format!("p{partition}-s{}", seq + i as i32))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// The leader of `partition` per the first broker that answers Metadata, and its client port.
async fn leader_port(ports: &[u16], partition: i32) -> Option<u16> {
    for &port in ports {
        let Some(mut c) = Conn::connect(port).await else {
            continue;
        };
        let Some(md) = c
            .send(
                12,
                &MetadataRequest::default().with_topics(Some(vec![
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(s(TOPIC)))),
                ])),
            )
            .await
        else {
            continue;
        };
        let leader = md
            .topics
            .first()?
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)?
            .leader_id
            .0;
        if let Some(b) = md.brokers.iter().find(|b| b.node_id.0 == leader) {
            return u16::try_from(b.port).ok();
        }
    }
    None
}

/// One idempotent producer on one partition: batches of 1-4 records, acks=all, each retried with the same
/// sequence until acknowledged (or the run ends). Returns (producer id, sequences acknowledged).
async fn produce_loop(
    ports: Vec<u16>,
    partition: i32,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    errors: Arc<Mutex<BTreeMap<i16, u64>>>,
    pace: Duration,
) -> (i64, i32) {
    // InitProducerId from any broker that answers.
    let (pid, epoch) = 'init: loop {
        for &port in &ports {
            let Some(mut c) = Conn::connect(port).await else {
                continue;
            };
            let req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            if let Some(r) = c.send(4, &req).await {
                if r.error_code == 0 {
                    break 'init (r.producer_id.0, r.producer_epoch);
                }
            }
        }
        assert!(
            !stop.load(Ordering::Acquire),
            "partition {partition}: no broker gave a producer id"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut seq = 0i32;
    let mut conn: Option<(u16, Conn)> = None;
    let mut n = 1usize;
    let mut pending: Option<Bytes> = None;
    let deadline_after_stop = Duration::from_secs(60);
    let mut stopped_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Acquire) && pending.is_none() {
            return (pid, seq);
        }
        if stop.load(Ordering::Acquire) {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            assert!(
                at.elapsed() < deadline_after_stop,
                "partition {partition}: a batch could not be acknowledged within {deadline_after_stop:?} after the faults ended"
            );
        }
        let records = pending
            .get_or_insert_with(|| {
                n = 1 + (seq as usize % 4);
                batch(pid, epoch, seq, n, partition)
            })
            .clone();
        let Some(port) = leader_port(&ports, partition).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if conn.as_ref().is_none_or(|(p, _)| *p != port) {
            conn = Conn::connect(port).await.map(|c| (port, c));
        }
        let Some((_, c)) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let resp = c
            .send(
                9,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(3_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records))])]),
            )
            .await;
        let Some(resp) = resp else {
            conn = None;
            *errors.lock().unwrap().entry(-100).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let code = resp.responses[0].partition_responses[0].error_code;
        if code == 0 {
            seq += n as i32;
            pending = None;
            acked.fetch_add(n as u64, Ordering::Relaxed);
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            continue;
        }
        *errors.lock().unwrap().entry(code).or_default() += 1;
        assert!(
            code != E::OutOfOrderSequenceNumber.code()
                && code != E::UnknownProducerId.code()
                && code != E::InvalidRecord.code()
                && code != E::CorruptMessage.code(),
            "partition {partition}: error {code} for sequence {seq}: the cluster lost producer state or data"
        );
        conn = None;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Waits (bounded) until every replica has everything, then checks that each partition holds every acknowledged
/// batch of its producer exactly once, in sequence order, identically on every replica. Returns the number of
/// acknowledged records checked.
async fn verify(nodes: &Nodes, produced: &[(i64, i32)], seed: u64) -> u64 {
    // Wait until every replica has everything (bounded), then compare.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let caught_up = (0..PARTITIONS).all(|p| {
            let ends: Vec<i64> = nodes
                .brokers
                .iter()
                .flatten()
                .map(|b| {
                    b.state()
                        .partitions
                        .get(TOPIC, p)
                        .map_or(-1, |x| x.log_end_offset())
                })
                .collect();
            let hws: Vec<i64> = nodes
                .brokers
                .iter()
                .flatten()
                .filter_map(|b| {
                    let x = b.state().partitions.get(TOPIC, p)?;
                    x.is_leader().then(|| x.high_watermark())
                })
                .collect();
            ends.iter().all(|e| *e == ends[0]) && hws.len() == 1 && hws[0] == ends[0]
        });
        if caught_up {
            break;
        }
        if Instant::now() >= deadline {
            // What each broker holds, so a failure says which replica or which leader is stuck.
            let mut state = String::new();
            for p in 0..PARTITIONS {
                for (i, b) in nodes.brokers.iter().enumerate() {
                    let Some(b) = b else { continue };
                    let Some(x) = b.state().partitions.get(TOPIC, p) else {
                        state.push_str(&format!("\n  p{p} broker {}: no replica", i + 1));
                        continue;
                    };
                    let r = x.replication();
                    state.push_str(&format!(
                        "\n  p{p} broker {}: log end {} high watermark {} leader {} epoch {} isr {:?} \
                         pending {:?} epochs {:?} followers {:?}",
                        i + 1,
                        x.log_end_offset(),
                        x.high_watermark(),
                        r.leader,
                        r.leader_epoch,
                        r.isr,
                        r.pending_isr,
                        x.leader_epochs_for_test(),
                        r.followers
                    ));
                }
            }
            for (i, b) in nodes.brokers.iter().enumerate() {
                let Some(b) = b else { continue };
                let targets: Vec<(i32, Vec<String>)> = b
                    .state()
                    .replication
                    .targets()
                    .into_iter()
                    .map(|(l, ps)| {
                        let names = ps.iter().map(|p| format!("{}-{}", p.topic, p.index));
                        (l, names.collect())
                    })
                    .collect();
                state.push_str(&format!("\n  broker {} follows {targets:?}", i + 1));
            }
            panic!("replicas did not converge (seed {seed}):{state}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut checked = 0u64;
    for (p, (pid, acked_seq)) in produced.iter().enumerate() {
        let mut copies = Vec::new();
        for b in nodes.brokers.iter().flatten() {
            let part = b.state().partitions.get(TOPIC, p as i32).unwrap();
            let mut bytes = BytesMut::new();
            let mut offset = 0i64;
            while offset < part.log_end_offset() {
                let chunk = part.read_to_log_end(offset, 1 << 20).unwrap();
                let Some(last) = fjord_log::batch_headers(&chunk).last() else {
                    break;
                };
                offset = last.last_offset + 1;
                bytes.extend_from_slice(&chunk);
            }
            copies.push(bytes.freeze());
        }
        for (i, c) in copies.iter().enumerate().skip(1) {
            assert!(
                *c == copies[0],
                "partition {p}: replica {i} differs from replica 0 (seed {seed})"
            );
        }
        // Exactly once, in order: the batches' sequences run 0.. without gap or repeat.
        let mut next = 0i32;
        for b in fjord_log::batch_headers(&copies[0]) {
            assert_eq!(b.producer_id, *pid, "partition {p}: a foreign batch");
            assert_eq!(
                b.base_sequence, next,
                "partition {p}: batch at offset {} has sequence {} where {next} was due (seed {seed})",
                b.base_offset, b.base_sequence
            );
            next += b.record_count;
        }
        assert!(
            next >= *acked_seq,
            "partition {p}: acknowledged up to sequence {acked_seq}, the log has {next} (seed {seed})"
        );
        checked += *acked_seq as u64;
    }
    checked
}

/// Three brokers on fixed free ports (a restart binds the same ones) behind the fault proxies, and the topic.
async fn start_cluster() -> (Nodes, Vec<u16>, Vec<tempfile::TempDir>) {
    let controller_ports = free_ports(3);
    let client_ports = free_ports(3);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = Net::start(3, &controller_ports).await;
    let props: Vec<BTreeMap<String, String>> = (0..3)
        .map(|i| {
            let listeners = format!(
                "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                client_ports[i], controller_ports[i]
            );
            let advertised = format!("PLAINTEXT://{}", net.client[i].addr);
            kraft_props(
                i + 1,
                dirs[i].path(),
                &controller_ports,
                &[
                    ("listeners", &listeners),
                    ("advertised.listeners", &advertised),
                    ("broker.heartbeat.interval.ms", "200"),
                    ("broker.session.timeout.ms", "1500"),
                    ("replica.lag.time.max.ms", "2000"),
                    // The group coordinator's partitions are replicated too, so the group survives the faults.
                    ("offsets.topic.replication.factor", "3"),
                    ("group.initial.rebalance.delay.ms", "0"),
                ],
            )
        })
        .collect();
    let mut nodes = Nodes {
        props,
        brokers: vec![None, None, None],
        net,
    };
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let cfg = BrokerConfig::from_properties(nodes.props[i].clone()).unwrap();
            tokio::spawn(async move { Broker::start(cfg).await.unwrap() })
        })
        .collect();
    for (i, h) in starts.into_iter().enumerate() {
        let b = h.await.unwrap();
        nodes.net.attach(i as i32 + 1, &b);
        nodes.brokers[i] = Some(b);
    }
    // The topic, once every broker is unfenced (CreateTopics validates against a synced view).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Conn::connect(client_ports[0]).await.unwrap();
        let r = c
            .send(
                5,
                &CreateTopicsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(TopicName(s(TOPIC)))
                        .with_num_partitions(PARTITIONS)
                        .with_replication_factor(3)
                        .with_configs(vec![CreatableTopicConfig::default()
                            .with_name(s("min.insync.replicas"))
                            .with_value(Some(s("2")))])]),
            )
            .await
            .unwrap();
        if r.topics[0].error_code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "topic creation: {:?}",
            r.topics[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (nodes, client_ports, dirs)
}

/// A librdkafka consumer in a group, through the fault proxies like any client, reading the topic on its own
/// thread for the whole schedule: the offsets it has read per partition and the longest time it went without a
/// new record while the producers ran (its coordinator and the leaders it reads from are among the victims).
struct GroupReader {
    read: Arc<Mutex<BTreeMap<i32, std::collections::BTreeSet<i64>>>>,
    longest_gap: Arc<Mutex<Duration>>,
    producing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl GroupReader {
    fn start(bootstrap: String) -> GroupReader {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let read = Arc::new(Mutex::new(BTreeMap::new()));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let producing = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, g, p, st) = (
            read.clone(),
            longest_gap.clone(),
            producing.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "chaos-readers")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "6000")
                .set("enable.partition.eof", "false")
                .create()
                .expect("consumer");
            consumer.subscribe(&[TOPIC]).expect("subscribe");
            let mut last = Instant::now();
            while !st.load(Ordering::Acquire) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        r.lock()
                            .unwrap()
                            .entry(m.partition())
                            .or_insert_with(std::collections::BTreeSet::new)
                            .insert(m.offset());
                        last = Instant::now();
                    }
                    _ if p.load(Ordering::Acquire) => {
                        let mut gap = g.lock().unwrap();
                        *gap = (*gap).max(last.elapsed());
                    }
                    _ => {}
                }
            }
        });
        GroupReader {
            read,
            longest_gap,
            producing,
            stop,
            thread,
        }
    }

    /// Once the producers are done and the replicas agree: waits (bounded) until the group has read every offset
    /// below each partition's high watermark, then stops it. Returns the longest stall while producing.
    async fn finish(self, high_watermarks: &[i64], seed: u64) -> Duration {
        self.producing.store(false, Ordering::Release);
        let complete = |read: &BTreeMap<i32, std::collections::BTreeSet<i64>>| {
            high_watermarks.iter().enumerate().all(|(p, hw)| {
                read.get(&(p as i32))
                    .is_some_and(|o| (0..*hw).all(|k| o.contains(&k)))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !complete(&self.read.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "the group consumer did not read every record below the high watermarks {high_watermarks:?} \
                 (seed {seed})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::Release);
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .unwrap()
            .expect("reader thread");
        let gap = *self.longest_gap.lock().unwrap();
        gap
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_crashes_restarts_and_stalls_lose_no_acknowledged_batch() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fjord_broker::now_ms() as u64 | 1);
    let secs: u64 = std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("chaos seed {seed} for {secs} s (replay with CHAOS_SEED={seed})");
    let mut rng = Rng(seed);

    let (mut nodes, client_ports, _dirs) = start_cluster().await;
    let bootstrap = nodes
        .net
        .client
        .iter()
        .map(|p| p.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let reader = GroupReader::start(bootstrap);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let producers: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            tokio::spawn(produce_loop(
                client_ports.clone(),
                p,
                stop.clone(),
                acked.clone(),
                errors.clone(),
                Duration::ZERO,
            ))
        })
        .collect();

    // The schedule: at most one broker down at a time (a minority of three).
    let end = Instant::now() + Duration::from_secs(secs);
    let mut faults: Vec<String> = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
        let victim = rng.below(3) as usize;
        let down = Duration::from_millis(300 + rng.below(2500));
        match rng.below(5) {
            0 => {
                let b = nodes.brokers[victim].take().unwrap();
                b.crash_for_test().await;
                faults.push(format!("crash {} for {down:?}", victim + 1));
                tokio::time::sleep(down).await;
                nodes.start(victim).await;
            }
            1 => {
                let b = nodes.brokers[victim].take().unwrap();
                b.shutdown().await.unwrap();
                faults.push(format!("stop {} for {down:?}", victim + 1));
                tokio::time::sleep(down).await;
                nodes.start(victim).await;
            }
            2 => {
                let b = nodes.brokers[victim].as_ref().unwrap();
                b.state().replication.pause_for_test(true);
                faults.push(format!("stall replication on {} for {down:?}", victim + 1));
                tokio::time::sleep(down).await;
                b.state().replication.pause_for_test(false);
            }
            3 => {
                // Cut off from the other brokers (raft, heartbeats, replication) and from the producers.
                let id = victim as i32 + 1;
                nodes.net.faults.set(id, Mode::Drop);
                faults.push(format!("isolate {id} for {down:?}"));
                tokio::time::sleep(down).await;
                nodes.net.faults.set(id, Mode::Pass);
            }
            _ => {
                // Every link of the victim freezes (bytes in flight are held, then delivered late).
                let id = victim as i32 + 1;
                nodes.net.faults.set(id, Mode::Stall);
                faults.push(format!("stall the network of {id} for {down:?}"));
                tokio::time::sleep(down).await;
                nodes.net.faults.set(id, Mode::Pass);
            }
        }
        println!(
            "{} (acknowledged so far: {}, errors {:?})",
            faults.last().unwrap(),
            acked.load(Ordering::Relaxed),
            errors.lock().unwrap()
        );
    }
    assert_eq!(nodes.running().len(), 3);
    stop.store(true, Ordering::Release);
    let mut produced = Vec::new();
    for h in producers {
        produced.push(h.await.unwrap());
    }

    let checked = verify(&nodes, &produced, seed).await;
    // Consumers in a group kept up: the group read everything below the high watermarks, and never stalled for
    // longer than a few faults in a row could explain.
    let hws: Vec<i64> = (0..PARTITIONS)
        .map(|p| {
            nodes
                .brokers
                .iter()
                .flatten()
                .filter_map(|b| {
                    let x = b.state().partitions.get(TOPIC, p)?;
                    x.is_leader().then(|| x.high_watermark())
                })
                .next()
                .expect("a leader")
        })
        .collect();
    let gap = reader.finish(&hws, seed).await;
    println!(
        "the group consumer read every offset below {hws:?}; its longest stall while producing: {:.1} s",
        gap.as_secs_f64()
    );
    assert!(
        gap < Duration::from_secs(30),
        "the group consumer stalled {gap:?} (seed {seed})"
    );
    println!(
        "checked {checked} acknowledged records on {PARTITIONS} partitions x 3 replicas; {} faults injected; \
         producer errors by code (-100 = connection lost): {:?}; seed {seed}",
        faults.len(),
        errors.lock().unwrap()
    );
    assert!(checked > 0, "the producers acknowledged nothing");
    assert!(!faults.is_empty());
    for b in nodes.brokers.iter_mut().filter_map(Option::take) {
        b.shutdown().await.unwrap();
    }
}

/// A consumer of one partition, always at its leader (found as the producers find it): checks that the record at
/// offset k is the producer's sequence k (so it saw neither a gap, a duplicate, nor anything later truncated) and
/// stops once it has read `until` records (set when the producers are done), within 60 s of that. Returns the
/// records read and the longest time between two deliveries of new records.
async fn consume_loop(ports: Vec<u16>, partition: i32, until: Arc<AtomicU64>) -> (i64, Duration) {
    let mut next = 0i64;
    let mut last_delivery: Option<Instant> = None;
    let mut max_gap = Duration::ZERO;
    let mut conn: Option<(u16, Conn)> = None;
    let mut until_set_at: Option<Instant> = None;
    loop {
        let target = until.load(Ordering::Acquire);
        if target != u64::MAX {
            if next as u64 >= target {
                return (next, max_gap);
            }
            let at = *until_set_at.get_or_insert_with(Instant::now);
            assert!(
                at.elapsed() < Duration::from_secs(60),
                "partition {partition}: consumed {next} of {target} records"
            );
        }
        let Some(port) = leader_port(&ports, partition).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if conn.as_ref().is_none_or(|(p, _)| *p != port) {
            conn = Conn::connect(port).await.map(|c| (port, c));
        }
        let Some((_, c)) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(300)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(s(TOPIC)))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(8 << 20)])]);
        let Some(resp) = c.send(12, &req).await else {
            conn = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let p = &resp.responses[0].partitions[0];
        if p.error_code != 0 {
            conn = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut buf = p.records.clone().unwrap_or_default();
        let before = next;
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).unwrap() {
            for r in set.records {
                if r.offset < next {
                    continue; // the start of a batch read again
                }
                assert_eq!(
                    r.offset, next,
                    "partition {partition}: a gap in the offsets"
                );
                let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                assert_eq!(
                    value.as_deref(),
                    Some(format!("p{partition}-s{next}").as_str()),
                    "partition {partition}: offset {next} is not the producer's sequence {next}"
                );
                next += 1;
            }
        }
        if next > before {
            let now = Instant::now();
            if let Some(last) = last_delivery {
                max_gap = max_gap.max(now - last);
            }
            last_delivery = Some(now);
        }
    }
}

/// Each broker in turn is stopped cleanly (controlled shutdown moves its leaderships first) and restarted while
/// idempotent acks=all producers and consumers run; the next one goes only once every ISR is full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_nothing_and_never_stalls_consumers() {
    let (mut nodes, client_ports, _dirs) = start_cluster().await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let producers: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            tokio::spawn(produce_loop(
                client_ports.clone(),
                p,
                stop.clone(),
                acked.clone(),
                errors.clone(),
                Duration::from_millis(10),
            ))
        })
        .collect();
    let until: Vec<Arc<AtomicU64>> = (0..PARTITIONS)
        .map(|_| Arc::new(AtomicU64::new(u64::MAX)))
        .collect();
    let consumers: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            tokio::spawn(consume_loop(
                client_ports.clone(),
                p,
                until[p as usize].clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let acked_before = acked.load(Ordering::Relaxed);
        let b = nodes.brokers[i].take().unwrap();
        b.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        nodes.start(i).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let full = nodes.brokers.iter().flatten().all(|b| {
                let st = b.state().meta.state();
                st.topics.get(TOPIC).is_some_and(|t| {
                    t.partitions
                        .iter()
                        .all(|p| p.leader >= 0 && p.isr.len() == 3)
                })
            });
            if full {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the ISRs did not fill again after restarting broker {}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "restarted broker {} at {:?}; acknowledged {} records meanwhile (errors {:?})",
            i + 1,
            started.elapsed(),
            acked.load(Ordering::Relaxed) - acked_before,
            errors.lock().unwrap()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Release);
    let mut produced = Vec::new();
    for h in producers {
        produced.push(h.await.unwrap());
    }
    for (p, (_, acked_seq)) in produced.iter().enumerate() {
        until[p].store(*acked_seq as u64, Ordering::Release);
    }
    let mut worst = Duration::ZERO;
    for (p, h) in consumers.into_iter().enumerate() {
        let (read, gap) = h.await.unwrap();
        println!("partition {p}: consumed {read} records, longest gap {gap:?}");
        worst = worst.max(gap);
    }
    let checked = verify(&nodes, &produced, 0).await;
    println!(
        "rolling restart: {checked} acknowledged records checked, producer errors {:?}, longest consumer gap {worst:?}",
        errors.lock().unwrap()
    );
    assert!(checked > 0);
    assert!(
        worst < Duration::from_secs(10),
        "a consumer waited {worst:?} for new records during the rolling restart"
    );
    for b in nodes.brokers.iter_mut().filter_map(Option::take) {
        b.shutdown().await.unwrap();
    }
}
