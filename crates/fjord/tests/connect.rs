//! Fjord Connect with real processes: `fjord connect standalone` beside `fjord broker`, the seed's flow (a
//! FileStreamSource tailing a growing file into `catalog`, a FileStreamSink and `fjord consume` reading it back),
//! kill -9 of the worker mid-stream, truncation and rotation of the tailed file, and Kafka Connect's REST API
//! (shapes, status codes, errors) driven over HTTP.
#![cfg(feature = "connect")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::connect::*;
use common::*;
use serde_json::{json, Value};

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Every value of `topic` from the beginning, as `fjord consume` prints them.
fn consume_all(bootstrap: &str, topic: &str) -> Vec<String> {
    let out = ok(&fjord(
        bootstrap,
        &["consume", topic, "--from-beginning", "--exit-at-end"],
        None,
    ));
    out.lines().map(str::to_string).collect()
}

/// Waits (bounded) until `topic`, an offsets topic, holds `position` as the latest offset of `connector`'s
/// `file`, as Connect's records: key `["<connector>", {"filename": ...}]`, value `{"position": n}`.
fn wait_committed(bootstrap: &str, topic: &str, connector: &str, file: &str, position: u64) {
    let key = json!([connector, {"filename": file}]).to_string();
    let want = json!({ "position": position });
    wait_for(
        Duration::from_secs(30),
        &format!("position {position} of {connector} in {topic}"),
        || {
            let latest = keyed_records(bootstrap, topic)
                .into_iter()
                .rev()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok());
            (latest.as_ref() == Some(&want)).then_some(())
        },
    );
}

/// Every record of `topic`, one `key<TAB>value` line each, in order (`fjord consume --print-key`).
fn keyed_text(bootstrap: &str, topic: &str) -> String {
    ok(&fjord(
        bootstrap,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
        ],
        None,
    ))
}

/// Every record of `topic` as (key, value) text, in order.
fn keyed_records(bootstrap: &str, topic: &str) -> Vec<(String, String)> {
    keyed_text(bootstrap, topic)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Counts of each line; (lines missing from `expected`, duplicate deliveries).
fn tally(seen: &[String], expected: &[String]) -> (Vec<String>, usize) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in seen {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    let missing = expected
        .iter()
        .filter(|e| !counts.contains_key(e.as_str()))
        .cloned()
        .collect();
    let duplicates = counts.values().map(|c| c - 1).sum();
    (missing, duplicates)
}

#[test]
fn file_source_streams_a_growing_file_to_catalog_and_loses_nothing_across_kill9() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "catalog", "--partitions", "1"],
        None,
    ));
    let input = dir.path().join("catalog.txt");
    let output = dir.path().join("catalog.out");
    write_file(&input, "");
    // The worker's default converters: JsonConverter with Connect's schema envelope on the topic. Offsets are
    // flushed after every acknowledged batch, so that resuming (few duplicates) is told apart from starting over;
    // a short session lets the restarted sink take over from its killed predecessor quickly.
    let worker = worker_properties(
        dir.path(),
        &broker.bootstrap,
        "offset.flush.interval.ms=0\nconsumer.session.timeout.ms=6000\nconsumer.heartbeat.interval.ms=1000\n",
    );
    let source = dir.path().join("file-source.properties");
    write_file(
        &source,
        &format!(
            "name=catalog-source\nconnector.class=FileStreamSource\ntasks.max=1\nfile={}\ntopic=catalog\nbatch.size=20\n",
            input.display()
        ),
    );
    let sink = dir.path().join("file-sink.json");
    write_file(
        &sink,
        &json!({"name": "catalog-sink", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "file": output.display().to_string(), "topics": "catalog"}})
        .to_string(),
    );
    let log = dir.path().join("worker.log");
    let mut w = WorkerProc::start(&[&worker, &source, &sink], &log);

    let expected: Vec<String> = (0..600)
        .map(|i| format!("product-{i:05} \"quoted\" ünïcode"))
        .collect();
    // The file grows while the worker runs: 200 lines, in steps.
    for chunk in expected[..200].chunks(10) {
        append(
            &input,
            &chunk.iter().map(|l| format!("{l}\n")).collect::<String>(),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before_kill = wait_for(
        Duration::from_secs(60),
        "the sink to write 100 lines",
        || {
            let n = lines_of(&output).len();
            (n >= 100).then_some(n)
        },
    );
    // Mid-stream: more lines arrive while the worker dies without any chance to flush.
    append(
        &input,
        &expected[200..300]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    w.kill9();
    append(
        &input,
        &expected[300..500]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    w.spawn();
    append(
        &input,
        &expected[500..]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );

    wait_for(
        Duration::from_secs(90),
        "the sink to hold every line",
        || {
            let (missing, _) = tally(&lines_of(&output), &expected);
            missing.is_empty().then_some(())
        },
    );
    let sunk = lines_of(&output);
    let (missing, sink_dups) = tally(&sunk, &expected);
    assert!(missing.is_empty());
    assert!(
        sunk.iter().all(|l| expected.contains(l)),
        "the sink wrote a line never in the file"
    );

    // The topic holds Connect's JSON envelope around each line; every line is there.
    let consumed = consume_all(&broker.bootstrap, "catalog");
    let payloads: Vec<String> = consumed
        .iter()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert_eq!(
                v["schema"],
                json!({"type": "string", "optional": false}),
                "{l}"
            );
            v["payload"].as_str().unwrap().to_string()
        })
        .collect();
    let (missing, topic_dups) = tally(&payloads, &expected);
    assert!(missing.is_empty(), "lost in the topic: {missing:?}");
    eprintln!(
        "at-least-once across kill -9: {} lines, {topic_dups} duplicates in catalog, {sink_dups} in the sink file (the sink had {before_kill} lines at the kill)",
        expected.len()
    );
    // The source resumed from its stored offset, not from the start of the file.
    assert!(
        topic_dups < before_kill,
        "{topic_dups} duplicates: the source re-read the file from the start instead of resuming"
    );
    // The stored offset is the end of the file, in Connect's shape.
    let len = std::fs::metadata(&input).unwrap().len();
    let offsets = wait_for(
        Duration::from_secs(30),
        "the offset to reach the end of the file",
        || {
            let (status, v) = http(&w.rest, "GET", "/connectors/catalog-source/offsets", None);
            assert_eq!(status, 200, "{v}");
            (v["offsets"][0]["offset"]["position"] == json!(len)).then_some(v)
        },
    );
    assert_eq!(
        offsets["offsets"][0]["partition"],
        json!({"filename": input.display().to_string()})
    );
    // The sink's offsets are its consumer group's (connect-catalog-sink): at the end of the topic.
    let (status, v) = http(&w.rest, "GET", "/connectors/catalog-sink/offsets", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["offsets"][0]["partition"],
        json!({"kafka_topic": "catalog", "kafka_partition": 0}),
        "{v}"
    );
    assert_eq!(
        v["offsets"][0]["offset"]["kafka_offset"],
        json!(consumed.len()),
        "{v}"
    );
}

#[test]
fn file_source_starts_over_after_truncation_and_rotation() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "logs", "--partitions", "1"],
        None,
    ));
    let input = dir.path().join("app.log");
    write_file(&input, "first-1\nfirst-2\nfirst-3\n");
    let worker = worker_properties(
        dir.path(),
        &broker.bootstrap,
        "key.converter=org.apache.kafka.connect.storage.StringConverter\nvalue.converter=org.apache.kafka.connect.storage.StringConverter\n",
    );
    let source = dir.path().join("source.properties");
    write_file(
        &source,
        &format!(
            "name=logs-source\nconnector.class=FileStreamSourceConnector\nfile={}\ntopic=logs\n",
            input.display()
        ),
    );
    let w = WorkerProc::start(&[&worker, &source], &dir.path().join("worker.log"));
    let until = |want: &[&str]| {
        wait_for(
            Duration::from_secs(60),
            &format!("{want:?} in the topic"),
            || {
                let got = consume_all(&broker.bootstrap, "logs");
                want.iter()
                    .all(|w| got.iter().any(|g| g == w))
                    .then_some(got)
            },
        )
    };
    until(&["first-1", "first-2", "first-3"]);
    // Rotation: the file is moved away and a new one takes its name.
    std::fs::rename(&input, dir.path().join("app.log.1")).unwrap();
    write_file(&input, "second-1\nsecond-2\n");
    until(&["second-1", "second-2"]);
    // Truncation in place: the same file, shorter than the position reached.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&input, "third\n");
    let got = until(&["third"]);
    // Plain text with StringConverter; each line exactly once (nothing re-read from the old files).
    assert_eq!(
        got,
        ["first-1", "first-2", "first-3", "second-1", "second-2", "third"],
        "{got:?}"
    );
    let log = w.log();
    assert!(log.contains("rotated"), "no rotation logged:\n{log}");
    assert!(log.contains("truncated"), "no truncation logged:\n{log}");
}

