//! End-to-end tests of what the broker's HTTP endpoint serves: `/metrics` (request errors, per-partition log
//! gauges, consumer-group lag, process resources, build info, fetch wait vs processing) and `/health`, `/ready`.

mod common;

use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(60);

fn metrics(broker: &BrokerProc) -> String {
    let text = http_get(broker.http.as_deref().expect("http listener"), "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the sample whose line starts with `series` followed by a space, if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no `{series}` in metrics:\n{text}"))
}

fn produce(b: &str, topic: &str, partition: i32, n: usize) {
    let input: String = (0..n).map(|i| format!("m{i}\n")).collect();
    let p = partition.to_string();
    let out = kcat(
        &["-b", b, "-P", "-t", topic, "-p", &p],
        Some(input.as_bytes()),
        T,
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
}

#[test]
fn request_errors_are_counted_by_api_and_error_code() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    let before = metrics(&broker);
    assert!(
        !before.contains("fjord_request_errors_total{"),
        "errors before any failed request:\n{before}"
    );
    // DeleteTopics of two missing topics: two UNKNOWN_TOPIC_OR_PARTITION (3) in one response.
    let out = fjord(b, &["topics", "delete", "nosuch1", "nosuch2"], None);
    assert!(!out.status.success());
    // CreateTopics of an existing topic: TOPIC_ALREADY_EXISTS (36).
    ok(&fjord(b, &["topics", "create", "dup"], None));
    assert!(!fjord(b, &["topics", "create", "dup"], None)
        .status
        .success());
    let text = metrics(&broker);
    assert_eq!(
        value(
            &text,
            "fjord_request_errors_total{request=\"DeleteTopics\",error=\"UNKNOWN_TOPIC_OR_PARTITION\",code=\"3\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "fjord_request_errors_total{request=\"CreateTopics\",error=\"TOPIC_ALREADY_EXISTS\",code=\"36\"}"
        ),
        1.0
    );
    // Successful requests add no error series.
    assert!(
        !text.contains("fjord_request_errors_total{request=\"Metadata\""),
        "{text}"
    );
}

#[test]
fn partition_offsets_sizes_and_group_lag_are_exported_and_deleted_topics_disappear() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "gauged", "--partitions", "2"],
        None,
    ));
    produce(b, "gauged", 0, 10);
    produce(b, "gauged", 1, 3);
    // The group committed 4 on partition 0 and 3 on partition 1.
    ok(&fjord(
        b,
        &[
            "groups",
            "reset-offsets",
            "lagging",
            "--topic",
            "gauged:0",
            "--to-offset",
            "4",
            "--execute",
        ],
        None,
    ));
    ok(&fjord(
        b,
        &[
            "groups",
            "reset-offsets",
            "lagging",
            "--topic",
            "gauged:1",
            "--to-latest",
            "--execute",
        ],
        None,
    ));
    let text = metrics(&broker);
    let p0 = "{topic=\"gauged\",partition=\"0\"}";
    let p1 = "{topic=\"gauged\",partition=\"1\"}";
    assert_eq!(value(&text, &format!("fjord_log_end_offset{p0}")), 10.0);
    assert_eq!(value(&text, &format!("fjord_log_start_offset{p0}")), 0.0);
    assert_eq!(value(&text, &format!("fjord_log_end_offset{p1}")), 3.0);
    assert!(value(&text, &format!("fjord_log_size_bytes{p0}")) > 10.0 * 3.0);
    let g0 = "{group=\"lagging\",topic=\"gauged\",partition=\"0\"}";
    let g1 = "{group=\"lagging\",topic=\"gauged\",partition=\"1\"}";
    assert_eq!(
        value(&text, &format!("fjord_consumergroup_current_offset{g0}")),
        4.0
    );
    assert_eq!(value(&text, &format!("fjord_consumergroup_lag{g0}")), 6.0);
    assert_eq!(value(&text, &format!("fjord_consumergroup_lag{g1}")), 0.0);
    assert_eq!(
        value(&text, "fjord_consumergroup_lag_sum{group=\"lagging\"}"),
        6.0
    );
    // More records raise the lag at the next scrape, with nothing recomputed in between.
    produce(b, "gauged", 1, 5);
    let text = metrics(&broker);
    assert_eq!(value(&text, &format!("fjord_consumergroup_lag{g1}")), 5.0);
    assert_eq!(
        value(&text, "fjord_consumergroup_lag_sum{group=\"lagging\"}"),
        11.0
    );
    assert_eq!(
        value(&text, "fjord_topic_messages_in_total{topic=\"gauged\"}"),
        18.0
    );

    // Deleting the topic removes its series: counters, partition gauges and group lag alike.
    ok(&fjord(b, &["topics", "delete", "gauged"], None));
    let deadline = Instant::now() + T;
    loop {
        let text = metrics(&broker);
        let left: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("topic=\"gauged\""))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series of the deleted topic remain:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn process_resources_and_build_info_are_exported() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let text = metrics(&broker);
    assert!(value(&text, "process_open_fds") >= 3.0, "{text}");
    assert!(value(&text, "process_max_fds") >= value(&text, "process_open_fds"));
    assert!(
        value(&text, "process_resident_memory_bytes") > 1_000_000.0,
        "{text}"
    );
    assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
    assert!(
        text.contains("# TYPE process_cpu_seconds counter\n"),
        "an OpenMetrics counter family is named without _total"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(
            |l| l.starts_with(&format!("fjord_build_info{{version=\"{version}\""))
                && l.ends_with(" 1")
        ),
        "{text}"
    );
    // The exposition stays valid OpenMetrics: one terminator, at the end.
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    assert_eq!(body.matches("# EOF").count(), 1, "{text}");
    assert!(body.trim_end().ends_with("# EOF"), "{text}");
}

