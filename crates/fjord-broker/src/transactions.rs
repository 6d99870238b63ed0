//! The broker side of the transaction coordinator (KIP-98): owns one [`TxnMetadata`] per transactional id,
//! makes every transition durable in the compacted `__transaction_state` topic before acting on it, writes
//! the commit/abort markers to every partition of a transaction, aborts transactions that outlive their
//! timeout, and finishes, after a crash, transactions whose end was durable but whose markers were not all
//! written.
//!
//! Each transactional id has its own async mutex, held for a whole operation (persist, markers, persist), so
//! operations on one id are serialized and different ids never wait on each other.
//!
//! **Ownership follows leadership**, as for groups ([`crate::groups::Ownership`]): this broker coordinates the
//! transactional ids whose `__transaction_state` partition it leads, loads a partition when it becomes its
//! leader (finishing right after the transactions the previous coordinator left in PrepareCommit/PrepareAbort)
//! and forgets its ids when it stops leading it. Requests for other ids answer NOT_COORDINATOR, and
//! COORDINATOR_LOAD_IN_PROGRESS while their partition loads. The coordinator epoch written into markers is the
//! leader epoch of the transaction's `__transaction_state` partition (Kafka's), so a partition can tell the
//! markers of a newer coordinator from those of a deposed one.
//!
//! **Invariant:** a transaction's markers are written only after its PrepareCommit/PrepareAbort record is
//! durable, and it is reported complete only after every marker is durable; an EndTxn is answered after both.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_coordinator::records::partition_for;
use fjord_coordinator::txn::{self, EndAction, TxnError, TxnMetadata, TxnState};
use fjord_log::ControlType;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::groups::{
    append_internal, catch_up, ensure_internal_topic, ensure_offsets_topic, replay_partition,
    wait_acknowledged_by, Ownership, OFFSETS_TOPIC,
};
use crate::{blocking, now_ms, BrokerState, Error, Result};

pub const TXN_TOPIC: &str = "__transaction_state";

#[derive(Clone, Debug)]
pub struct TxnConfig {
    pub max_timeout_ms: i32,
    pub partitions: i32,
    /// How often timed-out transactions are looked for.
    pub cleanup_interval_ms: u64,
    /// `transactional.id.expiration.ms`: idle transactional ids are forgotten after this long.
    pub id_expiration_ms: i64,
}

pub fn txn_config(c: &BrokerConfig) -> TxnConfig {
    let int = |k: &str, d: i64| -> i64 { c.props.get(k).and_then(|v| v.parse().ok()).unwrap_or(d) };
    TxnConfig {
        max_timeout_ms: int("transaction.max.timeout.ms", 900_000) as i32,
        partitions: int("transaction.state.log.num.partitions", 50) as i32,
        cleanup_interval_ms: int(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            10_000,
        )
        .max(10) as u64,
        id_expiration_ms: int("transactional.id.expiration.ms", 604_800_000),
    }
}

/// Why a transactional request failed.
#[derive(Debug, thiserror::Error)]
pub enum TxnFailure {
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error(transparent)]
    Broker(#[from] Error),
    /// The transactional id is not served here (now): NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS.
    #[error("not the coordinator of this transactional id (error {0})")]
    Coordinator(i16),
}

