//! Avro for VALUE_FORMAT/KEY_FORMAT 'AVRO': the columns of a registered schema, the schema of a sink's columns
//! (as ksqlDB writes it: a record of nullable fields), and values to and from Avro datums with `apache-avro`.

use apache_avro::schema::{InnerDecimalSchema, Schema};
use apache_avro::types::Value as Avro;
use fjord_registry::avro_json::Names;
use serde_json::{json, Value as J};

use crate::types::{SqlType, Value};

/// The record name ksqlDB gives the schemas it registers.
const RECORD: &str = "KsqlDataSourceSchema";
const NAMESPACE: &str = "io.confluent.ksql.avro_schemas";

/// A registered schema's SQL type (a union of null and one type is that type, nullable as every SQL value is);
/// a named type used again, or defined in a referenced schema, is looked up in `names`. Bounded by the shape
/// check the schema passed when it was compiled (`fjord_registry::wire::AvroDecoder`: not recursive, at most
/// 10,000 types expanded).
pub fn sql_type(s: &Schema, names: &Names) -> Result<SqlType, String> {
    Ok(match s {
        Schema::Boolean => SqlType::Boolean,
        Schema::Int => SqlType::Int,
        Schema::Long => SqlType::Bigint,
        Schema::Float | Schema::Double => SqlType::Double,
        Schema::String | Schema::Enum(_) | Schema::Uuid(_) => SqlType::String,
        Schema::Bytes | Schema::Fixed(_) => SqlType::Bytes,
        Schema::Decimal(d) => SqlType::Decimal(
            u8::try_from(d.precision).map_err(|_| "a decimal precision above 255")?,
            u8::try_from(d.scale).map_err(|_| "a decimal scale above 255")?,
        ),
        Schema::Date => SqlType::Date,
        Schema::TimeMillis | Schema::TimeMicros => SqlType::Time,
        Schema::TimestampMillis | Schema::LocalTimestampMillis => SqlType::Timestamp,
        Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => SqlType::Bigint,
        Schema::Array(a) => SqlType::Array(Box::new(sql_type(&a.items, names)?)),
        Schema::Map(m) => SqlType::Map(
            Box::new(SqlType::String),
            Box::new(sql_type(&m.types, names)?),
        ),
        Schema::Record(r) => SqlType::Struct(
            r.fields
                .iter()
                .map(|f| Ok((f.name.to_ascii_uppercase(), sql_type(&f.schema, names)?)))
                .collect::<Result<_, String>>()?,
        ),
        Schema::Union(u) => {
            let branches: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|b| !matches!(b, Schema::Null))
                .collect();
            match branches.as_slice() {
                [one] => sql_type(one, names)?,
                _ => {
                    return Err(
                        "a union of several non-null types has no SQL type (use a record instead)"
                            .into(),
                    )
                }
            }
        }
        Schema::Ref { .. } => sql_type(names.resolve(s)?, names)?,
        other => return Err(format!("the Avro type {other:?} has no SQL type")),
    })
}

/// The columns of a value schema: its record's fields, upper-cased as ksqlDB names them; a schema that is not a
/// record is one column named `name`.
pub fn columns(s: &Schema, names: &Names, name: &str) -> Result<Vec<(String, SqlType)>, String> {
    match s {
        Schema::Record(r) => r
            .fields
            .iter()
            .map(|f| {
                Ok((
                    f.name.to_ascii_uppercase(),
                    sql_type(&f.schema, names).map_err(|e| format!("field {}: {e}", f.name))?,
                ))
            })
            .collect(),
        other => Ok(vec![(name.to_string(), sql_type(other, names)?)]),
    }
}

/// The Avro schema (JSON) of one SQL type, nullable.
fn schema_of(ty: &SqlType, path: &str) -> J {
    let t = match ty {
        SqlType::Boolean => json!("boolean"),
        SqlType::Int => json!("int"),
        SqlType::Bigint => json!("long"),
        SqlType::Double => json!("double"),
        SqlType::String => json!("string"),
        SqlType::Bytes => json!("bytes"),
        SqlType::Decimal(p, s) => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s})
        }
        SqlType::Timestamp => json!({"type": "long", "logicalType": "timestamp-millis"}),
        SqlType::Date => json!({"type": "int", "logicalType": "date"}),
        SqlType::Time => json!({"type": "int", "logicalType": "time-millis"}),
        SqlType::Array(t) => json!({"type": "array", "items": schema_of(t, path)}),
        // Avro map keys are strings: other SQL key types are written as their text.
        SqlType::Map(_, v) => json!({"type": "map", "values": schema_of(v, path)}),
        SqlType::Struct(fields) => record(
            &format!("{RECORD}_{path}"),
            fields.iter().map(|(n, t)| (n.as_str(), t)),
            path,
        ),
    };
    json!(["null", t])
}

