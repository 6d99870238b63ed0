//! Fjord Connect's transforms and its Elasticsearch/OpenSearch and HTTP sinks, with real processes: `fjord
//! broker`, `fjord connect standalone`, PyPI's `osmem-server` (an in-memory OpenSearch-compatible server someone
//! else wrote) and a small HTTP server in the test.
#![cfg(feature = "connect")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::connect::*;
use common::*;
use serde_json::{json, Value};

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

    // KIP-769: the transforms and predicates are plugins too.
    let (_, all) = http(
        &w.rest,
        "GET",
        "/connector-plugins?connectorsOnly=false",
        None,
    );
    let classes: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class"].as_str().unwrap())
        .collect();
    assert!(
        classes.contains(&"org.apache.kafka.connect.transforms.InsertField$Value")
            && classes
                .contains(&"org.apache.kafka.connect.transforms.predicates.RecordIsTombstone")
            && classes.contains(&"io.confluent.connect.elasticsearch.ElasticsearchSinkConnector"),
        "{all}"
    );
    let (_, connectors) = http(&w.rest, "GET", "/connector-plugins", None);
    assert!(
        connectors
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["type"] == "source" || p["type"] == "sink"),
        "{connectors}"
    );

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

/// PyPI's osmem-server (an in-memory OpenSearch-compatible server) on a free port of 127.0.0.1; killed on drop.
struct Osmem {
    child: Child,
    url: String,
}

impl Osmem {
    fn start() -> Osmem {
        let out = run_bounded(
            Command::new(python()).args([
                "-c",
                "import osmem_server; print(osmem_server.resolve_binary())",
            ]),
            Duration::from_secs(30),
        );
        let bin = ok(&out).trim().to_string();
        let mut child = Command::new(&bin)
            .args(["--addr", "127.0.0.1:0", "--no-ja"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(u) = v["url"].as_str() {
                        let _ = tx.send(u.to_string());
                    }
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("osmem-server did not start within 30 s");
            }
        };
        Osmem { child, url }
    }

    fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    fn get(&self, path: &str) -> (u16, Value) {
        http(self.addr(), "GET", path, None)
    }

