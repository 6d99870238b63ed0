//! `fjord consume TOPIC...`: print messages like kafka-console-consumer (value per line by default, key,
//! headers, partition, offset and timestamp on demand) or as one JSON object per line. Follows new messages
//! until interrupted unless told when to stop. Without `--group` it reads every partition (or `--partition`)
//! itself and commits nothing; with `--group` it joins the consumer group, reads the partitions the group
//! assigns it, starts where the group committed and commits as it goes.
//!
//! With a group, the position of every assigned partition is committed, not only of those a message was
//! printed from (as Kafka's consumer does): a partition that had nothing to print still has a position (where
//! the group's committed offset or the start option put it), and without a commit a later run would start
//! it from `latest` and skip what arrived in between.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{ArgAction, Args, ValueEnum};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::client::{note, CliContext, CliError, ClientArgs};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value per line, plus the fields asked for with --print-*.
    Text,
    /// One JSON object per line with every field.
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
    /// Topic(s) to read; also --topic. Several topics are read together.
    #[arg(value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// A topic to read, as kafka-console-consumer and kcat spell it (repeatable).
    #[arg(long = "topic", short = 't', value_name = "TOPIC")]
    pub topic_flags: Vec<String>,
    /// Also read every topic whose whole name matches this regular expression (like kafka-console-consumer
    /// --include; internal topics starting with `__` only if the expression names them). Matched once at
    /// start.
    #[arg(long, value_name = "REGEX")]
    pub include: Option<String>,
    /// Start at the earliest message instead of the end (with --group: only where the group has no
    /// committed offset yet). Same as --offset earliest.
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    pub from_beginning: bool,
    /// Where to start in each partition: earliest, latest (the default), an offset N, -N for the last N
    /// messages of each partition (like kcat -o -N), @MS for the first message at or after MS milliseconds
    /// since 1970, or a date-time such as 2026-11-25T10:00:00Z. Not with --group, which starts where the
    /// group committed (use --from-beginning for partitions it has not committed yet).
    #[arg(
        long,
        short = 'o',
        value_name = "WHERE",
        allow_hyphen_values = true,
        conflicts_with = "group"
    )]
    pub offset: Option<String>,
    /// Start at the first message at or after this time: milliseconds since 1970 or a date-time such as
    /// 2026-11-25T10:00:00Z (no zone: UTC). Same as --offset @MS.
    #[arg(long, value_name = "MS|DATETIME", conflicts_with_all = ["offset", "group"])]
    pub from_timestamp: Option<String>,
    /// Read only this partition (of each topic).
    #[arg(
        long,
        short = 'p',
        conflicts_with = "group",
        allow_negative_numbers = true
    )]
    pub partition: Option<i32>,
    /// Join this consumer group: share the topics' partitions with the group's other members, resume from
    /// its committed offsets, and commit the position of every assigned partition (every 5 s, and on exit,
    /// Ctrl-C or SIGTERM).
    #[arg(long, short = 'g', value_name = "GROUP")]
    pub group: Option<String>,
    /// Stop after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    pub max_messages: Option<u64>,
    /// Stop when no message arrives for this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Stop once every partition read is at its end (like kcat -e).
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// text: the value per line (plus the fields asked for); json: one object per line with every field.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print each message's key before its value (`null` for none).
    #[arg(long)]
    pub print_key: bool,
    /// Print each message's value (the default; --print-value false prints only the other fields).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub print_value: bool,
    /// Print each message's headers as k:v,k:v (NO_HEADERS when it has none).
    #[arg(long)]
    pub print_headers: bool,
    /// Print the partition as Partition:P.
    #[arg(long)]
    pub print_partition: bool,
    /// Print the offset as Offset:N.
    #[arg(long)]
    pub print_offset: bool,
    /// Print the timestamp as CreateTime:MS or LogAppendTime:MS.
    #[arg(long)]
    pub print_timestamp: bool,
    /// Separator between the printed fields in text format (kafka-console-consumer's key.separator).
    #[arg(long, default_value = "\t", value_name = "SEP")]
    pub separator: String,
    /// kafka-console-consumer's formatter properties: print.key, print.value, print.timestamp,
    /// print.partition, print.offset, print.headers (true|false), key.separator, line.separator,
    /// null.literal (repeatable).
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// A client property, as in kafka-console-consumer; the same as -X (repeatable).
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    pub consumer_properties: Vec<String>,
    /// read_committed (the default) skips records of aborted transactions and waits for open ones;
    /// read_uncommitted shows every record (like kafka-console-consumer --isolation-level).
    #[arg(long, value_enum)]
    pub isolation_level: Option<Isolation>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[cfg(feature = "registry")]
    #[command(flatten)]
    pub schema: crate::formats::ConsumeFormatArgs,
}