impl TxnFailure {
    /// The Kafka error code. A failed write says NOT_COORDINATOR when this broker stopped leading the
    /// transaction's partition, else COORDINATOR_NOT_AVAILABLE; clients retry both (Kafka's mapping).
    pub fn code(&self) -> i16 {
        match self {
            TxnFailure::Txn(e) => e.code(),
            TxnFailure::Broker(e) => crate::groups::write_error_code(e),
            TxnFailure::Coordinator(code) => *code,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<TxnMetadata>>>;

/// An open transaction's producer id, epoch and partitions.
type OpenTxn = (i64, i16, std::collections::BTreeSet<(String, i32)>);

pub struct Transactions {
    /// The `__transaction_state` partitions led here; only their transactional ids are served.
    pub owned: Ownership,
    slots: Mutex<HashMap<String, Slot>>,
    /// The open transactions (producer id, epoch, partitions) by transactional id, readable without waiting
    /// on a slot: Produce checks transactional batches against it.
    open: Mutex<HashMap<String, OpenTxn>>,
    /// Each transactional id's current producer id and epoch (any state), so Produce can tell a fenced
    /// instance's batch (INVALID_PRODUCER_EPOCH) from one outside any transaction (INVALID_TXN_STATE).
    current: Mutex<HashMap<String, (i64, i16)>>,
    /// Mirrors `open.len()` for /metrics.
    ongoing: prometheus_client::metrics::gauge::Gauge,
    pub config: TxnConfig,
}

impl Transactions {
    pub fn new(config: TxnConfig, ongoing: prometheus_client::metrics::gauge::Gauge) -> Self {
        Self {
            owned: Ownership::default(),
            slots: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            ongoing,
            config,
        }
    }

    /// Makes `m` the transaction's current (durable) state.
    fn install(&self, slot: &mut Option<TxnMetadata>, m: TxnMetadata) {
        let open = (m.state == TxnState::Ongoing)
            .then(|| (m.producer_id, m.producer_epoch, m.partitions.clone()));
        self.set_open(&m.transactional_id, open);
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                m.transactional_id.clone(),
                (m.producer_id, m.producer_epoch),
            );
        *slot = Some(m);
    }

    /// Drops an id no longer coordinated here (expired, or its partition moved away) from both views.
    fn forget(&self, id: &str) {
        self.set_open(id, None);
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Updates the open-transaction view (and its gauge) for one transactional id.
    fn set_open(&self, id: &str, txn: Option<OpenTxn>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match txn {
            Some(t) => {
                open.insert(id.to_string(), t);
            }
            None => {
                open.remove(id);
            }
        }
        self.ongoing.set(open.len() as i64);
    }

    /// Produce-side verification (the idea of KIP-890 part 1, done in process): may this producer write
    /// transactional data to this partition now? Only if the partition was added to its open transaction;
    /// otherwise a late or stray batch would open a transaction no marker will ever close. When another broker
    /// coordinates the id, the produce path asks it instead ([`verify_remote`], KIP-890's verification request)
    /// and this answers true.
    pub fn may_write(
        &self,
        state: &BrokerState,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), (kafka_protocol::error::ResponseError, String)> {
        use kafka_protocol::error::ResponseError as E;
        if !self.coordinates_here(state, id) {
            return Ok(());
        }
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(id).is_some_and(|(pid, e, parts)| {
            *pid == producer_id && *e == epoch && parts.contains(&(topic.to_string(), partition))
        }) {
            return Ok(());
        }
        drop(open);
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied();
        match current {
            // As a Kafka partition answers a batch older than the producer's epoch there.
            Some((pid, e)) if pid == producer_id && e > epoch => Err((
                E::InvalidProducerEpoch,
                format!(
                    "producer {producer_id} epoch {epoch} was fenced by a newer instance of {id} (epoch {e})"
                ),
            )),
            _ => Err((
                E::InvalidTxnState,
                format!(
                    "{topic}-{partition} is not part of an open transaction of producer {producer_id} epoch {epoch}"
                ),
            )),
        }
    }

    /// The `__transaction_state` partition of a transactional id (Kafka's `partitionFor` over the topic's
    /// partitions; `None` before the topic exists).
    pub fn partition_of(state: &BrokerState, id: &str) -> Option<i32> {
        let n = state.meta.state().topics.get(TXN_TOPIC)?.partitions.len() as i32;
        Some(partition_for(id, n.max(1)))
    }

    /// Whether this broker leads (or is loading) the id's partition.
    pub fn coordinates_here(&self, state: &BrokerState, id: &str) -> bool {
        Self::partition_of(state, id).is_some_and(|p| self.owned.lock().contains_key(&p))
    }

    /// Checks that this broker serves `id`: Ok(coordinator epoch), or the code to answer. Before
    /// `__transaction_state` exists no transactional id exists anywhere; the empty state answers (with epoch 0).
    pub fn check(&self, state: &BrokerState, id: &str) -> Result<i32, TxnFailure> {
        match Self::partition_of(state, id) {
            None => Ok(0),
            Some(p) => {
                catch_up(state, &self.owned, TXN_TOPIC, p);
                self.owned.check(p).map_err(TxnFailure::Coordinator)
            }
        }
    }

    /// The coordinator epoch for the markers of `id`'s transaction: the leader epoch of its partition, which
    /// must be led and loaded here.
    fn epoch_for(&self, state: &BrokerState, id: &str) -> Result<i32> {
        self.check(state, id).map_err(|_| {
            Error::NotCoordinator(format!(
                "broker {} no longer coordinates transactional id {id}",
                state.config.node_id
            ))
        })
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, id: &str) -> Slot {
        self.lock_slots().entry(id.to_string()).or_default().clone()
    }

    fn existing(&self, id: &str) -> Option<Slot> {
        self.lock_slots().get(id).cloned()
    }

    /// Locks the transactional id's slot (creating it with `create`). A slot removed by expiry while this
    /// waited is not used: the lookup is retried, so no two slots ever exist for one id.
    async fn lock_slot(
        &self,
        id: &str,
        create: bool,
    ) -> Option<tokio::sync::OwnedMutexGuard<Option<TxnMetadata>>> {
        loop {
            let slot = if create {
                self.slot(id)
            } else {
                self.existing(id)?
            };
            let g = slot.clone().lock_owned().await;
            if self
                .lock_slots()
                .get(id)
                .is_some_and(|s| Arc::ptr_eq(s, &slot))
            {
                return Some(g);
            }
        }
    }

    fn all_slots(&self) -> Vec<Slot> {
        self.lock_slots().values().cloned().collect()
    }

    /// Appends the transaction's state to `__transaction_state` and waits until it is durable.
    async fn persist(&self, state: &BrokerState, m: &TxnMetadata) -> Result<()> {
        let key = txn::encode_key(&m.transactional_id);
        self.append_state(state, &m.transactional_id, key, Some(txn::encode_value(m)))
            .await
    }

    /// Appends one `__transaction_state` record (a null value is a tombstone) and waits until it is durable.
    async fn append_state(
        &self,
        state: &BrokerState,
        id: &str,
        key: bytes::Bytes,
        value: Option<bytes::Bytes>,
    ) -> Result<()> {
        ensure_txn_topic(state).await?;
        let n = state
            .meta
            .state()
            .topics
            .get(TXN_TOPIC)
            .map_or(1, |t| t.partitions.len() as i32);
        let p = partition_for(id, n);
        append_internal(state, TXN_TOPIC, p, &[(key, value)], None).await
    }

    /// Writes the markers of `m`'s transaction to each of its partitions and waits until they are durable.
    async fn write_markers(
        &self,
        state: &BrokerState,
        m: &TxnMetadata,
        commit: bool,
    ) -> Result<()> {
        let kind = if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        let coordinator_epoch = self.epoch_for(state, &m.transactional_id)?;
        let meta = state.meta.state();
        let mut written = Vec::with_capacity(m.partitions.len());
        // Partitions led by other brokers, by leader: their markers go out as WriteTxnMarkers.
        let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, p) in &m.partitions {
            let Some(pm) = meta
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(*p as usize))
            else {
                // The topic was deleted while the transaction was open: nothing left to mark.
                tracing::warn!(transactional_id = %m.transactional_id, %topic, partition = p, "partition of a transaction is gone; no marker written");
                continue;
            };
            let local = state
                .partitions
                .get(topic, *p)
                .filter(|part| part.is_leader());
            match local {
                Some(part) => {
                    let (offset, epoch) = part.append_marker(
                        m.producer_id,
                        m.producer_epoch,
                        kind,
                        coordinator_epoch,
                    )?;
                    written.push((part, offset, epoch));
                }
                None => remote
                    .entry(pm.leader)
                    .or_default()
                    .push((topic.clone(), *p)),
            }
        }
        let remote_done = async {
            for (leader, partitions) in remote {
                send_markers(state, m, commit, coordinator_epoch, leader, partitions).await?;
            }
            Ok::<(), Error>(())
        };
        // Appending all first lets the fsyncs of partitions sharing nothing overlap with the appends. A marker
        // counts once every in-sync replica has it (Kafka writes markers with acks=all), so a failover of the
        // partition never loses it.
        let local_done = async {
            // One deadline for all: the waits overlap, so the slowest bounds them.
            let deadline = tokio::time::Instant::now() + crate::groups::WRITE_TIMEOUT;
            for (part, offset, epoch) in written {
                wait_acknowledged_by(state, &part, offset + 1, epoch, deadline).await?;
                if part.topic == OFFSETS_TOPIC {
                    state.groups.complete_txn(m.producer_id, part.index, commit);
                }
            }
            Ok::<(), Error>(())
        };
        let (l, r) = tokio::join!(local_done, remote_done);
        l?;
        r
    }

    /// Ends the open (or half-ended) transaction in `slot`: Prepare record, markers, Complete record.
    async fn finish(
        &self,
        state: &BrokerState,
        slot: &mut Option<TxnMetadata>,
        commit: bool,
    ) -> Result<()> {
        let Some(m) = slot.clone() else {
            return Ok(());
        };
        let prepared = match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => m,
            _ => {
                let p = m.prepared(commit, now_ms());
                self.persist(state, &p).await?;
                self.install(slot, p.clone());
                p
            }
        };
        let commit = prepared.state == TxnState::PrepareCommit;
        self.write_markers(state, &prepared, commit).await?;
        let done = prepared.completed(now_ms());
        self.persist(state, &done).await?;
        let outcome = if commit { "commit" } else { "abort" };
        state
            .metrics
            .transactions_ended
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        tracing::info!(transactional_id = %done.transactional_id, producer_id = done.producer_id, epoch = done.producer_epoch, state = done.state.name(), "transaction ended");
        self.install(slot, done);
        Ok(())
    }

