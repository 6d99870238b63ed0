//! The PostgreSQL sink (`PostgresSink`, also found under Confluent's `JdbcSinkConnector` class name): rows from
//! records, configured as Confluent's JDBC sink is (`connection.url`, `insert.mode`, `pk.mode`, `pk.fields`,
//! `table.name.format`, `auto.create`, `auto.evolve`, `batch.size`, `delete.enabled`).
//!
//! **Path of a batch:** up to `batch.size` records are consumed (group `connect-<name>`, auto-commit off), each
//! is converted to a row (the value's struct with its JSON schema envelope, or a schemaless JSON object; the key
//! for `pk.mode=record_key`), the tables are created or evolved as needed, and the rows are written in one
//! transaction with one statement per run of like rows: `INSERT ... SELECT ... FROM UNNEST($1::text[], ...)`
//! (columns sent as text arrays and cast by the server to each column's own type), `ON CONFLICT (pk) DO UPDATE`
//! for upserts (a batch keeps the last row of each key), `DELETE ... USING UNNEST(...)` for tombstones. The
//! offsets are committed after the transaction commits: at-least-once, and upserts make redelivery idempotent.
//!
//! **Errors:** a batch the database refuses for its data (SQLSTATE classes 22 and 23, 42804, 42846, 42703,
//! 54000: [`is_data_error`]) is written again row by row, and each refused row is errant
//! (`error_handling::Reporter`: the task fails at it, or with `errors.tolerance=all` it goes to the dead-letter
//! topic and the others are written). Any other failure (connection lost, permission refused, table missing,
//! `write.timeout.ms` passed) is never blamed on a record: the write is retried `max.retries` times
//! `retry.backoff.ms` apart (longer with `errors.retry.timeout`), then the task fails at the first row not
//! written, uncommitted (and restarts per `task.restart.*`). A stop drops a write and its backoff at once.
//!
//! **Transforms** (`transforms=...`) apply as in every sink, after the converters; without them records go
//! from bytes to rows directly (a cached schema per producer: the fast path the benchmark measures).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::config::ConfigMap;
use crate::converter::Converter;
use crate::error_handling::{ErrorConfig, Reporter, Stage};
use crate::sink_task::{num, range_error, MAX_MS, MAX_RETRIES_LIMIT};
use crate::transforms::{Chain, Record, SchemaAndValue};
use crate::worker::TaskContext;

/// The connector's own keys: (name, type, default, importance, documentation, required).
/// A config key: (name, type, default, importance, documentation, required).
pub type KeyDef = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
    bool,
);

pub const KEYS: [KeyDef; 16] = [
    ("connection.url", "STRING", None, "HIGH", "JDBC connection URL: jdbc:postgresql://host:port/database (or postgresql://user:password@host:port/database); user and password may be query parameters.", true),
    ("connection.user", "STRING", None, "HIGH", "JDBC connection user.", false),
    ("connection.password", "PASSWORD", None, "HIGH", "JDBC connection password.", false),
    ("table.name.format", "STRING", Some("${topic}"), "MEDIUM", "A format string for the destination table name, which may contain '${topic}' as a placeholder for the originating topic name (schema.table for a schema).", false),
    ("insert.mode", "STRING", Some("insert"), "HIGH", "The insertion mode to use: insert (standard INSERT statements) or upsert (INSERT ... ON CONFLICT (pk) DO UPDATE: the last row of a key wins).", false),
    ("pk.mode", "STRING", Some("none"), "HIGH", "The primary key mode: none, record_key (the key's field(s), or the whole primitive key as one column) or record_value (fields of the value).", false),
    ("pk.fields", "LIST", Some(""), "MEDIUM", "The primary key fields: with record_key a primitive key's column name (default __connect_key) or the key struct's fields (default all); with record_value the value's fields (default all).", false),
    ("auto.create", "BOOLEAN", Some("false"), "MEDIUM", "Whether to automatically create the destination table (CREATE TABLE) from the record schema if it is missing.", false),
    ("auto.evolve", "BOOLEAN", Some("false"), "MEDIUM", "Whether to automatically add columns (ALTER TABLE ... ADD COLUMN) for fields the table does not have; added columns are nullable.", false),
    ("batch.size", "INT", Some("3000"), "MEDIUM", "Specifies how many records to attempt to batch together for insertion into the destination table, when possible.", false),
    ("delete.enabled", "BOOLEAN", Some("false"), "MEDIUM", "Whether to treat null record values (tombstones) as deletes of the key's row. Requires pk.mode to be record_key.", false),
    ("connection.attempts", "INT", Some("3"), "LOW", "Maximum number of attempts to open a connection to PostgreSQL (each bounded by write.timeout.ms) before the write counts as failed.", false),
    ("connection.backoff.ms", "LONG", Some("10000"), "LOW", "Backoff time in milliseconds between connection attempts.", false),
    ("max.retries", "INT", Some("10"), "MEDIUM", "The maximum number of times to retry a write that failed for a reason other than its data (connection lost, permission refused, table missing, timeout) before the task fails (and restarts per task.restart.*). Records are never dead-lettered for such failures.", false),
    ("retry.backoff.ms", "INT", Some("3000"), "MEDIUM", "The time in milliseconds to wait following an error before a retry attempt is made.", false),
    ("write.timeout.ms", "INT", Some("60000"), "LOW", "Fjord's bound on one connection attempt and on one batch's write (a hung server): past it the connection is dropped and the write counts as failed (retried per max.retries).", false),
];

pub const CLASS: &str = "io.fjord.connect.postgres.PostgresSinkConnector";
pub const TASK_CLASS: &str = "io.fjord.connect.postgres.PostgresSinkTask";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkMode {
    None,
    RecordKey,
    RecordValue,
}

/// The parsed connector config.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub pg: tokio_postgres::Config,
    pub table_format: String,
    pub upsert: bool,
    pub pk_mode: PkMode,
    pub pk_fields: Vec<String>,
    pub auto_create: bool,
    pub auto_evolve: bool,
    pub batch_size: usize,
    pub delete_enabled: bool,
    pub connect: ConnectPolicy,
    pub max_retries: u32,
    pub retry_backoff: Duration,
}

/// How connections are opened (`connection.attempts`, `connection.backoff.ms`) and how long one attempt or one
/// write may take (`write.timeout.ms` for the sink, `query.timeout.ms` for the source).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectPolicy {
    pub attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

impl ConnectPolicy {
    pub fn from_config(c: &ConfigMap, timeout_key: &str) -> ConnectPolicy {
        ConnectPolicy {
            attempts: num(c, "connection.attempts", 3u32).max(1),
            backoff: Duration::from_millis(num(c, "connection.backoff.ms", 10_000u64)),
            timeout: Duration::from_millis(num(c, timeout_key, 60_000u64).max(1)),
        }
    }
}

fn get<'a>(c: &'a ConfigMap, k: &str) -> Option<&'a str> {
    c.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn boolean(c: &ConfigMap, k: &str) -> Result<bool, String> {
    match get(c, k).map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(format!(
            "Invalid value {v} for configuration {k}: Expected value to be either true or false"
        )),
    }
}

/// `connection.url` (JDBC's `jdbc:postgresql://host:port/db?user=..` or libpq's `postgresql://`) with
/// `connection.user`/`connection.password` to a client config.
pub fn parse_url(c: &ConfigMap) -> Result<tokio_postgres::Config, String> {
    let bad = |why: String| {
        format!(
            "Invalid value {} for configuration connection.url: {why}",
            c.get("connection.url").map(|s| s.trim()).unwrap_or("")
        )
    };
    let url = get(c, "connection.url").ok_or_else(|| {
        "Missing required configuration \"connection.url\" which has no default value.".to_string()
    })?;
    let rest = url.strip_prefix("jdbc:").unwrap_or(url);
    let Some(rest) = rest
        .strip_prefix("postgresql://")
        .or_else(|| rest.strip_prefix("postgres://"))
    else {
        return Err(bad(
            "expected jdbc:postgresql://host:port/database or postgresql://host:port/database"
                .into(),
        ));
    };
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    // Only the parameters a TLS-less tokio-postgres understands; JDBC's others are ignored with a warning.
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "user" | "password" | "application_name" | "connect_timeout" | "options" => {
                kept.push(format!("{k}={v}"))
            }
            "ApplicationName" => kept.push(format!("application_name={v}")),
            "sslmode" if matches!(v, "disable" | "prefer" | "allow") => {
                kept.push("sslmode=disable".into())
            }
            "sslmode" | "ssl" if v != "false" => {
                return Err(bad(format!(
                    "{k}={v}: TLS connections to PostgreSQL are not supported yet; connect without TLS (sslmode=disable) over a trusted network"
                )))
            }
            _ => tracing::warn!("connection.url parameter {k} is not used by Fjord's PostgreSQL sink"),
        }
    }
    let libpq = format!("postgresql://{base}?{}", kept.join("&"));
    let mut pg: tokio_postgres::Config = libpq.parse().map_err(|e| bad(format!("{e}")))?;
    if !pg
        .get_hosts()
        .iter()
        .any(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)))
    {
        return Err(bad(
            "give a host name: postgresql://host:port/database".into()
        ));
    }
    if pg.get_dbname().is_none() {
        return Err(bad("give the database: .../database at the end".into()));
    }
    if let Some(u) = get(c, "connection.user") {
        pg.user(u);
    }
    if let Some(p) = c.get("connection.password").filter(|p| !p.is_empty()) {
        pg.password(p.as_str());
    }
    if pg.get_user().is_none() {
        return Err("Missing configuration connection.user: give the database user in connection.user (or user= in connection.url)".into());
    }
    pg.connect_timeout(Duration::from_secs(10));
    Ok(pg)
}

