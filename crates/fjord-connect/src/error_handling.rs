//! Connect's error handling for a task's records (KIP-298): `errors.tolerance`, `errors.log.enable`,
//! `errors.log.include.messages`, `errors.deadletterqueue.topic.name` (sinks; with Connect's `__connect.errors.*`
//! context headers when `errors.deadletterqueue.context.headers.enable`), and `errors.retry.timeout` /
//! `errors.retry.delay.max.ms` for retriable failures (a database that is down), retried with exponential backoff.
//!
//! A record that fails for a reason retrying cannot fix (it does not convert, or the database refuses its values)
//! is *errant*: with `errors.tolerance=none` (the default) it fails the task, whose trace names the record and
//! says what to do; with `all` it is logged (when asked), written to the dead-letter topic (when one is set) and
//! skipped, and the task keeps running. A dead-letter write is acknowledged (`acks=all`) before the sink commits
//! the offsets past that record, so a record is never both skipped and lost.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;

use crate::config::ConfigMap;

/// Where in the pipeline a record failed (Connect's `ErrorReporter.Stage`, as the `stage` header names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    KeyConverter,
    ValueConverter,
    HeaderConverter,
    Transformation,
    TaskPut,
    TaskPoll,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::KeyConverter => "KEY_CONVERTER",
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::HeaderConverter => "HEADER_CONVERTER",
            Stage::Transformation => "TRANSFORMATION",
            Stage::TaskPut => "TASK_PUT",
            Stage::TaskPoll => "TASK_POLL",
        }
    }
}

/// The `errors.*` settings of a connector.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorConfig {
    /// `errors.tolerance=all`: errant records are skipped (and reported) instead of failing the task.
    pub tolerate_all: bool,
    pub log_enable: bool,
    pub log_include_messages: bool,
    pub dlq_topic: Option<String>,
    pub dlq_replication_factor: i32,
    pub dlq_context_headers: bool,
    /// `errors.retry.timeout`: how long a retriable failure is retried (None: forever, `-1`; zero: not at all).
    pub retry_timeout: Option<Duration>,
    pub retry_delay_max: Duration,
}

/// The `errors.*` keys of the connector configs: (name, type, default, documentation).
pub const KEYS: [(&str, &str, &str, &str); 5] = [
    ("errors.tolerance", "STRING", "none", "Behavior for tolerating errors during connector operation. 'none' is the default value and signals that any error will result in an immediate connector task failure; 'all' changes the behavior to skip over problematic records."),
    ("errors.log.enable", "BOOLEAN", "false", "If true, write each error and the details of the failed operation and problematic record to the Connect application log."),
    ("errors.log.include.messages", "BOOLEAN", "false", "Whether to include in the log the Connect record that resulted in a failure (its topic, partition, offset, key and value)."),
    ("errors.retry.timeout", "LONG", "0", "The maximum duration in milliseconds that a failed operation will be reattempted (retriable failures only, such as the database being unreachable). The default is 0, which means no retries will be attempted. Use -1 for infinite retries."),
    ("errors.retry.delay.max.ms", "LONG", "60000", "The maximum duration in milliseconds between consecutive retry attempts (the delay doubles from 300 ms up to it)."),
];

/// The dead-letter keys of sink connectors (name, type, default, documentation).
pub const DLQ_KEYS: [(&str, &str, &str, &str); 3] = [
    ("errors.deadletterqueue.topic.name", "STRING", "", "The name of the topic to be used as the dead letter queue (DLQ) for records that result in an error when processed by this sink connector, or its transformations or converters. Empty: no DLQ."),
    ("errors.deadletterqueue.topic.replication.factor", "SHORT", "-1", "Replication factor used to create the dead letter queue topic when it doesn't already exist (-1: the cluster's default; Connect's default is 3, which a single broker refuses)."),
    ("errors.deadletterqueue.context.headers.enable", "BOOLEAN", "false", "If true, add headers containing error context to the messages written to the dead letter queue (Connect's __connect.errors.* headers)."),
];

/// Fjord's automatic restart of a failed task (not in Kafka Connect): (name, type, default, documentation).
pub const RESTART_KEYS: [(&str, &str, &str, &str); 3] = [
    ("task.restart.max.attempts", "INT", "-1", "Fjord: how many times a FAILED task is restarted automatically before it stays FAILED (-1: always; 0: never, as in Kafka Connect). The count starts again once a task has run for task.restart.backoff.max.ms."),
    ("task.restart.backoff.initial.ms", "LONG", "5000", "Fjord: the wait before the first automatic restart of a FAILED task; it doubles with every restart that fails again."),
    ("task.restart.backoff.max.ms", "LONG", "60000", "Fjord: the longest wait between automatic restarts of a FAILED task."),
];

