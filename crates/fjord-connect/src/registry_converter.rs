//! Confluent's schema-registry converters `io.confluent.connect.avro.AvroConverter`,
//! `io.confluent.connect.json.JsonSchemaConverter` and `io.confluent.connect.protobuf.ProtobufConverter`:
//! records in the registry's wire format (magic byte 0, the schema id as 4 big-endian bytes, then the Avro binary
//! datum, the JSON text, or the Protobuf message-index array and message), configured with
//! the converter's prefix: `value.converter.schema.registry.url`, `basic.auth.credentials.source=USER_INFO` with
//! `basic.auth.user.info=user:password`, `auto.register.schemas` (default true), `use.latest.version` (default
//! false), and for ProtobufConverter `wrapper.for.nullables` and `optional.for.nullables` (default false).
//!
//! JsonSchemaConverter validates each JSON value against its registered schema and maps JSON Schema to Connect
//! schemas (and back) as Confluent's does (`connect.index`, `connect.type`, `oneOf` null for optional); what
//! follows is said of Avro and holds for it too.
//!
//! ProtobufConverter reads a record's message-index array to find the message of its schema, decoded through
//! `fjord_registry::wire` and mapped to a Connect struct as Confluent's converter maps it; for sources it derives
//! a proto3 schema from the record's Connect struct as Confluent's `fromConnectData` does, registers it like the
//! Avro schemas below and writes the message indexes ([0]: the one message) and the message
//! ([`crate::protobuf_data`]). A Connect schema Protobuf cannot express fails the task, naming the field.
//!
//! **Sinks** look the writer's schema up by its id (`GET /schemas/ids/{id}`, cached for the task's life; a schema's
//! references with `GET /subjects/<subject>/versions/<version>`, dependencies first) and turn
//! the datum into Connect data in the form the JSON converter gives the sinks (a record is a struct with its
//! fields' schemas, bytes are base64 text, a decimal its unscaled bytes, dates/times/timestamps their number), so
//! the PostgreSQL sink's `pk.mode=record_value` and `auto.create` work as with schemas in JSON.
//!
//! **Sources** map the record's Connect schema to an Avro schema the way Confluent's converter does (a struct is a
//! record named after the schema, `io.confluent.connect.avro.ConnectDefault` when it has no name; an optional
//! field is a union with null defaulting to null; int8/int16 are ints marked `connect.type`; Decimal, Date, Time
//! and Timestamp are Avro's logical types with `connect.name`), register it under the TopicNameStrategy subject
//! `<topic>-key`/`<topic>-value` (once per schema and task) and write the datum with the id they got back.
//!
//! Registry calls are async and happen before the (synchronous) conversion of a batch: [`prepare_decode`] and
//! [`prepare_encode`] fill the caches, and an unreachable registry fails the task there (it restarts with
//! `task.restart.*`), while a record that is not in the wire format or names a schema id the registry does not
//! have is an errant record (`errors.tolerance`, the dead-letter topic).
//!
//! The wire format's header, the check of an Avro schema before anything is read with it (recursion, nesting
//! deeper than 64, more than 10,000 types when expanded, arrays or maps of values that take no bytes) and the
//! bounded reading of a datum are `fjord_registry::wire`'s, as for the console tools and the dashboard: a schema
//! it refuses makes each of its records errant, with the reason.
//!
//! [`prepare_decode`]: RegistryConverter::prepare_decode
//! [`prepare_encode`]: RegistryConverter::prepare_encode

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use fjord_registry::avro_json::Names;
use fjord_registry::json::JsonDocs;
use fjord_registry::proto_json::ProtoSchema;
use fjord_registry::wire::{self, AvroDecoder};
use prost_reflect::ReflectMessage;
use serde_json::{json, Map, Value};

use crate::config::ConfigMap;
use crate::http_client::{HttpError, Target};
use crate::transforms::SchemaAndValue;

pub const AVRO_CONVERTER: &str = "io.confluent.connect.avro.AvroConverter";
pub const JSON_SCHEMA_CONVERTER: &str = "io.confluent.connect.json.JsonSchemaConverter";
pub const PROTOBUF_CONVERTER: &str = "io.confluent.connect.protobuf.ProtobufConverter";

/// The schema format of a registry converter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `AvroConverter`: Avro binary datums.
    Avro,
    /// `JsonSchemaConverter`: JSON text validated against a JSON Schema.
    JsonSchema,
    /// `ProtobufConverter`: Protobuf messages.
    Protobuf,
}

impl Format {
    /// The format of a converter's simple class name, if it is a registry converter.
    pub fn of_class(simple: &str) -> Option<Format> {
        match simple {
            "AvroConverter" => Some(Format::Avro),
            "JsonSchemaConverter" => Some(Format::JsonSchema),
            "ProtobufConverter" => Some(Format::Protobuf),
            _ => None,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Format::Avro => "AvroConverter",
            Format::JsonSchema => "JsonSchemaConverter",
            Format::Protobuf => "ProtobufConverter",
        }
    }

    /// The registry's `schemaType`.
    fn schema_type(self) -> &'static str {
        match self {
            Format::Avro => "AVRO",
            Format::JsonSchema => "JSON",
            Format::Protobuf => "PROTOBUF",
        }
    }

    /// The converter that reads schemas of the registry's `schemaType`.
    fn class_for(schema_type: &str) -> &'static str {
        match schema_type {
            "JSON" => JSON_SCHEMA_CONVERTER,
            "PROTOBUF" => PROTOBUF_CONVERTER,
            _ => AVRO_CONVERTER,
        }
    }
}

/// Why the references of a schema were not all fetched.
enum Fetch {
    /// The registry cannot be asked, or refused the request: the task fails.
    Task(String),
    /// The registry does not have one, or they are too many: the record is errant.
    Record(String),
}

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The record name Confluent's converter gives a struct schema without a name.
const DEFAULT_NAMESPACE: &str = "io.confluent.connect.avro";
use crate::protobuf_data::{
    CONNECT_DATE, CONNECT_DECIMAL, CONNECT_TIME, CONNECT_TIMESTAMP, DEFAULT_NAME as DEFAULT_RECORD,
};

/// A registry converter, configured, with its caches.
pub struct RegistryConverter {
    format: Format,
    /// `key.converter` or `value.converter`: names its settings in errors.
    prefix: String,
    is_key: bool,
    target: Target,
    auto_register: bool,
    use_latest: bool,
    /// ProtobufConverter's `wrapper.for.nullables` and `optional.for.nullables` (how optional fields are written).
    proto_options: crate::protobuf_data::WriteOptions,
    /// `missing.id.cache.ttl.sec`: how long a schema id the registry does not have is remembered as missing
    /// (its records are errant without asking again; zero: asked for every record).
    missing_ttl: std::time::Duration,
    cache: Mutex<Cache>,
}

/// Default of `missing.id.cache.ttl.sec`: Confluent's client default (not remembered; a registry node that lags
/// behind a registration must not make the id's records errant for a while after it caught up).
const MISSING_ID_TTL_SECS: u64 = 0;
/// Missing schema ids remembered at once; past this, the expired ones go, then all of them.
const MAX_MISSING_IDS: usize = 10_000;

/// A registered schema, ready to read or write records with.
enum Writer {
    /// Checked by the registry crate's shared decoding (`wire::avro_shape_problem`), so that neither the mapping to
    /// Connect schemas nor the Avro reader recurses without bound, expands a schema exponentially or reads millions
    /// of values from a few bytes.
    Avro(Box<AvroDecoder>),
    Json {
        /// The Connect schema of the JSON Schema (None: one Connect has no schema for; the data is schemaless).
        connect: Option<Value>,
        validator: Box<jsonschema::Validator>,
    },
    /// A compiled Protobuf schema (a record's message indexes name one of its messages), and the Connect schema
    /// of each message records were read as, by full name (mapped once: a walk of up to 10,000 types).
    Protobuf(
        Box<ProtoSchema>,
        Mutex<HashMap<String, Result<Value, String>>>,
    ),
    /// A schema this converter cannot use (another format, one that does not compile), and why.
    Unusable(String),
}

impl Writer {
    /// `referenced`: (reference name, text) of every schema the references of `text` reach, dependencies first.
    fn parse(
        format: Format,
        text: &str,
        referenced: &[(String, String)],
    ) -> Result<Writer, String> {
        match format {
            Format::Avro => Ok(Writer::Avro(Box::new(AvroDecoder::compile(
                text, referenced,
            )?))),
            Format::Protobuf => Ok(Writer::Protobuf(
                Box::new(
                    ProtoSchema::compile(text, referenced)
                        .map_err(|e| format!("not a Protobuf schema: {e}"))?,
                ),
                Mutex::default(),
            )),
            Format::JsonSchema => {
                let docs = JsonDocs::parse(text, referenced)?;
                Ok(Writer::Json {
                    connect: connect_schema_of_json(&docs).ok(),
                    validator: Box::new(fjord_registry::json::validator(
                        &docs.root,
                        &docs.referenced,
                    )?),
                })
            }
        }
    }
}

/// A schema records are written with: its id, the schema, and (Protobuf) the message they are written as with
/// its encoded message indexes, resolved once when the schema is registered, not per record.
type Written = (u32, Arc<Writer>, Option<Arc<WrittenMessage>>);

/// The Protobuf message records are written as, and the wire format's message indexes naming it.
struct WrittenMessage {
    descriptor: prost_reflect::MessageDescriptor,
    indexes: Vec<u8>,
}

#[derive(Default)]
struct Cache {
    /// Writer schemas by id (sinks).
    by_id: HashMap<u32, Arc<Writer>>,
    /// (subject, Connect schema JSON) to the id and schema records are written with (sources), and for
    /// Protobuf the message they are written as.
    written: HashMap<(String, String), Written>,
    /// Schema ids whose records cannot be read for now, with until when that answer stands and why (sinks): the
    /// registry answered 404 for the id, or for a schema it references. Such an answer may change (a lagging
    /// registry node, a referenced subject registered later), so unlike `by_id` it expires: after
    /// `missing.id.cache.ttl.sec`, at once when that is 0 (the entry then only tells `decode` why).
    missing: HashMap<u32, (std::time::Instant, String)>,
}

impl std::fmt::Debug for RegistryConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConverter")
            .field("format", &self.format)
            .field("prefix", &self.prefix)
            .field("url", &self.target.url)
            .field("auto_register", &self.auto_register)
            .field("use_latest", &self.use_latest)
            .field("proto_options", &self.proto_options)
            .finish_non_exhaustive()
    }
}

impl PartialEq for RegistryConverter {
    fn eq(&self, o: &Self) -> bool {
        (
            self.format,
            &self.prefix,
            &self.target,
            self.auto_register,
            self.use_latest,
            self.proto_options,
        ) == (
            o.format,
            &o.prefix,
            &o.target,
            o.auto_register,
            o.use_latest,
            o.proto_options,
        )
    }
}

fn flag(props: &ConfigMap, key: &str, default: bool) -> Result<bool, String> {
    match props.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(format!("{key}={v}: expected true or false")),
    }
}

