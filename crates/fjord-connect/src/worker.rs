//! The worker: the connectors it runs, their target states (RUNNING, PAUSED, STOPPED) and their tasks'
//! statuses, and the operations of the REST API on them. Every write is serialised by one lock, as Connect's
//! standalone herder is synchronised; a task's work happens in its own tokio task, outside that lock.
//!
//! A sink connector runs `tasks.max` tasks (ids 0 to N-1), each a consumer of the connector's group, so the group
//! protocol spreads the topic partitions over them; a source decides its count ([`task_count`]): FileStreamSource
//! one (one file, as Apache's), the PostgreSQL source one per group of tables. In distributed mode a worker runs
//! the tasks the group assigned it, which may be some of a connector's only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::config::{ConfigMap, WorkerConfig};
use crate::converter::Converter;
use crate::distributed::ConfigLog;
use crate::error::{Error, Result};
use crate::offsets::OffsetStore;
use crate::plugins::{self, Plugin};

/// Connect's 409 while its group rebalances (kcctl and UIs know it); here also while the worker stands by.
pub const REBALANCE: &str = "Request cannot be completed because a rebalance is expected: this worker is not its group's leader and knows no leader to forward the request to yet (the group is rebalancing); retry after the rebalance";

/// How long a stopping task may take to finish its batch and commit (Connect's
/// `task.shutdown.graceful.timeout.ms` default) before it is aborted.
pub const TASK_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connector should be doing (Connect's target state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Running,
    Paused,
    Stopped,
}

impl TargetState {
    fn as_str(self) -> &'static str {
        match self {
            TargetState::Running => "RUNNING",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        }
    }

    /// `initial_state` of `POST /connectors` (KIP-980).
    pub fn parse(s: &str) -> Option<TargetState> {
        match s.to_ascii_uppercase().as_str() {
            "RUNNING" => Some(TargetState::Running),
            "PAUSED" => Some(TargetState::Paused),
            "STOPPED" => Some(TargetState::Stopped),
            _ => None,
        }
    }
}

/// A task's status as `GET .../status` reports it.
#[derive(Debug, Clone)]
pub struct TaskStatus {
    pub state: &'static str,
    /// Why a FAILED task failed, and what to do.
    pub trace: Option<String>,
}

pub type SharedStatus = Arc<StdMutex<TaskStatus>>;

/// What a task needs to run: its connector's name and config, converters and the worker's resources.
#[derive(Clone)]
pub struct TaskContext {
    pub connector: String,
    /// The task's id within its connector (0 to N-1): in its consumer's `client.id`, its dead-letter headers and
    /// its log lines.
    pub task: u32,
    pub config: ConfigMap,
    pub key_converter: Converter,
    pub value_converter: Converter,
    pub bootstrap_servers: String,
    pub offsets: Arc<OffsetStore>,
    pub offset_flush_interval: Duration,
    /// The worker's `producer.*`/`consumer.*` settings, then the connector's `producer.override.*`/
    /// `consumer.override.*`, set on the task's client after Connect's own.
    pub client_overrides: Vec<(String, String)>,
    /// The same for a sink's dead-letter producer: the worker's `producer.*`, then the connector's
    /// `producer.override.*`.
    pub dlq_overrides: Vec<(String, String)>,
}

/// A running task: a signal to stop it and its handle.
struct TaskRun {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// One task of a connector.
struct TaskSlot {
    /// None while the task does not run here (paused, stopped, not assigned to this worker). A finished run is
    /// kept: with a FAILED status it means the task's restarts are used up.
    run: Option<TaskRun>,
    /// The task's status; it outlives runs, so that a failure stays visible until a restart.
    status: SharedStatus,
}

impl TaskSlot {
    fn new() -> TaskSlot {
        TaskSlot {
            run: None,
            status: Arc::new(StdMutex::new(TaskStatus {
                state: "UNASSIGNED",
                trace: None,
            })),
        }
    }

    fn set(&self, state: &'static str) {
        *self.status.lock().unwrap() = TaskStatus { state, trace: None };
    }
}

/// The most tasks a connector may ask for with `tasks.max`: each sink task is a consumer with connections of its
/// own, and a number above the partitions leaves tasks idle.
pub const MAX_TASKS: u32 = 1000;

/// How many tasks a connector runs: `tasks.max` for a sink (every task joins the connector's group, which gives
/// each its partitions; tasks beyond the partition count get none and wait, as Connect's do); a source decides
/// (at most `tasks.max`): FileStreamSource one (one file, as Apache's), the PostgreSQL source one per group of
/// its tables (`pg_source::task_tables`, as Confluent's JDBC source) or one for a query.
pub fn task_count(plugin: Plugin, config: &ConfigMap) -> u32 {
    let max = crate::sink_task::num(config, "tasks.max", 1u32).clamp(1, MAX_TASKS);
    match plugin {
        Plugin::FileSource => 1,
        Plugin::PostgresSource => crate::pg_source::task_tables(config, max).len() as u32,
        Plugin::FileSink | Plugin::ElasticsearchSink | Plugin::HttpSink | Plugin::PostgresSink => {
            max
        }
    }
}

/// Task `id`'s config, without the task class: the connector's, and for the PostgreSQL source its share of the
/// tables.
fn task_config(plugin: Plugin, config: &ConfigMap, id: u32) -> ConfigMap {
    let mut config = config.clone();
    if plugin == Plugin::PostgresSource {
        let max = crate::sink_task::num(&config, "tasks.max", 1u32).clamp(1, MAX_TASKS);
        let groups = crate::pg_source::task_tables(&config, max);
        if let Some(Some(tables)) = groups.get(id as usize) {
            config.insert(crate::pg_source::TASK_TABLES.into(), tables.join(","));
        }
    }
    config
}

/// How many tasks a connector of the config topic has (the leader assigns them): none while STOPPED, none for a
/// config that does not name a known plugin.
pub fn stored_task_count(config: &ConfigMap, target: TargetState) -> u32 {
    let plugin = config
        .get("connector.class")
        .and_then(|c| Plugin::find(c.trim()));
    match plugin {
        Some(p) if target != TargetState::Stopped => task_count(p, config),
        _ => 0,
    }
}

struct Connector {
    config: ConfigMap,
    plugin: Plugin,
    target: TargetState,
    /// The tasks by id. `apply_target` makes their number `task_count`; a config with fewer removes the last ones.
    tasks: Vec<TaskSlot>,
}

impl Connector {
    fn new(config: ConfigMap, plugin: Plugin, target: TargetState) -> Connector {
        Connector {
            config,
            plugin,
            target,
            tasks: Vec::new(),
        }
    }

    /// The tasks the connector has now: none while STOPPED (Connect then holds no task configs).
    fn task_ids(&self) -> std::ops::Range<u32> {
        if self.target == TargetState::Stopped {
            0..0
        } else {
            0..task_count(self.plugin, &self.config)
        }
    }

