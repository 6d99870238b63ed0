//! What every client command shares: connection options, the librdkafka configuration built from them, and
//! the mapping from failures to messages and exit codes that scripts can rely on. librdkafka's own words
//! (log lines, error strings) reach the user only with `--verbose`; otherwise they are turned into one clear
//! line here ([`CliContext`]).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaConfRes;
use rdkafka::{ClientConfig, ClientContext};

/// Exit codes, stable for scripts (documented in `fjord --help`).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_BAD_ARGS: u8 = 2;
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
    /// Arguments our own validation refuses (exit 2, like clap's own refusals).
    pub fn bad_args(message: impl Into<String>) -> Self {
        Self::new(EXIT_BAD_ARGS, message)
    }
}

/// Writes one line to stderr, ignoring failure: a closed stderr (`fjord consume ... 2>&1 | head -1`) must
/// not turn a clean exit into a panic.
pub fn note(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(line);
    let _ = err.write_all(b"\n");
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
    /// Extra librdkafka client property, e.g. -X socket.keepalive.enable=true (repeatable); an unknown
    /// property or a bad value is refused.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub client_properties: Vec<String>,
    /// Show librdkafka's own log lines (connection attempts, retries, protocol details) as they come,
    /// instead of one summary line every few seconds.
    #[arg(long)]
    pub verbose: bool,
}

impl ClientArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The librdkafka configuration: the broker address (checked first, see [`ClientArgs::check_reachable`]),
    /// the timeout and the `-X` properties (each validated). Settings a command adds afterwards must not
    /// override `-X`: use [`ClientArgs::config_with`].
    pub fn config(&self) -> Result<ClientConfig, CliError> {
        self.config_with(&[], &[])
    }

    /// [`ClientArgs::config`] with a command's own `settings` underneath the user's properties: `-X` first,
    /// then `extra` (e.g. `--producer-property`, validated like `-X` and named `flag` in messages) win.
    pub fn config_with(
        &self,
        settings: &[(&str, String)],
        extra: &[(&str, &[String])],
    ) -> Result<ClientConfig, CliError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_server).set(
            "socket.timeout.ms",
            self.request_timeout_ms.max(10).to_string(),
        );
        if self.verbose {
            c.set("log_level", "7")
                .set_log_level(RDKafkaLogLevel::Debug);
        } else {
            // librdkafka's log lines stay inside; errors still reach CliContext::error. (rust-rdkafka sets
            // the level from set_log_level after creating the client, overriding the property.)
            c.set("log_level", "0")
                .set_log_level(RDKafkaLogLevel::Emerg);
        }
        for (k, v) in settings {
            c.set(*k, v);
        }
        let mut user: Vec<(&str, &String)> =
            self.client_properties.iter().map(|p| ("-X", p)).collect();
        for (flag, props) in extra {
            user.extend(props.iter().map(|p| (*flag, p)));
        }
        for (flag, p) in user {
            let (k, v) = parse_property(flag, p)?;
            c.set(k, v);
        }
        self.check_reachable()?;
        Ok(c)
    }

    /// Fails fast, before librdkafka would retry for the whole timeout, when the bootstrap address is
    /// malformed (exit 2), its host name does not resolve (3), or every address refuses the connection (3).
    /// A connection that neither succeeds nor is refused is left to librdkafka and the request timeout.
    pub fn check_reachable(&self) -> Result<(), CliError> {
        let mut refused = Vec::new();
        let mut other = None;
        for server in self.bootstrap_server.split(',') {
            let server = server.trim();
            let hostport = server
                .split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or(server);
            let (host, port) = hostport
                .rsplit_once(':')
                .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
                .ok_or_else(|| {
                    CliError::bad_args(format!(
                        "--bootstrap-server `{server}` is not HOST:PORT (e.g. 127.0.0.1:9092)"
                    ))
                })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match (host, port.parse::<u16>().unwrap_or(0))
                .to_socket_addrs()
            {
                Ok(a) => a.collect(),
                Err(_) => {
                    other.get_or_insert_with(|| {
                        format!("cannot resolve the broker host `{host}` (DNS lookup failed). Check the name, or pass --bootstrap-server HOST:PORT.")
                    });
                    continue;
                }
            };
            for addr in addrs {
                match TcpStream::connect_timeout(
                    &addr,
                    self.timeout().max(Duration::from_millis(10)),
                ) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        refused.push(addr.to_string())
                    }
                    // Timeouts, unreachable networks: librdkafka may still get through (a proxy, a slow
                    // route); it has the whole request timeout.
                    Err(_) => return Ok(()),
                }
            }
        }
        if !refused.is_empty() {
            return Err(CliError::new(
                EXIT_UNREACHABLE,
                format!(
                    "cannot reach a broker at {}: connection refused (nothing listens there). Is it running? Start one with `fjord start`, or pass --bootstrap-server HOST:PORT.",
                    refused.join(", ")
                ),
            ));
        }
        Err(CliError::new(
            EXIT_UNREACHABLE,
            other.unwrap_or_else(|| self.unreachable().message),
        ))
    }

    /// What clients of this command report through: librdkafka's lines mapped to clear ones.
    pub fn context(&self) -> CliContext {
        CliContext::new(self.verbose, &self.bootstrap_server)
    }

    pub fn consumer(&self) -> Result<BaseConsumer, CliError> {
        self.config()?
            .create()
            .map_err(|e| CliError::failure(format!("cannot create a client: {e}")))
    }

    /// Cluster metadata, or a clear "broker unreachable" error.
    pub fn metadata<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
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

