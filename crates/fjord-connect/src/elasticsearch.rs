//! The Elasticsearch/OpenSearch sink (`ElasticsearchSinkConnector`, Confluent's property names): each batch
//! of records becomes one `_bulk` request (NDJSON) to `connection.url`; the index is the record's topic (after
//! the transforms, so RegexRouter and TimestampRouter pick indices), lowercased.
//!
//! **Idempotent on redelivery:** every document has an id: `topic+partition+offset` with `key.ignore=true`,
//! else the record's key, written with `version_type=external` and the record's offset as its version (as
//! Confluent's connector does), so a record delivered again (after a crash, or offsets moved back) cannot
//! overwrite or resurrect what a later record of the same key wrote: the server answers a version conflict,
//! which counts as done. Per-item errors: 429 and 5xx are retried (only those items) with exponential backoff
//! (`retry.backoff.ms`, `max.retries`, all within `flush.timeout.ms`); documents the server cannot parse
//! follow `behavior.on.malformed.documents`; anything else fails the task with the server's reason.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::ConfigMap;
use crate::http_client::{HttpError, Target};
use crate::sink_task::{backoff, num, BatchWriter};
use crate::transforms::Record;

/// `behavior.on.null.values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNull {
    Ignore,
    Delete,
    Fail,
}

/// `behavior.on.malformed.documents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMalformed {
    Ignore,
    Warn,
    Fail,
}

/// The settings of one Elasticsearch sink.
#[derive(Debug, Clone)]
pub struct EsConfig {
    pub targets: Vec<Target>,
    pub key_ignore: bool,
    pub on_null: OnNull,
    pub on_malformed: OnMalformed,
    pub batch_size: usize,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub flush_timeout: Duration,
    pub read_timeout: Duration,
    /// `write.method=upsert`: partial updates (`update` with `doc_as_upsert`) instead of whole documents.
    pub upsert: bool,
}

/// The errors of one Elasticsearch setting, Connect-style, or None when `key` is not one of them.
pub fn config_errors(key: &str, value: &str) -> Option<Vec<String>> {
    let invalid = |why: &str| {
        vec![format!(
            "Invalid value {value} for configuration {key}: {why}"
        )]
    };
    let v = value.trim();
    Some(match key {
        "connection.url" => {
            let urls: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect();
            if urls.is_empty() {
                return Some(invalid("give at least one URL, e.g. http://127.0.0.1:9200"));
            }
            urls.iter()
                .find_map(|u| Target::parse(u).err())
                .map(|e| invalid(&e))
                .unwrap_or_default()
        }
        "behavior.on.null.values" => match v.to_ascii_lowercase().as_str() {
            "ignore" | "delete" | "fail" => Vec::new(),
            _ => invalid("String must be one of: ignore, delete, fail"),
        },
        "behavior.on.malformed.documents" => match v.to_ascii_lowercase().as_str() {
            "ignore" | "warn" | "fail" => Vec::new(),
            _ => invalid("String must be one of: ignore, warn, fail"),
        },
        "write.method" => match v.to_ascii_lowercase().as_str() {
            "insert" | "upsert" => Vec::new(),
            _ => invalid("String must be one of: insert, upsert"),
        },
        "key.ignore" | "schema.ignore" | "drop.invalid.message" => {
            match v.to_ascii_lowercase().as_str() {
                "true" | "false" => Vec::new(),
                _ => invalid("Expected value to be either true or false"),
            }
        }
        "batch.size" => match v.parse::<i64>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Vec::new(),
            _ => invalid("Value must be a number from 1 to 1000000"),
        },
        "max.retries"
        | "retry.backoff.ms"
        | "flush.timeout.ms"
        | "read.timeout.ms"
        | "connection.timeout.ms" => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Vec::new(),
            _ => invalid("Value must be a non-negative number"),
        },
        _ => return None,
    })
}

