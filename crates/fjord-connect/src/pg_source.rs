//! The PostgreSQL source (`PostgresSource`, also found under Confluent's `JdbcSourceConnector` class name): rows
//! of tables (`table.whitelist`) or of a query (`query`) become records of `topic.prefix` + table (or
//! `topic.prefix` alone for a query), in JDBC-source style modes: `bulk` (everything at every poll),
//! `incrementing` (rows whose `incrementing.column.name` is above the stored offset, in its order) and
//! `timestamp` (rows whose `timestamp.column.name` is after the stored one and before the query's `now()`).
//!
//! Each row becomes a struct of its columns, mapped as Confluent's JDBC source maps them: int2/int4/int8/float4/
//! float8/bool as Connect's int16/int32/int64/float/double/boolean; `date`, `time`/`timetz` and
//! `timestamp`/`timestamptz` as Connect's Date (days), Time (milliseconds of the day) and Timestamp (milliseconds;
//! a `timestamp` without time zone read as UTC, Confluent's default `db.timezone`); `numeric` per `numeric.mapping`
//! (Connect's Decimal at the column's scale, scale 127 for a `numeric` without one, or with `best_fit`/
//! `precision_only` an int8..int64 or a double by the column's precision and scale); every other type as its JSON
//! text, a string. A column is optional unless it is a table's NOT NULL column. The converted columns are read
//! as text expressions next to `row_to_json` (exact: a numeric never goes through a double), and a value Connect's
//! type cannot hold (NaN, an infinite date) fails the task, naming the column. **At-least-once:** the records are acknowledged (idempotent `acks=all`
//! producer) before the offset past them is put in the offset store, which is flushed every
//! `offset.flush.interval.ms` and at stop.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::config::ConfigMap;
use crate::pg_sink::{quote, quote_table, KeyDef};
use crate::protobuf_data::{CONNECT_DATE, CONNECT_DECIMAL, CONNECT_TIME, CONNECT_TIMESTAMP};
use crate::transforms::{Chain, Record, SchemaAndValue};
use crate::worker::TaskContext;

pub const CLASS: &str = "io.fjord.connect.postgres.PostgresSourceConnector";
pub const TASK_CLASS: &str = "io.fjord.connect.postgres.PostgresSourceTask";

pub const KEYS: [KeyDef; 15] = [
    ("connection.url", "STRING", None, "HIGH", "JDBC connection URL: jdbc:postgresql://host:port/database (or postgresql://user:password@host:port/database).", true),
    ("connection.user", "STRING", None, "HIGH", "JDBC connection user.", false),
    ("connection.password", "PASSWORD", None, "HIGH", "JDBC connection password.", false),
    ("mode", "STRING", None, "HIGH", "The mode for updating a table each time it is polled: bulk (the whole table each poll), incrementing (a strictly incrementing column detects new rows), timestamp (a timestamp column detects new and changed rows) or timestamp+incrementing (both: the timestamp detects new and changed rows, the incrementing column orders rows of the same timestamp, so each row gets a unique position).", true),
    ("table.whitelist", "LIST", Some(""), "MEDIUM", "The tables to copy (schema.table for a schema); one of table.whitelist or query.", false),
    ("query", "STRING", Some(""), "MEDIUM", "A query to copy instead of tables; the mode's column must be one of its columns.", false),
    ("incrementing.column.name", "STRING", Some(""), "MEDIUM", "The name of the strictly incrementing integer column used to detect new rows (mode=incrementing).", false),
    ("timestamp.column.name", "STRING", Some(""), "MEDIUM", "The name of the timestamp column used to detect new or modified rows (mode=timestamp).", false),
    ("numeric.mapping", "STRING", Some("none"), "LOW", "Map NUMERIC values by precision and optionally scale to integral or decimal types: none (every NUMERIC a Connect Decimal), precision_only (by precision when the scale is 0), best_fit (by precision and scale: an int8..int64 for scale 0 up to precision 18, a double for a positive scale up to precision 18) or best_fit_eager_double (a double for any positive scale). A NUMERIC without a declared precision stays a Decimal of scale 127.", false),
    ("topic.prefix", "STRING", None, "HIGH", "Prefix to prepend to table names to generate the topic names; with query, the topic itself.", true),
    ("poll.interval.ms", "INT", Some("5000"), "HIGH", "Frequency in ms to poll for new data in each table.", false),
    ("batch.max.rows", "INT", Some("100"), "LOW", "Maximum number of rows to include in a single batch when polling for new data (incrementing and timestamp+incrementing modes; timestamp mode reads whole groups of rows of one timestamp, so a batch can be larger).", false),
    ("connection.attempts", "INT", Some("3"), "LOW", "Maximum number of attempts to open a connection to PostgreSQL (each bounded by query.timeout.ms).", false),
    ("connection.backoff.ms", "LONG", Some("10000"), "LOW", "Backoff time in milliseconds between connection attempts.", false),
    ("query.timeout.ms", "INT", Some("60000"), "LOW", "Fjord's bound on one connection attempt and on one poll's query: past it the task fails (and restarts per task.restart.*) instead of hanging on a server that does not answer.", false),
];

fn get<'a>(c: &'a ConfigMap, k: &str) -> Option<&'a str> {
    c.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The tables of each task, as Confluent's JDBC source splits `table.whitelist` (`JdbcSourceConnector.taskConfigs`
