//! The `fjord` command line: `fjord start` runs a single-node platform with defaults, `fjord broker` runs a
//! broker from a Kafka-style `server.properties`, and the client commands (`topics`, `groups`, `produce`,
//! `consume`, `bench`) talk to any Kafka-compatible broker through librdkafka; `transactions` speaks the Kafka
//! protocol itself (`wire`), as librdkafka has no API for its requests.

mod bench;
mod client;
mod cluster;
mod configs;
#[cfg(feature = "connect")]
mod connect;
#[cfg(feature = "connect")]
mod connect_rest;
mod consume;
#[cfg(feature = "registry")]
mod formats;
mod groups;
mod local_cluster;
mod logging;
mod ops;
mod produce;
mod records;
#[cfg(feature = "registry")]
mod registry_client;
#[cfg(feature = "registry")]
mod schemas;
mod serve;
mod signals;
#[cfg(feature = "sql")]
mod sql;
mod timespec;
mod topics;
mod transactions;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fjord_broker::config::{parse_properties, BrokerConfig};

use crate::client::CliError;

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 failure, 2 bad arguments, 3 broker unreachable, 4 topic does not exist,
5 (cluster status) partitions offline or no controller leader.
The broker address of client commands defaults to 127.0.0.1:9092 (or $FJORD_BOOTSTRAP_SERVER).

Examples:
  fjord start                                  # broker on :9092, metrics on :8080, data in ./fjord-data
  fjord start --brokers 3                      # a 3-broker cluster on :9092-9094
  fjord topics create orders --partitions 3
  fjord produce orders < orders.txt            # one message per line
  fjord consume orders --from-beginning
  fjord consume orders --group billing         # share partitions with the group, commit offsets
  fjord groups describe billing                # members, committed offsets, lag
  fjord cluster info                           # cluster id, controller, brokers
  fjord cluster status                         # live/fenced brokers, quorum lag, offline partitions
  fjord configs describe --topic orders --all  # every config and where its value comes from
  fjord records delete --topic orders --partition 0 --before-offset 1000
  fjord transactions list --state ongoing      # open transactions and their producers
  fjord connect standalone worker.properties file-source.properties   # Kafka Connect, REST on :8083
  fjord schemas list                           # subjects in the schema registry on :8081
  fjord sql                                    # the SQL shell (server on :8088); -f script.sql, -e \"...\"
  fjord bench produce --messages 1000000 --size 100";

#[cfg(feature = "registry")]
const SCHEMAS_AFTER_HELP: &str = "\
Exit codes: 0 success, 1 failure (the registry refused, or `compat` found the schema incompatible),
2 bad arguments, 3 registry unreachable. The registry URL defaults to http://127.0.0.1:8081 (or
$FJORD_REGISTRY_URL).";

