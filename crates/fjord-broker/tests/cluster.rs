//! Several brokers in one process forming a cluster with Kafka's KRaft properties only (`node.id`,
//! `process.roles`, `listeners` with a CONTROLLER listener, `controller.listener.names`,
//! `controller.quorum.voters`), on free 127.0.0.1 ports and temporary directories: placement, leaders,
//! replication by follower fetches, the high watermark, and acks=all waiting for the in-sync replicas.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::Client;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_from_kraft_properties_replicate_a_partition_to_every_replica() {
    let cluster = Cluster::start(3, &[]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    let md = c.send(12, &MetadataRequest::default()).await;
    let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3], "Metadata lists every broker");

    create(&mut c, "r", 3, &[]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| c.live().all(|b| b.state().partitions.get("r", 0).is_some()),
        )
        .await;
    let (leader, replicas, isr) = placement(cluster.node(1), "r").unwrap();
    assert_eq!(replicas.len(), 3);
    assert_eq!(isr.len(), 3);
    let mut lc = Client::connect(cluster.node(leader)).await;
    for i in 0..20 {
        let v = format!("v{i}");
        let (err, base) = produce(&mut lc, "r", -1, 10_000, &[&v, &v]).await;
        assert_eq!(err, 0, "acks=all produce {i}");
        assert_eq!(base, i * 2);
    }
    // acks=all answered, so the high watermark passed the data: every in-sync follower had it, durably.
    let leader_part = cluster.node(leader).state().partitions.get("r", 0).unwrap();
    assert_eq!(leader_part.high_watermark(), 40);
    for b in cluster.live() {
        let p = b.state().partitions.get("r", 0).unwrap();
        assert!(
            p.log_end_offset() >= 40,
            "broker {} holds every acknowledged record (log end {})",
            b.state().config.node_id,
            p.log_end_offset()
        );
    }
    // The replicas hold the same bytes.
    let leader_bytes = leader_part.read_to_log_end(0, 1 << 20).unwrap();
    for b in cluster.live() {
        let p = b.state().partitions.get("r", 0).unwrap();
        assert_eq!(p.log_end_offset(), 40);
        let log = p.read_to_log_end(0, 1 << 20).unwrap();
        assert_eq!(
            log,
            leader_bytes,
            "broker {} has the leader's batches",
            b.state().config.node_id
        );
    }

    let (err, hw, bytes) = fetch(&mut lc, "r", 0).await;
    assert_eq!((err, hw), (0, 40));
    assert!(bytes > 0);

    // A follower refuses clients: they refresh metadata and go to the leader.
    let follower = replicas.iter().copied().find(|b| *b != leader).unwrap();
    let mut fc = Client::connect(cluster.node(follower)).await;
    let (err, _) = produce(&mut fc, "r", 1, 1_000, &["x"]).await;
    assert_eq!(err, E::NotLeaderOrFollower.code());
    let (err, _, _) = fetch(&mut fc, "r", 0).await;
    assert_eq!(err, E::NotLeaderOrFollower.code());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_is_not_acknowledged_while_an_in_sync_follower_lacks_the_write() {
    // A lag bound far beyond the test: the paused follower stays in the ISR.
    let cluster = Cluster::start(3, &[("replica.lag.time.max.ms", "600000")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "w", 3, &[("min.insync.replicas", "2")]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| c.live().all(|b| b.state().partitions.get("w", 0).is_some()),
        )
        .await;
    let (leader, replicas, _) = placement(cluster.node(1), "w").unwrap();
    let mut lc = Client::connect(cluster.node(leader)).await;
    assert_eq!(produce(&mut lc, "w", -1, 10_000, &["a"]).await, (0, 0));
    let follower = replicas.iter().copied().find(|b| *b != leader).unwrap();
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(true);
    let (err, _) = produce(&mut lc, "w", -1, 1_000, &["b"]).await;
    assert_eq!(
        err,
        E::RequestTimedOut.code(),
        "acks=all is not acknowledged while an in-sync replica lacks the write"
    );
    // acks=1 is acknowledged by the leader alone; the high watermark still waits for the ISR, so consumers do
    // not see the unreplicated records.
    assert_eq!(produce(&mut lc, "w", 1, 1_000, &["c"]).await.0, 0);
    let (err, hw, _) = fetch(&mut lc, "w", 0).await;
    assert_eq!(
        (err, hw),
        (0, 1),
        "the high watermark stays below what only some of the ISR holds"
    );
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(false);
    cluster
        .wait(Duration::from_secs(10), "the follower caught up", |c| {
            c.node(leader)
                .state()
                .partitions
                .get("w", 0)
                .unwrap()
                .high_watermark()
                == 3
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let cluster = Cluster::start(3, &[("replica.lag.time.max.ms", "1000")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "lag2", 3, &[("min.insync.replicas", "2")]).await;
    create(&mut c, "lag3", 3, &[("min.insync.replicas", "3")]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partitions exist on every broker",
            |c| {
                c.live().all(|b| {
                    b.state().partitions.get("lag2", 0).is_some()
                        && b.state().partitions.get("lag3", 0).is_some()
                })
            },
        )
        .await;
    // A follower of both that leads neither.
    let (l2, r2, _) = placement(cluster.node(1), "lag2").unwrap();
    let (l3, _, _) = placement(cluster.node(1), "lag3").unwrap();
    let follower = r2.iter().copied().find(|b| *b != l2 && *b != l3);
    let Some(follower) = follower else {
        // Both leaders on different brokers cover two of three; the third is a follower of both.
        unreachable!("three replicas, at most two leaders")
    };
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(true);
    let mut c2 = Client::connect(cluster.node(l2)).await;
    let started = Instant::now();
    let (err, base) = produce(&mut c2, "lag2", -1, 15_000, &["x"]).await;
    assert_eq!(
        (err, base),
        (0, 0),
        "acks=all goes through once the lagging follower left the ISR (min.insync.replicas=2)"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before replica.lag.time.max.ms passed"
    );
    let (_, _, isr) = placement(cluster.node(l2), "lag2").unwrap();
    assert!(!isr.contains(&follower) && isr.len() == 2, "ISR {isr:?}");
    // min.insync.replicas=3 cannot be met with the follower out: refused before the append.
    let mut c3 = Client::connect(cluster.node(l3)).await;
    cluster
        .wait(Duration::from_secs(10), "lag3's ISR shrank too", |c| {
            placement(c.node(l3), "lag3").unwrap().2.len() == 2
        })
        .await;
    let (err, _) = produce(&mut c3, "lag3", -1, 5_000, &["y"]).await;
    assert_eq!(err, E::NotEnoughReplicas.code());
    assert_eq!(
        produce(&mut c3, "lag3", 1, 5_000, &["y"]).await.0,
        0,
        "acks=1 does not need the ISR"
    );
    let gauge = |b: &fjord_broker::Broker, name: &str| -> i64 {
        let text = b.metrics_text();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} is exported"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        gauge(cluster.node(l2), "fjord_under_replicated_partitions") >= 1,
        "the leader reports its under-replicated partition"
    );
    // Back in service, it catches up and rejoins.
    cluster
        .node(follower)
        .state()
        .replication
        .pause_for_test(false);
    cluster
        .wait(
            Duration::from_secs(15),
            "the follower rejoined both ISRs",
            |c| {
                placement(c.node(1), "lag2").unwrap().2.contains(&follower)
                    && placement(c.node(1), "lag3").unwrap().2.contains(&follower)
            },
        )
        .await;
    // Node 1's view can be ahead of the leader's: until the leader has applied the ISR change too, an acks=all
    // produce may still be NOT_ENOUGH_REPLICAS (19); bounded retries, then it must succeed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let code = produce(&mut c3, "lag3", -1, 5_000, &["z"]).await.0;
        if code == 0 || tokio::time::Instant::now() >= deadline {
            assert_eq!(code, 0, "acks=all to lag3 after the follower rejoined");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
        .wait(
            Duration::from_secs(10),
            "no partition under-replicated",
            |c| {
                c.live()
                    .all(|b| gauge(b, "fjord_under_replicated_partitions") == 0)
            },
        )
        .await;
    let text = cluster.node(l2).metrics_text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("fjord_isr_shrinks_total ") && !l.ends_with(" 0")),
        "the leader counted its ISR shrink"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_hands_its_partitions_to_an_in_sync_follower_with_every_acknowledged_record(
) {
    // ISR checks every 250 ms (a quarter of the lag bound).
    let mut cluster = Cluster::start(3, &[("replica.lag.time.max.ms", "1000")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "f", 3, &[("min.insync.replicas", "2")]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| c.live().all(|b| b.state().partitions.get("f", 0).is_some()),
        )
        .await;
    let (leader, _, _) = placement(cluster.node(1), "f").unwrap();
    let epoch = cluster.node(1).state().meta.state().topics["f"].partitions[0].leader_epoch;
    let mut lc = Client::connect(cluster.node(leader)).await;
    for i in 0..10i64 {
        assert_eq!(
            produce(&mut lc, "f", -1, 10_000, &["a", "b"]).await,
            (0, i * 2)
        );
    }
    // A partition the stopping broker only follows, fully replicated: its leader must not ask to put the fenced
    // broker back into the ISR afterwards (the quorum would refuse it, again and again).
    let other_leader = (1..=3).find(|b| *b != leader).unwrap();
    let third = (1..=3)
        .find(|b| *b != leader && *b != other_leader)
        .unwrap();
    create_on(&mut c, "g", &[other_leader, leader, third]).await;
    let mut gc = Client::connect(cluster.node(other_leader)).await;
    cluster
        .wait(Duration::from_secs(10), "g-0 on every broker", |c| {
            c.live().all(|b| b.state().partitions.get("g", 0).is_some())
        })
        .await;
    assert_eq!(produce(&mut gc, "g", -1, 10_000, &["g"]).await.0, 0);
    // Controlled shutdown (what SIGTERM does): leadership moves before the broker stops.
    cluster.stop(leader).await;
    let other = (1..=3).find(|b| *b != leader).unwrap();
    cluster
        .wait(Duration::from_secs(10), "a new leader", |c| {
            placement(c.node(other), "f").is_some_and(|(l, _, _)| l != leader && l >= 0)
        })
        .await;
    let st = cluster.node(other).state().meta.state();
    let p = &st.topics["f"].partitions[0];
    assert!(p.leader_epoch > epoch, "the new leader has a new epoch");
    assert!(!p.isr.contains(&leader), "the stopped broker left the ISR");
    assert!(!st.is_live(leader), "and is fenced");
    let new_leader = p.leader;
    let mut nc = Client::connect(cluster.node(new_leader)).await;
    // Metadata from any live broker names the new leader and leaves the stopped broker out.
    let md = nc
        .send(12, &MetadataRequest::default().with_topics(None))
        .await;
    assert!(md.brokers.iter().all(|b| b.node_id.0 != leader));
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "f"))
        .unwrap();
    assert_eq!(t.partitions[0].leader_id.0, new_leader);
    assert!(t.partitions[0]
        .offline_replicas
        .iter()
        .any(|b| b.0 == leader));
    // The new leader never asks to put the fenced broker back into the ISR (the quorum would refuse it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for b in cluster.live() {
        let text = b.metrics_text();
        assert!(
            text.lines()
                .any(|l| l == "fjord_isr_update_failures_total 0"),
            "broker {} asked for ISR changes the quorum refused",
            b.state().config.node_id
        );
    }
    // Every acknowledged record is on the new leader at once; its high watermark, which it knew as a follower,
    // reaches them as soon as the remaining in-sync follower fetches from it (Kafka's behaviour too).
    let np = cluster
        .node(new_leader)
        .state()
        .partitions
        .get("f", 0)
        .unwrap();
    assert!(np.log_end_offset() >= 20, "acknowledged records were lost");
    cluster
        .wait(
            Duration::from_secs(10),
            "the new leader's high watermark",
            |_| np.high_watermark() == 20,
        )
        .await;
    let (err, hw, bytes) = fetch(&mut nc, "f", 0).await;
    assert_eq!((err, hw), (0, 20));
    assert!(bytes > 0);
    assert_eq!(produce(&mut nc, "f", -1, 10_000, &["c"]).await, (0, 20));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_gives_leadership_back_to_the_preferred_replica() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    // Automatic rebalancing off: the election below is the only way back.
    let cluster = Cluster::start(3, &[("auto.leader.rebalance.enable", "false")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "pref", 3, &[]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| {
                c.live()
                    .all(|b| b.state().partitions.get("pref", 0).is_some())
            },
        )
        .await;
    let (leader, replicas, _) = placement(cluster.node(1), "pref").unwrap();
    assert_eq!(
        leader, replicas[0],
        "a new partition starts on its preferred replica"
    );
    // Fencing the preferred replica moves leadership away; its heartbeats unfence it and it rejoins the ISR.
    cluster
        .node(1)
        .state()
        .meta
        .propose(fjord_meta::Command::FenceBroker { id: leader })
        .await
        .unwrap();
    cluster
        .wait(
            Duration::from_secs(20),
            "the preferred replica is back in the ISR, not leading",
            |c| {
                placement(c.node(1), "pref")
                    .is_some_and(|(l, _, isr)| l != leader && isr.len() == 3)
            },
        )
        .await;
    let elect = |election_type: i8, partitions: Vec<i32>| {
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(TopicName(common::s("pref")))
                .with_partitions(partitions)]))
    };
    let r = c.send(2, &elect(0, vec![0, 7])).await;
    let codes: Vec<i16> = r.replica_election_results[0]
        .partition_result
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0, E::UnknownTopicOrPartition.code()]);
    let (now, ..) = placement(cluster.node(1), "pref").unwrap();
    assert_eq!(now, leader, "the preferred replica leads again");
    let r = c.send(2, &elect(0, vec![0])).await;
    assert_eq!(
        r.replica_election_results[0].partition_result[0].error_code,
        E::ElectionNotNeeded.code()
    );
    let r = c.send(2, &elect(1, vec![0])).await;
    assert_eq!(
        r.replica_election_results[0].partition_result[0].error_code,
        E::ElectionNotNeeded.code(),
        "an unclean election of a partition with a live leader"
    );
    let r = c.send(2, &elect(2, vec![0])).await;
    assert_eq!(
        r.replica_election_results[0].partition_result[0].error_code,
        E::InvalidRequest.code(),
        "no such election type"
    );
    // Writing goes on through the new (preferred) leader.
    let mut lc = Client::connect(cluster.node(leader)).await;
    assert_eq!(produce(&mut lc, "pref", -1, 10_000, &["x"]).await.0, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_leader_rebalance_moves_leadership_back_to_the_preferred_replica() {
    let cluster = Cluster::start(3, &[("leader.imbalance.check.interval.seconds", "1")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    create(&mut c, "auto", 3, &[]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "the partition exists on every broker",
            |c| {
                c.live()
                    .all(|b| b.state().partitions.get("auto", 0).is_some())
            },
        )
        .await;
    let (leader, _, _) = placement(cluster.node(1), "auto").unwrap();
    cluster
        .node(1)
        .state()
        .meta
        .propose(fjord_meta::Command::FenceBroker { id: leader })
        .await
        .unwrap();
    cluster
        .wait(Duration::from_secs(10), "leadership moved away", |c| {
            placement(c.node(1), "auto").is_some_and(|(l, _, _)| l != leader)
        })
        .await;
    cluster
        .wait(
            Duration::from_secs(30),
            "leadership back on the preferred replica",
            |c| {
                placement(c.node(1), "auto")
                    .is_some_and(|(l, _, isr)| l == leader && isr.len() == 3)
            },
        )
        .await;
    cluster.shutdown().await;
}

/// Kafka's unclean leader election: when every in-sync replica of a partition is gone, the partition stays
/// offline unless `unclean.leader.election.enable` allows an out-of-sync replica to lead (the controller then
/// elects one) or an operator asks for it once with ElectLeaders type 1 (KIP-460). The new leader's ISR is itself
/// alone, and what only the old ISR held is gone from the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_sync_replica_leads_only_by_unclean_election() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let mut cluster = Cluster::start(3, &[("replica.lag.time.max.ms", "1000")]).await;
    let mut c3 = Client::connect(cluster.node(3)).await;
    for t in ["auto", "manual"] {
        create_on(&mut c3, t, &[1, 2]).await;
    }
    let has = |b: &fjord_broker::Broker| {
        ["auto", "manual"]
            .iter()
            .all(|t| b.state().partitions.get(t, 0).is_some())
    };
    cluster
        .wait(Duration::from_secs(10), "the replicas exist", |c| {
            has(c.node(1)) && has(c.node(2))
        })
        .await;
    // Broker 2 stops fetching and leaves the ISR; broker 1 alone acknowledges a record of each topic.
    cluster.node(2).state().replication.pause_for_test(true);
    cluster
        .wait(
            Duration::from_secs(15),
            "broker 2 is out of the ISRs",
            |c| {
                ["auto", "manual"]
                    .iter()
                    .all(|t| placement(c.node(3), t).is_some_and(|(_, _, isr)| isr == vec![1]))
            },
        )
        .await;
    let mut c1 = Client::connect(cluster.node(1)).await;
    for t in ["auto", "manual"] {
        assert_eq!(
            produce(&mut c1, t, -1, 10_000, &["only-on-1"]).await,
            (0, 0)
        );
    }
    // Its only in-sync replica gone, each partition is offline, and stays so while unclean election is off.
    cluster.stop(1).await;
    let offline = |c: &Cluster| {
        ["auto", "manual"]
            .iter()
            .all(|t| placement(c.node(3), t).is_some_and(|(l, _, isr)| l == -1 && isr == vec![1]))
    };
    cluster
        .wait(Duration::from_secs(10), "both partitions offline", offline)
        .await;
    // Admin tools see it offline: no leader, broker 1's replica offline.
    let describe = DescribeTopicPartitionsRequest::default().with_topics(vec![
        kafka_protocol::messages::describe_topic_partitions_request::TopicRequest::default()
            .with_name(TopicName(common::s("manual"))),
    ]);
    let r = c3.send(0, &describe).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!(
        (p.error_code, p.leader_id.0, p.offline_replicas.clone()),
        (E::LeaderNotAvailable.code(), -1, vec![BrokerId(1)])
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        offline(&cluster),
        "no out-of-sync replica leads while unclean.leader.election.enable is false"
    );
    // Turning the topic config on lets the controller elect broker 2 for "auto".
    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(common::s("auto"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(common::s("unclean.leader.election.enable"))
                .with_config_operation(0)
                .with_value(Some(common::s("true")))]),
    ]);
    let r = c3.send(1, &alter).await;
    assert_eq!(
        r.responses[0].error_code, 0,
        "{:?}",
        r.responses[0].error_message
    );
    cluster
        .wait(
            Duration::from_secs(15),
            "broker 2 leads auto, alone in its ISR",
            |c| placement(c.node(3), "auto").is_some_and(|(l, _, isr)| l == 2 && isr == vec![2]),
        )
        .await;
    assert!(
        placement(cluster.node(3), "manual").is_some_and(|(l, ..)| l == -1),
        "the config of one topic elects nothing for another"
    );
    // "manual" keeps the default; an operator's one-off unclean election revives it.
    let elect = |partitions: Vec<i32>| {
        ElectLeadersRequest::default()
            .with_election_type(1)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(TopicName(common::s("manual")))
                .with_partitions(partitions)]))
    };
    let r = c3.send(2, &elect(vec![0, 5])).await;
    let codes: Vec<i16> = r.replica_election_results[0]
        .partition_result
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0, E::UnknownTopicOrPartition.code()]);
    assert_eq!(
        placement(cluster.node(3), "manual").map(|(l, _, isr)| (l, isr)),
        Some((2, vec![2]))
    );
    let r = c3.send(2, &elect(vec![0])).await;
    assert_eq!(
        r.replica_election_results[0].partition_result[0].error_code,
        E::ElectionNotNeeded.code()
    );
    // Broker 2 serves both, without the record only broker 1 had: the new write takes its offset.
    cluster
        .wait(
            Duration::from_secs(10),
            "broker 2 applied its leaderships",
            |c| {
                ["auto", "manual"].iter().all(|t| {
                    c.node(2)
                        .state()
                        .partitions
                        .get(t, 0)
                        .is_some_and(|p| p.is_leader())
                })
            },
        )
        .await;
    let mut c2 = Client::connect(cluster.node(2)).await;
    for t in ["auto", "manual"] {
        assert_eq!(
            produce(&mut c2, t, -1, 10_000, &["after"]).await,
            (0, 0),
            "{t}"
        );
        let (code, hw, _) = fetch(&mut c2, t, 0).await;
        assert_eq!((code, hw), (0, 1), "{t}");
    }
    cluster.shutdown().await;
}

