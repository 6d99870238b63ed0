//! Rows to and from record bytes: JSON and DELIMITED values, KAFKA, JSON and NONE keys, and through the schema
//! registry AVRO, PROTOBUF and JSON_SR values and keys (Confluent's wire format: magic byte 0, the schema id, the
//! body; for PROTOBUF the body starts with the message-index array naming the message of the schema, `[0]`, the
//! first message, written as the single byte 0).

use std::sync::Arc;

use apache_avro::types::Value as Avro;
use serde_json::{json, Value as J};

use crate::avro;
use crate::catalog::{Format, SourceDef};
use crate::error::{Result, SqlError};
use crate::plan::PSEUDO;
use crate::protobuf;
use crate::registry::{self, Registered};
use crate::types::{SqlType, Value};

/// Refuses registry formats without a registry.
pub fn check_supported(def: &SourceDef) -> Result<()> {
    for (what, f) in [("value", def.value_format), ("key", def.key_format)] {
        if f.uses_registry() {
            registry::required(&format!("{}_FORMAT='{}'", what.to_uppercase(), f.name()))
                .map_err(SqlError::semantic)?;
        }
    }
    Ok(())
}

/// The subject of a topic's value or key schema (Confluent's TopicNameStrategy).
pub fn subject(topic: &str, key: bool) -> String {
    format!("{topic}-{}", if key { "key" } else { "value" })
}

/// A datum in Confluent's wire format, with its writer schema from the registry (its shape checked when it was
/// compiled; the read bounded by `fjord_registry::wire`, and a body cut short or too long is an error).
fn read_avro(bytes: &[u8]) -> Result<Avro, String> {
    let (id, body) = registry::split_wire(bytes)?;
    let schema = registry::required("AVRO")?.by_id(id)?;
    match &*schema {
        Registered::Avro(d) => d.read(body),
        other => Err(format!(
            "the record's schema {id} is {}, not AVRO",
            other.type_name()
        )),
    }
}

/// A Protobuf record in Confluent's wire format as the message its index array names, with the schema its id
/// names (compiled once per id), the index of the schema's fields, and the most values it may become
/// ([`fjord_registry::wire::protobuf_value_budget`]). The budget is charged while the message is mapped to a
/// row, after it is decoded: decoding allocates in proportion to the body's bytes, the mapping (unset fields
/// read as defaults, a STRUCT type wider than the message) is what can expand.
type ProtoRecord = (prost_reflect::DynamicMessage, Arc<protobuf::Index>, usize);

fn read_protobuf(bytes: &[u8]) -> Result<ProtoRecord, String> {
    let (id, body) = registry::split_wire(bytes)?;
    let schema = registry::required("PROTOBUF")?.by_id(id)?;
    match &*schema {
        Registered::Protobuf(p) => Ok((
            fjord_registry::wire::read_protobuf(p, body)
                .map_err(|e| format!("schema id {id}: {e}"))?,
            p.index().clone(),
            fjord_registry::wire::protobuf_value_budget(body.len()),
        )),
        other => Err(format!(
            "the record's schema {id} is {}, not PROTOBUF",
            other.type_name()
        )),
    }
}