impl RegistryConverter {
    /// The registry converter of `format` configured by `prefix.*` of `props`; an error names the setting and
    /// what to give.
    pub fn from_config(
        format: Format,
        props: &ConfigMap,
        prefix: &str,
    ) -> Result<RegistryConverter, String> {
        if format == Format::Avro {
            // apache-avro allocates what a datum's length prefix says before reading it (up to 512 MiB by
            // default): a poison record of a few bytes must not make the worker allocate that much. The limit is
            // the process's (first caller wins; fjord-sql sets the same).
            apache_avro::util::max_allocation_bytes(wire::MAX_AVRO_ALLOCATION);
        }
        let key = |k: &str| format!("{prefix}.{k}");
        let url_key = key("schema.registry.url");
        let url = props
            .get(&url_key)
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                format!("Missing required configuration \"{url_key}\" which has no default value: give the schema registry's URL, e.g. {url_key}=http://localhost:8081")
            })?;
        // Confluent accepts a comma-separated list; the first is used (one registry answers for all).
        let first = url.split(',').next().unwrap_or(url).trim();
        let mut target = Target::parse(first).map_err(|e| format!("{url_key}: {e}"))?;
        let source = props
            .get(&key("basic.auth.credentials.source"))
            .map(|s| s.trim().to_ascii_uppercase());
        match source.as_deref() {
            None | Some("") => {}
            Some("USER_INFO") => {
                let info_key = key("basic.auth.user.info");
                let info = props.get(&info_key).map(|s| s.trim()).unwrap_or("");
                let (user, password) = info.split_once(':').ok_or_else(|| {
                    format!("{info_key}: give the registry's credentials as user:password (basic.auth.credentials.source=USER_INFO)")
                })?;
                target = target.with_basic_auth(user, password);
            }
            Some(other) => {
                return Err(format!(
                    "{}: {other} is not supported; use USER_INFO with {}=user:password",
                    key("basic.auth.credentials.source"),
                    key("basic.auth.user.info")
                ))
            }
        }
        let strategy_key = key(if prefix.starts_with("key") {
            "key.subject.name.strategy"
        } else {
            "value.subject.name.strategy"
        });
        if let Some(s) = props.get(&strategy_key) {
            if s.trim().rsplit('.').next() != Some("TopicNameStrategy") {
                return Err(format!(
                    "{strategy_key}={s}: only io.confluent.kafka.serializers.subject.TopicNameStrategy is supported"
                ));
            }
        }
        Ok(RegistryConverter {
            format,
            prefix: prefix.to_string(),
            is_key: prefix.starts_with("key"),
            target,
            auto_register: flag(props, &key("auto.register.schemas"), true)?,
            use_latest: flag(props, &key("use.latest.version"), false)?,
            proto_options: crate::protobuf_data::WriteOptions {
                wrapper_for_nullables: flag(props, &key("wrapper.for.nullables"), false)?,
                optional_for_nullables: flag(props, &key("optional.for.nullables"), false)?,
            },
            missing_ttl: {
                let k = key("missing.id.cache.ttl.sec");
                match props.get(&k).map(|v| v.trim()) {
                    None | Some("") => std::time::Duration::from_secs(MISSING_ID_TTL_SECS),
                    Some(v) => v
                        .parse::<u64>()
                        .ok()
                        .filter(|s| *s <= 86_400 * 365)
                        .map(std::time::Duration::from_secs)
                        .ok_or_else(|| {
                            format!("{k}={v}: give the seconds a missing schema id is remembered (0 to ask the registry for every such record)")
                        })?,
                }
            },
            cache: Mutex::new(Cache::default()),
        })
    }

    fn subject(&self, topic: &str) -> String {
        format!("{topic}-{}", if self.is_key { "key" } else { "value" })
    }

    /// A request to the registry; Err is a task failure that says what to do (unreachable, or an answer that is
    /// not the registry's), Ok the status and JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut headers = vec![(
            "Accept".to_string(),
            "application/vnd.schemaregistry.v1+json, application/json".to_string(),
        )];
        if body.is_some() {
            headers.push((
                "Content-Type".to_string(),
                "application/vnd.schemaregistry.v1+json".to_string(),
            ));
        }
        let payload = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let unreachable = |why: String| {
            format!(
                "{}: cannot reach the schema registry at {} ({why}); check {}.schema.registry.url and that the registry is running. The task restarts by itself (task.restart.*) or with POST /connectors/<name>/restart?includeTasks=true",
                self.prefix, self.target.url, self.prefix
            )
        };
        let (status, bytes) = self
            .target
            .request(method, path, &headers, payload, REQUEST_TIMEOUT)
            .await
            .map_err(|e| match e {
                HttpError::Unreachable(w) | HttpError::Protocol(w) | HttpError::Invalid(w) => {
                    unreachable(w)
                }
            })?;
        if status >= 500 {
            return Err(unreachable(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            unreachable(format!(
                "{method} {path} answered HTTP {status} with something that is not JSON"
            ))
        })?;
        Ok((status, v))
    }

    /// Fetches the writer schema of a wire-format record into the cache. Err only when the registry cannot be
    /// asked (a task failure); a record that is not in the wire format or names an unknown id is left for
    /// [`decode`](Self::decode) to report as errant.
    pub async fn prepare_decode(&self, bytes: Option<&[u8]>) -> Result<(), String> {
        let Some((id, _)) = bytes.and_then(wire::split) else {
            return Ok(());
        };
        {
            let cache = self.cache.lock().unwrap();
            if cache.by_id.contains_key(&id)
                || cache
                    .missing
                    .get(&id)
                    .is_some_and(|(until, _)| *until > std::time::Instant::now())
            {
                return Ok(());
            }
        }
        let (status, v) = self
            .call("GET", &format!("/schemas/ids/{id}"), None)
            .await?;
        if status == 404 {
            // Unknown id (40403): decode says so for this record (errant, so errors.tolerance decides). Remembered
            // for missing.id.cache.ttl.sec, so a topic full of such records neither asks the registry nor logs
            // once per record.
            tracing::warn!(prefix = %self.prefix, id, %status, answer = %v, ttl_secs = self.missing_ttl.as_secs(), "schema id not found in the registry; its records are errant");
            self.remember_missing(
                id,
                format!(
                    "schema id {id} is not in the schema registry at {}; was the record written against another registry?",
                    self.target.url
                ),
            );
            return Ok(());
        }
        if status != 200 {
            // Refused (401/403: credentials; 429: too many requests): not the record's fault, so the task
            // fails rather than dead-letter or skip records that are fine.
            return Err(format!(
                "the schema registry at {} refused GET /schemas/ids/{id} with HTTP {status} ({}); check {}.basic.auth.user.info and the registry's access rules",
                self.target.url,
                v.get("message").and_then(Value::as_str).unwrap_or("no message"),
                self.prefix
            ));
        }
        let schema_type = v
            .get("schemaType")
            .and_then(Value::as_str)
            .unwrap_or("AVRO");
        let text = v.get("schema").and_then(Value::as_str).unwrap_or("");
        let writer = if schema_type != self.format.schema_type() {
            Writer::Unusable(format!(
                "schema id {id} is a {schema_type} schema, and {} reads {} ones; use the converter the records were written for ({})",
                self.format.class(),
                self.format.schema_type(),
                Format::class_for(schema_type)
            ))
        } else {
            match self.references(&v["references"]).await {
                Err(Fetch::Task(why)) => return Err(why),
                Err(Fetch::Record(why)) => {
                    // A referenced schema the registry does not have (yet): like a missing id, not remembered
                    // for the task's life, or a reference registered a moment later would keep the id's
                    // records errant until the task restarts.
                    tracing::warn!(prefix = %self.prefix, id, reason = %why, ttl_secs = self.missing_ttl.as_secs(), "a schema the record's schema references is not in the registry; its records are errant");
                    self.remember_missing(id, format!("schema id {id}: {why}"));
                    return Ok(());
                }
                Ok(referenced) => Writer::parse(self.format, text, &referenced)
                    .unwrap_or_else(|e| Writer::Unusable(format!("schema id {id}: {e}"))),
            }
        };
        let mut cache = self.cache.lock().unwrap();
        cache.missing.remove(&id);
        cache.by_id.insert(id, Arc::new(writer));
        Ok(())
    }

    /// Remembers why `id`'s records are errant for now: until `missing.id.cache.ttl.sec` from now (asked again at
    /// the next record when that is 0). Bounded: a full table first drops what expired, then everything.
    fn remember_missing(&self, id: u32, why: String) {
        let now = std::time::Instant::now();
        let mut cache = self.cache.lock().unwrap();
        if cache.missing.len() >= MAX_MISSING_IDS {
            cache.missing.retain(|_, (until, _)| *until > now);
            if cache.missing.len() >= MAX_MISSING_IDS {
                cache.missing.clear();
            }
        }
        cache.missing.insert(id, (now + self.missing_ttl, why));
    }

    /// The schemas `references` reach, dependencies first, each (reference name, text): the walk the CLI and SQL
    /// share ([`wire::ReferenceWalk`]; `GET /subjects/<subject>/versions/<version>`).
    async fn references(&self, references: &Value) -> Result<Vec<(String, String)>, Fetch> {
        let mut walk = wire::ReferenceWalk::new(references);
        while let Some(f) = walk.next().map_err(|e| Fetch::Record(e.to_string()))? {
            let path = format!(
                "/subjects/{}/versions/{}",
                path_segment(&f.subject),
                f.version
            );
            let (status, v) = self.call("GET", &path, None).await.map_err(Fetch::Task)?;
            match status {
                200 => {}
                404 => {
                    return Err(Fetch::Record(format!(
                        "the schema it references as {} ({} version {}) is not in the schema registry",
                        f.name, f.subject, f.version
                    )))
                }
                _ => {
                    return Err(Fetch::Task(format!(
                        "the schema registry at {} refused GET {path} with HTTP {status} ({}); check {}.basic.auth.user.info and the registry's access rules",
                        self.target.url,
                        v.get("message").and_then(Value::as_str).unwrap_or("no message"),
                        self.prefix
                    )))
                }
            }
            walk.fetched(&v);
        }
        Ok(walk.finish())
    }

    /// A record's bytes (in the wire format, its schema fetched by `prepare_decode`) to Connect data.
    pub fn decode(&self, bytes: Option<&[u8]>) -> Result<SchemaAndValue, String> {
        let Some(bytes) = bytes else {
            return Ok(SchemaAndValue::null());
        };
        let (id, body) = split(bytes)?;
        let writer = {
            let cache = self.cache.lock().unwrap();
            match cache.by_id.get(&id) {
                Some(w) => w.clone(),
                None => {
                    return Err(cache.missing.get(&id).map_or_else(
                        || {
                            format!(
                                "schema id {id} was not fetched from the schema registry at {}",
                                self.target.url
                            )
                        },
                        |(_, why)| why.clone(),
                    ))
                }
            }
        };
        let avro = match &*writer {
            Writer::Avro(avro) => avro,
            Writer::Unusable(why) => return Err(why.clone()),
            Writer::Protobuf(proto, schemas) => {
                let message =
                    wire::read_protobuf(proto, body).map_err(|e| format!("schema id {id}: {e}"))?;
                let descriptor = message.descriptor();
                let schema = schemas
                    .lock()
                    .unwrap()
                    .entry(descriptor.full_name().to_string())
                    .or_insert_with(|| {
                        crate::protobuf_data::connect_schema(
                            &descriptor,
                            self.proto_options.wrapper_for_nullables,
                        )
                    })
                    .clone()
                    .map_err(|e| format!("schema id {id}: {e}"))?;
                return Ok(SchemaAndValue {
                    schema: Some(schema),
                    value: crate::protobuf_data::connect_value(
                        &message,
                        crate::protobuf_data::value_budget(body.len()),
                        self.proto_options.wrapper_for_nullables,
                    )
                    .map_err(|e| format!("schema id {id}: {e}"))?,
                });
            }
            Writer::Json { connect, validator } => {
                let value: Value = serde_json::from_slice(body).map_err(|e| {
                    format!("the payload after schema id {id} is not JSON ({e}); the record is corrupt or was not written by a JSON Schema serializer")
                })?;
                if let Some(e) = validator.iter_errors(&value).next() {
                    return Err(format!("the JSON does not match its schema (id {id}): {e}"));
                }
                return Ok(SchemaAndValue {
                    schema: connect.clone(),
                    value,
                });
            }
        };
        // The whole body, no more and no less; a body cut short anywhere (also just before an optional field,
        // which apache-avro alone reads as that field's null branch) is an error, never a value with nulls.
        let datum = avro
            .read(body)
            .map_err(|e| format!("schema id {id}: {e}"))?;
        Ok(SchemaAndValue {
            schema: Some(connect_schema(avro.schema(), avro.names(), false)?),
            value: connect_value(&datum, avro.schema(), avro.names())?,
        })
    }

    /// Registers (or looks up) the Avro schema of `data`'s Connect schema under `topic`'s subject, into the
    /// cache. Err: the registry cannot be asked or refuses the schema (a task failure that says what to do).
    pub async fn prepare_encode(&self, topic: &str, data: &SchemaAndValue) -> Result<(), String> {
        if data.value.is_null() {
            return Ok(());
        }
        let subject = self.subject(topic);
        let connect = data
            .schema
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default();
        let cache_key = (subject.clone(), connect);
        if self.cache.lock().unwrap().written.contains_key(&cache_key) {
            return Ok(());
        }
        let seg = path_segment(&subject);
        // The message Protobuf records are written as: the one derived from the record's Connect schema
        // (also with use.latest.version, where the latest schema must have a message of that name).
        let derived = match (&data.schema, self.format) {
            (Some(schema), Format::Protobuf) => Some(
                crate::protobuf_data::proto_schema_of(schema, self.proto_options)
                    .map_err(|e| format!("{}: {e}", self.prefix))?,
            ),
            _ => None,
        };
        let (id, text) = if self.use_latest {
            let (status, v) = self
                .call("GET", &format!("/subjects/{seg}/versions/latest"), None)
                .await?;
            if status != 200 {
                return Err(format!(
                    "{}: use.latest.version=true but subject {subject} has no schema in the registry ({}); register one first",
                    self.prefix, v
                ));
            }
            // An answer without an id (or one beyond 32 bits) cannot be written as the wire format's id.
            let id = v
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    format!(
                        "{}: the registry's latest version of subject {subject} has no usable schema id ({v})",
                        self.prefix
                    )
                })?;
            let schema_type = v
                .get("schemaType")
                .and_then(Value::as_str)
                .unwrap_or("AVRO");
            if schema_type != self.format.schema_type() {
                return Err(format!(
                    "{}: use.latest.version=true but the latest schema of subject {subject} is a {schema_type} schema, and {} writes {} ones",
                    self.prefix,
                    self.format.class(),
                    self.format.schema_type()
                ));
            }
            let text = v
                .get("schema")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (id, text)
        } else {
            let Some(schema) = &data.schema else {
                return Err(format!("{}: {} needs records with a schema, and this one is schemaless; use JsonConverter with schemas.enable=false for schemaless data", self.prefix, self.format.class()));
            };
            let text = match (self.format, &derived) {
                (Format::Avro, _) => avro_schema_of(schema).map(|s| s.to_string()),
                (Format::JsonSchema, _) => json_schema_of(schema).map(|s| s.to_string()),
                (Format::Protobuf, Some(d)) => Ok(d.text.clone()),
                (Format::Protobuf, None) => {
                    unreachable!("derived above for a record with a schema")
                }
            }
            .map_err(|e| format!("{}: {e}", self.prefix))?;
            let mut body = json!({ "schema": text });
            if self.format != Format::Avro {
                body["schemaType"] = json!(self.format.schema_type());
            }
            let path = if self.auto_register {
                format!("/subjects/{seg}/versions")
            } else {
                format!("/subjects/{seg}")
            };
            let (status, v) = self.call("POST", &path, Some(&body)).await?;
            match status {
                200 => {}
                409 => return Err(format!(
                    "{}: the registry refused the schema of these records under subject {subject} as incompatible with its earlier versions ({}); change the subject's compatibility level (PUT /config/{subject}) or the data",
                    self.prefix,
                    v.get("message").and_then(Value::as_str).unwrap_or("")
                )),
                404 if !self.auto_register => return Err(format!(
                    "{}: the schema of these records is not registered under subject {subject} and auto.register.schemas=false; register it, or set {}.auto.register.schemas=true",
                    self.prefix, self.prefix
                )),
                _ => return Err(format!(
                    "{}: the registry refused the schema under subject {subject} (HTTP {status}: {})",
                    self.prefix,
                    v.get("message").and_then(Value::as_str).unwrap_or("")
                )),
            }
            let id = v.get("id").and_then(Value::as_u64).ok_or_else(|| {
                format!(
                    "{}: the registry's answer has no schema id: {v}",
                    self.prefix
                )
            })? as u32;
            (id, text)
        };
        let schema = Writer::parse(self.format, &text, &[])
            .map_err(|e| format!("{}: schema id {id} of subject {subject}: {e}", self.prefix))?;
        let message = match (&schema, derived) {
            (Writer::Protobuf(proto, _), Some(d)) => {
                let (descriptor, path) = proto.message(Some(&d.message)).map_err(|e| {
                    format!(
                        "{}: schema id {id} of subject {subject} cannot hold these records ({e})",
                        self.prefix
                    )
                })?;
                let mut indexes = Vec::new();
                fjord_registry::proto_json::write_indexes(&path, &mut indexes);
                Some(Arc::new(WrittenMessage {
                    descriptor,
                    indexes,
                }))
            }
            (Writer::Protobuf(..), None) => {
                return Err(format!("{}: {} needs records with a schema, and this one is schemaless; use JsonConverter with schemas.enable=false for schemaless data", self.prefix, self.format.class()));
            }
            _ => None,
        };
        self.cache
            .lock()
            .unwrap()
            .written
            .insert(cache_key, (id, Arc::new(schema), message));
        Ok(())
    }

    /// Connect data to a wire-format record, with the schema id `prepare_encode` got for it.
    pub fn encode(&self, topic: &str, data: &SchemaAndValue) -> Result<Option<Vec<u8>>, String> {
        if data.value.is_null() {
            return Ok(None);
        }
        let connect = data
            .schema
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default();
        let entry = self
            .cache
            .lock()
            .unwrap()
            .written
            .get(&(self.subject(topic), connect))
            .cloned();
        let Some((id, writer, message)) = entry else {
            return Err("the record's schema was not registered first (a bug)".into());
        };
        let mut out = Vec::with_capacity(64);
        out.push(0);
        out.extend_from_slice(&id.to_be_bytes());
        let avro = match &*writer {
            Writer::Avro(avro) => avro,
            Writer::Unusable(why) => return Err(why.clone()),
            Writer::Json { .. } => {
                serde_json::to_writer(&mut out, &data.value).map_err(|e| e.to_string())?;
                return Ok(Some(out));
            }
            Writer::Protobuf(..) => {
                let (Some(written), Some(schema)) = (message, &data.schema) else {
                    return Err("a Protobuf record without its message (a bug)".into());
                };
                let msg =
                    crate::protobuf_data::message_of(&written.descriptor, schema, &data.value)?;
                out.extend_from_slice(&written.indexes);
                prost_reflect::prost::Message::encode(&msg, &mut out).map_err(|e| e.to_string())?;
                return Ok(Some(out));
            }
        };
        let datum = avro_value(&data.value, avro.schema(), avro.names(), "$")?;
        apache_avro::writer::datum::GenericDatumWriter::builder(avro.schema())
            .build()
            .map_err(|e| e.to_string())?
            .write_value(&mut out, datum)
            .map_err(|e| format!("the record does not fit its Avro schema: {e}"))?;
        Ok(Some(out))
    }
}

