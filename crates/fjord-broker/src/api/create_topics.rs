//! CreateTopics (key 19): validation and Kafka's error codes live in [`crate::admin::create_topic`].

use std::collections::HashMap;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::describe_configs::topic_entries;
use super::{str_bytes, Ctx};
use crate::admin::{create_topic, NewTopic};

pub async fn handle(ctx: &Ctx<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let broker = ctx.state;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let res = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if counts[&name] > 1 {
            results.push(
                res.with_error_code(E::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "Topic '{name}' appears more than once in the request."
                    )))),
            );
            continue;
        }
        let new = NewTopic {
            name: name.clone(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .into_iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.into_iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs: t
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect(),
        };
        match create_topic(broker, new, req.validate_only).await {
            Ok(created) => {
                let configs = topic_entries(
                    broker,
                    &broker.meta.state().broker_configs,
                    &created.configs,
                    None,
                    false,
                    false,
                )
                .into_iter()
                .map(|e| {
                    CreatableTopicConfigs::default()
                        .with_name(e.name)
                        .with_value(e.value)
                        .with_read_only(e.read_only)
                        .with_config_source(e.config_source)
                        .with_is_sensitive(e.is_sensitive)
                })
                .collect();
                results.push(
                    res.with_topic_id(created.id)
                        .with_num_partitions(created.num_partitions)
                        .with_replication_factor(created.replication_factor)
                        // Configs are part of the response from v5 on.
                        .with_configs((ctx.version >= 5).then_some(configs)),
                );
            }
            Err(e) => {
                tracing::info!(topic = %name, code = e.code, error = %e.message, "create topic refused");
                results.push(
                    res.with_error_code(e.code)
                        .with_error_message(Some(str_bytes(&e.message))),
                );
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}
