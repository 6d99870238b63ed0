//! Controller failover in a three-node cluster: the metadata quorum's raft leader crashes, a new one is elected,
//! topic creation works again within a few seconds (measured), nothing committed before is lost, and the
//! controller metrics on /metrics follow the change.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::{s, Client};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;

/// The value of the unlabelled sample `name` in broker `b`'s metrics text.
fn sample(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// One CreateTopics attempt (rf 1): the topic's error code.
async fn try_create(c: &mut Client, name: &str) -> i16 {
    let resp = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]),
        )
        .await;
    resp.topics[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_the_raft_leader_resumes_topic_creation_within_seconds_and_loses_nothing() {
    let mut cluster = Cluster::start(3, &[]).await;
    let old_leader = cluster
        .node(1)
        .state()
        .meta
        .leader()
        .expect("a raft leader");
    let old_epoch = cluster.node(1).state().meta.controller_metrics().epoch;
    let survivors: Vec<i32> = (1..=3).filter(|&i| i != old_leader).collect();

    // The metrics name the active controller on every node, and only the leader is active.
    cluster
        .wait(Duration::from_secs(5), "every node knows the leader", |c| {
            c.live()
                .all(|b| b.state().meta.leader() == Some(old_leader))
        })
        .await;
    for id in 1..=3 {
        let text = cluster.node(id).metrics_text();
        assert_eq!(
            sample(&text, "fjord_controller_active"),
            i64::from(id == old_leader),
            "node {id}"
        );
        assert_eq!(
            sample(&text, "fjord_controller_leader_id"),
            i64::from(old_leader)
        );
        assert!(sample(&text, "fjord_controller_leader_changes_total") >= 1);
    }
    let changes_before: BTreeMap<i32, i64> = survivors
        .iter()
        .map(|&id| {
            let text = cluster.node(id).metrics_text();
            (id, sample(&text, "fjord_controller_leader_changes_total"))
        })
        .collect();

    // Committed before the crash, through a follower (forwarded to the leader) and through the leader itself.
    let mut via_follower = Client::connect(cluster.node(survivors[0])).await;
    let mut via_leader = Client::connect(cluster.node(old_leader)).await;
    for i in 0..5 {
        create(&mut via_follower, &format!("before-f{i}"), 1, &[]).await;
        create(&mut via_leader, &format!("before-l{i}"), 1, &[]).await;
    }
    let committed = before_topics(cluster.node(old_leader));
    assert_eq!(committed.len(), 10, "{committed:?}");

    cluster.crash(old_leader).await;
    let crashed_at = Instant::now();

    // Topic creation through a survivor: each attempt waits for a leader (bounded by the request timeout); retried
    // on a retriable error until the bound.
    let mut c = Client::connect(cluster.node(survivors[0])).await;
    let bound = Duration::from_secs(10);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let code = try_create(&mut c, "after-crash").await;
        if code == 0 {
            break;
        }
        assert!(
            crashed_at.elapsed() < bound,
            "topic creation still fails (error {code}) {:?} after the leader crashed",
            crashed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_in = crashed_at.elapsed();
    println!(
        "controller failover: topic creation worked again {recovered_in:?} after the raft leader (node {old_leader}) crashed ({attempts} attempt(s))"
    );
    assert!(
        recovered_in < Duration::from_secs(8),
        "topic creation took {recovered_in:?} to recover"
    );

    // A new leader among the survivors, in a later term, known to both.
    let new_leader = cluster
        .node(survivors[0])
        .state()
        .meta
        .leader()
        .expect("a new leader");
    assert_ne!(new_leader, old_leader);
    assert!(survivors.contains(&new_leader));
    assert!(
        cluster
            .node(new_leader)
            .state()
            .meta
            .controller_metrics()
            .epoch
            > old_epoch
    );

    // Nothing committed is lost: every survivor holds every topic created before the crash, with the same ids,
    // and the one created after it.
    for &id in &survivors {
        cluster
            .wait(
                Duration::from_secs(5),
                "the survivor applied the new topic",
                |c| {
                    c.node(id)
                        .state()
                        .meta
                        .state()
                        .topics
                        .contains_key("after-crash")
                },
            )
            .await;
        let now = before_topics(cluster.node(id));
        for (name, topic_id) in &committed {
            assert_eq!(
                now.get(name),
                Some(topic_id),
                "node {id} lost or changed {name}"
            );
        }
    }

    // The metrics moved: each survivor saw at least one more leader, exactly one of them is active.
    cluster
        .wait(
            Duration::from_secs(5),
            "both survivors know the new leader",
            |c| {
                survivors
                    .iter()
                    .all(|&id| c.node(id).state().meta.leader() == Some(new_leader))
            },
        )
        .await;
    for &id in &survivors {
        let text = cluster.node(id).metrics_text();
        let changes = sample(&text, "fjord_controller_leader_changes_total");
        assert!(
            changes > changes_before[&id],
            "node {id}: leader changes {changes} (before the crash {})",
            changes_before[&id]
        );
        assert_eq!(
            sample(&text, "fjord_controller_active"),
            i64::from(id == new_leader),
            "node {id}"
        );
        assert_eq!(
            sample(&text, "fjord_controller_leader_id"),
            i64::from(new_leader)
        );
    }
    cluster.shutdown().await;
}

/// The `before-*` topics and their ids as broker `b`'s metadata holds them.
fn before_topics(b: &fjord_broker::Broker) -> BTreeMap<String, String> {
    b.state()
        .meta
        .state()
        .topics
        .iter()
        .filter(|(name, _)| name.starts_with("before-"))
        .map(|(name, t)| (name.clone(), t.id.to_string()))
        .collect()
}
