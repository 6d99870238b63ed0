//! Fjord's coordinators as state machines: the classic consumer-group protocol (`group`), KIP-848 consumer
//! groups (`consumer_group`), the records kept in the compacted `__consumer_offsets` topic (`records`), the bits
//! of the consumer protocol the coordinator reads (`consumer_protocol`), and the transaction coordinator's
//! per-transactional-id state with its `__transaction_state` records (`txn`).
//!
//! It must not know sockets, the broker's partitions or its locks: the broker feeds it decoded requests and the
//! current time, persists the records it hands out, and replays `__consumer_offsets` into it on start-up.
//!
//! **Architecture Invariant:** an offset commit becomes visible to OffsetFetch only after the broker made its
//! record durable (`check_commit` → persist → `apply_commit`), so a crash never shows a commit that is lost.

pub mod consumer_group;
pub mod consumer_protocol;
pub mod consumer_records;
pub mod group;
pub mod records;
pub mod txn;

pub use group::{
    CommittedOffset, GroupConfig, GroupCoordinator, GroupDescription, GroupState, JoinRequest,
    JoinResult, MemberDescription, Record, Reply, SyncRequest, SyncResult,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("corrupt __consumer_offsets record: {0}")]
    Corrupt(String),
}