/// with Connect's `ConnectorUtils.groupPartitions`): min(tables, `tasks.max`) tasks, each a run of consecutive
/// tables, the first ones one table longer when they do not divide evenly. With `query` (or no table): one task
/// (None: it takes the connector's config as it is).
pub fn task_tables(c: &ConfigMap, max_tasks: u32) -> Vec<Option<Vec<String>>> {
    let all = tables(c);
    if get(c, "query").is_some() || all.is_empty() {
        return vec![None];
    }
    let groups = all.len().min(max_tasks.max(1) as usize);
    let (per, extra) = (all.len() / groups, all.len() % groups);
    let mut rest = all.into_iter();
    (0..groups)
        .map(|g| Some(rest.by_ref().take(per + usize::from(g < extra)).collect()))
        .collect()
}

/// The key of a task's config with its share of the tables (Confluent's `JdbcSourceTaskConfig.TABLES_CONFIG`).
pub const TASK_TABLES: &str = "tables";

fn tables(c: &ConfigMap) -> Vec<String> {
    c.get("table.whitelist")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The errors of one of this connector's keys (empty: fine), naming the key.
pub fn key_errors(key: &str, c: &ConfigMap) -> Vec<String> {
    let value = get(c, key).unwrap_or("");
    let invalid = |why: &str| {
        vec![format!(
            "Invalid value {value} for configuration {key}: {why}"
        )]
    };
    let mode = get(c, "mode").unwrap_or("").to_ascii_lowercase();
    match key {
        "connection.url" | "connection.user" => crate::pg_sink::key_errors(key, c),
        "mode" => match mode.as_str() {
            "" => {
                vec!["Missing required configuration \"mode\" which has no default value.".into()]
            }
            "bulk" | "incrementing" | "timestamp" | "timestamp+incrementing" => Vec::new(),
            _ => invalid(
                "String must be one of: bulk, incrementing, timestamp, timestamp+incrementing",
            ),
        },
        "incrementing.column.name" if mode.ends_with("incrementing") && value.is_empty() => {
            invalid(&format!(
                "mode={mode} needs the column: set incrementing.column.name"
            ))
        }
        "timestamp.column.name" if mode.starts_with("timestamp") && value.is_empty() => invalid(
            &format!("mode={mode} needs the column: set timestamp.column.name"),
        ),
        "connection.attempts" | "connection.backoff.ms" | "query.timeout.ms" => {
            crate::pg_sink::key_errors(key, c)
        }
        "table.whitelist" => {
            let query = get(c, "query").is_some();
            match (tables(c).is_empty(), query) {
                (true, false) => {
                    invalid("give the tables to copy in table.whitelist (or a query in query)")
                }
                (false, true) => {
                    invalid("table.whitelist and query are mutually exclusive; give only one")
                }
                _ => tables(c)
                    .iter()
                    .find(|t| t.contains('"'))
                    .map(|_| invalid("a table name cannot contain '\"'"))
                    .unwrap_or_default(),
            }
        }
        "topic.prefix" if !value.is_empty() => {
            // The topics are the prefix plus each table: check the names they make.
            let names: Vec<String> = if get(c, "query").is_some() {
                vec![value.to_string()]
            } else {
                tables(c).iter().map(|t| format!("{value}{t}")).collect()
            };
            names
                .iter()
                .find_map(|t| crate::plugins::topic_name_error(t))
                .map(|w| invalid(&w))
                .unwrap_or_default()
        }
        "numeric.mapping" if !value.is_empty() => match NumericMapping::parse(value) {
            Some(_) => Vec::new(),
            None => invalid(
                "String must be one of: none, precision_only, best_fit, best_fit_eager_double",
            ),
        },
        "poll.interval.ms" | "batch.max.rows" if !value.is_empty() => match value.parse::<u32>() {
            Ok(n) if n >= 1 => Vec::new(),
            _ => invalid("give a whole number, at least 1"),
        },
        _ => Vec::new(),
    }
}

/// What one source (a table or the query) reads from and where its rows go.
struct Source {
    /// The FROM item: a quoted table, or the query in parentheses.
    from: String,
    topic: String,
    partition: Value,
    /// The struct schema of the rows (Connect's JSON form) and how each column is read, from the columns'
    /// types, type modifiers and NOT NULL constraints.
    described: Option<(Value, Vec<Column>)>,
}

/// `numeric.mapping`: how a `numeric` column becomes a Connect type (Confluent's `NumericMapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumericMapping {
    None,
    PrecisionOnly,
    BestFit,
    BestFitEagerDouble,
}

impl NumericMapping {
    fn parse(v: &str) -> Option<NumericMapping> {
        match v.trim().to_ascii_lowercase().as_str() {
            "none" => Some(NumericMapping::None),
            "precision_only" => Some(NumericMapping::PrecisionOnly),
            "best_fit" => Some(NumericMapping::BestFit),
            "best_fit_eager_double" => Some(NumericMapping::BestFitEagerDouble),
            _ => None,
        }
    }
}

