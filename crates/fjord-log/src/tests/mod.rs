//! Behaviour tests of the whole log: append/read, recovery, retention, compaction, timestamps, and a
//! model-based property test.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as KTs,
};

use crate::segment;
use crate::{Error, Log, LogConfig, TimestampType};

mod fault_harness;
mod hardening;

const NOW: i64 = 1_700_000_000_000;

fn record(key: Option<&str>, value: Option<&str>, ts: i64, i: usize) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: KTs::Creation,
        offset: i as i64,
        sequence: i as i32 - 1,
        timestamp: ts,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Default::default(),
        delete_horizon: false,
    }
}

/// A producer batch of (key, value, timestamp) records.
fn kv_batch(records: &[(Option<&str>, Option<&str>, i64)], compression: Compression) -> Bytes {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v, ts))| record(*k, *v, *ts, i))
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// A batch of `n` keyless records with values "v<tag>-<i>" and timestamp `ts`.
fn values_batch(tag: &str, n: usize, ts: i64) -> Bytes {
    let values: Vec<String> = (0..n).map(|i| format!("v{tag}-{i}")).collect();
    let recs: Vec<(Option<&str>, Option<&str>, i64)> = values
        .iter()
        .map(|v| (None, Some(v.as_str()), ts))
        .collect();
    kv_batch(&recs, Compression::None)
}

/// Decodes a read result into (offset, value) pairs.
fn decode(records: &Bytes) -> Vec<(i64, Option<String>)> {
    let mut b = records.clone();
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
        for r in set.records {
            out.push((
                r.offset,
                r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            ));
        }
    }
    out
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn read_all(log: &Log, from: i64) -> Vec<(i64, Option<String>)> {
    let r = log.read(from, usize::MAX / 2, i64::MAX, true).unwrap();
    decode(&r.records)
        .into_iter()
        .filter(|(o, _)| *o >= from)
        .collect()
}

fn log_files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn append_assigns_dense_offsets_and_reads_back_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    let mut expected = Vec::new();
    for i in 0..40 {
        let n = 1 + i % 4;
        let info = log
            .append(values_batch(&i.to_string(), n, NOW), 3, NOW)
            .unwrap();
        assert_eq!(info.base_offset, expected.len() as i64);
        assert_eq!(info.last_offset, info.base_offset + n as i64 - 1);
        assert_eq!(info.log_append_time, -1);
        assert_eq!(info.batches[0].base_offset, info.base_offset);
        for j in 0..n {
            expected.push((expected.len() as i64, Some(format!("v{i}-{j}"))));
        }
    }
    assert!(log.segment_count() > 3, "small segment.bytes must roll");
    assert_eq!(log.log_end_offset(), expected.len() as i64);
    assert_eq!(read_all(&log, 0), expected);
    assert_eq!(
        log.size_bytes(),
        log_files(dir.path(), "log")
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );
    // Segment names are the base offsets, 20 digits.
    let first = log_files(dir.path(), "log")[0].clone();
    assert_eq!(first.file_name().unwrap(), "00000000000000000000.log");
    // The stored batch carries the assigned base offset and the leader epoch.
    let r = log.read(5, 1, i64::MAX, true).unwrap();
    let b = &r.records;
    assert_eq!(i32::from_be_bytes(b[12..16].try_into().unwrap()), 3);
}

#[test]
fn segments_never_exceed_segment_bytes_unless_a_single_batch_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..30 {
        log.append(values_batch(&i.to_string(), 3, NOW), 0, NOW)
            .unwrap();
    }
    for p in log_files(dir.path(), "log") {
        assert!(fs::metadata(&p).unwrap().len() <= 1024, "{p:?}");
    }
    let big = values_batch(&"x".repeat(2000), 1, NOW);
    let info = log.append(big.clone(), 0, NOW).unwrap();
    let r = log.read(info.base_offset, 10, i64::MAX, true).unwrap();
    assert_eq!(r.records.len(), big.len());
}

#[test]
fn read_from_mid_batch_offset_returns_the_containing_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    log.append(values_batch("a", 5, NOW), 0, NOW).unwrap();
    log.append(values_batch("b", 5, NOW), 0, NOW).unwrap();
    let r = log.read(7, 1 << 20, i64::MAX, false).unwrap();
    let got = decode(&r.records);
    assert_eq!(
        got.first().unwrap().0,
        5,
        "whole batch from its base offset"
    );
    assert_eq!(got.len(), 5);
    assert_eq!(r.log_end_offset, 10);
    assert_eq!(r.log_start_offset, 0);
}

#[test]
fn read_respects_max_bytes_and_min_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    let b = values_batch("a", 3, NOW);
    let size = b.len();
    for _ in 0..4 {
        log.append(b.clone(), 0, NOW).unwrap();
    }
    let r = log.read(0, size * 2 + size / 2, i64::MAX, true).unwrap();
    assert_eq!(r.records.len(), size * 2, "only whole batches");
    let r = log.read(0, size - 1, i64::MAX, true).unwrap();
    assert_eq!(r.records.len(), size, "KIP-74: first batch whole");
    let r = log.read(0, size - 1, i64::MAX, false).unwrap();
    assert!(r.records.is_empty());
}

#[test]
fn read_stops_before_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..10 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    let got = read_all_bounded(&log, 0, 6);
    assert_eq!(got.last().unwrap().0, 5);
    assert!(
        read_all_bounded(&log, 6, 6).is_empty(),
        "nothing at or above the high watermark"
    );
    // A batch straddling max_offset is withheld.
    assert_eq!(read_all_bounded(&log, 0, 7).last().unwrap().0, 5);
}

fn read_all_bounded(log: &Log, from: i64, max_offset: i64) -> Vec<(i64, Option<String>)> {
    decode(&log.read(from, 1 << 20, max_offset, true).unwrap().records)
}

