//! The partitions this broker hosts: one [`fjord_log::Log`] each, kept in step with the metadata state.
//!
//! A [`Partition`] guards its log with a mutex held only for the in-memory/page-cache part of an append or a
//! read; fsync happens outside it (group commit, see [`Partition::wait_durable`]), and fetches waiting for data
//! park on a [`Notify`] that every append wakes.
//!
//! Every operation on a partition's files runs through `Partition::io`: an I/O error takes the partition's log
//! directory offline (see [`crate::log_dirs`]), and from then on the partition refuses every operation with
//! KAFKA_STORAGE_ERROR instead of touching its files again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use fjord_log::storage::{self as st, Storage};
use fjord_log::{AbortedTxn, AppendInfo, ControlType, Log, LogConfig, ReadInfo};
use fjord_meta::{ClusterState, PartitionMeta};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::log_dirs::{remove_in_background, rename_for_delete, LogDirs};
use crate::producers::{ProducerStates, ProducerView, Verdict};
use crate::{now_ms, Error, Result};

/// Name of the file in each partition directory that records which topic id the data belongs to, so a topic
/// deleted and re-created under the same name never serves the old topic's data (Kafka's `partition.metadata`).
const PARTITION_METADATA: &str = "partition.metadata";

mod replica;
pub use replica::{FollowerState, IsrChange, ReplState, ReplicaRead};

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    log: Mutex<Log>,
    /// Leader epoch written into appended batches; refreshed from metadata.
    leader_epoch: AtomicI64,
    /// Everything below this offset is fsynced.
    durable: AtomicI64,
    /// Serializes fsyncs so that concurrent acks=all producers share one (group commit).
    flush_lock: tokio::sync::Mutex<()>,
    /// Fetches parked until new data arrives register here; each append wakes and clears them.
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// Number of appends so far (see [`Partition::change_count`]).
    changes: std::sync::atomic::AtomicU64,
    /// Sequence and transaction state of producers; locked before the log.
    producers: Mutex<ProducerStates>,
    /// Log end offset of the newest producer-state snapshot (-1: none).
    last_snapshot: AtomicI64,
    /// The broker's log directories; an I/O error here takes directory `dir_index` offline.
    dirs: Arc<LogDirs>,
    /// Which of `dirs` holds this partition's directory.
    dir_index: usize,
    /// Set, under the log lock, when the topic is deleted and the directory renamed away: a handle still held by
    /// a request must never write again, least of all into a re-created topic's directory of the same name.
    deleted: AtomicBool,
    /// Test-only fault injection (see [`Partition::fail_next_io_for_test`]).
    fail_next_io: AtomicBool,
    /// Test-only fault injection (see [`Partition::fail_next_fsync_for_test`]).
    fail_next_fsync: AtomicBool,
    /// This broker's id.
    node_id: i32,
    /// Leader, epochs, ISR and (on the leader) the followers' positions; see [`replica`].
    repl: Mutex<ReplState>,
    /// The high watermark (see [`Partition::high_watermark`]).
    hw: AtomicI64,
    /// Woken when the high watermark moves or the partition's role changes.
    hw_changed: Notify,
    /// Bumped (under the log lock) by every follower truncation: an fsync that started before one proves nothing
    /// about what was appended after it.
    truncations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("index", &self.index)
            .field("topic_id", &self.topic_id)
            .field("log_dir", &self.log_dir())
            .finish_non_exhaustive()
    }
}

