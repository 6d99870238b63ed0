//! Fjord Connect's schema-registry converters (Confluent's `AvroConverter`, `JsonSchemaConverter` and
//! `ProtobufConverter`) with real processes: `fjord start` (broker, Schema Registry and Connect worker) and
//! confluent-kafka Python's serializers and deserializers (third-party code) on the other side of the topics.
#![cfg(feature = "connect")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::connect::*;
use common::*;
use serde_json::{json, Value};

/// `fjord start` with the registry and the Connect worker on free ports (killed on drop).
struct Platform {
    child: Child,
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
            Stdio::from(log),
        );
        Platform {
            child,
            kafka: field(&line, "kafka=").to_string(),
            registry: format!("http://{}", field(&line, "registry=")),
            rest: field(&line, "connect=").to_string(),
        }
    }

    fn create(&self, name: &str, config: Value) {
        let body = json!({"name": name, "config": config}).to_string();
        let (s, v) = http(&self.rest, "POST", "/connectors", Some(&body));
        assert_eq!(s, 201, "{v}");
    }

    fn topic(&self, name: &str) {
        ok(&fjord(
            &self.kafka,
            &["topics", "create", name, "--partitions", "1"],
            None,
        ));
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(args: &[&str]) -> String {
    let script = workspace_root().join("tests/clients/connect_registry.py");
    ok(&run_bounded(
        Command::new(python()).arg(script).args(args),
        Duration::from_secs(120),
    ))
}

/// Produces with confluent-kafka's serializer (`mode`: `produce` for Avro, `produce-json` for JSON Schema) three
/// records, a poison one and one with a schema id the registry does not have to `topic`, runs a FileStreamSink
/// with `value.converter=class` on it, and checks the lines it writes (each the JSON of one record) and the two
/// errant records in the dead-letter topic (the poison one's error containing `poison_error`), while the task
/// keeps running.
fn serializer_to_file_sink(
    p: &Platform,
    dir: &Path,
    mode: &str,
    class: &str,
    topic: &str,
    poison_error: &str,
) {
    p.topic(topic);
    let out = client(&[mode, &p.kafka, &p.registry, topic]);
    assert!(out.starts_with("OK 5"), "{out}");
    let file = dir.join(format!("{topic}.txt"));
    let name = format!("{topic}-sink");
    let dlq_topic = format!("{topic}-dlq");
    p.create(
        &name,
        json!({"connector.class": "FileStreamSink", "topics": topic,
            "file": file.display().to_string(),
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": class,
            "value.converter.schema.registry.url": p.registry,
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": dlq_topic,
            "errors.deadletterqueue.context.headers.enable": "true"}),
    );
    wait_for(Duration::from_secs(60), "the sink to commit all 5", || {
        let v = http(&p.rest, "GET", &format!("/connectors/{name}/offsets"), None).1;
        (v["offsets"][0]["offset"]["kafka_offset"] == 5).then_some(())
    });
    let lines: Vec<Value> = lines_of(&file)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(
        lines,
        [
            json!({"sku": "a-1", "qty": 3, "price": 1.5, "note": null, "day": 19000}),
            json!({"sku": "b-2", "qty": 7, "price": 2.25, "note": "fragile", "day": 19001}),
            json!({"sku": "c-3", "qty": 0, "price": 10.0, "note": "x\ty", "day": 0}),
        ]
    );
    let status = http(&p.rest, "GET", &format!("/connectors/{name}/status"), None).1;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    let dlq = wait_for(Duration::from_secs(30), "the dead letter", || {
        let v = records_of(&p.kafka, &dlq_topic);
        (v.len() >= 2).then_some(v)
    });
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    assert_eq!(dlq[0]["key"], "poison", "{dlq:?}");
    let header = |i: usize, k: &str| -> String {
        dlq[i]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["key"] == k)
            .and_then(|h| h["value"].as_str())
            .unwrap_or_else(|| panic!("no header {k} in {:?}", dlq[i]))
            .to_string()
    };
    assert_eq!(header(0, "__connect.errors.stage"), "VALUE_CONVERTER");
    assert_eq!(header(0, "__connect.errors.offset"), "3");
    assert!(
        header(0, "__connect.errors.exception.message").contains(poison_error),
        "{dlq:?}"
    );
    // The schema id the registry does not have: errant too (not a task failure), saying so.
    assert_eq!(dlq[1]["key"], "unknown-id", "{dlq:?}");
    assert_eq!(header(1, "__connect.errors.offset"), "4");
    assert!(
        header(1, "__connect.errors.exception.message")
            .contains("schema id 999999 is not in the schema registry"),
        "{dlq:?}"
    );
}

