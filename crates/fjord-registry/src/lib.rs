//! Fjord's Schema Registry: Confluent's Schema Registry REST API (Avro, JSON Schema and Protobuf), its
//! compatibility rules, and its storage in the compacted `_schemas` topic, in Confluent's record format.
//!
//! It is a Kafka client of the brokers (librdkafka through `rdkafka`) and knows nothing of their internals:
//! `fjord registry --bootstrap-server` runs it against any Kafka-compatible cluster, `fjord start` beside its
//! own broker. One registry instance writes (see ARCHITECTURE.md for what several would need).

pub mod api;
pub mod avro;
pub mod error;
pub mod formats;
pub mod json;
pub mod protobuf;
pub mod records;
pub mod registry;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

pub use error::{Error, Result};
pub use registry::Registry;

/// The topic Confluent's registry keeps its schemas in (`kafkastore.topic`).
pub const DEFAULT_TOPIC: &str = "_schemas";

/// Opens a registry backed by `topic` on the cluster at `bootstrap`: creates the topic if needed and reads it
/// to its end before returning.
pub async fn open_kafka(bootstrap: &str, topic: &str) -> Result<Arc<Registry>> {
    let state = Arc::new(RwLock::new(state::State::default()));
    let store = store::KafkaStore::open(bootstrap, topic, state.clone()).await?;
    Ok(Arc::new(Registry::new(state, store::Store::Kafka(store))))
}

/// Binds `addr` and serves the REST API on it in a background task; returns the bound address.
pub async fn serve(registry: Arc<Registry>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = api::router(registry);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("schema registry HTTP server stopped: {e}");
        }
    });
    Ok(local)
}
