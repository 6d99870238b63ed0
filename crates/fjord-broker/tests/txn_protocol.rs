//! Transaction requests at the protocol level, against an in-process broker: the cases no client library
//! sends on purpose (AddPartitionsToTxn v4 batches with `verify_only`, stray transactional batches, retried
//! and fenced InitProducerId/EndTxn, old-version error codes). Real clients drive the ordinary paths in
//! `crates/fjord/tests/transactions.rs`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

mod common;
use common::{create_topic, s, start, start_with, Client};

fn txn_batch(pid: i64, epoch: i16, seq: i32) -> Bytes {
    record_batch(pid, epoch, seq, true)
}

fn record_batch(pid: i64, epoch: i16, seq: i32, transactional: bool) -> Bytes {
    let r = Record {
        transactional,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: 1,
        key: None,
        value: Some(Bytes::from_static(b"v")),
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

async fn init(
    c: &mut Client,
    version: i16,
    id: &str,
    timeout: i32,
    expect: (i64, i16),
) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_transaction_timeout_ms(timeout)
        .with_producer_id(ProducerId(expect.0))
        .with_producer_epoch(expect.1);
    c.send(version, &req).await
}

fn add_v3(
    id: &str,
    pid: i64,
    epoch: i16,
    topic: &str,
    parts: Vec<i32>,
) -> AddPartitionsToTxnRequest {
    AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(parts)])
}

fn codes_v3(r: &AddPartitionsToTxnResponse) -> Vec<i16> {
    r.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

async fn produce(c: &mut Client, id: &str, topic: &str, p: i32, batch: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(batch))])]);
    let r = c.send(9, &req).await;
    r.responses[0].partition_responses[0].error_code
}

