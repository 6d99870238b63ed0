//! Protobuf messages to Connect data, as Confluent's `ProtobufConverter` (its `ProtobufData`) maps them for sinks:
//! a message is a struct named after the message (its simple name), its real `oneof`s first, each an optional
//! struct field `<oneof>_<index>` named `io.confluent.connect.protobuf.Union.<oneof>`, then its other fields in
//! declaration order under their proto names. Every field is optional (with `wrapper.for.nullables`, singular
//! scalars and enums outside oneofs are required) and carries its tag number in the parameter
//! `io.confluent.connect.protobuf.Tag`. int32/sint32/sfixed32 are int32; uint32, fixed32 and the 64-bit integers
//! int64 (uint64 and fixed64 as Java's long, so values past 2^63 wrap); float, double, bool, string and bytes the
//! same; an enum a string (the symbol) named after the enum with its symbols in parameters; `repeated` an array of
//! optional items; a `map` a map (in JsonConverter's value form: an object when the keys are strings, else
//! `[key, value]` pairs); `google.protobuf.Timestamp`, `google.type.Date`, `google.type.TimeOfDay` and
//! `confluent.type.Decimal` Connect's Timestamp (milliseconds), Date (days), Time (milliseconds of the day) and
//! Decimal (its scale from the field's `confluent.field_meta` parameters); with `wrapper.for.nullables` a
//! `google.protobuf` wrapper its optional value. Scalars that are not set are their default (proto3 cannot tell),
//! a message field that is not set is null.
//!
//! The other way, for sources ([`proto_schema_of`], [`message_of`]): a Connect struct's proto3 schema as
//! Confluent's `fromConnectData` derives it, and its values as a message of that schema.
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
pub(crate) const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";

/// The Connect schema (JsonConverter's JSON form) of a message, or why it has none. `wrappers`
/// (`wrapper.for.nullables`, as Confluent's converter reads with it): a `google.protobuf` wrapper field is its
/// optional primitive, and the other singular scalar and enum fields (outside `oneof`s) are required.
pub fn connect_schema(m: &MessageDescriptor, wrappers: bool) -> Result<Value, String> {
    let mut walk = Walk {
        open: Vec::new(),
        budget: MAX_SCHEMA_NODES,
        wrappers,
    };
    walk.message(m, 0, false)
}

struct Walk {
    /// The messages being expanded, outermost first: one met again contains itself.
    open: Vec<String>,
    budget: usize,
    wrappers: bool,
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
        if self.wrappers
            && !f.is_list()
            && !f.is_map()
            && !matches!(f.kind(), Kind::Message(_))
            && real_oneof(f).is_none()
        {
            s["optional"] = json!(false);
        }
        s["parameters"] = merged(s.get("parameters"), TAG, &f.number().to_string());
        Ok(s)
    }

    /// The schema of one value of `f` (an item when it is repeated).
    fn single(&mut self, f: &FieldDescriptor, depth: usize) -> Result<Value, String> {
        let prim = |t: &str| json!({"type": t, "optional": true});
        let meta = field_meta(f);
        Ok(match f.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                match meta.get(CONNECT_TYPE).map(String::as_str) {
                    Some(t @ ("int8" | "int16")) => prim(t),
                    _ => prim("int32"),
                }
            }
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
            Kind::Message(m) if self.wrappers && is_wrapper(&m) => {
                match m.get_field_by_name("value") {
                    Some(inner) => self.single(&inner, depth)?,
                    None => return Err(format!("wrapper {} has no value field", m.full_name())),
                }
            }
            Kind::Message(m) if m.full_name() == DATE => {
                json!({"type": "int32", "optional": true, "name": CONNECT_DATE, "version": 1})
            }
            Kind::Message(m) if m.full_name() == TIME_OF_DAY => {
                json!({"type": "int32", "optional": true, "name": CONNECT_TIME, "version": 1})
            }
            Kind::Message(m) if m.full_name() == DECIMAL => {
                let mut parameters = Map::new();
                parameters.insert(
                    "scale".into(),
                    json!(meta.get("scale").map_or("0", String::as_str)),
                );
                if let Some(p) = meta.get("precision") {
                    parameters.insert("connect.decimal.precision".into(), json!(p));
                }
                json!({"type": "bytes", "optional": true, "name": CONNECT_DECIMAL, "version": 1,
                    "parameters": parameters})
            }
            Kind::Message(m) => self.message(&m, depth + 1, true)?,
        })
    }
}

