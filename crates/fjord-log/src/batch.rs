//! Record batch (magic v2) header parsing and validation.
//!
//! Everything here works on the fixed 61-byte header only; records are never decompressed. The same checks run
//! before an append and again when a batch is read back during recovery ("pair assertions").

use std::io::BufRead;

use kafka_protocol::records::Compression;

use crate::{Error, Result};

/// Bytes before the part counted by `batchLength`: baseOffset (8) + batchLength (4).
pub(crate) const LOG_OVERHEAD: usize = 12;
/// Size of the complete v2 batch header, up to and including `recordCount`.
pub(crate) const HEADER_SIZE: usize = 61;
/// Smallest legal `batchLength`: the header without the log overhead.
pub(crate) const MIN_BATCH_LENGTH: usize = HEADER_SIZE - LOG_OVERHEAD;

pub(crate) const BASE_OFFSET_POS: usize = 0;
pub(crate) const LENGTH_POS: usize = 8;
pub(crate) const LEADER_EPOCH_POS: usize = 12;
pub(crate) const MAGIC_POS: usize = 16;
pub(crate) const CRC_POS: usize = 17;
pub(crate) const ATTRIBUTES_POS: usize = 21;
const LAST_OFFSET_DELTA_POS: usize = 23;
const BASE_TIMESTAMP_POS: usize = 27;
pub(crate) const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
const RECORD_COUNT_POS: usize = 57;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
pub(crate) const TRANSACTIONAL_BIT: i16 = 1 << 4;
pub(crate) const CONTROL_BIT: i16 = 1 << 5;

/// Largest compression codec id Kafka defines (zstd).
const MAX_COMPRESSION: i16 = 4;

/// Facts about one appended batch, read from its v2 header without decompressing records.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub is_transactional: bool,
    pub is_control: bool,
    /// `attributes & 7`: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub compression: u8,
    /// Whole batch size in bytes, log overhead included.
    pub size: usize,
}

/// A parsed v2 batch header. Parsing does not check anything beyond the buffer being long enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i16_at(buf: &[u8], pos: usize) -> i16 {
    i16::from_be_bytes([buf[pos], buf[pos + 1]])
}

fn i32_at(buf: &[u8], pos: usize) -> i32 {
    i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]])
}

fn i64_at(buf: &[u8], pos: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[pos..pos + 8]);
    i64::from_be_bytes(b)
}

impl Header {
    /// Parses the first [`HEADER_SIZE`] bytes of `buf`; `None` if `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_SIZE {
            return None;
        }
        Some(Header {
            base_offset: i64_at(buf, BASE_OFFSET_POS),
            batch_length: i32_at(buf, LENGTH_POS),
            partition_leader_epoch: i32_at(buf, LEADER_EPOCH_POS),
            magic: buf[MAGIC_POS] as i8,
            crc: i32_at(buf, CRC_POS) as u32,
            attributes: i16_at(buf, ATTRIBUTES_POS),
            last_offset_delta: i32_at(buf, LAST_OFFSET_DELTA_POS),
            base_timestamp: i64_at(buf, BASE_TIMESTAMP_POS),
            max_timestamp: i64_at(buf, MAX_TIMESTAMP_POS),
            producer_id: i64_at(buf, PRODUCER_ID_POS),
            producer_epoch: i16_at(buf, PRODUCER_EPOCH_POS),
            base_sequence: i32_at(buf, BASE_SEQUENCE_POS),
            record_count: i32_at(buf, RECORD_COUNT_POS),
        })
    }

    /// Total size of the batch on disk, log overhead included. Only meaningful once `batch_length` was checked.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// The codec of the records (unknown ids were refused by [`check_batch`]).
    pub fn compression(&self) -> Compression {
        match self.attributes & COMPRESSION_MASK {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    pub fn info(&self) -> BatchInfo {
        BatchInfo {
            base_offset: self.base_offset,
            last_offset: self.last_offset(),
            record_count: self.record_count,
            first_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            is_transactional: self.is_transactional(),
            is_control: self.is_control(),
            compression: (self.attributes & COMPRESSION_MASK) as u8,
            size: self.size(),
        }
    }
}

/// CRC-32C of a whole batch as stored in its `crc` field: it covers `attributes` to the end of the batch.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_POS..])
}