/// Records produced by confluent-kafka's AvroSerializer (schema registered in Fjord's registry by the
/// serializer) reach a FileStreamSink with `value.converter=io.confluent.connect.avro.AvroConverter` as the
/// struct values they are (each line the JSON of one record, fields by name, a date as its day number, a
/// null union as null); the record that is not in the wire format goes to the dead-letter topic with the
/// converter's error, and the task keeps running. A sink pointed at a registry that is not there fails with a
/// trace that says what to check.
#[test]
fn avro_records_from_confluents_serializer_reach_a_sink_and_a_poison_record_is_dead_lettered() {
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    serializer_to_file_sink(
        &p,
        dir.path(),
        "produce",
        "io.confluent.connect.avro.AvroConverter",
        "items",
        "wire format",
    );

    // A registry that is not there: the task fails at the first record and says what to check.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    p.create(
        "no-registry",
        json!({"connector.class": "FileStreamSink", "topics": "items",
            "file": dir.path().join("none.txt").display().to_string(),
            "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": nowhere,
            "errors.tolerance": "all", "task.restart.max.attempts": "0"}),
    );
    let status = wait_for(Duration::from_secs(60), "the task to fail", || {
        let v = http(&p.rest, "GET", "/connectors/no-registry/status", None).1;
        (v["tasks"][0]["state"] == "FAILED").then_some(v)
    });
    let trace = status["tasks"][0]["trace"].as_str().unwrap_or("");
    assert!(
        trace.contains("cannot reach the schema registry")
            && trace.contains("value.converter.schema.registry.url"),
        "{trace}"
    );
    assert_eq!(lines_of(&dir.path().join("none.txt")), Vec::<String>::new());
}

/// The same with confluent-kafka's JSONSerializer and `io.confluent.connect.json.JsonSchemaConverter`: the values
/// are validated against their registered JSON Schema, and one that does not match (with a valid schema id) goes
/// to the dead-letter topic.
#[test]
fn json_schema_records_from_confluents_serializer_reach_a_sink_and_an_invalid_one_is_dead_lettered()
{
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    serializer_to_file_sink(
        &p,
        dir.path(),
        "produce-json",
        "io.confluent.connect.json.JsonSchemaConverter",
        "jitems",
        "does not match its schema",
    );
}