    /// Takes every task's run, for `stop_tasks`.
    fn take_runs(&mut self, name: &str) -> Vec<(String, TaskRun)> {
        self.tasks
            .iter_mut()
            .enumerate()
            .filter_map(|(id, t)| t.run.take().map(|run| (format!("{name}-{id}"), run)))
            .collect()
    }
}

/// A standalone worker.
pub struct Worker {
    pub config: WorkerConfig,
    pub offsets: Arc<OffsetStore>,
    /// `host:port` of the REST listener, as Connect names workers in statuses.
    pub worker_id: String,
    /// The Kafka cluster's id, for `GET /`.
    pub kafka_cluster_id: String,
    connectors: Mutex<BTreeMap<String, Connector>>,
    /// Distributed mode's config topic: every change is written there (and acknowledged) before it takes
    /// effect, so that the connectors outlive the worker. None in standalone mode.
    config_log: Option<Arc<ConfigLog>>,
    /// Distributed mode's status topic, where status changes are reported. None in standalone mode.
    status_log: Option<crate::distributed::StatusLog>,
    /// Distributed mode's status topic read back: the statuses of connectors other workers run.
    status_store: Option<Arc<crate::status_store::StatusStore>>,
    /// False while a distributed worker stands by (another worker of its group runs the connectors): the
    /// connector paths of the REST API then answer 409.
    active: AtomicBool,
    /// Set by `shutdown` before it stops the tasks: a rebalance that completes afterwards (the group thread may
    /// be inside a JoinGroup for a minute) starts nothing.
    shutting_down: AtomicBool,
    /// A distributed worker's membership of its group, left at shutdown.
    lease: StdMutex<Option<crate::lease::Lease>>,
    /// Whether the group has assigned this member anything yet (partition 0 or nothing).
    settled: AtomicBool,
    /// How a standby finds the active worker to forward REST requests to.
    active_lookup: StdMutex<Option<Arc<crate::lease::ActiveLookup>>>,
    /// Connect's group protocol (`group.rs`): what the last rebalance said. None in standalone mode and with the
    /// lease; then every connector of the map runs here.
    group: StdMutex<Option<crate::group::GroupView>>,
    /// The group membership, left at shutdown.
    membership: StdMutex<Option<crate::group::Membership>>,
    /// Counts the changes this worker writes to the config topic (counted before the write): a rebalance whose
    /// read of the config topic started before the count last moved may miss a change, and does not apply it.
    config_writes: std::sync::atomic::AtomicU64,
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        offsets: Arc<OffsetStore>,
        worker_id: String,
        kafka_cluster_id: String,
    ) -> Worker {
        Worker {
            config,
            offsets,
            worker_id,
            kafka_cluster_id,
            connectors: Mutex::new(BTreeMap::new()),
            config_log: None,
            status_log: None,
            status_store: None,
            active: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
            lease: StdMutex::new(None),
            settled: AtomicBool::new(false),
            active_lookup: StdMutex::new(None),
            group: StdMutex::new(None),
            membership: StdMutex::new(None),
            config_writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether this worker runs the connectors (always, in standalone mode).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Starts a distributed worker standing by, until its group makes it the active one.
    pub fn standing_by(self) -> Worker {
        self.active.store(false, Ordering::SeqCst);
        self
    }

    /// Whether the group has answered this member's join (made it active or a standby).
    pub fn group_settled(&self) -> bool {
        self.settled.load(Ordering::SeqCst)
    }

    pub fn mark_settled(&self) {
        self.settled.store(true, Ordering::SeqCst);
    }

    pub fn set_active_lookup(&self, lookup: crate::lease::ActiveLookup) {
        *self.active_lookup.lock().unwrap() = Some(Arc::new(lookup));
    }

    /// The REST address of the group's active worker (the leader, with Connect's group protocol; not this
    /// one), for a standby to forward to.
    pub async fn active_worker(&self) -> Option<String> {
        if let Some(g) = self.group.lock().unwrap().as_ref() {
            return g.leader.clone().filter(|l| *l != self.worker_id);
        }
        let lookup = self.active_lookup.lock().unwrap().clone()?;
        let me = self.worker_id.clone();
        tokio::task::spawn_blocking(move || lookup.active())
            .await
            .ok()
            .flatten()
            .filter(|a| *a != me)
    }

    pub fn set_lease(&self, lease: crate::lease::Lease) {
        *self.lease.lock().unwrap() = Some(lease);
    }

    /// Starts in Connect's group protocol: nothing runs until the first rebalance assigns it.
    pub fn in_group(self) -> Worker {
        *self.group.lock().unwrap() = Some(crate::group::GroupView::default());
        self.standing_by()
    }

    pub fn set_membership(&self, m: crate::group::Membership) {
        *self.membership.lock().unwrap() = Some(m);
    }

    /// Whether this worker runs `connector` itself, its status (always, unless the group assigned it elsewhere).
    fn runs_here(&self, connector: &str) -> bool {
        self.runs_unit_here(connector, crate::group::CONNECTOR_TASK)
    }

    /// Whether this worker runs task `id` of `connector` (always, unless the group assigned it elsewhere).
    fn runs_task_here(&self, connector: &str, id: u32) -> bool {
        self.runs_unit_here(connector, id as i32)
    }

    fn runs_unit_here(&self, connector: &str, id: i32) -> bool {
        match self.group.lock().unwrap().as_ref() {
            None => true,
            Some(g) => g.mine.contains(&(connector.to_string(), id)),
        }
    }

    /// The leader's knowledge of where another worker runs `connector` (`task` None) or one of its tasks (its
    /// REST address), for the requests that only the worker running it can answer (statuses, offsets, a task's
    /// restart).
    pub fn remote_owner(&self, connector: &str, task: Option<u32>) -> Option<String> {
        let g = self.group.lock().unwrap();
        let g = g.as_ref()?;
        let unit = (
            connector.to_string(),
            task.map_or(crate::group::CONNECTOR_TASK, |t| t as i32),
        );
        if !g.is_leader || g.mine.contains(&unit) {
            return None;
        }
        g.owners
            .get(&unit)
            .filter(|o| **o != self.worker_id)
            .cloned()
    }

    /// The leader: the workers other than this one running tasks of `connector` (task id, REST address).
    fn remote_tasks(&self, connector: &str) -> Vec<(u32, String)> {
        let g = self.group.lock().unwrap();
        let Some(g) = g.as_ref().filter(|g| g.is_leader) else {
            return Vec::new();
        };
        g.owners
            .iter()
            .filter(|((c, id), o)| {
                c == connector
                    && *id >= 0
                    && **o != self.worker_id
                    && !g.mine.contains(&(c.clone(), *id))
            })
            .map(|((_, id), o)| (*id as u32, o.clone()))
            .collect()
    }

    /// The leader, after a connector change: a rebalance makes every worker read the config topic again, and
    /// assigns new connectors.
    fn request_rebalance(&self) {
        if let Some(m) = self.membership.lock().unwrap().as_ref() {
            m.request_rebalance();
        }
    }

    /// How many connector changes this worker has made over REST (see `group_assign`).
    pub fn config_writes(&self) -> u64 {
        self.config_writes.load(Ordering::SeqCst)
    }

    /// Counts a connector change about to be written to the config topic (before the write: a rebalance reading
    /// the topic meanwhile may miss it).
    fn note_change(&self) {
        self.config_writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Connect's group revoked these connectors and tasks: the tasks stop (each commits what it sent) before the
    /// worker rejoins, so that the next worker starts where they ended.
    pub async fn group_revoke(&self, units: &[crate::group::Unit]) {
        let mut connectors = self.connectors.lock().await;
        if let Some(g) = self.group.lock().unwrap().as_mut() {
            for u in units {
                g.mine.remove(u);
            }
        }
        let mut runs = Vec::new();
        for (n, id) in units {
            let Some(c) = connectors.get_mut(n) else {
                continue;
            };
            let Some(t) = usize::try_from(*id).ok().and_then(|i| c.tasks.get_mut(i)) else {
                continue;
            };
            t.set("UNASSIGNED");
            if let Some(run) = t.run.take() {
                runs.push((format!("{n}-{id}"), run));
            }
        }
        stop_tasks(runs).await;
        self.report_unassigned(units);
    }

    /// Writes UNASSIGNED for the connectors and tasks this worker stopped because the group took them away, once
    /// they stopped, as Connect's workers do on shutdown of a connector or task: the status topic then never
    /// shows a connector or task RUNNING on a worker that gave it up. Safe writes (`putSafe`): the status a
    /// newer owner wrote already stays.
    fn report_unassigned(&self, units: &[crate::group::Unit]) {
        let Some(s) = &self.status_log else { return };
        for (n, id) in units {
            s.report_safe(n, u32::try_from(*id).ok(), "UNASSIGNED", None);
        }
    }

    /// The membership expired: everything stops (another worker may run it by now) and no leader is known
    /// until the next rebalance.
    pub async fn group_lost(&self) {
        let mut connectors = self.connectors.lock().await;
        let mine: Vec<crate::group::Unit> = match self.group.lock().unwrap().as_mut() {
            Some(g) => std::mem::take(g).mine.into_iter().collect(),
            None => Vec::new(),
        };
        self.active.store(false, Ordering::SeqCst);
        let runs = connectors
            .iter_mut()
            .flat_map(|(name, c)| c.take_runs(name))
            .collect();
        stop_tasks(runs).await;
        self.report_unassigned(&mine);
    }

    /// A completed rebalance: the worker knows every connector of the config topic (`stored`, for the REST
    /// API when it leads) and runs those `view.mine` holds, with their stored configs and target states (a
    /// connector whose config or state changed restarts; one that did not keeps running untouched).
    /// `config_writes` is [`Worker::config_writes`] from before `stored` was read: when this worker wrote a
    /// change since (a REST request served while the rebalance read the topic), `stored` may lack it, so the
    /// connectors are left as they are (only the assignment applies) and another rebalance reads them again.
    pub async fn group_assign(
        &self,
        stored: BTreeMap<String, crate::distributed::StoredConnector>,
        view: crate::group::GroupView,
        config_writes: u64,
    ) {
        let mut connectors = self.connectors.lock().await;
        // Checked under the connectors lock that `shutdown` takes after setting it: either this assignment ran
        // before and `shutdown` stops what it started, or it sees the flag.
        if self.shutting_down.load(Ordering::SeqCst) {
            tracing::info!("a rebalance completed while the worker shuts down: nothing is started");
            return;
        }
        self.active.store(view.is_leader, Ordering::SeqCst);
        if let Some(s) = &self.status_log {
            s.set_generation(view.generation);
        }
        if self.config_writes() != config_writes {
            *self.group.lock().unwrap() = Some(view);
            tracing::info!("a connector change was written while the rebalance read the config topic; reading it again in another rebalance");
            let names: Vec<String> = connectors.keys().cloned().collect();
            for name in names {
                if let Some(c) = connectors.get_mut(&name) {
                    self.apply_target(&name, c).await;
                }
            }
            self.request_rebalance();
            self.mark_settled();
            return;
        }
        *self.group.lock().unwrap() = Some(view);
        let gone: Vec<String> = connectors
            .keys()
            .filter(|k| !stored.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut c) = connectors.remove(&name) {
                stop_tasks(c.take_runs(&name)).await;
            }
        }
        for (name, s) in stored {
            let mut config = s.config;
            config.insert("name".into(), name.clone());
            let plugin = match Self::check_config(&config) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(connector = %name, "the stored connector cannot run: {e}");
                    continue;
                }
            };
            match connectors.get_mut(&name) {
                Some(c) if c.config == config && c.target == s.target => {
                    self.apply_target(&name, c).await;
                }
                Some(c) => {
                    stop_tasks(c.take_runs(&name)).await;
                    c.config = config;
                    c.plugin = plugin;
                    c.target = s.target;
                    self.apply_target(&name, c).await;
                }
                None => {
                    let mut c = Connector::new(config, plugin, s.target);
                    self.apply_target(&name, &mut c).await;
                    connectors.insert(name, c);
                }
            }
        }
        self.mark_settled();
    }