#[test]
fn read_outside_the_log_is_offset_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    log.append(values_batch("a", 3, NOW), 0, NOW).unwrap();
    assert!(log.read(3, 100, i64::MAX, true).unwrap().records.is_empty());
    assert!(matches!(
        log.read(4, 100, i64::MAX, true),
        Err(Error::OffsetOutOfRange {
            offset: 4,
            log_start: 0,
            log_end: 3
        })
    ));
    log.delete_records_before(2).unwrap();
    assert!(matches!(
        log.read(1, 100, i64::MAX, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn append_rejects_invalid_batches_without_changing_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(
        dir.path(),
        LogConfig {
            max_message_bytes: 200,
            ..LogConfig::default()
        },
        NOW,
    )
    .unwrap();
    let mut bad = values_batch("a", 2, NOW).to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(matches!(
        log.append(Bytes::from(bad), 0, NOW),
        Err(Error::CorruptMessage(_))
    ));
    assert!(matches!(
        log.append(Bytes::new(), 0, NOW),
        Err(Error::InvalidRecord(_))
    ));
    assert!(matches!(
        log.append(values_batch(&"x".repeat(300), 1, NOW), 0, NOW),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn log_append_time_rewrites_timestamp_and_crc() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg, NOW).unwrap();
    let info = log.append(values_batch("a", 3, 5), 0, NOW + 7).unwrap();
    assert_eq!(info.log_append_time, NOW + 7);
    assert_eq!(info.max_timestamp, NOW + 7);
    let r = log.read(0, 1 << 20, i64::MAX, true).unwrap();
    let infos = crate::validate_batches(&r.records, 1 << 20).unwrap();
    assert_eq!(infos[0].max_timestamp, NOW + 7);
    let mut b = r.records.clone();
    let set = RecordBatchDecoder::decode(&mut b).unwrap();
    assert_eq!(set.records[0].timestamp_type, KTs::LogAppend);
    assert_eq!(log.offset_for_timestamp(NOW).unwrap(), Some((0, NOW + 7)));
    assert_eq!(log.max_timestamp(), Some((0, NOW + 7)));
}

#[test]
fn clean_close_and_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..25 {
        log.append(values_batch(&i.to_string(), 2, NOW + i), 0, NOW)
            .unwrap();
    }
    let before = read_all(&log, 0);
    let segs = log.segment_count();
    log.close().unwrap();
    assert!(dir.path().join(".kafka_cleanshutdown").exists());
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert!(
        !dir.path().join(".kafka_cleanshutdown").exists(),
        "marker removed on open"
    );
    assert_eq!(log.segment_count(), segs);
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(log.max_timestamp(), Some((48, NOW + 24)));
    assert_eq!(
        log.append(values_batch("z", 1, NOW), 0, NOW)
            .unwrap()
            .base_offset,
        50
    );
}

#[test]
fn crash_with_garbage_tail_drops_it_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..20 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    let before = read_all(&log, 0);
    drop(log); // crash: no close
    let active = log_files(dir.path(), "log").pop().unwrap();
    let len = fs::metadata(&active).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&active).unwrap();
    std::io::Write::write_all(&mut f, &[0xAB; 100]).unwrap();
    drop(f);
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(
        fs::metadata(&active).unwrap().len(),
        len,
        "garbage truncated"
    );
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(
        log.append(values_batch("n", 1, NOW), 0, NOW)
            .unwrap()
            .base_offset,
        40
    );
}

#[test]
fn crash_mid_batch_truncates_the_torn_batch_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
    for i in 0..10 {
        log.append(values_batch(&i.to_string(), 3, NOW), 0, NOW)
            .unwrap();
    }
    drop(log);
    let active = log_files(dir.path(), "log").pop().unwrap();
    let len = fs::metadata(&active).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let mut log = Log::open(dir.path(), cfg, NOW).unwrap();
    assert_eq!(
        log.log_end_offset(),
        27,
        "last batch torn, the nine before it intact"
    );
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 27);
    assert_eq!(got[26], (26, Some("v8-2".into())));
    assert_eq!(
        log.append(values_batch("n", 2, NOW), 0, NOW)
            .unwrap()
            .base_offset,
        27
    );
    assert_eq!(read_all(&log, 27).len(), 2);
}

#[test]
fn crash_with_corrupt_byte_in_active_segment_truncates_from_the_bad_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    let b = values_batch("a", 2, NOW);
    for _ in 0..5 {
        log.append(b.clone(), 0, NOW).unwrap();
    }
    drop(log);
    let active = log_files(dir.path(), "log").pop().unwrap();
    let mut data = fs::read(&active).unwrap();
    data[b.len() * 2 + 70] ^= 0xFF; // inside the third batch's records
    fs::write(&active, &data).unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn crash_with_corrupt_tail_of_an_older_segment_drops_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..30 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    let segs = log_files(dir.path(), "log");
    assert!(segs.len() >= 3);
    drop(log);
    let victim = &segs[1];
    let mut data = fs::read(victim).unwrap();
    let n = data.len();
    data[n - 3] ^= 0xFF; // inside the last batch of the second segment
    fs::write(victim, &data).unwrap();
    let victim_base: i64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(log.segment_count(), 2, "later segments are gone");
    let end = log.log_end_offset();
    assert!(end > victim_base && end < 60, "{end}");
    assert_eq!(read_all(&log, 0).len() as i64, end);
}

#[test]
fn deleted_or_corrupt_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..30 {
        log.append(values_batch(&i.to_string(), 2, NOW + i), 0, NOW)
            .unwrap();
    }
    let before = read_all(&log, 0);
    log.close().unwrap();
    let indexes = log_files(dir.path(), "index");
    let index_before = fs::read(&indexes[0]).unwrap();
    assert!(!index_before.is_empty(), "sparse entries were written");
    fs::remove_file(&indexes[0]).unwrap();
    fs::remove_file(log_files(dir.path(), "timeindex")[1].clone()).unwrap();
    fs::write(&indexes[1], [1, 2, 3]).unwrap();
    let log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(
        fs::read(&indexes[0]).unwrap(),
        index_before,
        "rebuilt identically"
    );
    assert_eq!(fs::metadata(&indexes[1]).unwrap().len() % 8, 0);
    assert_eq!(read_all(&log, 0), before);
    for o in [0, 7, 13, 33, 59] {
        assert_eq!(read_all(&log, o)[0].0, o);
    }
    assert_eq!(
        log.offset_for_timestamp(NOW + 10).unwrap(),
        Some((20, NOW + 10))
    );
}

#[test]
fn leftover_temporary_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    log.append(values_batch("a", 1, NOW), 0, NOW).unwrap();
    log.close().unwrap();
    for name in [
        "00000000000000000000.log.cleaned",
        "00000000000000000005.log.deleted",
        "x.swap",
    ] {
        fs::write(dir.path().join(name), b"junk").unwrap();
    }
    let log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(log.log_end_offset(), 1);
    for name in [
        "00000000000000000000.log.cleaned",
        "00000000000000000005.log.deleted",
        "x.swap",
    ] {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
}

#[test]
fn flush_handle_covers_rolled_segments_until_marked() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(log.flushed_offset(), 0);
    for i in 0..20 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    assert!(log.segment_count() > 1);
    let h = log.flush_handle().unwrap();
    assert_eq!(h.flush_to(), 40);
    assert_eq!(
        h.files.len(),
        3 * (log.segment_count() - 1) + 1,
        "every rolled segment with its two indexes, plus the active one"
    );
    log.append(values_batch("late", 1, NOW), 0, NOW).unwrap();
    h.sync().unwrap();
    assert!(log.mark_synced(&h).unwrap());
    assert_eq!(log.flushed_offset(), 40);
    let h2 = log.flush_handle().unwrap();
    assert_eq!(h2.flush_to(), 41);
    assert_eq!(h2.files.len(), 1, "only the active segment is left");
    log.flush().unwrap();
    assert_eq!(log.flushed_offset(), 41);
    assert!(log.flush_handle().unwrap().files.is_empty());
}

