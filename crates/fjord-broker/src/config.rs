//! Broker and topic configuration, by Kafka's property names.
//!
//! Broker configs come from a `server.properties` file plus `--override key=value` pairs, exactly as
//! `kafka-server-start.sh` takes them. Every key is looked up in one table ([`BROKER_CONFIGS`]) that gives its
//! default and its parser, so an unknown key or a bad value stops start-up with an error that names the key.
//! Topic configs (`retention.ms`, `cleanup.policy`, ...) live in [`TOPIC_CONFIGS`]: each one names the broker
//! config that supplies its default, which is how DescribeConfigs reports sources and synonyms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use fjord_log::{LogConfig, TimestampType};

/// A config key or value that cannot be accepted. The message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config `{name}`: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

/// The type of a config value, as DescribeConfigs v3+ reports it (Kafka's `ConfigDef.Type` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic-level config: its Kafka name, the broker config that supplies its default, and how to check it.
pub struct TopicConfigDef {
    pub name: &'static str,
    /// Broker property whose value is this config's default (its synonym in DescribeConfigs).
    pub broker_synonym: &'static str,
    pub ty: ConfigType,
    pub doc: &'static str,
    /// Extra validation beyond the type (ranges, enumerations).
    pub check: fn(&str) -> Result<(), String>,
}

fn any(_: &str) -> Result<(), String> {
    Ok(())
}
fn non_negative(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err("must be a non-negative integer".into()),
    }
}
fn positive(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err("must be a positive integer".into()),
    }
}
fn minus_one_or_more(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(()),
        _ => Err("must be an integer >= -1".into()),
    }
}
fn segment_bytes(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if (14..=i32::MAX as i64).contains(&n) => Ok(()),
        _ => Err("must be an integer in [14, 2147483647]".into()),
    }
}
fn ratio(v: &str) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(n) if (0.0..=1.0).contains(&n) => Ok(()),
        _ => Err("must be a number in [0, 1]".into()),
    }
}
fn cleanup_policy(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.is_empty() || parts.iter().any(|p| *p != "delete" && *p != "compact") {
        return Err("must be a list of `delete` and/or `compact`".into());
    }
    Ok(())
}
fn timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" | "LogAppendTime" => Ok(()),
        _ => Err("must be `CreateTime` or `LogAppendTime`".into()),
    }
}
fn compression_type(v: &str) -> Result<(), String> {
    codec(v).map(|_| ())
}

/// Kafka's `compression.type`: `None` for `producer` (batches kept as sent), else the codec batches are stored in.
fn codec(v: &str) -> Result<Option<kafka_protocol::records::Compression>, String> {
    use kafka_protocol::records::Compression;
    Ok(Some(match v {
        "producer" => return Ok(None),
        "uncompressed" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => {
            return Err(
                "must be one of `producer`, `uncompressed`, `gzip`, `snappy`, `lz4`, `zstd`".into(),
            )
        }
    }))
}
fn throttled_replicas(v: &str) -> Result<(), String> {
    parse_throttled_replicas(v).map(|_| ())
}

/// Kafka's `[leader|follower].replication.throttled.replicas`: `*` (every replica), empty (none) or a list of
/// `partition:broker`. `None` stands for `*`.
pub fn parse_throttled_replicas(v: &str) -> Result<Option<Vec<(i32, i32)>>, String> {
    let v = v.trim();
    if v == "*" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item
            .split_once(':')
            .and_then(|(p, b)| Some((p.trim().parse().ok()?, b.trim().parse().ok()?)));
        match parsed {
            Some(pb) => out.push(pb),
            None => {
                return Err(format!(
                    "`{item}` is not `partition:broker`; the value must be `*` or a list of partition:broker"
                ))
            }
        }
    }
    Ok(Some(out))
}

/// Dynamic broker configs that are not the default of any topic config: the replication throttle rates
/// (bytes/s), set on a broker or as the cluster-wide default, read at every replica fetch (by the follower's
/// fetchers, and by the leader answering them).
pub static BROKER_DYNAMIC_ONLY: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];

fn boolean(v: &str) -> Result<(), String> {
    match v {
        "true" | "false" => Ok(()),
        _ => Err("must be `true` or `false`".into()),
    }
}

/// Topic configs Fjord understands. Anything else in CreateTopics/AlterConfigs is rejected with INVALID_CONFIG.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_synonym: "log.cleanup.policy",
        ty: ConfigType::List,
        doc: "`delete` removes old segments by retention; `compact` keeps the last record per key.",
        check: cleanup_policy,
    },
    TopicConfigDef {
        name: "compression.type",
        broker_synonym: "compression.type",
        ty: ConfigType::String,
        doc: "Final compression of the topic; only `producer` (keep what the producer sent).",
        check: compression_type,
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_synonym: "log.cleaner.delete.retention.ms",
        ty: ConfigType::Long,
        doc: "How long tombstones are kept in compacted topics.",
        check: non_negative,
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        broker_synonym: "log.segment.delete.delay.ms",
        ty: ConfigType::Long,
        doc: "Delay before a deleted segment file is removed from disk.",
        check: non_negative,
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_synonym: "log.index.interval.bytes",
        ty: ConfigType::Int,
        doc: "Bytes of log between offset index entries.",
        check: non_negative,
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_synonym: "message.max.bytes",
        ty: ConfigType::Int,
        doc: "Largest record batch the topic accepts.",
        check: non_negative,
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_synonym: "log.message.timestamp.type",
        ty: ConfigType::String,
        doc: "`CreateTime` keeps producer timestamps; `LogAppendTime` stamps batches on append.",
        check: timestamp_type,
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_synonym: "log.message.timestamp.after.max.ms",
        ty: ConfigType::Long,
        doc: "How far ahead of the broker's clock a CreateTime record's timestamp may be; later ones are refused \
              with INVALID_TIMESTAMP.",
        check: non_negative,
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_synonym: "log.message.timestamp.before.max.ms",
        ty: ConfigType::Long,
        doc: "How far behind the broker's clock a CreateTime record's timestamp may be; older ones are refused \
              with INVALID_TIMESTAMP.",
        check: non_negative,
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        ty: ConfigType::Double,
        doc: "Dirty fraction of the log that triggers compaction.",
        check: ratio,
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        ty: ConfigType::Long,
        doc: "Minimum age of a record before it can be compacted.",
        check: non_negative,
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_synonym: "min.insync.replicas",
        ty: ConfigType::Int,
        doc: "Replicas that must acknowledge an acks=all write.",
        check: positive,
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_synonym: "log.retention.bytes",
        ty: ConfigType::Long,
        doc: "Size above which old segments are deleted (-1: no limit).",
        check: minus_one_or_more,
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_synonym: "log.retention.ms",
        ty: ConfigType::Long,
        doc: "Age after which old segments are deleted (-1: no limit).",
        check: minus_one_or_more,
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_synonym: "log.segment.bytes",
        ty: ConfigType::Int,
        doc: "Size at which a segment is rolled.",
        check: segment_bytes,
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        broker_synonym: "log.index.size.max.bytes",
        ty: ConfigType::Int,
        doc: "Maximum size of a segment's offset index.",
        check: positive,
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_synonym: "log.roll.ms",
        ty: ConfigType::Long,
        doc: "Age at which a segment is rolled.",
        check: positive,
    },
    TopicConfigDef {
        name: "follower.replication.throttled.replicas",
        broker_synonym: "",
        ty: ConfigType::List,
        doc: "Replicas (`partition:broker,...`, or `*` for all) whose follower fetches are throttled to the \
              broker's follower.replication.throttled.rate while they are out of sync.",
        check: throttled_replicas,
    },
    TopicConfigDef {
        name: "leader.replication.throttled.replicas",
        broker_synonym: "",
        ty: ConfigType::List,
        doc: "Replicas (`partition:broker,...`, or `*` for all) whose leader serves out-of-sync followers at \
              most at the broker's leader.replication.throttled.rate.",
        check: throttled_replicas,
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_synonym: "unclean.leader.election.enable",
        ty: ConfigType::Boolean,
        doc: "Whether an out-of-sync replica may become leader.",
        check: boolean,
    },
];

