//! `fjord topics`: create, list, describe, alter and delete topics (kafka-topics.sh, with clearer errors and
//! `--output json`). Changes go to the controller in the Kafka protocol itself (`wire`), so that a refusal
//! reaches the user in the broker's own words; librdkafka keeps only the error code.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Subcommand, ValueEnum};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde_json::json;

use crate::client::{describe_code, CliError, ClientArgs};
use crate::ops::{
    bad_args, broker_message, is_reserved, missing_topic, send_to_controller, Cluster,
    NOT_CONTROLLER,
};
use crate::wire::error_name;

/// Kafka's TOPIC_ALREADY_EXISTS and UNKNOWN_TOPIC_OR_PARTITION.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// IncrementalAlterConfigs operations and the TOPIC resource type.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
pub const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum TopicsCmd {
    /// Create a topic.
    ///
    /// Example: fjord topics create orders --partitions 6 --config retention.ms=86400000
    Create {
        /// The new topic's name: 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-' (names starting with "__"
        /// are reserved for internal topics).
        #[arg(value_name = "TOPIC")]
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        /// Copies of each partition (default: the broker's default.replication.factor).
        #[arg(long, short = 'r', value_parser = clap::value_parser!(i32).range(1..))]
        replication_factor: Option<i32>,
        /// Topic config, e.g. --config cleanup.policy=compact (repeatable).
        #[arg(long, short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Succeed quietly when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List topic names (internal topics such as __consumer_offsets only with --include-internal).
    ///
    /// Example: fjord topics list --output json
    List {
        /// Also list internal topics (names starting with "__").
        #[arg(long)]
        include_internal: bool,
        /// Output format: one name per line, or a JSON array.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show partitions (leader, replicas, ISR, offline replicas, offsets) and configs of topics: those named,
    /// those matching a pattern, or every non-internal topic when none is named.
    ///
    /// Example: fjord topics describe orders
    ///
    /// Example: fjord topics describe 'orders.*' --under-replicated-partitions
    Describe {
        /// Topic names or regular expressions matching whole names (as kafka-topics.sh --topic), e.g. orders
        /// or 'orders-.*'. None: every topic.
        #[arg(value_name = "TOPIC|PATTERN")]
        names: Vec<String>,
        /// Show every config, not only those set on the topic.
        #[arg(long)]
        all_configs: bool,
        /// Only partitions with fewer in-sync replicas than replicas (an offline replica is not in sync).
        #[arg(long, conflicts_with = "unavailable_partitions")]
        under_replicated_partitions: bool,
        /// Only partitions without a leader that can serve them.
        #[arg(long)]
        unavailable_partitions: bool,
        /// Let patterns and the no-name form include internal topics (names starting with "__").
        #[arg(long)]
        include_internal: bool,
        /// Output format: a human-readable listing, or JSON.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a topic's partition count or configs.
    ///
    /// Example: fjord topics alter orders --partitions 12 --config retention.ms=3600000 --delete-config segment.ms
    Alter {
        /// The topic to change.
        #[arg(value_name = "TOPIC")]
        name: String,
        /// New (larger) partition count.
        #[arg(long, short = 'p')]
        partitions: Option<usize>,
        /// Set a topic config (repeatable).
        #[arg(long, short = 'c', value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Remove a topic config so the broker default applies again (repeatable).
        #[arg(long, value_name = "KEY")]
        delete_config: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete topics.
    ///
    /// Example: fjord topics delete orders payments
    Delete {
        /// The topics to delete.
        #[arg(required = true, value_name = "TOPIC")]
        names: Vec<String>,
        /// Succeed quietly when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a partition's replicas to other brokers, cancel a move, or list the moves in progress
    /// (kafka-reassign-partitions.sh). The new replicas copy the partition from its leader; once all of them are
    /// in sync the replicas become the target ones (the first leads) and the removed brokers delete their copy.
    ///
    /// Example: fjord topics reassign --topic orders --partition 0 --replicas 2,3,1 --throttle 10000000
    ///
    /// Example: fjord topics reassign --topic orders --partition 0 --cancel
    ///
    /// Example: fjord topics reassign --list
    Reassign {
        /// The topic (with --list: only its moves).
        #[arg(long, value_name = "TOPIC", required_unless_present = "list")]
        topic: Option<String>,
        /// The partition to move.
        #[arg(long, value_name = "N", required_unless_present = "list")]
        partition: Option<i32>,
        /// The target replicas, by broker id (see `fjord cluster info`); the first is the preferred leader.
        #[arg(long, value_name = "ID,ID,...", value_delimiter = ',', num_args = 1..,
              required_unless_present_any = ["cancel", "list"], conflicts_with_all = ["cancel", "list"])]
        replicas: Vec<i32>,
        /// Cancel the move in progress: back to the replicas from before it.
        #[arg(long, conflicts_with = "list")]
        cancel: bool,
        /// List the moves in progress.
        #[arg(long)]
        list: bool,
        /// Limit the copy to the new replicas to this many bytes per second on every broker (sets the cluster-wide
        /// follower.replication.throttled.rate and the topic's follower.replication.throttled.replicas).
        #[arg(long, value_name = "BYTES_PER_S", conflicts_with_all = ["cancel", "list"])]
        throttle: Option<u64>,
        /// Output format of --list.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn parse_configs(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| bad_args(format!("--config `{p}` is not KEY=VALUE")))?;
        let (k, v) = (k.trim(), v.trim());
        // The broker would refuse it too; checking here gives the precise reason.
        fjord_broker::config::validate_topic_config(k, v).map_err(|e| {
            CliError::failure(format!(
                "{e}. See `fjord topics describe TOPIC --all-configs` for names and values."
            ))
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn admin(client: &ClientArgs) -> Result<AdminClient<DefaultClientContext>, CliError> {
    client
        .config()?
        .create()
        .map_err(|e| CliError::failure(format!("cannot create an admin client: {e}")))
}

fn opts(client: &ClientArgs) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(client.timeout()))
        .operation_timeout(Some(client.timeout()))
}

pub async fn run(cmd: TopicsCmd) -> Result<(), CliError> {
    match cmd {
        TopicsCmd::Create {
            name,
            partitions,
            replication_factor,
            config,
            if_not_exists,
            client,
        } => create(
            &client,
            &name,
            partitions,
            replication_factor,
            &config,
            if_not_exists,
        ),
        TopicsCmd::List {
            include_internal,
            output,
            client,
        } => {
            let md = client.metadata(&client.consumer()?, None)?;
            let mut names: Vec<&str> = md
                .topics()
                .iter()
                .map(|t| t.name())
                .filter(|n| include_internal || !is_internal(n))
                .collect();
            names.sort_unstable();
            match output {
                Output::Text => names.iter().for_each(|n| println!("{n}")),
                Output::Json => println!("{}", json!(names)),
            }
            Ok(())
        }
        TopicsCmd::Describe {
            names,
            all_configs,
            under_replicated_partitions,
            unavailable_partitions,
            include_internal,
            output,
            client,
        } => {
            let filter = if under_replicated_partitions {
                Some(Filter::UnderReplicated)
            } else if unavailable_partitions {
                Some(Filter::Unavailable)
            } else {
                None
            };
            describe(
                &client,
                names,
                all_configs,
                filter,
                include_internal,
                output,
            )
            .await
        }
        TopicsCmd::Alter {
            name,
            partitions,
            config,
            delete_config,
            client,
        } => alter(&client, &name, partitions, &config, &delete_config).await,
        TopicsCmd::Delete {
            names,
            if_exists,
            client,
        } => delete(&client, &names, if_exists),
        TopicsCmd::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            list,
            throttle,
            output,
            client,
        } => {
            if list {
                return list_reassignments(&client, topic.as_deref(), output);
            }
            let (Some(topic), Some(partition)) = (topic, partition) else {
                return Err(bad_args(
                    "--topic and --partition name the partition to move",
                ));
            };
            let target = (!cancel).then_some(replicas);
            reassign(&client, &topic, partition, target, throttle)
        }
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn create(
    client: &ClientArgs,
    name: &str,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    config: &[String],
    if_not_exists: bool,
) -> Result<(), CliError> {
    if is_reserved(name) {
        return Err(bad_args(fjord_broker::admin::RESERVED_TOPIC_NAME));
    }
    let configs = parse_configs(config)?;
    let rf = match replication_factor {
        None => -1,
        Some(r) => i16::try_from(r).map_err(|_| {
            bad_args(format!(
                "--replication-factor {r} is larger than any cluster can hold ({})",
                i16::MAX
            ))
        })?,
    };
    let topic = CreatableTopic::default()
        .with_name(TopicName(str_bytes(name)))
        .with_num_partitions(partitions.unwrap_or(-1))
        .with_replication_factor(rf)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(client.request_timeout_ms.min(i32::MAX as u64) as i32);
    let resp = send_to_controller(client, &request, |r| {
        r.topics.iter().any(|t| t.error_code == NOT_CONTROLLER)
    })?;
    let Some(result) = resp.topics.into_iter().next() else {
        return Err(CliError::failure("the broker returned no result"));
    };
    match result.error_code {
        0 => {
            eprintln!("Created topic {name}.");
            Ok(())
        }
        TOPIC_ALREADY_EXISTS if if_not_exists => Ok(()),
        TOPIC_ALREADY_EXISTS => Err(CliError::failure(format!(
            "topic `{name}` already exists (use --if-not-exists to ignore)"
        ))),
        code => Err(CliError::failure(format!(
            "cannot create topic `{name}`: {}",
            broker_message(code, result.error_message.as_deref())
        ))),
    }
}

fn delete(client: &ClientArgs, names: &[String], if_exists: bool) -> Result<(), CliError> {
    let mut seen = BTreeSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(bad_args(format!("topic `{dup}` is named more than once")));
    }
    let topic_names: Vec<TopicName> = names.iter().map(|n| TopicName(str_bytes(n))).collect();
    // v6 names topics in `topics` (by name or id), older versions in `topic_names`; the codec writes the one
    // field of the version the connection negotiates, so both are filled.
    let request = DeleteTopicsRequest::default()
        .with_topics(
            topic_names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(n.clone())))
                .collect(),
        )
        .with_topic_names(topic_names)
        .with_timeout_ms(client.request_timeout_ms.min(i32::MAX as u64) as i32);
    let resp = send_to_controller(client, &request, |r| {
        r.responses.iter().any(|t| t.error_code == NOT_CONTROLLER)
    })?;
    let mut deleted = Vec::new();
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    for r in resp.responses {
        let n = r.name.map(|n| n.0.to_string()).unwrap_or_default();
        match r.error_code {
            0 => {
                eprintln!("Deleted topic {n}.");
                deleted.push(n);
            }
            UNKNOWN_TOPIC_OR_PARTITION => missing.push(n),
            code => failed.push(format!(
                "cannot delete topic `{n}`: {}",
                broker_message(code, r.error_message.as_deref())
            )),
        }
    }
    if !failed.is_empty() {
        for f in &failed[..failed.len() - 1] {
            eprintln!("error: {f}");
        }
        let last = failed.pop().unwrap_or_default();
        return Err(CliError::failure(if names.len() == 1 {
            last
        } else {
            format!(
                "{last} ({} of {} topics deleted{})",
                deleted.len(),
                names.len(),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!("; these do not exist: {}", missing.join(", "))
                }
            )
        }));
    }
    if missing.is_empty() || if_exists {
        return Ok(());
    }
    if names.len() == 1 {
        return Err(missing_topic(&missing[0]));
    }
    Err(CliError::new(
        crate::client::EXIT_UNKNOWN_TOPIC,
        format!(
            "{} of {} topics deleted{}; these do not exist: {} (use --if-exists to ignore missing topics)",
            deleted.len(),
            names.len(),
            if deleted.is_empty() {
                String::new()
            } else {
                format!(" ({})", deleted.join(", "))
            },
            missing.join(", ")
        ),
    ))
}

async fn alter(
    client: &ClientArgs,
    name: &str,
    partitions: Option<usize>,
    config: &[String],
    delete_config: &[String],
) -> Result<(), CliError> {
    if partitions.is_none() && config.is_empty() && delete_config.is_empty() {
        return Err(bad_args(format!(
            "nothing to change on topic `{name}`: give --partitions N, --config KEY=VALUE or --delete-config KEY"
        )));
    }
    let set = parse_configs(config)?;
    for k in delete_config {
        if fjord_broker::config::topic_config_def(k).is_none() {
            return Err(bad_args(format!(
                "--delete-config `{k}`: unknown topic config. See `fjord topics describe {name} --all-configs` for names."
            )));
        }
        if set.contains_key(k) {
            return Err(bad_args(format!(
                "`{k}` is both set (--config) and deleted (--delete-config)"
            )));
        }
    }
    let consumer = client.consumer()?;
    let md = client.metadata(&consumer, None)?;
    let Some(topic) = md
        .topics()
        .iter()
        .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Err(missing_topic(name));
    };
    let current = topic.partitions().len();
    if let Some(n) = partitions {
        fjord_broker::admin::check_partitions_grow(name, current, n as i64, "--partitions")
            .map_err(CliError::failure)?;
    }
    // Every deleted config must be set on the topic: checked before anything changes.
    if !delete_config.is_empty() {
        let admin = admin(client)?;
        let overrides = topic_overrides(&admin, client, name).await?;
        let unset: Vec<&str> = delete_config
            .iter()
            .filter(|k| !overrides.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !unset.is_empty() {
            let set_list = if overrides.is_empty() {
                "none".to_string()
            } else {
                overrides.keys().cloned().collect::<Vec<_>>().join(", ")
            };
            return Err(CliError::failure(format!(
                "cannot delete {} of topic `{name}`: not set on the topic (its value is the broker default). Configs set on {name}: {set_list}",
                unset.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if let Some(n) = partitions {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_count(n as i32)
                .with_assignments(None)])
            .with_timeout_ms(client.request_timeout_ms.min(i32::MAX as u64) as i32);
        let resp = send_to_controller(client, &request, |r| {
            r.results.iter().any(|t| t.error_code == NOT_CONTROLLER)
        })?;
        if let Some(r) = resp.results.into_iter().find(|r| r.error_code != 0) {
            return Err(CliError::failure(format!(
                "cannot add partitions to `{name}`: {}",
                broker_message(r.error_code, r.error_message.as_deref())
            )));
        }
        eprintln!("Topic {name} now has {n} partitions.");
    }
    if !set.is_empty() || !delete_config.is_empty() {
        let mut ops: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(str_bytes(k))
                    .with_config_operation(OP_SET)
                    .with_value(Some(str_bytes(v)))
            })
            .collect();
        ops.extend(delete_config.iter().map(|k| {
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(OP_DELETE)
        }));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(name))
                .with_configs(ops),
        ]);
        let resp = send_to_controller(client, &request, |r| {
            r.responses.iter().any(|x| x.error_code == NOT_CONTROLLER)
        })?;
        if let Some(r) = resp.responses.into_iter().find(|r| r.error_code != 0) {
            return Err(CliError::failure(format!(
                "cannot change configs of `{name}`: {}",
                broker_message(r.error_code, r.error_message.as_deref())
            )));
        }
        eprintln!("Updated configs of topic {name}.");
    }
    Ok(())
}

