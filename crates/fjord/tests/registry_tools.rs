//! `fjord schemas` and the Avro console tools (`fjord produce/consume --value-format avro`) against the
//! registry `fjord start` runs, with confluent-kafka's Avro serializer and deserializer on the other side.
#![cfg(feature = "registry")]

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `fjord start` with the broker, metrics and registry on free ports; returns the child, the bootstrap
/// address and the registry URL.
fn start() -> (tempfile::TempDir, Child, String, String) {
    let dir = temp_dir();
    let (child, line) = common::start_platform(dir.path(), "127.0.0.1:0", "none", Stdio::null());
    let kafka = field(&line, "kafka=").to_string();
    let registry = format!("http://{}", field(&line, "registry="));
    (dir, child, kafka, registry)
}

/// `fjord ARGS --registry-url URL` (the flag after the subcommand's own arguments).
fn fj(kafka: &str, url: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--registry-url", url]);
    fjord(kafka, &all, stdin)
}

fn failed(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    stderr(out)
}

const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}]}"#;
const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null},{"name":"qty","type":"int","default":1}]}"#;
const ORDER_BAD: &str = r#"{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"id","type":"string"},{"name":"extra","type":"int"}]}"#;

#[test]
fn schemas_cli_registers_lists_gets_checks_configures_and_deletes() {
    let (_dir, mut child, kafka, url) = start();
    let out = ok(&fj(
        &kafka,
        &url,
        &["schemas", "register", "orders-value", "--schema", ORDER_V1],
        None,
    ));
    assert_eq!(
        out.trim(),
        "registered `orders-value` version 1, schema id 1"
    );
    // The same schema again: the same version and id.
    let out = ok(&fj(
        &kafka,
        &url,
        &["schemas", "register", "orders-value", "--schema", ORDER_V1],
        None,
    ));
    assert_eq!(
        out.trim(),
        "registered `orders-value` version 1, schema id 1"
    );
    let file = _dir.path().join("v2.avsc");
    std::fs::write(&file, ORDER_V2).unwrap();
    let v2 = ok(&fj(
        &kafka,
        &url,
        &[
            "schemas",
            "register",
            "orders-value",
            "--schema-file",
            file.to_str().unwrap(),
            "--output",
            "json",
        ],
        None,
    ));
    let v2: Value = serde_json::from_str(&v2).unwrap();
    assert_eq!(
        v2,
        json!({"subject": "orders-value", "id": 2, "version": 2})
    );

    assert_eq!(
        ok(&fj(&kafka, &url, &["schemas", "list"], None)),
        "orders-value\n"
    );
    assert_eq!(
        ok(&fj(
            &kafka,
            &url,
            &["schemas", "list", "orders-value"],
            None
        )),
        "1\n2\n"
    );
    let got = ok(&fj(
        &kafka,
        &url,
        &["schemas", "get", "orders-value", "--version", "1"],
        None,
    ));
    assert!(
        got.starts_with("subject: orders-value\nversion: 1\nid:      1\ntype:    AVRO\n"),
        "{got}"
    );
    let schema_text = got.splitn(5, '\n').nth(4).unwrap();
    let parsed: Value = serde_json::from_str(schema_text).unwrap();
    assert_eq!(parsed, serde_json::from_str::<Value>(ORDER_V1).unwrap());
    let by_id: Value = serde_json::from_str(&ok(&fj(
        &kafka,
        &url,
        &["schemas", "get", "--id", "2", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(
        by_id["versions"],
        json!([{"subject": "orders-value", "version": 2}])
    );
    assert_eq!(
        serde_json::from_str::<Value>(by_id["schema"].as_str().unwrap()).unwrap(),
        serde_json::from_str::<Value>(ORDER_V2).unwrap()
    );

    // Compatibility: every incompatibility listed, exit 1; a compatible schema exits 0.
    let out = fj(
        &kafka,
        &url,
        &["schemas", "compat", "orders-value", "--schema", ORDER_BAD],
        None,
    );
    let err = failed(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("NOT compatible with `orders-value`:\n  - "),
        "{text}"
    );
    assert!(
        text.lines().count() >= 3,
        "every incompatibility is listed: {text}"
    );
    assert!(err.contains("not compatible"), "{err}");
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "schemas",
            "compat",
            "orders-value",
            "--schema",
            ORDER_V2,
            "--version",
            "1",
        ],
        None,
    ));
    assert_eq!(out.trim(), "compatible with `orders-value`");
    // Registering the incompatible one is refused in plain words.
    let err = failed(
        &fj(
            &kafka,
            &url,
            &["schemas", "register", "orders-value", "--schema", ORDER_BAD],
            None,
        ),
        1,
    );
    assert!(err.contains("incompatible") && err.contains("409"), "{err}");

    // Config: global, per subject, bad level, back to global.
    assert_eq!(
        ok(&fj(&kafka, &url, &["schemas", "config"], None)).trim(),
        "global: BACKWARD"
    );
    assert_eq!(
        ok(&fj(
            &kafka,
            &url,
            &["schemas", "config", "orders-value", "--set", "full"],
            None
        ))
        .trim(),
        "orders-value: FULL"
    );
    assert_eq!(
        ok(&fj(
            &kafka,
            &url,
            &["schemas", "config", "orders-value"],
            None
        ))
        .trim(),
        "orders-value: FULL"
    );
    let err = failed(
        &fj(
            &kafka,
            &url,
            &["schemas", "config", "--set", "SIDEWAYS"],
            None,
        ),
        1,
    );
    assert!(
        err.contains("not a compatibility level") && err.contains("42203"),
        "{err}"
    );
    ok(&fj(
        &kafka,
        &url,
        &["schemas", "config", "orders-value", "--delete"],
        None,
    ));
    assert_eq!(
        ok(&fj(
            &kafka,
            &url,
            &["schemas", "config", "orders-value"],
            None
        ))
        .trim(),
        "orders-value: BACKWARD"
    );

    // Not found, invalid, with what to do.
    let err = failed(
        &fj(&kafka, &url, &["schemas", "get", "nobody-value"], None),
        1,
    );
    assert!(
        err.contains("subject not found") && err.contains("fjord schemas list"),
        "{err}"
    );
    let err = failed(
        &fj(
            &kafka,
            &url,
            &["schemas", "get", "orders-value", "--version", "9"],
            None,
        ),
        1,
    );
    assert!(
        err.contains("version not found") && err.contains("40402"),
        "{err}"
    );
    let err = failed(
        &fj(&kafka, &url, &["schemas", "get", "--id", "4242"], None),
        1,
    );
    assert!(
        err.contains("schema not found") && err.contains("40403"),
        "{err}"
    );
    let err = failed(
        &fj(
            &kafka,
            &url,
            &[
                "schemas",
                "register",
                "x-value",
                "--schema",
                r#"{"type":"record"}"#,
            ],
            None,
        ),
        1,
    );
    assert!(err.contains("invalid") && err.contains("42201"), "{err}");
    let err = failed(
        &fj(
            &kafka,
            &url,
            &[
                "schemas",
                "register",
                "x-value",
                "--schema-file",
                "/nonexistent.avsc",
            ],
            None,
        ),
        1,
    );
    assert!(err.contains("cannot read the schema file"), "{err}");

    // Deletes: soft, then permanent; a permanent delete without the soft one first is explained.
    let err = failed(
        &fj(
            &kafka,
            &url,
            &[
                "schemas",
                "delete",
                "orders-value",
                "--version",
                "1",
                "--permanent",
            ],
            None,
        ),
        1,
    );
    assert!(err.contains("soft-deleted first"), "{err}");
    let out = ok(&fj(
        &kafka,
        &url,
        &["schemas", "delete", "orders-value"],
        None,
    ));
    assert_eq!(out.trim(), "soft-deleted `orders-value` (versions 1, 2)");
    assert_eq!(ok(&fj(&kafka, &url, &["schemas", "list"], None)), "");
    assert_eq!(
        ok(&fj(&kafka, &url, &["schemas", "list", "--deleted"], None)),
        "orders-value\n"
    );
    ok(&fj(
        &kafka,
        &url,
        &["schemas", "delete", "orders-value", "--permanent"],
        None,
    ));
    assert_eq!(
        ok(&fj(&kafka, &url, &["schemas", "list", "--deleted"], None)),
        ""
    );

    // An unreachable registry: exit 3 and what to do.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = failed(&fj(&kafka, &dead, &["schemas", "list"], None), 3);
    assert!(
        err.contains("cannot reach the schema registry") && err.contains("--registry-url"),
        "{err}"
    );
    let err = failed(&fj(&kafka, "https://x:1", &["schemas", "list"], None), 2);
    assert!(err.contains("https is not supported"), "{err}");
    interrupt(&mut child);
}

#[test]
fn avro_console_consumer_shows_what_confluents_avro_serializer_wrote() {
    let (_dir, mut child, kafka, url) = start();
    // The seed's flow: an Avro producer writes `catalog`, the console consumer shows it as JSON.
    run_client(
        "avro_registry.py",
        &[&kafka, &url, "catalog"],
        Duration::from_secs(120),
    );
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "catalog",
            "--from-beginning",
            "--value-format",
            "avro",
            "--exit-at-end",
        ],
        None,
    ));
    let values: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        values,
        vec![
            json!({"sku": "a-1", "price": 1.5}),
            json!({"sku": "a-2", "price": 2.25}),
            json!({"sku": "b-1", "price": 3.0, "tags": ["x", "y"]}),
        ]
    );
    // Fields print in schema order, as kafka-avro-console-consumer prints them.
    assert_eq!(out.lines().next().unwrap(), r#"{"sku":"a-1","price":1.5}"#);

    // A record that is not in the wire format: named with its offset, skipped, exit 1; the rest printed.
    ok(&fjord(
        &kafka,
        &["produce", "catalog"],
        Some(b"plain text\n"),
    ));
    let out = fj(
        &kafka,
        &url,
        &[
            "consume",
            "catalog",
            "--from-beginning",
            "--value-format",
            "avro",
            "--exit-at-end",
            "--format",
            "json",
        ],
        None,
    );
    let err = failed(&out, 1);
    assert!(
        err.contains(
            "catalog partition 0 offset 3: not in Confluent's wire format: the first byte is 0x70"
        ),
        "{err}"
    );
    assert!(err.contains("1 of 4 records could not be decoded"), "{err}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[2]["value"],
        json!({"sku": "b-1", "price": 3.0, "tags": ["x", "y"]})
    );
    assert_eq!(lines[2]["offset"], json!(2));
    interrupt(&mut child);
}