#[test]
fn rest_api_answers_with_connects_shapes_codes_and_errors() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let worker = worker_properties(dir.path(), &broker.bootstrap, "");
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let r = w.rest.as_str();
    let input = dir.path().join("in.txt");
    write_file(&input, "a\nb\n");

    let (s, v) = http(r, "GET", "/", None);
    assert_eq!(s, 200);
    assert!(v["version"].is_string() && v["commit"].is_string(), "{v}");
    assert!(!v["kafka_cluster_id"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(http(r, "GET", "/connectors", None), (200, json!([])));

    // Unknown connectors: 404 in Connect's error format.
    for (m, p) in [
        ("GET", "/connectors/nope"),
        ("GET", "/connectors/nope/status"),
        ("GET", "/connectors/nope/config"),
        ("DELETE", "/connectors/nope"),
        ("PUT", "/connectors/nope/pause"),
        ("POST", "/connectors/nope/restart"),
        ("GET", "/connectors/nope/offsets"),
    ] {
        let (s, v) = http(r, m, p, None);
        assert_eq!(s, 404, "{m} {p}: {v}");
        assert_eq!(v["error_code"], 404, "{v}");
        assert!(v["message"].as_str().unwrap().contains("nope"), "{v}");
    }
    // Bad bodies and bad configs: 400, naming what is wrong.
    let (s, v) = http(r, "POST", "/connectors", Some("{\"name\": "));
    assert_eq!((s, &v["error_code"]), (400, &json!(400)), "{v}");
    assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");
    let (s, v) = http(r, "POST", "/connectors", Some(""));
    assert_eq!(s, 400, "{v}");
    let (s, v) = http(
        r,
        "POST",
        "/connectors",
        Some(&json!({"config": {}}).to_string()),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("name"), "{v}");
    let base = json!({"connector.class": "FileStreamSource", "file": input.display().to_string(), "topic": "rest-topic"});
    let with = |k: &str, val: Value| {
        let mut c = base.clone();
        c[k] = val;
        c
    };
    for (config, field) in [
        (with("topic", json!("")), "topic"),
        (with("batch.size", json!("lots")), "batch.size"),
        (
            with("value.converter", json!("com.example.AvroConverter")),
            "value.converter",
        ),
        (with("topic", json!("no spaces allowed")), "topic"),
    ] {
        let (s, v) = http(
            r,
            "POST",
            "/connectors",
            Some(&json!({"name": "bad", "config": config}).to_string()),
        );
        assert_eq!(s, 400, "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("configuration {field}")),
            "{field}: {msg}"
        );
    }
    let (s, v) = http(
        r,
        "POST",
        "/connectors",
        Some(
            &json!({"name": "bad", "config": with("connector.class", json!("MySqlConnector"))})
                .to_string(),
        ),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("MySqlConnector"),
        "{v}"
    );
    let (s, v) = http(
        r,
        "POST",
        "/connectors",
        Some(&json!({"name": "a", "config": with("name", json!("b"))}).to_string()),
    );
    assert_eq!(s, 400, "{v}");

    // Create; a second create of the same name is a conflict.
    let (s, info) = http(
        r,
        "POST",
        "/connectors",
        Some(&json!({"name": "src", "config": base}).to_string()),
    );
    assert_eq!(s, 201, "{info}");
    assert_eq!(info["name"], "src");
    assert_eq!(info["type"], "source");
    assert_eq!(info["tasks"], json!([{"connector": "src", "task": 0}]));
    assert_eq!(info["config"]["name"], "src");
    let (s, v) = http(
        r,
        "POST",
        "/connectors",
        Some(&json!({"name": "src", "config": base}).to_string()),
    );
    assert_eq!((s, &v["error_code"]), (409, &json!(409)), "{v}");

    let status = http(r, "GET", "/connectors/src/status", None).1;
    assert_eq!(status["name"], "src");
    assert_eq!(status["type"], "source");
    assert_eq!(status["connector"]["state"], "RUNNING");
    assert_eq!(status["connector"]["worker_id"], json!(r));
    assert_eq!(status["tasks"][0]["id"], 0);
    assert_eq!(status["tasks"][0]["state"], "RUNNING");
    let (s, v) = http(r, "GET", "/connectors?expand=status&expand=info", None);
    assert_eq!(s, 200);
    assert_eq!(v["src"]["status"]["connector"]["state"], "RUNNING", "{v}");
    assert_eq!(v["src"]["info"]["type"], "source", "{v}");
    assert_eq!(http(r, "GET", "/connectors?expand=bogus", None).0, 400);

    // Pause, resume, stop.
    assert_eq!(http(r, "PUT", "/connectors/src/pause", None).0, 202);
    let v = http(r, "GET", "/connectors/src/status", None).1;
    assert_eq!(
        (&v["connector"]["state"], &v["tasks"][0]["state"]),
        (&json!("PAUSED"), &json!("PAUSED")),
        "{v}"
    );
    assert_eq!(http(r, "PUT", "/connectors/src/stop", None).0, 202);
    let v = http(r, "GET", "/connectors/src/status", None).1;
    assert_eq!(
        (&v["connector"]["state"], &v["tasks"]),
        (&json!("STOPPED"), &json!([])),
        "{v}"
    );
    assert_eq!(http(r, "GET", "/connectors/src/tasks", None).1, json!([]));
    assert_eq!(http(r, "PUT", "/connectors/src/resume", None).0, 202);
    let v = http(r, "GET", "/connectors/src/status", None).1;
    assert_eq!(v["tasks"][0]["state"], "RUNNING", "{v}");

    // Restarts: the old form (204) and KIP-745's (202 with what restarts).
    assert_eq!(http(r, "POST", "/connectors/src/restart", None).0, 204);
    let (s, v) = http(
        r,
        "POST",
        "/connectors/src/restart?includeTasks=true&onlyFailed=false",
        None,
    );
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["connector"]["state"], "RESTARTING", "{v}");
    assert_eq!(v["tasks"][0]["state"], "RESTARTING", "{v}");
    let (s, v) = http(
        r,
        "POST",
        "/connectors/src/restart?includeTasks=true&onlyFailed=true",
        None,
    );
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        v["tasks"][0]["state"], "RUNNING",
        "a running task is not restarted with onlyFailed: {v}"
    );
    assert_eq!(
        http(
            r,
            "POST",
            "/connectors/src/restart?includeTasks=maybe",
            None
        )
        .0,
        400
    );

    // Tasks.
    let v = http(r, "GET", "/connectors/src/tasks", None).1;
    assert_eq!(v[0]["id"], json!({"connector": "src", "task": 0}), "{v}");
    assert_eq!(v[0]["config"]["topic"], "rest-topic", "{v}");
    let v = http(r, "GET", "/connectors/src/tasks/0/status", None).1;
    assert_eq!(
        (&v["id"], &v["state"]),
        (&json!(0), &json!("RUNNING")),
        "{v}"
    );
    assert_eq!(
        http(r, "GET", "/connectors/src/tasks/7/status", None).0,
        404
    );
    assert_eq!(
        http(r, "GET", "/connectors/src/tasks/x/status", None).0,
        400
    );
    assert_eq!(
        http(r, "POST", "/connectors/src/tasks/0/restart", None).0,
        204
    );

    // KIP-875 offsets: the source reaches the end of its two lines.
    wait_for(Duration::from_secs(60), "the source's offset", || {
        let v = http(r, "GET", "/connectors/src/offsets", None).1;
        (v == json!({"offsets": [{"partition": {"filename": input.display().to_string()}, "offset": {"position": 4}}]})).then_some(())
    });

    // KIP-875 alter and reset: only when STOPPED; the source resumes from the altered position.
    let part = json!({"filename": input.display().to_string()});
    let alter = json!({"offsets": [{"partition": part, "offset": {"position": 2}}]}).to_string();
    let (s, v) = http(r, "PATCH", "/connectors/src/offsets", Some(&alter));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("STOPPED"), "{v}");
    assert_eq!(http(r, "PUT", "/connectors/src/stop", None).0, 202);
    assert_eq!(
        http(
            r,
            "PATCH",
            "/connectors/src/offsets",
            Some("{\"offsets\": 1}")
        )
        .0,
        400
    );
    let (s, v) = http(r, "PATCH", "/connectors/src/offsets", Some(&alter));
    assert_eq!(s, 200, "{v}");
    assert!(v["message"].as_str().unwrap().contains("altered"), "{v}");
    assert_eq!(
        http(r, "GET", "/connectors/src/offsets", None).1["offsets"][0]["offset"],
        json!({"position": 2})
    );
    let (s, v) = http(r, "DELETE", "/connectors/src/offsets", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        http(r, "GET", "/connectors/src/offsets", None).1,
        json!({"offsets": []})
    );
    // Resumed, the source re-reads the file from the start: back at its end.
    assert_eq!(http(r, "PUT", "/connectors/src/resume", None).0, 202);
    wait_for(
        Duration::from_secs(60),
        "the source's offset after the reset",
        || {
            let v = http(r, "GET", "/connectors/src/offsets", None).1;
            (v["offsets"][0]["offset"] == json!({"position": 4})).then_some(())
        },
    );

    // PUT config: creates (201), then updates (200); the name must match the URL.
    let sink = json!({"connector.class": "FileStreamSink", "file": dir.path().join("out.txt").display().to_string(), "topics": "rest-topic"});
    let (s, v) = http(r, "PUT", "/connectors/snk/config", Some(&sink.to_string()));
    assert_eq!((s, &v["type"]), (201, &json!("sink")), "{v}");
    let (s, _) = http(r, "PUT", "/connectors/snk/config", Some(&sink.to_string()));
    assert_eq!(s, 200);
    let (s, v) = http(
        r,
        "PUT",
        "/connectors/snk/config",
        Some(&json!({"name": "other", "connector.class": "FileStreamSink"}).to_string()),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        http(r, "GET", "/connectors/snk/config", None).1["topics"],
        "rest-topic"
    );
    assert_eq!(http(r, "GET", "/connectors", None).1, json!(["snk", "src"]));
    let v = http(r, "GET", "/connectors/snk/topics", None).1;
    assert_eq!(v, json!({"snk": {"topics": ["rest-topic"]}}));

    // Plugins and validation.
    let v = http(r, "GET", "/connector-plugins", None).1;
    let classes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class"].as_str().unwrap())
        .collect();
    assert!(
        classes.contains(&"org.apache.kafka.connect.file.FileStreamSourceConnector"),
        "{v}"
    );
    assert!(
        classes.contains(&"org.apache.kafka.connect.file.FileStreamSinkConnector"),
        "{v}"
    );
    let (s, v) = http(
        r,
        "PUT",
        "/connector-plugins/FileStreamSourceConnector/config/validate",
        Some(&json!({"connector.class": "FileStreamSource", "name": "x", "file": "/tmp/f", "topic": "bad topic"}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["name"],
        "org.apache.kafka.connect.file.FileStreamSourceConnector"
    );
    assert_eq!(v["error_count"], 1, "{v}");
    let topic = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["value"]["name"] == "topic")
        .unwrap();
    assert_eq!(topic["definition"]["required"], true);
    assert_eq!(topic["value"]["value"], "bad topic");
    assert!(
        !topic["value"]["errors"].as_array().unwrap().is_empty(),
        "{topic}"
    );
    assert!(topic["value"]["recommended_values"].is_array() && topic["value"]["visible"] == true);
    let (s, v) = http(
        r,
        "PUT",
        "/connector-plugins/FileStreamSink/config/validate",
        Some(&json!({"connector.class": "FileStreamSource"}).to_string()),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        http(
            r,
            "PUT",
            "/connector-plugins/Nope/config/validate",
            Some("{}")
        )
        .0,
        400
    );
    assert_eq!(
        http(
            r,
            "PUT",
            "/connector-plugins/FileStreamSink/config/validate",
            Some("[1]")
        )
        .0,
        400
    );

    // Delete.
    assert_eq!(http(r, "DELETE", "/connectors/src", None).0, 204);
    assert_eq!(http(r, "GET", "/connectors/src", None).0, 404);
    assert_eq!(http(r, "GET", "/connectors", None).1, json!(["snk"]));
    let (s, v) = http(r, "GET", "/no/such/path", None);
    assert_eq!((s, &v["error_code"]), (404, &json!(404)), "{v}");
}

