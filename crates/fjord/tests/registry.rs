//! The Schema Registry with real processes and real clients: confluent-kafka's Avro serializer and
//! deserializer through `fjord start`, and `fjord registry` beside `fjord broker`, killed with -9 and
//! restarted.
#![cfg(feature = "registry")]

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Spawns `cmd` and waits (60 s at most) for its first stdout line.
fn spawn_ready(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if !line.is_empty() => (child, line),
        _ => {
            let _ = child.kill();
            panic!("the process never printed its ready line");
        }
    }
}

/// An HTTP/1.1 request; returns the status and the body as JSON (or as a JSON string when it is not JSON).
fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    http_with(addr, method, path, body, "")
}

/// [`http`] with extra header lines (each ending in `\r\n`).
fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &str,
) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (413) and close before reading all of an oversized body.
        let _ = s.write_all(b);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in `{text}`"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (status, v)
}

fn register(addr: &str, subject: &str, schema: &str) -> i64 {
    let body = json!({ "schema": schema }).to_string();
    let (status, v) = http(
        addr,
        "POST",
        &format!("/subjects/{subject}/versions"),
        Some(body.as_bytes()),
    );
    assert_eq!(status, 200, "{v}");
    v["id"].as_i64().unwrap()
}

fn record_schema(name: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","fields":[{{"name":"a","type":"string"}}]}}"#)
}

#[test]
fn avro_serializer_and_deserializer_round_trip_through_fjord_start() {
    let dir = temp_dir();
    let (mut child, line) = spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["start", "--data-dir"])
            .arg(dir.path())
            .args([
                "--override",
                "listeners=PLAINTEXT://127.0.0.1:0",
                "--override",
                "metrics.listener=127.0.0.1:0",
                "--registry-listener",
                "127.0.0.1:0",
                "--connect-listener",
                "none",
                "--sql-listener",
                "none",
            ]),
    );
    let kafka = field(&line, "kafka=").to_string();
    let registry = field(&line, "registry=").to_string();
    let out = run_client(
        "avro_registry.py",
        &[&kafka, &format!("http://{registry}"), "catalog"],
        Duration::from_secs(120),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["value"], json!({"sku": "a-1", "price": 1.5}));
    let third: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(third["value"]["tags"], json!(["x", "y"]));
    assert_ne!(first["id"], third["id"], "two versions, two ids");
    // The schemas are in the compacted _schemas topic, in Confluent's record format.
    let desc = ok(&fjord(&kafka, &["topics", "describe", "_schemas"], None));
    assert!(
        desc.contains("cleanup.policy=compact") || desc.contains("compact"),
        "{desc}"
    );
    let records = ok(&fjord(
        &kafka,
        &[
            "consume",
            "_schemas",
            "--from-beginning",
            "--print-key",
            // The start-up NOOP, the NOOP the primary commits when it is elected, then the first schema.
            "--max-messages",
            "3",
            "--timeout-ms",
            "20000",
        ],
        None,
    ));
    assert!(
        records.contains(r#"{"keytype":"SCHEMA","subject":"catalog-value","version":1,"magic":1}"#),
        "{records}"
    );
    interrupt(&mut child);
}

