//! The HTTP sink (`HttpSinkConnector`, Confluent's property names), the general escape hatch: each batch of
//! up to `batch.max.size` records is sent to `http.api.url` as one JSON array of the record values (after the
//! converters and transforms: a struct or map as a JSON object, a string as a JSON string), with the configured
//! `headers`. Connection errors, 429 and 5xx answers are retried with exponential backoff (`retry.backoff.ms`,
//! `max.retries`); any other answer outside 2xx fails the task with the server's status and body.
//!
//! **At-least-once:** offsets are committed after the server accepted the batch; a batch whose answer was lost
//! is sent again, so the receiving end sees duplicates, never a gap.

use std::time::Duration;

use serde_json::Value;

use crate::config::ConfigMap;
use crate::http_client::{HttpError, Target};
use crate::sink_task::{backoff, num, BatchWriter};
use crate::transforms::Record;

/// The HTTP sink's keys: (name, type, default, documentation, required).
#[allow(clippy::type_complexity)]
pub fn keys() -> Vec<(
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    bool,
)> {
    vec![
        ("http.api.url", "STRING", None, "The http:// URL the batches are sent to.", true),
        ("request.method", "STRING", Some("POST"), "The HTTP method: POST or PUT.", false),
        ("headers", "STRING", Some(""), "Headers sent with every request, as Name:Value pairs separated by header.separator, e.g. Authorization:Bearer x|X-Source:fjord.", false),
        ("header.separator", "STRING", Some("|"), "The separator between the headers in headers.", false),
        ("batch.max.size", "INT", Some("500"), "The most records in one request (one JSON array).", false),
        ("max.retries", "INT", Some("10"), "How often a request answered 429, 5xx or not at all is retried before the task fails.", false),
        ("retry.backoff.ms", "INT", Some("3000"), "The wait before the first retry; doubled for each further retry (at most 60 s).", false),
        ("http.request.timeout.ms", "INT", Some("30000"), "How long one request may take, answer included.", false),
        ("behavior.on.null.values", "STRING", Some("ignore"), "What to do with a record whose value is null: ignore (skip it) or fail.", false),
    ]
}

/// The errors of one HTTP sink setting, Connect-style, or None when `key` is not one of them.
pub fn config_errors(key: &str, value: &str, config: &ConfigMap) -> Option<Vec<String>> {
    let invalid = |why: &str| {
        vec![format!(
            "Invalid value {value} for configuration {key}: {why}"
        )]
    };
    let v = value.trim();
    Some(match key {
        "http.api.url" => match Target::parse(v) {
            Ok(_) => Vec::new(),
            Err(e) => invalid(&e),
        },
        "request.method" => match v.to_ascii_uppercase().as_str() {
            "POST" | "PUT" => Vec::new(),
            _ => invalid("String must be one of: POST, PUT"),
        },
        "behavior.on.null.values" => match v.to_ascii_lowercase().as_str() {
            "ignore" | "fail" => Vec::new(),
            _ => invalid("String must be one of: ignore, fail"),
        },
        "batch.max.size" => match v.parse::<i64>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Vec::new(),
            _ => invalid("Value must be a number from 1 to 1000000"),
        },
        "max.retries" | "retry.backoff.ms" | "http.request.timeout.ms" => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Vec::new(),
            _ => invalid("Value must be a non-negative number"),
        },
        "headers" => match parse_headers(value, separator(config)) {
            Ok(_) => Vec::new(),
            Err(e) => invalid(&e),
        },
        _ => return None,
    })
}

fn separator(config: &ConfigMap) -> &str {
    config
        .get("header.separator")
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .unwrap_or("|")
}

/// `Name:Value` pairs separated by `separator`, names lowercased.
fn parse_headers(text: &str, separator: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for h in text
        .split(separator)
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        match h.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() && k.trim().bytes().all(|b| b.is_ascii_graphic()) => {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            }
            _ => {
                return Err(format!(
                    "{h} is not Name:Value (headers are separated by {separator}, the header.separator)"
                ))
            }
        }
    }
    Ok(headers)
}

/// The HTTP sink's writer.
#[derive(Debug)]
pub struct HttpWriter {
    target: Target,
    method: String,
    headers: Vec<(String, String)>,
    max_retries: u32,
    retry_backoff: Duration,
    timeout: Duration,
    fail_on_null: bool,
    connector: String,
}

