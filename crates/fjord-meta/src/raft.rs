//! The openraft type configuration, runtime configs, and the network of a one-voter cluster
//! (a quorum uses [`crate::network::TcpNetwork`]).

use std::io::{self, Cursor};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, SnapshotPolicy};

use crate::types::{Command, CommandResult};

openraft::declare_raft_types!(
    /// Raft node ids are Kafka broker ids (non-negative `i32`) widened to `u64`; a node's address
    /// rides in [`BasicNode`]: its controller listener in a quorum
    /// (`Meta::open_quorum`), its Kafka listener in a one-voter store (`Meta::open`, never dialed).
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub(crate) type NodeId = u64;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub(crate) type Raft = openraft::Raft<TypeConfig>;

/// A snapshot is taken after this many applied entries, and then the log before it is purged
/// except for a short tail. This bounds both the log file and the replay time on open.
pub(crate) const SNAPSHOT_EVERY_ENTRIES: u64 = 1000;
/// Entries kept in the log behind a snapshot, so a briefly lagging follower can catch up from the
/// log rather than needing the whole snapshot.
pub(crate) const LOG_KEPT_BEHIND_SNAPSHOT: u64 = 100;

/// Entries per AppendEntries. Each is at most [`crate::forward::MAX_COMMAND_BYTES`] of JSON, so
/// a frame stays at about half of [`crate::network::MAX_FRAME_BYTES`] at worst; metadata commands
/// are small and rare, so the small batch costs nothing in practice.
pub(crate) const MAX_PAYLOAD_ENTRIES: u64 = 8;

/// Timeouts sized for a local quorum: a single voter elects itself within a fraction of a second
/// after a restart, which is what broker start-up waits for.
pub(crate) fn config() -> Config {
    Config {
        cluster_name: "fjord-meta".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: LOG_KEPT_BEHIND_SNAPSHOT,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    }
}

/// Snapshots are sent to followers in chunks of this size; as JSON (an array of numbers) a chunk
/// stays well below [`crate::network::MAX_FRAME_BYTES`].
pub(crate) const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// Timeouts for a controller quorum over the network: heartbeats every 150 ms and elections after
/// 0.75 to 1.5 s of silence, so a lost leader is replaced within about two seconds while a loaded
/// machine (several voters sharing two cores in tests) does not trigger spurious elections.
pub(crate) fn quorum_config() -> Config {
    Config {
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        install_snapshot_timeout: 5000,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..config()
    }
}

/// The network of a one-voter cluster: every peer is unreachable. A one-voter cluster
/// never sends an RPC. ([`crate::Meta::open`] uses it; [`crate::Meta::open_quorum`] uses the TCP
/// network.)
pub(crate) struct NoNetwork;

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> Self::Network {
        NoNetwork
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(
        "fjord-meta has no raft network yet",
    )))
}

impl RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}
