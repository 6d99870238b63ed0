//! The engine: executes statements against a Kafka cluster (librdkafka). DDL and persistent queries are written
//! to a compacted, single-partition command topic (one record per stream or table, keyed by its name; a drop is
//! a tombstone) before they take effect here, and the command topic is replayed at start, so that the catalog
//! and the persistent queries survive a restart. A persistent query consumes in its own group
//! (`_fjord_sql_<query id>`) and commits offsets only after its output is acknowledged (at-least-once), so a
//! restarted query resumes where it committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value as J};

mod join;
mod stateful;

use crate::catalog::{Catalog, Column, Command, CommandLog, Format, QueryDef, SourceDef};
use crate::error::{Result, SqlError};
use crate::expr::{compile, Scope};
use crate::format;
use crate::parser::{parse_statement, KeyKind, Parsed, PropValue, SourceKind, Statement};
use crate::plan::{plan_select, SelectPlan, PSEUDO};
use crate::types::{SqlType, Value};

/// How long a cluster operation (metadata, topic creation, a command write) may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The default name of the command topic (ksqlDB's is `_confluent-ksql-<service id>_command_topic`).
pub const COMMAND_TOPIC: &str = "_fjord_sql_commands";

/// Request properties (`SET 'auto.offset.reset'='earliest'`, or `streamsProperties` over REST).
pub type Props = BTreeMap<String, String>;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub bootstrap: String,
    pub command_topic: String,
    /// The schema registry AVRO, PROTOBUF and JSON_SR formats use (`http://host:port`); `None`: those formats
    /// are refused with a message saying how to give one.
    pub registry_url: Option<String>,
    /// How long a push query waits for its client to take a row before it ends (a client that stops reading
    /// must not hold a thread, a consumer and a slot for ever). [`DEFAULT_PUSH_STALL`] by default.
    pub push_stall: Duration,
    /// The processing guarantee of a persistent query that does not ask for one (ksqlDB's server setting
    /// `ksql.streams.processing.guarantee`): false, at least once (the default); true, exactly once.
    pub exactly_once: bool,
}

/// How long a push query waits at most for a client that does not read its rows.
pub const DEFAULT_PUSH_STALL: Duration = Duration::from_secs(60);

impl EngineConfig {
    pub fn new(bootstrap: &str, command_topic: &str) -> EngineConfig {
        EngineConfig {
            bootstrap: bootstrap.to_string(),
            command_topic: command_topic.to_string(),
            registry_url: None,
            push_stall: DEFAULT_PUSH_STALL,
            exactly_once: false,
        }
    }
}

/// A persistent query running in this process.
struct Running {
    stop: Arc<AtomicBool>,
    stats: Arc<QueryStats>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// A stateful query's store, for pull queries.
    table: Option<Arc<stateful::TableQuery>>,
}

#[derive(Default, Debug)]
pub struct QueryStats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records that could not be read or evaluated (skipped, as ksqlDB's processing log does).
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Records of a windowed aggregation that arrived after their windows closed (grace passed): dropped.
    pub late_records: AtomicU64,
    /// Why the query's task stopped, while it is failing (ksqlDB's ERROR state): set when the task fails, cleared
    /// once a restarted task makes progress again (a commit, or [`HEALTHY_AFTER`] up with nothing to do).
    pub failure: Mutex<Option<String>>,
    /// ksqlDB's query error queue: the latest failures (epoch milliseconds, message), at most
    /// [`ERROR_QUEUE`], oldest first.
    pub error_queue: Mutex<std::collections::VecDeque<(i64, String)>>,
    /// How often the task was restarted after a failure.
    pub restarts: AtomicU64,
}

/// How many failures a query's error queue keeps (ksqlDB's `ksql.query.error.max.queue.size`, 10).
const ERROR_QUEUE: usize = 10;

/// How long a restarted task that has read nothing must stay up before its query counts as RUNNING again.
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The longest pause between restarts of a failing query (the pause doubles from 1 s per failure in a row,
/// as ksqlDB's `ksql.query.retry.backoff.*` does from 15 s to 15 min).
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);

impl QueryStats {
    /// Records that the query's task stopped with `error`: the query is in ERROR until it recovers.
    pub(crate) fn failed(&self, error: String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        {
            let mut q = self.error_queue.lock().expect("stats");
            if q.len() >= ERROR_QUEUE {
                q.pop_front();
            }
            q.push_back((now, error.clone()));
        }
        *self.last_error.lock().expect("stats") = Some(error.clone());
        *self.failure.lock().expect("stats") = Some(error);
    }

    /// Records that a restarted task made progress: the query is RUNNING again.
    pub(crate) fn recovered(&self, query: &str) {
        if let Some(e) = self.failure.lock().expect("stats").take() {
            tracing::info!(query, previous_error = %e, "the query runs again");
        }
    }

    pub(crate) fn failing(&self) -> bool {
        self.failure.lock().expect("stats").is_some()
    }

    /// Waits before restarting a failed task: 1 s, doubling per failure in a row (`streak`, from 1) up to
    /// [`MAX_RESTART_PAUSE`]; a stop request ends the wait.
    pub(crate) fn restart_pause(&self, streak: u32, stop: &AtomicBool) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        let pause = Duration::from_secs(1)
            .saturating_mul(1 << streak.saturating_sub(1).min(6))
            .min(MAX_RESTART_PAUSE);
        let deadline = std::time::Instant::now() + pause;
        while std::time::Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct State {
    catalog: Catalog,
    running: HashMap<String, Running>,
    next_seq: u64,
    /// Why a query the catalog says runs could not start again after a restart (its state is ERROR), by id.
    start_errors: HashMap<String, String>,
}

pub struct Engine {
    cfg: EngineConfig,
    state: Mutex<State>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Serializes statements that change the catalog: validate, write the command, apply.
    ddl: tokio::sync::Mutex<()>,
    /// Push queries running now (each holds a thread and a consumer), at most [`MAX_PUSH_QUERIES`].
    push_queries: Arc<std::sync::atomic::AtomicUsize>,
}

/// The most push queries one server runs at once; more are refused until one ends.
pub const MAX_PUSH_QUERIES: usize = 100;

/// One row streamed by a push or pull query.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub columns: Vec<J>,
    /// A table's row was deleted (its key's tombstone, or an update that no longer passes WHERE): `columns`
    /// holds the key (and window) columns, the others are null; REST sends `"tombstone": true` as ksqlDB does.
    pub tombstone: bool,
}

impl Row {
    pub fn of(values: &[Value]) -> Row {
        Row {
            columns: values.iter().map(Value::to_json).collect(),
            tombstone: false,
        }
    }
}

/// A running push query: its header and the rows as they come; dropping the receiver stops it.
pub struct PushQuery {
    pub query_id: String,
    pub columns: Vec<(String, SqlType)>,
    pub rows: tokio::sync::mpsc::Receiver<std::result::Result<Row, String>>,
    /// Why the query ended early when it could not say so through `rows` (its client stopped reading).
    pub ended: Arc<Mutex<Option<String>>>,
}

/// The largest single allocation (a string, bytes or array length) an Avro datum may ask for: 64 MiB, far above
/// a Kafka record's usual size (`message.max.bytes`, 1 MiB by default).
const MAX_AVRO_ALLOCATION: usize = 64 << 20;

/// Hands one item to a push query's client, waiting at most `stall` for room; false when the client is gone
/// or took nothing for that long. (`blocking_send` waited for ever: a client that stopped reading held the
/// query's thread, consumer and slot until the server stopped.)
fn send_bounded<T>(tx: &tokio::sync::mpsc::Sender<T>, item: T, stall: Duration) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    let deadline = std::time::Instant::now() + stall;
    let mut item = item;
    let mut pause = Duration::from_millis(1);
    loop {
        match tx.try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                item = back;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

fn props_reset(props: &Props) -> Result<String> {
    let v = props
        .get("auto.offset.reset")
        .or_else(|| props.get("ksql.streams.auto.offset.reset"))
        .map_or("latest", String::as_str)
        .to_ascii_lowercase();
    match v.as_str() {
        "earliest" | "latest" => Ok(v),
        other => Err(SqlError::semantic(format!(
            "auto.offset.reset '{other}': expected 'earliest' or 'latest'"
        ))),
    }
}

/// The processing guarantee names ksqlDB takes (`exactly_once` is the deprecated spelling of `exactly_once_v2`).
pub const EXACTLY_ONCE: &str = "exactly_once_v2";
pub const AT_LEAST_ONCE: &str = "at_least_once";

/// Reads a processing guarantee: true for exactly once.
pub fn parse_guarantee(v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        AT_LEAST_ONCE => Ok(false),
        EXACTLY_ONCE | "exactly_once" | "exactly_once_beta" => Ok(true),
        other => Err(SqlError::semantic(format!(
            "processing.guarantee '{other}': expected '{AT_LEAST_ONCE}' or '{EXACTLY_ONCE}'"
        ))),
    }
}

/// ksqlDB's query setting: a record that does not decode fails the query instead of being skipped (default
/// false: skipped, counted and logged, as its processing log does).
pub const FAIL_ON_DESERIALIZATION_ERROR: &str = "ksql.fail.on.deserialization.error";

/// Whether a request sets `ksql.fail.on.deserialization.error` (`None` when it does not).
fn props_fail_on_bad_record(props: &Props) -> Result<Option<bool>> {
    props
        .get(FAIL_ON_DESERIALIZATION_ERROR)
        .map(|v| match v.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(SqlError::semantic(format!(
                "{FAIL_ON_DESERIALIZATION_ERROR} '{other}': expected 'true' (a record that does not decode stops the query) or 'false' (it is skipped and counted)"
            ))),
        })
        .transpose()
}

/// The processing guarantee a request asks for (`SET 'processing.guarantee'='exactly_once_v2';`, or ksqlDB's
/// `ksql.streams.processing.guarantee`), `None` when it asks for none.
fn props_guarantee(props: &Props) -> Result<Option<bool>> {
    props
        .get("processing.guarantee")
        .or_else(|| props.get("ksql.streams.processing.guarantee"))
        .map(|v| parse_guarantee(v))
        .transpose()
}

