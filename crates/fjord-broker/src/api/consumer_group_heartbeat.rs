//! ConsumerGroupHeartbeat (key 68, KIP-848): the consumer protocol's single request for joining, staying in,
//! reconciling and leaving a group; the assignment is computed here, on the coordinator. Elsewhere
//! NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS while the group's partition loads).

use fjord_coordinator::consumer_group::{Assignment, HeartbeatRequest, TopicView};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as KAssignment, TopicPartitions,
};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{str_bytes, Ctx};
use crate::now_ms;

pub async fn handle(
    ctx: &Ctx<'_>,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    // Offsets of the group will be written to __consumer_offsets, whose leaders decide who coordinates it.
    if let Err(code) = ctx.state.groups.ensure_served(ctx.state, &group_id).await {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_member_epoch(-1);
    }
    let meta = ctx.state.meta.state();
    let topics: TopicView = meta
        .topics
        .values()
        .filter(|t| !t.internal)
        .map(|t| (t.name.clone(), (t.id, t.partitions.len() as i32)))
        .collect();
    let owned: Option<Assignment> = req.topic_partitions.map(|tps| {
        tps.into_iter()
            .map(|tp| (tp.topic_id, tp.partitions.into_iter().collect()))
            .collect()
    });
    let hb = HeartbeatRequest {
        group_id: group_id.clone(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        client_id: ctx.client_id.unwrap_or("").to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|v| v.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(|r| r.to_string()),
        owned,
    };
    // The limit the log enforces on __consumer_offsets now (a dynamic change included), so that a member record
    // the write would refuse is refused before anything changes. Computed before the coordinator lock is taken.
    let max_record_bytes = crate::groups::offsets_max_message_bytes(ctx.state);
    let resp = {
        let mut c = match ctx.state.groups.coordinator_for(ctx.state, &group_id) {
            Ok(c) => c,
            Err(code) => {
                return ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(code)
                    .with_member_epoch(-1)
            }
        };
        c.consumer.config.max_record_bytes = max_record_bytes;
        if c.is_active_classic(&group_id) {
            return ConsumerGroupHeartbeatResponse::default()
                .with_error_code(E::GroupIdNotFound.code())
                .with_error_message(Some(str_bytes(&format!(
                    "Group {group_id} is not a consumer group."
                ))))
                .with_member_epoch(-1);
        }
        let resp = c.consumer.heartbeat(hb, &topics, now_ms());
        let write = c.consumer.is_dirty(&group_id);
        (resp, c.consumer.config.append_linger_ms, write)
    };
    let (resp, linger_ms, write) = resp;
    // Like Kafka's coordinator, which answers a heartbeat that changed the group once the records it batches for
    // group.coordinator.append.linger.ms are flushed (the coordinator lock is not held meanwhile).
    if resp.changed && resp.error == 0 && linger_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(linger_ms)).await;
    }
    if write {
        // The group's new state is durable (and on the in-sync replicas) before the member acts on it, so a
        // restarted or new coordinator knows the epoch and assignment the member was told. If the write fails
        // the member retries; the change stays in memory and is written by the next flush, and a retry with the
        // previous epoch is accepted as long as what the member owns is within its assignment.
        // Only this group's write decides: another group's failure is not this member's.
        let groups = &ctx.state.groups;
        let failed = groups.flush_consumer_groups(ctx.state, &[&group_id]).await;
        if let Some(code) = failed.get(&group_id) {
            return ConsumerGroupHeartbeatResponse::default()
                .with_error_code(*code)
                .with_member_epoch(-1);
        }
    }
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(resp.error)
        .with_error_message(resp.error_message.as_deref().map(str_bytes))
        .with_member_id(Some(str_bytes(&resp.member_id)).filter(|_| !resp.member_id.is_empty()))
        .with_member_epoch(resp.member_epoch)
        .with_heartbeat_interval_ms(resp.heartbeat_interval_ms)
        .with_assignment(resp.assignment.map(|a| {
            KAssignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(id)
                            .with_partitions(ps.into_iter().collect())
                    })
                    .collect(),
            )
        }))
}
