//! Schema-registry formats of the console tools (`--value-format` / `--key-format`): how a JSON line becomes
//! the bytes a Confluent serializer would write, and back.
//!
//! Confluent's wire format is a magic byte 0, the schema id as 4 bytes big-endian, then the body: Avro binary
//! for Avro, the JSON text for JSON Schema, the message-index array and the Protobuf binary for Protobuf.
//! Producing resolves the schema once at start (registering it under
//! the subject the naming strategy gives, or looking it up, or fetching it by id); consuming fetches each
//! writer schema by the id in the record, once per id. A format is one arm of [`Format`].

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::client::CliError;
use crate::registry_client::{segment, RegistryClient, RegistryError};
use crate::schemas::RegistryArgs;
use fjord_registry::avro_json;

/// At most this many schemas are fetched to resolve the references of one schema.

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Format {
    /// Avro binary in Confluent's wire format (kafka-avro-console-producer/consumer).
    Avro,
    /// JSON text in Confluent's wire format, schema from the registry (JSON Schema).
    JsonSchema,
    /// Protobuf binary in Confluent's wire format, after the message-index array
    /// (kafka-protobuf-console-producer/consumer); JSON in and out in the proto3 JSON mapping.
    Protobuf,
}

impl Format {
    /// The `schemaType` the registry stores.
    fn schema_type(self) -> &'static str {
        match self {
            Format::Avro => "AVRO",
            Format::JsonSchema => "JSON",
            Format::Protobuf => "PROTOBUF",
        }
    }
    fn flag_name(self) -> &'static str {
        match self {
            Format::Avro => "avro",
            Format::JsonSchema => "json-schema",
            Format::Protobuf => "protobuf",
        }
    }
}

/// Which subject a schema is registered under (Confluent's `*.subject.name.strategy`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SubjectStrategy {
    /// TOPIC-value / TOPIC-key (TopicNameStrategy, the default).
    Topic,
    /// The record's full name (RecordNameStrategy).
    Record,
    /// TOPIC-RECORDNAME (TopicRecordNameStrategy).
    TopicRecord,
}

/// The producer's schema options.
#[derive(Args, Clone)]
pub struct ProduceFormatArgs {
    /// Encode each value with a schema from the registry: the line (or the JSON line's "value") is the
    /// value in JSON (Avro's JSON encoding, or plain JSON with unions unwrapped).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        help_heading = "Schema registry"
    )]
    pub value_format: Option<Format>,
    /// The value schema, from a file (registered under the subject unless --no-register).
    #[arg(long, value_name = "FILE", help_heading = "Schema registry",
          conflicts_with_all = ["value_schema", "value_schema_id"])]
    pub value_schema_file: Option<PathBuf>,
    /// The value schema itself.
    #[arg(
        long,
        value_name = "SCHEMA",
        help_heading = "Schema registry",
        conflicts_with = "value_schema_id"
    )]
    pub value_schema: Option<String>,
    /// Use the registered schema with this id for values.
    #[arg(long, value_name = "ID", help_heading = "Schema registry")]
    pub value_schema_id: Option<u32>,
    /// With --value-format protobuf: the message of the schema each value is (its full name, e.g.
    /// shop.Order, or a name unique in the file); the first message of the file by default, as Confluent's
    /// kafka-protobuf-console-producer.
    #[arg(long, value_name = "MESSAGE", help_heading = "Schema registry")]
    pub value_schema_message: Option<String>,
    /// Encode each key with a schema from the registry (the key part of the line, or the JSON line's "key").
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        help_heading = "Schema registry"
    )]
    pub key_format: Option<Format>,
    /// The key schema, from a file.
    #[arg(long, value_name = "FILE", help_heading = "Schema registry",
          conflicts_with_all = ["key_schema", "key_schema_id"])]
    pub key_schema_file: Option<PathBuf>,
    /// The key schema itself.
    #[arg(
        long,
        value_name = "SCHEMA",
        help_heading = "Schema registry",
        conflicts_with = "key_schema_id"
    )]
    pub key_schema: Option<String>,
    /// Use the registered schema with this id for keys.
    #[arg(long, value_name = "ID", help_heading = "Schema registry")]
    pub key_schema_id: Option<u32>,
    /// With --key-format protobuf: the message of the schema each key is (the first by default).
    #[arg(long, value_name = "MESSAGE", help_heading = "Schema registry")]
    pub key_schema_message: Option<String>,
    /// The subject a schema is registered under: topic (TOPIC-value, TOPIC-key), record (the record's full
    /// name) or topic-record (TOPIC-RECORDNAME).
    #[arg(long, value_enum, default_value_t = SubjectStrategy::Topic, help_heading = "Schema registry")]
    pub subject_name_strategy: SubjectStrategy,
    /// Do not register the schema: it must already be registered under the subject (auto.register.schemas=false).
    #[arg(long, help_heading = "Schema registry")]
    pub no_register: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The consumer's schema options.
