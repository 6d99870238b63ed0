//! Connect's converters between a record's bytes and Connect data: `StringConverter`, `ByteArrayConverter`
//! and `JsonConverter` (with `schemas.enable`, Connect's `{"schema": ..., "payload": ...}` envelope), and
//! Confluent's schema-registry `AvroConverter`, `JsonSchemaConverter` and `ProtobufConverter`
//! ([`crate::registry_converter`]).

use std::sync::Arc;

use crate::config::ConfigMap;
use crate::error::{Error, Result};
use crate::registry_converter::{
    Format, RegistryConverter, AVRO_CONVERTER, JSON_SCHEMA_CONVERTER, PROTOBUF_CONVERTER,
};
use crate::transforms::SchemaAndValue;

/// A value in Connect's data model, as far as this phase needs it: the file connectors produce and consume
/// strings; JSON data without a schema is kept as JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Null,
    String(String),
    Bytes(Vec<u8>),
    /// A schemaless JSON value (or a JSON value whose schema is not a primitive string).
    Json(serde_json::Value),
}

impl Data {
    /// The text FileStreamSink writes for a value: a string as it is, anything else in its JSON form.
    pub fn to_line(&self) -> String {
        match self {
            Data::Null => "null".into(),
            Data::String(s) => s.clone(),
            Data::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Data::Json(serde_json::Value::String(s)) => s.clone(),
            Data::Json(v) => v.to_string(),
        }
    }
}

pub const STRING_CONVERTER: &str = "org.apache.kafka.connect.storage.StringConverter";
pub const BYTE_ARRAY_CONVERTER: &str = "org.apache.kafka.connect.converters.ByteArrayConverter";
pub const JSON_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";

/// A converter, configured.
#[derive(Debug, Clone, PartialEq)]
pub enum Converter {
    String,
    ByteArray,
    Json {
        schemas_enable: bool,
    },
    /// `AvroConverter`, `JsonSchemaConverter`, `ProtobufConverter`: the registry's wire format, schemas registered
    /// and looked up in the registry.
    Registry(Arc<RegistryConverter>),
}

impl Default for Converter {
    /// Connect's default `key.converter`/`value.converter`: JsonConverter, schemas enabled.
    fn default() -> Self {
        Converter::Json {
            schemas_enable: true,
        }
    }
}

impl Converter {
    /// The converter `props[prefix]` names (with `prefix.schemas.enable`), or None when `prefix` is not set.
    /// An unknown class or a bad `schemas.enable` is an error naming the property.
    pub fn from_config(props: &ConfigMap, prefix: &str) -> Result<Option<Converter>> {
        let Some(class) = props.get(prefix) else {
            return Ok(None);
        };
        Converter::build(class.trim(), props, prefix)
            .map(Some)
            .map_err(|why| Error::BadRequest(format!("{prefix}: {why}")))
    }

    /// The converter `class` configured by the `prefix.*` settings of `props` (`prefix.schemas.enable`, a
    /// registry converter's `prefix.schema.registry.url`, ...); an error names the setting.
    pub fn build(
        class: &str,
        props: &ConfigMap,
        prefix: &str,
    ) -> std::result::Result<Converter, String> {
        if let Some(format) = Format::of_class(class.rsplit('.').next().unwrap_or(class)) {
            return RegistryConverter::from_config(format, props, prefix)
                .map(|r| Converter::Registry(Arc::new(r)));
        }
        Converter::parse(
            class,
            props
                .get(&format!("{prefix}.schemas.enable"))
                .map(String::as_str),
        )
    }

    /// The converter class `class` (full name or simple name) with `schemas.enable` = `schemas_enable`.
    pub fn parse(
        class: &str,
        schemas_enable: Option<&str>,
    ) -> std::result::Result<Converter, String> {
        let simple = class.rsplit('.').next().unwrap_or(class);
        match simple {
            "StringConverter" => Ok(Converter::String),
            "ByteArrayConverter" => Ok(Converter::ByteArray),
            "JsonConverter" => {
                let schemas_enable = match schemas_enable.map(|s| s.trim().to_ascii_lowercase()) {
                    None => true,
                    Some(s) if s == "true" => true,
                    Some(s) if s == "false" => false,
                    Some(s) => {
                        return Err(format!(
                            "schemas.enable={s}: expected true or false"
                        ))
                    }
                };
                Ok(Converter::Json { schemas_enable })
            }
            _ => Err(format!(
                "unknown converter class {class}; the built-in ones are {STRING_CONVERTER}, {BYTE_ARRAY_CONVERTER}, {JSON_CONVERTER}, {AVRO_CONVERTER}, {JSON_SCHEMA_CONVERTER} and {PROTOBUF_CONVERTER} (sinks)"
            )),
        }
    }