#[test]
fn retention_by_time_deletes_old_segments_and_moves_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 1000,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
    for i in 0..20 {
        log.append(values_batch(&i.to_string(), 2, NOW - 5000), 0, NOW)
            .unwrap();
    }
    for i in 0..20 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    let segs = log.segment_count();
    let deleted = log.enforce_retention(NOW + 10).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), segs - deleted);
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 40, "old segments only: {start}");
    assert_eq!(read_all(&log, start)[0].0, start);
    // Everything older than the cutoff, but never the active segment.
    let deleted = log.enforce_retention(NOW + 100_000).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), 1);
    assert!(log.log_start_offset() <= log.log_end_offset());
    drop(log);
    let log = Log::open(dir.path(), cfg, NOW).unwrap();
    assert_eq!(log.log_end_offset(), 80);
}

#[test]
fn retention_by_size_keeps_at_most_retention_bytes_plus_active() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: 2048,
        retention_ms: -1,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), cfg, NOW).unwrap();
    for i in 0..60 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    assert!(log.size_bytes() > 4096);
    let deleted = log.enforce_retention(NOW).unwrap();
    assert!(deleted > 0);
    // Kafka's rule: delete the oldest segment while the rest still holds at least retention.bytes.
    let size = log.size_bytes();
    assert!(size <= 2048 + 1024, "{size}");
    assert!(size >= 2048 - 1024, "{size}");
    assert_eq!(log.log_end_offset(), 120);
}

#[test]
fn retention_is_skipped_for_compact_only_topics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 0,
        cleanup_delete: false,
        cleanup_compact: true,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), cfg, NOW).unwrap();
    for _ in 0..30 {
        let recs = [(Some("a"), Some("x"), 1), (Some("b"), Some("y"), 1)];
        log.append(kv_batch(&recs, Compression::None), 0, NOW)
            .unwrap();
    }
    assert_eq!(log.enforce_retention(NOW).unwrap(), 0);
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn segment_ms_rolls_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg, NOW).unwrap();
    log.append(values_batch("a", 1, NOW), 0, NOW).unwrap();
    log.append(values_batch("a", 1, NOW), 0, NOW + 10).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(values_batch("a", 1, NOW), 0, NOW + 1000)
        .unwrap();
    assert_eq!(log.segment_count(), 2);
    log.enforce_retention(NOW + 2500).unwrap();
    assert_eq!(log.segment_count(), 3);
    log.enforce_retention(NOW + 9000).unwrap();
    assert_eq!(
        log.segment_count(),
        3,
        "an empty active segment is not rolled"
    );
}

#[test]
fn delete_records_before_is_persisted_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..30 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    let segs = log.segment_count();
    assert_eq!(log.delete_records_before(33).unwrap(), 33);
    assert!(log.segment_count() < segs);
    assert_eq!(
        log.delete_records_before(10).unwrap(),
        33,
        "never moves back"
    );
    assert!(matches!(
        log.delete_records_before(61),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, 33)[0], (33, Some("v16-1".into())));
    drop(log);
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(log.log_start_offset(), 33);
    assert!(matches!(
        log.read(32, 100, i64::MAX, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // Deleting everything rolls so that even the active segment's data goes.
    assert_eq!(log.delete_records_before(60).unwrap(), 60);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    log.close().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (60, 60));
    assert_eq!(
        log.append(values_batch("a", 1, NOW), 0, NOW)
            .unwrap()
            .base_offset,
        60
    );
}

#[test]
fn truncate_to_removes_the_batch_containing_the_offset_and_above() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..30 {
        log.append(values_batch(&i.to_string(), 3, NOW + i), 0, NOW)
            .unwrap();
    }
    log.truncate_to(31).unwrap();
    assert_eq!(log.log_end_offset(), 30, "batch boundary");
    assert_eq!(read_all(&log, 0).len(), 30);
    assert_eq!(log.max_timestamp(), Some((27, NOW + 9)));
    assert_eq!(
        log.append(values_batch("x", 1, NOW), 0, NOW)
            .unwrap()
            .base_offset,
        30
    );
    log.truncate_to(3).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.segment_count(), 1);
    drop(log);
    let log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn truncating_at_the_log_end_drops_an_epoch_that_wrote_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    log.assign_epoch(0).unwrap();
    log.append(values_batch("a", 3, NOW), 0, NOW).unwrap();
    log.assign_epoch(1).unwrap();
    assert_eq!(log.leader_epochs(), &[(0, 0), (1, 3)]);
    log.truncate_to(3).unwrap();
    assert_eq!(log.log_end_offset(), 3, "no record goes");
    assert_eq!(log.leader_epochs(), &[(0, 0)], "the empty epoch goes");
    drop(log);
    let log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(
        log.leader_epochs(),
        &[(0, 0)],
        "and stays gone after a restart"
    );
}

/// Compaction cleans only durable data: flush (as the broker's background flush of rolled segments does), then
/// compact.
fn compact_durable(log: &mut Log, now_ms: i64, stable_offset: i64) -> crate::Result<u64> {
    log.flush().unwrap();
    log.compact(now_ms, stable_offset)
}

/// [`compact_durable`], in its plan/run/finish steps.
fn plan_durable(log: &mut Log, now_ms: i64, stable_offset: i64) -> Option<crate::CompactionPlan> {
    log.flush().unwrap();
    log.plan_compaction(now_ms, stable_offset)
}

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 10_000,
        ..small_config()
    }
}

/// (offset, key, value) of every record.
fn read_kv(log: &Log) -> Vec<(i64, Option<String>, Option<String>)> {
    let r = log
        .read(log.log_start_offset(), usize::MAX / 2, i64::MAX, true)
        .unwrap();
    let mut b = r.records.clone();
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
        for r in set.records {
            let s = |b: Option<Bytes>| b.map(|v| String::from_utf8(v.to_vec()).unwrap());
            out.push((r.offset, s(r.key), s(r.value)));
        }
    }
    out
}

