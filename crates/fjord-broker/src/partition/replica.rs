//! A partition's place in replication: who leads it at which epoch, its in-sync replicas, and on the leader what
//! it knows of each follower, from which the high watermark follows (Kafka's `Partition`/`Replica` state).
//!
//! **Invariants**
//! - The high watermark only grows while this broker leads an epoch, and never passes the log end offset of any
//!   member of the ISR as the leader last heard it (the union of the committed ISR and an ISR change in flight:
//!   Kafka's "maximal ISR"). Consumers never read at or above it.
//! - A follower reports an offset (the next one it fetches) only once everything below it is fsynced
//!   ([`crate::replication`]), so the high watermark counts only data durable on every in-sync follower.
//! - Role changes take the replication lock, and so do appends (leader and follower): no append of an old
//!   leader's data lands after the partition moved on to a newer epoch, and a leader's append is refused at once
//!   when it stopped leading.
//!
//! Lock order: `repl`, then `producers`, then `log`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Duration;

use bytes::Bytes;
use fjord_log::AppendInfo;
use fjord_meta::PartitionMeta;

use super::{rebuild_producers, Partition};
use crate::{now_ms, Error, Result};

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug)]
pub struct FollowerState {
    /// The follower's log end offset as its last fetch reported it (-1 before its first fetch this epoch).
    pub log_end: i64,
    /// When the follower last fetched.
    pub last_fetch_ms: i64,
    /// The last time the follower had everything the leader had (Kafka's `lastCaughtUpTimeMs`): the ISR drops a
    /// follower whose value is older than `replica.lag.time.max.ms`.
    pub last_caught_up_ms: i64,
    /// The leader's log end offset at the follower's previous fetch.
    leader_end_at_last_fetch: i64,
}

#[derive(Clone, Debug)]
pub struct ReplState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// An ISR change sent to the controller and not yet seen back in the metadata.
    pub pending_isr: Option<Vec<i32>>,
    /// The offset this leader's epoch began at: a follower joins the ISR only once it has reached it.
    pub epoch_start_offset: i64,
    pub followers: HashMap<i32, FollowerState>,
}

impl ReplState {
    /// Before the first metadata is applied: no leader, no epoch (the first `apply_meta` is a leader change).
    pub(super) fn unset() -> ReplState {
        ReplState {
            leader: -2,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            pending_isr: None,
            epoch_start_offset: 0,
            followers: HashMap::new(),
        }
    }

    /// The committed ISR and any change in flight: the high watermark waits for all of them.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        self.isr.iter().copied().chain(
            self.pending_isr
                .iter()
                .flatten()
                .copied()
                .filter(|b| !self.isr.contains(b)),
        )
    }
}

/// An ISR change the leader wants the controller to commit (Kafka's AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
    /// Whether the change drops replicas (else it adds some).
    pub shrink: bool,
}

/// Why a replica fetch was refused, or what it must do first.
pub enum ReplicaRead {
    /// The follower's log diverges from the leader's: it truncates to at most `end_offset` of `epoch`
    /// (Fetch v12's `diverging_epoch`) and fetches again.
    Diverging { epoch: i32, end_offset: i64 },
    Records {
        records: Bytes,
        log_start_offset: i64,
        high_watermark: i64,
    },
}

impl Partition {
    pub(super) fn lock_repl(&self) -> MutexGuard<'_, ReplState> {
        self.repl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the replication state (for Metadata-like answers and tests).
    pub fn replication(&self) -> ReplState {
        self.lock_repl().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.lock_repl().leader == self.node_id
    }

    /// The broker leading this partition as this broker knows it (-1: none).
    pub fn leader(&self) -> i32 {
        self.lock_repl().leader
    }

    /// Refuses unless this broker leads the partition, at `current_leader_epoch` when the client sent one
    /// (-1: any): FENCED_LEADER_EPOCH when the client's epoch is older, UNKNOWN_LEADER_EPOCH when newer (this
    /// broker has not seen the change yet), NOT_LEADER_OR_FOLLOWER otherwise.
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<()> {
        check_leader_in(&self.lock_repl(), self, current_leader_epoch)
    }

