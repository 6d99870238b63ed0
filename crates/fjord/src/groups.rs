//! `fjord groups`: list, describe, reset the offsets of, and delete consumer groups (kafka-consumer-groups.sh,
//! with clearer errors and `--output json`). Describe shows each member's assignment, decoded from the
//! consumer protocol's bytes (for groups of KIP-848's consumer protocol, asked of the group coordinator with
//! ConsumerGroupDescribe, which librdkafka has no API for), and the committed offset, log-end offset and lag
//! of every partition the group has committed, is assigned or is subscribed to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use clap::{Args, Subcommand};
use fjord_coordinator::consumer_protocol::{assignment_partitions, subscription_topics};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, GroupId, OffsetDeleteRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::groups::GroupInfo;
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::client::{describe_code, CliError, ClientArgs};
use crate::ops::{missing_topic, refuse_security_properties, EXIT_BAD_ARGS};
use crate::topics::Output;
use crate::wire::{
    broker_connection, error_name, find_coordinator, retriable, Connection, GROUP_KEY,
    RETRY_BACKOFF,
};

/// Kafka's internal topic of committed offsets; never a topic a group consumes.
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Group states of the classic protocol (KIP-848 adds Assigning and Reconciling), and Unknown for groups
/// DescribeGroups does not cover (see `shown_state`).
const STATES: [&str; 8] = [
    "Stable",
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Dead",
    "Assigning",
    "Reconciling",
    "Unknown",
];

/// A listed group's state. ListGroups found the group, so a Dead answer from DescribeGroups means the
/// group is not a classic one (KIP-848's consumer protocol), whose state DescribeGroups does not report.
fn shown_state(g: &GroupInfo) -> &str {
    if g.state().eq_ignore_ascii_case("Dead") {
        "Unknown"
    } else {
        g.state()
    }
}

