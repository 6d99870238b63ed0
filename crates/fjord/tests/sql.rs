//! Streaming SQL end to end: `fjord start` with its SQL server on a free port, records produced and read with
//! confluent-kafka, statements over the REST API (ksqlDB's shapes) and through `fjord sql`.
#![cfg(feature = "sql")]

mod common;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Platform {
    child: Child,
    kafka: String,
    sql: String,
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path) -> Platform {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    let (child, line) =
        start_platform_with_sql(data, "none", "none", "127.0.0.1:0", Stdio::from(log));
    Platform {
        child,
        kafka: field(&line, "kafka=").to_string(),
        sql: field(&line, "sql=").to_string(),
    }
}

/// `fjord start` with its schema registry (and SQL) in `dir`: the platform and the registry's `host:port`.
fn start_with_registry(dir: &std::path::Path) -> (Platform, String) {
    let log = std::fs::File::create(dir.join("fjord.log")).unwrap();
    let (child, line) = start_platform_with_sql(
        &dir.join("data"),
        "127.0.0.1:0",
        "none",
        "127.0.0.1:0",
        Stdio::from(log),
    );
    let registry = field(&line, "registry=").to_string();
    let p = Platform {
        child,
        kafka: field(&line, "kafka=").to_string(),
        sql: field(&line, "sql=").to_string(),
    };
    (p, registry)
}

/// POST a JSON body; (status, JSON answer).
fn post(addr: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, _, raw) = http_request(
        addr,
        "POST",
        path,
        "Content-Type: application/json\r\n",
        Some(body),
    );
    let v = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    (status, v)
}

fn ksql(addr: &str, sql: &str) -> (u16, Value) {
    let body =
        json!({"ksql": sql, "streamsProperties": {"auto.offset.reset": "earliest"}}).to_string();
    post(addr, "/ksql", body.as_bytes())
}

fn ksql_ok(addr: &str, sql: &str) -> Value {
    let (status, v) = ksql(addr, sql);
    assert_eq!(status, 200, "{sql}: {v}");
    v
}

fn client(args: &[&str]) -> String {
    run_client("sql_clients.py", args, Duration::from_secs(120))
}

/// The expected output rows for input ids `range`: key id-i, ITEM upper-cased, TOTAL = qty * 1.5, qty >= 10.
fn expected(range: std::ops::Range<i64>) -> Vec<String> {
    let mut v: Vec<String> = range
        .filter(|i| *i >= 10)
        .map(|i| {
            format!(
                "id-{i}\t{}",
                json!({"ITEM": format!("W{i}"), "TOTAL": i as f64 * 1.5})
            )
        })
        .collect();
    v.sort();
    v
}

fn read_output(kafka: &str, expected_count: usize) -> Vec<String> {
    client(&["read", kafka, "BIG_ORDERS", &expected_count.to_string()])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (90 s at most) until the query's group has committed `n` input offsets of the orders topic.
fn wait_committed(kafka: &str, group: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: i64 = client(&["committed", kafka, group, "orders"])
            .trim()
            .parse()
            .unwrap();
        if got == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} committed {got} offsets, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn persistent_query_filters_projects_and_resumes_after_kill9() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut p = start(&data);
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT, price DOUBLE) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=2);",
    );
    let v = ksql_ok(
        &p.sql,
        "CREATE STREAM big_orders AS SELECT id, UCASE(item) AS item, qty * price AS total FROM orders WHERE qty >= 10;",
    );
    let id = v[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("CSAS_BIG_ORDERS_"), "{v}");
    // The output topic takes the source's partition count.
    let d = ksql_ok(&p.sql, "DESCRIBE big_orders;");
    assert_eq!(d[0]["sourceDescription"]["topic"], "BIG_ORDERS", "{d}");

    client(&["produce", &p.kafka, "orders", "0", "20"]);
    assert_eq!(read_output(&p.kafka, 10), expected(0..20));
    wait_committed(&p.kafka, &format!("_fjord_sql_{id}"), 20);

    // kill -9 and restart on the same data: the query is replayed from the command topic and goes on from its
    // committed offsets, so the first 20 records are not processed again.
    let _ = p.child.kill();
    let _ = p.child.wait();
    let p = start(&data);
    let q = ksql_ok(&p.sql, "SHOW QUERIES;");
    let queries = q[0]["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 1, "{q}");
    assert_eq!(queries[0]["id"], id.as_str());
    assert_eq!(queries[0]["state"], "RUNNING", "{q}");
    client(&["produce", &p.kafka, "orders", "20", "30"]);
    assert_eq!(read_output(&p.kafka, 20), expected(0..30));
    wait_committed(&p.kafka, &format!("_fjord_sql_{id}"), 30);

    // CREATE OR REPLACE upgrades the query in place: same id, same group, so it goes on from the committed
    // offsets (nothing is reprocessed) and new records get the new projection.
    let v = ksql_ok(
        &p.sql,
        "CREATE OR REPLACE STREAM big_orders AS SELECT id, LCASE(item) AS item, qty * price AS total FROM orders WHERE qty >= 10;",
    );
    assert_eq!(v[0]["commandStatus"]["queryId"], id.as_str(), "{v}");
    client(&["produce", &p.kafka, "orders", "30", "33"]);
    let mut want = expected(0..30);
    want.extend((30..33).map(|i| {
        format!(
            "id-{i}\t{}",
            json!({"ITEM": format!("w{i}"), "TOTAL": i as f64 * 1.5})
        )
    }));
    want.sort();
    assert_eq!(read_output(&p.kafka, 23), want);
    wait_committed(&p.kafka, &format!("_fjord_sql_{id}"), 33);

    let v = ksql_ok(&p.sql, &format!("EXPLAIN {id};"));
    let d = &v[0]["queryDescription"];
    assert_eq!(d["state"], "RUNNING", "{v}");
    assert_eq!(
        d["consumerGroupId"],
        format!("_fjord_sql_{id}").as_str(),
        "{v}"
    );
    assert!(
        d["executionPlan"].as_str().unwrap().contains("FILTER"),
        "{v}"
    );

    // TERMINATE stops it; the stream stays and its state is recorded.
    ksql_ok(&p.sql, &format!("TERMINATE {id};"));
    let q = ksql_ok(&p.sql, "SHOW QUERIES;");
    assert_eq!(q[0]["queries"][0]["state"], "TERMINATED", "{q}");
}

#[test]
fn push_query_streams_rows_produced_after_it_started() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT, price DOUBLE) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    // Records from before the query: a push query (auto.offset.reset latest) must not return them.
    client(&["produce", &p.kafka, "orders", "0", "5"]);
    let mut s = std::net::TcpStream::connect(&p.sql).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = json!({"ksql": "SELECT id, qty, CONCAT(item, '!') AS x FROM orders WHERE qty % 2 = 0 EMIT CHANGES LIMIT 2;"}).to_string();
    write!(
        s,
        "POST /query HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The header arrives before any row: the query is running.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"header\"") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the answer ended before its header: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("`ID` STRING, `QTY` INTEGER, `X` STRING"),
        "{head}"
    );
    client(&["produce", &p.kafka, "orders", "10", "15"]);
    // LIMIT 2 ends the answer.
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).to_string();
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| l.contains("\"row\""))
        .map(|l| {
            let j = l
                .trim()
                .trim_start_matches(',')
                .trim_end_matches(']')
                .trim_end_matches(',');
            serde_json::from_str::<Value>(j).unwrap_or_else(|e| panic!("{e}: {l}"))["row"]
                ["columns"]
                .clone()
        })
        .collect();
    assert_eq!(
        rows,
        vec![json!(["id-10", 10, "w10!"]), json!(["id-12", 12, "w12!"])],
        "{text}"
    );
    // The array is closed, then the chunked body ends.
    assert!(text.contains("]\n\r\n0\r\n\r\n"), "{text}");
}

#[test]
fn bad_requests_and_statements_get_4xx_with_a_message() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    let a = &p.sql;
    let (status, v) = post(a, "/ksql", b"{not json");
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("must be JSON"),
        "{v}"
    );
    let (status, v) = post(a, "/ksql", br#"{"ksql": "SHOW STREAMS;", "bogus": 1}"#);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `bogus`"),
        "{v}"
    );
    let big = format!(r#"{{"ksql": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, v) = post(a, "/ksql", big.as_bytes());
    assert_eq!(status, 413, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("larger than"),
        "{v}"
    );
    let (status, v) = post(a, "/query", b"[]");
    assert_eq!(status, 400, "{v}");

    // A syntax error: ksqlDB's statement_error with line, column and a caret.
    let (status, v) = ksql(a, "SHOW STREAMS;\nSELECT * FROMM orders;");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["@type"], "statement_error");
    assert_eq!(v["error_code"], 40001);
    assert_eq!(
        (v["line"].as_u64(), v["column"].as_u64()),
        (Some(2), Some(10)),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("expected `,` or FROM, found `FROMM`\nSELECT * FROMM orders;\n         ^"),
        "{v}"
    );
    // Unknown stream, unknown column, type mismatch; statements before the failing one ran.
    let (status, v) = ksql(a, "DESCRIBE nothere;");
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown stream or table NOTHERE"),
        "{v}"
    );
    ksql_ok(
        a,
        "CREATE STREAM s (k STRING KEY, n INT) WITH (kafka_topic='s', partitions=1);",
    );
    let (status, v) = ksql(a, "CREATE STREAM t AS SELECT k, nn FROM s;");
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown column NN: the columns are ROWTIME, ROWPARTITION, ROWOFFSET, K, N"),
        "{v}"
    );
    let (status, v) = ksql(a, "CREATE STREAM t AS SELECT k FROM s WHERE n = 'x';");
    assert_eq!(status, 400);
    assert!(
        v["message"].as_str().unwrap().contains("type mismatch"),
        "{v}"
    );
    // Two key columns in a key format named to hold one are refused with ksqlDB's message.
    let (status, v) = ksql(
        a,
        "CREATE STREAM p WITH (key_format='KAFKA') AS SELECT k, n FROM s PARTITION BY k, n;",
    );
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("The 'KAFKA' format only supports a single field"),
        "{v}"
    );
    let (status, v) = ksql(a, "SELECT * FROM s EMIT CHANGES;");
    assert_eq!(status, 400);
    assert!(
        v["message"].as_str().unwrap().contains("send it to /query"),
        "{v}"
    );
    let (status, v) = ksql(a, "INSERT INTO s (k, n) VALUES ('a', 'not a number');");
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("type mismatch: column N is INTEGER"),
        "{v}"
    );

    // EXPLAIN plans a windowed aggregation (runnable now, on the streams library).
    let v = ksql_ok(a, "EXPLAIN SELECT k, COUNT(*) AS c FROM s WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 10 SECONDS) GROUP BY k EMIT CHANGES;");
    let d = &v[0]["queryDescription"];
    assert_eq!(d["runnable"], true, "{v}");
    assert_eq!(d["reason"], Value::Null, "{v}");
    assert_eq!(
        d["fields"][1],
        json!({"name": "C", "schema": {"type": "BIGINT"}}),
        "{v}"
    );
    assert!(
        d["executionPlan"].as_str().unwrap().contains("AGGREGATE"),
        "{v}"
    );

    let (status, _, body) = http_request(a, "GET", "/info", "", None);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("KsqlServerInfo"));
    let (status, _, body) = http_request(a, "GET", "/healthcheck", "", None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("\"isHealthy\":true"));

    // The shell reads statements from standard input when it is not a terminal.
    let out = run_with_stdin(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord")).args([
            "sql",
            "--server",
            &format!("http://{a}"),
        ]),
        Some(b"SHOW\n  STREAMS;\nDESCRIBE s;\n"),
        Duration::from_secs(60),
    );
    let text = ok(&out);
    assert!(text.contains("| Stream Name |"), "{text}");
    assert!(text.contains("| N     | INTEGER      |"), "{text}");

    // `fjord sql -f`: the error points at the line of the file.
    let script = dir.path().join("bad.sql");
    std::fs::write(
        &script,
        "SHOW STREAMS;\n\nCREATE STREAM x (a INT, b FLOTE) WITH (kafka_topic='x');\n",
    )
    .unwrap();
    let out = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["sql", "--server", &format!("http://{a}"), "-f"])
            .arg(&script),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("line 3, column 27: expected a type"), "{err}");
    assert!(
        err.contains(
            "CREATE STREAM x (a INT, b FLOTE) WITH (kafka_topic='x');\n                          ^"
        ),
        "{err}"
    );
    // And a good script prints tables.
    std::fs::write(&script, "INSERT INTO s (k, n) VALUES ('a', 7);\nSHOW STREAMS;\nSELECT k, n * 2 AS d FROM s LIMIT 1;\n").unwrap();
    let out = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["sql", "--server", &format!("http://{a}"), "-f"])
            .arg(&script),
        Duration::from_secs(60),
    );
    let text = ok(&out);
    assert!(text.contains("Inserted 1 row."), "{text}");
    assert!(
        text.contains("| S           | s           | KAFKA      | JSON         |"),
        "{text}"
    );
    assert!(text.contains("| K            | D            |"), "{text}");
    assert!(text.contains("| a            | 14           |"), "{text}");
}

/// Reads the rows of a SELECT over /query (one that ends: LIMIT, or no EMIT CHANGES).
fn query_rows(addr: &str, sql: &str) -> Vec<Value> {
    let body = json!({"ksql": sql}).to_string();
    let (status, _, raw) = http_request(
        addr,
        "POST",
        "/query",
        "Content-Type: application/json\r\n",
        Some(body.as_bytes()),
    );
    let text = String::from_utf8_lossy(&raw).to_string();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| l.contains("\"row\""))
        .map(|l| {
            let j = l
                .trim()
                .trim_start_matches(',')
                .trim_end_matches(']')
                .trim_end_matches(',');
            serde_json::from_str::<Value>(j).unwrap()["row"]["columns"].clone()
        })
        .collect()
}

