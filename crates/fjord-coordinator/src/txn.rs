//! The transaction coordinator's state (KIP-98): one [`TxnMetadata`] per transactional id, its transitions,
//! and the records it keeps in the compacted `__transaction_state` topic, in Kafka's own format
//! (TransactionLogKey v0 / TransactionLogValue v0), so the topic reads the same to Kafka tooling.
//!
//! The broker drives it: every transition is validated here ([`TxnMetadata::check_producer`],
//! [`TxnMetadata::begin_end`] ...), made durable in `__transaction_state`, and only then acted on (markers
//! written, response sent). A transition that is durable but whose markers were not all written
//! (PrepareCommit / PrepareAbort after a crash) is completed when the coordinator loads.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::records::{get_i16, get_i32, get_i64, get_str, need, put_str};
use crate::{Error, Result};

/// Kafka's TransactionState, with its byte in TransactionLogValue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name Kafka's admin tools show (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        (0..8)
            .filter_map(TxnState::from_id)
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// Why a transactional request is refused; the broker maps these to Kafka error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("the producer has been fenced by a newer instance with the same transactional id")]
    ProducerFenced,
    #[error("the request is not valid in the transaction's current state")]
    InvalidTxnState,
    #[error("another operation on this transaction is in progress")]
    ConcurrentTransactions,
    #[error("the transaction timeout is larger than transaction.max.timeout.ms or not positive")]
    InvalidTransactionTimeout,
}

impl TxnError {
    pub fn code(self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            TxnError::InvalidProducerIdMapping => E::InvalidProducerIdMapping.code(),
            TxnError::ProducerFenced => E::ProducerFenced.code(),
            TxnError::InvalidTxnState => E::InvalidTxnState.code(),
            TxnError::ConcurrentTransactions => E::ConcurrentTransactions.code(),
            TxnError::InvalidTransactionTimeout => E::InvalidTransactionTimeout.code(),
        }
    }
}

/// One transactional id's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (-1 if none): a retried InitProducerId that already got its bump
    /// presents it and is answered again instead of being fenced (KIP-360).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions written in the current transaction, sorted.
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// What an EndTxn asks for, given the current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndAction {
    /// Write PrepareCommit/PrepareAbort, the markers, then CompleteCommit/CompleteAbort.
    Complete { commit: bool },
    /// A retry of an EndTxn that already completed: answer success.
    AlreadyDone,
}

impl TxnMetadata {
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        Self {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now,
        }
    }

    /// Checks that a request comes from the current producer instance.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// May partitions be added now? Returns whether the request adds anything new.
    pub fn check_add(&self, partitions: &[(String, i32)]) -> Result<bool, TxnError> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Dead => Err(TxnError::InvalidTxnState),
            TxnState::Ongoing => Ok(partitions.iter().any(|p| !self.partitions.contains(p))),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => Ok(true),
        }
    }

    /// The state after adding `partitions` (the caller persists it, then installs it).
    pub fn with_partitions(&self, partitions: &[(String, i32)], now: i64) -> TxnMetadata {
        let mut next = self.clone();
        if self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now;
        next
    }

    /// Decides what an EndTxn with `commit` does in the current state.
    pub fn begin_end(&self, commit: bool) -> Result<EndAction, TxnError> {
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(EndAction::Complete { commit }),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndAction::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            // Kafka lets a producer abort an empty transaction (after an error before anything was added).
            (TxnState::Empty, false) => Ok(EndAction::AlreadyDone),
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// The Prepare state of ending the transaction.
    pub fn prepared(&self, commit: bool, now: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        next.last_update_ms = now;
        next
    }

    /// The Complete state after every marker is written.
    pub fn completed(&self, now: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now;
        next
    }

    /// Bumps the epoch (InitProducerId, fencing a timed-out or replaced producer). `None` when the epoch is
    /// exhausted: the caller must give the id a fresh producer id with [`TxnMetadata::with_new_producer_id`].
    pub fn bumped(&self, now: i64) -> Option<TxnMetadata> {
        if self.producer_epoch >= i16::MAX - 1 {
            return None;
        }
        let mut next = self.clone();
        next.last_producer_epoch = self.producer_epoch;
        next.producer_epoch = self.producer_epoch + 1;
        next.last_update_ms = now;
        Some(next)
    }

    pub fn with_new_producer_id(&self, producer_id: i64, now: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.producer_id = producer_id;
        next.producer_epoch = 0;
        next.last_producer_epoch = -1;
        next.last_update_ms = now;
        next
    }

    /// Has an open transaction outlived its timeout?
    pub fn timed_out(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing && now > self.start_ms + i64::from(self.timeout_ms)
    }
}

/// `__transaction_state` key: TransactionLogKey v0.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(0);
    put_str(&mut b, transactional_id);
    b.freeze()
}

