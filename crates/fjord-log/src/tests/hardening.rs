//! Tests for the storage-hardening defects of issue #9: hostile batch headers, recovery that must never discard
//! what was acknowledged, and I/O errors.

use super::*;

const RECORD_COUNT_POS: usize = 57;
const LAST_OFFSET_DELTA_POS: usize = 23;

/// Rewrites a batch's record count and last offset delta (the header claims), recomputing the CRC as an
/// attacker would.
fn forge_count(batch: &Bytes, count: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&count.to_be_bytes());
    b[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4].copy_from_slice(&(count - 1).to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[test]
fn a_batch_claiming_more_records_than_it_holds_is_refused_for_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let honest = kv_batch(&[(Some("k"), Some("v"), NOW)], c);
        for count in [2, 1000, i32::MAX] {
            let err = log.append(forge_count(&honest, count), 0, NOW).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidRecord(m) if m.contains("declares")),
                "{c:?} count {count}: {err}"
            );
        }
        // Claiming fewer records than it holds is refused too.
        let two = kv_batch(
            &[(Some("a"), Some("1"), NOW), (Some("b"), Some("2"), NOW)],
            c,
        );
        let err = log.append(forge_count(&two, 1), 0, NOW).unwrap_err();
        assert!(matches!(&err, Error::InvalidRecord(_)), "{c:?}: {err}");
    }
    assert_eq!(log.log_end_offset(), 0, "nothing was appended");
}

#[test]
fn forged_record_counts_cannot_make_recovery_drop_acknowledged_data() {
    // The reproduction from the issue: two tiny batches claiming 2^31-1 records each, in one request, used to be
    // accepted into one segment; the next open cut the log there and deleted the later segments holding other
    // producers' acks=all data, then handed their offsets out again.
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
    log.append(values_batch("before", 3, NOW), 0, NOW).unwrap();
    let forged = forge_count(&values_batch("x", 1, NOW), i32::MAX);
    let mut request = BytesMut::new();
    request.extend_from_slice(&forged);
    request.extend_from_slice(&forged);
    assert!(log.append(request.freeze(), 0, NOW).is_err());
    for i in 0..30 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    log.flush().unwrap(); // acks=all
    let acked = read_all(&log, 0);
    let end = log.log_end_offset();
    drop(log); // crash
    let log = Log::open(dir.path(), cfg, NOW).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log, 0), acked);
}

