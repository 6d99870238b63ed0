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

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use crate::converter::Data;
use crate::worker::TaskContext;

/// How long the task waits for the file to grow when it has read everything (Connect's FileStreamSource
/// waits one second; shorter here, so that a new line is sent sooner).
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A line longer than this is sent in pieces of this size (with a warning) rather than buffered without bound.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// The file being read: its handle, identity and the bytes read past the last complete line.
struct Tail {
    file: tokio::fs::File,
    ino: u64,
    /// The file position of `buf[0]`.
    buf_start: u64,
    buf: Vec<u8>,
}

impl Tail {
    async fn open(path: &str, position: u64) -> std::io::Result<Tail> {
        let mut file = tokio::fs::File::open(path).await?;
        let ino = file.metadata().await?.ino();
        file.seek(std::io::SeekFrom::Start(position)).await?;
        Ok(Tail {
            file,
            ino,
            buf_start: position,
            buf: Vec::new(),
        })
    }

    /// Up to `max` complete lines with the position after each; reads more of the file when needed.
    async fn lines(&mut self, max: usize) -> std::io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        loop {
            while out.len() < max {
                let Some(line) = self.take_line() else { break };
                out.push(line);
            }
            if out.len() >= max {
                return Ok(out);
            }
            let mut chunk = vec![0u8; READ_CHUNK];
            let n = self.file.read(&mut chunk).await?;
            if n == 0 {
                return Ok(out);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn take_line(&mut self) -> Option<(String, u64)> {
        let (len, consumed) = match self.buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, i + 1),
            None if self.buf.len() >= MAX_LINE_BYTES => {
                tracing::warn!("a line longer than {MAX_LINE_BYTES} bytes is sent in pieces");
                (MAX_LINE_BYTES, MAX_LINE_BYTES)
            }
            None => return None,
        };
        let mut text = &self.buf[..len];
        if text.last() == Some(&b'\r') {
            text = &text[..text.len() - 1];
        }
        let line = String::from_utf8_lossy(text).into_owned();
        self.buf.drain(..consumed);
        self.buf_start += consumed as u64;
        Some((line, self.buf_start))
    }
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
            format!("connector-producer-{}-0", ctx.connector),
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
    tracing::info!(connector = %ctx.connector, file = %path, topic = %topic, position, "file source starting");

    let mut tail: Option<Tail> = None;
    let mut missing_logged = false;
    let mut last_flush = Instant::now();
    let mut unflushed = false;
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
                    match Tail::open(&path, position).await {
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
        let lines = match t.lines(batch_size).await {
            Ok(l) => l,
            Err(e) => break Err(format!("reading {path} failed: {e}")),
        };
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
                if let Err(e) = flush(&ctx).await {
                    break Err(e);
                }
                unflushed = false;
                last_flush = Instant::now();
            }
            wait(&mut stop, POLL_INTERVAL).await;
            continue;
        }
        let end = lines.last().map(|(_, end)| *end).expect("not empty");
        if let Err(e) = send_batch(&producer, &ctx, &topic, lines).await {
            break Err(e);
        }
        // Every record up to `end` is acknowledged by all in-sync replicas: `end` may become the offset.
        position = end;
        ctx.offsets.put(
            &ctx.connector,
            partition.clone(),
            json!({"position": position}),
        );
        unflushed = true;
        if last_flush.elapsed() >= ctx.offset_flush_interval {
            if let Err(e) = flush(&ctx).await {
                break Err(e);
            }
            unflushed = false;
            last_flush = Instant::now();
        }
    };
    // Whatever was acknowledged is written, also when the task fails for another reason.
    if unflushed {
        flush(&ctx).await?;
    }
    tracing::info!(connector = %ctx.connector, position, "file source stopped");
    result
}

/// Sends the lines and waits until every one is acknowledged (or one fails: then nothing of the batch is
/// committed, and the task fails with the producer's error).
async fn send_batch(
    producer: &FutureProducer,
    ctx: &TaskContext,
    topic: &str,
    lines: Vec<(String, u64)>,
) -> Result<(), String> {
    let mut pending = Vec::with_capacity(lines.len());
    for (line, _) in lines {
        let value = ctx
            .value_converter
            .from_connect(&Data::String(line))
            .map_err(|e| format!("value.converter failed: {e}"))?;
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(v) = value.as_deref() {
            record = record.payload(v);
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
                Err((e, _)) => return Err(format!("producing to {topic} failed: {e}")),
            }
        }
    }
    for f in pending {
        match f.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(format!(
                    "producing to {topic} failed: {e}; the lines from the last stored position are sent again when the task restarts (POST /connectors/{}/restart?includeTasks=true)",
                    ctx.connector
                ))
            }
            Err(_) => return Err(format!("the producer was closed while sending to {topic}")),
        }
    }
    Ok(())
}

async fn flush(ctx: &TaskContext) -> Result<(), String> {
    let offsets = ctx.offsets.clone();
    tokio::task::spawn_blocking(move || offsets.flush())
        .await
        .map_err(|e| format!("writing the offsets file failed: {e}"))?
        .map_err(|e| {
            format!(
                "writing the offsets file {} failed: {e}; the previous offsets stay in place (check the disk, then restart the task)",
                ctx.offsets.path().display()
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