impl PgConfig {
    pub fn from_config(c: &ConfigMap) -> Result<PgConfig, String> {
        let errors: Vec<String> = KEYS.iter().flat_map(|k| key_errors(k.0, c)).collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let pk_mode = match get(c, "pk.mode")
            .unwrap_or("none")
            .to_ascii_lowercase()
            .as_str()
        {
            "record_key" => PkMode::RecordKey,
            "record_value" => PkMode::RecordValue,
            _ => PkMode::None,
        };
        Ok(PgConfig {
            pg: parse_url(c)?,
            table_format: get(c, "table.name.format")
                .unwrap_or("${topic}")
                .to_string(),
            upsert: get(c, "insert.mode").is_some_and(|m| m.eq_ignore_ascii_case("upsert")),
            pk_mode,
            pk_fields: list(c, "pk.fields"),
            auto_create: boolean(c, "auto.create")?,
            auto_evolve: boolean(c, "auto.evolve")?,
            batch_size: get(c, "batch.size")
                .map_or(Ok(3000), |b| b.parse())
                .map_err(|e| format!("batch.size: {e}"))?,
            delete_enabled: boolean(c, "delete.enabled")?,
            connect: ConnectPolicy::from_config(c, "write.timeout.ms"),
            max_retries: num(c, "max.retries", 10u32),
            retry_backoff: Duration::from_millis(num(c, "retry.backoff.ms", 3000u64)),
        })
    }
}

fn list(c: &ConfigMap, k: &str) -> Vec<String> {
    c.get(k)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The errors of one of this connector's keys (empty: fine), Connect-style, naming the key.
pub fn key_errors(key: &str, c: &ConfigMap) -> Vec<String> {
    let value = get(c, key).unwrap_or("");
    let invalid = |why: &str| {
        vec![format!(
            "Invalid value {value} for configuration {key}: {why}"
        )]
    };
    match key {
        "connection.url" => match parse_url(c) {
            Err(e) if e.starts_with("Invalid value") => vec![e],
            _ => Vec::new(),
        },
        "connection.user" => match parse_url(c) {
            Err(e) if e.starts_with("Missing configuration connection.user") => vec![e],
            _ => Vec::new(),
        },
        "insert.mode" => match value.to_ascii_lowercase().as_str() {
            "" | "insert" | "upsert" => {
                let pk_none = get(c, "pk.mode").is_none_or(|m| m.eq_ignore_ascii_case("none"));
                if value.eq_ignore_ascii_case("upsert") && pk_none {
                    invalid("upsert needs a primary key: set pk.mode=record_key or pk.mode=record_value (and pk.fields)")
                } else {
                    Vec::new()
                }
            }
            "update" => invalid("update mode is not supported; use insert or upsert"),
            _ => invalid("String must be one of: insert, upsert"),
        },
        "pk.mode" => match value.to_ascii_lowercase().as_str() {
            "" | "none" | "record_key" | "record_value" => Vec::new(),
            "kafka" => {
                invalid("pk.mode=kafka is not supported yet; use record_key or record_value")
            }
            _ => invalid("String must be one of: none, record_key, record_value"),
        },
        "pk.fields" => {
            let mode = get(c, "pk.mode").unwrap_or("none").to_ascii_lowercase();
            if mode == "none" && !value.is_empty() {
                invalid("pk.fields needs pk.mode=record_key or record_value")
            } else {
                Vec::new()
            }
        }
        "auto.create" | "auto.evolve" => boolean(c, key).err().into_iter().collect(),
        "delete.enabled" => match boolean(c, key) {
            Err(e) => vec![e],
            Ok(true)
                if !get(c, "pk.mode").is_some_and(|m| m.eq_ignore_ascii_case("record_key")) =>
            {
                invalid("Primary key mode must be 'record_key' when delete support is enabled")
            }
            Ok(_) => Vec::new(),
        },
        "table.name.format" if c.contains_key(key) && value.is_empty() => {
            invalid("give a table name, e.g. ${topic} or schema.${topic}")
        }
        "table.name.format" if value.contains('"') => invalid("a table name cannot contain '\"'"),
        "connection.attempts" if !value.is_empty() => {
            range_error(value, 1, MAX_RETRIES_LIMIT).map_or_else(Vec::new, |w| invalid(&w))
        }
        "max.retries" if !value.is_empty() => {
            range_error(value, 0, MAX_RETRIES_LIMIT).map_or_else(Vec::new, |w| invalid(&w))
        }
        "connection.backoff.ms" | "retry.backoff.ms" if !value.is_empty() => {
            range_error(value, 0, MAX_MS).map_or_else(Vec::new, |w| invalid(&w))
        }
        "write.timeout.ms" | "query.timeout.ms" if !value.is_empty() => {
            range_error(value, 1, MAX_MS).map_or_else(Vec::new, |w| invalid(&w))
        }
        "batch.size" => match value.parse::<u32>() {
            _ if value.is_empty() => Vec::new(),
            Ok(n) if (1..=1_000_000).contains(&n) => Vec::new(),
            Ok(_) => invalid("batch.size must be between 1 and 1000000"),
            Err(_) => invalid("Not a number of type INT"),
        },
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Records to rows

/// A column's type, from a Connect schema type (or inferred from schemaless JSON), mapped as Confluent's JDBC
/// sink maps them for PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Bool,
    Text,
    Bytes,
    Decimal,
    Date,
    Time,
    Timestamp,
    Jsonb,
}

impl ColType {
    pub fn sql(self) -> &'static str {
        match self {
            ColType::Int16 => "SMALLINT",
            ColType::Int32 => "INT",
            ColType::Int64 => "BIGINT",
            ColType::Float32 => "REAL",
            ColType::Float64 => "DOUBLE PRECISION",
            ColType::Bool => "BOOLEAN",
            ColType::Text => "TEXT",
            ColType::Bytes => "BYTEA",
            ColType::Decimal => "DECIMAL",
            ColType::Date => "DATE",
            ColType::Time => "TIME",
            ColType::Timestamp => "TIMESTAMP",
            ColType::Jsonb => "JSONB",
        }
    }
}

/// One column of a row: its name, type, whether it may be null, and its value as PostgreSQL text.
#[derive(Debug, Clone, PartialEq)]
pub struct Col {
    pub name: String,
    pub ty: ColType,
    pub optional: bool,
    pub value: Option<String>,
}

/// A record made into a row (or a delete of the key's row).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub table: String,
    pub delete: bool,
    /// The primary key's columns first (`pk` of them), then the others.
    pub cols: Vec<Col>,
    pub pk: usize,
}

/// What a converter made of a key or value: a struct's fields, or one primitive.
enum Converted {
    Null,
    Fields(Vec<Col>),
    Primitive(Col),
}