    /// Bumps the epoch of an open transaction's producer (fencing it) and aborts the transaction.
    async fn fence_and_abort(
        &self,
        state: &BrokerState,
        slot: &mut Option<TxnMetadata>,
    ) -> Result<()> {
        if let Some(m) = slot.as_ref() {
            if let Some(bumped) = m.bumped(now_ms()) {
                self.install(slot, bumped);
            }
        }
        self.finish(state, slot, false).await
    }

    /// InitProducerId with a transactional id: a new epoch for the producer (fencing older instances and
    /// aborting their open transaction). `expected` is the (producer id, epoch) a re-initialising producer
    /// presents (KIP-360).
    pub async fn init_producer_id(
        &self,
        state: &BrokerState,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnFailure> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout.into());
        }
        // The id's partition decides who coordinates it, so the topic must exist first (its first use
        // creates it, as Kafka's).
        ensure_txn_topic(state).await?;
        self.check(state, id)?;
        let mut g = self.lock_slot(id, true).await.expect("created");
        if g.is_none() {
            let pid = state.producer_ids.allocate(&state.meta).await?;
            *g = Some(TxnMetadata::new(id, pid, timeout_ms, now_ms()));
        }
        let m = g.clone().expect("set above");
        if let Some((pid, epoch)) = expected {
            if pid != m.producer_id {
                return Err(TxnError::InvalidProducerIdMapping.into());
            }
            let settled = matches!(
                m.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            );
            if epoch != m.producer_epoch {
                if epoch == m.last_producer_epoch && settled {
                    // A retry of a bump that already happened.
                    return Ok((m.producer_id, m.producer_epoch));
                }
                return Err(TxnError::ProducerFenced.into());
            }
        }
        match m.state {
            TxnState::Ongoing | TxnState::PrepareEpochFence => {
                tracing::info!(
                    transactional_id = id,
                    producer_id = m.producer_id,
                    epoch = m.producer_epoch,
                    "new producer instance: aborting the open transaction"
                );
                self.fence_and_abort(state, &mut g).await?;
            }
            TxnState::PrepareCommit => self.finish(state, &mut g, true).await?,
            TxnState::PrepareAbort => self.finish(state, &mut g, false).await?,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {}
            TxnState::Dead => return Err(TxnError::InvalidTxnState.into()),
        }
        let now = now_ms();
        let cur = g.clone().expect("set above");
        let mut next = match cur.bumped(now) {
            Some(n) => n,
            None => {
                let pid = state.producer_ids.allocate(&state.meta).await?;
                cur.with_new_producer_id(pid, now)
            }
        };
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.start_ms = -1;
        self.persist(state, &next).await?;
        let out = (next.producer_id, next.producer_epoch);
        self.install(&mut g, next);
        Ok(out)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the transaction will write to these partitions.
    pub async fn add_partitions(
        &self,
        state: &BrokerState,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnFailure> {
        self.check(state, id)?;
        let mut g = self
            .lock_slot(id, false)
            .await
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let m = g.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        m.check_producer(producer_id, epoch)?;
        if !m.check_add(partitions)? {
            return Ok(());
        }
        let next = m.with_partitions(partitions, now_ms());
        self.persist(state, &next).await?;
        self.install(&mut g, next);
        Ok(())
    }

    /// AddPartitionsToTxn v4+ with verify_only (KIP-890): are these partitions part of the open transaction?
    pub async fn verify(
        &self,
        state: &BrokerState,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), TxnFailure> {
        self.check(state, id)?;
        let g = self
            .lock_slot(id, false)
            .await
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let m = g.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        m.check_producer(producer_id, epoch)?;
        if m.state != TxnState::Ongoing || !m.partitions.contains(partition) {
            return Err(TxnError::InvalidTxnState.into());
        }
        Ok(())
    }

    /// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
    pub async fn add_offsets(
        &self,
        state: &BrokerState,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), TxnFailure> {
        self.check(state, id)?;
        ensure_offsets_topic(state).await?;
        let p = state.groups.partition_of(group);
        self.add_partitions(
            state,
            id,
            producer_id,
            epoch,
            &[(OFFSETS_TOPIC.to_string(), p)],
        )
        .await
    }

    /// EndTxn: commit or abort, answered once every marker is durable.
    pub async fn end_txn(
        &self,
        state: &BrokerState,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), TxnFailure> {
        self.check(state, id)?;
        let mut g = self
            .lock_slot(id, false)
            .await
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let m = g.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        m.check_producer(producer_id, epoch)?;
        // A Prepare state seen here means an earlier attempt failed half-way: finish it.
        let retry = matches!(
            (m.state, commit),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false)
        );
        if retry {
            self.finish(state, &mut g, commit).await?;
            return Ok(());
        }
        match m.begin_end(commit)? {
            EndAction::AlreadyDone => Ok(()),
            EndAction::Complete { commit } => Ok(self.finish(state, &mut g, commit).await?),
        }
    }

    /// Aborts transactions open longer than their timeout (fencing their producer) and retries ends that
    /// failed half-way. Transactions busy with a request are left for the next pass.
    pub async fn abort_timed_out(&self, state: &BrokerState) {
        let now = now_ms();
        for slot in self.all_slots() {
            let Ok(mut g) = slot.try_lock() else {
                continue;
            };
            let Some(m) = g.clone() else { continue };
            if self.check(state, &m.transactional_id).is_err() {
                // Not (or not yet) served here: its coordinator takes care of it.
                continue;
            }
            let result = if m.timed_out(now) {
                tracing::info!(transactional_id = %m.transactional_id, producer_id = m.producer_id, timeout_ms = m.timeout_ms, "aborting a transaction that timed out");
                state.metrics.transactions_timed_out.inc();
                self.fence_and_abort(state, &mut g).await
            } else if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                self.finish(state, &mut g, m.state == TxnState::PrepareCommit)
                    .await
            } else if m
                .last_update_ms
                .saturating_add(self.config.id_expiration_ms)
                <= now
            {
                self.expire(state, &slot, &mut g).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::error!(transactional_id = %m.transactional_id, error = %e, "ending a transaction failed; will retry");
            }
        }
    }

    /// Forgets a transactional id unused for `transactional.id.expiration.ms` (no open transaction): a
    /// tombstone in `__transaction_state`, then the slot goes. Its next InitProducerId starts afresh.
    async fn expire(
        &self,
        state: &BrokerState,
        slot: &Slot,
        g: &mut Option<TxnMetadata>,
    ) -> Result<()> {
        let Some(m) = g.as_ref() else { return Ok(()) };
        tracing::info!(transactional_id = %m.transactional_id, producer_id = m.producer_id, "transactional id expired");
        let key = txn::encode_key(&m.transactional_id);
        self.append_state(state, &m.transactional_id, key, None)
            .await?;
        let id = m.transactional_id.clone();
        *g = None;
        self.forget(&id);
        let mut slots = self.lock_slots();
        if slots.get(&id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(&id);
        }
        Ok(())
    }

    /// Every transaction this broker coordinates, for ListTransactions; COORDINATOR_LOAD_IN_PROGRESS while a
    /// partition led here is still loading (Kafka answers the same, with no list).
    pub async fn snapshot(&self, state: &BrokerState) -> Result<Vec<TxnMetadata>, i16> {
        if self.owned.any_loading() {
            return Err(kafka_protocol::error::ResponseError::CoordinatorLoadInProgress.code());
        }
        let mut out = Vec::new();
        for slot in self.all_slots() {
            if let Some(m) = slot.lock().await.clone() {
                if self.check(state, &m.transactional_id).is_ok() {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// DescribeTransactions of one id: `Ok(None)` when this coordinator does not know it.
    pub async fn describe(
        &self,
        state: &BrokerState,
        id: &str,
    ) -> Result<Option<TxnMetadata>, TxnFailure> {
        self.check(state, id)?;
        Ok(match self.lock_slot(id, false).await {
            Some(g) => g.clone(),
            None => None,
        })
    }

    /// Forgets the transactional ids of a `__transaction_state` partition no longer led here. An operation in
    /// flight on one of them keeps its slot until it ends; its writes fail (this broker no longer leads) and
    /// its client finds the new coordinator.
    fn unload(&self, state: &BrokerState, partition: i32) {
        let n = state
            .meta
            .state()
            .topics
            .get(TXN_TOPIC)
            .map_or(1, |t| t.partitions.len() as i32);
        let gone: Vec<String> = {
            let mut slots = self.lock_slots();
            let gone: Vec<String> = slots
                .keys()
                .filter(|id| partition_for(id, n) == partition)
                .cloned()
                .collect();
            for id in &gone {
                slots.remove(id);
            }
            gone
        };
        for id in &gone {
            self.forget(id);
        }
        tracing::info!(
            partition,
            transactional_ids = gone.len(),
            "transaction coordinator resigned from a __transaction_state partition"
        );
    }
}

/// Sends the markers of `m` for `partitions` to broker `leader` (Kafka's WriteTxnMarkers), retrying for up to
/// [`MARKER_TIMEOUT`] while leadership moves (each retry re-reads the leaders from the metadata).
async fn send_markers(
    state: &BrokerState,
    m: &TxnMetadata,
    commit: bool,
    coordinator_epoch: i32,
    leader: i32,
    partitions: Vec<(String, i32)>,
) -> Result<()> {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
    let deadline = tokio::time::Instant::now() + MARKER_TIMEOUT;
    let mut pending: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::from([(leader, partitions)]);
    let mut last_problem = String::new();
    while !pending.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "transaction markers for producer {} not written within {MARKER_TIMEOUT:?}: {last_problem}",
                m.producer_id
            )));
        }
        let mut retry: Vec<(String, i32)> = Vec::new();
        for (leader, parts) in std::mem::take(&mut pending) {
            let meta = state.meta.state();
            let Some(b) = meta.brokers.get(&leader).filter(|_| meta.is_live(leader)) else {
                last_problem = format!("the leader {leader} is not live");
                retry.extend(parts);
                continue;
            };
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in &parts {
                by_topic.entry(t.as_str()).or_default().push(*p);
            }
            let req =
                WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_transaction_result(commit)
                    .with_coordinator_epoch(coordinator_epoch)
                    .with_topics(
                        by_topic
                            .iter()
                            .map(|(t, ps)| {
                                WritableTxnMarkerTopic::default()
                                    .with_name(TopicName(
                                        kafka_protocol::protocol::StrBytes::from_string(
                                            t.to_string(),
                                        ),
                                    ))
                                    .with_partition_indexes(ps.clone())
                            })
                            .collect(),
                    )]);
            let addr = format!("{}:{}", b.host, b.port);
            // Each exchange is bounded by what is left of the markers' deadline.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let sent = crate::interbroker::request_once(
                &addr,
                format!("fjord-txn-coordinator-{}", state.config.node_id),
                1,
                &req,
                left.max(Duration::from_millis(1)),
            );
            match sent.await {
                Ok(resp) => {
                    for r in resp.markers.iter().flat_map(|x| &x.topics) {
                        for p in &r.partitions {
                            if fenced_marker(p.error_code) {
                                // Retrying cannot help: the partition has seen a newer producer session or
                                // coordinator, so this coordinator's view of the transaction is stale.
                                return Err(Error::NotCoordinator(format!(
                                    "broker {leader} refused the marker for {}-{} of producer {} with error {}: a newer \
                                     producer epoch or transaction coordinator has written there",
                                    r.name.0, p.partition_index, m.producer_id, p.error_code
                                )));
                            }
                            if p.error_code != 0 {
                                last_problem = format!(
                                    "broker {leader} answered {} for {}-{}",
                                    p.error_code, r.name.0, p.partition_index
                                );
                                retry.push((r.name.0.to_string(), p.partition_index));
                            }
                        }
                    }
                }
                Err(e) => {
                    last_problem = format!("broker {leader} at {addr}: {e}");
                    retry.extend(parts);
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = state.meta.sync().await;
        let meta = state.meta.state();
        for (t, p) in retry {
            let Some(pm) = meta
                .topics
                .get(&t)
                .and_then(|x| x.partitions.get(p as usize))
            else {
                continue; // deleted meanwhile
            };
            pending.entry(pm.leader).or_default().push((t, p));
        }
    }
    Ok(())
}