    /// Becomes the active worker of its group (if `owned` still says it is) and runs the stored connectors.
    pub async fn activate(
        &self,
        stored: BTreeMap<String, crate::distributed::StoredConnector>,
        owned: &AtomicBool,
    ) {
        {
            let _connectors = self.connectors.lock().await;
            if !owned.load(Ordering::SeqCst) {
                return;
            }
            self.active.store(true, Ordering::SeqCst);
        }
        for (name, c) in stored {
            // A stored config that no longer validates (an older or foreign worker wrote it) stays out with a
            // warning; the others run.
            if let Err(e) = self.restore(&name, c.config, c.target).await {
                tracing::warn!(connector = %name, "the stored connector cannot run: {e}");
            }
        }
    }

    /// Stops standing as the active worker: every task stops (committing what it sent) and the connectors are
    /// forgotten (the config topic keeps them for the next active worker).
    pub async fn deactivate(&self) {
        let mut connectors = self.connectors.lock().await;
        let was = self.active.swap(false, Ordering::SeqCst);
        let runs = connectors
            .iter_mut()
            .flat_map(|(name, c)| c.take_runs(name))
            .collect();
        stop_tasks(runs).await;
        connectors.clear();
        if was {
            tracing::info!("this worker no longer runs the group's connectors");
        }
    }

    /// Keeps every connector change in the config topic (distributed mode).
    pub fn with_config_log(mut self, log: Arc<ConfigLog>) -> Worker {
        self.config_log = Some(log);
        self
    }

    /// Reports status changes to the status topic (distributed mode).
    pub fn with_status_log(mut self, log: crate::distributed::StatusLog) -> Worker {
        self.status_log = Some(log);
        self
    }

    /// Answers the status of connectors other workers run from the status topic (distributed mode).
    pub fn with_status_store(mut self, store: Arc<crate::status_store::StatusStore>) -> Worker {
        self.status_store = Some(store);
        self
    }

    /// Whether this worker can answer the status of `name` (None: of every connector it knows) itself: in
    /// Connect's group protocol, once a rebalance told it the connectors, for a connector it runs (from memory)
    /// or whose status the status topic holds. Otherwise the request goes to the leader, as before.
    pub async fn answers_status(&self, name: Option<&str>) -> bool {
        let connectors = self.connectors.lock().await;
        let Some(store) = &self.status_store else {
            return false;
        };
        let mine = match self.group.lock().unwrap().as_ref() {
            Some(g) if g.leader.is_some() => g.mine.clone(),
            _ => return false,
        };
        let answers = |n: &str| {
            store.connector(n).is_some()
                || mine.contains(&(n.to_string(), crate::group::CONNECTOR_TASK))
        };
        match name {
            Some(n) => connectors.contains_key(n) && answers(n),
            None => connectors.keys().all(|n| answers(n)),
        }
    }

    /// Runs a connector read back from the config topic, writing nothing.
    pub async fn restore(
        &self,
        name: &str,
        mut config: ConfigMap,
        target: TargetState,
    ) -> Result<()> {
        config.insert("name".into(), name.to_string());
        self.create_inner(config, target, false).await.map(|_| ())
    }

    /// Writes a connector change to the config topic, if there is one; a failure is the request's 500 and
    /// nothing changes in this worker. The change's records are not written atomically, so some of them may
    /// have reached the topic: the message says so, and a retry writes them all again.
    async fn persist(
        &self,
        name: &str,
        change: impl std::future::Future<Output = std::result::Result<(), String>>,
    ) -> Result<()> {
        if self.config_log.is_none() {
            return Ok(());
        }
        change.await.map_err(|e| {
            Error::Internal(format!(
                "the change to connector {name} could not be written to the config topic: {e}. This worker did not apply it, but part of it may have been written (a worker taking over could see it); check the Kafka cluster, then retry the request"
            ))
        })?;
        self.request_rebalance();
        Ok(())
    }

    /// Checks a connector configuration: a known `connector.class` and no validation error. The 400 names
    /// every bad field, as Connect's does.
    pub fn check_config(config: &ConfigMap) -> Result<Plugin> {
        let class = config
            .get("connector.class")
            .map(|c| c.trim())
            .unwrap_or("");
        if class.is_empty() {
            return Err(Error::BadRequest(
                "Connector config contains no connector type: set connector.class (e.g. FileStreamSource)".into(),
            ));
        }
        let plugin = Plugin::find(class).ok_or_else(|| Error::BadRequest(unknown_plugin(class)))?;
        let validation = plugins::validate(plugin, config);
        let errors = plugins::error_lines(&validation);
        if !errors.is_empty() {
            return Err(Error::BadRequest(format!(
                "Connector configuration is invalid and contains the following {} error(s):\n{}\nYou can also find the above list of errors at the endpoint `/connector-plugins/{{connectorType}}/config/validate`",
                errors.len(),
                errors.join("\n")
            )));
        }
        Ok(plugin)
    }

    /// Creates a connector (`POST /connectors`); 409 when one of that name exists.
    pub async fn create(&self, config: ConfigMap, initial: TargetState) -> Result<Value> {
        self.create_inner(config, initial, true).await
    }