/// Where reading starts in a partition without a committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(i64),
    /// The last N messages.
    Last(i64),
    /// The first message at or after this many milliseconds since 1970.
    Time(i64),
}

impl StartAt {
    pub fn parse(s: &str) -> Result<StartAt, CliError> {
        let bad = |why: String| CliError::bad_args(format!("--offset {s}: {why}"));
        match s.trim() {
            "earliest" | "beginning" | "start" => Ok(StartAt::Earliest),
            "latest" | "end" => Ok(StartAt::Latest),
            t if t.starts_with('@') => crate::timespec::parse_time_ms(&t[1..])
                .map(StartAt::Time)
                .map_err(bad),
            t if t.starts_with('-') && t.len() > 1 && t[1..].bytes().all(|b| b.is_ascii_digit()) => {
                match t[1..].parse::<i64>() {
                    Ok(n) if n > 0 => Ok(StartAt::Last(n)),
                    _ => Err(bad("-N wants N of 1 or more (the last N messages)".into())),
                }
            }
            t if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() => t
                .parse()
                .map(StartAt::Offset)
                .map_err(|_| bad("the offset is too large".into())),
            t if t.contains('-') && t.as_bytes().first().is_some_and(u8::is_ascii_digit) => {
                crate::timespec::parse_time_ms(t)
                    .map(StartAt::Time)
                    .map_err(bad)
            }
            _ => Err(bad(
                "expected earliest, latest, an offset N, -N (the last N), @MS or a date-time like 2026-11-25T10:00:00Z"
                    .into(),
            )),
        }
    }

    /// The offset to start `partition` at, asking the broker where the option depends on the log.
    fn resolve<C: ConsumerContext>(
        self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<Offset, KafkaError> {
        Ok(match self {
            StartAt::Earliest => {
                Offset::Offset(consumer.fetch_watermarks(topic, partition, timeout)?.0)
            }
            StartAt::Latest => {
                Offset::Offset(consumer.fetch_watermarks(topic, partition, timeout)?.1)
            }
            StartAt::Offset(n) => Offset::Offset(n),
            StartAt::Last(n) => {
                let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
                Offset::Offset(high.saturating_sub(n).max(low))
            }
            StartAt::Time(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(ms))?;
                let found = consumer.offsets_for_times(tpl, timeout)?;
                match found.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
                    // No message that late: start at the end, where the next one will be.
                    _ => Offset::Offset(consumer.fetch_watermarks(topic, partition, timeout)?.1),
                }
            }
        })
    }
}

/// The text format, decided once: which fields, which separators.
struct TextFormat {
    timestamp: bool,
    partition: bool,
    offset: bool,
    headers: bool,
    key: bool,
    value: bool,
    separator: Vec<u8>,
    line_end: Vec<u8>,
    null: Vec<u8>,
}