#[derive(Args, Clone)]
pub struct ConsumeFormatArgs {
    /// Decode each value written in Confluent's wire format with its schema from the registry and print it
    /// as JSON (Avro's JSON encoding for avro).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        help_heading = "Schema registry"
    )]
    pub value_format: Option<Format>,
    /// Decode each key likewise.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        help_heading = "Schema registry"
    )]
    pub key_format: Option<Format>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// A schema ready to encode or decode with.
enum Codec {
    /// Boxed: one codec per schema id, and the Avro one is large. Its shape was checked once when it was
    /// compiled, not again per record.
    Avro(Box<fjord_registry::wire::AvroDecoder>),
    /// JSON text; when producing, each value is first validated against the schema (as Confluent's
    /// JSONSerializer does), when the schema compiles without references of its own.
    Json(Option<Box<jsonschema::Validator>>),
    Protobuf(Box<ProtoCodec>),
}

struct ProtoCodec {
    schema: fjord_registry::proto_json::ProtoSchema,
    /// The message a producer writes (`--value-schema-message`, else the first), with its index path; a
    /// consumer uses the message each record's indexes name.
    message: prost_reflect::MessageDescriptor,
    indexes: Vec<i32>,
}

impl Codec {
    /// Builds the codec for a registered schema (`schema` as the registry holds it, with its references).
    fn new(
        client: &RegistryClient,
        format: Format,
        text: &str,
        schema_type: &str,
        references: &Value,
        message: Option<&str>,
    ) -> Result<Codec, CodecError> {
        if schema_type != format.schema_type() {
            return Err(CodecError::Invalid(format!(
                "the schema is of type {schema_type}, not {} as --*-format {} says",
                format.schema_type(),
                format.flag_name()
            )));
        }
        match format {
            Format::Avro => {
                let named = fetch_references(client, references)?;
                Ok(Codec::Avro(Box::new(
                    fjord_registry::wire::AvroDecoder::compile(text, &named)?,
                )))
            }
            Format::Protobuf => {
                let referenced = fetch_references(client, references)?;
                let schema = fjord_registry::proto_json::ProtoSchema::compile(text, &referenced)
                    .map_err(|e| format!("not a Protobuf schema: {e}"))?;
                let (message, indexes) = schema.message(message)?;
                Ok(Codec::Protobuf(Box::new(ProtoCodec {
                    schema,
                    message,
                    indexes,
                })))
            }
            Format::JsonSchema => {
                let has_references = references.as_array().is_some_and(|r| !r.is_empty());
                if has_references {
                    // Its references would have to be fetched and served to the validator: the registry
                    // validated the schema itself, and the consumer does not validate.
                    return Ok(Codec::Json(None));
                }
                Ok(json_validator(text).map(|v| Codec::Json(Some(Box::new(v))))?)
            }
        }
    }

