//! `fjord produce TOPIC`: every line of standard input (or `--input FILE`) becomes one message, like
//! kafka-console-producer. Lines are sent byte for byte without their trailing newline.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::client::{CliError, ClientArgs, EXIT_UNKNOWN_TOPIC};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Read messages from this file instead of standard input.
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (a line without SEP is an error).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header added to every message, e.g. --header source=import (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Send every message to this partition (default: by key hash, or spread when there is no key).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgements to wait for: all (-1), 1 or 0.
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1", "0"])]
    pub acks: String,
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// How long to wait to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Counts delivery reports; keeps the first failure to report it.
#[derive(Default)]
pub struct Deliveries {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn parse_headers(pairs: &[String]) -> Result<Option<OwnedHeaders>, CliError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut h = OwnedHeaders::new_with_capacity(pairs.len());
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::failure(format!("--header `{p}` is not KEY=VALUE")))?;
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    Ok(Some(h))
}

/// Creates a producer and makes sure the topic exists (the broker may auto-create it on this request).
pub fn producer<C: ProducerContext + 'static>(
    client: &ClientArgs,
    topic: &str,
    context: C,
    settings: &[(&str, String)],
) -> Result<BaseProducer<C>, CliError> {
    let mut cfg = client.config()?;
    for (k, v) in settings {
        cfg.set(*k, v);
    }
    let producer: BaseProducer<C> = cfg
        .create_with_context(context)
        .map_err(|e| CliError::failure(format!("cannot create a producer: {e}")))?;
    let md = producer
        .client()
        .fetch_metadata(Some(topic), client.timeout())
        .map_err(|e| client.transport_error(e))?;
    let t = md.topics().iter().find(|t| t.name() == topic);
    if t.is_none_or(|t| t.error().is_some() || t.partitions().is_empty()) {
        return Err(CliError::new(
            EXIT_UNKNOWN_TOPIC,
            format!(
                "topic `{topic}` does not exist and the broker did not create it (auto.create.topics.enable is off). Create it with `fjord topics create {topic}`."
            ),
        ));
    }
    Ok(producer)
}

pub fn run(args: ProduceArgs) -> Result<(), CliError> {
    let headers = parse_headers(&args.headers)?;
    let settings = [
        ("acks", args.acks.clone()),
        ("compression.type", args.compression.name().to_string()),
        ("linger.ms", args.linger_ms.to_string()),
        ("message.timeout.ms", "60000".to_string()),
    ];
    let producer = producer(&args.client, &args.topic, Deliveries::default(), &settings)?;
    let input: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| CliError::failure(format!("cannot read {}: {e}", path.display())),
        )?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = started;
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut line = Vec::new();
    let mut input = input;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::failure(format!("reading input failed: {e}")))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let (key, value): (Option<&[u8]>, &[u8]) = match &args.key_separator {
            Some(sep) => {
                let sep = sep.as_bytes();
                let at = line
                    .windows(sep.len())
                    .position(|w| w == sep)
                    .ok_or_else(|| {
                        CliError::failure(format!(
                            "line {} has no key separator `{}`",
                            sent + 1,
                            String::from_utf8_lossy(sep)
                        ))
                    })?;
                (Some(&line[..at]), &line[at + sep.len()..])
            }
            None => (None, &line[..]),
        };
        let mut record = BaseRecord::<[u8], [u8]>::to(&args.topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(50));
                    record = r;
                }
                Err((e, _)) => {
                    return Err(CliError::failure(format!(
                        "cannot send message {}: {e}",
                        sent + 1
                    )))
                }
            }
        }
        sent += 1;
        bytes += value.len() as u64;
        producer.poll(Duration::ZERO);
        if progress && last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r{sent} messages sent, {:.1} MB/s   ",
                bytes as f64 / secs / 1e6
            );
            let _ = std::io::stderr().flush();
        }
    }
    let pending = producer.flush(Duration::from_secs(120));
    let ctx = producer.context();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed);
    if progress && sent > 0 {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "\r{delivered} messages delivered in {secs:.1}s ({:.1} MB/s)   ",
            bytes as f64 / secs / 1e6
        );
    }
    if pending.is_err() || failed > 0 || delivered != sent {
        let first = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        return Err(CliError::failure(format!(
            "{} of {sent} messages were not delivered{}",
            sent - delivered,
            first.map(|e| format!(": {e}")).unwrap_or_default()
        )));
    }
    Ok(())
}
