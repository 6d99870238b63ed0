//! The next-generation consumer group protocol (KIP-848, `group.protocol=consumer`): members heartbeat with
//! their subscriptions and owned partitions, the coordinator computes the assignment itself, and each member
//! is reconciled towards its target without two members ever owning one partition at once.
//!
//! Epochs follow the KIP: the group epoch moves when membership, subscriptions or the subscribed topics'
//! partition counts change; the target assignment is recomputed for that epoch; a member's epoch reaches the
//! target epoch once it has revoked what it must give up. Partitions still held by another member are handed
//! over only after that member confirmed releasing them. Time comes in as `now` (milliseconds).
//!
//! Durability follows Kafka's coordinator: a group's epoch, subscribed-topic metadata, members, target
//! assignment and members' current assignments are records of `__consumer_offsets` (types 3 to 8, Kafka's
//! formats in [`crate::consumer_records`]). [`ConsumerGroups::take_records`] hands out what changed since the
//! last call (a diff against what was written, tombstones for what went), [`ConsumerGroups::replay`] rebuilds
//! groups from the log and [`ConsumerGroups::absorb`] finishes a load, so members keep their ids, epochs and
//! assignments across a coordinator restart or failover.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use uuid::Uuid;

use crate::consumer_records::{self as cr, CurrentAssignment, MemberMetadata, TopicMetadata};
use crate::records::{self, Key};