fn record<'a>(name: &str, fields: impl Iterator<Item = (&'a str, &'a SqlType)>, path: &str) -> J {
    let fields: Vec<J> = fields
        .map(|(n, t)| {
            let sub = if path.is_empty() {
                n.to_string()
            } else {
                format!("{path}_{n}")
            };
            json!({"name": n, "type": schema_of(t, &sub), "default": null})
        })
        .collect();
    json!({"type": "record", "name": name, "namespace": NAMESPACE, "fields": fields})
}

/// The value schema ksqlDB registers for a sink's value columns: a record of nullable fields.
pub fn value_schema<'a>(cols: impl Iterator<Item = (&'a str, &'a SqlType)>) -> J {
    record(RECORD, cols, "")
}

/// The key schema of a single key column: the bare (nullable) type, as ksqlDB writes single keys.
pub fn key_schema(ty: &SqlType) -> J {
    schema_of(ty, "KEY")
}

/// The key schema of several key columns: a record of nullable fields named `<Source>Key` (the source's name in
/// upper camel case, `BY_USER` gives `ByUserKey`), as ksqlDB names key records so that a topic's key and value
/// records do not clash in generated classes.
pub fn key_record_schema<'a>(
    source: &str,
    cols: impl Iterator<Item = (&'a str, &'a SqlType)>,
) -> J {
    record(&key_record_name(source), cols, "")
}

fn key_record_name(source: &str) -> String {
    let mut name: String = source
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            cs.next().map_or_else(String::new, |c| {
                c.to_uppercase()
                    .chain(cs.flat_map(char::to_lowercase))
                    .collect()
            })
        })
        // An Avro name holds letters, digits and underscores only.
        .map(|p| {
            p.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert(0, 'K');
    }
    name.push_str("Key");
    name
}