/// Reads the magic byte and the batch length of the batch at the start of `buf` and checks that the whole batch
/// is present. Returns the batch size. Shared by the producer path and recovery.
fn check_framing(buf: &[u8]) -> Result<usize> {
    if buf.len() < MAGIC_POS + 1 {
        return Err(Error::CorruptMessage(format!(
            "truncated batch: {} bytes, need at least {HEADER_SIZE}",
            buf.len()
        )));
    }
    // Magic sits at byte 16 in every message format version, so it can be checked before anything else and an
    // old-format message set gets the dedicated error.
    let magic = buf[MAGIC_POS] as i8;
    if magic != 2 {
        return Err(Error::UnsupportedFormat(format!(
            "magic {magic}, only record batch v2 is supported"
        )));
    }
    let batch_length = i32_at(buf, LENGTH_POS);
    if batch_length < MIN_BATCH_LENGTH as i32 {
        return Err(Error::CorruptMessage(format!(
            "batch length {batch_length} is smaller than the v2 header"
        )));
    }
    let size = LOG_OVERHEAD + batch_length as usize;
    if size > buf.len() {
        return Err(Error::CorruptMessage(format!(
            "truncated batch: length says {size} bytes, {} present",
            buf.len()
        )));
    }
    Ok(size)
}

/// Checks the invariants of one complete batch (`batch` is exactly the batch). `strict_delta` demands
/// `lastOffsetDelta == recordCount - 1` for non-control batches (true for producer batches); stored batches that
/// compaction rewrote may have gaps, so recovery only demands `lastOffsetDelta >= recordCount - 1`.
pub(crate) fn check_batch(batch: &[u8], strict_delta: bool) -> Result<Header> {
    let header = Header::parse(batch)
        .ok_or_else(|| Error::CorruptMessage("truncated batch header".into()))?;
    debug_assert_eq!(header.size(), batch.len());
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(Error::CorruptMessage(format!(
            "CRC mismatch: stored {:#010x}, computed {actual:#010x}",
            header.crc
        )));
    }
    if header.attributes & COMPRESSION_MASK > MAX_COMPRESSION {
        return Err(Error::InvalidRecord(format!(
            "unknown compression codec {}",
            header.attributes & COMPRESSION_MASK
        )));
    }
    if header.record_count < 1 {
        return Err(Error::InvalidRecord(format!(
            "batch has {} records, need at least one",
            header.record_count
        )));
    }
    // Kafka rejects negative timestamps other than -1 (no timestamp); checking the header bounds is the cheap,
    // decode-free approximation of its per-record check.
    if strict_delta && (header.base_timestamp < -1 || header.max_timestamp < -1) {
        return Err(Error::InvalidTimestamp(format!(
            "batch timestamps {}..{} are negative",
            header.base_timestamp, header.max_timestamp
        )));
    }
    let expected_delta = header.record_count - 1;
    let delta_ok = if strict_delta && !header.is_control() {
        header.last_offset_delta == expected_delta
    } else {
        header.last_offset_delta >= expected_delta
    };
    if !delta_ok {
        return Err(Error::InvalidRecord(format!(
            "lastOffsetDelta {} does not match record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    Ok(header)
}

/// What the walk over a batch's records found: the real record count was checked against the header; the
/// timestamps are the records' own (base timestamp + delta), not the header's claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordsSummary {
    /// Smallest record timestamp other than -1 (no timestamp), or -1 when none has one.
    pub min_timestamp: i64,
    /// Largest record timestamp, -1 when none has one.
    pub max_timestamp: i64,
    /// How many records have a null key (a compacted topic refuses them; see [`keyless_records`]).
    pub keyless: u32,
}

/// A cursor over (decompressed) record data that counts what it consumed, so a record's fields can be checked
/// against the record's declared length.
struct RecordReader<'a> {
    r: &'a mut dyn BufRead,
    consumed: u64,
}

fn decompress_error(e: std::io::Error) -> Error {
    Error::CorruptMessage(format!("cannot decompress the records: {e}"))
}

impl RecordReader<'_> {
    fn at_end(&mut self) -> Result<bool> {
        Ok(self.r.fill_buf().map_err(decompress_error)?.is_empty())
    }

    /// One zig-zag varint of at most `max_bytes` bytes (5 for an int, 10 for a long).
    fn varint(&mut self, max_bytes: u32) -> Result<i64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let Some(&byte) = self.r.fill_buf().map_err(decompress_error)?.first() else {
                return Err(Error::CorruptMessage(
                    "record data ends inside a varint".into(),
                ));
            };
            self.r.consume(1);
            self.consumed += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(Error::CorruptMessage(
            "varint too long in record data".into(),
        ))
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let available = self.r.fill_buf().map_err(decompress_error)?.len() as u64;
            if available == 0 {
                return Err(Error::CorruptMessage(
                    "record data ends inside a record".into(),
                ));
            }
            let step = available.min(n);
            self.r.consume(step as usize);
            self.consumed += step;
            n -= step;
        }
        Ok(())
    }

    /// Skips a length-prefixed field (-1 = null where `nullable`); true when it was null.
    fn skip_field(&mut self, nullable: bool) -> Result<bool> {
        let len = self.varint(5)?;
        if len < -1 || (len == -1 && !nullable) {
            return Err(Error::CorruptMessage(format!(
                "invalid field length {len} in a record"
            )));
        }
        self.skip(len.max(0) as u64)?;
        Ok(len == -1)
    }
}

