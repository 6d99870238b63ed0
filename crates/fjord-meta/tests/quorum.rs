//! A controller quorum of several `Meta`s in one process, talking over 127.0.0.1: bootstrap from a
//! static voter set, proposals from followers, leader loss, losing a majority, voter changes, and
//! garbage on the controller port. Every wait is bounded.

mod common;

use common::{bounded, broker, free_addrs, wait_until, WAIT};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fjord_meta::{Command, CommandResult, Error, Meta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

fn create_topic(name: &str) -> Command {
    Command::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        assignments: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
        configs: BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]),
        internal: false,
    }
}

struct Cluster {
    _root: tempfile::TempDir,
    dirs: BTreeMap<i32, PathBuf>,
    voters: BTreeMap<i32, SocketAddr>,
    nodes: BTreeMap<i32, Meta>,
}

impl Cluster {
    /// `n` voters (ids 1..=n) with ports and directories, none running.
    fn new(n: i32) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let addrs = free_addrs(n as usize);
        let voters: BTreeMap<i32, SocketAddr> = (1..=n).zip(addrs).collect();
        let dirs: BTreeMap<i32, PathBuf> = (1..=n)
            .map(|id| (id, root.path().join(format!("node-{id}"))))
            .collect();
        Cluster {
            _root: root,
            dirs,
            voters,
            nodes: BTreeMap::new(),
        }
    }

    /// Starts `n` voters concurrently, as a cluster's first start would.
    async fn start(n: i32) -> Cluster {
        let mut cluster = Cluster::new(n);
        cluster.open_all().await;
        cluster
    }

    async fn open_all(&mut self) {
        let opening: Vec<_> = self
            .voters
            .keys()
            .map(|&id| (id, self.spawn_open(id)))
            .collect();
        for (id, task) in opening {
            let meta = bounded("open", task).await.unwrap().expect("open_quorum");
            self.nodes.insert(id, meta);
        }
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

    async fn shutdown(mut self) {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

async fn propose(meta: &Meta, cmd: Command) -> CommandResult {
    bounded("propose", meta.propose(cmd))
        .await
        .expect("propose")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_voters_when_follower_proposes_should_apply_on_all_three() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();

    // Bootstrap agreed on one cluster id, and every voter's registration was applied locally
    // before its open returned (the others' may still be on their way).
    let cluster_id = cluster.node(1).state().cluster_id.clone();
    assert_eq!(cluster_id.len(), 22);
    for id in 1..=3 {
        let state = cluster.node(id).state();
        assert_eq!(state.cluster_id, cluster_id, "node {id}");
        assert_eq!(state.brokers.get(&id), Some(&broker(id)), "node {id}");
    }
    for id in 1..=3 {
        wait_until(&format!("node {id} sees 3 brokers"), WAIT, || {
            cluster.node(id).state().brokers.len() == 3
        })
        .await;
    }

    let cmd = create_topic("orders");
    assert_eq!(
        propose(cluster.node(follower), cmd).await,
        CommandResult::Ok
    );
    // Applied locally before propose returned, not merely on the leader.
    let topic = cluster.node(follower).state().topics["orders"].clone();
    assert_eq!(topic.partitions.len(), 3);
    assert_eq!(topic.configs["retention.ms"], "3600000");
    for id in 1..=3 {
        wait_until(&format!("node {id} applies orders"), WAIT, || {
            cluster.node(id).state().topics.get("orders") == Some(&topic)
        })
        .await;
        assert_eq!(cluster.node(id).state().controller_id, leader);
    }
    // The state machine is still the judge, through forwarding: a second create fails.
    assert_eq!(
        propose(cluster.node(follower), create_topic("orders")).await,
        CommandResult::TopicAlreadyExists
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_leader_shutdown_should_elect_new_leader_keep_commits_and_let_it_rejoin() {
    let mut cluster = Cluster::start(3).await;
    let old = cluster.leader().await;
    assert_eq!(
        propose(cluster.node(old), create_topic("before")).await,
        CommandResult::Ok
    );
    cluster.stop(old).await;

    let stopped_at = Instant::now();
    let new = cluster.leader().await;
    assert_ne!(new, old);
    let failover = stopped_at.elapsed();
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );

    let survivor = *cluster.nodes.keys().find(|&&id| id != new).unwrap();
    assert_eq!(
        propose(cluster.node(survivor), create_topic("after")).await,
        CommandResult::Ok
    );
    for (id, meta) in &cluster.nodes {
        let state = meta.state();
        assert!(
            state.topics.contains_key("before"),
            "node {id} lost a commit"
        );
        wait_until(&format!("node {id} applies after"), WAIT, || {
            meta.state().topics.contains_key("after")
        })
        .await;
    }

    // The old leader restarts from its directory and catches up before open returns.
    cluster.restart(old).await;
    let state = cluster.node(old).state();
    assert!(state.topics.contains_key("before"));
    assert!(
        state.topics.contains_key("after"),
        "restarted node did not catch up"
    );
    assert_eq!(
        propose(cluster.node(old), create_topic("from-restarted")).await,
        CommandResult::Ok
    );
    for (id, meta) in &cluster.nodes {
        wait_until(&format!("node {id} applies from-restarted"), WAIT, || {
            meta.state().topics.contains_key("from-restarted")
        })
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_five_voters_when_two_stop_should_keep_working() {
    let mut cluster = Cluster::start(5).await;
    let leader = cluster.leader().await;
    assert_eq!(
        propose(cluster.node(leader), create_topic("t1")).await,
        CommandResult::Ok
    );
    // Lose the leader and one follower.
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    cluster.stop(leader).await;
    cluster.stop(follower).await;

    let start = Instant::now();
    for (i, id) in cluster
        .nodes
        .keys()
        .copied()
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            propose(cluster.node(id), create_topic(&format!("after-{i}"))).await,
            CommandResult::Ok,
            "proposal on node {id}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    for (id, meta) in &cluster.nodes {
        wait_until(&format!("node {id} has every topic"), WAIT, || {
            let s = meta.state();
            ["t1", "after-0", "after-1", "after-2"]
                .iter()
                .all(|t| s.topics.contains_key(*t))
        })
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_voters_when_two_stop_should_fail_clearly_then_recover_when_one_returns() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    // Keep a follower, so that the lost pair includes the leader; then also try from a lone leader.
    let survivor = (1..=3).find(|&id| id != leader).unwrap();
    let lost: Vec<i32> = (1..=3).filter(|&id| id != survivor).collect();
    for &id in &lost {
        cluster.stop(id).await;
    }

    let meta = cluster.node(survivor).clone();
    meta.set_request_timeout(Duration::from_secs(3));
    let start = Instant::now();
    let err = bounded("propose without quorum", meta.propose(create_topic("lost")))
        .await
        .expect_err("a proposal without a majority must fail");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "failed after {took:?}, expected about the 3 s request timeout"
    );
    let Error::NoQuorum(msg) = &err else {
        panic!("expected NoQuorum, got {err:?}");
    };
    for id in &lost {
        assert!(
            msg.contains(&format!("{id}@{}", cluster.voters[id])),
            "error does not name unreachable voter {id}: {msg}"
        );
    }
    assert!(!meta.state().topics.contains_key("lost"));

    // One voter returns: a majority again, and proposals work.
    cluster.restart(lost[0]).await;
    meta.set_request_timeout(Duration::from_secs(30));
    assert_eq!(
        propose(&meta, create_topic("recovered")).await,
        CommandResult::Ok
    );
    assert!(
        cluster
            .node(lost[0])
            .state()
            .topics
            .contains_key("recovered")
            || {
                let m = cluster.node(lost[0]).clone();
                wait_until("returned node applies recovered", WAIT, || {
                    m.state().topics.contains_key("recovered")
                })
                .await;
                true
            }
    );

    // A leader left alone (its follower stops) also refuses in bounded time instead of hanging.
    let leader = cluster.leader().await;
    let other = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    cluster.stop(other).await;
    let lone = cluster.node(leader).clone();
    lone.set_request_timeout(Duration::from_secs(3));
    let start = Instant::now();
    let err = bounded(
        "propose on a lone leader",
        lone.propose(create_topic("lone")),
    )
    .await
    .expect_err("a lone leader must not commit");
    assert!(
        matches!(err, Error::NoQuorum(_)),
        "expected NoQuorum (nothing proposed), got {err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_live_cluster_should_add_a_fourth_voter_then_remove_the_leader() {
    let mut cluster = Cluster::start(3).await;
    let first = cluster.node(1).clone();
    assert_eq!(propose(&first, create_topic("t1")).await, CommandResult::Ok);

    // Node 4 starts with the original voters, which do not include it: it joins as an observer (a raft
    // learner), caught up but not voting, and waits to be added.
    let addr4 = free_addrs(1)[0];
    let dir4 = cluster.dirs[&1].with_file_name("node-4");
    cluster.dirs.insert(4, dir4.clone());
    let node4 = bounded(
        "open node 4",
        Meta::open_quorum(&dir4, 4, cluster.voters.clone(), addr4, broker(4)),
    )
    .await
    .expect("open node 4");
    assert!(node4.state().topics.contains_key("t1"));
    assert_eq!(node4.voters(), [1, 2, 3].into());
    let status = bounded("describe", node4.describe_quorum(WAIT))
        .await
        .unwrap();
    assert_eq!(
        status.observers.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![4]
    );
    cluster.voters.insert(4, addr4);
    cluster.nodes.insert(4, node4.clone());

    // Added from a member that need not be the leader.
    let follower = (1..=3)
        .find(|&id| Some(id) != cluster.node(1).leader())
        .unwrap();
    bounded("add voter 4", cluster.node(follower).add_voter(4, addr4))
        .await
        .expect("add_voter");
    for (id, meta) in &cluster.nodes {
        wait_until(&format!("node {id} sees 4 voters"), WAIT, || {
            meta.voters() == [1, 2, 3, 4].into()
        })
        .await;
    }
    wait_until("node 4 catches up", WAIT, || {
        node4.state().topics.contains_key("t1")
    })
    .await;
    assert_eq!(propose(&node4, create_topic("t2")).await, CommandResult::Ok);
    // Adding again is a no-op, not an error.
    bounded("add voter 4 again", first.add_voter(4, addr4))
        .await
        .expect("add_voter again");

    // Remove the leader itself; the rest elect a new one and keep going.
    let leader = cluster.leader().await;
    bounded("remove leader", node4.remove_voter(leader))
        .await
        .expect("remove_voter");
    let remaining: std::collections::BTreeSet<i32> = [1, 2, 3, 4]
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    cluster.stop(leader).await;
    for (id, meta) in &cluster.nodes {
        wait_until(&format!("node {id} sees the voter removed"), WAIT, || {
            meta.voters() == remaining
        })
        .await;
    }
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    for id in remaining.iter().copied() {
        assert_eq!(
            propose(
                cluster.node(id),
                create_topic(&format!("after-remove-{id}"))
            )
            .await,
            CommandResult::Ok
        );
    }
    // Removing a node that is not a voter is refused, not silently accepted.
    let err = bounded("remove non-voter", node4.remove_voter(leader))
        .await
        .expect_err("removing a non-voter");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    cluster.shutdown().await;
}

/// Sends raw bytes on a new connection and returns everything the node answers until it closes
/// the connection (bounded).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // The node may close before reading everything we send; that is fine. Closing our side says
    // that nothing more is coming (a truncated frame is then an error at once, not a stall).
    let _ = conn.write_all(bytes).await;
    let _ = conn.shutdown().await;
    let mut out = Vec::new();
    let _ = bounded("node closes the connection", conn.read_to_end(&mut out)).await;
    out
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// The body of the first frame in `answer`, as text.
fn first_frame_text(answer: &[u8]) -> String {
    assert!(answer.len() >= 4, "no frame in answer {answer:?}");
    let len = u32::from_be_bytes(answer[..4].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&answer[4..4 + len]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_garbage_and_oversized_frames_on_controller_port_should_keep_serving() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();

    for target in [leader, follower] {
        let addr = cluster.voters[&target];
        // An HTTP request: its first 4 bytes read as a ~1.2 GB length.
        let answer = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(first_frame_text(&answer).contains("exceeds"), "{answer:?}");
        // A length just over the limit, followed by nothing.
        let answer = raw_exchange(addr, &(16u32 << 20 | 1).to_be_bytes()).await;
        assert!(first_frame_text(&answer).contains("exceeds"));
        // A well-sized frame of garbage, and valid JSON that is not a request.
        let answer = raw_exchange(addr, &frame(&[0xff; 1000])).await;
        assert!(first_frame_text(&answer).contains("undecodable"));
        let answer = raw_exchange(addr, &frame(br#"{"to":1,"body":{"Vote":42}}"#)).await;
        assert!(first_frame_text(&answer).contains("undecodable"));
        // A request addressed to another node (a misconfigured voter list).
        let wrong = if target == 1 { 2 } else { 1 };
        let body = format!(
            r#"{{"to":{wrong},"body":{{"Forward":{{"op":"ReadIndex","timeout_ms":100}}}}}}"#
        );
        let answer = raw_exchange(addr, &frame(body.as_bytes())).await;
        assert!(first_frame_text(&answer).contains(&format!("this is node {target}")));
        // A truncated frame, then the connection closes.
        let answer = raw_exchange(addr, &[0, 0, 1, 0, b'{']).await;
        assert!(answer.is_empty());
        // A well-formed forwarded request on a raw connection is served.
        let body = format!(
            r#"{{"to":{target},"body":{{"Forward":{{"op":"ReadIndex","timeout_ms":5000}}}}}}"#
        );
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(&frame(body.as_bytes())).await.unwrap();
        let len = bounded("read index answer", conn.read_u32()).await.unwrap();
        let mut buf = vec![0; len as usize];
        conn.read_exact(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        let expected = if target == leader {
            "ReadIndex"
        } else {
            "NotLeader"
        };
        assert!(text.contains(expected), "{text}");
    }

    // A connection that sends a length and stalls does not block anyone else.
    let mut stalled = TcpStream::connect(cluster.voters[&leader]).await.unwrap();
    stalled.write_all(&100u32.to_be_bytes()).await.unwrap();

    // The cluster still replicates and serves proposals through both nodes.
    for id in [follower, leader] {
        assert_eq!(
            propose(cluster.node(id), create_topic(&format!("still-{id}"))).await,
            CommandResult::Ok
        );
    }
    for (id, meta) in &cluster.nodes {
        wait_until(&format!("node {id} applies both"), WAIT, || {
            let s = meta.state();
            s.topics.contains_key(&format!("still-{leader}"))
                && s.topics.contains_key(&format!("still-{follower}"))
        })
        .await;
    }
    assert_eq!(
        cluster.leader().await,
        leader,
        "garbage must not cost leadership"
    );
    drop(stalled);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_unreachable_voters_when_opening_should_fail_in_bound_naming_them() {
    let mut cluster = Cluster::new(3);
    let voters = cluster.voters.clone();
    let start = Instant::now();
    let err = bounded(
        "open alone",
        Meta::open_quorum_with_wait(
            &cluster.dirs[&1],
            1,
            voters.clone(),
            voters[&1],
            broker(1),
            Duration::from_secs(3),
        ),
    )
    .await
    .err()
    .expect("a lone voter of three cannot open");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let Error::NoQuorum(msg) = &err else {
        panic!("expected NoQuorum, got {err:?}");
    };
    assert!(msg.contains("node 1 could not join"), "{msg}");
    for id in [2, 3] {
        assert!(
            msg.contains(&format!("{id}@{}", voters[&id])),
            "voter {id} not named: {msg}"
        );
    }
    // The failed open released the port, and its initialized store rejoins once the peers are up.
    cluster.open_all().await;
    cluster.leader().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn given_single_voter_quorum_should_work_like_open() {
    let root = tempfile::tempdir().unwrap();
    let addr = free_addrs(1)[0];
    // As a broker would get it from its properties.
    let voters = fjord_meta::parse_quorum_voters(&format!("1@{addr}")).unwrap();
    let meta = bounded(
        "open",
        Meta::open_quorum(root.path(), 1, voters.clone(), addr, broker(1)),
    )
    .await
    .unwrap();
    assert_eq!(meta.leader(), Some(1));
    assert_eq!(meta.controller_addr(), Some(addr));
    assert_eq!(propose(&meta, create_topic("t")).await, CommandResult::Ok);
    bounded("shutdown", meta.shutdown()).await.unwrap();
    let meta = bounded(
        "reopen",
        Meta::open_quorum(root.path(), 1, voters, addr, broker(1)),
    )
    .await
    .unwrap();
    assert!(meta.state().topics.contains_key("t"));
    bounded("shutdown", meta.shutdown()).await.unwrap();
}

/// Waits until `dir` holds a snapshot and a purge record (both are written in the background
/// after the snapshot threshold) and returns the index the log was purged up to.
async fn purged_index(dir: &std::path::Path) -> u64 {
    bounded("snapshot and purge", async {
        loop {
            if let Ok(bytes) = std::fs::read(dir.join("purged.json")) {
                if dir.join("snapshot.json").exists() {
                    let purged: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    return purged["index"].as_u64().unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_voter_behind_the_purged_log_when_it_returns_should_catch_up_from_a_snapshot() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let behind = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(behind).await;

    // More than a snapshot's worth of entries (1000), proposed from a few tasks at once.
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let meta = cluster.node(leader).clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let cmd = if i % 2 == 0 {
                        create_topic(&format!("t{t}-{i}"))
                    } else {
                        Command::AllocateProducerIds { count: 10 }
                    };
                    meta.propose(cmd).await.expect("propose");
                }
            })
        })
        .collect();
    for task in tasks {
        bounded("proposals", task).await.unwrap();
    }
    let purged = purged_index(&cluster.dirs[&leader]).await;
    assert!(purged > 100, "log purged only up to {purged}");

    // The returning voter's log ends long before what the leader still has: only a snapshot,
    // sent in chunks over the controller network, can catch it up.
    cluster.restart(behind).await;
    let expected = cluster.node(leader).state();
    let state = cluster.node(behind).state();
    assert_eq!(state.topics.len(), 600);
    assert_eq!(state.next_producer_id, 6000);
    assert_eq!(state.topics, expected.topics);
    assert!(cluster.dirs[&behind].join("snapshot.json").exists());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_forged_raft_messages_on_controller_port_should_refuse_them_and_keep_serving() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let addr = cluster.voters[&follower];
    let log_id = |term: u64, index: u64| {
        format!(r#"{{"leader_id":{{"term":{term},"node_id":{leader}}},"index":{index}}}"#)
    };
    let vote = |term: u64| {
        format!(r#"{{"leader_id":{{"term":{term},"node_id":{leader}}},"committed":true}}"#)
    };
    let entry = |index: u64| {
        format!(
            r#"{{"log_id":{},"payload":{{"Normal":{{"AllocateProducerIds":{{"count":1}}}}}}}}"#,
            log_id(1, index)
        )
    };
    let append = |vote: String, prev: String, entries: Vec<String>| {
        format!(
            r#"{{"to":{follower},"body":{{"AppendEntries":{{"vote":{vote},"prev_log_id":{prev},"entries":[{}],"leader_commit":{}}}}}}}"#,
            entries.join(","),
            log_id(1, 90)
        )
    };
    let snapshot = |offset: u64, data: &str| {
        format!(
            r#"{{"to":{follower},"body":{{"InstallSnapshot":{{"vote":{},"meta":{{"last_log_id":{},"last_membership":{{"log_id":null,"membership":{{"configs":[],"nodes":{{}}}}}},"snapshot_id":"forged"}},"offset":{offset},"data":{data},"done":true}}}}}}"#,
            vote(1000),
            log_id(1000, 5000)
        )
    };
    let cases = [
        // Entries with a gap after prev_log_id (this stopped openraft's core before the check).
        (
            append(vote(1), log_id(1, 3), vec![entry(50), entry(70)]),
            "does not follow",
        ),
        // A term that would overflow.
        (
            append(vote(u64::MAX), "null".into(), vec![]),
            "out of range",
        ),
        // A snapshot that is not cluster metadata (this stopped the core as a storage error).
        (snapshot(0, "[1,2,3]"), "does not decode"),
        // A chunk far beyond any real snapshot: refused before anything is allocated.
        (snapshot(1 << 40, "[1]"), "byte limit"),
    ];
    for (request, expected) in &cases {
        let answer = raw_exchange(addr, &frame(request.as_bytes())).await;
        let text = first_frame_text(&answer);
        assert!(text.contains(expected), "expected {expected:?} in {text}");
    }

    // None of it reached raft: the same leader, and the follower still serves proposals.
    assert_eq!(
        propose(cluster.node(follower), create_topic("after-forgery")).await,
        CommandResult::Ok
    );
    assert_eq!(cluster.leader().await, leader);
    assert!(cluster.node(follower).state().next_producer_id == 0);

    // A forwarded command whose apply would overflow on every replica is refused by the leader.
    let err = bounded(
        "huge producer id block",
        cluster
            .node(follower)
            .propose(Command::AllocateProducerIds { count: i64::MAX }),
    )
    .await
    .expect_err("must be refused");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    assert_eq!(
        propose(
            cluster.node(follower),
            Command::AllocateProducerIds { count: 1000 }
        )
        .await,
        CommandResult::ProducerIds { first: 0 }
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_leader_crash_under_proposals_should_lose_nothing_acknowledged() {
    let mut cluster = Cluster::new(3);
    // Each node on a runtime of its own, so that dropping one runtime kills that node mid-flight
    // (no shutdown, tasks dropped wherever they were), as kill -9 would.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let mut runtimes: BTreeMap<i32, tokio::runtime::Runtime> =
        (1..=3).map(|id| (id, runtime())).collect();
    let open_on = |rt: &tokio::runtime::Runtime, cluster: &Cluster, id: i32| {
        let (dir, voters, listen) = (
            cluster.dirs[&id].clone(),
            cluster.voters.clone(),
            cluster.voters[&id],
        );
        rt.spawn(async move { Meta::open_quorum(&dir, id, voters, listen, broker(id)).await })
    };
    let opening: Vec<_> = (1..=3)
        .map(|id| (id, open_on(&runtimes[&id], &cluster, id)))
        .collect();
    for (id, task) in opening {
        let meta = bounded("open", task).await.unwrap().expect("open");
        cluster.nodes.insert(id, meta);
    }
    let leader = cluster.leader().await;
    let proposer_id = (1..=3).find(|&id| id != leader).unwrap();
    let proposer = cluster.node(proposer_id).clone();
    proposer.set_request_timeout(Duration::from_secs(5));

    // The crash comes from another task, while a proposal is in flight.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let leader_rt = runtimes.remove(&leader).unwrap();
    let crash = {
        let progress = progress.clone();
        tokio::spawn(async move {
            while progress.load(std::sync::atomic::Ordering::SeqCst) < 30 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_micros(300)).await;
            leader_rt.shutdown_background();
        })
    };
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    let start = Instant::now();
    while acknowledged.len() < 60 {
        assert!(
            start.elapsed() < WAIT,
            "only {} acknowledged",
            acknowledged.len()
        );
        progress.store(acknowledged.len(), std::sync::atomic::Ordering::SeqCst);
        let name = format!("k-{}", acknowledged.len() + failed);
        match proposer.propose(create_topic(&name)).await {
            Ok(CommandResult::Ok) => acknowledged.push(name),
            Ok(other) => panic!("{name}: {other:?}"),
            // Around the crash a proposal may fail (not sent, or outcome unknown): not acknowledged.
            Err(Error::NoQuorum(_) | Error::Indeterminate(_)) => failed += 1,
            Err(e) => panic!("{name}: {e}"),
        }
    }
    println!(
        "{} acknowledged, {failed} failed around the crash",
        acknowledged.len()
    );
    bounded("crash task", crash).await.unwrap();
    cluster.nodes.remove(&leader);

    let check = |meta: &Meta, who: &str| {
        let state = meta.state();
        for name in &acknowledged {
            assert!(
                state.topics.contains_key(name),
                "{who} lost acknowledged {name}"
            );
        }
    };
    for (id, meta) in &cluster.nodes {
        let m = meta.clone();
        let last = acknowledged.last().unwrap().clone();
        wait_until(&format!("node {id} applies {last}"), WAIT, || {
            m.state().topics.contains_key(&last)
        })
        .await;
        check(meta, &format!("node {id}"));
    }

    // The crashed leader restarts from what it had fsynced and catches up.
    let rt = runtime();
    let meta = bounded("reopen crashed", open_on(&rt, &cluster, leader))
        .await
        .unwrap()
        .expect("reopen crashed leader");
    check(&meta, "restarted leader");
    bounded("shutdown", meta.shutdown()).await.unwrap();
    cluster.shutdown().await;
    rt.shutdown_background();
    for (_, rt) in runtimes {
        rt.shutdown_background();
    }
}