/// The parameters of a field's `confluent.field_meta` option (Confluent's converter keeps a decimal's
/// precision and scale, and int8/int16's Connect type, there), if its schema imports `confluent/meta.proto`.
fn field_meta(f: &FieldDescriptor) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Some(ext) = f.parent_pool().get_extension_by_name(FIELD_META) else {
        return out;
    };
    // Cannot panic: every pool Connect reads schemas from is compiled by
    // `fjord_registry::protobuf::compile_schema`, which refuses a schema whose options do not decode
    // (`fjord_registry::protobuf::check_options`).
    let options = f.options();
    if !options.has_extension(&ext) {
        return out;
    }
    if let Proto::Message(meta) = &*options.get_extension(&ext) {
        if let Some(Proto::Map(params)) = meta.get_field_by_name("params").as_deref() {
            for (k, v) in params {
                if let (MapKey::String(k), Proto::String(v)) = (k, v) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
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
/// `wrappers`: as for [`connect_schema`], a wrapper message is its value.
pub fn connect_value(msg: &DynamicMessage, budget: usize, wrappers: bool) -> Result<Value, String> {
    let mut left = Left {
        n: budget,
        wrappers,
    };
    message_value(msg, &mut left).map_err(|e| {
        if left.n == 0 {
            format!("the record expands into more than {budget} Connect values (its messages' unset fields are written as defaults); it is refused as a hostile or corrupt record")
        } else {
            e
        }
    })
}

/// What is left of a record's value budget, and whether wrappers are read as their values.
struct Left {
    n: usize,
    wrappers: bool,
}

/// Takes one value from the budget.
fn spend(left: &mut Left) -> Result<(), String> {
    if left.n == 0 {
        return Err("over the value budget".into());
    }
    left.n -= 1;
    Ok(())
}

fn message_value(msg: &DynamicMessage, left: &mut Left) -> Result<Value, String> {
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

fn field_value(f: &FieldDescriptor, v: &Proto, left: &mut Left) -> Result<Value, String> {
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

fn single_value(f: &FieldDescriptor, v: &Proto, left: &mut Left) -> Result<Value, String> {
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
        Proto::Message(m) if left.wrappers && is_wrapper(&m.descriptor()) => {
            match m.descriptor().get_field_by_name("value") {
                Some(inner) => single_value(&inner, &m.get_field(&inner), left)?,
                None => return Err(format!("field {}: a wrapper without a value", f.name())),
            }
        }
        Proto::Message(m) if m.descriptor().full_name() == DATE => {
            let n = |k: &str| {
                m.get_field_by_name(k)
                    .and_then(|v| v.as_i32())
                    .map_or(0, i64::from)
            };
            let (y, mo, d) = (n("year"), n("month"), n("day"));
            // google.type.Date's year, month or day 0 means "not given", which a Connect Date cannot hold; a day
            // past its month's end (2023-02-30) is no date (not the next month's), as Confluent's reader says.
            let days = days_from_civil(y, mo, d);
            let exact = y >= 1
                && (1..=12).contains(&mo)
                && (1..=31).contains(&d)
                && civil_from_days(days) == (y, mo as u32, d as u32);
            let days = i32::try_from(days).ok().filter(|_| exact).ok_or_else(|| {
                format!(
                    "field {}: {y}-{mo}-{d} is not a date Connect can hold (a google.type.Date needs a year from 1, a month and a day of that month)",
                    f.name()
                )
            })?;
            json!(days)
        }
        Proto::Message(m) if m.descriptor().full_name() == TIME_OF_DAY => {
            let n = |k: &str| {
                m.get_field_by_name(k)
                    .and_then(|v| v.as_i32())
                    .map_or(0, i64::from)
            };
            let ms = n("hours") * 3_600_000
                + n("minutes") * 60_000
                + n("seconds") * 1000
                + n("nanos") / 1_000_000;
            if !(0..MILLIS_PER_DAY).contains(&ms) {
                return Err(format!("field {}: not a time of day", f.name()));
            }
            json!(ms)
        }
        Proto::Message(m) if m.descriptor().full_name() == DECIMAL => {
            let value = m
                .get_field_by_name("value")
                .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
                .unwrap_or_default();
            let scale = m
                .get_field_by_name("scale")
                .and_then(|v| v.as_i32())
                .unwrap_or(0);
            let want: i32 = field_meta(f)
                .get("scale")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            json!(crate::converter::base64_encode(
                &rescaled(&value, scale, want).ok_or_else(|| format!(
                "field {}: a decimal of scale {scale} cannot be read at the schema's scale {want}",
                f.name()
            ))?
            ))
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

// ---- Connect to Protobuf (sources) ----

const UNION_PREFIX: &str = "io.confluent.connect.protobuf.Union.";
/// The name Confluent's converters give a struct schema without one (numbered: ConnectDefault1, ...).
pub(crate) const DEFAULT_NAME: &str = "ConnectDefault";
const DATE: &str = "google.type.Date";
const TIME_OF_DAY: &str = "google.type.TimeOfDay";
const DECIMAL: &str = "confluent.type.Decimal";
pub(crate) const CONNECT_DATE: &str = "org.apache.kafka.connect.data.Date";
pub(crate) const CONNECT_TIME: &str = "org.apache.kafka.connect.data.Time";
pub(crate) const CONNECT_DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
/// The extension of `confluent/meta.proto` that carries a field's Connect parameters.
const FIELD_META: &str = "confluent.field_meta";
const CONNECT_TYPE: &str = "connect.type";
const MILLIS_PER_DAY: i64 = 86_400_000;

/// How ProtobufConverter writes optional Connect fields (its `wrapper.for.nullables` and
/// `optional.for.nullables`; both off: a plain proto3 field, so that a null is written as the field's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// An optional primitive is a `google.protobuf` wrapper message (`Int32Value`, `StringValue`, ...): unset
    /// when null.
    pub wrapper_for_nullables: bool,
    /// An optional primitive or enum is a proto3 `optional` field: unset when null.
    pub optional_for_nullables: bool,
}

/// A proto3 schema derived from a Connect schema: its `.proto` text and the full name of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub text: String,
    pub message: String,
}

/// The proto3 schema Confluent's ProtobufConverter derives from a Connect struct schema (JsonConverter's JSON
/// form): the message is named after the schema (its last dot-separated part; the rest is the package), or
/// `ConnectDefault1` when it has none; a struct field is a message nested in its parent, named after its schema
/// or `ConnectDefault2`, `ConnectDefault3`, ... in the order they are met (`Message` appended when that is the
/// field's name; a named struct met again is the same message); fields are numbered by their
/// `io.confluent.connect.protobuf.Tag` parameter, else 1, 2, ... in order (a oneof's field takes a number too,
/// as in Confluent's, though no field has it); a struct named
/// `io.confluent.connect.protobuf.Union.<name>` is a `oneof`; a string with `io.confluent.connect.protobuf.Enum`
/// parameters an enum; arrays `repeated`, maps `map<K, V>`; Timestamp, Date, Time and Decimal are
/// `google.protobuf.Timestamp`, `google.type.Date`, `google.type.TimeOfDay` and `confluent.type.Decimal` (its
/// precision and scale, and int8/int16's Connect type, in the field's `confluent.field_meta` parameters).
/// Err names the field whose schema Protobuf cannot express (an array of arrays or maps, a map with keys that
/// are not integers, strings or booleans, a name that is not a Protobuf identifier, ...).
pub fn proto_schema_of(connect: &Value, opts: WriteOptions) -> Result<Derived, String> {
    let ty = type_of(connect);
    if ty != "struct" {
        return Err(format!(
            "ProtobufConverter writes structs (as messages), and this record's schema is of type {ty:?}"
        ));
    }
    let mut g = Gen {
        opts,
        defaults: 0,
        imports: std::collections::BTreeSet::new(),
        structs: std::collections::HashMap::new(),
        budget: MAX_SCHEMA_NODES,
    };
    let full = g.name_or_default(connect.get("name").and_then(Value::as_str));
    let (package, name) = match full.rsplit_once('.') {
        Some((p, n)) => (Some(p.to_string()), n.to_string()),
        None => (None, full.clone()),
    };
    for part in package
        .iter()
        .flat_map(|p| p.split('.'))
        .chain([name.as_str()])
    {
        if !is_identifier(part) {
            return Err(format!(
                "the record's struct name {full:?} is not a Protobuf message name (letters, digits and _, dot-separated)"
            ));
        }
    }
    let scope = match &package {
        Some(p) => format!(".{p}.{name}"),
        None => format!(".{name}"),
    };
    g.structs
        .insert(full.clone(), (fingerprint(connect), scope.clone()));
    let lines = g.message(&name, connect, &scope, "", 0)?;
    let mut text = String::from("syntax = \"proto3\";\n");
    if let Some(p) = &package {
        text.push_str(&format!("package {p};\n"));
    }
    text.push('\n');
    for i in &g.imports {
        text.push_str(&format!("import \"{i}\";\n"));
    }
    if !g.imports.is_empty() {
        text.push('\n');
    }
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    Ok(Derived {
        text,
        message: scope[1..].to_string(),
    })
}

fn type_of(s: &Value) -> &str {
    s.get("type").and_then(Value::as_str).unwrap_or("")
}

fn is_optional(s: &Value) -> bool {
    s.get("optional").and_then(Value::as_bool).unwrap_or(false)
}

fn param<'a>(s: &'a Value, key: &str) -> Option<&'a str> {
    s.get("parameters")
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
}

fn is_union(s: &Value) -> bool {
    type_of(s) == "struct"
        && s.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with(UNION_PREFIX))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A struct schema without its own optionality (a struct used optional and required is one message).
fn fingerprint(s: &Value) -> String {
    let mut s = s.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("optional");
        o.remove("field");
        o.remove("default");
    }
    s.to_string()
}

fn field_at(path: &str) -> String {
    if path.is_empty() {
        "the record's value".to_string()
    } else {
        format!("field {path}")
    }
}

/// The `[(confluent.field_meta) = ...]` option carrying Connect parameters.
fn meta_option(params: &[(&str, String)]) -> String {
    let entries: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{{key: {k:?}, value: {v:?}}}"))
        .collect();
    format!(" [({FIELD_META}) = {{params: [{}]}}]", entries.join(", "))
}

struct Gen {
    opts: WriteOptions,
    /// ConnectDefault<n> names given so far.
    defaults: usize,
    imports: std::collections::BTreeSet<&'static str>,
    /// Named structs already defined: (fingerprint, the message's full name with a leading dot).
    structs: std::collections::HashMap<String, (String, String)>,
    budget: usize,
}

/// What a message defines besides its fields.
#[derive(Default)]
struct Nested {
    lines: Vec<String>,
    /// Enums defined, by name: their (number, symbol)s.
    enums: std::collections::HashMap<String, Vec<(i32, String)>>,
}

impl Gen {
    fn name_or_default(&mut self, name: Option<&str>) -> String {
        match name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => {
                self.defaults += 1;
                format!("{DEFAULT_NAME}{}", self.defaults)
            }
        }
    }

    fn step(&mut self, depth: usize, path: &str) -> Result<(), String> {
        if self.budget == 0 || depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "{}: the Connect schema nests deeper than {MAX_SCHEMA_DEPTH} or has more than {MAX_SCHEMA_NODES} types, which this converter does not write",
                field_at(path)
            ));
        }
        self.budget -= 1;
        Ok(())
    }

    fn message(
        &mut self,
        name: &str,
        s: &Value,
        scope: &str,
        path: &str,
        depth: usize,
    ) -> Result<Vec<String>, String> {
        self.step(depth, path)?;
        let fields = s
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{}: a struct schema without fields", field_at(path)))?;
        let mut body = Vec::new();
        let mut nested = Nested::default();
        let mut index = 1;
        for f in fields {
            let fname = f
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{}: a struct field without a name", field_at(path)))?;
            let fpath = if path.is_empty() {
                fname.to_string()
            } else {
                format!("{path}.{fname}")
            };
            if !is_identifier(fname) {
                return Err(format!(
                    "field {fpath}: {fname:?} is not a Protobuf field name (letters, digits and _, not starting with a digit)"
                ));
            }
            if is_union(f) {
                // Confluent's ProtobufData numbers the oneof's Connect field like any other (its Tag, else the
                // next number) though it writes no field for it: the numbers after it move on by one.
                if tag_of(f, &fpath)?.is_none() {
                    index += 1;
                }
                let union = f["name"].as_str().unwrap_or("")[UNION_PREFIX.len()..].to_string();
                let union = union.rsplit('.').next().unwrap_or("").to_string();
                if !is_identifier(&union) {
                    return Err(format!(
                        "field {fpath}: {union:?} is not a Protobuf oneof name"
                    ));
                }
                body.push(format!("oneof {union} {{"));
                for m in f
                    .get("fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let mname = m.get("field").and_then(Value::as_str).unwrap_or("");
                    let mpath = format!("{fpath}.{mname}");
                    if !is_identifier(mname) {
                        return Err(format!(
                            "field {mpath}: {mname:?} is not a Protobuf field name"
                        ));
                    }
                    let tag = tag_of(m, &mpath)?.ok_or_else(|| {
                        format!(
                            "field {mpath}: a oneof member needs its number in the parameter {TAG}"
                        )
                    })?;
                    let line =
                        self.field(m, mname, tag, scope, &mpath, &mut nested, depth, true)?;
                    body.push(format!("  {line}"));
                }
                body.push("}".to_string());
                continue;
            }
            let tag = match tag_of(f, &fpath)? {
                Some(t) => t,
                None => {
                    let t = index;
                    index += 1;
                    t
                }
            };
            body.push(self.field(f, fname, tag, scope, &fpath, &mut nested, depth, false)?);
        }
        let mut out = vec![format!("message {name} {{")];
        out.extend(
            body.into_iter()
                .chain(nested.lines)
                .map(|l| format!("  {l}")),
        );
        out.push("}".to_string());
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn field(
        &mut self,
        f: &Value,
        fname: &str,
        tag: u32,
        scope: &str,
        path: &str,
        nested: &mut Nested,
        depth: usize,
        in_oneof: bool,
    ) -> Result<String, String> {
        let container = |what: &str| {
            format!("field {path}: a {what} cannot be a member of a oneof in Protobuf")
        };
        match type_of(f) {
            "array" => {
                if in_oneof {
                    return Err(container("repeated field"));
                }
                let items = f
                    .get("items")
                    .ok_or_else(|| format!("field {path}: an array schema without items"))?;
                if matches!(type_of(items), "array" | "map") {
                    return Err(format!(
                        "field {path}: an array of {}s has no Protobuf form (a repeated field's items cannot themselves be repeated or maps)",
                        type_of(items)
                    ));
                }
                let (t, _) = self.type_str(items, fname, scope, path, nested, depth + 1)?;
                Ok(format!("repeated {t} {fname} = {tag};"))
            }
            "map" => {
                if in_oneof {
                    return Err(container("map"));
                }
                let keys = f
                    .get("keys")
                    .ok_or_else(|| format!("field {path}: a map schema without keys"))?;
                let values = f
                    .get("values")
                    .ok_or_else(|| format!("field {path}: a map schema without values"))?;
                let logical = keys.get("name").and_then(Value::as_str);
                let key = match (type_of(keys), logical) {
                    ("int8" | "int16" | "int32", None) => "int32",
                    ("int64", None) => "int64",
                    ("boolean", None) => "bool",
                    ("string", _) if param(keys, ENUM).is_none() => "string",
                    (t, l) => {
                        return Err(format!(
                            "field {path}: a map whose keys are {} has no Protobuf form (map keys are integers, strings or booleans)",
                            l.map_or_else(|| format!("of type {t}"), |l| l.to_string())
                        ))
                    }
                };
                if matches!(type_of(values), "array" | "map") {
                    return Err(format!(
                        "field {path}: a map whose values are {}s has no Protobuf form (map values cannot be repeated or maps)",
                        type_of(values)
                    ));
                }
                let (v, _) = self.type_str(values, fname, scope, path, nested, depth + 1)?;
                Ok(format!("map<{key}, {v}> {fname} = {tag};"))
            }
            _ => {
                let (t, options) = self.type_str(f, fname, scope, path, nested, depth + 1)?;
                let scalar = !t.starts_with('.') && !t.contains('.');
                let label = if self.opts.optional_for_nullables
                    && !in_oneof
                    && is_optional(f)
                    && (scalar
                        || nested
                            .enums
                            .contains_key(t.rsplit('.').next().unwrap_or("")))
                {
                    "optional "
                } else {
                    ""
                };
                Ok(format!("{label}{t} {fname} = {tag}{options};"))
            }
        }
    }

    /// The Protobuf type of one value of schema `s` (and the field options it needs).
    fn type_str(
        &mut self,
        s: &Value,
        fname: &str,
        scope: &str,
        path: &str,
        nested: &mut Nested,
        depth: usize,
    ) -> Result<(String, String), String> {
        self.step(depth, path)?;
        let wrap = self.opts.wrapper_for_nullables && is_optional(s);
        let mut wrapped = |plain: &str, wrapper: &str| {
            if wrap {
                self.imports.insert("google/protobuf/wrappers.proto");
                format!("google.protobuf.{wrapper}")
            } else {
                plain.to_string()
            }
        };
        let name = s.get("name").and_then(Value::as_str);
        let t = match (type_of(s), name) {
            ("bytes", Some(CONNECT_DECIMAL)) => {
                self.imports.insert("confluent/type/decimal.proto");
                self.imports.insert("confluent/meta.proto");
                let mut params = Vec::new();
                if let Some(p) = param(s, "connect.decimal.precision") {
                    params.push(("precision", p.to_string()));
                }
                params.push(("scale", param(s, "scale").unwrap_or("0").to_string()));
                return Ok((DECIMAL.to_string(), meta_option(&params)));
            }
            ("int32", Some(CONNECT_DATE)) => {
                self.imports.insert("google/type/date.proto");
                DATE.to_string()
            }
            ("int32", Some(CONNECT_TIME)) => {
                self.imports.insert("google/type/timeofday.proto");
                TIME_OF_DAY.to_string()
            }
            ("int64", Some(CONNECT_TIMESTAMP)) => {
                self.imports.insert("google/protobuf/timestamp.proto");
                TIMESTAMP.to_string()
            }
            (t @ ("int8" | "int16"), _) => {
                let ty = wrapped("int32", "Int32Value");
                self.imports.insert("confluent/meta.proto");
                return Ok((ty, meta_option(&[(CONNECT_TYPE, t.to_string())])));
            }
            ("int32", _) => wrapped("int32", "Int32Value"),
            ("int64", _) => wrapped("int64", "Int64Value"),
            ("float" | "float32", _) => wrapped("float", "FloatValue"),
            ("double" | "float64", _) => wrapped("double", "DoubleValue"),
            ("boolean", _) => wrapped("bool", "BoolValue"),
            ("string", _) if param(s, ENUM).is_some() => {
                let e = self.enum_def(s, path, nested)?;
                format!("{scope}.{e}")
            }
            ("string", _) => wrapped("string", "StringValue"),
            ("bytes", _) => wrapped("bytes", "BytesValue"),
            ("struct", _) if is_union(s) => {
                return Err(format!(
                    "field {path}: a oneof ({UNION_PREFIX}...) can only be a field of a struct"
                ))
            }
            ("struct", _) => {
                let print = fingerprint(s);
                if let Some(n) = name.filter(|n| !n.is_empty()) {
                    if let Some((p, full)) = self.structs.get(n) {
                        if *p != print {
                            return Err(format!(
                                "field {path}: two different struct schemas are named {n}, which one Protobuf schema cannot hold"
                            ));
                        }
                        return Ok((full.clone(), String::new()));
                    }
                }
                let full = self.name_or_default(name);
                let mut message = full.rsplit('.').next().unwrap_or("").to_string();
                if !is_identifier(&message) {
                    return Err(format!(
                        "field {path}: the struct name {full:?} is not a Protobuf message name"
                    ));
                }
                if message == fname {
                    message.push_str("Message");
                }
                let child = format!("{scope}.{message}");
                self.structs.insert(full, (print, child.clone()));
                let lines = self.message(&message, s, &child, path, depth + 1)?;
                nested.lines.extend(lines);
                child
            }
            (t @ ("array" | "map"), _) => {
                return Err(format!("field {path}: a nested {t} has no Protobuf form"))
            }
            (other, _) => {
                return Err(format!(
                    "field {path}: a Connect schema of type {other:?} has no Protobuf form"
                ))
            }
        };
        Ok((t, String::new()))
    }

    /// Defines (once per message) the enum of a string schema with Confluent's enum parameters; its name.
    fn enum_def(&mut self, s: &Value, path: &str, nested: &mut Nested) -> Result<String, String> {
        let name = param(s, ENUM).unwrap_or("");
        let name = name.rsplit('.').next().unwrap_or("").to_string();
        if !is_identifier(&name) {
            return Err(format!(
                "field {path}: {name:?} is not a Protobuf enum name"
            ));
        }
        let prefix = format!("{ENUM}.");
        let mut values: Vec<(i32, String)> = Vec::new();
        for (k, v) in s
            .get("parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let Some(symbol) = k.strip_prefix(&prefix) else {
                continue;
            };
            let n = v
                .as_str()
                .and_then(|v| v.parse::<i32>().ok())
                .ok_or_else(|| format!("field {path}: enum symbol {symbol} has no number"))?;
            if !is_identifier(symbol) {
                return Err(format!(
                    "field {path}: {symbol:?} is not a Protobuf enum symbol"
                ));
            }
            values.push((n, symbol.to_string()));
        }
        values.sort();
        if let Some(seen) = nested.enums.get(&name) {
            if *seen == values {
                return Ok(name);
            }
            return Err(format!(
                "field {path}: two different enums are named {name} in one message"
            ));
        }
        if values.first().map(|(n, _)| *n) != Some(0) {
            return Err(format!(
                "field {path}: enum {name} has no symbol numbered 0, which proto3 requires first"
            ));
        }
        nested.lines.push(format!("enum {name} {{"));
        for (n, symbol) in &values {
            nested.lines.push(format!("  {symbol} = {n};"));
        }
        nested.lines.push("}".to_string());
        nested.enums.insert(name.clone(), values);
        Ok(name)
    }
}

