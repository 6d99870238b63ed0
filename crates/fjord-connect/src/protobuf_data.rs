//! Protobuf messages to Connect data, as Confluent's `ProtobufConverter` (its `ProtobufData`) maps them for sinks:
//! a message is a struct named after the message (its simple name), its real `oneof`s first, each an optional
//! struct field `<oneof>_<index>` named `io.confluent.connect.protobuf.Union.<oneof>`, then its other fields in
//! declaration order under their proto names. Every field is optional and carries its tag number in the parameter
//! `io.confluent.connect.protobuf.Tag`. int32/sint32/sfixed32 are int32; uint32, fixed32 and the 64-bit integers
//! int64 (uint64 and fixed64 as Java's long, so values past 2^63 wrap); float, double, bool, string and bytes the
//! same; an enum a string (the symbol) named after the enum with its symbols in parameters; `repeated` an array of
//! optional items; a `map` a map (in JsonConverter's value form: an object when the keys are strings, else
//! `[key, value]` pairs); `google.protobuf.Timestamp` Connect's Timestamp (milliseconds). Scalars that are not set
//! are their default (proto3 cannot tell), a message field that is not set is null.
//!
//! The schema walk is bounded: a message that contains itself is refused (Connect schemas are trees), as are
//! messages nested deeper than 64 or expanding to more than 10,000 types (the limits of the shared Avro check,
//! `fjord_registry::wire`); the converter maps a record's schema before its value. The value walk follows the
//! decoded message, whose nesting prost bounds at 100; it is bounded too ([`value_budget`]), since every message
//! in the record, even an empty one of 2 bytes, becomes a value for each of its fields (unset ones as defaults).

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage,
    Value as Proto,
};
use serde_json::{json, Map, Value};

use fjord_registry::wire::{MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES};

const TAG: &str = "io.confluent.connect.protobuf.Tag";
const ENUM: &str = "io.confluent.connect.protobuf.Enum";
const UNION: &str = "io.confluent.connect.protobuf.Union";
const TIMESTAMP: &str = "google.protobuf.Timestamp";
const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";

/// The Connect schema (JsonConverter's JSON form) of a message, or why it has none.
pub fn connect_schema(m: &MessageDescriptor) -> Result<Value, String> {
    let mut walk = Walk {
        open: Vec::new(),
        budget: MAX_SCHEMA_NODES,
    };
    walk.message(m, 0, false)
}

struct Walk {
    /// The messages being expanded, outermost first: one met again contains itself.
    open: Vec<String>,
    budget: usize,
}

