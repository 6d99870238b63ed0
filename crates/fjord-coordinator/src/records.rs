//! The key and value formats of `__consumer_offsets`, byte-compatible with Kafka's coordinator records so the
//! topic reads the same to Kafka tooling: OffsetCommitKey (v1) / OffsetCommitValue (v3) and GroupMetadataKey
//! (v2) / GroupMetadataValue (v3), and the keys of KIP-848 consumer groups (record types 3 to 8, Kafka's
//! ConsumerGroupMetadataKey ... ConsumerGroupCurrentMemberAssignmentKey; their values are in
//! [`crate::consumer_records`]). Decoding accepts the older value versions too.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// KIP-848 (type 3): the group epoch.
    ConsumerGroupMetadata {
        group: String,
    },
    /// KIP-848 (type 4): the subscribed topics' ids and partition counts the target was computed for.
    ConsumerGroupPartitionMetadata {
        group: String,
    },
    /// KIP-848 (type 5): a member's client details and subscription.
    ConsumerGroupMemberMetadata {
        group: String,
        member: String,
    },
    /// KIP-848 (type 6): the epoch of the target assignment.
    ConsumerGroupTargetAssignmentMetadata {
        group: String,
    },
    /// KIP-848 (type 7): one member's part of the target assignment.
    ConsumerGroupTargetAssignmentMember {
        group: String,
        member: String,
    },
    /// KIP-848 (type 8): a member's epochs and current assignment.
    ConsumerGroupCurrentMemberAssignment {
        group: String,
        member: String,
    },
}

impl Key {
    /// The group a record belongs to.
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. }
            | Key::Group { group }
            | Key::ConsumerGroupMetadata { group }
            | Key::ConsumerGroupPartitionMetadata { group }
            | Key::ConsumerGroupMemberMetadata { group, .. }
            | Key::ConsumerGroupTargetAssignmentMetadata { group }
            | Key::ConsumerGroupTargetAssignmentMember { group, .. }
            | Key::ConsumerGroupCurrentMemberAssignment { group, .. } => group,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

pub(crate) fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}
pub(crate) fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}
fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

pub(crate) fn need(b: &Bytes, n: usize) -> Result<()> {
    if b.remaining() < n {
        return Err(Error::Corrupt(format!(
            "record ends early: need {n} bytes, have {}",
            b.remaining()
        )));
    }
    Ok(())
}
pub(crate) fn get_i16(b: &mut Bytes) -> Result<i16> {
    need(b, 2)?;
    Ok(b.get_i16())
}
pub(crate) fn get_i32(b: &mut Bytes) -> Result<i32> {
    need(b, 4)?;
    Ok(b.get_i32())
}
pub(crate) fn get_i64(b: &mut Bytes) -> Result<i64> {
    need(b, 8)?;
    Ok(b.get_i64())
}
fn get_nullable_str(b: &mut Bytes) -> Result<Option<String>> {
    let n = get_i16(b)?;
    if n < 0 {
        return Ok(None);
    }
    need(b, n as usize)?;
    let s = b.split_to(n as usize);
    String::from_utf8(s.to_vec())
        .map(Some)
        .map_err(|_| Error::Corrupt("string is not UTF-8".into()))
}
pub(crate) fn get_str(b: &mut Bytes) -> Result<String> {
    get_nullable_str(b)?.ok_or_else(|| Error::Corrupt("null string".into()))
}
fn get_bytes(b: &mut Bytes) -> Result<Bytes> {
    let n = get_i32(b)?;
    if n < 0 {
        return Ok(Bytes::new());
    }
    need(b, n as usize)?;
    Ok(b.split_to(n as usize))
}

pub fn encode_key(key: &Key) -> Bytes {
    let mut b = BytesMut::new();
    match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => {
            b.put_i16(1);
            put_str(&mut b, group);
            put_str(&mut b, topic);
            b.put_i32(*partition);
        }
        Key::Group { group } => {
            b.put_i16(2);
            put_str(&mut b, group);
        }
        Key::ConsumerGroupMetadata { group } => {
            b.put_i16(3);
            put_str(&mut b, group);
        }
        Key::ConsumerGroupPartitionMetadata { group } => {
            b.put_i16(4);
            put_str(&mut b, group);
        }
        Key::ConsumerGroupMemberMetadata { group, member } => {
            b.put_i16(5);
            put_str(&mut b, group);
            put_str(&mut b, member);
        }
        Key::ConsumerGroupTargetAssignmentMetadata { group } => {
            b.put_i16(6);
            put_str(&mut b, group);
        }
        Key::ConsumerGroupTargetAssignmentMember { group, member } => {
            b.put_i16(7);
            put_str(&mut b, group);
            put_str(&mut b, member);
        }
        Key::ConsumerGroupCurrentMemberAssignment { group, member } => {
            b.put_i16(8);
            put_str(&mut b, group);
            put_str(&mut b, member);
        }
    }
    b.freeze()
}