impl EsConfig {
    /// The settings from a validated connector config.
    pub fn from_config(config: &ConfigMap) -> Result<EsConfig, String> {
        let get = |k: &str| config.get(k).map(|v| v.trim().to_ascii_lowercase());
        let mut targets = Vec::new();
        for url in config
            .get("connection.url")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let mut t = Target::parse(url).map_err(|e| format!("connection.url: {e}"))?;
            if let Some(user) = config.get("connection.username").filter(|u| !u.is_empty()) {
                t = t.with_basic_auth(
                    user,
                    config
                        .get("connection.password")
                        .map(String::as_str)
                        .unwrap_or(""),
                );
            }
            targets.push(t);
        }
        if targets.is_empty() {
            return Err(
                "connection.url: give the URL of the Elasticsearch/OpenSearch cluster".into(),
            );
        }
        Ok(EsConfig {
            targets,
            key_ignore: get("key.ignore").as_deref() == Some("true"),
            on_null: match get("behavior.on.null.values").as_deref() {
                Some("ignore") => OnNull::Ignore,
                Some("delete") => OnNull::Delete,
                _ => OnNull::Fail,
            },
            on_malformed: match get("behavior.on.malformed.documents").as_deref() {
                Some("ignore") => OnMalformed::Ignore,
                Some("warn") => OnMalformed::Warn,
                _ => OnMalformed::Fail,
            },
            batch_size: num(config, "batch.size", 2000usize),
            max_retries: num(config, "max.retries", 5u32),
            retry_backoff: Duration::from_millis(num(config, "retry.backoff.ms", 100u64)),
            flush_timeout: Duration::from_millis(num(config, "flush.timeout.ms", 180_000u64)),
            read_timeout: Duration::from_millis(num(config, "read.timeout.ms", 3000u64).max(1)),
            upsert: get("write.method").as_deref() == Some("upsert"),
        })
    }
}

/// One bulk action: its NDJSON lines and where its record came from (for messages).
#[derive(Debug, Clone)]
struct Action {
    lines: String,
    what: String,
    delete: bool,
}

/// The document id a key gives: a string as it is, a number or boolean as its text; anything else cannot be.
fn key_id(r: &Record) -> Result<String, String> {
    match &r.key.value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(format!(
            "the record at {}-{} offset {} has a null key, and the key is the document id (key.ignore=false); set key.ignore=true to use topic+partition+offset as the id",
            r.topic, r.partition.unwrap_or(-1), r.offset.unwrap_or(-1)
        )),
        other => Err(format!(
            "the record at {}-{} offset {} has a structured key ({other}); a document id is a string or number: extract one field with ExtractField$Key, or set key.ignore=true",
            r.topic, r.partition.unwrap_or(-1), r.offset.unwrap_or(-1)
        )),
    }
}

/// The document a value gives: a JSON object (or array) as it is; a string holding a JSON object as that
/// object (StringConverter data); anything else as it is, for the server to refuse as a malformed document.
fn document(v: &Value) -> Value {
    if let Value::String(s) = v {
        if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(s) {
            return parsed;
        }
    }
    v.clone()
}

impl EsConfig {
    /// The bulk actions of a batch (None for a record skipped by `behavior.on.null.values=ignore`).
    fn actions(&self, batch: &[Record]) -> Result<Vec<Action>, String> {
        let mut out = Vec::with_capacity(batch.len());
        for r in batch {
            let what = format!(
                "{}-{} offset {}",
                r.topic,
                r.partition.unwrap_or(-1),
                r.offset.unwrap_or(-1)
            );
            let index = r.topic.to_lowercase();
            let offset = r.offset.unwrap_or(0);
            let id = if self.key_ignore {
                format!("{}+{}+{}", r.topic, r.partition.unwrap_or(0), offset)
            } else {
                key_id(r)?
            };
            let mut meta = json!({"_index": index, "_id": id});
            if !self.key_ignore && !self.upsert {
                meta["version"] = json!(offset);
                meta["version_type"] = json!("external");
            }
            if r.value.value.is_null() {
                match self.on_null {
                    OnNull::Ignore => continue,
                    // With key.ignore every record is its own document: there is nothing to delete.
                    OnNull::Delete if self.key_ignore => continue,
                    OnNull::Delete => out.push(Action {
                        lines: format!("{}\n", json!({"delete": meta})),
                        what,
                        delete: true,
                    }),
                    OnNull::Fail => {
                        return Err(format!(
                            "the record at {what} has a null value (a tombstone) and behavior.on.null.values=fail; set behavior.on.null.values=delete to delete the document of its key, or ignore to skip such records"
                        ))
                    }
                }
                continue;
            }
            let doc = document(&r.value.value);
            let lines = if self.upsert {
                format!(
                    "{}\n{}\n",
                    json!({"update": meta}),
                    json!({"doc": doc, "doc_as_upsert": true})
                )
            } else {
                format!("{}\n{}\n", json!({"index": meta}), doc)
            };
            out.push(Action {
                lines,
                what,
                delete: false,
            });
        }
        Ok(out)
    }
}