/// Kafka's internal topics (`__consumer_offsets`, `__transaction_state`) start with two underscores.
fn is_internal(name: &str) -> bool {
    is_reserved(name)
}

async fn topic_overrides(
    admin: &AdminClient<DefaultClientContext>,
    client: &ClientArgs,
    name: &str,
) -> Result<BTreeMap<String, String>, CliError> {
    Ok(topic_configs(admin, client, name)
        .await?
        .into_iter()
        .filter(|(_, (_, src))| *src == "topic")
        .map(|(k, (v, _))| (k, v))
        .collect())
}

/// Every config of a topic: name -> (value, source).
async fn topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    client: &ClientArgs,
    name: &str,
) -> Result<BTreeMap<String, (String, &'static str)>, CliError> {
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], &opts(client))
        .await
        .map_err(|e| client.transport_error(e))?;
    match res.into_iter().next() {
        Some(Ok(r)) => Ok(r
            .entries
            .into_iter()
            .map(|e| {
                let src = match e.source {
                    ConfigSource::DynamicTopic => "topic",
                    ConfigSource::StaticBroker
                    | ConfigSource::DynamicBroker
                    | ConfigSource::DynamicDefaultBroker => "broker",
                    _ => "default",
                };
                (e.name, (e.value.unwrap_or_default(), src))
            })
            .collect()),
        Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) => Err(missing_topic(name)),
        Some(Err(code)) => Err(CliError::failure(format!(
            "cannot read configs of `{name}`: {}",
            describe_code(code)
        ))),
        None => Err(CliError::failure("the broker returned no configs")),
    }
}