pub fn decode_key(mut b: Bytes) -> Result<Key> {
    match get_i16(&mut b)? {
        0 | 1 => Ok(Key::Offset {
            group: get_str(&mut b)?,
            topic: get_str(&mut b)?,
            partition: get_i32(&mut b)?,
        }),
        2 => Ok(Key::Group {
            group: get_str(&mut b)?,
        }),
        3 => Ok(Key::ConsumerGroupMetadata {
            group: get_str(&mut b)?,
        }),
        4 => Ok(Key::ConsumerGroupPartitionMetadata {
            group: get_str(&mut b)?,
        }),
        5 => Ok(Key::ConsumerGroupMemberMetadata {
            group: get_str(&mut b)?,
            member: get_str(&mut b)?,
        }),
        6 => Ok(Key::ConsumerGroupTargetAssignmentMetadata {
            group: get_str(&mut b)?,
        }),
        7 => Ok(Key::ConsumerGroupTargetAssignmentMember {
            group: get_str(&mut b)?,
            member: get_str(&mut b)?,
        }),
        8 => Ok(Key::ConsumerGroupCurrentMemberAssignment {
            group: get_str(&mut b)?,
            member: get_str(&mut b)?,
        }),
        v => Err(Error::Corrupt(format!("unknown key version {v}"))),
    }
}

pub fn encode_offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp);
    b.freeze()
}

pub fn decode_offset_value(mut b: Bytes) -> Result<OffsetValue> {
    let version = get_i16(&mut b)?;
    let offset = get_i64(&mut b)?;
    let leader_epoch = if version >= 3 { get_i32(&mut b)? } else { -1 };
    let metadata = get_str(&mut b)?;
    let commit_timestamp = get_i64(&mut b)?;
    if version == 1 {
        get_i64(&mut b)?; // expire timestamp, no longer used
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

pub fn encode_group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_str(&mut b, v.protocol.as_deref());
    put_nullable_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

pub fn decode_group_value(mut b: Bytes) -> Result<GroupValue> {
    let version = get_i16(&mut b)?;
    if !(0..=3).contains(&version) {
        return Err(Error::Corrupt(format!(
            "unknown group value version {version}"
        )));
    }
    let protocol_type = get_str(&mut b)?;
    let generation = get_i32(&mut b)?;
    let protocol = get_nullable_str(&mut b)?;
    let leader = get_nullable_str(&mut b)?;
    let state_timestamp = if version >= 2 { get_i64(&mut b)? } else { -1 };
    let n = get_i32(&mut b)?;
    if n < 0 || n as usize > b.remaining() {
        return Err(Error::Corrupt(format!("bad member count {n}")));
    }
    let mut members = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let member_id = get_str(&mut b)?;
        let instance_id = if version >= 3 {
            get_nullable_str(&mut b)?
        } else {
            None
        };
        let client_id = get_str(&mut b)?;
        let client_host = get_str(&mut b)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(&mut b)? } else { -1 };
        let session_timeout_ms = get_i32(&mut b)?;
        let subscription = get_bytes(&mut b)?;
        let assignment = get_bytes(&mut b)?;
        members.push(MemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// Kafka's choice of `__consumer_offsets` partition: `abs(groupId.hashCode) % partitions`, with Java's
/// `String.hashCode` over UTF-16 code units and Kafka's `Utils.abs` (mask the sign bit).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_and_values_round_trip() {
        for k in [
            Key::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
            },
            Key::Group {
                group: "grp".into(),
            },
            Key::ConsumerGroupMetadata { group: "g".into() },
            Key::ConsumerGroupPartitionMetadata { group: "g".into() },
            Key::ConsumerGroupMemberMetadata {
                group: "g".into(),
                member: "m".into(),
            },
            Key::ConsumerGroupTargetAssignmentMetadata { group: "g".into() },
            Key::ConsumerGroupTargetAssignmentMember {
                group: "g".into(),
                member: "m".into(),
            },
            Key::ConsumerGroupCurrentMemberAssignment {
                group: "g".into(),
                member: "m".into(),
            },
        ] {
            assert_eq!(decode_key(encode_key(&k)).unwrap(), k);
        }
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 99,
        };
        assert_eq!(decode_offset_value(encode_offset_value(&v)).unwrap(), v);
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 10,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300000,
                session_timeout_ms: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group_value(encode_group_value(&g)).unwrap(), g);
    }

    #[test]
    fn offset_commit_key_matches_kafkas_layout() {
        let k = encode_key(&Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        });
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
    }

    #[test]
    fn consumer_group_keys_carry_kafkas_record_types() {
        let k = encode_key(&Key::ConsumerGroupCurrentMemberAssignment {
            group: "g".into(),
            member: "m".into(),
        });
        assert_eq!(&k[..], &[0, 8, 0, 1, b'g', 0, 1, b'm']);
        let k = encode_key(&Key::ConsumerGroupMetadata { group: "g".into() });
        assert_eq!(&k[..], &[0, 3, 0, 1, b'g']);
    }

    #[test]
    fn partition_matches_java_string_hash_code() {
        // "my-group".hashCode() == -1906497762 in Java; masked to 240985886, and 240985886 % 50 == 36.
        assert_eq!(partition_for("my-group", 50), 36);
        // Negative hash codes are masked, as Kafka's Utils.abs does: "zzzzzzzz".hashCode() < 0.
        let p = partition_for("zzzzzzzz", 50);
        assert!((0..50).contains(&p));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Bytes::from(data);
            let _ = decode_key(b.clone());
            let _ = decode_offset_value(b.clone());
            let _ = decode_group_value(b);
        }
    }
}
