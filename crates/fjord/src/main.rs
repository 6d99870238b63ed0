//! The `fjord` command line: `fjord start` runs a single-node platform with defaults, `fjord broker` runs a
//! broker from a Kafka-style `server.properties`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fjord_broker::config::{parse_properties, BrokerConfig};
use fjord_broker::Broker;

#[derive(Parser)]
#[command(
    name = "fjord",
    version,
    about = "Fjord: a Kafka-compatible event-streaming platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a single-node platform: a broker on 127.0.0.1:9092 and /metrics on 127.0.0.1:8080,
    /// with data in ./fjord-data.
    ///
    /// Example: fjord start --data-dir /var/lib/fjord
    Start {
        /// Where logs and metadata live.
        #[arg(long, default_value = "./fjord-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        opts: BrokerOpts,
    },
    /// Run a broker configured like kafka-server-start.sh.
    ///
    /// Example: fjord broker --config server.properties --override num.partitions=3
    Broker {
        #[command(flatten)]
        opts: BrokerOpts,
    },
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FJORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let props = match &cli.command {
        Cmd::Start { data_dir, opts } => opts.properties(&[
            ("log.dirs", data_dir.display().to_string()),
            ("metrics.listener", "127.0.0.1:8080".to_string()),
        ])?,
        Cmd::Broker { opts } => opts.properties(&[])?,
    };
    let config = BrokerConfig::from_properties(props)?;
    serve(config).await
}

async fn serve(config: BrokerConfig) -> Result<()> {
    let metrics_addr = config.metrics_listener;
    let data_dir = config.log_dir.clone();
    let broker = Broker::start(config)
        .await
        .context("broker failed to start")?;
    let kafka = broker.local_addr();
    let http = match metrics_addr {
        Some(addr) => Some(serve_metrics(addr, broker.state().clone()).await?),
        None => None,
    };
    // One machine-readable line on stdout: scripts and tests learn the bound ports from it.
    match http {
        Some(h) => println!(
            "fjord ready kafka={kafka} http={h} data={}",
            data_dir.display()
        ),
        None => println!("fjord ready kafka={kafka} data={}", data_dir.display()),
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    broker.shutdown().await?;
    Ok(())
}

async fn serve_metrics(
    addr: SocketAddr,
    state: Arc<fjord_broker::BrokerState>,
) -> Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind metrics.listener {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let state = state.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(bound)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