async fn end(c: &mut Client, version: i16, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    c.send(version, &req).await.error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_retries_and_fencing_follow_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 2).await;

    // Timeouts above transaction.max.timeout.ms are refused.
    let r = init(&mut c, 4, "app", 120_000, (-1, -1)).await;
    assert_eq!(r.error_code, E::InvalidTransactionTimeout.code());
    let r = init(&mut c, 4, "app", 30_000, (-1, -1)).await;
    assert_eq!(r.error_code, 0);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    assert_eq!(epoch, 0);

    // Only partitions added to the transaction take its batches.
    let r = c.send(3, &add_v3("app", pid, epoch, "t", vec![0])).await;
    assert_eq!(codes_v3(&r), vec![0]);
    assert!(broker
        .metrics_text()
        .contains("fjord_transactions_ongoing 1"));
    assert_eq!(
        produce(&mut c, "app", "t", 1, txn_batch(pid, epoch, 0)).await,
        E::InvalidTxnState.code()
    );
    assert_eq!(
        produce(&mut c, "app", "t", 0, txn_batch(pid, epoch, 0)).await,
        0
    );

    // v4+ (broker to coordinator): batched, and verify_only reports without adding.
    let verify = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(s("app")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![0, 1])]),
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(s("app")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![1]),
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("missing")))
                    .with_partitions(vec![0]),
            ]),
    ]);
    let r = c.send(4, &verify).await;
    let codes: Vec<Vec<i16>> = r
        .results_by_transaction
        .iter()
        .map(|t| {
            t.topic_results
                .iter()
                .flat_map(|tr| {
                    tr.results_by_partition
                        .iter()
                        .map(|p| p.partition_error_code)
                })
                .collect()
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            vec![0, E::InvalidTxnState.code()],
            vec![
                E::OperationNotAttempted.code(),
                E::UnknownTopicOrPartition.code()
            ],
        ]
    );
    // Nothing was added by the failed request: t-1 still refuses the batch.
    assert_eq!(
        produce(&mut c, "app", "t", 1, txn_batch(pid, epoch, 0)).await,
        E::InvalidTxnState.code()
    );

    // While open, read_committed stops before the transaction.
    let fetch = |isolation: i8| {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_isolation_level(isolation)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])])
    };
    let r = c.send(11, &fetch(1)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (1, 0));
    assert!(p.records.as_ref().unwrap().is_empty());
    // ListOffsets "latest" is the LSO for read_committed and the high watermark otherwise.
    for (isolation, want) in [(1i8, 0i64), (0, 1)] {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let r = c.send(8, &req).await;
        assert_eq!(
            r.topics[0].partitions[0].offset, want,
            "isolation {isolation}"
        );
    }

    // EndTxn: commit, a retried commit succeeds, an abort after it does not.
    assert_eq!(end(&mut c, 3, "app", pid, epoch, true).await, 0);
    assert_eq!(end(&mut c, 3, "app", pid, epoch, true).await, 0);
    assert_eq!(
        end(&mut c, 3, "app", pid, epoch, false).await,
        E::InvalidTxnState.code()
    );
    let r = c.send(11, &fetch(1)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(
        (p.high_watermark, p.last_stable_offset),
        (2, 2),
        "data + commit marker"
    );
    assert_eq!(p.aborted_transactions.as_ref().map(Vec::len), Some(0));

    // KIP-360: re-initialising with the current id and epoch bumps the epoch; a retry of that request gets
    // the same answer; an older epoch is fenced; another producer id is not this transactional id's.
    let r = init(&mut c, 4, "app", 30_000, (pid, epoch)).await;
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (0, pid, 1)
    );
    let r = init(&mut c, 4, "app", 30_000, (pid, epoch)).await;
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (0, pid, 1)
    );
    let r = init(&mut c, 4, "app", 30_000, (pid, 7)).await;
    assert_eq!(r.error_code, E::ProducerFenced.code());
    let r = init(&mut c, 4, "app", 30_000, (pid + 1000, 1)).await;
    assert_eq!(r.error_code, E::InvalidProducerIdMapping.code());

    // The old epoch is fenced everywhere; old request versions hear INVALID_PRODUCER_EPOCH.
    let r = c.send(3, &add_v3("app", pid, 0, "t", vec![0])).await;
    assert_eq!(codes_v3(&r), vec![E::ProducerFenced.code()]);
    let r = c.send(1, &add_v3("app", pid, 0, "t", vec![0])).await;
    assert_eq!(codes_v3(&r), vec![E::InvalidProducerEpoch.code()]);
    assert_eq!(
        end(&mut c, 1, "app", pid, 0, true).await,
        E::InvalidProducerEpoch.code()
    );

    // An aborted transaction is reported to read_committed fetches.
    let r = c.send(3, &add_v3("app", pid, 1, "t", vec![0])).await;
    assert_eq!(codes_v3(&r), vec![0]);
    assert_eq!(
        produce(&mut c, "app", "t", 0, txn_batch(pid, 1, 0)).await,
        0
    );
    assert_eq!(end(&mut c, 3, "app", pid, 1, false).await, 0);
    let r = c.send(11, &fetch(1)).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.last_stable_offset, 4);
    let aborted: Vec<(i64, i64)> = p
        .aborted_transactions
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    assert_eq!(aborted, vec![(pid, 2)]);

    // Operators see it: DescribeTransactions and ListTransactions.
    let r = c
        .send(
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                TransactionalId(s("app")),
                TransactionalId(s("nope")),
            ]),
        )
        .await;
    assert_eq!(
        r.transaction_states[0].transaction_state.as_str(),
        "CompleteAbort"
    );
    assert_eq!(r.transaction_states[0].producer_epoch, 1);
    assert_eq!(
        r.transaction_states[1].error_code,
        E::TransactionalIdNotFound.code()
    );
    let r = c
        .send(
            1,
            &ListTransactionsRequest::default()
                .with_state_filters(vec![s("CompleteAbort"), s("Bogus")])
                .with_duration_filter(-1),
        )
        .await;
    assert_eq!(r.transaction_states.len(), 1);
    assert_eq!(r.unknown_state_filters, vec![s("Bogus")]);

    // Operators see it in /metrics too.
    let metrics = broker.metrics_text();
    for line in [
        "fjord_transactions_ended_total{outcome=\"commit\"} 1",
        "fjord_transactions_ended_total{outcome=\"abort\"} 1",
        "fjord_transactions_ongoing 0",
        "fjord_transactions_timed_out_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transactional_ids_expire_and_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_with(
        dir.path(),
        &[
            ("transactional.id.expiration.ms", "1000"),
            (
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                "100",
            ),
        ],
    )
    .await;
    let mut c = Client::connect(&broker).await;
    let first = init(&mut c, 4, "brief", 30_000, (-1, -1)).await;
    assert_eq!(first.error_code, 0);
    let describe = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s("brief"))]);
    assert_eq!(
        c.send(0, &describe).await.transaction_states[0].error_code,
        0
    );
    // Bounded wait for the expiry pass (1 s of idleness, checked every 100 ms).
    let mut expired = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c.send(0, &describe).await.transaction_states[0].error_code
            == E::TransactionalIdNotFound.code()
        {
            expired = true;
            break;
        }
    }
    assert!(expired, "the idle transactional id was never forgotten");
    // The old producer is no longer known; a new instance starts with a fresh producer id.
    let end_old = end(
        &mut c,
        3,
        "brief",
        first.producer_id.0,
        first.producer_epoch,
        true,
    )
    .await;
    assert_eq!(end_old, E::InvalidProducerIdMapping.code());
    let again = init(&mut c, 4, "brief", 30_000, (-1, -1)).await;
    assert_eq!(again.error_code, 0);
    assert_ne!(again.producer_id, first.producer_id);
    assert_eq!(again.producer_epoch, 0);
    broker.shutdown().await.unwrap();

    // The tombstone is durable: after a restart the expired id is still unknown... until it was reused,
    // which it was, so the restarted coordinator knows the new producer id.
    let broker = start_with(dir.path(), &[]).await;
    let mut c = Client::connect(&broker).await;
    let r = c.send(0, &describe).await;
    assert_eq!(r.transaction_states[0].producer_id, again.producer_id);
    broker.shutdown().await.unwrap();
}

