//! Separate roles and voter changes on in-process nodes formed from Kafka's KRaft properties:
//!
//! - a broker-only node (`process.roles=broker`) finds the quorum through `controller.quorum.bootstrap.servers`,
//!   joins it as an observer (a raft learner, never a voter), registers, hosts partitions and forwards writes;
//! - a controller-only node (`process.roles=controller`) joins as an observer, is made a voter with AddRaftVoter
//!   (key 80), never registers as a broker nor gets partitions; a voter is removed with RemoveRaftVoter (key 81)
//!   and stays an observer; topic operations work throughout, and losing a minority afterwards keeps the quorum.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::{s, Client};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::add_raft_voter_request::Listener;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// (voters, observers) as DescribeQuorum through `c` reports them, sorted.
async fn quorum(c: &mut Client) -> (Vec<i32>, Vec<i32>) {
    let resp = c
        .send(
            2,
            &DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)])]),
        )
        .await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    let ids = |r: &[describe_quorum_response::ReplicaState]| {
        let mut v: Vec<i32> = r.iter().map(|r| r.replica_id.0).collect();
        v.sort_unstable();
        v
    };
    (ids(&p.current_voters), ids(&p.observers))
}

/// Polls DescribeQuorum through `c` until it reports `voters` and `observers` (bounded).
async fn wait_quorum(c: &mut Client, voters: &[i32], observers: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = quorum(c).await;
        if got == (voters.to_vec(), observers.to_vec()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "DescribeQuorum says (voters, observers) = {got:?}, wanted ({voters:?}, {observers:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn props_of(id: i32, dir: &std::path::Path, pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut props: BTreeMap<String, String> = [
        ("node.id", id.to_string()),
        ("controller.listener.names", "CONTROLLER".into()),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        ("log.dirs", dir.display().to_string()),
        ("offsets.topic.num.partitions", "2".into()),
        ("transaction.state.log.num.partitions", "2".into()),
        ("replica.fetch.wait.max.ms", "100".into()),
        ("replica.fetch.backoff.ms", "100".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in pairs {
        props.insert(k.to_string(), v.clone());
    }
    props
}

async fn add_voter(c: &mut Client, cluster_id: &str, id: i32, port: u16) -> (i16, Option<String>) {
    let resp = c
        .send(
            0,
            &AddRaftVoterRequest::default()
                .with_cluster_id(Some(s(cluster_id)))
                .with_timeout_ms(15_000)
                .with_voter_id(id)
                .with_listeners(vec![Listener::default()
                    .with_name(s("CONTROLLER"))
                    .with_host(s("127.0.0.1"))
                    .with_port(port)]),
        )
        .await;
    (resp.error_code, resp.error_message.map(|m| m.to_string()))
}

async fn remove_voter(c: &mut Client, cluster_id: &str, id: i32) -> (i16, Option<String>) {
    let resp = c
        .send(
            0,
            &RemoveRaftVoterRequest::default()
                .with_cluster_id(Some(s(cluster_id)))
                .with_voter_id(id),
        )
        .await;
    (resp.error_code, resp.error_message.map(|m| m.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_observes_the_quorum_hosts_partitions_and_forwards_writes() {
    let mut cluster = Cluster::start(3, &[]).await;
    let bootstrap = cluster.bootstrap_servers();
    let started = Instant::now();
    let id = cluster
        .add_node(|id, dir| {
            props_of(
                id,
                dir,
                &[
                    ("process.roles", "broker".into()),
                    ("listeners", "PLAINTEXT://127.0.0.1:0".into()),
                    ("controller.quorum.bootstrap.servers", bootstrap),
                ],
            )
        })
        .await;
    println!(
        "broker-only node {id} joined and started in {:?}",
        started.elapsed()
    );
    assert_eq!(id, 4);

    // Registered and live in every node's view, yet not a voter: an observer.
    cluster
        .wait(
            Duration::from_secs(15),
            "broker 4 registered and live everywhere",
            |c| c.live().all(|b| b.state().meta.state().is_live(4)),
        )
        .await;
    for b in cluster.live() {
        assert_eq!(b.state().meta.voters(), [1, 2, 3].into());
    }
    let mut c4 = Client::connect(cluster.node(4)).await;
    wait_quorum(&mut c4, &[1, 2, 3], &[4]).await;

    // Its writes are forwarded to the leader; it hosts and leads a partition, which a voter follows.
    create_on(&mut c4, "on-4", &[4, 1]).await;
    cluster
        .wait(Duration::from_secs(10), "every node applied on-4", |c| {
            c.live().all(|b| placement(b, "on-4").is_some())
        })
        .await;
    let (leader, replicas, _) = placement(cluster.node(1), "on-4").unwrap();
    assert_eq!((leader, replicas), (4, vec![4, 1]));
    let (err, base) = produce(&mut c4, "on-4", -1, 10_000, &["a", "b", "c"]).await;
    assert_eq!((err, base), (0, 0));
    let (err, hw, bytes) = fetch(&mut c4, "on-4", 0).await;
    assert_eq!((err, hw), (0, 3));
    assert!(bytes > 0);

    // A topic created elsewhere reaches it (it applies the metadata log).
    let mut c1 = Client::connect(cluster.node(1)).await;
    create(&mut c1, "from-1", 1, &[]).await;
    cluster
        .wait(Duration::from_secs(10), "node 4 applied from-1", |c| {
            placement(c.node(4), "from-1").is_some()
        })
        .await;

    // The metrics of an observer name the leader and never call it active.
    let text = cluster.node(4).metrics_text();
    assert!(text.contains("fjord_controller_active 0"), "{text}");
    assert!(!text.contains("fjord_controller_leader_id -1"), "{text}");

    // A crash and a restart: its metadata listener moves to another free port, and the quorum learns the new
    // address when it asks to be an observer again, so it follows the metadata log again.
    drop(c4);
    cluster.crash(4).await;
    let crashed_at = Instant::now();
    create(&mut c1, "while-4-was-down", 1, &[]).await;
    let bootstrap = cluster.bootstrap_servers();
    cluster
        .restart_with(4, |id, dir| {
            props_of(
                id,
                dir,
                &[
                    ("process.roles", "broker".into()),
                    ("listeners", "PLAINTEXT://127.0.0.1:0".into()),
                    ("controller.quorum.bootstrap.servers", bootstrap),
                ],
            )
        })
        .await;
    assert!(placement(cluster.node(4), "while-4-was-down").is_some());
    create(&mut c1, "after-4-returned", 1, &[]).await;
    cluster
        .wait(
            Duration::from_secs(10),
            "node 4 applies new metadata again",
            |c| placement(c.node(4), "after-4-returned").is_some(),
        )
        .await;
    let mut c4 = Client::connect(cluster.node(4)).await;
    wait_quorum(&mut c4, &[1, 2, 3], &[4]).await;
    cluster
        .wait(Duration::from_secs(15), "node 4 live again", |c| {
            c.node(1).state().meta.state().is_live(4)
        })
        .await;
    println!(
        "broker-only node 4 restarted and live again {:?} after its crash",
        crashed_at.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_only_node_becomes_a_voter_a_voter_leaves_and_a_minority_can_fail() {
    let mut cluster = Cluster::start(3, &[]).await;
    let cluster_id = cluster.node(1).state().meta.state().cluster_id.clone();
    let bootstrap = cluster.bootstrap_servers();
    let port4 = free_ports(1)[0];
    let id = cluster
        .add_node(|id, dir| {
            props_of(
                id,
                dir,
                &[
                    ("process.roles", "controller".into()),
                    ("listeners", format!("CONTROLLER://127.0.0.1:{port4}")),
                    ("controller.quorum.bootstrap.servers", bootstrap),
                ],
            )
        })
        .await;
    assert_eq!(id, 4);
    let mut c1 = Client::connect(cluster.node(1)).await;
    let mut c2 = Client::connect(cluster.node(2)).await;
    let mut c3 = Client::connect(cluster.node(3)).await;
    // It joined as an observer, and is no broker.
    wait_quorum(&mut c1, &[1, 2, 3], &[4]).await;
    assert!(!cluster
        .node(1)
        .state()
        .meta
        .state()
        .brokers
        .contains_key(&4));
    assert!(cluster.node(4).state().readiness().is_ok());

    // A node that never joined as an observer is refused, and nothing changes.
    let (code, msg) = add_voter(&mut c1, &cluster_id, 9, free_ports(1)[0]).await;
    assert_eq!(code, E::RequestTimedOut.code(), "{msg:?}");
    assert!(msg.unwrap_or_default().contains("not an observer"));
    // Another cluster's id is refused, and nothing changes.
    let (code, _) = add_voter(&mut c1, "not-this-cluster", 4, port4).await;
    assert_eq!(code, E::InconsistentClusterId.code());
    wait_quorum(&mut c1, &[1, 2, 3], &[4]).await;
    // Grows to four voters.
    let (code, msg) = add_voter(&mut c1, &cluster_id, 4, port4).await;
    assert_eq!(code, 0, "{msg:?}");
    wait_quorum(&mut c2, &[1, 2, 3, 4], &[]).await;
    let (code, _) = add_voter(&mut c2, &cluster_id, 4, port4).await;
    assert_eq!(code, E::DuplicateVoter.code());
    create(&mut c3, "with-4-voters", 1, &[]).await;

    // Voter 1 leaves the quorum; it stays a broker that observes the metadata log and forwards writes.
    let (code, msg) = remove_voter(&mut c2, &cluster_id, 1).await;
    assert_eq!(code, 0, "{msg:?}");
    wait_quorum(&mut c3, &[2, 3, 4], &[1]).await;
    let (code, _) = remove_voter(&mut c3, &cluster_id, 1).await;
    assert_eq!(code, E::VoterNotFound.code());
    create(&mut c1, "via-removed-voter", 1, &[]).await;

    // Losing a minority of the new voter set keeps the quorum: the raft leader if it is a broker voter (2 or 3),
    // else the controller-only node 4. Topic creation still works, through a voter and through the observer.
    let leader = cluster.node(3).state().meta.leader().expect("a leader");
    let (lost, via) = match leader {
        2 => (2, 3),
        3 => (3, 2),
        _ => (4, 3),
    };
    cluster.crash(lost).await;
    let crashed = Instant::now();
    let mut survivor = Client::connect(cluster.node(via)).await;
    create(&mut survivor, "after-minority-loss", 1, &[]).await;
    println!(
        "topic created {:?} after voter {lost} (leader: {}) crashed",
        crashed.elapsed(),
        lost == leader
    );
    create(&mut c1, "after-minority-loss-via-1", 1, &[]).await;
    let remaining: std::collections::BTreeSet<i32> =
        [2, 3, 4].into_iter().filter(|&v| v != lost).collect();
    assert_eq!(cluster.node(via).state().meta.voters().len(), 3);
    assert!(remaining.contains(&cluster.node(via).state().meta.leader().unwrap()));
    if lost == 4 {
        cluster.shutdown().await;
        return;
    }

    // The controller-only node never got a partition, and holds every topic's metadata.
    cluster
        .wait(Duration::from_secs(10), "node 4 applies every topic", |c| {
            let st = c.node(4).state().meta.state();
            [
                "with-4-voters",
                "via-removed-voter",
                "after-minority-loss",
                "after-minority-loss-via-1",
            ]
            .iter()
            .all(|t| st.topics.contains_key(*t))
        })
        .await;
    let st = cluster.node(4).state().meta.state();
    for t in st.topics.values() {
        for p in &t.partitions {
            assert!(!p.replicas.contains(&4), "{}: {:?}", t.name, p.replicas);
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_controllers_and_brokers_serve_and_survive_the_leader_controller_crashing() {
    // Three controller-only voters (1-3) and two broker-only observers (4, 5).
    let mut cluster = Cluster::start_isolated(3, 2).await;
    for b in cluster.live() {
        assert_eq!(b.state().meta.voters(), [1, 2, 3].into());
        let st = b.state().meta.state();
        assert_eq!(st.brokers.keys().copied().collect::<Vec<_>>(), vec![4, 5]);
    }
    let mut c4 = Client::connect(cluster.node(4)).await;
    wait_quorum(&mut c4, &[1, 2, 3], &[4, 5]).await;

    // Metadata names a broker as the controller (a controller-only leader serves no clients), as Kafka's KRaft
    // brokers do.
    let md = c4
        .send(12, &MetadataRequest::default().with_topics(Some(vec![])))
        .await;
    let broker_ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    assert_eq!(broker_ids.len(), 2, "{broker_ids:?}");
    assert!(broker_ids.contains(&md.controller_id.0), "{md:?}");

    create(&mut c4, "isolated", 2, &[]).await;
    let (leader, replicas, _) = placement(cluster.node(1), "isolated").unwrap();
    assert!([4, 5].contains(&leader));
    let mut sorted = replicas.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![4, 5]);
    let mut to_leader = Client::connect(cluster.node(leader)).await;
    // The leader learns of its new partition when it applies the entry (the create synced the receiving broker).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (err, _) = produce(&mut to_leader, "isolated", -1, 10_000, &["x", "y"]).await;
        if err == 0 {
            break;
        }
        assert!(
            (err == E::NotLeaderOrFollower.code() || err == E::UnknownTopicOrPartition.code())
                && Instant::now() < deadline,
            "produce to the new partition: error {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The leader controller crashes; topic creation through a broker works again within seconds.
    let old = cluster.node(4).state().meta.leader().expect("a leader");
    assert!((1..=3).contains(&old));
    cluster.crash(old).await;
    let crashed = Instant::now();
    let mut c5 = Client::connect(cluster.node(5)).await;
    create(&mut c5, "after-controller-crash", 2, &[]).await;
    println!(
        "isolated mode: topic created {:?} after the leader controller {old} crashed",
        crashed.elapsed()
    );
    assert!(crashed.elapsed() < Duration::from_secs(10));
    let new = cluster.node(5).state().meta.leader().expect("a new leader");
    assert!(new != old && (1..=3).contains(&new));
    // Both brokers are still live (the new leader judges their heartbeats) and the data is there.
    cluster
        .wait(
            Duration::from_secs(10),
            "brokers 4 and 5 live in the new leader's view",
            |c| {
                let st = c.node(new).state().meta.state();
                st.is_live(4) && st.is_live(5) && st.topics.contains_key("after-controller-crash")
            },
        )
        .await;
    let (err, hw, _) = fetch(&mut to_leader, "isolated", 0).await;
    assert_eq!((err, hw), (0, 2));
    cluster.shutdown().await;
}
