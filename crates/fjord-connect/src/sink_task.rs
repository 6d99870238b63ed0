//! The consume loop of the sinks that write batches somewhere else (Elasticsearch/OpenSearch, HTTP): consume in
//! the group `connect-<name>` (auto-commit off), turn each record into Connect data (key and value converters,
//! then the transforms), hand the batch to the writer, and commit the batch's offsets only once the writer says
//! it is written. A record that does not convert or transform is errant and goes through Connect's error
//! handling (`errors.tolerance`, the dead-letter topic: [`crate::error_handling`]); a failed write fails the task.
//!
//! **At-least-once:** a crash or a failed write repeats what came after the last commit; the writers make a
//! repeat harmless (Elasticsearch: the same document ids) or say so (HTTP: the same batch POSTed again).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::transforms::{Chain, Record};
use crate::worker::TaskContext;

/// How long a batch waits for more records once it has its first (one deadline for the whole batch).
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// Where a sink's batches go.
pub trait BatchWriter: Send {
    /// Writes the batch (records after the transforms, in consumed order); Ok only once all of it is durable
    /// at the destination (or skipped as configured). Err fails the task with that message.
    fn write(&mut self, batch: Vec<Record>) -> impl Future<Output = Result<(), String>> + Send;
}

/// Runs a sink task until `stop` turns true (Ok) or it fails (Err with what happened and what to do).
pub async fn run<W: BatchWriter>(
    ctx: TaskContext,
    mut stop: watch::Receiver<bool>,
    max_batch: usize,
    mut writer: W,
) -> Result<(), String> {
    let chain = Chain::from_config(&ctx.config)
        .map_err(|e| format!("invalid transforms: {}", e.join("; ")))?;
    let (consumer, topics, group) = subscribe(&ctx)?;
    // Records that do not convert or transform: per errors.* (skipped, logged, dead-lettered) or the task fails.
    let mut reporter = crate::error_handling::Reporter::new(
        crate::error_handling::ErrorConfig::from_config(&ctx.config)?,
        &ctx.connector,
        ctx.task,
        &ctx.bootstrap_servers,
        &ctx.dlq_overrides,
    );
    tracing::info!(connector = %ctx.connector, ?topics, group = %group, "sink task starting");

    let result = loop {
        if *stop.borrow() || stop.has_changed().is_err() {
            break Ok(());
        }
        let first = tokio::select! {
            m = consumer.recv() => m,
            _ = stop.changed() => continue,
        };
        let mut batch = vec![first];
        fill(&mut batch, max_batch, || consumer.recv()).await;
        let mut records = Vec::with_capacity(batch.len());
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut failure = None;
        for m in batch {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(connector = %ctx.connector, "consuming: {e}");
                    continue;
                }
            };
            // A registry converter fetches the record's schema first; an unreachable registry fails the task
            // here (after what converted before is written), the record is read again after the restart.
            if let Err(e) =
                crate::error_handling::prepare_converters(&ctx, m.key(), m.payload()).await
            {
                failure = Some(e);
                break;
            }
            match crate::error_handling::convert_and_transform(&ctx, &chain, &m) {
                Ok(r) => {
                    records.extend(r);
                    next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                }
                Err((stage, why)) => {
                    // Errant: tolerated (logged, dead-lettered) per errors.*, or the task fails at it.
                    match reporter.report(&m.detach(), stage, &why).await {
                        Ok(()) => {
                            next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                        }
                        Err(f) => {
                            failure = Some(f);
                            break;
                        }
                    }
                }
            }
        }
        // What converted is written and committed before a conversion failure stops the task.
        if !next.is_empty() {
            if !records.is_empty() {
                // A stop (pause, delete, shutdown) does not wait for a slow destination: the write is dropped
                // uncommitted, and the batch is written again when the task runs again.
                let written = tokio::select! {
                    r = writer.write(records) => Some(r),
                    _ = stop.wait_for(|s| *s) => None,
                };
                match written {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        break Err(format!(
                            "{e}; the records since the last commit are written again when the task restarts (POST /connectors/{}/restart?includeTasks=true)",
                            ctx.connector
                        ))
                    }
                    None => {
                        tracing::info!(connector = %ctx.connector, "stopped during a write; the batch is not committed and is written again when the task runs again");
                        break Ok(());
                    }
                }
            }
            if let Err(e) = commit(&consumer, &next).await {
                tracing::warn!(connector = %ctx.connector, "committing offsets failed ({e}); the records since the last commit will be written again");
            }
        }
        if let Some(f) = failure {
            break Err(f);
        }
        if next.is_empty() {
            // Only errors came: do not spin on them.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Leaving the group blocks in librdkafka: not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    tracing::info!(connector = %ctx.connector, "sink task stopped");
    result
}