#[test]
fn avro_console_producer_writes_what_confluents_avro_deserializer_reads() {
    let (dir, mut child, kafka, url) = start();
    ok(&fjord(&kafka, &["topics", "create", "orders"], None));
    let schema = dir.path().join("order.avsc");
    std::fs::write(&schema, ORDER_V1).unwrap();
    // Keys and values in Avro; values as plain JSON (the union unwrapped, a defaulted field left out) and
    // as Avro's JSON encoding.
    let input = "\"k1\"|{\"id\": 1, \"note\": \"first\"}\n\"k2\"|{\"id\": 2}\n\"k3\"|{\"id\": 3, \"note\": {\"string\": \"third\"}}\n";
    let out = fj(
        &kafka,
        &url,
        &[
            "produce",
            "orders",
            "--key-separator",
            "|",
            "--value-format",
            "avro",
            "--value-schema-file",
            schema.to_str().unwrap(),
            "--key-format",
            "avro",
            "--key-schema",
            "\"string\"",
        ],
        Some(input.as_bytes()),
    );
    ok(&out);
    let read = run_client(
        "avro_read.py",
        &[&kafka, &url, "orders", "3", "--keys"],
        Duration::from_secs(120),
    );
    let got: Vec<Value> = read
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"id": 1, "key": "k1", "value": {"id": 1, "note": "first"}}),
            json!({"id": 1, "key": "k2", "value": {"id": 2, "note": null}}),
            json!({"id": 1, "key": "k3", "value": {"id": 3, "note": "third"}}),
        ],
        "{read}"
    );
    // Registered under the TopicNameStrategy subjects.
    assert_eq!(
        ok(&fj(&kafka, &url, &["schemas", "list"], None)),
        "orders-key\norders-value\n"
    );
    // And back through the console consumer, key and value decoded.
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
            "--separator",
            " => ",
            "--value-format",
            "avro",
            "--key-format",
            "avro",
        ],
        None,
    ));
    assert_eq!(
        out,
        "\"k1\" => {\"id\":1,\"note\":{\"string\":\"first\"}}\n\"k2\" => {\"id\":2,\"note\":null}\n\"k3\" => {\"id\":3,\"note\":{\"string\":\"third\"}}\n"
    );

    // --value-schema-id, --format json lines, and the record naming strategy.
    let out = fj(
        &kafka,
        &url,
        &[
            "produce",
            "orders",
            "--format",
            "json",
            "--value-format",
            "avro",
            "--value-schema-id",
            "1",
        ],
        Some(b"{\"key\": \"plain\", \"value\": {\"id\": 4}}\n"),
    );
    ok(&out);
    let out = fj(
        &kafka,
        &url,
        &[
            "produce",
            "orders",
            "--value-format",
            "avro",
            "--value-schema",
            ORDER_V2,
            "--subject-name-strategy",
            "record",
        ],
        Some(b"{\"id\": 5, \"qty\": 7}\n"),
    );
    ok(&out);
    assert!(ok(&fj(&kafka, &url, &["schemas", "list"], None)).contains("com.example.Order\n"));
    let read = run_client(
        "avro_read.py",
        &[&kafka, &url, "orders", "5"],
        Duration::from_secs(120),
    );
    let last: Vec<Value> = read
        .lines()
        .skip(3)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        last[0],
        json!({"id": 1, "key": "plain", "value": {"id": 4, "note": null}})
    );
    assert_eq!(last[1]["value"], json!({"id": 5, "note": null, "qty": 7}));

    // Bad lines: the line number and what is wrong; lines before it are delivered.
    let out = fj(
        &kafka,
        &url,
        &[
            "produce",
            "orders",
            "--value-format",
            "avro",
            "--value-schema-id",
            "1",
        ],
        Some(b"{\"id\": 6}\n{\"id\": \"six\"}\n"),
    );
    let err = failed(&out, 1);
    assert!(
        err.contains("delivered 1 of 2 lines; line 2: the value $.id: expected a long"),
        "{err}"
    );
    let out = fj(
        &kafka,
        &url,
        &[
            "produce",
            "orders",
            "--value-format",
            "avro",
            "--value-schema-id",
            "1",
        ],
        Some(b"not json\n"),
    );
    let err = failed(&out, 1);
    assert!(err.contains("line 1: the value is not JSON"), "{err}");
    // No schema, a schema id that does not exist, --no-register with an unregistered schema.
    let err = failed(
        &fj(
            &kafka,
            &url,
            &["produce", "orders", "--value-format", "avro"],
            None,
        ),
        2,
    );
    assert!(err.contains("--value-schema-file FILE"), "{err}");
    let err = failed(
        &fj(
            &kafka,
            &url,
            &[
                "produce",
                "orders",
                "--value-format",
                "avro",
                "--value-schema-id",
                "99",
            ],
            None,
        ),
        1,
    );
    assert!(err.contains("schema not found"), "{err}");
    let err = failed(
        &fj(
            &kafka,
            &url,
            &[
                "produce",
                "orders",
                "--value-format",
                "avro",
                "--value-schema",
                "\"int\"",
                "--no-register",
            ],
            None,
        ),
        1,
    );
    assert!(err.contains("not registered under `orders-value`"), "{err}");
    interrupt(&mut child);
}

