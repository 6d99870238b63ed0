//! Distributed mode's storage, as Kafka's `connect-distributed.sh worker.properties`: connector configs and
//! target states in the config topic (`config.storage.topic`), source offsets in the offsets topic
//! (`offset.storage.topic`), both compacted and in Connect's record formats, so that connectors and their
//! positions outlive the worker: a restarted worker reads both topics to their end and runs what they hold.
//!
//! Config topic records (string keys, schemaless JSON values, as Connect's `KafkaConfigBackingStore`):
//! `connector-<name>` => `{"properties": {...}}` (null when deleted), `target-state-<name>` =>
//! `{"state": "STARTED"|"PAUSED", "state.v2": "STARTED"|"PAUSED"|"STOPPED"}`, `task-<name>-<n>` =>
//! `{"properties": {...}}` and `commit-<name>` => `{"tasks": n}`.
//!
//! Workers of one `group.id` form a group with Connect's own `connect` protocol (`group.rs`): the leader
//! assigns the connectors to the workers, each runs its assignment, and REST requests go to the leader (the
//! others forward them). `connect.protocol=lease` keeps Fjord's older lease (`lease.rs`: one worker runs every
//! connector, the others stand by).
//!
//! The status topic (`status.storage.topic`) is written by `StatusLog` and read back by every worker
//! (`status_store.rs`, as Connect's `KafkaStatusBackingStore`): a worker answers the status of connectors other
//! workers run from it, and a restarted worker knows them once it has read the topic to its end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::{ConfigMap, WorkerConfig};
use crate::error::{Error, Result};
use crate::lease::LeaseConfig;
use crate::offsets::OffsetStore;
use crate::status_store::StatusStore;
use crate::topics::{self, Record, TopicWriter};
use crate::worker::{TargetState, Worker};

/// A distributed worker's group and internal topics (Kafka's `DistributedConfig` names).
#[derive(Debug, Clone)]
pub struct DistributedConfig {
    pub group_id: String,
    pub config_topic: String,
    pub offset_topic: String,
    pub status_topic: String,
    /// `offset.storage.partitions` (25, Connect's default).
    pub offset_partitions: i32,
    /// `config.storage.replication.factor` and the others: -1 (the cluster's default) unless set.
    pub replication: i32,
}

impl DistributedConfig {
    pub fn from_properties(props: &ConfigMap) -> Result<DistributedConfig> {
        let required = |k: &str| -> Result<String> {
            match props.get(k).map(|v| v.trim()) {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(Error::BadRequest(format!(
                    "{k} is required in distributed mode (e.g. group.id=connect-cluster, config.storage.topic=connect-configs, offset.storage.topic=connect-offsets, status.storage.topic=connect-status)"
                ))),
            }
        };
        let number = |k: &str, default: i32| -> Result<i32> {
            match props.get(k) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    Error::BadRequest(format!(
                        "{k}={v}: expected a number (-1: the cluster's default)"
                    ))
                }),
            }
        };
        Ok(DistributedConfig {
            group_id: required("group.id")?,
            config_topic: required("config.storage.topic")?,
            offset_topic: required("offset.storage.topic")?,
            status_topic: required("status.storage.topic")?,
            offset_partitions: number("offset.storage.partitions", 25)?,
            replication: number("config.storage.replication.factor", -1)?,
        })
    }
}

/// A group timeout in milliseconds: Connect declares these as INT, and the group protocol carries them as i32
/// (a larger one would wrap negative on the wire or overflow the deadlines computed from it).
fn parse_ms(key: &str, value: Option<&str>, default: u64) -> Result<u64> {
    let Some(v) = value else { return Ok(default) };
    match v.trim().parse::<u64>() {
        Ok(n) if n <= i32::MAX as u64 => Ok(n),
        _ => Err(Error::BadRequest(format!(
            "{key}={v}: expected a number of milliseconds from 0 to {}",
            i32::MAX
        ))),
    }
}

/// The config topic: where every connector change is written (and acknowledged) before it takes effect.
pub struct ConfigLog {
    writer: TopicWriter,
}

/// A connector as the config topic holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConnector {
    pub config: ConfigMap,
    pub target: TargetState,
}

impl ConfigLog {
    pub fn new(bootstrap: &str, topic: &str) -> Result<ConfigLog> {
        Ok(ConfigLog {
            writer: TopicWriter::new(bootstrap, topic).map_err(Error::Internal)?,
        })
    }

