//! The replicated metadata model: what a committed command does to [`ClusterState`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A broker as it registered itself: the address clients are told to connect to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// [`PartitionMeta::leader`] of a partition that has no leader (Kafka's `NO_LEADER`): every
/// in-sync replica is fenced, or none of its replicas was live when it was created.
pub const NO_LEADER: i32 = -1;

/// One partition's replica placement and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The leading broker, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped on every leader change so that fenced leaders and stale followers can be detected.
    pub leader_epoch: i32,
    /// Kafka's partition epoch: bumped on every change of leader, ISR or replicas. AlterPartition
    /// must name the current one, so a leader cannot overwrite a change it has not seen.
    #[serde(default)]
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// In-sync replicas. Never empty: when its last member is fenced it stays in (Kafka never
    /// shrinks the ISR to empty), so that it can lead again when it comes back.
    pub isr: Vec<i32>,
    /// Replicas whose log directory failed on their (live) broker ([`Command::ReplicasOffline`]): never
    /// chosen to lead until that broker registers again (a restart re-checks its directories). Without
    /// this, a live last ISR member in a failed directory would be elected again and again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<i32>,
}

impl PartitionMeta {
    /// A replica that may lead or join the ISR now: its broker is live and its copy is not offline.
    fn eligible(
        &self,
        brokers: &BTreeMap<i32, BrokerInfo>,
        fenced: &BTreeSet<i32>,
        id: i32,
    ) -> bool {
        is_live(brokers, fenced, id) && !self.offline.contains(&id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// Index = partition id.
    pub partitions: Vec<PartitionMeta>,
    /// Topic-level overrides only, under Kafka's names; defaults live in the broker config.
    pub configs: BTreeMap<String, String>,
    /// E.g. `__consumer_offsets`.
    pub internal: bool,
    /// Partition reassignments in progress (KIP-455), by partition id. While one is in progress the
    /// partition's `replicas` is the union of the target replicas (first, in target order) and the
    /// `removing` ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reassignments: BTreeMap<i32, Reassignment>,
}

/// A partition reassignment in progress (Kafka's `adding_replicas`/`removing_replicas`): the target
/// replicas are the partition's `replicas` without `removing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// Target replicas that were not replicas when the reassignment started: they follow the
    /// leader, and the reassignment completes once all of them are in the ISR.
    pub adding: Vec<i32>,
    /// Current replicas that are not targets: they leave when the reassignment completes.
    pub removing: Vec<i32>,
}

impl TopicMeta {
    /// The reassignment in progress for `partition`, if any.
    pub fn reassignment(&self, partition: i32) -> Option<&Reassignment> {
        self.reassignments.get(&partition)
    }
}

/// The whole replicated metadata. It changes only by applying committed [`Command`]s, in log order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Generated once at bootstrap (22-char base64url of a uuid, like Kafka); empty until then.
    pub cluster_id: String,
    /// The broker id of the raft leader that wrote the last applied entry. A new leader always
    /// commits an entry first, so this follows leadership without being a separate command.
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Dynamic cluster-wide broker configs (AlterConfigs on broker "").
    pub broker_configs: BTreeMap<String, String>,
    /// For a later issue (producer id blocks).
    pub next_producer_id: i64,
    /// Registered brokers that are fenced (not live): their heartbeats stopped, and they lead
    /// nothing and are in no ISR that has another member. A broker is live iff registered and
    /// not fenced; see [`ClusterState::is_live`].
    #[serde(default)]
    pub fenced: BTreeSet<i32>,
}

impl ClusterState {
    /// Whether a starting broker must (re)register: its registration is missing or stale, or the metadata still
    /// marks some of its replicas offline (a restart re-checks its log directories, and registering clears those
    /// marks; the broker reports again what is still offline).
    pub fn registration_needed(&self, info: &BrokerInfo) -> bool {
        self.brokers.get(&info.id) != Some(info)
            || self
                .topics
                .values()
                .flat_map(|t| &t.partitions)
                .any(|p| p.offline.contains(&info.id))
    }

    /// Whether broker `id` is registered and not fenced.
    pub fn is_live(&self, id: i32) -> bool {
        is_live(&self.brokers, &self.fenced, id)
    }

    /// The live brokers, in id order.
    pub fn live_brokers(&self) -> Vec<i32> {
        self.brokers
            .keys()
            .copied()
            .filter(|id| !self.fenced.contains(id))
            .collect()
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }

    /// Applies one committed command. Commands are validated here again, not only by the proposer,
    /// because the state machine is the single deterministic judge: two racing `CreateTopic` for
    /// one name both pass the proposer's check but only the first one applied succeeds.
    pub(crate) fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::AllocateProducerIds { count } => {
                let first = self.next_producer_id;
                match first.checked_add((*count).max(1)) {
                    Some(next) => {
                        self.next_producer_id = next;
                        CommandResult::ProducerIds { first }
                    }
                    None => CommandResult::ProducerIdsExhausted,
                }
            }
            Command::Bootstrap { cluster_id } => {
                // First writer wins; a second bootstrap (e.g. after a crash between proposing it
                // and observing it) must not change an id that clients may already have seen.
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                CommandResult::Ok
            }
            Command::RegisterBroker(info) => {
                self.brokers.insert(info.id, info.clone());
                // A (re)started broker has checked its log directories again: it reports what is still offline.
                for p in self.topics.values_mut().flat_map(|t| &mut t.partitions) {
                    p.offline.retain(|&b| b != info.id);
                }
                // Registering means the broker is alive.
                self.unfence(info.id);
                CommandResult::Ok
            }
            Command::FenceBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return CommandResult::UnknownBroker;
                }
                self.fence(*id);
                CommandResult::Ok
            }
            Command::UnfenceBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return CommandResult::UnknownBroker;
                }
                self.unfence(*id);
                CommandResult::Ok
            }
            Command::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => self.alter_partition(
                topic,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                new_isr,
            ),
            Command::ElectPreferredLeader { topic, partition } => {
                self.elect_preferred_leader(topic, *partition)
            }
            Command::AlterReassignment {
                topic,
                partition,
                target,
            } => self.alter_reassignment(topic, *partition, target.as_deref()),
            Command::ElectUncleanLeader { topic, partition } => {
                self.elect_unclean_leader(topic, *partition)
            }
            Command::ReplicasOffline { broker, partitions } => {
                if !self.brokers.contains_key(broker) {
                    return CommandResult::UnknownBroker;
                }
                for (topic, partition) in partitions {
                    self.replica_offline(*broker, topic, *partition);
                }
                CommandResult::Ok
            }
            Command::CreateTopic {
                name,
                id,
                assignments,
                configs,
                internal,
            } => {
                if self.topics.contains_key(name) {
                    return CommandResult::TopicAlreadyExists;
                }
                if assignments.is_empty() {
                    return CommandResult::InvalidPartitions(
                        "a topic needs at least one partition".into(),
                    );
                }
                let partitions = match partitions_from(assignments, |b| self.is_live(b)) {
                    Ok(p) => p,
                    Err(reason) => return CommandResult::InvalidPartitions(reason),
                };
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions,
                        configs: configs.clone(),
                        internal: *internal,
                        reassignments: BTreeMap::new(),
                    },
                );
                CommandResult::Ok
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => CommandResult::Ok,
                None => CommandResult::UnknownTopic,
            },
            Command::CreatePartitions {
                name,
                new_assignments,
            } => {
                let (brokers, fenced) = (&self.brokers, &self.fenced);
                let Some(topic) = self.topics.get_mut(name) else {
                    return CommandResult::UnknownTopic;
                };
                if new_assignments.is_empty() {
                    return CommandResult::InvalidPartitions(format!(
                        "topic already has {} partitions; the new count must be larger",
                        topic.partitions.len()
                    ));
                }
                match partitions_from(new_assignments, |b| is_live(brokers, fenced, b)) {
                    Ok(p) => {
                        topic.partitions.extend(p);
                        CommandResult::Ok
                    }
                    Err(reason) => CommandResult::InvalidPartitions(reason),
                }
            }
            Command::AlterTopicConfigs {
                name,
                set,
                delete,
                replace_all,
            } => {
                let Some(topic) = self.topics.get_mut(name) else {
                    return CommandResult::UnknownTopic;
                };
                alter_configs(&mut topic.configs, set, delete, *replace_all);
                CommandResult::Ok
            }
            Command::AlterBrokerConfigs {
                set,
                delete,
                replace_all,
            } => {
                alter_configs(&mut self.broker_configs, set, delete, *replace_all);
                CommandResult::Ok
            }
        }
    }
}

