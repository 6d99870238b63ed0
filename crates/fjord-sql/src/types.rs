//! SQL types and values (ksqlDB's type system: BOOLEAN, INT, BIGINT, DOUBLE, DECIMAL, STRING, BYTES, TIMESTAMP,
//! DATE, TIME, ARRAY, MAP, STRUCT).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Boolean,
    Int,
    Bigint,
    Double,
    /// Precision and scale. Values are held as a double rounded to the scale (see the README).
    Decimal(u8, u8),
    String,
    Bytes,
    /// Milliseconds since the epoch, UTC.
    Timestamp,
    /// Days since the epoch.
    Date,
    /// Milliseconds since midnight.
    Time,
    Array(Box<SqlType>),
    Map(Box<SqlType>, Box<SqlType>),
    Struct(Vec<(String, SqlType)>),
}

impl SqlType {
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::Decimal(..)
        )
    }

    /// The wider of two numeric types (INT < BIGINT < DECIMAL < DOUBLE), as arithmetic promotes.
    pub fn widen(a: &SqlType, b: &SqlType) -> Option<SqlType> {
        fn rank(t: &SqlType) -> Option<u8> {
            match t {
                SqlType::Int => Some(0),
                SqlType::Bigint => Some(1),
                SqlType::Decimal(..) => Some(2),
                SqlType::Double => Some(3),
                _ => None,
            }
        }
        let (ra, rb) = (rank(a)?, rank(b)?);
        Some(if ra >= rb { a.clone() } else { b.clone() })
    }

    /// Whether values of `self` and `other` can be compared with `=`, `<`, ...
    pub fn comparable(&self, other: &SqlType) -> bool {
        (self.is_numeric() && other.is_numeric())
            || self == other
            || matches!(
                (self, other),
                (SqlType::String, SqlType::Timestamp) | (SqlType::Timestamp, SqlType::String)
            )
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => write!(f, "BOOLEAN"),
            SqlType::Int => write!(f, "INTEGER"),
            SqlType::Bigint => write!(f, "BIGINT"),
            SqlType::Double => write!(f, "DOUBLE"),
            SqlType::Decimal(p, s) => write!(f, "DECIMAL({p}, {s})"),
            SqlType::String => write!(f, "STRING"),
            SqlType::Bytes => write!(f, "BYTES"),
            SqlType::Timestamp => write!(f, "TIMESTAMP"),
            SqlType::Date => write!(f, "DATE"),
            SqlType::Time => write!(f, "TIME"),
            SqlType::Array(t) => write!(f, "ARRAY<{t}>"),
            SqlType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
            SqlType::Struct(fields) => {
                write!(f, "STRUCT<")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "`{n}` {t}")?;
                }
                write!(f, ">")
            }
        }
    }
}

