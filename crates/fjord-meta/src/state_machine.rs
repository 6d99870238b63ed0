//! The metadata state machine: [`ClusterState`] in memory, snapshots on disk.
//!
//! The state is not persisted on every apply. Instead every snapshot is durable (`snapshot.json`,
//! atomically replaced) and on open the state is rebuilt from it; openraft then re-applies the
//! committed log after the snapshot's last log id. Because apply is a pure function of
//! (state, entry), replay reproduces exactly the state that was lost.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftLogId, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::fsutil;
use crate::raft::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::types::{ClusterState, CommandResult};

const SNAPSHOT_FILE: &str = "snapshot.json";

/// `snapshot.json`. The state is stored as a value rather than as the opaque bytes sent to
/// followers, so the file stays readable by a human debugging a cluster.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    state: ClusterState,
}

pub(crate) struct StateMachine {
    dir: PathBuf,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// Shared with the watch channel; mutated copy-on-write once per applied batch.
    state: Arc<ClusterState>,
    tx: watch::Sender<Arc<ClusterState>>,
}

impl StateMachine {
    /// Loads the last snapshot from `dir`, if any. The returned receiver sees every applied batch.
    pub(crate) fn open(
        dir: &Path,
    ) -> io::Result<(StateMachine, watch::Receiver<Arc<ClusterState>>)> {
        let snap: Option<SnapshotFile> = fsutil::read_json(&dir.join(SNAPSHOT_FILE))?;
        let (last_applied, last_membership, state) = match snap {
            Some(s) => (s.meta.last_log_id, s.meta.last_membership, s.state),
            None => (None, StoredMembership::default(), ClusterState::default()),
        };
        let state = Arc::new(state);
        let (tx, rx) = watch::channel(state.clone());
        Ok((
            StateMachine {
                dir: dir.to_path_buf(),
                last_applied,
                last_membership,
                state,
                tx,
            },
            rx,
        ))
    }

    fn publish(&self) {
        self.tx.send_replace(self.state.clone());
    }
}

/// The snapshot as openraft sends it to followers: the state's JSON bytes.
fn snapshot_of(
    meta: SnapshotMeta,
    state: &ClusterState,
) -> serde_json::Result<Snapshot<TypeConfig>> {
    let bytes = serde_json::to_vec(state)?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(bytes)),
    })
}

/// A frozen copy of the state taken when openraft decides to snapshot; building runs concurrently
/// with further applies, which therefore must not be visible in it.
pub(crate) struct SnapshotBuilder {
    dir: PathBuf,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: Arc<ClusterState>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!(
                "{}-{}-{}",
                l.leader_id,
                l.index,
                uuid::Uuid::new_v4().simple()
            ),
            None => format!("none-{}", uuid::Uuid::new_v4().simple()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            state: (*self.state).clone(),
        };
        // Durable before returning: openraft purges the log up to this snapshot right after.
        fsutil::write_json_atomic(&self.dir.join(SNAPSHOT_FILE), &file)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::debug!(snapshot = %meta, "metadata snapshot written");
        let signature = meta.signature();
        snapshot_of(meta, &file.state)
            .map_err(|e| StorageIOError::read_snapshot(Some(signature), &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let state = Arc::make_mut(&mut self.state);
        for entry in entries {
            let log_id = *entry.get_log_id();
            // Pair assertion: openraft applies each committed entry once, in order.
            assert!(
                self.last_applied
                    .is_none_or(|l| l.index + 1 == log_id.index),
                "apply of log index {} after {:?}",
                log_id.index,
                self.last_applied
            );
            self.last_applied = Some(log_id);
            // The entry's author is the leader of its term; see `ClusterState::controller_id`.
            state.controller_id = i32::try_from(log_id.leader_id.node_id).unwrap_or(-1);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Ok,
                EntryPayload::Normal(cmd) => state.apply(&cmd),
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(log_id), m);
                    CommandResult::Ok
                }
            };
            results.push(result);
        }
        self.publish();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let state: ClusterState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let file = SnapshotFile {
            meta: meta.clone(),
            state,
        };
        fsutil::write_json_atomic(&self.dir.join(SNAPSHOT_FILE), &file)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.state = Arc::new(file.state);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let file: Option<SnapshotFile> = fsutil::read_json(&self.dir.join(SNAPSHOT_FILE))
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        file.map(|f| snapshot_of(f.meta, &f.state))
            .transpose()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}