    async fn create_inner(
        &self,
        config: ConfigMap,
        initial: TargetState,
        persist: bool,
    ) -> Result<Value> {
        let name = config.get("name").cloned().unwrap_or_default();
        if name.len() > crate::group::MAX_STR {
            // Longer names cannot travel in the group protocol's STRING (an i16 length).
            return Err(Error::BadRequest(format!(
                "Connector name is {} bytes long; the limit is {} bytes: use a shorter name",
                name.len(),
                crate::group::MAX_STR
            )));
        }
        let plugin = Self::check_config(&config)?;
        let mut connectors = self.connectors.lock().await;
        if !self.is_active() {
            return Err(Error::Conflict(REBALANCE.into()));
        }
        if connectors.contains_key(&name) {
            return Err(Error::Conflict(format!("Connector {name} already exists")));
        }
        if persist {
            self.note_change();
        }
        if let (Some(log), true) = (&self.config_log, persist) {
            let tasks = task_configs(&config, plugin);
            self.persist(
                &name,
                log.put_connector(&name, &config, &tasks, Some(initial)),
            )
            .await?;
        }
        let mut c = Connector::new(config, plugin, initial);
        self.apply_target(&name, &mut c).await;
        let info = connector_info(&name, &c);
        tracing::info!(connector = %name, class = plugin.class(), state = initial.as_str(), "connector created");
        connectors.insert(name, c);
        Ok(info)
    }

    /// `PUT /connectors/{name}/config`: creates the connector (true) or replaces its config and restarts its
    /// task (false).
    pub async fn put_config(&self, name: &str, config: ConfigMap) -> Result<(bool, Value)> {
        let plugin = Self::check_config(&config)?;
        let mut connectors = self.connectors.lock().await;
        let Some(c) = connectors.get_mut(name) else {
            drop(connectors);
            return self
                .create(config, TargetState::Running)
                .await
                .map(|v| (true, v));
        };
        self.note_change();
        if let Some(log) = &self.config_log {
            let tasks = task_configs(&config, plugin);
            self.persist(name, log.put_connector(name, &config, &tasks, None))
                .await?;
        }
        // Every task restarts with the new config (a task it no longer has is removed by `apply_target`).
        stop_tasks(c.take_runs(name)).await;
        c.config = config;
        c.plugin = plugin;
        self.apply_target(name, c).await;
        tracing::info!(connector = %name, "connector reconfigured");
        Ok((false, connector_info(name, c)))
    }

    pub async fn names(&self) -> Vec<String> {
        self.connectors.lock().await.keys().cloned().collect()
    }