/// Kafka's DescribeConfigs sources of dynamic broker configs: set for one broker, or as the cluster-wide
/// default of every broker.
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;

/// The key under which broker `node_id`'s own dynamic value of `key` is kept in the cluster metadata's
/// `broker_configs`, beside the cluster-wide defaults kept under their plain names (as Kafka kept
/// `/config/brokers/<id>` beside `/config/brokers/<default>`). `/` never occurs in a config name.
pub fn per_broker_key(node_id: i32, key: &str) -> String {
    format!("broker.{node_id}/{key}")
}

/// The broker properties that can be changed at runtime (IncrementalAlterConfigs on a BROKER resource): the
/// broker defaults of topic configs (`log.retention.ms`, `log.segment.bytes`, ...), which every partition
/// picks up when the change is applied. The topic config they are the default of, for validation.
pub fn dynamic_broker_config(key: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|d| !d.broker_synonym.is_empty() && d.broker_synonym == key)
}

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one topic config key and value against [`TOPIC_CONFIGS`].
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let def =
        topic_config_def(name).ok_or_else(|| ConfigError::new(name, "unknown topic config"))?;
    check_type(def.ty, value).map_err(|r| ConfigError::new(name, r))?;
    (def.check)(value).map_err(|r| ConfigError::new(name, r))
}