#[test]
fn compaction_keeps_the_last_value_per_key_with_offsets_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    let mut all = Vec::new();
    for round in 0..10 {
        for c in [Compression::None, Compression::Gzip] {
            let vals: Vec<String> = (0..4).map(|k| format!("r{round}-{k}")).collect();
            let keys = ["a", "b", "c", "d"];
            let recs: Vec<_> = (0..4)
                .map(|k| (Some(keys[k]), Some(vals[k].as_str()), NOW))
                .collect();
            let info = log.append(kv_batch(&recs, c), 0, NOW).unwrap();
            for k in 0..4 {
                all.push((
                    info.base_offset + k as i64,
                    keys[k].to_string(),
                    vals[k].clone(),
                ));
            }
        }
    }
    // A keyless record written before the topic became compacted is kept (a compacted log refuses new ones).
    log.set_config(small_config());
    log.append(
        kv_batch(&[(None, Some("nokey"), NOW)], Compression::None),
        0,
        NOW,
    )
    .unwrap();
    log.set_config(compact_config());
    let before_size = log.size_bytes();
    let leo = log.log_end_offset();
    let active_base = log.segments.last().unwrap().base_offset;
    let reclaimed = compact_durable(&mut log, NOW, i64::MAX).unwrap();
    assert!(reclaimed > 0);
    assert_eq!(log.size_bytes(), before_size - reclaimed);
    assert_eq!(log.log_end_offset(), leo);
    let after = read_kv(&log);
    // Every surviving record keeps its original offset and value.
    for (o, k, v) in &after {
        if let Some(k) = k {
            let orig = all.iter().find(|(oo, _, _)| oo == o).unwrap();
            assert_eq!((&orig.1, &orig.2), (k, v.as_ref().unwrap()));
        }
    }
    // In the cleaned (inactive) part, only the latest record per key survives.
    for key in ["a", "b", "c", "d"] {
        let latest_inactive = all
            .iter()
            .filter(|(o, k, _)| k == key && *o < active_base)
            .map(|(o, _, _)| *o)
            .max()
            .unwrap();
        let kept: Vec<i64> = after
            .iter()
            .filter(|(o, k, _)| k.as_deref() == Some(key) && *o < active_base)
            .map(|(o, _, _)| *o)
            .collect();
        assert_eq!(kept, vec![latest_inactive], "key {key}");
    }
    assert!(after
        .iter()
        .any(|(_, k, v)| k.is_none() && v.as_deref() == Some("nokey")));
    // Offsets strictly increase and the result survives a crash-reopen.
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
    drop(log);
    let log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    assert_eq!(read_kv(&log), after);
    assert_eq!(log.log_end_offset(), leo);
}

#[test]
fn compaction_drops_tombstones_only_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    log.append(
        kv_batch(
            &[(Some("k"), Some("v1"), NOW), (Some("j"), Some("keep"), NOW)],
            Compression::None,
        ),
        0,
        NOW,
    )
    .unwrap();
    log.append(
        kv_batch(&[(Some("k"), None, NOW)], Compression::Snappy),
        0,
        NOW,
    )
    .unwrap();
    // Roll so both are in inactive segments.
    for i in 0..12 {
        log.append(
            kv_batch(
                &[(Some("pad"), Some(&format!("{i:0>100}")), NOW)],
                Compression::None,
            ),
            0,
            NOW,
        )
        .unwrap();
    }
    assert!(log.segment_count() >= 2);
    compact_durable(&mut log, NOW + 5_000, i64::MAX).unwrap();
    let kv = read_kv(&log);
    assert!(
        !kv.iter()
            .any(|(_, k, v)| k.as_deref() == Some("k") && v.is_some()),
        "old value gone"
    );
    assert!(
        kv.iter()
            .any(|(o, k, v)| *o == 2 && k.as_deref() == Some("k") && v.is_none()),
        "tombstone kept: {kv:?}"
    );
    // Not yet: delete.retention.ms (10 s) counts from the first cleaning (NOW + 5 s), not the record's time.
    assert_eq!(log.compact(NOW + 10_001, i64::MAX).unwrap(), 0);
    // No new data, but the retained tombstone expires: compaction runs again and drops it.
    compact_durable(&mut log, NOW + 15_001, i64::MAX).unwrap();
    let kv = read_kv(&log);
    assert!(
        !kv.iter().any(|(_, k, _)| k.as_deref() == Some("k")),
        "{kv:?}"
    );
    assert!(kv
        .iter()
        .any(|(o, k, _)| *o == 1 && k.as_deref() == Some("j")));
}

#[test]
fn compaction_honours_dirty_ratio_and_compaction_lag() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        min_compaction_lag_ms: 60_000,
        ..compact_config()
    };
    let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
    for i in 0..20 {
        log.append(
            kv_batch(
                &[(Some("k"), Some(&format!("v{i:0>50}")), NOW)],
                Compression::None,
            ),
            0,
            NOW,
        )
        .unwrap();
    }
    assert_eq!(
        compact_durable(&mut log, NOW + 1000, i64::MAX).unwrap(),
        0,
        "records younger than the lag"
    );
    assert!(compact_durable(&mut log, NOW + 60_001, i64::MAX).unwrap() > 0);
    let mut cfg2 = cfg;
    cfg2.min_cleanable_dirty_ratio = 0.9;
    cfg2.min_compaction_lag_ms = 0;
    log.set_config(cfg2);
    log.append(
        kv_batch(&[(Some("k"), Some("x"), NOW)], Compression::None),
        0,
        NOW,
    )
    .unwrap();
    assert_eq!(
        compact_durable(&mut log, NOW + 60_002, i64::MAX).unwrap(),
        0,
        "mostly clean log is not worth cleaning"
    );
}

/// One transactional record of producer `pid`.
fn txn_record_batch(pid: i64, seq: i32, key: &str, value: &str) -> Bytes {
    let mut txn = record(Some(key), Some(value), NOW, 0);
    txn.transactional = true;
    txn.producer_id = pid;
    txn.producer_epoch = 0;
    txn.sequence = seq;
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&txn],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn fill(log: &mut Log, key: &str, n: usize) {
    for i in 0..n {
        log.append(
            kv_batch(
                &[(Some(key), Some(&format!("{i:0>100}")), NOW)],
                Compression::None,
            ),
            0,
            NOW,
        )
        .unwrap();
    }
}

#[test]
fn compaction_never_touches_segments_at_or_above_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    // An open transaction at offset 0 holds the LSO there: nothing may be cleaned, not even the plain
    // records after it whose key repeats.
    log.append(txn_record_batch(7, 0, "k", "txn"), 0, NOW)
        .unwrap();
    fill(&mut log, "k", 12);
    assert!(log.segment_count() > 2);
    assert_eq!(compact_durable(&mut log, NOW, 0).unwrap(), 0);
    let kv = read_kv(&log);
    assert_eq!(kv.len(), 13);
    assert_eq!(kv[0], (0, Some("k".into()), Some("txn".into())));
}