#[derive(Parser)]
#[command(name = "fjord", version, about = "Fjord: a Kafka-compatible event-streaming platform", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a single-node platform: a broker on 127.0.0.1:9092 and /metrics on 127.0.0.1:8080,
    /// with data in ./fjord-data. Ctrl-C stops it cleanly.
    ///
    /// With --brokers N, a cluster of N brokers in this process: broker i (node.id i) serves clients on
    /// 9092+i-1, its controller on 9192+i-1, /metrics on 8080, 8082, 8083, ... (the ports from 8080 up that
    /// are not the Schema Registry's), with data in DIR/broker-i, and one Schema Registry against all of
    /// them on --registry-listener (the ports follow
    /// --override listeners=... and metrics.listener=...; port 0 picks free ones).
    ///
    /// Example: fjord start --data-dir /var/lib/fjord
    /// Example: fjord start --brokers 3            # then: fjord cluster status
    #[command(verbatim_doc_comment)]
    Start {
        /// Where logs and metadata live (default ./fjord-data). The same as --override log.dirs=DIR; giving
        /// both is an error.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// How many brokers to run (combined broker+controller nodes forming one cluster), 1 to 32.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=i64::from(local_cluster::MAX_LOCAL_BROKERS)))]
        brokers: u16,
        /// With --brokers N > 1: the controller port of broker 1, the next ports for the others (default:
        /// the client port + 100; 0 picks free ports). Kept in DIR/controller.quorum.voters for restarts.
        #[arg(long, value_name = "PORT")]
        controller_port: Option<u16>,
        /// Where the Schema Registry (Confluent's REST API) listens, beside the broker (with --brokers N,
        /// one registry against every broker); `none` runs no registry.
        #[arg(long, value_name = "HOST:PORT|none", default_value = "127.0.0.1:8081")]
        registry_listener: String,
        /// Where a Kafka Connect worker serves Connect's REST API beside the broker; `none` runs no worker. Only
        /// with a single broker. The worker runs in distributed mode (group connect-cluster): connectors and
        /// offsets live in the broker's connect-configs and connect-offsets topics and outlive restarts; a
        /// DIR/connect.offsets left by an earlier standalone worker is imported once.
        #[arg(long, value_name = "HOST:PORT|none", default_value = "127.0.0.1:8083")]
        connect_listener: String,
        /// Where the SQL server (ksqlDB's REST API: /ksql, /query) listens beside the broker; `none` runs none.
        /// Only with a single broker. Streams, tables and persistent queries live in the `_fjord_sql_commands`
        /// topic and outlive restarts.
        #[arg(long, value_name = "HOST:PORT|none", default_value = "127.0.0.1:8088")]
        sql_listener: String,
        /// The processing guarantee of the SQL server's persistent queries that do not SET
        /// 'processing.guarantee' themselves (ksqlDB's ksql.streams.processing.guarantee): at_least_once (the
        /// default) or exactly_once_v2. As `fjord sql-server --processing-guarantee`.
        #[arg(long, value_name = "GUARANTEE")]
        processing_guarantee: Option<String>,
        #[command(flatten)]
        opts: BrokerOpts,
    },
    /// Run a broker configured like kafka-server-start.sh.
    ///
    /// Example: fjord broker server.properties --override num.partitions=3
    Broker {
        /// The server.properties file, given as kafka-server-start.sh takes it (the same as --config).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        #[command(flatten)]
        opts: BrokerOpts,
    },
    /// Run the Schema Registry (Confluent's REST API, Avro) against any Kafka-compatible cluster.
    ///
    /// Schemas live in the compacted `_schemas` topic in Confluent's record format (created if missing).
    ///
    /// Several instances on one schemas topic elect one primary (the Kafka group --group-id); the others
    /// forward writes to it and serve reads themselves.
    ///
    /// Example: fjord registry --bootstrap-server localhost:9092 --listen 127.0.0.1:8081
    /// Example: fjord registry -b kafka:9092 --listen 0.0.0.0:8081 --advertised-url http://reg2:8081
    #[cfg(feature = "registry")]
    #[command(verbatim_doc_comment)]
    Registry {
        /// The cluster that holds the schemas topic.
        #[arg(
            long,
            short = 'b',
            value_name = "HOST:PORT",
            default_value = "127.0.0.1:9092"
        )]
        bootstrap_server: String,
        /// Where the REST API listens (port 0 picks a free one).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// The topic the schemas are kept in (Confluent's kafkastore.topic).
        #[arg(long, value_name = "TOPIC", default_value = "_schemas")]
        topic: String,
        /// The group of the registry instances sharing the schemas topic: they elect one primary, which alone
        /// writes; the others forward writes to it (Confluent's schema.registry.group.id).
        #[arg(long, value_name = "GROUP", default_value = "schema-registry")]
        group_id: String,
        /// The URL the other instances forward writes to when this one is the primary (default:
        /// http://<the --listen address>).
        #[arg(long, value_name = "http://HOST:PORT")]
        advertised_url: Option<String>,
        /// Whether this instance may become the primary (Confluent's leader.eligibility); false makes a
        /// read-only follower that forwards every write.
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        leader_eligibility: bool,
    },
    /// Streaming SQL: an interactive shell, or run a script (-f) or statements (-e), against a SQL server.
    ///
    /// Examples:
    ///   fjord sql                                   # the shell; statements end with `;`
    ///   fjord sql -f pipeline.sql
    ///   fjord sql -e "SHOW STREAMS; SELECT * FROM clicks EMIT CHANGES LIMIT 5;"
    #[cfg(feature = "sql")]
    #[command(verbatim_doc_comment)]
    Sql(sql::SqlArgs),
    /// Run the SQL server (ksqlDB's REST API on :8088) alone against any Kafka-compatible cluster.
    ///
    /// Example: fjord sql-server --bootstrap-server localhost:9092 --listen 127.0.0.1:8088
    #[cfg(feature = "sql")]
    SqlServer {
        /// The cluster the streams, tables and the command topic live in.
        #[arg(
            long,
            short = 'b',
            value_name = "HOST:PORT",
            default_value = "127.0.0.1:9092"
        )]
        bootstrap_server: String,
        /// Where the REST API listens (port 0 picks a free one).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8088")]
        listen: std::net::SocketAddr,
        /// The compacted topic the catalog and the persistent queries are kept in.
        #[arg(long, value_name = "TOPIC", default_value = "_fjord_sql_commands")]
        command_topic: String,
        /// The schema registry VALUE_FORMAT/KEY_FORMAT 'AVRO' and 'JSON_SR' read and register schemas in
        /// (`fjord start` runs one on http://127.0.0.1:8081). Without it those formats are refused.
        #[arg(long, value_name = "http://HOST:PORT")]
        registry_url: Option<String>,
        /// How long a push query waits for a client that reads none of its rows before ending it.
        #[arg(long, value_name = "MS", default_value_t = 60_000)]
        push_stall_timeout_ms: u64,
        /// The processing guarantee of persistent queries that do not SET 'processing.guarantee' themselves
        /// (ksqlDB's ksql.streams.processing.guarantee): at_least_once or exactly_once_v2.
        #[arg(long, value_name = "GUARANTEE", default_value = "at_least_once")]
        processing_guarantee: String,
    },
    /// Run Kafka Connect workers (Connect's REST API, built-in connectors, no JVM).
    #[cfg(feature = "connect")]
    #[command(subcommand)]
    Connect(connect::ConnectCmd),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand, after_help = AFTER_HELP)]
    Topics(topics::TopicsCmd),
    /// List, describe, reset the offsets of and delete consumer groups.
    #[command(subcommand, after_help = AFTER_HELP)]
    Groups(groups::GroupsCmd),
    /// Show the cluster: its id, controller and brokers.
    #[command(subcommand, after_help = AFTER_HELP)]
    Cluster(cluster::ClusterCmd),
    /// Describe and change the configs of topics, brokers and the cluster-wide broker defaults.
    #[command(subcommand, after_help = AFTER_HELP)]
    Configs(configs::ConfigsCmd),
    /// Delete the records of partitions before an offset (DeleteRecords).
    #[command(subcommand, after_help = AFTER_HELP)]
    Records(records::RecordsCmd),
    /// List and describe transactions, and the producers of a partition (like kafka-transactions.sh).
    #[command(subcommand, after_help = AFTER_HELP)]
    Transactions(transactions::TransactionsCmd),
    /// Send each line of standard input (or a file) as a message
    ///
    /// Every line read before a failure (or Ctrl-C) is delivered, and the command says how many were.
    ///
    /// Examples:
    ///   fjord produce orders --key-separator : --header source=import < orders.txt
    ///   fjord produce --topic orders --property parse.key=true --property key.separator=: < orders.txt
    ///   fjord produce orders --format json < records.jsonl   # {"key":..,"value":..,"headers":{..}}
    ///   fjord produce users --key-separator : --null-marker NULL <<< 'alice:NULL'   # a tombstone
    #[command(after_help = AFTER_HELP, verbatim_doc_comment)]
    Produce(produce::ProduceArgs),
    /// Print messages from one or more topics; follows new ones until Ctrl-C unless told when to stop
    ///
    /// Examples:
    ///   fjord consume orders --from-beginning --print-key --format json --max-messages 10
    ///   fjord consume orders --offset -10 --exit-at-end          # the last 10 of each partition
    ///   fjord consume orders --from-timestamp 2026-11-25T10:00:00Z
    ///   fjord consume --include 'orders-.*' --group billing      # commits every assigned partition
    ///   fjord consume orders --property print.key=true --property key.separator=:
    #[command(after_help = AFTER_HELP, verbatim_doc_comment)]
    Consume(consume::ConsumeArgs),
    /// Measure throughput and latency (see the README for results on the reference machine).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// List, show, register and delete schemas, check compatibility and set compatibility levels in a
    /// Confluent-compatible schema registry (--registry-url, default http://127.0.0.1:8081).
    #[cfg(feature = "registry")]
    #[command(subcommand, after_help = SCHEMAS_AFTER_HELP)]
    Schemas(schemas::SchemasCmd),
}

