//! Fjord's web dashboard: a few hand-written pages (HTML, CSS and one JavaScript module, embedded in the binary
//! with `include_str!`, no build step and nothing fetched from the internet) and the JSON API under `/api/` that
//! they read, computed in-process from one broker's state. The binary mounts [`router`] on the same listener as
//! `/metrics`.
//!
//! **Architecture Invariant:** the dashboard changes cluster state only through `fjord_broker::admin` (the
//! same validation and the same messages as the Kafka APIs the CLI uses) and groups only through
//! `fjord_broker::groups::{reset_offsets, delete_groups}` (OffsetCommit's admin path, DeleteGroups'); it never
//! proposes metadata commands or writes `__consumer_offsets` itself. Every read is bounded (page sizes, record counts and bytes of the message browser), and bad input
//! is a 4xx JSON answer `{"error": "..."}`, never a panic or a 500.
//!
//! It knows nothing of HTTP listeners, TLS or login: the binary decides where the router is served.

mod api;
mod assets;
mod extra;
mod history;
mod openapi;
mod services;

use std::sync::Arc;

use fjord_broker::BrokerState;

pub use history::History;
pub use services::Services;

/// How often the overview's rates are sampled, and how many samples are kept (15 minutes).
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
pub const HISTORY_SAMPLES: usize = 180;

/// The dashboard's pages and API for `state`, with the schemas and Connect pages served through `services` (as
/// the binary fills it in). Starts the sampler of the overview's rates (a task that lives as long as the
/// runtime; it only reads counters).
pub fn router(state: Arc<BrokerState>, services: Services) -> axum::Router {
    let history = Arc::new(History::new(HISTORY_SAMPLES));
    history::spawn_sampler(state.clone(), history.clone(), SAMPLE_INTERVAL);
    api::routes(api::Ctx {
        state,
        history,
        reads: Arc::new(tokio::sync::Semaphore::new(api::MAX_READS)),
        services,
    })
    .merge(assets::routes())
}