/// A subject (or a connector name) as one percent-encoded path segment.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A record's bytes split into schema id and body, or why they are not in the wire format (and what to do).
fn split(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    wire::split(bytes).ok_or_else(|| format!(
        "the record is not in the schema registry's wire format (it must start with magic byte 0 and a 4-byte schema id; it starts with {:?}): it was not written by a registry serializer. Use the converter that matches how it was written (StringConverter, JsonConverter, ...), or let errors.tolerance=all with errors.deadletterqueue.topic.name set such records aside",
        String::from_utf8_lossy(&bytes[..bytes.len().min(16)])
    ))
}

// ---- Avro to Connect (sinks) ----

/// The non-null branch of a `[null, T]`/`[T, null]` union.
fn nullable_branch(s: &Schema) -> Option<&Schema> {
    let Schema::Union(u) = s else { return None };
    match u.variants() {
        [Schema::Null, t] | [t, Schema::Null] => Some(t),
        _ => None,
    }
}

fn logical(ty: &str, name: &str, optional: bool) -> Value {
    json!({"type": ty, "optional": optional, "name": name, "version": 1})
}

/// The Connect schema (JsonConverter's JSON form) of an Avro schema, as Confluent's converter maps it.
fn connect_schema<'a>(s: &'a Schema, names: &'a Names, optional: bool) -> Result<Value, String> {
    if let Some(t) = nullable_branch(s) {
        return connect_schema(t, names, true);
    }
    let s = names.resolve(s)?;
    let prim = |t: &str| json!({"type": t, "optional": optional});
    Ok(match s {
        Schema::Boolean => prim("boolean"),
        Schema::Int => prim("int32"),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => prim("int64"),
        Schema::Float => prim("float"),
        Schema::Double => prim("double"),
        Schema::String | Schema::Enum(_) | Schema::Uuid(_) => prim("string"),
        Schema::Bytes | Schema::Fixed(_) | Schema::Duration(_) => prim("bytes"),
        Schema::Date => logical("int32", CONNECT_DATE, optional),
        Schema::TimeMillis => logical("int32", CONNECT_TIME, optional),
        Schema::TimestampMillis | Schema::LocalTimestampMillis => {
            logical("int64", CONNECT_TIMESTAMP, optional)
        }
        Schema::Decimal(d) => {
            let mut v = logical("bytes", CONNECT_DECIMAL, optional);
            v["parameters"] = json!({"scale": d.scale.to_string(), "connect.decimal.precision": d.precision.to_string()});
            v
        }
        Schema::BigDecimal => return Err("big-decimal Avro values are not supported".into()),
        Schema::Array(a) => {
            json!({"type": "array", "items": connect_schema(&a.items, names, false)?, "optional": optional})
        }
        Schema::Map(m) => {
            let mut map = json!({"type": "map", "keys": {"type": "string", "optional": false},
                "values": connect_schema(&m.types, names, false)?, "optional": optional});
            connect_meta_of_avro(&m.attributes, &mut map);
            map
        }
        Schema::Record(r) => {
            let fields = r
                .fields
                .iter()
                .map(|f| {
                    let mut fs = connect_schema(&f.schema, names, false)?;
                    fs["field"] = json!(f.name);
                    Ok(fs)
                })
                .collect::<Result<Vec<_>, String>>()?;
            let name = r
                .attributes
                .get("connect.name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| r.name.fullname(None));
            json!({"type": "struct", "fields": fields, "optional": optional, "name": name})
        }
        Schema::Null => return Err("a null Avro schema has no Connect schema".into()),
        Schema::Union(_) => {
            return Err("Avro unions other than [\"null\", T] are not supported yet".into())
        }
        Schema::Ref { .. } => unreachable!("resolved above"),
    })
}

/// A Connect schema's name, version, doc and parameters from the `connect.*` properties Confluent's AvroData
/// writes on an Avro schema that has no name of its own (a map).
fn connect_meta_of_avro(attributes: &std::collections::BTreeMap<String, Value>, out: &mut Value) {
    if let Some(n) = attributes.get("connect.name").and_then(Value::as_str) {
        out["name"] = json!(n);
    }
    if let Some(v) = attributes.get("connect.version").and_then(Value::as_i64) {
        out["version"] = json!(v);
    }
    if let Some(d) = attributes.get("connect.doc").and_then(Value::as_str) {
        out["doc"] = json!(d);
    }
    if let Some(p) = attributes
        .get("connect.parameters")
        .filter(|p| p.is_object())
    {
        out["parameters"] = p.clone();
    }
}

/// The `connect.*` properties Confluent's AvroData writes for a Connect schema's doc, version, parameters and
/// name on an Avro schema that cannot carry them otherwise (a map, or the array of a map's entries).
fn avro_connect_meta(s: &Value, out: &mut Value) {
    if let Some(d) = s.get("doc").and_then(Value::as_str) {
        out["connect.doc"] = json!(d);
    }
    if let Some(v) = s.get("version").and_then(Value::as_i64) {
        out["connect.version"] = json!(v);
    }
    if let Some(p) = s
        .get("parameters")
        .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
    {
        out["connect.parameters"] = p.clone();
    }
    if let Some(n) = s.get("name").and_then(Value::as_str) {
        out["connect.name"] = json!(n);
    }
}

