//! `fjord consume TOPIC`: print messages like kafka-console-consumer (value per line by default, key,
//! headers, partition, offset and timestamp on demand) or as one JSON object per line. Follows new messages
//! until interrupted unless told when to stop. Without `--group` it reads every partition (or `--partition`)
//! itself and commits nothing; with `--group` it joins the consumer group, reads the partitions the group
//! assigns it, starts where the group committed and commits as it goes.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::client::{CliError, ClientArgs};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Which records of transactional producers to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// Only committed records, up to the last stable offset (librdkafka's default).
    #[value(name = "read_committed")]
    ReadCommitted,
    /// Every record, including those of aborted and still-open transactions (Kafka's console default).
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

#[derive(Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the earliest message instead of the end (with --group: only where the group has no
    /// committed offset yet).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read, or in --partition).
    #[arg(long, conflicts_with = "group")]
    pub offset: Option<i64>,
    /// Read only this partition.
    #[arg(long, short = 'p', conflicts_with = "group")]
    pub partition: Option<i32>,
    /// Join this consumer group: share the topic's partitions with the group's other members, resume from
    /// its committed offsets, and commit offsets automatically (every 5 s and on exit).
    #[arg(long, short = 'g', value_name = "GROUP")]
    pub group: Option<String>,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// Stop when no message arrives for this many milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Stop once every partition read is at its end (like kcat -e).
    #[arg(long)]
    pub exit_at_end: bool,
    /// text: the value per line (plus the fields asked for); json: one object per line with every field.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[arg(long)]
    pub print_key: bool,
    #[arg(long)]
    pub print_headers: bool,
    #[arg(long)]
    pub print_partition: bool,
    #[arg(long)]
    pub print_offset: bool,
    #[arg(long)]
    pub print_timestamp: bool,
    /// Separator between the printed fields in text format.
    #[arg(long, default_value = "\t")]
    pub separator: String,
    /// read_committed (the default) skips records of aborted transactions and waits for open ones;
    /// read_uncommitted shows every record (like kafka-console-consumer --isolation-level).
    #[arg(long, value_enum)]
    pub isolation_level: Option<Isolation>,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn text_or_hex(
    bytes: Option<&[u8]>,
    name: &str,
    obj: &mut serde_json::Map<String, serde_json::Value>,
) {
    match bytes {
        None => {
            obj.insert(name.into(), serde_json::Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                obj.insert(name.into(), json!(s));
            }
            Err(_) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                obj.insert(format!("{name}_hex"), json!(hex));
            }
        },
    }
}

fn write_message<M: Message>(
    out: &mut impl Write,
    m: &M,
    args: &ConsumeArgs,
) -> std::io::Result<()> {
    let (ts_type, ts) = match m.timestamp() {
        Timestamp::CreateTime(t) => ("CreateTime", t),
        Timestamp::LogAppendTime(t) => ("LogAppendTime", t),
        Timestamp::NotAvailable => ("NoTimestampType", -1),
    };
    let headers: Vec<(String, Option<Vec<u8>>)> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    if args.format == Format::Json {
        let mut obj = serde_json::Map::new();
        obj.insert("topic".into(), json!(m.topic()));
        obj.insert("partition".into(), json!(m.partition()));
        obj.insert("offset".into(), json!(m.offset()));
        obj.insert("timestamp".into(), json!(ts));
        obj.insert("timestamp_type".into(), json!(ts_type));
        text_or_hex(m.key(), "key", &mut obj);
        text_or_hex(m.payload(), "value", &mut obj);
        let hs: Vec<serde_json::Value> = headers
            .iter()
            .map(|(k, v)| {
                let mut o = serde_json::Map::new();
                o.insert("key".into(), json!(k));
                text_or_hex(v.as_deref(), "value", &mut o);
                serde_json::Value::Object(o)
            })
            .collect();
        obj.insert("headers".into(), json!(hs));
        serde_json::to_writer(&mut *out, &serde_json::Value::Object(obj))?;
        return out.write_all(b"\n");
    }
    // Kafka's DefaultMessageFormatter order: timestamp, partition, offset, headers, key, value.
    let sep = args.separator.as_bytes();
    if args.print_timestamp {
        write!(out, "{ts_type}:{ts}")?;
        out.write_all(sep)?;
    }
    if args.print_partition {
        write!(out, "Partition:{}", m.partition())?;
        out.write_all(sep)?;
    }
    if args.print_offset {
        write!(out, "Offset:{}", m.offset())?;
        out.write_all(sep)?;
    }
    if args.print_headers {
        if headers.is_empty() {
            out.write_all(b"NO_HEADERS")?;
        }
        for (i, (k, v)) in headers.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write!(out, "{k}:")?;
            out.write_all(v.as_deref().unwrap_or(b"null"))?;
        }
        out.write_all(sep)?;
    }
    if args.print_key {
        out.write_all(m.key().unwrap_or(b"null"))?;
        out.write_all(sep)?;
    }
    out.write_all(m.payload().unwrap_or(b"null"))?;
    out.write_all(b"\n")
}