/// A leader whose log directory fails (a JBOD disk, not the one holding the metadata) hands the partition's
/// leadership to an in-sync replica on another broker and leaves its ISR, as KRaft does with a heartbeat's
/// offline log dirs, instead of leaving the partition unavailable; its partitions in the healthy directory keep
/// their leader. Nothing acknowledged before the failure is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_log_dir_fails_hands_its_partitions_to_an_in_sync_replica() {
    let cluster = Cluster::start(3, &[("log.dirs", "{dir}/a,{dir}/b")]).await;
    let mut c = Client::connect(cluster.node(1)).await;
    // Created first: every broker puts d-0 in its first directory (a) and d-1 in its second (b).
    let r = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(common::s("d")))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(
                        (0..2)
                            .map(|i| {
                                create_topics_request::CreatableReplicaAssignment::default()
                                    .with_partition_index(i)
                                    .with_broker_ids(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
                            })
                            .collect(),
                    )]),
        )
        .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let leader_of = |c: &Cluster, i: usize| {
        let st = c.node(2).state().meta.state();
        let p = st.topics["d"].partitions[i].clone();
        (p.leader, p.isr)
    };
    cluster
        .wait(
            Duration::from_secs(10),
            "both partitions in sync on 1",
            |c| {
                c.live().all(|b| {
                    (0..2).all(|i| {
                        b.state()
                            .partitions
                            .get("d", i)
                            .is_some_and(|p| p.is_leader() == (b.state().config.node_id == 1))
                    })
                }) && (0..2).all(|i| leader_of(c, i).1.len() == 3)
            },
        )
        .await;
    let d1 = cluster.node(1).state().partitions.get("d", 1).unwrap();
    assert!(d1.log_dir().ends_with("b"), "{}", d1.log_dir().display());
    let produce_to = |i: i32| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(common::s("d")))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(i)
                        .with_records(Some(batch(&["v"]))),
                ])])
    };
    let code = |r: &ProduceResponse| r.responses[0].partition_responses[0].error_code;
    assert_eq!(code(&c.send(9, &produce_to(1)).await), 0);
    // The next fsync of d-1 on broker 1 fails: directory b goes offline there.
    d1.fail_next_fsync_for_test();
    assert_eq!(
        code(&c.send(9, &produce_to(1)).await),
        E::KafkaStorageError.code()
    );
    cluster
        .wait(
            Duration::from_secs(10),
            "d-1 led elsewhere, broker 1 out of its ISR",
            |c| {
                let (leader, isr) = leader_of(c, 1);
                leader != 1 && leader > 0 && !isr.contains(&1) && isr.len() == 2
            },
        )
        .await;
    assert_eq!(
        leader_of(&cluster, 0),
        (1, vec![1, 2, 3]),
        "d-0 (directory a) is untouched"
    );
    let (leader, _) = leader_of(&cluster, 1);
    cluster
        .wait(Duration::from_secs(10), "the new leader leads", |c| {
            c.node(leader)
                .state()
                .partitions
                .get("d", 1)
                .is_some_and(|p| p.is_leader())
        })
        .await;
    let mut lc = Client::connect(cluster.node(leader)).await;
    let r = lc.send(9, &produce_to(1)).await;
    assert_eq!(code(&r), 0);
    assert!(
        r.responses[0].partition_responses[0].base_offset >= 1,
        "the record acknowledged before the failure is kept"
    );
    assert_eq!(
        code(&c.send(9, &produce_to(0)).await),
        0,
        "broker 1 still serves d-0"
    );
    cluster.shutdown().await;
}

