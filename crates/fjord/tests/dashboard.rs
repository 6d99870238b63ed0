//! The web dashboard: its JSON API under bad input (always a 4xx JSON answer, never a 500, and the CLI's
//! validation messages), a page of a 1,000-partition broker answered in under a second, and the pages in a real
//! browser (headless Chromium driven by Selenium) against `fjord start`, with records produced by kcat and a
//! live confluent-kafka consumer group.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One HTTP/1.1 request on a fresh connection (bounded by a 10 s read timeout): (status, content type, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, raw[split + 4..].to_vec())
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

/// `fjord start` on free ports without the registry and Connect; returns the child, Kafka and HTTP addresses.
fn start_platform(data: &std::path::Path) -> (std::process::Child, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
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
            "none",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.starts_with("fjord ready") => break l,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                panic!("fjord start did not become ready");
            }
        }
    };
    (
        child,
        field(&line, "kafka=").to_string(),
        field(&line, "http=").to_string(),
    )
}

#[test]
fn dashboard_pages_work_in_a_real_browser() {
    let dir = temp_dir();
    let (mut child, b, h) = start_platform(&dir.path().join("data"));
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
        run_client(
            "dashboard_browser.py",
            &[&h, &b, env!("CARGO_BIN_EXE_fjord"), shots.to_str().unwrap()],
            Duration::from_secs(240),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let out = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
    eprintln!("{out}");
}
