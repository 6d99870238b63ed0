//! End-to-end tests of the `fjord` client commands against a real broker process.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(120);

#[test]
fn a_piped_file_comes_back_byte_for_byte_from_the_beginning() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    let mut input = Vec::new();
    for i in 0..10_000 {
        // Varied content: spaces, tabs, UTF-8 and an empty line now and then.
        if i % 1000 == 999 {
            input.extend_from_slice(b"\n");
        } else {
            input.extend_from_slice(
                format!("line {i}\twith text, ünïcödé and {}\n", "x".repeat(i % 50)).as_bytes(),
            );
        }
    }
    let path = dir.path().join("catalog.txt");
    std::fs::write(&path, &input).unwrap();
    ok(&fjord(
        b,
        &["topics", "create", "catalog", "--partitions", "1"],
        None,
    ));
    ok(&fjord(b, &["produce", "catalog"], Some(&input)));
    let out = fjord(
        b,
        &["consume", "catalog", "--from-beginning", "--exit-at-end"],
        None,
    );
    assert!(
        ok(&out).as_bytes() == input.as_slice(),
        "consumed bytes differ from the file"
    );
    assert!(
        stderr(&out).contains("Processed a total of 10000 messages"),
        "{}",
        stderr(&out)
    );
    // --input reads a file too, and --max-messages stops early.
    ok(&fjord(
        b,
        &["produce", "catalog", "--input", path.to_str().unwrap()],
        None,
    ));
    let out = ok(&fjord(
        b,
        &[
            "consume",
            "catalog",
            "--offset",
            "10000",
            "--max-messages",
            "3",
        ],
        None,
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        input
            .split(|c| *c == b'\n')
            .take(3)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn produce_shows_progress_on_a_terminal_and_stays_quiet_in_a_pipe() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let input: String = (0..200_000)
        .map(|i| format!("progress line {i}\n"))
        .collect();
    let file = dir.path().join("big.txt");
    std::fs::write(&file, &input).unwrap();
    // `script` runs the command on a pseudo-terminal, as a person at a shell would.
    let cmd = format!(
        "{} produce big --input {} --bootstrap-server {}",
        env!("CARGO_BIN_EXE_fjord"),
        file.display(),
        broker.bootstrap
    );
    let out = run_bounded(Command::new("script").args(["-qec", &cmd, "/dev/null"]), T);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("200000 messages delivered in"),
        "no final progress line on the terminal:\n{screen}"
    );
    // Without a terminal, nothing but errors goes to stderr.
    let out = fjord(
        &broker.bootstrap,
        &["produce", "big", "--input", file.to_str().unwrap()],
        None,
    );
    ok(&out);
    assert_eq!(stderr(&out), "");
    let d: serde_json::Value = serde_json::from_str(&ok(&fjord(
        &broker.bootstrap,
        &["topics", "describe", "big", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(d[0]["partitions"][0]["high_offset"], 400_000);
}

#[test]
fn json_output_carries_every_field_and_parses_back() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(
        b,
        &["topics", "create", "events", "--partitions", "2"],
        None,
    ));
    ok(&fjord(
        b,
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--header",
            "source=test",
            "--partition",
            "1",
        ],
        Some(b"k1:hello\nk2:world\n"),
    ));
    let out = ok(&fjord(
        b,
        &[
            "consume",
            "events",
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
        ],
        None,
    ));
    let docs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    for (i, (k, v)) in [("k1", "hello"), ("k2", "world")].iter().enumerate() {
        let d = &docs[i];
        assert_eq!(d["topic"], "events");
        assert_eq!(d["partition"], 1);
        assert_eq!(d["offset"], i as i64);
        assert_eq!(d["key"], *k);
        assert_eq!(d["value"], *v);
        assert_eq!(d["headers"][0]["key"], "source");
        assert_eq!(d["headers"][0]["value"], "test");
        assert_eq!(d["timestamp_type"], "CreateTime");
        assert!(d["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
    let text = ok(&fjord(
        b,
        &[
            "consume",
            "events",
            "-p",
            "1",
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
            "--print-offset",
            "--print-headers",
        ],
        None,
    ));
    assert_eq!(
        text,
        "Offset:0\tsource:test\tk1\thello\nOffset:1\tsource:test\tk2\tworld\n"
    );

    let listed: Vec<String> = serde_json::from_str(&ok(&fjord(
        b,
        &["topics", "list", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(listed, vec!["events".to_string()]);
    let described: serde_json::Value = serde_json::from_str(&ok(&fjord(
        b,
        &["topics", "describe", "events", "--output", "json"],
        None,
    )))
    .unwrap();
    let parts = described[0]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1]["high_offset"], 2);
    assert_eq!(parts[1]["leader"], 1);
    assert_eq!(parts[1]["isr"], serde_json::json!([1]));
}

#[test]
fn topics_create_describe_alter_delete() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(
        b,
        &[
            "topics",
            "create",
            "orders",
            "-p",
            "2",
            "--config",
            "retention.ms=3600000",
            "--config",
            "cleanup.policy=compact",
        ],
        None,
    ));
    let d = ok(&fjord(b, &["topics", "describe", "orders"], None));
    assert!(
        d.contains("Topic: orders\tPartitions: 2\tReplicationFactor: 1"),
        "{d}"
    );
    assert!(
        d.contains("cleanup.policy=compact") && d.contains("retention.ms=3600000"),
        "{d}"
    );
    assert!(
        d.contains(
            "Partition: 1\tLeader: 1\tReplicas: [1]\tIsr: [1]\tOffsets: 0..0\tLeaderEpoch: "
        ),
        "{d}"
    );

    ok(&fjord(
        b,
        &[
            "topics",
            "alter",
            "orders",
            "--partitions",
            "4",
            "--config",
            "retention.ms=60000",
            "--delete-config",
            "cleanup.policy",
        ],
        None,
    ));
    let d: serde_json::Value = serde_json::from_str(&ok(&fjord(
        b,
        &[
            "topics",
            "describe",
            "orders",
            "--output",
            "json",
            "--all-configs",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(d[0]["configs"]["retention.ms"]["value"], "60000");
    assert_eq!(d[0]["configs"]["retention.ms"]["source"], "topic");
    assert_eq!(d[0]["configs"]["cleanup.policy"]["value"], "delete");
    assert_eq!(d[0]["configs"]["cleanup.policy"]["source"], "default");

    ok(&fjord(b, &["topics", "delete", "orders"], None));
    assert_eq!(ok(&fjord(b, &["topics", "list"], None)), "");
    ok(&fjord(
        b,
        &["topics", "delete", "orders", "--if-exists"],
        None,
    ));
    ok(&fjord(
        b,
        &["topics", "create", "again", "--if-not-exists"],
        None,
    ));
    ok(&fjord(
        b,
        &["topics", "create", "again", "--if-not-exists"],
        None,
    ));
}

#[test]
fn failures_say_what_is_wrong_and_use_documented_exit_codes() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("auto.create.topics.enable", "false")],
    );
    let b = &broker.bootstrap;

    // 3: nobody listens (a port from a listener we close at once).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = fjord(
        &dead,
        &["topics", "list", "--request-timeout-ms", "2000"],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach a broker") && stderr(&out).contains("fjord start"),
        "{}",
        stderr(&out)
    );

    // 4: unknown topic, for consume, produce (auto-create off), describe and delete.
    let out = fjord(b, &["consume", "missing", "--max-messages", "1"], None);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("topic `missing` does not exist")
            && stderr(&out).contains("fjord topics create missing")
    );
    let out = fjord(b, &["produce", "missing"], Some(b"x\n"));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("auto.create.topics.enable"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fjord(b, &["topics", "describe", "missing"], None)
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        fjord(b, &["topics", "delete", "missing"], None)
            .status
            .code(),
        Some(4)
    );

    // 1: bad config names the key; duplicate topic; invalid name; shrinking partitions.
    let out = fjord(
        b,
        &["topics", "create", "t", "--config", "retention.ms=soon"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("retention.ms"), "{}", stderr(&out));
    let out = fjord(
        b,
        &["topics", "create", "t", "--config", "retension.ms=5"],
        None,
    );
    assert!(
        stderr(&out).contains("retension.ms") && stderr(&out).contains("unknown topic config"),
        "{}",
        stderr(&out)
    );
    ok(&fjord(b, &["topics", "create", "t", "-p", "2"], None));
    let out = fjord(b, &["topics", "create", "t"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    // The broker's own words reach the user.
    let out = fjord(b, &["topics", "create", "bad name"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Topic name \"bad name\" is illegal, it contains a character other than ASCII alphanumerics"),
        "{}",
        stderr(&out)
    );
    let out = fjord(b, &["topics", "alter", "t", "--partitions", "1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("can only be added"),
        "{}",
        stderr(&out)
    );
    let out = fjord(
        b,
        &["produce", "t", "--key-separator", ":"],
        Some(b"no separator here\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("line 1: no key separator"),
        "{}",
        stderr(&out)
    );

    // 2: bad arguments (clap).
    assert_eq!(fjord(b, &["consume"], None).status.code(), Some(2));
    // No stack traces anywhere.
    assert!(!stderr(&fjord(b, &["topics", "describe", "missing"], None)).contains("panicked"));
}

#[test]
fn every_command_has_help_with_examples() {
    for args in [
        vec!["--help"],
        vec!["topics", "create", "--help"],
        vec!["produce", "--help"],
        vec!["consume", "--help"],
        vec!["bench", "produce", "--help"],
        vec!["transactions", "list", "--help"],
        vec!["transactions", "describe", "--help"],
        vec!["transactions", "describe-producers", "--help"],
        vec!["connect", "standalone", "--help"],
        vec!["sql", "--help"],
        vec!["sql-server", "--help"],
    ] {
        let out = ok(&fjord("127.0.0.1:9", &args, None));
        assert!(
            out.contains("Example"),
            "`fjord {}` help has no example:\n{out}",
            args.join(" ")
        );
    }
}

#[test]
fn bench_commands_run_and_report_throughput_and_latency() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    let parse =
        |out: &Output| -> serde_json::Value { serde_json::from_str(ok(out).trim()).unwrap() };
    let p = parse(&fjord(
        b,
        &[
            "bench",
            "produce",
            "--messages",
            "20000",
            "--size",
            "100",
            "--acks",
            "all",
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(p["messages"], 20000);
    assert!(p["msgs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        p["details"]["latency"]["p99_ms"].as_f64().unwrap()
            >= p["details"]["latency"]["p50_ms"].as_f64().unwrap()
    );
    let c = parse(&fjord(
        b,
        &[
            "bench",
            "consume",
            "--messages",
            "20000",
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(c["messages"], 20000);
    assert_eq!(c["details"]["bytes"], 2_000_000);
    let e = parse(&fjord(
        b,
        &[
            "bench",
            "e2e",
            "--messages",
            "2000",
            "--rate",
            "2000",
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(e["messages"], 2000);
    assert!(e["details"]["latency"]["max_ms"].as_f64().unwrap() > 0.0);
    // The topic holds exactly what the benches produced.
    let d: serde_json::Value = serde_json::from_str(&ok(&fjord(
        b,
        &["topics", "describe", "fjord-bench", "--output", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(d[0]["partitions"][0]["high_offset"], 22000);
}

/// `fjord transactions list` as JSON: (transactional id, producer id, state) sorted by id.
fn listed(b: &str, extra: &[&str]) -> Vec<(String, i64, String)> {
    let mut args = vec!["transactions", "list", "--output", "json"];
    args.extend_from_slice(extra);
    let v: serde_json::Value = serde_json::from_str(&ok(&fjord(b, &args, None))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["transactional_id"].as_str().unwrap().to_string(),
                t["producer_id"].as_i64().unwrap(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn transactions_list_describe_and_describe_producers_show_open_and_committed_transactions() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[
            ("transaction.state.log.num.partitions", "4"),
            ("offsets.topic.num.partitions", "4"),
        ],
    );
    let b = &broker.bootstrap;
    ok(&fjord(
        b,
        &["topics", "create", "txn-admin", "-p", "2"],
        None,
    ));
    let out = run_client("txn_open.py", &[b, "txn-admin"], T);
    assert!(out.lines().any(|l| l == "open"), "{out}");

    // The commit's markers are written after EndTxn returns: wait (bounded) for CompleteCommit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = listed(b, &[]);
        if all
            .iter()
            .any(|t| t.0 == "txn-done" && t.2 == "CompleteCommit")
            || std::time::Instant::now() > deadline
        {
            break all;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ids: Vec<(&str, &str)> = all.iter().map(|t| (t.0.as_str(), t.2.as_str())).collect();
    assert_eq!(
        ids,
        [("txn-done", "CompleteCommit"), ("txn-open", "Ongoing")],
        "{all:?}"
    );
    let done_pid = all[0].1;
    let open_pid = all[1].1;
    assert!(done_pid >= 0 && open_pid >= 0 && done_pid != open_pid);

    // The console consumer: read_committed (the default) stops before the open transaction;
    // read_uncommitted shows it.
    let consume = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "consume",
            "txn-admin",
            "--partition",
            "0",
            "--from-beginning",
            "--exit-at-end",
        ];
        args.extend_from_slice(extra);
        ok(&fjord(b, &args, None))
            .lines()
            .map(String::from)
            .collect()
    };
    assert_eq!(consume(&[]), ["done-1", "done-2"]);
    assert_eq!(
        consume(&["--isolation-level", "read_committed"]),
        ["done-1", "done-2"]
    );
    assert_eq!(
        consume(&["--isolation-level", "read_uncommitted"]),
        ["done-1", "done-2", "open-1", "open-2", "open-3"]
    );

    // The table has Kafka's columns.
    let text = ok(&fjord(b, &["transactions", "list"], None));
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "TransactionalId",
            "Coordinator",
            "ProducerId",
            "TransactionState"
        ],
        "{text}"
    );
    // One broker: it coordinates every transactional id.
    let coordinator = lines[1][1].to_string();
    assert!(
        lines.contains(&vec![
            "txn-open",
            &coordinator,
            &open_pid.to_string(),
            "Ongoing"
        ]),
        "{text}"
    );
    assert!(
        lines.contains(&vec![
            "txn-done",
            &coordinator,
            &done_pid.to_string(),
            "CompleteCommit"
        ]),
        "{text}"
    );

    // Filters: state (any case), producer id, and how long a transaction has been open.
    let only_open = vec![("txn-open".to_string(), open_pid, "Ongoing".to_string())];
    assert_eq!(listed(b, &["--state", "ongoing"]), only_open);
    assert_eq!(
        listed(b, &["--state", "Ongoing,CompleteCommit"]).len(),
        2,
        "two states"
    );
    assert_eq!(listed(b, &["--state", "PrepareAbort"]), vec![]);
    assert_eq!(
        listed(b, &["--producer-id", &open_pid.to_string()]),
        only_open
    );
    assert_eq!(listed(b, &["--duration-ms", "0"]), only_open);
    assert_eq!(listed(b, &["--duration-ms", "600000"]), vec![]);

    // describe: the open transaction, its partition and how long it has been open.
    let text = ok(&fjord(
        b,
        &["transactions", "describe", "--transactional-id", "txn-open"],
        None,
    ));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "CoordinatorId",
            "TransactionalId",
            "ProducerId",
            "ProducerEpoch",
            "TransactionState",
            "TransactionTimeoutMs",
            "CurrentTransactionStartTimeMs",
            "TransactionDurationMs",
            "TopicPartitions"
        ],
        "{text}"
    );
    let row = &rows[1];
    assert_eq!(
        row[..3],
        [coordinator.as_str(), "txn-open", &open_pid.to_string()],
        "{text}"
    );
    assert_eq!(row[4..6], ["Ongoing", "600000"], "{text}");
    assert!(row[6].parse::<i64>().unwrap() > 0, "{text}");
    assert!(row[7].parse::<i64>().unwrap() >= 0, "{text}");
    assert_eq!(row[8], "txn-admin-0", "{text}");
    let d: serde_json::Value = serde_json::from_str(&ok(&fjord(
        b,
        &[
            "transactions",
            "describe",
            "--transactional-id",
            "txn-open",
            "--output",
            "json",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(d["state"], "Ongoing");
    assert_eq!(d["producer_id"], open_pid);
    assert_eq!(
        d["topic_partitions"],
        serde_json::json!([{"topic": "txn-admin", "partition": 0}])
    );

    // describe-producers: both producers wrote partition 0; only txn-open has an open transaction, which
    // starts after txn-done's two messages and commit marker.
    let text = ok(&fjord(
        b,
        &[
            "transactions",
            "describe-producers",
            "--topic",
            "txn-admin",
            "--partition",
            "0",
        ],
        None,
    ));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ProducerId",
            "ProducerEpoch",
            "LatestCoordinatorEpoch",
            "LastSequence",
            "LastTimestamp",
            "CurrentTransactionStartOffset"
        ],
        "{text}"
    );
    let open_row = rows
        .iter()
        .find(|r| r[0] == open_pid.to_string())
        .unwrap_or_else(|| panic!("no row for producer {open_pid}:\n{text}"));
    assert_eq!(open_row[3], "2", "last sequence of open-1..open-3: {text}");
    assert!(open_row[5].parse::<i64>().unwrap() >= 0, "{text}");
    let done_row = rows
        .iter()
        .find(|r| r[0] == done_pid.to_string())
        .unwrap_or_else(|| panic!("no row for producer {done_pid}:\n{text}"));
    assert_eq!(done_row[5], "None", "{text}");
    let p: serde_json::Value = serde_json::from_str(&ok(&fjord(
        b,
        &[
            "transactions",
            "describe-producers",
            "--topic",
            "txn-admin",
            "--partition",
            "0",
            "--output",
            "json",
        ],
        None,
    )))
    .unwrap();
    let open = p
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["producer_id"] == open_pid)
        .unwrap();
    assert_eq!(open["current_transaction_start_offset"], 3, "{p}");
    // Partition 1 saw no producer: only the header.
    let text = ok(&fjord(
        b,
        &[
            "transactions",
            "describe-producers",
            "--topic",
            "txn-admin",
            "--partition",
            "1",
        ],
        None,
    ));
    assert_eq!(text.lines().count(), 1, "{text}");

    // Failures: unknown transactional id (1), unknown topic (4), unknown partition (1), no broker (3).
    let out = fjord(
        b,
        &[
            "transactions",
            "describe",
            "--transactional-id",
            "no-such-id",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("transactional id `no-such-id` does not exist")
            && stderr(&out).contains("fjord transactions list"),
        "{}",
        stderr(&out)
    );
    let out = fjord(
        b,
        &[
            "transactions",
            "describe-producers",
            "--topic",
            "missing",
            "--partition",
            "0",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let out = fjord(
        b,
        &[
            "transactions",
            "describe-producers",
            "--topic",
            "txn-admin",
            "--partition",
            "7",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no partition 7"),
        "{}",
        stderr(&out)
    );
    let out = fjord(
        b,
        &["transactions", "list", "-X", "security.protocol=ssl"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("takes no -X"), "{}", stderr(&out));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = fjord(
        &dead,
        &["transactions", "list", "--request-timeout-ms", "2000"],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach a broker"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));
}

#[test]
fn output_piped_into_a_reader_that_stops_early_ends_quietly() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    for i in 0..40 {
        ok(&fjord(
            b,
            &["topics", "create", &format!("piped-{i}")],
            None,
        ));
    }
    // The read end of fjord's stdout is closed right after the spawn, long before fjord has asked the broker
    // for the list (a reader such as `head` that has already stopped), so its first write hits a closed pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["topics", "list", "--bootstrap-server", b])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = run_bounded_child(child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked"),
        "a broken pipe must not panic: {err}"
    );
    assert_eq!(
        out.status.code(),
        Some(141),
        "ends like a tool stopped by SIGPIPE: {:?}, {err}",
        out.status
    );
}

/// Waits (bounded) for a spawned child and collects its remaining output.
fn run_bounded_child(mut child: std::process::Child, timeout: Duration) -> Output {
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_second_broker_on_a_running_brokers_log_dir_exits_naming_the_dir_and_the_pid() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let running = BrokerProc::start(&data, &[]);
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .arg("broker")
            .args(["--override", "listeners=PLAINTEXT://127.0.0.1:0"])
            .args(["--override", &format!("log.dirs={}", data.display())]),
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&data.display().to_string()), "{err}");
    let pid = running.pid().expect("running");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("fjord ready"),
        "it never served"
    );
}

#[test]
fn broker_takes_its_properties_file_as_kafka_server_start_does() {
    let dir = temp_dir();
    let file = dir.path().join("server.properties");
    std::fs::write(
        &file,
        format!(
            "listeners=PLAINTEXT://127.0.0.1:0\nlog.dirs={}\nnum.partitions=zero\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // `kafka-server-start.sh server.properties`: the file is read (its bad value is named).
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .arg("broker")
            .arg(&file),
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("num.partitions"), "{err}");
    // Given twice, it is refused.
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .arg("broker")
            .arg(&file)
            .arg("--config")
            .arg(&file),
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--config"), "{err}");
}
