//! Cluster metadata for Fjord: brokers, topics, partitions (leaders, ISR), topic and broker configs,
//! kept as the state machine of an openraft log so that one code path serves a single broker (a
//! one-voter quorum) and a controller quorum of several voters (KRaft's role). This crate owns the
//! raft log, vote and snapshots on disk, the deterministic apply of [`Command`]s to
//! [`ClusterState`], publishing each applied state to the broker through a watch channel, and the
//! controller listener over which voters replicate and followers forward requests to the leader.
//!
//! It must not know about record storage (partition logs belong to `fjord-log`) nor about the
//! Kafka network protocol: the broker translates Kafka requests into [`Command`]s, validates them,
//! and maps [`CommandResult`] to Kafka error codes. The controller listener speaks only Fjord's own
//! frames between voters, never Kafka's protocol.
//!
//! **Architecture Invariant:** the only way metadata changes is a committed raft entry applied by
//! [`ClusterState`]'s apply; nothing writes the state directly, so every replica and every replay
//! after a restart computes the same state.

mod forward;
mod fsutil;
mod log_store;
mod meta;
mod network;
mod raft;
mod state_machine;
mod types;

pub use meta::{Meta, DEFAULT_REQUEST_TIMEOUT, QUORUM_OPEN_WAIT};
pub use types::{BrokerInfo, ClusterState, Command, CommandResult, PartitionMeta, TopicMeta};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error in metadata store: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft error: {0}")]
    Raft(String),
    #[error("this node is not the metadata leader")]
    NotLeader,
    #[error("metadata store is shut down")]
    Shutdown,
    /// No metadata leader accepted the request within its bound (an election, or fewer than a
    /// majority of voters reachable); nothing was changed. The text names the unreachable voters.
    #[error("no metadata quorum: {0}")]
    NoQuorum(String),
    /// The request reached the leader but its outcome is unknown (e.g. not committed before the
    /// deadline, or the connection to the leader broke); it may still take effect.
    #[error("metadata request outcome unknown: {0}")]
    Indeterminate(String),
    /// The leader refused the request and changed nothing (e.g. a voter change while another is
    /// in progress, removing the last voter).
    #[error("metadata request refused: {0}")]
    Refused(String),
}

/// Kafka's longest legal topic name (`Topic.MAX_NAME_LENGTH`).
const MAX_TOPIC_NAME_LEN: usize = 249;

/// Kafka's topic-name rule (`Topic.validate`): 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
/// `Err(reason)` otherwise, worded like Kafka's `InvalidTopicException` messages.
pub fn validate_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_topic_name_follows_kafka_rules() {
        for ok in [
            "a",
            "orders",
            "my.topic_v2-x",
            "__consumer_offsets",
            "...",
            "a..b",
            &"x".repeat(249),
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/x",
            "ümlaut",
            "tab\t",
            "colon:x",
            &"x".repeat(250),
        ] {
            assert!(
                validate_topic_name(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }
}
