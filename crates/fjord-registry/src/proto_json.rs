//! Protobuf for the console tools and the dashboard: compiling a `.proto` schema (text, or a base64 `FileDescriptorProto` as
//! Confluent's serializers register) with the registry's compile (`protox`, imports served from the schema's
//! references and google/protobuf's well-known types); Confluent's message-index array; and JSON in and out
//! through `prost-reflect`'s serde support (the proto3 JSON mapping, as Confluent's console tools print it).

use prost_reflect::prost::Message as _;
use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor};
use serde_json::Value;

/// At most this many message indexes (nesting levels) are read from a record.
const MAX_INDEXES: usize = 64;

/// A compiled schema file.
pub struct ProtoSchema {
    file: FileDescriptor,
}

impl ProtoSchema {
    /// Compiles `text`; `referenced` are (import name, schema text) of every schema its imports reach. The
    /// registry's own compile (`crate::protobuf::compile_schema`): what the registry accepts, the
    /// console tools read alike.
    pub fn compile(text: &str, referenced: &[(String, String)]) -> Result<ProtoSchema, String> {
        let compiled = crate::protobuf::compile_schema(text, referenced)?;
        let file = compiled
            .pool
            .get_file_by_name(&compiled.file_name)
            .ok_or("the schema compiled to no file")?;
        Ok(ProtoSchema { file })
    }