/// The last in-sync replica's log directory fails while its broker stays up: that copy is marked offline and is
/// never elected again (an unclean election used to pick it as the "clean" choice, its broker reported it
/// offline, and the two repeated every second with the partition never served). With unclean election on, a
/// live out-of-sync replica takes over once; tools see the failed copy among the offline replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_in_sync_replica_in_a_failed_log_dir_is_not_elected_again() {
    use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
    let cluster = Cluster::start(
        3,
        &[
            ("log.dirs", "{dir}/a,{dir}/b"),
            ("replica.lag.time.max.ms", "1000"),
        ],
    )
    .await;
    let mut c3 = Client::connect(cluster.node(3)).await;
    create_on_with(
        &mut c3,
        "u",
        &[1, 2],
        &[("unclean.leader.election.enable", "true")],
    )
    .await;
    cluster
        .wait(Duration::from_secs(10), "the replicas exist", |c| {
            (1..=2).all(|n| c.node(n).state().partitions.get("u", 0).is_some())
        })
        .await;
    // Broker 2 stops fetching and leaves the ISR: broker 1 is the last in-sync replica.
    cluster.node(2).state().replication.pause_for_test(true);
    cluster
        .wait(Duration::from_secs(15), "broker 2 out of the ISR", |c| {
            placement(c.node(3), "u").is_some_and(|(l, _, isr)| l == 1 && isr == vec![1])
        })
        .await;
    let u = cluster.node(1).state().partitions.get("u", 0).unwrap();
    u.fail_next_fsync_for_test();
    let mut c1 = Client::connect(cluster.node(1)).await;
    assert_eq!(
        produce(&mut c1, "u", -1, 10_000, &["lost-with-the-disk"])
            .await
            .0,
        E::KafkaStorageError.code()
    );
    // The controller's unclean election gives the partition to broker 2, not back to broker 1.
    cluster
        .wait(
            Duration::from_secs(15),
            "broker 2 leads u, alone in its ISR",
            |c| placement(c.node(3), "u").is_some_and(|(l, _, isr)| l == 2 && isr == vec![2]),
        )
        .await;
    let epoch = |c: &Cluster| c.node(3).state().meta.state().topics["u"].partitions[0].leader_epoch;
    let settled = epoch(&cluster);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(epoch(&cluster), settled, "leadership stays put");
    let r = c3
        .send(
            0,
            &DescribeTopicPartitionsRequest::default().with_topics(vec![
                TopicRequest::default().with_name(TopicName(common::s("u")))
            ]),
        )
        .await;
    let p = &r.topics[0].partitions[0];
    assert_eq!(
        (p.error_code, p.leader_id.0, p.offline_replicas.clone()),
        (0, 2, vec![BrokerId(1)])
    );
    cluster.node(2).state().replication.pause_for_test(false);
    cluster.shutdown().await;
}
