//! `fjord produce TOPIC`: every line of standard input (or `--input FILE`) becomes one message, like
//! kafka-console-producer. Lines are sent byte for byte without their trailing newline; with `--format json`
//! each line is an object giving key, value, headers and partition.
//!
//! Nothing is lost silently: a line that cannot be sent (too large for the topic, no key separator, bad
//! JSON) stops the reading, everything read before it is still delivered, and the command says exactly how
//! many lines were delivered and why the line failed (`--skip-errors` goes on past such lines and lists
//! them). Ctrl-C or SIGTERM stops the reading the same way: what was read is delivered, then counted.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::client::{describe_code, note, CliContext, CliError, ClientArgs, EXIT_UNKNOWN_TOPIC};

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

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Each line is a message value (or KEY<SEP>VALUE with --key-separator).
    Text,
    /// Each line is a JSON object: {"key": .., "value": .., "headers": {"k": "v"}, "partition": N,
    /// "timestamp": MS}; every field is optional, a null value is a tombstone, headers given as an object
    /// are sent in name order (as a list [{"key": .., "value": ..}] in its order), and `fjord consume
    /// --format json` output is accepted as is.
    Json,
}

#[derive(Args)]
pub struct ProduceArgs {
    /// The topic to send to (or --topic).
    #[arg(value_name = "TOPIC", required_unless_present = "topic_flag")]
    pub topic: Option<String>,
    /// The topic to send to, as kafka-console-producer and kcat spell it.
    #[arg(
        long = "topic",
        short = 't',
        value_name = "TOPIC",
        conflicts_with = "topic"
    )]
    pub topic_flag: Option<String>,
    /// Read messages from this file instead of standard input.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// text: one message value per line; json: one JSON object per line with key, value, headers,
    /// partition and timestamp.
    #[arg(long, value_enum, default_value_t = InputFormat::Text)]
    pub format: InputFormat,
    /// Split each line at the first SEP into key and value (a line without SEP is an error).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A key or value equal to this text is sent as null (a value of null is a tombstone, which deletes
    /// the key from a compacted topic); like kafka-console-producer's null.marker.
    #[arg(long, value_name = "TEXT")]
    pub null_marker: Option<String>,
    /// Header added to every message, e.g. --header source=import (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Send every message to this partition (default: by key hash, or spread when there is no key).
    #[arg(long, short = 'p', allow_negative_numbers = true)]
    pub partition: Option<i32>,
    /// Acknowledgements to wait for: all (same as -1), 1 (the leader) or 0 (none).
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1", "0"], allow_negative_numbers = true)]
    pub acks: String,
    /// Compress batches with this codec.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// How long to wait to fill a batch, in milliseconds (0 to 900000).
    #[arg(long, default_value_t = 5, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=900_000), allow_negative_numbers = true)]
    pub linger_ms: u64,
    /// Go on past lines that cannot be sent (too large, no key separator, bad JSON), list them on stderr
    /// and deliver the rest; the exit code is 0 if every other line was delivered.
    #[arg(long)]
    pub skip_errors: bool,
    /// kafka-console-producer's reader properties: parse.key (true|false), key.separator (default tab),
    /// null.marker, ignore.error (true|false) (repeatable).
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// A client property, as in kafka-console-producer; the same as -X (repeatable).
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    pub producer_properties: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[cfg(feature = "registry")]
    #[command(flatten)]
    pub schema: crate::formats::ProduceFormatArgs,
}

/// Counts failed deliveries and keeps the first failure (line number and reason) to report it. Every
/// message gets a report, though only failures are kept: librdkafka then frees each delivered message on
/// the sending thread, inside `poll`. With `delivery.report.only.error` its broker thread frees them
/// instead, and the two threads fought over the allocator's lock: 17 times the futex calls, 5 times the
/// system time and about 1.5 times the wall time of kcat on 3 M lines (`bench/cli-vs-kcat.sh`).
pub struct Deliveries {
    cli: CliContext,
    failed: AtomicU64,
    first_error: Mutex<Option<(usize, String)>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.cli.log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.cli.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    /// The line number of the message.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, line: usize) {
        match result {
            Ok(_) => {}
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                // Reports come per batch, in order per partition; the smallest line is the one to name.
                if first.as_ref().is_none_or(|(l, _)| line < *l) {
                    *first = Some((line, delivery_error(e)));
                }
            }
        }
    }
}

