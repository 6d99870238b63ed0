//! Transaction control batches (KIP-98): the commit and abort markers the transaction coordinator writes to
//! every partition of a transaction. A control batch holds one record whose key is `(version: int16 = 0,
//! type: int16)` with type 0 = abort and 1 = commit, and whose value is `(version: int16 = 0,
//! coordinator_epoch: int32)`. Markers are never compressed, so reading the type needs no decompression.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    self, Header, ATTRIBUTES_POS, CONTROL_BIT, CRC_POS, HEADER_SIZE, TRANSACTIONAL_BIT,
};

/// What a control batch marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

fn put_varint(b: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    b.put_u8(z as u8);
}

/// Reads a zig-zag varint at `*pos`, advancing it; `None` if cut off or longer than 10 bytes.
fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// A complete control batch (offset 0; the log assigns the real one) for `producer_id`/`producer_epoch`.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    kind: ControlType,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Bytes {
    let mut record = BytesMut::with_capacity(24);
    record.put_i8(0); // record attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, 4); // key length
    record.put_i16(0); // key version
    record.put_i16(match kind {
        ControlType::Abort => 0,
        ControlType::Commit => 1,
    });
    put_varint(&mut record, 6); // value length
    record.put_i16(0); // value version
    record.put_i32(coordinator_epoch);
    put_varint(&mut record, 0); // header count

    let mut b = BytesMut::with_capacity(HEADER_SIZE + record.len() + 2);
    b.put_i64(0); // base offset
    b.put_i32(0); // batch length, patched below
    b.put_i32(-1); // partition leader epoch (set on append)
    b.put_i8(2); // magic
    b.put_u32(0); // crc, patched below
    b.put_i16(TRANSACTIONAL_BIT | CONTROL_BIT);
    b.put_i32(0); // last offset delta
    b.put_i64(timestamp_ms);
    b.put_i64(timestamp_ms);
    b.put_i64(producer_id);
    b.put_i16(producer_epoch);
    b.put_i32(-1); // base sequence: markers carry none
    b.put_i32(1); // record count
    put_varint(&mut b, record.len() as i64);
    b.put_slice(&record);
    let len = (b.len() - batch::LOG_OVERHEAD) as i32;
    b[batch::LENGTH_POS..batch::LENGTH_POS + 4].copy_from_slice(&len.to_be_bytes());
    debug_assert_eq!(ATTRIBUTES_POS, CRC_POS + 4);
    let crc = batch::compute_crc(&b);
    b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// The marker type of the control batch at the start of `batch`; `None` if it is not a control batch or its
/// first record cannot be read (an unknown control type, such as a KRaft record, also gives `None`).
pub fn control_type(batch: &[u8]) -> Option<ControlType> {
    control_marker(batch).map(|(kind, _)| kind)
}

/// [`control_type`] and the marker's coordinator epoch (from its value, Kafka's EndTransactionMarker; `None`
/// when the value cannot be read).
pub fn control_marker(batch: &[u8]) -> Option<(ControlType, Option<i32>)> {
    let h = Header::parse(batch)?;
    if !h.is_control() || h.attributes & batch::COMPRESSION_MASK != 0 {
        return None;
    }
    let body = batch.get(HEADER_SIZE..h.size().min(batch.len()))?;
    let mut pos = 0;
    let _len = get_varint(body, &mut pos)?;
    pos += 1; // attributes
    get_varint(body, &mut pos)?; // timestamp delta
    get_varint(body, &mut pos)?; // offset delta
    let key_len = get_varint(body, &mut pos)?;
    if key_len < 4 {
        return None;
    }
    let key = body.get(pos..pos + 4)?;
    let kind = match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => return None,
    };
    let coordinator_epoch = (|| {
        let mut pos = pos.checked_add(usize::try_from(key_len).ok()?)?;
        let value_len = get_varint(body, &mut pos)?;
        if value_len < 6 {
            return None;
        }
        let v = body.get(pos + 2..pos + 6)?;
        Some(i32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    })();
    Some((kind, coordinator_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_valid_batches_and_read_back_their_type() {
        for kind in [ControlType::Abort, ControlType::Commit] {
            let b = control_batch(42, 3, kind, 7, 1_000);
            let infos = crate::validate_batches(&b, 1 << 20).unwrap();
            assert_eq!(infos.len(), 1);
            let i = &infos[0];
            assert!(i.is_control && i.is_transactional);
            assert_eq!(
                (i.producer_id, i.producer_epoch, i.record_count),
                (42, 3, 1)
            );
            assert_eq!(control_type(&b), Some(kind));
            assert_eq!(control_marker(&b), Some((kind, Some(7))));
        }
        // Kafka's own decoder agrees on the layout.
        let mut b = control_batch(42, 3, ControlType::Commit, 7, 1_000);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
        let r = &set.records[0];
        assert!(r.control && r.transactional);
        assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, 1][..]));
        assert_eq!(r.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 7][..]));
    }

    #[test]
    fn data_batches_and_garbage_have_no_control_type() {
        let b = control_batch(1, 0, ControlType::Abort, 0, 0);
        assert_eq!(control_type(&b[..HEADER_SIZE + 3]), None);
        let mut data = b.to_vec();
        data[ATTRIBUTES_POS + 1] &= !(CONTROL_BIT as u8);
        assert_eq!(control_type(&data), None);
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn reading_the_type_of_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            attrs in any::<i16>(),
        ) {
            let mut b = bytes;
            if b.len() > 22 {
                b[21..23].copy_from_slice(&attrs.to_be_bytes());
            }
            let _ = super::control_type(&b);
        }
    }
}
