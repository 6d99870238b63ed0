//! The one walk over a partition's records that the message browser and the search share: whole batches read
//! from the record at `next`, decoded with fjord-log's bounded decoder, and each record a consumer of the chosen
//! [`Isolation`] would see handed to a visitor in offset order, with whether it belongs to an aborted
//! transaction.
//!
//! - read_uncommitted (a Kafka consumer's default, and the browser's): reads go through
//!   `Partition::read_with_aborted`, up to the high watermark (records of a transaction still open are shown),
//!   with the aborted transactions among the batches read, from the index Fetch uses for read_committed; the
//!   records of an aborted transaction are shown, marked as such.
//! - read_committed: reads go through `Partition::fetch` as a read_committed Fetch does, up to the last stable
//!   offset (nothing of a transaction still open, nor anything after its first record), and the records of an
//!   aborted transaction are skipped as Kafka's read_committed consumer skips them (a producer's transactional
//!   records from an aborted transaction's first offset up to its ABORT marker).
//! - Control records (transaction markers) are never shown, whichever the isolation.
//! - Offsets a batch no longer holds (compaction removed its last records) are passed with the batch.
//! - When retention (or DeleteRecords) removes the segment holding `next` between two reads, the walk moves on
//!   to the new log start and remembers the offsets it could not read in `removed`.

use std::collections::HashSet;

use bytes::Bytes;
use fjord_log::AbortedTxn;
use kafka_protocol::records::Record;

/// What one read returns: whole batches from the one holding the offset asked for, and the aborted
/// transactions with records among them.
pub(crate) struct Chunk {
    pub records: Bytes,
    pub aborted: Vec<AbortedTxn>,
}

pub(crate) enum ReadError {
    /// The offset is below the log start now (retention, DeleteRecords): it starts at `log_start`.
    Removed {
        log_start: i64,
    },
    Failed(String),
}

/// Reads `(offset, max bytes, first read of the walk)`.
pub(crate) type Reader<'a> = dyn FnMut(i64, usize, bool) -> Result<Chunk, ReadError> + 'a;

/// Which records a read shows, as a consumer's `isolation.level`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Isolation {
    ReadUncommitted,
    ReadCommitted,
}

impl Isolation {
    /// From the `isolation` query parameter (absent: read_uncommitted).
    pub(crate) fn from_query(q: &crate::api::Query) -> Result<Isolation, crate::api::Fail> {
        match q.str("isolation").unwrap_or("read_uncommitted") {
            "read_uncommitted" => Ok(Isolation::ReadUncommitted),
            "read_committed" => Ok(Isolation::ReadCommitted),
            other => Err(crate::api::bad(format!(
                "`isolation` must be read_uncommitted (every record up to the high watermark, aborted ones marked) or read_committed (up to the last stable offset, without aborted transactions), not `{other}`"
            ))),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }

    /// Where this isolation's reads end: the high watermark, or the last stable offset.
    pub(crate) fn end(self, p: &fjord_broker::partition::Partition) -> i64 {
        match self {
            Isolation::ReadUncommitted => p.offsets().1,
            Isolation::ReadCommitted => p.last_stable_offset(),
        }
    }
}

/// The reader of a hosted partition with `isolation`: `Partition::read_with_aborted` (up to the high watermark)
/// or `Partition::fetch` as a read_committed Fetch (up to the last stable offset), either with the aborted
/// transactions among the batches read. The first read returns at least one batch; later ones too when
/// `whole_batches` (else they stop at `max` bytes).
pub(crate) fn partition_reader(
    p: &fjord_broker::partition::Partition,
    whole_batches: bool,
    isolation: Isolation,
) -> impl FnMut(i64, usize, bool) -> Result<Chunk, ReadError> + '_ {
    move |offset, max, first| {
        let min_one = first || whole_batches;
        let read = match isolation {
            Isolation::ReadUncommitted => p.read_with_aborted(offset, max, min_one),
            Isolation::ReadCommitted => p
                .fetch(offset, max, min_one, true)
                .map(|f| (f.records, f.aborted)),
        };
        chunk(read, offset)
    }
}

fn chunk(
    read: fjord_broker::Result<(Bytes, Vec<AbortedTxn>)>,
    offset: i64,
) -> Result<Chunk, ReadError> {
    match read {
        Ok((records, aborted)) => Ok(Chunk { records, aborted }),
        Err(fjord_broker::Error::Log(fjord_log::Error::OffsetOutOfRange { log_start, .. }))
            if log_start > offset =>
        {
            Err(ReadError::Removed { log_start })
        }
        Err(e) => Err(ReadError::Failed(e.to_string())),
    }
}