    fn encode_body(&self, j: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Codec::Avro(c) => {
                let (schema, references) = (c.schema(), c.references());
                let v = avro_json::from_json(j, schema, c.names())?;
                // The schema itself is among the schemata: a named type used a second time is a reference by
                // name, which the writer resolves only from this list.
                // Dependencies first: apache-avro resolves the list in order, so a schema's references
                // must come before it.
                let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                    .schemata(references.iter().chain(std::iter::once(schema)).collect())
                    .map_err(|e| e.to_string())?
                    .build()
                    .map_err(|e| e.to_string())?;
                writer
                    .write_value(out, v)
                    .map_err(|e| format!("does not fit the schema: {e}"))?;
                Ok(())
            }
            Codec::Protobuf(p) => {
                fjord_registry::proto_json::write_indexes(&p.indexes, out);
                out.extend(fjord_registry::proto_json::from_json(&p.message, j)?);
                Ok(())
            }
            Codec::Json(validator) => {
                if let Some(v) = validator {
                    if let Some(e) = v.iter_errors(j).next() {
                        let at = e.instance_path().to_string();
                        let at = if at.is_empty() { "/".to_string() } else { at };
                        return Err(format!("does not match its JSON Schema: {e} (at {at})"));
                    }
                }
                out.extend_from_slice(j.to_string().as_bytes());
                Ok(())
            }
        }
    }

    fn decode_body(&self, body: &[u8]) -> Result<String, String> {
        // The decoding the dashboard shows too (fjord_registry::wire): bounded against hostile records.
        match self {
            Codec::Avro(c) => c.to_json(body),
            Codec::Protobuf(p) => fjord_registry::wire::decode_protobuf(&p.schema, body),
            Codec::Json(_) => {
                let v: Value = serde_json::from_slice(body)
                    .map_err(|e| format!("the body is not JSON: {e}"))?;
                Ok(v.to_string())
            }
        }
    }
}

/// A validator for a JSON Schema text without references (draft 7, Confluent's default, when it names none).
fn json_validator(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Schema (not JSON): {e}"))?;
    let named = schema.get("$schema").is_some();
    // jsonschema panics on a few malformed schemas (the registry guards the same way).
    std::panic::catch_unwind(|| {
        let mut options = jsonschema::options().should_validate_formats(false);
        if !named {
            options = options.with_draft(jsonschema::Draft::Draft7);
        }
        options.build(&schema)
    })
    .map_err(|_| "not a valid JSON Schema (it cannot be compiled)".to_string())?
    .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

/// Why a codec could not be built.
#[derive(Debug)]
enum CodecError {
    /// For good: the schema is not valid, or a schema it references does not exist (40401, 40402, 40403).
    Invalid(String),
    /// For now: a referenced schema could not be fetched for a reason that may pass (the registry is
    /// unreachable, failed, or answered like no registry). Never remembered: a consumer stops before the record.
    Transient(CliError),
}

impl From<String> for CodecError {
    fn from(e: String) -> CodecError {
        CodecError::Invalid(e)
    }
}

impl CodecError {
    /// As the producer reports it, `what` first; a transient error keeps its exit code.
    fn into_cli(self, what: &str) -> CliError {
        match self {
            CodecError::Invalid(e) => CliError::failure(format!("{what}: {e}")),
            CodecError::Transient(e) => CliError::new(e.code, format!("{what}: {}", e.message)),
        }
    }
}

/// Fetches the referenced schemas (and theirs), dependencies first, at most
/// [`fjord_registry::wire::MAX_REFERENCES`]: (reference name, schema text), through the walk SQL and Connect share
/// ([`fjord_registry::wire::ReferenceWalk`]). Each subject version is fetched once, so a diamond of references costs
/// one GET per schema; two reference names for one text are both kept (Protobuf imports resolve by name).
fn fetch_references(
    client: &RegistryClient,
    references: &Value,
) -> Result<Vec<(String, String)>, CodecError> {
    let mut walk = fjord_registry::wire::ReferenceWalk::new(references);
    while let Some(f) = walk
        .next()
        .map_err(|e| CodecError::Invalid(e.to_string()))?
    {
        let what = format!(
            "cannot fetch the referenced schema {} version {}",
            f.subject, f.version
        );
        let v = match client.get(&format!(
            "/subjects/{}/versions/{}",
            segment(&f.subject),
            f.version
        )) {
            Ok(v) => v,
            // The answers that say the reference can never be resolved: no such subject, version or schema.
            Err(
                e @ RegistryError::Api {
                    code: 40401..=40403,
                    ..
                },
            ) => return Err(CodecError::Invalid(client.explain(&what, e).message)),
            Err(e) => return Err(CodecError::Transient(client.explain(&what, e))),
        };
        walk.fetched(&v);
    }
    Ok(walk.finish())
}

/// A field's encoder: the schema id and its codec.
pub struct Encoder {
    id: u32,
    codec: Codec,
    /// `--key-format` or `--value-format`, for messages.
    field: &'static str,
}

impl Encoder {
    /// The bytes of `j` in Confluent's wire format.
    pub fn encode(&self, j: &Value) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(64);
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        self.codec
            .encode_body(j, &mut out)
            .map_err(|e| format!("the {} {e}", self.field))?;
        Ok(out)
    }
}

