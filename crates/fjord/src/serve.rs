//! `fjord start` and `fjord broker`: run a broker (and, on `start`, the HTTP endpoint for /metrics, /health,
//! /ready and the dashboard with its /api/) until SIGINT or SIGTERM, then shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use fjord_broker::config::BrokerConfig;
use fjord_broker::Broker;

/// What the dashboard learns of the registry and Connect worker as they start (nothing without the feature).
#[cfg(feature = "dashboard")]
type DashboardServices = fjord_dashboard::Services;
#[cfg(not(feature = "dashboard"))]
#[derive(Clone, Default)]
struct DashboardServices;

/// Whether and with which login the dashboard is served on a broker's metrics.listener (nothing without the
/// feature).
#[cfg(feature = "dashboard")]
type DashboardAccess = fjord_dashboard::Access;
#[cfg(not(feature = "dashboard"))]
#[derive(Clone, Debug)]
struct DashboardAccess;

/// The dashboard's access on `config`'s metrics.listener, decided before anything starts: a listener off
/// loopback without users (`dashboard.auth.basic.users`) and without an opt-out stops start-up here, with the
/// options to set.
fn dashboard_access(config: &BrokerConfig) -> Result<DashboardAccess> {
    #[cfg(feature = "dashboard")]
    {
        match config.metrics_listener {
            Some(addr) => fjord_dashboard::access(&config.props, addr.ip())
                .map_err(|e| anyhow::anyhow!("broker {}: {e}", config.node_id)),
            None => Ok(fjord_dashboard::Access::Off),
        }
    }
    #[cfg(not(feature = "dashboard"))]
    {
        let _ = config;
        Ok(DashboardAccess)
    }
}

/// Whether the listener serves the dashboard.
fn dashboard_served(access: &DashboardAccess) -> bool {
    #[cfg(feature = "dashboard")]
    {
        !matches!(access, fjord_dashboard::Access::Off)
    }
    #[cfg(not(feature = "dashboard"))]
    {
        let _ = access;
        false
    }
}

/// Tells the dashboard that the registry serves (its REST router, called in-process).
#[allow(unused_variables)]
fn show_registry(services: &DashboardServices, registry: &RunningRegistry) {
    #[cfg(all(feature = "dashboard", feature = "registry"))]
    {
        services.set_registry(
            registry.addr,
            fjord_registry::api::router(registry.registry.clone()),
        );
        decode_with_registry(services);
    }
}

/// The message browser decodes records as `fjord consume --value-format` does.
#[cfg(all(feature = "dashboard", feature = "registry"))]
fn decode_with_registry(services: &DashboardServices) {
    services.set_schema_compiler(Arc::new(|schema_type, text, referenced| {
        let d = fjord_registry::wire::Decoder::compile(schema_type, text, referenced)?;
        let d: fjord_dashboard::SchemaDecoder = Arc::new(move |body: &[u8]| d.decode(body));
        Ok(d)
    }));
}

/// A schema registry elsewhere for the dashboard of a broker that runs none (`fjord broker`):
/// `dashboard.schema.registry.url=http://host:port`. Its schema pages and the message browser's registry format
/// reach it over HTTP/1.1 (fjord-registry's forwarding client), as they reach an in-process one.
const REMOTE_REGISTRY: &str = "dashboard.schema.registry.url";

