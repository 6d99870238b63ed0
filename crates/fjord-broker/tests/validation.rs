//! What the broker refuses from clients, at the protocol level against an in-process broker: internal topics by
//! name (create, delete, produce, delete records, auto-creation), produce requests with other than one batch per
//! partition, and records of internal topics that cannot be decoded at start-up.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

mod common;
use common::{create_topic, s, start, Client};

const OFFSETS: &str = "__consumer_offsets";
const TXN_STATE: &str = "__transaction_state";

fn batch(pid: i64, seq: i32, transactional: bool, compression: Compression) -> Bytes {
    let r = Record {
        transactional,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: pid,
        producer_epoch: if pid < 0 { -1 } else { 0 },
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: 1,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[r],
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

async fn produce(c: &mut Client, topic: &str, records: Bytes) -> ProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    c.send(9, &req).await
}

async fn create(c: &mut Client, name: &str) -> (i16, String) {
    let r = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
        )
        .await;
    let t = &r.topics[0];
    (
        t.error_code,
        t.error_message.as_deref().unwrap_or("").to_string(),
    )
}

async fn metadata(c: &mut Client, name: &str) -> MetadataResponse {
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(name))))
        ]));
    // v10 and later carry topic ids.
    c.send(12, &req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_are_the_brokers_alone_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;

    // Not created by CreateTopics, whether they exist yet or not; the message says what to do.
    for name in [OFFSETS, TXN_STATE, "__share_group_state"] {
        let (code, message) = create(&mut c, name).await;
        assert_eq!(code, E::InvalidRequest.code(), "create {name}: {message}");
        assert!(message.contains("creates it on first use"), "{message}");
    }
    // Not written before they exist (no auto-creation by a produce with a client's settings)...
    let r = produce(&mut c, OFFSETS, batch(-1, -1, false, Compression::None)).await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, E::InvalidTopicException.code());
    assert!(p
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("Cannot append to internal topic __consumer_offsets")));

    // A Metadata request may auto-create one, but with its coordinator's settings (internal, compacted,
    // offsets.topic.num.partitions = 2 in these tests), as Kafka does.
    let r = metadata(&mut c, OFFSETS).await;
    let t = &r.topics[0];
    assert_eq!(t.error_code, 0);
    assert!(t.is_internal);
    assert_eq!(t.partitions.len(), 2);
    // An internal name no coordinator here owns is never created.
    let r = metadata(&mut c, "__share_group_state").await;
    assert_eq!(r.topics[0].error_code, E::UnknownTopicOrPartition.code());

    // ... nor after.
    let r = produce(&mut c, OFFSETS, batch(-1, -1, false, Compression::None)).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        E::InvalidTopicException.code()
    );
    let (code, _) = create(&mut c, OFFSETS).await;
    assert_eq!(
        code,
        E::TopicAlreadyExists.code(),
        "Kafka's answer once it exists"
    );

    // Not deleted, by name or by id, and no records deleted from them.
    let id = metadata(&mut c, OFFSETS).await.topics[0].topic_id;
    for (version, req) in [
        (
            5,
            DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s(OFFSETS))]),
        ),
        (
            6,
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_topic_id(id)]),
        ),
    ] {
        let r = c.send(version, &req.with_timeout_ms(10_000)).await;
        let d = &r.responses[0];
        assert_eq!(d.error_code, E::InvalidRequest.code(), "v{version}");
        assert!(d
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("Deletion of internal topic __consumer_offsets")));
    }
    let r = c
        .send(
            2,
            &DeleteRecordsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(TopicName(s(OFFSETS)))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(-1)])]),
        )
        .await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        E::InvalidTopicException.code()
    );
    let t = &metadata(&mut c, OFFSETS).await.topics[0];
    assert_eq!((t.error_code, t.is_internal), (0, true), "still there");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_request_carries_exactly_one_batch_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;

    // A plain batch followed by a stray transactional one (no transaction open): neither is appended, so no
    // transaction is left open that no marker would ever close.
    let mut two = BytesMut::from(&batch(-1, -1, false, Compression::None)[..]);
    two.extend_from_slice(&batch(4242, 0, true, Compression::None));
    for records in [two.freeze(), Bytes::new()] {
        let r = produce(&mut c, "t", records).await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(
            p.error_code,
            E::InvalidRecord.code(),
            "{:?}",
            p.error_message
        );
        assert!(p
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("exactly one record batch per partition")));
    }
    let r = produce(&mut c, "t", batch(-1, -1, false, Compression::None)).await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "nothing was appended before"
    );
    let producers = broker.state().partitions.get("t", 0).unwrap().producers();
    assert!(producers.is_empty(), "{producers:?}");
    broker.shutdown().await.unwrap();
}