fn get<'a>(config: &'a ConfigMap, key: &str) -> Option<&'a str> {
    config.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn parse_bool(config: &ConfigMap, key: &str) -> Result<bool, String> {
    match get(config, key).map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(format!(
            "Invalid value {v} for configuration {key}: Expected value to be either true or false"
        )),
    }
}

fn parse_long(config: &ConfigMap, key: &str, default: i64, min: i64) -> Result<i64, String> {
    let Some(v) = get(config, key) else {
        return Ok(default);
    };
    match v.parse::<i64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(format!(
            "Invalid value {v} for configuration {key}: Value must be at least {min}"
        )),
        Err(_) => Err(format!(
            "Invalid value {v} for configuration {key}: Not a number of type LONG"
        )),
    }
}

/// The errors of one `errors.*`/`task.restart.*` key, Connect-style, for config validation (empty: fine).
pub fn key_errors(key: &str, config: &ConfigMap) -> Vec<String> {
    let r = match key {
        "errors.tolerance" => match get(config, key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("none") | Some("all") => Ok(()),
            Some(v) => Err(format!(
                "Invalid value {v} for configuration errors.tolerance: String must be one of: none, all"
            )),
        },
        "errors.log.enable"
        | "errors.log.include.messages"
        | "errors.deadletterqueue.context.headers.enable" => parse_bool(config, key).map(|_| ()),
        "errors.retry.timeout" => parse_long(config, key, 0, -1).map(|_| ()),
        "errors.retry.delay.max.ms" => parse_long(config, key, 60000, 1).map(|_| ()),
        "errors.deadletterqueue.topic.replication.factor" => {
            match parse_long(config, key, -1, -1) {
                Ok(0) => Err(format!(
                    "Invalid value 0 for configuration {key}: give at least 1, or -1 for the cluster's default"
                )),
                r => r.map(|_| ()),
            }
        }
        "errors.deadletterqueue.topic.name" => match get(config, key) {
            Some(t) => match crate::plugins::topic_name_error(t) {
                Some(why) => Err(format!(
                    "Invalid value {t} for configuration {key}: {why}"
                )),
                None => {
                    let sinks_from: Vec<&str> = config
                        .get("topics")
                        .map(|t| t.split(',').map(str::trim).collect())
                        .unwrap_or_default();
                    if sinks_from.contains(&t) {
                        Err(format!("Invalid value {t} for configuration {key}: the dead letter queue topic cannot be one of the topics the connector consumes (errant records would come back forever)"))
                    } else {
                        Ok(())
                    }
                }
            },
            None => Ok(()),
        },
        "task.restart.max.attempts" => parse_long(config, key, -1, -1).map(|_| ()),
        "task.restart.backoff.initial.ms" | "task.restart.backoff.max.ms" => {
            parse_long(config, key, 1000, 1).map(|_| ())
        }
        _ => Ok(()),
    };
    r.err().into_iter().collect()
}

impl ErrorConfig {
    /// The connector's settings (checked by validation before a task runs; a bad value here is an error anyway).
    pub fn from_config(config: &ConfigMap) -> Result<ErrorConfig, String> {
        for (k, ..) in KEYS.iter().chain(DLQ_KEYS.iter()) {
            if let Some(e) = key_errors(k, config).into_iter().next() {
                return Err(e);
            }
        }
        let retry = parse_long(config, "errors.retry.timeout", 0, -1)?;
        Ok(ErrorConfig {
            tolerate_all: get(config, "errors.tolerance")
                .is_some_and(|v| v.eq_ignore_ascii_case("all")),
            log_enable: parse_bool(config, "errors.log.enable")?,
            log_include_messages: parse_bool(config, "errors.log.include.messages")?,
            dlq_topic: get(config, "errors.deadletterqueue.topic.name").map(str::to_string),
            dlq_replication_factor: parse_long(
                config,
                "errors.deadletterqueue.topic.replication.factor",
                -1,
                -1,
            )? as i32,
            dlq_context_headers: parse_bool(
                config,
                "errors.deadletterqueue.context.headers.enable",
            )?,
            retry_timeout: (retry >= 0).then(|| Duration::from_millis(retry as u64)),
            retry_delay_max: Duration::from_millis(parse_long(
                config,
                "errors.retry.delay.max.ms",
                60000,
                1,
            )? as u64),
        })
    }
}