impl TextFormat {
    fn new(args: &ConsumeArgs) -> Result<TextFormat, CliError> {
        let mut f = TextFormat {
            timestamp: args.print_timestamp,
            partition: args.print_partition,
            offset: args.print_offset,
            headers: args.print_headers,
            key: args.print_key,
            value: args.print_value,
            separator: args.separator.as_bytes().to_vec(),
            line_end: b"\n".to_vec(),
            null: b"null".to_vec(),
        };
        for p in &args.properties {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| CliError::bad_args(format!("--property `{p}` is not KEY=VALUE")))?;
            let flag = |v: &str| -> Result<bool, CliError> {
                match v.trim() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(CliError::bad_args(format!(
                        "--property {k}={v}: expected true or false"
                    ))),
                }
            };
            match k.trim() {
                "print.key" => f.key = flag(v)?,
                "print.value" => f.value = flag(v)?,
                "print.timestamp" => f.timestamp = flag(v)?,
                "print.partition" => f.partition = flag(v)?,
                "print.offset" => f.offset = flag(v)?,
                "print.headers" => f.headers = flag(v)?,
                "key.separator" => f.separator = unescape(v),
                "line.separator" => f.line_end = unescape(v),
                "null.literal" => f.null = v.as_bytes().to_vec(),
                other => {
                    return Err(CliError::bad_args(format!(
                        "--property {other}: not a formatter property; known: print.key, print.value, print.timestamp, print.partition, print.offset, print.headers, key.separator, line.separator, null.literal (client properties go in --consumer-property or -X)"
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Only the value: the common case, written without looking at anything else.
    fn value_only(&self) -> bool {
        self.value && !(self.timestamp || self.partition || self.offset || self.headers || self.key)
    }

    /// `key` and `value` are the message's, or what `--key-format`/`--value-format` decoded them to.
    fn write<M: Message>(
        &self,
        out: &mut impl Write,
        m: &M,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> std::io::Result<()> {
        // Kafka's DefaultMessageFormatter order: timestamp, partition, offset, headers, key, value.
        let mut first = true;
        let mut field = |out: &mut dyn Write| -> std::io::Result<()> {
            if !std::mem::take(&mut first) {
                out.write_all(&self.separator)?;
            }
            Ok(())
        };
        if self.timestamp {
            field(out)?;
            match m.timestamp() {
                Timestamp::CreateTime(t) => write!(out, "CreateTime:{t}")?,
                Timestamp::LogAppendTime(t) => write!(out, "LogAppendTime:{t}")?,
                Timestamp::NotAvailable => out.write_all(b"NO_TIMESTAMP")?,
            }
        }
        if self.partition {
            field(out)?;
            write!(out, "Partition:{}", m.partition())?;
        }
        if self.offset {
            field(out)?;
            write!(out, "Offset:{}", m.offset())?;
        }
        if self.headers {
            field(out)?;
            match m.headers() {
                Some(hs) if hs.count() > 0 => {
                    for (i, h) in hs.iter().enumerate() {
                        if i > 0 {
                            out.write_all(b",")?;
                        }
                        out.write_all(h.key.as_bytes())?;
                        out.write_all(b":")?;
                        out.write_all(h.value.unwrap_or(&self.null))?;
                    }
                }
                _ => out.write_all(b"NO_HEADERS")?,
            }
        }
        if self.key {
            field(out)?;
            out.write_all(key.unwrap_or(&self.null))?;
        }
        if self.value {
            field(out)?;
            out.write_all(value.unwrap_or(&self.null))?;
        }
        out.write_all(&self.line_end)
    }
}

/// `\t`, `\n`, `\r` and `\\` as kafka-console-consumer users write separators on a command line.
fn unescape(s: &str) -> Vec<u8> {
    s.replace("\\t", "\t")
        .replace("\\n", "\n")
        .replace("\\r", "\r")
        .replace("\\\\", "\\")
        .into_bytes()
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

/// Stores, for the group to commit, the position after the last record written to each partition's output
/// (call only after the output was flushed without error). A partition revoked meanwhile refuses; its next
/// owner then reads those records again.
fn store_flushed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    unflushed: &mut Vec<(String, i32, i64)>,
) {
    for (topic, partition, offset) in unflushed.drain(..) {
        // librdkafka stores `offset + 1`, the next record to read.
        if let Err(e) = consumer.store_offset(&topic, partition, offset) {
            tracing::debug!(error = %e, topic, partition, "cannot store the offset to commit");
        }
    }
}

/// A field `--key-format`/`--value-format` decoded (JSON text, `None` for a null field), or `None` when the
/// field is not decoded.
type Decoded<'a> = Option<Option<&'a [u8]>>;

/// `decoded`: the key and value as `--key-format`/`--value-format` decoded them, put into the object as
/// JSON rather than as a string.
fn write_json<M: Message>(
    out: &mut impl Write,
    m: &M,
    decoded: (Decoded<'_>, Decoded<'_>),
) -> std::io::Result<()> {
    let (ts_type, ts) = match m.timestamp() {
        Timestamp::CreateTime(t) => ("CreateTime", t),
        Timestamp::LogAppendTime(t) => ("LogAppendTime", t),
        Timestamp::NotAvailable => ("NoTimestampType", -1),
    };
    let mut obj = serde_json::Map::new();
    obj.insert("topic".into(), json!(m.topic()));
    obj.insert("partition".into(), json!(m.partition()));
    obj.insert("offset".into(), json!(m.offset()));
    obj.insert("timestamp".into(), json!(ts));
    obj.insert("timestamp_type".into(), json!(ts_type));
    let as_json = |b: Option<&[u8]>| {
        b.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    match decoded.0 {
        Some(k) => {
            obj.insert("key".into(), as_json(k));
        }
        None => text_or_hex(m.key(), "key", &mut obj),
    }
    match decoded.1 {
        Some(v) => {
            obj.insert("value".into(), as_json(v));
        }
        None => text_or_hex(m.payload(), "value", &mut obj),
    }
    let hs: Vec<serde_json::Value> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let mut o = serde_json::Map::new();
                    o.insert("key".into(), json!(h.key));
                    text_or_hex(h.value, "value", &mut o);
                    serde_json::Value::Object(o)
                })
                .collect()
        })
        .unwrap_or_default();
    obj.insert("headers".into(), json!(hs));
    serde_json::to_writer(&mut *out, &serde_json::Value::Object(obj))?;
    out.write_all(b"\n")
}

/// The consumer's context: librdkafka's lines mapped ([`CliContext`]) and, in a group, the start position
/// of every partition assigned decided here, so that it can be committed even if nothing is printed from it.
struct ConsumeContext {
    cli: CliContext,
    start: StartAt,
    timeout: Duration,
    /// Where each partition read started (decided at assignment): its position until a message from it
    /// is returned.
    starts: Mutex<HashMap<(String, i32), i64>>,
}

impl ConsumeContext {
    fn record_starts(&self, tpl: &TopicPartitionList) {
        let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                starts.insert((e.topic().to_string(), e.partition()), o);
            }
        }
    }
}

impl ClientContext for ConsumeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.cli.log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.cli.error(error, reason);
    }
}