/// An Avro datum to Connect's JSON value form (bytes as base64, a decimal its unscaled bytes in base64).
fn connect_value<'a>(v: &Avro, s: &'a Schema, names: &'a Names) -> Result<Value, String> {
    let s = names.resolve(s)?;
    let b64 = |b: &[u8]| Value::String(crate::converter::base64_encode(b));
    Ok(match v {
        Avro::Null if matches!(s, Schema::Null) => Value::Null,
        // apache-avro reads a string or bytes value cut short as null: a corrupt record, not a null.
        Avro::Null => {
            return Err(
                "the Avro datum ends early (a value is cut short); the record is corrupt".into(),
            )
        }
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => json!(i),
        Avro::Long(l)
        | Avro::TimeMicros(l)
        | Avro::TimestampMillis(l)
        | Avro::TimestampMicros(l)
        | Avro::TimestampNanos(l)
        | Avro::LocalTimestampMillis(l)
        | Avro::LocalTimestampMicros(l)
        | Avro::LocalTimestampNanos(l) => json!(l),
        Avro::Float(f) => json!(f),
        Avro::Double(f) => json!(f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => b64(b),
        Avro::String(t) | Avro::Enum(_, t) => json!(t),
        Avro::Uuid(u) => json!(u.to_string()),
        Avro::Decimal(d) => {
            let b: Vec<u8> = d
                .try_into()
                .map_err(|e| format!("a decimal cannot be read: {e}"))?;
            b64(&b)
        }
        Avro::BigDecimal(_) => return Err("big-decimal Avro values are not supported".into()),
        Avro::Duration(d) => {
            let b: [u8; 12] = (*d).into();
            b64(&b)
        }
        Avro::Union(i, inner) => {
            let Schema::Union(u) = s else {
                return Err("a union value for a schema that is not a union".into());
            };
            let branch = u
                .variants()
                .get(*i as usize)
                .ok_or("a union branch the schema does not have")?;
            connect_value(inner, branch, names)?
        }
        Avro::Array(items) => {
            let Schema::Array(a) = s else {
                return Err("an array value for a schema that is not an array".into());
            };
            Value::Array(
                items
                    .iter()
                    .map(|i| connect_value(i, &a.items, names))
                    .collect::<Result<_, _>>()?,
            )
        }
        Avro::Map(m) => {
            let Schema::Map(ms) = s else {
                return Err("a map value for a schema that is not a map".into());
            };
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(k.clone(), connect_value(v, &ms.types, names)?);
            }
            Value::Object(out)
        }
        Avro::Record(fields) => {
            let Schema::Record(r) = s else {
                return Err("a record value for a schema that is not a record".into());
            };
            let mut out = Map::new();
            for (name, fv) in fields {
                let f = r
                    .lookup
                    .get(name)
                    .and_then(|i| r.fields.get(*i))
                    .ok_or_else(|| format!("field {name} is not in the schema"))?;
                out.insert(name.clone(), connect_value(fv, &f.schema, names)?);
            }
            Value::Object(out)
        }
    })
}

// ---- Connect to Avro (sources) ----

/// The Avro schema (JSON) Confluent's converter derives from a Connect schema (JsonConverter's JSON form).
pub fn avro_schema_of(connect: &Value) -> Result<Value, String> {
    let mut records = 0usize;
    avro_schema(connect, &mut records)
}

fn avro_schema(s: &Value, records: &mut usize) -> Result<Value, String> {
    let base = avro_schema_required(s, records)?;
    let optional = s.get("optional").and_then(Value::as_bool).unwrap_or(false);
    Ok(if optional {
        json!(["null", base])
    } else {
        base
    })
}

fn avro_schema_required(s: &Value, records: &mut usize) -> Result<Value, String> {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
    let name = s.get("name").and_then(Value::as_str);
    let connect_logical = |avro_ty: &str, logical_ty: &str, n: &str| json!({"type": avro_ty, "connect.version": 1, "connect.name": n, "logicalType": logical_ty});
    Ok(match (ty, name) {
        ("bytes", Some(CONNECT_DECIMAL)) => {
            let param = |k: &str| {
                s.pointer(&format!("/parameters/{}", k.replace('/', "~1")))
                    .and_then(|v| {
                        v.as_str()
                            .and_then(|t| t.parse::<i64>().ok())
                            .or(v.as_i64())
                    })
            };
            let scale = param("scale").unwrap_or(0);
            // Confluent's default precision is 64; an Avro decimal's scale cannot exceed its precision (the
            // PostgreSQL source's numeric without a declared precision has scale 127).
            let precision = param("connect.decimal.precision").unwrap_or(64).max(scale);
            json!({"type": "bytes", "scale": scale, "precision": precision, "connect.version": 1,
                "connect.parameters": {"scale": scale.to_string()}, "connect.name": CONNECT_DECIMAL,
                "logicalType": "decimal"})
        }
        ("int32", Some(CONNECT_DATE)) => connect_logical("int", "date", CONNECT_DATE),
        ("int32", Some(CONNECT_TIME)) => connect_logical("int", "time-millis", CONNECT_TIME),
        ("int64", Some(CONNECT_TIMESTAMP)) => {
            connect_logical("long", "timestamp-millis", CONNECT_TIMESTAMP)
        }
        ("int8", _) => json!({"type": "int", "connect.type": "int8"}),
        ("int16", _) => json!({"type": "int", "connect.type": "int16"}),
        ("int32", _) => json!("int"),
        ("int64", _) => json!("long"),
        ("float" | "float32", _) => json!("float"),
        ("double" | "float64", _) => json!("double"),
        ("boolean", _) => json!("boolean"),
        ("string", _) => json!("string"),
        ("bytes", _) => json!("bytes"),
        ("array", _) => {
            let items = s.get("items").ok_or("an array schema without items")?;
            json!({"type": "array", "items": avro_schema(items, records)?})
        }
        ("map", _) => {
            let keys = s.get("keys").ok_or("a map schema without keys")?;
            let values = s.get("values").ok_or("a map schema without values")?;
            let string_keys = keys.get("type").and_then(Value::as_str) == Some("string")
                && !keys
                    .get("optional")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            let mut map = if string_keys {
                json!({"type": "map", "values": avro_schema(values, records)?})
            } else {
                // The entries are records: io.confluent.connect.avro.MapEntry for a map without a name,
                // else named after the map and marked `connect.internal.type: MapEntry` (as AvroData).
                let mut entry = match name {
                    Some(n) => {
                        let (namespace, record) = match n.rsplit_once('.') {
                            Some((ns, r)) => (Some(ns), r),
                            None => (None, n),
                        };
                        let mut e = json!({"type": "record", "name": record,
                            "connect.internal.type": "MapEntry"});
                        if let Some(ns) = namespace {
                            e["namespace"] = json!(ns);
                        }
                        e
                    }
                    None => {
                        *records += 1;
                        let n = if *records == 1 {
                            String::new()
                        } else {
                            records.to_string()
                        };
                        json!({"type": "record", "name": format!("MapEntry{n}"),
                            "namespace": DEFAULT_NAMESPACE})
                    }
                };
                entry["fields"] = json!([
                    {"name": "key", "type": avro_schema(keys, records)?},
                    {"name": "value", "type": avro_schema(values, records)?}]);
                json!({"type": "array", "items": entry})
            };
            avro_connect_meta(s, &mut map);
            map
        }
        ("struct", _) => {
            *records += 1;
            let (namespace, record) = match name {
                Some(n) => match n.rsplit_once('.') {
                    Some((ns, r)) => (Some(ns.to_string()), r.to_string()),
                    None => (None, n.to_string()),
                },
                None => (
                    Some(DEFAULT_NAMESPACE.to_string()),
                    if *records == 1 {
                        DEFAULT_RECORD.to_string()
                    } else {
                        format!("{DEFAULT_RECORD}{records}")
                    },
                ),
            };
            let fields = s
                .get("fields")
                .and_then(Value::as_array)
                .ok_or("a struct schema without fields")?
                .iter()
                .map(|f| {
                    let fname = f
                        .get("field")
                        .and_then(Value::as_str)
                        .ok_or("a struct field without a name")?;
                    let mut out = json!({"name": fname, "type": avro_schema(f, records)?});
                    if f.get("optional").and_then(Value::as_bool).unwrap_or(false) {
                        out["default"] = Value::Null;
                    }
                    Ok(out)
                })
                .collect::<Result<Vec<_>, String>>()?;
            let mut r = json!({"type": "record", "name": record, "fields": fields});
            if let Some(ns) = namespace {
                r["namespace"] = json!(ns);
            }
            if let Some(n) = name {
                r["connect.name"] = json!(n);
            }
            r
        }
        (other, _) => {
            return Err(format!(
                "a Connect schema of type {other:?} has no Avro form"
            ))
        }
    })
}

// ---- JSON Schema (JsonSchemaConverter) ----

/// The JSON Schema Confluent's JsonSchemaConverter derives from a Connect schema: a struct is an object whose
/// properties carry `connect.index` (their order) and whose required fields are the non-optional ones; an
/// optional schema is `oneOf` null and it; the Connect type goes in `connect.type` where JSON's is coarser
/// (integers, floats, bytes as base64 strings, maps), logical types are named in `title`.
pub fn json_schema_of(connect: &Value) -> Result<Value, String> {
    let base = json_schema_required(connect)?;
    let optional = connect
        .get("optional")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(if optional {
        json!({"oneOf": [{"type": "null"}, base]})
    } else {
        base
    })
}

fn json_schema_required(s: &Value) -> Result<Value, String> {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
    let name = s.get("name").and_then(Value::as_str);
    Ok(match (ty, name) {
        ("bytes", Some(CONNECT_DECIMAL)) => json!({"type": "string", "title": CONNECT_DECIMAL,
            "connect.type": "bytes", "connect.version": 1,
            "connect.parameters": s.get("parameters").cloned().unwrap_or(json!({}))}),
        ("int32", Some(n @ (CONNECT_DATE | CONNECT_TIME))) => {
            json!({"type": "integer", "title": n, "connect.type": "int32", "connect.version": 1})
        }
        ("int64", Some(CONNECT_TIMESTAMP)) => json!({"type": "integer", "title": CONNECT_TIMESTAMP,
            "connect.type": "int64", "connect.version": 1}),
        ("int8" | "int16" | "int32" | "int64", _) => json!({"type": "integer", "connect.type": ty}),
        ("float" | "float32", _) => json!({"type": "number", "connect.type": "float32"}),
        ("double" | "float64", _) => json!({"type": "number", "connect.type": "float64"}),
        ("boolean", _) => json!({"type": "boolean"}),
        ("string", _) => json!({"type": "string"}),
        ("bytes", _) => json!({"type": "string", "connect.type": "bytes"}),
        ("array", _) => {
            let items = s.get("items").ok_or("an array schema without items")?;
            json!({"type": "array", "items": json_schema_of(items)?})
        }
        ("map", _) => {
            let keys = s.get("keys").ok_or("a map schema without keys")?;
            let values = s.get("values").ok_or("a map schema without values")?;
            let mut map = if keys.get("type").and_then(Value::as_str) == Some("string") {
                json!({"type": "object", "additionalProperties": json_schema_of(values)?,
                    "connect.type": "map"})
            } else {
                json!({"type": "array", "connect.type": "map", "items": {"type": "object",
                    "properties": {"key": json_schema_of(keys)?, "value": json_schema_of(values)?}}})
            };
            // As JsonSchemaData: the name is the title, the doc the description.
            if let Some(n) = name {
                map["title"] = json!(n);
            }
            if let Some(d) = s.get("doc").and_then(Value::as_str) {
                map["description"] = json!(d);
            }
            if let Some(v) = s.get("version").and_then(Value::as_i64) {
                map["connect.version"] = json!(v);
            }
            if let Some(p) = s
                .get("parameters")
                .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
            {
                map["connect.parameters"] = p.clone();
            }
            map
        }
        ("struct", _) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            let fields = s
                .get("fields")
                .and_then(Value::as_array)
                .ok_or("a struct schema without fields")?;
            for (i, f) in fields.iter().enumerate() {
                let fname = f
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or("a struct field without a name")?;
                let mut fs = json_schema_of(f)?;
                fs["connect.index"] = json!(i);
                properties.insert(fname.to_string(), fs);
                if !f.get("optional").and_then(Value::as_bool).unwrap_or(false) {
                    required.push(json!(fname));
                }
            }
            let mut out = json!({"type": "object", "properties": properties});
            if !required.is_empty() {
                out["required"] = Value::Array(required);
            }
            if let Some(n) = name {
                out["title"] = json!(n);
            }
            out
        }
        (other, _) => {
            return Err(format!(
                "a Connect schema of type {other:?} has no JSON Schema form"
            ))
        }
    })
}

/// The Connect schema of a JSON Schema, as far as Connect has one: objects with `properties` are structs (fields
/// ordered by `connect.index`, then by name; a field not `required` is optional), `additionalProperties` alone a
/// map, `oneOf`/`anyOf`/`type` lists of null and one type that type optional, integers int64 and numbers
/// float64 unless `connect.type` says more, `title` naming a logical type that type; a `$ref` is followed into
/// the schema's own definitions or the schemas its references reach (as the registry resolves it). Bounded as
/// SQL's walk of the same schemas: nesting plus `$ref`s followed at most [`wire::MAX_SCHEMA_DEPTH`] deep, at most
/// [`wire::MAX_SCHEMA_NODES`] schemas visited, and a `$ref` into a schema that contains it (a recursive type) is
/// refused. Err: a schema with no Connect form (the data is then schemaless).
fn connect_schema_of_json(docs: &JsonDocs) -> Result<Value, String> {
    JsonWalk {
        docs,
        budget: wire::MAX_SCHEMA_NODES,
        active: Vec::new(),
    }
    .connect(&docs.root, 0, 0, false)
}