#[derive(Subcommand)]
pub enum GroupsCmd {
    /// List consumer groups with their state, protocol and member count (groups of the consumer protocol,
    /// KIP-848, show state Unknown).
    ///
    /// Example: fjord groups list --state stable,empty --output json
    List {
        /// Only groups in these states (comma-separated or repeated; case does not matter).
        #[arg(long, value_delimiter = ',', ignore_case = true, value_parser = STATES)]
        state: Vec<String>,
        /// Output format: a human-readable table, or JSON.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show groups' state, members and assignments, and per partition the committed offset, the log-end
    /// offset and the lag (log-end minus committed, or minus the log start where nothing is committed). Every
    /// partition of the topics a group subscribes to, is assigned or has committed is listed.
    ///
    /// Example: fjord groups describe billing --output json
    ///
    /// Example: fjord groups describe --all-groups --members --verbose
    ///
    /// Example: fjord groups describe billing audit --state
    Describe(DescribeArgs),
    /// Compute new committed offsets for a group and show them; commit them with --execute. The group must
    /// have no active members.
    ///
    /// Example: fjord groups reset-offsets billing --topic orders:0,1 --to-datetime 2026-11-25T10:00:00Z --execute
    ResetOffsets(ResetArgs),
    /// Delete a group's committed offsets on some partitions (kafka-consumer-groups.sh --delete-offsets). The
    /// group must not be consuming those topics: the broker refuses partitions of a topic the group's members
    /// subscribe to.
    ///
    /// Example: fjord groups delete-offsets billing --topic orders --topic audit:0,1
    DeleteOffsets {
        /// The group whose offsets are deleted.
        #[arg(value_name = "GROUP")]
        group: String,
        /// A topic, or a topic and some of its partitions: orders or orders:0,2 (repeatable).
        #[arg(long = "topic", required = true, value_name = "TOPIC[:P,...]")]
        topics: Vec<String>,
        /// Output format: a human-readable table or JSON.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete groups (their committed offsets too). Only groups without active members can be deleted.
    ///
    /// Example: fjord groups delete billing old-billing
    Delete {
        /// The groups to delete.
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
pub struct DescribeArgs {
    /// The groups to describe (one or more).
    #[arg(value_name = "GROUP", required_unless_present = "all_groups")]
    groups: Vec<String>,
    /// Describe every group (instead of naming them).
    #[arg(long, conflicts_with = "groups")]
    all_groups: bool,
    /// Show only the offsets table: per partition the committed offset, log-end offset, lag and owner.
    #[arg(long, conflicts_with_all = ["members", "state"])]
    offsets: bool,
    /// Show only the members: id, host, client id and number of assigned partitions (with --verbose, the
    /// client option, also each member's assigned partitions, as kafka-consumer-groups --members --verbose).
    #[arg(long, conflicts_with = "state")]
    members: bool,
    /// Show only the group's state: coordinator, assignment strategy, state and member count.
    #[arg(long)]
    state: bool,
    /// Output format: a human-readable table, or JSON (an object for one named group, an array otherwise).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
pub struct ResetArgs {
    /// The group whose committed offsets are reset.
    #[arg(value_name = "GROUP")]
    group: String,
    /// A topic, or a topic and some of its partitions: orders or orders:0,2 (repeatable).
    #[arg(long = "topic", required = true, value_name = "TOPIC[:P,...]")]
    topics: Vec<String>,
    #[command(flatten)]
    target: ResetTarget,
    /// Only show the new offsets (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
    /// Output format: a human-readable table, or JSON.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResetTarget {
    /// The earliest offset still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// The log-end offset (skip everything written so far).
    #[arg(long)]
    to_latest: bool,
    /// This offset (moved into the log's range if outside it).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// The first message written at or after this time, e.g. 2026-11-25T10:00:00Z or
    /// 2026-11-25T11:00:00.000+01:00 (no zone means UTC); the log end if there is none.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Move the committed offset by N (negative goes back), kept within the log's range.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
}

pub async fn run(cmd: GroupsCmd) -> Result<(), CliError> {
    match cmd {
        GroupsCmd::List {
            state,
            output,
            client,
        } => list(&client, &state, output),
        GroupsCmd::Describe(args) => describe(args),
        GroupsCmd::ResetOffsets(args) => reset_offsets(args),
        GroupsCmd::DeleteOffsets {
            group,
            topics,
            output,
            client,
        } => delete_offsets(&client, &group, &topics, output),
        GroupsCmd::Delete { groups, client } => delete(&client, &groups).await,
    }
}

// ---------------------------------------------------------------------------------------------------------
// list

fn list(client: &ClientArgs, states: &[String], output: Output) -> Result<(), CliError> {
    let consumer = client.consumer()?;
    // Fail fast with the usual message when nothing listens.
    client.metadata(&consumer, None)?;
    let list = consumer
        .fetch_group_list(None, client.timeout())
        .map_err(|e| client.transport_error(e))?;
    let mut groups: Vec<&GroupInfo> = list
        .groups()
        .iter()
        .filter(|g| {
            states.is_empty()
                || states
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(shown_state(g)))
        })
        .collect();
    groups.sort_by_key(|g| g.name());
    let docs: Vec<serde_json::Value> = groups
        .iter()
        .map(|g| {
            json!({
                "group": g.name(), "state": shown_state(g), "protocol_type": g.protocol_type(),
                "protocol": g.protocol(), "members": g.members().len(),
            })
        })
        .collect();
    match output {
        Output::Json => println!("{}", serde_json::Value::Array(docs)),
        Output::Text => print_table(
            &["GROUP", "STATE", "PROTOCOL", "MEMBERS"],
            groups
                .iter()
                .map(|g| {
                    vec![
                        g.name().to_string(),
                        shown_state(g).to_string(),
                        dash_if_empty(g.protocol()),
                        g.members().len().to_string(),
                    ]
                })
                .collect(),
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// describe

/// Which view of `describe` (kafka-consumer-groups.sh --describe with --offsets, --members or --state).
#[derive(Copy, Clone, PartialEq, Eq)]
enum View {
    /// State, members and offsets together (fjord's default).
    All,
    Offsets,
    Members {
        verbose: bool,
    },
    State,
}

/// One partition row of `describe`.
struct PartitionRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_start: i64,
    log_end: i64,
    /// Index into the member list of the member that owns the partition, if any.
    owner: Option<usize>,
}

impl PartitionRow {
    /// Messages the group has yet to read: from its committed offset, or from the log start when it has
    /// committed nothing there (it would read the whole log, with auto.offset.reset=earliest).
    fn lag(&self) -> i64 {
        (self.log_end - self.committed.unwrap_or(self.log_start)).max(0)
    }
}

/// Everything `describe` shows of one group.
struct Described {
    group: String,
    info: GroupDescription,
    rows: Vec<PartitionRow>,
    /// (node id, host:port) of the group's coordinator; asked for only by the state view.
    coordinator: Option<(i32, String)>,
}

fn describe(args: DescribeArgs) -> Result<(), CliError> {
    let client = &args.client;
    let view = if args.offsets {
        View::Offsets
    } else if args.members {
        View::Members {
            verbose: args.client.verbose,
        }
    } else if args.state {
        View::State
    } else {
        View::All
    };
    let mut seen = BTreeSet::new();
    if let Some(dup) = args.groups.iter().find(|g| !seen.insert(g.as_str())) {
        return Err(CliError::new(
            EXIT_BAD_ARGS,
            format!("group `{dup}` is named more than once"),
        ));
    }
    let probe = client.consumer()?;
    let md = client.metadata(&probe, None)?;
    let names: Vec<String> = if args.all_groups {
        let list = probe
            .fetch_group_list(None, client.timeout())
            .map_err(|e| client.transport_error(e))?;
        let mut names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
        names.sort();
        names
    } else {
        args.groups.clone()
    };
    let mut watermarks = BTreeMap::new();
    let mut described = Vec::new();
    let mut missing = Vec::new();
    for group in &names {
        match describe_one(client, &md, group, view, &mut watermarks)? {
            Some(d) => described.push(d),
            None => missing.push(group.as_str()),
        }
    }
    // One group named: an object, as before; several or --all-groups: an array.
    let single = !args.all_groups && names.len() == 1;
    match args.output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = described.iter().map(describe_json).collect();
            if single {
                if let Some(d) = docs.into_iter().next() {
                    println!("{d}");
                }
            } else {
                println!("{}", serde_json::Value::Array(docs));
            }
        }
        Output::Text => print_described(&described, view),
    }
    if args.all_groups && names.is_empty() {
        eprintln!("There are no consumer groups.");
    }
    let missing_msg =
        |g: &str| format!("group `{g}` does not exist. List groups with `fjord groups list`.");
    match missing.len() {
        0 => Ok(()),
        1 if single => Err(CliError::failure(missing_msg(missing[0]))),
        n => {
            for g in &missing {
                eprintln!("error: {}", missing_msg(g));
            }
            Err(CliError::failure(format!(
                "{n} of {} groups do not exist",
                names.len()
            )))
        }
    }
}

/// (log start, log end) of a partition, asked once per command.
fn watermarks(
    client: &ClientArgs,
    consumer: &BaseConsumer,
    cache: &mut BTreeMap<(String, i32), (i64, i64)>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), CliError> {
    if let Some(w) = cache.get(&(topic.to_string(), partition)) {
        return Ok(*w);
    }
    let w = consumer
        .fetch_watermarks(topic, partition, client.timeout())
        .map_err(|e| client.transport_error(e))?;
    cache.insert((topic.to_string(), partition), w);
    Ok(w)
}

/// The group's description and partition rows, or None when the coordinator does not know it.
///
/// The rows are, like kafka-consumer-groups.sh --describe, every partition of the topics the group is
/// involved in: those its members subscribe to or are assigned, and those it has committed offsets on. A
/// partition of such a topic without a commit shows `-` and a lag counted from the log start, so that lag
/// on a partition the group never committed (or never read) is not hidden.
fn describe_one(
    client: &ClientArgs,
    md: &Metadata,
    group: &str,
    view: View,
    cache: &mut BTreeMap<(String, i32), (i64, i64)>,
) -> Result<Option<Described>, CliError> {
    let consumer = group_consumer(client, group)?;
    let Some(info) = find_group(client, &consumer, group)? else {
        return Ok(None);
    };
    let coordinator = if view == View::State {
        refuse_security_properties(client)?;
        let mut conn = Connection::bootstrap(client)?;
        let deadline = Instant::now() + client.timeout();
        Some(find_coordinator(
            &mut conn, GROUP_KEY, "group", group, deadline,
        )?)
    } else {
        None
    };
    let mut owner: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for (i, m) in info.members.iter().enumerate() {
        for (t, ps) in &m.assignment {
            for p in ps {
                owner.insert((t.clone(), *p), i);
            }
        }
    }
    let mut rows = Vec::new();
    if matches!(view, View::All | View::Offsets) {
        // OffsetFetch for every partition of every topic: the group may have commits for topics no member
        // subscribes to any more.
        let mut tpl = TopicPartitionList::new();
        for t in md.topics().iter().filter(|t| t.name() != OFFSETS_TOPIC) {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
        let committed = committed(client, &consumer, tpl)?;
        let mut topics: BTreeSet<&str> = info
            .members
            .iter()
            .flat_map(|m| m.subscription.iter().map(String::as_str))
            .collect();
        topics.extend(owner.keys().map(|(t, _)| t.as_str()));
        topics.extend(committed.keys().map(|(t, _)| t.as_str()));
        let mut wanted: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
        wanted.extend(owner.keys().cloned());
        for t in md.topics().iter().filter(|t| topics.contains(t.name())) {
            for p in t.partitions() {
                wanted.insert((t.name().to_string(), p.id()));
            }
        }
        for (topic, partition) in wanted {
            let (log_start, log_end) = watermarks(client, &consumer, cache, &topic, partition)?;
            rows.push(PartitionRow {
                committed: committed.get(&(topic.clone(), partition)).copied(),
                owner: owner.get(&(topic.clone(), partition)).copied(),
                topic,
                partition,
                log_start,
                log_end,
            });
        }
    }
    Ok(Some(Described {
        group: group.to_string(),
        info,
        rows,
        coordinator,
    }))
}

fn describe_json(d: &Described) -> serde_json::Value {
    let members = &d.info.members;
    let members_json: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            let assignment: Vec<serde_json::Value> = m
                .assignment
                .iter()
                .map(|(t, ps)| json!({"topic": t, "partitions": ps}))
                .collect();
            json!({
                "member_id": m.id, "client_id": m.client_id, "host": m.host,
                "member_epoch": m.epoch,
                "subscribed_topics": m.subscription, "assignment": assignment,
            })
        })
        .collect();
    let parts: Vec<serde_json::Value> = d
        .rows
        .iter()
        .map(|r| {
            let m = r.owner.map(|i| &members[i]);
            json!({
                "topic": r.topic, "partition": r.partition, "committed_offset": r.committed,
                "log_start_offset": r.log_start, "log_end_offset": r.log_end, "lag": r.lag(),
                "member_id": m.map(|m| &m.id), "client_id": m.map(|m| &m.client_id),
                "host": m.map(|m| &m.host),
            })
        })
        .collect();
    let info = &d.info;
    let mut doc = json!({
        "group": d.group, "classic": info.classic, "state": info.state,
        "protocol_type": info.protocol_type, "protocol": info.protocol,
        "group_epoch": info.epochs.map(|e| e.0),
        "assignment_epoch": info.epochs.map(|e| e.1),
        "members": members_json, "partitions": parts,
        "lag": d.rows.iter().map(PartitionRow::lag).sum::<i64>(),
    });
    if let Some((id, addr)) = &d.coordinator {
        doc["coordinator"] = json!({"id": id, "address": addr});
    }
    doc
}

fn assignment_text(m: &MemberDescription, kafka_style: bool) -> String {
    if m.assignment.is_empty() {
        return "-".into();
    }
    let a: Vec<String> = m
        .assignment
        .iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            if kafka_style {
                format!("{t}({})", ps.join(","))
            } else {
                format!("{t}:{}", ps.join(","))
            }
        })
        .collect();
    a.join(if kafka_style { ", " } else { " " })
}

fn offsets_table(described: &[Described]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let headers = vec![
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ];
    let rows = described
        .iter()
        .flat_map(|d| {
            d.rows.iter().map(move |r| {
                let m = r.owner.map(|i| &d.info.members[i]);
                vec![
                    d.group.clone(),
                    r.topic.clone(),
                    r.partition.to_string(),
                    opt(r.committed),
                    r.log_end.to_string(),
                    r.lag().to_string(),
                    m.map_or("-".into(), |m| m.id.clone()),
                    m.map_or("-".into(), |m| m.host.clone()),
                    m.map_or("-".into(), |m| m.client_id.clone()),
                ]
            })
        })
        .collect();
    (headers, rows)
}

fn print_described(described: &[Described], view: View) {
    match view {
        View::Offsets => {
            let (h, rows) = offsets_table(described);
            for d in described.iter().filter(|d| d.rows.is_empty()) {
                eprintln!(
                    "Group {} has no committed offsets and no assigned partitions.",
                    d.group
                );
            }
            if !rows.is_empty() {
                print_table(&h, rows);
            }
        }
        View::Members { verbose } => {
            let mut headers = vec!["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"];
            if verbose {
                headers.push("ASSIGNMENT");
            }
            let mut rows = Vec::new();
            for d in described {
                if d.info.members_unknown.is_some() {
                    eprintln!("Group {} uses the consumer protocol (KIP-848): its members cannot be listed.", d.group);
                } else if d.info.members.is_empty() {
                    eprintln!("Group {} has no active members.", d.group);
                }
                for m in &d.info.members {
                    let n: usize = m.assignment.iter().map(|(_, ps)| ps.len()).sum();
                    let mut row = vec![
                        d.group.clone(),
                        m.id.clone(),
                        m.host.clone(),
                        m.client_id.clone(),
                        n.to_string(),
                    ];
                    if verbose {
                        row.push(assignment_text(m, true));
                    }
                    rows.push(row);
                }
            }
            if !rows.is_empty() {
                print_table(&headers, rows);
            }
        }
        View::State => print_table(
            &[
                "GROUP",
                "COORDINATOR (ID)",
                "ASSIGNMENT-STRATEGY",
                "STATE",
                "#MEMBERS",
            ],
            described
                .iter()
                .map(|d| {
                    vec![
                        d.group.clone(),
                        d.coordinator
                            .as_ref()
                            .map_or("-".into(), |(id, addr)| format!("{addr} ({id})")),
                        dash_if_empty(&d.info.protocol),
                        d.info.state.clone(),
                        if d.info.members_unknown.is_some() {
                            "-".into()
                        } else {
                            d.info.members.len().to_string()
                        },
                    ]
                })
                .collect(),
        ),
        View::All => {
            for (i, d) in described.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_all(d);
            }
        }
    }
}