    /// The connectors the config topic holds, read to its end (blocking): the last `connector-<name>` record
    /// of each name that is not a tombstone, with its last target state (STARTED when none was written).
    pub fn load(bootstrap: &str, topic: &str) -> Result<BTreeMap<String, StoredConnector>> {
        let records = topics::read_all(bootstrap, topic).map_err(Error::Internal)?;
        Ok(replay(&records, topic))
    }

    /// A connector's config, its tasks' configs (`task-<name>-<i>`) and the commit of their count
    /// (`commit-<name>`, which makes them valid for Connect's readers), and (when given) its target state, first:
    /// the connector record, which makes the connector exist for a reader, never comes without the target state
    /// it was created in.
    pub async fn put_connector(
        &self,
        name: &str,
        config: &ConfigMap,
        task_configs: &[ConfigMap],
        target: Option<TargetState>,
    ) -> std::result::Result<(), String> {
        let mut records = Vec::new();
        if let Some(t) = target {
            records.push(target_record(name, t));
        }
        records.push(record(
            format!("connector-{name}"),
            Some(json!({ "properties": config })),
        ));
        for (id, task_config) in task_configs.iter().enumerate() {
            records.push(record(
                format!("task-{name}-{id}"),
                Some(json!({ "properties": task_config })),
            ));
        }
        records.push(record(
            format!("commit-{name}"),
            Some(json!({"tasks": task_configs.len()})),
        ));
        self.writer.write(records).await
    }

    pub async fn put_target(
        &self,
        name: &str,
        target: TargetState,
    ) -> std::result::Result<(), String> {
        self.writer.write(vec![target_record(name, target)]).await
    }

    /// Tombstones for the target state and the connector, as Connect writes on delete. The connector's is the
    /// decisive one and comes last: a delete that failed part way leaves the connector in the topic, for a
    /// retry to delete.
    pub async fn delete(&self, name: &str) -> std::result::Result<(), String> {
        self.writer.write(delete_records(name)).await
    }
}

/// A delete's tombstones, in the order they are written (the decisive one last).
fn delete_records(name: &str) -> Vec<Record> {
    vec![
        record(format!("target-state-{name}"), None),
        record(format!("connector-{name}"), None),
    ]
}

fn record(key: String, value: Option<Value>) -> Record {
    (
        key.into_bytes(),
        value.map(|v| serde_json::to_vec(&v).expect("JSON serialises")),
    )
}

fn target_record(name: &str, t: TargetState) -> Record {
    // "state" is what workers before KIP-875 understand (they know no STOPPED); "state.v2" is the real one.
    let (v1, v2) = match t {
        TargetState::Running => ("STARTED", "STARTED"),
        TargetState::Paused => ("PAUSED", "PAUSED"),
        TargetState::Stopped => ("PAUSED", "STOPPED"),
    };
    record(
        format!("target-state-{name}"),
        Some(json!({"state": v1, "state.v2": v2})),
    )
}

/// The connectors a config topic's records leave, in order; records Fjord does not use (session keys, other
/// tasks' configs, commits, ...) or cannot read are skipped, the latter with a warning.
fn replay(records: &[Record], topic: &str) -> BTreeMap<String, StoredConnector> {
    let mut configs: BTreeMap<String, ConfigMap> = BTreeMap::new();
    let mut targets: BTreeMap<String, TargetState> = BTreeMap::new();
    for (key, value) in records {
        let Ok(key) = std::str::from_utf8(key) else {
            continue;
        };
        let value: Option<Value> = match value.as_deref().map(serde_json::from_slice) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                tracing::warn!(
                    topic,
                    key,
                    "a config record that is not JSON is skipped: {e}"
                );
                continue;
            }
        };
        if let Some(name) = key.strip_prefix("connector-") {
            match value.as_ref().map(|v| &v["properties"]) {
                None | Some(Value::Null) => {
                    configs.remove(name);
                }
                Some(props) => match crate::config::json_config_map(props) {
                    Ok(c) => {
                        configs.insert(name.to_string(), c);
                    }
                    Err(e) => {
                        tracing::warn!(
                            topic,
                            key,
                            "a connector config that is not a map is skipped: {e}"
                        )
                    }
                },
            }
        } else if let Some(name) = key.strip_prefix("target-state-") {
            let state = value.as_ref().and_then(|v| {
                v.get("state.v2")
                    .and_then(Value::as_str)
                    .or_else(|| v.get("state").and_then(Value::as_str))
            });
            match state {
                None => {
                    targets.remove(name);
                }
                Some("STARTED") => {
                    targets.insert(name.to_string(), TargetState::Running);
                }
                Some(s) => match TargetState::parse(s) {
                    Some(t) => {
                        targets.insert(name.to_string(), t);
                    }
                    None => tracing::warn!(topic, key, "an unknown target state {s} is skipped"),
                },
            }
        }
    }
    configs
        .into_iter()
        .map(|(name, config)| {
            let target = targets.get(&name).copied().unwrap_or(TargetState::Running);
            (name, StoredConnector { config, target })
        })
        .collect()
}

