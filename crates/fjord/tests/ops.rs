//! End-to-end tests of the operations commands: `cluster info`, `configs describe|alter` (topics, brokers, the
//! cluster-wide broker defaults), `records delete`, `topics describe` by pattern and with the
//! under-replicated/unavailable filters, the broker's own messages reaching the user, and the commands that
//! must say what did not happen.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn produce(b: &str, topic: &str, partition: i32, n: usize) {
    let input: String = (0..n).map(|i| format!("m{i}\n")).collect();
    let p = partition.to_string();
    let out = kcat(
        &["-b", b, "-P", "-t", topic, "-p", &p],
        Some(input.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "kcat: {}", stderr(&out));
}

// -------------------------------------------------------------------------------------------------------
// Item 8: the broker's words reach the user

#[test]
fn the_brokers_refusal_reaches_the_user_unrewritten() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();

    let (code, _, err) = run_fjord(b, &["topics", "create", "huge", "--partitions", "100000"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Number of partitions 100000 exceeds the limit of 10000 per topic"),
        "{err}"
    );
    assert!(!err.contains("must be positive"), "{err}");

    ok(&fjord(b, &["topics", "create", "my.topic"], None));
    let (code, _, err) = run_fjord(b, &["topics", "create", "my_topic"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("collides with existing topic 'my.topic'"),
        "{err}"
    );
    assert!(!err.contains("not a valid topic name"), "{err}");

    // A config value the broker refuses while altering: its reason, not a bare code.
    let (code, _, err) = run_fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker-defaults",
            "--add-config",
            "num.partitions=4",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Cannot update these configs dynamically: num.partitions"),
        "{err}"
    );
}

// -------------------------------------------------------------------------------------------------------
// Item 12: say what did not happen

