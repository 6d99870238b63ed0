//! State-machine tests: time is driven explicitly, no sleeping.

use super::*;

fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

fn join_req(group: &str, member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        instance_id: instance.map(String::from),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![
            ("range".into(), Bytes::from_static(b"meta")),
            ("roundrobin".into(), Bytes::new()),
        ],
        require_known_member_id: true,
    }
}

fn now_result<T>(r: Reply<T>) -> T {
    match r {
        Reply::Now(t) => t,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

fn later<T>(r: Reply<T>) -> oneshot::Receiver<T> {
    match r {
        Reply::Later(rx) => rx,
        Reply::Now(_) => panic!("expected to wait"),
    }
}

/// Joins a new dynamic member through the KIP-394 two-step; returns the parked join.
fn join_new(
    c: &mut GroupCoordinator,
    group: &str,
    now: i64,
) -> (String, oneshot::Receiver<JoinResult>) {
    let first = now_result(c.join(join_req(group, "", None), now));
    assert_eq!(first.error, E::MemberIdRequired.code());
    let id = first.member_id.clone();
    (id.clone(), later(c.join(join_req(group, &id, None), now)))
}

fn sync(
    c: &mut GroupCoordinator,
    group: &str,
    gen: i32,
    member: &str,
    assignments: Vec<(String, Bytes)>,
    now: i64,
) -> Reply<SyncResult> {
    c.sync(
        SyncRequest {
            group_id: group.into(),
            generation_id: gen,
            member_id: member.into(),
            instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        },
        now,
    )
}

/// Two members joined and synced: returns (leader id, follower id, generation).
fn stable_pair(c: &mut GroupCoordinator) -> (String, String, i32) {
    let (a, mut ja) = join_new(c, "g", 0);
    // Alone, the first member completes the join immediately (no initial delay in these tests).
    let ra = ja.try_recv().unwrap();
    assert_eq!(ra.error, 0);
    let (b, mut jb) = join_new(c, "g", 10);
    assert!(jb.try_recv().is_err(), "b waits for a to rejoin");
    let mut ja = later(c.join(join_req("g", &a, None), 20));
    let ra = ja.try_recv().unwrap();
    let rb = jb.try_recv().unwrap();
    assert_eq!(ra.generation_id, rb.generation_id);
    assert_eq!(ra.leader, a, "the oldest member stays leader");
    assert_eq!(
        ra.members.len(),
        2,
        "the leader gets every member's metadata"
    );
    assert!(rb.members.is_empty(), "followers get none");
    assert_eq!(ra.protocol_name.as_deref(), Some("range"));
    let gen = ra.generation_id;
    let mut sb = later(sync(c, "g", gen, &b, vec![], 30));
    assert!(
        sb.try_recv().is_err(),
        "the follower waits for the leader's assignment"
    );
    let mut sa = later(sync(
        c,
        "g",
        gen,
        &a,
        vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ],
        40,
    ));
    assert_eq!(sa.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
    assert_eq!(sb.try_recv().unwrap().assignment, Bytes::from_static(b"B"));
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    (a, b, gen)
}

#[test]
fn two_members_join_sync_and_become_stable() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, gen) = stable_pair(&mut c);
    assert_eq!(c.heartbeat("g", gen, &a, None, 50), 0);
    assert_eq!(c.heartbeat("g", gen, &b, None, 50), 0);
    assert_eq!(
        c.heartbeat("g", gen - 1, &b, None, 50),
        E::IllegalGeneration.code()
    );
    assert_eq!(
        c.heartbeat("g", gen, "stranger", None, 50),
        E::UnknownMemberId.code()
    );
    // The group metadata is queued for __consumer_offsets once stable.
    let recs = c.take_records();
    assert_eq!(recs.len(), 1);
    let v = records::decode_group_value(recs[0].value.clone().unwrap()).unwrap();
    assert_eq!(v.generation, gen);
    assert_eq!(v.members.len(), 2);
}

#[test]
fn a_member_leaving_triggers_a_rebalance_and_the_other_owns_everything() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, gen) = stable_pair(&mut c);
    assert_eq!(c.leave("g", &[(a.clone(), None)], 100), vec![0]);
    assert_eq!(
        c.describe("g").unwrap().state,
        GroupState::PreparingRebalance
    );
    assert_eq!(
        c.heartbeat("g", gen, &b, None, 110),
        E::RebalanceInProgress.code()
    );
    let mut jb = later(c.join(join_req("g", &b, None), 120));
    let rb = jb.try_recv().unwrap();
    assert_eq!(rb.leader, b, "the remaining member becomes leader");
    assert_eq!(rb.generation_id, gen + 1);
    let mut sb = later(sync(
        &mut c,
        "g",
        gen + 1,
        &b,
        vec![(b.clone(), Bytes::from_static(b"ALL"))],
        130,
    ));
    assert_eq!(
        sb.try_recv().unwrap().assignment,
        Bytes::from_static(b"ALL")
    );
}

