//! The partition log: an ordered list of segments, the log start offset, and flush bookkeeping.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{
    self, BatchInfo, Header, CRC_POS, LEADER_EPOCH_POS, MAX_TIMESTAMP_POS, TIMESTAMP_TYPE_BIT,
};
use crate::config::{LogConfig, TimestampType};
use crate::epoch_cache::EpochCache;
use crate::segment::{self, OpenMode, Segment};
use crate::storage::{self as st, Disk, FileHandle, Storage};
use crate::txn_index::AbortedTxn;
use crate::{Error, Result};

/// Marker written by `close()`; its presence on open means the indexes and segment tails can be trusted.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
/// Persisted log start offset (decimal), replaced atomically via rename.
pub(crate) const LOG_START_FILE: &str = "log-start-offset";
/// Persisted recovery point (decimal): every segment wholly below this offset is known to be durable (its data
/// fsynced, its directory entry too). Recovery trusts those and re-validates everything after it.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Persisted compaction state: "<first dirty offset> <earliest retained tombstone timestamp or -1>".
pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Facts about one append.
#[derive(Clone, Debug)]
pub struct AppendInfo {
    /// Offset assigned to the first record.
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless `timestamp_type == LogAppendTime`.
    pub log_append_time: i64,
    pub max_timestamp: i64,
    pub log_start_offset: i64,
    /// The appended batches with their assigned offsets.
    pub batches: Vec<BatchInfo>,
    /// The leader epoch the batches were written in (the last batch's, for a follower's append). With the
    /// offsets it identifies the write: if the log later holds another epoch's data there, the write was
    /// truncated away.
    pub leader_epoch: i32,
}

/// Result of a read.
#[derive(Clone, Debug)]
pub struct ReadInfo {
    /// Whole batches, exactly as stored (possibly empty).
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// Everything needed to fsync outside the Log's mutex (group commit).
///
/// The broker takes a handle under the mutex, releases the mutex, calls [`FlushHandle::sync`] (blocking), then
/// retakes the mutex and calls [`Log::mark_flushed`] with [`FlushHandle::flush_to`].
pub struct FlushHandle {
    /// Every segment file that may hold data below `flush_to` not yet known durable: segments rolled since the
    /// last flush and the active segment.
    pub(crate) files: Vec<Arc<dyn FileHandle>>,
    storage: Arc<dyn Storage>,
    /// Set when a segment file was created since the last flush, so the directory entry must be made durable too.
    dir: Option<PathBuf>,
    flush_to: i64,
    /// A new recovery point to persist once the files are synced (by [`Log::mark_synced`], under the caller's
    /// lock on the log, so that a partition deleted meanwhile is never written to): the active segment's base
    /// offset, when segments were rolled since the last one was written (once per roll, not per fsync).
    pub(crate) recovery_point: Option<i64>,
    sync: Arc<SyncState>,
}

/// Shared by a log and its flush handles: syncs of one log run one at a time (they write the same
/// `recovery-point` temporary file), and once one failed no later one may report success.
#[derive(Default)]
struct SyncState {
    serial: std::sync::Mutex<()>,
    /// Set by the first failed sync or by [`Log::mark_failed`]. Linux reports a failed write-back to one
    /// fsync only: a second handle's fsync of the same file would succeed although the pages are lost.
    failed: std::sync::atomic::AtomicBool,
}

impl FlushHandle {
    /// Offset that will be durable after `sync()` (exclusive).
    pub fn flush_to(&self) -> i64 {
        self.flush_to
    }

