//! The web dashboard: its JSON API under bad input (always a 4xx JSON answer, never a 500, and the CLI's
//! validation messages), a page of a 1,000-partition broker answered in under a second, and the pages in a real
//! browser (Debian's headless Chromium driven by playwright-core) against `fjord start`, with records produced by
//! kcat and a live kafkajs consumer group.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The CSRF token as a script sends it: the same value as the `fjord_csrf` cookie and the `X-CSRF-Token` header.
const CSRF: &str = "Cookie: fjord_csrf=t0k3n\r\nX-CSRF-Token: t0k3n\r\n";

/// One request as a JSON client makes it (anything but a GET says its body is JSON and carries the CSRF token):
/// (status, content type, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String, Vec<u8>) {
    let headers = if method != "GET" {
        format!("Content-Type: application/json\r\n{CSRF}")
    } else {
        String::new()
    };
    with_headers(addr, method, path, &headers, body)
}

/// [`http`] with the given header lines instead: (status, content type, body).
fn with_headers(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&[u8]>,
) -> (u16, String, Vec<u8>) {
    let (status, head, body) = http_request(addr, method, path, headers, body);
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, body)
}

/// A JSON API call: (status, parsed body). Every answer, errors included, must be JSON.
fn api(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, ctype, body) = http(addr, method, path, body.map(str::as_bytes));
    assert_eq!(ctype, "application/json", "{method} {path} -> {status}");
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}

/// A refused request: a 4xx with `error`, returned for further checks.
fn refused(addr: &str, method: &str, path: &str, body: Option<&str>, status: u16) -> String {
    let (got, v) = api(addr, method, path, body);
    assert_eq!(got, status, "{method} {path} {body:?}: {v}");
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {v}"))
        .to_string()
}

