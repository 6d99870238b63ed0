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
//! It knows nothing of HTTP listeners or TLS: the binary decides where the router is served, after asking
//! [`access`] whether (and with which login) it may be, given the address the listener binds. The login
//! ([`Access::Basic`]) guards the pages and `/api/`; the binary serves `/metrics`, `/health` and `/ready`
//! outside this router, so they stay open to scrapers and probes.

mod api;
mod assets;
mod auth;
mod decode;
mod extra;
mod history;
mod live;
mod openapi;
mod search;
mod services;
mod walk;

use std::sync::Arc;

use fjord_broker::BrokerState;

pub use auth::{access, Access};
pub use history::{History, LagHistory};
pub use services::{SchemaCompiler, SchemaDecoder, Services};

/// How often the overview's rates are sampled, and how many samples are kept (15 minutes).
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
pub const HISTORY_SAMPLES: usize = 180;
pub use live::MAX_STREAMS;
/// Groups whose lag history is kept (those with the largest lag when there are more): at most
/// 1,000 x 180 samples of 16 bytes, under 3 MB.
pub const MAX_LAG_GROUPS: usize = 1000;

/// The dashboard's pages and API for `state`, with the schemas and Connect pages served through `services` (as
/// the binary fills it in). Starts the sampler of the overview's rates (a task that lives as long as the
/// runtime; it only reads counters). With [`Access::Basic`] every page and API request needs the login;
/// [`Access::Off`] serves nothing (an empty router).
pub fn router(state: Arc<BrokerState>, services: Services, access: &Access) -> axum::Router {
    if matches!(access, Access::Off) {
        return axum::Router::new();
    }
    let history = Arc::new(History::new(HISTORY_SAMPLES));
    let lag_history = Arc::new(LagHistory::new(HISTORY_SAMPLES, MAX_LAG_GROUPS));
    history::spawn_sampler(
        state.clone(),
        history.clone(),
        lag_history.clone(),
        SAMPLE_INTERVAL,
    );
    let r = api::routes(api::Ctx {
        state,
        history,
        lag_history,
        reads: Arc::new(tokio::sync::Semaphore::new(api::MAX_READS)),
        searches: Arc::new(tokio::sync::Semaphore::new(search::MAX_SEARCHES)),
        services,
        schemas: Arc::new(decode::SchemaCache::default()),
        live: Arc::new(live::Live::default()),
    })
    .merge(assets::routes());
    match access {
        Access::Basic(users) => r.layer(axum::middleware::from_fn_with_state(
            users.clone(),
            auth::require_login,
        )),
        Access::Off | Access::Open => r,
    }
}
