//! Where the registry's records go: the compacted `_schemas` topic (Confluent's `KafkaStore`), or memory for
//! tests.
//!
//! **Architecture Invariant:** [`Store::write`] returns only after the registry's own reader has applied the
//! record it wrote (the reader reached the record's offset), as Confluent's KafkaStore waits for its offset.
//! A write acknowledged by `acks=all` but not yet read back is not answered, so an answer never describes a
//! state the registry has not got; and state is only ever built by reading the topic.
//!
//! **Architecture Invariant:** only the primary writes schemas, configs and modes, and it writes each record in
//! a transaction of the one transactional id of the schemas topic ([`transactional_id`]). A new primary's
//! `init_transactions` fences every earlier producer of that id (their open transaction is aborted, their next
//! commit fails), and the new primary reads the topic to its end (a NOOP committed after the fence) before it
//! assigns an id; so two instances can never both commit a record computed from the same state. Secondaries
//! (and every instance before it is elected) write only NOOPs, with a plain idempotent producer, to read the
//! topic to its end. The election itself is in `election.rs`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::election::{self, ElectionConfig, LeaderRecord};
use crate::error::{Error, Result};
use crate::records::Record;
use crate::registry::apply_raw;
use crate::state::State;

/// How long a write waits for the broker's acknowledgement and then for the reader to apply it (Confluent's
/// `kafkastore.timeout.ms` is 500 ms; a local fsync-per-write broker on a busy machine needs more).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits to read `_schemas` to its end.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The transaction timeout of the primary's producer: a transaction left open by a primary that died is
/// aborted by the broker after this long at the latest (a new primary aborts it at once when it is elected).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(20);

pub enum Store {
    /// Records are applied at once (tests); this store is always the primary.
    Memory(Arc<RwLock<State>>),
    Kafka(KafkaStore),
}

/// Who writes, as one instance sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// This instance writes.
    Primary,
    /// Another instance writes; its advertised URL, when known.
    Secondary(Option<String>),
}

/// One raw record of `_schemas`: key, and value or none for a tombstone.
pub type RawRecord = (Vec<u8>, Option<Vec<u8>>);

/// What one registry operation writes with: the producer this instance was the primary with when the
/// operation began (taken together with the registry's write lock, before the operation read the state).
///
/// **Architecture Invariant:** every record an operation computed from the state goes through the producer
/// that was the primary's when it read that state. Were the producer picked up later, a demotion and
/// re-promotion in between would let the new, unfenced producer commit a record (an id, a version) computed
/// from the state before the new promotion read the topic to its end; with the producer taken first, the
/// fence refuses such a record (the new promotion's `init_transactions` fenced the old producer).
pub struct Writer(WriterKind);

enum WriterKind {
    Memory(Arc<RwLock<State>>),
    Kafka {
        shared: Arc<Shared>,
        producer: FutureProducer,
    },
    /// What is left once dropped (see `Drop`).
    Dropped,
}

impl Drop for Writer {
    /// The producer may be the last handle of a demoted (fenced) one, whose destruction blocks on librdkafka
    /// (its threads, its queue): it is dropped on a thread of its own, never on an async worker.
    fn drop(&mut self) {
        if let WriterKind::Kafka { producer, .. } =
            std::mem::replace(&mut self.0, WriterKind::Dropped)
        {
            let _ = std::thread::Builder::new()
                .name("registry-producer-drop".into())
                .spawn(move || drop(producer));
        }
    }
}

impl Writer {
    /// Writes `records` in one transaction (all or none of them are committed) and returns once this
    /// instance has applied them.
    pub async fn write(&self, records: &[RawRecord]) -> Result<()> {
        match &self.0 {
            WriterKind::Memory(state) => {
                let decoded = records
                    .iter()
                    .map(|(k, v)| Record::decode(k, v.as_deref()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::Store(format!("the record does not decode: {e}")))?;
                let mut st = state.write().unwrap_or_else(|p| p.into_inner());
                for r in decoded {
                    st.apply(r);
                }
                Ok(())
            }
            WriterKind::Kafka { shared, producer } => {
                write_records(shared, producer, records).await
            }
            WriterKind::Dropped => Err(Error::Store("the writer was dropped".into())),
        }
    }
}

impl Store {
    /// [`Store::writer`] for tests that show the fence (feature `test-util`): a writer taken outside the
    /// registry's write lock, which no other caller may hold.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn writer_for_tests(&self) -> Result<Writer> {
        self.writer()
    }