/// The key and value encoders the producer's options ask for.
pub struct Encoders {
    pub key: Option<Encoder>,
    pub value: Option<Encoder>,
}

impl Encoders {
    pub fn new(args: &ProduceFormatArgs, topic: &str) -> Result<Encoders, CliError> {
        let given = |file: &Option<PathBuf>, text: &Option<String>, id: &Option<u32>| {
            file.is_some() || text.is_some() || id.is_some()
        };
        if args.value_format.is_none()
            && given(
                &args.value_schema_file,
                &args.value_schema,
                &args.value_schema_id,
            )
        {
            return Err(CliError::bad_args(
                "a value schema was given without --value-format (e.g. --value-format avro)",
            ));
        }
        if args.key_format.is_none()
            && given(&args.key_schema_file, &args.key_schema, &args.key_schema_id)
        {
            return Err(CliError::bad_args(
                "a key schema was given without --key-format (e.g. --key-format avro)",
            ));
        }
        if args.value_format.is_none() && args.key_format.is_none() {
            return Ok(Encoders {
                key: None,
                value: None,
            });
        }
        let client = args.registry.client()?;
        let value = args
            .value_format
            .map(|f| {
                encoder(
                    &client,
                    args,
                    topic,
                    f,
                    false,
                    (
                        &args.value_schema_file,
                        &args.value_schema,
                        args.value_schema_id,
                        args.value_schema_message.as_deref(),
                    ),
                )
            })
            .transpose()?;
        let key = args
            .key_format
            .map(|f| {
                encoder(
                    &client,
                    args,
                    topic,
                    f,
                    true,
                    (
                        &args.key_schema_file,
                        &args.key_schema,
                        args.key_schema_id,
                        args.key_schema_message.as_deref(),
                    ),
                )
            })
            .transpose()?;
        Ok(Encoders { key, value })
    }
}

