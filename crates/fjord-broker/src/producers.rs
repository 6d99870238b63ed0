//! Idempotent producers (KIP-98): producer ids reserved through the metadata quorum, and per-partition
//! sequence tracking so that a retried batch is appended once.
//!
//! Each partition remembers, per producer id, its epoch and its last five batches (first and last sequence
//! and offsets), as Kafka does. A batch whose sequences match one of them is a retry: it is answered with the
//! original offsets and not appended again. The state is rebuilt from the log's batch headers when the
//! partition opens, so a retry after a broker crash is still recognised.

use std::collections::{HashMap, VecDeque};

use fjord_log::BatchInfo;
use fjord_meta::{Command, CommandResult, Meta};

/// Batches per producer remembered for de-duplication (Kafka's max.in.flight limit for idempotence).
const RECENT: usize = 5;

/// Ids reserved per round trip to the metadata quorum.
const BLOCK: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrder { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current {current}")]
    InvalidEpoch { current: i16, got: i16 },
    #[error("unknown producer id {0}: no state for it and the batch does not start at sequence 0")]
    UnknownProducer(i64),
    #[error("transactional batches are not supported yet")]
    Transactional,
}

impl ProducerError {
    pub fn code(&self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            ProducerError::OutOfOrder { .. } => E::OutOfOrderSequenceNumber.code(),
            ProducerError::InvalidEpoch { .. } => E::InvalidProducerEpoch.code(),
            ProducerError::UnknownProducer(_) => E::UnknownProducerId.code(),
            ProducerError::Transactional => E::InvalidTxnState.code(),
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

fn last_seq(b: &BatchInfo) -> i32 {
    // Sequences wrap to 0 after i32::MAX.
    ((b.base_sequence as i64 + b.record_count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

/// Sequence state of one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Entry>,
}

impl ProducerStates {
    /// Decides whether a batch (offsets not yet assigned) is new, a retry, or refused.
    pub fn check(&self, b: &BatchInfo) -> Result<Verdict, ProducerError> {
        if b.is_transactional {
            return Err(ProducerError::Transactional);
        }
        let Some(e) = self.producers.get(&b.producer_id) else {
            return if b.base_sequence == 0 {
                Ok(Verdict::Append)
            } else {
                Err(ProducerError::UnknownProducer(b.producer_id))
            };
        };
        if b.producer_epoch < e.epoch {
            return Err(ProducerError::InvalidEpoch {
                current: e.epoch,
                got: b.producer_epoch,
            });
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

    /// Records an appended batch (offsets assigned).
    pub fn record(&mut self, b: &BatchInfo) {
        if b.producer_id < 0 || b.is_control {
            return;
        }
        let e = self.producers.entry(b.producer_id).or_default();
        if b.producer_epoch != e.epoch {
            e.epoch = b.producer_epoch;
            e.recent.clear();
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
        assert_eq!(
            s.check(&batch(2, 0, 3, 1, 0)),
            Err(ProducerError::UnknownProducer(2))
        );
        assert_eq!(s.check(&batch(2, 0, 0, 1, 0)), Ok(Verdict::Append));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = ProducerStates::default();
        s.record(&batch(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&batch(1, 0, 0, 3, 2)), Ok(Verdict::Append));
    }
}