    /// The writer of an operation that begins now: the primary's producer, or 50004 when this instance is
    /// not the primary. Only `Registry::begin_write` takes one (with the write lock), so no write bypasses
    /// the lock.
    pub(crate) fn writer(&self) -> Result<Writer> {
        match self {
            Store::Memory(state) => Ok(Writer(WriterKind::Memory(state.clone()))),
            Store::Kafka(k) => {
                let Some(producer) = k.shared.primary.borrow().clone() else {
                    return Err(Error::NotPrimary(
                        "this registry instance is not the primary".into(),
                    ));
                };
                Ok(Writer(WriterKind::Kafka {
                    shared: k.shared.clone(),
                    producer,
                }))
            }
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Store::Memory(_) => Role::Primary,
            Store::Kafka(k) => k.role(),
        }
    }

    /// Waits until [`Store::role`] may have changed (at most `timeout`).
    pub async fn role_changed(&self, timeout: Duration) {
        match self {
            Store::Memory(_) => tokio::time::sleep(timeout).await,
            Store::Kafka(k) => k.role_changed(timeout).await,
        }
    }

    /// Returns once this instance has applied everything committed to the topic before the call (a NOOP
    /// barrier): what a secondary does after forwarding a write, so that its answer is readable here.
    pub async fn sync(&self) -> Result<()> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Kafka(k) => k.sync(WRITE_TIMEOUT).await,
        }
    }

    /// Leaves the election before a clean shutdown (blocks until the group was left).
    pub fn leave(&self) {
        if let Store::Kafka(k) = self {
            k.leave(true);
        }
    }

    /// (group id, advertised URL, leader eligibility) of a Kafka store.
    pub fn election(&self) -> Option<&ElectionConfig> {
        match self {
            Store::Memory(_) => None,
            Store::Kafka(k) => Some(&k.shared.election),
        }
    }
}

/// The transactional id every primary of the registries on `topic` writes with: one per schemas topic, so
/// that whichever instance becomes primary fences every earlier one, whatever group it was elected in.
pub fn transactional_id(topic: &str) -> String {
    format!("fjord-schema-registry.{topic}")
}

/// What the store's tasks share.
pub(crate) struct Shared {
    pub bootstrap: String,
    pub topic: String,
    pub election: ElectionConfig,
    /// A plain idempotent producer for NOOPs (reading to the end); never writes anything else.
    noop_producer: FutureProducer,
    /// The offset after the last `_schemas` record applied.
    applied: watch::Receiver<i64>,
    /// The last leader record of this group read from the election topic.
    pub leader: watch::Receiver<Option<LeaderRecord>>,
    /// The transactional producer while this instance is the primary (elected, fenced the others, read the
    /// topic to its end).
    pub primary: watch::Sender<Option<FutureProducer>>,
    /// Asks the election to promote this instance again after the delay if the group still assigns it the
    /// election (set when it joins).
    pub(crate) repromote: std::sync::OnceLock<Box<dyn Fn(Duration) + Send + Sync>>,
}

/// The `_schemas` topic: a reader task that applies every record to the state and publishes the next offset
/// to apply; the producers; and, for an eligible instance, its part in the election.
pub struct KafkaStore {
    pub(crate) shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
    election: std::sync::Mutex<Option<election::Handle>>,
}

impl Drop for KafkaStore {
    fn drop(&mut self) {
        self.reader.abort();
        self.leave(false);
    }
}

pub(crate) fn store_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("{what}: {e}"))
}

/// What a failed transaction means for the producer that ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The producer may write again (a timeout, an abortable error).
    Retriable,
    /// A newer producer of the transactional id fenced this one: another instance is (or was) the primary.
    Fenced,
    /// The producer failed for good otherwise.
    Fatal,
}

