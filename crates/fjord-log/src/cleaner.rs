//! Log compaction: keep the last record per key in the inactive segments.
//!
//! Transactions: only segments wholly below the last stable offset are cleaned, so every transactional batch
//! seen has a decided outcome. Batches of aborted transactions (known from the segments' `.txnindex`) are
//! removed; records of committed transactions are compacted like any others. Control batches (markers) are
//! always kept: read_committed clients pair the aborted-transaction list with the abort markers.
//!
//! A pass is planned under the log's lock ([`Log::plan_compaction`]), run without it ([`CompactionPlan::run`]:
//! it reads only inactive segments through their open files and writes `<base>.log.cleaned` copies), and
//! installed under it again ([`Log::finish_compaction`]), which swaps in the copies of segments that are still
//! there unchanged. Appends and fetches are not held up by the rewrite.
//!
//! A commit marker whose transaction kept no record after cleaning is removed too, but only below the offset
//! the caller allows ([`CompactionPlan::remove_empty_commit_markers_below`]): the broker passes its oldest
//! producer-state snapshot, so no snapshot it may restart from still expects that marker to close an open
//! transaction. Abort markers are kept: clients pair them with the aborted-transaction list.
//!
//! Known limitations, by design for now:
//! - Abort markers (and their `.txnindex` entries) are never removed.
//! - Segments are cleaned one to one; small cleaned segments are not merged.
//! - The key map is built in memory over the whole cleanable range, without a size bound.
//! - A rewritten batch starts at its first retained record's offset (every record keeps its offset), and
//!   kafka-protocol's decoder keeps only the last header for duplicate header keys. Batches that lose no record
//!   are copied byte for byte, so only batches that actually shrink are affected.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};

use crate::batch::{self, Header, ATTRIBUTES_POS, CRC_POS, MAX_TIMESTAMP_POS, TIMESTAMP_TYPE_BIT};
use crate::log::{write_small_file, Log, CLEANER_CHECKPOINT_FILE};
use crate::segment;
use crate::storage::{self as st, FileHandle, FileWriter, Open, Storage};
use crate::{Error, Result};

/// Base sequence field position in the batch header.
const BASE_SEQUENCE_POS: usize = 53;

/// What compaction does with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Treatment {
    /// Copied unchanged (control batches).
    Keep,
    /// Its records are compacted by key.
    Clean,
    /// Dropped whole: a batch of an aborted transaction.
    Drop,
}

/// Aborted ranges by producer id, from every segment's aborted-transaction index.
type AbortedRanges = HashMap<i64, Vec<(i64, i64)>>;

fn treatment(header: &Header, aborted: &AbortedRanges) -> Treatment {
    if header.is_control() {
        return Treatment::Keep;
    }
    if header.is_transactional() {
        let (first, last) = (header.base_offset, header.last_offset());
        let in_aborted = aborted.get(&header.producer_id).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|&(from, marker)| from <= first && last < marker)
        });
        if in_aborted {
            return Treatment::Drop;
        }
    }
    Treatment::Clean
}

/// Re-encodes `keep` (a strict, non-empty subset of the records of the batch `orig`) as a v2 batch with the same
/// compression, timestamp type and producer fields; every record keeps its offset.
fn reencode(orig: &Header, keep: &[&Record]) -> Result<BytesMut> {
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        keep.iter().copied(),
        &RecordEncodeOptions {
            version: 2,
            compression: orig.compression(),
        },
    )
    .map_err(|e| {
        Error::CorruptMessage(format!("cannot re-encode batch {}: {e}", orig.base_offset))
    })?;
    // The encoder derives the header from the records; restore what it cannot know.
    let mut pos = 0;
    while pos < out.len() {
        let size = Header::parse(&out[pos..])
            .ok_or_else(|| Error::CorruptMessage("encoder produced a short batch".into()))?
            .size();
        let b = &mut out[pos..pos + size];
        if orig.is_log_append_time() {
            let attrs =
                i16::from_be_bytes([b[ATTRIBUTES_POS], b[ATTRIBUTES_POS + 1]]) | TIMESTAMP_TYPE_BIT;
            b[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attrs.to_be_bytes());
            b[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8]
                .copy_from_slice(&orig.max_timestamp.to_be_bytes());
        }
        if orig.base_sequence == -1 {
            b[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4].copy_from_slice(&(-1i32).to_be_bytes());
        }
        let crc = batch::compute_crc(b);
        b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        // Pair assertion: the rewritten batch must pass the same check recovery applies.
        batch::check_stored(b)?;
        pos += size;
    }
    Ok(out)
}