/// The status topic (`status.storage.topic`): connector and task statuses in Connect's records, written in
/// order by one background task, best effort (a failed write is logged; the REST API answers from memory).
/// Keys `status-connector-<name>` and `status-task-<name>-<id>`, values
/// `{"state", "trace", "worker_id", "generation"}`; tombstones when a connector is deleted. The generation is the
/// worker's group generation (Connect's group protocol, set at each rebalance); with the lease
/// (`connect.protocol=lease`) it is 0: the lease's consumer group is librdkafka's, which does not expose its
/// generation, and one worker runs everything, so no older owner's write can race a newer one's.
#[derive(Clone)]
pub struct StatusLog {
    tx: tokio::sync::mpsc::UnboundedSender<Record>,
    worker_id: String,
    generation: Arc<AtomicI32>,
    /// The status topic read back, for the safe writes (`report_safe`).
    store: Option<Arc<StatusStore>>,
}

impl StatusLog {
    pub fn start(
        bootstrap: &str,
        topic: &str,
        worker_id: &str,
        store: Option<Arc<StatusStore>>,
    ) -> Result<StatusLog> {
        let writer = TopicWriter::new(bootstrap, topic).map_err(Error::Internal)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(r) = rx.try_recv() {
                    batch.push(r);
                }
                if let Err(e) = writer.write(batch).await {
                    tracing::warn!("a status could not be written to the status topic: {e}");
                }
            }
        });
        Ok(StatusLog {
            tx,
            worker_id: worker_id.to_string(),
            generation: Arc::new(AtomicI32::new(0)),
            store,
        })
    }

    /// The group generation the next statuses are written with (each completed rebalance sets it).
    pub fn set_generation(&self, generation: i32) {
        self.generation.store(generation.max(0), Ordering::SeqCst);
    }

    /// Records the state of the connector (`task` None) or of one of its tasks.
    pub fn report(&self, connector: &str, task: Option<u32>, state: &str, trace: Option<&str>) {
        let key = match task {
            None => format!("status-connector-{connector}"),
            Some(t) => format!("status-task-{connector}-{t}"),
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let value = json!({"state": state, "trace": trace, "worker_id": self.worker_id, "generation": generation});
        let _ = self.tx.send(record(key, Some(value)));
    }

    /// A connector's (`task` None) or task's status that must not replace what a newer owner wrote (Connect's
    /// `putSafe`, for failures and stops): skipped when the status topic holds another worker's status of the task from a newer
    /// generation (the task moved on; this worker's news of it is stale).
    pub fn report_safe(
        &self,
        connector: &str,
        task: Option<u32>,
        state: &str,
        trace: Option<&str>,
    ) {
        let generation = self.generation.load(Ordering::SeqCst);
        let existing = self.store.as_ref().and_then(|s| match task {
            Some(t) => s.task(connector, t),
            None => s.connector(connector).map(|(c, _)| c),
        });
        if !crate::status_store::can_write_safely(existing.as_ref(), &self.worker_id, generation) {
            tracing::info!(
                connector,
                task = ?task,
                state,
                generation,
                "not writing a task status: another worker wrote a newer generation's"
            );
            return;
        }
        self.report(connector, task, state, trace);
    }

    /// Tombstones for a deleted connector's statuses (of its `tasks` tasks).
    pub fn forget(&self, connector: &str, tasks: u32) {
        let _ = self
            .tx
            .send(record(format!("status-connector-{connector}"), None));
        for id in 0..tasks.max(1) {
            let _ = self
                .tx
                .send(record(format!("status-task-{connector}-{id}"), None));
        }
    }
}

/// A started distributed worker.
pub struct Distributed {
    pub worker: Arc<Worker>,
    pub rest: SocketAddr,
    pub config: DistributedConfig,
}

