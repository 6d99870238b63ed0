//! `fjord transactions`: list and describe transactions and the producers of a partition, like Kafka's
//! kafka-transactions.sh (same columns, plus `--output json`). librdkafka has no API for these requests, so
//! they go over the raw Kafka protocol ([`crate::wire`]).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest,
    MetadataRequest, MetadataResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::client::{unknown_topic, CliError, ClientArgs};
use crate::groups::print_table;
use crate::topics::Output;
use crate::wire::{
    broker_connection, error_name, find_coordinator, retriable, Connection, RETRY_BACKOFF,
    TRANSACTION_KEY,
};

/// Transaction states (Kafka's names); `--state` takes them in any case.
const STATES: [&str; 8] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

#[derive(Subcommand)]
pub enum TransactionsCmd {
    /// List the transactional ids every broker's transaction coordinator knows, with producer id and state.
    ///
    /// Example: fjord transactions list --state ongoing --duration-ms 60000
    List {
        /// Only transactions in these states (comma-separated or repeated; case does not matter).
        #[arg(long, value_delimiter = ',', ignore_case = true, value_parser = STATES)]
        state: Vec<String>,
        /// Only transactions of these producer ids (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', value_name = "ID")]
        producer_id: Vec<i64>,
        /// Only transactions that have been open (Ongoing) for at least this long (KIP-994; needs a broker
        /// with ListTransactions v1).
        #[arg(long, alias = "duration-filter", value_name = "MS")]
        duration_ms: Option<i64>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one transactional id as its coordinator sees it: producer id and epoch, state, timeout, how long
    /// the current transaction has been open, and the partitions in it.
    ///
    /// Example: fjord transactions describe --transactional-id payments-writer-1
    Describe {
        #[arg(long, value_name = "ID")]
        transactional_id: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the producers with state on a partition (asked of its leader): epoch, last sequence and
    /// timestamp, and the first offset of an open transaction, to find what holds back read_committed
    /// consumers.
    ///
    /// Example: fjord transactions describe-producers --topic orders --partition 0
    DescribeProducers {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: TransactionsCmd) -> Result<(), CliError> {
    let (TransactionsCmd::List { client, .. }
    | TransactionsCmd::Describe { client, .. }
    | TransactionsCmd::DescribeProducers { client, .. }) = &cmd;
    if let Some(p) = client.client_properties.first() {
        // Silently dropping e.g. security settings would be worse than refusing.
        return Err(CliError::failure(format!(
            "-X `{p}`: `fjord transactions` speaks the Kafka protocol itself, not through librdkafka, and takes no -X properties"
        )));
    }
    match cmd {
        TransactionsCmd::List {
            state,
            producer_id,
            duration_ms,
            output,
            client,
        } => list(&client, &state, &producer_id, duration_ms, output),
        TransactionsCmd::Describe {
            transactional_id,
            output,
            client,
        } => describe(&client, &transactional_id, output),
        TransactionsCmd::DescribeProducers {
            topic,
            partition,
            output,
            client,
        } => describe_producers(&client, &topic, partition, output),
    }
}

// ---------------------------------------------------------------------------------------------------------
// list

struct Listed {
    transactional_id: String,
    coordinator: i32,
    producer_id: i64,
    state: String,
}

fn list(
    client: &ClientArgs,
    states: &[String],
    producer_ids: &[i64],
    duration_ms: Option<i64>,
    output: Output,
) -> Result<(), CliError> {
    if duration_ms.is_some_and(|d| d < 0) {
        return Err(CliError::failure(
            "--duration-ms must be zero or more milliseconds",
        ));
    }
    // Kafka's spelling of each state, whatever case was typed.
    let states: Vec<String> = states
        .iter()
        .map(|s| {
            STATES
                .iter()
                .find(|k| k.eq_ignore_ascii_case(s))
                .map_or_else(|| s.clone(), |k| k.to_string())
        })
        .collect();
    let request = ListTransactionsRequest::default()
        .with_state_filters(
            states
                .iter()
                .map(|s| StrBytes::from_string(s.clone()))
                .collect(),
        )
        .with_producer_id_filters(producer_ids.iter().map(|p| ProducerId(*p)).collect())
        .with_duration_filter(duration_ms.unwrap_or(-1));

    let mut bootstrap = Connection::bootstrap(client)?;
    let md = metadata(&mut bootstrap, None)?;
    let mut brokers: Vec<(i32, String)> = md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    brokers.sort();
    let mut rows = Vec::new();
    let mut warned = false;
    for (id, addr) in brokers {
        let mut conn = broker_connection(client, id, &addr)?;
        if duration_ms.is_some() && conn.version::<ListTransactionsRequest>()? < 1 {
            return Err(CliError::failure(format!(
                "broker {id} at {addr} does not support --duration-ms (it needs ListTransactions v1, KIP-994)"
            )));
        }
        let deadline = Instant::now() + client.timeout();
        let resp = loop {
            let (resp, _) = conn.send(&request)?;
            match resp.error_code {
                0 => break resp,
                c if retriable(c) && Instant::now() < deadline => std::thread::sleep(RETRY_BACKOFF),
                c => {
                    return Err(CliError::failure(format!(
                        "broker {id} at {addr} could not list its transactions: {}",
                        error_name(c)
                    )))
                }
            }
        };
        if !resp.unknown_state_filters.is_empty() && !warned {
            warned = true;
            let unknown: Vec<&str> = resp
                .unknown_state_filters
                .iter()
                .map(|s| s.as_str())
                .collect();
            eprintln!(
                "note: the broker does not know the state(s) {}",
                unknown.join(", ")
            );
        }
        rows.extend(resp.transaction_states.into_iter().map(|t| Listed {
            transactional_id: t.transactional_id.0.to_string(),
            coordinator: id,
            producer_id: t.producer_id.0,
            state: t.transaction_state.to_string(),
        }));
    }
    rows.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    match output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "transactional_id": r.transactional_id, "coordinator": r.coordinator,
                        "producer_id": r.producer_id, "state": r.state,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(docs));
        }
        Output::Text => print_table(
            &[
                "TransactionalId",
                "Coordinator",
                "ProducerId",
                "TransactionState",
            ],
            rows.into_iter()
                .map(|r| {
                    vec![
                        r.transactional_id,
                        r.coordinator.to_string(),
                        r.producer_id.to_string(),
                        r.state,
                    ]
                })
                .collect(),
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// describe

fn describe(client: &ClientArgs, transactional_id: &str, output: Output) -> Result<(), CliError> {
    let mut bootstrap = Connection::bootstrap(client)?;
    let deadline = Instant::now() + client.timeout();
    // A coordinator that is loading or has just moved asks to be found again.
    let (coordinator, state) = loop {
        let (id, addr) = find_coordinator(
            &mut bootstrap,
            TRANSACTION_KEY,
            "transactional id",
            transactional_id,
            deadline,
        )?;
        let mut conn = broker_connection(client, id, &addr)?;
        let (resp, _) = conn.send(
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
                StrBytes::from_string(transactional_id.to_string()),
            )]),
        )?;
        let state = resp
            .transaction_states
            .into_iter()
            .find(|s| s.transactional_id.0.as_str() == transactional_id)
            .ok_or_else(|| {
                CliError::failure(format!(
                    "the coordinator (broker {id} at {addr}) did not describe transactional id `{transactional_id}`"
                ))
            })?;
        match state.error_code {
            0 => break (id, state),
            c if c == E::TransactionalIdNotFound.code() => {
                return Err(CliError::failure(format!(
                    "transactional id `{transactional_id}` does not exist (its coordinator, broker {id}, knows no producer with it). \
                     List transactional ids with `fjord transactions list`."
                )))
            }
            c if retriable(c) && Instant::now() < deadline => std::thread::sleep(RETRY_BACKOFF),
            c => {
                return Err(CliError::failure(format!(
                    "cannot describe transactional id `{transactional_id}`: {}",
                    error_name(c)
                )))
            }
        }
    };
    let start = (state.transaction_start_time_ms >= 0).then_some(state.transaction_start_time_ms);
    let duration = start.map(|s| (now_ms() - s).max(0));
    let mut partitions: Vec<(String, i32)> = state
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
        .collect();
    partitions.sort();
    match output {
        Output::Json => {
            let parts: Vec<serde_json::Value> = partitions
                .iter()
                .map(|(t, p)| json!({"topic": t, "partition": p}))
                .collect();
            println!(
                "{}",
                json!({
                    "coordinator_id": coordinator, "transactional_id": transactional_id,
                    "producer_id": state.producer_id.0, "producer_epoch": state.producer_epoch,
                    "state": state.transaction_state.as_str(),
                    "transaction_timeout_ms": state.transaction_timeout_ms,
                    "current_transaction_start_time_ms": start, "transaction_duration_ms": duration,
                    "topic_partitions": parts,
                })
            );
        }
        Output::Text => {
            let tps: Vec<String> = partitions.iter().map(|(t, p)| format!("{t}-{p}")).collect();
            print_table(
                &[
                    "CoordinatorId",
                    "TransactionalId",
                    "ProducerId",
                    "ProducerEpoch",
                    "TransactionState",
                    "TransactionTimeoutMs",
                    "CurrentTransactionStartTimeMs",
                    "TransactionDurationMs",
                    "TopicPartitions",
                ],
                vec![vec![
                    coordinator.to_string(),
                    transactional_id.to_string(),
                    state.producer_id.0.to_string(),
                    state.producer_epoch.to_string(),
                    state.transaction_state.to_string(),
                    state.transaction_timeout_ms.to_string(),
                    none_if_absent(start),
                    none_if_absent(duration),
                    tps.join(","),
                ]],
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// describe-producers

fn describe_producers(
    client: &ClientArgs,
    topic: &str,
    partition: i32,
    output: Output,
) -> Result<(), CliError> {
    let mut bootstrap = Connection::bootstrap(client)?;
    let deadline = Instant::now() + client.timeout();
    let producers = loop {
        let md = metadata(&mut bootstrap, Some(topic))?;
        let t = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
        let Some(t) = t.filter(|t| t.error_code == 0 && !t.partitions.is_empty()) else {
            return Err(unknown_topic(topic));
        };
        let Some(p) = t.partitions.iter().find(|p| p.partition_index == partition) else {
            return Err(CliError::failure(format!(
                "topic `{topic}` has no partition {partition} (it has {})",
                t.partitions.len()
            )));
        };
        let leader = md.brokers.iter().find(|b| b.node_id == p.leader_id);
        let Some(leader) = leader.filter(|_| p.leader_id != BrokerId(-1)) else {
            if Instant::now() < deadline {
                std::thread::sleep(RETRY_BACKOFF);
                continue;
            }
            return Err(CliError::failure(format!(
                "partition {topic}-{partition} has no leader right now; try again later"
            )));
        };
        let (id, addr) = (
            leader.node_id.0,
            format!("{}:{}", leader.host.as_str(), leader.port),
        );
        let mut conn = broker_connection(client, id, &addr)?;
        let (resp, _) = conn.send(&DescribeProducersRequest::default().with_topics(
            vec![TopicRequest::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![partition])],
        ))?;
        let p = resp
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                CliError::failure(format!(
                    "broker {id} at {addr} did not describe partition {topic}-{partition}"
                ))
            })?;
        match p.error_code {
            0 => break p.active_producers,
            c if retriable(c) && Instant::now() < deadline => std::thread::sleep(RETRY_BACKOFF),
            c => {
                let detail = p
                    .error_message
                    .map_or_else(String::new, |m| format!(" ({})", m.as_str()));
                return Err(CliError::failure(format!(
                    "broker {id} at {addr} could not describe the producers of {topic}-{partition}: {}{detail}",
                    error_name(c)
                )));
            }
        }
    };
    let opt = |v: i64| (v >= 0).then_some(v);
    match output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = producers
                .iter()
                .map(|p| {
                    json!({
                        "producer_id": p.producer_id.0, "producer_epoch": p.producer_epoch,
                        "latest_coordinator_epoch": opt(p.coordinator_epoch.into()),
                        "last_sequence": p.last_sequence, "last_timestamp": p.last_timestamp,
                        "current_transaction_start_offset": opt(p.current_txn_start_offset),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(docs));
        }
        Output::Text => print_table(
            &[
                "ProducerId",
                "ProducerEpoch",
                "LatestCoordinatorEpoch",
                "LastSequence",
                "LastTimestamp",
                "CurrentTransactionStartOffset",
            ],
            producers
                .iter()
                .map(|p| {
                    vec![
                        p.producer_id.0.to_string(),
                        p.producer_epoch.to_string(),
                        none_if_absent(opt(p.coordinator_epoch.into())),
                        p.last_sequence.to_string(),
                        p.last_timestamp.to_string(),
                        none_if_absent(opt(p.current_txn_start_offset)),
                    ]
                })
                .collect(),
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// shared

/// Cluster metadata: the brokers, and `topic` if given (never auto-created).
fn metadata(conn: &mut Connection, topic: Option<&str>) -> Result<MetadataResponse, CliError> {
    let topics = topic.map(|t| {
        vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))]
    });
    // An empty list asks for no topics (v0, which has no null list, reads it as "all topics"); the brokers
    // come back either way. Before v4 the request cannot say "do not auto-create".
    let version = conn.version::<MetadataRequest>()?;
    let (md, _) = conn.send(
        &MetadataRequest::default()
            .with_topics(Some(topics.unwrap_or_default()))
            .with_allow_auto_topic_creation(version < 4),
    )?;
    Ok(md)
}

/// Kafka's rendering of an absent value.
fn none_if_absent(v: Option<i64>) -> String {
    v.map_or_else(|| "None".to_string(), |v| v.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_values_print_as_none() {
        assert_eq!(none_if_absent(None), "None");
        assert_eq!(none_if_absent(Some(0)), "0");
    }
}
