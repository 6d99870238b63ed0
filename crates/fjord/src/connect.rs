//! `fjord connect`: Kafka Connect workers (the `fjord-connect` crate). `fjord connect standalone` is Kafka's
//! `connect-standalone.sh`: a worker.properties and connector files (`.properties` or `.json`);
//! `fjord connect distributed` (or `worker --config`) is `connect-distributed.sh`: connectors and offsets in topics.

use std::path::PathBuf;

use clap::Subcommand;

use crate::client::{CliError, EXIT_BAD_ARGS, EXIT_FAILURE};

#[derive(Subcommand)]
pub enum ConnectCmd {
    /// Run a standalone worker, as connect-standalone.sh: source offsets in a local file
    /// (offset.storage.file.filename), the REST API on `listeners` (default http://:8083), the connectors of
    /// the given files started at once. Ctrl-C (or SIGTERM) stops the tasks cleanly, committing what was sent.
    ///
    /// Example: fjord connect standalone worker.properties file-source.properties file-sink.json
    #[command(verbatim_doc_comment)]
    Standalone {
        /// The worker's properties (bootstrap.servers, offset.storage.file.filename, listeners,
        /// key.converter, value.converter, offset.flush.interval.ms).
        #[arg(value_name = "WORKER_PROPERTIES")]
        worker: PathBuf,
        /// Connector configurations: .properties, or .json as POST /connectors takes it.
        #[arg(value_name = "CONNECTOR_FILE")]
        connectors: Vec<PathBuf>,
    },
    /// Run a distributed-mode worker, as connect-distributed.sh: connector configs and target states in
    /// config.storage.topic, source offsets in offset.storage.topic (both compacted, Connect's record formats,
    /// created when missing), so that connectors and their positions outlive the worker. Needs group.id,
    /// config.storage.topic, offset.storage.topic and status.storage.topic. Workers with the same group.id
    /// join one group: one runs all its connectors, the others stand by, forward REST requests to it and take
    /// over when it dies or stops.
    ///
    /// Example: fjord connect distributed worker.properties
    #[command(verbatim_doc_comment)]
    Distributed {
        #[arg(value_name = "WORKER_PROPERTIES")]
        worker: PathBuf,
    },
    /// The same as `distributed`: fjord connect worker --config worker.properties
    Worker {
        #[arg(long, value_name = "WORKER_PROPERTIES")]
        config: PathBuf,
    },
    /// Create a connector on a running worker from a .json ({"name", "config"} or a flat object) or
    /// .properties file.
    ///
    /// Example: fjord connect create -f catalog-sink.json
    #[command(verbatim_doc_comment)]
    Create {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Create a predefined connector with sensible defaults (Confluent's `confluent local load`): file-source
    /// tails ./test.txt into connect-test, file-sink appends connect-test to ./test.sink.txt.
    ///
    /// Example: fjord connect load file-source --file catalog.txt --topic catalog
    #[command(verbatim_doc_comment)]
    Load {
        #[command(flatten)]
        load: crate::connect_rest::LoadArgs,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// List the worker's connectors with their type, state and task states.
    List {
        /// Print the JSON of GET /connectors?expand=status.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Show a connector's status (GET /connectors/NAME/status).
    Status {
        name: String,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Pause a connector (its tasks stop; resume continues from where they were).
    Pause {
        name: String,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Resume a paused or stopped connector.
    Resume {
        name: String,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Restart a connector (with --include-tasks its tasks too; --only-failed only the failed ones).
    Restart {
        name: String,
        #[arg(long)]
        include_tasks: bool,
        #[arg(long)]
        only_failed: bool,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Delete a connector.
    Delete {
        name: String,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Show a connector's offsets (KIP-875: a source's stored positions, a sink's committed offsets).
    Offsets {
        name: String,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Show the worker's recent log lines (the last 5,000 are kept), all or one connector's; --follow keeps
    /// printing new ones until Ctrl-C (the seed's `confluent log connect`).
    ///
    /// Example: fjord connect logs catalog-source --follow
    #[command(verbatim_doc_comment)]
    Logs {
        /// Only the lines of this connector (its tasks' lines and lines about it).
        name: Option<String>,
        /// Keep printing new lines as they are logged.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 100, value_name = "N")]
        lines: u64,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
    /// Show or change the worker's log levels (Connect's /admin/loggers): no argument lists the loggers with a
    /// level of their own; LOGGER shows the level that applies to it; LOGGER LEVEL sets it (TRACE, DEBUG, INFO,
    /// WARN, ERROR, OFF) for it and every logger under it, on this worker until it restarts. `root` is the
    /// level of everything else; loggers are module paths such as fjord_connect::pg_sink.
    ///
    /// Example: fjord connect loggers fjord_connect debug
    #[command(verbatim_doc_comment)]
    Loggers {
        logger: Option<String>,
        level: Option<String>,
        #[command(flatten)]
        rest: crate::connect_rest::RestArgs,
    },
}

pub async fn run(cmd: ConnectCmd) -> Result<(), CliError> {
    match cmd {
        ConnectCmd::Standalone { worker, connectors } => standalone(worker, connectors).await,
        ConnectCmd::Distributed { worker } | ConnectCmd::Worker { config: worker } => {
            distributed(worker).await
        }
        ConnectCmd::Create { file, rest } => crate::connect_rest::create(&rest, &file).await,
        ConnectCmd::Load { load, rest } => crate::connect_rest::load(&rest, &load).await,
        ConnectCmd::List { json, rest } => crate::connect_rest::list(&rest, json).await,
        ConnectCmd::Status { name, rest } => crate::connect_rest::status(&rest, &name).await,
        ConnectCmd::Pause { name, rest } => {
            crate::connect_rest::set_state(&rest, &name, "pause").await
        }
        ConnectCmd::Resume { name, rest } => {
            crate::connect_rest::set_state(&rest, &name, "resume").await
        }
        ConnectCmd::Restart {
            name,
            include_tasks,
            only_failed,
            rest,
        } => crate::connect_rest::restart(&rest, &name, include_tasks, only_failed).await,
        ConnectCmd::Delete { name, rest } => crate::connect_rest::delete(&rest, &name).await,
        ConnectCmd::Offsets { name, rest } => crate::connect_rest::offsets(&rest, &name).await,
        ConnectCmd::Logs {
            name,
            follow,
            lines,
            rest,
        } => crate::connect_rest::logs(&rest, name.as_deref(), lines, follow).await,
        ConnectCmd::Loggers {
            logger,
            level,
            rest,
        } => crate::connect_rest::loggers(&rest, logger.as_deref(), level.as_deref()).await,
    }
}

fn read_props(worker: &PathBuf) -> Result<fjord_connect::config::ConfigMap, CliError> {
    let text = std::fs::read_to_string(worker).map_err(|e| {
        CliError::new(
            EXIT_BAD_ARGS,
            format!("cannot read {}: {e}", worker.display()),
        )
    })?;
    fjord_connect::config::parse_properties(&text)
        .map_err(|e| CliError::new(EXIT_BAD_ARGS, format!("{}: {e}", worker.display())))
}

fn start_error(e: fjord_connect::Error) -> CliError {
    match e {
        fjord_connect::Error::BadRequest(m) => CliError::new(EXIT_BAD_ARGS, m),
        other => CliError::new(EXIT_FAILURE, other.to_string()),
    }
}

async fn distributed(worker: PathBuf) -> Result<(), CliError> {
    let props = read_props(&worker)?;
    let started = fjord_connect::distributed::start(props, None)
        .await
        .map_err(start_error)?;
    let w = &started.worker;
    // One machine-readable line on stdout: scripts and tests learn the REST port from it.
    println!(
        "fjord connect ready rest={} bootstrap={} offsets={} configs={}",
        started.rest,
        w.config.bootstrap_servers,
        started.config.offset_topic,
        started.config.config_topic,
    );
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "\nKafka Connect (distributed, group {}) on http://{}   (e.g. curl http://{}/connectors). Press Ctrl-C to stop.\n",
            started.config.group_id, started.rest, started.rest
        );
    }
    crate::serve::wait_for_signal().await;
    tracing::info!("connect worker stopping");
    w.shutdown().await;
    Ok(())
}

async fn standalone(worker: PathBuf, connectors: Vec<PathBuf>) -> Result<(), CliError> {
    let props = read_props(&worker)?;
    let started = fjord_connect::standalone::start(props, &connectors)
        .await
        .map_err(start_error)?;
    let w = &started.worker;
    // One machine-readable line on stdout: scripts and tests learn the REST port from it.
    println!(
        "fjord connect ready rest={} bootstrap={} offsets={}",
        started.rest,
        w.config.bootstrap_servers,
        w.config
            .offset_file
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
            .display()
    );
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "\nKafka Connect (standalone) on http://{}   (e.g. curl http://{}/connectors). Press Ctrl-C to stop.\n",
            started.rest, started.rest
        );
    }
    crate::serve::wait_for_signal().await;
    tracing::info!("connect worker stopping");
    w.shutdown().await;
    Ok(())
}
