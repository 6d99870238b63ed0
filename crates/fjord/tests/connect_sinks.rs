//! Fjord Connect's transforms and its Elasticsearch/OpenSearch and HTTP sinks, with real processes: `fjord
//! broker`, `fjord connect standalone`, PyPI's `osmem-server` (an in-memory OpenSearch-compatible server someone
//! else wrote) and a small HTTP server in the test.
#![cfg(feature = "connect")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A `fjord connect standalone` process; killed on drop, its log printed when the test fails.
struct WorkerProc {
    child: Option<Child>,
    rest: String,
    args: Vec<PathBuf>,
    log_path: PathBuf,
}

impl WorkerProc {
    fn start(args: &[&Path], log_path: &Path) -> WorkerProc {
        let mut w = WorkerProc {
            child: None,
            rest: String::new(),
            args: args.iter().map(|p| p.to_path_buf()).collect(),
            log_path: log_path.to_path_buf(),
        };
        w.spawn();
        w
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["connect", "standalone"])
            .args(&self.args)
            .env("FJORD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("fjord connect ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("the worker never became ready; log:\n{}", self.log());
            }
        };
        self.rest = field(&line, "rest=").to_string();
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- connect worker log ----\n{}", self.log());
        }
    }
}

/// An HTTP/1.1 request with a JSON body; the status and the body as JSON (Null when empty, a string when not
/// JSON). Bad input never gets a 5xx from the worker.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
    };
    assert!(status < 500, "{method} {path} answered {status}: {v}");
    (status, v)
}

/// Polls `f` every 100 ms until it returns Some, for at most `timeout`.
fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn worker_properties(dir: &Path, bootstrap: &str, extra: &str) -> PathBuf {
    let p = dir.join("worker.properties");
    std::fs::write(
        &p,
        format!(
            "bootstrap.servers={bootstrap}\noffset.storage.file.filename={}\nlisteners=http://127.0.0.1:0\n\
             offset.flush.interval.ms=100\n{extra}",
            dir.join("connect.offsets").display()
        ),
    )
    .unwrap();
    p
}

fn create(w: &WorkerProc, name: &str, config: Value) {
    let body = json!({"name": name, "config": config}).to_string();
    let (s, v) = http(&w.rest, "POST", "/connectors", Some(&body));
    assert_eq!(s, 201, "{v}");
}

/// Transforms through real connectors: a FileStreamSource whose RegexRouter sends the lines to another topic,
/// and a FileStreamSink that drops tombstones (Filter + RecordIsTombstone), inserts the topic and offset, masks a
/// field and renames another, on schemaless JSON. An invalid transform config is refused with a 400 naming the
/// key, and `config/validate` shows the error on that key.
#[test]
fn transforms_reshape_records_through_real_source_and_sink_connectors() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    for t in ["raw", "raw-routed", "orders"] {
        ok(&fjord(
            &broker.bootstrap,
            &["topics", "create", t, "--partitions", "1"],
            None,
        ));
    }
    let worker = worker_properties(dir.path(), &broker.bootstrap, "");
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));

    let input = dir.path().join("in.txt");
    std::fs::write(&input, "espresso machine\nmilk frother\n").unwrap();
    create(
        &w,
        "src",
        json!({"connector.class": "FileStreamSource", "file": input.display().to_string(), "topic": "raw",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "transforms": "route",
            "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.route.regex": "(r.*)", "transforms.route.replacement": "$1-routed"}),
    );
    let routed = wait_for(Duration::from_secs(60), "the routed lines", || {
        let out = ok(&fjord(
            &broker.bootstrap,
            &["consume", "raw-routed", "--from-beginning", "--exit-at-end"],
            None,
        ));
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        (lines.len() >= 2).then_some(lines)
    });
    assert_eq!(routed, ["espresso machine", "milk frother"]);
    let raw = ok(&fjord(
        &broker.bootstrap,
        &["consume", "raw", "--from-beginning", "--exit-at-end"],
        None,
    ));
    assert_eq!(raw.trim(), "", "nothing goes to the configured topic");

    ok(&fjord(
        &broker.bootstrap,
        &[
            "produce",
            "orders",
            "--key-separator",
            "|",
            "--null-marker",
            "NULL",
        ],
        Some(
            b"o1|{\"item\":\"espresso\",\"card\":\"4111-1111\",\"qty\":1}\n\
              o1|NULL\n\
              o2|{\"item\":\"milk\",\"card\":\"5500-0000\",\"qty\":2}\n",
        ),
    ));
    let out = dir.path().join("orders.out");
    let sink = json!({"connector.class": "FileStreamSink", "file": out.display().to_string(), "topics": "orders",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "transforms": "dropTombstones,meta,mask,rename",
        "transforms.dropTombstones.type": "org.apache.kafka.connect.transforms.Filter",
        "transforms.dropTombstones.predicate": "isTombstone",
        "transforms.meta.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.meta.topic.field": "topic", "transforms.meta.offset.field": "offset",
        "transforms.mask.type": "org.apache.kafka.connect.transforms.MaskField$Value",
        "transforms.mask.fields": "card",
        "transforms.rename.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
        "transforms.rename.renames": "item:product", "transforms.rename.exclude": "qty",
        "predicates": "isTombstone",
        "predicates.isTombstone.type": "org.apache.kafka.connect.transforms.predicates.RecordIsTombstone"});

    // A bad transform config: validate names the key, create answers 400 naming it and creates nothing.
    let mut bad = sink.clone();
    bad["transforms.mask.replacement"] = json!("");
    bad["transforms.rename.renames"] = json!("item");
    bad["name"] = json!("bad");
    let (s, v) = http(
        &w.rest,
        "PUT",
        "/connector-plugins/FileStreamSink/config/validate",
        Some(&bad.to_string()),
    );
    assert_eq!((s, &v["error_count"]), (200, &json!(2)), "{v}");
    let renames = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["definition"]["name"] == "transforms.rename.renames")
        .unwrap();
    assert!(
        renames["value"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("Invalid rename mapping"),
        "{renames}"
    );
    assert!(v["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("Transforms: rename")));
    let body = json!({"name": "bad", "config": bad}).to_string();
    let (s, v) = http(&w.rest, "POST", "/connectors", Some(&body));
    assert_eq!(s, 400, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("transforms.rename.renames") && msg.contains("transforms.mask.replacement"),
        "{msg}"
    );
    assert_eq!(http(&w.rest, "GET", "/connectors/bad", None).0, 404);

    create(&w, "orders-sink", sink);
    let lines = wait_for(Duration::from_secs(60), "the sink's lines", || {
        let l = lines_of(&out);
        (l.len() >= 2).then_some(l)
    });
    let docs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        docs,
        [
            json!({"product": "espresso", "card": "", "topic": "orders", "offset": 0}),
            json!({"product": "milk", "card": "", "topic": "orders", "offset": 2}),
        ]
    );
    // The tombstone was consumed (committed past), not written.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines_of(&out).len(), 2);
    let offsets = http(&w.rest, "GET", "/connectors/orders-sink/offsets", None).1;
    assert_eq!(
        offsets["offsets"][0]["offset"]["kafka_offset"], 3,
        "{offsets}"
    );
}