    /// Follows a metadata change of this partition. A new leader epoch resets what the leader knew of its
    /// followers; becoming leader starts the epoch in the log (so followers of the old epoch learn where it
    /// ended) and counts every in-sync follower as caught up now (they get `replica.lag.time.max.ms` to fetch).
    pub(super) fn apply_meta(&self, pm: &PartitionMeta) -> Result<()> {
        let mut r = self.lock_repl();
        if (pm.leader_epoch, pm.partition_epoch) < (r.leader_epoch, r.partition_epoch) {
            // Older than what this partition already follows: never go back to an earlier epoch.
            return Ok(());
        }
        let new_epoch = pm.leader_epoch != r.leader_epoch || pm.leader != r.leader;
        if pm.partition_epoch != r.partition_epoch || new_epoch {
            // The change we asked for was committed, or something newer superseded it.
            r.pending_isr = None;
        }
        r.partition_epoch = pm.partition_epoch;
        r.replicas = pm.replicas.clone();
        r.isr = pm.isr.clone();
        if new_epoch {
            r.leader = pm.leader;
            r.leader_epoch = pm.leader_epoch;
            self.leader_epoch
                .store(pm.leader_epoch as i64, Ordering::Relaxed);
            r.followers.clear();
            if pm.leader == self.node_id {
                let now = now_ms();
                let leo = self.io(|| {
                    let mut log = self.log()?;
                    log.assign_epoch(pm.leader_epoch)?;
                    Ok(log.log_end_offset())
                })?;
                r.epoch_start_offset = leo;
                let others: Vec<i32> = r
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| *b != self.node_id)
                    .collect();
                for b in others {
                    r.followers.insert(
                        b,
                        FollowerState {
                            log_end: -1,
                            last_fetch_ms: now,
                            last_caught_up_ms: now,
                            leader_end_at_last_fetch: -1,
                        },
                    );
                }
                tracing::info!(topic = %self.topic, partition = self.index, epoch = pm.leader_epoch,
                    start_offset = leo, isr = ?pm.isr, "leading the partition");
            } else {
                tracing::info!(topic = %self.topic, partition = self.index, epoch = pm.leader_epoch,
                    leader = pm.leader, "following the partition");
            }
        } else if r.leader == self.node_id {
            // Replicas added by a reassignment start unknown.
            let now = now_ms();
            let missing: Vec<i32> = r
                .replicas
                .iter()
                .copied()
                .filter(|b| *b != self.node_id && !r.followers.contains_key(b))
                .collect();
            for b in missing {
                r.followers.insert(
                    b,
                    FollowerState {
                        log_end: -1,
                        last_fetch_ms: now,
                        last_caught_up_ms: now,
                        leader_end_at_last_fetch: -1,
                    },
                );
            }
            let replicas = r.replicas.clone();
            r.followers.retain(|b, _| replicas.contains(b));
        }
        let leo = self.lock().log_end_offset();
        self.advance_hw(&r, leo);
        drop(r);
        // acks=all waiters re-check their role and the ISR; parked fetches re-read (and learn of the change).
        self.hw_changed.notify_waiters();
        self.wake_waiters();
        Ok(())
    }

    /// Wakes acks=all waiters and parked fetches after the partition was deleted here (its topic is gone, or a
    /// reassignment removed this broker): the waits see it and end unacknowledged.
    pub(super) fn wake_replica_waiters(&self) {
        self.hw_changed.notify_waiters();
        self.wake_waiters();
    }

    /// Moves the high watermark to the smallest log end offset in the maximal ISR, if that is higher; on a
    /// follower or a leaderless partition it stays where it is. Called with the replication lock held.
    pub(super) fn advance_hw(&self, r: &ReplState, leader_end: i64) -> bool {
        if r.leader != self.node_id {
            return false;
        }
        let mut candidate = leader_end;
        for b in r.maximal_isr() {
            if b == self.node_id {
                continue;
            }
            match r.followers.get(&b) {
                Some(f) if f.log_end >= 0 => candidate = candidate.min(f.log_end),
                _ => return false,
            }
        }
        let old = self.hw.fetch_max(candidate, Ordering::AcqRel);
        if candidate > old {
            self.hw_changed.notify_waiters();
            true
        } else {
            false
        }
    }

    /// The high watermark: consumers read below it. Never above the log end offset.
    pub fn high_watermark(&self) -> i64 {
        self.hw.load(Ordering::Acquire)
    }

    /// Leader side of a follower's fetch: records the follower's position (its fetch offset, below which it has
    /// everything, durably), moves the high watermark, and reads from the fetch offset up to the log end. A
    /// follower whose last fetched epoch does not match this log at its fetch offset is told where to truncate.
    pub fn read_for_follower(
        &self,
        replica: i32,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        max_bytes: usize,
    ) -> Result<ReplicaRead> {
        self.io(|| {
            let mut r = self.lock_repl();
            check_leader_in(&r, self, current_leader_epoch)?;
            if !r.replicas.contains(&replica) {
                return Err(Error::NotLeader(format!(
                    "broker {replica} is not a replica of {}-{}",
                    self.topic, self.index
                )));
            }
            let log = self.log()?;
            let leo = log.log_end_offset();
            if last_fetched_epoch >= 0 {
                let (epoch, end) = log.end_offset_for_epoch(last_fetched_epoch);
                if epoch < 0 {
                    // No epoch here at or below the follower's: nothing it holds can be in this log. It starts
                    // over from this log's start (an undefined end would tell it nothing, and it would ask again
                    // at once, forever).
                    return Ok(ReplicaRead::Diverging {
                        epoch: -1,
                        end_offset: log.log_start_offset(),
                    });
                }
                if epoch != last_fetched_epoch || end < fetch_offset {
                    return Ok(ReplicaRead::Diverging {
                        epoch,
                        end_offset: end,
                    });
                }
            }
            if fetch_offset > leo {
                return Err(Error::Log(fjord_log::Error::OffsetOutOfRange {
                    offset: fetch_offset,
                    log_start: log.log_start_offset(),
                    log_end: leo,
                }));
            }
            let now = now_ms();
            if let Some(f) = r.followers.get_mut(&replica) {
                if fetch_offset >= leo {
                    f.last_caught_up_ms = now;
                } else if f.leader_end_at_last_fetch >= 0
                    && fetch_offset >= f.leader_end_at_last_fetch
                {
                    f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
                }
                f.log_end = fetch_offset;
                f.last_fetch_ms = now;
                f.leader_end_at_last_fetch = leo;
            }
            self.advance_hw(&r, leo);
            drop(r);
            let read = if fetch_offset < log.log_start_offset() {
                return Err(Error::Log(fjord_log::Error::OffsetOutOfRange {
                    offset: fetch_offset,
                    log_start: log.log_start_offset(),
                    log_end: leo,
                }));
            } else {
                log.read(fetch_offset, max_bytes, leo, true)?
            };
            Ok(ReplicaRead::Records {
                records: read.records,
                log_start_offset: read.log_start_offset,
                high_watermark: self.high_watermark(),
            })
        })
    }

    /// The ISR change this leader should ask for now, if any: followers that have not caught up for
    /// `max_lag_ms` leave (never the leader, never below one member), followers that reached the high watermark
    /// and the start of this epoch join. `None` while another change is in flight.
    pub fn wanted_isr_change(
        &self,
        max_lag_ms: i64,
        live: impl Fn(i32) -> bool,
    ) -> Option<IsrChange> {
        let mut r = self.lock_repl();
        if r.leader != self.node_id || r.pending_isr.is_some() {
            return None;
        }
        let now = now_ms();
        let hw = self.high_watermark();
        let mut isr: Vec<i32> = r
            .isr
            .iter()
            .copied()
            .filter(|b| {
                *b == self.node_id
                    || r.followers
                        .get(b)
                        .is_some_and(|f| now - f.last_caught_up_ms <= max_lag_ms)
            })
            .collect();
        for &b in &r.replicas {
            if isr.contains(&b) || !live(b) {
                continue;
            }
            if let Some(f) = r.followers.get(&b) {
                if f.log_end >= hw
                    && f.log_end >= r.epoch_start_offset
                    && now - f.last_caught_up_ms <= max_lag_ms
                {
                    isr.push(b);
                }
            }
        }
        let mut sorted_new = isr.clone();
        sorted_new.sort_unstable();
        let mut sorted_old = r.isr.clone();
        sorted_old.sort_unstable();
        if sorted_new == sorted_old {
            return None;
        }
        // Keep the replica order, as Kafka lists the ISR.
        let ordered: Vec<i32> = r
            .replicas
            .iter()
            .copied()
            .filter(|b| isr.contains(b))
            .collect();
        r.pending_isr = Some(ordered.clone());
        Some(IsrChange {
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            shrink: ordered.len() < r.isr.len(),
            new_isr: ordered,
        })
    }

    /// The controller refused or lost an ISR change: forget it so that the next check asks again.
    pub fn isr_change_failed(&self, change: &IsrChange) {
        let mut r = self.lock_repl();
        if r.pending_isr.as_ref() == Some(&change.new_isr)
            && r.partition_epoch == change.partition_epoch
        {
            r.pending_isr = None;
        }
        let leo = self.lock().log_end_offset();
        self.advance_hw(&r, leo);
    }

    /// acks=all: waits until the high watermark reaches `offset` (every in-sync replica has the data) or
    /// `timeout` passes, for a write that ends at `offset` and was appended in leader epoch `epoch`. Succeeds only
    /// while the log still holds that epoch's data just below `offset`: a write truncated away meanwhile (this
    /// broker lost leadership, followed another leader, and perhaps leads again) is never acknowledged. Fails with
    /// NOT_LEADER_OR_FOLLOWER when this broker does not lead, and with NOT_ENOUGH_REPLICAS_AFTER_APPEND when the
    /// ISR shrank below `min_isr` (the write is in the log but not acknowledged, as Kafka answers).
    pub async fn wait_replicated(
        &self,
        offset: i64,
        epoch: i32,
        min_isr: usize,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.hw_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let r = self.lock_repl();
                if self.deleted.load(Ordering::Acquire) {
                    return Err(Error::NotLeader(format!(
                        "{}-{} is no longer hosted here (deleted, or moved by a reassignment) while waiting for \
                         its replicas",
                        self.topic, self.index
                    )));
                }
                let written_in = self.lock().epoch_at(offset - 1);
                if written_in != Some(epoch) {
                    return Err(Error::NotLeader(format!(
                        "{}-{}: the write was truncated by a leader change before it was replicated",
                        self.topic, self.index
                    )));
                }
                if r.leader != self.node_id {
                    return Err(Error::NotLeader(format!(
                        "{}-{} changed leader while waiting for its replicas",
                        self.topic, self.index
                    )));
                }
                if self.high_watermark() >= offset {
                    return Ok(());
                }
                if r.isr.len() < min_isr {
                    return Err(Error::NotEnoughReplicasAfterAppend(format!(
                        "{}-{}: the in-sync replicas {:?} are fewer than min.insync.replicas={min_isr}; the \
                         write is in the leader's log but not acknowledged",
                        self.topic, self.index, r.isr
                    )));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::Timeout(format!(
                    "{}-{}: not every in-sync replica had the write within the request timeout",
                    self.topic, self.index
                )));
            }
        }
    }

    /// The number of in-sync replicas (for min.insync.replicas before an acks=all append).
    pub fn isr_len(&self) -> usize {
        self.lock_repl().isr.len()
    }

    /// Follower side: appends batches fetched from the leader of `leader_epoch`, keeping their offsets, and
    /// updates producer state from them. Refused when the partition moved on to another epoch or leader.
    pub fn append_as_follower(&self, records: Bytes, leader_epoch: i32) -> Result<AppendInfo> {
        self.io(|| {
            let r = self.lock_repl();
            self.check_following(&r, leader_epoch)?;
            let mut producers = self.lock_producers();
            let mut log = self.log()?;
            let info = log.append_as_follower(records.clone())?;
            for a in super::record_batches(&mut producers, &records) {
                log.add_aborted_txn(a)?;
            }
            drop(log);
            drop(producers);
            drop(r);
            self.wake_waiters();
            Ok(info)
        })
    }

    /// Refuses a follower operation for `leader_epoch` once this partition leads or follows a later epoch: data of
    /// an epoch it moved past is never appended, and no truncation is done on its behalf.
    fn check_following(&self, r: &ReplState, leader_epoch: i32) -> Result<()> {
        if r.leader == self.node_id || r.leader_epoch != leader_epoch {
            return Err(Error::NotLeader(format!(
                "{}-{} is no longer following epoch {leader_epoch}",
                self.topic, self.index
            )));
        }
        Ok(())
    }

    /// Follower side: the leader's high watermark (capped at this log's end).
    pub fn set_follower_hw(&self, leader_hw: i64) {
        let leo = self.lock().log_end_offset();
        let hw = leader_hw.min(leo);
        let old = self.hw.swap(hw, Ordering::AcqRel);
        if hw != old {
            self.wake_waiters();
        }
    }

    /// Follower side: removes a divergent tail (everything at and above `offset`) and rebuilds producer state
    /// from what is left. Refused when the partition moved on from `leader_epoch`.
    pub fn truncate_as_follower(&self, offset: i64, leader_epoch: i32) -> Result<()> {
        self.io(|| {
            let r = self.lock_repl();
            self.check_following(&r, leader_epoch)?;
            let mut producers = self.lock_producers();
            let mut log = self.log()?;
            let before = log.log_end_offset();
            if offset >= before {
                // Nothing to remove but an empty epoch this broker began at its log end (the log drops it).
                return Ok(log.truncate_to(offset)?);
            }
            self.truncations.fetch_add(1, Ordering::AcqRel);
            log.truncate_to(offset)?;
            let fs = self.dirs.storage();
            let (states, snapshot) = rebuild_producers(&**fs, &mut log)?;
            *producers = states;
            self.last_snapshot.store(snapshot, Ordering::Release);
            let after = log.log_end_offset();
            self.durable.fetch_min(after, Ordering::AcqRel);
            self.hw.fetch_min(after, Ordering::AcqRel);
            tracing::warn!(topic = %self.topic, partition = self.index, from = before, to = after,
                "truncated a divergent tail to follow the leader");
            drop(log);
            drop(producers);
            drop(r);
            self.wake_waiters();
            Ok(())
        })
    }

    /// Follower side: the leader's log start moved past ours (retention, DeleteRecords); follow it.
    pub fn follow_log_start(&self, leader_log_start: i64) -> Result<()> {
        self.io(|| {
            let mut log = self.log()?;
            if leader_log_start > log.log_start_offset() && leader_log_start <= log.log_end_offset()
            {
                log.delete_records_before(leader_log_start)?;
            }
            Ok(())
        })
    }

    /// Follower side, when the leader no longer has what this log ends with (its log starts beyond our end, or
    /// ours starts beyond its end): empties the log and starts it at `offset`, forgetting producer state.
    pub fn restart_at_as_follower(&self, offset: i64, leader_epoch: i32) -> Result<()> {
        self.io(|| {
            let r = self.lock_repl();
            self.check_following(&r, leader_epoch)?;
            let mut producers = self.lock_producers();
            let mut log = self.log()?;
            let fs = self.dirs.storage();
            for o in super::snapshot_offsets(&**fs, log.dir())? {
                fs.remove_file(&super::snapshot_path(log.dir(), o))?;
            }
            self.truncations.fetch_add(1, Ordering::AcqRel);
            log.reset_to(offset)?;
            *producers = Default::default();
            self.last_snapshot.store(-1, Ordering::Release);
            self.durable.store(offset, Ordering::Release);
            self.hw.store(offset, Ordering::Release);
            tracing::warn!(topic = %self.topic, partition = self.index, offset,
                "emptied the log to follow a leader whose log does not overlap it");
            drop(log);
            drop(producers);
            drop(r);
            self.wake_waiters();
            Ok(())
        })
    }
}

pub(super) fn check_leader_in(
    r: &ReplState,
    p: &Partition,
    current_leader_epoch: i32,
) -> Result<()> {
    if current_leader_epoch >= 0 && current_leader_epoch < r.leader_epoch {
        return Err(Error::FencedLeaderEpoch(format!(
            "{}-{}: leader epoch {current_leader_epoch} is older than the current {}",
            p.topic, p.index, r.leader_epoch
        )));
    }
    if current_leader_epoch > r.leader_epoch {
        return Err(Error::UnknownLeaderEpoch(format!(
            "{}-{}: leader epoch {current_leader_epoch} is newer than the {} this broker knows",
            p.topic, p.index, r.leader_epoch
        )));
    }
    if r.leader != p.node_id {
        return Err(Error::NotLeader(format!(
            "broker {} is not the leader of {}-{} (the leader is {})",
            p.node_id, p.topic, p.index, r.leader
        )));
    }
    Ok(())
}