/// A datum as a value of `ty`.
pub fn to_value(v: &Avro, ty: &SqlType) -> Result<Value, String> {
    let bad = || format!("expected {ty}, found the Avro value {v:?}");
    Ok(match v {
        Avro::Null => Value::Null,
        Avro::Union(_, inner) => return to_value(inner, ty),
        Avro::Boolean(b) => match ty {
            SqlType::Boolean => Value::Bool(*b),
            SqlType::String => Value::String(b.to_string()),
            _ => return Err(bad()),
        },
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => {
            int_value(i64::from(*i), matches!(v, Avro::TimeMillis(_)), ty).ok_or_else(bad)?
        }
        Avro::Long(i)
        | Avro::TimestampMillis(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::LocalTimestampMicros(i)
        | Avro::TimestampNanos(i)
        | Avro::LocalTimestampNanos(i) => int_value(*i, false, ty).ok_or_else(bad)?,
        Avro::TimeMicros(i) => int_value(*i / 1000, true, ty).ok_or_else(bad)?,
        Avro::Float(f) => float_value(f64::from(*f), ty).ok_or_else(bad)?,
        Avro::Double(f) => float_value(*f, ty).ok_or_else(bad)?,
        Avro::String(s) | Avro::Enum(_, s) => match ty {
            SqlType::String => Value::String(s.clone()),
            other => Value::from_text(s, other)?,
        },
        Avro::Uuid(u) => Value::String(u.to_string()),
        Avro::Bytes(b) | Avro::Fixed(_, b) => match ty {
            SqlType::Bytes => Value::Bytes(b.clone()),
            SqlType::String => Value::String(String::from_utf8_lossy(b).into_owned()),
            _ => return Err(bad()),
        },
        Avro::Decimal(d) => {
            let bytes = <Vec<u8>>::try_from(d).map_err(|e| e.to_string())?;
            let scale = match ty {
                SqlType::Decimal(_, s) => i32::from(*s),
                _ => return Err(bad()),
            };
            Value::Double(decimal_f64(&bytes, scale)?)
        }
        Avro::Array(items) => match ty {
            SqlType::Array(t) => Value::Array(
                items
                    .iter()
                    .map(|x| to_value(x, t))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(bad()),
        },
        Avro::Map(m) => match ty {
            SqlType::Map(k, t) => {
                let mut entries: Vec<(&String, &Avro)> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Map(
                    entries
                        .into_iter()
                        .map(|(key, x)| Ok((Value::from_text(key, k)?, to_value(x, t)?)))
                        .collect::<Result<_, String>>()?,
                )
            }
            _ => return Err(bad()),
        },
        Avro::Record(fields) => match ty {
            SqlType::Struct(want) => Value::Struct(
                want.iter()
                    .map(|(n, t)| {
                        Ok((
                            n.as_str().into(),
                            match field(fields, n) {
                                Some(x) => to_value(x, t)?,
                                None => Value::Null,
                            },
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    })
}

pub(crate) fn int_value(i: i64, time: bool, ty: &SqlType) -> Option<Value> {
    Some(match ty {
        SqlType::Int => Value::Int(i32::try_from(i).ok()?),
        SqlType::Bigint => Value::Bigint(i),
        SqlType::Double | SqlType::Decimal(..) => Value::Double(i as f64),
        SqlType::Timestamp => Value::Timestamp(i),
        SqlType::Date if !time => Value::Date(i32::try_from(i).ok()?),
        SqlType::Time => Value::Time(i),
        SqlType::String => Value::String(i.to_string()),
        _ => return None,
    })
}

pub(crate) fn float_value(f: f64, ty: &SqlType) -> Option<Value> {
    Some(match ty {
        SqlType::Double => Value::Double(f),
        SqlType::Decimal(_, s) => Value::Double(crate::types::round_to(f, i32::from(*s))),
        SqlType::String => Value::String(f.to_string()),
        _ => return None,
    })
}

/// A two's-complement big-endian unscaled value and its scale, as a double.
fn decimal_f64(bytes: &[u8], scale: i32) -> Result<f64, String> {
    if bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes is beyond what a DECIMAL column holds here",
            bytes.len()
        ));
    }
    let neg = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut full = [if neg { 0xff } else { 0 }; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(full);
    Ok(unscaled as f64 / 10f64.powi(scale))
}

/// A record's field by name, case-insensitively (columns are upper case, Avro field names usually not).
pub fn field<'a>(fields: &'a [(String, Avro)], name: &str) -> Option<&'a Avro> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .or_else(|| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v)
}

/// A value as a datum of `schema` (a registered schema, ours or the producer's): unions take the null branch
/// for NULL, else the first branch the value fits. A named type used again (`Schema::Ref`), or defined in a
/// referenced schema, is looked up in `names`.
pub fn from_value(v: &Value, schema: &Schema, names: &Names) -> Result<Avro, String> {
    let schema = names.resolve(schema)?;
    let bad = || {
        format!(
            "the value {} does not fit the Avro type {schema:?}",
            v.to_text()
        )
    };
    if let Schema::Union(u) = schema {
        let branches = u.variants();
        if v.is_null() {
            return branches
                .iter()
                .position(|b| matches!(b, Schema::Null))
                .map(|i| Avro::Union(i as u32, Box::new(Avro::Null)))
                .ok_or_else(|| "NULL for a field that is not nullable".to_string());
        }
        let mut last = None;
        for (i, b) in branches.iter().enumerate() {
            if matches!(b, Schema::Null) {
                continue;
            }
            match from_value(v, b, names) {
                Ok(x) => return Ok(Avro::Union(i as u32, Box::new(x))),
                Err(e) => last = Some(e),
            }
        }
        return Err(last.unwrap_or_else(bad));
    }
    if v.is_null() {
        return match schema {
            Schema::Null => Ok(Avro::Null),
            _ => Err("NULL for a field that is not nullable".into()),
        };
    }
    let int = || v.as_i64().ok_or_else(bad);
    Ok(match schema {
        Schema::Boolean => match v {
            Value::Bool(b) => Avro::Boolean(*b),
            _ => return Err(bad()),
        },
        Schema::Int => Avro::Int(i32::try_from(int()?).map_err(|_| bad())?),
        Schema::Long => Avro::Long(int()?),
        Schema::Float => Avro::Float(v.as_f64().ok_or_else(bad)? as f32),
        Schema::Double => Avro::Double(v.as_f64().ok_or_else(bad)?),
        Schema::String => Avro::String(match v {
            Value::String(s) => s.clone(),
            other => other.to_text(),
        }),
        Schema::Enum(e) => {
            match v {
                Value::String(s) => Avro::Enum(
                    e.symbols.iter().position(|x| x == s).ok_or_else(|| {
                        format!("{s} is not a symbol of the enum {}", e.name.name())
                    })? as u32,
                    s.clone(),
                ),
                _ => return Err(bad()),
            }
        }
        Schema::Bytes => match v {
            Value::Bytes(b) => Avro::Bytes(b.clone()),
            Value::String(s) => Avro::Bytes(s.as_bytes().to_vec()),
            _ => return Err(bad()),
        },
        Schema::Decimal(d) if matches!(d.inner, InnerDecimalSchema::Bytes) => {
            let f = v.as_f64().ok_or_else(bad)?;
            let unscaled = (f * 10f64.powi(d.scale as i32)).round();
            if !unscaled.is_finite() || unscaled.abs() >= 1.7e38 {
                return Err(bad());
            }
            let bytes = (unscaled as i128).to_be_bytes();
            // The shortest two's-complement form.
            let mut start = 0;
            while start < 15
                && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
                    || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
            {
                start += 1;
            }
            Avro::Decimal(apache_avro::Decimal::from(&bytes[start..]))
        }
        Schema::Date => Avro::Date(i32::try_from(int()?).map_err(|_| bad())?),
        Schema::TimeMillis => Avro::TimeMillis(i32::try_from(int()?).map_err(|_| bad())?),
        Schema::TimeMicros => Avro::TimeMicros(int()?.saturating_mul(1000)),
        Schema::TimestampMillis => Avro::TimestampMillis(int()?),
        Schema::TimestampMicros => Avro::TimestampMicros(int()?),
        Schema::LocalTimestampMillis => Avro::LocalTimestampMillis(int()?),
        Schema::LocalTimestampMicros => Avro::LocalTimestampMicros(int()?),
        Schema::Array(a) => match v {
            Value::Array(items) => Avro::Array(
                items
                    .iter()
                    .map(|x| from_value(x, &a.items, names))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(bad()),
        },
        Schema::Map(m) => match v {
            Value::Map(entries) => Avro::Map(
                entries
                    .iter()
                    .map(|(k, x)| Ok((k.to_text(), from_value(x, &m.types, names)?)))
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err(bad()),
        },
        Schema::Record(r) => {
            let fields: &[(std::sync::Arc<str>, Value)] = match v {
                Value::Struct(f) => f,
                _ => return Err(bad()),
            };
            record_datum(r, names, |name| {
                fields
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, x)| x)
            })?
        }
        _ => return Err(bad()),
    })
}

/// A record datum from named values: a field with no value takes its default (or NULL when nullable).
pub fn record_datum<'a>(
    r: &apache_avro::schema::RecordSchema,
    names: &Names,
    get: impl Fn(&str) -> Option<&'a Value>,
) -> Result<Avro, String> {
    let mut out = Vec::with_capacity(r.fields.len());
    for f in &r.fields {
        let v = match get(&f.name) {
            Some(x) => {
                from_value(x, &f.schema, names).map_err(|e| format!("field {}: {e}", f.name))?
            }
            None => match &f.default {
                Some(d) => Avro::try_from(d.clone())
                    .and_then(|x| x.resolve(names.resolve(&f.schema).unwrap_or(&f.schema)))
                    .map_err(|e| format!("field {}: its default: {e}", f.name))?,
                None => from_value(&Value::Null, &f.schema, names)
                    .map_err(|e| format!("field {} has no value and no default: {e}", f.name))?,
            },
        };
        out.push((f.name.clone(), v));
    }
    Ok(Avro::Record(out))
}

/// Writes a datum of `schema`, whose `references` (dependencies first) define named types it uses.
pub fn write(
    schema: &Schema,
    references: &[Schema],
    v: Avro,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // Dependencies first, then the schema (its own named types resolve too), as `fjord_registry::wire` reads.
    let schemata: Vec<&Schema> = references.iter().chain(std::iter::once(schema)).collect();
    let w = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .schemata(schemata)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    w.write_value(out, v)
        .map_err(|e| format!("does not fit the schema: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one datum written with the schema `text`, as a record is read (`fjord_registry::wire`'s decoder).
    fn read(text: &str, body: &[u8]) -> Result<Avro, String> {
        fjord_registry::wire::AvroDecoder::compile(text, &[])?.read(body)
    }

    #[test]
    fn a_sink_schema_round_trips_its_values() {
        let cols = vec![
            ("ID".to_string(), SqlType::String),
            ("N".to_string(), SqlType::Int),
            ("AMOUNT".to_string(), SqlType::Decimal(10, 2)),
            ("AT".to_string(), SqlType::Timestamp),
            (
                "TAGS".to_string(),
                SqlType::Array(Box::new(SqlType::String)),
            ),
            (
                "S".to_string(),
                SqlType::Struct(vec![("X".into(), SqlType::Double)]),
            ),
        ];
        let text = value_schema(cols.iter().map(|(n, t)| (n.as_str(), t))).to_string();
        let schema = Schema::parse_str(&text).unwrap();
        assert_eq!(columns(&schema, &Names::of(&[&schema]), "V").unwrap(), cols);
        let vals = [
            Value::String("a".into()),
            Value::Null,
            Value::Double(-12.5),
            Value::Timestamp(1_700_000_000_000),
            Value::Array(vec![Value::String("x".into())]),
            Value::Struct(vec![("X".into(), Value::Double(0.5))]),
        ];
        let Schema::Record(r) = &schema else {
            unreachable!()
        };
        let datum = record_datum(r, &Names::of(&[&schema]), |n| {
            cols.iter().position(|(c, _)| c == n).map(|i| &vals[i])
        })
        .unwrap();
        let mut out = Vec::new();
        write(&schema, &[], datum, &mut out).unwrap();
        let Avro::Record(back) = read(&text, &out).unwrap() else {
            unreachable!()
        };
        for ((name, ty), want) in cols.iter().zip(&vals) {
            assert_eq!(&to_value(field(&back, name).unwrap(), ty).unwrap(), want);
        }
    }

    #[test]
    fn a_union_of_several_types_and_a_non_nullable_null_are_errors() {
        let s = Schema::parse_str(r#"["null", "int", "string"]"#).unwrap();
        assert!(sql_type(&s, &Names::default())
            .unwrap_err()
            .contains("union"));
        assert!(from_value(&Value::Null, &Schema::Int, &Names::default())
            .unwrap_err()
            .contains("not nullable"));
        assert!(read(r#""long""#, &[]).is_err());
    }

    /// A datum cut short is an error, not a row of NULLs: apache-avro reads a string cut short as null, and a
    /// missing branch index of an optional column as its null branch.
    #[test]
    fn a_datum_cut_short_is_an_error_not_nulls() {
        let text = value_schema(
            [("ITEM", &SqlType::String), ("NOTE", &SqlType::String)]
                .iter()
                .map(|(n, t)| (*n, *t)),
        )
        .to_string();
        let schema = Schema::parse_str(&text).unwrap();
        let Schema::Record(r) = &schema else {
            unreachable!()
        };
        let vals = [Value::String("ab".into()), Value::String("c".into())];
        let datum = record_datum(r, &Names::of(&[&schema]), |n| {
            ["ITEM", "NOTE"]
                .iter()
                .position(|c| *c == n)
                .map(|i| &vals[i])
        })
        .unwrap();
        let mut body = Vec::new();
        write(&schema, &[], datum, &mut body).unwrap();
        assert!(read(&text, &body).is_ok());
        for cut in 0..body.len() {
            let e = read(&text, &body[..cut]).unwrap_err();
            assert!(e.contains("ends early"), "cut at {cut}: {e}");
        }
    }

    /// A value is written with a registered schema whose named type is used twice, once defined in the schema
    /// and once in a referenced schema (INSERT INTO a stream writes with the producer's latest schema), and reads
    /// back. Before, `from_value` had no type for `Schema::Ref` ("does not fit the Avro type Ref") and the
    /// writer did not know the referenced schema's names.
    #[test]
    fn values_are_written_with_named_types_used_again_or_referenced() {
        let money = r#"{"type":"record","name":"Money","namespace":"com.example","fields":[{"name":"units","type":"long"}]}"#;
        let order = r#"{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"price","type":"Money"},{"name":"tax","type":["null","Money"]}]}"#;
        let inline = r#"{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"price","type":{"type":"record","name":"Money","fields":[{"name":"units","type":"long"}]}},{"name":"tax","type":["null","Money"]}]}"#;
        let referenced = [("com.example.Money".to_string(), money.to_string())];
        for (text, refs) in [(order, &referenced[..]), (inline, &[][..])] {
            let d = fjord_registry::wire::AvroDecoder::compile(text, refs).unwrap();
            let Schema::Record(r) = d.schema() else {
                unreachable!()
            };
            let units = |n| Value::Struct(vec![("UNITS".into(), Value::Bigint(n))]);
            let vals = [units(7), units(2)];
            let datum = record_datum(r, d.names(), |n| {
                ["PRICE", "TAX"]
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(n))
                    .map(|i| &vals[i])
            })
            .unwrap();
            let mut out = Vec::new();
            write(d.schema(), d.references(), datum, &mut out).unwrap();
            let Avro::Record(back) = d.read(&out).unwrap() else {
                unreachable!()
            };
            let ty = SqlType::Struct(vec![("UNITS".into(), SqlType::Bigint)]);
            assert_eq!(
                to_value(field(&back, "TAX").unwrap(), &ty).unwrap(),
                units(2)
            );
            assert_eq!(
                to_value(field(&back, "PRICE").unwrap(), &ty).unwrap(),
                units(7)
            );
        }
    }
}
