//! The `__consumer_offsets` values of KIP-848 consumer groups, byte-compatible with Kafka's group coordinator
//! (`group-coordinator/src/main/resources/common/message/ConsumerGroup*Value.json`, all version 0 and
//! "flexible": compact strings and arrays, a tagged-field section after every struct). Their keys (record types
//! 3 to 8) live with the others in [`crate::records`].
//!
//! Decoding skips tagged fields it does not know (Kafka 4.1 adds some, e.g. the group's metadata hash), so a log
//! written by a newer Kafka still loads; values of a version other than 0 are refused as corrupt.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::consumer_group::Assignment;
use crate::records::{get_i16, get_i32, need};
use crate::{Error, Result};

/// ConsumerGroupMemberMetadataValue (type 5): what a member told the coordinator about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberMetadata {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// One topic of ConsumerGroupPartitionMetadataValue (type 4): a subscribed topic as the target saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub topic_id: Uuid,
    pub name: String,
    pub partitions: i32,
}

/// Kafka's `MemberState` values, stored in ConsumerGroupCurrentMemberAssignmentValue.
pub const STATE_STABLE: i8 = 0;
pub const STATE_UNREVOKED_PARTITIONS: i8 = 1;
pub const STATE_UNRELEASED_PARTITIONS: i8 = 2;

/// ConsumerGroupCurrentMemberAssignmentValue (type 8): the member's epochs and what it owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: i8,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn get_uvarint(b: &mut Bytes) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..35).step_by(7) {
        need(b, 1)?;
        let byte = b.get_u8();
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::Corrupt("varint longer than 5 bytes".into()))
}

fn put_compact_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(b, 0),
        Some(s) => {
            put_uvarint(b, s.len() as u64 + 1);
            b.put_slice(s.as_bytes());
        }
    }
}

fn get_compact_nullable_str(b: &mut Bytes) -> Result<Option<String>> {
    let n = get_uvarint(b)?;
    if n == 0 {
        return Ok(None);
    }
    let n = (n - 1) as usize;
    need(b, n)?;
    let s = b.split_to(n);
    String::from_utf8(s.to_vec())
        .map(Some)
        .map_err(|_| Error::Corrupt("string is not UTF-8".into()))
}

fn get_compact_str(b: &mut Bytes) -> Result<String> {
    get_compact_nullable_str(b)?.ok_or_else(|| Error::Corrupt("null string".into()))
}

/// The length of a compact array, checked against the bytes left (each element takes at least `min` bytes).
fn get_array_len(b: &mut Bytes, min: usize) -> Result<usize> {
    let n = get_uvarint(b)?;
    if n == 0 {
        return Err(Error::Corrupt("null array".into()));
    }
    let n = (n - 1) as usize;
    if n.saturating_mul(min) > b.remaining() {
        return Err(Error::Corrupt(format!("array of {n} runs past the record")));
    }
    Ok(n)
}

fn put_array_len(b: &mut BytesMut, n: usize) {
    put_uvarint(b, n as u64 + 1);
}

/// An empty tagged-field section: Fjord writes no tagged fields.
fn put_no_tags(b: &mut BytesMut) {
    put_uvarint(b, 0);
}

/// Skips a tagged-field section (fields of newer versions this code does not read).
fn skip_tags(b: &mut Bytes) -> Result<()> {
    let n = get_uvarint(b)?;
    for _ in 0..n {
        get_uvarint(b)?;
        let size = get_uvarint(b)? as usize;
        need(b, size)?;
        b.advance(size);
    }
    Ok(())
}

fn put_uuid(b: &mut BytesMut, id: &Uuid) {
    b.put_slice(id.as_bytes());
}

fn get_uuid(b: &mut Bytes) -> Result<Uuid> {
    need(b, 16)?;
    let mut raw = [0u8; 16];
    b.copy_to_slice(&mut raw);
    Ok(Uuid::from_bytes(raw))
}

fn version0(b: &mut Bytes, what: &str) -> Result<()> {
    match get_i16(b)? {
        0 => Ok(()),
        v => Err(Error::Corrupt(format!("unknown {what} value version {v}"))),
    }
}

/// `[]TopicPartitions { TopicId uuid, Partitions []int32 }`, each element closed by its tagged fields.
fn put_assignment(b: &mut BytesMut, a: &Assignment) {
    put_array_len(b, a.len());
    for (id, ps) in a {
        put_uuid(b, id);
        put_array_len(b, ps.len());
        for p in ps {
            b.put_i32(*p);
        }
        put_no_tags(b);
    }
}