/// Starts a distributed worker: creates the internal topics unless they exist, reads the offsets and config
/// topics to their end (importing a standalone offsets file first when `import_offsets` names one that
/// exists), serves the REST API and runs the connectors the config topic holds.
pub async fn start(props: ConfigMap, import_offsets: Option<&Path>) -> Result<Distributed> {
    let dconfig = DistributedConfig::from_properties(&props)?;
    let config = WorkerConfig::from_properties_distributed(props)?;
    let bootstrap = config.bootstrap_servers.clone();
    let cluster_id = {
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || crate::standalone::cluster_id(&b))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    let rf = dconfig.replication;
    topics::ensure_topic(&bootstrap, &dconfig.config_topic, 1, rf)
        .await
        .map_err(Error::Internal)?;
    topics::ensure_topic(
        &bootstrap,
        &dconfig.offset_topic,
        dconfig.offset_partitions,
        rf,
    )
    .await
    .map_err(Error::Internal)?;
    topics::ensure_topic(&bootstrap, &dconfig.status_topic, 5, rf)
        .await
        .map_err(Error::Internal)?;
    let offsets = {
        let (b, ot) = (bootstrap.clone(), dconfig.offset_topic.clone());
        tokio::task::spawn_blocking(move || OffsetStore::from_topic(&b, &ot))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    let offsets = Arc::new(offsets);
    if let Some(file) = import_offsets.filter(|f| f.exists()) {
        import_offsets_file(&offsets, file).await?;
    }
    let log = Arc::new(ConfigLog::new(&bootstrap, &dconfig.config_topic)?);
    let (listener, rest, worker_id) = config.bind_rest().await?;
    let ms = |k: &str, default: u64| -> Result<u64> {
        parse_ms(k, config.props.get(k).map(String::as_str), default)
    };
    // Connect's defaults.
    let lease_config = LeaseConfig {
        bootstrap: bootstrap.clone(),
        group_id: dconfig.group_id.clone(),
        config_topic: dconfig.config_topic.clone(),
        offset_topic: dconfig.offset_topic.clone(),
        session_timeout_ms: ms("session.timeout.ms", 10_000)?,
        heartbeat_interval_ms: ms("heartbeat.interval.ms", 3_000)?,
    };
    // `connect.protocol`: Connect's group protocol (`sessioned`, the default, or `compatible`), or `lease`,
    // Fjord's older one-active-worker lease.
    let protocol = config
        .props
        .get("connect.protocol")
        .map(|p| p.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "sessioned".into());
    let group_config = if protocol == "lease" {
        None
    } else {
        Some(crate::group::GroupConfig {
            bootstrap: bootstrap.clone(),
            group_id: dconfig.group_id.clone(),
            config_topic: dconfig.config_topic.clone(),
            offset_topic: dconfig.offset_topic.clone(),
            session_timeout_ms: lease_config.session_timeout_ms,
            heartbeat_interval_ms: lease_config.heartbeat_interval_ms,
            rebalance_timeout_ms: ms("rebalance.timeout.ms", 60_000)?,
            max_delay_ms: ms("scheduled.rebalance.max.delay.ms", 300_000)?,
            protocols: crate::group::protocols(&protocol).map_err(Error::BadRequest)?,
            url: format!("http://{worker_id}/"),
        })
    };
    // The status topic read back: statuses of connectors other workers run, from before this worker started too.
    let store = StatusStore::start(&bootstrap, &dconfig.status_topic).map_err(Error::Internal)?;
    if !store.wait_ready(topics::TOPIC_TIMEOUT).await {
        tracing::warn!(topic = %dconfig.status_topic, "the status topic was not read to its end within {:?}; statuses of connectors on other workers are asked of them until it is", topics::TOPIC_TIMEOUT);
    }
    let status = StatusLog::start(
        &bootstrap,
        &dconfig.status_topic,
        &worker_id,
        Some(store.clone()),
    )?;
    let worker = Worker::new(config, offsets, worker_id, cluster_id)
        .with_config_log(log)
        .with_status_log(status)
        .with_status_store(store);
    let worker = Arc::new(if group_config.is_some() {
        worker.in_group()
    } else {
        worker.standing_by()
    });
    let app = crate::api::router(worker.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("Connect REST server stopped: {e}");
        }
    });
    if let Some(gc) = group_config {
        let m = crate::group::join(gc, worker.clone()).map_err(Error::Internal)?;
        worker.set_membership(m);
    } else {
        worker.set_active_lookup(
            crate::lease::ActiveLookup::new(&bootstrap, &dconfig.group_id, &dconfig.config_topic)
                .map_err(Error::Internal)?,
        );
        let lease = crate::lease::join(lease_config, worker.clone()).map_err(Error::Internal)?;
        worker.set_lease(lease);
    }
    // Ready when this worker runs the connectors or another one does (bounded: a group that never assigns is
    // reported, not waited for forever).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !worker.group_settled() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(Distributed {
        worker,
        rest,
        config: dconfig,
    })
}