#[test]
fn session_timeout_removes_a_silent_member() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, gen) = stable_pair(&mut c);
    // b keeps heartbeating, a goes silent; a's session (10 s from its sync at 40 ms) ends at 10 040.
    for t in (1_000..=10_000).step_by(1_000) {
        assert_eq!(c.heartbeat("g", gen, &b, None, t), 0, "at {t}");
        c.tick(t);
    }
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    c.tick(10_100);
    assert_eq!(
        c.heartbeat("g", gen, &b, None, 10_200),
        E::RebalanceInProgress.code()
    );
    let d = c.describe("g").unwrap();
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert!(d.members.iter().all(|m| m.member_id != a), "a expired");
}

#[test]
fn rebalance_timeout_drops_members_that_heartbeat_but_do_not_rejoin() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, gen) = stable_pair(&mut c);
    let (_, mut jn) = join_new(&mut c, "g", 1_000);
    // a rejoins; b keeps heartbeating (so its session never expires) but never rejoins.
    let mut ja = later(c.join(join_req("g", &a, None), 1_100));
    for t in [5_000, 12_000, 19_000, 26_000] {
        assert_eq!(
            c.heartbeat("g", gen, &b, None, t),
            E::RebalanceInProgress.code()
        );
        c.tick(t);
    }
    assert!(
        ja.try_recv().is_err() && jn.try_recv().is_err(),
        "still waiting before the rebalance timeout"
    );
    c.tick(31_000);
    let ra = ja.try_recv().unwrap();
    assert_eq!(ra.error, 0);
    assert_eq!(ra.members.len(), 2, "a and the newcomer; b was dropped");
    assert!(ra.members.iter().all(|(m, _, _)| *m != b));
    assert_eq!(jn.try_recv().unwrap().error, 0);
}

#[test]
fn a_silent_member_is_dropped_at_its_session_timeout_during_a_rebalance() {
    // As after a coordinator restart: a member that died stays in the group until its session expires, and
    // must not hold a rebalance for its whole rebalance timeout.
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, _) = stable_pair(&mut c);
    let (_, mut jn) = join_new(&mut c, "g", 1_000);
    let mut ja = later(c.join(join_req("g", &a, None), 1_100));
    c.tick(9_000);
    assert!(jn.try_recv().is_err(), "b's session has not expired yet");
    c.tick(10_100);
    let ra = ja.try_recv().unwrap();
    assert_eq!(ra.error, 0);
    assert!(ra.members.iter().all(|(m, _, _)| *m != b));
    assert_eq!(jn.try_recv().unwrap().error, 0);
}

#[test]
fn initial_rebalance_delay_waits_for_more_members() {
    let mut c = GroupCoordinator::new(GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..GroupConfig::default()
    });
    let (_, mut j1) = join_new(&mut c, "g", 0);
    c.tick(1_000);
    assert!(j1.try_recv().is_err());
    let (_, mut j2) = join_new(&mut c, "g", 2_000);
    c.tick(4_000);
    assert!(
        j1.try_recv().is_err(),
        "the delay restarted with the second member"
    );
    c.tick(5_000);
    assert_eq!(j1.try_recv().unwrap().members.len(), 2);
    assert_eq!(j2.try_recv().unwrap().error, 0);
}

#[test]
fn static_member_restart_within_session_timeout_causes_no_rebalance() {
    let mut c = GroupCoordinator::new(cfg());
    let mut ja = later(c.join(join_req("g", "", Some("inst-a")), 0));
    let ra = ja.try_recv().unwrap();
    let mut jb = later(c.join(join_req("g", "", Some("inst-b")), 10));
    let mut ja2 = later(c.join(join_req("g", &ra.member_id, Some("inst-a")), 20));
    let ra = ja2.try_recv().unwrap();
    let rb = jb.try_recv().unwrap();
    let gen = ra.generation_id;
    let mut sb = later(c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: gen,
            member_id: rb.member_id.clone(),
            instance_id: Some("inst-b".into()),
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        30,
    ));
    let _ = c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: gen,
            member_id: ra.member_id.clone(),
            instance_id: Some("inst-a".into()),
            protocol_type: None,
            protocol_name: None,
            assignments: vec![
                (ra.member_id.clone(), Bytes::from_static(b"A")),
                (rb.member_id.clone(), Bytes::from_static(b"B")),
            ],
        },
        40,
    );
    assert_eq!(sb.try_recv().unwrap().assignment, Bytes::from_static(b"B"));

    // inst-b restarts: unknown member id, same instance id, same protocols.
    let r = now_result(c.join(join_req("g", "", Some("inst-b")), 5_000));
    assert_eq!(r.error, 0);
    assert_eq!(r.generation_id, gen, "no new generation");
    assert_ne!(r.member_id, rb.member_id, "a new member id");
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    let s = now_result(c.sync(
        SyncRequest {
            group_id: "g".into(),
            generation_id: gen,
            member_id: r.member_id.clone(),
            instance_id: Some("inst-b".into()),
            protocol_type: None,
            protocol_name: None,
            assignments: vec![],
        },
        5_100,
    ));
    assert_eq!(
        s.assignment,
        Bytes::from_static(b"B"),
        "keeps its assignment"
    );
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", gen, &rb.member_id, Some("inst-b"), 5_200),
        E::FencedInstanceId.code()
    );
    assert_eq!(
        c.heartbeat("g", gen, &ra.member_id, Some("inst-a"), 5_200),
        0
    );
}