#[derive(Args)]
struct BrokerOpts {
    /// A server.properties file (Kafka's property names).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Override one property, e.g. --override log.retention.hours=24 (repeatable).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl BrokerOpts {
    fn properties(&self, defaults: &[(&str, String)]) -> Result<BTreeMap<String, String>> {
        let mut props: BTreeMap<String, String> = defaults
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            props.extend(parse_properties(&text)?);
        }
        for o in &self.overrides {
            let (k, v) = o
                .split_once('=')
                .with_context(|| format!("--override `{o}` is not KEY=VALUE"))?;
            props.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(props)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))
}

/// Output piped into a reader that stops early (`fjord topics list | head -1`) must end the command quietly,
/// as SIGPIPE ends other Unix tools, not with a panic report: Rust ignores SIGPIPE, so `println!` panics on
/// the closed pipe. Such a panic exits with 141 (128 + SIGPIPE) and no message; any other keeps its report.
fn quiet_on_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info)
    }));
}

/// jemalloc for the whole process. With glibc's malloc, librdkafka's threads and ours free each other's
/// allocations and wait on the arena lock (the SQL engine's queries ran 35 % slower); the broker used about 20 %
/// more CPU at 1 KiB records. The measurements are in README's "Memory allocator" section.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    // Servers log their life; client commands report failures themselves and keep librdkafka quiet.
    let default_filter = match cli.command {
        Cmd::Start { .. } | Cmd::Broker { .. } => "info,openraft=warn",
        #[cfg(feature = "registry")]
        Cmd::Registry { .. } => "info,openraft=warn",
        #[cfg(feature = "connect")]
        Cmd::Connect(_) => "info",
        #[cfg(feature = "sql")]
        Cmd::SqlServer { .. } => "info",
        _ => "warn,rdkafka=off",
    };
    let logging = logging::init(
        default_filter,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    #[cfg(feature = "connect")]
    fjord_connect::admin_logging::install(logging);
    #[cfg(not(feature = "connect"))]
    drop(logging);
    let result: Result<(), CliError> = match cli.command {
        Cmd::Start {
            data_dir,
            brokers: 1,
            controller_port: None,
            registry_listener,
            connect_listener,
            sql_listener,
            processing_guarantee,
            opts,
        } => parse_listener("--registry-listener", &registry_listener).and_then(|registry| {
            parse_listener("--connect-listener", &connect_listener).and_then(|connect| {
                parse_listener("--sql-listener", &sql_listener).and_then(|sql| {
                    start_guarantee(processing_guarantee.as_deref(), sql.is_some()).and_then(
                        |sql_exactly_once| {
                            start_properties(data_dir, &opts).and_then(|props| {
                                run_server(
                                    props,
                                    serve::Services {
                                        registry,
                                        connect,
                                        sql,
                                        sql_exactly_once,
                                    },
                                )
                            })
                        },
                    )
                })
            })
        }),
        Cmd::Start {
            brokers: 1,
            controller_port: Some(_),
            ..
        } => Err(CliError::new(
            ops::EXIT_BAD_ARGS,
            "--controller-port is for a cluster: give --brokers 2 or more",
        )),
        Cmd::Start {
            processing_guarantee: Some(_),
            ..
        } => Err(CliError::bad_args(
            "--processing-guarantee is the SQL server's, and `fjord start` runs one only with a single broker: \
             leave out --brokers, or run `fjord sql-server --processing-guarantee ...` against the cluster",
        )),
        Cmd::Start {
            data_dir,
            brokers,
            controller_port,
            registry_listener,
            opts,
            ..
        } => parse_listener("--registry-listener", &registry_listener).and_then(|registry| {
            start_properties(data_dir, &opts)
                .and_then(|props| run_cluster(props, brokers, controller_port, registry))
        }),
        Cmd::Broker { file, mut opts } => {
            opts.config = opts.config.or(file);
            run_server(opts.properties(&[]), serve::Services::default())
        }
        #[cfg(feature = "registry")]
        Cmd::Registry {
            bootstrap_server,
            listen,
            topic,
            group_id,
            advertised_url,
            leader_eligibility,
        } => runtime().and_then(|rt| {
            let election = serve::RegistryElection {
                group_id,
                advertised_url,
                eligible: leader_eligibility,
            };
            rt.block_on(serve::serve_registry(
                &bootstrap_server,
                listen,
                &topic,
                election,
            ))
            .map_err(|e| CliError::failure(format!("{e:#}")))
        }),
        #[cfg(feature = "connect")]
        Cmd::Connect(cmd) => runtime().and_then(|rt| rt.block_on(connect::run(cmd))),
        #[cfg(feature = "sql")]
        Cmd::Sql(args) => sql::run(args),
        #[cfg(feature = "sql")]
        Cmd::SqlServer {
            bootstrap_server,
            listen,
            command_topic,
            registry_url,
            push_stall_timeout_ms,
            processing_guarantee,
        } => runtime().and_then(|rt| {
            let mut cfg = fjord_sql::engine::EngineConfig::new(&bootstrap_server, &command_topic);
            cfg.registry_url = registry_url;
            cfg.push_stall = std::time::Duration::from_millis(push_stall_timeout_ms.max(1));
            cfg.exactly_once = parse_guarantee(&processing_guarantee)?;
            rt.block_on(sql::serve(cfg, listen))
                .map_err(|e| CliError::failure(format!("{e:#}")))
        }),
        Cmd::Topics(cmd) => runtime().and_then(|rt| rt.block_on(topics::run(cmd))),
        Cmd::Groups(cmd) => runtime().and_then(|rt| rt.block_on(groups::run(cmd))),
        Cmd::Cluster(cmd) => cluster::run(cmd),
        Cmd::Configs(cmd) => configs::run(cmd),
        Cmd::Records(cmd) => records::run(cmd),
        Cmd::Transactions(cmd) => transactions::run(cmd),
        Cmd::Produce(args) => signals::watch().and_then(|stop| produce::run(args, stop)),
        Cmd::Consume(args) => signals::watch().and_then(|stop| consume::run(args, stop)),
        #[cfg(feature = "registry")]
        Cmd::Schemas(cmd) => schemas::run(cmd),
        Cmd::Bench(bench::BenchCmd::Produce(b)) => bench::produce(b),
        Cmd::Bench(bench::BenchCmd::Consume(b)) => bench::consume(b),
        Cmd::Bench(bench::BenchCmd::E2e(b)) => bench::e2e(b),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            client::note(format_args!("error: {}", e.message));
            ExitCode::from(e.code)
        }
    }
}