#[test]
fn kafkajs_confluent_schema_registry_registers_encodes_and_decodes() {
    let (_dir, mut child, kafka, url) = start();
    ok(&fjord(&kafka, &["topics", "create", "clicks"], None));
    let out = run_bounded(
        Command::new("node")
            .arg(workspace_root().join("tests/clients/kafkajs/schema_registry.js"))
            .args([&kafka, &url, "clicks"]),
        Duration::from_secs(120),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.lines().any(|l| l == "ok"),
        "{text}"
    );
    // What kafkajs's client encoded, the console consumer decodes with the schemas it registered.
    let shown = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "clicks",
            "--from-beginning",
            "--exit-at-end",
            "--value-format",
            "avro",
        ],
        None,
    ));
    assert_eq!(
        shown,
        "{\"page\":\"/a\",\"ms\":1}\n{\"page\":\"/b\",\"ms\":2,\"ref\":{\"string\":\"x\"}}\n{\"page\":\"/c\",\"ms\":3,\"ref\":null}\n"
    );
    interrupt(&mut child);
}

/// `fjord registry` alone against `bootstrap`, listening on `listen`; returns the child and its URL.
fn spawn_registry(bootstrap: &str, listen: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args([
            "registry",
            "--bootstrap-server",
            bootstrap,
            "--listen",
            listen,
        ])
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
        Ok(line) if line.starts_with("fjord registry ready") => {
            let url = format!("http://{}", field(&line, "listen="));
            (child, url)
        }
        other => {
            let _ = child.kill();
            panic!("fjord registry never got ready: {other:?}");
        }
    }
}