impl HttpWriter {
    pub fn from_config(connector: &str, config: &ConfigMap) -> Result<HttpWriter, String> {
        let url = config.get("http.api.url").map(String::as_str).unwrap_or("");
        let target = Target::parse(url).map_err(|e| format!("http.api.url: {e}"))?;
        let mut headers = parse_headers(
            config.get("headers").map(String::as_str).unwrap_or(""),
            separator(config),
        )
        .map_err(|e| format!("headers: {e}"))?;
        if !headers.iter().any(|(k, _)| k == "content-type") {
            headers.push(("content-type".into(), "application/json".into()));
        }
        Ok(HttpWriter {
            target,
            method: config
                .get("request.method")
                .map(|m| m.trim().to_ascii_uppercase())
                .unwrap_or_else(|| "POST".into()),
            headers,
            max_retries: num(config, "max.retries", 10u32),
            retry_backoff: Duration::from_millis(num(config, "retry.backoff.ms", 3000u64)),
            timeout: Duration::from_millis(
                num(config, "http.request.timeout.ms", 30_000u64).max(1),
            ),
            fail_on_null: config
                .get("behavior.on.null.values")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("fail")),
            connector: connector.to_string(),
        })
    }

    /// The body of a batch: a JSON array of the values (nulls skipped, or an error with `fail`).
    fn body(&self, batch: &[Record]) -> Result<Option<Vec<u8>>, String> {
        let mut values = Vec::with_capacity(batch.len());
        for r in batch {
            if r.value.value.is_null() {
                if self.fail_on_null {
                    return Err(format!(
                        "the record at {}-{} offset {} has a null value and behavior.on.null.values=fail; set behavior.on.null.values=ignore to skip such records",
                        r.topic,
                        r.partition.unwrap_or(-1),
                        r.offset.unwrap_or(-1)
                    ));
                }
                continue;
            }
            values.push(r.value.value.clone());
        }
        if values.is_empty() {
            return Ok(None);
        }
        Ok(Some(Value::Array(values).to_string().into_bytes()))
    }
}

impl BatchWriter for HttpWriter {
    async fn write(&mut self, batch: Vec<Record>) -> Result<(), String> {
        let Some(body) = self.body(&batch)? else {
            return Ok(());
        };
        let mut attempt = 0u32;
        loop {
            let why = match self
                .target
                .request(&self.method, "", &self.headers, body.clone(), self.timeout)
                .await
            {
                Ok((200..=299, _)) => return Ok(()),
                Ok((status, answer)) => {
                    let excerpt: String =
                        String::from_utf8_lossy(&answer).chars().take(500).collect();
                    let why = format!("{} answered {status}: {excerpt}", self.target.url);
                    if status != 429 && status < 500 {
                        return Err(format!(
                            "the HTTP sink's request was refused: {why}; fix http.api.url, headers or the data (the batch is sent again when the task restarts)"
                        ));
                    }
                    why
                }
                Err(HttpError::Unreachable(e) | HttpError::Protocol(e)) => e,
            };
            if attempt >= self.max_retries {
                return Err(format!(
                    "the HTTP sink gave up after {} retries: {why}",
                    self.max_retries
                ));
            }
            let wait = backoff(self.retry_backoff, attempt);
            tracing::warn!(connector = %self.connector, attempt, "retrying a batch of {} records in {wait:?}: {why}", batch.len());
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Runs an HTTP sink task.
pub async fn run(
    ctx: crate::worker::TaskContext,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let writer = HttpWriter::from_config(&ctx.connector, &ctx.config)?;
    let batch = num(&ctx.config, "batch.max.size", 500usize).max(1);
    crate::sink_task::run(ctx, stop, batch, writer).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::SchemaAndValue;
    use serde_json::json;

    fn writer(pairs: &[(&str, &str)]) -> Result<HttpWriter, String> {
        let c: ConfigMap = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HttpWriter::from_config("h", &c)
    }

    #[test]
    fn headers_and_body() {
        let w = writer(&[
            ("http.api.url", "http://127.0.0.1:1/in"),
            ("headers", "Authorization:Bearer t | X-Src:fjord"),
        ])
        .unwrap();
        assert_eq!(
            w.headers,
            [
                ("authorization".to_string(), "Bearer t".to_string()),
                ("x-src".into(), "fjord".into()),
                ("content-type".into(), "application/json".into())
            ]
        );
        let rec = |v: Value| Record {
            value: SchemaAndValue {
                schema: None,
                value: v,
            },
            ..Record::default()
        };
        let body = w
            .body(&[rec(json!({"a": 1})), rec(Value::Null), rec(json!("s"))])
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!([{"a": 1}, "s"])
        );
        assert_eq!(w.body(&[rec(Value::Null)]).unwrap(), None);
        let w = writer(&[
            ("http.api.url", "http://x"),
            ("behavior.on.null.values", "FAIL"),
        ])
        .unwrap();
        assert!(w
            .body(&[rec(Value::Null)])
            .unwrap_err()
            .contains("behavior.on.null.values"));
        assert!(
            writer(&[("http.api.url", "http://x"), ("headers", "novalue")])
                .unwrap_err()
                .contains("Name:Value")
        );
        assert!(
            config_errors("request.method", "GET", &ConfigMap::new()).unwrap()[0]
                .contains("request.method")
        );
        let semi: ConfigMap = [("header.separator".to_string(), ";".to_string())]
            .into_iter()
            .collect();
        assert_eq!(config_errors("headers", "A:1;B:2", &semi), Some(vec![]));
        assert!(
            config_errors("headers", "A:1|novalue", &ConfigMap::new()).unwrap()[0]
                .contains("header.separator")
        );
    }
}