fn check_type(ty: ConfigType, value: &str) -> Result<(), String> {
    let ok = match ty {
        ConfigType::Boolean => value == "true" || value == "false",
        ConfigType::Int => value.parse::<i32>().is_ok(),
        ConfigType::Short => value.parse::<i16>().is_ok(),
        ConfigType::Long => value.parse::<i64>().is_ok(),
        ConfigType::Double => value.parse::<f64>().is_ok(),
        ConfigType::String | ConfigType::List => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{value}` is not a valid {ty:?}"))
    }
}

fn dashboard_auth_mode(v: &str) -> Result<(), String> {
    match v {
        "basic" | "none" => Ok(()),
        _ => Err(format!(
            "`{v}` is not a login mode: basic (HTTP basic auth with dashboard.auth.basic.users) or none"
        )),
    }
}

/// Broker properties whose values are secrets: DescribeConfigs reports them as sensitive, without their value
/// (as Kafka does for its PASSWORD configs).
pub fn is_sensitive_broker_config(name: &str) -> bool {
    name == "dashboard.auth.basic.users"
}

/// One broker property: its name, default (None: no default, must be derived) and type check.
struct BrokerConfigDef {
    name: &'static str,
    default: Option<&'static str>,
    ty: ConfigType,
    check: fn(&str) -> Result<(), String>,
}

macro_rules! bdef {
    ($name:expr, $default:expr, $ty:ident) => {
        BrokerConfigDef {
            name: $name,
            default: $default,
            ty: ConfigType::$ty,
            check: any,
        }
    };
    ($name:expr, $default:expr, $ty:ident, $check:expr) => {
        BrokerConfigDef {
            name: $name,
            default: $default,
            ty: ConfigType::$ty,
            check: $check,
        }
    };
}

/// Broker properties Fjord understands, with Kafka's defaults.
static BROKER_CONFIGS: &[BrokerConfigDef] = &[
    bdef!("node.id", Some("1"), Int, non_negative),
    bdef!("broker.id", None, Int, non_negative),
    bdef!("listeners", Some("PLAINTEXT://127.0.0.1:9092"), List),
    bdef!("advertised.listeners", None, List),
    bdef!("log.dirs", None, List),
    bdef!("log.dir", Some("./fjord-data"), String),
    bdef!("num.partitions", Some("1"), Int, positive),
    bdef!("default.replication.factor", Some("1"), Short, positive),
    bdef!("auto.create.topics.enable", Some("true"), Boolean),
    bdef!("delete.topic.enable", Some("true"), Boolean),
    bdef!("message.max.bytes", Some("1048588"), Int, non_negative),
    bdef!("socket.request.max.bytes", Some("104857600"), Int, positive),
    bdef!(
        "max.request.partition.size.limit",
        Some("2000"),
        Int,
        positive
    ),
    bdef!("fetch.max.bytes", Some("57671680"), Int, positive),
    bdef!("queued.max.requests", Some("500"), Int, positive),
    bdef!("max.connections", Some("10000"), Int, positive),
    bdef!("connections.max.idle.ms", Some("600000"), Long, positive),
    bdef!("min.insync.replicas", Some("1"), Int, positive),
    bdef!(
        "compression.type",
        Some("producer"),
        String,
        compression_type
    ),
    bdef!("unclean.leader.election.enable", Some("false"), Boolean),
    bdef!("log.cleanup.policy", Some("delete"), List, cleanup_policy),
    bdef!("log.segment.bytes", Some("1073741824"), Int, segment_bytes),
    bdef!("log.roll.ms", None, Long, positive),
    bdef!("log.roll.hours", Some("168"), Int, positive),
    bdef!("log.retention.ms", None, Long, minus_one_or_more),
    bdef!("log.retention.minutes", None, Int, minus_one_or_more),
    bdef!("log.retention.hours", Some("168"), Int, minus_one_or_more),
    bdef!("log.retention.bytes", Some("-1"), Long, minus_one_or_more),
    bdef!(
        "log.retention.check.interval.ms",
        Some("300000"),
        Long,
        positive
    ),
    bdef!("log.index.interval.bytes", Some("4096"), Int, non_negative),
    bdef!("log.index.size.max.bytes", Some("10485760"), Int, positive),
    bdef!(
        "log.segment.delete.delay.ms",
        Some("60000"),
        Long,
        non_negative
    ),
    bdef!(
        "log.message.timestamp.type",
        Some("CreateTime"),
        String,
        timestamp_type
    ),
    bdef!(
        "log.message.timestamp.after.max.ms",
        Some("3600000"),
        Long,
        non_negative
    ),
    bdef!(
        "log.message.timestamp.before.max.ms",
        Some("9223372036854775807"),
        Long,
        non_negative
    ),
    bdef!("log.cleaner.enable", Some("true"), Boolean),
    bdef!("log.cleaner.backoff.ms", Some("15000"), Long, positive),
    bdef!(
        "log.cleaner.delete.retention.ms",
        Some("86400000"),
        Long,
        non_negative
    ),
    bdef!(
        "log.cleaner.min.cleanable.ratio",
        Some("0.5"),
        Double,
        ratio
    ),
    bdef!(
        "log.cleaner.min.compaction.lag.ms",
        Some("0"),
        Long,
        non_negative
    ),
    bdef!("log.flush.interval.ms", None, Long, positive),
    bdef!("metrics.listener", None, String),
    // The web dashboard on metrics.listener (false: not served). Its login: on a loopback address none unless
    // users are configured; on any other address users are required (start-up is refused without them) unless
    // dashboard.auth=none. The users are NAME:PASSWORD, NAME:pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX or (old,
    // unsalted) NAME:sha256:HEX, comma-separated or one a line in the file (fjord_dashboard::access checks them).
    // A login's session lasts dashboard.auth.session.timeout.ms; dashboard.auth.max.failures wrong logins from
    // one address lock it out for dashboard.auth.lockout.ms.
    bdef!("dashboard.enable", None, Boolean),
    bdef!("dashboard.auth", None, String, dashboard_auth_mode),
    bdef!("dashboard.auth.basic.users", None, List),
    bdef!("dashboard.auth.basic.users.file", None, String),
    bdef!(
        "dashboard.auth.session.timeout.ms",
        Some("28800000"),
        Long,
        positive
    ),
    bdef!("dashboard.auth.max.failures", Some("5"), Int, positive),
    bdef!("dashboard.auth.lockout.ms", Some("300000"), Long, positive),
    // The session cookie marked Secure (a dashboard behind a TLS proxy).
    bdef!("dashboard.auth.cookie.secure", Some("false"), Boolean),
    // The schema registry a broker that runs none shows on its dashboard (http://host:port).
    bdef!("dashboard.schema.registry.url", None, String),
    bdef!(
        "group.initial.rebalance.delay.ms",
        Some("3000"),
        Int,
        non_negative
    ),
    bdef!("group.min.session.timeout.ms", Some("6000"), Int, positive),
    bdef!(
        "group.max.session.timeout.ms",
        Some("1800000"),
        Int,
        positive
    ),
    bdef!("group.max.size", Some("2147483647"), Int, positive),
    bdef!(
        "group.consumer.session.timeout.ms",
        Some("45000"),
        Int,
        positive
    ),
    bdef!(
        "group.consumer.heartbeat.interval.ms",
        Some("5000"),
        Int,
        positive
    ),
    // Kafka 4.0's default; 0 answers at once; -1 is Kafka 4.1's adaptive linger (write as soon as nothing more
    // is waiting to join the batch), which here means no fixed delay: the answer waits for the write only.
    bdef!(
        "group.coordinator.append.linger.ms",
        Some("5"),
        Int,
        minus_one_or_more
    ),
    bdef!("offsets.topic.num.partitions", Some("50"), Int, positive),
    // Kafka's default is 3 (its sample single-node configuration sets 1); Fjord's is 1 so that a lone `fjord
    // start` can create the topic. Honoured exactly: never more than asked, and no topic while fewer brokers are
    // live (COORDINATOR_NOT_AVAILABLE until they are), as in Kafka. A cluster sets 3.
    bdef!(
        "offsets.topic.replication.factor",
        Some("1"),
        Short,
        positive
    ),
    bdef!(
        "offsets.topic.segment.bytes",
        Some("104857600"),
        Int,
        segment_bytes
    ),
    bdef!("offsets.retention.minutes", Some("10080"), Int, positive),
    bdef!(
        "offsets.retention.check.interval.ms",
        Some("600000"),
        Long,
        positive
    ),
    bdef!("offset.metadata.max.bytes", Some("4096"), Int, positive),
    bdef!(
        "transaction.state.log.num.partitions",
        Some("50"),
        Int,
        positive
    ),
    // Kafka's default is 3 (its sample single-node configuration sets 1); Fjord's is 1 so that a lone `fjord
    // start` can create the topic. Honoured exactly: never more than asked, and no topic while fewer brokers are
    // live (COORDINATOR_NOT_AVAILABLE until they are), as in Kafka. A cluster sets 3.
    bdef!(
        "transaction.state.log.replication.factor",
        Some("1"),
        Short,
        positive
    ),
    // The `min.insync.replicas` of `__transaction_state`, set on the topic when it is created, as Kafka does.
    // Kafka's default is 2; Fjord's is 1 to match its replication factor default (a lone broker could otherwise
    // never write a transaction's state). A cluster sets 2 with a replication factor of 3.
    bdef!("transaction.state.log.min.isr", Some("1"), Int, positive),
    bdef!(
        "transaction.state.log.segment.bytes",
        Some("104857600"),
        Int,
        segment_bytes
    ),
    bdef!("transaction.max.timeout.ms", Some("900000"), Int, positive),
    bdef!("producer.id.expiration.ms", Some("86400000"), Int, positive),
    bdef!(
        "transactional.id.expiration.ms",
        Some("604800000"),
        Int,
        positive
    ),
    bdef!(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        Some("10000"),
        Int,
        positive
    ),
    bdef!("process.roles", Some("broker,controller"), List),
    bdef!("controller.quorum.voters", None, List),
    bdef!("controller.quorum.bootstrap.servers", None, List),
    bdef!("metadata.observer.listener", None, String),
    bdef!("controller.listener.names", None, List),
    bdef!(
        "listener.security.protocol.map",
        Some("PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"),
        List
    ),
    bdef!("inter.broker.listener.name", None, String),
    bdef!("broker.rack", None, String),
    bdef!("broker.heartbeat.interval.ms", Some("2000"), Int, positive),
    bdef!("broker.session.timeout.ms", Some("9000"), Int, positive),
    bdef!("replica.lag.time.max.ms", Some("30000"), Long, positive),
    bdef!("replica.fetch.max.bytes", Some("1048576"), Int, positive),
    bdef!(
        "replica.fetch.response.max.bytes",
        Some("10485760"),
        Int,
        positive
    ),
    bdef!("auto.leader.rebalance.enable", Some("true"), Boolean),
    bdef!(
        "leader.imbalance.check.interval.seconds",
        Some("300"),
        Long,
        positive
    ),
    bdef!(
        "leader.imbalance.per.broker.percentage",
        Some("10"),
        Int,
        non_negative
    ),
    bdef!("replica.fetch.min.bytes", Some("1"), Int, positive),
    bdef!("replica.fetch.wait.max.ms", Some("500"), Int, positive),
    bdef!("replica.fetch.backoff.ms", Some("1000"), Int, non_negative),
    bdef!("replica.socket.timeout.ms", Some("30000"), Int, positive),
];

/// Typed broker configuration. Built only by [`BrokerConfig::from_properties`], which validates everything.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Every property as given or defaulted, by Kafka name: the source of DescribeConfigs for the broker.
    pub props: BTreeMap<String, String>,
    /// Properties the operator set explicitly (file or override); the rest are defaults.
    pub explicit: BTreeMap<String, String>,
    pub node_id: i32,
    pub listener: SocketAddr,
    /// Host and port clients are told to connect to; a port of 0 means "the port actually bound".
    pub advertised_host: String,
    pub advertised_port: u16,
    /// The controller listener (`controller.listener.names`) when this node is a member of a networked quorum.
    pub controller_listener: Option<SocketAddr>,
    /// `controller.quorum.voters`: unset (and no bootstrap servers), the node is a one-voter quorum of its own
    /// (the embedded default).
    pub quorum_voters: Option<BTreeMap<i32, SocketAddr>>,
    /// `controller.quorum.bootstrap.servers` (KIP-853): controllers known by address only, asked to add this
    /// node as an observer. Empty when unset.
    pub quorum_bootstrap: Vec<SocketAddr>,
    /// `process.roles` contains `broker`: the node serves clients, registers and hosts partitions.
    pub is_broker: bool,
    /// `process.roles` contains `controller`: the node may be a voter of the metadata quorum.
    pub is_controller: bool,
    /// A broker-only node's metadata listener (Fjord's `metadata.observer.listener`), where the raft leader
    /// replicates the metadata log to it: openraft pushes to learners, where KRaft observers fetch. Defaults to
    /// the client listener's host on a free port.
    pub observer_listener: Option<SocketAddr>,
    /// `broker.rack`, for rack-aware replica placement.
    pub rack: Option<String>,
    /// The first of `log_dirs`: it holds the metadata quorum (`__meta`), as Kafka's `metadata.log.dir` defaults to.
    pub log_dir: PathBuf,
    /// Every directory of `log.dirs` (or the one `log.dir`), in order, without duplicates. Partitions live in
    /// whichever one holds their directory; a new partition goes to the one hosting the fewest.
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    pub retention_check_interval_ms: u64,
    pub cleaner_enable: bool,
    pub cleaner_backoff_ms: u64,
    pub log_flush_interval_ms: Option<u64>,
    /// Address of the HTTP endpoint for /metrics (served by the binary, not the broker crate).
    pub metrics_listener: Option<SocketAddr>,
}

