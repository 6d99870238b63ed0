//! Record decoding with a bound on the decompressed size, for the two places fjord-log looks inside batches
//! (compaction and timestamp lookups). A client can send a small batch that inflates to gigabytes (a
//! decompression bomb); decoding it unbounded would let one produce request exhaust the broker's memory later.
//! Past the bound the batch is "undecodable": compaction keeps it as it is and a timestamp lookup reports it.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

/// Largest decompressed record data accepted for one batch: far above what `max.message.bytes` (1 MiB by
/// default) produces with any real compression ratio, far below what would hurt the broker.
pub(crate) const MAX_DECOMPRESSED: usize = 128 << 20;

/// Xerial framing that Kafka's Java client wraps snappy blocks in.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: usize = 16;

fn too_large(limit: usize) -> anyhow::Error {
    anyhow::anyhow!("batch decompresses to more than {limit} bytes")
}

/// Reads at most `limit` bytes from `r`; more is an error.
fn read_limited(r: impl Read, limit: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> anyhow::Result<()> {
    let n = snap::raw::decompress_len(block)?;
    if out.len() + n > limit {
        return Err(too_large(limit));
    }
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new().decompress(block, &mut out[start..])?;
    Ok(())
}

fn snappy(data: &[u8], limit: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    if data.len() >= XERIAL_HEADER && data.starts_with(XERIAL_MAGIC) {
        let mut rest = &data[XERIAL_HEADER..];
        while !rest.is_empty() {
            anyhow::ensure!(rest.len() >= 4, "truncated xerial snappy block length");
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            anyhow::ensure!(rest.len() >= 4 + len, "truncated xerial snappy block");
            snappy_block(&rest[4..4 + len], &mut out, limit)?;
            rest = &rest[4 + len..];
        }
    } else {
        snappy_block(data, &mut out, limit)?;
    }
    Ok(Bytes::from(out))
}

/// Decompresses a batch's record data, refusing more than `limit` bytes of output.
fn decompress(buf: &mut Bytes, compression: Compression, limit: usize) -> anyhow::Result<Bytes> {
    let data = buf.copy_to_bytes(buf.remaining());
    match compression {
        Compression::None => Ok(data),
        Compression::Gzip => read_limited(flate2::read::GzDecoder::new(&data[..]), limit),
        Compression::Lz4 => read_limited(lz4::Decoder::new(&data[..])?, limit),
        Compression::Zstd => read_limited(zstd::stream::read::Decoder::new(&data[..])?, limit),
        Compression::Snappy => snappy(&data, limit),
    }
}

/// A reader over a batch's decompressed record data (`data` is everything after the 61-byte header), producing at
/// most `limit` bytes: the record walk of produce validation streams through it instead of inflating the whole
/// batch into memory. Snappy has no streaming decoder here; its blocks declare their length, checked first.
pub(crate) fn records_reader<'a>(
    data: &'a [u8],
    compression: Compression,
    limit: usize,
) -> anyhow::Result<Box<dyn std::io::BufRead + 'a>> {
    let take = limit as u64 + 1;
    Ok(match compression {
        Compression::None => Box::new(data),
        Compression::Gzip => Box::new(std::io::BufReader::new(
            flate2::read::GzDecoder::new(data).take(take),
        )),
        Compression::Lz4 => Box::new(std::io::BufReader::new(lz4::Decoder::new(data)?.take(take))),
        Compression::Zstd => Box::new(std::io::BufReader::new(
            zstd::stream::read::Decoder::new(data)?.take(take),
        )),
        Compression::Snappy => Box::new(std::io::Cursor::new(snappy(data, limit)?)),
    })
}

/// Decodes the batch at the start of `bytes` (advancing past it), decompressing at most `limit` bytes.
pub(crate) fn decode_bounded(bytes: &mut Bytes, limit: usize) -> anyhow::Result<RecordSet> {
    RecordBatchDecoder::decode_with_custom_compression(
        bytes,
        Some(|b: &mut Bytes, c: Compression| decompress(b, c, limit)),
    )
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    use super::*;

    fn batch(compression: Compression, value_len: usize, n: usize) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: 1,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'x'; value_len])),
                headers: Default::default(),
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

    #[test]
    fn every_codec_decodes_within_the_limit_and_refuses_beyond_it() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            // (The encoder writes one batch per record here.)
            let b = batch(c, 50_000, 3);
            let mut rest = b.clone();
            let mut records = Vec::new();
            while !rest.is_empty() {
                records.extend(decode_bounded(&mut rest, MAX_DECOMPRESSED).unwrap().records);
            }
            assert_eq!(records.len(), 3, "{c:?}");
            assert_eq!(records[2].key.as_deref(), Some(&b"k2"[..]));
            assert_eq!(records[2].value.as_ref().map(|v| v.len()), Some(50_000));
            if c != Compression::None {
                // 50 KB of highly compressible value: a 10 KB bound refuses the batch.
                let err = decode_bounded(&mut b.clone(), 10_000).unwrap_err();
                assert!(err.to_string().contains("more than 10000"), "{c:?}: {err}");
            }
        }
    }

    #[test]
    fn a_zstd_bomb_is_refused_without_inflating_it() {
        // 64 MiB of zeros compress to a few KB; with a 1 MiB bound the decoder stops after 1 MiB.
        let b = batch(Compression::Zstd, 64 << 20, 1);
        assert!(b.len() < 64 << 10, "the bomb is small: {} bytes", b.len());
        assert!(decode_bounded(&mut b.clone(), 1 << 20).is_err());
    }
}
