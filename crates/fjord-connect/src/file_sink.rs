//! FileStreamSink's task: appends each record's value to a file as one line (`file`, `topics` or
//! `topics.regex`).
//!
//! **At-least-once:** the task consumes in the consumer group `connect-<name>` with auto-commit off; a batch's
//! offsets are committed only after its lines are written, flushed and fsynced. After a crash the records
//! after the last commit are written again (duplicates), none is lost.

use std::io::Write;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::ConfigMap;
use crate::worker::TaskContext;

/// The most records written between two commits.
const MAX_BATCH: usize = 1000;

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

/// Appends batches of records' values to the file, one line each, flushed and fsynced before the shared sink loop
/// ([`crate::sink_task`]) commits their offsets.
struct FileWriter {
    path: String,
    file: std::fs::File,
}

impl crate::sink_task::BatchWriter for FileWriter {
    async fn write(&mut self, batch: Vec<crate::transforms::Record>) -> Result<(), String> {
        let mut out = Vec::new();
        for r in &batch {
            out.extend_from_slice(r.value.to_data().to_line().as_bytes());
            out.push(b'\n');
        }
        self.file
            .write_all(&out)
            .and_then(|_| self.file.flush())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| format!("writing {} failed: {e}", self.path))
    }
}

/// Runs the task until `stop` turns true (Ok) or it fails (Err with what happened and what to do).
pub async fn run(ctx: TaskContext, stop: watch::Receiver<bool>) -> Result<(), String> {
    let path = ctx
        .config
        .get("file")
        .map(|f| f.trim().to_string())
        .unwrap_or_default();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {path} for appending: {e}"))?;
    // The file's name must be durable before any offset past what it holds is committed.
    crate::offsets::sync_parent(std::path::Path::new(&path))
        .map_err(|e| format!("cannot sync the directory of {path}: {e}"))?;
    tracing::info!(connector = %ctx.connector, file = %path, "file sink starting");
    crate::sink_task::run(ctx, stop, MAX_BATCH, FileWriter { path, file }).await
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
