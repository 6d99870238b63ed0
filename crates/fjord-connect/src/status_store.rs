//! The status topic read back (distributed mode), as Kafka Connect's `KafkaStatusBackingStore`: every worker
//! consumes `status.storage.topic` from its beginning and keeps reading it, so that it can answer the status of
//! connectors other workers run (`GET /connectors?expand=status`, `.../status`), and knows them right after a
//! restart.
//!
//! Records are Connect's: string keys `status-connector-<name>` and `status-task-<name>-<id>`, schemaless JSON
//! values `{"state", "trace", "worker_id", "generation"}`, tombstones (null values) when a connector is deleted.
//! Connect's `status-topic-...` records (KIP-558's active topics) are not used here and skipped silently; any
//! other record (foreign, corrupt, or larger than [`MAX_VALUE_BYTES`]) is skipped with a warning.
//!
//! Memory is bounded by the topic's keys: only the latest status of each connector and task is kept, and a
//! tombstone (or Connect's `DESTROYED`) removes it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// The largest status value read; a bigger one (a status is a few KiB, a Java stack trace included) is skipped.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The states Connect's statuses have (`AbstractStatus.State`).
const STATES: [&str; 7] = [
    "UNASSIGNED",
    "RUNNING",
    "PAUSED",
    "FAILED",
    "DESTROYED",
    "RESTARTING",
    "STOPPED",
];

/// A connector's or task's status as the status topic holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub state: String,
    pub trace: Option<String>,
    pub worker_id: String,
    /// The group generation of the worker that wrote it (0 from Fjord's lease mode and older Fjord workers).
    pub generation: i32,
}

/// What a status record is about.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusKey {
    Connector(String),
    Task(String, u32),
}

/// A status record read: its key and its status (None: removed).
pub type Parsed = (StatusKey, Option<Status>);

/// Reads one status-topic record. `Ok(None)`: a record of Connect's that this store does not use (KIP-558's
/// topic records); `Err`: a record that is not Connect's status format, saying why.
pub fn parse(key: &[u8], value: Option<&[u8]>) -> Result<Option<Parsed>, String> {
    let key = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_string())?;
    if key.starts_with("status-topic-") {
        return Ok(None);
    }
    let status_key = if let Some(name) = key.strip_prefix("status-connector-") {
        if name.is_empty() {
            return Err("a connector status key without a connector name".into());
        }
        StatusKey::Connector(name.to_string())
    } else if let Some(rest) = key.strip_prefix("status-task-") {
        let (name, id) = rest
            .rsplit_once('-')
            .ok_or_else(|| format!("a task status key without a task id: {}", short(key)))?;
        let id: u32 = id.parse().map_err(|_| {
            format!(
                "a task status key whose task id is not a number: {}",
                short(key)
            )
        })?;
        if name.is_empty() {
            return Err("a task status key without a connector name".into());
        }
        StatusKey::Task(name.to_string(), id)
    } else {
        return Err(format!("a key that is not a status key: {}", short(key)));
    };
    let Some(value) = value else {
        return Ok(Some((status_key, None)));
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "a value of {} bytes (at most {MAX_VALUE_BYTES} are read)",
            value.len()
        ));
    }
    let v: Value =
        serde_json::from_slice(value).map_err(|e| format!("a value that is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "a value that is not a JSON object".to_string())?;
    let state = match obj.get("state") {
        Some(Value::String(s)) if STATES.contains(&s.as_str()) => s.clone(),
        other => {
            return Err(format!(
                "a state that is not one of Connect's ({}): {}",
                STATES.join(", "),
                other
                    .map(|o| short(&o.to_string()))
                    .unwrap_or("none".into())
            ))
        }
    };
    let worker_id = match obj.get("worker_id") {
        Some(Value::String(w)) => w.clone(),
        _ => return Err("a value without a worker_id string".into()),
    };
    let trace = match obj.get("trace") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err("a trace that is not a string".into()),
    };
    let generation = match obj.get("generation") {
        None | Some(Value::Null) => 0,
        Some(g) => g
            .as_i64()
            .and_then(|g| i32::try_from(g).ok())
            .ok_or_else(|| {
                format!(
                    "a generation that is not a 32-bit integer: {}",
                    short(&g.to_string())
                )
            })?,
    };
    // Connect writes a deleted connector's statuses as tombstones; a DESTROYED record means the same.
    if state == "DESTROYED" {
        return Ok(Some((status_key, None)));
    }
    Ok(Some((
        status_key,
        Some(Status {
            state,
            trace,
            worker_id,
            generation,
        }),
    )))
}