/// The message `fjord ARGS` fails with (its stderr without the `error: ` prefix).
fn cli_error(b: &str, args: &[&str]) -> String {
    let out = fjord(b, args, None);
    assert!(!out.status.success(), "fjord {args:?} succeeded");
    stderr(&out)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

#[test]
fn api_answers_bad_input_with_json_errors_and_the_clis_messages() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    ok(&fjord(
        b,
        &["topics", "create", "orders", "--partitions", "2"],
        None,
    ));

    // Reads with bad parameters, unknown things and unknown paths.
    let m = refused(h, "GET", "/api/topics?limit=0", None, 400);
    assert!(
        m.contains("`limit` must be a whole number from 1 to 500"),
        "{m}"
    );
    refused(h, "GET", "/api/topics?offset=-3", None, 400);
    refused(h, "GET", "/api/topics?internal=perhaps", None, 400);
    refused(h, "GET", "/api/topics?filter=%zz", None, 400);
    refused(h, "GET", "/api/topics/%ff%fe", None, 400);
    refused(h, "GET", "/api/topics/nosuch", None, 404);
    refused(h, "GET", "/api/topics/nosuch/partitions", None, 404);
    refused(h, "GET", "/api/groups/nosuch", None, 404);
    refused(h, "GET", "/api/nothing/here", None, 404);
    refused(h, "PUT", "/api/topics", Some("{}"), 405);
    let m = refused(h, "GET", "/api/topics/orders/messages", None, 400);
    assert!(m.contains("`partition` is required"), "{m}");
    refused(
        h,
        "GET",
        "/api/topics/orders/messages?partition=2",
        None,
        400,
    );
    refused(
        h,
        "GET",
        "/api/topics/orders/messages?partition=0&limit=1000",
        None,
        400,
    );
    refused(
        h,
        "GET",
        "/api/topics/orders/messages?partition=0&offset=0&latest=5",
        None,
        400,
    );
    let (s, v) = api(
        h,
        "GET",
        "/api/topics/orders/messages?partition=1&latest=5",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 0, "{v}");

    // Groups: two with commits (fjord groups reset-offsets on inactive groups), one far behind.
    let input: String = (0..10).map(|i| format!("m{i}\n")).collect();
    let out = kcat(
        &["-b", b, "-P", "-t", "orders", "-p", "0"],
        Some(input.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    for (group, to) in [("behind", "1"), ("almost", "8")] {
        ok(&fjord(
            b,
            &[
                "groups",
                "reset-offsets",
                group,
                "--topic",
                "orders:0",
                "--to-offset",
                to,
                "--execute",
            ],
            None,
        ));
    }
    let ids = |path: &str| -> Vec<(String, i64)> {
        let (s, v) = api(h, "GET", path, None);
        assert_eq!(s, 200, "{path}: {v}");
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["id"].as_str().unwrap().to_string(),
                    g["lag"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let by_id = vec![("almost".to_string(), 2), ("behind".to_string(), 9)];
    assert_eq!(ids("/api/groups"), by_id);
    assert_eq!(
        ids("/api/groups?sort=lag"),
        [by_id[1].clone(), by_id[0].clone()]
    );
    assert_eq!(
        ids("/api/groups?filter=BEH&state=empty"),
        [by_id[1].clone()]
    );
    assert_eq!(ids("/api/groups?state=stable"), []);
    assert_eq!(
        ids("/api/groups?sort=lag&offset=1&limit=1"),
        [by_id[0].clone()]
    );
    let m = refused(h, "GET", "/api/groups?sort=size", None, 400);
    assert!(
        m.contains("`sort` must be id, lag, members or state"),
        "{m}"
    );
    let (_, g) = api(h, "GET", "/api/groups/behind", None);
    assert_eq!(g["state"], "Empty", "{g}");
    assert_eq!(g["offsets"][0]["committed"], 1, "{g}");
    assert_eq!(g["offsets"][0]["end_offset"], 10, "{g}");
    assert_eq!(g["lag"], 9, "{g}");

    // Resetting offsets: a dry run shows the plan and commits nothing; executing commits it.
    let reset = "/api/groups/behind/reset-offsets";
    let (s, v) = api(
        h,
        "POST",
        reset,
        Some(r#"{"topic": "orders", "partitions": [0], "to": "latest"}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["executed"], false);
    assert_eq!(v["offsets"][0]["current"], 1, "{v}");
    assert_eq!(v["offsets"][0]["new"], 10, "{v}");
    let (_, g) = api(h, "GET", "/api/groups/behind", None);
    assert_eq!(g["lag"], 9, "a dry run changed the offsets: {g}");
    let (s, v) = api(
        h,
        "POST",
        reset,
        Some(
            r#"{"topic": "orders", "partitions": [0], "to": "offset", "offset": 7, "execute": true}"#,
        ),
    );
    assert_eq!(s, 200, "{v}");
    let (_, g) = api(h, "GET", "/api/groups/behind", None);
    assert_eq!(g["offsets"][0]["committed"], 7, "{g}");
    assert_eq!(g["lag"], 3, "{g}");
    let described: Value = serde_json::from_str(&ok(&fjord(
        b,
        &["groups", "describe", "behind", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(described["lag"], 3, "{described}");
    for (body, status) in [
        (r#"{"topic": "orders", "to": "sideways"}"#, 400),
        (r#"{"topic": "orders", "to": "offset"}"#, 400),
        (r#"{"topic": "orders", "to": "latest", "offset": 3}"#, 400),
        (
            r#"{"topic": "orders", "to": "latest", "partitions": [2]}"#,
            400,
        ),
        (
            r#"{"topic": "orders", "to": "latest", "partitions": []}"#,
            400,
        ),
        (
            r#"{"topic": "orders", "to": "latest", "execute": "yes"}"#,
            400,
        ),
        (r#"{"topic": "nosuch", "to": "latest"}"#, 404),
        (r#"{"to": "latest"}"#, 400),
    ] {
        refused(h, "POST", reset, Some(body), status);
    }

    // Writes with bodies that are not what they should be.
    refused(h, "POST", "/api/topics", None, 400);
    refused(h, "POST", "/api/topics", Some("not json"), 400);
    refused(h, "POST", "/api/topics", Some("[1,2]"), 400);
    refused(h, "POST", "/api/topics", Some(r#"{"name": 7}"#), 400);
    refused(
        h,
        "POST",
        "/api/topics",
        Some(r#"{"name": "x", "partitions": "many"}"#),
        400,
    );
    refused(
        h,
        "POST",
        "/api/topics",
        Some(r#"{"name": "x", "configs": [1]}"#),
        400,
    );
    let huge = format!(r#"{{"name": "{}"}}"#, "a".repeat(100_000));
    refused(h, "POST", "/api/topics", Some(&huge), 413);

    // The CLI's validation messages, word for word.
    for (body, args) in [
        (
            r#"{"name": "bad name!"}"#,
            vec!["topics", "create", "bad name!"],
        ),
        (
            r#"{"name": "rf", "replication_factor": 3}"#,
            vec!["topics", "create", "rf", "--replication-factor", "3"],
        ),
        (r#"{"name": "__mine"}"#, vec!["topics", "create", "__mine"]),
        (
            r#"{"name": "cfg", "configs": {"retention.ms": "soon"}}"#,
            vec!["topics", "create", "cfg", "--config", "retention.ms=soon"],
        ),
    ] {
        let page = refused(h, "POST", "/api/topics", Some(body), 400);
        assert_eq!(page, cli_error(b, &args), "{body}");
    }
    // A count out of the CLI's range: clap's words for it.
    for (body, args) in [
        (
            r#"{"name": "zero", "partitions": 0}"#,
            ["--partitions", "0"],
        ),
        (
            r#"{"name": "zero", "replication_factor": 0}"#,
            ["--replication-factor", "0"],
        ),
    ] {
        let page = refused(h, "POST", "/api/topics", Some(body), 400);
        let cli = cli_error(b, &["topics", "create", "zero", args[0], args[1]]);
        let words = format!("{} is not in 1..=2147483647", args[1]);
        assert!(
            page.contains(&words) && cli.contains(&words),
            "page: {page}\nCLI: {cli}"
        );
    }
    let m = refused(h, "POST", "/api/topics", Some(r#"{"name": "orders"}"#), 409);
    assert_eq!(m, "topic `orders` already exists");
    let m = refused(
        h,
        "POST",
        "/api/topics/orders/partitions",
        Some(r#"{"count": 1}"#),
        400,
    );
    let cli = cli_error(b, &["topics", "alter", "orders", "--partitions", "1"]);
    for words in [
        "topic `orders` has 2 partitions;",
        "(partitions can only be added)",
    ] {
        assert!(
            m.contains(words) && cli.contains(words),
            "page: {m}\nCLI: {cli}"
        );
    }
    refused(
        h,
        "POST",
        "/api/topics/nosuch/partitions",
        Some(r#"{"count": 3}"#),
        404,
    );

    // Deleting needs the exact name as confirmation; nothing is deleted without it.
    let m = refused(
        h,
        "DELETE",
        "/api/topics/orders",
        Some(r#"{"confirm": "order"}"#),
        400,
    );
    assert!(m.contains("type its exact name"), "{m}");
    refused(h, "DELETE", "/api/topics/orders", None, 400);
    refused(
        h,
        "DELETE",
        "/api/topics/nosuch",
        Some(r#"{"confirm": "nosuch"}"#),
        404,
    );
    ok(&fjord(b, &["topics", "describe", "orders"], None));

    // And the same writes done right, checked with the CLI.
    let (s, v) = api(
        h,
        "POST",
        "/api/topics",
        Some(r#"{"name": "made", "partitions": 2, "configs": {"retention.ms": "60000"}}"#),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(
        h,
        "POST",
        "/api/topics/made/partitions",
        Some(r#"{"count": 3}"#),
    );
    assert_eq!(s, 200, "{v}");
    let d: Value = serde_json::from_str(&ok(&fjord(
        b,
        &["topics", "describe", "made", "--output", "json"],
        None,
    )))
    .unwrap();
    let d = if d.is_array() { &d[0] } else { &d };
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3, "{d}");
    let (s, v) = api(h, "GET", "/api/topics/made", None);
    assert_eq!(s, 200);
    let retention = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .unwrap();
    assert_eq!(retention["value"], "60000");
    assert_eq!(retention["source"], "topic");
    let (s, v) = api(
        h,
        "DELETE",
        "/api/topics/made",
        Some(r#"{"confirm": "made"}"#),
    );
    assert_eq!(s, 200, "{v}");
    let (_, v) = api(h, "GET", "/api/topics", None);
    let names: Vec<&str> = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"], "{v}");
}

/// The issue's bar: one page load under 1 s on a 1,000-partition broker. Each API call a page makes is timed
/// on a debug build (slower than a release one), after one warm-up call.
#[test]
fn pages_of_a_1000_partition_broker_answer_in_under_a_second() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    // Traffic first, so that the overview's rate history (a sample every 5 s) has seen it by the end.
    let input: String = (0..50).map(|i| format!("m{i}\n")).collect();
    let out = kcat(
        &["-b", b, "-P", "-t", "rates"],
        Some(input.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    // A generous timeout: 1,000 partition directories take seconds on a loaded machine.
    ok(&fjord(
        b,
        &[
            "topics",
            "create",
            "big",
            "--partitions",
            "1000",
            "--request-timeout-ms",
            "120000",
        ],
        None,
    ));
    for i in 0..20 {
        ok(&fjord(b, &["topics", "create", &format!("t{i:02}")], None));
    }
    let mut page_bytes = 0;
    for path in ["/", "/assets/app.js", "/assets/style.css"] {
        let (s, _, body) = http(h, "GET", path, None);
        assert_eq!(s, 200, "{path}");
        page_bytes += body.len();
    }
    for path in [
        "/api/overview",
        "/api/topics?limit=50",
        "/api/topics?filter=t1",
        "/api/topics/big",
        "/api/topics/big/partitions?offset=900&limit=100",
        "/api/topics/big/messages?partition=999&latest=20",
        "/api/groups",
    ] {
        api(h, "GET", path, None);
        let started = Instant::now();
        let (s, v) = api(h, "GET", path, None);
        let took = started.elapsed();
        assert_eq!(s, 200, "{path}: {v}");
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
        page_bytes += v.to_string().len();
    }
    let (_, v) = api(
        h,
        "GET",
        "/api/topics/big/partitions?offset=900&limit=100",
        None,
    );
    assert_eq!(v["total"], 1000);
    assert_eq!(v["partitions"][99]["partition"], 999);
    assert_eq!(v["partitions"].as_array().unwrap().len(), 100);
    let (_, v) = api(h, "GET", "/api/topics?filter=t1", None);
    assert_eq!(v["total"], 10, "t10..t19: {v}");
    let (_, v) = api(h, "GET", "/api/overview", None);
    assert!(v["partitions"].as_u64().unwrap() >= 1020, "{v}");
    // Everything one visit to the overview, topics and a topic page transfers.
    assert!(page_bytes < 500_000, "{page_bytes} bytes");

    // The rate history: the 50 records show as messages and bytes in per second in some interval (the broker
    // has run for more than two sampling intervals by now; bounded wait in case it has not).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = api(h, "GET", "/api/overview", None);
        let history = v["history"].as_array().unwrap();
        let seen = history.iter().any(|p| {
            p["messages_in"].as_f64().unwrap() > 0.0 && p["bytes_in"].as_f64().unwrap() > 0.0
        });
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no traffic in the rate history: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs the browser script `tests/clients/kafkajs/<script>` with node (playwright-core and kafkajs from that
/// folder's node_modules), bounded by `timeout`; panics with its stdout and stderr unless it succeeds and its last
/// line is `done` (printed once every check ran), and returns its stdout.
fn run_browser(script: &str, args: &[&str], timeout: Duration) -> String {
    let path = workspace_root().join("tests/clients/kafkajs").join(script);
    let out = run_bounded(
        std::process::Command::new("node").arg(path).args(args),
        timeout,
    );
    let stdout = ok(&out);
    assert!(
        stdout.lines().rev().find(|l| !l.trim().is_empty()) == Some("done"),
        "{script} did not end with done:\nstdout: {stdout}\nstderr: {}",
        stderr(&out)
    );
    stdout
}

/// `fjord start` on free ports without the registry and Connect; returns the child, Kafka and HTTP addresses.
fn start_platform(data: &std::path::Path) -> (std::process::Child, String, String) {
    let (child, line) = common::start_platform(data, "none", "none", std::process::Stdio::null());
    let (kafka, http) = (
        field(&line, "kafka=").to_string(),
        field(&line, "http=").to_string(),
    );
    (child, kafka, http)
}

/// The pages in headless Chromium (playwright-core) against `fjord start` with a login: the overview live over
/// server-sent events, closing its stream while the tab is hidden and opening it again when shown (the server's
/// per-user cap counts it), and polling when the stream cannot be opened; topics, the message browser and the
/// search, a live group's lag as `fjord groups describe` gives it, the forms with the CLI's messages, logout.
/// Screenshots under the target dir.
#[test]
fn dashboard_pages_work_in_a_real_browser() {
    let dir = temp_dir();
    // With a login (users configured turn it on on loopback too): the browser opens the page as
    // http://alice:...@host/ and every API call and change (with the CSRF token) goes through.
    let (child, line) = common::start_platform_with_overrides(
        &dir.path().join("data"),
        "none",
        "none",
        "none",
        &["dashboard.auth.basic.users=alice:0pen-sesame"],
        std::process::Stdio::null(),
    );
    let (mut child, b, h) = (
        child,
        field(&line, "kafka=").to_string(),
        field(&line, "http=").to_string(),
    );
    ok(&fjord(
        &b,
        &["topics", "create", "orders", "--partitions", "2"],
        None,
    ));
    let records: String = (1..=5)
        .map(|i| format!("k{i}\t{{\"item\":\"book\",\"qty\":{i}}}\n"))
        .collect();
    let out = kcat(
        &[
            "-b",
            &b,
            "-P",
            "-t",
            "orders",
            "-p",
            "0",
            "-K",
            "\t",
            "-H",
            "trace=abc",
        ],
        Some(records.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let result = std::panic::catch_unwind(|| {
        run_browser(
            "dashboard_browser.js",
            &[
                &h,
                &b,
                env!("CARGO_BIN_EXE_fjord"),
                shots.to_str().unwrap(),
                "alice:0pen-sesame",
            ],
            Duration::from_secs(300),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let out = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!("{out}");
}

/// Offsets of the records a message-browser answer holds.
fn offsets(v: &Value) -> Vec<i64> {
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {v}"))
        .iter()
        .map(|m| m["offset"].as_i64().unwrap())
        .collect()
}

/// Produces `count` records of `size` ASCII zeros each (no key) to partition 0 of `topic`, compressed with
/// `codec`.
fn produce_zeros(b: &str, topic: &str, count: usize, size: usize, codec: &str) {
    let line = format!("{}\n", "0".repeat(size));
    let input = line.repeat(count);
    let out = kcat(
        &[
            "-b",
            b,
            "-P",
            "-t",
            topic,
            "-p",
            "0",
            "-z",
            codec,
            "-X",
            "message.max.bytes=20000000",
        ],
        Some(input.as_bytes()),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
}

#[test]
fn message_browser_counts_back_from_the_end_and_bounds_its_answer() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[
            ("transaction.state.log.num.partitions", "4"),
            ("offsets.topic.num.partitions", "4"),
        ],
    );
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    let get = |path: &str| -> Value {
        let (s, v) = api(h, "GET", path, None);
        assert_eq!(s, 200, "{path}: {v}");
        v
    };

    // "The latest N" with N above the default page of 20, and pages that say where the next one starts.
    let input: String = (0..30).map(|i| format!("m{i}\n")).collect();
    let out = kcat(
        &["-b", b, "-P", "-t", "counted", "-p", "0"],
        Some(input.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    let m = "/api/topics/counted/messages?partition=0";
    let v = get(&format!("{m}&latest=25"));
    assert_eq!(offsets(&v), (5..30).collect::<Vec<_>>(), "{v}");
    assert_eq!(v["next_offset"], 30, "{v}");
    let v = get(&format!("{m}&latest=25&limit=10"));
    assert_eq!(offsets(&v), (5..15).collect::<Vec<_>>(), "{v}");
    assert_eq!(v["next_offset"], 15, "{v}");
    let v = get(&format!("{m}&offset=0&limit=10"));
    assert_eq!(offsets(&v), (0..10).collect::<Vec<_>>(), "{v}");
    assert_eq!(v["next_offset"], 10, "the first record not returned: {v}");
    let v = get(&format!("{m}&offset=10"));
    assert_eq!(
        offsets(&v),
        (10..30).collect::<Vec<_>>(),
        "default page: {v}"
    );
    assert_eq!(
        get(&format!("{m}&latest=100"))["messages"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    let v = get(&format!("{m}&offset=1000"));
    assert_eq!(offsets(&v), Vec::<i64>::new(), "after the end: {v}");
    assert_eq!(v["end_offset"], 30, "{v}");
    // An offset before the log start (records deleted) starts at the log start.
    ok(&fjord(
        b,
        &[
            "records",
            "delete",
            "--topic",
            "counted",
            "--before-offset",
            "3",
        ],
        None,
    ));
    let v = get(&format!("{m}&offset=0&limit=2"));
    assert_eq!(v["start_offset"], 3, "{v}");
    assert_eq!(offsets(&v), [3, 4], "{v}");

    // A transaction's commit marker (a control record) takes an offset but is not shown; an open
    // transaction's records are (the browser reads up to the high watermark).
    ok(&fjord(b, &["topics", "create", "txn"], None));
    let out = run_client("txn_open.py", &[b, "txn"], Duration::from_secs(120));
    assert!(out.lines().any(|l| l == "open"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = get("/api/topics/txn/messages?partition=0&offset=0&limit=100");
        if v["end_offset"] == 6 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["end_offset"], 6, "2 committed, a marker, 3 open: {v}");
    let values: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    // done-1, done-2, open-1, open-2, open-3 in base64.
    let want = ["ZG9uZS0x", "ZG9uZS0y", "b3Blbi0x", "b3Blbi0y", "b3Blbi0z"];
    assert_eq!(values, want, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 5);
    assert_eq!(v["next_offset"], 6, "{v}");

    // Values far larger than the answer may be, in batches that compress to almost nothing: each field is cut
    // to 64 KiB (with its full size), and the whole answer to 4 MiB of record bytes.
    produce_zeros(b, "huge", 2, 3 << 20, "gzip");
    let (s, _, body) = http(
        h,
        "GET",
        "/api/topics/huge/messages?partition=0&latest=2",
        None,
    );
    assert_eq!(s, 200);
    assert!(
        body.len() < 1 << 20,
        "{} bytes for two cut records",
        body.len()
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(offsets(&v), [0, 1]);
    for r in v["messages"].as_array().unwrap() {
        let value = r["value"].as_str().unwrap();
        assert_eq!(value.len(), 87_384, "64 KiB in base64");
        assert!(value.starts_with("MDAw"), "zeros: {}", &value[..8]);
        assert_eq!(r["value_truncated"], true);
        assert_eq!(r["value_size"], 3 << 20);
        assert!(r.get("key_truncated").is_none(), "{}", r["key"]);
    }
    produce_zeros(b, "many", 100, 100 << 10, "zstd");
    let (s, _, body) = http(
        h,
        "GET",
        "/api/topics/many/messages?partition=0&offset=0&limit=100",
        None,
    );
    assert_eq!(s, 200);
    assert!(body.len() < 6 << 20, "{} bytes", body.len());
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        offsets(&v),
        (0..64).collect::<Vec<_>>(),
        "4 MiB of 64 KiB values"
    );
    assert_eq!(v["next_offset"], 64);
    let v = get("/api/topics/many/messages?partition=0&offset=64&limit=100");
    assert_eq!(offsets(&v), (64..100).collect::<Vec<_>>());
}

/// The body of a chunked HTTP/1.1 answer, put back together.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("no chunk size in {:?}", String::from_utf8_lossy(raw)));
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap_or_else(|e| panic!("bad chunk size: {e}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A message search: its events as (name, data), after checking the answer is an event stream that ends with
/// `done` or `error`.
fn search(h: &str, topic: &str, query: &str) -> Vec<(String, Value)> {
    let (status, head, body) = http_request(
        h,
        "GET",
        &format!("/api/topics/{topic}/search?{query}"),
        "",
        None,
    );
    assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let body = dechunk(&body);
    let text = String::from_utf8(body).unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let name = f.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let data = f.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect();
    let last = events.last().expect("no events");
    assert!(last.0 == "done" || last.0 == "error", "{events:?}");
    events
}

/// (partition, offset) of every match, in the order they came.
fn found(events: &[(String, Value)]) -> Vec<(i64, i64)> {
    events
        .iter()
        .filter(|(n, _)| n == "match")
        .map(|(_, m)| {
            (
                m["partition"].as_i64().unwrap(),
                m["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// A standalone broker (`fjord broker`, no registry of its own) with `dashboard.schema.registry.url` decodes
/// through that registry over HTTP: here the one `fjord start` runs, the records written to the standalone broker
/// by confluent-kafka's serializers with schemas registered there; its schema pages reach it too.
#[test]
fn a_standalone_brokers_dashboard_decodes_through_a_registry_url() {
    let dir = temp_dir();
    let (child, _, _, registry, _) = start_platform_with_services(&dir.path().join("platform"));
    let _platform = Killed(child);
    let url = format!("http://{registry}");
    let broker = BrokerProc::start(
        &dir.path().join("broker"),
        &[("dashboard.schema.registry.url", &url)],
    );
    let h = broker.http.as_deref().expect("http listener");
    let script = workspace_root().join("tests/clients/dashboard_registry.py");
    let out = ok(&run_bounded(
        std::process::Command::new(python()).arg(script).args([
            broker.bootstrap.as_str(),
            &url,
            "far",
        ]),
        Duration::from_secs(120),
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| panic!("{out}"));
    let ids: Value = serde_json::from_str(&line[3..]).unwrap();
    let (s, v) = api(
        h,
        "GET",
        "/api/topics/far-proto/messages?partition=0&offset=0&decode=registry",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        without_json_in_order(&v["messages"][0]["value_decoded"], &["id", "total", "tags"]),
        serde_json::json!({"schema_id": ids["proto"], "schema_type": "PROTOBUF",
            "value": {"id": "o-1", "total": {"units": "1250", "currency": "EUR"}, "tags": ["new"]}})
    );
    let (s, v) = api(
        h,
        "GET",
        "/api/topics/far-avro/messages?partition=0&offset=0&decode=registry",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["messages"][0]["value_decoded"]["value"]["sensor"], "boiler-7",
        "{v}"
    );
    let (s, v) = api(h, "GET", "/api/schemas", None);
    assert_eq!(s, 200, "{v}");
    assert!(v.to_string().contains("far-avro-value"), "{v}");
}

/// Records of an aborted transaction (written by confluent-kafka's transactional producer) are neither shown by
/// the message browser nor found by the search with `isolation=read_committed`, as a read_committed consumer does
/// not see them; a committed transaction's are, and so are records outside transactions. (Without it, as a
/// read_uncommitted consumer, they are shown, marked: `read_committed_stops_at_the_open_transaction...`.)
#[test]
fn aborted_transactions_are_not_shown_or_found() {
    let dir = temp_dir();
    let (child, kafka, h) = start_platform(&dir.path().join("data"));
    let _platform = Killed(child);
    let script = workspace_root().join("tests/clients/dashboard_txn.py");
    let out = ok(&run_bounded(
        std::process::Command::new(python())
            .arg(script)
            .args([kafka.as_str(), "txns"]),
        Duration::from_secs(120),
    ));
    assert!(out.contains("OK"), "{out}");
    // 0-1 aborted, 2 the ABORT marker, 3 plain, 4 committed, 5 the COMMIT marker.
    let (s, v) = api(
        &h,
        "GET",
        "/api/topics/txns/messages?partition=0&offset=0&isolation=read_committed",
        None,
    );
    assert_eq!(s, 200, "{v}");
    let shown: Vec<(i64, String)> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_i64().unwrap(),
                m["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (3, base64(b"needle plain")),
            (4, base64(b"needle committed"))
        ],
        "{v}"
    );
    assert_eq!(v["next_offset"], 6, "{v}");
    let events = search(&h, "txns", "q=needle&isolation=read_committed");
    assert_eq!(found(&events), vec![(0, 3), (0, 4)], "{events:?}");
    let done = &events.last().unwrap().1;
    assert_eq!(done["reason"], "end", "{done}");
    assert_eq!(done["scanned"], 2, "{done}");
}

#[test]
fn message_search_streams_matches_with_progress_within_its_bounds() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    ok(&fjord(
        b,
        &["topics", "create", "logs", "--partitions", "2"],
        None,
    ));
    // Partition p gets 2,000 keyed lines; every 100th (offset 7, 107, ...) says "Disk FULL".
    let lines = |p: usize, from: usize, to: usize| -> String {
        (from..to)
            .map(|i| {
                let what = if i % 100 == 7 {
                    "ERROR Disk FULL on /data"
                } else {
                    "INFO ok"
                };
                format!("user-{p}-{i}:{what} #{i}\n")
            })
            .collect()
    };
    let produce = |p: usize, input: String| {
        let part = p.to_string();
        let out = kcat(
            &["-b", b, "-P", "-t", "logs", "-p", &part, "-K", ":"],
            Some(input.as_bytes()),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "kcat: {}", stderr(&out));
    };
    produce(0, lines(0, 0, 1000));
    produce(1, lines(1, 0, 2000));
    // The rest of partition 0 later, after a time the search can start from.
    std::thread::sleep(Duration::from_millis(50));
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    std::thread::sleep(Duration::from_millis(50));
    produce(0, lines(0, 1000, 2000));
    let every = |p: i64, from: i64, to: i64| -> Vec<(i64, i64)> {
        (from..to)
            .filter(|o| o % 100 == 7)
            .map(|o| (p, o))
            .collect()
    };

    // Both partitions, case-insensitive: every match, in partition order, and a done event that counts the scan.
    let ev = search(h, "logs", "q=disk+full&ignore_case=true&limit=100");
    let mut want = every(0, 0, 2000);
    want.extend(every(1, 0, 2000));
    assert_eq!(found(&ev), want);
    let done = &ev.last().unwrap().1;
    assert_eq!(done["reason"], "end", "{done}");
    assert_eq!(done["scanned"], 4000, "{done}");
    assert_eq!(done["total"], 4000, "{done}");
    assert_eq!(ev[0].0, "progress", "progress comes first: {:?}", ev[0]);
    let m = ev.iter().find(|(n, _)| n == "match").unwrap();
    assert_eq!(
        m.1["key"],
        base64(b"user-0-7"),
        "a match is shown as the browser shows records: {}",
        m.1
    );
    // Case matters by default; a key search sees keys only.
    assert!(found(&search(h, "logs", "q=disk+full")).is_empty());
    assert_eq!(
        found(&search(h, "logs", "q=user-1-1999&in=key")),
        [(1, 1999)]
    );
    assert!(found(&search(h, "logs", "q=user-1-1999&in=value")).is_empty());

    // Bounds: matches, records read, a range of offsets or of time.
    let ev = search(h, "logs", "q=FULL&partition=1&limit=3");
    assert_eq!(found(&ev), [(1, 7), (1, 107), (1, 207)]);
    let done = &ev.last().unwrap().1;
    assert_eq!(done["reason"], "limit", "{done}");
    assert_eq!(
        done["next"],
        serde_json::json!({"partition": 1, "offset": 208})
    );
    let ev = search(h, "logs", "q=FULL&max_records=250");
    assert_eq!(found(&ev), [(0, 7), (0, 107), (0, 207)]);
    let done = &ev.last().unwrap().1;
    assert_eq!(done["reason"], "max_records", "{done}");
    assert_eq!(done["scanned"], 250, "{done}");
    assert_eq!(
        done["next"],
        serde_json::json!({"partition": 0, "offset": 250})
    );
    let ev = search(h, "logs", "q=FULL&from_offset=500&to_offset=808&limit=100");
    let mut want = every(0, 500, 808);
    want.extend(every(1, 500, 808));
    assert_eq!(found(&ev), want);
    let ev = search(
        h,
        "logs",
        &format!("q=FULL&partition=0&from_time={later}&limit=100"),
    );
    assert_eq!(found(&ev), every(0, 1000, 2000), "from a time");
    let ev = search(
        h,
        "logs",
        &format!("q=FULL&partition=0&to_time={later}&limit=100"),
    );
    assert_eq!(found(&ev), every(0, 0, 1000), "up to a time");

    // The message browser starts at a time too.
    let (s, v) = api(
        h,
        "GET",
        &format!("/api/topics/logs/messages?partition=0&timestamp={later}&limit=1"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(offsets(&v), [1000], "{v}");

    // Bad input is a JSON 400 before any event.
    for (query, says) in [
        ("", "`q` is required"),
        ("q=x&in=body", "`in` must be any, key, value or headers"),
        (
            "q=x&partition=2",
            "`partition` must be a whole number from 0 to 1",
        ),
        ("q=x&from_offset=9&to_offset=3", "is after `to_offset`"),
        ("q=x&max_records=0", "`max_records` must be"),
    ] {
        let e = refused(
            h,
            "GET",
            &format!("/api/topics/logs/search?{query}"),
            None,
            400,
        );
        assert!(e.contains(says), "{query}: {e}");
    }
    let long = "x".repeat(1025);
    let e = refused(
        h,
        "GET",
        &format!("/api/topics/logs/search?q={long}"),
        None,
        400,
    );
    assert!(e.contains("at most 1024"), "{e}");
    let e = refused(h, "GET", "/api/topics/nosuch/search?q=x", None, 404);
    assert!(e.contains("does not exist"), "{e}");
    // Every search has given its turn back.
    let (_, o) = api(h, "GET", "/api/overview", None);
    assert_eq!(o["searches_running"], 0, "{o}");
}

#[test]
fn cross_site_requests_and_foreign_host_names_are_refused() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let h = broker.http.as_deref().expect("http listener");
    let port = h.rsplit_once(':').unwrap().1;
    let status = |method: &str, path: &str, headers: &str, body: Option<&str>| -> u16 {
        let (s, ctype, body) = with_headers(h, method, path, headers, body.map(str::as_bytes));
        if path.starts_with("/api") {
            assert_eq!(ctype, "application/json", "{method} {path} {headers}");
            let v: Value = serde_json::from_slice(&body).unwrap();
            if s >= 400 {
                assert!(v["error"].is_string(), "{v}");
            }
        }
        s
    };
    let exists = |name: &str| api(h, "GET", &format!("/api/topics/{name}"), None).0 == 200;

    // A form a foreign page submits (no preflight): text/plain, urlencoded or none at all, even with a JSON body.
    let create = Some(r#"{"name": "csrf"}"#);
    for ctype in [
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "Content-Type: multipart/form-data; boundary=x\r\n",
        "",
    ] {
        assert_eq!(status("POST", "/api/topics", ctype, create), 415, "{ctype}");
    }
    assert!(!exists("csrf"));
    let plain = "Content-Type: text/plain\r\n";
    assert_eq!(
        status(
            "POST",
            "/api/groups/g/reset-offsets",
            plain,
            Some(r#"{"topic": "x", "to": "latest", "execute": true}"#)
        ),
        415
    );
    // A JSON body without the CSRF token (or with a cookie and header that differ, or only one of them) is
    // refused too.
    let json_utf8 = "Content-Type: application/json; charset=utf-8\r\n";
    for token in [
        "",
        "Cookie: fjord_csrf=a\r\nX-CSRF-Token: b\r\n",
        "Cookie: fjord_csrf=a\r\n",
        "X-CSRF-Token: a\r\n",
        "Cookie: fjord_csrf=\r\nX-CSRF-Token: \r\n",
        "Cookie: other=a\r\nX-CSRF-Token: a\r\n",
    ] {
        let headers = format!("{json_utf8}{token}");
        let (s, _, body) = with_headers(
            h,
            "POST",
            "/api/topics",
            &headers,
            create.map(str::as_bytes),
        );
        assert_eq!(s, 403, "{token:?}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("X-CSRF-Token"), "{v}");
    }
    assert!(!exists("csrf"));
    // A JSON body that says so, with parameters, and the token (among other cookies) goes through.
    let json_utf8 = format!("{json_utf8}Cookie: a=1; fjord_csrf=zz9; b=2\r\nX-CSRF-Token: zz9\r\n");
    let json_utf8 = json_utf8.as_str();
    assert_eq!(status("POST", "/api/topics", json_utf8, create), 201);
    assert_eq!(
        status(
            "DELETE",
            "/api/topics/csrf",
            plain,
            Some(r#"{"confirm": "csrf"}"#)
        ),
        415
    );
    assert!(exists("csrf"));

    // Another origin, reading or writing.
    let json = "Content-Type: application/json\r\n";
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let o = format!("Origin: {origin}\r\n");
        assert_eq!(status("GET", "/api/overview", &o, None), 403, "{origin}");
        assert_eq!(
            status(
                "DELETE",
                "/api/topics/csrf",
                &format!("{o}{json}"),
                Some(r#"{"confirm": "csrf"}"#)
            ),
            403,
            "{origin}"
        );
    }
    assert!(exists("csrf"));
    for site in ["cross-site", "same-site"] {
        let s = format!("Sec-Fetch-Site: {site}\r\n");
        assert_eq!(status("GET", "/api/topics", &s, None), 403, "{site}");
    }
    let same = format!("Origin: http://{h}\r\nSec-Fetch-Site: same-origin\r\n");
    assert_eq!(status("GET", "/api/overview", &same, None), 200);

    // A name that is not this machine's (DNS rebinding): refused for reads too; addresses and localhost work.
    for host in [
        format!("evil.example:{port}"),
        "rebind.attacker.test".to_string(),
    ] {
        let hh = format!("Host: {host}\r\n");
        assert_eq!(
            status("GET", "/api/topics/csrf/messages?partition=0", &hh, None),
            403,
            "{host}"
        );
        assert_eq!(
            status(
                "DELETE",
                "/api/topics/csrf",
                &format!("{hh}{json}"),
                Some(r#"{"confirm": "csrf"}"#)
            ),
            403,
            "{host}"
        );
    }
    assert!(exists("csrf"));
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let hh = format!("Host: {host}\r\n");
        assert_eq!(status("GET", "/api/overview", &hh, None), 200, "{host}");
    }
    // /metrics keeps answering any scraper.
    assert_eq!(
        status("GET", "/metrics", "Host: prometheus.internal\r\n", None),
        200
    );
    let done = format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n{json}{CSRF}");
    assert_eq!(
        status(
            "DELETE",
            "/api/topics/csrf",
            &done,
            Some(r#"{"confirm": "csrf"}"#)
        ),
        200
    );
    assert!(!exists("csrf"));
}

/// `fjord broker` with `overrides`, expected to refuse to start: its stderr. Bounded: the refusal comes before
/// the broker starts.
fn refused_start(data: &std::path::Path, overrides: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fjord"));
    cmd.arg("broker")
        .args(["--override", "listeners=PLAINTEXT://127.0.0.1:0"])
        .args(["--override", &format!("log.dirs={}", data.display())]);
    for o in overrides {
        cmd.args(["--override", o]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "started with {overrides:?}: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fjord broker {overrides:?} did not refuse to start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Off loopback the dashboard needs users: start-up is refused with the options to set. The address is
/// TEST-NET-1 (192.0.2.1), which this machine does not have, so nothing is ever bound off loopback: without the
/// refusal the start would fail to bind instead (another message). `dashboard.enable=false` gets past the check
/// (and then fails to bind that address).
#[test]
fn off_loopback_without_users_the_platform_refuses_to_start() {
    let dir = temp_dir();
    let err = refused_start(&dir.path().join("a"), &["metrics.listener=192.0.2.1:18080"]);
    assert!(
        err.contains("needs a login: set dashboard.auth.basic.users=NAME:PASSWORD"),
        "{err}"
    );
    assert!(err.contains("dashboard.enable=false"), "{err}");
    assert!(err.contains("dashboard.auth=none"), "{err}");
    assert!(!err.contains("cannot bind"), "{err}");
    let err = refused_start(
        &dir.path().join("b"),
        &["metrics.listener=192.0.2.1:18080", "dashboard.enable=false"],
    );
    assert!(err.contains("cannot bind metrics.listener"), "{err}");
    let err = refused_start(
        &dir.path().join("c"),
        &["metrics.listener=127.0.0.1:0", "dashboard.auth=basic"],
    );
    assert!(err.contains("needs at least one user"), "{err}");
    let err = refused_start(&dir.path().join("d"), &["dashboard.auth=ldap"]);
    assert!(err.contains("not a login mode"), "{err}");
}

/// Standard base64 with padding (for an `Authorization: Basic` header).
fn base64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_helper_matches_known_encodings() {
    assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
    assert_eq!(base64(b"bob:hunter2"), "Ym9iOmh1bnRlcjI=");
    assert_eq!(base64(b"fo"), "Zm8=");
}

/// The response header `name` (first one), if present.
fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// With users configured (here on loopback, which turns the login on there too) every page and API request needs
/// HTTP basic auth: 401 with a challenge and a JSON message without or with wrong credentials, 200 with a
/// user's (in clear or as SHA-256); /metrics, /health and /ready stay open; a change still needs the CSRF token;
/// the page sets the token's cookie.
/// The `Set-Cookie` of cookie `name` in a response head (a login's answer sets the session cookie too).
fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.trim().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
}

#[test]
fn with_users_the_dashboard_needs_a_login_and_metrics_stay_open() {
    let dir = temp_dir();
    // sha256("hunter2")
    let bob = "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7";
    let users = format!("alice:s3cret, bob:sha256:{bob}");
    // Many wrong logins follow from one address: the lockout (tested below) is set out of the way.
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[
            ("dashboard.auth.basic.users", &users),
            ("dashboard.auth.max.failures", "1000"),
        ],
    );
    let h = broker.http.as_deref().expect("http listener");
    let auth = |user: &str, pw: &str| {
        let b = base64(format!("{user}:{pw}").as_bytes());
        format!("Authorization: Basic {b}\r\n")
    };
    for path in ["/api/overview", "/", "/assets/app.js", "/api/openapi.json"] {
        for creds in [
            String::new(),
            auth("alice", "wrong"),
            auth("alice", "S3CRET"),
            auth("bob", bob),
            auth("carol", "s3cret"),
            "Authorization: Bearer s3cret\r\n".to_string(),
            "Authorization: Basic !!!\r\n".to_string(),
        ] {
            let (status, head, body) = http_request(h, "GET", path, &creds, None);
            assert_eq!(status, 401, "{path} {creds:?}");
            assert_eq!(
                header_of(&head, "www-authenticate").as_deref(),
                Some("Basic realm=\"Fjord dashboard\", charset=\"UTF-8\""),
                "{head}"
            );
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].as_str().unwrap().contains("dashboard"), "{v}");
        }
        for creds in [auth("alice", "s3cret"), auth("bob", "hunter2")] {
            assert_eq!(http_request(h, "GET", path, &creds, None).0, 200, "{path}");
        }
    }
    for path in ["/metrics", "/health", "/ready"] {
        assert_eq!(http_request(h, "GET", path, "", None).0, 200, "{path}");
    }
    // The page hands out the CSRF token's cookie (not to a browser that already has one).
    let alice = auth("alice", "s3cret");
    let (_, head, _) = http_request(h, "GET", "/", &alice, None);
    let cookie = set_cookie(&head, "fjord_csrf").expect("a CSRF cookie");
    assert!(cookie.starts_with("fjord_csrf="), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("HttpOnly"),
        "the page's script reads it: {cookie}"
    );
    let token = cookie["fjord_csrf=".len()..].split(';').next().unwrap();
    assert!(token.len() >= 32, "{cookie}");
    let (_, head, _) = http_request(
        h,
        "GET",
        "/",
        &format!("{alice}Cookie: fjord_csrf={token}\r\n"),
        None,
    );
    assert_eq!(set_cookie(&head, "fjord_csrf"), None, "{head}");

    // A change: the login first (401 even with the token), then the CSRF token (403), then it is made.
    let create = Some(r#"{"name": "secured"}"#.as_bytes());
    let json = "Content-Type: application/json\r\n";
    let with_token = format!("{json}Cookie: fjord_csrf={token}\r\nX-CSRF-Token: {token}\r\n");
    assert_eq!(
        http_request(h, "POST", "/api/topics", &with_token, create).0,
        401
    );
    let (s, _, body) = http_request(h, "POST", "/api/topics", &format!("{alice}{json}"), create);
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("CSRF"), "{v}");
    let exists =
        |name: &str| http_request(h, "GET", &format!("/api/topics/{name}"), &alice, None).0 == 200;
    assert!(!exists("secured"));
    let (s, _, body) = http_request(
        h,
        "POST",
        "/api/topics",
        &format!("{alice}{with_token}"),
        create,
    );
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    assert!(exists("secured"));
}

/// The login's hardening, through the real listener: a password stored as PBKDF2-HMAC-SHA256 (made with Python's
/// hashlib) logs in and opens a session whose cookie alone then logs in; after `POST /api/logout` that cookie is
/// refused; after 5 wrong passwords from one address the 6th login (even a right one) gets 429 with
/// `Retry-After`, and the session opened before still works.
#[test]
fn stored_passwords_sessions_logout_and_the_failed_login_limit() {
    let dir = temp_dir();
    // hashlib.pbkdf2_hmac("sha256", b"correct horse", bytes.fromhex("0011...eeff"), 100000)
    let carol = "carol:pbkdf2-sha256:100000:00112233445566778899aabbccddeeff:349385d8369097aac69c91b9cf79c08cc236bd0eea62faca19643b117ca1f56e";
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("dashboard.auth.basic.users", carol)],
    );
    let h = broker.http.as_deref().expect("http listener");
    let auth = |user: &str, pw: &str| {
        let b = base64(format!("{user}:{pw}").as_bytes());
        format!("Authorization: Basic {b}\r\n")
    };
    let session_of = |head: &str| -> String {
        let c = set_cookie(head, "fjord_session")
            .unwrap_or_else(|| panic!("no session cookie: {head}"));
        assert!(c.starts_with("fjord_session="), "{c}");
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        c["fjord_session=".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    let (s, head, _) = http_request(
        h,
        "GET",
        "/api/overview",
        &auth("carol", "correct horse"),
        None,
    );
    assert_eq!(s, 200, "{head}");
    let first = session_of(&head);
    let with_session = |t: &str| format!("Cookie: fjord_session={t}\r\n");
    assert_eq!(
        http_request(h, "GET", "/api/overview", &with_session(&first), None).0,
        200
    );
    assert_eq!(
        http_request(h, "GET", "/api/overview", &with_session("forged"), None).0,
        401
    );

    // Logout (with the CSRF token, like every change) ends the session on the server: the cookie no longer logs in.
    let (_, head, _) = http_request(
        h,
        "GET",
        "/api/overview",
        &auth("carol", "correct horse"),
        None,
    );
    let second = session_of(&head);
    let csrf = "Content-Type: application/json\r\nX-CSRF-Token: t0k3n\r\n";
    let (s, _, body) = http_request(
        h,
        "POST",
        "/api/logout",
        &format!("{csrf}Cookie: fjord_session={second}; fjord_csrf=t0k3n\r\n"),
        Some(b"{}"),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["logged_out"], true, "{v}");
    let (s, _, body) = http_request(h, "GET", "/api/overview", &with_session(&second), None);
    assert_eq!(s, 401, "a login after logout is refused");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("session has ended"),
        "{v}"
    );
    // Without the CSRF token, no logout.
    let (s, _, _) = http_request(
        h,
        "POST",
        "/api/logout",
        &format!("Content-Type: application/json\r\nCookie: fjord_session={first}\r\n"),
        Some(b"{}"),
    );
    assert_eq!(s, 403);
    assert_eq!(
        http_request(h, "GET", "/api/overview", &with_session(&first), None).0,
        200
    );

    // Five wrong passwords are 401; the sixth login from this address is 429, the right password too.
    for i in 0..5 {
        let (s, _, _) = http_request(
            h,
            "GET",
            "/api/overview",
            &auth("carol", &format!("guess{i}")),
            None,
        );
        assert_eq!(s, 401, "attempt {i}");
    }
    for creds in [auth("carol", "guess5"), auth("carol", "correct horse")] {
        let (s, head, body) = http_request(h, "GET", "/api/overview", &creds, None);
        assert_eq!(s, 429, "{head}");
        let wait: u64 = header_of(&head, "retry-after")
            .unwrap_or_else(|| panic!("no Retry-After: {head}"))
            .parse()
            .unwrap();
        assert!((1..=300).contains(&wait), "{wait}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("too many failed logins"),
            "{v}"
        );
    }
    // A session opened before the lockout still works.
    assert_eq!(
        http_request(h, "GET", "/api/overview", &with_session(&first), None).0,
        200
    );
}

/// `fjord start` with the schema registry and the Connect worker on free ports: (child, Kafka, HTTP, registry,
/// Connect addresses).
fn start_platform_with_services(
    data: &std::path::Path,
) -> (std::process::Child, String, String, String, String) {
    let (child, line) = common::start_platform(
        data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        std::process::Stdio::null(),
    );
    let f = |name: &str| field(&line, name).to_string();
    (
        child,
        f("kafka="),
        f("http="),
        f("registry="),
        f("connect="),
    )
}

/// Kills the platform when dropped (a failed assertion must not leave it running).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A decoded field without its `json` text, after checking that text: it parses to `value`, and its top-level
/// keys come in `order` (the schema's; `value`'s are sorted).
fn without_json_in_order(decoded: &Value, order: &[&str]) -> Value {
    let text = decoded["json"]
        .as_str()
        .unwrap_or_else(|| panic!("no json text: {decoded}"));
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(parsed, decoded["value"], "{decoded}");
    let at: Vec<usize> = order
        .iter()
        .map(|k| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} not in {text}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "not in {order:?}: {text}"
    );
    let mut v = decoded.clone();
    v.as_object_mut().unwrap().remove("json");
    v
}

/// The message browser's `decode=registry`: records written by confluent-kafka's AvroSerializer, JSONSerializer
/// and ProtobufSerializer (whose schema references an imported file) through the registry `fjord start` runs
/// come back decoded, with their schema id and type; a record naming a schema id the registry does not have and
/// one not in the wire format say why, and their raw bytes stay in the answer.
#[test]
fn message_browser_decodes_avro_json_schema_and_protobuf_through_the_registry() {
    let dir = temp_dir();
    let (child, kafka, h, registry, _) = start_platform_with_services(&dir.path().join("data"));
    let _platform = Killed(child);
    let script = workspace_root().join("tests/clients/dashboard_registry.py");
    let out = ok(&run_bounded(
        std::process::Command::new(python()).arg(script).args([
            kafka.as_str(),
            &format!("http://{registry}"),
            "reg",
        ]),
        Duration::from_secs(120),
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| panic!("{out}"));
    let ids: Value = serde_json::from_str(&line[3..]).unwrap();
    let messages = |topic: &str| -> Vec<Value> {
        let path = format!("/api/topics/{topic}/messages?partition=0&offset=0&decode=registry");
        let (s, v) = api(&h, "GET", &path, None);
        assert_eq!(s, 200, "{v}");
        v["messages"].as_array().unwrap().clone()
    };

    let avro = messages("reg-avro");
    assert_eq!(avro.len(), 3, "{avro:?}");
    assert_eq!(
        without_json_in_order(&avro[0]["value_decoded"], &["sensor", "celsius", "note"]),
        serde_json::json!({"schema_id": ids["avro"], "schema_type": "AVRO",
            "value": {"sensor": "boiler-7", "celsius": 81.5, "note": {"string": "steady"}}})
    );
    // The key is plain text: shown as it is, with the reason it is not decoded.
    assert_eq!(avro[0]["key"], base64(b"k1"));
    assert!(
        avro[0]["key_decoded"]["error"]
            .as_str()
            .unwrap()
            .contains("wire format"),
        "{}",
        avro[0]
    );
    // An unknown schema id: the record says so, its bytes are still there (for the hex view).
    let unknown = &avro[1]["value_decoded"];
    assert_eq!(unknown["schema_id"], 999999, "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("schema id 999999 is not in the schema registry"),
        "{unknown}"
    );
    let mut raw = vec![0u8, 0x00, 0x0f, 0x42, 0x3f];
    raw.extend_from_slice(b"\x02xy");
    assert_eq!(avro[1]["value"], base64(&raw));
    assert!(avro[2]["value_decoded"]["error"]
        .as_str()
        .unwrap()
        .contains("wire format"));
    assert_eq!(avro[2]["value"], base64(b"just text"));

    let json = messages("reg-json");
    assert_eq!(
        without_json_in_order(&json[0]["value_decoded"], &["sku", "price"]),
        serde_json::json!({"schema_id": ids["json"], "schema_type": "JSON", "value": {"sku": "a-1", "price": 2.5}})
    );
    let proto = messages("reg-proto");
    assert_eq!(
        without_json_in_order(&proto[0]["value_decoded"], &["id", "total", "tags"]),
        serde_json::json!({"schema_id": ids["proto"], "schema_type": "PROTOBUF",
            "value": {"id": "o-1", "total": {"units": "1250", "currency": "EUR"}, "tags": ["new"]}})
    );

    // Without `decode` nothing is decoded; a bad `decode` is a 400.
    let (_, v) = api(
        &h,
        "GET",
        "/api/topics/reg-json/messages?partition=0&offset=0",
        None,
    );
    assert!(v["messages"][0].get("value_decoded").is_none(), "{v}");
    let e = refused(
        &h,
        "GET",
        "/api/topics/reg-json/messages?partition=0&decode=avro",
        None,
        400,
    );
    assert!(e.contains("`decode` must be none or registry"), "{e}");

    // A search decodes its matches the same way with `decode=registry` (the text is found in the raw bytes:
    // the Avro string "boiler-7"); without it, matches carry no decoded fields; a bad `decode` is a 400.
    let events = search(&h, "reg-avro", "q=boiler&decode=registry");
    let matches: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "match")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(matches.len(), 1, "{events:?}");
    assert_eq!(matches[0]["offset"], 0);
    assert_eq!(matches[0]["value_decoded"], avro[0]["value_decoded"]);
    assert!(matches[0]["key_decoded"]["error"]
        .as_str()
        .unwrap()
        .contains("wire format"));
    let events = search(&h, "reg-avro", "q=boiler");
    assert_eq!(found(&events), [(0, 0)]);
    assert!(
        events.iter().all(|(_, m)| m.get("value_decoded").is_none()),
        "{events:?}"
    );
    let e = refused(
        &h,
        "GET",
        "/api/topics/reg-avro/search?q=boiler&decode=avro",
        None,
        400,
    );
    assert!(e.contains("`decode` must be none or registry"), "{e}");
}

/// Commits offset `offset(i)` on partition 0 of `topic` for groups `g0000`..: one OffsetCommit each (generation
/// -1, no member: the admin form, as `kafka-consumer-groups --reset-offsets` sends), pipelined on one connection
/// to the single broker that coordinates every group. Cheap: no consumer joins anything.
fn commit_groups(bootstrap: &str, topic: &str, count: usize, offset: impl Fn(usize) -> i64) {
    // The first commit creates __consumer_offsets (COORDINATOR_NOT_AVAILABLE or NOT_COORDINATOR until it is
    // led here): one group alone until it succeeds, bounded, then all of them at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let failed = commit_range(bootstrap, topic, 0..1, &offset);
        if failed.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first OffsetCommit kept failing: {failed:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed = commit_range(bootstrap, topic, 0..count, &offset);
    assert!(failed.is_empty(), "OffsetCommit errors: {failed:?}");
}

/// One OffsetCommit per group of `range`, pipelined on one connection; the error codes that were not 0.
fn commit_range(
    bootstrap: &str,
    topic: &str,
    range: std::ops::Range<usize>,
    offset: &impl Fn(usize) -> i64,
) -> Vec<i16> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, RequestHeader, ResponseHeader,
        TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
    use std::io::{Read, Write};
    const VERSION: i16 = 2;
    let count = range.len();
    let mut s = std::net::TcpStream::connect(bootstrap).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = s.try_clone().unwrap();
    let reading = std::thread::spawn(move || {
        let mut failed = Vec::new();
        for _ in 0..count {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).unwrap();
            let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
            reader.read_exact(&mut buf).unwrap();
            let mut b: &[u8] = &buf;
            ResponseHeader::decode(&mut b, OffsetCommitResponse::header_version(VERSION)).unwrap();
            let r = OffsetCommitResponse::decode(&mut b, VERSION).unwrap();
            let code = r.topics[0].partitions[0].error_code;
            if code != 0 {
                failed.push(code);
            }
        }
        failed
    });
    let mut out = Vec::new();
    for i in range {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::OffsetCommit as i16)
            .with_request_api_version(VERSION)
            .with_correlation_id(i as i32)
            .with_client_id(Some(StrBytes::from_static_str("dashboard-test")));
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(format!("g{i:04}"))))
            .with_generation_id_or_member_epoch(-1)
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset(i))])]);
        let mut body = Vec::new();
        header
            .encode(&mut body, OffsetCommitRequest::header_version(VERSION))
            .unwrap();
        req.encode(&mut body, VERSION).unwrap();
        out.extend_from_slice(&(body.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
    }
    s.write_all(&out).unwrap();
    reading.join().unwrap()
}

/// 2,000 groups (as many distinct lags), each committed once: the group list answers a sorted and filtered page
/// within the bound, on the server, with the right rows.
#[test]
fn thousands_of_groups_list_fast_sorted_and_filtered_on_the_server() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    let input: String = (0..100).map(|i| format!("m{i}\n")).collect();
    let out = kcat(
        &["-b", b, "-P", "-t", "work", "-p", "0"],
        Some(input.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    let t0 = Instant::now();
    commit_groups(b, "work", 2000, |i| (i % 100) as i64);
    eprintln!("2000 groups committed in {:?}", t0.elapsed());
    let get = |path: &str| -> (Value, Duration) {
        let t = Instant::now();
        let (s, v) = api(h, "GET", path, None);
        assert_eq!(s, 200, "{path}: {v}");
        eprintln!("{path}: {:?}", t.elapsed());
        (v, t.elapsed())
    };
    // Warm-up, then each query timed: a debug build on a loaded machine, so the bound is generous and still far
    // below what a client-side sort of 2,000 rows over many requests would take.
    get("/api/groups?limit=1");
    let bound = Duration::from_millis(1000);
    let ids = |v: &Value| -> Vec<(String, i64)> {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["id"].as_str().unwrap().to_string(),
                    g["lag"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let (v, took) = get("/api/groups?sort=lag&limit=50");
    assert!(took < bound, "sorted by lag in {took:?}");
    assert_eq!(v["total"], 2000, "{}", v["total"]);
    // Offset 0 committed: lag 100, for g0000, g0100, ... (ties by id).
    let first = ids(&v);
    assert_eq!(first.len(), 50);
    assert_eq!(first[0], ("g0000".to_string(), 100));
    assert_eq!(first[19], ("g1900".to_string(), 100));
    assert_eq!(first[20], ("g0001".to_string(), 99));
    let (v, took) = get("/api/groups?sort=lag&order=asc&min_lag=95&offset=10&limit=5");
    assert!(took < bound, "filtered by lag in {took:?}");
    // Lags 95..=100 are offsets 0..=5: 6 of each 100 groups.
    assert_eq!(v["total"], 120, "{v}");
    // Lag 95 is offset 5: g0005, g0105, ... by id; the page skips the first ten.
    let want: Vec<(String, i64)> = (10..15)
        .map(|k| (format!("g{:04}", k * 100 + 5), 95))
        .collect();
    assert_eq!(ids(&v), want);
    let (v, took) = get("/api/groups?state=empty&min_members=0&max_members=0&max_lag=1&filter=g19");
    assert!(took < bound, "filtered by state and members in {took:?}");
    assert_eq!(
        ids(&v),
        [("g1999".to_string(), 1)],
        "only g1999 of g19xx has lag 1: {v}"
    );
    let (v, _) = get("/api/groups?min_members=1");
    assert_eq!(v["total"], 0, "no group has members: {v}");
    let (v, took) = get("/api/groups?sort=id&order=desc&limit=500&offset=1500");
    assert!(took < bound, "the largest page in {took:?}");
    assert_eq!(v["groups"][0]["id"], "g0499", "{}", v["groups"][0]);
    assert_eq!(v["groups"].as_array().unwrap().len(), 500);
    for bad in [
        "/api/groups?order=up",
        "/api/groups?min_lag=-1",
        "/api/groups?max_members=many",
        "/api/groups?sort=size",
    ] {
        refused(h, "GET", bad, None, 400);
    }
}

/// The schemas API over the registry `fjord start` runs, and the Connect API over its worker: reads, the diff,
/// writes with their confirmations, and the services' own refusals passed on as 4xx JSON.
#[test]
fn schemas_and_connectors_through_the_dashboard_api() {
    let dir = temp_dir();
    let (child, b, h, reg, conn) = start_platform_with_services(&dir.path().join("data"));
    let _platform = Killed(child);
    let get = |path: &str| -> Value {
        let (s, v) = api(&h, "GET", path, None);
        assert_eq!(s, 200, "{path}: {v}");
        v
    };
    let post = |path: &str, body: &str| -> Value {
        let (s, v) = api(&h, "POST", path, Some(body));
        assert_eq!(s, 200, "{path} {body}: {v}");
        v
    };
    let v = get("/api/services");
    assert_eq!(v["registry"]["address"], reg.as_str(), "{v}");
    assert_eq!(v["connect"]["address"], conn.as_str(), "{v}");

    // Schemas: a first version, a compatible second one, an incompatible third refused by the dry run.
    assert_eq!(get("/api/schemas")["total"], 0);
    let v1 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":""}]}"#;
    let v3 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#;
    let body = |schema: &str, dry: bool| json_body(schema, dry);
    let path = "/api/schemas/orders-value/versions";
    let v = post(path, &body(v1, true));
    assert_eq!(v["compatible"], true, "{v}");
    assert_eq!(
        get("/api/schemas")["total"],
        0,
        "a dry run registers nothing"
    );
    let v = post(path, &body(v1, false));
    assert_eq!(v["version"], 1, "{v}");
    let v = post(path, &body(v2, true));
    assert_eq!(v["compatible"], true, "{v}");
    let v = post(path, &body(v2, false));
    assert_eq!(v["version"], 2, "{v}");
    let v = post(path, &body(v3, true));
    assert_eq!(v["compatible"], false, "{v}");
    assert!(!v["messages"].as_array().unwrap().is_empty(), "{v}");
    let list = get("/api/schemas");
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["subjects"][0]["versions"], serde_json::json!([1, 2]));
    assert_eq!(list["compatibility"], "BACKWARD", "{list}");
    let s = get("/api/schemas/orders-value");
    assert_eq!(
        (&s["compatibility"], &s["compatibility_source"]),
        (&serde_json::json!("BACKWARD"), &serde_json::json!("global")),
        "{s}"
    );
    assert_eq!(s["latest"]["version"], 2, "{s}");
    let d = get("/api/schemas/orders-value/diff?from=1&to=2");
    let added: Vec<&str> = d["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] == "+")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(added.iter().any(|l| l.contains("\"note\"")), "{d}");
    // v2's pretty form adds the `note` field's object after `id`'s: five lines, nothing removed.
    assert_eq!(
        (&d["removed"], &d["added"]),
        (&serde_json::json!(0), &serde_json::json!(5)),
        "{d}"
    );
    // A huge version beside a small one is refused (each side is bounded, not only their product): 1,300
    // fields are about 5,200 pretty lines. The wide version first: dropping fields is a compatible change.
    let wide_fields: Vec<String> = (0..1300)
        .map(|i| format!(r#"{{"name":"f{i}","type":"int"}}"#))
        .collect();
    let wide = format!(
        r#"{{"type":"record","name":"Wide","fields":[{}]}}"#,
        wide_fields.join(",")
    );
    let narrow = r#"{"type":"record","name":"Wide","fields":[{"name":"f0","type":"int"}]}"#;
    for schema in [wide.as_str(), narrow] {
        let (s, v) = api(
            &h,
            "POST",
            "/api/schemas/wide-value/versions",
            Some(&body(schema, false)),
        );
        assert_eq!(s, 200, "registering a version of wide-value: {v}");
    }
    let (status, v) = api(&h, "GET", "/api/schemas/wide-value/diff?from=1&to=2", None);
    let shown: String = v.to_string().chars().take(300).collect();
    assert_eq!(status, 400, "{shown}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("too large to compare"),
        "{shown}"
    );
    let (s, v) = api(
        &h,
        "PUT",
        "/api/schemas/orders-value/compatibility",
        Some(r#"{"compatibility": "none"}"#),
    );
    assert_eq!(s, 200, "{v}");
    let s = get("/api/schemas/orders-value");
    assert_eq!(
        (&s["compatibility"], &s["compatibility_source"]),
        (&serde_json::json!("NONE"), &serde_json::json!("subject")),
        "{s}"
    );

    // Bad input: the dashboard's own checks (400) and the registry's refusals, passed on with its message.
    refused(&h, "POST", path, Some("{}"), 400);
    refused(
        &h,
        "POST",
        path,
        Some(r#"{"schema": "x", "schema_type": "XML"}"#),
        400,
    );
    let m = refused(&h, "POST", path, Some(r#"{"schema": "{not avro"}"#), 422);
    assert!(!m.is_empty());
    refused(
        &h,
        "PUT",
        "/api/schemas/orders-value/compatibility",
        Some(r#"{"compatibility": "SIDEWAYS"}"#),
        422,
    );
    refused(&h, "GET", "/api/schemas/nosuch", None, 404);
    refused(&h, "GET", "/api/schemas/orders-value/versions/7", None, 404);
    refused(
        &h,
        "GET",
        "/api/schemas/orders-value/versions/minus-one",
        None,
        422,
    );
    refused(&h, "GET", "/api/schemas/orders-value/diff", None, 400);
    refused(&h, "GET", "/api/schemas?limit=0", None, 400);
    // A page of subjects is at most 100 (OpenAPI says so too); a larger limit used to be cut to 100 silently.
    let m = refused(&h, "GET", "/api/schemas?limit=101", None, 400);
    assert!(m.contains("at most 100"), "{m}");
    refused(&h, "PATCH", "/api/schemas/orders-value", Some("{}"), 405);
    let m = refused(
        &h,
        "DELETE",
        "/api/schemas/orders-value",
        Some(r#"{"confirm": "orders"}"#),
        400,
    );
    assert!(m.contains("exact name"), "{m}");
    refused(&h, "DELETE", "/api/schemas/orders-value", None, 400);
    assert!(http_get(&reg, "/subjects").contains("orders-value"));
    let (s, v) = api(
        &h,
        "DELETE",
        "/api/schemas/orders-value/versions/1",
        Some(r#"{"confirm": "orders-value"}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        get("/api/schemas/orders-value")["versions"],
        serde_json::json!([2])
    );
    let (s, v) = api(
        &h,
        "DELETE",
        "/api/schemas/orders-value",
        Some(r#"{"confirm": "orders-value"}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deleted"], serde_json::json!([2]), "{v}");
    refused(&h, "GET", "/api/schemas/orders-value", None, 404);
    assert!(
        !http_get(&reg, "/subjects").contains("orders-value"),
        "the registry still lists it"
    );

    // Connect: a source that runs and a sink whose task fails on a record that is not JSON.
    let (lines_file, sink_file) = (dir.path().join("in.txt"), dir.path().join("out.txt"));
    std::fs::write(&lines_file, "a\nb\nc\n").unwrap();
    ok(&fjord(&b, &["topics", "create", "plain"], None));
    ok(&fjord(&b, &["produce", "plain"], Some(b"not json\n")));
    for config in [
        serde_json::json!({"name": "src", "config": {"connector.class": "FileStreamSource",
            "file": lines_file.display().to_string(), "topic": "lines"}}),
        serde_json::json!({"name": "strict", "config": {"connector.class": "FileStreamSink",
            "file": sink_file.display().to_string(), "topics": "plain",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            // FAILED stays FAILED (as in Kafka Connect): Fjord's automatic restart would otherwise show it
            // RUNNING again for a moment after its 5 s backoff.
            "task.restart.max.attempts": "0"}}),
    ] {
        let (s, v) = common::connect::http(&conn, "POST", "/connectors", Some(&config.to_string()));
        assert_eq!(s, 201, "{v}");
    }
    let connector = |name: &str| get(&format!("/api/connect/{name}"));
    let wait_state = |name: &str, want: &str| {
        common::connect::wait_for(Duration::from_secs(60), &format!("{name} {want}"), || {
            let v = connector(name);
            (v["state"] == want && v["task_states"][0]["state"] == want).then_some(v)
        })
    };
    wait_state("src", "RUNNING");
    let strict =
        common::connect::wait_for(Duration::from_secs(60), "the sink task to fail", || {
            let v = connector("strict");
            (v["tasks_failed"] == 1).then_some(v)
        });
    assert!(
        strict["task_states"][0]["trace"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{strict}"
    );
    assert_eq!(strict["errors"], true);
    assert_eq!(strict["config"]["topics"], "plain", "{strict}");
    let list = get("/api/connect");
    assert_eq!(list["total"], 2, "{list}");
    let names: Vec<&str> = list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["src", "strict"]);
    assert_eq!(get("/api/connect?state=running&filter=SR")["total"], 1);

    post("/api/connect/src/pause", "{}");
    wait_state("src", "PAUSED");
    post("/api/connect/src/resume", "");
    wait_state("src", "RUNNING");
    let v = post("/api/connect/src/restart", r#"{"include_tasks": true}"#);
    assert!(v["message"].as_str().unwrap().contains("Restart"), "{v}");
    wait_state("src", "RUNNING");
    post("/api/connect/strict/tasks/0/restart", "{}");
    refused(
        &h,
        "POST",
        "/api/connect/src/restart",
        Some(r#"{"include_tasks": "yes"}"#),
        400,
    );
    refused(
        &h,
        "POST",
        "/api/connect/src/tasks/first/restart",
        Some("{}"),
        400,
    );
    refused(&h, "POST", "/api/connect/nosuch/pause", Some("{}"), 404);
    refused(&h, "GET", "/api/connect/nosuch", None, 404);
    refused(&h, "GET", "/api/connect/src/pause", None, 405);
    refused(&h, "POST", "/api/connect/src/pause", Some("[1]"), 400);
}

/// A body for `POST /api/schemas/{subject}/versions`.
fn json_body(schema: &str, dry_run: bool) -> String {
    serde_json::json!({"schema": schema, "dry_run": dry_run}).to_string()
}

/// Without the registry and Connect (`--registry-listener none --connect-listener none`), their pages' API says
/// so: 503 with `not_running`, and /api/services.
#[test]
fn services_not_running_answer_503_with_not_running() {
    let dir = temp_dir();
    let (child, _b, h) = start_platform(&dir.path().join("data"));
    let _platform = Killed(child);
    let (s, v) = api(&h, "GET", "/api/services", None);
    assert_eq!(s, 200);
    assert_eq!(
        (&v["registry"]["running"], &v["connect"]["running"]),
        (&Value::Bool(false), &Value::Bool(false)),
        "{v}"
    );
    for (path, service, flag) in [
        ("/api/schemas", "registry", "--registry-listener none"),
        (
            "/api/schemas/x/diff?from=1",
            "registry",
            "--registry-listener none",
        ),
        ("/api/connect", "connect", "--connect-listener none"),
        (
            "/api/connect/x/restart",
            "connect",
            "--connect-listener none",
        ),
    ] {
        let method = if path.ends_with("restart") {
            "POST"
        } else {
            "GET"
        };
        let (s, v) = api(&h, method, path, (method == "POST").then_some("{}"));
        assert_eq!(s, 503, "{path}: {v}");
        assert_eq!(v["not_running"], service, "{v}");
        assert!(v["error"].as_str().unwrap().contains(flag), "{v}");
    }
}

/// Every path in /api/openapi.json is routed (a request with its placeholders filled answers anything but the
/// "no such API" 404), and the document is valid JSON with the OpenAPI version.
#[test]
fn the_openapi_document_describes_routed_paths() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let h = broker.http.as_deref().expect("http listener");
    let (s, doc) = api(h, "GET", "/api/openapi.json", None);
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in ops.as_object().unwrap() {
            let m = method.to_uppercase();
            if op["responses"]["200"]["content"]["text/event-stream"].is_object() && m == "GET" {
                // A live stream does not end: its head only (the message search's, for topic `x`, is a 404).
                let (s, head, mut r) = open_stream(h, &concrete, "");
                if s == 200 {
                    assert_eq!(
                        header_of(&head, "content-type").as_deref(),
                        Some("text/event-stream"),
                        "{concrete}: {head}"
                    );
                    continue;
                }
                let v = json_after(&head, &mut r);
                assert!(
                    s == 404 && !v["error"].as_str().unwrap().starts_with("no such API"),
                    "{concrete}: {s} {v}"
                );
                continue;
            }
            let (s, v) = api(h, &m, &concrete, (m != "GET").then_some("{}"));
            let missing = s == 404 && v["error"].as_str().unwrap_or("").starts_with("no such API");
            assert!(
                (!missing && s != 405 && s < 500) || s == 503,
                "{m} {concrete}: {s} {v}"
            );
        }
    }
}

/// The schemas, Connect and consumer-group pages in headless Chromium against `fjord start` with the registry
/// and Connect: registering through the form (compatibility check, then confirmation), the diff, a delete with
/// the name typed; a connector's failed task with its trace, pause and resume with confirmation; 2,000 groups
/// sorted and filtered on the server. Screenshots under the target dir.
#[test]
fn schemas_connect_and_many_groups_in_a_real_browser() {
    let dir = temp_dir();
    let (child, b, h, reg, conn) = start_platform_with_services(&dir.path().join("data"));
    let _platform = Killed(child);
    let input: String = (0..100).map(|i| format!("m{i}\n")).collect();
    let out = kcat(
        &["-b", &b, "-P", "-t", "work", "-p", "0"],
        Some(input.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    commit_groups(&b, "work", 2000, |i| (i % 100) as i64);
    // The issue's page-weight check: pages beside a 1,000-partition topic.
    ok(&fjord(
        &b,
        &[
            "topics",
            "create",
            "big",
            "--partitions",
            "1000",
            "--request-timeout-ms",
            "120000",
        ],
        None,
    ));
    let lines_file = dir.path().join("in.txt");
    std::fs::write(&lines_file, "a\nb\n").unwrap();
    ok(&fjord(&b, &["topics", "create", "plain"], None));
    ok(&fjord(&b, &["produce", "plain"], Some(b"not json\n")));
    for config in [
        serde_json::json!({"name": "src", "config": {"connector.class": "FileStreamSource",
            "file": lines_file.display().to_string(), "topic": "lines"}}),
        serde_json::json!({"name": "strict", "config": {"connector.class": "FileStreamSink",
            "file": dir.path().join("out.txt").display().to_string(), "topics": "plain",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            // FAILED stays FAILED (as in Kafka Connect): Fjord's automatic restart would otherwise show it
            // RUNNING again for a moment after its 5 s backoff.
            "task.restart.max.attempts": "0"}}),
    ] {
        let (s, v) = common::connect::http(&conn, "POST", "/connectors", Some(&config.to_string()));
        assert_eq!(s, 201, "{v}");
    }
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    ok(&fjord(&b, &["topics", "create", "readings"], None));
    let out = run_browser(
        "dashboard_services_browser.js",
        &[&h, shots.to_str().unwrap(), &b, &format!("http://{reg}")],
        Duration::from_secs(240),
    );
    eprintln!("{out}");
}

/// The admin API under generated input: schemathesis (from PyPI, in the test venv) sends requests built from
/// /api/openapi.json, valid and not, against `fjord start` with the registry and Connect; no answer is a 5xx
/// other than 503, every answer is JSON (an `error` on a refusal), and the platform still serves afterwards.
#[test]
fn the_admin_api_survives_schemathesis() {
    let dir = temp_dir();
    let (child, b, h, _reg, _conn) = start_platform_with_services(&dir.path().join("data"));
    let mut platform = Killed(child);
    ok(&fjord(
        &b,
        &["topics", "create", "orders", "--partitions", "2"],
        None,
    ));
    let out = run_client(
        "dashboard_schemathesis.py",
        &[&h, "10"],
        Duration::from_secs(240),
    );
    assert!(out.lines().any(|l| l.contains("passed")), "{out}");
    eprintln!("{out}");
    assert!(
        platform.0.try_wait().unwrap().is_none(),
        "fjord start exited"
    );
    let (s, v) = api(&h, "GET", "/api/overview", None);
    assert_eq!(s, 200, "{v}");
    ok(&fjord(&b, &["topics", "describe", "orders"], None));
}

/// The group's row of `fjord groups list` (ListGroups), if it is listed.
fn listed_group(b: &str, id: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(&ok(&fjord(
        b,
        &["groups", "list", "--output", "json"],
        None,
    )))
    .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == id)
        .cloned()
}

/// The topic's configs set on it, as `fjord topics describe --output json` (DescribeConfigs) shows them.
fn described_configs(b: &str, topic: &str) -> Value {
    let d: Value = serde_json::from_str(&ok(&fjord(
        b,
        &["topics", "describe", topic, "--output", "json"],
        None,
    )))
    .unwrap();
    let d = if d.is_array() { d[0].clone() } else { d };
    d["configs"].clone()
}

/// The group and topic actions of the dashboard's API: deleting a group (refused while a kcat member is in it,
/// then gone from ListGroups), resetting offsets to a timestamp (the first offset at or after it; the log end
/// past every record), and setting and deleting a topic config with a validation step (the broker's refusals as
/// 4xx with its code), each checked with the CLI.
#[test]
fn group_delete_reset_to_timestamp_and_topic_configs_through_the_api() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    ok(&fjord(
        b,
        &["topics", "create", "ts", "--partitions", "2"],
        None,
    ));
    // Timestamps a minute old (well inside retention), one record each: partition 0 at +0, +1000, +2000 and
    // +3000 ms; partition 1 at +500 and +2500.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    let input: String = [(0, 0), (0, 1000), (0, 2000), (0, 3000), (1, 500), (1, 2500)]
        .iter()
        .map(|(p, t)| {
            format!(
                "{{\"value\": \"v{t}\", \"partition\": {p}, \"timestamp\": {}}}\n",
                base + t
            )
        })
        .collect();
    ok(&fjord(
        b,
        &["produce", "ts", "--format", "json"],
        Some(input.as_bytes()),
    ));

    // Reset to a timestamp: a dry run commits nothing; executed, the committed offsets are the first at or
    // after it (an exact match included); past every record, the log end offsets.
    let reset = "/api/groups/tsgroup/reset-offsets";
    let (s, v) = api(
        h,
        "POST",
        reset,
        Some(r#"{"topic": "ts", "to": "earliest", "execute": true}"#),
    );
    assert_eq!(s, 200, "{v}");
    let committed = || -> Vec<i64> {
        let (s, g) = api(h, "GET", "/api/groups/tsgroup", None);
        assert_eq!(s, 200, "{g}");
        g["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["committed"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(committed(), [0, 0]);
    let to_time = |ts: i64, execute: bool| -> Vec<i64> {
        let body = format!(
            r#"{{"topic": "ts", "to": "timestamp", "timestamp": {ts}, "execute": {execute}}}"#
        );
        let (s, v) = api(h, "POST", reset, Some(&body));
        assert_eq!(s, 200, "{body}: {v}");
        assert_eq!(v["executed"], execute, "{v}");
        v["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["new"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(to_time(base + 1500, false), [2, 1]);
    assert_eq!(committed(), [0, 0], "a dry run committed offsets");
    assert_eq!(to_time(base + 1500, true), [2, 1]);
    assert_eq!(committed(), [2, 1]);
    assert_eq!(to_time(base + 2500, true), [3, 1]);
    assert_eq!(committed(), [3, 1]);
    assert_eq!(to_time(base + 3_600_000, true), [4, 2]);
    assert_eq!(committed(), [4, 2]);
    let described: Value = serde_json::from_str(&ok(&fjord(
        b,
        &["groups", "describe", "tsgroup", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(described["lag"], 0, "{described}");
    assert_eq!(to_time(0, true), [0, 0]);
    assert_eq!(committed(), [0, 0]);
    for body in [
        r#"{"topic": "ts", "to": "timestamp"}"#,
        r#"{"topic": "ts", "to": "timestamp", "timestamp": -1}"#,
        r#"{"topic": "ts", "to": "timestamp", "timestamp": "noon"}"#,
        r#"{"topic": "ts", "to": "latest", "timestamp": 5}"#,
        r#"{"topic": "ts", "to": "timestamp", "timestamp": 5, "offset": 1}"#,
    ] {
        refused(h, "POST", reset, Some(body), 400);
    }

    // Deleting a group: refused while a member is in it (kcat's balanced consumer), with Kafka's code.
    let member = std::process::Command::new("kcat")
        .args([
            "-b",
            b,
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
            // It reads the six records and commits them, so the group outlives its member (Empty, with
            // offsets) until it is deleted.
            "-X",
            "auto.offset.reset=earliest",
            "-X",
            "auto.commit.interval.ms=200",
            "-G",
            "live",
            "ts",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kcat");
    let pid = member.id().to_string();
    let member_guard = Killed(member);
    let members = |id: &str| -> Option<i64> {
        let (s, g) = api(h, "GET", &format!("/api/groups/{id}"), None);
        (s == 200).then(|| g["members"].as_array().unwrap().len() as i64)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while members("live").unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "kcat never joined group `live`");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, v) = api(
        h,
        "DELETE",
        "/api/groups/live",
        Some(r#"{"confirm": "live"}"#),
    );
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["kafka_error"], "NON_EMPTY_GROUP", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("has active members"),
        "{v}"
    );
    assert!(
        listed_group(b, "live").is_some(),
        "a refused delete removed the group"
    );
    // The member leaves (kcat closes its consumer on SIGTERM): the group is empty, and deleting it works.
    ok(&run_bounded(
        std::process::Command::new("kill").args(["-TERM", &pid]),
        Duration::from_secs(10),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while members("live") != Some(0) {
        assert!(
            Instant::now() < deadline,
            "kcat's member never left group `live`"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(member_guard);
    let m = refused(
        h,
        "DELETE",
        "/api/groups/live",
        Some(r#"{"confirm": "liv"}"#),
        400,
    );
    assert!(m.contains("type its exact id"), "{m}");
    refused(h, "DELETE", "/api/groups/live", None, 400);
    let (s, v) = api(
        h,
        "DELETE",
        "/api/groups/live",
        Some(r#"{"confirm": "live"}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Deleted group live.");
    assert!(listed_group(b, "live").is_none(), "deleted, yet listed");
    refused(h, "GET", "/api/groups/live", None, 404);
    // A group with only committed offsets (no member ever): deleted with them.
    let (s, v) = api(
        h,
        "DELETE",
        "/api/groups/tsgroup",
        Some(r#"{"confirm": "tsgroup"}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert!(listed_group(b, "tsgroup").is_none());
    refused(h, "GET", "/api/groups/tsgroup", None, 404);
    let (s, v) = api(
        h,
        "DELETE",
        "/api/groups/nosuch",
        Some(r#"{"confirm": "nosuch"}"#),
    );
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["kafka_error"], "GROUP_ID_NOT_FOUND", "{v}");

    // Topic configs: the broker validates first (its code and message as a 4xx), nothing changes until applied.
    let configs = "/api/topics/ts/configs";
    for (body, status, code, words) in [
        (
            r#"{"set": {"retention.ms": "soon"}, "validate_only": true}"#,
            400,
            Some(40),
            "soon",
        ),
        (
            r#"{"set": {"segment.bytes": "-5"}}"#,
            400,
            Some(40),
            "segment.bytes",
        ),
        (
            r#"{"set": {"no.such.config": "1"}, "validate_only": true}"#,
            400,
            Some(40),
            "Unknown topic config 'no.such.config'",
        ),
        (
            r#"{"delete": ["no.such.config"]}"#,
            400,
            Some(40),
            "no.such.config",
        ),
        (
            r#"{"delete": ["retention.ms"]}"#,
            400,
            None,
            "not set on the topic",
        ),
        (
            r#"{"set": {"retention.ms": "1"}, "delete": ["retention.ms"]}"#,
            400,
            None,
            "both set and deleted",
        ),
        (r#"{}"#, 400, None, "nothing to change"),
        (r#"{"set": ["retention.ms"]}"#, 400, None, "`set`"),
        (r#"{"delete": "retention.ms"}"#, 400, None, "`delete`"),
        (
            r#"{"set": {"retention.ms": null}}"#,
            400,
            None,
            "retention.ms",
        ),
        (
            r#"{"set": {"retention.ms": "1"}, "validate_only": "yes"}"#,
            400,
            None,
            "validate_only",
        ),
    ] {
        let (s, v) = api(h, "POST", configs, Some(body));
        assert_eq!(s, status, "{body}: {v}");
        assert_eq!(v["kafka_error_code"].as_i64(), code, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{body}: {v}");
    }
    let (s, v) = api(
        h,
        "POST",
        "/api/topics/nosuch/configs",
        Some(r#"{"set": {"retention.ms": "1000"}}"#),
    );
    assert_eq!(s, 404, "{v}");
    assert!(described_configs(b, "ts").get("retention.ms").is_none());
    let (s, v) = api(
        h,
        "POST",
        configs,
        Some(r#"{"set": {"retention.ms": "86400000"}, "validate_only": true}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        described_configs(b, "ts").get("retention.ms").is_none(),
        "validate_only changed the config"
    );
    let (s, v) = api(
        h,
        "POST",
        configs,
        Some(r#"{"set": {"retention.ms": "86400000", "cleanup.policy": "compact"}}"#),
    );
    assert_eq!(s, 200, "{v}");
    let c = described_configs(b, "ts");
    assert_eq!(c["retention.ms"]["value"], "86400000", "{c}");
    assert_eq!(c["cleanup.policy"]["value"], "compact", "{c}");
    let (s, v) = api(
        h,
        "POST",
        configs,
        Some(r#"{"delete": ["cleanup.policy"]}"#),
    );
    assert_eq!(s, 200, "{v}");
    let c = described_configs(b, "ts");
    assert!(c.get("cleanup.policy").is_none(), "{c}");
    assert_eq!(c["retention.ms"]["value"], "86400000", "{c}");
}

/// The group page's lag over time: the broker samples each group's total lag every 5 s, so a group that commits
/// nothing shows a flat lag (the committed lag, as `fjord groups describe` has it) and "stalled"; a commit to
/// the end shows "caught_up" at once; every sample is within the last 15 minutes and in time order.
#[test]
fn group_lag_history_and_catch_up_estimate() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    let h = broker.http.as_deref().expect("http listener");
    ok(&fjord(b, &["topics", "create", "lagged"], None));
    let input: String = (0..10).map(|i| format!("m{i}\n")).collect();
    let out = kcat(
        &["-b", b, "-P", "-t", "lagged", "-p", "0"],
        Some(input.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    let reset = |to: &[&str]| {
        let mut args = vec!["groups", "reset-offsets", "slow", "--topic", "lagged"];
        args.extend_from_slice(to);
        args.push("--execute");
        ok(&fjord(b, &args, None));
    };
    reset(&["--to-offset", "4"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (s, v) = api(h, "GET", "/api/groups/slow", None);
        assert_eq!(s, 200, "{v}");
        if v["lag_history"].as_array().unwrap().len() >= 2 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 2 lag samples after 30 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(v["lag"], 6);
    assert_eq!(v["sample_interval_ms"], 5000);
    let samples = v["lag_history"].as_array().unwrap();
    let ats: Vec<i64> = samples
        .iter()
        .map(|s| s["at_ms"].as_i64().unwrap())
        .collect();
    assert!(ats.windows(2).all(|w| w[0] < w[1]), "{ats:?}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        ats.iter().all(|a| now_ms - a < 15 * 60 * 1000 + 5000),
        "{ats:?}"
    );
    // The group exists since the commit: every sample is its lag.
    assert!(samples.iter().all(|s| s["lag"] == 6), "{v}");
    assert_eq!(v["catch_up"]["state"], "stalled", "{v}");
    assert_eq!(v["catch_up"]["lag_change_per_sec"], 0.0, "{v}");
    assert_eq!(v["catch_up"]["seconds"], Value::Null, "{v}");
    reset(&["--to-latest"]);
    let (_, v) = api(h, "GET", "/api/groups/slow", None);
    assert_eq!(v["lag"], 0);
    assert_eq!(v["catch_up"]["state"], "caught_up", "{v}");
    assert_eq!(v["catch_up"]["seconds"], 0.0, "{v}");
}

/// An open server-sent event stream read over a raw HTTP/1.1 connection (chunked, put back together as it comes).
struct EventStream {
    r: std::io::BufReader<std::net::TcpStream>,
    text: String,
}

/// `GET path` with `headers`, read up to the end of the head: (status, head, the connection after it).
fn open_stream(
    addr: &str,
    path: &str,
    headers: &str,
) -> (u16, String, std::io::BufReader<std::net::TcpStream>) {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n").unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "GET {path}: the connection closed in the head: {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head, r)
}

/// The JSON body of an answer whose head was read by [`open_stream`] (a refusal: with a Content-Length).
fn json_after(head: &str, r: &mut std::io::BufReader<std::net::TcpStream>) -> Value {
    use std::io::Read;
    assert_eq!(
        header_of(head, "content-type").as_deref(),
        Some("application/json"),
        "{head}"
    );
    let len: usize = header_of(head, "content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

impl EventStream {
    /// Opens `path` and checks it answers an event stream.
    fn open(addr: &str, path: &str, headers: &str) -> EventStream {
        let (status, head, mut r) = open_stream(addr, path, headers);
        if status != 200 {
            panic!("GET {path}: {status} {}", json_after(&head, &mut r));
        }
        assert_eq!(
            header_of(&head, "content-type").as_deref(),
            Some("text/event-stream"),
            "{head}"
        );
        // Not buffered by a proxy such as nginx.
        assert_eq!(
            header_of(&head, "x-accel-buffering").as_deref(),
            Some("no"),
            "{head}"
        );
        EventStream {
            r,
            text: String::new(),
        }
    }

    /// The next event (name, JSON data), skipping keep-alive comments; fails past `within`.
    fn next(&mut self, within: Duration) -> (String, Value) {
        use std::io::{BufRead, Read};
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..end + 2).collect();
                let name = frame.lines().find_map(|l| l.strip_prefix("event: "));
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(n), Some(d)) = (name, data) {
                    return (n.to_string(), serde_json::from_str(d).unwrap());
                }
            }
            assert!(Instant::now() < deadline, "no event within {within:?}");
            let mut size = String::new();
            self.r.read_line(&mut size).expect("the stream stalled");
            let size = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|e| panic!("bad chunk size {size:?}: {e}"));
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0; size + 2];
            self.r.read_exact(&mut chunk).unwrap();
            self.text
                .push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }
}

impl EventStream {
    /// Whether the stream ends (its last chunk, or the connection closes) within `within`, reading past the
    /// events it sends meanwhile.
    fn ends_within(&mut self, within: Duration) -> bool {
        use std::io::{BufRead, Read};
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            self.r
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .unwrap();
            let mut size = String::new();
            match self.r.read_line(&mut size) {
                Ok(0) => return true,
                Ok(_) => {}
                // Only the read timeout means "still open"; a reset or any other error is a stream that ended.
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                return false;
            };
            if size == 0 {
                return true;
            }
            let mut chunk = vec![0; size + 2];
            if self.r.read_exact(&mut chunk).is_err() {
                return false;
            }
        }
        false
    }
}

/// A login with basic-auth `login` (an `Authorization` header line): the session cookie it hands out
/// (`fjord_session=...`, as a browser sends it back).
fn session_cookie(h: &str, login: &str) -> String {
    let (status, head, _) = http_request(h, "GET", "/api/overview", login, None);
    assert_eq!(status, 200, "{head}");
    let cookie = set_cookie(&head, "fjord_session").expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}

/// A live stream opened with a session ends at the next sampling round once that session has ended (here by
/// `POST /api/logout`), rather than running on for up to 30 minutes; a stream opened with basic-auth
/// credentials (no session cookie) goes on.
#[test]
fn live_streams_end_when_their_session_ends() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("dashboard.auth.basic.users", "alice:s3cret")],
    );
    let h = broker.http.as_deref().expect("http listener");
    let login = format!(
        "Authorization: Basic {}\r\n",
        base64("alice:s3cret".as_bytes())
    );
    let session = session_cookie(h, &login);
    let mut s = EventStream::open(h, "/api/overview/stream", &format!("Cookie: {session}\r\n"));
    assert_eq!(s.next(Duration::from_secs(10)).0, "history");
    let mut basic = EventStream::open(h, "/api/overview/stream", &login);
    assert_eq!(basic.next(Duration::from_secs(10)).0, "history");
    // While the session lasts, the stream goes on.
    assert!(!s.ends_within(Duration::from_secs(6)));
    let (status, _, body) = http_request(
        h,
        "POST",
        "/api/logout",
        &format!(
            "Content-Type: application/json\r\nX-CSRF-Token: t0k3n\r\nCookie: {session}; fjord_csrf=t0k3n\r\n"
        ),
        Some(b"{}"),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        s.ends_within(Duration::from_secs(12)),
        "the stream of a logged-out session went on"
    );
    assert!(
        !basic.ends_within(Duration::from_secs(1)),
        "a basic-auth stream ended"
    );
}

/// `GET /api/overview/stream`: an event stream whose first event is the overview with its rate history, then one
/// `sample` per sampling round (every 5 s) with the new point only, which shows traffic produced meanwhile; the
/// group lag stream likewise for one group, 404 for a group that does not exist, 405 for another method.
#[test]
fn live_streams_send_the_history_then_each_sample() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    ok(&fjord(b, &["topics", "create", "live"], None));
    let mut s = EventStream::open(h, "/api/overview/stream", "");
    let (name, first) = s.next(Duration::from_secs(10));
    assert_eq!(name, "history", "{first}");
    assert_eq!(first["topics"], 1, "{first}");
    assert_eq!(first["sample_interval_ms"], 5000, "{first}");
    let mut last = first["history"]
        .as_array()
        .unwrap()
        .last()
        .map_or(i64::MIN, |p| p["at_ms"].as_i64().unwrap());
    // Traffic while the stream is open: a sample after it shows bytes in.
    let input: String = (0..200).map(|i| format!("record {i}\n")).collect();
    ok(&fjord(b, &["produce", "live"], Some(input.as_bytes())));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (name, v) = s.next(Duration::from_secs(15));
        assert_eq!(name, "sample", "{v}");
        let points = v["history"].as_array().unwrap();
        assert!(!points.is_empty(), "a sample without a new point: {v}");
        // Only points the stream has not sent yet, in order.
        for p in points {
            let at = p["at_ms"].as_i64().unwrap();
            assert!(at > last, "{at} after {last}: {v}");
            last = at;
        }
        if points.iter().any(|p| p["bytes_in"].as_f64().unwrap() > 0.0) {
            assert!(v["bytes_in_per_sec"].as_f64().unwrap() > 0.0, "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no sample shows the traffic: {v}"
        );
    }
    drop(s);

    // A page that has just read the overview opens the stream `?after=` a point it has: the first event is a
    // `sample` with only the points after it, not the whole history again.
    let (status, o) = api(h, "GET", "/api/overview", None);
    assert_eq!(status, 200, "{o}");
    let history = o["history"].as_array().unwrap();
    let cut = history[0]["at_ms"].as_i64().unwrap();
    let mut after = EventStream::open(h, &format!("/api/overview/stream?after={cut}"), "");
    let (name, v) = after.next(Duration::from_secs(10));
    assert_eq!(name, "sample", "{v}");
    assert_eq!(v["topics"], 1, "{v}");
    let points = v["history"].as_array().unwrap();
    assert!(points.len() >= history.len() - 1, "{v}\n{o}");
    assert!(
        points.iter().all(|p| p["at_ms"].as_i64().unwrap() > cut),
        "{cut}: {v}"
    );
    drop(after);
    // An `after` that is no point of this history (from before a restart, a clock behind it) gets the history.
    let mut stale = EventStream::open(h, "/api/overview/stream?after=9000000000000", "");
    let (name, v) = stale.next(Duration::from_secs(10));
    assert_eq!(name, "history", "{v}");
    assert!(
        v["history"].as_array().unwrap().len() >= history.len(),
        "{v}"
    );
    drop(stale);
    let (status, v) = api(h, "GET", "/api/overview/stream?after=-1", None);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("after"), "{v}");

    // A group's lag, live: committed at the start of every partition, its lag is the 200 records.
    reset_to(b, "slow", "live", "--to-offset", "0");
    let mut g = EventStream::open(h, "/api/groups/slow/lag/stream", "");
    let (name, v) = g.next(Duration::from_secs(10));
    assert_eq!(name, "history", "{v}");
    assert_eq!(v["id"], "slow", "{v}");
    assert!(v["lag_history"].is_array(), "{v}");
    let (name, v) = g.next(Duration::from_secs(15));
    assert_eq!(name, "sample", "{v}");
    assert_eq!(v["lag"], 200, "{v}");
    let points = v["lag_history"].as_array().unwrap();
    assert_eq!(points.last().unwrap()["lag"], 200, "{v}");
    assert!(v["catch_up"]["state"].is_string(), "{v}");

    let (s, v) = api(h, "GET", "/api/groups/nobody/lag/stream", None);
    assert_eq!(s, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nobody"), "{v}");
    let (s, v) = api(h, "POST", "/api/overview/stream", Some("{}"));
    assert_eq!(s, 405, "{v}");
}

/// `fjord groups reset-offsets GROUP --topic TOPIC HOW [ARG] --execute`.
fn reset_to(b: &str, group: &str, topic: &str, how: &str, arg: &str) {
    ok(&fjord(
        b,
        &[
            "groups",
            "reset-offsets",
            group,
            "--topic",
            topic,
            how,
            arg,
            "--execute",
        ],
        None,
    ));
}

/// At most `MAX_STREAMS` (64) live streams are open at once: one more is a JSON 503 with a message; the places
/// of clients that went away are freed (within a few sampling rounds), so a new stream opens again.
#[test]
fn live_streams_are_capped_and_freed_when_clients_go_away() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let h = broker.http.as_deref().expect("http listener");
    let open: Vec<EventStream> = (0..64)
        .map(|_| EventStream::open(h, "/api/overview/stream", ""))
        .collect();
    let (status, head, mut r) = open_stream(h, "/api/overview/stream", "");
    assert_eq!(status, 503, "{head}");
    let v = json_after(&head, &mut r);
    assert!(
        v["error"].as_str().unwrap().contains("64 live streams"),
        "{v}"
    );
    // The other API answers meanwhile.
    let (s, v) = api(h, "GET", "/api/overview", None);
    assert_eq!(s, 200, "{v}");
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, head, mut r) = open_stream(h, "/api/overview/stream", "");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{head}");
        json_after(&head, &mut r);
        assert!(
            Instant::now() < deadline,
            "the places of closed streams were not freed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The live streams sit behind the login: without credentials 401 (JSON), with the session cookie a login
/// handed out (what the browser's EventSource sends) the stream opens; no CSRF token is needed for the GET.
#[test]
fn live_streams_need_the_login() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("dashboard.auth.basic.users", "alice:s3cret,bob:b0b")],
    );
    let h = broker.http.as_deref().expect("http listener");
    for path in ["/api/overview/stream", "/api/groups/g/lag/stream"] {
        let (status, head, mut r) = open_stream(h, path, "");
        assert_eq!(status, 401, "{path}: {head}");
        let v = json_after(&head, &mut r);
        assert!(v["error"].as_str().unwrap().contains("dashboard"), "{v}");
        let (status, head, _) = open_stream(h, path, "Cookie: fjord_session=forged\r\n");
        assert_eq!(status, 401, "{path}: {head}");
    }
    let login = format!(
        "Authorization: Basic {}\r\n",
        base64("alice:s3cret".as_bytes())
    );
    let session = session_cookie(h, &login);
    let mut s = EventStream::open(h, "/api/overview/stream", &format!("Cookie: {session}\r\n"));
    assert_eq!(s.next(Duration::from_secs(10)).0, "history");

    // One user holds at most 16 streams (429 past that), however many sessions it opens (credentials open one
    // per basic-auth request), so it cannot take every place; another user still gets one.
    let other = session_cookie(h, &login);
    assert_ne!(other, session);
    let mut more: Vec<EventStream> = (1..8)
        .map(|_| EventStream::open(h, "/api/overview/stream", &format!("Cookie: {session}\r\n")))
        .collect();
    more.extend(
        (0..8)
            .map(|_| EventStream::open(h, "/api/overview/stream", &format!("Cookie: {other}\r\n"))),
    );
    for cookie in [&session, &other, &session_cookie(h, &login)] {
        let (status, head, mut r) =
            open_stream(h, "/api/overview/stream", &format!("Cookie: {cookie}\r\n"));
        assert_eq!(status, 429, "{head}");
        let v = json_after(&head, &mut r);
        assert!(
            v["error"].as_str().unwrap().contains("16 live streams"),
            "{v}"
        );
    }
    // Basic-auth credentials without a cookie count against the same user.
    let (status, head, mut r) = open_stream(h, "/api/overview/stream", &login);
    assert_eq!(status, 429, "{head}");
    json_after(&head, &mut r);
    let bob = format!("Authorization: Basic {}\r\n", base64("bob:b0b".as_bytes()));
    let mut b = EventStream::open(h, "/api/overview/stream", &bob);
    assert_eq!(b.next(Duration::from_secs(10)).0, "history");
    drop(more);
}

/// The message browser and the search with `isolation`: records written by rdkafka's transactional producers -
/// a committed transaction, an aborted one, one still open, then another committed after it. read_uncommitted
/// (the default) shows every record up to the high watermark, the aborted one marked; read_committed shows only
/// the committed records before the open transaction (it stops at the last stable offset). Transaction markers
/// are never shown. Once the open transaction commits, read_committed reads on.
#[test]
fn read_committed_stops_at_the_open_transaction_and_hides_aborted_records() {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let (b, h) = (
        broker.bootstrap.as_str(),
        broker.http.as_deref().expect("http listener"),
    );
    ok(&fjord(b, &["topics", "create", "tx"], None));
    let producer = |id: &str| -> BaseProducer {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", b)
            .set("transactional.id", id)
            .set("transaction.timeout.ms", "600000")
            .create()
            .unwrap();
        p.init_transactions(Duration::from_secs(30)).unwrap();
        p
    };
    let send = |p: &BaseProducer, value: &str| {
        p.send(BaseRecord::<(), str>::to("tx").partition(0).payload(value))
            .map_err(|(e, _)| e)
            .unwrap();
    };
    let t = Duration::from_secs(30);
    let a = producer("tx-a");
    let open = producer("tx-open");
    // 0-1 committed, 2 COMMIT; 3 aborted, 4 ABORT; 5 open; 6 committed after it, 7 COMMIT.
    a.begin_transaction().unwrap();
    send(&a, "committed 1");
    send(&a, "committed 2");
    a.commit_transaction(t).unwrap();
    a.begin_transaction().unwrap();
    send(&a, "aborted");
    a.flush(t).unwrap();
    a.abort_transaction(t).unwrap();
    open.begin_transaction().unwrap();
    send(&open, "open");
    open.flush(t).unwrap();
    a.begin_transaction().unwrap();
    send(&a, "committed later");
    a.commit_transaction(t).unwrap();

    let shown = |v: &Value| -> Vec<(i64, String, bool)> {
        v["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|m| {
                (
                    m["offset"].as_i64().unwrap(),
                    m["value"].as_str().unwrap().to_string(),
                    m["aborted"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let everything = vec![
        (0, base64(b"committed 1"), false),
        (1, base64(b"committed 2"), false),
        (3, base64(b"aborted"), true),
        (5, base64(b"open"), false),
        (6, base64(b"committed later"), false),
    ];
    for q in ["", "&isolation=read_uncommitted"] {
        let (s, v) = api(
            h,
            "GET",
            &format!("/api/topics/tx/messages?partition=0&offset=0{q}"),
            None,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["isolation"], "read_uncommitted", "{v}");
        assert_eq!(shown(&v), everything, "{v}");
        assert_eq!(v["end_offset"], 8, "{v}");
        assert_eq!(v["last_stable_offset"], 5, "{v}");
        assert_eq!(v["next_offset"], 8, "{v}");
        assert!(v["messages"][0]["transactional"].as_bool().unwrap(), "{v}");
    }
    let committed = [
        (0, base64(b"committed 1"), false),
        (1, base64(b"committed 2"), false),
    ];
    // latest=4 counts back from the last stable offset (5): offsets 1-4, of which only 1 is shown (3 aborted, 2
    // and 4 markers). Counted back from the high watermark (8) it would be 4-7, nothing below the LSO to show.
    for (q, want) in [
        ("offset=0", &committed[..]),
        ("latest=10", &committed[..]),
        ("latest=4", &committed[1..]),
    ] {
        let (s, v) = api(
            h,
            "GET",
            &format!("/api/topics/tx/messages?partition=0&{q}&isolation=read_committed"),
            None,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["isolation"], "read_committed", "{v}");
        assert_eq!(shown(&v), want, "{q}: {v}");
        assert_eq!(v["next_offset"], 5, "{v}");
        assert_eq!(v["last_stable_offset"], 5, "{v}");
    }
    let e = refused(
        h,
        "GET",
        "/api/topics/tx/messages?partition=0&isolation=serializable",
        None,
        400,
    );
    assert!(e.contains("read_committed"), "{e}");
    // The search, either way.
    let events = search(h, "tx", "q=e&partition=0");
    assert_eq!(
        found(&events),
        vec![(0, 0), (0, 1), (0, 3), (0, 5), (0, 6)],
        "{events:?}"
    );
    let events = search(h, "tx", "q=e&partition=0&isolation=read_committed");
    assert_eq!(found(&events), vec![(0, 0), (0, 1)], "{events:?}");
    assert_eq!(events.last().unwrap().1["isolation"], "read_committed");
    // The open transaction commits: read_committed reads through to the end.
    open.commit_transaction(t).unwrap();
    let (_, v) = api(
        h,
        "GET",
        "/api/topics/tx/messages?partition=0&offset=0&isolation=read_committed",
        None,
    );
    let offsets: Vec<i64> = shown(&v).iter().map(|m| m.0).collect();
    assert_eq!(offsets, [0, 1, 5, 6], "{v}");
    assert_eq!(v["last_stable_offset"], 9, "{v}");
}
