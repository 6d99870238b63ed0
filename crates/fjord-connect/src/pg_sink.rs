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
//! **Errors:** a connection failure (or another retriable SQLSTATE) is retried per `errors.retry.timeout`; a
//! batch the database refuses for its data is written again row by row, and each refused row is errant
//! (`error_handling::Reporter`: the task fails at it, or with `errors.tolerance=all` it goes to the dead-letter
//! topic and the others are written).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::config::ConfigMap;
use crate::converter::Converter;
use crate::error_handling::{ErrorConfig, Reporter, Stage};
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

pub const KEYS: [KeyDef; 11] = [
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
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(format!("{s:?} is not base64")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
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
fn convert(converter: Converter, bytes: Option<&[u8]>, what: &str) -> Result<Converted, String> {
    let Some(bytes) = bytes else {
        return Ok(Converted::Null);
    };
    let text = || String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not UTF-8"));
    match converter {
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
            let (schema, payload) = (&*schema, &payload);
            {
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
        }
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
    key_conv: Converter,
    value_conv: Converter,
    m: &OwnedMessage,
) -> Result<Option<Row>, (Stage, String)> {
    let table = cfg.table_format.replace("${topic}", m.topic());
    let key = if cfg.pk_mode == PkMode::RecordKey {
        convert(key_conv, m.key(), "key").map_err(|e| (Stage::KeyConverter, e))?
    } else {
        Converted::Null
    };
    let value =
        convert(value_conv, m.payload(), "value").map_err(|e| (Stage::ValueConverter, e))?;
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

fn quote(id: &str) -> String {
    format!("\"{}\"", id.replace('"', "\"\""))
}

#[derive(Debug, Clone, Default)]
struct Table {
    /// Column name to its type, as `format_type` writes it (used for the casts).
    columns: HashMap<String, String>,
}

/// A database failure: retriable (the connection) or not (the data, the schema).
#[derive(Debug)]
pub struct DbError {
    pub retriable: bool,
    pub message: String,
}

fn db_error(e: tokio_postgres::Error, doing: &str) -> DbError {
    let retriable = match e.code() {
        None => true,
        Some(c) => {
            let s = c.code();
            s.starts_with("08")
                || s.starts_with("53")
                || s.starts_with("57P")
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        }
    } || e.is_closed();
    let message = match e.as_db_error() {
        Some(d) => format!(
            "{doing}: {} (SQLSTATE {}){}",
            d.message(),
            d.code().code(),
            d.detail().map(|x| format!(": {x}")).unwrap_or_default()
        ),
        None => format!("{doing}: {e}"),
    };
    DbError { retriable, message }
}

struct Db {
    client: Client,
    tables: HashMap<String, Table>,
}

pub(crate) async fn connect(pg: &tokio_postgres::Config) -> Result<Client, DbError> {
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
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await;
    let stream = match conn {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(DbError { retriable: true, message: format!("cannot connect to PostgreSQL at {host}:{port}: {e}; is the server running and listening there (connection.url)?") }),
        Err(_) => return Err(DbError { retriable: true, message: format!("connecting to PostgreSQL at {host}:{port} timed out after 10 s") }),
    };
    let _ = stream.set_nodelay(true);
    let login = tokio::time::timeout(Duration::from_secs(30), pg.connect_raw(stream, NoTls))
        .await
        .map_err(|_| DbError {
            retriable: true,
            message: format!("logging in to PostgreSQL at {host}:{port} timed out after 30 s"),
        })?;
    let (client, connection) = login.map_err(|e| {
        let mut d = db_error(e, &format!("logging in to PostgreSQL at {host}:{port}"));
        // A wrong password, user or database: retrying cannot help (a server still starting up, 57P03, can).
        if d.message.contains("SQLSTATE 28") || d.message.contains("SQLSTATE 3D000") {
            d.retriable = false;
        }
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
        let permanent = |message: String| DbError {
            retriable: false,
            message,
        };
        let mut table = self.load_table(&row.table).await?;
        if table.is_none() {
            if !cfg.auto_create {
                return Err(permanent(format!("table {} does not exist: create it, or set auto.create=true to have the connector create it from the record schema", row.table)));
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
            permanent(format!("table {} vanished after it was created", row.table))
        })?;
        let missing: Vec<&Col> = row
            .cols
            .iter()
            .filter(|c| !t.columns.contains_key(&c.name))
            .collect();
        if !missing.is_empty() {
            if !cfg.auto_evolve {
                return Err(permanent(format!("table {} has no column(s) {} that the record has: add them, or set auto.evolve=true to have the connector add them", row.table, missing.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "))));
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
    let mut reporter = Reporter::new(
        errors.clone(),
        &ctx.connector,
        0,
        &ctx.bootstrap_servers,
        &[],
    );
    let group = crate::file_sink::group_of(&ctx.connector);
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &ctx.bootstrap_servers)
        .set("group.id", &group)
        .set(
            "client.id",
            format!("connector-consumer-{}-0", ctx.connector),
        )
        .set("auto.offset.reset", "earliest");
    for (k, v) in &ctx.client_overrides {
        client.set(k, v);
    }
    let consumer: StreamConsumer =
        client
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| {
                format!(
                    "cannot create the consumer for {}: {e}",
                    ctx.bootstrap_servers
                )
            })?;
    let consumer = Arc::new(consumer);
    let topics = crate::file_sink::subscription_of(&ctx.config);
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
    let stopping = stop.clone();
    let is_stopping = move || *stopping.borrow();
    let mut db = None::<Db>;
    tracing::info!(connector = %ctx.connector, ?topics, group = %group, "PostgreSQL sink starting");

    // Pipelined: while one batch is written (the task waits on PostgreSQL), the next is consumed and converted.
    // A batch's offsets are committed as soon as it is written, before the next batch is.
    let mut pending: Option<Prepared> = None;
    let result = loop {
        let stopped = *stop.borrow() || stop.has_changed().is_err();
        let Some(batch) = pending.take() else {
            if stopped {
                break Ok(());
            }
            pending = next_batch(&ctx, &cfg, &consumer, &mut stop).await;
            continue;
        };
        let write = async {
            let done = write_batch(
                &ctx,
                &cfg,
                &errors,
                &mut reporter,
                &mut db,
                &batch,
                &is_stopping,
            )
            .await?;
            let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for m in &batch.msgs[..done.upto] {
                next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            }
            if !next.is_empty() {
                if let Err(e) = crate::file_sink::commit(&consumer, &next).await {
                    tracing::warn!(connector = %ctx.connector, "committing offsets failed ({e}); the rows since the last commit will be written again");
                }
            }
            Ok::<_, String>(done.failure)
        };
        if stopped {
            match write.await {
                Ok(None) => continue,
                Ok(Some(failure)) | Err(failure) => break Err(failure),
            }
        }
        let next = next_batch(&ctx, &cfg, &consumer, &mut stop);
        tokio::pin!(write, next);
        let mut collected = None;
        let written = loop {
            tokio::select! {
                w = &mut write => break w,
                n = &mut next, if collected.is_none() => collected = Some(n),
            }
        };
        match written {
            Ok(None) => {
                pending = match collected {
                    Some(n) => n,
                    None => next.await,
                }
            }
            // The next batch was consumed but not written: not committed, so it comes again after a restart.
            Ok(Some(failure)) | Err(failure) => break Err(failure),
        }
    };
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
}

/// Waits for the next records (None when told to stop first): up to `batch.size`, or what comes within 50 ms of
/// the first; converted.
async fn next_batch(
    ctx: &TaskContext,
    cfg: &PgConfig,
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
    for (i, m) in msgs.iter().enumerate() {
        match to_row(cfg, ctx.key_converter, ctx.value_converter, m) {
            Ok(Some(r)) => rows.push((i, r)),
            Ok(None) => {}
            Err((stage, why)) => errant.push((i, stage, why)),
        }
    }
    Some(Prepared { msgs, rows, errant })
}

async fn write_batch(
    ctx: &TaskContext,
    cfg: &PgConfig,
    errors: &ErrorConfig,
    reporter: &mut Reporter,
    db: &mut Option<Db>,
    batch: &Prepared,
    stopping: &(impl Fn() -> bool + Sync),
) -> Result<Done, String> {
    let msgs = &batch.msgs;
    // Records that did not convert are reported first (the task fails at the first one under tolerance none,
    // after the rows before it are written).
    let mut upto = msgs.len();
    let mut failure = None;
    for (i, stage, why) in &batch.errant {
        if let Err(f) = reporter.report(&msgs[*i], *stage, why).await {
            upto = *i;
            failure = Some(f);
            break;
        }
    }
    let rows: Vec<&(usize, Row)> = batch.rows.iter().filter(|(i, _)| *i < upto).collect();
    if rows.is_empty() {
        return Ok(Done { upto, failure });
    }
    // The whole batch in one transaction, retried while the failure is retriable.
    let all: Vec<&Row> = rows.iter().map(|(_, r)| r).collect();
    let cell = tokio::sync::Mutex::new(db.take());
    let outcome = errors
        .retry("writing to PostgreSQL", stopping, || {
            let (cell, all) = (&cell, &all);
            async move {
                let mut guard = cell.lock().await;
                if guard.is_none() {
                    let client = connect(&cfg.pg)
                        .await
                        .map_err(|e| (e.retriable, e.message))?;
                    *guard = Some(Db {
                        client,
                        tables: HashMap::new(),
                    });
                }
                let d = guard.as_mut().expect("connected above");
                match d.write(cfg, all).await {
                    Ok(()) => Ok(true),
                    Err(e) if e.retriable => {
                        if d.client.is_closed() {
                            *guard = None;
                        }
                        Err((true, e.message))
                    }
                    // The data was refused: find the rows at fault below.
                    Err(e) => {
                        tracing::debug!("batch refused ({}); writing it row by row", e.message);
                        Ok(false)
                    }
                }
            }
        })
        .await;
    *db = cell.into_inner();
    let written = outcome.map_err(|e| format!("{e}. The task stops; its records are written when it restarts (automatically, see task.restart.*, or with POST /connectors/{}/restart?includeTasks=true)", ctx.connector))?;
    if written {
        return Ok(Done { upto, failure });
    }
    // Row by row: each refused row is errant.
    let d = db.as_mut().expect("connected");
    for (i, r) in rows.iter().map(|p| (&p.0, &p.1)) {
        let res = match d.ensure_table(cfg, r).await {
            Ok(()) => d.write_run(cfg, &[r]).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {}
            Err(e) if e.retriable => {
                return Ok(Done {
                    upto: *i,
                    failure: Some(format!(
                        "{}; the task stops and resumes from this record when restarted",
                        e.message
                    )),
                });
            }
            Err(e) => {
                d.tables.remove(&r.table);
                if let Err(f) = reporter.report(&msgs[*i], Stage::TaskPut, &e.message).await {
                    return Ok(Done {
                        upto: *i,
                        failure: Some(f),
                    });
                }
            }
        }
    }
    Ok(Done { upto, failure })
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
        let r = to_row(&c, Converter::String, json, &msg(Some("k1"), Some(v)))
            .unwrap()
            .unwrap();
        assert_eq!(r.table, "kafka_orders");
        assert_eq!(r.pk, 1);
        let got: Vec<(&str, ColType, Option<&str>)> = r
            .cols
            .iter()
            .map(|c| (c.name.as_str(), c.ty, c.value.as_deref()))
            .collect();
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
        let t = to_row(&c, Converter::String, json, &msg(Some("k1"), None))
            .unwrap()
            .unwrap();
        assert!(t.delete && t.cols.len() == 1);
        let bad = r#"{"schema":{"type":"struct","fields":[{"field":"n","type":"int32"}]},"payload":{"n":"many"}}"#;
        let (stage, why) =
            to_row(&c, Converter::String, json, &msg(Some("k1"), Some(bad))).unwrap_err();
        assert_eq!(stage, Stage::ValueConverter);
        assert!(why.contains("field n") && why.contains("int32"), "{why}");
        let (stage, _) = to_row(
            &c,
            Converter::String,
            json,
            &msg(Some("k1"), Some("{not json")),
        )
        .unwrap_err();
        assert_eq!(stage, Stage::ValueConverter);
        // Schemaless objects map to columns by their JSON types.
        let r = to_row(
            &c,
            Converter::String,
            Converter::Json {
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
        let e = convert(json, Some(extra.as_bytes()), "value")
            .err()
            .unwrap();
        assert!(e.contains("additional fields"), "{e}");
        // The cached schema gives the same row as a first parse.
        let good = format!(r#"{{"schema":{schema},"payload":{{"a":7}}}}"#);
        for _ in 0..2 {
            let Converted::Fields(f) = convert(json, Some(good.as_bytes()), "value").unwrap()
            else {
                panic!()
            };
            assert_eq!(
                (f[0].ty, f[0].value.as_deref()),
                (ColType::Int32, Some("7"))
            );
        }
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
