//! The Fjord broker: a Kafka wire-protocol server over the partition logs of `fjord-log` and the cluster
//! metadata of `fjord-meta`.
//!
//! It owns the TCP server and framing ([`server`]), one handler per Kafka API ([`api`]), the partitions hosted
//! here ([`partition`]), broker and topic configuration by Kafka's names ([`config`]) and the broker's metrics
//! ([`metrics`]). It does not know about HTTP or the command line: the `fjord` binary serves `/metrics` from
//! [`Broker::metrics_text`] and builds the [`config::BrokerConfig`].

pub mod admin;
pub mod api;
pub mod config;
pub mod groups;
pub mod interbroker;
pub mod log_dirs;
pub mod metrics;
pub mod partition;
pub mod producers;
pub mod replication;
pub mod server;
pub mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fjord_meta::{BrokerInfo, Meta};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::log_dirs::LogDirs;
use crate::metrics::Metrics;
use crate::partition::PartitionManager;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] fjord_log::Error),
    #[error(transparent)]
    Meta(#[from] fjord_meta::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Producer(#[from] producers::ProducerError),
    #[error("internal error: {0}")]
    Internal(String),
    /// The partition cannot be served from disk: its log directory is offline after an I/O error, or its
    /// directory could not be opened. Kafka's KAFKA_STORAGE_ERROR; the message says which and why.
    #[error("{0}")]
    Storage(String),
    /// This broker does not lead the partition (Kafka's NOT_LEADER_OR_FOLLOWER); the client refreshes its metadata.
    #[error("{0}")]
    NotLeader(String),
    /// The request's leader epoch is older than the partition's (FENCED_LEADER_EPOCH).
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// The request's leader epoch is newer than this broker knows (UNKNOWN_LEADER_EPOCH); it catches up soon.
    #[error("{0}")]
    UnknownLeaderEpoch(String),
    /// The ISR shrank below min.insync.replicas after an acks=all append (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    #[error("{0}")]
    NotEnoughReplicasAfterAppend(String),
    /// A bounded wait ran out (REQUEST_TIMED_OUT).
    #[error("{0}")]
    Timeout(String),
    /// The partition was deleted (its directory renamed away) while this handle was still in use.
    #[error("{0} was deleted")]
    Deleted(String),
    /// This broker does not coordinate the group or transactional id (NOT_COORDINATOR): the leader of its
    /// internal partition is elsewhere; the client looks the coordinator up again.
    #[error("{0}")]
    NotCoordinator(String),
    /// A coordinator cannot serve yet, e.g. its internal topic cannot be created while fewer brokers are live
    /// than its replication factor (COORDINATOR_NOT_AVAILABLE, retried by clients).
    #[error("{0}")]
    CoordinatorNotAvailable(String),
}

impl Error {
    /// The Kafka error code a response carries for this error. The one place internal errors become codes.
    pub fn code(&self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            Error::Log(e) => match e {
                fjord_log::Error::CorruptMessage(_) => E::CorruptMessage.code(),
                fjord_log::Error::InvalidRecord(_) | fjord_log::Error::RecordErrors { .. } => {
                    E::InvalidRecord.code()
                }
                fjord_log::Error::UnsupportedFormat(_) => E::UnsupportedForMessageFormat.code(),
                fjord_log::Error::RecordTooLarge { .. } => E::MessageTooLarge.code(),
                fjord_log::Error::OffsetOutOfRange { .. } => E::OffsetOutOfRange.code(),
                fjord_log::Error::InvalidTimestamp(_) => E::InvalidTimestamp.code(),
                fjord_log::Error::Io(_) | fjord_log::Error::Damaged(_) => {
                    E::KafkaStorageError.code()
                }
            },
            Error::Meta(fjord_meta::Error::NotLeader | fjord_meta::Error::NoQuorum(_)) => {
                E::NotController.code()
            }
            Error::Meta(fjord_meta::Error::Indeterminate(_)) => E::RequestTimedOut.code(),
            Error::Meta(_) => E::UnknownServerError.code(),
            Error::Config(_) => E::InvalidConfig.code(),
            Error::Io(_) => E::KafkaStorageError.code(),
            Error::Producer(p) => p.code(),
            Error::Internal(_) => E::UnknownServerError.code(),
            Error::Storage(_) => E::KafkaStorageError.code(),
            Error::Deleted(_) => E::UnknownTopicOrPartition.code(),
            Error::NotLeader(_) => E::NotLeaderOrFollower.code(),
            Error::FencedLeaderEpoch(_) => E::FencedLeaderEpoch.code(),
            Error::UnknownLeaderEpoch(_) => E::UnknownLeaderEpoch.code(),
            Error::NotEnoughReplicasAfterAppend(_) => E::NotEnoughReplicasAfterAppend.code(),
            Error::Timeout(_) => E::RequestTimedOut.code(),
            Error::NotCoordinator(_) => E::NotCoordinator.code(),
            Error::CoordinatorNotAvailable(_) => E::CoordinatorNotAvailable.code(),
        }
    }

    /// Whether this error is a fault of the disk (an I/O error, or durable data found damaged), which takes the
    /// log directory offline.
    pub fn is_disk_fault(&self) -> bool {
        match self {
            Error::Io(e) | Error::Log(fjord_log::Error::Io(e)) => !is_process_limit(e),
            Error::Log(e) => e.is_storage_error(),
            _ => false,
        }
    }
}