/// A `describe` filter on partitions (kafka-topics.sh --under-replicated-partitions, --unavailable-partitions).
#[derive(Copy, Clone, PartialEq, Eq)]
enum Filter {
    UnderReplicated,
    Unavailable,
}

/// Whether `name` is meant as a pattern: it holds a character no topic name can (topic names are
/// `[a-zA-Z0-9._-]`, so a `.` alone is a name, as kafka-topics.sh treats `--topic a.b` as a literal too when
/// such a topic exists).
fn is_pattern(name: &str) -> bool {
    name.chars()
        .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'))
}

/// The topics `names` select among `all` (sorted): exact names, and regular expressions matching whole names.
fn select_topics(
    names: &[String],
    all: &[String],
    include_internal: bool,
) -> Result<Vec<String>, CliError> {
    let visible = |t: &&String| include_internal || !is_internal(t);
    if names.is_empty() {
        return Ok(all.iter().filter(visible).cloned().collect());
    }
    let mut out = BTreeSet::new();
    for n in names {
        if all.contains(n) {
            out.insert(n.clone());
            continue;
        }
        if !is_pattern(n) {
            return Err(missing_topic(n));
        }
        let re = regex::Regex::new(&format!("^(?:{n})$"))
            .map_err(|e| bad_args(format!("`{n}` is not a valid regular expression: {e}")))?;
        let before = out.len();
        // A pattern that names internal topics explicitly selects them.
        let internal_ok = include_internal || n.starts_with("__");
        out.extend(
            all.iter()
                .filter(|t| internal_ok || !is_internal(t))
                .filter(|t| re.is_match(t))
                .cloned(),
        );
        if out.len() == before {
            return Err(CliError::new(
                crate::client::EXIT_UNKNOWN_TOPIC,
                format!("no topic matches `{n}` (a regular expression matching whole names). List topics with `fjord topics list`."),
            ));
        }
    }
    Ok(out.into_iter().collect())
}