    pub async fn info(&self, name: &str) -> Result<Value> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        Ok(connector_info(name, c))
    }

    pub async fn config(&self, name: &str) -> Result<ConfigMap> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        Ok(c.config.clone())
    }

    pub async fn status(&self, name: &str) -> Result<Value> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        Ok(self.connector_status(name, c, false, &[]))
    }

    /// The connector's status: what this worker runs from memory, what other workers of the group run from the
    /// status topic (all from memory while the topic holds nothing of the connector); `restarting_tasks` are
    /// shown RESTARTING (a restart's answer).
    fn connector_status(
        &self,
        name: &str,
        c: &Connector,
        restarting_connector: bool,
        restarting_tasks: &[u32],
    ) -> Value {
        let stored = self.status_store.as_ref().and_then(|s| s.connector(name));
        let restarting = |mut v: Value, yes: bool| {
            if yes {
                v["state"] = json!("RESTARTING");
                if let Some(o) = v.as_object_mut() {
                    o.remove("trace");
                }
            }
            v
        };
        let connector = match &stored {
            Some((s, _)) if !self.runs_here(name) => stored_json(None, s),
            _ => json!({"state": c.target.as_str(), "worker_id": self.worker_id}),
        };
        // The tasks the config has now: a status topic keeps the statuses of tasks a smaller tasks.max removed.
        let tasks: Vec<Value> = c
            .task_ids()
            .filter_map(|id| {
                let v = match &stored {
                    // Another worker's task: its status in the topic, or none yet (left out, as Connect
                    // leaves out a task without a status).
                    Some((_, ts)) if !self.runs_task_here(name, id) => {
                        let (_, t) = ts.iter().find(|(i, _)| *i == id)?;
                        stored_json(Some(id), t)
                    }
                    _ => self.task_status_json(id, &c.tasks.get(id as usize)?.status, false),
                };
                Some(restarting(v, restarting_tasks.contains(&id)))
            })
            .collect();
        json!({
            "name": name,
            "connector": restarting(connector, restarting_connector),
            "tasks": tasks,
            "type": c.plugin.kind().as_str(),
        })
    }

    fn task_status_json(&self, id: u32, status: &SharedStatus, restarting: bool) -> Value {
        let s = status.lock().unwrap().clone();
        let mut v = json!({
            "id": id,
            "state": if restarting { "RESTARTING" } else { s.state },
            "worker_id": self.worker_id,
        });
        if let (Some(trace), false) = (s.trace, restarting) {
            v["trace"] = Value::String(trace);
        }
        v
    }

    /// `GET /connectors/{name}/tasks`: `[{"id": {"connector", "task"}, "config": {...}}]`.
    pub async fn tasks(&self, name: &str) -> Result<Value> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        let configs = task_configs(&c.config, c.plugin);
        let tasks: Vec<Value> = c
            .task_ids()
            .zip(configs)
            .map(|(id, config)| json!({"id": {"connector": name, "task": id}, "config": config}))
            .collect();
        Ok(Value::Array(tasks))
    }

    pub async fn task_status(&self, name: &str, task: &str) -> Result<Value> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        let id = self.check_task(name, c, task)?;
        let v = self.connector_status(name, c, false, &[]);
        v["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["id"] == json!(id)))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("No status found for task {name}-{task}")))
    }

    /// The id of one of the connector's tasks, or the 404 (400 for what is no number).
    fn check_task(&self, name: &str, c: &Connector, task: &str) -> Result<u32> {
        match task.parse::<u32>() {
            Ok(id) if c.task_ids().contains(&id) => Ok(id),
            Ok(_) => Err(Error::NotFound(format!(
                "No status found for task {name}-{task}"
            ))),
            Err(_) => Err(Error::BadRequest(format!(
                "task id `{task}` is not a number: tasks are numbered from 0"
            ))),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let mut connectors = self.connectors.lock().await;
        if !connectors.contains_key(name) {
            return Err(Error::connector_not_found(name));
        }
        self.note_change();
        if let Some(log) = &self.config_log {
            self.persist(name, log.delete(name)).await?;
        }
        let mut c = connectors.remove(name).expect("checked above");
        if let Some(s) = &self.status_log {
            s.forget(
                name,
                (c.tasks.len() as u32).max(task_count(c.plugin, &c.config)),
            );
        }
        stop_tasks(c.take_runs(name)).await;
        tracing::info!(connector = %name, "connector deleted");
        Ok(())
    }

    /// `PUT .../pause|resume|stop`.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<()> {
        let mut connectors = self.connectors.lock().await;
        let c = connectors
            .get_mut(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        if c.target == target {
            return Ok(());
        }
        self.note_change();
        if let Some(log) = &self.config_log {
            self.persist(name, log.put_target(name, target)).await?;
        }
        c.target = target;
        self.apply_target(name, c).await;
        tracing::info!(connector = %name, state = target.as_str(), "connector target state changed");
        Ok(())
    }

    /// `POST /connectors/{name}/restart`. Without `includeTasks`/`onlyFailed` (Connect's old form) only the
    /// connector restarts and the answer is None (204); with them, the status with what restarts (202). The
    /// tasks other workers of the group run are returned (id, REST address) for the caller to restart there.
    pub async fn restart(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
        new_form: bool,
    ) -> Result<(Option<Value>, Vec<(u32, String)>)> {
        let mut connectors = self.connectors.lock().await;
        let c = connectors
            .get_mut(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        // The connector object itself holds no work in the built-in connectors; it is never FAILED.
        let restart_connector = !only_failed;
        let restarting: Vec<u32> = if include_tasks {
            // Every task's state, those of other workers from the status topic.
            let status = self.connector_status(name, c, false, &[]);
            let failed = |id: u32| {
                status["tasks"]
                    .as_array()
                    .and_then(|ts| ts.iter().find(|t| t["id"] == json!(id)))
                    .is_some_and(|t| t["state"] == "FAILED")
            };
            c.task_ids()
                .filter(|id| !only_failed || failed(*id))
                .collect()
        } else {
            Vec::new()
        };
        let remote: Vec<(u32, String)> = self
            .remote_tasks(name)
            .into_iter()
            .filter(|(id, _)| restarting.contains(id))
            .collect();
        let answer =
            new_form.then(|| self.connector_status(name, c, restart_connector, &restarting));
        if c.target == TargetState::Running {
            let runs = restarting
                .iter()
                .filter_map(|id| {
                    let run = c.tasks.get_mut(*id as usize)?.run.take()?;
                    Some((format!("{name}-{id}"), run))
                })
                .collect();
            stop_tasks(runs).await;
            self.apply_target(name, c).await;
        } else {
            // A paused task restarts into PAUSED: its failure is cleared.
            for id in &restarting {
                if let Some(t) = c.tasks.get(*id as usize) {
                    t.set("PAUSED");
                }
            }
        }
        tracing::info!(connector = %name, tasks = ?restarting, "connector restarted");
        Ok((answer, remote))
    }

    /// `POST /connectors/{name}/tasks/{id}/restart`.
    pub async fn restart_task(&self, name: &str, task: &str) -> Result<()> {
        let mut connectors = self.connectors.lock().await;
        let c = connectors
            .get_mut(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        let id = self.check_task(name, c, task)?;
        // Only this task stops; `apply_target` starts it again (the others run on untouched).
        if let Some(run) = c.tasks.get_mut(id as usize).and_then(|t| t.run.take()) {
            stop_task(&format!("{name}-{id}"), run).await;
        }
        self.apply_target(name, c).await;
        tracing::info!(connector = %name, task = id, "task restarted");
        Ok(())
    }

    /// `GET /connectors/{name}/offsets` (KIP-875): a source's offsets from the offsets file, a sink's from its
    /// consumer group's committed offsets.
    pub async fn offsets(&self, name: &str) -> Result<Value> {
        let (plugin, config) = {
            let connectors = self.connectors.lock().await;
            let c = connectors
                .get(name)
                .ok_or_else(|| Error::connector_not_found(name))?;
            (c.plugin, c.config.clone())
        };
        let offsets = match plugin.kind() {
            plugins::Kind::Source => self.offsets.connector_offsets(name),
            plugins::Kind::Sink => {
                let bootstrap = self.config.bootstrap_servers.clone();
                let name = name.to_string();
                tokio::task::spawn_blocking(move || {
                    crate::file_sink::committed_offsets(&bootstrap, &name, &config)
                })
                .await
                .map_err(|e| Error::Internal(format!("reading the sink's offsets failed: {e}")))?
                .map_err(Error::Internal)?
            }
        };
        Ok(json!({"offsets": offsets}))
    }

    /// `PATCH /connectors/{name}/offsets` (`Some`: `[{"partition", "offset"}]`, a null offset removes one) and
    /// `DELETE /connectors/{name}/offsets` (`None`) for a STOPPED source connector: the offsets file is rewritten
    /// before the answer, and the connector resumes from there.
    pub async fn change_offsets(
        &self,
        name: &str,
        changes: Option<Vec<(Value, Value)>>,
    ) -> Result<Value> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        if c.target != TargetState::Stopped {
            return Err(Error::BadRequest(format!(
                "Connectors must be in the STOPPED state before their offsets can be modified. This can be done for the specified connector by issuing a 'PUT' request to the '/connectors/{name}/stop' endpoint"
            )));
        }
        if c.plugin.kind() == plugins::Kind::Sink {
            return Err(Error::BadRequest(format!(
                "changing a sink connector's offsets over REST is not supported yet: they are the committed offsets of the consumer group {group}; use `fjord groups reset-offsets {group} ...` or `fjord groups delete {group}`",
                group = crate::file_sink::group_of(name)
            )));
        }
        if let Some(changes) = &changes {
            check_offsets(c.plugin, &c.config, changes)?;
        }
        let reset = changes.is_none();
        self.offsets
            .replace_connector(name, |mine| match changes {
                None => mine.clear(),
                Some(changes) => {
                    for (partition, offset) in changes {
                        if offset.is_null() {
                            mine.remove(&partition.to_string());
                        } else {
                            mine.insert(partition.to_string(), (partition, offset));
                        }
                    }
                }
            })
            .await
            .map_err(|e| {
                Error::Internal(format!(
                    "writing {} failed: {e}; the connector's offsets are unchanged (check the disk or the cluster, then try again)",
                    self.offsets.describe()
                ))
            })?;
        tracing::info!(connector = %name, reset, "source offsets changed over REST");
        Ok(json!({"message": if reset {
            "The offsets for this connector have been reset successfully"
        } else {
            "The offsets for this connector have been altered successfully"
        }}))
    }

    /// `GET /connectors/{name}/topics` (KIP-558): the topics the connector uses, as configured.
    pub async fn topics(&self, name: &str) -> Result<Value> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| Error::connector_not_found(name))?;
        let topics: Vec<&str> = match c.plugin {
            Plugin::FileSource => c
                .config
                .get("topic")
                .map(|t| vec![t.trim()])
                .unwrap_or_default(),
            // The source's topics are named by its tables; not listed yet.
            Plugin::PostgresSource => Vec::new(),
            Plugin::FileSink
            | Plugin::ElasticsearchSink
            | Plugin::HttpSink
            | Plugin::PostgresSink => c
                .config
                .get("topics")
                .map(|t| {
                    t.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        Ok(json!({name: {"topics": topics}}))
    }

    /// Stops every task (each finishes its batch and commits), for a clean shutdown; a distributed worker then
    /// leaves its group, so that a standby takes over at once.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        if let Some(s) = &self.status_store {
            s.stop();
        }
        let membership = self.membership.lock().unwrap().take();
        if let Some(m) = membership {
            // Every task commits what it sent before the group hears this worker left.
            self.group_lost().await;
            m.stop().await;
            return;
        }
        let lease = self.lease.lock().unwrap().take();
        if let Some(lease) = lease {
            lease.stop(self).await;
            return;
        }
        let mut connectors = self.connectors.lock().await;
        let runs = connectors
            .iter_mut()
            .flat_map(|(name, c)| c.take_runs(name))
            .collect();
        stop_tasks(runs).await;
    }

    /// Makes the task match the target state: runs it when RUNNING (unless it runs already), stops it
    /// otherwise.
    async fn apply_target(&self, name: &str, c: &mut Connector) {
        let wanted = c.task_ids().end as usize;
        if c.tasks.len() > wanted {
            // Tasks a lower tasks.max (or a stop) removed: stopped, and UNASSIGNED in the status topic, as
            // Connect's worker writes when it shuts a task down.
            let removed: Vec<TaskSlot> = c.tasks.drain(wanted..).collect();
            let count = removed.len();
            let runs = removed
                .into_iter()
                .enumerate()
                .filter_map(|(i, t)| t.run.map(|run| (format!("{name}-{}", wanted + i), run)))
                .collect();
            stop_tasks(runs).await;
            if let Some(s) = &self.status_log {
                for id in wanted..wanted + count {
                    if self.runs_task_here(name, id as u32) {
                        s.report(name, Some(id as u32), "UNASSIGNED", None);
                    }
                }
            }
        }
        c.tasks.resize_with(wanted, TaskSlot::new);
        // The tasks another worker of the group runs (or nobody yet): nothing of them runs here, nothing of them
        // is reported.
        let elsewhere: Vec<usize> = (0..wanted)
            .filter(|id| !self.runs_task_here(name, *id as u32))
            .collect();
        let runs = elsewhere
            .iter()
            .filter_map(|id| {
                let t = &mut c.tasks[*id];
                t.set("UNASSIGNED");
                t.run.take().map(|run| (format!("{name}-{id}"), run))
            })
            .collect();
        stop_tasks(runs).await;
        if let (Some(s), true) = (&self.status_log, self.runs_here(name)) {
            let state = match c.target {
                TargetState::Running => "RUNNING",
                TargetState::Paused => "PAUSED",
                TargetState::Stopped => "STOPPED",
            };
            s.report(name, None, state, None);
        }
        match c.target {
            TargetState::Running => {
                for id in 0..c.tasks.len() {
                    if elsewhere.contains(&id) {
                        continue;
                    }
                    let t = &c.tasks[id];
                    if t.run.as_ref().is_some_and(|r| !r.handle.is_finished()) {
                        continue;
                    }
                    // A task that ended FAILED (its restarts used up: `task.restart.max.attempts`) stays FAILED
                    // until a restart, a resume or a new config, which take the task first; a rebalance that
                    // leaves the connector here does not start it again.
                    if t.run.is_some() && t.status.lock().unwrap().state == "FAILED" {
                        continue;
                    }
                    let run = self.spawn_task(name, c, id as u32);
                    c.tasks[id].run = Some(run);
                }
            }
            TargetState::Paused | TargetState::Stopped => {
                // (A STOPPED connector has no tasks left: `wanted` is 0.)
                stop_tasks(c.take_runs(name)).await;
                for (id, t) in c.tasks.iter().enumerate() {
                    if elsewhere.contains(&id) {
                        continue;
                    }
                    t.set("PAUSED");
                    if let Some(s) = &self.status_log {
                        s.report(name, Some(id as u32), "PAUSED", None);
                    }
                }
            }
        }
    }

    /// A task that cannot start: FAILED with `trace` until it is stopped (no automatic restart: the same config
    /// fails the same way).
    fn failed_task(&self, name: &str, c: &Connector, id: u32, trace: String) -> TaskRun {
        tracing::error!(connector = %name, task = id, "task failed: {trace}");
        if let Some(s) = &self.status_log {
            s.report_safe(name, Some(id), "FAILED", Some(&trace));
        }
        *c.tasks[id as usize].status.lock().unwrap() = TaskStatus {
            state: "FAILED",
            trace: Some(trace),
        };
        let (stop, _) = watch::channel(false);
        TaskRun {
            stop,
            handle: tokio::spawn(async {}),
        }
    }

    /// Starts task `id` of the connector (its slot must exist) with the connector's config.
    fn spawn_task(&self, name: &str, c: &Connector, id: u32) -> TaskRun {
        // The connector's own converter, or the worker's when it sets none. One it sets but that cannot be built
        // fails the task with the reason: running with the worker's converter instead would write (or read) the
        // records in a format nobody asked for. (Validation refuses such a config before it is stored, so this
        // guards a config the validation of this version never saw.)
        let converter = |prefix: &str, default: &Converter| {
            Converter::from_config(&c.config, prefix)
                .map(|own| own.unwrap_or_else(|| default.clone()))
                .map_err(|e| {
                    format!("{e}\n(the connector's {prefix} cannot be used; fix it with PUT /connectors/{name}/config)")
                })
        };
        let converters = converter("key.converter", &self.config.key_converter).and_then(|k| {
            converter("value.converter", &self.config.value_converter).map(|v| (k, v))
        });
        let (key_converter, value_converter) = match converters {
            Ok(kv) => kv,
            Err(trace) => return self.failed_task(name, c, id, trace),
        };
        let ctx = TaskContext {
            connector: name.to_string(),
            task: id,
            config: task_config(c.plugin, &c.config, id),
            key_converter,
            value_converter,
            bootstrap_servers: self.config.bootstrap_servers.clone(),
            offsets: self.offsets.clone(),
            offset_flush_interval: Duration::from_millis(self.config.offset_flush_interval_ms),
            client_overrides: match c.plugin.kind() {
                plugins::Kind::Source => [
                    self.config.producer_overrides.clone(),
                    crate::config::connector_overrides(&c.config, true),
                ]
                .concat(),
                plugins::Kind::Sink => [
                    self.config.consumer_overrides.clone(),
                    crate::config::connector_overrides(&c.config, false),
                ]
                .concat(),
            },
            dlq_overrides: [
                self.config.producer_overrides.clone(),
                crate::config::connector_overrides(&c.config, true),
            ]
            .concat(),
        };
        *c.tasks[id as usize].status.lock().unwrap() = TaskStatus {
            state: "RUNNING",
            trace: None,
        };
        if let Some(s) = &self.status_log {
            s.report(name, Some(id), "RUNNING", None);
        }
        let status_log = self.status_log.clone();
        let (stop, mut stopped) = watch::channel(false);
        let status = c.tasks[id as usize].status.clone();
        let plugin = c.plugin;
        let name = name.to_string();
        let restart = crate::error_handling::RestartPolicy::from_config(&ctx.config);
        // Every line the task logs carries its connector (what `/admin/logs?connector=` and
        // `fjord connect logs NAME` select by).
        let span = tracing::info_span!("task", connector = %name, task = id);
        let task = async move {
            let mut attempt = 0;
            loop {
                let started = tokio::time::Instant::now();
                let result = match plugin {
                    Plugin::FileSource => {
                        crate::file_source::run(ctx.clone(), stopped.clone()).await
                    }
                    Plugin::FileSink => crate::file_sink::run(ctx.clone(), stopped.clone()).await,
                    Plugin::ElasticsearchSink => {
                        crate::elasticsearch::run(ctx.clone(), stopped.clone()).await
                    }
                    Plugin::HttpSink => crate::http_sink::run(ctx.clone(), stopped.clone()).await,
                    Plugin::PostgresSink => crate::pg_sink::run(ctx.clone(), stopped.clone()).await,
                    Plugin::PostgresSource => {
                        crate::pg_source::run(ctx.clone(), stopped.clone()).await
                    }
                };
                let Err(trace) = result else { return };
                if *stopped.borrow() {
                    // Told to stop while failing (a retry given up): stopping, not a failure to restart.
                    tracing::info!(connector = %name, task = id, "task stopped while failing: {trace}");
                    return;
                }
                // A task that ran for a while before failing starts its restart count over.
                if started.elapsed() >= restart.max {
                    attempt = 0;
                }
                attempt += 1;
                let delay = restart.delay(attempt);
                let trace = match delay {
                    Some(d) => format!("{trace}\n(Fjord restarts this task automatically in {} ms, restart {attempt}{}; task.restart.max.attempts=0 turns this off)", d.as_millis(), restart.max_attempts.map(|m| format!(" of {m}")).unwrap_or_default()),
                    None if attempt > 1 => format!("{trace}\n(it was restarted automatically {} time(s) and failed each time, task.restart.max.attempts; restart it with POST /connectors/{name}/restart?includeTasks=true once the cause is fixed)", attempt - 1),
                    None => trace,
                };
                tracing::error!(connector = %name, task = id, "task failed: {trace}");
                if let Some(s) = &status_log {
                    s.report_safe(&name, Some(id), "FAILED", Some(&trace));
                }
                *status.lock().unwrap() = TaskStatus {
                    state: "FAILED",
                    trace: Some(trace),
                };
                let Some(delay) = delay else { return };
                // A stop (pause, delete, shutdown, a manual restart) ends the wait and the task.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped.changed() => return,
                }
                if *stopped.borrow() {
                    return;
                }
                tracing::info!(connector = %name, task = id, attempt, "restarting the failed task");
                *status.lock().unwrap() = TaskStatus {
                    state: "RUNNING",
                    trace: None,
                };
                if let Some(s) = &status_log {
                    s.report(&name, Some(id), "RUNNING", None);
                }
            }
        };
        let handle = tokio::spawn(tracing::Instrument::instrument(task, span));
        TaskRun { stop, handle }
    }
}