/// One value of a row. NULL is a value of every type.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i32),
    Bigint(i64),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
    Timestamp(i64),
    Date(i32),
    Time(i64),
    Array(Vec<Value>),
    /// Keys in insertion order (JSON objects keep theirs).
    Map(Vec<(Value, Value)>),
    /// Field names are shared (`Arc<str>`): a row of many STRUCTs, an array of them, names each field once.
    Struct(Vec<(Arc<str>, Value)>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(f64::from(*i)),
            Value::Bigint(i) | Value::Timestamp(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(i64::from(*i)),
            Value::Bigint(i) | Value::Timestamp(i) | Value::Time(i) => Some(*i),
            Value::Date(d) => Some(i64::from(*d)),
            _ => None,
        }
    }

    /// The value as JSON, as ksqlDB writes it (TIMESTAMP as milliseconds, DATE as days, BYTES as base64-less
    /// arrays are not JSON: bytes are written as a string of hex pairs).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Bigint(i) | Value::Timestamp(i) | Value::Time(i) => J::from(*i),
            Value::Date(d) => J::from(*d),
            Value::Double(d) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.to_text(), v.to_json())).collect()),
            Value::Struct(fields) => J::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The value as text (strings unquoted), for DELIMITED output, map keys and the shell.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Bigint(i) | Value::Timestamp(i) | Value::Time(i) => i.to_string(),
            Value::Date(d) => d.to_string(),
            Value::Double(d) => d.to_string(),
            other => other.to_json().to_string(),
        }
    }

    /// Converts JSON (as read from a record) to a value of type `ty`; a JSON value of the wrong shape is an
    /// error naming what was expected.
    pub fn from_json(j: &serde_json::Value, ty: &SqlType) -> Result<Value, String> {
        use serde_json::Value as J;
        if j.is_null() {
            return Ok(Value::Null);
        }
        let bad = || format!("expected {ty}, found {j}");
        Ok(match ty {
            SqlType::Boolean => match j {
                J::Bool(b) => Value::Bool(*b),
                J::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
                J::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
                _ => return Err(bad()),
            },
            SqlType::Int => match j {
                J::Number(n) => Value::Int(
                    n.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(bad)?,
                ),
                J::String(s) => Value::Int(s.trim().parse().map_err(|_| bad())?),
                _ => return Err(bad()),
            },
            SqlType::Bigint | SqlType::Timestamp | SqlType::Time => {
                let i = match j {
                    J::Number(n) => n.as_i64().ok_or_else(bad)?,
                    J::String(s) => s.trim().parse().map_err(|_| bad())?,
                    _ => return Err(bad()),
                };
                match ty {
                    SqlType::Timestamp => Value::Timestamp(i),
                    SqlType::Time => Value::Time(i),
                    _ => Value::Bigint(i),
                }
            }
            SqlType::Date => match j {
                J::Number(n) => Value::Date(
                    n.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(bad)?,
                ),
                _ => return Err(bad()),
            },
            SqlType::Double => match j {
                J::Number(n) => Value::Double(n.as_f64().ok_or_else(bad)?),
                J::String(s) => Value::Double(s.trim().parse().map_err(|_| bad())?),
                _ => return Err(bad()),
            },
            SqlType::Decimal(_, scale) => {
                let d = match j {
                    J::Number(n) => n.as_f64().ok_or_else(bad)?,
                    J::String(s) => s.trim().parse().map_err(|_| bad())?,
                    _ => return Err(bad()),
                };
                Value::Double(round_to(d, i32::from(*scale)))
            }
            SqlType::String => match j {
                J::String(s) => Value::String(s.clone()),
                // ksqlDB reads any JSON into a STRING column as its text.
                other => Value::String(other.to_string()),
            },
            SqlType::Bytes => match j {
                J::String(s) => Value::Bytes(s.as_bytes().to_vec()),
                _ => return Err(bad()),
            },
            SqlType::Array(t) => match j {
                J::Array(a) => Value::Array(
                    a.iter()
                        .map(|x| Value::from_json(x, t))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(bad()),
            },
            SqlType::Map(k, v) => match j {
                J::Object(o) => Value::Map(
                    o.iter()
                        .map(|(key, val)| {
                            Ok((
                                Value::from_json(&J::String(key.clone()), k)?,
                                Value::from_json(val, v)?,
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                ),
                _ => return Err(bad()),
            },
            SqlType::Struct(fields) => match j {
                J::Object(o) => Value::Struct(
                    fields
                        .iter()
                        .map(|(name, t)| {
                            let v = lookup_ci(o, name).unwrap_or(&J::Null);
                            Ok((name.as_str().into(), Value::from_json(v, t)?))
                        })
                        .collect::<Result<_, String>>()?,
                ),
                _ => return Err(bad()),
            },
        })
    }

    /// Parses text (a DELIMITED field, a KAFKA-format key) as a value of type `ty`; empty text is NULL.
    pub fn from_text(s: &str, ty: &SqlType) -> Result<Value, String> {
        if s.is_empty() && *ty != SqlType::String {
            return Ok(Value::Null);
        }
        match ty {
            SqlType::String => Ok(Value::String(s.to_string())),
            SqlType::Bytes => Ok(Value::Bytes(s.as_bytes().to_vec())),
            SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_) => {
                let j: serde_json::Value = serde_json::from_str(s)
                    .map_err(|_| format!("expected {ty} as JSON, found `{s}`"))?;
                Value::from_json(&j, ty)
            }
            _ => Value::from_json(&serde_json::Value::String(s.to_string()), ty),
        }
    }
}

/// ksqlDB matches JSON field names case-insensitively (column names are upper case, JSON's usually not).
pub fn lookup_ci<'a>(
    o: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    o.get(name).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

pub fn round_to(d: f64, scale: i32) -> f64 {
    let m = 10f64.powi(scale);
    (d * m).round() / m
}
