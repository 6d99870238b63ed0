//! DescribeQuorum (key 55) against three in-process brokers formed from KRaft properties: every broker
//! answers for `__cluster_metadata` partition 0 with the raft leader's view (as Kafka brokers forward the
//! request to the active controller), and a new leader is reported after the old one stops.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::Client;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::describe_quorum_response::PartitionData as Answer;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn request(topic: &'static str, partition: i32) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(topic)))
        .with_partitions(vec![
            PartitionData::default().with_partition_index(partition)
        ])])
}

async fn describe(c: &mut Client, version: i16) -> (DescribeQuorumResponse, Answer) {
    let resp = c.send(version, &request("__cluster_metadata", 0)).await;
    assert_eq!(resp.error_code, 0);
    let p = resp.topics[0].partitions[0].clone();
    (resp, p)
}

fn ids(replicas: &[describe_quorum_response::ReplicaState]) -> Vec<i32> {
    let mut ids: Vec<i32> = replicas.iter().map(|r| r.replica_id.0).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_names_the_raft_leader_and_a_new_one_after_the_leader_stops() {
    let mut cluster = Cluster::start(3, &[]).await;
    let raft_leader = cluster
        .node(1)
        .state()
        .meta
        .leader()
        .expect("a raft leader");

    for id in 1..=3 {
        let mut c = Client::connect(cluster.node(id)).await;
        for version in 0..=2 {
            let (resp, p) = describe(&mut c, version).await;
            assert_eq!(
                p.error_code, 0,
                "broker {id} v{version}: {:?}",
                p.error_message
            );
            assert_eq!(p.leader_id.0, raft_leader, "broker {id} v{version}");
            assert!(p.leader_epoch >= 1, "the leader epoch is the raft term");
            assert!(
                p.high_watermark > 0,
                "entries are committed: {}",
                p.high_watermark
            );
            assert_eq!(ids(&p.current_voters), vec![1, 2, 3]);
            assert!(p.observers.is_empty());
            let leader = p
                .current_voters
                .iter()
                .find(|r| r.replica_id.0 == raft_leader)
                .unwrap();
            assert!(leader.log_end_offset >= p.high_watermark);
            if version >= 1 {
                // Followers replicate within heartbeats: each was heard from and seen caught up.
                for r in &p.current_voters {
                    assert!(r.last_fetch_timestamp > 0, "v{version}: {r:?}");
                    assert!(r.last_caught_up_timestamp > 0, "v{version}: {r:?}");
                }
            } else {
                assert!(resp.nodes.is_empty());
            }
            if version >= 2 {
                let mut node_ids: Vec<i32> = resp.nodes.iter().map(|n| n.node_id.0).collect();
                node_ids.sort_unstable();
                assert_eq!(node_ids, vec![1, 2, 3]);
                assert!(resp.nodes.iter().all(
                    |n| n.listeners[0].name.as_str() == "CONTROLLER" && n.listeners[0].port > 0
                ));
            }
        }
    }

    // Another topic or partition is not the metadata log.
    let mut c = Client::connect(cluster.node(1)).await;
    let resp = c.send(2, &request("orders", 0)).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        E::UnknownTopicOrPartition.code()
    );
    let resp = c.send(2, &request("__cluster_metadata", 1)).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code,
        E::UnknownTopicOrPartition.code()
    );

    // Stop the raft leader's broker: the others elect a new leader and say so.
    cluster.stop(raft_leader).await;
    let survivor = (1..=3).find(|id| *id != raft_leader).unwrap();
    let mut c = Client::connect(cluster.node(survivor)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let p = loop {
        let (_, p) = describe(&mut c, 2).await;
        if p.error_code == 0 && p.leader_id.0 != raft_leader && p.leader_id.0 > 0 {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no new raft leader within 15 s: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        ids(&p.current_voters),
        vec![1, 2, 3],
        "the stopped voter stays a voter"
    );
    let stopped = p
        .current_voters
        .iter()
        .find(|r| r.replica_id.0 == raft_leader)
        .unwrap();
    let new_leader = p
        .current_voters
        .iter()
        .find(|r| r.replica_id.0 == p.leader_id.0)
        .unwrap();
    assert!(stopped.log_end_offset <= new_leader.log_end_offset);
    cluster.shutdown().await;
}