#[test]
fn compaction_drops_aborted_transactions_and_compacts_committed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    // Producer 7 aborts "a" (offset 0, marker 1); producer 8 commits "j" and "m" (2, 3, marker 4).
    log.append(txn_record_batch(7, 0, "a", "aborted"), 0, NOW)
        .unwrap();
    let abort = crate::control_batch(7, 0, crate::ControlType::Abort, 0, NOW);
    log.append(abort, 0, NOW).unwrap();
    log.add_aborted_txn(crate::AbortedTxn {
        producer_id: 7,
        first_offset: 0,
        last_offset: 1,
        last_stable_offset: 2,
    })
    .unwrap();
    log.append(txn_record_batch(8, 0, "j", "committed-old"), 0, NOW)
        .unwrap();
    log.append(txn_record_batch(8, 1, "m", "committed"), 0, NOW)
        .unwrap();
    let commit = crate::control_batch(8, 0, crate::ControlType::Commit, 0, NOW);
    log.append(commit, 0, NOW).unwrap();
    // A later plain "j" supersedes the committed one; filler rolls segments.
    fill(&mut log, "j", 12);
    let end = log.log_end_offset();
    assert!(compact_durable(&mut log, NOW, end).unwrap() > 0);
    let kv = read_kv(&log);
    let offsets: Vec<i64> = kv.iter().map(|(o, _, _)| *o).collect();
    assert!(
        !offsets.contains(&0),
        "the aborted record is gone: {offsets:?}"
    );
    assert!(
        offsets.contains(&1) && offsets.contains(&4),
        "markers stay: {offsets:?}"
    );
    assert!(
        !offsets.contains(&2),
        "the committed 'j' was superseded: {offsets:?}"
    );
    assert_eq!(
        kv.iter().find(|(o, _, _)| *o == 3).unwrap().2.as_deref(),
        Some("committed")
    );
    // The aborted range is still indexed (its marker is still there for clients to pair it with).
    assert_eq!(log.aborted_between(0, end).len(), 1);
    // Reopening finds consistent segments.
    log.close().unwrap();
    let log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    assert_eq!(read_kv(&log), kv);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    // Batch i holds records with timestamps 1000*i + {0, 10, 5} (not monotonic inside the batch).
    for i in 0..30i64 {
        let recs = [
            (None, Some("a"), 1000 * i),
            (None, Some("b"), 1000 * i + 10),
            (None, Some("c"), 1000 * i + 5),
        ];
        log.append(kv_batch(&recs, Compression::Lz4), 0, NOW)
            .unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
    assert_eq!(log.offset_for_timestamp(1).unwrap(), Some((1, 10)));
    assert_eq!(log.offset_for_timestamp(7001).unwrap(), Some((22, 7010)));
    assert_eq!(
        log.offset_for_timestamp(15_006).unwrap(),
        Some((46, 15_010))
    );
    assert_eq!(
        log.offset_for_timestamp(29_010).unwrap(),
        Some((88, 29_010))
    );
    assert_eq!(log.offset_for_timestamp(29_011).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((88, 29_010)));
    log.delete_records_before(50).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((50, 16_005)));
}

#[test]
fn max_timestamp_of_empty_log_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(log.max_timestamp(), None);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
}

#[test]
fn follower_append_keeps_leader_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Log::open(&dir.path().join("l"), LogConfig::default(), NOW).unwrap();
    let mut follower = Log::open(&dir.path().join("f"), LogConfig::default(), NOW).unwrap();
    leader.append(values_batch("a", 3, NOW), 5, NOW).unwrap();
    leader.append(values_batch("b", 2, NOW), 5, NOW).unwrap();
    let r = leader.read(0, 1 << 20, i64::MAX, true).unwrap();
    let info = follower.append_as_follower(r.records.clone()).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 4));
    assert_eq!(
        follower.read(0, 1 << 20, i64::MAX, true).unwrap().records,
        r.records
    );
    assert!(
        follower.append_as_follower(r.records).is_err(),
        "offsets below the log end are rejected"
    );
}

#[test]
fn delete_removes_the_partition_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("topic-0");
    let mut log = Log::open(&p, LogConfig::default(), NOW).unwrap();
    log.append(values_batch("a", 1, NOW), 0, NOW).unwrap();
    log.delete().unwrap();
    assert!(!p.exists());
}

#[test]
fn segment_file_names_are_twenty_digit_base_offsets() {
    assert_eq!(segment::file_stem(42), "00000000000000000042");
}

