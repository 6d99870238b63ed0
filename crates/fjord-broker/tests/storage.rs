//! The storage failure model over the wire, against an in-process broker: two log directories, one taken
//! offline by an I/O error while the other keeps serving; the metadata directory failing stops the broker; a
//! second broker on the same log directory refuses to start; hostile batches refused with Kafka's codes; the
//! broker-wide fetch response cap.
//!
//! A real disk fault cannot be produced on demand, so the failing operation is injected with the documented
//! test hook `Partition::fail_next_io_for_test` (the partition unit tests also drive a real ENOTDIR).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fjord_broker::config::BrokerConfig;
use fjord_broker::Broker;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

mod common;

use common::{create_topic, s, Client};

fn config(dirs: &[&Path]) -> BrokerConfig {
    config_with(dirs, &[])
}

fn config_with(dirs: &[&Path], extra: &[(&str, &str)]) -> BrokerConfig {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut props = BTreeMap::new();
    for (k, v) in [
        ("listeners", "PLAINTEXT://127.0.0.1:0".to_string()),
        ("log.dirs", dirs.join(",")),
        ("offsets.topic.num.partitions", "1".into()),
        ("transaction.state.log.num.partitions", "1".into()),
    ] {
        props.insert(k.to_string(), v);
    }
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    BrokerConfig::from_properties(props).unwrap()
}

async fn start(dirs: &[&Path]) -> Broker {
    Broker::start(config(dirs)).await.unwrap()
}

fn batch(n: usize) -> Bytes {
    batch_at(n, 1)
}

fn batch_at(n: usize, timestamp: i64) -> Bytes {
    records_batch(n, timestamp, |i| Bytes::from(format!("v{i}")))
}

/// One batch of `n` keyless records with the given timestamp and values.
fn records_batch(n: usize, timestamp: i64, value: impl Fn(usize) -> Bytes) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant: the encoder then writes one batch (one batch per partition per request).
            sequence: i as i32 - 1,
            timestamp,
            key: None,
            value: Some(value(i)),
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

/// acks=all produce of `n` records; (error code, base offset).
async fn produce(c: &mut Client, topic: &str, p: i32, n: usize) -> (i16, i64) {
    produce_raw(c, topic, p, batch(n)).await
}

/// acks=all produce of whatever `records` holds; (error code, base offset).
async fn produce_raw(c: &mut Client, topic: &str, p: i32, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(records))])]);
    let r = c.send(9, &req).await;
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// (error code, high watermark, record bytes) of a fetch from offset 0.
async fn fetch(c: &mut Client, topic: &str, p: i32) -> (i16, i64, usize) {
    fetch_up_to(c, topic, p, 1 << 20).await
}

/// A fetch from offset 0 asking for at most `max_bytes` (also the partition limit).
async fn fetch_up_to(c: &mut Client, topic: &str, p: i32, max_bytes: i32) -> (i16, i64, usize) {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(max_bytes)])]);
    let r = c.send(12, &req).await;
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.as_ref().map_or(0, |r| r.len()),
    )
}

async fn list_latest(c: &mut Client, topic: &str, p: i32) -> (i16, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(p)
                .with_timestamp(-1)])]);
    let r = c.send(7, &req).await;
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset)
}

async fn delete_records(c: &mut Client, topic: &str, p: i32, before: i64) -> i16 {
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(p)
                .with_offset(before)])]);
    let r = c.send(2, &req).await;
    r.topics[0].partitions[0].error_code
}