/// A FileStreamSource with `value.converter=io.confluent.connect.avro.AvroConverter` registers the lines' Avro
/// schema under `<topic>-value` and writes the Confluent wire format: confluent-kafka's AvroDeserializer decodes
/// every line. A converter without `schema.registry.url` is refused, naming the setting.
#[test]
fn a_source_with_the_avro_converter_writes_what_confluents_deserializer_reads() {
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    p.topic("lines");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "first line\nsecond, with \"quotes\"\nthird\n").unwrap();
    let mut config = json!({"connector.class": "FileStreamSource", "topic": "lines",
        "file": input.display().to_string(),
        "value.converter": "io.confluent.connect.avro.AvroConverter"});

    // Without the registry's URL: validate shows the error on value.converter, naming the setting, and the
    // create is a 400.
    let (s, v) = http(
        &p.rest,
        "PUT",
        "/connector-plugins/FileStreamSource/config/validate",
        Some(&{
            let mut c = config.clone();
            c["name"] = json!("lines-source");
            c.to_string()
        }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["error_count"], 1, "{v}");
    let errors = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["value"]["name"] == "value.converter")
        .map(|c| c["value"]["errors"].to_string())
        .unwrap();
    assert!(
        errors.contains("value.converter.schema.registry.url"),
        "{errors}"
    );
    let body = json!({"name": "lines-source", "config": config}).to_string();
    let (s, v) = http(&p.rest, "POST", "/connectors", Some(&body));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("value.converter.schema.registry.url"),
        "{v}"
    );

    config["value.converter.schema.registry.url"] = json!(p.registry);
    p.create("lines-source", config);
    wait_for(Duration::from_secs(60), "3 records in lines", || {
        let got = fjord(
            &p.kafka,
            &["consume", "lines", "--from-beginning", "--exit-at-end"],
            None,
        );
        (String::from_utf8_lossy(&got.stdout).lines().count() >= 3).then_some(())
    });
    let out = client(&["consume", &p.kafka, &p.registry, "lines", "3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "\"first line\"",
            "\"second, with \\\"quotes\\\"\"",
            "\"third\""
        ],
        "{out}"
    );
    assert!(lines.iter().any(|l| l.starts_with("schema-id ")), "{out}");
    assert_eq!(lines.last(), Some(&"schema \"string\""), "{out}");

    // The same lines through JsonSchemaConverter: JSON values with the registered JSON Schema's id, which
    // confluent-kafka's JSONDeserializer reads (and validates).
    p.topic("jlines");
    p.create(
        "jlines-source",
        json!({"connector.class": "FileStreamSource", "topic": "jlines",
            "file": input.display().to_string(),
            "value.converter": "io.confluent.connect.json.JsonSchemaConverter",
            "value.converter.schema.registry.url": p.registry}),
    );
    let out = client(&["consume-json", &p.kafka, &p.registry, "jlines", "3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "\"first line\"",
            "\"second, with \\\"quotes\\\"\"",
            "\"third\""
        ],
        "{out}"
    );
    let schema: Value =
        serde_json::from_str(lines.last().unwrap().strip_prefix("schema ").unwrap()).unwrap();
    assert_eq!(schema, json!({"type": "string"}), "{out}");

    // auto.register.schemas=false: a subject without the schema fails the task with what to do; with
    // use.latest.version=true the subject's latest schema (registered above for `lines`) is used as it is.
    let unregistered = json!({"connector.class": "FileStreamSource", "topic": "unregistered",
        "file": input.display().to_string(),
        "value.converter": "io.confluent.connect.avro.AvroConverter",
        "value.converter.schema.registry.url": p.registry,
        "value.converter.auto.register.schemas": "false",
        "task.restart.max.attempts": "0"});
    p.topic("unregistered");
    p.create("unregistered-source", unregistered);
    let status = wait_for(Duration::from_secs(60), "the task to fail", || {
        let v = http(
            &p.rest,
            "GET",
            "/connectors/unregistered-source/status",
            None,
        )
        .1;
        (v["tasks"][0]["state"] == "FAILED").then_some(v)
    });
    let trace = status["tasks"][0]["trace"].as_str().unwrap_or("");
    assert!(
        trace.contains("not registered under subject unregistered-value")
            && trace.contains("value.converter.auto.register.schemas=true"),
        "{trace}"
    );
    let subjects = http(&p.registry.replace("http://", ""), "GET", "/subjects", None).1;
    assert!(
        !subjects.to_string().contains("unregistered-value"),
        "{subjects}"
    );
    p.create(
        "latest-source",
        json!({"connector.class": "FileStreamSource", "topic": "lines",
            "file": input.display().to_string(),
            "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": p.registry,
            "value.converter.auto.register.schemas": "false",
            "value.converter.use.latest.version": "true"}),
    );
    let out = client(&["consume", &p.kafka, &p.registry, "lines", "6"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3..6], lines[..3], "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("schema-id ")).count(),
        1,
        "one schema id for both sources: {out}"
    );
}