    /// Every document of `index`: id => source.
    fn docs(&self, index: &str) -> std::collections::BTreeMap<String, Value> {
        let (_, v) = self.get(&format!("/{index}/_search?size=1000"));
        v["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h["_id"].as_str().unwrap().to_string(), h["_source"].clone()))
            .collect()
    }
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn committed_offset(w: &WorkerProc, connector: &str) -> Option<i64> {
    let v = http(
        &w.rest,
        "GET",
        &format!("/connectors/{connector}/offsets"),
        None,
    )
    .1;
    v["offsets"][0]["offset"]["kafka_offset"].as_i64()
}

/// Stops a sink connector, moves its group back to the earliest offsets, replaces its config with `config`
/// (if given) and resumes it: every record is delivered again. Waits until the connector has committed `end`
/// again.
fn redeliver(
    broker: &BrokerProc,
    w: &WorkerProc,
    connector: &str,
    topic: &str,
    end: i64,
    config: Option<Value>,
) {
    assert_eq!(
        http(
            &w.rest,
            "PUT",
            &format!("/connectors/{connector}/stop"),
            None
        )
        .0,
        202
    );
    let group = format!("connect-{connector}");
    wait_for(Duration::from_secs(60), "the group to reset", || {
        let out = fjord(
            &broker.bootstrap,
            &[
                "groups",
                "reset-offsets",
                &group,
                "--topic",
                topic,
                "--to-earliest",
                "--execute",
            ],
            None,
        );
        out.status.success().then_some(())
    });
    assert_eq!(committed_offset(w, connector), Some(0));
    if let Some(config) = config {
        let (s, v) = http(
            &w.rest,
            "PUT",
            &format!("/connectors/{connector}/config"),
            Some(&config.to_string()),
        );
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(
        http(
            &w.rest,
            "PUT",
            &format!("/connectors/{connector}/resume"),
            None
        )
        .0,
        202
    );
    wait_for(Duration::from_secs(60), "the redelivery", || {
        (committed_offset(w, connector) == Some(end)).then_some(())
    });
}

/// The Elasticsearch sink against osmem-server: keyed records become documents (index = topic lowercased, id
/// = key), a later record of a key replaces the document, a tombstone deletes it
/// (`behavior.on.null.values=delete`); with `key.ignore=true` ids are topic+partition+offset; a document the
/// server refuses as malformed is skipped with `behavior.on.malformed.documents=warn`. Redelivering everything
/// (offsets moved back to the start) leaves the documents exactly as they were: no duplicates, no deleted
/// document back, no older version winning.
#[test]
fn elasticsearch_sink_writes_documents_idempotently_and_deletes_on_tombstones() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let es = Osmem::start();
    for t in ["Catalog", "clicks"] {
        ok(&fjord(
            &broker.bootstrap,
            &["topics", "create", t, "--partitions", "1"],
            None,
        ));
    }
    ok(&fjord(
        &broker.bootstrap,
        &[
            "produce",
            "Catalog",
            "--key-separator",
            "|",
            "--null-marker",
            "NULL",
        ],
        Some(b"k1|{\"name\":\"espresso\",\"price\":1}\nk2|{\"name\":\"grinder\",\"price\":5}\n"),
    ));
    // The later records carry a header, so the redelivery below can skip them.
    ok(&fjord(
        &broker.bootstrap,
        &[
            "produce",
            "Catalog",
            "--key-separator",
            "|",
            "--null-marker",
            "NULL",
            "--header",
            "newer=1",
        ],
        Some(
            b"k1|{\"name\":\"espresso\",\"price\":2}\n\
              k3|{\"name\":\"milk\",\"price\":3}\n\
              k2|NULL\n",
        ),
    ));
    ok(&fjord(
        &broker.bootstrap,
        &["produce", "clicks"],
        Some(b"{\"page\":\"/a\"}\n\"not a document\"\n{\"page\":\"/b\"}\n"),
    ));
    let worker = worker_properties(
        dir.path(),
        &broker.bootstrap,
        "key.converter=org.apache.kafka.connect.storage.StringConverter\n\
         value.converter=org.apache.kafka.connect.json.JsonConverter\n\
         value.converter.schemas.enable=false\n",
    );
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));

    // Bad settings are refused naming the field.
    let (s, v) = http(
        &w.rest,
        "POST",
        "/connectors",
        Some(
            &json!({"name": "bad", "config": {"connector.class": "ElasticsearchSink", "topics": "Catalog",
                "connection.url": "https://127.0.0.1:9200", "behavior.on.null.values": "drop"}})
            .to_string(),
        ),
    );
    assert_eq!(s, 400, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("configuration connection.url")
            && msg.contains("configuration behavior.on.null.values"),
        "{msg}"
    );