mod model {
    //! Random operation sequences against a Vec-of-batches model.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Append(Vec<u8>),
        Read(u16, u16),
        Truncate(u16),
        CloseReopen,
        CrashReopen,
        DeleteBefore(u16),
        Retention,
        /// Crash, then cut 1..=60 bytes off the active segment (inside its last batch) or append garbage.
        TornTail(u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => proptest::collection::vec(1u8..6, 1..4).prop_map(Op::Append),
            3 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Read(a, b)),
            1 => any::<u16>().prop_map(Op::Truncate),
            1 => Just(Op::CloseReopen),
            1 => Just(Op::CrashReopen),
            1 => any::<u16>().prop_map(Op::DeleteBefore),
            1 => Just(Op::Retention),
            1 => (1u8..=60, any::<bool>()).prop_map(|(c, g)| Op::TornTail(c, g)),
        ]
    }

    /// Model: batches as (base offset, values), plus log start and end.
    #[derive(Default)]
    struct Model {
        batches: Vec<(i64, Vec<String>)>,
        start: i64,
        end: i64,
    }

    impl Model {
        fn visible(&self, from: i64) -> Vec<(i64, Option<String>)> {
            self.batches
                .iter()
                .flat_map(|(b, vs)| {
                    vs.iter()
                        .enumerate()
                        .map(move |(i, v)| (b + i as i64, Some(v.clone())))
                })
                .filter(|(o, _)| *o >= from.max(self.start))
                .collect()
        }
    }

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 100,
            retention_bytes: 1200,
            retention_ms: -1,
            ..LogConfig::default()
        }
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(Log::open(dir.path(), cfg(), NOW).unwrap());
        let mut m = Model::default();
        let mut counter = 0;
        for op in ops {
            let l = log.as_mut().unwrap();
            match op {
                Op::Append(sizes) => {
                    let mut buf = BytesMut::new();
                    let mut batches = Vec::new();
                    for n in sizes {
                        let vals: Vec<String> = (0..n)
                            .map(|_| {
                                counter += 1;
                                format!("r{counter}")
                            })
                            .collect();
                        let recs: Vec<_> =
                            vals.iter().map(|v| (None, Some(v.as_str()), NOW)).collect();
                        buf.extend_from_slice(&kv_batch(&recs, Compression::None));
                        batches.push(vals);
                    }
                    let info = l.append(buf.freeze(), 1, NOW).unwrap();
                    prop_assert_eq!(info.base_offset, m.end);
                    for vals in batches {
                        let n = vals.len() as i64;
                        m.batches.push((m.end, vals));
                        m.end += n;
                    }
                    prop_assert_eq!(info.last_offset, m.end - 1);
                }
                Op::Read(a, max) => {
                    let span = (m.end - m.start + 1).max(1);
                    let from = m.start + i64::from(a) % span;
                    let max_offset = m.start + i64::from(max) % (span + 1);
                    let r = l.read(from, 1 << 20, i64::MAX, true).unwrap();
                    let got: Vec<_> = decode(&r.records)
                        .into_iter()
                        .filter(|(o, _)| *o >= from)
                        .collect();
                    prop_assert_eq!(got, m.visible(from));
                    // Bounded read: a prefix of whole batches below max_offset.
                    let r = l.read(from, 1 << 20, max_offset, false).unwrap();
                    let got: Vec<_> = decode(&r.records)
                        .into_iter()
                        .filter(|(o, _)| *o >= from)
                        .collect();
                    prop_assert!(got.iter().all(|(o, _)| *o < max_offset));
                    prop_assert_eq!(r.log_end_offset, m.end);
                    prop_assert!(l.read(m.end + 1, 10, i64::MAX, true).is_err());
                }
                Op::Truncate(a) => {
                    let span = (m.end - m.start + 1).max(1);
                    let to = m.start + i64::from(a) % span;
                    l.truncate_to(to).unwrap();
                    if to < m.end {
                        let new_end = m
                            .batches
                            .iter()
                            .find(|(b, vs)| b + vs.len() as i64 > to)
                            .map(|(b, _)| *b)
                            .unwrap();
                        if new_end < m.start {
                            m.batches.clear();
                            m.end = m.start;
                        } else {
                            m.batches.retain(|(b, _)| *b < new_end);
                            m.end = new_end;
                        }
                    }
                }
                Op::CloseReopen => {
                    log.take().unwrap().close().unwrap();
                    log = Some(Log::open(dir.path(), cfg(), NOW).unwrap());
                }
                Op::CrashReopen => {
                    drop(log.take());
                    log = Some(Log::open(dir.path(), cfg(), NOW).unwrap());
                }
                Op::TornTail(cut, garbage) => {
                    drop(log.take());
                    let active = log_files(dir.path(), "log").pop().unwrap();
                    let len = fs::metadata(&active).unwrap().len();
                    if garbage {
                        let mut f = fs::OpenOptions::new().append(true).open(&active).unwrap();
                        std::io::Write::write_all(&mut f, &vec![cut; usize::from(cut)]).unwrap();
                    } else if len > 0 {
                        let f = fs::OpenOptions::new().write(true).open(&active).unwrap();
                        f.set_len(len - u64::from(cut)).unwrap();
                        let (base, _) = m.batches.pop().unwrap();
                        if base < m.start {
                            m.batches.clear();
                            m.end = m.start;
                        } else {
                            m.end = base;
                        }
                    }
                    log = Some(Log::open(dir.path(), cfg(), NOW).unwrap());
                }
                Op::DeleteBefore(a) => {
                    let span = (m.end - m.start + 1).max(1);
                    let to = m.start + i64::from(a) % span;
                    prop_assert_eq!(l.delete_records_before(to).unwrap(), to);
                    m.start = to;
                }
                Op::Retention => {
                    l.enforce_retention(NOW).unwrap();
                    prop_assert!(l.size_bytes() <= 1200 + 400);
                    prop_assert!(l.log_start_offset() >= m.start);
                    m.start = l.log_start_offset();
                }
            }
            let l = log.as_ref().unwrap();
            prop_assert_eq!(l.log_end_offset(), m.end);
            prop_assert_eq!(l.log_start_offset(), m.start);
        }
        let l = log.as_ref().unwrap();
        prop_assert_eq!(read_all(l, m.start), m.visible(m.start));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(std::env::var("FJORD_LOG_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48)))]
        #[test]
        fn log_matches_model_under_random_operations(ops in proptest::collection::vec(op(), 1..40)) {
            run(ops)?;
        }
    }
}

#[test]
fn batch_headers_walks_batches_without_checking_them() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&values_batch("a", 3, 1));
    buf.extend_from_slice(&values_batch("b", 2, 1));
    let whole = buf.freeze();
    let counts: Vec<i32> = crate::batch_headers(&whole)
        .map(|b| b.record_count)
        .collect();
    assert_eq!(counts, vec![3, 2]);
    // A cut-off second batch is still listed (its header is complete); a cut-off header ends the walk.
    let first = crate::batch_headers(&whole).next().unwrap().size;
    assert_eq!(crate::batch_headers(&whole[..first + 70]).count(), 2);
    assert_eq!(crate::batch_headers(&whole[..first + 10]).count(), 1);
    assert_eq!(crate::batch_headers(&[0u8; 5]).count(), 0);
    assert_eq!(
        crate::batch_headers(&[0u8; 100]).count(),
        0,
        "zero length ends the walk"
    );
}

fn aborted(pid: i64, first: i64, last: i64, lso: i64) -> crate::AbortedTxn {
    crate::AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

#[test]
fn aborted_transactions_live_in_the_txnindex_of_their_marker_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..60 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    assert!(log.segment_count() > 3);
    // Transaction 7 has records 2..10 and its marker at 10; transaction 8 spans segments: 4..40, marker 40.
    let a = aborted(7, 2, 10, 4);
    let b = aborted(8, 4, 40, 41);
    log.add_aborted_txn(a).unwrap();
    log.add_aborted_txn(b).unwrap();
    assert_eq!(log.aborted_between(0, 60), vec![a, b]);
    assert_eq!(log.aborted_between(11, 60), vec![b], "a ended before 11");
    assert_eq!(log.aborted_between(0, 3), vec![a], "b starts at 4");
    assert_eq!(log.aborted_between(41, 60), vec![]);
    let files = log_files(dir.path(), "txnindex");
    assert_eq!(files.len(), 2, "one file per marker segment: {files:?}");
    assert_eq!(
        fs::metadata(&files[0]).unwrap().len(),
        34,
        "Kafka's entry size"
    );

    // Both survive a clean reopen and a crash (the files are read back).
    log.close().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(log.aborted_between(0, 60), vec![a, b]);
    log.sync_txn_indexes().unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(log.aborted_between(0, 60), vec![a, b]);

    // Entries at or after a point can be dropped (the broker re-adds them from its scan) ...
    log.truncate_aborted_from(20).unwrap();
    assert_eq!(log.aborted_between(0, 60), vec![a]);
    log.add_aborted_txn(b).unwrap();
    // ... truncation of the log drops the entries whose marker is cut ...
    log.truncate_to(30).unwrap();
    assert_eq!(log.aborted_between(0, 60), vec![a]);
    // ... and retention deletes them with their segment.
    let cfg = LogConfig {
        retention_ms: 1000,
        ..small_config()
    };
    log.set_config(cfg);
    for i in 0..10 {
        log.append(
            values_batch(&i.to_string(), 2, NOW + 10_000),
            0,
            NOW + 10_000,
        )
        .unwrap();
    }
    log.enforce_retention(NOW + 5_000).unwrap();
    assert!(log.log_start_offset() > 10);
    assert_eq!(log.aborted_between(0, 100), vec![]);
    assert_eq!(log_files(dir.path(), "txnindex").len(), 0);
}