fn is_live(brokers: &BTreeMap<i32, BrokerInfo>, fenced: &BTreeSet<i32>, id: i32) -> bool {
    brokers.contains_key(&id) && !fenced.contains(&id)
}

/// New partitions start led by their first live replica with the whole replica set in sync, as
/// Kafka does for a freshly created partition that holds no data yet. With no live replica the
/// partition starts without a leader; the first of its replicas to register or be unfenced leads.
fn partitions_from(
    assignments: &[Vec<i32>],
    live: impl Fn(i32) -> bool,
) -> Result<Vec<PartitionMeta>, String> {
    assignments
        .iter()
        .enumerate()
        .map(|(i, replicas)| {
            if replicas.is_empty() {
                return Err(format!("assignment {i} has no replicas"));
            }
            Ok(PartitionMeta {
                leader: replicas
                    .iter()
                    .copied()
                    .find(|&r| live(r))
                    .unwrap_or(NO_LEADER),
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: replicas.clone(),
                isr: replicas.clone(),
                offline: Vec::new(),
            })
        })
        .collect()
}

/// Sets a partition's replicas and ISR (the ISR a non-empty subset of the replicas), keeping its
/// leader if it is still in the ISR, else electing the first replica in the ISR that is live (else
/// none), with a new leader epoch. Bumps the partition epoch.
fn set_replicas(
    p: &mut PartitionMeta,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    live: impl Fn(i32) -> bool,
) {
    p.offline.retain(|b| replicas.contains(b));
    if !isr.contains(&p.leader) {
        let next = replicas
            .iter()
            .copied()
            .find(|&b| isr.contains(&b) && live(b) && !p.offline.contains(&b))
            .unwrap_or(NO_LEADER);
        if next != p.leader {
            p.leader = next;
            p.leader_epoch += 1;
        }
    }
    p.replicas = replicas;
    p.isr = isr;
    p.partition_epoch += 1;
}

fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicMeta>,
    topic: &str,
    partition: i32,
) -> Option<&'a mut PartitionMeta> {
    let index = usize::try_from(partition).ok()?;
    topics.get_mut(topic)?.partitions.get_mut(index)
}