/// Walks the records of one batch (the record data after the header, decompressed on the fly under the
/// decompression cap) and checks that there are exactly `header.record_count` well-framed records and nothing
/// after them, as Kafka does before it accepts a batch. Keys, values and headers are skipped, never copied. A
/// forged record count, a record that overruns its length, or a decompression bomb is refused here, so a batch
/// can never claim more offsets than it holds records.
pub(crate) fn walk_records(batch: &[u8], header: &Header) -> Result<RecordsSummary> {
    walk(batch, header, &mut |_| {})
}

/// The indexes (within the batch) of the records with a null key: what a compacted topic refuses, reported
/// per record as Kafka does (KIP-467). Only called on the rare refusal path, after [`walk_records`] passed.
pub(crate) fn keyless_records(batch: &[u8], header: &Header) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    walk(batch, header, &mut |i| out.push(i))?;
    Ok(out)
}

fn walk(batch: &[u8], header: &Header, on_keyless: &mut dyn FnMut(i32)) -> Result<RecordsSummary> {
    let limit = crate::decompress::MAX_DECOMPRESSED;
    let mut reader =
        crate::decompress::records_reader(&batch[HEADER_SIZE..], header.compression(), limit)
            .map_err(|e| Error::CorruptMessage(format!("cannot decompress the records: {e}")))?;
    let mut r = RecordReader {
        r: &mut *reader,
        consumed: 0,
    };
    let mut summary = RecordsSummary {
        min_timestamp: -1,
        max_timestamp: -1,
        keyless: 0,
    };
    for i in 0..header.record_count {
        if r.at_end()? {
            return Err(Error::InvalidRecord(format!(
                "batch declares {} records but holds {i}",
                header.record_count
            )));
        }
        let len = r.varint(5)?;
        // attributes, timestamp delta, offset delta, key length, value length, header count: 6 bytes at least.
        if len < 6 {
            return Err(Error::CorruptMessage(format!(
                "invalid record length {len}"
            )));
        }
        let start = r.consumed;
        r.skip(1)?; // attributes
        let ts_delta = r.varint(10)?;
        r.varint(5)?; // offset delta
        if r.skip_field(true)? {
            summary.keyless += 1;
            on_keyless(i);
        }
        r.skip_field(true)?; // value
        let headers = r.varint(5)?;
        if headers < 0 {
            return Err(Error::CorruptMessage(format!(
                "invalid header count {headers}"
            )));
        }
        for _ in 0..headers {
            r.skip_field(false)?;
            r.skip_field(true)?;
            // A huge declared header count stops at the record's own length, not at the end of the data.
            if r.consumed - start > len as u64 {
                break;
            }
        }
        if r.consumed - start != len as u64 {
            return Err(Error::CorruptMessage(format!(
                "record {i} declares {len} bytes but its fields take {}",
                r.consumed - start
            )));
        }
        if r.consumed > limit as u64 {
            return Err(Error::CorruptMessage(format!(
                "records decompress to more than {limit} bytes"
            )));
        }
        let ts = if header.base_timestamp == -1 && ts_delta == 0 {
            -1
        } else {
            header.base_timestamp.saturating_add(ts_delta)
        };
        summary.max_timestamp = summary.max_timestamp.max(ts);
        if ts != -1 && (summary.min_timestamp == -1 || ts < summary.min_timestamp) {
            summary.min_timestamp = ts;
        }
    }
    if !r.at_end()? {
        return Err(Error::InvalidRecord(format!(
            "batch declares {} records but holds more data after them",
            header.record_count
        )));
    }
    Ok(summary)
}