impl Walk {
    fn step(&mut self, depth: usize) -> Result<(), String> {
        if self.budget == 0 {
            return Err(format!(
                "the Protobuf schema expands to more than {MAX_SCHEMA_NODES} types, which this converter does not map"
            ));
        }
        self.budget -= 1;
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the Protobuf schema nests messages more than {MAX_SCHEMA_DEPTH} deep, which this converter does not map"
            ));
        }
        Ok(())
    }

    fn message(
        &mut self,
        m: &MessageDescriptor,
        depth: usize,
        optional: bool,
    ) -> Result<Value, String> {
        self.step(depth)?;
        let full = m.full_name().to_string();
        if self.open.contains(&full) {
            return Err(format!(
                "the Protobuf schema is recursive (message {full} contains itself), which Kafka Connect cannot map to a Connect schema"
            ));
        }
        self.open.push(full);
        let mut fields = Vec::new();
        for (i, oneof) in m.oneofs().filter(|o| !o.is_synthetic()).enumerate() {
            let mut members = Vec::new();
            for f in oneof.fields() {
                let mut s = self.field(&f, depth + 1)?;
                s["field"] = json!(f.name());
                members.push(s);
            }
            fields.push(json!({"type": "struct", "fields": members, "optional": true,
                "name": format!("{UNION}.{}", oneof.name()), "field": format!("{}_{i}", oneof.name())}));
        }
        for f in m.fields().filter(|f| real_oneof(f).is_none()) {
            let mut s = self.field(&f, depth + 1)?;
            s["field"] = json!(f.name());
            fields.push(s);
        }
        self.open.pop();
        Ok(json!({"type": "struct", "fields": fields, "optional": optional, "name": m.name()}))
    }

    fn field(&mut self, f: &FieldDescriptor, depth: usize) -> Result<Value, String> {
        self.step(depth)?;
        let mut s = if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                return Err(format!("map field {} has no entry message", f.name()));
            };
            let key = self.field(&entry.map_entry_key_field(), depth + 1)?;
            let value = self.field(&entry.map_entry_value_field(), depth + 1)?;
            json!({"type": "map", "keys": key, "values": value, "optional": true})
        } else {
            let item = self.single(f, depth)?;
            if f.is_list() {
                json!({"type": "array", "items": item, "optional": true})
            } else {
                item
            }
        };
        s["parameters"] = merged(s.get("parameters"), TAG, &f.number().to_string());
        Ok(s)
    }

    /// The schema of one value of `f` (an item when it is repeated).
    fn single(&mut self, f: &FieldDescriptor, depth: usize) -> Result<Value, String> {
        let prim = |t: &str| json!({"type": t, "optional": true});
        Ok(match f.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => prim("int32"),
            Kind::Uint32
            | Kind::Fixed32
            | Kind::Int64
            | Kind::Uint64
            | Kind::Sint64
            | Kind::Fixed64
            | Kind::Sfixed64 => prim("int64"),
            Kind::Float => prim("float"),
            Kind::Double => prim("double"),
            Kind::Bool => prim("boolean"),
            Kind::String => prim("string"),
            Kind::Bytes => prim("bytes"),
            Kind::Enum(e) => {
                let mut parameters = Map::new();
                parameters.insert(ENUM.into(), json!(e.name()));
                for v in e.values() {
                    parameters.insert(
                        format!("{ENUM}.{}", v.name()),
                        json!(v.number().to_string()),
                    );
                }
                json!({"type": "string", "optional": true, "name": e.name(), "parameters": parameters})
            }
            Kind::Message(m) if m.full_name() == TIMESTAMP => {
                json!({"type": "int64", "optional": true, "name": CONNECT_TIMESTAMP, "version": 1})
            }
            Kind::Message(m) => self.message(&m, depth + 1, true)?,
        })
    }
}

fn merged(parameters: Option<&Value>, key: &str, value: &str) -> Value {
    let mut p = parameters
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    p.insert(key.into(), json!(value));
    Value::Object(p)
}

/// The oneof a field belongs to, unless it is the synthetic one of a proto3 `optional` field.
fn real_oneof(f: &FieldDescriptor) -> Option<prost_reflect::OneofDescriptor> {
    f.containing_oneof().filter(|o| !o.is_synthetic())
}

/// Most Connect values one record of `body_len` bytes may become: the budget SQL's PROTOBUF rows share
/// ([`fjord_registry::wire::protobuf_value_budget`]).
pub use fjord_registry::wire::protobuf_value_budget as value_budget;

/// A decoded message as the Connect value of [`connect_schema`]'s struct, in at most `budget` values (else an
/// error: a record whose empty messages expand into more values than it can stand for).
pub fn connect_value(msg: &DynamicMessage, budget: usize) -> Result<Value, String> {
    let mut left = budget;
    message_value(msg, &mut left).map_err(|e| {
        if left == 0 {
            format!("the record expands into more than {budget} Connect values (its messages' unset fields are written as defaults); it is refused as a hostile or corrupt record")
        } else {
            e
        }
    })
}

/// Takes one value from the budget.
fn spend(left: &mut usize) -> Result<(), String> {
    if *left == 0 {
        return Err("over the value budget".into());
    }
    *left -= 1;
    Ok(())
}

