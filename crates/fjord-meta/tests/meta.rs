//! End-to-end tests of `Meta`: bootstrap, durability across restarts and crashes, apply semantics.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use fjord_meta::{BrokerInfo, Command, CommandResult, Meta, PartitionMeta, NO_LEADER};
use uuid::Uuid;

/// Bound on every wait in these tests, generous for a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(30);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

fn broker(id: i32, port: i32) -> BrokerInfo {
    BrokerInfo {
        id,
        host: "localhost".into(),
        port,
        rack: None,
    }
}

async fn open(dir: &Path) -> Meta {
    bounded(Meta::open(dir, 1, broker(1, 9092)))
        .await
        .expect("open")
}

fn create_topic(name: &str, partitions: usize) -> Command {
    Command::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        assignments: vec![vec![1]; partitions],
        configs: BTreeMap::new(),
        internal: false,
    }
}

async fn propose(meta: &Meta, cmd: Command) -> CommandResult {
    bounded(meta.propose(cmd)).await.expect("propose")
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn given_empty_dir_when_open_should_lead_and_register_broker() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    let state = meta.state();
    assert_eq!(
        state.cluster_id.len(),
        22,
        "cluster id {:?}",
        state.cluster_id
    );
    assert_eq!(state.controller_id, 1);
    assert_eq!(state.brokers.get(&1), Some(&broker(1, 9092)));
    assert!(state.topics.is_empty());
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_created_topic_when_reopened_should_keep_topic_and_cluster_id() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    let cluster_id = meta.state().cluster_id.clone();
    assert_eq!(
        propose(&meta, create_topic("orders", 3)).await,
        CommandResult::Ok
    );
    let before = meta.state().topics["orders"].clone();
    bounded(meta.shutdown()).await.unwrap();

    let meta = open(dir.path()).await;
    let state = meta.state();
    assert_eq!(state.cluster_id, cluster_id);
    assert_eq!(state.topics["orders"], before);
    assert_eq!(
        state.topic_by_id(&before.id).map(|t| t.name.as_str()),
        Some("orders")
    );
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_new_broker_address_when_reopened_should_reregister() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    bounded(meta.shutdown()).await.unwrap();
    let meta = bounded(Meta::open(dir.path(), 1, broker(1, 19092)))
        .await
        .unwrap();
    assert_eq!(meta.state().brokers[&1].port, 19092);
    bounded(meta.shutdown()).await.unwrap();
}

/// Runs `f` on a runtime of its own and then drops that runtime without any shutdown: every raft
/// task dies mid-flight, as with kill -9 (the page cache survives, but acknowledged writes were
/// fsynced anyway).
fn crash_after<F, Fut>(dir: &Path, f: F)
where
    F: FnOnce(Meta) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let meta = open(dir).await;
        f(meta).await;
    });
    rt.shutdown_background();
}

#[test]
fn given_crash_without_shutdown_when_reopened_should_keep_committed_commands() {
    let dir = tempfile::tempdir().unwrap();
    crash_after(dir.path(), |meta| async move {
        assert_eq!(
            propose(&meta, create_topic("a", 1)).await,
            CommandResult::Ok
        );
        assert_eq!(
            propose(&meta, create_topic("b", 2)).await,
            CommandResult::Ok
        );
        assert_eq!(
            propose(&meta, Command::DeleteTopic { name: "a".into() }).await,
            CommandResult::Ok
        );
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let meta = open(dir.path()).await;
        let state = meta.state();
        assert!(!state.topics.contains_key("a"));
        assert_eq!(state.topics["b"].partitions.len(), 2);
        bounded(meta.shutdown()).await.unwrap();
    });
}

