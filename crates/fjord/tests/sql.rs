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

/// Waits (60 s at most) until the query's group has committed `n` input offsets.
fn wait_committed(kafka: &str, group: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
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
    let (status, v) = ksql(a, "CREATE TABLE c AS SELECT k, COUNT(*) AS n FROM s WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY k EMIT CHANGES;");
    assert_eq!(status, 400);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not supported yet: windowed aggregation runs on the streams library"),
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

    // EXPLAIN plans what cannot run yet and says why.
    let v = ksql_ok(a, "EXPLAIN SELECT k, COUNT(*) AS c FROM s WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 10 SECONDS) GROUP BY k EMIT CHANGES;");
    let d = &v[0]["queryDescription"];
    assert_eq!(d["runnable"], false, "{v}");
    assert!(
        d["reason"].as_str().unwrap().contains("streams library"),
        "{v}"
    );
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
    let out = read_output(&p.kafka, 11);
    assert!(out.iter().any(|l| l.starts_with("id-20\t")), "{out:?}");
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
    let log = std::fs::File::create(dir.path().join("fjord.log")).unwrap();
    let (child, line) = start_platform_with_sql(
        &dir.path().join("data"),
        "127.0.0.1:0",
        "none",
        "127.0.0.1:0",
        Stdio::from(log),
    );
    let p = Platform {
        child,
        kafka: field(&line, "kafka=").to_string(),
        sql: field(&line, "sql=").to_string(),
    };
    let url = format!("http://{}", field(&line, "registry="));
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