#[test]
fn standalone_refuses_a_torn_offsets_file_and_a_bad_connector_file() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let worker = worker_properties(dir.path(), &broker.bootstrap, "");
    let run = |args: &[&Path]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord"));
        cmd.args(["connect", "standalone"]).args(args);
        run_bounded(&mut cmd, Duration::from_secs(60))
    };
    let bad = dir.path().join("bad.properties");
    write_file(
        &bad,
        "name=b\nconnector.class=FileStreamSource\nfile=/tmp/x\n",
    );
    let out = run(&[&worker, &bad]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"topic\""), "{}", stderr(&out));
    // An empty offsets file (a crash while an editor or a script wrote it) is not silently reset.
    write_file(&dir.path().join("connect.offsets"), "");
    let out = run(&[&worker]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("connect.offsets") && err.contains("empty") && err.contains("move it aside"),
        "{err}"
    );
}

/// A `fjord start` process (killed on drop) and its Kafka and Connect addresses.
struct Platform {
    child: Child,
    kafka: String,
    rest: String,
}

impl Platform {
    fn start(data: &Path) -> Platform {
        let log_path = data.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["start", "--data-dir"])
            .arg(data)
            .args([
                "--override",
                "listeners=PLAINTEXT://127.0.0.1:0",
                "--override",
                "metrics.listener=127.0.0.1:0",
                "--registry-listener",
                "none",
                "--connect-listener",
                "127.0.0.1:0",
                "--sql-listener",
                "none",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let mut p = Platform {
            child,
            kafka: String::new(),
            rest: String::new(),
        };
        assert!(
            line.starts_with("fjord ready"),
            "fjord start never became ready: `{line}`; log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        p.kafka = field(&line, "kafka=").to_string();
        p.rest = field(&line, "connect=").to_string();
        p
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fjord start` runs a distributed-mode worker on its own broker: a connector created over REST, its target
/// state and its source offset are in the config and offsets topics (Connect's record formats; the offsets file
/// of an earlier, standalone `fjord start` is imported), so that after a restart it is still there and resumes
/// where it was, sending nothing twice.
#[test]
fn fjord_start_runs_a_connect_worker_beside_the_broker_and_keeps_connectors_across_restarts() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    // The offsets file an earlier Fjord's (standalone) worker left: the source had sent the first line.
    std::fs::create_dir_all(&data).unwrap();
    let input = dir.path().join("in.txt");
    let body = json!([{"key": ["s", {"filename": input.display().to_string()}], "value": {"position": 12}}])
        .to_string();
    write_file(
        &data.join("connect.offsets"),
        &format!(
            "fjord-connect-offsets v1 {} {:08x}\n{body}\n",
            body.len(),
            crc32c::crc32c(body.as_bytes())
        ),
    );
    let mut p = Platform::start(&data);
    assert!(
        data.join("connect.offsets.imported").exists() && !data.join("connect.offsets").exists()
    );
    let (kafka, rest) = (p.kafka.clone(), p.rest.clone());
    let (s, v) = http(&rest, "GET", "/", None);
    assert_eq!(s, 200, "{v}");
    assert!(
        !v["kafka_cluster_id"].as_str().unwrap_or("").is_empty(),
        "{v}"
    );
    // A source created over REST streams into the platform's own broker.
    ok(&fjord(
        &kafka,
        &["topics", "create", "started", "--partitions", "1"],
        None,
    ));
    write_file(&input, "sent-before\nfrom-start\n");
    let file = input.display().to_string();
    let config = json!({"name": "s", "config": {"connector.class": "FileStreamSource",
        "file": file, "topic": "started",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter"}});
    assert_eq!(
        http(&rest, "POST", "/connectors", Some(&config.to_string())).0,
        201
    );
    let paused = json!({"name": "paused", "config": {"connector.class": "FileStreamSink",
        "file": dir.path().join("out.txt").display().to_string(), "topics": "started"}});
    assert_eq!(
        http(&rest, "POST", "/connectors", Some(&paused.to_string())).0,
        201
    );
    assert_eq!(http(&rest, "PUT", "/connectors/paused/pause", None).0, 202);
    wait_for(Duration::from_secs(60), "the line in the topic", || {
        let got = consume_all(&kafka, "started");
        (got == ["from-start"]).then_some(())
    });
    // Ctrl-C stops the worker (its offsets written) and the broker cleanly.
    interrupt(&mut p.child);
    drop(p);

    let p = Platform::start(&data);
    let (kafka, rest) = (p.kafka.clone(), p.rest.clone());
    assert_eq!(
        http(&rest, "GET", "/connectors", None).1,
        json!(["paused", "s"])
    );
    assert_eq!(
        http(&rest, "GET", "/connectors/s/config", None).1["file"],
        json!(file)
    );
    assert_eq!(
        http(&rest, "GET", "/connectors/paused/status", None).1["connector"]["state"],
        "PAUSED"
    );
    append(&input, "after-restart\n");
    wait_for(Duration::from_secs(60), "the new line in the topic", || {
        let got = consume_all(&kafka, "started");
        (got.len() >= 2).then_some(())
    });
    // Resumed from its stored offset: the first line is not sent again.
    assert_eq!(
        consume_all(&kafka, "started"),
        ["from-start", "after-restart"]
    );
    // Connect's record formats, as an Apache Kafka worker writes and reads them.
    let keyed = |topic: &str| keyed_text(&kafka, topic);
    let configs = keyed("connect-configs");
    for expected in [
        format!(
            "connector-s\t{{\"properties\":{}}}",
            config["config"]
                .as_object()
                .map(|c| {
                    let mut c = c.clone();
                    c.insert("name".into(), json!("s"));
                    serde_json::to_string(&c).unwrap()
                })
                .unwrap()
        ),
        "target-state-paused\t{\"state\":\"PAUSED\",\"state.v2\":\"PAUSED\"}".to_string(),
        "commit-s\t{\"tasks\":1}".to_string(),
    ] {
        assert!(
            configs.lines().any(|l| l == expected),
            "{expected} not in:\n{configs}"
        );
    }
    assert!(
        configs
            .lines()
            .any(|l| l.starts_with("task-s-0\t{\"properties\":{")),
        "{configs}"
    );
    let offsets = keyed("connect-offsets");
    let key = json!(["s", {"filename": file}]).to_string();
    assert!(
        offsets
            .lines()
            .any(|l| l == format!("{key}\t{{\"position\":23}}")),
        "{offsets}"
    );
}

#[test]
fn a_sink_task_that_cannot_convert_a_record_fails_with_a_trace_and_restarts_with_only_failed() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "plain", "--partitions", "1"],
        None,
    ));
    ok(&fjord(
        &broker.bootstrap,
        &["produce", "plain"],
        Some(b"{\"schema\":null,\"payload\":\"ok\"}\nnot json\n"),
    ));
    let worker = worker_properties(dir.path(), &broker.bootstrap, "");
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let out = dir.path().join("out.txt");
    let config = json!({"name": "strict", "config": {"connector.class": "FileStreamSink",
        "file": out.display().to_string(), "topics": "plain"}});
    assert_eq!(
        http(&w.rest, "POST", "/connectors", Some(&config.to_string())).0,
        201
    );
    let status = wait_for(Duration::from_secs(60), "the task to fail", || {
        let v = http(&w.rest, "GET", "/connectors/strict/status", None).1;
        (v["tasks"][0]["state"] == "FAILED").then_some(v)
    });
    // The trace says which record and what to do; the record before it was written and committed.
    let trace = status["tasks"][0]["trace"].as_str().unwrap();
    assert!(
        trace.contains("plain-0 offset 1") && trace.contains("StringConverter"),
        "{trace}"
    );
    assert_eq!(lines_of(&out), ["ok"]);
    let v = http(&w.rest, "GET", "/connectors/strict/tasks/0/status", None).1;
    assert_eq!(v["state"], "FAILED", "{v}");
    // onlyFailed restarts the failed task (and not the running connector).
    let (s, v) = http(
        &w.rest,
        "POST",
        "/connectors/strict/restart?includeTasks=true&onlyFailed=true",
        None,
    );
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        (&v["connector"]["state"], &v["tasks"][0]["state"]),
        (&json!("RUNNING"), &json!("RESTARTING")),
        "{v}"
    );
    // Reconfigured with the converter the trace names, the task gets past the record.
    let mut fixed = config["config"].clone();
    fixed["value.converter"] = json!("org.apache.kafka.connect.storage.StringConverter");
    assert_eq!(
        http(
            &w.rest,
            "PUT",
            "/connectors/strict/config",
            Some(&fixed.to_string())
        )
        .0,
        200
    );
    wait_for(
        Duration::from_secs(60),
        "the sink to write the second record",
        || (lines_of(&out).last().map(String::as_str) == Some("not json")).then_some(()),
    );
    assert_eq!(
        http(&w.rest, "GET", "/connectors/strict/status", None).1["tasks"][0]["state"],
        "RUNNING"
    );
}

/// A line longer than a record fails the source task with a trace saying how to skip it (never pieces, never a
/// task stuck retrying); KIP-875's PATCH is checked field by field, and applied only once the offsets file is
/// written; the connector then resumes past the line. Line ends are Kafka's (\n, \r\n, a lone \r).
#[test]
fn a_too_long_line_fails_the_source_with_what_to_do_and_offsets_patch_is_checked() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "long", "--partitions", "1"],
        None,
    ));
    let input = dir.path().join("in.txt");
    let long = "é".repeat(600_000);
    write_file(&input, &format!("a\n{long}\nb\r\nc\rd\n"));
    let end_of_long = 2 + long.len() as u64 + 1;
    let worker = worker_properties(dir.path(), &broker.bootstrap, "");
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let r = &w.rest;
    let file = input.display().to_string();
    let config = json!({"name": "src", "config": {"connector.class": "FileStreamSource",
        "file": file, "topic": "long",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter"}});
    assert_eq!(
        http(r, "POST", "/connectors", Some(&config.to_string())).0,
        201
    );
    let status = wait_for(Duration::from_secs(60), "the task to fail", || {
        let v = http(r, "GET", "/connectors/src/status", None).1;
        (v["tasks"][0]["state"] == "FAILED").then_some(v)
    });
    let trace = status["tasks"][0]["trace"].as_str().unwrap();
    assert!(
        trace.contains("line starting at byte 2")
            && trace.contains("longer than 1000000 bytes")
            && trace.contains("producer.max.request.size")
            && trace.contains(&format!("\"position\": {end_of_long}")),
        "{trace}"
    );
    // The line before it was sent whole and its offset stored; nothing of the long line was sent.
    assert_eq!(consume_all(&broker.bootstrap, "long"), ["a"]);
    let part = json!({"filename": file});
    let stored = json!({"offsets": [{"partition": part, "offset": {"position": 2}}]});
    assert_eq!(http(r, "GET", "/connectors/src/offsets", None).1, stored);

    assert_eq!(http(r, "PUT", "/connectors/src/stop", None).0, 202);
    for (offsets, field) in [
        (
            json!([{"partition": {"file": file}, "offset": {"position": 5}}]),
            "'filename'",
        ),
        (
            json!([{"partition": part, "offset": {"pos": 5}}]),
            "'position'",
        ),
        (
            json!([{"partition": part, "offset": {"position": -1}}]),
            "non-negative",
        ),
        (
            json!([{"partition": part, "offset": {"position": "5"}}]),
            "Long",
        ),
        (
            json!([{"partition": part, "offset": {"position": {"x": 1}}}]),
            "field position",
        ),
        (json!([{"partition": 7, "offset": null}]), "partition 7"),
        (json!([]), "need to be provided"),
    ] {
        let body = json!({"offsets": offsets}).to_string();
        let (s, v) = http(r, "PATCH", "/connectors/src/offsets", Some(&body));
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let skip =
        json!({"offsets": [{"partition": part, "offset": {"position": end_of_long}}]}).to_string();
    // The offsets file cannot be written (its temporary file's name is taken by a directory): 500, and the
    // offsets stay as they were, in the file and in what GET answers.
    let tmp = dir.path().join("connect.offsets.tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (s, v) = http_any(r, "PATCH", "/connectors/src/offsets", Some(&skip));
    assert_eq!(s, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("unchanged"), "{v}");
    assert_eq!(http(r, "GET", "/connectors/src/offsets", None).1, stored);
    std::fs::remove_dir(&tmp).unwrap();
    assert_eq!(
        http(r, "PATCH", "/connectors/src/offsets", Some(&skip)).0,
        200
    );
    assert_eq!(http(r, "PUT", "/connectors/src/resume", None).0, 202);
    wait_for(
        Duration::from_secs(60),
        "the lines after the long one",
        || (consume_all(&broker.bootstrap, "long") == ["a", "b", "c", "d"]).then_some(()),
    );
}

/// Distributed mode with two workers of one group: the first runs the connectors, the second stands by and
/// forwards REST requests to it (a connector created there runs on the first); kill -9 of the active worker
/// hands the connectors to the other within the session timeout, which resumes from the offsets topic: no line
/// is lost.
#[test]
fn a_standby_distributed_worker_takes_over_when_the_active_one_is_killed() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "moved", "--partitions", "1"],
        None,
    ));
    let props = dir.path().join("worker.properties");
    write_file(
        &props,
        &format!(
            "bootstrap.servers={}\nlisteners=http://127.0.0.1:0\ngroup.id=pair\n\
             config.storage.topic=pair-configs\noffset.storage.topic=pair-offsets\n\
             status.storage.topic=pair-status\noffset.storage.partitions=3\n\
             offset.flush.interval.ms=100\nsession.timeout.ms=6000\nheartbeat.interval.ms=1000\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            broker.bootstrap
        ),
    );
    let mut w1 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w1.log"));
    let w2 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w2.log"));
    let input = dir.path().join("in.txt");
    let expected: Vec<String> = (1..=400).map(|i| format!("line-{i}")).collect();
    write_file(&input, &(expected[..200].join("\n") + "\n"));
    let config = json!({"name": "mover", "config": {"connector.class": "FileStreamSource",
        "file": input.display().to_string(), "topic": "moved"}});
    // Sent to the standby, forwarded to the active worker, which runs it.
    let (s, v) = http(&w2.rest, "POST", "/connectors", Some(&config.to_string()));
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        http(&w1.rest, "GET", "/connectors", None).1,
        json!(["mover"])
    );
    let status = http(&w2.rest, "GET", "/connectors/mover/status", None).1;
    assert_eq!(status["connector"]["worker_id"], json!(w1.rest), "{status}");
    wait_for(Duration::from_secs(60), "the first 200 lines", || {
        (consume_all(&broker.bootstrap, "moved").len() >= 200).then_some(())
    });
    // The position after line 200 is w1's offset, and in the offsets topic, before w1 dies: the other worker
    // must start from there, so no line of the first 200 may come twice.
    let after_200 = (expected[..200].join("\n").len() + 1) as u64;
    let file = input.display().to_string();
    wait_for(
        Duration::from_secs(30),
        "w1's offset after line 200",
        || {
            (http(&w1.rest, "GET", "/connectors/mover/offsets", None).1
            == json!({"offsets": [{"partition": {"filename": file}, "offset": {"position": after_200}}]}))
        .then_some(())
        },
    );
    wait_committed(&broker.bootstrap, "pair-offsets", "mover", &file, after_200);
    w1.kill9();
    append(&input, &(expected[200..].join("\n") + "\n"));
    let seen = wait_for(
        Duration::from_secs(60),
        "the other worker to send the rest",
        || {
            let seen = consume_all(&broker.bootstrap, "moved");
            tally(&seen, &expected).0.is_empty().then_some(seen)
        },
    );
    // Resumed from the offsets topic: every line once, in order (the task's producer is idempotent).
    assert_eq!(
        tally(&seen, &expected).1,
        0,
        "duplicates after the takeover"
    );
    assert_eq!(seen, expected);
    assert_eq!(
        http(&w2.rest, "GET", "/connectors", None).1,
        json!(["mover"])
    );
    let status = http(&w2.rest, "GET", "/connectors/mover/status", None).1;
    assert_eq!(
        (
            &status["tasks"][0]["state"],
            &status["tasks"][0]["worker_id"]
        ),
        (&json!("RUNNING"), &json!(w2.rest)),
        "{status}"
    );
    // The status topic holds Connect's status records; the task's latest is the new worker's, written with the
    // group generation of the rebalance that gave it the task (the group's second at least).
    wait_for(Duration::from_secs(30), "the task's status record", || {
        let out = ok(&fjord(
            &broker.bootstrap,
            &[
                "consume",
                "pair-status",
                "--from-beginning",
                "--exit-at-end",
                "--print-key",
            ],
            None,
        ));
        let latest = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("status-task-mover-0\t"))
            .and_then(|v| serde_json::from_str::<Value>(v).ok())?;
        let generation = latest["generation"].as_i64().unwrap_or(0);
        let latest = json!({"state": latest["state"], "trace": latest["trace"], "worker_id": latest["worker_id"]});
        (latest == json!({"state": "RUNNING", "trace": null, "worker_id": w2.rest})
            && generation >= 2)
            .then_some(())
    });
}

/// SIGTERM of the active distributed worker while its task has sent lines whose offset only the final flush
/// commits (offset.flush.interval.ms is far away): the worker stops its task, which commits what it sent, before
/// it leaves the group, so the standby resumes exactly there: no line twice, none lost. The workers advertise
/// `rest.advertised.host.name`, which names them in statuses and is where the standby forwards requests.
#[test]
fn a_sigterm_of_the_active_distributed_worker_hands_over_without_duplicates() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "handed", "--partitions", "1"],
        None,
    ));
    let props = dir.path().join("worker.properties");
    write_file(
        &props,
        &format!(
            "bootstrap.servers={}\nlisteners=http://127.0.0.1:0\nrest.advertised.host.name=localhost\n\
             group.id=term\nconfig.storage.topic=term-configs\noffset.storage.topic=term-offsets\n\
             status.storage.topic=term-status\noffset.storage.partitions=1\n\
             offset.flush.interval.ms=600000\nsession.timeout.ms=6000\nheartbeat.interval.ms=1000\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            broker.bootstrap
        ),
    );
    let mut w1 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w1.log"));
    let w2 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w2.log"));
    let port = |rest: &str| rest.rsplit_once(':').unwrap().1.to_string();
    let (id1, id2) = (
        format!("localhost:{}", port(&w1.rest)),
        format!("localhost:{}", port(&w2.rest)),
    );
    let input = dir.path().join("in.txt");
    let expected: Vec<String> = (1..=300).map(|i| format!("line-{i}")).collect();
    write_file(&input, &(expected[..150].join("\n") + "\n"));
    let config = json!({"name": "handed", "config": {"connector.class": "FileStreamSource",
        "file": input.display().to_string(), "topic": "handed"}});
    // Forwarded by the standby to the advertised address of the active worker.
    let (s, v) = http(&w2.rest, "POST", "/connectors", Some(&config.to_string()));
    assert_eq!(s, 201, "{v}");
    let status = wait_for(Duration::from_secs(30), "the task to run", || {
        let v = http(&w1.rest, "GET", "/connectors/handed/status", None).1;
        (v["tasks"][0]["state"] == "RUNNING").then_some(v)
    });
    assert_eq!(status["connector"]["worker_id"], json!(id1), "{status}");
    wait_for(Duration::from_secs(60), "the first 150 lines", || {
        (consume_all(&broker.bootstrap, "handed").len() >= 150).then_some(())
    });
    w1.stop();
    append(&input, &(expected[150..].join("\n") + "\n"));
    let seen = wait_for(
        Duration::from_secs(60),
        "the other worker to send the rest",
        || {
            let seen = consume_all(&broker.bootstrap, "handed");
            tally(&seen, &expected).0.is_empty().then_some(seen)
        },
    );
    assert_eq!(tally(&seen, &expected).1, 0, "duplicates after SIGTERM");
    assert_eq!(seen, expected);
    let status = http(&w2.rest, "GET", "/connectors/handed/status", None).1;
    assert_eq!(
        (
            &status["tasks"][0]["state"],
            &status["tasks"][0]["worker_id"]
        ),
        (&json!("RUNNING"), &json!(id2)),
        "{status}"
    );
}

/// The worker (REST address) each connector's task runs on, as `GET /connectors/{name}/status` through `via`
/// reports it; None while a task is not RUNNING.
fn task_workers(via: &str, names: &[String]) -> Option<BTreeMap<String, String>> {
    names
        .iter()
        .map(|n| {
            let (s, v) = http(via, "GET", &format!("/connectors/{n}/status"), None);
            let t = &v["tasks"][0];
            (s == 200 && t["state"] == "RUNNING")
                .then(|| (n.clone(), t["worker_id"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

/// Whether the worker's log says its last rebalance made it the group's leader.
fn leads(w: &WorkerProc) -> Option<bool> {
    let log = w.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("rebalance complete"))?;
    Some(line.contains("leader=true"))
}

/// A distributed worker's properties in `dir` for the group `group` (its internal topics `<group>-configs`,
/// `-offsets` and `-status`): fast offset flushes and rebalances, a 6 s session, string values.
fn distributed_props(dir: &std::path::Path, bootstrap: &str, group: &str) -> std::path::PathBuf {
    let props = dir.join("worker.properties");
    write_file(
        &props,
        &format!(
            "bootstrap.servers={bootstrap}\nlisteners=http://127.0.0.1:0\ngroup.id={group}\n\
             config.storage.topic={group}-configs\noffset.storage.topic={group}-offsets\n\
             status.storage.topic={group}-status\noffset.storage.partitions=3\n\
             offset.flush.interval.ms=100\nsession.timeout.ms=6000\nheartbeat.interval.ms=500\n\
             scheduled.rebalance.max.delay.ms=3000\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n"
        ),
    );
    props
}

/// Connect's own group protocol with two workers of one `group.id`: the group's protocol type is `connect`;
/// connectors created on the first worker move in part to the second when it joins (incremental cooperative
/// rebalancing: each ends with its share); a connector created through the follower is written by the leader;
/// statuses asked of either worker name the worker that runs each task; kill -9 of the follower moves its
/// connectors to the survivor after the session timeout and `scheduled.rebalance.max.delay.ms`, and every line
/// of every file reaches the topic (at-least-once: duplicates are counted, not refused).
#[test]
fn connects_group_protocol_spreads_connectors_and_moves_them_when_a_worker_dies() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "spread", "--partitions", "1"],
        None,
    ));
    let props = distributed_props(dir.path(), &broker.bootstrap, "spread");
    let w1 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w1.log"));
    let names: Vec<String> = (0..5).map(|i| format!("src-{i}")).collect();
    let file = |i: usize| dir.path().join(format!("in-{i}.txt"));
    let lines = |i: usize, from: usize, to: usize| -> Vec<String> {
        (from..to).map(|n| format!("{i}-line-{n}")).collect()
    };
    let create = |via: &str, i: usize| {
        write_file(&file(i), &(lines(i, 0, 50).join("\n") + "\n"));
        let config = json!({"name": names[i], "config": {"connector.class": "FileStreamSource",
            "file": file(i).display().to_string(), "topic": "spread"}});
        let (s, v) = http(via, "POST", "/connectors", Some(&config.to_string()));
        assert_eq!(s, 201, "{v}");
    };
    for i in 0..4 {
        create(&w1.rest, i);
    }
    let on =
        |m: &BTreeMap<String, String>, w: &WorkerProc| m.values().filter(|v| **v == w.rest).count();
    wait_for(Duration::from_secs(60), "four tasks on w1", || {
        task_workers(&w1.rest, &names[..4]).filter(|m| on(m, &w1) == 4)
    });
    let mut w2 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w2.log"));
    // w2 gets its share; statuses asked of w2 (forwarded to the leader, which asks the worker running the task).
    wait_for(Duration::from_secs(60), "two tasks on each worker", || {
        task_workers(&w2.rest, &names[..4]).filter(|m| on(m, &w1) == 2 && on(m, &w2) == 2)
    });
    assert_eq!(leads(&w1), Some(true), "w1 joined first and leads");
    assert_eq!(leads(&w2), Some(false));
    // A write sent to the follower reaches the leader, which writes it and assigns the connector.
    create(&w2.rest, 4);
    assert_eq!(http(&w1.rest, "GET", "/connectors", None).1, json!(names));
    let spread = wait_for(
        Duration::from_secs(60),
        "five running tasks, spread",
        || {
            task_workers(&w1.rest, &names)
                .filter(|m| on(m, &w1) + on(m, &w2) == 5 && on(m, &w2) >= 2)
        },
    );
    // The connectors that moved from w1 to w2 were stopped on w1 before w2 ran them, and the status topic says
    // so, as Connect's workers write it: RUNNING on w1, then UNASSIGNED from w1, then RUNNING on w2 (the old code
    // wrote nothing on revocation, so the topic showed them RUNNING on w1 until w2 wrote).
    let moved_from_w1: Vec<&String> = spread
        .iter()
        .filter(|(n, w)| **w == w2.rest && names[..4].contains(n))
        .map(|(n, _)| n)
        .collect();
    assert!(!moved_from_w1.is_empty(), "{spread:?}");
    let handed_over = |history: &[(String, String)]| {
        let want = [
            ("RUNNING", w1.rest.as_str()),
            ("UNASSIGNED", w1.rest.as_str()),
            ("RUNNING", w2.rest.as_str()),
        ];
        let mut next = 0;
        for (state, worker) in history {
            if next < want.len() && (state.as_str(), worker.as_str()) == want[next] {
                next += 1;
            }
        }
        next == want.len()
    };
    wait_for(
        Duration::from_secs(30),
        "UNASSIGNED from w1 between the two RUNNING of each moved connector",
        || {
            let history = status_history(&broker.bootstrap, "spread-status");
            moved_from_w1
                .iter()
                .all(|n| {
                    [
                        format!("status-connector-{n}"),
                        format!("status-task-{n}-0"),
                    ]
                    .iter()
                    .all(|k| history.get(k).is_some_and(|h| handed_over(h)))
                })
                .then_some(())
        },
    );
    let described: Value = serde_json::from_str(&ok(&fjord(
        &broker.bootstrap,
        &["groups", "describe", "spread", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(
        (&described["protocol_type"], &described["protocol"]),
        (&json!("connect"), &json!("sessioned")),
        "{described}"
    );
    assert_eq!(
        described["members"].as_array().map(Vec::len),
        Some(2),
        "{described}"
    );
    for i in 0..5 {
        append(&file(i), &(lines(i, 50, 100).join("\n") + "\n"));
    }
    let first: Vec<String> = (0..5).flat_map(|i| lines(i, 0, 100)).collect();
    wait_for(
        Duration::from_secs(60),
        "the first 100 lines of each file",
        || {
            tally(&consume_all(&broker.bootstrap, "spread"), &first)
                .0
                .is_empty()
                .then_some(())
        },
    );
    // Past offset.flush.interval.ms (100 ms) with a margin: every position is committed before the kill.
    std::thread::sleep(Duration::from_millis(1_500));
    // Each line exactly once so far: no connector ran on two workers while they moved to w2.
    let before = consume_all(&broker.bootstrap, "spread");
    assert_eq!(
        (before.len(), tally(&before, &first)),
        (500, (vec![], 0)),
        "every one of the first 100 lines of each file exactly once before the kill"
    );
    let moved: Vec<&String> = spread
        .iter()
        .filter(|(_, w)| **w == w2.rest)
        .map(|(n, _)| n)
        .collect();
    w2.kill9();
    let killed = std::time::Instant::now();
    for i in 0..5 {
        append(&file(i), &(lines(i, 100, 150).join("\n") + "\n"));
    }
    // Within the session timeout (6 s) and the delay (3 s), plus a margin for a loaded machine.
    wait_for(Duration::from_secs(40), "every task running on w1", || {
        task_workers(&w1.rest, &names).filter(|m| on(m, &w1) == 5)
    });
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "moved before the session expired: {took:?}"
    );
    let expected: Vec<String> = (0..5).flat_map(|i| lines(i, 0, 150)).collect();
    let seen = wait_for(Duration::from_secs(60), "every line of every file", || {
        let seen = consume_all(&broker.bootstrap, "spread");
        tally(&seen, &expected).0.is_empty().then_some(seen)
    });
    eprintln!(
        "moved {moved:?} in {took:?}; {} duplicate deliveries (at-least-once after kill -9)",
        tally(&seen, &expected).1
    );
    assert!(
        seen.iter().all(|l| expected.contains(l)),
        "unexpected lines"
    );
    // The moved connectors resumed from what w2 committed: nothing before the kill comes again, and what w2
    // may have sent after its last commit (lines >= 100) is bounded.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &seen {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let again: Vec<&&str> = counts
        .iter()
        .filter(|(l, n)| **n > 1 && first.iter().any(|f| f == *l))
        .map(|(l, _)| l)
        .collect();
    assert!(
        again.is_empty(),
        "lines committed before the kill delivered again: {again:?}"
    );
    for i in 0..5 {
        let dups: usize = lines(i, 100, 150)
            .iter()
            .map(|l| counts.get(l.as_str()).map_or(0, |n| n - 1))
            .sum();
        assert!(
            dups <= 50,
            "{dups} duplicates of file {i}'s lines after the kill"
        );
    }
}

/// `fjord connect logs NAME` prints the lines of that connector's tasks only (from `/admin/logs`), `--follow`
/// keeps printing new ones; `/admin/loggers` (KIP-495) lists and sets levels that take effect at once: with the
/// file source's logger OFF its "starting" line is not logged, back at INFO it is.
#[test]
fn connect_logs_show_a_connectors_lines_and_admin_loggers_change_levels_at_run_time() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    for t in ["la", "lb"] {
        ok(&fjord(
            &broker.bootstrap,
            &["topics", "create", t, "--partitions", "1"],
            None,
        ));
    }
    let worker = worker_properties(dir.path(), &broker.bootstrap, "");
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let r = &w.rest;
    for (name, topic) in [("src-a", "la"), ("src-b", "lb")] {
        let file = dir.path().join(format!("{name}.txt"));
        write_file(&file, "x\n");
        let config = json!({"name": name, "config": {"connector.class": "FileStreamSource",
            "file": file.display().to_string(), "topic": topic}});
        assert_eq!(
            http(r, "POST", "/connectors", Some(&config.to_string())).0,
            201
        );
    }
    let url = format!("http://{r}");
    let logs = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["connect", "logs", "--url", &url];
        a.extend_from_slice(args);
        let out = fjord(&broker.bootstrap, &a, None);
        ok(&out);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let a_lines = wait_for(Duration::from_secs(30), "src-a's start in its log", || {
        let l = logs(&["src-a"]);
        l.iter()
            .any(|l| l.contains("file source starting"))
            .then_some(l)
    });
    assert!(
        a_lines.iter().all(|l| l.contains("connector=src-a")),
        "{a_lines:#?}"
    );
    let all = logs(&["--lines", "5000"]);
    assert!(
        all.iter().any(|l| l.contains("connector=src-b")) && all.len() > a_lines.len(),
        "{all:#?}"
    );
    // A connector that does not exist is an error, not an empty log.
    let out = fjord(
        &broker.bootstrap,
        &["connect", "logs", "nosuch", "--url", &url],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch not found"));

    // /admin/loggers: root as the worker started (FJORD_LOG=info), then a level set for a module.
    let (s, v) = http(r, "GET", "/admin/loggers", None);
    assert_eq!(s, 200);
    assert_eq!(v["root"]["level"], "INFO", "{v}");
    let source = "fjord_connect::file_source";
    let (s, v) = http(
        r,
        "PUT",
        &format!("/admin/loggers/{source}"),
        Some(r#"{"level":"off"}"#),
    );
    assert_eq!((s, v.clone()), (200, json!([source])));
    let v = http(r, "GET", &format!("/admin/loggers/{source}"), None).1;
    assert_eq!(v["level"], "OFF");
    assert!(v["last_modified"].as_i64().unwrap() > 0, "{v}");
    assert_eq!(
        http(r, "GET", "/admin/loggers/fjord_broker", None).1["level"],
        "INFO"
    );
    for (body, want) in [
        (r#"{"level":"loud"}"#, "invalid log level"),
        (r#"{}"#, "'level' parameter was not specified"),
        ("not json", "JSON"),
    ] {
        let (s, v) = http_any(r, "PUT", "/admin/loggers/fjord_connect", Some(body));
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let (s, v) = http_any(r, "PUT", "/admin/loggers/a=b", Some(r#"{"level":"info"}"#));
    assert_eq!(s, 400, "{v}");

    // Restarting src-a with its logger OFF logs no "starting" line; src-b's restart under INFO for its own
    // connector's lines shows the filter is per logger, not everything off.
    let starts = |name: &str| {
        logs(&[name, "--lines", "5000"])
            .iter()
            .filter(|l| l.contains("file source starting"))
            .count()
    };
    let before = starts("src-a");
    assert_eq!(
        http(
            r,
            "POST",
            "/connectors/src-a/restart?includeTasks=true",
            None
        )
        .0 / 100,
        2
    );
    let marker = dir.path().join("src-a.txt");
    append(&marker, "y\n");
    wait_for(Duration::from_secs(30), "src-a running again", || {
        let v = http(r, "GET", "/connectors/src-a/status", None).1;
        (v["tasks"][0]["state"] == "RUNNING").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        starts("src-a"),
        before,
        "a line of an OFF logger was logged"
    );

    // A parent's level replaces its children's: fjord_connect at INFO brings the file source back.
    let (s, v) = http(
        r,
        "PUT",
        "/admin/loggers/fjord_connect",
        Some(r#"{"level":"INFO"}"#),
    );
    assert_eq!(s, 200);
    assert_eq!(v, json!(["fjord_connect", source]));
    assert_eq!(
        http(r, "GET", &format!("/admin/loggers/{source}"), None).1["level"],
        "INFO"
    );
    assert_eq!(
        http(
            r,
            "POST",
            "/connectors/src-a/restart?includeTasks=true",
            None
        )
        .0 / 100,
        2
    );
    wait_for(
        Duration::from_secs(30),
        "src-a's start logged again",
        || (starts("src-a") > before).then_some(()),
    );

    // --follow prints lines logged after it started.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args([
            "connect", "logs", "src-b", "--follow", "--lines", "0", "--url", &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        http(
            r,
            "POST",
            "/connectors/src-b/restart?includeTasks=true",
            None
        )
        .0 / 100,
        2
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("file source starting"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen.iter().any(|l| l.contains("file source starting"))
            && seen.iter().all(|l| l.contains("connector=src-b")),
        "{seen:#?}"
    );
}

/// The status topic's records, in order, per key: (state, worker_id) of each value (tombstones left out).
fn status_history(bootstrap: &str, topic: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut history: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (key, value) in keyed_records(bootstrap, topic) {
        let Ok(v) = serde_json::from_str::<Value>(&value) else {
            continue;
        };
        let field = |f: &str| v[f].as_str().unwrap_or_default().to_string();
        history
            .entry(key)
            .or_default()
            .push((field("state"), field("worker_id")));
    }
    history
}

/// `GET /connectors?expand=status` asked of `via`: each connector's status, when the answer is a 200.
fn status_view(via: &str) -> Option<BTreeMap<String, Value>> {
    let (s, v) = http(via, "GET", "/connectors?expand=status", None);
    if s != 200 {
        return None;
    }
    Some(
        v.as_object()?
            .iter()
            .map(|(k, e)| (k.clone(), e["status"].clone()))
            .collect(),
    )
}

/// The status view of `via` once it shows every one of `names` with its connector RUNNING and its task RUNNING
/// (FAILED with the too-long line's trace for the names starting with `bad`), each on the worker running it, one
/// of `workers`, every one of which runs some.
fn settled_view(via: &str, names: &[&str], workers: &[&str]) -> Option<BTreeMap<String, Value>> {
    let view = status_view(via)?;
    if view.keys().map(String::as_str).collect::<Vec<_>>() != names {
        return None;
    }
    for (name, v) in &view {
        let task = &v["tasks"][0];
        let worker = v["connector"]["worker_id"].as_str()?;
        let want = if name.starts_with("bad") {
            "FAILED"
        } else {
            "RUNNING"
        };
        let failed_well = want == "RUNNING"
            || task["trace"]
                .as_str()
                .is_some_and(|t| t.contains("longer than 1000000 bytes"));
        if v["connector"]["state"] != "RUNNING"
            || task["state"] != want
            || !failed_well
            || task["worker_id"] != worker
            || !workers.contains(&worker)
        {
            return None;
        }
    }
    let all_used = workers
        .iter()
        .all(|w| view.values().any(|v| v["connector"]["worker_id"] == *w));
    all_used.then_some(view)
}

/// The status topic read back (Connect's `KafkaStatusBackingStore`): two workers of one group run five
/// connectors between them, two of which fail (a line too long, no automatic restart). Asked of either worker,
/// `GET /connectors?expand=status` and every connector's and task's status show each connector's real state,
/// trace and worker: a FAILED task on one worker is FAILED with its trace on the other (the old code showed the
/// other worker's connectors UNASSIGNED on the leader). Right after kill -9 of a worker, the survivor still
/// answers the dead worker's connectors' statuses from the topic (Connect's last word, not a failed forward); a
/// worker started after that shows the others' statuses, written before it started. The records carry the
/// group generation.
#[test]
fn every_worker_answers_statuses_from_the_status_topic_a_restarted_one_too() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "sts", "--partitions", "1"],
        None,
    ));
    let props = dir.path().join("worker.properties");
    write_file(
        &props,
        &format!(
            "bootstrap.servers={}\nlisteners=http://127.0.0.1:0\ngroup.id=sts\n\
             config.storage.topic=sts-configs\noffset.storage.topic=sts-offsets\n\
             status.storage.topic=sts-status\noffset.storage.partitions=1\n\
             offset.flush.interval.ms=100\nsession.timeout.ms=6000\nheartbeat.interval.ms=500\n\
             scheduled.rebalance.max.delay.ms=2000\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n",
            broker.bootstrap
        ),
    );
    let mut w1 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w1.log"));
    let names = ["bad-0", "bad-1", "good-0", "good-1", "good-2"];
    for name in names {
        let file = dir.path().join(format!("{name}.txt"));
        let mut config = json!({"connector.class": "FileStreamSource",
            "file": file.display().to_string(), "topic": "sts"});
        if name.starts_with("bad") {
            write_file(&file, &format!("a\n{}\nb\n", "x".repeat(1_200_000)));
            config["task.restart.max.attempts"] = json!("0");
        } else {
            write_file(&file, "a\nb\n");
        }
        let body = json!({"name": name, "config": config}).to_string();
        let (s, v) = http(&w1.rest, "POST", "/connectors", Some(&body));
        assert_eq!(s, 201, "{v}");
    }
    let mut w2 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w2.log"));
    let view = wait_for(
        Duration::from_secs(90),
        "both workers to show every connector's real status, spread over both",
        || {
            let a = settled_view(&w1.rest, &names, &[&w1.rest, &w2.rest])?;
            let b = settled_view(&w2.rest, &names, &[&w1.rest, &w2.rest])?;
            (a == b).then_some(a)
        },
    );
    // Each connector's and task's status, asked of either worker, is the same.
    for w in [&w1, &w2] {
        for name in names {
            let (s, v) = http(&w.rest, "GET", &format!("/connectors/{name}/status"), None);
            assert_eq!((s, &v), (200, &view[name]), "{name} asked of {}", w.rest);
            let (s, v) = http(
                &w.rest,
                "GET",
                &format!("/connectors/{name}/tasks/0/status"),
                None,
            );
            assert_eq!(
                (s, &v),
                (200, &view[name]["tasks"][0]),
                "{name}'s task asked of {}",
                w.rest
            );
        }
    }
    // Right after w2 dies (well within the 6 s session), w1 answers w2's connectors' statuses from the topic.
    let on_w2: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| view[*n]["connector"]["worker_id"] == json!(w2.rest))
        .collect();
    w2.kill9();
    for name in &on_w2 {
        let (s, v) = http(&w1.rest, "GET", &format!("/connectors/{name}/status"), None);
        assert_eq!((s, &v), (200, &view[*name]), "{name} after w2 died");
    }
    // A worker started now reads the topic from its beginning: it shows w1's statuses, written before it started.
    let w3 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w3.log"));
    let view = wait_for(
        Duration::from_secs(90),
        "the new worker to show every connector's real status, spread over w1 and it",
        || {
            let a = settled_view(&w1.rest, &names, &[&w1.rest, &w3.rest])?;
            let b = settled_view(&w3.rest, &names, &[&w1.rest, &w3.rest])?;
            (a == b).then_some(a)
        },
    );
    // They are w3's own knowledge, not the leader's answer forwarded: with w1 (the leader) dead, w3 still
    // answers w1's connectors' and tasks' statuses.
    let on_w1: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| view[*n]["connector"]["worker_id"] == json!(w1.rest))
        .collect();
    w1.kill9();
    for name in &on_w1 {
        let (s, v) = http(&w3.rest, "GET", &format!("/connectors/{name}/status"), None);
        assert_eq!(
            (s, &v),
            (200, &view[*name]),
            "{name} asked of w3 after w1 died"
        );
    }
    // Connect's records, with the group generation of the rebalance that assigned each task (not 0).
    let out = ok(&fjord(
        &broker.bootstrap,
        &[
            "consume",
            "sts-status",
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
        ],
        None,
    ));
    for name in names {
        let latest: Value = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("status-task-{name}-0\t")))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_else(|| panic!("no status record of {name}'s task:\n{out}"));
        assert!(
            latest["generation"].as_i64().is_some_and(|g| g >= 1),
            "{latest}"
        );
    }
}

/// The members of a consumer group by client id: (member id, the partitions it holds), from
/// `fjord groups describe --output json`; None while the group cannot be described.
fn group_members(bootstrap: &str, group: &str) -> Option<BTreeMap<String, (String, Vec<i64>)>> {
    let out = fjord(
        bootstrap,
        &["groups", "describe", group, "--output", "json"],
        None,
    );
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut members = BTreeMap::new();
    for m in v["members"].as_array()? {
        let partitions: Vec<i64> = m["assignment"]
            .as_array()?
            .iter()
            .flat_map(|a| a["partitions"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_i64())
            .collect();
        members.insert(
            m["client_id"].as_str()?.to_string(),
            (m["member_id"].as_str()?.to_string(), partitions),
        );
    }
    Some(members)
}

/// Produces `lines` to one partition of `topic`.
fn produce_to(bootstrap: &str, topic: &str, partition: i32, lines: &[String]) {
    ok(&fjord(
        bootstrap,
        &["produce", topic, "--partition", &partition.to_string()],
        Some((lines.join("\n") + "\n").as_bytes()),
    ));
}

/// Waits until the file holds `expected.len()` lines, then checks that they are exactly `expected` (in any
/// order): every record written once, none lost, none twice.
fn wait_exactly(path: &Path, expected: &[String]) {
    wait_for(Duration::from_secs(60), "every record in the file", || {
        (lines_of(path).len() >= expected.len()).then_some(())
    });
    // A duplicate would come with the rest of its batch: give a late one a moment to show.
    std::thread::sleep(Duration::from_millis(500));
    let mut got = lines_of(path);
    got.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(got, want);
}

/// A FileStreamSink with tasks.max=3 over a 3-partition topic runs three tasks, each a consumer of the group
/// `connect-<name>` holding one partition; REST lists the three; every record is written once. Restarting task 1
/// restarts it alone (the other tasks keep their group membership); lowering tasks.max to 1 leaves one task that
/// holds every partition. On the old code the connector ran one task whatever tasks.max said.
#[test]
fn a_sink_with_tasks_max_3_runs_three_tasks_sharing_the_partitions() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "orders3", "--partitions", "3"],
        None,
    ));
    let worker = worker_properties(dir.path(), &broker.bootstrap, "");
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let out = dir.path().join("out.txt");
    let config = json!({"connector.class": "FileStreamSink", "tasks.max": "3",
        "file": out.display().to_string(), "topics": "orders3",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter"});
    let body = json!({"name": "fan", "config": config}).to_string();
    let (s, v) = http(&w.rest, "POST", "/connectors", Some(&body));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(3), "{v}");

    let running = |n: usize| {
        let v = http(&w.rest, "GET", "/connectors/fan/status", None).1;
        let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
        (tasks.len() == n && tasks.iter().all(|t| t["state"] == "RUNNING")).then_some(tasks)
    };
    let tasks = wait_for(Duration::from_secs(60), "three RUNNING tasks", || {
        running(3)
    });
    let ids: Vec<&Value> = tasks.iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&json!(0), &json!(1), &json!(2)]);
    let listed = http(&w.rest, "GET", "/connectors/fan/tasks", None).1;
    let listed: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"]["task"])
        .collect();
    assert_eq!(listed, [&json!(0), &json!(1), &json!(2)]);
    let t2 = http(&w.rest, "GET", "/connectors/fan/tasks/2/status", None).1;
    assert_eq!((&t2["id"], &t2["state"]), (&json!(2), &json!("RUNNING")));
    assert_eq!(
        http(&w.rest, "GET", "/connectors/fan/tasks/3/status", None).0,
        404
    );

    // The group has a member per task, each with one of the three partitions.
    let clients = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("connector-consumer-fan-{i}"))
            .collect()
    };
    let spread = |n: usize| {
        move |m: BTreeMap<String, (String, Vec<i64>)>| {
            let mut all: Vec<i64> = m.values().flat_map(|(_, ps)| ps.clone()).collect();
            all.sort();
            (m.keys().cloned().collect::<Vec<_>>() == clients(n)
                && m.values().all(|(_, ps)| !ps.is_empty())
                && all == [0, 1, 2])
            .then_some(m)
        }
    };
    let before = wait_for(
        Duration::from_secs(60),
        "three members holding a partition each",
        || group_members(&broker.bootstrap, "connect-fan").and_then(spread(3)),
    );

    let mut expected = Vec::new();
    for p in 0..3 {
        let lines: Vec<String> = (0..100).map(|i| format!("p{p}-{i}")).collect();
        produce_to(&broker.bootstrap, "orders3", p, &lines);
        expected.extend(lines);
    }
    wait_exactly(&out, &expected);

    // Task 1 alone restarts: tasks 0 and 2 keep their consumers (the same member ids), task 1 gets a new one.
    let (s, v) = http(&w.rest, "POST", "/connectors/fan/tasks/1/restart", None);
    assert_eq!(s, 204, "{v}");
    let after = wait_for(Duration::from_secs(60), "task 1 back in the group", || {
        group_members(&broker.bootstrap, "connect-fan")
            .and_then(spread(3))
            .filter(|m| m["connector-consumer-fan-1"].0 != before["connector-consumer-fan-1"].0)
    });
    for i in [0, 2] {
        let c = format!("connector-consumer-fan-{i}");
        assert_eq!(after[&c].0, before[&c].0, "task {i} restarted too");
    }
    wait_for(Duration::from_secs(60), "three RUNNING tasks", || {
        running(3)
    });
    for p in 0..3 {
        let lines: Vec<String> = (100..110).map(|i| format!("p{p}-{i}")).collect();
        produce_to(&broker.bootstrap, "orders3", p, &lines);
        expected.extend(lines);
    }
    wait_exactly(&out, &expected);

    // Pausing stops every task (the group empties); resuming starts the three again.
    assert_eq!(http(&w.rest, "PUT", "/connectors/fan/pause", None).0, 202);
    let v = http(&w.rest, "GET", "/connectors/fan/status", None).1;
    let states: Vec<&Value> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["state"])
        .collect();
    assert_eq!(states, [&json!("PAUSED"); 3], "{v}");
    wait_for(Duration::from_secs(60), "the group without members", || {
        group_members(&broker.bootstrap, "connect-fan").filter(|m| m.is_empty())
    });
    assert_eq!(http(&w.rest, "PUT", "/connectors/fan/resume", None).0, 202);
    wait_for(Duration::from_secs(60), "three RUNNING tasks", || {
        running(3)
    });
    wait_for(Duration::from_secs(60), "three members again", || {
        group_members(&broker.bootstrap, "connect-fan").and_then(spread(3))
    });

    // tasks.max=1: one task left, holding the three partitions.
    let mut one = config.clone();
    one["tasks.max"] = json!("1");
    let (s, v) = http(
        &w.rest,
        "PUT",
        "/connectors/fan/config",
        Some(&one.to_string()),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(1), "{v}");
    wait_for(Duration::from_secs(60), "one RUNNING task", || running(1));
    let listed = http(&w.rest, "GET", "/connectors/fan/tasks", None).1;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        http(&w.rest, "GET", "/connectors/fan/tasks/1/status", None).0,
        404
    );
    wait_for(
        Duration::from_secs(60),
        "one member holding every partition",
        || group_members(&broker.bootstrap, "connect-fan").and_then(spread(1)),
    );
    for p in 0..3 {
        let lines: Vec<String> = (110..120).map(|i| format!("p{p}-{i}")).collect();
        produce_to(&broker.bootstrap, "orders3", p, &lines);
        expected.extend(lines);
    }
    wait_exactly(&out, &expected);
}

/// Distributed mode: a FileStreamSink with tasks.max=3 in a group of two workers has its tasks spread over both
/// (the leader assigns connectors and tasks apart, as Connect's assignor does), each task a consumer of the
/// group `connect-<name>` with its own partition; statuses asked of either worker name both workers; every
/// record is written once. A task restart sent to the follower reaches the worker running that task and restarts
/// it alone; a connector restart with `includeTasks` restarts the tasks on both workers. On the old code the
/// connector ran one task, on one worker.
#[test]
fn distributed_workers_share_a_sinks_tasks_and_restart_them_where_they_run() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "dfan-in", "--partitions", "3"],
        None,
    ));
    let props = distributed_props(dir.path(), &broker.bootstrap, "dfan");
    let w1 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w1.log"));
    wait_for(Duration::from_secs(60), "w1 to lead", || {
        leads(&w1).filter(|l| *l)
    });
    let w2 = WorkerProc::start_mode("distributed", &[&props], &dir.path().join("w2.log"));
    wait_for(Duration::from_secs(60), "w2 in the group", || {
        leads(&w2).filter(|l| !*l)
    });
    let out = dir.path().join("out.txt");
    let config = json!({"name": "dfan", "config": {"connector.class": "FileStreamSink", "tasks.max": "3",
        "file": out.display().to_string(), "topics": "dfan-in"}});
    let (s, v) = http(&w1.rest, "POST", "/connectors", Some(&config.to_string()));
    assert_eq!(s, 201, "{v}");

    // Both workers answer with three RUNNING tasks spread over both.
    let spread = |via: &str| {
        let (s, v) = http(via, "GET", "/connectors/dfan/status", None);
        let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
        let workers: Vec<String> = tasks
            .iter()
            .map(|t| t["worker_id"].as_str().unwrap_or("").to_string())
            .collect();
        (s == 200
            && tasks.len() == 3
            && tasks.iter().all(|t| t["state"] == "RUNNING")
            && workers.contains(&w1.rest)
            && workers.contains(&w2.rest))
        .then_some(workers)
    };
    let workers = wait_for(
        Duration::from_secs(60),
        "three tasks on two workers",
        || spread(&w1.rest),
    );
    wait_for(Duration::from_secs(30), "the same through w2", || {
        spread(&w2.rest)
    });
    let listed = http(&w2.rest, "GET", "/connectors/dfan/tasks", None).1;
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    let clients: Vec<String> = (0..3)
        .map(|i| format!("connector-consumer-dfan-{i}"))
        .collect();
    let members = || {
        group_members(&broker.bootstrap, "connect-dfan").filter(|m| {
            m.keys().cloned().collect::<Vec<_>>() == clients
                && m.values().all(|(_, ps)| ps.len() == 1)
        })
    };
    let before = wait_for(
        Duration::from_secs(60),
        "three members holding a partition each",
        members,
    );
    let mut expected = Vec::new();
    for p in 0..3 {
        let lines: Vec<String> = (0..50).map(|i| format!("d{p}-{i}")).collect();
        produce_to(&broker.bootstrap, "dfan-in", p, &lines);
        expected.extend(lines);
    }
    wait_exactly(&out, &expected);

    // A task on w2, restarted through w2 (forwarded to the leader, which asks w2): it alone restarts.
    let on_w2 = workers.iter().position(|w| *w == w2.rest).unwrap();
    let (s, v) = http(
        &w2.rest,
        "POST",
        &format!("/connectors/dfan/tasks/{on_w2}/restart"),
        None,
    );
    assert_eq!(s, 204, "{v}");
    let restarted = &clients[on_w2];
    let after = wait_for(
        Duration::from_secs(60),
        "the task back in the group",
        || members().filter(|m| m[restarted].0 != before[restarted].0),
    );
    for c in clients.iter().filter(|c| *c != restarted) {
        assert_eq!(after[c].0, before[c].0, "{c} restarted too");
    }

    // A connector restart with its tasks, on the leader: every task restarts, on both workers.
    let (s, v) = http(
        &w1.rest,
        "POST",
        "/connectors/dfan/restart?includeTasks=true",
        None,
    );
    assert_eq!(s, 202, "{v}");
    let states: Vec<&Value> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["state"])
        .collect();
    assert_eq!(states, [&json!("RESTARTING"); 3], "{v}");
    wait_for(Duration::from_secs(60), "three new consumers", || {
        members().filter(|m| clients.iter().all(|c| m[c].0 != after[c].0))
    });
    wait_for(
        Duration::from_secs(60),
        "three tasks on two workers",
        || spread(&w2.rest),
    );
    for p in 0..3 {
        let lines: Vec<String> = (50..60).map(|i| format!("d{p}-{i}")).collect();
        produce_to(&broker.bootstrap, "dfan-in", p, &lines);
        expected.extend(lines);
    }
    wait_exactly(&out, &expected);
}
