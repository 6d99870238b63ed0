//! Per-partition log configuration, named after Kafka's topic configs.

/// How record timestamps are interpreted (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    CreateTime,
    /// The broker stamps each batch with the append time (batch maxTimestamp, attribute bit 3).
    LogAppendTime,
}

/// Topic-level log settings. Field comments give the Kafka config name; `Default` gives Kafka's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll before an append that would make the active segment exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment this long after its first append.
    pub segment_ms: i64,
    /// `segment.index.bytes`: roll when an index file would exceed this.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of batches between two sparse index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms` (-1 = unlimited).
    pub retention_ms: i64,
    /// `retention.bytes` (-1 = unlimited).
    pub retention_bytes: i64,
    /// `max.message.bytes`: limit on one record batch.
    pub max_message_bytes: usize,
    /// `cleanup.policy` contains `delete`.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction, measured from the tombstone's timestamp.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `file.delete.delay.ms`. Fjord deletes files immediately (documented deviation); kept for config parity.
    pub file_delete_delay_ms: i64,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: a CreateTime record may be at most this far in the past.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: a CreateTime record may be at most this far in the future (so a client
    /// clock far ahead cannot pin a segment past its retention).
    pub timestamp_after_max_ms: i64,
    /// `compression.type`: `None` for `producer` (batches are stored as sent), else the codec every client batch
    /// is stored in (recompressed on append when it differs; `uncompressed` is `Compression::None`).
    pub compression: Option<kafka_protocol::records::Compression>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1_073_741_824,
            segment_ms: 604_800_000,
            segment_index_bytes: 10_485_760,
            index_interval_bytes: 4096,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            file_delete_delay_ms: 60_000,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            compression: None,
        }
    }
}