#[test]
fn fetch_long_poll_wait_is_reported_apart_from_processing() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    ok(&fjord(b, &["topics", "create", "idle"], None));
    produce(b, "idle", 0, 1);
    // kcat reads the one record, then long-polls the empty partition (fetch.wait.max.ms=500) until -e
    // sees the end; every such fetch parks for about 500 ms.
    let out = kcat(
        &[
            "-b",
            b,
            "-C",
            "-t",
            "idle",
            "-o",
            "beginning",
            "-X",
            "fetch.wait.max.ms=500",
            "-e",
        ],
        None,
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A consumer that stays a little longer is sure to have parked at least one fetch.
    let _ = kcat(
        &[
            "-b",
            b,
            "-C",
            "-t",
            "idle",
            "-o",
            "end",
            "-X",
            "fetch.wait.max.ms=500",
        ],
        None,
        Duration::from_millis(2500),
    );
    let text = metrics(&broker);
    let waited = value(&text, "fjord_fetch_wait_seconds_sum");
    let processing = value(&text, "fjord_fetch_processing_seconds_sum");
    let fetches = value(&text, "fjord_fetch_wait_seconds_count");
    assert!(fetches >= 2.0, "{text}");
    assert!(waited >= 0.4, "no long-poll wait recorded:\n{text}");
    assert!(
        processing < waited / 2.0,
        "processing ({processing}s) includes the wait ({waited}s):\n{text}"
    );
    assert_eq!(
        value(&text, "fjord_fetch_processing_seconds_count"),
        fetches
    );
}

