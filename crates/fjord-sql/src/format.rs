//! Rows to and from record bytes: JSON and DELIMITED values, KAFKA, JSON and NONE keys. AVRO and PROTOBUF are
//! accepted in DDL (with explicit columns) but not read or written yet.

use crate::catalog::{Format, SourceDef};
use crate::error::{Result, SqlError};
use crate::plan::PSEUDO;
use crate::types::{SqlType, Value};

/// Refuses formats this version cannot read or write.
pub fn check_supported(def: &SourceDef) -> Result<()> {
    for (what, f) in [("value", def.value_format), ("key", def.key_format)] {
        if matches!(f, Format::Avro | Format::Protobuf) {
            return Err(SqlError::not_supported(format!(
                "{} uses {what}_format {}: reading and writing it needs the schema registry integration, coming next; use JSON or DELIMITED",
                def.name,
                f.name()
            )));
        }
    }
    Ok(())
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
    for c in &def.columns {
        let v =
            if c.key {
                decode_key(def.key_format, key, &c.ty)?
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