async fn describe(
    client: &ClientArgs,
    names: Vec<String>,
    all: bool,
    filter: Option<Filter>,
    include_internal: bool,
    output: Output,
) -> Result<(), CliError> {
    let cluster = Cluster::load(client, None)?;
    let live: BTreeSet<i32> = cluster.brokers.keys().copied().collect();
    let mut by_name: BTreeMap<
        String,
        &kafka_protocol::messages::metadata_response::MetadataResponseTopic,
    > = BTreeMap::new();
    for t in &cluster.metadata.topics {
        if let Some(n) = &t.name {
            if t.error_code == 0 || !t.partitions.is_empty() {
                by_name.insert(n.0.to_string(), t);
            }
        }
    }
    let all_names: Vec<String> = by_name.keys().cloned().collect();
    let selected = select_topics(&names, &all_names, include_internal)?;
    let consumer = client.consumer()?;
    let admin = admin(client)?;
    let mut docs = Vec::new();
    for name in &selected {
        let t = by_name[name];
        let mut parts = Vec::new();
        let mut sorted: Vec<_> = t.partitions.iter().collect();
        sorted.sort_by_key(|p| p.partition_index);
        for p in sorted {
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            let offline: Vec<i32> = p.offline_replicas.iter().map(|b| b.0).collect();
            let isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            let leader = p.leader_id.0;
            let unavailable = leader < 0 || !live.contains(&leader);
            // An offline replica cannot be in sync, whatever the ISR still says.
            let in_sync = isr.iter().filter(|b| !offline.contains(b)).count();
            let under_replicated = in_sync < replicas.len();
            match filter {
                Some(Filter::UnderReplicated) if !under_replicated => continue,
                Some(Filter::Unavailable) if !unavailable => continue,
                _ => {}
            }
            // A partition without a leader has no offsets to ask for (the request would only time out).
            let offsets = if unavailable {
                None
            } else {
                rdkafka::consumer::Consumer::fetch_watermarks(
                    &consumer,
                    name,
                    p.partition_index,
                    client.timeout(),
                )
                .ok()
            };
            parts.push(json!({
                "partition": p.partition_index, "leader": leader, "leader_epoch": p.leader_epoch,
                "replicas": replicas, "isr": isr, "offline_replicas": offline,
                "error": (p.error_code != 0).then(|| error_name(p.error_code)),
                "low_offset": offsets.map(|o| o.0), "high_offset": offsets.map(|o| o.1),
                "messages": offsets.map(|(l, h)| h - l),
            }));
        }
        if filter.is_some() && parts.is_empty() {
            continue;
        }
        let configs: BTreeMap<String, serde_json::Value> = if filter.is_some() {
            BTreeMap::new()
        } else {
            topic_configs(&admin, client, name)
                .await?
                .into_iter()
                .filter(|(_, (_, src))| all || *src == "topic")
                .map(|(k, (v, src))| (k, json!({"value": v, "source": src})))
                .collect()
        };
        let rf = t.partitions.first().map_or(0, |p| p.replica_nodes.len());
        docs.push(json!({
            "topic": name, "partitions": parts, "replication_factor": rf, "configs": configs,
        }));
    }
    let docs_empty = docs.is_empty();
    let show = |v: &serde_json::Value| -> String {
        if v.is_null() {
            "-".into()
        } else {
            v.to_string()
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::Value::Array(docs)),
        Output::Text if filter.is_some() => {
            // As kafka-topics.sh: only the matching partitions, each naming its topic.
            for d in &docs {
                for p in d["partitions"].as_array().into_iter().flatten() {
                    println!(
                        "Topic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}\tOffline: {}\tLeaderEpoch: {}",
                        d["topic"].as_str().unwrap_or(""),
                        p["partition"],
                        if p["leader"].as_i64().unwrap_or(-1) < 0 {
                            "none".to_string()
                        } else {
                            p["leader"].to_string()
                        },
                        p["replicas"],
                        p["isr"],
                        p["offline_replicas"],
                        p["leader_epoch"],
                    );
                }
            }
        }
        Output::Text => {
            for d in docs {
                let parts = d["partitions"].as_array().map_or(0, Vec::len);
                println!(
                    "Topic: {}\tPartitions: {parts}\tReplicationFactor: {}",
                    d["topic"].as_str().unwrap_or(""),
                    d["replication_factor"]
                );
                if let Some(cfgs) = d["configs"].as_object() {
                    if !cfgs.is_empty() {
                        let list: Vec<String> = cfgs
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v["value"].as_str().unwrap_or("")))
                            .collect();
                        println!("\tConfigs: {}", list.join(","));
                    }
                }
                for p in d["partitions"].as_array().into_iter().flatten() {
                    let offline = p["offline_replicas"]
                        .as_array()
                        .filter(|o| !o.is_empty())
                        .map_or_else(String::new, |_| {
                            format!("\tOffline: {}", p["offline_replicas"])
                        });
                    println!(
                        "\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}\tOffsets: {}..{}{offline}\tLeaderEpoch: {}",
                        p["partition"],
                        if p["leader"].as_i64().unwrap_or(-1) < 0 {
                            "none".to_string()
                        } else {
                            p["leader"].to_string()
                        },
                        p["replicas"],
                        p["isr"],
                        show(&p["low_offset"]),
                        show(&p["high_offset"]),
                        p["leader_epoch"]
                    );
                }
            }
        }
    }
    if filter.is_some() && docs_empty && output == Output::Text {
        eprintln!(
            "No partition is {}.",
            if filter == Some(Filter::UnderReplicated) {
                "under-replicated"
            } else {
                "unavailable"
            }
        );
    }
    Ok(())
}