fn encoder(
    client: &RegistryClient,
    args: &ProduceFormatArgs,
    topic: &str,
    format: Format,
    is_key: bool,
    (file, inline, id, message): (&Option<PathBuf>, &Option<String>, Option<u32>, Option<&str>),
) -> Result<Encoder, CliError> {
    if message.is_some() && format != Format::Protobuf {
        return Err(CliError::bad_args(format!(
            "--{}-schema-message names a Protobuf message; it needs --{}-format protobuf",
            if is_key { "key" } else { "value" },
            if is_key { "key" } else { "value" },
        )));
    }
    let which = if is_key { "key" } else { "value" };
    let field: &'static str = if is_key { "key" } else { "value" };
    if let Some(id) = id {
        let what = format!("cannot fetch the {which} schema with id {id}");
        let v = client
            .get(&format!("/schemas/ids/{id}"))
            .map_err(|e| client.explain(&what, e))?;
        let codec = Codec::new(
            client,
            format,
            v["schema"].as_str().unwrap_or_default(),
            v["schemaType"].as_str().unwrap_or("AVRO"),
            &v["references"],
            message,
        )
        .map_err(|e| e.into_cli(&what))?;
        return Ok(Encoder { id, codec, field });
    }
    let text = match (file, inline) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|e| {
            CliError::failure(format!("cannot read the {which} schema file {}: {e}", f.display()))
        })?,
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(CliError::bad_args(format!(
                "--{which}-format {} needs a schema: --{which}-schema-file FILE, --{which}-schema TEXT or --{which}-schema-id ID",
                format.flag_name()
            )))
        }
    };
    // Parsed here first, so that a bad schema is reported by what is wrong with it, before the registry.
    let codec = Codec::new(
        client,
        format,
        &text,
        format.schema_type(),
        &Value::Null,
        message,
    )
    .map_err(|e| e.into_cli(&format!("the {which} schema")))?;
    let record_name = || -> Result<String, CliError> {
        let name = match (&codec, format) {
            (Codec::Avro(c), _) => c.schema().name().map(|n| n.fullname(None)),
            (Codec::Json(_), _) => serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["title"].as_str().map(str::to_string)),
            (Codec::Protobuf(p), _) => Some(p.message.full_name().to_string()),
        };
        name.ok_or_else(|| {
            CliError::bad_args(format!(
                "--subject-name-strategy {} needs a named {which} schema (an Avro record, enum or fixed; a JSON Schema with a title)",
                match args.subject_name_strategy {
                    SubjectStrategy::Record => "record",
                    _ => "topic-record",
                }
            ))
        })
    };
    let subject = match args.subject_name_strategy {
        SubjectStrategy::Topic => format!("{topic}-{which}"),
        SubjectStrategy::Record => record_name()?,
        SubjectStrategy::TopicRecord => format!("{topic}-{}", record_name()?),
    };
    let mut body = json!({ "schema": text });
    if format != Format::Avro {
        body["schemaType"] = json!(format.schema_type());
    }
    let (path, what) = if args.no_register {
        (
            format!("/subjects/{}", segment(&subject)),
            format!("the {which} schema is not registered under `{subject}` (--no-register)"),
        )
    } else {
        (
            format!("/subjects/{}/versions", segment(&subject)),
            format!("cannot register the {which} schema under `{subject}`"),
        )
    };
    let v = client.post(&path, &body).map_err(|e| match e {
        RegistryError::Api { code: 40401, .. } | RegistryError::Api { code: 40403, .. }
            if args.no_register =>
        {
            CliError::failure(format!(
                "{what}; register it with `fjord schemas register {subject} --schema-file FILE` or leave out --no-register"
            ))
        }
        e => client.explain(&what, e),
    })?;
    let id = v["id"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| CliError::failure(format!("{what}: the registry answered no id: {v}")))?;
    Ok(Encoder { id, codec, field })
}

/// Decodes records written in Confluent's wire format, fetching each writer schema once by its id.
pub struct Decoders {
    key: Option<Format>,
    value: Option<Format>,
    client: Option<RegistryClient>,
    /// By (format, id): the codec, or why the schema cannot be used (asked once, not per record).
    cache: HashMap<(Format, u32), Result<Codec, String>>,
}

impl Decoders {
    pub fn new(args: &ConsumeFormatArgs) -> Result<Decoders, CliError> {
        let client = if args.key_format.is_some() || args.value_format.is_some() {
            Some(args.registry.client()?)
        } else {
            None
        };
        Ok(Decoders {
            key: args.key_format,
            value: args.value_format,
            client,
            cache: HashMap::new(),
        })
    }

    pub fn any(&self) -> bool {
        self.key.is_some() || self.value.is_some()
    }

    pub fn key(&mut self, bytes: Option<&[u8]>) -> Result<Option<Vec<u8>>, DecodeError> {
        match (self.key, bytes) {
            (Some(f), Some(b)) => self.decode(f, b).map(|s| Some(s.into_bytes())),
            (_, b) => Ok(b.map(<[u8]>::to_vec)),
        }
    }

    pub fn value(&mut self, bytes: Option<&[u8]>) -> Result<Option<Vec<u8>>, DecodeError> {
        match (self.value, bytes) {
            (Some(f), Some(b)) => self.decode(f, b).map(|s| Some(s.into_bytes())),
            (_, b) => Ok(b.map(<[u8]>::to_vec)),
        }
    }