impl ClusterState {
    /// [`Command::FenceBroker`] for a registered broker.
    fn fence(&mut self, id: i32) {
        self.fenced.insert(id);
        let (brokers, fenced) = (&self.brokers, &self.fenced);
        for p in self.topics.values_mut().flat_map(|t| &mut t.partitions) {
            let mut changed = false;
            if p.isr.len() > 1 && p.isr.contains(&id) {
                p.isr.retain(|&r| r != id);
                changed = true;
            }
            if p.leader == id || p.leader == NO_LEADER {
                let next = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|&r| r != id && p.isr.contains(&r) && p.eligible(brokers, fenced, r))
                    .unwrap_or(NO_LEADER);
                if next != p.leader {
                    p.leader = next;
                    p.leader_epoch += 1;
                    changed = true;
                }
            }
            if changed {
                p.partition_epoch += 1;
            }
        }
    }

    /// [`Command::UnfenceBroker`] (and a registration) for a registered broker: it is live again
    /// and leads every leaderless partition whose ISR names it.
    fn unfence(&mut self, id: i32) {
        self.fenced.remove(&id);
        for p in self.topics.values_mut().flat_map(|t| &mut t.partitions) {
            if p.leader == NO_LEADER && p.isr.contains(&id) && !p.offline.contains(&id) {
                p.leader = id;
                p.leader_epoch += 1;
                p.partition_epoch += 1;
            }
        }
    }

    /// Kafka's AlterPartition, judged as its controller does.
    fn alter_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: &[i32],
    ) -> CommandResult {
        let (brokers, fenced) = (&self.brokers, &self.fenced);
        let Some(p) = partition_mut(&mut self.topics, topic, partition) else {
            return CommandResult::UnknownTopic;
        };
        if leader != p.leader || leader_epoch != p.leader_epoch {
            return CommandResult::FencedLeaderEpoch;
        }
        if partition_epoch != p.partition_epoch {
            return CommandResult::InvalidUpdateVersion;
        }
        if !new_isr.contains(&leader) {
            return CommandResult::InvalidRequest(format!(
                "the new ISR {new_isr:?} does not contain the leader {leader}"
            ));
        }
        let unique: BTreeSet<i32> = new_isr.iter().copied().collect();
        if unique.len() != new_isr.len() {
            return CommandResult::InvalidRequest(format!(
                "the new ISR {new_isr:?} names a broker twice"
            ));
        }
        if let Some(r) = new_isr.iter().find(|r| !p.replicas.contains(r)) {
            return CommandResult::InvalidRequest(format!(
                "broker {r} of the new ISR {new_isr:?} is not a replica (replicas {:?})",
                p.replicas
            ));
        }
        let ineligible: Vec<i32> = new_isr
            .iter()
            .copied()
            .filter(|r| !p.isr.contains(r) && !p.eligible(brokers, fenced, *r))
            .collect();
        if !ineligible.is_empty() {
            return CommandResult::IneligibleReplica(format!(
                "brokers {ineligible:?} cannot join the ISR of {topic}-{partition}: they are fenced, not registered \
                 or their copy is in a failed log directory"
            ));
        }
        if p.isr != new_isr {
            p.isr = new_isr.to_vec();
            p.partition_epoch += 1;
        }
        self.complete_reassignment_if_needed(topic, partition);
        let p = partition_mut(&mut self.topics, topic, partition).expect("checked above");
        CommandResult::PartitionUpdated {
            partition_epoch: p.partition_epoch,
        }
    }

    /// KIP-455's AlterPartitionReassignments for one partition, judged as KRaft's controller does:
    /// `Some(target)` starts (or replaces) a reassignment, `None` cancels the one in progress.
    fn alter_reassignment(
        &mut self,
        topic: &str,
        partition: i32,
        target: Option<&[i32]>,
    ) -> CommandResult {
        let (brokers, fenced) = (&self.brokers, &self.fenced);
        let Some(t) = self.topics.get_mut(topic) else {
            return CommandResult::UnknownTopic;
        };
        let Some(p) = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
        else {
            return CommandResult::UnknownTopic;
        };
        let Some(target) = target else {
            // Cancel: back to the replicas from before the reassignment (without the adding ones).
            let Some(r) = t.reassignments.get(&partition) else {
                return CommandResult::NoReassignmentInProgress;
            };
            let original: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|b| !r.adding.contains(b))
                .collect();
            let isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|b| original.contains(b))
                .collect();
            if isr.is_empty() {
                // Kafka would elect an original replica uncleanly here; Fjord never does.
                return CommandResult::InvalidReplicaAssignment(format!(
                    "cannot cancel the reassignment of {topic}-{partition}: none of its original replicas \
                     {original:?} is in sync (ISR {:?})",
                    p.isr
                ));
            }
            t.reassignments.remove(&partition);
            set_replicas(p, original, isr, |b| is_live(brokers, fenced, b));
            return CommandResult::Ok;
        };
        if target.is_empty() {
            return CommandResult::InvalidReplicaAssignment(format!(
                "the target replicas of {topic}-{partition} are empty"
            ));
        }
        let unique: BTreeSet<i32> = target.iter().copied().collect();
        if unique.len() != target.len() {
            return CommandResult::InvalidReplicaAssignment(format!(
                "the target replicas {target:?} of {topic}-{partition} name a broker twice"
            ));
        }
        if let Some(b) = target.iter().find(|b| !brokers.contains_key(b)) {
            return CommandResult::InvalidReplicaAssignment(format!(
                "the target replicas {target:?} of {topic}-{partition} include broker {b}, which is not \
                 registered"
            ));
        }
        // As KRaft: relative to the current replicas (the union, if a reassignment is in progress).
        let adding: Vec<i32> = target
            .iter()
            .copied()
            .filter(|b| !p.replicas.contains(b))
            .collect();
        let removing: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        let replicas: Vec<i32> = target.iter().chain(&removing).copied().collect();
        if replicas != p.replicas {
            p.replicas = replicas;
            p.partition_epoch += 1;
        }
        if adding.is_empty() && removing.is_empty() {
            t.reassignments.remove(&partition);
        } else {
            t.reassignments
                .insert(partition, Reassignment { adding, removing });
        }
        self.complete_reassignment_if_needed(topic, partition);
        CommandResult::Ok
    }

    /// Completes the reassignment of `topic`-`partition` once every adding replica is in the ISR (and
    /// some target replica is): the replicas become the targets, the removing ones leave the ISR, and
    /// a leader that is no longer a replica hands over to the first target replica in sync and live.
    fn complete_reassignment_if_needed(&mut self, topic: &str, partition: i32) {
        let (brokers, fenced) = (&self.brokers, &self.fenced);
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let Some(r) = t.reassignments.get(&partition) else {
            return;
        };
        let Some(p) = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
        else {
            return;
        };
        if !r.adding.iter().all(|b| p.isr.contains(b)) {
            return;
        }
        let isr: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|b| !r.removing.contains(b))
            .collect();
        if isr.is_empty() {
            return;
        }
        let target: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !r.removing.contains(b))
            .collect();
        t.reassignments.remove(&partition);
        set_replicas(p, target, isr, |b| is_live(brokers, fenced, b));
    }

    fn elect_preferred_leader(&mut self, topic: &str, partition: i32) -> CommandResult {
        let (brokers, fenced) = (&self.brokers, &self.fenced);
        let Some(p) = partition_mut(&mut self.topics, topic, partition) else {
            return CommandResult::UnknownTopic;
        };
        let Some(&preferred) = p.replicas.first() else {
            return CommandResult::PreferredLeaderNotAvailable;
        };
        if p.leader == preferred {
            return CommandResult::ElectionNotNeeded;
        }
        if !p.isr.contains(&preferred) || !p.eligible(brokers, fenced, preferred) {
            return CommandResult::PreferredLeaderNotAvailable;
        }
        p.leader = preferred;
        p.leader_epoch += 1;
        p.partition_epoch += 1;
        CommandResult::Ok
    }

    /// One replica of [`Command::ReplicasOffline`]: what fencing its broker does, for this partition only.
    fn replica_offline(&mut self, broker: i32, topic: &str, partition: i32) {
        let (brokers, fenced) = (&self.brokers, &self.fenced);
        let Some(p) = partition_mut(&mut self.topics, topic, partition) else {
            return;
        };
        if !p.replicas.contains(&broker) {
            return;
        }
        let mut changed = false;
        if !p.offline.contains(&broker) {
            p.offline.push(broker);
            changed = true;
        }
        if p.isr.len() > 1 && p.isr.contains(&broker) {
            p.isr.retain(|&r| r != broker);
            changed = true;
        }
        if p.leader == broker {
            p.leader = p
                .replicas
                .iter()
                .copied()
                .find(|&r| r != broker && p.isr.contains(&r) && p.eligible(brokers, fenced, r))
                .unwrap_or(NO_LEADER);
            p.leader_epoch += 1;
            changed = true;
        }
        if changed {
            p.partition_epoch += 1;
        }
    }

    fn elect_unclean_leader(&mut self, topic: &str, partition: i32) -> CommandResult {
        let (brokers, fenced) = (&self.brokers, &self.fenced);
        let Some(p) = partition_mut(&mut self.topics, topic, partition) else {
            return CommandResult::UnknownTopic;
        };
        if p.leader != NO_LEADER && p.eligible(brokers, fenced, p.leader) {
            return CommandResult::ElectionNotNeeded;
        }
        let live = |r: &&i32| p.eligible(brokers, fenced, **r);
        let clean = p.replicas.iter().filter(live).find(|r| p.isr.contains(r));
        let Some(&leader) = clean.or_else(|| p.replicas.iter().find(live)) else {
            return CommandResult::EligibleLeadersNotAvailable;
        };
        if !p.isr.contains(&leader) {
            p.isr = vec![leader];
        }
        p.leader = leader;
        p.leader_epoch += 1;
        p.partition_epoch += 1;
        CommandResult::Ok
    }
}

/// `replace_all` is the legacy AlterConfigs semantics (the request is the complete new set);
/// otherwise it is IncrementalAlterConfigs (SET and DELETE operations).
fn alter_configs(
    configs: &mut BTreeMap<String, String>,
    set: &BTreeMap<String, String>,
    delete: &[String],
    replace_all: bool,
) {
    if replace_all {
        *configs = set.clone();
        return;
    }
    for (k, v) in set {
        configs.insert(k.clone(), v.clone());
    }
    for k in delete {
        configs.remove(k);
    }
}