#[test]
fn a_registry_stopped_mid_run_stops_the_consumer_before_the_record_and_a_rerun_reads_it() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let kafka = broker.bootstrap.clone();
    let (mut reg, url) = spawn_registry(&kafka, "127.0.0.1:0");
    // One record with the first schema; a second schema registered (so its id exists in the topic) but not
    // yet used.
    ok(&fj(
        &kafka,
        &url,
        &[
            "produce",
            "orders",
            "--value-format",
            "avro",
            "--value-schema",
            ORDER_V1,
        ],
        Some(b"{\"id\": 1, \"note\": null}\n"),
    ));
    let late = r#"{"type":"record","name":"Late","fields":[{"name":"n","type":"long"}]}"#;
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "schemas",
            "register",
            "late-value",
            "--schema",
            late,
            "--output",
            "json",
        ],
        None,
    ));
    let late_id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_u64()
        .unwrap() as u8;
    assert_eq!(late_id, 2);

    // The consumer follows the topic in a group; it decodes the first record while the registry is up.
    let mut consumer = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args([
            "consume",
            "orders",
            "--group",
            "readers",
            "--from-beginning",
            "--value-format",
            "avro",
            "--registry-url",
            &url,
        ])
        .env("FJORD_BOOTSTRAP_SERVER", &kafka)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = consumer.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| {
            let _ = consumer.kill();
            panic!("the consumer printed nothing: {e}")
        });
    assert_eq!(first, r#"{"id":1,"note":null}"#);

    // The registry goes away; then a record with the schema the consumer has not fetched yet arrives
    // (written as Confluent's serializer would: magic byte, id, Avro body of {"n": 5}).
    let _ = reg.kill();
    let _ = reg.wait();
    let raw = dir.path().join("late.bin");
    std::fs::write(&raw, [0u8, 0, 0, 0, late_id, 0x0a]).unwrap();
    let out = kcat(
        &["-P", "-b", &kafka, "-t", "orders", raw.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The consumer stops, non-zero, naming the unreachable registry and the record it stopped before.
    let pid = consumer.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = consumer.wait_with_output().unwrap();
    let _ = done_tx.send(());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("cannot reach the schema registry")
            && err.contains("stopped before orders partition 0 offset 1"),
        "{err}"
    );
    assert!(rx.try_recv().is_err(), "nothing else was printed");

    // With the registry back (another process, another port: the schemas are in the topic), the group
    // reads the record it stopped before.
    let (mut reg, url) = spawn_registry(&kafka, "127.0.0.1:0");
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "orders",
            "--group",
            "readers",
            "--value-format",
            "avro",
            "--exit-at-end",
        ],
        None,
    ));
    assert_eq!(out.trim(), r#"{"n":5}"#);
    let _ = reg.kill();
    let _ = reg.wait();
}