    let es_config = json!({"connector.class": "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector",
        "topics": "Catalog", "connection.url": es.url, "key.ignore": "false",
        "behavior.on.null.values": "delete", "batch.size": "2", "max.retries": "3", "retry.backoff.ms": "50"});
    create(&w, "es", es_config.clone());
    create(
        &w,
        "es-clicks",
        json!({"connector.class": "ElasticsearchSink", "topics": "clicks", "connection.url": es.url,
            "key.ignore": "true", "behavior.on.malformed.documents": "warn", "schema.ignore": "true"}),
    );
    wait_for(Duration::from_secs(60), "both sinks to commit", || {
        (committed_offset(&w, "es") == Some(5) && committed_offset(&w, "es-clicks") == Some(3))
            .then_some(())
    });
    let expect_catalog = || {
        let docs = es.docs("catalog");
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["k1", "k3"], "{docs:?}");
        assert_eq!(docs["k1"], json!({"name": "espresso", "price": 2}));
        let (s, v) = es.get("/catalog/_doc/k1");
        assert_eq!((s, &v["_source"]["price"]), (200, &json!(2)), "{v}");
        let (s, v) = es.get("/catalog/_doc/k2");
        assert_eq!((s, &v["found"]), (404, &json!(false)), "{v}");
        assert_eq!(es.get("/catalog/_count").1["count"], 2);
    };
    let expect_clicks = || {
        let docs = es.docs("clicks");
        assert_eq!(
            docs,
            [
                ("clicks+0+0".to_string(), json!({"page": "/a"})),
                ("clicks+0+2".to_string(), json!({"page": "/b"}))
            ]
            .into_iter()
            .collect()
        );
    };
    expect_catalog();
    expect_clicks();
    assert!(w
        .log()
        .contains("skipping the malformed document of clicks-0 offset 1"));

    // Confluent's recipe for ids from the value: ValueToKey then ExtractField$Key, on records with a schema
    // (JsonConverter's envelope); the documents are the payloads.
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "products", "--partitions", "1"],
        None,
    ));
    let schema = json!({"type": "struct", "optional": false, "name": "product", "fields": [
        {"field": "id", "type": "int64", "optional": false},
        {"field": "name", "type": "string", "optional": false}]});
    let lines: String = [(42, "kettle"), (7, "scale")]
        .iter()
        .map(|(id, name)| {
            format!(
                "{}\n",
                json!({"schema": schema, "payload": {"id": id, "name": name}})
            )
        })
        .collect();
    ok(&fjord(
        &broker.bootstrap,
        &["produce", "products"],
        Some(lines.as_bytes()),
    ));
    create(
        &w,
        "es-products",
        json!({"connector.class": "ElasticsearchSink", "topics": "products", "connection.url": es.url,
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "true",
            "transforms": "createKey,extractId",
            "transforms.createKey.type": "org.apache.kafka.connect.transforms.ValueToKey",
            "transforms.createKey.fields": "id",
            "transforms.extractId.type": "org.apache.kafka.connect.transforms.ExtractField$Key",
            "transforms.extractId.field": "id"}),
    );
    wait_for(
        Duration::from_secs(60),
        "the products sink to commit",
        || (committed_offset(&w, "es-products") == Some(2)).then_some(()),
    );
    assert_eq!(
        es.docs("products"),
        [
            ("42".to_string(), json!({"id": 42, "name": "kettle"})),
            ("7".to_string(), json!({"id": 7, "name": "scale"}))
        ]
        .into_iter()
        .collect()
    );

    // Only the older records come again (k1@0 price 1, k2@1 price 5; the later ones are filtered out): the
    // newer k1 and the deletion of k2 must survive them, which only the external versions ensure.
    let mut older_only = es_config.clone();
    for (k, v) in [
        ("transforms", "skipNewer"),
        (
            "transforms.skipNewer.type",
            "org.apache.kafka.connect.transforms.Filter",
        ),
        ("transforms.skipNewer.predicate", "isNewer"),
        ("predicates", "isNewer"),
        (
            "predicates.isNewer.type",
            "org.apache.kafka.connect.transforms.predicates.HasHeaderKey",
        ),
        ("predicates.isNewer.name", "newer"),
    ] {
        older_only[k] = json!(v);
    }
    redeliver(&broker, &w, "es", "Catalog", 5, Some(older_only));
    redeliver(&broker, &w, "es-clicks", "clicks", 3, None);
    expect_catalog();
    // The conflicts are visible: the id, the record's coordinates and the server's reason.
    let log = w.log();
    for (id, at) in [("k1", "Catalog-0 offset 0"), ("k2", "Catalog-0 offset 1")] {
        assert!(
            log.lines().any(|l| l.contains(&format!(
                "document {id} already has a later version than the record at {at}"
            )) && l.contains("version conflict")),
            "no conflict warning for {id}"
        );
    }
    expect_clicks();
    for c in ["es", "es-clicks"] {
        let v = http(&w.rest, "GET", &format!("/connectors/{c}/status"), None).1;
        assert_eq!(v["tasks"][0]["state"], "RUNNING", "{v}");
    }

    // The same malformed document with the default behaviour fails the task, saying what to do.
    create(
        &w,
        "es-strict",
        json!({"connector.class": "ElasticsearchSink", "topics": "clicks", "connection.url": es.url,
            "key.ignore": "true"}),
    );
    let status = wait_for(Duration::from_secs(60), "the strict task to fail", || {
        let v = http(&w.rest, "GET", "/connectors/es-strict/status", None).1;
        (v["tasks"][0]["state"] == "FAILED").then_some(v)
    });
    let trace = status["tasks"][0]["trace"].as_str().unwrap();
    assert!(
        trace.contains("clicks-0 offset 1") && trace.contains("behavior.on.malformed.documents"),
        "{trace}"
    );
    // Nothing at or past the refused record was committed (the batch held offsets 0..=2).
    let committed = committed_offset(&w, "es-strict");
    assert!(committed.is_none_or(|o| o <= 1), "committed {committed:?}");
}