/// Kafka's NO_REASSIGNMENT_IN_PROGRESS.
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// `topics reassign`: starts (target `Some`) or cancels (`None`) the reassignment of one partition.
fn reassign(
    client: &ClientArgs,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
    throttle: Option<u64>,
) -> Result<(), CliError> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
    // Checked here for a precise message; the broker checks again.
    let cluster = Cluster::load(client, Some(&[topic.to_string()]))?;
    let Some(t) = cluster
        .metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic) && t.error_code == 0)
    else {
        return Err(missing_topic(topic));
    };
    let Some(current) = t.partitions.iter().find(|p| p.partition_index == partition) else {
        return Err(CliError::failure(format!(
            "topic `{topic}` has no partition {partition} (it has {} partitions)",
            t.partitions.len()
        )));
    };
    let current: Vec<i32> = current.replica_nodes.iter().map(|b| b.0).collect();
    if let Some(target) = &target {
        let mut seen = BTreeSet::new();
        if let Some(d) = target.iter().find(|b| !seen.insert(**b)) {
            return Err(bad_args(format!(
                "--replicas names broker {d} more than once"
            )));
        }
        if let Some(b) = target.iter().find(|b| !cluster.brokers.contains_key(b)) {
            return Err(bad_args(format!(
                "--replicas: broker {b} is not in the cluster (brokers: {})",
                cluster.broker_list()
            )));
        }
    }
    if let (Some(rate), Some(target)) = (throttle, &target) {
        set_throttle(client, topic, partition, &current, target, rate)?;
    }
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(client.request_timeout_ms.min(i32::MAX as u64) as i32)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(TopicName(str_bytes(topic)))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    target
                        .as_ref()
                        .map(|t| t.iter().map(|b| BrokerId(*b)).collect()),
                )])]);
    let resp = send_to_controller(client, &request, |r| {
        r.error_code == NOT_CONTROLLER
            || r.responses
                .iter()
                .any(|t| t.partitions.iter().any(|p| p.error_code == NOT_CONTROLLER))
    })?;
    if resp.error_code != 0 {
        return Err(CliError::failure(format!(
            "cannot reassign {topic}-{partition}: {}",
            broker_message(resp.error_code, resp.error_message.as_deref())
        )));
    }
    let Some(p) = resp.responses.first().and_then(|t| t.partitions.first()) else {
        return Err(CliError::failure("the broker answered for no partition"));
    };
    let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    match (p.error_code, &target) {
        (0, Some(target)) => {
            eprintln!(
                "Reassignment of {topic}-{partition} from replicas {} to {} started. `fjord topics reassign --list` \
                 shows the moves in progress; this one is done when it is no longer listed.",
                list(&current),
                list(target)
            );
            if throttle.is_some() {
                eprintln!(
                    "Remove the throttle once it is done: fjord configs alter --broker-defaults --delete-config \
                     follower.replication.throttled.rate"
                );
            }
            Ok(())
        }
        (0, None) => {
            eprintln!("Reassignment of {topic}-{partition} cancelled.");
            Ok(())
        }
        (NO_REASSIGNMENT_IN_PROGRESS, None) => Err(CliError::failure(format!(
            "no reassignment of {topic}-{partition} is in progress; nothing to cancel"
        ))),
        (UNKNOWN_TOPIC_OR_PARTITION, _) => Err(missing_topic(topic)),
        (code, _) => Err(CliError::failure(format!(
            "cannot reassign {topic}-{partition}: {}",
            broker_message(code, p.error_message.as_deref())
        ))),
    }
}

