//! CreatePartitions (key 37): grow a topic's partition count, with optional explicit replica lists.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, Ctx};
use crate::admin::{create_partitions, ApiError};

pub async fn handle(ctx: &Ctx<'_>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = if counts[&name] > 1 {
            Err(ApiError::new(
                E::InvalidRequest,
                format!("Topic '{name}' appears more than once in the request."),
            ))
        } else {
            let a = t.assignments.map(|a| {
                a.into_iter()
                    .map(|x| x.broker_ids.into_iter().map(|b| b.0).collect())
                    .collect()
            });
            create_partitions(ctx.state, &name, t.count, a, req.validate_only).await
        };
        let res = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(()) => res,
            Err(e) => res
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(&e.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
