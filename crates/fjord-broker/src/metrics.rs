//! Every metric the broker exports, in one place. Names follow Prometheus conventions; label names follow
//! Kafka's (`topic`, `partition`, `request`, `error`).
//!
//! Two kinds: counters and histograms updated on the request path (the [`Metrics`] registry), and gauges
//! computed at scrape time from in-memory state ([`scrape`]): per-partition log size and offsets, consumer
//! group lag, process CPU, memory and file descriptors. Scrape-time gauges never touch a partition's files, so a
//! scrape of 10,000 partitions costs a lock and three loads per partition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::BrokerState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub request: String,
}

/// A response that carried an error code: the API, and the error by Kafka's name (`UNKNOWN_TOPIC_OR_PARTITION`)
/// and number, like Kafka's `ErrorsPerSec{request,error}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub request: String,
    pub error: String,
    pub code: i16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `commit` or `abort`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogDirLabels {
    /// The log directory as configured in `log.dirs`.
    pub dir: String,
}

impl LogDirLabels {
    pub fn new(dir: &std::path::Path) -> Self {
        LogDirLabels {
            dir: dir.display().to_string(),
        }
    }
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub bytes_in: Family<TopicLabels, Counter>,
    pub bytes_out: Family<TopicLabels, Counter>,
    pub messages_in: Family<TopicLabels, Counter>,
    pub messages_out: Family<TopicLabels, Counter>,
    pub duplicate_batches: Family<TopicLabels, Counter>,
    /// ISR changes this broker got committed as a leader (Kafka's IsrShrinksPerSec / IsrExpandsPerSec).
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    /// ISR changes the quorum refused or could not commit (Kafka's FailedIsrUpdatesPerSec).
    pub isr_update_failures: Counter,
    pub requests: Family<RequestLabels, Counter>,
    /// Error codes in responses, each occurrence counted (a produce of three partitions that all fail counts
    /// three), by API and error. Error code 0 (NONE) is not counted.
    pub request_errors: Family<ErrorLabels, Counter>,
    pub request_latency: LatencyFamily,
    /// Time a fetch spent parked waiting for data (long poll, up to its max.wait.ms); 0 when data was there.
    pub fetch_wait: Histogram,
    /// Time a fetch spent reading logs and building its response, without the long-poll wait.
    pub fetch_processing: Histogram,
    pub connections: Gauge,
    pub connections_rejected: Counter,
    pub malformed_frames: Counter,
    pub transactions_ended: Family<OutcomeLabels, Counter>,
    pub transactions_timed_out: Counter,
    pub transactions_ongoing: Gauge,
    /// 1 for a log directory taken offline by an I/O error, 0 for one in service (Kafka's `OfflineLogDirectoryCount`
    /// per directory).
    pub log_dir_offline: Family<LogDirLabels, Gauge>,
    /// Partitions hosted here that answer KAFKA_STORAGE_ERROR (Kafka's `OfflinePartitionsCount`).
    pub offline_partitions: Gauge,
    /// Time of each fsync of a partition's log (Kafka's `LogFlushRateAndTimeMs`): acks=all produce waits and
    /// `log.flush.interval.ms` flushes alike.
    pub log_flush: Histogram,
    pub internal_records_skipped: Family<TopicLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s: covers a cached read and a long-polling fetch.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fjord");
        let bytes_in = Family::<TopicLabels, Counter>::default();
        let bytes_out = Family::<TopicLabels, Counter>::default();
        let messages_in = Family::<TopicLabels, Counter>::default();
        let messages_out = Family::<TopicLabels, Counter>::default();
        let duplicate_batches = Family::<TopicLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_errors = Family::<ErrorLabels, Counter>::default();
        let request_latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let fetch_wait = latency_histogram();
        let fetch_processing = latency_histogram();
        let connections = Gauge::default();
        let connections_rejected = Counter::default();
        let malformed_frames = Counter::default();
        let transactions_ended = Family::<OutcomeLabels, Counter>::default();
        let transactions_timed_out = Counter::default();
        let transactions_ongoing = Gauge::default();
        let log_dir_offline = Family::<LogDirLabels, Gauge>::default();
        let offline_partitions = Gauge::default();
        let log_flush = latency_histogram();
        let internal_records_skipped = Family::<TopicLabels, Counter>::default();
        let isr_shrinks = Counter::default();
        let isr_expands = Counter::default();
        let isr_update_failures = Counter::default();
        registry.register(
            "isr_update_failures",
            "ISR changes this broker asked for as a leader that the metadata quorum refused or did not commit",
            isr_update_failures.clone(),
        );
        registry.register(
            "isr_shrinks",
            "In-sync replica sets this broker shrank as a leader (a follower fell behind replica.lag.time.max.ms)",
            isr_shrinks.clone(),
        );
        registry.register(
            "isr_expands",
            "In-sync replica sets this broker expanded as a leader (a follower caught up)",
            isr_expands.clone(),
        );
        registry.register(
            "internal_records_skipped",
            "Records of an internal topic (__consumer_offsets, __transaction_state) skipped at start-up because they could not be decoded; a batch that does not decode counts once",
            internal_records_skipped.clone(),
        );
        registry.register(
            "topic_bytes_in",
            "Record-batch bytes appended, by topic",
            bytes_in.clone(),
        );
        registry.register(
            "topic_bytes_out",
            "Record-batch bytes sent to fetchers, by topic",
            bytes_out.clone(),
        );
        registry.register(
            "topic_messages_in",
            "Records appended, by topic",
            messages_in.clone(),
        );
        registry.register(
            "topic_duplicate_batches",
            "Retried batches of idempotent producers answered with their original offsets, not appended again",
            duplicate_batches.clone(),
        );
        registry.register(
            "topic_messages_out",
            "Records in the batches sent to fetchers, by topic (counted from batch headers)",
            messages_out.clone(),
        );
        registry.register(
            "requests",
            "Requests handled, by Kafka API",
            requests.clone(),
        );
        registry.register(
            "request_errors",
            "Error codes in responses (each partition or resource that failed counts once), by Kafka API and error",
            request_errors.clone(),
        );
        registry.register(
            "request_latency_seconds",
            "Time from a request's arrival to its response, by Kafka API (for Fetch this includes the long-poll wait: see fetch_wait_seconds and fetch_processing_seconds)",
            request_latency.clone(),
        );
        registry.register(
            "fetch_wait_seconds",
            "Time a fetch spent parked waiting for data to arrive (the long poll bounded by its max.wait.ms)",
            fetch_wait.clone(),
        );
        registry.register(
            "fetch_processing_seconds",
            "Time a fetch spent reading logs and building its response, without the long-poll wait",
            fetch_processing.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections refused because max.connections was reached",
            connections_rejected.clone(),
        );
        registry.register(
            "malformed_frames",
            "Connections closed for a malformed, oversized or undecodable request",
            malformed_frames.clone(),
        );
        registry.register(
            "transactions_ended",
            "Transactions ended by the transaction coordinator, by outcome (commit, abort)",
            transactions_ended.clone(),
        );
        registry.register(
            "transactions_timed_out",
            "Transactions aborted because they outlived their transaction.timeout.ms",
            transactions_timed_out.clone(),
        );
        registry.register(
            "transactions_ongoing",
            "Open transactions (state Ongoing) in the transaction coordinator",
            transactions_ongoing.clone(),
        );
        registry.register(
            "log_dir_offline",
            "1 when the log directory was taken offline by an I/O error (its partitions answer KAFKA_STORAGE_ERROR until a restart), else 0",
            log_dir_offline.clone(),
        );
        registry.register(
            "offline_partitions",
            "Partitions hosted here that cannot serve: in an offline log directory, or whose directory could not be opened",
            offline_partitions.clone(),
        );
        registry.register(
            "log_flush_seconds",
            "Time of each fsync of a partition's log files",
            log_flush.clone(),
        );
        Metrics {
            registry,
            bytes_in,
            bytes_out,
            messages_in,
            messages_out,
            duplicate_batches,
            isr_shrinks,
            isr_expands,
            isr_update_failures,
            requests,
            request_errors,
            request_latency,
            fetch_wait,
            fetch_processing,
            connections,
            connections_rejected,
            malformed_frames,
            transactions_ended,
            transactions_timed_out,
            transactions_ongoing,
            log_dir_offline,
            offline_partitions,
            log_flush,
            internal_records_skipped,
        }
    }

    pub fn topic(topic: &str) -> TopicLabels {
        TopicLabels {
            topic: topic.to_string(),
        }
    }

    /// Counts the error codes of one response (zeros are skipped).
    pub fn record_errors(&self, request: &RequestLabels, codes: &[i16]) {
        for &code in codes.iter().filter(|c| **c != 0) {
            self.request_errors
                .get_or_create(&ErrorLabels {
                    request: request.request.clone(),
                    error: error_name(code),
                    code,
                })
                .inc();
        }
    }

    /// Drops every series of a deleted topic, so that dashboards stop showing it (a topic created again under
    /// the name starts from zero, as Kafka's per-topic meters do).
    pub fn forget_topic(&self, topic: &str) {
        let labels = Self::topic(topic);
        for family in [
            &self.bytes_in,
            &self.bytes_out,
            &self.messages_in,
            &self.messages_out,
            &self.duplicate_batches,
            &self.internal_records_skipped,
        ] {
            family.remove(&labels);
        }
    }

    /// Prometheus text exposition format of the registry alone (no scrape-time gauges; see [`scrape`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Kafka's name of an error code (`UNKNOWN_TOPIC_OR_PARTITION`), or `UNKNOWN_<code>` for one this codec does