/// Reports errant records: logs them and writes them to the dead-letter topic, per [`ErrorConfig`].
pub struct Reporter {
    pub config: ErrorConfig,
    connector: String,
    task: u32,
    bootstrap: String,
    overrides: Vec<(String, String)>,
    producer: Option<FutureProducer>,
}

impl Reporter {
    pub fn new(
        config: ErrorConfig,
        connector: &str,
        task: u32,
        bootstrap: &str,
        producer_overrides: &[(String, String)],
    ) -> Reporter {
        Reporter {
            config,
            connector: connector.to_string(),
            task,
            bootstrap: bootstrap.to_string(),
            overrides: producer_overrides.to_vec(),
            producer: None,
        }
    }

    /// What to do about an errant record that failed at `stage` with `error`: Ok when it is tolerated (logged and
    /// dead-lettered, acknowledged), Err with the task's failure trace when it is not (or the dead-letter write
    /// failed).
    pub async fn report(
        &mut self,
        m: &OwnedMessage,
        stage: Stage,
        error: &str,
    ) -> Result<(), String> {
        let at = format!("{}-{} offset {}", m.topic(), m.partition(), m.offset());
        if !self.config.tolerate_all {
            return Err(format!(
                "the record at {at} failed in stage {}: {error}. The task stops at it (errors.tolerance=none) and resumes from it when restarted: fix the record's cause, or set errors.tolerance=all with errors.deadletterqueue.topic.name=<topic> to skip such records into a dead-letter topic, or move the connector's group past it (fjord groups reset-offsets connect-{} --to-offset {} --topic {}:{})",
                stage.as_str(),
                self.connector,
                m.offset() + 1,
                m.topic(),
                m.partition()
            ));
        }
        if self.config.log_enable {
            if self.config.log_include_messages {
                tracing::error!(connector = %self.connector, task = self.task, stage = stage.as_str(),
                    "errant record at {at} (key {:?}, value {:?}) skipped: {error}",
                    m.key().map(String::from_utf8_lossy), m.payload().map(String::from_utf8_lossy));
            } else {
                tracing::error!(connector = %self.connector, task = self.task, stage = stage.as_str(),
                    "errant record at {at} skipped: {error}");
            }
        }
        let Some(topic) = self.config.dlq_topic.clone() else {
            return Ok(());
        };
        if self.producer.is_none() {
            self.producer = Some(self.create_producer(&topic).await?);
        }
        let producer = self.producer.as_ref().expect("created above");
        let mut headers = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        if self.config.dlq_context_headers {
            let partition = m.partition().to_string();
            let offset = m.offset().to_string();
            let task = self.task.to_string();
            let (class, exception) = match stage {
                Stage::KeyConverter | Stage::ValueConverter | Stage::HeaderConverter => (
                    "org.apache.kafka.connect.json.JsonConverter",
                    "org.apache.kafka.connect.errors.DataException",
                ),
                Stage::TaskPut | Stage::TaskPoll => (
                    "io.fjord.connect.postgres.PostgresSinkTask",
                    "org.apache.kafka.connect.errors.ConnectException",
                ),
                Stage::Transformation => (
                    "org.apache.kafka.connect.transforms.Transformation",
                    "org.apache.kafka.connect.errors.DataException",
                ),
            };
            let trace = format!("{exception}: {error}");
            for (k, v) in [
                ("__connect.errors.topic", m.topic()),
                ("__connect.errors.partition", &partition),
                ("__connect.errors.offset", &offset),
                ("__connect.errors.connector.name", &self.connector),
                ("__connect.errors.task.id", &task),
                ("__connect.errors.stage", stage.as_str()),
                ("__connect.errors.class.name", class),
                ("__connect.errors.exception.class.name", exception),
                ("__connect.errors.exception.message", error),
                ("__connect.errors.exception.stacktrace", &trace),
            ] {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| {
                format!("the record at {at} failed in stage {} ({error}) and could not be written to the dead-letter topic {topic}: {e}; check the cluster (and that {topic} can be created or exists), then restart the task", stage.as_str())
            })?;
        Ok(())
    }

    async fn create_producer(&self, topic: &str) -> Result<FutureProducer, String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(|e| format!("cannot create an admin client for {}: {e}", self.bootstrap))?;
        let rf = self.config.dlq_replication_factor;
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(rf));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| format!("cannot create the dead-letter topic {topic}: {e}"))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => {
                    return Err(format!(
                        "cannot create the dead-letter topic {t} (errors.deadletterqueue.topic.replication.factor={rf}): {e}; create it yourself or fix the replication factor"
                    ))
                }
            }
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.bootstrap)
            .set(
                "client.id",
                format!("connector-dlq-producer-{}-{}", self.connector, self.task),
            )
            .set("enable.idempotence", "true")
            .set("acks", "all");
        for (k, v) in &self.overrides {
            client.set(k, v);
        }
        client
            .create()
            .map_err(|e| format!("cannot create the dead-letter producer: {e}"))
    }
}