/// Moves a standalone offsets file's entries into the offsets topic (those the topic lacks), then renames the
/// file to `<file>.imported`, so that a worker that kept its offsets in a file keeps its positions.
async fn import_offsets_file(offsets: &Arc<OffsetStore>, file: &Path) -> Result<()> {
    let old = OffsetStore::open(file)?;
    let mut n = 0;
    for (connector, partition, offset) in old.all() {
        if offsets.get(&connector, &partition).is_none() {
            offsets.put(&connector, partition, offset);
            n += 1;
        }
    }
    offsets.flush().await.map_err(|e| {
        Error::Internal(format!(
            "importing {} into {} failed: {e}",
            file.display(),
            offsets.describe()
        ))
    })?;
    let mut to = file.as_os_str().to_owned();
    to.push(".imported");
    // The rename is made durable (the directory fsynced): a crash must not bring the file back, or a later
    // start would import it again (the offsets of connectors deleted since would come back).
    std::fs::rename(file, &to)
        .and_then(|()| crate::offsets::sync_parent(file))
        .map_err(|e| {
            Error::Internal(format!(
                "cannot rename {} after importing it: {e}",
                file.display()
            ))
        })?;
    tracing::info!(file = %file.display(), entries = n, "standalone offsets imported into {}", offsets.describe());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_timeouts_must_fit_the_protocols_i32() {
        assert_eq!(
            parse_ms("session.timeout.ms", None, 10_000).unwrap(),
            10_000
        );
        assert_eq!(
            parse_ms("session.timeout.ms", Some(" 6000 "), 1).unwrap(),
            6000
        );
        assert_eq!(
            parse_ms("k", Some("2147483647"), 1).unwrap(),
            i32::MAX as u64
        );
        for bad in ["2147483648", "18446744073709551615", "-1", "ten"] {
            let e = parse_ms("scheduled.rebalance.max.delay.ms", Some(bad), 1).unwrap_err();
            assert!(e.to_string().contains("from 0 to 2147483647"), "{e}");
        }
    }

    /// A delete cut short (its request answered 500) must leave the connector in the topic, for a retry to
    /// delete, rather than have deleted it behind the client's back: the connector's tombstone is written last.
    /// (The price: cut after the first tombstone, a paused connector would run again at the next takeover.)
    #[test]
    fn a_delete_cut_short_leaves_the_connector_for_a_retry() {
        let stored = vec![
            record(
                "connector-a".into(),
                Some(json!({"properties": {"connector.class": "FileStreamSource"}})),
            ),
            target_record("a", TargetState::Paused),
        ];
        let delete = delete_records("a");
        assert_eq!(delete.last().unwrap().0, b"connector-a");
        for written in 0..delete.len() {
            let mut records = stored.clone();
            records.extend(delete[..written].iter().cloned());
            assert!(replay(&records, "t").contains_key("a"), "{written}");
        }
        let mut records = stored;
        records.extend(delete);
        assert!(replay(&records, "t").is_empty());
    }

    #[test]
    fn config_records_replay_as_connect_writes_them() {
        let props = |file: &str| json!({"properties": {"connector.class": "FileStreamSource", "file": file}});
        let rec = |k: &str, v: Option<Value>| record(k.to_string(), v);
        let records = vec![
            rec("connector-a", Some(props("/1"))),
            rec("task-a-0", Some(props("/1"))),
            rec("commit-a", Some(json!({"tasks": 1}))),
            rec("connector-a", Some(props("/2"))),
            target_record("a", TargetState::Stopped),
            rec("connector-b", Some(props("/3"))),
            target_record("b", TargetState::Paused),
            rec("connector-b", None),
            rec("target-state-b", None),
            // Written by an Apache worker before KIP-875: only "state".
            rec("connector-c", Some(props("/4"))),
            rec("target-state-c", Some(json!({"state": "PAUSED"}))),
            rec(
                "session-key",
                Some(json!({"key": "x", "algorithm": "HmacSHA256"})),
            ),
            (b"connector-d".to_vec(), Some(b"not json".to_vec())),
        ];
        let got = replay(&records, "t");
        assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(got["a"].config["file"], "/2");
        assert_eq!(got["a"].target, TargetState::Stopped);
        assert_eq!(got["c"].target, TargetState::Paused);
        assert_eq!(
            serde_json::from_slice::<Value>(
                target_record("a", TargetState::Stopped)
                    .1
                    .as_deref()
                    .unwrap()
            )
            .unwrap(),
            json!({"state": "PAUSED", "state.v2": "STOPPED"})
        );
    }
}