fn message_value(msg: &DynamicMessage, left: &mut usize) -> Result<Value, String> {
    spend(left)?;
    let m = msg.descriptor();
    let mut out = Map::new();
    for (i, oneof) in m.oneofs().filter(|o| !o.is_synthetic()).enumerate() {
        let set = oneof.fields().find(|f| msg.has_field(f));
        let union = match set {
            None => Value::Null,
            Some(f) => {
                let mut u = Map::new();
                for member in oneof.fields() {
                    spend(left)?;
                    let v = if member.number() == f.number() {
                        field_value(&f, &msg.get_field(&f), left)?
                    } else {
                        Value::Null
                    };
                    u.insert(member.name().to_string(), v);
                }
                Value::Object(u)
            }
        };
        out.insert(format!("{}_{i}", oneof.name()), union);
    }
    for f in m.fields().filter(|f| real_oneof(f).is_none()) {
        // A message field (and a proto3 `optional` one) that is not set is null; other scalars are their
        // default, as proto3 reads them.
        let unset = !f.is_list() && !f.is_map() && f.supports_presence() && !msg.has_field(&f);
        spend(left)?;
        let v = if unset {
            Value::Null
        } else {
            field_value(&f, &msg.get_field(&f), left)?
        };
        out.insert(f.name().to_string(), v);
    }
    Ok(Value::Object(out))
}

fn field_value(f: &FieldDescriptor, v: &Proto, left: &mut usize) -> Result<Value, String> {
    match v {
        Proto::List(items) => items
            .iter()
            .map(|i| {
                spend(left)?;
                single_value(f, i, left)
            })
            .collect(),
        Proto::Map(entries) => {
            let Kind::Message(entry) = f.kind() else {
                return Err(format!("map field {} has no entry message", f.name()));
            };
            let value_field = entry.map_entry_value_field();
            let mut pairs: Vec<(&MapKey, &Proto)> = entries.iter().collect();
            pairs.sort_by(|a, b| key_order(a.0).cmp(&key_order(b.0)));
            if matches!(entry.map_entry_key_field().kind(), Kind::String) {
                let mut out = Map::new();
                for (k, v) in pairs {
                    let MapKey::String(k) = k else {
                        return Err("a map key that is not a string".into());
                    };
                    spend(left)?;
                    out.insert(k.clone(), single_value(&value_field, v, left)?);
                }
                Ok(Value::Object(out))
            } else {
                // JsonConverter's form of a map whose keys are not strings: [key, value] pairs.
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let key = match k {
                            MapKey::Bool(b) => json!(b),
                            MapKey::I32(i) => json!(i),
                            MapKey::I64(i) => json!(i),
                            MapKey::U32(i) => json!(i),
                            MapKey::U64(i) => json!(*i as i64),
                            MapKey::String(s) => json!(s),
                        };
                        spend(left)?;
                        Ok(json!([key, single_value(&value_field, v, left)?]))
                    })
                    .collect()
            }
        }
        other => single_value(f, other, left),
    }
}

/// Map keys in order (a map's entries have none; its Connect value is written in key order, so that the same
/// record always gives the same line).
use fjord_registry::proto_json::key_order;

