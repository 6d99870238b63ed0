//! The broker side of consumer groups: owns the [`GroupCoordinator`] state machine, persists what it hands out
//! to the compacted `__consumer_offsets` topic (fsynced here and replicated to the in-sync replicas, as Kafka's
//! acks=all coordinator writes), and drives the coordinator's clock.
//!
//! **Ownership follows leadership** (Kafka's coordinator migration): this broker coordinates exactly the groups
//! whose `__consumer_offsets` partition it leads. After every metadata sync [`follow_leadership`] compares the
//! partitions' roles with [`Ownership`]: a partition no longer led here is unloaded at once (its groups leave
//! memory, Kafka's `onResignation`), one newly led is marked loading and replayed from its log up to the log end
//! by [`run_loader`] (Kafka's `onElection`) before any request for its groups is served. Meanwhile requests for
//! those groups answer COORDINATOR_LOAD_IN_PROGRESS, and requests for groups of partitions led elsewhere
//! NOT_COORDINATOR; clients then look the coordinator up again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fjord_coordinator::consumer_group::ConsumerConfig;
use fjord_coordinator::records::{self, Key};
use fjord_coordinator::{GroupConfig, GroupCoordinator, Record};
use fjord_meta::{Command, CommandResult};
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::partition::{Origin, Partition};
use crate::{blocking, now_ms, BrokerState, Error, Result};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the coordinator's clock advances (session expiry, rebalance deadlines).
const TICK: Duration = Duration::from_millis(100);

/// How long a coordinator's write to its internal topic may take to be fsynced and replicated: the default of
/// Kafka's `offsets.commit.timeout.ms` (not configurable in Fjord yet).
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(5_000);

/// What a coordinator knows of one partition of its internal topic that this broker leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Led here at this leader epoch; its log is being replayed (COORDINATOR_LOAD_IN_PROGRESS).
    Loading { epoch: i32 },
    /// Led here at this leader epoch and loaded: its groups (or transactional ids) are served.
    Active { epoch: i32 },
}

/// The partitions of a coordinator's internal topic led here, by partition. A partition absent from it is led
/// elsewhere (NOT_COORDINATOR). Shared by the group and the transaction coordinator.
///
/// Lock order: this map, then the coordinator's own lock (so a check made under it and the work done under the
/// coordinator's lock cannot straddle an unload).
#[derive(Default)]
pub struct Ownership {
    parts: Mutex<HashMap<i32, Load>>,
}

/// What [`Ownership::follow`] found changed.
#[derive(Debug, Default)]
pub struct RoleChanges {
    /// Partitions no longer led here (or led at a new epoch): unload them.
    pub resigned: Vec<i32>,
    /// Partitions now led here whose log must be replayed first: (partition, leader epoch).
    pub elected: Vec<(i32, i32)>,
}

impl Ownership {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<i32, Load>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leader epoch of `partition` when it is led here and loaded; otherwise the error code a request for
    /// one of its keys answers: COORDINATOR_LOAD_IN_PROGRESS while it loads, NOT_COORDINATOR when another
    /// broker leads it.
    pub fn check(&self, partition: i32) -> Result<i32, i16> {
        check_in(&self.lock(), partition)
    }

    /// Whether any partition is still loading (ListGroups and ListTransactions say so).
    pub fn any_loading(&self) -> bool {
        self.lock()
            .values()
            .any(|l| matches!(l, Load::Loading { .. }))
    }

