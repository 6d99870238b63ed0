//! `fjord topics reassign` against `fjord start --brokers 3`: a move with a throttle, the listing while it runs,
//! the errors a user can make; and kafka-python's AdminClient (alter/list_partition_reassignments) against the
//! same cluster.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `fjord start --brokers 3` on free ports; returns the child and the bootstrap list.
fn start_cluster(data: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["start", "--brokers", "3", "--data-dir"])
        .arg(data)
        .args([
            "--override",
            "listeners=PLAINTEXT://127.0.0.1:0",
            "--override",
            "metrics.listener=127.0.0.1:0",
        ])
        .env("FJORD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fjord start --brokers 3 did not become ready");
        };
        if line.starts_with("fjord ready ") {
            let bootstrap = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bootstrap="))
                .expect("bootstrap= in the ready line")
                .to_string();
            return (child, bootstrap);
        }
    }
}

/// Kills the cluster process when the test ends, passing or not.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(b: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = fjord(b, args, None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(b: &str, args: &[&str]) -> Value {
    let text = ok(&fjord(b, args, None));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// (leader, replicas, isr) of partition 0 of `topic` from `topics describe`.
fn placement(b: &str, topic: &str) -> (i64, Vec<i64>, Vec<i64>) {
    let d = json(b, &["topics", "describe", topic, "--output", "json"]);
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
        let listed = json(b, &["topics", "reassign", "--list", "--output", "json"]);
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
    let (child, b) = start_cluster(&dir.path().join("data"));
    let _guard = Guard(child);
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

    let (code, _, err) = run(
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
    let cfg = json(
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
    let (code, text, _) = run(&b, &["topics", "reassign", "--list"]);
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
        let (code, _, err) = run(&b, &all);
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