/// How a column's value is read: as `row_to_json` gives it, or as the text of an SQL expression converted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `row_to_json`'s value (a string field gets the JSON text of a value that is not a string).
    Json,
    /// Days since 1970-01-01: Connect's Date.
    Date,
    /// Milliseconds of the day (UTC for `timetz`): Connect's Time.
    Time,
    /// Milliseconds since 1970-01-01T00:00:00Z: Connect's Timestamp.
    Timestamp,
    /// A `numeric` as Connect's Decimal at this scale: the unscaled value's two's-complement bytes (base64).
    Decimal(i32),
    /// A `numeric` as a Connect integer of this many bits (`numeric.mapping`).
    Integer(u32),
    /// A `numeric` as a Connect double (`numeric.mapping`).
    Double,
}

/// One column of a source's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    read: Read,
    /// A `timetz` column: its time of day is read in UTC.
    time_tz: bool,
}

/// The largest precision Confluent's numeric mappings put in an integer or a double.
const MAX_INTEGER_TYPE_PRECISION: i32 = 18;
/// The scale of a `numeric` without a declared one (Confluent's `NUMERIC_TYPE_SCALE_HIGH`).
const UNSET_NUMERIC_SCALE: i32 = 127;
/// The most digits an unscaled Decimal value may have here (about 416 bytes): a bound on the conversion's work;
/// `numeric(1000, 0)`'s largest values fit.
const MAX_DECIMAL_DIGITS: usize = 1200;

/// The (precision, scale) of a `numeric` type modifier; None for a `numeric` without a declared precision.
fn numeric_modifier(typmod: i32) -> Option<(i32, i32)> {
    // PostgreSQL's numeric typmod: ((precision << 16) | scale) + VARHDRSZ, the scale 11 bits with its sign
    // (negative scales since PostgreSQL 15).
    if typmod < 4 {
        return None;
    }
    let m = typmod - 4;
    Some(((m >> 16) & 0xffff, ((m & 0x7ff) ^ 1024) - 1024))
}

/// The Connect type of a column of type `t` and type modifier `typmod`, and how it is read.
fn connect_type(t: &Type, typmod: i32, mapping: NumericMapping) -> (Value, Read) {
    let plain = |ty: &str| (json!({ "type": ty }), Read::Json);
    let logical =
        |ty: &str, name: &str, read: Read| (json!({"type": ty, "name": name, "version": 1}), read);
    match *t {
        Type::INT2 => plain("int16"),
        Type::INT4 => plain("int32"),
        Type::INT8 => plain("int64"),
        Type::FLOAT4 => plain("float"),
        Type::FLOAT8 => plain("double"),
        Type::BOOL => plain("boolean"),
        Type::DATE => logical("int32", CONNECT_DATE, Read::Date),
        Type::TIME | Type::TIMETZ => logical("int32", CONNECT_TIME, Read::Time),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => logical("int64", CONNECT_TIMESTAMP, Read::Timestamp),
        Type::NUMERIC => numeric_type(numeric_modifier(typmod), mapping),
        _ => plain("string"),
    }
}

/// Confluent's `numeric.mapping` for a `numeric` of declared (precision, scale) (None: undeclared).
fn numeric_type(declared: Option<(i32, i32)>, mapping: NumericMapping) -> (Value, Read) {
    let Some((precision, scale)) = declared else {
        // PostgreSQL's driver reports precision 0 and scale 0 here; Confluent's PostgreSQL dialect reads such a
        // column as a Decimal of scale 127 so that no digit is lost. (Its best_fit/precision_only would make
        // precision 0 an int8 and fail on the first fraction: Fjord keeps the Decimal there too.)
        let d = json!({"type": "bytes", "name": CONNECT_DECIMAL, "version": 1,
            "parameters": {"scale": UNSET_NUMERIC_SCALE.to_string()}});
        return (d, Read::Decimal(UNSET_NUMERIC_SCALE));
    };
    let integer = || {
        let (ty, bits) = match precision {
            p if p > 9 => ("int64", 64),
            p if p > 4 => ("int32", 32),
            p if p > 2 => ("int16", 16),
            _ => ("int8", 8),
        };
        (json!({ "type": ty }), Read::Integer(bits))
    };
    let double = || (json!({"type": "double"}), Read::Double);
    let integral = (-84..1).contains(&scale);
    match mapping {
        NumericMapping::PrecisionOnly if scale == 0 && precision <= MAX_INTEGER_TYPE_PRECISION => {
            return integer()
        }
        NumericMapping::BestFit if precision <= MAX_INTEGER_TYPE_PRECISION && integral => {
            return integer()
        }
        NumericMapping::BestFit if precision <= MAX_INTEGER_TYPE_PRECISION && scale > 0 => {
            return double()
        }
        NumericMapping::BestFitEagerDouble
            if integral && precision <= MAX_INTEGER_TYPE_PRECISION =>
        {
            return integer()
        }
        NumericMapping::BestFitEagerDouble if scale > 0 => return double(),
        _ => {}
    }
    (
        json!({"type": "bytes", "name": CONNECT_DECIMAL, "version": 1,
            "parameters": {"scale": scale.to_string(), "connect.decimal.precision": precision.to_string()}}),
        Read::Decimal(scale),
    )
}

