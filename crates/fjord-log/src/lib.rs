//! `fjord-log` owns one partition's data on disk: segments of Kafka magic-v2 record batches in Kafka's own file
//! layout (`<base offset>.log`, sparse `.index` and `.timeindex`), offset assignment, reads by offset and by
//! timestamp, crash recovery, retention and compaction, and the bookkeeping that lets the broker fsync outside its
//! lock (group commit). It must not know the network, Kafka API versions, replication or the broker's locking:
//! it sees raw batch bytes in and out, a clock passed in as `now_ms`, and a directory.
//!
//! **Architecture Invariant:** batches are stored exactly as received except for the base offset, the partition
//! leader epoch, and (under LogAppendTime) maxTimestamp, attributes and CRC. The append path never decodes
//! records; only compaction and timestamp lookups do.
//!
//! **Architecture Invariant:** offsets are dense on append, strictly increasing and never reused; the log end
//! offset only goes back through [`Log::truncate_to`].

mod batch;
mod cleaner;
mod config;
mod control;
mod decompress;
mod epoch_cache;
mod error;
mod index;
mod log;
mod segment;
#[cfg(any(test, feature = "fault-injection"))]
pub mod sim;
pub mod storage;
mod timestamp;
mod txn_index;

#[cfg(test)]
mod tests;

pub use batch::{batch_headers, validate_batches, BatchInfo};
pub use cleaner::{CompactionPlan, CompactionResult};
pub use config::{LogConfig, TimestampType};
pub use control::{control_batch, control_marker, control_type, ControlType};
pub use epoch_cache::{UNDEFINED_EPOCH, UNDEFINED_OFFSET};
pub use error::{Error, Result};
pub use log::{AppendInfo, FlushHandle, Log, ReadInfo};
pub use txn_index::AbortedTxn;

/// Decodes the record batch at the start of `bytes` (advancing past it), decompressing at most 128 MiB: for
/// readers that must look inside batches they did not write, such as the coordinators replaying their internal
/// topics, so that a hostile or damaged batch is an error, never an unbounded allocation.
pub fn decode_records_bounded(
    bytes: &mut bytes::Bytes,
) -> std::result::Result<kafka_protocol::records::RecordSet, String> {
    decompress::decode_bounded(bytes, decompress::MAX_DECOMPRESSED).map_err(|e| e.to_string())
}
