//! Broker liveness in a controller quorum of three `Meta`s over 127.0.0.1: heartbeats keep every
//! broker live, a stopped node is fenced and loses its leaderships, a restarted one is unfenced.
//! Intervals are short (100 ms heartbeats, 1 s sessions); every wait is bounded.

mod common;

use common::{bounded, broker, free_addrs, wait_until, WAIT};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fjord_meta::{Command, CommandResult, Meta, PartitionMeta, NO_LEADER};
use uuid::Uuid;

const HEARTBEAT: Duration = Duration::from_millis(100);
const SESSION: Duration = Duration::from_millis(1000);

struct Cluster {
    _root: tempfile::TempDir,
    dirs: BTreeMap<i32, PathBuf>,
    voters: BTreeMap<i32, SocketAddr>,
    nodes: BTreeMap<i32, Meta>,
}

impl Cluster {
    async fn start(n: i32) -> Cluster {
        Cluster::start_with(n, SESSION).await
    }

    async fn start_with(n: i32, session: Duration) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let voters: BTreeMap<i32, SocketAddr> = (1..=n).zip(free_addrs(n as usize)).collect();
        let dirs = (1..=n)
            .map(|id| (id, root.path().join(format!("node-{id}"))))
            .collect();
        let mut cluster = Cluster {
            _root: root,
            dirs,
            voters,
            nodes: BTreeMap::new(),
        };
        let opening: Vec<_> = (1..=n).map(|id| (id, cluster.spawn_open(id))).collect();
        for (id, task) in opening {
            let meta = bounded("open", task).await.unwrap().expect("open_quorum");
            meta.start_liveness(HEARTBEAT, session);
            cluster.nodes.insert(id, meta);
        }
        cluster
    }

    fn spawn_open(&self, id: i32) -> tokio::task::JoinHandle<fjord_meta::Result<Meta>> {
        let dir = self.dirs[&id].clone();
        let voters = self.voters.clone();
        let listen = self.voters[&id];
        tokio::spawn(async move { Meta::open_quorum(&dir, id, voters, listen, broker(id)).await })
    }

    async fn restart(&mut self, id: i32) {
        let meta = bounded("reopen", self.spawn_open(id))
            .await
            .unwrap()
            .expect("reopen");
        meta.start_liveness(HEARTBEAT, SESSION);
        self.nodes.insert(id, meta);
    }

    async fn stop(&mut self, id: i32) {
        let meta = self.nodes.remove(&id).expect("running node");
        bounded("shutdown", meta.shutdown()).await.unwrap();
    }

    /// The leader all running nodes agree on, waiting for an election if needed.
    async fn leader(&self) -> i32 {
        let mut leader = None;
        wait_until("all running nodes agree on a running leader", WAIT, || {
            let seen: Vec<_> = self.nodes.values().map(|m| m.leader()).collect();
            leader = seen[0].filter(|l| self.nodes.contains_key(l));
            leader.is_some() && seen.iter().all(|l| *l == leader)
        })
        .await;
        leader.unwrap()
    }

    fn node(&self, id: i32) -> &Meta {
        &self.nodes[&id]
    }

    /// Waits until every running node's state satisfies `cond`.
    async fn wait_all(&self, what: &str, cond: impl Fn(&fjord_meta::ClusterState) -> bool) {
        for (id, meta) in &self.nodes {
            wait_until(&format!("node {id}: {what}"), WAIT, || cond(&meta.state())).await;
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

fn part(leader: i32, le: i32, pe: i32, replicas: &[i32], isr: &[i32]) -> PartitionMeta {
    PartitionMeta {
        leader,
        leader_epoch: le,
        partition_epoch: pe,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        offline: Vec::new(),
    }
}

/// Stops `victim` (its heartbeats stop with it) and checks that the others fence it and move its
/// leaderships, then restarts it and checks that it is unfenced and leads where it was the last
/// in-sync replica. Topic "t": partition i-1 is preferred by broker i ([i, i+1, i+2] rotated),
/// partition 3 has the victim as its only replica.
async fn fence_and_return(victim_is_leader: bool) {
    let mut cluster = Cluster::start(3).await;
    cluster
        .wait_all("3 brokers registered, none fenced", |s| {
            s.brokers.len() == 3 && s.fenced.is_empty()
        })
        .await;
    let leader = cluster.leader().await;
    let victim = if victim_is_leader {
        leader
    } else {
        (1..=3).find(|&id| id != leader).unwrap()
    };
    let proposer = (1..=3).find(|&id| id != victim && id != leader).unwrap();

    let rotated = |first: i32| -> Vec<i32> { (0..3).map(|k| (first - 1 + k) % 3 + 1).collect() };
    let cmd = Command::CreateTopic {
        name: "t".into(),
        id: Uuid::new_v4(),
        assignments: vec![rotated(1), rotated(2), rotated(3), vec![victim]],
        configs: BTreeMap::new(),
        internal: false,
    };
    // Proposed from a follower: forwarded to the leader.
    assert_eq!(
        bounded("create", cluster.node(proposer).propose(cmd))
            .await
            .unwrap(),
        CommandResult::Ok
    );
    let created = cluster.node(proposer).state().topics["t"]
        .partitions
        .clone();
    for i in 1..=3 {
        assert_eq!(
            created[i as usize - 1],
            part(i, 0, 0, &rotated(i), &rotated(i))
        );
    }
    assert_eq!(created[3], part(victim, 0, 0, &[victim], &[victim]));

    // Heartbeats reach the leader from all three, without fencing anybody.
    let leader_meta = cluster.node(leader).clone();
    wait_until(
        "the leader sees fresh heartbeats from 1, 2, 3",
        WAIT,
        || {
            let ages = leader_meta.last_heartbeat_ages();
            ages.keys().copied().collect::<BTreeSet<_>>() == BTreeSet::from([1, 2, 3])
                && ages.values().all(|a| *a < SESSION)
        },
    )
    .await;
    assert!(cluster.node(proposer).last_heartbeat_ages().is_empty());
    tokio::time::sleep(SESSION * 2).await;
    for id in 1..=3 {
        let s = cluster.node(id).state();
        assert!(s.fenced.is_empty(), "node {id}: {:?}", s.fenced);
        assert_eq!(s.live_brokers(), vec![1, 2, 3]);
    }

    let stopped_at = Instant::now();
    cluster.stop(victim).await;
    cluster
        .wait_all("the stopped broker is fenced", |s| {
            s.fenced == BTreeSet::from([victim])
        })
        .await;
    let fenced_after = stopped_at.elapsed();
    // Its controller port refuses connections once it stopped: fenced after a heartbeat interval of refusals,
    // not a whole session (the session path is tested with a broker that stays reachable but goes silent).
    assert!(
        fenced_after >= HEARTBEAT,
        "fenced after {fenced_after:?}, before its port had refused for a heartbeat interval"
    );
    // Exactly one fencing: the victim's preferred partition moves to the next replica, the
    // victim leaves every ISR with another member, the single-replica partition has no leader.
    let expected: Vec<PartitionMeta> = (1..=3)
        .map(|i| {
            let replicas = rotated(i);
            let isr: Vec<i32> = replicas.iter().copied().filter(|&r| r != victim).collect();
            if i == victim {
                part(isr[0], 1, 1, &replicas, &isr)
            } else {
                part(i, 0, 1, &replicas, &isr)
            }
        })
        .chain([part(NO_LEADER, 1, 1, &[victim], &[victim])])
        .collect();
    cluster
        .wait_all("partitions after fencing", |s| {
            s.topics["t"].partitions == expected
        })
        .await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, victim);
    let leader_meta = cluster.node(new_leader).clone();
    wait_until("the leader reports the victim silent", WAIT, || {
        let ages = leader_meta.last_heartbeat_ages();
        ages.get(&victim).is_some_and(|a| *a > SESSION)
            && ages.iter().all(|(b, a)| *b == victim || *a < SESSION)
    })
    .await;

    // The leader of a partition shrinks its ISR with AlterPartition (proposed from any node),
    // judged against the epochs it has seen.
    let survivor_led = (1..=3).find(|&i| i != victim).unwrap();
    let p = expected[survivor_led as usize - 1].clone();
    let alter = |pe: i32, isr: Vec<i32>| Command::AlterPartition {
        topic: "t".into(),
        partition: survivor_led - 1,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: pe,
        new_isr: isr,
    };
    let some = *cluster.nodes.keys().next().unwrap();
    assert_eq!(
        cluster
            .node(some)
            .propose(alter(0, vec![p.leader]))
            .await
            .unwrap(),
        CommandResult::InvalidUpdateVersion
    );
    assert_eq!(
        cluster
            .node(some)
            .propose(alter(1, vec![p.leader]))
            .await
            .unwrap(),
        CommandResult::PartitionUpdated { partition_epoch: 2 }
    );
    // The fenced victim cannot be added back.
    assert!(matches!(
        cluster
            .node(some)
            .propose(alter(2, vec![p.leader, victim]))
            .await
            .unwrap(),
        CommandResult::IneligibleReplica(_)
    ));
    let mut expected = expected;
    expected[survivor_led as usize - 1].isr = vec![p.leader];
    expected[survivor_led as usize - 1].partition_epoch = 2;

    // The victim returns with the same broker info (so no re-registration): its heartbeats
    // unfence it, and it leads the partition of which it is the last in-sync replica.
    cluster.restart(victim).await;
    expected[3] = part(victim, 2, 2, &[victim], &[victim]);
    cluster
        .wait_all("the returned broker is unfenced", |s| {
            s.fenced.is_empty() && s.live_brokers() == vec![1, 2, 3]
        })
        .await;
    cluster
        .wait_all("partitions after unfencing", |s| {
            s.topics["t"].partitions == expected
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_stopped_follower_should_fence_it_move_its_leadership_and_unfence_it_on_return() {
    fence_and_return(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_stopped_raft_leader_should_fence_it_after_the_new_leaders_grace_period() {
    fence_and_return(true).await;
}

/// A broker whose process is gone (its controller port refuses connections) is fenced long before its session
/// ends, so that its partitions fail over in a few seconds even with Kafka's 9 s default session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_stopped_broker_with_a_refusing_port_should_fence_it_well_before_its_session() {
    let long = Duration::from_secs(30);
    let mut cluster = Cluster::start_with(3, long).await;
    cluster
        .wait_all("3 brokers registered, none fenced", |s| {
            s.brokers.len() == 3 && s.fenced.is_empty()
        })
        .await;
    let leader = cluster.leader().await;
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    let stopped_at = Instant::now();
    cluster.stop(victim).await;
    cluster
        .wait_all("the stopped broker is fenced", |s| {
            s.fenced == BTreeSet::from([victim])
        })
        .await;
    let fenced_after = stopped_at.elapsed();
    assert!(
        fenced_after < Duration::from_secs(5),
        "fenced only after {fenced_after:?} (session {long:?})"
    );
    cluster.shutdown().await;
}

/// A broker that stops heartbeating but whose process still listens (paused, cut off, overloaded) keeps its
/// session: it is fenced only once the session ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_silent_but_listening_broker_should_fence_it_only_after_its_session() {
    let cluster = Cluster::start(3).await;
    cluster
        .wait_all("3 brokers registered, none fenced", |s| {
            s.brokers.len() == 3 && s.fenced.is_empty()
        })
        .await;
    let leader = cluster.leader().await;
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    // Heartbeats every hour from now on (the first one right away): silent, but still serving raft.
    let silenced_at = Instant::now();
    cluster
        .node(victim)
        .start_liveness(Duration::from_secs(3600), SESSION);
    cluster
        .wait_all("the silent broker is fenced", |s| {
            s.fenced == BTreeSet::from([victim])
        })
        .await;
    let fenced_after = silenced_at.elapsed();
    assert!(
        fenced_after >= SESSION - HEARTBEAT * 2,
        "fenced after {fenced_after:?}, before its session ended"
    );
    cluster.shutdown().await;
}
