//! Where the registry's records go: the compacted `_schemas` topic (Confluent's `KafkaStore`), or memory for
//! tests.
//!
//! **Architecture Invariant:** [`Store::write`] returns only after the registry's own reader has applied the
//! record it wrote (the reader reached the record's offset), as Confluent's KafkaStore waits for its offset.
//! A write acknowledged by `acks=all` but not yet read back is not answered, so an answer never describes a
//! state the registry has not got; and state is only ever built by reading the topic.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::registry::apply_raw;
use crate::state::State;

/// How long a write waits for the broker's acknowledgement and then for the reader to apply it (Confluent's
/// `kafkastore.timeout.ms` is 500 ms; a local fsync-per-write broker on a busy machine needs more).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits to read `_schemas` to its end.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(60);

pub enum Store {
    /// Records are applied at once (tests).
    Memory(Arc<RwLock<State>>),
    Kafka(KafkaStore),
}

impl Store {
    pub async fn write(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<()> {
        match self {
            Store::Memory(state) => {
                if apply_raw(state, &key, value.as_deref()) {
                    Ok(())
                } else {
                    Err(Error::Store("the record does not decode".into()))
                }
            }
            Store::Kafka(k) => k.write(key, value).await,
        }
    }
}

/// The `_schemas` topic: a producer (acks=all, idempotent) and a reader task that applies every record to the
/// state and publishes the next offset to apply.
pub struct KafkaStore {
    producer: FutureProducer,
    topic: String,
    /// The offset after the last record applied.
    applied: watch::Receiver<i64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for KafkaStore {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn store_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("{what}: {e}"))
}

impl KafkaStore {
    /// Creates `topic` if missing (one partition, compacted, the broker's default replication), reads it to its
    /// end into `state`, and keeps applying what is written to it.
    pub async fn open(
        bootstrap: &str,
        topic: &str,
        state: Arc<RwLock<State>>,
    ) -> Result<KafkaStore> {
        ensure_topic(bootstrap, topic).await?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("message.timeout.ms", WRITE_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| store_err("cannot create the producer", e))?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            // No group membership: the reader assigns itself the partition; the id only names the client.
            .set(
                "group.id",
                format!("fjord-registry-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| store_err("cannot create the consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| store_err("cannot assign _schemas", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| store_err("cannot assign _schemas", e))?;
        let (tx, applied) = watch::channel(0i64);
        let reader = tokio::spawn(read_loop(consumer, state, tx));
        let store = KafkaStore {
            producer,
            topic: topic.to_string(),
            applied,
            reader,
        };
        // Read to the end the way Confluent's KafkaStore does: write a NOOP and wait until the reader has
        // applied it. Unlike the high watermark, this works whatever the last records are (control batches,
        // compacted away) and proves that writing works before the registry serves.
        let noop = serde_json::to_vec(&crate::records::Key::Noop { magic: 0 })
            .map_err(|e| store_err("noop key", e))?;
        store.write_within(noop, None, INIT_TIMEOUT).await?;
        tracing::info!(topic, "read the schemas topic to its end");
        Ok(store)
    }

    async fn wait_applied(&self, offset: i64, timeout: Duration) -> Result<(), ()> {
        let mut rx = self.applied.clone();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= offset))
            .await
            .map_err(|_| ())?
            .map_err(|_| ())?;
        Ok(())
    }

    pub async fn write(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<()> {
        self.write_within(key, value, WRITE_TIMEOUT).await
    }

    async fn write_within(
        &self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        read_back: Duration,
    ) -> Result<()> {
        let mut record: FutureRecord<'_, Vec<u8>, Vec<u8>> =
            FutureRecord::to(&self.topic).partition(0).key(&key);
        if let Some(v) = &value {
            record = record.payload(v);
        }
        let delivery = self
            .producer
            .send(record, WRITE_TIMEOUT)
            .await
            .map_err(|(e, _)| store_err("cannot write to _schemas", e))?;
        self.wait_applied(delivery.offset + 1, read_back)
            .await
            .map_err(|_| {
                Error::StoreTimeout(format!(
                    "waiting for the registry to read back offset {}",
                    delivery.offset
                ))
            })
    }
}

async fn read_loop(consumer: StreamConsumer, state: Arc<RwLock<State>>, tx: watch::Sender<i64>) {
    loop {
        match consumer.recv().await {
            Ok(m) => {
                if let Some(key) = m.key() {
                    apply_raw(&state, key, m.payload());
                }
                tx.send_replace(m.offset() + 1);
            }
            Err(e) => {
                tracing::warn!("reading _schemas: {e}");
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
