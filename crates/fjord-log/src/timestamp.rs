//! Timestamp queries (ListOffsets). The only read path besides compaction that decodes records (bounded, see
//! `decompress`).

use bytes::Bytes;

use crate::batch::Header;
use crate::log::Log;
use crate::segment::Segment;
use crate::{Error, Result};

/// Decodes the records of the batch at `pos` and returns `(offset, timestamp)` pairs, with LogAppendTime batches
/// giving every record the batch's maxTimestamp.
pub(crate) fn record_timestamps(
    seg: &Segment,
    pos: u64,
    header: &Header,
) -> Result<Vec<(i64, i64)>> {
    let mut buf = Vec::with_capacity(header.size());
    seg.read_into(&mut buf, pos, header.size())?;
    let mut bytes = Bytes::from(buf);
    let set = crate::decompress::decode_bounded(&mut bytes, crate::decompress::MAX_DECOMPRESSED)
        .map_err(|e| {
            Error::CorruptMessage(format!(
                "cannot decode batch at offset {}: {e}",
                header.base_offset
            ))
        })?;
    let log_append = header.is_log_append_time();
    Ok(set
        .records
        .iter()
        .map(|r| {
            (
                r.offset,
                if log_append {
                    header.max_timestamp
                } else {
                    r.timestamp
                },
            )
        })
        .collect())
}

impl Log {
    /// First record (precise, record level) with timestamp >= `ts` at or above the log start offset:
    /// `Some((offset, timestamp))`, or `None` if there is none.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let log_start = self.log_start_offset;
        for seg in &self.segments {
            if seg.is_empty() || seg.max_timestamp < ts || seg.next_offset <= log_start {
                continue;
            }
            // Every batch up to the time index entry below `ts` is older than `ts`, so the scan can start there.
            let mut pos = match seg.time_index.lookup_below(ts) {
                Some(offset) => seg.offset_index.lookup(offset),
                None => 0,
            };
            while pos < seg.size {
                let header = seg.read_header(pos)?;
                if header.max_timestamp >= ts && header.last_offset() >= log_start {
                    let hit = record_timestamps(seg, pos, &header)?
                        .into_iter()
                        .find(|&(o, t)| o >= log_start && t >= ts);
                    if hit.is_some() {
                        return Ok(hit);
                    }
                }
                pos += header.size() as u64;
            }
        }
        Ok(None)
    }

    /// Largest timestamp in the log and the offset of the first record carrying it (ListOffsets -3, KIP-734),
    /// as `Some((offset, timestamp))` like [`Log::offset_for_timestamp`]; `None` if the log holds no timestamps.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<&Segment> = None;
        for seg in &self.segments {
            if seg.is_empty() || seg.max_timestamp < 0 || seg.next_offset <= self.log_start_offset {
                continue;
            }
            if best.is_none_or(|b| seg.max_timestamp > b.max_timestamp) {
                best = Some(seg);
            }
        }
        let seg = best?;
        let ts = seg.max_timestamp;
        let batch_offset = seg.offset_of_max_timestamp;
        // The segment only remembers the batch; find the exact record. Fall back to the batch's base offset if
        // the batch cannot be decoded (the signature has no error channel).
        let precise = seg
            .find_position(batch_offset)
            .ok()
            .flatten()
            .and_then(|(pos, header)| {
                record_timestamps(seg, pos, &header)
                    .ok()?
                    .into_iter()
                    .find(|&(o, t)| t == ts && o >= self.log_start_offset)
            });
        Some(precise.unwrap_or((batch_offset.max(self.log_start_offset), ts)))
    }
}