/// Parses a Java-properties-style file: `key=value` or `key: value`, `#`/`!` comments, blank lines.
/// Line continuations and escapes are not supported (no Kafka config needs them).
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line
            .find(['=', ':'])
            .ok_or_else(|| ConfigError::new(line, format!("line {} is not `key=value`", i + 1)))?;
        let (k, v) = line.split_at(split);
        out.insert(k.trim().to_string(), v[1..].trim().to_string());
    }
    Ok(out)
}

/// One entry of `listeners` or `advertised.listeners`: `NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenerSpec {
    name: String,
    host: String,
    port: u16,
}

/// Parses a listener list (`NAME://host:port,...`). Each name must map to PLAINTEXT in
/// `listener.security.protocol.map` (a controller listener missing from the map is PLAINTEXT, as Kafka
/// assumes); names are unique.
fn parse_listeners(
    key: &str,
    value: &str,
    protocols: &BTreeMap<String, String>,
    controller_names: &[String],
) -> Result<Vec<ListenerSpec>, ConfigError> {
    let mut out: Vec<ListenerSpec> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, rest) = entry.split_once("://").ok_or_else(|| {
            ConfigError::new(key, format!("`{entry}` is not LISTENER_NAME://host:port"))
        })?;
        let proto = match protocols.get(name) {
            Some(p) => p.as_str(),
            None if controller_names.iter().any(|c| c == name) => "PLAINTEXT",
            None => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "listener name `{name}` is not in listener.security.protocol.map; add `{name}:PLAINTEXT` there"
                    ),
                ))
            }
        };
        if proto != "PLAINTEXT" {
            return Err(ConfigError::new(
                key,
                format!("listener `{name}` uses security protocol `{proto}`, which Fjord does not support yet (only PLAINTEXT)"),
            ));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::new(key, format!("`{entry}` has no port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError::new(key, format!("`{port}` is not a port number")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if out.iter().any(|l| l.name == name) {
            return Err(ConfigError::new(
                key,
                format!("listener name `{name}` appears twice"),
            ));
        }
        out.push(ListenerSpec {
            name: name.to_string(),
            host: host.to_string(),
            port,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            key,
            "no listener given (e.g. PLAINTEXT://127.0.0.1:9092)",
        ));
    }
    Ok(out)
}

