//! AddRaftVoter (key 80, KIP-853): makes a controller a voter of the metadata quorum. Any broker answers, as a
//! Kafka broker forwards it to the active controller; the raft leader adds the node as a learner (if it is not
//! already one: a controller started outside the voter set joined as an observer on its own), waits until it
//! caught up, then makes it a voter by joint consensus (openraft's `add_learner` + `change_membership`).
//!
//! Errors as Kafka's controller answers them: INCONSISTENT_CLUSTER_ID for another cluster's id, DUPLICATE_VOTER
//! when the node already votes, INVALID_REQUEST when no listener gives its controller address, and
//! REQUEST_TIMED_OUT when the quorum could not finish (no leader, another change still in flight at the
//! deadline, the node is not an observer the leader hears from, or did not catch up in time).

use std::net::{SocketAddr, ToSocketAddrs};

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{AddRaftVoterRequest, AddRaftVoterResponse};

use super::{str_bytes, Ctx};

/// How long the check that the new voter is an observer waits for the quorum's leader.
const OBSERVER_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn handle(ctx: &Ctx<'_>, req: AddRaftVoterRequest) -> AddRaftVoterResponse {
    let (code, message) = add(ctx, &req).await;
    AddRaftVoterResponse::default()
        .with_error_code(code)
        .with_error_message(message.map(|m| str_bytes(&m)))
}

async fn add(ctx: &Ctx<'_>, req: &AddRaftVoterRequest) -> (i16, Option<String>) {
    if let Some(e) = check_cluster(ctx, req.cluster_id.as_deref()) {
        return e;
    }
    let id = req.voter_id;
    if ctx.state.meta.voters().contains(&id) {
        return (
            E::DuplicateVoter.code(),
            Some(format!("node {id} is already a voter")),
        );
    }
    let Some(addr) = controller_endpoint(ctx, req) else {
        return (
            E::InvalidRequest.code(),
            Some(format!(
                "no listener of node {id} resolves to a controller address (host:port)"
            )),
        );
    };
    // KIP-853 adds a replica the leader already hears from as an observer; one that never joined (not started,
    // or started elsewhere) would be added as a learner nobody can reach. Refused before anything changes.
    match ctx.state.meta.describe_quorum(OBSERVER_CHECK_WAIT).await {
        Ok(q) if q.observers.iter().any(|o| o.id == id) => {}
        Ok(q) => {
            return (
                E::RequestTimedOut.code(),
                Some(format!(
                    "node {id} is not an observer of the metadata quorum (observers: {:?}): start it first \
                     (outside the voter set it joins as an observer), then add it",
                    q.observers.iter().map(|o| o.id).collect::<Vec<_>>()
                )),
            )
        }
        Err(e) => return voter_change_error(e),
    }
    match ctx.state.meta.add_voter(id, addr).await {
        Ok(()) => {
            tracing::info!(voter = id, %addr, "added a voter to the metadata quorum");
            (0, None)
        }
        Err(e) => voter_change_error(e),
    }
}

/// INCONSISTENT_CLUSTER_ID when the request names another cluster.
pub(super) fn check_cluster(
    ctx: &Ctx<'_>,
    cluster_id: Option<&str>,
) -> Option<(i16, Option<String>)> {
    let ours = ctx.state.meta.state().cluster_id.clone();
    match cluster_id {
        Some(theirs) if theirs != ours => Some((
            E::InconsistentClusterId.code(),
            Some(format!(
                "the request is for cluster {theirs}, this is cluster {ours}"
            )),
        )),
        _ => None,
    }
}

/// The listener named first in `controller.listener.names` (Kafka's choice), else the only or first one.
fn controller_endpoint(ctx: &Ctx<'_>, req: &AddRaftVoterRequest) -> Option<SocketAddr> {
    let names: Vec<String> = ctx
        .state
        .config
        .props
        .get("controller.listener.names")
        .map(|n| {
            n.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let listener = names
        .iter()
        .find_map(|n| req.listeners.iter().find(|l| l.name.as_str() == n))
        .or_else(|| req.listeners.first())?;
    (listener.host.as_str(), listener.port)
        .to_socket_addrs()
        .ok()?
        .next()
}

/// Kafka's answer for a voter change the quorum did not make.
pub(super) fn voter_change_error(e: fjord_meta::Error) -> (i16, Option<String>) {
    let code = match &e {
        fjord_meta::Error::Refused(msg) if msg.contains("not a voter") => E::VoterNotFound.code(),
        fjord_meta::Error::Refused(msg) if msg.contains("last voter") => E::InvalidRequest.code(),
        fjord_meta::Error::Shutdown => E::NotController.code(),
        _ => E::RequestTimedOut.code(),
    };
    (code, Some(e.to_string()))
}
