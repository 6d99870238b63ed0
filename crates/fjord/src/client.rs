//! What every client command shares: connection options, the librdkafka configuration built from them, and
//! the mapping from failures to messages and exit codes that scripts can rely on.

use std::time::Duration;

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::ClientConfig;

/// Exit codes, stable for scripts (documented in `fjord --help`).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_UNKNOWN_TOPIC: u8 = 4;

/// An error that ends the command with a specific exit code and a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(EXIT_FAILURE, message)
    }
}

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Broker to connect to (host:port[,host:port...]).
    #[arg(
        long,
        short = 'b',
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092",
        env = "FJORD_BOOTSTRAP_SERVER"
    )]
    pub bootstrap_server: String,
    /// How long to wait for the broker before giving up, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Extra librdkafka client property, e.g. -X socket.keepalive.enable=true (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub client_properties: Vec<String>,
}

impl ClientArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn config(&self) -> Result<ClientConfig, CliError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_server)
            .set(
                "socket.timeout.ms",
                self.request_timeout_ms.max(10).to_string(),
            )
            // librdkafka logs connection failures itself; the command reports them once, clearly.
            .set("log_level", "0");
        for p in &self.client_properties {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| CliError::failure(format!("-X `{p}` is not KEY=VALUE")))?;
            c.set(k.trim(), v.trim());
        }
        Ok(c)
    }

    pub fn consumer(&self) -> Result<BaseConsumer, CliError> {
        self.config()?
            .create()
            .map_err(|e| CliError::failure(format!("cannot create a client: {e}")))
    }

    /// Cluster metadata, or a clear "broker unreachable" error.
    pub fn metadata(
        &self,
        consumer: &BaseConsumer,
        topic: Option<&str>,
    ) -> Result<Metadata, CliError> {
        consumer
            .fetch_metadata(topic, self.timeout())
            .map_err(|e| self.transport_error(e))
    }

    /// Turns a client error into the message a person needs.
    pub fn transport_error(&self, e: KafkaError) -> CliError {
        match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::Resolve,
            ) => self.unreachable(),
            _ => CliError::failure(format!("request to {} failed: {e}", self.bootstrap_server)),
        }
    }

    pub fn unreachable(&self) -> CliError {
        CliError::new(
            EXIT_UNREACHABLE,
            format!(
                "cannot reach a broker at {} within {} ms. Is it running? Start one with `fjord start`, or pass --bootstrap-server HOST:PORT.",
                self.bootstrap_server, self.request_timeout_ms
            ),
        )
    }

    /// Fails with exit code 4 unless `topic` exists. Metadata requests from this helper never auto-create.
    pub fn require_topic(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
    ) -> Result<Metadata, CliError> {
        let md = self.metadata(consumer, Some(topic))?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        match t.and_then(|t| t.error()) {
            None if t.is_some_and(|t| !t.partitions().is_empty()) => Ok(md),
            _ => Err(unknown_topic(topic)),
        }
    }
}

pub fn unknown_topic(topic: &str) -> CliError {
    CliError::new(
        EXIT_UNKNOWN_TOPIC,
        format!("topic `{topic}` does not exist. Create it with `fjord topics create {topic}`, or list topics with `fjord topics list`."),
    )
}

/// A readable name for a broker error code (librdkafka's names, e.g. TopicAlreadyExists).
pub fn describe_code(code: RDKafkaErrorCode) -> String {
    format!("{code} ({code:?})")
}
