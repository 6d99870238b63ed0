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

    /// The server's processes (started by this test): the postmaster of `postmaster.pid` and its children.
    fn pids(&self) -> Vec<u32> {
        let Some(main) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return Vec::new();
        };
        let mut pids = vec![main];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Sends `sig` (STOP: the server hangs without closing a connection; CONT: it goes on) to its processes.
    pub fn signal(&self, sig: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.signal("CONT");
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
        let v = records_of(&bootstrap, "orders-dlq");
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
    records_of(bootstrap, topic).iter().map(value_of).collect()
}

/// A consumed record's value as JSON.
fn value_of(m: &Value) -> Value {
    match &m["value"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        v => v.clone(),
    }
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
            ("price", "bytes"),
            ("qty", "int32")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        got[2]["payload"],
        json!({"id": 3, "name": "pot", "price": "B88=", "qty": null})
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

/// One test's world: a standalone worker, a broker and a PostgreSQL cluster (dropped in that order).
struct Env {
    worker: WorkerProc,
    bootstrap: String,
    _broker: BrokerProc,
    pg: Postgres,
    dir: tempfile::TempDir,
}

fn env() -> Env {
    let pg = Postgres::start();
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let bootstrap = broker.bootstrap.clone();
    let worker = start_worker(dir.path(), &bootstrap);
    Env {
        worker,
        bootstrap,
        _broker: broker,
        pg,
        dir,
    }
}

/// Creates (or replaces) connector `name` with `config`; the worker must accept it.
fn put(rest: &str, name: &str, config: &Value) {
    let (status, v) = http(
        rest,
        "PUT",
        &format!("/connectors/{name}/config"),
        Some(&config.to_string()),
    );
    assert!(status == 201 || status == 200, "{status} {v}");
}

/// Waits until the task of `name` is FAILED; its trace.
fn failed(rest: &str, name: &str) -> String {
    wait_for(Duration::from_secs(60), "the task to fail", || {
        let (state, trace) = task_state(rest, name);
        (state == "FAILED").then_some(trace)
    })
}

/// Waits until `sql` answers `want`.
fn wait_rows(pg: &Postgres, sql: &str, want: &str) {
    wait_for(Duration::from_secs(120), &format!("{sql} = {want}"), || {
        (pg.try_psql(sql).as_deref() == Some(want)).then_some(())
    });
}

/// The offsets a sink connector committed, per `GET /connectors/{name}/offsets`: (topic, partition) to offset.
fn committed(rest: &str, name: &str) -> Vec<(String, i64, i64)> {
    let (status, v) = http(rest, "GET", &format!("/connectors/{name}/offsets"), None);
    assert_eq!(status, 200, "{v}");
    let mut out: Vec<(String, i64, i64)> = v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["partition"]["kafka_topic"].as_str().unwrap().to_string(),
                o["partition"]["kafka_partition"].as_i64().unwrap(),
                o["offset"]["kafka_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Failures that are not the records' (a permission taken away, the table dropped) never send records to the
/// dead-letter topic nor commit past them, even with `errors.tolerance=all`: the write is retried
/// (`max.retries`), the task fails saying why, and once the cause is fixed the automatic restart writes them.
#[test]
fn non_data_failures_fail_the_task_and_never_dead_letter_or_commit() {
    let Env {
        worker,
        bootstrap,
        pg,
        ..
    } = &env();
    // A user without superuser rights, so that privileges apply.
    pg.psql("CREATE ROLE app LOGIN");
    let create = "CREATE TABLE acct (id TEXT PRIMARY KEY, n INT); GRANT ALL ON acct TO app";
    pg.psql(create);
    produce(
        bootstrap,
        "acct",
        "a|{\"id\":\"a\",\"n\":1}\nb|{\"id\":\"b\",\"n\":2}\n",
    );
    let config = json!({
        "connector.class": "PostgresSink",
        "topics": "acct",
        "connection.url": format!("postgresql://app@127.0.0.1:{}/postgres", pg.port),
        "insert.mode": "upsert",
        "pk.mode": "record_value",
        "pk.fields": "id",
        "value.converter": "JsonConverter",
        "value.converter.schemas.enable": "false",
        "errors.tolerance": "all",
        "errors.deadletterqueue.topic.name": "acct-dlq",
        "max.retries": "2",
        "retry.backoff.ms": "200",
        "connection.attempts": "1",
        "task.restart.backoff.initial.ms": "3000",
        "task.restart.backoff.max.ms": "3000",
    });
    put(&worker.rest, "acct", &config);
    let offsets = |n: i64| {
        wait_for(Duration::from_secs(30), "the offsets committed", || {
            (committed(&worker.rest, "acct") == [("acct".to_string(), 0, n)]).then_some(())
        })
    };
    wait_rows(pg, "SELECT count(*) FROM acct", "2");
    offsets(2);

    // The permission to insert is taken away: the rows are not written, the task fails naming the cause and
    // the record, nothing is dead-lettered and nothing past the rows written is committed.
    pg.psql("REVOKE INSERT ON acct FROM app");
    let more = "c|{\"id\":\"c\",\"n\":3}\nd|{\"id\":\"d\",\"n\":4}\ne|{\"id\":\"e\",\"n\":5}\n";
    produce(bootstrap, "acct", more);
    let trace = failed(&worker.rest, "acct");
    assert!(trace.contains("permission denied"), "{trace}");
    assert!(trace.contains("acct-0 offset 2"), "{trace}");
    assert!(trace.contains("max.retries=2"), "{trace}");
    assert!(worker
        .log()
        .contains("writing to PostgreSQL failed (attempt 2"));
    assert_eq!(
        committed(&worker.rest, "acct"),
        [("acct".to_string(), 0, 2)]
    );
    assert!(records_of(bootstrap, "acct-dlq").is_empty());
    assert_eq!(pg.psql("SELECT count(*) FROM acct"), "2");

    // The permission back: the automatic restart writes the rows.
    pg.psql("GRANT INSERT ON acct TO app");
    let all = "SELECT string_agg(id || '=' || n, ',' ORDER BY id) FROM acct";
    wait_rows(pg, all, "a=1,b=2,c=3,d=4,e=5");
    offsets(5);

    // The table dropped (auto.create=false): the same, and the row comes once the table is back.
    pg.psql("DROP TABLE acct");
    produce(bootstrap, "acct", "f|{\"id\":\"f\",\"n\":6}\n");
    let trace = failed(&worker.rest, "acct");
    assert!(trace.contains("does not exist"), "{trace}");
    assert_eq!(
        committed(&worker.rest, "acct"),
        [("acct".to_string(), 0, 5)]
    );
    pg.psql(create);
    wait_rows(pg, all, "f=6");
    offsets(6);
    assert!(records_of(bootstrap, "acct-dlq").is_empty());
}

/// A server that hangs (its processes stopped, the connection left open) times the write out
/// (`write.timeout.ms`) instead of hanging the task, and a pause does not wait out the retry backoff: the task
/// stops within the worker's shutdown timeout, uncommitted, and the row is written after the resume.
#[test]
fn a_hung_server_times_out_and_a_pause_does_not_wait_for_the_backoff() {
    let Env {
        worker,
        bootstrap,
        pg,
        ..
    } = &env();
    produce(bootstrap, "hang", "a|{\"id\":\"a\",\"n\":1}\n");
    let config = json!({
        "connector.class": "PostgresSink",
        "topics": "hang",
        "connection.url": pg.url(),
        "connection.user": "fjord",
        "insert.mode": "upsert",
        "pk.mode": "record_value",
        "pk.fields": "id",
        "auto.create": "true",
        "value.converter": "JsonConverter",
        "value.converter.schemas.enable": "false",
        "write.timeout.ms": "2000",
        "connection.attempts": "1",
        "max.retries": "100",
        "retry.backoff.ms": "60000",
    });
    put(&worker.rest, "hang", &config);
    let ids = "SELECT string_agg(id, ',' ORDER BY id) FROM hang";
    wait_rows(pg, ids, "a");
    pg.signal("STOP");
    produce(bootstrap, "hang", "b|{\"id\":\"b\",\"n\":2}\n");
    wait_for(Duration::from_secs(30), "the write to time out", || {
        worker
            .log()
            .contains("timed out after 2s (write.timeout.ms)")
            .then_some(())
    });
    assert_eq!(task_state(&worker.rest, "hang").0, "RUNNING");
    // In the 60 s backoff now: a pause stops the task at once.
    let paused = Instant::now();
    let (status, v) = http(&worker.rest, "PUT", "/connectors/hang/pause", None);
    assert!(status == 202 || status == 204, "{status} {v}");
    wait_for(Duration::from_secs(10), "the task to stop", || {
        worker
            .log()
            .contains("PostgreSQL sink stopped")
            .then_some(())
    });
    assert!(
        paused.elapsed() < Duration::from_secs(5),
        "{:?}",
        paused.elapsed()
    );
    assert!(!worker.log().contains("did not stop within"));
    pg.signal("CONT");
    let (status, v) = http(&worker.rest, "PUT", "/connectors/hang/resume", None);
    assert!(status == 202 || status == 204, "{status} {v}");
    wait_rows(pg, ids, "a,b");
}

/// Transforms apply to the sink's records (RegexRouter picks the table, InsertField adds a column), and
/// `insert.mode=insert` refuses a second row of a key: that record is errant (dead-lettered with
/// `errors.tolerance=all`), the first row stays, the others are written.
#[test]
fn postgres_sink_applies_transforms_and_insert_mode_dead_letters_duplicate_keys() {
    let Env {
        worker,
        bootstrap,
        pg,
        ..
    } = &env();
    produce(
        bootstrap,
        "raw-things",
        "a|{\"id\":\"a\",\"n\":1}\nb|{\"id\":\"b\",\"n\":2}\na|{\"id\":\"a\",\"n\":3}\nc|{\"id\":\"c\",\"n\":4}\n",
    );
    let config = json!({
        "connector.class": "PostgresSink",
        "topics": "raw-things",
        "connection.url": pg.url(),
        "connection.user": "fjord",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "errors.log.enable": "true",
        "insert.mode": "insert",
        "pk.mode": "record_value",
        "pk.fields": "id",
        "auto.create": "true",
        "value.converter": "JsonConverter",
        "value.converter.schemas.enable": "false",
        "errors.tolerance": "all",
        "errors.deadletterqueue.topic.name": "things-dlq",
        "transforms": "route,src",
        "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
        "transforms.route.regex": "raw-(.*)",
        "transforms.route.replacement": "$1",
        "transforms.src.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.src.static.field": "src",
        "transforms.src.static.value": "kafka",
    });
    put(&worker.rest, "things", &config);
    wait_rows(
        pg,
        "SELECT string_agg(id || '=' || n || ':' || src, ',' ORDER BY id) FROM things",
        "a=1:kafka,b=2:kafka,c=4:kafka",
    );
    assert_eq!(pg.try_psql("SELECT count(*) FROM \"raw-things\""), None);
    let dlq = wait_for(
        Duration::from_secs(30),
        "the duplicate dead-lettered",
        || {
            let v = records_of(bootstrap, "things-dlq");
            (!v.is_empty()).then_some(v)
        },
    );
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["key"], "a");
    assert_eq!(value_of(&dlq[0]), json!({"id": "a", "n": 3}));
    assert_eq!(task_state(&worker.rest, "things").0, "RUNNING");
}

/// kill -9 of the worker in the middle of a load: after a restart every record is a row with its value (the
/// rows written but not committed before the kill are written again, harmlessly: upserts).
#[test]
fn a_killed_worker_loses_no_row() {
    let mut e = env();
    ok(&fjord(
        &e.bootstrap,
        &["topics", "create", "loadtest", "--partitions", "3"],
        None,
    ));
    const N: i64 = 100_000;
    let mut lines = String::new();
    for i in 0..N {
        lines.push_str(&format!("k{i}|{}\n", order(i, &format!("v-{i}"))));
    }
    produce(&e.bootstrap, "loadtest", &lines);
    let config = json!({
        "connector.class": "PostgresSink",
        "topics": "loadtest",
        "connection.url": e.pg.url(),
        "connection.user": "fjord",
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "pk.fields": "id",
        "auto.create": "true",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    });
    put(&e.worker.rest, "loadtest", &config);
    let at_kill: i64 = wait_for(Duration::from_secs(120), "the first rows", || {
        e.pg.try_psql("SELECT count(*) FROM loadtest")
            .and_then(|c| c.parse::<i64>().ok())
            .filter(|c| *c > 0)
    });
    e.worker.kill9();
    assert!(at_kill < N, "the load ended before the kill: {at_kill}");
    e.worker = start_worker(e.dir.path(), &e.bootstrap);
    put(&e.worker.rest, "loadtest", &config);
    wait_rows(
        &e.pg,
        "SELECT count(*), sum(n), count(*) FILTER (WHERE name = 'v-' || n AND id = 'k' || n) FROM loadtest",
        &format!("{N}|{}|{N}", N * (N - 1) / 2),
    );
}

/// The source's timestamp+incrementing mode pages on (timestamp, id), so runs of rows of one timestamp longer
/// than `batch.max.rows` go through whole, each row once; timestamp mode reads such runs whole; and the source's
/// transforms apply (ValueToKey + ExtractField make the id the key).
#[test]
fn postgres_source_timestamp_modes_page_through_rows_of_one_timestamp() {
    let Env {
        worker,
        bootstrap,
        pg,
        ..
    } = &env();
    pg.psql("CREATE TABLE ev (id SERIAL PRIMARY KEY, at TIMESTAMP NOT NULL, name TEXT)");
    pg.psql("INSERT INTO ev (at, name) SELECT '2024-01-01 00:00:00', 'same-' || g FROM generate_series(1, 250) g");
    pg.psql("INSERT INTO ev (at, name) SELECT '2024-01-02 00:00:00', 'later-' || g FROM generate_series(1, 5) g");
    for (name, mode) in [("ti", "timestamp+incrementing"), ("ts", "timestamp")] {
        let config = json!({
            "connector.class": "PostgresSource",
            "connection.url": pg.url(),
            "connection.user": "fjord",
            "mode": mode,
            "timestamp.column.name": "at",
            "incrementing.column.name": "id",
            "table.whitelist": "ev",
            "topic.prefix": format!("{name}-"),
            "poll.interval.ms": "200",
            "batch.max.rows": "100",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "false",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "transforms": "key,id",
            "transforms.key.type": "org.apache.kafka.connect.transforms.ValueToKey",
            "transforms.key.fields": "id",
            "transforms.id.type": "org.apache.kafka.connect.transforms.ExtractField$Key",
            "transforms.id.field": "id",
        });
        put(&worker.rest, name, &config);
    }
    // The ids of the records of `topic` once there are `n` (and a moment later, so that duplicates show).
    let ids = |topic: &str, n: usize| -> Vec<i64> {
        wait_for(
            Duration::from_secs(60),
            &format!("{n} records of {topic}"),
            || (records_of(bootstrap, topic).len() >= n).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(500));
        records_of(bootstrap, topic)
            .iter()
            .map(|m| {
                let id = value_of(m)["payload"]["id"].as_i64().unwrap();
                assert_eq!(m["key"].as_str().unwrap(), id.to_string(), "{m}");
                id
            })
            .collect()
    };
    let all: Vec<i64> = (1..=255).collect();
    assert_eq!(ids("ti-ev", 255), all);
    let mut ts = ids("ts-ev", 255);
    ts.sort();
    assert_eq!(ts, all);
    // More rows of the last timestamp: timestamp+incrementing takes them (a later id), each once.
    pg.psql("INSERT INTO ev (at, name) VALUES ('2024-01-02 00:00:00', 'late-1'), ('2024-01-02 00:00:00', 'late-2')");
    let all: Vec<i64> = (1..=257).collect();
    assert_eq!(ids("ti-ev", 257), all);
    let (_, v) = http(&worker.rest, "GET", "/connectors/ti/offsets", None);
    assert_eq!(
        v["offsets"][0]["offset"],
        json!({"timestamp": "2024-01-02 00:00:00", "incrementing": 257}),
        "{v}"
    );
}

/// The PostgreSQL source maps columns as Confluent's JDBC source: DATE, TIME, TIMESTAMP(TZ) and NUMERIC become
/// Connect's Date (days), Time (ms of the day), Timestamp (ms) and Decimal (unscaled bytes at the column's scale,
/// 127 for a NUMERIC without one; `numeric.mapping=best_fit` a double or an int16 by precision and scale), a NOT
/// NULL column is not optional, in timestamp+incrementing mode on a TIMESTAMPTZ column (the JSON converter's
/// envelope checked whole); a NaN numeric fails the task naming the column.
#[test]
fn postgres_source_maps_dates_times_timestamps_and_numerics_as_confluents_jdbc_source() {
    let Env {
        worker,
        bootstrap,
        pg,
        ..
    } = &env();
    pg.psql("CREATE TABLE ev (id SERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL, day DATE, t TIME, price NUMERIC(8,2) NOT NULL, ratio NUMERIC, n NUMERIC(4,0), local TIMESTAMP, note TEXT NOT NULL)");
    pg.psql("INSERT INTO ev (at, day, t, price, ratio, n, local, note) VALUES ('2024-01-02 03:04:05.123456+00', '2024-01-02', '12:34:56.789', 3.50, 1.5, 42, '1969-12-31 23:59:59.9991', 'a'), ('2024-01-03 00:00:00+00', NULL, NULL, -7.25, NULL, NULL, NULL, 'b')");
    for (name, mapping) in [("none", "none"), ("bf", "best_fit")] {
        put(
            &worker.rest,
            name,
            &json!({
                "connector.class": "PostgresSource",
                "connection.url": pg.url(),
                "connection.user": "fjord",
                "mode": "timestamp+incrementing",
                "timestamp.column.name": "at",
                "incrementing.column.name": "id",
                "table.whitelist": "ev",
                "topic.prefix": format!("{name}-"),
                "numeric.mapping": mapping,
                "poll.interval.ms": "200",
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            }),
        );
    }
    let got = |topic: &str| {
        wait_for(
            Duration::from_secs(60),
            &format!("2 records of {topic}"),
            || {
                let v = values_of(bootstrap, topic);
                (v.len() >= 2).then_some(v)
            },
        )
    };
    let logical = |field: &str, ty: &str, name: &str, optional: bool| {
        json!({"field": field, "type": ty, "optional": optional,
            "name": format!("org.apache.kafka.connect.data.{name}"), "version": 1})
    };
    let decimal = |field: &str, optional: bool, parameters: Value| {
        let mut d = logical(field, "bytes", "Decimal", optional);
        d["parameters"] = parameters;
        d
    };
    let none = got("none-ev");
    assert_eq!(
        none[0]["schema"],
        json!({"type": "struct", "optional": false, "fields": [
            {"field": "id", "type": "int32", "optional": false},
            logical("at", "int64", "Timestamp", false),
            logical("day", "int32", "Date", true),
            logical("t", "int32", "Time", true),
            decimal("price", false, json!({"scale": "2", "connect.decimal.precision": "8"})),
            decimal("ratio", true, json!({"scale": "127"})),
            decimal("n", true, json!({"scale": "0", "connect.decimal.precision": "4"})),
            logical("local", "int64", "Timestamp", true),
            {"field": "note", "type": "string", "optional": false},
        ]}),
        "{none:?}"
    );
    let mut first = none[0]["payload"].clone();
    // 1.5 at scale 127: 15 * 10^126, 53 bytes of base64.
    let ratio = first["ratio"].take();
    assert_eq!(ratio.as_str().map(str::len), Some(72), "{ratio}");
    assert_eq!(
        first,
        json!({"id": 1, "at": 1_704_164_645_123i64, "day": 19724, "t": 45_296_789, "price": "AV4=",
            "ratio": null, "n": "Kg==", "local": -1, "note": "a"})
    );
    assert_eq!(
        none[1]["payload"],
        json!({"id": 2, "at": 1_704_240_000_000i64, "day": null, "t": null, "price": "/Ss=",
            "ratio": null, "n": null, "local": null, "note": "b"})
    );
    let bf = got("bf-ev");
    let types: Vec<&Value> = bf[0]["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["type"])
        .collect();
    assert_eq!(
        types,
        ["int32", "int64", "int32", "int32", "double", "bytes", "int16", "int64", "string"]
    );
    assert_eq!(bf[0]["payload"]["price"], json!(3.5));
    assert_eq!(bf[0]["payload"]["n"], json!(42));
    assert_eq!(bf[1]["payload"]["price"], json!(-7.25));
    // The timestamp+incrementing offset still works: a later row comes, each once.
    pg.psql("INSERT INTO ev (at, price, note) VALUES ('2024-01-04 00:00:00+00', 1, 'c')");
    wait_for(Duration::from_secs(60), "the third row", || {
        (values_of(bootstrap, "none-ev").len() >= 3).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let ids: Vec<i64> = values_of(bootstrap, "none-ev")
        .iter()
        .map(|v| v["payload"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);

    // NaN has no Decimal: the task fails, naming the column.
    pg.psql("CREATE TABLE bad (id SERIAL PRIMARY KEY, v NUMERIC)");
    pg.psql("INSERT INTO bad (v) VALUES ('NaN')");
    put(
        &worker.rest,
        "nan",
        &json!({
            "connector.class": "PostgresSource",
            "connection.url": pg.url(),
            "connection.user": "fjord",
            "mode": "bulk",
            "table.whitelist": "bad",
            "topic.prefix": "nan-",
            "poll.interval.ms": "200",
            "task.restart.max.attempts": "0",
        }),
    );
    let trace = failed(&worker.rest, "nan");
    assert!(
        trace.contains("column v of \"bad\": the value NaN has no Connect Decimal value"),
        "{trace}"
    );
}

/// Confluent's `AvroConverter` between PostgreSQL and the topics, with `fjord start`'s Schema Registry and
/// confluent-kafka Python's AvroSerializer/AvroDeserializer on the other side: Avro records become rows of a
/// table the sink creates (`auto.create`, `pk.mode=record_value`: typed columns from the registered schema, the
/// key column from the record's field), the record not in the wire format goes to the dead-letter topic; and a
/// PostgreSQL source writes rows as Avro records that the deserializer decodes, with their struct schema
/// registered under `<topic>-value`.
#[test]
fn avro_records_become_rows_and_rows_become_avro_records_through_the_registry() {
    let pg = Postgres::start();
    let dir = temp_dir();
    let log = std::fs::File::create(dir.path().join("platform.log")).unwrap();
    let (child, line) = start_platform(
        &dir.path().join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        std::process::Stdio::from(log),
    );
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _platform = Killed(child);
    let kafka = field(&line, "kafka=").to_string();
    let registry = format!("http://{}", field(&line, "registry="));
    let rest = field(&line, "connect=").to_string();
    let script = workspace_root().join("tests/clients/connect_registry.py");
    let python = |args: &[&str]| {
        ok(&run_bounded(
            Command::new(python()).arg(&script).args(args),
            Duration::from_secs(120),
        ))
    };
    ok(&fjord(
        &kafka,
        &["topics", "create", "items", "--partitions", "1"],
        None,
    ));
    assert!(python(&["produce", &kafka, &registry, "items"]).starts_with("OK 5"));
    put(
        &rest,
        "avro-pg",
        &json!({
            "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
            "topics": "items",
            "connection.url": pg.url(),
            "connection.user": "fjord",
            "insert.mode": "upsert",
            "pk.mode": "record_value",
            "pk.fields": "sku",
            "auto.create": "true",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": registry,
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": "items-dlq",
        }),
    );
    wait_rows(
        &pg,
        "SELECT sku, qty, price, note, day FROM items ORDER BY sku",
        "a-1|3|1.5||2022-01-08\nb-2|7|2.25|fragile|2022-01-09\nc-3|0|10|x\ty|1970-01-01",
    );
    assert_eq!(
        pg.psql(
            "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'items'"
        ),
        "sku:text,qty:integer,price:double precision,note:text,day:date"
    );
    assert_eq!(
        pg.psql(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'items'::regclass AND i.indisprimary"
        ),
        "sku"
    );
    let dlq = wait_for(Duration::from_secs(30), "the dead letter", || {
        let v = records_of(&kafka, "items-dlq");
        (v.len() >= 2).then_some(v)
    });
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    assert_eq!(dlq[0]["value"], "not avro at all", "{dlq:?}");
    assert_eq!(task_state(&rest, "avro-pg").0, "RUNNING");

    // Rows to Avro records.
    pg.psql("CREATE TABLE goods (id SERIAL PRIMARY KEY, name TEXT NOT NULL, qty INT, price NUMERIC(8,2), day DATE, at TIMESTAMPTZ, t TIME)");
    pg.psql("INSERT INTO goods (name, qty, price, day, at, t) VALUES ('tea', 10, 3.50, '2024-01-02', '2024-01-02 03:04:05.123+00', '12:34:56.789'), ('cup', NULL, -7.25, NULL, NULL, NULL)");
    put(
        &rest,
        "avro-src",
        &json!({
            "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector",
            "connection.url": pg.url(),
            "connection.user": "fjord",
            "mode": "incrementing",
            "incrementing.column.name": "id",
            "table.whitelist": "goods",
            "topic.prefix": "pg-",
            "poll.interval.ms": "200",
            "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": registry,
        }),
    );
    wait_for(Duration::from_secs(60), "2 records in pg-goods", || {
        (records_of(&kafka, "pg-goods").len() >= 2).then_some(())
    });
    let out = python(&["consume", &kafka, &registry, "pg-goods", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    let values: Vec<Value> = lines[..2]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            // confluent-kafka's AvroDeserializer gives the logical types as Python's Decimal, date, datetime
            // and time (printed with str()).
            json!({"id": 1, "name": "tea", "qty": 10, "price": "3.50", "day": "2024-01-02",
                "at": "2024-01-02 03:04:05.123000+00:00", "t": "12:34:56.789000"}),
            json!({"id": 2, "name": "cup", "qty": null, "price": "-7.25", "day": null, "at": null,
                "t": null})
        ],
        "{out}"
    );
    let schema: Value = serde_json::from_str(
        lines
            .iter()
            .find_map(|l| l.strip_prefix("schema "))
            .unwrap_or_else(|| panic!("{out}")),
    )
    .unwrap();
    assert_eq!(schema["type"], "record", "{schema}");
    assert_eq!(schema["name"], "ConnectDefault", "{schema}");
    let fields: Vec<(String, Value)> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), f["type"].clone()))
        .collect();
    assert_eq!(
        fields,
        [
            // A NOT NULL column is required; the others are unions with null.
            ("id".to_string(), json!("int")),
            ("name".to_string(), json!("string")),
            ("qty".to_string(), json!(["null", "int"])),
            (
                "price".to_string(),
                json!(["null", {"type": "bytes", "scale": 2, "precision": 8, "connect.version": 1,
                    "connect.parameters": {"scale": "2"}, "connect.name": "org.apache.kafka.connect.data.Decimal",
                    "logicalType": "decimal"}])
            ),
            (
                "day".to_string(),
                json!(["null", {"type": "int", "connect.version": 1,
                    "connect.name": "org.apache.kafka.connect.data.Date", "logicalType": "date"}])
            ),
            (
                "at".to_string(),
                json!(["null", {"type": "long", "connect.version": 1,
                    "connect.name": "org.apache.kafka.connect.data.Timestamp", "logicalType": "timestamp-millis"}])
            ),
            (
                "t".to_string(),
                json!(["null", {"type": "int", "connect.version": 1,
                    "connect.name": "org.apache.kafka.connect.data.Time", "logicalType": "time-millis"}])
            )
        ],
        "{schema}"
    );
}

/// `fjord start` (broker, registry, Connect worker) on free ports, killed on drop.
struct Platform {
    child: std::process::Child,
    kafka: String,
    registry: String,
    rest: String,
}

impl Platform {
    fn start(dir: &Path) -> Platform {
        let log = std::fs::File::create(dir.join("platform.log")).unwrap();
        let (child, line) = start_platform(
            &dir.join("data"),
            "127.0.0.1:0",
            "127.0.0.1:0",
            std::process::Stdio::from(log),
        );
        Platform {
            child,
            kafka: field(&line, "kafka=").to_string(),
            registry: format!("http://{}", field(&line, "registry=")),
            rest: field(&line, "connect=").to_string(),
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL source with `value.converter=io.confluent.connect.protobuf.ProtobufConverter` (and
/// `optional.for.nullables=true`), an InsertField transform adding the record's timestamp field: the proto3 schema
/// derived from the rows' Connect struct is registered under `<topic>-value` (`ConnectDefault1`, the timestamp a
/// `google.protobuf.Timestamp`, the nullable columns proto3 `optional`), and confluent-kafka's
/// ProtobufDeserializer (message class built at run time from the registry's descriptor) reads every row back
/// with its values, a NULL column as an unset field.
#[test]
fn a_postgres_source_with_the_protobuf_converter_writes_what_confluents_deserializer_reads() {
    let pg = Postgres::start();
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    pg.psql("CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT, qty INT, big BIGINT, small SMALLINT, price FLOAT8, ok BOOLEAN, day DATE)");
    pg.psql("INSERT INTO items (name, qty, big, small, price, ok, day) VALUES ('tea', 10, 5000000000, -3, 3.5, true, '2024-01-02'), ('cup', NULL, -1, 0, 0.25, false, NULL), (NULL, 0, NULL, NULL, NULL, NULL, NULL)");
    let body = json!({"name": "pb-src", "config": {
        "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector",
        "connection.url": pg.url(),
        "connection.user": "fjord",
        "mode": "incrementing",
        "incrementing.column.name": "id",
        "table.whitelist": "items",
        "topic.prefix": "pb-",
        "poll.interval.ms": "200",
        "value.converter": "io.confluent.connect.protobuf.ProtobufConverter",
        "value.converter.schema.registry.url": p.registry,
        "value.converter.optional.for.nullables": "true",
        "transforms": "ts",
        "transforms.ts.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.ts.timestamp.field": "at",
    }})
    .to_string();
    let (status, v) = http(&p.rest, "POST", "/connectors", Some(&body));
    assert_eq!(status, 201, "{v}");
    let out = ok(&run_bounded(
        Command::new(python())
            .arg(workspace_root().join("tests/clients/connect_protobuf_source.py"))
            .args(["read", &p.kafka, &p.registry, "pb-items", "3"]),
        Duration::from_secs(120),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let records: Vec<Value> = lines[..3]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let values: Vec<Value> = records.iter().map(|r| r["value"].clone()).collect();
    // proto3 JSON: 64-bit integers as strings; a field set to its default is left out unless it is `optional`.
    // The source's records have no timestamp (as the JDBC source's), so InsertField adds a null `at`: unset.
    assert_eq!(
        values,
        [
            // A DATE column is Connect's Date, a google.type.Date.
            json!({"id": 1, "name": "tea", "qty": 10, "big": "5000000000", "small": -3, "price": 3.5, "ok": true,
                "day": {"year": 2024, "month": 1, "day": 2}}),
            json!({"id": 2, "name": "cup", "big": "-1", "small": 0, "price": 0.25, "ok": false}),
            json!({"id": 3, "qty": 0}),
        ],
        "{out}"
    );
    for r in &records {
        assert_eq!(r["indexes"], "00", "{r}");
        assert_eq!(r["id"], records[0]["id"], "{r}");
        assert_eq!(r["timestamps"], json!({}), "{r}");
    }
    let schema: String = serde_json::from_str(lines[3].strip_prefix("schema ").unwrap()).unwrap();
    for want in [
        "message ConnectDefault1 {",
        // id is NOT NULL: not optional.
        "  int32 id = 1;",
        "optional string name = 2;",
        "optional int64 big = 4;",
        "google.type.Date day = 8;",
        "google.protobuf.Timestamp at = 9;",
    ] {
        assert!(schema.contains(want), "{want:?} not in {schema}");
    }
    let (_, latest) = http(
        &p.registry.replace("http://", ""),
        "GET",
        "/subjects/pb-items-value/versions/latest",
        None,
    );
    assert_eq!(latest["id"], records[0]["id"], "{latest}");
    assert_eq!(latest["schemaType"], "PROTOBUF", "{latest}");

    // A column whose name is no Protobuf field name: the task fails with an error naming the field (nothing is
    // registered or sent).
    pg.psql("CREATE TABLE odd (id SERIAL PRIMARY KEY, \"bad-name\" INT)");
    pg.psql("INSERT INTO odd (\"bad-name\") VALUES (1)");
    let mut config: Value = serde_json::from_str::<Value>(&body).unwrap()["config"].clone();
    config["table.whitelist"] = json!("odd");
    config["task.restart.max.attempts"] = json!("0");
    let (status, v) = http(
        &p.rest,
        "PUT",
        "/connectors/pb-odd/config",
        Some(&config.to_string()),
    );
    assert_eq!(status, 201, "{v}");
    let trace = failed(&p.rest, "pb-odd");
    assert!(
        trace
            .contains("value.converter: field bad-name: \"bad-name\" is not a Protobuf field name"),
        "{trace}"
    );
    let (status, _) = http(
        &p.registry.replace("http://", ""),
        "GET",
        "/subjects/pb-odd-value/versions/latest",
        None,
    );
    assert_eq!(status, 404);
}

/// A value schema registered by confluent-kafka's JSONSerializer with a reference (its properties `$ref` the
/// definitions of another subject's schema, `common.json#/definitions/...`): the JsonSchemaConverter fetches the
/// referenced schema, validates each record against both and maps the resolved schema to Connect's, so the
/// PostgreSQL sink creates typed columns and writes every row (before: the records were errant, "references
/// other schemas").
#[test]
fn json_schema_records_whose_schema_has_references_become_rows() {
    let pg = Postgres::start();
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    ok(&fjord(
        &p.kafka,
        &["topics", "create", "refs", "--partitions", "1"],
        None,
    ));
    let out = ok(&run_bounded(
        Command::new(python())
            .arg(workspace_root().join("tests/clients/connect_registry.py"))
            .args(["produce-json-ref", &p.kafka, &p.registry, "refs"]),
        Duration::from_secs(120),
    ));
    assert!(out.starts_with("OK 3"), "{out}");
    put(
        &p.rest,
        "json-refs",
        &json!({
            "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
            "topics": "refs",
            "connection.url": pg.url(),
            "connection.user": "fjord",
            "insert.mode": "upsert",
            "pk.mode": "record_value",
            "pk.fields": "sku",
            "auto.create": "true",
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "io.confluent.connect.json.JsonSchemaConverter",
            "value.converter.schema.registry.url": p.registry,
            "task.restart.max.attempts": "0",
        }),
    );
    wait_rows(
        &pg,
        "SELECT sku, qty, price FROM refs ORDER BY sku",
        "a-1|3|1.5\nb-2|7|2.25\nc-3|0|10",
    );
    assert_eq!(
        pg.psql(
            "SELECT string_agg(column_name || ':' || data_type || ':' || is_nullable, ',' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'refs'"
        ),
        // The key column first (as the sink creates tables), then the fields in the Connect schema's order.
        "sku:text:NO,price:double precision:NO,qty:bigint:NO"
    );
    assert_eq!(task_state(&p.rest, "json-refs").0, "RUNNING");
}
