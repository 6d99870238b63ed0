//! DeleteTopics (key 20): by name (v1-v5) or by name or id (v6). The partitions' logs are deleted when the
//! metadata change is applied.

use fjord_meta::{Command, CommandResult};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::{str_bytes, Ctx};
use crate::admin::is_internal_topic;

pub async fn handle(ctx: &Ctx<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let broker = ctx.state;
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut results = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let state = broker.meta.state();
        let found = match &name {
            Some(n) => state.topics.get(n),
            None => state.topic_by_id(&id),
        };
        let res = DeletableTopicResult::default()
            .with_name(name.as_deref().map(|n| TopicName(str_bytes(n))))
            .with_topic_id(id);
        let Some(topic) = found else {
            let (code, msg) = match &name {
                Some(n) => (
                    E::UnknownTopicOrPartition,
                    format!("Topic '{n}' does not exist."),
                ),
                None => (E::UnknownTopicId, format!("Topic id {id} does not exist.")),
            };
            results.push(
                res.with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&msg))),
            );
            continue;
        };
        let topic_name = topic.name.clone();
        let res = res
            .with_name(Some(TopicName(str_bytes(&topic_name))))
            .with_topic_id(topic.id);
        if is_internal_topic(&topic_name) {
            // Kafka's broker would delete it (only its kafka-topics tool refuses); the committed offsets or
            // transaction states in it would be lost with no way back.
            results.push(
                res.with_error_code(E::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "Deletion of internal topic {topic_name} is prohibited: it holds the state of the \
                         broker's coordinators. Delete consumer groups (DeleteGroups) or let transactional \
                         ids expire instead."
                    )))),
            );
            continue;
        }
        let outcome = broker
            .meta
            .propose(Command::DeleteTopic {
                name: topic_name.clone(),
            })
            .await;
        let res = match outcome {
            Ok(CommandResult::Ok) => {
                if let Err(e) = broker.sync_partitions() {
                    tracing::error!(topic = %topic_name, error = %e, "deleting partitions failed");
                }
                // Committed offsets of the deleted partitions go too, as in Kafka.
                let records = {
                    let mut c = broker.groups.lock();
                    c.forget_topic(&topic_name);
                    c.take_records()
                };
                if let Err(e) = broker.groups.persist(broker, records).await {
                    tracing::error!(topic = %topic_name, error = %e, "removing committed offsets failed");
                }
                tracing::info!(topic = %topic_name, "topic deleted");
                res
            }
            Ok(CommandResult::UnknownTopic) => res
                .with_error_code(E::UnknownTopicOrPartition.code())
                .with_error_message(Some(str_bytes(&format!(
                    "Topic '{topic_name}' does not exist."
                )))),
            Ok(other) => res
                .with_error_code(E::UnknownServerError.code())
                .with_error_message(Some(str_bytes(&format!("unexpected result {other:?}")))),
            Err(e) => {
                let e = crate::Error::from(e);
                res.with_error_code(e.code())
                    .with_error_message(Some(str_bytes(&e.to_string())))
            }
        };
        results.push(res);
    }
    DeleteTopicsResponse::default().with_responses(results)
}
