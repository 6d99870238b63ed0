//! Avro datums to and from JSON, for the console tools and the dashboard (through [`crate::wire`]).
//!
//! Output follows Avro's JSON encoding, as kafka-avro-console-consumer prints it: a union value that is not
//! null is wrapped in an object naming its branch (`{"string": "x"}`), bytes and fixed are strings whose
//! characters are the bytes (U+0000 to U+00FF), logical types are their underlying value (a date is an int).
//! Input accepts that encoding and also the plain JSON people write: a union value may be given unwrapped (the
//! first branch it fits is taken), so `{"name": "x"}` fits `["null", "string"]` as well as `{"string": "x"}`.
//! Record fields left out take their default; unknown fields are refused (most likely a typo).

use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::schema::{InnerDecimalSchema, Name, UuidSchema};
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::Value as Json;

/// The named types of a schema and of the schemas it references, by full name (to follow `Schema::Ref`).
#[derive(Default)]
pub struct Names(HashMap<String, Schema>);

impl Names {
    pub fn of(schemas: &[&Schema]) -> Names {
        let mut n = Names::default();
        for s in schemas {
            n.collect(s);
        }
        n
    }

    fn collect(&mut self, s: &Schema) {
        let named = |n: &mut Names, name: &Name, s: &Schema| {
            n.0.entry(name.fullname(None)).or_insert_with(|| s.clone());
        };
        match s {
            Schema::Record(r) => {
                named(self, &r.name, s);
                for f in &r.fields {
                    self.collect(&f.schema);
                }
            }
            Schema::Enum(e) => named(self, &e.name, s),
            Schema::Fixed(f) | Schema::Duration(f) => named(self, &f.name, s),
            Schema::Decimal(d) => {
                if let InnerDecimalSchema::Fixed(f) = &d.inner {
                    named(self, &f.name, s)
                }
            }
            Schema::Uuid(UuidSchema::Fixed(f)) => named(self, &f.name, s),
            Schema::Array(a) => self.collect(&a.items),
            Schema::Map(m) => self.collect(&m.types),
            Schema::Union(u) => {
                for v in u.variants() {
                    self.collect(v);
                }
            }
            _ => {}
        }
    }

    /// The named type a `Schema::Ref` names (any other schema is itself).
    pub fn resolve<'a>(&'a self, s: &'a Schema) -> Result<&'a Schema, String> {
        match s {
            Schema::Ref { name } => {
                let full = name.fullname(None);
                self.0
                    .get(&full)
                    .ok_or_else(|| format!("the schema names type `{full}` but does not define it"))
            }
            other => Ok(other),
        }
    }
}

/// The name of a union branch in Avro's JSON encoding: the full name of a named type, else the type (a
/// logical type's underlying type).
fn branch_name(s: &Schema, names: &Names) -> String {
    let s = names.resolve(s).unwrap_or(s);
    match s {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => "bytes".into(),
        Schema::String | Schema::Uuid(UuidSchema::String) => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => "bytes".into(),
            InnerDecimalSchema::Fixed(f) => f.name.fullname(None),
        },
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            f.name.fullname(None)
        }
        Schema::Union(_) => "union".into(),
        Schema::Ref { name } => name.fullname(None),
    }
}

/// Bytes as Avro's JSON encoding writes them: one character per byte.
fn bytes_text(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

fn text_bytes(s: &str, at: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| {
                format!("{at}: bytes are written one character per byte (U+0000 to U+00FF); `{c}` is not one")
            })
        })
        .collect()
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json escapes a string exactly as JSON wants it.
    out.push_str(&Json::String(s.to_string()).to_string());
}

fn push_float(out: &mut String, f: f64) {
    if f.is_finite() {
        out.push_str(&Json::from(f).to_string());
    } else if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f > 0.0 {
        out.push_str("\"Infinity\"");
    } else {
        out.push_str("\"-Infinity\"");
    }
}

/// Writes `v` (decoded with `schema`) as JSON text, fields in schema order.
pub fn to_json(v: &Avro, schema: &Schema, names: &Names) -> Result<String, String> {
    let mut out = String::new();
    write_json(&mut out, v, schema, names)?;
    Ok(out)
}

