//! ListGroups (key 16): every group with its protocol type, and its state (v4+) and type (v5+) when asked.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = ctx
        .state
        .groups
        .lock()
        .list()
        .into_iter()
        .filter(|(_, _, s)| states.is_empty() || states.contains(&s.name().to_lowercase()))
        // Every group here speaks the classic protocol.
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, ptype, s)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&ptype));
            let g = if ctx.version >= 4 {
                g.with_group_state(str_bytes(s.name()))
            } else {
                g
            };
            if ctx.version >= 5 {
                g.with_group_type(str_bytes("classic"))
            } else {
                g
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