impl ConsumerContext for ConsumeContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Kafka's consumer knows the position of every assigned partition from the start: the
                // committed offset, or where the reset policy puts it. librdkafka knows it only once a
                // message is returned, so it is decided here and assigned explicitly.
                let positions = self.positions(consumer, tpl);
                // In place: `tpl` belongs to librdkafka and must not be replaced (dropped).
                for e in positions.iter().flat_map(|p| p.elements()) {
                    let _ = tpl.set_partition_offset(e.topic(), e.partition(), e.offset());
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    self.cli.consumer_error(&e);
                    return;
                }
                // Stored offsets are what the group commits (every 5 s and on close).
                if let Some(p) = positions {
                    self.record_starts(&p);
                    if let Err(e) = consumer.store_offsets(&p) {
                        tracing::debug!(error = %e, "cannot store the start positions");
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Commit the positions of the partitions leaving, so their next owner starts there.
                if tpl.count() > 0 {
                    let _ = consumer.commit_consumer_state(CommitMode::Sync);
                }
                let _ = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
            }
            other => {
                self.cli
                    .consumer_error(&KafkaError::Rebalance(RDKafkaErrorCode::from(other)));
                let _ = consumer.unassign();
            }
        }
    }
}

impl ConsumeContext {
    /// The start position of each partition in `tpl`: the group's committed offset, else the start option
    /// resolved against the log. `None` if the broker could not say (librdkafka then decides as usual).
    fn positions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Option<TopicPartitionList> {
        let committed = consumer.committed_offsets(tpl.clone(), self.timeout).ok()?;
        let mut out = TopicPartitionList::new();
        for e in committed.elements() {
            let at = match e.offset() {
                Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                _ => self
                    .start
                    .resolve(consumer, e.topic(), e.partition(), self.timeout)
                    .ok()?,
            };
            out.add_partition_offset(e.topic(), e.partition(), at)
                .ok()?;
        }
        Some(out)
    }
}