fn print_all(d: &Described) {
    let (group, info, members) = (&d.group, &d.info, &d.info.members);
    let epochs = info.epochs.map_or_else(String::new, |(g, a)| {
        format!("\tGroupEpoch: {g}\tAssignmentEpoch: {a}")
    });
    println!(
        "Group: {group}\tState: {}\tProtocol: {}\tMembers: {}{epochs}",
        info.state,
        dash_if_empty(&info.protocol),
        members.len()
    );
    println!();
    if info.members_unknown.is_some() {
        println!("Group {group} uses the consumer protocol (KIP-848): its state and members are not shown, its committed offsets are.");
    } else if members.is_empty() {
        println!("Group {group} has no active members.");
    } else {
        print_table(
            &["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"],
            members
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.client_id.clone(),
                        m.host.clone(),
                        assignment_text(m, false),
                    ]
                })
                .collect(),
        );
    }
    println!();
    if d.rows.is_empty() {
        println!("Group {group} has no committed offsets and no assigned partitions.");
    } else {
        let (h, rows) = offsets_table(std::slice::from_ref(d));
        print_table(&h, rows);
    }
}

// ---------------------------------------------------------------------------------------------------------
// reset-offsets

fn reset_offsets(args: ResetArgs) -> Result<(), CliError> {
    let client = &args.client;
    let group = args.group.as_str();
    let consumer = group_consumer(client, group)?;
    let md = client.metadata(&consumer, None)?;
    let partitions = parse_topic_partitions(&args.topics, &md)?;
    let datetime = args
        .target
        .to_datetime
        .as_deref()
        .map(|s| {
            crate::timespec::parse_time_ms(s)
                .map_err(|why| CliError::bad_args(format!("--to-datetime {why}")))
        })
        .transpose()?;

    // Kafka refuses to reset the offsets of a group whose consumers are running: they would overwrite the
    // new offsets with their next commit.
    match find_group(client, &consumer, group)? {
        Some(g) if !g.members.is_empty() => return Err(active_group(group, g.members.len())),
        Some(g) if g.members_unknown.is_some() && args.execute => eprintln!(
            "note: group {group} uses the consumer protocol (KIP-848), whose members fjord cannot list; the broker refuses the new offsets if the group is active"
        ),
        _ => {}
    }

    let mut tpl = TopicPartitionList::new();
    for (t, p) in &partitions {
        tpl.add_partition(t, *p);
    }
    let old = committed(client, &consumer, tpl)?;
    let by_time = match datetime {
        Some(ts) => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &partitions {
                tpl.add_partition_offset(t, *p, Offset::Offset(ts))
                    .map_err(|e| CliError::failure(format!("bad timestamp: {e}")))?;
            }
            let res = consumer
                .offsets_for_times(tpl, client.timeout())
                .map_err(|e| client.transport_error(e))?;
            res.elements()
                .iter()
                .map(|e| {
                    let o = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    ((e.topic().to_string(), e.partition()), o)
                })
                .collect()
        }
        None => BTreeMap::new(),
    };

    let t = &args.target;
    let mut plan: Vec<(String, i32, Option<i64>, i64)> = Vec::new();
    for (topic, partition) in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, client.timeout())
            .map_err(|e| client.transport_error(e))?;
        let key = (topic.clone(), partition);
        let current = old.get(&key).copied();
        let wanted = if t.to_earliest {
            low
        } else if t.to_latest {
            high
        } else if let Some(o) = t.to_offset {
            o
        } else if datetime.is_some() {
            // No message at or after the time: start after everything there is.
            by_time.get(&key).copied().flatten().unwrap_or(high)
        } else if let Some(n) = t.shift_by {
            let c = current.ok_or_else(|| {
                CliError::failure(format!(
                    "cannot shift the offset of {topic}:{partition}: group `{group}` has no committed offset there (use --to-earliest, --to-latest or --to-offset)"
                ))
            })?;
            c.saturating_add(n)
        } else {
            unreachable!("clap requires exactly one reset target")
        };
        let new = wanted.clamp(low, high);
        if new != wanted {
            eprintln!(
                "note: {topic}:{partition}: offset {wanted} is outside the log ({low}..{high}); using {new}"
            );
        }
        plan.push((topic, partition, current, new));
    }

    if args.execute {
        let mut tpl = TopicPartitionList::new();
        for (t, p, _, new) in &plan {
            tpl.add_partition_offset(t, *p, Offset::Offset(*new))
                .map_err(|e| CliError::failure(format!("bad offset: {e}")))?;
        }
        // A coordinator that is still loading or being created (the first group of a new cluster creates
        // __consumer_offsets) answers with a retriable error: retried until the request timeout.
        let deadline = Instant::now() + client.timeout();
        let committed = loop {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Err(e)
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::CoordinatorNotAvailable
                                | RDKafkaErrorCode::CoordinatorLoadInProgress
                                | RDKafkaErrorCode::NotCoordinator
                        )
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(RETRY_BACKOFF)
                }
                other => break other,
            }
        };
        committed.map_err(|e| match e.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::RebalanceInProgress,
                ) => CliError::failure(format!(
                    "group `{group}` has active members (the broker refused the new offsets: {e}); stop its consumers first"
                )),
                _ => client.transport_error(e),
            })?;
    }

    match args.output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = plan
                .iter()
                .map(|(t, p, old, new)| {
                    json!({"group": group, "topic": t, "partition": p, "old_offset": old, "new_offset": new})
                })
                .collect();
            println!("{}", serde_json::Value::Array(docs));
        }
        Output::Text => print_table(
            &["GROUP", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET"],
            plan.iter()
                .map(|(t, p, old, new)| {
                    vec![
                        group.to_string(),
                        t.clone(),
                        p.to_string(),
                        opt(*old),
                        new.to_string(),
                    ]
                })
                .collect(),
        ),
    }
    if args.execute {
        eprintln!("Committed new offsets for group {group}.");
    } else {
        eprintln!("Dry run: nothing was committed. Add --execute to commit these offsets.");
    }
    Ok(())
}