/// Err when a record of `def` names a schema the registry cannot be asked about right now (unreachable, timed
/// out, a 5xx). Such a record is not unreadable and must not be skipped: the caller stops (and, after a
/// restart, reads it again from the committed offsets) or waits. Everything else, a bad header or an unknown
/// id included, is `decode`'s to report.
pub fn registry_reachable(
    def: &SourceDef,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<(), String> {
    // JSON_SR bodies are read without their schema; AVRO and PROTOBUF need the registry to decode.
    for (format, bytes) in [(def.key_format, key), (def.value_format, value)] {
        if !matches!(format, Format::Avro | Format::Protobuf) {
            continue;
        }
        let (Some(bytes), Some(reg)) = (bytes, registry::global()) else {
            continue;
        };
        if let Ok((id, _)) = registry::split_wire(bytes) {
            reg.reachable_for(id)?;
        }
    }
    Ok(())
}

/// A JSON_SR body (Confluent's JSONSchemaSerializer) as JSON.
fn read_json_sr(bytes: &[u8]) -> Result<J, String> {
    let (_, body) = registry::split_wire(bytes)?;
    serde_json::from_slice(body).map_err(|e| format!("the JSON_SR body is not JSON: {e}"))
}

/// One record as a row: ROWTIME, ROWPARTITION, ROWOFFSET, then the columns in order. `Ok(None)`: a tombstone (a
/// stream skips it). ROWTIME is the TIMESTAMP column's value when the source names one.
pub fn decode(
    def: &SourceDef,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    meta: (i64, i32, i64),
) -> Result<Option<Vec<Value>>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let mut row = Vec::with_capacity(PSEUDO.len() + def.columns.len());
    row.push(Value::Bigint(meta.0));
    row.push(Value::Int(meta.1));
    row.push(Value::Bigint(meta.2));
    let json = match def.value_format {
        Format::Json => Some(
            serde_json::from_slice::<serde_json::Value>(value)
                .map_err(|e| format!("the value is not JSON: {e}"))?,
        ),
        Format::JsonSr => Some(read_json_sr(value)?),
        _ => None,
    };
    let avro_value = match def.value_format {
        Format::Avro => Some(read_avro(value)?),
        _ => None,
    };
    let mut proto_value = match def.value_format {
        Format::Protobuf => Some(read_protobuf(value)?),
        _ => None,
    };
    let text = match def.value_format {
        Format::Delimited => Some(
            std::str::from_utf8(value).map_err(|_| "the value is not UTF-8 text".to_string())?,
        ),
        _ => None,
    };
    let mut fields = text.map(|t| t.split(','));
    let value_cols = def.value_columns().count();
    let mut keys = key_values(def, key)?.into_iter();
    for c in &def.columns {
        let v =
            if c.key {
                keys.next().unwrap_or(Value::Null)
            } else if let Some(j) = &json {
                match j {
                    serde_json::Value::Object(o) => match crate::types::lookup_ci(o, &c.name) {
                        Some(x) => Value::from_json(x, &c.ty)
                            .map_err(|e| format!("column {}: {e}", c.name))?,
                        None => Value::Null,
                    },
                    // A lone value column may be written unwrapped (ksqlDB's WRAP_SINGLE_VALUE=false).
                    other if value_cols == 1 => Value::from_json(other, &c.ty)
                        .map_err(|e| format!("column {}: {e}", c.name))?,
                    other => return Err(format!("the value is not a JSON object: {other}")),
                }
            } else if let Some(a) = &avro_value {
                match a {
                    Avro::Record(rec) => match avro::field(rec, &c.name) {
                        Some(x) => avro::to_value(x, &c.ty)
                            .map_err(|e| format!("column {}: {e}", c.name))?,
                        None => Value::Null,
                    },
                    // A value schema that is not a record is the lone value column.
                    other if value_cols == 1 => avro::to_value(other, &c.ty)
                        .map_err(|e| format!("column {}: {e}", c.name))?,
                    _ => return Err("the Avro value is not a record".to_string()),
                }
            } else if let Some((msg, index, left)) = proto_value.as_mut() {
                protobuf::column(msg, index, &c.name, &c.ty, left)
                    .map_err(|e| format!("column {}: {e}", c.name))?
            } else if let Some(f) = fields.as_mut() {
                match f.next() {
                    Some(s) => {
                        Value::from_text(s, &c.ty).map_err(|e| format!("column {}: {e}", c.name))?
                    }
                    // Missing trailing fields are NULL: records written before ALTER ... ADD COLUMN lack them.
                    None => Value::Null,
                }
            } else {
                return Err(format!(
                    "value format {} is not supported yet",
                    def.value_format.name()
                ));
            };
        row.push(v);
    }
    if let Some(mut f) = fields {
        if f.next().is_some() {
            return Err(format!(
                "the value has more fields than the {value_cols} value columns"
            ));
        }
    }
    if let Some(ts_col) = &def.timestamp {
        if let Some(i) = def.columns.iter().position(|c| c.name == *ts_col) {
            if let Some(ms) = row[PSEUDO.len() + i].as_i64() {
                row[0] = Value::Bigint(ms);
            }
        }
    }
    Ok(Some(row))
}

/// The key columns' values, in column order, from a record's key: several key columns are the fields of one key
/// record, read once (ksqlDB wraps them); one is unwrapped.
fn key_values(def: &SourceDef, key: Option<&[u8]>) -> Result<Vec<Value>, String> {
    let key_cols: Vec<(&str, &SqlType)> = def
        .key_columns()
        .map(|c| (c.name.as_str(), &c.ty))
        .collect();
    match key_cols.as_slice() {
        [] => Ok(Vec::new()),
        [(_, ty)] => Ok(vec![decode_key(def.key_format, key, ty)?]),
        _ => decode_keys(def.key_format, key, &key_cols),
    }
}

/// A table's deleted row (a tombstone: a key without a value): the pseudo-columns, the key columns decoded, the
/// value columns null.
pub fn decode_tombstone(
    def: &SourceDef,
    key: Option<&[u8]>,
    meta: (i64, i32, i64),
) -> Result<Vec<Value>, String> {
    let mut row = vec![
        Value::Bigint(meta.0),
        Value::Int(meta.1),
        Value::Bigint(meta.2),
    ];
    let mut keys = key_values(def, key)?.into_iter();
    for c in &def.columns {
        row.push(if c.key {
            keys.next().unwrap_or(Value::Null)
        } else {
            Value::Null
        });
    }
    Ok(row)
}

/// Splits a windowed table's record key (Kafka Streams' windowed serdes, as the aggregation writes it: time
/// windows `key ‖ start:i64be`, sessions `key ‖ end:i64be ‖ start:i64be`) into the key and the window's start
/// and end.
pub fn split_windowed_key<'k>(
    key: &'k [u8],
    window: &crate::parser::WindowSpec,
) -> Result<(&'k [u8], i64, i64), String> {
    use crate::parser::WindowSpec;
    let be = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
    let short = || {
        format!(
            "the windowed key has {} bytes, too few for its window",
            key.len()
        )
    };
    match window {
        WindowSpec::Session { .. } => {
            let at = key.len().checked_sub(16).ok_or_else(short)?;
            Ok((&key[..at], be(&key[at + 8..]), be(&key[at..at + 8])))
        }
        WindowSpec::Tumbling { size, .. } | WindowSpec::Hopping { size, .. } => {
            let at = key.len().checked_sub(8).ok_or_else(short)?;
            let start = be(&key[at..]);
            Ok((&key[..at], start, start.saturating_add(*size as i64)))
        }
    }
}

