//! The PostgreSQL source (`PostgresSource`, also found under Confluent's `JdbcSourceConnector` class name): rows
//! of tables (`table.whitelist`) or of a query (`query`) become records of `topic.prefix` + table (or
//! `topic.prefix` alone for a query), in JDBC-source style modes: `bulk` (everything at every poll),
//! `incrementing` (rows whose `incrementing.column.name` is above the stored offset, in its order) and
//! `timestamp` (rows whose `timestamp.column.name` is after the stored one and before the query's `now()`).
//!
//! Each row is read as `row_to_json`; with the JSON converter's schema envelope the schema is the struct of the
//! columns (int2/int4/int8/float4/float8/bool as Connect's int16/int32/int64/float/double/boolean; every other
//! type as its JSON text, a string). **At-least-once:** the records are acknowledged (idempotent `acks=all`
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
use crate::transforms::{Chain, Record, SchemaAndValue};
use crate::worker::TaskContext;

pub const CLASS: &str = "io.fjord.connect.postgres.PostgresSourceConnector";
pub const TASK_CLASS: &str = "io.fjord.connect.postgres.PostgresSourceTask";

pub const KEYS: [KeyDef; 14] = [
    ("connection.url", "STRING", None, "HIGH", "JDBC connection URL: jdbc:postgresql://host:port/database (or postgresql://user:password@host:port/database).", true),
    ("connection.user", "STRING", None, "HIGH", "JDBC connection user.", false),
    ("connection.password", "PASSWORD", None, "HIGH", "JDBC connection password.", false),
    ("mode", "STRING", None, "HIGH", "The mode for updating a table each time it is polled: bulk (the whole table each poll), incrementing (a strictly incrementing column detects new rows), timestamp (a timestamp column detects new and changed rows) or timestamp+incrementing (both: the timestamp detects new and changed rows, the incrementing column orders rows of the same timestamp, so each row gets a unique position).", true),
    ("table.whitelist", "LIST", Some(""), "MEDIUM", "The tables to copy (schema.table for a schema); one of table.whitelist or query.", false),
    ("query", "STRING", Some(""), "MEDIUM", "A query to copy instead of tables; the mode's column must be one of its columns.", false),
    ("incrementing.column.name", "STRING", Some(""), "MEDIUM", "The name of the strictly incrementing integer column used to detect new rows (mode=incrementing).", false),
    ("timestamp.column.name", "STRING", Some(""), "MEDIUM", "The name of the timestamp column used to detect new or modified rows (mode=timestamp).", false),
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
    /// The struct schema of the rows (Connect's JSON form), from the columns' types.
    schema: Option<Value>,
}

fn connect_type(t: &Type) -> &'static str {
    match *t {
        Type::INT2 => "int16",
        Type::INT4 => "int32",
        Type::INT8 => "int64",
        Type::FLOAT4 => "float",
        Type::FLOAT8 => "double",
        Type::BOOL => "boolean",
        _ => "string",
    }
}

async fn describe(client: &Client, from: &str) -> Result<Value, String> {
    let stmt = client
        .prepare(&format!("SELECT * FROM {from} t LIMIT 0"))
        .await
        .map_err(|e| format!("reading the columns of {from}: {e}"))?;
    let fields: Vec<Value> = stmt
        .columns()
        .iter()
        .map(|c| json!({"field": c.name(), "type": connect_type(c.type_()), "optional": true}))
        .collect();
    Ok(json!({"type": "struct", "fields": fields, "optional": false}))
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

/// The incremental query of a mode, with what its rows add after the row itself (the timestamp as text, the
/// incrementing value): its parameters are the stored timestamp (text) and incrementing value, those it uses.
fn poll_sql(mode: &str, from: &str, ts: &str, inc: &str, max_rows: i64) -> String {
    let (ts, inc) = (quote(ts), quote(inc));
    match mode {
        "incrementing" => format!("SELECT row_to_json(t)::text, (t.{inc})::bigint FROM {from} t WHERE t.{inc} > $1::bigint ORDER BY t.{inc} LIMIT {max_rows}"),
        // Keyset paging on (timestamp, incrementing): a page ends anywhere, even inside a run of rows of one
        // timestamp, and the next one starts right after it (Confluent's timestamp+incrementing criteria).
        "timestamp+incrementing" => format!("SELECT row_to_json(t)::text, (t.{ts})::text, (t.{inc})::bigint FROM {from} t WHERE t.{ts} < now() AND (t.{ts} > $1::text::timestamptz OR (t.{ts} = $1::text::timestamptz AND t.{inc} > $2::bigint)) ORDER BY t.{ts}, t.{inc} LIMIT {max_rows}"),
        // A timestamp alone cannot tell apart rows of one timestamp, so a page never ends inside such a run: it
        // goes up to the timestamp of the batch.max.rows-th new row, all rows of that timestamp included (rows
        // of a timestamp arriving after it was passed are missed, as in Confluent's timestamp mode: use
        // timestamp+incrementing for them).
        "timestamp" => format!("SELECT row_to_json(t)::text, (t.{ts})::text FROM {from} t WHERE t.{ts} > $1::text::timestamptz AND t.{ts} < now() AND t.{ts} <= COALESCE((SELECT s.{ts} FROM {from} s WHERE s.{ts} > $1::text::timestamptz AND s.{ts} < now() ORDER BY s.{ts} OFFSET {} LIMIT 1), 'infinity') ORDER BY t.{ts}", max_rows - 1),
        _ => format!("SELECT row_to_json(t)::text FROM {from} t"),
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
            schema: None,
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
            schema: None,
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
                    r = poll_source(&ctx, &client, &producer, &chain, s, &mode, &ts_col, &inc_col, max_rows, policy.timeout) => r,
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
    ts_col: &str,
    inc_col: &str,
    max_rows: i64,
    timeout: Duration,
) -> Result<usize, String> {
    let timed_out = |what: &str| {
        format!(
            "{what} {} timed out after {timeout:?} (query.timeout.ms)",
            s.from
        )
    };
    if s.schema.is_none() {
        s.schema = Some(
            tokio::time::timeout(timeout, describe(client, &s.from))
                .await
                .map_err(|_| timed_out("reading the columns of"))??,
        );
    }
    let schema = s.schema.clone().expect("described above");
    let stored = ctx.offsets.get(&ctx.connector, &s.partition);
    let last_ts = stored
        .as_ref()
        .and_then(|o| o["timestamp"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-infinity".into());
    let last_inc = stored
        .as_ref()
        .and_then(|o| o["incrementing"].as_i64())
        .unwrap_or(-1);
    let sql = poll_sql(mode, &s.from, ts_col, inc_col, max_rows);
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
            format!(
                "polling {} failed: {e}; check the table/query and the mode's columns ({})",
                s.from,
                [ts_col, inc_col].join(" ").trim()
            )
        })?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let text: String = row.get(0);
        let obj = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(o)) => fit(&schema, o),
            _ => return Err(format!("a row of {} did not read as a JSON object", s.from)),
        };
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
}