/// Replaces the transaction's latest `__transaction_state` record with its PrepareCommit, as if the
/// coordinator had crashed after deciding to commit and before writing any marker.
fn inject_prepare_commit(data: &std::path::Path, id: &str, partitions: i32) {
    use fjord_coordinator::txn;
    let p = fjord_coordinator::records::partition_for(id, partitions);
    let dir = data.join(format!("__transaction_state-{p}"));
    let mut log = fjord_log::Log::open(&dir, fjord_log::LogConfig::default(), 0).unwrap();
    let end = log.log_end_offset();
    let read = log.read(0, 1 << 20, end, true).unwrap();
    let mut buf = read.records;
    let mut latest = None;
    for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).unwrap() {
        for r in set.records {
            if r.key
                .clone()
                .map(|k| txn::decode_key(k).unwrap())
                .as_deref()
                == Some(id)
            {
                latest = r.value;
            }
        }
    }
    let m = txn::decode_value(id, latest.expect("a record for the id")).unwrap();
    assert_eq!(m.state, txn::TxnState::Ongoing);
    let prepared = m.prepared(true, fjord_broker::now_ms());
    let batch = fjord_broker::groups::encode_batch(
        &[(txn::encode_key(id), Some(txn::encode_value(&prepared)))],
        None,
    )
    .unwrap();
    log.append(batch, 0, fjord_broker::now_ms()).unwrap();
    log.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_decided_before_a_crash_is_finished_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 2).await;
    let r = init(&mut c, 4, "app", 30_000, (-1, -1)).await;
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    let r = c.send(3, &add_v3("app", pid, epoch, "t", vec![0, 1])).await;
    assert_eq!(codes_v3(&r), vec![0, 0]);
    for p in [0, 1] {
        assert_eq!(
            produce(&mut c, "app", "t", p, txn_batch(pid, epoch, 0)).await,
            0
        );
    }
    drop(c);
    broker.shutdown().await.unwrap();
    inject_prepare_commit(dir.path(), "app", 2);

    // On start the coordinator finds PrepareCommit and writes the markers: both partitions become readable.
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    let describe = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s("app"))]);
    let mut state = String::new();
    for _ in 0..100 {
        state = c.send(0, &describe).await.transaction_states[0]
            .transaction_state
            .to_string();
        if state == "CompleteCommit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "CompleteCommit");
    for p in [0, 1] {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s("t")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let r = c.send(11, &req).await;
        let part = &r.responses[0].partitions[0];
        assert_eq!(
            (part.high_watermark, part.last_stable_offset),
            (2, 2),
            "data + commit marker in t-{p}"
        );
        assert!(!part.records.as_ref().unwrap().is_empty());
        assert_eq!(part.aborted_transactions.as_ref().map(Vec::len), Some(0));
    }
    broker.shutdown().await.unwrap();
}

