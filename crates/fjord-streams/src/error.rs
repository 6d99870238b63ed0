//! The crate's one error type.

/// What went wrong building or running a topology. Messages say what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology is not valid (bad name, bad window, suppress on an unwindowed table, ...).
    #[error("invalid topology: {0}")]
    Topology(String),
    /// A configuration value is missing or out of range.
    #[error("invalid streams configuration: {0}")]
    Config(String),
    /// Inputs that must be co-partitioned (same partition count) are not.
    #[error("co-partitioning violated: {0}")]
    CoPartitioning(String),
    /// A source topic does not exist.
    #[error("source topic `{0}` does not exist: create it before starting the application")]
    MissingSourceTopic(String),
    /// The Kafka client failed (connection, produce, commit, transaction).
    #[error("kafka client: {0}")]
    Kafka(String),
    /// A local state store failed.
    #[error("state store: {0}")]
    Store(String),
    /// The run stopped on an earlier error (its message, prefixed as that error's kind is), as
    /// [`crate::KafkaStreams::close`] reports it.
    #[error("{0}")]
    Failed(String),
    /// A function of the topology refused a record ([`crate::KStream::try_flat_map`]): where, and why.
    #[error("{0}")]
    Record(String),
}

impl From<rdkafka::error::KafkaError> for Error {
    fn from(e: rdkafka::error::KafkaError) -> Error {
        Error::Kafka(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