/// How the server's answer for one item is taken.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Retry(String),
    Malformed(String),
    Failed(String),
}

fn outcome(item: &Value, delete: bool) -> Outcome {
    let body = item
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    let status = body["status"].as_u64().unwrap_or(0);
    let kind = body["error"]["type"].as_str().unwrap_or("");
    let reason = format!(
        "{status} {kind}: {}",
        body["error"]["reason"].as_str().unwrap_or("")
    );
    match status {
        200..=299 => Outcome::Done,
        404 if delete => Outcome::Done,
        // An older delivery of a record whose key a later record already wrote (external versions).
        409 if kind == "version_conflict_engine_exception" => Outcome::Done,
        429 | 500..=599 => Outcome::Retry(reason),
        _ if matches!(
            kind,
            "mapper_parsing_exception"
                | "illegal_argument_exception"
                | "action_request_validation_exception"
                | "document_parsing_exception"
        ) =>
        {
            Outcome::Malformed(reason)
        }
        _ => Outcome::Failed(reason),
    }
}

/// The Elasticsearch sink's writer.
pub struct EsWriter {
    pub config: EsConfig,
    pub connector: String,
}

impl EsWriter {
    /// One `_bulk` request to the first target that answers; Err(retryable, message).
    async fn bulk(&self, body: &str) -> Result<Value, (bool, String)> {
        let mut last = String::new();
        for t in &self.config.targets {
            let headers = [(
                "content-type".to_string(),
                "application/x-ndjson".to_string(),
            )];
            match t
                .request(
                    "POST",
                    "/_bulk",
                    &headers,
                    body.as_bytes().to_vec(),
                    self.config.read_timeout,
                )
                .await
            {
                Err(HttpError::Unreachable(e)) => last = e,
                Err(HttpError::Protocol(e)) => return Err((true, e)),
                Ok((status, answer)) => {
                    let text = String::from_utf8_lossy(&answer);
                    let excerpt: String = text.chars().take(500).collect();
                    return match status {
                        200..=299 => serde_json::from_slice(&answer).map_err(|e| {
                            (false, format!("{} answered the bulk request with something that is not JSON ({e}): {excerpt}", t.url))
                        }),
                        429 | 500..=599 => Err((true, format!("{} answered {status}: {excerpt}", t.url))),
                        401 | 403 => Err((false, format!("{} refused the bulk request ({status}): check connection.username and connection.password and the user's privileges: {excerpt}", t.url))),
                        _ => Err((false, format!("{} answered the bulk request with {status}: {excerpt}", t.url))),
                    };
                }
            }
        }
        Err((true, last))
    }
}

impl BatchWriter for EsWriter {
    async fn write(&mut self, batch: Vec<Record>) -> Result<(), String> {
        let mut pending = self.config.actions(&batch)?;
        let deadline = Instant::now() + self.config.flush_timeout;
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let body: String = pending.iter().map(|a| a.lines.as_str()).collect();
            let retry_why = match self.bulk(&body).await {
                Err((false, e)) => return Err(format!("writing to Elasticsearch failed: {e}")),
                Err((true, e)) => e,
                Ok(answer) => {
                    let items = answer["items"].as_array().cloned().unwrap_or_default();
                    if items.len() != pending.len() {
                        return Err(format!(
                            "the bulk answer has {} items for {} actions: {answer}",
                            items.len(),
                            pending.len()
                        ));
                    }
                    let mut again = Vec::new();
                    let mut why = String::new();
                    for (action, item) in pending.into_iter().zip(&items) {
                        match outcome(item, action.delete) {
                            Outcome::Done => {}
                            Outcome::Retry(r) => {
                                why = r;
                                again.push(action);
                            }
                            Outcome::Malformed(r) => match self.config.on_malformed {
                                OnMalformed::Ignore => {}
                                OnMalformed::Warn => tracing::warn!(connector = %self.connector, "skipping the malformed document of {}: {r}", action.what),
                                OnMalformed::Fail => return Err(format!(
                                    "Elasticsearch refused the document of the record at {} as malformed ({r}); fix the data or the index mapping, or set behavior.on.malformed.documents=warn (or ignore) to skip such records",
                                    action.what
                                )),
                            },
                            Outcome::Failed(r) => {
                                return Err(format!(
                                    "Elasticsearch refused the record at {}: {r}",
                                    action.what
                                ))
                            }
                        }
                    }
                    pending = again;
                    if pending.is_empty() {
                        break;
                    }
                    why
                }
            };
            if attempt >= self.config.max_retries {
                return Err(format!(
                    "writing to Elasticsearch failed after {} retries: {retry_why}; raise max.retries or retry.backoff.ms if the cluster is overloaded",
                    self.config.max_retries
                ));
            }
            let wait = backoff(self.config.retry_backoff, attempt);
            if Instant::now() + wait > deadline {
                return Err(format!(
                    "writing a batch to Elasticsearch did not finish within flush.timeout.ms ({} ms): {retry_why}",
                    self.config.flush_timeout.as_millis()
                ));
            }
            tracing::warn!(connector = %self.connector, attempt, "retrying {} bulk actions in {wait:?}: {retry_why}", pending.len());
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
        Ok(())
    }
}

