//! `fjord topics`: create, list, describe, alter and delete topics (kafka-topics.sh, with clearer errors and
//! `--output json`).

use std::collections::BTreeMap;

use clap::{Subcommand, ValueEnum};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde_json::json;

use crate::client::{describe_code, unknown_topic, CliError, ClientArgs};

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
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Copies of each partition (default: the broker's default.replication.factor).
        #[arg(long, short = 'r')]
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
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show partitions (leader, replicas, ISR, offsets) and configs of topics (all non-internal topics when
    /// none named).
    ///
    /// Example: fjord topics describe orders
    Describe {
        names: Vec<String>,
        /// Show every config, not only those set on the topic.
        #[arg(long)]
        all_configs: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a topic's partition count or configs.
    ///
    /// Example: fjord topics alter orders --partitions 12 --config retention.ms=3600000 --delete-config segment.ms
    Alter {
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
        #[arg(required = true)]
        names: Vec<String>,
        /// Succeed quietly when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn parse_configs(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::failure(format!("--config `{p}` is not KEY=VALUE")))?;
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
        } => {
            let configs = parse_configs(&config)?;
            // Fail fast with the usual message when nothing listens.
            client.metadata(&client.consumer()?, None)?;
            let admin = admin(&client)?;
            let mut topic = NewTopic::new(
                &name,
                partitions.unwrap_or(-1),
                TopicReplication::Fixed(replication_factor.unwrap_or(-1)),
            );
            for (k, v) in &configs {
                topic = topic.set(k, v);
            }
            let res = admin
                .create_topics([&topic], &opts(&client))
                .await
                .map_err(|e| client.transport_error(e))?;
            match res.into_iter().next() {
                Some(Ok(_)) => {
                    eprintln!("Created topic {name}.");
                    Ok(())
                }
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if if_not_exists => Ok(()),
                Some(Err((_, code))) => Err(CliError::failure(create_error(&name, code))),
                None => Err(CliError::failure("the broker returned no result")),
            }
        }
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
            output,
            client,
        } => describe(&client, names, all_configs, output).await,
        TopicsCmd::Alter {
            name,
            partitions,
            config,
            delete_config,
            client,
        } => {
            let consumer = client.consumer()?;
            let md = client.require_topic(&consumer, &name)?;
            let admin = admin(&client)?;
            if let Some(n) = partitions {
                let current = md.topics()[0].partitions().len();
                if n <= current {
                    return Err(CliError::failure(format!(
                        "topic `{name}` has {current} partitions; --partitions must be larger (partitions can only be added)"
                    )));
                }
                let res = admin
                    .create_partitions([&NewPartitions::new(&name, n)], &opts(&client))
                    .await
                    .map_err(|e| client.transport_error(e))?;
                if let Some(Err((_, code))) = res.into_iter().next() {
                    return Err(CliError::failure(format!(
                        "cannot add partitions to `{name}`: {}",
                        describe_code(code)
                    )));
                }
                eprintln!("Topic {name} now has {n} partitions.");
            }
            if !config.is_empty() || !delete_config.is_empty() {
                let set = parse_configs(&config)?;
                // AlterConfigs replaces the whole override set: start from the current overrides.
                let mut overrides = topic_overrides(&admin, &client, &name).await?;
                for k in &delete_config {
                    if overrides.remove(k).is_none() {
                        eprintln!("note: `{k}` was not set on topic {name}");
                    }
                }
                overrides.extend(set);
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&name));
                for (k, v) in &overrides {
                    alter = alter.set(k, v);
                }
                let res = admin
                    .alter_configs([&alter], &opts(&client))
                    .await
                    .map_err(|e| client.transport_error(e))?;
                if let Some(Err((_, code))) = res.into_iter().next() {
                    return Err(CliError::failure(format!(
                        "cannot change configs of `{name}`: {}",
                        describe_code(code)
                    )));
                }
                eprintln!("Updated configs of topic {name}.");
            }
            Ok(())
        }
        TopicsCmd::Delete {
            names,
            if_exists,
            client,
        } => {
            client.metadata(&client.consumer()?, None)?;
            let admin = admin(&client)?;
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let res = admin
                .delete_topics(&refs, &opts(&client))
                .await
                .map_err(|e| client.transport_error(e))?;
            let mut failed = None;
            for r in res {
                match r {
                    Ok(n) => eprintln!("Deleted topic {n}."),
                    Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) if if_exists => {}
                    Err((n, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                        failed = Some(unknown_topic(&n))
                    }
                    Err((n, code)) => {
                        failed = Some(CliError::failure(format!(
                            "cannot delete `{n}`: {}",
                            describe_code(code)
                        )))
                    }
                }
            }
            failed.map_or(Ok(()), Err)
        }
    }
}

