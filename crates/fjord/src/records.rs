//! `fjord records delete`: move the log start of partitions forward, making the records before an offset
//! unreadable and their segments deletable (DeleteRecords, as kafka-delete-records.sh). Each partition's
//! request goes to its leader.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::{DeleteRecordsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::client::{CliError, ClientArgs};
use crate::groups::print_table;
use crate::ops::{bad_args, missing_topic, Cluster};
use crate::topics::Output;
use crate::wire::error_name;

/// Kafka's OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;

#[derive(Subcommand)]
pub enum RecordsCmd {
    /// Delete the records before an offset: the partition's log then starts there (its low watermark), and
    /// consumers cannot read anything earlier. Nothing can undo it.
    ///
    /// Example: fjord records delete --topic orders --partition 0 --before-offset 1000
    ///
    /// Example: fjord records delete --topic orders --before-offset end   # empty every partition
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct DeleteArgs {
    /// The topic whose records are deleted.
    #[arg(long, value_name = "TOPIC")]
    topic: String,
    /// A partition (repeatable); every partition of the topic when none is given.
    #[arg(long, short = 'p', value_name = "PARTITION")]
    partition: Vec<i32>,
    /// Delete every record before this offset: a number, or `end` for everything written so far (the high
    /// watermark).
    #[arg(long, value_name = "OFFSET|end")]
    before_offset: String,
    /// Output format: a table, or JSON.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(cmd: RecordsCmd) -> Result<(), CliError> {
    match cmd {
        RecordsCmd::Delete(args) => delete(args),
    }
}

fn delete(args: DeleteArgs) -> Result<(), CliError> {
    let client = &args.client;
    // DeleteRecords' "high watermark" offset.
    let offset: i64 = match args.before_offset.as_str() {
        "end" => -1,
        o => match o.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return Err(bad_args(format!(
                    "--before-offset `{o}` is not an offset: give a number of 0 or more, or `end`"
                )))
            }
        },
    };
    let cluster = Cluster::load(client, Some(std::slice::from_ref(&args.topic)))?;
    let topic = cluster
        .metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == args.topic))
        .filter(|t| t.error_code == 0 || !t.partitions.is_empty())
        .ok_or_else(|| missing_topic(&args.topic))?;
    let mut leaders: BTreeMap<i32, i32> = topic
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    if leaders.is_empty() {
        return Err(missing_topic(&args.topic));
    }
    if !args.partition.is_empty() {
        let count = leaders.len();
        for p in &args.partition {
            if !leaders.contains_key(p) {
                return Err(CliError::failure(format!(
                    "topic `{}` has no partition {p} (it has {count}: 0..{})",
                    args.topic,
                    count - 1
                )));
            }
        }
        leaders.retain(|p, _| args.partition.contains(p));
    }
    // One request per leader.
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (p, leader) in &leaders {
        by_leader.entry(*leader).or_default().push(*p);
    }
    let mut results: Vec<(i32, Result<i64, String>)> = Vec::new();
    let brokers = cluster.brokers.clone();
    let mut bootstrap = Some(cluster);
    for (leader, partitions) in by_leader {
        if leader < 0 || !brokers.contains_key(&leader) {
            for p in partitions {
                results.push((
                    p,
                    Err("the partition has no leader (it is offline); nothing was deleted".into()),
                ));
            }
            continue;
        }
        let mut conn = match bootstrap.take() {
            Some(c) if c.conn.addr() == brokers[&leader].0 => c.conn,
            other => {
                bootstrap = other;
                crate::wire::broker_connection(client, leader, &brokers[&leader].0)?
            }
        };
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(client.request_timeout_ms.min(i32::MAX as u64) as i32)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(args.topic.clone())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            DeleteRecordsPartition::default()
                                .with_partition_index(*p)
                                .with_offset(offset)
                        })
                        .collect(),
                )]);
        let (resp, _) = conn.send(&request)?;
        for t in resp.topics {
            for p in t.partitions {
                results.push((
                    p.partition_index,
                    match p.error_code {
                        0 => Ok(p.low_watermark),
                        OFFSET_OUT_OF_RANGE => Err(format!(
                            "offset {offset} is beyond the end of the partition; use a smaller offset, or `end`"
                        )),
                        c => Err(error_name(c)),
                    },
                ));
            }
        }
    }
    results.sort_by_key(|(p, _)| *p);
    match args.output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = results
                .iter()
                .map(|(p, r)| match r {
                    Ok(low) => json!({"topic": args.topic, "partition": p, "low_watermark": low}),
                    Err(e) => json!({"topic": args.topic, "partition": p, "error": e}),
                })
                .collect();
            println!("{}", serde_json::Value::Array(docs));
        }
        Output::Text => print_table(
            &["TOPIC", "PARTITION", "LOW-WATERMARK", "STATUS"],
            results
                .iter()
                .map(|(p, r)| {
                    vec![
                        args.topic.clone(),
                        p.to_string(),
                        r.as_ref().map_or("-".into(), i64::to_string),
                        match r {
                            Ok(_) => "Deleted".into(),
                            Err(e) => format!("Error: {e}"),
                        },
                    ]
                })
                .collect(),
        ),
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| format!("partition {p}: {e}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "records of {} of {} partitions of `{}` were not deleted: {}",
            failed.len(),
            results.len(),
            args.topic,
            failed.join("; ")
        )))
    }
}