/// Per partition: (error code, leader, offline replicas).
async fn metadata(c: &mut Client, topic: &str) -> Vec<(i16, i32, Vec<i32>)> {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))
    ]));
    let r = c.send(12, &req).await;
    let mut parts: Vec<_> = r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                (
                    p.error_code,
                    p.leader_id.0,
                    p.offline_replicas.iter().map(|b| b.0).collect(),
                ),
            )
        })
        .collect();
    parts.sort_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_takes_one_log_dir_offline_and_the_other_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let broker = start(&[&a, &b]).await;
    let mut c = Client::connect(&broker).await;
    // Created before anything else: t-0 goes to a, t-1 to b (fewest partitions first).
    create_topic(&mut c, "t", 2).await;
    let state = broker.state();
    let (p0, p1) = (
        state.partitions.get("t", 0).unwrap(),
        state.partitions.get("t", 1).unwrap(),
    );
    assert_eq!((p0.log_dir(), p1.log_dir()), (a.as_path(), b.as_path()));
    assert!(a.join("t-0").is_dir() && b.join("t-1").is_dir());
    assert_eq!(produce(&mut c, "t", 1, 2).await, (0, 0));
    assert_eq!(produce(&mut c, "t", 0, 2).await, (0, 0));

    // The next fsync of t-1 fails, after the append: that acks=all produce is answered with KAFKA_STORAGE_ERROR,
    // never success.
    p1.fail_next_fsync_for_test();
    let storage = E::KafkaStorageError.code();
    assert_eq!(produce(&mut c, "t", 1, 1).await.0, storage);
    // From now on directory b serves nothing...
    assert_eq!(produce(&mut c, "t", 1, 1).await.0, storage);
    assert_eq!(fetch(&mut c, "t", 1).await.0, storage);
    assert_eq!(list_latest(&mut c, "t", 1).await.0, storage);
    assert_eq!(delete_records(&mut c, "t", 1, 1).await, storage);
    let producers = c
        .send(
            0,
            &DescribeProducersRequest::default().with_topics(vec![
                kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1]),
            ]),
        )
        .await;
    let codes: Vec<i16> = producers.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0, storage]);
    assert_eq!(
        metadata(&mut c, "t").await,
        vec![(0, 1, vec![]), (E::LeaderNotAvailable.code(), -1, vec![1])]
    );
    let metrics = broker.metrics_text();
    assert!(
        metrics.contains(&format!(
            "fjord_log_dir_offline{{dir=\"{}\"}} 1",
            b.display()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "fjord_log_dir_offline{{dir=\"{}\"}} 0",
            a.display()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("fjord_offline_partitions 1"), "{metrics}");
    // DescribeLogDirs (kafka-log-dirs.sh) reports b failed, with nothing listed, and a with its partition.
    let dirs = c
        .send(4, &DescribeLogDirsRequest::default().with_topics(None))
        .await;
    type Dir = (String, i16, Vec<(String, Vec<i32>)>);
    let got: Vec<Dir> = dirs
        .results
        .iter()
        .map(|r| {
            (
                r.log_dir.to_string(),
                r.error_code,
                r.topics
                    .iter()
                    .map(|t| {
                        let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                        (t.name.0.to_string(), parts)
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (a.display().to_string(), 0, vec![("t".to_string(), vec![0])]),
            (b.display().to_string(), storage, vec![]),
        ]
    );

    // ...while directory a goes on as before, new topics included.
    assert_eq!(produce(&mut c, "t", 0, 3).await, (0, 2));
    let (code, hw, bytes) = fetch(&mut c, "t", 0).await;
    assert_eq!((code, hw), (0, 5));
    assert!(bytes > 0);
    assert_eq!(list_latest(&mut c, "t", 0).await, (0, 5));
    assert_eq!(delete_records(&mut c, "t", 0, 1).await, 0);
    create_topic(&mut c, "later", 1).await;
    assert!(a.join("later-0").is_dir(), "placed in the online directory");
    assert_eq!(produce(&mut c, "later", 0, 1).await, (0, 0));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), broker.fatal())
            .await
            .is_err(),
        "a data directory failing does not stop the broker"
    );
    drop((p0, p1));
    broker.shutdown().await.unwrap();
    assert!(
        !b.join("t-1/.kafka_cleanshutdown").exists(),
        "the failed log is left for recovery"
    );

    // After a restart (the disk "replaced") t-1 is recovered with the records acknowledged before the fault.
    let broker = start(&[&a, &b]).await;
    let mut c = Client::connect(&broker).await;
    let (code, hw, _) = fetch(&mut c, "t", 1).await;
    assert_eq!(code, 0);
    assert!(hw >= 2, "acknowledged records survive: hw {hw}");
    assert_eq!(list_latest(&mut c, "t", 0).await, (0, 5));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_error_in_the_metadata_log_dir_stops_the_broker() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let broker = start(&[&a, &b]).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    let p = broker.state().partitions.get("t", 0).unwrap();
    assert_eq!(p.log_dir(), a.as_path(), "a holds __meta and t-0");
    p.fail_next_io_for_test();
    assert_eq!(
        produce(&mut c, "t", 0, 1).await.0,
        E::KafkaStorageError.code()
    );
    let reason = tokio::time::timeout(Duration::from_secs(5), broker.fatal())
        .await
        .expect("the broker is told to stop");
    assert!(reason.contains(&a.display().to_string()), "{reason}");
    drop(p);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_log_dir_refuses_to_start() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let first = start(&[&a]).await;
    // Shares only the second directory: still refused, and the message names it.
    let other = root.path().join("other");
    let err = Broker::start(config(&[&other, &a]))
        .await
        .err()
        .expect("the second broker must not start")
        .to_string();
    assert!(err.contains(&a.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // A clean shutdown releases the lock.
    first.shutdown().await.unwrap();
    let again = start(&[&a, &b]).await;
    again.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_group_offsets_are_in_an_offline_dir_refuses_to_start_rather_than_forget_them(
) {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let broker = start(&[&a, &b]).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "x", 1).await;
    // The group coordinator creates __consumer_offsets (one partition here): it goes to b, the emptier.
    let found = c
        .send(
            3,
            &FindCoordinatorRequest::default()
                .with_key(s("g"))
                .with_key_type(0),
        )
        .await;
    assert_eq!(found.error_code, 0);
    assert!(b.join("__consumer_offsets-0").is_dir());
    broker.shutdown().await.unwrap();

    std::fs::rename(&b, root.path().join("b.away")).unwrap();
    std::fs::write(&b, b"not a directory").unwrap();
    let err = Broker::start(config(&[&a, &b]))
        .await
        .err()
        .expect("committed offsets cannot be loaded: no start")
        .to_string();
    assert!(err.contains("__consumer_offsets-0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_in_the_metadata_quorums_store_stops_the_broker() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("a");
    let broker = start(&[&a]).await;
    let mut c = Client::connect(&broker).await;
    // The metadata store's directory is lost: its next write (committing the next command) fails for real.
    std::fs::rename(a.join("__meta"), root.path().join("meta.away")).unwrap();
    std::fs::write(a.join("__meta"), b"not a directory").unwrap();
    let created = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
        )
        .await;
    assert_ne!(created.topics[0].error_code, 0);
    let reason = tokio::time::timeout(Duration::from_secs(10), broker.fatal())
        .await
        .expect("the broker is told to stop");
    assert!(reason.contains("__meta"), "{reason}");
    broker.shutdown().await.ok();
}

/// Rewrites a batch's record count and last offset delta and fixes its CRC, as an attacker would.
fn forge_count(batch: &Bytes, count: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[57..61].copy_from_slice(&count.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_batches_are_refused_with_kafkas_codes_and_burn_no_offsets() {
    let root = tempfile::tempdir().unwrap();
    let broker = start(&[root.path()]).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    assert_eq!(produce(&mut c, "t", 0, 3).await, (0, 0));

    // The reproduction: tiny batches claiming 2^31-1 records, alone and two in one request.
    let forged = forge_count(&batch(1), i32::MAX);
    let invalid_record = E::InvalidRecord.code();
    assert_eq!(
        produce_raw(&mut c, "t", 0, forged.clone()).await.0,
        invalid_record
    );
    let mut two = BytesMut::new();
    two.extend_from_slice(&forged);
    two.extend_from_slice(&forged);
    assert_eq!(
        produce_raw(&mut c, "t", 0, two.freeze()).await.0,
        invalid_record
    );
    // A record an hour and a minute ahead of the broker's clock (message.timestamp.after.max.ms is 1 h).
    let now = fjord_broker::now_ms();
    assert_eq!(
        produce_raw(&mut c, "t", 0, batch_at(1, now + 3_660_000))
            .await
            .0,
        E::InvalidTimestamp.code()
    );
    // Nothing was appended and no offset was burnt; the log survives a restart as it was.
    assert_eq!(produce(&mut c, "t", 0, 2).await, (0, 3));
    broker.shutdown().await.unwrap();
    let broker = start(&[root.path()]).await;
    let mut c = Client::connect(&broker).await;
    assert_eq!(list_latest(&mut c, "t", 0).await, (0, 5));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_response_is_capped_by_the_brokers_fetch_max_bytes() {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start(config_with(&[root.path()], &[("fetch.max.bytes", "2048")]))
        .await
        .unwrap();
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    let one = batch(20).len();
    for _ in 0..20 {
        assert_eq!(produce(&mut c, "t", 0, 20).await.0, 0);
    }
    let (code, hw, bytes) = fetch_up_to(&mut c, "t", 0, 50 << 20).await;
    assert_eq!((code, hw), (0, 400));
    assert!(bytes > 0, "something is returned");
    assert!(
        bytes <= 2048,
        "{bytes} bytes for a client asking 50 MiB with fetch.max.bytes=2048 ({one} per batch)"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_thousand_partitions_does_not_stall_other_topics() {
    // Opening a new topic's logs used to happen under the lock every produce and fetch takes to find its
    // partition (and on an async worker): a large CreateTopics stalled all traffic until it finished.
    let root = tempfile::tempdir().unwrap();
    let broker = start(&[root.path()]).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "busy", 1).await;
    assert_eq!(produce(&mut c, "busy", 0, 1).await, (0, 0));
    let addr = broker.local_addr();
    let big = tokio::spawn(async move {
        // 1000 partitions' directories and files, each synced: about 12 s on a quiet 2-core machine, and over
        // 30 s when other tests and builds share it.
        let mut admin = Client::connect_to(addr)
            .await
            .answer_within(Duration::from_secs(180));
        create_topic(&mut admin, "big", 1000).await;
    });
    // Wait (bounded) until the creation is under way: its first partition directories exist.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !root.path().join("big-0").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "creation never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut served_during = 0;
    for i in 1..=20 {
        assert_eq!(produce(&mut c, "busy", 0, 1).await, (0, i));
        if !big.is_finished() {
            served_during += 1;
        }
    }
    assert!(
        served_during > 0,
        "no produce to another topic completed while 1000 partitions were being created"
    );
    big.await.unwrap();
    assert_eq!(produce(&mut c, "busy", 0, 1).await, (0, 21));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_fetch_registers_once_with_partitions_that_did_not_change() {
    // Each wake-up used to re-read every partition of the fetch and register with each again, so a quiet
    // partition's waiter list grew by one entry per append to any other partition of the same fetch.
    let root = tempfile::tempdir().unwrap();
    let broker = start(&[root.path()]).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 2).await;
    let quiet = broker.state().partitions.get("t", 1).unwrap();
    let addr = broker.local_addr();
    let parked = tokio::spawn(async move {
        let mut f = Client::connect_to(addr).await;
        let req = FetchRequest::default()
            .with_max_wait_ms(3_000)
            .with_min_bytes(1 << 20)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(
                    (0..2)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )]);
        f.send(12, &req).await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while quiet.waiter_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the fetch never parked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..5 {
        assert_eq!(produce(&mut c, "t", 0, 1).await, (0, i));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        quiet.waiter_count(),
        1,
        "five wake-ups from partition 0 re-registered the fetch with partition 1"
    );
    let resp = parked.await.unwrap();
    let p0 = &resp.responses[0].partitions[0];
    assert_eq!(
        p0.high_watermark, 5,
        "the answer has partition 0's latest state"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_reads_no_responses_holds_a_bounded_amount_and_others_are_served() {
    // One request at a time per connection, responses written with backpressure: a client that pipelines 50
    // fetches of 1 MB and never reads gets a few answered (what the socket buffers take), not 50 buffered in
    // the broker; everyone else keeps being served.
    let root = tempfile::tempdir().unwrap();
    let broker = start(&[root.path()]).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "big", 1).await;
    for _ in 0..4 {
        assert_eq!(
            produce_raw(
                &mut c,
                "big",
                0,
                records_batch(500, 1, |_| Bytes::from(vec![b'x'; 1000]))
            )
            .await
            .0,
            0
        );
    }
    let mut stalled = tokio::net::TcpStream::connect(broker.local_addr())
        .await
        .unwrap();
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("big")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let mut frames = BytesMut::new();
    for i in 0..50 {
        frames.extend_from_slice(&common::frame(12, i, &fetch));
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncWriteExt::write_all(&mut stalled, &frames),
    )
    .await
    .expect("50 small requests fit in the socket buffers")
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent_to_fetchers = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("fjord_topic_bytes_out_total{topic=\"big\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Measured before this test's own fetch below, which counts toward the same series.
    let served = sent_to_fetchers(&broker.metrics_text());
    // Others are served meanwhile.
    assert_eq!(produce(&mut c, "big", 0, 1).await.0, 0);
    assert_eq!(fetch_up_to(&mut c, "big", 0, 1024).await.0, 0);
    assert!(
        served > 0,
        "some of the stalled connection's fetches were answered"
    );
    assert!(
        served < 25 << 20,
        "{served} bytes of responses were produced for a client that reads none (50 MiB asked)"
    );
    drop(stalled);
    broker.shutdown().await.unwrap();
}

/// OffsetForLeaderEpoch for partition `p` of `topic`: (error code, leader epoch, end offset).
async fn epoch_end(
    c: &mut Client,
    version: i16,
    topic: &str,
    p: i32,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(p)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])]);
    let r = c.send(version, &req).await;
    let e = &r.topics[0].partitions[0];
    (e.error_code, e.leader_epoch, e.end_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_from_the_persisted_epoch_cache() {
    let root = tempfile::tempdir().unwrap();
    let broker = start(&[root.path()]).await;
    let mut c = Client::connect(&broker).await;
    let versions = c.send(3, &ApiVersionsRequest::default()).await;
    assert!(
        versions
            .api_keys
            .iter()
            .any(|k| k.api_key == 23 && k.max_version == 4),
        "OffsetForLeaderEpoch is advertised"
    );
    create_topic(&mut c, "t", 1).await;
    assert_eq!(
        epoch_end(&mut c, 4, "t", 0, 0, 0).await,
        (0, 0, 0),
        "a new leader starts its epoch at its log end, as Kafka's does at becoming leader"
    );
    for _ in 0..3 {
        produce(&mut c, "t", 0, 5).await;
    }
    assert_eq!(
        epoch_end(&mut c, 4, "t", 0, 0, 0).await,
        (0, 0, 15),
        "the current epoch ends at the log end"
    );
    assert_eq!(
        epoch_end(&mut c, 4, "t", 0, -1, 3).await,
        (0, -1, -1),
        "an epoch newer than any here is undefined"
    );
    assert_eq!(
        epoch_end(&mut c, 4, "t", 0, 3, 0).await.0,
        E::UnknownLeaderEpoch.code(),
        "a requester ahead of our metadata"
    );
    assert_eq!(
        epoch_end(&mut c, 4, "t", 7, -1, 0).await.0,
        E::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        epoch_end(&mut c, 2, "t", 0, -1, 0).await,
        (0, 0, 15),
        "v2 (the oldest Kafka 4 keeps) without a current epoch"
    );
    // The log start moving keeps the epoch; a restart reads it back from leader-epoch-checkpoint.
    assert_eq!(delete_records(&mut c, "t", 0, 10).await, 0);
    broker.shutdown().await.unwrap();
    let checkpoint = root.path().join("t-0/leader-epoch-checkpoint");
    assert_eq!(
        std::fs::read_to_string(&checkpoint).unwrap(),
        "0\n1\n0 10\n"
    );
    let broker = start(&[root.path()]).await;
    let mut c = Client::connect(&broker).await;
    assert_eq!(epoch_end(&mut c, 4, "t", 0, 0, 0).await, (0, 0, 15));
    broker.shutdown().await.unwrap();
}
