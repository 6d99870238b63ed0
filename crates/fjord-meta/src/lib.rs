//! Cluster metadata for Fjord: brokers, topics, partitions (leaders, ISR), topic and broker configs,
//! kept as the state machine of an openraft log so that one code path serves a single broker (a
//! one-voter quorum) and a controller quorum of several voters (KRaft's role). This crate owns the
//! raft log, vote and snapshots on disk, the deterministic apply of [`Command`]s to
//! [`ClusterState`], publishing each applied state to the broker through a watch channel, and the
//! controller listener over which voters replicate and followers forward requests to the leader,
//! and broker liveness as KRaft does it: brokers heartbeat to the raft leader, which fences those
//! that go silent ([`Command::FenceBroker`], moving their partition leaderships) and unfences them
//! when they return ([`Meta::start_liveness`]).
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
mod liveness;
mod log_store;
mod meta;
mod network;
pub mod ports;
mod quorum;
mod raft;
mod state_machine;
mod types;

pub use meta::{Meta, QuorumConfig, DEFAULT_REQUEST_TIMEOUT, QUORUM_OPEN_WAIT};
pub use quorum::{ControllerMetrics, QuorumStatus, ReplicaProgress};
pub use types::{
    BrokerInfo, ClusterState, Command, CommandResult, PartitionMeta, Reassignment, TopicMeta,
    NO_LEADER,
};

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
    /// The leader refused the request and changed nothing (e.g. removing the last voter, or a node
    /// that does not vote). A voter change while another is in flight is retried instead.
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

/// Parses KRaft's `controller.quorum.voters` (`1@host:port,2@host:port,...`) into the voter map
/// [`Meta::open_quorum`] takes, resolving host names. `Err` says what is wrong, naming the property.
pub fn parse_quorum_voters(
    value: &str,
) -> std::result::Result<std::collections::BTreeMap<i32, std::net::SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let mut voters = std::collections::BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = |why: &str| {
            format!(
                "Invalid controller.quorum.voters entry {entry:?}: {why} (expected id@host:port)"
            )
        };
        let (id, host_port) = entry.split_once('@').ok_or_else(|| invalid("no '@'"))?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| invalid("the id is not a non-negative integer"))?;
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| invalid(&e.to_string()))?
            .next()
            .ok_or_else(|| invalid("the host resolves to no address"))?;
        if voters.insert(id, addr).is_some() {
            return Err(invalid(&format!("voter {id} is listed twice")));
        }
    }
    if voters.is_empty() {
        return Err("controller.quorum.voters is empty".into());
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_quorum_voters_reads_kraft_format() {
        let voters =
            parse_quorum_voters("1@127.0.0.1:9093, 2@127.0.0.1:9094,3@[::1]:9095").unwrap();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[&1], "127.0.0.1:9093".parse().unwrap());
        assert_eq!(voters[&3], "[::1]:9095".parse().unwrap());
        assert_eq!(parse_quorum_voters("7@localhost:1").unwrap()[&7].port(), 1);
        for bad in [
            "",
            "1",
            "x@127.0.0.1:1",
            "-1@127.0.0.1:1",
            "1@127.0.0.1",
            "1@127.0.0.1:99999",
            "1@127.0.0.1:1,1@127.0.0.1:2",
        ] {
            assert!(
                parse_quorum_voters(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

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
