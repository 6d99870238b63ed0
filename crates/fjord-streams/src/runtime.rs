//! Runs a [`Topology`]: one processing thread per [`KafkaStreams`] instance, a consumer in the group named by
//! the application id, one task per (sub-topology, input partition), stores restored from their changelogs
//! when a task is assigned, and commits that flush stores, changelogs and outputs before input offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::metrics::{inc, Metrics, MetricsSnapshot};
use crate::record::{encode_count, Record, Window, WindowedKey};
use crate::store::{KeyValueStore, StoreSupplier, WindowStore};
use crate::topology::{
    AggregateNode, Aggregation, NodeId, NodeKind, TopicRef, Topology, UnmatchedFn,
};
use crate::window::Windows;

/// How commits protect results from crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// Kafka Streams' default: outputs may repeat after a crash. Store state stays exact (see ARCHITECTURE.md:
    /// each commit's changelog entries and commit markers are written in one transaction of a changelog
    /// producer), except for records that went through a repartition topic.
    #[default]
    AtLeastOnce,
    /// Outputs, changelogs and input offsets commit in one Kafka transaction (`send_offsets_to_transaction`);
    /// read outputs with `isolation.level=read_committed`.
    ExactlyOnce,
}

/// Where tasks keep their state between commits.
#[derive(Clone)]
pub enum StateStores {
    /// In memory; restored from the changelog whenever a task starts.
    InMemory,
    /// In a `fjall` database under `<state_dir>/<application.id>` (feature `fjall`, on by default).
    #[cfg(feature = "fjall")]
    Fjall,
    /// A store of your own.
    Custom(Arc<dyn StoreSupplier>),
}

/// The settings of an application instance.
#[derive(Clone)]
pub struct StreamsConfig {
    /// Names the consumer group, the internal topics and the state directory. Instances with the same id share
    /// the work.
    pub application_id: String,
    pub bootstrap_servers: String,
    pub processing_guarantee: ProcessingGuarantee,
    /// How often the instance commits (default 1 s; Kafka's default is 30 s at least once, 100 ms exactly once).
    pub commit_interval: Duration,
    pub state_stores: StateStores,
    /// Local state directory (fjall stores). Two instances on one machine need two directories.
    pub state_dir: PathBuf,
    /// This instance's stable name: its transactional id is `<application.id>-<instance_id>`, so a restarted
    /// instance fences its predecessor's open transaction at once. Default: random.
    pub instance_id: String,
    /// Replication factor of the internal topics (-1: the cluster's default).
    pub replication_factor: i32,
    /// The consumer group's session timeout: how soon the group notices a dead instance.
    pub session_timeout: Duration,
    /// Further librdkafka properties for every client (e.g. security settings).
    pub client_properties: Vec<(String, String)>,
    /// The most each store's write cache holds (keys and values, plus 64 bytes per entry) before it is written
    /// to the store and its changelog ahead of the next commit (default 16 MiB; Kafka's
    /// `statestore.cache.max.bytes`, per store here). 0 writes through at every record.
    pub cache_max_bytes: usize,
    /// At least once, how long an output may take to be acknowledged (librdkafka's `message.timeout.ms` of the
    /// output producer; default 60 s, 1 s to 23 hours). A commit waits at most this long for the outputs sent
    /// since the last one; those still not acknowledged then are purged and count as lost (the commit commits the
    /// inputs before the first one whose output is lost, and the run fails). Exactly once, the transaction timeout
    /// bounds it.
    ///
    /// The commit (also the one in the revoke callback) keeps the processing thread from polling the group
    /// consumer while it waits, up to this timeout plus about three minutes for the rest of the commit (the purged
    /// outputs' reports, the changelog transaction's commit or flush and abort, the offset commit): the consumer's
    /// `max.poll.interval.ms` is set above that sum (librdkafka's default 300 s otherwise, past which the instance
    /// would leave the group and commit nothing), or kept when `client_properties` set a larger one. The
    /// group then also takes that long to notice an instance whose processing thread hangs.
    pub delivery_timeout: Duration,
    /// Fault injection for tests: the process aborts in its n-th commit that has new input (1-based), after the
    /// changelog entries were written and acknowledged and before the commit markers. Not for production use.
    #[doc(hidden)]
    pub abort_in_commit: Option<u64>,
}

impl StreamsConfig {
    /// Defaults for everything but the application id and the cluster.
    pub fn new(application_id: &str, bootstrap_servers: &str) -> StreamsConfig {
        let instance_id = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
                ^ (std::process::id() as u128) << 64
        );
        StreamsConfig {
            application_id: application_id.to_string(),
            bootstrap_servers: bootstrap_servers.to_string(),
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            commit_interval: Duration::from_secs(1),
            state_stores: StateStores::InMemory,
            state_dir: std::env::temp_dir().join("fjord-streams"),
            instance_id,
            replication_factor: -1,
            session_timeout: Duration::from_secs(10),
            client_properties: Vec::new(),
            cache_max_bytes: 16 << 20,
            delivery_timeout: Duration::from_secs(60),
            abort_in_commit: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
        };
        if !ok(&self.application_id) || self.application_id.len() > 60 {
            return Err(Error::Config(format!(
                "application.id `{}` must be 1-60 characters of [A-Za-z0-9._-] (it prefixes topic names)",
                self.application_id
            )));
        }
        if !ok(&self.instance_id) {
            return Err(Error::Config(format!(
                "instance id `{}` must be characters of [A-Za-z0-9._-]",
                self.instance_id
            )));
        }
        // librdkafka wants message.timeout.ms above linger.ms (5 ms here); the consumer's max.poll.interval.ms
        // (above the timeout plus the rest of a commit, see `max_poll_interval`) may be at most 24 hours.
        if self.delivery_timeout < Duration::from_secs(1)
            || self.delivery_timeout > MAX_DELIVERY_TIMEOUT
        {
            return Err(Error::Config(format!(
                "delivery timeout {:?} must be between 1 s and 23 hours (a commit waits for it without polling the \
                 group consumer, whose max.poll.interval.ms must exceed it and may be at most 24 hours)",
                self.delivery_timeout
            )));
        }
        if self.bootstrap_servers.is_empty() {
            return Err(Error::Config("bootstrap.servers is empty".into()));
        }
        if self.commit_interval.is_zero() || self.commit_interval > MAX_COMMIT_INTERVAL {
            return Err(Error::Config(format!(
                "commit interval must be above zero and at most {MAX_COMMIT_INTERVAL:?} (a commit's changelog \
                 transaction must end before the broker's transaction.max.timeout.ms, 15 minutes by default)"
            )));
        }
        Ok(())
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.client_properties {
            c.set(k, v);
        }
        c
    }

    /// The group consumer's `max.poll.interval.ms`: above the longest a commit keeps the processing thread from
    /// polling (see [`StreamsConfig::delivery_timeout`]), and never below librdkafka's default (300 s); a larger
    /// value set in `client_properties` is kept.
    fn max_poll_interval(&self) -> Duration {
        let needed = (self.delivery_timeout + COMMIT_OVERHEAD).max(Duration::from_secs(300));
        let user = self
            .client_properties
            .iter()
            .rev()
            .find(|(k, _)| k == "max.poll.interval.ms")
            .map(|(_, v)| v.trim().parse::<u64>().map(Duration::from_millis));
        match user {
            Some(Ok(d)) if d >= needed => d,
            Some(v) => {
                tracing::warn!(
                    configured = ?v,
                    ?needed,
                    "max.poll.interval.ms raised above the longest commit (delivery timeout plus the rest of the commit)"
                );
                needed
            }
            None => needed,
        }
    }

    /// The group consumer's configuration.
    fn group_consumer(&self) -> ClientConfig {
        let mut cc = self.client();
        cc.set("group.id", &self.application_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Range assigns equal partition numbers of co-partitioned topics to one member.
            .set("partition.assignment.strategy", "range")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                self.max_poll_interval().as_millis().to_string(),
            )
            .set("isolation.level", "read_committed")
            // librdkafka stops fetching once queued.min.messages (100,000) are queued, then waits
            // fetch.queue.backoff.ms (1 s) before it fetches again: a task that drains the queue in a fraction
            // of that would sit idle for the rest (it halved the benchmark's throughput).
            .set("queued.min.messages", "500000")
            .set("fetch.queue.backoff.ms", "1");
        cc
    }

    /// `<application.id>-<store>-changelog`.
    pub fn changelog_topic(&self, store: &str) -> String {
        format!("{}-{store}-changelog", self.application_id)
    }

    /// `<application.id>-<name>-repartition`.
    pub fn repartition_topic(&self, name: &str) -> String {
        format!("{}-{name}-repartition", self.application_id)
    }
}

/// Where a running instance is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamsState {
    Running,
    /// Stopped by an error (the message says which); close and start again to retry.
    Failed(String),
    Stopped,
}

/// The longest commit interval: twice it plus 20 s stays within Kafka's default `transaction.max.timeout.ms`.
const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(400);

/// How long a client call (metadata, commit, transaction step, flush) may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest [`StreamsConfig::delivery_timeout`]: with [`COMMIT_OVERHEAD`] within the 24 hours librdkafka allows
/// for `max.poll.interval.ms`.
const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(23 * 3600);
/// What a commit may wait for, without polling the group consumer, besides the outputs' flush (the delivery
/// timeout): the purged outputs' reports ([`PURGED_REPORTS_TIMEOUT`]), the changelog transaction's commit, or its
/// flush and abort (two [`CLIENT_TIMEOUT`]s), the offset commit (bounded by librdkafka's 60 s socket timeout), and
/// a margin for the processing between two polls.
const COMMIT_OVERHEAD: Duration = Duration::from_secs(5 + 2 * 30 + 60 + 60);
/// How long restoring one store from its changelog may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// A running application instance.
pub struct KafkaStreams {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<StreamsState>>,
    /// Shared with the processing thread, for interactive queries of the stores.
    engine: Arc<Mutex<Engine>>,
    /// Why the run failed, set by the processing thread as soon as it knows (see [`Engine::set_failed`]): read
    /// by queries without the engine lock, which the failure path may hold while it aborts.
    failed: Arc<Mutex<Option<String>>>,
}

/// One entry of a store read by [`KafkaStreams::query_store`]: the record key, its window (windowed
/// aggregates) and the aggregate's current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEntry {
    pub key: Bytes,
    pub window: Option<Window>,
    pub value: Bytes,
}