/// `fjord start`'s properties: `--data-dir` (default ./fjord-data) is `log.dirs`, so a `log.dirs` (or
/// `log.dir`) from `--override` or `--config` beside an explicit `--data-dir` is a contradiction, refused
/// rather than silently resolved one way.
fn start_properties(
    data_dir: Option<PathBuf>,
    opts: &BrokerOpts,
) -> Result<Result<BTreeMap<String, String>>, CliError> {
    // Defaults of the embedded platform, as Kafka's shipped config/server.properties: no 3 s wait for more members
    // before a new group's first rebalance (the registry's election group, a developer's first consumer).
    let defaults = [
        ("metrics.listener", "127.0.0.1:8080".to_string()),
        ("group.initial.rebalance.delay.ms", "0".to_string()),
    ];
    let mut props = match opts.properties(&defaults) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let given = ["log.dirs", "log.dir"]
        .iter()
        .find_map(|k| props.get(*k).map(|v| format!("{k}={v}")));
    match (data_dir, given) {
        (Some(d), Some(given)) => {
            return Err(CliError::new(
                ops::EXIT_BAD_ARGS,
                format!(
                    "--data-dir {} and {given} (from --override or --config) both say where the data lives; give only one",
                    d.display()
                ),
            ))
        }
        (Some(d), None) => {
            props.insert("log.dirs".into(), d.display().to_string());
        }
        (None, None) => {
            props.insert("log.dirs".into(), "./fjord-data".into());
        }
        (None, Some(_)) => {}
    }
    Ok(Ok(props))
}