fn decode_key(format: Format, key: Option<&[u8]>, ty: &SqlType) -> Result<Value, String> {
    let Some(k) = key else {
        return Ok(Value::Null);
    };
    match format {
        Format::Json => {
            let j: serde_json::Value =
                serde_json::from_slice(k).map_err(|e| format!("the key is not JSON: {e}"))?;
            Value::from_json(&j, ty)
        }
        Format::None => Ok(Value::Null),
        Format::JsonSr => {
            let j = read_json_sr(k).map_err(|e| format!("the key: {e}"))?;
            match &j {
                J::Object(o)
                    if o.len() == 1 && !matches!(ty, SqlType::Struct(_) | SqlType::Map(..)) =>
                {
                    Value::from_json(o.values().next().unwrap_or(&J::Null), ty)
                }
                _ => Value::from_json(&j, ty),
            }
        }
        Format::Protobuf => {
            let (msg, index, mut left) = read_protobuf(k).map_err(|e| format!("the key: {e}"))?;
            protobuf::key_value(&msg, &index, ty, &mut left).map_err(|e| format!("the key: {e}"))
        }
        Format::Avro => match read_avro(k).map_err(|e| format!("the key: {e}"))? {
            // A key record of one field is that field (ksqlDB's wrapped single key).
            Avro::Record(f) if f.len() == 1 && !matches!(ty, SqlType::Struct(_)) => {
                avro::to_value(&f[0].1, ty)
            }
            other => avro::to_value(&other, ty),
        },
        _ => {
            // KAFKA: strings as UTF-8; INT and BIGINT as Kafka's big-endian serializers write them.
            match (ty, k.len()) {
                (SqlType::Int, 4) => Ok(Value::Int(i32::from_be_bytes([k[0], k[1], k[2], k[3]]))),
                (SqlType::Bigint, 8) => Ok(Value::Bigint(i64::from_be_bytes(
                    k.try_into().map_err(|_| "bad key")?,
                ))),
                (SqlType::Double, 8) => Ok(Value::Double(f64::from_be_bytes(
                    k.try_into().map_err(|_| "bad key")?,
                ))),
                _ => {
                    let s = std::str::from_utf8(k)
                        .map_err(|_| "the key is not UTF-8 text".to_string())?;
                    Value::from_text(s, ty)
                }
            }
        }
    }
}

/// The values of several key columns (`cols`: name and type, in the source's order) from one key: a JSON or
/// JSON_SR object, an Avro record or a Protobuf message with a field per column (looked up by name, case aside;
/// one missing is NULL), or DELIMITED fields in column order. No key: every column NULL.
fn decode_keys(
    format: Format,
    key: Option<&[u8]>,
    cols: &[(&str, &SqlType)],
) -> Result<Vec<Value>, String> {
    let Some(k) = key else {
        return Ok(vec![Value::Null; cols.len()]);
    };
    let named = |n: &str, r: Result<Value, String>| r.map_err(|e| format!("key column {n}: {e}"));
    match format {
        Format::Json | Format::JsonSr => {
            let j = if format == Format::Json {
                serde_json::from_slice(k).map_err(|e| format!("the key is not JSON: {e}"))?
            } else {
                read_json_sr(k).map_err(|e| format!("the key: {e}"))?
            };
            let J::Object(o) = &j else {
                return Err(format!(
                    "the key is not a JSON object of the {} key columns: {j}",
                    cols.len()
                ));
            };
            cols.iter()
                .map(|(n, t)| {
                    named(
                        n,
                        crate::types::lookup_ci(o, n)
                            .map_or(Ok(Value::Null), |x| Value::from_json(x, t)),
                    )
                })
                .collect()
        }
        Format::Avro => match read_avro(k).map_err(|e| format!("the key: {e}"))? {
            Avro::Record(rec) => cols
                .iter()
                .map(|(n, t)| {
                    named(
                        n,
                        avro::field(&rec, n).map_or(Ok(Value::Null), |x| avro::to_value(x, t)),
                    )
                })
                .collect(),
            _ => Err(format!(
                "the Avro key is not a record of the {} key columns",
                cols.len()
            )),
        },
        Format::Protobuf => {
            let (msg, index, mut left) = read_protobuf(k).map_err(|e| format!("the key: {e}"))?;
            cols.iter()
                .map(|(n, t)| named(n, protobuf::column(&msg, &index, n, t, &mut left)))
                .collect()
        }
        Format::Delimited => {
            let text =
                std::str::from_utf8(k).map_err(|_| "the key is not UTF-8 text".to_string())?;
            let fields: Vec<&str> = text.split(',').collect();
            if fields.len() != cols.len() {
                return Err(format!(
                    "the key has {} fields, not the {} key columns",
                    fields.len(),
                    cols.len()
                ));
            }
            cols.iter()
                .zip(fields)
                .map(|((n, t), f)| named(n, Value::from_text(f, t)))
                .collect()
        }
        other => Err(format!(
            "KEY_FORMAT='{}' holds one key column, not {}",
            other.name(),
            cols.len()
        )),
    }
}

/// ksqlDB's refusal of several key columns in a format that holds one (KAFKA, NONE); `cols`: name and type.
pub fn check_key_columns(
    format: Format,
    cols: &[(&str, &SqlType)],
) -> std::result::Result<(), String> {
    if cols.len() <= 1 || !matches!(format, Format::Kafka | Format::None) {
        return Ok(());
    }
    let got = cols
        .iter()
        .map(|(n, t)| format!("`{n}` {t} KEY"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "Key format does not support schema.\nformat: {0}\nreason: The '{0}' format only supports a single field. Got: [{got}]\n(several key columns need KEY_FORMAT 'JSON', 'AVRO', 'PROTOBUF', 'JSON_SR' or 'DELIMITED')",
        format.name()
    ))
}