fn single_value(f: &FieldDescriptor, v: &Proto, left: &mut usize) -> Result<Value, String> {
    let finite = |x: f64| {
        serde_json::Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| format!("field {}: {x} has no JSON form", f.name()))
    };
    Ok(match v {
        Proto::Bool(b) => json!(b),
        Proto::I32(i) => json!(i),
        Proto::I64(i) => json!(i),
        Proto::U32(i) => json!(i),
        // Connect has no unsigned 64-bit type; Confluent's converter reads it as Java's long.
        Proto::U64(i) => json!(*i as i64),
        Proto::F32(x) => finite(f64::from(*x))?,
        Proto::F64(x) => finite(*x)?,
        Proto::String(s) => json!(s),
        Proto::Bytes(b) => json!(crate::converter::base64_encode(b)),
        Proto::EnumNumber(n) => {
            let Kind::Enum(e) = f.kind() else {
                return Err(format!(
                    "field {}: an enum value of a field that is not an enum",
                    f.name()
                ));
            };
            match e.get_value(*n) {
                Some(symbol) => json!(symbol.name()),
                // What protobuf-java names a number the enum does not define.
                None => json!(format!("UNKNOWN_ENUM_VALUE_{}_{n}", e.name())),
            }
        }
        Proto::Message(m) if m.descriptor().full_name() == TIMESTAMP => {
            let seconds = m
                .get_field_by_name("seconds")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let nanos = m
                .get_field_by_name("nanos")
                .and_then(|v| v.as_i32())
                .unwrap_or(0);
            let millis = seconds
                .checked_mul(1000)
                .and_then(|ms| ms.checked_add(i64::from(nanos).div_euclid(1_000_000)))
                .ok_or_else(|| format!("field {}: the timestamp is out of range", f.name()))?;
            json!(millis)
        }
        Proto::Message(m) => message_value(m, left)?,
        Proto::List(_) | Proto::Map(_) => {
            return Err(format!(
                "field {}: a list or map where one value belongs",
                f.name()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_registry::proto_json::{self, ProtoSchema};

    const SHOP: &str = r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
enum Color { RED = 0; BLUE = 1; }
message Order {
  string id = 1;
  uint64 big = 2;
  repeated int32 qty = 3;
  map<string, int64> totals = 4;
  Color color = 5;
  google.protobuf.Timestamp at = 6;
  Line line = 7;
  oneof pay { string card = 8; int32 cash = 9; }
  optional string note = 10;
  bytes raw = 11;
  map<int32, string> names = 12;
  message Line { string sku = 1; }
}
"#;

    fn order() -> MessageDescriptor {
        ProtoSchema::compile(SHOP, &[])
            .unwrap()
            .message(Some("shop.Order"))
            .unwrap()
            .0
    }

    fn value_of(m: &MessageDescriptor, j: Value) -> Value {
        let body = proto_json::from_json(m, &j).unwrap();
        connect_value(&proto_json::decode(m, &body).unwrap(), usize::MAX).unwrap()
    }

    #[test]
    fn messages_map_to_structs_as_confluents_converter_maps_them() {
        let m = order();
        let s = connect_schema(&m).unwrap();
        assert_eq!(
            (&s["type"], &s["name"], &s["optional"]),
            (&json!("struct"), &json!("Order"), &json!(false))
        );
        let fields = s["fields"].as_array().unwrap();
        let names: Vec<&str> = fields
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "pay_0", "id", "big", "qty", "totals", "color", "at", "line", "note", "raw",
                "names"
            ]
        );
        let field = |n: &str| fields.iter().find(|f| f["field"] == n).unwrap().clone();
        assert!(fields.iter().all(|f| f["optional"] == true), "{s}");
        assert_eq!(field("id")["parameters"][TAG], "1");
        assert_eq!(field("big")["type"], "int64");
        assert_eq!(field("qty")["type"], "array");
        assert_eq!(field("qty")["items"]["type"], "int32");
        assert_eq!(field("totals")["type"], "map");
        assert_eq!(field("totals")["keys"]["type"], "string");
        assert_eq!(field("totals")["values"]["type"], "int64");
        assert_eq!(field("color")["type"], "string");
        assert_eq!(field("color")["name"], "Color");
        assert_eq!(field("color")["parameters"][ENUM], "Color");
        assert_eq!(
            field("color")["parameters"]["io.confluent.connect.protobuf.Enum.BLUE"],
            "1"
        );
        assert_eq!(field("at")["name"], CONNECT_TIMESTAMP);
        assert_eq!(field("at")["type"], "int64");
        assert_eq!(field("line")["type"], "struct");
        assert_eq!(field("line")["name"], "Line");
        assert_eq!(
            field("pay_0")["name"],
            "io.confluent.connect.protobuf.Union.pay"
        );
        assert_eq!(field("pay_0")["fields"][1]["field"], "cash");
        assert_eq!(field("raw")["type"], "bytes");

        let v = value_of(
            &m,
            json!({"id": "o-1", "big": "18446744073709551615", "qty": [1, 2], "totals": {"b": "5", "a": "-1"},
                "color": "BLUE", "at": "1970-01-01T00:00:01.500Z", "line": {"sku": "x"}, "cash": 7,
                "note": "", "raw": "AP8=", "names": {"2": "two", "1": "one"}}),
        );
        assert_eq!(
            v,
            json!({"pay_0": {"card": null, "cash": 7}, "id": "o-1", "big": -1, "qty": [1, 2],
                "totals": {"a": -1, "b": 5}, "color": "BLUE", "at": 1500, "line": {"sku": "x"},
                "note": "", "raw": "AP8=", "names": [[1, "one"], [2, "two"]]})
        );
        // Nothing set: scalars are their defaults, messages, the oneof and the `optional` field null.
        assert_eq!(
            value_of(&m, json!({})),
            json!({"pay_0": null, "id": "", "big": 0, "qty": [], "totals": {}, "color": "RED", "at": null,
                "line": null, "note": null, "raw": "", "names": []})
        );
    }

    /// 500 empty messages of 2 bytes each, of a type with 200 fields: 1,000 bytes that would become 100,000
    /// values (every unset field written as its default). Refused within the record's budget; a record of the
    /// same type with a few set fields maps as usual.
    #[test]
    fn empty_messages_do_not_expand_a_record_without_bound() {
        let fields: String = (1..=200).map(|i| format!("string f{i} = {i}; ")).collect();
        let text = format!(
            "syntax = \"proto3\";\nmessage Wide {{ {fields} }}\nmessage Outer {{ repeated Wide items = 1; }}\n"
        );
        let schema = ProtoSchema::compile(&text, &[]).unwrap();
        let outer = schema.message(Some("Outer")).unwrap().0;
        let body: Vec<u8> = [0x0a, 0x00].repeat(500);
        let msg = proto_json::decode(&outer, &body).unwrap();
        let e = connect_value(&msg, value_budget(body.len())).unwrap_err();
        assert!(e.contains("more than 74000 Connect values"), "{e}");
        let small: Vec<u8> = [0x0a, 0x00].repeat(3);
        let msg = proto_json::decode(&outer, &small).unwrap();
        let v = connect_value(&msg, value_budget(small.len())).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 3);
        assert_eq!(v["items"][2]["f200"], "");
        assert_eq!(value_budget(usize::MAX), 2_000_000);
    }

    #[test]
    fn recursive_and_exponential_messages_are_refused() {
        let node = ProtoSchema::compile(
            "syntax = \"proto3\";\nmessage Node { string v = 1; Node next = 2; }\n",
            &[],
        )
        .unwrap();
        let e = connect_schema(&node.message(None).unwrap().0).unwrap_err();
        assert!(
            e.contains("recursive (message Node contains itself)"),
            "{e}"
        );
        // M0 uses M1 twice, M1 uses M2 twice, ...: 2^30 types when expanded.
        let mut text = "syntax = \"proto3\";\nmessage M30 { int32 x = 1; }\n".to_string();
        for i in 0..30 {
            text.push_str(&format!(
                "message M{i} {{ M{0} a = 1; M{0} b = 2; }}\n",
                i + 1
            ));
        }
        let chain = ProtoSchema::compile(&text, &[]).unwrap();
        let started = std::time::Instant::now();
        let e = connect_schema(&chain.message(Some("M0")).unwrap().0).unwrap_err();
        assert!(e.contains("more than 10000 types"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