/// File name of a producer-state snapshot taken when the log ended at `offset` (Kafka's naming).
fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Offsets of the snapshot files in `dir`, ascending.
fn snapshot_offsets(fs: &dyn Storage, dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for name in fs.list(dir)? {
        if let Some(o) = name
            .strip_suffix(".snapshot")
            .and_then(|n| n.parse::<i64>().ok())
        {
            out.push(o);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The newest usable snapshot: taken at or below the log end offset (recovery may have cut the tail the others
/// describe; those are deleted) and readable.
fn load_snapshot(
    fs: &dyn Storage,
    dir: &Path,
    log_end: i64,
) -> Result<Option<(i64, ProducerStates)>> {
    let offsets = snapshot_offsets(fs, dir)?;
    for &o in offsets.iter().filter(|o| **o > log_end) {
        tracing::info!(dir = %dir.display(), offset = o, "deleting producer snapshot beyond the log end");
        fs.remove_file(&snapshot_path(dir, o))?;
    }
    for &o in offsets.iter().rev().filter(|o| **o <= log_end) {
        match fs.read(&snapshot_path(dir, o)) {
            Ok(data) => match ProducerStates::decode(&data) {
                Some(states) => return Ok(Some((o, states))),
                None => {
                    tracing::warn!(dir = %dir.display(), offset = o, "ignoring a damaged producer snapshot")
                }
            },
            Err(e) => {
                tracing::warn!(dir = %dir.display(), offset = o, error = %e, "cannot read a producer snapshot")
            }
        }
    }
    Ok(None)
}

/// Rebuilds producer sequence and transaction state: the newest snapshot, then the batches after it (headers,
/// plus the one record of each control batch). Aborted transactions found in that range are (re-)entered in the
/// log's `.txnindex` files; those below it are already there.
fn rebuild_producers(fs: &dyn Storage, log: &mut Log) -> Result<(ProducerStates, i64)> {
    let end = log.log_end_offset();
    let (mut states, snapshot) = match load_snapshot(fs, log.dir(), end)? {
        Some((o, s)) => (s, o),
        None => (ProducerStates::default(), -1),
    };
    let mut offset = snapshot.max(log.log_start_offset());
    log.truncate_aborted_from(offset)?;
    while offset < end {
        let chunk = log.read(offset, 1 << 20, end, true)?;
        if chunk.records.is_empty() {
            break;
        }
        let next = fjord_log::batch_headers(&chunk.records)
            .last()
            .map_or(offset, |b| b.last_offset + 1);
        for a in record_batches(&mut states, &chunk.records) {
            log.add_aborted_txn(a)?;
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok((states, snapshot))
}

/// Records the producer state of batches already in the log (their sequences, and the one record of each
/// control batch): what replaying a log at open and a follower's append both do. Returns the aborted transactions
/// the markers among them end, for the log's `.txnindex`.
fn record_batches(states: &mut ProducerStates, records: &[u8]) -> Vec<AbortedTxn> {
    let mut pos = 0usize;
    let mut aborted = Vec::new();
    for b in fjord_log::batch_headers(records) {
        if b.is_control {
            if let Some((kind, coordinator_epoch)) = fjord_log::control_marker(&records[pos..]) {
                aborted.extend(states.record_marker(
                    b.producer_id,
                    b.producer_epoch,
                    kind == ControlType::Commit,
                    b.base_offset,
                    coordinator_epoch.unwrap_or(-1),
                ));
            }
        } else {
            states.record(&b);
        }
        pos += b.size;
    }
    aborted
}

/// Who is appending: clients are checked (sequences, no control batches); the broker's own coordinators
/// write transactional offset commits without sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Client,
    Coordinator,
}

/// A read for Fetch: the batches plus the offsets and aborted transactions the response reports.
pub struct FetchRead {
    pub records: Bytes,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// For read_committed: the aborted transactions with records in the returned range.
    pub aborted: Vec<AbortedTxn>,
}

/// The last stable offset: the first unstable offset, within [log start offset, high watermark]. DeleteRecords or
/// retention may remove an open transaction's first batches; the LSO then stands at the log start, as Kafka's.
fn stable_offset(first_unstable: Option<i64>, log_start: i64, hw: i64) -> i64 {
    first_unstable.map_or(hw, |f| f.min(hw).max(log_start))
}

impl Partition {
    /// The log, for in-memory state only (offsets, timestamps already known). Anything that may touch files goes
    /// through [`Partition::log`].
    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock would be a bug in fjord-log; the log itself stays consistent on disk
        // (recovery re-validates), so continuing with the inner value is the most useful behaviour.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log, for an operation that may read or write files: refused once the log directory is offline or
    /// the partition was deleted. Checked under the lock, which deletion also takes to rename the directory, so
    /// no write through this handle can follow a deletion.
    fn log(&self) -> Result<MutexGuard<'_, Log>> {
        let log = self.lock();
        self.check_online()?;
        Ok(log)
    }

    /// `Ok` while the partition can be served: not deleted, and its log directory online.
    pub fn check_online(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::Deleted(format!("{}-{}", self.topic, self.index)));
        }
        if self.dirs.is_offline(self.dir_index) {
            return Err(Error::Storage(format!(
                "{}-{} is offline: its log directory {} failed with an I/O error",
                self.topic,
                self.index,
                self.dirs.path(self.dir_index).display()
            )));
        }
        Ok(())
    }

    /// Runs an operation on the log's files. An I/O error takes the log directory offline: it is a fact about
    /// the disk, never retried (a failed fsync may have dropped the very pages a retry would call durable).
    fn io<T>(&self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = if self.fail_next_io.swap(false, Ordering::AcqRel) {
            Err(Error::Io(std::io::Error::other(
                "I/O error injected by a test",
            )))
        } else {
            op()
        };
        if let Err(e) = &result {
            self.report(e);
        }
        result
    }

    fn report(&self, e: &Error) {
        // A write racing a deletion finds its directory renamed away: that is no fault of the disk.
        if e.is_disk_fault() && !self.deleted.load(Ordering::Acquire) {
            self.dirs.fail(
                self.dir_index,
                &format_args!("{}-{}: {e}", self.topic, self.index),
            );
        }
    }

    /// **Test-only:** the next operation on this partition's files (append, read, fsync in
    /// [`Partition::wait_durable`], housekeeping, snapshot) fails with an I/O error instead of running, exactly as
    /// if the disk had refused it. Exists because a real disk fault cannot be produced on demand in a test; no
    /// production path calls it.
    #[doc(hidden)]
    pub fn fail_next_io_for_test(&self) {
        self.fail_next_io.store(true, Ordering::Release);
    }

    /// **Test-only:** the next fsync of [`Partition::wait_durable`] fails with an I/O error instead of running,
    /// after the data was appended: the acks=all case of a disk that took the write and then could not make it
    /// durable. No production path calls it.
    #[doc(hidden)]
    pub fn fail_next_fsync_for_test(&self) {
        self.fail_next_fsync.store(true, Ordering::Release);
    }

    /// Where this partition's directory lives (one of `log.dirs`).
    pub fn log_dir(&self) -> &Path {
        self.dirs.path(self.dir_index)
    }

    /// Appends a client's batches (sequence-checked when they carry a producer id).
    pub fn append(&self, records: Bytes) -> Result<AppendInfo> {
        self.append_from(records, Origin::Client)
    }

    pub fn append_from(&self, records: Bytes, origin: Origin) -> Result<AppendInfo> {
        self.io(|| self.append_locked(records, origin, None))
    }

    /// KIP-890 part 1 for a producer whose transaction coordinator is another broker: `None` when the producer's
    /// transaction is already open here (its first batch was verified), else a guard to verify the partition with
    /// the coordinator (AddPartitionsToTxn `verify_only`) and then to pass to [`Partition::append_verified`].
    pub fn start_txn_verification(&self, producer_id: i64, epoch: i16) -> Option<u64> {
        let mut producers = self.lock_producers();
        (!producers.in_transaction(producer_id, epoch))
            .then(|| producers.start_verification(producer_id))
    }

    /// Forgets a verification once its append was tried or its check failed (see
    /// [`Partition::start_txn_verification`]).
    pub fn finish_txn_verification(&self, producer_id: i64, guard: u64) {
        self.lock_producers()
            .finish_verification(producer_id, guard);
    }

    /// Appends batches whose transactional ones must belong to an open transaction here or carry the
    /// still-current `guard` of a verification (a marker since then voids it: INVALID_TXN_STATE). A client's
    /// Produce and a coordinator's transactional offset commit both check their transaction first and append
    /// later; the guard, taken before the check, makes a marker in between refuse the append.
    pub fn append_verified(
        &self,
        records: Bytes,
        origin: Origin,
        guard: Option<u64>,
    ) -> Result<AppendInfo> {
        self.io(|| self.append_locked(records, origin, Some(guard)))
    }

    /// `verified`: `Some(guard)` when transactional batches must pass [`ProducerStates::check_verified`].
    fn append_locked(
        &self,
        records: Bytes,
        origin: Origin,
        verified: Option<Option<u64>>,
    ) -> Result<AppendInfo> {
        let repl = self.lock_repl();
        replica::check_leader_in(&repl, self, -1)?;
        let epoch = repl.leader_epoch;
        // Only the headers are read here; `Log::append` validates each batch (CRC included) once.
        let batches: Vec<_> = fjord_log::batch_headers(&records).collect();
        if batches
            .iter()
            .all(|b| b.producer_id < 0 && !b.is_control && !b.is_transactional)
        {
            let mut log = self.log()?;
            let info = log.append(records, epoch, now_ms())?;
            let leo = log.log_end_offset();
            drop(log);
            self.advance_hw(&repl, leo);
            drop(repl);
            self.wake_waiters();
            return Ok(info);
        }
        // Producer ids: check sequences and append under one lock order (producers, then log).
        let mut producers = self.lock_producers();
        let mut log = self.log()?;
        if origin == Origin::Client {
            let verdicts = batches
                .iter()
                .map(|b| producers.check(b))
                .collect::<Result<Vec<_>, _>>()?;
            if let [Verdict::Duplicate {
                base_offset,
                last_offset,
            }] = verdicts[..]
            {
                // A retry is answered without appending, but only if it is a well-formed batch.
                fjord_log::validate_batches(&records, log.config().max_message_bytes)?;
                tracing::debug!(topic = %self.topic, partition = self.index, base_offset, "duplicate batch from an idempotent producer");
                return Ok(AppendInfo {
                    base_offset,
                    last_offset,
                    log_append_time: -1,
                    max_timestamp: -1,
                    log_start_offset: log.log_start_offset(),
                    batches: Vec::new(),
                    // The original's epoch, as the log records it.
                    leader_epoch: log.epoch_at(last_offset).unwrap_or(-1),
                });
            }
            if verdicts.iter().any(|v| *v != Verdict::Append) {
                // A request mixing retried and new batches cannot be split; the producer retries it.
                return Err(crate::producers::ProducerError::OutOfOrder {
                    expected: -1,
                    got: batches[0].base_sequence,
                }
                .into());
            }
        } else if batches.iter().any(|b| b.is_control) {
            return Err(crate::producers::ProducerError::InvalidRecord(
                "markers are written with append_marker",
            )
            .into());
        }
        if let Some(guard) = verified {
            for b in batches.iter().filter(|b| b.is_transactional) {
                producers.check_verified(b.producer_id, b.producer_epoch, guard)?;
            }
        }
        let info = log.append(records, epoch, now_ms())?;
        for b in &info.batches {
            producers.record(b);
        }
        let leo = log.log_end_offset();
        drop(log);
        drop(producers);
        self.advance_hw(&repl, leo);
        drop(repl);
        self.wake_waiters();
        Ok(info)
    }

    /// Writes a transaction marker for `producer_id` and returns its offset. Ends the producer's open
    /// transaction here (moving the last stable offset on) and, for an abort, records the aborted range.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        kind: ControlType,
        coordinator_epoch: i32,
    ) -> Result<(i64, i32)> {
        self.io(|| self.append_marker_locked(producer_id, producer_epoch, kind, coordinator_epoch))
    }

    fn append_marker_locked(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        kind: ControlType,
        coordinator_epoch: i32,
    ) -> Result<(i64, i32)> {
        let repl = self.lock_repl();
        replica::check_leader_in(&repl, self, -1)?;
        let epoch = repl.leader_epoch;
        let now = now_ms();
        let batch =
            fjord_log::control_batch(producer_id, producer_epoch, kind, coordinator_epoch, now);
        let mut producers = self.lock_producers();
        producers.check_marker(producer_id, producer_epoch, coordinator_epoch)?;
        let mut log = self.log()?;
        let info = log.append(batch, epoch, now)?;
        if let Some(aborted) = producers.record_marker(
            producer_id,
            producer_epoch,
            kind == ControlType::Commit,
            info.base_offset,
            coordinator_epoch,
        ) {
            log.add_aborted_txn(aborted)?;
        }
        let leo = log.log_end_offset();
        drop(log);
        drop(producers);
        self.advance_hw(&repl, leo);
        drop(repl);
        self.wake_waiters();
        Ok((info.base_offset, epoch))
    }

    fn lock_producers(&self) -> std::sync::MutexGuard<'_, ProducerStates> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads for a fetch. read_committed stops at the last stable offset and lists the aborted transactions
    /// among the returned batches.
    pub fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<FetchRead> {
        self.io(|| self.fetch_locked(offset, max_bytes, min_one_batch, read_committed))
    }

    fn fetch_locked(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<FetchRead> {
        let producers = self.lock_producers();
        let log = self.log()?;
        let hw = self.high_watermark().min(log.log_end_offset());
        let lso = stable_offset(
            producers.first_unstable_offset(),
            log.log_start_offset(),
            hw,
        );
        let upper = if read_committed { lso } else { hw };
        let r = log.read(offset, max_bytes, upper, min_one_batch)?;
        let aborted = if read_committed && !r.records.is_empty() {
            let end = fjord_log::batch_headers(&r.records)
                .last()
                .map_or(offset, |b| b.last_offset + 1);
            log.aborted_between(offset, end)
        } else {
            Vec::new()
        };
        Ok(FetchRead {
            records: r.records,
            log_start_offset: r.log_start_offset,
            high_watermark: hw,
            last_stable_offset: lso,
            aborted,
        })
    }

    /// The offset read_committed consumers may read up to: the first offset of the earliest open transaction,
    /// or the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        let producers = self.lock_producers();
        let log = self.lock();
        stable_offset(
            producers.first_unstable_offset(),
            log.log_start_offset(),
            self.high_watermark().min(log.log_end_offset()),
        )
    }

    pub fn producers(&self) -> Vec<ProducerView> {
        self.lock_producers().describe()
    }

    pub fn read(&self, offset: i64, max_bytes: usize, min_one_batch: bool) -> Result<ReadInfo> {
        self.io(|| {
            let log = self.log()?;
            let hw = self.high_watermark().min(log.log_end_offset());
            Ok(log.read(offset, max_bytes, hw, min_one_batch)?)
        })
    }

    /// [`read`](Self::read) (up to the high watermark, records of open transactions included) with the aborted
    /// transactions among the returned batches, listed as [`fetch`](Self::fetch) lists them for read_committed:
    /// for a reader that shows what is pending but never what was aborted (the dashboard).
    pub fn read_with_aborted(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<(Bytes, Vec<AbortedTxn>)> {
        self.io(|| {
            let log = self.log()?;
            let hw = self.high_watermark().min(log.log_end_offset());
            let r = log.read(offset, max_bytes, hw, min_one_batch)?;
            let aborted = match fjord_log::batch_headers(&r.records).last() {
                Some(b) => log.aborted_between(offset, b.last_offset + 1),
                None => Vec::new(),
            };
            Ok((r.records, aborted))
        })
    }

    /// (log start offset, high watermark).
    pub fn offsets(&self) -> (i64, i64) {
        let log = self.lock();
        (
            log.log_start_offset(),
            self.high_watermark().min(log.log_end_offset()),
        )
    }

    /// The batches from `offset` up to the log end, ignoring the high watermark: what this replica holds, for
    /// tools and tests that compare replicas. Never served to clients.
    pub fn read_to_log_end(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.io(|| {
            let log = self.log()?;
            let end = log.log_end_offset();
            Ok(log.read(offset, max_bytes, end, true)?.records)
        })
    }

    /// The leader epoch cache, (epoch, start offset) ascending.
    pub fn leader_epochs_for_test(&self) -> Vec<(i32, i64)> {
        self.lock().leader_epochs().to_vec()
    }

    /// The newest leader epoch in this log (-1: none).
    pub fn latest_epoch(&self) -> i32 {
        self.lock().latest_epoch().unwrap_or(-1)
    }

    /// The log end offset (on a leader with followers, possibly above the high watermark).
    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset()
    }

    /// The leader epoch this broker writes the partition's batches in (from the metadata).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Relaxed) as i32
    }

    /// OffsetForLeaderEpoch: (epoch, end offset) of `epoch` in this log (Kafka's `endOffsetForEpoch`; -1, -1
    /// when undefined). In-memory: the leader epoch cache is loaded at open.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.lock().end_offset_for_epoch(epoch)
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        self.io(|| Ok(self.log()?.offset_for_timestamp(ts)?))
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.lock().max_timestamp()
    }

    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        self.io(|| Ok(self.log()?.delete_records_before(offset)?))
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().size_bytes()
    }

    /// Returns once every offset below `offset` is on disk. Concurrent callers share fsyncs: whoever holds the
    /// flush lock syncs everything appended so far, and the others find their offset already durable.
    pub async fn wait_durable(&self, offset: i64) -> Result<()> {
        if self.durable.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        let _guard = self.flush_lock.lock().await;
        if self.durable.load(Ordering::Acquire) >= offset {
            return Ok(());
        }
        // After a failed fsync nothing is synced again: the kernel may have dropped the dirty pages it could not
        // write, and a second fsync would then succeed and call lost data durable. Waiters behind the failed
        // one land here and get the storage error too (the directory is offline, and the log itself refuses).
        let (handle, generation) = self.io(|| {
            let log = self.log()?;
            Ok((
                log.flush_handle()?,
                self.truncations.load(Ordering::Acquire),
            ))
        })?;
        let to = handle.flush_to();
        let synced = if self.fail_next_fsync.swap(false, Ordering::AcqRel)
            || self.fail_next_io.swap(false, Ordering::AcqRel)
        {
            Err(fjord_log::Error::Io(std::io::Error::other(
                "fsync error injected by a test",
            )))
        } else {
            let dirs = self.dirs.clone();
            tokio::task::spawn_blocking(move || {
                let t = std::time::Instant::now();
                let r = handle.sync();
                dirs.observe_flush(t.elapsed());
                r.map(|()| handle)
            })
            .await
            .map_err(|e| Error::Internal(format!("flush task failed: {e}")))?
        };
        let applied = match synced {
            Ok(handle) => self.apply_sync(&handle, generation),
            Err(e) => {
                self.lock().mark_failed(&format!("fsync failed: {e}"));
                Err(Error::from(e))
            }
        };
        if let Err(e) = applied {
            if matches!(e, Error::NotLeader(_)) {
                return Err(e);
            }
            tracing::error!(topic = %self.topic, partition = self.index, error = %e, "fsync failed");
            self.report(&e);
            return Err(e);
        }
        debug_assert!(self.durable.load(Ordering::Acquire) >= to);
        Ok(())
    }

    /// Records a successful sync: the log's flushed offset and recovery point (written under the log lock, which
    /// a deletion also takes, so it never lands in a deleted or re-created directory), then `durable`. Refused
    /// once the partition was deleted or the log failed: a sync that "succeeded" after another failed proves
    /// nothing.
    fn apply_sync(&self, handle: &fjord_log::FlushHandle, generation: u64) -> Result<()> {
        let mut log = self.log()?;
        if self.truncations.load(Ordering::Acquire) != generation {
            return Err(Error::NotLeader(format!(
                "{}-{} was truncated while its fsync ran; nothing appended since is marked durable by it",
                self.topic, self.index
            )));
        }
        if !log.mark_synced(handle)? {
            return Err(Error::Log(fjord_log::Error::Damaged(format!(
                "{}-{}: an earlier fsync failed; nothing is acknowledged as durable any more",
                self.topic, self.index
            ))));
        }
        self.durable.fetch_max(handle.flush_to(), Ordering::AcqRel);
        Ok(())
    }

    /// Registers `notify` to be woken by the next append. Register before reading to never miss a wake-up.
    pub fn register_waiter(&self, notify: &Arc<Notify>) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Bound the list: a waiter that timed out stays until the next append; many idle consumers on a quiet
        // partition must not grow this without limit.
        if w.len() >= 10_000 {
            w.retain(|n| Arc::strong_count(n) > 1);
        }
        w.push(notify.clone());
    }

    /// Parked fetches registered with this partition right now (for tests and diagnostics).
    pub fn waiter_count(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Bumped by every append (before parked fetches are woken): a fetch re-reads only partitions whose count
    /// moved since its last read.
    pub fn change_count(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn wake_waiters(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters {
            w.notify_one();
        }
    }

    /// Periodic housekeeping: roll by age, retention, compaction.
    pub fn housekeeping(&self, compact: bool, producer_expiration_ms: i64) -> Result<()> {
        self.io(|| {
            self.flush_rolled_segments()?;
            self.housekeeping_locked(compact, producer_expiration_ms)
        })
    }

    fn housekeeping_locked(&self, compact: bool, producer_expiration_ms: i64) -> Result<()> {
        let now = now_ms();
        let expired = self.lock_producers().expire(now, producer_expiration_ms);
        // Taken before the log lock (lock order); the LSO only grows, so an older value is conservative.
        let stable = self.last_stable_offset();
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, expired, "expired idle producer ids");
        }
        let mut log = self.log()?;
        let deleted = log.enforce_retention(now)?;
        if deleted > 0 {
            tracing::info!(topic = %self.topic, partition = self.index, deleted, "retention deleted segments");
        }
        let mut plan = if compact && log.config().cleanup_compact {
            log.plan_compaction(now, stable)
        } else {
            None
        };
        let dir = log.dir().to_path_buf();
        drop(log);
        if let Some(plan) = plan.as_mut() {
            // A commit marker may go only below the oldest snapshot a restart could load: every snapshot
            // then already knows its transaction ended. Without snapshots, markers stay.
            if let Some(oldest) = snapshot_offsets(&**self.dirs.storage(), &dir)?.first() {
                plan.remove_empty_commit_markers_below(*oldest);
            }
        }
        if let Some(plan) = plan {
            // The pass reads inactive segments and writes cleaned copies without the lock; appends and
            // fetches go on meanwhile. Only the swap takes the lock again.
            let result = plan.run()?;
            let reclaimed = self.log()?.finish_compaction(result)?;
            if reclaimed > 0 {
                tracing::info!(topic = %self.topic, partition = self.index, reclaimed, "compaction reclaimed bytes");
            }
        }
        self.maybe_snapshot(false)
    }

    /// Writes a producer-state snapshot when a segment was rolled since the last one (Kafka snapshots at
    /// rolls too), or always with `force` (clean shutdown) unless nothing was appended since. Keeps the newest
    /// two snapshots.
    pub fn maybe_snapshot(&self, force: bool) -> Result<()> {
        self.io(|| self.snapshot_locked(force))
    }

    fn snapshot_locked(&self, force: bool) -> Result<()> {
        let last = self.last_snapshot.load(Ordering::Acquire);
        let (offset, data) = {
            let producers = self.lock_producers();
            let mut log = self.log()?;
            let end = log.log_end_offset();
            let rolled = log.active_base_offset() > last;
            if end == last || !(force || rolled) {
                return Ok(());
            }
            // The snapshot relies on the aborted-transaction entries below its offset being durable.
            log.sync_txn_indexes()?;
            (end, producers.encode())
        };
        // ... and on the batches below its offset: a snapshot durable ahead of them would, after a power loss
        // that kept a later segment but not the unsynced tail of an earlier one, describe sequences the log no
        // longer has (found by the partition fault harness). Once per roll, so the fsync costs little.
        self.sync_log()?;
        // Written under the log lock, which a deletion takes to rename the directory: a snapshot of a deleted
        // topic never lands in a re-created one of the same name. A small file, once per roll.
        let log = self.log()?;
        let dir = log.dir().to_path_buf();
        let fs = &**self.dirs.storage();
        // Temporary file, fsync, rename, fsync of the directory: a snapshot is whole or absent.
        st::write_atomic(fs, &snapshot_path(&dir, offset), &data)?;
        self.last_snapshot.store(offset, Ordering::Release);
        let offsets = snapshot_offsets(fs, &dir)?;
        for o in &offsets[..offsets.len().saturating_sub(2)] {
            fs.remove_file(&snapshot_path(&dir, *o))?;
        }
        drop(log);
        Ok(())
    }

    fn set_config(&self, config: LogConfig) {
        let mut log = self.lock();
        if *log.config() != config {
            log.set_config(config);
        }
    }

    /// fsyncs segments rolled since the last flush, outside the log lock (Kafka flushes a segment in the
    /// background when it rolls). The recovery point then moves past them, so an unclean restart re-validates at
    /// most the active segment, and compaction, which cleans only durable data, keeps up under acks=1 traffic.
    /// Call from a blocking thread. Skipped while another flush runs (it or the next round covers the segments).
    pub fn flush_rolled_segments(&self) -> Result<()> {
        let Ok(_guard) = self.flush_lock.try_lock() else {
            return Ok(());
        };
        let (handle, generation) = {
            let log = self.log()?;
            if !log.has_unflushed_rolled_segments() {
                return Ok(());
            }
            (
                log.flush_handle()?,
                self.truncations.load(Ordering::Acquire),
            )
        };
        self.sync_handle(&handle, generation)
    }

    /// fsyncs everything appended so far, outside the log lock.
    fn sync_log(&self) -> Result<()> {
        let (handle, generation) = {
            let log = self.log()?;
            (
                log.flush_handle()?,
                self.truncations.load(Ordering::Acquire),
            )
        };
        self.sync_handle(&handle, generation)
    }

    /// Syncs `handle` (outside the log lock) and records it; a failure fails the log, never to be retried.
    fn sync_handle(&self, handle: &fjord_log::FlushHandle, generation: u64) -> Result<()> {
        let t = std::time::Instant::now();
        let synced = handle.sync();
        self.dirs.observe_flush(t.elapsed());
        if let Err(e) = synced {
            self.lock().mark_failed(&format!("fsync failed: {e}"));
            return Err(e.into());
        }
        self.apply_sync(handle, generation)
    }

    /// fsyncs everything appended so far (`log.flush.interval.ms`, shutdown). The fsync runs outside the log
    /// lock, so appends and fetches of this partition go on meanwhile.
    pub fn flush(&self) -> Result<()> {
        self.io(|| self.sync_log())
    }
}

