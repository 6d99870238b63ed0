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
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
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
            "--max-messages",
            "2",
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