#[test]
fn aborted_lookup_stops_once_every_earlier_transaction_had_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..10 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    // The second entry's LSO (12) is past the fetch's end (10): nothing after it can overlap 0..10, so an
    // entry that (inconsistently) claims to would not be reported.
    log.add_aborted_txn(aborted(1, 0, 5, 6)).unwrap();
    log.add_aborted_txn(aborted(2, 6, 11, 12)).unwrap();
    log.add_aborted_txn(aborted(3, 1, 15, 16)).unwrap();
    let pids: Vec<i64> = log
        .aborted_between(0, 10)
        .iter()
        .map(|a| a.producer_id)
        .collect();
    assert_eq!(pids, vec![1, 2]);
}

#[test]
fn compaction_runs_beside_appends_and_retention_without_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    fill(&mut log, "k", 12);
    let plan = plan_durable(&mut log, NOW, i64::MAX).expect("dirty enough");
    // While the pass runs (without the log), appends go on and roll new segments.
    fill(&mut log, "other", 12);
    let leo = log.log_end_offset();
    let result = plan.run().unwrap();
    assert!(log.finish_compaction(result).unwrap() > 0);
    let kv = read_kv(&log);
    let ks: Vec<&str> = kv.iter().map(|(_, k, _)| k.as_deref().unwrap()).collect();
    assert_eq!(
        ks.iter().filter(|k| **k == "other").count(),
        12,
        "appends made meanwhile are intact"
    );
    assert!(
        ks.iter().filter(|k| **k == "k").count() < 12,
        "the planned segments were cleaned"
    );
    assert_eq!(log.log_end_offset(), leo);
    assert!(log_files(dir.path(), "cleaned").is_empty());

    // Retention deleting the planned segments meanwhile: their cleaned copies are discarded.
    fill(&mut log, "k", 12);
    let plan = plan_durable(&mut log, NOW, i64::MAX).expect("dirty again");
    log.set_config(LogConfig {
        retention_ms: -1,
        retention_bytes: 1,
        cleanup_delete: true,
        ..compact_config()
    });
    assert!(log.enforce_retention(NOW + 10_000).unwrap() > 0);
    let start = log.log_start_offset();
    let result = plan.run().unwrap();
    log.finish_compaction(result).unwrap();
    assert!(
        log_files(dir.path(), "cleaned").is_empty(),
        "no cleaned copy left behind"
    );
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), leo + 12);
    log.close().unwrap();
    let log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    assert_eq!(log.log_end_offset(), leo + 12);
}

/// Producer 8 commits "j" (0, marker 1) and "m" (2, marker 3); producer 9 aborts "a" (4, marker 5); then
/// plain "j" records supersede the first transaction's only record.
fn transactions_then_superseding_records(dir: &Path) -> Log {
    let mut log = Log::open(dir, compact_config(), NOW).unwrap();
    let commit = |pid| crate::control_batch(pid, 0, crate::ControlType::Commit, 0, NOW);
    log.append(txn_record_batch(8, 0, "j", "old"), 0, NOW)
        .unwrap();
    log.append(commit(8), 0, NOW).unwrap();
    log.append(txn_record_batch(8, 1, "m", "kept"), 0, NOW)
        .unwrap();
    log.append(commit(8), 0, NOW).unwrap();
    log.append(txn_record_batch(9, 0, "a", "aborted"), 0, NOW)
        .unwrap();
    let abort = crate::control_batch(9, 0, crate::ControlType::Abort, 0, NOW);
    log.append(abort, 0, NOW).unwrap();
    log.add_aborted_txn(crate::AbortedTxn {
        producer_id: 9,
        first_offset: 4,
        last_offset: 5,
        last_stable_offset: 6,
    })
    .unwrap();
    fill(&mut log, "j", 12);
    log
}

fn offsets(log: &Log) -> Vec<i64> {
    read_kv(log).iter().map(|(o, _, _)| *o).collect()
}

#[test]
fn commit_markers_of_emptied_transactions_go_only_below_the_allowed_offset() {
    // Without permission every marker stays.
    let dir = tempfile::tempdir().unwrap();
    let mut log = transactions_then_superseding_records(dir.path());
    let end = log.log_end_offset();
    compact_durable(&mut log, NOW, end).unwrap();
    let kept = offsets(&log);
    assert!(
        kept.contains(&1) && kept.contains(&3) && kept.contains(&5),
        "{kept:?}"
    );
    assert!(!kept.contains(&0) && !kept.contains(&4), "{kept:?}");

    // With it, the marker of the transaction that kept nothing goes; the others stay.
    let dir = tempfile::tempdir().unwrap();
    let mut log = transactions_then_superseding_records(dir.path());
    let end = log.log_end_offset();
    let mut plan = plan_durable(&mut log, NOW, end).unwrap();
    plan.remove_empty_commit_markers_below(end);
    let result = plan.run().unwrap();
    log.finish_compaction(result).unwrap();
    let kept = offsets(&log);
    assert!(
        !kept.contains(&0) && !kept.contains(&1),
        "emptied transaction and its marker: {kept:?}"
    );
    assert!(
        kept.contains(&2) && kept.contains(&3),
        "a transaction that kept data keeps its marker: {kept:?}"
    );
    assert!(kept.contains(&5), "abort markers stay: {kept:?}");

    // Below a lower horizon the marker at 1 stays.
    let dir = tempfile::tempdir().unwrap();
    let mut log = transactions_then_superseding_records(dir.path());
    let end = log.log_end_offset();
    let mut plan = plan_durable(&mut log, NOW, end).unwrap();
    plan.remove_empty_commit_markers_below(1);
    log.finish_compaction(plan.run().unwrap()).unwrap();
    assert!(offsets(&log).contains(&1));
}