/// not know.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
        None => format!("UNKNOWN_{code}"),
    }
}

/// Everything `/metrics` serves: the registry, then the gauges computed now from in-memory state.
pub fn scrape(state: &BrokerState) -> String {
    let mut out = state.metrics.encode();
    // The registry's exposition ends with the OpenMetrics terminator; the scrape-time families go before it.
    let eof = out.rfind("# EOF").unwrap_or(out.len());
    out.truncate(eof);
    let mut w = Writer { out };
    build_info(&mut w);
    partitions(&mut w, state);
    replication(&mut w, state);
    controller(&mut w, state);
    consumer_groups(&mut w, state);
    process(&mut w);
    w.out.push_str("# EOF\n");
    w.out
}

/// Writes OpenMetrics text by hand: the scrape-time families change shape on every scrape (partitions come and
/// go), and building a registry of 10,000 label sets per scrape would cost more than the gauges themselves.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write;
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        use std::fmt::Write;
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn build_info(w: &mut Writer) {
    w.family(
        "fjord_build_info",
        "gauge",
        "Always 1; the labels say which Fjord build is running",
    );
    w.sample(
        "fjord_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            (
                "profile",
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            ),
        ],
        1,
    );
}

/// One partition's gauges: topic, partition, size in bytes, log start offset, log end offset.
type PartitionGauges = (String, i32, u64, i64, i64);