fn write_json(out: &mut String, v: &Avro, schema: &Schema, names: &Names) -> Result<(), String> {
    let schema = names.resolve(schema)?;
    match v {
        Avro::Null => out.push_str("null"),
        Avro::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => {
            let _ = write!(out, "{i}");
        }
        Avro::Long(l)
        | Avro::TimeMicros(l)
        | Avro::TimestampMillis(l)
        | Avro::TimestampMicros(l)
        | Avro::TimestampNanos(l)
        | Avro::LocalTimestampMillis(l)
        | Avro::LocalTimestampMicros(l)
        | Avro::LocalTimestampNanos(l) => {
            let _ = write!(out, "{l}");
        }
        Avro::Float(f) => push_float(out, f64::from(*f)),
        Avro::Double(f) => push_float(out, *f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => push_json_string(out, &bytes_text(b)),
        Avro::String(s) | Avro::Enum(_, s) => push_json_string(out, s),
        Avro::Uuid(u) => match schema {
            Schema::Uuid(UuidSchema::String) | Schema::String => {
                push_json_string(out, &u.to_string())
            }
            _ => push_json_string(out, &bytes_text(u.as_bytes())),
        },
        Avro::Decimal(d) => {
            let b: Vec<u8> = d
                .try_into()
                .map_err(|e| format!("a decimal cannot be written: {e}"))?;
            push_json_string(out, &bytes_text(&b));
        }
        Avro::BigDecimal(d) => push_json_string(out, &d.to_string()),
        Avro::Duration(d) => {
            let b: [u8; 12] = (*d).into();
            push_json_string(out, &bytes_text(&b));
        }
        Avro::Union(i, inner) => {
            let Schema::Union(u) = schema else {
                return Err("a union value for a schema that is not a union".into());
            };
            let branch = u
                .variants()
                .get(*i as usize)
                .ok_or("a union branch the schema does not have")?;
            if matches!(**inner, Avro::Null) {
                out.push_str("null");
            } else {
                out.push('{');
                push_json_string(out, &branch_name(branch, names));
                out.push(':');
                write_json(out, inner, branch, names)?;
                out.push('}');
            }
        }
        Avro::Array(items) => {
            let Schema::Array(a) = schema else {
                return Err("an array value for a schema that is not an array".into());
            };
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_json(out, item, &a.items, names)?;
            }
            out.push(']');
        }
        Avro::Map(m) => {
            let Schema::Map(ms) = schema else {
                return Err("a map value for a schema that is not a map".into());
            };
            // Sorted, so that the same map always prints the same.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (n, k) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                push_json_string(out, k);
                out.push(':');
                write_json(out, &m[k], &ms.types, names)?;
            }
            out.push('}');
        }
        Avro::Record(fields) => {
            let Schema::Record(r) = schema else {
                return Err("a record value for a schema that is not a record".into());
            };
            out.push('{');
            for (n, (name, fv)) in fields.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                let field = r
                    .lookup
                    .get(name)
                    .and_then(|i| r.fields.get(*i))
                    .ok_or_else(|| format!("field `{name}` is not in the schema"))?;
                push_json_string(out, name);
                out.push(':');
                write_json(out, fv, &field.schema, names)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn float_of(j: &Json) -> Option<f64> {
    match j {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// The Avro value `j` stands for under `schema`; errors name the place (`$.address.zip`) and what was
/// expected.
pub fn from_json(j: &Json, schema: &Schema, names: &Names) -> Result<Avro, String> {
    convert(j, schema, names, "$")
}

fn convert(j: &Json, schema: &Schema, names: &Names, at: &str) -> Result<Avro, String> {
    let schema = names.resolve(schema)?;
    let expected = |what: &str| format!("{at}: expected {what}, got {}", kind(j));
    let int = || -> Result<i32, String> {
        j.as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| expected("an int (32 bits)"))
    };
    let long = || {
        j.as_i64()
            .ok_or_else(|| expected("a long (64-bit integer)"))
    };
    let bytes = || match j {
        Json::String(s) => text_bytes(s, at),
        _ => Err(expected("bytes (a string, one character per byte)")),
    };
    let fixed = |size: usize| -> Result<Vec<u8>, String> {
        let b = bytes()?;
        if b.len() == size {
            Ok(b)
        } else {
            Err(format!("{at}: expected {size} bytes, got {}", b.len()))
        }
    };
    Ok(match schema {
        Schema::Null => match j {
            Json::Null => Avro::Null,
            _ => return Err(expected("null")),
        },
        Schema::Boolean => Avro::Boolean(j.as_bool().ok_or_else(|| expected("a boolean"))?),
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
        Schema::Float => Avro::Float(float_of(j).ok_or_else(|| expected("a float"))? as f32),
        Schema::Double => Avro::Double(float_of(j).ok_or_else(|| expected("a double"))?),
        Schema::Bytes => Avro::Bytes(bytes()?),
        Schema::BigDecimal => return Err(format!("{at}: big-decimal values are not supported")),
        Schema::String => match j {
            Json::String(s) => Avro::String(s.clone()),
            _ => return Err(expected("a string")),
        },
        Schema::Uuid(UuidSchema::String) => match j {
            Json::String(s) => Avro::Uuid(
                apache_avro::Uuid::parse_str(s).map_err(|e| format!("{at}: not a UUID ({e})"))?,
            ),
            _ => return Err(expected("a UUID string")),
        },
        Schema::Uuid(UuidSchema::Bytes) => Avro::Bytes(fixed(16)?),
        Schema::Uuid(UuidSchema::Fixed(f)) => Avro::Fixed(f.size, fixed(f.size)?),
        Schema::Fixed(f) => Avro::Fixed(f.size, fixed(f.size)?),
        Schema::Duration(_) => Avro::Fixed(12, fixed(12)?),
        Schema::Decimal(d) => {
            let b = match &d.inner {
                InnerDecimalSchema::Bytes => bytes()?,
                InnerDecimalSchema::Fixed(f) => fixed(f.size)?,
            };
            Avro::Decimal(apache_avro::Decimal::from(b))
        }
        Schema::Enum(e) => match j {
            Json::String(s) => match e.symbols.iter().position(|x| x == s) {
                Some(i) => Avro::Enum(i as u32, s.clone()),
                None => {
                    return Err(format!(
                        "{at}: `{s}` is not a symbol of enum {} ({})",
                        e.name.fullname(None),
                        e.symbols.join(", ")
                    ))
                }
            },
            _ => return Err(expected("an enum symbol (a string)")),
        },
        Schema::Array(a) => match j {
            Json::Array(items) => Avro::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| convert(item, &a.items, names, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(expected("an array")),
        },
        Schema::Map(m) => match j {
            Json::Object(o) => Avro::Map(
                o.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            convert(v, &m.types, names, &format!("{at}.{k}"))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err(expected("an object (a map)")),
        },
        Schema::Record(r) => {
            let Json::Object(o) = j else {
                return Err(expected(&format!(
                    "an object (record {})",
                    r.name.fullname(None)
                )));
            };
            if let Some(unknown) = o.keys().find(|k| !r.lookup.contains_key(*k)) {
                return Err(format!(
                    "{at}: record {} has no field `{unknown}` (its fields: {})",
                    r.name.fullname(None),
                    r.fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let path = format!("{at}.{}", f.name);
                let v = match (o.get(&f.name), &f.default) {
                    (Some(v), _) => convert(v, &f.schema, names, &path)?,
                    (None, Some(d)) => convert(d, &f.schema, names, &path)
                        .map_err(|e| format!("{e} (the field's default)"))?,
                    (None, None) => {
                        return Err(format!("{path}: missing, and the field has no default"))
                    }
                };
                fields.push((f.name.clone(), v));
            }
            Avro::Record(fields)
        }
        Schema::Union(u) => {
            let variants = u.variants();
            // Avro's JSON encoding: null, or {"branch": value}.
            if let Json::Null = j {
                return match variants.iter().position(|v| matches!(v, Schema::Null)) {
                    Some(i) => Ok(Avro::Union(i as u32, Box::new(Avro::Null))),
                    None => Err(format!(
                        "{at}: null is not allowed here (the union has no null)"
                    )),
                };
            }
            if let Json::Object(o) = j {
                if o.len() == 1 {
                    let (k, v) = o.iter().next().ok_or("an empty object")?;
                    if let Some(i) = variants.iter().position(|s| branch_name(s, names) == *k) {
                        return Ok(Avro::Union(
                            i as u32,
                            Box::new(convert(v, &variants[i], names, &format!("{at}.{k}"))?),
                        ));
                    }
                }
            }
            // Plain JSON: the first branch the value fits.
            let mut why = Vec::new();
            for (i, s) in variants.iter().enumerate() {
                if matches!(s, Schema::Null) {
                    continue;
                }
                match convert(j, s, names, at) {
                    Ok(v) => return Ok(Avro::Union(i as u32, Box::new(v))),
                    Err(e) => why.push(e),
                }
            }
            return Err(format!(
                "{at}: fits no branch of the union [{}] (as Avro JSON, write {{\"BRANCH\": value}}): {}",
                variants.iter().map(|s| branch_name(s, names)).collect::<Vec<_>>().join(", "),
                why.join("; ")
            ));
        }
        Schema::Ref { .. } => return Err(format!("{at}: an unresolved type reference")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(s: &str) -> Schema {
        Schema::parse_str(s).unwrap()
    }

    fn round_trip(s: &Schema, input: &str) -> String {
        let names = Names::of(&[s]);
        let v = from_json(&serde_json::from_str(input).unwrap(), s, &names).unwrap();
        let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(s)
            .build()
            .unwrap()
            .write_value_to_vec(v)
            .unwrap();
        let back = apache_avro::reader::datum::GenericDatumReader::builder(s)
            .build()
            .unwrap()
            .read_value(&mut &bytes[..])
            .unwrap();
        to_json(&back, s, &names).unwrap()
    }

    #[test]
    fn records_with_unions_enums_maps_and_bytes_round_trip_in_avro_json() {
        let s = schema(
            r#"{"type":"record","name":"P","namespace":"n","fields":[
                {"name":"id","type":"long"},
                {"name":"note","type":["null","string"],"default":null},
                {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
                {"name":"tags","type":{"type":"map","values":"int"}},
                {"name":"raw","type":"bytes"},
                {"name":"next","type":["null","P"],"default":null},
                {"name":"price","type":"double"}]}"#,
        );
        // Plain JSON in, Avro JSON (wrapped unions, fields in schema order) out.
        let out = round_trip(
            &s,
            r#"{"price":1.5,"id":7,"note":"hi","kind":"B","tags":{"b":2,"a":1},"raw":"\u0000\u00ff",
               "next":{"id":8,"kind":"A","tags":{},"raw":"","price":0}}"#,
        );
        assert_eq!(
            out,
            r#"{"id":7,"note":{"string":"hi"},"kind":"B","tags":{"a":1,"b":2},"raw":"\u0000ÿ","next":{"n.P":{"id":8,"note":null,"kind":"A","tags":{},"raw":"","next":null,"price":0.0}},"price":1.5}"#
        );
        // Its own output is accepted as input.
        assert_eq!(round_trip(&s, &out), out);
    }

    #[test]
    fn bad_values_name_the_place_and_what_was_expected() {
        let s = schema(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},
                {"name":"b","type":{"type":"array","items":"string"}}]}"#,
        );
        let names = Names::of(&[&s]);
        let err = |j: &str| from_json(&serde_json::from_str(j).unwrap(), &s, &names).unwrap_err();
        assert!(
            err(r#"{"a":"x","b":[]}"#).contains("$.a: expected an int"),
            "{}",
            err(r#"{"a":"x","b":[]}"#)
        );
        assert!(err(r#"{"a":1,"b":[1]}"#).contains("$.b[0]: expected a string"));
        assert!(err(r#"{"a":1}"#).contains("$.b: missing"));
        assert!(err(r#"{"a":1,"b":[],"c":1}"#).contains("no field `c`"));
        assert!(err(r#"{"a":4294967296,"b":[]}"#).contains("32 bits"));
        assert!(err("[1]").contains("expected an object"));
    }

    #[test]
    fn logical_types_print_as_their_underlying_values() {
        let s = schema(
            r#"{"type":"record","name":"L","fields":[
                {"name":"d","type":{"type":"int","logicalType":"date"}},
                {"name":"t","type":["null",{"type":"long","logicalType":"timestamp-millis"}]},
                {"name":"u","type":{"type":"string","logicalType":"uuid"}}]}"#,
        );
        let out = round_trip(
            &s,
            r#"{"d":19000,"t":{"long":1700000000000},"u":"67e55044-10b1-426f-9247-bb680e5fe0c8"}"#,
        );
        assert_eq!(
            out,
            r#"{"d":19000,"t":{"long":1700000000000},"u":"67e55044-10b1-426f-9247-bb680e5fe0c8"}"#
        );
    }
}