/// A JSON object of named values with its fields in the order given (serde_json's map would sort them, and the
/// bytes of a key pick its partition).
fn ordered_object(vals: &[(&str, Value)]) -> String {
    let fields: Vec<String> = vals
        .iter()
        .map(|(n, v)| format!("{}:{}", J::String((*n).to_string()), v.to_json()))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The key bytes for several key columns (name and value, in the sink's column order) in a format without a
/// registry: JSON `{"A":..,"B":..}`, DELIMITED `a,b` (`None`: no key, every column NULL).
pub fn encode_keys(format: Format, vals: &[(&str, Value)]) -> Result<Option<Vec<u8>>, String> {
    if vals.iter().all(|(_, v)| v.is_null()) {
        return Ok(None);
    }
    match format {
        Format::Json => Ok(Some(ordered_object(vals).into_bytes())),
        Format::Delimited => Ok(Some(
            vals.iter()
                .map(|(_, v)| v.to_text())
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
        )),
        other => Err(format!(
            "KEY_FORMAT='{}' holds one key column, not {}",
            other.name(),
            vals.len()
        )),
    }
}

/// The key bytes for a key value (`None`: no key).
pub fn encode_key(format: Format, v: &Value) -> Option<Vec<u8>> {
    if v.is_null() {
        return None;
    }
    match format {
        Format::Json => Some(v.to_json().to_string().into_bytes()),
        Format::None => None,
        _ => Some(match v {
            Value::Int(i) => i.to_be_bytes().to_vec(),
            Value::Bigint(i) => i.to_be_bytes().to_vec(),
            Value::Double(d) => d.to_be_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
            other => other.to_text().into_bytes(),
        }),
    }
}

/// The value bytes for named values.
pub fn encode_value(format: Format, cols: &[(&str, Value)]) -> Vec<u8> {
    match format {
        Format::Delimited => cols
            .iter()
            .map(|(_, v)| v.to_text())
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes(),
        _ => {
            let o: serde_json::Map<String, serde_json::Value> = cols
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_json()))
                .collect();
            serde_json::Value::Object(o).to_string().into_bytes()
        }
    }
}

/// The JSON Schema of one SQL type, nullable (as ksqlDB's JSON_SR serializer writes it).
fn json_schema_of(ty: &SqlType) -> J {
    let t = match ty {
        SqlType::Boolean => json!({"type": "boolean"}),
        SqlType::Int => json!({"type": "integer", "connect.type": "int32"}),
        SqlType::Bigint => json!({"type": "integer", "connect.type": "int64"}),
        SqlType::Timestamp | SqlType::Time | SqlType::Date => json!({"type": "integer"}),
        SqlType::Double | SqlType::Decimal(..) => json!({"type": "number"}),
        SqlType::String | SqlType::Bytes => json!({"type": "string"}),
        SqlType::Array(t) => json!({"type": "array", "items": json_schema_of(t)}),
        SqlType::Map(_, v) => json!({"type": "object", "additionalProperties": json_schema_of(v)}),
        SqlType::Struct(f) => json_object(f.iter().map(|(n, t)| (n.as_str(), t))),
    };
    json!({"oneOf": [{"type": "null"}, t]})
}

fn json_object<'a>(cols: impl Iterator<Item = (&'a str, &'a SqlType)>) -> J {
    let props: serde_json::Map<String, J> = cols
        .map(|(n, t)| (n.to_string(), json_schema_of(t)))
        .collect();
    json!({"type": "object", "properties": props})
}

/// The value columns of the schema registered for `topic`'s values (CREATE STREAM without columns): (name,
/// type) each, upper-cased as ksqlDB names them; `None` when the subject has no schema.
pub fn registry_columns(
    format: Format,
    topic: &str,
    key: bool,
) -> std::result::Result<Option<Vec<(String, SqlType)>>, String> {
    let what = format!(
        "{}_FORMAT='{}'",
        if key { "KEY" } else { "VALUE" },
        format.name()
    );
    let reg = registry::required(&what)?;
    let subject = subject(topic, key);
    let Some((id, schema)) = reg.latest(&subject)? else {
        return Ok(None);
    };
    let lone = if key { "ROWKEY" } else { "ROWVAL" };
    let cols = match (&*schema, format) {
        (Registered::Avro(d), Format::Avro) => avro::columns(d.schema(), d.names(), lone),
        // The schema's first message, as ksqlDB (and Confluent's tools, when no message is named) take it.
        (Registered::Protobuf(p), Format::Protobuf) => {
            p.first().and_then(|(m, _)| protobuf::columns(m))
        }
        (Registered::Json(j), Format::JsonSr) => match j.sql_type() {
            Ok(SqlType::Struct(f)) => Ok(f),
            Ok(other) => Ok(vec![(lone.to_string(), other)]),
            Err(e) => Err(e),
        },
        (s, f) => Err(format!(
            "the latest schema of {subject} (id {id}) is {}, not what {} reads",
            s.type_name(),
            f.name()
        )),
    }
    .map_err(|e| format!("the latest schema of {subject} (id {id}): {e}"))?;
    // A key schema that is a record of one field names the key column; one of several fields holds a key column
    // per field (ksqlDB's multi-column key).
    Ok(Some(cols))
}

/// How a sink's records are written: the registry schemas of its key and value (registered from its columns
/// for a query's output, the latest registered for INSERT INTO a source), or the plain formats.
pub struct SinkCodec {
    key_format: Format,
    value_format: Format,
    /// The schema of a registry format's key or value, with its id (for PROTOBUF, its first message is
    /// written).
    key: Option<(u32, Arc<Registered>)>,
    value: Option<(u32, Arc<Registered>)>,
}

