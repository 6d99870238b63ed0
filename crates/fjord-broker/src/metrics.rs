//! Every metric the broker exports, in one place. Names follow Prometheus conventions; label names follow
//! Kafka's (`topic`, `request`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub request: String,
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
    pub requests: Family<RequestLabels, Counter>,
    pub request_errors: Family<RequestLabels, Counter>,
    pub request_latency: LatencyFamily,
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
        let request_errors = Family::<RequestLabels, Counter>::default();
        let request_latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let connections = Gauge::default();
        let connections_rejected = Counter::default();
        let malformed_frames = Counter::default();
        let transactions_ended = Family::<OutcomeLabels, Counter>::default();
        let transactions_timed_out = Counter::default();
        let transactions_ongoing = Gauge::default();
        let log_dir_offline = Family::<LogDirLabels, Gauge>::default();
        let offline_partitions = Gauge::default();
        let internal_records_skipped = Family::<TopicLabels, Counter>::default();
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
            "Responses with at least one error code, by Kafka API",
            request_errors.clone(),
        );
        registry.register(
            "request_latency_seconds",
            "Time from a request's arrival to its response, by Kafka API",
            request_latency.clone(),
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
        Metrics {
            registry,
            bytes_in,
            bytes_out,
            messages_in,
            messages_out,
            duplicate_batches,
            requests,
            request_errors,
            request_latency,
            connections,
            connections_rejected,
            malformed_frames,
            transactions_ended,
            transactions_timed_out,
            transactions_ongoing,
            log_dir_offline,
            offline_partitions,
            internal_records_skipped,
        }
    }

    pub fn topic(topic: &str) -> TopicLabels {
        TopicLabels {
            topic: topic.to_string(),
        }
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