/// A change to the metadata, proposed through raft. Commands are validated again when applied
/// (the state machine is the judge, deterministically), so two racing `CreateTopic` for one name
/// give exactly one success.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    RegisterBroker(BrokerInfo),
    CreateTopic {
        name: String,
        id: Uuid,
        assignments: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
        internal: bool,
    },
    DeleteTopic {
        name: String,
    },
    /// `new_assignments` are appended after the existing partitions.
    CreatePartitions {
        name: String,
        new_assignments: Vec<Vec<i32>>,
    },
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        replace_all: bool,
    },
    AlterBrokerConfigs {
        set: BTreeMap<String, String>,
        delete: Vec<String>,
        replace_all: bool,
    },
    /// Sets the cluster id if it is still empty. Proposed once by the first node of a new cluster;
    /// the id is generated by the proposer and carried in the command so that applying it stays
    /// deterministic on every replica and on replay.
    Bootstrap {
        cluster_id: String,
    },
    /// Reserves `count` producer ids (KIP-98 idempotence) for the proposing broker; ids are never reused,
    /// across restarts and brokers, because the reservation is a committed entry.
    AllocateProducerIds {
        count: i64,
    },
    /// Broker `id` stopped heartbeating (KRaft's fencing): it becomes fenced, leaves every ISR
    /// that has another member, and each partition it led gets the first replica (in `replicas`
    /// order) that is in the ISR and live as its new leader, or [`NO_LEADER`] if there is none.
    /// A changed leader bumps `leader_epoch`; any change bumps `partition_epoch`. No unclean
    /// election: a partition whose only in-sync replica is fenced waits for it.
    FenceBroker {
        id: i32,
    },
    /// Broker `id` heartbeats again: it is live, and leads every leaderless partition whose ISR
    /// contains it. It rejoins other ISRs through [`Command::AlterPartition`] from their leaders.
    UnfenceBroker {
        id: i32,
    },
    /// Kafka's AlterPartition: the leader `leader` at `leader_epoch` sets the ISR to `new_isr`,
    /// provided it has seen the current `partition_epoch`. Answers
    /// [`CommandResult::PartitionUpdated`] with the new partition epoch.
    AlterPartition {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<i32>,
    },
    /// Makes the first replica the leader if it is live, in the ISR and not leading already
    /// (Kafka's preferred leader election).
    ElectPreferredLeader {
        topic: String,
        partition: i32,
    },
    /// KIP-455: `Some(target)` reassigns the partition to `target` (the first target replica is the
    /// preferred leader): the replicas become the union of the target and the current replicas, the
    /// new ones follow, and once all of them are in the ISR the replicas become the target (see
    /// [`TopicMeta::reassignments`]). `None` cancels the reassignment in progress, reverting to the
    /// replicas from before it.
    AlterReassignment {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// Gives a partition without a live leader one (Kafka's unclean leader election): a live ISR
    /// member if there is one, otherwise the first live replica, whose ISR is then itself alone.
    /// What only the old ISR held is lost; the proposer decides (ElectLeaders type 1, or
    /// `unclean.leader.election.enable`).
    ElectUncleanLeader {
        topic: String,
        partition: i32,
    },
    /// `broker`'s replicas of `partitions` can no longer serve (their log directory failed; KRaft's
    /// heartbeat `OfflineLogDirs`): each is marked offline (never elected, see [`PartitionMeta::offline`]),
    /// leaves the ISR unless it is the last member, and a partition it led moves to the next live in-sync
    /// replica (none left: the partition is offline until the broker returns, or an unclean election picks an
    /// out-of-sync replica that is not offline).
    ReplicasOffline {
        broker: i32,
        partitions: Vec<(String, i32)>,
    },
}

/// The state machine's verdict on a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    Ok,
    TopicAlreadyExists,
    UnknownTopic,
    /// E.g. new count <= current, or a partition without replicas.
    InvalidPartitions(String),
    /// The first of the reserved producer ids (AllocateProducerIds).
    ProducerIds {
        first: i64,
    },
    /// AllocateProducerIds: the block would go beyond `i64::MAX`; nothing was reserved.
    ProducerIdsExhausted,
    /// FenceBroker / UnfenceBroker of a broker that never registered.
    UnknownBroker,
    /// AlterPartition from a broker that is not the current leader, or from an older leader
    /// epoch (Kafka's `FENCED_LEADER_EPOCH`).
    FencedLeaderEpoch,
    /// AlterPartition based on an older partition epoch (Kafka's `INVALID_UPDATE_VERSION`).
    InvalidUpdateVersion,
    /// AlterPartition with a malformed ISR (Kafka's `INVALID_REQUEST`).
    InvalidRequest(String),
    /// AlterPartition adding a broker that is not live to the ISR (Kafka's `INELIGIBLE_REPLICA`).
    IneligibleReplica(String),
    /// AlterPartition succeeded; the partition's epoch is now `partition_epoch`.
    PartitionUpdated {
        partition_epoch: i32,
    },
    /// ElectPreferredLeader: the preferred replica already leads (`ELECTION_NOT_NEEDED`).
    ElectionNotNeeded,
    /// ElectPreferredLeader: the preferred replica is fenced, unregistered or out of the ISR
    /// (`PREFERRED_LEADER_NOT_AVAILABLE`).
    PreferredLeaderNotAvailable,
    /// AlterReassignment: cancelling where nothing is in progress (`NO_REASSIGNMENT_IN_PROGRESS`).
    NoReassignmentInProgress,
    /// AlterReassignment: empty, duplicate or unregistered target replicas, or a cancellation that
    /// would leave no original replica in sync (`INVALID_REPLICA_ASSIGNMENT`).
    InvalidReplicaAssignment(String),
    /// ElectUncleanLeader: no replica of the partition is live (`ELIGIBLE_LEADERS_NOT_AVAILABLE`).
    EligibleLeadersNotAvailable,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "h".into(),
            port: 9092 + id,
            rack: None,
        }
    }

    fn create(name: &str, assignments: Vec<Vec<i32>>) -> Command {
        Command::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            assignments,
            configs: BTreeMap::new(),
            internal: false,
        }
    }

    #[test]
    fn create_topic_leads_with_first_replica_and_full_isr() {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(&Command::RegisterBroker(broker(id)));
        }
        assert_eq!(
            s.apply(&create("t", vec![vec![3, 1, 2], vec![1, 2, 3]])),
            CommandResult::Ok
        );
        let t = &s.topics["t"];
        assert_eq!(
            t.partitions[0],
            PartitionMeta {
                leader: 3,
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: vec![3, 1, 2],
                isr: vec![3, 1, 2],
                offline: Vec::new()
            }
        );
        assert_eq!(t.partitions[1].leader, 1);
        assert_eq!(s.topic_by_id(&t.id.clone()).map(|t| &t.name[..]), Some("t"));
    }

    #[test]
    fn racing_creates_give_exactly_one_success() {
        let mut s = ClusterState::default();
        let results: Vec<_> = (0..2)
            .map(|_| s.apply(&create("t", vec![vec![1]])))
            .collect();
        assert_eq!(
            results,
            vec![CommandResult::Ok, CommandResult::TopicAlreadyExists]
        );
    }

    #[test]
    fn invalid_assignments_are_rejected_without_change() {
        let mut s = ClusterState::default();
        assert!(matches!(
            s.apply(&create("t", vec![])),
            CommandResult::InvalidPartitions(_)
        ));
        assert!(matches!(
            s.apply(&create("t", vec![vec![1], vec![]])),
            CommandResult::InvalidPartitions(_)
        ));
        assert!(s.topics.is_empty());
        assert_eq!(s.apply(&create("t", vec![vec![1]])), CommandResult::Ok);
        let bad = Command::CreatePartitions {
            name: "t".into(),
            new_assignments: vec![vec![1], vec![]],
        };
        assert!(matches!(s.apply(&bad), CommandResult::InvalidPartitions(_)));
        assert_eq!(s.topics["t"].partitions.len(), 1);
    }

    #[test]
    fn bootstrap_sets_cluster_id_once() {
        let mut s = ClusterState::default();
        assert_eq!(
            s.apply(&Command::Bootstrap {
                cluster_id: "first".into()
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::Bootstrap {
                cluster_id: "second".into()
            }),
            CommandResult::Ok
        );
        assert_eq!(s.cluster_id, "first");
    }

    #[test]
    fn register_broker_upserts() {
        let mut s = ClusterState::default();
        let b = |port| BrokerInfo {
            id: 7,
            host: "h".into(),
            port,
            rack: Some("r1".into()),
        };
        s.apply(&Command::RegisterBroker(b(1)));
        s.apply(&Command::RegisterBroker(b(2)));
        assert_eq!(s.brokers.len(), 1);
        assert_eq!(s.brokers[&7].port, 2);
    }
}