/// A sink task's consumer, subscribed: group `connect-<name>`, auto-commit off (the task commits what it wrote),
/// the worker's `consumer.*` settings applied. Every task of the connector has one in the same group, so the
/// group protocol gives each task its share of the partitions, and a task commits only what it consumed (the
/// partitions it holds). Returns it with its subscription and group.
pub fn subscribe(ctx: &TaskContext) -> Result<(Arc<StreamConsumer>, Vec<String>, String), String> {
    let group = crate::file_sink::group_of(&ctx.connector);
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &ctx.bootstrap_servers)
        .set("group.id", &group)
        .set(
            "client.id",
            format!("connector-consumer-{}-{}", ctx.connector, ctx.task),
        )
        .set("auto.offset.reset", "earliest")
        // librdkafka stops fetching once queued.min.messages (100,000) are queued, then waits
        // fetch.queue.backoff.ms (1 s) before fetching again: a sink that drains its queue faster would sit
        // idle for the rest of that second. The worker's `consumer.*` settings still override both.
        .set("queued.min.messages", "500000")
        .set("fetch.queue.backoff.ms", "1");
    for (k, v) in &ctx.client_overrides {
        client.set(k, v);
    }
    let consumer: StreamConsumer =
        client
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| {
                format!(
                    "cannot create the consumer for {}: {e}",
                    ctx.bootstrap_servers
                )
            })?;
    let topics = crate::file_sink::subscription_of(&ctx.config);
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
    Ok((Arc::new(consumer), topics, group))
}

/// Adds what `next` yields to `batch` until it holds `max` or BATCH_LINGER has passed since this call (a steady
/// trickle of records must not keep a batch open: one deadline, not one per record).
async fn fill<T, F: Future<Output = T>>(
    batch: &mut Vec<T>,
    max: usize,
    mut next: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + BATCH_LINGER;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, next()).await {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
}

/// Commits `next` (the offsets after what was written), synchronously on a blocking thread.
pub async fn commit(
    consumer: &Arc<StreamConsumer>,
    next: &BTreeMap<(String, i32), i64>,
) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in next {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(|e| e.to_string())?;
    }
    let c = consumer.clone();
    tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Exponential backoff: `base` doubled per attempt (from 0), at most 60 s.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(60))
}

/// A config value parsed as `T`, or `default` when unset (validated before the task starts).
pub fn num<T: std::str::FromStr>(config: &crate::config::ConfigMap, key: &str, default: T) -> T {
    config
        .get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The most retries `max.retries` allows: with the 60 s backoff cap, more only keeps a failed batch (and its
/// partitions) stuck for hours.
pub const MAX_RETRIES_LIMIT: u32 = 100;

/// The most milliseconds a `*.ms` setting allows (Connect's INT type): larger values would overflow the
/// deadlines computed from them.
pub const MAX_MS: u32 = i32::MAX as u32;

/// The error of a whole-number setting outside `min..=max` (parsed as the type the sink uses), or None.
pub fn range_error(value: &str, min: u32, max: u32) -> Option<String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => None,
        _ => Some(format!("Value must be a number from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records arriving every 5 ms (faster than the linger) still end the batch once BATCH_LINGER has passed
    /// since it began, not after `max` records.
    #[tokio::test]
    async fn a_trickle_of_records_does_not_keep_the_batch_open() {
        let mut batch = vec![0u32];
        let mut n = 0;
        let started = std::time::Instant::now();
        fill(&mut batch, 1000, || {
            n += 1;
            let i = n;
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                i
            }
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(1) && batch.len() < 100,
            "{} records in {:?}",
            batch.len(),
            started.elapsed()
        );
        assert!(batch.len() > 1);
    }
}