#[test]
fn sql_server_runs_alone_with_delimited_values_alter_and_drop() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    // Killed on drop, also when an assertion fails.
    let mut server = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args([
                "sql-server",
                "-b",
                &broker.bootstrap,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("fjord sql-server ready line");
    assert!(line.starts_with("fjord sql-server ready"), "{line}");
    let a = field(&line, "listen=").to_string();
    ksql_ok(&a, "CREATE STREAM csv (id INT KEY, name STRING, score DOUBLE) WITH (kafka_topic='csv', value_format='DELIMITED', partitions=1);");
    ksql_ok(&a, "INSERT INTO csv (id, name, score) VALUES (1, 'ann', 2.5); INSERT INTO csv (id, name, score) VALUES (2, 'bob', 4);");
    // The value is `ann,2.5` and the INT key Kafka's 4-byte big-endian serializer.
    let rows = query_rows(&a, "SELECT id, UCASE(name) AS n, score * 2 AS s FROM csv;");
    assert_eq!(rows, vec![json!([1, "ANN", 5.0]), json!([2, "BOB", 8.0])]);
    // ALTER adds a column; old records read it as NULL.
    ksql_ok(&a, "ALTER STREAM csv ADD COLUMN city STRING;");
    ksql_ok(
        &a,
        "INSERT INTO csv (id, name, score, city) VALUES (3, 'cy', 1, 'Oslo');",
    );
    let rows = query_rows(&a, "SELECT id, city FROM csv WHERE score < 3;");
    assert_eq!(rows, vec![json!([1, null]), json!([3, "Oslo"])]);
    let (status, v) = ksql(&a, "ALTER STREAM csv ADD COLUMN name STRING;");
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("already has a column NAME"),
        "{v}"
    );
    // A stream read by a query cannot be dropped; DROP ... DELETE TOPIC removes the topic too.
    // A record that does not decode (a score that is not a number) is skipped and counted, never a crash.
    ok(&fjord(
        &broker.bootstrap,
        &["produce", "csv"],
        Some(b"dan,not-a-number\n"),
    ));
    assert_eq!(query_rows(&a, "SELECT name FROM csv;").len(), 3);
    ksql_ok(
        &a,
        "CREATE STREAM good AS SELECT id, name FROM csv WHERE score > 2;",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = ksql_ok(&a, "DESCRIBE EXTENDED good;");
        let stats = &d[0]["sourceDescription"]["statistics"];
        if stats["recordsIn"] == 4 {
            assert_eq!(stats["processingErrors"], 1, "{d}");
            assert!(
                stats["lastError"]
                    .as_str()
                    .unwrap()
                    .contains("column SCORE"),
                "{d}"
            );
            assert_eq!(stats["recordsOut"], 2, "{d}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query did not read the 4 records: {d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // An aggregation by a value column has a repartition topic, a changelog and a consumer group; dropping
    // its table removes them, as ksqlDB does when a query ends (they stayed behind for ever before).
    ksql_ok(
        &a,
        "CREATE TABLE by_name AS SELECT name, COUNT(*) AS n FROM csv GROUP BY name;",
    );
    let leftovers = || {
        let topics = fjord(&broker.bootstrap, &["topics", "list"], None);
        let groups = fjord(&broker.bootstrap, &["groups", "list"], None);
        let mut found: Vec<String> = [topics, groups]
            .iter()
            .flat_map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .into_owned()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.contains("_fjord_sql_CTAS_BY_NAME"))
            .collect();
        found.sort();
        found
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = leftovers();
        if found.iter().any(|l| l.contains("-agg-changelog"))
            && found.iter().any(|l| l.contains("-groupby-repartition"))
            && found
                .iter()
                .any(|l| !l.contains("-agg-changelog") && !l.contains("-repartition"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the aggregation's topics and group did not appear: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, v) = ksql(&a, "DROP STREAM csv;");
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("TERMINATE them first"),
        "{v}"
    );
    ksql_ok(&a, "DROP STREAM good DELETE TOPIC;");
    ksql_ok(&a, "DROP TABLE by_name DELETE TOPIC;");
    let left = leftovers();
    assert!(
        left.is_empty(),
        "left behind by the dropped aggregation: {left:?}"
    );
    ksql_ok(&a, "DROP STREAM csv;");
    let v = ksql_ok(&a, "SHOW STREAMS; SHOW QUERIES;");
    assert_eq!(v[0]["streams"], json!([]), "{v}");
    assert_eq!(v[1]["queries"], json!([]), "{v}");
    let topics = ksql_ok(&a, "SHOW TOPICS;");
    let names: Vec<&str> = topics[0]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"csv") && !names.contains(&"GOOD"),
        "{names:?}"
    );
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A delivery the broker refuses (here: larger than the output topic's max.message.bytes) fails the batch:
/// its input offset is not committed, and once the cause is gone the query writes the record from there.
#[test]
fn a_refused_output_record_is_not_committed_past_and_is_written_once_the_cause_is_gone() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT, price DOUBLE) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=2);",
    );
    let v = ksql_ok(
        &p.sql,
        "CREATE STREAM big_orders AS SELECT id, UCASE(item) AS item, qty * price AS total FROM orders WHERE qty >= 10;",
    );
    let id = v[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    let group = format!("_fjord_sql_{id}");
    client(&["produce", &p.kafka, "orders", "0", "20"]);
    wait_committed(&p.kafka, &group, 20);

    ok(&fjord(
        &p.kafka,
        &[
            "configs",
            "alter",
            "--topic",
            "BIG_ORDERS",
            "--add-config",
            "max.message.bytes=10",
        ],
        None,
    ));
    client(&["produce", &p.kafka, "orders", "20", "21"]);
    // The refused write keeps the commit at 20 (the loop retries from there every 2 s).
    std::thread::sleep(Duration::from_secs(6));
    let committed: i64 = client(&["committed", &p.kafka, &group, "orders"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        committed, 20,
        "the offset of the refused record was committed"
    );
    // Meanwhile the query says it is failing, and why (it showed RUNNING before).
    let q = await_state(&p.sql, &id, "ERROR", 30);
    let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
    assert!(reason.contains("BIG_ORDERS"), "{reason}");

    ok(&fjord(
        &p.kafka,
        &[
            "configs",
            "alter",
            "--topic",
            "BIG_ORDERS",
            "--delete-config",
            "max.message.bytes",
        ],
        None,
    ));
    wait_committed(&p.kafka, &group, 21);
    await_state(&p.sql, &id, "RUNNING", 30);
    let out = read_output(&p.kafka, 11);
    assert!(out.iter().any(|l| l.starts_with("id-20\t")), "{out:?}");
}

/// `PARTITION BY` re-keys a stream, as in ksqlDB: the result's key is the expression (its column in the SELECT
/// list is the key column; the source's key column, when selected, becomes a value column), written with the
/// murmur2 partitioning of the Java client; a stream without a key gets a KAFKA key. The expression must be in the
/// SELECT list; one expression at most.
#[test]
fn partition_by_rekeys_a_stream() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    let a = p.sql.as_str();
    ksql_ok(
        a,
        "CREATE STREAM clicks (user_id STRING KEY, page STRING, n INT) \
         WITH (kafka_topic='clicks', partitions=3, value_format='JSON');\
         CREATE STREAM visits (page STRING, n INT) WITH (kafka_topic='visits', partitions=1, value_format='JSON', key_format='NONE');",
    );
    ksql_ok(
        a,
        "CREATE STREAM by_page WITH (partitions=3) AS SELECT page, user_id, n FROM clicks PARTITION BY page;\
         CREATE STREAM visits_by_page AS SELECT * FROM visits PARTITION BY page;",
    );
    let d = ksql_ok(a, "DESCRIBE by_page;");
    let fields = &d[0]["sourceDescription"]["fields"];
    assert_eq!(fields[0]["name"], "PAGE", "{d}");
    assert_eq!(fields[0]["type"], "KEY", "{d}");
    assert!(fields[1].get("type").is_none(), "{d}");
    let d = ksql_ok(a, "DESCRIBE visits_by_page;");
    assert_eq!(d[0]["sourceDescription"]["keyFormat"], "KAFKA", "{d}");
    assert_eq!(d[0]["sourceDescription"]["fields"][0]["type"], "KEY", "{d}");
    let clicks = [
        ("u1", "home", 1),
        ("u2", "cart", 2),
        ("u1", "cart", 3),
        ("u3", "home", 4),
        ("u4", "home", 5),
        ("u5", "cart", 6),
        ("u6", "home", 7),
    ];
    for (user, page, n) in clicks {
        ksql_ok(
            a,
            &format!(
                "INSERT INTO clicks (user_id, page, n) VALUES ('{user}', '{page}', {n});\
                 INSERT INTO visits (page, n) VALUES ('{page}', {n});"
            ),
        );
    }
    await_written(a, "by_page", 7);
    await_written(a, "visits_by_page", 7);
    let rows = read_json(&p.kafka, "BY_PAGE", 7);
    let want: Vec<(&str, Value)> = clicks
        .iter()
        .map(|(user, page, n)| (*page, json!({"USER_ID": user, "N": n})))
        .collect();
    assert_eq!(rows, sorted(want));
    let rows = read_json(&p.kafka, "VISITS_BY_PAGE", 7);
    let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["cart", "cart", "cart", "home", "home", "home", "home"],
        "{rows:?}"
    );
    // One key's records share a partition (murmur2 over the new key, as the Java client partitions), though they
    // came from several input partitions (the users' keys spread them; checked, or the test would prove nothing).
    let partitions_of = |topic: &str, by_key: bool| {
        let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<i32>> =
            Default::default();
        for partition in 0..3 {
            for (key, value) in read_partition(&p.kafka, topic, partition) {
                let k = if by_key {
                    String::from_utf8_lossy(&key).to_string()
                } else {
                    let v: Value = serde_json::from_slice(&value.unwrap()).unwrap();
                    v["PAGE"].as_str().unwrap().to_string()
                };
                seen.entry(k).or_default().insert(partition);
            }
        }
        seen
    };
    let inputs = partitions_of("clicks", false);
    assert!(
        inputs.values().any(|parts| parts.len() > 1),
        "every page's clicks came from one input partition: {inputs:?}"
    );
    let outputs = partitions_of("BY_PAGE", true);
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert!(
        outputs.values().all(|parts| parts.len() == 1),
        "a page's records in several partitions: {outputs:?}"
    );

    let m = refused(
        a,
        "CREATE STREAM x AS SELECT n FROM clicks PARTITION BY page;",
    );
    assert!(m.contains("must be in the SELECT list"), "{m}");
    let m = refused(
        a,
        "CREATE TABLE t AS SELECT page, COUNT(*) AS c FROM clicks GROUP BY page PARTITION BY page;",
    );
    assert!(m.contains("leave out PARTITION BY"), "{m}");
    // A key the KAFKA format cannot hold, or no key format, is refused at CREATE.
    ksql_ok(
        a,
        "CREATE STREAM nested (id STRING KEY, s STRUCT<a INT>) WITH (kafka_topic='nested', partitions=1, value_format='JSON');",
    );
    let m = refused(
        a,
        "CREATE STREAM nested_by_s WITH (key_format='KAFKA') AS SELECT s, id FROM nested PARTITION BY s;",
    );
    assert!(m.contains("KEY_FORMAT='KAFKA' cannot hold"), "{m}");
    let m = refused(
        a,
        "CREATE STREAM nested_no_key WITH (key_format='NONE') AS SELECT id FROM nested PARTITION BY id;",
    );
    assert!(m.contains("KEY_FORMAT='NONE' would drop it"), "{m}");
}

/// A pull query over a stream ends at each partition's end even when the last offset holds no record it can
/// deliver (here a transaction's commit marker), instead of waiting for a record that never comes.
#[test]
fn a_pull_query_ends_when_the_topic_ends_with_a_transaction_marker() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT, price DOUBLE) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    client(&["produce-txn", &p.kafka, "orders", "0", "3"]);
    let started = Instant::now();
    let rows = query_rows(&p.sql, "SELECT id, qty FROM orders;");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the pull query took {:?}",
        started.elapsed()
    );
}

/// A query dropped before a restart leaves its consumer group with committed offsets: a new query of the same
/// name after the restart gets another id (and group), so it does not resume from the old one's offsets.
#[test]
fn a_query_created_again_after_a_drop_and_a_restart_gets_a_new_id() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut p = start(&data);
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT, price DOUBLE) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let csas = "CREATE STREAM big_orders AS SELECT id, qty FROM orders WHERE qty >= 10;";
    let v = ksql_ok(&p.sql, csas);
    let first = v[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    ksql_ok(&p.sql, "DROP STREAM big_orders;");
    let _ = p.child.kill();
    let _ = p.child.wait();
    let p = start(&data);
    let v = ksql_ok(&p.sql, csas);
    let second = v[0]["commandStatus"]["queryId"].as_str().unwrap();
    assert_ne!(second, first, "{v}");
}

/// A command of the command topic that does not decode (here a definition naming a format this version does
/// not know, as a newer version might write) no longer vanishes at the next start: its stream and query are
/// listed BROKEN with the reason, the rest is served, its name is refused until it is DROPped, and DROP removes
/// it. The old code skipped it with a log line: the stream and its query were simply gone.
#[test]
fn a_command_that_cannot_be_read_back_is_listed_broken_and_the_rest_is_served() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut p = start(&data);
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT, price DOUBLE) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let csas = "CREATE STREAM big_orders AS SELECT id, qty FROM orders WHERE qty >= 10;";
    ksql_ok(&p.sql, csas);
    client(&["produce", &p.kafka, "orders", "0", "3"]);
    let bad = json!({"name": "BIG_ORDERS", "kind": "Stream", "topic": "BIG_ORDERS", "value_format": "XML",
        "query": {"id": "CSAS_BIG_ORDERS_90", "sql": csas, "running": true}});
    client(&[
        "produce-raw",
        &p.kafka,
        "_fjord_sql_commands",
        "BIG_ORDERS",
        &bad.to_string(),
    ]);
    let _ = p.child.kill();
    let _ = p.child.wait();
    let p = start(&data);

    let v = ksql_ok(&p.sql, "SHOW STREAMS; SHOW QUERIES;");
    let streams = v[0]["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{v}");
    let broken = streams.iter().find(|s| s["name"] == "BIG_ORDERS").unwrap();
    assert_eq!(broken["state"], "BROKEN", "{v}");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("does not decode"),
        "{v}"
    );
    let queries = v[1]["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 1, "{v}");
    assert_eq!(queries[0]["id"], "CSAS_BIG_ORDERS_90", "{v}");
    assert_eq!(queries[0]["state"], "BROKEN", "{v}");
    // The rest is served.
    assert_eq!(query_rows(&p.sql, "SELECT id FROM orders;").len(), 3);
    // The broken name is neither served nor silently replaced.
    for sql in ["DESCRIBE big_orders;", csas] {
        let (status, v) = ksql(&p.sql, sql);
        assert_eq!(status, 400, "{sql}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("BROKEN"),
            "{sql}: {v}"
        );
    }
    ksql_ok(&p.sql, "DROP STREAM big_orders;");
    let v = ksql_ok(&p.sql, "SHOW STREAMS;");
    assert_eq!(v[0]["streams"].as_array().unwrap().len(), 1, "{v}");
    let v = ksql_ok(&p.sql, csas);
    let id = v[0]["commandStatus"]["queryId"].as_str().unwrap();
    assert_ne!(id, "CSAS_BIG_ORDERS_90", "{v}");
}

/// A persistent query that cannot start again after a restart (here: its command, rewritten in the command
/// topic, names a column its source does not have, as a definition written by another version might) is ERROR
/// with the reason in SHOW QUERIES and EXPLAIN's queryErrors; it was ERROR with no reason anywhere but the
/// server's log.
#[test]
fn a_query_that_cannot_start_again_after_a_restart_says_why() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (server, a) = sql_server(&broker.bootstrap, &[]);
    ksql_ok(
        &a,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let v = ksql_ok(
        &a,
        "CREATE TABLE per_item AS SELECT item, COUNT(*) AS n FROM orders GROUP BY item;",
    );
    let id = v[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    drop(server);
    // The table's latest command, with its query's SQL grouping by a column ORDERS lacks.
    let out = fjord(
        &broker.bootstrap,
        &[
            "consume",
            "_fjord_sql_commands",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
        ],
        None,
    );
    ok(&out);
    let mut def: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["key"] == "PER_ITEM")
        .and_then(|r| serde_json::from_str(r["value"].as_str()?).ok())
        .unwrap_or_else(|| panic!("no command for PER_ITEM"));
    def["query"]["sql"] =
        json!("CREATE TABLE per_item AS SELECT item, COUNT(*) AS n FROM orders GROUP BY nosuch");
    client(&[
        "produce-raw",
        &broker.bootstrap,
        "_fjord_sql_commands",
        "PER_ITEM",
        &def.to_string(),
    ]);
    let (_server, a) = sql_server(&broker.bootstrap, &[]);
    let v = ksql_ok(&a, "SHOW QUERIES;");
    let q = v[0]["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {v}"))
        .clone();
    assert_eq!(q["state"], "ERROR", "{v}");
    let reason = q["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason: {v}"));
    assert!(
        reason.contains("could not start again") && reason.to_uppercase().contains("NOSUCH"),
        "{reason}"
    );
    let v = ksql_ok(&a, &format!("EXPLAIN {id};"));
    let errors = &v[0]["queryDescription"]["queryErrors"];
    assert_eq!(errors[0]["errorMessage"].as_str(), Some(reason), "{v}");
}

/// `fjord sql-server` alone against a broker, with `extra` arguments; (the server, its REST address).
fn sql_server(bootstrap: &str, extra: &[&str]) -> (KillOnDrop, String) {
    let mut server = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["sql-server", "-b", bootstrap, "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("fjord sql-server ready line");
    assert!(line.starts_with("fjord sql-server ready"), "{line}");
    let a = field(&line, "listen=").to_string();
    (server, a)
}

/// A push query whose client stops reading (its socket buffers full) no longer holds its thread, consumer and
/// slot for ever: after --push-stall-timeout-ms without taking a row it ends, and a client that reads again
/// gets the rows it had left, the reason, and the end of the answer. With the old `blocking_send` the query
/// went on as soon as the client read again and never ended.
#[test]
fn a_push_query_whose_client_stops_reading_is_ended_and_says_why() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (_server, a) = sql_server(&broker.bootstrap, &["--push-stall-timeout-ms", "2000"]);
    // Without a registry, the registry formats are refused with what to do.
    for sql in [
        "CREATE STREAM av (x INT) WITH (kafka_topic='av', value_format='AVRO', partitions=1);",
        "CREATE STREAM av WITH (kafka_topic='av', value_format='JSON_SR', partitions=1);",
    ] {
        let (status, v) = ksql(&a, sql);
        assert_eq!(status, 400, "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("--registry-url"),
            "{v}"
        );
    }

    ksql_ok(
        &a,
        "CREATE STREAM big (v STRING) WITH (kafka_topic='big', value_format='JSON', partitions=1);",
    );
    // 30 MB of rows: more than the socket buffers and the query's queue hold.
    client(&["produce-big", &broker.bootstrap, "big", "3000", "10000"]);
    let body = json!({"ksql": "SELECT v FROM big EMIT CHANGES;", "streamsProperties": {"auto.offset.reset": "earliest"}}).to_string();
    let mut s = std::net::TcpStream::connect(&a).unwrap();
    write!(
        s,
        "POST /query HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 1024];
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let n = s.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    // The client stops reading for longer than the stall timeout.
    std::thread::sleep(Duration::from_secs(8));
    // Then reads again: the answer ends (the server closes the connection) within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        assert!(
            Instant::now() < deadline,
            "the push query of a stalled client did not end ({} bytes read after the stall)",
            raw.len()
        );
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "no end of the answer 5 s after the client read again ({} bytes)",
                    raw.len()
                )
            }
            Err(e) => panic!("{e}"),
        }
    }
    let tail = String::from_utf8_lossy(&raw[raw.len().saturating_sub(400)..]).to_string();
    assert!(tail.contains("read no row for 2 s"), "{tail}");
    assert!(tail.ends_with("0\r\n\r\n"), "{tail}");
    let rows = raw.windows(6).filter(|w| w == b"\"row\":").count();
    assert!(
        rows < 3000,
        "all {rows} rows were sent to a client that did not read"
    );
}