/// Classifies a transaction's failure by the producer's own fatal-error state (librdkafka raises a fenced
/// producer as a fatal `_FENCED` error, whatever error the operation that noticed it returned), not by the
/// text of the error.
pub(crate) fn failure(producer: &FutureProducer, e: &KafkaError) -> Failure {
    let fatal = producer.client().fatal_error().map(|(code, _)| code);
    classify(fatal, e)
}

fn classify(fatal: Option<RDKafkaErrorCode>, e: &KafkaError) -> Failure {
    let fenced_code = |c: RDKafkaErrorCode| {
        matches!(
            c,
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    };
    match fatal {
        Some(c) if fenced_code(c) => Failure::Fenced,
        Some(_) => Failure::Fatal,
        None => match e {
            // A transactional state the producer cannot leave (a timed-out abort leaves it there, and every
            // begin_transaction then fails with _STATE): only a new producer writes again, so the instance
            // demotes and is promoted again with one.
            KafkaError::Transaction(r)
                if r.is_fatal()
                    || matches!(
                        r.code(),
                        RDKafkaErrorCode::State | RDKafkaErrorCode::InvalidTransactionalState
                    ) =>
            {
                if fenced_code(r.code()) {
                    Failure::Fenced
                } else {
                    Failure::Fatal
                }
            }
            _ => Failure::Retriable,
        },
    }
}

/// A record of a transaction: (topic, key, value or none for a tombstone), to partition 0.
pub(crate) type TxnRecord<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

/// Writes `records` (topic, key, value) in one transaction of `producer`; returns their offsets once the
/// transaction is committed. A failed transaction is aborted when it can be.
pub(crate) async fn transact(
    producer: &FutureProducer,
    records: &[TxnRecord<'_>],
) -> std::result::Result<Vec<i64>, KafkaError> {
    producer.begin_transaction()?;
    let mut offsets = Vec::with_capacity(records.len());
    for (topic, key, value) in records {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).partition(0).key(*key);
        if let Some(v) = value {
            record = record.payload(*v);
        }
        match producer.send(record, WRITE_TIMEOUT).await {
            Ok(d) => offsets.push(d.offset),
            Err((e, _)) => {
                abort(producer).await;
                return Err(e);
            }
        }
    }
    let p = producer.clone();
    let committed = tokio::task::spawn_blocking(move || p.commit_transaction(WRITE_TIMEOUT))
        .await
        .map_err(|_| KafkaError::Canceled)?;
    if let Err(e) = committed {
        if failure(producer, &e) == Failure::Retriable {
            abort(producer).await;
        }
        return Err(e);
    }
    Ok(offsets)
}

async fn abort(producer: &FutureProducer) {
    let p = producer.clone();
    let _ = tokio::task::spawn_blocking(move || p.abort_transaction(WRITE_TIMEOUT)).await;
}

impl Shared {
    pub(crate) async fn wait_applied(&self, offset: i64, timeout: Duration) -> Result<()> {
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|a| *a >= offset)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::StoreTimeout(format!(
                "waiting for the registry to read back offset {}",
                offset - 1
            ))),
        }
    }

    /// Writes a NOOP with the plain producer and waits until the reader has applied it.
    pub(crate) async fn sync(&self, timeout: Duration) -> Result<()> {
        let key = serde_json::to_vec(&crate::records::Key::Noop { magic: 0 })
            .map_err(|e| store_err("noop key", e))?;
        let record: FutureRecord<'_, Vec<u8>, Vec<u8>> =
            FutureRecord::to(&self.topic).partition(0).key(&key);
        let delivery = self
            .noop_producer
            .send(record, timeout)
            .await
            .map_err(|(e, _)| store_err(&format!("cannot write to {}", self.topic), e))?;
        self.wait_applied(delivery.offset + 1, timeout).await
    }
}