/// An inactive segment as the cleaner reads it without the log: its file (kept open even if retention deletes
/// the segment meanwhile) and its size when the pass was planned.
struct SegmentView {
    base_offset: i64,
    file: Arc<dyn FileHandle>,
    size: u64,
}

impl SegmentView {
    fn read_header(&self, pos: u64) -> Result<Header> {
        if pos + batch::HEADER_SIZE as u64 > self.size {
            return Err(Error::CorruptMessage(format!(
                "segment {} has no batch header at {pos}",
                self.base_offset
            )));
        }
        let mut buf = [0u8; batch::HEADER_SIZE];
        self.file.read_exact_at(&mut buf, pos)?;
        Header::parse(&buf).ok_or_else(|| Error::CorruptMessage("short header".into()))
    }

    fn read_batch(&self, pos: u64, header: &Header) -> Result<Bytes> {
        let mut buf = vec![0u8; header.size()];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(Bytes::from(buf))
    }
}

/// A compaction pass decided under the log's lock, to be run without it ([`CompactionPlan::run`]) and then
/// installed under it again ([`Log::finish_compaction`]). Appends and reads go on meanwhile: only inactive
/// segments are read, and cleaned copies are written beside them.
pub struct CompactionPlan {
    storage: Arc<dyn Storage>,
    dir: std::path::PathBuf,
    segments: Vec<SegmentView>,
    /// Base offset of the first segment not in the pass: the new cleaner checkpoint.
    end_base: i64,
    aborted: AbortedRanges,
    tomb_cutoff: i64,
    /// Commit markers below this offset may go when their transaction kept no record (-1: none may).
    marker_horizon: i64,
}

/// One segment's cleaned copy (`<base>.log.cleaned`, fsynced), waiting to be swapped in.
struct Cleaned {
    base_offset: i64,
    old_size: u64,
    new_size: u64,
}

/// What a compaction pass produced.
pub struct CompactionResult {
    cleaned: Vec<Cleaned>,
    planned: Vec<i64>,
    end_base: i64,
    oldest_tombstone: i64,
}

impl CompactionPlan {
    /// Lets the pass remove commit markers below `offset` whose transaction kept no record.
    pub fn remove_empty_commit_markers_below(&mut self, offset: i64) {
        self.marker_horizon = offset;
    }

