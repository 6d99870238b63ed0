//! Log compaction: keep the last record per key in the inactive segments.
//!
//! Transactions: only segments wholly below the last stable offset are cleaned, so every transactional batch
//! seen has a decided outcome. Batches of aborted transactions (known from the segments' `.txnindex`) are
//! removed; records of committed transactions are compacted like any others. Control batches (markers) are
//! always kept: read_committed clients pair the aborted-transaction list with the abort markers.
//!
//! Known limitations, by design for now:
//! - Markers are never removed, so a compacted topic written transactionally keeps one small control batch
//!   per transaction and partition.
//! - Segments are cleaned one to one; small cleaned segments are not merged.
//! - The key map is built in memory over the whole cleanable range, without a size bound.
//! - A rewritten batch starts at its first retained record's offset (every record keeps its offset), and
//!   kafka-protocol's decoder keeps only the last header for duplicate header keys. Batches that lose no record
//!   are copied byte for byte, so only batches that actually shrink are affected.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use crate::batch::{self, Header, ATTRIBUTES_POS, CRC_POS, MAX_TIMESTAMP_POS, TIMESTAMP_TYPE_BIT};
use crate::log::{write_small_file, Log, CLEANER_CHECKPOINT_FILE};
use crate::segment::{self, Segment};
use crate::{Error, Result};

/// Base sequence field position in the batch header.
const BASE_SEQUENCE_POS: usize = 53;

fn read_batch(seg: &Segment, pos: u64, header: &Header) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(header.size());
    seg.read_into(&mut buf, pos, header.size())?;
    Ok(Bytes::from(buf))
}

fn compression_of(header: &Header) -> Compression {
    match header.attributes & batch::COMPRESSION_MASK {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

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
            compression: compression_of(orig),
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

impl Log {
    /// Compaction when `cleanup_compact` and the dirty ratio reaches `min_cleanable_dirty_ratio` (or a retained
    /// tombstone has expired): rewrites inactive segments keeping only the last record per key, offsets unchanged,
    /// dropping tombstones whose timestamp is older than `delete.retention.ms`. Segments holding records younger
    /// than `min.compaction.lag.ms`, and everything after them, are left alone, as is every segment reaching
    /// `stable_offset` (the last stable offset: transactions below it are decided). Returns bytes reclaimed.
    pub fn compact(&mut self, now_ms: i64, stable_offset: i64) -> Result<u64> {
        self.clock_ms = self.clock_ms.max(now_ms);
        if !self.config.cleanup_compact || self.segments.len() < 2 {
            return Ok(0);
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
            return Ok(0);
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
            return Ok(0);
        }
        tracing::info!(dir = %self.dir.display(), segments = end, dirty, total, "compacting");

        let mut aborted: AbortedRanges = HashMap::new();
        for a in self.segments.iter().flat_map(|s| s.aborted.iter()) {
            aborted
                .entry(a.producer_id)
                .or_default()
                .push((a.first_offset, a.last_offset));
        }
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for seg in &self.segments[..end] {
            let mut pos = 0;
            while pos < seg.size {
                let header = seg.read_header(pos)?;
                if treatment(&header, &aborted) == Treatment::Clean {
                    let mut bytes = read_batch(seg, pos, &header)?;
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
        let mut reclaimed = 0u64;
        for i in 0..end {
            reclaimed +=
                self.clean_segment(i, &latest, &aborted, tomb_cutoff, &mut oldest_tombstone)?;
        }
        // Empty cleaned segments are dropped, except the first one, which anchors the log start offset.
        let mut i = 1;
        let mut end = end;
        while i < end {
            if self.segments[i].is_empty() {
                let seg = self.segments.remove(i);
                seg.delete_files()?;
                end -= 1;
            } else {
                i += 1;
            }
        }
        self.cleaner_checkpoint = self.segments[end].base_offset;
        self.oldest_tombstone_ts = oldest_tombstone;
        write_small_file(
            &self.dir,
            CLEANER_CHECKPOINT_FILE,
            &format!("{} {}", self.cleaner_checkpoint, self.oldest_tombstone_ts),
        )?;
        Ok(reclaimed)
    }

    /// Rewrites segment `i` into `<name>.log.cleaned`, then swaps it in by rename. Returns bytes reclaimed.
    fn clean_segment(
        &mut self,
        i: usize,
        latest: &HashMap<Bytes, i64>,
        aborted: &AbortedRanges,
        tomb_cutoff: i64,
        oldest_tombstone: &mut i64,
    ) -> Result<u64> {
        let seg = &self.segments[i];
        let base = seg.base_offset;
        let log_path = segment::log_path(&self.dir, base);
        let cleaned_path = log_path.with_extension("log.cleaned");
        let mut out = BufWriter::new(File::create(&cleaned_path)?);
        let mut changed = false;
        let mut new_size = 0u64;
        let mut pos = 0;
        while pos < seg.size {
            let header = seg.read_header(pos)?;
            let bytes = read_batch(seg, pos, &header)?;
            pos += header.size() as u64;
            let treat = treatment(&header, aborted);
            if treat == Treatment::Drop {
                changed = true;
                continue;
            }
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
                        if ts < tomb_cutoff {
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
        }
        let old_size = seg.size;
        if !changed {
            drop(out);
            fs::remove_file(&cleaned_path)?;
            return Ok(0);
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        // Remove the indexes first: a crash between here and the rebuild then finds missing indexes and rebuilds
        // them, instead of trusting indexes that describe the old file.
        let old_file = Arc::clone(&seg.file);
        for p in [
            segment::index_path(&self.dir, base),
            segment::time_index_path(&self.dir, base),
        ] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        fs::rename(&cleaned_path, &log_path)?;
        File::open(&self.dir)?.sync_all()?;
        let interval = self.config.index_interval_bytes;
        self.segments[i].reload(interval)?;
        // The replacement was fsynced above, so the old file no longer needs a flush.
        self.forget_pending_flush(&old_file);
        debug_assert_eq!(self.segments[i].size, new_size);
        Ok(old_size.saturating_sub(new_size))
    }
}