/// Topic id -> partitions.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// What the coordinator needs to know about topics: name -> (id, partition count).
pub type TopicView = BTreeMap<String, (Uuid, i32)>;

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// `group.consumer.session.timeout.ms`
    pub session_timeout_ms: i64,
    /// `group.consumer.heartbeat.interval.ms`
    pub heartbeat_interval_ms: i32,
    /// `group.coordinator.append.linger.ms`: a heartbeat that changed the group is answered this long after it
    /// was handled, as Kafka's coordinator (4.0: 5 ms by default) answers such a heartbeat only once the batch of
    /// records it accumulates for that long is flushed. Clients' reconciliation is paced by it: librdkafka loses
    /// a subscription made while it revokes partitions if that revocation was answered within the same
    /// millisecond as the heartbeat that caused it (its 0045 subscribe_many_updates test).
    pub append_linger_ms: u64,
    /// The largest batch `__consumer_offsets` takes (its `max.message.bytes`): a heartbeat whose member record
    /// could not fit in one is refused before it changes anything, as such a record could never be written.
    pub max_record_bytes: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            append_linger_ms: 5,
            max_record_bytes: 1_048_588,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// KIP-848's `SubscribedTopicRegex` (v1): topics whose whole name matches it (RE2 syntax, as Kafka's RE2/J)
    /// are subscribed too, re-evaluated against the topics at every heartbeat. `None`: unchanged; empty: none.
    pub subscribed_topic_regex: Option<String>,
    /// `None`: unchanged since the last heartbeat.
    pub owned: Option<Assignment>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeartbeatResponse {
    pub error: i16,
    pub error_message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None`: unchanged; the member keeps what it has.
    pub assignment: Option<Assignment>,
    /// Not sent: whether the heartbeat changed the group (a member joined, left or changed its subscription, an
    /// epoch moved, a target or an assignment changed), i.e. what Kafka's coordinator writes records for and
    /// answers only once they are flushed.
    pub changed: bool,
}

impl HeartbeatResponse {
    fn error(code: E, message: &str) -> Self {
        Self {
            error: code.code(),
            error_message: Some(message.to_string()),
            member_epoch: -1,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub subscribed: Vec<String>,
    /// The member's `SubscribedTopicRegex`, if any.
    pub subscribed_regex: Option<String>,
    pub assigned: Assignment,
    pub target: Assignment,
}

impl Member {
    /// Whether the member consumes `topic`: named in its subscription, or matched by its regex.
    fn subscribes(&self, topic: &str) -> bool {
        self.subscribed.iter().any(|t| t == topic)
            || (self.regex_resolved && self.regex.as_ref().is_some_and(|(_, r)| r.is_match(topic)))
    }
}

/// Compiles a `SubscribedTopicRegex`: `None` for an empty one, an error message for an invalid one.
fn compile_regex(source: &str) -> Result<Option<(String, regex::Regex)>, String> {
    if source.is_empty() {
        return Ok(None);
    }
    regex::Regex::new(&format!("^(?:{source})$"))
        .map(|r| Some((source.to_string(), r)))
        .map_err(|e| {
            format!("SubscribedTopicRegex {source:?} is not a valid regular expression: {e}")
        })
}

/// A bound on the size of the ConsumerGroupMemberMetadata record (key, value and framing) a heartbeat leads to:
/// the only record whose size a client chooses (the others grow with partition counts).
fn member_record_bytes(req: &HeartbeatRequest) -> usize {
    let strings = |v: &[Option<&String>]| v.iter().flatten().map(|s| s.len() + 2).sum::<usize>();
    req.subscribed_topic_names
        .iter()
        .flatten()
        .map(|t| t.len() + 2)
        .sum::<usize>()
        + strings(&[
            req.subscribed_topic_regex.as_ref(),
            req.instance_id.as_ref(),
            req.rack_id.as_ref(),
            Some(&req.client_id),
            Some(&req.client_host),
            Some(&req.group_id),
            Some(&req.member_id),
        ])
        + 256
}

/// (group epoch, assignment epoch, member count, the member's epochs, assignment, subscription and regex).
type Fingerprint = (
    i32,
    i32,
    usize,
    Option<(i32, i32, Assignment, Vec<String>, Option<String>)>,
);

/// The member epoch of a static member that left temporarily (KIP-848's LEAVE_GROUP_STATIC_MEMBER_EPOCH).
const LEAVE_STATIC: i32 = -2;

struct Member {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    /// The rebalance timeout the member announced (kept for its ConsumerGroupMemberMetadata record).
    rebalance_timeout_ms: i32,
    epoch: i32,
    previous_epoch: i32,
    subscribed: Vec<String>,
    /// The member's `SubscribedTopicRegex` (source, compiled anchored to the whole name).
    regex: Option<(String, regex::Regex)>,
    /// Whether `regex` has been resolved: as in Kafka, where the coordinator resolves a new regex off the
    /// heartbeat path, the heartbeat that brings a new regex is answered with the literal topics only, and the
    /// matches join from the next one (clients such as librdkafka expect the two steps).
    regex_resolved: bool,
    /// What the member last reported owning.
    owned: Assignment,
    /// What the coordinator last told the member to own.
    assigned: Assignment,
    session_deadline: i64,
}

impl Member {
    /// A member known only from some of its records while a load replays them; [`ConsumerGroups::absorb`]
    /// drops it unless its ConsumerGroupMemberMetadata record came too.
    fn replayed(id: &str, session_deadline: i64) -> Member {
        Member {
            id: id.to_string(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: -1,
            epoch: 0,
            previous_epoch: -1,
            subscribed: Vec::new(),
            regex: None,
            regex_resolved: true,
            owned: Assignment::new(),
            assigned: Assignment::new(),
            session_deadline,
        }
    }
}

#[derive(Default)]
pub struct ConsumerGroup {
    id: String,
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: HashMap<String, Assignment>,
    /// Partition counts of the subscribed topics when the target was computed.
    topics_seen: BTreeMap<String, (Uuid, i32)>,
    /// What `__consumer_offsets` holds for this group as far as this coordinator knows: key -> value last
    /// written (or replayed); `None` when a write of that key failed, so the next diff rewrites (or deletes) it.
    persisted: BTreeMap<Bytes, Option<Bytes>>,
    /// The group changed since its records were last handed out by [`ConsumerGroups::take_records`].
    dirty: bool,
}

/// The order Kafka's coordinator writes a group's records in: group-level records before the members' for an
/// update, the reverse for deletions (its loader requires a member to exist before its assignment is replayed).
fn write_rank(key: &[u8], tombstone: bool) -> usize {
    let kind = if key.len() >= 2 {
        i16::from_be_bytes([key[0], key[1]])
    } else {
        0
    };
    let order: [i16; 6] = if tombstone {
        [8, 7, 5, 6, 4, 3]
    } else {
        [3, 4, 5, 7, 6, 8]
    };
    order.iter().position(|k| *k == kind).unwrap_or(order.len())
}

/// A record for `__consumer_offsets` as the consumer groups hand it out: (group id, key, value or tombstone).
pub type GroupRecord = (String, Bytes, Option<Bytes>);

fn contains(a: &Assignment, t: &Uuid, p: i32) -> bool {
    a.get(t).is_some_and(|s| s.contains(&p))
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        for p in ps {
            if contains(b, t, *p) {
                out.entry(*t).or_default().insert(*p);
            }
        }
    }
    out
}

/// Kafka's check of a member heartbeating with its previous epoch: every topic it reports owning is in its
/// assignment, with every partition (a topic it lists with no partitions must be assigned too).
fn owned_within(owned: &Assignment, assigned: &Assignment) -> bool {
    owned.iter().all(|(t, ps)| {
        assigned
            .get(t)
            .is_some_and(|a| ps.iter().all(|p| a.contains(p)))
    })
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.iter().all(|p| contains(b, t, *p)))
}

impl ConsumerGroup {
    /// Every record that describes the group now, by key (Kafka's KIP-848 record types 3 to 8).
    fn records(&self) -> BTreeMap<Bytes, Bytes> {
        let group = || self.id.clone();
        let mut out = BTreeMap::new();
        out.insert(
            records::encode_key(&Key::ConsumerGroupMetadata { group: group() }),
            cr::encode_epoch(self.group_epoch),
        );
        let topics: Vec<TopicMetadata> = self
            .topics_seen
            .iter()
            .map(|(name, (id, n))| TopicMetadata {
                topic_id: *id,
                name: name.clone(),
                partitions: *n,
            })
            .collect();
        out.insert(
            records::encode_key(&Key::ConsumerGroupPartitionMetadata { group: group() }),
            cr::encode_partition_metadata(&topics),
        );
        out.insert(
            records::encode_key(&Key::ConsumerGroupTargetAssignmentMetadata { group: group() }),
            cr::encode_epoch(self.assignment_epoch),
        );
        for m in self.members.values() {
            let member = || m.id.clone();
            out.insert(
                records::encode_key(&Key::ConsumerGroupMemberMetadata {
                    group: group(),
                    member: member(),
                }),
                cr::encode_member_metadata(&MemberMetadata {
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed.clone(),
                    subscribed_topic_regex: m.regex.as_ref().map(|(src, _)| src.clone()),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    server_assignor: None,
                }),
            );
            let target = self.target.get(&m.id).cloned().unwrap_or_default();
            let mut pending = Assignment::new();
            for (t, ps) in &m.owned {
                for p in ps {
                    if !contains(&m.assigned, t, *p) {
                        pending.entry(*t).or_default().insert(*p);
                    }
                }
            }
            let state = if !pending.is_empty() {
                cr::STATE_UNREVOKED_PARTITIONS
            } else if m.assigned != target {
                cr::STATE_UNRELEASED_PARTITIONS
            } else {
                cr::STATE_STABLE
            };
            out.insert(
                records::encode_key(&Key::ConsumerGroupTargetAssignmentMember {
                    group: group(),
                    member: member(),
                }),
                cr::encode_target_member(&target),
            );
            out.insert(
                records::encode_key(&Key::ConsumerGroupCurrentMemberAssignment {
                    group: group(),
                    member: member(),
                }),
                cr::encode_current_assignment(&CurrentAssignment {
                    member_epoch: m.epoch,
                    previous_member_epoch: m.previous_epoch,
                    state,
                    assigned: m.assigned.clone(),
                    pending_revocation: pending,
                }),
            );
        }
        out
    }

    /// The records that bring `__consumer_offsets` from what it holds for the group to its current state, in
    /// Kafka's write order; they count as written from here on.
    fn diff(&mut self) -> Vec<GroupRecord> {
        let now = self.records();
        let mut gone: Vec<Bytes> = self
            .persisted
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        gone.sort_by_key(|k| write_rank(k, true));
        let mut changed: Vec<(Bytes, Bytes)> = now
            .into_iter()
            .filter(|(k, v)| self.persisted.get(k) != Some(&Some(v.clone())))
            .collect();
        changed.sort_by_key(|(k, _)| write_rank(k, false));
        let mut out = Vec::with_capacity(gone.len() + changed.len());
        for k in gone {
            self.persisted.remove(&k);
            out.push((self.id.clone(), k, None));
        }
        for (k, v) in changed {
            self.persisted.insert(k.clone(), Some(v.clone()));
            out.push((self.id.clone(), k, Some(v)));
        }
        out
    }

    /// Tombstones for every record of the group (it is deleted), in Kafka's order.
    fn tombstones(&self) -> Vec<GroupRecord> {
        let mut keys: Vec<Bytes> = self.persisted.keys().cloned().collect();
        keys.sort_by_key(|k| write_rank(k, true));
        keys.into_iter()
            .map(|k| (self.id.clone(), k, None))
            .collect()
    }

    fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.epoch != LEAVE_STATIC
                && (m.epoch != self.assignment_epoch || Some(&m.assigned) != self.target.get(&m.id))
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The topics some member subscribes to, by name (looked up) or by a resolved regex (only those members scan
    /// the topics), with their ids and partition counts.
    fn subscribed_view(&self, topics: &TopicView) -> BTreeMap<String, (Uuid, i32)> {
        let mut view = BTreeMap::new();
        for m in self.members.values() {
            for t in &m.subscribed {
                if let Some(v) = topics.get(t) {
                    view.insert(t.clone(), *v);
                }
            }
            if let Some((_, r)) = m.regex.as_ref().filter(|_| m.regex_resolved) {
                for (t, v) in topics.iter().filter(|(t, _)| r.is_match(t)) {
                    view.insert(t.clone(), *v);
                }
            }
        }
        view
    }

    /// A balanced, sticky target: partitions stay with their current target owner while it is still
    /// subscribed and under its share; the rest go to the least loaded subscribed member.
    fn compute_target(&mut self, topics: &TopicView) {
        let view = self.subscribed_view(topics);
        let mut target: HashMap<String, Assignment> = self
            .members
            .keys()
            .map(|m| (m.clone(), Assignment::new()))
            .collect();
        let mut load: HashMap<String, usize> =
            self.members.keys().map(|m| (m.clone(), 0)).collect();
        for (name, (id, count)) in &view {
            let eligible: Vec<&String> = self
                .members
                .values()
                .filter(|m| m.subscribes(name))
                .map(|m| &m.id)
                .collect();
            if eligible.is_empty() {
                continue;
            }
            let share = (*count as usize).div_ceil(eligible.len());
            let mut per_member: HashMap<&String, usize> = HashMap::new();
            let mut unassigned = Vec::new();
            for p in 0..*count {
                let previous = self
                    .target
                    .iter()
                    .find(|(m, a)| contains(a, id, p) && eligible.contains(m))
                    .map(|(m, _)| m);
                match previous {
                    Some(m) if per_member.get(m).copied().unwrap_or(0) < share => {
                        let m = eligible
                            .iter()
                            .find(|e| **e == m)
                            .copied()
                            .expect("eligible");
                        *per_member.entry(m).or_default() += 1;
                        target
                            .get_mut(m)
                            .expect("member")
                            .entry(*id)
                            .or_default()
                            .insert(p);
                        *load.get_mut(m).expect("member") += 1;
                    }
                    _ => unassigned.push(p),
                }
            }
            for p in unassigned {
                let m = eligible
                    .iter()
                    .min_by_key(|m| {
                        (
                            per_member.get(*m).copied().unwrap_or(0),
                            load[**m],
                            (**m).clone(),
                        )
                    })
                    .copied()
                    .expect("eligible is not empty");
                *per_member.entry(m).or_default() += 1;
                *load.get_mut(m).expect("member") += 1;
                target
                    .get_mut(m)
                    .expect("member")
                    .entry(*id)
                    .or_default()
                    .insert(p);
            }
        }
        self.target = target;
        self.topics_seen = view;
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves `member` towards its target; returns the assignment to send when it changed.
    fn reconcile(&mut self, member_id: &str) -> Option<Assignment> {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: Assignment = {
            let mut h = Assignment::new();
            for (id, m) in &self.members {
                if id == member_id {
                    continue;
                }
                for a in [&m.owned, &m.assigned] {
                    for (t, ps) in a {
                        h.entry(*t).or_default().extend(ps.iter().copied());
                    }
                }
            }
            h
        };
        let assignment_epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id)?;
        let owned = m.owned.clone();
        let mut next = if !is_subset(&owned, &target) {
            // First give up what now belongs elsewhere; the epoch stays until the member confirms.
            intersect(&owned, &target)
        } else {
            let mut next = owned.clone();
            for (t, ps) in &target {
                for p in ps {
                    if !contains(&held_by_others, t, *p) {
                        next.entry(*t).or_default().insert(*p);
                    }
                }
            }
            if m.epoch != assignment_epoch {
                m.previous_epoch = m.epoch;
                m.epoch = assignment_epoch;
            }
            next
        };
        next.retain(|_, ps| !ps.is_empty());
        if next != m.assigned {
            m.assigned = next.clone();
            return Some(next);
        }
        None
    }
}

#[derive(Default)]
pub struct ConsumerGroups {
    pub config: ConsumerConfig,
    groups: HashMap<String, ConsumerGroup>,
    /// Tombstones of deleted groups waiting for [`ConsumerGroups::take_records`].
    out: Vec<GroupRecord>,
}

impl ConsumerGroups {
    pub fn new(config: ConsumerConfig) -> Self {
        Self {
            config,
            groups: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// Drops the groups whose id matches (the coordinator resigned from their partition), and whatever they
    /// had queued for writing; returns how many groups went. Nothing is written for them.
    pub fn remove_where(&mut self, mut gone: impl FnMut(&str) -> bool) -> usize {
        let before = self.groups.len();
        self.groups.retain(|id, _| !gone(id));
        self.out.retain(|(g, _, _)| !gone(g));
        before - self.groups.len()
    }

    /// Whether `group` changed since its records were last handed out.
    pub fn is_dirty(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|g| g.dirty)
    }

    /// The records to write to `__consumer_offsets` for what changed since the last call: first the tombstones
    /// of deleted groups (a group re-created under the same id since then writes its records after them, so
    /// they do not delete it), then for each changed group the records whose value differs from what was
    /// written and tombstones for the records of members that went. Only groups for which `take` is true are
    /// handed out (the broker passes the groups of partitions led and loaded here); the others stay dirty,
    /// their tombstones queued. They count as written; a failed write is reported back with
    /// [`ConsumerGroups::not_written`].
    pub fn take_records_where(&mut self, mut take: impl FnMut(&str) -> bool) -> Vec<GroupRecord> {
        let (mut out, kept): (Vec<GroupRecord>, Vec<GroupRecord>) = std::mem::take(&mut self.out)
            .into_iter()
            .partition(|(g, _, _)| take(g));
        self.out = kept;
        let mut ids: Vec<&String> = self
            .groups
            .iter()
            .filter(|(id, g)| g.dirty && take(id))
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for id in ids {
            let g = self.groups.get_mut(&id).expect("listed");
            g.dirty = false;
            out.extend(g.diff());
        }
        out
    }

    /// [`ConsumerGroups::take_records_where`] for every group.
    pub fn take_records(&mut self) -> Vec<GroupRecord> {
        self.take_records_where(|_| true)
    }

    /// A record handed out by [`ConsumerGroups::take_records`] did not reach the log: its key is marked unknown,
    /// so the next records of the group rewrite it (or delete it). A tombstone of a group that is gone (deleted)
    /// is queued again; any other record of a group that is gone needs nothing: a deleted group's tombstones
    /// cover every key it handed out, and a group unloaded from here is another coordinator's now.
    pub fn not_written(&mut self, group: &str, key: Bytes, tombstone: bool) {
        match self.groups.get_mut(group) {
            Some(g) => {
                g.persisted.insert(key, None);
                g.dirty = true;
            }
            None if tombstone => self.out.push((group.to_string(), key, None)),
            None => {}
        }
    }

    /// Rebuilds groups from one KIP-848 record of `__consumer_offsets`, in log order (a coordinator load).
    /// Members whose records are incomplete at the end of the load are dropped by [`ConsumerGroups::absorb`].
    pub fn replay(
        &mut self,
        key: &Key,
        raw_key: Bytes,
        value: Option<Bytes>,
        now: i64,
    ) -> crate::Result<()> {
        let group_id = key.group().to_string();
        if matches!(key, Key::ConsumerGroupMetadata { .. }) && value.is_none() {
            // The group was deleted.
            self.groups.remove(&group_id);
            return Ok(());
        }
        // A value that does not decode is refused before the group is touched, so that a bad record (skipped by
        // the load) leaves no phantom group or member behind.
        if let Some(v) = &value {
            if let Err(e) = validate_value(key, v.clone()) {
                // The log's newest record of this key is the bad one: what the group wrote before it is no
                // longer there once compaction runs, so the key is marked unknown and rewritten after the load.
                if let Some(g) = self.groups.get_mut(&group_id) {
                    g.persisted.insert(raw_key, None);
                    g.dirty = true;
                }
                return Err(e);
            }
        } else if !self.groups.contains_key(&group_id) {
            // A tombstone for a group that is not there: nothing to delete.
            return Ok(());
        }
        let session = self.config.session_timeout_ms;
        let g = self
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| ConsumerGroup {
                id: group_id.clone(),
                ..Default::default()
            });
        // Members get a full session to find the (restarted) coordinator again.
        let deadline = now + session;
        match (key, value.clone()) {
            (Key::ConsumerGroupMetadata { .. }, Some(v)) => g.group_epoch = cr::decode_epoch(v)?,
            (Key::ConsumerGroupPartitionMetadata { .. }, v) => {
                g.topics_seen = match v {
                    Some(v) => cr::decode_partition_metadata(v)?
                        .into_iter()
                        .map(|t| (t.name, (t.topic_id, t.partitions)))
                        .collect(),
                    None => BTreeMap::new(),
                }
            }
            (Key::ConsumerGroupTargetAssignmentMetadata { .. }, v) => {
                g.assignment_epoch = match v {
                    Some(v) => cr::decode_epoch(v)?,
                    None => 0,
                }
            }
            (Key::ConsumerGroupMemberMetadata { member, .. }, None) => {
                g.members.remove(member);
            }
            (Key::ConsumerGroupMemberMetadata { member, .. }, Some(v)) => {
                let v = cr::decode_member_metadata(v)?;
                let m = g
                    .members
                    .entry(member.clone())
                    .or_insert_with(|| Member::replayed(member, deadline));
                m.regex = match v.subscribed_topic_regex.as_deref().map(compile_regex) {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => return Err(crate::Error::Corrupt(e)),
                    None => None,
                };
                m.instance_id = v.instance_id;
                m.rack_id = v.rack_id;
                m.client_id = v.client_id;
                m.client_host = v.client_host;
                m.subscribed = v.subscribed_topic_names;
                m.rebalance_timeout_ms = v.rebalance_timeout_ms;
            }
            (Key::ConsumerGroupTargetAssignmentMember { member, .. }, v) => match v {
                Some(v) => {
                    g.target
                        .insert(member.clone(), cr::decode_target_member(v)?);
                }
                None => {
                    g.target.remove(member);
                }
            },
            (Key::ConsumerGroupCurrentMemberAssignment { member, .. }, v) => {
                let c = match v {
                    Some(v) => cr::decode_current_assignment(v)?,
                    None => CurrentAssignment {
                        previous_member_epoch: -1,
                        ..Default::default()
                    },
                };
                let m = g
                    .members
                    .entry(member.clone())
                    .or_insert_with(|| Member::replayed(member, deadline));
                m.epoch = c.member_epoch;
                m.previous_epoch = c.previous_member_epoch;
                // What the member still owns: its assignment and what it has yet to revoke.
                let mut owned = c.assigned.clone();
                for (t, ps) in c.pending_revocation {
                    owned.entry(t).or_default().extend(ps);
                }
                m.owned = owned;
                m.assigned = c.assigned;
            }
            (Key::Offset { .. } | Key::Group { .. } | Key::ConsumerGroupMetadata { .. }, _) => {
                return Err(crate::Error::Corrupt(format!(
                    "not a consumer group record: {key:?}"
                )))
            }
        }
        match value {
            Some(v) => g.persisted.insert(raw_key, Some(v)),
            None => g.persisted.remove(&raw_key),
        };
        Ok(())
    }

    /// Takes over the groups `loaded` rebuilt from the log (the end of a load); they replace whatever this
    /// coordinator held under the same ids. A member without its ConsumerGroupMemberMetadata record (a log
    /// compacted or cut mid-way) is dropped, and so is a target for a member that is gone: the group is marked
    /// changed so that their leftover records are deleted with its next write.
    pub fn absorb(&mut self, loaded: ConsumerGroups) {
        for (id, mut g) in loaded.groups {
            let incomplete: Vec<String> = g
                .members
                .keys()
                .filter(|m| {
                    let key = records::encode_key(&Key::ConsumerGroupMemberMetadata {
                        group: id.clone(),
                        member: (*m).clone(),
                    });
                    !matches!(g.persisted.get(&key), Some(Some(_)))
                })
                .cloned()
                .collect();
            for m in &incomplete {
                tracing::warn!(group = %id, member = %m, "dropping a consumer group member whose records are incomplete");
                g.members.remove(m);
            }
            let before = g.target.len();
            g.target.retain(|m, _| g.members.contains_key(m));
            g.dirty = g.persisted.values().any(Option::is_none)
                || !incomplete.is_empty()
                || g.target.len() != before;
            self.groups.insert(id, g);
        }
        self.out.extend(loaded.out);
    }

    pub fn contains(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// What a heartbeat can change in its group: the group's epochs and size, and the heartbeating member.
    fn fingerprint(&self, group: &str, member: &str) -> Option<Fingerprint> {
        let g = self.groups.get(group)?;
        let m = g.members.get(member).map(|m| {
            (
                m.epoch,
                m.previous_epoch,
                m.assigned.clone(),
                m.subscribed.clone(),
                m.regex.as_ref().map(|(src, _)| src.clone()),
            )
        });
        Some((g.group_epoch, g.assignment_epoch, g.members.len(), m))
    }

    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        topics: &TopicView,
        now: i64,
    ) -> HeartbeatResponse {
        let group = req.group_id.clone();
        let before = self.fingerprint(&group, &req.member_id);
        let owned_before = self.owned_of(&group, &req.member_id);
        let mut resp = self.heartbeat_inner(req, topics, now);
        resp.changed = before != self.fingerprint(&group, &resp.member_id);
        // What changed must be written: the changes of `changed`, and what the member reports owning (its
        // partitions pending revocation).
        if resp.changed || owned_before != self.owned_of(&group, &resp.member_id) {
            // A group with no members that was never written has nothing to write.
            if let Some(g) = self
                .groups
                .get_mut(&group)
                .filter(|g| !(g.members.is_empty() && g.persisted.is_empty()))
            {
                g.dirty = true;
            }
        }
        resp
    }

    fn owned_of(&self, group: &str, member: &str) -> Option<Assignment> {
        Some(self.groups.get(group)?.members.get(member)?.owned.clone())
    }

    fn heartbeat_inner(
        &mut self,
        req: HeartbeatRequest,
        topics: &TopicView,
        now: i64,
    ) -> HeartbeatResponse {
        if req.group_id.is_empty() {
            return HeartbeatResponse::error(E::InvalidRequest, "GroupId can't be empty.");
        }
        let interval = self.config.heartbeat_interval_ms;
        let session = self.config.session_timeout_ms;
        let size = member_record_bytes(&req);
        if size > self.config.max_record_bytes {
            return HeartbeatResponse::error(
                E::InvalidRequest,
                &format!(
                    "The subscription of member {} of group {} takes {size} bytes, more than a record of \
                     __consumer_offsets may ({} bytes, max.message.bytes): subscribe to fewer topics or with \
                     SubscribedTopicRegex.",
                    req.member_id, req.group_id, self.config.max_record_bytes
                ),
            );
        }
        if !self.groups.contains_key(&req.group_id) {
            // As Kafka (createIfNotExists = memberEpoch == 0): only a join creates a group, and only a valid
            // one, so that a heartbeat that fails leaves nothing behind to keep in memory or write.
            if req.member_epoch != 0 {
                return HeartbeatResponse::error(
                    E::GroupIdNotFound,
                    &format!("Consumer group {} not found.", req.group_id),
                );
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return HeartbeatResponse::error(
                    E::InvalidRequest,
                    "SubscribedTopicNames or SubscribedTopicRegex must be set when joining.",
                );
            }
            if let Some(Err(message)) = req.subscribed_topic_regex.as_deref().map(compile_regex) {
                return HeartbeatResponse::error(E::InvalidRegularExpression, &message);
            }
        }
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| ConsumerGroup {
                id: req.group_id.clone(),
                ..Default::default()
            });
        let static_leave = req.member_epoch == LEAVE_STATIC
            && group
                .members
                .get(&req.member_id)
                .is_some_and(|m| m.instance_id.is_some());
        if static_leave {
            // KIP-848: a static member leaving temporarily (-2) keeps its place and assignment until its session
            // expires, so that its next incarnation (same group.instance.id) takes them over without a rebalance;
            // nobody else gets its partitions meanwhile.
            let m = group.members.get_mut(&req.member_id).expect("checked");
            m.epoch = LEAVE_STATIC;
            m.owned = Assignment::new();
            tracing::info!(group = %group.id, member = %req.member_id, "static consumer left temporarily");
            return HeartbeatResponse {
                member_id: req.member_id,
                member_epoch: LEAVE_STATIC,
                ..Default::default()
            };
        }
        if req.member_epoch == -1 || req.member_epoch == LEAVE_STATIC {
            // As in Kafka, leaving is answered with the member id and the leave epoch and no heartbeat interval;
            // a member the group does not know (already left, expired or fenced) hears UNKNOWN_MEMBER_ID.
            if group.members.remove(&req.member_id).is_none() {
                return HeartbeatResponse::error(
                    E::UnknownMemberId,
                    &format!(
                        "Member {} is not a member of group {}.",
                        req.member_id, req.group_id
                    ),
                );
            }
            group.target.remove(&req.member_id);
            group.group_epoch += 1;
            tracing::info!(group = %group.id, member = %req.member_id, epoch = group.group_epoch, "consumer left");
            return HeartbeatResponse {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                ..Default::default()
            };
        }
        // A heartbeat repeating the member's current regex is not compiled again.
        let current = group
            .members
            .get(&req.member_id)
            .and_then(|m| m.regex.as_ref())
            .map(|(src, _)| src.as_str());
        let repeated = req.member_epoch != 0
            && req.subscribed_topic_regex.is_some()
            && req.subscribed_topic_regex.as_deref() == current;
        let regex = match req
            .subscribed_topic_regex
            .as_deref()
            .filter(|_| !repeated)
            .map(compile_regex)
        {
            Some(Err(message)) => {
                return HeartbeatResponse::error(E::InvalidRegularExpression, &message)
            }
            Some(Ok(r)) => Some(r),
            None => None,
        };
        let member_id = if req.member_epoch == 0 {
            let Some(subscribed) = req
                .subscribed_topic_names
                .clone()
                .or_else(|| regex.is_some().then(Vec::new))
            else {
                return HeartbeatResponse::error(
                    E::InvalidRequest,
                    "SubscribedTopicNames or SubscribedTopicRegex must be set when joining.",
                );
            };
            let id = if req.member_id.is_empty() {
                Uuid::new_v4().to_string()
            } else {
                req.member_id.clone()
            };
            // A static member replacing its previous incarnation takes its place, once that one has left
            // temporarily (-2); while it is still a member, the instance id is not released (Kafka's
            // UNRELEASED_INSTANCE_ID, fatal for the joining client).
            if let Some(instance) = &req.instance_id {
                let old: Vec<&Member> = group
                    .members
                    .values()
                    .filter(|m| m.instance_id.as_ref() == Some(instance) && m.id != id)
                    .collect();
                if old.iter().any(|m| m.epoch != LEAVE_STATIC) {
                    return HeartbeatResponse::error(
                        E::UnreleasedInstanceId,
                        &format!(
                            "Static member with group.instance.id {instance} is still a member of group {}: it \
                             must leave (close) or its session must expire before another instance can join \
                             with that id.",
                            req.group_id
                        ),
                    );
                }
                let old: Vec<String> = old.iter().map(|m| m.id.clone()).collect();
                for o in old {
                    group.members.remove(&o);
                    if let Some(t) = group.target.remove(&o) {
                        group.target.insert(id.clone(), t);
                    }
                }
            }
            let rejoin = group.members.contains_key(&id);
            let m = group.members.entry(id.clone()).or_insert_with(|| Member {
                id: id.clone(),
                instance_id: req.instance_id.clone(),
                rack_id: req.rack_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                epoch: 0,
                previous_epoch: -1,
                subscribed: subscribed.clone(),
                regex: None,
                regex_resolved: false,
                owned: Assignment::new(),
                assigned: Assignment::new(),
                session_deadline: now + session,
            });
            // Joining (or rejoining after a fence) starts from nothing owned.
            m.epoch = 0;
            m.owned = Assignment::new();
            m.assigned = Assignment::new();
            m.subscribed = subscribed;
            m.regex = regex.flatten();
            m.regex_resolved = false;
            if !rejoin {
                group.group_epoch += 1;
            }
            tracing::info!(group = %group.id, member = %id, epoch = group.group_epoch, "consumer joined");
            id
        } else {
            let Some(m) = group.members.get_mut(&req.member_id) else {
                // An older incarnation of a static member that was replaced (Kafka's FENCED_INSTANCE_ID).
                if let Some(instance) = &req.instance_id {
                    if group
                        .members
                        .values()
                        .any(|m| m.instance_id.as_ref() == Some(instance))
                    {
                        return HeartbeatResponse::error(
                            E::FencedInstanceId,
                            &format!(
                                "group.instance.id {instance} now belongs to another member of group {}",
                                req.group_id
                            ),
                        );
                    }
                }
                return HeartbeatResponse::error(
                    E::UnknownMemberId,
                    "The member is not part of the group.",
                );
            };
            // As Kafka: a member behind by one epoch (the answer that moved it on was lost) is accepted only if
            // what it owns is within what it was assigned; anything else must give up its partitions and rejoin.
            let previous_ok = req.member_epoch == m.previous_epoch
                && req
                    .owned
                    .as_ref()
                    .is_some_and(|owned| owned_within(owned, &m.assigned));
            if req.member_epoch > m.epoch || (req.member_epoch < m.epoch && !previous_ok) {
                return HeartbeatResponse::error(
                    E::FencedMemberEpoch,
                    &format!(
                        "The member epoch {} is fenced: the coordinator has {} for member {}; the member must \
                         give up its partitions and rejoin.",
                        req.member_epoch, m.epoch, req.member_id
                    ),
                );
            }
            if let Some(s) = &req.subscribed_topic_names {
                if *s != m.subscribed {
                    m.subscribed = s.clone();
                    group.group_epoch += 1;
                }
            }
            if let Some(r) = regex {
                if r.as_ref().map(|(src, _)| src) != m.regex.as_ref().map(|(src, _)| src) {
                    m.regex = r;
                    m.regex_resolved = false;
                    group.group_epoch += 1;
                }
            }
            req.member_id.clone()
        };
        let m = group.members.get_mut(&member_id).expect("member present");
        m.session_deadline = now + session;
        // A full heartbeat repeats these (-1 and null: unchanged).
        if req.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.rack_id.is_some() {
            m.rack_id = req.rack_id.clone();
        }
        if let Some(owned) = req.owned {
            m.owned = owned;
        }
        // New partitions or topics under the group's subscriptions also move the group epoch.
        if group.group_epoch == group.assignment_epoch
            && group.subscribed_view(topics) != group.topics_seen
        {
            group.group_epoch += 1;
        }
        if group.group_epoch > group.assignment_epoch {
            group.compute_target(topics);
            tracing::info!(group = %group.id, epoch = group.group_epoch, "consumer group: new target assignment");
        }
        let joined = req.member_epoch == 0;
        let changed = group.reconcile(&member_id);
        // A new regex is resolved now, after this answer: its matches count from the next heartbeat on.
        let m = group.members.get_mut(&member_id).expect("member present");
        if m.regex.is_some() && !m.regex_resolved {
            m.regex_resolved = true;
            if group.subscribed_view(topics) != group.topics_seen {
                group.group_epoch += 1;
            }
        }
        let m = &group.members[&member_id];
        HeartbeatResponse {
            error: 0,
            error_message: None,
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment: if joined {
                Some(m.assigned.clone())
            } else {
                changed
            },
            changed: false,
        }
    }

    /// Expires members whose session lapsed.
    pub fn tick(&mut self, now: i64) {
        for g in self.groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| m.session_deadline <= now)
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %g.id, member = %id, "consumer session timeout");
                g.members.remove(&id);
                g.target.remove(&id);
                g.group_epoch += 1;
                g.dirty = true;
            }
        }
    }

    /// OffsetCommit/OffsetFetch from a member: `Ok` when the member and epoch are current.
    pub fn check_member(&self, group: &str, member_id: &str, epoch: i32) -> Result<(), i16> {
        let Some(g) = self.groups.get(group) else {
            return Err(E::UnknownMemberId.code());
        };
        if g.members.is_empty() && epoch < 0 {
            return Ok(());
        }
        let Some(m) = g.members.get(member_id) else {
            return Err(E::UnknownMemberId.code());
        };
        if epoch != m.epoch && epoch != m.previous_epoch {
            return Err(E::StaleMemberEpoch.code());
        }
        Ok(())
    }

    pub fn is_empty(&self, group: &str) -> bool {
        self.groups.get(group).is_none_or(|g| g.members.is_empty())
    }

    /// (group id, state name) of every consumer-protocol group.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<_> = self
            .groups
            .values()
            .map(|g| (g.id.clone(), g.state()))
            .collect();
        out.sort();
        out
    }

    /// The KIP-848 state name of a group: Empty, Assigning, Reconciling or Stable.
    pub fn state(&self, group: &str) -> Option<&'static str> {
        self.groups.get(group).map(ConsumerGroup::state)
    }

    pub fn members(&self, group: &str) -> Vec<MemberInfo> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        g.members
            .values()
            .map(|m| MemberInfo {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                member_epoch: m.epoch,
                subscribed: m.subscribed.clone(),
                subscribed_regex: m.regex.as_ref().map(|(src, _)| src.clone()),
                assigned: m.assigned.clone(),
                target: g.target.get(&m.id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    pub fn epochs(&self, group: &str) -> Option<(i32, i32)> {
        self.groups
            .get(group)
            .map(|g| (g.group_epoch, g.assignment_epoch))
    }

    /// Deletes `group` if it has no members (DeleteGroups); tombstones for its records are queued.
    pub fn remove_if_empty(&mut self, group: &str) -> bool {
        if self.is_empty(group) {
            if let Some(g) = self.groups.remove(group) {
                self.out.extend(g.tombstones());
            }
            true
        } else {
            false
        }
    }
}

/// Checks that a record's value decodes as its key's type says (a load skips one that does not).
fn validate_value(key: &Key, v: Bytes) -> crate::Result<()> {
    match key {
        Key::ConsumerGroupMetadata { .. } | Key::ConsumerGroupTargetAssignmentMetadata { .. } => {
            cr::decode_epoch(v)?;
        }
        Key::ConsumerGroupPartitionMetadata { .. } => {
            cr::decode_partition_metadata(v)?;
        }
        Key::ConsumerGroupMemberMetadata { .. } => {
            if let Some(r) = cr::decode_member_metadata(v)?.subscribed_topic_regex {
                compile_regex(&r).map_err(crate::Error::Corrupt)?;
            }
        }
        Key::ConsumerGroupTargetAssignmentMember { .. } => {
            cr::decode_target_member(v)?;
        }
        Key::ConsumerGroupCurrentMemberAssignment { .. } => {
            cr::decode_current_assignment(v)?;
        }
        Key::Offset { .. } | Key::Group { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> TopicView {
        let mut t = TopicView::new();
        t.insert("orders".into(), (Uuid::from_u128(1), 4));
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
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            subscribed_topic_names: if epoch == 0 {
                Some(vec!["orders".into()])
            } else {
                None
            },
            subscribed_topic_regex: None,
            owned,
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn a_lone_member_gets_everything_then_shares_without_double_ownership() {
        let mut c = ConsumerGroups::new(ConsumerConfig::default());
        let t = topics();
        let a = c.heartbeat(hb("a", 0, None), &t, 0);
        assert_eq!(a.error, 0);
        assert_eq!(count(a.assignment.as_ref().unwrap()), 4);
        let a_owned = a.assignment.clone().unwrap();
        let a_epoch = a.member_epoch;

        // b joins: it may not get anything a still owns.
        let b = c.heartbeat(hb("b", 0, None), &t, 10);
        assert_eq!(
            count(b.assignment.as_ref().unwrap()),
            0,
            "a has not released anything yet"
        );
        // a is told to revoke two partitions; its epoch stays until it confirms.
        let a2 = c.heartbeat(hb("a", a_epoch, Some(a_owned.clone())), &t, 20);
        let kept = a2.assignment.clone().unwrap();
        assert_eq!(count(&kept), 2);
        assert_eq!(a2.member_epoch, a_epoch);
        // a confirms; it reaches the new epoch.
        let a3 = c.heartbeat(hb("a", a_epoch, Some(kept.clone())), &t, 30);
        assert!(a3.member_epoch > a_epoch);
        // Now b gets the released partitions.
        let b2 = c.heartbeat(hb("b", b.member_epoch, Some(Assignment::new())), &t, 40);
        let b_assigned = b2.assignment.unwrap();
        assert_eq!(count(&b_assigned), 2);
        assert!(
            intersect(&b_assigned, &kept).is_empty(),
            "no partition is owned twice"
        );
        assert_eq!(c.list(), vec![("g".to_string(), "Stable")]);
    }

    #[test]
    fn a_static_instance_id_is_released_only_by_a_temporary_leave_and_the_replaced_member_is_fenced(
    ) {
        let mut c = ConsumerGroups::new(ConsumerConfig {
            session_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            ..ConsumerConfig::default()
        });
        let t = topics();
        let stat = |member: &str, epoch: i32, owned: Option<Assignment>| HeartbeatRequest {
            instance_id: Some("i".into()),
            ..hb(member, epoch, owned)
        };
        let a = c.heartbeat(stat("a", 0, None), &t, 0);
        assert_eq!(a.error, 0);
        let a_assigned = a.assignment.clone().unwrap();
        assert_eq!(count(&a_assigned), 4);
        // A second instance with the same group.instance.id while the first is a member: refused.
        let b = c.heartbeat(stat("b", 0, None), &t, 10);
        assert_eq!(b.error, E::UnreleasedInstanceId.code());
        assert!(b.error_message.unwrap().contains("group.instance.id i"));
        let a2 = c.heartbeat(stat("a", a.member_epoch, Some(a_assigned.clone())), &t, 20);
        assert_eq!(
            (a2.error, a2.member_epoch),
            (0, a.member_epoch),
            "a is untouched"
        );
        // a leaves temporarily (-2): it keeps its place, so nobody else takes its partitions...
        let left = c.heartbeat(stat("a", -2, None), &t, 30);
        assert_eq!((left.error, left.member_epoch), (0, -2));
        let other = c.heartbeat(hb("o", 0, None), &t, 40);
        assert_eq!(count(other.assignment.as_ref().unwrap()), 0);
        // ...and its next incarnation takes over its target (half, since o joined meanwhile) at once; o gets the
        // rest once the old incarnation's hold is gone.
        let b = c.heartbeat(stat("b", 0, None), &t, 50);
        assert_eq!(b.error, 0);
        let b_assigned = b.assignment.unwrap();
        assert_eq!(count(&b_assigned), 2);
        let o = c.heartbeat(hb("o", other.member_epoch, Some(Assignment::new())), &t, 55);
        let o_assigned = o.assignment.unwrap();
        assert_eq!(count(&o_assigned), 2);
        assert!(intersect(&b_assigned, &o_assigned).is_empty());
        // The replaced incarnation is fenced, not told it is unknown.
        let old = c.heartbeat(stat("a", a.member_epoch, Some(a_assigned)), &t, 60);
        assert_eq!(old.error, E::FencedInstanceId.code());
        // A static member whose session expires while away is gone: its partitions move on.
        let left = c.heartbeat(stat("b", -2, None), &t, 70);
        assert_eq!(left.error, 0);
        let o2 = c.heartbeat(hb("o", o.member_epoch, Some(o_assigned.clone())), &t, 80);
        assert_eq!(o2.error, 0);
        c.tick(1_060);
        let o3 = c.heartbeat(hb("o", o2.member_epoch, Some(o_assigned)), &t, 1_070);
        assert_eq!(count(o3.assignment.as_ref().unwrap()), 4);
    }

    #[test]
    fn a_regex_subscription_takes_every_whole_name_match_and_picks_up_new_topics() {
        let mut c = ConsumerGroups::new(ConsumerConfig::default());
        let mut t = TopicView::new();
        t.insert("orders".into(), (Uuid::from_u128(1), 2));
        t.insert("payments".into(), (Uuid::from_u128(2), 1));
        t.insert("xorders".into(), (Uuid::from_u128(3), 1));
        let join = |regex: &str| HeartbeatRequest {
            subscribed_topic_names: None,
            subscribed_topic_regex: Some(regex.into()),
            ..hb("a", 0, None)
        };
        let bad = c.heartbeat(join("orders("), &t, 0);
        assert_eq!(bad.error, E::InvalidRegularExpression.code());
        let a0 = c.heartbeat(join("orders|pay.*"), &t, 0);
        assert_eq!(a0.error, 0);
        assert_eq!(
            a0.assignment.map(|a| count(&a)),
            Some(0),
            "a new regex is resolved after the heartbeat that brings it, as in Kafka"
        );
        let a = c.heartbeat(hb("a", a0.member_epoch, Some(Assignment::new())), &t, 5);
        let got = a.assignment.unwrap();
        assert_eq!(count(&got), 3, "orders and payments, not xorders: {got:?}");
        assert!(!got.contains_key(&Uuid::from_u128(3)));
        // A topic created later that matches joins the subscription at the next heartbeat.
        t.insert("payroll".into(), (Uuid::from_u128(4), 2));
        let a2 = c.heartbeat(hb("a", a.member_epoch, Some(got.clone())), &t, 10);
        let got2 = a2.assignment.expect("a new assignment");
        assert_eq!(count(&got2), 5);
        assert!(a2.member_epoch > a.member_epoch);
        assert_eq!(
            c.members("g")[0].subscribed_regex.as_deref(),
            Some("orders|pay.*")
        );
        // Changing the regex changes the subscription.
        let narrower = HeartbeatRequest {
            subscribed_topic_regex: Some("payroll".into()),
            ..hb("a", a2.member_epoch, Some(got2))
        };
        let a3 = c.heartbeat(narrower, &t, 20);
        let kept = a3.assignment.unwrap();
        assert_eq!(
            count(&kept),
            0,
            "the old matches go, the new ones come next"
        );
        let a4 = c.heartbeat(hb("a", a3.member_epoch, Some(kept)), &t, 30);
        assert_eq!(count(&a4.assignment.unwrap()), 2);
    }

    #[test]
    fn leaving_and_session_expiry_move_partitions_to_the_remaining_member() {
        let mut c = ConsumerGroups::new(ConsumerConfig {
            session_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            ..ConsumerConfig::default()
        });
        let t = topics();
        let a = c.heartbeat(hb("a", 0, None), &t, 0);
        let b = c.heartbeat(hb("b", 0, None), &t, 0);
        let a2 = c.heartbeat(hb("a", a.member_epoch, a.assignment.clone()), &t, 10);
        let _ = c.heartbeat(hb("a", a.member_epoch, a2.assignment.clone()), &t, 20);
        // b stops heartbeating (its session ends at 1 000); a heartbeats at 900.
        let epoch = c
            .members("g")
            .iter()
            .find(|m| m.member_id == "a")
            .unwrap()
            .member_epoch;
        let _ = c.heartbeat(hb("a", epoch, a2.assignment.clone()), &t, 900);
        c.tick(1_100);
        let epoch = c.members("g")[0].member_epoch;
        let a3 = c.heartbeat(hb("a", epoch, a2.assignment.clone()), &t, 1_200);
        assert_eq!(
            count(a3.assignment.as_ref().unwrap()),
            4,
            "a owns everything after b expired"
        );
        assert_eq!(c.members("g").len(), 1);
        let _ = b;
        // a leaves.
        let l = c.heartbeat(hb("a", -1, None), &t, 1_300);
        assert_eq!(l.member_epoch, -1);
        assert!(c.is_empty("g"));
    }

    #[test]
    fn stale_epochs_are_fenced_and_unknown_members_refused() {
        let mut c = ConsumerGroups::new(ConsumerConfig::default());
        let t = topics();
        let a = c.heartbeat(hb("a", 0, None), &t, 0);
        assert_eq!(
            c.heartbeat(hb("a", a.member_epoch + 5, None), &t, 1).error,
            E::FencedMemberEpoch.code()
        );
        assert_eq!(
            c.heartbeat(hb("zz", 3, None), &t, 1).error,
            E::UnknownMemberId.code()
        );
        assert_eq!(c.check_member("g", "a", a.member_epoch), Ok(()));
        assert_eq!(
            c.check_member("g", "a", a.member_epoch + 1),
            Err(E::StaleMemberEpoch.code())
        );
    }

    #[test]
    fn the_previous_epoch_is_accepted_only_with_owned_partitions_within_the_assignment() {
        let mut c = ConsumerGroups::new(ConsumerConfig::default());
        let t = topics();
        let orders = Uuid::from_u128(1);
        let a = c.heartbeat(hb("a", 0, None), &t, 0);
        let everything = a.assignment.clone().unwrap();
        let a1 = c.heartbeat(hb("a", a.member_epoch, Some(everything.clone())), &t, 5);
        assert_eq!(a1.error, 0);
        // b joins; a gives up two partitions and moves to the new epoch, but pretend that answer was lost.
        let _ = c.heartbeat(hb("b", 0, None), &t, 10);
        let kept = c
            .heartbeat(hb("a", a.member_epoch, Some(everything.clone())), &t, 20)
            .assignment
            .unwrap();
        let moved = c.heartbeat(hb("a", a.member_epoch, Some(kept.clone())), &t, 30);
        assert!(moved.member_epoch > a.member_epoch);
        let old = a.member_epoch;
        // The previous epoch owning what it keeps: accepted, and told its current epoch again.
        let retry = c.heartbeat(hb("a", old, Some(kept.clone())), &t, 40);
        assert_eq!((retry.error, retry.member_epoch), (0, moved.member_epoch));
        // The previous epoch still owning a partition that moved on: fenced, as Kafka.
        let stale = c.heartbeat(hb("a", old, Some(everything.clone())), &t, 50);
        assert_eq!(stale.error, E::FencedMemberEpoch.code());
        assert!(stale.error_message.unwrap().contains("rejoin"));
        // The previous epoch without its owned partitions, or listing an unassigned topic: fenced too.
        assert_eq!(
            c.heartbeat(hb("a", old, None), &t, 60).error,
            E::FencedMemberEpoch.code()
        );
        let mut other_topic = kept.clone();
        other_topic.insert(Uuid::from_u128(9), BTreeSet::new());
        assert_eq!(
            c.heartbeat(hb("a", old, Some(other_topic)), &t, 70).error,
            E::FencedMemberEpoch.code()
        );
        // The current epoch is not checked against what the member owns (it may be revoking).
        let current = c.heartbeat(hb("a", moved.member_epoch, Some(kept)), &t, 80);
        assert_eq!(current.error, 0);
        assert!(everything.contains_key(&orders));
    }

    #[test]
    fn changes_are_flagged_for_the_append_linger_and_leaving_twice_is_unknown() {
        let mut c = ConsumerGroups::new(ConsumerConfig::default());
        let t = topics();
        let a = c.heartbeat(hb("a", 0, None), &t, 0);
        assert!(a.changed, "joining changes the group");
        let a2 = c.heartbeat(hb("a", a.member_epoch, a.assignment.clone()), &t, 10);
        assert!(
            !a2.changed,
            "a plain heartbeat of a reconciled member changes nothing"
        );
        let moved = HeartbeatRequest {
            subscribed_topic_names: Some(vec!["orders".into(), "payments".into()]),
            ..hb("a", a.member_epoch, a.assignment.clone())
        };
        assert!(c.heartbeat(moved, &t, 20).changed, "a new subscription");
        let b = c.heartbeat(hb("b", 0, None), &t, 30);
        assert!(b.changed);
        // a is told to give up half: its assignment changes.
        let a3 = c.heartbeat(hb("a", a.member_epoch, a.assignment.clone()), &t, 40);
        assert!(a3.changed && a3.assignment.is_some());
        let left = c.heartbeat(hb("b", -1, None), &t, 50);
        assert_eq!((left.error, left.member_epoch), (0, -1));
        assert!(left.changed);
        assert_eq!(
            left.heartbeat_interval_ms, 0,
            "Kafka sends no heartbeat interval with a leave"
        );
        let again = c.heartbeat(hb("b", -1, None), &t, 60);
        assert_eq!(again.error, E::UnknownMemberId.code());
        assert!(!again.changed);
    }

    #[test]
    fn more_partitions_trigger_a_new_target() {
        let mut c = ConsumerGroups::new(ConsumerConfig::default());
        let mut t = topics();
        let a = c.heartbeat(hb("a", 0, None), &t, 0);
        t.insert("orders".into(), (Uuid::from_u128(1), 6));
        let a2 = c.heartbeat(hb("a", a.member_epoch, a.assignment.clone()), &t, 10);
        assert_eq!(count(a2.assignment.as_ref().unwrap()), 6);
        assert!(a2.member_epoch > a.member_epoch);
    }
    #[test]
    fn a_subscription_too_large_for_one_record_is_refused_before_anything_changes() {
        let mut c = ConsumerGroups::new(ConsumerConfig {
            max_record_bytes: 2_000,
            ..ConsumerConfig::default()
        });
        let t = topics();
        let many: Vec<String> = (0..200).map(|i| format!("topic-{i:04}")).collect();
        let join = HeartbeatRequest {
            subscribed_topic_names: Some(many.clone()),
            ..hb("a", 0, None)
        };
        let r = c.heartbeat(join, &t, 0);
        assert_eq!(r.error, E::InvalidRequest.code());
        assert!(r.error_message.unwrap().contains("max.message.bytes"));
        assert!(!c.contains("g"));
        assert!(c.take_records().is_empty());
        // A member of the group changing to such a subscription keeps its old one.
        let a = c.heartbeat(hb("a", 0, None), &t, 10);
        assert_eq!(a.error, 0);
        let _ = c.take_records();
        let grow = HeartbeatRequest {
            subscribed_topic_names: Some(many),
            ..hb("a", a.member_epoch, a.assignment.clone())
        };
        assert_eq!(c.heartbeat(grow, &t, 20).error, E::InvalidRequest.code());
        assert_eq!(c.members("g")[0].subscribed, vec!["orders".to_string()]);
        assert!(c.take_records().is_empty());
    }
}