#[test]
fn leader_epochs_are_recorded_persisted_truncated_and_rebuilt_when_the_checkpoint_is_lost() {
    let tiny = LogConfig {
        segment_bytes: 300,
        ..small_config()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), tiny.clone(), NOW).unwrap();
    assert_eq!(log.end_offset_for_epoch(0), (-1, -1), "no epoch yet");
    for (i, epoch) in [0, 0, 0, 3, 3, 5, 5, 5].into_iter().enumerate() {
        log.append(values_batch(&i.to_string(), 10, NOW), epoch, NOW)
            .unwrap();
    }
    assert!(log.segment_count() > 2, "epochs span several segments");
    assert_eq!(log.leader_epochs(), &[(0, 0), (3, 30), (5, 50)]);
    assert_eq!(log.end_offset_for_epoch(0), (0, 30));
    assert_eq!(log.end_offset_for_epoch(4), (3, 50));
    assert_eq!(log.end_offset_for_epoch(5), (5, 80));
    assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
    // An older epoch writing after a newer one is not a new entry.
    log.append(values_batch("old", 1, NOW), 4, NOW).unwrap();
    assert_eq!(log.leader_epochs().len(), 3);
    let checkpoint = dir.path().join("leader-epoch-checkpoint");
    assert_eq!(
        std::fs::read_to_string(&checkpoint).unwrap(),
        "0\n3\n0 0\n3 30\n5 50\n"
    );

    // A follower truncating back into epoch 3 forgets epoch 5.
    log.truncate_to(45).unwrap();
    assert_eq!(log.leader_epochs(), &[(0, 0), (3, 30)]);
    assert_eq!(
        log.end_offset_for_epoch(3),
        (3, 40),
        "truncation is at a batch boundary"
    );
    log.delete_records_before(35).unwrap();
    assert_eq!(log.leader_epochs(), &[(3, 35)]);
    log.close().unwrap();
    let log = Log::open(dir.path(), tiny.clone(), NOW).unwrap();
    assert_eq!(log.leader_epochs(), &[(3, 35)], "persisted");
    log.close().unwrap();

    // A lost (or damaged) checkpoint is rebuilt from the batches' own epochs.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), tiny.clone(), NOW).unwrap();
    for (i, epoch) in [1, 1, 2, 2, 7].into_iter().enumerate() {
        log.append(values_batch(&i.to_string(), 10, NOW), epoch, NOW)
            .unwrap();
    }
    log.close().unwrap();
    let checkpoint = dir.path().join("leader-epoch-checkpoint");
    for damage in [None, Some("0\n1\n9 x\n")] {
        match damage {
            None => std::fs::remove_file(&checkpoint).unwrap(),
            Some(text) => std::fs::write(&checkpoint, text).unwrap(),
        }
        let log = Log::open(dir.path(), tiny.clone(), NOW).unwrap();
        assert_eq!(log.leader_epochs(), &[(1, 0), (2, 20), (7, 40)]);
        log.close().unwrap();
    }
}

#[test]
fn a_compacted_log_refuses_keyless_records_naming_each_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compact_config(), NOW).unwrap();
    for c in [Compression::None, Compression::Gzip] {
        let recs: Vec<(Option<&str>, Option<&str>, i64)> = (0..6)
            .map(|i| (if i % 3 == 0 { None } else { Some("k") }, Some("v"), NOW))
            .collect();
        match log.append(kv_batch(&recs, c), 0, NOW) {
            Err(Error::RecordErrors { errors, message }) => {
                let indexes: Vec<i32> = errors.iter().map(|(i, _)| *i).collect();
                assert_eq!(indexes, vec![0, 3], "{c:?}");
                assert!(errors[0].1.contains("without key"), "{}", errors[0].1);
                assert!(message.contains("2 record errors"), "{message}");
            }
            other => panic!("{c:?}: keyless records accepted: {other:?}"),
        }
        assert_eq!(log.log_end_offset(), 0, "nothing appended, no offset burnt");
    }
    // Keyed records (and tombstones) are accepted; a log that is not compacted takes keyless ones.
    log.append(
        kv_batch(&[(Some("k"), None, NOW)], Compression::None),
        0,
        NOW,
    )
    .unwrap();
    log.set_config(small_config());
    log.append(values_batch("x", 3, NOW), 0, NOW).unwrap();
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn a_topic_codec_recompresses_other_codecs_and_keeps_records_and_producer_fields() {
    let idempotent = |n: usize, c: Compression| {
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                producer_id: 7,
                producer_epoch: 2,
                sequence: 10 + i as i32,
                offset: i as i64,
                headers: [("h".into(), Some(Bytes::from_static(b"hv")))]
                    .into_iter()
                    .collect(),
                ..record(Some("k"), Some(&format!("value-{i}")), NOW + i as i64, i)
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression: c,
            },
        )
        .unwrap();
        buf.freeze()
    };
    for (target, sent) in [
        (Compression::Gzip, Compression::Lz4),
        (Compression::None, Compression::Zstd),
        (Compression::Zstd, Compression::None),
        (Compression::Snappy, Compression::Gzip),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            compression: Some(target),
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), cfg, NOW).unwrap();
        log.append(idempotent(5, sent), 0, NOW).unwrap();
        // A batch already in the topic's codec is stored as sent.
        let same = idempotent(3, target);
        let info = log.append(same.clone(), 0, NOW).unwrap();
        assert_eq!(info.base_offset, 5);
        let r = log.read(0, usize::MAX / 2, i64::MAX, true).unwrap();
        let mut b = r.records.clone();
        let sets = RecordBatchDecoder::decode_all(&mut b).unwrap();
        assert_eq!(sets.len(), 2, "one batch per batch sent ({target:?})");
        for (set, n) in sets.iter().zip([5usize, 3]) {
            assert_eq!(set.compression, target, "stored in the topic's codec");
            assert_eq!(set.records.len(), n);
            for (i, rec) in set.records.iter().enumerate() {
                assert_eq!(
                    (rec.producer_id, rec.producer_epoch, rec.sequence),
                    (7, 2, 10 + i as i32)
                );
                assert_eq!(rec.value.as_deref(), Some(format!("value-{i}").as_bytes()));
                assert_eq!(rec.timestamp, NOW + i as i64);
                assert_eq!(rec.headers.len(), 1);
            }
        }
        // Offsets are contiguous across the recompressed batch and the one kept as sent.
        let offsets: Vec<i64> = sets
            .iter()
            .flat_map(|s| s.records.iter().map(|r| r.offset))
            .collect();
        assert_eq!(offsets, (0..8).collect::<Vec<_>>());
        // The kept batch's bytes after its header are the client's (no copy through a codec).
        let stored = &r.records[r.records.len() - same.len()..];
        assert_eq!(&stored[61..], &same[61..], "{target:?}");
    }
}
