//! `fjord bench`: the project's own load generator, modelled on kafka-producer-perf-test and
//! kafka-consumer-perf-test. Every performance number in the README comes from here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::json;

use crate::client::{CliError, ClientArgs};
use crate::produce::Compression;
use crate::topics::Output;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Produce N messages of S bytes as fast as possible; report throughput and send-to-ack latency.
    ///
    /// Example: fjord bench produce --messages 1000000 --size 100 --acks 1
    Produce(ProduceBench),
    /// Read N messages from the beginning of the topic; report throughput.
    ///
    /// Example: fjord bench consume --messages 1000000
    Consume(ConsumeBench),
    /// Produce at a fixed rate while consuming; report produce-to-consume latency.
    ///
    /// Example: fjord bench e2e --rate 10000 --messages 100000
    E2e(E2eBench),
}

#[derive(Args)]
pub struct Common {
    /// Topic to use; created with --partitions when missing.
    #[arg(long, default_value = "fjord-bench")]
    pub topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct ProduceBench {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value = "1", value_parser = ["all", "-1", "1", "0"])]
    pub acks: String,
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
}

#[derive(Args)]
pub struct ConsumeBench {
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args)]
pub struct E2eBench {
    #[command(flatten)]
    pub common: Common,
    /// Messages per second to produce.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    #[arg(long, default_value = "1", value_parser = ["all", "-1", "1", "0"])]
    pub acks: String,
}

/// Latencies in microseconds, summarised as percentiles in milliseconds.
fn percentiles(mut us: Vec<u64>) -> serde_json::Value {
    if us.is_empty() {
        return json!(null);
    }
    us.sort_unstable();
    let at =
        |q: f64| us[((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1] as f64 / 1000.0;
    json!({"p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": at(1.0)})
}

fn ensure_topic(c: &Common) -> Result<(), CliError> {
    let consumer = c.client.consumer()?;
    let md = c.client.metadata(&consumer, Some(&c.topic))?;
    if md
        .topics()
        .iter()
        .any(|t| t.name() == c.topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = c
        .client
        .config()?
        .create()
        .map_err(|e| CliError::failure(format!("cannot create an admin client: {e}")))?;
    let topic = NewTopic::new(&c.topic, c.partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(c.client.timeout()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(e.to_string()))?;
    let res = rt
        .block_on(admin.create_topics([&topic], &opts))
        .map_err(|e| c.client.transport_error(e))?;
    match res.into_iter().next() {
        Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
        Some(Err((_, code))) => Err(CliError::failure(format!(
            "cannot create bench topic: {code}"
        ))),
        None => Err(CliError::failure("no result creating the bench topic")),
    }
}

/// Records send-to-ack latency of every message.
struct LatencyContext {
    latencies: Mutex<Vec<u64>>,
    failed: AtomicU64,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let us = sent.elapsed().as_micros() as u64;
        self.latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(us);
    }
}

fn report(c: &Common, kind: &str, msgs: u64, elapsed: Duration, extra: serde_json::Value) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mb = msgs as f64 * c.size as f64 / 1e6;
    let doc = json!({
        "bench": kind, "topic": c.topic, "messages": msgs, "size": c.size, "seconds": secs,
        "msgs_per_sec": msgs as f64 / secs, "mb_per_sec": mb / secs, "details": extra,
    });
    match c.output {
        Output::Json => println!("{doc}"),
        Output::Text => {
            println!(
                "{kind}: {msgs} messages of {} B in {secs:.2} s: {:.0} msgs/s, {:.1} MB/s",
                c.size,
                msgs as f64 / secs,
                mb / secs
            );
            if let Some(l) = doc["details"].get("latency") {
                if !l.is_null() {
                    println!(
                        "latency: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
                        l["p50_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"]
                    );
                }
            }
        }
    }
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn send_with_retry<C: ProducerContext<DeliveryOpaque = Box<Instant>>>(
    producer: &BaseProducer<C>,
    topic: &str,
    value: &[u8],
) -> Result<(), CliError> {
    let mut record =
        BaseRecord::<[u8], [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now()))
            .payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(1));
                record = r;
            }
            Err((e, _)) => return Err(CliError::failure(format!("send failed: {e}"))),
        }
    }
}

