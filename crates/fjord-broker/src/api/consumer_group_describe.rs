//! ConsumerGroupDescribe (key 69, KIP-848): epochs, members, their current and target assignments. A group
//! coordinated elsewhere gets NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while loading) in its entry.

use fjord_coordinator::consumer_group::Assignment;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as KAssignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};

use super::{str_bytes, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let meta = ctx.state.meta.state();
    let to_k = |a: &Assignment| {
        KAssignment::default().with_topic_partitions(
            a.iter()
                .map(|(id, ps)| {
                    let name = meta
                        .topic_by_id(id)
                        .map(|t| t.name.clone())
                        .unwrap_or_default();
                    TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(TopicName(str_bytes(&name)))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    };
    let groups = req
        .group_ids
        .into_iter()
        .map(|gid| {
            let g = DescribedGroup::default()
                .with_group_id(gid.clone())
                .with_authorized_operations(i32::MIN);
            let c = match ctx.state.groups.coordinator_for(ctx.state, &gid.0) {
                Ok(c) => c,
                Err(code) => return g.with_error_code(code),
            };
            let (Some(state), Some((group_epoch, assignment_epoch))) =
                (c.consumer.state(&gid.0), c.consumer.epochs(&gid.0))
            else {
                return g
                    .with_error_code(E::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "Group {} is not a consumer group.",
                        gid.0
                    ))));
            };
            let members = c
                .consumer
                .members(&gid.0)
                .into_iter()
                .map(|m| {
                    let member = Member::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_instance_id(m.instance_id.as_deref().map(str_bytes))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_subscribed_topic_names(
                            m.subscribed
                                .iter()
                                .map(|t| TopicName(str_bytes(t)))
                                .collect(),
                        )
                        .with_subscribed_topic_regex(m.subscribed_regex.as_deref().map(str_bytes))
                        .with_assignment(to_k(&m.assigned))
                        .with_target_assignment(to_k(&m.target));
                    if ctx.version >= 1 {
                        member.with_member_type(1)
                    } else {
                        member
                    }
                })
                .collect();
            g.with_group_state(str_bytes(state))
                .with_group_epoch(group_epoch)
                .with_assignment_epoch(assignment_epoch)
                .with_assignor_name(str_bytes("uniform"))
                .with_members(members)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