fn days_to_civil(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-from-civil inverse.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn date_text(days: i64) -> String {
    let (y, m, d) = days_to_civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn time_text(ms_of_day: i64) -> String {
    let ms = ms_of_day.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn timestamp_text(ms: i64) -> String {
    format!(
        "{} {}",
        date_text(ms.div_euclid(86_400_000)),
        time_text(ms.rem_euclid(86_400_000))
    )
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    crate::converter::base64_decode(s).ok_or_else(|| format!("{s:?} is not base64"))
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A decimal's unscaled two's-complement big-endian bytes and scale as text.
fn decimal_text(bytes: &[u8], scale: i64) -> Result<String, String> {
    // The scale comes from the record's own schema: bounded before it sizes a string (PostgreSQL's numeric keeps
    // at most 16,383 digits after the point; a Decimal of 16 bytes has at most 39 digits).
    if !(-MAX_DECIMAL_SCALE..=MAX_DECIMAL_SCALE).contains(&scale) {
        return Err(format!(
            "a Decimal scale of {scale} is not supported (between -{MAX_DECIMAL_SCALE} and {MAX_DECIMAL_SCALE})"
        ));
    }
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!(
            "a Decimal of {} bytes is not supported (at most 16)",
            bytes.len()
        ));
    }
    let mut v: i128 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
    for b in bytes {
        v = (v << 8) | i128::from(*b);
    }
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    if scale <= 0 {
        return Ok(format!("{sign}{digits}{}", "0".repeat((-scale) as usize)));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (i, f) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{i}.{f}"))
}

/// The largest Decimal scale (either sign) [`decimal_text`] accepts.
const MAX_DECIMAL_SCALE: i64 = 1000;

/// A Connect schema's field type (and logical name) with its JSON payload to a column.
fn schema_col(name: &str, schema: &Value, v: &Value) -> Result<Col, String> {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let logical = schema.get("name").and_then(Value::as_str).unwrap_or("");
    let optional = schema
        .get("optional")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let v = if v.is_null() {
        schema.get("default").unwrap_or(&Value::Null)
    } else {
        v
    };
    let mismatch = || {
        format!(
            "field {name}: {v} is not a valid {ty}{}",
            if logical.is_empty() {
                String::new()
            } else {
                format!(" ({logical})")
            }
        )
    };
    let int = |lo: i64, hi: i64| -> Result<Option<String>, String> {
        match v.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n.to_string())),
            _ => Err(mismatch()),
        }
    };
    let (col_ty, value) = match (ty, logical) {
        (_, _) if v.is_null() => {
            if !optional {
                return Err(format!("field {name} is null but its schema is not optional"));
            }
            let t = match (ty, logical) {
                ("int8" | "int16", _) => ColType::Int16,
                (_, "org.apache.kafka.connect.data.Date") => ColType::Date,
                (_, "org.apache.kafka.connect.data.Time") => ColType::Time,
                (_, "org.apache.kafka.connect.data.Timestamp") => ColType::Timestamp,
                (_, "org.apache.kafka.connect.data.Decimal") => ColType::Decimal,
                ("int32", _) => ColType::Int32,
                ("int64", _) => ColType::Int64,
                ("float", _) | ("float32", _) => ColType::Float32,
                ("double", _) | ("float64", _) => ColType::Float64,
                ("boolean", _) => ColType::Bool,
                ("bytes", _) => ColType::Bytes,
                ("string", _) => ColType::Text,
                _ => return Err(format!("field {name} has type {ty}, which a PostgreSQL column cannot hold (structs, arrays and maps are not supported; flatten them first)")),
            };
            (t, None)
        }
        ("int32", "org.apache.kafka.connect.data.Date") => (ColType::Date, Some(date_text(v.as_i64().ok_or_else(mismatch)?))),
        ("int32", "org.apache.kafka.connect.data.Time") => (ColType::Time, Some(time_text(v.as_i64().ok_or_else(mismatch)?))),
        ("int64", "org.apache.kafka.connect.data.Timestamp") => (ColType::Timestamp, Some(timestamp_text(v.as_i64().ok_or_else(mismatch)?))),
        ("bytes", "org.apache.kafka.connect.data.Decimal") => {
            let scale = schema.pointer("/parameters/scale").and_then(|s| s.as_str().and_then(|s| s.parse().ok()).or(s.as_i64())).unwrap_or(0);
            let b = base64_decode(v.as_str().ok_or_else(mismatch)?)?;
            (ColType::Decimal, Some(decimal_text(&b, scale)?))
        }
        ("int8", _) => (ColType::Int16, int(i8::MIN.into(), i8::MAX.into())?),
        ("int16", _) => (ColType::Int16, int(i16::MIN.into(), i16::MAX.into())?),
        ("int32", _) => (ColType::Int32, int(i32::MIN.into(), i32::MAX.into())?),
        ("int64", _) => (ColType::Int64, int(i64::MIN, i64::MAX)?),
        ("float" | "float32", _) => (ColType::Float32, Some(v.as_f64().ok_or_else(mismatch)?.to_string())),
        ("double" | "float64", _) => (ColType::Float64, Some(v.as_f64().ok_or_else(mismatch)?.to_string())),
        ("boolean", _) => (ColType::Bool, Some(v.as_bool().ok_or_else(mismatch)?.to_string())),
        ("string", _) => (ColType::Text, Some(v.as_str().ok_or_else(mismatch)?.to_string())),
        ("bytes", _) => (ColType::Bytes, Some(hex(&base64_decode(v.as_str().ok_or_else(mismatch)?)?))),
        _ => return Err(format!("field {name} has type {ty}, which a PostgreSQL column cannot hold (structs, arrays and maps are not supported; flatten them first)")),
    };
    if value.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(format!(
            "field {name} contains a NUL character, which PostgreSQL text cannot hold"
        ));
    }
    Ok(Col {
        name: name.to_string(),
        ty: col_ty,
        optional,
        value,
    })
}

/// A schemaless JSON value to a column (types inferred; nested objects and arrays as JSONB).
fn schemaless_col(name: &str, v: &Value) -> Result<Col, String> {
    let (ty, value) = match v {
        Value::Null => (ColType::Text, None),
        Value::Bool(b) => (ColType::Bool, Some(b.to_string())),
        Value::Number(n) if n.is_i64() || n.is_u64() => (ColType::Int64, Some(n.to_string())),
        Value::Number(n) => (ColType::Float64, Some(n.to_string())),
        Value::String(s) => (ColType::Text, Some(s.clone())),
        Value::Array(_) | Value::Object(_) => (ColType::Jsonb, Some(v.to_string())),
    };
    if value.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(format!(
            "field {name} contains a NUL character, which PostgreSQL text cannot hold"
        ));
    }
    Ok(Col {
        name: name.to_string(),
        ty,
        optional: true,
        value,
    })
}

/// A key's or value's bytes, through its converter, to fields (a struct or JSON object) or one primitive.
fn convert(converter: &Converter, bytes: Option<&[u8]>, what: &str) -> Result<Converted, String> {
    let Some(bytes) = bytes else {
        return Ok(Converted::Null);
    };
    let text = || String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not UTF-8"));
    match converter {
        Converter::Registry(r) => from_data(&r.decode(Some(bytes))?, what),
        Converter::String => Ok(Converted::Primitive(Col {
            name: String::new(),
            ty: ColType::Text,
            optional: false,
            value: Some(text()?),
        })),
        Converter::ByteArray => Ok(Converted::Primitive(Col {
            name: String::new(),
            ty: ColType::Bytes,
            optional: false,
            value: Some(hex(bytes)),
        })),
        Converter::Json {
            schemas_enable: false,
        } => {
            let v: Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("JsonConverter: the {what} is not JSON ({e})"))?;
            match v {
                Value::Null => Ok(Converted::Null),
                Value::Object(o) => o
                    .iter()
                    .map(|(k, v)| schemaless_col(k, v))
                    .collect::<Result<_, _>>()
                    .map(Converted::Fields),
                v => schemaless_col("", &v).map(Converted::Primitive),
            }
        }
        Converter::Json {
            schemas_enable: true,
        } => {
            let full = || -> Result<(Rc<Value>, Value), String> {
                let v: Value = serde_json::from_slice(bytes)
                    .map_err(|e| format!("JsonConverter: the {what} is not JSON ({e})"))?;
                let (Some(schema), Some(payload), 2) = (
                    v.get("schema"),
                    v.get("payload"),
                    v.as_object().map_or(0, |o| o.len()),
                ) else {
                    return Err(format!("JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields (the {what}); for plain JSON set {what}.converter.schemas.enable=false"));
                };
                Ok((Rc::new(schema.clone()), payload.clone()))
            };
            // Connect's JsonConverter writes `{"schema":...,"payload":...}`: the schema, the same for every record of
            // a producer, is parsed once (per thread) and only the payload each time. Anything else is parsed whole.
            let (schema, payload) = match split_envelope(bytes) {
                Some((s, p)) => match (cached_schema(s), serde_json::from_slice::<Value>(p)) {
                    (Some(schema), Ok(payload)) => (schema, payload),
                    _ => full()?,
                },
                None => full()?,
            };
            with_schema(&schema, &payload, what)
        }
    }
}