    /// fsyncs the files (blocking; call from `spawn_blocking`). An error means the data may not be durable and
    /// may never become so (the kernel can drop the dirty pages of a failed write-back): the caller must not
    /// retry into success but take the log offline ([`Log::mark_failed`]).
    pub fn sync(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let _serial = self.sync.serial.lock().unwrap_or_else(|p| p.into_inner());
        if self.sync.failed.load(Ordering::Acquire) {
            return Err(Error::Damaged(
                "an earlier fsync of this log failed; its data may be lost and nothing more is synced".into(),
            ));
        }
        let result = (|| {
            for f in &self.files {
                f.sync_data()?;
            }
            if let Some(dir) = &self.dir {
                self.storage.sync_dir(dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            self.sync.failed.store(true, Ordering::Release);
        }
        result
    }
}

/// A segment that stopped being active while it still had data not known to be durable.
struct PendingFlush {
    /// The segment's base offset.
    base_offset: i64,
    /// The log end offset when the segment was rolled; once `mark_flushed` reaches it the file is durable.
    end_offset: i64,
    file: Arc<dyn FileHandle>,
    /// Its offset and time index files: synced with it, so that segments below the recovery point have
    /// trustworthy indexes too.
    indexes: [Arc<dyn FileHandle>; 2],
}

/// A partition log. Single-threaded: the broker wraps it in a mutex.
pub struct Log {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// Sorted by base offset, never empty; the last one is the active segment.
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_start_offset: i64,
    flushed_offset: i64,
    pending_flush: Vec<PendingFlush>,
    /// Log end offset at which a segment file was last created and not yet covered by a directory fsync.
    dir_dirty_since: Option<i64>,
    /// The recovery point last persisted (see [`RECOVERY_POINT_FILE`]).
    recovery_point: i64,
    /// Set by the first I/O error of a write or fsync: the log refuses every later write, fsync and close
    /// (Kafka takes the log directory offline). A failed fsync must never be retried into success, and a
    /// half-done write must not be built upon; the next open recovers from what is on disk.
    failed: Option<String>,
    /// First offset not yet compacted.
    pub(crate) cleaner_checkpoint: i64,
    /// Earliest timestamp of a tombstone kept by the last compaction (-1 if none); when it expires a compaction
    /// pass is due even if no new data arrived.
    pub(crate) oldest_tombstone_ts: i64,
    /// (end offset, ms): the offsets below each end were first cleaned at that time (ascending ends, the last
    /// one at `cleaner_checkpoint`). Tombstones expire `delete.retention.ms` after their first cleaning.
    pub(crate) first_cleaned: Vec<(i64, i64)>,
    /// Latest wall-clock time passed in by the caller; used by operations that take no `now_ms` (follower
    /// appends, truncation) to stamp new segments.
    pub(crate) clock_ms: i64,
    /// Where each leader epoch started (see [`crate::epoch_cache`]).
    epochs: EpochCache,
    sync: Arc<SyncState>,
}

/// Reads a small text file; `None` when missing. Bytes that are not UTF-8 read as an empty string (callers treat
/// unparsable contents as absent or damaged).
pub(crate) fn read_small_file(storage: &dyn Storage, path: &Path) -> Result<Option<String>> {
    Ok(st::read_optional(storage, path)?.map(|b| String::from_utf8(b).unwrap_or_default()))
}

/// Writes a small file atomically: temporary file, fsync, rename, fsync directory.
pub(crate) fn write_small_file(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    contents: &str,
) -> Result<()> {
    st::write_atomic(storage, &dir.join(name), contents.as_bytes())?;
    Ok(())
}

impl Log {
    /// Opens or creates the partition directory on the real disk and recovers after a crash (see
    /// [`Log::open_with`]).
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log> {
        Log::open_with(Arc::new(Disk), dir, config, now_ms)
    }

    /// Opens or creates the partition directory on `storage` and recovers after a crash.
    ///
    /// After a clean shutdown every segment is trusted. Otherwise segments wholly below the persisted recovery
    /// point (known durable) have the batches after their last index entry checked, and damage there is an error
    /// (never truncated); every later segment is re-validated batch by batch from its start, its indexes rebuilt,
    /// a torn tail cut off, and the result fsynced before the log counts it as durable. Leftover temporary files
    /// are removed.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Log> {
        let fs = &*storage;
        fs.create_dir_all(dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = fs.exists(&marker);
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        let mut names = fs.list(dir)?;
        names.sort();
        for name in names {
            let name = name.as_str();
            if [".cleaned", ".deleted", ".swap", ".tmp"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                tracing::info!(file = name, dir = %dir.display(), "removing leftover file");
                fs.remove_file(&dir.join(name))?;
                continue;
            }
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            } else if let Some(stem) = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"))
                .or_else(|| name.strip_suffix(".txnindex"))
            {
                if let Ok(base) = stem.parse::<i64>() {
                    index_files.push((base, dir.join(name)));
                }
            }
        }
        bases.sort_unstable();
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                fs.remove_file(&path)?;
            }
        }
        // Removing the marker first (durably) means a crash during or after this open is treated as unclean
        // next time: a marker that came back after a power loss would make recovery trust unsynced data.
        if clean {
            fs.remove_file(&marker)?;
            fs.sync_dir(dir)?;
        } else if !bases.is_empty() {
            tracing::warn!(dir = %dir.display(), "no clean-shutdown marker; recovering");
        }

        let persisted_start = match read_small_file(fs, &dir.join(LOG_START_FILE))? {
            Some(s) => Some(s.trim().parse::<i64>().map_err(|e| {
                Error::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad {LOG_START_FILE}: {e}"),
                ))
            })?),
            None => None,
        };

