//! The PostgreSQL sink against a real PostgreSQL server (Debian's `postgresql` package: a throwaway cluster made
//! with `initdb` under a temporary directory and run with `pg_ctl` on a free port), with `fjord broker` and
//! `fjord connect standalone` as real processes: 100,000 keyed records become rows, upserts win by key, a schema
//! change with `auto.evolve` adds a column, poison records go to the dead-letter topic with Connect's error headers
//! while the task keeps running, tombstones delete rows, a database outage is ridden out with retries, and a task
//! that fails (`errors.tolerance=none`) says which record and what to do, and restarts by itself.
#![cfg(feature = "connect")]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::connect::*;
use common::*;
use serde_json::{json, Value};

/// A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a free port of
/// 127.0.0.1 with trust authentication for the user `fjord`; stopped (immediate mode) on drop.
///
/// PostgreSQL refuses to run as root: when the tests run as root (CI containers), the cluster's directory is
/// given to the `postgres` user (which Debian's package creates; else `nobody`) and the server's commands run as
/// that user through `runuser`.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    run_as: Option<String>,
    _dir: tempfile::TempDir,
}

fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|b| b.join("initdb").exists() && b.join("pg_ctl").exists());
    versions.sort_by_key(|b| {
        b.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed under /usr/lib/postgresql/*/bin: \
             install Debian's postgresql package (apt-get install postgresql; test.sh and .ci/run do it)"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("fjord-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let run_as = is_root().then(|| {
            let user = ["postgres", "nobody"]
                .into_iter()
                .find(|u| {
                    Command::new("id")
                        .arg(u)
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
                .expect("running as root, and neither the postgres nor the nobody user exists to run PostgreSQL as");
            let ok = Command::new("chown")
                .args(["-R", user])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown of {} failed", dir.path().display());
            user.to_string()
        });
        let mut pg = Postgres {
            bin,
            data,
            port: 0,
            run_as,
            _dir: dir,
        };
        let data = pg.data.to_str().unwrap().to_string();
        let out = pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "fjord",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "initdb failed: {}", stderr(&out));
        pg.port = free_port();
        let log = pg.data.with_extension("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            pg.port, data
        );
        let out = pg.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
            Duration::from_secs(90),
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            stderr(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pg.psql("SELECT 1");
        pg
    }

    fn run(&self, tool: &str, args: &[&str], timeout: Duration) -> std::process::Output {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir("/");
        run_bounded(&mut cmd, timeout)
    }

    pub fn stop(&self) {
        let data = self.data.to_str().unwrap().to_string();
        let out = self.run(
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"],
            Duration::from_secs(40),
        );
        assert!(out.status.success(), "pg_ctl stop: {}", stderr(&out));
    }

    pub fn restart(&self) {
        let data = self.data.to_str().unwrap().to_string();
        let log = self.data.with_extension("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port, data
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
            Duration::from_secs(90),
        );
        assert!(out.status.success(), "pg_ctl start: {}", stderr(&out));
    }

    /// Runs SQL with psql (unaligned, tuples only) and returns its output, trimmed; a failure fails the test.
    pub fn psql(&self, sql: &str) -> String {
        let out = run_bounded(
            Command::new(self.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "fjord", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
                .args(["-Atc", sql]),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// psql's answer, or None when the query fails (a table that does not exist yet).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        let out = run_bounded(
            Command::new(self.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "fjord", "-d", "postgres", "-Atc", sql]),
            Duration::from_secs(60),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn url(&self) -> String {
        format!("jdbc:postgresql://127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_string();
        let _ = self.run(
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"],
            Duration::from_secs(40),
        );
        if std::thread::panicking() {
            eprintln!(
                "---- postgres log ----\n{}",
                std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
            );
        }
    }
}

/// `fjord connect standalone` with its properties and log in `dir`.
fn start_worker(dir: &Path, bootstrap: &str) -> WorkerProc {
    let props = worker_properties(dir, bootstrap, "");
    WorkerProc::start(&[&props], &dir.join("worker.log"))
}

const SCHEMA: &str = r#"{"type":"struct","name":"order","fields":[{"field":"n","type":"int32"},{"field":"name","type":"string"}]}"#;
const SCHEMA_V2: &str = r#"{"type":"struct","name":"order","fields":[{"field":"n","type":"int32"},{"field":"name","type":"string"},{"field":"color","type":"string","optional":true}]}"#;

fn order(n: i64, name: &str) -> String {
    format!(r#"{{"schema":{SCHEMA},"payload":{{"n":{n},"name":"{name}"}}}}"#)
}

/// Sends `key|value` lines (`NULL` values are tombstones) to `topic`.
fn produce(bootstrap: &str, topic: &str, lines: &str) {
    ok(&fjord(
        bootstrap,
        &[
            "produce",
            topic,
            "--key-separator",
            "|",
            "--null-marker",
            "NULL",
        ],
        Some(lines.as_bytes()),
    ));
}

fn task_state(rest: &str, name: &str) -> (String, String) {
    let (_, v) = http(rest, "GET", &format!("/connectors/{name}/status"), None);
    (
        v["tasks"][0]["state"].as_str().unwrap_or("").to_string(),
        v["tasks"][0]["trace"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn postgres_sink_upserts_evolves_dead_letters_and_deletes() {
    let pg = Postgres::start();
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let bootstrap = broker.bootstrap.clone();
    ok(&fjord(
        &bootstrap,
        &["topics", "create", "orders", "--partitions", "3"],
        None,
    ));
    let worker = start_worker(dir.path(), &bootstrap);

    // 100,000 records with distinct keys.
    let mut lines = String::new();
    for i in 0..100_000 {
        lines.push_str(&format!("k{i}|{}\n", order(i, &format!("v1-{i}"))));
    }
    produce(&bootstrap, "orders", &lines);

    let config = json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
        "topics": "orders",
        "connection.url": pg.url(),
        "connection.user": "fjord",
        "table.name.format": "kafka_${topic}",
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "pk.fields": "id",
        "auto.create": "true",
        "auto.evolve": "true",
        "delete.enabled": "true",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "errors.tolerance": "all",
        "errors.log.enable": "true",
        "errors.deadletterqueue.topic.name": "orders-dlq",
        "errors.deadletterqueue.context.headers.enable": "true",
    });
    // Validation names a bad field; creating with it is a 400 naming it too.
    let mut bad = config.clone();
    bad["insert.mode"] = json!("merge");
    bad["connection.url"] = json!("jdbc:mysql://127.0.0.1/db");
    bad["name"] = json!("pg");
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connector-plugins/JdbcSinkConnector/config/validate",
        Some(&bad.to_string()),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["error_count"], 2, "{v}");
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connectors/pg/config",
        Some(&bad.to_string()),
    );
    assert_eq!(status, 400, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("configuration insert.mode") && msg.contains("configuration connection.url"),
        "{msg}"
    );

    let started = Instant::now();
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connectors/pg/config",
        Some(&config.to_string()),
    );
    assert_eq!(status, 201, "{v}");
    wait_for(Duration::from_secs(180), "100,000 rows", || {
        (pg.try_psql("SELECT count(*) FROM kafka_orders").as_deref() == Some("100000"))
            .then_some(())
    });
    eprintln!("100,000 rows in {:?}", started.elapsed());
    assert_eq!(
        pg.psql("SELECT n, name FROM kafka_orders WHERE id = 'k77777'"),
        "77777|v1-77777"
    );
    // Types as Confluent's JDBC sink maps them; the key is the primary key.
    assert_eq!(
        pg.psql("SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'kafka_orders'"),
        "id:text,n:integer,name:text"
    );
    assert_eq!(
        pg.psql("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'kafka_orders'::regclass AND i.indisprimary"),
        "id"
    );

    // Updates (the last of a key wins, also within one batch), a new optional field (auto.evolve), two
    // poison records (one the converter refuses, one the database refuses: "x" in an INT column), records
    // after them, and tombstones.
    let mut lines = String::new();
    for i in 0..1000 {
        lines.push_str(&format!("k{i}|{}\n", order(i, "v2")));
        lines.push_str(&format!("k{i}|{}\n", order(i, &format!("v3-{i}"))));
    }
    lines.push_str(&format!(
        "k1|{{\"schema\":{SCHEMA_V2},\"payload\":{{\"n\":1,\"name\":\"v4\",\"color\":\"red\"}}}}\n"
    ));
    lines.push_str("poison-json|{\"schema\":{\"type\":\"struct\",\"fields\":[{\"field\":\"n\",\"type\":\"int32\"}]},\"payload\":{\"n\":\"not a number\"}}\n");
    lines.push_str("poison-db|{\"schema\":{\"type\":\"struct\",\"fields\":[{\"field\":\"n\",\"type\":\"string\"},{\"field\":\"name\",\"type\":\"string\"}]},\"payload\":{\"n\":\"x\",\"name\":\"bad\"}}\n");
    for i in 10..20 {
        lines.push_str(&format!("k{i}|NULL\n"));
    }
    lines.push_str(&format!("after|{}\n", order(-1, "after the poison")));
    produce(&bootstrap, "orders", &lines);

    // The partitions are consumed in any interleaving: wait for the end state of every key.
    let expected = format!("{}|1|0|1|989|0", 100_000 - 10 + 1);
    wait_for(
        Duration::from_secs(90),
        "the updates, tombstones and the record after the poison",
        || {
            let got = pg.try_psql(
            "SELECT count(*), \
               count(*) FILTER (WHERE id = 'after'), \
               count(*) FILTER (WHERE id IN ('poison-json', 'poison-db')), \
               count(*) FILTER (WHERE id = 'k1' AND name = 'v4' AND color = 'red'), \
               count(*) FILTER (WHERE n < 1000 AND n >= 0 AND name = 'v3-' || n AND color IS NULL), \
               count(*) FILTER (WHERE n BETWEEN 10 AND 19) \
             FROM kafka_orders",
        )
            // The column color appears with the record that brings it (auto.evolve).
            .unwrap_or_default();
            (got == expected).then_some(()).or_else(|| {
                eprintln!("rows: {got}, want {expected}");
                None
            })
        },
    );
    assert_eq!(
        pg.psql("SELECT name, coalesce(color, '-') FROM kafka_orders WHERE id IN ('k2','k1000') ORDER BY n"),
        "v3-2|-\nv1-1000|-"
    );

    // The dead-letter topic has both poison records, as they were, with Connect's error headers.
    let dlq = wait_for(Duration::from_secs(30), "2 dead letters", || {
        let out = fjord(
            &bootstrap,
            &[
                "consume",
                "orders-dlq",
                "--from-beginning",
                "--exit-at-end",
                "--format",
                "json",
            ],
            None,
        );
        let v: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (v.len() >= 2).then_some(v)
    });
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let header = |m: &Value, k: &str| -> String {
        m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["key"] == k)
            .and_then(|h| h["value"].as_str())
            .unwrap_or_else(|| panic!("no header {k} in {m}"))
            .to_string()
    };
    assert_eq!(dlq[0]["key"], "poison-json");
    assert_eq!(header(&dlq[0], "__connect.errors.stage"), "VALUE_CONVERTER");
    assert!(header(&dlq[0], "__connect.errors.exception.message").contains("int32"));
    assert_eq!(dlq[1]["key"], "poison-db");
    assert_eq!(header(&dlq[1], "__connect.errors.stage"), "TASK_PUT");
    assert!(
        header(&dlq[1], "__connect.errors.exception.message").contains("integer"),
        "{}",
        dlq[1]
    );
    for m in &dlq {
        assert_eq!(header(m, "__connect.errors.topic"), "orders");
        assert_eq!(header(m, "__connect.errors.connector.name"), "pg");
        assert_eq!(header(m, "__connect.errors.task.id"), "0");
        header(m, "__connect.errors.partition")
            .parse::<i32>()
            .unwrap();
        header(m, "__connect.errors.offset").parse::<i64>().unwrap();
        header(m, "__connect.errors.exception.class.name");
    }
    assert_eq!(task_state(&worker.rest, "pg").0, "RUNNING");

    // The database goes away: with errors.retry.timeout the batch is retried until it is back.
    let mut retrying = config.clone();
    retrying["errors.retry.timeout"] = json!("-1");
    retrying["errors.retry.delay.max.ms"] = json!("1000");
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connectors/pg/config",
        Some(&retrying.to_string()),
    );
    assert_eq!(status, 200, "{v}");
    pg.stop();
    produce(
        &bootstrap,
        "orders",
        &format!("outage|{}\n", order(-2, "written after the outage")),
    );
    wait_for(
        Duration::from_secs(60),
        "the sink to retry the write",
        || {
            worker
                .log()
                .contains("writing to PostgreSQL failed (attempt 2")
                .then_some(())
        },
    );
    assert_eq!(task_state(&worker.rest, "pg").0, "RUNNING");
    pg.restart();
    wait_for(
        Duration::from_secs(60),
        "the record sent during the outage",
        || {
            (pg.try_psql("SELECT name FROM kafka_orders WHERE id = 'outage'")
                .as_deref()
                == Some("written after the outage"))
            .then_some(())
        },
    );
}

#[test]
fn a_failing_postgres_task_says_what_to_do_and_restarts_by_itself() {
    let pg = Postgres::start();
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let bootstrap = broker.bootstrap.clone();
    let worker = start_worker(dir.path(), &bootstrap);
    pg.psql("CREATE TABLE strict (id TEXT PRIMARY KEY, n INT NOT NULL)");
    produce(
        &bootstrap,
        "strict",
        "a|{\"id\":\"a\",\"n\":1}\nb|{\"id\":\"b\",\"n\":\"lots\"}\nc|{\"id\":\"c\",\"n\":3}\n",
    );
    let config = json!({
        "connector.class": "PostgresSink",
        "topics": "strict",
        "connection.url": format!("postgresql://fjord@127.0.0.1:{}/postgres", pg.port),
        "insert.mode": "upsert",
        "pk.mode": "record_value",
        "pk.fields": "id",
        "value.converter": "JsonConverter",
        "value.converter.schemas.enable": "false",
        "task.restart.backoff.initial.ms": "500",
        "task.restart.backoff.max.ms": "1000",
    });
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connectors/strict/config",
        Some(&config.to_string()),
    );
    assert_eq!(status, 201, "{v}");
    // errors.tolerance=none: the rows before the bad one are written, the task fails at it with a trace naming
    // the record and saying what to do.
    let trace = wait_for(Duration::from_secs(60), "the task to fail", || {
        let (state, trace) = task_state(&worker.rest, "strict");
        (state == "FAILED").then_some(trace)
    });
    assert!(trace.contains("strict-0 offset 1"), "{trace}");
    assert!(trace.contains("errors.tolerance=all"), "{trace}");
    assert!(
        trace.contains("restarts this task automatically"),
        "{trace}"
    );
    assert_eq!(pg.psql("SELECT string_agg(id, ',') FROM strict"), "a");
    // Fixing the cause (the column takes text now): the automatic restart writes the rest.
    pg.psql("ALTER TABLE strict ALTER COLUMN n TYPE TEXT");
    wait_for(
        Duration::from_secs(60),
        "the restarted task to write the rest",
        || {
            (pg.psql("SELECT string_agg(id || '=' || n, ',' ORDER BY id) FROM strict")
                == "a=1,b=lots,c=3")
                .then_some(())
        },
    );
    wait_for(Duration::from_secs(10), "RUNNING after the restart", || {
        (task_state(&worker.rest, "strict").0 == "RUNNING").then_some(())
    });
}

/// Every record of `topic` from the beginning: the values as JSON.
fn values_of(bootstrap: &str, topic: &str) -> Vec<Value> {
    let out = fjord(
        bootstrap,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|m| match &m["value"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            v => v.clone(),
        })
        .collect()
}

#[test]
fn postgres_source_copies_new_rows_and_resumes_from_its_offset() {
    let pg = Postgres::start();
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let bootstrap = broker.bootstrap.clone();
    pg.psql("CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT, price NUMERIC(8,2), qty INT)");
    pg.psql("INSERT INTO items (name, price, qty) VALUES ('tea', 3.50, 10), ('cup', 7.25, 2), ('pot', 19.99, NULL)");
    let config = json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector",
        "connection.url": pg.url(),
        "connection.user": "fjord",
        "mode": "incrementing",
        "incrementing.column.name": "id",
        "table.whitelist": "items",
        "topic.prefix": "pg-",
        "poll.interval.ms": "200",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    });
    let mut worker = start_worker(dir.path(), &bootstrap);
    // A mode without its column is refused, naming the field.
    let mut bad = config.clone();
    bad["mode"] = json!("timestamp");
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connectors/src/config",
        Some(&bad.to_string()),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("configuration timestamp.column.name"),
        "{v}"
    );
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connectors/src/config",
        Some(&config.to_string()),
    );
    assert_eq!(status, 201, "{v}");
    let got = wait_for(Duration::from_secs(60), "3 records", || {
        let v = values_of(&bootstrap, "pg-items");
        (v.len() >= 3).then_some(v)
    });
    assert_eq!(got.len(), 3, "{got:?}");
    let types: Vec<(String, String)> = got[0]["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("id", "int32"),
            ("name", "string"),
            ("price", "string"),
            ("qty", "int32")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        got[2]["payload"],
        json!({"id": 3, "name": "pot", "price": "19.99", "qty": null})
    );
    // New rows follow; the task stops with SIGTERM (offsets flushed), a row comes while it is down, and the
    // restarted connector goes on from its stored offset: every row once.
    pg.psql("INSERT INTO items (name, price, qty) VALUES ('lid', 1.00, 1), ('tray', 4.00, 3)");
    wait_for(Duration::from_secs(60), "5 records", || {
        (values_of(&bootstrap, "pg-items").len() >= 5).then_some(())
    });
    worker.stop();
    pg.psql("INSERT INTO items (name, price, qty) VALUES ('spoon', 0.50, 12)");
    worker = start_worker(dir.path(), &bootstrap);
    let (status, v) = http(
        &worker.rest,
        "PUT",
        "/connectors/src/config",
        Some(&config.to_string()),
    );
    assert_eq!(status, 201, "{v}");
    let got = wait_for(Duration::from_secs(60), "6 records", || {
        let v = values_of(&bootstrap, "pg-items");
        (v.len() >= 6).then_some(v)
    });
    std::thread::sleep(Duration::from_secs(1));
    let ids: Vec<i64> = values_of(&bootstrap, "pg-items")
        .iter()
        .map(|v| v["payload"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "{got:?}");
    let (_, v) = http(&worker.rest, "GET", "/connectors/src/offsets", None);
    assert_eq!(v["offsets"][0]["offset"], json!({"incrementing": 6}), "{v}");
}
