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
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["start", "--data-dir"])
        .arg(dir.path())
        .args([
            "--override",
            "listeners=PLAINTEXT://127.0.0.1:0",
            "--override",
            "metrics.listener=127.0.0.1:0",
            "--registry-listener",
            "127.0.0.1:0",
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
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if !line.is_empty() => line,
        _ => {
            let _ = child.kill();
            panic!("fjord start never printed its ready line");
        }
    };
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