#[tokio::test]
async fn given_torn_log_tail_when_reopened_should_keep_committed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    assert_eq!(
        propose(&meta, create_topic("kept", 1)).await,
        CommandResult::Ok
    );
    bounded(meta.shutdown()).await.unwrap();

    // A record cut off mid-write: a plausible length, a checksum, and too few payload bytes.
    use std::io::Write;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("raft.log"))
        .unwrap();
    log.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"'])
        .unwrap();
    drop(log);

    let meta = open(dir.path()).await;
    assert!(meta.state().topics.contains_key("kept"));
    // And the store still accepts writes after recovery.
    assert_eq!(
        propose(&meta, create_topic("after", 1)).await,
        CommandResult::Ok
    );
    bounded(meta.shutdown()).await.unwrap();
    let meta = open(dir.path()).await;
    assert!(meta.state().topics.contains_key("after"));
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_existing_topic_when_created_again_should_fail_with_topic_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    assert_eq!(
        propose(&meta, create_topic("t", 1)).await,
        CommandResult::Ok
    );
    let id = meta.state().topics["t"].id;
    assert_eq!(
        propose(&meta, create_topic("t", 5)).await,
        CommandResult::TopicAlreadyExists
    );
    assert_eq!(meta.state().topics["t"].id, id, "the first creation wins");
    assert_eq!(meta.state().topics["t"].partitions.len(), 1);
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_topic_when_deleted_should_be_gone_and_second_delete_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    assert_eq!(
        propose(&meta, create_topic("t", 1)).await,
        CommandResult::Ok
    );
    assert_eq!(
        propose(&meta, Command::DeleteTopic { name: "t".into() }).await,
        CommandResult::Ok
    );
    assert!(meta.state().topics.is_empty());
    assert_eq!(
        propose(&meta, Command::DeleteTopic { name: "t".into() }).await,
        CommandResult::UnknownTopic
    );
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_topic_when_configs_altered_should_set_delete_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    let mut rx = meta.subscribe();
    assert_eq!(
        propose(&meta, create_topic("t", 1)).await,
        CommandResult::Ok
    );
    let alter = |set: &[(&str, &str)], delete: &[&str], replace_all| Command::AlterTopicConfigs {
        name: "t".into(),
        set: map(set),
        delete: delete.iter().map(|s| s.to_string()).collect(),
        replace_all,
    };

    let cmd = alter(
        &[("retention.ms", "1000"), ("cleanup.policy", "compact")],
        &[],
        false,
    );
    assert_eq!(propose(&meta, cmd).await, CommandResult::Ok);
    assert_eq!(
        meta.state().topics["t"].configs,
        map(&[("retention.ms", "1000"), ("cleanup.policy", "compact")])
    );

    assert_eq!(
        propose(&meta, alter(&[], &["retention.ms"], false)).await,
        CommandResult::Ok
    );
    assert_eq!(
        meta.state().topics["t"].configs,
        map(&[("cleanup.policy", "compact")])
    );

    assert_eq!(
        propose(&meta, alter(&[("segment.bytes", "1024")], &[], true)).await,
        CommandResult::Ok
    );
    assert_eq!(
        meta.state().topics["t"].configs,
        map(&[("segment.bytes", "1024")])
    );

    let unknown = Command::AlterTopicConfigs {
        name: "nope".into(),
        set: map(&[]),
        delete: vec![],
        replace_all: false,
    };
    assert_eq!(propose(&meta, unknown).await, CommandResult::UnknownTopic);

    // Subscribers see the applied state.
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update().topics["t"].configs,
        map(&[("segment.bytes", "1024")])
    );
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_broker_configs_when_altered_should_set_delete_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    let cmd = Command::AlterBrokerConfigs {
        set: map(&[("a", "1"), ("b", "2")]),
        delete: vec![],
        replace_all: false,
    };
    assert_eq!(propose(&meta, cmd).await, CommandResult::Ok);
    let cmd = Command::AlterBrokerConfigs {
        set: map(&[("c", "3")]),
        delete: vec!["a".into()],
        replace_all: false,
    };
    assert_eq!(propose(&meta, cmd).await, CommandResult::Ok);
    assert_eq!(meta.state().broker_configs, map(&[("b", "2"), ("c", "3")]));
    let cmd = Command::AlterBrokerConfigs {
        set: map(&[("d", "4")]),
        delete: vec![],
        replace_all: true,
    };
    assert_eq!(propose(&meta, cmd).await, CommandResult::Ok);
    assert_eq!(meta.state().broker_configs, map(&[("d", "4")]));
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_topic_when_partitions_created_should_append_with_first_live_replica_leading() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    assert_eq!(
        propose(&meta, create_topic("t", 2)).await,
        CommandResult::Ok
    );
    // Only broker 1 (this node) is registered, hence live.
    let cmd = Command::CreatePartitions {
        name: "t".into(),
        new_assignments: vec![vec![1, 2], vec![2, 1], vec![3]],
    };
    assert_eq!(propose(&meta, cmd).await, CommandResult::Ok);
    let parts = meta.state().topics["t"].partitions.clone();
    assert_eq!(parts.len(), 5);
    assert_eq!(
        parts[3],
        PartitionMeta {
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![2, 1],
            isr: vec![2, 1],
            offline: Vec::new()
        }
    );
    assert_eq!(
        parts[4],
        PartitionMeta {
            leader: NO_LEADER,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![3],
            isr: vec![3],
            offline: Vec::new()
        }
    );
    // Broker 3 registers: it is live and leads its leaderless partition.
    assert_eq!(
        propose(&meta, Command::RegisterBroker(broker(3, 9095))).await,
        CommandResult::Ok
    );
    let p4 = meta.state().topics["t"].partitions[4].clone();
    assert_eq!((p4.leader, p4.leader_epoch, p4.partition_epoch), (3, 1, 1));

    let none = Command::CreatePartitions {
        name: "t".into(),
        new_assignments: vec![],
    };
    assert!(matches!(
        propose(&meta, none).await,
        CommandResult::InvalidPartitions(_)
    ));
    let unknown = Command::CreatePartitions {
        name: "x".into(),
        new_assignments: vec![vec![1]],
    };
    assert_eq!(propose(&meta, unknown).await, CommandResult::UnknownTopic);
    assert_eq!(meta.state().topics["t"].partitions.len(), 5);
    bounded(meta.shutdown()).await.unwrap();
}

