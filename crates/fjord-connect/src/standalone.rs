//! Standalone mode, as Kafka's `connect-standalone.sh worker.properties connector.properties...`: one worker,
//! source offsets in a local file, connectors from files (and the REST API), nothing shared with other workers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

use crate::config::{read_connector_file, ConfigMap, WorkerConfig};
use crate::error::{Error, Result};
use crate::offsets::OffsetStore;
use crate::worker::{TargetState, Worker};

/// How long the worker waits for the Kafka cluster at start-up.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(15);

/// A started standalone worker.
pub struct Standalone {
    pub worker: Arc<Worker>,
    /// Where the REST API listens.
    pub rest: SocketAddr,
}

/// Starts a standalone worker: reads the worker properties and the connector files (every one checked before
/// anything starts), opens the offsets file, learns the cluster's id, serves the REST API and starts the
/// connectors.
pub async fn start(worker_props: ConfigMap, connector_files: &[PathBuf]) -> Result<Standalone> {
    let config = WorkerConfig::from_properties(worker_props)?;
    let mut connectors = Vec::new();
    for f in connector_files {
        let c = read_connector_file(f)?;
        Worker::check_config(&c).map_err(|e| Error::BadRequest(format!("{}: {e}", f.display())))?;
        connectors.push((f, c));
    }
    let offsets = Arc::new(OffsetStore::open(
        config
            .offset_file
            .as_deref()
            .expect("required in standalone mode"),
    )?);
    let bootstrap = config.bootstrap_servers.clone();
    let cluster_id = tokio::task::spawn_blocking(move || cluster_id(&bootstrap))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let (listener, rest, worker_id) = config.bind_rest().await?;
    let worker = Arc::new(Worker::new(config, offsets, worker_id, cluster_id));
    let app = crate::api::router(worker.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("Connect REST server stopped: {e}");
        }
    });
    for (f, c) in connectors {
        worker
            .create(c, TargetState::Running)
            .await
            .map_err(|e| Error::BadRequest(format!("{}: {e}", f.display())))?;
    }
    Ok(Standalone { worker, rest })
}

/// The Kafka cluster's id; an unreachable cluster is an error naming `bootstrap.servers`.
pub(crate) fn cluster_id(bootstrap: &str) -> Result<String> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| Error::BadRequest(format!("bootstrap.servers={bootstrap}: {e}")))?;
    producer
        .client()
        .fetch_cluster_id(CLUSTER_TIMEOUT)
        .ok_or_else(|| {
            Error::Internal(format!(
                "cannot reach the Kafka cluster at bootstrap.servers={bootstrap} within {CLUSTER_TIMEOUT:?}; is it running?"
            ))
        })
}
