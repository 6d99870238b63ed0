//! Idempotent producers (KIP-98): producer ids reserved through the metadata quorum, and per-partition
//! sequence tracking so that a retried batch is appended once.
//!
//! Each partition remembers, per producer id, its epoch and its last five batches (first and last sequence
//! and offsets), as Kafka does. A batch whose sequences match one of them is a retry: it is answered with the
//! original offsets and not appended again. The state is rebuilt from the log's batch headers when the
//! partition opens, so a retry after a broker crash is still recognised.
//!
//! Transactions (KIP-98) add, per partition, the first offset of each producer's open transaction: the
//! earliest of them is the first unstable offset, which bounds the last stable offset that read_committed
//! consumers may read up to. When an abort marker ends a transaction, [`ProducerStates::record_marker`] returns
//! the aborted range; the partition stores it in the log's per-segment `.txnindex`.
//!
//! The state is snapshotted ([`ProducerStates::encode`]) into `<offset>.snapshot` files so that opening a
//! partition scans only the batches after the newest snapshot.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fjord_log::{AbortedTxn, BatchInfo};
use fjord_meta::{Command, CommandResult, Meta};

/// Batches per producer remembered for de-duplication (Kafka's max.in.flight limit for idempotence).
const RECENT: usize = 5;

/// Version of the snapshot layout written by [`ProducerStates::encode`].
const SNAPSHOT_VERSION: i16 = 1;

/// A cursor over snapshot bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take()?))
    }
}