const PRODUCT: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"Product","type":"object","properties":{"sku":{"type":"string"},"price":{"type":"number"}},"required":["sku","price"],"additionalProperties":false}"#;

/// `tests/clients/json_schema_tools.py ARGS` with `stdin`; its standard output.
fn json_schema_client(args: &[&str], stdin: Option<&[u8]>) -> String {
    let script = workspace_root().join("tests/clients/json_schema_tools.py");
    ok(&run_with_stdin(
        Command::new(python()).arg(script).args(args),
        stdin,
        Duration::from_secs(120),
    ))
}

#[test]
fn json_schema_console_tools_interoperate_with_confluents_json_serializer_and_deserializer() {
    let (dir, mut child, kafka, url) = start();
    // confluent-kafka's JSONSerializer writes; fjord consume decodes.
    json_schema_client(
        &["write", &kafka, &url, "products", PRODUCT],
        Some(b"{\"sku\": \"a-1\", \"price\": 1.5}\n{\"sku\": \"a-2\", \"price\": 2}\n"),
    );
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "products",
            "--from-beginning",
            "--value-format",
            "json-schema",
            "--exit-at-end",
        ],
        None,
    ));
    let values: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        values,
        vec![
            json!({"sku": "a-1", "price": 1.5}),
            json!({"sku": "a-2", "price": 2})
        ]
    );

    // fjord produce writes; confluent-kafka's JSONDeserializer reads, with the schema the id names.
    let file = dir.path().join("product.json");
    std::fs::write(&file, PRODUCT).unwrap();
    let produce = |topic: &str, input: &[u8]| {
        fj(
            &kafka,
            &url,
            &[
                "produce",
                topic,
                "--value-format",
                "json-schema",
                "--value-schema-file",
                file.to_str().unwrap(),
            ],
            Some(input),
        )
    };
    ok(&produce(
        "made",
        b"{\"sku\": \"b-1\", \"price\": 3.25}\n{\"sku\": \"b-2\", \"price\": 4}\n",
    ));
    let read = json_schema_client(&["read", &kafka, &url, "made", "2"], None);
    let read: Vec<Value> = read
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = read[0]["id"].as_i64().unwrap();
    assert_eq!(
        read,
        vec![
            json!({"id": id, "value": {"sku": "b-1", "price": 3.25}}),
            json!({"id": id, "value": {"sku": "b-2", "price": 4}}),
        ]
    );
    let registered = ok(&fj(
        &kafka,
        &url,
        &["schemas", "get", "made-value", "--output", "json"],
        None,
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&registered).unwrap()["id"].as_i64(),
        Some(id)
    );

    // A value that does not match the schema is refused before it is sent, naming the line and why.
    let out = produce(
        "refused",
        b"{\"sku\": \"c-1\", \"price\": 1}\n{\"sku\": 7, \"price\": 1}\n",
    );
    let err = failed(&out, 1);
    assert!(
        err.contains("line 2")
            && err.contains("does not match its JSON Schema")
            && err.contains("/sku"),
        "{err}"
    );
    interrupt(&mut child);
}

