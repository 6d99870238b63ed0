//! Counters an application reads through [`crate::KafkaStreams::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub(crate) struct Metrics {
    pub records_processed: AtomicU64,
    pub late_records_dropped: AtomicU64,
    pub late_window_updates_dropped: AtomicU64,
    pub dropped_null_records: AtomicU64,
    pub invalid_timestamp_records: AtomicU64,
    pub records_sent: AtomicU64,
    pub commits: AtomicU64,
    pub output_flushes: AtomicU64,
    pub records_restored: AtomicU64,
    pub tasks_opened: AtomicU64,
}

/// A point-in-time copy of an instance's counters (since it started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Input records taken from source topics.
    pub records_processed: u64,
    /// Records a windowed aggregation dropped because every window they fall in had closed (end + grace at or
    /// before stream time; for sessions: the merged session ends more than grace before stream time).
    pub late_records_dropped: u64,
    /// Single window updates dropped as late (a hopping-window record may update some windows and miss others).
    pub late_window_updates_dropped: u64,
    /// Records an aggregation dropped because their key or value was null.
    pub dropped_null_records: u64,
    /// Records dropped because their event time was negative.
    pub invalid_timestamp_records: u64,
    /// Records written to output, repartition and changelog topics.
    pub records_sent: u64,
    /// Commits (each: stores and changelogs flushed, then input offsets committed).
    pub commits: u64,
    /// At least once, commits that began to wait for the outputs' acknowledgements (counted as the wait begins;
    /// it lasts up to the delivery timeout against a slow broker).
    pub output_flushes: u64,
    /// Changelog records read while restoring stores.
    pub records_restored: u64,
    /// Tasks (input partitions of a sub-topology) this instance started.
    pub tasks_opened: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            records_processed: g(&self.records_processed),
            late_records_dropped: g(&self.late_records_dropped),
            late_window_updates_dropped: g(&self.late_window_updates_dropped),
            dropped_null_records: g(&self.dropped_null_records),
            invalid_timestamp_records: g(&self.invalid_timestamp_records),
            records_sent: g(&self.records_sent),
            commits: g(&self.commits),
            output_flushes: g(&self.output_flushes),
            records_restored: g(&self.records_restored),
            tasks_opened: g(&self.tasks_opened),
        }
    }
}

pub(crate) fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}