#[test]
fn topics_commands_say_what_they_did_not_do() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "kept", "--config", "retention.ms=60000"],
        None,
    ));

    // Nothing to change: a bad argument.
    let (code, _, err) = run_fjord(b, &["topics", "alter", "kept"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nothing to change on topic `kept`"), "{err}");

    // Deleting a config that is not set says so, and changes nothing (not even the other change asked for).
    let (code, _, err) = run_fjord(
        b,
        &[
            "topics",
            "alter",
            "kept",
            "--config",
            "retention.ms=120000",
            "--delete-config",
            "segment.ms",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot delete `segment.ms` of topic `kept`: not set on the topic"),
        "{err}"
    );
    assert!(err.contains("retention.ms"), "lists what is set: {err}");
    let d = fjord_json(b, &["topics", "describe", "kept", "--output", "json"]);
    assert_eq!(d[0]["configs"]["retention.ms"]["value"], "60000", "{d}");
    // An unknown config name is a bad argument.
    let (code, _, err) = run_fjord(
        b,
        &["topics", "alter", "kept", "--delete-config", "retension.ms"],
    );
    assert_eq!(code, Some(2), "{err}");

    // Deleting a present and a missing topic: which were deleted and which did not exist.
    ok(&fjord(b, &["topics", "create", "gone"], None));
    let (code, _, err) = run_fjord(b, &["topics", "delete", "gone", "nosuch"]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("Deleted topic gone."), "{err}");
    assert!(
        err.contains("1 of 2 topics deleted (gone); these do not exist: nosuch"),
        "{err}"
    );
    let list = ok(&fjord(b, &["topics", "list"], None));
    assert_eq!(list.lines().collect::<Vec<_>>(), ["kept"], "{list}");
    assert_eq!(
        run_fjord(b, &["topics", "delete", "kept", "kept"]).0,
        Some(2)
    );

    // Names starting with `__` are reserved, and no hint suggests creating one or a pattern.
    let (code, _, err) = run_fjord(b, &["topics", "create", "__mine"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("reserved"), "{err}");
    for name in ["__mine", "orders.*", "bad name"] {
        let (code, _, err) = run_fjord(b, &["topics", "describe", name]);
        assert_eq!(code, Some(4), "{name}: {err}");
        assert!(!err.contains("fjord topics create"), "{name}: {err}");
    }
    let (_, _, err) = run_fjord(b, &["topics", "describe", "plain"]);
    assert!(err.contains("fjord topics create plain"), "{err}");
}

#[test]
fn start_refuses_a_data_dir_and_an_explicit_log_dirs_together() {
    let dir = temp_dir();
    let out = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["start", "--data-dir"])
            .arg(dir.path().join("a"))
            .args(["--override"])
            .arg(format!("log.dirs={}", dir.path().join("b").display())),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("both say where the data lives"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
}

// -------------------------------------------------------------------------------------------------------
// Item 7: operations commands

#[test]
fn cluster_info_names_the_cluster_its_controller_and_brokers() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[("node.id", "7")]);
    let b = broker.bootstrap.as_str();
    let info = fjord_json(b, &["cluster", "info", "--output", "json"]);
    let id = info["cluster_id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 22, "a Kafka-style cluster id: {info}");
    assert_eq!(info["controller"], 7, "{info}");
    assert_eq!(
        info["brokers"],
        serde_json::json!([{"id": 7, "address": b, "rack": null, "controller": true}])
    );
    let text = ok(&fjord(b, &["cluster", "info"], None));
    assert!(text.contains(&format!("Cluster ID:  {id}")), "{text}");
    assert!(text.contains(&format!("Controller:  7 ({b})")), "{text}");
    assert_eq!(
        run_fjord(
            "127.0.0.1:9",
            &["cluster", "info", "--request-timeout-ms", "1000"]
        )
        .0,
        Some(3)
    );
}

#[test]
fn configs_describe_and_alter_topics_brokers_and_the_cluster_defaults() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("log.retention.ms", "604800000")],
    );
    let b = broker.bootstrap.as_str();
    ok(&fjord(b, &["topics", "create", "cfg"], None));

    // Topic: set, describe (only what is set by default), delete.
    ok(&fjord(
        b,
        &[
            "configs",
            "alter",
            "--topic",
            "cfg",
            "--add-config",
            "retention.ms=1000",
        ],
        None,
    ));
    let d = fjord_json(
        b,
        &["configs", "describe", "--topic", "cfg", "--output", "json"],
    );
    assert_eq!(
        d,
        serde_json::json!({"retention.ms": {"value": "1000", "source": "DYNAMIC_TOPIC_CONFIG", "read_only": false, "sensitive": false}})
    );
    let (code, _, err) = run_fjord(
        b,
        &[
            "configs",
            "alter",
            "--topic",
            "cfg",
            "--delete-config",
            "segment.ms",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not set there"), "{err}");
    ok(&fjord(
        b,
        &[
            "configs",
            "alter",
            "--topic",
            "cfg",
            "--delete-config",
            "retention.ms",
        ],
        None,
    ));
    let text = ok(&fjord(
        b,
        &["configs", "describe", "--topic", "cfg", "--all"],
        None,
    ));
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("retention.ms "))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["retention.ms", "604800000", "STATIC_BROKER_CONFIG"]);

    // Broker 1: its static configs, and which of them can change at runtime.
    let all = fjord_json(
        b,
        &[
            "configs", "describe", "--broker", "1", "--all", "--output", "json",
        ],
    );
    assert_eq!(all["log.retention.ms"]["value"], "604800000", "{all}");
    assert_eq!(all["log.retention.ms"]["source"], "STATIC_BROKER_CONFIG");
    assert_eq!(all["log.retention.ms"]["read_only"], false);
    assert_eq!(all["node.id"]["read_only"], true);

    // The cluster-wide default of a topic config, then broker 1's own value: each takes effect on the
    // topic (which has no override) and shows with its source.
    ok(&fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker-defaults",
            "--add-config",
            "log.retention.ms=3600000",
        ],
        None,
    ));
    let defaults = fjord_json(
        b,
        &[
            "configs",
            "describe",
            "--broker-defaults",
            "--output",
            "json",
        ],
    );
    assert_eq!(
        defaults["log.retention.ms"]["value"], "3600000",
        "{defaults}"
    );
    assert_eq!(
        defaults["log.retention.ms"]["source"],
        "DYNAMIC_DEFAULT_BROKER_CONFIG"
    );
    let topic_value = |b: &str| -> Value {
        fjord_json(
            b,
            &[
                "configs", "describe", "--topic", "cfg", "--all", "--output", "json",
            ],
        )["retention.ms"]
            .clone()
    };
    assert_eq!(topic_value(b)["value"], "3600000");
    ok(&fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker",
            "1",
            "--add-config",
            "log.retention.ms=7200000",
        ],
        None,
    ));
    let mine = fjord_json(
        b,
        &["configs", "describe", "--broker", "1", "--output", "json"],
    );
    assert_eq!(mine["log.retention.ms"]["value"], "7200000", "{mine}");
    assert_eq!(mine["log.retention.ms"]["source"], "DYNAMIC_BROKER_CONFIG");
    assert_eq!(topic_value(b)["value"], "7200000");
    // Per-broker and default values survive a restart (they live in the cluster metadata).
    let mut broker = broker;
    broker.stop();
    broker.restart();
    let b = broker.bootstrap.as_str();
    assert_eq!(topic_value(b)["value"], "7200000");
    ok(&fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker",
            "1",
            "--delete-config",
            "log.retention.ms",
        ],
        None,
    ));
    assert_eq!(topic_value(b)["value"], "3600000");
    // Not dynamic, unknown, or not set: refused with the reason.
    let (code, _, err) = run_fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker",
            "1",
            "--add-config",
            "log.segment.bytes=banana",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("log.segment.bytes"), "{err}");
    let (code, _, err) = run_fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker-defaults",
            "--delete-config",
            "log.segment.bytes",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not set there"), "{err}");
    let (code, _, err) = run_fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker",
            "9",
            "--add-config",
            "log.retention.ms=1",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Broker 9 is not registered in the cluster."),
        "{err}"
    );
    assert_eq!(
        run_fjord(b, &["configs", "alter", "--topic", "cfg"]).0,
        Some(2)
    );
    assert_eq!(run_fjord(b, &["configs", "describe"]).0, Some(2));
    assert_eq!(
        run_fjord(b, &["configs", "describe", "--topic", "nosuch"]).0,
        Some(4)
    );
}