/// Signals a task to stop and waits for it to finish its batch (bounded; then it is aborted).
async fn stop_task(name: &str, run: TaskRun) {
    stop_tasks(vec![(name.to_string(), run)]).await;
}

/// Stops tasks together: every one is told first, then all get one shared `TASK_SHUTDOWN_TIMEOUT` to finish
/// and commit (the ones still running then are aborted), so that stopping N tasks (a shutdown, or handing the
/// connectors to another worker in a rebalance) takes at most that long, not N times it.
async fn stop_tasks(runs: Vec<(String, TaskRun)>) {
    for (_, run) in &runs {
        let _ = run.stop.send(true);
    }
    let deadline = tokio::time::Instant::now() + TASK_SHUTDOWN_TIMEOUT;
    for (name, run) in runs {
        let abort = run.handle.abort_handle();
        if tokio::time::timeout_at(deadline, run.handle).await.is_err() {
            tracing::warn!(connector = %name, "task did not stop within {TASK_SHUTDOWN_TIMEOUT:?}; aborted");
            abort.abort();
        }
    }
}

/// KIP-875's checks of a PATCH's offsets before anything is written: partitions and offsets are maps of string
/// keys to primitive values (Connect's `OffsetUtils.validateFormat`), then the connector's own rules (Kafka's
/// `FileStreamSourceConnector.alterOffsets`: a partition has `filename`, an offset is null or has a non-negative
/// integer `position`). The 400 names the bad field.
fn check_offsets(plugin: Plugin, config: &ConfigMap, changes: &[(Value, Value)]) -> Result<()> {
    if changes.is_empty() {
        return Err(Error::BadRequest(
            "Partitions / offsets need to be provided in order to alter offsets".into(),
        ));
    }
    for (partition, offset) in changes {
        for (what, map) in [("partition", partition), ("offset", offset)] {
            let Some(map) = map.as_object() else {
                if what == "offset" && map.is_null() {
                    continue;
                }
                return Err(Error::BadRequest(format!(
                    "{what} {map} must be a JSON object{}",
                    if what == "offset" { " or null" } else { "" }
                )));
            };
            for (k, v) in map {
                if v.is_object() || v.is_array() {
                    return Err(Error::BadRequest(format!(
                        "Offsets may only contain primitive types as values, but field {k} of the {what} {partition} contains {v}"
                    )));
                }
            }
        }
        if plugin == Plugin::FileSource {
            if config.get("file").is_none_or(|f| f.trim().is_empty()) {
                return Err(Error::BadRequest(
                    "Offsets cannot be modified if the 'file' configuration is unspecified".into(),
                ));
            }
            if offset.is_null() {
                // Tombstones are allowed for anything, so that garbage can be cleaned up.
                continue;
            }
            let Some(position) = offset.get("position") else {
                return Err(Error::BadRequest(format!(
                    "Offset objects should either be null or contain the key 'position' (the byte to read {partition} from): {offset}"
                )));
            };
            match position.as_i64() {
                Some(p) if p >= 0 => {}
                Some(_) => {
                    return Err(Error::BadRequest(format!(
                        "The value for the 'position' key in the offset should be a non-negative value: {position}"
                    )))
                }
                None => {
                    return Err(Error::BadRequest(format!(
                        "The value for the 'position' key in the offset is expected to be a Long value (a byte position), not {position}"
                    )))
                }
            }
            if partition.get("filename").is_none() {
                return Err(Error::BadRequest(format!(
                    "Partition objects should contain the key 'filename': {partition}"
                )));
            }
        }
    }
    Ok(())
}