#[test]
fn batches_whose_offsets_do_not_fit_one_segment_are_written_to_separate_segments() {
    // Defence in depth below validation: even batches with spans near 2^31 each (possible only through a path
    // that skips the record walk) are split over segments so every relative offset fits the index format.
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    log.append(values_batch("a", 1, NOW), 0, NOW).unwrap();
    let forged = forge_count(&values_batch("x", 1, NOW), i32::MAX);
    let mut buf = BytesMut::new();
    let mut headers = Vec::new();
    let mut next = log.log_end_offset();
    for _ in 0..2 {
        let pos = buf.len();
        buf.extend_from_slice(&forged);
        buf[pos..pos + 8].copy_from_slice(&next.to_be_bytes());
        let h = crate::batch::check_stored(&buf[pos..]).unwrap();
        headers.push((pos, h));
        next = h.last_offset() + 1;
    }
    log.write_batches(&buf.freeze(), &headers, NOW).unwrap();
    assert_eq!(log.log_end_offset(), next);
    assert_eq!(
        log.segment_count(),
        2,
        "the first batch still fits the first segment, the second needs a roll"
    );
    for s in &log.segments {
        assert!(s.next_offset - 1 - s.base_offset <= i64::from(i32::MAX));
    }
    log.append(values_batch("b", 1, NOW), 0, NOW).unwrap();
    let end = log.log_end_offset();
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(log.log_end_offset(), end, "recovery keeps every segment");
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn a_header_max_timestamp_is_replaced_by_the_records_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    let mut b = values_batch("a", 2, NOW).to_vec();
    // Claim a max timestamp ten years ahead; the records themselves say NOW.
    let forged_ts = NOW + 10 * 365 * 86_400_000;
    b[35..43].copy_from_slice(&forged_ts.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let info = log.append(Bytes::from(b), 0, NOW).unwrap();
    assert_eq!(info.max_timestamp, NOW);
    assert_eq!(log.max_timestamp(), Some((0, NOW)), "(offset, timestamp)");
}

#[test]
fn records_far_in_the_future_or_too_old_are_refused_with_invalid_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        timestamp_before_max_ms: 86_400_000,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg, NOW).unwrap();
    let hour = 3_600_000;
    let future = kv_batch(
        &[
            (None, Some("ok"), NOW),
            (None, Some("later"), NOW + hour + 1),
        ],
        Compression::Lz4,
    );
    let err = log.append(future, 0, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTimestamp(m) if m.contains("message.timestamp.after.max.ms")),
        "{err}"
    );
    let old = kv_batch(&[(None, Some("old"), NOW - 86_400_001)], Compression::None);
    assert!(matches!(
        log.append(old, 0, NOW),
        Err(Error::InvalidTimestamp(_))
    ));
    let edge = kv_batch(
        &[
            (None, Some("a"), NOW + hour),
            (None, Some("b"), NOW - 86_400_000),
            (None, Some("c"), -1),
        ],
        Compression::None,
    );
    assert_eq!(log.append(edge, 0, NOW).unwrap().last_offset, 2);
    // LogAppendTime topics ignore the producer's clock entirely.
    let mut lat = Log::open(
        &dir.path().join("lat"),
        LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        },
        NOW,
    )
    .unwrap();
    let far = kv_batch(&[(None, Some("x"), NOW + 100 * hour)], Compression::None);
    assert_eq!(lat.append(far, 0, NOW).unwrap().log_append_time, NOW);
}

fn recovery_point(dir: &Path) -> Option<i64> {
    fs::read_to_string(dir.join(crate::log::RECOVERY_POINT_FILE))
        .ok()
        .map(|s| s.trim().parse().unwrap())
}

#[test]
fn damage_inside_data_known_durable_is_reported_and_never_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    for i in 0..30 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    log.flush().unwrap(); // acks=all: everything acknowledged
    let active_base = log.active_base_offset();
    assert_eq!(
        recovery_point(dir.path()),
        Some(active_base),
        "the flush that made the rolled segments durable recorded it"
    );
    drop(log); // crash
    let segs = log_files(dir.path(), "log");
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let mut data = fs::read(victim).unwrap();
    let n = data.len();
    data[n - 3] ^= 0xFF;
    fs::write(victim, &data).unwrap();
    let sizes: Vec<u64> = segs
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect();

    let err = match Log::open(dir.path(), small_config(), NOW) {
        Err(e) => e,
        Ok(_) => panic!("a damaged durable segment must not open"),
    };
    assert!(
        matches!(&err, Error::Damaged(m) if m.contains("not truncated")),
        "{err}"
    );
    assert!(err.is_storage_error());
    let after: Vec<u64> = log_files(dir.path(), "log")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(after, sizes, "no segment was cut or deleted");
}

#[test]
fn unflushed_segments_are_fully_revalidated_not_only_after_their_last_index_entry() {
    // Before the recovery point existed, segments other than the active one only had the batches after their
    // last index entry checked, so damage earlier in a segment that was never fsynced went unnoticed and was
    // served.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
    let b = values_batch("x", 2, NOW);
    while log.segment_count() < 3 {
        log.append(b.clone(), 0, NOW).unwrap();
    }
    drop(log); // crash without any flush: acks=1 data only
    let first = log_files(dir.path(), "log").remove(0);
    let mut data = fs::read(&first).unwrap();
    data[b.len() * 2 + 70] ^= 0xFF; // the third batch, long before the segment's last index entry
    fs::write(&first, &data).unwrap();
    let log = Log::open(dir.path(), cfg, NOW).unwrap();
    assert_eq!(log.log_end_offset(), 4, "cut at the damaged batch");
    assert_eq!(
        log.segment_count(),
        1,
        "the never-fsynced segments after it are gone"
    );
    assert_eq!(
        recovery_point(dir.path()),
        Some(4),
        "what recovery kept was fsynced"
    );
}