/// One request the test's HTTP server received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A small HTTP/1.1 server on a free port of 127.0.0.1: `/flaky` drops its first connection without an answer
/// and answers its second with 503, then 200; `/reject` answers 400; `/slow` never answers (the connection is
/// held open). Every request it read is logged.
struct TestServer {
    addr: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl TestServer {
    fn start() -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut flaky = 0;
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Some(req) = read_request(&mut s) else {
                    continue;
                };
                let path = req.path.clone();
                log2.lock().unwrap().push(req);
                let (status, text) = match path.as_str() {
                    "/reject" => (400, "Bad Request"),
                    "/slow" => {
                        held.push(s);
                        continue;
                    }
                    "/flaky" => {
                        flaky += 1;
                        match flaky {
                            1 => continue, // dropped: the client sees the connection closed
                            2 => (503, "Service Unavailable"),
                            _ => (200, "OK"),
                        }
                    }
                    _ => (200, "OK"),
                };
                let body = format!("{{\"answer\":\"{text}\"}}");
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        TestServer { addr, log }
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn read_request(s: &mut std::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

/// The HTTP sink against a real HTTP server: batches of at most `batch.max.size` values arrive as JSON arrays
/// with the configured headers, a dropped connection and a 503 are retried (nothing lost, the order kept), a
/// tombstone is skipped, and a 400 fails the task with the server's answer in its trace.
#[test]
fn http_sink_posts_batches_as_json_arrays_and_retries_server_errors() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let server = TestServer::start();
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "events", "--partitions", "1"],
        None,
    ));
    ok(&fjord(
        &broker.bootstrap,
        &[
            "produce",
            "events",
            "--key-separator",
            "|",
            "--null-marker",
            "NULL",
        ],
        Some(b"a|{\"n\":1}\nb|{\"n\":2}\nc|NULL\nd|{\"n\":3}\ne|{\"n\":4}\nf|{\"n\":5}\n"),
    ));
    let worker = worker_properties(
        dir.path(),
        &broker.bootstrap,
        "key.converter=org.apache.kafka.connect.storage.StringConverter\n\
         value.converter=org.apache.kafka.connect.json.JsonConverter\n\
         value.converter.schemas.enable=false\n",
    );
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let (s, v) = http(
        &w.rest,
        "POST",
        "/connectors",
        Some(
            &json!({"name": "bad", "config": {"connector.class": "HttpSink", "topics": "events",
            "http.api.url": "ftp://x", "batch.max.size": "0"}})
            .to_string(),
        ),
    );
    assert_eq!(s, 400, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("configuration http.api.url") && msg.contains("configuration batch.max.size"),
        "{msg}"
    );

    create(
        &w,
        "hook",
        json!({"connector.class": "io.confluent.connect.http.HttpSinkConnector", "topics": "events",
            "http.api.url": format!("http://{}/flaky", server.addr),
            "headers": "Authorization:Bearer secret|X-Source:fjord",
            "batch.max.size": "2", "max.retries": "5", "retry.backoff.ms": "50",
            "transforms": "meta", "transforms.meta.type": "InsertField$Value",
            "transforms.meta.offset.field": "offset"}),
    );
    wait_for(Duration::from_secs(60), "the sink to commit", || {
        let v = http(&w.rest, "GET", "/connectors/hook/offsets", None).1;
        (v["offsets"][0]["offset"]["kafka_offset"] == 6).then_some(())
    });
    let got = server.received("/flaky");
    // The first request was dropped and the second answered 503: both are sent again.
    assert!(got.len() >= 3, "{got:?}");
    assert_eq!(
        got[0].body, got[1].body,
        "a failed batch is sent again whole"
    );
    assert_eq!(got[1].body, got[2].body);
    let mut values = Vec::new();
    for r in &got[2..] {
        assert_eq!(r.method, "POST");
        let header = |k: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("authorization"), Some("Bearer secret"));
        assert_eq!(header("x-source"), Some("fjord"));
        assert_eq!(header("content-type"), Some("application/json"));
        let batch: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        assert!(!batch.is_empty() && batch.len() <= 2, "{batch:?}");
        values.extend(batch);
    }
    // The tombstone (offset 2) is skipped.
    assert_eq!(
        values,
        [
            json!({"n": 1, "offset": 0}),
            json!({"n": 2, "offset": 1}),
            json!({"n": 3, "offset": 3}),
            json!({"n": 4, "offset": 4}),
            json!({"n": 5, "offset": 5}),
        ],
        "{values:?}"
    );

    // A 4xx other than 429 is not retried: the task fails with the server's answer.
    create(
        &w,
        "rejected",
        json!({"connector.class": "HttpSink", "topics": "events",
            "http.api.url": format!("http://{}/reject", server.addr), "retry.backoff.ms": "50",
            // No automatic restart, so that the single request below is certain.
            "task.restart.max.attempts": "0"}),
    );
    let status = wait_for(Duration::from_secs(60), "the rejected task to fail", || {
        let v = http(&w.rest, "GET", "/connectors/rejected/status", None).1;
        (v["tasks"][0]["state"] == "FAILED").then_some(v)
    });
    let trace = status["tasks"][0]["trace"].as_str().unwrap();
    assert!(
        trace.contains("answered 400") && trace.contains("Bad Request"),
        "{trace}"
    );
    assert_eq!(server.received("/reject").len(), 1, "not retried");
    // The refused batch began at offset 0: nothing may be committed for it.
    let v = http(&w.rest, "GET", "/connectors/rejected/offsets", None).1;
    assert!(
        v["offsets"][0]["offset"]["kafka_offset"].is_null(),
        "the refused batch was committed: {v}"
    );

    // A stop does not wait for a destination that does not answer: the write is dropped, nothing committed.
    create(
        &w,
        "slow",
        json!({"connector.class": "HttpSink", "topics": "events",
            "http.api.url": format!("http://{}/slow", server.addr), "http.request.timeout.ms": "60000"}),
    );
    wait_for(Duration::from_secs(60), "the request to /slow", || {
        (!server.received("/slow").is_empty()).then_some(())
    });
    let started = std::time::Instant::now();
    assert_eq!(http(&w.rest, "PUT", "/connectors/slow/stop", None).0, 202);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopping took {:?}",
        started.elapsed()
    );
    assert!(
        !w.log().contains("did not stop within"),
        "the task was aborted"
    );
    assert_eq!(committed_offset(&w, "slow"), None);
}