/// A payload with its Connect schema (JSON form) to fields (a struct) or one primitive.
fn with_schema(schema: &Value, payload: &Value, what: &str) -> Result<Converted, String> {
    if payload.is_null() {
        return Ok(Converted::Null);
    }
    if schema.get("type").and_then(Value::as_str) != Some("struct") {
        return schema_col("", schema, payload).map(Converted::Primitive);
    }
    let fields = schema
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("the {what}'s struct schema has no fields"))?;
    let obj = payload.as_object().ok_or_else(|| {
        format!("the {what}'s payload {payload} does not match its struct schema")
    })?;
    fields
        .iter()
        .map(|f| {
            let name = f
                .get("field")
                .and_then(Value::as_str)
                .ok_or("a struct field without a name")?;
            schema_col(name, f, obj.get(name).unwrap_or(&Value::Null))
        })
        .collect::<Result<_, _>>()
        .map(Converted::Fields)
}

/// A key or value after the transforms (Connect data with an optional schema) to fields or one primitive.
fn from_data(data: &SchemaAndValue, what: &str) -> Result<Converted, String> {
    match (&data.schema, &data.value) {
        (_, Value::Null) => Ok(Converted::Null),
        (Some(schema), v) => with_schema(schema, v, what),
        (None, Value::Object(o)) => o
            .iter()
            .map(|(k, v)| schemaless_col(k, v))
            .collect::<Result<_, _>>()
            .map(Converted::Fields),
        (None, v) => schemaless_col("", v).map(Converted::Primitive),
    }
}

/// `{"schema":S,"payload":P}` split into S and P without parsing them (P may still be invalid JSON).
fn split_envelope(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = bytes.trim_ascii().strip_prefix(b"{\"schema\":")?;
    let mut values =
        serde_json::Deserializer::from_slice(rest).into_iter::<serde::de::IgnoredAny>();
    values.next()?.ok()?;
    let (schema, after) = rest.split_at(values.byte_offset());
    let payload = after
        .trim_ascii_start()
        .strip_prefix(b",")?
        .trim_ascii_start()
        .strip_prefix(b"\"payload\":")?
        .trim_ascii_end()
        .strip_suffix(b"}")?;
    Some((schema, payload))
}

thread_local! {
    /// Parsed schemas by their JSON text (at most 256; then it starts over).
    static SCHEMAS: std::cell::RefCell<HashMap<Vec<u8>, Rc<Value>>> = std::cell::RefCell::new(HashMap::new());
}

fn cached_schema(text: &[u8]) -> Option<Rc<Value>> {
    SCHEMAS.with(|cache| {
        if let Some(s) = cache.borrow().get(text) {
            return Some(s.clone());
        }
        let parsed = Rc::new(serde_json::from_slice::<Value>(text).ok()?);
        let mut cache = cache.borrow_mut();
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(text.to_vec(), parsed.clone());
        Some(parsed)
    })
}

/// Makes a record a row, per the pk mode. Err: (stage, why) for an errant record; Ok(None): nothing to write
/// (a tombstone while `delete.enabled=false`).
fn to_row(
    cfg: &PgConfig,
    key_conv: &Converter,
    value_conv: &Converter,
    m: &OwnedMessage,
) -> Result<Option<Row>, (Stage, String)> {
    let key = if cfg.pk_mode == PkMode::RecordKey {
        convert(key_conv, m.key(), "key").map_err(|e| (Stage::KeyConverter, e))?
    } else {
        Converted::Null
    };
    let value =
        convert(value_conv, m.payload(), "value").map_err(|e| (Stage::ValueConverter, e))?;
    assemble(cfg, m.topic(), key, value)
}

/// Makes a record that went through the transforms a row (its topic may have been changed by them), as [`to_row`].
fn record_row(cfg: &PgConfig, r: &Record) -> Result<Option<Row>, (Stage, String)> {
    let key = if cfg.pk_mode == PkMode::RecordKey {
        from_data(&r.key, "key").map_err(|e| (Stage::KeyConverter, e))?
    } else {
        Converted::Null
    };
    let value = from_data(&r.value, "value").map_err(|e| (Stage::ValueConverter, e))?;
    assemble(cfg, &r.topic, key, value)
}

/// The row of a record of `topic` from its converted key and value, per the pk mode.
fn assemble(
    cfg: &PgConfig,
    topic: &str,
    key: Converted,
    value: Converted,
) -> Result<Option<Row>, (Stage, String)> {
    let table = cfg.table_format.replace("${topic}", topic);
    let mut pk_cols: Vec<Col> = Vec::new();
    if cfg.pk_mode == PkMode::RecordKey {
        match key {
            Converted::Null => return Err((Stage::TaskPut, "pk.mode=record_key but the record has no key; give every record a key, or use pk.mode=record_value".into())),
            Converted::Primitive(mut c) => {
                if cfg.pk_fields.len() > 1 {
                    return Err((Stage::TaskPut, format!("the key is a primitive, so pk.fields must name one column, not {:?}", cfg.pk_fields)));
                }
                c.name = cfg.pk_fields.first().cloned().unwrap_or_else(|| "__connect_key".into());
                c.optional = false;
                pk_cols.push(c);
            }
            Converted::Fields(fields) => {
                if cfg.pk_fields.is_empty() {
                    pk_cols = fields;
                } else {
                    for f in &cfg.pk_fields {
                        let c = fields.iter().find(|c| &c.name == f).ok_or_else(|| (Stage::TaskPut, format!("pk.fields names {f}, which the record key does not have")))?;
                        pk_cols.push(c.clone());
                    }
                }
            }
        }
        if pk_cols.iter().any(|c| c.value.is_none()) {
            return Err((
                Stage::TaskPut,
                "a primary key column of the key is null".into(),
            ));
        }
    }
    let value_fields = match value {
        Converted::Null => {
            if cfg.delete_enabled && cfg.pk_mode == PkMode::RecordKey {
                let pk = pk_cols.len();
                return Ok(Some(Row { table, delete: true, cols: pk_cols, pk }));
            }
            return Ok(None);
        }
        Converted::Primitive(_) => return Err((Stage::TaskPut, "the value is not a struct (or JSON object): the PostgreSQL sink writes a record's fields to columns; use a JSON object or a struct schema".into())),
        Converted::Fields(f) => f,
    };
    let mut cols = pk_cols;
    if cfg.pk_mode == PkMode::RecordValue {
        let names: Vec<String> = if cfg.pk_fields.is_empty() {
            value_fields.iter().map(|c| c.name.clone()).collect()
        } else {
            cfg.pk_fields.clone()
        };
        for f in &names {
            let c = value_fields.iter().find(|c| &c.name == f).ok_or_else(|| {
                (
                    Stage::TaskPut,
                    format!("pk.fields names {f}, which the record value does not have"),
                )
            })?;
            if c.value.is_none() {
                return Err((Stage::TaskPut, format!("the primary key field {f} is null")));
            }
            cols.push(c.clone());
        }
    }
    let pk = cols.len();
    for c in value_fields {
        if !cols[..pk].iter().any(|k| k.name == c.name) {
            cols.push(c);
        }
    }
    Ok(Some(Row {
        table,
        delete: false,
        cols,
        pk,
    }))
}

// ---------------------------------------------------------------------------------------------------------
// Tables and statements

/// A quoted identifier; `a.b` is a schema and a table.
pub fn quote_table(name: &str) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

pub(crate) fn quote(id: &str) -> String {
    format!("\"{}\"", id.replace('"', "\"\""))
}

#[derive(Debug, Clone, Default)]
struct Table {
    /// Column name to its type, as `format_type` writes it (used for the casts).
    columns: HashMap<String, String>,
}

/// A database failure: the record's data (`data`: the row is errant, per `errors.tolerance`) or anything else (the
/// connection, a permission, a missing table, a timeout: retried, then the task fails; never the records' fault).
#[derive(Debug)]
pub struct DbError {
    pub data: bool,
    pub message: String,
}

impl DbError {
    /// A failure that is not the data's.
    pub fn other(message: String) -> DbError {
        DbError {
            data: false,
            message,
        }
    }
}