/// Runs until a stop condition holds or `interrupted` is set (Ctrl-C).
pub fn run(args: ConsumeArgs, interrupted: Arc<AtomicBool>) -> Result<(), CliError> {
    let mut cfg = args.client.config()?;
    cfg.set(
        "enable.partition.eof",
        if args.exit_at_end { "true" } else { "false" },
    )
    .set("fetch.wait.max.ms", "200");
    if let Some(level) = args.isolation_level {
        cfg.set(
            "isolation.level",
            match level {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        );
    }
    match &args.group {
        Some(group) => cfg
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            // Only printed messages count as consumed: closing the consumer drains its queue, and those
            // messages must not be committed.
            .set("enable.auto.offset.store", "false")
            // Where the group has no committed offset yet.
            .set(
                "auto.offset.reset",
                if args.from_beginning {
                    "earliest"
                } else {
                    "latest"
                },
            ),
        // librdkafka wants a group id even for assigned partitions; nothing is committed under it.
        None => cfg.set("enable.auto.commit", "false").set(
            "group.id",
            format!("fjord-console-consumer-{}", std::process::id()),
        ),
    };
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| CliError::failure(format!("cannot create a consumer: {e}")))?;
    let md = args.client.require_topic(&consumer, &args.topic)?;
    let all: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let partitions = match args.partition {
        Some(p) if !all.contains(&p) => {
            return Err(CliError::failure(format!(
                "topic `{}` has no partition {p} (it has {})",
                args.topic,
                all.len()
            )))
        }
        Some(p) => vec![p],
        None => all,
    };
    if args.group.is_some() {
        consumer
            .subscribe(&[&args.topic])
            .map_err(|e| CliError::failure(format!("cannot subscribe to `{}`: {e}", args.topic)))?;
    } else {
        let start = match (args.offset, args.from_beginning) {
            (Some(o), _) => Offset::Offset(o),
            (None, true) => Offset::Beginning,
            (None, false) => Offset::End,
        };
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(&args.topic, *p, start)
                .map_err(|e| CliError::failure(format!("bad start offset: {e}")))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| CliError::failure(format!("cannot assign partitions: {e}")))?;
    }
    // The partitions --exit-at-end waits for: all of them without a group, the current assignment with one.
    let reading = |consumer: &BaseConsumer| -> Vec<i32> {
        if args.group.is_none() {
            return partitions.clone();
        }
        consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    let mut last_message = Instant::now();
    let mut at_end: HashSet<i32> = HashSet::new();
    let result = loop {
        if interrupted.load(Ordering::Relaxed) {
            break Ok(());
        }
        if args.max_messages.is_some_and(|n| count >= n) {
            break Ok(());
        }
        if args
            .timeout_ms
            .is_some_and(|t| last_message.elapsed() >= Duration::from_millis(t))
        {
            break Ok(());
        }
        if args.exit_at_end {
            let reading = reading(&consumer);
            if !reading.is_empty() && reading.iter().all(|p| at_end.contains(p)) {
                break Ok(());
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                // Flush while idle so a follower sees messages promptly.
                let _ = out.flush();
            }
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                if let Err(e) = write_message(&mut out, &m, &args) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        break Ok(());
                    }
                    break Err(CliError::failure(format!("writing output failed: {e}")));
                }
                if args.group.is_some() {
                    if let Err(e) = consumer.store_offset_from_message(&m) {
                        tracing::warn!(error = %e, "cannot store the offset to commit");
                    }
                }
                count += 1;
                last_message = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
            {
                break Err(crate::client::unknown_topic(&args.topic));
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
            }
        }
    };
    let _ = out.flush();
    eprintln!("Processed a total of {count} messages");
    // Dropping a group member commits the offsets of the messages printed and leaves the group.
    drop(consumer);
    result
}