pub fn decode_key(mut b: Bytes) -> Result<String> {
    let version = get_i16(&mut b)?;
    if version != 0 {
        return Err(Error::Corrupt(format!(
            "unknown transaction log key version {version}"
        )));
    }
    get_str(&mut b)
}

/// `__transaction_state` value: TransactionLogValue v0.
pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.id());
    // Partitions grouped by topic.
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some((name, ps)) if *name == t.as_str() => ps.push(*p),
            _ => topics.push((t.as_str(), vec![*p])),
        }
    }
    b.put_i32(topics.len() as i32);
    for (t, ps) in topics {
        put_str(&mut b, t);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

pub fn decode_value(transactional_id: &str, mut b: Bytes) -> Result<TxnMetadata> {
    let version = get_i16(&mut b)?;
    if version != 0 {
        return Err(Error::Corrupt(format!(
            "unsupported transaction log value version {version}"
        )));
    }
    let producer_id = get_i64(&mut b)?;
    let producer_epoch = get_i16(&mut b)?;
    let timeout_ms = get_i32(&mut b)?;
    need(&b, 1)?;
    let state = TxnState::from_id(b.get_i8())
        .ok_or_else(|| Error::Corrupt("unknown transaction state".into()))?;
    let mut partitions = BTreeSet::new();
    let topics = get_i32(&mut b)?;
    for _ in 0..topics.max(0) {
        let t = get_str(&mut b)?;
        let n = get_i32(&mut b)?;
        need(&b, 4 * n.max(0) as usize)?;
        for _ in 0..n.max(0) {
            partitions.insert((t.clone(), b.get_i32()));
        }
    }
    let last_update_ms = get_i64(&mut b)?;
    let start_ms = get_i64(&mut b)?;
    Ok(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        last_producer_epoch: -1,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing() -> TxnMetadata {
        let mut m = TxnMetadata::new("app", 7, 60_000, 0).bumped(0).unwrap();
        m = m.with_partitions(&[("t".into(), 1), ("t".into(), 0), ("u".into(), 3)], 10);
        m
    }

    #[test]
    fn records_round_trip_in_kafkas_layout() {
        let m = ongoing();
        let key = encode_key("app");
        assert_eq!(&key[..], &[0, 0, 0, 3, b'a', b'p', b'p']);
        assert_eq!(decode_key(key).unwrap(), "app");
        let v = encode_value(&m);
        // version, producer id, epoch, timeout, state
        assert_eq!(&v[..2], &[0, 0]);
        assert_eq!(i64::from_be_bytes(v[2..10].try_into().unwrap()), 7);
        assert_eq!(v[16] as i8, TxnState::Ongoing.id());
        let mut back = decode_value("app", v).unwrap();
        back.last_producer_epoch = m.last_producer_epoch;
        assert_eq!(back, m);
        assert!(decode_value("app", Bytes::from_static(&[0, 0, 1])).is_err());
    }

    #[test]
    fn end_txn_transitions_follow_kafka() {
        let m = ongoing();
        assert_eq!(m.begin_end(true), Ok(EndAction::Complete { commit: true }));
        let prepared = m.prepared(true, 20);
        assert_eq!(
            prepared.begin_end(true),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            prepared.check_add(&[("t".into(), 0)]),
            Err(TxnError::ConcurrentTransactions)
        );
        let done = prepared.completed(30);
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(done.begin_end(true), Ok(EndAction::AlreadyDone));
        assert_eq!(done.begin_end(false), Err(TxnError::InvalidTxnState));
        let aborted = m.prepared(false, 20).completed(30);
        assert_eq!(aborted.state, TxnState::CompleteAbort);
        // A new transaction starts from scratch.
        let next = done.with_partitions(&[("u".into(), 0)], 40);
        assert_eq!(next.partitions.len(), 1);
        assert_eq!(next.start_ms, 40);
    }

    #[test]
    fn producers_are_fenced_by_epoch_and_timeouts_are_detected() {
        let m = ongoing();
        assert_eq!(m.check_producer(7, 0), Ok(()));
        assert_eq!(
            m.check_producer(8, 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        let bumped = m.bumped(50).unwrap();
        assert_eq!(bumped.check_producer(7, 0), Err(TxnError::ProducerFenced));
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (1, 0));
        assert!(!m.timed_out(60_010));
        assert!(m.timed_out(60_011));
        let mut old = m.clone();
        old.producer_epoch = i16::MAX - 1;
        assert!(old.bumped(0).is_none());
        assert_eq!(old.with_new_producer_id(9, 0).producer_epoch, 0);
    }
}

#[cfg(test)]
mod fuzz {
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_transaction_log_records_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = super::decode_key(Bytes::from(key));
            let _ = super::decode_value("id", Bytes::from(value));
        }
    }
}