/// Kafka's internal topics (`__consumer_offsets`, `__transaction_state`) start with two underscores.
fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

fn create_error(name: &str, code: RDKafkaErrorCode) -> String {
    match code {
        RDKafkaErrorCode::TopicAlreadyExists => format!("topic `{name}` already exists (use --if-not-exists to ignore)"),
        RDKafkaErrorCode::InvalidTopic => format!(
            "`{name}` is not a valid topic name: use 1-249 characters from a-z, A-Z, 0-9, '.', '_' and '-'"
        ),
        RDKafkaErrorCode::InvalidReplicationFactor => {
            "the replication factor is larger than the number of brokers (or not positive)".to_string()
        }
        RDKafkaErrorCode::InvalidPartitions => "the partition count must be positive".to_string(),
        other => format!("cannot create `{name}`: {}", describe_code(other)),
    }
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
        Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) => Err(unknown_topic(name)),
        Some(Err(code)) => Err(CliError::failure(format!(
            "cannot read configs of `{name}`: {}",
            describe_code(code)
        ))),
        None => Err(CliError::failure("the broker returned no configs")),
    }
}

async fn describe(
    client: &ClientArgs,
    names: Vec<String>,
    all: bool,
    output: Output,
) -> Result<(), CliError> {
    let consumer = client.consumer()?;
    let md = client.metadata(&consumer, None)?;
    let mut topics: Vec<_> = md.topics().iter().collect();
    topics.sort_by_key(|t| t.name());
    if names.is_empty() {
        topics.retain(|t| !is_internal(t.name()));
    } else {
        if let Some(missing) = names
            .iter()
            .find(|n| !topics.iter().any(|t| t.name() == n.as_str()))
        {
            return Err(unknown_topic(missing));
        }
        topics.retain(|t| names.iter().any(|n| n == t.name()));
    }
    let admin = admin(client)?;
    let mut docs = Vec::new();
    for t in topics {
        let mut parts = Vec::new();
        for p in t.partitions() {
            let (low, high) = rdkafka::consumer::Consumer::fetch_watermarks(
                &consumer,
                t.name(),
                p.id(),
                client.timeout(),
            )
            .map_err(|e| client.transport_error(e))?;
            parts.push(json!({
                "partition": p.id(), "leader": p.leader(), "replicas": p.replicas(), "isr": p.isr(),
                "low_offset": low, "high_offset": high, "messages": high - low,
            }));
        }
        let configs: BTreeMap<String, serde_json::Value> = topic_configs(&admin, client, t.name())
            .await?
            .into_iter()
            .filter(|(_, (_, src))| all || *src == "topic")
            .map(|(k, (v, src))| (k, json!({"value": v, "source": src})))
            .collect();
        let rf = t.partitions().first().map_or(0, |p| p.replicas().len());
        docs.push(json!({
            "topic": t.name(), "partitions": parts, "replication_factor": rf, "configs": configs,
        }));
    }
    match output {
        Output::Json => println!("{}", serde_json::Value::Array(docs)),
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
                    println!(
                        "\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}\tOffsets: {}..{}",
                        p["partition"],
                        p["leader"],
                        p["replicas"],
                        p["isr"],
                        p["low_offset"],
                        p["high_offset"]
                    );
                }
            }
        }
    }
    Ok(())
}