    /// The partitions waiting for their load, with the epoch each was elected at.
    pub fn loading(&self) -> Vec<(i32, i32)> {
        let mut out: Vec<(i32, i32)> = self
            .lock()
            .iter()
            .filter_map(|(p, l)| match l {
                Load::Loading { epoch } => Some((*p, *epoch)),
                Load::Active { .. } => None,
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Compares what is owned with the roles of the hosted replicas of `topic` (after a metadata sync) and
    /// records the new view: resigned partitions leave the map, newly led ones enter it as loading, or as
    /// active straight away when their log is empty (nothing to replay; a just-created topic serves at once).
    /// `unload` runs for each resigned partition with the map still locked, so no request checked against the
    /// old view acts after it. Cheap: the internal topics have a few dozen partitions.
    pub fn follow(
        &self,
        state: &BrokerState,
        topic: &str,
        mut unload: impl FnMut(i32),
    ) -> RoleChanges {
        let meta = state.meta.state();
        let count = meta.topics.get(topic).map_or(0, |t| t.partitions.len()) as i32;
        let mut led: HashMap<i32, (i32, bool)> = HashMap::new();
        for p in 0..count {
            let Some(part) = state.partitions.get(topic, p) else {
                continue;
            };
            if part.check_online().is_err() {
                // Kafka resigns from a partition whose log directory failed (KAFKA_STORAGE_ERROR -> NOT_COORDINATOR).
                continue;
            }
            let r = part.replication();
            if r.leader == state.config.node_id {
                let (start, end) = (part.offsets().0, part.log_end_offset());
                led.insert(p, (r.leader_epoch, end <= start));
            }
        }
        let mut changes = RoleChanges::default();
        let mut parts = self.lock();
        let stale: Vec<i32> = parts
            .iter()
            .filter(|(p, l)| {
                let epoch = match l {
                    Load::Loading { epoch } | Load::Active { epoch } => *epoch,
                };
                led.get(p).is_none_or(|(e, _)| *e != epoch)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            parts.remove(&p);
            unload(p);
            changes.resigned.push(p);
        }
        for (p, (epoch, empty)) in led {
            if parts.contains_key(&p) {
                continue;
            }
            if empty {
                parts.insert(p, Load::Active { epoch });
            } else {
                parts.insert(p, Load::Loading { epoch });
                changes.elected.push((p, epoch));
            }
        }
        changes
    }

    /// Ends the load of `partition` at `epoch`: `install` runs (with the map locked) only if the partition is
    /// still loading at that epoch, and the partition becomes active. Returns false when leadership moved on
    /// meanwhile (what was loaded is dropped; a newer load, if any, follows).
    pub fn finish_load(&self, partition: i32, epoch: i32, install: impl FnOnce()) -> bool {
        let mut parts = self.lock();
        if parts.get(&partition) != Some(&Load::Loading { epoch }) {
            return false;
        }
        install();
        parts.insert(partition, Load::Active { epoch });
        true
    }
}

/// A request found `topic`-`partition` not owned here although the metadata names this broker its leader: this
/// broker has not applied that metadata yet (the request raced the metadata follower, e.g. right after the
/// topic was created). It catches up now, so the answer is the truth (served, or loading) rather than a
/// NOT_COORDINATOR that would send the client back to FindCoordinator, which names this broker again.
pub fn catch_up(state: &BrokerState, owned: &Ownership, topic: &str, partition: i32) {
    if owned.lock().contains_key(&partition) {
        return;
    }
    let leads = state
        .meta
        .state()
        .topics
        .get(topic)
        .and_then(|t| t.partitions.get(partition as usize))
        .is_some_and(|pm| pm.leader == state.config.node_id);
    if !leads {
        return;
    }
    match state.partitions.get(topic, partition) {
        // Offline here: another replica's broker takes over; nothing to catch up.
        Some(part) if part.check_online().is_err() => {}
        Some(part) if part.leader() == state.config.node_id => state.follow_coordinators(),
        _ => {
            if let Err(e) = state.sync_partitions() {
                tracing::warn!(error = %e, "applying metadata to partitions failed");
            }
        }
    }
}

/// [`Ownership::check`] on a locked map.
pub fn check_in(parts: &HashMap<i32, Load>, partition: i32) -> Result<i32, i16> {
    use kafka_protocol::error::ResponseError as E;
    match parts.get(&partition) {
        Some(Load::Active { epoch }) => Ok(*epoch),
        Some(Load::Loading { .. }) => Err(E::CoordinatorLoadInProgress.code()),
        None => Err(E::NotCoordinator.code()),
    }
}

/// The error code a coordinator answers when writing to its internal topic failed, as Kafka maps it: a replica
/// that stopped leading (or whose disk failed) means another broker coordinates now (NOT_COORDINATOR); a write
/// that could not reach enough replicas in time, COORDINATOR_NOT_AVAILABLE (clients retry both).
pub fn write_error_code(e: &Error) -> i16 {
    use kafka_protocol::error::ResponseError as E;
    match e {
        Error::NotLeader(_)
        | Error::FencedLeaderEpoch(_)
        | Error::Storage(_)
        | Error::NotCoordinator(_) => E::NotCoordinator.code(),
        e if e.is_disk_fault() => E::NotCoordinator.code(),
        // A transactional write refused by the partition's producer state (its transaction ended meanwhile).
        Error::Producer(p) => p.code(),
        _ => E::CoordinatorNotAvailable.code(),
    }
}

/// [`write_error_code`] for an offset commit (OffsetCommit, TxnOffsetCommit): as in Kafka, a commit whose
/// records the log refuses as too large is answered INVALID_COMMIT_OFFSET_SIZE, which clients do not retry (a
/// retriable code would have them send the same commit forever).
pub fn commit_error_code(e: &Error) -> i16 {
    match e {
        Error::Log(fjord_log::Error::RecordTooLarge { .. }) => {
            kafka_protocol::error::ResponseError::InvalidCommitOffsetSize.code()
        }
        e => write_error_code(e),
    }
}

pub struct Groups {
    coordinator: Mutex<GroupCoordinator>,
    /// The `__consumer_offsets` partitions led here; only their groups are served.
    pub owned: Ownership,
    /// `offsets.topic.num.partitions`: the partition of a group is `partition_for(group, this)`, as the
    /// coordinator places its records.
    partitions: i32,
    /// Serializes appends to `__consumer_offsets` so that records of one group keep their order.
    write_lock: tokio::sync::Mutex<()>,
    /// Transactional offset commits (TxnOffsetCommit) written but not yet committed or aborted, by producer id.
    /// They become visible when the commit marker reaches their `__consumer_offsets` partition.
    pending_txn: Mutex<HashMap<i64, Vec<PendingOffset>>>,
}

/// A transactional offset commit waiting for its transaction's outcome.
struct PendingOffset {
    /// Its `__consumer_offsets` partition.
    partition: i32,
    group: String,
    topic: String,
    topic_partition: i32,
    key: Bytes,
    value: Option<Bytes>,
}

pub fn group_config(c: &BrokerConfig) -> GroupConfig {
    let int = |k: &str, d: i64| -> i64 { c.props.get(k).and_then(|v| v.parse().ok()).unwrap_or(d) };
    GroupConfig {
        min_session_timeout_ms: int("group.min.session.timeout.ms", 6_000) as i32,
        max_session_timeout_ms: int("group.max.session.timeout.ms", 1_800_000) as i32,
        initial_rebalance_delay_ms: int("group.initial.rebalance.delay.ms", 3_000),
        offsets_retention_ms: int("offsets.retention.minutes", 10_080) * 60_000,
        max_metadata_bytes: int("offset.metadata.max.bytes", 4096) as usize,
        max_group_size: int("group.max.size", i32::MAX as i64) as usize,
        offsets_partitions: int("offsets.topic.num.partitions", 50) as i32,
        retention_check_interval_ms: int("offsets.retention.check.interval.ms", 600_000),
    }
}

impl Groups {
    pub fn new(config: GroupConfig, consumer: ConsumerConfig) -> Self {
        Self {
            partitions: config.offsets_partitions,
            owned: Ownership::default(),
            coordinator: Mutex::new(GroupCoordinator::with_consumer_config(config, consumer)),
            write_lock: tokio::sync::Mutex::new(()),
            pending_txn: Mutex::new(HashMap::new()),
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Vec<PendingOffset>>> {
        self.pending_txn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_pending(&self, producer_id: i64, partition: i32, key: Bytes, value: Option<Bytes>) {
        let Ok(Key::Offset {
            group,
            topic,
            partition: topic_partition,
        }) = records::decode_key(key.clone())
        else {
            return;
        };
        self.lock_pending()
            .entry(producer_id)
            .or_default()
            .push(PendingOffset {
                partition,
                group,
                topic,
                topic_partition,
                key,
                value,
            });
    }

    /// A transaction marker reached `__consumer_offsets` partition `partition`: the producer's pending offset
    /// commits there become visible (commit) or are dropped (abort).
    pub fn complete_txn(&self, producer_id: i64, partition: i32, commit: bool) {
        let done: Vec<PendingOffset> = {
            let mut pending = self.lock_pending();
            let Some(list) = pending.get_mut(&producer_id) else {
                return;
            };
            let (done, keep): (Vec<_>, Vec<_>) =
                list.drain(..).partition(|p| p.partition == partition);
            *list = keep;
            if list.is_empty() {
                pending.remove(&producer_id);
            }
            done
        };
        if commit && !done.is_empty() {
            let now = now_ms();
            let mut c = self.lock();
            for p in done {
                if let Err(e) = c.replay(p.key, p.value, now) {
                    tracing::warn!(group = %p.group, error = %e, "cannot apply a transactional offset commit");
                }
            }
        }
    }

    /// Does a transaction hold an uncommitted offset for this group and partition (KIP-447 require_stable)?
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.lock_pending()
            .values()
            .flatten()
            .any(|p| p.group == group && p.topic == topic && p.topic_partition == partition)
    }

    /// Begins a transactional offset commit (TxnOffsetCommit) of `producer_id` to the group's partition, before
    /// its transaction is checked: the guard to pass to [`Groups::persist_txn_offsets`], which refuses the write
    /// if a marker ended the transaction in between (the batch would otherwise open a transaction in
    /// `__consumer_offsets` that no marker ends). `None` inside: the transaction is already open there.
    pub fn start_txn_offsets(
        &self,
        state: &BrokerState,
        group: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<Option<u64>> {
        Ok(hosted(state, OFFSETS_TOPIC, self.partition_of(group))?
            .start_txn_verification(producer_id, producer_epoch))
    }

    /// Forgets the guard of a transactional offset commit once its write was tried or its check failed.
    pub fn finish_txn_offsets(
        &self,
        state: &BrokerState,
        group: &str,
        producer_id: i64,
        guard: u64,
    ) {
        if let Ok(p) = hosted(state, OFFSETS_TOPIC, self.partition_of(group)) {
            p.finish_txn_verification(producer_id, guard);
        }
    }

    /// Writes transactional offset commits (TxnOffsetCommit) as a transactional batch of `producer_id` and
    /// waits until it is durable; they stay pending until the transaction's marker. `guard` is what
    /// [`Groups::start_txn_offsets`] returned: a marker since then refuses the write (INVALID_TXN_STATE).
    pub async fn persist_txn_offsets(
        &self,
        state: &BrokerState,
        records: Vec<Record>,
        producer_id: i64,
        producer_epoch: i16,
        guard: Option<u64>,
    ) -> Result<()> {
        let Some(partition) = records.first().map(|r| r.partition) else {
            return Ok(());
        };
        let _guard = self.write_lock.lock().await;
        ensure_offsets_topic(state).await?;
        let pairs: Vec<(Bytes, Option<Bytes>)> =
            records.into_iter().map(|r| (r.key, r.value)).collect();
        let producer = Some((producer_id, producer_epoch));
        let part = hosted(state, OFFSETS_TOPIC, partition)?;
        let info =
            part.append_verified(encode_batch(&pairs, producer)?, Origin::Coordinator, guard)?;
        wait_acknowledged(state, &part, info.last_offset + 1, info.leader_epoch).await?;
        for (key, value) in pairs {
            self.add_pending(producer_id, partition, key, value);
        }
        Ok(())
    }

    /// Holds back every `__consumer_offsets` append of this coordinator until the guard drops. For tests that
    /// need a request parked between its checks and its write (and for nothing else).
    #[doc(hidden)]
    pub async fn hold_writes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().await
    }

    /// The coordinator, locked. Never hold it across an await. Request handlers use [`Groups::coordinator_for`],
    /// which first checks that the group is served here.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, GroupCoordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `__consumer_offsets` partition of a group.
    pub fn partition_of(&self, group: &str) -> i32 {
        records::partition_for(group, self.partitions)
    }

    /// The coordinator, locked, if this broker serves `group`: its partition is led here and loaded. Otherwise
    /// the code to answer (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS). Before `__consumer_offsets` exists
    /// no group exists anywhere (creating one writes to it, and every path that does creates the topic first),
    /// so the empty state answers truthfully: a read then says "no such group" rather than NOT_COORDINATOR.
    /// Never hold the guard across an await.
    pub fn coordinator_for(
        &self,
        state: &BrokerState,
        group: &str,
    ) -> Result<MutexGuard<'_, GroupCoordinator>, i16> {
        catch_up(state, &self.owned, OFFSETS_TOPIC, self.partition_of(group));
        let owned = self.owned.lock();
        if state.meta.state().topics.contains_key(OFFSETS_TOPIC) {
            check_in(&owned, self.partition_of(group))?;
        }
        // Taken before the ownership map is released: an unload waits for this guard.
        Ok(self.lock())
    }

    /// [`Groups::coordinator_for`] for a request that may create the group: `__consumer_offsets` is created
    /// first when missing (COORDINATOR_NOT_AVAILABLE when it cannot be, e.g. too few live brokers for its
    /// replication factor), so that ownership is decided by its leaders.
    pub async fn ensure_served(&self, state: &BrokerState, group: &str) -> Result<(), i16> {
        if let Err(e) = ensure_offsets_topic(state).await {
            tracing::warn!(error = %e, "cannot create __consumer_offsets");
            return Err(kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code());
        }
        let p = self.partition_of(group);
        catch_up(state, &self.owned, OFFSETS_TOPIC, p);
        self.owned.check(p).map(|_| ())
    }

    /// Drops the groups (and pending transactional offsets) of a partition no longer led here.
    fn unload(&self, partition: i32) {
        let gone = self.lock().unload_partition(partition);
        self.lock_pending().retain(|_, list| {
            list.retain(|p| p.partition != partition);
            !list.is_empty()
        });
        tracing::info!(
            partition,
            groups = gone,
            "group coordinator resigned from a __consumer_offsets partition"
        );
    }

    /// Appends records to their `__consumer_offsets` partitions and waits until they are durable. Each
    /// partition's records are written in order, in batches within the topic's `max.message.bytes` (group
    /// metadata, tombstones: each record stands alone, so a large set is split rather than refused).
    pub async fn persist(&self, state: &BrokerState, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock().await;
        self.append_locked(state, records, false).await
    }

    /// [`Groups::persist`] for one group's offset commit: each partition's records are one batch, written
    /// whole or not at all, as Kafka writes a commit; one larger than `max.message.bytes` is refused
    /// (answered INVALID_COMMIT_OFFSET_SIZE, see [`commit_error_code`]).
    pub async fn persist_commit(&self, state: &BrokerState, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock().await;
        self.append_locked(state, records, true).await
    }

    /// Writes what changed in the KIP-848 groups served here and waits until it is durable (Kafka's coordinator
    /// answers a heartbeat once its records are committed). The records are taken under the write lock, so they
    /// reach the log in the order they were taken: each is a diff against the ones before. Whatever an earlier
    /// call took is durable once this one has the lock.
    ///
    /// Only the groups of partitions led and loaded here are taken (the others' changes stay pending, never
    /// counted as written). Each partition is written on its own, in batches of at most the topic's
    /// `max.message.bytes`; when a partition's write fails, its groups are written again one by one, so that
    /// neither a failing partition nor a group whose records the log refuses (one too large for the limit)
    /// holds back the others. Returns the groups whose changes were not written, with the code to answer for
    /// them: those of `callers` (the groups the caller changed) not led and loaded here (NOT_COORDINATOR,
    /// COORDINATOR_LOAD_IN_PROGRESS: an unload dropped their changes), and those whose write failed. Records
    /// that could not be written are written again by the next call (the clock task makes one every tick).
    pub async fn flush_consumer_groups(
        &self,
        state: &BrokerState,
        callers: &[&str],
    ) -> BTreeMap<String, i16> {
        let _guard = self.write_lock.lock().await;
        let mut failed: BTreeMap<String, i16> = BTreeMap::new();
        let records = {
            let owned = self.owned.lock();
            for g in callers {
                if let Err(code) = check_in(&owned, self.partition_of(g)) {
                    failed.insert(g.to_string(), code);
                }
            }
            let mut c = self.lock();
            c.take_consumer_records_in(|p| check_in(&owned, p).is_ok())
        };
        if records.is_empty() {
            return failed;
        }
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        let max = offsets_max_message_bytes(state);
        let group_of = |r: &Record| {
            records::decode_key(r.key.clone())
                .map(|k| k.group().to_string())
                .unwrap_or_default()
        };
        for (p, recs) in by_partition {
            // A group with a record the log would refuse even alone in a batch (larger than a lowered
            // max.message.bytes) is held back before the write: its records stay pending and its callers are
            // answered, while the groups beside it are written.
            let too_large: HashSet<String> = recs
                .iter()
                .filter(|r| BATCH_OVERHEAD + record_bytes(&r.key, r.value.as_ref()) > max)
                .map(group_of)
                .collect();
            let (held, recs): (Vec<Record>, Vec<Record>) = if too_large.is_empty() {
                (Vec::new(), recs)
            } else {
                recs.into_iter()
                    .partition(|r| too_large.contains(&group_of(r)))
            };
            if !held.is_empty() {
                // The clock retries every tick: only a caller's flush is worth a warning.
                if callers.is_empty() {
                    tracing::debug!(partition = p, groups = ?too_large, max, "group records too large to write");
                } else {
                    tracing::warn!(
                        partition = p,
                        groups = ?too_large,
                        max,
                        "group records larger than __consumer_offsets' max.message.bytes are not written"
                    );
                }
                self.lock().not_written(&held);
                for g in too_large {
                    failed.insert(
                        g,
                        kafka_protocol::error::ResponseError::UnknownServerError.code(),
                    );
                }
            }
            if recs.is_empty() {
                continue;
            }
            let written = match ensure_offsets_topic(state).await {
                Ok(()) => append_split(state, p, &recs, max).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, partition = p, "writing consumer group state failed");
                self.lock().not_written(&recs);
                let code = write_error_code(&e);
                for r in &recs {
                    failed.entry(group_of(r)).or_insert(code);
                }
            }
        }
        failed
    }

    /// [`Groups::persist`] with the write lock held: each partition's records as one batch when `atomic`,
    /// else in batches within `max.message.bytes`.
    async fn append_locked(
        &self,
        state: &BrokerState,
        records: Vec<Record>,
        atomic: bool,
    ) -> Result<()> {
        ensure_offsets_topic(state).await?;
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        for (p, recs) in by_partition {
            if atomic {
                let pairs: Vec<(Bytes, Option<Bytes>)> =
                    recs.into_iter().map(|r| (r.key, r.value)).collect();
                append_internal(state, OFFSETS_TOPIC, p, &pairs, None).await?;
            } else {
                append_split(state, p, &recs, offsets_max_message_bytes(state)).await?;
            }
        }
        Ok(())
    }
}

/// How a coordinator writes to its internal topic: one batch of `records` (transactional when it carries a
/// producer) appended to `topic`-`partition` through the leader's append path (refused on a follower), answered
/// once it is durable here and on every in-sync replica (Kafka's coordinators write with acks=all), so that a
/// failover never loses what was acknowledged.
pub async fn append_internal(
    state: &BrokerState,
    topic: &str,
    partition: i32,
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
) -> Result<()> {
    let part = hosted(state, topic, partition)?;
    let info = part.append_from(encode_batch(records, producer)?, Origin::Coordinator)?;
    wait_acknowledged(state, &part, info.last_offset + 1, info.leader_epoch).await
}

/// The `max.message.bytes` of `__consumer_offsets` (its topic config, else the broker's `message.max.bytes`):
/// no batch the coordinator writes there may be larger.
pub(crate) fn offsets_max_message_bytes(state: &BrokerState) -> usize {
    // The limit the log enforces: the topic's override, else the dynamic broker value, else the static one.
    let s = state.meta.state();
    s.topics
        .get(OFFSETS_TOPIC)
        .map_or(state.config.message_max_bytes, |t| {
            state
                .config
                .log_config_dynamic(&s.broker_configs, &t.configs)
                .max_message_bytes
        })
}

/// The fixed part of a v2 record batch (its header), which [`encode_batch`] writes once per batch.
const BATCH_OVERHEAD: usize = 61;

/// What one record adds to a batch of [`encode_batch`], at most: its key and value, and its framing (length,
/// attributes, timestamp and offset deltas, key and value lengths, header count: varints of at most 32 bytes
/// together). Computed, not encoded, so that splitting costs nothing per record.
fn record_size(record: &(Bytes, Option<Bytes>)) -> usize {
    record_bytes(&record.0, record.1.as_ref())
}

/// [`record_size`] of a key and value.
fn record_bytes(key: &Bytes, value: Option<&Bytes>) -> usize {
    key.len() + value.map_or(0, Bytes::len) + 32
}

/// Splits `records` into consecutive groups whose encoded batch stays within `max` bytes (a record too large
/// on its own gets a batch of its own, which the log then refuses).
fn split_batches(records: &[(Bytes, Option<Bytes>)], max: usize) -> Vec<&[(Bytes, Option<Bytes>)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, BATCH_OVERHEAD);
    for (i, record) in records.iter().enumerate() {
        let len = record_size(record);
        if i > start && size + len > max {
            out.push(&records[start..i]);
            (start, size) = (i, BATCH_OVERHEAD);
        }
        size += len;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// Appends `records` to `__consumer_offsets`-`partition` in batches of at most `max` bytes, in order, each
/// durable before the next is written.
async fn append_split(
    state: &BrokerState,
    partition: i32,
    records: &[Record],
    max: usize,
) -> Result<()> {
    let pairs = last_of_each_key(records);
    for batch in split_batches(&pairs, max) {
        append_internal(state, OFFSETS_TOPIC, partition, batch, None).await?;
    }
    Ok(())
}

/// The last record of each key, in the order of those last records: should a later batch of a split write fail
/// after an earlier one is durable, no key is left at an older value of the write (which a failover would load
/// and compaction keep).
fn last_of_each_key(records: &[Record]) -> Vec<(Bytes, Option<Bytes>)> {
    let mut seen: HashSet<&Bytes> = HashSet::new();
    let mut pairs: Vec<(Bytes, Option<Bytes>)> = records
        .iter()
        .rev()
        .filter(|r| seen.insert(&r.key))
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    pairs.reverse();
    pairs
}

/// A coordinator's internal partition, online here (NOT_COORDINATOR when it is not).
fn hosted(state: &BrokerState, topic: &str, partition: i32) -> Result<Arc<Partition>> {
    state
        .partitions
        .online(topic, partition)?
        .ok_or_else(|| Error::NotCoordinator(format!("{topic}-{partition} is not hosted here")))
}

/// Waits until everything below `offset`, written in leader epoch `epoch`, is fsynced here and replicated to the
/// in-sync replicas (at least `min.insync.replicas` of them), bounded by [`WRITE_TIMEOUT`].
pub async fn wait_acknowledged(
    state: &BrokerState,
    part: &Partition,
    offset: i64,
    epoch: i32,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
    wait_acknowledged_by(state, part, offset, epoch, deadline).await
}

/// [`wait_acknowledged`] with a deadline shared by several waits.
pub async fn wait_acknowledged_by(
    state: &BrokerState,
    part: &Partition,
    offset: i64,
    epoch: i32,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let timeout = WRITE_TIMEOUT;
    let min_isr: usize = state
        .meta
        .state()
        .topics
        .get(&part.topic)
        .and_then(|t| t.configs.get("min.insync.replicas").cloned())
        .or_else(|| state.config.props.get("min.insync.replicas").cloned())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    match tokio::time::timeout_at(deadline, part.wait_durable(offset)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Timeout(format!(
                "{}-{}: fsync did not finish within {timeout:?}",
                part.topic, part.index
            )))
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    part.wait_replicated(offset, epoch, min_isr, left).await
}

/// One uncompressed batch of key/value records, transactional when it carries a producer.
pub fn encode_batch(
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
) -> Result<Bytes> {
    let now = now_ms();
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let krecs: Vec<KRecord> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| KRecord {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while offset - sequence stays the same; the batch's
            // base sequence is the first record's, -1 (no sequence), as Kafka's coordinators write.
            sequence: (i as i32).wrapping_sub(1),
            timestamp: now,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &krecs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| Error::Internal(format!("encoding internal records: {e}")))?;
    Ok(buf.freeze())
}

pub fn consumer_config(c: &BrokerConfig) -> ConsumerConfig {
    let int = |k: &str, d: i64| -> i64 { c.props.get(k).and_then(|v| v.parse().ok()).unwrap_or(d) };
    ConsumerConfig {
        session_timeout_ms: int("group.consumer.session.timeout.ms", 45_000),
        heartbeat_interval_ms: int("group.consumer.heartbeat.interval.ms", 5_000) as i32,
        // -1 is Kafka 4.1's adaptive linger (a batch is written as soon as the coordinator has nothing more
        // to add to it): no fixed delay.
        append_linger_ms: int("group.coordinator.append.linger.ms", 5).max(0) as u64,
        // __consumer_offsets is created without its own max.message.bytes: the broker's applies.
        max_record_bytes: c.message_max_bytes,
    }
}

/// Creates `__consumer_offsets` (compacted, internal) when it does not exist yet. Like Kafka, this happens
/// when groups are first used (FindCoordinator, or the first write), not at start-up.
pub async fn ensure_offsets_topic(state: &BrokerState) -> Result<()> {
    let partitions = group_config(&state.config).offsets_partitions;
    ensure_internal_topic(state, OFFSETS_TOPIC, partitions, "offsets.topic").await
}

/// Creates a compacted internal topic (`__consumer_offsets`, `__transaction_state`) unless it exists; its
/// replication factor and segment size come from `<prefix>.replication.factor` / `<prefix>.segment.bytes`.
///
/// As in Kafka, the replication factor is honoured exactly: while fewer brokers are live than it asks for, the
/// topic is not created and the caller answers COORDINATOR_NOT_AVAILABLE (clients retry). Fjord's default for
/// both factors is 1 (Kafka's is 3, which its sample single-node configuration overrides to 1), so that a
/// single `fjord start` works out of the box; a cluster sets them to 3.
pub async fn ensure_internal_topic(
    state: &BrokerState,
    name: &str,
    partitions: i32,
    prefix: &str,
) -> Result<()> {
    let meta = state.meta.state();
    if meta.topics.contains_key(name) {
        return Ok(());
    }
    let key = format!("{prefix}.replication.factor");
    let rf: i16 = state
        .config
        .props
        .get(&key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let live = meta.live_brokers().len();
    if live < rf as usize {
        return Err(Error::CoordinatorNotAvailable(format!(
            "cannot create {name} yet: {key}={rf} but only {live} broker(s) are live"
        )));
    }
    let assignments = crate::admin::assign_replicas(&meta, 0, partitions.max(1), rf);
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    let seg = state
        .config
        .props
        .get(&format!("{prefix}.segment.bytes"))
        .cloned()
        .unwrap_or_else(|| "104857600".into());
    configs.insert("segment.bytes".to_string(), seg);
    if let Some(min_isr) = state.config.props.get(&format!("{prefix}.min.isr")) {
        configs.insert("min.insync.replicas".to_string(), min_isr.clone());
    }
    let cmd = Command::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        assignments,
        configs,
        internal: true,
    };
    match state.meta.propose(cmd).await? {
        CommandResult::Ok | CommandResult::TopicAlreadyExists => {}
        other => return Err(Error::Internal(format!("creating {name}: {other:?}"))),
    }
    tracing::info!(partitions, replication_factor = rf, "created {name}");
    state.sync_partitions()
}

/// At start-up: every partition of an internal topic that the metadata says this broker leads must be able to
/// serve. One in an offline log directory stops the start (the error names it) rather than leave its
/// coordinator without the state it holds; later, a partition whose directory fails is resigned from instead,
/// and another replica's broker takes over.
pub fn check_loadable(state: &BrokerState, topic: &str) -> Result<()> {
    let meta = state.meta.state();
    let Some(t) = meta.topics.get(topic) else {
        return Ok(());
    };
    for (p, pm) in t.partitions.iter().enumerate() {
        if pm.leader == state.config.node_id {
            state.partitions.online(topic, p as i32)?;
        }
    }
    Ok(())
}

/// After a metadata sync: unloads the `__consumer_offsets` partitions no longer led here and marks the newly
/// led ones for [`run_loader`]. Returns whether a load is waiting.
pub fn follow_leadership(state: &BrokerState) -> bool {
    let groups = &state.groups;
    let changes = groups
        .owned
        .follow(state, OFFSETS_TOPIC, |p| groups.unload(p));
    for (p, epoch) in &changes.elected {
        tracing::info!(
            partition = p,
            epoch,
            "group coordinator elected for a __consumer_offsets partition: loading it"
        );
    }
    !changes.elected.is_empty()
}

/// Loads every `__consumer_offsets` partition waiting for it (see [`Ownership`]). Returns how many records were
/// replayed.
pub fn load_pending(state: &BrokerState) -> Result<usize> {
    let mut total = 0;
    for (p, epoch) in state.groups.owned.loading() {
        total += load_partition(state, p, epoch)?;
    }
    Ok(total)
}

/// Replays `__consumer_offsets` partition `p` (led here at `epoch`) up to its log end into a fresh coordinator,
/// then hands its groups to the live one if the partition is still loading at that epoch. Transactional offset
/// commits are resolved by the markers found after them; those still open stay pending.
pub fn load_partition(state: &BrokerState, p: i32, epoch: i32) -> Result<usize> {
    let started = std::time::Instant::now();
    let mut loaded = GroupCoordinator::with_consumer_config(
        group_config(&state.config),
        consumer_config(&state.config),
    );
    let mut pending: HashMap<i64, Vec<(Bytes, Option<Bytes>)>> = HashMap::new();
    let now = now_ms();
    let mut count = 0usize;
    let Some(part) = state.partitions.online(OFFSETS_TOPIC, p)? else {
        return Ok(0);
    };
    blocking(|| {
        replay_partition(state, &part, |r| {
            if r.control {
                // A transaction marker: the producer's pending offsets in this partition resolve.
                let commit = r.key.as_deref().is_some_and(|k| k.len() >= 4 && k[3] == 1);
                for (key, value) in pending.remove(&r.producer_id).unwrap_or_default() {
                    if commit {
                        loaded.replay(key, value, now).map_err(|e| e.to_string())?;
                    }
                }
                return Ok(());
            }
            let Some(key) = r.key else { return Ok(()) };
            if r.transactional {
                pending
                    .entry(r.producer_id)
                    .or_default()
                    .push((key, r.value));
                return Ok(());
            }
            loaded
                .replay(key, r.value, now)
                .map_err(|e| e.to_string())?;
            count += 1;
            Ok(())
        })
    })?;
    let groups = &state.groups;
    let installed = groups.owned.finish_load(p, epoch, || {
        let mut c = groups.lock();
        // Anything a request left here for this partition before it was led again goes first.
        c.unload_partition(p);
        c.absorb(loaded);
        drop(c);
        groups.lock_pending().retain(|_, list| {
            list.retain(|x| x.partition != p);
            !list.is_empty()
        });
        for (producer_id, list) in pending {
            for (key, value) in list {
                groups.add_pending(producer_id, p, key, value);
            }
        }
    });
    if installed {
        tracing::info!(partition = p, epoch, records = count, elapsed = ?started.elapsed(),
            "group coordinator loaded a __consumer_offsets partition");
    }
    Ok(count)
}

/// Loads newly led `__consumer_offsets` and `__transaction_state` partitions whenever a metadata sync found some
/// (Kafka's coordinator load on election), until shutdown. A transaction left half-ended by the previous
/// coordinator is finished as soon as its partition is loaded.
pub async fn run_loader(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = state.coordinator_loads.notified() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = load_pending(&state) {
            tracing::error!(error = %e, "loading __consumer_offsets failed");
        }
        match crate::transactions::load_pending(&state) {
            Ok(0) => {}
            Ok(_) => {
                let st = state.clone();
                tokio::spawn(async move { st.transactions.abort_timed_out(&st).await });
            }
            Err(e) => tracing::error!(error = %e, "loading __transaction_state failed"),
        }
    }
}

/// Feeds every record of one partition of an internal topic to `f`, in log order up to the log end (a
/// coordinator's load: on its new leader everything in the log is what the followers will hold). `f` answers
/// `Err` for a record it cannot read.
///
/// A load never stops on a record: a batch that does not decode and a record `f` refuses are skipped with an
/// error naming topic, partition and offset, and counted in `fjord_internal_records_skipped_total{topic}`.
/// Only I/O errors abort the load. Nothing is decompressed here without a bound: the broker writes these topics
/// uncompressed, and a compressed batch goes through fjord-log's capped decoder (a bomb is skipped, never
/// inflated).
pub fn replay_partition(
    state: &BrokerState,
    part: &Partition,
    mut f: impl FnMut(KRecord) -> std::result::Result<(), String>,
) -> Result<()> {
    let topic = part.topic.as_str();
    let p = part.index;
    let skipped = state
        .metrics
        .internal_records_skipped
        .get_or_create(&crate::metrics::Metrics::topic(topic));
    let skip = |offset: i64, error: &str| {
        tracing::error!(
            topic,
            partition = p,
            offset,
            error,
            "skipping an unreadable record of an internal topic"
        );
        skipped.inc();
    };
    let mut offset = part.offsets().0;
    let end = part.log_end_offset();
    while offset < end {
        let records = part.read_to_log_end(offset, 1 << 20)?;
        let mut next = offset;
        let mut pos = 0usize;
        for b in fjord_log::batch_headers(&records) {
            let Some(stop) = pos.checked_add(b.size).filter(|e| *e <= records.len()) else {
                // A length beyond what the log returned: nothing after it in this partition can be framed.
                skip(b.base_offset, "batch length runs past the data read");
                break;
            };
            let batch = records.slice(pos..stop);
            pos = stop;
            next = b.last_offset + 1;
            match fjord_log::decode_records_bounded(&mut batch.clone())
                .map_err(|e| format!("undecodable batch: {e}"))
            {
                Ok(set) => {
                    for r in set.records.into_iter().filter(|r| r.offset >= offset) {
                        let at = r.offset;
                        if let Err(e) = f(r) {
                            skip(at, &e);
                        }
                    }
                }
                Err(e) => skip(b.base_offset, &e),
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(())
}

/// Topics were deleted: the groups served here forget their committed offsets (tombstones written).
pub async fn forget_topics(state: &BrokerState, topics: &[String]) {
    let records = {
        let owned = state.groups.owned.lock();
        let mut c = state.groups.lock();
        for t in topics {
            c.forget_topic(t);
        }
        let mut records = c.take_records();
        records.retain(|r| check_in(&owned, r.partition).is_ok());
        records
    };
    if let Err(e) = state.groups.persist(state, records).await {
        tracing::error!(error = %e, "removing committed offsets of deleted topics failed");
    }
}

/// Advances the coordinator's clock and persists what changed, until shutdown.
pub async fn run_clock(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let records = {
            let owned = state.groups.owned.lock();
            let mut c = state.groups.lock();
            c.tick(now_ms());
            let mut records = c.take_records();
            // Only partitions led and loaded here are written (a loading one's groups are not in `c` yet).
            records.retain(|r| check_in(&owned, r.partition).is_ok());
            records
        };
        if let Err(e) = state.groups.persist(&state, records).await {
            tracing::error!(error = %e, "persisting group state failed");
        }
        // Expired KIP-848 members, and writes that failed before (each failure is logged where it happens).
        let _ = state.groups.flush_consumer_groups(&state, &[]).await;
    }
}

/// DeleteGroups for `names`, as the request handler and the dashboard run it: each empty group and its committed
/// offsets are deleted (tombstones in `__consumer_offsets`, durable before this returns); one code per name, in
/// order: NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND for none, NOT_COORDINATOR /
/// COORDINATOR_LOAD_IN_PROGRESS for a group served elsewhere, the write's failure when its tombstones could not
/// be written.
pub async fn delete_groups(state: &BrokerState, names: &[&str]) -> Vec<i16> {
    let groups = &state.groups;
    let mut codes: Vec<i16> = Vec::with_capacity(names.len());
    let mut records = Vec::new();
    for g in names {
        match groups.coordinator_for(state, g) {
            Ok(mut c) => {
                codes.push(c.delete(g));
                records.extend(c.take_records());
            }
            Err(code) => codes.push(code),
        }
    }
    if let Err(e) = groups.persist(state, records).await {
        tracing::error!(error = %e, "persisting group deletion failed");
        let failed = write_error_code(&e);
        for c in codes.iter_mut().filter(|c| **c == 0) {
            *c = failed;
        }
    } else {
        // The tombstones of deleted KIP-848 groups: a group fails only when its own write did.
        let failed = groups.flush_consumer_groups(state, names).await;
        for (c, g) in codes.iter_mut().zip(names) {
            if *c == 0 {
                if let Some(code) = failed.get(*g) {
                    *c = *code;
                }
            }
        }
    }
    codes
}

/// Commits `offsets` for a group without active members as an admin tool does (OffsetCommit with generation -1
/// and no member id, the path of `kafka-consumer-groups --reset-offsets`): durable in `__consumer_offsets`,
/// then visible. A group with members is refused with the coordinator's code, so is a group served elsewhere.
pub async fn reset_offsets(
    state: &BrokerState,
    group: &str,
    offsets: Vec<((String, i32), i64)>,
) -> Result<(), i16> {
    state.groups.ensure_served(state, group).await?;
    let now = crate::now_ms();
    state
        .groups
        .coordinator_for(state, group)
        .and_then(|mut c| c.check_commit(group, -1, "", None, false, now))?;
    let valid: Vec<((String, i32), fjord_coordinator::CommittedOffset)> = offsets
        .into_iter()
        .map(|(tp, offset)| {
            let committed = fjord_coordinator::CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: now,
            };
            (tp, committed)
        })
        .collect();
    let records = state.groups.lock().commit_records(group, &valid);
    state
        .groups
        .persist_commit(state, records)
        .await
        .map_err(|e| commit_error_code(&e))?;
    if let Ok(mut c) = state.groups.coordinator_for(state, group) {
        c.apply_commit(group, valid, now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_group_records_are_split_into_batches_within_max_message_bytes() {
        let rec = |n: usize| (Bytes::from(vec![1u8; 10]), Some(Bytes::from(vec![2u8; n])));
        let records: Vec<(Bytes, Option<Bytes>)> = (0..50).map(|i| rec(100 + i)).collect();
        let max = 1_000;
        let batches = split_batches(&records, max);
        assert!(batches.len() > 1, "{} batches", batches.len());
        assert_eq!(batches.concat(), records, "every record, in order");
        for b in &batches {
            let encoded = encode_batch(b, None).unwrap();
            assert!(
                encoded.len() <= max,
                "{} bytes for {} records",
                encoded.len(),
                b.len()
            );
        }
        // A record too large on its own is alone in its batch; the others are unaffected.
        let mut with_big = records.clone();
        with_big.insert(3, rec(5_000));
        let batches = split_batches(&with_big, max);
        assert!(batches.iter().any(|b| b.len() == 1 && b[0] == with_big[3]));
        assert_eq!(batches.concat(), with_big);
        assert!(split_batches(&[], max).is_empty());
    }

    #[test]
    fn a_split_write_keeps_only_the_last_record_of_each_key() {
        let r = |k: &'static str, v: Option<&'static str>| Record {
            partition: 0,
            key: Bytes::from_static(k.as_bytes()),
            value: v.map(|v| Bytes::from_static(v.as_bytes())),
        };
        let records = [
            r("a", Some("1")),
            r("b", Some("1")),
            r("a", None),
            r("c", Some("1")),
            r("b", Some("2")),
        ];
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(
            last_of_each_key(&records),
            vec![
                (b("a"), None),
                (b("c"), Some(b("1"))),
                (b("b"), Some(b("2")))
            ]
        );
    }

    #[test]
    fn internal_records_are_encoded_as_one_batch_without_a_sequence() {
        let records: Vec<(Bytes, Option<Bytes>)> = (0..5u8)
            .map(|i| (Bytes::from(vec![i; 3]), Some(Bytes::from(vec![i; 7]))))
            .collect();
        for producer in [None, Some((7, 2))] {
            let b = encode_batch(&records, producer).unwrap();
            // One batch: its length field covers the whole buffer (the encoder framed each record alone when
            // their sequences did not follow their offsets).
            let len = i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
            assert_eq!(12 + len, b.len(), "{producer:?}");
            let base_sequence = i32::from_be_bytes(b[53..57].try_into().unwrap());
            assert_eq!(base_sequence, -1, "{producer:?}");
            let last_offset_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            assert_eq!(last_offset_delta, 4);
        }
    }
}
