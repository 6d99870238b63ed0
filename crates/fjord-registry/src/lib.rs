//! Fjord's Schema Registry: Confluent's Schema Registry REST API (Avro, JSON Schema and Protobuf), its
//! compatibility rules, and its storage in the compacted `_schemas` topic, in Confluent's record format.
//!
//! It is a Kafka client of the brokers (librdkafka through `rdkafka`) and knows nothing of their internals:
//! `fjord registry --bootstrap-server` runs it against any Kafka-compatible cluster, `fjord start` beside its
//! own broker. Several instances on one schemas topic elect one primary, which alone writes; the others
//! forward writes to it (`election.rs`, `forward.rs`).

pub mod api;
pub mod avro;
pub mod avro_json;
pub mod context;
pub mod diff;
pub mod election;
pub mod error;
pub mod formats;
pub mod forward;
pub mod json;
pub mod lookup_cache;
pub mod proto_json;
pub mod protobuf;
pub mod records;
pub mod registry;
pub mod state;
pub mod store;
pub mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

pub use election::{ElectionConfig, DEFAULT_GROUP_ID};
pub use error::{Error, Result};
pub use registry::Registry;

/// The topic Confluent's registry keeps its schemas in (`kafkastore.topic`).
pub const DEFAULT_TOPIC: &str = "_schemas";

/// Opens a registry backed by `topic` on the cluster at `bootstrap`: creates the topic if needed, reads it
/// to its end and joins the election of `election.group_id` (when eligible) before returning.
pub async fn open_kafka(
    bootstrap: &str,
    topic: &str,
    election: ElectionConfig,
) -> Result<Arc<Registry>> {
    let state = Arc::new(RwLock::new(state::State::default()));
    let store = store::KafkaStore::open(bootstrap, topic, election, state.clone()).await?;
    let registry = Arc::new(Registry::new(state, store::Store::Kafka(store)));
    // Answer the first writes without a wait where the group settles quickly: up to 30 s for this instance to
    // be the primary or to know the primary (the group's first rebalance waits 3 s for more members).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match registry.store().role() {
            store::Role::Primary | store::Role::Secondary(Some(_)) => break,
            store::Role::Secondary(None) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!("no primary registry elected yet; writes wait for one");
                break;
            }
            store::Role::Secondary(None) => {
                registry
                    .store()
                    .role_changed(std::time::Duration::from_millis(500))
                    .await
            }
        }
    }
    Ok(registry)
}

/// Binds `addr` and serves the REST API on it in a background task; returns the bound address.
pub async fn serve(registry: Arc<Registry>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(registry, listener)
}

/// Serves the REST API on `listener` in a background task; returns its address.
pub fn serve_on(
    registry: Arc<Registry>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let app = api::router(registry);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("schema registry HTTP server stopped: {e}");
        }
    });
    Ok(local)
}