/// The topics to read: the named ones (each must exist) and those `--include` matches.
fn topics_to_read(
    args: &ConsumeArgs,
    md: &rdkafka::metadata::Metadata,
) -> Result<Vec<(String, Vec<i32>)>, CliError> {
    let mut names: Vec<String> = args
        .topics
        .iter()
        .chain(&args.topic_flags)
        .cloned()
        .collect();
    let mut seen = HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let partitions_of = |name: &str| -> Option<Vec<i32>> {
        md.topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
    };
    let mut out = Vec::new();
    for n in &names {
        let ps = partitions_of(n).ok_or_else(|| crate::client::unknown_topic(n))?;
        out.push((n.clone(), ps));
    }
    if let Some(re) = &args.include {
        let whole = regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
            CliError::bad_args(format!("--include `{re}` is not a regular expression: {e}"))
        })?;
        let mut matched: Vec<&str> = md
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|n| whole.is_match(n) && (!n.starts_with("__") || re.starts_with("__")))
            .filter(|n| !seen.contains(*n))
            .collect();
        matched.sort_unstable();
        for n in matched {
            if let Some(ps) = partitions_of(n) {
                out.push((n.to_string(), ps));
            }
        }
        if out.is_empty() {
            return Err(CliError::new(
                crate::client::EXIT_UNKNOWN_TOPIC,
                format!("no topic matches --include `{re}`. List topics with `fjord topics list`."),
            ));
        }
    }
    if out.is_empty() {
        return Err(CliError::bad_args(
            "name a topic to read: fjord consume TOPIC (or --topic TOPIC, or --include REGEX)",
        ));
    }
    Ok(out)
}

fn start_at(args: &ConsumeArgs) -> Result<StartAt, CliError> {
    if let Some(t) = &args.from_timestamp {
        return crate::timespec::parse_time_ms(t)
            .map(StartAt::Time)
            .map_err(|why| CliError::bad_args(format!("--from-timestamp {why}")));
    }
    match (&args.offset, args.from_beginning) {
        (Some(o), _) => StartAt::parse(o),
        (None, true) => Ok(StartAt::Earliest),
        (None, false) => Ok(StartAt::Latest),
    }
}