    /// Builds the key map and writes the cleaned copies. Needs no access to the log.
    pub fn run(self) -> Result<CompactionResult> {
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for seg in &self.segments {
            let mut pos = 0;
            while pos < seg.size {
                let header = seg.read_header(pos)?;
                if treatment(&header, &self.aborted) == Treatment::Clean {
                    let mut bytes = seg.read_batch(pos, &header)?;
                    match crate::decompress::decode_bounded(
                        &mut bytes,
                        crate::decompress::MAX_DECOMPRESSED,
                    ) {
                        Ok(set) => {
                            for r in set.records {
                                if let Some(k) = r.key {
                                    latest.insert(k, r.offset);
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(offset = header.base_offset, error = %e, "cannot decode batch; keeping it")
                        }
                    }
                }
                pos += header.size() as u64;
            }
        }
        let mut oldest_tombstone = -1i64;
        let mut cleaned = Vec::new();
        // Per producer: did its current transaction keep any record so far?
        let mut txn_kept: HashMap<i64, bool> = HashMap::new();
        for seg in &self.segments {
            if let Some(c) =
                self.clean_segment(seg, &latest, &mut oldest_tombstone, &mut txn_kept)?
            {
                cleaned.push(c);
            }
        }
        Ok(CompactionResult {
            cleaned,
            planned: self.segments.iter().map(|s| s.base_offset).collect(),
            end_base: self.end_base,
            oldest_tombstone,
        })
    }

    /// Writes the cleaned copy of `seg` to `<name>.log.cleaned`; `None` when nothing would change.
    fn clean_segment(
        &self,
        seg: &SegmentView,
        latest: &HashMap<Bytes, i64>,
        oldest_tombstone: &mut i64,
        txn_kept: &mut HashMap<i64, bool>,
    ) -> Result<Option<Cleaned>> {
        let base = seg.base_offset;
        let cleaned_path = segment::log_path(&self.dir, base).with_extension("log.cleaned");
        let mut out = FileWriter::new(self.storage.open(&cleaned_path, Open::Truncate)?);
        let mut changed = false;
        let mut new_size = 0u64;
        let mut pos = 0;
        while pos < seg.size {
            let header = seg.read_header(pos)?;
            let bytes = seg.read_batch(pos, &header)?;
            pos += header.size() as u64;
            let treat = treatment(&header, &self.aborted);
            if treat == Treatment::Drop {
                txn_kept.entry(header.producer_id).or_insert(false);
                changed = true;
                continue;
            }
            if header.is_control() {
                let kept_data = txn_kept.remove(&header.producer_id).unwrap_or(false);
                let empty_commit = crate::control::control_type(&bytes)
                    == Some(crate::ControlType::Commit)
                    && !kept_data;
                if empty_commit && header.base_offset < self.marker_horizon {
                    changed = true;
                } else {
                    out.write_all(&bytes)?;
                    new_size += bytes.len() as u64;
                }
                continue;
            }
            let transactional = header.is_transactional();
            let size_before = new_size;
            let set = if treat == Treatment::Clean {
                // An undecodable batch is copied unchanged rather than failing the whole pass.
                crate::decompress::decode_bounded(
                    &mut bytes.clone(),
                    crate::decompress::MAX_DECOMPRESSED,
                )
                .ok()
            } else {
                None
            };
            let Some(set) = set else {
                out.write_all(&bytes)?;
                new_size += bytes.len() as u64;
                if transactional {
                    txn_kept.insert(header.producer_id, true);
                }
                continue;
            };
            let log_append = header.is_log_append_time();
            let keep: Vec<&Record> = set
                .records
                .iter()
                .filter(|r| {
                    let Some(key) = &r.key else {
                        return true; // Keyless records in a compacted topic are kept.
                    };
                    if latest.get(key).is_some_and(|&o| o != r.offset) {
                        return false;
                    }
                    if r.value.is_none() {
                        let ts = if log_append {
                            header.max_timestamp
                        } else {
                            r.timestamp
                        };
                        if ts < self.tomb_cutoff {
                            return false;
                        }
                        if *oldest_tombstone < 0 || ts < *oldest_tombstone {
                            *oldest_tombstone = ts;
                        }
                    }
                    true
                })
                .collect();
            if keep.len() == set.records.len() {
                out.write_all(&bytes)?;
                new_size += bytes.len() as u64;
            } else {
                changed = true;
                if !keep.is_empty() {
                    let rewritten = reencode(&header, &keep)?;
                    out.write_all(&rewritten)?;
                    new_size += rewritten.len() as u64;
                }
            }
            if transactional {
                let kept = txn_kept.entry(header.producer_id).or_insert(false);
                *kept |= new_size > size_before;
            }
        }
        if !changed {
            drop(out);
            self.storage.remove_file(&cleaned_path)?;
            return Ok(None);
        }
        out.finish_synced()?;
        Ok(Some(Cleaned {
            base_offset: base,
            old_size: seg.size,
            new_size,
        }))
    }
}

impl Log {
    /// Compaction in one go (plan, run, finish) for callers that hold the log anyway.
    pub fn compact(&mut self, now_ms: i64, stable_offset: i64) -> Result<u64> {
        match self.plan_compaction(now_ms, stable_offset) {
            Some(plan) => {
                let result = plan.run()?;
                self.finish_compaction(result)
            }
            None => Ok(0),
        }
    }

    /// Decides whether compaction is due (`cleanup_compact` and the dirty ratio reaches
    /// `min_cleanable_dirty_ratio`, or a retained tombstone has expired) and over which inactive segments:
    /// segments holding records younger than `min.compaction.lag.ms`, and everything after them, are left
    /// alone, as is every segment reaching `stable_offset` (the last stable offset: transactions below it are
    /// decided). The pass keeps only the last record per key, offsets unchanged, and drops tombstones older than
    /// `delete.retention.ms`.
    pub fn plan_compaction(&mut self, now_ms: i64, stable_offset: i64) -> Option<CompactionPlan> {
        self.clock_ms = self.clock_ms.max(now_ms);
        if !self.config.cleanup_compact || self.segments.len() < 2 {
            return None;
        }
        let inactive = self.segments.len() - 1;
        let end = if self.config.min_compaction_lag_ms > 0 {
            let cutoff = now_ms.saturating_sub(self.config.min_compaction_lag_ms);
            (0..inactive)
                .find(|&i| self.segments[i].max_timestamp > cutoff)
                .unwrap_or(inactive)
        } else {
            inactive
        };
        let end = (0..end)
            .find(|&i| self.segments[i].next_offset > stable_offset)
            .unwrap_or(end);
        if end == 0 {
            return None;
        }
        let total: u64 = self.segments[..end].iter().map(|s| s.size).sum();
        let dirty: u64 = self.segments[..end]
            .iter()
            .filter(|s| s.next_offset > self.cleaner_checkpoint)
            .map(|s| s.size)
            .sum();
        let tomb_cutoff = now_ms.saturating_sub(self.config.delete_retention_ms);
        let tombstones_due =
            self.oldest_tombstone_ts >= 0 && self.oldest_tombstone_ts < tomb_cutoff;
        let ratio = if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        };
        if (dirty == 0 || ratio < self.config.min_cleanable_dirty_ratio) && !tombstones_due {
            return None;
        }
        tracing::info!(dir = %self.dir.display(), segments = end, dirty, total, "compacting");
        let mut aborted: AbortedRanges = HashMap::new();
        for a in self.segments.iter().flat_map(|s| s.aborted.iter()) {
            aborted
                .entry(a.producer_id)
                .or_default()
                .push((a.first_offset, a.last_offset));
        }
        Some(CompactionPlan {
            storage: Arc::clone(&self.storage),
            dir: self.dir.clone(),
            segments: self.segments[..end]
                .iter()
                .map(|s| SegmentView {
                    base_offset: s.base_offset,
                    file: Arc::clone(&s.file),
                    size: s.size,
                })
                .collect(),
            end_base: self.segments[end].base_offset,
            aborted,
            tomb_cutoff,
            marker_horizon: -1,
        })
    }

    /// Swaps in the cleaned copies of a pass whose segments are still there, unchanged and inactive (retention
    /// or truncation may have removed some meanwhile: their copies are discarded). Returns bytes reclaimed.
    pub fn finish_compaction(&mut self, result: CompactionResult) -> Result<u64> {
        self.guarded(|log| log.finish_compaction_inner(result))
    }

    fn finish_compaction_inner(&mut self, result: CompactionResult) -> Result<u64> {
        let mut reclaimed = 0u64;
        for c in &result.cleaned {
            let cleaned_path =
                segment::log_path(&self.dir, c.base_offset).with_extension("log.cleaned");
            let last = self.segments.len() - 1;
            let Some(i) = self.segments[..last]
                .iter()
                .position(|s| s.base_offset == c.base_offset && s.size == c.old_size)
            else {
                tracing::info!(
                    base_offset = c.base_offset,
                    "segment changed during compaction; discarding its cleaned copy"
                );
                self.storage.remove_file(&cleaned_path)?;
                continue;
            };
            reclaimed += self.swap_in_cleaned(i, c)?;
        }
        // Empty cleaned segments are dropped, except the first one, which anchors the log start offset.
        let first = self.segments[0].base_offset;
        let mut i = 1;
        while i + 1 < self.segments.len() {
            let seg = &self.segments[i];
            if seg.is_empty()
                && seg.base_offset != first
                && result.planned.contains(&seg.base_offset)
            {
                let seg = self.segments.remove(i);
                seg.delete_files()?;
            } else {
                i += 1;
            }
        }
        self.cleaner_checkpoint = self.cleaner_checkpoint.max(result.end_base);
        self.oldest_tombstone_ts = result.oldest_tombstone;
        write_small_file(
            &*self.storage,
            &self.dir,
            CLEANER_CHECKPOINT_FILE,
            &format!("{} {}", self.cleaner_checkpoint, self.oldest_tombstone_ts),
        )?;
        self.check_invariants();
        Ok(reclaimed)
    }

    /// Replaces segment `i`'s file with its cleaned copy (rename), rebuilding its indexes.
    fn swap_in_cleaned(&mut self, i: usize, c: &Cleaned) -> Result<u64> {
        let base = c.base_offset;
        let log_path = segment::log_path(&self.dir, base);
        let cleaned_path = log_path.with_extension("log.cleaned");
        // Remove the indexes first: a crash between here and the rebuild then finds missing indexes and rebuilds
        // them, instead of trusting indexes that describe the old file.
        let old_file = Arc::clone(&self.segments[i].file);
        for p in [
            segment::index_path(&self.dir, base),
            segment::time_index_path(&self.dir, base),
        ] {
            st::remove_if_exists(&*self.storage, &p)?;
        }
        self.storage.rename(&cleaned_path, &log_path)?;
        self.storage.sync_dir(&self.dir)?;
        let interval = self.config.index_interval_bytes;
        self.segments[i].reload(interval)?;
        // The replacement was fsynced, so the old file no longer needs a flush.
        self.forget_pending_flush(&old_file);
        debug_assert_eq!(self.segments[i].size, c.new_size);
        Ok(c.old_size.saturating_sub(c.new_size))
    }
}
