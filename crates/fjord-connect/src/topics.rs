//! Connect's internal topics (distributed mode): creating them compacted, reading one to its end, and writing
//! records that every in-sync replica acknowledged. Keys and values are Connect's own (strings and
//! schemaless JSON, as its `JsonConverter` with `schemas.enable=false` writes them), so Apache Kafka Connect and
//! Fjord can read each other's records.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// How long reading a topic to its end, or creating one, may take.
pub const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write to an internal topic may wait for its acknowledgements.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A record of an internal topic: its key and its value (None: a tombstone).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// Creates `topic` compacted with `partitions` partitions (`replication` -1: the cluster's default) unless it
/// exists. An existing topic is used as it is.
pub async fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("cannot create an admin client for {bootstrap}: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(TOPIC_TIMEOUT));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| format!("cannot create the topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("cannot create the topic {t}: {e}")),
        }
    }
    Ok(())
}

/// The partitions of `topic` and the end offset now of each one that holds records (low < high watermark).
pub(crate) fn partition_ends(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<(Vec<i32>, BTreeMap<i32, i64>), String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TOPIC_TIMEOUT)
        .map_err(|e| format!("cannot read the metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!(
            "the topic {topic} does not exist or has no partitions"
        ));
    }
    let mut ends = BTreeMap::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, TOPIC_TIMEOUT)
            .map_err(|e| format!("cannot read the end offsets of {topic}-{p}: {e}"))?;
        if high > low {
            ends.insert(*p, high);
        }
    }
    Ok((partitions, ends))
}

/// Forgets the partitions whose position reached their end: compaction may have removed the records just before
/// the end, so no record at `end - 1` ever arrives.
pub(crate) fn drop_reached_ends(consumer: &BaseConsumer, ends: &mut BTreeMap<i32, i64>) {
    if let Ok(pos) = consumer.position() {
        for e in pos.elements() {
            if let (Offset::Offset(o), Some(end)) = (e.offset(), ends.get(&e.partition())) {
                if o >= *end {
                    ends.remove(&e.partition());
                }
            }
        }
    }
}

/// Every record of `topic` from the beginning to its end as it was when reading started, partition by
/// partition in offset order (the last record of a key in a partition wins). Blocking.
pub fn read_all(bootstrap: &str, topic: &str) -> Result<Vec<Record>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // librdkafka wants a group id even for assigned partitions; nothing joins or commits in it.
        .set("group.id", "fjord-connect-internal-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("cannot create a consumer for {bootstrap}: {e}"))?;
    let deadline = Instant::now() + TOPIC_TIMEOUT;
    // The end of each partition now: reading stops there.
    let (_, mut ends) = partition_ends(&consumer, topic)?;
    let mut assignment = TopicPartitionList::new();
    for p in ends.keys() {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("cannot read {topic}: {e}"))?;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "reading {topic} to its end took longer than {TOPIC_TIMEOUT:?}; is the cluster healthy?"
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let p = m.partition();
                by_partition.entry(p).or_default().push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                ));
                if ends.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&p);
                }
            }
            Some(Err(e)) => return Err(format!("reading {topic} failed: {e}")),
            None => {
                // Compaction may have removed the records just before the end: the position tells.
                drop_reached_ends(&consumer, &mut ends);
            }
        }
    }
    Ok(by_partition.into_values().flatten().collect())
}

/// Writes records to an internal topic and waits until every one is acknowledged by all in-sync replicas.
pub struct TopicWriter {
    /// The current producer. An idempotent producer that hit a fatal error (librdkafka's `fatal_error`: e.g.
    /// an out-of-order sequence after the cluster lost acknowledged records) refuses every later write, so it
    /// is replaced after the write that found it; the next write goes through a new one.
    producer: std::sync::Mutex<FutureProducer>,
    config: ClientConfig,
    pub topic: String,
}

impl TopicWriter {
    pub fn new(bootstrap: &str, topic: &str) -> Result<TopicWriter, String> {
        Self::with_timeout(bootstrap, topic, WRITE_TIMEOUT)
    }

    /// A writer whose writes fail after `timeout` (tests: a cluster that is away, quickly).
    pub(crate) fn with_timeout(
        bootstrap: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<TopicWriter, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("client.id", format!("connect-{topic}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Keys land in the partition Java's producer picks (murmur2), as Apache Connect's workers write them.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "1")
            // A write (and the REST request waiting for it) fails within this bound when the cluster is away,
            // instead of librdkafka's 5 minutes.
            .set("message.timeout.ms", timeout.as_millis().to_string());
        let producer = config
            .create()
            .map_err(|e| format!("cannot create a producer for {bootstrap}: {e}"))?;
        Ok(TopicWriter {
            producer: std::sync::Mutex::new(producer),
            config,
            topic: topic.to_string(),
        })
    }

    /// Sends `records` in order and waits for every acknowledgement; the first failure is the error.
    pub async fn write(&self, records: Vec<Record>) -> Result<(), String> {
        let producer = self.producer.lock().unwrap().clone();
        let result = Self::send_all(&producer, &self.topic, &records).await;
        match (result, producer.client().fatal_error()) {
            (Ok(()), _) => Ok(()),
            (Err(e), None) => Err(e),
            (Err(e), Some((code, why))) => {
                let renewed = match self.config.create::<FutureProducer>() {
                    Ok(fresh) => {
                        *self.producer.lock().unwrap() = fresh;
                        "it was replaced: the next write uses a new producer".to_string()
                    }
                    Err(c) => format!("a new producer could not be created ({c})"),
                };
                tracing::warn!(topic = %self.topic, "the producer of {} hit a fatal error ({code:?}: {why}); {renewed}", self.topic);
                Err(format!(
                    "{e} (the producer hit a fatal error, {code:?}: {why}; {renewed})"
                ))
            }
        }
    }

    async fn send_all(
        producer: &FutureProducer,
        topic: &str,
        records: &[Record],
    ) -> Result<(), String> {
        let mut pending = Vec::with_capacity(records.len());
        for (key, value) in records {
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key);
            if let Some(v) = value {
                r = r.payload(v);
            }
            match producer.send_result(r) {
                Ok(f) => pending.push(f),
                Err((e, _)) => return Err(format!("writing to {topic} failed: {e}")),
            }
        }
        for f in pending {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(format!("writing to {topic} failed: {e}")),
                Err(_) => return Err(format!("the producer of {topic} was closed")),
            }
        }
        Ok(())
    }
}