fn delivery_error(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => {
            "not acknowledged by the broker within 60 s of being sent (unreachable or overloaded?)"
                .into()
        }
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            "the broker refused it as too large (max.message.bytes)".into()
        }
        Some(code) => format!("the broker refused it: {}", describe_code(code)),
        None => e.to_string(),
    }
}

/// Waits until every message sent is acknowledged (or failed), at most `timeout`. rust-rdkafka's `flush`
/// polls in steps of 100 ms, which a short run would spend waiting after its last acknowledgement.
fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    loop {
        if producer.flush(Duration::ZERO).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        producer.poll(Duration::from_millis(1));
    }
}

/// 1234567 as 1,234,567.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn parse_headers(pairs: &[String]) -> Result<Option<OwnedHeaders>, CliError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut h = OwnedHeaders::new_with_capacity(pairs.len());
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::bad_args(format!("--header `{p}` is not KEY=VALUE")))?;
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    Ok(Some(h))
}

/// Creates a producer and makes sure the topic exists (the broker may auto-create it on this request).
/// Returns the topic's partition count too.
pub fn producer<C: ProducerContext + 'static>(
    client: &ClientArgs,
    topic: &str,
    context: C,
    settings: &[(&str, String)],
    extra: &[(&str, &[String])],
) -> Result<(BaseProducer<C>, usize), CliError> {
    let cfg = client.config_with(settings, extra)?;
    let producer: BaseProducer<C> = cfg
        .create_with_context(context)
        .map_err(|e| crate::client::creation_error("producer", e))?;
    let md = producer
        .client()
        .fetch_metadata(Some(topic), client.timeout())
        .map_err(|e| client.transport_error(e))?;
    let t = md.topics().iter().find(|t| t.name() == topic);
    match t {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok((producer, t.partitions().len()))
        }
        _ => Err(CliError::new(
            EXIT_UNKNOWN_TOPIC,
            format!(
                "topic `{topic}` does not exist and the broker did not create it (auto.create.topics.enable is off). Create it with `fjord topics create {topic}`."
            ),
        )),
    }
}

/// The topic's `max.message.bytes` (the broker's default unless the topic overrides it), or `None` if the
/// broker does not say.
fn topic_max_message_bytes(client: &ClientArgs, topic: &str) -> Option<usize> {
    let admin: AdminClient<CliContext> = client
        .config()
        .ok()?
        .create_with_context(client.context())
        .ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let opts = AdminOptions::new().request_timeout(Some(client.timeout()));
    let res = rt
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts))
        .ok()?;
    // Destroying an admin client waits for its polling thread (up to 100 ms): not on the user's time.
    std::thread::spawn(move || drop(admin));
    let r = res.into_iter().next()?.ok()?;
    r.entries
        .into_iter()
        .find(|e| e.name == "max.message.bytes")?
        .value?
        .parse()
        .ok()
}

/// Size of a record batch holding just this record (Kafka's v2 format: a 61-byte batch header and the
/// record with its varint-encoded lengths); this is what the broker compares with max.message.bytes.
fn one_record_batch_size(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    fn varint(n: i64) -> usize {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        let mut len = 1;
        while z >= 0x80 {
            z >>= 7;
            len += 1;
        }
        len
    }
    let field = |b: Option<&[u8]>| b.map_or(varint(-1), |b| varint(b.len() as i64) + b.len());
    let mut body =
        1 + varint(0) + varint(0) + field(key) + field(value) + varint(headers.len() as i64);
    for (k, v) in headers {
        body += varint(k.len() as i64) + k.len() + field(*v);
    }
    61 + varint(body as i64) + body
}

/// Where the lines come from: a thread reads standard input (or the file) in chunks of whole lines, so
/// that the sending loop can notice Ctrl-C while a read blocks and need not copy line by line.
enum Chunk {
    /// Whole lines, each ending in `\n` except possibly the input's last.
    Lines(Vec<u8>),
    /// A line longer than the reader keeps, dropped: only its length is known.
    Oversized(u64),
}

/// Lines longer than this are not kept in memory: they cannot be sent anyway.
const fn line_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(1 << 20)
}