/// KIP-890 part 1 across brokers: asks the coordinator of `id` (the leader of its `__transaction_state`
/// partition) whether `topic-partition` is in the producer's open transaction (AddPartitionsToTxn v4,
/// `verify_only`). Ok when it is; else the Produce error code and why. As Kafka answers a producer: a partition
/// not in the transaction is INVALID_TXN_STATE, the coordinator's own errors keep their code, and a coordinator
/// that is moving, loading, busy or unreachable is NOT_ENOUGH_REPLICAS, which every client retries.
pub async fn verify_remote(
    state: &BrokerState,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> std::result::Result<(), (i16, String)> {
    use kafka_protocol::error::ResponseError as E;
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let retriable = |why: String| {
        (
            E::NotEnoughReplicas.code(),
            format!(
                "unable to verify that {topic}-{partition} was added to the transaction: {why}"
            ),
        )
    };
    let meta = state.meta.state();
    let Some(p) = Transactions::partition_of(state, id) else {
        return Err((
            E::InvalidTxnState.code(),
            format!("transactional id {id} has no open transaction (no {TXN_TOPIC} yet)"),
        ));
    };
    let Some(b) = meta
        .topics
        .get(TXN_TOPIC)
        .and_then(|t| t.partitions.get(p as usize))
        .and_then(|pm| {
            meta.brokers
                .get(&pm.leader)
                .filter(|_| meta.is_live(pm.leader))
        })
    else {
        return Err(retriable(
            "its transaction coordinator is not available".into(),
        ));
    };
    let addr = format!("{}:{}", b.host, b.port);
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![partition])]),
    ]);
    let sent = crate::interbroker::request_once(
        &addr,
        format!("fjord-txn-verifier-{}", state.config.node_id),
        4,
        &req,
        Duration::from_secs(10),
    );
    let resp = sent
        .await
        .map_err(|e| retriable(format!("coordinator {} at {addr}: {e}", b.id)))?;
    let code = if resp.error_code != 0 {
        resp.error_code
    } else {
        resp.results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .map(|r| r.partition_error_code)
            .find(|c| *c != 0)
            .unwrap_or(if resp.results_by_transaction.is_empty() {
                E::UnknownServerError.code()
            } else {
                0
            })
    };
    match code {
        0 => Ok(()),
        c if [
            E::ConcurrentTransactions.code(),
            E::CoordinatorLoadInProgress.code(),
            E::CoordinatorNotAvailable.code(),
            E::NotCoordinator.code(),
        ]
        .contains(&c) =>
        {
            Err(retriable(format!("its coordinator answered error {c}")))
        }
        c if c == E::InvalidTxnState.code() => Err((
            c,
            format!("{topic}-{partition} was not added to the transaction of {id}"),
        )),
        c => Err((c, format!("the transaction coordinator refused: error {c}"))),
    }
}