impl SinkCodec {
    /// `latest`: write with the latest schema registered for the topic (INSERT INTO a stream a producer
    /// writes); otherwise (a query's output) register the schema of the sink's columns, as ksqlDB does. Blocks
    /// on the registry: call it from a query thread or `spawn_blocking`.
    pub fn new(def: &SourceDef, latest: bool) -> std::result::Result<SinkCodec, String> {
        let mut codec = SinkCodec {
            key_format: def.key_format,
            value_format: def.value_format,
            key: None,
            value: None,
        };
        for key in [false, true] {
            let format = if key {
                def.key_format
            } else {
                def.value_format
            };
            if !format.uses_registry() {
                continue;
            }
            let cols: Vec<(&str, &SqlType)> = def
                .columns
                .iter()
                .filter(|c| c.key == key)
                .map(|c| (c.name.as_str(), &c.ty))
                .collect();
            if key && cols.is_empty() {
                continue;
            }
            let reg = registry::required(&format!(
                "{}_FORMAT='{}'",
                if key { "KEY" } else { "VALUE" },
                format.name()
            ))?;
            let subject = subject(&def.topic, key);
            let found = if latest { reg.latest(&subject)? } else { None };
            let schema = match found {
                Some(s) => s,
                None => {
                    let (ty, text) = match (format, key) {
                        (Format::Avro, false) => {
                            ("AVRO", avro::value_schema(cols.into_iter()).to_string())
                        }
                        (Format::Avro, true) if cols.len() == 1 => {
                            ("AVRO", avro::key_schema(cols[0].1).to_string())
                        }
                        // Several key columns: a record `<SinkName>Key` with a field per column, as ksqlDB
                        // names a key record after its source.
                        (Format::Avro, true) => (
                            "AVRO",
                            avro::key_record_schema(&def.name, cols.into_iter()).to_string(),
                        ),
                        // ksqlDB's `message ConnectDefault1`; a key is a message of its one column.
                        (Format::Protobuf, _) => (
                            "PROTOBUF",
                            protobuf::schema_text(cols.into_iter()).map_err(|e| {
                                format!(
                                    "{}: its {} cannot be written as PROTOBUF: {e}",
                                    def.name,
                                    if key { "key" } else { "value" }
                                )
                            })?,
                        ),
                        (_, false) => ("JSON", json_object(cols.into_iter()).to_string()),
                        (_, true) if cols.len() == 1 => {
                            ("JSON", json_schema_of(cols[0].1).to_string())
                        }
                        (_, true) => ("JSON", json_object(cols.into_iter()).to_string()),
                    };
                    let id = reg.register(&subject, ty, &text).map_err(|e| {
                        format!(
                            "cannot register the schema of {} under {subject}: {e}",
                            def.name
                        )
                    })?;
                    (id, reg.by_id(id)?)
                }
            };
            if let Registered::Protobuf(p) = &*schema.1 {
                let cols: Vec<(&str, &SqlType)> = def
                    .columns
                    .iter()
                    .filter(|c| c.key == key)
                    .map(|c| (c.name.as_str(), &c.ty))
                    .collect();
                p.first()
                    .and_then(|(m, _)| every_column_has_a_field(m, p.index(), key, &cols))
                    .map_err(|e| format!("the schema {} of {subject}: {e}", schema.0))?;
            }
            if key {
                codec.key = Some(schema);
            } else {
                codec.value = Some(schema);
            }
        }
        Ok(codec)
    }

    /// A codec writing keys as `key_format` and values with the registered `value` schema (id, schema),
    /// without a registry: for tests of what a registry schema cannot hold.
    #[cfg(test)]
    pub(crate) fn with_value_schema(
        key_format: Format,
        value: (u32, Arc<Registered>),
    ) -> SinkCodec {
        SinkCodec {
            key_format,
            value_format: Format::Avro,
            key: None,
            value: Some(value),
        }
    }

    /// The key bytes for a key value (`None`: no key).
    pub fn key(&self, v: &Value) -> std::result::Result<Option<Vec<u8>>, String> {
        let Some((id, schema)) = &self.key else {
            return Ok(encode_key(self.key_format, v));
        };
        if v.is_null() {
            return Ok(None);
        }
        let mut out = Vec::new();
        registry::wire_header(*id, &mut out);
        match &**schema {
            Registered::Avro(d) => {
                let s = d.schema();
                let datum = match s {
                    apache_avro::Schema::Record(r) if r.fields.len() == 1 => {
                        avro::record_datum(r, d.names(), |_| Some(v))?
                    }
                    other => avro::from_value(v, other, d.names())?,
                };
                avro::write(s, d.references(), datum, &mut out)
                    .map_err(|e| format!("the key {e}"))?;
            }
            Registered::Json(_) => out.extend_from_slice(v.to_json().to_string().as_bytes()),
            Registered::Protobuf(p) => {
                let (m, path) = p.first()?;
                // A message of one field holds the key in it, a STRUCT too (ksqlDB's
                // `ConnectDefault1 { ConnectDefault2 K = 1; }`); only a message of several fields is the STRUCT.
                let msg = match v {
                    Value::Struct(f) if protobuf::single_field(m).is_none() => {
                        protobuf::message(m, p.index(), f)
                    }
                    _ => protobuf::single_field_message(m, p.index(), v),
                }
                .map_err(|e| format!("the key {e}"))?;
                fjord_registry::proto_json::write_indexes(path, &mut out);
                prost_reflect::prost::Message::encode(&msg, &mut out)
                    .map_err(|e| format!("the key: {e}"))?;
            }
        }
        Ok(Some(out))
    }