/// Runs an Elasticsearch sink task.
pub async fn run(
    ctx: crate::worker::TaskContext,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let config = EsConfig::from_config(&ctx.config)?;
    let batch = config.batch_size;
    let writer = EsWriter {
        config,
        connector: ctx.connector.clone(),
    };
    crate::sink_task::run(ctx, stop, batch, writer).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::SchemaAndValue;

    fn config(pairs: &[(&str, &str)]) -> EsConfig {
        let mut c: ConfigMap = [("connection.url", "http://127.0.0.1:9200")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in pairs {
            c.insert(k.to_string(), v.to_string());
        }
        EsConfig::from_config(&c).unwrap()
    }

    fn record(key: Value, value: Value, offset: i64) -> Record {
        Record {
            topic: "Catalog".into(),
            partition: Some(2),
            offset: Some(offset),
            key: SchemaAndValue {
                schema: None,
                value: key,
            },
            value: SchemaAndValue {
                schema: None,
                value,
            },
            ..Record::default()
        }
    }

    fn lines(actions: &[Action]) -> Vec<Value> {
        actions
            .iter()
            .flat_map(|a| {
                a.lines
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn ids_come_from_the_key_or_the_coordinates_and_the_index_is_the_lowercased_topic() {
        let c = config(&[("behavior.on.null.values", "delete")]);
        let a = c
            .actions(&[
                record(json!("sku-1"), json!({"n": 1}), 7),
                record(json!(5), Value::Null, 8),
            ])
            .unwrap();
        assert_eq!(
            lines(&a),
            [
                json!({"index": {"_index": "catalog", "_id": "sku-1", "version": 7, "version_type": "external"}}),
                json!({"n": 1}),
                json!({"delete": {"_index": "catalog", "_id": "5", "version": 8, "version_type": "external"}}),
            ]
        );
        let c = config(&[
            ("key.ignore", "true"),
            ("behavior.on.null.values", "ignore"),
        ]);
        let a = c
            .actions(&[
                record(Value::Null, json!("{\"n\": 2}"), 9),
                record(Value::Null, Value::Null, 10),
            ])
            .unwrap();
        assert_eq!(
            lines(&a),
            [
                json!({"index": {"_index": "catalog", "_id": "Catalog+2+9"}}),
                json!({"n": 2})
            ]
        );
        let e = config(&[])
            .actions(&[record(Value::Null, json!({}), 1)])
            .unwrap_err();
        assert!(e.contains("key.ignore=true"), "{e}");
        let e = config(&[])
            .actions(&[record(json!({"a": 1}), json!({}), 1)])
            .unwrap_err();
        assert!(e.contains("ExtractField$Key"), "{e}");
        let e = config(&[])
            .actions(&[record(json!("k"), Value::Null, 1)])
            .unwrap_err();
        assert!(e.contains("behavior.on.null.values=delete"), "{e}");
        let up = config(&[("write.method", "upsert")]);
        assert_eq!(
            lines(
                &up.actions(&[record(json!("k"), json!({"a": 1}), 3)])
                    .unwrap()
            )[1],
            json!({"doc": {"a": 1}, "doc_as_upsert": true})
        );
    }

    /// A server answering each `_bulk` request with the next of `answers` (status, body); the bodies it got.
    async fn bulk_server(
        answers: Vec<(u16, Value)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let mut got = Vec::new();
            for (status, body) in answers {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if rest.len() >= len {
                            got.push(rest.to_string());
                            break;
                        }
                    }
                    assert!(n > 0, "the client closed early");
                }
                let body = body.to_string();
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                s.write_all(answer.as_bytes()).await.unwrap();
            }
            got
        });
        (url, handle)
    }

    #[tokio::test]
    async fn only_items_answered_429_are_sent_again_and_retries_are_bounded() {
        let ok = json!({"index": {"status": 201}});
        let busy = json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}});
        let (url, server) = bulk_server(vec![
            (200, json!({"errors": true, "items": [ok, busy]})),
            (503, json!({"error": "unavailable"})),
            (200, json!({"errors": false, "items": [ok]})),
        ])
        .await;
        let mut w = EsWriter {
            config: EsConfig::from_config(
                &[
                    ("connection.url", url.as_str()),
                    ("key.ignore", "true"),
                    ("retry.backoff.ms", "1"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            )
            .unwrap(),
            connector: "es".into(),
        };
        w.write(vec![
            record(Value::Null, json!({"n": 1}), 1),
            record(Value::Null, json!({"n": 2}), 2),
        ])
        .await
        .unwrap();
        let got = server.await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].lines().count(), 4, "{got:?}");
        // The item answered 429 alone, again after the whole request answered 503.
        for body in &got[1..] {
            assert_eq!(body.lines().count(), 2, "{body}");
            assert!(
                body.contains("Catalog+2+2") && body.contains("\"n\":2"),
                "{body}"
            );
        }

        let (url, server) =
            bulk_server(vec![(503, json!({})), (503, json!({})), (503, json!({}))]).await;
        w.config.targets = vec![Target::parse(&url).unwrap()];
        w.config.max_retries = 2;
        let e = w
            .write(vec![record(Value::Null, json!({"n": 1}), 1)])
            .await
            .unwrap_err();
        assert!(e.contains("after 2 retries") && e.contains("503"), "{e}");
        assert_eq!(server.await.unwrap().len(), 3);

        // A retry that would end past flush.timeout.ms is not waited for.
        let (url, server) = bulk_server(vec![(503, json!({}))]).await;
        w.config.targets = vec![Target::parse(&url).unwrap()];
        w.config.max_retries = 5;
        w.config.retry_backoff = Duration::from_secs(30);
        w.config.flush_timeout = Duration::from_millis(500);
        let started = Instant::now();
        let e = w
            .write(vec![record(Value::Null, json!({"n": 1}), 1)])
            .await
            .unwrap_err();
        assert!(e.contains("flush.timeout.ms (500 ms)"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(server.await.unwrap().len(), 1);
    }

    #[test]
    fn item_outcomes_follow_the_status_and_error_type() {
        let item = |status: u64, kind: &str| json!({"index": {"status": status, "error": {"type": kind, "reason": "r"}}});
        assert_eq!(
            outcome(&json!({"index": {"status": 201}}), false),
            Outcome::Done
        );
        assert_eq!(
            outcome(&json!({"delete": {"status": 404}}), true),
            Outcome::Done
        );
        assert_eq!(
            outcome(&item(409, "version_conflict_engine_exception"), false),
            Outcome::Done
        );
        assert!(matches!(
            outcome(&item(429, "es_rejected_execution_exception"), false),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            outcome(&item(503, "unavailable_shards_exception"), false),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            outcome(&item(400, "mapper_parsing_exception"), false),
            Outcome::Malformed(_)
        ));
        assert!(matches!(
            outcome(&item(400, "invalid_index_name_exception"), false),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn settings_are_checked_with_the_field_named() {
        assert_eq!(
            config_errors("connection.url", "http://a:9200,http://b:9200"),
            Some(vec![])
        );
        assert!(
            config_errors("connection.url", "https://a:9200").unwrap()[0]
                .contains("configuration connection.url")
        );
        assert!(config_errors("behavior.on.null.values", "drop").unwrap()[0]
            .contains("ignore, delete, fail"));
        assert!(config_errors("max.retries", "-1").unwrap()[0].contains("max.retries"));
        assert_eq!(config_errors("max.retries", "0"), Some(vec![]));
        assert_eq!(config_errors("topics", "x"), None);
    }
}