impl KafkaStreams {
    /// Checks the topology against the cluster (source topics exist, co-partitioning), creates the internal
    /// topics, joins the group and starts processing on a thread of its own.
    pub fn start(topology: Topology, config: StreamsConfig) -> Result<KafkaStreams> {
        config.validate()?;
        let topology = Arc::new(topology);
        let plan = plan(&topology, &config)?;
        create_internal_topics(&config, &plan)?;

        let metrics = Arc::new(Metrics::default());
        let failures = Arc::new(Mutex::new(DeliveryFailures::default()));
        let failed_shared = Arc::new(Mutex::new(None));
        let eos = config.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        let producer_config = |transactional: bool| {
            let mut pc = config.client();
            pc.set("partitioner", "murmur2_random")
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .set("queue.buffering.max.messages", "1000000")
                // Failed deliveries are still reported (and fail the next commit, see `DeliveryFailures`);
                // successful ones cost a callback per record otherwise. (Which is also why the delivery opaque
                // is a number, not a box: a successful delivery never returns it.)
                .set("delivery.report.only.error", "true")
                .set(
                    "message.timeout.ms",
                    config.delivery_timeout.as_millis().to_string(),
                );
            if transactional {
                // A transaction spans a commit interval; the timeout also bounds how long a crashed
                // instance's open transaction (with a new instance id) holds up read_committed readers.
                let timeout = (config.commit_interval.as_millis() * 2 + 20_000).max(30_000);
                pc.set(
                    "transactional.id",
                    format!("{}-{}", config.application_id, config.instance_id),
                )
                .set("transaction.timeout.ms", timeout.to_string())
                // librdkafka: a message may not outlive the transaction it belongs to.
                .set("message.timeout.ms", timeout.to_string());
            }
            pc
        };
        let producer: Arc<BaseProducer<ProducerCtx>> =
            Arc::new(producer_config(eos).create_with_context(ProducerCtx {
                failures: failures.clone(),
                failed_shared: failed_shared.clone(),
                changelog: false,
            })?);
        // At least once, changelog entries and commit markers go through a transactional producer of their own
        // (outputs stay non-transactional, visible at once): a commit's entries and markers become visible
        // together or never, so a restore (read_committed) never sees entries of an unfinished commit, and
        // compaction never lets them replace the values they overwrite (it drops aborted batches).
        // A stateless topology has no changelog, and needs no transaction at least once.
        let changelog_producer: Option<BaseProducer<ProducerCtx>> =
            if eos || plan.changelogs.is_empty() {
                None
            } else {
                Some(producer_config(true).create_with_context(ProducerCtx {
                    failures: failures.clone(),
                    failed_shared: failed_shared.clone(),
                    changelog: true,
                })?)
            };
        // Fences an earlier incarnation of this instance and aborts its open transaction (the restores below
        // then read past it).
        if let Some(tx) = changelog_producer.as_ref().or(eos.then_some(&*producer)) {
            tx.init_transactions(CLIENT_TIMEOUT)?;
            tx.begin_transaction()?;
        }
        let supplier: Arc<dyn StoreSupplier> = match &config.state_stores {
            StateStores::InMemory => Arc::new(crate::store::InMemorySupplier),
            #[cfg(feature = "fjall")]
            StateStores::Fjall => Arc::new(crate::store::FjallSupplier::open(
                &config.state_dir.join(&config.application_id),
            )?),
            StateStores::Custom(s) => s.clone(),
        };
        let mut restore = config.client();
        restore
            .set("group.id", format!("{}-restore", config.application_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("queued.min.messages", "500000")
            .set("fetch.queue.backoff.ms", "1");
        let restore: BaseConsumer = restore.create()?;

        let engine = Arc::new(Mutex::new(Engine {
            topo: topology.clone(),
            plan,
            producer,
            changelog_producer,
            eos,
            abort_in_commit: config.abort_in_commit,
            delivery_timeout: config.delivery_timeout,
            commits_with_data: 0,
            cache_max_bytes: config.cache_max_bytes,
            tasks: HashMap::new(),
            supplier,
            metrics: metrics.clone(),
            failures,
            origins: HashMap::new(),
            restore,
            failed: None,
            run_failed: None,
            failed_shared: failed_shared.clone(),
            changelog_broken: false,
            abandoned: false,
        }));
        let consumer: BaseConsumer<GroupCtx> =
            config.group_consumer().create_with_context(GroupCtx {
                engine: engine.clone(),
            })?;
        let topics: Vec<String> = engine
            .lock()
            .unwrap()
            .plan
            .sources
            .keys()
            .cloned()
            .collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;

        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(StreamsState::Running));
        let interval = config.commit_interval;
        let shared = engine.clone();
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::Builder::new()
                .name(format!("fjord-streams-{}", config.application_id))
                .spawn(move || {
                    let end = run_loop(&consumer, &engine, &stop, interval)
                        .and_then(|_| engine.lock().unwrap().failed.take().map_or(Ok(()), Err));
                    if let Err(e) = &end {
                        // Exactly once, the open transaction is aborted, not committed with the offset of a
                        // record that failed; at least once, what is safe is committed (see `abandon`).
                        abandon(&engine, &consumer, e);
                    }
                    // Leaving the group revokes the assignment: the revoke callback commits once more,
                    // unless a failure ended the run (`abandon` did what was to be done).
                    consumer.unsubscribe();
                    let end =
                        end.and_then(|_| engine.lock().unwrap().failed.take().map_or(Ok(()), Err));
                    *state.lock().unwrap() = match end {
                        Ok(()) => StreamsState::Stopped,
                        Err(e) => {
                            tracing::error!(error = %e, "stream processing stopped");
                            StreamsState::Failed(e.to_string())
                        }
                    };
                })
                .map_err(|e| Error::Config(format!("cannot start a thread: {e}")))?
        };
        Ok(KafkaStreams {
            stop,
            thread: Some(thread),
            metrics,
            state,
            engine: shared,
            failed: failed_shared,
        })
    }

    /// Interactive query of the aggregate store `store` in the tasks this instance runs: the entries of `key`
    /// (`None`: every key), by key and ascending window start. Values are what the store holds now, including
    /// updates not yet committed (as Kafka Streams' interactive queries); keys of partitions owned by another
    /// instance are not here. An unknown store name is an error that lists the names. Once the instance has failed
    /// it is an error too: what its tasks did since their last commit may have been given up (the changelog
    /// transaction or the exactly-once transaction aborted), and a query must not serve it; a restart restores the
    /// committed state. A failed delivery (an output, repartition or changelog record) counts as failed from the
    /// moment its report is served: the next commit gives the run up.
    pub fn query_store(&self, store: &str, key: Option<&[u8]>) -> Result<Vec<StoreEntry>> {
        let refuse = |why: &str| {
            Err(Error::Store(format!(
                "store `{store}` cannot be queried: the instance failed ({why}) and what its tasks did since their \
                 last commit was given up; a restarted instance serves the committed state (the SQL layer \
                 restarts its queries by itself)"
            )))
        };
        // Set by the failure path before it aborts anything, so a query does not wait for the abort, and by the
        // delivery report of a record that failed, so a query does not wait for the commit that gives the run up.
        if let Some(why) = self.failed.lock().unwrap().as_deref() {
            return refuse(why);
        }
        let engine = self.engine.lock().unwrap();
        if engine.abandoned || engine.run_failed.is_some() {
            return refuse(
                &engine
                    .failure()
                    .unwrap_or_else(|| "no reason recorded".into()),
            );
        }
        let names = engine.topo.store_names();
        if !names.iter().any(|n| n == store) {
            return Err(Error::Config(format!(
                "no store named `{store}`: the stores are {}",
                names.join(", ")
            )));
        }
        let mut out = Vec::new();
        let mut tasks: Vec<&Task> = engine.tasks.values().collect();
        tasks.sort_by_key(|t| (t.sub, t.partition));
        for task in tasks {
            for st in task.stores.iter().filter(|s| s.spec.store == store) {
                if matches!(st.spec.agg, Aggregation::Buffer) {
                    continue;
                }
                let windowed = st.spec.windows.is_some();
                let entries: Vec<(Bytes, Bytes)> = match (key, windowed) {
                    (Some(k), false) => st
                        .get(&kv_key(k))?
                        .map(|v| (kv_key(k), v))
                        .into_iter()
                        .collect(),
                    (Some(k), true) => st
                        .windows_of(k)?
                        .into_iter()
                        .map(|(w, v)| (WindowStore::store_key(k, w), v))
                        .collect(),
                    (None, _) => st.scan()?,
                };
                for (sk, value) in entries {
                    let entry = if windowed {
                        WindowStore::parse(&sk).map(|(k, w)| StoreEntry {
                            key: Bytes::copy_from_slice(k),
                            window: Some(w),
                            value,
                        })
                    } else {
                        sk.split_first()
                            .filter(|(b, _)| **b == 0)
                            .map(|(_, k)| StoreEntry {
                                key: Bytes::copy_from_slice(k),
                                window: None,
                                value,
                            })
                    };
                    out.extend(entry);
                }
            }
        }
        Ok(out)
    }

    /// The instance's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    pub fn state(&self) -> StreamsState {
        self.state.lock().unwrap().clone()
    }

    /// Commits what was processed, leaves the group and stops.
    pub fn close(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match self.state() {
            // Already the failing error's message, with its kind: not wrapped again.
            StreamsState::Failed(e) => Err(Error::Failed(e)),
            _ => Ok(()),
        }
    }
}

impl Drop for KafkaStreams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_loop(
    consumer: &BaseConsumer<GroupCtx>,
    engine: &Mutex<Engine>,
    stop: &AtomicBool,
    interval: Duration,
) -> Result<()> {
    let mut last_commit = Instant::now();
    let mut since_check = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // The lock is not held while polling: the rebalance callbacks take it inside `poll`.
        let polled = consumer.poll(Duration::from_millis(50));
        let mut e = engine.lock().unwrap();
        // A rebalance callback that failed inside the poll (after a failed commit nothing is committed any more):
        // the message polled with it is not processed.
        if let Some(err) = e.failed.take() {
            return Err(err);
        }
        let idle = match polled {
            Some(Ok(m)) => {
                e.process(&m)?;
                false
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "consumer error");
                true
            }
            None => true,
        };
        // Serving the producers' callbacks (only failed deliveries are reported) and reading the clock are
        // not needed per record.
        since_check += 1;
        if idle || since_check >= 256 {
            since_check = 0;
            e.producer.poll(Duration::ZERO);
            if let Some(c) = &e.changelog_producer {
                c.poll(Duration::ZERO);
            }
            if last_commit.elapsed() >= interval {
                drop(e);
                commit(engine, consumer)?;
                last_commit = Instant::now();
            }
        }
    }
    commit(engine, consumer)
}

/// Commits what the processing thread processed ([`Engine::commit`]), from the loop, the revoke callback or the
/// end of a run. At least once, the outputs' flush, which may wait up to the delivery timeout (a slow broker),
/// runs without the engine lock: the lock only keeps interactive queries ([`KafkaStreams::query_store`]) from
/// reading the engine while this thread changes it, and only this thread changes it (the rebalance callbacks run
/// on it too, inside `poll`), so nothing changes between the flush and the rest of the commit. Queries meanwhile
/// read the uncommitted state, as they do between commits. The rest of the commit runs under the lock, a failing
/// commit's [`Engine::abort_changelogs`] included (a flush and an abort, up to [`CLIENT_TIMEOUT`] each); queries
/// do not wait for that, being refused without the lock once the run failed.
fn commit<C: ConsumerContext>(engine: &Mutex<Engine>, consumer: &BaseConsumer<C>) -> Result<()> {
    let flush = {
        let e = engine.lock().unwrap();
        (!e.abandoned && !e.eos && (e.tasks.values().any(|t| t.dirty) || e.failure().is_some()))
            .then(|| (e.producer.clone(), e.delivery_timeout, e.metrics.clone()))
    };
    let flushed = flush.map(|(p, timeout, metrics)| {
        inc(&metrics.output_flushes);
        flush_or_purge(&p, timeout)
    });
    engine.lock().unwrap().commit(consumer, flushed)
}