    /// The key bytes for the key columns' values (name and value, in the sink's column order): one column as
    /// `key`, several as one record of them (`None`: no key, every column NULL).
    pub fn keys(&self, vals: &[(&str, Value)]) -> std::result::Result<Option<Vec<u8>>, String> {
        if let [(_, v)] = vals {
            return self.key(v);
        }
        let Some((id, schema)) = &self.key else {
            return encode_keys(self.key_format, vals);
        };
        if vals.iter().all(|(_, v)| v.is_null()) {
            return Ok(None);
        }
        let mut out = Vec::new();
        registry::wire_header(*id, &mut out);
        match &**schema {
            Registered::Avro(d) => {
                let s = d.schema();
                let apache_avro::Schema::Record(r) = s else {
                    return Err(
                        "the registered key schema is not a record of the key columns".into(),
                    );
                };
                let datum = avro::record_datum(r, d.names(), |name| {
                    vals.iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                })?;
                avro::write(s, d.references(), datum, &mut out)
                    .map_err(|e| format!("the key {e}"))?;
            }
            Registered::Json(_) => out.extend_from_slice(ordered_object(vals).as_bytes()),
            Registered::Protobuf(p) => {
                let (m, path) = p.first()?;
                let msg =
                    protobuf::message(m, p.index(), vals).map_err(|e| format!("the key: {e}"))?;
                fjord_registry::proto_json::write_indexes(path, &mut out);
                prost_reflect::prost::Message::encode(&msg, &mut out)
                    .map_err(|e| format!("the key: {e}"))?;
            }
        }
        Ok(Some(out))
    }

    /// The value bytes for named values.
    pub fn value(&self, cols: &[(&str, Value)]) -> std::result::Result<Vec<u8>, String> {
        let Some((id, schema)) = &self.value else {
            return Ok(encode_value(self.value_format, cols));
        };
        let mut out = Vec::new();
        registry::wire_header(*id, &mut out);
        match &**schema {
            Registered::Avro(d) => {
                let s = d.schema();
                let datum = match s {
                    apache_avro::Schema::Record(r) => avro::record_datum(r, d.names(), |name| {
                        cols.iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v)
                    })?,
                    other if cols.len() == 1 => avro::from_value(&cols[0].1, other, d.names())?,
                    _ => return Err("the registered value schema is not a record".into()),
                };
                avro::write(s, d.references(), datum, &mut out)
                    .map_err(|e| format!("the value {e}"))?;
            }
            Registered::Protobuf(p) => {
                let (m, path) = p.first()?;
                let msg =
                    protobuf::message(m, p.index(), cols).map_err(|e| format!("the value: {e}"))?;
                fjord_registry::proto_json::write_indexes(path, &mut out);
                prost_reflect::prost::Message::encode(&msg, &mut out)
                    .map_err(|e| format!("the value: {e}"))?;
            }
            Registered::Json(_) => {
                let o: serde_json::Map<String, J> = cols
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_json()))
                    .collect();
                out.extend_from_slice(J::Object(o).to_string().as_bytes());
            }
        }
        Ok(out)
    }
}

