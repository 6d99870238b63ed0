//! The broker side of consumer groups: owns the [`GroupCoordinator`] state machine, persists what it hands out
//! to the compacted `__consumer_offsets` topic (acks=all durability), replays that topic on start-up, and
//! drives the coordinator's clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
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
use crate::partition::Origin;
use crate::{now_ms, BrokerState, Error, Result};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the coordinator's clock advances (session expiry, rebalance deadlines).
const TICK: Duration = Duration::from_millis(100);

pub struct Groups {
    coordinator: Mutex<GroupCoordinator>,
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

    /// Writes transactional offset commits (TxnOffsetCommit) as a transactional batch of `producer_id` and
    /// waits until it is durable; they stay pending until the transaction's marker.
    pub async fn persist_txn_offsets(
        &self,
        state: &BrokerState,
        records: Vec<Record>,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<()> {
        let Some(partition) = records.first().map(|r| r.partition) else {
            return Ok(());
        };
        let _guard = self.write_lock.lock().await;
        ensure_offsets_topic(state).await?;
        let pairs: Vec<(Bytes, Option<Bytes>)> =
            records.into_iter().map(|r| (r.key, r.value)).collect();
        let producer = Some((producer_id, producer_epoch));
        append_internal(state, OFFSETS_TOPIC, partition, &pairs, producer).await?;
        for (key, value) in pairs {
            self.add_pending(producer_id, partition, key, value);
        }
        Ok(())
    }

    /// The coordinator, locked. Never hold it across an await.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, GroupCoordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records to their `__consumer_offsets` partitions and waits until they are durable.
    pub async fn persist(&self, state: &BrokerState, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock().await;
        ensure_offsets_topic(state).await?;
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        for (p, recs) in by_partition {
            let pairs: Vec<(Bytes, Option<Bytes>)> =
                recs.into_iter().map(|r| (r.key, r.value)).collect();
            append_internal(state, OFFSETS_TOPIC, p, &pairs, None).await?;
        }
        Ok(())
    }
}

/// How a coordinator writes to its internal topic: one batch of `records` (transactional when it carries a
/// producer) appended to `topic`-`partition`, answered once it is durable.
pub async fn append_internal(
    state: &BrokerState,
    topic: &str,
    partition: i32,
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
) -> Result<()> {
    let part = state
        .partitions
        .get(topic, partition)
        .ok_or_else(|| Error::Internal(format!("{topic}-{partition} is not hosted here")))?;
    let info = part.append_from(encode_batch(records, producer)?, Origin::Coordinator)?;
    part.wait_durable(info.last_offset + 1).await
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
            sequence: -1,
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
    let brokers: Vec<i32> = meta.brokers.keys().copied().collect();
    let want_rf: usize = state
        .config
        .props
        .get(&format!("{prefix}.replication.factor"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // Kafka refuses to create the topic until enough brokers exist; a single node uses what it has.
    let rf = want_rf.clamp(1, brokers.len().max(1));
    let n = brokers.len().max(1);
    let assignments: Vec<Vec<i32>> = (0..partitions.max(1) as usize)
        .map(|p| (0..rf).map(|j| brokers[(p + j) % n]).collect())
        .collect();
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    let seg = state
        .config
        .props
        .get(&format!("{prefix}.segment.bytes"))
        .cloned()
        .unwrap_or_else(|| "104857600".into());
    configs.insert("segment.bytes".to_string(), seg);
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
    tracing::info!(partitions, "created {name}");
    state.sync_partitions()
}

/// Replays every `__consumer_offsets` partition into the coordinator (the coordinator's load).
pub fn load(state: &BrokerState) -> Result<usize> {
    let now = now_ms();
    let mut count = 0usize;
    replay_topic(state, OFFSETS_TOPIC, |p, r| {
        if r.control {
            // A transaction marker: the producer's pending offsets in this partition resolve.
            let commit = r.key.as_deref().is_some_and(|k| k.len() >= 4 && k[3] == 1);
            state.groups.complete_txn(r.producer_id, p, commit);
            return Ok(());
        }
        let Some(key) = r.key else { return Ok(()) };
        if r.transactional {
            state.groups.add_pending(r.producer_id, p, key, r.value);
            return Ok(());
        }
        state
            .groups
            .lock()
            .replay(key, r.value, now)
            .map_err(|e| e.to_string())?;
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// Feeds every record of every partition of an internal topic to `f`, partition by partition, in log order
/// (the load of a coordinator). `f` answers `Err` for a record it cannot read.
///
/// Start-up never stops on a record: a batch that does not decode and a record `f` refuses are skipped with an
/// error naming topic, partition and offset, and counted in `fjord_internal_records_skipped_total{topic}`.
/// Only I/O errors abort the load. Nothing is decompressed here: the broker writes these topics uncompressed,
/// and the bounded decoder lives in fjord-log (not exported), so a compressed batch is skipped as unreadable
/// rather than inflated without a limit.
pub fn replay_topic(
    state: &BrokerState,
    topic: &str,
    mut f: impl FnMut(i32, KRecord) -> std::result::Result<(), String>,
) -> Result<()> {
    let skipped = state
        .metrics
        .internal_records_skipped
        .get_or_create(&crate::metrics::Metrics::topic(topic));
    let skip = |p: i32, offset: i64, error: &str| {
        tracing::error!(
            topic,
            partition = p,
            offset,
            error,
            "skipping an unreadable record of an internal topic"
        );
        skipped.inc();
    };
    let parts = state
        .meta
        .state()
        .topics
        .get(topic)
        .map_or(0, |t| t.partitions.len());
    for p in 0..parts as i32 {
        // An offline partition fails the load rather than leave the coordinator without its state.
        let Some(part) = state.partitions.online(topic, p)? else {
            continue;
        };
        let (mut offset, hw) = part.offsets();
        while offset < hw {
            let read = part.read(offset, 1 << 20, true)?;
            let mut next = offset;
            let mut pos = 0usize;
            for b in fjord_log::batch_headers(&read.records) {
                let Some(end) = pos.checked_add(b.size).filter(|e| *e <= read.records.len()) else {
                    // A length beyond what the log returned: nothing after it in this partition can be framed.
                    skip(p, b.base_offset, "batch length runs past the data read");
                    break;
                };
                let batch = read.records.slice(pos..end);
                pos = end;
                next = b.last_offset + 1;
                // Bounded like every other decompression: a bomb is skipped, never inflated.
                match fjord_log::decode_records_bounded(&mut batch.clone())
                    .map_err(|e| format!("undecodable batch: {e}"))
                {
                    Ok(set) => {
                        for r in set.records.into_iter().filter(|r| r.offset >= offset) {
                            let at = r.offset;
                            if let Err(e) = f(p, r) {
                                skip(p, at, &e);
                            }
                        }
                    }
                    Err(e) => skip(p, b.base_offset, &e),
                }
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
    }
    Ok(())
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
            let mut c = state.groups.lock();
            c.tick(now_ms());
            c.take_records()
        };
        if let Err(e) = state.groups.persist(&state, records).await {
            tracing::error!(error = %e, "persisting group state failed");
        }
    }
}
