//! FileStreamSource's task: tails a file line by line into a topic (`file`, `topic`, `batch.size`).
//!
//! **At-least-once:** lines go out through an idempotent, `acks=all` producer; a batch's end position becomes
//! the stored offset only after every record of the batch is acknowledged, and the offsets file is written
//! (atomically, see `offsets`) at most every `offset.flush.interval.ms` and when the task stops. After a crash
//! the task resumes from the last written position: lines after it are sent again (duplicates), none is lost.
//!
//! The offset is Connect's: partition `{"filename": file}`, offset `{"position": byte after the last line}`.
//! A file shorter than the stored position was truncated, and one whose inode changed was rotated: both are
//! read again from the start, with a log line saying so.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use crate::transforms::{Chain, Record, SchemaAndValue};
use crate::worker::TaskContext;

/// How long the task waits for the file to grow when it has read everything (Connect's FileStreamSource
/// waits one second; shorter here, so that a new line is sent sooner).
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Batches (of `batch.size` lines) handed to the producer and not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 8;
/// The longest line sent when the producer's `message.max.bytes` is not overridden (librdkafka's default): a
/// longer line cannot be one record, so the task fails on it with what to do instead of buffering it without bound
/// or cutting it into pieces (Kafka's FileStreamSourceTask sends every line whole, growing its buffer as needed).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1_000_000;
const READ_CHUNK: usize = 64 * 1024;

/// A line that cannot be sent as one record: it starts at byte `start` and is longer than `limit` bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong {
    pub start: u64,
    pub limit: usize,
}

/// The file being read: its handle, identity and the bytes read past the last complete line.
pub struct Tail {
    file: tokio::fs::File,
    ino: u64,
    /// The file position of `buf[0]`.
    buf_start: u64,
    buf: Vec<u8>,
    /// The longest line (without its terminator) that may be returned.
    max_line: usize,
}

impl Tail {
    pub async fn open(path: &str, position: u64, max_line: usize) -> std::io::Result<Tail> {
        let mut file = tokio::fs::File::open(path).await?;
        let ino = file.metadata().await?.ino();
        file.seek(std::io::SeekFrom::Start(position)).await?;
        Ok(Tail {
            file,
            ino,
            buf_start: position,
            buf: Vec::new(),
            max_line,
        })
    }

    /// Up to `max` complete lines with the position after each; reads more of the file when needed. A line
    /// longer than `max_line` is an error once the lines before it are taken (they come first).
    pub async fn lines(
        &mut self,
        max: usize,
    ) -> std::io::Result<std::result::Result<Vec<(String, u64)>, (Vec<(String, u64)>, LineTooLong)>>
    {
        let mut out = Vec::new();
        loop {
            while out.len() < max {
                match self.take_line() {
                    Ok(Some(line)) => out.push(line),
                    Ok(None) => break,
                    Err(e) => return Ok(Err((out, e))),
                }
            }
            if out.len() >= max {
                return Ok(Ok(out));
            }
            let mut chunk = vec![0u8; READ_CHUNK];
            let n = self.file.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Ok(out));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next complete line. As Kafka's FileStreamSourceTask, `\n`, `\r\n` and a lone `\r` end a line (a `\r`
    /// at the end of what is read waits for the next byte), and a line is never cut into pieces. Lines are decoded as UTF-8 whole, so a character is never cut (invalid bytes become U+FFFD, as Java's
    /// reader does).
    fn take_line(&mut self) -> std::result::Result<Option<(String, u64)>, LineTooLong> {
        let mut found = None;
        for (i, b) in self.buf.iter().enumerate() {
            match b {
                b'\n' => {
                    found = Some((i, i + 1));
                    break;
                }
                b'\r' => match self.buf.get(i + 1) {
                    None => break,
                    Some(b'\n') => {
                        found = Some((i, i + 2));
                        break;
                    }
                    Some(_) => {
                        found = Some((i, i + 1));
                        break;
                    }
                },
                _ => {}
            }
        }
        let Some((len, consumed)) = found else {
            if self.buf.len() > self.max_line {
                return Err(LineTooLong {
                    start: self.buf_start,
                    limit: self.max_line,
                });
            }
            return Ok(None);
        };
        if len > self.max_line {
            return Err(LineTooLong {
                start: self.buf_start,
                limit: self.max_line,
            });
        }
        let line = String::from_utf8_lossy(&self.buf[..len]).into_owned();
        self.buf.drain(..consumed);
        self.buf_start += consumed as u64;
        Ok(Some((line, self.buf_start)))
    }
}

/// Where the line starting at `start` ends (the position after its terminator), scanning the file without
/// keeping it; None when it has no end yet.
async fn line_end(path: &str, start: u64) -> std::io::Result<Option<u64>> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut pos = start;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut after_cr = false;
    loop {
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            return Ok(after_cr.then_some(pos));
        }
        for b in &chunk[..n] {
            if after_cr {
                return Ok(Some(if *b == b'\n' { pos + 1 } else { pos }));
            }
            match b {
                b'\n' => return Ok(Some(pos + 1)),
                b'\r' => after_cr = true,
                _ => {}
            }
            pos += 1;
        }
    }
}