#[cfg(test)]
mod producer_id_tests {
    use super::*;

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut s = ClusterState::default();
        let a = s.apply(&Command::AllocateProducerIds { count: 1000 });
        let b = s.apply(&Command::AllocateProducerIds { count: 1000 });
        assert_eq!(a, CommandResult::ProducerIds { first: 0 });
        assert_eq!(b, CommandResult::ProducerIds { first: 1000 });
        assert_eq!(s.next_producer_id, 2000);
    }

    #[test]
    fn exhausted_producer_id_space_is_refused_without_change() {
        let mut s = ClusterState {
            next_producer_id: i64::MAX - 10,
            ..ClusterState::default()
        };
        assert_eq!(
            s.apply(&Command::AllocateProducerIds { count: 11 }),
            CommandResult::ProducerIdsExhausted
        );
        assert_eq!(s.next_producer_id, i64::MAX - 10);
        assert_eq!(
            s.apply(&Command::AllocateProducerIds { count: 10 }),
            CommandResult::ProducerIds {
                first: i64::MAX - 10
            }
        );
        assert_eq!(s.next_producer_id, i64::MAX);
        assert_eq!(
            s.apply(&Command::AllocateProducerIds { count: 0 }),
            CommandResult::ProducerIdsExhausted
        );
        assert_eq!(s.next_producer_id, i64::MAX);
    }
}

#[cfg(test)]
mod liveness_tests {
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "h".into(),
            port: 9092 + id,
            rack: None,
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