/// Why librdkafka refused to create a client. Each property was checked alone already (see
/// [`parse_property`]), so what remains is a combination, e.g. `-X linger.ms` above `message.timeout.ms`:
/// bad arguments, named in librdkafka's words because they name the two properties.
pub fn creation_error(what: &str, e: KafkaError) -> CliError {
    match e {
        KafkaError::ClientCreation(why) => CliError::bad_args(format!(
            "cannot create a {what} with these properties: {why}"
        )),
        other => CliError::failure(format!(
            "cannot create a {what}: {}",
            other
                .rdkafka_error_code()
                .map(describe_code)
                .unwrap_or_else(|| other.to_string())
        )),
    }
}

/// Splits and validates one `-X KEY=VALUE` (or `--producer-property`, `--consumer-property`) against
/// librdkafka's table, so a typo or a bad value is refused with our message instead of being ignored or
/// surfacing as librdkafka's text.
pub fn parse_property<'a>(flag: &str, p: &'a str) -> Result<(&'a str, &'a str), CliError> {
    let (k, v) = p
        .split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| CliError::bad_args(format!("{flag} `{p}` is not KEY=VALUE")))?;
    let mut probe = ClientConfig::new();
    probe.set(k, v);
    match probe.create_native_config() {
        Ok(_) => Ok((k, v)),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => {
            Err(CliError::bad_args(format!(
                "{flag} {k}={v}: `{k}` is not a client property (the list: https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md)"
            )))
        }
        Err(KafkaError::ClientConfig(_, desc, ..)) => {
            // librdkafka's description may carry the allowed range or values; keep only that part.
            let hint = desc
                .find("allowed range")
                .map(|i| format!(" ({})", desc[i..].trim_end_matches('.')))
                .unwrap_or_default();
            Err(CliError::bad_args(format!(
                "{flag} {k}={v}: `{v}` is not a valid value for `{k}`{hint}"
            )))
        }
        Err(_) => Err(CliError::bad_args(format!("{flag} `{p}` is not accepted"))),
    }
}

/// The client context of produce and consume: librdkafka's log lines are shown raw only with `--verbose`;
/// otherwise errors are turned into one clear line, at most once every [`NOTICE_EVERY`], since librdkafka
/// reports the same failure on every retry.
pub struct CliContext {
    verbose: bool,
    /// The broker to name when librdkafka's error does not say which.
    bootstrap: String,
    last_notice: Mutex<Option<Instant>>,
}

pub const NOTICE_EVERY: Duration = Duration::from_secs(5);

impl CliContext {
    pub fn new(verbose: bool, bootstrap: &str) -> Self {
        Self {
            verbose,
            bootstrap: bootstrap.to_string(),
            last_notice: Mutex::new(None),
        }
    }

    /// Prints `line` unless another notice was printed within [`NOTICE_EVERY`].
    pub fn notice(&self, line: &str) {
        let mut last = self.last_notice.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < NOTICE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        note(format_args!("{line}"));
    }

    /// A consumer error from a poll, shown like librdkafka's error events.
    pub fn consumer_error(&self, e: &KafkaError) {
        if self.verbose {
            note(format_args!("librdkafka: {e}"));
        } else {
            self.notice(&friendly_error(
                e.rdkafka_error_code(),
                &e.to_string(),
                &self.bootstrap,
            ));
        }
    }
}

/// One line a person can act on for a librdkafka error event; `reason` is librdkafka's text, which
/// usually names the broker (`127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: ...`,
/// `GroupCoordinator: 127.0.0.1:9092: ...`); where it does not, `fallback` (the bootstrap list) is named.
pub fn friendly_error(code: Option<RDKafkaErrorCode>, reason: &str, fallback: &str) -> String {
    let broker = reason
        .split_whitespace()
        .map(|t| {
            let t = t.trim_end_matches([':', ',']);
            let t = t.split('/').next().unwrap_or(t);
            t.rsplit('#').next().unwrap_or(t)
        })
        .find(|t| {
            t.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .unwrap_or(fallback);
    match code {
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut,
        ) => format!("broker {broker} unreachable, retrying..."),
        // The code's name, not librdkafka's description ("Local: ...").
        Some(code) => format!("client error {code:?}, retrying... (--verbose shows details)"),
        None => "client error, retrying... (--verbose shows details)".to_string(),
    }
}

impl ClientContext for CliContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if self.verbose {
            note(format_args!("librdkafka {level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news for --exit-at-end, not an error.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        if self.verbose {
            note(format_args!("librdkafka error: {error}: {reason}"));
        } else {
            self.notice(&friendly_error(
                error.rdkafka_error_code(),
                reason,
                &self.bootstrap,
            ));
        }
    }
}

impl ConsumerContext for CliContext {}

/// The hint suggests creating the topic only for a name that can be created (not a reserved `__` name, a
/// pattern or an invalid name).
pub fn unknown_topic(topic: &str) -> CliError {
    crate::ops::missing_topic(topic)
}

/// A readable name for a broker error code (librdkafka's names, e.g. TopicAlreadyExists).
pub fn describe_code(code: RDKafkaErrorCode) -> String {
    format!("{code} ({code:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_errors_become_one_line_naming_the_broker() {
        let refused = "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)";
        assert_eq!(
            friendly_error(
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                refused,
                "x:1"
            ),
            "broker 127.0.0.1:9092 unreachable, retrying..."
        );
        assert_eq!(
            friendly_error(
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "GroupCoordinator: 10.0.0.5:9093: Disconnected",
                "x:1"
            ),
            "broker 10.0.0.5:9093 unreachable, retrying..."
        );
        assert_eq!(
            friendly_error(
                Some(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down",
                "h:9092"
            ),
            "broker h:9092 unreachable, retrying..."
        );
        let other = friendly_error(Some(RDKafkaErrorCode::UnknownMemberId), "whatever", "h:1");
        assert!(
            !other.contains("Local:") && !other.contains("Broker:"),
            "{other}"
        );
    }
}