#[allow(unused_variables)]
fn show_remote_registry(services: &DashboardServices, url: &str) -> Result<()> {
    #[cfg(all(feature = "dashboard", feature = "registry"))]
    {
        use axum::response::IntoResponse as _;
        let authority = fjord_registry::forward::authority(url)
            .map_err(|e| anyhow::anyhow!("{REMOTE_REGISTRY}: {e}"))?
            .to_string();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&authority)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{REMOTE_REGISTRY}: cannot resolve `{authority}` (give http://HOST:PORT)"
                )
            })?;
        let target = url.to_string();
        let proxy = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let url = target.clone();
            async move {
                let method = req.method().clone();
                let path = req
                    .uri()
                    .path_and_query()
                    .map_or("/".to_string(), |p| p.as_str().to_string());
                let ctype = req.headers().get(axum::http::header::CONTENT_TYPE).cloned();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                match fjord_registry::forward::forward(&url, method, &path, ctype, body).await {
                    Ok(a) => {
                        let mut r = (a.status, a.body).into_response();
                        if let Some(ct) = a.content_type {
                            r.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
                        }
                        r
                    }
                    Err(
                        fjord_registry::forward::ForwardError::NotSent(e)
                        | fjord_registry::forward::ForwardError::Failed(e),
                    ) => (
                        axum::http::StatusCode::BAD_GATEWAY,
                        serde_json::json!({"message": format!("the schema registry at {url}: {e}")})
                            .to_string(),
                    )
                        .into_response(),
                }
            }
        });
        services.set_registry(addr, proxy);
        decode_with_registry(services);
        tracing::info!(%url, "the dashboard reads schemas from the registry at {REMOTE_REGISTRY}");
    }
    Ok(())
}

/// The services `fjord start` runs beside the broker, each a client of it (`None`: not run).
#[derive(Clone, Copy, Debug, Default)]
pub struct Services {
    pub registry: Option<SocketAddr>,
    pub connect: Option<SocketAddr>,
    pub sql: Option<SocketAddr>,
    /// The SQL server's default processing guarantee (`--processing-guarantee`): true for exactly once.
    pub sql_exactly_once: bool,
}

