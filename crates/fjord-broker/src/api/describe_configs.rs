//! DescribeConfigs (key 32): topic configs with their effective values, sources and synonyms, and the
//! broker's configs: static ones and the dynamic ones set with IncrementalAlterConfigs (for one broker, or as
//! the cluster-wide default under the empty name).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, Ctx};
use crate::config::{
    dynamic_broker_config, ConfigType, SOURCE_DYNAMIC_DEFAULT_BROKER, TOPIC_CONFIGS,
};
use crate::BrokerState;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Kafka's `ConfigSource` ids.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// The effective topic configs for a topic with `overrides`, optionally restricted to `keys`.
pub fn topic_entries(
    broker: &BrokerState,
    dynamic: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
    keys: Option<&[String]>,
    synonyms: bool,
    docs: bool,
) -> Vec<DescribeConfigsResourceResult> {
    TOPIC_CONFIGS
        .iter()
        .filter(|d| keys.is_none_or(|k| k.iter().any(|k| k == d.name)))
        .map(|d| {
            let static_value = broker.config.topic_default(d);
            let static_source = if broker.config.explicit.contains_key(d.broker_synonym) {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            let (broker_value, broker_source) =
                match broker.config.dynamic_value(dynamic, d.broker_synonym) {
                    Some((v, src)) => (v.to_string(), src),
                    None => (static_value.clone(), static_source),
                };
            let (value, source) = match overrides.get(d.name) {
                Some(v) => (v.clone(), SOURCE_TOPIC),
                None => (broker_value.clone(), broker_source),
            };
            let mut syn = Vec::new();
            if synonyms {
                if let Some(v) = overrides.get(d.name) {
                    syn.push(synonym(d.name, v, SOURCE_TOPIC));
                }
                if !d.broker_synonym.is_empty() {
                    if broker_source != static_source {
                        syn.push(synonym(d.broker_synonym, &broker_value, broker_source));
                    }
                    syn.push(synonym(d.broker_synonym, &static_value, static_source));
                }
            }
            DescribeConfigsResourceResult::default()
                .with_name(str_bytes(d.name))
                .with_value(Some(str_bytes(&value)))
                .with_read_only(false)
                .with_config_source(source)
                .with_is_sensitive(false)
                .with_synonyms(syn)
                .with_config_type(d.ty as i8)
                .with_documentation(docs.then(|| str_bytes(d.doc)))
        })
        .collect()
}

static EMPTY: String = String::new();

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source)
}

/// The configs of this broker: every static property, with the dynamic value where one is set (per broker
/// first, then the cluster-wide default). Dynamic ones are the broker defaults of topic configs; the rest are
/// read-only.
fn broker_entries(
    broker: &BrokerState,
    dynamic: &BTreeMap<String, String>,
    keys: Option<&[String]>,
    synonyms: bool,
) -> Vec<DescribeConfigsResourceResult> {
    broker
        .config
        .props
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        // The throttle rates have no static value; they are listed where set dynamically.
        .chain(
            crate::config::BROKER_DYNAMIC_ONLY
                .iter()
                .filter(|k| broker.config.dynamic_value(dynamic, k).is_some())
                .map(|k| (&**k, &EMPTY)),
        )
        .filter(|(k, _)| keys.is_none_or(|ks| ks.iter().any(|x| x == k)))
        .map(|(k, v)| {
            let static_source = if broker.config.explicit.contains_key(k) {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            let (value, source) = match broker.config.dynamic_value(dynamic, k) {
                Some((d, src)) => (d.to_string(), src),
                None => (v.clone(), static_source),
            };
            let sensitive = crate::config::is_sensitive_broker_config(k);
            let mut syn = Vec::new();
            if synonyms {
                if source != static_source {
                    syn.push(synonym(k, &value, source));
                }
                syn.push(synonym(k, v, static_source));
            }
            if sensitive {
                for s in &mut syn {
                    s.value = None;
                }
            }
            DescribeConfigsResourceResult::default()
                .with_name(str_bytes(k))
                .with_value((!sensitive).then(|| str_bytes(&value)))
                .with_is_sensitive(sensitive)
                .with_read_only(
                    dynamic_broker_config(k).is_none()
                        && !crate::config::BROKER_DYNAMIC_ONLY.contains(&k),
                )
                .with_config_source(source)
                .with_synonyms(syn)
                .with_config_type(ConfigType::String as i8)
        })
        .collect()
}

/// The cluster-wide dynamic defaults (BROKER resource ""): only the configs set there, as Kafka lists them.
fn cluster_default_entries(
    dynamic: &BTreeMap<String, String>,
    keys: Option<&[String]>,
    synonyms: bool,
) -> Vec<DescribeConfigsResourceResult> {
    dynamic
        .iter()
        .filter(|(k, _)| !k.contains('/'))
        .filter(|(k, _)| keys.is_none_or(|ks| ks.iter().any(|x| x == *k)))
        .map(|(k, v)| {
            DescribeConfigsResourceResult::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v)))
                .with_read_only(false)
                .with_config_source(SOURCE_DYNAMIC_DEFAULT_BROKER)
                .with_synonyms(if synonyms {
                    vec![synonym(k, v, SOURCE_DYNAMIC_DEFAULT_BROKER)]
                } else {
                    vec![]
                })
                .with_config_type(ConfigType::String as i8)
        })
        .collect()
}

pub fn handle(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let broker = ctx.state;
    let meta = broker.meta.state();
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys: Option<Vec<String>> = r
                .configuration_keys
                .map(|ks| ks.iter().map(|k| k.to_string()).collect());
            let name = r.resource_name.to_string();
            let res = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let fail = |res: DescribeConfigsResult, code: E, msg: String| {
                res.with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(msg)))
            };
            match r.resource_type {
                RESOURCE_TOPIC => match meta.topics.get(&name) {
                    Some(t) => res.with_configs(topic_entries(
                        broker,
                        &meta.broker_configs,
                        &t.configs,
                        keys.as_deref(),
                        req.include_synonyms,
                        req.include_documentation,
                    )),
                    None => fail(
                        res,
                        E::UnknownTopicOrPartition,
                        format!("Topic '{name}' does not exist."),
                    ),
                },
                RESOURCE_BROKER if name == broker.config.node_id.to_string() => {
                    res.with_configs(broker_entries(
                        broker,
                        &meta.broker_configs,
                        keys.as_deref(),
                        req.include_synonyms,
                    ))
                }
                RESOURCE_BROKER if name.is_empty() => res.with_configs(cluster_default_entries(
                    &meta.broker_configs,
                    keys.as_deref(),
                    req.include_synonyms,
                )),
                RESOURCE_BROKER => fail(
                    res,
                    E::InvalidRequest,
                    format!(
                        "Unexpected broker id '{name}'; this broker is {}.",
                        broker.config.node_id
                    ),
                ),
                RESOURCE_BROKER_LOGGER => fail(
                    res,
                    E::InvalidRequest,
                    "Broker logger configs are not supported.".into(),
                ),
                other => fail(
                    res,
                    E::InvalidRequest,
                    format!("Unsupported resource type {other}."),
                ),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