fn spawn_registry(bootstrap: &str) -> (Child, String) {
    let (child, line) = spawn_ready(Command::new(env!("CARGO_BIN_EXE_fjord")).args([
        "registry",
        "--bootstrap-server",
        bootstrap,
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(line.starts_with("fjord registry ready"), "{line}");
    let addr = field(&line, "listen=").to_string();
    (child, addr)
}

#[test]
fn registry_killed_with_sigkill_restarts_with_every_subject_version_and_id() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let (mut reg, addr) = spawn_registry(&broker.bootstrap);

    // Registrations, a shared id, a soft delete and a config.
    let a1 = register(&addr, "a", &record_schema("A"));
    let b1 = register(&addr, "b", &record_schema("A"));
    assert_eq!(a1, b1, "the same schema has one id in every subject");
    let c1 = register(&addr, "c", r#""string""#);
    let c2 = register(&addr, "c", r#"["null","string"]"#);
    assert_eq!(http(&addr, "DELETE", "/subjects/b", None).0, 200);
    let cfg = json!({"compatibility": "FULL"}).to_string();
    assert_eq!(http(&addr, "PUT", "/config/c", Some(cfg.as_bytes())).0, 200);

    // Bad input against the real process: Confluent's codes, never a 500.
    let (s, v) = http(&addr, "POST", "/subjects/x/versions", Some(b"{oops"));
    assert_eq!((s, v["error_code"].as_i64()), (400, Some(400)), "{v}");
    let (s, v) = http(
        &addr,
        "POST",
        "/subjects/x/versions",
        Some(br#"{"schema":"{\"type\":\"record\"}"}"#),
    );
    assert_eq!((s, v["error_code"].as_i64()), (422, Some(42201)), "{v}");
    let big = vec![b'x'; 17 * 1024 * 1024];
    let (s, _) = http(&addr, "POST", "/subjects/x/versions", Some(&big));
    assert_eq!(s, 413);
    let (s, v) = http(&addr, "GET", "/subjects/nobody/versions", None);
    assert_eq!((s, v["error_code"].as_i64()), (404, Some(40401)), "{v}");
    let (s, v) = http(&addr, "GET", "/schemas/ids/4242", None);
    assert_eq!((s, v["error_code"].as_i64()), (404, Some(40403)), "{v}");

    let before: Vec<Value> = [
        "/subjects?deleted=true",
        "/subjects/a/versions",
        "/subjects/c/versions",
        "/subjects/b/versions?deleted=true",
        "/subjects/c/versions/2",
        "/config/c",
    ]
    .iter()
    .map(|p| http(&addr, "GET", p, None).1)
    .collect();

    let _ = Command::new("kill")
        .args(["-9", &reg.id().to_string()])
        .status();
    let _ = reg.wait();
    let (mut reg, addr) = spawn_registry(&broker.bootstrap);
    let after: Vec<Value> = [
        "/subjects?deleted=true",
        "/subjects/a/versions",
        "/subjects/c/versions",
        "/subjects/b/versions?deleted=true",
        "/subjects/c/versions/2",
        "/config/c",
    ]
    .iter()
    .map(|p| http(&addr, "GET", p, None).1)
    .collect();
    assert_eq!(
        before, after,
        "the restarted registry rebuilt the same state from _schemas"
    );
    assert_eq!(after[0], json!(["a", "b", "c"]));
    assert_eq!(after[4]["id"].as_i64(), Some(c2));
    assert_eq!(
        http(&addr, "GET", &format!("/schemas/ids/{c1}"), None).1,
        json!({"schema": "\"string\""})
    );
    assert_eq!(http(&addr, "GET", "/subjects", None).1, json!(["a", "c"]));
    // Re-registering an existing schema gives its id; a new one gets a fresh id, never one in use.
    assert_eq!(register(&addr, "a", &record_schema("A")), a1);
    let fresh = register(&addr, "d", &record_schema("D"));
    assert_eq!(fresh, [a1, c1, c2].into_iter().max().unwrap() + 1);
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &reg.id().to_string()])
        .status();
    while reg.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "fjord registry ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn schema_contexts_are_stored_in_confluents_records_and_survive_a_kill_9() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let (mut reg, addr) = spawn_registry(&broker.bootstrap);

    // One subject name in two contexts, each numbering its ids from 1; a context URL; a context's config.
    let cfg = json!({"compatibility": "NONE"}).to_string();
    assert_eq!(
        http(&addr, "PUT", "/config/:.team:", Some(cfg.as_bytes())).0,
        200
    );
    assert_eq!(register(&addr, "orders-value", &record_schema("A")), 1);
    assert_eq!(
        register(&addr, ":.team:orders-value", &record_schema("B")),
        1
    );
    assert_eq!(
        register(&addr, ":.team:orders-value", &record_schema("A")),
        2
    );
    let body = json!({ "schema": r#""string""# }).to_string();
    let (s, v) = http(
        &addr,
        "POST",
        "/contexts/.team/subjects/gone/versions",
        Some(body.as_bytes()),
    );
    assert_eq!((s, v["id"].as_i64()), (200, Some(3)), "{v}");
    assert_eq!(http(&addr, "DELETE", "/subjects/:.team:gone", None).0, 200);
    let paths = [
        "/subjects?deleted=true",
        "/contexts",
        "/subjects/:.team:orders-value/versions/2",
        "/contexts/.team/subjects/orders-value/versions",
        "/schemas/ids/1",
        "/schemas/ids/1?subject=:.team:orders-value",
        "/config/:.team:",
    ];
    let before: Vec<Value> = paths
        .iter()
        .map(|p| http(&addr, "GET", p, None).1)
        .collect();
    assert_eq!(
        before[0],
        json!([":.team:gone", ":.team:orders-value", "orders-value"])
    );
    assert_eq!(before[1], json!([".", ".team"]));
    assert_ne!(
        before[4], before[5],
        "id 1 is another schema in each context"
    );

    // Confluent's records: the qualified subject in key and value, a CONTEXT record before the first schema.
    let records = committed_schema_records(&broker.bootstrap);
    let context_at = records
        .iter()
        .position(|(_, k, _)| k["keytype"] == "CONTEXT")
        .expect("a CONTEXT record");
    assert_eq!(
        records[context_at].1,
        json!({"keytype":"CONTEXT","tenant":"default","context":".team","magic":0})
    );
    let team_schema_at = records
        .iter()
        .position(|(_, k, v)| {
            k == &json!({"keytype":"SCHEMA","subject":":.team:orders-value","version":1,"magic":1})
                && v.as_ref().is_some_and(|v| {
                    v["subject"] == ":.team:orders-value" && v["id"] == 1 && v["version"] == 1
                })
        })
        .expect("the qualified subject's SCHEMA record");
    assert!(context_at < team_schema_at);

    let _ = Command::new("kill")
        .args(["-9", &reg.id().to_string()])
        .status();
    let _ = reg.wait();
    let (mut reg, addr) = spawn_registry(&broker.bootstrap);
    let after: Vec<Value> = paths
        .iter()
        .map(|p| http(&addr, "GET", p, None).1)
        .collect();
    assert_eq!(before, after, "the restarted registry rebuilt the contexts");
    // Ids continue per context after the restart.
    assert_eq!(register(&addr, ":.team:more", r#""int""#), 4);
    assert_eq!(register(&addr, "more", r#""int""#), 2);
    kill9(&mut reg);
}

#[test]
fn a_three_broker_fjord_start_runs_a_registry_whose_schemas_topic_has_three_replicas() {
    let dir = temp_dir();
    let (mut child, brokers, ready) =
        start_cluster_with_registry(&dir.path().join("data"), 3, &[], "127.0.0.1:0");
    assert_eq!(brokers.len(), 3);
    let addr = field(&ready, "registry=").to_string();
    let bootstrap = field(&ready, "bootstrap=").to_string();
    assert_eq!(register(&addr, "orders-value", &record_schema("A")), 1);
    assert_eq!(
        register(&addr, ":.team:orders-value", &record_schema("A")),
        1
    );
    assert_eq!(
        http(&addr, "GET", "/subjects", None).1,
        json!([":.team:orders-value", "orders-value"])
    );
    assert_eq!(
        primary_of(&addr)["primary"],
        json!(true),
        "the only instance is the primary"
    );
    // `_schemas` takes the cluster's replication factor (min(3, N)): a registration survives a broker.
    let out = kcat(
        &["-L", "-b", &bootstrap, "-t", "_schemas"],
        None,
        Duration::from_secs(30),
    );
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let replicas = listing
        .split("replicas: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(|r| r.trim_end_matches(','))
        .unwrap_or_else(|| panic!("no replicas in {listing}"));
    assert_eq!(replicas.split(',').count(), 3, "{listing}");
    interrupt(&mut child);
}

#[test]
fn confluents_python_client_uses_schema_contexts_through_the_context_url() {
    let dir = temp_dir();
    let (mut child, line) = spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["start", "--data-dir"])
            .arg(dir.path())
            .args([
                "--override",
                "listeners=PLAINTEXT://127.0.0.1:0",
                "--override",
                "metrics.listener=127.0.0.1:0",
                "--registry-listener",
                "127.0.0.1:0",
                "--connect-listener",
                "none",
            ]),
    );
    let kafka = field(&line, "kafka=").to_string();
    let registry = field(&line, "registry=").to_string();
    let out = run_client(
        "registry_contexts.py",
        &[&kafka, &format!("http://{registry}"), "orders"],
        Duration::from_secs(120),
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        v,
        json!({"plain_id": 1, "team_id": 1, "subjects": [":.team:orders-value", "orders-value"],
               "decoded": [{"sku": "t-1"}, {"sku": "t-2"}]})
    );
    interrupt(&mut child);
}

#[test]
fn json_schema_and_protobuf_serializers_round_trip_through_fjord_registry() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let (mut reg, addr) = spawn_registry(&broker.bootstrap);
    let out = run_client(
        "json_protobuf_registry.py",
        &[&broker.bootstrap, &format!("http://{addr}"), "formats"],
        Duration::from_secs(180),
    );
    let decoded: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |f: &str| decoded.iter().filter(|v| v["format"] == f).count();
    assert_eq!((of("json"), of("protobuf")), (3, 2), "{out}");
    assert!(
        out.contains("OK json 3 records") && out.contains("OK protobuf 2 records"),
        "{out}"
    );
    let order = decoded
        .iter()
        .find(|v| v["value"]["id"] == "o-1")
        .expect("o-1");
    assert_eq!(
        order["value"]["total"],
        json!({"units": "1250", "currency": "EUR"})
    );
    // The registry kept the types, and serves the Protobuf schema as a descriptor too.
    let (s, v) = http(
        &addr,
        "GET",
        "/subjects/formats-proto-value/versions/1",
        None,
    );
    assert_eq!(
        (s, v["schemaType"].as_str()),
        (200, Some("PROTOBUF")),
        "{v}"
    );
    let (s, v) = http(
        &addr,
        "GET",
        "/subjects/formats-json-value/versions/2",
        None,
    );
    assert_eq!((s, v["schemaType"].as_str()), (200, Some("JSON")), "{v}");
    let (s, v) = http(
        &addr,
        "GET",
        "/subjects/formats-proto-value/versions/1/schema?format=serialized",
        None,
    );
    assert_eq!(s, 200);
    assert!(
        v.as_str().is_some_and(|b| !b.contains("message")),
        "base64, not text: {v}"
    );
    let _ = reg.kill();
    let _ = reg.wait();
}

// ---- several instances: election, forwarding, failover ----------------------------------------------------

fn spawn_member(bootstrap: &str, group: &str, extra: &[&str]) -> (Child, String) {
    let (child, line) = spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args([
                "registry",
                "--bootstrap-server",
                bootstrap,
                "--listen",
                "127.0.0.1:0",
                "--group-id",
                group,
            ])
            .args(extra),
    );
    assert!(line.starts_with("fjord registry ready"), "{line}");
    assert!(line.contains(&format!("group={group}")), "{line}");
    let addr = field(&line, "listen=").to_string();
    (child, addr)
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `/v1/metadata/primary` of an instance.
fn primary_of(addr: &str) -> Value {
    let (status, v) = http(addr, "GET", "/v1/metadata/primary", None);
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits (60 s at most) until exactly one of `addrs` is the primary and every one names it; returns its index.
fn wait_for_one_primary(addrs: &[&str]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<Value> = addrs.iter().map(|a| primary_of(a)).collect();
        let primaries: Vec<usize> = (0..addrs.len())
            .filter(|i| views[*i]["primary"] == json!(true))
            .collect();
        if let [p] = primaries[..] {
            let url = format!("http://{}", addrs[p]);
            if views.iter().all(|v| v["primaryUrl"] == json!(url)) {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single primary that every instance knows: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// POST a registration; (status, body).
fn try_register(addr: &str, subject: &str, schema: &str) -> (u16, Value) {
    let body = json!({ "schema": schema }).to_string();
    http(
        addr,
        "POST",
        &format!("/subjects/{subject}/versions"),
        Some(body.as_bytes()),
    )
}

/// Polls `path` on `addr` (30 s at most) until it answers 200 with `expected`.
fn eventually(addr: &str, path: &str, expected: &Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = http(addr, "GET", path, None);
        if status == 200 && &v == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}{path} answered {status} {v}, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_registries_elect_one_primary_forward_writes_and_fail_over_after_kill_9() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let (a, a_addr) = spawn_member(&broker.bootstrap, "regs", &[]);
    let (b, b_addr) = spawn_member(&broker.bootstrap, "regs", &[]);
    let mut procs = [a, b];
    let addrs = [a_addr.as_str(), b_addr.as_str()];
    let p = wait_for_one_primary(&addrs);
    let s = 1 - p;

    // Registrations through both: the secondary forwards. Ids are unique and increasing, and each client reads
    // its own write at once from the instance it wrote through, and soon from the other.
    let mut ids = Vec::new();
    for i in 0..6 {
        let via = addrs[i % 2];
        let subject = format!("s{i}");
        let id = register(via, &subject, &record_schema(&format!("R{i}")));
        let latest = http(
            via,
            "GET",
            &format!("/subjects/{subject}/versions/latest"),
            None,
        )
        .1;
        assert_eq!(latest["id"].as_i64(), Some(id), "read-your-write via {via}");
        eventually(
            addrs[(i + 1) % 2],
            &format!("/subjects/{subject}/versions"),
            &json!([1]),
        );
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // The secondary's answer is the primary's, verbatim: errors too.
    let (st, v) = http(addrs[s], "POST", "/subjects/x/versions", Some(b"{oops"));
    assert_eq!((st, v["error_code"].as_i64()), (400, Some(400)), "{v}");
    let (st, v) = http(addrs[s], "DELETE", "/subjects/nobody", None);
    assert_eq!((st, v["error_code"].as_i64()), (404, Some(40401)), "{v}");
    // Config through the secondary, read back from both.
    let cfg = json!({"compatibility": "NONE"}).to_string();
    let (st, v) = http(addrs[s], "PUT", "/config/s0", Some(cfg.as_bytes()));
    assert_eq!(
        (st, v.clone()),
        (200, json!({"compatibility": "NONE"})),
        "{v}"
    );
    assert_eq!(
        http(addrs[s], "GET", "/config/s0", None).1,
        json!({"compatibilityLevel": "NONE"})
    );
    eventually(
        addrs[p],
        "/config/s0",
        &json!({"compatibilityLevel": "NONE"}),
    );

    // kill -9 the primary: the other takes over writes within seconds (the group expires the dead member's
    // 6 s session), and ids continue after the highest one.
    kill9(&mut procs[p]);
    let killed = Instant::now();
    let next_id = loop {
        let (st, v) = try_register(addrs[s], "after", &record_schema("After"));
        if st == 200 {
            break v["id"].as_i64().unwrap();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(45),
            "no write succeeded within 45 s of killing the primary: {st} {v}"
        );
        assert_eq!(v["error_code"].as_i64(), Some(50004), "{st} {v}");
    };
    let took = killed.elapsed();
    eprintln!("failover took {took:?}");
    assert!(took < Duration::from_secs(30), "failover took {took:?}");
    assert_eq!(next_id, ids.iter().max().unwrap() + 1);
    assert_eq!(primary_of(addrs[s])["primary"], json!(true));

    // The killed instance comes back as a secondary: it forwards to the new primary, ids still continue.
    let (c, c_addr) = spawn_member(&broker.bootstrap, "regs", &[]);
    procs[p] = c;
    let addrs = [c_addr.as_str(), addrs[s]];
    assert_eq!(
        wait_for_one_primary(&addrs),
        1,
        "the sticky assignor keeps the primary"
    );
    let later = register(addrs[0], "later", &record_schema("Later"));
    assert_eq!(later, next_id + 1);
    let all: Vec<Value> = addrs
        .iter()
        .map(|a| http(a, "GET", "/subjects", None).1)
        .collect();
    assert_eq!(all[0], all[1]);
    assert_eq!(all[0].as_array().map(Vec::len), Some(8), "{}", all[0]);

    // A clean stop (SIGTERM) of the primary leaves the group: the other instance takes over at once, without
    // waiting for the 6 s session timeout that a kill -9 needs.
    let _ = Command::new("kill")
        .args(["-TERM", &procs[s].id().to_string()])
        .status();
    let stopped = Instant::now();
    let _ = procs[s].wait();
    let handover = loop {
        let (st, v) = try_register(addrs[0], "handover", &record_schema("Handover"));
        if st == 200 {
            assert_eq!(v["id"].as_i64(), Some(later + 1));
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(45),
            "no write after the primary stopped: {st} {v}"
        );
    };
    eprintln!("handover after SIGTERM took {handover:?}");
    assert!(
        handover < Duration::from_secs(6),
        "handover took {handover:?}"
    );
    for p in &mut procs {
        kill9(p);
    }
}

#[test]
fn read_only_mode_answers_42205_on_every_instance_and_an_ineligible_instance_forwards() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let (mut a, a_addr) = spawn_member(&broker.bootstrap, "ro", &[]);
    let (mut b, b_addr) = spawn_member(&broker.bootstrap, "ro", &["--leader-eligibility", "false"]);
    assert_eq!(wait_for_one_primary(&[&a_addr, &b_addr]), 0);
    assert_eq!(primary_of(&b_addr)["leaderEligibility"], json!(false));
    let id = register(&b_addr, "kept", &record_schema("Kept"));

    let ro = json!({"mode": "READONLY"}).to_string();
    let (st, v) = http(&b_addr, "PUT", "/mode", Some(ro.as_bytes()));
    assert_eq!((st, v.clone()), (200, json!({"mode": "READONLY"})), "{v}");
    for addr in [&a_addr, &b_addr] {
        assert_eq!(
            http(addr, "GET", "/mode", None).1,
            json!({"mode": "READONLY"})
        );
        let (st, v) = try_register(addr, "other", &record_schema("Other"));
        assert_eq!((st, v["error_code"].as_i64()), (422, Some(42205)), "{v}");
        assert_eq!(
            v["message"],
            json!("Subject other is in read-only mode"),
            "{v}"
        );
        let (st, v) = http(addr, "DELETE", "/subjects/kept", None);
        assert_eq!((st, v["error_code"].as_i64()), (422, Some(42205)), "{v}");
        // Reads still work.
        assert_eq!(
            http(addr, "GET", "/subjects/kept/versions/1", None).1["id"].as_i64(),
            Some(id)
        );
    }
    // A subject-level READWRITE overrides the global READONLY for that subject only.
    let rw = json!({"mode": "READWRITE"}).to_string();
    let (st, _) = http(&b_addr, "PUT", "/mode/open", Some(rw.as_bytes()));
    assert_eq!(st, 200);
    let opened = register(&b_addr, "open", &record_schema("Open"));
    assert_eq!(opened, id + 1);
    let (st, _) = try_register(&a_addr, "closed", &record_schema("Closed"));
    assert_eq!(st, 422);

    // IMPORT through the follower (the query string is forwarded too): the given id and version are kept, and
    // later ids continue after it.
    let import = json!({"mode": "IMPORT"}).to_string();
    let (st, v) = http(&b_addr, "PUT", "/mode", Some(import.as_bytes()));
    assert_eq!(
        (st, v["error_code"].as_i64()),
        (422, Some(42205)),
        "not empty: {v}"
    );
    let (st, v) = http(&b_addr, "PUT", "/mode?force=true", Some(import.as_bytes()));
    assert_eq!((st, v.clone()), (200, json!({"mode": "IMPORT"})), "{v}");
    let body = json!({"schema": record_schema("Imported"), "id": 100, "version": 7}).to_string();
    let (st, v) = http(
        &b_addr,
        "POST",
        "/subjects/imported/versions",
        Some(body.as_bytes()),
    );
    assert_eq!((st, v.clone()), (200, json!({"id": 100})), "{v}");
    assert_eq!(
        http(&b_addr, "GET", "/subjects/imported/versions", None).1,
        json!([7])
    );
    eventually(
        &a_addr,
        "/schemas/ids/100/versions",
        &json!([{"subject": "imported", "version": 7}]),
    );
    let (st, _) = http(&b_addr, "PUT", "/mode", Some(rw.as_bytes()));
    assert_eq!(st, 200);
    assert_eq!(register(&a_addr, "next", &record_schema("Next")), 101);

    // With the only eligible instance gone, writes through the follower fail with 50004, never silently.
    kill9(&mut a);
    let (st, v) = try_register(&b_addr, "orphan", &record_schema("Orphan"));
    assert_eq!((st, v["error_code"].as_i64()), (500, Some(50004)), "{v}");
    assert_eq!(
        http(&b_addr, "GET", "/subjects/kept/versions/1", None).1["id"].as_i64(),
        Some(id),
        "the follower still serves reads"
    );
    kill9(&mut b);
}

#[test]
fn broker_killed_with_sigkill_mid_registration_loses_no_acknowledged_schema_and_duplicates_none() {
    let dir = temp_dir();
    // A fixed port, so that the registries find the restarted broker where it was.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listeners = format!("PLAINTEXT://127.0.0.1:{port}");
    let mut broker = BrokerProc::start(&dir.path().join("broker"), &[("listeners", &listeners)]);
    let (a, a_addr) = spawn_member(&broker.bootstrap, "crash", &[]);
    let (b, b_addr) = spawn_member(&broker.bootstrap, "crash", &[]);
    let mut procs = [a, b];
    wait_for_one_primary(&[&a_addr, &b_addr]);

    // A client registers new subjects one after another through both instances, retrying a subject until it
    // is acknowledged; it records what was acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let client = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let addrs = [a_addr.clone(), b_addr.clone()];
        std::thread::spawn(move || {
            let mut i = 0usize;
            let deadline = Instant::now() + Duration::from_secs(150);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let subject = format!("crash-{i}");
                let (st, v) =
                    try_register(&addrs[i % 2], &subject, &record_schema(&format!("C{i}")));
                if st == 200 {
                    acked
                        .lock()
                        .unwrap()
                        .push((subject, v["id"].as_i64().unwrap()));
                    i += 1;
                } else {
                    assert!(
                        st >= 500,
                        "only unavailability may fail a registration: {st} {v}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    let wait_acks = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while acked.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} acknowledged",
                acked.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_acks(5, "before the kill");
    broker.kill9();
    let at_kill = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    wait_acks(at_kill + 5, "after the restart");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    client.join().expect("the client loop");

    let acked = acked.lock().unwrap().clone();
    let mut ids: Vec<i64> = acked.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        acked.len(),
        "two subjects acknowledged with one id: {acked:?}"
    );
    for addr in [&a_addr, &b_addr] {
        for (subject, id) in &acked {
            // Exactly one version: a retried registration never registered the schema twice.
            eventually(addr, &format!("/subjects/{subject}/versions"), &json!([1]));
            let v = http(
                addr,
                "GET",
                &format!("/subjects/{subject}/versions/1"),
                None,
            )
            .1;
            assert_eq!(v["id"].as_i64(), Some(*id), "{subject} on {addr}: {v}");
        }
        // Nothing registered beyond what the client saw, except the one in flight when it stopped.
        let subjects = http(addr, "GET", "/subjects", None).1;
        let n = subjects.as_array().map_or(0, Vec::len);
        assert!(
            n == acked.len() || n == acked.len() + 1,
            "{n} subjects, {} acknowledged",
            acked.len()
        );
    }
    for p in &mut procs {
        kill9(p);
    }
}

#[test]
fn a_paused_primary_is_fenced_when_it_resumes_and_never_writes_a_colliding_id() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let (a, a_addr) = spawn_member(&broker.bootstrap, "zombie", &[]);
    let (b, b_addr) = spawn_member(&broker.bootstrap, "zombie", &[]);
    let mut procs = [a, b];
    let addrs = [a_addr.as_str(), b_addr.as_str()];
    let p = wait_for_one_primary(&addrs);
    let s = 1 - p;
    let first = register(addrs[p], "first", &record_schema("First"));

    // Pause the primary past its session: the group gives the election to the other instance, whose
    // init_transactions fences the paused one.
    let pid = procs[p].id().to_string();
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(45);
    while primary_of(addrs[s])["primary"] != json!(true) {
        assert!(
            Instant::now() < deadline,
            "the other instance never took over"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = register(addrs[s], "during", &record_schema("During"));
    assert_eq!(during, first + 1);

    // Resumed, the old primary may still believe it is the primary for a moment: its write must not commit
    // with an id of its own; it is fenced and the write goes to the new primary (or fails, retryable).
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let (st, v) = try_register(addrs[p], "zombie", &record_schema("Zombie"));
    eprintln!("the resumed primary answered {st} {v}");
    if st == 200 {
        assert_eq!(v["id"].as_i64(), Some(during + 1), "{v}");
    } else {
        assert_eq!((st, v["error_code"].as_i64()), (500, Some(50004)), "{v}");
    }
    let after = register(addrs[p], "after", &record_schema("After"));
    let expected = if st == 200 { during + 2 } else { during + 1 };
    assert_eq!(after, expected);
    assert_eq!(primary_of(addrs[s])["primary"], json!(true));
    assert_eq!(primary_of(addrs[p])["primary"], json!(false));
    // Every subject has one version and every id is distinct, on both instances.
    for addr in addrs {
        let subjects = http(addr, "GET", "/subjects", None).1;
        let mut ids = Vec::new();
        for subject in subjects.as_array().unwrap() {
            let subject = subject.as_str().unwrap();
            eventually(addr, &format!("/subjects/{subject}/versions"), &json!([1]));
            ids.push(
                http(
                    addr,
                    "GET",
                    &format!("/subjects/{subject}/versions/1"),
                    None,
                )
                .1["id"]
                    .as_i64()
                    .unwrap(),
            );
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{addr}: {subjects}");
    }
    for p in &mut procs {
        kill9(p);
    }
}

/// The `_schemas` records committed (read `read_committed` with kcat): (offset, key, value).
fn committed_schema_records(bootstrap: &str) -> Vec<(i64, Value, Option<Value>)> {
    let out = kcat(
        &[
            "-C",
            "-b",
            bootstrap,
            "-t",
            "_schemas",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-X",
            "isolation.level=read_committed",
            "-Z",
            "-f",
            "%o\t%k\t%s\n",
        ],
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let offset = f.next().unwrap().parse().unwrap();
            let key = serde_json::from_str(f.next().unwrap()).unwrap();
            let value = f.next().and_then(|v| serde_json::from_str(v).ok());
            (offset, key, value)
        })
        .collect()
}

/// Waits (`secs` at most) until `/v1/metadata/primary` of `addr` says `primary`.
fn wait_primary(addr: &str, primary: bool, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while primary_of(addr)["primary"] != json!(primary) {
        assert!(
            Instant::now() < deadline,
            "{addr} never became primary={primary}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_primaries_on_one_topic_fence_each_other_so_a_fenced_one_commits_nothing() {
    // Two instances in different election groups on one schemas topic are both primary (a misconfiguration,
    // but exactly what a zombie primary looks like): whichever promoted last fenced the other, through the
    // one transactional id of the topic.
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let (a, a_addr) = spawn_member(&broker.bootstrap, "group-a", &[]);
    wait_primary(&a_addr, true, 60);
    let before = register(&a_addr, "before", &record_schema("Before"));
    let (b, b_addr) = spawn_member(&broker.bootstrap, "group-b", &[]);
    let mut procs = [a, b];
    wait_primary(&b_addr, true, 60);
    let b_first = register(&b_addr, "b-first", &record_schema("BFirst"));
    assert_eq!(b_first, before + 1);

    // A still believes it is the primary; B's init_transactions fenced its producer. A write reaching A as
    // a forwarded one is answered by A itself: it must be 50004, with nothing committed.
    let body = json!({ "schema": record_schema("Zombie") }).to_string();
    let (st, v) = http_with(
        &a_addr,
        "POST",
        "/subjects/zombie/versions",
        Some(body.as_bytes()),
        "x-fjord-forwarded: 1\r\n",
    );
    assert_eq!((st, v["error_code"].as_i64()), (500, Some(50004)), "{v}");
    let records = committed_schema_records(&broker.bootstrap);
    assert!(
        records
            .iter()
            .all(|(_, k, _)| k["subject"] != json!("zombie")),
        "the fenced primary committed a record: {records:?}"
    );

    // A still owns its group's election, so it becomes primary again (fencing B) after a while. B, which
    // still believes it is the primary, is then fenced by its next write; it is promoted again and serves
    // that same write itself (the request is not lost with the first try), with the next id.
    wait_primary(&a_addr, true, 30);
    let (st, v) = try_register(&b_addr, "served", &record_schema("Served"));
    assert_eq!((st, v["id"].as_i64()), (200, Some(b_first + 1)), "{v}");
    wait_primary(&b_addr, true, 5);

    // A permanent delete of a subject is one transaction: its tombstones are consecutive records (no
    // transaction marker between them), so a fence can never leave part of it behind.
    let (st, v) = http(
        &b_addr,
        "PUT",
        "/config/multi",
        Some(br#"{"compatibility":"NONE"}"#),
    );
    assert_eq!(st, 200, "{v}");
    for name in ["M1", "M2", "M3"] {
        register(&b_addr, "multi", &record_schema(name));
    }
    let (st, v) = http(&b_addr, "DELETE", "/subjects/multi", None);
    assert_eq!((st, v.clone()), (200, json!([1, 2, 3])), "{v}");
    let (st, v) = http(&b_addr, "DELETE", "/subjects/multi?permanent=true", None);
    assert_eq!((st, v.clone()), (200, json!([1, 2, 3])), "{v}");
    let records = committed_schema_records(&broker.bootstrap);
    let tombstones: Vec<i64> = records
        .iter()
        .filter(|(_, k, v)| {
            k["keytype"] == json!("SCHEMA") && k["subject"] == json!("multi") && v.is_none()
        })
        .map(|(o, _, _)| *o)
        .collect();
    assert_eq!(tombstones.len(), 3, "{records:?}");
    assert_eq!(
        tombstones,
        vec![tombstones[0], tombstones[0] + 1, tombstones[0] + 2],
        "the tombstones of one permanent delete are written in one transaction"
    );
    // Every id committed is distinct.
    let mut ids: Vec<i64> = records
        .iter()
        .filter_map(|(_, k, v)| {
            (k["keytype"] == json!("SCHEMA") && k["subject"] != json!("multi"))
                .then(|| v.as_ref()?["id"].as_i64())
                .flatten()
        })
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "{records:?}");
    for p in &mut procs {
        kill9(p);
    }
}

#[test]
fn a_bad_advertised_url_is_refused_with_a_message_before_anything_starts() {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_fjord")).args([
            "registry",
            "--bootstrap-server",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
            "--advertised-url",
            "https://reg:8081",
        ]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--advertised-url") && err.contains("http://HOST:PORT"),
        "{err}"
    );
}

/// Waits (`secs` at most) until `registry` is the primary.
async fn until_primary(registry: &fjord_registry::Registry, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while registry.store().role() != fjord_registry::store::Role::Primary {
        assert!(Instant::now() < deadline, "never became the primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_began_before_a_re_promotion_is_refused_not_committed_by_the_new_producer() {
    use fjord_registry::registry::SchemaRequest;
    use fjord_registry::{open_kafka, ElectionConfig, Error};
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let request = |name: &str| SchemaRequest {
        schema: Some(record_schema(name)),
        ..SchemaRequest::default()
    };
    // Two in-process instances in different election groups on one topic: both are primaries, and each
    // promotion fences the other's producer.
    let a = open_kafka(
        &broker.bootstrap,
        "_schemas",
        ElectionConfig::new("group-a", "http://127.0.0.1:1", true),
    )
    .await
    .unwrap();
    until_primary(&a, 60).await;
    let first = a.register("first", &request("First"), false).await.unwrap();

    // A write of A begins: the producer it will write with is taken now, with the state it computes from
    // (here: the next id is first + 1).
    let began = a.store().writer_for_tests().unwrap();

    let b = open_kafka(
        &broker.bootstrap,
        "_schemas",
        ElectionConfig::new("group-b", "http://127.0.0.1:2", true),
    )
    .await
    .unwrap();
    until_primary(&b, 60).await;
    let by_b = b.register("by-b", &request("ByB"), false).await.unwrap();
    assert_eq!(by_b, first + 1);
    // A's next write finds its producer fenced: A is demoted, and (still owning its group's election) promoted
    // again with a new producer, which reads the topic to its end and fences B.
    let r = a.register("fenced", &request("Fenced"), false).await;
    assert!(matches!(r, Err(Error::NotPrimary(_))), "{r:?}");
    until_primary(&a, 30).await;

    // The write that began before the re-promotion, with the id computed then (colliding with B's): it goes
    // through the producer it began with, which is fenced, so it is refused and nothing is committed. Picking
    // up the primary's producer at write time instead would have committed it with the new, unfenced one.
    let key = json!({"keytype": "SCHEMA", "subject": "stale", "version": 1, "magic": 1});
    let value = json!({"subject": "stale", "version": 1, "id": first + 1, "schema": record_schema("Stale"), "deleted": false});
    let r = began
        .write(&[(
            key.to_string().into_bytes(),
            Some(value.to_string().into_bytes()),
        )])
        .await;
    assert!(matches!(r, Err(Error::NotPrimary(_))), "{r:?}");
    a.store().sync().await.unwrap();
    assert!(
        a.versions("stale", true).is_err(),
        "the stale write was committed"
    );
    // The new producer writes, with the next id after B's.
    let next = a.register("next", &request("Next"), false).await.unwrap();
    assert_eq!(next, by_b + 1);
    a.store().leave();
    b.store().leave();
}
