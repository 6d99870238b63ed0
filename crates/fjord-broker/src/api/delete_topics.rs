//! DeleteTopics (key 20): by name (v1-v5) or by name or id (v6). The partitions' logs are deleted when the
//! metadata change is applied.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::{str_bytes, Ctx};
use crate::admin::delete_topic;

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
        let res = match delete_topic(broker, &topic_name).await {
            Ok(()) => res,
            Err(e) => res
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(&e.message))),
        };
        results.push(res);
    }
    DeleteTopicsResponse::default().with_responses(results)
}