/// A field's number from its `io.confluent.connect.protobuf.Tag` parameter, if it has one.
fn tag_of(f: &Value, path: &str) -> Result<Option<u32>, String> {
    match param(f, TAG) {
        None => Ok(None),
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| (1..(1 << 29)).contains(n) && !(19_000..20_000).contains(n))
            .map(Some)
            .ok_or_else(|| format!("field {path}: {TAG}={t} is not a Protobuf field number")),
    }
}

/// Connect data (JsonConverter's value form: bytes and decimals base64, dates, times and timestamps numbers) as
/// a message of `m`, the message [`proto_schema_of`] derived from `schema`: a null field is left unset.
pub fn message_of(
    m: &MessageDescriptor,
    schema: &Value,
    value: &Value,
) -> Result<DynamicMessage, String> {
    message_at(m, schema, value, "")
}

fn describe(v: &Value) -> String {
    let mut t = v.to_string();
    if t.len() > 60 {
        let mut end = 60;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
        t.push_str("...");
    }
    t
}

fn message_at(
    m: &MessageDescriptor,
    schema: &Value,
    value: &Value,
    path: &str,
) -> Result<DynamicMessage, String> {
    let obj = value.as_object().ok_or_else(|| {
        format!(
            "{}: expected a struct, got {}",
            field_at(path),
            describe(value)
        )
    })?;
    let mut msg = DynamicMessage::new(m.clone());
    for f in schema
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let fname = f.get("field").and_then(Value::as_str).unwrap_or("");
        let fpath = if path.is_empty() {
            fname.to_string()
        } else {
            format!("{path}.{fname}")
        };
        let v = obj.get(fname).unwrap_or(&Value::Null);
        if v.is_null() {
            continue;
        }
        let (f, v, fpath, fname) = if is_union(f) {
            let members = v.as_object().ok_or_else(|| {
                format!(
                    "field {fpath}: expected a oneof struct, got {}",
                    describe(v)
                )
            })?;
            let set = f
                .get("fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|mf| {
                    let n = mf.get("field").and_then(Value::as_str)?;
                    members.get(n).filter(|v| !v.is_null()).map(|v| (mf, v, n))
                });
            // Confluent's ProtobufData: "Cannot find non-null field".
            let Some((mf, mv, n)) = set else {
                return Err(format!(
                    "field {fpath}: a oneof struct with no member set (one member must be non-null)"
                ));
            };
            (mf, mv, format!("{fpath}.{n}"), n)
        } else {
            (f, v, fpath, fname)
        };
        let fd = m.get_field_by_name(fname).ok_or_else(|| {
            format!(
                "field {fpath}: the message {} has no such field",
                m.full_name()
            )
        })?;
        let pv = field_proto(&fd, f, v, &fpath)?;
        msg.try_set_field(&fd, pv)
            .map_err(|e| format!("field {fpath}: {e}"))?;
    }
    Ok(msg)
}