fn spawn_reader(input: Box<dyn Read + Send>, limit: usize) -> Receiver<std::io::Result<Chunk>> {
    let (tx, rx) = sync_channel(8);
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, input);
        let mut partial: Vec<u8> = Vec::new();
        // Bytes of an oversized line seen so far (it is skipped to its newline).
        let mut skipping: Option<u64> = None;
        loop {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let n = buf.len();
            if n == 0 {
                let last = match skipping {
                    Some(len) => Some(Chunk::Oversized(len)),
                    None if !partial.is_empty() => Some(Chunk::Lines(partial)),
                    None => None,
                };
                if let Some(c) = last {
                    let _ = tx.send(Ok(c));
                }
                return;
            }
            let mut rest = buf;
            if let Some(len) = skipping {
                match rest.iter().position(|b| *b == b'\n') {
                    None => {
                        skipping = Some(len + n as u64);
                        reader.consume(n);
                        continue;
                    }
                    Some(i) => {
                        skipping = None;
                        if tx.send(Ok(Chunk::Oversized(len + i as u64))).is_err() {
                            return;
                        }
                        rest = &rest[i + 1..];
                    }
                }
            }
            let chunk = match rest.iter().rposition(|b| *b == b'\n') {
                Some(i) => {
                    let mut chunk = std::mem::take(&mut partial);
                    chunk.extend_from_slice(&rest[..=i]);
                    partial.extend_from_slice(&rest[i + 1..]);
                    Some(chunk)
                }
                None => {
                    partial.extend_from_slice(rest);
                    None
                }
            };
            reader.consume(n);
            if partial.len() > limit {
                skipping = Some(partial.len() as u64);
                partial = Vec::new();
            }
            if let Some(c) = chunk {
                if tx.send(Ok(Chunk::Lines(c))).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// One message parsed from a line.
struct Parsed<'a> {
    key: Option<std::borrow::Cow<'a, [u8]>>,
    value: Option<std::borrow::Cow<'a, [u8]>>,
    /// With `--format json`, the JSON of "key" and "value" as given (for `--key-format`/`--value-format`,
    /// which encode the JSON value itself, not its text).
    key_json: Option<serde_json::Value>,
    value_json: Option<serde_json::Value>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    partition: Option<i32>,
    timestamp: Option<i64>,
}

/// How lines become messages, decided once from the arguments.
struct LineFormat {
    json: bool,
    key_separator: Option<Vec<u8>>,
    null_marker: Option<Vec<u8>>,
}

impl LineFormat {
    fn parse<'a>(&self, line: &'a [u8]) -> Result<Parsed<'a>, String> {
        use std::borrow::Cow;
        if self.json {
            return parse_json(line);
        }
        let null = |b: &'a [u8]| -> Option<Cow<'a, [u8]>> {
            match &self.null_marker {
                Some(m) if m.as_slice() == b => None,
                _ => Some(Cow::Borrowed(b)),
            }
        };
        let (key, value) = match &self.key_separator {
            Some(sep) => {
                let at = find(line, sep).ok_or_else(|| {
                    format!(
                        "no key separator `{}`",
                        String::from_utf8_lossy(sep).escape_debug()
                    )
                })?;
                (null(&line[..at]), null(&line[at + sep.len()..]))
            }
            None => (None, null(line)),
        };
        Ok(Parsed {
            key,
            value,
            headers: Vec::new(),
            partition: None,
            timestamp: None,
            key_json: None,
            value_json: None,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => haystack.iter().position(|x| x == b),
        _ => haystack.windows(needle.len()).position(|w| w == needle),
    }
}

fn parse_json(line: &[u8]) -> Result<Parsed<'_>, String> {
    use serde_json::Value;
    use std::borrow::Cow;
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("not a JSON object like {\"key\": \"k\", \"value\": \"v\"}".into());
    };
    // A string is sent as its UTF-8 bytes; another JSON value as its JSON text; `<name>_hex` as the bytes
    // it spells (what `fjord consume --format json` prints for binary data).
    let bytes = |name: &str| -> Result<Option<Vec<u8>>, String> {
        if let Some(h) = obj.get(&format!("{name}_hex")) {
            let h = h.as_str().ok_or(format!("{name}_hex is not a string"))?;
            return hex(h)
                .map(Some)
                .ok_or(format!("{name}_hex is not hexadecimal"));
        }
        Ok(match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone().into_bytes()),
            Some(other) => Some(other.to_string().into_bytes()),
        })
    };
    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                headers.push((k.clone(), json_header_value(v)?));
            }
        }
        // The list `fjord consume --format json` prints: [{"key": .., "value": ..}].
        Some(Value::Array(list)) => {
            for item in list {
                let k = item
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or("a header in the list has no \"key\" string")?;
                let v = match item.get("value_hex").and_then(Value::as_str) {
                    Some(h) => Some(hex(h).ok_or("a header's value_hex is not hexadecimal")?),
                    None => json_header_value(item.get("value").unwrap_or(&Value::Null))?,
                };
                headers.push((k.to_string(), v));
            }
        }
        Some(_) => return Err("\"headers\" is neither an object nor a list".into()),
    }
    let partition = match obj.get("partition") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p >= 0)
                .ok_or("\"partition\" is not a partition number")?,
        ),
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_i64()
                .filter(|t| *t >= 0)
                .ok_or("\"timestamp\" is not milliseconds since 1970")?,
        ),
    };
    Ok(Parsed {
        key: bytes("key")?.map(Cow::Owned),
        value: bytes("value")?.map(Cow::Owned),
        headers,
        partition,
        timestamp,
        key_json: obj.get("key").cloned(),
        value_json: obj.get("value").cloned(),
    })
}

