//! The worker's log levels and recent log lines over REST: Kafka Connect's `/admin/loggers` (KIP-495) and Fjord's
//! `/admin/logs`, which `fjord connect logs [NAME] [--follow]` reads (the seed's `confluent log connect`).
//!
//! Logging belongs to the process, not to this crate: the program that sets up `tracing` installs a [`LogAdmin`]
//! with [`install`] (the `fjord` binary does), and these endpoints answer 404 saying so where none is installed.
//! Loggers are `tracing` targets (`fjord_connect::pg_sink`, or a prefix such as `fjord_connect`), and `root` is
//! the level of every target no other logger names, as log4j's root logger in Connect. A level set here lasts
//! until the process ends (as in Connect) and applies to this worker only (`scope=worker`).

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, RawQuery};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// A logger's level as `/admin/loggers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerLevel {
    /// TRACE, DEBUG, INFO, WARN, ERROR or OFF.
    pub level: &'static str,
    /// When it was last set over REST (milliseconds since the epoch); None for the level the process started with.
    pub last_modified: Option<i64>,
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Increases by one per line captured, across the process's life; a gap means lines were dropped.
    pub seq: u64,
    pub text: String,
}

/// What the process's logging offers the REST API.
pub trait LogAdmin: Send + Sync {
    /// `root` and every logger with a level of its own, sorted by name.
    fn loggers(&self) -> Vec<(String, LoggerLevel)>;
    /// The level that applies to `name`: its own, else its nearest ancestor's, else root's.
    fn level_of(&self, name: &str) -> LoggerLevel;
    /// Sets `name`'s level (a level from [`parse_level`]) and drops the levels of its descendants, which now
    /// follow it (all loggers for `root`); the loggers whose level changed, `name` first. An error leaves every
    /// level as it was.
    fn set_level(
        &self,
        name: &str,
        level: &'static str,
    ) -> std::result::Result<Vec<String>, String>;
    /// Up to `max` captured lines, oldest first: those with `seq > after`, or with no `after` the last `max`;
    /// those of one connector only when `connector` is given (lines logged with `connector=NAME`, by the
    /// connector's tasks or about it).
    fn lines(&self, after: Option<u64>, connector: Option<&str>, max: usize) -> Vec<LogLine>;
    /// The sequence number the next captured line will get.
    fn next_seq(&self) -> u64;
}

static ADMIN: OnceLock<Arc<dyn LogAdmin>> = OnceLock::new();

/// Makes `admin` the process's log administration (once; later calls are ignored).
pub fn install(admin: Arc<dyn LogAdmin>) {
    let _ = ADMIN.set(admin);
}

fn admin() -> Result<&'static Arc<dyn LogAdmin>> {
    ADMIN.get().ok_or_else(|| {
        Error::NotFound(
            "this process does not expose its logging over REST (only the `fjord` program does)"
                .into(),
        )
    })
}

/// log4j's level names as Connect accepts them (any case), as the canonical upper-case name; FATAL is ERROR
/// (tracing has nothing above it).
pub fn parse_level(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_uppercase().as_str() {
        "TRACE" | "ALL" => "TRACE",
        "DEBUG" => "DEBUG",
        "INFO" => "INFO",
        "WARN" | "WARNING" => "WARN",
        "ERROR" | "FATAL" => "ERROR",
        "OFF" => "OFF",
        _ => return None,
    })
}

/// The most lines one `/admin/logs` answer carries.
pub const MAX_LINES: usize = 10_000;
const MAX_LOGGER_NAME: usize = 256;

/// A logger name is `root` or a tracing target: letters, digits, `_`, `-`, `.` and `::` separators.
fn check_logger(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LOGGER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "invalid logger name {name:?}: use `root` or a module path such as fjord_connect::pg_sink (letters, digits, _, -, . and ::, at most {MAX_LOGGER_NAME} characters)"
        )))
    }
}

fn level_json(l: &LoggerLevel) -> Value {
    json!({"level": l.level, "last_modified": l.last_modified})
}