#[tokio::test]
async fn given_shut_down_meta_when_proposing_should_fail_with_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    bounded(meta.shutdown()).await.unwrap();
    bounded(meta.shutdown()).await.unwrap();
    assert!(matches!(
        bounded(meta.propose(create_topic("t", 1))).await,
        Err(fjord_meta::Error::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_many_commands_when_snapshotted_and_purged_should_reopen_to_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    for i in 0..1500 {
        let cmd = if i % 3 == 2 {
            Command::DeleteTopic {
                name: format!("t{}", i - 1),
            }
        } else {
            create_topic(&format!("t{i}"), 1 + i % 4)
        };
        assert_eq!(propose(&meta, cmd).await, CommandResult::Ok, "command {i}");
    }
    let before = meta.state();
    // 1000 creations, 500 of them deleted again.
    assert_eq!(before.topics.len(), 500);

    // Snapshot and purge run in the background after the threshold; wait for both.
    wait_for_snapshot_and_purge(dir.path()).await;
    bounded(meta.shutdown()).await.unwrap();

    let purged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("purged.json")).unwrap()).unwrap();
    assert!(
        purged["index"].as_u64().unwrap() >= 800,
        "purged up to {purged}"
    );

    let meta = open(dir.path()).await;
    assert_eq!(*meta.state(), *before);
    bounded(meta.shutdown()).await.unwrap();
}

/// Waits until the snapshot and purge files exist; the public API exposes no raft metrics, and
/// both happen in the background after the snapshot threshold is crossed.
async fn wait_for_snapshot_and_purge(dir: &Path) {
    bounded(async {
        while !(dir.join("snapshot.json").exists() && dir.join("purged.json").exists()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn given_oversized_command_when_proposed_should_be_refused_without_change() {
    let dir = tempfile::tempdir().unwrap();
    let meta = open(dir.path()).await;
    let huge = Command::CreateTopic {
        name: "huge".into(),
        id: Uuid::new_v4(),
        assignments: vec![vec![1]],
        configs: map(&[("cleanup.policy", "x".repeat(2 << 20).as_str())]),
        internal: false,
    };
    match bounded(meta.propose(huge)).await {
        Err(fjord_meta::Error::Refused(msg)) => {
            assert!(msg.contains("byte limit"), "{msg}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(meta.state().topics.is_empty());
    // A command just under the limit still goes through.
    let big = Command::CreateTopic {
        name: "big".into(),
        id: Uuid::new_v4(),
        assignments: vec![vec![1]],
        configs: map(&[("cleanup.policy", "x".repeat(1000 << 10).as_str())]),
        internal: false,
    };
    assert_eq!(propose(&meta, big).await, CommandResult::Ok);
    bounded(meta.shutdown()).await.unwrap();
}
