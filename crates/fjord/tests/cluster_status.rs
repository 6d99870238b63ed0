//! `fjord start --brokers 3` (three brokers in one process) and `fjord cluster status` against it: what start
//! prints, a healthy cluster described in text and JSON, a clean Ctrl-C, and a restart from the same data
//! directory that finds its controllers again.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn status_json(bootstrap: &str) -> (Option<i32>, serde_json::Value) {
    let out = fjord(bootstrap, &["cluster", "status", "--output", "json"], None);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out.status.code(), v)
}

#[test]
fn start_brokers_3_runs_a_healthy_cluster_that_status_describes_and_ctrl_c_stops() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let (mut child, lines, ready) = start_cluster(&data, 3, &[]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let id = i + 1;
        assert_eq!(field(line, "node="), id.to_string(), "{line}");
        assert_eq!(
            field(line, "data="),
            data.join(format!("broker-{id}")).display().to_string()
        );
        assert!(
            field(line, "controller=").starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(field(line, "http=").starts_with("127.0.0.1:"), "{line}");
    }
    let bootstrap = field(&ready, "bootstrap=").to_string();
    let kafka: Vec<&str> = lines.iter().map(|l| field(l, "kafka=")).collect();
    assert_eq!(bootstrap, kafka.join(","));
    assert_eq!(field(&ready, "kafka="), kafka[0]);
    assert_eq!(field(&ready, "data="), data.display().to_string());
    assert!(data.join("controller.quorum.voters").exists());
    // Every broker serves its own /metrics.
    for line in &lines {
        assert!(http_get(field(line, "http="), "/metrics").contains("fjord_build_info"));
    }

    ok(&fjord(
        &bootstrap,
        &[
            "topics",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
        None,
    ));
    // Followers join the ISR at once, but give them a bounded moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, status) = loop {
        let (code, status) = status_json(&bootstrap);
        if status["partitions"]["under_replicated"]
            .as_array()
            .is_some_and(|u| u.is_empty())
            || Instant::now() > deadline
        {
            break (code, status);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status["healthy"], true, "{status}");
    let states: Vec<(i64, &str)> = status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_i64().unwrap(), b["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![(1, "live"), (2, "live"), (3, "live")]);
    let quorum = &status["quorum"];
    let leader = quorum["leader"].as_i64().expect("a quorum leader");
    assert!((1..=3).contains(&leader), "{quorum}");
    assert!(quorum["high_watermark"].as_i64().unwrap() > 0);
    let voters: Vec<i64> = quorum["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 3]);
    assert!(status["partitions"]["total"].as_u64().unwrap() >= 3);
    assert_eq!(status["partitions"]["offline"], serde_json::json!([]));

    let text = ok(&fjord(&bootstrap, &["cluster", "status"], None));
    assert!(text.contains("Brokers:     3 live of 3"), "{text}");
    assert!(
        text.contains(&format!("Controllers: leader {leader}, epoch ")),
        "{text}"
    );
    assert!(text.contains("0 under-replicated, 0 offline"), "{text}");
    // `cluster info` keeps working against a cluster.
    let info = ok(&fjord(
        &bootstrap,
        &["cluster", "info", "--output", "json"],
        None,
    ));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&info).unwrap()["brokers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    interrupt(&mut child);
    for id in 1..=3 {
        assert!(
            data.join(format!("broker-{id}/__meta")).exists(),
            "broker {id} kept its metadata"
        );
    }
    // The same data directory starts the same cluster again (its controllers at the recorded ports).
    let (mut child, _, ready) = start_cluster(&data, 3, &[]);
    let bootstrap = field(&ready, "bootstrap=").to_string();
    let listed = ok(&fjord(&bootstrap, &["topics", "list"], None));
    assert!(listed.lines().any(|l| l == "orders"), "{listed}");
    interrupt(&mut child);
}

#[test]
fn cluster_status_of_a_single_broker_is_healthy_and_unreachable_is_exit_3() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[("node.id", "4")]);
    let (code, status) = status_json(&broker.bootstrap);
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status["quorum"]["leader"], 4, "{status}");
    assert_eq!(status["brokers"][0]["state"], "live");
    let out = fjord(
        "127.0.0.1:9",
        &["cluster", "status", "--request-timeout-ms", "1000"],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}