/// Appends `records` to an internal topic's partition on disk while the broker is down, as damage or a foreign
/// writer would leave them.
/// Puts a batch at the end of a partition's log behind the log's back, as a damaged disk or another writer
/// could (`Log::append` would refuse a batch whose records do not decode): its base offset is set to the log
/// end, its bytes appended to the active segment, and the log left without a clean-shutdown marker, so the next
/// open re-validates it (framing and CRC hold, so it stays).
fn append_on_disk(data: &std::path::Path, topic: &str, partition: i32, records: Bytes) {
    let dir = data.join(format!("{topic}-{partition}"));
    let log = fjord_log::Log::open(&dir, fjord_log::LogConfig::default(), 0).unwrap();
    let (end, active) = (log.log_end_offset(), log.active_base_offset());
    drop(log);
    let mut b = records.to_vec();
    b[..8].copy_from_slice(&end.to_be_bytes());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(format!("{active:020}.log")))
        .unwrap();
    std::io::Write::write_all(&mut f, &b).unwrap();
}

/// A well-framed batch (CRC right) whose record cannot be decoded: its length varint claims more bytes than the
/// batch holds.
fn undecodable_batch() -> Bytes {
    let mut b = BytesMut::from(&batch(-1, -1, false, Compression::None)[..]);
    // The first record starts right after the 61-byte v2 header; its length is a zig-zag varint.
    b[61] = 0x7e;
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

async fn commit(c: &mut Client, group: &str, offset: i64) {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    let r = c.send(2, &req).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
}

async fn committed(c: &mut Client, group: &str) -> i64 {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![0])]));
    c.send(1, &req).await.topics[0].partitions[0].committed_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_skips_internal_records_it_cannot_decode() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    commit(&mut c, "g", 5).await;
    // A transactional id, so that __transaction_state exists too.
    let r = c
        .send(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("app"))))
                .with_transaction_timeout_ms(30_000),
        )
        .await;
    assert_eq!(r.error_code, 0);
    drop(c);
    broker.shutdown().await.unwrap();

    let p = fjord_coordinator::records::partition_for("g", 2);
    // A record that does not decode; a compressed batch (decompressed with fjord-log's cap) whose record key is
    // not an offsets key; an uncompressed record whose key is garbage.
    append_on_disk(dir.path(), OFFSETS, p, undecodable_batch());
    append_on_disk(
        dir.path(),
        OFFSETS,
        p,
        batch(-1, -1, false, Compression::Gzip),
    );
    append_on_disk(
        dir.path(),
        OFFSETS,
        p,
        batch(-1, -1, false, Compression::None),
    );
    let tp = fjord_coordinator::records::partition_for("app", 2);
    append_on_disk(dir.path(), TXN_STATE, tp, undecodable_batch());

    // The broker starts, keeps what it could read, and says what it skipped.
    let broker = start(dir.path()).await;
    let metrics = broker.metrics_text();
    for line in [
        "fjord_internal_records_skipped_total{topic=\"__consumer_offsets\"} 3",
        "fjord_internal_records_skipped_total{topic=\"__transaction_state\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let mut c = Client::connect(&broker).await;
    assert_eq!(committed(&mut c, "g").await, 5);
    let describe = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s("app"))]);
    assert_eq!(
        c.send(0, &describe).await.transaction_states[0].error_code,
        0,
        "the transactional id survived"
    );
    // Records after the damaged ones are replayed too.
    commit(&mut c, "g", 6).await;
    drop(c);
    broker.shutdown().await.unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    assert_eq!(committed(&mut c, "g").await, 6);
    broker.shutdown().await.unwrap();
}