fn get_assignment(b: &mut Bytes) -> Result<Assignment> {
    let n = get_array_len(b, 18)?;
    let mut a = Assignment::new();
    for _ in 0..n {
        let id = get_uuid(b)?;
        let np = get_array_len(b, 4)?;
        let set = a.entry(id).or_default();
        for _ in 0..np {
            set.insert(get_i32(b)?);
        }
        skip_tags(b)?;
    }
    a.retain(|_, ps| !ps.is_empty());
    Ok(a)
}

/// ConsumerGroupMetadataValue (the group epoch) and ConsumerGroupTargetAssignmentMetadataValue (the assignment
/// epoch) share one layout: a single int32.
pub fn encode_epoch(epoch: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(7);
    b.put_i16(0);
    b.put_i32(epoch);
    put_no_tags(&mut b);
    b.freeze()
}

pub fn decode_epoch(mut b: Bytes) -> Result<i32> {
    version0(&mut b, "consumer group epoch")?;
    let epoch = get_i32(&mut b)?;
    skip_tags(&mut b)?;
    Ok(epoch)
}

pub fn encode_partition_metadata(topics: &[TopicMetadata]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_array_len(&mut b, topics.len());
    for t in topics {
        put_uuid(&mut b, &t.topic_id);
        put_compact_str(&mut b, Some(&t.name));
        b.put_i32(t.partitions);
        // PartitionMetadata (racks per partition): empty, as Kafka writes it when no rack is known.
        put_array_len(&mut b, 0);
        put_no_tags(&mut b);
    }
    put_no_tags(&mut b);
    b.freeze()
}

pub fn decode_partition_metadata(mut b: Bytes) -> Result<Vec<TopicMetadata>> {
    version0(&mut b, "consumer group partition metadata")?;
    let n = get_array_len(&mut b, 23)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let topic_id = get_uuid(&mut b)?;
        let name = get_compact_str(&mut b)?;
        let partitions = get_i32(&mut b)?;
        let np = get_array_len(&mut b, 6)?;
        for _ in 0..np {
            get_i32(&mut b)?;
            let nr = get_array_len(&mut b, 1)?;
            for _ in 0..nr {
                get_compact_str(&mut b)?;
            }
            skip_tags(&mut b)?;
        }
        skip_tags(&mut b)?;
        out.push(TopicMetadata {
            topic_id,
            name,
            partitions,
        });
    }
    skip_tags(&mut b)?;
    Ok(out)
}

pub fn encode_member_metadata(m: &MemberMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_compact_str(&mut b, m.instance_id.as_deref());
    put_compact_str(&mut b, m.rack_id.as_deref());
    put_compact_str(&mut b, Some(&m.client_id));
    put_compact_str(&mut b, Some(&m.client_host));
    put_array_len(&mut b, m.subscribed_topic_names.len());
    for t in &m.subscribed_topic_names {
        put_compact_str(&mut b, Some(t));
    }
    put_compact_str(&mut b, m.subscribed_topic_regex.as_deref());
    b.put_i32(m.rebalance_timeout_ms);
    put_compact_str(&mut b, m.server_assignor.as_deref());
    // ClassicMemberMetadata (tag 0) is for members that joined with the classic protocol: never written here.
    put_no_tags(&mut b);
    b.freeze()
}

pub fn decode_member_metadata(mut b: Bytes) -> Result<MemberMetadata> {
    version0(&mut b, "consumer group member metadata")?;
    let instance_id = get_compact_nullable_str(&mut b)?;
    let rack_id = get_compact_nullable_str(&mut b)?;
    let client_id = get_compact_str(&mut b)?;
    let client_host = get_compact_str(&mut b)?;
    let n = get_array_len(&mut b, 1)?;
    let mut subscribed_topic_names = Vec::with_capacity(n);
    for _ in 0..n {
        subscribed_topic_names.push(get_compact_str(&mut b)?);
    }
    let subscribed_topic_regex = get_compact_nullable_str(&mut b)?;
    let rebalance_timeout_ms = get_i32(&mut b)?;
    let server_assignor = get_compact_nullable_str(&mut b)?;
    skip_tags(&mut b)?;
    Ok(MemberMetadata {
        instance_id,
        rack_id,
        client_id,
        client_host,
        subscribed_topic_names,
        subscribed_topic_regex,
        rebalance_timeout_ms,
        server_assignor,
    })
}

/// ConsumerGroupTargetAssignmentMemberValue (type 7): the partitions the target gives one member.
pub fn encode_target_member(a: &Assignment) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_assignment(&mut b, a);
    put_no_tags(&mut b);
    b.freeze()
}