/// A status from the status topic in the REST API's shape (`id` for a task).
fn stored_json(task: Option<u32>, s: &crate::status_store::Status) -> Value {
    let mut v = json!({"state": s.state, "worker_id": s.worker_id});
    if let Some(id) = task {
        v["id"] = json!(id);
    }
    if let Some(t) = &s.trace {
        v["trace"] = json!(t);
    }
    v
}

fn connector_info(name: &str, c: &Connector) -> Value {
    let tasks: Vec<Value> = c
        .task_ids()
        .map(|id| json!({"connector": name, "task": id}))
        .collect();
    json!({"name": name, "config": c.config, "tasks": tasks, "type": c.plugin.kind().as_str()})
}

/// The tasks' configs, as `GET .../tasks` shows them and the config topic keeps them: each task's with the task
/// class (a sink's tasks share one config, as the FileStream and Confluent sinks make them: the group protocol,
/// not the config, splits the partitions; the PostgreSQL source's differ in their `tables`).
fn task_configs(config: &ConfigMap, plugin: Plugin) -> Vec<ConfigMap> {
    (0..task_count(plugin, config))
        .map(|id| {
            let mut c = task_config(plugin, config, id);
            c.insert("task.class".into(), task_class(plugin).into());
            c
        })
        .collect()
}

fn task_class(p: Plugin) -> &'static str {
    match p {
        Plugin::FileSource => "org.apache.kafka.connect.file.FileStreamSourceTask",
        Plugin::FileSink => "org.apache.kafka.connect.file.FileStreamSinkTask",
        Plugin::ElasticsearchSink => "io.confluent.connect.elasticsearch.ElasticsearchSinkTask",
        Plugin::HttpSink => "io.confluent.connect.http.HttpSinkTask",
        Plugin::PostgresSink => crate::pg_sink::TASK_CLASS,
        Plugin::PostgresSource => crate::pg_source::TASK_CLASS,
    }
}

fn unknown_plugin(class: &str) -> String {
    let known: Vec<&str> = Plugin::ALL.iter().map(|p| p.class()).collect();
    format!(
        "Failed to find any class that implements Connector and which name matches {class}; the built-in connectors are: {}",
        known.join(", ")
    )
}

/// The 400 for an unknown plugin of a validate request.
pub fn unknown_plugin_error(class: &str) -> Error {
    Error::BadRequest(unknown_plugin(class))
}