    /// Brokers 1..=3 registered; topic "t" with partitions
    /// 0: [1,2,3], 1: [2,3,1], 2: [3,1,2], 3: [1] (a single replica), 4: [2,3].
    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            assert_eq!(
                s.apply(&Command::RegisterBroker(broker(id))),
                CommandResult::Ok
            );
        }
        let cmd = Command::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            assignments: vec![
                vec![1, 2, 3],
                vec![2, 3, 1],
                vec![3, 1, 2],
                vec![1],
                vec![2, 3],
            ],
            configs: BTreeMap::new(),
            internal: false,
        };
        assert_eq!(s.apply(&cmd), CommandResult::Ok);
        s
    }

    fn parts(s: &ClusterState) -> Vec<PartitionMeta> {
        s.topics["t"].partitions.clone()
    }

    fn fence(s: &mut ClusterState, id: i32) -> CommandResult {
        s.apply(&Command::FenceBroker { id })
    }

    fn unfence(s: &mut ClusterState, id: i32) -> CommandResult {
        s.apply(&Command::UnfenceBroker { id })
    }

    fn alter(
        s: &mut ClusterState,
        partition: i32,
        leader: i32,
        le: i32,
        pe: i32,
        isr: &[i32],
    ) -> CommandResult {
        s.apply(&Command::AlterPartition {
            topic: "t".into(),
            partition,
            leader,
            leader_epoch: le,
            partition_epoch: pe,
            new_isr: isr.to_vec(),
        })
    }

    fn elect(s: &mut ClusterState, partition: i32) -> CommandResult {
        s.apply(&Command::ElectPreferredLeader {
            topic: "t".into(),
            partition,
        })
    }

    #[test]
    fn offline_replicas_leave_the_isr_and_hand_over_leadership() {
        let mut s = cluster();
        let offline = |s: &mut ClusterState, broker: i32, partitions: &[i32]| {
            s.apply(&Command::ReplicasOffline {
                broker,
                partitions: partitions.iter().map(|p| ("t".to_string(), *p)).collect(),
            })
        };
        let before = parts(&s);
        // Broker 1's replicas of 0 (it leads) and 2 (it follows), and of 3 (its only replica).
        assert_eq!(offline(&mut s, 1, &[0, 2, 3, 4, 99]), CommandResult::Ok);
        let after = parts(&s);
        assert_eq!((after[0].leader, after[0].isr.clone()), (2, vec![2, 3]));
        assert_eq!(after[0].leader_epoch, before[0].leader_epoch + 1);
        assert_eq!((after[2].leader, after[2].isr.clone()), (3, vec![3, 2]));
        assert_eq!(
            after[2].leader_epoch, before[2].leader_epoch,
            "3 still leads"
        );
        assert_eq!(after[2].partition_epoch, before[2].partition_epoch + 1);
        assert_eq!(
            (after[3].leader, after[3].isr.clone()),
            (NO_LEADER, vec![1])
        );
        assert_eq!(after[4], before[4], "1 is no replica of partition 4");
        assert_eq!(after[1], before[1], "partition 1 was not named");
        assert!(s.is_live(1), "the broker itself stays live");
        assert_eq!(offline(&mut s, 9, &[0]), CommandResult::UnknownBroker);
    }

    #[test]
    fn a_replica_in_a_failed_log_dir_is_never_elected_until_its_broker_registers_again() {
        let mut s = cluster();
        let t = |s: &ClusterState| s.topics["t"].partitions[0].clone();
        let offline = |s: &mut ClusterState, broker: i32| {
            s.apply(&Command::ReplicasOffline {
                broker,
                partitions: vec![("t".to_string(), 0)],
            })
        };
        let unclean = |s: &mut ClusterState| {
            s.apply(&Command::ElectUncleanLeader {
                topic: "t".into(),
                partition: 0,
            })
        };
        // 1 leads and is the last in-sync replica; its log directory fails.
        s.topics.get_mut("t").unwrap().partitions[0] = part(1, 4, 7, &[1, 2, 3], &[1]);
        assert_eq!(offline(&mut s, 1), CommandResult::Ok);
        let p = t(&s);
        assert_eq!(
            (p.leader, p.isr.clone(), p.offline.clone()),
            (NO_LEADER, vec![1], vec![1])
        );
        // Its broker is live, but its copy cannot lead: neither when it heartbeats again after a lapse...
        assert_eq!(fence(&mut s, 1), CommandResult::Ok);
        assert_eq!(
            s.apply(&Command::UnfenceBroker { id: 1 }),
            CommandResult::Ok
        );
        assert_eq!(t(&s).leader, NO_LEADER, "not re-elected by unfencing");
        // ...nor by an unclean election, which takes a live out-of-sync replica instead (once; no loop).
        assert_eq!(unclean(&mut s), CommandResult::Ok);
        let p = t(&s);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!(unclean(&mut s), CommandResult::ElectionNotNeeded);
        // Nor may it rejoin the ISR or be elected as the preferred leader.
        let p = t(&s);
        assert!(matches!(
            s.apply(&Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: 2,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: vec![2, 1],
            }),
            CommandResult::IneligibleReplica(_)
        ));
        s.topics.get_mut("t").unwrap().partitions[0].isr = vec![2, 1];
        assert_eq!(
            s.apply(&Command::ElectPreferredLeader {
                topic: "t".into(),
                partition: 0
            }),
            CommandResult::PreferredLeaderNotAvailable
        );
        // A restarted broker registers again, having checked its directories: its replica is eligible again. It
        // must do so even when its address is unchanged.
        assert!(s.registration_needed(&broker(1)));
        assert_eq!(
            s.apply(&Command::RegisterBroker(broker(1))),
            CommandResult::Ok
        );
        assert!(t(&s).offline.is_empty());
        assert!(
            !s.registration_needed(&broker(1)),
            "registered, nothing marked"
        );
        assert_eq!(
            s.apply(&Command::ElectPreferredLeader {
                topic: "t".into(),
                partition: 0
            }),
            CommandResult::Ok
        );
        assert_eq!(t(&s).leader, 1);
        // With no eligible replica at all, an unclean election finds nobody rather than the offline copy.
        s.topics.get_mut("t").unwrap().partitions[0] = part(1, 9, 9, &[1], &[1]);
        assert_eq!(offline(&mut s, 1), CommandResult::Ok);
        assert_eq!(unclean(&mut s), CommandResult::EligibleLeadersNotAvailable);
    }

    #[test]
    fn unclean_election_prefers_a_live_isr_member_and_else_takes_any_live_replica() {
        let mut s = cluster();
        let unclean = |s: &mut ClusterState| {
            s.apply(&Command::ElectUncleanLeader {
                topic: "t".into(),
                partition: 0,
            })
        };
        s.topics.get_mut("t").unwrap().partitions[0] = part(1, 4, 7, &[1, 2, 3], &[1, 2, 3]);
        assert_eq!(unclean(&mut s), CommandResult::ElectionNotNeeded);
        // Broker 2 falls out of the ISR; then 3 and 1 are fenced: 1 stays the last ISR member.
        s.topics.get_mut("t").unwrap().partitions[0] = part(1, 4, 7, &[1, 2, 3], &[1, 3]);
        assert_eq!(fence(&mut s, 3), CommandResult::Ok);
        assert_eq!(fence(&mut s, 1), CommandResult::Ok);
        let p = &s.topics["t"].partitions[0];
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
        let epochs = (p.leader_epoch, p.partition_epoch);
        // Only 2 is live and it is out of sync: an unclean election makes it the leader and sole ISR member.
        assert_eq!(unclean(&mut s), CommandResult::Ok);
        let p = &s.topics["t"].partitions[0];
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        assert_eq!(
            (p.leader_epoch, p.partition_epoch),
            (epochs.0 + 1, epochs.1 + 1)
        );
        assert_eq!(unclean(&mut s), CommandResult::ElectionNotNeeded);
        // With a live ISR member the election is clean and keeps the ISR.
        s.topics.get_mut("t").unwrap().partitions[0] = part(NO_LEADER, 9, 9, &[1, 2, 3], &[3, 2]);
        assert_eq!(unclean(&mut s), CommandResult::Ok);
        let p = &s.topics["t"].partitions[0];
        assert_eq!((p.leader, p.isr.clone()), (2, vec![3, 2]));
        // Nobody live: nothing to elect.
        assert_eq!(fence(&mut s, 2), CommandResult::Ok);
        assert_eq!(unclean(&mut s), CommandResult::EligibleLeadersNotAvailable);
        assert_eq!(
            s.apply(&Command::ElectUncleanLeader {
                topic: "nope".into(),
                partition: 0
            }),
            CommandResult::UnknownTopic
        );
    }

    #[test]
    fn liveness_is_registered_and_not_fenced() {
        let mut s = cluster();
        assert_eq!(s.live_brokers(), vec![1, 2, 3]);
        assert!(s.is_live(2));
        assert!(!s.is_live(4), "never registered");
        assert_eq!(fence(&mut s, 2), CommandResult::Ok);
        assert!(!s.is_live(2));
        assert_eq!(s.live_brokers(), vec![1, 3]);
        assert_eq!(s.fenced, BTreeSet::from([2]));
        assert_eq!(unfence(&mut s, 2), CommandResult::Ok);
        assert_eq!(s.live_brokers(), vec![1, 2, 3]);
        assert!(s.fenced.is_empty());
    }

    #[test]
    fn fencing_moves_leadership_to_the_next_live_isr_replica_and_shrinks_isrs() {
        let mut s = cluster();
        assert_eq!(fence(&mut s, 1), CommandResult::Ok);
        assert_eq!(s.fenced, BTreeSet::from([1]));
        assert_eq!(
            parts(&s),
            vec![
                part(2, 1, 1, &[1, 2, 3], &[2, 3]),
                part(2, 0, 1, &[2, 3, 1], &[2, 3]),
                part(3, 0, 1, &[3, 1, 2], &[3, 2]),
                // The last in-sync replica stays in the ISR; no leader until it returns.
                part(NO_LEADER, 1, 1, &[1], &[1]),
                part(2, 0, 0, &[2, 3], &[2, 3]),
            ]
        );
        // Fencing again changes nothing.
        let before = s.clone();
        assert_eq!(fence(&mut s, 1), CommandResult::Ok);
        assert_eq!(s, before);

        // Fencing 2 as well: leadership skips fenced 1 (and 1 is out of the ISR anyway).
        assert_eq!(fence(&mut s, 2), CommandResult::Ok);
        assert_eq!(s.fenced, BTreeSet::from([1, 2]));
        assert_eq!(
            parts(&s),
            vec![
                part(3, 2, 2, &[1, 2, 3], &[3]),
                part(3, 1, 2, &[2, 3, 1], &[3]),
                part(3, 0, 2, &[3, 1, 2], &[3]),
                part(NO_LEADER, 1, 1, &[1], &[1]),
                part(3, 1, 1, &[2, 3], &[3]),
            ]
        );
        // And 3: every partition loses its leader, the ISRs keep their last member.
        assert_eq!(fence(&mut s, 3), CommandResult::Ok);
        assert_eq!(
            parts(&s),
            vec![
                part(NO_LEADER, 3, 3, &[1, 2, 3], &[3]),
                part(NO_LEADER, 2, 3, &[2, 3, 1], &[3]),
                part(NO_LEADER, 1, 3, &[3, 1, 2], &[3]),
                part(NO_LEADER, 1, 1, &[1], &[1]),
                part(NO_LEADER, 2, 2, &[2, 3], &[3]),
            ]
        );
        assert!(s.live_brokers().is_empty());

        // Broker 1 comes back: it leads only where it is the (last) in-sync replica.
        assert_eq!(unfence(&mut s, 1), CommandResult::Ok);
        assert_eq!(
            parts(&s),
            vec![
                part(NO_LEADER, 3, 3, &[1, 2, 3], &[3]),
                part(NO_LEADER, 2, 3, &[2, 3, 1], &[3]),
                part(NO_LEADER, 1, 3, &[3, 1, 2], &[3]),
                part(1, 2, 2, &[1], &[1]),
                part(NO_LEADER, 2, 2, &[2, 3], &[3]),
            ]
        );
        // Broker 3 re-registers (a restart with a new address): registration unfences too.
        let mut moved = broker(3);
        moved.port = 1;
        assert_eq!(s.apply(&Command::RegisterBroker(moved)), CommandResult::Ok);
        assert_eq!(s.fenced, BTreeSet::from([2]));
        assert_eq!(
            parts(&s),
            vec![
                part(3, 4, 4, &[1, 2, 3], &[3]),
                part(3, 3, 4, &[2, 3, 1], &[3]),
                part(3, 2, 4, &[3, 1, 2], &[3]),
                part(1, 2, 2, &[1], &[1]),
                part(3, 3, 3, &[2, 3], &[3]),
            ]
        );
    }

    #[test]
    fn unknown_brokers_cannot_be_fenced_or_unfenced() {
        let mut s = cluster();
        let before = s.clone();
        assert_eq!(fence(&mut s, 9), CommandResult::UnknownBroker);
        assert_eq!(unfence(&mut s, 9), CommandResult::UnknownBroker);
        assert_eq!(s, before);
    }

    #[test]
    fn new_partitions_are_led_by_their_first_live_replica() {
        let mut s = cluster();
        fence(&mut s, 1);
        let cmd = Command::CreateTopic {
            name: "u".into(),
            id: Uuid::new_v4(),
            assignments: vec![vec![1, 3, 2], vec![1, 4], vec![2]],
            configs: BTreeMap::new(),
            internal: false,
        };
        assert_eq!(s.apply(&cmd), CommandResult::Ok);
        assert_eq!(
            s.topics["u"].partitions,
            vec![
                part(3, 0, 0, &[1, 3, 2], &[1, 3, 2]),
                part(NO_LEADER, 0, 0, &[1, 4], &[1, 4]),
                part(2, 0, 0, &[2], &[2]),
            ]
        );
        let cmd = Command::CreatePartitions {
            name: "u".into(),
            new_assignments: vec![vec![1, 2]],
        };
        assert_eq!(s.apply(&cmd), CommandResult::Ok);
        assert_eq!(s.topics["u"].partitions[3], part(2, 0, 0, &[1, 2], &[1, 2]));
        // Broker 1 is back: it leads the partition that had no leader, not the others.
        unfence(&mut s, 1);
        assert_eq!(s.topics["u"].partitions[1], part(1, 1, 1, &[1, 4], &[1, 4]));
        assert_eq!(
            s.topics["u"].partitions[0],
            part(3, 0, 0, &[1, 3, 2], &[1, 3, 2])
        );
    }

    #[test]
    fn alter_partition_shrinks_and_expands_the_isr_bumping_the_partition_epoch() {
        let mut s = cluster();
        assert_eq!(
            alter(&mut s, 0, 1, 0, 0, &[1, 3]),
            CommandResult::PartitionUpdated { partition_epoch: 1 }
        );
        assert_eq!(parts(&s)[0], part(1, 0, 1, &[1, 2, 3], &[1, 3]));
        assert_eq!(
            alter(&mut s, 0, 1, 0, 1, &[1, 3, 2]),
            CommandResult::PartitionUpdated { partition_epoch: 2 }
        );
        assert_eq!(parts(&s)[0], part(1, 0, 2, &[1, 2, 3], &[1, 3, 2]));
        // The same ISR again is no change: no new epoch.
        assert_eq!(
            alter(&mut s, 0, 1, 0, 2, &[1, 3, 2]),
            CommandResult::PartitionUpdated { partition_epoch: 2 }
        );
        assert_eq!(parts(&s)[0], part(1, 0, 2, &[1, 2, 3], &[1, 3, 2]));
    }

    #[test]
    fn alter_partition_refusals_change_nothing() {
        let mut s = cluster();
        // Partition 0 moves to leader 2 at leader epoch 1, partition epoch 1; 1 leaves the ISR.
        fence(&mut s, 1);
        assert_eq!(parts(&s)[0], part(2, 1, 1, &[1, 2, 3], &[2, 3]));
        let before = s.clone();
        let cases: Vec<(i32, i32, i32, i32, Vec<i32>, CommandResult)> = vec![
            // The old leader, at its old epoch.
            (0, 1, 0, 0, vec![1, 2, 3], CommandResult::FencedLeaderEpoch),
            // The right leader at an old leader epoch.
            (0, 2, 0, 1, vec![2, 3], CommandResult::FencedLeaderEpoch),
            // Not the leader, at the current epoch.
            (0, 3, 1, 1, vec![2, 3], CommandResult::FencedLeaderEpoch),
            (0, 2, 1, 0, vec![2], CommandResult::InvalidUpdateVersion),
            (0, 2, 1, 2, vec![2], CommandResult::InvalidUpdateVersion),
        ];
        for (p, leader, le, pe, isr, want) in cases {
            assert_eq!(
                alter(&mut s, p, leader, le, pe, &isr),
                want,
                "{leader} {le} {pe} {isr:?}"
            );
        }
        for isr in [vec![3], vec![], vec![2, 3, 3], vec![2, 4]] {
            assert!(
                matches!(
                    alter(&mut s, 0, 2, 1, 1, &isr),
                    CommandResult::InvalidRequest(_)
                ),
                "{isr:?}"
            );
        }
        // Adding fenced broker 1 back.
        assert!(matches!(
            alter(&mut s, 0, 2, 1, 1, &[2, 3, 1]),
            CommandResult::IneligibleReplica(m) if m.contains("[1]")
        ));
        let unknown = |topic: &str, partition| Command::AlterPartition {
            topic: topic.into(),
            partition,
            leader: 2,
            leader_epoch: 1,
            partition_epoch: 1,
            new_isr: vec![2],
        };
        assert_eq!(s.apply(&unknown("nope", 0)), CommandResult::UnknownTopic);
        assert_eq!(s.apply(&unknown("t", 5)), CommandResult::UnknownTopic);
        assert_eq!(s.apply(&unknown("t", -1)), CommandResult::UnknownTopic);
        assert_eq!(s, before);

        // A leaderless partition (3: ISR [1], 1 fenced) takes no AlterPartition at all.
        assert_eq!(
            alter(&mut s, 3, 1, 1, 1, &[1]),
            CommandResult::FencedLeaderEpoch
        );
        // Once 1 is live again it may rejoin.
        unfence(&mut s, 1);
        assert_eq!(
            alter(&mut s, 0, 2, 1, 1, &[2, 3, 1]),
            CommandResult::PartitionUpdated { partition_epoch: 2 }
        );
        assert_eq!(parts(&s)[0], part(2, 1, 2, &[1, 2, 3], &[2, 3, 1]));
    }

    #[test]
    fn only_brokers_added_to_the_isr_must_be_live() {
        let mut s = cluster();
        // Broker 4 never registered, yet is a replica and (as at every creation) in the ISR.
        let cmd = Command::CreateTopic {
            name: "u".into(),
            id: Uuid::new_v4(),
            assignments: vec![vec![1, 4]],
            configs: BTreeMap::new(),
            internal: false,
        };
        assert_eq!(s.apply(&cmd), CommandResult::Ok);
        let alter_u = |s: &mut ClusterState, pe: i32, isr: &[i32]| {
            s.apply(&Command::AlterPartition {
                topic: "u".into(),
                partition: 0,
                leader: 1,
                leader_epoch: 0,
                partition_epoch: pe,
                new_isr: isr.to_vec(),
            })
        };
        // Keeping 4 is allowed (no change, so no new epoch); re-adding it once out is not.
        assert_eq!(
            alter_u(&mut s, 0, &[1, 4]),
            CommandResult::PartitionUpdated { partition_epoch: 0 }
        );
        assert_eq!(
            alter_u(&mut s, 0, &[1]),
            CommandResult::PartitionUpdated { partition_epoch: 1 }
        );
        assert!(matches!(
            alter_u(&mut s, 1, &[1, 4]),
            CommandResult::IneligibleReplica(_)
        ));
        assert_eq!(s.topics["u"].partitions[0], part(1, 0, 1, &[1, 4], &[1]));
    }

    #[test]
    fn preferred_leader_election() {
        let mut s = cluster();
        assert_eq!(elect(&mut s, 0), CommandResult::ElectionNotNeeded);
        fence(&mut s, 1);
        assert_eq!(parts(&s)[0], part(2, 1, 1, &[1, 2, 3], &[2, 3]));
        let before = s.clone();
        // Fenced and out of the ISR.
        assert_eq!(elect(&mut s, 0), CommandResult::PreferredLeaderNotAvailable);
        unfence(&mut s, 1);
        // Live again but not yet back in the ISR.
        assert_eq!(elect(&mut s, 0), CommandResult::PreferredLeaderNotAvailable);
        assert_eq!(parts(&s)[0], before.topics["t"].partitions[0]);
        assert_eq!(
            alter(&mut s, 0, 2, 1, 1, &[2, 3, 1]),
            CommandResult::PartitionUpdated { partition_epoch: 2 }
        );
        assert_eq!(elect(&mut s, 0), CommandResult::Ok);
        assert_eq!(parts(&s)[0], part(1, 2, 3, &[1, 2, 3], &[2, 3, 1]));
        assert_eq!(elect(&mut s, 0), CommandResult::ElectionNotNeeded);
        assert_eq!(elect(&mut s, 9), CommandResult::UnknownTopic);
        let other = Command::ElectPreferredLeader {
            topic: "nope".into(),
            partition: 0,
        };
        assert_eq!(s.apply(&other), CommandResult::UnknownTopic);
    }

    /// Stores written before liveness existed have no `fenced` and no `partition_epoch`; they
    /// must load, with everything live and every partition epoch 0.
    #[test]
    fn state_and_commands_without_the_new_fields_still_deserialize() {
        let old_state = r#"{
            "cluster_id": "abc",
            "controller_id": 1,
            "brokers": {"1": {"id": 1, "host": "h", "port": 9092, "rack": null}},
            "topics": {"t": {
                "name": "t",
                "id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
                "partitions": [{"leader": 1, "leader_epoch": 4, "replicas": [1], "isr": [1]}],
                "configs": {},
                "internal": false
            }},
            "broker_configs": {},
            "next_producer_id": 7
        }"#;
        let s: ClusterState = serde_json::from_str(old_state).unwrap();
        assert!(s.fenced.is_empty());
        assert_eq!(s.live_brokers(), vec![1]);
        assert_eq!(s.topics["t"].partitions[0], part(1, 4, 0, &[1], &[1]));
        assert_eq!(s.next_producer_id, 7);

        let old_cmd = r#"{"CreateTopic": {
            "name": "u",
            "id": "67e55044-10b1-426f-9247-bb680e5fe0c9",
            "assignments": [[1]],
            "configs": {},
            "internal": false
        }}"#;
        let cmd: Command = serde_json::from_str(old_cmd).unwrap();
        assert!(matches!(&cmd, Command::CreateTopic { name, .. } if name == "u"));
        let reg: Command = serde_json::from_str(
            r#"{"RegisterBroker": {"id": 2, "host": "h", "port": 1, "rack": null}}"#,
        )
        .unwrap();
        assert!(matches!(
            reg,
            Command::RegisterBroker(BrokerInfo { id: 2, .. })
        ));

        // And the new fields round-trip.
        let mut s = s;
        s.apply(&Command::FenceBroker { id: 1 });
        let back: ClusterState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.fenced, BTreeSet::from([1]));
        assert_eq!(
            back.topics["t"].partitions[0],
            part(NO_LEADER, 5, 1, &[1], &[1])
        );
    }
}

