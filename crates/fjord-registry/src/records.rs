//! The records of the `_schemas` topic, in Confluent's format, so that a topic written by Confluent's registry
//! loads here and ours loads there.
//!
//! Keys are JSON objects whose bytes must be exactly what Confluent writes (its Jackson property order), since
//! compaction and tombstones match keys byte for byte: `{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}`.
//! Values are read leniently (unknown fields ignored: newer Confluent versions add `metadata`, `ruleSet`, ...).

use serde::{Deserialize, Serialize};

/// A key of `_schemas`. Field order is the serialized order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype")]
pub enum Key {
    #[serde(rename = "SCHEMA")]
    Schema {
        subject: String,
        version: i32,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "CONFIG")]
    Config {
        subject: Option<String>,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "MODE")]
    Mode {
        subject: Option<String>,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "DELETE_SUBJECT")]
    DeleteSubject {
        subject: String,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "CLEAR_SUBJECT")]
    ClearSubject {
        subject: String,
        #[serde(default)]
        magic: i32,
    },
    /// A context other than the default one exists (Confluent writes it before the first schema of the
    /// context; `DELETE /contexts/{ctx}` tombstones it).
    #[serde(rename = "CONTEXT")]
    Context {
        #[serde(default)]
        tenant: Option<String>,
        context: String,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "NOOP")]
    Noop {
        #[serde(default)]
        magic: i32,
    },
}

impl Key {
    pub fn schema(subject: &str, version: i32) -> Key {
        Key::Schema {
            subject: subject.to_string(),
            version,
            magic: 1,
        }
    }
    pub fn config(subject: Option<&str>) -> Key {
        Key::Config {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }
    pub fn mode(subject: Option<&str>) -> Key {
        Key::Mode {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }
    pub fn context(context: &str) -> Key {
        Key::Context {
            tenant: Some(DEFAULT_TENANT.to_string()),
            context: context.to_string(),
            magic: 0,
        }
    }
    pub fn delete_subject(subject: &str) -> Key {
        Key::DeleteSubject {
            subject: subject.to_string(),
            magic: 0,
        }
    }
}

/// The tenant Confluent writes in CONTEXT records of a registry without multi-tenancy.
pub const DEFAULT_TENANT: &str = "default";

/// The value of a CONTEXT key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextValue {
    #[serde(default)]
    pub tenant: Option<String>,
    pub context: String,
}

/// A reference from one schema to a version of another subject, under the name the referring schema uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// The value of a SCHEMA key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    /// Absent for AVRO, as Confluent writes it.
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    /// Confluent's data contract metadata (`{"properties":...,"tags":...,"sensitive":...}`): kept and
    /// answered as it is, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Confluent's data contract rules (`{"domainRules":[...],"migrationRules":[...]}`): kept and answered,
    /// never run.
    #[serde(rename = "ruleSet", default, skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<serde_json::Value>,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    #[serde(rename = "compatibilityLevel", default)]
    pub compatibility_level: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    pub subject: String,
    pub version: i32,
}

/// A decoded record: the key and, unless it is a tombstone, its value.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Schema(String, i32, Option<SchemaValue>),
    Config(Option<String>, Option<ConfigValue>),
    Mode(Option<String>, Option<ModeValue>),
    DeleteSubject(String, Option<DeleteSubjectValue>),
    ClearSubject(String),
    /// A context (`.ctx`) created (true) or deleted (false, a tombstone).
    Context(String, bool),
    Noop,
}