/// Fetches what the task's registry converters need to convert a record with this key and value (the writer
/// schemas by id; no-op for the other converters). Err: the registry cannot be asked, a task failure that says
/// what to do. A record the registry cannot explain (not in the wire format, an unknown id) is left for
/// [`convert_and_transform`] to report as errant.
pub async fn prepare_converters(
    ctx: &crate::worker::TaskContext,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<(), String> {
    ctx.key_converter.prepare_decode(key).await?;
    ctx.value_converter.prepare_decode(value).await
}

/// A consumed record as a sink task sees it: key and value through the converters, then the transforms (None: a
/// transform dropped it). An error names the stage that failed, for [`Reporter::report`].
pub fn convert_and_transform<M: Message>(
    ctx: &crate::worker::TaskContext,
    chain: &crate::transforms::Chain,
    m: &M,
) -> Result<Option<crate::transforms::Record>, (Stage, String)> {
    let record = crate::transforms::sink_record(ctx, m).map_err(|e| {
        let stage = if e.starts_with("key.converter:") {
            Stage::KeyConverter
        } else {
            Stage::ValueConverter
        };
        (stage, format!("it cannot be converted: {e}"))
    })?;
    chain.apply(record).map_err(|e| {
        (
            Stage::Transformation,
            format!("it cannot be transformed: {e}"),
        )
    })
}

/// Fjord's automatic restarts of a failed task: `task.restart.*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// None: always.
    pub max_attempts: Option<u64>,
    pub initial: Duration,
    pub max: Duration,
}

impl RestartPolicy {
    pub fn from_config(config: &ConfigMap) -> RestartPolicy {
        let attempts = parse_long(config, "task.restart.max.attempts", -1, -1).unwrap_or(-1);
        let initial =
            parse_long(config, "task.restart.backoff.initial.ms", 5000, 1).unwrap_or(5000);
        let max = parse_long(config, "task.restart.backoff.max.ms", 60000, 1).unwrap_or(60000);
        RestartPolicy {
            max_attempts: (attempts >= 0).then_some(attempts as u64),
            initial: Duration::from_millis(initial as u64),
            max: Duration::from_millis(max.max(initial) as u64),
        }
    }

    /// The wait before restart number `attempt` (1-based), or None when no more restarts are allowed.
    pub fn delay(&self, attempt: u64) -> Option<Duration> {
        if self.max_attempts.is_some_and(|m| attempt > m) {
            return None;
        }
        let factor = 1u32 << (attempt.saturating_sub(1)).min(20);
        Some((self.initial * factor).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = cfg(&[
            ("errors.tolerance", "some"),
            ("errors.retry.timeout", "-2"),
            ("topics", "a,b"),
            ("errors.deadletterqueue.topic.name", "b"),
        ]);
        assert!(key_errors("errors.tolerance", &c)[0].contains("configuration errors.tolerance"));
        assert!(key_errors("errors.retry.timeout", &c)[0].contains("at least -1"));
        assert!(key_errors("errors.deadletterqueue.topic.name", &c)[0].contains("consumes"));
        assert!(ErrorConfig::from_config(&c).is_err());
        let ok = ErrorConfig::from_config(&cfg(&[
            ("errors.tolerance", "ALL"),
            ("errors.retry.timeout", "-1"),
        ]))
        .unwrap();
        assert!(ok.tolerate_all);
        assert_eq!(ok.retry_timeout, None);
    }

    #[test]
    fn restart_backoff_doubles_up_to_the_max_and_stops_after_the_attempts() {
        let p = RestartPolicy::from_config(&cfg(&[
            ("task.restart.max.attempts", "4"),
            ("task.restart.backoff.initial.ms", "100"),
            ("task.restart.backoff.max.ms", "350"),
        ]));
        let d: Vec<_> = (1..=5).map(|a| p.delay(a).map(|d| d.as_millis())).collect();
        assert_eq!(d, [Some(100), Some(200), Some(350), Some(350), None]);
        assert_eq!(
            RestartPolicy::from_config(&cfg(&[("task.restart.max.attempts", "0")])).delay(1),
            None
        );
    }
}