#[cfg(test)]
mod reassignment_tests {
    use super::*;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=4 {
            s.apply(&Command::RegisterBroker(BrokerInfo {
                id,
                host: "h".into(),
                port: 9092 + id,
                rack: None,
            }));
        }
        let create = Command::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            assignments: vec![vec![1, 2, 3]],
            configs: BTreeMap::new(),
            internal: false,
        };
        assert_eq!(s.apply(&create), CommandResult::Ok);
        s
    }

    fn reassign(s: &mut ClusterState, target: Option<&[i32]>) -> CommandResult {
        s.apply(&Command::AlterReassignment {
            topic: "t".into(),
            partition: 0,
            target: target.map(<[i32]>::to_vec),
        })
    }

    fn p(s: &ClusterState) -> PartitionMeta {
        s.topics["t"].partitions[0].clone()
    }

    fn isr(s: &mut ClusterState, new_isr: &[i32]) -> CommandResult {
        let p = p(s);
        s.apply(&Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: new_isr.to_vec(),
        })
    }

    #[test]
    fn replicas_are_the_union_until_every_adding_replica_is_in_sync() {
        let mut s = state();
        assert_eq!(reassign(&mut s, Some(&[2, 3, 4])), CommandResult::Ok);
        let r = &s.topics["t"].reassignments[&0];
        assert_eq!((r.adding.clone(), r.removing.clone()), (vec![4], vec![1]));
        let q = p(&s);
        assert_eq!(q.replicas, vec![2, 3, 4, 1]);
        assert_eq!((q.leader, q.leader_epoch, q.partition_epoch), (1, 0, 1));
        assert_eq!(q.isr, vec![1, 2, 3]);
        // The leader adds 4 to the ISR: the reassignment completes in the same command, and leadership
        // leaves removed broker 1 for the first target replica, at a new leader epoch.
        assert_eq!(
            isr(&mut s, &[1, 2, 3, 4]),
            CommandResult::PartitionUpdated { partition_epoch: 3 }
        );
        let q = p(&s);
        assert_eq!(q.replicas, vec![2, 3, 4]);
        assert_eq!(q.isr, vec![2, 3, 4]);
        assert_eq!((q.leader, q.leader_epoch), (2, 1));
        assert!(s.topics["t"].reassignments.is_empty());
        assert_eq!(
            reassign(&mut s, None),
            CommandResult::NoReassignmentInProgress
        );
    }

    #[test]
    fn cancelling_reverts_to_the_original_replicas() {
        let mut s = state();
        assert_eq!(reassign(&mut s, Some(&[4, 3, 2])), CommandResult::Ok);
        assert_eq!(p(&s).replicas, vec![4, 3, 2, 1]);
        assert_eq!(reassign(&mut s, None), CommandResult::Ok);
        let q = p(&s);
        assert_eq!(q.replicas, vec![3, 2, 1], "the adding replica 4 is gone");
        assert_eq!(q.isr, vec![1, 2, 3]);
        assert_eq!(q.leader, 1);
        assert!(s.topics["t"].reassignments.is_empty());
        assert_eq!(
            reassign(&mut s, None),
            CommandResult::NoReassignmentInProgress
        );
    }

    #[test]
    fn a_target_within_the_isr_completes_at_once() {
        let mut s = state();
        assert_eq!(reassign(&mut s, Some(&[3, 2])), CommandResult::Ok);
        let q = p(&s);
        assert_eq!((q.replicas, q.isr), (vec![3, 2], vec![2, 3]));
        assert_eq!((q.leader, q.leader_epoch), (3, 1));
        assert!(s.topics["t"].reassignments.is_empty());
    }

    #[test]
    fn invalid_targets_change_nothing() {
        let mut s = state();
        let before = s.clone();
        for bad in [&[][..], &[1, 1], &[1, 9]] {
            assert!(
                matches!(
                    reassign(&mut s, Some(bad)),
                    CommandResult::InvalidReplicaAssignment(_)
                ),
                "{bad:?}"
            );
        }
        let other = Command::AlterReassignment {
            topic: "t".into(),
            partition: 1,
            target: Some(vec![1]),
        };
        assert_eq!(s.apply(&other), CommandResult::UnknownTopic);
        assert_eq!(s, before);
    }

    #[test]
    fn a_new_target_replaces_the_reassignment_in_progress() {
        let mut s = state();
        assert_eq!(reassign(&mut s, Some(&[1, 2, 4])), CommandResult::Ok);
        assert_eq!(p(&s).replicas, vec![1, 2, 4, 3]);
        // Back to [1, 2, 3]: 4, never in sync, becomes a removing replica and 3 was never removed, so
        // nothing is left to add and the reassignment completes at once.
        assert_eq!(reassign(&mut s, Some(&[1, 2, 3])), CommandResult::Ok);
        assert_eq!(p(&s).replicas, vec![1, 2, 3]);
        assert_eq!(p(&s).isr, vec![1, 2, 3]);
        assert!(s.topics["t"].reassignments.is_empty());
    }
}