/// `--key-format`/`--value-format`: the key and value become Confluent's wire format. The JSON comes from the
/// JSON line's "key"/"value" (`--format json`), else from the line's text; null stays null (a tombstone).
#[cfg(feature = "registry")]
fn encode_schema_fields(
    m: &mut Parsed<'_>,
    encoders: &crate::formats::Encoders,
    json_lines: bool,
) -> Result<(), String> {
    use std::borrow::Cow;
    let encode = |enc: &crate::formats::Encoder,
                  text: &Option<Cow<'_, [u8]>>,
                  given: &Option<serde_json::Value>,
                  name: &str|
     -> Result<Option<Vec<u8>>, String> {
        let j = if json_lines {
            match given {
                None | Some(serde_json::Value::Null) => return Ok(None),
                Some(j) => j.clone(),
            }
        } else {
            match text {
                None => return Ok(None),
                Some(t) => serde_json::from_slice(t).map_err(|e| {
                    format!(
                        "the {name} is not JSON ({e}); give it as JSON, e.g. a string in quotes"
                    )
                })?,
            }
        };
        if j.is_null() {
            return Ok(None);
        }
        enc.encode(&j).map(Some)
    };
    if let Some(enc) = &encoders.value {
        m.value = encode(enc, &m.value, &m.value_json, "value")?.map(Cow::Owned);
    }
    if let Some(enc) = &encoders.key {
        m.key = encode(enc, &m.key, &m.key_json, "key")?.map(Cow::Owned);
    }
    Ok(())
}

fn json_header_value(v: &serde_json::Value) -> Result<Option<Vec<u8>>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone().into_bytes())),
        other => Ok(Some(other.to_string().into_bytes())),
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The reader properties of kafka-console-producer that apply here, folded into the flags.
fn apply_properties(args: &mut ProduceArgs) -> Result<(), CliError> {
    let mut parse_key = false;
    let mut separator = None;
    for p in &args.properties {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::bad_args(format!("--property `{p}` is not KEY=VALUE")))?;
        let flag = |v: &str| match v.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(CliError::bad_args(format!(
                "--property {k}={v}: expected true or false"
            ))),
        };
        match k.trim() {
            "parse.key" => parse_key = flag(v)?,
            "key.separator" => separator = Some(v.to_string()),
            "null.marker" => args.null_marker = Some(v.to_string()),
            "ignore.error" => args.skip_errors |= flag(v)?,
            other => {
                return Err(CliError::bad_args(format!(
                    "--property {other}: not a reader property; known: parse.key, key.separator, null.marker, ignore.error (client properties go in --producer-property or -X)"
                )))
            }
        }
    }
    if parse_key {
        if args.key_separator.is_some() && separator.is_some() {
            return Err(CliError::bad_args(
                "give the key separator once: --key-separator or --property key.separator",
            ));
        }
        // kafka-console-producer's default key.separator is a tab.
        args.key_separator = args
            .key_separator
            .take()
            .or(separator)
            .or(Some("\t".into()));
    }
    Ok(())
}