/// Ids reserved per round trip to the metadata quorum.
const BLOCK: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrder { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current {current}")]
    InvalidEpoch { current: i16, got: i16 },
    #[error("producer {0} has an open transaction and sent a non-transactional batch")]
    NotInTransaction(i64),
    #[error("{0}")]
    InvalidRecord(&'static str),
    #[error("producer {0} has no open transaction on this partition and its transaction coordinator did not confirm the partition was added to one (or the transaction ended meanwhile); add the partition to the transaction first")]
    NotVerified(i64),
    #[error("a transaction marker from coordinator epoch {got} is older than the partition's last coordinator epoch {current} for this producer: the sender is no longer its transaction coordinator")]
    CoordinatorFenced { current: i32, got: i32 },
}

impl ProducerError {
    pub fn code(&self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            ProducerError::OutOfOrder { .. } => E::OutOfOrderSequenceNumber.code(),
            ProducerError::InvalidEpoch { .. } => E::InvalidProducerEpoch.code(),
            ProducerError::NotInTransaction(_) => E::InvalidTxnState.code(),
            ProducerError::InvalidRecord(_) => E::InvalidRecord.code(),
            ProducerError::CoordinatorFenced { .. } => E::TransactionCoordinatorFenced.code(),
            ProducerError::NotVerified(_) => E::InvalidTxnState.code(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recent {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Default)]
struct Entry {
    epoch: i16,
    recent: VecDeque<Recent>,
    /// First offset of the producer's open transaction in this partition.
    txn_first_offset: Option<i64>,
    /// Max timestamp of its last batch (DescribeProducers).
    last_timestamp: i64,
    /// Epoch of the coordinator that wrote its last marker.
    coordinator_epoch: i32,
}

/// One producer's state as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    pub current_txn_start_offset: i64,
}

/// What to do with a batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// A retry of a batch already in the log at these offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

/// The batch's last sequence: base sequence plus lastOffsetDelta, as Kafka's `RecordBatch.lastSequence`. Not the
/// record count: compaction removes records from a stored batch but keeps its offset range, and the producer's
/// next sequence follows the range.
fn last_seq(b: &BatchInfo) -> i32 {
    let delta = b.last_offset - b.base_offset;
    // Sequences wrap to 0 after i32::MAX.
    ((b.base_sequence as i64 + delta) % (i32::MAX as i64 + 1)) as i32
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

/// Sequence and transaction state of one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Entry>,
    /// Open transactions: first offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
    /// KIP-890 verification guards: producer id -> the guard of the verification begun for its next transaction
    /// here. A marker for the producer removes it, so a batch verified before a transaction ended cannot open
    /// a new one that no marker would close. In memory only: after a restart a batch is verified again.
    verifying: HashMap<i64, u64>,
    next_guard: u64,
}

impl ProducerStates {
    /// Decides whether a batch a client sent (offsets not yet assigned) is new, a retry, or refused.
    pub fn check(&self, b: &BatchInfo) -> Result<Verdict, ProducerError> {
        if b.is_control {
            return Err(ProducerError::InvalidRecord(
                "clients cannot write control batches",
            ));
        }
        if b.producer_id < 0 {
            return if b.is_transactional {
                Err(ProducerError::InvalidRecord(
                    "a transactional batch needs a producer id",
                ))
            } else {
                Ok(Verdict::Append)
            };
        }
        let Some(e) = self.producers.get(&b.producer_id) else {
            // No state here (a new producer, an expired one, or one whose batches retention or DeleteRecords
            // removed): any sequence starts it, as Kafka's `ProducerAppendInfo.checkSequence` (which no longer
            // answers UNKNOWN_PRODUCER_ID, KIP-360).
            return Ok(Verdict::Append);
        };
        if b.producer_epoch < e.epoch {
            return Err(ProducerError::InvalidEpoch {
                current: e.epoch,
                got: b.producer_epoch,
            });
        }
        // Whatever its epoch, as Kafka: a plain batch cannot slip in while the producer's transaction is open (it
        // would also raise the producer's epoch here above the one its transaction's marker will carry).
        if !b.is_transactional && e.txn_first_offset.is_some() {
            return Err(ProducerError::NotInTransaction(b.producer_id));
        }
        if b.producer_epoch > e.epoch {
            return if b.base_sequence == 0 {
                Ok(Verdict::Append)
            } else {
                Err(ProducerError::OutOfOrder {
                    expected: 0,
                    got: b.base_sequence,
                })
            };
        }
        let last = last_seq(b);
        if let Some(r) = e
            .recent
            .iter()
            .find(|r| r.first_seq == b.base_sequence && r.last_seq == last)
        {
            return Ok(Verdict::Duplicate {
                base_offset: r.base_offset,
                last_offset: r.last_offset,
            });
        }
        let expected = e.recent.back().map_or(0, |r| next_seq(r.last_seq));
        if b.base_sequence != expected {
            return Err(ProducerError::OutOfOrder {
                expected,
                got: b.base_sequence,
            });
        }
        Ok(Verdict::Append)
    }

    /// Records an appended data batch (offsets assigned). Control batches go to [`Self::record_marker`].
    pub fn record(&mut self, b: &BatchInfo) {
        if b.producer_id < 0 || b.is_control {
            return;
        }
        let e = self.producers.entry(b.producer_id).or_default();
        if b.producer_epoch != e.epoch {
            e.epoch = b.producer_epoch;
            e.recent.clear();
        }
        e.last_timestamp = b.max_timestamp;
        if b.is_transactional && e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(b.base_offset);
            self.ongoing.insert(b.base_offset, b.producer_id);
        }
        if b.base_sequence < 0 {
            // Written by a coordinator (transactional offset commits): no sequence to remember.
            return;
        }
        e.recent.push_back(Recent {
            first_seq: b.base_sequence,
            last_seq: last_seq(b),
            base_offset: b.base_offset,
            last_offset: b.last_offset,
        });
        while e.recent.len() > RECENT {
            e.recent.pop_front();
        }
    }

    /// Records a commit or abort marker appended at `offset`: the producer's open transaction (if any) ends.
    /// A marker with a newer epoch (the coordinator fenced the producer) restarts its sequences. Returns the
    /// aborted range for an abort that ended a transaction with records here.
    /// Kafka's checks before a leader writes a transaction marker: its producer epoch may not be older than
    /// the producer's last epoch here, nor its coordinator epoch older than the last marker's. A late or forged
    /// marker from a zombie producer session or a deposed coordinator would otherwise end (commit or abort) a
    /// transaction of the current session. Followers copy the leader's log and do not check.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ProducerError> {
        let Some(e) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < e.epoch {
            return Err(ProducerError::InvalidEpoch {
                current: e.epoch,
                got: epoch,
            });
        }
        if coordinator_epoch < e.coordinator_epoch {
            return Err(ProducerError::CoordinatorFenced {
                current: e.coordinator_epoch,
                got: coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Whether `producer_id` at `epoch` has a transaction open here (its first batch was verified then).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == epoch && e.txn_first_offset.is_some())
    }

    /// Begins the verification of the producer's next transaction here; the guard must still hold when its
    /// first batch is appended.
    pub fn start_verification(&mut self, producer_id: i64) -> u64 {
        self.next_guard += 1;
        self.verifying.insert(producer_id, self.next_guard);
        self.next_guard
    }

    /// Drops a verification once its append was tried or its check failed (if it is still the current one), so
    /// nothing stays behind per producer: after a successful append the open transaction admits its batches.
    pub fn finish_verification(&mut self, producer_id: i64, guard: u64) {
        if self.verifying.get(&producer_id) == Some(&guard) {
            self.verifying.remove(&producer_id);
        }
    }

    /// Whether a transactional batch of `producer_id` may be appended: its transaction is open here, or the
    /// verification that `guard` began is still current (no marker since).
    pub fn check_verified(
        &self,
        producer_id: i64,
        epoch: i16,
        guard: Option<u64>,
    ) -> Result<(), ProducerError> {
        if self.in_transaction(producer_id, epoch)
            || guard.is_some_and(|g| self.verifying.get(&producer_id) == Some(&g))
        {
            Ok(())
        } else {
            Err(ProducerError::NotVerified(producer_id))
        }
    }

    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        offset: i64,
        coordinator_epoch: i32,
    ) -> Option<AbortedTxn> {
        self.verifying.remove(&producer_id);
        let e = self.producers.entry(producer_id).or_default();
        if epoch > e.epoch {
            e.epoch = epoch;
            e.recent.clear();
        }
        e.coordinator_epoch = coordinator_epoch;
        let first = e.txn_first_offset.take()?;
        self.ongoing.remove(&first);
        (!commit).then(|| AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(offset + 1),
        })
    }

    /// Forgets producers without an open transaction whose last batch is older than `expiration_ms`
    /// (`producer.id.expiration.ms`, as Kafka). A forgotten producer that comes back starts afresh at whatever
    /// sequence it sends, as in Kafka. Returns how many were forgotten.
    pub fn expire(&mut self, now: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || e.last_timestamp.saturating_add(expiration_ms) > now
        });
        before - self.producers.len()
    }

    /// The first offset of the earliest open transaction: read_committed consumers stop before it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The state as bytes for a snapshot file: version, CRC-32C of the rest, then each producer.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(4 + self.producers.len() * 64);
        body.extend_from_slice(&(self.producers.len() as i32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let e = &self.producers[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.push(e.recent.len() as u8);
            for r in &e.recent {
                body.extend_from_slice(&r.first_seq.to_be_bytes());
                body.extend_from_slice(&r.last_seq.to_be_bytes());
                body.extend_from_slice(&r.base_offset.to_be_bytes());
                body.extend_from_slice(&r.last_offset.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 6);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a snapshot written by [`ProducerStates::encode`]; `None` if it is damaged or of another version.
    pub fn decode(data: &[u8]) -> Option<ProducerStates> {
        let version = i16::from_be_bytes(data.get(..2)?.try_into().ok()?);
        let crc = u32::from_be_bytes(data.get(2..6)?.try_into().ok()?);
        let body = data.get(6..)?;
        if version != SNAPSHOT_VERSION || crc32c::crc32c(body) != crc {
            return None;
        }
        let mut r = Reader(body);
        let mut states = ProducerStates::default();
        for _ in 0..r.i32()? {
            let id = r.i64()?;
            let mut e = Entry {
                epoch: r.i16()?,
                ..Entry::default()
            };
            let first = r.i64()?;
            e.txn_first_offset = (first >= 0).then_some(first);
            e.last_timestamp = r.i64()?;
            e.coordinator_epoch = r.i32()?;
            for _ in 0..r.u8()? {
                e.recent.push_back(Recent {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            if let Some(f) = e.txn_first_offset {
                states.ongoing.insert(f, id);
            }
            states.producers.insert(id, e);
        }
        r.0.is_empty().then_some(states)
    }

    /// Every producer with state here, for DescribeProducers.
    pub fn describe(&self) -> Vec<ProducerView> {
        let mut v: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerView {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.recent.back().map_or(-1, |r| r.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        v.sort_by_key(|p| p.producer_id);
        v
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// Hands out producer ids from blocks reserved through the metadata quorum.
#[derive(Default)]
pub struct ProducerIds {
    /// (next id to hand out, end of the reserved block)
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub async fn allocate(&self, meta: &Meta) -> crate::Result<i64> {
        let mut b = self.block.lock().await;
        if b.0 >= b.1 {
            match meta
                .propose(Command::AllocateProducerIds { count: BLOCK })
                .await?
            {
                CommandResult::ProducerIds { first } => *b = (first, first + BLOCK),
                other => {
                    return Err(crate::Error::Internal(format!(
                        "unexpected result {other:?}"
                    )))
                }
            }
        }
        let id = b.0;
        b.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, n: i32, base_offset: i64) -> BatchInfo {
        BatchInfo {
            base_offset,
            last_offset: base_offset + n as i64 - 1,
            record_count: n,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            is_transactional: false,
            is_control: false,
            compression: 0,
            size: 100,
        }
    }

    #[test]
    fn retries_of_the_last_five_batches_are_duplicates_and_gaps_are_refused() {
        let mut s = ProducerStates::default();
        let mut offset = 0;
        for i in 0..7 {
            let b = batch(9, 0, i * 10, 10, offset);
            assert_eq!(s.check(&b), Ok(Verdict::Append), "batch {i}");
            s.record(&b);
            offset += 10;
        }
        // Batches 2..=6 are remembered; 0 and 1 fell out of the window.
        assert_eq!(
            s.check(&batch(9, 0, 60, 10, 0)),
            Ok(Verdict::Duplicate {
                base_offset: 60,
                last_offset: 69
            })
        );
        assert_eq!(
            s.check(&batch(9, 0, 20, 10, 0)),
            Ok(Verdict::Duplicate {
                base_offset: 20,
                last_offset: 29
            })
        );
        assert_eq!(
            s.check(&batch(9, 0, 0, 10, 0)),
            Err(ProducerError::OutOfOrder {
                expected: 70,
                got: 0
            })
        );
        assert_eq!(
            s.check(&batch(9, 0, 80, 10, 0)),
            Err(ProducerError::OutOfOrder {
                expected: 70,
                got: 80
            })
        );
        assert_eq!(s.check(&batch(9, 0, 70, 10, 0)), Ok(Verdict::Append));
    }

    #[test]
    fn epochs_fence_old_producers_and_restart_sequences() {
        let mut s = ProducerStates::default();
        s.record(&batch(1, 3, 0, 5, 0));
        assert_eq!(
            s.check(&batch(1, 2, 5, 5, 0)),
            Err(ProducerError::InvalidEpoch { current: 3, got: 2 })
        );
        assert_eq!(s.check(&batch(1, 4, 0, 5, 0)), Ok(Verdict::Append));
        assert_eq!(
            s.check(&batch(1, 4, 7, 5, 0)),
            Err(ProducerError::OutOfOrder {
                expected: 0,
                got: 7
            })
        );
        assert_eq!(s.check(&batch(2, 0, 0, 1, 0)), Ok(Verdict::Append));
    }

    #[test]
    fn a_producer_without_state_may_start_at_any_sequence() {
        // As Kafka: state lost to expiry, retention or DeleteRecords must not wedge the producer.
        let mut s = ProducerStates::default();
        let b = batch(2, 0, 3, 1, 0);
        assert_eq!(s.check(&b), Ok(Verdict::Append));
        s.record(&b);
        // From then on its sequence is checked as usual.
        assert_eq!(
            s.check(&batch(2, 0, 7, 1, 1)),
            Err(ProducerError::OutOfOrder {
                expected: 4,
                got: 7
            })
        );
        assert_eq!(s.check(&batch(2, 0, 4, 1, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn the_last_sequence_follows_the_offset_range_not_the_record_count() {
        // A batch of sequences 0..=4 at offsets 0..=4 from which compaction kept two records: read back at
        // start-up, it still ends at sequence 4, so the producer's next batch (sequence 5) is in order.
        let mut s = ProducerStates::default();
        let mut compacted = batch(1, 0, 0, 5, 0);
        compacted.record_count = 2;
        s.record(&compacted);
        assert_eq!(s.check(&batch(1, 0, 5, 1, 5)), Ok(Verdict::Append));
        assert_eq!(
            s.check(&batch(1, 0, 0, 5, 0)),
            Ok(Verdict::Duplicate {
                base_offset: 0,
                last_offset: 4
            }),
            "and a retry of the original batch is still recognised"
        );
    }

    #[test]
    fn idle_producers_expire_but_not_while_their_transaction_is_open() {
        let mut s = ProducerStates::default();
        let mut b = batch(1, 0, 0, 1, 0);
        b.max_timestamp = 1_000;
        s.record(&b);
        let mut t = batch(2, 0, 0, 1, 1);
        t.max_timestamp = 1_000;
        t.is_transactional = true;
        s.record(&t);
        assert_eq!(s.expire(1_500, 1_000), 0);
        assert_eq!(
            s.expire(2_000, 1_000),
            1,
            "producer 1 idle for the whole expiration"
        );
        assert_eq!(
            s.check(&batch(1, 0, 1, 1, 0)),
            Ok(Verdict::Append),
            "an expired producer resumes at its next sequence"
        );
        assert_eq!(s.len(), 1, "producer 2 has an open transaction");
        assert_eq!(s.first_unstable_offset(), Some(1));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = ProducerStates::default();
        s.record(&batch(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&batch(1, 0, 0, 3, 2)), Ok(Verdict::Append));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_snapshots_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            // With a valid version and CRC, so the body parser itself is exercised.
            let mut data = SNAPSHOT_VERSION.to_be_bytes().to_vec();
            data.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            data.extend_from_slice(&body);
            let _ = ProducerStates::decode(&data);
        }
    }

    #[test]
    fn finished_verifications_leave_nothing_behind_and_never_drop_a_newer_one() {
        let mut p = ProducerStates::default();
        let first = p.start_verification(7);
        let second = p.start_verification(7);
        p.finish_verification(7, first);
        assert!(
            p.check_verified(7, 0, Some(second)).is_ok(),
            "the newer guard holds"
        );
        p.finish_verification(7, second);
        assert!(p.verifying.is_empty());
        for id in 0..100 {
            let g = p.start_verification(id);
            p.finish_verification(id, g);
        }
        assert!(
            p.verifying.is_empty(),
            "no entry per producer once its appends were tried"
        );
    }
}
