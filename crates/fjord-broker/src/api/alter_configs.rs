//! AlterConfigs (key 33, replaces a resource's whole dynamic set) and IncrementalAlterConfigs (key 44, SET /
//! DELETE / APPEND / SUBTRACT per key), for topics and brokers. A BROKER resource is the cluster-wide default
//! (name "") or one broker (its id); only the broker defaults of topic configs are dynamic
//! ([`crate::admin::alter_broker_configs`]), every other broker config is refused with a message saying to set it
//! in server.properties.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{str_bytes, Ctx};
use crate::admin::{
    alter_broker_configs, alter_topic_configs, incremental_alter_topic_configs, ApiError,
    OP_DELETE, OP_SET,
};
use crate::config::validate_topic_config;
use crate::BrokerState;

fn check_resource(broker: &BrokerState, ty: i8, name: &str) -> Result<(), ApiError> {
    match ty {
        RESOURCE_TOPIC => {
            if broker.meta.state().topics.contains_key(name) {
                Ok(())
            } else {
                Err(ApiError::new(
                    E::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                ))
            }
        }
        RESOURCE_BROKER => Ok(()),
        other => Err(ApiError::new(
            E::InvalidRequest,
            format!("Unsupported resource type {other}."),
        )),
    }
}

async fn alter_one(
    broker: &BrokerState,
    ty: i8,
    name: &str,
    configs: Vec<(String, Option<String>)>,
    validate_only: bool,
) -> Result<(), ApiError> {
    check_resource(broker, ty, name)?;
    if ty == RESOURCE_BROKER {
        let mut set = BTreeMap::new();
        for (k, v) in configs {
            let v =
                v.ok_or_else(|| ApiError::new(E::InvalidConfig, format!("Null value for '{k}'.")))?;
            set.insert(k, v);
        }
        return alter_broker_configs(broker, name, set, vec![], true, validate_only).await;
    }
    let mut set = BTreeMap::new();
    for (k, v) in configs {
        let Some(v) = v else {
            return Err(ApiError::new(
                E::InvalidConfig,
                format!("Null value not supported for topic config '{k}'."),
            ));
        };
        validate_topic_config(&k, &v)
            .map_err(|e| ApiError::new(E::InvalidConfig, e.to_string()))?;
        if set.insert(k.clone(), v).is_some() {
            return Err(ApiError::new(
                E::InvalidRequest,
                format!("Config '{k}' is given more than once."),
            ));
        }
    }
    if validate_only {
        return Ok(());
    }
    alter_topic_configs(broker, name, set, vec![], true).await
}

pub async fn handle_alter(ctx: &Ctx<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let configs = r
            .configs
            .into_iter()
            .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
            .collect();
        let outcome = alter_one(
            ctx.state,
            r.resource_type,
            &name,
            configs,
            req.validate_only,
        )
        .await;
        let mut res = kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err(e) = outcome {
            res = res
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(&e.message)));
        }
        responses.push(res);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

async fn incremental_one(
    broker: &BrokerState,
    ty: i8,
    name: &str,
    ops: Vec<(String, i8, Option<String>)>,
    validate_only: bool,
) -> Result<(), ApiError> {
    check_resource(broker, ty, name)?;
    if ty == RESOURCE_BROKER {
        let mut seen = HashSet::new();
        let (mut set, mut delete) = (BTreeMap::new(), Vec::new());
        for (key, op, value) in ops {
            if !seen.insert(key.clone()) {
                return Err(ApiError::new(
                    E::InvalidRequest,
                    format!("Config '{key}' is given more than once."),
                ));
            }
            match (op, value) {
                (OP_SET, Some(v)) => {
                    set.insert(key, v);
                }
                (OP_SET, None) => {
                    return Err(ApiError::new(
                        E::InvalidConfig,
                        format!("Null value for '{key}'."),
                    ))
                }
                (OP_DELETE, _) => delete.push(key),
                (other, _) => {
                    return Err(ApiError::new(
                        E::InvalidRequest,
                        format!("Config operation {other} is not supported for broker configs (only SET and DELETE)."),
                    ))
                }
            }
        }
        return alter_broker_configs(broker, name, set, delete, false, validate_only).await;
    }
    incremental_alter_topic_configs(broker, name, ops, validate_only).await
}

pub async fn handle_incremental(
    ctx: &Ctx<'_>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let name = r.resource_name.to_string();
        let ops = r
            .configs
            .into_iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.map(|v| v.to_string()),
                )
            })
            .collect();
        let outcome =
            incremental_one(ctx.state, r.resource_type, &name, ops, req.validate_only).await;
        let mut res =
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
        if let Err(e) = outcome {
            res = res
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(&e.message)));
        }
        responses.push(res);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