/// A line that could not be sent.
struct LineError {
    line: usize,
    reason: String,
}

pub fn run(mut args: ProduceArgs, interrupted: Arc<AtomicBool>) -> Result<(), CliError> {
    apply_properties(&mut args)?;
    let topic = args
        .topic
        .clone()
        .or(args.topic_flag.clone())
        .ok_or_else(|| CliError::bad_args("name the topic: fjord produce TOPIC"))?;
    if args.key_separator.as_deref() == Some("") {
        return Err(CliError::bad_args(
            "--key-separator must not be empty (e.g. --key-separator : or --key-separator $'\\t')",
        ));
    }
    if args.partition.is_some_and(|p| p < 0) {
        return Err(CliError::bad_args(
            "--partition must be 0 or more (leave it out to spread messages over partitions)",
        ));
    }
    if args.format == InputFormat::Json && args.key_separator.is_some() {
        return Err(CliError::bad_args(
            "--key-separator (or parse.key) does not apply to --format json, where each line names its key",
        ));
    }
    let headers = parse_headers(&args.headers)?;
    #[cfg(feature = "registry")]
    let encoders = crate::formats::Encoders::new(&args.schema, &topic)?;
    let fixed_headers: Vec<(&str, Option<&[u8]>)> = args
        .headers
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k, Some(v.as_bytes())))
        .collect();
    let settings = |max_bytes: Option<usize>| {
        let mut settings = vec![
            ("acks", args.acks.clone()),
            ("compression.type", args.compression.name().to_string()),
            ("linger.ms", args.linger_ms.to_string()),
            // librdkafka wants it above linger.ms.
            ("message.timeout.ms", (args.linger_ms + 60_000).to_string()),
            // A console producer reading a file outruns the network: a deeper queue means fewer waits.
            ("queue.buffering.max.messages", "1000000".to_string()),
        ];
        if let Some(max) = max_bytes {
            // The topic's limit decides, not librdkafka's smaller default (1,000,000): the client takes
            // any message that passes our own check below, and never builds a batch larger than the topic
            // takes.
            settings.push(("message.max.bytes", (max.max(1000) + 1024).to_string()));
            settings.push((
                "batch.size",
                max.saturating_sub(512).clamp(1, 1_000_000).to_string(),
            ));
            if max + 1024 > 100_000_000 {
                settings.push(("receive.message.max.bytes", (max + 2048).to_string()));
            }
        }
        settings
    };
    let make = |max_bytes: Option<usize>| {
        let deliveries = Deliveries {
            cli: args.client.context(),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        };
        producer(
            &args.client,
            &topic,
            deliveries,
            &settings(max_bytes),
            &[("--producer-property", &args.producer_properties)],
        )
    };
    let mut max_bytes = topic_max_message_bytes(&args.client, &topic);
    let (mut producer, mut partitions) = make(max_bytes)?;
    if max_bytes.is_none() {
        // The producer's metadata request may just have created the topic (auto.create.topics.enable).
        max_bytes = topic_max_message_bytes(&args.client, &topic);
        if max_bytes.is_some() {
            (producer, partitions) = make(max_bytes)?;
        }
    }
    if let Some(p) = args.partition {
        if p as usize >= partitions {
            return Err(CliError::failure(format!(
                "topic `{topic}` has no partition {p} (it has {partitions})"
            )));
        }
    }
    let input: Box<dyn Read + Send> = match &args.input {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let chunks = spawn_reader(input, line_limit(max_bytes.unwrap_or(100 << 20)));
    let format = LineFormat {
        json: args.format == InputFormat::Json,
        key_separator: args.key_separator.as_ref().map(|s| s.as_bytes().to_vec()),
        null_marker: args.null_marker.as_ref().map(|s| s.as_bytes().to_vec()),
    };
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = started;
    let (mut read, mut sent, mut bytes) = (0usize, 0u64, 0u64);
    let mut skipped: Vec<LineError> = Vec::new();
    let mut stopped: Option<LineError> = None;
    let mut read_error = None;
    let mut was_interrupted = false;
    // Every line, good or bad: sends the good ones; the bad one stops the loop unless --skip-errors.
    let limit = max_bytes.unwrap_or(100 << 20);
    let handle = |line: Result<&[u8], u64>, number: usize| -> Result<u64, LineError> {
        let fail = |reason: String| LineError {
            line: number,
            reason,
        };
        // `data`: the line's bytes (key, value, headers); `framed`: the batch of one record they make.
        let too_large = |data: usize, framed: usize, max: usize| {
            let data = if data > max {
                format!("{} bytes exceeds", thousands(data as u64))
            } else {
                format!(
                    "{} bytes ({} with the record's framing) exceeds",
                    thousands(data as u64),
                    thousands(framed as u64)
                )
            };
            format!(
                "{data} the topic's max.message.bytes of {}; raise it with `fjord topics alter {topic} --config max.message.bytes=N`, or split the line",
                thousands(max as u64)
            )
        };
        let line = match line {
            Ok(l) => l,
            Err(len) => return Err(fail(too_large(len as usize, len as usize, limit))),
        };
        #[allow(unused_mut)]
        let mut m = format.parse(line).map_err(fail)?;
        #[cfg(feature = "registry")]
        encode_schema_fields(&mut m, &encoders, format.json).map_err(fail)?;
        let partition = m.partition.or(args.partition);
        if let Some(p) = partition {
            if p as usize >= partitions {
                return Err(fail(format!(
                    "topic `{topic}` has no partition {p} (it has {partitions})"
                )));
            }
        }
        let key = m.key.as_deref();
        let value = m.value.as_deref();
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&topic, number);
        if let Some(max) = max_bytes {
            let hs: Vec<(&str, Option<&[u8]>)> = if m.headers.is_empty() {
                Vec::new()
            } else {
                m.headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_deref()))
                    .collect()
            };
            let hs = if m.headers.is_empty() {
                &fixed_headers
            } else {
                &hs
            };
            let size = one_record_batch_size(key, value, hs);
            if size > max {
                let data = key.map_or(0, <[u8]>::len)
                    + value.map_or(0, <[u8]>::len)
                    + hs.iter()
                        .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
                        .sum::<usize>();
                return Err(fail(too_large(data, size, max)));
            }
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(t) = m.timestamp {
            record = record.timestamp(t);
        }
        if !m.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(m.headers.len());
            for (k, v) in &m.headers {
                h = h.insert(Header {
                    key: k.as_str(),
                    value: v.as_deref(),
                });
            }
            record = record.headers(h);
        } else if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    if interrupted.load(Ordering::Relaxed) {
                        return Err(fail("not sent: interrupted while the client's queue was full".into()));
                    }
                    producer.poll(Duration::from_millis(5));
                    record = r;
                }
                Err((e, _)) => {
                    return Err(fail(match e.rdkafka_error_code() {
                        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                            "too large for the client's message.max.bytes (raise it with -X message.max.bytes=N)".to_string()
                        }
                        Some(code) => format!("cannot send it: {}", describe_code(code)),
                        None => format!("cannot send it: {e}"),
                    }))
                }
            }
        }
        Ok(value.map_or(0, <[u8]>::len) as u64)
    };

    'reading: loop {
        if interrupted.load(Ordering::Relaxed) {
            was_interrupted = true;
            break;
        }
        let chunk = match chunks.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                read_error = Some(e);
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                producer.poll(Duration::ZERO);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let result = match &chunk {
            Chunk::Oversized(len) => {
                read += 1;
                // Always an error: the line is too long to be a message.
                handle(Err(*len), read).map(|_| ())
            }
            Chunk::Lines(buf) => {
                let mut r = Ok(());
                for line in buf.split_inclusive(|b| *b == b'\n') {
                    if interrupted.load(Ordering::Relaxed) {
                        was_interrupted = true;
                        break 'reading;
                    }
                    read += 1;
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    match handle(Ok(line), read) {
                        Ok(n) => {
                            sent += 1;
                            bytes += n;
                            if sent % 1024 == 0 {
                                producer.poll(Duration::ZERO);
                            }
                        }
                        Err(e) if args.skip_errors => skipped.push(e),
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if args.skip_errors => skipped.push(e),
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
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
    // Whatever happened, what was read and accepted is delivered before anything is reported.
    let pending = flush(&producer, Duration::from_secs(90));
    let ctx = producer.context();
    // Still queued or in flight (none if the flush completed).
    let in_flight = u64::try_from(producer.in_flight_count()).unwrap_or(0);
    let failed = ctx.failed.load(Ordering::Relaxed);
    let delivered = sent.saturating_sub(failed + in_flight);
    if progress && sent > 0 {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "\r{delivered} messages delivered in {secs:.1}s ({:.1} MB/s)   ",
            bytes as f64 / secs / 1e6
        );
    }
    for (i, s) in skipped.iter().enumerate() {
        if i == 100 {
            note(format_args!(
                "... and {} more lines skipped",
                thousands((skipped.len() - 100) as u64)
            ));
            break;
        }
        note(format_args!(
            "line {} skipped: {}",
            thousands(s.line as u64),
            s.reason
        ));
    }
    let summary = format!(
        "delivered {} of {} lines",
        thousands(delivered),
        thousands(read as u64)
    );
    let undelivered = sent - delivered;
    if undelivered > 0 || pending.is_err() {
        let first = ctx
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let why = match (first, pending) {
            (Some((line, reason)), _) => format!(
                "line {}: {reason}{}",
                thousands(line as u64),
                if failed > 1 {
                    format!(" ({} lines failed)", thousands(failed))
                } else {
                    String::new()
                }
            ),
            (None, _) => format!(
                "{} lines not acknowledged within 90 s",
                thousands(undelivered)
            ),
        };
        let stop = stopped
            .map(|s| {
                format!(
                    "; reading stopped at line {}: {}",
                    thousands(s.line as u64),
                    s.reason
                )
            })
            .unwrap_or_default();
        return Err(CliError::failure(format!("{summary}; {why}{stop}")));
    }
    if let Some(s) = stopped {
        return Err(CliError::failure(format!(
            "{summary}; line {}: {}{}",
            thousands(s.line as u64),
            s.reason,
            if args.skip_errors {
                ""
            } else {
                " (--skip-errors sends the other lines)"
            }
        )));
    }
    if let Some(e) = read_error {
        return Err(CliError::failure(format!(
            "{summary}; reading input failed: {e}"
        )));
    }
    if !skipped.is_empty() {
        note(format_args!(
            "{summary}; {} skipped",
            thousands(skipped.len() as u64)
        ));
    }
    if was_interrupted {
        // Everything read was delivered, but the input was not read to its end: not a success for a script
        // (128 + the signal, as a shell reports a command a signal stopped).
        return Err(CliError::new(
            crate::signals::exit_code(),
            format!("interrupted: {summary} read; the rest of the input was not read"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_print_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_048_588), "1,048,588");
        assert_eq!(thousands(100_001), "100,001");
    }

    #[test]
    fn a_one_record_batch_is_sized_as_the_broker_sizes_it() {
        // 61-byte batch header; record: length varint, attributes, timestamp and offset deltas, key
        // length (-1: null), value length and bytes, header count. Pinned against the broker by
        // tests/cli_data.rs (1,930 bytes fit max.message.bytes=2000, 1,931 do not).
        assert_eq!(one_record_batch_size(None, Some(&[b'w'; 1930]), &[]), 2000);
        assert_eq!(one_record_batch_size(None, Some(&[b'w'; 1931]), &[]), 2001);
        assert_eq!(one_record_batch_size(None, Some(b""), &[]), 61 + 1 + 6);
        assert_eq!(
            one_record_batch_size(Some(b"k"), None, &[("h", Some(b"v"))]),
            61 + 1 + (3 + 2 + 1 + 1 + 2 + 2)
        );
    }

    #[test]
    fn json_lines_give_key_value_headers_partition_and_timestamp() {
        let m = parse_json(
            br#"{"key":"k","value":null,"headers":[{"key":"a","value":"1"},{"key":"b","value_hex":"ff"}],"partition":2,"timestamp":5}"#,
        )
        .unwrap();
        assert_eq!(m.key.as_deref(), Some(&b"k"[..]));
        assert!(m.value.is_none());
        assert_eq!(
            m.headers,
            vec![
                ("a".into(), Some(b"1".to_vec())),
                ("b".into(), Some(vec![0xff]))
            ]
        );
        assert_eq!((m.partition, m.timestamp), (Some(2), Some(5)));
        for bad in [
            &b"[1]"[..],
            b"{",
            br#"{"partition":-1}"#,
            br#"{"key_hex":"f"}"#,
        ] {
            assert!(parse_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