/// Ends the run after a failure (a record that failed or was refused, an output that was not delivered, a
/// commit that failed): from now on nothing is committed, so the revoke callback of the group leave that
/// follows closes the tasks without a commit. (That callback used to commit the offsets processed so far,
/// past the record that failed or whose output was lost, which the next run then never saw again.)
///
/// Exactly once, what the run did since its last commit is given up: the open transaction (outputs,
/// repartition records, changelogs) is aborted, so that the next run starts from the last commit.
///
/// At least once, one last commit commits what is safe ([`Engine::commit_at_least_once`]): per task source,
/// the inputs before the first one that failed or lost an output, and a task's state only where it reflects
/// exactly those. Committing nothing instead would make every restarted run send the records since the last
/// commit to repartition topics again, outside any transaction, where the next sub-topology counts each copy:
/// a query failing in a loop would multiply its counts.
///
/// The waits on the producers run without the engine lock, as in [`commit`].
fn abandon<C: ConsumerContext>(engine: &Mutex<Engine>, consumer: &BaseConsumer<C>, why: &Error) {
    let eos = {
        let mut e = engine.lock().unwrap();
        if e.abandoned {
            return;
        }
        e.set_failed(|| why.to_string());
        e.eos
    };
    if !eos {
        // Fails with the run's failure, having committed what is safe; the run already fails with it.
        let _ = commit(engine, consumer);
        engine.lock().unwrap().abandoned = true;
        return;
    }
    let producer = {
        let mut e = engine.lock().unwrap();
        e.abandoned = true;
        e.producer.clone()
    };
    abort_exactly_once(&producer);
}

/// Exactly once, after a failure: the open transaction is aborted, so that the next run starts from the last
/// commit.
fn abort_exactly_once(producer: &BaseProducer<ProducerCtx>) {
    abort_failed_transaction(producer, "transaction");
}

/// Aborts a failed run's open transaction on `producer` (`what` names it in the warning). The abort waits until
/// every record of the transaction is delivered or purged and its delivery report served, and nothing else polls
/// this producer: purged first and served here, they do not hold it for the whole timeout (the purge is bounded
/// although it has no timeout: see `flush_or_purge`). A producer that cannot abort (fenced, or fatally failed)
/// leaves it to the next run's init_transactions, which aborts it.
fn abort_failed_transaction(producer: &BaseProducer<ProducerCtx>, what: &str) {
    producer.purge(PurgeConfig::default().queue().inflight());
    let _ = producer.flush(CLIENT_TIMEOUT);
    if let Err(e) = producer.abort_transaction(CLIENT_TIMEOUT) {
        tracing::warn!(error = %e, "cannot abort the failed run's {what}");
    }
}

/// The topology resolved against the cluster: topic names and partition counts.
struct Plan {
    /// Source topic name → (sub-topology, source node, index among the sub-topology's sources).
    sources: HashMap<String, (usize, NodeId, usize)>,
    /// Topic of every sink and source node.
    names: HashMap<TopicRef, String>,
    /// Partition count per sub-topology.
    partitions: Vec<i32>,
    /// Changelog topic per aggregate node.
    changelogs: HashMap<NodeId, String>,
    /// Sub-topology of each aggregate node.
    store_sub: HashMap<NodeId, usize>,
}