/// The address to bind for `l` (an empty host is every interface).
fn bind_addr(key: &str, l: &ListenerSpec) -> Result<SocketAddr, ConfigError> {
    let host = if l.host.is_empty() {
        "0.0.0.0"
    } else {
        &l.host
    };
    format!("{host}:{}", l.port)
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(host, l.port))
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| ConfigError::new(key, format!("cannot resolve host `{}`", l.host)))
}

/// `listener.security.protocol.map` as name → protocol.
fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, proto) = entry.split_once(':').ok_or_else(|| {
            ConfigError::new(
                "listener.security.protocol.map",
                format!("`{entry}` is not NAME:PROTOCOL"),
            )
        })?;
        map.insert(name.trim().to_string(), proto.trim().to_string());
    }
    Ok(map)
}

impl BrokerConfig {
    /// Validates `given` against the broker config table and fills in Kafka's defaults.
    pub fn from_properties(given: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        for (k, v) in &given {
            let def = BROKER_CONFIGS
                .iter()
                .find(|d| d.name == k.as_str())
                .ok_or_else(|| ConfigError::new(k, "unknown broker config"))?;
            check_type(def.ty, v).map_err(|r| ConfigError::new(k, r))?;
            (def.check)(v).map_err(|r| ConfigError::new(k, r))?;
        }
        let mut props: BTreeMap<String, String> = BROKER_CONFIGS
            .iter()
            .filter_map(|d| d.default.map(|v| (d.name.to_string(), v.to_string())))
            .collect();
        props.extend(given.clone());

        fn get(props: &BTreeMap<String, String>, k: &str) -> Option<String> {
            props.get(k).cloned()
        }
        fn int(props: &BTreeMap<String, String>, k: &str) -> i64 {
            props.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
        }

        // Kafka's precedence: *.ms over *.minutes over *.hours.
        let retention_ms = match (
            get(&props, "log.retention.ms"),
            get(&props, "log.retention.minutes"),
        ) {
            (Some(ms), _) => ms,
            (None, Some(min)) => (min.parse::<i64>().unwrap_or(0) * 60_000).to_string(),
            (None, None) => (int(&props, "log.retention.hours") * 3_600_000).to_string(),
        };
        let retention_ms = if retention_ms.starts_with('-') {
            "-1".into()
        } else {
            retention_ms
        };
        props.insert("log.retention.ms".into(), retention_ms);
        if !props.contains_key("log.roll.ms") {
            props.insert(
                "log.roll.ms".into(),
                (int(&props, "log.roll.hours") * 3_600_000).to_string(),
            );
        }

        let node_id = match get(&props, "broker.id") {
            Some(b) => b.parse().unwrap_or(0),
            None => int(&props, "node.id") as i32,
        };
        props.insert("node.id".into(), node_id.to_string());
        props.insert("broker.id".into(), node_id.to_string());

        let roles: Vec<String> = get(&props, "process.roles")
            .unwrap_or_default()
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        if let Some(bad) = roles.iter().find(|r| *r != "broker" && *r != "controller") {
            return Err(ConfigError::new(
                "process.roles",
                format!("unknown role `{bad}` (roles are broker and controller)"),
            ));
        }
        let is_broker = roles.iter().any(|r| r == "broker");
        let is_controller = roles.iter().any(|r| r == "controller");
        if !is_broker && !is_controller {
            return Err(ConfigError::new(
                "process.roles",
                "is empty: set broker, controller, or broker,controller",
            ));
        }
        let protocols =
            parse_protocol_map(&get(&props, "listener.security.protocol.map").unwrap_or_default())?;
        let controller_names: Vec<String> = get(&props, "controller.listener.names")
            .unwrap_or_default()
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        let listeners = parse_listeners(
            "listeners",
            &get(&props, "listeners").unwrap_or_default(),
            &protocols,
            &controller_names,
        )?;
        let (controller_specs, client_specs): (Vec<_>, Vec<_>) = listeners
            .into_iter()
            .partition(|l| controller_names.contains(&l.name));
        if !is_broker {
            if let Some(l) = client_specs.first() {
                return Err(ConfigError::new(
                    "listeners",
                    format!(
                        "process.roles=controller, so every listener must be a controller listener named in \
                         controller.listener.names; `{}` is not (a controller-only node serves no clients)",
                        l.name
                    ),
                ));
            }
            if controller_specs.is_empty() {
                return Err(ConfigError::new(
                    "listeners",
                    "process.roles=controller needs a controller listener: name it in controller.listener.names \
                     (e.g. CONTROLLER) and add CONTROLLER://host:port to listeners",
                ));
            }
        } else if !is_controller && !controller_specs.is_empty() {
            return Err(ConfigError::new(
                "listeners",
                format!(
                    "process.roles=broker, so listeners must not contain the controller listener `{}` (a broker-only \
                     node finds the controllers through controller.quorum.voters or controller.quorum.bootstrap.servers)",
                    controller_specs[0].name
                ),
            ));
        }
        let client = match (get(&props, "inter.broker.listener.name"), &client_specs[..]) {
            // A controller-only node: its one listener stands in for the client one (never bound by the broker).
            (_, []) if !is_broker => &controller_specs[0],
            (_, []) => {
                return Err(ConfigError::new(
                    "listeners",
                    "no client listener: every listener is named in controller.listener.names",
                ))
            }
            (Some(name), specs) => specs.iter().find(|l| l.name == name).ok_or_else(|| {
                ConfigError::new(
                    "inter.broker.listener.name",
                    format!("`{name}` is not one of the listeners"),
                )
            })?,
            (None, [one]) => one,
            (None, specs) => {
                return Err(ConfigError::new(
                    "listeners",
                    format!(
                        "Fjord serves one client listener for now; got {}. Keep one (and the controller listener)",
                        specs.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        }
        .clone();
        let listener = bind_addr("listeners", &client)?;
        let host = client.host.clone();
        let port = client.port;
        let controller_listener = match &controller_specs[..] {
            [] => None,
            [one] => Some(bind_addr("listeners", one)?),
            more => {
                return Err(ConfigError::new(
                    "controller.listener.names",
                    format!(
                        "Fjord serves one controller listener; got {}",
                        more.iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        let (advertised_host, advertised_port) = match get(&props, "advertised.listeners") {
            Some(a) => {
                let adv =
                    parse_listeners("advertised.listeners", &a, &protocols, &controller_names)?;
                let l = adv.iter().find(|l| l.name == client.name).ok_or_else(|| {
                    ConfigError::new(
                        "advertised.listeners",
                        format!("has no entry for listener `{}`", client.name),
                    )
                })?;
                (l.host.clone(), l.port)
            }
            None => {
                let h = if host.is_empty() || host == "0.0.0.0" {
                    "localhost".to_string()
                } else {
                    host.clone()
                };
                (h, port)
            }
        };
        let quorum_voters = match get(&props, "controller.quorum.voters") {
            Some(v) if !v.trim().is_empty() => {
                let voters = fjord_meta::parse_quorum_voters(&v)
                    .map_err(|r| ConfigError::new("controller.quorum.voters", r))?;
                if is_controller && controller_listener.is_none() {
                    return Err(ConfigError::new(
                        "controller.listener.names",
                        "controller.quorum.voters is set, so this node needs a controller listener: name it in \
                         controller.listener.names (e.g. CONTROLLER) and add CONTROLLER://host:port to listeners",
                    ));
                }
                if !is_controller && voters.contains_key(&node_id) {
                    return Err(ConfigError::new(
                        "controller.quorum.voters",
                        format!(
                            "names node {node_id}, but process.roles=broker: a voter must have the controller role \
                             (give the broker another node.id, or set process.roles=broker,controller)"
                        ),
                    ));
                }
                Some(voters)
            }
            _ => None,
        };
        let quorum_bootstrap = match get(&props, "controller.quorum.bootstrap.servers") {
            Some(v) if !v.trim().is_empty() => {
                let mut servers = Vec::new();
                for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    use std::net::ToSocketAddrs;
                    let addr = entry
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| {
                            ConfigError::new(
                                "controller.quorum.bootstrap.servers",
                                format!("`{entry}` is not host:port"),
                            )
                        })?;
                    servers.push(addr);
                }
                if is_controller && controller_listener.is_none() {
                    return Err(ConfigError::new(
                        "controller.listener.names",
                        "controller.quorum.bootstrap.servers is set, so this controller needs a controller listener: \
                         name it in controller.listener.names (e.g. CONTROLLER) and add CONTROLLER://host:port to listeners",
                    ));
                }
                servers
            }
            _ => Vec::new(),
        };
        if (!is_broker || !is_controller) && quorum_voters.is_none() && quorum_bootstrap.is_empty()
        {
            return Err(ConfigError::new(
                "process.roles",
                format!(
                    "process.roles={} needs the controller quorum: set controller.quorum.voters (id@host:port,...) or \
                     controller.quorum.bootstrap.servers (host:port,...)",
                    if is_broker { "broker" } else { "controller" }
                ),
            ));
        }
        let observer_listener = match get(&props, "metadata.observer.listener") {
            Some(m) if !m.is_empty() => {
                if is_controller {
                    return Err(ConfigError::new(
                        "metadata.observer.listener",
                        "only a broker-only node (process.roles=broker) has one; a controller uses its controller listener",
                    ));
                }
                Some(m.parse().map_err(|_| {
                    ConfigError::new(
                        "metadata.observer.listener",
                        format!("`{m}` is not ip:port"),
                    )
                })?)
            }
            _ if !is_controller => Some(SocketAddr::new(listener.ip(), 0)),
            _ => None,
        };
        if let (Some(voters), Some(addr)) = (&quorum_voters, controller_listener) {
            if let Some(v) = voters.get(&node_id) {
                if v.port() != addr.port() {
                    // Legitimate behind a proxy or NAT (peers dial what the voters list says); usually a typo.
                    tracing::warn!(
                        "controller.quorum.voters names node {node_id} at {v}, but its controller listener is {addr}; \
                         the other voters will dial {v}"
                    );
                }
            }
        }
        let (dirs_key, dirs_value) = match get(&props, "log.dirs") {
            Some(d) => ("log.dirs", d),
            None => (
                "log.dir",
                get(&props, "log.dir").unwrap_or_else(|| "./fjord-data".into()),
            ),
        };
        let mut log_dirs: Vec<PathBuf> = Vec::new();
        for d in dirs_value.split(',').map(str::trim) {
            if d.is_empty() {
                return Err(ConfigError::new(
                    dirs_key,
                    "must be a comma-separated list of directories, none of them empty",
                ));
            }
            let d = PathBuf::from(d);
            if log_dirs.contains(&d) {
                return Err(ConfigError::new(
                    dirs_key,
                    format!("`{}` is listed twice", d.display()),
                ));
            }
            log_dirs.push(d);
        }
        let log_dir = log_dirs[0].clone();
        let metrics_listener = match get(&props, "metrics.listener") {
            Some(m) if !m.is_empty() => Some(m.parse().map_err(|_| {
                ConfigError::new("metrics.listener", format!("`{m}` is not host:port"))
            })?),
            _ => None,
        };

        let cfg = BrokerConfig {
            node_id,
            listener,
            advertised_host,
            advertised_port,
            controller_listener,
            quorum_voters,
            quorum_bootstrap,
            is_broker,
            is_controller,
            observer_listener,
            rack: get(&props, "broker.rack").filter(|r| !r.is_empty()),
            log_dir,
            log_dirs,
            num_partitions: int(&props, "num.partitions") as i32,
            default_replication_factor: int(&props, "default.replication.factor") as i16,
            auto_create_topics: get(&props, "auto.create.topics.enable").as_deref() == Some("true"),
            message_max_bytes: int(&props, "message.max.bytes") as usize,
            socket_request_max_bytes: int(&props, "socket.request.max.bytes") as usize,
            max_connections: int(&props, "max.connections") as usize,
            connections_max_idle_ms: int(&props, "connections.max.idle.ms") as u64,
            retention_check_interval_ms: int(&props, "log.retention.check.interval.ms") as u64,
            cleaner_enable: get(&props, "log.cleaner.enable").as_deref() == Some("true"),
            cleaner_backoff_ms: int(&props, "log.cleaner.backoff.ms") as u64,
            log_flush_interval_ms: get(&props, "log.flush.interval.ms")
                .and_then(|v| v.parse().ok()),
            metrics_listener,
            props,
            explicit: given,
        };
        Ok(cfg)
    }

    /// Whether this node is part of a networked metadata quorum (as a voter or an observer), rather than a
    /// one-voter quorum of its own.
    pub fn in_quorum(&self) -> bool {
        self.quorum_voters.is_some() || !self.quorum_bootstrap.is_empty()
    }

    /// A numeric property (always present: validated and defaulted at load), or `default`.
    pub fn prop_u64(&self, key: &str, default: u64) -> u64 {
        self.props
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// The broker-level default of a topic config (the value of its broker synonym) from the static
    /// configuration alone.
    pub fn topic_default(&self, def: &TopicConfigDef) -> String {
        self.props
            .get(def.broker_synonym)
            .cloned()
            .unwrap_or_default()
    }

    /// The dynamic value of broker property `key` for this broker among the cluster's dynamic broker configs
    /// (`ClusterState::broker_configs`): its per-broker value, else the cluster-wide default, with its
    /// DescribeConfigs source (DYNAMIC_BROKER_CONFIG or DYNAMIC_DEFAULT_BROKER_CONFIG).
    pub fn dynamic_value<'a>(
        &self,
        dynamic: &'a BTreeMap<String, String>,
        key: &str,
    ) -> Option<(&'a str, i8)> {
        if let Some(v) = dynamic.get(&per_broker_key(self.node_id, key)) {
            return Some((v, SOURCE_DYNAMIC_BROKER));
        }
        dynamic
            .get(key)
            .map(|v| (v.as_str(), SOURCE_DYNAMIC_DEFAULT_BROKER))
    }

    /// The broker-level default of a topic config with the dynamic broker configs applied.
    pub fn topic_default_dynamic(
        &self,
        def: &TopicConfigDef,
        dynamic: &BTreeMap<String, String>,
    ) -> String {
        match self.dynamic_value(dynamic, def.broker_synonym) {
            Some((v, _)) => v.to_string(),
            None => self.topic_default(def),
        }
    }

    /// The effective value of every topic config for a topic with these overrides.
    pub fn effective_topic_configs(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> BTreeMap<&'static str, String> {
        self.effective_topic_configs_dynamic(&BTreeMap::new(), overrides)
    }

    /// [`Self::effective_topic_configs`] with the dynamic broker configs applied.
    pub fn effective_topic_configs_dynamic(
        &self,
        dynamic: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> BTreeMap<&'static str, String> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| {
                let v = overrides
                    .get(d.name)
                    .cloned()
                    .unwrap_or_else(|| self.topic_default_dynamic(d, dynamic));
                (d.name, v)
            })
            .collect()
    }

    /// Builds the typed log config of a topic from its overrides and the static broker defaults.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        self.log_config_dynamic(&BTreeMap::new(), overrides)
    }

    /// Builds the typed log config of a topic from its overrides, the dynamic broker configs and the static
    /// broker defaults (in that order of precedence).
    pub fn log_config_dynamic(
        &self,
        dynamic: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> LogConfig {
        let eff = self.effective_topic_configs_dynamic(dynamic, overrides);
        let num = |k: &str| -> i64 { eff.get(k).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let policy = eff.get("cleanup.policy").cloned().unwrap_or_default();
        LogConfig {
            segment_bytes: num("segment.bytes") as u64,
            segment_ms: num("segment.ms"),
            segment_index_bytes: num("segment.index.bytes") as u64,
            index_interval_bytes: num("index.interval.bytes") as u64,
            retention_ms: num("retention.ms"),
            retention_bytes: num("retention.bytes"),
            max_message_bytes: num("max.message.bytes") as usize,
            cleanup_delete: policy.contains("delete"),
            cleanup_compact: policy.contains("compact"),
            delete_retention_ms: num("delete.retention.ms"),
            min_cleanable_dirty_ratio: eff
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.5),
            min_compaction_lag_ms: num("min.compaction.lag.ms"),
            file_delete_delay_ms: num("file.delete.delay.ms"),
            timestamp_type: if eff.get("message.timestamp.type").map(String::as_str)
                == Some("LogAppendTime")
            {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            timestamp_before_max_ms: num("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: num("message.timestamp.after.max.ms"),
            compression: eff
                .get("compression.type")
                .and_then(|v| codec(v).ok())
                .flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_properties(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_match_kafka() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listener.port(), 9092);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert_eq!(c.props["log.retention.ms"], "604800000");
        assert_eq!(c.props["log.roll.ms"], "604800000");
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics);
        let lc = c.log_config(&BTreeMap::new());
        assert_eq!(lc.segment_bytes, 1_073_741_824);
        assert!(lc.cleanup_delete && !lc.cleanup_compact);
    }

    #[test]
    fn every_log_dir_of_the_list_is_used_and_the_first_holds_metadata() {
        let c = cfg(&[("log.dirs", "/data/a, /data/b,/data/c")]).unwrap();
        assert_eq!(
            c.log_dirs,
            vec![
                PathBuf::from("/data/a"),
                PathBuf::from("/data/b"),
                PathBuf::from("/data/c")
            ]
        );
        assert_eq!(c.log_dir, PathBuf::from("/data/a"));
        let c = cfg(&[("log.dir", "/data/x")]).unwrap();
        assert_eq!(c.log_dirs, vec![PathBuf::from("/data/x")]);
        let err = cfg(&[("log.dirs", "/data/a,,/data/b")]).unwrap_err();
        assert_eq!(err.name, "log.dirs");
        let err = cfg(&[("log.dirs", "/data/a,/data/a")]).unwrap_err();
        assert!(err.reason.contains("twice"), "{err}");
    }

    #[test]
    fn unknown_broker_config_is_named_in_the_error() {
        let e = cfg(&[("log.retention.hourz", "1")]).unwrap_err();
        assert_eq!(e.name, "log.retention.hourz");
        assert!(e.to_string().contains("unknown broker config"));
    }

    #[test]
    fn bad_broker_value_is_named_in_the_error() {
        let e = cfg(&[("num.partitions", "zero")]).unwrap_err();
        assert_eq!(e.name, "num.partitions");
        let e = cfg(&[("listeners", "SSL://x:1")]).unwrap_err();
        assert_eq!(e.name, "listeners");
    }

    #[test]
    fn the_adaptive_append_linger_of_kafka_4_1_is_accepted() {
        let c = cfg(&[("group.coordinator.append.linger.ms", "-1")]).unwrap();
        assert_eq!(c.props["group.coordinator.append.linger.ms"], "-1");
        assert_eq!(crate::groups::consumer_config(&c).append_linger_ms, 0);
        let e = cfg(&[("group.coordinator.append.linger.ms", "-2")]).unwrap_err();
        assert_eq!(e.name, "group.coordinator.append.linger.ms");
    }

    #[test]
    fn kraft_listeners_split_into_the_client_and_the_controller_listener() {
        let c = cfg(&[
            ("node.id", "2"),
            ("process.roles", "broker,controller"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193",
            ),
            ("advertised.listeners", "PLAINTEXT://broker2.example:9192"),
            ("controller.listener.names", "CONTROLLER"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293",
            ),
            ("broker.rack", "r1"),
        ])
        .unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.listener.port(), 9192);
        assert_eq!(c.controller_listener.unwrap().port(), 9193);
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("broker2.example", 9192)
        );
        assert_eq!(c.quorum_voters.as_ref().unwrap().len(), 3);
        assert_eq!(c.rack.as_deref(), Some("r1"));
        // Without a quorum the node is its own one-voter quorum (the embedded default).
        let c = cfg(&[]).unwrap();
        assert!(c.quorum_voters.is_none() && c.controller_listener.is_none());
    }

    #[test]
    fn kraft_misconfigurations_are_named_with_what_to_do() {
        let voters = ("controller.quorum.voters", "1@127.0.0.1:9093");
        // Voters but no controller listener.
        let e = cfg(&[voters]).unwrap_err();
        assert_eq!(e.name, "controller.listener.names");
        // A listener name missing from the protocol map.
        let e = cfg(&[("listeners", "INTERNAL://127.0.0.1:1")]).unwrap_err();
        assert!(e.reason.contains("listener.security.protocol.map"), "{e}");
        // Only controller listeners.
        let e = cfg(&[
            ("listeners", "CONTROLLER://127.0.0.1:1"),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "listeners");
        let e = cfg(&[("process.roles", "broker,zookeeper")]).unwrap_err();
        assert!(e.reason.contains("unknown role"), "{e}");
        let e = cfg(&[("process.roles", "")]).unwrap_err();
        assert_eq!(e.name, "process.roles");
    }

    #[test]
    fn separate_roles_are_checked_with_what_to_do() {
        let ctl = [
            ("controller.listener.names", "CONTROLLER"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut all: Vec<(&str, &str)> = ctl.to_vec();
            all.extend_from_slice(extra);
            cfg(&all)
        };
        // A broker-only node needs a way to the quorum.
        let e = with(&[("process.roles", "broker")]).unwrap_err();
        assert_eq!(e.name, "process.roles");
        assert!(
            e.reason.contains("controller.quorum.bootstrap.servers"),
            "{e}"
        );
        // ... must not listen as a controller, nor be a voter.
        let e = with(&[
            ("process.roles", "broker"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2",
            ),
            ("controller.quorum.bootstrap.servers", "127.0.0.1:9093"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "listeners");
        assert!(
            e.reason
                .contains("must not contain the controller listener"),
            "{e}"
        );
        let e = with(&[
            ("process.roles", "broker"),
            ("node.id", "1"),
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "controller.quorum.voters");
        // A well-formed broker-only node: bootstrap servers, an observer listener on the client host.
        let c = with(&[
            ("process.roles", "broker"),
            ("node.id", "4"),
            (
                "controller.quorum.bootstrap.servers",
                "127.0.0.1:9093, 127.0.0.1:9094",
            ),
        ])
        .unwrap();
        assert!(c.is_broker && !c.is_controller && c.in_quorum());
        assert_eq!(c.quorum_bootstrap.len(), 2);
        assert_eq!(c.observer_listener, Some("127.0.0.1:0".parse().unwrap()));
        let e = with(&[
            ("process.roles", "broker"),
            ("controller.quorum.bootstrap.servers", "nonsense"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "controller.quorum.bootstrap.servers");

        // A controller-only node needs a CONTROLLER listener, serves no client listener, and needs the quorum.
        let e = with(&[
            ("process.roles", "controller"),
            ("listeners", "PLAINTEXT://127.0.0.1:1"),
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "listeners");
        assert!(e.reason.contains("serves no clients"), "{e}");
        let e = cfg(&[
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://127.0.0.1:1"),
            ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT"),
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
        ])
        .unwrap_err();
        assert!(e.reason.contains("controller listener"), "{e}");
        let e = with(&[
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://127.0.0.1:1"),
        ])
        .unwrap_err();
        assert!(e.reason.contains("controller.quorum.voters"), "{e}");
        let c = with(&[
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://127.0.0.1:1"),
            ("controller.quorum.voters", "1@127.0.0.1:1"),
        ])
        .unwrap();
        assert!(!c.is_broker && c.is_controller);
        assert_eq!(c.controller_listener, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(c.observer_listener, None);
    }

    #[test]
    fn retention_precedence_is_ms_then_minutes_then_hours() {
        assert_eq!(
            cfg(&[("log.retention.minutes", "2")]).unwrap().props["log.retention.ms"],
            "120000"
        );
        assert_eq!(
            cfg(&[("log.retention.minutes", "2"), ("log.retention.ms", "5")])
                .unwrap()
                .props["log.retention.ms"],
            "5"
        );
    }

    #[test]
    fn topic_overrides_win_over_broker_defaults() {
        let c = cfg(&[("log.segment.bytes", "1000")]).unwrap();
        let mut o = BTreeMap::new();
        assert_eq!(c.log_config(&o).segment_bytes, 1000);
        o.insert("segment.bytes".to_string(), "2000".to_string());
        o.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        let lc = c.log_config(&o);
        assert_eq!(lc.segment_bytes, 2000);
        assert!(lc.cleanup_compact && lc.cleanup_delete);
    }

    #[test]
    fn topic_config_validation() {
        assert!(validate_topic_config("retention.ms", "1000").is_ok());
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "abc").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "shred").is_err());
        assert_eq!(validate_topic_config("nope", "1").unwrap_err().name, "nope");
    }

    #[test]
    fn properties_file_parses_comments_and_separators() {
        let p = parse_properties("# c\n\nnum.partitions=3\nlog.dirs : /tmp/x\n! bang\n").unwrap();
        assert_eq!(p["num.partitions"], "3");
        assert_eq!(p["log.dirs"], "/tmp/x");
        assert!(parse_properties("garbage line").is_err());
    }
}