/// A scrape-time family: name, help, and how to read its value from a partition's gauges.
type PartitionFamily = (&'static str, &'static str, fn(&PartitionGauges) -> i64);

/// A group's committed offsets, copied out of the coordinator.
type GroupOffsets = (String, Vec<((String, i32), i64)>);

fn partitions(w: &mut Writer, state: &BrokerState) {
    let mut parts: Vec<PartitionGauges> = state
        .partitions
        .all()
        .iter()
        .map(|p| {
            let (start, _) = p.offsets();
            (
                p.topic.clone(),
                p.index,
                p.size_bytes(),
                start,
                p.log_end_offset(),
            )
        })
        .collect();
    parts.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let families: [PartitionFamily; 3] = [
        (
            "fjord_log_size_bytes",
            "Bytes in the partition's log segments, by topic and partition (Kafka's Log.Size)",
            |p| p.2 as i64,
        ),
        (
            "fjord_log_start_offset",
            "The first offset still in the partition's log (Kafka's Log.LogStartOffset)",
            |p| p.3,
        ),
        (
            "fjord_log_end_offset",
            "The offset the next record appended to the partition gets (Kafka's Log.LogEndOffset)",
            |p| p.4,
        ),
    ];
    for (name, help, get) in families {
        w.family(name, "gauge", help);
        for p in &parts {
            let partition = p.1.to_string();
            w.sample(name, &[("topic", &p.0), ("partition", &partition)], get(p));
        }
    }
}

