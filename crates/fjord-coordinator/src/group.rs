//! The classic consumer-group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, offset commits) as a
//! state machine with Kafka's states: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.
//!
//! Time is passed in (`now` in milliseconds) and never read here, so tests drive rebalances and session
//! expiry tick by tick. Requests that must wait for a rebalance get a `oneshot::Receiver`; the caller awaits it
//! outside the coordinator's lock. Whatever must be persisted to `__consumer_offsets` is queued as records
//! ([`GroupCoordinator::take_records`]); offset commits are validated first and applied only after the caller
//! made them durable ([`GroupCoordinator::apply_commit`]).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use tokio::sync::oneshot;

use crate::records::{self, GroupValue, Key, MemberValue, OffsetValue};

#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `offsets.retention.minutes` in milliseconds: committed offsets of an empty group expire after this.
    pub offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`
    pub max_metadata_bytes: usize,
    /// `group.max.size`
    pub max_group_size: usize,
    /// `offsets.topic.num.partitions`
    pub offsets_partitions: i32,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub retention_check_interval_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            max_metadata_bytes: 4096,
            max_group_size: i32::MAX as usize,
            offsets_partitions: 50,
            retention_check_interval_ms: 600_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinResult {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; only the leader gets them.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(code: E, member_id: &str) -> Self {
        JoinResult {
            error: code.code(),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(code: E) -> Self {
        SyncResult {
            error: code.code(),
            ..Default::default()
        }
    }
}

/// An answer now, or later once the rebalance gets there.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (KIP-394): a new member first gets MEMBER_ID_REQUIRED with its id, then joins with it.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// One group member as DescribeGroups shows it.
#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// The member is gone if no heartbeat (or join) arrives before this.
    heartbeat_deadline: i64,
    /// Order of arrival; the oldest member becomes leader when the leader leaves.
    joined_seq: u64,
    /// A JoinGroup parked until the join phase completes.
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    /// A SyncGroup parked until the leader's assignment arrives.
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pending: HashMap<String, i64>,
    /// KIP-345: group.instance.id -> current member id.
    statics: HashMap<String, String>,
    offsets: HashMap<(String, i32), CommittedOffset>,
    /// PreparingRebalance: when to stop waiting for members. CompletingRebalance: when to give up on the leader.
    deadline: i64,
    /// Until this time a rebalance of a formerly empty group keeps waiting for more members.
    initial_delay_until: i64,
    state_timestamp: i64,
    /// Group metadata changed since it was last written to `__consumer_offsets`.
    dirty: bool,
}

impl Group {
    fn new(id: &str, now: i64) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            offsets: HashMap::new(),
            deadline: 0,
            initial_delay_until: 0,
            state_timestamp: now,
            dirty: false,
        }
    }

    fn transition(&mut self, to: GroupState, now: i64) {
        tracing::debug!(group = %self.id, from = ?self.state, ?to, "group state");
        self.state = to;
        self.state_timestamp = now;
    }

    /// Protocols every member supports, chosen by the members' preferences (each votes for its first
    /// supported candidate).
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<Vec<String>> = None;
        for m in self.members.values() {
            let names: Vec<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == n) {
                    v.1 += 1;
                }
            }
        }
        votes.into_iter().max_by_key(|(_, v)| *v).map(|(n, _)| n)
    }

    /// A JoinGroup answer for the current generation, without a rebalance; the leader gets every member's
    /// metadata (it may send SyncGroup again, which in Stable just returns its assignment).
    fn current_generation(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            error: 0,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // At least one protocol in common with every current member.
        protocols.iter().any(|(n, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(x, _)| x == n))
        })
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn prepare_rebalance(&mut self, now: i64, config: &GroupConfig) {
        // Members waiting in SyncGroup must rejoin.
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(E::RebalanceInProgress));
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.transition(GroupState::PreparingRebalance, now);
        self.deadline = now + self.max_rebalance_timeout();
        if was_empty {
            // group.initial.rebalance.delay.ms: let more members arrive before the first assignment.
            self.initial_delay_until = now + config.initial_rebalance_delay_ms;
            self.deadline = self.deadline.max(self.initial_delay_until);
        } else {
            self.initial_delay_until = 0;
        }
    }

    /// Ends the join phase: drops members that did not rejoin, bumps the generation, picks protocol and
    /// leader, and answers every parked JoinGroup.
    fn complete_join(&mut self, now: i64) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.dirty = true;
        if self.members.is_empty() {
            self.become_empty(now);
            return;
        }
        self.generation += 1;
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.joined_seq)
                .map(|m| m.id.clone());
        }
        self.transition(GroupState::CompletingRebalance, now);
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        let mut max_rebalance = 0i64;
        for m in self.members.values_mut() {
            m.heartbeat_deadline = now + m.session_timeout_ms as i64;
            max_rebalance = max_rebalance.max(m.rebalance_timeout_ms as i64);
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: 0,
                    generation_id: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        // If the leader never sends its assignment, the group rebalances again.
        self.deadline = now + max_rebalance;
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), %protocol, "rebalance: join complete");
    }

    /// The last member is gone: a new generation with no protocol or leader, state Empty.
    fn become_empty(&mut self, now: i64) {
        self.generation += 1;
        self.protocol = None;
        self.leader = None;
        self.transition(GroupState::Empty, now);
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(i) = &m.instance_id {
                if self.statics.get(i).map(String::as_str) == Some(id) {
                    self.statics.remove(i);
                }
            }
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinResult::error(E::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(SyncResult::error(E::UnknownMemberId));
            }
        }
    }

    fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// A record for `__consumer_offsets`: the partition it belongs to, its key, and its value (`None`: tombstone).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub partition: i32,
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// The record that deletes a committed offset from `__consumer_offsets`.
fn offset_tombstone(partition: i32, group: &str, topic: &str, p: i32) -> Record {
    Record {
        partition,
        key: records::encode_key(&Key::Offset {
            group: group.into(),
            topic: topic.into(),
            partition: p,
        }),
        value: None,
    }
}

/// Per-partition outcome of validating an OffsetCommit.
pub type CommitCheck = Vec<((String, i32), i16)>;

pub struct GroupCoordinator {
    config: GroupConfig,
    /// KIP-848 groups (`group.protocol=consumer`); their committed offsets live in `groups` like any other.
    pub consumer: crate::consumer_group::ConsumerGroups,
    groups: HashMap<String, Group>,
    next_seq: u64,
    /// When `tick` next looks for expired offsets.
    next_retention_check: i64,
    /// Records waiting to be written to `__consumer_offsets` (group metadata changes, offset expiry).
    out: Vec<Record>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self::with_consumer_config(config, crate::consumer_group::ConsumerConfig::default())
    }

    pub fn with_consumer_config(
        config: GroupConfig,
        consumer: crate::consumer_group::ConsumerConfig,
    ) -> Self {
        Self {
            config,
            consumer: crate::consumer_group::ConsumerGroups::new(consumer),
            groups: HashMap::new(),
            next_seq: 0,
            next_retention_check: 0,
            out: Vec::new(),
        }
    }

    /// True when `group` is a classic group with members (so the consumer protocol may not take it).
    pub fn is_active_classic(&self, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    pub fn partition_for(&self, group: &str) -> i32 {
        records::partition_for(group, self.config.offsets_partitions)
    }

    fn new_member_id(client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    pub fn join(&mut self, req: JoinRequest, now: i64) -> Reply<JoinResult> {
        let cfg = self.config.clone();
        if req.group_id.is_empty() {
            return Reply::Now(JoinResult::error(E::InvalidGroupId, &req.member_id));
        }
        if !self.consumer.is_empty(&req.group_id) {
            // The group uses the consumer protocol (KIP-848); a classic member cannot join it.
            return Reply::Now(JoinResult::error(
                E::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return Reply::Now(JoinResult::error(E::InvalidSessionTimeout, &req.member_id));
        }
        let seq = {
            self.next_seq += 1;
            self.next_seq
        };
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now));
        if group.state == GroupState::Dead {
            return Reply::Now(JoinResult::error(
                E::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if !group.supports(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinResult::error(
                E::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        let member_id = if req.member_id.is_empty() {
            match &req.instance_id {
                Some(instance) if group.statics.contains_key(instance) => {
                    // KIP-345: a restarted static member takes over its old identity under a new member id.
                    let old_id = group.statics[instance].clone();
                    let new_id = Self::new_member_id(&req.client_id);
                    let Some(mut old) = group.members.remove(&old_id) else {
                        group.statics.remove(instance);
                        return Reply::Now(JoinResult::error(E::UnknownMemberId, ""));
                    };
                    if let Some(w) = old.join_waiter.take() {
                        let _ = w.send(JoinResult::error(E::FencedInstanceId, &old_id));
                    }
                    if let Some(w) = old.sync_waiter.take() {
                        let _ = w.send(SyncResult::error(E::FencedInstanceId));
                    }
                    let unchanged = old.protocols == req.protocols;
                    old.id = new_id.clone();
                    old.protocols = req.protocols.clone();
                    old.session_timeout_ms = req.session_timeout_ms;
                    old.rebalance_timeout_ms = req.rebalance_timeout_ms;
                    old.client_id = req.client_id.clone();
                    old.client_host = req.client_host.clone();
                    old.heartbeat_deadline = now + req.session_timeout_ms as i64;
                    group.members.insert(new_id.clone(), old);
                    group.statics.insert(instance.clone(), new_id.clone());
                    if group.leader.as_deref() == Some(old_id.as_str()) {
                        group.leader = Some(new_id.clone());
                    }
                    group.dirty = true;
                    if group.state == GroupState::Stable && unchanged {
                        // No rebalance: hand back the current generation. A leader gets the member list and may
                        // send SyncGroup again; in Stable that just returns its assignment.
                        tracing::info!(group = %group.id, %instance, member = %new_id, "static member rejoined without rebalance");
                        return Reply::Now(group.current_generation(&new_id));
                    }
                    new_id
                }
                Some(_) => Self::new_member_id(&req.client_id),
                None if req.require_known_member_id => {
                    let id = Self::new_member_id(&req.client_id);
                    group
                        .pending
                        .insert(id.clone(), now + req.session_timeout_ms as i64);
                    return Reply::Now(JoinResult::error(E::MemberIdRequired, &id));
                }
                None => Self::new_member_id(&req.client_id),
            }
        } else {
            let known = group.members.contains_key(&req.member_id)
                || group.pending.remove(&req.member_id).is_some();
            if !known {
                return Reply::Now(JoinResult::error(E::UnknownMemberId, &req.member_id));
            }
            if let (Some(instance), Some(current)) = (
                &req.instance_id,
                req.instance_id.as_ref().and_then(|i| group.statics.get(i)),
            ) {
                if *current != req.member_id {
                    return Reply::Now(JoinResult::error(E::FencedInstanceId, &req.member_id));
                }
                let _ = instance;
            }
            req.member_id.clone()
        };

        if !group.members.contains_key(&member_id) && group.members.len() >= cfg.max_group_size {
            return Reply::Now(JoinResult::error(E::GroupMaxSizeReached, &member_id));
        }
        // Kafka's shortcuts for a known member rejoining with unchanged metadata: in Stable a follower (and in
        // CompletingRebalance anyone, e.g. after losing the JoinGroup response) just gets the current generation
        // back; only the leader or changed metadata starts a new rebalance.
        if let Some(m) = group.members.get(&member_id) {
            let same = m.protocols == req.protocols;
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            let shortcut = match group.state {
                GroupState::Stable => same && !is_leader,
                GroupState::CompletingRebalance => same,
                _ => false,
            };
            if shortcut {
                if let Some(m) = group.members.get_mut(&member_id) {
                    m.heartbeat_deadline = now + m.session_timeout_ms as i64;
                }
                return Reply::Now(group.current_generation(&member_id));
            }
        }
        let (tx, rx) = oneshot::channel();
        match group.members.get_mut(&member_id) {
            Some(m) => {
                if let Some(old) = m.join_waiter.replace(tx) {
                    let _ = old.send(JoinResult::error(E::RebalanceInProgress, &member_id));
                }
                m.protocols = req.protocols.clone();
                m.session_timeout_ms = req.session_timeout_ms;
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
                m.heartbeat_deadline = now + req.session_timeout_ms as i64;
            }
            None => {
                if let Some(i) = &req.instance_id {
                    group.statics.insert(i.clone(), member_id.clone());
                }
                group.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        instance_id: req.instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout_ms: req.session_timeout_ms,
                        rebalance_timeout_ms: req.rebalance_timeout_ms,
                        protocols: req.protocols.clone(),
                        assignment: Bytes::new(),
                        heartbeat_deadline: now + req.session_timeout_ms as i64,
                        joined_seq: seq,
                        join_waiter: Some(tx),
                        sync_waiter: None,
                    },
                );
            }
        }
        if group.protocol_type.is_none() || group.members.len() == 1 {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        tracing::debug!(group = %group.id, member = %member_id, state = ?group.state, "join");
        match group.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay extends the wait, bounded by the rebalance timeout.
                if now < group.initial_delay_until {
                    let extended = now + cfg.initial_rebalance_delay_ms;
                    group.initial_delay_until = extended.min(group.deadline);
                }
            }
            _ => group.prepare_rebalance(now, &cfg),
        }
        self.maybe_complete_join(&req.group_id, now);
        Reply::Later(rx)
    }

    fn maybe_complete_join(&mut self, group_id: &str, now: i64) {
        if let Some(g) = self.groups.get_mut(group_id) {
            if g.state == GroupState::PreparingRebalance
                && ((g.all_joined() && now >= g.initial_delay_until) || now >= g.deadline)
            {
                g.complete_join(now);
            }
        }
    }

    pub fn sync(&mut self, req: SyncRequest, now: i64) -> Reply<SyncResult> {
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return Reply::Now(SyncResult::error(E::UnknownMemberId));
        };
        let Some(member) = group.members.get(&req.member_id) else {
            return Reply::Now(SyncResult::error(E::UnknownMemberId));
        };
        if let Some(i) = &req.instance_id {
            if group.statics.get(i) != Some(&req.member_id) {
                return Reply::Now(SyncResult::error(E::FencedInstanceId));
            }
        }
        if req.generation_id != group.generation {
            return Reply::Now(SyncResult::error(E::IllegalGeneration));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|p| Some(p) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != group.protocol.as_ref())
        {
            return Reply::Now(SyncResult::error(E::InconsistentGroupProtocol));
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        let _ = member;
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(SyncResult::error(E::UnknownMemberId))
            }
            GroupState::PreparingRebalance => Reply::Now(SyncResult::error(E::RebalanceInProgress)),
            GroupState::Stable => {
                let m = &group.members[&req.member_id];
                Reply::Now(ok(group, m.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.heartbeat_deadline = now + m.session_timeout_ms as i64;
                    m.sync_waiter = Some(tx);
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    let given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in group.members.values_mut() {
                        m.assignment = given.get(&m.id).cloned().unwrap_or_default();
                    }
                    group.transition(GroupState::Stable, now);
                    group.dirty = true;
                    let (pt, pn) = (group.protocol_type.clone(), group.protocol.clone());
                    for m in group.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: 0,
                                protocol_type: pt.clone(),
                                protocol_name: pn.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                    tracing::info!(group = %group.id, generation = group.generation, "rebalance: stable");
                }
                Reply::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return E::UnknownMemberId.code();
        };
        if let Some(i) = instance_id {
            if group.statics.get(i).map(String::as_str) != Some(member_id) {
                return E::FencedInstanceId.code();
            }
        }
        let Some(m) = group.members.get_mut(member_id) else {
            return E::UnknownMemberId.code();
        };
        m.heartbeat_deadline = now + m.session_timeout_ms as i64;
        if generation != group.generation {
            return E::IllegalGeneration.code();
        }
        match group.state {
            GroupState::PreparingRebalance => E::RebalanceInProgress.code(),
            GroupState::Stable | GroupState::CompletingRebalance => 0,
            GroupState::Empty | GroupState::Dead => E::UnknownMemberId.code(),
        }
    }

    /// LeaveGroup for each (member id, instance id); returns one error code per member.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: i64,
    ) -> Vec<i16> {
        let cfg = self.config.clone();
        let Some(group) = self.groups.get_mut(group_id) else {
            return members.iter().map(|_| E::UnknownMemberId.code()).collect();
        };
        let mut codes = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance) in members {
            let id = match instance {
                Some(i) => match group.statics.get(i) {
                    Some(cur) if member_id.is_empty() || cur == member_id => cur.clone(),
                    Some(_) => {
                        codes.push(E::FencedInstanceId.code());
                        continue;
                    }
                    None => {
                        codes.push(E::UnknownMemberId.code());
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if group.members.contains_key(&id) {
                group.remove_member(&id);
                removed = true;
                codes.push(0);
            } else if group.pending.remove(&id).is_some() {
                codes.push(0);
            } else {
                codes.push(E::UnknownMemberId.code());
            }
        }
        if removed {
            group.dirty = true;
            if group.members.is_empty() {
                group.become_empty(now);
            } else if group.state != GroupState::PreparingRebalance {
                group.prepare_rebalance(now, &cfg);
            }
        }
        self.maybe_complete_join(group_id, now);
        codes
    }

    /// Checks an OffsetCommit (or, with `transactional`, a TxnOffsetCommit). `Err(code)` applies to every
    /// partition; `Ok` means the caller may persist the records from [`GroupCoordinator::commit_records`] and
    /// then call [`GroupCoordinator::apply_commit`].
    ///
    /// The order of the checks is Kafka's: the member, then its generation (ILLEGAL_GENERATION), and only then
    /// the state: REBALANCE_IN_PROGRESS goes to a member of the *current* generation committing while the group
    /// is in CompletingRebalance (it has its JoinGroup answer but not yet its assignment). A commit from the
    /// previous generation that lands after the join phase ended (e.g. one queued behind the member's own
    /// JoinGroup) gets ILLEGAL_GENERATION, which clients treat as "rejoin", not a retriable failure.
    pub fn check_commit(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        transactional: bool,
        now: i64,
    ) -> Result<(), i16> {
        if group_id.is_empty() {
            return Err(E::InvalidGroupId.code());
        }
        if !self.consumer.is_empty(group_id) {
            return self.consumer.check_member(group_id, member_id, generation);
        }
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        if group.state == GroupState::Dead {
            return Err(E::CoordinatorNotAvailable.code());
        }
        if generation < 0 && group.state == GroupState::Empty {
            // A simple consumer, or an admin reset of an inactive group.
            return Ok(());
        }
        if let Some(i) = instance_id {
            match group.statics.get(i) {
                None => return Err(E::UnknownMemberId.code()),
                Some(current) if current != member_id => return Err(E::FencedInstanceId.code()),
                Some(_) => {}
            }
        }
        let Some(m) = group.members.get_mut(member_id) else {
            return Err(E::UnknownMemberId.code());
        };
        if generation != group.generation {
            return Err(E::IllegalGeneration.code());
        }
        if !transactional && group.state == GroupState::CompletingRebalance {
            return Err(E::RebalanceInProgress.code());
        }
        // A commit proves the member is alive.
        m.heartbeat_deadline = now + m.session_timeout_ms as i64;
        Ok(())
    }

    pub fn commit_records(
        &self,
        group_id: &str,
        offsets: &[((String, i32), CommittedOffset)],
    ) -> Vec<Record> {
        let partition = self.partition_for(group_id);
        offsets
            .iter()
            .map(|((topic, p), o)| Record {
                partition,
                key: records::encode_key(&Key::Offset {
                    group: group_id.into(),
                    topic: topic.clone(),
                    partition: *p,
                }),
                value: Some(records::encode_offset_value(&OffsetValue {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    commit_timestamp: o.commit_timestamp,
                })),
            })
            .collect()
    }

    /// Makes persisted commits visible to OffsetFetch.
    pub fn apply_commit(
        &mut self,
        group_id: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
        now: i64,
    ) {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        for (tp, o) in offsets {
            group.offsets.insert(tp, o);
        }
    }

    /// Committed offsets of a group: all of them, or those of the given partitions.
    pub fn fetch_offsets(&self, group_id: &str) -> HashMap<(String, i32), CommittedOffset> {
        self.groups
            .get(group_id)
            .map(|g| g.offsets.clone())
            .unwrap_or_default()
    }

    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let mut out: Vec<_> = self
            .groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        // Kafka shows member details only once a protocol is chosen.
        let show = matches!(
            g.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::PreparingRebalance
        );
        Some(GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: if show {
                g.members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: m.metadata_for(&protocol),
                        assignment: if g.state == GroupState::Stable {
                            m.assignment.clone()
                        } else {
                            Bytes::new()
                        },
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
    }

    /// The subscribed topic names of a consumer group's members (for OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC).
    pub fn subscribed_topics(&self, group_id: &str) -> Vec<String> {
        let Some(g) = self.groups.get(group_id) else {
            return Vec::new();
        };
        if g.protocol_type.as_deref() != Some("consumer") {
            return Vec::new();
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        let mut out = Vec::new();
        for m in g.members.values() {
            for t in crate::consumer_protocol::subscription_topics(&m.metadata_for(&protocol)) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// DeleteGroups: only empty groups; removes offsets and metadata (tombstones are queued).
    pub fn delete(&mut self, group_id: &str) -> i16 {
        let consumer = self.consumer.contains(group_id);
        if consumer && !self.consumer.remove_if_empty(group_id) {
            return E::NonEmptyGroup.code();
        }
        let Some(g) = self.groups.get(group_id) else {
            // A consumer-protocol group that never committed an offset is gone now.
            return if consumer {
                0
            } else {
                E::GroupIdNotFound.code()
            };
        };
        match g.state {
            GroupState::Empty => {}
            GroupState::Dead => return E::GroupIdNotFound.code(),
            _ => return E::NonEmptyGroup.code(),
        }
        let partition = self.partition_for(group_id);
        let g = self.groups.remove(group_id).expect("checked above");
        for (topic, p) in g.offsets.keys() {
            self.out
                .push(offset_tombstone(partition, group_id, topic, *p));
        }
        self.out.push(Record {
            partition,
            key: records::encode_key(&Key::Group {
                group: group_id.into(),
            }),
            value: None,
        });
        0
    }

    /// A topic was deleted: every group forgets its committed offsets (tombstones are queued), as Kafka's
    /// coordinator does, so a topic re-created under the same name starts with no commits.
    pub fn forget_topic(&mut self, topic: &str) -> usize {
        let n = self.config.offsets_partitions;
        let mut removed = 0;
        for g in self.groups.values_mut() {
            let gone: Vec<(String, i32)> = g
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .cloned()
                .collect();
            for (t, p) in gone {
                g.offsets.remove(&(t.clone(), p));
                removed += 1;
                self.out.push(offset_tombstone(
                    records::partition_for(&g.id, n),
                    &g.id,
                    &t,
                    p,
                ));
            }
        }
        removed
    }

    /// OffsetDelete: forget committed offsets of partitions the group is not subscribed to.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        if !self.groups.contains_key(group_id) {
            return Err(E::GroupIdNotFound.code());
        }
        let subscribed = self.subscribed_topics(group_id);
        let partition = self.partition_for(group_id);
        let mut codes = Vec::new();
        let g = self.groups.get_mut(group_id).expect("checked above");
        for (topic, p) in partitions {
            if subscribed.contains(topic) {
                codes.push(E::GroupSubscribedToTopic.code());
                continue;
            }
            if g.offsets.remove(&(topic.clone(), *p)).is_some() {
                self.out
                    .push(offset_tombstone(partition, group_id, topic, *p));
            }
            codes.push(0);
        }
        Ok(codes)
    }

    /// Advances time: completes join phases whose wait is over, expires members whose session lapsed and
    /// pending member ids, retries a rebalance whose leader never synced, and expires offsets of empty groups.
    pub fn tick(&mut self, now: i64) {
        self.consumer.tick(now);
        let cfg = self.config.clone();
        let check_retention = now >= self.next_retention_check;
        if check_retention {
            self.next_retention_check = now + cfg.retention_check_interval_ms;
        }
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            g.pending.retain(|_, deadline| *deadline > now);
            match g.state {
                GroupState::PreparingRebalance => {
                    // A member that neither heartbeats nor rejoins within its session is gone (as in Kafka);
                    // without this a member that died while the coordinator was down would hold the
                    // rebalance for its whole rebalance timeout.
                    let expired: Vec<String> = g
                        .members
                        .values()
                        .filter(|m| m.heartbeat_deadline <= now && m.join_waiter.is_none())
                        .map(|m| m.id.clone())
                        .collect();
                    for m in &expired {
                        tracing::info!(group = %g.id, member = %m, "session timeout during rebalance: removing member");
                        g.remove_member(m);
                        g.dirty = true;
                    }
                }
                GroupState::CompletingRebalance if now >= g.deadline => {
                    tracing::info!(group = %g.id, "leader did not send the assignment in time; rebalancing again");
                    let idle: Vec<String> = g
                        .members
                        .values()
                        .filter(|m| m.sync_waiter.is_none())
                        .map(|m| m.id.clone())
                        .collect();
                    for m in idle {
                        g.remove_member(&m);
                    }
                    if g.members.is_empty() {
                        g.become_empty(now);
                        g.dirty = true;
                    } else {
                        g.prepare_rebalance(now, &cfg);
                    }
                }
                GroupState::Stable | GroupState::CompletingRebalance => {
                    let expired: Vec<String> = g
                        .members
                        .values()
                        .filter(|m| m.heartbeat_deadline <= now && m.join_waiter.is_none())
                        .map(|m| m.id.clone())
                        .collect();
                    if !expired.is_empty() {
                        for m in &expired {
                            tracing::info!(group = %g.id, member = %m, "session timeout: removing member");
                            g.remove_member(m);
                        }
                        g.dirty = true;
                        if g.members.is_empty() {
                            g.become_empty(now);
                        } else {
                            g.prepare_rebalance(now, &cfg);
                        }
                    }
                }
                GroupState::Empty if !check_retention || !self.consumer.is_empty(&id) => {}
                GroupState::Empty => {
                    let partition = records::partition_for(&id, cfg.offsets_partitions);
                    let retention = cfg.offsets_retention_ms;
                    let old: Vec<(String, i32)> = g
                        .offsets
                        .iter()
                        .filter(|(_, o)| o.commit_timestamp + retention <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for (topic, p) in old {
                        g.offsets.remove(&(topic.clone(), p));
                        tracing::info!(group = %id, %topic, partition = p, "committed offset expired (offsets.retention.minutes)");
                        self.out.push(offset_tombstone(partition, &id, &topic, p));
                    }
                }
                GroupState::Dead => {}
            }
            self.maybe_complete_join(&id, now);
        }
    }

    /// The coordinator resigned from `__consumer_offsets` partition `partition` (Kafka's `onResignation`): its
    /// groups, classic and KIP-848, leave memory, and queued records for it are dropped (another broker leads it
    /// now, and has them in its log or never will). Parked JoinGroup/SyncGroup requests are answered
    /// NOT_COORDINATOR so that their members find the new coordinator. Returns how many groups went.
    pub fn unload_partition(&mut self, partition: i32) -> usize {
        let n = self.config.offsets_partitions;
        let ids: Vec<String> = self
            .groups
            .keys()
            .filter(|id| records::partition_for(id, n) == partition)
            .cloned()
            .collect();
        for id in &ids {
            let Some(g) = self.groups.remove(id) else {
                continue;
            };
            for m in g.members.into_values() {
                if let Some(w) = m.join_waiter {
                    let _ = w.send(JoinResult::error(E::NotCoordinator, &m.id));
                }
                if let Some(w) = m.sync_waiter {
                    let _ = w.send(SyncResult::error(E::NotCoordinator));
                }
            }
        }
        let consumer = self
            .consumer
            .remove_where(|id| records::partition_for(id, n) == partition);
        self.out.retain(|r| r.partition != partition);
        ids.len() + consumer
    }

    /// Takes over the groups `loaded` rebuilt from one `__consumer_offsets` partition (the end of a load, Kafka's
    /// `onElection`): they replace whatever this coordinator held under the same ids.
    pub fn absorb(&mut self, loaded: GroupCoordinator) {
        let base = self.next_seq;
        for (id, mut g) in loaded.groups {
            // Keep arrival order within each group, after every member this coordinator already knows.
            for m in g.members.values_mut() {
                m.joined_seq += base;
            }
            self.groups.insert(id, g);
        }
        self.next_seq += loaded.next_seq;
        self.out.extend(loaded.out);
        self.consumer.absorb(loaded.consumer);
    }

    /// The ids of the classic groups held here (for tests and diagnostics).
    pub fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.groups.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// What changed in KIP-848 groups since the last call, as records for `__consumer_offsets`. Taken apart
    /// from [`GroupCoordinator::take_records`] because each is a diff against the previous ones: the broker
    /// takes and appends them under one write lock, so that they reach the log in the order they were taken.
    pub fn take_consumer_records(&mut self) -> Vec<Record> {
        self.take_consumer_records_in(|_| true)
    }

    /// [`GroupCoordinator::take_consumer_records`] for the groups of the `__consumer_offsets` partitions for
    /// which `writable` is true; the others' changes stay pending (nothing is taken that would not be written).
    pub fn take_consumer_records_in(
        &mut self,
        mut writable: impl FnMut(i32) -> bool,
    ) -> Vec<Record> {
        let n = self.config.offsets_partitions;
        self.consumer
            .take_records_where(|group| writable(records::partition_for(group, n)))
            .into_iter()
            .map(|(group, key, value)| Record {
                partition: records::partition_for(&group, n),
                key,
                value,
            })
            .collect()
    }

    /// Records to write to `__consumer_offsets`: queued tombstones and the metadata of changed classic groups.
    pub fn take_records(&mut self) -> Vec<Record> {
        let mut out = std::mem::take(&mut self.out);
        let n = self.config.offsets_partitions;
        for g in self.groups.values_mut() {
            if !g.dirty {
                continue;
            }
            g.dirty = false;
            // Groups are written only in settled states; transient ones are re-derived on the next rebalance.
            if !matches!(g.state, GroupState::Stable | GroupState::Empty) {
                g.dirty = true;
                continue;
            }
            out.push(Record {
                partition: records::partition_for(&g.id, n),
                key: records::encode_key(&Key::Group {
                    group: g.id.clone(),
                }),
                value: Some(records::encode_group_value(&g.to_value())),
            });
        }
        out
    }

    /// Records handed out by [`GroupCoordinator::take_records`] that did not reach the log (the append failed):
    /// KIP-848 groups write them again with their next records. A classic group rewrites its whole metadata on
    /// its next change anyway.
    pub fn not_written(&mut self, records: &[Record]) {
        for r in records {
            if let Ok(key) = records::decode_key(r.key.clone()) {
                if !matches!(key, Key::Offset { .. } | Key::Group { .. }) {
                    self.consumer
                        .not_written(key.group(), r.key.clone(), r.value.is_none());
                }
            }
        }
    }

    /// Rebuilds state from one `__consumer_offsets` record, in log order (the coordinator's load).
    pub fn replay(&mut self, key: Bytes, value: Option<Bytes>, now: i64) -> crate::Result<()> {
        let raw_key = key.clone();
        match records::decode_key(key)? {
            k @ (Key::ConsumerGroupMetadata { .. }
            | Key::ConsumerGroupPartitionMetadata { .. }
            | Key::ConsumerGroupMemberMetadata { .. }
            | Key::ConsumerGroupTargetAssignmentMetadata { .. }
            | Key::ConsumerGroupTargetAssignmentMember { .. }
            | Key::ConsumerGroupCurrentMemberAssignment { .. }) => {
                self.consumer.replay(&k, raw_key, value, now)?;
            }
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now));
                match value {
                    Some(v) => {
                        let o = records::decode_offset_value(v)?;
                        g.offsets.insert(
                            (topic, partition),
                            CommittedOffset {
                                offset: o.offset,
                                leader_epoch: o.leader_epoch,
                                metadata: o.metadata,
                                commit_timestamp: o.commit_timestamp,
                            },
                        );
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            Key::Group { group } => match value {
                None => {
                    self.groups.remove(&group);
                }
                Some(v) => {
                    let v = records::decode_group_value(v)?;
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now));
                    g.generation = v.generation;
                    g.protocol_type = Some(v.protocol_type).filter(|p| !p.is_empty());
                    g.protocol = v.protocol;
                    g.leader = v.leader;
                    g.members.clear();
                    g.statics.clear();
                    for m in v.members {
                        self.next_seq += 1;
                        if let Some(i) = &m.instance_id {
                            g.statics.insert(i.clone(), m.member_id.clone());
                        }
                        let protocol = g.protocol.clone().unwrap_or_default();
                        g.members.insert(
                            m.member_id.clone(),
                            Member {
                                id: m.member_id,
                                instance_id: m.instance_id,
                                client_id: m.client_id,
                                client_host: m.client_host,
                                session_timeout_ms: m.session_timeout_ms,
                                rebalance_timeout_ms: m.rebalance_timeout_ms,
                                protocols: vec![(protocol, m.subscription)],
                                assignment: m.assignment,
                                // Members get a full session to find the (restarted) coordinator again.
                                heartbeat_deadline: now + m.session_timeout_ms as i64,
                                joined_seq: self.next_seq,
                                join_waiter: None,
                                sync_waiter: None,
                            },
                        );
                    }
                    let state = if g.members.is_empty() {
                        GroupState::Empty
                    } else {
                        GroupState::Stable
                    };
                    g.transition(state, now);
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