/// Whether a SQLSTATE blames the row written (so that writing the other rows alone succeeds): data exceptions
/// (class 22: a value that does not fit its column), integrity violations (class 23: null, duplicate key, check),
/// a value of the wrong type or a column the table lacks (42804, 42846, 42703), a row too large for an index (54000).
pub fn is_data_error(code: &str) -> bool {
    code.starts_with("22")
        || code.starts_with("23")
        || matches!(code, "42804" | "42846" | "42703" | "54000")
}

/// A tokio-postgres error as what it means here: the server's message, SQLSTATE and detail after `doing`, and
/// whether the data is at fault.
pub(crate) fn db_error(e: tokio_postgres::Error, doing: &str) -> DbError {
    let data = e
        .as_db_error()
        .is_some_and(|d| is_data_error(d.code().code()));
    let message = match e.as_db_error() {
        Some(d) => format!(
            "{doing}: {} (SQLSTATE {}){}",
            d.message(),
            d.code().code(),
            d.detail().map(|x| format!(": {x}")).unwrap_or_default()
        ),
        None => format!("{doing}: {e}"),
    };
    DbError { data, message }
}

struct Db {
    client: Client,
    tables: HashMap<String, Table>,
}

/// Opens a connection: up to `policy.attempts` tries, each bounded by `policy.timeout`, `policy.backoff` apart.
/// The caller makes it stop-aware (the whole future is dropped when the task stops).
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
    policy: &ConnectPolicy,
) -> Result<Client, DbError> {
    let mut attempt = 1;
    loop {
        match connect_once(pg, policy.timeout).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt >= policy.attempts => {
                return Err(DbError::other(format!(
                    "{} (connection.attempts={})",
                    e.message, policy.attempts
                )))
            }
            Err(e) => {
                tracing::warn!(
                    "connecting to PostgreSQL failed (attempt {attempt} of {}, again in {:?}): {}",
                    policy.attempts,
                    policy.backoff,
                    e.message
                );
                tokio::time::sleep(policy.backoff).await;
                attempt += 1;
            }
        }
    }
}

