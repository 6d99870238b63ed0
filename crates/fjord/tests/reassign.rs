//! `fjord topics reassign` against `fjord start --brokers 3`: a move with a throttle, the listing while it runs,
//! the errors a user can make; and kafka-python's AdminClient (alter/list_partition_reassignments) against the
//! same cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// (leader, replicas, isr) of partition 0 of `topic` from `topics describe`.
fn placement(b: &str, topic: &str) -> (i64, Vec<i64>, Vec<i64>) {
    let d = fjord_json(b, &["topics", "describe", topic, "--output", "json"]);
    let p = &d[0]["partitions"][0];
    let ids = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    (
        p["leader"].as_i64().unwrap(),
        ids(&p["replicas"]),
        ids(&p["isr"]),
    )
}

/// Waits (bounded) until `topics reassign --list` no longer lists anything.
fn wait_listed_empty(b: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = fjord_json(b, &["topics", "reassign", "--list", "--output", "json"]);
        if listed.as_array().unwrap().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still in progress after 30 s: {listed}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn topics_reassign_moves_lists_and_explains_refusals() {
    let dir = temp_dir();
    let cluster = LocalCluster::start(&dir.path().join("data"), 3, &[]);
    let b = cluster.bootstrap.clone();
    ok(&fjord(
        &b,
        &[
            "topics",
            "create",
            "moves",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        None,
    ));
    let (_, before, _) = placement(&b, "moves");
    let target: Vec<i64> = (1..=3).filter(|x| !before.contains(x)).collect();
    let target_arg = format!("{},{}", target[0], target[1]);
    let input: String = (0..200).map(|i| format!("m{i}\n")).collect();
    ok(&fjord(&b, &["produce", "moves"], Some(input.as_bytes())));

    let (code, _, err) = run_fjord(
        &b,
        &[
            "topics",
            "reassign",
            "--topic",
            "moves",
            "--partition",
            "0",
            "--replicas",
            &target_arg,
            "--throttle",
            "100000000",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("started"), "{err}");
    assert!(
        err.contains("--delete-config follower.replication.throttled.rate"),
        "{err}"
    );
    let cfg = fjord_json(
        &b,
        &[
            "configs", "describe", "--topic", "moves", "--output", "json",
        ],
    );
    let throttled = cfg.to_string();
    assert!(
        throttled.contains(&format!("0:{}", target[0])),
        "the new replicas are throttled: {throttled}"
    );
    wait_listed_empty(&b);
    let (leader, replicas, mut isr) = placement(&b, "moves");
    isr.sort_unstable();
    let mut sorted = target.clone();
    sorted.sort_unstable();
    assert_eq!((leader, replicas, isr), (target[0], target.clone(), sorted));
    let (code, text, _) = run_fjord(&b, &["topics", "reassign", "--list"]);
    assert_eq!(code, Some(0));
    assert!(text.is_empty(), "{text}");
    // Every message is still there, read from the new leader.
    let out = ok(&fjord(
        &b,
        &[
            "consume",
            "moves",
            "--from-beginning",
            "--max-messages",
            "200",
            "--timeout-ms",
            "20000",
        ],
        None,
    ));
    assert_eq!(out.lines().count(), 200, "{out}");

    // Refusals, each with its exit code and a message naming the problem.
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--topic", "moves", "--partition", "0", "--cancel"],
            1,
            "nothing to cancel",
        ),
        (
            &["--topic", "nosuch", "--partition", "0", "--replicas", "1"],
            4,
            "does not exist",
        ),
        (
            &["--topic", "moves", "--partition", "7", "--replicas", "1"],
            1,
            "no partition 7",
        ),
        (
            &["--topic", "moves", "--partition", "0", "--replicas", "1,1"],
            2,
            "more than once",
        ),
        (
            &["--topic", "moves", "--partition", "0", "--replicas", "1,9"],
            2,
            "broker 9 is not in the cluster",
        ),
        (&["--topic", "moves", "--partition", "0"], 2, "--replicas"),
    ];
    for (args, want, text) in cases {
        let mut all = vec!["topics", "reassign"];
        all.extend_from_slice(args);
        let (code, _, err) = run_fjord(&b, &all);
        assert_eq!(code, Some(*want), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
    }

    // kafka-python's AdminClient moves it back to one broker.
    let back = before[0].to_string();
    let out = run_client(
        "kafka_python_reassign.py",
        &[&b, "moves", &back],
        Duration::from_secs(120),
    );
    assert!(out.lines().any(|l| l == "ok"), "{out}");
}
