//! OffsetFetch (key 9): committed offsets of one group (v1-v7) or of several (v8+, KIP-709); all of a group's
//! offsets when no topics are named. Only on the group's coordinator: elsewhere NOT_COORDINATOR
//! (COORDINATOR_LOAD_IN_PROGRESS while the group's partition loads) in the group's entry (v8+), in the
//! top-level error (v2-v7), or, in v0-v1, which have no top-level error, in every requested partition.

use std::collections::{BTreeMap, HashMap};

use fjord_coordinator::CommittedOffset;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{str_bytes, Ctx};

/// (topic -> [(partition, offset, leader epoch, metadata)]) for the requested partitions, or all committed.
fn lookup(
    committed: &HashMap<(String, i32), CommittedOffset>,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> BTreeMap<String, Vec<(i32, i64, i32, String)>> {
    let mut out: BTreeMap<String, Vec<(i32, i64, i32, String)>> = BTreeMap::new();
    match wanted {
        None => {
            for ((t, p), o) in committed {
                out.entry(t.clone()).or_default().push((
                    *p,
                    o.offset,
                    o.leader_epoch,
                    o.metadata.clone(),
                ));
            }
            for v in out.values_mut() {
                v.sort_by_key(|x| x.0);
            }
        }
        Some(topics) => {
            for (t, parts) in topics {
                let entry = out.entry(t.clone()).or_default();
                for p in parts {
                    match committed.get(&(t.clone(), p)) {
                        Some(o) => entry.push((p, o.offset, o.leader_epoch, o.metadata.clone())),
                        None => entry.push((p, -1, -1, String::new())),
                    }
                }
            }
        }
    }
    out
}

/// KIP-447: with `require_stable`, a partition whose offset a transaction is still committing answers
/// UNSTABLE_OFFSET_COMMIT (the client retries) instead of the older offset.
fn unstable(ctx: &Ctx<'_>, require_stable: bool, group: &str, topic: &str, p: i32) -> i16 {
    if require_stable && ctx.state.groups.has_pending(group, topic, p) {
        kafka_protocol::error::ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

pub fn handle(ctx: &Ctx<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let groups = &ctx.state.groups;
    let epochs = ctx.version >= 5;
    let require_stable = ctx.version >= 7 && req.require_stable;
    if ctx.version >= 8 {
        let results = req
            .groups
            .into_iter()
            .map(|g| {
                let committed = match groups.coordinator_for(ctx.state, &g.group_id.0) {
                    Ok(c) => c.fetch_offsets(&g.group_id.0),
                    Err(code) => {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id)
                            .with_error_code(code)
                    }
                };
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let topics = lookup(&committed, wanted)
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(&t)))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, o, e, m)| {
                                        let code =
                                            unstable(ctx, require_stable, &g.group_id, &t, p);
                                        OffsetFetchResponsePartitions::default()
                                            .with_error_code(code)
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(e)
                                            .with_metadata(Some(str_bytes(&m)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(results);
    }
    let committed = match groups.coordinator_for(ctx.state, &req.group_id.0) {
        Ok(c) => c.fetch_offsets(&req.group_id.0),
        Err(code) if ctx.version >= 2 => {
            return OffsetFetchResponse::default().with_error_code(code);
        }
        Err(code) => {
            let topics = req
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partition_indexes
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(str_bytes("")))
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            return OffsetFetchResponse::default().with_topics(topics);
        }
    };
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = lookup(&committed, wanted)
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(&t)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, o, e, m)| {
                            let code = unstable(ctx, require_stable, &req.group_id, &t, p);
                            OffsetFetchResponsePartition::default()
                                .with_error_code(code)
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_committed_leader_epoch(if epochs { e } else { -1 })
                                .with_metadata(Some(str_bytes(&m)))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