#[test]
fn records_delete_moves_the_log_start_and_groups_count_lag_from_it() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "trim", "--partitions", "2"],
        None,
    ));
    produce(b, "trim", 0, 10);
    produce(b, "trim", 1, 4);
    let (code, text, err) = run_fjord(
        b,
        &[
            "records",
            "delete",
            "--topic",
            "trim",
            "--partition",
            "0",
            "--before-offset",
            "6",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["trim", "0", "6", "Deleted"]),
        "{text}"
    );
    let d = fjord_json(b, &["topics", "describe", "trim", "--output", "json"]);
    assert_eq!(d[0]["partitions"][0]["low_offset"], 6, "{d}");
    assert_eq!(d[0]["partitions"][1]["low_offset"], 0, "{d}");
    // kcat reads from the new start.
    let out = kcat(
        &[
            "-b",
            b,
            "-C",
            "-t",
            "trim",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o\n",
        ],
        None,
        Duration::from_secs(60),
    );
    let offsets = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(offsets.lines().next(), Some("6"), "{offsets}");

    // A group that committed on partition 1 only: partition 0's lag is counted from the log start (6), not 0.
    ok(&fjord(
        b,
        &[
            "groups",
            "reset-offsets",
            "trim-g",
            "--topic",
            "trim:1",
            "--to-offset",
            "1",
            "--execute",
        ],
        None,
    ));
    let g = fjord_json(b, &["groups", "describe", "trim-g", "--output", "json"]);
    let rows = g["partitions"].as_array().unwrap();
    assert_eq!(rows[0]["committed_offset"], Value::Null, "{g}");
    assert_eq!(rows[0]["lag"], 4, "{g}");
    assert_eq!(rows[1]["lag"], 3, "{g}");

    // `end` empties every partition; an offset past the end is refused with the reason.
    let (code, _, err) = run_fjord(
        b,
        &[
            "records",
            "delete",
            "--topic",
            "trim",
            "--partition",
            "1",
            "--before-offset",
            "99",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("beyond the end of the partition"), "{err}");
    ok(&fjord(
        b,
        &[
            "records",
            "delete",
            "--topic",
            "trim",
            "--before-offset",
            "end",
        ],
        None,
    ));
    let d = fjord_json(b, &["topics", "describe", "trim", "--output", "json"]);
    assert_eq!(d[0]["partitions"][0]["messages"], 0, "{d}");
    assert_eq!(d[0]["partitions"][1]["messages"], 0, "{d}");
    // Bad arguments and missing things.
    assert_eq!(
        run_fjord(
            b,
            &[
                "records",
                "delete",
                "--topic",
                "trim",
                "--before-offset",
                "-3"
            ]
        )
        .0,
        Some(2)
    );
    assert_eq!(
        run_fjord(
            b,
            &[
                "records",
                "delete",
                "--topic",
                "nosuch",
                "--before-offset",
                "1"
            ]
        )
        .0,
        Some(4)
    );
    let (code, _, err) = run_fjord(
        b,
        &[
            "records",
            "delete",
            "--topic",
            "trim",
            "--partition",
            "5",
            "--before-offset",
            "1",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("has no partition 5 (it has 2"), "{err}");
}

/// The log directory (of `dirs`) that holds `topic`-`partition`.
fn dir_of(dirs: &[&Path], topic: &str, partition: i32) -> std::path::PathBuf {
    let name = format!("{topic}-{partition}");
    dirs.iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("{name} in none of {dirs:?}"))
}

