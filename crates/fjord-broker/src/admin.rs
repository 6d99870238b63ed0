//! The "frontend" of metadata changes: validate a request against the current state and the config table, then
//! propose a command to the metadata quorum (`fjord-meta`). The state machine re-checks what can race (name
//! taken, topic gone) when it applies the command; this layer gives the precise Kafka error and message first.

use std::collections::{BTreeMap, HashSet};

use fjord_meta::{validate_topic_name, ClusterState, Command, CommandResult};
use kafka_protocol::error::ResponseError as E;
use uuid::Uuid;

use crate::config::{topic_config_def, validate_topic_config, ConfigType};
use crate::BrokerState;

/// Topics only the broker itself creates, writes and deletes, by name, whether or not they exist yet: Kafka's
/// `Topic.isInternal` list (offsets, transaction state, share-group state) plus its KRaft metadata log. A new
/// internal topic is added here, and every rule below follows.
pub const INTERNAL_TOPICS: [&str; 4] = [
    crate::groups::OFFSETS_TOPIC,
    crate::transactions::TXN_TOPIC,
    "__share_group_state",
    "__cluster_metadata",
];

/// Is `name` one of [`INTERNAL_TOPICS`]?
pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// Topic names starting with `__` belong to the platform (`__consumer_offsets`, `__transaction_state`): the CLI
/// and the dashboard refuse to create one, with [`RESERVED_TOPIC_NAME`].
pub fn is_reserved_topic_name(name: &str) -> bool {
    name.starts_with("__")
}

/// Why a reserved name is refused, in the words the CLI and the dashboard share.
pub const RESERVED_TOPIC_NAME: &str = "topic names starting with `__` are reserved for Kafka's internal topics (such as __consumer_offsets), which the broker creates itself; choose a name without the leading `__`";

/// The check the CLI and the dashboard make before asking to grow topic `name` from `current` to `count`
/// partitions (`what` names the count as the user gave it, e.g. `--partitions`): the message when it does not
/// grow.
pub fn check_partitions_grow(
    name: &str,
    current: usize,
    count: i64,
    what: &str,
) -> Result<(), String> {
    if count <= current as i64 {
        return Err(format!(
            "topic `{name}` has {current} partitions; {what} must be larger (partitions can only be added)"
        ));
    }
    Ok(())
}

/// Largest partition count one topic may have; a bound so one request cannot create millions of directories.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// A Kafka error code with the message sent alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: i16,
    pub message: String,
}