/// All partitions hosted here, keyed by (topic, partition).
pub struct PartitionManager {
    dirs: Arc<LogDirs>,
    node_id: i32,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    /// Serializes `sync_with`, which opens new logs without holding `partitions` (opening thousands of logs must
    /// not stall the produces and fetches of every other partition).
    sync_lock: Mutex<()>,
    /// Partitions the metadata assigns here that could not be opened, with their topic id and the reason; they
    /// answer KAFKA_STORAGE_ERROR. Not retried before a restart: the cause needs an operator.
    unopened: Mutex<HashMap<(String, i32), (Uuid, String)>>,
    /// Set after the first sync (start-up). Before it, every partition the metadata assigns here should already
    /// have a directory; one not found while a log directory is offline may well live there, so it is not
    /// created anew elsewhere (that would restart its offsets at 0 under the clients' feet).
    started: AtomicBool,
}

/// Why a partition directory cannot be used.
enum DirProblem {
    /// A fault of the disk: the log directory goes offline.
    Io(std::io::Error),
    /// Content nobody can vouch for (a damaged `partition.metadata`, data without one): the partition stays
    /// offline and the directory untouched.
    Unusable(String),
}

impl From<std::io::Error> for DirProblem {
    fn from(e: std::io::Error) -> Self {
        DirProblem::Io(e)
    }
}

impl PartitionManager {
    pub fn new(dirs: Arc<LogDirs>, node_id: i32) -> Self {
        Self {
            dirs,
            node_id,
            partitions: RwLock::new(HashMap::new()),
            sync_lock: Mutex::new(()),
            unopened: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
        }
    }