/// Err naming the column when a column has no field of the message a sink writes (it would be dropped
/// silently): a value column must name a field, and so must each of several key columns; a lone key column is
/// the one field of a message of one field, else the key is one STRUCT column each of whose fields must name one
/// (another key, which no record could be written with, is refused too).
fn every_column_has_a_field(
    m: &prost_reflect::MessageDescriptor,
    index: &protobuf::Index,
    key: bool,
    cols: &[(&str, &SqlType)],
) -> std::result::Result<(), String> {
    let names: Vec<&str> = if !key || cols.len() > 1 {
        cols.iter().map(|(n, _)| *n).collect()
    } else if protobuf::single_field(m).is_some() {
        Vec::new()
    } else {
        match cols {
            [(_, SqlType::Struct(f))] => f.iter().map(|(n, _)| n.as_str()).collect(),
            _ => {
                return Err(format!(
                    "the key message {} has {} fields: a key of several fields is written from a key column per field or from one STRUCT key column whose fields name them, not from {}",
                    m.full_name(),
                    m.fields().len(),
                    cols.iter()
                        .map(|(n, t)| format!("{n} {t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    };
    match names.into_iter().find(|n| !index.has(m, n)) {
        Some(n) => Err(format!(
            "the column {n} has no field in the message {}, which would drop it: add the field to the schema or leave the column out",
            m.full_name()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_keys_split_into_the_key_and_the_windows_bounds() {
        use crate::parser::WindowSpec;
        let tumbling = WindowSpec::Tumbling {
            size: 60_000,
            grace: None,
        };
        let mut k = b"u1".to_vec();
        k.extend_from_slice(&1_000i64.to_be_bytes());
        assert_eq!(
            split_windowed_key(&k, &tumbling),
            Ok((&b"u1"[..], 1_000, 61_000))
        );
        // Sessions: key, end, start.
        let session = WindowSpec::Session {
            gap: 5_000,
            grace: None,
        };
        let mut k = b"u1".to_vec();
        k.extend_from_slice(&9_000i64.to_be_bytes());
        k.extend_from_slice(&2_000i64.to_be_bytes());
        assert_eq!(
            split_windowed_key(&k, &session),
            Ok((&b"u1"[..], 2_000, 9_000))
        );
        assert!(split_windowed_key(b"short", &tumbling).is_err());
        assert!(split_windowed_key(&[0; 12], &session).is_err());
    }

    /// `shop.Order { string id = 1; int32 qty = 2; }`, compiled as the registry client compiles it.
    fn order_schema() -> Box<crate::protobuf::Compiled> {
        let text = "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; int32 qty = 2; }\n";
        match registry::Registry::parse("PROTOBUF", text, &[]).unwrap() {
            Registered::Protobuf(p) => p,
            _ => panic!("not Protobuf"),
        }
    }

    /// A column the message has no field for is refused when the sink is opened, naming it and the message.
    /// Before, INSERT INTO wrote the row without it.
    #[test]
    fn a_column_with_no_field_is_refused_naming_it() {
        let p = order_schema();
        let (m, _) = p.first().unwrap();
        let x = p.index();
        let (s, i) = (SqlType::String, SqlType::Int);
        every_column_has_a_field(m, x, false, &[("ID", &s), ("QTY", &i)]).unwrap();
        let e = every_column_has_a_field(m, x, false, &[("ID", &s), ("NOTE", &s)]).unwrap_err();
        assert!(e.contains("NOTE") && e.contains("shop.Order"), "{e}");
        let st = SqlType::Struct(vec![("ID".into(), s.clone()), ("X".into(), i.clone())]);
        let e = every_column_has_a_field(m, x, true, &[("K", &st)]).unwrap_err();
        assert!(e.contains("column X") && e.contains("shop.Order"), "{e}");
    }

    /// A key message of several fields takes one STRUCT key column, or a key column per field: one key column
    /// of another type is refused when the sink is opened. Before, they passed and every record failed when
    /// written ("a value that is not a STRUCT is written to a message of one field").
    #[test]
    fn a_key_message_of_several_fields_takes_one_struct_column() {
        let p = order_schema();
        let (m, _) = p.first().unwrap();
        let x = p.index();
        let (s, i) = (SqlType::String, SqlType::Int);
        let st = SqlType::Struct(vec![("ID".into(), s.clone()), ("QTY".into(), i.clone())]);
        every_column_has_a_field(m, x, true, &[("K", &st)]).unwrap();
        let e = every_column_has_a_field(m, x, true, &[("ID", &s)]).unwrap_err();
        assert!(
            e.contains("shop.Order") && e.contains("one STRUCT key column"),
            "{e}"
        );
        // Several key columns are the message's fields (ksqlDB's multi-column key), each naming one.
        every_column_has_a_field(m, x, true, &[("ID", &s), ("QTY", &i)]).unwrap();
        let e = every_column_has_a_field(m, x, true, &[("ID", &s), ("NOTE", &i)]).unwrap_err();
        assert!(e.contains("column NOTE"), "{e}");
    }

    /// Several key columns are one key record, as ksqlDB (0.15 on) writes them: a JSON object with the fields in
    /// the columns' order, DELIMITED fields, an Avro record `<Sink>Key` of nullable fields; they read back into
    /// the columns (JSON by name, case aside), wherever they stand among the value columns. KAFKA and NONE
    /// refuse them with ksqlDB's message. Before, a source or a result with several key columns was refused.
    #[test]
    fn several_key_columns_are_one_key_record() {
        let col = |n: &str, ty: SqlType, key: bool| crate::catalog::Column {
            name: n.into(),
            ty,
            key,
        };
        let mut def = SourceDef {
            name: "S".into(),
            kind: crate::parser::SourceKind::Stream,
            columns: vec![
                col("B", SqlType::String, true),
                col("V", SqlType::Int, false),
                col("A", SqlType::Int, true),
            ],
            topic: "s".into(),
            key_format: Format::Json,
            value_format: Format::Json,
            timestamp: None,
            statement: String::new(),
            query: None,
        };
        let keys = [("B", Value::String("x".into())), ("A", Value::Int(7))];
        let json = encode_keys(Format::Json, &keys).unwrap().unwrap();
        assert_eq!(json, br#"{"B":"x","A":7}"#);
        let want = [Value::String("x".into()), Value::Int(1), Value::Int(7)];
        let row = decode(&def, Some(&json), Some(br#"{"V":1}"#), (0, 0, 0))
            .unwrap()
            .unwrap();
        assert_eq!(row[PSEUDO.len()..], want);
        // A tombstone's key is read the same way (each key column was decoded from the whole record before).
        let gone = decode_tombstone(&def, Some(&json), (0, 0, 0)).unwrap();
        assert_eq!(
            gone[PSEUDO.len()..],
            [Value::String("x".into()), Value::Null, Value::Int(7)]
        );
        // Names match case aside; a missing field is NULL; a key that is no object is a bad record.
        let row = decode(&def, Some(br#"{"a":7}"#), Some(br#"{"V":1}"#), (0, 0, 0))
            .unwrap()
            .unwrap();
        assert_eq!(
            row[PSEUDO.len()..],
            [Value::Null, Value::Int(1), Value::Int(7)]
        );
        assert!(decode(&def, Some(b"7"), Some(br#"{"V":1}"#), (0, 0, 0)).is_err());
        // No key at all: every key column NULL, no key written for all NULLs.
        let row = decode(&def, None, Some(br#"{"V":1}"#), (0, 0, 0))
            .unwrap()
            .unwrap();
        assert_eq!(row[PSEUDO.len()], Value::Null);
        assert_eq!(
            encode_keys(Format::Json, &[("B", Value::Null), ("A", Value::Null)]).unwrap(),
            None
        );

        def.key_format = Format::Delimited;
        let text = encode_keys(Format::Delimited, &keys).unwrap().unwrap();
        assert_eq!(text, b"x,7");
        let row = decode(&def, Some(&text), Some(br#"{"V":1}"#), (0, 0, 0))
            .unwrap()
            .unwrap();
        assert_eq!(row[PSEUDO.len()..], want);
        assert!(decode(&def, Some(b"x"), Some(br#"{"V":1}"#), (0, 0, 0)).is_err());

        let (s, i) = (SqlType::String, SqlType::Int);
        for f in [Format::Kafka, Format::None] {
            let e = check_key_columns(f, &[("B", &s), ("A", &i)]).unwrap_err();
            assert!(
                e.contains(&format!(
                    "The '{}' format only supports a single field. Got: [`B` STRING KEY, `A` INTEGER KEY]",
                    f.name()
                )),
                "{e}"
            );
            check_key_columns(f, &[("B", &s)]).unwrap();
        }
        for f in [
            Format::Json,
            Format::Delimited,
            Format::Avro,
            Format::Protobuf,
            Format::JsonSr,
        ] {
            check_key_columns(f, &[("B", &s), ("A", &i)]).unwrap();
        }

        // AVRO: the key record ksqlDB registers for a sink, written from the columns by name.
        let text = avro::key_record_schema("BY_USER_PAGE", [("B", &s), ("A", &i)].into_iter());
        assert_eq!(text["name"], "ByUserPageKey");
        assert_eq!(text["namespace"], "io.confluent.ksql.avro_schemas");
        let d = fjord_registry::wire::AvroDecoder::compile(&text.to_string(), &[]).unwrap();
        let codec = SinkCodec {
            key_format: Format::Avro,
            value_format: Format::Json,
            key: Some((9, Arc::new(Registered::Avro(Box::new(d))))),
            value: None,
        };
        let bytes = codec.keys(&keys).unwrap().unwrap();
        assert_eq!(bytes[..5], [0, 0, 0, 0, 9]);
        let d = fjord_registry::wire::AvroDecoder::compile(&text.to_string(), &[]).unwrap();
        let Avro::Record(fields) = d.read(&bytes[5..]).unwrap() else {
            panic!("not a record")
        };
        assert_eq!(
            avro::to_value(avro::field(&fields, "B").unwrap(), &s).unwrap(),
            keys[0].1
        );
        assert_eq!(
            avro::to_value(avro::field(&fields, "A").unwrap(), &i).unwrap(),
            keys[1].1
        );
    }

    /// Several key columns in PROTOBUF are ksqlDB's `ConnectDefault1` with a field per column, written by
    /// name and read back by name. Before, a key message of several fields took one STRUCT column only.
    #[test]
    fn several_protobuf_key_columns_are_one_message() {
        let (s, i) = (SqlType::String, SqlType::Int);
        let text = protobuf::schema_text([("B", &s), ("A", &i)].into_iter()).unwrap();
        let reg = Arc::new(registry::Registry::parse("PROTOBUF", &text, &[]).unwrap());
        let Registered::Protobuf(p) = &*reg else {
            panic!("not Protobuf")
        };
        let (m, _) = p.first().unwrap();
        every_column_has_a_field(m, p.index(), true, &[("B", &s), ("A", &i)]).unwrap();
        let codec = SinkCodec {
            key_format: Format::Protobuf,
            value_format: Format::Json,
            key: Some((4, reg.clone())),
            value: None,
        };
        let keys = [("B", Value::String("x".into())), ("A", Value::Int(7))];
        let bytes = codec.keys(&keys).unwrap().unwrap();
        assert_eq!(bytes[..6], [0, 0, 0, 0, 4, 0]);
        let msg = fjord_registry::proto_json::decode(m, &bytes[6..]).unwrap();
        let mut left = usize::MAX;
        for (n, v) in &keys {
            let ty = if *n == "B" { &s } else { &i };
            assert_eq!(
                &protobuf::column(&msg, p.index(), n, ty, &mut left).unwrap(),
                v
            );
        }
    }

    /// A STRUCT key is written as ksqlDB writes it, `ConnectDefault1 { ConnectDefault2 K = 1; }`, the struct in
    /// the one field, and reads back as the struct. Before, it was written as an empty message (the struct's
    /// fields looked up among the outer message's) and read back with every field NULL.
    #[test]
    fn a_protobuf_struct_key_round_trips() {
        let ty = SqlType::Struct(vec![
            ("A".into(), SqlType::String),
            ("B".into(), SqlType::Int),
        ]);
        let text = protobuf::schema_text([("K", &ty)].into_iter()).unwrap();
        let reg = Arc::new(registry::Registry::parse("PROTOBUF", &text, &[]).unwrap());
        let Registered::Protobuf(p) = &*reg else {
            panic!("not Protobuf")
        };
        let (m, _) = p.first().unwrap();
        let codec = SinkCodec {
            key_format: Format::Protobuf,
            value_format: Format::Protobuf,
            key: Some((3, reg.clone())),
            value: None,
        };
        let v = Value::Struct(vec![
            ("A".into(), Value::String("x".into())),
            ("B".into(), Value::Int(7)),
        ]);
        let bytes = codec.key(&v).unwrap().unwrap();
        // The header (magic byte, id) and the message indexes [0] as the byte 0.
        assert_eq!(bytes[..6], [0, 0, 0, 0, 3, 0]);
        let msg = fjord_registry::proto_json::decode(m, &bytes[6..]).unwrap();
        let mut left = usize::MAX;
        assert_eq!(
            protobuf::key_value(&msg, p.index(), &ty, &mut left).unwrap(),
            v
        );
    }
}