/// Avro schemas that amplify, registered in Fjord's registry (valid Avro, so it takes them): 40 records each
/// using the next twice (2^40 types when expanded), an array of nulls and an array of empty records (a 3-byte
/// count claims a million values). A FileStreamSink with AvroConverter dead-letters each of their records with the
/// reason, keeps running, and writes the ordinary record after them. Before, the first one hung the task in the
/// converter's schema check (no record after it was ever written).
#[test]
fn records_of_avro_schemas_that_amplify_are_dead_lettered_and_the_sink_keeps_running() {
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    let topic = "amplify";
    p.topic(topic);
    let registry = p.registry.replace("http://", "");
    let register = |subject: &str, schema: &str| -> u32 {
        let body = json!({ "schema": schema }).to_string();
        let (s, v) = http(
            &registry,
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(&body),
        );
        assert_eq!(s, 200, "{subject}: {v}");
        v["id"].as_u64().unwrap() as u32
    };
    let mut chain =
        r#"{"type":"record","name":"R40","fields":[{"name":"x","type":"int"}]}"#.to_string();
    for i in (0..40).rev() {
        chain = format!(
            r#"{{"type":"record","name":"R{i}","fields":[{{"name":"a","type":{chain}}},{{"name":"b","type":"R{}"}}]}}"#,
            i + 1
        );
    }
    let chain_id = register("chain", &chain);
    let nulls_id = register("nulls", r#"{"type":"array","items":"null"}"#);
    let empty_id = register(
        "empty",
        r#"{"type":"array","items":{"type":"record","name":"E","fields":[]}}"#,
    );
    let fine_id = register(
        "fine",
        r#"{"type":"record","name":"Fine","fields":[{"name":"n","type":"int"}]}"#,
    );
    // An array block of 1,000,000 items (zig-zag varint 0x80 0x89 0x7a) and the array's end.
    let million = "80897a00";
    let record = |key: &str, id: u32, body: &str| format!("{key}:00{id:08x}{body}");
    let out = client(&[
        "produce-raw",
        &p.kafka,
        topic,
        &record("chain", chain_id, "00"),
        &record("nulls", nulls_id, million),
        &record("empty", empty_id, million),
        // n = 5.
        &record("fine", fine_id, "0a"),
    ]);
    assert!(out.starts_with("OK 4"), "{out}");
    let file = dir.path().join("amplify.txt");
    p.create(
        "amplify-sink",
        json!({"connector.class": "FileStreamSink", "topics": topic,
            "file": file.display().to_string(),
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": p.registry,
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": "amplify-dlq",
            "errors.deadletterqueue.context.headers.enable": "true"}),
    );
    wait_for(Duration::from_secs(60), "the sink to commit all 4", || {
        let v = http(&p.rest, "GET", "/connectors/amplify-sink/offsets", None).1;
        (v["offsets"][0]["offset"]["kafka_offset"] == 4).then_some(())
    });
    let lines: Vec<Value> = lines_of(&file)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines, [json!({"n": 5})]);
    let status = http(&p.rest, "GET", "/connectors/amplify-sink/status", None).1;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    let dlq = wait_for(Duration::from_secs(30), "the dead letters", || {
        let v = records_of(&p.kafka, "amplify-dlq");
        (v.len() >= 3).then_some(v)
    });
    let message = |i: usize| -> String {
        dlq[i]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["key"] == "__connect.errors.exception.message")
            .and_then(|h| h["value"].as_str())
            .unwrap_or_else(|| panic!("no error message in {:?}", dlq[i]))
            .to_string()
    };
    let keys: Vec<&Value> = dlq.iter().map(|r| &r["key"]).collect();
    assert_eq!(keys, [&json!("chain"), &json!("nulls"), &json!("empty")]);
    assert!(
        message(0).contains("more than 10000 types"),
        "{}",
        message(0)
    );
    for i in [1, 2] {
        assert!(message(i).contains("take no bytes"), "{}", message(i));
    }
}