/// Runs until a stop condition holds or `interrupted` is set (Ctrl-C, SIGTERM). Exits with 141 (as if by
/// SIGPIPE) when the reader of standard output goes away, after committing what was printed.
pub fn run(args: ConsumeArgs, interrupted: Arc<AtomicBool>) -> Result<(), CliError> {
    if args.partition.is_some_and(|p| p < 0) {
        return Err(CliError::bad_args("--partition must be 0 or more"));
    }
    let start = start_at(&args)?;
    let text = TextFormat::new(&args)?;
    #[cfg(feature = "registry")]
    let mut decoders = crate::formats::Decoders::new(&args.schema)?;
    // Records --key-format/--value-format could not decode: reported one by one, counted at the end.
    #[allow(unused_mut)]
    let mut undecodable = 0u64;
    let mut settings: Vec<(&str, String)> = vec![
        (
            "enable.partition.eof",
            if args.exit_at_end { "true" } else { "false" }.into(),
        ),
        ("fetch.wait.max.ms", "200".into()),
        // librdkafka stops fetching at 100k queued messages and then waits fetch.queue.backoff.ms (1 s) to
        // fetch again; a console consumer printing as fast as it can would spend most of its time waiting.
        ("queued.min.messages", "1000000".into()),
        ("fetch.queue.backoff.ms", "1".into()),
    ];
    if let Some(level) = args.isolation_level {
        settings.push((
            "isolation.level",
            match level {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            }
            .into(),
        ));
    }
    match &args.group {
        Some(group) => settings.extend([
            ("group.id", group.clone()),
            ("enable.auto.commit", "true".into()),
            // Only printed messages count as consumed: closing the consumer drains its queue, and those
            // messages must not be committed.
            ("enable.auto.offset.store", "false".into()),
            // Where the rebalance callback could not ask the broker (it resolves the start itself).
            (
                "auto.offset.reset",
                if start == StartAt::Earliest {
                    "earliest"
                } else {
                    "latest"
                }
                .into(),
            ),
        ]),
        // librdkafka wants a group id even for assigned partitions; nothing is committed under it.
        None => settings.extend([
            ("enable.auto.commit", "false".into()),
            (
                "group.id",
                format!("fjord-console-consumer-{}", std::process::id()),
            ),
        ]),
    };
    let cfg = args.client.config_with(
        &settings,
        &[("--consumer-property", &args.consumer_properties)],
    )?;
    let context = ConsumeContext {
        cli: args.client.context(),
        start,
        timeout: args.client.timeout(),
        starts: Mutex::new(HashMap::new()),
    };
    let consumer: BaseConsumer<ConsumeContext> = cfg
        .create_with_context(context)
        .map_err(|e| crate::client::creation_error("consumer", e))?;
    let md = args.client.metadata(&consumer, None)?;
    let topics = topics_to_read(&args, &md)?;
    // The partitions --exit-at-end waits for.
    let mut reading: Vec<(String, i32)> = Vec::new();
    for (t, ps) in &topics {
        match args.partition {
            Some(p) if !ps.contains(&p) => {
                return Err(CliError::failure(format!(
                    "topic `{t}` has no partition {p} (it has {})",
                    ps.len()
                )))
            }
            Some(p) => reading.push((t.clone(), p)),
            None => reading.extend(ps.iter().map(|p| (t.clone(), *p))),
        }
    }
    if args.group.is_some() {
        let names: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| CliError::failure(format!("cannot subscribe: {}", plain(&e))))?;
    } else {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &reading {
            let at = start
                .resolve(&consumer, t, *p, args.client.timeout())
                .map_err(|e| args.client.transport_error(e))?;
            tpl.add_partition_offset(t, *p, at)
                .map_err(|e| CliError::bad_args(format!("bad start offset: {}", plain(&e))))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| CliError::failure(format!("cannot assign partitions: {}", plain(&e))))?;
        consumer.context().record_starts(&tpl);
    }
    let single_topic = topics.len() == 1;
    // In a group, --exit-at-end waits for the current assignment.
    let assigned = |consumer: &BaseConsumer<ConsumeContext>| -> Vec<(String, i32)> {
        if args.group.is_none() {
            return reading.clone();
        }
        consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default()
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let value_only = args.format == Format::Text && text.value_only();
    let mut count = 0u64;
    let max = args.max_messages.unwrap_or(u64::MAX);
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_message = Instant::now();
    let mut at_end: HashSet<(String, i32)> = HashSet::new();
    let mut check_end = false;
    let mut pipe_closed = false;
    let mut result = Ok(());
    let mut ctx_err: Option<CliError> = None;
    // With a group, what the group commits (every 5 s, at a revocation, on exit) is only what reached the
    // output: the offset of each partition's last written record is stored once the output was flushed
    // without error. A record still in the buffer when the process dies, or lost to a full disk or a closed
    // pipe, is read again by the group, never skipped.
    let mut unflushed: Vec<(String, i32, i64)> = Vec::new();
    let mut last_flush = Instant::now();
    while count < max && !interrupted.load(Ordering::Relaxed) {
        if idle_limit.is_some_and(|t| last_message.elapsed() >= t) {
            break;
        }
        if check_end {
            check_end = false;
            let now = assigned(&consumer);
            if !now.is_empty() && now.iter().all(|tp| at_end.contains(tp)) {
                break;
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                // Flush while idle so a follower sees messages promptly.
                if let Err(e) = out.flush() {
                    pipe_closed = e.kind() == std::io::ErrorKind::BrokenPipe;
                    if !pipe_closed {
                        result = Err(CliError::failure(format!("writing output failed: {e}")));
                    }
                    break;
                }
                store_flushed(&consumer, &mut unflushed);
                last_flush = Instant::now();
                // A group's assignment may have shrunk to partitions already at their end.
                check_end = !at_end.is_empty();
            }
            Some(Ok(m)) => {
                if !at_end.is_empty() {
                    let p = m.partition();
                    at_end.retain(|(t, q)| !(*q == p && (single_topic || t == m.topic())));
                }
                #[cfg(feature = "registry")]
                let decoded = if decoders.any() {
                    let key = if text.key || args.format == Format::Json {
                        decoders.key(m.key())
                    } else {
                        Ok(None)
                    };
                    match key.and_then(|k| Ok((k, decoders.value(m.payload())?))) {
                        Ok(kv) => Some(kv),
                        Err(crate::formats::DecodeError::Stop(e)) => {
                            // Not skipped: the record is neither printed nor stored for the group to commit,
                            // so that a later run reads it once the registry answers again.
                            ctx_err = Some(CliError::new(
                                e.code,
                                format!(
                                    "{}; stopped before {} partition {} offset {}, which a rerun reads again",
                                    e.message,
                                    m.topic(),
                                    m.partition(),
                                    m.offset()
                                ),
                            ));
                            break;
                        }
                        Err(crate::formats::DecodeError::Undecodable(e)) => {
                            undecodable += 1;
                            note(format_args!(
                                "error: {} partition {} offset {}: {e}; skipped",
                                m.topic(),
                                m.partition(),
                                m.offset()
                            ));
                            None
                        }
                    }
                } else {
                    None
                };
                #[cfg(not(feature = "registry"))]
                let decoded: Option<(Option<Vec<u8>>, Option<Vec<u8>>)> = None;
                #[cfg(feature = "registry")]
                let skip = decoders.any() && decoded.is_none();
                #[cfg(not(feature = "registry"))]
                let skip = false;
                let (key, value) = match &decoded {
                    Some((k, v)) => (k.as_deref().or(m.key()), v.as_deref()),
                    None => (m.key(), m.payload()),
                };
                let written = if skip {
                    Ok(())
                } else if value_only {
                    out.write_all(value.unwrap_or(&text.null))
                        .and_then(|()| out.write_all(&text.line_end))
                } else if args.format == Format::Json {
                    let d = decoded.as_ref().map(|(k, v)| (k.as_deref(), v.as_deref()));
                    write_json(
                        &mut out,
                        &m,
                        (
                            d.filter(|_| key_decoded(&args)).map(|d| d.0),
                            d.filter(|_| value_decoded(&args)).map(|d| d.1),
                        ),
                    )
                } else {
                    text.write(&mut out, &m, key, value)
                };
                if let Err(e) = written {
                    pipe_closed = e.kind() == std::io::ErrorKind::BrokenPipe;
                    if !pipe_closed {
                        result = Err(CliError::failure(format!("writing output failed: {e}")));
                    }
                    break;
                }
                if args.group.is_some() {
                    let (topic, partition) = (m.topic(), m.partition());
                    match unflushed
                        .iter_mut()
                        .find(|(t, p, _)| *p == partition && t == topic)
                    {
                        Some(e) => e.2 = m.offset(),
                        None => unflushed.push((topic.to_string(), partition, m.offset())),
                    }
                    // A steady stream never idles: flush and store at least every second.
                    if last_flush.elapsed() >= Duration::from_secs(1) {
                        if let Err(e) = out.flush() {
                            pipe_closed = e.kind() == std::io::ErrorKind::BrokenPipe;
                            if !pipe_closed {
                                result =
                                    Err(CliError::failure(format!("writing output failed: {e}")));
                            }
                            break;
                        }
                        store_flushed(&consumer, &mut unflushed);
                        last_flush = Instant::now();
                    }
                }
                count += 1;
                if idle_limit.is_some() {
                    last_message = Instant::now();
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                mark_at_end(
                    &consumer,
                    &assigned(&consumer),
                    &mut at_end,
                    p,
                    args.client.timeout(),
                );
                check_end = true;
            }
            Some(Err(e))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
            {
                ctx_err = Some(if single_topic {
                    crate::client::unknown_topic(&topics[0].0)
                } else {
                    CliError::new(
                        crate::client::EXIT_UNKNOWN_TOPIC,
                        "one of the topics read no longer exists (deleted?). List topics with `fjord topics list`.",
                    )
                });
                break;
            }
            Some(Err(e)) => consumer.context().cli.consumer_error(&e),
        }
    }
    let mut flushed = false;
    if !pipe_closed && result.is_ok() {
        match out.flush() {
            Ok(()) => flushed = true,
            Err(e) => {
                pipe_closed = e.kind() == std::io::ErrorKind::BrokenPipe;
                if !pipe_closed {
                    result = Err(CliError::failure(format!("writing output failed: {e}")));
                }
            }
        }
    }
    if flushed {
        store_flushed(&consumer, &mut unflushed);
    }
    drop(out);
    if args.group.is_some() {
        // Commit every assigned partition's position now, so a failure can be reported; closing the
        // consumer (on drop) would commit too, silently.
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(e) => note(format_args!(
                "warning: cannot commit the group's offsets: {}",
                plain(&e)
            )),
        }
    }
    note(format_args!("Processed a total of {count} messages"));
    drop(consumer);
    if let Some(e) = ctx_err {
        return Err(e);
    }
    if undecodable > 0 && result.is_ok() && !pipe_closed {
        return Err(CliError::failure(format!(
            "{undecodable} of {count} records could not be decoded (each is named above)"
        )));
    }
    if pipe_closed {
        // As other Unix tools end on SIGPIPE: quietly, with 128 + 13.
        std::process::exit(141);
    }
    result
}

