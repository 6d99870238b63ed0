//! [`Meta`], the handle the broker holds: open/bootstrap, read the state, propose commands.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::BasicNode;
use tokio::sync::watch;

use crate::log_store::LogStore;
use crate::raft::{self, NoNetwork, NodeId, Raft};
use crate::state_machine::StateMachine;
use crate::types::{BrokerInfo, ClusterState, Command, CommandResult};
use crate::{Error, Result};

/// How long `open` waits for this node to become the metadata leader. A single voter elects itself
/// within one election timeout; anything much longer means the store is broken.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Clone-able handle to the metadata store (an `Arc` inside).
#[derive(Clone)]
pub struct Meta {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    state_rx: watch::Receiver<Arc<ClusterState>>,
    /// Set by the first `shutdown`; later proposals fail fast with [`Error::Shutdown`] instead of
    /// reaching a stopped raft core.
    shut_down: AtomicBool,
}

fn raft_err(e: impl std::fmt::Display) -> Error {
    Error::Raft(e.to_string())
}

impl Meta {
    /// Opens (or bootstraps) the store in `dir` (e.g. `<log.dirs>/__meta`). When the store is new,
    /// initializes a one-voter cluster with `node_id`, waits (bounded) until this node is leader,
    /// then proposes `RegisterBroker(self_info)` if the registered info differs. Survives kill -9:
    /// committed entries are fsynced before they are acknowledged.
    pub async fn open(dir: &Path, node_id: i32, self_info: BrokerInfo) -> Result<Meta> {
        let raft_id = NodeId::try_from(node_id).map_err(|_| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node id {node_id} < 0"),
            ))
        })?;
        if self_info.id != node_id {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "broker info id {} differs from node id {node_id}",
                    self_info.id
                ),
            )));
        }
        std::fs::create_dir_all(dir)?;
        let log_store = LogStore::open(dir)?;
        let (state_machine, state_rx) = StateMachine::open(dir)?;

        let config = Arc::new(raft::config().validate().map_err(raft_err)?);
        let raft = Raft::new(raft_id, config, NoNetwork, log_store, state_machine)
            .await
            .map_err(raft_err)?;
        let meta = Meta {
            inner: Arc::new(Inner {
                raft,
                state_rx,
                shut_down: AtomicBool::new(false),
            }),
        };

        match meta.bootstrap(raft_id, self_info).await {
            Ok(()) => Ok(meta),
            Err(e) => {
                // Do not leave a raft core running on a directory the caller believes is closed.
                let _ = meta.shutdown().await;
                Err(e)
            }
        }
    }

    async fn bootstrap(&self, raft_id: NodeId, self_info: BrokerInfo) -> Result<()> {
        let raft = &self.inner.raft;
        if !raft.is_initialized().await.map_err(raft_err)? {
            let node = BasicNode {
                addr: format!("{}:{}", self_info.host, self_info.port),
            };
            match raft.initialize(BTreeMap::from([(raft_id, node)])).await {
                Ok(()) => tracing::info!(
                    node_id = raft_id,
                    "initialized a new one-voter metadata cluster"
                ),
                // Already initialized (e.g. a racing start): the goal state is reached anyway.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(raft_err(e)),
            }
        }

        let metrics = raft
            .wait(Some(LEADER_WAIT))
            .current_leader(raft_id, "metadata leader election")
            .await
            .map_err(|_| Error::NotLeader)?;
        // A new leader's first entry (and everything before it) must be applied before the state
        // is trustworthy; otherwise `state()` right after `open` could miss committed commands.
        if let Some(last) = metrics.last_log_index {
            raft.wait(Some(LEADER_WAIT))
                .applied_index_at_least(Some(last), "metadata replay")
                .await
                .map_err(raft_err)?;
        }

        if self.state().cluster_id.is_empty() {
            self.propose(Command::Bootstrap {
                cluster_id: new_cluster_id(),
            })
            .await?;
        }
        if self.state().brokers.get(&self_info.id) != Some(&self_info) {
            self.propose(Command::RegisterBroker(self_info)).await?;
        }
        Ok(())
    }

    /// The latest applied state; cheap (an `Arc` clone).
    pub fn state(&self) -> Arc<ClusterState> {
        self.inner.state_rx.borrow().clone()
    }

    /// A receiver that sees every newly applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.state_rx.clone()
    }

    /// Proposes through raft and waits until the command is committed and applied; returns the
    /// state machine's verdict. When this returns, [`Meta::state`] already includes the command.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        match self.inner.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Error::NotLeader),
            Err(RaftError::Fatal(Fatal::Stopped)) => Err(Error::Shutdown),
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Resolves when the raft core stopped on its own, on a fatal error (a storage error in the metadata
    /// directory, a panic): nothing can be committed any more and the broker must stop. Never resolves after
    /// a normal [`Meta::shutdown`]. The text says what failed.
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Err(fatal) = &rx.borrow_and_update().running_state {
                if !matches!(fatal, Fatal::Stopped) {
                    return fatal.to_string();
                }
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Stops the raft core. Everything acknowledged is already durable, so this only ends tasks;
    /// calling it again is a no-op.
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.raft.shutdown().await.map_err(raft_err)
    }
}

/// Kafka's cluster id format: a random UUID as 22 characters of unpadded base64url.
fn new_cluster_id() -> String {
    base64url_nopad(uuid::Uuid::new_v4().as_bytes())
}

fn base64url_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // 1 input byte -> 2 chars, 2 -> 3, 3 -> 4.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url_nopad(b""), "");
        assert_eq!(base64url_nopad(b"f"), "Zg");
        assert_eq!(base64url_nopad(b"fo"), "Zm8");
        assert_eq!(base64url_nopad(b"foo"), "Zm9v");
        assert_eq!(base64url_nopad(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url_nopad(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn cluster_id_is_22_url_safe_chars() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