/// Kafka's topic-level `compression.type`: re-encodes each client batch of `records` whose codec is not `target`
/// (already validated by [`validate_headers`]) in `target`, keeping its records (offsets, sequences, timestamps,
/// keys, values, headers) and its producer id, epoch and transactional flag. Batches already in `target` and
/// control batches are copied as they are. The slow path: only a topic configured with a codec other than
/// `producer` that receives batches in another codec gets here.
pub(crate) fn recompress(
    records: &[u8],
    checked: &[(usize, Header, RecordsSummary)],
    target: Compression,
) -> Result<bytes::Bytes> {
    use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
    let mut out = bytes::BytesMut::with_capacity(records.len());
    for (pos, header, _) in checked {
        let raw = &records[*pos..*pos + header.size()];
        if header.is_control() || header.compression() == target {
            out.extend_from_slice(raw);
            continue;
        }
        let mut b = bytes::Bytes::copy_from_slice(raw);
        let set = RecordBatchDecoder::decode(&mut b).map_err(|e| {
            Error::CorruptMessage(format!("cannot decode the batch to recompress it: {e}"))
        })?;
        let before = out.len();
        RecordBatchEncoder::encode(
            &mut out,
            set.records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: target,
            },
        )
        .map_err(|e| {
            Error::InvalidRecord(format!("cannot recompress the batch in {target:?}: {e}"))
        })?;
        // The encoder starts a new batch where producer fields change; a client batch never has such changes,
        // so one batch in gives one batch out (the offsets the caller assigns depend on it).
        if batch_headers(&out[before..]).count() != 1 {
            return Err(Error::InvalidRecord(
                "a batch whose records disagree on their producer fields cannot be recompressed"
                    .into(),
            ));
        }
    }
    Ok(out.freeze())
}

/// Validates every batch in `records` as a producer batch (header, CRC, and a walk over its records) and
/// returns their headers with their positions and what the walk found.
pub(crate) fn validate_headers(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<(usize, Header, RecordsSummary)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        let size = check_framing(rest)?;
        if size > max_message_bytes {
            return Err(Error::RecordTooLarge {
                size,
                max: max_message_bytes,
            });
        }
        let header = check_batch(&rest[..size], true)?;
        let summary = walk_records(&rest[..size], &header)?;
        out.push((pos, header, summary));
        pos += size;
    }
    Ok(out)
}

/// Pure helper also used by the broker and fuzz tests: validate a buffer of v2 batches (no decompression).
///
/// Checks magic, CRC-32C over attributes..end, batch length, record count >= 1, `lastOffsetDelta ==
/// recordCount - 1` for non-control batches and size <= `max_message_bytes`. An empty buffer yields no batches.
pub fn validate_batches(records: &[u8], max_message_bytes: usize) -> Result<Vec<BatchInfo>> {
    Ok(validate_headers(records, max_message_bytes)?
        .into_iter()
        .map(|(_, h, _)| h.info())
        .collect())
}

/// The headers of the batches in `records`, read without any check (no CRC, no length validation beyond
/// what framing needs): for cheap questions such as "does any batch carry a producer id" or "how many
/// records were sent". Stops at the first header that is cut off or has a non-positive length.
pub fn batch_headers(records: &[u8]) -> impl Iterator<Item = BatchInfo> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let h = Header::parse(records.get(pos..)?)?;
        if h.batch_length <= 0 {
            return None;
        }
        pos = pos.saturating_add(h.size());
        Some(h.info())
    })
}