/// The controller quorum as this node sees it: raft leader changes observed (each new leader, or new term of
/// a leader, once), whether this node is the active controller (Kafka's ActiveControllerCount), who leads and
/// in which term (KRaft's leader epoch); -1 while no leader is known.
fn controller(w: &mut Writer, state: &BrokerState) {
    let c = state.meta.controller_metrics();
    w.family(
        "fjord_controller_leader_changes",
        "counter",
        "Metadata quorum (raft) leaders this node has observed since it started: a new leader or a new term of one",
    );
    w.sample(
        "fjord_controller_leader_changes_total",
        &[],
        c.leader_changes,
    );
    w.family(
        "fjord_controller_active",
        "gauge",
        "1 if this node is the active controller (the metadata quorum's raft leader), else 0 (Kafka's ActiveControllerCount)",
    );
    w.sample("fjord_controller_active", &[], u8::from(c.active));
    w.family(
        "fjord_controller_leader_id",
        "gauge",
        "The node id of the active controller this node knows of, -1 if none",
    );
    w.sample("fjord_controller_leader_id", &[], c.leader.unwrap_or(-1));
    w.family(
        "fjord_controller_epoch",
        "gauge",
        "The metadata quorum's raft term as this node knows it (KRaft's leader epoch)",
    );
    w.sample("fjord_controller_epoch", &[], c.epoch);
}

/// Replication health as Kafka's ReplicaManager reports it: partitions led here, those whose ISR is smaller than
/// their replica set (UnderReplicatedPartitions), and on the leader each follower's lag behind its log end.
fn replication(w: &mut Writer, state: &BrokerState) {
    let mut leaders = 0u64;
    let mut under = 0u64;
    let mut lags: Vec<(String, i32, i32, i64)> = Vec::new();
    for p in state.partitions.all() {
        let r = p.replication();
        if r.leader != state.config.node_id {
            continue;
        }
        leaders += 1;
        if r.isr.len() < r.replicas.len() {
            under += 1;
        }
        let end = p.log_end_offset();
        for (b, f) in &r.followers {
            let lag = if f.log_end < 0 {
                end
            } else {
                (end - f.log_end).max(0)
            };
            lags.push((p.topic.clone(), p.index, *b, lag));
        }
    }
    w.family(
        "fjord_leader_partitions",
        "gauge",
        "Partitions this broker leads (Kafka's LeaderCount)",
    );
    w.sample("fjord_leader_partitions", &[], leaders);
    w.family(
        "fjord_under_replicated_partitions",
        "gauge",
        "Partitions led here whose in-sync replicas are fewer than their replicas (Kafka's UnderReplicatedPartitions)",
    );
    w.sample("fjord_under_replicated_partitions", &[], under);
    lags.sort();
    w.family(
        "fjord_follower_lag_offsets",
        "gauge",
        "On the leader: how many offsets each follower is behind the leader's log end, by topic, partition and replica",
    );
    for (topic, partition, replica, lag) in &lags {
        let (partition, replica) = (partition.to_string(), replica.to_string());
        w.sample(
            "fjord_follower_lag_offsets",
            &[
                ("topic", topic),
                ("partition", &partition),
                ("replica", &replica),
            ],
            lag,
        );
    }
}