/// One walk of [`connect_schema_of_json`].
struct JsonWalk<'a> {
    docs: &'a JsonDocs,
    /// Schemas the walk may still visit.
    budget: usize,
    /// The `$ref` targets being resolved (by address): one met again is a recursive type.
    active: Vec<*const Value>,
}

impl<'a> JsonWalk<'a> {
    /// `doc`: the document `s` is in (its local `$ref`s point into it); `depth`: nesting plus `$ref`s followed.
    fn connect(
        &mut self,
        s: &'a Value,
        doc: usize,
        depth: usize,
        optional: bool,
    ) -> Result<Value, String> {
        if self.budget == 0 {
            return Err(format!(
                "the JSON Schema expands to more than {} schemas",
                wire::MAX_SCHEMA_NODES
            ));
        }
        self.budget -= 1;
        if depth > wire::MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the JSON Schema nests (or chains $refs) more than {} deep",
                wire::MAX_SCHEMA_DEPTH
            ));
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let (target, at) = self.docs.resolve(r, doc)?;
            let key = target as *const Value;
            if self.active.contains(&key) {
                return Err(format!(
                    "the JSON Schema is recursive (\"$ref\": \"{r}\" refers to a schema that contains it)"
                ));
            }
            self.active.push(key);
            let out = self.connect(target, at, depth + 1, optional);
            self.active.pop();
            return out;
        }
        let next = depth + 1;
        if let Some(alts) = s
            .get("oneOf")
            .or_else(|| s.get("anyOf"))
            .and_then(Value::as_array)
        {
            let is_null = |a: &Value| a.get("type").and_then(Value::as_str) == Some("null");
            return match alts.as_slice() {
                [a, b] if is_null(a) => self.connect(b, doc, next, true),
                [a, b] if is_null(b) => self.connect(a, doc, next, true),
                [a] => self.connect(a, doc, next, optional),
                _ => Err("a oneOf/anyOf other than null and one type".into()),
            };
        }
        let (ty, optional) = match s.get("type") {
            Some(Value::String(t)) => (t.as_str(), optional),
            Some(Value::Array(types)) => {
                let not_null: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                let [Value::String(one)] = not_null.as_slice() else {
                    return Err("a type list other than null and one type".into());
                };
                (one.as_str(), optional || types.len() > 1)
            }
            _ => return Err("a schema without a type".into()),
        };
        let connect_type = s.get("connect.type").and_then(Value::as_str);
        let title = s.get("title").and_then(Value::as_str);
        let prim = |t: &str| {
            let mut v = json!({"type": t, "optional": optional});
            if let Some(n @ (CONNECT_DECIMAL | CONNECT_DATE | CONNECT_TIME | CONNECT_TIMESTAMP)) =
                title
            {
                v["name"] = json!(n);
                v["version"] = json!(1);
                if let Some(p) = s.get("connect.parameters") {
                    v["parameters"] = p.clone();
                }
            }
            v
        };
        Ok(match (ty, connect_type) {
            ("integer", Some(t @ ("int8" | "int16" | "int32" | "int64"))) => prim(t),
            ("integer", _) => prim("int64"),
            ("number", Some("float32")) => prim("float"),
            ("number", _) => prim("double"),
            ("boolean", _) => prim("boolean"),
            ("string", Some("bytes")) => prim("bytes"),
            ("string", _) => prim("string"),
            ("array", _) => {
                let items = s.get("items").ok_or("an array without items")?;
                json!({"type": "array", "items": self.connect(items, doc, next, false)?, "optional": optional})
            }
            ("object", _) if s.get("properties").is_none() => {
                let values = s
                    .get("additionalProperties")
                    .filter(|v| v.is_object())
                    .ok_or("an object without properties")?;
                let mut map = json!({"type": "map", "keys": {"type": "string", "optional": false},
                "values": self.connect(values, doc, next, false)?, "optional": optional});
                if let Some(n) = title {
                    map["name"] = json!(n);
                }
                if let Some(v) = s.get("connect.version").and_then(Value::as_i64) {
                    map["version"] = json!(v);
                }
                if let Some(d) = s.get("description").and_then(Value::as_str) {
                    map["doc"] = json!(d);
                }
                if let Some(p) = s.get("connect.parameters").filter(|p| p.is_object()) {
                    map["parameters"] = p.clone();
                }
                map
            }
            ("object", _) => {
                let props = s
                    .get("properties")
                    .and_then(Value::as_object)
                    .ok_or("properties that are not an object")?;
                let required: Vec<&str> = s
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut order: Vec<(&String, &Value)> = props.iter().collect();
                order.sort_by_key(|(n, p)| {
                    (
                        p.get("connect.index")
                            .and_then(Value::as_u64)
                            .unwrap_or(u64::MAX),
                        n.to_string(),
                    )
                });
                let fields = order
                    .into_iter()
                    .map(|(n, p)| {
                        let mut f = self.connect(p, doc, next, !required.contains(&n.as_str()))?;
                        f["field"] = json!(n);
                        Ok(f)
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let mut v = json!({"type": "struct", "fields": fields, "optional": optional});
                if let Some(t) = title {
                    v["name"] = json!(t);
                }
                v
            }
            _ => return Err(format!("JSON type {ty} has no Connect schema")),
        })
    }
}