/// What the visitor wants after a record.
pub(crate) enum Flow {
    /// On to the next record.
    Next,
    /// Stop; the record is not passed (`next` stays on it).
    Before,
    /// Stop past the record.
    After,
}

/// How one step ended.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// A chunk was read and visited; there may be more.
    Read,
    /// Nothing more to read: `to` reached, or the log ends (or the last stable offset) before it.
    Reached,
    /// The visitor stopped.
    Stopped,
    /// A read failed or a batch cannot be decoded.
    Failed(String),
}

pub(crate) struct Walk {
    /// The first offset not passed yet.
    pub next: i64,
    /// Where the walk ends (exclusive).
    pub to: i64,
    pub bytes_read: u64,
    /// Offsets retention removed before the walk read them, `[from, to)`.
    pub removed: Option<(i64, i64)>,
    /// Producers inside an aborted transaction at `next`.
    aborting: HashSet<i64>,
    /// Records of aborted transactions are visited (marked) rather than skipped: read_uncommitted.
    show_aborted: bool,
}

/// Whether a control record is an ABORT marker (its key: version, then type 0).
fn is_abort(r: &Record) -> bool {
    r.key
        .as_deref()
        .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0])
}

impl Walk {
    /// A walk of `[from, to)` as `isolation` shows it (`to`: at most [`Isolation::end`]).
    pub(crate) fn new(from: i64, to: i64, isolation: Isolation) -> Walk {
        Walk {
            next: from,
            to,
            bytes_read: 0,
            removed: None,
            aborting: HashSet::new(),
            show_aborted: isolation == Isolation::ReadUncommitted,
        }
    }

    /// Reads at most `max` bytes (whole batches) at `next` and visits their records in `[next, to)`, each with
    /// whether it belongs to an aborted transaction (never, with read_committed, which skips them).
    pub(crate) fn step(
        &mut self,
        read: &mut Reader<'_>,
        max: usize,
        visit: &mut dyn FnMut(&Record, bool) -> Flow,
    ) -> Step {
        if self.next >= self.to {
            return Step::Reached;
        }
        let chunk = match read(self.next, max, self.bytes_read == 0) {
            Ok(c) => c,
            Err(ReadError::Removed { log_start }) => {
                let to = log_start.min(self.to);
                let from = self.removed.map_or(self.next, |r| r.0);
                self.removed = Some((from, to));
                self.next = to;
                self.aborting.clear();
                return Step::Read;
            }
            Err(ReadError::Failed(e)) => {
                return Step::Failed(format!("cannot read at offset {}: {e}", self.next))
            }
        };
        if chunk.records.is_empty() {
            return Step::Reached;
        }
        self.bytes_read += chunk.records.len() as u64;
        let before = self.next;
        let mut bytes = chunk.records;
        // Popped in first-offset order as the records reach them.
        let mut pending = chunk.aborted;
        pending.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
        while !bytes.is_empty() {
            let end_of_batch = crate::api::batch_end(&bytes);
            let set = match fjord_log::decode_records_bounded(&mut bytes) {
                Ok(s) => s,
                Err(e) => {
                    return Step::Failed(format!(
                        "a batch at offset {} cannot be decoded: {e}",
                        self.next
                    ))
                }
            };
            for r in &set.records {
                if r.offset < self.next || r.offset >= self.to {
                    continue;
                }
                while pending.last().is_some_and(|a| a.first_offset <= r.offset) {
                    if let Some(a) = pending.pop() {
                        self.aborting.insert(a.producer_id);
                    }
                }
                if r.control {
                    if is_abort(r) {
                        self.aborting.remove(&r.producer_id);
                    }
                    self.next = r.offset + 1;
                    continue;
                }
                let aborted = r.transactional && self.aborting.contains(&r.producer_id);
                if aborted && !self.show_aborted {
                    self.next = r.offset + 1;
                    continue;
                }
                match visit(r, aborted) {
                    Flow::Next => self.next = r.offset + 1,
                    Flow::Before => return Step::Stopped,
                    Flow::After => {
                        self.next = r.offset + 1;
                        return Step::Stopped;
                    }
                }
            }
            // The batch was passed whole: offsets its records no longer hold (compaction) are passed too, or the
            // next read would return the same batch.
            if let Some(e) = end_of_batch {
                self.next = self.next.max(e.min(self.to));
            }
        }
        if self.next == before {
            return Step::Reached;
        }
        Step::Read
    }
}
