//! DescribeCluster (key 60): the brokers, the cluster id and the controller, from the metadata state. Live
//! brokers only, unless a v2 request asks for the fenced ones too (KIP-1073), which are then marked so.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let state = ctx.state.meta.state();
    // Live brokers only, as Kafka's (fenced ones are left out unless asked for).
    let with_fenced = req.include_fenced_brokers && ctx.version >= 2;
    let brokers = state
        .brokers
        .values()
        .filter(|b| with_fenced || state.is_live(b.id))
        .map(|b| {
            let broker = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes));
            if with_fenced {
                broker.with_is_fenced(!state.is_live(b.id))
            } else {
                broker
            }
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(str_bytes(&state.cluster_id))
        .with_controller_id(BrokerId(super::reported_controller(ctx, &state)))
        .with_brokers(brokers)
        // ACLs are not implemented; INT32_MIN tells the client operations were not computed.
        .with_cluster_authorized_operations(i32::MIN)
}