#[test]
fn offset_commits_follow_kafkas_member_checks() {
    let mut c = GroupCoordinator::new(cfg());
    // A simple consumer (no group membership) commits with generation -1.
    assert_eq!(c.check_commit("solo", -1, "", None, false, 0), Ok(()));
    let offs = vec![(
        ("t".to_string(), 0),
        CommittedOffset {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        },
    )];
    let recs = c.commit_records("solo", &offs);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        c.fetch_offsets("solo").len(),
        0,
        "not visible before apply_commit"
    );
    c.apply_commit("solo", offs, 0);
    assert_eq!(c.fetch_offsets("solo")[&("t".to_string(), 0)].offset, 5);

    let (a, _b, gen) = stable_pair(&mut c);
    assert_eq!(c.check_commit("g", gen, &a, None, false, 100), Ok(()));
    assert_eq!(
        c.check_commit("g", gen + 1, &a, None, false, 100),
        Err(E::IllegalGeneration.code())
    );
    assert_eq!(
        c.check_commit("g", gen, "nobody", None, false, 100),
        Err(E::UnknownMemberId.code())
    );
    assert_eq!(
        c.check_commit("g", -1, "", None, false, 100),
        Err(E::UnknownMemberId.code()),
        "active groups refuse admin commits"
    );
}

#[test]
fn a_commit_from_the_previous_generation_after_the_join_phase_gets_illegal_generation() {
    // librdkafka 0113 v_commit_during_rebalance: a member rejoins (cooperative), its manual commit for the old
    // generation reaches the coordinator once the join phase is over. Kafka checks the generation before the
    // state, so only a member of the current generation hears REBALANCE_IN_PROGRESS in CompletingRebalance.
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, gen) = stable_pair(&mut c);
    // In PreparingRebalance the current generation may still commit.
    let mut ja = later(c.join(join_req("g", &a, None), 100));
    assert_eq!(
        c.describe("g").unwrap().state,
        GroupState::PreparingRebalance
    );
    assert_eq!(c.check_commit("g", gen, &b, None, false, 110), Ok(()));
    let mut jb = later(c.join(join_req("g", &b, None), 120));
    let next = ja.try_recv().unwrap().generation_id;
    assert_eq!(jb.try_recv().unwrap().generation_id, next);
    assert_eq!(
        c.describe("g").unwrap().state,
        GroupState::CompletingRebalance
    );
    assert_eq!(
        c.check_commit("g", gen, &a, None, false, 130),
        Err(E::IllegalGeneration.code()),
        "the previous generation is told to rejoin, not to retry"
    );
    assert_eq!(
        c.check_commit("g", next, &a, None, false, 130),
        Err(E::RebalanceInProgress.code()),
        "the current generation waits for its assignment"
    );
    assert_eq!(
        c.check_commit("g", next, "nobody", None, false, 130),
        Err(E::UnknownMemberId.code())
    );
    assert_eq!(
        c.check_commit("g", next, &a, None, true, 130),
        Ok(()),
        "TxnOffsetCommit does not look at the state"
    );
    assert_eq!(
        c.check_commit("g", next, &a, Some("no-such-instance"), false, 130),
        Err(E::UnknownMemberId.code())
    );
}

#[test]
fn delete_only_empty_groups_and_queue_tombstones() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, _) = stable_pair(&mut c);
    assert_eq!(c.delete("g"), E::NonEmptyGroup.code());
    c.apply_commit(
        "g",
        vec![(
            ("t".into(), 1),
            CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            },
        )],
        0,
    );
    assert_eq!(c.leave("g", &[(a, None), (b, None)], 100), vec![0, 0]);
    assert_eq!(c.describe("g").unwrap().state, GroupState::Empty);
    let _ = c.take_records();
    assert_eq!(c.delete("g"), 0);
    let recs = c.take_records();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.value.is_none()));
    assert!(c.describe("g").is_none());
    assert_eq!(c.delete("g"), E::GroupIdNotFound.code());
}

#[test]
fn offsets_of_empty_groups_expire_after_retention() {
    let mut c = GroupCoordinator::new(GroupConfig {
        offsets_retention_ms: 1_000,
        retention_check_interval_ms: 100,
        ..cfg()
    });
    c.apply_commit(
        "g",
        vec![(
            ("t".into(), 0),
            CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            },
        )],
        0,
    );
    c.tick(500);
    assert_eq!(c.fetch_offsets("g").len(), 1);
    c.tick(1_000);
    assert!(c.fetch_offsets("g").is_empty());
    let recs = c.take_records();
    assert!(recs.iter().any(|r| r.value.is_none()));
}

#[test]
fn replay_restores_offsets_and_a_stable_group() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, gen) = stable_pair(&mut c);
    let offs = vec![(
        ("t".to_string(), 0),
        CommittedOffset {
            offset: 9,
            leader_epoch: 2,
            metadata: "m".into(),
            commit_timestamp: 5,
        },
    )];
    let mut log: Vec<Record> = c.commit_records("g", &offs);
    log.extend(c.take_records());
    let mut d = GroupCoordinator::new(cfg());
    for r in log {
        d.replay(r.key, r.value, 1_000).unwrap();
    }
    assert_eq!(d.fetch_offsets("g")[&("t".to_string(), 0)].offset, 9);
    let desc = d.describe("g").unwrap();
    assert_eq!(desc.state, GroupState::Stable);
    assert_eq!(desc.members.len(), 2);
    // Members resume with heartbeats of the same generation, no rebalance.
    assert_eq!(d.heartbeat("g", gen, &a, None, 2_000), 0);
    assert_eq!(d.heartbeat("g", gen, &b, None, 2_000), 0);
}

