//! The third-party client suites of the single-broker tests, run against a three-broker cluster
//! (`fjord start --brokers 3`) where every topic the scripts create has three replicas (`FJORD_TEST_RF=3`,
//! `default.replication.factor=3`, `min.insync.replicas=2`) and the group and transaction coordinators'
//! internal topics are replicated too. Partition leaders, coordinators and the broker a client bootstraps from
//! are spread over different brokers, so this exercises what a single broker never does: clients following
//! leaders across brokers, a transaction coordinator writing markers to partitions led elsewhere
//! (WriteTxnMarkers), group coordinators on another broker than the data.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

/// Every broker's overrides: replicated topics and coordinators, quick group joins and transaction timeouts.
const CLUSTER: &[&str] = &[
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "offsets.topic.replication.factor=3",
    "offsets.topic.num.partitions=4",
    "transaction.state.log.replication.factor=3",
    "transaction.state.log.min.isr=2",
    "transaction.state.log.num.partitions=4",
    "group.initial.rebalance.delay.ms=0",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
];

/// A running `fjord start --brokers 3`, stopped with Ctrl-C at the end (and killed if the test fails first).
struct Running {
    cluster: LocalCluster,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Running {
        let dir = temp_dir();
        let cluster = LocalCluster::start(&dir.path().join("data"), 3, CLUSTER);
        assert_eq!(cluster.brokers.len(), 3, "{:?}", cluster.brokers);
        Running {
            bootstrap: cluster.bootstrap.clone(),
            cluster,
            _dir: dir,
        }
    }

    fn python(&self, script: &str, extra: &[&str]) {
        let mut args = vec![self.bootstrap.as_str()];
        args.extend_from_slice(extra);
        let out = run_bounded(
            Command::new(python())
                .arg(workspace_root().join("tests/clients").join(script))
                .args(&args)
                .env("FJORD_TEST_RF", "3"),
            CLIENT_TIMEOUT,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.lines().any(|l| l.starts_with("ok")),
            "{script} against three brokers ({}):\n{text}",
            out.status
        );
    }

    fn kafkajs(&self, script: &str) {
        let out = run_bounded(
            Command::new("node")
                .arg(workspace_root().join("tests/clients/kafkajs").join(script))
                .arg(&self.bootstrap),
            CLIENT_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "kafkajs {script} against three brokers: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every partition of `topic` has three replicas, all in sync, as `fjord topics describe` shows them.
    fn assert_replicated(&self, topic: &str) {
        let out = ok(&fjord(
            &self.bootstrap,
            &["topics", "describe", topic, "--output", "json"],
            None,
        ));
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let parts = v[0]["partitions"]
            .as_array()
            .unwrap_or_else(|| panic!("no partitions: {v}"));
        assert!(!parts.is_empty(), "{v}");
        for p in parts {
            let n = |k: &str| p[k].as_array().map_or(0, Vec::len);
            assert_eq!((n("replicas"), n("isr")), (3, 3), "{topic}: {p}");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A passing test also proves a clean Ctrl-C; a failing one leaves the kill to LocalCluster.
        if !std::thread::panicking() {
            self.cluster.stop();
        }
    }
}

#[test]
fn producers_and_consumers_of_three_clients_work_against_three_brokers() {
    let c = Running::start();
    c.python("confluent_roundtrip.py", &[]);
    c.assert_replicated("rt-zstd");
    c.python("idempotent_producer.py", &[]);
    c.assert_replicated("idem");
    c.python("kafka_python_roundtrip.py", &[]);
    c.kafkajs("roundtrip.js");
    c.assert_replicated("js-topic");
}

#[test]
fn consumer_groups_share_and_rebalance_partitions_on_three_brokers() {
    let c = Running::start();
    c.python("group_split_confluent.py", &[]);
    c.python("cooperative_sticky.py", &[]);
    c.python("group_consumer_protocol.py", &[]);
    c.assert_replicated("__consumer_offsets");
}

#[test]
fn transactions_of_three_clients_commit_and_abort_across_three_brokers() {
    let c = Running::start();
    c.python("txn_commit_abort.py", &[]);
    c.python("kafka_python_transactions.py", &[]);
    c.kafkajs("transactions.js");
    c.assert_replicated("__transaction_state");
    c.assert_replicated("kp-txn");
}