fn active_group(group: &str, members: usize) -> CliError {
    CliError::failure(format!(
        "group {group} is active ({members} member{}); stop its consumers first",
        if members == 1 { "" } else { "s" }
    ))
}

/// `orders` (every partition) or `orders:0,2`, checked against the cluster's metadata.
fn parse_topic_partitions(specs: &[String], md: &Metadata) -> Result<Vec<(String, i32)>, CliError> {
    let mut out: BTreeSet<(String, i32)> = BTreeSet::new();
    for spec in specs {
        let (topic, parts) = match spec.split_once(':') {
            Some((t, ps)) => (t, Some(ps)),
            None => (spec.as_str(), None),
        };
        let meta = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| missing_topic(topic))?;
        let all: Vec<i32> = meta.partitions().iter().map(|p| p.id()).collect();
        match parts {
            None => out.extend(all.iter().map(|p| (topic.to_string(), *p))),
            Some(ps) => {
                for p in ps.split(',') {
                    let p: i32 = p.trim().parse().map_err(|_| {
                        CliError::failure(format!(
                            "--topic `{spec}`: `{p}` is not a partition number (use TOPIC or TOPIC:0,1,2)"
                        ))
                    })?;
                    if !all.contains(&p) {
                        return Err(CliError::failure(format!(
                            "topic `{topic}` has no partition {p} (it has {})",
                            all.len()
                        )));
                    }
                    out.insert((topic.to_string(), p));
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------------------
// delete-offsets

fn delete_offsets(
    client: &ClientArgs,
    group: &str,
    specs: &[String],
    output: Output,
) -> Result<(), CliError> {
    refuse_security_properties(client)?;
    let consumer = client.consumer()?;
    let md = client.metadata(&consumer, None)?;
    let partitions = parse_topic_partitions(specs, &md)?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let request = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(
                            ps.iter()
                                .map(|p| {
                                    OffsetDeleteRequestPartition::default().with_partition_index(*p)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let mut bootstrap = Connection::bootstrap(client)?;
    let deadline = Instant::now() + client.timeout();
    let resp = loop {
        let (id, addr) = find_coordinator(&mut bootstrap, GROUP_KEY, "group", group, deadline)?;
        let mut conn = broker_connection(client, id, &addr)?;
        let (resp, _) = conn.send(&request)?;
        match resp.error_code {
            0 => break resp,
            c if retriable(c) && Instant::now() < deadline => std::thread::sleep(RETRY_BACKOFF),
            c if c == E::GroupIdNotFound.code() => {
                return Err(CliError::failure(format!(
                    "group `{group}` does not exist. List groups with `fjord groups list`."
                )))
            }
            c => {
                return Err(CliError::failure(format!(
                    "cannot delete the offsets of group `{group}`: {}",
                    error_name(c)
                )))
            }
        }
    };
    let mut results: Vec<(String, i32, i16)> = resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    results.sort();
    let status = |code: i16| -> String {
        if code == 0 {
            "Successful".into()
        } else if code == E::GroupSubscribedToTopic.code() {
            "Error: the group is subscribed to the topic; stop its consumers first".into()
        } else {
            format!("Error: {}", error_name(code))
        }
    };
    match output {
        Output::Json => {
            let docs: Vec<serde_json::Value> = results
                .iter()
                .map(|(t, p, c)| {
                    json!({"group": group, "topic": t, "partition": p, "error_code": c,
                           "error": (*c != 0).then(|| error_name(*c))})
                })
                .collect();
            println!("{}", serde_json::Value::Array(docs));
        }
        Output::Text => print_table(
            &["GROUP", "TOPIC", "PARTITION", "STATUS"],
            results
                .iter()
                .map(|(t, p, c)| vec![group.to_string(), t.clone(), p.to_string(), status(*c)])
                .collect(),
        ),
    }
    let failed = results.iter().filter(|(_, _, c)| *c != 0).count();
    if failed == 0 {
        eprintln!(
            "Deleted the committed offsets of group {group} on {} partition{}.",
            results.len(),
            if results.len() == 1 { "" } else { "s" }
        );
        Ok(())
    } else if results
        .iter()
        .any(|(_, _, c)| *c == E::GroupSubscribedToTopic.code())
    {
        Err(CliError::failure(format!(
            "{failed} of {} offsets of group `{group}` were not deleted: the group's members subscribe to the topic; stop its consumers first",
            results.len()
        )))
    } else {
        Err(CliError::failure(format!(
            "{failed} of {} offsets of group `{group}` were not deleted",
            results.len()
        )))
    }
}

// ---------------------------------------------------------------------------------------------------------
// delete

async fn delete(client: &ClientArgs, groups: &[String]) -> Result<(), CliError> {
    // Fail fast with the usual message when nothing listens.
    client.metadata(&client.consumer()?, None)?;
    let admin: AdminClient<DefaultClientContext> = client
        .config()?
        .create()
        .map_err(|e| CliError::failure(format!("cannot create an admin client: {e}")))?;
    let opts = AdminOptions::new()
        .request_timeout(Some(client.timeout()))
        .operation_timeout(Some(client.timeout()));
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let res = admin
        .delete_groups(&refs, &opts)
        .await
        .map_err(|e| client.transport_error(e))?;
    let mut failures = Vec::new();
    for r in res {
        match r {
            Ok(g) => eprintln!("Deleted group {g}."),
            Err((g, code)) => failures.push(match code {
                RDKafkaErrorCode::NonEmptyGroup => format!(
                    "cannot delete group `{g}`: it has active members; stop its consumers first"
                ),
                RDKafkaErrorCode::GroupIdNotFound => {
                    format!("group `{g}` does not exist. List groups with `fjord groups list`.")
                }
                other => format!("cannot delete group `{g}`: {}", describe_code(other)),
            }),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(CliError::failure(failures.remove(0))),
        n => {
            for f in &failures {
                eprintln!("error: {f}");
            }
            Err(CliError::failure(format!(
                "{n} of {} groups were not deleted",
                groups.len()
            )))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// shared

/// A consumer that carries the group's id for OffsetFetch and OffsetCommit but never subscribes, so it
/// never joins the group.
fn group_consumer(client: &ClientArgs, group: &str) -> Result<BaseConsumer, CliError> {
    client
        .config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| CliError::failure(format!("cannot create a client: {e}")))
}

/// What ListGroups + DescribeGroups say about one group, with the consumer-protocol bytes decoded; for a
/// group of the consumer protocol (KIP-848), what ConsumerGroupDescribe says.
struct GroupDescription {
    /// False for a group of the consumer protocol (KIP-848), which DescribeGroups does not cover: one that
    /// ListGroups returns but DescribeGroups reports Dead, or that ConsumerGroupDescribe describes.
    classic: bool,
    /// Why the state and members of a consumer-protocol group are unknown (state Unknown, no members): the
    /// coordinator could not be asked with ConsumerGroupDescribe. None when they are known.
    members_unknown: Option<String>,
    state: String,
    protocol_type: String,
    /// The assignment strategy: the classic protocol's, or the server-side assignor of a KIP-848 group.
    protocol: String,
    /// (group epoch, assignment epoch) of a KIP-848 group.
    epochs: Option<(i32, i32)>,
    members: Vec<MemberDescription>,
}

struct MemberDescription {
    id: String,
    client_id: String,
    host: String,
    subscription: Vec<String>,
    assignment: Vec<(String, Vec<i32>)>,
    /// The member epoch of a KIP-848 member (classic members have none).
    epoch: Option<i32>,
}

/// The group, or None when the coordinator does not know it.
fn find_group(
    client: &ClientArgs,
    consumer: &BaseConsumer,
    group: &str,
) -> Result<Option<GroupDescription>, CliError> {
    let list = consumer
        .fetch_group_list(Some(group), client.timeout())
        .map_err(|e| client.transport_error(e))?;
    let Some(g) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(None);
    };
    // DescribeGroups does not cover groups of the consumer protocol: it calls them Dead, or (Fjord) Empty once
    // they have committed offsets. A group without classic members is therefore asked about with
    // ConsumerGroupDescribe, as Kafka's admin client does; "not found" there means a classic group.
    let dead = shown_state(g) == "Unknown";
    if dead || g.members().is_empty() {
        match describe_consumer_group(client, group)? {
            Kip848::Described(d) => return Ok(Some(d)),
            Kip848::NotFound(why) | Kip848::Unknown(why) if dead => {
                return Ok(Some(GroupDescription {
                    classic: false,
                    members_unknown: Some(why),
                    state: "Unknown".into(),
                    protocol_type: g.protocol_type().to_string(),
                    protocol: String::new(),
                    epochs: None,
                    members: Vec::new(),
                }))
            }
            // An empty classic group.
            Kip848::NotFound(_) | Kip848::Unknown(_) => {}
        }
    }
    let consumer_protocol = g.protocol_type() == "consumer" || g.protocol_type().is_empty();
    let members = g
        .members()
        .iter()
        .map(|m| MemberDescription {
            epoch: None,
            id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            host: m.client_host().trim_start_matches('/').to_string(),
            subscription: if consumer_protocol {
                m.metadata().map(subscription_topics).unwrap_or_default()
            } else {
                Vec::new()
            },
            assignment: if consumer_protocol {
                m.assignment()
                    .map(assignment_partitions)
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(Some(GroupDescription {
        classic: true,
        members_unknown: None,
        state: g.state().to_string(),
        protocol_type: g.protocol_type().to_string(),
        protocol: g.protocol().to_string(),
        epochs: None,
        members,
    }))
}

/// What ConsumerGroupDescribe says about a group id.
enum Kip848 {
    /// A group of the consumer protocol: state, epochs, assignor, members with their subscriptions and
    /// current assignments.
    Described(GroupDescription),
    /// GROUP_ID_NOT_FOUND: no consumer-protocol group has this id (it may be a classic group). Why, for a note.
    NotFound(String),
    /// The coordinator cannot be asked or cannot say: a broker without ConsumerGroupDescribe, a security
    /// protocol the raw-protocol client does not speak, or another group error. Why, for a note.
    Unknown(String),
}

/// Asks the group's coordinator about `group` with ConsumerGroupDescribe (KIP-848). A broker that cannot be
/// reached is an error.
fn describe_consumer_group(client: &ClientArgs, group: &str) -> Result<Kip848, CliError> {
    let security = client.client_properties.iter().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == "security.protocol" && !v.trim().eq_ignore_ascii_case("plaintext"))
            .then(|| v.trim().to_string())
    });
    if let Some(s) = security {
        return Ok(Kip848::Unknown(format!(
            "the members of a consumer-protocol (KIP-848) group are asked for with ConsumerGroupDescribe, \
             which fjord sends over PLAINTEXT only, not security.protocol={s}"
        )));
    }
    let mut bootstrap = Connection::bootstrap(client)?;
    let deadline = Instant::now() + client.timeout();
    // A coordinator that is loading or has just moved asks to be found again.
    let described = loop {
        let (id, addr) = find_coordinator(&mut bootstrap, GROUP_KEY, "group", group, deadline)?;
        let mut conn = broker_connection(client, id, &addr)?;
        if let Err(e) = conn.version::<ConsumerGroupDescribeRequest>() {
            return Ok(Kip848::Unknown(e.message));
        }
        let (resp, _) = conn.send(
            &ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]),
        )?;
        let Some(d) = resp
            .groups
            .into_iter()
            .find(|d| d.group_id.0.as_str() == group)
        else {
            return Ok(Kip848::Unknown(format!(
                "the coordinator (broker {id} at {addr}) did not describe group `{group}`"
            )));
        };
        let detail = || {
            d.error_message
                .as_ref()
                .map_or_else(String::new, |m| format!(" ({})", m.as_str()))
        };
        match d.error_code {
            0 => break d,
            c if retriable(c) && Instant::now() < deadline => std::thread::sleep(RETRY_BACKOFF),
            c if c == E::GroupIdNotFound.code() => {
                return Ok(Kip848::NotFound(format!(
                    "the coordinator (broker {id} at {addr}) knows no consumer-protocol group `{group}`{}",
                    detail()
                )))
            }
            c => {
                return Ok(Kip848::Unknown(format!(
                    "the coordinator (broker {id} at {addr}) could not describe group `{group}` with ConsumerGroupDescribe: {}{}",
                    error_name(c),
                    detail()
                )));
            }
        }
    };
    let members = described
        .members
        .into_iter()
        .map(|m| {
            let mut assignment: Vec<(String, Vec<i32>)> = m
                .assignment
                .topic_partitions
                .into_iter()
                .map(|tp| {
                    // Kafka fills in the name; a topic deleted meanwhile may have none left.
                    let topic = if tp.topic_name.0.is_empty() {
                        tp.topic_id.to_string()
                    } else {
                        tp.topic_name.0.to_string()
                    };
                    let mut ps = tp.partitions;
                    ps.sort_unstable();
                    (topic, ps)
                })
                .collect();
            assignment.sort();
            MemberDescription {
                epoch: Some(m.member_epoch),
                id: m.member_id.to_string(),
                client_id: m.client_id.to_string(),
                host: m.client_host.trim_start_matches('/').to_string(),
                subscription: m
                    .subscribed_topic_names
                    .iter()
                    .map(|t| t.0.to_string())
                    .collect(),
                assignment,
            }
        })
        .collect();
    Ok(Kip848::Described(GroupDescription {
        classic: false,
        members_unknown: None,
        state: described.group_state.to_string(),
        // What ListGroups reports for every group of the consumer protocol.
        protocol_type: "consumer".into(),
        protocol: described.assignor_name.to_string(),
        epochs: Some((described.group_epoch, described.assignment_epoch)),
        members,
    }))
}

/// The group's committed offsets among `tpl` (OffsetFetch); partitions without a commit are left out.
fn committed(
    client: &ClientArgs,
    consumer: &BaseConsumer,
    tpl: TopicPartitionList,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    if tpl.count() == 0 {
        return Ok(BTreeMap::new());
    }
    let res = consumer
        .committed_offsets(tpl, client.timeout())
        .map_err(|e| client.transport_error(e))?;
    Ok(res
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// Left-aligned columns separated by two spaces, with a header row.
pub(crate) fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(c);
            if i < last {
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        println!("{s}");
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