/// Committed offsets and lag of every group with commits, against the high watermarks of the partitions hosted
/// here (kafka_exporter's `kafka_consumergroup_*`, computed by the broker itself).
fn consumer_groups(w: &mut Writer, state: &BrokerState) {
    use std::collections::BTreeMap;
    // (group, topic, partition) -> (committed, lag). Copied out under the coordinator lock, which is then
    // released before any partition lock is taken.
    let committed: Vec<GroupOffsets> = {
        let c = state.groups.lock();
        c.list()
            .into_iter()
            .map(|(g, _, _)| {
                let offsets = c
                    .fetch_offsets(&g)
                    .into_iter()
                    .map(|(tp, o)| (tp, o.offset))
                    .collect();
                (g, offsets)
            })
            .collect()
    };
    let mut rows: BTreeMap<(String, String, i32), (i64, i64)> = BTreeMap::new();
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for (group, offsets) in committed {
        for ((topic, partition), offset) in offsets {
            if offset < 0 {
                continue;
            }
            let Some(p) = state.partitions.get(&topic, partition) else {
                continue;
            };
            let lag = (p.high_watermark() - offset).max(0);
            *sums.entry(group.clone()).or_default() += lag;
            rows.insert((group.clone(), topic, partition), (offset, lag));
        }
    }
    w.family(
        "fjord_consumergroup_current_offset",
        "gauge",
        "The offset a consumer group committed on a partition",
    );
    for ((group, topic, partition), (offset, _)) in &rows {
        let p = partition.to_string();
        let labels = [
            ("group", group.as_str()),
            ("topic", topic),
            ("partition", &p),
        ];
        w.sample("fjord_consumergroup_current_offset", &labels, offset);
    }
    w.family(
        "fjord_consumergroup_lag",
        "gauge",
        "High watermark minus the committed offset of a consumer group on a partition (kafka_exporter's kafka_consumergroup_lag)",
    );
    for ((group, topic, partition), (_, lag)) in &rows {
        let p = partition.to_string();
        let labels = [
            ("group", group.as_str()),
            ("topic", topic),
            ("partition", &p),
        ];
        w.sample("fjord_consumergroup_lag", &labels, lag);
    }
    w.family(
        "fjord_consumergroup_lag_sum",
        "gauge",
        "The lag of a consumer group summed over the partitions it committed",
    );
    for (group, sum) in &sums {
        w.sample("fjord_consumergroup_lag_sum", &[("group", group)], sum);
    }
}

/// Process CPU, memory and file descriptors from /proc/self, under the names every Prometheus client library
/// uses (`process_*`). Absent where /proc is not (the families are then left out).
fn process(w: &mut Writer) {
    // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks; the fields after the
    // parenthesised command name (which may hold spaces) start at field 3.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> Option<f64> { fields.get(i - 3)?.parse().ok() };
        if let (Some(u), Some(s)) = (ticks(14), ticks(15)) {
            // USER_HZ is 100 on every Linux architecture Fjord builds for (sysconf would need libc).
            // OpenMetrics names a counter family without its `_total` suffix; the sample carries it.
            w.family(
                "process_cpu_seconds",
                "counter",
                "User and system CPU time spent by the broker process, in seconds",
            );
            w.sample("process_cpu_seconds_total", &[], (u + s) / 100.0);
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].split_whitespace().next()?.parse().ok()
        };
        if let Some(rss) = kb("VmRSS:") {
            w.family(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the broker process, in bytes",
            );
            w.sample("process_resident_memory_bytes", &[], rss * 1024);
        }
        if let Some(vm) = kb("VmSize:") {
            w.family(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory of the broker process, in bytes",
            );
            w.sample("process_virtual_memory_bytes", &[], vm * 1024);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        w.family(
            "process_open_fds",
            "gauge",
            "Open file descriptors of the broker process (sockets and log segments included)",
        );
        w.sample("process_open_fds", &[], dir.count());
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let max = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l["Max open files".len()..].split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(max) = max {
            w.family(
                "process_max_fds",
                "gauge",
                "The broker process's limit on open file descriptors (its soft RLIMIT_NOFILE)",
            );
            w.sample("process_max_fds", &[], max);
        }
    }
}
