//! A partition leader cut off from the other brokers by the loopback proxies (`common::net`): it must not
//! acknowledge acks=all writes, the other two elect a new leader and carry on, and once the network heals the old
//! leader follows, truncating what it appended alone, which no consumer ever sees.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{create_on_with, fetch_values, placement, produce, replica_log, Cluster};
use common::net::Mode;
use common::Client;
use kafka_protocol::error::ResponseError as E;

const TOPIC: &str = "isolated";

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// An acks=all answer from a leader that cannot reach its followers: any refusal, never success.
fn assert_not_acknowledged(code: i16, what: &str) {
    let refusals = [
        E::NotEnoughReplicas.code(),
        E::NotEnoughReplicasAfterAppend.code(),
        E::NotLeaderOrFollower.code(),
        E::RequestTimedOut.code(),
    ];
    assert!(
        refusals.contains(&code),
        "{what}: answered {code}, where only a refusal ({refusals:?}) is allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_nothing_and_its_tail_is_truncated() {
    isolated_leader(Mode::Drop, false).await;
}

/// The partition leader is also the raft leader: the other two must elect a raft leader first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_that_also_leads_the_quorum_acknowledges_nothing() {
    isolated_leader(Mode::Drop, true).await;
}

/// Links frozen instead of cut: what was in flight arrives late after healing (stale fetches, heartbeats, raft
/// messages of the old term).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_acknowledges_nothing_and_its_tail_is_truncated() {
    isolated_leader(Mode::Stall, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_that_also_leads_the_quorum_acknowledges_nothing() {
    isolated_leader(Mode::Stall, true).await;
}

/// Cuts off (`mode`) the leader of an RF=3, min.insync.replicas=2 partition, which is or is not also the raft
/// leader (`raft_leader`), and checks the whole story: refusals, failover, truncation, convergence.
async fn isolated_leader(mode: Mode, raft_leader: bool) {
    let cluster = Cluster::start_with_net(
        3,
        &[
            ("broker.heartbeat.interval.ms", "200"),
            ("broker.session.timeout.ms", "1500"),
            ("replica.lag.time.max.ms", "2000"),
        ],
    )
    .await;
    let mut admin = Client::connect(cluster.node(1)).await;
    let quorum_leader = cluster
        .node(1)
        .state()
        .meta
        .leader()
        .expect("a raft leader");
    let old = if raft_leader {
        quorum_leader
    } else {
        quorum_leader % 3 + 1
    };
    let replicas: Vec<i32> = (0..3).map(|i| (old - 1 + i) % 3 + 1).collect();
    create_on_with(
        &mut admin,
        TOPIC,
        &replicas,
        &[("min.insync.replicas", "2")],
    )
    .await;
    cluster
        .wait(Duration::from_secs(10), "every broker sees ISR = 3", |c| {
            c.live().all(|b| {
                placement(b, TOPIC).is_some_and(|(l, _, isr)| l == old && isr.len() == 3)
                    && b.state().partitions.get(TOPIC, 0).is_some()
            }) && c
                .node(old)
                .state()
                .partitions
                .get(TOPIC, 0)
                .unwrap()
                .is_leader()
        })
        .await;
    assert_eq!(
        cluster.node(old).state().meta.leader() == Some(old),
        raft_leader,
        "the raft leader moved before the fault"
    );
    let others: Vec<i32> = (1..=3).filter(|i| *i != old).collect();
    let old_epoch = cluster
        .node(old)
        .state()
        .partitions
        .get(TOPIC, 0)
        .unwrap()
        .leader_epoch();

    // Acknowledged before the fault: on every replica.
    let before = values("before-", 5);
    let mut to_old = Client::connect(cluster.node(old)).await;
    for v in &before {
        assert_eq!(produce(&mut to_old, TOPIC, -1, 5_000, &[v]).await.0, 0);
    }
    let acked_end = before.len() as i64;

    cluster.set_net(old, mode);
    // The old leader still believes it leads: acks=1 writes land in its log alone, the divergent tail.
    let tail = values("tail-", 3);
    for v in &tail {
        let (code, _) = produce(&mut to_old, TOPIC, 1, 5_000, &[v]).await;
        assert_eq!(code, 0, "acks=1 on the isolated leader before it knows");
    }
    {
        let p = cluster.node(old).state().partitions.get(TOPIC, 0).unwrap();
        assert_eq!(p.log_end_offset(), acked_end + tail.len() as i64);
        assert_eq!(p.high_watermark(), acked_end, "the tail is not replicated");
    }
    // A consumer of the isolated leader sees nothing above the high watermark.
    let (code, hw, seen) = fetch_values(&mut to_old, TOPIC, 0).await;
    assert_eq!((code, hw), (0, acked_end));
    assert_eq!(seen, before);
    // acks=all on the isolated leader while the others have not moved yet: never acknowledged.
    let mut early = Client::connect(cluster.node(old)).await;
    let early_write = tokio::spawn(async move {
        produce(&mut early, TOPIC, -1, 2_000, &["early-all"])
            .await
            .0
    });

    // The other two fence it and elect a new leader within about the session timeout.
    let isolated_at = Instant::now();
    cluster
        .wait(
            Duration::from_secs(15),
            "the two connected brokers elect a new leader without the old one",
            |c| {
                others.iter().all(|b| {
                    placement(c.node(*b), TOPIC).is_some_and(|(l, _, isr)| {
                        others.contains(&l) && !isr.contains(&old) && isr.len() == 2
                    })
                })
            },
        )
        .await;
    let failover = isolated_at.elapsed();
    println!("failover after isolation: {failover:?}");
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?} with a 1.5 s session timeout"
    );
    let (new, _, _) = placement(cluster.node(others[0]), TOPIC).unwrap();
    assert_eq!(placement(cluster.node(others[1]), TOPIC).unwrap().0, new);
    let new_part = cluster.node(new).state().partitions.get(TOPIC, 0).unwrap();
    cluster
        .wait(
            Duration::from_secs(5),
            "the new leader applies its epoch",
            |_| new_part.is_leader(),
        )
        .await;
    assert!(new_part.leader_epoch() > old_epoch);

    assert_not_acknowledged(
        early_write.await.unwrap(),
        "acks=all on the isolated leader",
    );
    // Now that the others have moved on, the isolated leader still acknowledges nothing.
    for v in ["late-all-0", "late-all-1"] {
        let (code, _) = produce(&mut to_old, TOPIC, -1, 1_500, &[v]).await;
        assert_not_acknowledged(
            code,
            "acks=all on the isolated old leader after the failover",
        );
    }
    // Its consumers still see only what was acknowledged.
    let (_, hw, seen) = fetch_values(&mut to_old, TOPIC, 0).await;
    assert_eq!(hw, acked_end);
    assert_eq!(seen, before);

    // The new leader accepts acks=all writes with the remaining two in sync.
    let after = values("after-", 5);
    let mut to_new = Client::connect(cluster.node(new)).await;
    for v in &after {
        let (code, _) = produce(&mut to_new, TOPIC, -1, 5_000, &[v]).await;
        assert_eq!(code, 0, "acks=all on the new leader with ISR of 2");
    }
    let old_part = cluster.node(old).state().partitions.get(TOPIC, 0).unwrap();
    assert!(
        old_part.log_end_offset() > acked_end,
        "the isolated replica kept its divergent tail"
    );

    // Heal: the old leader learns the new epoch, truncates its tail, follows and rejoins the ISR.
    cluster.set_net(old, Mode::Pass);
    let mut expected = before.clone();
    expected.extend(after.iter().cloned());
    let expected_end = expected.len() as i64;
    cluster
        .wait(
            Duration::from_secs(30),
            "the old leader follows, catches up and is back in the ISR",
            |c| {
                !old_part.is_leader()
                    && c.live().all(|b| {
                        placement(b, TOPIC).is_some_and(|(l, _, isr)| l == new && isr.len() == 3)
                            && b.state().partitions.get(TOPIC, 0).unwrap().log_end_offset()
                                == expected_end
                    })
                    && new_part.high_watermark() == expected_end
            },
        )
        .await;
    // It refuses clients as a follower.
    let mut to_old = Client::connect(cluster.node(old)).await;
    let (code, _) = produce(&mut to_old, TOPIC, -1, 2_000, &["to-a-follower"]).await;
    assert_eq!(code, E::NotLeaderOrFollower.code());

    // Every replica holds exactly the acknowledged records, byte for byte the same; the tail is gone.
    let logs: Vec<_> = (1..=3)
        .map(|b| replica_log(cluster.node(b), TOPIC))
        .collect();
    for (i, (bytes, vals)) in logs.iter().enumerate() {
        assert_eq!(*vals, expected, "replica on broker {}", i + 1);
        assert_eq!(*bytes, logs[0].0, "replica on broker {} differs", i + 1);
    }
    for v in tail
        .iter()
        .map(String::as_str)
        .chain(["early-all", "late-all-0", "late-all-1"])
    {
        assert!(!expected.iter().any(|e| e == v));
    }
    let (code, hw, seen) = fetch_values(&mut to_new, TOPIC, 0).await;
    assert_eq!((code, hw), (0, expected_end));
    assert_eq!(seen, expected);

    // And the cluster, whole again, takes acks=all writes.
    let (code, base) = produce(&mut to_new, TOPIC, -1, 5_000, &refs(&values("healed-", 2))).await;
    assert_eq!((code, base), (0, expected_end));
    cluster.shutdown().await;
}