/// The task's trace for a line that cannot be one record.
async fn too_long_trace(ctx: &TaskContext, path: &str, e: &LineTooLong) -> String {
    let skip = match line_end(path, e.start).await {
        Ok(Some(end)) => format!(
            "; or skip it: PUT /connectors/{c}/stop, then PATCH /connectors/{c}/offsets with {{\"offsets\": [{{\"partition\": {{\"filename\": {f}}}, \"offset\": {{\"position\": {end}}}}}]}} and PUT /connectors/{c}/resume",
            c = ctx.connector,
            f = Value::String(path.to_string()),
        ),
        _ => String::new(),
    };
    format!(
        "the line starting at byte {start} of {path} is longer than {limit} bytes, the largest record the producer sends (message.max.bytes); nothing from it on was sent. To send it whole, raise producer.max.request.size in the worker config (and max.message.bytes of the topic), then restart the task (POST /connectors/{c}/restart?includeTasks=true){skip}",
        start = e.start,
        limit = e.limit,
        c = ctx.connector,
    )
}

/// Runs the task until `stop` turns true (Ok) or it fails (Err with what happened and what to do).
pub async fn run(ctx: TaskContext, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let path = ctx
        .config
        .get("file")
        .map(|f| f.trim().to_string())
        .unwrap_or_default();
    let topic = ctx
        .config
        .get("topic")
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let batch_size: usize = ctx
        .config
        .get("batch.size")
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(2000);
    // Checked when the connector was created; a config that no longer parses fails the task, naming the key.
    let chain = crate::transforms::Chain::from_config(&ctx.config)
        .map_err(|e| format!("invalid transforms: {}", e.join("; ")))?;
    let partition = json!({"filename": path});
    let mut position = match ctx.offsets.get(&ctx.connector, &partition) {
        None => 0,
        Some(o) => o["position"].as_u64().ok_or_else(|| {
            format!("the stored offset of {path} is not a position: {o}; delete the connector's offsets to start over")
        })?,
    };
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &ctx.bootstrap_servers)
        .set(
            "client.id",
            format!("connector-producer-{}-{}", ctx.connector, ctx.task),
        )
        .set("linger.ms", "5");
    for (k, v) in &ctx.client_overrides {
        client.set(k, v);
    }
    // What at-least-once rests on is not overridable.
    let producer: FutureProducer = client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .map_err(|e| {
            format!(
                "cannot create the producer for {}: {e}",
                ctx.bootstrap_servers
            )
        })?;
    // The longest line that fits in one record: the producer's own limit (librdkafka refuses a larger value).
    let max_line = ctx
        .client_overrides
        .iter()
        .find(|(k, _)| k == "message.max.bytes")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_LINE_BYTES);
    tracing::info!(connector = %ctx.connector, file = %path, topic = %topic, position, "file source starting");

    let mut tail: Option<Tail> = None;
    let mut missing_logged = false;
    let mut last_flush = Instant::now();
    let mut unflushed = false;
    // Batches sent and not yet settled, oldest first, each with the file position its last line ends at. Only
    // the oldest is ever settled (whatever order the topic's partitions acknowledge in), so the position only
    // advances to the end of a batch whose records, and all before them, are acknowledged.
    let mut in_flight: VecDeque<(u64, tokio::task::JoinHandle<Result<(), String>>)> =
        VecDeque::new();
    // Waits for the oldest batch: its end becomes the offset.
    macro_rules! settle_oldest {
        () => {{
            let (end, acked) = in_flight.pop_front().expect("a batch in flight");
            match acked.await {
                Ok(Ok(())) => {
                    position = end;
                    ctx.offsets
                        .put(&ctx.connector, partition.clone(), json!({"position": position}));
                    unflushed = true;
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(format!("sending to {topic} stopped: {e}")),
            }
        }};
    }
    let result = loop {
        // A dropped sender (the worker is gone) means stop too.
        if *stop.borrow() || stop.has_changed().is_err() {
            break Ok(());
        }
        if tail.is_none() {
            match tokio::fs::metadata(&path).await {
                Ok(meta) => {
                    if meta.len() < position {
                        tracing::warn!(connector = %ctx.connector, file = %path,
                            "the file is shorter ({} bytes) than the stored position {position}: it was truncated; reading it from the start", meta.len());
                        position = 0;
                        ctx.offsets
                            .put(&ctx.connector, partition.clone(), json!({"position": 0}));
                        unflushed = true;
                    }
                    match Tail::open(&path, position, max_line).await {
                        Ok(t) => {
                            missing_logged = false;
                            tail = Some(t);
                        }
                        Err(e) => break Err(format!("cannot open {path}: {e}")),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !missing_logged {
                        tracing::warn!(connector = %ctx.connector, "{path} does not exist (yet); waiting for it");
                        missing_logged = true;
                    }
                    wait(&mut stop, POLL_INTERVAL).await;
                    continue;
                }
                Err(e) => break Err(format!("cannot read {path}: {e}")),
            }
        }
        let t = tail.as_mut().expect("opened above");
        let (lines, too_long) = match t.lines(batch_size).await {
            Ok(Ok(l)) => (l, None),
            Ok(Err((l, e))) => (l, Some(e)),
            Err(e) => break Err(format!("reading {path} failed: {e}")),
        };
        if lines.is_empty() && !in_flight.is_empty() {
            // Caught up with the file: everything sent is settled before the file's state is checked (a rotation
            // resets the position, which an older batch must not move afterwards) and before the offsets flush.
            let mut failed = None;
            while !in_flight.is_empty() {
                if let Err(e) = settle_oldest!() {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        }
        if lines.is_empty() {
            if let Some(e) = too_long {
                break Err(too_long_trace(&ctx, &path, &e).await);
            }
        }
        if lines.is_empty() {
            // At the end of what is there: has the file been truncated or replaced?
            match tokio::fs::metadata(&path).await {
                Ok(meta) if meta.ino() != t.ino => {
                    tracing::info!(connector = %ctx.connector, file = %path, "the file was rotated (a new file has its name); reading the new one from the start");
                    tail = None;
                    position = 0;
                    ctx.offsets
                        .put(&ctx.connector, partition.clone(), json!({"position": 0}));
                    unflushed = true;
                    continue;
                }
                Ok(meta) if meta.len() < t.buf_start + t.buf.len() as u64 => {
                    tracing::warn!(connector = %ctx.connector, file = %path, "the file was truncated to {} bytes; reading it from the start", meta.len());
                    tail = None;
                    position = 0;
                    ctx.offsets
                        .put(&ctx.connector, partition.clone(), json!({"position": 0}));
                    unflushed = true;
                    continue;
                }
                _ => {}
            }
            if unflushed && last_flush.elapsed() >= ctx.offset_flush_interval {
                match periodic_flush(&ctx).await {
                    Ok(flushed) => unflushed = !flushed,
                    Err(e) => break Err(e),
                }
                last_flush = Instant::now();
            }
            wait(&mut stop, POLL_INTERVAL).await;
            continue;
        }
        let end = lines.last().map(|(_, end)| *end).expect("not empty");
        let pending = match send_batch(&producer, &ctx, &chain, &topic, lines).await {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        let topic_name = topic.clone();
        let connector = ctx.connector.clone();
        in_flight.push_back((
            end,
            tokio::spawn(async move {
                for f in pending {
                    match f.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => return Err(produce_error(&connector, &topic_name, &e)),
                        Err(_) => {
                            return Err(format!(
                                "the producer was closed while sending to {topic_name}"
                            ))
                        }
                    }
                }
                Ok(())
            }),
        ));
        // Reading goes on while earlier batches are in flight (waiting for each batch's acknowledgement before
        // reading the next made throughput one batch per round trip); at most MAX_IN_FLIGHT of them, and those
        // already acknowledged are settled now.
        let mut failed = None;
        while in_flight.len() > MAX_IN_FLIGHT
            || in_flight.front().is_some_and(|(_, h)| h.is_finished())
        {
            if let Err(e) = settle_oldest!() {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if last_flush.elapsed() >= ctx.offset_flush_interval {
            match periodic_flush(&ctx).await {
                Ok(flushed) => unflushed = !flushed,
                Err(e) => break Err(e),
            }
            last_flush = Instant::now();
        }
    };
    // Batches still in flight are waited for (in order, up to the first that failed), so that what was
    // acknowledged is stored rather than sent again after a restart.
    while !in_flight.is_empty() {
        if let Err(e) = settle_oldest!() {
            tracing::warn!(connector = %ctx.connector, "a batch sent before the task stopped was not acknowledged: {e}");
            break;
        }
    }
    // Whatever was acknowledged is written, also when the task fails for another reason.
    if unflushed {
        flush(&ctx).await?;
    }
    tracing::info!(connector = %ctx.connector, position, "file source stopped");
    result
}

/// Hands the lines to the producer and returns their delivery futures (the caller waits for them: until every
/// one is acknowledged, nothing of the batch is committed; a failed one fails the task with the producer's
/// error).
async fn send_batch(
    producer: &FutureProducer,
    ctx: &TaskContext,
    chain: &Chain,
    topic: &str,
    lines: Vec<(String, u64)>,
) -> Result<Vec<rdkafka::producer::DeliveryFuture>, String> {
    let mut pending = Vec::with_capacity(lines.len());
    for (line, end) in lines {
        // As Connect's WorkerSourceTask: transforms first (a dropped record is not sent, its position still
        // counts as read), then the converters.
        let record = Record {
            topic: topic.to_string(),
            value: SchemaAndValue::string(line),
            ..Record::default()
        };
        let record = if chain.is_empty() {
            record
        } else {
            match chain.apply(record) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => return Err(format!("{e}; the line ending at byte {end} and those after it were not sent (fix the transform config, then restart the task)")),
            }
        };
        // A registry converter registers the record's schema first (once per schema).
        record
            .prepare_encode(&ctx.key_converter, &ctx.value_converter)
            .await?;
        let (key, value) = record.encode(&ctx.key_converter, &ctx.value_converter)?;
        let record_headers_empty = record.headers.is_empty();
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &record.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic);
        if let Some(v) = value.as_deref() {
            record = record.payload(v);
        }
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        if !record_headers_empty {
            record = record.headers(headers);
        }
        // A full local queue: wait for what is in flight, then try again (bounded by the queue's own size).
        let mut record = record;
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(produce_error(&ctx.connector, topic, &e)),
            }
        }
    }
    Ok(pending)
}

/// The trace of a record the producer refused or could not deliver: nothing from it on is stored as sent.
fn produce_error(connector: &str, topic: &str, e: &rdkafka::error::KafkaError) -> String {
    let too_large = matches!(
        e.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
    );
    let what = if too_large {
        format!(" (a record is larger than the producer's message.max.bytes or the topic's max.message.bytes: raise producer.max.request.size in the worker config and the topic's max.message.bytes, or skip the line: stop the connector and move its offset past the line with PATCH /connectors/{connector}/offsets)")
    } else {
        String::new()
    };
    format!(
        "producing to {topic} failed: {e}{what}; the lines from the last stored position are sent again when the task restarts (POST /connectors/{connector}/restart?includeTasks=true)"
    )
}

/// A flush at `offset.flush.interval.ms`: whether it was written. A failed write to the offsets topic (the
/// cluster away for a moment) is retried at the next interval, as Connect's worker does: the store keeps the
/// entries it could not write. A failed write of the offsets file fails the task (an I/O error is a fact about
/// the disk). The final flush at stop fails the task either way.
async fn periodic_flush(ctx: &TaskContext) -> Result<bool, String> {
    match flush(ctx).await {
        Ok(()) => Ok(true),
        Err(e) if ctx.offsets.is_topic() => {
            tracing::warn!(connector = %ctx.connector, "{e}; retrying at the next offset flush");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

async fn flush(ctx: &TaskContext) -> Result<(), String> {
    ctx.offsets.flush().await.map_err(|e| {
        format!(
            "writing {} failed: {e}; the previous offsets stay in place (check the disk or the cluster, then restart the task)",
            ctx.offsets.describe()
        )
    })
}

/// Sleeps for `d` or until told to stop.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

/// A FileStreamSource offset's partition, for tests and tools.
pub fn partition_of(file: &str) -> Value {
    json!({"filename": file})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn all_lines(path: &str, max_line: usize) -> (Vec<(String, u64)>, Option<LineTooLong>) {
        let mut t = Tail::open(path, 0, max_line).await.unwrap();
        match t.lines(usize::MAX).await.unwrap() {
            Ok(l) => (l, None),
            Err((l, e)) => (l, Some(e)),
        }
    }

    fn context(offsets: Arc<crate::offsets::OffsetStore>) -> TaskContext {
        TaskContext {
            task: 0,
            connector: "src".into(),
            config: Default::default(),
            key_converter: Default::default(),
            value_converter: Default::default(),
            bootstrap_servers: "127.0.0.1:1".into(),
            offsets,
            offset_flush_interval: Duration::from_millis(100),
            client_overrides: Vec::new(),
            dlq_overrides: Vec::new(),
        }
    }

    /// The offsets topic away for a moment: a periodic flush is retried at the next interval (the task goes
    /// on, the entry stays to be written); the offsets file failing to be written fails the task.
    #[tokio::test]
    async fn a_failed_periodic_flush_is_retried_on_the_topic_and_fails_on_the_file() {
        // Nothing listens on port 1: every write times out after 300 ms.
        let writer = crate::topics::TopicWriter::with_timeout(
            "127.0.0.1:1",
            "offs",
            Duration::from_millis(300),
        )
        .unwrap();
        let store = Arc::new(crate::offsets::OffsetStore::on_topic_writer(writer));
        let ctx = context(store.clone());
        store.put("src", partition_of("/in"), json!({"position": 7}));
        assert_eq!(periodic_flush(&ctx).await, Ok(false));
        // Kept for the next flush, which fails again the same way (and the final one fails the task).
        assert_eq!(periodic_flush(&ctx).await, Ok(false));
        assert!(flush(&ctx)
            .await
            .unwrap_err()
            .contains("offsets topic offs"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("connect.offsets");
        let store = Arc::new(crate::offsets::OffsetStore::open(&file).unwrap());
        // The temporary file's name is taken by a directory: the write fails.
        std::fs::create_dir(dir.path().join("connect.offsets.tmp")).unwrap();
        store.put("src", partition_of("/in"), json!({"position": 7}));
        let e = periodic_flush(&context(store)).await.unwrap_err();
        assert!(e.contains("offsets file"), "{e}");
    }

    #[tokio::test]
    async fn a_long_line_comes_whole_with_its_characters_and_line_ends_are_connects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        // 2- and 3-byte characters across every read-chunk boundary.
        let long = format!("{}{}", "é€".repeat(40_000), "x".repeat(70_000));
        let text = format!("first\r\n{long}\nthird\rfourth\n\r");
        std::fs::write(&path, &text).unwrap();
        let (lines, err) = all_lines(path.to_str().unwrap(), 1_000_000).await;
        assert_eq!(err, None);
        let got: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
        // The final lone \r waits for the byte after it (it may be a \r\n).
        assert_eq!(got, vec!["first", long.as_str(), "third", "fourth"]);
        assert_eq!(lines[0].1, 7);
        assert_eq!(lines[1].1, 7 + long.len() as u64 + 1);
        assert_eq!(lines[3].1, text.len() as u64 - 1);
    }

    #[tokio::test]
    async fn a_line_longer_than_a_record_is_an_error_after_the_lines_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let text = format!("a\n{}\nb\n", "y".repeat(5000));
        std::fs::write(&path, &text).unwrap();
        let p = path.to_str().unwrap();
        let (lines, err) = all_lines(p, 4096).await;
        assert_eq!(lines, vec![("a".to_string(), 2)]);
        assert_eq!(
            err,
            Some(LineTooLong {
                start: 2,
                limit: 4096
            })
        );
        assert_eq!(line_end(p, 2).await.unwrap(), Some(2 + 5001));
        // A line still being written has no end yet; exactly at the limit it is sent.
        std::fs::write(&path, "z".repeat(4096)).unwrap();
        assert_eq!(line_end(p, 0).await.unwrap(), None);
        std::fs::write(&path, format!("{}\n", "z".repeat(4096))).unwrap();
        let (lines, err) = all_lines(p, 4096).await;
        assert_eq!((lines.len(), err), (1, None));
    }
}
