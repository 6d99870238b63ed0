//! `fjord cluster info`: the cluster id, the controller and the brokers (DescribeCluster, falling back to
//! Metadata for a broker without it), like `kafka-cluster.sh cluster-id` and `kafka-broker-api-versions.sh`
//! together, or `rpk cluster info`.
//!
//! `fjord cluster status`: the health of the cluster in one look: every broker live or fenced (DescribeCluster
//! v2 with the fenced ones), the controller quorum with each voter's lag (DescribeQuorum, as
//! `kafka-metadata-quorum.sh describe --status --replication`), and the partitions that are under-replicated or
//! offline (Metadata, as `kafka-topics.sh --describe --under-replicated-partitions / --unavailable-partitions`).

use clap::Subcommand;
use std::collections::BTreeMap;

use kafka_protocol::messages::{DescribeClusterRequest, DescribeQuorumRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
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
    /// Show the health of the cluster: brokers (live or fenced), the controller quorum (raft leader, epoch,
    /// each voter's lag) and the partitions that are under-replicated or offline.
    ///
    /// Exits with 5 when a partition is offline (no leader) or the controller quorum has no leader, so that
    /// scripts and health checks can act on it; under-replicated partitions alone exit 0.
    ///
    /// Example: fjord cluster status --bootstrap-server 127.0.0.1:9092,127.0.0.1:9093 --output json
    Status {
        /// Output format: human-readable, or JSON.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a running controller a voter of the metadata quorum (KIP-853's AddRaftVoter, as
    /// `kafka-metadata-quorum.sh add-controller`). The controller must already run: started outside the voter
    /// set, it joined the quorum as an observer and catches up before it votes.
    ///
    /// Example: fjord cluster add-voter --id 4 --controller 10.0.0.4:9093 --bootstrap-server 127.0.0.1:9092
    AddVoter {
        /// The node id of the controller to add.
        #[arg(long)]
        id: i32,
        /// Its controller listener, host:port.
        #[arg(long)]
        controller: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a voter out of the metadata quorum (KIP-853's RemoveRaftVoter, as
    /// `kafka-metadata-quorum.sh remove-controller`); while it runs it stays an observer.
    ///
    /// Example: fjord cluster remove-voter --id 4 --bootstrap-server 127.0.0.1:9092
    RemoveVoter {
        /// The node id of the voter to remove.
        #[arg(long)]
        id: i32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Exit code of `cluster status` when some partitions are offline or the quorum has no leader.
pub const EXIT_UNHEALTHY: u8 = 5;

pub fn run(cmd: ClusterCmd) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Info { output, client } => info(&client, output),
        ClusterCmd::Status { output, client } => status(&client, output),
        ClusterCmd::AddVoter {
            id,
            controller,
            client,
        } => add_voter(&client, id, &controller),
        ClusterCmd::RemoveVoter { id, client } => remove_voter(&client, id),
    }
}

/// Sends AddRaftVoter to the bootstrap broker, which forwards it to the quorum's leader.
fn add_voter(client: &ClientArgs, id: i32, controller: &str) -> Result<(), CliError> {
    use kafka_protocol::messages::add_raft_voter_request::Listener;
    use kafka_protocol::messages::AddRaftVoterRequest;
    let (host, port) = controller
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            CliError::bad_args(format!("--controller `{controller}` is not host:port"))
        })?;
    let mut cluster = Cluster::load(client, Some(&[]))?;
    if cluster.conn.version::<AddRaftVoterRequest>().is_err() {
        return Err(CliError::failure("the broker does not serve AddRaftVoter"));
    }
    let request = AddRaftVoterRequest::default()
        .with_cluster_id(cluster.cluster_id.clone().map(StrBytes::from_string))
        .with_timeout_ms(i32::try_from(client.timeout().as_millis()).unwrap_or(i32::MAX))
        .with_voter_id(id)
        .with_listeners(vec![Listener::default()
            .with_name(StrBytes::from_static_str("CONTROLLER"))
            .with_host(StrBytes::from_string(host.to_string()))
            .with_port(port)]);
    let (resp, _) = cluster.conn.send(&request)?;
    if resp.error_code != 0 {
        return Err(CliError::failure(format!(
            "could not add voter {id}: {}",
            broker_message(resp.error_code, resp.error_message.as_deref())
        )));
    }
    println!("node {id} ({host}:{port}) is a voter of the metadata quorum");
    Ok(())
}

/// Sends RemoveRaftVoter to the bootstrap broker, which forwards it to the quorum's leader.
fn remove_voter(client: &ClientArgs, id: i32) -> Result<(), CliError> {
    use kafka_protocol::messages::RemoveRaftVoterRequest;
    let mut cluster = Cluster::load(client, Some(&[]))?;
    if cluster.conn.version::<RemoveRaftVoterRequest>().is_err() {
        return Err(CliError::failure(
            "the broker does not serve RemoveRaftVoter",
        ));
    }
    let request = RemoveRaftVoterRequest::default()
        .with_cluster_id(cluster.cluster_id.clone().map(StrBytes::from_string))
        .with_voter_id(id);
    let (resp, _) = cluster.conn.send(&request)?;
    if resp.error_code != 0 {
        return Err(CliError::failure(format!(
            "could not remove voter {id}: {}",
            broker_message(resp.error_code, resp.error_message.as_deref())
        )));
    }
    println!("node {id} is no longer a voter of the metadata quorum");
    Ok(())
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

/// A broker as `cluster status` shows it.
struct BrokerRow {
    id: i32,
    address: Option<String>,
    rack: Option<String>,
    /// "live", "fenced" (registered, not heartbeating or shut down) or "unknown" (only named as a replica).
    state: &'static str,
}

/// A partition that is not fully healthy.
struct PartitionRow {
    topic: String,
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline_replicas: Vec<i32>,
}

/// One metadata-log replica from DescribeQuorum.
struct VoterRow {
    id: i32,
    log_end_offset: i64,
    /// Behind the leader's log end, in raft entries.
    lag: i64,
    last_fetch_ago_ms: Option<i64>,
    last_caught_up_ago_ms: Option<i64>,
}

struct QuorumView {
    leader: i32,
    epoch: i32,
    high_watermark: i64,
    voters: Vec<VoterRow>,
    observers: Vec<VoterRow>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// DescribeQuorum for `__cluster_metadata` partition 0; `Err` says why there is no answer (a broker
/// without the API, or no leader).
fn describe_quorum(cluster: &mut Cluster) -> Result<QuorumView, String> {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    if cluster.conn.version::<DescribeQuorumRequest>().is_err() {
        return Err("the broker does not serve DescribeQuorum".into());
    }
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let (resp, _) = cluster.conn.send(&request).map_err(|e| e.message)?;
    if resp.error_code != 0 {
        return Err(broker_message(
            resp.error_code,
            resp.error_message.as_deref(),
        ));
    }
    let p = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("the broker's DescribeQuorum answer names no partition")?;
    if p.error_code != 0 {
        return Err(broker_message(p.error_code, p.error_message.as_deref()));
    }
    let now = now_ms();
    let leader_end = p
        .current_voters
        .iter()
        .find(|r| r.replica_id == p.leader_id)
        .map_or(p.high_watermark, |r| r.log_end_offset);
    let ago = |t: i64| (t >= 0).then(|| (now - t).max(0));
    let rows = |rs: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
        let mut rows: Vec<VoterRow> = rs
            .iter()
            .map(|r| VoterRow {
                id: r.replica_id.0,
                log_end_offset: r.log_end_offset,
                lag: (leader_end - r.log_end_offset).max(0),
                last_fetch_ago_ms: ago(r.last_fetch_timestamp),
                last_caught_up_ago_ms: ago(r.last_caught_up_timestamp),
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    };
    Ok(QuorumView {
        leader: p.leader_id.0,
        epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters: rows(&p.current_voters),
        observers: rows(&p.observers),
    })
}

fn status(client: &ClientArgs, output: Output) -> Result<(), CliError> {
    let mut cluster = Cluster::load(client, None)?;
    // Brokers: with DescribeCluster v2 the fenced ones too; otherwise the live ones Metadata lists.
    let mut brokers: BTreeMap<i32, BrokerRow> = BTreeMap::new();
    let mut cluster_id = cluster.cluster_id.clone();
    let mut controller = cluster.controller_id;
    let described = match cluster.conn.version::<DescribeClusterRequest>() {
        Ok(v) if v >= 2 => {
            let (resp, _) = cluster
                .conn
                .send(&DescribeClusterRequest::default().with_include_fenced_brokers(true))?;
            (resp.error_code == 0).then_some(resp)
        }
        _ => None,
    };
    match described {
        Some(resp) => {
            cluster_id = Some(resp.cluster_id.to_string());
            controller = resp.controller_id.0;
            for b in &resp.brokers {
                brokers.insert(
                    b.broker_id.0,
                    BrokerRow {
                        id: b.broker_id.0,
                        address: Some(format!("{}:{}", b.host.as_str(), b.port)),
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                        state: if b.is_fenced { "fenced" } else { "live" },
                    },
                );
            }
        }
        None => {
            for (id, (addr, rack)) in &cluster.brokers {
                brokers.insert(
                    *id,
                    BrokerRow {
                        id: *id,
                        address: Some(addr.clone()),
                        rack: rack.clone(),
                        state: "live",
                    },
                );
            }
        }
    }
    // Partitions, and any replica of a broker that is not listed at all.
    let mut total = 0usize;
    let mut topics = 0usize;
    let mut under: Vec<PartitionRow> = Vec::new();
    let mut offline: Vec<PartitionRow> = Vec::new();
    for t in &cluster.metadata.topics {
        let Some(name) = t.name.as_ref().map(|n| n.to_string()) else {
            continue;
        };
        topics += 1;
        for p in &t.partitions {
            total += 1;
            let row = PartitionRow {
                topic: name.clone(),
                partition: p.partition_index,
                leader: p.leader_id.0,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
            };
            for r in &row.replicas {
                brokers.entry(*r).or_insert(BrokerRow {
                    id: *r,
                    address: None,
                    rack: None,
                    state: "unknown",
                });
            }
            if row.leader < 0 {
                offline.push(row);
            } else if row.isr.len() < row.replicas.len() {
                under.push(row);
            }
        }
    }
    let key = |r: &PartitionRow| (r.topic.clone(), r.partition);
    under.sort_by_key(key);
    offline.sort_by_key(key);
    let quorum = describe_quorum(&mut cluster);
    let quorum_leaderless = matches!(&quorum, Ok(q) if q.leader < 0) || quorum.is_err();
    // A broker without DescribeQuorum says nothing about its quorum: that alone is no reason to fail.
    let quorum_unknown = matches!(&quorum, Err(e) if e.contains("does not serve"));
    let healthy = offline.is_empty() && (!quorum_leaderless || quorum_unknown);

    match output {
        Output::Json => {
            let replica_json = |r: &VoterRow| {
                json!({
                    "id": r.id, "log_end_offset": r.log_end_offset, "lag": r.lag,
                    "last_fetch_ms_ago": r.last_fetch_ago_ms, "last_caught_up_ms_ago": r.last_caught_up_ago_ms,
                })
            };
            let partition_json = |p: &PartitionRow| {
                json!({
                    "topic": p.topic, "partition": p.partition,
                    "leader": if p.leader < 0 { None } else { Some(p.leader) },
                    "replicas": p.replicas, "isr": p.isr, "offline_replicas": p.offline_replicas,
                })
            };
            let quorum_json = match &quorum {
                Ok(q) => json!({
                    "leader": if q.leader < 0 { None } else { Some(q.leader) },
                    "epoch": q.epoch,
                    "high_watermark": q.high_watermark,
                    "voters": q.voters.iter().map(replica_json).collect::<Vec<_>>(),
                    "observers": q.observers.iter().map(replica_json).collect::<Vec<_>>(),
                }),
                Err(e) => json!({ "error": e }),
            };
            println!(
                "{}",
                json!({
                    "cluster_id": cluster_id,
                    "controller": if controller < 0 { None } else { Some(controller) },
                    "healthy": healthy,
                    "brokers": brokers.values().map(|b| json!({
                        "id": b.id, "address": b.address, "rack": b.rack, "state": b.state,
                    })).collect::<Vec<_>>(),
                    "quorum": quorum_json,
                    "partitions": {
                        "total": total,
                        "topics": topics,
                        "under_replicated": under.iter().map(partition_json).collect::<Vec<_>>(),
                        "offline": offline.iter().map(partition_json).collect::<Vec<_>>(),
                    },
                })
            );
        }
        Output::Text => {
            let ids = |v: &[i32]| {
                let v: Vec<String> = v.iter().map(i32::to_string).collect();
                format!("[{}]", v.join(","))
            };
            let ago = |ms: Option<i64>| ms.map_or("-".to_string(), |ms| format!("{ms} ms ago"));
            println!("Cluster ID:  {}", cluster_id.as_deref().unwrap_or("-"));
            let live = brokers.values().filter(|b| b.state == "live").count();
            println!("Brokers:     {live} live of {}", brokers.len());
            println!();
            print_table(
                &["ID", "ADDRESS", "RACK", "STATE"],
                brokers
                    .values()
                    .map(|b| {
                        vec![
                            b.id.to_string(),
                            b.address.clone().unwrap_or_else(|| "-".into()),
                            b.rack.clone().unwrap_or_else(|| "-".into()),
                            b.state.to_string(),
                        ]
                    })
                    .collect(),
            );
            println!();
            match &quorum {
                Ok(q) => {
                    println!(
                        "Controllers: leader {}, epoch {}, high watermark {}",
                        if q.leader < 0 {
                            "none".to_string()
                        } else {
                            q.leader.to_string()
                        },
                        q.epoch,
                        q.high_watermark
                    );
                    println!();
                    let rows = q
                        .voters
                        .iter()
                        .map(|r| (r, if r.id == q.leader { "leader" } else { "voter" }))
                        .chain(q.observers.iter().map(|r| (r, "observer")));
                    print_table(
                        &[
                            "ID",
                            "ROLE",
                            "LOG END",
                            "LAG",
                            "LAST FETCH",
                            "LAST CAUGHT UP",
                        ],
                        rows.map(|(r, role)| {
                            vec![
                                r.id.to_string(),
                                role.to_string(),
                                r.log_end_offset.to_string(),
                                r.lag.to_string(),
                                ago(r.last_fetch_ago_ms),
                                ago(r.last_caught_up_ago_ms),
                            ]
                        })
                        .collect(),
                    );
                }
                Err(e) => println!("Controllers: unknown ({e})"),
            }
            println!();
            println!(
                "Partitions:  {total} in {topics} topics; {} under-replicated, {} offline",
                under.len(),
                offline.len()
            );
            if !under.is_empty() || !offline.is_empty() {
                println!();
                print_table(
                    &["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "STATE"],
                    offline
                        .iter()
                        .map(|p| (p, "offline"))
                        .chain(under.iter().map(|p| (p, "under-replicated")))
                        .map(|(p, state)| {
                            vec![
                                p.topic.clone(),
                                p.partition.to_string(),
                                if p.leader < 0 {
                                    "none".to_string()
                                } else {
                                    p.leader.to_string()
                                },
                                ids(&p.replicas),
                                ids(&p.isr),
                                state.to_string(),
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    if healthy {
        Ok(())
    } else {
        let mut why = Vec::new();
        if !offline.is_empty() {
            why.push(format!("{} partition(s) offline", offline.len()));
        }
        if quorum_leaderless && !quorum_unknown {
            why.push("the controller quorum has no leader".to_string());
        }
        Err(CliError::new(EXIT_UNHEALTHY, why.join("; ")))
    }
}