pub fn produce(b: ProduceBench) -> Result<(), CliError> {
    ensure_topic(&b.common)?;
    let c = &b.common;
    let ctx = LatencyContext {
        latencies: Mutex::new(Vec::with_capacity(c.messages as usize)),
        failed: AtomicU64::new(0),
    };
    let producer: BaseProducer<LatencyContext> = c
        .client
        .config()?
        .set("acks", &b.acks)
        .set("compression.type", b.compression.name())
        .set("linger.ms", b.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(ctx)
        .map_err(|e| CliError::failure(format!("cannot create a producer: {e}")))?;
    let value = payload(c.size);
    let started = Instant::now();
    for _ in 0..c.messages {
        send_with_retry(&producer, &c.topic, &value)?;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(300))
        .map_err(|e| CliError::failure(format!("flush failed: {e}")))?;
    let elapsed = started.elapsed();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(CliError::failure(format!("{failed} messages failed")));
    }
    let lat = std::mem::take(&mut *ctx.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    report(
        c,
        "produce",
        c.messages,
        elapsed,
        json!({"acks": b.acks, "compression": b.compression.name(), "latency": percentiles(lat)}),
    );
    Ok(())
}

pub fn consume(b: ConsumeBench) -> Result<(), CliError> {
    let c = &b.common;
    let consumer: BaseConsumer = c
        .client
        .config()?
        .set("enable.auto.commit", "false")
        .set("group.id", "fjord-bench")
        .set("fetch.max.bytes", "52428800")
        // librdkafka stops fetching once 100k messages are queued and then backs off for a second
        // (fetch.queue.backoff.ms); that would measure the client's pacing, not the broker.
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .map_err(|e| CliError::failure(format!("cannot create a consumer: {e}")))?;
    let md = c.client.require_topic(&consumer, &c.topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        let _ = tpl.add_partition_offset(&c.topic, p.id(), Offset::Beginning);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| CliError::failure(e.to_string()))?;
    let started = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0u64;
    let mut idle = Instant::now();
    while n < c.messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload_len() as u64;
                idle = Instant::now();
            }
            Some(Err(e)) => return Err(CliError::failure(format!("consume failed: {e}"))),
            None if idle.elapsed() > Duration::from_secs(10) => {
                return Err(CliError::failure(format!(
                    "only {n} of {} messages arrived (nothing for 10 s); produce them first with `fjord bench produce`",
                    c.messages
                )))
            }
            None => {}
        }
    }
    report(c, "consume", n, started.elapsed(), json!({"bytes": bytes}));
    Ok(())
}

pub fn e2e(b: E2eBench) -> Result<(), CliError> {
    ensure_topic(&b.common)?;
    let c = &b.common;
    let consumer: BaseConsumer = c
        .client
        .config()?
        .set("enable.auto.commit", "false")
        .set("group.id", "fjord-bench")
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(|e| CliError::failure(format!("cannot create a consumer: {e}")))?;
    let md = c.client.require_topic(&consumer, &c.topic)?;
    // Start exactly at today's end of every partition so only this run's messages are timed.
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        let (_, high) = consumer
            .fetch_watermarks(&c.topic, p.id(), c.client.timeout())
            .map_err(|e| c.client.transport_error(e))?;
        let _ = tpl.add_partition_offset(&c.topic, p.id(), Offset::Offset(high));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| CliError::failure(e.to_string()))?;
    let epoch = Instant::now();
    let size = c.size.max(8);
    let total = c.messages;
    let rate = b.rate.max(1);
    let client = c.client.clone();
    let topic = c.topic.clone();
    let acks = b.acks.clone();
    let producer_thread = std::thread::spawn(move || -> Result<(), CliError> {
        let producer: BaseProducer = client
            .config()?
            .set("acks", &acks)
            .set("linger.ms", "0")
            .create()
            .map_err(|e| CliError::failure(format!("cannot create a producer: {e}")))?;
        let mut value = payload(size);
        for i in 0..total {
            // Pace to the target rate: message i is due at i / rate seconds.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(epoch.elapsed()) {
                std::thread::sleep(wait);
            }
            value[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            let mut record = BaseRecord::<[u8], [u8]>::to(&topic).payload(&value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        producer.poll(Duration::from_millis(1));
                        record = r;
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(60))
            .map_err(|e| CliError::failure(format!("flush failed: {e}")))
    });
    let mut lat = Vec::with_capacity(total as usize);
    let mut idle = Instant::now();
    while (lat.len() as u64) < total {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(p) = m.payload().filter(|p| p.len() >= 8) {
                    let sent = u64::from_be_bytes(p[..8].try_into().unwrap_or([0; 8]));
                    let now = epoch.elapsed().as_nanos() as u64;
                    lat.push(now.saturating_sub(sent) / 1000);
                }
                idle = Instant::now();
            }
            Some(Err(e)) => return Err(CliError::failure(format!("consume failed: {e}"))),
            None if idle.elapsed() > Duration::from_secs(30) => {
                return Err(CliError::failure(format!(
                    "only {} of {total} messages arrived",
                    lat.len()
                )))
            }
            None => {}
        }
    }
    let elapsed = epoch.elapsed();
    producer_thread
        .join()
        .map_err(|_| CliError::failure("producer thread panicked"))??;
    report(
        c,
        "e2e",
        total,
        elapsed,
        json!({"rate": rate, "acks": b.acks, "latency": percentiles(lat)}),
    );
    Ok(())
}
