//! The broker side of consumer groups: owns the [`GroupCoordinator`] state machine, persists what it hands out
//! to the compacted `__consumer_offsets` topic (acks=all durability), replays that topic on start-up, and
//! drives the coordinator's clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fjord_coordinator::consumer_group::ConsumerConfig;
use fjord_coordinator::{GroupConfig, GroupCoordinator, Record};
use fjord_meta::{Command, CommandResult};
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::{now_ms, BrokerState, Error, Result};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the coordinator's clock advances (session expiry, rebalance deadlines).
const TICK: Duration = Duration::from_millis(100);

pub struct Groups {
    coordinator: Mutex<GroupCoordinator>,
    /// Serializes appends to `__consumer_offsets` so that records of one group keep their order.
    write_lock: tokio::sync::Mutex<()>,
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
        }
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
        let now = now_ms();
        for (p, recs) in by_partition {
            let part = state.partitions.get(OFFSETS_TOPIC, p).ok_or_else(|| {
                Error::Internal(format!("{OFFSETS_TOPIC}-{p} is not hosted here"))
            })?;
            let krecs: Vec<KRecord> = recs
                .into_iter()
                .enumerate()
                .map(|(i, r)| KRecord {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: -1,
                    timestamp: now,
                    key: Some(r.key),
                    value: r.value,
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
            .map_err(|e| Error::Internal(format!("encoding {OFFSETS_TOPIC} records: {e}")))?;
            let info = part.append(buf.freeze())?;
            part.wait_durable(info.last_offset + 1).await?;
        }
        Ok(())
    }
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
    let meta = state.meta.state();
    if meta.topics.contains_key(OFFSETS_TOPIC) {
        return Ok(());
    }
    let cfg = group_config(&state.config);
    let brokers: Vec<i32> = meta.brokers.keys().copied().collect();
    let want_rf: usize = state
        .config
        .props
        .get("offsets.topic.replication.factor")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // Kafka refuses to create the topic until enough brokers exist; a single node uses what it has.
    let rf = want_rf.clamp(1, brokers.len().max(1));
    let n = brokers.len().max(1);
    let assignments: Vec<Vec<i32>> = (0..cfg.offsets_partitions as usize)
        .map(|p| (0..rf).map(|j| brokers[(p + j) % n]).collect())
        .collect();
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    let seg = state
        .config
        .props
        .get("offsets.topic.segment.bytes")
        .cloned()
        .unwrap_or_else(|| "104857600".into());
    configs.insert("segment.bytes".to_string(), seg);
    let cmd = Command::CreateTopic {
        name: OFFSETS_TOPIC.into(),
        id: Uuid::new_v4(),
        assignments,
        configs,
        internal: true,
    };
    match state.meta.propose(cmd).await? {
        CommandResult::Ok | CommandResult::TopicAlreadyExists => {}
        other => {
            return Err(Error::Internal(format!(
                "creating {OFFSETS_TOPIC}: {other:?}"
            )))
        }
    }
    tracing::info!(
        partitions = cfg.offsets_partitions,
        "created {OFFSETS_TOPIC}"
    );
    state.sync_partitions()
}

/// Replays every `__consumer_offsets` partition into the coordinator (the coordinator's load).
pub fn load(state: &BrokerState) -> Result<usize> {
    let now = now_ms();
    let mut count = 0usize;
    let parts = state
        .meta
        .state()
        .topics
        .get(OFFSETS_TOPIC)
        .map_or(0, |t| t.partitions.len());
    let mut coordinator = state.groups.lock();
    for p in 0..parts as i32 {
        let Some(part) = state.partitions.get(OFFSETS_TOPIC, p) else {
            continue;
        };
        let (mut offset, hw) = part.offsets();
        while offset < hw {
            let read = part.read(offset, 1 << 20, true)?;
            if read.records.is_empty() {
                break;
            }
            let mut buf: Bytes = read.records;
            let sets = RecordBatchDecoder::decode_all(&mut buf)
                .map_err(|e| Error::Internal(format!("decoding {OFFSETS_TOPIC}-{p}: {e}")))?;
            let mut last = offset;
            for set in sets {
                for r in set.records {
                    last = last.max(r.offset + 1);
                    if r.offset < offset || r.control {
                        continue;
                    }
                    let Some(key) = r.key else { continue };
                    if let Err(e) = coordinator.replay(key, r.value, now) {
                        tracing::warn!(partition = p, offset = r.offset, error = %e, "skipping unreadable {OFFSETS_TOPIC} record");
                    }
                    count += 1;
                }
            }
            if last <= offset {
                break;
            }
            offset = last;
        }
    }
    Ok(count)
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