#[test]
fn the_recovery_point_moves_once_per_roll_and_reaches_the_end_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    log.append(values_batch("a", 2, NOW), 0, NOW).unwrap();
    log.flush().unwrap();
    assert_eq!(recovery_point(dir.path()).unwrap_or(0), 0, "no roll yet");
    for i in 0..20 {
        log.append(values_batch(&i.to_string(), 2, NOW), 0, NOW)
            .unwrap();
    }
    let h = log.flush_handle().unwrap();
    assert!(h.recovery_point.is_some());
    h.sync().unwrap();
    assert!(log.mark_synced(&h).unwrap());
    assert_eq!(recovery_point(dir.path()), Some(log.active_base_offset()));
    log.append(values_batch("b", 1, NOW), 0, NOW).unwrap();
    assert!(
        log.flush_handle().unwrap().recovery_point.is_none(),
        "no roll since: nothing to rewrite"
    );
    let end = log.log_end_offset();
    log.close().unwrap();
    assert_eq!(recovery_point(dir.path()), Some(end));
}

#[test]
fn a_failed_fsync_takes_the_log_offline_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), NOW).unwrap();
    log.append(values_batch("a", 2, NOW), 0, NOW).unwrap();
    log.mark_failed("fsync failed: Input/output error");
    let err = log.append(values_batch("b", 1, NOW), 0, NOW).unwrap_err();
    assert!(
        matches!(&err, Error::Damaged(m) if m.contains("offline")),
        "{err}"
    );
    assert!(
        log.flush_handle().is_err(),
        "no fsync is retried into success"
    );
    assert!(log.flush().is_err());
    assert!(
        log.close().is_err(),
        "no clean-shutdown marker for a failed log"
    );
    assert!(!dir.path().join(crate::log::CLEAN_SHUTDOWN_FILE).exists());
    let log = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(
        log.log_end_offset(),
        2,
        "recovery keeps what the disk holds"
    );
}

#[test]
fn tombstones_expire_by_the_cleaners_clock_not_the_producers_timestamp() {
    // delete.retention.ms used to count from the tombstone's own timestamp: a producer clock in the past made
    // a deletion vanish at the first cleaning (consumers that were behind never saw it), one in the future kept
    // it for as long as the clock was ahead.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1024,
        cleanup_compact: true,
        cleanup_delete: false,
        delete_retention_ms: 10_000,
        min_cleanable_dirty_ratio: 0.01,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
    let day = 86_400_000;
    log.append(
        kv_batch(
            &[
                (Some("past"), Some("v"), NOW),
                (Some("future"), Some("v"), NOW),
            ],
            Compression::None,
        ),
        0,
        NOW,
    )
    .unwrap();
    log.append(
        kv_batch(&[(Some("past"), None, NOW - 30 * day)], Compression::None),
        0,
        NOW,
    )
    .unwrap();
    log.append(
        kv_batch(
            &[(Some("future"), None, NOW + 3_000_000)],
            Compression::None,
        ),
        0,
        NOW,
    )
    .unwrap();
    while log.segment_count() < 3 {
        log.append(
            kv_batch(
                &[(Some("pad"), Some(&"p".repeat(100)), NOW)],
                Compression::None,
            ),
            0,
            NOW,
        )
        .unwrap();
    }
    log.flush().unwrap();
    let tombstones = |log: &Log| -> Vec<String> {
        read_kv(log)
            .into_iter()
            .filter(|(_, _, v)| v.is_none())
            .filter_map(|(_, k, _)| k)
            .collect()
    };
    log.compact(NOW + 1_000, i64::MAX).unwrap();
    assert_eq!(
        tombstones(&log),
        ["past", "future"],
        "both kept at their first cleaning"
    );
    drop(log);
    // The first-cleaning time survives a restart.
    let mut log = Log::open(dir.path(), cfg, NOW + 2_000).unwrap();
    log.compact(NOW + 10_000, i64::MAX).unwrap();
    assert_eq!(
        tombstones(&log),
        ["past", "future"],
        "9 s after the first cleaning: kept"
    );
    log.compact(NOW + 11_001, i64::MAX).unwrap();
    assert!(
        tombstones(&log).is_empty(),
        "10 s after it: both gone, whatever their timestamps"
    );
}