    /// One field in the wire format, decoded to JSON text with the writer schema its id names.
    fn decode(&mut self, format: Format, b: &[u8]) -> Result<String, DecodeError> {
        if b.len() < 5 || b[0] != 0 {
            return Err(DecodeError::Undecodable(match b.first() {
                None => "empty, not in Confluent's wire format (magic byte 0, 4-byte schema id, body)".into(),
                Some(0) => format!("only {} bytes: too short for Confluent's wire format (magic byte 0, 4-byte schema id, body)", b.len()),
                Some(m) => format!(
                    "not in Confluent's wire format: the first byte is 0x{m:02x}, not the magic byte 0 (was it written without a schema registry serializer?)"
                ),
            }));
        }
        let id = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        if !self.cache.contains_key(&(format, id)) {
            let client = self
                .client
                .as_ref()
                .ok_or_else(|| DecodeError::Stop(CliError::failure("no registry client")))?;
            let fetched = match client.get(&format!("/schemas/ids/{id}")) {
                Ok(v) => match Codec::new(
                    client,
                    format,
                    v["schema"].as_str().unwrap_or_default(),
                    v["schemaType"].as_str().unwrap_or("AVRO"),
                    &v["references"],
                    None,
                ) {
                    Ok(codec) => Ok(codec),
                    Err(CodecError::Invalid(e)) => Err(format!("schema id {id}: {e}")),
                    // A referenced schema could not be fetched for now: as below, not remembered.
                    Err(CodecError::Transient(e)) => {
                        return Err(DecodeError::Stop(
                            CodecError::Transient(e).into_cli(&format!("schema id {id}")),
                        ))
                    }
                },
                // The one answer that says the record can never be decoded: no schema has this id.
                Err(e @ RegistryError::Api { code: 40403, .. }) => {
                    Err(client.explain(&format!("schema id {id}"), e).message)
                }
                // Anything else (unreachable, a 5xx, an answer that is not the registry's) may pass: it is
                // not remembered, and the run stops before the record, so that it is read again.
                Err(e) => {
                    return Err(DecodeError::Stop(
                        client.explain(&format!("cannot fetch schema id {id}"), e),
                    ))
                }
            };
            self.cache.insert((format, id), fetched);
        }
        match &self.cache[&(format, id)] {
            Ok(codec) => codec
                .decode_body(&b[5..])
                .map_err(|e| DecodeError::Undecodable(format!("schema id {id}: {e}"))),
            Err(e) => Err(DecodeError::Undecodable(e.clone())),
        }
    }
}