fn plan(topo: &Topology, config: &StreamsConfig) -> Result<Plan> {
    let meta: BaseConsumer = config
        .client()
        .set("group.id", "fjord-streams-metadata")
        .create()?;
    let mut names = HashMap::new();
    let mut user_counts: HashMap<String, i32> = HashMap::new();
    for n in &topo.nodes {
        let topic = match &n.kind {
            NodeKind::Source { topic, .. } | NodeKind::Sink { topic } => topic,
            _ => continue,
        };
        let name = match topic {
            TopicRef::User(t) => t.clone(),
            TopicRef::Repartition(r) => config.repartition_topic(r),
        };
        if let (TopicRef::User(t), NodeKind::Source { .. }) = (topic, &n.kind) {
            let md = meta.fetch_metadata(Some(t), CLIENT_TIMEOUT)?;
            let count = md
                .topics()
                .first()
                .filter(|mt| mt.error().is_none())
                .map(|mt| mt.partitions().len() as i32)
                .unwrap_or(0);
            if count == 0 {
                return Err(Error::MissingSourceTopic(t.clone()));
            }
            user_counts.insert(t.clone(), count);
        }
        names.insert(topic.clone(), name);
    }
    // Partition counts: a sub-topology reading user topics has theirs (equal when it keeps state); one reading
    // a repartition topic has the count of the sub-topology writing it.
    let mut partitions: Vec<Option<i32>> = vec![None; topo.subs.len()];
    let mut repartition: HashMap<String, i32> = HashMap::new();
    for _ in 0..=topo.subs.len() {
        for (i, s) in topo.subs.iter().enumerate() {
            if partitions[i].is_some() {
                continue;
            }
            let mut counts = Vec::new();
            for (t, _) in &s.sources {
                match t {
                    TopicRef::User(u) => counts.push((u.clone(), user_counts[u])),
                    TopicRef::Repartition(r) => match repartition.get(r) {
                        Some(c) => counts.push((config.repartition_topic(r), *c)),
                        None => counts.clear(),
                    },
                }
            }
            if counts.len() != s.sources.len() {
                continue;
            }
            let max = counts.iter().map(|c| c.1).max().unwrap_or(1);
            if !s.aggregates.is_empty() && counts.iter().any(|c| c.1 != max) {
                return Err(Error::CoPartitioning(format!(
                    "the inputs of one stateful step must have the same number of partitions, but {}; \
                     repartition one input (group_by) or recreate the topics with equal counts",
                    counts
                        .iter()
                        .map(|(t, c)| format!("{t} has {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            partitions[i] = Some(max);
            for r in &s.writes_repartition {
                repartition.insert(r.clone(), max);
            }
        }
    }
    let partitions: Vec<i32> = partitions
        .into_iter()
        .map(|p| {
            p.ok_or_else(|| Error::Topology("a repartition topic is read but never written".into()))
        })
        .collect::<Result<_>>()?;
    let mut sources = HashMap::new();
    let mut changelogs = HashMap::new();
    let mut store_sub = HashMap::new();
    for (i, s) in topo.subs.iter().enumerate() {
        for (j, (t, node)) in s.sources.iter().enumerate() {
            sources.insert(names[t].clone(), (i, *node, j));
        }
        for &a in &s.aggregates {
            if let NodeKind::Aggregate(agg) = &topo.nodes[a].kind {
                changelogs.insert(a, config.changelog_topic(&agg.store));
                store_sub.insert(a, i);
            }
        }
    }
    Ok(Plan {
        sources,
        names,
        partitions,
        changelogs,
        store_sub,
    })
}

fn create_internal_topics(config: &StreamsConfig, plan: &Plan) -> Result<()> {
    let mut wanted: Vec<(String, i32, bool)> = Vec::new();
    for (topic, (sub, _, _)) in &plan.sources {
        if topic.ends_with("-repartition") && topic.starts_with(&config.application_id) {
            wanted.push((topic.clone(), plan.partitions[*sub], false));
        }
    }
    for (node, topic) in &plan.changelogs {
        wanted.push((topic.clone(), plan.partitions[plan.store_sub[node]], true));
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let news: Vec<NewTopic> = wanted
        .iter()
        .map(|(t, p, compact)| {
            let n = NewTopic::new(t, *p, TopicReplication::Fixed(config.replication_factor));
            if *compact {
                n.set("cleanup.policy", "compact")
            } else {
                n
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    let results = block_on(admin.create_topics(news.iter(), &opts))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                return Err(Error::Kafka(format!(
                    "cannot create the internal topic {t}: {e}"
                )))
            }
        }
    }
    // An internal topic left by an earlier run must still have the partition count the tasks need.
    let meta: BaseConsumer = config
        .client()
        .set("group.id", "fjord-streams-metadata")
        .create()?;
    for (t, p, _) in &wanted {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let md = meta.fetch_metadata(Some(t), CLIENT_TIMEOUT)?;
            let n = md
                .topics()
                .first()
                .map(|m| m.partitions().len() as i32)
                .unwrap_or(0);
            if n == *p {
                break;
            }
            if n > 0 {
                return Err(Error::CoPartitioning(format!(
                    "internal topic {t} has {n} partitions but the application needs {p}: delete it (and \
                     the application's other internal topics) to reset the application"
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Kafka(format!("internal topic {t} did not appear")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Runs a future to completion on this thread (the admin client's futures complete on librdkafka's threads).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

/// What the failed deliveries of a run say, filled by the producers' delivery callbacks. Sticky: nothing takes
/// a failure away (a commit that sees one fails, and so does every later one; the run ends, and the next run has
/// a new engine). At least once, the commit after a failure uses it to commit only what is safe
/// ([`Engine::commit_at_least_once`]).
#[derive(Default)]
struct DeliveryFailures {
    /// The first failure: what the run fails with.
    first: Option<String>,
    /// Per origin (a (task, source) number, see [`Engine::origins`]), the lowest input offset one of whose
    /// outputs was not delivered.
    lowest: HashMap<usize, i64>,
    /// A changelog entry or marker was not delivered (at least once: the changelog transaction cannot commit).
    changelog: bool,
    /// An output whose input is not known was not delivered (no tag: sent by a commit, or an origin or offset
    /// too large for the tag): no input since the last commit can be trusted.
    untracked: bool,
}

/// Each produced record's delivery opaque: the input record it came from, as `(origin + 1) << TAG_OFFSET_BITS |
/// offset`, or 0 when that does not fit (or there is no such input). A number, not a box: with
/// `delivery.report.only.error` a delivered record's opaque is never handed back, and a box would leak.
const TAG_OFFSET_BITS: u32 = 40;

fn tag(origin: usize, offset: i64) -> usize {
    let (Ok(origin), Ok(offset)) = (u64::try_from(origin + 1), u64::try_from(offset)) else {
        return 0;
    };
    if offset >= 1 << TAG_OFFSET_BITS || origin >= 1 << (63 - TAG_OFFSET_BITS) {
        return 0;
    }
    usize::try_from(origin << TAG_OFFSET_BITS | offset).unwrap_or(0)
}

/// The (origin, input offset) of a tag; `None` for an untagged record.
fn untag(tag: usize) -> Option<(usize, i64)> {
    let t = tag as u64;
    let origin = t >> TAG_OFFSET_BITS;
    (origin > 0).then(|| {
        (
            (origin - 1) as usize,
            (t & ((1 << TAG_OFFSET_BITS) - 1)) as i64,
        )
    })
}

/// Records failed deliveries in the run's [`DeliveryFailures`].
struct ProducerCtx {
    failures: Arc<Mutex<DeliveryFailures>>,
    /// [`Engine::failed_shared`]: a failed delivery fails the run (its next commit gives up what the tasks did
    /// since the last one), so queries refuse from the moment it is reported, not only once that commit ran (up to
    /// the commit interval plus the delivery timeout later). Set here, where the engine lock is not taken.
    failed_shared: Arc<Mutex<Option<String>>>,
    /// The at-least-once changelog producer (its records are not tagged).
    changelog: bool,
}

impl ClientContext for ProducerCtx {}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, tag: usize) {
        if let Err((e, m)) = r {
            let mut f = self.failures.lock().unwrap();
            if f.first.is_none() {
                f.first = Some(format!("writing to {}: {e}", m.topic()));
            }
            if let Some(first) = &f.first {
                self.failed_shared
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| first.clone());
            }
            if self.changelog {
                f.changelog = true;
            } else if let Some((origin, offset)) = untag(tag) {
                let lowest = f.lowest.entry(origin).or_insert(offset);
                *lowest = (*lowest).min(offset);
            } else {
                f.untracked = true;
            }
        }
    }
}

/// Commits and closes tasks when partitions are revoked, restores and opens them when assigned. The callbacks
/// run inside `poll`, on the processing thread, while the loop holds no lock.
struct GroupCtx {
    engine: Arc<Mutex<Engine>>,
}

impl ClientContext for GroupCtx {}

impl ConsumerContext for GroupCtx {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            tracing::info!(
                partitions = tpl.count(),
                "partitions revoked: committing and closing their tasks"
            );
            // Not under the engine lock: `commit` takes it for the parts that change the engine.
            let committed = commit(&self.engine, c);
            let mut e = self.engine.lock().unwrap();
            if let Err(err) = committed {
                e.fail(err);
            }
            e.close_tasks(tpl);
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            tracing::info!(
                partitions = tpl.count(),
                "partitions assigned: restoring their tasks"
            );
            let mut e = self.engine.lock().unwrap();
            for el in tpl.elements() {
                if let Err(err) = e.open_task(el.topic(), el.partition()) {
                    e.fail(err);
                }
            }
        }
    }
}

/// The state of one running instance, shared by the processing loop and the rebalance callbacks.
struct Engine {
    topo: Arc<Topology>,
    plan: Plan,
    /// Outputs and repartition records; under exactly once also changelogs, in the one transaction. Shared so that
    /// the processing thread can wait for it without holding the engine lock (see [`commit`]).
    producer: Arc<BaseProducer<ProducerCtx>>,
    /// At least once: the transactional producer of the changelogs (entries and markers of one commit in one
    /// transaction). `None` under exactly once.
    changelog_producer: Option<BaseProducer<ProducerCtx>>,
    eos: bool,
    /// See [`StreamsConfig::abort_in_commit`].
    abort_in_commit: Option<u64>,
    /// See [`StreamsConfig::delivery_timeout`].
    delivery_timeout: Duration,
    /// Commits with new input so far.
    commits_with_data: u64,
    cache_max_bytes: usize,
    /// Open tasks by (sub-topology, partition).
    tasks: HashMap<(usize, i32), Task>,
    supplier: Arc<dyn StoreSupplier>,
    metrics: Arc<Metrics>,
    failures: Arc<Mutex<DeliveryFailures>>,
    /// The number of each (sub-topology, partition, source) whose outputs were sent (see [`tag`]), given when
    /// a task first opens in this run.
    origins: HashMap<(usize, i32, usize), usize>,
    /// Reads changelogs while restoring (assigned partitions only, no group).
    restore: BaseConsumer,
    /// An error raised in a rebalance callback, reported by the loop.
    failed: Option<Error>,
    /// Why the run failed, when it was not a delivery: a record that failed, a commit that failed, an error the
    /// loop ended with. Commits from then on commit only what is safe.
    run_failed: Option<String>,
    /// Why the run failed for queries ([`KafkaStreams::query_store`]), read without the engine lock: `run_failed`
    /// (see [`Engine::set_failed`]), or a failed delivery (set by [`ProducerCtx`]).
    failed_shared: Arc<Mutex<Option<String>>>,
    /// At least once, the changelog transaction holds a failed or partial write (a cache flush or a commit that
    /// failed): it is never committed.
    changelog_broken: bool,
    /// A failure ended the run ([`abandon`], or a commit that failed): nothing is committed any more,
    /// so the revoke callback of the group leave that follows closes the tasks without a commit.
    abandoned: bool,
}

/// One input partition of one sub-topology.
struct Task {
    sub: usize,
    partition: i32,
    /// The largest event time seen on the task's input partitions (also restored from the changelog marker).
    stream_time: i64,
    /// Per source (index as in the sub-topology), the offset after the last input record processed in full (its
    /// operators and stream-time steps returned); -1 until then. A record that failed leaves it where it was.
    offsets: Vec<i64>,
    /// Per source, the offset this run last committed for the task; -1 before its first commit.
    committed: Vec<i64>,
    /// Per source, its origin number in the tags of the records its input produced.
    origins: Vec<usize>,
    /// A record failed after it had changed the task's state (a store write): the state holds part of a record
    /// whose offset is not committed, so it must not be committed either.
    failed: bool,
    /// Records were processed since the last commit.
    dirty: bool,
    stores: Vec<StoreState>,
    /// Reused buffer of records an aggregate emits, to avoid an allocation per record.
    scratch: Vec<Record>,
}

/// The store of one aggregate in one task, with the write cache flushed at commit.
struct StoreState {
    node: NodeId,
    spec: AggregateNode,
    changelog: String,
    inner: Box<dyn KeyValueStore>,
    /// Writes since the last commit or cache flush (None: delete); reads look here first.
    cache: BTreeMap<Bytes, Option<Bytes>>,
    /// The cache's size as counted against [`StreamsConfig::cache_max_bytes`].
    cache_bytes: usize,
    /// The store's own stream time: the largest event time it has seen (restored from its last commit marker,
    /// which may be older than another store's of the same task after a crash in the middle of a commit).
    /// Lateness and window closing are decided with it.
    stream_time: i64,
    /// The stream time before the record being processed.
    stream_time_before: i64,
    /// Writes to the cache since the store opened: tells whether a record that failed had changed the state.
    writes: u64,
    /// Per source: records below this offset are already in the restored state (the changelog's last commit
    /// marker is ahead of the committed input offset when a crash fell between the two) and are not applied
    /// again.
    skip_below: Vec<i64>,
    /// Windows whose final result is still to be emitted (suppress), by close time.
    pending_final: BTreeSet<(i64, Bytes)>,
    /// Windows to delete once retention after closing has passed, by deletion time.
    expiry: BTreeSet<(i64, Bytes)>,
    /// The buffer of an outer side of a windowed stream-stream join: what emits its unmatched records.
    outer: Option<OuterSide>,
}

/// An outer side of a windowed stream-stream join (see [`crate::KStream::outer_join_windowed`]).
struct OuterSide {
    /// The join node of this side (its results go to the node's children).
    join: NodeId,
    /// The other side's buffer.
    other: NodeId,
    diff_ms: i64,
    grace_ms: i64,
    unmatched: UnmatchedFn,
    /// Buffered records that had no partner yet, by the stream time their window closes: each is emitted
    /// unmatched then. A partner that pairs with one removes it. Rebuilt from the buffer when a task opens.
    pending: BTreeSet<(i64, Bytes)>,
    /// The pending records rebuilt from the buffer, whose pairings before the restart are not known: whether
    /// one found a partner is decided against the other buffer when it closes.
    restored: HashSet<Bytes>,
}

impl OuterSide {
    /// The stream time at which the window of a record of time `ts` has closed.
    fn close(&self, ts: i64) -> i64 {
        ts.saturating_add(self.diff_ms)
            .saturating_add(self.grace_ms)
    }
}

/// What a write-cache entry costs beyond its key and value (map node, `Bytes` headers), roughly.
const CACHE_ENTRY_OVERHEAD: usize = 64;

/// Per-record context for the operators.
struct Cx<'a> {
    topo: &'a Topology,
    producer: &'a BaseProducer<ProducerCtx>,
    /// Where changelog entries and markers go (the transactional one).
    changelog: &'a BaseProducer<ProducerCtx>,
    names: &'a HashMap<TopicRef, String>,
    metrics: &'a Metrics,
    /// The source (index in the sub-topology) and offset of the input record being processed.
    src: usize,
    offset: i64,
    /// The delivery opaque of what this input produces ([`tag`]).
    tag: usize,
}

impl Engine {
    /// Records why the run failed (the first reason stays) in `run_failed`, and for queries at once.
    fn set_failed(&mut self, why: impl FnOnce() -> String) {
        let why = self.run_failed.get_or_insert_with(why).clone();
        self.failed_shared.lock().unwrap().get_or_insert(why);
    }

    /// Records an error of a rebalance callback for the loop to end the run with; queries refuse from now on.
    fn fail(&mut self, e: Error) {
        self.set_failed(|| e.to_string());
        if self.failed.is_none() {
            self.failed = Some(e);
        }
    }

    fn process(&mut self, m: &BorrowedMessage<'_>) -> Result<()> {
        let Some(&(sub, node, src)) = self.plan.sources.get(m.topic()) else {
            return Ok(());
        };
        if !self.tasks.contains_key(&(sub, m.partition())) {
            // A message of a partition this instance does not own (any more): left in a queue across a
            // rebalance. Processing it would run a second copy of another member's task.
            tracing::debug!(
                topic = m.topic(),
                partition = m.partition(),
                "message of an unowned partition skipped"
            );
            return Ok(());
        }
        let Engine {
            topo,
            plan,
            producer,
            changelog_producer,
            tasks,
            metrics,
            cache_max_bytes,
            ..
        } = self;
        let task = tasks.get_mut(&(sub, m.partition())).expect("checked above");
        task.dirty = true;
        inc(&metrics.records_processed);
        let mut rec = Record {
            key: m.key().map(Bytes::copy_from_slice),
            value: m.payload().map(Bytes::copy_from_slice),
            timestamp: m.timestamp().to_millis().unwrap_or(-1),
        };
        if let NodeKind::Source {
            extractor: Some(f), ..
        } = &topo.nodes[node].kind
        {
            rec.timestamp = f(&rec);
        }
        if rec.timestamp < 0 {
            inc(&metrics.invalid_timestamp_records);
            task.offsets[src] = m.offset() + 1;
            return Ok(());
        }
        // Stream times and the write count before the record: a record that fails without having written to a
        // store leaves the state as it was before it (stream times put back), consistent with its offset not
        // being committed.
        let task_time = task.stream_time;
        let writes: u64 = task.stores.iter().map(|st| st.writes).sum();
        task.stream_time = task.stream_time.max(rec.timestamp);
        for st in &mut task.stores {
            st.stream_time_before = st.stream_time;
            st.stream_time = st.stream_time.max(rec.timestamp);
        }
        let cx = Cx {
            topo,
            producer,
            changelog: changelog_producer.as_ref().unwrap_or(producer),
            names: &plan.names,
            metrics,
            src,
            offset: m.offset(),
            tag: tag(task.origins[src], m.offset()),
        };
        let mut flushed = false;
        let res = forward(&cx, task, node, rec)
            .and_then(|()| advance(&cx, task))
            .and_then(|()| {
                // A full write cache goes to the store and the changelog now, inside the commit's transaction;
                // the commit marker still comes at the commit.
                for st in &mut task.stores {
                    if st.cache_bytes > *cache_max_bytes {
                        flushed = true;
                        st.flush_cache(&cx, task.partition)?;
                    }
                }
                Ok(())
            });
        match res {
            // Only now is the record processed: its offset may be committed once its outputs are acknowledged.
            Ok(()) => task.offsets[src] = m.offset() + 1,
            Err(e) => {
                if flushed {
                    self.changelog_broken = true;
                }
                if task.stores.iter().map(|st| st.writes).sum::<u64>() != writes {
                    task.failed = true;
                } else {
                    task.stream_time = task_time;
                    for st in &mut task.stores {
                        st.stream_time = st.stream_time_before;
                    }
                }
                self.set_failed(|| e.to_string());
                return Err(e);
            }
        }
        Ok(())
    }

    fn open_task(&mut self, topic: &str, partition: i32) -> Result<()> {
        let Some(&(sub, _, _)) = self.plan.sources.get(topic) else {
            return Ok(());
        };
        if self.tasks.contains_key(&(sub, partition)) {
            return Ok(());
        }
        let s = &self.topo.subs[sub];
        let source_names: Vec<&String> =
            s.sources.iter().map(|(t, _)| &self.plan.names[t]).collect();
        let mut stores = Vec::new();
        let mut stream_time = -1;
        for &a in &s.aggregates {
            let NodeKind::Aggregate(spec) = &self.topo.nodes[a].kind else {
                continue;
            };
            let changelog = self.plan.changelogs[&a].clone();
            let mut inner = self.supplier.open(&spec.store, partition)?;
            // The local store is a cache of the changelog, rebuilt whenever the task opens, under both
            // guarantees: after a crash it may hold writes of a commit that never finished (a cache flush or a
            // commit cut short), which only the changelog, read_committed, tells apart. (A local checkpoint
            // written at a clean close would let a task skip the replay; not implemented.)
            inner.clear()?;
            let marker = restore_store(
                &self.restore,
                &changelog,
                partition,
                inner.as_mut(),
                &self.metrics,
            )?;
            stream_time = stream_time.max(marker.stream_time);
            let skip_below: Vec<i64> = source_names
                .iter()
                .map(|n| marker.offsets.get(*n).copied().unwrap_or(-1))
                .collect();
            let mut st = StoreState {
                node: a,
                spec: spec.clone(),
                changelog,
                inner,
                cache: BTreeMap::new(),
                cache_bytes: 0,
                skip_below,
                stream_time: marker.stream_time,
                stream_time_before: marker.stream_time,
                writes: 0,
                pending_final: BTreeSet::new(),
                expiry: BTreeSet::new(),
                outer: self
                    .topo
                    .nodes
                    .iter()
                    .enumerate()
                    .find_map(|(id, n)| match &n.kind {
                        NodeKind::StreamJoin {
                            own,
                            other,
                            windows,
                            unmatched: Some(f),
                            ..
                        } if *own == a => Some(OuterSide {
                            join: id,
                            other: *other,
                            diff_ms: windows.diff_ms,
                            grace_ms: windows.grace_ms,
                            unmatched: f.clone(),
                            pending: BTreeSet::new(),
                            restored: HashSet::new(),
                        }),
                        _ => None,
                    }),
            };
            // Every entry of a windowed store (or join buffer) is in the window layout: one that is not would
            // never expire and never be emitted, so it stops the task instead of staying for ever.
            let changelog_name = st.changelog.clone();
            let parse = |k: &[u8]| {
                WindowStore::parse(k).map(|(_, w)| w).ok_or_else(|| {
                    Error::Store(format!(
                        "store `{}` (partition {partition}) holds the key {} that is not a window key (length, \
                         key, start, end): its changelog {} was written by another topology or program (an \
                         unwindowed aggregation with the same store name?). Give the aggregation another store \
                         name, or reset the application (stop it and delete its internal topics)",
                        spec.store,
                        hex(k),
                        changelog_name
                    ))
                })
            };
            if matches!(spec.agg, Aggregation::Buffer) {
                for (k, _) in st.inner.prefix_scan(b"")? {
                    let win = parse(&k)?;
                    // An outer side's records whose window had not closed at the last commit: whether each
                    // found a partner is decided when it closes (an unmatched result emitted before a crash
                    // was for a window closed at that commit's stream time or earlier).
                    if let Some(o) = &mut st.outer {
                        let close = o.close(win.start);
                        if close > marker.stream_time {
                            o.pending.insert((close, k.clone()));
                            o.restored.insert(k.clone());
                        }
                    }
                    st.expiry
                        .insert((win.start.saturating_add(spec.retention_ms), k));
                }
            }
            if let Some(w) = spec.windows {
                for (k, _) in st.inner.prefix_scan(b"")? {
                    let win = parse(&k)?;
                    let close = w.close_time(win);
                    if spec.emit_final && close > marker.stream_time {
                        st.pending_final.insert((close, k.clone()));
                    }
                    st.expiry
                        .insert((close.saturating_add(spec.retention_ms), k));
                }
            }
            tracing::info!(store = %spec.store, partition, stream_time = marker.stream_time, "store restored");
            stores.push(st);
        }
        inc(&self.metrics.tasks_opened);
        let origins = (0..s.sources.len())
            .map(|j| {
                let n = self.origins.len();
                *self.origins.entry((sub, partition, j)).or_insert(n)
            })
            .collect();
        self.tasks.insert(
            (sub, partition),
            Task {
                sub,
                partition,
                stream_time,
                offsets: vec![-1; s.sources.len()],
                committed: vec![-1; s.sources.len()],
                origins,
                failed: false,
                dirty: false,
                stores,
                scratch: Vec::new(),
            },
        );
        Ok(())
    }

    fn close_tasks(&mut self, tpl: &TopicPartitionList) {
        for el in tpl.elements() {
            if let Some(&(sub, _, _)) = self.plan.sources.get(el.topic()) {
                self.tasks.remove(&(sub, el.partition()));
            }
        }
    }

    /// Makes what was processed durable: every store's cache goes to the store and its changelog, followed by a
    /// commit marker; at least once, the outputs are flushed, the changelog transaction commits, then the input
    /// offsets; exactly once, the offsets join the one transaction, which commits. After a failure nothing is
    /// committed any more, except, at least once, by the commit that meets the failure first (see
    /// [`abandon`]).
    ///
    /// At least once, `flushed` is the outcome of [`flush_or_purge`] of the output producer when the caller
    /// flushed it (without the engine lock, see [`commit`]); `None`: flushed here.
    fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        flushed: Option<KafkaResult<()>>,
    ) -> Result<()> {
        if self.abandoned {
            return Ok(());
        }
        if self.eos {
            self.commit_exactly_once(consumer)
        } else {
            self.commit_at_least_once(consumer, flushed)
        }
    }

    /// The first failure of the run, if any (sticky: never taken away).
    fn failure(&self) -> Option<String> {
        self.run_failed
            .clone()
            .or_else(|| self.failures.lock().unwrap().first.clone())
    }

    fn commit_exactly_once<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<()> {
        if let Some(e) = self.failure() {
            return Err(Error::Kafka(e));
        }
        let mut tpl = TopicPartitionList::new();
        let mut markers = Vec::new();
        let mut any = false;
        let Engine {
            topo,
            plan,
            producer,
            tasks,
            metrics,
            ..
        } = self;
        let cx = Cx {
            topo,
            producer,
            changelog: producer,
            names: &plan.names,
            metrics,
            src: 0,
            offset: 0,
            tag: 0,
        };
        for task in tasks.values_mut() {
            if !task.dirty {
                continue;
            }
            any = true;
            add_offsets(&mut tpl, topo, plan, task, &task.offsets)?;
            flush_stores(&cx, plan, task, &mut markers)?;
            task.dirty = false;
        }
        if !any {
            return Ok(());
        }
        self.commits_with_data += 1;
        self.abort_if_injected();
        // The markers close the commit in the changelogs, in the one transaction with the entries, the outputs
        // and the offsets.
        send_markers(&self.producer, &self.metrics, &markers)?;
        let gm = consumer
            .group_metadata()
            .ok_or_else(|| Error::Kafka("no consumer group metadata to commit with".into()))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &gm, CLIENT_TIMEOUT)?;
        self.producer.commit_transaction(CLIENT_TIMEOUT)?;
        self.producer.begin_transaction()?;
        for task in self.tasks.values_mut() {
            task.committed.clone_from(&task.offsets);
        }
        inc(&self.metrics.commits);
        Ok(())
    }

    /// Test fault injection ([`StreamsConfig::abort_in_commit`]): entries written and acknowledged, markers not,
    /// nothing committed.
    fn abort_if_injected(&self) {
        if self.abort_in_commit == Some(self.commits_with_data) {
            if let Some(c) = &self.changelog_producer {
                let _ = c.flush(CLIENT_TIMEOUT);
            }
            let _ = self.producer.flush(CLIENT_TIMEOUT);
            tracing::error!(
                commit = self.commits_with_data,
                "aborting the process in the middle of a commit (abort_in_commit)"
            );
            std::process::abort();
        }
    }

    /// At least once. Without a failure: the outputs are flushed (every delivery report is in), every dirty
    /// task's stores are flushed with their commit markers, the changelog transaction commits (once it is
    /// visible, a restarted task skips the input it reflects, so that input's outputs must be acknowledged
    /// before), then the input offsets.
    ///
    /// After a failure (the flush reveals a lost output, or the run failed before), only what is safe is
    /// committed, and nothing after that:
    /// - per task source, the offset after the last input processed in full and before the first input one of
    ///   whose outputs was not delivered (each output is tagged with its input, [`tag`]): the next run starts at
    ///   the record that failed or at the first input whose output was lost, and the records before it, whose
    ///   outputs are acknowledged, are not sent again, however often the run fails (no further copies in a
    ///   repartition topic for the next sub-topology to count);
    /// - the changelog transaction, and so the offsets of tasks with stores, only if no such task is affected
    ///   (a lost output of an input it processed, a record that failed after writing to a store, a changelog
    ///   write that failed): the state then reflects exactly the offsets committed (a record that failed before
    ///   any store write left the state as it was before it). Otherwise the transaction is aborted and no task
    ///   with a store commits: a state that reflected an input whose output was lost would make the next run skip
    ///   that input (the marker's offsets) and never emit its output again; instead the next run restores the
    ///   state of the last commit and processes from there (its outputs repeat, the state is exact);
    /// - nothing, when what was delivered cannot be told (the reports of the outputs purged after
    ///   [`StreamsConfig::delivery_timeout`] did not come back, an untagged output failed).
    ///
    /// Records after the first lost output were sent before its delivery report came in: a run failing on the
    /// same lost output again and again sends those again each time (what was sent to a repartition topic is
    /// then counted again downstream). A record that fails when processed stops the run at once.
    fn commit_at_least_once<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        flushed: Option<KafkaResult<()>>,
    ) -> Result<()> {
        let dirty = self.tasks.values().any(|t| t.dirty);
        let mut failure = self.failure();
        if !dirty && failure.is_none() {
            return Ok(());
        }
        // Every output sent so far is delivered or failed once this returns (`Ok`), each failure reported with
        // its tag, also when the broker does not answer in time (see `flush_or_purge`).
        let flushed =
            flushed.unwrap_or_else(|| flush_or_purge(&self.producer, self.delivery_timeout));
        if failure.is_none() {
            failure = self.failure();
        }
        let (untracked, changelog_failed, lowest) = {
            let f = self.failures.lock().unwrap();
            (f.untracked, f.changelog, f.lowest.clone())
        };
        if let Err(e) = &flushed {
            failure.get_or_insert_with(|| format!("flushing the outputs: {e}"));
        }
        let untracked = untracked || flushed.is_err();
        // Known now: queries refuse from here on, not only once the aborts below are done.
        if let Some(f) = &failure {
            self.set_failed(|| f.clone());
        }
        // Per task, the offsets that may be committed; whether the states may be.
        let mut upto: HashMap<(usize, i32), Vec<i64>> = HashMap::new();
        let mut states_ok = !changelog_failed && !self.changelog_broken;
        for (k, task) in &self.tasks {
            let u: Vec<i64> = match &failure {
                None => task.offsets.clone(),
                Some(_) if untracked => task.committed.clone(),
                Some(_) => task
                    .offsets
                    .iter()
                    .zip(&task.origins)
                    .map(|(&o, origin)| lowest.get(origin).map_or(o, |&l| o.min(l)))
                    .collect(),
            };
            if !task.stores.is_empty() && (task.failed || u != task.offsets) {
                states_ok = false;
            }
            upto.insert(*k, u);
        }
        if dirty {
            self.commits_with_data += 1;
        }
        let states_committed = if states_ok {
            match self.commit_changelogs() {
                Ok(()) => {
                    if let Some(c) = &self.changelog_producer {
                        if let Err(e) = c.begin_transaction() {
                            failure.get_or_insert_with(|| e.to_string());
                        }
                    }
                    true
                }
                Err(e) => {
                    let f = failure.get_or_insert_with(|| e.to_string()).clone();
                    self.set_failed(|| f);
                    self.abort_changelogs();
                    false
                }
            }
        } else {
            self.abort_changelogs();
            false
        };
        let mut tpl = TopicPartitionList::new();
        for (k, task) in &self.tasks {
            if states_committed || task.stores.is_empty() {
                add_offsets(&mut tpl, &self.topo, &self.plan, task, &upto[k])?;
            }
        }
        if tpl.count() > 0 {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => {
                    for (k, task) in &mut self.tasks {
                        if states_committed || task.stores.is_empty() {
                            let u = &upto[k];
                            for (c, &o) in task.committed.iter_mut().zip(u) {
                                *c = (*c).max(o);
                            }
                        }
                    }
                }
                Err(e) => {
                    failure.get_or_insert_with(|| e.to_string());
                }
            }
        }
        if let Some(f) = failure {
            self.set_failed(|| f.clone());
            self.abandoned = true;
            return Err(Error::Kafka(f));
        }
        for task in self.tasks.values_mut() {
            task.dirty = false;
        }
        inc(&self.metrics.commits);
        Ok(())
    }

    /// At least once: every dirty task's stores flushed with their commit markers into the changelog
    /// transaction, which commits (`Ok`: committed; the next one is not begun yet).
    fn commit_changelogs(&mut self) -> Result<()> {
        let Engine {
            topo,
            plan,
            producer,
            changelog_producer,
            tasks,
            metrics,
            ..
        } = self;
        let Some(changelog) = changelog_producer else {
            return Ok(());
        };
        let cx = Cx {
            topo,
            producer,
            changelog,
            names: &plan.names,
            metrics,
            src: 0,
            offset: 0,
            tag: 0,
        };
        let mut markers = Vec::new();
        for task in tasks.values_mut() {
            if task.dirty {
                flush_stores(&cx, plan, task, &mut markers)?;
            }
        }
        self.abort_if_injected();
        let changelog = self.changelog_producer.as_ref().expect("checked");
        // Entries and markers are in one transaction: a restore sees all or nothing of a commit, and compaction
        // drops an aborted commit's entries instead of letting them replace the committed values they would
        // have overwritten.
        send_markers(changelog, &self.metrics, &markers)?;
        changelog.commit_transaction(CLIENT_TIMEOUT)?;
        Ok(())
    }

    /// At least once, after a failure: the changelog transaction (entries of the failed run since the last
    /// commit) is aborted, so that a restore sees the state of the last commit. Nothing is committed after it.
    ///
    /// This runs under the engine lock (it is part of the commit, [`Engine::commit_at_least_once`]): its flush and
    /// its abort may wait up to [`CLIENT_TIMEOUT`] each against a broker that does not answer. Queries do not
    /// wait for it, the failure being recorded for them before (`set_failed`, read without the lock); whatever
    /// else takes the lock meanwhile does.
    fn abort_changelogs(&mut self) {
        self.changelog_broken = true;
        let Some(c) = &self.changelog_producer else {
            return;
        };
        abort_failed_transaction(c, "changelog transaction");
    }
}

/// How long the delivery reports of purged records may take to be served: they are queued by the purge itself,
/// so this is a bound that should never be reached.
const PURGED_REPORTS_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until every record sent through `producer` is delivered or failed, its delivery report served. What is
/// still queued or in flight after `timeout` (a slow or stalled broker) is purged: its reports come back as
/// failures, each with its record's tag, so the commit still knows input by input what was delivered and commits
/// up to the first input whose output was not, instead of nothing (every restart would then send everything since
/// the last commit again, a slow broker multiplying the outputs). A purged record that was in flight may have been
/// written after all: it counts as lost and is sent again by the next run (at least once).
///
/// `Err` only when the purged records' reports do not come back either: what was delivered is then not known.
fn flush_or_purge(producer: &BaseProducer<ProducerCtx>, timeout: Duration) -> KafkaResult<()> {
    match producer.flush(timeout) {
        Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
            tracing::warn!(
                ?timeout,
                in_flight = producer.in_flight_count(),
                "outputs not acknowledged in time: purged, counted as not delivered"
            );
            // The purge has no timeout, and needs none: librdkafka purges its own queues at once and hands each
            // broker thread an operation to purge its queues and in-flight requests, waiting for their replies
            // (not for any broker: the threads serve operations between their non-blocking socket reads and
            // writes, and answer within one turn of their loop, a stalled connection included). The reports of
            // what it purged are served by the flush below, bounded by PURGED_REPORTS_TIMEOUT.
            producer.purge(PurgeConfig::default().queue().inflight());
            producer.flush(PURGED_REPORTS_TIMEOUT)
        }
        r => r,
    }
}

/// Adds a task's offsets `upto` (per source) that are ahead of what it committed.
fn add_offsets(
    tpl: &mut TopicPartitionList,
    topo: &Topology,
    plan: &Plan,
    task: &Task,
    upto: &[i64],
) -> Result<()> {
    for (j, (t, _)) in topo.subs[task.sub].sources.iter().enumerate() {
        if upto[j] >= 0 && upto[j] > task.committed[j] {
            tpl.add_partition_offset(&plan.names[t], task.partition, Offset::Offset(upto[j]))?;
        }
    }
    Ok(())
}

/// Writes a task's store caches to the stores and the changelogs, and collects each store's commit marker
/// (changelog topic, partition, marker: stream time and the task's input offsets) to send after every entry.
fn flush_stores(
    cx: &Cx<'_>,
    plan: &Plan,
    task: &mut Task,
    markers: &mut Vec<(String, i32, Vec<u8>)>,
) -> Result<()> {
    let sub = &cx.topo.subs[task.sub];
    for st in &mut task.stores {
        let mut marker = Vec::with_capacity(16 + 32 * sub.sources.len());
        marker.extend_from_slice(&st.stream_time.to_be_bytes());
        marker.extend_from_slice(&(sub.sources.len() as u16).to_be_bytes());
        for (j, (t, _)) in sub.sources.iter().enumerate() {
            let name = plan.names[t].as_bytes();
            marker.extend_from_slice(&(name.len() as u16).to_be_bytes());
            marker.extend_from_slice(name);
            marker.extend_from_slice(&task.offsets[j].max(st.skip_below[j]).to_be_bytes());
        }
        st.flush_cache(cx, task.partition)?;
        markers.push((st.changelog.clone(), task.partition, marker));
    }
    Ok(())
}

fn send_markers(
    producer: &BaseProducer<ProducerCtx>,
    metrics: &Metrics,
    markers: &[(String, i32, Vec<u8>)],
) -> Result<()> {
    for (topic, partition, marker) in markers {
        send_to(
            producer,
            metrics,
            topic,
            Some(*partition),
            Some(&[]),
            Some(marker),
            None,
            0,
        )?;
    }
    Ok(())
}

/// What a changelog's last commit marker says: the stream time and the input offsets the state reflects.
#[derive(Default)]
struct Marker {
    stream_time: i64,
    offsets: HashMap<String, i64>,
}

fn decode_marker(b: &[u8]) -> Option<Marker> {
    let stream_time = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let n = u16::from_be_bytes(b.get(8..10)?.try_into().ok()?) as usize;
    let mut pos = 10;
    let mut offsets = HashMap::new();
    for _ in 0..n {
        let len = u16::from_be_bytes(b.get(pos..pos + 2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(b.get(pos + 2..pos + 2 + len)?)
            .ok()?
            .to_string();
        pos += 2 + len;
        let off = i64::from_be_bytes(b.get(pos..pos + 8)?.try_into().ok()?);
        pos += 8;
        offsets.insert(name, off);
    }
    Some(Marker {
        stream_time,
        offsets,
    })
}

/// Replays changelog partition `topic`-`partition` into `store`, read_committed, to its end: every entry is
/// applied (as Kafka Streams restores), and the last commit marker gives the stream time and input offsets.
///
/// Entries of a commit that never finished are invisible (their transaction is aborted), so everything read is
/// followed by its commit's marker. Entries after the last marker are possible only from a writer outside a
/// transaction (this library before changelog transactions, or another program); they are applied too, never
/// dropped: dropping them would lose state once compaction has removed the older values they replaced.
fn restore_store(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    store: &mut dyn KeyValueStore,
    metrics: &Metrics,
) -> Result<Marker> {
    let mut marker = Marker {
        stream_time: -1,
        offsets: HashMap::new(),
    };
    let (_, high) = consumer.fetch_watermarks(topic, partition, CLIENT_TIMEOUT)?;
    if high <= 0 {
        return Ok(marker);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    let mut pending: Vec<(Bytes, Option<Bytes>)> = Vec::new();
    // Entries read since the last marker.
    let mut tail = 0usize;
    let result = loop {
        if Instant::now() > deadline {
            break Err(Error::Kafka(format!(
                "restoring from {topic}-{partition} took longer than {RESTORE_TIMEOUT:?}"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                inc(&metrics.records_restored);
                let key = m.key().unwrap_or_default();
                if key.is_empty() {
                    marker = decode_marker(m.payload().unwrap_or_default()).ok_or_else(|| {
                        Error::Store(format!(
                            "malformed commit marker at {topic}-{partition}@{}",
                            m.offset()
                        ))
                    })?;
                    tail = 0;
                } else {
                    pending.push((
                        Bytes::copy_from_slice(key),
                        m.payload().map(Bytes::copy_from_slice),
                    ));
                    tail += 1;
                    if pending.len() >= 4096 {
                        store.write_batch(&mut pending.drain(..))?;
                    }
                }
            }
            // Only this partition's end counts: an end-of-partition event of an earlier restore must not cut
            // this one short (the queue is also drained after each restore).
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break Ok(()),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => break Err(e.into()),
            None => {}
        }
    };
    consumer.unassign()?;
    // Drop whatever the fetcher still queued (messages or end events), so the next restore starts clean.
    while consumer.poll(Duration::ZERO).is_some() {}
    result?;
    store.write_batch(&mut pending.drain(..))?;
    if tail > 0 {
        tracing::warn!(
            topic,
            partition,
            entries = tail,
            "the changelog ends with entries after its last commit marker, written outside a transaction: \
             applied; input they reflect beyond the marker's offsets may be counted twice"
        );
    }
    Ok(marker)
}

fn send(
    cx: &Cx<'_>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    timestamp: Option<i64>,
) -> Result<()> {
    send_to(
        cx.producer,
        cx.metrics,
        topic,
        partition,
        key,
        value,
        timestamp,
        cx.tag,
    )
}

/// Sends a record tagged with the input it came from ([`tag`]; 0: none).
#[allow(clippy::too_many_arguments)]
fn send_to(
    producer: &BaseProducer<ProducerCtx>,
    metrics: &Metrics,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    timestamp: Option<i64>,
    tag: usize,
) -> Result<()> {
    let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, tag);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    if let Some(ts) = timestamp {
        rec = rec.timestamp(ts);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => {
                inc(&metrics.records_sent);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(10));
                rec = r;
            }
            Err((e, _)) => return Err(Error::Kafka(format!("writing to {topic}: {e}"))),
        }
    }
}

fn forward(cx: &Cx<'_>, task: &mut Task, from: NodeId, r: Record) -> Result<()> {
    let children = &cx.topo.nodes[from].children;
    match children.len() {
        0 => Ok(()),
        1 => process_node(cx, task, children[0], r),
        n => {
            for &c in &children[..n - 1] {
                process_node(cx, task, c, r.clone())?;
            }
            process_node(cx, task, children[n - 1], r)
        }
    }
}

fn process_node(cx: &Cx<'_>, task: &mut Task, id: NodeId, r: Record) -> Result<()> {
    let topo = cx.topo;
    match &topo.nodes[id].kind {
        NodeKind::Source { .. } | NodeKind::Pass => forward(cx, task, id, r),
        NodeKind::Map(f) => forward(cx, task, id, f(r)),
        NodeKind::Filter(f) => {
            if f(&r) {
                forward(cx, task, id, r)
            } else {
                Ok(())
            }
        }
        NodeKind::FlatMap(f) => {
            let mut res = Ok(());
            let refused = f(r, &mut |o| {
                if res.is_ok() {
                    res = forward(cx, task, id, o);
                }
            });
            if let Err(reason) = refused {
                let (topic, _) = &topo.subs[task.sub].sources[cx.src];
                return Err(Error::Record(format!(
                    "{} partition {} offset {}: {reason}",
                    cx.names[topic], task.partition, cx.offset
                )));
            }
            res
        }
        NodeKind::Branch(preds) => {
            for (i, p) in preds.iter().enumerate() {
                if p(&r) {
                    return process_node(cx, task, topo.nodes[id].children[i], r);
                }
            }
            Ok(())
        }
        NodeKind::Sink { topic } => send(
            cx,
            &cx.names[topic],
            None,
            r.key.as_deref(),
            r.value.as_deref(),
            Some(r.timestamp),
        ),
        NodeKind::Aggregate(a) => aggregate(cx, task, id, a, r),
        NodeKind::StreamJoin {
            own,
            other,
            windows,
            joiner,
            is_left,
            ..
        } => stream_join(
            cx,
            task,
            id,
            (*own, *other),
            *windows,
            joiner.as_ref(),
            *is_left,
            r,
        ),
        NodeKind::Join {
            table,
            joiner,
            left,
        } => {
            let Some(key) = r.key.as_deref() else {
                inc(&cx.metrics.dropped_null_records);
                return Ok(());
            };
            let st = task
                .stores
                .iter()
                .find(|s| s.node == *table)
                .expect("a joined table's store is in the stream's task");
            let found = st.get(&kv_key(key))?;
            if found.is_none() && !*left {
                return Ok(());
            }
            let value = joiner(&r, found.as_deref());
            let out = Record {
                key: r.key,
                value: Some(value),
                timestamp: r.timestamp,
            };
            forward(cx, task, id, out)
        }
    }
}

/// The store key of an unwindowed aggregate: a 0 byte, then the record key (the empty key is the commit
/// marker's).
fn kv_key(key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(0);
    out.extend_from_slice(key);
    Bytes::from(out)
}

/// A stored count, or an error that stops the task: a value that is not 8 bytes was not written by `count()`
/// (another program wrote the changelog, or the store name was reused for another aggregation), and counting
/// on from 0 would silently lose the count.
fn stored_count(store: &str, key: &[u8], v: &[u8]) -> Result<i64> {
    crate::record::decode_count(v).ok_or_else(|| {
        Error::Store(format!(
            "store `{store}` holds {} bytes ({}) for key {} where count() keeps an 8-byte big-endian integer: \
             its changelog was written by another program or aggregation. Give the count another store name, or \
             reset the application (stop it and delete its internal topics)",
            v.len(),
            hex(&v[..v.len().min(32)]),
            hex(&key[..key.len().min(64)])
        ))
    })
}

/// Bytes as hex, for error messages.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn apply(
    agg: &Aggregation,
    store: &str,
    key: &[u8],
    r: &Record,
    old: Option<&[u8]>,
) -> Result<Bytes> {
    Ok(match agg {
        Aggregation::Count => encode_count(match old {
            None => 1,
            Some(o) => stored_count(store, key, o)?.saturating_add(1),
        }),
        Aggregation::Reduce(f) => match old {
            None => r.value.clone().unwrap_or_default(),
            Some(o) => f(o, r.value_bytes()),
        },
        Aggregation::Aggregate { init, add, .. } => match old {
            Some(o) => add(key, r, o),
            None => add(key, r, &init()),
        },
        Aggregation::Latest | Aggregation::Buffer => r.value.clone().unwrap_or_default(),
    })
}

fn merge_aggs(agg: &Aggregation, store: &str, key: &[u8], a: &[u8], b: &[u8]) -> Result<Bytes> {
    Ok(match agg {
        Aggregation::Count => {
            encode_count(stored_count(store, key, a)?.saturating_add(stored_count(store, key, b)?))
        }
        Aggregation::Reduce(f) => f(a, b),
        Aggregation::Latest | Aggregation::Buffer => Bytes::copy_from_slice(b),
        Aggregation::Aggregate { merge, .. } => match merge {
            Some(m) => m(key, a, b),
            None => Bytes::copy_from_slice(b),
        },
    })
}

impl StoreState {
    fn get(&self, k: &[u8]) -> Result<Option<Bytes>> {
        match self.cache.get(k) {
            Some(v) => Ok(v.clone()),
            None => self.inner.get(k),
        }
    }

    fn put(&mut self, k: Bytes, v: Option<Bytes>) {
        self.writes += 1;
        let (klen, vlen) = (k.len(), v.as_ref().map_or(0, Bytes::len));
        match self.cache.insert(k, v) {
            Some(old) => {
                self.cache_bytes =
                    (self.cache_bytes + vlen).saturating_sub(old.map_or(0, |o| o.len()))
            }
            None => self.cache_bytes += CACHE_ENTRY_OVERHEAD + klen + vlen,
        }
    }

    /// Writes the cache to the changelog (inside the open transaction) and to the store.
    fn flush_cache(&mut self, cx: &Cx<'_>, partition: i32) -> Result<()> {
        self.cache_bytes = 0;
        if self.cache.is_empty() {
            return Ok(());
        }
        let cache = std::mem::take(&mut self.cache);
        for (k, v) in &cache {
            send_to(
                cx.changelog,
                cx.metrics,
                &self.changelog,
                Some(partition),
                Some(k),
                v.as_deref(),
                None,
                0,
            )?;
        }
        self.inner.write_batch(&mut cache.into_iter())
    }

    /// Every window of `key`, the cache's writes over the store's entries, by ascending start.
    fn windows_of(&self, key: &[u8]) -> Result<Vec<(Window, Bytes)>> {
        let prefix = WindowStore::key_prefix(key);
        let mut m: BTreeMap<Bytes, Bytes> = self.inner.prefix_scan(&prefix)?.into_iter().collect();
        for (k, v) in self
            .cache
            .range(Bytes::from(prefix.clone())..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            match v {
                Some(v) => {
                    m.insert(k.clone(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        Ok(m.into_iter()
            .filter_map(|(k, v)| WindowStore::parse(&k).map(|(_, w)| (w, v)))
            .collect())
    }

    /// Every entry, the cache's writes over the store's, in key order.
    fn scan(&self) -> Result<Vec<(Bytes, Bytes)>> {
        let mut m: BTreeMap<Bytes, Bytes> = self.inner.prefix_scan(b"")?.into_iter().collect();
        for (k, v) in &self.cache {
            match v {
                Some(v) => {
                    m.insert(k.clone(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        Ok(m.into_iter().collect())
    }

    fn track(&mut self, close: i64, sk: &Bytes) {
        if self.spec.emit_final {
            self.pending_final.insert((close, sk.clone()));
        }
        self.expiry
            .insert((close.saturating_add(self.spec.retention_ms), sk.clone()));
    }

    fn untrack(&mut self, close: i64, sk: &Bytes) {
        self.pending_final.remove(&(close, sk.clone()));
        self.expiry
            .remove(&(close.saturating_add(self.spec.retention_ms), sk.clone()));
    }
}

fn aggregate(cx: &Cx<'_>, task: &mut Task, id: NodeId, a: &AggregateNode, r: Record) -> Result<()> {
    let latest = matches!(a.agg, Aggregation::Latest);
    // Borrowed, not cloned: a clone of a fresh `Bytes` allocates.
    let (Some(key), true) = (r.key.as_deref(), r.value.is_some() || latest) else {
        inc(&cx.metrics.dropped_null_records);
        return Ok(());
    };
    let mut out = std::mem::take(&mut task.scratch);
    let si = task
        .stores
        .iter()
        .position(|s| s.node == id)
        .expect("every aggregate of a task has its store");
    let st = &mut task.stores[si];
    let stream_time = st.stream_time;
    if cx.offset < st.skip_below[cx.src] {
        task.scratch = out;
        return Ok(());
    }
    match a.windows {
        None if latest && r.value.is_none() => {
            st.put(kv_key(key), None);
            out.push(r);
        }
        None => {
            let sk = kv_key(key);
            let old = st.get(&sk)?;
            let new = apply(&a.agg, &a.store, key, &r, old.as_deref())?;
            st.put(sk, Some(new.clone()));
            out.push(Record {
                key: r.key,
                value: Some(new),
                timestamp: r.timestamp,
            });
        }
        Some(Windows::Time(tw)) => {
            let mut any = false;
            for w in tw.windows_for(r.timestamp) {
                let close = tw.close_time(w);
                if close <= stream_time {
                    inc(&cx.metrics.late_window_updates_dropped);
                    continue;
                }
                any = true;
                let sk = WindowStore::store_key(key, w);
                let new = if let Some(Some(slot)) = st.cache.get_mut(&sk) {
                    // A window written since the last flush: updated in place, one map lookup.
                    let new = apply(&a.agg, &a.store, key, &r, Some(slot))?;
                    st.writes += 1;
                    st.cache_bytes = (st.cache_bytes + new.len()).saturating_sub(slot.len());
                    *slot = new.clone();
                    new
                } else {
                    let old = st.get(&sk)?;
                    let new = apply(&a.agg, &a.store, key, &r, old.as_deref())?;
                    if old.is_none() {
                        st.track(close, &sk);
                    }
                    st.put(sk, Some(new.clone()));
                    new
                };
                if !a.emit_final {
                    out.push(Record {
                        key: Some(WindowedKey::encode(key, w)),
                        value: Some(new),
                        timestamp: r.timestamp,
                    });
                }
            }
            if !any {
                inc(&cx.metrics.late_records_dropped);
            }
        }
        Some(Windows::Session(sw)) => {
            let over: Vec<(Window, Bytes)> = st
                .windows_of(key)?
                .into_iter()
                .filter(|(w, _)| sw.overlaps(*w, r.timestamp))
                .collect();
            let wins: Vec<Window> = over.iter().map(|x| x.0).collect();
            let merged = sw.merge(r.timestamp, &wins);
            if !sw.accepts(merged, stream_time) {
                inc(&cx.metrics.late_window_updates_dropped);
                inc(&cx.metrics.late_records_dropped);
            } else {
                let mut acc: Option<Bytes> = None;
                for (w, v) in &over {
                    acc = Some(match acc {
                        None => v.clone(),
                        Some(prev) => merge_aggs(&a.agg, &a.store, key, &prev, v)?,
                    });
                    let sk = WindowStore::store_key(key, *w);
                    st.untrack(sw.close_time(*w), &sk);
                    st.put(sk, None);
                    if !a.emit_final && *w != merged {
                        out.push(Record {
                            key: Some(WindowedKey::encode(key, *w)),
                            value: None,
                            timestamp: r.timestamp,
                        });
                    }
                }
                let new = apply(&a.agg, &a.store, key, &r, acc.as_deref())?;
                let sk = WindowStore::store_key(key, merged);
                st.track(sw.close_time(merged), &sk);
                st.put(sk, Some(new.clone()));
                if !a.emit_final {
                    out.push(Record {
                        key: Some(WindowedKey::encode(key, merged)),
                        value: Some(new),
                        timestamp: r.timestamp,
                    });
                }
            }
        }
    }
    let mut res = Ok(());
    for o in out.drain(..) {
        if res.is_ok() {
            res = forward(cx, task, id, o);
        }
    }
    task.scratch = out;
    res
}

#[allow(clippy::too_many_arguments)]
fn stream_join(
    cx: &Cx<'_>,
    task: &mut Task,
    id: NodeId,
    (own, other): (NodeId, NodeId),
    w: crate::window::JoinWindows,
    joiner: &(dyn Fn(&Record, &Record) -> Bytes + Send + Sync),
    is_left: bool,
    r: Record,
) -> Result<()> {
    let (Some(key), Some(value)) = (r.key.clone(), r.value.clone()) else {
        inc(&cx.metrics.dropped_null_records);
        return Ok(());
    };
    let ts = r.timestamp;
    let pos = |n: NodeId| {
        task.stores
            .iter()
            .position(|s| s.node == n)
            .expect("join buffers are in the task")
    };
    let (oi, xi) = (pos(own), pos(other));
    if ts.saturating_add(w.diff_ms).saturating_add(w.grace_ms) < task.stores[oi].stream_time {
        inc(&cx.metrics.late_records_dropped);
        return Ok(());
    }
    if cx.offset < task.stores[oi].skip_below[cx.src] {
        return Ok(());
    }
    let sk = WindowStore::store_key(
        &key,
        Window {
            start: ts,
            end: cx.offset,
        },
    );
    let st = &mut task.stores[oi];
    st.expiry
        .insert((ts.saturating_add(st.spec.retention_ms), sk.clone()));
    let outer_key = st.outer.is_some().then(|| sk.clone());
    st.put(sk, Some(value));
    let mut out = std::mem::take(&mut task.scratch);
    for (win, v) in task.stores[xi].windows_of(&key)? {
        if (win.start - ts).abs() > w.diff_ms {
            continue;
        }
        // A buffered record of an outer side whose window has closed was (or is about to be) emitted without
        // a partner; pairing it now would emit it a second time, joined. Its side's stream time decides, as
        // `emit_unmatched` does.
        let x = &mut task.stores[xi];
        if let Some(o) = &mut x.outer {
            let close = o.close(win.start);
            if close <= x.stream_time {
                continue;
            }
            // Paired: it is no longer waiting to go out unmatched.
            let partner = WindowStore::store_key(&key, win);
            o.pending.remove(&(close, partner.clone()));
            o.restored.remove(&partner);
        }
        let o = Record {
            key: Some(key.clone()),
            value: Some(v),
            timestamp: win.start,
        };
        let joined = if is_left {
            joiner(&r, &o)
        } else {
            joiner(&o, &r)
        };
        out.push(Record {
            key: Some(key.clone()),
            value: Some(joined),
            timestamp: ts.max(win.start),
        });
    }
    if let Some(sk) = outer_key {
        if out.is_empty() {
            let o = task.stores[oi].outer.as_mut().expect("checked");
            o.pending.insert((o.close(ts), sk));
        }
    }
    let mut res = Ok(());
    for o in out.drain(..) {
        if res.is_ok() {
            res = forward(cx, task, id, o);
        }
    }
    task.scratch = out;
    res
}

/// Emits the unmatched records of outer join sides whose windows closed (before any buffer expires, so that
/// a partner is still found at the very end of its retention).
fn emit_unmatched(cx: &Cx<'_>, task: &mut Task) -> Result<()> {
    for si in 0..task.stores.len() {
        let st = &task.stores[si];
        let now = st.stream_time;
        let Some(o) = &st.outer else {
            continue;
        };
        if o.pending.first().is_none_or(|(t, _)| *t > now) {
            continue;
        }
        let (join, other, diff) = (o.join, o.other, o.diff_ms);
        let xi = task
            .stores
            .iter()
            .position(|s| s.node == other)
            .expect("join buffers are in the task");
        let mut out = std::mem::take(&mut task.scratch);
        loop {
            let st = &mut task.stores[si];
            let o = st.outer.as_mut().expect("checked");
            if o.pending.first().is_none_or(|(t, _)| *t > now) {
                break;
            }
            let (_, sk) = o.pending.pop_first().expect("checked");
            let restored = o.restored.remove(&sk);
            let Some(v) = st.get(&sk)? else {
                continue;
            };
            let Some((k, w)) = WindowStore::parse(&sk) else {
                continue;
            };
            // Pairings since the task opened removed their records from `pending`; for a record rebuilt at the
            // open, a partner in the other buffer is taken as one it was paired with before.
            let matched = restored
                && task.stores[xi]
                    .windows_of(k)?
                    .iter()
                    .any(|(x, _)| (x.start - w.start).abs() <= diff);
            if matched {
                continue;
            }
            let r = Record {
                key: Some(Bytes::copy_from_slice(k)),
                value: Some(v),
                timestamp: w.start,
            };
            let f = &task.stores[si].outer.as_ref().expect("checked").unmatched;
            out.push(Record {
                value: Some(f(&r)),
                ..r
            });
        }
        let mut res = Ok(());
        for o in out.drain(..) {
            if res.is_ok() {
                res = forward(cx, task, join, o);
            }
        }
        task.scratch = out;
        res?;
    }
    Ok(())
}

/// After stream time moved: emits the final results of windows that closed (suppress) and deletes windows
/// whose retention ended.
fn advance(cx: &Cx<'_>, task: &mut Task) -> Result<()> {
    emit_unmatched(cx, task)?;
    for si in 0..task.stores.len() {
        let st = &task.stores[si];
        let now = st.stream_time;
        let due = |s: &BTreeSet<(i64, Bytes)>| s.first().is_some_and(|(t, _)| *t <= now);
        if !due(&st.pending_final) && !due(&st.expiry) {
            continue;
        }
        let mut out = std::mem::take(&mut task.scratch);
        let st = &mut task.stores[si];
        while st.pending_final.first().is_some_and(|(t, _)| *t <= now) {
            let (_, sk) = st.pending_final.pop_first().expect("checked");
            if let (Some(v), Some((k, w))) = (st.get(&sk)?, WindowStore::parse(&sk)) {
                out.push(Record {
                    key: Some(WindowedKey::encode(k, w)),
                    value: Some(v),
                    timestamp: w.start,
                });
            }
        }
        while st.expiry.first().is_some_and(|(t, _)| *t <= now) {
            let (_, sk) = st.expiry.pop_first().expect("checked");
            st.put(sk, None);
        }
        let node = st.node;
        let mut res = Ok(());
        for o in out.drain(..) {
            if res.is_ok() {
                res = forward(cx, task, node, o);
            }
        }
        task.scratch = out;
        res?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_timeout_out_of_range_is_refused() {
        let mut c = StreamsConfig::new("app", "127.0.0.1:9092");
        for (t, ok) in [
            (Duration::ZERO, false),
            (Duration::from_millis(5), false),
            (Duration::from_secs(1), true),
            (Duration::from_secs(60), true),
            (Duration::from_secs(23 * 3600), true),
            (Duration::from_secs(23 * 3600 + 1), false),
            (Duration::from_secs(25 * 3600), false),
        ] {
            c.delivery_timeout = t;
            match c.validate() {
                Ok(()) => assert!(ok, "{t:?} accepted"),
                Err(e) => assert!(
                    !ok && e.to_string().contains("delivery timeout"),
                    "{t:?}: {e}"
                ),
            }
        }
    }

    /// The commit keeps the processing thread from polling the group consumer for up to the delivery timeout and
    /// the rest of the commit: `max.poll.interval.ms` (librdkafka's default 300 s before) exceeds that sum, a larger
    /// value of the user's is kept, and it stays within librdkafka's 24 hours.
    #[test]
    fn the_group_consumer_waits_for_the_longest_commit_between_polls() {
        let interval = |c: &StreamsConfig| -> u64 {
            c.group_consumer()
                .get("max.poll.interval.ms")
                .expect("max.poll.interval.ms is set")
                .parse()
                .unwrap()
        };
        let mut c = StreamsConfig::new("app", "127.0.0.1:9092");
        // The default delivery timeout: librdkafka's default stays.
        assert_eq!(interval(&c), 300_000);
        for t in [300, 3600, 23 * 3600] {
            c.delivery_timeout = Duration::from_secs(t);
            c.validate().unwrap();
            let ms = interval(&c);
            // The flush, the purged reports (5 s), the changelog flush and abort (30 s each), the offset commit.
            assert!(
                ms >= (t + 5 + 30 + 30 + 60) * 1000,
                "{t} s: max.poll.interval.ms {ms}"
            );
            assert!(ms <= 86_400_000, "{t} s: max.poll.interval.ms {ms}");
            // librdkafka takes it (it checks the range when the client is created; nothing connects yet).
            let _: BaseConsumer = c
                .group_consumer()
                .create()
                .expect("a valid consumer config");
        }
        c.delivery_timeout = Duration::from_secs(3600);
        let needed = interval(&c);
        c.client_properties = vec![("max.poll.interval.ms".into(), (needed + 1000).to_string())];
        assert_eq!(interval(&c), needed + 1000, "a larger value of the user's");
        c.client_properties = vec![("max.poll.interval.ms".into(), "10000".into())];
        assert_eq!(interval(&c), needed, "a smaller value of the user's");
    }
}