/// AVRO through the schema registry, with Confluent's own client on both sides: records written by
/// confluent-kafka's AvroSerializer are read by a stream whose columns come from the subject's latest schema,
/// queried with SQL, and a CREATE STREAM AS SELECT with VALUE_FORMAT='AVRO' registers its output schema and
/// writes records AvroDeserializer reads back. JSON_SR round-trips through the registry too.
#[test]
fn avro_from_confluents_serializer_is_queried_and_written_back_for_its_deserializer() {
    let dir = temp_dir();
    let (p, registry) = start_with_registry(dir.path());
    let url = format!("http://{registry}");
    client(&["produce-avro", &p.kafka, &url, "products", "6"]);

    // The columns come from products-value.
    ksql_ok(
        &p.sql,
        "CREATE STREAM products WITH (kafka_topic='products', value_format='AVRO');",
    );
    let d = ksql_ok(&p.sql, "DESCRIBE products;");
    let fields: Vec<String> = d[0]["sourceDescription"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["name"].as_str().unwrap(),
                f["schema"]["type"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            "SKU STRING",
            "PRICE DOUBLE",
            "QTY INTEGER",
            "TAGS ARRAY<STRING>"
        ],
        "{d}"
    );
    let rows = query_rows(
        &p.sql,
        "SELECT sku, price * qty AS total, tags FROM products WHERE qty >= 4;",
    );
    assert_eq!(
        rows,
        vec![
            json!(["sku-4", 24.0, ["t4"]]),
            json!(["sku-5", 37.5, ["t5"]])
        ]
    );

    ksql_ok(
        &p.sql,
        "CREATE STREAM rich WITH (value_format='AVRO') AS SELECT sku, price * qty AS total, tags FROM products WHERE qty >= 4;",
    );
    let out = client(&["read-avro", &p.kafka, &url, "RICH", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"sku-4	{"SKU": "sku-4", "TAGS": ["t4"], "TOTAL": 24.0}"#,
            r#"sku-5	{"SKU": "sku-5", "TAGS": ["t5"], "TOTAL": 37.5}"#,
        ],
        "{out}"
    );

    // INSERT writes with the producer's (latest) schema, and says which field it cannot fill.
    let (status, v) = ksql(
        &p.sql,
        "INSERT INTO products (sku, price, qty) VALUES ('sku-9', 2.0, 9);",
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("tags"), "{v}");

    // JSON_SR: a query's output registers a JSON Schema, and a stream reads its columns back from it.
    ksql_ok(
        &p.sql,
        "CREATE STREAM js WITH (value_format='JSON_SR') AS SELECT sku, qty FROM products;",
    );
    ksql_ok(
        &p.sql,
        "CREATE STREAM js_back WITH (kafka_topic='JS', value_format='JSON_SR');",
    );
    let d = ksql_ok(&p.sql, "DESCRIBE js_back;");
    let qty = d[0]["sourceDescription"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "QTY")
        .unwrap_or_else(|| panic!("{d}"));
    assert_eq!(qty["schema"]["type"], "INTEGER", "{d}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = query_rows(&p.sql, "SELECT sku, qty FROM js_back WHERE qty = 3;");
        if !rows.is_empty() {
            assert_eq!(rows, vec![json!(["sku-3", 3])]);
            break;
        }
        assert!(Instant::now() < deadline, "JS has no row with qty 3");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// JSON_SR as real producers register it: confluent-kafka's JSONSerializer writes records with a schema whose
/// properties are `$ref`s to its own `definitions` (also as an array's items), Confluent's nullable `oneOf` of
/// null and a type, and a `$ref` to another subject's schema through the schema's references. A stream without
/// columns infers them all (DESCRIBE) and a query reads the values, nulls included. Before, the `$ref`s had "no
/// `type`" and CREATE STREAM was refused (checked with the binary built before the fix). Then aggregations of it
/// into tables in each registry format (see below).
#[test]
fn json_sr_columns_are_inferred_through_refs_references_and_nullable_one_ofs() {
    let dir = temp_dir();
    let (p, registry) = start_with_registry(dir.path());
    let url = format!("http://{registry}");
    client(&["produce-json-sr", &p.kafka, &url, "orders", "4"]);

    ksql_ok(
        &p.sql,
        "CREATE STREAM orders WITH (kafka_topic='orders', value_format='JSON_SR');",
    );
    assert_eq!(
        described(&p.sql, "orders"),
        [
            "AMOUNT DOUBLE",
            "ID STRING",
            "ITEM STRUCT<`QTY` INTEGER, `SKU` STRING>",
            "LINES ARRAY<STRUCT<`QTY` INTEGER, `SKU` STRING>>",
            "NOTE STRING",
            "SHIP_TO STRUCT<`CITY` STRING, `ZIP` INTEGER>",
            "SHOP STRING",
        ]
    );
    let rows = query_rows(
        &p.sql,
        "SELECT id, amount, item, lines[1] AS line, note, ship_to FROM orders WHERE amount >= 2.5;",
    );
    assert_eq!(
        rows,
        vec![
            json!(["o-1", 2.5, {"QTY": 1, "SKU": "sku-1"}, {"QTY": 11, "SKU": "l1"}, null, null]),
            json!(["o-2", 5.0, {"QTY": 2, "SKU": "sku-2"}, {"QTY": 12, "SKU": "l2"}, "note 2", {"CITY": "c2", "ZIP": 1002}]),
            json!(["o-3", 7.5, {"QTY": 3, "SKU": "sku-3"}, {"QTY": 13, "SKU": "l3"}, null, {"CITY": "c3", "ZIP": 1003}]),
        ]
    );

    // An aggregation's table in each registry format (ksqlDB allows them): its schema registered under
    // <TABLE>-value, its rows written in the wire format, read back by SQL through a stream over the table's topic
    // (columns from the registered schema), and the AVRO one by confluent-kafka's AvroDeserializer. Before, such
    // a table was refused ("an aggregation's table in that VALUE_FORMAT"); and then the value schema registered at
    // CREATE held the key column, so the query's own (without it) was refused as incompatible for PROTOBUF.
    let want = vec![json!(["s0", 2, 5.0]), json!(["s1", 2, 10.0])];
    for format in ["AVRO", "PROTOBUF", "JSON_SR"] {
        let table = format!("per_shop_{}", format.to_lowercase());
        ksql_ok(
            &p.sql,
            &format!(
                "CREATE TABLE {table} WITH (value_format='{format}') AS \
                 SELECT shop, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY shop EMIT CHANGES;"
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut got = query_rows(&p.sql, &format!("SELECT shop, n, total FROM {table};"));
            got.sort_by_key(|r| r[0].to_string());
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{table}: {got:?}; {}",
                ksql_ok(&p.sql, "SHOW QUERIES;")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let topic = table.to_uppercase();
        ksql_ok(
            &p.sql,
            &format!(
                "CREATE STREAM {table}_back WITH (kafka_topic='{topic}', value_format='{format}');"
            ),
        );
        assert_eq!(
            described(&p.sql, &format!("{table}_back")),
            ["N BIGINT", "TOTAL DOUBLE"],
            "{format}"
        );
        await_rows(
            &p.sql,
            &format!("SELECT n, total FROM {table}_back WHERE n = 2;"),
            |rows| {
                let mut got = rows.to_vec();
                got.sort_by(|a, b| a[1].as_f64().partial_cmp(&b[1].as_f64()).unwrap());
                got == [json!([2, 5.0]), json!([2, 10.0])]
            },
        );
    }
    // With an AVRO key too: the key column is written with the key schema registered under <TABLE>-key.
    ksql_ok(
        &p.sql,
        "CREATE TABLE per_shop_keyed WITH (key_format='AVRO', value_format='AVRO') AS \
         SELECT shop, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY shop EMIT CHANGES;",
    );
    ksql_ok(
        &p.sql,
        "CREATE STREAM per_shop_keyed_back WITH (kafka_topic='PER_SHOP_KEYED', key_format='AVRO', value_format='AVRO');",
    );
    let rows = await_rows(
        &p.sql,
        "SELECT * FROM per_shop_keyed_back WHERE n = 2;",
        |rows| rows.len() == 2,
    );
    let mut rows: Vec<String> = rows.iter().map(Value::to_string).collect();
    rows.sort();
    assert_eq!(rows, [r#"["s0",2,5.0]"#, r#"["s1",2,10.0]"#]);
    let out = client(&["read-avro", &p.kafka, &url, "PER_SHOP_AVRO", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        r#"s0	{"N": 2, "TOTAL": 5.0}"#,
        r#"s1	{"N": 2, "TOTAL": 10.0}"#,
    ] {
        assert!(lines.contains(&want), "{want} not in {out}");
    }
}

// ---- Stateful queries: aggregations, windows, EMIT FINAL, pull queries, restart ----

const TUMBLE: i64 = 10_000;
const HOP: i64 = 10_000;
const ADVANCE: i64 = 5_000;
const GAP: i64 = 3_000;
const GRACE: i64 = 5_000;

/// One click: user, page, price, event time.
type Click = (String, String, f64, i64);

/// A deterministic clickstream over one partition: mostly increasing times with jitter (out of order within
/// the grace period), every 17th record far behind (beyond grace for windows: dropped), prices in halves (exact
/// sums), and a last record far ahead of the rest that closes every earlier window.
fn clicks(t0: i64, n: usize) -> Vec<Click> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for i in 0..n {
        let user = format!("u{}", next() % 5);
        let page = format!("p{}", next() % 4);
        let price = (next() % 20) as f64 * 0.5;
        let mut ts = t0 + i as i64 * 150 - (next() % 3_000) as i64;
        if i % 17 == 16 {
            ts -= 12_000 + (next() % 10_000) as i64;
        }
        out.push((user, page, price, ts));
    }
    let last = out.iter().map(|c| c.3).max().unwrap();
    out.push(("zz".into(), "p0".into(), 1.0, last + 60_000));
    out
}

#[derive(Default, Debug)]
struct Agg {
    n: i64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Agg {
    fn add(&mut self, price: f64) {
        if self.n == 0 {
            self.min = price;
            self.max = price;
        }
        self.n += 1;
        self.sum += price;
        self.min = self.min.min(price);
        self.max = self.max.max(price);
    }
}

/// What the queries must give, computed here from the documented rules (one partition: stream time is the
/// largest event time so far; a time window [s, e) takes a record while e + grace > stream time; a session
/// takes it while its merged last time + grace >= stream time; EMIT FINAL emits a window once e + grace <=
/// stream time).
#[derive(Default)]
struct Want {
    totals: std::collections::BTreeMap<String, (Agg, std::collections::BTreeSet<String>, String)>,
    pages: std::collections::BTreeMap<String, i64>,
    tumbling: std::collections::BTreeMap<(String, i64), Agg>,
    hopping_final: std::collections::BTreeMap<(String, i64), i64>,
    sessions: std::collections::BTreeMap<(String, i64, i64), i64>,
    late_tumbling: u64,
    late_hopping: u64,
    late_sessions: u64,
}

fn want(clicks: &[Click]) -> Want {
    let mut w = Want::default();
    let mut stream_time = i64::MIN;
    let mut hopping: std::collections::BTreeMap<(String, i64), i64> = Default::default();
    let mut sessions: std::collections::BTreeMap<String, Vec<(i64, i64, i64)>> = Default::default();
    for (user, page, price, ts) in clicks {
        let ts = *ts;
        stream_time = stream_time.max(ts);
        let t = w.totals.entry(user.clone()).or_default();
        t.0.add(*price);
        t.1.insert(page.clone());
        t.2 = page.clone();
        *w.pages.entry(page.clone()).or_default() += 1;
        let s = ts - ts % TUMBLE;
        if s + TUMBLE + GRACE > stream_time {
            w.tumbling.entry((user.clone(), s)).or_default().add(*price);
        } else {
            w.late_tumbling += 1;
        }
        let mut any = false;
        let mut s = ts - ts % ADVANCE;
        while s > ts - HOP {
            if s + HOP + GRACE > stream_time {
                *hopping.entry((user.clone(), s)).or_default() += 1;
                any = true;
            }
            s -= ADVANCE;
        }
        if !any {
            w.late_hopping += 1;
        }
        let list = sessions.entry(user.clone()).or_default();
        let (over, mut rest): (Vec<_>, Vec<_>) = list
            .iter()
            .copied()
            .partition(|(a, b, _)| a - GAP <= ts && ts <= b + GAP);
        let first = over.iter().map(|x| x.0).chain([ts]).min().unwrap();
        let last = over.iter().map(|x| x.1).chain([ts]).max().unwrap();
        if last + GRACE >= stream_time {
            rest.push((first, last, over.iter().map(|x| x.2).sum::<i64>() + 1));
            *list = rest;
        } else {
            w.late_sessions += 1;
        }
    }
    for ((user, s), n) in hopping {
        if s + HOP + GRACE <= stream_time {
            w.hopping_final.insert((user, s), n);
        }
    }
    for (user, list) in sessions {
        for (a, b, n) in list {
            w.sessions.insert((user.clone(), a, b), n);
        }
    }
    w
}

fn insert_clicks(addr: &str, clicks: &[Click]) {
    for chunk in clicks.chunks(100) {
        let sql: String = chunk
            .iter()
            .map(|(u, p, price, ts)| {
                format!("INSERT INTO clicks (userid, page, price, ROWTIME) VALUES ('{u}', '{p}', {price:.1}, {ts});\n")
            })
            .collect();
        ksql_ok(addr, &sql);
    }
}

/// A query's statistics (DESCRIBE ... EXTENDED).
fn stats(addr: &str, table: &str) -> Value {
    let d = ksql_ok(addr, &format!("DESCRIBE EXTENDED {table};"));
    d[0]["sourceDescription"]["statistics"].clone()
}

/// Waits (90 s at most) until every query has read `n` records.
fn await_read(addr: &str, tables: &[&str], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    for t in tables {
        loop {
            let s = stats(addr, t);
            if s["recordsIn"].as_u64() == Some(n) {
                break;
            }
            assert!(Instant::now() < deadline, "{t} read {s}, expected {n}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits (at most 30 s) until `table`'s query statistic `key` equals `want`: a query counts a record it read
/// (`recordsIn`) before it has finished with it, so a late record's drop can be counted a moment after.
fn await_stat(addr: &str, table: &str, key: &str, want: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(addr, table);
        if s[key].as_u64() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {table} {key} is {}, expected {want}: {s}",
            s[key]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rows equal up to floating-point rounding in the JSON text (AVG).
fn same_rows(got: &[Value], want: &[Value]) -> bool {
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-9
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            _ => a == b,
        }
    }
    got.len() == want.len() && got.iter().zip(want).all(|(a, b)| same(a, b))
}

/// Polls a pull query (90 s at most) until `check` accepts its rows; returns them.
fn await_rows(addr: &str, sql: &str, mut check: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = query_rows(addr, sql);
        if check(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{sql}: {rows:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn totals_rows(w: &Want) -> Vec<Value> {
    w.totals
        .iter()
        .map(|(u, (a, pages, last))| {
            json!([
                u,
                a.n,
                a.sum,
                a.sum / a.n as f64,
                a.min,
                a.max,
                pages.len(),
                last
            ])
        })
        .collect()
}

/// Every record of `topic` (one partition) as (key, value) with librdkafka, to its current end.
fn read_topic(kafka: &str, topic: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    read_partition(kafka, topic, 0)
}

/// Every record of one partition of `topic` (librdkafka): (key, value).
fn read_partition(kafka: &str, topic: &str, partition: i32) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", "sql-test-raw")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (lo, hi) = c
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(lo))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pos = lo;
    while pos < hi {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: at {pos} of {hi}"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            pos = m.offset() + 1;
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

#[test]
fn windowed_aggregations_by_sql_equal_the_reference_across_a_restart() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut p = start(&data);
    ksql_ok(
        &p.sql,
        "CREATE STREAM clicks (userid STRING KEY, page STRING, price DOUBLE) \
         WITH (kafka_topic='clicks', value_format='JSON', partitions=1);",
    );
    // A type error in an aggregate is refused with its position, before anything runs.
    let (status, v) = ksql(
        &p.sql,
        "CREATE TABLE bad AS SELECT userid,\n  SUM(page) AS s FROM clicks GROUP BY userid;",
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        (v["line"].as_u64(), v["column"].as_u64()),
        (Some(2), Some(3)),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("needs a number"),
        "{v}"
    );

    let queries = [
        ("totals", "CREATE TABLE totals AS SELECT userid, COUNT(*) AS n, SUM(price) AS s, AVG(price) AS a, \
                    MIN(price) AS lo, MAX(price) AS hi, COUNT_DISTINCT(page) AS d, LATEST_BY_OFFSET(page) AS last \
                    FROM clicks GROUP BY userid;"),
        ("pages", "CREATE TABLE pages AS SELECT page, COUNT(*) AS n FROM clicks GROUP BY page;"),
        ("tumbling", "CREATE TABLE tumbling AS SELECT userid, COUNT(*) AS n, SUM(price) AS s, MIN(price) AS lo, \
                      MAX(price) AS hi, AVG(price) AS a FROM clicks \
                      WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 5 SECONDS) GROUP BY userid EMIT CHANGES;"),
        ("hopping", "CREATE TABLE hopping AS SELECT userid, COUNT(*) AS n FROM clicks \
                     WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 5 SECONDS, GRACE PERIOD 5 SECONDS) \
                     GROUP BY userid EMIT FINAL;"),
        ("sessions", "CREATE TABLE sessions AS SELECT userid, COUNT(*) AS n FROM clicks \
                      WINDOW SESSION (3 SECONDS, GRACE PERIOD 5 SECONDS) GROUP BY userid;"),
    ];
    for (_, q) in queries {
        let v = ksql_ok(&p.sql, q);
        assert!(
            v[0]["commandStatus"]["queryId"]
                .as_str()
                .unwrap()
                .starts_with("CTAS_"),
            "{v}"
        );
    }
    let names: Vec<&str> = queries.iter().map(|q| q.0).collect();
    // Event times near now (a topic's time-based retention judges records by their timestamps), on a minute.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - now % 60_000 - 3_600_000;
    let all = clicks(t0, 300);
    let (first, second) = all.split_at(150);
    insert_clicks(&p.sql, first);
    await_read(&p.sql, &names, first.len() as u64);
    let w1 = want(first);
    await_rows(&p.sql, "SELECT * FROM totals;", |r| {
        same_rows(r, &totals_rows(&w1))
    });
    await_stat(
        &p.sql,
        "tumbling",
        "lateRecordsDropped",
        w1.late_tumbling,
        "first half",
    );
    assert!(w1.late_tumbling > 0 && w1.late_hopping > 0 && w1.late_sessions > 0);

    // Restart the platform mid-stream: the queries come back from the command topic, restore their stores
    // from the changelogs and go on from their committed offsets.
    interrupt(&mut p.child);
    let p = start(&data);
    insert_clicks(&p.sql, second);
    await_read(&p.sql, &names, second.len() as u64);
    let w = want(&all);
    let w2_late = w.late_tumbling - w1.late_tumbling;
    let rows = await_rows(&p.sql, "SELECT * FROM totals;", |r| {
        same_rows(r, &totals_rows(&w))
    });
    assert_eq!(rows.len(), 6);
    await_stat(
        &p.sql,
        "tumbling",
        "lateRecordsDropped",
        w2_late,
        "second half",
    );
    await_stat(
        &p.sql,
        "hopping",
        "lateRecordsDropped",
        w.late_hopping - w1.late_hopping,
        "second half",
    );
    await_stat(
        &p.sql,
        "sessions",
        "lateRecordsDropped",
        w.late_sessions - w1.late_sessions,
        "second half",
    );

    // Pull queries: one key; a repartitioned grouping; windows of a key from a bound on.
    let u3: Vec<Value> = totals_rows(&w)
        .into_iter()
        .filter(|r| r[0] == "u3")
        .collect();
    let got = query_rows(&p.sql, "SELECT * FROM totals WHERE userid = 'u3';");
    assert!(same_rows(&got, &u3), "{got:?} {u3:?}");
    let pages: Vec<Value> = w.pages.iter().map(|(p, n)| json!([p, n])).collect();
    await_rows(&p.sql, "SELECT page, n FROM pages;", |r| r == pages);
    let from = t0 + 20_000;
    let tumbling: Vec<Value> = w
        .tumbling
        .iter()
        .filter(|((u, s), _)| u == "u1" && *s >= from)
        .map(|((u, s), a)| {
            json!([
                u,
                s,
                s + TUMBLE,
                a.n,
                a.sum,
                a.min,
                a.max,
                a.sum / a.n as f64
            ])
        })
        .collect();
    assert!(tumbling.len() >= 2, "{tumbling:?}");
    let got = query_rows(
        &p.sql,
        &format!("SELECT userid, WINDOWSTART, WINDOWEND, n, s, lo, hi, a FROM tumbling WHERE userid = 'u1' AND WINDOWSTART >= {from};"),
    );
    assert!(same_rows(&got, &tumbling), "{got:?}\n{tumbling:?}");
    let sessions: Vec<Value> = w
        .sessions
        .iter()
        .map(|((u, a, b), n)| json!([u, a, b, n]))
        .collect();
    assert_eq!(
        query_rows(
            &p.sql,
            "SELECT userid, WINDOWSTART, WINDOWEND, n FROM sessions;"
        ),
        sessions
    );

    // EMIT FINAL: exactly one row per closed window in the topic, with ksqlDB's windowed key (key, start).
    let want_final: Vec<(String, i64, i64)> = w
        .hopping_final
        .iter()
        .map(|((u, s), n)| (u.clone(), *s, *n))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got: Vec<(String, i64, i64)> = read_topic(&p.kafka, "HOPPING")
            .into_iter()
            .map(|(k, v)| {
                let (u, s) = k.split_at(k.len() - 8);
                let v: Value =
                    serde_json::from_slice(&v.expect("EMIT FINAL writes no tombstones")).unwrap();
                (
                    String::from_utf8(u.to_vec()).unwrap(),
                    i64::from_be_bytes(s.try_into().unwrap()),
                    v["N"].as_i64().unwrap(),
                )
            })
            .collect();
        got.sort();
        if got == want_final {
            break;
        }
        assert!(
            Instant::now() < deadline && got.len() <= want_final.len(),
            "EMIT FINAL rows {got:?}\nexpected {want_final:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // EMIT CHANGES: the latest row per (key, window) in the topic is the final count.
    let mut latest: std::collections::BTreeMap<(String, i64), i64> = Default::default();
    for (k, v) in read_topic(&p.kafka, "TUMBLING") {
        let (u, s) = k.split_at(k.len() - 8);
        let v: Value = serde_json::from_slice(&v.unwrap()).unwrap();
        latest.insert(
            (
                String::from_utf8(u.to_vec()).unwrap(),
                i64::from_be_bytes(s.try_into().unwrap()),
            ),
            v["N"].as_i64().unwrap(),
        );
    }
    let want_latest: std::collections::BTreeMap<(String, i64), i64> =
        w.tumbling.iter().map(|(k, a)| (k.clone(), a.n)).collect();
    assert_eq!(latest, want_latest);
}

/// Produces one record (a tombstone when `value` is `None`) with librdkafka, partitioned like the Java client
/// (murmur2), at time `ts`, and waits for its acknowledgement.
fn produce(kafka: &str, topic: &str, key: &str, value: Option<Value>, ts: i64) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let v = value.map(|v| v.to_string());
    let mut rec = BaseRecord::to(topic).key(key).timestamp(ts);
    if let Some(v) = &v {
        rec = rec.payload(v);
    }
    p.send(rec).map_err(|(e, _)| e).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Every record of every partition of `topic` (the third-party client's `read`): (key, JSON value), sorted.
fn read_json(kafka: &str, topic: &str, n: usize) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = client(&["read", kafka, topic, &n.to_string()])
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), serde_json::from_str(v).unwrap())
        })
        .collect();
    out.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    out
}

fn sorted(mut v: Vec<(&str, Value)>) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = v.drain(..).map(|(k, v)| (k.to_string(), v)).collect();
    out.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    out
}

/// Every row `stream`'s query has written (sorted), once one keyed `key` is among them (90 s at most).
fn rows_through(sql: &str, kafka: &str, stream: &str, key: &str) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = stats(sql, stream)["recordsOut"].as_u64().unwrap_or(0) as usize;
        let rows = read_json(kafka, stream, n);
        if rows.iter().any(|(k, _)| k == key) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{stream}: no row keyed {key} came out: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (90 s at most) until the query writing `stream` has written `n` records.
fn await_written(addr: &str, stream: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = stats(addr, stream);
        if s["recordsOut"].as_u64() == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stream}: {s}, expected {n} written"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An event time an hour ago, on a minute (a topic's time-based retention judges records by their timestamps).
fn an_hour_ago() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now % 60_000 - 3_600_000
}

/// The message of a refused statement.
fn refused(addr: &str, sql: &str) -> String {
    let (status, v) = ksql(addr, sql);
    assert_eq!(status, 400, "{sql}: {v}");
    v["message"].as_str().unwrap().to_string()
}

#[test]
fn stream_table_joins_by_sql_follow_the_table_across_a_restart() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut p = start(&data);
    // Two partitions: the orders are keyed by their id and joined on their customer, so they go through a
    // repartition topic; rows INSERTed into both sides must meet in one partition (murmur2 puts k3 in partition
    // 0 and k6 in 1, librdkafka's default partitioner the other way round).
    ksql_ok(
        &p.sql,
        "CREATE TABLE customers (cid STRING PRIMARY KEY, name STRING, age INT) \
         WITH (kafka_topic='customers', value_format='JSON', partitions=2); \
         CREATE STREAM orders (id STRING KEY, customer STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=2); \
         CREATE TABLE regions (rid STRING PRIMARY KEY, name STRING) \
         WITH (kafka_topic='regions', value_format='JSON', partitions=3);",
    );
    // Joins ksqlDB refuses are refused before anything runs, saying why.
    let e = refused(
        &p.sql,
        "CREATE STREAM bad AS SELECT o.customer, r.name FROM orders o JOIN regions r ON o.customer = r.rid EMIT CHANGES;",
    );
    assert!(
        e.contains("Can't join ORDERS with REGIONS since the number of partitions don't match")
            && e.contains("has 2")
            && e.contains("has 3"),
        "{e}"
    );
    let e = refused(
        &p.sql,
        "CREATE STREAM bad AS SELECT o.customer, c.name FROM orders o JOIN customers c ON o.customer <> c.cid EMIT CHANGES;",
    );
    assert!(e.contains("one equality between the two sources"), "{e}");
    let (status, v) = ksql(
        &p.sql,
        "CREATE STREAM bad AS SELECT o.customer, c.name FROM orders o JOIN customers c ON o.customr = c.cid EMIT CHANGES;",
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("CUSTOMR") && v["line"].is_u64(),
        "{v}"
    );
    let e = refused(
        &p.sql,
        "CREATE STREAM bad AS SELECT o.customer, c.name FROM orders o JOIN customers c ON o.customer = c.name EMIT CHANGES;",
    );
    assert!(e.contains("PRIMARY KEY only"), "{e}");
    // A transient push query with a join is refused with the way to get it.
    let (status, _, raw) = http_request(
        &p.sql,
        "POST",
        "/query",
        "Content-Type: application/json\r\n",
        Some(
            json!({"ksql": "SELECT o.customer, c.name FROM orders o JOIN customers c ON o.customer = c.cid EMIT CHANGES;"})
                .to_string()
                .as_bytes(),
        ),
    );
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("CREATE STREAM ... AS SELECT ... JOIN"),
        "{text}"
    );

    let v = ksql_ok(
        &p.sql,
        "CREATE STREAM enriched AS SELECT o.customer AS cust, o.id, c.name, o.qty FROM orders o \
         JOIN customers c ON o.customer = c.cid WHERE o.qty > 0 EMIT CHANGES;",
    );
    let id = v[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    ksql_ok(
        &p.sql,
        "CREATE STREAM enriched_all AS SELECT o.customer AS cust, o.id, c.name, c.age FROM orders o \
         LEFT JOIN customers c ON o.customer = c.cid EMIT CHANGES;",
    );
    let names = ["enriched", "enriched_all"];
    let t = an_hour_ago();
    ksql_ok(
        &p.sql,
        "INSERT INTO customers (cid, name, age) VALUES ('k3', 'Ann', 40); \
         INSERT INTO customers (cid, name, age) VALUES ('k6', 'Bob', 30);",
    );
    // Each query reads both topics: the table's rows are in its store before the orders come.
    await_read(&p.sql, &names, 2);
    let order = |id: &str, cust: &str, qty: i64, n: i64| {
        format!(
            "INSERT INTO orders (id, customer, qty, ROWTIME) VALUES ('{id}', '{cust}', {qty}, {});",
            t + n
        )
    };
    ksql_ok(
        &p.sql,
        &[
            order("o1", "k3", 1, 1),
            order("o2", "k6", 2, 2),
            order("o3", "c9", 3, 3),
            order("o4", "k3", 0, 4),
        ]
        .concat(),
    );
    // Joined (after the repartition topic) before the table changes.
    await_written(&p.sql, "enriched", 2);
    await_written(&p.sql, "enriched_all", 4);
    // A table update changes later joins; a tombstone removes the key.
    ksql_ok(
        &p.sql,
        "INSERT INTO customers (cid, name, age) VALUES ('k3', 'Ann2', 41);",
    );
    produce(&p.kafka, "customers", "k6", None, t);
    await_read(&p.sql, &names, 8);
    ksql_ok(
        &p.sql,
        &[order("o5", "k3", 5, 5), order("o6", "k6", 6, 6)].concat(),
    );
    await_written(&p.sql, "enriched", 3);
    await_written(&p.sql, "enriched_all", 6);
    let inner = vec![
        ("k3", json!({"ID": "o1", "NAME": "Ann", "QTY": 1})),
        ("k6", json!({"ID": "o2", "NAME": "Bob", "QTY": 2})),
        ("k3", json!({"ID": "o5", "NAME": "Ann2", "QTY": 5})),
    ];
    assert_eq!(read_json(&p.kafka, "ENRICHED", 3), sorted(inner.clone()));
    let left = vec![
        ("k3", json!({"ID": "o1", "NAME": "Ann", "AGE": 40})),
        ("k6", json!({"ID": "o2", "NAME": "Bob", "AGE": 30})),
        ("c9", json!({"ID": "o3", "NAME": null, "AGE": null})),
        ("k3", json!({"ID": "o4", "NAME": "Ann", "AGE": 40})),
        ("k3", json!({"ID": "o5", "NAME": "Ann2", "AGE": 41})),
        ("k6", json!({"ID": "o6", "NAME": null, "AGE": null})),
    ];
    assert_eq!(read_json(&p.kafka, "ENRICHED_ALL", 6), sorted(left.clone()));

    // SHOW QUERIES and EXPLAIN show the join.
    let v = ksql_ok(&p.sql, &format!("SHOW QUERIES; EXPLAIN {id};"));
    let q = v[0]["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {v}"));
    assert_eq!(q["state"], "RUNNING", "{q}");
    let d = &v[1]["queryDescription"];
    assert_eq!(d["sources"], json!(["ORDERS", "CUSTOMERS"]), "{d}");
    let plan = d["executionPlan"].as_str().unwrap();
    assert!(
        plan.contains("JOIN") && plan.contains("Repartition: ORDERS"),
        "{plan}"
    );

    // An upgrade cannot reuse a join's stores and offsets for another shape of query.
    let e = refused(
        &p.sql,
        "CREATE OR REPLACE STREAM enriched_all AS SELECT o.id, o.customer FROM orders o EMIT CHANGES;",
    );
    assert!(e.contains("changes a join"), "{e}");

    // Restart: the join queries come back, the table from its changelog, the orders from the committed offsets.
    interrupt(&mut p.child);
    let p = start(&data);
    ksql_ok(
        &p.sql,
        &[order("o7", "k3", 7, 7), order("o8", "k6", 8, 8)].concat(),
    );
    await_written(&p.sql, "enriched_all", 2);
    await_written(&p.sql, "enriched", 1);
    let mut inner = inner;
    inner.push(("k3", json!({"ID": "o7", "NAME": "Ann2", "QTY": 7})));
    assert_eq!(read_json(&p.kafka, "ENRICHED", 4), sorted(inner));
    let mut left = left;
    left.push(("k3", json!({"ID": "o7", "NAME": "Ann2", "AGE": 41})));
    left.push(("k6", json!({"ID": "o8", "NAME": null, "AGE": null})));
    assert_eq!(read_json(&p.kafka, "ENRICHED_ALL", 8), sorted(left));

    // Dropping the stream terminates its query and removes its group and internal topics.
    let app = format!("_fjord_sql_{id}");
    let leftovers = || {
        let topics = fjord(&p.kafka, &["topics", "list"], None);
        let groups = fjord(&p.kafka, &["groups", "list"], None);
        let mut found: Vec<String> = [topics, groups]
            .iter()
            .flat_map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.contains(&app))
            .collect();
        found.sort();
        found
    };
    let before = leftovers();
    assert!(
        before.iter().any(|l| l.contains("-joinleft-repartition"))
            && before.iter().any(|l| l.contains("-table-changelog")),
        "{before:?}"
    );
    ksql_ok(&p.sql, "DROP STREAM enriched DELETE TOPIC;");
    let after = leftovers();
    assert!(
        after.is_empty(),
        "left behind by the dropped join: {after:?}"
    );
}

#[test]
fn windowed_stream_stream_joins_by_sql_pair_records_within_the_window() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let p = start(&data);
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1); \
         CREATE STREAM shipments (sid STRING KEY, order_id STRING, warehouse STRING) \
         WITH (kafka_topic='shipments', value_format='JSON', partitions=1);",
    );
    let e = refused(
        &p.sql,
        "CREATE STREAM bad AS SELECT o.id, s.warehouse FROM orders o JOIN shipments s ON o.id = s.order_id EMIT CHANGES;",
    );
    assert!(e.contains("needs a WITHIN"), "{e}");
    ksql_ok(
        &p.sql,
        "CREATE STREAM shipped AS SELECT o.id, o.item, s.sid, s.warehouse FROM orders o \
         JOIN shipments s WITHIN 1 MINUTE GRACE PERIOD 1 HOUR ON o.id = s.order_id EMIT CHANGES;",
    );
    let t = an_hour_ago();
    let order = |id: &str, item: &str, at: i64| {
        format!(
            "INSERT INTO orders (id, item, ROWTIME) VALUES ('{id}', '{item}', {});",
            t + at
        )
    };
    let ship = |sid: &str, oid: &str, wh: &str, at: i64| {
        format!(
            "INSERT INTO shipments (sid, order_id, warehouse, ROWTIME) VALUES ('{sid}', '{oid}', '{wh}', {});",
            t + at
        )
    };
    // o1 is shipped twice within the minute (before and after the order) and once too late; o2 too early;
    // o3 never; s4 ships an order that does not exist.
    ksql_ok(
        &p.sql,
        &[
            order("o1", "pen", 0),
            order("o2", "ink", 0),
            order("o3", "cap", 0),
            ship("s1", "o1", "w1", 30_000),
            ship("s2", "o1", "w2", -60_000),
            ship("s3", "o1", "w3", 61_000),
            ship("s4", "o9", "w1", 1_000),
            ship("s5", "o2", "w1", -70_000),
        ]
        .concat(),
    );
    await_read(&p.sql, &["shipped"], 8);
    let want = vec![
        ("o1", json!({"ITEM": "pen", "SID": "s1", "WAREHOUSE": "w1"})),
        ("o1", json!({"ITEM": "pen", "SID": "s2", "WAREHOUSE": "w2"})),
    ];
    assert_eq!(read_json(&p.kafka, "SHIPPED", 2), sorted(want));
}

/// The entry of query `id` in SHOW QUERIES (over REST).
fn show_query(addr: &str, id: &str) -> Value {
    let v = ksql_ok(addr, "SHOW QUERIES;");
    v[0]["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {v}"))
        .clone()
}