impl ApiError {
    pub fn new(code: E, message: impl Into<String>) -> Self {
        Self {
            code: code.code(),
            message: message.into(),
        }
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

pub struct NewTopic {
    pub name: String,
    /// -1: broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1: broker default (`default.replication.factor`).
    pub replication_factor: i16,
    /// Explicit replica lists by partition index; when given, the two counts above must be -1.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

pub struct CreatedTopic {
    pub id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// Replica lists for `count` new partitions starting at `first`, over the live (registered, unfenced) brokers:
/// round-robin from a random starting broker so that leaders (the first replica) are balanced across topics, and
/// rack-aware as Kafka's assignment is: with `broker.rack` set, the brokers are listed alternating racks, so
/// consecutive replicas of a partition sit on different racks whenever there are enough racks.
pub fn assign_replicas(state: &ClusterState, first: i32, count: i32, rf: i16) -> Vec<Vec<i32>> {
    let brokers = rack_alternated(state);
    let n = brokers.len().max(1);
    let start = (uuid::Uuid::new_v4().as_u128() % n as u128) as usize;
    (first..first + count)
        .map(|p| {
            (0..rf as usize)
                .map(|j| brokers[(start + p as usize + j) % n])
                .collect()
        })
        .collect()
}

/// The live brokers, ordered so that racks alternate (Kafka's `getRackAlternatedBrokerList`): the first broker of
/// each rack in turn, then the second of each, and so on. Without racks, by id.
fn rack_alternated(state: &ClusterState) -> Vec<i32> {
    let live = state.live_brokers();
    let mut racks: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for id in &live {
        let rack = state.brokers[id].rack.as_deref().unwrap_or("");
        racks.entry(rack).or_default().push(*id);
    }
    if racks.len() <= 1 {
        return live;
    }
    let mut out = Vec::with_capacity(live.len());
    let deepest = racks.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..deepest {
        for ids in racks.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

fn check_replica_list(
    state: &ClusterState,
    replicas: &[i32],
    rf: Option<usize>,
) -> Result<(), ApiError> {
    if replicas.is_empty() {
        return Err(ApiError::new(
            E::InvalidReplicaAssignment,
            "A replica list is empty.",
        ));
    }
    let mut seen = replicas.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != replicas.len() {
        return Err(ApiError::new(
            E::InvalidReplicaAssignment,
            format!("Duplicate brokers in replica list {replicas:?}."),
        ));
    }
    if let Some(b) = replicas.iter().find(|b| !state.brokers.contains_key(b)) {
        return Err(ApiError::new(
            E::InvalidReplicaAssignment,
            format!("Broker {b} in the replica assignment is not registered."),
        ));
    }
    if let Some(rf) = rf {
        if replicas.len() != rf {
            return Err(ApiError::new(
                E::InvalidReplicaAssignment,
                format!("All partitions must have the same number of replicas ({rf}); got {replicas:?}."),
            ));
        }
    }
    Ok(())
}

/// Kafka refuses topic names that differ only by '.' versus '_', since metric names would collide.
fn collides(state: &ClusterState, name: &str) -> Option<String> {
    let norm = name.replace('.', "_");
    state
        .topics
        .keys()
        .find(|t| t.as_str() != name && t.replace('.', "_") == norm)
        .cloned()
}

/// Validates and (unless `validate_only`) creates a topic.
pub async fn create_topic(
    broker: &BrokerState,
    t: NewTopic,
    validate_only: bool,
) -> Result<CreatedTopic, ApiError> {
    // Validated against a view as fresh as the quorum's (Kafka validates on the active controller): a broker that
    // has not yet applied the latest registrations or unfencings would refuse a valid replication factor.
    if let Err(e) = broker.meta.sync().await {
        tracing::debug!(error = %e, "creating a topic from a possibly stale metadata view");
    }
    let state = broker.meta.state();
    validate_topic_name(&t.name).map_err(|m| ApiError::new(E::InvalidTopicException, m))?;
    if state.topics.contains_key(&t.name) {
        return Err(ApiError::new(
            E::TopicAlreadyExists,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    if is_internal_topic(&t.name) {
        // Kafka's code and wording for its own metadata topic; it would create __consumer_offsets with whatever
        // settings the request carries, which the coordinators then depend on.
        return Err(ApiError::new(
            E::InvalidRequest,
            format!(
                "Creation of internal topic {} is prohibited: the broker creates it on first use, with the settings \
                 of its coordinator (offsets.topic.*, transaction.state.log.*).",
                t.name
            ),
        ));
    }
    if let Some(other) = collides(&state, &t.name) {
        return Err(ApiError::new(
            E::InvalidTopicException,
            format!("Topic '{}' collides with existing topic '{other}' ('.' and '_' are treated alike).", t.name),
        ));
    }
    let assignments: Vec<Vec<i32>> = if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(ApiError::new(
                E::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let mut sorted = t.assignments.clone();
        sorted.sort_by_key(|(p, _)| *p);
        for (i, (p, _)) in sorted.iter().enumerate() {
            if *p != i as i32 {
                return Err(ApiError::new(
                    E::InvalidReplicaAssignment,
                    "Partitions in the replica assignment must be 0..N-1 without gaps.",
                ));
            }
        }
        let rf = sorted[0].1.len();
        for (_, r) in &sorted {
            check_replica_list(&state, r, Some(rf))?;
        }
        sorted.into_iter().map(|(_, r)| r).collect()
    } else {
        let np = if t.num_partitions == -1 {
            broker.config.num_partitions
        } else {
            t.num_partitions
        };
        if np <= 0 {
            return Err(ApiError::new(
                E::InvalidPartitions,
                "Number of partitions was set to an invalid non-positive value.",
            ));
        }
        if np > MAX_PARTITIONS_PER_TOPIC {
            return Err(ApiError::new(
                E::InvalidPartitions,
                format!("Number of partitions {np} exceeds the limit of {MAX_PARTITIONS_PER_TOPIC} per topic."),
            ));
        }
        let rf = if t.replication_factor == -1 {
            broker.config.default_replication_factor
        } else {
            t.replication_factor
        };
        if rf <= 0 {
            return Err(ApiError::new(
                E::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value.",
            ));
        }
        let live = state.live_brokers().len();
        if rf as usize > live {
            return Err(ApiError::new(
                E::InvalidReplicationFactor,
                format!(
                    "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live} broker(s) are registered and unfenced.",
                ),
            ));
        }
        assign_replicas(&state, 0, np, rf)
    };
    let mut configs = BTreeMap::new();
    for (k, v) in t.configs {
        let Some(v) = v else {
            return Err(ApiError::new(
                E::InvalidConfig,
                format!("Null value not supported for topic config '{k}'."),
            ));
        };
        validate_topic_config(&k, &v)
            .map_err(|e| ApiError::new(E::InvalidConfig, e.to_string()))?;
        if configs.insert(k.clone(), v).is_some() {
            return Err(ApiError::new(
                E::InvalidRequest,
                format!("Config '{k}' is given more than once."),
            ));
        }
    }
    let created = CreatedTopic {
        id: Uuid::new_v4(),
        num_partitions: assignments.len() as i32,
        replication_factor: assignments[0].len() as i16,
        configs: configs.clone(),
    };
    if validate_only {
        return Ok(created);
    }
    let cmd = Command::CreateTopic {
        name: t.name.clone(),
        id: created.id,
        assignments,
        configs,
        internal: false,
    };
    match broker.meta.propose(cmd).await.map_err(crate::Error::from)? {
        CommandResult::Ok => {}
        CommandResult::TopicAlreadyExists => {
            return Err(ApiError::new(
                E::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ))
        }
        other => {
            return Err(ApiError::new(
                E::UnknownServerError,
                format!("unexpected result {other:?}"),
            ))
        }
    }
    broker.sync_partitions()?;
    tracing::info!(topic = %t.name, partitions = created.num_partitions, "topic created");
    Ok(created)
}

/// Proposes a topic config change and applies it to the hosted logs before returning.
pub async fn alter_topic_configs(
    broker: &BrokerState,
    name: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    replace_all: bool,
) -> Result<(), ApiError> {
    let cmd = Command::AlterTopicConfigs {
        name: name.to_string(),
        set,
        delete,
        replace_all,
    };
    match broker.meta.propose(cmd).await.map_err(crate::Error::from)? {
        CommandResult::Ok => {}
        CommandResult::UnknownTopic => {
            return Err(ApiError::new(
                E::UnknownTopicOrPartition,
                format!("Topic '{name}' does not exist."),
            ))
        }
        other => {
            return Err(ApiError::new(
                E::UnknownServerError,
                format!("unexpected result {other:?}"),
            ))
        }
    }
    broker.sync_partitions()?;
    Ok(())
}

/// IncrementalAlterConfigs' config operations.
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;
pub const OP_APPEND: i8 = 2;
pub const OP_SUBTRACT: i8 = 3;

/// IncrementalAlterConfigs on one topic, as the request handler and the dashboard run it: `ops` are (key,
/// operation, value); every key is checked (known, given once, a valid value) before anything changes, and with
/// `validate_only` nothing does. Refusals carry Kafka's code: UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG (an
/// unknown key, a bad value), INVALID_REQUEST (a key given twice, an unknown operation).
pub async fn incremental_alter_topic_configs(
    broker: &BrokerState,
    name: &str,
    ops: Vec<(String, i8, Option<String>)>,
    validate_only: bool,
) -> Result<(), ApiError> {
    let Some(current) = broker
        .meta
        .state()
        .topics
        .get(name)
        .map(|t| t.configs.clone())
    else {
        return Err(ApiError::new(
            E::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        ));
    };
    let mut seen = HashSet::new();
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for (key, op, value) in ops {
        if !seen.insert(key.clone()) {
            return Err(ApiError::new(
                E::InvalidRequest,
                format!("Config '{key}' is given more than once."),
            ));
        }
        let def = topic_config_def(&key).ok_or_else(|| {
            ApiError::new(E::InvalidConfig, format!("Unknown topic config '{key}'."))
        })?;
        match op {
            OP_SET => {
                let v = value.ok_or_else(|| {
                    ApiError::new(E::InvalidConfig, format!("Null value for '{key}'."))
                })?;
                validate_topic_config(&key, &v)
                    .map_err(|e| ApiError::new(E::InvalidConfig, e.to_string()))?;
                set.insert(key, v);
            }
            OP_DELETE => delete.push(key),
            OP_APPEND | OP_SUBTRACT => {
                if def.ty != ConfigType::List {
                    return Err(ApiError::new(
                        E::InvalidConfig,
                        format!("Config value append or subtract is not allowed for config key '{key}' (not a list)."),
                    ));
                }
                let base = current
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| broker.config.topic_default(def));
                let mut items: Vec<String> = base
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let given: Vec<String> = value
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if op == OP_APPEND {
                    for g in given {
                        if !items.contains(&g) {
                            items.push(g);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                let v = items.join(",");
                validate_topic_config(&key, &v)
                    .map_err(|e| ApiError::new(E::InvalidConfig, e.to_string()))?;
                set.insert(key, v);
            }
            other => {
                return Err(ApiError::new(
                    E::InvalidRequest,
                    format!("Unknown config operation {other}."),
                ));
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    alter_topic_configs(broker, name, set, delete, false).await
}

/// Validates and (unless `validate_only`) applies dynamic broker configs: `resource` is "" for the cluster-wide
/// defaults or a broker id, `ops` are (key, value) to set and keys to delete. Only the broker defaults of topic
/// configs can change at runtime ([`crate::config::dynamic_broker_config`]); every partition picks the new
/// defaults up when the change is applied. With `replace_all` (AlterConfigs), the resource's other dynamic
/// configs are deleted.
pub async fn alter_broker_configs(
    broker: &BrokerState,
    resource: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    replace_all: bool,
    validate_only: bool,
) -> Result<(), ApiError> {
    use crate::config::{dynamic_broker_config, per_broker_key, BROKER_DYNAMIC_ONLY};
    let state = broker.meta.state();
    let node = if resource.is_empty() {
        None
    } else {
        let id: i32 = resource.parse().map_err(|_| {
            ApiError::new(
                E::InvalidRequest,
                format!("Broker id '{resource}' is not an integer."),
            )
        })?;
        if !state.brokers.contains_key(&id) {
            return Err(ApiError::new(
                E::InvalidRequest,
                format!("Broker {id} is not registered in the cluster."),
            ));
        }
        Some(id)
    };
    let stored = |key: &str| match node {
        Some(id) => per_broker_key(id, key),
        None => key.to_string(),
    };
    let check = |key: &str| -> Result<(), ApiError> {
        if dynamic_broker_config(key).is_some() || BROKER_DYNAMIC_ONLY.contains(&key) {
            return Ok(());
        }
        let why = if broker.config.props.contains_key(key) {
            format!(
                "Cannot update these configs dynamically: {key}. Only the broker defaults of topic configs \
                 (such as log.retention.ms and log.segment.bytes) change at runtime; set {key} in \
                 server.properties and restart."
            )
        } else {
            format!("Unknown broker config '{key}'.")
        };
        Err(ApiError::new(E::InvalidConfig, why))
    };
    let mut stored_set = BTreeMap::new();
    for (k, v) in set {
        check(&k)?;
        let valid = match dynamic_broker_config(&k) {
            Some(def) => validate_topic_config(def.name, &v).map_err(|e| e.reason),
            // A throttle rate, in bytes per second.
            None => match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => Ok(()),
                _ => Err("must be a non-negative number of bytes per second".to_string()),
            },
        };
        valid.map_err(|reason| {
            ApiError::new(
                E::InvalidConfig,
                format!("Invalid value {v} for broker config {k}: {reason}"),
            )
        })?;
        stored_set.insert(stored(&k), v);
    }
    let mut stored_delete = Vec::new();
    for k in delete {
        check(&k)?;
        stored_delete.push(stored(&k));
    }
    if replace_all {
        let prefix = node.map(|id| per_broker_key(id, ""));
        for k in state.broker_configs.keys() {
            let mine = match &prefix {
                Some(p) => k.starts_with(p.as_str()),
                None => !k.contains('/'),
            };
            if mine && !stored_set.contains_key(k) && !stored_delete.contains(k) {
                stored_delete.push(k.clone());
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    let cmd = Command::AlterBrokerConfigs {
        set: stored_set,
        delete: stored_delete,
        replace_all: false,
    };
    match broker.meta.propose(cmd).await.map_err(crate::Error::from)? {
        CommandResult::Ok => {}
        other => {
            return Err(ApiError::new(
                E::UnknownServerError,
                format!("unexpected result {other:?}"),
            ))
        }
    }
    broker.sync_partitions()?;
    Ok(())
}

/// Deletes a topic by name (DeleteTopics and the dashboard): internal topics are refused; the committed offsets of
/// its partitions go with it, as in Kafka.
pub async fn delete_topic(broker: &BrokerState, topic_name: &str) -> Result<(), ApiError> {
    if is_internal_topic(topic_name) {
        // Kafka's broker would delete it (only its kafka-topics tool refuses); the committed offsets or
        // transaction states in it would be lost with no way back.
        return Err(ApiError::new(
            E::InvalidRequest,
            format!(
                "Deletion of internal topic {topic_name} is prohibited: it holds the state of the \
                 broker's coordinators. Delete consumer groups (DeleteGroups) or let transactional \
                 ids expire instead."
            ),
        ));
    }
    let outcome = broker
        .meta
        .propose(Command::DeleteTopic {
            name: topic_name.to_string(),
        })
        .await;
    match outcome {
        Ok(CommandResult::Ok) => {
            if let Err(e) = broker.sync_partitions() {
                tracing::error!(topic = %topic_name, error = %e, "deleting partitions failed");
            }
            // Committed offsets of the deleted partitions go too, as in Kafka.
            let records = {
                let mut c = broker.groups.lock();
                c.forget_topic(topic_name);
                c.take_records()
            };
            if let Err(e) = broker.groups.persist(broker, records).await {
                tracing::error!(topic = %topic_name, error = %e, "removing committed offsets failed");
            }
            tracing::info!(topic = %topic_name, "topic deleted");
            Ok(())
        }
        Ok(CommandResult::UnknownTopic) => Err(ApiError::new(
            E::UnknownTopicOrPartition,
            format!("Topic '{topic_name}' does not exist."),
        )),
        Ok(other) => Err(ApiError::new(
            E::UnknownServerError,
            format!("unexpected result {other:?}"),
        )),
        Err(e) => Err(crate::Error::from(e).into()),
    }
}

/// Grows a topic's partition count to `count` (CreatePartitions and the dashboard), with optional explicit replica
/// lists for the new partitions.
pub async fn create_partitions(
    broker: &BrokerState,
    name: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
    validate_only: bool,
) -> Result<(), ApiError> {
    // A view as fresh as the quorum's (see admin::create_topic).
    let _ = broker.meta.sync().await;
    let state = broker.meta.state();
    let Some(topic) = state.topics.get(name) else {
        return Err(ApiError::new(
            E::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        ));
    };
    let current = topic.partitions.len() as i32;
    if count <= current {
        return Err(ApiError::new(
            E::InvalidPartitions,
            format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
        ));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return Err(ApiError::new(
            E::InvalidPartitions,
            format!("{count} partitions exceed the limit of {MAX_PARTITIONS_PER_TOPIC} per topic."),
        ));
    }
    let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
    let new = match assignments {
        Some(a) => {
            if a.len() as i32 != count - current {
                return Err(ApiError::new(
                    E::InvalidReplicaAssignment,
                    format!(
                        "Increasing the number of partitions by {} but {} assignments provided.",
                        count - current,
                        a.len()
                    ),
                ));
            }
            for r in &a {
                if r.len() != rf || r.iter().any(|b| !state.brokers.contains_key(b)) {
                    return Err(ApiError::new(
                        E::InvalidReplicaAssignment,
                        format!("Replica list {r:?} must name {rf} registered brokers."),
                    ));
                }
            }
            a
        }
        None => {
            let live = state.live_brokers().len();
            if live < rf {
                return Err(ApiError::new(
                    E::InvalidReplicationFactor,
                    format!(
                        "The topic's replication factor is {rf} but only {live} broker(s) are registered and unfenced."
                    ),
                ));
            }
            assign_replicas(&state, current, count - current, rf as i16)
        }
    };
    if validate_only {
        return Ok(());
    }
    let cmd = Command::CreatePartitions {
        name: name.to_string(),
        new_assignments: new,
    };
    match broker.meta.propose(cmd).await.map_err(crate::Error::from)? {
        CommandResult::Ok => {}
        CommandResult::UnknownTopic => {
            return Err(ApiError::new(
                E::UnknownTopicOrPartition,
                format!("Topic '{name}' does not exist."),
            ))
        }
        CommandResult::InvalidPartitions(m) => return Err(ApiError::new(E::InvalidPartitions, m)),
        other => {
            return Err(ApiError::new(
                E::UnknownServerError,
                format!("unexpected result {other:?}"),
            ))
        }
    }
    broker.sync_partitions()?;
    Ok(())
}