pub fn decode_target_member(mut b: Bytes) -> Result<Assignment> {
    version0(&mut b, "consumer group target assignment member")?;
    let a = get_assignment(&mut b)?;
    skip_tags(&mut b)?;
    Ok(a)
}

pub fn encode_current_assignment(c: &CurrentAssignment) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(c.member_epoch);
    b.put_i32(c.previous_member_epoch);
    b.put_i8(c.state);
    put_assignment(&mut b, &c.assigned);
    put_assignment(&mut b, &c.pending_revocation);
    put_no_tags(&mut b);
    b.freeze()
}

pub fn decode_current_assignment(mut b: Bytes) -> Result<CurrentAssignment> {
    version0(&mut b, "consumer group current member assignment")?;
    let member_epoch = get_i32(&mut b)?;
    let previous_member_epoch = get_i32(&mut b)?;
    need(&b, 1)?;
    let state = b.get_i8();
    let assigned = get_assignment(&mut b)?;
    let pending_revocation = get_assignment(&mut b)?;
    skip_tags(&mut b)?;
    Ok(CurrentAssignment {
        member_epoch,
        previous_member_epoch,
        state,
        assigned,
        pending_revocation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn assignment(pairs: &[(u128, &[i32])]) -> Assignment {
        pairs
            .iter()
            .map(|(t, ps)| {
                (
                    Uuid::from_u128(*t),
                    ps.iter().copied().collect::<BTreeSet<_>>(),
                )
            })
            .collect()
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(decode_epoch(encode_epoch(42)).unwrap(), 42);
        let topics = vec![TopicMetadata {
            topic_id: Uuid::from_u128(7),
            name: "orders".into(),
            partitions: 4,
        }];
        assert_eq!(
            decode_partition_metadata(encode_partition_metadata(&topics)).unwrap(),
            topics
        );
        let m = MemberMetadata {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            subscribed_topic_names: vec!["a".into(), "b".into()],
            subscribed_topic_regex: Some("x.*".into()),
            rebalance_timeout_ms: 300_000,
            server_assignor: None,
        };
        assert_eq!(
            decode_member_metadata(encode_member_metadata(&m)).unwrap(),
            m
        );
        let a = assignment(&[(1, &[0, 2]), (2, &[1])]);
        assert_eq!(decode_target_member(encode_target_member(&a)).unwrap(), a);
        let c = CurrentAssignment {
            member_epoch: 5,
            previous_member_epoch: 4,
            state: STATE_UNREVOKED_PARTITIONS,
            assigned: a.clone(),
            pending_revocation: assignment(&[(3, &[9])]),
        };
        assert_eq!(
            decode_current_assignment(encode_current_assignment(&c)).unwrap(),
            c
        );
    }

    #[test]
    fn layouts_match_kafkas_flexible_encoding() {
        // Version 0, Epoch 5, no tagged fields.
        assert_eq!(&encode_epoch(5)[..], &[0, 0, 0, 0, 0, 5, 0]);
        let m = MemberMetadata {
            client_id: "c".into(),
            client_host: "h".into(),
            subscribed_topic_names: vec!["t".into()],
            rebalance_timeout_ms: -1,
            ..Default::default()
        };
        assert_eq!(
            &encode_member_metadata(&m)[..],
            &[
                0, 0, // version
                0, // InstanceId: null
                0, // RackId: null
                2, b'c', // ClientId
                2, b'h', // ClientHost
                2, 2, b't', // SubscribedTopicNames: ["t"]
                0,    // SubscribedTopicRegex: null
                0xff, 0xff, 0xff, 0xff, // RebalanceTimeoutMs: -1
                0,    // ServerAssignor: null
                0,    // tagged fields
            ]
        );
    }

    #[test]
    fn unknown_tagged_fields_are_skipped() {
        // ConsumerGroupMetadataValue as Kafka 4.1 writes it, with a tagged MetadataHash (tag 0, 8 bytes).
        let b = Bytes::from_static(&[0, 0, 0, 0, 0, 9, 1, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode_epoch(b).unwrap(), 9);
        assert!(decode_epoch(Bytes::from_static(&[0, 1, 0, 0, 0, 9, 0])).is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Bytes::from(data);
            let _ = decode_epoch(b.clone());
            let _ = decode_partition_metadata(b.clone());
            let _ = decode_member_metadata(b.clone());
            let _ = decode_target_member(b.clone());
            let _ = decode_current_assignment(b);
        }
    }
}