#[cfg(feature = "registry")]
fn key_decoded(args: &ConsumeArgs) -> bool {
    args.schema.key_format.is_some()
}
#[cfg(feature = "registry")]
fn value_decoded(args: &ConsumeArgs) -> bool {
    args.schema.value_format.is_some()
}
#[cfg(not(feature = "registry"))]
fn key_decoded(_: &ConsumeArgs) -> bool {
    false
}
#[cfg(not(feature = "registry"))]
fn value_decoded(_: &ConsumeArgs) -> bool {
    false
}

/// Marks the partitions an end-of-partition event for partition number `p` is about. librdkafka's event
/// names the topic, but rust-rdkafka passes on only the number: with one topic read that is enough; with
/// several, a candidate is at its end when its position is at the log end.
fn mark_at_end(
    consumer: &BaseConsumer<ConsumeContext>,
    assigned: &[(String, i32)],
    at_end: &mut HashSet<(String, i32)>,
    p: i32,
    timeout: Duration,
) {
    let candidates: Vec<&(String, i32)> = assigned
        .iter()
        .filter(|tp| tp.1 == p && !at_end.contains(*tp))
        .collect();
    if candidates.len() <= 1 {
        at_end.extend(candidates.into_iter().cloned());
        return;
    }
    let positions: HashMap<(String, i32), Offset> = consumer
        .position()
        .map(|pos| {
            pos.elements()
                .iter()
                .map(|e| ((e.topic().to_string(), e.partition()), e.offset()))
                .collect()
        })
        .unwrap_or_default();
    for (t, p) in candidates {
        let Ok((_, high)) = consumer.fetch_watermarks(t, *p, timeout) else {
            continue;
        };
        let at = match positions.get(&(t.clone(), *p)) {
            Some(Offset::Offset(o)) => *o,
            // Nothing returned from it yet: at its end if it has nothing past where it started.
            _ => consumer
                .context()
                .starts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(t.clone(), *p))
                .copied()
                .unwrap_or(i64::MIN),
        };
        if at >= high {
            at_end.insert((t.clone(), *p));
        }
    }
}