/// Why a field did not decode.
#[derive(Debug)]
pub enum DecodeError {
    /// The record can never be decoded (not in the wire format, no schema with its id, a body that does not
    /// fit its schema): it is reported and skipped.
    Undecodable(String),
    /// The schema could not be fetched for a reason that may pass (the registry is unreachable or failed):
    /// the run stops before the record, which is neither printed nor committed.
    Stop(CliError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro_codec(s: &str) -> Codec {
        Codec::Avro(Box::new(
            fjord_registry::wire::AvroDecoder::compile(s, &[]).unwrap(),
        ))
    }

    #[test]
    fn confluent_wire_format_is_magic_id_body() {
        let e = Encoder {
            id: 258,
            codec: avro_codec(r#""string""#),
            field: "value",
        };
        // Avro binary of "ab": zigzag length 2 (0x04), then the bytes.
        assert_eq!(
            e.encode(&json!("ab")).unwrap(),
            vec![0, 0, 0, 1, 2, 4, b'a', b'b']
        );
        let j = Encoder {
            id: 1,
            codec: Codec::Json(None),
            field: "value",
        };
        assert_eq!(
            j.encode(&json!({"a": 1})).unwrap(),
            b"\0\0\0\0\x01{\"a\":1}".to_vec()
        );
    }

    #[test]
    fn a_json_value_that_does_not_match_its_schema_is_refused_naming_the_violation() {
        let v = json_validator(
            r#"{"type":"object","properties":{"sku":{"type":"string"},"price":{"type":"number"}},"required":["sku"]}"#,
        )
        .unwrap();
        let e = Encoder {
            id: 3,
            codec: Codec::Json(Some(Box::new(v))),
            field: "value",
        };
        assert!(e.encode(&json!({"sku": "a", "price": 1.5})).is_ok());
        let err = e.encode(&json!({"sku": 7})).unwrap_err();
        assert!(
            err.starts_with("the value does not match its JSON Schema")
                && err.contains("at /sku")
                && err.contains("7"),
            "{err}"
        );
        let err = e.encode(&json!({"price": 1})).unwrap_err();
        assert!(err.contains("sku") && err.contains("(at /)"), "{err}");
        assert!(json_validator(r#"{"type": 12}"#).is_err());
        assert!(json_validator("not json").is_err());
    }

    #[test]
    fn a_registry_failing_with_5xx_stops_the_run_and_is_asked_again_not_remembered() {
        use std::io::{Read, Write};
        // A registry that answers every request 500 with Confluent's 50001.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(2) {
                let Ok(mut s) = stream else { continue };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = r#"{"error_code":50001,"message":"Error in the backend data store"}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let client = RegistryClient::new(
            &format!("http://127.0.0.1:{port}"),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let mut d = Decoders {
            key: None,
            value: Some(Format::Avro),
            client: Some(client),
            cache: HashMap::new(),
        };
        for _ in 0..2 {
            match d.value(Some(&[0, 0, 0, 0, 9, 2])) {
                Err(DecodeError::Stop(e)) => assert!(
                    e.message.contains("50001") || e.message.contains("store"),
                    "{}",
                    e.message
                ),
                other => panic!("a 5xx must stop the run: {other:?}"),
            }
        }
        assert_eq!(
            asked.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "asked again, not remembered"
        );
    }

    #[test]
    fn a_named_type_used_twice_round_trips() {
        // The second use of `Money` is a reference by name: the writer and reader must resolve it within the
        // schema itself, also when the schema has no references of its own.
        let c = avro_codec(
            r#"{"type":"record","name":"Order","fields":[
                {"name":"price","type":{"type":"record","name":"Money","fields":[{"name":"cents","type":"long"}]}},
                {"name":"tax","type":"Money"}]}"#,
        );
        let mut body = Vec::new();
        c.encode_body(
            &json!({"price": {"cents": 250}, "tax": {"cents": 50}}),
            &mut body,
        )
        .expect("encodes");
        let text = c.decode_body(&body).expect("decodes");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!({"price": {"cents": 250}, "tax": {"cents": 50}}));
    }

    /// The schema's shape is checked once, when its codec is built, not for every record: a schema nested
    /// deeper than the registry's limit gives no codec at all (a consumer then reports each of its records as
    /// undecodable with that reason, a producer stops before sending).
    #[test]
    fn a_schema_too_deep_to_read_gives_no_codec() {
        // Arrays of arrays: one JSON object per level (nested records would hit serde_json's own recursion limit
        // first).
        let nested = |depth: usize| {
            (0..depth).fold(r#""string""#.to_string(), |inner, _| {
                format!(r#"{{"type":"array","items":{inner}}}"#)
            })
        };
        let depth = fjord_registry::wire::MAX_SCHEMA_DEPTH + 2;
        let err = match fjord_registry::wire::AvroDecoder::compile(&nested(depth), &[]) {
            Ok(_) => panic!("a {depth}-deep schema compiled"),
            Err(e) => e,
        };
        assert!(err.contains("deep"), "{err}");
        // Within the limit it reads: an empty outer array is one zero block count.
        let c = avro_codec(&nested(fjord_registry::wire::MAX_SCHEMA_DEPTH - 2));
        assert_eq!(c.decode_body(&[0x00]).unwrap(), "[]");
    }

    #[test]
    fn a_body_that_ends_early_is_an_error_not_null() {
        let c =
            avro_codec(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#);
        // "ab" would be 04 61 62; the length says 8 bytes.
        let err = c.decode_body(&[0x10, b'a', b'b']).unwrap_err();
        assert!(!err.is_empty());
        // Cut right before an optional field: apache-avro reads its missing branch index as null, a value that
        // fits the schema, so validating it let the record through as {"a": "ab", "b": null}.
        let c = avro_codec(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","string"]}]}"#,
        );
        assert!(c.decode_body(&[0x04, b'a', b'b', 0x02, 0x02, b'c']).is_ok());
        let err = c.decode_body(&[0x04, b'a', b'b']).unwrap_err();
        assert!(err.contains("ends early"), "{err}");
    }

    #[test]
    fn records_not_in_the_wire_format_are_named_as_such() {
        let mut d = Decoders {
            key: None,
            value: Some(Format::Avro),
            client: None,
            cache: HashMap::new(),
        };
        let undecodable = |r: Result<Option<Vec<u8>>, DecodeError>| match r {
            Err(DecodeError::Undecodable(e)) => e,
            other => panic!("expected an undecodable record: {other:?}"),
        };
        let e = undecodable(d.value(Some(b"{\"plain\":1}")));
        assert!(e.contains("first byte is 0x7b"), "{e}");
        let e = undecodable(d.value(Some(&[0, 0, 1])));
        assert!(e.contains("too short"), "{e}");
        // A null value (tombstone) stays null; keys without --key-format pass through.
        assert_eq!(d.value(None).unwrap(), None);
        assert_eq!(d.key(Some(b"k")).unwrap(), Some(b"k".to_vec()));
        // A cached schema decodes; trailing bytes mean the wrong schema.
        d.cache
            .insert((Format::Avro, 7), Ok(avro_codec(r#""long""#)));
        assert_eq!(
            d.value(Some(&[0, 0, 0, 0, 7, 2])).unwrap(),
            Some(b"1".to_vec())
        );
        let e = undecodable(d.value(Some(&[0, 0, 0, 0, 7, 2, 2])));
        assert!(e.contains("1 bytes are left"), "{e}");
    }

    /// A registry stand-in answering `GET /subjects/{s}/versions/1` from `schemas` (subject -> (text,
    /// references)); counts the requests.
    fn subjects_server(
        schemas: HashMap<String, (String, Value)>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let subject = path
                    .strip_prefix("/subjects/")
                    .and_then(|p| p.strip_suffix("/versions/1"))
                    .unwrap_or("");
                let body = match schemas.get(subject) {
                    Some((text, refs)) => json!({"subject": subject, "version": 1, "id": 1, "schema": text, "references": refs}).to_string(),
                    None => json!({"error_code": 40401, "message": "Subject not found"}).to_string(),
                };
                let status = if schemas.contains_key(subject) {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, asked)
    }

    #[test]
    fn a_diamond_of_references_is_fetched_once_per_subject_version() {
        // Levels 0..8, two subjects each; every subject of a level references both of the next level's.
        let levels = 8;
        let mut schemas = HashMap::new();
        for l in 0..levels {
            for side in ["a", "b"] {
                let refs: Vec<Value> = if l + 1 < levels {
                    ["a", "b"]
                        .iter()
                        .map(|n| json!({"name": format!("l{}{n}", l + 1), "subject": format!("l{}{n}", l + 1), "version": 1}))
                        .collect()
                } else {
                    Vec::new()
                };
                schemas.insert(
                    format!("l{l}{side}"),
                    (format!("text of l{l}{side}"), Value::Array(refs)),
                );
            }
        }
        let (url, asked) = subjects_server(schemas);
        let client = RegistryClient::new(&url, std::time::Duration::from_secs(5)).unwrap();
        let top = json!([{"name": "l0a", "subject": "l0a", "version": 1}, {"name": "l0b", "subject": "l0b", "version": 1}]);
        let out = fetch_references(&client, &top).expect("fetched");
        assert_eq!(out.len(), 2 * levels, "{out:?}");
        assert_eq!(
            asked.load(std::sync::atomic::Ordering::SeqCst),
            2 * levels,
            "one GET per subject version"
        );
        // Dependencies first: the last level before the first.
        let at = |n: &str| out.iter().position(|(name, _)| name == n).unwrap();
        assert!(at(&format!("l{}a", levels - 1)) < at("l0a"));
    }

    #[test]
    fn two_reference_names_for_one_schema_are_both_kept() {
        // Protobuf imports resolve by name: a.proto and b/a.proto naming the same subject version both count.
        let mut schemas = HashMap::new();
        schemas.insert(
            "common".to_string(),
            ("syntax = \"proto3\";".to_string(), json!([])),
        );
        let (url, _) = subjects_server(schemas);
        let client = RegistryClient::new(&url, std::time::Duration::from_secs(5)).unwrap();
        let refs = json!([
            {"name": "a.proto", "subject": "common", "version": 1},
            {"name": "b/a.proto", "subject": "common", "version": 1},
        ]);
        let out = fetch_references(&client, &refs).expect("fetched");
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.proto", "b/a.proto"]);
    }
}