    /// The message `name` (full name, or a name unique in the file), or the file's first message (what
    /// Confluent's tools use when no message is named); with its message-index path.
    pub fn message(&self, name: Option<&str>) -> Result<(MessageDescriptor, Vec<i32>), String> {
        let mut all = Vec::new();
        for (i, m) in self.file.messages().enumerate() {
            collect(m, vec![i as i32], &mut all);
        }
        let Some(name) = name else {
            all.retain(|(m, _)| !m.is_map_entry());
            return all
                .into_iter()
                .next()
                .ok_or_else(|| "the schema defines no message".to_string());
        };
        let package = self.file.package_name();
        all.retain(|(m, _)| !m.is_map_entry());
        let found: Vec<_> = all
            .iter()
            .filter(|(m, _)| {
                m.full_name() == name
                    || m.full_name()
                        .strip_prefix(package)
                        .map(|r| r.trim_start_matches('.'))
                        == Some(name)
                    || m.name() == name
            })
            .collect();
        match found.as_slice() {
            [(m, path)] => Ok((m.clone(), path.clone())),
            [] => Err(format!(
                "the schema has no message {name} (it has {})",
                all.iter()
                    .map(|(m, _)| m.full_name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "{name} names several messages of the schema; give the full name"
            )),
        }
    }

    /// The compiled file (its pool holds every message the schema reaches, imports included).
    pub fn file(&self) -> &FileDescriptor {
        &self.file
    }

    /// The message a record's index path names.
    pub fn message_at(&self, path: &[i32]) -> Result<MessageDescriptor, String> {
        let bad = || format!("the record's message indexes {path:?} name no message of its schema");
        let (first, rest) = path.split_first().ok_or_else(bad)?;
        let mut m = self
            .file
            .messages()
            .nth(usize::try_from(*first).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        for i in rest {
            let child = m
                .child_messages()
                .nth(usize::try_from(*i).map_err(|_| bad())?)
                .ok_or_else(bad)?;
            m = child;
        }
        Ok(m)
    }
}

/// Every message with its index path. Map entries count as nested types (they are in the descriptor, and
/// Confluent's indexes count them) but are never chosen by name.
fn collect(m: MessageDescriptor, path: Vec<i32>, out: &mut Vec<(MessageDescriptor, Vec<i32>)>) {
    let children: Vec<_> = m.child_messages().collect();
    out.push((m, path.clone()));
    for (i, c) in children.into_iter().enumerate() {
        let mut p = path.clone();
        p.push(i as i32);
        collect(c, p, out);
    }
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

/// Confluent's message-index array: the count then each index, as zigzag varints; the first message ([0])
/// is the single byte 0.
pub fn write_indexes(path: &[i32], out: &mut Vec<u8>) {
    if path == [0] {
        out.push(0);
        return;
    }
    put_varint(zigzag(path.len() as i32), out);
    for i in path {
        put_varint(zigzag(*i), out);
    }
}

fn read_varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b
            .split_first()
            .ok_or("the message indexes end early (not written by a Protobuf serializer?)")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a message index is not a varint".into())
}

fn read_zigzag(b: &mut &[u8]) -> Result<i32, String> {
    let v = read_varint(b)?;
    let v = u32::try_from(v).map_err(|_| "a message index is too large".to_string())?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Reads the message-index array at the start of `b` (moving past it).
pub fn read_indexes(b: &mut &[u8]) -> Result<Vec<i32>, String> {
    let n = read_zigzag(b)?;
    if n == 0 {
        return Ok(vec![0]);
    }
    let n = usize::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_INDEXES)
        .ok_or_else(|| format!("{n} message indexes (at most {MAX_INDEXES})"))?;
    (0..n).map(|_| read_zigzag(b)).collect()
}

/// `j` (the proto3 JSON mapping; proto field names are accepted too) as the message's binary encoding.
pub fn from_json(m: &MessageDescriptor, j: &Value) -> Result<Vec<u8>, String> {
    let msg = DynamicMessage::deserialize(m.clone(), j)
        .map_err(|e| format!("does not fit the message {}: {e}", m.full_name()))?;
    Ok(msg.encode_to_vec())
}

/// The message in `body` as JSON text (the proto3 JSON mapping: lowerCamelCase names, default values left
/// out, 64-bit integers as strings), as Confluent's console consumer prints it.
pub fn to_json(m: &MessageDescriptor, body: &[u8]) -> Result<String, String> {
    let msg = decode(m, body)?;
    serde_json::to_string(&msg).map_err(|e| e.to_string())
}

/// The message in `body` (prost's bounds: nesting at most 100 deep; what a length claims must be there).
pub fn decode(m: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, String> {
    DynamicMessage::decode(m.clone(), body).map_err(|e| {
        format!(
            "the Protobuf body does not decode as {}: {e}",
            m.full_name()
        )
    })
}

/// The order of a map's keys (a map's entries have none): numbers by value, strings by text, so that the same
/// map always maps to the same value (Connect's and SQL's mappings share it).
pub fn key_order(k: &prost_reflect::MapKey) -> (i128, &str) {
    use prost_reflect::MapKey;
    match k {
        MapKey::Bool(b) => (i128::from(*b), ""),
        MapKey::I32(i) => (i128::from(*i), ""),
        MapKey::I64(i) => (i128::from(*i), ""),
        MapKey::U32(i) => (i128::from(*i), ""),
        MapKey::U64(i) => (i128::from(*i), ""),
        MapKey::String(s) => (0, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHOP: &str = r#"syntax = "proto3";
package shop;
message Header { string source = 1; }
message Order {
  string id = 1;
  int64 units = 2;
  repeated string tags = 3;
  message Line { string sku = 1; }
  repeated Line lines = 4;
}
"#;

    #[test]
    fn message_indexes_follow_confluents_encoding() {
        for path in [vec![0], vec![1], vec![1, 0], vec![3, 2, 70]] {
            let mut out = Vec::new();
            write_indexes(&path, &mut out);
            let mut b = out.as_slice();
            assert_eq!(read_indexes(&mut b).unwrap(), path);
            assert!(b.is_empty());
        }
        let mut out = Vec::new();
        write_indexes(&[0], &mut out);
        assert_eq!(out, vec![0]);
        out.clear();
        write_indexes(&[1], &mut out);
        // Count 1 and index 1, zigzag: 2, 2.
        assert_eq!(out, vec![2, 2]);
        assert!(read_indexes(&mut [0x80u8].as_slice()).is_err());
        assert!(read_indexes(&mut [0xfeu8, 0x01].as_slice()).is_err());
    }

    #[test]
    fn messages_are_found_by_name_or_first_and_round_trip_through_json() {
        let s = ProtoSchema::compile(SHOP, &[]).unwrap();
        let (first, path) = s.message(None).unwrap();
        assert_eq!((first.full_name(), path), ("shop.Header", vec![0]));
        let (order, path) = s.message(Some("shop.Order")).unwrap();
        assert_eq!(path, vec![1]);
        assert_eq!(s.message(Some("Order")).unwrap().1, vec![1]);
        assert_eq!(s.message(Some("Order.Line")).unwrap().1, vec![1, 0]);
        assert_eq!(
            s.message_at(&[1, 0]).unwrap().full_name(),
            "shop.Order.Line"
        );
        assert!(s.message_at(&[2]).is_err());
        assert!(s.message(Some("Nope")).unwrap_err().contains("shop.Order"));
        let body = from_json(
            &order,
            &json!({"id": "o-1", "units": 1250, "tags": ["a"], "lines": [{"sku": "x"}]}),
        )
        .unwrap();
        let back: Value = serde_json::from_str(&to_json(&order, &body).unwrap()).unwrap();
        assert_eq!(
            back,
            json!({"id": "o-1", "units": "1250", "tags": ["a"], "lines": [{"sku": "x"}]})
        );
        let e = from_json(&order, &json!({"id": 7})).unwrap_err();
        assert!(e.contains("shop.Order"), "{e}");
        assert!(ProtoSchema::compile("message {", &[]).is_err());
    }
}