    /// The log directories and their online/offline state.
    pub fn dirs(&self) -> &Arc<LogDirs> {
        &self.dirs
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// The partition, if hosted here and able to serve: `Ok(None)` when it is not hosted here (Kafka's
    /// UNKNOWN_TOPIC_OR_PARTITION), `Err` (KAFKA_STORAGE_ERROR) when it is hosted here but its log directory is
    /// offline or its directory could not be opened.
    pub fn online(&self, topic: &str, partition: i32) -> Result<Option<Arc<Partition>>> {
        if let Some(p) = self.get(topic, partition) {
            p.check_online()?;
            return Ok(Some(p));
        }
        let unopened = self.lock_unopened();
        match unopened.get(&(topic.to_string(), partition)) {
            Some((_, reason)) => Err(Error::Storage(reason.clone())),
            None => Ok(None),
        }
    }

    /// Whether the partition is assigned here but cannot serve from disk (reported as an offline replica).
    pub fn is_offline(&self, topic: &str, partition: i32) -> bool {
        matches!(self.online(topic, partition), Err(Error::Storage(_)))
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn lock_unopened(&self) -> MutexGuard<'_, HashMap<(String, i32), (Uuid, String)>> {
        self.unopened.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the hosted partitions in line with the metadata: opens logs for new partitions, applies config
    /// changes, and deletes the logs of deleted topics. Called at start-up and on every metadata change.
    pub fn sync_with(&self, state: &ClusterState, config: &BrokerConfig) -> Result<()> {
        let _serial = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_locked(state, config)
    }

    /// [`PartitionManager::sync_with`] the metadata's latest state, read only once this broker's syncs are
    /// serialized: syncs then apply states in the order the metadata applied them. (Applying a snapshot taken
    /// before a newer one was applied would delete the partitions of a topic created in between, and hand
    /// leadership back to an older epoch.)
    pub fn sync_latest(&self, meta: &fjord_meta::Meta, config: &BrokerConfig) -> Result<()> {
        let _serial = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let state = meta.state();
        self.sync_locked(&state, config)
    }

    fn sync_locked(&self, state: &ClusterState, config: &BrokerConfig) -> Result<()> {
        let mut wanted: BTreeMap<(String, i32), (Uuid, PartitionMeta, LogConfig)> = BTreeMap::new();
        for t in state.topics.values() {
            let lc = config.log_config_dynamic(&state.broker_configs, &t.configs);
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&self.node_id) {
                    wanted.insert((t.name.clone(), i as i32), (t.id, p.clone(), lc.clone()));
                }
            }
        }
        let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        let mut unopened = self.lock_unopened();
        unopened.retain(|k, (id, _)| wanted.get(k).is_some_and(|(w, _, _)| w == id));
        // Remove partitions that are gone or belong to an older incarnation of the topic.
        let stale: Vec<(String, i32)> = parts
            .iter()
            .filter(|(k, p)| wanted.get(*k).is_none_or(|(id, _, _)| *id != p.topic_id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(p) = parts.remove(&key) {
                self.retire(p);
            }
        }
        let mut new = Vec::new();
        let mut changed = Vec::new();
        for (key, (id, pm, lc)) in wanted {
            if let Some(p) = parts.get(&key) {
                p.set_config(lc);
                changed.push((p.clone(), pm));
                continue;
            }
            if !unopened.contains_key(&key) {
                new.push((key, id, pm, lc));
            }
        }
        // New logs are opened (recovered, created) without the map's lock: requests for every other partition
        // go on meanwhile, and those for the new ones see them once they are ready.
        drop(parts);
        let mut opened_now = Vec::new();
        // Partitions whose directory exists in some log directory are opened there first, so that the counts
        // that place the new ones (fewest partitions first, as Kafka) are complete.
        let mut fresh = Vec::new();
        let mut located = Vec::new();
        for n in new {
            match self.locate(&n.0, n.1) {
                Ok(Some(i)) => located.push((i, n)),
                Ok(None) => fresh.push(n),
                Err(reason) => {
                    tracing::error!(topic = %n.0 .0, partition = n.0 .1, "{reason}");
                    unopened.insert(n.0, (n.1, reason));
                }
            }
        }
        if !self.started.swap(true, Ordering::AcqRel) && self.dirs.any_offline() {
            let offline: Vec<String> = (0..self.dirs.len())
                .filter(|i| self.dirs.is_offline(*i))
                .map(|i| self.dirs.path(i).display().to_string())
                .collect();
            for (key, id, _, _) in fresh.drain(..) {
                let reason = format!(
                    "{}-{} is not in any online log directory and may be in the offline one(s) ({}); it is not \
                     created anew elsewhere. Restart the broker once the directory is back",
                    key.0,
                    key.1,
                    offline.join(", ")
                );
                tracing::error!(topic = %key.0, partition = key.1, "{reason}");
                unopened.insert(key, (id, reason));
            }
        }
        let placed = fresh.into_iter().map(|n| (self.place(), n));
        for (dir, (key, id, pm, lc)) in located.into_iter().map(|(i, n)| (Some(i), n)).chain(placed)
        {
            let opened = match dir {
                Some(i) => self.open(i, &key, id, lc),
                None => Err("no log directory is online".to_string()),
            };
            match opened {
                Ok(p) => {
                    self.dirs.add_hosted(p.dir_index, 1);
                    let p = Arc::new(p);
                    changed.push((p.clone(), pm));
                    opened_now.push((key, p));
                }
                Err(reason) => {
                    unopened.insert(key, (id, reason));
                }
            }
        }
        // Roles first, then visible: a request never finds a new partition before it knows its leader.
        for (p, pm) in changed {
            if let Err(e) = p.apply_meta(&pm) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "applying a leadership change failed");
            }
        }
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(opened_now);
        self.dirs.set_unopened(unopened.len());
        Ok(())
    }

    /// The online log directory that holds `<topic>-<partition>`, if any. A directory that cannot even be looked
    /// at goes offline. Found in several: those whose well-formed `partition.metadata` names another topic id are
    /// older incarnations and are renamed aside for deletion if exactly one holds topic `id`; any other mix is an
    /// error (Kafka refuses to start then) and none of them is served.
    fn locate(&self, key: &(String, i32), id: Uuid) -> Result<Option<usize>, String> {
        let name = format!("{}-{}", key.0, key.1);
        let mut found = Vec::new();
        for i in 0..self.dirs.len() {
            if self.dirs.is_offline(i) {
                continue;
            }
            let path = self.dirs.path(i).join(&name);
            match self.dirs.storage().try_exists(&path) {
                Ok(true) => found.push(i),
                Ok(false) => {}
                Err(e) => self
                    .dirs
                    .fail(i, &format_args!("cannot look up {}: {e}", path.display())),
            }
        }
        if found.len() > 1 {
            let ids: Vec<Option<Uuid>> = found
                .iter()
                .map(|i| {
                    let meta = self.dirs.path(*i).join(&name).join(PARTITION_METADATA);
                    self.dirs
                        .storage()
                        .read(&meta)
                        .ok()
                        .and_then(|b| parse_partition_metadata(&b))
                })
                .collect();
            let ours: Vec<usize> = (0..found.len()).filter(|j| ids[*j] == Some(id)).collect();
            if ours.len() == 1 && ids.iter().all(Option::is_some) {
                for (j, i) in found.iter().enumerate() {
                    if j == ours[0] {
                        continue;
                    }
                    let parent = self.dirs.path(*i);
                    let fs = self.dirs.storage();
                    match rename_for_delete(&**fs, parent, &parent.join(&name), &key.0, key.1) {
                        Ok(to) => {
                            tracing::warn!(dir = %parent.join(&name).display(), moved_to = %to.display(),
                                "a copy of the partition from a deleted topic of the same name; moved aside for deletion");
                            remove_in_background(fs, to);
                        }
                        Err(e) => self
                            .dirs
                            .fail(*i, &format_args!("renaming {name} for deletion: {e}")),
                    }
                }
                found = vec![found[ours[0]]];
            }
        }
        match found[..] {
            [] => Ok(None),
            [i] => Ok(Some(i)),
            _ => Err(format!(
                "{name} exists in several log directories ({}); none of them is served rather than guess which \
                 holds the acknowledged data. Keep the right one, move the others out of log.dirs, then restart \
                 the broker",
                found
                    .iter()
                    .map(|i| self.dirs.path(*i).display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The online log directory for a new partition: the one hosting the fewest partitions (the first on ties).
    fn place(&self) -> Option<usize> {
        (0..self.dirs.len())
            .filter(|i| !self.dirs.is_offline(*i))
            .min_by_key(|i| self.dirs.hosted(*i))
    }

    /// Opens `<topic>-<partition>` in log directory `i`. `Err` is the reason it stays offline (already logged);
    /// an I/O error has taken the log directory offline too.
    fn open(
        &self,
        i: usize,
        key: &(String, i32),
        id: Uuid,
        lc: LogConfig,
    ) -> std::result::Result<Partition, String> {
        let parent = self.dirs.path(i);
        let dir = parent.join(format!("{}-{}", key.0, key.1));
        if self.dirs.is_offline(i) {
            return Err(format!(
                "{}-{} is offline: its log directory {} failed with an I/O error",
                key.0,
                key.1,
                parent.display()
            ));
        }
        let fault = |e: &dyn std::fmt::Display, limit: bool| {
            let hint = if limit {
                "; the broker ran out of open files: raise its limit (ulimit -n, LimitNOFILE) and restart it"
            } else {
                ""
            };
            let reason = format!("cannot open {}: {e}{hint}", dir.display());
            tracing::error!(topic = %key.0, partition = key.1, "{reason}");
            reason
        };
        let fs = self.dirs.storage();
        match prepare_partition_dir(fs, parent, &dir, &key.0, key.1, id) {
            Ok(()) => {}
            Err(DirProblem::Io(e)) => {
                let limit = crate::is_process_limit(&e);
                if !limit {
                    self.dirs
                        .fail(i, &format_args!("preparing {}: {e}", dir.display()));
                }
                return Err(fault(&e, limit));
            }
            Err(DirProblem::Unusable(reason)) => {
                tracing::error!(topic = %key.0, partition = key.1, "{reason}");
                return Err(reason);
            }
        }
        let opened = Log::open_with(Arc::clone(fs), &dir, lc, now_ms())
            .map_err(Error::from)
            .and_then(|mut log| {
                let leo = log.log_end_offset();
                let (producers, snapshot) = rebuild_producers(&**fs, &mut log)?;
                Ok((log, leo, producers, snapshot))
            });
        let (log, leo, producers, snapshot) = match opened {
            Ok(o) => o,
            Err(e) => {
                if e.is_disk_fault() {
                    self.dirs
                        .fail(i, &format_args!("opening {}: {e}", dir.display()));
                }
                let limit = matches!(&e, Error::Io(io) | Error::Log(fjord_log::Error::Io(io)) if crate::is_process_limit(io));
                return Err(fault(&e, limit));
            }
        };
        let start = log.log_start_offset();
        Ok(Partition {
            topic: key.0.clone(),
            index: key.1,
            topic_id: id,
            log: Mutex::new(log),
            leader_epoch: AtomicI64::new(-1),
            hw: AtomicI64::new(start),
            durable: AtomicI64::new(leo),
            flush_lock: tokio::sync::Mutex::new(()),
            waiters: Mutex::new(Vec::new()),
            changes: std::sync::atomic::AtomicU64::new(0),
            producers: Mutex::new(producers),
            last_snapshot: AtomicI64::new(snapshot),
            dirs: self.dirs.clone(),
            dir_index: i,
            deleted: AtomicBool::new(false),
            fail_next_io: AtomicBool::new(false),
            fail_next_fsync: AtomicBool::new(false),
            node_id: self.node_id,
            repl: Mutex::new(ReplState::unset()),
            hw_changed: Notify::new(),
            truncations: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Deletes a partition of a deleted topic: under its log lock it is marked deleted (a handle a request still
    /// holds refuses everything from then on) and its directory is renamed to Kafka's `-delete` name, then
    /// removed in the background. In an offline log directory nothing is touched.
    fn retire(&self, p: Arc<Partition>) {
        tracing::info!(topic = %p.topic, partition = p.index, "deleting partition");
        {
            let log = p.lock();
            p.deleted.store(true, Ordering::Release);
            if self.dirs.is_offline(p.dir_index) {
                tracing::warn!(topic = %p.topic, partition = p.index, dir = %log.dir().display(),
                    "deleted partition left on disk: its log directory is offline");
            } else {
                let fs = self.dirs.storage();
                match rename_for_delete(&**fs, p.log_dir(), log.dir(), &p.topic, p.index) {
                    Ok(to) => remove_in_background(fs, to),
                    Err(e) => self.dirs.fail(
                        p.dir_index,
                        &format_args!("renaming {} for deletion: {e}", log.dir().display()),
                    ),
                }
            }
        }
        // No longer a replica (the topic is gone, or a reassignment removed this broker): acks=all waits end
        // now, unacknowledged, rather than at their timeout.
        p.wake_replica_waiters();
        self.dirs.add_hosted(p.dir_index, -1);
    }

    /// Forgets every partition without flushing or closing anything, as a crash leaves them (see
    /// `Broker::crash_for_test`). Handles still held elsewhere refuse further writes.
    pub fn abandon_all(&self) {
        let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        for (_, p) in parts.drain() {
            p.deleted.store(true, Ordering::Release);
        }
    }

    /// Flushes and closes every log (clean shutdown). Logs in an offline log directory are only dropped: no
    /// flush, no snapshot, no clean-shutdown marker, so the next start recovers them.
    pub fn close_all(&self) {
        let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        for (key, p) in parts.drain() {
            if let Err(e) = p.check_online() {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e,
                    "not closing cleanly; the log is recovered at the next start");
                continue;
            }
            if let Err(e) = p.maybe_snapshot(true) {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "producer snapshot failed");
                continue;
            }
            match Arc::try_unwrap(p) {
                Ok(p) => {
                    let log = p.log.into_inner().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = log.close() {
                        tracing::error!(topic = %key.0, partition = key.1, error = %e, "closing log failed");
                    }
                }
                Err(p) => {
                    if let Err(e) = p.flush() {
                        tracing::error!(topic = %key.0, partition = key.1, error = %e, "flushing log failed");
                    }
                }
            }
        }
    }
}

/// Parses a `partition.metadata` file (`version: 0` and `topic_id: <uuid>` lines, Kafka's layout): `None` for
/// anything else, an empty or truncated file included.
fn parse_partition_metadata(bytes: &[u8]) -> Option<Uuid> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next()? != "version: 0" {
        return None;
    }
    let id = lines.next()?.strip_prefix("topic_id:")?.trim();
    if lines.next().is_some() {
        return None;
    }
    Uuid::parse_str(id).ok()
}

/// Makes sure `dir` (in log directory `parent`) holds data of topic `id`, writing `partition.metadata` durably
/// for a new partition. Only a well-formed file naming another topic id means a deleted topic of the same name:
/// that directory is renamed aside (`-delete`) and removed in the background. Anything unexpected (an empty or
/// damaged file, data without a metadata file) is [`DirProblem::Unusable`]: never deleted, never served.
fn prepare_partition_dir(
    storage: &Arc<dyn Storage>,
    parent: &Path,
    dir: &Path,
    topic: &str,
    partition: i32,
    id: Uuid,
) -> std::result::Result<(), DirProblem> {
    let fs = &**storage;
    let meta = dir.join(PARTITION_METADATA);
    let tmp_name = format!("{PARTITION_METADATA}.tmp");
    let mut create = false;
    match fs.read(&meta) {
        Ok(bytes) => match parse_partition_metadata(&bytes) {
            Some(found) if found == id => return Ok(()),
            Some(found) => {
                let to = rename_for_delete(fs, parent, dir, topic, partition)?;
                tracing::warn!(dir = %dir.display(), old_topic_id = %found, topic_id = %id, moved_to = %to.display(),
                    "the partition directory belongs to a deleted topic of the same name; moved aside for deletion");
                remove_in_background(storage, to);
                create = true;
            }
            None => {
                return Err(DirProblem::Unusable(format!(
                    "{} is not a valid partition.metadata ({} bytes; expected `version: 0` and `topic_id: <uuid>` \
                     lines). The partition is OFFLINE (KAFKA_STORAGE_ERROR) and {} is left untouched. If it holds \
                     this topic's data, write `version: 0` and `topic_id: {id}` into that file; otherwise move the \
                     directory out of the log directory. Then restart the broker",
                    meta.display(),
                    bytes.len(),
                    dir.display()
                )));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fs.list(dir) {
            Ok(entries) => {
                // Only an interrupted creation (an empty directory, perhaps the temporary file) is ours to
                // finish; files without a metadata file are data nobody can vouch for.
                let mut foreign: Vec<String> =
                    entries.into_iter().filter(|n| *n != tmp_name).collect();
                if !foreign.is_empty() {
                    foreign.sort();
                    return Err(DirProblem::Unusable(format!(
                        "{} holds files ({}) but no partition.metadata. The partition is OFFLINE \
                         (KAFKA_STORAGE_ERROR) and the directory is left untouched. If it holds this topic's \
                         data, create {} with `version: 0` and `topic_id: {id}`; otherwise move the directory out \
                         of the log directory. Then restart the broker",
                        dir.display(),
                        foreign.join(", "),
                        meta.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create = true,
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    }
    if create {
        // Never recreate a vanished log directory (an unmounted disk) on whatever lies beneath it: that is a
        // fault of the directory, which goes offline.
        if !fs.try_exists(parent)? {
            return Err(DirProblem::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("log directory {} is gone", parent.display()),
            )));
        }
        fs.create_dir_all(dir)?;
        // The new directory entry must survive a power loss as much as the data later written into it.
        fs.sync_dir(parent)?;
    }
    // Temporary file, fsync, rename, fsync the directory: the file is either absent or whole.
    st::write_atomic(
        fs,
        &meta,
        format!("version: 0\ntopic_id: {id}\n").as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod fault_harness;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::BytesMut;
    use fjord_meta::{BrokerInfo, PartitionMeta, TopicMeta};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    fn batch(producer_id: i64, epoch: i16, first_seq: i32, n: usize) -> Bytes {
        encode(producer_id, epoch, first_seq, n, false)
    }

    fn txn_batch(producer_id: i64, epoch: i16, first_seq: i32, n: usize) -> Bytes {
        encode(producer_id, epoch, first_seq, n, true)
    }

    fn encode(
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        n: usize,
        transactional: bool,
    ) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: first_seq + i as i32,
                timestamp: 1,
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
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

    fn manager(dir: &Path) -> PartitionManager {
        let dirs = LogDirs::new(&[dir.to_path_buf()], &crate::metrics::Metrics::new()).unwrap();
        PartitionManager::new(Arc::new(dirs), 1)
    }

    fn state() -> (ClusterState, BrokerConfig) {
        let mut s = ClusterState::default();
        s.brokers.insert(
            1,
            BrokerInfo {
                id: 1,
                host: "h".into(),
                port: 1,
                rack: None,
            },
        );
        s.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: Uuid::from_u128(7),
                partitions: vec![PartitionMeta {
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    offline: Vec::new(),
                }],
                configs: BTreeMap::new(),
                internal: false,
                reassignments: Default::default(),
            },
        );
        (s, BrokerConfig::from_properties(BTreeMap::new()).unwrap())
    }

    #[test]
    fn idempotent_retries_are_appended_once_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, cfg) = state();
        let pm = manager(dir.path());
        pm.sync_with(&meta, &cfg).unwrap();
        let p = pm.get("t", 0).unwrap();
        let first = p.append(batch(5, 0, 0, 3)).unwrap();
        assert_eq!((first.base_offset, first.last_offset), (0, 2));
        let retry = p.append(batch(5, 0, 0, 3)).unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (0, 2),
            "a retry gets the original offsets"
        );
        assert_eq!(p.high_watermark(), 3, "and is not appended again");
        // A retry that arrives damaged is refused, not acknowledged as the original.
        let mut damaged = BytesMut::from(&batch(5, 0, 0, 3)[..]);
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let err = p.append(damaged.freeze()).unwrap_err();
        assert_eq!(
            err.code(),
            kafka_protocol::error::ResponseError::CorruptMessage.code()
        );
        let gap = p.append(batch(5, 0, 7, 1)).unwrap_err();
        assert_eq!(
            gap.code(),
            kafka_protocol::error::ResponseError::OutOfOrderSequenceNumber.code()
        );
        drop(p);
        pm.close_all();

        // After a restart the state is rebuilt from the log.
        let pm = manager(dir.path());
        pm.sync_with(&meta, &cfg).unwrap();
        let p = pm.get("t", 0).unwrap();
        let retry = p.append(batch(5, 0, 0, 3)).unwrap();
        assert_eq!(retry.base_offset, 0);
        assert_eq!(p.high_watermark(), 3);
        let next = p.append(batch(5, 0, 3, 2)).unwrap();
        assert_eq!((next.base_offset, next.last_offset), (3, 4));
        // Plain (non-idempotent) batches are untouched by all this.
        assert_eq!(p.append(batch(-1, -1, -1, 1)).unwrap().base_offset, 5);
    }

    /// Topic "t", one partition on brokers 1 and 2, led by `leader` at `epoch`, both in sync.
    fn replicated(leader: i32, epoch: i32) -> ClusterState {
        let (mut s, _) = state();
        s.brokers.insert(
            2,
            BrokerInfo {
                id: 2,
                host: "h".into(),
                port: 2,
                rack: None,
            },
        );
        let p = &mut s.topics.get_mut("t").unwrap().partitions[0];
        p.leader = leader;
        p.leader_epoch = epoch;
        p.partition_epoch = epoch;
        p.replicas = vec![1, 2];
        p.isr = vec![1, 2];
        s
    }

    fn replica_manager(dir: &Path, node: i32) -> PartitionManager {
        let dirs = LogDirs::new(&[dir.to_path_buf()], &crate::metrics::Metrics::new()).unwrap();
        PartitionManager::new(Arc::new(dirs), node)
    }

    /// Brokers 1 and 2, each with its own directory, holding "t"-0 as `replicated(1, 0)` says (broker 1 leads).
    struct Pair {
        m1: PartitionManager,
        m2: PartitionManager,
        cfg: BrokerConfig,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    impl Pair {
        fn new() -> Pair {
            let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (_, cfg) = state();
            let (m1, m2) = (replica_manager(d1.path(), 1), replica_manager(d2.path(), 2));
            let meta = replicated(1, 0);
            m1.sync_with(&meta, &cfg).unwrap();
            m2.sync_with(&meta, &cfg).unwrap();
            Pair {
                m1,
                m2,
                cfg,
                _dirs: (d1, d2),
            }
        }
    }

    /// One follower fetch from `leader`, applied by `follower` exactly as the replica fetcher applies a
    /// response; returns whether records were appended.
    fn replicate_once(leader: &Partition, follower: &Partition, follower_id: i32) -> bool {
        use kafka_protocol::messages::fetch_response::{EpochEndOffset, PartitionData};
        let epoch = follower.leader_epoch();
        let mut pd = PartitionData::default().with_high_watermark(-1);
        match leader.read_for_follower(
            follower_id,
            epoch,
            follower.log_end_offset(),
            follower.latest_epoch(),
            1 << 20,
        ) {
            Ok(ReplicaRead::Records {
                records,
                log_start_offset,
                high_watermark,
            }) => {
                pd.records = Some(records);
                pd.log_start_offset = log_start_offset;
                pd.high_watermark = high_watermark;
            }
            Ok(ReplicaRead::Diverging { epoch, end_offset }) => {
                pd.diverging_epoch = EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end_offset);
            }
            Err(e) => pd.error_code = e.code(),
        }
        crate::replication::apply(follower, epoch, &pd).unwrap()
    }

    #[test]
    fn a_follower_copies_the_leader_and_the_high_watermark_waits_for_it() {
        let pair = Pair::new();
        let (m1, m2, cfg) = (&pair.m1, &pair.m2, &pair.cfg);
        let (l, f) = (m1.get("t", 0).unwrap(), m2.get("t", 0).unwrap());
        assert!(l.is_leader() && !f.is_leader());
        l.append(batch(-1, -1, -1, 3)).unwrap();
        l.append(batch(7, 0, 0, 2)).unwrap();
        assert_eq!(
            l.high_watermark(),
            0,
            "nothing is visible before the follower has it"
        );
        assert_eq!(
            l.fetch(0, 1 << 20, true, false).unwrap().records.len(),
            0,
            "consumers read below the high watermark only"
        );
        assert!(
            f.append(batch(-1, -1, -1, 1)).is_err(),
            "a follower refuses clients"
        );
        assert!(replicate_once(&l, &f, 2));
        assert_eq!(f.log_end_offset(), 5);
        assert_eq!(
            l.high_watermark(),
            0,
            "the leader learns the follower's position at its next fetch"
        );
        assert!(!replicate_once(&l, &f, 2));
        assert_eq!(l.high_watermark(), 5);
        assert_eq!(
            f.high_watermark(),
            5,
            "the follower learns it from the response"
        );
        assert_eq!(
            l.read_to_log_end(0, 1 << 20).unwrap(),
            f.read_to_log_end(0, 1 << 20).unwrap(),
            "the same batches at the same offsets"
        );
        // Producer state travelled with the batches: the follower, once leader, deduplicates a retry.
        let meta = replicated(2, 1);
        m1.sync_with(&meta, cfg).unwrap();
        m2.sync_with(&meta, cfg).unwrap();
        assert!(f.is_leader() && !l.is_leader());
        let retry = f.append(batch(7, 0, 0, 2)).unwrap();
        assert_eq!((retry.base_offset, retry.last_offset), (3, 4));
        assert!(
            l.append(batch(-1, -1, -1, 1)).is_err(),
            "the old leader refuses writes"
        );
    }

    /// A broker that led an epoch without writing anything in it (elected, then replaced before any append) keeps
    /// that epoch's entry at its log end. Following the next leader, whose log never saw that epoch, it is told to
    /// truncate to its own log end: the entry must go then (as Kafka's `truncateTo` always truncates the epoch
    /// cache), or every later fetch names that epoch, is told the same, and the follower never catches up (the
    /// chaos schedule found this: a follower stuck out of the ISR for good).
    #[test]
    fn a_follower_drops_an_empty_epoch_it_led_and_catches_up() {
        let pair = Pair::new();
        let (m1, m2, cfg) = (&pair.m1, &pair.m2, &pair.cfg);
        let (l, f) = (m1.get("t", 0).unwrap(), m2.get("t", 0).unwrap());
        l.append(batch(-1, -1, -1, 5)).unwrap();
        assert!(replicate_once(&l, &f, 2));
        // Broker 2 leads epoch 1 and writes nothing; broker 1 leads again at epoch 2 and writes on.
        let meta = replicated(2, 1);
        m1.sync_with(&meta, cfg).unwrap();
        m2.sync_with(&meta, cfg).unwrap();
        assert!(f.is_leader());
        assert_eq!(f.latest_epoch(), 1, "the new leader starts its epoch");
        let meta = replicated(1, 2);
        m1.sync_with(&meta, cfg).unwrap();
        m2.sync_with(&meta, cfg).unwrap();
        assert!(l.is_leader());
        l.append(batch(-1, -1, -1, 3)).unwrap();
        for _ in 0..4 {
            replicate_once(&l, &f, 2);
        }
        assert_eq!(
            f.log_end_offset(),
            l.log_end_offset(),
            "the follower caught up (its epochs: {:?})",
            f.leader_epochs_for_test()
        );
        assert_eq!(f.leader_epochs_for_test(), l.leader_epochs_for_test());
        assert_eq!(
            l.read_to_log_end(0, 1 << 20).unwrap(),
            f.read_to_log_end(0, 1 << 20).unwrap()
        );
    }

    #[tokio::test]
    async fn a_write_truncated_by_a_leader_change_is_never_acknowledged_even_if_its_leader_returns()
    {
        let pair = Pair::new();
        let (m1, m2, cfg) = (&pair.m1, &pair.m2, &pair.cfg);
        let (b1, b2) = (m1.get("t", 0).unwrap(), m2.get("t", 0).unwrap());
        // Broker 1 appends X at epoch 0 (offsets 0..2); before anyone has it, broker 2 takes over at epoch 1.
        let x = b1.append(batch(-1, -1, -1, 3)).unwrap();
        assert_eq!((x.last_offset, x.leader_epoch), (2, 0));
        let meta = replicated(2, 1);
        m1.sync_with(&meta, cfg).unwrap();
        m2.sync_with(&meta, cfg).unwrap();
        b2.append(batch(-1, -1, -1, 4)).unwrap();
        // Broker 1 follows: truncates X, copies broker 2's records.
        assert!(!replicate_once(&b2, &b1, 1));
        assert!(replicate_once(&b2, &b1, 1));
        assert!(!replicate_once(&b2, &b1, 1));
        // Broker 1 leads again at epoch 2 and its follower catches up: the high watermark passes X's offsets.
        let meta = replicated(1, 2);
        m1.sync_with(&meta, cfg).unwrap();
        m2.sync_with(&meta, cfg).unwrap();
        replicate_once(&b1, &b2, 2);
        replicate_once(&b1, &b2, 2);
        assert!(b1.high_watermark() >= 3);
        // The producer of X (still waiting, e.g. on a slow fsync) must not hear that X is replicated.
        let waited = b1
            .wait_replicated(
                x.last_offset + 1,
                x.leader_epoch,
                1,
                std::time::Duration::from_secs(1),
            )
            .await;
        assert_eq!(
            waited.unwrap_err().code(),
            kafka_protocol::error::ResponseError::NotLeaderOrFollower.code()
        );
        // A write of this epoch is acknowledged as usual.
        let y = b1.append(batch(-1, -1, -1, 1)).unwrap();
        replicate_once(&b1, &b2, 2);
        replicate_once(&b1, &b2, 2);
        b1.wait_replicated(
            y.last_offset + 1,
            y.leader_epoch,
            1,
            std::time::Duration::from_secs(1),
        )
        .await
        .unwrap();
    }

    #[test]
    fn an_fsync_that_started_before_a_truncation_does_not_make_the_new_tail_durable() {
        let pair = Pair::new();
        let (m1, m2, cfg) = (&pair.m1, &pair.m2, &pair.cfg);
        let (b1, b2) = (m1.get("t", 0).unwrap(), m2.get("t", 0).unwrap());
        b1.append(batch(-1, -1, -1, 3)).unwrap();
        assert!(replicate_once(&b1, &b2, 2));
        // Broker 2 leads epoch 1 alone and appends 3..4; an fsync of that tail starts (the handle is taken).
        let meta = replicated(2, 1);
        m2.sync_with(&meta, cfg).unwrap();
        b2.append(batch(-1, -1, -1, 2)).unwrap();
        let (handle, generation) = {
            let log = b2.log().unwrap();
            (
                log.flush_handle().unwrap(),
                b2.truncations.load(Ordering::Acquire),
            )
        };
        // Meanwhile broker 1 leads epoch 2 with other records at 3..4; broker 2 truncates and copies them.
        let meta = replicated(1, 2);
        m1.sync_with(&meta, cfg).unwrap();
        m2.sync_with(&meta, cfg).unwrap();
        b1.append(batch(-1, -1, -1, 2)).unwrap();
        assert!(!replicate_once(&b1, &b2, 2));
        assert!(replicate_once(&b1, &b2, 2));
        assert_eq!(b2.log_end_offset(), 5);
        // The old fsync finishes: it covered the truncated records, not the copied ones.
        handle.sync().unwrap();
        assert!(b2.apply_sync(&handle, generation).is_err());
        assert!(
            b2.durable.load(Ordering::Acquire) <= 3,
            "offsets 3..4 count as durable without an fsync of them"
        );
    }

    #[test]
    fn an_older_leader_epoch_in_late_metadata_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let (_, cfg) = state();
        let m = replica_manager(d.path(), 1);
        m.sync_with(&replicated(2, 1), &cfg).unwrap();
        let p = m.get("t", 0).unwrap();
        assert_eq!((p.leader(), p.leader_epoch()), (2, 1));
        // A snapshot from before the change arrives late: the partition stays with epoch 1.
        m.sync_with(&replicated(1, 0), &cfg).unwrap();
        assert_eq!((p.leader(), p.leader_epoch()), (2, 1));
        assert!(p.append(batch(-1, -1, -1, 1)).is_err(), "still a follower");
    }

    #[test]
    fn a_diverged_follower_truncates_to_the_leader_and_converges() {
        let pair = Pair::new();
        let (m1, m2, cfg) = (&pair.m1, &pair.m2, &pair.cfg);
        let (b1, b2) = (m1.get("t", 0).unwrap(), m2.get("t", 0).unwrap());
        b1.append(batch(-1, -1, -1, 3)).unwrap();
        assert!(replicate_once(&b1, &b2, 2));
        // Epoch 1: broker 2 leads and takes writes broker 1 never sees (it is cut off).
        let meta = replicated(2, 1);
        m2.sync_with(&meta, cfg).unwrap();
        b2.append(batch(-1, -1, -1, 2)).unwrap();
        assert_eq!(b2.log_end_offset(), 5);
        // Epoch 2: broker 1 leads again (it never learnt of epoch 1) and writes other records at offset 3.
        let meta = replicated(1, 2);
        m1.sync_with(&meta, cfg).unwrap();
        m2.sync_with(&meta, cfg).unwrap();
        b1.append(batch(-1, -1, -1, 1)).unwrap();
        b1.append(batch(-1, -1, -1, 1)).unwrap();
        assert_eq!(b1.log_end_offset(), 5);
        // Broker 2's offsets 3 and 4 are epoch-1 records broker 1 does not have: the leader names the divergence,
        // the follower truncates to 3, then copies the leader's 3 and 4.
        assert!(
            !replicate_once(&b1, &b2, 2),
            "the first answer is a diverging epoch"
        );
        assert_eq!(b2.log_end_offset(), 3, "the divergent tail is gone");
        assert!(replicate_once(&b1, &b2, 2));
        assert_eq!(
            b1.read_to_log_end(0, 1 << 20).unwrap(),
            b2.read_to_log_end(0, 1 << 20).unwrap(),
            "the replicas converge on the leader's log"
        );
        assert_eq!(b2.leader_epochs_for_test(), vec![(0, 0), (2, 3)]);
    }

    fn open(dir: &Path) -> (PartitionManager, Arc<Partition>) {
        let (meta, cfg) = state();
        let pm = manager(dir);
        pm.sync_with(&meta, &cfg).unwrap();
        let p = pm.get("t", 0).unwrap();
        (pm, p)
    }

    /// Records visible to read_committed from some offset as (first, last) batch offsets, aborted producer
    /// ids with first offsets, and the LSO.
    type View = (Vec<(i64, i64)>, Vec<(i64, i64)>, i64);

    fn committed_view(p: &Partition, from: i64) -> View {
        let r = p.fetch(from, 1 << 20, true, true).unwrap();
        let batches = fjord_log::batch_headers(&r.records)
            .map(|b| (b.base_offset, b.last_offset))
            .collect();
        let aborted = r
            .aborted
            .iter()
            .map(|a| (a.producer_id, a.first_offset))
            .collect();
        (batches, aborted, r.last_stable_offset)
    }

    fn snapshots(dir: &Path) -> Vec<i64> {
        snapshot_offsets(&fjord_log::storage::Disk, &dir.join("t-0")).unwrap()
    }

    #[test]
    fn open_transactions_hold_the_lso_and_aborted_ranges_survive_crashes_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let (pm, p) = open(dir.path());
        assert_eq!(p.append(txn_batch(1, 0, 0, 2)).unwrap().base_offset, 0);
        assert_eq!(p.append(batch(-1, -1, -1, 1)).unwrap().base_offset, 2);
        let (visible, _, lso) = committed_view(&p, 0);
        assert_eq!(
            (visible, lso),
            (vec![], 0),
            "producer 1's open transaction holds the LSO at 0"
        );
        let err = p.append(batch(1, 0, 2, 1)).unwrap_err();
        assert_eq!(
            err.code(),
            kafka_protocol::error::ResponseError::InvalidTxnState.code()
        );
        assert_eq!(p.append(txn_batch(2, 0, 0, 2)).unwrap().base_offset, 3);
        assert_eq!(p.append_marker(1, 0, ControlType::Abort, 0).unwrap().0, 5);
        assert_eq!(p.last_stable_offset(), 3, "producer 2 is still open");
        assert_eq!(p.append_marker(2, 0, ControlType::Commit, 0).unwrap().0, 6);
        let (visible, aborted, lso) = committed_view(&p, 0);
        assert_eq!(lso, 7);
        assert_eq!(visible.last(), Some(&(6, 6)));
        assert_eq!(aborted, vec![(1, 0)]);
        assert_eq!(
            committed_view(&p, 3).1,
            vec![(1, 0)],
            "the abort marker at 5 is after 3"
        );
        assert_eq!(
            committed_view(&p, 6).1,
            vec![],
            "nothing aborted at or after 6"
        );
        // Clients may not write markers.
        let marker = fjord_log::control_batch(9, 0, ControlType::Commit, 0, 1);
        let err = p.append(marker).unwrap_err();
        assert_eq!(
            err.code(),
            kafka_protocol::error::ResponseError::InvalidRecord.code()
        );
        // Producer 3 opens a transaction; then the broker "crashes" (no clean close, no snapshot yet).
        assert_eq!(p.append(txn_batch(3, 0, 0, 2)).unwrap().base_offset, 7);
        drop(p);
        drop(pm);
        assert!(snapshots(dir.path()).is_empty());

        let (pm, p) = open(dir.path());
        assert_eq!(
            committed_view(&p, 0).2,
            7,
            "rebuilt from the log: producer 3 still open"
        );
        assert_eq!(committed_view(&p, 0).1, vec![(1, 0)]);
        // A clean shutdown writes a snapshot with producer 3's open transaction in it.
        drop(p);
        pm.close_all();
        assert_eq!(snapshots(dir.path()), vec![9]);

        let (pm, p) = open(dir.path());
        assert_eq!(p.last_stable_offset(), 7, "restored from the snapshot");
        assert_eq!(p.append_marker(3, 0, ControlType::Abort, 0).unwrap().0, 9);
        let retry = p.append(txn_batch(3, 0, 0, 2)).unwrap();
        assert_eq!(
            (retry.base_offset, retry.batches.len()),
            (7, 0),
            "the snapshot kept the sequences: a retry is a duplicate"
        );
        let (_, aborted, lso) = committed_view(&p, 0);
        assert_eq!((aborted, lso), (vec![(1, 0), (3, 7)], 10));
        drop(p);
        drop(pm);
        // A crash after the snapshot: the snapshot plus the batches after it give the same answer, and the
        // aborted range found after the snapshot is indexed again.
        let (pm, p) = open(dir.path());
        assert_eq!(committed_view(&p, 0).1, vec![(1, 0), (3, 7)]);
        assert_eq!(p.last_stable_offset(), 10);
        drop(p);
        pm.close_all();
        assert_eq!(
            snapshots(dir.path()),
            vec![9, 10],
            "the newest two are kept"
        );

        // A damaged newest snapshot is skipped in favour of the older one.
        let newest = snapshot_path(&dir.path().join("t-0"), 10);
        let mut data = std::fs::read(&newest).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&newest, data).unwrap();
        let (_pm, p) = open(dir.path());
        assert_eq!(committed_view(&p, 0).1, vec![(1, 0), (3, 7)]);
        assert_eq!(p.producers().len(), 3);
    }

    #[test]
    fn producer_snapshots_round_trip_and_reject_damage() {
        let mut s = ProducerStates::default();
        let info = |pid: i64, seq: i32, base: i64, txn: bool| fjord_log::BatchInfo {
            base_offset: base,
            last_offset: base + 1,
            record_count: 2,
            first_timestamp: 5,
            max_timestamp: 6,
            producer_id: pid,
            producer_epoch: 3,
            base_sequence: seq,
            is_transactional: txn,
            is_control: false,
            compression: 0,
            size: 80,
        };
        s.record(&info(1, 0, 0, false));
        s.record(&info(1, 2, 2, false));
        s.record(&info(2, 0, 4, true));
        let bytes = s.encode();
        let back = ProducerStates::decode(&bytes).unwrap();
        assert_eq!(back.describe(), s.describe());
        assert_eq!(back.first_unstable_offset(), Some(4));
        assert_eq!(back.encode(), bytes);
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(ProducerStates::decode(&bad).is_none());
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 1]).is_none());
    }

    fn keyed(pid: i64, seq: i32, transactional: bool, key: &str, value_len: usize) -> Bytes {
        let r = Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: seq,
            timestamp: now_ms(),
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(vec![b'v'; value_len])),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&r],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn a_plain_batch_cannot_slip_into_an_open_transaction_and_markers_keep_their_coordinator_epoch()
    {
        use kafka_protocol::error::ResponseError as E;
        let dir = tempfile::tempdir().unwrap();
        let (pm, p) = open(dir.path());
        assert_eq!(p.append(txn_batch(1, 5, 0, 1)).unwrap().base_offset, 0);
        // A plain (idempotent) batch of the same producer id under a newer epoch, while its transaction is open:
        // refused, as Kafka does, so it cannot raise the producer's epoch above its transaction's marker.
        let err = p.append(batch(1, 6, 0, 1)).unwrap_err();
        assert_eq!(err.code(), E::InvalidTxnState.code(), "{err}");
        assert_eq!(p.append_marker(1, 5, ControlType::Commit, 3).unwrap().0, 1);
        // After a crash the state is rebuilt from the log: the marker's coordinator epoch with it.
        drop(p);
        drop(pm);
        let (_pm, p) = open(dir.path());
        let err = p.append_marker(1, 5, ControlType::Abort, 2).unwrap_err();
        assert_eq!(err.code(), E::TransactionCoordinatorFenced.code(), "{err}");
        assert_eq!(p.append_marker(1, 5, ControlType::Abort, 3).unwrap().0, 2);
    }

    #[test]
    fn a_marker_voids_a_transaction_verification_begun_before_it() {
        use kafka_protocol::error::ResponseError as E;
        let dir = tempfile::tempdir().unwrap();
        let (_pm, p) = open(dir.path());
        // A verification the coordinator refused is abandoned and admits nothing.
        let refused = p
            .start_txn_verification(1, 0)
            .expect("a verification is needed");
        p.finish_txn_verification(1, refused);
        let err = p
            .append_verified(txn_batch(1, 0, 0, 1), Origin::Client, Some(refused))
            .unwrap_err();
        assert_eq!(err.code(), E::InvalidTxnState.code(), "{err}");
        // No transaction of producer 1 here yet: its first batch needs a verification.
        let guard = p
            .start_txn_verification(1, 0)
            .expect("a verification is needed");
        let err = p
            .append_verified(txn_batch(1, 0, 0, 1), Origin::Client, None)
            .unwrap_err();
        assert_eq!(err.code(), E::InvalidTxnState.code(), "{err}");
        // A marker (the previous transaction ending) lands while the coordinator is being asked: the batch
        // would open a transaction no marker closes, so the guard no longer admits it.
        assert_eq!(p.append_marker(1, 0, ControlType::Abort, 0).unwrap().0, 0);
        let err = p
            .append_verified(txn_batch(1, 0, 0, 1), Origin::Client, Some(guard))
            .unwrap_err();
        assert_eq!(err.code(), E::InvalidTxnState.code(), "{err}");
        assert_eq!(p.log_end_offset(), 1, "only the marker is in the log");
        // A verification after the marker admits it; then the open transaction needs none.
        let guard = p
            .start_txn_verification(1, 0)
            .expect("a verification is needed");
        assert_eq!(
            p.append_verified(txn_batch(1, 0, 0, 1), Origin::Client, Some(guard))
                .unwrap()
                .base_offset,
            1
        );
        assert_eq!(p.start_txn_verification(1, 0), None);
        assert_eq!(
            p.append_verified(txn_batch(1, 0, 1, 1), Origin::Client, None)
                .unwrap()
                .base_offset,
            2
        );
        assert_eq!(p.last_stable_offset(), 1, "the transaction is open");
    }

    #[test]
    fn markers_from_an_old_producer_epoch_or_a_deposed_coordinator_are_refused() {
        use kafka_protocol::error::ResponseError as E;
        let dir = tempfile::tempdir().unwrap();
        let (_pm, p) = open(dir.path());
        // Coordinator epoch 3 ends producer 1's first transaction (producer epoch 4).
        assert_eq!(p.append(txn_batch(1, 4, 0, 1)).unwrap().base_offset, 0);
        assert_eq!(p.append_marker(1, 4, ControlType::Commit, 3).unwrap().0, 1);
        // The producer opens a second transaction; a zombie session of epoch 3 cannot abort it.
        assert_eq!(p.append(txn_batch(1, 4, 1, 1)).unwrap().base_offset, 2);
        let err = p.append_marker(1, 3, ControlType::Abort, 3).unwrap_err();
        assert_eq!(err.code(), E::InvalidProducerEpoch.code(), "{err}");
        // Nor can a coordinator deposed before epoch 3 (a late WriteTxnMarkers).
        let err = p.append_marker(1, 4, ControlType::Abort, 2).unwrap_err();
        assert_eq!(err.code(), E::TransactionCoordinatorFenced.code(), "{err}");
        assert_eq!(
            p.last_stable_offset(),
            2,
            "the open transaction is still open"
        );
        assert_eq!(
            p.log_end_offset(),
            3,
            "neither refused marker reached the log"
        );
        // The current coordinator ends it; a newer coordinator epoch is accepted and remembered.
        assert_eq!(p.append_marker(1, 4, ControlType::Commit, 5).unwrap().0, 3);
        assert_eq!(p.last_stable_offset(), 4);
        let err = p.append_marker(1, 4, ControlType::Commit, 3).unwrap_err();
        assert_eq!(err.code(), E::TransactionCoordinatorFenced.code(), "{err}");
        // A marker for a producer this partition never saw is written (Kafka does too).
        assert_eq!(p.append_marker(7, 0, ControlType::Abort, 0).unwrap().0, 4);
    }

    #[test]
    fn compaction_removes_emptied_commit_markers_without_leaving_a_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut meta, cfg) = state();
        let configs = &mut meta.topics.get_mut("t").unwrap().configs;
        for (k, v) in [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "1024"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ] {
            configs.insert(k.into(), v.into());
        }
        let open = |dir: &Path| {
            let pm = manager(dir);
            pm.sync_with(&meta, &cfg).unwrap();
            let p = pm.get("t", 0).unwrap();
            (pm, p)
        };
        let (pm, p) = open(dir.path());
        assert_eq!(p.append(keyed(5, 0, true, "k", 10)).unwrap().base_offset, 0);
        assert_eq!(p.append_marker(5, 0, ControlType::Commit, 0).unwrap().0, 1);
        for _ in 0..20 {
            p.append(keyed(-1, -1, false, "k", 200)).unwrap();
        }
        let hw = p.high_watermark();
        drop(p);
        pm.close_all(); // writes a snapshot at the log end
        assert_eq!(snapshots(dir.path()), vec![hw]);

        let (pm, p) = open(dir.path());
        p.housekeeping(true, i64::MAX).unwrap();
        let r = p.fetch(0, 1 << 20, true, false).unwrap();
        let first = fjord_log::batch_headers(&r.records).next().unwrap();
        assert!(
            first.base_offset > 1,
            "the transaction's record and its marker are gone: {first:?}"
        );
        drop(p);
        drop(pm);
        // A crash now, with the snapshot: nothing is left open.
        let (pm, p) = open(dir.path());
        assert_eq!(p.last_stable_offset(), hw);
        drop(p);
        drop(pm);
        // And with every snapshot lost: the full scan sees neither the record nor the marker.
        for o in snapshots(dir.path()) {
            std::fs::remove_file(snapshot_path(&dir.path().join("t-0"), o)).unwrap();
        }
        let (_pm, p) = open(dir.path());
        assert_eq!(p.last_stable_offset(), hw);
    }

    fn storage_error() -> i16 {
        kafka_protocol::error::ResponseError::KafkaStorageError.code()
    }

    fn segment_sizes(dir: &Path) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn an_empty_partition_metadata_takes_the_partition_offline_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let (pm, p) = open(dir.path());
        p.append(batch(-1, -1, -1, 3)).unwrap();
        drop(p);
        pm.close_all();
        let part = dir.path().join("t-0");
        let before = segment_sizes(&part);
        assert!(before.iter().any(|(_, len)| *len > 0));
        // What a power loss could leave of the old, unsynced write: an empty file.
        for damage in [&b""[..], b"version: 0\ntopic_id: not-a-uuid\n", b"\0\0\0"] {
            std::fs::write(part.join(PARTITION_METADATA), damage).unwrap();
            let (meta, cfg) = state();
            let pm = manager(dir.path());
            pm.sync_with(&meta, &cfg).unwrap();
            let err = pm.online("t", 0).unwrap_err();
            assert_eq!(err.code(), storage_error());
            let msg = err.to_string();
            assert!(
                msg.contains(&part.join(PARTITION_METADATA).display().to_string()),
                "{msg}"
            );
            assert!(msg.contains("restart"), "says what to do: {msg}");
            assert!(pm.is_offline("t", 0));
            assert_eq!(segment_sizes(&part), before, "the data is untouched");
            pm.close_all();
        }
        // Repaired by the operator, the partition serves its acknowledged records again.
        std::fs::write(
            part.join(PARTITION_METADATA),
            format!("version: 0\ntopic_id: {}\n", Uuid::from_u128(7)),
        )
        .unwrap();
        let (_pm, p) = open(dir.path());
        assert_eq!(p.high_watermark(), 3);
    }

    #[test]
    fn data_without_partition_metadata_is_never_adopted_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (pm, p) = open(dir.path());
        p.append(batch(-1, -1, -1, 2)).unwrap();
        drop(p);
        pm.close_all();
        let part = dir.path().join("t-0");
        std::fs::remove_file(part.join(PARTITION_METADATA)).unwrap();
        let before = segment_sizes(&part);
        let (meta, cfg) = state();
        let pm = manager(dir.path());
        pm.sync_with(&meta, &cfg).unwrap();
        assert_eq!(pm.online("t", 0).unwrap_err().code(), storage_error());
        assert_eq!(segment_sizes(&part), before);
    }

    #[test]
    fn an_older_incarnation_is_renamed_aside_and_new_metadata_is_written_durably() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("t-0");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(
            part.join(PARTITION_METADATA),
            format!("version: 0\ntopic_id: {}\n", Uuid::from_u128(99)),
        )
        .unwrap();
        std::fs::write(part.join("00000000000000000000.log"), b"old data").unwrap();
        let (_pm, p) = open(dir.path());
        assert_eq!(p.high_watermark(), 0, "the old topic's data is not served");
        assert_eq!(
            std::fs::read_to_string(part.join(PARTITION_METADATA)).unwrap(),
            format!("version: 0\ntopic_id: {}\n", Uuid::from_u128(7))
        );
        assert!(!part.join("partition.metadata.tmp").exists());
    }

    #[test]
    fn a_deleted_partitions_stale_handle_never_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut meta, cfg) = state();
        let pm = manager(dir.path());
        pm.sync_with(&meta, &cfg).unwrap();
        let stale = pm.get("t", 0).unwrap();
        stale.append(batch(-1, -1, -1, 1)).unwrap();
        // The topic is deleted while a request still holds the partition, then re-created under its name.
        let topic = meta.topics.remove("t").unwrap();
        pm.sync_with(&meta, &cfg).unwrap();
        assert!(
            !dir.path().join("t-0").exists(),
            "renamed away at once, not left for the last handle"
        );
        let mut again = topic.clone();
        again.id = Uuid::from_u128(8);
        meta.topics.insert("t".into(), again);
        pm.sync_with(&meta, &cfg).unwrap();
        let fresh = pm.get("t", 0).unwrap();
        let err = stale.append(batch(-1, -1, -1, 1)).unwrap_err();
        assert_eq!(
            err.code(),
            kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code()
        );
        assert!(stale.read(0, 1 << 20, true).is_err());
        assert_eq!(fresh.high_watermark(), 0);
        assert_eq!(fresh.append(batch(-1, -1, -1, 1)).unwrap().base_offset, 0);
    }

    /// Two log directories, topic `t` with two partitions: t-0 lands in the first, t-1 in the second.
    fn two_dirs() -> (
        tempfile::TempDir,
        ClusterState,
        BrokerConfig,
        crate::metrics::Metrics,
        PartitionManager,
    ) {
        let root = tempfile::tempdir().unwrap();
        let (mut meta, cfg) = state();
        let t = meta.topics.get_mut("t").unwrap();
        t.partitions.push(t.partitions[0].clone());
        let metrics = crate::metrics::Metrics::new();
        let paths = [root.path().join("a"), root.path().join("b")];
        let dirs = LogDirs::new(&paths, &metrics).unwrap();
        let pm = PartitionManager::new(Arc::new(dirs), 1);
        pm.sync_with(&meta, &cfg).unwrap();
        (root, meta, cfg, metrics, pm)
    }

    #[test]
    fn new_partitions_go_to_the_log_dir_with_the_fewest_and_are_found_there_again() {
        let (root, meta, cfg, _m, pm) = two_dirs();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        assert_eq!(pm.get("t", 0).unwrap().log_dir(), a);
        assert_eq!(pm.get("t", 1).unwrap().log_dir(), b);
        pm.get("t", 1)
            .unwrap()
            .append(batch(-1, -1, -1, 2))
            .unwrap();
        pm.close_all();
        // Moved by an operator to the other directory: found there.
        std::fs::rename(b.join("t-1"), a.join("t-1")).unwrap();
        let dirs = LogDirs::new(&[a.clone(), b.clone()], &crate::metrics::Metrics::new()).unwrap();
        let pm = PartitionManager::new(Arc::new(dirs), 1);
        pm.sync_with(&meta, &cfg).unwrap();
        let p = pm.get("t", 1).unwrap();
        assert_eq!((p.log_dir(), p.high_watermark()), (a.as_path(), 2));
        pm.close_all();
        // In both, and one is an older incarnation (another topic id): that one is moved aside.
        std::fs::create_dir(b.join("t-1")).unwrap();
        std::fs::write(
            b.join("t-1").join(PARTITION_METADATA),
            format!("version: 0\ntopic_id: {}\n", Uuid::from_u128(99)),
        )
        .unwrap();
        let dirs = LogDirs::new(&[a.clone(), b.clone()], &crate::metrics::Metrics::new()).unwrap();
        let pm = PartitionManager::new(Arc::new(dirs), 1);
        pm.sync_with(&meta, &cfg).unwrap();
        let p = pm.get("t", 1).unwrap();
        assert_eq!((p.log_dir(), p.high_watermark()), (a.as_path(), 2));
        assert!(!b.join("t-1").exists());
        drop(p);
        pm.close_all();
        // In both, and both claim topic t (or one cannot be read): neither is served, nothing is deleted.
        std::fs::create_dir(b.join("t-1")).unwrap();
        let dirs = LogDirs::new(&[a.clone(), b.clone()], &crate::metrics::Metrics::new()).unwrap();
        let pm = PartitionManager::new(Arc::new(dirs), 1);
        pm.sync_with(&meta, &cfg).unwrap();
        let err = pm.online("t", 1).unwrap_err();
        assert_eq!(err.code(), storage_error());
        assert!(err.to_string().contains("several log directories"), "{err}");
        assert!(a.join("t-1").exists() && b.join("t-1").exists());
    }

    #[test]
    fn at_start_up_a_partition_missing_while_a_log_dir_is_offline_is_not_created_elsewhere() {
        let (root, meta, cfg, _m, pm) = two_dirs();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        pm.get("t", 1)
            .unwrap()
            .append(batch(-1, -1, -1, 2))
            .unwrap();
        pm.close_all();
        // Directory b is unusable at the next start (here: a file where the directory was).
        std::fs::rename(&b, root.path().join("b.away")).unwrap();
        std::fs::write(&b, b"x").unwrap();
        let dirs = LogDirs::new(&[a.clone(), b.clone()], &crate::metrics::Metrics::new()).unwrap();
        assert!(dirs.is_offline(1));
        let pm = PartitionManager::new(Arc::new(dirs), 1);
        pm.sync_with(&meta, &cfg).unwrap();
        assert!(pm.online("t", 0).unwrap().is_some());
        let err = pm.online("t", 1).unwrap_err();
        assert_eq!(err.code(), storage_error());
        assert!(err.to_string().contains(&b.display().to_string()), "{err}");
        assert!(!a.join("t-1").exists(), "no empty copy with offsets from 0");
        // A partition created while the broker runs is new: it goes to the online directory.
        let mut meta = meta;
        let t = meta.topics.get_mut("t").unwrap();
        t.partitions.push(t.partitions[0].clone());
        pm.sync_with(&meta, &cfg).unwrap();
        assert_eq!(pm.get("t", 2).unwrap().log_dir(), a);
    }

    #[tokio::test]
    async fn a_failed_fsync_takes_its_log_dir_offline_for_good_and_the_other_keeps_serving() {
        let (root, _meta, _cfg, metrics, pm) = two_dirs();
        let (good, bad) = (pm.get("t", 0).unwrap(), pm.get("t", 1).unwrap());
        let b = root.path().join("b");
        let end = bad.append(batch(-1, -1, -1, 2)).unwrap().last_offset + 1;
        bad.fail_next_fsync_for_test();
        let err = bad.wait_durable(end).await.unwrap_err();
        assert_eq!(err.code(), storage_error());
        // Never retried into success (fsyncgate): the next waiter on the same offsets fails too.
        assert_eq!(
            bad.wait_durable(end).await.unwrap_err().code(),
            storage_error()
        );
        assert_eq!(
            bad.append(batch(-1, -1, -1, 1)).unwrap_err().code(),
            storage_error()
        );
        assert_eq!(
            bad.fetch(0, 1 << 20, true, false).err().unwrap().code(),
            storage_error()
        );
        assert!(bad.housekeeping(false, i64::MAX).is_err());
        assert_eq!(pm.online("t", 1).unwrap_err().code(), storage_error());
        assert!(pm.is_offline("t", 1) && !pm.is_offline("t", 0));
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "fjord_log_dir_offline{{dir=\"{}\"}} 1",
                b.display()
            )),
            "{text}"
        );
        assert!(text.contains("fjord_offline_partitions 1"), "{text}");
        // The other directory is untouched by this.
        let end = good.append(batch(-1, -1, -1, 3)).unwrap().last_offset + 1;
        good.wait_durable(end).await.unwrap();
        assert_eq!(
            good.fetch(0, 1 << 20, true, false).unwrap().high_watermark,
            3
        );
        drop((good, bad));
        pm.close_all();
        assert!(root.path().join("a/t-0/.kafka_cleanshutdown").exists());
        assert!(
            !b.join("t-1/.kafka_cleanshutdown").exists(),
            "no clean-shutdown marker for a log whose fsync failed: the next start recovers it"
        );
        assert!(snapshot_offsets(&fjord_log::storage::Disk, &b.join("t-1"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_real_io_error_on_append_takes_the_log_dir_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (mut meta, cfg) = state();
        meta.topics
            .get_mut("t")
            .unwrap()
            .configs
            .insert("segment.bytes".into(), "100".into());
        let pm = manager(dir.path());
        pm.sync_with(&meta, &cfg).unwrap();
        let p = pm.get("t", 0).unwrap();
        p.append(batch(-1, -1, -1, 5)).unwrap();
        // The disk "loses" the directory: the next append must roll a new segment (segment.bytes 100) and cannot
        // create it (ENOTDIR), a real error from the file system.
        let part = dir.path().join("t-0");
        std::fs::remove_dir_all(&part).unwrap();
        std::fs::write(&part, b"not a directory").unwrap();
        let err = p.append(batch(-1, -1, -1, 5)).unwrap_err();
        assert!(err.is_disk_fault(), "{err}");
        assert_eq!(err.code(), storage_error());
        assert_eq!(pm.online("t", 0).unwrap_err().code(), storage_error());
        assert!(pm.dirs().is_offline(0));
    }
}