    /// Fetches what the registry converter needs to decode `bytes` (no-op for the others). Err: the registry
    /// cannot be asked, a task failure that says what to do.
    pub async fn prepare_decode(&self, bytes: Option<&[u8]>) -> std::result::Result<(), String> {
        match self {
            Converter::Registry(r) => r.prepare_decode(bytes).await,
            _ => Ok(()),
        }
    }

    /// Registers what the registry converter needs to encode `data` for `topic` (no-op for the others). Err:
    /// the registry cannot be asked or refuses the schema, a task failure that says what to do.
    pub async fn prepare_encode(
        &self,
        topic: &str,
        data: &SchemaAndValue,
    ) -> std::result::Result<(), String> {
        match self {
            Converter::Registry(r) => r.prepare_encode(topic, data).await,
            _ => Ok(()),
        }
    }

    /// Connect data to the bytes of a record (None: a null key or value, a tombstone).
    pub fn from_connect(&self, data: &Data) -> std::result::Result<Option<Vec<u8>>, String> {
        match (self, data) {
            (_, Data::Null) => Ok(None),
            (Converter::Registry(_), _) => Err(
                "a registry converter writes Connect data with its schema (SchemaAndValue::encode)".into(),
            ),
            (Converter::String, d) => Ok(Some(d.to_line().into_bytes())),
            (Converter::ByteArray, Data::Bytes(b)) => Ok(Some(b.clone())),
            // Connect's ByteArrayConverter refuses strings; a file line's bytes are the obvious meaning.
            (Converter::ByteArray, Data::String(s)) => Ok(Some(s.as_bytes().to_vec())),
            (Converter::ByteArray, Data::Json(_)) => Err(
                "ByteArrayConverter can only convert bytes; use JsonConverter or StringConverter for structured values".into(),
            ),
            (Converter::Json { schemas_enable }, d) => {
                let (schema, payload) = match d {
                    Data::String(s) => (
                        serde_json::json!({"type": "string", "optional": false}),
                        serde_json::Value::String(s.clone()),
                    ),
                    Data::Bytes(b) => (
                        serde_json::json!({"type": "bytes", "optional": false}),
                        serde_json::Value::String(base64_encode(b)),
                    ),
                    Data::Json(v) => (serde_json::Value::Null, v.clone()),
                    Data::Null => unreachable!("handled above"),
                };
                // Connect's field order: the schema first, then the payload.
                let text = if *schemas_enable {
                    format!("{{\"schema\":{schema},\"payload\":{payload}}}")
                } else {
                    payload.to_string()
                };
                Ok(Some(text.into_bytes()))
            }
        }
    }

    /// The bytes of a record (None: null) to Connect data. Bytes that do not fit the converter are an error
    /// that says what to change.
    pub fn to_connect(&self, bytes: Option<&[u8]>) -> std::result::Result<Data, String> {
        let Some(bytes) = bytes else {
            return Ok(Data::Null);
        };
        match self {
            Converter::Registry(r) => r.decode(Some(bytes)).map(|sv| sv.to_data()),
            Converter::String => Ok(Data::String(String::from_utf8_lossy(bytes).into_owned())),
            Converter::ByteArray => Ok(Data::Bytes(bytes.to_vec())),
            Converter::Json { schemas_enable } => {
                let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
                    format!("JsonConverter: the record is not JSON ({e}); use StringConverter or ByteArrayConverter for text or binary data")
                })?;
                if !schemas_enable {
                    return Ok(Data::Json(v));
                }
                let envelope = v.as_object().filter(|o| {
                    o.len() == 2 && o.contains_key("schema") && o.contains_key("payload")
                });
                let Some(envelope) = envelope else {
                    return Err("JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration.".into());
                };
                let payload = envelope["payload"].clone();
                let ty = envelope["schema"].get("type").and_then(|t| t.as_str());
                Ok(match (ty, payload) {
                    (_, serde_json::Value::Null) => Data::Null,
                    (Some("string"), serde_json::Value::String(s)) => Data::String(s),
                    (_, p) => Data::Json(p),
                })
            }
        }
    }
}