/// Recovery-side check of a batch read back from disk: framing plus [`check_batch`] with the relaxed delta rule.
/// `buf` starts at the batch and may extend beyond it.
pub(crate) fn check_stored(buf: &[u8]) -> Result<Header> {
    let size = check_framing(buf)?;
    check_batch(&buf[..size], false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType as KTimestampType,
    };

    /// Builds one producer batch of `n` records with the given compression, as a client would.
    pub(crate) fn producer_batch(
        n: usize,
        compression: Compression,
        ts: i64,
        value: &[u8],
    ) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: KTimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: ts + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::copy_from_slice(value)),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn fix_crc(batch: &mut [u8]) {
        let crc = compute_crc(batch);
        batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn accepts_encoder_batches_with_every_compression() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = producer_batch(5, c, 1000, b"hello world hello world");
            let infos = validate_batches(&batch, 1 << 20).unwrap();
            assert_eq!(infos.len(), 1, "{c:?}");
            assert_eq!(infos[0].record_count, 5);
            assert_eq!(infos[0].last_offset, 4);
            assert_eq!(infos[0].first_timestamp, 1000);
            assert_eq!(infos[0].max_timestamp, 1004);
            assert_eq!(infos[0].compression, c as u8);
            assert_eq!(infos[0].size, batch.len());
        }
    }

    #[test]
    fn accepts_several_concatenated_batches() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&producer_batch(2, Compression::None, 1, b"a"));
        buf.extend_from_slice(&producer_batch(3, Compression::Zstd, 1, b"b"));
        let infos = validate_batches(&buf, 1 << 20).unwrap();
        assert_eq!(
            infos.iter().map(|i| i.record_count).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn rejects_bad_magic_as_unsupported_format() {
        let mut batch = producer_batch(1, Compression::None, 1, b"x").to_vec();
        batch[MAGIC_POS] = 1;
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(Error::UnsupportedFormat(_))
        ));
    }

    #[test]
    fn rejects_bad_crc_as_corrupt() {
        let mut batch = producer_batch(2, Compression::None, 1, b"x").to_vec();
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(Error::CorruptMessage(m)) if m.contains("CRC")
        ));
    }

    #[test]
    fn rejects_truncated_batch() {
        let batch = producer_batch(2, Compression::None, 1, b"xyz");
        for cut in [1, 10, 17, 40, batch.len() - 1] {
            assert!(
                matches!(
                    validate_batches(&batch[..cut], 1 << 20),
                    Err(Error::CorruptMessage(_))
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn rejects_length_field_smaller_than_header() {
        let mut batch = producer_batch(1, Compression::None, 1, b"x").to_vec();
        batch[LENGTH_POS..LENGTH_POS + 4].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(Error::CorruptMessage(_))
        ));
    }

    #[test]
    fn rejects_length_field_larger_than_buffer() {
        let mut batch = producer_batch(1, Compression::None, 1, b"x").to_vec();
        let len = i32_at(&batch, LENGTH_POS) + 1;
        batch[LENGTH_POS..LENGTH_POS + 4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(Error::CorruptMessage(_))
        ));
    }

    #[test]
    fn rejects_zero_records() {
        let mut batch = producer_batch(1, Compression::None, 1, b"x").to_vec();
        batch[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&0i32.to_be_bytes());
        batch[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        fix_crc(&mut batch);
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
    }

    #[test]
    fn rejects_offset_delta_not_matching_record_count() {
        let mut batch = producer_batch(3, Compression::None, 1, b"x").to_vec();
        batch[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
            .copy_from_slice(&5i32.to_be_bytes());
        fix_crc(&mut batch);
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
        // Recovery tolerates gaps left by compaction.
        assert!(check_stored(&batch).is_ok());
    }

    #[test]
    fn rejects_negative_timestamps() {
        let batch = producer_batch(2, Compression::None, -50, b"x");
        assert!(matches!(
            validate_batches(&batch, 1 << 20),
            Err(Error::InvalidTimestamp(_))
        ));
        let batch = producer_batch(1, Compression::None, -1, b"x");
        assert!(
            validate_batches(&batch, 1 << 20).is_ok(),
            "-1 means no timestamp"
        );
    }

    #[test]
    fn rejects_oversize_batch() {
        let batch = producer_batch(4, Compression::None, 1, &[7u8; 500]);
        match validate_batches(&batch, 100) {
            Err(Error::RecordTooLarge { size, max }) => {
                assert_eq!(size, batch.len());
                assert_eq!(max, 100);
            }
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn empty_buffer_has_no_batches() {
        assert!(validate_batches(&[], 100).unwrap().is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn validate_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = validate_batches(&bytes, 1 << 20);
        }

        /// The record walk on garbage: mutated record bytes (and counts) behind a correct CRC, for every codec.
        #[test]
        fn the_record_walk_never_panics_on_mutated_records(
            codec in 0usize..5,
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..6),
            count in proptest::prelude::any::<i32>(),
        ) {
            let c = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][codec];
            let mut batch = producer_batch(4, c, 5, b"payload payload").to_vec();
            for (i, v) in edits {
                let i = HEADER_SIZE + i % (batch.len() - HEADER_SIZE);
                batch[i] = v;
            }
            if count % 3 == 0 {
                batch[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&count.to_be_bytes());
                batch[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
                    .copy_from_slice(&count.wrapping_sub(1).to_be_bytes());
            }
            fix_crc(&mut batch);
            let _ = validate_batches(&batch, 1 << 20);
        }

        #[test]
        fn validate_never_panics_on_mutated_batches(idx in 0usize..200, val in proptest::prelude::any::<u8>(), cut in 0usize..400) {
            let mut batch = producer_batch(3, Compression::None, 5, b"payload").to_vec();
            let i = idx % batch.len();
            batch[i] = val;
            let cut = cut.min(batch.len());
            let _ = validate_batches(&batch[..cut], 1 << 20);
            let _ = check_stored(&batch[..cut]);
        }
    }
}