fn query_param(q: &Option<String>, name: &str) -> Option<String> {
    crate::api::query_params(q)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `GET /admin/loggers`: `{"root": {"level": "INFO", "last_modified": null}, "fjord_connect::pg_sink": {...}}`.
pub(crate) async fn list_loggers() -> Result<Response> {
    let admin = admin()?;
    let mut out = Map::new();
    for (name, level) in admin.loggers() {
        out.insert(name, level_json(&level));
    }
    Ok(crate::api::ok(Value::Object(out)))
}

/// `GET /admin/loggers/{name}`: the level that applies to it.
pub(crate) async fn get_logger(Path(name): Path<String>) -> Result<Response> {
    let admin = admin()?;
    check_logger(&name)?;
    Ok(crate::api::ok(level_json(&admin.level_of(&name))))
}

/// `PUT /admin/loggers/{name}` with `{"level": "DEBUG"}`: the loggers whose level changed, as a JSON array.
pub(crate) async fn put_logger(
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: crate::api::Body,
) -> Result<Response> {
    let admin = admin()?;
    check_logger(&name)?;
    match query_param(&q, "scope").as_deref() {
        None | Some("worker") => {}
        Some("cluster") => {
            return Err(Error::BadRequest(
                "scope=cluster is not supported by Fjord's worker yet: send the request to each worker (scope=worker, the default)".into(),
            ))
        }
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "scope={other}: expected worker or cluster"
            )))
        }
    }
    let body = crate::api::json_body(body)?;
    let Some(level) = body.get("level") else {
        return Err(Error::BadRequest(
            "Desired 'level' parameter was not specified in request.".into(),
        ));
    };
    let level = level.as_str().and_then(parse_level).ok_or_else(|| {
        Error::BadRequest(format!(
            "invalid log level {level}: expected one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF"
        ))
    })?;
    let changed = admin.set_level(&name, level).map_err(|e| {
        Error::Internal(format!(
            "the log levels could not be changed (they are as they were): {e}"
        ))
    })?;
    Ok(crate::api::ok(json!(changed)))
}

/// `GET /admin/logs?after=SEQ&connector=NAME&lines=N`: `{"lines": [{"seq", "line"}], "next": SEQ}`; with no
/// `after`, the last `lines` (default 100) lines. `next` is the `after` of the following poll.
pub(crate) async fn logs(RawQuery(q): RawQuery) -> Result<Response> {
    let admin = admin()?;
    let number = |name: &str| -> Result<Option<u64>> {
        query_param(&q, name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Error::BadRequest(format!("{name}={v}: expected a non-negative number"))
                })
            })
            .transpose()
    };
    let max = number("lines")?.unwrap_or(100).min(MAX_LINES as u64) as usize;
    let connector = query_param(&q, "connector").filter(|c| !c.is_empty());
    let next = admin.next_seq();
    let lines = admin.lines(number("after")?, connector.as_deref(), max);
    let next = lines
        .last()
        .map(|l| l.seq)
        .unwrap_or(next.saturating_sub(1));
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|l| json!({"seq": l.seq, "line": l.text}))
        .collect();
    Ok(crate::api::ok(json!({"lines": lines, "next": next})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_as_connect_names_them() {
        assert_eq!(parse_level("debug"), Some("DEBUG"));
        assert_eq!(parse_level(" Warn "), Some("WARN"));
        assert_eq!(parse_level("FATAL"), Some("ERROR"));
        assert_eq!(parse_level("off"), Some("OFF"));
        assert_eq!(parse_level("verbose"), None);
        assert_eq!(parse_level(""), None);
    }

    #[test]
    fn logger_names_are_checked() {
        assert!(check_logger("root").is_ok());
        assert!(check_logger("fjord_connect::pg_sink").is_ok());
        assert!(check_logger("org.apache.kafka.connect").is_ok());
        assert!(check_logger("").is_err());
        assert!(check_logger("a=debug").is_err());
        assert!(check_logger("a,b").is_err());
        assert!(check_logger(&"a".repeat(300)).is_err());
    }
}