/// Connect's error handling in the batch sinks' shared loop (`sink_task.rs`): with `errors.tolerance=all` and a
/// dead-letter topic, the HTTP sink skips a record its value converter refuses and one a transform cannot apply
/// to, both land in the dead-letter topic as they came with Connect's context headers naming the stage, every
/// other record is posted and the task stays RUNNING; with the default `errors.tolerance=none` the same records
/// fail the task at the first errant one.
#[test]
fn http_sink_tolerates_errant_records_into_a_dead_letter_topic() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let server = TestServer::start();
    ok(&fjord(
        &broker.bootstrap,
        &["topics", "create", "mixed", "--partitions", "1"],
        None,
    ));
    // b is not JSON (the value converter refuses it); c is a JSON string, which InsertField$Value cannot extend.
    ok(&fjord(
        &broker.bootstrap,
        &["produce", "mixed", "--key-separator", "|"],
        Some(b"a|{\"n\":1}\nb|not json\nc|\"text\"\nd|{\"n\":2}\n"),
    ));
    let worker = worker_properties(
        dir.path(),
        &broker.bootstrap,
        "key.converter=org.apache.kafka.connect.storage.StringConverter\n\
         value.converter=org.apache.kafka.connect.json.JsonConverter\n\
         value.converter.schemas.enable=false\n",
    );
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let transform = json!({"transforms": "meta", "transforms.meta.type": "InsertField$Value",
        "transforms.meta.topic.field": "topic"});
    let mut config = json!({"connector.class": "HttpSink", "topics": "mixed",
        "http.api.url": format!("http://{}/tolerant", server.addr),
        "errors.tolerance": "all", "errors.log.enable": "true",
        "errors.deadletterqueue.topic.name": "mixed-dlq",
        "errors.deadletterqueue.context.headers.enable": "true"});
    config
        .as_object_mut()
        .unwrap()
        .extend(transform.as_object().unwrap().clone());
    create(&w, "tolerant", config);
    wait_for(Duration::from_secs(60), "the sink to commit", || {
        let v = http(&w.rest, "GET", "/connectors/tolerant/offsets", None).1;
        (v["offsets"][0]["offset"]["kafka_offset"] == 4).then_some(())
    });
    let values: Vec<Value> = server
        .received("/tolerant")
        .iter()
        .flat_map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            json!({"n": 1, "topic": "mixed"}),
            json!({"n": 2, "topic": "mixed"})
        ]
    );
    let v = http(&w.rest, "GET", "/connectors/tolerant/status", None).1;
    assert_eq!(v["tasks"][0]["state"], "RUNNING", "{v}");
    let dlq = wait_for(Duration::from_secs(30), "2 dead letters", || {
        let v = records_of(&broker.bootstrap, "mixed-dlq");
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
    assert_eq!(dlq[0]["key"], "b", "{dlq:?}");
    assert_eq!(dlq[0]["value"], "not json", "{dlq:?}");
    assert_eq!(header(&dlq[0], "__connect.errors.stage"), "VALUE_CONVERTER");
    assert_eq!(header(&dlq[0], "__connect.errors.offset"), "1");
    assert_eq!(dlq[1]["key"], "c", "{dlq:?}");
    assert_eq!(header(&dlq[1], "__connect.errors.stage"), "TRANSFORMATION");
    assert!(
        header(&dlq[1], "__connect.errors.exception.message").contains("Only Map objects"),
        "{}",
        dlq[1]
    );
    for m in &dlq {
        assert_eq!(header(m, "__connect.errors.topic"), "mixed");
        assert_eq!(header(m, "__connect.errors.connector.name"), "tolerant");
    }

    // The default (errors.tolerance=none): the task fails at the first errant record, after posting the one before.
    let mut config = json!({"connector.class": "HttpSink", "topics": "mixed",
        "http.api.url": format!("http://{}/strict", server.addr), "task.restart.max.attempts": "0"});
    config
        .as_object_mut()
        .unwrap()
        .extend(transform.as_object().unwrap().clone());
    create(&w, "strict", config);
    let status = wait_for(Duration::from_secs(60), "the strict task to fail", || {
        let v = http(&w.rest, "GET", "/connectors/strict/status", None).1;
        (v["tasks"][0]["state"] == "FAILED").then_some(v)
    });
    let trace = status["tasks"][0]["trace"].as_str().unwrap();
    assert!(
        trace.contains("mixed-0 offset 1")
            && trace.contains("VALUE_CONVERTER")
            && trace.contains("errors.tolerance=all"),
        "{trace}"
    );
    let posted: Vec<Value> = server
        .received("/strict")
        .iter()
        .flat_map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap())
        .collect();
    assert_eq!(posted, [json!({"n": 1, "topic": "mixed"})]);
}

