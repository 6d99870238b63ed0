//! The replicated metadata model: what a committed command does to [`ClusterState`].

use std::collections::BTreeMap;

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

/// One partition's replica placement and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub leader: i32,
    /// Bumped on every leader change so that fenced leaders and stale followers can be detected.
    pub leader_epoch: i32,
    /// Bumped on every change of leader, ISR or replicas (Kafka's partition epoch).
    #[serde(default)]
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
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
}

impl ClusterState {
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
                self.next_producer_id += (*count).max(1);
                CommandResult::ProducerIds { first }
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
                let partitions = match partitions_from(assignments) {
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
                let Some(topic) = self.topics.get_mut(name) else {
                    return CommandResult::UnknownTopic;
                };
                if new_assignments.is_empty() {
                    return CommandResult::InvalidPartitions(format!(
                        "topic already has {} partitions; the new count must be larger",
                        topic.partitions.len()
                    ));
                }
                match partitions_from(new_assignments) {
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

/// New partitions start led by their first (preferred) replica with the whole replica set in sync,
/// as Kafka does for a freshly created partition that holds no data yet.
fn partitions_from(assignments: &[Vec<i32>]) -> Result<Vec<PartitionMeta>, String> {
    assignments
        .iter()
        .enumerate()
        .map(|(i, replicas)| match replicas.first() {
            Some(&leader) => Ok(PartitionMeta {
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: replicas.clone(),
                isr: replicas.clone(),
            }),
            None => Err(format!("assignment {i} has no replicas")),
        })
        .collect()
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
                replicas: vec![3, 1, 2],
                isr: vec![3, 1, 2]
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
}