#[test]
fn an_idle_log_keeps_one_open_file_per_segment() {
    // Each segment used to keep its log, offset index and time index open for good: 10,000 partitions needed
    // 30,000 descriptors, past common open-file limits (an EMFILE then takes the log directory offline).
    let sim = crate::sim::SimStorage::new(1);
    let storage: std::sync::Arc<dyn crate::storage::Storage> = std::sync::Arc::new(sim.clone());
    let dir = Path::new("/data/t-0");
    let cfg = LogConfig {
        index_interval_bytes: 64,
        ..small_config()
    };
    let mut log = Log::open_with(storage.clone(), dir, cfg.clone(), NOW).unwrap();
    for i in 0..40 {
        log.append(values_batch(&i.to_string(), 3, NOW), 0, NOW)
            .unwrap();
    }
    let segments = log.segment_count() as u64;
    assert!(segments >= 4);
    log.flush().unwrap();
    // Rolled and durable: only their log files stay open; the active segment may keep its indexes open.
    assert!(
        sim.stats().open_handles <= segments + 2,
        "{} handles for {segments} segments",
        sim.stats().open_handles
    );
    log.close().unwrap();
    assert_eq!(sim.stats().open_handles, 0, "close releases everything");
    let log = Log::open_with(storage.clone(), dir, cfg.clone(), NOW).unwrap();
    assert_eq!(
        sim.stats().open_handles,
        segments,
        "after a clean start: one per segment"
    );
    drop(log);
    sim.process_crash();
    let mut log = Log::open_with(storage, dir, cfg, NOW).unwrap();
    assert_eq!(sim.stats().open_handles, segments, "after recovery too");
    // Indexes reopen when written again.
    for i in 0..10 {
        log.append(values_batch(&format!("more{i}"), 3, NOW), 0, NOW)
            .unwrap();
    }
    assert_eq!(read_all(&log, 0).len(), 150);
}

/// Concurrent flushes of one log (an acks=all producer's group commit, the background flush of rolled segments,
/// a producer snapshot's flush) each used to write `recovery-point` through the same temporary file outside the
/// log's lock: one rename then failed with "not found" and took the whole log directory offline (seen in the
/// retention e2e test under load). The recovery point is now written by `mark_synced`, under the lock.
#[test]
fn concurrent_flushes_never_fail_on_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 200,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let log = std::sync::Arc::new(std::sync::Mutex::new(
        Log::open(dir.path(), cfg, NOW).unwrap(),
    ));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..150 {
                    let handle = {
                        let mut l = log.lock().unwrap();
                        l.append(values_batch(&format!("{t}-{i}"), 3, NOW), 0, NOW)
                            .unwrap();
                        l.flush_handle().unwrap()
                    };
                    handle.sync().unwrap();
                    assert!(log.lock().unwrap().mark_synced(&handle).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no flush failed");
    }
    let l = log.lock().unwrap();
    assert_eq!(l.log_end_offset(), 4 * 150 * 3);
    assert_eq!(recovery_point(dir.path()), Some(l.active_base_offset()));
}
