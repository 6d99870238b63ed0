//! `fjord configs`: describe and alter the configs of a topic, a broker, or the cluster-wide broker defaults
//! (kafka-configs.sh --entity-type topics|brokers [--entity-default]). Spoken in the Kafka protocol itself
//! (`wire`), so that a refusal reaches the user in the broker's words.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::client::{CliError, ClientArgs};
use crate::groups::print_table;
use crate::ops::{
    bad_args, broker_message, missing_topic, send_to_controller, Cluster, NOT_CONTROLLER,
};
use crate::topics::{Output, RESOURCE_TOPIC};

const RESOURCE_BROKER: i8 = 4;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

#[derive(Subcommand)]
pub enum ConfigsCmd {
    /// Show the configs of a topic, a broker, or the cluster-wide broker defaults: by default those set on it
    /// (a topic's overrides, a broker's dynamic configs), with --all every config and where its value comes
    /// from.
    ///
    /// Example: fjord configs describe --topic orders --all
    ///
    /// Example: fjord configs describe --broker 1
    Describe {
        #[command(flatten)]
        target: Target,
        /// Show every config, not only those set on the topic or broker.
        #[arg(long)]
        all: bool,
        /// Output format: a table, or JSON.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set or delete configs of a topic, a broker, or the cluster-wide broker defaults. A broker's dynamic
    /// configs are the defaults of topic configs (log.retention.ms, log.segment.bytes, ...); every other broker
    /// config is set in server.properties.
    ///
    /// Example: fjord configs alter --topic orders --add-config retention.ms=3600000 --delete-config segment.ms
    ///
    /// Example: fjord configs alter --broker-defaults --add-config log.retention.ms=86400000
    Alter {
        #[command(flatten)]
        target: Target,
        /// Set a config, KEY=VALUE (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        add_config: Vec<String>,
        /// Remove a config so that the next level's value applies again (repeatable).
        #[arg(long, value_name = "KEY")]
        delete_config: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What the configs belong to.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A topic.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// A broker, by id (see `fjord cluster info`).
    #[arg(long, value_name = "ID")]
    broker: Option<i32>,
    /// The defaults every broker of the cluster shares (kafka-configs.sh --entity-default).
    #[arg(long)]
    broker_defaults: bool,
}

impl Target {
    fn resource(&self) -> (i8, String) {
        match (&self.topic, self.broker) {
            (Some(t), _) => (RESOURCE_TOPIC, t.clone()),
            (None, Some(b)) => (RESOURCE_BROKER, b.to_string()),
            (None, None) => (RESOURCE_BROKER, String::new()),
        }
    }

    fn describe(&self) -> String {
        match (&self.topic, self.broker) {
            (Some(t), _) => format!("topic {t}"),
            (None, Some(b)) => format!("broker {b}"),
            (None, None) => "the cluster-wide broker defaults".to_string(),
        }
    }
}

/// One config as DescribeConfigs reports it.
struct Entry {
    name: String,
    value: Option<String>,
    source: i8,
    read_only: bool,
    sensitive: bool,
}

/// Kafka's names of DescribeConfigs sources.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Set on this very resource: a topic override, or a broker's (or the defaults') dynamic config.
fn set_here(resource_type: i8, name: &str, source: i8) -> bool {
    match resource_type {
        RESOURCE_TOPIC => source == 1,
        _ if name.is_empty() => source == 3,
        _ => source == 2,
    }
}

pub fn run(cmd: ConfigsCmd) -> Result<(), CliError> {
    match cmd {
        ConfigsCmd::Describe {
            target,
            all,
            output,
            client,
        } => describe(&client, &target, all, output),
        ConfigsCmd::Alter {
            target,
            add_config,
            delete_config,
            client,
        } => alter(&client, &target, &add_config, &delete_config),
    }
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// DescribeConfigs of one resource, asked of the broker that can answer it (a broker's own configs only that
/// broker knows).
fn describe_configs(client: &ClientArgs, target: &Target) -> Result<Vec<Entry>, CliError> {
    let (ty, name) = target.resource();
    let cluster = Cluster::load(client, Some(&[]))?;
    let mut conn = match target.broker {
        Some(id) => cluster.connect(client, id)?,
        None => cluster.conn,
    };
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(str_bytes(&name))
            .with_configuration_keys(None)]);
    let (resp, _) = conn.send(&request)?;
    let Some(result) = resp.results.into_iter().next() else {
        return Err(CliError::failure("the broker returned no configs"));
    };
    match result.error_code {
        0 => {}
        UNKNOWN_TOPIC_OR_PARTITION if ty == RESOURCE_TOPIC => return Err(missing_topic(&name)),
        code => {
            return Err(CliError::failure(format!(
                "cannot read the configs of {}: {}",
                target.describe(),
                broker_message(code, result.error_message.as_deref())
            )))
        }
    }
    let mut entries: Vec<Entry> = result
        .configs
        .into_iter()
        .map(|c| Entry {
            name: c.name.to_string(),
            value: c.value.map(|v| v.to_string()),
            source: c.config_source,
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn describe(
    client: &ClientArgs,
    target: &Target,
    all: bool,
    output: Output,
) -> Result<(), CliError> {
    let (ty, name) = target.resource();
    let entries: Vec<Entry> = describe_configs(client, target)?
        .into_iter()
        .filter(|e| all || set_here(ty, &name, e.source))
        .collect();
    let shown = |e: &Entry| -> Option<String> {
        if e.sensitive {
            None
        } else {
            e.value.clone()
        }
    };
    match output {
        Output::Json => {
            let docs: BTreeMap<&str, serde_json::Value> = entries
                .iter()
                .map(|e| {
                    (
                        e.name.as_str(),
                        json!({"value": shown(e), "source": source_name(e.source),
                               "read_only": e.read_only, "sensitive": e.sensitive}),
                    )
                })
                .collect();
            println!("{}", json!(docs));
        }
        Output::Text => {
            if entries.is_empty() {
                eprintln!(
                    "No configs are set on {} (add --all to see every config and its default).",
                    target.describe()
                );
                return Ok(());
            }
            let mut headers = vec!["NAME", "VALUE", "SOURCE"];
            if all && ty != RESOURCE_TOPIC {
                headers.push("DYNAMIC");
            }
            print_table(
                &headers,
                entries
                    .iter()
                    .map(|e| {
                        let mut row = vec![
                            e.name.clone(),
                            shown(e).unwrap_or_else(|| {
                                if e.sensitive { "(sensitive)" } else { "-" }.into()
                            }),
                            source_name(e.source).to_string(),
                        ];
                        if all && ty != RESOURCE_TOPIC {
                            row.push(if e.read_only { "no" } else { "yes" }.into());
                        }
                        row
                    })
                    .collect(),
            );
        }
    }
    Ok(())
}

fn alter(
    client: &ClientArgs,
    target: &Target,
    add: &[String],
    delete: &[String],
) -> Result<(), CliError> {
    if add.is_empty() && delete.is_empty() {
        return Err(bad_args(format!(
            "nothing to change on {}: give --add-config KEY=VALUE or --delete-config KEY",
            target.describe()
        )));
    }
    let mut set = BTreeMap::new();
    for p in add {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| bad_args(format!("--add-config `{p}` is not KEY=VALUE")))?;
        let (k, v) = (k.trim(), v.trim());
        if set.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad_args(format!("--add-config names `{k}` more than once")));
        }
    }
    for k in delete {
        if set.contains_key(k) {
            return Err(bad_args(format!(
                "`{k}` is both set (--add-config) and deleted (--delete-config)"
            )));
        }
    }
    let (ty, name) = target.resource();
    if ty == RESOURCE_TOPIC {
        // Checked here too, for the reason and a pointer to the names.
        for (k, v) in &set {
            fjord_broker::config::validate_topic_config(k, v).map_err(|e| {
                bad_args(format!(
                    "{e}. See `fjord configs describe --topic {name} --all` for names and values."
                ))
            })?;
        }
    }
    // Deleting a config that is not set would change nothing; say so instead of pretending.
    if !delete.is_empty() {
        let entries = describe_configs(client, target)?;
        // The defaults list only what is set there, so a name missing from it is simply not set.
        let defaults = ty == RESOURCE_BROKER && name.is_empty();
        let unknown: Vec<&str> = delete
            .iter()
            .filter(|k| !defaults && !entries.iter().any(|e| &e.name == *k))
            .map(String::as_str)
            .collect();
        if let Some(k) = unknown.first() {
            return Err(bad_args(format!(
                "--delete-config `{k}`: {} has no such config. See `fjord configs describe {} --all`.",
                target.describe(),
                target_flag(target)
            )));
        }
        let unset: Vec<&str> = delete
            .iter()
            .filter(|k| {
                !entries
                    .iter()
                    .any(|e| &e.name == *k && set_here(ty, &name, e.source))
            })
            .map(String::as_str)
            .collect();
        if !unset.is_empty() {
            return Err(CliError::failure(format!(
                "cannot delete {} of {}: not set there (its value comes from {}); nothing was changed",
                unset
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                target.describe(),
                if ty == RESOURCE_TOPIC {
                    "the broker"
                } else {
                    "server.properties or the built-in default"
                }
            )));
        }
    }
    let mut ops: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(OP_SET)
                .with_value(Some(str_bytes(v)))
        })
        .collect();
    ops.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(str_bytes(k))
            .with_config_operation(OP_DELETE)
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(ty)
            .with_resource_name(str_bytes(&name))
            .with_configs(ops),
    ]);
    let resp = send_to_controller(client, &request, |r| {
        r.responses.iter().any(|x| x.error_code == NOT_CONTROLLER)
    })?;
    if let Some(r) = resp.responses.into_iter().find(|r| r.error_code != 0) {
        if r.error_code == UNKNOWN_TOPIC_OR_PARTITION && ty == RESOURCE_TOPIC {
            return Err(missing_topic(&name));
        }
        return Err(CliError::failure(format!(
            "cannot change the configs of {}: {}",
            target.describe(),
            broker_message(r.error_code, r.error_message.as_deref())
        )));
    }
    eprintln!("Updated the configs of {}.", target.describe());
    Ok(())
}

fn target_flag(target: &Target) -> String {
    match (&target.topic, target.broker) {
        (Some(t), _) => format!("--topic {t}"),
        (None, Some(b)) => format!("--broker {b}"),
        (None, None) => "--broker-defaults".into(),
    }
}