fn field_proto(fd: &FieldDescriptor, s: &Value, v: &Value, path: &str) -> Result<Proto, String> {
    if fd.is_map() {
        let Kind::Message(entry) = fd.kind() else {
            return Err(format!(
                "field {path}: a map field without an entry message"
            ));
        };
        let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let null = &Value::Null;
        let (ks, vs) = (
            s.get("keys").unwrap_or(null),
            s.get("values").unwrap_or(null),
        );
        let pairs: Vec<(Value, &Value)> = match v {
            Value::Object(o) => o.iter().map(|(k, v)| (json!(k), v)).collect(),
            Value::Array(a) => a
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([k, v]) => Ok((k.clone(), v)),
                    _ => Err(format!(
                        "field {path}: a map entry that is not a [key, value] pair: {}",
                        describe(p)
                    )),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(format!(
                    "field {path}: expected a map, got {}",
                    describe(other)
                ))
            }
        };
        let mut out = std::collections::HashMap::new();
        for (k, val) in pairs {
            if val.is_null() {
                return Err(format!(
                    "field {path}: the value of map key {k} is null, which a Protobuf map cannot hold"
                ));
            }
            // Object keys are text; a map of integer or boolean keys may come as an object too.
            let k = match (&k, kf.kind()) {
                (Value::String(t), Kind::Int32 | Kind::Int64) => {
                    t.parse::<i64>().map(|n| json!(n)).unwrap_or(k.clone())
                }
                (Value::String(t), Kind::Bool) => {
                    t.parse::<bool>().map(|b| json!(b)).unwrap_or(k.clone())
                }
                _ => k.clone(),
            };
            let key = match single_proto(&kf, ks, &k, path)? {
                Proto::String(t) => MapKey::String(t),
                Proto::I32(n) => MapKey::I32(n),
                Proto::I64(n) => MapKey::I64(n),
                Proto::Bool(b) => MapKey::Bool(b),
                _ => return Err(format!("field {path}: an unsupported map key {k}")),
            };
            out.insert(key, single_proto(&vf, vs, val, path)?);
        }
        return Ok(Proto::Map(out));
    }
    if fd.is_list() {
        let items = v
            .as_array()
            .ok_or_else(|| format!("field {path}: expected an array, got {}", describe(v)))?;
        let is = s.get("items").unwrap_or(&Value::Null);
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                if item.is_null() {
                    Err(format!(
                        "field {path}: item {i} is null, which a Protobuf repeated field cannot hold"
                    ))
                } else {
                    single_proto(fd, is, item, path)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Proto::List);
    }
    single_proto(fd, s, v, path)
}