/// `fjord start --brokers N` with N > 1 (see `local_cluster`), with the registry on `registry` (whose port the
/// brokers' metrics listeners skip).
fn run_cluster(
    props: Result<BTreeMap<String, String>>,
    n: u16,
    controller_port: Option<u16>,
    registry: Option<std::net::SocketAddr>,
) -> Result<(), CliError> {
    let props = props.map_err(|e| CliError::failure(format!("{e:#}")))?;
    let reserved: Vec<u16> = registry
        .map(|r| r.port())
        .filter(|p| *p != 0)
        .into_iter()
        .collect();
    let plan = local_cluster::plan(&props, n, controller_port, &reserved)?;
    let root = PathBuf::from(
        props
            .get("log.dirs")
            .or_else(|| props.get("log.dir"))
            .map(|d| d.split(',').next().unwrap_or(d).trim().to_string())
            .unwrap_or_else(|| "./fjord-data".into()),
    );
    let run = || -> Result<()> {
        let configs = plan
            .into_iter()
            .map(BrokerConfig::from_properties)
            .collect::<Result<Vec<_>, _>>()?;
        let rt = runtime()?;
        rt.block_on(serve::serve_cluster(configs, root, registry))
    };
    run().map_err(|e| CliError::failure(format!("{e:#}")))
}