impl KafkaStore {
    /// Creates `topic` if missing (one partition, compacted, the broker's default replication) and the
    /// election topic, reads the schemas topic to its end into `state`, keeps applying what is written to it,
    /// and (when eligible) joins the election.
    pub async fn open(
        bootstrap: &str,
        topic: &str,
        election: ElectionConfig,
        state: Arc<RwLock<State>>,
    ) -> Result<KafkaStore> {
        ensure_topic(bootstrap, topic).await?;
        let election_topic = election::election_topic(topic);
        ensure_topic(bootstrap, &election_topic).await?;
        let noop_producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("message.timeout.ms", WRITE_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| store_err("cannot create the producer", e))?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            // No group membership: the reader assigns itself the partitions; the id only names the client.
            .set(
                "group.id",
                format!("fjord-registry-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            // Only committed transactions: a record of a primary that was fenced before committing is never
            // applied.
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| store_err("cannot create the consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        for t in [topic, &election_topic] {
            tpl.add_partition_offset(t, 0, Offset::Beginning)
                .map_err(|e| store_err(&format!("cannot assign {t}"), e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| store_err(&format!("cannot assign {topic}"), e))?;
        let (applied_tx, applied) = watch::channel(0i64);
        let (leader_tx, leader) = watch::channel(None);
        let reader = tokio::spawn(read_loop(
            consumer,
            state,
            topic.to_string(),
            election.group_id.clone(),
            applied_tx,
            leader_tx,
        ));
        let (primary, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            election,
            noop_producer,
            applied,
            leader,
            primary,
            repromote: std::sync::OnceLock::new(),
        });
        let store = KafkaStore {
            shared: shared.clone(),
            reader,
            election: std::sync::Mutex::new(None),
        };
        // Read to the end the way Confluent's KafkaStore does: write a NOOP and wait until the reader has
        // applied it. Unlike the high watermark, this works whatever the last records are (control batches,
        // compacted away) and proves that writing works before the registry serves.
        shared.sync(INIT_TIMEOUT).await?;
        tracing::info!(topic, "read the schemas topic to its end");
        if shared.election.eligible {
            *store.election.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(election::join(shared.clone())?);
        } else {
            tracing::info!(
                group = %shared.election.group_id,
                "leader.eligibility=false: this registry never becomes the primary; it forwards writes"
            );
        }
        Ok(store)
    }

    /// Leaves the election (a clean shutdown: another instance takes over at once instead of after the
    /// session timeout). With `wait`, blocks until the group was left.
    pub fn leave(&self, wait: bool) {
        let handle = self
            .election
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            h.stop(wait);
        }
    }

    pub fn role(&self) -> Role {
        if self.shared.primary.borrow().is_some() {
            return Role::Primary;
        }
        let leader = self.shared.leader.borrow().clone();
        // A leader record of this instance (or of an earlier process at its address) while it is not primary
        // is stale: it was demoted, or died and came back.
        let me = &self.shared.election;
        Role::Secondary(
            leader
                .filter(|l| l.member != me.member && l.url != me.advertised_url)
                .map(|l| l.url),
        )
    }

    async fn role_changed(&self, timeout: Duration) {
        let mut primary = self.shared.primary.subscribe();
        let mut leader = self.shared.leader.clone();
        primary.mark_unchanged();
        leader.mark_unchanged();
        let _ = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = primary.changed() => {}
                _ = leader.changed() => {}
            }
        })
        .await;
    }

    pub async fn sync(&self, timeout: Duration) -> Result<()> {
        self.shared.sync(timeout).await
    }
}