async fn connect_once(pg: &tokio_postgres::Config, timeout: Duration) -> Result<Client, DbError> {
    let host = pg
        .get_hosts()
        .iter()
        .find_map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => Some(h.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .unwrap_or_default();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let timed_out = || {
        DbError::other(format!(
            "connecting to PostgreSQL at {host}:{port} timed out after {timeout:?} (write.timeout.ms / query.timeout.ms); is the server up and not overloaded?"
        ))
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = tokio::time::timeout_at(
        deadline,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| {
        DbError::other(format!("cannot connect to PostgreSQL at {host}:{port}: {e}; is the server running and listening there (connection.url)?"))
    })?;
    let _ = stream.set_nodelay(true);
    let (client, connection) = tokio::time::timeout_at(deadline, pg.connect_raw(stream, NoTls))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| {
            let mut d = db_error(e, &format!("logging in to PostgreSQL at {host}:{port}"));
            d.data = false;
            d
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

impl Db {
    async fn load_table(&mut self, table: &str) -> Result<Option<Table>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&quote_table(table)],
            )
            .await
            .map_err(|e| db_error(e, &format!("reading the columns of {table}")))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        Ok(Some(Table { columns }))
    }

    /// Makes the table fit the row: created (auto.create) or given the missing columns (auto.evolve).
    async fn ensure_table(&mut self, cfg: &PgConfig, row: &Row) -> Result<(), DbError> {
        let fits = |t: &Table| row.cols.iter().all(|c| t.columns.contains_key(&c.name));
        if self.tables.get(&row.table).is_some_and(fits) {
            return Ok(());
        }
        // A missing table is not the record's fault (retried, then the task fails: nothing is dead-lettered);
        // a record with fields the table lacks is (as SQLSTATE 42703 would be).
        let data = |message: String| DbError {
            data: true,
            message,
        };
        let mut table = self.load_table(&row.table).await?;
        if table.is_none() {
            if !cfg.auto_create {
                return Err(DbError::other(format!("table {} does not exist: create it, or set auto.create=true to have the connector create it from the record schema", row.table)));
            }
            if row.delete {
                return Ok(());
            }
            let mut defs: Vec<String> = row
                .cols
                .iter()
                .map(|c| {
                    format!(
                        "{} {}{}",
                        quote(&c.name),
                        c.ty.sql(),
                        if c.optional { "" } else { " NOT NULL" }
                    )
                })
                .collect();
            if row.pk > 0 {
                defs.push(format!(
                    "PRIMARY KEY({})",
                    row.cols[..row.pk]
                        .iter()
                        .map(|c| quote(&c.name))
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                quote_table(&row.table),
                defs.join(", ")
            );
            tracing::info!(table = %row.table, "auto.create: {sql}");
            self.client
                .batch_execute(&sql)
                .await
                .map_err(|e| db_error(e, &format!("creating table {}", row.table)))?;
            table = self.load_table(&row.table).await?;
        }
        let mut t = table.ok_or_else(|| {
            DbError::other(format!("table {} vanished after it was created", row.table))
        })?;
        let missing: Vec<&Col> = row
            .cols
            .iter()
            .filter(|c| !t.columns.contains_key(&c.name))
            .collect();
        if !missing.is_empty() {
            if !cfg.auto_evolve {
                return Err(data(format!("table {} has no column(s) {} that the record has: add them, or set auto.evolve=true to have the connector add them", row.table, missing.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "))));
            }
            for c in missing {
                // Added columns are nullable, so that the rows already there stay valid.
                let sql = format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                    quote_table(&row.table),
                    quote(&c.name),
                    c.ty.sql()
                );
                tracing::info!(table = %row.table, "auto.evolve: {sql}");
                self.client.batch_execute(&sql).await.map_err(|e| {
                    db_error(e, &format!("adding column {} to {}", c.name, row.table))
                })?;
            }
            t = self.load_table(&row.table).await?.unwrap_or_default();
        }
        self.tables.insert(row.table.clone(), t);
        Ok(())
    }

    /// Writes a run of rows of one table, kind and column list in one statement.
    async fn write_run(&self, cfg: &PgConfig, rows: &[&Row]) -> Result<(), DbError> {
        let first = rows[0];
        let Some(table) = self.tables.get(&first.table) else {
            return Ok(()); // A delete on a table that does not exist: nothing to delete.
        };
        let cast = |c: &Col| {
            table
                .columns
                .get(&c.name)
                .cloned()
                .unwrap_or_else(|| "text".into())
        };
        let names: Vec<String> = first.cols.iter().map(|c| quote(&c.name)).collect();
        // Upserts (and deletes) of a key within one statement: the last one wins.
        let rows: Vec<&Row> = if (cfg.upsert || first.delete) && first.pk > 0 {
            let mut last: HashMap<Vec<Option<&str>>, usize> = HashMap::new();
            for (i, r) in rows.iter().enumerate() {
                last.insert(
                    r.cols[..r.pk].iter().map(|c| c.value.as_deref()).collect(),
                    i,
                );
            }
            let mut keep: Vec<usize> = last.into_values().collect();
            keep.sort_unstable();
            keep.into_iter().map(|i| rows[i]).collect()
        } else {
            rows.to_vec()
        };
        let arrays: Vec<Vec<Option<&str>>> = (0..first.cols.len())
            .map(|i| rows.iter().map(|r| r.cols[i].value.as_deref()).collect())
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let unnest = format!(
            "UNNEST({}) AS u({})",
            (1..=names.len())
                .map(|i| format!("${i}::text[]"))
                .collect::<Vec<_>>()
                .join(", "),
            names.join(", ")
        );
        let t = quote_table(&first.table);
        let sql = if first.delete {
            let cond: Vec<String> = first.cols[..first.pk]
                .iter()
                .map(|c| format!("t.{q} = u.{q}::{}", cast(c), q = quote(&c.name)))
                .collect();
            format!(
                "DELETE FROM {t} t USING {unnest} WHERE {}",
                cond.join(" AND ")
            )
        } else {
            let select: Vec<String> = first
                .cols
                .iter()
                .map(|c| format!("u.{}::{}", quote(&c.name), cast(c)))
                .collect();
            let mut sql = format!(
                "INSERT INTO {t} ({}) SELECT {} FROM {unnest}",
                names.join(", "),
                select.join(", ")
            );
            if cfg.upsert {
                let pk: Vec<&str> = names[..first.pk].iter().map(String::as_str).collect();
                let rest: Vec<String> = names[first.pk..]
                    .iter()
                    .map(|n| format!("{n} = EXCLUDED.{n}"))
                    .collect();
                if rest.is_empty() {
                    sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", pk.join(", ")));
                } else {
                    sql.push_str(&format!(
                        " ON CONFLICT ({}) DO UPDATE SET {}",
                        pk.join(", "),
                        rest.join(", ")
                    ));
                }
            }
            sql
        };
        self.client
            .execute(sql.as_str(), &params)
            .await
            .map_err(|e| {
                let mut d = db_error(
                    e,
                    &format!("writing {} row(s) to {}", rows.len(), first.table),
                );
                if d.message.contains("SQLSTATE 42P10") {
                    d.message.push_str(&format!(
                        "; upsert needs a primary key or unique constraint on ({}) in table {}",
                        names[..first.pk].join(", "),
                        first.table
                    ));
                }
                d
            })?;
        Ok(())
    }

    /// Writes rows in order in one transaction: runs of rows of the same table, kind and columns share a statement.
    async fn write(&mut self, cfg: &PgConfig, rows: &[&Row]) -> Result<(), DbError> {
        for r in rows {
            self.ensure_table(cfg, r).await?;
        }
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| db_error(e, "BEGIN"))?;
        let result = async {
            let mut start = 0;
            for i in 1..=rows.len() {
                let same = i < rows.len() && {
                    let (a, b) = (rows[start], rows[i]);
                    a.table == b.table
                        && a.delete == b.delete
                        && a.pk == b.pk
                        && a.cols.len() == b.cols.len()
                        && a.cols.iter().zip(&b.cols).all(|(x, y)| x.name == y.name)
                };
                if !same {
                    self.write_run(cfg, &rows[start..i]).await?;
                    start = i;
                }
            }
            Ok::<_, DbError>(())
        }
        .await;
        match result {
            Ok(()) => self
                .client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| db_error(e, "COMMIT")),
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The task

/// Runs the task until `stop` turns true (Ok) or it fails (Err with what happened and what to do).
pub async fn run(ctx: TaskContext, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let cfg = PgConfig::from_config(&ctx.config)?;
    let errors = ErrorConfig::from_config(&ctx.config)?;
    let chain = Chain::from_config(&ctx.config)
        .map_err(|e| format!("invalid transforms: {}", e.join("; ")))?;
    let mut reporter = Reporter::new(
        errors.clone(),
        &ctx.connector,
        ctx.task,
        &ctx.bootstrap_servers,
        &ctx.dlq_overrides,
    );
    let (consumer, topics, group) = crate::sink_task::subscribe(&ctx)?;
    let mut db = None::<Db>;
    tracing::info!(connector = %ctx.connector, ?topics, group = %group, "PostgreSQL sink starting");

    // Pipelined: while one batch is written (the task waits on PostgreSQL), the next is consumed and converted.
    // A batch's offsets are committed as soon as it is written, before the next batch is. A stop (pause, delete,
    // shutdown) does not wait for a write, its retries or their backoff: the write is dropped uncommitted (its
    // connection with it, so PostgreSQL rolls it back) and the batch is written again when the task runs again.
    let mut stopped = stop.clone();
    let mut pending: Option<Prepared> = None;
    let result = loop {
        if *stop.borrow() || stop.has_changed().is_err() {
            break Ok(());
        }
        let Some(batch) = pending.take() else {
            pending = next_batch(&ctx, &cfg, &chain, &consumer, &mut stop).await;
            continue;
        };
        let write = async {
            let done = write_batch(&ctx, &cfg, &errors, &mut reporter, &mut db, &batch).await;
            let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for m in &batch.msgs[..done.upto] {
                next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            }
            if !next.is_empty() {
                if let Err(e) = crate::sink_task::commit(&consumer, &next).await {
                    tracing::warn!(connector = %ctx.connector, "committing offsets failed ({e}); the rows since the last commit will be written again");
                }
            }
            done.failure
        };
        let next = next_batch(&ctx, &cfg, &chain, &consumer, &mut stop);
        tokio::pin!(write, next);
        let mut collected = None;
        let written = loop {
            tokio::select! {
                w = &mut write => break Some(w),
                n = &mut next, if collected.is_none() => collected = Some(n),
                _ = stopped.wait_for(|s| *s) => break None,
            }
        };
        match written {
            None => {
                tracing::info!(connector = %ctx.connector, "stopped during a write; the batch is not committed and is written again when the task runs again");
                break Ok(());
            }
            Some(None) => {
                pending = match collected {
                    Some(n) => n,
                    None => next.await,
                }
            }
            // The next batch was consumed but not written: not committed, so it comes again after a restart.
            Some(Some(failure)) => break Err(failure),
        }
    };
    drop(db);
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    tracing::info!(connector = %ctx.connector, "PostgreSQL sink stopped");
    result
}

/// How far a batch got: its first `upto` records are done (written or reported); `failure` stops the task.
struct Done {
    upto: usize,
    failure: Option<String>,
}

/// A consumed batch, converted: the rows (with the index of their record) and the errant records.
struct Prepared {
    msgs: Vec<OwnedMessage>,
    rows: Vec<(usize, Row)>,
    errant: Vec<(usize, Stage, String)>,
    /// The record at which the registry (of a registry converter) could not be asked, and why: the records
    /// before it are written, the task fails at it.
    fatal: Option<(usize, String)>,
}

/// Waits for the next records (None when told to stop first): up to `batch.size`, or what comes within 50 ms of
/// the first; converted and transformed.
async fn next_batch(
    ctx: &TaskContext,
    cfg: &PgConfig,
    chain: &Chain,
    consumer: &StreamConsumer,
    stop: &mut watch::Receiver<bool>,
) -> Option<Prepared> {
    if *stop.borrow() {
        return None;
    }
    let first = tokio::select! {
        m = consumer.recv() => m,
        _ = stop.changed() => return None,
    };
    let mut batch = vec![first.map(|m| m.detach())];
    let linger = tokio::time::Instant::now() + Duration::from_millis(50);
    while batch.len() < cfg.batch_size {
        match tokio::time::timeout_at(linger, consumer.recv()).await {
            Ok(m) => batch.push(m.map(|m| m.detach())),
            Err(_) => break,
        }
    }
    let msgs: Vec<OwnedMessage> = batch
        .into_iter()
        .filter_map(|m| {
            m.map_err(|e| tracing::warn!(connector = %ctx.connector, "consuming: {e}"))
                .ok()
        })
        .collect();
    let mut rows = Vec::with_capacity(msgs.len());
    let mut errant = Vec::new();
    let mut fatal = None;
    for (i, m) in msgs.iter().enumerate() {
        if let Err(e) = crate::error_handling::prepare_converters(ctx, m.key(), m.payload()).await {
            fatal = Some((i, e));
            break;
        }
        // Without transforms, straight from the bytes (the fast path); with them, as every sink: converters,
        // then the chain (which may drop the record or change its topic, hence its table).
        let row = if chain.is_empty() {
            to_row(cfg, &ctx.key_converter, &ctx.value_converter, m)
        } else {
            match crate::error_handling::convert_and_transform(ctx, chain, m) {
                Ok(Some(r)) => record_row(cfg, &r),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match row {
            Ok(Some(r)) => rows.push((i, r)),
            Ok(None) => {}
            Err((stage, why)) => errant.push((i, stage, why)),
        }
    }
    Some(Prepared {
        msgs,
        rows,
        errant,
        fatal,
    })
}

/// Writes a batch. Rows the database refuses for their data are errant (the task fails at the first under
/// `errors.tolerance=none`; with `all` they are dead-lettered and skipped). Any other failure (connection,
/// permission, missing table, timeout) is retried `max.retries` times `retry.backoff.ms` apart (or for
/// `errors.retry.timeout` when set), then fails the task at the first row not written: its offset is not
/// committed, nothing is dead-lettered.
async fn write_batch(
    ctx: &TaskContext,
    cfg: &PgConfig,
    errors: &ErrorConfig,
    reporter: &mut Reporter,
    db: &mut Option<Db>,
    batch: &Prepared,
) -> Done {
    let msgs = &batch.msgs;
    // Records that did not convert are reported first (the task fails at the first one under tolerance none,
    // after the rows before it are written).
    let (mut upto, mut failure) = match &batch.fatal {
        Some((i, why)) => (*i, Some(why.clone())),
        None => (msgs.len(), None),
    };
    for (i, stage, why) in &batch.errant {
        if let Err(f) = reporter.report(&msgs[*i], *stage, why).await {
            upto = *i;
            failure = Some(f);
            break;
        }
    }
    let rows: Vec<&(usize, Row)> = batch.rows.iter().filter(|(i, _)| *i < upto).collect();
    let started = tokio::time::Instant::now();
    let mut from = 0;
    let mut retries = 0u32;
    while from < rows.len() {
        match attempt(cfg, reporter, msgs, db, &rows[from..]).await {
            Ok(None) => break,
            Ok(Some((i, f))) => {
                return Done {
                    upto: i,
                    failure: Some(f),
                }
            }
            Err((written, e)) => {
                from += written;
                let Some(wait) = retry_wait(cfg, errors, retries, started.elapsed()) else {
                    let advice = if errors.retry_timeout == Some(Duration::ZERO) {
                        format!("max.retries={}", cfg.max_retries)
                    } else {
                        format!("max.retries={} and errors.retry.timeout", cfg.max_retries)
                    };
                    return Done {
                        upto: rows[from].0,
                        failure: Some(format!(
                            "{e} (still failing after {} attempts over {:?}, {advice}). Nothing from the record at {}-{} offset {} on is committed or dead-lettered: fix the cause; the task restarts automatically (task.restart.*) or with POST /connectors/{}/restart?includeTasks=true, and writes them then",
                            retries + 1,
                            started.elapsed(),
                            msgs[rows[from].0].topic(),
                            msgs[rows[from].0].partition(),
                            msgs[rows[from].0].offset(),
                            ctx.connector
                        )),
                    };
                };
                retries += 1;
                tracing::warn!(connector = %ctx.connector, "writing to PostgreSQL failed (attempt {retries}, retrying in {wait:?}): {e}");
                tokio::time::sleep(wait).await;
            }
        }
    }
    Done { upto, failure }
}

/// The wait before retry number `retries + 1` of a write that failed for a reason other than its data, or None
/// when no retry is left: `max.retries` of them `retry.backoff.ms` apart, or more while `errors.retry.timeout`
/// (when set; -1 for ever) has not passed, then at most `errors.retry.delay.max.ms` apart.
fn retry_wait(
    cfg: &PgConfig,
    errors: &ErrorConfig,
    retries: u32,
    elapsed: Duration,
) -> Option<Duration> {
    let timed = errors.retry_timeout != Some(Duration::ZERO);
    let wait = if timed {
        cfg.retry_backoff.min(errors.retry_delay_max)
    } else {
        cfg.retry_backoff
    };
    if retries < cfg.max_retries {
        return Some(wait);
    }
    match errors.retry_timeout {
        None => Some(wait),
        Some(t) if timed && elapsed < t => Some(wait.min(t - elapsed)),
        _ => None,
    }
}

/// One attempt at writing `rows`: all in one transaction, or (when the database refused the data) row by row.
/// Ok(None): all written or reported; Ok(Some((record index, failure))): an errant row the task fails at;
/// Err((rows written, why)): a failure that is not the data's, the rows from that one on are not written.
async fn attempt(
    cfg: &PgConfig,
    reporter: &mut Reporter,
    msgs: &[OwnedMessage],
    db: &mut Option<Db>,
    rows: &[&(usize, Row)],
) -> Result<Option<(usize, String)>, (usize, String)> {
    let limit = cfg.connect.timeout;
    let timed_out = |what: &str| {
        format!("{what} timed out after {limit:?} (write.timeout.ms); the connection is dropped, so PostgreSQL rolls back what it did not commit")
    };
    if db.is_none() {
        let client = connect(&cfg.pg, &cfg.connect)
            .await
            .map_err(|e| (0, e.message))?;
        *db = Some(Db {
            client,
            tables: HashMap::new(),
        });
    }
    let d = db.as_mut().expect("connected above");
    let all: Vec<&Row> = rows.iter().map(|(_, r)| r).collect();
    let whole = tokio::time::timeout(limit, d.write(cfg, &all)).await;
    // After any failure the tables are read again (one may have been dropped or altered meanwhile).
    match whole {
        Ok(Ok(())) => return Ok(None),
        Ok(Err(e)) if e.data => {
            tracing::debug!("batch refused ({}); writing it row by row", e.message);
            d.tables.clear();
        }
        Ok(Err(e)) => {
            if d.client.is_closed() {
                *db = None;
            } else {
                d.tables.clear();
            }
            return Err((0, e.message));
        }
        Err(_) => {
            *db = None;
            return Err((0, timed_out(&format!("writing {} row(s)", all.len()))));
        }
    }
    // Row by row: each row the database refuses for its data is errant.
    for (k, (i, r)) in rows.iter().map(|p| (&p.0, &p.1)).enumerate() {
        let one = async {
            d.ensure_table(cfg, r).await?;
            d.write_run(cfg, &[r]).await
        };
        match tokio::time::timeout(limit, one).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.data => {
                d.tables.remove(&r.table);
                if let Err(f) = reporter.report(&msgs[*i], Stage::TaskPut, &e.message).await {
                    return Ok(Some((*i, f)));
                }
            }
            Ok(Err(e)) => {
                if d.client.is_closed() {
                    *db = None;
                } else {
                    d.tables.clear();
                }
                return Err((k, e.message));
            }
            Err(_) => {
                *db = None;
                return Err((k, timed_out("writing a row")));
            }
        }
    }
    Ok(None)
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
    fn jdbc_and_libpq_urls_parse() {
        let c = parse_url(&cfg(&[(
            "connection.url",
            "jdbc:postgresql://db.local:5433/shop?user=app&password=pw&loggerLevel=OFF",
        )]))
        .unwrap();
        assert_eq!(c.get_ports(), [5433]);
        assert_eq!(c.get_dbname(), Some("shop"));
        assert_eq!(c.get_user(), Some("app"));
        let c = parse_url(&cfg(&[
            ("connection.url", "postgresql://127.0.0.1/shop"),
            ("connection.user", "u"),
            ("connection.password", "p"),
        ]))
        .unwrap();
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_password(), Some(&b"p"[..]));
        for (url, why) in [
            ("jdbc:mysql://h/db", "expected jdbc:postgresql"),
            ("postgresql://h:5432", "database"),
            ("jdbc:postgresql://h/db?sslmode=require", "TLS"),
        ] {
            let e =
                parse_url(&cfg(&[("connection.url", url), ("connection.user", "u")])).unwrap_err();
            assert!(
                e.contains("configuration connection.url") && e.contains(why),
                "{url}: {e}"
            );
        }
        assert!(parse_url(&cfg(&[("connection.url", "postgresql://h/db")]))
            .unwrap_err()
            .contains("connection.user"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let c = cfg(&[
            ("insert.mode", "upsert"),
            ("delete.enabled", "true"),
            ("pk.mode", "record_value"),
            ("batch.size", "0"),
        ]);
        assert!(key_errors("insert.mode", &c).is_empty());
        assert!(key_errors("delete.enabled", &c)[0].contains("configuration delete.enabled"));
        assert!(key_errors("batch.size", &c)[0].contains("configuration batch.size"));
        let c = cfg(&[("insert.mode", "upsert")]);
        assert!(key_errors("insert.mode", &c)[0].contains("pk.mode=record_key"));
        assert!(key_errors("pk.mode", &cfg(&[("pk.mode", "kafka")]))[0].contains("not supported"));
    }

    fn msg(key: Option<&str>, value: Option<&str>) -> OwnedMessage {
        OwnedMessage::new(
            value.map(|v| v.as_bytes().to_vec()),
            key.map(|k| k.as_bytes().to_vec()),
            "orders".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            7,
            None,
        )
    }

    /// A row's columns: name, type, value.
    fn columns(r: &Row) -> Vec<(&str, ColType, Option<&str>)> {
        r.cols
            .iter()
            .map(|c| (c.name.as_str(), c.ty, c.value.as_deref()))
            .collect()
    }

    #[test]
    fn records_become_rows_with_confluents_types() {
        let c = PgConfig::from_config(&cfg(&[
            ("connection.url", "postgresql://h/db"),
            ("connection.user", "u"),
            ("pk.mode", "record_key"),
            ("pk.fields", "id"),
            ("delete.enabled", "true"),
            ("table.name.format", "kafka_${topic}"),
        ]))
        .unwrap();
        let v = r#"{"schema":{"type":"struct","fields":[{"field":"n","type":"int32"},{"field":"name","type":"string","optional":true},{"field":"at","type":"int64","name":"org.apache.kafka.connect.data.Timestamp"},{"field":"d","type":"int32","name":"org.apache.kafka.connect.data.Date"},{"field":"price","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}},{"field":"raw","type":"bytes"}]},"payload":{"n":5,"name":null,"at":1700000000123,"d":19000,"price":"/zg=","raw":"AAH/"}}"#;
        let json = Converter::Json {
            schemas_enable: true,
        };
        let r = to_row(&c, &Converter::String, &json, &msg(Some("k1"), Some(v)))
            .unwrap()
            .unwrap();
        assert_eq!(r.table, "kafka_orders");
        assert_eq!(r.pk, 1);
        let got = columns(&r);
        assert_eq!(
            got,
            [
                ("id", ColType::Text, Some("k1")),
                ("n", ColType::Int32, Some("5")),
                ("name", ColType::Text, None),
                ("at", ColType::Timestamp, Some("2023-11-14 22:13:20.123")),
                ("d", ColType::Date, Some("2022-01-08")),
                ("price", ColType::Decimal, Some("-2.00")),
                ("raw", ColType::Bytes, Some("\\x0001ff")),
            ]
        );
        // A tombstone deletes the key's row; a value that does not fit its schema is errant.
        let t = to_row(&c, &Converter::String, &json, &msg(Some("k1"), None))
            .unwrap()
            .unwrap();
        assert!(t.delete && t.cols.len() == 1);
        let bad = r#"{"schema":{"type":"struct","fields":[{"field":"n","type":"int32"}]},"payload":{"n":"many"}}"#;
        let (stage, why) =
            to_row(&c, &Converter::String, &json, &msg(Some("k1"), Some(bad))).unwrap_err();
        assert_eq!(stage, Stage::ValueConverter);
        assert!(why.contains("field n") && why.contains("int32"), "{why}");
        let (stage, _) = to_row(
            &c,
            &Converter::String,
            &json,
            &msg(Some("k1"), Some("{not json")),
        )
        .unwrap_err();
        assert_eq!(stage, Stage::ValueConverter);
        // Schemaless objects map to columns by their JSON types.
        let r = to_row(
            &c,
            &Converter::String,
            &Converter::Json {
                schemas_enable: false,
            },
            &msg(
                Some("k2"),
                Some(r#"{"a":1,"b":1.5,"c":"x","d":[1],"e":true}"#),
            ),
        )
        .unwrap()
        .unwrap();
        let tys: Vec<ColType> = r.cols.iter().map(|c| c.ty).collect();
        assert_eq!(
            tys,
            [
                ColType::Text,
                ColType::Int64,
                ColType::Float64,
                ColType::Text,
                ColType::Jsonb,
                ColType::Bool
            ]
        );
    }

    #[test]
    fn the_envelope_fast_path_splits_exactly_and_falls_back_on_anything_else() {
        let (s, p) = split_envelope(br#" {"schema":{"type":"struct","fields":[{"field":"a}","type":"string"}]}, "payload":{"a}":"}"}} "#).unwrap();
        assert_eq!(
            s,
            br#"{"type":"struct","fields":[{"field":"a}","type":"string"}]}"#
        );
        assert_eq!(p, br#"{"a}":"}"}"#);
        assert!(split_envelope(br#"{"payload":1,"schema":null}"#).is_none());
        let json = Converter::Json {
            schemas_enable: true,
        };
        let schema = r#"{"type":"struct","fields":[{"field":"a","type":"int32"}]}"#;
        // An extra field after the payload: refused as Connect refuses it, not read past.
        let extra = format!(r#"{{"schema":{schema},"payload":{{"a":1}},"x":2}}"#);
        let e = convert(&json, Some(extra.as_bytes()), "value")
            .err()
            .unwrap();
        assert!(e.contains("additional fields"), "{e}");
        // The cached schema gives the same row as a first parse.
        let good = format!(r#"{{"schema":{schema},"payload":{{"a":7}}}}"#);
        for _ in 0..2 {
            let Converted::Fields(f) = convert(&json, Some(good.as_bytes()), "value").unwrap()
            else {
                panic!()
            };
            assert_eq!(
                (f[0].ty, f[0].value.as_deref()),
                (ColType::Int32, Some("7"))
            );
        }
    }

    /// Only errors of a row's data make it errant; a connection loss, a permission, a missing table, a
    /// read-only database or a shortage are the database's, never the record's.
    #[test]
    fn only_data_sqlstates_blame_the_record() {
        for code in [
            "22P02", "22001", "23505", "23502", "23514", "42804", "42703", "54000",
        ] {
            assert!(is_data_error(code), "{code}");
        }
        for code in [
            "42501", "42P01", "08006", "57P01", "25006", "53100", "40001", "42P10", "28P01",
        ] {
            assert!(!is_data_error(code), "{code}");
        }
    }

    #[test]
    fn retries_follow_max_retries_then_errors_retry_timeout() {
        let c = PgConfig::from_config(&cfg(&[
            ("connection.url", "postgresql://h/db"),
            ("connection.user", "u"),
            ("max.retries", "2"),
            ("retry.backoff.ms", "300"),
        ]))
        .unwrap();
        let none = ErrorConfig::from_config(&cfg(&[])).unwrap();
        let waits: Vec<_> = (0..3)
            .map(|r| retry_wait(&c, &none, r, Duration::ZERO))
            .collect();
        assert_eq!(
            waits,
            [
                Some(Duration::from_millis(300)),
                Some(Duration::from_millis(300)),
                None
            ]
        );
        let timed = ErrorConfig::from_config(&cfg(&[
            ("errors.retry.timeout", "1000"),
            ("errors.retry.delay.max.ms", "100"),
        ]))
        .unwrap();
        assert_eq!(
            retry_wait(&c, &timed, 5, Duration::from_millis(950)),
            Some(Duration::from_millis(50))
        );
        assert_eq!(retry_wait(&c, &timed, 5, Duration::from_millis(1000)), None);
        let forever = ErrorConfig::from_config(&cfg(&[("errors.retry.timeout", "-1")])).unwrap();
        assert!(retry_wait(&c, &forever, 1000, Duration::from_secs(3600)).is_some());
        for (k, v) in [
            ("max.retries", "101"),
            ("retry.backoff.ms", "-1"),
            ("connection.attempts", "0"),
            ("write.timeout.ms", "0"),
        ] {
            assert!(
                key_errors(k, &cfg(&[(k, v)]))[0].contains(&format!("configuration {k}")),
                "{k}"
            );
        }
    }

    /// Records after the transforms become rows as the bytes do: RegexRouter's topic names the table, fields
    /// InsertField adds are columns, a struct key gives the primary key.
    #[test]
    fn transformed_records_become_rows() {
        let c = PgConfig::from_config(&cfg(&[
            ("connection.url", "postgresql://h/db"),
            ("connection.user", "u"),
            ("pk.mode", "record_key"),
        ]))
        .unwrap();
        let chain = Chain::from_config(&cfg(&[
            ("transforms", "route,add"),
            ("transforms.route.type", "RegexRouter"),
            ("transforms.route.regex", "raw-(.*)"),
            ("transforms.route.replacement", "$1"),
            ("transforms.add.type", "InsertField$Value"),
            ("transforms.add.static.field", "src"),
            ("transforms.add.static.value", "kafka"),
        ]))
        .unwrap();
        let record = Record {
            topic: "raw-orders".into(),
            key: SchemaAndValue {
                schema: Some(
                    serde_json::json!({"type": "struct", "fields": [{"field": "id", "type": "int64"}]}),
                ),
                value: serde_json::json!({"id": 7}),
            },
            value: SchemaAndValue {
                schema: None,
                value: serde_json::json!({"n": 1}),
            },
            ..Record::default()
        };
        let r = record_row(&c, &chain.apply(record).unwrap().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(r.table, "orders");
        let got = columns(&r);
        assert_eq!(
            got,
            [
                ("id", ColType::Int64, Some("7")),
                ("n", ColType::Int64, Some("1")),
                ("src", ColType::Text, Some("kafka")),
            ]
        );
        assert_eq!(r.pk, 1);
    }

    #[test]
    fn decimals_and_dates_render_exactly() {
        assert_eq!(decimal_text(&[0x30, 0x39], 2).unwrap(), "123.45");
        assert_eq!(decimal_text(&[0x05], 3).unwrap(), "0.005");
        assert_eq!(decimal_text(&[0xff], 0).unwrap(), "-1");
        // A hostile scale from the record's schema is an error, not a panic or a huge string.
        for scale in [i64::MIN, -1_000_000_000_000, 1_000_000_000_000, i64::MAX] {
            assert!(decimal_text(&[0x05], scale).is_err(), "{scale}");
        }
        assert_eq!(decimal_text(&[0x05], -3).unwrap(), "5000");
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(timestamp_text(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