/// Records written by confluent-kafka's ProtobufSerializer (`shop.Order`, the second message of its schema, so
/// the message-index array is not the one-byte shortcut; the schema registered in Fjord's registry by the
/// serializer) reach a FileStreamSink with `value.converter=io.confluent.connect.protobuf.ProtobufConverter` as
/// Connect structs, field by field: an int64 as a number (not the proto3 JSON string), scalars that are not set as
/// their defaults, a message that is not set as null. A record not in the wire format is dead-lettered.
#[test]
fn protobuf_records_from_confluents_serializer_reach_a_sink_as_connect_structs() {
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    let topic = "orders";
    p.topic(topic);
    let input = [
        json!({"id": "o-1", "units": "1250", "tags": ["a", "b"], "header": {"source": "web"}}),
        json!({"id": "o-2"}),
        json!({"id": "o-3", "units": "-9007199254740993", "header": {}}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    ok(&run_with_stdin(
        Command::new(python())
            .arg(workspace_root().join("tests/clients/protobuf_tools.py"))
            .args(["write", &p.kafka, &p.registry, topic]),
        Some(input.as_bytes()),
        Duration::from_secs(120),
    ));
    let out = client(&[
        "produce-raw",
        &p.kafka,
        topic,
        &format!("poison:{}", "6e6f742070726f746f627566"),
    ]);
    assert!(out.starts_with("OK 1"), "{out}");
    let file = dir.path().join("orders.txt");
    p.create(
        "orders-sink",
        json!({"connector.class": "FileStreamSink", "topics": topic,
            "file": file.display().to_string(),
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "io.confluent.connect.protobuf.ProtobufConverter",
            "value.converter.schema.registry.url": p.registry,
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": "orders-dlq",
            "errors.deadletterqueue.context.headers.enable": "true"}),
    );
    wait_for(Duration::from_secs(60), "the sink to commit all 4", || {
        let v = http(&p.rest, "GET", "/connectors/orders-sink/offsets", None).1;
        (v["offsets"][0]["offset"]["kafka_offset"] == 4).then_some(())
    });
    let lines: Vec<Value> = lines_of(&file)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(
        lines,
        [
            json!({"id": "o-1", "units": 1250, "tags": ["a", "b"], "header": {"source": "web"}}),
            json!({"id": "o-2", "units": 0, "tags": [], "header": null}),
            json!({"id": "o-3", "units": -9007199254740993i64, "tags": [], "header": {"source": ""}}),
        ]
    );
    let status = http(&p.rest, "GET", "/connectors/orders-sink/status", None).1;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    let dlq = wait_for(Duration::from_secs(30), "the dead letter", || {
        let v = records_of(&p.kafka, "orders-dlq");
        (!v.is_empty()).then_some(v)
    });
    assert_eq!(dlq[0]["key"], "poison", "{dlq:?}");
    let message = dlq[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["key"] == "__connect.errors.exception.message")
        .and_then(|h| h["value"].as_str())
        .unwrap_or("")
        .to_string();
    assert!(message.contains("wire format"), "{dlq:?}");
}

/// A Protobuf schema that imports another file: confluent-kafka's ProtobufSerializer registers the imported
/// `shop/header.proto` under its own subject and the order's schema with a reference to it. A sink with
/// ProtobufConverter fetches the referenced schema by subject and version and reads the records, the imported
/// message's field included.
#[test]
fn protobuf_records_whose_schema_imports_another_reach_a_sink() {
    let dir = temp_dir();
    let p = Platform::start(dir.path());
    let topic = "orders-ref";
    p.topic(topic);
    let out = client(&["produce-protobuf-import", &p.kafka, &p.registry, topic]);
    assert!(out.starts_with("OK 2"), "{out}");
    let subject = http(
        &p.registry.replace("http://", ""),
        "GET",
        &format!("/subjects/{topic}-value/versions/latest"),
        None,
    )
    .1;
    assert_eq!(
        subject["references"][0]["name"], "shop/header.proto",
        "the serializer registered no reference: {subject}"
    );
    let file = dir.path().join("orders-ref.txt");
    p.create(
        "orders-ref-sink",
        json!({"connector.class": "FileStreamSink", "topics": topic,
            "file": file.display().to_string(),
            "value.converter": "io.confluent.connect.protobuf.ProtobufConverter",
            "value.converter.schema.registry.url": p.registry,
            "task.restart.max.attempts": "0"}),
    );
    wait_for(Duration::from_secs(60), "the sink to commit both", || {
        let v = http(&p.rest, "GET", "/connectors/orders-ref-sink/offsets", None).1;
        (v["offsets"][0]["offset"]["kafka_offset"] == 2).then_some(())
    });
    let lines: Vec<Value> = lines_of(&file)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(
        lines,
        [
            json!({"id": "r-1", "header": {"source": "app"}}),
            json!({"id": "r-2", "header": null}),
        ]
    );
}