impl Record {
    /// Decodes a record of `_schemas`; `Err` names what was wrong (the reader logs it and skips the record).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Record, String> {
        let key: Key = serde_json::from_slice(key).map_err(|e| format!("bad key: {e}"))?;
        fn val<T: serde::de::DeserializeOwned>(v: Option<&[u8]>) -> Result<Option<T>, String> {
            v.map(|v| serde_json::from_slice(v).map_err(|e| format!("bad value: {e}")))
                .transpose()
        }
        Ok(match key {
            Key::Schema {
                subject, version, ..
            } => Record::Schema(subject, version, val(value)?),
            Key::Config { subject, .. } => Record::Config(subject, val(value)?),
            Key::Mode { subject, .. } => Record::Mode(subject, val(value)?),
            Key::DeleteSubject { subject, .. } => Record::DeleteSubject(subject, val(value)?),
            Key::ClearSubject { subject, .. } => Record::ClearSubject(subject),
            Key::Context { context, .. } => Record::Context(context, value.is_some()),
            Key::Noop { .. } => Record::Noop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_serialize_in_confluents_property_order() {
        assert_eq!(
            serde_json::to_string(&Key::schema("s", 3)).unwrap(),
            r#"{"keytype":"SCHEMA","subject":"s","version":3,"magic":1}"#
        );
        assert_eq!(
            serde_json::to_string(&Key::config(None)).unwrap(),
            r#"{"keytype":"CONFIG","subject":null,"magic":0}"#
        );
        assert_eq!(
            serde_json::to_string(&Key::mode(Some("m"))).unwrap(),
            r#"{"keytype":"MODE","subject":"m","magic":0}"#
        );
        assert_eq!(
            serde_json::to_string(&Key::context(".team")).unwrap(),
            r#"{"keytype":"CONTEXT","tenant":"default","context":".team","magic":0}"#
        );
        assert_eq!(
            Record::decode(
                br#"{"keytype":"CONTEXT","tenant":"default","context":".team","magic":0}"#,
                Some(br#"{"tenant":"default","context":".team"}"#)
            )
            .unwrap(),
            Record::Context(".team".into(), true)
        );
        assert_eq!(
            serde_json::to_string(&Key::delete_subject("d")).unwrap(),
            r#"{"keytype":"DELETE_SUBJECT","subject":"d","magic":0}"#
        );
    }

    #[test]
    fn avro_schema_value_omits_schema_type_and_empty_references() {
        let v = SchemaValue {
            subject: "s".into(),
            version: 1,
            id: 7,
            schema_type: None,
            references: vec![],
            metadata: None,
            rule_set: None,
            schema: "\"string\"".into(),
            deleted: false,
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"subject":"s","version":1,"id":7,"schema":"\"string\"","deleted":false}"#
        );
    }

    #[test]
    fn data_contract_fields_are_written_where_confluent_writes_them() {
        let v = SchemaValue {
            subject: "s".into(),
            version: 1,
            id: 7,
            schema_type: None,
            references: vec![],
            metadata: Some(serde_json::json!({"properties": {"owner": "a"}})),
            rule_set: Some(serde_json::json!({"domainRules": []})),
            schema: "\"string\"".into(),
            deleted: false,
        };
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            text,
            r#"{"subject":"s","version":1,"id":7,"metadata":{"properties":{"owner":"a"}},"ruleSet":{"domainRules":[]},"schema":"\"string\"","deleted":false}"#
        );
        assert_eq!(serde_json::from_str::<SchemaValue>(&text).unwrap(), v);
    }

    #[test]
    fn decodes_records_written_by_confluent_with_fields_we_do_not_know() {
        let key = br#"{"magic":1,"version":2,"subject":"orders-value","keytype":"SCHEMA"}"#;
        let value = br#"{"subject":"orders-value","version":2,"id":5,"md5":"x","metadata":null,"schema":"\"int\"","deleted":true}"#;
        match Record::decode(key, Some(value)).unwrap() {
            Record::Schema(s, 2, Some(v)) => {
                assert_eq!(s, "orders-value");
                assert_eq!(v.id, 5);
                assert!(v.deleted);
                assert_eq!(v.schema_type, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            Record::decode(br#"{"keytype":"NOOP","magic":0}"#, None).unwrap(),
            Record::Noop
        );
        assert!(Record::decode(b"not json", None).is_err());
        assert!(Record::decode(br#"{"keytype":"SCHEMA","subject":"s"}"#, None).is_err());
    }
}