        // A missing or unreadable recovery point means nothing is known durable: everything is re-validated.
        let recovery_point = match read_small_file(fs, &dir.join(RECOVERY_POINT_FILE))? {
            Some(s) => s.trim().parse::<i64>().unwrap_or_else(|_| {
                tracing::warn!(dir = %dir.display(), "unreadable {RECOVERY_POINT_FILE}; re-validating every segment");
                0
            }),
            None => 0,
        };
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        // Segments that recovery re-validated: they may hold data that was never fsynced, so they are fsynced
        // before the log calls anything durable.
        let mut recovered = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let durable = bases.get(i + 1).is_some_and(|&next| next <= recovery_point);
            let mode = if clean {
                OpenMode::Trusted
            } else if durable {
                OpenMode::VerifyTail
            } else {
                OpenMode::VerifyAll
            };
            let opened = Segment::open(
                &storage,
                dir,
                base,
                mode,
                config.index_interval_bytes,
                now_ms,
            )?;
            if mode == OpenMode::VerifyAll {
                recovered.push(segments.len());
            }
            segments.push(opened.segment);
            if opened.truncated {
                // The tail of a segment that was not yet known durable was torn: the data after it was
                // written later and never fsynced either (fsyncs cover older segments first and the recovery
                // point moves past a segment only once it is synced), so no acknowledged record is in it.
                // The later segments go first, durably, and the torn file is cut last: a crash in between
                // must find the tear again, or it would keep the later segments behind a hole (found by the
                // fault harness).
                for &later in &bases[i + 1..] {
                    tracing::warn!(
                        base_offset = later,
                        dir = %dir.display(),
                        "deleting segment written after a torn, never-fsynced segment tail"
                    );
                    for p in [
                        segment::log_path(dir, later),
                        segment::index_path(dir, later),
                        segment::time_index_path(dir, later),
                        crate::txn_index::path(dir, later),
                    ] {
                        st::remove_if_exists(fs, &p)?;
                    }
                }
                if !last {
                    fs.sync_dir(dir)?;
                }
                segments.last().expect("just pushed").cut_file()?;
                break;
            }
        }
        let created = segments.is_empty();
        if created {
            segments.push(Segment::create(
                &storage,
                dir,
                persisted_start.unwrap_or(0).max(0),
                now_ms,
            )?);
        }
        let first_base = segments[0].base_offset;
        let mut log = Log {
            storage: Arc::clone(&storage),
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: persisted_start.unwrap_or(first_base).max(first_base),
            flushed_offset: 0,
            pending_flush: Vec::new(),
            dir_dirty_since: None,
            recovery_point,
            failed: None,
            cleaner_checkpoint: 0,
            oldest_tombstone_ts: -1,
            first_cleaned: Vec::new(),
            clock_ms: now_ms,
            epochs: EpochCache::default(),
            sync: Arc::default(),
        };
        if log.log_start_offset > log.log_end_offset() {
            // Recovery lost data that the persisted start offset already covered; start empty at that offset.
            let start = log.log_start_offset;
            log.truncate_fully(start, now_ms)?;
            recovered.clear();
        }
        log.load_epochs(&recovered)?;
        if !clean || created {
            // What recovery kept came from the page cache; make it durable (data, indexes, directory entries)
            // before calling it flushed, then record that everything up to here is durable.
            for &i in &recovered {
                if let Some(seg) = log.segments.get_mut(i) {
                    seg.rewrite_and_sync()?;
                }
            }
            // Everything is durable now: no index needs an open handle until it is written again.
            for seg in &mut log.segments {
                seg.offset_index.release();
                seg.time_index.release();
            }
            if let Some(active) = log.segments.last() {
                active.file.sync_data()?;
            }
            fs.sync_dir(dir)?;
            let leo = log.log_end_offset();
            if leo != log.recovery_point {
                write_small_file(fs, dir, RECOVERY_POINT_FILE, &leo.to_string())?;
                log.recovery_point = leo;
            }
        }
        log.flushed_offset = log.log_end_offset();
        if let Some(s) = read_small_file(fs, &dir.join(CLEANER_CHECKPOINT_FILE))? {
            let mut lines = s.lines();
            let mut it = lines
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(|t| t.parse::<i64>().ok());
            log.cleaner_checkpoint = it.next().flatten().unwrap_or(0);
            log.oldest_tombstone_ts = it.next().flatten().unwrap_or(-1);
            for line in lines {
                let mut it = line.split_whitespace().map(|t| t.parse::<i64>().ok());
                if let (Some(Some(end)), Some(Some(ms))) = (it.next(), it.next()) {
                    log.first_cleaned.push((end, ms));
                }
            }
            if log
                .first_cleaned
                .last()
                .is_none_or(|(end, _)| *end < log.cleaner_checkpoint)
            {
                // A checkpoint written before the times were kept: count from now, which only keeps
                // tombstones longer.
                log.first_cleaned.push((log.cleaner_checkpoint, now_ms));
                if log.oldest_tombstone_ts >= 0 {
                    log.oldest_tombstone_ts = now_ms;
                }
            }
        }
        log.cleaner_checkpoint = log.cleaner_checkpoint.min(log.log_end_offset());
        log.check_invariants();
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Runs a mutating operation: refused once the log has failed, and a storage error it returns fails the
    /// log (no retry of a failed write or fsync is ever attempted by this process).
    pub(crate) fn guarded<T>(&mut self, op: impl FnOnce(&mut Log) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        let result = op(self);
        if let Err(e) = &result {
            if e.is_storage_error() {
                self.mark_failed(&e.to_string());
            }
        }
        result
    }

    fn check_writable(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(reason) => Err(Error::Damaged(format!(
                "the log in {} is offline after an earlier I/O error ({reason}); nothing more is written to \
                 it by this process: check the disk, then restart the broker so that recovery re-validates it",
                self.dir.display()
            ))),
        }
    }

    /// Takes the log offline after an I/O error (e.g. a failed fsync reported by the broker): every later write,
    /// fsync and the clean-shutdown marker are refused, so the next open runs recovery on what the disk holds.
    pub fn mark_failed(&mut self, reason: &str) {
        self.sync
            .failed
            .store(true, std::sync::atomic::Ordering::Release);
        if self.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), reason, "log failed; refusing further writes");
            self.failed = Some(reason.to_string());
        }
    }

    /// Why the log is offline, if it is.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// Forgets first-cleaning times below the log start offset and bounds their number (merging neighbours
    /// keeps the later time: tombstones then live longer, never shorter).
    pub(crate) fn prune_first_cleaned(&mut self) {
        let start = self.log_start_offset;
        while self.first_cleaned.len() > 1 && self.first_cleaned[0].0 <= start {
            self.first_cleaned.remove(0);
        }
        while self.first_cleaned.len() > 64 {
            let (_, ms) = self.first_cleaned.remove(0);
            self.first_cleaned[0].1 = self.first_cleaned[0].1.max(ms);
        }
    }

    /// The cleaner checkpoint file: "<first dirty offset> <earliest first-cleaning time of a kept tombstone>",
    /// then one "<end offset> <ms>" line per first-cleaning range.
    pub(crate) fn cleaner_checkpoint_text(&self) -> String {
        let mut out = format!("{} {}\n", self.cleaner_checkpoint, self.oldest_tombstone_ts);
        for (end, ms) in &self.first_cleaned {
            out.push_str(&format!("{end} {ms}\n"));
        }
        out
    }

    /// Test oracle: every segment's file, indexes and summary agree (see `Segment::check_consistency`), and the
    /// segments follow each other.
    #[cfg(test)]
    pub(crate) fn check_consistency(&self) -> std::result::Result<(), String> {
        for w in self.segments.windows(2) {
            if w[0].next_offset > w[1].base_offset {
                return Err(format!(
                    "segment {} ends at {}, after the next one starts",
                    w[0].base_offset, w[0].next_offset
                ));
            }
        }
        self.segments.iter().try_for_each(|s| s.check_consistency())
    }

    /// Cheap structural invariants, checked in debug builds after every mutation.
    pub(crate) fn check_invariants(&self) {
        debug_assert!(!self.segments.is_empty());
        debug_assert!(self
            .segments
            .windows(2)
            .all(|w| w[0].base_offset < w[1].base_offset && w[0].next_offset <= w[1].base_offset));
        debug_assert!(self.log_start_offset <= self.log_end_offset());
        debug_assert!(self.segments[0].base_offset <= self.log_start_offset);
    }

    /// Validates every v2 batch in `records` (header, CRC, and a walk over the records: the declared count and
    /// framing must match what is there), checks CreateTime timestamps against the configured bounds, assigns
    /// offsets starting at the log end offset by rewriting the base offset and partition leader epoch (plus
    /// maxTimestamp, attributes and CRC where the stored maximum must change), and writes the batches to the
    /// active segment, rolling first if needed. No fsync.
    pub fn append(&mut self, records: Bytes, leader_epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        self.guarded(|log| log.append_inner(records, leader_epoch, now_ms))
    }

    fn append_inner(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        if records.is_empty() {
            return Err(Error::InvalidRecord("empty record set".into()));
        }
        self.clock_ms = self.clock_ms.max(now_ms);
        let checked = batch::validate_headers(&records, self.config.max_message_bytes)?;
        if self.config.cleanup_compact {
            self.check_keys(&records, &checked)?;
        }
        // Topic-level compression.type other than `producer`: batches in another codec are stored recompressed
        // (and validated again, size limit included, as Kafka checks the batch it stores).
        let (records, checked) = match self.config.compression {
            Some(target)
                if checked
                    .iter()
                    .any(|(_, h, _)| !h.is_control() && h.compression() != target) =>
            {
                let recompressed = batch::recompress(&records, &checked, target)?;
                let checked =
                    batch::validate_headers(&recompressed, self.config.max_message_bytes)?;
                (recompressed, checked)
            }
            _ => (records, checked),
        };
        let log_append = self.config.timestamp_type == TimestampType::LogAppendTime;
        if !log_append {
            self.check_timestamps(&checked, now_ms)?;
        }

        // One copy at most: a uniquely owned buffer is rewritten in place.
        let mut buf = records
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
        let mut headers = Vec::with_capacity(checked.len());
        let mut next = self.log_end_offset();
        let first_offset = next;
        let mut max_timestamp = -1i64;
        for (pos, mut header, summary) in checked {
            let b = &mut buf[pos..pos + header.size()];
            b[..8].copy_from_slice(&next.to_be_bytes());
            b[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4].copy_from_slice(&leader_epoch.to_be_bytes());
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            // The stored maxTimestamp is the records' real maximum (Kafka rewrites it too): retention and
            // timestamp lookups trust it, so a header that claims a far-future time must not pin a segment.
            let stamp = if log_append {
                Some(now_ms)
            } else if !header.is_control() && header.max_timestamp != summary.max_timestamp {
                Some(summary.max_timestamp)
            } else {
                None
            };
            if let Some(ts) = stamp {
                if log_append {
                    header.attributes |= TIMESTAMP_TYPE_BIT;
                    b[batch::ATTRIBUTES_POS..batch::ATTRIBUTES_POS + 2]
                        .copy_from_slice(&header.attributes.to_be_bytes());
                }
                header.max_timestamp = ts;
                b[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&ts.to_be_bytes());
                header.crc = batch::compute_crc(b);
                b[CRC_POS..CRC_POS + 4].copy_from_slice(&header.crc.to_be_bytes());
            }
            // Pair assertion: what we are about to write must pass the recovery-side check.
            debug_assert!(batch::check_stored(b).is_ok_and(|h| h == header));
            max_timestamp = max_timestamp.max(header.max_timestamp);
            next = header.last_offset() + 1;
            headers.push((pos, header));
        }
        let buf = buf.freeze();
        self.write_batches(&buf, &headers, now_ms)?;
        self.note_epochs(std::iter::once((leader_epoch, first_offset)))?;
        debug_assert_eq!(self.log_end_offset(), next);
        self.check_invariants();
        Ok(AppendInfo {
            base_offset: first_offset,
            last_offset: next - 1,
            log_append_time: if log_append { now_ms } else { -1 },
            max_timestamp,
            log_start_offset: self.log_start_offset,
            batches: headers.iter().map(|(_, h)| h.info()).collect(),
            leader_epoch,
        })
    }

    /// Kafka's rule for compacted topics: every record has a key (compaction keeps the last record per key, so a
    /// keyless one could never be cleaned). Refused with the index of each keyless record, as Kafka does.
    fn check_keys(
        &self,
        records: &[u8],
        checked: &[(usize, Header, batch::RecordsSummary)],
    ) -> Result<()> {
        let mut errors = Vec::new();
        for (pos, header, summary) in checked {
            if header.is_control() || summary.keyless == 0 {
                continue;
            }
            let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
            for i in batch::keyless_records(&records[*pos..*pos + header.size()], header)? {
                errors.push((
                    i,
                    format!("Compacted topic cannot accept message without key in topic partition {name}."),
                ));
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        let first: Vec<String> = errors
            .iter()
            .take(3)
            .map(|(i, m)| format!("record {i}: {m}"))
            .collect();
        let message = format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first \
             three errors at most: [{}]. Give every record a key, or set the topic's cleanup.policy to delete.",
            errors.len(),
            first.join(", ")
        );
        Err(Error::RecordErrors { errors, message })
    }

    /// Kafka's CreateTime rule: every record's timestamp lies within `message.timestamp.before.max.ms` before
    /// and `message.timestamp.after.max.ms` after the broker's clock.
    fn check_timestamps(
        &self,
        checked: &[(usize, Header, batch::RecordsSummary)],
        now_ms: i64,
    ) -> Result<()> {
        let earliest = now_ms.saturating_sub(self.config.timestamp_before_max_ms);
        let latest = now_ms.saturating_add(self.config.timestamp_after_max_ms);
        for (_, header, summary) in checked {
            if header.is_control() {
                continue;
            }
            for ts in [summary.min_timestamp, summary.max_timestamp] {
                if ts != -1 && (ts < earliest || ts > latest) {
                    return Err(Error::InvalidTimestamp(format!(
                        "timestamp {ts} of a record in the batch at offset {} is out of range: it must lie \
                         within [{earliest}, {latest}] (message.timestamp.before.max.ms / \
                         message.timestamp.after.max.ms around the broker's clock {now_ms}); check the \
                         producer's clock",
                        header.base_offset.max(self.log_end_offset()),
                    )));
                }
            }
        }
        Ok(())
    }

    /// Writes assigned batches to the log, rolling where needed. Each batch's offsets must be representable
    /// relative to its segment's base (a signed 32-bit delta, as in Kafka's indexes), so the batches are written
    /// in runs whose offset span fits one segment, with a roll before each run that would not fit; a request of
    /// many large-span batches can therefore never push offsets past what its segment can index.
    pub(crate) fn write_batches(
        &mut self,
        buf: &Bytes,
        headers: &[(usize, Header)],
        now_ms: i64,
    ) -> Result<()> {
        let limit = i64::from(i32::MAX) + 1;
        let mut start = 0;
        while start < headers.len() {
            let mut end = start;
            let mut span = 0i64;
            while end < headers.len() {
                let s = i64::from(headers[end].1.last_offset_delta) + 1;
                if end > start && span + s > limit {
                    break;
                }
                span += s;
                end += 1;
            }
            let from = headers[start].0;
            let to = headers.get(end).map_or(buf.len(), |(pos, _)| *pos);
            self.maybe_roll((to - from) as u64, span, now_ms)?;
            let interval = self.config.index_interval_bytes;
            if from == 0 && end == headers.len() {
                // The common case, one run: positions are already relative to `buf`, nothing to copy.
                self.active_mut().append(buf, headers, interval, now_ms)?;
            } else {
                let run: Vec<(usize, Header)> = headers[start..end]
                    .iter()
                    .map(|(pos, h)| (pos - from, *h))
                    .collect();
                self.active_mut()
                    .append(&buf[from..to], &run, interval, now_ms)?;
            }
            start = end;
        }
        Ok(())
    }

    /// Appends batches whose offsets were already assigned by the leader (replication follower path). Batches are
    /// checked like during recovery (CRC, framing, counts) and must start at or after the log end offset.
    pub fn append_as_follower(&mut self, records: Bytes) -> Result<AppendInfo> {
        self.guarded(|log| log.append_as_follower_inner(records))
    }

    fn append_as_follower_inner(&mut self, records: Bytes) -> Result<AppendInfo> {
        let mut headers = Vec::new();
        let mut pos = 0;
        let mut expected = self.log_end_offset();
        while pos < records.len() {
            let h = batch::check_stored(&records[pos..])?;
            if h.base_offset < expected {
                return Err(Error::InvalidRecord(format!(
                    "follower batch base offset {} below log end offset {expected}",
                    h.base_offset
                )));
            }
            expected = h.last_offset() + 1;
            headers.push((pos, h));
            pos += h.size();
        }
        let (Some((_, first)), Some((_, last))) = (headers.first(), headers.last()) else {
            return Err(Error::InvalidRecord("empty record set".into()));
        };
        let (first_offset, last_offset) = (first.base_offset, last.last_offset());
        let max_timestamp = headers
            .iter()
            .map(|(_, h)| h.max_timestamp)
            .max()
            .unwrap_or(-1);
        let now_ms = self.clock_ms;
        self.maybe_roll(
            records.len() as u64,
            last_offset + 1 - self.log_end_offset(),
            now_ms,
        )?;
        if self.active().is_empty()
            && self.active().base_offset < first_offset
            && self.segments.len() > 1
        {
            // Keep file names meaningful when the leader's offsets jump (compacted source).
            let old = self.segments.pop().expect("checked len");
            old.delete_files()?;
            let seg = Segment::create(&self.storage, &self.dir, first_offset, now_ms)?;
            self.segments.push(seg);
            self.dir_dirty_since = Some(first_offset);
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut()
            .append(&records, &headers, interval, now_ms)?;
        self.note_epochs(
            headers
                .iter()
                .map(|(_, h)| (h.partition_leader_epoch, h.base_offset)),
        )?;
        self.check_invariants();
        Ok(AppendInfo {
            base_offset: first_offset,
            last_offset,
            log_append_time: -1,
            max_timestamp,
            log_start_offset: self.log_start_offset,
            batches: headers.iter().map(|(_, h)| h.info()).collect(),
            leader_epoch: last.partition_leader_epoch,
        })
    }

    /// Rolls before an append of `bytes` bytes spanning `offsets` offsets when the active segment is non-empty and
    /// would exceed `segment.bytes`, is older than `segment.ms`, has a full index, or could not represent the new
    /// offsets relative to its base.
    fn maybe_roll(&mut self, bytes: u64, offsets: i64, now_ms: i64) -> Result<()> {
        let cfg = &self.config;
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let too_big = active.size + bytes > cfg.segment_bytes;
        let too_old = now_ms - active.created_ms >= cfg.segment_ms;
        let index_full = active.offset_index.size_bytes() + crate::index::OFFSET_ENTRY_SIZE as u64
            > cfg.segment_index_bytes
            || active.time_index.size_bytes() + crate::index::TIME_ENTRY_SIZE as u64
                > cfg.segment_index_bytes;
        let offset_overflow =
            active.next_offset + offsets - 1 - active.base_offset > i64::from(i32::MAX);
        if too_big || too_old || index_full || offset_overflow {
            tracing::debug!(
                base_offset = active.base_offset,
                too_big,
                too_old,
                index_full,
                offset_overflow,
                "rolling segment"
            );
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Starts a new active segment at the log end offset. The old segment is not fsynced here (that would stall
    /// the broker's mutex); it stays in every FlushHandle until `mark_flushed` passes its end.
    fn roll(&mut self, now_ms: i64) -> Result<()> {
        let leo = self.log_end_offset();
        let active = self.active_mut();
        active.on_become_inactive()?;
        // Even when its data is already durable, its indexes (just completed) are not: the next flush syncs
        // them before the recovery point moves past this segment.
        let pending = PendingFlush {
            base_offset: active.base_offset,
            end_offset: leo,
            file: Arc::clone(&active.file),
            indexes: [active.offset_index.file()?, active.time_index.file()?],
        };
        self.pending_flush.push(pending);
        let seg = Segment::create(&self.storage, &self.dir, leo, now_ms)?;
        self.segments.push(seg);
        self.dir_dirty_since = Some(leo);
        Ok(())
    }

    /// Whole batches starting from the batch containing `offset`, stopping before any batch whose last offset is
    /// at or above `max_offset` and at `max_bytes`; with `min_one_batch` a first batch larger than `max_bytes` is
    /// returned whole (KIP-74). May span segments.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadInfo> {
        let log_start = self.log_start_offset;
        let log_end = self.log_end_offset();
        if offset < log_start || offset > log_end {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let mut out: Vec<u8> = Vec::new();
        if offset < log_end && offset < max_offset {
            self.read_batches(&mut out, offset, max_bytes, max_offset, min_one_batch)?;
        }
        Ok(ReadInfo {
            records: Bytes::from(out),
            log_start_offset: log_start,
            log_end_offset: log_end,
        })
    }

    fn read_batches(
        &self,
        out: &mut Vec<u8>,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<()> {
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for seg in &self.segments[first..] {
            let Some((start, first_header)) = seg.find_position(offset)? else {
                continue;
            };
            let remaining = max_bytes.saturating_sub(out.len());
            let chunk_len = (remaining as u64).min(seg.size - start) as usize;
            let chunk_start = out.len();
            seg.read_into(out, start, chunk_len)?;
            // Keep only whole batches below max_offset; the walk reads headers from the chunk just read.
            let mut used = 0usize;
            let stop;
            loop {
                let rest = &out[chunk_start + used..];
                let Some(h) = Header::parse(rest) else {
                    // Either the chunk ended at the segment's end (go on with the next segment) or max_bytes cut
                    // a batch header.
                    stop = !rest.is_empty() || start + (chunk_len as u64) < seg.size;
                    break;
                };
                if h.last_offset() >= max_offset {
                    stop = true;
                    break;
                }
                if h.size() > rest.len() {
                    stop = true;
                    break;
                }
                debug_assert!(h.last_offset() >= offset && h.magic == 2);
                used += h.size();
            }
            out.truncate(chunk_start + used);
            if out.is_empty() && min_one_batch && first_header.last_offset() < max_offset {
                // KIP-74: the first batch is returned whole even when it exceeds max_bytes.
                seg.read_into(out, start, first_header.size())?;
                return Ok(());
            }
            if stop || out.len() >= max_bytes {
                return Ok(());
            }
        }
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Base offset of the active segment: it moves when the log rolls.
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset
    }

    /// Records an aborted transaction in the `.txnindex` of the segment holding its abort marker. Not fsynced
    /// here: see [`Log::sync_txn_indexes`]. The in-memory entry is added first, so reads never miss an abort even
    /// when the file write fails (which takes the log offline).
    pub fn add_aborted_txn(&mut self, entry: AbortedTxn) -> Result<()> {
        self.guarded(|log| log.add_aborted_txn_inner(entry))
    }

    fn add_aborted_txn_inner(&mut self, entry: AbortedTxn) -> Result<()> {
        let i = self
            .segments
            .partition_point(|s| s.base_offset <= entry.last_offset)
            .saturating_sub(1);
        let seg = &mut self.segments[i];
        seg.aborted.push(entry);
        seg.aborted_dirty = true;
        crate::txn_index::append(
            &*self.storage,
            &crate::txn_index::path(&self.dir, seg.base_offset),
            &entry,
        )?;
        Ok(())
    }

    /// Aborted transactions with records in `from..to` (what a read_committed fetch of that range needs), in
    /// marker order.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        // Entries sit in the segment of their marker, which is at or after their records: start with the
        // segment holding `from`. Once an entry's last stable offset passes `to`, every transaction with
        // records below `to` had ended by then, so later entries cannot matter (Kafka's early exit).
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        let mut out = Vec::new();
        for a in self.segments[first..].iter().flat_map(|s| s.aborted.iter()) {
            if a.last_offset >= from && a.first_offset < to {
                out.push(*a);
            }
            if a.last_stable_offset > to {
                break;
            }
        }
        out
    }

    /// Forgets aborted-transaction entries whose marker is at or after `offset` (the broker re-adds them while
    /// rebuilding producer state from that offset).
    pub fn truncate_aborted_from(&mut self, offset: i64) -> Result<()> {
        self.guarded(|log| log.truncate_aborted_from_inner(offset))
    }

    fn truncate_aborted_from_inner(&mut self, offset: i64) -> Result<()> {
        for seg in &mut self.segments {
            if seg.aborted.iter().any(|a| a.last_offset >= offset) {
                seg.aborted.retain(|a| a.last_offset < offset);
                crate::txn_index::rewrite(
                    &*self.storage,
                    &crate::txn_index::path(&self.dir, seg.base_offset),
                    &seg.aborted,
                )?;
            }
        }
        Ok(())
    }

    /// fsyncs every `.txnindex` appended to since its last sync (before a producer-state snapshot relies on
    /// them).
    pub fn sync_txn_indexes(&mut self) -> Result<()> {
        self.guarded(|log| log.sync_txn_indexes_inner())
    }

    fn sync_txn_indexes_inner(&mut self) -> Result<()> {
        let mut synced = false;
        for seg in &mut self.segments {
            if seg.aborted_dirty {
                crate::txn_index::sync(
                    &*self.storage,
                    &crate::txn_index::path(&self.dir, seg.base_offset),
                )?;
                seg.aborted_dirty = false;
                synced = true;
            }
        }
        if synced {
            // The first entry of a segment creates its `.txnindex`: the file is durable only with its directory
            // entry (found by the fault harness: a power loss lost a synced abort).
            self.storage.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// DeleteRecords: moves the log start offset to `offset` (persisted) and deletes segments wholly below it.
    /// Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        self.guarded(|log| log.delete_records_before_inner(offset))
    }

    fn delete_records_before_inner(&mut self, offset: i64) -> Result<i64> {
        let log_end = self.log_end_offset();
        if offset > log_end || offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.set_log_start_offset(offset)?;
        if !self.active().is_empty() && self.active().next_offset <= offset {
            // Everything is below the new start; roll so that the old active segment can go too.
            let now_ms = self.clock_ms;
            self.roll(now_ms)?;
        }
        while self.segments.len() > 1 && self.segments[1].base_offset <= offset {
            self.delete_first_segment()?;
        }
        self.check_invariants();
        Ok(self.log_start_offset)
    }

    pub(crate) fn set_log_start_offset(&mut self, offset: i64) -> Result<()> {
        debug_assert!(offset >= self.log_start_offset || offset == self.segments[0].base_offset);
        if offset != self.log_start_offset {
            self.log_start_offset = offset;
            write_small_file(
                &*self.storage,
                &self.dir,
                LOG_START_FILE,
                &offset.to_string(),
            )?;
            if self.epochs.truncate_from_start(offset) {
                self.epochs.persist(&*self.storage, &self.dir)?;
            }
        }
        Ok(())
    }

    /// Loads the leader epoch cache at open. The checkpoint is trusted for what lies below the recovery point;
    /// every re-validated segment (`recovered`) contributes the epochs its batches carry, and entries at or
    /// beyond the log end (written before a power loss took their batches) or before the log start go. A
    /// missing or unreadable checkpoint is rebuilt from the batch headers of every segment.
    fn load_epochs(&mut self, recovered: &[usize]) -> Result<()> {
        let fs = &*self.storage;
        let loaded = EpochCache::load(fs, &self.dir)?;
        let mut changed = false;
        let mut cache = match loaded {
            Some(c) => c,
            None => {
                let mut c = EpochCache::default();
                if self.log_end_offset() > self.log_start_offset {
                    tracing::info!(dir = %self.dir.display(), "rebuilding the leader epoch checkpoint from the log");
                    for seg in &self.segments {
                        for (epoch, offset) in seg.epoch_transitions()? {
                            c.assign(epoch, offset);
                        }
                    }
                    changed = true;
                }
                c
            }
        };
        // (Only an unclean open re-validates segments.)
        for &i in recovered {
            if let Some(seg) = self.segments.get_mut(i) {
                for (epoch, offset) in std::mem::take(&mut seg.scanned_epochs) {
                    changed |= cache.assign(epoch, offset);
                }
            }
        }
        for seg in &mut self.segments {
            seg.scanned_epochs = Vec::new();
        }
        changed |= cache.truncate_from_end(self.log_end_offset());
        changed |= cache.truncate_from_start(self.log_start_offset);
        self.epochs = cache;
        if changed {
            self.epochs.persist(fs, &self.dir)?;
        }
        Ok(())
    }

    /// Records the epochs of batches just written (their base offsets and leader epochs); rewrites the
    /// checkpoint when a new epoch began.
    fn note_epochs(&mut self, batches: impl IntoIterator<Item = (i32, i64)>) -> Result<()> {
        let mut changed = false;
        for (epoch, offset) in batches {
            changed |= self.epochs.assign(epoch, offset);
        }
        if changed {
            self.epochs.persist(&*self.storage, &self.dir)?;
        }
        Ok(())
    }

    /// Starts leader epoch `epoch` at the log end offset, as a new leader does when it takes over (Kafka's
    /// `assign(epoch, logEndOffset)` at becoming leader): a follower asking for an older epoch then learns
    /// where that epoch ended even before this leader appended anything. No-op unless `epoch` is newer than
    /// the latest one.
    pub fn assign_epoch(&mut self, epoch: i32) -> Result<()> {
        self.guarded(|log| {
            let leo = log.log_end_offset();
            if log.epochs.latest().is_some_and(|(e, _)| e >= epoch) {
                return Ok(());
            }
            log.note_epochs([(epoch, leo)])
        })
    }

    /// The leader epoch entries, (epoch, start offset) ascending.
    pub fn leader_epochs(&self) -> &[(i32, i64)] {
        self.epochs.entries()
    }

    /// The newest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest().map(|(e, _)| e)
    }

    /// OffsetForLeaderEpoch: (epoch, end offset) for a requested leader epoch, Kafka's semantics (see
    /// [`crate::epoch_cache`]); (-1, -1) when undefined.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader epoch that wrote `offset`, per the cache.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.epochs.epoch_at(offset)
    }

    /// Drops a segment file from the pending-flush list (its data was made durable another way).
    pub(crate) fn forget_pending_flush(&mut self, file: &Arc<dyn FileHandle>) {
        self.pending_flush.retain(|p| !Arc::ptr_eq(&p.file, file));
    }

    /// Deletes the oldest (non-active) segment and moves the log start offset up to the next segment's base.
    fn delete_first_segment(&mut self) -> Result<()> {
        assert!(
            self.segments.len() > 1,
            "the active segment is never deleted"
        );
        let seg = self.segments.remove(0);
        tracing::info!(base_offset = seg.base_offset, dir = %self.dir.display(), "deleting segment");
        self.pending_flush
            .retain(|p| !Arc::ptr_eq(&p.file, &seg.file));
        seg.delete_files()?;
        let next_base = self.segments[0].base_offset;
        if next_base > self.log_start_offset {
            self.set_log_start_offset(next_base)?;
        }
        Ok(())
    }

    /// Removes everything at and above `offset`. Truncation happens at a batch boundary: the batch containing
    /// `offset` is removed entirely, so the new log end offset is that batch's base offset (<= `offset`). Leader
    /// epochs that start at or after the new log end are removed, even when no record is.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        self.guarded(|log| log.truncate_to_inner(offset))
    }

    fn truncate_to_inner(&mut self, offset: i64) -> Result<()> {
        let log_end = self.log_end_offset();
        if offset >= log_end {
            // No record goes, but an epoch entry at the log end does: one this broker began as leader and wrote
            // nothing in. A follower keeping it would name that epoch in every fetch and be told to truncate
            // here again, forever (Kafka's `truncateTo` always truncates the epoch cache for this reason).
            if self.epochs.truncate_from_end(log_end) {
                self.epochs.persist(&*self.storage, &self.dir)?;
            }
            return Ok(());
        }
        let now_ms = self.clock_ms;
        if offset < self.log_start_offset {
            return self.truncate_fully(offset.max(0), now_ms);
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let mut found = None;
        for i in first..self.segments.len() {
            if let Some((_, h)) = self.segments[i].find_position(offset)? {
                found = Some((i, h.base_offset));
                break;
            }
        }
        let Some((seg_idx, new_end)) = found else {
            return Ok(());
        };
        if new_end < self.log_start_offset {
            let start = self.log_start_offset;
            return self.truncate_fully(start, now_ms);
        }
        while self.segments.len() > seg_idx + 1 {
            let seg = self.segments.pop().expect("len checked");
            seg.delete_files()?;
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut().truncate_to(offset, interval)?;
        let active = self.active();
        if active.next_offset != new_end {
            // A gap (left by compaction) precedes the removed batch; an empty segment at `new_end` keeps the log
            // end offset exactly at the truncation point so no offset below it is handed out again.
            if active.is_empty() && self.segments.len() > 1 {
                let seg = self.segments.pop().expect("len checked");
                seg.delete_files()?;
            }
            if self.active().base_offset != new_end {
                let seg = Segment::create(&self.storage, &self.dir, new_end, now_ms)?;
                self.segments.push(seg);
            } else {
                self.active_mut().next_offset = new_end;
            }
            self.dir_dirty_since = Some(new_end);
        }
        if self.epochs.truncate_from_end(self.log_end_offset()) {
            self.epochs.persist(&*self.storage, &self.dir)?;
        }
        self.after_truncation();
        Ok(())
    }

    /// Deletes every segment and starts an empty log at `start` (a replication follower whose leader's log does
    /// not overlap this one).
    pub fn reset_to(&mut self, start: i64) -> Result<()> {
        self.guarded(|log| {
            let now_ms = log.clock_ms;
            log.truncate_fully(start.max(0), now_ms)
        })
    }

    /// Deletes all segments and starts an empty log at `start`.
    fn truncate_fully(&mut self, start: i64, now_ms: i64) -> Result<()> {
        for seg in self.segments.drain(..) {
            seg.delete_files()?;
        }
        self.segments
            .push(Segment::create(&self.storage, &self.dir, start, now_ms)?);
        self.dir_dirty_since = Some(start);
        self.log_start_offset = start;
        write_small_file(
            &*self.storage,
            &self.dir,
            LOG_START_FILE,
            &start.to_string(),
        )?;
        if self.epochs.clear() {
            self.epochs.persist(&*self.storage, &self.dir)?;
        }
        self.after_truncation();
        Ok(())
    }

    fn after_truncation(&mut self) {
        let leo = self.log_end_offset();
        self.flushed_offset = self.flushed_offset.min(leo);
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(leo);
        self.check_invariants();
    }

    /// Rolls the active segment if `segment.ms` elapsed, then applies `retention.ms` and `retention.bytes` when
    /// the policy includes delete. Only whole non-active segments are deleted. Returns the number deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize> {
        self.guarded(|log| log.enforce_retention_inner(now_ms))
    }

    fn enforce_retention_inner(&mut self, now_ms: i64) -> Result<usize> {
        self.clock_ms = self.clock_ms.max(now_ms);
        let active = self.active();
        if !active.is_empty() && now_ms - active.created_ms >= self.config.segment_ms {
            self.roll(now_ms)?;
        }
        if !self.config.cleanup_delete {
            return Ok(0);
        }
        let mut deleted = 0;
        if self.config.retention_ms >= 0 {
            let cutoff = now_ms.saturating_sub(self.config.retention_ms);
            while self.segments.len() > 1 && self.segments[0].largest_timestamp() < cutoff {
                self.delete_first_segment()?;
                deleted += 1;
            }
        }
        if self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            while self.segments.len() > 1 && excess - self.segments[0].size as i64 >= 0 {
                excess -= self.segments[0].size as i64;
                self.delete_first_segment()?;
                deleted += 1;
            }
        }
        self.check_invariants();
        Ok(deleted)
    }

    /// Handle to fsync, outside the mutex, every file holding data below the current log end offset.
    pub fn flush_handle(&self) -> Result<FlushHandle> {
        self.check_writable()?;
        let leo = self.log_end_offset();
        let mut files: Vec<Arc<dyn FileHandle>> = self
            .pending_flush
            .iter()
            .flat_map(|p| std::iter::once(&p.file).chain(&p.indexes))
            .map(Arc::clone)
            .collect();
        if self.flushed_offset < leo {
            files.push(Arc::clone(&self.active().file));
        }
        let active_base = self.active().base_offset;
        Ok(FlushHandle {
            files,
            storage: Arc::clone(&self.storage),
            dir: self.dir_dirty_since.map(|_| self.dir.clone()),
            flush_to: leo,
            recovery_point: (active_base > self.recovery_point).then_some(active_base),
            sync: Arc::clone(&self.sync),
        })
    }

    /// Records that data below `offset` is durable (the handle's `flush_to` after a successful `sync`).
    pub fn mark_flushed(&mut self, offset: i64) {
        let offset = offset.min(self.log_end_offset());
        self.flushed_offset = self.flushed_offset.max(offset);
        // Segments that became durable keep only their log file open (reads need it); their indexes reopen if
        // ever written again (truncation). Only those just synced are touched: this runs after every fsync.
        let mut synced = Vec::new();
        self.pending_flush.retain(|p| {
            let keep = p.end_offset > offset;
            if !keep {
                synced.push(p.base_offset);
            }
            keep
        });
        for base in synced {
            if let Ok(i) = self.segments.binary_search_by_key(&base, |s| s.base_offset) {
                if i + 1 < self.segments.len() {
                    let seg = &mut self.segments[i];
                    seg.offset_index.release();
                    seg.time_index.release();
                }
            }
        }
        // A handle taken before the segment was created may carry the same offset, hence the strict comparison.
        if self.dir_dirty_since.is_some_and(|d| offset > d) {
            self.dir_dirty_since = None;
        }
    }

    /// Records what a successful [`FlushHandle::sync`] made durable: its `flush_to`, and the recovery point it
    /// allows, persisted here. Refused (`false`, nothing recorded) once the log has failed: a sync that "succeeded" after
    /// another one failed proves nothing (the failed write-back is reported to one fsync only).
    /// Persisting the recovery point is a write: its error fails the log.
    pub fn mark_synced(&mut self, handle: &FlushHandle) -> Result<bool> {
        if self.failed.is_some() || self.sync.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(false);
        }
        if let Some(rp) = handle.recovery_point.filter(|rp| *rp > self.recovery_point) {
            self.guarded(|log| {
                write_small_file(
                    &*log.storage,
                    &log.dir,
                    RECOVERY_POINT_FILE,
                    &rp.to_string(),
                )
            })?;
            self.recovery_point = rp;
        }
        self.mark_flushed(handle.flush_to);
        Ok(true)
    }

    /// True when segments were rolled since the last flush (their data or indexes are not known durable yet).
    pub fn has_unflushed_rolled_segments(&self) -> bool {
        !self.pending_flush.is_empty()
    }

    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    /// Convenience: `flush_handle().sync()` + `mark_flushed`.
    pub fn flush(&mut self) -> Result<()> {
        let handle = self.flush_handle()?;
        if let Err(e) = handle.sync() {
            self.mark_failed(&format!("fsync failed: {e}"));
            return Err(e);
        }
        if !self.mark_synced(&handle)? {
            return Err(self
                .check_writable()
                .err()
                .unwrap_or_else(|| Error::Damaged("an earlier fsync of this log failed".into())));
        }
        Ok(())
    }

    /// Flushes, writes the clean-shutdown marker and closes the files.
    /// A failed log writes nothing (no flush, no marker), so the next open recovers it.
    pub fn close(mut self) -> Result<()> {
        self.guarded(|log| {
            log.active_mut().on_become_inactive()?;
            log.flush()?;
            log.storage.sync_dir(&log.dir)?;
            for seg in &mut log.segments {
                seg.sync_indexes()?;
            }
            let leo = log.log_end_offset();
            write_small_file(
                &*log.storage,
                &log.dir,
                RECOVERY_POINT_FILE,
                &leo.to_string(),
            )?;
            write_small_file(&*log.storage, &log.dir, CLEAN_SHUTDOWN_FILE, "")
        })
    }

    /// Deletes the partition directory (topic deletion).
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        let storage = Arc::clone(&self.storage);
        drop(self);
        storage.remove_dir_all(&dir)?;
        Ok(())
    }
}