/// Marker errors no retry can mend (Kafka's coordinator gives up on them too).
fn fenced_marker(code: i16) -> bool {
    use kafka_protocol::error::ResponseError as E;
    code == E::InvalidProducerEpoch.code() || code == E::TransactionCoordinatorFenced.code()
}

/// How long a coordinator keeps retrying the markers of one transaction on other brokers.
const MARKER_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates `__transaction_state` (compacted, internal, `transaction.state.log.*`) unless it exists: on the first
/// transactional write, or when a client's Metadata request names it (as Kafka's auto-creation does).
pub async fn ensure_txn_topic(state: &BrokerState) -> Result<()> {
    let partitions = state.transactions.config.partitions;
    ensure_internal_topic(state, TXN_TOPIC, partitions, "transaction.state.log").await
}

/// After a metadata sync: forgets the ids of `__transaction_state` partitions no longer led here and marks the
/// newly led ones for loading. Returns whether a load is waiting.
pub fn follow_leadership(state: &BrokerState) -> bool {
    let txns = &state.transactions;
    let changes = txns
        .owned
        .follow(state, TXN_TOPIC, |p| txns.unload(state, p));
    for (p, epoch) in &changes.elected {
        tracing::info!(
            partition = p,
            epoch,
            "transaction coordinator elected for a __transaction_state partition: loading it"
        );
    }
    !changes.elected.is_empty()
}