/// At most 100 characters of `s`, for messages.
fn short(s: &str) -> String {
    if s.chars().count() <= 100 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(100).collect::<String>())
    }
}

/// Whether a worker (`worker_id`, in group generation `generation`) may replace `existing` with its own status
/// of the same task, as Connect's `putSafe`: a worker of an older generation must not overwrite the status the
/// task's newer owner wrote (a zombie's late FAILED or UNASSIGNED after the task moved).
pub fn can_write_safely(existing: Option<&Status>, worker_id: &str, generation: i32) -> bool {
    existing.is_none_or(|e| e.worker_id == worker_id || e.generation <= generation)
}

#[derive(Debug, Default)]
struct Statuses {
    connector: Option<Status>,
    tasks: BTreeMap<u32, Status>,
}

/// The statuses read from the status topic, kept up to date by a background consumer.
pub struct StatusStore {
    topic: String,
    statuses: Mutex<BTreeMap<String, Statuses>>,
    /// Whether the topic was read to the end it had when reading started.
    ready: AtomicBool,
    stop: AtomicBool,
}

impl StatusStore {
    /// An empty store that reads nothing (unit tests; `apply` fills it).
    pub fn new(topic: &str) -> StatusStore {
        StatusStore {
            topic: topic.to_string(),
            statuses: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        }
    }

    /// Starts reading `topic` from its beginning on a thread of its own (one consumer per worker, assigned
    /// every partition, no group membership), for as long as the worker runs.
    pub fn start(bootstrap: &str, topic: &str) -> Result<Arc<StatusStore>, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            // librdkafka wants a group id even for assigned partitions; nothing joins or commits in it.
            .set("group.id", "fjord-connect-status-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| format!("cannot create a consumer for {bootstrap}: {e}"))?;
        let store = Arc::new(StatusStore::new(topic));
        let s = store.clone();
        std::thread::Builder::new()
            .name("connect-status".into())
            .spawn(move || s.run(consumer))
            .map_err(|e| format!("cannot start the status topic's reader: {e}"))?;
        Ok(store)
    }

    /// Stops the reader (at shutdown).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until the topic was read to the end it had at start; false when it was not in time.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    fn run(&self, consumer: BaseConsumer) {
        let mut ends = loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            match assign(&consumer, &self.topic) {
                Ok(ends) => break ends,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, "cannot read the status topic yet: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        if ends.is_empty() {
            self.ready.store(true, Ordering::SeqCst);
        }
        let mut last_warning: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    self.apply(m.key().unwrap_or_default(), m.payload());
                    let p = m.partition();
                    if ends.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                        ends.remove(&p);
                        if ends.is_empty() {
                            self.ready.store(true, Ordering::SeqCst);
                        }
                    }
                }
                // librdkafka retries by itself; one warning every 30 s at most.
                Some(Err(e))
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) =>
                {
                    tracing::warn!(topic = %self.topic, "reading the status topic failed (retrying): {e}");
                    last_warning = Some(Instant::now());
                }
                Some(Err(_)) => {}
                None if !ends.is_empty() => {
                    crate::topics::drop_reached_ends(&consumer, &mut ends);
                    if ends.is_empty() {
                        self.ready.store(true, Ordering::SeqCst);
                    }
                }
                None => {}
            }
        }
    }

    /// Applies one record of the status topic; a record that is not Connect's status format is skipped with a
    /// warning.
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>) {
        let (key, status) = match parse(key, value) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(why) => {
                tracing::warn!(topic = %self.topic, "a record of the status topic that is not a Connect status is skipped: {why}");
                return;
            }
        };
        let mut statuses = self.statuses.lock().unwrap();
        let name = match &key {
            StatusKey::Connector(n) | StatusKey::Task(n, _) => n.clone(),
        };
        let entry = statuses.entry(name.clone()).or_default();
        match (key, status) {
            (StatusKey::Connector(_), s) => entry.connector = s,
            (StatusKey::Task(_, id), Some(s)) => {
                entry.tasks.insert(id, s);
            }
            (StatusKey::Task(_, id), None) => {
                entry.tasks.remove(&id);
            }
        }
        if entry.connector.is_none() && entry.tasks.is_empty() {
            statuses.remove(&name);
        }
    }

    /// The connector's status and its tasks' (by id), once the topic was read to its end and when it holds the
    /// connector's own status.
    pub fn connector(&self, name: &str) -> Option<(Status, Vec<(u32, Status)>)> {
        if !self.is_ready() {
            return None;
        }
        let statuses = self.statuses.lock().unwrap();
        let s = statuses.get(name)?;
        let c = s.connector.clone()?;
        Some((c, s.tasks.iter().map(|(i, t)| (*i, t.clone())).collect()))
    }

    /// The latest status of one task, once the topic was read to its end.
    pub fn task(&self, name: &str, id: u32) -> Option<Status> {
        if !self.is_ready() {
            return None;
        }
        let statuses = self.statuses.lock().unwrap();
        statuses.get(name)?.tasks.get(&id).cloned()
    }
}