#[test]
fn health_and_ready_endpoints_answer() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let http = broker.http.as_deref().unwrap();
    let health = http_get(http, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let ready = http_get(http, "/ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.ends_with("ready\n"), "{ready}");
    let missing = http_get(http, "/nosuch");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

/// The sample Grafana dashboard (`deploy/grafana/fjord.json`) cannot rot: every metric its PromQL (panels and
/// template variables) names is in a real broker's /metrics once it has traffic, a consumer and a lagging
/// group, and every label it groups by (`by (...)`) is a label of a series its expression reads.
#[test]
fn the_grafana_dashboard_uses_only_series_the_broker_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/fjord.json"
    )))
    .expect("deploy/grafana/fjord.json is JSON");
    let mut exprs: Vec<String> = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 25, "{exprs:?}");

    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "graphed", "--partitions", "2"],
        None,
    ));
    produce(b, "graphed", 0, 10);
    let out = kcat(&["-b", b, "-C", "-t", "graphed", "-e", "-q"], None, T);
    assert!(out.status.success(), "kcat: {}", stderr(&out));
    ok(&fjord(
        b,
        &[
            "groups",
            "reset-offsets",
            "behind",
            "--topic",
            "graphed:0",
            "--to-offset",
            "4",
            "--execute",
        ],
        None,
    ));
    // A refused request, for the error counter.
    let _ = fjord(b, &["topics", "describe", "no-such-topic"], None);
    let text = metrics(&broker);

    // name -> label names, from the sample lines.
    let mut series: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("HTTP"))
    {
        let end = l.find(['{', ' ']).unwrap_or(l.len());
        let labels = series.entry(l[..end].to_string()).or_default();
        if let Some(rest) = l[end..].strip_prefix('{') {
            for pair in rest.split("\",") {
                if let Some((k, _)) = pair.split_once("=\"") {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let names: Vec<&str> = e
            .split(|c: char| !word(c))
            .filter(|w| w.starts_with("fjord_") || w.starts_with("process_"))
            .collect();
        assert!(!names.is_empty(), "no Fjord metric in `{e}`");
        let mut labels = std::collections::BTreeSet::new();
        for n in &names {
            let l = series
                .get(*n)
                .unwrap_or_else(|| panic!("`{n}` (in `{e}`) is not in /metrics:\n{text}"));
            labels.extend(l.iter().cloned());
            used.insert(n.to_string());
        }
        // Prometheus adds `instance` and `job` to every scraped series.
        labels.extend(["instance".to_string(), "job".to_string()]);
        for by in e.split("by (").skip(1) {
            let list = by.split(')').next().unwrap();
            for l in list.split(',').map(str::trim) {
                assert!(
                    labels.contains(l),
                    "`by ({list})` in `{e}`: no series has `{l}`"
                );
            }
        }
        for (i, _) in e.match_indices("=~\"") {
            let l: String = e[..i].chars().rev().take_while(|c| word(*c)).collect();
            let l: String = l.chars().rev().collect();
            assert!(labels.contains(&l), "`{l}=~` in `{e}`: no series has `{l}`");
        }
    }
    // The list: partition health, per-API rate and latency, per-topic traffic, lag, connections, log
    // size, fsync latency.
    for must in [
        "fjord_under_replicated_partitions",
        "fjord_offline_partitions",
        "fjord_requests_total",
        "fjord_request_latency_seconds_bucket",
        "fjord_topic_bytes_in_total",
        "fjord_topic_bytes_out_total",
        "fjord_topic_messages_in_total",
        "fjord_consumergroup_lag",
        "fjord_connections",
        "fjord_log_size_bytes",
        "fjord_log_flush_seconds_bucket",
    ] {
        assert!(used.contains(must), "the dashboard shows no `{must}`");
    }
}

/// `fjord_log_flush_seconds` counts the fsyncs of partition logs: with `log.flush.interval.ms` the flusher syncs
/// a produced partition, and the histogram's count and sum grow.
#[test]
fn log_fsyncs_are_timed() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("log.flush.interval.ms", "100")],
    );
    let b = broker.bootstrap.as_str();
    ok(&fjord(b, &["topics", "create", "synced"], None));
    let before = value(&metrics(&broker), "fjord_log_flush_seconds_count");
    produce(b, "synced", 0, 5);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&broker);
        let count = value(&text, "fjord_log_flush_seconds_count");
        if count > before {
            assert!(value(&text, "fjord_log_flush_seconds_sum") > 0.0, "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no fsync counted:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