/// Loads every `__transaction_state` partition waiting for it. Returns how many transactional ids it installed.
pub fn load_pending(state: &BrokerState) -> Result<usize> {
    let mut total = 0;
    for (p, epoch) in state.transactions.owned.loading() {
        total += load_partition(state, p, epoch)?;
    }
    Ok(total)
}

/// Replays `__transaction_state` partition `p` (led here at `epoch`) up to its log end, then installs the latest
/// state of each of its transactional ids if the partition is still loading at that epoch. Returns how many ids
/// it installed. Transactions found in PrepareCommit/PrepareAbort are finished by the next
/// [`Transactions::abort_timed_out`] pass, which the loader starts at once.
pub fn load_partition(state: &BrokerState, p: i32, epoch: i32) -> Result<usize> {
    let Some(part) = state.partitions.online(TXN_TOPIC, p)? else {
        return Ok(0);
    };
    let mut latest: HashMap<String, Option<TxnMetadata>> = HashMap::new();
    blocking(|| {
        replay_partition(state, &part, |r| {
            let Some(key) = r.key.filter(|_| !r.control) else {
                return Ok(());
            };
            let id = txn::decode_key(key).map_err(|e| format!("key: {e}"))?;
            let value = r.value.map(|v| txn::decode_value(&id, v)).transpose();
            latest.insert(id, value.map_err(|e| format!("value: {e}"))?);
            Ok(())
        })
    })?;
    let txns = &state.transactions;
    let n = state
        .meta
        .state()
        .topics
        .get(TXN_TOPIC)
        .map_or(1, |t| t.partitions.len() as i32);
    let mut count = 0;
    let installed = txns.owned.finish_load(p, epoch, || {
        // A slot a request created for one of these ids before this partition was led here again is stale.
        let stale: Vec<String> = {
            let mut slots = txns.lock_slots();
            let stale = slots
                .keys()
                .filter(|id| partition_for(id, n) == p)
                .cloned()
                .collect();
            slots.retain(|id, _| partition_for(id, n) != p);
            stale
        };
        for id in stale {
            txns.set_open(&id, None);
        }
        for (id, m) in latest {
            let Some(m) = m else { continue };
            let mut slot = None;
            txns.install(&mut slot, m);
            txns.lock_slots()
                .insert(id, Arc::new(tokio::sync::Mutex::new(slot)));
            count += 1;
        }
    });
    if installed {
        tracing::info!(
            partition = p,
            epoch,
            transactional_ids = count,
            "transaction coordinator loaded a __transaction_state partition"
        );
    }
    Ok(count)
}

/// Finishes transactions left half-ended by a crash, then aborts timed-out transactions periodically, until
/// shutdown.
pub async fn run_clock(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(state.transactions.config.cleanup_interval_ms);
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The first tick fires at once: unfinished transactions found by `load` complete right away.
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        state.transactions.abort_timed_out(&state).await;
    }
}