/// Connect's JSON value form to the Avro datum of schema `s` (the schema registered for it).
fn avro_value<'a>(v: &Value, s: &'a Schema, names: &'a Names, at: &str) -> Result<Avro, String> {
    let s = names.resolve(s)?;
    let bad = |what: &str| format!("{at}: expected {what}, got {v}");
    let bytes = || -> Result<Vec<u8>, String> {
        v.as_str()
            .and_then(crate::converter::base64_decode)
            .ok_or_else(|| bad("bytes (base64 text)"))
    };
    let int = || -> Result<i32, String> {
        v.as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| bad("an int"))
    };
    let long = || v.as_i64().ok_or_else(|| bad("a long"));
    Ok(match s {
        Schema::Union(u) => {
            let variants = u.variants();
            if v.is_null() {
                let i = variants
                    .iter()
                    .position(|b| matches!(b, Schema::Null))
                    .ok_or_else(|| format!("{at}: null, but the field is not optional"))?;
                Avro::Union(i as u32, Box::new(Avro::Null))
            } else {
                let mut last = None;
                for (i, b) in variants.iter().enumerate() {
                    if matches!(b, Schema::Null) {
                        continue;
                    }
                    match avro_value(v, b, names, at) {
                        Ok(d) => return Ok(Avro::Union(i as u32, Box::new(d))),
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.unwrap_or_else(|| bad("null")));
            }
        }
        Schema::Null if v.is_null() => Avro::Null,
        Schema::Null => return Err(bad("null")),
        Schema::Boolean => Avro::Boolean(v.as_bool().ok_or_else(|| bad("a boolean"))?),
        Schema::Int => Avro::Int(int()?),
        Schema::Date => Avro::Date(int()?),
        Schema::TimeMillis => Avro::TimeMillis(int()?),
        Schema::Long => Avro::Long(long()?),
        Schema::TimeMicros => Avro::TimeMicros(long()?),
        Schema::TimestampMillis => Avro::TimestampMillis(long()?),
        Schema::TimestampMicros => Avro::TimestampMicros(long()?),
        Schema::TimestampNanos => Avro::TimestampNanos(long()?),
        Schema::LocalTimestampMillis => Avro::LocalTimestampMillis(long()?),
        Schema::LocalTimestampMicros => Avro::LocalTimestampMicros(long()?),
        Schema::LocalTimestampNanos => Avro::LocalTimestampNanos(long()?),
        Schema::Float => Avro::Float(v.as_f64().ok_or_else(|| bad("a float"))? as f32),
        Schema::Double => Avro::Double(v.as_f64().ok_or_else(|| bad("a double"))?),
        Schema::Bytes => Avro::Bytes(bytes()?),
        Schema::Fixed(f) => {
            let b = bytes()?;
            if b.len() != f.size {
                return Err(bad(&format!("{} bytes", f.size)));
            }
            Avro::Fixed(f.size, b)
        }
        Schema::Decimal(d) => {
            let b = bytes()?;
            if let InnerDecimalSchema::Fixed(f) = &d.inner {
                if b.len() != f.size {
                    return Err(bad(&format!("a decimal of {} bytes", f.size)));
                }
            }
            Avro::Decimal(apache_avro::Decimal::from(b))
        }
        Schema::String => Avro::String(v.as_str().ok_or_else(|| bad("a string"))?.to_string()),
        Schema::Uuid(UuidSchema::String) => Avro::Uuid(
            v.as_str()
                .and_then(|t| apache_avro::Uuid::parse_str(t).ok())
                .ok_or_else(|| bad("a UUID string"))?,
        ),
        Schema::Enum(e) => {
            let t = v.as_str().ok_or_else(|| bad("an enum symbol"))?;
            let i = e
                .symbols
                .iter()
                .position(|x| x == t)
                .ok_or_else(|| bad(&format!("one of {}", e.symbols.join(", "))))?;
            Avro::Enum(i as u32, t.to_string())
        }
        Schema::Array(a) => match v {
            Value::Array(items) => Avro::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| avro_value(item, &a.items, names, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            // A Connect map with non-string keys travels as an array of entries; its JSON form is an object.
            Value::Object(o) => Avro::Array(
                o.iter()
                    .map(|(k, val)| {
                        avro_value(&json!({"key": k, "value": val}), &a.items, names, at)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(bad("an array")),
        },
        Schema::Map(m) => match v {
            Value::Object(o) => Avro::Map(
                o.iter()
                    .map(|(k, val)| {
                        Ok((
                            k.clone(),
                            avro_value(val, &m.types, names, &format!("{at}.{k}"))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err(bad("a map (an object)")),
        },
        Schema::Record(r) => {
            let Value::Object(o) = v else {
                return Err(bad("a struct"));
            };
            let mut out = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let fv = o.get(&f.name).unwrap_or(&Value::Null);
                let fv = if fv.is_null() {
                    f.default.as_ref().unwrap_or(fv)
                } else {
                    fv
                };
                out.push((
                    f.name.clone(),
                    avro_value(fv, &f.schema, names, &format!("{at}.{}", f.name))?,
                ));
            }
            Avro::Record(out)
        }
        other => {
            return Err(format!(
                "{at}: Avro type {other:?} is not supported by this converter"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry that answers every request with `status` and `body` (one connection per answer).
    async fn canned_registry(status: u16, body: &'static str) -> String {
        counting_registry(status, body).await.0
    }

    /// [`canned_registry`], and the number of requests it has answered.
    async fn counting_registry(
        status: u16,
        body: &'static str,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (url, count)
    }

    /// A registry that answers each path of `routes` with its JSON body, and anything else with 404.
    async fn routed_registry(routes: Vec<(&'static str, Value)>) -> String {
        let (url, _) = changing_registry(routes).await;
        url
    }

    /// [`routed_registry`] whose routes the test can change while it runs (a subject registered later).
    async fn changing_registry(
        routes: Vec<(&'static str, Value)>,
    ) -> (String, Arc<std::sync::Mutex<Vec<(&'static str, Value)>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(std::sync::Mutex::new(routes));
        let served = routes.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let found = served
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.to_string());
                let (status, body) = match found {
                    Some(b) => (200, b),
                    None => (
                        404,
                        r#"{"error_code":40401,"message":"not found"}"#.to_string(),
                    ),
                };
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (url, routes)
    }

    /// A schema with references (a Protobuf import, an Avro named type defined in another subject): the referenced
    /// schemas are fetched by subject and version, dependencies first, and the record decodes; a reference the
    /// registry does not have makes the record errant, saying which.
    #[tokio::test]
    async fn referenced_schemas_are_fetched_and_a_missing_one_makes_the_record_errant() {
        let header = "syntax = \"proto3\";\npackage shop;\nmessage Header { string source = 1; }\n";
        let order = "syntax = \"proto3\";\npackage shop;\nimport \"shop/header.proto\";\nmessage Order { string id = 1; Header header = 2; }\n";
        let money = r#"{"type":"record","name":"Money","namespace":"com.example","fields":[{"name":"cents","type":"long"}]}"#;
        let price = r#"{"type":"record","name":"Price","namespace":"com.example","fields":[{"name":"amount","type":"com.example.Money"}]}"#;
        let url = routed_registry(vec![
            ("/schemas/ids/11", json!({"schemaType": "PROTOBUF", "schema": order,
                "references": [{"name": "shop/header.proto", "subject": "shop/header.proto", "version": 1}]})),
            ("/subjects/shop%2Fheader.proto/versions/1", json!({"schemaType": "PROTOBUF", "schema": header})),
            ("/schemas/ids/12", json!({"schema": price,
                "references": [{"name": "com.example.Money", "subject": "money", "version": 3}]})),
            ("/subjects/money/versions/3", json!({"schema": money})),
            ("/schemas/ids/13", json!({"schema": price,
                "references": [{"name": "com.example.Money", "subject": "money", "version": 4}]})),
        ])
        .await;
        let converter = |format| {
            let config: ConfigMap = [("value.converter.schema.registry.url", url.as_str())]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            RegistryConverter::from_config(format, &config, "value.converter").unwrap()
        };
        let proto = converter(Format::Protobuf);
        // Id 11, indexes [0] (Order), id = "o", header = {source: "w"}.
        let record = [0u8, 0, 0, 0, 11, 0, 0x0a, 1, b'o', 0x12, 3, 0x0a, 1, b'w'];
        proto.prepare_decode(Some(&record)).await.unwrap();
        assert_eq!(
            proto.decode(Some(&record)).unwrap().value,
            json!({"id": "o", "header": {"source": "w"}})
        );
        let avro = converter(Format::Avro);
        // Id 12, amount.cents = 150 (zig-zag 300).
        let record = [0u8, 0, 0, 0, 12, 0xac, 0x02];
        avro.prepare_decode(Some(&record)).await.unwrap();
        assert_eq!(
            avro.decode(Some(&record)).unwrap().value,
            json!({"amount": {"cents": 150}})
        );
        let record = [0u8, 0, 0, 0, 13, 0xac, 0x02];
        avro.prepare_decode(Some(&record)).await.unwrap();
        let e = avro.decode(Some(&record)).unwrap_err();
        assert!(
            e.contains("schema id 13")
                && e.contains("money version 4) is not in the schema registry"),
            "{e}"
        );
    }

    /// A referenced schema the registry does not have yet makes the record errant, but is not remembered for the
    /// task's life: once the subject is registered, the next record of that id decodes (with
    /// `missing.id.cache.ttl.sec` at its default 0; set, after the TTL). It stayed errant until the task
    /// restarted.
    #[tokio::test]
    async fn a_reference_registered_later_is_found_at_the_next_record() {
        let money = r#"{"type":"record","name":"Money","namespace":"com.example","fields":[{"name":"cents","type":"long"}]}"#;
        let price = r#"{"type":"record","name":"Price","namespace":"com.example","fields":[{"name":"amount","type":"com.example.Money"}]}"#;
        let (url, routes) = changing_registry(vec![(
            "/schemas/ids/12",
            json!({"schema": price,
                "references": [{"name": "com.example.Money", "subject": "money", "version": 3}]}),
        )])
        .await;
        let converter = |ttl: Option<&str>| {
            let mut config: ConfigMap = [("value.converter.schema.registry.url", url.as_str())]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(t) = ttl {
                config.insert("value.converter.missing.id.cache.ttl.sec".into(), t.into());
            }
            RegistryConverter::from_config(Format::Avro, &config, "value.converter").unwrap()
        };
        let (c, remembering) = (converter(None), converter(Some("3600")));
        let record = [0u8, 0, 0, 0, 12, 0xac, 0x02];
        for c in [&c, &remembering] {
            c.prepare_decode(Some(&record)).await.unwrap();
            let e = c.decode(Some(&record)).unwrap_err();
            assert!(
                e.contains("schema id 12")
                    && e.contains("money version 3) is not in the schema registry"),
                "{e}"
            );
        }
        routes
            .lock()
            .unwrap()
            .push(("/subjects/money/versions/3", json!({"schema": money})));
        c.prepare_decode(Some(&record)).await.unwrap();
        assert_eq!(
            c.decode(Some(&record)).unwrap().value,
            json!({"amount": {"cents": 150}})
        );
        // With a TTL the answer stands until it expires.
        remembering.prepare_decode(Some(&record)).await.unwrap();
        let e = remembering.decode(Some(&record)).unwrap_err();
        assert!(e.contains("money version 3"), "{e}");
    }

    #[tokio::test]
    async fn only_an_unknown_id_is_the_records_fault_a_refused_request_fails_the_task() {
        let converter = |url: &str| {
            let config: ConfigMap = [("value.converter.schema.registry.url", url)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            RegistryConverter::from_config(Format::Avro, &config, "value.converter").unwrap()
        };
        let record = [0u8, 0, 0, 0, 7, 2, b'x'];
        // 404: the id is unknown; the record is errant (decode says why), the task goes on.
        let c = converter(
            &canned_registry(
                404,
                r#"{"error_code":40403,"message":"Schema 7 not found"}"#,
            )
            .await,
        );
        assert_eq!(c.prepare_decode(Some(&record)).await, Ok(()));
        let e = c.decode(Some(&record)).unwrap_err();
        assert!(e.contains('7'), "{e}");
        // 401, 403, 429: the registry refused the request, which says nothing about the record.
        for status in [401, 403, 429] {
            let c =
                converter(&canned_registry(status, r#"{"error_code":40101,"message":"no"}"#).await);
            let e = c.prepare_decode(Some(&record)).await.unwrap_err();
            assert!(
                e.contains(&format!("HTTP {status}"))
                    && e.contains("value.converter.basic.auth.user.info"),
                "{status}: {e}"
            );
        }
    }

    /// With `missing.id.cache.ttl.sec` an unknown schema id is asked for once per TTL, not once per record: a
    /// topic full of such records does not flood the registry. Unset (Confluent's default, 0) asks every time; a
    /// bad value is refused with the setting's name.
    #[tokio::test]
    async fn a_missing_schema_id_is_remembered_for_its_ttl() {
        let converter = |url: &str, ttl: Option<&str>| {
            let mut config: ConfigMap = [("value.converter.schema.registry.url", url)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(t) = ttl {
                config.insert("value.converter.missing.id.cache.ttl.sec".into(), t.into());
            }
            RegistryConverter::from_config(Format::Avro, &config, "value.converter")
        };
        let record = [0u8, 0, 0, 0, 7, 2, b'x'];
        let missing = r#"{"error_code":40403,"message":"Schema 7 not found"}"#;
        let (url, asked) = counting_registry(404, missing).await;
        let c = converter(&url, Some("60")).unwrap();
        for _ in 0..5 {
            assert_eq!(c.prepare_decode(Some(&record)).await, Ok(()));
            assert!(c.decode(Some(&record)).unwrap_err().contains("schema id 7"));
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        let (url, asked) = counting_registry(404, missing).await;
        let c = converter(&url, None).unwrap();
        for _ in 0..3 {
            assert_eq!(c.prepare_decode(Some(&record)).await, Ok(()));
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
        let e = converter(&url, Some("soon")).unwrap_err();
        assert!(
            e.contains("value.converter.missing.id.cache.ttl.sec"),
            "{e}"
        );
    }

    /// `prepare_decode` then `decode` of `record` with a registry that serves `schema` for every id, on a thread
    /// of its own: a check or a decoding that does not end within 10 s is an error too, not a hung test.
    fn decode_with_registry_schema(
        schema: &str,
        record: Vec<u8>,
    ) -> Result<SchemaAndValue, String> {
        let body: &'static str =
            Box::leak(json!({ "schema": schema }).to_string().into_boxed_str());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let got = rt.block_on(async {
                let url = canned_registry(200, body).await;
                let config: ConfigMap = [("value.converter.schema.registry.url", url.as_str())]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let c = RegistryConverter::from_config(Format::Avro, &config, "value.converter")
                    .unwrap();
                c.prepare_decode(Some(&record)).await?;
                c.decode(Some(&record))
            });
            let _ = tx.send(got);
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                Err("no answer within 10 s (the schema check or the decoding hangs)".into())
            })
    }

    /// Schemas that amplify, served by the registry: 40 records each using the next twice (a shape check without a
    /// budget walks 2^40 types, and hung the task), an array of nulls and an array of empty records (a count of 3
    /// bytes claims a million values, which were decoded: the nulls then refused by the mapping, the empty
    /// records handed to the sink as a million `{}`). Each record is errant with the reason, before any datum is
    /// read. An array of ints still decodes.
    #[test]
    fn avro_schemas_that_amplify_make_their_records_errant_before_anything_is_decoded() {
        let mut chain =
            r#"{"type":"record","name":"R40","fields":[{"name":"x","type":"int"}]}"#.to_string();
        for i in (0..40).rev() {
            chain = format!(
                r#"{{"type":"record","name":"R{i}","fields":[{{"name":"a","type":{chain}}},{{"name":"b","type":"R{}"}}]}}"#,
                i + 1
            );
        }
        // Id 3, then an array block of 1,000,000 items (zig-zag varint) and the end of the array.
        let mut million = vec![0u8, 0, 0, 0, 3];
        let mut n = 1_000_000u64 << 1;
        while n >= 0x80 {
            million.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        million.push(n as u8);
        million.push(0);
        let started = std::time::Instant::now();
        let e = decode_with_registry_schema(&chain, vec![0, 0, 0, 0, 3, 0]).unwrap_err();
        assert!(e.contains("more than 10000 types"), "{e}");
        for items in [r#""null""#, r#"{"type":"record","name":"E","fields":[]}"#] {
            let schema = format!(r#"{{"type":"array","items":{items}}}"#);
            match decode_with_registry_schema(&schema, million.clone()) {
                Err(e) => assert!(e.contains("take no bytes"), "{items}: {e}"),
                Ok(sv) => panic!(
                    "{items}: decoded into {} values",
                    sv.value.as_array().map_or(0, Vec::len)
                ),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        let ints = decode_with_registry_schema(
            r#"{"type":"array","items":"int"}"#,
            vec![0, 0, 0, 0, 3, 4, 2, 4, 0],
        )
        .unwrap();
        assert_eq!(ints.value, json!([1, 2]));
    }

    #[tokio::test]
    async fn a_latest_version_without_an_id_is_an_error_not_id_zero() {
        let url = canned_registry(
            200,
            r#"{"subject":"t-value","version":1,"schema":"\"string\""}"#,
        )
        .await;
        let config: ConfigMap = [
            ("value.converter.schema.registry.url", url.as_str()),
            ("value.converter.use.latest.version", "true"),
            ("value.converter.auto.register.schemas", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = RegistryConverter::from_config(Format::Avro, &config, "value.converter").unwrap();
        let data = SchemaAndValue {
            schema: Some(json!({"type": "string", "optional": false})),
            value: json!("hello"),
        };
        let e = c.prepare_encode("t", &data).await.unwrap_err();
        assert!(e.contains("no usable schema id"), "{e}");
    }

    #[test]
    fn avro_length_prefixes_beyond_the_allocation_limit_or_the_data_are_errors_not_values() {
        let config: ConfigMap = [("value.converter.schema.registry.url", "http://127.0.0.1:9")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c = RegistryConverter::from_config(Format::Avro, &config, "value.converter").unwrap();
        c.cache.lock().unwrap().by_id.insert(
            5,
            Arc::new(Writer::parse(Format::Avro, r#""string""#, &[]).unwrap()),
        );
        // Id 5, then a string whose zig-zag length prefix claims 200 MiB, and 2 bytes of it.
        let mut record = vec![0u8, 0, 0, 0, 5];
        let mut n = (200u64 << 20) << 1;
        while n >= 0x80 {
            record.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        record.push(n as u8);
        record.extend_from_slice(b"ab");
        let e = c.decode(Some(&record)).unwrap_err();
        assert!(
            e.contains("67108864"),
            "not refused by the 64 MiB limit: {e}"
        );
        let good = [0u8, 0, 0, 0, 5, 0x04, b'a', b'b'];
        assert_eq!(c.decode(Some(&good)).unwrap().value, json!("ab"));
        // Under the limit, a string cut short is an error too, not a value.
        let short = [0u8, 0, 0, 0, 5, 0x80, 0x10, b'a', b'b'];
        assert!(
            c.decode(Some(&short)).is_err(),
            "{:?}",
            c.decode(Some(&short))
        );
    }

    /// A record cut just before an optional field: apache-avro reads the missing union index as branch 0 (null),
    /// which fits the schema, so the old check (a null where the schema has none) let it through as `b: null`.
    #[test]
    fn an_avro_record_cut_before_an_optional_field_is_an_error_not_a_null_field() {
        let config: ConfigMap = [("value.converter.schema.registry.url", "http://127.0.0.1:9")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c = RegistryConverter::from_config(Format::Avro, &config, "value.converter").unwrap();
        let schema = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","string"]}]}"#;
        c.cache.lock().unwrap().by_id.insert(
            6,
            Arc::new(Writer::parse(Format::Avro, schema, &[]).unwrap()),
        );
        // a = "x", b = branch 1 ("y").
        let whole = [0u8, 0, 0, 0, 6, 0x02, b'x', 0x02, 0x02, b'y'];
        assert_eq!(
            c.decode(Some(&whole)).unwrap().value,
            json!({"a": "x", "b": "y"})
        );
        let cut = &whole[..7];
        let e = c.decode(Some(cut)).unwrap_err();
        assert!(e.contains("ends early"), "{e}");
    }

    #[test]
    fn recursive_and_very_deep_avro_schemas_are_refused_not_followed() {
        let recursive =
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#;
        match Writer::parse(Format::Avro, recursive, &[]) {
            Err(why) => assert!(why.contains("recursive (record Node"), "{why}"),
            Ok(_) => panic!("a recursive schema was accepted"),
        }
        let mut deep = r#""int""#.to_string();
        for _ in 0..100 {
            deep = format!(r#"{{"type":"array","items":{deep}}}"#);
        }
        match Writer::parse(Format::Avro, &deep, &[]) {
            Err(why) => assert!(why.contains("more than 64 deep"), "{why}"),
            Ok(_) => panic!("a 100-deep schema was accepted"),
        }
        let shallow = r#"{"type":"record","name":"A","fields":[{"name":"b","type":{"type":"record","name":"B","fields":[{"name":"x","type":"int"}]}},{"name":"c","type":"B"}]}"#;
        assert!(
            matches!(
                Writer::parse(Format::Avro, shallow, &[]),
                Ok(Writer::Avro(_))
            ),
            "a type used twice is not recursion"
        );
    }

    fn resolved(text: &str) -> Box<AvroDecoder> {
        Box::new(AvroDecoder::compile(text, &[]).unwrap())
    }

    /// A struct through the source's mapping, written and read back through the sink's: the same Connect value,
    /// and the schema Confluent's converter registers.
    #[test]
    fn connect_structs_round_trip_through_avro_as_confluents_converter_maps_them() {
        let connect = json!({"type": "struct", "name": "com.example.Item", "optional": false, "fields": [
            {"field": "id", "type": "int32", "optional": false},
            {"field": "tiny", "type": "int8", "optional": false},
            {"field": "name", "type": "string", "optional": true},
            {"field": "price", "type": "bytes", "optional": false, "name": CONNECT_DECIMAL, "version": 1,
             "parameters": {"scale": "2"}},
            {"field": "day", "type": "int32", "optional": false, "name": CONNECT_DATE, "version": 1},
            {"field": "at", "type": "int64", "optional": true, "name": CONNECT_TIMESTAMP, "version": 1},
            {"field": "tags", "type": "array", "items": {"type": "string", "optional": false}, "optional": false},
            {"field": "raw", "type": "bytes", "optional": false}]});
        let avro = avro_schema_of(&connect).unwrap();
        assert_eq!(avro["type"], "record");
        assert_eq!(
            (&avro["name"], &avro["namespace"]),
            (&json!("Item"), &json!("com.example"))
        );
        assert_eq!(avro["connect.name"], "com.example.Item");
        assert_eq!(
            avro["fields"][1]["type"],
            json!({"type": "int", "connect.type": "int8"})
        );
        assert_eq!(
            avro["fields"][2],
            json!({"name": "name", "type": ["null", "string"], "default": null})
        );
        assert_eq!(avro["fields"][3]["type"]["logicalType"], "decimal");
        assert_eq!(avro["fields"][3]["type"]["scale"], 2);
        assert_eq!(avro["fields"][4]["type"]["logicalType"], "date");
        // 1234.56 as unscaled bytes 123456 = 0x01E240.
        let value = json!({"id": 7, "tiny": -3, "name": null, "price": crate::converter::base64_encode(&[0x01, 0xE2, 0x40]),
            "day": 19000, "at": 1_700_000_000_000i64, "tags": ["a", "b"], "raw": crate::converter::base64_encode(b"\x00\xff")});
        let schema = resolved(&avro.to_string());
        let datum = avro_value(&value, schema.schema(), schema.names(), "$").unwrap();
        let mut body = Vec::new();
        apache_avro::writer::datum::GenericDatumWriter::builder(schema.schema())
            .build()
            .unwrap()
            .write_value(&mut body, datum)
            .unwrap();
        let mut wire = vec![0, 0, 0, 0, 9];
        wire.extend_from_slice(&body);
        let conv = RegistryConverter::from_config(
            Format::Avro,
            &[(
                "value.converter.schema.registry.url".to_string(),
                "http://127.0.0.1:1".to_string(),
            )]
            .into_iter()
            .collect(),
            "value.converter",
        )
        .unwrap();
        conv.cache
            .lock()
            .unwrap()
            .by_id
            .insert(9, Arc::new(Writer::Avro(resolved(&avro.to_string()))));
        let back = conv.decode(Some(&wire)).unwrap();
        assert_eq!(back.value, value);
        let s = back.schema.unwrap();
        assert_eq!(s["type"], "struct");
        assert_eq!(s["name"], "com.example.Item");
        let field = |n: &str| {
            s["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["field"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(field("name")["optional"], true);
        assert_eq!(field("price")["name"], CONNECT_DECIMAL);
        assert_eq!(field("price")["parameters"]["scale"], "2");
        assert_eq!(field("day")["name"], CONNECT_DATE);
        assert_eq!(field("at")["name"], CONNECT_TIMESTAMP);
        assert_eq!(field("id")["type"], "int32");
        // Not the wire format, an unknown id: errors that say what is wrong and what to do.
        let e = conv.decode(Some(b"plain text")).unwrap_err();
        assert!(
            e.contains("wire format") && e.contains("errors.tolerance"),
            "{e}"
        );
        let e = conv.decode(Some(&[0, 0, 0, 0, 42, 2])).unwrap_err();
        assert!(e.contains("schema id 42"), "{e}");
    }

    /// Map schemas keep their name, version, doc and parameters: in Avro as `connect.*` properties of the map (a
    /// map with keys other than strings as the array of its entries, the entry record named after the map and
    /// marked `connect.internal.type: MapEntry`, as AvroData), in JSON Schema as the title, description,
    /// `connect.version` and `connect.parameters` (as JsonSchemaData); both read back with them.
    #[test]
    fn named_map_schemas_keep_their_names_through_avro_and_json_schema() {
        let counts = json!({"field": "counts", "type": "map", "optional": false, "name": "com.example.Counts",
            "version": 2, "doc": "per color", "parameters": {"unit": "pcs"},
            "keys": {"type": "string", "optional": false}, "values": {"type": "int32", "optional": false}});
        let connect = json!({"type": "struct", "name": "com.example.Bag", "optional": false, "fields": [
            counts,
            {"field": "by_id", "type": "map", "optional": false, "name": "com.example.ById",
             "keys": {"type": "int32", "optional": false}, "values": {"type": "string", "optional": false}},
            {"field": "plain", "type": "map", "optional": false,
             "keys": {"type": "int32", "optional": false}, "values": {"type": "string", "optional": false}}]});
        let avro = avro_schema_of(&connect).unwrap();
        assert_eq!(
            avro["fields"][0]["type"],
            json!({"type": "map", "values": "int", "connect.doc": "per color", "connect.version": 2,
                "connect.parameters": {"unit": "pcs"}, "connect.name": "com.example.Counts"})
        );
        assert_eq!(
            avro["fields"][1]["type"],
            json!({"type": "array", "connect.name": "com.example.ById", "items": {"type": "record",
                "name": "ById", "namespace": "com.example", "connect.internal.type": "MapEntry",
                "fields": [{"name": "key", "type": "int"}, {"name": "value", "type": "string"}]}})
        );
        // Unnamed: Fjord's numbered MapEntry records of Confluent's namespace, as before.
        let plain = &avro["fields"][2]["type"];
        assert_eq!(
            (&plain["items"]["name"], &plain["items"]["namespace"]),
            (&json!("MapEntry2"), &json!(DEFAULT_NAMESPACE))
        );
        assert!(plain.get("connect.name").is_none(), "{plain}");
        // The sink's mapping reads the map's name, version, doc and parameters back.
        let schema = resolved(&avro.to_string());
        let back = connect_schema(schema.schema(), schema.names(), false).unwrap();
        assert_eq!(back["fields"][0], counts);
        let js = json_schema_of(&connect).unwrap();
        let jc = &js["properties"]["counts"];
        assert_eq!(
            (
                &jc["title"],
                &jc["description"],
                &jc["connect.version"],
                &jc["connect.parameters"]
            ),
            (
                &json!("com.example.Counts"),
                &json!("per color"),
                &json!(2),
                &json!({"unit": "pcs"})
            ),
            "{js}"
        );
        assert_eq!(js["properties"]["by_id"]["title"], "com.example.ById");
        let back = connect_schema_of_json(&JsonDocs {
            root: js.clone(),
            referenced: Vec::new(),
        })
        .unwrap();
        assert_eq!(back["fields"][0], counts);
    }

    /// A JSON Schema whose `$ref`s point into the schemas its registry references reach (and into itself) maps to
    /// the Connect schema of what they resolve to, and records are validated against them; a recursive schema, a
    /// `$ref` chain deeper than the walk goes and a `$ref` to nothing have no Connect schema (the data is
    /// schemaless), quickly.
    #[test]
    fn json_schemas_with_references_are_resolved_validated_and_bounded() {
        let common =
            json!({"definitions": {"sku": {"type": "string"}, "money": {"type": "number"}}});
        let item = json!({"title": "Item", "type": "object", "definitions": {"qty": {"type": "integer",
            "connect.type": "int32"}}, "properties": {
                "sku": {"$ref": "common.json#/definitions/sku"},
                "qty": {"$ref": "#/definitions/qty"},
                "price": {"oneOf": [{"type": "null"}, {"$ref": "common.json#/definitions/money"}]}},
            "required": ["sku", "qty", "price"]});
        let parse = |root: &Value| match Writer::parse(
            Format::JsonSchema,
            &root.to_string(),
            &[("common.json".to_string(), common.to_string())],
        )
        .unwrap()
        {
            Writer::Json { connect, validator } => (connect, validator),
            _ => unreachable!("a JSON writer"),
        };
        let (connect, validator) = parse(&item);
        assert_eq!(
            connect,
            Some(
                json!({"type": "struct", "name": "Item", "optional": false, "fields": [
                {"field": "price", "type": "double", "optional": true},
                {"field": "qty", "type": "int32", "optional": false},
                {"field": "sku", "type": "string", "optional": false}]})
            )
        );
        assert!(validator.is_valid(&json!({"sku": "a", "qty": 1, "price": 1.5})));
        assert!(!validator.is_valid(&json!({"sku": 7, "qty": 1, "price": 1.5})));
        assert!(!validator.is_valid(&json!({"sku": "a", "qty": 1, "price": "1.5"})));
        let recursive = json!({"type": "object", "properties": {"next": {"$ref": "#"}}});
        assert_eq!(parse(&recursive).0, None);
        let mut chain = json!({"type": "object", "properties": {"x": {"$ref": "#/definitions/d0"}},
            "definitions": {}});
        for i in 0..100 {
            chain["definitions"][format!("d{i}")] =
                json!({"$ref": format!("#/definitions/d{}", i + 1)});
        }
        chain["definitions"]["d100"] = json!({"type": "string"});
        let started = std::time::Instant::now();
        assert_eq!(parse(&chain).0, None);
        assert!(started.elapsed() < Duration::from_secs(5));
        let docs = JsonDocs::parse(&chain.to_string(), &[]).unwrap();
        let e = connect_schema_of_json(&docs).unwrap_err();
        assert!(e.contains("more than 64 deep"), "{e}");
    }

    #[test]
    fn unnamed_structs_get_confluents_default_record_names_and_a_url_is_required() {
        let connect = json!({"type": "struct", "optional": false, "fields": [
            {"field": "inner", "type": "struct", "optional": false, "fields": [{"field": "x", "type": "int64", "optional": false}]}]});
        let avro = avro_schema_of(&connect).unwrap();
        assert_eq!(avro["name"], "ConnectDefault");
        assert_eq!(avro["namespace"], DEFAULT_NAMESPACE);
        assert_eq!(avro["fields"][0]["type"]["name"], "ConnectDefault2");
        Schema::parse_str(&avro.to_string()).unwrap();
        assert_eq!(
            avro_schema_of(&json!({"type": "string", "optional": false})).unwrap(),
            json!("string")
        );
        let e = RegistryConverter::from_config(Format::Avro, &ConfigMap::new(), "value.converter")
            .unwrap_err();
        assert!(e.contains("value.converter.schema.registry.url"), "{e}");
    }

    /// A struct's JSON Schema (as Confluent's JsonSchemaConverter derives it) maps back to the same Connect
    /// schema, and values are validated against it: one that does not match is an errant record's error.
    #[test]
    fn json_schemas_of_structs_map_back_and_validate_the_values() {
        let connect = json!({"type": "struct", "name": "com.example.Item", "optional": false, "fields": [
            {"field": "id", "type": "int32", "optional": false},
            {"field": "name", "type": "string", "optional": true},
            {"field": "price", "type": "double", "optional": false},
            {"field": "day", "type": "int32", "optional": false, "name": CONNECT_DATE, "version": 1}]});
        let js = json_schema_of(&connect).unwrap();
        assert_eq!(js["title"], "com.example.Item");
        assert_eq!(js["required"], json!(["id", "price", "day"]));
        assert_eq!(
            js["properties"]["name"],
            json!({"oneOf": [{"type": "null"}, {"type": "string"}], "connect.index": 1})
        );
        let conv = RegistryConverter::from_config(
            Format::JsonSchema,
            &[(
                "value.converter.schema.registry.url".to_string(),
                "http://127.0.0.1:1".to_string(),
            )]
            .into_iter()
            .collect(),
            "value.converter",
        )
        .unwrap();
        let writer = Writer::parse(Format::JsonSchema, &js.to_string(), &[]).unwrap();
        let Writer::Json { connect: back, .. } = &writer else {
            panic!("not a JSON writer");
        };
        assert_eq!(back.as_ref(), Some(&connect));
        conv.cache.lock().unwrap().by_id.insert(5, Arc::new(writer));
        let good = br#"{"id": 1, "name": null, "price": 2.5, "day": 3}"#;
        let wire = [&[0u8, 0, 0, 0, 5][..], good].concat();
        let sv = conv.decode(Some(&wire)).unwrap();
        assert_eq!(sv.schema.as_ref(), Some(&connect));
        assert_eq!(sv.value["price"], 2.5);
        let bad = [
            &[0u8, 0, 0, 0, 5][..],
            br#"{"id": "one", "price": 2.5, "day": 3}"#,
        ]
        .concat();
        let e = conv.decode(Some(&bad)).unwrap_err();
        assert!(e.contains("does not match its schema (id 5)"), "{e}");
        // An Avro id read by the JSON Schema converter says which converter to use.
        conv.cache.lock().unwrap().by_id.insert(
            6,
            Arc::new(Writer::Unusable("schema id 6 is a AVRO schema".into())),
        );
        assert!(conv
            .decode(Some(&[0, 0, 0, 0, 6, 1]))
            .unwrap_err()
            .contains("AVRO"));
    }

    /// ProtobufConverter: the record's message indexes name the message ([1]: the second), decoded into a Connect
    /// struct with its schema; a body that does not decode, or indexes naming no message, are the record's error;
    /// a source cannot write with it.
    #[tokio::test]
    async fn protobuf_records_decode_into_connect_structs() {
        let config: ConfigMap = [("value.converter.schema.registry.url", "http://127.0.0.1:9")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c =
            RegistryConverter::from_config(Format::Protobuf, &config, "value.converter").unwrap();
        let schema = "syntax = \"proto3\";\npackage shop;\nmessage Header { string source = 1; }\nmessage Order { string id = 1; int64 units = 2; Header header = 3; }\n";
        c.cache.lock().unwrap().by_id.insert(
            8,
            Arc::new(Writer::parse(Format::Protobuf, schema, &[]).unwrap()),
        );
        // Id 8, indexes [1] (count 1, index 1, zig-zag), then id = "o", units = 300, header = {source: "w"}.
        let record = [
            0u8, 0, 0, 0, 8, 2, 2, 0x0a, 1, b'o', 0x10, 0xac, 0x02, 0x1a, 3, 0x0a, 1, b'w',
        ];
        let sv = c.decode(Some(&record)).unwrap();
        assert_eq!(
            sv.value,
            json!({"id": "o", "units": 300, "header": {"source": "w"}})
        );
        let s = sv.schema.unwrap();
        assert_eq!(
            (&s["name"], &s["type"]),
            (&json!("Order"), &json!("struct"))
        );
        assert_eq!(s["fields"][2]["name"], "Header");
        // Indexes [0]: the same bytes read as a Header, whose field 1 is a string, so field 2 (a varint) is
        // kept as unknown and field 3 too: Header {source: "o"}.
        let as_header = [&record[..5], &[0u8], &record[7..]].concat();
        assert_eq!(
            c.decode(Some(&as_header)).unwrap().value,
            json!({"source": "o"})
        );
        let mut no_message = record.to_vec();
        no_message[6] = 8;
        let e = c.decode(Some(&no_message)).unwrap_err();
        assert!(
            e.contains("schema id 8") && e.contains("name no message"),
            "{e}"
        );
        let e = c.decode(Some(&record[..record.len() - 1])).unwrap_err();
        assert!(e.contains("does not decode as shop.Order"), "{e}");
    }

    /// A source's struct through ProtobufConverter: the derived schema is registered under the topic's subject,
    /// the record is the wire format (magic 0, the id, message indexes [0], the message) and reads back as the
    /// same Connect value; a schema Protobuf cannot express fails with the field named, and a record that is not
    /// a struct says so.
    #[tokio::test]
    async fn protobuf_converter_writes_source_structs_in_the_wire_format() {
        let url =
            routed_registry(vec![("/subjects/orders-value/versions", json!({"id": 12}))]).await;
        let config: ConfigMap = [
            ("value.converter.schema.registry.url", url.as_str()),
            ("value.converter.optional.for.nullables", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c =
            RegistryConverter::from_config(Format::Protobuf, &config, "value.converter").unwrap();
        let schema = json!({"type": "struct", "optional": false, "fields": [
            {"field": "id", "type": "int64", "optional": false},
            {"field": "note", "type": "string", "optional": true},
            {"field": "at", "type": "int64", "optional": true, "name": CONNECT_TIMESTAMP, "version": 1},
            {"field": "line", "type": "struct", "optional": true, "fields": [
                {"field": "sku", "type": "string", "optional": false}]}]});
        let data = SchemaAndValue {
            schema: Some(schema.clone()),
            value: json!({"id": 7, "note": null, "at": 1_700_000_000_123i64, "line": {"sku": "x"}}),
        };
        c.prepare_encode("orders", &data).await.unwrap();
        let wire = c.encode("orders", &data).unwrap().unwrap();
        assert_eq!(&wire[..6], &[0, 0, 0, 0, 12, 0]);
        let text = crate::protobuf_data::proto_schema_of(&schema, c.proto_options)
            .unwrap()
            .text;
        c.cache.lock().unwrap().by_id.insert(
            12,
            Arc::new(Writer::parse(Format::Protobuf, &text, &[]).unwrap()),
        );
        let back = c.decode(Some(&wire)).unwrap();
        assert_eq!(back.value, data.value);
        assert_eq!(back.schema.unwrap()["name"], "ConnectDefault1");

        let bad = SchemaAndValue {
            schema: Some(json!({"type": "struct", "optional": false, "fields": [
                {"field": "grid", "type": "array", "optional": false,
                 "items": {"type": "array", "optional": false, "items": {"type": "int32", "optional": false}}}]})),
            value: json!({"grid": [[1]]}),
        };
        let e = c.prepare_encode("orders", &bad).await.unwrap_err();
        assert!(
            e.starts_with("value.converter: field grid: an array of arrays"),
            "{e}"
        );
        let scalar = SchemaAndValue {
            schema: Some(json!({"type": "string", "optional": false})),
            value: json!("x"),
        };
        let e = c.prepare_encode("orders", &scalar).await.unwrap_err();
        assert!(e.contains("writes structs"), "{e}");
    }

    /// use.latest.version with ProtobufConverter: records are written with the latest schema's id, as its
    /// message of the derived name (here the second message, so the indexes are [1]); a latest schema without
    /// that message, or whose field does not fit the value, is an error, never a panic.
    #[tokio::test]
    async fn protobuf_use_latest_version_writes_with_the_latest_schemas_message() {
        let latest = "syntax = \"proto3\";\npackage shop;\nmessage Other { string x = 1; }\nmessage Order { int64 id = 1; string note = 2; }\n";
        let url = routed_registry(vec![(
            "/subjects/orders-value/versions/latest",
            json!({"id": 31, "version": 4, "schemaType": "PROTOBUF", "schema": latest}),
        )])
        .await;
        let config: ConfigMap = [
            ("value.converter.schema.registry.url", url.as_str()),
            ("value.converter.use.latest.version", "true"),
            ("value.converter.auto.register.schemas", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c =
            RegistryConverter::from_config(Format::Protobuf, &config, "value.converter").unwrap();
        let schema = json!({"type": "struct", "name": "shop.Order", "optional": false, "fields": [
            {"field": "id", "type": "int64", "optional": false},
            {"field": "note", "type": "string", "optional": true}]});
        let data = SchemaAndValue {
            schema: Some(schema),
            value: json!({"id": 9, "note": "n"}),
        };
        c.prepare_encode("orders", &data).await.unwrap();
        let wire = c.encode("orders", &data).unwrap().unwrap();
        // Id 31, indexes [1] (count 1, index 1, zig-zag), then id = 9, note = "n".
        assert_eq!(wire, [0, 0, 0, 0, 31, 2, 2, 0x08, 9, 0x12, 1, b'n']);

        let unnamed = SchemaAndValue {
            schema: Some(json!({"type": "struct", "optional": false, "fields": [
                {"field": "id", "type": "int64", "optional": false}]})),
            value: json!({"id": 1}),
        };
        let e = c.prepare_encode("orders", &unnamed).await.unwrap_err();
        assert!(
            e.contains("schema id 31") && e.contains("no message ConnectDefault1"),
            "{e}"
        );
        let mismatched = SchemaAndValue {
            schema: Some(
                json!({"type": "struct", "name": "shop.Order", "optional": false, "fields": [
                {"field": "id", "type": "string", "optional": false}]}),
            ),
            value: json!({"id": "not a number"}),
        };
        c.prepare_encode("orders", &mismatched).await.unwrap();
        let e = c.encode("orders", &mismatched).unwrap_err();
        assert!(e.starts_with("field id: expected an integer"), "{e}");
    }

    #[test]
    fn basic_auth_and_the_subject_strategy_are_read_from_the_converters_prefix() {
        let props = |pairs: &[(&str, &str)]| -> ConfigMap {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = RegistryConverter::from_config(
            Format::Avro,
            &props(&[
                (
                    "key.converter.schema.registry.url",
                    "http://127.0.0.1:8081, http://other:8081",
                ),
                ("key.converter.basic.auth.credentials.source", "USER_INFO"),
                ("key.converter.basic.auth.user.info", "fred:s3cret"),
            ]),
            "key.converter",
        )
        .unwrap();
        assert_eq!(
            c.target,
            Target::parse("http://127.0.0.1:8081")
                .unwrap()
                .with_basic_auth("fred", "s3cret")
        );
        assert_eq!(c.subject("orders"), "orders-key");
        let e = RegistryConverter::from_config(
            Format::Avro,
            &props(&[
                (
                    "value.converter.schema.registry.url",
                    "http://127.0.0.1:8081",
                ),
                ("value.converter.basic.auth.credentials.source", "USER_INFO"),
            ]),
            "value.converter",
        )
        .unwrap_err();
        assert!(e.contains("value.converter.basic.auth.user.info"), "{e}");
        let e = RegistryConverter::from_config(
            Format::Avro,
            &props(&[
                (
                    "value.converter.schema.registry.url",
                    "http://127.0.0.1:8081",
                ),
                (
                    "value.converter.value.subject.name.strategy",
                    "io.confluent.kafka.serializers.subject.RecordNameStrategy",
                ),
            ]),
            "value.converter",
        )
        .unwrap_err();
        assert!(
            e.contains("only io.confluent.kafka.serializers.subject.TopicNameStrategy"),
            "{e}"
        );
    }
}