#[test]
fn inconsistent_protocols_and_bad_session_timeouts_are_refused() {
    let mut c = GroupCoordinator::new(cfg());
    let _ = stable_pair(&mut c);
    let mut r = join_req("g", "", None);
    r.protocols = vec![("sticky-only".into(), Bytes::new())];
    assert_eq!(
        now_result(c.join(r, 0)).error,
        E::InconsistentGroupProtocol.code()
    );
    let mut r = join_req("h", "", None);
    r.session_timeout_ms = 10;
    assert_eq!(
        now_result(c.join(r, 0)).error,
        E::InvalidSessionTimeout.code()
    );
    assert_eq!(
        now_result(c.join(join_req("", "", None), 0)).error,
        E::InvalidGroupId.code()
    );
}

#[test]
fn a_follower_rejoining_a_stable_group_with_the_same_metadata_gets_the_current_generation() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, b, gen) = stable_pair(&mut c);
    let r = now_result(c.join(join_req("g", &b, None), 100));
    assert_eq!(
        (r.error, r.generation_id, r.leader.as_str()),
        (0, gen, a.as_str())
    );
    assert_eq!(
        c.describe("g").unwrap().state,
        GroupState::Stable,
        "no rebalance"
    );
    // The leader rejoining does start one (it may want to reassign after metadata changes).
    let _pending = later(c.join(join_req("g", &a, None), 200));
    assert_eq!(
        c.describe("g").unwrap().state,
        GroupState::PreparingRebalance
    );
}

#[test]
fn deleting_a_topic_forgets_its_committed_offsets_in_every_group() {
    let mut c = GroupCoordinator::new(cfg());
    let o = |offset| CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: 0,
    };
    c.apply_commit(
        "g1",
        vec![(("gone".into(), 0), o(7)), (("kept".into(), 0), o(3))],
        0,
    );
    c.apply_commit("g2", vec![(("gone".into(), 1), o(9))], 0);
    assert_eq!(c.forget_topic("gone"), 2);
    assert!(c.fetch_offsets("g1").keys().all(|(t, _)| t == "kept"));
    assert!(c.fetch_offsets("g2").is_empty());
    let recs = c.take_records();
    assert_eq!(
        recs.iter().filter(|r| r.value.is_none()).count(),
        2,
        "one tombstone per forgotten offset"
    );
}

#[test]
fn offset_delete_refuses_subscribed_topics_and_forgets_others() {
    let mut c = GroupCoordinator::new(cfg());
    let o = CommittedOffset {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: 0,
    };
    // The members of stable_pair subscribe with metadata b"meta", not a consumer-protocol subscription, so
    // use a group of consumers whose subscription names topic "sub".
    let mut sub = vec![0u8, 0, 0, 0, 0, 1, 0, 3];
    sub.extend_from_slice(b"sub");
    sub.extend_from_slice(&(-1i32).to_be_bytes());
    let mut r = join_req("g", "", None);
    r.protocols = vec![("range".into(), Bytes::from(sub))];
    r.require_known_member_id = false;
    let mut j = later(c.join(r, 0));
    let res = j.try_recv().unwrap();
    let _synced = later(sync(
        &mut c,
        "g",
        res.generation_id,
        &res.member_id,
        vec![],
        10,
    ));
    c.apply_commit(
        "g",
        vec![(("sub".into(), 0), o.clone()), (("old".into(), 0), o)],
        10,
    );
    let codes = c
        .delete_offsets("g", &[("sub".into(), 0), ("old".into(), 0)])
        .unwrap();
    assert_eq!(codes, vec![E::GroupSubscribedToTopic.code(), 0]);
    assert_eq!(c.fetch_offsets("g").len(), 1);
    assert_eq!(
        c.delete_offsets("nope", &[]),
        Err(E::GroupIdNotFound.code())
    );
}

#[test]
fn unloading_a_partition_drops_its_groups_and_answers_parked_requests_not_coordinator() {
    let mut c = GroupCoordinator::new(cfg());
    let (a, _b, gen) = stable_pair(&mut c);
    // A rebalance in flight: the leader's rejoin is parked.
    let (_, mut parked) = join_new(&mut c, "g", 100);
    let offs = vec![(
        ("t".to_string(), 0),
        CommittedOffset {
            offset: 3,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp: 5,
        },
    )];
    c.apply_commit("other", offs, 5);
    let p = c.partition_for("g");
    let other_p = c.partition_for("other");
    assert_ne!(p, other_p, "the test needs groups on different partitions");
    assert_eq!(c.unload_partition(p), 1);
    assert_eq!(
        parked.try_recv().unwrap().error,
        E::NotCoordinator.code(),
        "a parked JoinGroup is told to find the new coordinator"
    );
    assert!(c.describe("g").is_none());
    assert_eq!(
        c.heartbeat("g", gen, &a, None, 200),
        E::UnknownMemberId.code()
    );
    assert!(c.take_records().iter().all(|r| r.partition != p));
    assert_eq!(
        c.fetch_offsets("other")[&("t".to_string(), 0)].offset,
        3,
        "other partitions' groups stay"
    );
}