/// Running out of file descriptors (EMFILE, ENFILE) is a limit of the process or the system, not a fault of the
/// disk: the operation fails (a log that hit it goes offline by itself, a partition that cannot open stays
/// unopened) but its log directory, and with it the whole broker when it holds the metadata, stays in service.
pub fn is_process_limit(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23) | Some(24))
}

/// Runs blocking work (file I/O that may take long) from async code without stalling the runtime: on the
/// multi-threaded runtime the worker hands its other tasks over first (`block_in_place`); elsewhere (a
/// current-thread runtime in tests) it runs inline.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Milliseconds since the Unix epoch, the unit of every Kafka timestamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Shared state every request handler sees.
pub struct BrokerState {
    pub config: BrokerConfig,
    pub meta: Meta,
    pub partitions: PartitionManager,
    pub metrics: Metrics,
    /// Consumer groups: the coordinator and its `__consumer_offsets` persistence.
    pub groups: groups::Groups,
    /// Producer ids for InitProducerId, reserved in blocks through the metadata quorum.
    pub producer_ids: producers::ProducerIds,
    /// The transaction coordinator and its `__transaction_state` persistence.
    pub transactions: transactions::Transactions,
    /// The partitions this broker follows, by leader (see [`replication`]).
    pub replication: replication::Replication,
    /// The host and port this broker advertises in Metadata (the bound port when configured with port 0).
    pub advertised: (String, i32),
    /// Woken when a metadata sync made this broker the leader of internal partitions that must be loaded into
    /// their coordinator ([`groups::run_loader`]).
    pub coordinator_loads: tokio::sync::Notify,
}

impl BrokerState {
    /// What `/metrics` serves: the registry's counters and histograms, and the gauges computed now (partition
    /// offsets and sizes, consumer-group lag, process resources).
    pub fn metrics_text(&self) -> String {
        metrics::scrape(self)
    }

    /// Whether the broker can serve everything it hosts (`/ready`): Err says why not. A broker that runs but
    /// has a log directory offline is alive (`/health`) and not ready, so that a load balancer or orchestrator
    /// routes clients elsewhere while an operator looks.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        let meta = self.meta.state();
        if meta.cluster_id.is_empty() {
            return Err("the metadata quorum has not bootstrapped the cluster yet".into());
        }
        if !self.config.is_broker {
            // A controller-only node is ready while it knows an active controller.
            return match self.meta.leader() {
                Some(_) => Ok(()),
                None => Err("no active controller known: the metadata quorum has no leader".into()),
            };
        }
        if !meta.brokers.contains_key(&self.config.node_id) {
            return Err(format!(
                "broker {} is not registered in the cluster metadata yet",
                self.config.node_id
            ));
        }
        if !meta.is_live(self.config.node_id) {
            return Err(format!(
                "broker {} is fenced: the metadata quorum has not heard its heartbeats yet",
                self.config.node_id
            ));
        }
        let dirs = self.partitions.dirs();
        let offline: Vec<String> = (0..dirs.len())
            .filter(|&i| dirs.is_offline(i))
            .map(|i| dirs.path(i).display().to_string())
            .collect();
        if !offline.is_empty() {
            return Err(format!("log directories offline: {}", offline.join(", ")));
        }
        Ok(())
    }

    /// Applies the latest metadata to the hosted partitions (after a command this broker proposed, so that the
    /// response it sends already reflects it).
    /// Opening logs is file I/O (and recovery can be long): it runs off the async workers.
    pub fn sync_partitions(&self) -> Result<()> {
        blocking(|| self.partitions.sync_latest(&self.meta, &self.config))?;
        self.replication.refresh(self);
        self.follow_coordinators();
        Ok(())
    }

    /// After a metadata sync: the coordinators resign from the internal partitions no longer led here at once,
    /// and the loader is woken for the ones newly led (Kafka's `onResignation` / `onElection`).
    pub fn follow_coordinators(&self) {
        let groups = groups::follow_leadership(self);
        let txns = transactions::follow_leadership(self);
        if groups || txns {
            self.coordinator_loads.notify_one();
        }
    }
}

