//! The crate's single error type. The broker maps each variant to a Kafka error code in one place.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log. The comment after each variant names the Kafka error code the broker
/// should answer with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka CORRUPT_MESSAGE (2): CRC mismatch, truncated batch, inconsistent lengths.
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// Kafka INVALID_RECORD (87): a well-formed batch that breaks a rule (no records, bad offset delta).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// Kafka INVALID_RECORD (87) with per-record errors (KIP-467: the Produce response's `record_errors`): the
    /// batch is refused because of the records named by their index within it, e.g. keyless records sent to a
    /// compacted topic. Clients fail exactly those records and retry or fail the others separately.
    #[error("{message}")]
    RecordErrors {
        /// (index of the record within its batch, what is wrong with it).
        errors: Vec<(i32, String)>,
        message: String,
    },
    /// Kafka UNSUPPORTED_FOR_MESSAGE_FORMAT (43): magic other than 2.
    #[error("unsupported message format: {0}")]
    UnsupportedFormat(String),
    /// Kafka MESSAGE_TOO_LARGE (10).
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },
    /// Kafka OFFSET_OUT_OF_RANGE (1).
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// Kafka INVALID_TIMESTAMP (32).
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    /// Kafka KAFKA_STORAGE_ERROR (56).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Kafka KAFKA_STORAGE_ERROR (56): data known to be durable is damaged on disk (or the log was taken offline
    /// after an earlier I/O error). Nothing is truncated or deleted; the message says what the operator can do.
    #[error("storage damaged: {0}")]
    Damaged(String),
}

impl Error {
    /// True for errors that mean the disk (not the request) failed: the broker takes the log's directory
    /// offline instead of retrying.
    pub fn is_storage_error(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Damaged(_))
    }
}