#[test]
fn absorbing_a_loaded_partition_replaces_its_groups() {
    let mut old = GroupCoordinator::new(cfg());
    let (a, _b, gen) = stable_pair(&mut old);
    let log = old.take_records();
    let mut loaded = GroupCoordinator::new(cfg());
    for r in log {
        loaded.replay(r.key, r.value, 1_000).unwrap();
    }
    let mut c = GroupCoordinator::new(cfg());
    c.absorb(loaded);
    assert_eq!(c.group_ids(), vec!["g".to_string()]);
    assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
    assert_eq!(c.heartbeat("g", gen, &a, None, 2_000), 0);
}

// ---------------------------------------------------------------------------------------------------------
// KIP-848 groups in __consumer_offsets

mod kip848 {
    use super::*;
    use crate::consumer_group::{Assignment, ConsumerConfig, HeartbeatRequest, TopicView};
    use std::collections::BTreeSet;

    const SESSION: i64 = 10_000;

    fn coordinator() -> GroupCoordinator {
        GroupCoordinator::with_consumer_config(
            cfg(),
            ConsumerConfig {
                session_timeout_ms: SESSION,
                heartbeat_interval_ms: 1_000,
                append_linger_ms: 0,
                ..ConsumerConfig::default()
            },
        )
    }

    fn topics() -> TopicView {
        let mut t = TopicView::new();
        t.insert("orders".into(), (uuid::Uuid::from_u128(1), 4));
        t
    }