/// Padding optional on decode (as Jackson, which Connect's JsonConverter uses, accepts it); anything else strict:
/// a lone sixth of a byte or stray trailing bits is not base64.
const LENIENT: base64::engine::GeneralPurposeConfig = base64::engine::GeneralPurposeConfig::new()
    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
const STANDARD: base64::engine::GeneralPurpose =
    base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE: base64::engine::GeneralPurpose =
    base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Base64 to bytes (standard or URL-safe alphabet, padding optional, whitespace ignored); None when it is not
/// base64.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .ok()
}

/// Standard base64 with padding, as Connect's JsonConverter writes `bytes` payloads.
pub fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_converter_writes_connects_envelope_only_with_schemas_enabled() {
        let line = Data::String("a \"b\"".into());
        let with = Converter::Json {
            schemas_enable: true,
        }
        .from_connect(&line)
        .unwrap()
        .unwrap();
        assert!(with.starts_with(b"{\"schema\":"), "the schema comes first");
        let v: serde_json::Value = serde_json::from_slice(&with).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema": {"type": "string", "optional": false}, "payload": "a \"b\""})
        );
        let without = Converter::Json {
            schemas_enable: false,
        }
        .from_connect(&line)
        .unwrap()
        .unwrap();
        assert_eq!(without, b"\"a \\\"b\\\"\"");
        // Round trips.
        for c in [
            Converter::Json {
                schemas_enable: true,
            },
            Converter::Json {
                schemas_enable: false,
            },
            Converter::String,
        ] {
            let b = c.from_connect(&line).unwrap();
            assert_eq!(
                c.to_connect(b.as_deref()).unwrap().to_line(),
                "a \"b\"",
                "{c:?}"
            );
        }
        assert_eq!(Converter::String.from_connect(&Data::Null).unwrap(), None);
    }

    #[test]
    fn json_converter_with_schemas_refuses_plain_json_and_says_what_to_do() {
        let c = Converter::Json {
            schemas_enable: true,
        };
        let e = c.to_connect(Some(b"{\"a\":1}")).unwrap_err();
        assert!(e.contains("schemas.enable=false"), "{e}");
        let e = c.to_connect(Some(b"not json")).unwrap_err();
        assert!(e.contains("StringConverter"), "{e}");
        let d = Converter::Json {
            schemas_enable: false,
        }
        .to_connect(Some(b"{\"a\":1}"))
        .unwrap();
        assert_eq!(d.to_line(), "{\"a\":1}");
    }

    #[test]
    fn converter_classes_by_full_or_simple_name() {
        let mut p = ConfigMap::new();
        p.insert("value.converter".into(), JSON_CONVERTER.into());
        p.insert("value.converter.schemas.enable".into(), "false".into());
        p.insert("key.converter".into(), "StringConverter".into());
        assert_eq!(
            Converter::from_config(&p, "value.converter").unwrap(),
            Some(Converter::Json {
                schemas_enable: false
            })
        );
        assert_eq!(
            Converter::from_config(&p, "key.converter").unwrap(),
            Some(Converter::String)
        );
        assert_eq!(
            Converter::from_config(&p, "header.converter").unwrap(),
            None
        );
        p.insert(
            "key.converter".into(),
            "io.confluent.connect.protobuf.ProtobufConverter".into(),
        );
        // A registry converter like the others: it needs the registry's URL.
        let e = Converter::from_config(&p, "key.converter").unwrap_err();
        assert!(
            e.to_string().contains("key.converter.schema.registry.url"),
            "{e}"
        );
        p.insert("key.converter".into(), "com.example.XmlConverter".into());
        let e = Converter::from_config(&p, "key.converter").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("key.converter: unknown converter class"),
            "{e}"
        );
    }

    #[test]
    fn base64_matches_rfc4648_and_refuses_what_is_not_base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        for (text, bytes) in [
            ("Zm9vYmFy", &b"foobar"[..]),
            ("Zg==", b"f"),
            ("Zg", b"f"),
            ("Zm 9v\n", b"foo"),
            ("-_8=", &[0xfb, 0xff][..]),
            ("+/8=", &[0xfb, 0xff][..]),
        ] {
            assert_eq!(base64_decode(text).as_deref(), Some(bytes), "{text}");
        }
        // A lone character (6 bits), stray trailing bits, characters outside both alphabets: not base64 (the
        // old decoder gave b"" or dropped the bits, so a corrupt value became wrong data).
        for bad in ["Z", "Zh==", "Zm9v!", "Zm=9"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }
}