async fn describe(
    client: &Client,
    from: &str,
    mapping: NumericMapping,
) -> Result<(Value, Vec<Column>), String> {
    let stmt = client
        .prepare(&format!("SELECT * FROM {from} t LIMIT 0"))
        .await
        .map_err(|e| format!("reading the columns of {from}: {e}"))?;
    // A column is optional unless it is a column of a table with NOT NULL (as the JDBC driver's isNullable: a
    // computed column's nullability is unknown, and unknown is optional).
    let mut not_null: std::collections::HashMap<u32, Vec<i16>> = std::collections::HashMap::new();
    for c in stmt.columns() {
        if let Some(oid) = c.table_oid().filter(|o| *o != 0) {
            if let std::collections::hash_map::Entry::Vacant(e) = not_null.entry(oid) {
                let rows = client
                    .query(
                        "SELECT attnum FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND attnotnull",
                        &[&oid],
                    )
                    .await
                    .map_err(|e| format!("reading the NOT NULL columns of {from}: {e}"))?;
                e.insert(rows.iter().map(|r| r.get::<_, i16>(0)).collect());
            }
        }
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for c in stmt.columns() {
        let (mut field, read) = connect_type(c.type_(), c.type_modifier(), mapping);
        let required = match (c.table_oid(), c.column_id()) {
            (Some(oid), Some(n)) => not_null.get(&oid).is_some_and(|cols| cols.contains(&n)),
            _ => false,
        };
        field["field"] = json!(c.name());
        field["optional"] = json!(!required);
        fields.push(field);
        columns.push(Column {
            name: c.name().to_string(),
            read,
            time_tz: *c.type_() == Type::TIMETZ,
        });
    }
    Ok((
        json!({"type": "struct", "fields": fields, "optional": false}),
        columns,
    ))
}

/// The SQL text expression a converted column is read with (None: it comes from `row_to_json`).
fn read_sql(c: &Column) -> Option<String> {
    let q = format!("fjord_row.{}", quote(&c.name));
    // Milliseconds, exactly: extract's seconds (a double before PostgreSQL 14) rounded to microseconds first.
    let millis = format!("floor(round(extract(epoch FROM {q})::numeric, 6) * 1000)::bigint");
    Some(match c.read {
        Read::Json => return None,
        Read::Date => format!(
            "CASE WHEN isfinite({q}) THEN ({q} - DATE '1970-01-01')::text ELSE {q}::text END"
        ),
        // A timetz's epoch is its UTC time of day, which the zone can push out of the day.
        Read::Time if c.time_tz => {
            format!("mod(mod({millis}, 86400000) + 86400000, 86400000)::text")
        }
        Read::Time => format!("{millis}::text"),
        Read::Timestamp => {
            format!("CASE WHEN isfinite({q}) THEN {millis}::text ELSE {q}::text END")
        }
        Read::Decimal(_) | Read::Integer(_) | Read::Double => format!("{q}::text"),
    })
}

/// A converted column's text (from [`read_sql`]) as its Connect value; an error names the column.
fn read_value(c: &Column, from: &str, text: Option<&str>) -> Result<Value, String> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    let cannot = |what: &str| {
        format!(
            "column {} of {from}: the value {text} has no Connect {what} value (Confluent's JDBC source fails on it too); filter it out with a query, or cast the column in one",
            c.name
        )
    };
    Ok(match c.read {
        Read::Json => unreachable!("read by row_to_json"),
        Read::Date => json!(text.parse::<i32>().map_err(|_| cannot("Date"))?),
        // PostgreSQL's `time` takes 24:00:00, which is no Connect Time (a time of day below 86,400,000 ms).
        Read::Time => json!(text
            .parse::<i32>()
            .ok()
            .filter(|ms| (0..86_400_000).contains(ms))
            .ok_or_else(|| cannot("Time"))?),
        Read::Timestamp => json!(text.parse::<i64>().map_err(|_| cannot("Timestamp"))?),
        Read::Decimal(scale) => Value::String(crate::converter::base64_encode(
            &decimal_bytes(text, scale).map_err(|why| format!("{}: {why}", cannot("Decimal")))?,
        )),
        Read::Integer(bits) => {
            let n = text.parse::<i64>().map_err(|_| cannot("integer"))?;
            let fits = bits == 64 || (-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&n);
            if !fits {
                return Err(cannot(&format!("int{bits}")));
            }
            json!(n)
        }
        Read::Double => {
            let f = text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| cannot("double"))?;
            json!(f)
        }
    })
}