/// A librdkafka error without librdkafka's wording where a plainer one is known.
fn plain(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => crate::client::describe_code(code),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_options_parse_like_kcat_and_kafka_console_consumer() {
        assert_eq!(StartAt::parse("earliest").unwrap(), StartAt::Earliest);
        assert_eq!(StartAt::parse("beginning").unwrap(), StartAt::Earliest);
        assert_eq!(StartAt::parse("latest").unwrap(), StartAt::Latest);
        assert_eq!(StartAt::parse("42").unwrap(), StartAt::Offset(42));
        assert_eq!(StartAt::parse("-10").unwrap(), StartAt::Last(10));
        assert_eq!(StartAt::parse("@1000").unwrap(), StartAt::Time(1000));
        assert_eq!(
            StartAt::parse("1970-01-01T00:00:01Z").unwrap(),
            StartAt::Time(1000)
        );
        for bad in [
            "-0",
            "@-1",
            "@soon",
            "1969-12-31T00:00:00Z",
            "soon",
            "",
            "-",
        ] {
            let e = StartAt::parse(bad).unwrap_err();
            assert_eq!(e.code, crate::client::EXIT_BAD_ARGS, "{bad}: {}", e.message);
        }
    }

    #[test]
    fn separators_take_the_escapes_people_type() {
        assert_eq!(unescape("\\t"), b"\t");
        assert_eq!(unescape(" | "), b" | ");
        assert_eq!(unescape("\\n\\\\"), b"\n\\");
    }
}