/// A running broker. Dropping it does not stop it; call [`Broker::shutdown`].
pub struct Broker {
    state: Arc<BrokerState>,
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Broker {
    /// Opens the metadata store and logs under `log.dirs`, binds the listener and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Broker> {
        let metrics = Metrics::new();
        let dirs = Arc::new(LogDirs::new(&config.log_dirs, &metrics)?);
        // Before anything reads or writes a log: a second process on the same directories stops here.
        dirs.lock_all()?;
        dirs.remove_deleted_leftovers();
        // A controller-only node serves no clients: no Kafka listener, no broker registration.
        let listener = if config.is_broker {
            Some(TcpListener::bind(config.listener).await?)
        } else {
            None
        };
        let addr = match &listener {
            Some(l) => l.local_addr()?,
            None => config.controller_listener.unwrap_or(config.listener),
        };
        let port = if config.advertised_port == 0 {
            addr.port()
        } else {
            config.advertised_port
        };
        let advertised = (config.advertised_host.clone(), port as i32);
        let info = BrokerInfo {
            id: config.node_id,
            host: advertised.0.clone(),
            port: advertised.1,
            rack: config.rack.clone(),
        };
        let meta_dir = dirs.metadata_dir().join("__meta");
        let meta = if config.in_quorum() {
            let listen = match (config.controller_listener, config.observer_listener) {
                (Some(c), _) if config.is_controller => c,
                (_, Some(o)) => o,
                _ => {
                    return Err(Error::Config(config::ConfigError::new(
                        "controller.listener.names",
                        "no listener for the metadata quorum",
                    )))
                }
            };
            Meta::open_node(
                &meta_dir,
                config.node_id,
                fjord_meta::QuorumConfig {
                    voters: config.quorum_voters.clone().unwrap_or_default(),
                    bootstrap: config.quorum_bootstrap.clone(),
                    listen,
                    advertised_host: Some(config.advertised_host.clone()),
                    broker: config.is_broker.then_some(info),
                    open_wait: fjord_meta::QUORUM_OPEN_WAIT,
                },
            )
            .await?
        } else {
            Meta::open(&meta_dir, config.node_id, info).await?
        };
        if config.in_quorum() && config.is_broker {
            // A (re)starting broker of a cluster begins fenced, as a new KRaft broker incarnation does: the
            // partitions it led get new leaders (or, where it was the last in-sync replica, a new epoch once it
            // is unfenced), so that nothing it wrote before a crash and lost on its disk can be mistaken for the
            // same epoch's data by followers. Its heartbeats unfence it.
            // It must be committed before this broker serves anything: otherwise a leader that lost an unsynced
            // tail could go on in the same epoch. Retried while the quorum forms; the start fails without it.
            let deadline = tokio::time::Instant::now() + fjord_meta::QUORUM_OPEN_WAIT;
            loop {
                match meta
                    .propose(fjord_meta::Command::FenceBroker { id: config.node_id })
                    .await
                {
                    Ok(r) => {
                        tracing::info!(result = ?r, "fenced this broker's previous incarnation");
                        break;
                    }
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::warn!(error = %e, "could not fence this broker's previous incarnation yet; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        let _ = meta.shutdown().await;
                        return Err(Error::Meta(e));
                    }
                }
            }
        }
        meta.start_liveness(
            Duration::from_millis(config.prop_u64("broker.heartbeat.interval.ms", 2000)),
            Duration::from_millis(config.prop_u64("broker.session.timeout.ms", 9000)),
        );
        if config.in_quorum() && config.is_broker {
            // Serve once the quorum has unfenced this broker (its first heartbeat does), so that a started broker is
            // one the cluster counts on; bounded, since a quorum that lost its majority cannot unfence anyone.
            let mut rx = meta.subscribe();
            let wait = Duration::from_millis(config.prop_u64("broker.session.timeout.ms", 9000))
                + Duration::from_secs(5);
            let unfenced = tokio::time::timeout(wait, async {
                while !rx.borrow_and_update().is_live(config.node_id) {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            if unfenced.is_err() {
                tracing::warn!(
                    node_id = config.node_id,
                    "still fenced after {wait:?}: serving anyway; the quorum unfences this broker once its heartbeats get through"
                );
            }
        }
        let partitions = PartitionManager::new(dirs, config.node_id);
        partitions.sync_with(&meta.state(), &config)?;
        let state = Arc::new(BrokerState {
            transactions: transactions::Transactions::new(
                transactions::txn_config(&config),
                metrics.transactions_ongoing.clone(),
            ),
            metrics,
            producer_ids: producers::ProducerIds::default(),
            groups: groups::Groups::new(
                groups::group_config(&config),
                groups::consumer_config(&config),
            ),
            partitions,
            meta,
            config,
            advertised,
            replication: replication::Replication::default(),
            coordinator_loads: tokio::sync::Notify::new(),
        });
        state.replication.refresh(&state);
        // Only the internal partitions led here are loaded, before serving (the loader takes over later ones).
        groups::check_loadable(&state, groups::OFFSETS_TOPIC)?;
        groups::check_loadable(&state, transactions::TXN_TOPIC)?;
        state.follow_coordinators();
        let replayed = groups::load_pending(&state)?;
        tracing::info!(
            records = replayed,
            "group coordinator loaded the __consumer_offsets partitions led here"
        );
        let txns = transactions::load_pending(&state)?;
        tracing::info!(
            transactional_ids = txns,
            "transaction coordinator loaded the __transaction_state partitions led here"
        );
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let tasks = match listener {
            Some(listener) => vec![
                tokio::spawn(server::accept_loop(
                    listener,
                    state.clone(),
                    shutdown_rx.clone(),
                )),
                tokio::spawn(follow_metadata(state.clone(), shutdown_rx.clone())),
                tokio::spawn(groups::run_clock(state.clone(), shutdown_rx.clone())),
                tokio::spawn(transactions::run_clock(state.clone(), shutdown_rx.clone())),
                tokio::spawn(replication::run(state.clone(), shutdown_rx.clone())),
                tokio::spawn(replication::rebalance_leaders(
                    state.clone(),
                    shutdown_rx.clone(),
                )),
                tokio::spawn(replication::elect_unclean_leaders(
                    state.clone(),
                    shutdown_rx.clone(),
                )),
                tokio::spawn(groups::run_loader(state.clone(), shutdown_rx.clone())),
                tokio::spawn(housekeeping(state.clone(), shutdown_rx)),
            ],
            // A controller-only node: the quorum's own tasks (liveness) run in fjord-meta; of the broker's, only
            // the preferred-leader rebalance and unclean elections, which the raft leader runs on metadata alone.
            None => vec![
                tokio::spawn(replication::rebalance_leaders(
                    state.clone(),
                    shutdown_rx.clone(),
                )),
                tokio::spawn(replication::elect_unclean_leaders(
                    state.clone(),
                    shutdown_rx,
                )),
            ],
        };
        tracing::info!(%addr, node_id = state.config.node_id, "broker started");
        Ok(Broker {
            state,
            addr,
            shutdown_tx,
            tasks,
        })
    }

    /// The address the Kafka listener is bound to; on a controller-only node, which has none, its controller
    /// listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Prometheus text exposition of the broker's metrics (see [`BrokerState::metrics_text`]).
    pub fn metrics_text(&self) -> String {
        self.state.metrics_text()
    }

    /// Resolves when the broker cannot go on and must be stopped: the log directory holding the metadata
    /// quorum went offline, or the quorum's own store failed (Kafka halts then too). The message says why; the
    /// caller shuts down and exits with an error.
    pub async fn fatal(&self) -> String {
        let dirs = self.state.partitions.dirs();
        tokio::select! {
            reason = dirs.fatal() => reason,
            error = self.state.meta.failed() => {
                let reason = format!(
                    "the metadata quorum's store in {} failed: {error}; stopping the broker",
                    dirs.metadata_dir().join("__meta").display()
                );
                tracing::error!("{reason}");
                reason
            }
        }
    }

    /// **Test-only:** stops the broker as a crash (kill -9) would, as far as its data and the cluster are
    /// concerned: no controlled shutdown (the quorum must notice the silence), no flush, no snapshot, no clean
    /// close (the next start recovers every log). Tasks are stopped and the directory locks released so that a
    /// new `Broker` can open the same directories in the same process. A real kill -9 is tested with processes
    /// (`crates/fjord/tests`); this lets a seeded in-process schedule crash brokers quickly.
    #[doc(hidden)]
    pub async fn crash_for_test(self) {
        let _ = self.shutdown_tx.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        let _ = self.state.meta.shutdown().await;
        self.state.partitions.abandon_all();
        self.state.partitions.dirs().unlock_all();
        tracing::warn!(node_id = self.state.config.node_id, "broker crashed (test)");
    }

    /// Stops accepting, lets background tasks end, flushes and closes every log (except those in an offline
    /// log directory, which are left for recovery at the next start) and releases the log directory locks.
    pub async fn shutdown(self) -> Result<()> {
        let me = self.state.config.node_id;
        // With no other live broker there is nobody to hand leadership to (the last broker of a cluster being
        // stopped, whose quorum may already be gone): skip the proposal rather than wait out its bound.
        let others_live = self
            .state
            .meta
            .state()
            .live_brokers()
            .into_iter()
            .any(|b| b != me);
        if self.state.config.in_quorum() && self.state.config.is_broker && others_live {
            // Controlled shutdown: leadership moves to other in-sync replicas before this broker stops serving, so
            // producers and consumers move on at once instead of waiting for a session timeout.
            let fenced = tokio::time::timeout(
                Duration::from_secs(5),
                self.state
                    .meta
                    .propose(fjord_meta::Command::FenceBroker { id: me }),
            )
            .await;
            match fenced {
                Ok(Ok(_)) => {
                    let _ = self.state.sync_partitions();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "controlled shutdown: could not move leadership away")
                }
                Err(_) => tracing::warn!("controlled shutdown: moving leadership away timed out"),
            }
        }
        let _ = self.shutdown_tx.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.state.partitions.close_all();
        let meta = self.state.meta.shutdown().await;
        self.state.partitions.dirs().unlock_all();
        meta?;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Keeps the hosted partitions in line with metadata changes committed through raft, and drops the metric series
/// of deleted topics.
async fn follow_metadata(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut rx = state.meta.subscribe();
    let mut known: std::collections::BTreeSet<String> =
        state.meta.state().topics.keys().cloned().collect();
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() { return; }
                let snapshot = rx.borrow_and_update().clone();
                let gone: Vec<String> = known
                    .iter()
                    .filter(|t| !snapshot.topics.contains_key(*t))
                    .cloned()
                    .collect();
                for t in &gone {
                    state.metrics.forget_topic(t);
                }
                known = snapshot.topics.keys().cloned().collect();
                if let Err(e) = blocking(|| state.partitions.sync_latest(&state.meta, &state.config)) {
                    tracing::error!(error = %e, "applying metadata to partitions failed");
                }
                state.replication.refresh(&state);
                state.follow_coordinators();
                if !gone.is_empty() {
                    // Every coordinator forgets the committed offsets of deleted topics in the groups it owns,
                    // wherever the deletion was asked (Kafka's `onPartitionsDeleted`).
                    let st = state.clone();
                    tokio::spawn(async move { groups::forget_topics(&st, &gone).await });
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Retention, segment rolls by age, compaction and the optional periodic flush.
async fn housekeeping(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let retention_every = Duration::from_millis(state.config.retention_check_interval_ms);
    let cleaner_every = Duration::from_millis(state.config.cleaner_backoff_ms);
    let tick = retention_every.min(cleaner_every).min(
        state
            .config
            .log_flush_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(Duration::MAX),
    );
    let mut interval = tokio::time::interval(tick.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let st = state.clone();
        let producer_expiration_ms: i64 = state
            .config
            .props
            .get("producer.id.expiration.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(86_400_000);
        let res = tokio::task::spawn_blocking(move || {
            for p in st.partitions.all() {
                // An offline directory is never written again, housekeeping included.
                if p.check_online().is_err() {
                    continue;
                }
                if let Err(e) = p.housekeeping(st.config.cleaner_enable, producer_expiration_ms) {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "housekeeping failed");
                }
                if st.config.log_flush_interval_ms.is_some() {
                    if let Err(e) = p.flush() {
                        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "periodic flush failed");
                    }
                }
            }
        })
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "housekeeping task panicked");
        }
    }
}