    fn hb(member: &str, epoch: i32, owned: Option<Assignment>) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            client_id: format!("client-{member}"),
            client_host: "/127.0.0.1".into(),
            subscribed_topic_names: (epoch == 0).then(|| vec!["orders".into()]),
            subscribed_topic_regex: None,
            owned,
        }
    }

    /// A coordinator restart: a fresh coordinator loads the log (replay, then absorb, as the broker's load).
    fn reload(log: &[Record], now: i64) -> GroupCoordinator {
        let mut loaded = coordinator();
        for r in log {
            loaded.replay(r.key.clone(), r.value.clone(), now).unwrap();
        }
        let mut c = coordinator();
        c.absorb(loaded);
        c
    }

    /// What log compaction leaves (past the delete retention): the last record of each key, tombstones gone.
    fn compacted(log: &[Record]) -> Vec<Record> {
        let mut last: HashMap<Bytes, usize> = HashMap::new();
        for (i, r) in log.iter().enumerate() {
            last.insert(r.key.clone(), i);
        }
        log.iter()
            .enumerate()
            .filter(|(i, r)| last[&r.key] == *i && r.value.is_some())
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Heartbeats `member` with what it was assigned until its epoch and assignment stop moving; returns
    /// (epoch, assignment).
    fn settle(
        c: &mut GroupCoordinator,
        log: &mut Vec<Record>,
        member: &str,
        mut epoch: i32,
        mut owned: Assignment,
        now: i64,
    ) -> (i32, Assignment) {
        for _ in 0..10 {
            let r = c
                .consumer
                .heartbeat(hb(member, epoch, Some(owned.clone())), &topics(), now);
            assert_eq!(r.error, 0, "{r:?}");
            log.extend(c.take_consumer_records());
            if r.member_epoch == epoch && r.assignment.is_none() {
                return (epoch, owned);
            }
            epoch = r.member_epoch;
            if let Some(a) = r.assignment {
                owned = a;
            }
        }
        panic!("{member} did not settle");
    }

    fn snapshot(c: &GroupCoordinator) -> Vec<(String, i32, Assignment, Assignment)> {
        c.consumer
            .members("g")
            .into_iter()
            .map(|m| (m.member_id, m.member_epoch, m.assigned, m.target))
            .collect()
    }

    #[test]
    fn members_epochs_and_assignments_survive_a_reload_from_the_log() {
        let mut c = coordinator();
        let mut log = Vec::new();
        let t = topics();
        let a = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        log.extend(c.take_consumer_records());
        assert!(!log.is_empty(), "joining writes records");
        let b = c.consumer.heartbeat(hb("b", 0, None), &t, 10);
        log.extend(c.take_consumer_records());
        let (ea, oa) = settle(
            &mut c,
            &mut log,
            "a",
            a.member_epoch,
            a.assignment.unwrap(),
            20,
        );
        let (eb, ob) = settle(
            &mut c,
            &mut log,
            "b",
            b.member_epoch,
            b.assignment.unwrap(),
            30,
        );
        let (ea, oa) = settle(&mut c, &mut log, "a", ea, oa, 40);
        assert_eq!(c.consumer.state("g"), Some("Stable"));
        assert_eq!(oa.values().map(BTreeSet::len).sum::<usize>(), 2);
        assert_eq!(ob.values().map(BTreeSet::len).sum::<usize>(), 2);
        let before = snapshot(&c);
        let epochs = c.consumer.epochs("g");
        let plain = c.consumer.heartbeat(hb("a", ea, Some(oa.clone())), &t, 50);
        assert!(!plain.changed);
        assert!(
            c.take_consumer_records().is_empty(),
            "a plain heartbeat writes nothing"
        );

        for (what, log) in [("full log", log.clone()), ("compacted", compacted(&log))] {
            let mut d = reload(&log, 1_000);
            assert_eq!(snapshot(&d), before, "{what}");
            assert_eq!(d.consumer.epochs("g"), epochs, "{what}");
            assert_eq!(d.consumer.state("g"), Some("Stable"), "{what}");
            let m = &d.consumer.members("g")[0];
            assert_eq!(
                (m.client_id.as_str(), m.subscribed.clone()),
                ("client-a", vec!["orders".to_string()])
            );
            // Both members carry on with their epochs: no fence, no new assignment, no new group epoch.
            for (member, epoch, owned) in [("a", ea, &oa), ("b", eb, &ob)] {
                let r = d
                    .consumer
                    .heartbeat(hb(member, epoch, Some(owned.clone())), &t, 1_100);
                assert_eq!((r.error, r.member_epoch), (0, epoch), "{what}: {member}");
                assert_eq!(r.assignment, None, "{what}: {member}");
                assert!(!r.changed, "{what}: {member}");
            }
            assert_eq!(d.consumer.epochs("g"), epochs, "{what}");
            assert!(
                d.take_consumer_records().is_empty(),
                "{what}: the load rewrites nothing"
            );
        }

        // b dies: its session ends after the restart, its records are deleted and a takes everything.
        let mut d = reload(&log, 1_000);
        let r = d
            .consumer
            .heartbeat(hb("a", ea, Some(oa.clone())), &t, 1_000 + SESSION - 1);
        assert_eq!(r.error, 0);
        d.tick(1_000 + SESSION + 1);
        let recs = d.take_consumer_records();
        let keys: Vec<Key> = recs
            .iter()
            .map(|r| records::decode_key(r.key.clone()).unwrap())
            .collect();
        for kind in [
            Key::ConsumerGroupCurrentMemberAssignment {
                group: "g".into(),
                member: "b".into(),
            },
            Key::ConsumerGroupTargetAssignmentMember {
                group: "g".into(),
                member: "b".into(),
            },
            Key::ConsumerGroupMemberMetadata {
                group: "g".into(),
                member: "b".into(),
            },
        ] {
            let i = keys
                .iter()
                .position(|k| *k == kind)
                .unwrap_or_else(|| panic!("no {kind:?}: {keys:?}"));
            assert_eq!(recs[i].value, None, "{kind:?} is a tombstone");
        }
        assert!(
            keys.contains(&Key::ConsumerGroupMetadata { group: "g".into() }),
            "new group epoch"
        );
        log.extend(recs);
        let (ea2, oa2) = settle(&mut d, &mut log, "a", ea, oa, 1_000 + SESSION + 2);
        assert!(ea2 > ea);
        assert_eq!(oa2.values().map(BTreeSet::len).sum::<usize>(), 4);
        for log in [log.clone(), compacted(&log)] {
            let e = reload(&log, 50_000);
            assert_eq!(snapshot(&e), snapshot(&d));
            assert_eq!(e.consumer.epochs("g"), d.consumer.epochs("g"));
        }

        // a leaves and the group is deleted: every record of the group is deleted, nothing comes back.
        let r = d.consumer.heartbeat(hb("a", -1, None), &t, 60_000);
        assert_eq!(r.error, 0);
        log.extend(d.take_consumer_records());
        assert_eq!(d.delete("g"), 0);
        let recs = d.take_consumer_records();
        assert!(
            !recs.is_empty() && recs.iter().all(|r| r.value.is_none()),
            "{recs:?}"
        );
        log.extend(recs);
        assert!(compacted(&log).is_empty(), "{:?}", compacted(&log));
        let e = reload(&log, 70_000);
        assert!(!e.consumer.contains("g"));
    }

    #[test]
    fn a_member_in_the_middle_of_a_revocation_resumes_it_after_a_reload() {
        let mut c = coordinator();
        let mut log = Vec::new();
        let t = topics();
        let a = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        let (ea, oa) = settle(
            &mut c,
            &mut log,
            "a",
            a.member_epoch,
            a.assignment.unwrap(),
            1,
        );
        let b = c.consumer.heartbeat(hb("b", 0, None), &t, 10);
        log.extend(c.take_consumer_records());
        // a is told to give up two partitions but has not confirmed yet.
        let r = c.consumer.heartbeat(hb("a", ea, Some(oa.clone())), &t, 20);
        let kept = r.assignment.unwrap();
        assert_eq!(r.member_epoch, ea);
        log.extend(c.take_consumer_records());
        let mut d = reload(&log, 1_000);
        assert_eq!(snapshot(&d), snapshot(&c));
        // b gets nothing a still owns; once a confirms, b gets the rest.
        let rb = d
            .consumer
            .heartbeat(hb("b", b.member_epoch, Some(Assignment::new())), &t, 1_010);
        assert_eq!(rb.error, 0);
        assert!(
            rb.assignment.is_none_or(|x| x.is_empty()),
            "a has not released anything"
        );
        let ra = d
            .consumer
            .heartbeat(hb("a", ea, Some(kept.clone())), &t, 1_020);
        assert_eq!(ra.error, 0);
        assert!(ra.member_epoch > ea);
        let rb = d
            .consumer
            .heartbeat(hb("b", b.member_epoch, Some(Assignment::new())), &t, 1_030);
        assert_eq!(
            rb.assignment
                .unwrap()
                .values()
                .map(BTreeSet::len)
                .sum::<usize>(),
            2
        );
    }

    #[test]
    fn a_write_that_failed_is_made_again_with_the_next_records() {
        let mut c = coordinator();
        let t = topics();
        let a = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        let lost = c.take_consumer_records();
        c.not_written(&lost);
        let again = c.take_consumer_records();
        let keys = |rs: &[Record]| {
            let mut k: Vec<Bytes> = rs.iter().map(|r| r.key.clone()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&again), keys(&lost));
        let d = reload(&again, 100);
        assert_eq!(snapshot(&d), snapshot(&c));
        // The tombstones of a deleted group that were not written are written again.
        let r = c.consumer.heartbeat(hb("a", -1, None), &t, 200);
        assert_eq!((r.error, a.error), (0, 0));
        let _ = c.take_consumer_records();
        assert_eq!(c.delete("g"), 0);
        let lost = c.take_consumer_records();
        assert!(!lost.is_empty() && lost.iter().all(|r| r.value.is_none()));
        c.not_written(&lost);
        assert_eq!(keys(&c.take_consumer_records()), keys(&lost));
        // An unloaded group's records that did not reach the log are left alone (another coordinator has it).
        let _ = c.consumer.heartbeat(hb("b", 0, None), &t, 300);
        let lost = c.take_consumer_records();
        assert_eq!(c.unload_partition(c.partition_for("g")), 1);
        c.not_written(&lost);
        assert!(c.take_consumer_records().is_empty());
    }

    #[test]
    fn records_of_a_member_without_its_metadata_are_deleted_at_load() {
        let mut c = coordinator();
        let t = topics();
        let _ = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        let log: Vec<Record> = c
            .take_consumer_records()
            .into_iter()
            .filter(|r| {
                !matches!(
                    records::decode_key(r.key.clone()).unwrap(),
                    Key::ConsumerGroupMemberMetadata { .. }
                )
            })
            .collect();
        let mut d = reload(&log, 100);
        assert!(d.consumer.members("g").is_empty());
        let recs = d.take_consumer_records();
        assert!(
            recs.iter().any(|r| r.value.is_none()
                && matches!(
                    records::decode_key(r.key.clone()).unwrap(),
                    Key::ConsumerGroupCurrentMemberAssignment { .. }
                )),
            "{recs:?}"
        );
    }
    #[test]
    fn a_group_deleted_then_created_again_is_not_deleted_by_the_old_tombstones() {
        let mut c = coordinator();
        let mut log = Vec::new();
        let t = topics();
        let a = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        assert_eq!(a.error, 0);
        log.extend(c.take_consumer_records());
        assert_eq!(c.consumer.heartbeat(hb("a", -1, None), &t, 10).error, 0);
        log.extend(c.take_consumer_records());
        assert_eq!(c.delete("g"), 0);
        // Re-created before the deleted group's tombstones were taken.
        let b = c.consumer.heartbeat(hb("b", 0, None), &t, 20);
        assert_eq!(b.error, 0);
        let recs = c.take_consumer_records();
        let first_value = recs.iter().position(|r| r.value.is_some()).unwrap();
        assert!(
            recs[first_value..].iter().all(|r| r.value.is_some()),
            "the old group's tombstones come before the new group's records: {recs:?}"
        );
        log.extend(recs);
        for log in [log.clone(), compacted(&log)] {
            let d = reload(&log, 100);
            assert!(d.consumer.contains("g"));
            assert_eq!(snapshot(&d), snapshot(&c));
            assert_eq!(d.consumer.epochs("g"), c.consumer.epochs("g"));
        }
    }

    #[test]
    fn heartbeats_that_fail_create_no_group_and_write_nothing() {
        let mut c = coordinator();
        let t = topics();
        let other = |member: &str, epoch: i32| HeartbeatRequest {
            group_id: "nope".into(),
            ..hb(member, epoch, None)
        };
        // As Kafka: a heartbeat other than a join for a group that does not exist is GROUP_ID_NOT_FOUND.
        for epoch in [5, -1, -2] {
            let r = c.consumer.heartbeat(other("m", epoch), &t, 0);
            assert_eq!(r.error, E::GroupIdNotFound.code(), "epoch {epoch}");
            assert!(r.error_message.unwrap().contains("nope"));
        }
        let no_subscription = HeartbeatRequest {
            subscribed_topic_names: None,
            ..other("m", 0)
        };
        let r = c.consumer.heartbeat(no_subscription, &t, 0);
        assert_eq!(r.error, E::InvalidRequest.code());
        let bad_regex = HeartbeatRequest {
            subscribed_topic_names: None,
            subscribed_topic_regex: Some("orders(".into()),
            ..other("m", 0)
        };
        let r = c.consumer.heartbeat(bad_regex, &t, 0);
        assert_eq!(r.error, E::InvalidRegularExpression.code());
        assert!(!c.consumer.contains("nope"), "no group was created");
        assert!(c.consumer.list().is_empty());
        assert!(c.take_consumer_records().is_empty(), "nothing to write");
        // An unknown member of an existing group changes nothing either.
        let a = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        assert_eq!(a.error, 0);
        let _ = c.take_consumer_records();
        let r = c.consumer.heartbeat(hb("zz", 3, None), &t, 10);
        assert_eq!(r.error, E::UnknownMemberId.code());
        assert!(c.take_consumer_records().is_empty());
        // A valid join still creates the group.
        let r = c.consumer.heartbeat(other("m", 0), &t, 20);
        assert_eq!(r.error, 0);
        assert!(c.consumer.contains("nope"));
        assert!(!c.take_consumer_records().is_empty());
    }

    #[test]
    fn changes_of_groups_in_partitions_not_writable_stay_pending() {
        let mut c = coordinator();
        let t = topics();
        let p = c.partition_for("g");
        let a = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        assert_eq!(a.error, 0);
        assert!(c.take_consumer_records_in(|q| q != p).is_empty());
        let recs = c.take_consumer_records_in(|q| q == p);
        assert!(!recs.is_empty(), "taken once the partition is writable");
        assert!(recs.iter().all(|r| r.partition == p));
        // The tombstones of a deleted group too.
        assert_eq!(c.consumer.heartbeat(hb("a", -1, None), &t, 10).error, 0);
        let _ = c.take_consumer_records();
        assert_eq!(c.delete("g"), 0);
        assert!(c.take_consumer_records_in(|q| q != p).is_empty());
        let recs = c.take_consumer_records();
        assert!(!recs.is_empty() && recs.iter().all(|r| r.value.is_none()));
    }
    #[test]
    fn a_load_skips_bad_records_keeps_offsets_and_creates_no_phantom_group() {
        let mut c = coordinator();
        let t = topics();
        let a = c.consumer.heartbeat(hb("a", 0, None), &t, 0);
        let mut log = c.take_consumer_records();
        let offsets = vec![(
            ("orders".to_string(), 0),
            CommittedOffset {
                offset: 42,
                leader_epoch: 1,
                metadata: String::new(),
                commit_timestamp: 5,
            },
        )];
        // Another group's offsets in the middle of g's records.
        log.splice(1..1, c.commit_records("other", &offsets));
        // Undecodable KIP-848 values (types 3 to 8) of a group that has no valid record, a tombstone of a
        // member of a group that is not there, and an undecodable value of g's after its good one.
        let bad = Bytes::from_static(&[0, 0, 0xff]);
        let p = c.partition_for("bad");
        let key = |k: Key| records::encode_key(&k);
        for k in [
            Key::ConsumerGroupMetadata {
                group: "bad".into(),
            },
            Key::ConsumerGroupPartitionMetadata {
                group: "bad".into(),
            },
            Key::ConsumerGroupTargetAssignmentMetadata {
                group: "bad".into(),
            },
            Key::ConsumerGroupMemberMetadata {
                group: "bad".into(),
                member: "m".into(),
            },
            Key::ConsumerGroupTargetAssignmentMember {
                group: "bad".into(),
                member: "m".into(),
            },
            Key::ConsumerGroupCurrentMemberAssignment {
                group: "bad".into(),
                member: "m".into(),
            },
        ] {
            log.push(Record {
                partition: p,
                key: key(k),
                value: Some(bad.clone()),
            });
        }
        log.push(Record {
            partition: p,
            key: key(Key::ConsumerGroupMemberMetadata {
                group: "gone".into(),
                member: "m".into(),
            }),
            value: None,
        });
        log.push(Record {
            partition: c.partition_for("g"),
            key: key(Key::ConsumerGroupMetadata { group: "g".into() }),
            value: Some(bad.clone()),
        });
        // The load as the broker runs it: a record the coordinator refuses is skipped (and counted there).
        let mut loaded = coordinator();
        let mut refused = 0;
        for r in &log {
            if loaded.replay(r.key.clone(), r.value.clone(), 100).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 7, "six bad values of `bad` and g's bad epoch");
        let mut d = coordinator();
        d.absorb(loaded);
        assert_eq!(
            d.fetch_offsets("other")[&("orders".to_string(), 0)].offset,
            42
        );
        assert!(!d.consumer.contains("bad"), "no phantom group");
        assert!(!d.consumer.contains("gone"), "no phantom group");
        assert_eq!(d.consumer.list(), vec![("g".to_string(), "Stable")]);
        assert_eq!(snapshot(&d), snapshot(&c));
        assert_eq!(d.consumer.epochs("g"), c.consumer.epochs("g"));
        // g's newest epoch record in the log is the bad one, so compaction would drop the good one before it:
        // the epoch is written again after the load.
        let g_epoch = key(Key::ConsumerGroupMetadata { group: "g".into() });
        assert!(
            d.take_consumer_records()
                .iter()
                .any(|r| r.key == g_epoch && r.value.is_some()),
            "g's epoch record is rewritten over its bad one"
        );
        let r = d
            .consumer
            .heartbeat(hb("a", a.member_epoch, a.assignment.clone()), &t, 200);
        assert_eq!((r.error, r.member_epoch), (0, a.member_epoch));
    }
}