/// ListOffsets of partition 0 of "t": (offset, timestamp) for `timestamp` under `isolation`.
async fn list_offset(c: &mut Client, isolation: i8, timestamp: i64) -> (i64, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
    let r = c.send(8, &req).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.offset, p.timestamp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_lookups_never_point_read_committed_consumers_into_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    let r = init(&mut c, 4, "app", 30_000, (-1, -1)).await;
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    let r = c.send(3, &add_v3("app", pid, epoch, "t", vec![0])).await;
    assert_eq!(codes_v3(&r), vec![0]);
    // One open transactional record at offset 0, timestamp 1.
    assert_eq!(
        produce(&mut c, "app", "t", 0, txn_batch(pid, epoch, 0)).await,
        0
    );
    // As Kafka: a lookup answers only offsets below what the isolation level may read (LSO 0 here).
    for ts in [0, -3] {
        assert_eq!(list_offset(&mut c, 0, ts).await, (0, 1), "uncommitted {ts}");
        assert_eq!(list_offset(&mut c, 1, ts).await, (-1, -1), "committed {ts}");
    }
    assert_eq!(end(&mut c, 3, "app", pid, epoch, true).await, 0);
    assert_eq!(list_offset(&mut c, 1, 0).await, (0, 1), "after the commit");
    // The commit marker (offset 1) carries the newest timestamp now, and is below the LSO.
    assert_eq!(list_offset(&mut c, 1, -3).await.0, 1);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_stable_offset_never_falls_below_the_log_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    let r = init(&mut c, 4, "app", 30_000, (-1, -1)).await;
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    let r = c.send(3, &add_v3("app", pid, epoch, "t", vec![0])).await;
    assert_eq!(codes_v3(&r), vec![0]);
    assert_eq!(
        produce(&mut c, "app", "t", 0, txn_batch(pid, epoch, 0)).await,
        0
    );
    let plain = record_batch(-1, -1, -1, false);
    for _ in 0..2 {
        assert_eq!(produce(&mut c, "", "t", 0, plain.clone()).await, 0);
    }
    // DeleteRecords removes the open transaction's first record: the LSO is the log start, never below.
    let r = c
        .send(
            2,
            &DeleteRecordsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    kafka_protocol::messages::delete_records_request::DeleteRecordsTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![
                        kafka_protocol::messages::delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(2),
                    ]),
                ]),
        )
        .await;
    assert_eq!(r.topics[0].partitions[0].low_watermark, 2);
    assert_eq!(list_offset(&mut c, 1, -1).await.0, 2);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("t")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(2)
                .with_partition_max_bytes(1 << 20)])]);
    let r = c.send(11, &fetch).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.log_start_offset, p.last_stable_offset),
        (0, 2, 2)
    );
    broker.shutdown().await.unwrap();
}