/// The Protobuf value of one Connect value `v` (schema `s`) for field `fd` (an item of it when repeated).
fn single_proto(fd: &FieldDescriptor, s: &Value, v: &Value, path: &str) -> Result<Proto, String> {
    let wrong = |what: &str| format!("field {path}: expected {what}, got {}", describe(v));
    let int = || v.as_i64().ok_or_else(|| wrong("an integer"));
    Ok(match fd.kind() {
        Kind::Message(m) => Proto::Message(message_proto(&m, s, v, path)?),
        Kind::Enum(e) => {
            let symbol = v.as_str().ok_or_else(|| wrong("an enum symbol"))?;
            let n = e.get_value_by_name(symbol).ok_or_else(|| {
                format!(
                    "field {path}: {symbol:?} is not a symbol of enum {}",
                    e.name()
                )
            })?;
            Proto::EnumNumber(n.number())
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Proto::I32(i32::try_from(int()?).map_err(|_| wrong("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Proto::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => {
            Proto::U32(u32::try_from(int()?).map_err(|_| wrong("an unsigned 32-bit integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => Proto::U64(int()? as u64),
        Kind::Float => Proto::F32(v.as_f64().ok_or_else(|| wrong("a number"))? as f32),
        Kind::Double => Proto::F64(v.as_f64().ok_or_else(|| wrong("a number"))?),
        Kind::Bool => Proto::Bool(v.as_bool().ok_or_else(|| wrong("a boolean"))?),
        Kind::String => Proto::String(v.as_str().ok_or_else(|| wrong("a string"))?.to_string()),
        Kind::Bytes => Proto::Bytes(bytes_of(v, path)?.into()),
    })
}

fn bytes_of(v: &Value, path: &str) -> Result<Vec<u8>, String> {
    v.as_str()
        .and_then(crate::converter::base64_decode)
        .ok_or_else(|| {
            format!(
                "field {path}: expected bytes (base64 text), got {}",
                describe(v)
            )
        })
}

/// Whether `m` is one of `google/protobuf/wrappers.proto`'s messages.
fn is_wrapper(m: &MessageDescriptor) -> bool {
    m.parent_file().name() == "google/protobuf/wrappers.proto"
}

fn message_proto(
    m: &MessageDescriptor,
    s: &Value,
    v: &Value,
    path: &str,
) -> Result<DynamicMessage, String> {
    let wrong = |what: &str| format!("field {path}: expected {what}, got {}", describe(v));
    let mut msg = DynamicMessage::new(m.clone());
    let mut set = |name: &str, value: Proto| -> Result<(), String> {
        msg.try_set_field_by_name(name, value)
            .map_err(|e| format!("field {path}: {e}"))
    };
    match m.full_name() {
        TIMESTAMP => {
            let millis = v
                .as_i64()
                .ok_or_else(|| wrong("a timestamp (milliseconds)"))?;
            set("seconds", Proto::I64(millis.div_euclid(1000)))?;
            set(
                "nanos",
                Proto::I32((millis.rem_euclid(1000) * 1_000_000) as i32),
            )?;
        }
        DATE => {
            // Connect's Date is an int32 count of days.
            let days = v
                .as_i64()
                .filter(|d| i32::try_from(*d).is_ok())
                .ok_or_else(|| wrong("a date (days since 1970-01-01, a 32-bit integer)"))?;
            let (y, mo, d) = civil_from_days(days);
            set(
                "year",
                Proto::I32(i32::try_from(y).map_err(|_| wrong("a date"))?),
            )?;
            set("month", Proto::I32(mo as i32))?;
            set("day", Proto::I32(d as i32))?;
        }
        TIME_OF_DAY => {
            let ms = v
                .as_i64()
                .filter(|ms| (0..MILLIS_PER_DAY).contains(ms))
                .ok_or_else(|| wrong("a time of day (milliseconds from 0 to 86399999)"))?;
            set("hours", Proto::I32((ms / 3_600_000) as i32))?;
            set("minutes", Proto::I32((ms / 60_000 % 60) as i32))?;
            set("seconds", Proto::I32((ms / 1000 % 60) as i32))?;
            set("nanos", Proto::I32((ms % 1000 * 1_000_000) as i32))?;
        }
        DECIMAL => {
            let unscaled = bytes_of(v, path)?;
            set("value", Proto::Bytes(unscaled.into()))?;
            let n = |k: &str| param(s, k).and_then(|p| p.parse::<i64>().ok());
            if let Some(p) = n("connect.decimal.precision").and_then(|p| u32::try_from(p).ok()) {
                set("precision", Proto::U32(p))?;
            }
            let scale = n("scale").unwrap_or(0);
            set(
                "scale",
                Proto::I32(i32::try_from(scale).map_err(|_| wrong("a decimal"))?),
            )?;
        }
        _ if is_wrapper(m) => {
            let inner = m
                .get_field_by_name("value")
                .ok_or_else(|| format!("field {path}: a wrapper without a value"))?;
            let pv = single_proto(&inner, s, v, path)?;
            set("value", pv)?;
        }
        _ => return message_at(m, s, v, path),
    }
    Ok(msg)
}

/// A decimal's unscaled big-endian two's-complement bytes at scale `from`, at scale `to` (None when that loses
/// digits or does not fit 128 bits); the same bytes when the scales agree.
fn rescaled(value: &[u8], from: i32, to: i32) -> Option<Vec<u8>> {
    if from == to {
        return Some(value.to_vec());
    }
    if value.len() > 16 {
        return None;
    }
    let mut n: i128 = if value.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in value {
        n = (n << 8) | i128::from(*b);
    }
    // The scales come from the producer's message: their difference can exceed i32.
    let diff = i64::from(to) - i64::from(from);
    let ten = 10i128.checked_pow(u32::try_from(diff.unsigned_abs()).ok()?)?;
    let n = if to > from {
        n.checked_mul(ten)?
    } else if n % ten == 0 {
        n / ten
    } else {
        return None;
    };
    // The shortest two's-complement form.
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < 15
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    Some(bytes[start..].to_vec())
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
        connect_value(&proto_json::decode(m, &body).unwrap(), usize::MAX, false).unwrap()
    }

    #[test]
    fn messages_map_to_structs_as_confluents_converter_maps_them() {
        let m = order();
        let s = connect_schema(&m, false).unwrap();
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
        let e = connect_value(&msg, value_budget(body.len()), false).unwrap_err();
        assert!(e.contains("more than 74000 Connect values"), "{e}");
        let small: Vec<u8> = [0x0a, 0x00].repeat(3);
        let msg = proto_json::decode(&outer, &small).unwrap();
        let v = connect_value(&msg, value_budget(small.len()), false).unwrap();
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
        let e = connect_schema(&node.message(None).unwrap().0, false).unwrap_err();
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
        let e = connect_schema(&chain.message(Some("M0")).unwrap().0, false).unwrap_err();
        assert!(e.contains("more than 10000 types"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    fn compiled(d: &Derived) -> MessageDescriptor {
        ProtoSchema::compile(&d.text, &[])
            .unwrap_or_else(|e| panic!("{e}\n{}", d.text))
            .message(Some(&d.message))
            .unwrap()
            .0
    }

    /// Connect data written as a message of the derived schema and read back as Connect data.
    fn round_trip(schema: &Value, value: &Value, opts: WriteOptions) -> (Value, Value) {
        let d = proto_schema_of(schema, opts).unwrap();
        let m = compiled(&d);
        let body =
            prost_reflect::prost::Message::encode_to_vec(&message_of(&m, schema, value).unwrap());
        let wrappers = opts.wrapper_for_nullables;
        let back = connect_value(
            &proto_json::decode(&m, &body).unwrap(),
            usize::MAX,
            wrappers,
        )
        .unwrap();
        (connect_schema(&m, wrappers).unwrap(), back)
    }

    fn field<'a>(s: &'a Value, n: &str) -> &'a Value {
        s["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == n)
            .unwrap()
    }

    #[test]
    fn connect_schemas_derive_proto3_schemas_with_confluents_names() {
        let schema = json!({"type": "struct", "optional": false, "fields": [
            {"field": "id", "type": "int32", "optional": false},
            {"field": "line", "type": "struct", "optional": true, "fields": [
                {"field": "sku", "type": "string", "optional": false},
                {"field": "extra", "type": "struct", "optional": true, "fields": [
                    {"field": "k", "type": "boolean", "optional": false}]}]},
            {"field": "addr", "type": "struct", "name": "com.example.Address", "optional": true, "fields": [
                {"field": "city", "type": "string", "optional": false}]},
            {"field": "home", "type": "struct", "name": "com.example.Address", "optional": false, "fields": [
                {"field": "city", "type": "string", "optional": false}]},
            {"field": "Item", "type": "struct", "name": "Item", "optional": true, "fields": [
                {"field": "n", "type": "int64", "optional": false}]},
            {"field": "tags", "type": "array", "optional": false, "items": {"type": "string", "optional": false}},
            {"field": "counts", "type": "map", "optional": false, "keys": {"type": "string", "optional": false},
             "values": {"type": "int64", "optional": false}},
            {"field": "color", "type": "string", "optional": false, "name": "Color", "parameters": {
                ENUM: "Color", "io.confluent.connect.protobuf.Enum.RED": "0",
                "io.confluent.connect.protobuf.Enum.BLUE": "1"}},
            {"field": "pay_0", "type": "struct", "name": "io.confluent.connect.protobuf.Union.pay", "optional": true,
             "fields": [
                {"field": "card", "type": "string", "optional": true, "parameters": {TAG: "20"}},
                {"field": "cash", "type": "int32", "optional": true, "parameters": {TAG: "21"}}]},
            {"field": "tagged", "type": "int64", "optional": false, "parameters": {TAG: "30"}},
            {"field": "last", "type": "float", "optional": false}]});
        let d = proto_schema_of(&schema, WriteOptions::default()).unwrap();
        assert_eq!(d.message, "ConnectDefault1");
        let t = &d.text;
        for line in [
            "syntax = \"proto3\";",
            "message ConnectDefault1 {",
            "  int32 id = 1;",
            "  .ConnectDefault1.ConnectDefault2 line = 2;",
            "    .ConnectDefault1.ConnectDefault2.ConnectDefault3 extra = 2;",
            "  .ConnectDefault1.Address addr = 3;",
            "  .ConnectDefault1.Address home = 4;",
            "  .ConnectDefault1.ItemMessage Item = 5;",
            "  repeated string tags = 6;",
            "  map<string, int64> counts = 7;",
            "  .ConnectDefault1.Color color = 8;",
            "  oneof pay {",
            "    string card = 20;",
            "    int32 cash = 21;",
            "  int64 tagged = 30;",
            "  float last = 10;",
            "  enum Color {",
            "    RED = 0;",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} not in\n{t}");
        }
        // The named struct is defined once.
        assert_eq!(t.matches("message Address {").count(), 1, "{t}");
        // It compiles, and reads back as the same shape.
        let m = compiled(&d);
        let back = connect_schema(&m, false).unwrap();
        assert_eq!(back["name"], "ConnectDefault1");
        assert_eq!(field(&back, "line")["name"], "ConnectDefault2");
        assert_eq!(field(&back, "pay_0")["fields"][1]["parameters"][TAG], "21");
        assert_eq!(
            field(&back, "color")["parameters"]["io.confluent.connect.protobuf.Enum.BLUE"],
            "1"
        );

        // A named root: its namespace is the package.
        let named = json!({"type": "struct", "name": "com.example.Order", "optional": false, "fields": [
            {"field": "id", "type": "string", "optional": false}]});
        let d = proto_schema_of(&named, WriteOptions::default()).unwrap();
        assert_eq!(d.message, "com.example.Order");
        assert!(d.text.contains("package com.example;\n"), "{}", d.text);
        assert!(d.text.contains("message Order {"), "{}", d.text);
    }

    /// [a, u (a oneof), b]: Confluent numbers a=1, u=2 (unused), b=3.
    #[test]
    fn a_oneof_among_untagged_fields_takes_a_number_as_in_confluents() {
        let schema = json!({"type": "struct", "optional": false, "fields": [
            {"field": "a", "type": "int32", "optional": false},
            {"field": "u_0", "type": "struct", "name": "io.confluent.connect.protobuf.Union.u", "optional": true,
             "fields": [{"field": "x", "type": "string", "optional": true, "parameters": {TAG: "7"}}]},
            {"field": "b", "type": "string", "optional": false}]});
        let d = proto_schema_of(&schema, WriteOptions::default()).unwrap();
        for line in ["  int32 a = 1;", "    string x = 7;", "  string b = 3;"] {
            assert!(
                d.text.lines().any(|l| l == line),
                "{line:?} not in\n{}",
                d.text
            );
        }
        // A tagged oneof field does not move the counter.
        let mut tagged = schema.clone();
        tagged["fields"][1]["parameters"] = json!({TAG: "9"});
        let d = proto_schema_of(&tagged, WriteOptions::default()).unwrap();
        assert!(d.text.lines().any(|l| l == "  string b = 2;"), "{}", d.text);
        let m = compiled(&d);
        assert_eq!(m.get_field_by_name("b").unwrap().number(), 2);
    }

    #[test]
    fn connect_values_round_trip_through_the_derived_message() {
        let schema = json!({"type": "struct", "name": "shop.Order", "optional": false, "fields": [
            {"field": "id", "type": "int64", "optional": false},
            {"field": "qty", "type": "int32", "optional": false},
            {"field": "small", "type": "int16", "optional": false},
            {"field": "name", "type": "string", "optional": false},
            {"field": "ok", "type": "boolean", "optional": false},
            {"field": "ratio", "type": "double", "optional": false},
            {"field": "raw", "type": "bytes", "optional": false},
            {"field": "at", "type": "int64", "optional": false, "name": CONNECT_TIMESTAMP, "version": 1},
            {"field": "day", "type": "int32", "optional": false, "name": CONNECT_DATE, "version": 1},
            {"field": "time", "type": "int32", "optional": false, "name": CONNECT_TIME, "version": 1},
            {"field": "price", "type": "bytes", "optional": false, "name": CONNECT_DECIMAL, "version": 1,
             "parameters": {"scale": "2", "connect.decimal.precision": "10"}},
            {"field": "tags", "type": "array", "optional": false, "items": {"type": "string", "optional": false}},
            {"field": "by_id", "type": "map", "optional": false, "keys": {"type": "int32", "optional": false},
             "values": {"type": "string", "optional": false}},
            {"field": "line", "type": "struct", "optional": false, "fields": [
                {"field": "sku", "type": "string", "optional": false}]},
            {"field": "lines", "type": "array", "optional": false, "items": {"type": "struct", "name": "shop.Line",
             "optional": false, "fields": [{"field": "sku", "type": "string", "optional": false}]}}]});
        let value = json!({"id": -5_000_000_000i64, "qty": 3, "small": -2, "name": "o-1", "ok": true, "ratio": 0.25,
            "raw": crate::converter::base64_encode(b"\x00\xff"), "at": -1_500i64, "day": 19_000,
            "time": 45_296_789, "price": crate::converter::base64_encode(&[0xfe, 0x1d, 0xc0]),
            "tags": ["a", "b"], "by_id": [[1, "one"], [2, "two"]], "line": {"sku": "x"},
            "lines": [{"sku": "y"}, {"sku": "z"}]});
        let (back_schema, back) = round_trip(&schema, &value, WriteOptions::default());
        assert_eq!(back, value);
        assert_eq!(back_schema["name"], "Order");
        assert_eq!(field(&back_schema, "small")["type"], "int16");
        assert_eq!(field(&back_schema, "at")["name"], CONNECT_TIMESTAMP);
        assert_eq!(field(&back_schema, "day")["name"], CONNECT_DATE);
        assert_eq!(field(&back_schema, "time")["name"], CONNECT_TIME);
        let price = field(&back_schema, "price");
        assert_eq!(
            (
                &price["name"],
                &price["parameters"]["scale"],
                &price["parameters"]["connect.decimal.precision"]
            ),
            (&json!(CONNECT_DECIMAL), &json!("2"), &json!("10"))
        );
        // 19000 days is 2022-01-08; 45296789 ms is 12:34:56.789.
        assert_eq!(civil_from_days(19_000), (2022, 1, 8));
        assert_eq!(days_from_civil(2022, 1, 8), 19_000);
        for d in [-800_000, -1, 0, 59, 60, 365 * 400, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(dd)), d);
        }
        // A record written at scale 3 read with a schema of scale 2 (the registry gave both one id): the same
        // number at the schema's scale when it is exact, else an error naming the field.
        let at_scale = |scale: &str| {
            json!({"type": "struct", "name": "shop.P", "optional": false, "fields": [
                {"field": "price", "type": "bytes", "optional": false, "name": CONNECT_DECIMAL, "version": 1,
                 "parameters": {"scale": scale}}]})
        };
        let reader = compiled(&proto_schema_of(&at_scale("2"), WriteOptions::default()).unwrap());
        let writer = compiled(&proto_schema_of(&at_scale("3"), WriteOptions::default()).unwrap());
        let read = |unscaled: &[u8]| {
            let msg = message_of(
                &writer,
                &at_scale("3"),
                &json!({"price": crate::converter::base64_encode(unscaled)}),
            )
            .unwrap();
            let body = prost_reflect::prost::Message::encode_to_vec(&msg);
            connect_value(
                &proto_json::decode(&reader, &body).unwrap(),
                usize::MAX,
                false,
            )
        };
        // 1.230 is 1.23; 1.234 is not at scale 2.
        assert_eq!(
            read(&[0x04, 0xce]).unwrap()["price"],
            crate::converter::base64_encode(&[0x7b])
        );
        let e = read(&[0x04, 0xd2]).unwrap_err();
        assert!(
            e.starts_with(
                "field price: a decimal of scale 3 cannot be read at the schema's scale 2"
            ),
            "{e}"
        );
        assert_eq!(rescaled(&[0x01], 0, 2), Some(vec![0x64]));
        assert_eq!(rescaled(&[0x64], 2, 0), Some(vec![0x01]));
        assert_eq!(rescaled(&[0x65], 2, 0), None);
    }

    /// Producer-controlled values at the edges of their types: errors naming the field, never a panic.
    #[test]
    fn out_of_range_scales_dates_and_oneofs_are_errors_naming_the_field() {
        // A decimal written at scale i32::MIN read at scale 2: 2 - i32::MIN overflowed i32.
        let at_scale = |scale: &str| {
            json!({"type": "struct", "name": "shop.P", "optional": false, "fields": [
                {"field": "price", "type": "bytes", "optional": false, "name": CONNECT_DECIMAL, "version": 1,
                 "parameters": {"scale": scale}}]})
        };
        let reader = compiled(&proto_schema_of(&at_scale("2"), WriteOptions::default()).unwrap());
        for from in ["-2147483648", "2147483647"] {
            let writer =
                compiled(&proto_schema_of(&at_scale(from), WriteOptions::default()).unwrap());
            let msg = message_of(
                &writer,
                &at_scale(from),
                &json!({"price": crate::converter::base64_encode(&[0x01])}),
            )
            .unwrap();
            let body = prost_reflect::prost::Message::encode_to_vec(&msg);
            let e = connect_value(
                &proto_json::decode(&reader, &body).unwrap(),
                usize::MAX,
                false,
            )
            .unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "field price: a decimal of scale {from} cannot be read at the schema's scale 2"
                )),
                "{e}"
            );
        }
        assert_eq!(rescaled(&[0x01], -1, i32::MAX), None);
        assert_eq!(rescaled(&[0x01], i32::MAX, i32::MIN), None);

        // A Connect Date is an int32: a larger count of days is refused, not overflowed.
        let dated = json!({"type": "struct", "optional": false, "fields": [
            {"field": "d", "type": "int32", "optional": false, "name": CONNECT_DATE, "version": 1}]});
        let m = compiled(&proto_schema_of(&dated, WriteOptions::default()).unwrap());
        for days in [i64::MAX, i64::MIN, i64::from(i32::MAX) + 1] {
            let e = message_of(&m, &dated, &json!({ "d": days })).unwrap_err();
            assert!(e.starts_with("field d: expected a date"), "{e}");
        }
        // 1969-12-31 and 0001-01-01 (the first date a google.type.Date can hold) write and read back.
        for days in [-1, -719_162] {
            let ok = message_of(&m, &dated, &json!({ "d": days })).unwrap();
            let body = prost_reflect::prost::Message::encode_to_vec(&ok);
            assert_eq!(
                connect_value(&proto_json::decode(&m, &body).unwrap(), usize::MAX, false).unwrap(),
                json!({ "d": days })
            );
        }

        // google.type.Date read: a day past its month's end, and year, month or day 0 ("not given"), are refused.
        let read_date = |y: i32, mo: i32, d: i32| {
            let body = proto_json::from_json(&m, &json!({"d": {"year": y, "month": mo, "day": d}}))
                .unwrap();
            connect_value(&proto_json::decode(&m, &body).unwrap(), usize::MAX, false)
        };
        assert_eq!(read_date(2024, 2, 29).unwrap(), json!({"d": 19_782}));
        assert_eq!(read_date(1, 1, 1).unwrap(), json!({"d": -719_162}));
        for (y, mo, d) in [
            (2023, 2, 30),
            (2023, 4, 31),
            (0, 1, 1),
            (2023, 0, 1),
            (2023, 1, 0),
            (-5, 1, 1),
        ] {
            let e = read_date(y, mo, d).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "field d: {y}-{mo}-{d} is not a date Connect can hold"
                )),
                "{e}"
            );
        }

        // A oneof struct with every member null: Confluent's "Cannot find non-null field".
        let union = json!({"type": "struct", "optional": false, "fields": [
            {"field": "u_0", "type": "struct", "name": "io.confluent.connect.protobuf.Union.u", "optional": true,
             "fields": [{"field": "x", "type": "string", "optional": true, "parameters": {TAG: "1"}},
                        {"field": "y", "type": "int32", "optional": true, "parameters": {TAG: "2"}}]}]});
        let m = compiled(&proto_schema_of(&union, WriteOptions::default()).unwrap());
        let e = message_of(&m, &union, &json!({"u_0": {"x": null, "y": null}})).unwrap_err();
        assert!(
            e.starts_with("field u_0: a oneof struct with no member set"),
            "{e}"
        );
        // A null oneof struct is no member set, as before.
        assert!(message_of(&m, &union, &json!({"u_0": null})).is_ok());
        assert!(message_of(&m, &union, &json!({"u_0": {"x": null, "y": 3}})).is_ok());
    }

    /// Optional fields: by default a null is written as the field's default (proto3 cannot tell); with
    /// optional.for.nullables it is an unset `optional` field, read back as null; with wrapper.for.nullables a
    /// `google.protobuf` wrapper, read back (with the setting) as its optional value, the other scalars required.
    #[test]
    fn nullable_fields_follow_optional_and_wrapper_for_nullables() {
        let schema = json!({"type": "struct", "optional": false, "fields": [
            {"field": "n", "type": "int32", "optional": true},
            {"field": "s", "type": "string", "optional": true},
            {"field": "at", "type": "int64", "optional": true, "name": CONNECT_TIMESTAMP, "version": 1}]});
        let nulls = json!({"n": null, "s": null, "at": null});
        let (_, plain) = round_trip(&schema, &nulls, WriteOptions::default());
        assert_eq!(plain, json!({"n": 0, "s": "", "at": null}));
        let optional = WriteOptions {
            optional_for_nullables: true,
            ..Default::default()
        };
        let d = proto_schema_of(&schema, optional).unwrap();
        assert!(d.text.contains("  optional int32 n = 1;"), "{}", d.text);
        assert!(
            d.text.contains("  google.protobuf.Timestamp at = 3;"),
            "{}",
            d.text
        );
        let (_, back) = round_trip(&schema, &nulls, optional);
        assert_eq!(back, nulls);
        let set = json!({"n": 0, "s": "", "at": 0});
        assert_eq!(round_trip(&schema, &set, optional).1, set);
        let wrapper = WriteOptions {
            wrapper_for_nullables: true,
            ..Default::default()
        };
        let d = proto_schema_of(&schema, wrapper).unwrap();
        assert!(
            d.text
                .contains("import \"google/protobuf/wrappers.proto\";"),
            "{}",
            d.text
        );
        assert!(
            d.text.contains("  google.protobuf.Int32Value n = 1;"),
            "{}",
            d.text
        );
        let (_, back) = round_trip(&schema, &nulls, wrapper);
        assert_eq!(back, nulls);
        let (back_schema, back) = round_trip(&schema, &json!({"n": 0, "s": "x", "at": 5}), wrapper);
        assert_eq!(back, json!({"n": 0, "s": "x", "at": 5}));
        assert_eq!(field(&back_schema, "n")["type"], "int32");
        assert_eq!(field(&back_schema, "n")["optional"], true);
        // Without the setting, a reader sees the wrapper's struct.
        let d = proto_schema_of(&schema, wrapper).unwrap();
        let m = compiled(&d);
        let body = prost_reflect::prost::Message::encode_to_vec(
            &message_of(&m, &schema, &json!({"n": 3, "s": null, "at": null})).unwrap(),
        );
        let plain =
            connect_value(&proto_json::decode(&m, &body).unwrap(), usize::MAX, false).unwrap();
        assert_eq!(plain, json!({"n": {"value": 3}, "s": null, "at": null}));
        // A required scalar next to wrapped ones reads back required.
        let mixed = json!({"type": "struct", "optional": false, "fields": [
            {"field": "k", "type": "int64", "optional": false},
            {"field": "n", "type": "int32", "optional": true}]});
        let (back_schema, back) = round_trip(&mixed, &json!({"k": 0, "n": null}), wrapper);
        assert_eq!(back, json!({"k": 0, "n": null}));
        assert_eq!(field(&back_schema, "k")["optional"], false);
    }

    /// Connect schemas Protobuf cannot express, and values that do not fit: errors naming the field.
    #[test]
    fn schemas_protobuf_cannot_express_are_errors_naming_the_field() {
        let with = |f: Value| {
            json!({"type": "struct", "optional": false, "fields": [
            {"field": "outer", "type": "struct", "optional": false, "fields": [f]}]})
        };
        let cases = [
            (
                json!({"field": "m", "type": "map", "optional": false,
                "keys": {"type": "struct", "optional": false, "fields": []},
                "values": {"type": "string", "optional": false}}),
                "field outer.m: a map whose keys are of type struct has no Protobuf form",
            ),
            (
                json!({"field": "m", "type": "map", "optional": false,
                "keys": {"type": "double", "optional": false}, "values": {"type": "string", "optional": false}}),
                "field outer.m: a map whose keys are of type double",
            ),
            (
                json!({"field": "a", "type": "array", "optional": false,
                "items": {"type": "array", "optional": false, "items": {"type": "int32", "optional": false}}}),
                "field outer.a: an array of arrays has no Protobuf form",
            ),
            (
                json!({"field": "a", "type": "array", "optional": false,
                "items": {"type": "map", "optional": false, "keys": {"type": "string", "optional": false},
                    "values": {"type": "string", "optional": false}}}),
                "field outer.a: an array of maps",
            ),
            (
                json!({"field": "m", "type": "map", "optional": false, "keys": {"type": "string", "optional": false},
                "values": {"type": "array", "optional": false, "items": {"type": "string", "optional": false}}}),
                "field outer.m: a map whose values are arrays",
            ),
            (
                json!({"field": "bad-name", "type": "string", "optional": false}),
                "field outer.bad-name: \"bad-name\" is not a Protobuf field name",
            ),
            (
                json!({"field": "e", "type": "string", "optional": false, "parameters": {
                ENUM: "E", "io.confluent.connect.protobuf.Enum.A": "1"}}),
                "field outer.e: enum E has no symbol numbered 0",
            ),
            (
                json!({"field": "t", "type": "int32", "optional": false, "parameters": {TAG: "0"}}),
                "field outer.t: io.confluent.connect.protobuf.Tag=0 is not a Protobuf field number",
            ),
        ];
        for (f, want) in cases {
            let e = proto_schema_of(&with(f), WriteOptions::default()).unwrap_err();
            assert!(e.starts_with(want), "{e}\nwanted {want}");
        }
        let e = proto_schema_of(
            &json!({"type": "array", "items": {"type": "int32"}}),
            WriteOptions::default(),
        )
        .unwrap_err();
        assert!(e.contains("writes structs"), "{e}");
        // Two different structs of one name.
        let two = json!({"type": "struct", "optional": false, "fields": [
            {"field": "a", "type": "struct", "name": "X", "optional": false, "fields": [
                {"field": "p", "type": "int32", "optional": false}]},
            {"field": "b", "type": "struct", "name": "X", "optional": false, "fields": [
                {"field": "q", "type": "int32", "optional": false}]}]});
        let e = proto_schema_of(&two, WriteOptions::default()).unwrap_err();
        assert!(
            e.starts_with("field b: two different struct schemas are named X"),
            "{e}"
        );
        // Two different enums of one name in one message; the same enum twice is one definition.
        let color = |symbols: Value| {
            let mut p = json!({ENUM: "Color"});
            for (i, s) in symbols.as_array().unwrap().iter().enumerate() {
                p[format!("{ENUM}.{}", s.as_str().unwrap())] = json!(i.to_string());
            }
            p
        };
        let enums = |b: Value| {
            json!({"type": "struct", "optional": false, "fields": [
                {"field": "a", "type": "string", "optional": false, "parameters": color(json!(["RED", "BLUE"]))},
                {"field": "b", "type": "string", "optional": false, "parameters": color(b)}]})
        };
        let e =
            proto_schema_of(&enums(json!(["RED", "GREEN"])), WriteOptions::default()).unwrap_err();
        assert!(
            e.starts_with("field b: two different enums are named Color"),
            "{e}"
        );
        let d = proto_schema_of(&enums(json!(["RED", "BLUE"])), WriteOptions::default()).unwrap();
        assert_eq!(d.text.matches("enum Color {").count(), 1, "{}", d.text);

        // Values that do not fit the schema.
        let schema = json!({"type": "struct", "optional": false, "fields": [
            {"field": "n", "type": "int32", "optional": false},
            {"field": "xs", "type": "array", "optional": false, "items": {"type": "int64", "optional": true}},
            {"field": "t", "type": "int32", "optional": false, "name": CONNECT_TIME, "version": 1}]});
        let m = compiled(&proto_schema_of(&schema, WriteOptions::default()).unwrap());
        for (value, want) in [
            (
                json!({"n": 5_000_000_000i64, "xs": [], "t": 0}),
                "field n: expected a 32-bit integer",
            ),
            (
                json!({"n": "x", "xs": [], "t": 0}),
                "field n: expected an integer",
            ),
            (
                json!({"n": 1, "xs": [1, null], "t": 0}),
                "field xs: item 1 is null",
            ),
            (
                json!({"n": 1, "xs": [], "t": 86_400_000}),
                "field t: expected a time of day",
            ),
            (json!(7), "the record's value: expected a struct"),
        ] {
            let e = message_of(&m, &schema, &value).unwrap_err();
            assert!(e.starts_with(want), "{e}\nwanted {want}");
        }
    }
}