pub async fn serve(config: BrokerConfig, services: Services) -> Result<()> {
    let Services {
        registry: registry_listener,
        connect: connect_listener,
        sql: sql_listener,
        sql_exactly_once,
    } = services;
    let metrics_addr = config.metrics_listener;
    let access = dashboard_access(&config)?;
    let data_dir = config.log_dir.clone();
    let broker = Broker::start(config)
        .await
        .context("broker failed to start")?;
    let kafka = broker.local_addr();
    let dashboard_services = DashboardServices::default();
    let http = match metrics_addr {
        Some(addr) => Some(
            serve_metrics(
                addr,
                broker.state().clone(),
                dashboard_services.clone(),
                &access,
            )
            .await?,
        ),
        None => None,
    };
    // The registry is a Kafka client of this broker like any other (it reads and writes `_schemas`); it starts
    // once the broker serves, and a registry that cannot start stops the platform rather than leave it
    // half-running.
    let registry = match registry_listener {
        Some(addr) if broker.state().config.is_broker => {
            match start_registry(
                &kafka.to_string(),
                addr,
                REGISTRY_TOPIC,
                &RegistryElection::default(),
            )
            .await
            {
                Ok(bound) => bound,
                Err(e) => {
                    broker.shutdown().await?;
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    if let Some(r) = &registry {
        show_registry(&dashboard_services, r);
    } else if let Some(url) = broker
        .state()
        .config
        .props
        .get(REMOTE_REGISTRY)
        .filter(|u| !u.trim().is_empty())
    {
        if let Err(e) = show_remote_registry(&dashboard_services, url.trim()) {
            broker.shutdown().await?;
            return Err(e);
        }
    }
    // The Connect worker, likewise a client of this broker, keeps its connectors and offsets in its topics.
    let connect = match connect_listener {
        Some(addr) if broker.state().config.is_broker => {
            match start_connect(&kafka.to_string(), addr, &data_dir).await {
                Ok(c) => c,
                Err(e) => {
                    broker.shutdown().await?;
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    #[cfg(all(feature = "dashboard", feature = "connect"))]
    if let Some(c) = &connect {
        dashboard_services.set_connect(c.rest, fjord_connect::api::router(c.worker.clone()));
    }
    // The SQL server, a client of this broker too: its catalog and queries live in its command topic.
    let sql = match sql_listener {
        Some(addr) if broker.state().config.is_broker => {
            // AVRO and JSON_SR formats use the registry beside it.
            let registry_url = registry.as_ref().map(|r| format!("http://{}", r.addr));
            match start_sql(&kafka.to_string(), addr, registry_url, sql_exactly_once).await {
                Ok(s) => s,
                Err(e) => {
                    if let Some(c) = connect {
                        c.shutdown().await;
                    }
                    broker.shutdown().await?;
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let sql_addr = sql.as_ref().map(|s| s.addr);
    let connect_addr = connect.as_ref().map(|c| c.rest);
    let registry_addr = registry.as_ref().map(|r| r.addr);
    let registry_field = registry_addr
        .map(|r| format!(" registry={r}"))
        .unwrap_or_default()
        + &connect_addr
            .map(|c| format!(" connect={c}"))
            .unwrap_or_default()
        + &sql_addr.map(|s| format!(" sql={s}")).unwrap_or_default();
    // One machine-readable line on stdout: scripts and tests learn the bound ports from it. A controller-only
    // node serves no Kafka clients: it names its controller listener instead.
    if !broker.state().config.is_broker {
        let http = http.map(|h| format!(" http={h}")).unwrap_or_default();
        println!(
            "fjord ready controller={kafka}{http} data={}",
            data_dir.display()
        );
    } else {
        match http {
            Some(h) => println!(
                "fjord ready kafka={kafka} http={h}{registry_field} data={}",
                data_dir.display()
            ),
            None => println!(
                "fjord ready kafka={kafka}{registry_field} data={}",
                data_dir.display()
            ),
        }
    }
    // And a friendly summary for a person at a terminal.
    if broker.state().config.is_broker && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("\nFjord is running.");
        eprintln!("  Kafka protocol:  {kafka}   (e.g. kcat -b {kafka} -L, or fjord topics list -b {kafka})");
        if let Some(h) = http {
            if dashboard_served(&access) {
                eprintln!("  Dashboard:       http://{h}/");
            }
            eprintln!("  Metrics:         http://{h}/metrics");
        }
        if let Some(r) = registry_addr {
            eprintln!("  Schema Registry: http://{r}   (e.g. curl http://{r}/subjects)");
        }
        if let Some(c) = connect_addr {
            eprintln!("  Kafka Connect:   http://{c}   (e.g. curl http://{c}/connector-plugins)");
        }
        if let Some(s) = sql_addr {
            eprintln!("  SQL:             http://{s}   (e.g. fjord sql --server http://{s})");
        }
        eprintln!("  Data directory:  {}", data_dir.display());
        eprintln!("Press Ctrl-C to stop.\n");
    }
    // A signal stops the broker cleanly; so does a failure it cannot serve through (the log directory holding
    // the metadata quorum went offline), but then the exit status says so.
    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        reason = broker.fatal() => Some(reason),
    };
    tracing::info!("shutting down");
    // The SQL queries and the worker's tasks finish their batches and commit while the broker still serves them.
    if let Some(s) = sql {
        s.shutdown().await;
    }
    if let Some(c) = connect {
        c.shutdown().await;
    }
    if let Some(r) = registry {
        r.leave().await;
    }
    broker.shutdown().await?;
    match fatal {
        Some(reason) => anyhow::bail!("broker stopped: {reason}"),
        None => Ok(()),
    }
}

/// The schemas topic of the registry `fjord start` runs (Confluent's default `kafkastore.topic`).
const REGISTRY_TOPIC: &str = "_schemas";

/// How a registry takes part in the election of its group (`fjord registry`'s flags; `fjord start` uses the
/// defaults: group `schema-registry`, its own address, eligible).
#[derive(Clone, Debug)]
pub struct RegistryElection {
    pub group_id: String,
    /// `http://host:port` other instances forward writes to; default `http://<the bound address>`.
    pub advertised_url: Option<String>,
    pub eligible: bool,
}

impl Default for RegistryElection {
    fn default() -> Self {
        RegistryElection {
            group_id: "schema-registry".into(),
            advertised_url: None,
            eligible: true,
        }
    }
}

/// A registry serving in this process.
pub struct RunningRegistry {
    pub addr: SocketAddr,
    #[cfg(feature = "registry")]
    registry: Arc<fjord_registry::Registry>,
}

impl RunningRegistry {
    /// Leaves the registry group, so that another instance becomes primary at once (not after the session
    /// timeout); before the broker it talks to stops.
    async fn leave(self) {
        #[cfg(feature = "registry")]
        {
            let r = self.registry;
            // Bounded: with the cluster unreachable, leaving cannot complete, and the process stops anyway.
            let leave = tokio::task::spawn_blocking(move || r.store().leave());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), leave).await;
        }
    }
}

#[cfg(feature = "registry")]
async fn start_registry(
    bootstrap: &str,
    listen: SocketAddr,
    topic: &str,
    election: &RegistryElection,
) -> Result<Option<RunningRegistry>> {
    // Bind first: the advertised URL (where the other instances forward writes) defaults to the bound address.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("the schema registry cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let advertised = match &election.advertised_url {
        Some(url) => {
            fjord_registry::forward::authority(url).map_err(|e| {
                anyhow::anyhow!("--advertised-url: {e} (expected http://HOST:PORT)")
            })?;
            url.clone()
        }
        None if bound.ip().is_unspecified() => {
            tracing::warn!(
                "the registry listens on {bound}: other instances reach it as http://127.0.0.1:{} unless \
                 --advertised-url says otherwise",
                bound.port()
            );
            format!("http://127.0.0.1:{}", bound.port())
        }
        None => format!("http://{bound}"),
    };
    let config =
        fjord_registry::ElectionConfig::new(&election.group_id, &advertised, election.eligible);
    let registry = fjord_registry::open_kafka(bootstrap, topic, config)
        .await
        .with_context(|| format!("the schema registry failed to start against {bootstrap}"))?;
    let addr = fjord_registry::serve_on(registry.clone(), listener)
        .with_context(|| format!("the schema registry cannot listen on {listen}"))?;
    Ok(Some(RunningRegistry { addr, registry }))
}

/// A build without the `registry` feature: `fjord start` runs without one and says so.
#[cfg(not(feature = "registry"))]
async fn start_registry(
    _bootstrap: &str,
    _listen: SocketAddr,
    _topic: &str,
    _election: &RegistryElection,
) -> Result<Option<RunningRegistry>> {
    tracing::warn!("this fjord was built without the `registry` feature: no schema registry");
    Ok(None)
}

/// The Connect worker `fjord start` runs.
#[cfg(feature = "connect")]
struct ConnectWorker {
    rest: SocketAddr,
    worker: std::sync::Arc<fjord_connect::Worker>,
}

#[cfg(feature = "connect")]
impl ConnectWorker {
    async fn shutdown(self) {
        self.worker.shutdown().await;
    }
}

/// A distributed-mode Connect worker against `bootstrap` (the platform's own broker), its REST API on `listen`:
/// connectors and offsets live in the broker's `connect-configs` and `connect-offsets` topics, so that they
/// outlive a restart. A `data_dir/connect.offsets` left by an earlier (standalone) `fjord start` is imported.
#[cfg(feature = "connect")]
async fn start_connect(
    bootstrap: &str,
    listen: SocketAddr,
    data_dir: &std::path::Path,
) -> Result<Option<ConnectWorker>> {
    let props = [
        ("bootstrap.servers", bootstrap.to_string()),
        ("group.id", "connect-cluster".into()),
        ("config.storage.topic", "connect-configs".into()),
        ("offset.storage.topic", "connect-offsets".into()),
        ("status.storage.topic", "connect-status".into()),
        ("listeners", format!("http://{listen}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let old_offsets = data_dir.join("connect.offsets");
    let started = fjord_connect::distributed::start(props, Some(&old_offsets))
        .await
        .with_context(|| format!("the Connect worker failed to start on {listen}"))?;
    Ok(Some(ConnectWorker {
        rest: started.rest,
        worker: started.worker,
    }))
}

/// A build without the `connect` feature: `fjord start` runs without a Connect worker and says so.
#[cfg(not(feature = "connect"))]
#[allow(dead_code)] // never constructed without the feature
struct ConnectWorker {
    rest: SocketAddr,
}

#[cfg(not(feature = "connect"))]
impl ConnectWorker {
    async fn shutdown(self) {}
}

#[cfg(not(feature = "connect"))]
async fn start_connect(
    _bootstrap: &str,
    _listen: SocketAddr,
    _data_dir: &std::path::Path,
) -> Result<Option<ConnectWorker>> {
    tracing::warn!("this fjord was built without the `connect` feature: no Connect worker");
    Ok(None)
}

/// The SQL server `fjord start` runs.
struct SqlServer {
    addr: SocketAddr,
    #[cfg(feature = "sql")]
    engine: Arc<fjord_sql::engine::Engine>,
}

impl SqlServer {
    async fn shutdown(self) {
        #[cfg(feature = "sql")]
        {
            let e = self.engine;
            let stop = tokio::task::spawn_blocking(move || e.shutdown());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), stop).await;
        }
    }
}

#[cfg(feature = "sql")]
async fn start_sql(
    bootstrap: &str,
    listen: SocketAddr,
    registry_url: Option<String>,
    exactly_once: bool,
) -> Result<Option<SqlServer>> {
    let mut cfg = fjord_sql::engine::EngineConfig::new(bootstrap, fjord_sql::engine::COMMAND_TOPIC);
    cfg.registry_url = registry_url;
    cfg.exactly_once = exactly_once;
    let (engine, addr) = crate::sql::start(cfg, listen).await?;
    Ok(Some(SqlServer { addr, engine }))
}

/// A build without the `sql` feature: `fjord start` runs without a SQL server and says so.
#[cfg(not(feature = "sql"))]
async fn start_sql(
    _bootstrap: &str,
    _listen: SocketAddr,
    _registry_url: Option<String>,
    _exactly_once: bool,
) -> Result<Option<SqlServer>> {
    tracing::warn!("this fjord was built without the `sql` feature: no SQL server");
    Ok(None)
}

/// `fjord registry`: the Schema Registry alone, against any Kafka-compatible cluster, until SIGINT or SIGTERM.
#[cfg(feature = "registry")]
pub async fn serve_registry(
    bootstrap: &str,
    listen: SocketAddr,
    topic: &str,
    election: RegistryElection,
) -> Result<()> {
    let Some(running) = start_registry(bootstrap, listen, topic, &election).await? else {
        anyhow::bail!("no schema registry in this build");
    };
    let bound = running.addr;
    println!(
        "fjord registry ready listen={bound} bootstrap={bootstrap} topic={topic} group={}",
        election.group_id
    );
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("\nSchema Registry on http://{bound} (schemas in {topic} on {bootstrap}, group {}). Press Ctrl-C to stop.\n", election.group_id);
    }
    wait_for_signal().await;
    tracing::info!("schema registry stopping");
    running.leave().await;
    Ok(())
}

/// One broker of `fjord start --brokers N`, started.
struct Running {
    broker: Broker,
    http: Option<SocketAddr>,
    data_dir: std::path::PathBuf,
}

/// `fjord start --brokers N`: starts every broker at once (each waits for a quorum of the others), serves
/// each one's /metrics, runs the Schema Registry on `registry_listener` against all of them, prints where
/// everything is, and on SIGINT/SIGTERM stops them one after another with a controlled shutdown, the raft
/// leader last (so that leadership moves once, not at every stop).
pub async fn serve_cluster(
    configs: Vec<BrokerConfig>,
    root: std::path::PathBuf,
    registry_listener: Option<SocketAddr>,
) -> Result<()> {
    let n = configs.len();
    let dashboard_services = DashboardServices::default();
    let accesses = configs
        .iter()
        .map(dashboard_access)
        .collect::<Result<Vec<_>>>()?;
    let starts: Vec<_> = configs
        .into_iter()
        .zip(accesses)
        .map(|(config, access)| {
            tokio::spawn(async move {
                let id = config.node_id;
                let metrics_addr = config.metrics_listener;
                let data_dir = config.log_dir.clone();
                let started = Broker::start(config)
                    .await
                    .with_context(|| format!("broker {id} failed to start"));
                (started, metrics_addr, data_dir, access)
            })
        })
        .collect();
    let mut running: Vec<Running> = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    for start in starts {
        match start.await {
            Ok((Ok(broker), metrics_addr, data_dir, access)) => {
                let http = match metrics_addr {
                    Some(addr) => match serve_metrics(
                        addr,
                        broker.state().clone(),
                        dashboard_services.clone(),
                        &access,
                    )
                    .await
                    {
                        Ok(h) => Some(h),
                        Err(e) => {
                            failure.get_or_insert(e);
                            None
                        }
                    },
                    None => None,
                };
                running.push(Running {
                    broker,
                    http,
                    data_dir,
                })
            }
            Ok((Err(e), _, _, _)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("a broker's start task failed: {e}"));
            }
        }
    }
    if let Some(e) = failure {
        stop_all(running).await;
        return Err(e);
    }
    // Each broker's start waited for its own unfencing; ready means every broker sees every other live too, so
    // that a topic created right after the ready line can be placed on all of them.
    let all_live = async {
        loop {
            if running
                .iter()
                .all(|r| r.broker.state().meta.state().live_brokers().len() >= n)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(30), all_live)
        .await
        .is_err()
    {
        tracing::warn!("not every broker sees all {n} brokers live after 30 s; going on");
    }
    let bootstrap: Vec<String> = running
        .iter()
        .map(|r| r.broker.local_addr().to_string())
        .collect();
    let bootstrap = bootstrap.join(",");
    // The registry, a client of the whole cluster (its `_schemas` topic gets the cluster's replication factor).
    let registry = match registry_listener {
        Some(addr) => match start_registry(
            &bootstrap,
            addr,
            REGISTRY_TOPIC,
            &RegistryElection::default(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                stop_all(running).await;
                return Err(e);
            }
        },
        None => None,
    };
    if let Some(r) = &registry {
        show_registry(&dashboard_services, r);
    }
    let registry_field = registry
        .as_ref()
        .map(|r| format!(" registry={}", r.addr))
        .unwrap_or_default();
    // One machine-readable line per broker, then the ready line (its kafka= and http= are broker 1's).
    for r in &running {
        let st = r.broker.state();
        let controller = st
            .meta
            .controller_addr()
            .map_or("-".to_string(), |a| a.to_string());
        let http = r.http.map_or("-".to_string(), |h| h.to_string());
        println!(
            "fjord broker node={} kafka={} controller={controller} http={http} data={}",
            st.config.node_id,
            r.broker.local_addr(),
            r.data_dir.display()
        );
    }
    let first = &running[0];
    match first.http {
        Some(h) => println!(
            "fjord ready kafka={} http={h} bootstrap={bootstrap} brokers={n}{registry_field} data={}",
            first.broker.local_addr(),
            root.display()
        ),
        None => println!(
            "fjord ready kafka={} bootstrap={bootstrap} brokers={n}{registry_field} data={}",
            first.broker.local_addr(),
            root.display()
        ),
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("\nFjord is running a {n}-broker cluster.");
        eprintln!("  NODE  KAFKA PROTOCOL         CONTROLLER             METRICS                        DATA");
        for r in &running {
            let st = r.broker.state();
            eprintln!(
                "  {:<4}  {:<21}  {:<21}  {:<29}  {}",
                st.config.node_id,
                r.broker.local_addr().to_string(),
                st.meta
                    .controller_addr()
                    .map_or("-".to_string(), |a| a.to_string()),
                r.http
                    .map_or("-".to_string(), |h| format!("http://{h}/metrics")),
                r.data_dir.display()
            );
        }
        eprintln!("  Clients:  --bootstrap-server {bootstrap}");
        if let Some(r) = &registry {
            eprintln!(
                "  Schema Registry: http://{}   (e.g. curl http://{}/subjects)",
                r.addr, r.addr
            );
        }
        eprintln!("            (e.g. fjord cluster status --bootstrap-server {bootstrap})");
        eprintln!("Press Ctrl-C to stop.\n");
    }
    let fatal = tokio::select! {
        _ = wait_for_signal() => None,
        reason = first_fatal(&running) => Some(reason),
    };
    tracing::info!("shutting down {n} brokers");
    if let Some(r) = registry {
        r.leave().await;
    }
    stop_all(running).await;
    match fatal {
        Some(reason) => anyhow::bail!("broker stopped: {reason}"),
        None => Ok(()),
    }
}

/// The first fatal condition of any broker (see [`Broker::fatal`]).
async fn first_fatal(running: &[Running]) -> String {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    let mut futs: Vec<Pin<Box<dyn Future<Output = String> + Send + '_>>> = running
        .iter()
        .map(|r| Box::pin(r.broker.fatal()) as Pin<Box<dyn Future<Output = String> + Send + '_>>)
        .collect();
    std::future::poll_fn(|cx| {
        for (i, f) in futs.iter_mut().enumerate() {
            if let Poll::Ready(reason) = f.as_mut().poll(cx) {
                return Poll::Ready(format!(
                    "broker {}: {reason}",
                    running[i].broker.state().config.node_id
                ));
            }
        }
        Poll::Pending
    })
    .await
}

/// Controlled shutdown of each broker in turn, the raft leader last; errors are logged, every broker is
/// stopped.
async fn stop_all(mut running: Vec<Running>) {
    let leader = running.first().and_then(|r| r.broker.state().meta.leader());
    running.sort_by_key(|r| Some(r.broker.state().config.node_id) == leader);
    for r in running {
        let id = r.broker.state().config.node_id;
        tracing::info!(node_id = id, "stopping broker");
        if let Err(e) = r.broker.shutdown().await {
            tracing::error!(node_id = id, error = %e, "broker did not shut down cleanly");
        }
    }
}

#[cfg_attr(not(feature = "dashboard"), allow(unused_variables))]
async fn serve_metrics(
    addr: SocketAddr,
    state: Arc<fjord_broker::BrokerState>,
    services: DashboardServices,
    access: &DashboardAccess,
) -> Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind metrics.listener {addr}"))?;
    let bound = listener.local_addr()?;
    let metrics_state = state.clone();
    #[cfg(feature = "dashboard")]
    let dashboard = {
        use fjord_dashboard::Access;
        match access {
            Access::Off => {
                tracing::info!(%bound, "dashboard.enable=false: metrics.listener serves only /metrics, /health and /ready")
            }
            Access::Open if !bound.ip().is_loopback() => tracing::warn!(
                %bound,
                "dashboard.auth=none: the dashboard is served WITHOUT A LOGIN on a non-loopback address; anyone who reaches it can read every record and delete topics (put an authenticating proxy in front, or set dashboard.auth.basic.users)"
            ),
            Access::Open => {}
            Access::Basic(_) => {
                tracing::info!(%bound, "the dashboard requires a login (dashboard.auth.basic.users)")
            }
        }
        fjord_dashboard::router(state.clone(), services, access)
    };
    let ready_state = state;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let state = metrics_state.clone();
                async move {
                    // The scrape takes every partition's lock and the group coordinator's: on a blocking
                    // thread, never on the async workers that serve the Kafka protocol.
                    let text = tokio::task::spawn_blocking(move || state.metrics_text())
                        .await
                        .unwrap_or_else(|e| format!("# scrape failed: {e}\n"));
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        // Liveness: the process answers HTTP. Nothing else is checked, so a restart is only triggered by a
        // broker that no longer responds at all.
        .route("/health", get(|| async { "ok\n" }))
        // Readiness: the broker can serve every partition it hosts (see BrokerState::readiness).
        .route(
            "/ready",
            get(move || {
                let state = ready_state.clone();
                async move {
                    match state.readiness() {
                        Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        );
    #[cfg(feature = "dashboard")]
    let app = app.merge(dashboard);
    tokio::spawn(async move {
        // With the client's address: the dashboard's login limits failed attempts per address.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(bound)
}

pub async fn wait_for_signal() {
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