#[test]
fn topics_describe_selects_by_pattern_and_filters_unavailable_and_under_replicated_partitions() {
    let dir = temp_dir();
    let (a, bdir) = (dir.path().join("a"), dir.path().join("b"));
    let dirs = format!("{},{}", a.display(), bdir.display());
    let mut broker = BrokerProc::start(&a, &[("log.dirs", &dirs)]);
    let b = broker.bootstrap.clone();
    for t in ["orders-eu", "orders-us", "audit"] {
        ok(&fjord(
            &b,
            &["topics", "create", t, "--partitions", "2"],
            None,
        ));
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic"].as_str().unwrap().to_string())
            .collect()
    };
    let d = fjord_json(&b, &["topics", "describe", "orders-.*", "--output", "json"]);
    assert_eq!(names(&d), ["orders-eu", "orders-us"]);
    let d = fjord_json(
        &b,
        &[
            "topics",
            "describe",
            "audit",
            "orders-(eu|xx)",
            "--output",
            "json",
        ],
    );
    assert_eq!(names(&d), ["audit", "orders-eu"]);
    // A name of topic-name characters only is a name, never a pattern: `orders.eu` does not select orders-eu.
    assert_eq!(
        run_fjord(&b, &["topics", "describe", "orders.eu"]).0,
        Some(4)
    );
    let (code, _, err) = run_fjord(&b, &["topics", "describe", "nomatch.*"]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no topic matches `nomatch.*`"), "{err}");
    assert_eq!(
        run_fjord(&b, &["topics", "describe", "orders-("]).0,
        Some(2)
    );
    // Nothing is wrong yet.
    let (code, text, err) = run_fjord(&b, &["topics", "describe", "--unavailable-partitions"]);
    assert_eq!((code, text.as_str()), (Some(0), ""), "{err}");
    assert!(err.contains("No partition is unavailable"), "{err}");

    // Damage audit-1's partition.metadata while the broker is down: it comes back offline (its directory
    // untouched), and every other partition serves.
    broker.stop();
    let damaged = dir_of(&[&a, &bdir], "audit", 1);
    std::fs::write(damaged.join("partition.metadata"), b"garbage").unwrap();
    broker.restart();
    let b = broker.bootstrap.clone();
    let started = Instant::now();
    let (code, text, err) = run_fjord(&b, &["topics", "describe", "--unavailable-partitions"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with(
            "Topic: audit\tPartition: 1\tLeader: none\tReplicas: [1]\tIsr: [1]\tOffline: [1]"
        ),
        "{text}"
    );
    let (_, text, _) = run_fjord(&b, &["topics", "describe", "--under-replicated-partitions"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("Topic: audit\tPartition: 1\t"), "{text}");
    let d = fjord_json(
        &b,
        &[
            "topics",
            "describe",
            "au.*",
            "--unavailable-partitions",
            "--output",
            "json",
        ],
    );
    assert_eq!(d[0]["partitions"][0]["partition"], 1, "{d}");
    assert_eq!(d[0]["partitions"][0]["leader"], -1, "{d}");
    assert_eq!(d[0]["partitions"][0]["low_offset"], Value::Null, "{d}");
    // The full description still works, and does not wait on the partition nobody leads.
    let (code, text, err) = run_fjord(&b, &["topics", "describe", "audit"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.contains(
            "Partition: 1\tLeader: none\tReplicas: [1]\tIsr: [1]\tOffsets: -..-\tOffline: [1]"
        ),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

// -------------------------------------------------------------------------------------------------------
// Item 13: help

#[test]
fn every_operations_command_documents_every_flag_and_has_an_example() {
    for args in [
        vec!["topics", "create"],
        vec!["topics", "list"],
        vec!["topics", "describe"],
        vec!["topics", "alter"],
        vec!["topics", "delete"],
        vec!["groups", "list"],
        vec!["groups", "describe"],
        vec!["groups", "reset-offsets"],
        vec!["groups", "delete-offsets"],
        vec!["groups", "delete"],
        vec!["cluster", "info"],
        vec!["configs", "describe"],
        vec!["configs", "alter"],
        vec!["records", "delete"],
        vec!["start"],
        vec!["broker"],
    ] {
        // `fjord help <command>` and `<command> --help` alike.
        let mut help = vec!["help"];
        help.extend(&args);
        let out = ok(&fjord("127.0.0.1:9", &help, None));
        let cmd = args.join(" ");
        assert!(
            out.contains(&format!("Example: fjord {}", args[0])),
            "`fjord help {cmd}` has no example:\n{out}"
        );
        // Every argument and option has a description: on its line, or (clap's long help) indented below it.
        let lines: Vec<&str> = out.lines().collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        let mut in_options = false;
        let mut checked = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with(':') && !line.starts_with(' ') {
                in_options = *line == "Arguments:" || *line == "Options:";
                continue;
            }
            let l = line.trim_start();
            // clap indents an option with a short form by 2 and a long-only one by 6.
            if in_options
                && matches!(indent(line), 2 | 6)
                && (l.starts_with('-') || l.starts_with('<') || l.starts_with('['))
            {
                checked += 1;
                let below = lines
                    .get(i + 1)
                    .is_some_and(|n| !n.trim().is_empty() && indent(n) > indent(line));
                assert!(
                    l.contains("  ") || below,
                    "`fjord {cmd}`: `{l}` has no help text:\n{out}"
                );
            }
        }
        assert!(
            checked > 0,
            "`fjord help {cmd}` lists no options to check:\n{out}"
        );
    }
}

#[test]
fn a_dynamic_broker_default_takes_effect_on_existing_partitions() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();
    ok(&fjord(b, &["topics", "create", "capped"], None));
    let big = "x".repeat(2000) + "\n";
    let send = |b: &str| {
        kcat(
            &[
                "-b",
                b,
                "-P",
                "-t",
                "capped",
                "-p",
                "0",
                "-X",
                "message.max.bytes=100000",
            ],
            Some(big.as_bytes()),
            Duration::from_secs(60),
        )
    };
    assert!(send(b).status.success());
    // The cluster-wide default of max.message.bytes drops below the record: the existing partition refuses it.
    ok(&fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker-defaults",
            "--add-config",
            "message.max.bytes=1000",
        ],
        None,
    ));
    let out = send(b);
    assert!(
        !out.status.success() || stderr(&out).contains("too large"),
        "a 2000-byte record was accepted under message.max.bytes=1000: {}",
        stderr(&out)
    );
    let d = fjord_json(b, &["topics", "describe", "capped", "--output", "json"]);
    assert_eq!(d[0]["partitions"][0]["high_offset"], 1, "{d}");
    // Deleting the default restores the static one.
    ok(&fjord(
        b,
        &[
            "configs",
            "alter",
            "--broker-defaults",
            "--delete-config",
            "message.max.bytes",
        ],
        None,
    ));
    assert!(send(b).status.success());
    let d = fjord_json(b, &["topics", "describe", "capped", "--output", "json"]);
    assert_eq!(d[0]["partitions"][0]["high_offset"], 2, "{d}");
}

#[test]
fn commands_that_speak_the_protocol_themselves_refuse_security_settings_they_cannot_honour() {
    for args in [
        vec!["topics", "create", "t"],
        vec!["cluster", "info"],
        vec!["configs", "describe", "--topic", "t"],
        vec!["records", "delete", "--topic", "t", "--before-offset", "1"],
        vec!["groups", "delete-offsets", "g", "--topic", "t"],
    ] {
        let mut a = args.clone();
        a.extend(["-X", "security.protocol=SASL_SSL"]);
        let (code, _, err) = run_fjord("127.0.0.1:9", &a);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("PLAINTEXT only"), "{args:?}: {err}");
    }
}