/// `--throttle`: the cluster-wide follower rate, and the partition's new replicas named in the topic's
/// follower.replication.throttled.replicas (its current replicas in leader.replication.throttled.replicas).
fn set_throttle(
    client: &ClientArgs,
    topic: &str,
    partition: i32,
    current: &[i32],
    target: &[i32],
    rate: u64,
) -> Result<(), CliError> {
    let entries = |brokers: &mut dyn Iterator<Item = &i32>| {
        brokers
            .map(|b| format!("{partition}:{b}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let adding = entries(&mut target.iter().filter(|b| !current.contains(b)));
    let leading = entries(&mut current.iter());
    let op = |k: &str, v: &str| {
        AlterableConfig::default()
            .with_name(str_bytes(k))
            .with_config_operation(OP_SET)
            .with_value(Some(str_bytes(v)))
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(str_bytes(""))
            .with_configs(vec![
                op("follower.replication.throttled.rate", &rate.to_string()),
                op("leader.replication.throttled.rate", &rate.to_string()),
            ]),
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configs(vec![
                op("follower.replication.throttled.replicas", &adding),
                op("leader.replication.throttled.replicas", &leading),
            ]),
    ]);
    let resp = send_to_controller(client, &request, |r| {
        r.responses.iter().any(|t| t.error_code == NOT_CONTROLLER)
    })?;
    if let Some(r) = resp.responses.into_iter().find(|r| r.error_code != 0) {
        return Err(CliError::failure(format!(
            "cannot set the replication throttle (nothing was reassigned): {}",
            broker_message(r.error_code, r.error_message.as_deref())
        )));
    }
    eprintln!("Throttling the copy to the new replicas to {rate} bytes/s per broker.");
    Ok(())
}

/// `topics reassign --list`.
fn list_reassignments(
    client: &ClientArgs,
    topic: Option<&str>,
    output: Output,
) -> Result<(), CliError> {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(client.request_timeout_ms.min(i32::MAX as u64) as i32)
        .with_topics(None);
    let resp = send_to_controller(client, &request, |r| r.error_code == NOT_CONTROLLER)?;
    if resp.error_code != 0 {
        return Err(CliError::failure(format!(
            "cannot list reassignments: {}",
            broker_message(resp.error_code, resp.error_message.as_deref())
        )));
    }
    let ids =
        |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    let mut rows = Vec::new();
    for t in &resp.topics {
        if topic.is_some_and(|n| n != t.name.as_str()) {
            continue;
        }
        for p in &t.partitions {
            rows.push((
                t.name.to_string(),
                p.partition_index,
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            ));
        }
    }
    rows.sort();
    match output {
        Output::Json => {
            let docs: Vec<_> = rows
                .iter()
                .map(|(t, p, r, a, d)| {
                    json!({"topic": t, "partition": p, "replicas": r, "adding": a, "removing": d})
                })
                .collect();
            println!("{}", serde_json::Value::Array(docs));
        }
        Output::Text if rows.is_empty() => eprintln!("No reassignment in progress."),
        Output::Text => {
            let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            println!("TOPIC\tPARTITION\tREPLICAS\tADDING\tREMOVING");
            for (t, p, r, a, d) in &rows {
                println!("{t}\t{p}\t{}\t{}\t{}", list(r), list(a), list(d));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_and_whole_name_patterns_select_topics() {
        let all = names(&[
            "__consumer_offsets",
            "audit",
            "orders",
            "orders-eu",
            "ordersx",
        ]);
        let sel = |n: &[&str], internal: bool| select_topics(&names(n), &all, internal);
        assert_eq!(
            sel(&[], false).unwrap(),
            names(&["audit", "orders", "orders-eu", "ordersx"])
        );
        assert_eq!(sel(&["orders-.*"], false).unwrap(), names(&["orders-eu"]));
        // A pattern matches whole names: `orders` does not select orders-eu or ordersx.
        assert_eq!(sel(&["orders"], false).unwrap(), names(&["orders"]));
        assert_eq!(
            sel(&["orders|audit"], false).unwrap(),
            names(&["audit", "orders"])
        );
        assert_eq!(sel(&[".*"], false).unwrap().len(), 4);
        assert_eq!(sel(&[".*"], true).unwrap().len(), 5);
        assert_eq!(
            sel(&["__.*"], false).unwrap(),
            names(&["__consumer_offsets"])
        );
        assert_eq!(sel(&["nosuch"], false).unwrap_err().code, 4);
        assert_eq!(sel(&["nosuch.*x"], false).unwrap_err().code, 4);
        assert_eq!(sel(&["orders("], false).unwrap_err().code, 2);
    }
}