/// Writes `records` with the primary's `producer` in one transaction and waits until the reader applied them.
/// A producer that failed for good (fenced by a newer primary, or a fatal error) is demoted.
async fn write_records(
    shared: &Arc<Shared>,
    producer: &FutureProducer,
    records: &[RawRecord],
) -> Result<()> {
    let topic = shared.topic.as_str();
    let txn: Vec<TxnRecord<'_>> = records
        .iter()
        .map(|(k, v)| (topic, k.as_slice(), v.as_deref()))
        .collect();
    match transact(producer, &txn).await {
        Ok(offsets) => match offsets.last() {
            Some(last) => shared.wait_applied(last + 1, WRITE_TIMEOUT).await,
            None => Ok(()),
        },
        Err(e) => match failure(producer, &e) {
            Failure::Retriable => Err(store_err(&format!("cannot write to {topic}"), e)),
            failure => {
                let fenced = failure == Failure::Fenced;
                // Fenced by a newer primary (or failed for good): stop writing with this producer. The election
                // makes this instance primary again with a new producer if the group still assigns it.
                election::demote(shared, Some(producer), &format!("{e}"));
                // Still assigned the election after a while (the fence did not come from a newer primary of
                // this group, whose election revokes this member within a session timeout): take over again.
                let delay = if fenced { 8 } else { 1 };
                if let Some(repromote) = shared.repromote.get() {
                    repromote(Duration::from_secs(delay));
                }
                if fenced {
                    Err(Error::NotPrimary(format!(
                        "this registry instance was fenced by a newer primary and did not write: {e}"
                    )))
                } else {
                    Err(store_err(&format!("cannot write to {topic}"), e))
                }
            }
        },
    }
}

async fn read_loop(
    consumer: StreamConsumer,
    state: Arc<RwLock<State>>,
    topic: String,
    group_id: String,
    applied: watch::Sender<i64>,
    leader: watch::Sender<Option<LeaderRecord>>,
) {
    loop {
        match consumer.recv().await {
            Ok(m) if m.topic() == topic => {
                if let Some(key) = m.key() {
                    apply_raw(&state, key, m.payload());
                }
                applied.send_replace(m.offset() + 1);
            }
            Ok(m) => {
                if m.key() == Some(group_id.as_bytes()) {
                    match m.payload().map(serde_json::from_slice::<LeaderRecord>) {
                        Some(Ok(l)) => {
                            tracing::info!(
                                group = %group_id,
                                url = %l.url,
                                "the primary of the registry group is {}",
                                l.url
                            );
                            leader.send_replace(Some(l));
                        }
                        Some(Err(e)) => tracing::warn!("skipping an election record: {e}"),
                        None => {
                            leader.send_replace(None);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("reading {topic}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn ensure_topic(bootstrap: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| store_err("cannot create the admin client", e))?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| store_err(&format!("cannot create {topic}"), e))?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, "created the schemas topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(store_err(&format!("cannot create {t}"), code)),
        }
    }
    // Confluent's registry refuses a schemas topic with more than one partition: the order of records is the
    // order of ids, which only one partition keeps.
    let topic_name = topic.to_string();
    let md = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(Some(&topic_name), Duration::from_secs(10))
    })
    .await
    .map_err(|e| store_err("metadata lookup", e))?
    .map_err(|e| store_err(&format!("cannot describe {topic}"), e))?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    if partitions != 1 {
        return Err(Error::Store(format!(
            "the schemas topic {topic} must have exactly 1 partition, it has {partitions}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_producer_is_known_by_its_fatal_error_whatever_the_operation_returned() {
        // A send on a fenced producer fails with the purge of its queue, whose text says nothing of a fence.
        let purged = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue);
        assert_eq!(
            classify(Some(RDKafkaErrorCode::Fenced), &purged),
            Failure::Fenced
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::ProducerFenced), &purged),
            Failure::Fenced
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::OutOfOrderSequenceNumber), &purged),
            Failure::Fatal
        );
        // No fatal error: the producer may write again.
        assert_eq!(classify(None, &purged), Failure::Retriable);
        assert_eq!(
            classify(
                None,
                &KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
            ),
            Failure::Retriable
        );
    }

    #[test]
    fn a_producer_stuck_in_a_transactional_state_is_fatal_not_retried_forever() {
        // What begin_transaction answers from a state it cannot leave: a real librdkafka _STATE error (a
        // transactional producer never initialised answers the same as one left after a timed-out abort).
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("transactional.id", "stuck")
            .create()
            .expect("producer");
        let e = producer.begin_transaction().expect_err("not initialised");
        assert!(
            matches!(&e, KafkaError::Transaction(r) if r.code() == RDKafkaErrorCode::State),
            "{e:?}"
        );
        assert_eq!(failure(&producer, &e), Failure::Fatal);
    }
}