/// A `numeric`'s text (plain notation, as PostgreSQL writes it) as Connect Decimal's unscaled value at `scale`:
/// big-endian two's-complement bytes, shortest form (Java's `BigInteger.toByteArray`). Digits past the scale are
/// rounded half up, as the JDBC driver's `getBigDecimal(column, scale)` does. Err for NaN and infinities.
fn decimal_bytes(text: &str, scale: i32) -> Result<Vec<u8>, String> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err("not a number".into());
    }
    // The value's digits with the point moved `scale` places right: kept, and the first dropped one.
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let point = int.len() as i64 + i64::from(scale);
    let kept = point.clamp(0, digits.len() as i64) as usize;
    let zeros = (point - digits.len() as i64).max(0) as usize;
    let first = digits[..kept].iter().position(|d| *d != 0).unwrap_or(kept);
    if kept - first + zeros > MAX_DECIMAL_DIGITS {
        return Err(format!(
            "more than {MAX_DECIMAL_DIGITS} digits at scale {scale}"
        ));
    }
    let round_up = point >= 0 && digits.get(kept).is_some_and(|d| *d >= 5);
    // Little-endian magnitude, built a digit at a time.
    let mut le: Vec<u8> = Vec::new();
    let mut push = |d: u32| {
        let mut carry = d;
        for b in le.iter_mut() {
            let v = u32::from(*b) * 10 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            le.push(carry as u8);
            carry >>= 8;
        }
    };
    for d in &digits[first..kept] {
        push(u32::from(*d));
    }
    for _ in 0..zeros {
        push(0);
    }
    if round_up {
        let mut carry = 1u16;
        for b in le.iter_mut() {
            let v = u16::from(*b) + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            le.push(1);
        }
    }
    le.push(0);
    if neg {
        let mut carry = 1u16;
        for b in le.iter_mut() {
            let v = u16::from(!*b) + carry;
            *b = v as u8;
            carry = v >> 8;
        }
    }
    while le.len() > 1 {
        let (top, next) = (le[le.len() - 1], le[le.len() - 2]);
        if (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0) {
            le.pop();
        } else {
            break;
        }
    }
    le.reverse();
    Ok(le)
}

/// A row's JSON object made to fit its schema: a string field whose JSON value is not a string gets its JSON text.
fn fit(schema: &Value, mut row: Map<String, Value>) -> Map<String, Value> {
    for f in schema["fields"].as_array().into_iter().flatten() {
        if f["type"] == "string" {
            if let Some(v) = f["field"].as_str().and_then(|name| row.get_mut(name)) {
                if !v.is_null() && !v.is_string() {
                    *v = Value::String(v.to_string());
                }
            }
        }
    }
    row
}

/// How many columns the query of a mode puts after the row and before the converted columns.
fn mode_columns(mode: &str) -> usize {
    match mode {
        "timestamp+incrementing" => 2,
        "incrementing" | "timestamp" => 1,
        _ => 0,
    }
}

/// The incremental query of a mode (the rows under the alias `fjord_row`, unlikely to be a column's name: a
/// column named like the alias would be read in its place), with what its rows add after the row itself (the timestamp as text, the
/// incrementing value; [`mode_columns`] of them), then `extra` (the converted columns' text expressions, each
/// after a comma): its parameters are the stored timestamp (text) and incrementing value, those it uses.
fn poll_sql(mode: &str, from: &str, ts: &str, inc: &str, max_rows: i64, extra: &str) -> String {
    let (ts, inc) = (quote(ts), quote(inc));
    match mode {
        "incrementing" => format!("SELECT row_to_json(fjord_row)::text, (fjord_row.{inc})::bigint{extra} FROM {from} fjord_row WHERE fjord_row.{inc} > $1::bigint ORDER BY fjord_row.{inc} LIMIT {max_rows}"),
        // Keyset paging on (timestamp, incrementing): a page ends anywhere, even inside a run of rows of one
        // timestamp, and the next one starts right after it (Confluent's timestamp+incrementing criteria).
        "timestamp+incrementing" => format!("SELECT row_to_json(fjord_row)::text, (fjord_row.{ts})::text, (fjord_row.{inc})::bigint{extra} FROM {from} fjord_row WHERE fjord_row.{ts} < now() AND (fjord_row.{ts} > $1::text::timestamptz OR (fjord_row.{ts} = $1::text::timestamptz AND fjord_row.{inc} > $2::bigint)) ORDER BY fjord_row.{ts}, fjord_row.{inc} LIMIT {max_rows}"),
        // A timestamp alone cannot tell apart rows of one timestamp, so a page never ends inside such a run: it
        // goes up to the timestamp of the batch.max.rows-th new row, all rows of that timestamp included (rows
        // of a timestamp arriving after it was passed are missed, as in Confluent's timestamp mode: use
        // timestamp+incrementing for them).
        "timestamp" => format!("SELECT row_to_json(fjord_row)::text, (fjord_row.{ts})::text{extra} FROM {from} fjord_row WHERE fjord_row.{ts} > $1::text::timestamptz AND fjord_row.{ts} < now() AND fjord_row.{ts} <= COALESCE((SELECT fjord_page.{ts} FROM {from} fjord_page WHERE fjord_page.{ts} > $1::text::timestamptz AND fjord_page.{ts} < now() ORDER BY fjord_page.{ts} OFFSET {} LIMIT 1), 'infinity') ORDER BY fjord_row.{ts}", max_rows - 1),
        _ => format!("SELECT row_to_json(fjord_row)::text{extra} FROM {from} fjord_row"),
    }
}

