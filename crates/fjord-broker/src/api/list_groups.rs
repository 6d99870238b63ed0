//! ListGroups (key 16): classic and KIP-848 consumer groups with their protocol type, and their state (v4+)
//! and type (v5+) when asked, filtered by state and type like Kafka. Only the groups this broker coordinates
//! (clients ask every broker); while one of its `__consumer_offsets` partitions is loading the answer carries
//! COORDINATOR_LOAD_IN_PROGRESS with the groups already loaded, as Kafka's.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let loading = ctx.state.groups.owned.any_loading();
    let c = ctx.state.groups.lock();
    // (id, protocol type, state, group type)
    let mut all: Vec<(String, String, &'static str, &'static str)> = c
        .list()
        .into_iter()
        .filter(|(id, _, _)| !c.consumer.contains(id))
        .map(|(id, ptype, s)| (id, ptype, s.name(), "classic"))
        .collect();
    all.extend(
        c.consumer
            .list()
            .into_iter()
            .map(|(id, s)| (id, "consumer".to_string(), s, "consumer")),
    );
    all.sort();
    let groups = all
        .into_iter()
        .filter(|(_, _, s, _)| states.is_empty() || states.contains(&s.to_lowercase()))
        .filter(|(_, _, _, ty)| types.is_empty() || types.iter().any(|t| t == ty))
        .map(|(id, ptype, s, ty)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&ptype));
            let g = if ctx.version >= 4 {
                g.with_group_state(str_bytes(s))
            } else {
                g
            };
            if ctx.version >= 5 {
                g.with_group_type(str_bytes(ty))
            } else {
                g
            }
        })
        .collect();
    let code = if loading {
        kafka_protocol::error::ResponseError::CoordinatorLoadInProgress.code()
    } else {
        0
    };
    ListGroupsResponse::default()
        .with_error_code(code)
        .with_groups(groups)
}