/// A WriteTxnMarkers from an older producer session (a late or forged marker) must not end the current
/// session's transaction: the leader refuses it with INVALID_PRODUCER_EPOCH and writes nothing, as Kafka's
/// `checkProducerEpoch` does, and the real commit still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_from_an_older_producer_session_is_refused() {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    let first = init(&mut c, 4, "app", 30_000, (-1, -1)).await;
    let r = init(&mut c, 4, "app", 30_000, (-1, -1)).await;
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    assert_eq!(pid, first.producer_id.0);
    assert!(
        epoch > first.producer_epoch,
        "the second init bumps the epoch"
    );
    let r = c.send(3, &add_v3("app", pid, epoch, "t", vec![0])).await;
    assert_eq!(codes_v3(&r), vec![0]);
    assert_eq!(
        produce(&mut c, "app", "t", 0, txn_batch(pid, epoch, 0)).await,
        0
    );
    let forged = |producer_epoch: i16| {
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(producer_epoch)
            .with_transaction_result(false)
            .with_coordinator_epoch(i32::MAX)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0])])])
    };
    // A batch of the older session is refused as Kafka's partition refuses an older epoch (the Java client
    // then reports the producer fenced), not as a batch outside any transaction.
    assert_eq!(
        produce(
            &mut c,
            "app",
            "t",
            0,
            txn_batch(pid, first.producer_epoch, 1)
        )
        .await,
        E::InvalidProducerEpoch.code()
    );
    let r = c.send(1, &forged(first.producer_epoch)).await;
    assert_eq!(
        r.markers[0].topics[0].partitions[0].error_code,
        E::InvalidProducerEpoch.code()
    );
    let high_watermark = list_offset(&mut c, 0, -1).await.0;
    assert_eq!(high_watermark, 1, "the refused marker was not written");
    assert_eq!(
        list_offset(&mut c, 1, -1).await.0,
        0,
        "the transaction is still open"
    );
    assert_eq!(end(&mut c, 3, "app", pid, epoch, true).await, 0);
    assert_eq!(list_offset(&mut c, 1, -1).await.0, 2, "committed");
    broker.shutdown().await.unwrap();
}

/// (last stable offset, high watermark) of `topic`-`p`, from ListOffsets latest under both isolation levels.
async fn stable_and_high(c: &mut Client, topic: &str, p: i32) -> (i64, i64) {
    let mut out = [0i64; 2];
    for (i, isolation) in [1i8, 0].into_iter().enumerate() {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(p)
                    .with_timestamp(-1)])]);
        let r = c.send(8, &req).await;
        let part = &r.topics[0].partitions[0];
        assert_eq!(part.error_code, 0, "ListOffsets {topic}-{p}");
        out[i] = part.offset;
    }
    (out[0], out[1])
}

/// A TxnOffsetCommit verified just before its transaction ends must not write its offsets after the marker: that
/// batch would open a transaction in `__consumer_offsets` that no marker ever ends (read_committed reads of the
/// partition, and the group's offsets with require_stable, would stall until the producer came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_offset_commit_overtaken_by_the_end_of_its_transaction_is_refused() {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 1).await;
    let r = init(&mut c, 4, "app", 30_000, (-1, -1)).await;
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    let r = c
        .send(
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("app")))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(s("g"))),
        )
        .await;
    assert_eq!(r.error_code, 0);
    let offsets_partition = broker.state().groups.partition_of("g");
    let before = stable_and_high(&mut c, "__consumer_offsets", offsets_partition).await;
    assert_eq!(before.0, before.1, "no transaction open yet");

    // The commit passes its checks and then waits for the coordinator's write lock, held here...
    let held = broker.state().groups.hold_writes().await;
    let addr = broker.local_addr();
    let commit = tokio::spawn(async move {
        let mut c2 = Client::connect_to(addr).await;
        let req = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("app")))
            .with_group_id(GroupId(s("g")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(5)])]);
        c2.send(3, &req).await.topics[0].partitions[0].error_code
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!commit.is_finished(), "the commit waits for the write lock");
    // ...while the transaction is aborted under it (its markers do not take that lock).
    assert_eq!(end(&mut c, 3, "app", pid, epoch, false).await, 0);
    drop(held);
    let code = tokio::time::timeout(Duration::from_secs(10), commit)
        .await
        .expect("the commit is answered")
        .unwrap();
    assert_eq!(
        code,
        E::InvalidTxnState.code(),
        "the transaction ended before the offsets were written"
    );
    let (stable, high) = stable_and_high(&mut c, "__consumer_offsets", offsets_partition).await;
    assert_eq!(
        stable, high,
        "no transaction is left open in __consumer_offsets"
    );

    // The transactional id works on: a new transaction commits its offsets.
    let r = init(&mut c, 4, "app", 30_000, (pid, epoch)).await;
    assert_eq!(r.error_code, 0);
    broker.shutdown().await.unwrap();
}