/// Assigns every partition of `topic` from its beginning; returns the end of each non-empty partition now.
fn assign(consumer: &BaseConsumer, topic: &str) -> Result<BTreeMap<i32, i64>, String> {
    let (partitions, ends) = crate::topics::partition_ends(consumer, topic)?;
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("cannot read {topic}: {e}"))?;
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, worker: &str, generation: i32) -> Status {
        Status {
            state: state.into(),
            trace: None,
            worker_id: worker.into(),
            generation,
        }
    }

    #[test]
    fn connects_own_records_are_read() {
        // As an Apache Kafka Connect worker writes them (JsonConverter, schemas.enable=false).
        let v = br#"{"state":"FAILED","trace":"org.apache.kafka.connect.errors.ConnectException: boom\n\tat X","worker_id":"10.0.0.7:8083","generation":42}"#;
        assert_eq!(
            parse(b"status-task-my-conn-2-13", Some(v)).unwrap(),
            Some((
                StatusKey::Task("my-conn-2".into(), 13),
                Some(Status {
                    state: "FAILED".into(),
                    trace: Some(
                        "org.apache.kafka.connect.errors.ConnectException: boom\n\tat X".into()
                    ),
                    worker_id: "10.0.0.7:8083".into(),
                    generation: 42,
                })
            ))
        );
        let v = br#"{"state":"RUNNING","trace":null,"worker_id":"w:1","generation":0}"#;
        assert_eq!(
            parse(b"status-connector-a-b", Some(v)).unwrap(),
            Some((
                StatusKey::Connector("a-b".into()),
                Some(status("RUNNING", "w:1", 0))
            ))
        );
        // Tombstones and DESTROYED remove; KIP-558's topic records are not used.
        assert_eq!(
            parse(b"status-connector-a", None).unwrap(),
            Some((StatusKey::Connector("a".into()), None))
        );
        let v = br#"{"state":"DESTROYED","trace":null,"worker_id":"w:1","generation":3}"#;
        assert_eq!(
            parse(b"status-task-a-0", Some(v)).unwrap(),
            Some((StatusKey::Task("a".into(), 0), None))
        );
        let v = br#"{"topic":{"name":"t","connector":"a","task":0,"discoverTimestamp":1}}"#;
        assert_eq!(parse(b"status-topic-t:connector-a", Some(v)).unwrap(), None);
    }

    #[test]
    fn hostile_records_are_errors_never_panics() {
        let good = br#"{"state":"RUNNING","trace":null,"worker_id":"w:1","generation":1}"#;
        let huge = format!(
            r#"{{"state":"RUNNING","trace":"{}","worker_id":"w","generation":1}}"#,
            "x".repeat(MAX_VALUE_BYTES)
        );
        let deep = "[".repeat(100_000);
        let bad_keys: [&[u8]; 7] = [
            b"",
            b"\xff\xfe",
            b"connector-a",
            b"status-connector-",
            b"status-task-a",
            b"status-task-a-x",
            b"status-task--1",
        ];
        for k in bad_keys {
            assert!(parse(k, Some(good)).is_err(), "{k:?}");
        }
        assert!(parse(b"status-task-a-99999999999", Some(good)).is_err());
        let bad_values: Vec<&[u8]> = vec![
            b"",
            b"not json",
            b"\x00\x01\x02",
            b"null",
            b"[1,2]",
            b"\"RUNNING\"",
            b"{}",
            br#"{"state":"RUNNING"}"#,
            br#"{"state":"BORED","worker_id":"w"}"#,
            br#"{"state":7,"worker_id":"w"}"#,
            br#"{"state":"RUNNING","worker_id":["w"]}"#,
            br#"{"state":"RUNNING","worker_id":"w","trace":{"a":1}}"#,
            br#"{"state":"RUNNING","worker_id":"w","generation":"1"}"#,
            br#"{"state":"RUNNING","worker_id":"w","generation":1.5}"#,
            br#"{"state":"RUNNING","worker_id":"w","generation":4294967296}"#,
            huge.as_bytes(),
            deep.as_bytes(),
        ];
        for v in bad_values {
            let e = parse(b"status-connector-a", Some(v)).unwrap_err();
            assert!(!e.is_empty());
        }
        // Cut short anywhere: an error or (the complete record) a status, never a panic.
        for cut in 0..good.len() {
            assert!(parse(b"status-connector-a", Some(&good[..cut])).is_err());
        }
        assert!(parse(b"status-connector-a", Some(good)).unwrap().is_some());
    }

    #[test]
    fn the_store_keeps_the_latest_status_per_key_and_tombstones_remove() {
        let store = StatusStore::new("t");
        let rec = |state: &str, w: &str, g: i32| {
            format!(r#"{{"state":"{state}","trace":null,"worker_id":"{w}","generation":{g}}}"#)
        };
        store.apply(
            b"status-connector-a",
            Some(rec("RUNNING", "w1", 1).as_bytes()),
        );
        store.apply(b"status-task-a-0", Some(rec("RUNNING", "w1", 1).as_bytes()));
        store.apply(b"status-task-a-0", Some(rec("FAILED", "w2", 2).as_bytes()));
        store.apply(b"status-task-a-1", Some(b"garbage"));
        store.apply(b"garbage", Some(rec("RUNNING", "w1", 1).as_bytes()));
        // Nothing is answered before the topic was read to its end.
        assert!(store.connector("a").is_none());
        store.ready.store(true, Ordering::SeqCst);
        let (c, tasks) = store.connector("a").unwrap();
        assert_eq!(c, status("RUNNING", "w1", 1));
        assert_eq!(tasks, vec![(0, status("FAILED", "w2", 2))]);
        // A task without its connector's status is not an answer.
        store.apply(b"status-task-b-0", Some(rec("RUNNING", "w1", 1).as_bytes()));
        assert!(store.connector("b").is_none());
        assert_eq!(store.task("b", 0), Some(status("RUNNING", "w1", 1)));
        store.apply(b"status-connector-a", None);
        store.apply(b"status-task-a-0", None);
        store.apply(b"status-task-b-0", None);
        assert!(store.connector("a").is_none());
        assert!(store.statuses.lock().unwrap().is_empty());
    }

    #[test]
    fn an_older_generation_does_not_replace_a_newer_owners_task_status() {
        let newer = status("RUNNING", "w2", 5);
        assert!(!can_write_safely(Some(&newer), "w1", 4));
        assert!(can_write_safely(Some(&newer), "w1", 5));
        assert!(can_write_safely(Some(&newer), "w1", 6));
        // Its own status a worker always replaces; nothing stored: anyone writes.
        assert!(can_write_safely(Some(&newer), "w2", 1));
        assert!(can_write_safely(None, "w1", 0));
    }
}