/// A worker for unit tests: a standalone-style worker whose offsets file is in `dir` and whose cluster is
/// unreachable (127.0.0.1:1), so nothing it starts can reach a broker.
#[cfg(test)]
pub(crate) fn test_worker(dir: &std::path::Path) -> Worker {
    let file = dir.join("connect.offsets");
    let props: crate::config::ConfigMap = [
        ("bootstrap.servers", "127.0.0.1:1"),
        ("offset.storage.file.filename", file.to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = crate::config::WorkerConfig::from_properties(props).unwrap();
    let offsets = Arc::new(crate::offsets::OffsetStore::open(&file).unwrap());
    Worker::new(config, offsets, "w:1".into(), "c".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rebalance that completes after `shutdown` (the group thread was inside a JoinGroup) starts nothing:
    /// on the old code the connector it assigned ran again after the worker had stopped everything.
    #[tokio::test]
    async fn a_rebalance_completing_after_shutdown_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let w = test_worker(dir.path());
        w.shutdown().await;
        let config: ConfigMap = [
            ("connector.class", "FileStreamSource"),
            ("file", dir.path().join("in.txt").to_str().unwrap()),
            ("topic", "t"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let stored = BTreeMap::from([(
            "src".to_string(),
            crate::distributed::StoredConnector {
                config,
                target: TargetState::Running,
            },
        )]);
        let view = crate::group::GroupView {
            leader: Some("w:1".into()),
            is_leader: true,
            mine: [("src".to_string(), -1), ("src".to_string(), 0)].into(),
            ..Default::default()
        };
        w.group_assign(stored, view, w.config_writes()).await;
        let connectors = w.connectors.lock().await;
        assert!(
            connectors
                .values()
                .all(|c| c.tasks.iter().all(|t| t.run.is_none())),
            "a task runs after shutdown"
        );
    }

    /// A connector whose converter cannot be built (a config this version's validation never saw) fails its task
    /// with the reason; the old code ran it with the worker's converter instead, RUNNING, in another format.
    #[tokio::test]
    async fn a_task_whose_converter_cannot_be_built_fails_instead_of_using_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        let w = test_worker(dir.path());
        let config: ConfigMap = [
            ("connector.class", "FileStreamSource"),
            ("file", dir.path().join("in.txt").to_str().unwrap()),
            ("topic", "t"),
            ("value.converter", "com.acme.NoSuchConverter"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut c = Connector::new(config, Plugin::FileSource, TargetState::Running);
        c.tasks.push(TaskSlot::new());
        let run = w.spawn_task("src", &c, 0);
        let st = c.tasks[0].status.lock().unwrap().clone();
        assert_eq!(st.state, "FAILED", "{st:?}");
        let trace = st.trace.unwrap_or_default();
        assert!(
            trace.contains("value.converter") && trace.contains("NoSuchConverter"),
            "{trace}"
        );
        stop_task("src", run).await;
    }

    /// A task whose restarts are used up stays FAILED through a rebalance that keeps its connector here (every
    /// rebalance started it again, whatever `task.restart.max.attempts` said).
    #[tokio::test]
    async fn a_rebalance_does_not_restart_a_task_that_stays_failed() {
        let dir = tempfile::tempdir().unwrap();
        let w = test_worker(dir.path()).in_group();
        // A directory is not a file a source can read: the task fails at once.
        let config: ConfigMap = [
            ("connector.class", "FileStreamSource"),
            ("file", dir.path().to_str().unwrap()),
            ("topic", "t"),
            ("task.restart.max.attempts", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let stored = BTreeMap::from([(
            "src".to_string(),
            crate::distributed::StoredConnector {
                config,
                target: TargetState::Running,
            },
        )]);
        let view = crate::group::GroupView {
            leader: Some("w:1".into()),
            is_leader: true,
            mine: [("src".to_string(), -1), ("src".to_string(), 0)].into(),
            ..Default::default()
        };
        let state = || async {
            let connectors = w.connectors.lock().await;
            let c = &connectors["src"];
            let finished = c.tasks[0]
                .run
                .as_ref()
                .is_some_and(|t| t.handle.is_finished());
            let st = c.tasks[0].status.lock().unwrap().state;
            (st, finished)
        };
        w.group_assign(stored.clone(), view.clone(), w.config_writes())
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while state().await != ("FAILED", true) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the task did not fail: {:?}",
                state().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.group_assign(stored, view, w.config_writes()).await;
        assert_eq!(state().await, ("FAILED", true));
    }

    /// A rebalance whose read of the config topic started before this worker wrote a change (a connector created
    /// over REST meanwhile) must not undo the change: the connector stays until a rebalance that read the topic
    /// after the change says otherwise (the old code removed it until the next rebalance, so a `GET /connectors`
    /// right after the create could miss it).
    #[tokio::test]
    async fn a_rebalance_that_read_the_configs_before_a_change_does_not_undo_it() {
        let dir = tempfile::tempdir().unwrap();
        let worker = test_worker(dir.path()).in_group();
        let view = crate::group::GroupView {
            leader: Some("w:1".into()),
            is_leader: true,
            ..Default::default()
        };
        worker
            .group_assign(BTreeMap::new(), view.clone(), worker.config_writes())
            .await;
        let read_before = worker.config_writes();
        let config: ConfigMap = [
            ("name", "a"),
            ("connector.class", "FileStreamSource"),
            ("file", "/nonexistent/in"),
            ("topic", "t"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        worker.create(config, TargetState::Stopped).await.unwrap();
        worker
            .group_assign(BTreeMap::new(), view.clone(), read_before)
            .await;
        assert_eq!(worker.names().await, ["a"]);
        // A read after the change that lacks the connector: it was deleted elsewhere.
        worker
            .group_assign(BTreeMap::new(), view, worker.config_writes())
            .await;
        assert!(worker.names().await.is_empty());
    }

    /// A sink's `tasks.max` is its task count: REST lists that many tasks (ids 0..N) with a status each, a
    /// config with fewer removes the last ones, and a source runs one whatever it says. On the old code every
    /// connector had task 0 only.
    #[tokio::test]
    async fn a_sink_runs_tasks_max_tasks_and_a_lower_tasks_max_removes_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let w = test_worker(dir.path());
        let sink = |tasks: &str| -> ConfigMap {
            [
                ("name", "fan"),
                ("connector.class", "FileStreamSink"),
                ("file", dir.path().join("out.txt").to_str().unwrap()),
                ("topics", "t"),
                ("tasks.max", tasks),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let ids = |v: &Value, key: &str| -> Vec<Value> {
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t[key].clone())
                .collect()
        };
        let info = w.create(sink("3"), TargetState::Running).await.unwrap();
        assert_eq!(ids(&info, "task"), [json!(0), json!(1), json!(2)]);
        let status = w.status("fan").await.unwrap();
        assert_eq!(ids(&status, "id"), [json!(0), json!(1), json!(2)]);
        assert_eq!(ids(&status, "state"), vec![json!("RUNNING"); 3], "{status}");
        let tasks = w.tasks("fan").await.unwrap();
        assert_eq!(tasks.as_array().unwrap().len(), 3);
        assert_eq!(tasks[2]["id"]["task"], 2);
        assert_eq!(w.task_status("fan", "2").await.unwrap()["id"], 2);
        {
            let connectors = w.connectors.lock().await;
            let runs = connectors["fan"].tasks.iter().filter(|t| t.run.is_some());
            assert_eq!(runs.count(), 3, "three tasks run");
        }
        w.restart_task("fan", "1").await.unwrap();
        let status = w.status("fan").await.unwrap();
        assert_eq!(ids(&status, "state"), vec![json!("RUNNING"); 3], "{status}");

        let (created, info) = w.put_config("fan", sink("1")).await.unwrap();
        assert!(!created);
        assert_eq!(ids(&info, "task"), [json!(0)]);
        assert_eq!(ids(&w.status("fan").await.unwrap(), "id"), [json!(0)]);
        assert!(matches!(
            w.task_status("fan", "1").await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(w.connectors.lock().await["fan"].tasks.len(), 1);

        w.set_target("fan", TargetState::Stopped).await.unwrap();
        assert!(w.tasks("fan").await.unwrap().as_array().unwrap().is_empty());

        let mut source: ConfigMap = [
            ("name", "src"),
            ("connector.class", "FileStreamSource"),
            ("file", dir.path().join("in.txt").to_str().unwrap()),
            ("topic", "t"),
            ("tasks.max", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let info = w.create(source.clone(), TargetState::Paused).await.unwrap();
        assert_eq!(ids(&info, "task"), [json!(0)]);
        source.insert("tasks.max".into(), "1001".into());
        assert!(matches!(
            w.put_config("src", source).await,
            Err(Error::BadRequest(m)) if m.contains("tasks.max")
        ));
        w.shutdown().await;
    }

    /// The PostgreSQL source's tasks each get their share of `table.whitelist` in `tables` (Confluent's task
    /// config key); the old code made one task whatever tasks.max said.
    #[test]
    fn a_postgres_sources_tasks_split_its_tables() {
        let config: ConfigMap = [
            ("connector.class", "PostgresSource"),
            ("connection.url", "jdbc:postgresql://127.0.0.1:1/db"),
            ("mode", "bulk"),
            ("topic.prefix", "pg-"),
            ("table.whitelist", "a,b,c"),
            ("tasks.max", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(task_count(Plugin::PostgresSource, &config), 2);
        let tasks = task_configs(&config, Plugin::PostgresSource);
        let tables: Vec<&str> = tasks.iter().map(|t| t["tables"].as_str()).collect();
        assert_eq!(tables, ["a,b", "c"]);
        assert_eq!(tasks[1]["task.class"], crate::pg_source::TASK_CLASS);
    }

    /// Tasks that ignore the stop signal: stopping three of them takes one shutdown timeout, not three, and
    /// every one is aborted; a task that stops at once is joined, not aborted.
    #[tokio::test(start_paused = true)]
    async fn stopping_tasks_shares_one_shutdown_deadline() {
        let mut runs = Vec::new();
        for i in 0..3 {
            let (stop, _) = watch::channel(false);
            let handle = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
            runs.push((format!("slow-{i}"), TaskRun { stop, handle }));
        }
        let (stop, mut rx) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let _ = rx.changed().await;
        });
        let quick = handle.abort_handle();
        runs.push(("quick".into(), TaskRun { stop, handle }));
        let aborts: Vec<_> = runs.iter().map(|(_, r)| r.handle.abort_handle()).collect();
        let started = tokio::time::Instant::now();
        stop_tasks(runs).await;
        let took = started.elapsed();
        assert!(
            took >= TASK_SHUTDOWN_TIMEOUT && took < 2 * TASK_SHUTDOWN_TIMEOUT,
            "{took:?}"
        );
        tokio::task::yield_now().await;
        assert!(aborts.iter().all(|a| a.is_finished()));
        assert!(quick.is_finished());
    }
}
