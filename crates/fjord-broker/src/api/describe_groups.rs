//! DescribeGroups (key 15): state, protocol and members with their metadata and assignments. A group that
//! does not exist is reported as Dead with no error, as Kafka does up to v5; so is a group of the KIP-848
//! consumer protocol, which Kafka describes only through ConsumerGroupDescribe (its committed offsets live in
//! a classic entry here, which must not show as an Empty classic group). A group whose coordinator is another
//! broker gets NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while loading) in its entry.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{str_bytes, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            let g = DescribedGroup::default()
                .with_group_id(gid.clone())
                .with_authorized_operations(i32::MIN);
            let c = match ctx.state.groups.coordinator_for(ctx.state, &gid.0) {
                Ok(c) => c,
                Err(code) => return g.with_error_code(code).with_group_state(str_bytes("")),
            };
            match c.describe(&gid.0).filter(|_| !c.consumer.contains(&gid.0)) {
                None => g.with_group_state(str_bytes("Dead")),
                Some(d) => g
                    .with_group_state(str_bytes(d.state.name()))
                    .with_protocol_type(str_bytes(&d.protocol_type))
                    .with_protocol_data(str_bytes(&d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(&m.member_id))
                                    .with_group_instance_id(if ctx.version >= 4 {
                                        m.instance_id.as_deref().map(str_bytes)
                                    } else {
                                        None
                                    })
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
