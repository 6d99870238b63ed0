//! The partitions this broker hosts: one [`fjord_log::Log`] each, kept in step with the metadata state.
//!
//! A [`Partition`] guards its log with a mutex held only for the in-memory/page-cache part of an append or a
//! read; fsync happens outside it (group commit, see [`Partition::wait_durable`]), and fetches waiting for data
//! park on a [`Notify`] that every append wakes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use fjord_log::{AbortedTxn, AppendInfo, ControlType, Log, LogConfig, ReadInfo};
use fjord_meta::ClusterState;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::producers::{ProducerStates, ProducerView, Verdict};
use crate::{now_ms, Error, Result};

/// Name of the file in each partition directory that records which topic id the data belongs to, so a topic
/// deleted and re-created under the same name never serves the old topic's data (Kafka's `partition.metadata`).
const PARTITION_METADATA: &str = "partition.metadata";

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
    /// Sequence and transaction state of producers; locked before the log.
    producers: Mutex<ProducerStates>,
    /// Log end offset of the newest producer-state snapshot (-1: none).
    last_snapshot: AtomicI64,
}

/// File name of a producer-state snapshot taken when the log ended at `offset` (Kafka's naming).
fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Offsets of the snapshot files in `dir`, ascending.
fn snapshot_offsets(dir: &Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(o) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".snapshot"))
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
fn load_snapshot(dir: &Path, log_end: i64) -> Result<Option<(i64, ProducerStates)>> {
    let offsets = snapshot_offsets(dir)?;
    for &o in offsets.iter().filter(|o| **o > log_end) {
        tracing::info!(dir = %dir.display(), offset = o, "deleting producer snapshot beyond the log end");
        std::fs::remove_file(snapshot_path(dir, o))?;
    }
    for &o in offsets.iter().rev().filter(|o| **o <= log_end) {
        match std::fs::read(snapshot_path(dir, o)) {
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
fn rebuild_producers(log: &mut Log) -> Result<(ProducerStates, i64)> {
    let end = log.log_end_offset();
    let (mut states, snapshot) = match load_snapshot(log.dir(), end)? {
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
        let mut pos = 0usize;
        let mut next = offset;
        let mut aborted = Vec::new();
        for b in fjord_log::batch_headers(&chunk.records) {
            if b.is_control {
                if let Some(kind) = fjord_log::control_type(&chunk.records[pos..]) {
                    aborted.extend(states.record_marker(
                        b.producer_id,
                        b.producer_epoch,
                        kind == ControlType::Commit,
                        b.base_offset,
                        -1,
                    ));
                }
            } else {
                states.record(&b);
            }
            pos += b.size;
            next = b.last_offset + 1;
        }
        for a in aborted {
            log.add_aborted_txn(a)?;
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok((states, snapshot))
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock would be a bug in fjord-log; the log itself stays consistent on disk
        // (recovery re-validates), so continuing with the inner value is the most useful behaviour.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a client's batches (sequence-checked when they carry a producer id).
    pub fn append(&self, records: Bytes) -> Result<AppendInfo> {
        self.append_from(records, Origin::Client)
    }

    pub fn append_from(&self, records: Bytes, origin: Origin) -> Result<AppendInfo> {
        let epoch = self.leader_epoch.load(Ordering::Relaxed) as i32;
        // Only the headers are read here; `Log::append` validates each batch (CRC included) once.
        let batches: Vec<_> = fjord_log::batch_headers(&records).collect();
        if batches
            .iter()
            .all(|b| b.producer_id < 0 && !b.is_control && !b.is_transactional)
        {
            let info = self.lock().append(records, epoch, now_ms())?;
            self.wake_waiters();
            return Ok(info);
        }
        // Producer ids: check sequences and append under one lock order (producers, then log).
        let mut producers = self.lock_producers();
        let mut log = self.lock();
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
        let info = log.append(records, epoch, now_ms())?;
        for b in &info.batches {
            producers.record(b);
        }
        drop(log);
        drop(producers);
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
    ) -> Result<i64> {
        let epoch = self.leader_epoch.load(Ordering::Relaxed) as i32;
        let now = now_ms();
        let batch =
            fjord_log::control_batch(producer_id, producer_epoch, kind, coordinator_epoch, now);
        let mut producers = self.lock_producers();
        let mut log = self.lock();
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
        drop(log);
        drop(producers);
        self.wake_waiters();
        Ok(info.base_offset)
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
        let producers = self.lock_producers();
        let log = self.lock();
        let hw = log.log_end_offset();
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
            log.log_end_offset(),
        )
    }

    pub fn producers(&self) -> Vec<ProducerView> {
        self.lock_producers().describe()
    }

    pub fn read(&self, offset: i64, max_bytes: usize, min_one_batch: bool) -> Result<ReadInfo> {
        let log = self.lock();
        // Single replica: the high watermark is the log end offset.
        let hw = log.log_end_offset();
        Ok(log.read(offset, max_bytes, hw, min_one_batch)?)
    }

    /// (log start offset, high watermark).
    pub fn offsets(&self) -> (i64, i64) {
        let log = self.lock();
        (log.log_start_offset(), log.log_end_offset())
    }

    pub fn high_watermark(&self) -> i64 {
        self.lock().log_end_offset()
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        Ok(self.lock().offset_for_timestamp(ts)?)
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.lock().max_timestamp()
    }

    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        Ok(self.lock().delete_records_before(offset)?)
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
        let handle = self.lock().flush_handle();
        let to = handle.flush_to();
        tokio::task::spawn_blocking(move || handle.sync())
            .await
            .map_err(|e| Error::Internal(format!("flush task failed: {e}")))??;
        self.lock().mark_flushed(to);
        self.durable.fetch_max(to, Ordering::AcqRel);
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

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters {
            w.notify_one();
        }
    }

    /// Periodic housekeeping: roll by age, retention, compaction.
    pub fn housekeeping(&self, compact: bool, producer_expiration_ms: i64) -> Result<()> {
        let now = now_ms();
        let expired = self.lock_producers().expire(now, producer_expiration_ms);
        // Taken before the log lock (lock order); the LSO only grows, so an older value is conservative.
        let stable = self.last_stable_offset();
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, expired, "expired idle producer ids");
        }
        let mut log = self.lock();
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
            if let Some(oldest) = snapshot_offsets(&dir)?.first() {
                plan.remove_empty_commit_markers_below(*oldest);
            }
        }
        if let Some(plan) = plan {
            // The pass reads inactive segments and writes cleaned copies without the lock; appends and
            // fetches go on meanwhile. Only the swap takes the lock again.
            let result = plan.run()?;
            let reclaimed = self.lock().finish_compaction(result)?;
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
        let last = self.last_snapshot.load(Ordering::Acquire);
        let (offset, data) = {
            let producers = self.lock_producers();
            let mut log = self.lock();
            let end = log.log_end_offset();
            let rolled = log.active_base_offset() > last;
            if end == last || !(force || rolled) {
                return Ok(());
            }
            // The snapshot relies on the aborted-transaction entries below its offset being durable.
            log.sync_txn_indexes()?;
            (end, producers.encode())
        };
        let dir = self.lock().dir().to_path_buf();
        let tmp = dir.join(format!("{offset:020}.snapshot.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, snapshot_path(&dir, offset))?;
        std::fs::File::open(&dir)?.sync_all()?;
        self.last_snapshot.store(offset, Ordering::Release);
        let offsets = snapshot_offsets(&dir)?;
        for o in &offsets[..offsets.len().saturating_sub(2)] {
            std::fs::remove_file(snapshot_path(&dir, *o))?;
        }
        Ok(())
    }

    fn set_config(&self, config: LogConfig) {
        let mut log = self.lock();
        if *log.config() != config {
            log.set_config(config);
        }
    }

    pub fn flush(&self) -> Result<()> {
        let mut log = self.lock();
        log.flush()?;
        self.durable
            .fetch_max(log.log_end_offset(), Ordering::AcqRel);
        Ok(())
    }
}

/// All partitions hosted here, keyed by (topic, partition).
pub struct PartitionManager {
    data_dir: PathBuf,
    node_id: i32,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
}

impl PartitionManager {
    pub fn new(data_dir: &Path, node_id: i32) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            node_id,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Brings the hosted partitions in line with the metadata: opens logs for new partitions, applies config
    /// changes, and deletes the logs of deleted topics. Called at start-up and on every metadata change.
    pub fn sync_with(&self, state: &ClusterState, config: &BrokerConfig) -> Result<()> {
        let mut wanted: BTreeMap<(String, i32), (Uuid, i32, LogConfig)> = BTreeMap::new();
        for t in state.topics.values() {
            let lc = config.log_config(&t.configs);
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&self.node_id) {
                    wanted.insert(
                        (t.name.clone(), i as i32),
                        (t.id, p.leader_epoch, lc.clone()),
                    );
                }
            }
        }
        let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        // Remove partitions that are gone or belong to an older incarnation of the topic.
        let stale: Vec<(String, i32)> = parts
            .iter()
            .filter(|(k, p)| wanted.get(*k).is_none_or(|(id, _, _)| *id != p.topic_id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(p) = parts.remove(&key) {
                tracing::info!(topic = %key.0, partition = key.1, "deleting partition");
                match Arc::try_unwrap(p) {
                    Ok(p) => {
                        let log = p.log.into_inner().unwrap_or_else(|e| e.into_inner());
                        log.delete()?;
                    }
                    // A request still holds the partition; remove the directory anyway: the open files
                    // stay readable until the last handle drops.
                    Err(_) => {
                        let _ = std::fs::remove_dir_all(self.partition_dir(&key.0, key.1));
                    }
                }
            }
        }
        for (key, (id, epoch, lc)) in wanted {
            if let Some(p) = parts.get(&key) {
                p.set_config(lc);
                p.leader_epoch.store(epoch as i64, Ordering::Relaxed);
                continue;
            }
            let dir = self.partition_dir(&key.0, key.1);
            prepare_partition_dir(&dir, id)?;
            let mut log = Log::open(&dir, lc, now_ms())?;
            let leo = log.log_end_offset();
            let (producers, snapshot) = rebuild_producers(&mut log)?;
            let p = Partition {
                topic: key.0.clone(),
                index: key.1,
                topic_id: id,
                log: Mutex::new(log),
                leader_epoch: AtomicI64::new(epoch as i64),
                durable: AtomicI64::new(leo),
                flush_lock: tokio::sync::Mutex::new(()),
                waiters: Mutex::new(Vec::new()),
                producers: Mutex::new(producers),
                last_snapshot: AtomicI64::new(snapshot),
            };
            parts.insert(key, Arc::new(p));
        }
        Ok(())
    }

    /// Flushes and closes every log (clean shutdown).
    pub fn close_all(&self) {
        let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        for (key, p) in parts.drain() {
            if let Err(e) = p.maybe_snapshot(true) {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "producer snapshot failed");
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

/// Makes sure `dir` holds data of topic `id`: a directory left by a deleted topic of the same name is wiped.
fn prepare_partition_dir(dir: &Path, id: Uuid) -> Result<()> {
    let meta = dir.join(PARTITION_METADATA);
    let expected = format!("version: 0\ntopic_id: {id}\n");
    match std::fs::read_to_string(&meta) {
        Ok(s) if s == expected => return Ok(()),
        Ok(_) => {
            tracing::warn!(dir = %dir.display(), "partition directory belongs to an older topic; wiping it");
            std::fs::remove_dir_all(dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    std::fs::write(&tmp, expected)?;
    std::fs::rename(&tmp, &meta)?;
    Ok(())
}

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
                    replicas: vec![1],
                    isr: vec![1],
                }],
                configs: BTreeMap::new(),
                internal: false,
            },
        );
        (s, BrokerConfig::from_properties(BTreeMap::new()).unwrap())
    }

    #[test]
    fn idempotent_retries_are_appended_once_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, cfg) = state();
        let pm = PartitionManager::new(dir.path(), 1);
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
        let pm = PartitionManager::new(dir.path(), 1);
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

    fn open(dir: &Path) -> (PartitionManager, Arc<Partition>) {
        let (meta, cfg) = state();
        let pm = PartitionManager::new(dir, 1);
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
        snapshot_offsets(&dir.join("t-0")).unwrap()
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
        assert_eq!(p.append_marker(1, 0, ControlType::Abort, 0).unwrap(), 5);
        assert_eq!(p.last_stable_offset(), 3, "producer 2 is still open");
        assert_eq!(p.append_marker(2, 0, ControlType::Commit, 0).unwrap(), 6);
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
        assert_eq!(p.append_marker(3, 0, ControlType::Abort, 0).unwrap(), 9);
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
            let pm = PartitionManager::new(dir, 1);
            pm.sync_with(&meta, &cfg).unwrap();
            let p = pm.get("t", 0).unwrap();
            (pm, p)
        };
        let (pm, p) = open(dir.path());
        assert_eq!(p.append(keyed(5, 0, true, "k", 10)).unwrap().base_offset, 0);
        assert_eq!(p.append_marker(5, 0, ControlType::Commit, 0).unwrap(), 1);
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
}