/// `tests/clients/protobuf_tools.py ARGS` with `stdin`; its standard output.
fn protobuf_client(args: &[&str], stdin: Option<&[u8]>) -> String {
    let script = workspace_root().join("tests/clients/protobuf_tools.py");
    ok(&run_with_stdin(
        Command::new(python()).arg(script).args(args),
        stdin,
        Duration::from_secs(120),
    ))
}

#[test]
fn protobuf_console_tools_interoperate_with_confluents_protobuf_serializer_and_deserializer() {
    let (dir, mut child, kafka, url) = start();
    // confluent-kafka's ProtobufSerializer writes shop.Order (message index [1]); fjord consume decodes it to
    // the proto3 JSON mapping (64-bit integers as strings, default values left out).
    protobuf_client(
        &["write", &kafka, &url, "orders"],
        Some(b"{\"id\": \"o-1\", \"units\": 1250, \"tags\": [\"new\"], \"header\": {\"source\": \"web\"}}\n{\"id\": \"o-2\"}\n"),
    );
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--value-format",
            "protobuf",
            "--exit-at-end",
        ],
        None,
    ));
    let values: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        values,
        vec![
            json!({"id": "o-1", "units": "1250", "tags": ["new"], "header": {"source": "web"}}),
            json!({"id": "o-2"}),
        ]
    );

    // fjord produce writes shop.Order from a .proto file; confluent-kafka's ProtobufDeserializer reads it.
    let file = dir.path().join("order.proto");
    std::fs::write(&file, protobuf_client(&["proto"], None)).unwrap();
    let produce = |topic: &str, extra: &[&str], input: &[u8]| {
        let mut args = vec![
            "produce",
            topic,
            "--value-format",
            "protobuf",
            "--value-schema-file",
            file.to_str().unwrap(),
        ];
        args.extend(extra);
        fj(&kafka, &url, &args, Some(input))
    };
    ok(&produce(
        "made",
        &["--value-schema-message", "shop.Order"],
        b"{\"id\": \"m-1\", \"units\": \"7\", \"header\": {\"source\": \"cli\"}}\n{\"id\": \"m-2\", \"tags\": [\"a\", \"b\"]}\n",
    ));
    let read = protobuf_client(&["read", &kafka, &url, "made", "2"], None);
    let read: Vec<Value> = read
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = read[0]["id"].as_i64().unwrap();
    assert_eq!(
        read,
        vec![
            json!({"id": id, "indexes": "0202", "value": {"id": "m-1", "units": "7", "header": {"source": "cli"}}}),
            json!({"id": id, "indexes": "0202", "value": {"id": "m-2", "tags": ["a", "b"]}}),
        ]
    );
    // And fjord consume reads its own records back.
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "made",
            "--from-beginning",
            "--value-format",
            "protobuf",
            "--exit-at-end",
        ],
        None,
    ));
    assert_eq!(
        out.lines().next().unwrap(),
        r#"{"id":"m-1","units":"7","header":{"source":"cli"}}"#
    );

    // Keys too: --key-format protobuf with the first message of the file (shop.Header, index [0]).
    ok(&fj(
        &kafka,
        &url,
        &[
            "produce",
            "keyed",
            "--key-separator",
            "|",
            "--key-format",
            "protobuf",
            "--key-schema-file",
            file.to_str().unwrap(),
            "--value-format",
            "protobuf",
            "--value-schema-file",
            file.to_str().unwrap(),
            "--value-schema-message",
            "Order",
        ],
        Some(b"{\"source\": \"k\"}|{\"id\": \"v\"}\n"),
    ));
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "keyed",
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
            "--separator",
            " => ",
            "--key-format",
            "protobuf",
            "--value-format",
            "protobuf",
        ],
        None,
    ));
    assert_eq!(out, "{\"source\":\"k\"} => {\"id\":\"v\"}\n");

    // A message the schema does not have, and a value that does not fit the message: clear errors.
    let out = produce("made", &["--value-schema-message", "Nope"], b"{}\n");
    let err = failed(&out, 1);
    assert!(
        err.contains("no message Nope") && err.contains("shop.Order"),
        "{err}"
    );
    let out = produce(
        "made",
        &["--value-schema-message", "Order"],
        b"{\"id\": \"ok\"}\n{\"units\": \"many\"}\n",
    );
    let err = failed(&out, 1);
    assert!(
        err.contains("line 2") && err.contains("shop.Order"),
        "{err}"
    );
    interrupt(&mut child);
}