/// `fjord connect create|load|list|status|pause|resume|restart|offsets|delete` against a running worker: the
/// seed's one-liner (`load file-source`) streams a file into a topic, each command does what its REST call does,
/// and failures exit non-zero with the worker's message (2 for a bad file, 3 when no worker answers).
#[test]
fn connect_cli_commands_drive_a_worker_over_its_rest_api() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let worker = worker_properties(
        dir.path(),
        &broker.bootstrap,
        "key.converter=org.apache.kafka.connect.storage.StringConverter\n\
         value.converter=org.apache.kafka.connect.storage.StringConverter\n",
    );
    let w = WorkerProc::start(&[&worker], &dir.path().join("worker.log"));
    let url = format!("http://{}", w.rest);
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = vec!["connect"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &url]);
        fjord(&broker.bootstrap, &all, None)
    };
    let input = dir.path().join("catalog.txt");
    std::fs::write(&input, "espresso machine\n").unwrap();
    let out = ok(&cli(&[
        "load",
        "file-source",
        "--file",
        input.to_str().unwrap(),
        "--topic",
        "catalog",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&v["name"], &v["config"]["topic"]),
        (&json!("file-source"), &json!("catalog"))
    );
    let sink_file = dir.path().join("sink.properties");
    let out_file = dir.path().join("catalog.out");
    std::fs::write(
        &sink_file,
        format!(
            "name=catalog-sink\nconnector.class=FileStreamSink\ntopics=catalog\nfile={}\n",
            out_file.display()
        ),
    )
    .unwrap();
    ok(&cli(&["create", "-f", sink_file.to_str().unwrap()]));
    wait_for(
        Duration::from_secs(60),
        "the line in the sink's file",
        || (lines_of(&out_file) == ["espresso machine"]).then_some(()),
    );

    let list = ok(&cli(&["list"]));
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "TYPE", "STATE", "TASKS"], "{list}");
    assert!(
        rows.contains(&vec!["file-source", "source", "RUNNING", "0:RUNNING"]),
        "{list}"
    );
    assert!(
        rows.contains(&vec!["catalog-sink", "sink", "RUNNING", "0:RUNNING"]),
        "{list}"
    );
    let json_list: Value = serde_json::from_str(&ok(&cli(&["list", "--json"]))).unwrap();
    assert_eq!(
        json_list["file-source"]["status"]["connector"]["state"],
        "RUNNING"
    );

    ok(&cli(&["pause", "file-source"]));
    let st: Value = serde_json::from_str(&ok(&cli(&["status", "file-source"]))).unwrap();
    assert_eq!(st["connector"]["state"], "PAUSED", "{st}");
    ok(&cli(&["resume", "file-source"]));
    let st = http(&w.rest, "GET", "/connectors/file-source/status", None).1;
    assert_eq!(st["connector"]["state"], "RUNNING", "{st}");
    let r: Value =
        serde_json::from_str(&ok(&cli(&["restart", "catalog-sink", "--include-tasks"]))).unwrap();
    assert_eq!(r["tasks"][0]["state"], "RESTARTING", "{r}");
    let offsets = wait_for(Duration::from_secs(30), "the source's offset", || {
        let o: Value = serde_json::from_str(&ok(&cli(&["offsets", "file-source"]))).unwrap();
        (o["offsets"][0]["offset"]["position"] == 17).then_some(o)
    });
    assert_eq!(
        offsets["offsets"][0]["partition"]["filename"],
        input.display().to_string()
    );

    ok(&cli(&["delete", "catalog-sink"]));
    let gone = cli(&["status", "catalog-sink"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("404") && stderr(&gone).contains("Connector catalog-sink not found"),
        "{}",
        stderr(&gone)
    );
    let again = cli(&["load", "file-source"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let nameless = dir.path().join("nameless.properties");
    std::fs::write(&nameless, "connector.class=FileStreamSink\n").unwrap();
    let bad = cli(&["create", "-f", nameless.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let out = fjord(
        &broker.bootstrap,
        &["connect", "list", "--url", &nobody],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--url"), "{}", stderr(&out));
}
