//! FileStreamSink's task: appends each record's value to a file as one line (`file`, `topics` or
//! `topics.regex`).
//!
//! **At-least-once:** the task consumes in the consumer group `connect-<name>` with auto-commit off; a batch's
//! offsets are committed only after its lines are written, flushed and fsynced. After a crash the records
//! after the last commit are written again (duplicates), none is lost.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::ConfigMap;
use crate::worker::TaskContext;

/// The most records written between two commits.
const MAX_BATCH: usize = 1000;
/// How long a batch waits for more records once it has one.
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// The consumer group of a sink connector, as Connect names it.
pub fn group_of(connector: &str) -> String {
    format!("connect-{connector}")
}

/// The topics (or the `^`-anchored pattern) a sink connector subscribes to.
pub fn subscription_of(config: &ConfigMap) -> Vec<String> {
    subscription(config)
}

fn subscription(config: &ConfigMap) -> Vec<String> {
    let topics: Vec<String> = config
        .get("topics")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !topics.is_empty() {
        return topics;
    }
    // librdkafka takes a subscription starting with ^ as a regular expression.
    match config.get("topics.regex").map(|r| r.trim()) {
        // Anchored at both ends as Connect's Java regex `matches()`: librdkafka alone matches a prefix, and
        // `topics.regex=cat` would also take `catalog`.
        Some(r) if !r.is_empty() => vec![format!(
            "^(?:{})$",
            r.trim_start_matches('^').trim_end_matches('$')
        )],
        _ => Vec::new(),
    }
}

/// Runs the task until `stop` turns true (Ok) or it fails (Err with what happened and what to do).
pub async fn run(ctx: TaskContext, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let path = ctx
        .config
        .get("file")
        .map(|f| f.trim().to_string())
        .unwrap_or_default();
    let group = group_of(&ctx.connector);
    // Checked when the connector was created; a config that no longer parses fails the task, naming the key.
    let chain = crate::transforms::Chain::from_config(&ctx.config)
        .map_err(|e| format!("invalid transforms: {}", e.join("; ")))?;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &ctx.bootstrap_servers)
        .set("group.id", &group)
        .set(
            "client.id",
            format!("connector-consumer-{}-0", ctx.connector),
        )
        .set("auto.offset.reset", "earliest");
    for (k, v) in &ctx.client_overrides {
        client.set(k, v);
    }
    // Offsets are committed by the task after the lines are on disk, never by the client.
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
    let consumer = Arc::new(consumer);
    let mut reporter = crate::error_handling::Reporter::new(
        crate::error_handling::ErrorConfig::from_config(&ctx.config)?,
        &ctx.connector,
        0,
        &ctx.bootstrap_servers,
        &[],
    );
    let topics = subscription(&ctx.config);
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {path} for appending: {e}"))?;
    // The file's name must be durable before any offset past what it holds is committed.
    crate::offsets::sync_parent(std::path::Path::new(&path))
        .map_err(|e| format!("cannot sync the directory of {path}: {e}"))?;
    tracing::info!(connector = %ctx.connector, file = %path, ?topics, group = %group, "file sink starting");

    let result = loop {
        if *stop.borrow() || stop.has_changed().is_err() {
            break Ok(());
        }
        let first = tokio::select! {
            m = consumer.recv() => m,
            _ = stop.changed() => continue,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout(BATCH_LINGER, consumer.recv()).await {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut failure = None;
        for m in batch {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    // Connection trouble: librdkafka retries by itself; the records already read still count.
                    tracing::warn!(connector = %ctx.connector, "consuming: {e}");
                    continue;
                }
            };
            let converted = if chain.is_empty() {
                ctx.value_converter
                    .to_connect(m.payload())
                    .map(Some)
                    .map_err(|e| {
                        let why = format!("it cannot be converted by value.converter: {e}");
                        (crate::error_handling::Stage::ValueConverter, why)
                    })
            } else {
                crate::error_handling::convert_and_transform(&ctx, &chain, &m)
                    .map(|r| r.map(|r| r.value.to_data()))
            };
            match converted {
                Ok(None) => {
                    // Dropped by a transform: consumed all the same.
                    next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                }
                Ok(Some(data)) => {
                    out.extend_from_slice(data.to_line().as_bytes());
                    out.push(b'\n');
                    next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                }
                Err(e) => {
                    // Errant: tolerated (logged, dead-lettered) per errors.*, or the task fails at it.
                    let (stage, why) = e;
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
        // (A batch that transforms dropped whole is committed too.)
        if !next.is_empty() {
            if let Err(e) = file
                .write_all(&out)
                .and_then(|_| file.flush())
                .and_then(|_| file.sync_data())
            {
                break Err(format!("writing {path} failed: {e}; the records are consumed again when the task restarts"));
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
    tracing::info!(connector = %ctx.connector, "file sink stopped");
    result
}

pub(crate) async fn commit(
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

/// The committed offsets of a sink connector's group, in KIP-875's shape:
/// `[{"partition": {"kafka_topic", "kafka_partition"}, "offset": {"kafka_offset"}}]`. Blocking.
pub fn committed_offsets(
    bootstrap: &str,
    connector: &str,
    config: &ConfigMap,
) -> Result<Vec<Value>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group_of(connector))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create a client for {bootstrap}: {e}"))?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| format!("cannot read the cluster's metadata from {bootstrap}: {e}"))?;
    let subscription = subscription(config);
    let pattern = subscription.first().filter(|s| s.starts_with('^')).cloned();
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        let wanted = match &pattern {
            Some(p) => regex_lite_match(p, t.name()),
            None => subscription.iter().any(|s| s == t.name()),
        };
        if wanted {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| {
        format!(
            "cannot read the committed offsets of group {}: {e}",
            group_of(connector)
        )
    })?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(json!({
                "partition": {"kafka_topic": e.topic(), "kafka_partition": e.partition()},
                "offset": {"kafka_offset": o},
            })),
            _ => None,
        })
        .collect())
}

/// Whether `topic` matches the subscription pattern (`^(?:...)$`, see [`subscription`]).
fn regex_lite_match(pattern: &str, topic: &str) -> bool {
    regex::Regex::new(pattern).is_ok_and(|r| r.is_match(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_regex_matches_whole_names_only() {
        for given in ["cat", "^cat", "cat$", "^cat$"] {
            let config: ConfigMap = [("topics.regex".to_string(), given.to_string())]
                .into_iter()
                .collect();
            let sub = subscription(&config);
            assert_eq!(sub.len(), 1);
            assert!(sub[0].starts_with('^'), "librdkafka needs ^ for a regex");
            assert!(regex_lite_match(&sub[0], "cat"), "{given}");
            assert!(
                !regex_lite_match(&sub[0], "catalog"),
                "{given}: not a prefix match"
            );
        }
    }
}
