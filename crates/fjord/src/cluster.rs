//! `fjord cluster info`: the cluster id, the controller and the brokers (DescribeCluster, falling back to
//! Metadata for a broker without it), like `kafka-cluster.sh cluster-id` and `kafka-broker-api-versions.sh`
//! together, or `rpk cluster info`.

use clap::Subcommand;
use kafka_protocol::messages::DescribeClusterRequest;
use serde_json::json;

use crate::client::{CliError, ClientArgs};
use crate::groups::print_table;
use crate::ops::{broker_message, Cluster};
use crate::topics::Output;

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Show the cluster id, the controller and every broker with its address and rack.
    ///
    /// Example: fjord cluster info --output json
    Info {
        /// Output format: human-readable, or JSON.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: ClusterCmd) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Info { output, client } => info(&client, output),
    }
}

/// (id, host:port, rack) of a broker.
type Broker = (i32, String, Option<String>);

fn info(client: &ClientArgs, output: Output) -> Result<(), CliError> {
    let mut cluster = Cluster::load(client, Some(&[]))?;
    let (cluster_id, controller, mut brokers): (Option<String>, i32, Vec<Broker>) =
        if cluster.conn.version::<DescribeClusterRequest>().is_ok() {
            let (resp, _) = cluster.conn.send(&DescribeClusterRequest::default())?;
            if resp.error_code != 0 {
                return Err(CliError::failure(format!(
                    "the broker at {} cannot describe the cluster: {}",
                    cluster.conn.addr(),
                    broker_message(resp.error_code, resp.error_message.as_deref())
                )));
            }
            (
                Some(resp.cluster_id.to_string()),
                resp.controller_id.0,
                resp.brokers
                    .iter()
                    .map(|b| {
                        (
                            b.broker_id.0,
                            format!("{}:{}", b.host.as_str(), b.port),
                            b.rack.as_ref().map(|r| r.to_string()),
                        )
                    })
                    .collect(),
            )
        } else {
            (
                cluster.cluster_id.clone(),
                cluster.controller_id,
                cluster
                    .brokers
                    .iter()
                    .map(|(id, (addr, rack))| (*id, addr.clone(), rack.clone()))
                    .collect(),
            )
        };
    brokers.sort();
    let controller_addr = brokers
        .iter()
        .find(|b| b.0 == controller)
        .map(|b| b.1.clone());
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "cluster_id": cluster_id,
                "controller": if controller < 0 { None } else { Some(controller) },
                "brokers": brokers.iter().map(|(id, addr, rack)| json!({
                    "id": id, "address": addr, "rack": rack, "controller": *id == controller,
                })).collect::<Vec<_>>(),
            })
        ),
        Output::Text => {
            println!("Cluster ID:  {}", cluster_id.as_deref().unwrap_or("-"));
            println!(
                "Controller:  {}",
                match (&controller_addr, controller) {
                    (_, c) if c < 0 => "none (no controller is elected)".to_string(),
                    (Some(a), c) => format!("{c} ({a})"),
                    (None, c) => format!("{c}"),
                }
            );
            println!();
            print_table(
                &["ID", "ADDRESS", "RACK", "CONTROLLER"],
                brokers
                    .iter()
                    .map(|(id, addr, rack)| {
                        vec![
                            id.to_string(),
                            addr.clone(),
                            rack.clone().unwrap_or_else(|| "-".into()),
                            if *id == controller { "yes" } else { "" }.to_string(),
                        ]
                    })
                    .collect(),
            );
        }
    }
    Ok(())
}