/// Runs the task until `stop` turns true (Ok) or it fails (Err with what happened and what to do).
pub async fn run(ctx: TaskContext, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let c = &ctx.config;
    let pg = crate::pg_sink::parse_url(c)?;
    let policy = crate::pg_sink::ConnectPolicy::from_config(c, "query.timeout.ms");
    let chain =
        Chain::from_config(c).map_err(|e| format!("invalid transforms: {}", e.join("; ")))?;
    let mode = get(c, "mode").unwrap_or("bulk").to_ascii_lowercase();
    let prefix = get(c, "topic.prefix").unwrap_or("").to_string();
    let poll = Duration::from_millis(
        get(c, "poll.interval.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000),
    );
    let max_rows: i64 = get(c, "batch.max.rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let ts_col = get(c, "timestamp.column.name").unwrap_or("").to_string();
    let inc_col = get(c, "incrementing.column.name").unwrap_or("").to_string();
    let mapping = get(c, "numeric.mapping")
        .and_then(NumericMapping::parse)
        .unwrap_or(NumericMapping::None);
    let restart = format!("the task restarts automatically (task.restart.*) or with POST /connectors/{}/restart?includeTasks=true", ctx.connector);
    // Stop-aware: a stop while connecting ends the task at once.
    let client = tokio::select! {
        c = crate::pg_sink::connect(&pg, &policy) => c.map_err(|e| format!("{}; {restart}", e.message))?,
        _ = stop.wait_for(|s| *s) => return Ok(()),
    };
    let mut sources: Vec<Source> = match get(c, "query") {
        Some(q) => vec![Source {
            from: format!("({q})"),
            topic: prefix.clone(),
            partition: json!({"query": "query"}),
            described: None,
        }],
        // A task config holds its share of the tables; a connector config alone (an older stored one), all.
        None => match c.get(TASK_TABLES) {
            Some(mine) => mine
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            None => tables(c),
        }
        .into_iter()
        .map(|t| Source {
            from: quote_table(&t),
            topic: format!("{prefix}{t}"),
            partition: json!({"protocol": "1", "table": t}),
            described: None,
        })
        .collect(),
    };
    let mut client_cfg = ClientConfig::new();
    client_cfg
        .set("bootstrap.servers", &ctx.bootstrap_servers)
        .set(
            "client.id",
            format!("connector-producer-{}-{}", ctx.connector, ctx.task),
        )
        .set("linger.ms", "5");
    for (k, v) in &ctx.client_overrides {
        client_cfg.set(k, v);
    }
    let producer: FutureProducer = client_cfg
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .map_err(|e| {
            format!(
                "cannot create the producer for {}: {e}",
                ctx.bootstrap_servers
            )
        })?;
    tracing::info!(connector = %ctx.connector, mode = %mode, sources = sources.len(), "PostgreSQL source starting");
    let mut last_flush = tokio::time::Instant::now();
    let mut stopped = stop.clone();
    let result: Result<(), String> = async {
        loop {
            if *stop.borrow() || stop.has_changed().is_err() {
                return Ok(());
            }
            let mut full = false;
            for s in &mut sources {
                // A stop does not wait for a poll: what was sent but not acknowledged is not stored as sent.
                let polled = tokio::select! {
                    r = poll_source(&ctx, &client, &producer, &chain, s, &mode, (&ts_col, &inc_col), mapping, max_rows, policy.timeout) => r,
                    _ = stopped.wait_for(|s| *s) => return Ok(()),
                };
                let sent = polled.map_err(|e| format!("{e}; {restart}"))?;
                full |= mode != "bulk" && sent as i64 >= max_rows;
            }
            if last_flush.elapsed() >= ctx.offset_flush_interval {
                if let Err(e) = ctx.offsets.flush().await {
                    tracing::warn!(connector = %ctx.connector, "flushing offsets failed ({e}); retrying at the next interval");
                }
                last_flush = tokio::time::Instant::now();
            }
            // A full page polls again at once; otherwise wait for the interval.
            if !full {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    .await;
    let flushed = ctx.offsets.flush().await.map_err(|e| {
        format!(
            "writing {} failed: {e}; the previous offsets stay in place",
            ctx.offsets.describe()
        )
    });
    tracing::info!(connector = %ctx.connector, "PostgreSQL source stopped");
    result.and(flushed)
}

/// Polls one source once: its new rows (per the mode) through the transforms and converters to its topic; once
/// all are acknowledged, the position after the last is put in the offset store. Returns the rows read.
#[allow(clippy::too_many_arguments)]
async fn poll_source(
    ctx: &TaskContext,
    client: &Client,
    producer: &FutureProducer,
    chain: &Chain,
    s: &mut Source,
    mode: &str,
    (ts_col, inc_col): (&str, &str),
    mapping: NumericMapping,
    max_rows: i64,
    timeout: Duration,
) -> Result<usize, String> {
    let timed_out = |what: &str| {
        format!(
            "{what} {} timed out after {timeout:?} (query.timeout.ms)",
            s.from
        )
    };
    if s.described.is_none() {
        s.described = Some(
            tokio::time::timeout(timeout, describe(client, &s.from, mapping))
                .await
                .map_err(|_| timed_out("reading the columns of"))??,
        );
    }
    let (schema, columns) = s.described.clone().expect("described above");
    let converted: Vec<(&Column, String)> = columns
        .iter()
        .filter_map(|c| read_sql(c).map(|e| (c, e)))
        .collect();
    let extra: String = converted.iter().map(|(_, e)| format!(", {e}")).collect();
    let stored = ctx.offsets.get(&ctx.connector, &s.partition);
    let last_ts = stored
        .as_ref()
        .and_then(|o| o["timestamp"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-infinity".into());
    let last_inc = stored
        .as_ref()
        .and_then(|o| o["incrementing"].as_i64())
        .unwrap_or(-1);
    let sql = poll_sql(mode, &s.from, ts_col, inc_col, max_rows, &extra);
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match mode {
        "incrementing" => vec![&last_inc as &(dyn tokio_postgres::types::ToSql + Sync)],
        "timestamp+incrementing" => vec![
            &last_ts as &(dyn tokio_postgres::types::ToSql + Sync),
            &last_inc,
        ],
        "timestamp" => vec![&last_ts as &(dyn tokio_postgres::types::ToSql + Sync)],
        _ => vec![],
    };
    let rows = tokio::time::timeout(timeout, client.query(sql.as_str(), &params))
        .await
        .map_err(|_| timed_out("polling"))?
        .map_err(|e| {
            // The server's message, not tokio-postgres's bare "db error".
            let e = crate::pg_sink::db_error(e, &format!("polling {} failed", s.from));
            format!(
                "{}; check the table/query and the mode's columns ({})",
                e.message,
                [ts_col, inc_col].join(" ").trim()
            )
        })?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let text: String = row.get(0);
        let mut obj = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(o)) => fit(&schema, o),
            _ => return Err(format!("a row of {} did not read as a JSON object", s.from)),
        };
        let first = 1 + mode_columns(mode);
        for (i, (c, _)) in converted.iter().enumerate() {
            let v: Option<String> = row.get(first + i);
            obj.insert(c.name.clone(), read_value(c, &s.from, v.as_deref())?);
        }
        // As Connect's WorkerSourceTask: the transforms first (a dropped row is not sent, its position still
        // counts as read), then the converters. No key: Confluent's JDBC source sends none (ValueToKey makes one).
        let value = SchemaAndValue {
            schema: Some(schema.clone()),
            value: Value::Object(obj),
        };
        let topic = s.topic.clone();
        let Some(record) = chain
            .apply(Record { topic, value, ..Record::default() })
            .map_err(|e| format!("{e}; the rows of {} from the stored offset on were not sent (fix the transform config)", s.from))?
        else {
            continue;
        };
        // A registry converter registers the record's schema first (once per schema).
        record
            .prepare_encode(&ctx.key_converter, &ctx.value_converter)
            .await?;
        let (key, value) = record.encode(&ctx.key_converter, &ctx.value_converter)?;
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic);
        if let Some(v) = value.as_deref() {
            out = out.payload(v);
        }
        if let Some(k) = key.as_deref() {
            out = out.key(k);
        }
        pending.push(
            producer
                .send_result(out)
                .map_err(|(e, _)| format!("sending to {} failed: {e}", record.topic))?,
        );
    }
    for p in pending {
        match p.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(format!("sending rows of {} failed: {e}; nothing past the last acknowledged batch is stored as sent", s.from)),
            Err(_) => return Err(format!("the producer was closed while sending rows of {}", s.from)),
        }
    }
    let last_row = rows.last().expect("not empty");
    match mode {
        "incrementing" => ctx.offsets.put(&ctx.connector, s.partition.clone(), json!({"incrementing": last_row.get::<_, i64>(1)})),
        "timestamp" => ctx.offsets.put(&ctx.connector, s.partition.clone(), json!({"timestamp": last_row.get::<_, String>(1)})),
        "timestamp+incrementing" => ctx.offsets.put(&ctx.connector, s.partition.clone(), json!({"timestamp": last_row.get::<_, String>(1), "incrementing": last_row.get::<_, i64>(2)})),
        _ => {}
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `table.whitelist` is split as Confluent's JDBC source splits it: min(tables, tasks.max) runs of
    /// consecutive tables, the first ones longer; a query is one task. (The old code ran one task for all.)
    #[test]
    fn tables_are_split_over_at_most_tasks_max_tasks_in_runs() {
        let five = config(&[("table.whitelist", "a, b,c,d,e")]);
        let groups = |c: &ConfigMap, max| -> Vec<Option<Vec<String>>> { task_tables(c, max) };
        let some = |ts: &[&str]| Some(ts.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        assert_eq!(
            groups(&five, 3),
            [some(&["a", "b"]), some(&["c", "d"]), some(&["e"])]
        );
        assert_eq!(groups(&five, 1), [some(&["a", "b", "c", "d", "e"])]);
        assert_eq!(groups(&five, 9).len(), 5);
        let query = config(&[("query", "SELECT 1"), ("table.whitelist", "")]);
        assert_eq!(groups(&query, 4), [None]);
    }

    fn b64(bytes: &[u8]) -> String {
        crate::converter::base64_encode(bytes)
    }

    #[test]
    fn numerics_become_confluents_unscaled_decimal_bytes_at_the_columns_scale() {
        for (text, scale, want) in [
            ("0", 2, &[0x00][..]),
            ("1234.56", 2, &[0x01, 0xe2, 0x40][..]),
            ("-1234.56", 2, &[0xfe, 0x1d, 0xc0][..]),
            ("1.28", 2, &[0x00, 0x80][..]),
            ("-1.28", 2, &[0x80][..]),
            ("3.5", 2, &[0x01, 0x5e][..]),
            // Fewer digits than the scale: padded; more: rounded half up (away from zero), as getBigDecimal.
            ("19.9", 3, &[0x4d, 0xbc][..]),
            ("0.125", 2, &[0x0d][..]),
            ("-0.125", 2, &[0xf3][..]),
            ("0.124", 2, &[0x0c][..]),
            ("0.995", 2, &[0x64][..]),
            // A negative scale (PostgreSQL 15's numeric(5,-2)).
            ("12300", -2, &[0x7b][..]),
        ] {
            assert_eq!(
                decimal_bytes(text, scale).unwrap(),
                want,
                "{text} at {scale}"
            );
        }
        // Scale 127, a numeric without a declared scale: 1.5 is 15 * 10^126.
        let big = decimal_bytes("1.5", 127).unwrap();
        assert_eq!(big.len(), 53, "{big:?}");
        assert_eq!(big[0] & 0x80, 0);
        for bad in ["NaN", "Infinity", "-Infinity", "", ".", "1e5"] {
            assert!(decimal_bytes(bad, 2).is_err(), "{bad}");
        }
        let huge = format!("1{}", "0".repeat(MAX_DECIMAL_DIGITS));
        assert!(decimal_bytes(&huge, 0).unwrap_err().contains("digits"));
    }

    #[test]
    fn numeric_mapping_follows_confluents_precision_and_scale_rules() {
        let ty = |declared, mapping| {
            let (v, read) = numeric_type(declared, mapping);
            (v["type"].as_str().unwrap().to_string(), read)
        };
        use NumericMapping::*;
        assert_eq!(numeric_modifier(-1), Option::None);
        // numeric(8,2): typmod (8 << 16 | 2) + 4.
        assert_eq!(numeric_modifier((8 << 16 | 2) + 4), Some((8, 2)));
        assert_eq!(
            numeric_modifier((5 << 16 | (-2i32 & 0x7ff)) + 4),
            Some((5, -2))
        );
        let (d, read) = numeric_type(Some((8, 2)), None);
        assert_eq!(
            d,
            json!({"type": "bytes", "name": CONNECT_DECIMAL, "version": 1,
                "parameters": {"scale": "2", "connect.decimal.precision": "8"}})
        );
        assert_eq!(read, Read::Decimal(2));
        let (d, read) = numeric_type(Option::None, BestFit);
        assert_eq!(d["parameters"], json!({"scale": "127"}));
        assert_eq!(read, Read::Decimal(127));
        for (declared, mapping, want) in [
            ((8, 2), BestFit, ("double", Read::Double)),
            ((2, 0), BestFit, ("int8", Read::Integer(8))),
            ((4, 0), BestFit, ("int16", Read::Integer(16))),
            ((9, 0), BestFit, ("int32", Read::Integer(32))),
            ((18, 0), BestFit, ("int64", Read::Integer(64))),
            ((5, -2), BestFit, ("int32", Read::Integer(32))),
            ((19, 0), BestFit, ("bytes", Read::Decimal(0))),
            ((20, 2), BestFit, ("bytes", Read::Decimal(2))),
            ((20, 2), BestFitEagerDouble, ("double", Read::Double)),
            ((8, 2), PrecisionOnly, ("bytes", Read::Decimal(2))),
            ((8, 0), PrecisionOnly, ("int32", Read::Integer(32))),
            ((10, 0), None, ("bytes", Read::Decimal(0))),
        ] {
            assert_eq!(
                ty(Some(declared), mapping),
                (want.0.to_string(), want.1),
                "{declared:?} {mapping:?}"
            );
        }
    }

    #[test]
    fn converted_values_that_connect_cannot_hold_fail_naming_the_column() {
        let col = |read| Column {
            name: "price".into(),
            read,
            time_tz: false,
        };
        let e = read_value(&col(Read::Decimal(2)), "\"items\"", Some("NaN")).unwrap_err();
        assert!(
            e.starts_with("column price of \"items\": the value NaN"),
            "{e}"
        );
        let e = read_value(&col(Read::Date), "\"items\"", Some("infinity")).unwrap_err();
        assert!(e.contains("Connect Date"), "{e}");
        assert!(read_value(&col(Read::Time), "t", Some("86400000")).is_err());
        assert_eq!(
            read_value(&col(Read::Time), "t", Some("86399999")).unwrap(),
            json!(86_399_999)
        );
        let e = read_value(&col(Read::Integer(16)), "\"items\"", Some("99900")).unwrap_err();
        assert!(e.contains("int16"), "{e}");
        assert_eq!(
            read_value(&col(Read::Decimal(2)), "t", Some("-1.28")).unwrap(),
            json!(b64(&[0x80]))
        );
        assert_eq!(
            read_value(&col(Read::Timestamp), "t", Some("-1")).unwrap(),
            json!(-1)
        );
        assert_eq!(
            read_value(&col(Read::Double), "t", Some("7.25")).unwrap(),
            json!(7.25)
        );
        assert_eq!(
            read_value(&col(Read::Date), "t", None).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn numeric_mapping_is_checked_naming_the_key() {
        let mut c = ConfigMap::new();
        c.insert("numeric.mapping".into(), "best_fit".into());
        assert!(key_errors("numeric.mapping", &c).is_empty());
        c.insert("numeric.mapping".into(), "closest".into());
        let e = key_errors("numeric.mapping", &c);
        assert!(e[0].contains("configuration numeric.mapping"), "{e:?}");
    }
}