impl Engine {
    /// Connects to the cluster, creates the command topic if missing and replays it: the catalog is rebuilt and
    /// the persistent queries that were running start again from their committed offsets.
    pub async fn start(cfg: EngineConfig) -> Result<Arc<Engine>> {
        let registry = match &cfg.registry_url {
            Some(url) => Some(Arc::new(
                crate::registry::Registry::new(url, tokio::runtime::Handle::current())
                    .map_err(SqlError::semantic)?,
            )),
            None => None,
        };
        if registry.is_some() {
            // apache-avro allocates what a datum's length prefix says before reading it (up to 512 MiB by
            // default): a hostile record of a few bytes must not make the engine allocate that much. The
            // setting is the process's, first caller wins.
            let cap = apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
            if cap != MAX_AVRO_ALLOCATION {
                tracing::warn!(
                    cap,
                    "apache-avro's allocation limit was set elsewhere first"
                );
            }
        }
        crate::registry::install(registry);
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.bootstrap)
            .set("enable.idempotence", "true")
            // Keys go to the partitions the Java client (ksqlDB, Kafka Streams, fjord-streams) picks, so that
            // rows INSERTed into a stream and a table meet in one partition of a join.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| {
                SqlError::execution(format!(
                    "cannot create a producer for {}: {e}",
                    cfg.bootstrap
                ))
            })?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &cfg.bootstrap)
            .create()
            .map_err(|e| SqlError::execution(format!("cannot create an admin client: {e}")))?;
        let engine = Arc::new(Engine {
            cfg,
            state: Mutex::new(State {
                catalog: Catalog::default(),
                running: HashMap::new(),
                next_seq: 1,
                start_errors: HashMap::new(),
            }),
            producer,
            admin,
            ddl: tokio::sync::Mutex::new(()),
            push_queries: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        engine
            .create_topic(
                &engine.cfg.command_topic,
                1,
                &[("cleanup.policy", "compact")],
            )
            .await?;
        let e2 = engine.clone();
        tokio::task::spawn_blocking(move || e2.replay())
            .await
            .map_err(|e| {
                SqlError::execution(format!("replaying the command topic failed: {e}"))
            })??;
        Ok(engine)
    }

    pub fn bootstrap(&self) -> &str {
        &self.cfg.bootstrap
    }

    /// Reads the command topic to its end, applies every command, then starts the running queries.
    fn replay(self: &Arc<Self>) -> Result<()> {
        let topic = &self.cfg.command_topic;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.bootstrap)
            .set("group.id", "_fjord_sql_command_reader")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| SqlError::execution(format!("cannot create a consumer: {e}")))?;
        let (lo, hi) = consumer
            .fetch_watermarks(topic, 0, TIMEOUT)
            .map_err(|e| SqlError::execution(format!("cannot read the end of {topic}: {e}")))?;
        let mut log = CommandLog::default();
        if hi > lo {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, 0, Offset::Beginning)
                .map_err(|e| SqlError::execution(e.to_string()))?;
            consumer
                .assign(&tpl)
                .map_err(|e| SqlError::execution(e.to_string()))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut pos = lo;
            while pos < hi {
                if std::time::Instant::now() > deadline {
                    return Err(SqlError::execution(format!(
                        "reading the command topic {topic} to offset {hi} took more than 60 s"
                    )));
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        pos = m.offset() + 1;
                        // A command that does not decode is kept as BROKEN (listed with its reason), never
                        // skipped: skipping it would make its stream or query vanish without a word.
                        log.record(m.key(), m.offset(), m.payload());
                    }
                    Some(Err(e)) => {
                        return Err(SqlError::execution(format!("reading {topic} failed: {e}")))
                    }
                    None => {
                        if let Ok(p) = consumer.position() {
                            if let Some(Offset::Offset(o)) =
                                p.elements().first().map(|e| e.offset())
                            {
                                pos = pos.max(o);
                            }
                        }
                    }
                }
            }
        }
        let mut to_start = Vec::new();
        {
            let mut st = self.state.lock().expect("engine state");
            // Query ids (and so their consumer groups) are never reused: a dropped query's definition is gone
            // from the compacted topic, but its group keeps its committed offsets, which a new query of the same
            // name and number would silently resume from. Every CREATE writes a command, so numbering past the
            // topic's end stays above every id handed out before.
            st.next_seq = st.next_seq.max(hi.max(0) as u64 + 1);
            for cmd in log.into_ordered() {
                let def = match cmd {
                    Command::Define(def) => def,
                    Command::Broken(b) => {
                        tracing::error!(name = %b.name, offset = b.offset, reason = %b.reason, "a command of {topic} cannot be read back: {} is BROKEN (listed by SHOW STREAMS/QUERIES; DROP removes it)", b.name);
                        if let Some(n) = b
                            .query_id
                            .as_deref()
                            .and_then(|q| q.rsplit('_').next())
                            .and_then(|n| n.parse::<u64>().ok())
                        {
                            st.next_seq = st.next_seq.max(n + 1);
                        }
                        st.catalog.put_broken(b);
                        continue;
                    }
                };
                if let Some(q) = &def.query {
                    if let Some(n) = q.id.rsplit('_').next().and_then(|n| n.parse::<u64>().ok()) {
                        st.next_seq = st.next_seq.max(n + 1);
                    }
                    if q.running {
                        to_start.push(def.clone());
                    }
                }
                st.catalog.put(def);
            }
        }
        tracing::info!(
            queries = to_start.len(),
            "SQL catalog replayed from {topic}"
        );
        for def in to_start {
            // A group with committed offsets goes on from them; one without (killed before its first commit)
            // starts where the query was created to start.
            let reset = def
                .query
                .as_ref()
                .and_then(|q| q.reset.clone())
                .unwrap_or_else(|| "earliest".into());
            if let Err(e) = self.start_persistent(&def, &reset) {
                tracing::error!(sink = def.name, error = %e, "a persistent query could not start again");
                if let Some(q) = &def.query {
                    self.state
                        .lock()
                        .expect("engine state")
                        .start_errors
                        .insert(
                            q.id.clone(),
                            format!("the query could not start again after a restart: {e}"),
                        );
                }
            }
        }
        Ok(())
    }

    async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<bool> {
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results =
            self.admin.create_topics([&new], &opts).await.map_err(|e| {
                SqlError::execution(format!("cannot create the topic {topic}: {e}"))
            })?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(true),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(false),
            Some(Err((t, e))) => Err(SqlError::execution(format!(
                "cannot create the topic {t}: {e}"
            ))),
        }
    }

    /// The partition count of `topic`, `None` if it does not exist.
    async fn partitions(&self, topic: &str) -> Result<Option<i32>> {
        let admin_client = self.bootstrap().to_string();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || -> Result<Option<i32>> {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &admin_client)
                .set("allow.auto.create.topics", "false")
                .create()
                .map_err(|e| SqlError::execution(e.to_string()))?;
            let md = c.fetch_metadata(Some(&topic), TIMEOUT).map_err(|e| {
                SqlError::execution(format!("cannot read the metadata of {topic}: {e}"))
            })?;
            Ok(md
                .topics()
                .first()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len() as i32))
        })
        .await
        .map_err(|e| SqlError::execution(e.to_string()))?
    }

    /// Writes a command (a source's definition; `None`: its tombstone) and waits for the acknowledgement.
    async fn write_command(&self, name: &str, def: Option<&SourceDef>) -> Result<()> {
        let payload = def.map(|d| serde_json::to_vec(d).expect("a definition serializes"));
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.cfg.command_topic)
            .key(name)
            .partition(0);
        if let Some(p) = &payload {
            rec = rec.payload(p);
        }
        self.producer.send(rec, TIMEOUT).await.map_err(|(e, _)| {
            SqlError::execution(format!(
                "cannot write to the command topic {}: {e}",
                self.cfg.command_topic
            ))
        })?;
        Ok(())
    }

    fn catalog_snapshot(&self) -> Catalog {
        self.state.lock().expect("engine state").catalog.clone()
    }

    /// Executes one statement (not a SELECT: see [`Engine::push_query`]); returns ksqlDB's entity for it.
    pub async fn execute(self: &Arc<Self>, parsed: &Parsed, props: &mut Props) -> Result<J> {
        let text = parsed.text.as_str();
        match &parsed.statement {
            Statement::Set { name, value } => {
                props.insert(name.clone(), value.clone());
                if let Err(e) = props_reset(props)
                    .and_then(|_| props_guarantee(props))
                    .and_then(|_| props_fail_on_bad_record(props))
                {
                    props.remove(name);
                    return Err(e);
                }
                Ok(json!({"@type": "currentStatus", "statementText": text, "commandStatus": {"status": "SUCCESS", "message": format!("Successfully changed local property '{name}' to '{value}'.")}}))
            }
            Statement::Unset { name } => {
                props.remove(name);
                Ok(json!({"@type": "currentStatus", "statementText": text, "commandStatus": {"status": "SUCCESS", "message": format!("Successfully unset local property '{name}'.")}}))
            }
            Statement::Select(_) => Err(SqlError::semantic(
                "SELECT is a query: send it to /query (fjord sql does), or make it persistent with CREATE STREAM ... AS SELECT",
            )),
            Statement::ShowStreams | Statement::ShowTables => {
                let kind = if matches!(parsed.statement, Statement::ShowStreams) { SourceKind::Stream } else { SourceKind::Table };
                let cat = self.catalog_snapshot();
                let mut list: Vec<J> = cat
                    .all()
                    .filter(|s| s.kind == kind)
                    .map(|s| json!({"type": kind.word(), "name": s.name, "topic": s.topic, "keyFormat": s.key_format.name(), "valueFormat": s.value_format.name(), "isWindowed": crate::plan::windowed_table(s)}))
                    .collect();
                // Commands that could not be read back are listed, BROKEN with the reason (an unknown kind under
                // streams), so that nothing vanishes without a word.
                list.extend(cat.all_broken().filter(|b| b.kind.unwrap_or(SourceKind::Stream) == kind).map(|b| json!({"type": kind.word(), "name": b.name, "topic": b.topic, "keyFormat": "", "valueFormat": "", "isWindowed": false, "state": "BROKEN", "reason": b.reason})));
                let field = if kind == SourceKind::Stream { "streams" } else { "tables" };
                Ok(json!({"@type": field, "statementText": text, field: list}))
            }
            Statement::ShowQueries => {
                let cat = self.catalog_snapshot();
                let st = self.state.lock().expect("engine state");
                let list: Vec<J> = cat
                    .all()
                    .filter_map(|s| s.query.as_ref().map(|q| (s, q)))
                    .map(|(s, q)| {
                        let (state, reason) = query_state(&st, q);
                        let mut row = json!({"queryString": q.sql, "sinks": [s.name], "sinkKafkaTopics": [s.topic], "id": q.id, "queryType": "PERSISTENT", "state": state, "statusCount": {state: 1}});
                        if state == "ERROR" {
                            row["reason"] = json!(reason);
                        }
                        row
                    })
                    .chain(cat.all_broken().filter_map(|b| b.query_id.as_ref().map(|id| (b, id))).map(|(b, id)| {
                        json!({"queryString": "", "sinks": [b.name], "sinkKafkaTopics": [b.topic], "id": id, "queryType": "PERSISTENT", "state": "BROKEN", "statusCount": {"BROKEN": 1}, "reason": b.reason})
                    }))
                    .collect();
                Ok(json!({"@type": "queries", "statementText": text, "queries": list}))
            }
            Statement::ShowTopics => {
                let bootstrap = self.bootstrap().to_string();
                let topics = tokio::task::spawn_blocking(move || -> Result<Vec<J>> {
                    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().map_err(|e| SqlError::execution(e.to_string()))?;
                    let md = c.fetch_metadata(None, TIMEOUT).map_err(|e| SqlError::execution(format!("cannot list the topics: {e}")))?;
                    Ok(md.topics().iter().filter(|t| !t.name().starts_with("__")).map(|t| json!({"name": t.name(), "replicaInfo": t.partitions().iter().map(|p| p.replicas().len()).collect::<Vec<_>>()})).collect())
                })
                .await
                .map_err(|e| SqlError::execution(e.to_string()))??;
                Ok(json!({"@type": "kafka_topics", "statementText": text, "topics": topics}))
            }
            Statement::ShowProperties => {
                let list: Vec<J> = props.iter().map(|(k, v)| json!({"name": k, "scope": "SESSION", "value": v})).collect();
                Ok(json!({"@type": "properties", "statementText": text, "properties": list}))
            }
            Statement::Describe { name, extended } => {
                let cat = self.catalog_snapshot();
                let s = cat.lookup(&name.value, name.pos)?;
                Ok(json!({"@type": "sourceDescription", "statementText": text, "sourceDescription": self.describe(s, &cat, *extended)}))
            }
            Statement::ExplainQuery(id) => {
                let cat = self.catalog_snapshot();
                let Some(s) = cat.all().find(|s| s.query.as_ref().is_some_and(|q| q.id.eq_ignore_ascii_case(&id.value))) else {
                    return Err(self.unknown_query(&cat, &id.value, id.pos));
                };
                let q = s.query.as_ref().expect("found by its query");
                Ok(json!({"@type": "queryDescription", "statementText": text, "queryDescription": self.query_description(s, q)}))
            }
            Statement::Explain(inner) => {
                let cat = self.catalog_snapshot();
                let select = match &**inner {
                    Statement::Select(s) => s,
                    Statement::CreateSource { as_select: Some(s), .. } => s,
                    _ => return Err(SqlError::semantic("EXPLAIN takes a query id, a SELECT or a CREATE ... AS SELECT")),
                };
                let plan = plan_select(select, &cat)?;
                let runnable = match &plan.shape {
                    crate::plan::Shape::Aggregate { .. } => stateful::AggPlan::new(&plan).err(),
                    crate::plan::Shape::Join { .. } => join::JoinPlan::new(&plan).err(),
                    _ => plan.require_stateless().err(),
                }
                .map(|e| e.message);
                Ok(json!({"@type": "queryDescription", "statementText": text, "queryDescription": {
                    "id": "", "statementText": text, "sources": source_names(&plan),
                    "fields": plan.projection.iter().map(|p| json!({"name": p.name, "schema": {"type": p.ty.to_string()}})).collect::<Vec<_>>(),
                    "executionPlan": plan_text(&plan), "runnable": runnable.is_none(), "reason": runnable}}))
            }
            Statement::CreateSource { as_select: None, name, .. } => {
                let _guard = self.ddl.lock().await;
                self.catalog_snapshot().refuse_broken(&name.value, name.pos)?;
                self.create_source(parsed).await
            }
            Statement::CreateSource { as_select: Some(_), name, .. } => {
                let _guard = self.ddl.lock().await;
                self.catalog_snapshot().refuse_broken(&name.value, name.pos)?;
                self.create_as_select(parsed, props).await
            }
            Statement::Drop { kind, if_exists, name, delete_topic } => {
                let _guard = self.ddl.lock().await;
                let cat = self.catalog_snapshot();
                if cat.broken(&name.value).is_some() {
                    // A definition that could not be read back: its tombstone removes it for good.
                    self.write_command(&name.value, None).await?;
                    self.state.lock().expect("engine state").catalog.remove(&name.value);
                    return Ok(json!({"@type": "currentStatus", "statementText": text, "commandStatus": {"status": "SUCCESS", "message": format!("Broken source `{}` was dropped.", name.value)}}));
                }
                let Some(def) = cat.get(&name.value) else {
                    if *if_exists {
                        return Ok(json!({"@type": "currentStatus", "statementText": text, "commandStatus": {"status": "SUCCESS", "message": format!("Source {} does not exist.", name.value)}}));
                    }
                    return Err(cat.lookup(&name.value, name.pos).expect_err("missing"));
                };
                if def.kind != *kind {
                    return Err(SqlError::semantic_at(format!("{} is a {}, not a {}: use DROP {}", def.name, def.kind.word(), kind.word(), def.kind.word()), name.pos));
                }
                let readers: Vec<String> = cat.readers_of(&def.name).into_iter().filter(|q| def.query.as_ref().is_none_or(|own| own.id != *q)).collect();
                if !readers.is_empty() {
                    return Err(SqlError::semantic(format!(
                        "cannot drop {}: the queries {} read from it; TERMINATE them first",
                        def.name,
                        readers.join(", ")
                    )));
                }
                if let Some(q) = &def.query {
                    self.stop_query_async(&q.id).await;
                }
                self.write_command(&def.name, None).await?;
                self.state.lock().expect("engine state").catalog.remove(&def.name);
                if let Some(q) = &def.query {
                    self.clean_up_query(&q.id).await;
                }
                if *delete_topic {
                    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
                    let r = self.admin.delete_topics(&[def.topic.as_str()], &opts).await.map_err(|e| SqlError::execution(format!("{} dropped, but its topic {} was not deleted: {e}", def.name, def.topic)))?;
                    for x in r {
                        if let Err((t, e)) = x {
                            return Err(SqlError::execution(format!("{} dropped, but its topic {t} was not deleted: {e}", def.name)));
                        }
                    }
                }
                Ok(json!({"@type": "currentStatus", "statementText": text, "commandId": format!("{}/`{}`/drop", kind.word().to_lowercase(), def.name), "commandStatus": {"status": "SUCCESS", "message": format!("Source `{}` (topic: {}) was dropped.", def.name, def.topic)}}))
            }
            Statement::Terminate { query } => {
                let _guard = self.ddl.lock().await;
                let cat = self.catalog_snapshot();
                let targets: Vec<SourceDef> = match query {
                    None => cat.all().filter(|s| s.query.as_ref().is_some_and(|q| q.running)).cloned().collect(),
                    Some(id) => match cat.all().find(|s| s.query.as_ref().is_some_and(|q| q.id.eq_ignore_ascii_case(&id.value))) {
                        Some(s) => vec![s.clone()],
                        None => return Err(self.unknown_query(&cat, &id.value, id.pos)),
                    },
                };
                let mut ids = Vec::new();
                for mut def in targets {
                    let q = def.query.as_mut().expect("selected by its query");
                    q.running = false;
                    ids.push(q.id.clone());
                    let id = q.id.clone();
                    self.write_command(&def.name.clone(), Some(&def)).await?;
                    self.stop_query_async(&id).await;
                    self.state.lock().expect("engine state").catalog.put(def);
                    self.clean_up_query(&id).await;
                }
                Ok(json!({"@type": "currentStatus", "statementText": text, "commandStatus": {"status": "SUCCESS", "message": format!("Query terminated: {}", if ids.is_empty() { "none running".to_string() } else { ids.join(", ") })}}))
            }
            Statement::AlterAddColumns { kind, name, columns } => {
                let _guard = self.ddl.lock().await;
                let cat = self.catalog_snapshot();
                let mut def = cat.lookup(&name.value, name.pos)?.clone();
                if def.kind != *kind {
                    return Err(SqlError::semantic_at(format!("{} is a {}, not a {}", def.name, def.kind.word(), kind.word()), name.pos));
                }
                if def.query.is_some() {
                    return Err(SqlError::semantic(format!("{} is written by a query: change the query with CREATE OR REPLACE instead", def.name)));
                }
                for c in columns {
                    if c.key != KeyKind::None {
                        return Err(SqlError::semantic_at("ALTER can add value columns only, not key columns", c.name.pos));
                    }
                    if def.columns.iter().any(|x| x.name == c.name.value) || PSEUDO.iter().any(|(p, _)| *p == c.name.value) {
                        return Err(SqlError::semantic_at(format!("{} already has a column {}", def.name, c.name.value), c.name.pos));
                    }
                    def.columns.push(Column { name: c.name.value.clone(), ty: c.ty.clone(), key: false });
                }
                def.statement = ddl_text(&def);
                self.write_command(&def.name.clone(), Some(&def)).await?;
                self.state.lock().expect("engine state").catalog.put(def);
                Ok(json!({"@type": "currentStatus", "statementText": text, "commandStatus": {"status": "SUCCESS", "message": format!("{} altered.", kind.word().to_lowercase())}}))
            }
            Statement::InsertValues { target, columns, values } => self.insert_values(text, target, columns.as_deref(), values).await,
        }
    }

    /// Whether the cluster answers a metadata request (for /healthcheck).
    pub async fn cluster_reachable(&self) -> bool {
        self.partitions(&self.cfg.command_topic)
            .await
            .map(|p| p.is_some())
            .unwrap_or(false)
    }

    fn unknown_query(&self, cat: &Catalog, id: &str, pos: Option<crate::Pos>) -> SqlError {
        let ids: Vec<String> = cat
            .all()
            .filter_map(|s| s.query.as_ref().map(|q| q.id.clone()))
            .collect();
        SqlError::semantic_at(
            format!(
                "unknown query {id}: {}",
                if ids.is_empty() {
                    "no persistent queries exist".to_string()
                } else {
                    format!("the queries are {}", ids.join(", "))
                }
            ),
            pos,
        )
    }

    fn describe(&self, s: &SourceDef, cat: &Catalog, extended: bool) -> J {
        let fields: Vec<J> = s
            .columns
            .iter()
            .map(|c| {
                let mut f = json!({"name": c.name, "schema": {"type": c.ty.to_string()}});
                if c.key {
                    f["type"] = json!(if s.kind == SourceKind::Table {
                        "PRIMARY_KEY"
                    } else {
                        "KEY"
                    });
                }
                f
            })
            .collect();
        let write: Vec<J> = {
            let st = self.state.lock().expect("engine state");
            s.query
                .iter()
                .map(|q| json!({"id": q.id, "queryString": q.sql, "state": query_state(&st, q).0}))
                .collect()
        };
        let read: Vec<J> = cat
            .readers_of(&s.name)
            .into_iter()
            .map(|id| json!({"id": id}))
            .collect();
        let mut d = json!({"name": s.name, "type": s.kind.word(), "topic": s.topic, "keyFormat": s.key_format.name(), "valueFormat": s.value_format.name(),
            "timestamp": s.timestamp.clone().unwrap_or_default(), "fields": fields, "writeQueries": write, "readQueries": read, "statement": s.statement, "extended": extended, "windowType": window_type(s)});
        if extended {
            if let Some(q) = &s.query {
                d["statistics"] = self.stats_json(&q.id);
            }
        }
        d
    }

    fn stats_json(&self, id: &str) -> J {
        let st = self.state.lock().expect("engine state");
        match st.running.get(id) {
            Some(r) => {
                json!({"recordsIn": r.stats.records_in.load(Ordering::Relaxed), "recordsOut": r.stats.records_out.load(Ordering::Relaxed),
                "lateRecordsDropped": r.stats.late_records.load(Ordering::Relaxed),
                "processingErrors": r.stats.errors.load(Ordering::Relaxed), "lastError": r.stats.last_error.lock().expect("stats").clone(),
                "restarts": r.stats.restarts.load(Ordering::Relaxed)})
            }
            None => J::Null,
        }
    }

    fn query_description(&self, s: &SourceDef, q: &QueryDef) -> J {
        // ksqlDB's queryErrors: the failures that stopped the query (its error queue, oldest first), or why it
        // could not start.
        let (state, errors) = {
            let st = self.state.lock().expect("engine state");
            let (state, reason) = query_state(&st, q);
            let errors: Vec<J> = match st.running.get(&q.id) {
                Some(r) => r
                    .stats
                    .error_queue
                    .lock()
                    .expect("stats")
                    .iter()
                    .map(|(t, m)| json!({"type": "UNKNOWN", "errorMessage": m, "timestamp": t}))
                    .collect(),
                None => reason
                    .into_iter()
                    .map(|m| json!({"type": "UNKNOWN", "errorMessage": m}))
                    .collect(),
            };
            (state, errors)
        };
        let plan = parse_statement(&q.sql)
            .ok()
            .and_then(|p| match p.statement {
                Statement::CreateSource {
                    as_select: Some(sel),
                    ..
                } => plan_select(&sel, &self.catalog_snapshot()).ok(),
                _ => None,
            });
        json!({"id": q.id, "statementText": q.sql, "sinks": [s.name], "sinkKafkaTopics": [s.topic], "state": state, "queryType": "PERSISTENT",
            "consumerGroupId": format!("_fjord_sql_{}", q.id),
            "sources": plan.as_ref().map(source_names).unwrap_or_default(),
            "fields": s.columns.iter().map(|c| json!({"name": c.name, "schema": {"type": c.ty.to_string()}})).collect::<Vec<_>>(),
            "executionPlan": plan.as_ref().map(plan_text).unwrap_or_default(), "statistics": self.stats_json(&q.id), "queryErrors": errors,
            "overriddenProperties": {"processing.guarantee": if q.exactly_once() { EXACTLY_ONCE } else { AT_LEAST_ONCE }, FAIL_ON_DESERIALIZATION_ERROR: q.fail_on_bad_record.to_string()}})
    }

    async fn create_source(&self, parsed: &Parsed) -> Result<J> {
        let Statement::CreateSource {
            kind,
            or_replace,
            if_not_exists,
            name,
            columns,
            with,
            ..
        } = &parsed.statement
        else {
            unreachable!("called for CREATE without AS")
        };
        let cat = self.catalog_snapshot();
        if let Some(existing) = cat.get(&name.value) {
            if *if_not_exists {
                return Ok(
                    json!({"@type": "currentStatus", "statementText": parsed.text, "commandStatus": {"status": "SUCCESS", "message": format!("Cannot add {} `{}`: it already exists.", kind.word().to_lowercase(), name.value)}}),
                );
            }
            if !*or_replace || existing.query.is_some() {
                return Err(SqlError::semantic_at(
                    format!(
                        "{} {} already exists (DROP it first, or use CREATE OR REPLACE)",
                        existing.kind.word(),
                        existing.name
                    ),
                    name.pos,
                ));
            }
        }
        let mut props = WithProps::new(
            with,
            &[
                "KAFKA_TOPIC",
                "VALUE_FORMAT",
                "KEY_FORMAT",
                "FORMAT",
                "PARTITIONS",
                "REPLICAS",
                "TIMESTAMP",
            ],
        )?;
        let topic = props.take("KAFKA_TOPIC").ok_or_else(|| {
            SqlError::semantic_at(
                "WITH (KAFKA_TOPIC='...') is required: the topic the stream reads",
                name.pos,
            )
        })?;
        let (key_format, value_format) = props.formats(Format::Json)?;
        for f in [key_format, value_format] {
            if f.uses_registry() {
                crate::registry::required(&format!("FORMAT '{}'", f.name()))
                    .map_err(SqlError::semantic)?;
            }
        }
        let columns = if columns.is_empty() {
            registry_columns(*kind, &topic, key_format, value_format, name.pos).await?
        } else {
            columns.clone()
        };
        let mut cols: Vec<Column> = Vec::new();
        for c in &columns {
            if cols.iter().any(|x| x.name == c.name.value)
                || PSEUDO.iter().any(|(p, _)| *p == c.name.value)
            {
                return Err(SqlError::semantic_at(format!("the column {} appears twice or is reserved (ROWTIME, ROWPARTITION, ROWOFFSET)", c.name.value), c.name.pos));
            }
            match (kind, c.key) {
                (SourceKind::Stream, KeyKind::PrimaryKey) => {
                    return Err(SqlError::semantic_at(
                        format!("{}: a stream's key is KEY, not PRIMARY KEY", c.name.value),
                        c.name.pos,
                    ))
                }
                (SourceKind::Table, KeyKind::Key) => {
                    return Err(SqlError::semantic_at(
                        format!("{}: a table's key is PRIMARY KEY", c.name.value),
                        c.name.pos,
                    ))
                }
                _ => {}
            }
            cols.push(Column {
                name: c.name.value.clone(),
                ty: c.ty.clone(),
                key: c.key != KeyKind::None,
            });
        }
        let keys = cols.iter().filter(|c| c.key).count();
        // Several key columns are one key record (ksqlDB 0.15's multi-column keys); KAFKA and NONE cannot hold it.
        let key_cols: Vec<(&str, &SqlType)> = cols
            .iter()
            .filter(|c| c.key)
            .map(|c| (c.name.as_str(), &c.ty))
            .collect();
        format::check_key_columns(key_format, &key_cols).map_err(SqlError::semantic)?;
        if *kind == SourceKind::Table && keys == 0 {
            return Err(SqlError::semantic_at(
                "a table needs a PRIMARY KEY column",
                name.pos,
            ));
        }
        if keys == 0 && cols.iter().all(|c| c.key) {
            return Err(SqlError::semantic_at(
                "give at least one value column",
                name.pos,
            ));
        }
        let timestamp = props.take("TIMESTAMP").map(|t| t.to_ascii_uppercase());
        if let Some(t) = &timestamp {
            match cols.iter().find(|c| c.name == *t) {
                Some(c) if matches!(c.ty, SqlType::Bigint | SqlType::Timestamp) => {}
                Some(c) => {
                    return Err(SqlError::semantic(format!(
                        "TIMESTAMP='{t}': the column is {}, expected BIGINT or TIMESTAMP",
                        c.ty
                    )))
                }
                None => {
                    return Err(SqlError::semantic(format!(
                        "TIMESTAMP='{t}': no such column; the columns are {}",
                        cols.iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        let want_partitions = props.int("PARTITIONS")?;
        let replicas = props.int("REPLICAS")?;
        match (self.partitions(&topic).await?, want_partitions) {
            (Some(n), Some(w)) if n != w => return Err(SqlError::semantic(format!("the topic {topic} exists with {n} partitions, not PARTITIONS={w}"))),
            (Some(_), _) => {}
            (None, Some(w)) => {
                if w < 1 {
                    return Err(SqlError::semantic("PARTITIONS must be at least 1"));
                }
                let mut new = NewTopic::new(&topic, w, TopicReplication::Fixed(replicas.unwrap_or(-1)));
                new = new.set("cleanup.policy", if *kind == SourceKind::Table { "compact" } else { "delete" });
                let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
                for r in self.admin.create_topics([&new], &opts).await.map_err(|e| SqlError::execution(format!("cannot create the topic {topic}: {e}")))? {
                    if let Err((t, e)) = r {
                        if e != RDKafkaErrorCode::TopicAlreadyExists {
                            return Err(SqlError::execution(format!("cannot create the topic {t}: {e}")));
                        }
                    }
                }
            }
            (None, None) => return Err(SqlError::semantic(format!("the topic {topic} does not exist: create it, or give PARTITIONS=n in WITH (...) to have it created"))),
        }
        let def = SourceDef {
            name: name.value.clone(),
            kind: *kind,
            columns: cols,
            topic,
            key_format,
            value_format,
            timestamp,
            statement: parsed.text.clone(),
            query: None,
        };
        self.write_command(&def.name, Some(&def)).await?;
        self.state
            .lock()
            .expect("engine state")
            .catalog
            .put(def.clone());
        Ok(
            json!({"@type": "currentStatus", "statementText": parsed.text, "commandId": format!("{}/`{}`/create", kind.word().to_lowercase(), def.name),
            "commandStatus": {"status": "SUCCESS", "message": format!("{} created", if *kind == SourceKind::Stream {"Stream"} else {"Table"})}}),
        )
    }

    async fn create_as_select(self: &Arc<Self>, parsed: &Parsed, props: &Props) -> Result<J> {
        let Statement::CreateSource {
            kind,
            or_replace,
            if_not_exists,
            name,
            columns,
            with,
            as_select: Some(sel),
        } = &parsed.statement
        else {
            unreachable!("called for CREATE ... AS SELECT")
        };
        if !columns.is_empty() {
            return Err(SqlError::semantic_at(
                "CREATE ... AS SELECT takes its columns from the SELECT: leave out the column list",
                name.pos,
            ));
        }
        let cat = self.catalog_snapshot();
        let plan = plan_select(sel, &cat)?;
        if sel.emit.is_some() && sel.limit.is_some() {
            return Err(SqlError::semantic("a persistent query takes no LIMIT"));
        }
        let aggregate = matches!(plan.shape, crate::plan::Shape::Aggregate { .. });
        let is_join = matches!(plan.shape, crate::plan::Shape::Join { .. });
        if is_join && !sel.group_by.is_empty() {
            return Err(SqlError::not_supported(
                "aggregating a join in one query: write the join to a stream with CREATE STREAM ... AS SELECT, then aggregate that stream",
            ));
        }
        let out_columns = match (kind, aggregate) {
            (SourceKind::Table, true) => stateful::output_columns(&plan)?,
            (SourceKind::Stream, true) => {
                return Err(SqlError::semantic_at(
                    "an aggregation (GROUP BY) gives a TABLE: use CREATE TABLE ... AS SELECT",
                    name.pos,
                ))
            }
            (SourceKind::Table, false) => {
                if matches!(plan.shape, crate::plan::Shape::Join { .. }) {
                    plan.require_stateless()?;
                }
                return Err(SqlError::semantic_at(
                    "this SELECT gives a STREAM (no GROUP BY): use CREATE STREAM ... AS SELECT, or aggregate with GROUP BY",
                    name.pos,
                ));
            }
            (SourceKind::Stream, false) if is_join => join::JoinPlan::new(&plan)?.columns(),
            (SourceKind::Stream, false) => {
                plan.require_stateless()?;
                plan.require_whole_key()?;
                plan.output_columns()
            }
        };
        if aggregate && plan.source.kind != SourceKind::Stream {
            return Err(SqlError::not_supported(format!(
                "aggregating a TABLE ({}): aggregate the stream it is built from",
                plan.source.name
            )));
        }
        if aggregate && !plan.partition_by.is_empty() {
            return Err(SqlError::semantic(
                "an aggregation is keyed by its GROUP BY: leave out PARTITION BY",
            ));
        }
        for s in std::iter::once(&plan.source).chain(&plan.joined) {
            format::check_supported(s)?;
        }
        if plan.joined.iter().any(|j| j.name == name.value) {
            return Err(SqlError::semantic_at(
                format!("{} cannot read from itself", name.value),
                name.pos,
            ));
        }
        if plan.source.name == name.value {
            return Err(SqlError::semantic_at(
                format!("{} cannot read from itself", name.value),
                name.pos,
            ));
        }
        let existing = cat.get(&name.value).cloned();
        if let Some(e) = &existing {
            if *if_not_exists {
                return Ok(
                    json!({"@type": "currentStatus", "statementText": parsed.text, "commandStatus": {"status": "SUCCESS", "message": format!("Cannot add {} `{}`: it already exists.", e.kind.word().to_lowercase(), e.name)}}),
                );
            }
            if !*or_replace {
                return Err(SqlError::semantic_at(
                    format!(
                        "{} {} already exists (DROP it first, or use CREATE OR REPLACE)",
                        e.kind.word(),
                        e.name
                    ),
                    name.pos,
                ));
            }
            if e.kind != *kind {
                return Err(SqlError::semantic_at(
                    format!("{} is a {}", e.name, e.kind.word()),
                    name.pos,
                ));
            }
            // The replaced query's plan, read once for both checks below.
            let old = e.query.as_ref().and_then(|q| {
                parse_statement(&q.sql)
                    .ok()
                    .and_then(|p| match p.statement {
                        Statement::CreateSource {
                            as_select: Some(sel),
                            ..
                        } => plan_select(&sel, &cat).ok(),
                        _ => None,
                    })
            });
            // An upgraded aggregation goes on from its state: only a change that keeps the state's layout (the
            // same GROUP BY, window and aggregate calls) can reuse it.
            if aggregate && e.query.is_some() {
                let same = old
                    .as_ref()
                    .and_then(|o| stateful::AggPlan::new(o).ok())
                    .is_some_and(|o| {
                        stateful::AggPlan::new(&plan).is_ok_and(|n| n.same_state_layout(&o))
                    });
                if !same {
                    return Err(SqlError::semantic_at(
                        format!("CREATE OR REPLACE of {} changes the GROUP BY, the window or the aggregate functions, so its state cannot be reused: DROP TABLE it and create it again", e.name),
                        name.pos,
                    ));
                }
            }
            // A join's stores (the table, the join buffers) and its group's offsets belong to its sources and
            // join keys: an upgrade keeps them only when those stay, and a query does not become or stop being
            // a join under the same id.
            if e.query.is_some() {
                let was_join = old
                    .as_ref()
                    .map(|o| matches!(o.shape, crate::plan::Shape::Join { .. }));
                if is_join || was_join == Some(true) {
                    let same = old
                        .as_ref()
                        .and_then(|o| join::JoinPlan::new(o).ok())
                        .is_some_and(|o| {
                            join::JoinPlan::new(&plan).is_ok_and(|n| n.same_state_layout(&o))
                        });
                    if !same {
                        return Err(SqlError::semantic_at(
                            format!("CREATE OR REPLACE of {} changes a join (its sources, join keys or window) or turns a query into a join or back, so its state and offsets cannot be reused: DROP STREAM it and create it again", e.name),
                            name.pos,
                        ));
                    }
                }
            }
        }
        let mut wp = WithProps::new(
            with,
            &[
                "KAFKA_TOPIC",
                "VALUE_FORMAT",
                "KEY_FORMAT",
                "FORMAT",
                "PARTITIONS",
                "REPLICAS",
                "TIMESTAMP",
            ],
        )?;
        let topic = wp
            .take("KAFKA_TOPIC")
            .or_else(|| existing.as_ref().map(|e| e.topic.clone()))
            .unwrap_or_else(|| name.value.clone());
        let (kf, vf) = wp.formats(plan.source.value_format)?;
        let out_keys: Vec<(&str, &SqlType)> = out_columns
            .iter()
            .filter(|c| c.key)
            .map(|c| (c.name.as_str(), &c.ty))
            .collect();
        let key_format = if wp.seen_key_format {
            kf
        } else if out_keys.len() > 1
            && matches!(plan.source.key_format, Format::Kafka | Format::None)
        {
            // Several key columns (GROUP BY or PARTITION BY of several expressions) in a key format inherited from
            // a source that holds one: JSON, as ksqlDB changes an inherited format that cannot hold the new key.
            Format::Json
        } else if plan.source.key_format == Format::None && !plan.partition_by.is_empty() {
            // A stream without a key re-keyed by PARTITION BY: its key needs a format (ksqlDB takes KAFKA too).
            Format::Kafka
        } else {
            plan.source.key_format
        };
        // A key format named in WITH that cannot hold several key columns is refused with ksqlDB's message.
        format::check_key_columns(key_format, &out_keys).map_err(SqlError::semantic)?;
        let value_format = vf;
        let def_tmp = SourceDef {
            name: String::new(),
            kind: SourceKind::Stream,
            columns: vec![],
            topic: String::new(),
            key_format,
            value_format,
            timestamp: None,
            statement: String::new(),
            query: None,
        };
        format::check_supported(&def_tmp)?;
        if let Some(key) = plan.projection.iter().find(|p| p.is_key) {
            if !plan.partition_by.is_empty() {
                if key_format == Format::None {
                    return Err(SqlError::semantic(format!(
                        "PARTITION BY makes {} the key, and KEY_FORMAT='NONE' would drop it: name a key format (e.g. KEY_FORMAT='KAFKA')",
                        key.name
                    )));
                }
                if key_format == Format::Kafka
                    && matches!(
                        key.ty,
                        SqlType::Struct(_) | SqlType::Array(_) | SqlType::Map(..)
                    )
                {
                    return Err(SqlError::semantic(format!(
                        "PARTITION BY makes {} ({}) the key, which KEY_FORMAT='KAFKA' cannot hold: use KEY_FORMAT='JSON' (or a registry format)",
                        key.name, key.ty
                    )));
                }
            }
        }
        let src_partitions = self.partitions(&plan.source.topic).await?.ok_or_else(|| {
            SqlError::execution(format!(
                "the source topic {} does not exist (was it deleted?)",
                plan.source.topic
            ))
        })?;
        // ksqlDB's co-partitioning check: records of one key must be in equal partitions on both sides.
        for j in &plan.joined {
            let n = self.partitions(&j.topic).await?.ok_or_else(|| {
                SqlError::execution(format!(
                    "the topic {} of {} does not exist (was it deleted?)",
                    j.topic, j.name
                ))
            })?;
            if n != src_partitions {
                return Err(SqlError::semantic(format!(
                    "Can't join {} with {} since the number of partitions don't match: {} has {src_partitions} (topic {}), {} has {n} (topic {}). Give both topics one partition count, e.g. copy one with CREATE STREAM ... WITH (PARTITIONS={n}) AS SELECT * FROM ...",
                    plan.source.name, j.name, plan.source.name, plan.source.topic, j.name, j.topic
                )));
            }
        }
        let partitions = wp.int("PARTITIONS")?.unwrap_or(src_partitions);
        let replicas = wp.int("REPLICAS")?;
        let mut new = NewTopic::new(
            &topic,
            partitions,
            TopicReplication::Fixed(replicas.unwrap_or(-1)),
        );
        // A table's topic keeps the latest row per key (ksqlDB's); windowed rows are keyed per window and expire.
        let compact = *kind == SourceKind::Table && sel.window.is_none();
        new = new.set("cleanup.policy", if compact { "compact" } else { "delete" });
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        for r in self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| SqlError::execution(format!("cannot create the topic {topic}: {e}")))?
        {
            if let Err((t, e)) = r {
                if e != RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(SqlError::execution(format!(
                        "cannot create the topic {t}: {e}"
                    )));
                }
            }
        }
        // The output's registry schemas (AVRO, JSON_SR) are registered now, so that an incompatible change is
        // refused here rather than by every write of the query.
        sink_codec(
            SourceDef {
                name: name.value.clone(),
                topic: topic.clone(),
                // The sink's own columns: an aggregation's key column is not in its value schema.
                columns: out_columns.clone(),
                ..def_tmp.clone()
            },
            false,
        )
        .await?;
        // CREATE OR REPLACE keeps the query id, hence its consumer group and committed offsets: the new version
        // goes on where the old one stopped instead of reprocessing the source.
        let id = match existing.as_ref().and_then(|e| e.query.as_ref()) {
            Some(q) => q.id.clone(),
            None => {
                let mut st = self.state.lock().expect("engine state");
                let n = st.next_seq;
                st.next_seq += 1;
                let prefix = if *kind == SourceKind::Table {
                    "CTAS"
                } else {
                    "CSAS"
                };
                format!("{prefix}_{}_{n}", sanitize(&name.value))
            }
        };
        // The processing guarantee this request states (SET, streamsProperties); else, for CREATE OR REPLACE, the
        // replaced query's, so that an upgrade sent without the SET does not quietly turn an exactly-once query
        // into an at-least-once one (ksqlDB builds the new version from the request's properties and the
        // server's config alone); else the server's default.
        let exactly_once = match props_guarantee(props)? {
            Some(stated) => stated,
            None => existing
                .as_ref()
                .and_then(|e| e.query.as_ref())
                .map_or(self.cfg.exactly_once, QueryDef::exactly_once),
        };
        // Likewise whether a record that does not decode stops the query.
        let fail_on_bad_record = match props_fail_on_bad_record(props)? {
            Some(stated) => stated,
            None => existing
                .as_ref()
                .and_then(|e| e.query.as_ref())
                .is_some_and(|q| q.fail_on_bad_record),
        };
        let def = SourceDef {
            name: name.value.clone(),
            kind: *kind,
            columns: out_columns,
            topic: topic.clone(),
            key_format,
            value_format,
            timestamp: None,
            statement: parsed.text.clone(),
            query: Some(QueryDef {
                id: id.clone(),
                sql: parsed.text.clone(),
                running: true,
                reset: Some(props_reset(props)?),
                guarantee: Some(
                    if exactly_once {
                        EXACTLY_ONCE
                    } else {
                        AT_LEAST_ONCE
                    }
                    .to_string(),
                ),
                fail_on_bad_record,
            }),
        };
        self.write_command(&def.name, Some(&def)).await?;
        self.stop_query_async(&id).await;
        self.state
            .lock()
            .expect("engine state")
            .catalog
            .put(def.clone());
        let reset = props_reset(props)?;
        self.start_persistent(&def, &reset)?;
        Ok(
            json!({"@type": "currentStatus", "statementText": parsed.text, "commandId": format!("{}/`{}`/create", kind.word().to_lowercase(), def.name),
            "commandStatus": {"status": "SUCCESS", "message": format!("Created query with ID {id}"), "queryId": id}}),
        )
    }

    /// Stops a query and waits for its thread (it finishes its batch and commits) on a blocking thread, so that
    /// the wait never holds up the async workers serving the API.
    /// Removes what a query that will not run again left behind (`stateful::leftovers`: its consumer groups,
    /// an aggregation's changelog and repartition topics), as ksqlDB does on TERMINATE. Best effort: a failure
    /// is logged (the query is terminated either way) and what does not exist is skipped.
    async fn clean_up_query(&self, id: &str) {
        let (groups, topics) = stateful::leftovers(id);
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        match self.admin.delete_topics(&topics, &opts).await {
            Ok(r) => {
                for x in r {
                    match x {
                        Ok(t) => {
                            tracing::info!(query = id, topic = %t, "deleted the terminated query's internal topic")
                        }
                        Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                        Err((t, e)) => {
                            tracing::warn!(query = id, topic = %t, "cannot delete the terminated query's internal topic: {e}")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(
                query = id,
                "cannot delete the terminated query's internal topics: {e}"
            ),
        }
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        match self.admin.delete_groups(&groups, &opts).await {
            Ok(r) => {
                for x in r {
                    match x {
                        Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound)) => {}
                        Err((g, e)) => {
                            tracing::warn!(query = id, group = %g, "cannot delete the terminated query's consumer group: {e}")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(
                query = id,
                "cannot delete the terminated query's consumer groups: {e}"
            ),
        }
    }

    async fn stop_query_async(&self, id: &str) {
        let r = self.state.lock().expect("engine state").running.remove(id);
        if let Some(mut r) = r {
            r.stop.store(true, Ordering::SeqCst);
            if let Some(t) = r.thread.take() {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
    }

    fn stop_query(&self, id: &str) {
        let r = self.state.lock().expect("engine state").running.remove(id);
        if let Some(mut r) = r {
            r.stop.store(true, Ordering::SeqCst);
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Stops every query (at shutdown): each finishes its batch and commits.
    pub fn shutdown(&self) {
        let ids: Vec<String> = self
            .state
            .lock()
            .expect("engine state")
            .running
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.stop_query(&id);
        }
    }

    /// Starts the persistent query writing `def`. `reset`: where a new group starts (a resumed one goes on from
    /// its committed offsets).
    fn start_persistent(self: &Arc<Self>, def: &SourceDef, reset: &str) -> Result<()> {
        let q = def.query.clone().expect("a persistent query's sink");
        let parsed = parse_statement(&q.sql)?;
        let Statement::CreateSource {
            as_select: Some(sel),
            ..
        } = parsed.statement
        else {
            return Err(SqlError::execution(format!(
                "query {} is not a CREATE ... AS SELECT",
                q.id
            )));
        };
        let plan = plan_select(&sel, &self.catalog_snapshot())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(QueryStats::default());
        if matches!(plan.shape, crate::plan::Shape::Aggregate { .. }) {
            let agg = stateful::AggPlan::new(&plan)?;
            let (table, thread) = stateful::start(
                &q,
                &self.cfg.bootstrap,
                agg,
                def,
                stop.clone(),
                stats.clone(),
            )?;
            self.started(
                &q.id,
                Running {
                    stop,
                    stats,
                    thread: Some(thread),
                    table: Some(table),
                },
            );
            tracing::info!(
                query = q.id,
                sink = def.name,
                "stateful persistent query started"
            );
            return Ok(());
        }
        if matches!(plan.shape, crate::plan::Shape::Join { .. }) {
            let thread = join::start(
                &q,
                &self.cfg.bootstrap,
                join::JoinPlan::new(&plan)?,
                def,
                stop.clone(),
                stats.clone(),
            )?;
            self.started(
                &q.id,
                Running {
                    stop,
                    stats,
                    thread: Some(thread),
                    table: None,
                },
            );
            tracing::info!(query = q.id, sink = def.name, "join query started");
            return Ok(());
        }
        plan.require_stateless()?;
        let cfg = RunConfig {
            bootstrap: self.cfg.bootstrap.clone(),
            group: format!("_fjord_sql_{}", q.id),
            reset: reset.to_string(),
            sink: def.clone(),
            plan,
            exactly_once: q.exactly_once(),
            fail_on_bad_record: q.fail_on_bad_record,
        };
        let (s2, st2) = (stop.clone(), stats.clone());
        let id = q.id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sql-{}", q.id))
            .spawn(move || {
                // A failure (the cluster went away, a write was refused) puts the query in ERROR and restarts
                // the loop from the committed offsets after a pause, so nothing uncommitted is lost and nothing
                // is skipped; it is RUNNING again once the restarted loop makes progress.
                let mut streak = 0;
                while !s2.load(Ordering::SeqCst) {
                    if let Err(e) = run_persistent(&cfg, &id, &s2, &st2) {
                        tracing::warn!(query = id, error = %e, "persistent query failed; restarting from its committed offsets");
                        streak = if st2.failing() { streak + 1 } else { 1 };
                        st2.failed(e);
                        st2.restart_pause(streak, &s2);
                    }
                }
            })
            .map_err(|e| SqlError::execution(format!("cannot start a thread: {e}")))?;
        self.started(
            &q.id,
            Running {
                stop,
                stats,
                thread: Some(thread),
                table: None,
            },
        );
        tracing::info!(query = q.id, sink = def.name, "persistent query started");
        Ok(())
    }

    /// Records a query that started: it runs, and an earlier start error of it is forgotten.
    fn started(&self, id: &str, running: Running) {
        let mut st = self.state.lock().expect("engine state");
        st.start_errors.remove(id);
        st.running.insert(id.to_string(), running);
    }

    /// Starts a push query (`SELECT ... EMIT CHANGES`): rows as they arrive, until LIMIT or the receiver is dropped.
    pub fn push_query(self: &Arc<Self>, parsed: &Parsed, props: &Props) -> Result<PushQuery> {
        let Statement::Select(sel) = &parsed.statement else {
            return Err(SqlError::semantic(
                "/query takes a SELECT; send other statements to /ksql",
            ));
        };
        let plan = plan_select(sel, &self.catalog_snapshot())?;
        // Without EMIT CHANGES (a pull query) a stream is read from its start to its current end.
        let pull = sel.emit.is_none();
        let table = match (&plan.source.kind, &plan.shape, pull) {
            (SourceKind::Table, crate::plan::Shape::Stateless, true) => {
                Some(self.materialized(&plan.source)?)
            }
            _ => None,
        };
        if table.is_none() {
            if pull {
                plan.require_stateless()?;
            } else {
                plan.require_push()?;
            }
        }
        format::check_supported(&plan.source)?;
        let reset = if pull {
            "earliest".to_string()
        } else {
            props_reset(props)?
        };
        let query_id = format!(
            "transient_{}_{}",
            sanitize(&plan.source.name),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() % 1_000_000_000_000)
        );
        let columns: Vec<(String, SqlType)> = plan
            .projection
            .iter()
            .map(|p| (p.name.clone(), p.ty.clone()))
            .collect();
        let running = self.push_queries.fetch_add(1, Ordering::SeqCst);
        if running >= MAX_PUSH_QUERIES {
            self.push_queries.fetch_sub(1, Ordering::SeqCst);
            return Err(SqlError::execution(format!(
                "{MAX_PUSH_QUERIES} push queries are running already: end one (close its connection or give a LIMIT) and try again"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let bootstrap = self.cfg.bootstrap.clone();
        let qid = query_id.clone();
        let count = self.push_queries.clone();
        let stall = self.cfg.push_stall;
        let ended = Arc::new(Mutex::new(None));
        let ended2 = ended.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sql-{query_id}"))
            .spawn(move || {
                let r = match &table {
                    Some(t) => stateful::pull(t, &plan, &tx, stall),
                    None => run_push(&bootstrap, &qid, &plan, &reset, pull, &tx, stall),
                };
                if let Err(e) = r {
                    // Without waiting: a client that stopped reading learns why after the rows it has left.
                    if let Err(e) = tx.try_send(Err(e)) {
                        let e = match e.into_inner() {
                            Err(e) => e,
                            Ok(_) => unreachable!("an error was sent"),
                        };
                        *ended2.lock().expect("push query end") = Some(e);
                    }
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.push_queries.fetch_sub(1, Ordering::SeqCst);
            return Err(SqlError::execution(format!("cannot start a thread: {e}")));
        }
        Ok(PushQuery {
            query_id,
            columns,
            rows: rx,
            ended,
        })
    }

    /// The running aggregation that materializes `table`, for a pull query.
    fn materialized(&self, table: &SourceDef) -> Result<Arc<stateful::TableQuery>> {
        let Some(q) = &table.query else {
            return Err(SqlError::not_supported(format!(
                "pull queries on {}: it is not materialized (only a table written by CREATE TABLE ... AS SELECT with GROUP BY keeps a queryable state); read its topic with SELECT ... EMIT CHANGES on a stream over it",
                table.name
            )));
        };
        let st = self.state.lock().expect("engine state");
        match st.running.get(&q.id).and_then(|r| r.table.clone()) {
            Some(t) => Ok(t),
            None if !q.running => Err(SqlError::execution(format!(
                "{} is not materialized any more: its query {} was terminated",
                table.name, q.id
            ))),
            None => Err(SqlError::not_supported(format!(
                "pull queries on {}: only tables written by an aggregation (GROUP BY) are materialized",
                table.name
            ))),
        }
    }

    async fn insert_values(
        &self,
        text: &str,
        target: &crate::parser::Name,
        columns: Option<&[crate::parser::Name]>,
        values: &[sqlparser::ast::Expr],
    ) -> Result<J> {
        let cat = self.catalog_snapshot();
        let def = cat.lookup(&target.value, target.pos)?.clone();
        if def.query.is_some() {
            return Err(SqlError::semantic_at(
                format!(
                    "{} is written by the query {}: INSERT INTO a source stream instead",
                    def.name,
                    def.query.as_ref().map_or("", |q| &q.id)
                ),
                target.pos,
            ));
        }
        format::check_supported(&def)?;
        let names: Vec<(String, Option<crate::Pos>)> = match columns {
            Some(c) => c.iter().map(|n| (n.value.clone(), n.pos)).collect(),
            None => def.columns.iter().map(|c| (c.name.clone(), None)).collect(),
        };
        if names.len() != values.len() {
            return Err(SqlError::semantic(format!(
                "{} column(s) but {} value(s)",
                names.len(),
                values.len()
            )));
        }
        let mut row: Vec<Value> = vec![Value::Null; def.columns.len()];
        let mut rowtime = None;
        let empty = Scope::default();
        for ((n, pos), v) in names.iter().zip(values) {
            let (e, t) = compile(v, &empty)?;
            let val = e.eval(&[]).map_err(SqlError::semantic)?;
            if n == "ROWTIME" {
                rowtime = val.as_i64();
                continue;
            }
            let Some(i) = def.columns.iter().position(|c| c.name == *n) else {
                return Err(SqlError::semantic_at(
                    format!(
                        "unknown column {n}: the columns of {} are {}",
                        def.name,
                        def.columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    *pos,
                ));
            };
            let want = &def.columns[i].ty;
            let val = if val.is_null() || t == *want {
                val
            } else if (t.is_numeric() && want.is_numeric())
                || (t == SqlType::String
                    && matches!(want, SqlType::Timestamp | SqlType::Date | SqlType::Time))
            {
                crate::functions::cast(val, want).map_err(SqlError::semantic)?
            } else {
                return Err(SqlError::semantic(format!(
                    "type mismatch: column {n} is {want}, the value `{v}` is {t}"
                )));
            };
            row[i] = val;
        }
        let codec = sink_codec(def.clone(), true).await?;
        let key = match def.columns.iter().position(|c| c.key) {
            Some(_) => {
                let keys: Vec<(&str, Value)> = def
                    .columns
                    .iter()
                    .zip(row.iter())
                    .filter(|(c, _)| c.key)
                    .map(|(c, v)| (c.name.as_str(), v.clone()))
                    .collect();
                codec.keys(&keys).map_err(SqlError::semantic)?
            }
            None => None,
        };
        let vals: Vec<(&str, Value)> = def
            .columns
            .iter()
            .zip(row.iter())
            .filter(|(c, _)| !c.key)
            .map(|(c, v)| (c.name.as_str(), v.clone()))
            .collect();
        let payload = codec.value(&vals).map_err(SqlError::semantic)?;
        let mut rec: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&def.topic).payload(payload.as_slice());
        if let Some(k) = &key {
            rec = rec.key(k.as_slice());
        }
        if let Some(ts) = rowtime {
            rec = rec.timestamp(ts);
        }
        self.producer
            .send(rec, TIMEOUT)
            .await
            .map_err(|(e, _)| SqlError::execution(format!("cannot write to {}: {e}", def.topic)))?;
        Ok(
            json!({"@type": "currentStatus", "statementText": text, "commandStatus": {"status": "SUCCESS", "message": "Inserted 1 row."}}),
        )
    }
}

/// The registry schemas of a sink (see [`format::SinkCodec::new`]), from an async context.
async fn sink_codec(def: SourceDef, latest: bool) -> Result<format::SinkCodec> {
    tokio::task::spawn_blocking(move || format::SinkCodec::new(&def, latest))
        .await
        .map_err(|e| SqlError::execution(e.to_string()))?
        .map_err(SqlError::semantic)
}

/// The columns of CREATE STREAM/TABLE without a column list, from the topic's schemas in the registry (ksqlDB's
/// schema inference): the value schema's fields, and the key schema's column (a column per field of a key record
/// of several) when the key format has a schema too.
async fn registry_columns(
    kind: SourceKind,
    topic: &str,
    key_format: Format,
    value_format: Format,
    pos: Option<crate::Pos>,
) -> Result<Vec<crate::parser::ColumnDef>> {
    if !value_format.uses_registry() {
        return Err(SqlError::semantic_at(
            format!("give the columns: CREATE {} s (col TYPE, ...); only VALUE_FORMAT='AVRO', 'PROTOBUF' or 'JSON_SR' reads them from the schema registry", kind.word()),
            pos,
        ));
    }
    let t = topic.to_string();
    let (value, key) = tokio::task::spawn_blocking(move || {
        let value = format::registry_columns(value_format, &t, false)?;
        let key = if key_format.uses_registry() {
            format::registry_columns(key_format, &t, true)?
        } else {
            None
        };
        Ok::<_, String>((value, key))
    })
    .await
    .map_err(|e| SqlError::execution(e.to_string()))?
    .map_err(SqlError::semantic)?;
    let Some(value) = value else {
        return Err(SqlError::semantic_at(
            format!(
                "the schema registry has no schema under {}: register one (a registry serializer does on its first write) or give the columns",
                format::subject(topic, false)
            ),
            pos,
        ));
    };
    let key_kind = if kind == SourceKind::Table {
        KeyKind::PrimaryKey
    } else {
        KeyKind::Key
    };
    let col = |n: String, ty: SqlType, key: KeyKind| crate::parser::ColumnDef {
        name: crate::parser::Name {
            value: n,
            pos: None,
        },
        ty,
        key,
    };
    Ok(key
        .into_iter()
        .flatten()
        .map(|(n, t)| col(n, t, key_kind))
        .chain(value.into_iter().map(|(n, t)| col(n, t, KeyKind::None)))
        .collect())
}

/// ksqlDB's `windowType` of a source: TUMBLING, HOPPING or SESSION for a windowed aggregation's table.
fn window_type(s: &SourceDef) -> &'static str {
    let Some(q) = s.query.as_ref().filter(|_| s.kind == SourceKind::Table) else {
        return "";
    };
    match parse_statement(&q.sql).map(|p| p.statement) {
        Ok(Statement::CreateSource {
            as_select: Some(sel),
            ..
        }) => match sel.window {
            Some(crate::parser::WindowSpec::Tumbling { .. }) => "TUMBLING",
            Some(crate::parser::WindowSpec::Hopping { .. }) => "HOPPING",
            Some(crate::parser::WindowSpec::Session { .. }) => "SESSION",
            None => "",
        },
        _ => "",
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A CREATE statement for a definition (after ALTER changed its columns).
fn ddl_text(d: &SourceDef) -> String {
    format!(
        "CREATE {} `{}` ({}) WITH (KAFKA_TOPIC='{}', KEY_FORMAT='{}', VALUE_FORMAT='{}'{})",
        d.kind.word(),
        d.name,
        d.schema_text(),
        d.topic.replace('\'', "''"),
        d.key_format.name(),
        d.value_format.name(),
        d.timestamp
            .as_ref()
            .map(|t| format!(", TIMESTAMP='{t}'"))
            .unwrap_or_default()
    )
}

/// The sources a query reads: FROM, then the joined ones.
fn source_names(p: &SelectPlan) -> Vec<String> {
    std::iter::once(&p.source)
        .chain(&p.joined)
        .map(|s| s.name.clone())
        .collect()
}

fn plan_text(p: &SelectPlan) -> String {
    let mut s = format!(
        " > [ SOURCE ] | Schema: {} | Topic: {}\n",
        p.source.schema_text(),
        p.source.topic
    );
    if p.filter.is_some() {
        s.push_str("\t\t > [ FILTER ]\n");
    }
    match &p.shape {
        crate::plan::Shape::Stateless => {}
        crate::plan::Shape::Aggregate { window, .. } => s.push_str(&format!(
            "\t\t > [ AGGREGATE ] | Window: {window:?} (streams library)\n"
        )),
        crate::plan::Shape::Join { kinds, .. } => {
            for j in &p.joined {
                s.push_str(&format!(
                    "\t\t > [ SOURCE ] | Schema: {} | Topic: {}\n",
                    j.schema_text(),
                    j.topic
                ));
            }
            let repartition = match join::JoinPlan::new(p) {
                Ok(j) => {
                    let [l, r] = j.repartitions();
                    let names = [(l, &p.source.name), (r, &p.joined[0].name)];
                    let names: Vec<&str> = names
                        .iter()
                        .filter(|(x, _)| *x)
                        .map(|(_, n)| n.as_str())
                        .collect();
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" | Repartition: {}", names.join(", "))
                    }
                }
                Err(_) => String::new(),
            };
            s.push_str(&format!(
                "\t\t > [ JOIN ] | {kinds:?}{repartition} (streams library)\n"
            ))
        }
    }
    s.push_str(&format!(
        "\t\t > [ PROJECT ] | Schema: {}\n",
        p.projection
            .iter()
            .map(|c| format!(
                "`{}` {}{}",
                c.name,
                c.ty,
                if c.is_key { " KEY" } else { "" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s
}

/// WITH (...) properties, each taken once; unknown names are refused with the known ones.
struct WithProps {
    map: BTreeMap<String, (String, Option<crate::Pos>)>,
    seen_key_format: bool,
}

impl WithProps {
    fn new(with: &[crate::parser::Property], known: &[&str]) -> Result<WithProps> {
        let mut map = BTreeMap::new();
        for p in with {
            if !known.contains(&p.name.as_str()) {
                return Err(SqlError::semantic_at(
                    format!(
                        "unknown property {}: the properties are {}",
                        p.name,
                        known.join(", ")
                    ),
                    p.pos,
                ));
            }
            if map
                .insert(p.name.clone(), (p.value.as_text(), p.pos))
                .is_some()
            {
                return Err(SqlError::semantic_at(
                    format!("the property {} is given twice", p.name),
                    p.pos,
                ));
            }
            if matches!(p.value, PropValue::Bool(_)) {
                return Err(SqlError::semantic_at(
                    format!("{} takes a quoted string or a number", p.name),
                    p.pos,
                ));
            }
        }
        let seen_key_format = map.contains_key("KEY_FORMAT") || map.contains_key("FORMAT");
        Ok(WithProps {
            map,
            seen_key_format,
        })
    }

    fn take(&mut self, k: &str) -> Option<String> {
        self.map.remove(k).map(|(v, _)| v)
    }

    fn int(&mut self, k: &str) -> Result<Option<i32>> {
        match self.map.remove(k) {
            None => Ok(None),
            Some((v, pos)) => v.parse().map(Some).map_err(|_| {
                SqlError::semantic_at(format!("{k}={v}: expected a whole number"), pos)
            }),
        }
    }

    fn format(&mut self, k: &str) -> Result<Option<Format>> {
        match self.map.remove(k) {
            None => Ok(None),
            Some((v, pos)) => Format::parse(&v).map(Some).ok_or_else(|| {
                SqlError::semantic_at(
                    format!("{k}='{v}': expected JSON, JSON_SR, DELIMITED, AVRO, PROTOBUF, KAFKA or NONE"),
                    pos,
                )
            }),
        }
    }

    /// (key format, value format): FORMAT sets both; the value format defaults to `default_value`, the key's to KAFKA.
    fn formats(&mut self, default_value: Format) -> Result<(Format, Format)> {
        let both = self.format("FORMAT")?;
        let v = self
            .format("VALUE_FORMAT")?
            .or(both)
            .unwrap_or(default_value);
        let k = self.format("KEY_FORMAT")?.or(both).unwrap_or(Format::Kafka);
        if matches!(v, Format::Kafka | Format::None) {
            return Err(SqlError::semantic(format!(
                "VALUE_FORMAT {} is for keys: use JSON, JSON_SR, DELIMITED, AVRO or PROTOBUF",
                v.name()
            )));
        }
        Ok((k, v))
    }
}

struct RunConfig {
    bootstrap: String,
    group: String,
    reset: String,
    sink: SourceDef,
    plan: SelectPlan,
    /// Each batch's output and input offsets commit in one transaction.
    exactly_once: bool,
    /// A record that does not decode fails the run (before its batch commits) instead of being skipped.
    fail_on_bad_record: bool,
}

/// Evaluates filter and projection on a decoded row: `None` when the filter drops it.
fn apply(plan: &SelectPlan, row: &[Value]) -> std::result::Result<Option<Vec<Value>>, String> {
    if let Some(f) = &plan.filter {
        if f.eval(row)? != Value::Bool(true) {
            return Ok(None);
        }
    }
    plan.projection
        .iter()
        .map(|p| p.expr.eval(row))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
}

/// A persistent query's state as ksqlDB shows it, and why when it is ERROR: RUNNING while its task runs,
/// ERROR while the task is failing (restarted with a pause until it makes progress) or could not start,
/// TERMINATED once stopped.
fn query_state(st: &State, q: &QueryDef) -> (&'static str, Option<String>) {
    match st.running.get(&q.id) {
        Some(r) => match r.stats.failure.lock().expect("stats").clone() {
            Some(e) => ("ERROR", Some(e)),
            None => ("RUNNING", None),
        },
        None if q.running => ("ERROR", st.start_errors.get(&q.id).cloned()),
        None => ("TERMINATED", None),
    }
}

/// Why a query with `ksql.fail.on.deserialization.error` true stopped at a record that does not decode (`e`).
fn stops_at(e: &str) -> String {
    format!("the record does not decode ({e}); {FAIL_ON_DESERIALIZATION_ERROR} is true, so the query stops at it instead of skipping it (SET it to 'false' and CREATE OR REPLACE the query to skip such records)")
}

/// Why a query with `ksql.fail.on.deserialization.error` true stopped at a row its sink `topic`'s schema cannot
/// hold (`e`).
fn stops_at_row(topic: &str, e: &str) -> String {
    format!("a row cannot be written to {topic}: {e}; {FAIL_ON_DESERIALIZATION_ERROR} is true, so the query stops at it instead of skipping it (SET it to 'false' and CREATE OR REPLACE the query to skip such rows)")
}

/// Records read per batch before the batch's output is flushed and its offsets committed.
const BATCH: usize = 1000;

fn run_persistent(
    cfg: &RunConfig,
    query_id: &str,
    stop: &AtomicBool,
    stats: &QueryStats,
) -> std::result::Result<(), String> {
    let started = std::time::Instant::now();
    let mut read_any = false;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", &cfg.reset)
        .set("session.timeout.ms", "10000")
        // Without these librdkafka pauses fetching for 1 s (fetch.queue.backoff.ms) whenever 100,000
        // records are queued, and a query that drains them faster sits idle.
        .set("queued.min.messages", "500000")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let failed = Arc::new(Mutex::new(None));
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &cfg.bootstrap)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5");
    if cfg.exactly_once {
        // One stable transactional id per query: a restarted query (also after a kill -9) fences its
        // predecessor and aborts the transaction it left open, so read_committed readers never see its output.
        pc.set("transactional.id", format!("{}-sql", cfg.group))
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", "60000");
    }
    let producer: ThreadedProducer<DeliveryCheck> = pc
        .create_with_context(DeliveryCheck {
            failed: failed.clone(),
        })
        .map_err(|e| format!("cannot create a producer: {e}"))?;
    if cfg.exactly_once {
        // Also the restart path: a transaction a failed run left open (its abort below failed, or the process
        // died) is aborted here by the coordinator, as the new epoch fences the old one.
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| format!("cannot start the query's transactions: {e}"))?;
    }
    // Exactly once: the batch's transaction while it is open, aborted by every return that leaves it open.
    let mut txn = OpenTxn {
        producer: &producer,
        open: false,
        group: &cfg.group,
    };
    let source = &cfg.plan.source;
    consumer
        .subscribe(&[&source.topic])
        .map_err(|e| format!("cannot subscribe to {}: {e}", source.topic))?;
    let out_partitions = consumer
        .fetch_metadata(Some(&cfg.sink.topic), TIMEOUT)
        .ok()
        .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("the output topic {} does not exist", cfg.sink.topic))?;
    let key_pos: Vec<usize> = cfg
        .plan
        .projection
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_key)
        .map(|(i, _)| i)
        .collect();
    let codec = format::SinkCodec::new(&cfg.sink, false)?;
    while !stop.load(Ordering::SeqCst) {
        // The batch's input offsets to commit: per partition the next offset to read.
        let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut n = 0;
        while n < BATCH {
            match consumer.poll(Duration::from_millis(if n == 0 { 200 } else { 0 })) {
                None => break,
                Some(Err(e)) => return Err(format!("consuming {} failed: {e}", source.topic)),
                Some(Ok(m)) => {
                    read_any = true;
                    if cfg.exactly_once && !txn.open {
                        producer
                            .begin_transaction()
                            .map_err(|e| format!("cannot begin a transaction: {e}"))?;
                        txn.open = true;
                    }
                    // A record whose schema the registry cannot be asked about now is not a bad record: stop
                    // before it (nothing from it on is committed) and restart from it.
                    if let Err(e) = format::registry_reachable(source, m.key(), m.payload()) {
                        let stopped =
                            format!("partition {} offset {}: {e}", m.partition(), m.offset());
                        commit_before(&consumer, &producer, &failed, cfg, &mut offsets, &m)?;
                        return Err(stopped);
                    }
                    n += 1;
                    stats.records_in.fetch_add(1, Ordering::Relaxed);
                    offsets.insert(m.partition(), m.offset() + 1);
                    let ts = m.timestamp().to_millis().unwrap_or(0);
                    let decoded = format::decode(
                        source,
                        m.key(),
                        m.payload(),
                        (ts, m.partition(), m.offset()),
                    );
                    if let (Err(e), true) = (&decoded, cfg.fail_on_bad_record) {
                        // The run stops at the record, and so does every restarted run, until it is dealt
                        // with: the query stays in ERROR.
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        let stopped = format!(
                            "partition {} offset {}: {}",
                            m.partition(),
                            m.offset(),
                            stops_at(e)
                        );
                        commit_before(&consumer, &producer, &failed, cfg, &mut offsets, &m)?;
                        return Err(stopped);
                    }
                    let out = decoded.and_then(|row| match row {
                        Some(r) => apply(&cfg.plan, &r)
                            .map(|o| o.map(|o| (o, r[0].as_i64().unwrap_or(ts)))),
                        None => Ok(None),
                    });
                    match out {
                        Ok(Some((vals, rowtime))) => {
                            let key_bytes = if key_pos.is_empty() {
                                Ok(m.key().map(<[u8]>::to_vec))
                            } else {
                                let keys: Vec<(&str, Value)> = key_pos
                                    .iter()
                                    .map(|&i| {
                                        (cfg.plan.projection[i].name.as_str(), vals[i].clone())
                                    })
                                    .collect();
                                codec.keys(&keys)
                            };
                            let named: Vec<(&str, Value)> = cfg
                                .plan
                                .projection
                                .iter()
                                .zip(vals)
                                .filter(|(p, _)| !p.is_key)
                                .map(|(p, v)| (p.name.as_str(), v))
                                .collect();
                            let encoded = key_bytes.and_then(|k| Ok((k, codec.value(&named)?)));
                            let (key_bytes, payload) = match encoded {
                                Ok(x) => x,
                                Err(e) => {
                                    // A row its output schema cannot hold is skipped and counted, as one
                                    // that does not decode (the schemas themselves were fetched above); with
                                    // fail-on-bad-record the query stops at it, as the aggregations do.
                                    stats.errors.fetch_add(1, Ordering::Relaxed);
                                    let unwritten = format!(
                                        "partition {} offset {}: cannot write it to {}: {e}",
                                        m.partition(),
                                        m.offset(),
                                        cfg.sink.topic
                                    );
                                    if cfg.fail_on_bad_record {
                                        commit_before(
                                            &consumer,
                                            &producer,
                                            &failed,
                                            cfg,
                                            &mut offsets,
                                            &m,
                                        )?;
                                        return Err(format!(
                                            "partition {} offset {}: {}",
                                            m.partition(),
                                            m.offset(),
                                            stops_at_row(&cfg.sink.topic, &e)
                                        ));
                                    }
                                    *stats.last_error.lock().expect("stats") = Some(unwritten);
                                    continue;
                                }
                            };
                            let mut rec: BaseRecord<'_, [u8], [u8]> =
                                BaseRecord::to(&cfg.sink.topic)
                                    .payload(payload.as_slice())
                                    .timestamp(rowtime);
                            // Re-keyed by PARTITION BY: the producer's murmur2 over the new key picks the
                            // partition (the Java client's), so that one key's records share one. Otherwise a
                            // record stays in its input partition (its key, and so its partition, unchanged).
                            if cfg.plan.partition_by.is_empty() {
                                rec = rec.partition(m.partition() % out_partitions);
                            }
                            if let Some(k) = &key_bytes {
                                rec = rec.key(k.as_slice());
                            }
                            let mut rec = Some(rec);
                            // A full queue waits for deliveries (bounded: a stop request ends the wait).
                            while let Some(r) = rec.take() {
                                match producer.send(r) {
                                    Ok(()) => {}
                                    Err((e, r))
                                        if e.rdkafka_error_code()
                                            == Some(RDKafkaErrorCode::QueueFull)
                                            && !stop.load(Ordering::SeqCst) =>
                                    {
                                        std::thread::sleep(Duration::from_millis(10));
                                        rec = Some(r);
                                    }
                                    Err((e, _)) => {
                                        return Err(format!(
                                            "cannot write to {}: {e}",
                                            cfg.sink.topic
                                        ))
                                    }
                                }
                            }
                            stats.records_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(group = cfg.group, partition = m.partition(), offset = m.offset(), error = %e, "record skipped");
                            *stats.last_error.lock().expect("stats") = Some(format!(
                                "partition {} offset {}: {e}",
                                m.partition(),
                                m.offset()
                            ));
                        }
                    }
                }
            }
        }
        if offsets.is_empty() {
            // A restarted query with nothing to read (and so nothing to fail on) runs again.
            if !read_any && started.elapsed() >= HEALTHY_AFTER && stats.failing() {
                stats.recovered(query_id);
            }
            continue;
        }
        if cfg.exactly_once {
            let tpl = offset_list(&source.topic, &offsets)?;
            // The batch's output and its input offsets commit together, or not at all (an error aborts the
            // transaction: the restarted query reads the batch again from the committed offsets).
            let gm = consumer
                .group_metadata()
                .ok_or("no consumer group metadata to commit the offsets with")?;
            producer
                .send_offsets_to_transaction(&tpl, &gm, TIMEOUT)
                .map_err(|e| format!("cannot add the input offsets to the transaction: {e}"))?;
            producer.commit_transaction(TIMEOUT).map_err(|e| {
                format!(
                    "committing the transaction to {} failed: {e}",
                    cfg.sink.topic
                )
            })?;
            txn.open = false;
            if let Some(e) = failed.lock().expect("delivery check").take() {
                return Err(format!("writing to {} failed: {e}", cfg.sink.topic));
            }
            stats.recovered(query_id);
            continue;
        }
        flush_then_commit(&consumer, &producer, &failed, cfg, &offsets)?;
        stats.recovered(query_id);
    }
    Ok(())
}

/// The input offsets to commit (per partition of `topic` the next offset to read) as a list.
fn offset_list(
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> std::result::Result<TopicPartitionList, String> {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .map_err(|e| e.to_string())?;
    }
    Ok(tpl)
}

/// At-least-once: commits the input `offsets` (per partition the next offset to read) only once every output
/// record sent so far is acknowledged; when one is not, nothing is committed. An empty queue after flush is not
/// enough: a delivery that failed (its retries or message.timeout.ms used up) left the queue too, and committing
/// past it would lose its output.
fn flush_then_commit(
    consumer: &BaseConsumer,
    producer: &ThreadedProducer<DeliveryCheck>,
    failed: &Mutex<Option<String>>,
    cfg: &RunConfig,
    offsets: &BTreeMap<i32, i64>,
) -> std::result::Result<(), String> {
    producer
        .flush(TIMEOUT)
        .map_err(|e| format!("writing to {} was not acknowledged: {e}", cfg.sink.topic))?;
    if let Some(e) = failed.lock().expect("delivery check").take() {
        return Err(format!("writing to {} failed: {e}", cfg.sink.topic));
    }
    consumer
        .commit(
            &offset_list(&cfg.plan.source.topic, offsets)?,
            CommitMode::Sync,
        )
        .map_err(|e| format!("committing offsets failed: {e}"))
}

/// A run stopping at record `m` (it does not decode and the query fails on that, or the registry cannot be asked
/// about it): at least once, the batch's records before it are written and committed, and its own offset is, so
/// that the restarted run starts with it. Returning with them uncommitted wrote their output again on every
/// restart while the query waited in ERROR. (Exactly once, nothing here: the batch's open transaction is aborted
/// by [`OpenTxn`]'s drop, read_committed readers never see its output, and the restarted run redoes those
/// records from the committed offsets.)
fn commit_before(
    consumer: &BaseConsumer,
    producer: &ThreadedProducer<DeliveryCheck>,
    failed: &Mutex<Option<String>>,
    cfg: &RunConfig,
    offsets: &mut BTreeMap<i32, i64>,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> std::result::Result<(), String> {
    if cfg.exactly_once {
        return Ok(());
    }
    offsets.insert(m.partition(), m.offset());
    flush_then_commit(consumer, producer, failed, cfg, offsets)
}

/// The open transaction of an exactly-once batch. A run that returns with it open (an error mid-batch: a
/// refused write, the registry unreachable, a failed commit) aborts it at once, instead of leaving it to the
/// restarted run's fencing or, when the query is stopped meanwhile, to the transaction timeout: until then
/// read_committed readers of the output and the partitions' last stable offset could not pass it.
struct OpenTxn<'a> {
    producer: &'a ThreadedProducer<DeliveryCheck>,
    open: bool,
    group: &'a str,
}

impl Drop for OpenTxn<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        match self.producer.abort_transaction(TIMEOUT) {
            Ok(()) => tracing::info!(group = self.group, "aborted the failed batch's transaction"),
            // A fenced or fatally failed producer cannot abort: the next run's init_transactions does.
            Err(e) => tracing::warn!(
                group = self.group,
                error = %e,
                "cannot abort the failed batch's transaction; the restarted query's fencing aborts it"
            ),
        }
    }
}

/// Remembers the first failed delivery of a persistent query's producer, so that its batch's input offsets
/// are not committed past output that was never written.
struct DeliveryCheck {
    failed: Arc<Mutex<Option<String>>>,
}

impl rdkafka::ClientContext for DeliveryCheck {}

impl rdkafka::producer::ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            let mut g = self.failed.lock().expect("delivery check");
            if g.is_none() {
                *g = Some(e.to_string());
            }
        }
    }
}

/// The row a stream's record shows in a push query, if it passes WHERE.
fn stream_row(
    plan: &SelectPlan,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    meta: (i64, i32, i64),
) -> std::result::Result<Option<Row>, String> {
    let Some(row) = format::decode(&plan.source, key, value, meta)? else {
        return Ok(None);
    };
    Ok(apply(plan, &row)?.map(|v| Row::of(&v)))
}

/// A key as a push query over a table remembers it: 128 bits of two SipHashes, so that the memory a query holds
/// is bounded by the count of keys, not by their size (keys may be as large as a record). Two keys sharing one
/// hash would only cost a tombstone shown for a row not shown.
fn key_hash(key: &[u8]) -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let half = |seed: u8| {
        let mut h =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .build_hasher();
        h.write_u8(seed);
        h.write(key);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// The most keys a push query over a table with WHERE remembers as shown; past it, a deletion of a key it did
/// not remember is shown anyway (a tombstone for a row the client may not have, never a deletion missed).
const MAX_TRACKED_KEYS: usize = 1_000_000;

/// The changes of a table as a push query shows them, ksqlDB's way: each update of a row that passes WHERE, and
/// a tombstone (key columns, the rest null) when a row leaves the result. Without WHERE every tombstone of the
/// topic is shown; with WHERE, a tombstone or an update that no longer passes is shown only for a key whose row
/// the query showed (Kafka Streams' table filter, which sends no tombstone for a row never in its result).
struct TableChanges {
    /// A windowed table's window: its record keys end with the window's bounds.
    window: Option<crate::parser::WindowSpec>,
    /// Whether the query has a WHERE, so that the keys shown are remembered.
    tracked: bool,
    /// The record keys (with their window) whose latest row the query showed.
    shown: HashSet<u128>,
    /// `shown` reached [`MAX_TRACKED_KEYS`] and missed a key: any key may have been shown.
    overflow: bool,
}

impl TableChanges {
    /// The row one record of the table's topic shows, if any. A record without a key is no row of a table.
    fn change(
        &mut self,
        plan: &SelectPlan,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        meta: (i64, i32, i64),
    ) -> std::result::Result<Option<Row>, String> {
        let Some(raw) = key else {
            return Ok(None);
        };
        let (k, bounds) = match &self.window {
            Some(w) => {
                let (k, start, end) = format::split_windowed_key(raw, w)?;
                (k, Some((start, end)))
            }
            None => (raw, None),
        };
        let mut row = match value {
            Some(_) => match format::decode(&plan.source, Some(k), value, meta)? {
                Some(r) => r,
                None => return Ok(None),
            },
            None => format::decode_tombstone(&plan.source, Some(k), meta)?,
        };
        // After the columns, as `plan_select` scopes them for a windowed table.
        if let Some((start, end)) = bounds {
            row.push(Value::Bigint(start));
            row.push(Value::Bigint(end));
        }
        if value.is_some() {
            if let Some(vals) = apply(plan, &row)? {
                if self.tracked {
                    self.remember(raw);
                }
                return Ok(Some(Row::of(&vals)));
            }
            if !self.forget(raw) {
                return Ok(None);
            }
        } else if self.tracked && !self.forget(raw) {
            return Ok(None);
        }
        // ksqlDB's tombstone row: the key columns (and window bounds) the query selects, the others null.
        let bounds_at = PSEUDO.len() + plan.source.columns.len();
        let columns = plan
            .projection
            .iter()
            .map(|p| match p.expr {
                crate::expr::Expr::Col(i) if p.is_key || i >= bounds_at => {
                    p.expr.eval(&row).map(|v| v.to_json())
                }
                _ => Ok(J::Null),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(Row {
            columns,
            tombstone: true,
        }))
    }

    fn remember(&mut self, key: &[u8]) {
        let h = key_hash(key);
        if self.shown.len() < MAX_TRACKED_KEYS {
            self.shown.insert(h);
        } else if !self.shown.contains(&h) {
            self.overflow = true;
        }
    }

    /// Forgets `key`; whether its row may have been shown.
    fn forget(&mut self, key: &[u8]) -> bool {
        self.shown.remove(&key_hash(key)) || self.overflow
    }
}

fn run_push(
    bootstrap: &str,
    query_id: &str,
    plan: &SelectPlan,
    reset: &str,
    pull: bool,
    tx: &tokio::sync::mpsc::Sender<std::result::Result<Row, String>>,
    stall: Duration,
) -> std::result::Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("_fjord_sql_{query_id}"))
        .set("enable.auto.commit", "false")
        // A pull query ends at each partition's end: librdkafka says when it got there, also when the last
        // offsets hold no record it delivers (a transaction marker, a compacted tail).
        .set("enable.partition.eof", if pull { "true" } else { "false" })
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let topic = &plan.source.topic;
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| format!("cannot read the metadata of {topic}: {e}"))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(format!("the topic {topic} does not exist"));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in &parts {
        // The end now, resolved before assigning: a row produced after the query started is always seen.
        let (lo, hi) = consumer
            .fetch_watermarks(topic, *p, TIMEOUT)
            .map_err(|e| format!("cannot read the offsets of {topic}-{p}: {e}"))?;
        let start = if reset == "earliest" { lo } else { hi };
        tpl.add_partition_offset(topic, *p, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
        if hi > start {
            ends.insert(*p, hi);
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot read {topic}: {e}"))?;
    let mut sent = 0u64;
    let limit = plan.limit;
    if limit == Some(0) {
        return Ok(());
    }
    // A push query over a table shows the table's changes: updates and deletions (tombstones).
    let mut table = (plan.source.kind == SourceKind::Table && !pull).then(|| TableChanges {
        window: crate::plan::table_window(&plan.source),
        tracked: plan.filter.is_some(),
        shown: HashSet::new(),
        overflow: false,
    });
    loop {
        if tx.is_closed() || (pull && ends.is_empty()) {
            return Ok(());
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => return Err(format!("consuming {topic} failed: {e}")),
            Some(Ok(m)) => {
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
                // A push query shows every row or ends saying why: it does not skip a record the registry
                // cannot be asked about.
                format::registry_reachable(&plan.source, m.key(), m.payload())?;
                let ts = m.timestamp().to_millis().unwrap_or(0);
                let meta = (ts, m.partition(), m.offset());
                let row = match table.as_mut() {
                    Some(t) => t.change(plan, m.key(), m.payload(), meta),
                    None => stream_row(plan, m.key(), m.payload(), meta),
                };
                let row = match row {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(query_id, error = %e, "record skipped");
                        continue;
                    }
                };
                if !send_bounded(tx, Ok(row), stall) {
                    if tx.is_closed() {
                        return Ok(());
                    }
                    return Err(format!(
                        "the client read no row for {} s: the query {query_id} was ended",
                        stall.as_secs_f64()
                    ));
                }
                sent += 1;
                if limit.is_some_and(|l| sent >= l) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_to_a_client_that_takes_nothing_gives_up_after_the_stall() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        assert!(send_bounded(&tx, 1, Duration::from_millis(100)));
        let started = std::time::Instant::now();
        assert!(!send_bounded(&tx, 2, Duration::from_millis(300)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // A client that takes its rows gets them all.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(x) = rx.blocking_recv() {
                got.push(x);
                std::thread::sleep(Duration::from_millis(5));
            }
            got
        });
        for i in 3..20 {
            assert!(send_bounded(&tx, i, Duration::from_secs(5)));
        }
        drop(tx);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 18);
        // A closed channel is reported at once.
        let (tx, rx) = tokio::sync::mpsc::channel::<u32>(1);
        drop(rx);
        assert!(!send_bounded(&tx, 1, Duration::from_secs(60)));
    }
}