/// A stand-in for a registry that answers `GET /schemas/ids/ID` from what it remembers and closes every
/// other request unanswered (as a registry going away between two requests, or a caching proxy in front
/// of a stopped one); returns its URL.
fn ids_only_registry(answers: Vec<(String, String)>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            if let Some((_, body)) = answers.iter().find(|(p, _)| *p == path) {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
    url
}

#[test]
fn a_reference_the_registry_cannot_serve_for_now_stops_the_consumer_before_the_record() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("broker"), &[]);
    let kafka = broker.bootstrap.clone();
    let (mut reg, url) = spawn_registry(&kafka, "127.0.0.1:0");
    let item = r#"{"type":"record","name":"Item","namespace":"com.example","fields":[{"name":"sku","type":"string"}]}"#;
    let cart = r#"{"type":"record","name":"Cart","namespace":"com.example","fields":[{"name":"item","type":"com.example.Item"}]}"#;
    ok(&fj(
        &kafka,
        &url,
        &["schemas", "register", "item-value", "--schema", item],
        None,
    ));
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "schemas",
            "register",
            "carts-value",
            "--schema",
            cart,
            "--reference",
            "com.example.Item=item-value:1",
            "--output",
            "json",
        ],
        None,
    ));
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_u64()
        .unwrap();
    // Written by the console producer with the registered schema (its reference resolved through the registry).
    ok(&fj(
        &kafka,
        &url,
        &[
            "produce",
            "carts",
            "--value-format",
            "avro",
            "--value-schema-id",
            &id.to_string(),
        ],
        Some(b"{\"item\": {\"sku\": \"a-1\"}}\n"),
    ));
    // What the registry answers for the id (with its reference), remembered before it stops.
    let resp = http_get(
        url.trim_start_matches("http://"),
        &format!("/schemas/ids/{id}"),
    );
    let body = resp.split_once("\r\n\r\n").unwrap().1.to_string();
    assert!(body.contains("item-value"), "{resp}");
    let _ = reg.kill();
    let _ = reg.wait();

    // The schema id is answered, its reference is not: the consumer stops before the record, uncommitted.
    let stand_in = ids_only_registry(vec![(format!("/schemas/ids/{id}"), body)]);
    let out = fj(
        &kafka,
        &stand_in,
        &[
            "consume",
            "carts",
            "--group",
            "readers",
            "--from-beginning",
            "--value-format",
            "avro",
            "--exit-at-end",
        ],
        None,
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("cannot fetch the referenced schema item-value version 1")
            && err.contains("stopped before carts partition 0 offset 0")
            && !err.contains("skipped"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // With the registry back, the group reads the record it stopped before.
    let (mut reg, url) = spawn_registry(&kafka, "127.0.0.1:0");
    let out = ok(&fj(
        &kafka,
        &url,
        &[
            "consume",
            "carts",
            "--group",
            "readers",
            "--value-format",
            "avro",
            "--exit-at-end",
        ],
        None,
    ));
    assert_eq!(out.trim(), r#"{"item":{"sku":"a-1"}}"#);
    let _ = reg.kill();
    let _ = reg.wait();
}