/// `--processing-guarantee`: true for exactly once.
#[cfg(feature = "sql")]
fn parse_guarantee(v: &str) -> Result<bool, CliError> {
    fjord_sql::engine::parse_guarantee(v)
        .map_err(|e| CliError::bad_args(format!("--processing-guarantee: {}", e.message)))
}

#[cfg(not(feature = "sql"))]
fn parse_guarantee(_: &str) -> Result<bool, CliError> {
    Err(CliError::bad_args(
        "--processing-guarantee: this fjord was built without the `sql` feature (no SQL server)",
    ))
}

/// `fjord start --processing-guarantee`: the SQL server's default guarantee (at least once when not given); an
/// error when no SQL server runs (`--sql-listener none`), which it would be silently ignored by.
fn start_guarantee(v: Option<&str>, sql_runs: bool) -> Result<bool, CliError> {
    match v {
        None => Ok(false),
        Some(_) if !sql_runs => Err(CliError::bad_args(
            "--processing-guarantee is the SQL server's, and --sql-listener none runs none: give --sql-listener \
             HOST:PORT or leave out --processing-guarantee",
        )),
        Some(v) => parse_guarantee(v),
    }
}

/// `--registry-listener`, `--connect-listener` and `--sql-listener`: an address, or `none`.
fn parse_listener(flag: &str, s: &str) -> Result<Option<std::net::SocketAddr>, CliError> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        CliError::new(
            ops::EXIT_BAD_ARGS,
            format!("{flag} {s}: expected HOST:PORT (an IP address and a port) or none"),
        )
    })
}

fn run_server(
    props: Result<BTreeMap<String, String>>,
    services: serve::Services,
) -> Result<(), CliError> {
    let run = || -> Result<()> {
        let config = BrokerConfig::from_properties(props?)?;
        let rt = runtime()?;
        rt.block_on(serve::serve(config, services))
    };
    run().map_err(|e| CliError::failure(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fjord start --processing-guarantee` parses and reaches the SQL server's default; a bad value, a
    /// platform without a SQL server and a cluster are refused with what to do.
    #[test]
    fn start_takes_the_sql_servers_processing_guarantee() {
        let guarantee = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Cmd::Start {
                processing_guarantee,
                ..
            } => processing_guarantee,
            _ => unreachable!(),
        };
        let g = guarantee(&[
            "fjord",
            "start",
            "--processing-guarantee",
            "exactly_once_v2",
        ]);
        assert_eq!(g.as_deref(), Some("exactly_once_v2"));
        assert!(guarantee(&["fjord", "start"]).is_none());
        #[cfg(feature = "sql")]
        {
            assert!(start_guarantee(g.as_deref(), true).unwrap());
            assert!(!start_guarantee(Some("at_least_once"), true).unwrap());
            assert!(!start_guarantee(None, true).unwrap());
            let e = start_guarantee(Some("exactly_twice"), true).unwrap_err();
            assert!(e.message.contains("exactly_once_v2"), "{}", e.message);
        }
        let e = start_guarantee(g.as_deref(), false).unwrap_err();
        assert!(e.message.contains("--sql-listener none"), "{}", e.message);
    }
}