/// Waits (`secs` at most) until SHOW QUERIES shows query `id` in `state`; returns its entry.
fn await_state(addr: &str, id: &str, state: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let q = show_query(addr, id);
        if q["state"] == state {
            return q;
        }
        assert!(Instant::now() < deadline, "{id} is not {state}: {q}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An aggregation whose task fails at run time (its output topic refuses its rows) shows ERROR in SHOW QUERIES
/// and EXPLAIN with what happened, keeps being restarted, and is RUNNING again with the right totals once the
/// cause is gone. It showed RUNNING throughout before.
#[test]
fn an_aggregation_that_fails_at_run_time_shows_error_and_runs_again_once_the_cause_is_gone() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let v = ksql_ok(
        &p.sql,
        "CREATE TABLE per_item AS SELECT item, COUNT(*) AS n, SUM(qty) AS total FROM orders GROUP BY item;",
    );
    let id = v[0]["commandStatus"]["queryId"]
        .as_str()
        .unwrap()
        .to_string();
    let insert = |i: i64| {
        ksql_ok(
            &p.sql,
            &format!(
                "INSERT INTO orders (id, item, qty) VALUES ('o{i}', '{}', {i});",
                ["a", "b"][i as usize % 2]
            ),
        );
    };
    for i in 0..4 {
        insert(i);
    }
    await_rows(&p.sql, "SELECT item, n, total FROM per_item;", |r| {
        r.len() == 2 && r.iter().all(|x| x[1] == 2)
    });
    assert_eq!(show_query(&p.sql, &id)["state"], "RUNNING");

    ok(&fjord(
        &p.kafka,
        &[
            "configs",
            "alter",
            "--topic",
            "PER_ITEM",
            "--add-config",
            "max.message.bytes=10",
        ],
        None,
    ));
    insert(4);
    let q = await_state(&p.sql, &id, "ERROR", 60);
    let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
    assert!(
        reason.contains("PER_ITEM") && reason.to_lowercase().contains("too large"),
        "{reason}"
    );
    assert_eq!(q["statusCount"]["ERROR"], 1, "{q}");
    let e = ksql_ok(&p.sql, &format!("EXPLAIN {id};"));
    let d = &e[0]["queryDescription"];
    assert_eq!(d["state"], "ERROR", "{e}");
    assert!(
        d["queryErrors"][0]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("PER_ITEM")),
        "{e}"
    );
    let d = ksql_ok(&p.sql, "DESCRIBE per_item;");
    assert_eq!(
        d[0]["sourceDescription"]["writeQueries"][0]["state"], "ERROR",
        "{d}"
    );
    // The restarts fail the same way as long as the cause stays: still ERROR.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(show_query(&p.sql, &id)["state"], "ERROR");
    assert!(stats(&p.sql, "per_item")["restarts"].as_u64() >= Some(1));

    ok(&fjord(
        &p.kafka,
        &[
            "configs",
            "alter",
            "--topic",
            "PER_ITEM",
            "--delete-config",
            "max.message.bytes",
        ],
        None,
    ));
    await_state(&p.sql, &id, "RUNNING", 90);
    let rows = await_rows(&p.sql, "SELECT item, n, total FROM per_item;", |r| {
        r.len() == 2 && r.iter().any(|x| x[1] == 3)
    });
    let mut rows: Vec<String> = rows.iter().map(Value::to_string).collect();
    rows.sort();
    assert_eq!(rows, [r#"["a",3,6]"#, r#"["b",2,4]"#]);
    // The output whose delivery failed is written by the restarted run: the failed run committed neither its
    // input offset nor the state that counted it (the group leave used to commit both, and only the store knew
    // a's third order).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (out, _) = read_committed(&p.kafka, "PER_ITEM");
        if out
            .iter()
            .any(|(k, v)| k == b"a" && v["N"] == 3 && v["TOTAL"] == 6)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PER_ITEM has no row a, 3, 6: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every committed record of every partition of `topic` as (key, JSON value), read with read_committed to each
/// partition's end, and how many offsets the partitions span (records, aborted records, transaction markers).
fn read_committed(kafka: &str, topic: &str) -> (Vec<(Vec<u8>, Value)>, i64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", "sql-test-committed")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!parts.is_empty(), "{topic} has no partitions");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut open: std::collections::BTreeSet<i32> = parts.iter().copied().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: partitions {open:?} never ended"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => out.push((
                m.key().unwrap_or_default().to_vec(),
                serde_json::from_slice(m.payload().unwrap_or(b"null")).unwrap(),
            )),
            None => {}
        }
    }
    // Measured once everything committed was read: before, an exactly-once query's transaction could still be
    // open (its rows counted as written but not yet in the log), and the span came out 0.
    let mut span = 0;
    for p in &parts {
        let (lo, hi) = c
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .unwrap();
        span += hi - lo;
    }
    (out, span)
}

/// `SET 'processing.guarantee'='exactly_once_v2'` makes a stateless query and an aggregation commit their
/// output with their input offsets in transactions. The SQL server is killed with SIGKILL mid-stream and started
/// again: the guarantee was kept with the queries, and read_committed readers see every output once (no
/// duplicate rows, each count of the table emitted at most once, so strictly increasing) and the right totals.
#[test]
fn exactly_once_queries_killed_mid_stream_leave_no_duplicates_for_read_committed_readers() {
    const N: i64 = 100_000;
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (server, a) = sql_server(&broker.bootstrap, &[]);
    ksql_ok(
        &a,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT, price DOUBLE) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=2);",
    );
    client(&["produce", &broker.bootstrap, "orders", "0", &N.to_string()]);
    let v = ksql_ok(
        &a,
        "SET 'processing.guarantee'='exactly_once_v2'; \
         CREATE STREAM even AS SELECT id, qty FROM orders WHERE qty % 2 = 0; \
         CREATE TABLE per_digit AS SELECT qty % 10 AS digit, COUNT(*) AS n FROM orders GROUP BY qty % 10;",
    );
    let ids: Vec<String> = (1..3)
        .map(|i| {
            v[i]["commandStatus"]["queryId"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string()
        })
        .collect();
    // SIGKILL once both have started reading; at least one is mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = loop {
        let r: Vec<u64> = ["even", "per_digit"]
            .iter()
            .map(|t| stats(&a, t)["recordsIn"].as_u64().unwrap_or(0))
            .collect();
        if r.iter().all(|n| *n > 0) {
            break r;
        }
        assert!(Instant::now() < deadline, "the queries read nothing: {r:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(server);
    assert!(
        read.iter().any(|n| *n < N as u64),
        "both queries had read everything before the kill: {read:?}"
    );

    let (_server, a) = sql_server(&broker.bootstrap, &[]);
    for id in &ids {
        let e = ksql_ok(&a, &format!("EXPLAIN {id};"));
        let d = &e[0]["queryDescription"];
        assert_eq!(d["state"], "RUNNING", "{e}");
        assert_eq!(
            d["overriddenProperties"]["processing.guarantee"], "exactly_once_v2",
            "{e}"
        );
        wait_committed(&broker.bootstrap, &format!("_fjord_sql_{id}"), N);
    }

    let (rows, span) = read_committed(&broker.bootstrap, "EVEN");
    let mut keys: Vec<String> = rows
        .iter()
        .map(|(k, v)| {
            let k = String::from_utf8(k.clone()).unwrap();
            let i: i64 = k.trim_start_matches("id-").parse().unwrap();
            assert_eq!(v, &json!({"QTY": i}), "{k}");
            k
        })
        .collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicates in EVEN");
    assert_eq!(n as i64, N / 2, "EVEN has the wrong rows");
    // Transaction markers take offsets: the output was written in transactions.
    assert!(span > n as i64, "EVEN spans {span} offsets for {n} rows");

    // The aggregation reads the orders through a repartition topic: its last transactions may still be
    // committing when the orders' offsets are. Read until the totals are there (bounded).
    let want: std::collections::BTreeMap<i32, i64> = (0..10).map(|d| (d, N / 10)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (rows, _) = read_committed(&broker.bootstrap, "PER_DIGIT");
        let mut last: std::collections::BTreeMap<i32, i64> = Default::default();
        for (k, v) in &rows {
            let digit = i32::from_be_bytes(k.as_slice().try_into().unwrap());
            let n = v["N"].as_i64().unwrap();
            let prev = last.insert(digit, n).unwrap_or(0);
            assert!(
                n > prev,
                "digit {digit}: count {n} after {prev} (a duplicate or a lost update)"
            );
        }
        if last == want {
            break;
        }
        assert!(Instant::now() < deadline, "the table's totals: {last:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The processing guarantee EXPLAIN shows for query `id`.
fn guarantee_of(addr: &str, id: &str) -> String {
    let e = ksql_ok(addr, &format!("EXPLAIN {id};"));
    e[0]["queryDescription"]["overriddenProperties"]["processing.guarantee"]
        .as_str()
        .unwrap_or_else(|| panic!("{e}"))
        .to_string()
}

/// The query id a CREATE ... AS SELECT answered with (the `i`th statement's entity).
fn query_id(v: &Value, i: usize) -> String {
    v[i]["commandStatus"]["queryId"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// CREATE OR REPLACE keeps the replaced query's processing guarantee unless the request states one: an
/// exactly-once query upgraded without repeating the SET stays exactly once (it became at least once, the
/// server's default), and a SET in the upgrading request changes it.
#[test]
fn create_or_replace_keeps_the_replaced_querys_processing_guarantee_unless_one_is_stated() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let v = ksql_ok(
        &p.sql,
        "SET 'processing.guarantee'='exactly_once_v2'; \
         CREATE STREAM even AS SELECT id, qty FROM orders WHERE qty % 2 = 0;",
    );
    let id = query_id(&v, 1);
    assert_eq!(guarantee_of(&p.sql, &id), "exactly_once_v2");
    let v = ksql_ok(
        &p.sql,
        "CREATE OR REPLACE STREAM even AS SELECT id, qty FROM orders WHERE qty % 2 = 0 AND qty > 2;",
    );
    assert_eq!(query_id(&v, 0), id);
    assert_eq!(guarantee_of(&p.sql, &id), "exactly_once_v2");
    ksql_ok(
        &p.sql,
        "SET 'processing.guarantee'='at_least_once'; \
         CREATE OR REPLACE STREAM even AS SELECT id, qty FROM orders WHERE qty % 2 = 0;",
    );
    assert_eq!(guarantee_of(&p.sql, &id), "at_least_once");
    // And an upgrade without a SET keeps that one.
    ksql_ok(
        &p.sql,
        "CREATE OR REPLACE STREAM even AS SELECT id, qty FROM orders WHERE qty % 2 = 0 AND qty > 2;",
    );
    assert_eq!(guarantee_of(&p.sql, &id), "at_least_once");
}

/// `fjord start --processing-guarantee exactly_once_v2` makes it the SQL server's default: a query created
/// without a SET runs exactly once (its output is written in transactions), one with a SET keeps its own, also
/// through CREATE OR REPLACE. A cluster (`--brokers 2`), whose `fjord start` runs no SQL server, refuses the
/// flag.
#[test]
fn fjord_start_sets_the_sql_servers_default_processing_guarantee() {
    let dir = temp_dir();
    let out = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args([
                "start",
                "--brokers",
                "2",
                "--processing-guarantee",
                "exactly_once_v2",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("cluster")),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("single broker"), "{}", stderr(&out));

    let data = dir.path().join("data");
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let (child, line) = start_platform_with_args(
        &data,
        "none",
        "none",
        "127.0.0.1:0",
        &[],
        &["--processing-guarantee", "exactly_once_v2"],
        Stdio::from(log),
    );
    let p = Platform {
        child,
        kafka: field(&line, "kafka=").to_string(),
        sql: field(&line, "sql=").to_string(),
    };
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let v = ksql_ok(
        &p.sql,
        "CREATE STREAM even AS SELECT id, qty FROM orders WHERE qty % 2 = 0;",
    );
    let even = query_id(&v, 0);
    assert_eq!(guarantee_of(&p.sql, &even), "exactly_once_v2");
    let v = ksql_ok(
        &p.sql,
        "SET 'processing.guarantee'='at_least_once'; CREATE STREAM odd AS SELECT id, qty FROM orders WHERE qty % 2 = 1;",
    );
    let odd = query_id(&v, 1);
    assert_eq!(guarantee_of(&p.sql, &odd), "at_least_once");
    ksql_ok(
        &p.sql,
        "CREATE OR REPLACE STREAM odd AS SELECT id, qty FROM orders WHERE qty % 2 = 1 AND qty > 0;",
    );
    assert_eq!(guarantee_of(&p.sql, &odd), "at_least_once");

    for i in 0..4 {
        ksql_ok(
            &p.sql,
            &format!("INSERT INTO orders (id, item, qty) VALUES ('o{i}', 'w', {i});"),
        );
    }
    await_written(&p.sql, "even", 2);
    await_written(&p.sql, "odd", 2);
    // Transaction markers take offsets in EVEN's partition; ODD's has the two rows alone.
    let (rows, span) = read_committed(&p.kafka, "EVEN");
    assert_eq!(rows.len(), 2);
    assert!(
        span > 2,
        "EVEN spans {span} offsets for 2 rows: not written in transactions"
    );
    let (rows, span) = read_committed(&p.kafka, "ODD");
    assert_eq!((rows.len(), span), (2, 2));
}

/// ksqlDB's `ksql.fail.on.deserialization.error`: by default a record that does not decode is skipped and
/// counted (the query goes on); SET to 'true' the query stops at it instead, shows ERROR with the record's
/// position, writes and commits the records before it once (however often it is restarted; exactly once it
/// aborts them) and does not commit past it. (Aggregations and joins:
/// `aggregations_and_joins_stop_at_a_record_that_does_not_decode_when_set` and
/// `at_least_once_aggregations_and_joins_stop_at_a_record_that_does_not_decode_and_count_the_ones_before_once`.)
#[test]
fn a_record_that_does_not_decode_is_skipped_or_stops_the_query_as_set() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let v = ksql_ok(
        &p.sql,
        "CREATE STREAM skipping AS SELECT id, item FROM orders; \
         SET 'ksql.fail.on.deserialization.error'='true'; \
         CREATE STREAM stopping AS SELECT id, item FROM orders; \
         SET 'processing.guarantee'='exactly_once_v2'; \
         CREATE STREAM stopping_eos AS SELECT id, item FROM orders;",
    );
    let (skipping, stopping, stopping_eos) = (query_id(&v, 0), query_id(&v, 2), query_id(&v, 4));
    let e = ksql_ok(&p.sql, &format!("EXPLAIN {stopping};"));
    assert_eq!(
        e[0]["queryDescription"]["overriddenProperties"]["ksql.fail.on.deserialization.error"],
        "true",
        "{e}"
    );
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &p.kafka)
        .create()
        .unwrap();
    for (key, value) in [
        ("a", r#"{"ITEM":"a","QTY":1}"#),
        ("b", "not JSON"),
        ("c", r#"{"ITEM":"c","QTY":3}"#),
    ] {
        producer
            .send(BaseRecord::to("orders").key(key).payload(value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    await_written(&p.sql, "skipping", 2);
    wait_committed(&p.kafka, &format!("_fjord_sql_{skipping}"), 3);
    let s = stats(&p.sql, "skipping");
    assert_eq!(s["processingErrors"].as_u64(), Some(1), "{s}");
    assert_eq!(show_query(&p.sql, &skipping)["state"], "RUNNING");

    let q = await_state(&p.sql, &stopping, "ERROR", 60);
    let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
    assert!(
        reason.contains("offset 1") && reason.contains("does not decode"),
        "{reason}"
    );
    // Restarted (1 s, then 2 s later), it stops at the same record: still ERROR after two restarted runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats(&p.sql, "stopping");
        if s["restarts"].as_u64() >= Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stopping} was not restarted twice: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(show_query(&p.sql, &stopping)["state"], "ERROR");
    // The record before it was written once, and committed with the bad record's own offset: neither past it,
    // nor short of it (each restarted run wrote the batch's earlier records again before).
    let written: Vec<String> = read_topic(&p.kafka, "STOPPING")
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(written, ["a"], "the rows of STOPPING");
    let committed: i64 = client(&[
        "committed",
        &p.kafka,
        &format!("_fjord_sql_{stopping}"),
        "orders",
    ])
    .trim()
    .parse()
    .unwrap();
    assert_eq!(committed, 1, "not committed up to the record");
    // Exactly once, each failed run aborts its batch's transaction instead (the record before the bad one is
    // redone by the next run): read_committed readers see it at most once, and no offset past the bad record
    // is committed.
    assert_eq!(show_query(&p.sql, &stopping_eos)["state"], "ERROR");
    let (rows, _) = read_committed(&p.kafka, "STOPPING_EOS");
    let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    assert!(keys.is_empty() || keys == [b"a"], "{keys:?}");
    let committed: i64 = client(&[
        "committed",
        &p.kafka,
        &format!("_fjord_sql_{stopping_eos}"),
        "orders",
    ])
    .trim()
    .parse()
    .unwrap();
    assert!(committed <= 1, "committed past the record: {committed}");

    let e = refused(&p.sql, "SET 'ksql.fail.on.deserialization.error'='maybe';");
    assert!(e.contains("expected 'true'"), "{e}");
}

/// Exactly once, with `ksql.fail.on.deserialization.error` true an aggregation and a join stop at a record that
/// does not decode as a stateless query does: ERROR with the record's position, restarted and stopped at it
/// again, its offset never committed, and nothing of the records after it counted or joined (read_committed).
/// They were refused the setting before, as the library's group leave committed the failed record's offset in
/// the open transaction (the restarted query went on past it).
#[test]
fn aggregations_and_joins_stop_at_a_record_that_does_not_decode_when_set() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1); \
         CREATE TABLE items (iid STRING PRIMARY KEY, price INT) \
         WITH (kafka_topic='items', value_format='JSON', partitions=1); \
         INSERT INTO items (iid, price) VALUES ('w', 5);",
    );
    let v = ksql_ok(
        &p.sql,
        "SET 'ksql.fail.on.deserialization.error'='true'; \
         SET 'processing.guarantee'='exactly_once_v2'; \
         CREATE TABLE per_item AS SELECT item, COUNT(*) AS n FROM orders GROUP BY item; \
         CREATE STREAM priced AS SELECT o.item, o.id, i.price FROM orders o JOIN items i ON o.item = i.iid;",
    );
    let (per_item, priced) = (query_id(&v, 2), query_id(&v, 3));
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &p.kafka)
        .create()
        .unwrap();
    for (key, value) in [
        ("a", r#"{"ITEM":"w","QTY":1}"#),
        ("b", "not JSON"),
        ("c", r#"{"ITEM":"w","QTY":3}"#),
    ] {
        producer
            .send(BaseRecord::to("orders").key(key).payload(value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    for (id, table) in [(&per_item, "per_item"), (&priced, "priced")] {
        let q = await_state(&p.sql, id, "ERROR", 60);
        let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
        assert!(
            reason.contains("orders partition 0 offset 1") && reason.contains("does not decode"),
            "{table}: {reason}"
        );
        // Restarted (1 s, then 2 s later), it stops at the same record again.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = stats(&p.sql, table);
            if s["restarts"].as_u64() >= Some(3) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{table} was not restarted twice: {s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(show_query(&p.sql, id)["state"], "ERROR", "{table}");
        let committed: i64 =
            client(&["committed", &p.kafka, &format!("_fjord_sql_{id}"), "orders"])
                .trim()
                .parse()
                .unwrap();
        assert!(
            committed <= 1,
            "{table}: committed past the record: {committed}"
        );
    }
    // Record c (after the bad one) was neither counted nor joined.
    let (counts, _) = read_committed(&p.kafka, "PER_ITEM");
    assert!(
        counts.iter().all(|(_, v)| v["N"].as_i64() == Some(1)),
        "{counts:?}"
    );
    let (joined, _) = read_committed(&p.kafka, "PRICED");
    assert!(joined.iter().all(|(_, v)| v["ID"] == "a"), "{joined:?}");
}

/// At least once, with `ksql.fail.on.deserialization.error` true an aggregation (through a repartition topic,
/// and by the source key without one) and a join (on the stream's key) stop at a record that does not decode:
/// ERROR with the record's position, restarted and stopped at it again, and committed up to that record
/// exactly: the records before it are counted and joined once, however often the query is restarted (not sent
/// to the repartition topic again by each restarted run, which would count them again), and the records after
/// it not at all. They were refused the setting before: the library's group leave committed past the failed
/// record.
#[test]
fn at_least_once_aggregations_and_joins_stop_at_a_record_that_does_not_decode_and_count_the_ones_before_once(
) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=1); \
         CREATE TABLE items (iid STRING PRIMARY KEY, price INT) \
         WITH (kafka_topic='items', value_format='JSON', partitions=1); \
         INSERT INTO items (iid, price) VALUES ('a', 5); \
         INSERT INTO items (iid, price) VALUES ('d', 6); \
         INSERT INTO items (iid, price) VALUES ('c', 7);",
    );
    let v = ksql_ok(
        &p.sql,
        "SET 'ksql.fail.on.deserialization.error'='true'; \
         CREATE TABLE per_item AS SELECT item, COUNT(*) AS n, SUM(qty) AS total FROM orders GROUP BY item; \
         CREATE TABLE per_id AS SELECT id, COUNT(*) AS n FROM orders GROUP BY id; \
         CREATE STREAM priced AS SELECT o.id, o.item, i.price FROM orders o JOIN items i ON o.id = i.iid;",
    );
    let (per_item, per_id, priced) = (query_id(&v, 1), query_id(&v, 2), query_id(&v, 3));
    let e = ksql_ok(&p.sql, &format!("EXPLAIN {per_item};"));
    assert_eq!(
        e[0]["queryDescription"]["overriddenProperties"]["processing.guarantee"], "at_least_once",
        "{e}"
    );
    // The join has read the table before the orders come (it processes the two topics in arrival order).
    await_read(&p.sql, &["priced"], 3);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &p.kafka)
        .create()
        .unwrap();
    for (key, value) in [
        ("a", r#"{"ITEM":"w","QTY":1}"#),
        ("d", r#"{"ITEM":"w","QTY":2}"#),
        ("b", "not JSON"),
        ("c", r#"{"ITEM":"w","QTY":4}"#),
    ] {
        producer
            .send(BaseRecord::to("orders").key(key).payload(value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    for (id, table) in [
        (&per_item, "per_item"),
        (&per_id, "per_id"),
        (&priced, "priced"),
    ] {
        let q = await_state(&p.sql, id, "ERROR", 60);
        let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
        assert!(
            reason.contains("orders partition 0 offset 2") && reason.contains("does not decode"),
            "{table}: {reason}"
        );
        // Restarted (1 s, 2 s, then 4 s later), it stops at the same record again.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = stats(&p.sql, table);
            if s["restarts"].as_u64() >= Some(3) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{table} was not restarted three times: {s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(show_query(&p.sql, id)["state"], "ERROR", "{table}");
        let committed: i64 =
            client(&["committed", &p.kafka, &format!("_fjord_sql_{id}"), "orders"])
                .trim()
                .parse()
                .unwrap();
        assert_eq!(
            committed, 2,
            "{table}: committed up to the record that does not decode"
        );
    }
    // The two records before the bad one, counted and joined once each; the one after it not at all.
    // Each row as `key=value[what]`, or for a join's stream `value[ID]=value[what]`.
    let rows = |topic: &str, what: &str| -> Vec<String> {
        let (rows, _) = read_committed(&p.kafka, topic);
        rows.iter()
            .map(|(k, v)| match v["ID"].as_str() {
                Some(id) => format!("{id}={}", v[what]),
                None => format!("{}={}", String::from_utf8_lossy(k), v[what]),
            })
            .collect()
    };
    // The repartitioned count: the two records before the bad one went to the repartition topic once, not again
    // by each restarted run (which would count them again). Its second sub-topology counts them when it gets to
    // read them before the run stops at the bad record (each run stops at once): at most once each.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &p.kafka)
        .create()
        .unwrap();
    let repartition = format!("_fjord_sql_{per_item}-groupby-repartition");
    let (_, high) = c
        .fetch_watermarks(&repartition, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        high, 2,
        "{repartition}: records sent again by restarted runs"
    );
    let n = rows("PER_ITEM", "N");
    assert!(
        n.len() <= 2 && ["w=1", "w=2"][..n.len()] == n[..],
        "PER_ITEM: {n:?}"
    );
    let total = rows("PER_ITEM", "TOTAL");
    assert!(
        total.len() <= 2 && ["w=1", "w=3"][..total.len()] == total[..],
        "PER_ITEM: {total:?}"
    );
    assert_eq!(rows("PER_ID", "N"), ["a=1", "d=1"]);
    assert_eq!(rows("PRICED", "PRICE"), ["a=5", "d=6"]);
}

/// Produces JSON records to explicit partitions in one flush: (partition, key, value).
fn produce_to(kafka: &str, topic: &str, records: &[(i32, &str, Value)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("linger.ms", "50")
        .create()
        .unwrap();
    let texts: Vec<String> = records.iter().map(|(_, _, v)| v.to_string()).collect();
    for ((partition, key, _), text) in records.iter().zip(&texts) {
        p.send(
            BaseRecord::to(topic)
                .partition(*partition)
                .key(*key)
                .payload(text),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Per partition of `topic`: (the end a read_committed reader sees, i.e. the last stable offset; the high
/// watermark).
fn stable_ends(kafka: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client = |isolation: &str| -> BaseConsumer {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka)
            .set("group.id", "sql-test-ends")
            .set("isolation.level", isolation)
            .create()
            .unwrap()
    };
    let (committed, uncommitted) = (client("read_committed"), client("read_uncommitted"));
    (0..partitions)
        .map(|p| {
            let t = Duration::from_secs(10);
            (
                committed.fetch_watermarks(topic, p, t).unwrap().1,
                uncommitted.fetch_watermarks(topic, p, t).unwrap().1,
            )
        })
        .collect()
}

/// Exactly once: a batch that fails mid-transaction (the output topic refuses its row for partition 1, larger
/// than max.message.bytes, after its row for partition 0 was written in the transaction) aborts its
/// transaction at once. The query is terminated while it waits to restart, so no restarted run fences the
/// transaction either: read_committed readers of the output (the partitions' last stable offsets) are at the
/// end within seconds. The failed run used to return with the transaction open, and they waited for the
/// transaction timeout (60 s).
#[test]
fn an_exactly_once_batch_that_fails_aborts_its_transaction_at_once() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (id STRING KEY, item STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=2);",
    );
    let v = ksql_ok(
        &p.sql,
        "SET 'processing.guarantee'='exactly_once_v2'; CREATE STREAM copied AS SELECT id, item FROM orders;",
    );
    let id = v[1]["commandStatus"]["queryId"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let group = format!("_fjord_sql_{id}");
    let row = |item: &str| json!({"ITEM": item, "QTY": 1});
    produce_to(
        &p.kafka,
        "orders",
        &[(0, "a", row("a")), (1, "b", row("b"))],
    );
    wait_committed(&p.kafka, &group, 2);
    let committed_ends = stable_ends(&p.kafka, "COPIED", 2);

    ok(&fjord(
        &p.kafka,
        &[
            "configs",
            "alter",
            "--topic",
            "COPIED",
            "--add-config",
            "max.message.bytes=300",
        ],
        None,
    ));
    produce_to(&p.kafka, "orders", &[(1, "d", row(&"x".repeat(2000)))]);
    let q = await_state(&p.sql, &id, "ERROR", 60);
    let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
    assert!(reason.contains("COPIED"), "{reason}");
    // Every restarted run reads e (partition 0) and d from the committed offsets in one batch: e goes into
    // partition 0 inside the transaction, and d's refusal fails the batch.
    produce_to(&p.kafka, "orders", &[(0, "e", row("e"))]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ends = stable_ends(&p.kafka, "COPIED", 2);
        if ends[0].1 > committed_ends[0].1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed batch wrote row e: {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ksql_ok(&p.sql, &format!("TERMINATE {id};"));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ends = stable_ends(&p.kafka, "COPIED", 2);
        if ends.iter().all(|(lso, hw)| lso == hw) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read_committed readers of COPIED are held back by an open transaction (last stable offset, high watermark): {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rows, _) = read_committed(&p.kafka, "COPIED");
    let keys: Vec<String> = rows
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect();
    assert!(
        keys.starts_with(&["a".to_string(), "b".to_string()])
            || keys.starts_with(&["b".to_string(), "a".to_string()]),
        "{keys:?}"
    );
    assert!(!keys.contains(&"d".to_string()), "{keys:?}");
}

/// LEFT, RIGHT and FULL OUTER joins of two streams WITHIN a window, against a reference computed here from the
/// same generated input: pairs within the window come at once; a record without a partner comes with the
/// other side's NULLs only once its window and grace period have passed (none before), as ksqlDB does since
/// 0.25.
#[test]
fn outer_stream_stream_joins_emit_unmatched_records_once_their_window_closes() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM ls (id STRING KEY, lv INT) WITH (kafka_topic='ls', value_format='JSON', partitions=1); \
         CREATE STREAM rs (id STRING KEY, rv INT) WITH (kafka_topic='rs', value_format='JSON', partitions=1);",
    );
    let kinds = [("LJ", "LEFT"), ("RJ", "RIGHT"), ("FJ", "FULL OUTER")];
    for (name, kind) in kinds {
        ksql_ok(
            &p.sql,
            &format!(
                "CREATE STREAM {name} AS SELECT l.id AS id, l.lv, r.rv FROM ls l {kind} JOIN rs r \
                 WITHIN 1 MINUTE GRACE PERIOD 1 HOUR ON l.id = r.id EMIT CHANGES;"
            ),
        );
    }
    // 50 records a side over 6 keys within 10 minutes: no window closes before the last one (1 minute + 1 hour).
    let t = an_hour_ago() - 3 * 3_600_000;
    let mut seed = 7u64;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    let side = |next: &mut dyn FnMut(u64) -> u64| -> Vec<(String, i64, i64)> {
        (0..50)
            .map(|i| (format!("k{}", next(6)), i, t + next(600) as i64 * 1000))
            .collect()
    };
    let left = side(&mut next);
    let right: Vec<_> = side(&mut next)
        .into_iter()
        .map(|(k, v, ts)| (k, v + 100, ts))
        .collect();
    let near = |a: i64, b: i64| (a - b).abs() <= 60_000;
    let mut pairs = Vec::new();
    for (lk, lv, lt) in &left {
        for (rk, rv, rt) in &right {
            if lk == rk && near(*lt, *rt) {
                pairs.push((lk.clone(), json!({"LV": lv, "RV": rv})));
            }
        }
    }
    let lonely_left: Vec<(String, Value)> = left
        .iter()
        .filter(|(k, _, ts)| !right.iter().any(|(rk, _, rt)| rk == k && near(*ts, *rt)))
        .map(|(k, v, _)| (k.clone(), json!({"LV": v, "RV": null})))
        .collect();
    let lonely_right: Vec<(String, Value)> = right
        .iter()
        .filter(|(k, _, ts)| !left.iter().any(|(lk, _, lt)| lk == k && near(*ts, *lt)))
        .map(|(k, v, _)| (k.clone(), json!({"LV": null, "RV": v})))
        .collect();
    assert!(
        !pairs.is_empty() && !lonely_left.is_empty() && !lonely_right.is_empty(),
        "the generated input lacks a case"
    );
    let insert = |stream: &str, col: &str, rows: &[(String, i64, i64)]| {
        let sql: String = rows
            .iter()
            .map(|(k, v, ts)| {
                format!("INSERT INTO {stream} (id, {col}, ROWTIME) VALUES ('{k}', {v}, {ts});\n")
            })
            .collect();
        ksql_ok(&p.sql, &sql);
    };
    insert("ls", "lv", &left);
    insert("rs", "rv", &right);
    let names: Vec<&str> = kinds.iter().map(|(n, _)| *n).collect();
    await_read(&p.sql, &names, 100);
    // Every window is still open: only the pairs so far, no row with NULLs.
    std::thread::sleep(Duration::from_secs(2));
    for name in &names {
        assert_eq!(
            read_json(&p.kafka, name, pairs.len()),
            sorted(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()),
            "{name} before the windows closed"
        );
    }
    // Two records (a pair) three hours later move stream time past every window's close.
    let late = t + 3 * 3_600_000;
    insert("ls", "lv", &[("zz".to_string(), 1, late)]);
    insert("rs", "rv", &[("zz".to_string(), 2, late)]);
    let mut base = pairs.clone();
    base.push(("zz".to_string(), json!({"LV": 1, "RV": 2})));
    for (name, kind) in kinds {
        let mut want = base.clone();
        if kind != "RIGHT" {
            want.extend(lonely_left.iter().cloned());
        }
        if kind != "LEFT" {
            want.extend(lonely_right.iter().cloned());
        }
        want.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
        await_written(&p.sql, name, want.len() as u64);
        assert_eq!(read_json(&p.kafka, name, want.len()), want, "{name}");
    }

    // A partner that arrives after an outer record's window closed, but is not late itself (it is newer), does
    // not pair with it: the record went out with NULLs already, and must not go out twice.
    let lj_before = {
        let mut w = base.clone();
        w.extend(lonely_left.iter().cloned());
        w
    };
    let l_ts = late + 10 * 60_000;
    insert("ls", "lv", &[("race".to_string(), 10, l_ts)]);
    // Stream time reaches the record's close (1 minute + 1 hour after it): it goes out unmatched.
    let closed = l_ts + 3_600_000 + 60_000;
    insert("ls", "lv", &[("adv".to_string(), 11, closed)]);
    await_written(&p.sql, "LJ", lj_before.len() as u64 + 1);
    // Its partner, 30 s after it: within the window, and not late itself (its own close is 30 s away).
    insert("rs", "rv", &[("race".to_string(), 20, l_ts + 30_000)]);
    // A pair after it on both sides: once its row is out, the partner has been processed.
    insert("ls", "lv", &[("m".to_string(), 12, closed)]);
    insert("rs", "rv", &[("m".to_string(), 22, closed)]);
    let rows = rows_through(&p.sql, &p.kafka, "LJ", "m");
    let mut want = lj_before;
    want.push(("race".to_string(), json!({"LV": 10, "RV": null})));
    want.push(("m".to_string(), json!({"LV": 12, "RV": 22})));
    want.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    assert_eq!(rows, want, "LJ: the race record went out once, with NULLs");

    // In the full join the partner that was not paired goes out with NULLs too once its own window closes (it
    // must not count the closed record as its partner), and the race record once.
    let after = closed + 10 * 60_000;
    insert("ls", "lv", &[("zz2".to_string(), 3, after)]);
    insert("rs", "rv", &[("zz2".to_string(), 4, after)]);
    let rows = rows_through(&p.sql, &p.kafka, "FJ", "zz2");
    let mut want = base.clone();
    want.extend(lonely_left.iter().cloned());
    want.extend(lonely_right.iter().cloned());
    want.push(("race".to_string(), json!({"LV": 10, "RV": null})));
    want.push(("race".to_string(), json!({"LV": null, "RV": 20})));
    want.push(("m".to_string(), json!({"LV": 12, "RV": 22})));
    want.push(("zz2".to_string(), json!({"LV": 3, "RV": 4})));
    want.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    assert_eq!(rows, want, "FJ: each race record went out once, with NULLs");
}

// ---- Records whose registered Avro schema would expand without bound (fjord_registry::wire's shape check) ----

/// Avro's zigzag varint of `n`.
fn zigzag(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Registers Avro schema `text` under `subject` in the registry at `registry` (HOST:PORT): its id.
fn register_avro(registry: &str, subject: &str, text: &str) -> u32 {
    let body = json!({ "schema": text }).to_string();
    let (status, _, raw) = http_request(
        registry,
        "POST",
        &format!("/subjects/{subject}/versions"),
        "Content-Type: application/vnd.schemaregistry.v1+json\r\n",
        Some(body.as_bytes()),
    );
    let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{subject}: {v}");
    v["id"].as_u64().unwrap() as u32
}

/// A record in Confluent's wire format: magic byte 0, schema `id`, `body`.
fn wire(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A stream over a topic where some records were written with hostile registered schemas: a chain of 40 records
/// each using the next twice, ending in a record of a null (an empty body is 2^40 values), and arrays of arrays
/// of null or of an empty record (each inner count of a few bytes claims 500,000 values, 2,000 of them in a
/// body of 8 KB). By default those records are skipped and counted and the good ones around them are written;
/// with `ksql.fail.on.deserialization.error` the query stops at the first with the reason. Before the records
/// were read with the shared shape check, the queries hung on the chain's record allocating until the process
/// died (under `ulimit -v` 8 GB after about 20 s: the next request got no answer; without a limit it would have
/// taken the machine's memory).
#[test]
fn records_with_a_schema_that_expands_without_bound_are_skipped_or_stop_the_query() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = temp_dir();
    let (p, registry) = start_with_registry(dir.path());

    let good = register_avro(
        &registry,
        "good-value",
        r#"{"type":"record","name":"V","fields":[{"name":"x","type":"int"}]}"#,
    );
    let mut chain =
        r#"{"type":"record","name":"R40","fields":[{"name":"n","type":"null"}]}"#.to_string();
    for i in (0..40).rev() {
        chain = format!(
            r#"{{"type":"record","name":"R{i}","fields":[{{"name":"a","type":{chain}}},{{"name":"b","type":"R{}"}}]}}"#,
            i + 1
        );
    }
    let chain = register_avro(&registry, "chain-value", &chain);
    let nulls = register_avro(
        &registry,
        "nulls-value",
        r#"{"type":"record","name":"N","fields":[{"name":"x","type":"int"},{"name":"junk","type":{"type":"array","items":{"type":"array","items":"null"}}}]}"#,
    );
    let empties = register_avro(
        &registry,
        "empties-value",
        r#"{"type":"array","items":{"type":"array","items":{"type":"record","name":"E","fields":[]}}}"#,
    );
    // 2,000 inner arrays of 500,000 items each (4 bytes apiece), then the end of the outer array.
    let arrays = |prefix: &[u8]| {
        let mut b = prefix.to_vec();
        zigzag(2_000, &mut b);
        for _ in 0..2_000 {
            zigzag(500_000, &mut b);
            zigzag(0, &mut b);
        }
        zigzag(0, &mut b);
        b
    };
    let mut x5 = Vec::new();
    zigzag(5, &mut x5);

    ksql_ok(
        &p.sql,
        "CREATE STREAM orders (x INT) WITH (kafka_topic='orders', value_format='AVRO', partitions=1);",
    );
    let v = ksql_ok(
        &p.sql,
        "CREATE STREAM skipping AS SELECT x FROM orders; \
         SET 'ksql.fail.on.deserialization.error'='true'; \
         CREATE STREAM stopping AS SELECT x FROM orders;",
    );
    let (skipping, stopping) = (query_id(&v, 0), query_id(&v, 2));
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &p.kafka)
        .create()
        .unwrap();
    for value in [
        wire(good, &[2]),
        wire(chain, &[]),
        wire(nulls, &arrays(&x5)),
        wire(empties, &arrays(&[])),
        wire(good, &[4]),
    ] {
        producer
            .send(BaseRecord::<(), _>::to("orders").payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    await_written(&p.sql, "skipping", 2);
    wait_committed(&p.kafka, &format!("_fjord_sql_{skipping}"), 5);
    let s = stats(&p.sql, "skipping");
    assert_eq!(s["processingErrors"].as_u64(), Some(3), "{s}");
    assert_eq!(show_query(&p.sql, &skipping)["state"], "RUNNING");

    let q = await_state(&p.sql, &stopping, "ERROR", 60);
    let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
    assert!(
        reason.contains("offset 1") && reason.contains("more than 10000 types"),
        "{reason}"
    );
}

/// A stream query whose AVRO output cannot hold a row (a DECIMAL(10, 2) read from JSON as 1e300, beyond what an
/// Avro decimal's bytes take here) skips and counts the row by default; with `ksql.fail.on.deserialization.error`
/// true it stops at it, as the aggregations do: ERROR with the record's position, nothing after it written and
/// its input committed up to the record before it. Before, the stateless path skipped the row either way and
/// went on.
#[test]
fn a_row_the_avro_output_cannot_hold_stops_a_stream_query_when_fail_on_bad_record_is_set() {
    let dir = temp_dir();
    let (p, _registry) = start_with_registry(dir.path());
    ksql_ok(
        &p.sql,
        "CREATE STREAM prices (d DECIMAL(10, 2)) WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
    );
    let v = ksql_ok(
        &p.sql,
        "CREATE STREAM skipping WITH (value_format='AVRO') AS SELECT d FROM prices; \
         SET 'ksql.fail.on.deserialization.error'='true'; \
         CREATE STREAM stopping WITH (value_format='AVRO') AS SELECT d FROM prices;",
    );
    let (skipping, stopping) = (query_id(&v, 0), query_id(&v, 2));
    for (i, d) in ["1.5", "1e300", "2.5"].into_iter().enumerate() {
        let value: Value = serde_json::from_str(&format!(r#"{{"D":{d}}}"#)).unwrap();
        produce(&p.kafka, "orders", "k", Some(value), 1_000 + i as i64);
    }

    await_written(&p.sql, "skipping", 2);
    wait_committed(&p.kafka, &format!("_fjord_sql_{skipping}"), 3);
    let s = stats(&p.sql, "skipping");
    assert_eq!(s["processingErrors"].as_u64(), Some(1), "{s}");
    assert_eq!(show_query(&p.sql, &skipping)["state"], "RUNNING");

    let q = await_state(&p.sql, &stopping, "ERROR", 60);
    let reason = q["reason"].as_str().unwrap_or_else(|| panic!("{q}"));
    assert!(
        reason.contains("offset 1") && reason.contains("cannot be written to STOPPING"),
        "{reason}"
    );
    let committed: i64 = client(&[
        "committed",
        &p.kafka,
        &format!("_fjord_sql_{stopping}"),
        "orders",
    ])
    .trim()
    .parse()
    .unwrap();
    assert_eq!(committed, 1, "the stopped query committed past its record");
    assert_eq!(stats(&p.sql, "stopping")["recordsOut"].as_u64(), Some(1));
}

// ---- PROTOBUF through the schema registry ----

/// The registry's latest id under `subject` (HOST:PORT registry).
fn latest_id(registry: &str, subject: &str) -> u32 {
    let (status, _, raw) = http_request(
        registry,
        "GET",
        &format!("/subjects/{subject}/versions/latest"),
        "",
        None,
    );
    let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{subject}: {v}");
    v["id"].as_u64().unwrap() as u32
}

/// The fields of DESCRIBE: `NAME TYPE` each.
fn described(addr: &str, source: &str) -> Vec<String> {
    let d = ksql_ok(addr, &format!("DESCRIBE {source};"));
    d[0]["sourceDescription"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("{d}"))
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f["name"].as_str().unwrap(),
                f["schema"]["type"].as_str().unwrap()
            )
        })
        .collect()
}

/// PROTOBUF through the schema registry with Confluent's own client on both sides. Records written by
/// confluent-kafka's ProtobufSerializer (shop.Reading: every scalar kind SQL maps, an enum, a repeated field, a
/// nested message, a map, a google.protobuf.Timestamp, a uint64 above 2^63, an enum number the enum does not
/// define and a oneof, which is one STRUCT column as ksqlDB infers it) are read by a stream whose columns come from the
/// subject's latest schema and by one with columns given (a column the message lacks is NULL), filtered and
/// projected, written to JSON and aggregated; records that are not Protobuf in the wire format (not framed, an
/// unknown schema id, an Avro schema's id, a body cut short, message indexes naming no message) are skipped and
/// counted. A CREATE STREAM AS SELECT with VALUE_FORMAT='PROTOBUF' registers ksqlDB's `message ConnectDefault1`
/// and writes records ProtobufDeserializer reads (with the schema google.protobuf builds from the registry's
/// descriptor), which SQL reads back with the same columns; INSERT INTO writes with the producer's schema; a
/// PROTOBUF key INSERT writes is read by ProtobufDeserializer too; a oneof read as a STRUCT is written by a CSAS as a
/// message, and its member by INSERT through a column named after it (read by ProtobufDeserializer and by SQL).
/// Before, every statement over PROTOBUF was refused ("not supported yet"); then the oneof's members were
/// columns of their own.
#[test]
fn protobuf_from_confluents_serializer_is_queried_aggregated_and_written_back() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = temp_dir();
    let (p, registry) = start_with_registry(dir.path());
    let url = format!("http://{registry}");
    client(&["produce-protobuf", &p.kafka, &url, "readings", "6"]);

    // The columns come from readings-value, its first message.
    ksql_ok(
        &p.sql,
        "CREATE STREAM readings WITH (kafka_topic='readings', value_format='PROTOBUF');",
    );
    let columns = [
        "VIA_0 STRUCT<`WIRE` STRING, `RADIO` INTEGER>",
        "SENSOR STRING",
        "AMOUNT INTEGER",
        "HITS BIGINT",
        "TEMP DOUBLE",
        "OK BOOLEAN",
        "KIND STRING",
        "TAGS ARRAY<STRING>",
        "PLACE STRUCT<`CITY` STRING, `ZIP` BIGINT>",
        "ATTRS MAP<STRING, INTEGER>",
        "TAKEN TIMESTAMP",
        "BIG BIGINT",
        "ALT STRING",
    ];
    assert_eq!(described(&p.sql, "readings"), columns);
    let select = "SELECT sensor, amount, hits, temp, ok, kind, tags, place, attrs['a'] AS a, taken";
    let row = |i: i64| {
        json!([
            format!("s{}", i % 2),
            10 * i,
            4_000_000_000i64 + i,
            20.5 + i as f64,
            i % 2 == 0,
            if i >= 3 { "HOT" } else { "IDLE" },
            [format!("t{i}")],
            if i == 2 {
                Value::Null
            } else {
                json!({"CITY": format!("c{i}"), "ZIP": 1000 + i})
            },
            i,
            1_700_000_000_250i64 + 1000 * i
        ])
    };
    let hot: Vec<Value> = (3..6).map(row).collect();
    let rows = query_rows(
        &p.sql,
        &format!("{select} FROM readings WHERE amount >= 30;"),
    );
    assert_eq!(rows, hot);
    // An unset message is NULL; unset scalars are their proto3 defaults (0, the enum's first value), not NULL.
    assert_eq!(
        query_rows(
            &p.sql,
            "SELECT amount, place FROM readings WHERE place IS NULL;"
        ),
        vec![json!([20, null])]
    );
    assert_eq!(
        query_rows(
            &p.sql,
            "SELECT amount, kind, ok FROM readings WHERE amount = 0;"
        ),
        vec![json!([0, "IDLE", true])]
    );
    // A uint64 above 2^63 reads as Java's long (wrapped), as Confluent's converter and so ksqlDB read it; an enum
    // number the enum does not define as protobuf-java names it; the oneof as one STRUCT, its member set, or
    // NULL when neither is.
    let wrapped = |i: i64| i64::MIN + i;
    assert_eq!(
        query_rows(
            &p.sql,
            "SELECT amount, big, alt, via_0 FROM readings WHERE amount <= 40;"
        ),
        vec![
            json!([0, wrapped(0), "HOT", {"WIRE": "w0", "RADIO": null}]),
            json!([10, wrapped(1), "HOT", {"WIRE": null, "RADIO": 1}]),
            json!([20, wrapped(2), "HOT", null]),
            json!([30, wrapped(3), "HOT", {"WIRE": "w3", "RADIO": null}]),
            json!([40, wrapped(4), "UNKNOWN_ENUM_VALUE_Kind_7", {"WIRE": null, "RADIO": 4}]),
        ]
    );
    // Columns given: by name, case-insensitively; a column the message lacks is NULL; types widen.
    ksql_ok(
        &p.sql,
        "CREATE STREAM readings_cols (sensor STRING, amount BIGINT, missing STRING, place STRUCT<city STRING>) \
         WITH (kafka_topic='readings', value_format='PROTOBUF');",
    );
    assert_eq!(
        query_rows(
            &p.sql,
            "SELECT sensor, amount, missing, place FROM readings_cols WHERE amount = 10;"
        ),
        vec![json!(["s1", 10, null, {"CITY": "c1"}])]
    );

    // Records that are not Protobuf in the wire format, after the good ones.
    let id = latest_id(&registry, "readings-value");
    let avro = register_avro(&registry, "other-value", r#""string""#);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &p.kafka)
        .create()
        .unwrap();
    for value in [
        br#"{"sensor": "json"}"#.to_vec(),
        wire(9_999, &[0, 0x0a, 1, b'x']),
        wire(avro, &[2, b'x']),
        wire(id, &[0, 0x0a, 0x7f, b'x']),
        wire(id, &[2, 8, 0x10, 1]),
    ] {
        producer
            .send(BaseRecord::to("readings").key("bad").payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // Filter and projection into JSON; the bad records are skipped and counted.
    ksql_ok(
        &p.sql,
        "CREATE STREAM hot WITH (value_format='JSON') AS \
         SELECT sensor, amount, kind, place.city AS city FROM readings WHERE kind = 'HOT';",
    );
    await_written(&p.sql, "HOT", 3);
    let want: Vec<(String, Value)> = (3..6)
        .map(|i| {
            (
                format!("r-{i}"),
                json!({"SENSOR": format!("s{}", i % 2), "AMOUNT": 10 * i, "KIND": "HOT", "CITY": format!("c{i}")}),
            )
        })
        .collect();
    assert_eq!(read_json(&p.kafka, "HOT", 3), want);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats(&p.sql, "HOT");
        if s["processingErrors"].as_u64() == Some(5) {
            // The last one: message indexes [4] of a schema of two messages.
            assert!(s.to_string().contains("name no message"), "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "HOT: {s}, expected 5 errors");
        std::thread::sleep(Duration::from_millis(200));
    }

    // An aggregation over the PROTOBUF stream.
    ksql_ok(
        &p.sql,
        "CREATE TABLE per_sensor WITH (value_format='JSON') AS \
         SELECT sensor, COUNT(*) AS n, SUM(amount) AS total FROM readings GROUP BY sensor EMIT CHANGES;",
    );
    let want = vec![json!(["s0", 3, 60]), json!(["s1", 3, 90])];
    await_rows(&p.sql, "SELECT sensor, n, total FROM per_sensor;", |rows| {
        let mut got = rows.to_vec();
        got.sort_by_key(|r| r[0].to_string());
        got == want
    });

    // Written as PROTOBUF: ksqlDB's schema registered under PB_OUT-value, read by ProtobufDeserializer.
    ksql_ok(
        &p.sql,
        "CREATE STREAM pb_out WITH (value_format='PROTOBUF') AS \
         SELECT sensor, amount, hits, temp, ok, kind, tags, place, attrs, taken, big, alt, via_0 FROM readings \
         WHERE amount >= 30;",
    );
    let out = client(&["read-protobuf", &p.kafka, &url, "PB_OUT", "3"]);
    let mut records = Vec::new();
    let mut schemas = Vec::new();
    let mut indexes = Vec::new();
    for l in out.lines() {
        let parts: Vec<&str> = l.split('\t').collect();
        match parts.as_slice() {
            ["schema", _, text] => schemas.push(serde_json::from_str::<String>(text).unwrap()),
            ["indexes", hex] => indexes.push(hex.to_string()),
            [key, v] => records.push((key.to_string(), serde_json::from_str::<Value>(v).unwrap())),
            _ => panic!("{out}"),
        }
    }
    let want: Vec<(String, Value)> = (3..6)
        .map(|i| {
            let mut v = json!({"SENSOR": format!("s{}", i % 2), "AMOUNT": 10 * i,
                       "HITS": (4_000_000_000i64 + i).to_string(), "TEMP": 20.5 + i as f64,
                       "OK": i % 2 == 0, "KIND": "HOT", "TAGS": [format!("t{i}")],
                       "PLACE": {"CITY": format!("c{i}"), "ZIP": (1000 + i).to_string()},
                       "ATTRS": {"a": i}, "TAKEN": format!("2023-11-14T22:13:2{i}.250Z"),
                       "BIG": wrapped(i).to_string(),
                       "ALT": if i == 4 { "UNKNOWN_ENUM_VALUE_Kind_7" } else { "HOT" }});
            // The oneof's STRUCT is a message VIA_0 of the sink's schema (its NULL member the default); a
            // oneof with no member set is NULL, an unset message field.
            match i % 3 {
                0 => v["VIA_0"] = json!({"WIRE": format!("w{i}"), "RADIO": 0}),
                1 => v["VIA_0"] = json!({"WIRE": "", "RADIO": i}),
                _ => {}
            }
            (format!("r-{i}"), v)
        })
        .collect();
    assert_eq!(records, want, "{out}");
    assert_eq!(
        indexes,
        ["00"],
        "the first message's indexes are the single byte 0"
    );
    assert_eq!(schemas.len(), 1, "{out}");
    assert!(
        schemas[0].contains("message ConnectDefault1 {")
            && schemas[0].contains("google.protobuf.Timestamp TAKEN = 10;"),
        "{}",
        schemas[0]
    );
    // SQL reads its own output back with the same columns.
    ksql_ok(
        &p.sql,
        "CREATE STREAM pb_back WITH (kafka_topic='PB_OUT', value_format='PROTOBUF');",
    );
    // The oneof was written as a STRUCT, last.
    let mut back_columns = columns[1..].to_vec();
    back_columns.push(columns[0]);
    assert_eq!(described(&p.sql, "pb_back"), back_columns);
    assert_eq!(query_rows(&p.sql, &format!("{select} FROM pb_back;")), hot);

    // INSERT INTO writes with the producer's latest schema (the enum by its name; a repeated field not given
    // reads as empty, a message as NULL).
    ksql_ok(
        &p.sql,
        "INSERT INTO readings (sensor, amount, kind) VALUES ('s9', 90, 'HOT');",
    );
    await_rows(
        &p.sql,
        "SELECT sensor, amount, kind, tags, place FROM readings WHERE amount = 90;",
        |rows| rows == [json!(["s9", 90, "HOT", [], null])],
    );

    // A PROTOBUF key: a message of the key column's one field, written by INSERT (no schema registered yet: the
    // columns' schemas are) and read back.
    ksql_ok(
        &p.sql,
        "CREATE STREAM keyed (k STRING KEY, v INT) WITH (kafka_topic='keyed', key_format='PROTOBUF', \
         value_format='PROTOBUF', partitions=1); \
         INSERT INTO keyed (k, v) VALUES ('a', 1);",
    );
    assert_eq!(
        query_rows(&p.sql, "SELECT k, v FROM keyed;"),
        vec![json!(["a", 1])]
    );
    let key_id = latest_id(&registry, "keyed-key");
    let (_, _, raw) = http_request(
        &registry,
        "GET",
        &format!("/schemas/ids/{key_id}"),
        "",
        None,
    );
    let v: Value = serde_json::from_slice(&raw).unwrap();
    let text = v["schema"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(text.contains("string K = 1;"), "{text}");
    // Confluent's ProtobufDeserializer reads the key (and the value) as written.
    let out = client(&["read-protobuf", &p.kafka, &url, "keyed", "1", "key"]);
    assert_eq!(
        out.lines().next(),
        Some("{\"K\": \"a\"}\t{\"V\": 1}"),
        "{out}"
    );

    // A oneof's member written from SQL through a column named after it (as a stream declared before oneofs
    // were STRUCTs names it), with the producer's schema: ProtobufDeserializer reads the oneof set to it, and
    // SQL reads it back as the member's column and as the oneof's STRUCT.
    client(&["produce-protobuf", &p.kafka, &url, "via", "1"]);
    ksql_ok(
        &p.sql,
        "CREATE STREAM via_members (sensor STRING, amount INT, wire STRING, radio INT) \
         WITH (kafka_topic='via', value_format='PROTOBUF'); \
         CREATE STREAM via_oneof WITH (kafka_topic='via', value_format='PROTOBUF'); \
         INSERT INTO via_members (sensor, amount, wire) VALUES ('s8', 80, 'x');",
    );
    let out = client(&["read-protobuf", &p.kafka, &url, "via", "2"]);
    let members: Vec<(String, Value, Value, Value)> = out
        .lines()
        .filter_map(|l| {
            let (key, v) = l.split_once('\t')?;
            let v: Value = serde_json::from_str(v).ok()?;
            Some((
                key.to_string(),
                v["sensor"].clone(),
                v["wire"].clone(),
                v["radio"].clone(),
            ))
        })
        .collect();
    assert_eq!(
        members,
        [
            (String::new(), json!("s8"), json!("x"), Value::Null),
            ("r-0".to_string(), json!("s0"), json!("w0"), Value::Null),
        ],
        "{out}"
    );
    await_rows(
        &p.sql,
        "SELECT sensor, wire, radio FROM via_members;",
        |rows| rows == [json!(["s0", "w0", null]), json!(["s8", "x", null])],
    );
    assert_eq!(
        query_rows(&p.sql, "SELECT sensor, via_0 FROM via_oneof;"),
        vec![
            json!(["s0", {"WIRE": "w0", "RADIO": null}]),
            json!(["s8", {"WIRE": "x", "RADIO": null}]),
        ]
    );
}

/// Kafka's murmur2 (the Java producer's default partitioner hashes the serialized key with it).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the Java producer picks for `key` among `n`.
fn java_partition(key: &[u8], n: u32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % n) as i32
}

/// An Avro string of a nullable field (`["null","string"]`): the branch, the length and the bytes, read from
/// `body` at `*at`.
fn avro_nullable_string(body: &[u8], at: &mut usize) -> String {
    assert_eq!(
        body[*at], 2,
        "not the string branch of a nullable union: {body:?}"
    );
    let len = (body[*at + 1] / 2) as usize;
    let s = String::from_utf8(body[*at + 2..*at + 2 + len].to_vec()).unwrap();
    *at += 2 + len;
    s
}

/// GROUP BY and PARTITION BY of two expressions (ksqlDB 0.15's multi-column keys). A GROUP BY PAGE, REGION
/// table over a KAFKA-keyed stream gets two PRIMARY KEY columns and a JSON key `{"PAGE":..,"REGION":..}` (the
/// inherited KAFKA format cannot hold two columns, so JSON, as ksqlDB sanitizes it); its counts and sums equal a
/// reference computed here, in the topic and through pull queries by both key columns; a windowed one keys its
/// rows `json ‖ window start`. PARTITION BY PAGE, REGION writes the same JSON key into the partition murmur2 of
/// its bytes picks. KEY_FORMAT='KAFKA' named for two key columns, and a stream declared with two KEY columns in
/// KAFKA, are refused with ksqlDB's message; declared with KEY_FORMAT='JSON' they are read and written
/// (INSERT, SELECT). An AVRO key is the record `<Sink>Key` registered under `<topic>-key`, read back here and by
/// a stream declared over the topic. Before, every one of these statements was refused.
#[test]
fn group_by_and_partition_by_several_expressions_key_by_every_column() {
    let dir = temp_dir();
    let (p, registry) = start_with_registry(dir.path());
    let a = p.sql.as_str();
    ksql_ok(
        a,
        "CREATE STREAM clicks (user_id STRING KEY, page STRING, region STRING, n INT) \
         WITH (kafka_topic='clicks', partitions=3, value_format='JSON');",
    );
    ksql_ok(
        a,
        "CREATE TABLE by_page_region AS SELECT page, region, COUNT(*) AS c, SUM(n) AS total \
           FROM clicks GROUP BY page, region;\
         CREATE TABLE by_page_region_hourly AS SELECT page, region, COUNT(*) AS c \
           FROM clicks WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY page, region;\
         CREATE STREAM by_pr WITH (partitions=3) AS SELECT page, region, user_id, n FROM clicks \
           PARTITION BY page, region;\
         CREATE TABLE by_pr_avro WITH (key_format='AVRO', value_format='AVRO') AS \
           SELECT page, region, COUNT(*) AS c FROM clicks GROUP BY page, region;",
    );
    for t in ["by_page_region", "by_pr"] {
        let d = ksql_ok(a, &format!("DESCRIBE {t};"));
        let s = &d[0]["sourceDescription"];
        assert_eq!(s["keyFormat"], "JSON", "{d}");
        let fields = s["fields"].as_array().unwrap();
        let keys: Vec<(&str, &str)> = fields
            .iter()
            .filter(|f| f.get("type").is_some())
            .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
            .collect();
        let kind = if t == "by_pr" { "KEY" } else { "PRIMARY_KEY" };
        assert_eq!(keys, [("PAGE", kind), ("REGION", kind)], "{d}");
    }

    let t0 = an_hour_ago();
    let clicks = [
        ("u1", "home", "eu", 1),
        ("u2", "cart", "us", 2),
        ("u1", "cart", "eu", 3),
        ("u3", "home", "eu", 4),
        ("u4", "home", "us", 5),
        ("u5", "cart", "us", 6),
        ("u6", "home", "eu", 7),
        ("u7", "cart", "eu", 8),
        ("u2", "home", "us", 9),
        ("u8", "home", "eu", 10),
    ];
    for (user, page, region, n) in clicks {
        ksql_ok(
            a,
            &format!(
                "INSERT INTO clicks (user_id, page, region, n, ROWTIME) VALUES ('{user}', '{page}', '{region}', {n}, {});",
                t0 + n as i64
            ),
        );
    }
    // The reference: per (page, region) the count and the sum of N.
    let mut want: std::collections::BTreeMap<(String, String), (i64, i64)> = Default::default();
    for (_, page, region, n) in clicks {
        let e = want
            .entry((page.to_string(), region.to_string()))
            .or_default();
        e.0 += 1;
        e.1 += n as i64;
    }
    let key_text = |page: &str, region: &str| format!(r#"{{"PAGE":"{page}","REGION":"{region}"}}"#);

    // Pull queries by both key columns read one row; by one, every row of that page.
    for ((page, region), (c, total)) in &want {
        let sql =
            format!("SELECT * FROM by_page_region WHERE page = '{page}' AND region = '{region}';");
        let want_row = vec![json!([page, region, c, total])];
        await_rows(a, &sql, |rows| rows == want_row.as_slice());
    }
    let homes = query_rows(
        a,
        "SELECT page, region, c FROM by_page_region WHERE page = 'home';",
    );
    let mut homes: Vec<String> = homes.iter().map(Value::to_string).collect();
    homes.sort();
    assert_eq!(homes, [r#"["home","eu",4]"#, r#"["home","us",2]"#]);
    let hourly = await_rows(
        a,
        "SELECT page, region, WINDOWSTART, c FROM by_page_region_hourly WHERE page = 'cart' AND region = 'us';",
        |rows| rows.len() == 1 && rows[0][3] == 2,
    );
    let window_start = t0 - t0 % 3_600_000;
    assert_eq!(hourly[0], json!(["cart", "us", window_start, 2]));

    // The table's topic: keys are the JSON records, and the last row of each key is the reference's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut last: std::collections::BTreeMap<String, Value> = Default::default();
        for partition in 0..3 {
            for (k, v) in read_partition(&p.kafka, "BY_PAGE_REGION", partition) {
                last.insert(
                    String::from_utf8(k).unwrap(),
                    serde_json::from_slice(&v.unwrap()).unwrap(),
                );
            }
        }
        let expected: std::collections::BTreeMap<String, Value> = want
            .iter()
            .map(|((page, region), (c, total))| {
                (key_text(page, region), json!({"C": c, "TOTAL": total}))
            })
            .collect();
        if last == expected {
            break;
        }
        assert!(Instant::now() < deadline, "{last:?}, expected {expected:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The windowed table's keys: the JSON record followed by the window start (ksqlDB's windowed key).
    let mut windowed_keys = std::collections::BTreeSet::new();
    for partition in 0..3 {
        for (k, _) in read_partition(&p.kafka, "BY_PAGE_REGION_HOURLY", partition) {
            windowed_keys.insert(k);
        }
    }
    let expected_keys: std::collections::BTreeSet<Vec<u8>> = want
        .keys()
        .map(|(page, region)| {
            [
                key_text(page, region).as_bytes(),
                &window_start.to_be_bytes(),
            ]
            .concat()
        })
        .collect();
    assert_eq!(windowed_keys, expected_keys);

    // PARTITION BY two expressions: the JSON key record, in the partition murmur2 of its bytes picks.
    await_written(a, "by_pr", clicks.len() as u64);
    let mut got = Vec::new();
    let mut partitions = std::collections::BTreeSet::new();
    for partition in 0..3 {
        for (k, v) in read_partition(&p.kafka, "BY_PR", partition) {
            assert_eq!(
                partition,
                java_partition(&k, 3),
                "{}",
                String::from_utf8_lossy(&k)
            );
            partitions.insert(partition);
            let v: Value = serde_json::from_slice(&v.unwrap()).unwrap();
            got.push((String::from_utf8(k).unwrap(), v.to_string()));
        }
    }
    got.sort();
    let mut expected: Vec<(String, String)> = clicks
        .iter()
        .map(|(user, page, region, n)| {
            (
                key_text(page, region),
                json!({"USER_ID": user, "N": n}).to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert!(
        partitions.len() > 1,
        "every key in one partition proves little: {partitions:?}"
    );

    // AVRO: the key is the record `ByPrAvroKey` of both columns, registered under the topic's key subject.
    let (status, _, raw) = http_request(
        &registry,
        "GET",
        "/subjects/BY_PR_AVRO-key/versions/latest",
        "",
        None,
    );
    let schema: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{schema}");
    let text: Value = serde_json::from_str(schema["schema"].as_str().unwrap()).unwrap();
    assert_eq!(text["name"], "ByPrAvroKey", "{text}");
    let names: Vec<&str> = text["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["PAGE", "REGION"]);
    let id = schema["id"].as_u64().unwrap() as u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut keys = std::collections::BTreeSet::new();
        for partition in 0..3 {
            for (k, _) in read_partition(&p.kafka, "BY_PR_AVRO", partition) {
                assert_eq!(
                    k[..5],
                    [
                        0,
                        (id >> 24) as u8,
                        (id >> 16) as u8,
                        (id >> 8) as u8,
                        id as u8
                    ]
                );
                let mut at = 5;
                let page = avro_nullable_string(&k, &mut at);
                let region = avro_nullable_string(&k, &mut at);
                assert_eq!(at, k.len());
                keys.insert((page, region));
            }
        }
        if keys.len() == want.len() {
            assert_eq!(keys, want.keys().cloned().collect());
            break;
        }
        assert!(Instant::now() < deadline, "{keys:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // And SQL reads the AVRO key record back into two key columns.
    ksql_ok(
        a,
        "CREATE STREAM avro_back (page STRING KEY, region STRING KEY, c BIGINT) \
         WITH (kafka_topic='BY_PR_AVRO', key_format='AVRO', value_format='AVRO');",
    );
    let rows = query_rows(
        a,
        "SELECT page, region, c FROM avro_back WHERE page = 'cart' AND region = 'eu';",
    );
    assert_eq!(rows.last(), Some(&json!(["cart", "eu", 2])), "{rows:?}");

    // KAFKA cannot hold two key columns: refused with ksqlDB's message, whether named for a result or declared.
    let m = refused(
        a,
        "CREATE TABLE kafka_keyed WITH (key_format='KAFKA') AS SELECT page, region, COUNT(*) AS c \
         FROM clicks GROUP BY page, region;",
    );
    assert!(
        m.contains("The 'KAFKA' format only supports a single field. Got: [`PAGE` STRING KEY, `REGION` STRING KEY]"),
        "{m}"
    );
    let m = refused(
        a,
        "CREATE STREAM kafka_pr WITH (key_format='KAFKA') AS SELECT page, region, n FROM clicks PARTITION BY page, region;",
    );
    assert!(
        m.contains("The 'KAFKA' format only supports a single field"),
        "{m}"
    );
    let m = refused(
        a,
        "CREATE STREAM two_keys (a STRING KEY, b INT KEY, v INT) WITH (kafka_topic='two_keys', partitions=1, value_format='JSON');",
    );
    assert!(
        m.contains("The 'KAFKA' format only supports a single field. Got: [`A` STRING KEY, `B` INTEGER KEY]"),
        "{m}"
    );
    // Declared in JSON: a stream of two KEY columns and a table of two PRIMARY KEY columns, written and read.
    ksql_ok(
        a,
        "CREATE STREAM two_keys (a STRING KEY, v INT, b INT KEY) \
         WITH (kafka_topic='two_keys', partitions=1, value_format='JSON', key_format='JSON');\
         CREATE TABLE two_pk (a STRING PRIMARY KEY, b INT PRIMARY KEY, v INT) \
         WITH (kafka_topic='two_pk', partitions=1, value_format='JSON', key_format='JSON');\
         INSERT INTO two_keys (a, b, v) VALUES ('x', 1, 5);",
    );
    assert_eq!(
        described(a, "two_pk"),
        ["A STRING", "B INTEGER", "V INTEGER"]
    );
    let raw = read_topic(&p.kafka, "two_keys");
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].0, br#"{"A":"x","B":1}"#);
    assert_eq!(
        query_rows(a, "SELECT a, v, b FROM two_keys;"),
        [json!(["x", 5, 1])]
    );
    // A persistent query keeps the whole key or none of it (ksqlDB's "Key missing from projection").
    let m = refused(a, "CREATE STREAM half_key AS SELECT a, v FROM two_keys;");
    assert!(
        m.contains("Key missing from projection") && m.contains("B"),
        "{m}"
    );
}

/// A push query over /query (`props` its streamsProperties) whose header has arrived: the connection and what
/// it read so far.
fn open_push(addr: &str, sql: &str, props: Value) -> (std::net::TcpStream, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = json!({"ksql": sql, "streamsProperties": props}).to_string();
    write!(
        s,
        "POST /query HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"header\"") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{sql}: no header: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{sql}: {head}");
    (s, got)
}

/// The `row` elements of a /query answer read so far (its complete lines).
fn push_rows_in(got: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(got);
    text[..text.rfind('\n').map_or(0, |i| i + 1)]
        .lines()
        .filter(|l| l.contains("\"row\""))
        .map(|l| {
            let j = l
                .trim()
                .trim_start_matches(',')
                .trim_end_matches(']')
                .trim_end_matches(',');
            serde_json::from_str::<Value>(j).unwrap_or_else(|e| panic!("{e}: {l}"))["row"].clone()
        })
        .collect()
}

/// Reads a push query's answer until it holds `n` rows (the read times out after 60 s without data).
fn read_push_rows(s: &mut std::net::TcpStream, got: &mut Vec<u8>, n: usize) -> Vec<Value> {
    read_push_until(s, got, |rows| rows.len() >= n)
}

/// Reads a push query's answer until its rows satisfy `done` (the read times out after 60 s without data).
fn read_push_until(
    s: &mut std::net::TcpStream,
    got: &mut Vec<u8>,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut buf = [0u8; 4096];
    while !done(&push_rows_in(got)) {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "the answer ended: {}", String::from_utf8_lossy(got));
        got.extend_from_slice(&buf[..k]);
    }
    push_rows_in(got)
}

/// A push query with a LIMIT from the topic's start: its header's schema and its rows, once the answer ended.
fn push_from_earliest(addr: &str, sql: &str) -> (String, Vec<Value>) {
    let (mut s, mut got) = open_push(addr, sql, json!({"auto.offset.reset": "earliest"}));
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        text.contains("]\n\r\n0\r\n\r\n"),
        "{sql}: not ended: {text}"
    );
    let schema = text
        .lines()
        .find_map(|l| {
            let start = l.find("{\"header\"")?;
            serde_json::from_str::<Value>(l[start..].trim_end_matches(',')).ok()
        })
        .map(|h| h["header"]["schema"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{sql}: no header: {text}"));
    (schema, push_rows_in(&got))
}

/// The message of a SELECT /query refuses.
fn push_refused(addr: &str, sql: &str) -> String {
    let body = json!({"ksql": sql}).to_string();
    let (status, v) = post(addr, "/query", body.as_bytes());
    assert_eq!(status, 400, "{sql}: {v}");
    v["message"].as_str().unwrap().to_string()
}

#[test]
fn push_queries_over_a_source_table_show_its_updates_and_deletions() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE TABLE users (id STRING PRIMARY KEY, name STRING, age INT) \
         WITH (kafka_topic='users', value_format='JSON', partitions=1);",
    );
    let t = an_hour_ago();
    let records: [(&str, Option<Value>); 7] = [
        ("u1", Some(json!({"NAME": "ann", "AGE": 30}))),
        ("u2", Some(json!({"NAME": "bob", "AGE": 17}))),
        ("u1", Some(json!({"NAME": "ann", "AGE": 31}))),
        ("u2", None),
        ("u3", Some(json!({"NAME": "cid", "AGE": 40}))),
        ("u3", Some(json!({"NAME": "cid", "AGE": 12}))),
        ("u1", None),
    ];
    for (i, (k, v)) in records.iter().enumerate() {
        produce(&p.kafka, "users", k, v.clone(), t + i as i64);
    }
    // Every change from the start: updates as rows, a tombstone as ksqlDB's row with the key and nulls.
    let (schema, rows) = push_from_earliest(&p.sql, "SELECT * FROM users EMIT CHANGES LIMIT 7;");
    assert_eq!(schema, "`ID` STRING, `NAME` STRING, `AGE` INTEGER");
    assert_eq!(
        rows,
        vec![
            json!({"columns": ["u1", "ann", 30]}),
            json!({"columns": ["u2", "bob", 17]}),
            json!({"columns": ["u1", "ann", 31]}),
            json!({"columns": ["u2", null, null], "tombstone": true}),
            json!({"columns": ["u3", "cid", 40]}),
            json!({"columns": ["u3", "cid", 12]}),
            json!({"columns": ["u1", null, null], "tombstone": true}),
        ]
    );
    // WHERE: the rows that pass; a row leaves the result (a tombstone) when deleted or updated so that it no
    // longer passes, and a key never in the result (u2) gets no tombstone.
    let (schema, rows) = push_from_earliest(
        &p.sql,
        "SELECT age, id FROM users WHERE age >= 18 EMIT CHANGES LIMIT 5;",
    );
    assert_eq!(schema, "`AGE` INTEGER, `ID` STRING");
    assert_eq!(
        rows,
        vec![
            json!({"columns": [30, "u1"]}),
            json!({"columns": [31, "u1"]}),
            json!({"columns": [40, "u3"]}),
            json!({"columns": [null, "u3"], "tombstone": true}),
            json!({"columns": [null, "u1"], "tombstone": true}),
        ]
    );
    // LIMIT ends the answer after that many rows.
    let (_, rows) = push_from_earliest(
        &p.sql,
        "SELECT UCASE(name) AS n FROM users EMIT CHANGES LIMIT 2;",
    );
    assert_eq!(
        rows,
        vec![json!({"columns": ["ANN"]}), json!({"columns": ["BOB"]})]
    );
    // Rows produced while the query runs (from the end by default): the first one read shows it is running.
    let (mut s, mut got) = open_push(&p.sql, "SELECT id, age FROM users EMIT CHANGES;", json!({}));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut age = 50;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while push_rows_in(&got).is_empty() {
        assert!(Instant::now() < deadline, "no row came");
        produce(
            &p.kafka,
            "users",
            "u4",
            Some(json!({"NAME": "dan", "AGE": age})),
            t + 10,
        );
        age += 1;
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    produce(
        &p.kafka,
        "users",
        "u4",
        Some(json!({"NAME": "dan", "AGE": 99})),
        t + 11,
    );
    produce(&p.kafka, "users", "u4", None, t + 12);
    let rows = read_push_until(&mut s, &mut got, |r| {
        r.last().is_some_and(|r| r["tombstone"] == true)
    });
    drop(s);
    let n = rows.len();
    assert_eq!(
        rows[n - 2..],
        [
            json!({"columns": ["u4", 99]}),
            json!({"columns": ["u4", null], "tombstone": true})
        ],
        "{rows:?}"
    );
    // What a push query over a table does not run is refused with the reason.
    ksql_ok(
        &p.sql,
        "CREATE STREAM visits (id STRING KEY, page STRING) \
         WITH (kafka_topic='visits', value_format='JSON', partitions=1);",
    );
    let e = push_refused(
        &p.sql,
        "SELECT name, COUNT(*) AS n FROM users GROUP BY name EMIT CHANGES;",
    );
    assert!(e.contains("aggregating a TABLE (USERS)"), "{e}");
    let e = push_refused(
        &p.sql,
        "SELECT name, id FROM users PARTITION BY name EMIT CHANGES;",
    );
    assert!(e.contains("PARTITION BY on a TABLE (USERS)"), "{e}");
    let e = push_refused(
        &p.sql,
        "SELECT v.id, v.page, u.name FROM visits v JOIN users u ON v.id = u.id EMIT CHANGES;",
    );
    assert!(
        e.contains("joins run on the streams library in persistent queries only"),
        "{e}"
    );
    // A persistent query over a table stays refused, and says what runs instead.
    let e = refused(
        &p.sql,
        "CREATE STREAM adults AS SELECT * FROM users WHERE age >= 18;",
    );
    assert!(e.contains("persistent queries over a TABLE (USERS)"), "{e}");
}

#[test]
fn push_queries_over_aggregation_tables_show_count_updates_and_window_bounds() {
    let dir = temp_dir();
    let p = start(&dir.path().join("data"));
    ksql_ok(
        &p.sql,
        "CREATE STREAM clicks (userid STRING KEY, page STRING) \
         WITH (kafka_topic='clicks', value_format='JSON', partitions=1);",
    );
    ksql_ok(
        &p.sql,
        "CREATE TABLE per_user AS SELECT userid, COUNT(*) AS n FROM clicks GROUP BY userid;",
    );
    ksql_ok(
        &p.sql,
        "CREATE TABLE per_minute AS SELECT userid, COUNT(*) AS n FROM clicks \
         WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY userid;",
    );
    let t0 = an_hour_ago();
    produce(
        &p.kafka,
        "clicks",
        "a",
        Some(json!({"PAGE": "x"})),
        t0 + 1_000,
    );
    await_written(&p.sql, "PER_USER", 1);
    // The counts as they change: the first row read shows the query runs, the next ones come as produced.
    let (mut s, mut got) = open_push(
        &p.sql,
        "SELECT * FROM per_user EMIT CHANGES LIMIT 3;",
        json!({"auto.offset.reset": "earliest"}),
    );
    let rows = read_push_rows(&mut s, &mut got, 1);
    assert_eq!(rows, vec![json!({"columns": ["a", 1]})]);
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.contains("`USERID` STRING, `N` BIGINT"), "{head}");
    produce(
        &p.kafka,
        "clicks",
        "a",
        Some(json!({"PAGE": "y"})),
        t0 + 2_000,
    );
    await_written(&p.sql, "PER_USER", 2);
    produce(
        &p.kafka,
        "clicks",
        "b",
        Some(json!({"PAGE": "x"})),
        t0 + 61_000,
    );
    let rows = read_push_rows(&mut s, &mut got, 3);
    assert_eq!(
        rows,
        vec![
            json!({"columns": ["a", 1]}),
            json!({"columns": ["a", 2]}),
            json!({"columns": ["b", 1]}),
        ]
    );
    // A windowed table's rows carry their window's bounds, decoded from the windowed key (`*` puts them after
    // the key, as ksqlDB does), and WHERE can use them.
    await_written(&p.sql, "PER_MINUTE", 3);
    let (schema, rows) =
        push_from_earliest(&p.sql, "SELECT * FROM per_minute EMIT CHANGES LIMIT 3;");
    assert_eq!(
        schema,
        "`USERID` STRING, `WINDOWSTART` BIGINT, `WINDOWEND` BIGINT, `N` BIGINT"
    );
    assert_eq!(
        rows,
        vec![
            json!({"columns": ["a", t0, t0 + 60_000, 1]}),
            json!({"columns": ["a", t0, t0 + 60_000, 2]}),
            json!({"columns": ["b", t0 + 60_000, t0 + 120_000, 1]}),
        ]
    );
    let (_, rows) = push_from_earliest(
        &p.sql,
        &format!(
            "SELECT userid, WINDOWEND, n FROM per_minute WHERE WINDOWSTART >= {} EMIT CHANGES LIMIT 1;",
            t0 + 60_000
        ),
    );
    assert_eq!(rows, vec![json!({"columns": ["b", t0 + 120_000, 1]})]);
}
