//! RemoveRaftVoter (key 81, KIP-853): takes a voter out of the metadata quorum by joint consensus (openraft's
//! `change_membership`); it stays an observer (a raft learner) while it runs, as a removed KRaft voter does, so a
//! broker on the same node keeps following the metadata. The raft leader may remove itself and then steps down.
//!
//! Errors as Kafka's controller answers them: INCONSISTENT_CLUSTER_ID, VOTER_NOT_FOUND for a node that does not
//! vote, INVALID_REQUEST for the last voter, REQUEST_TIMED_OUT when the quorum could not finish.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{RemoveRaftVoterRequest, RemoveRaftVoterResponse};

use super::add_raft_voter::{check_cluster, voter_change_error};
use super::{str_bytes, Ctx};

pub async fn handle(ctx: &Ctx<'_>, req: RemoveRaftVoterRequest) -> RemoveRaftVoterResponse {
    let (code, message) = remove(ctx, &req).await;
    RemoveRaftVoterResponse::default()
        .with_error_code(code)
        .with_error_message(message.map(|m| str_bytes(&m)))
}

async fn remove(ctx: &Ctx<'_>, req: &RemoveRaftVoterRequest) -> (i16, Option<String>) {
    if let Some(e) = check_cluster(ctx, req.cluster_id.as_deref()) {
        return e;
    }
    let id = req.voter_id;
    if !ctx.state.meta.voters().contains(&id) {
        return (
            E::VoterNotFound.code(),
            Some(format!(
                "node {id} is not a voter (voters: {:?})",
                ctx.state.meta.voters()
            )),
        );
    }
    match ctx.state.meta.remove_voter(id).await {
        Ok(()) => {
            tracing::info!(voter = id, "removed a voter from the metadata quorum");
            (0, None)
        }
        Err(e) => voter_change_error(e),
    }
}
