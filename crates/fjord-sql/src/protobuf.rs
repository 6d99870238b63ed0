//! Protobuf for VALUE_FORMAT/KEY_FORMAT 'PROTOBUF': the columns of a registered schema's message, the proto3
//! schema of a sink's columns (as ksqlDB writes it: `message ConnectDefault1`), and rows to and from messages
//! with `prost-reflect`.
//!
//! Types map as ksqlDB (through Confluent's Protobuf converter) maps them: int32, sint32 and sfixed32 are INT;
//! uint32, fixed32 and the 64-bit integers BIGINT (uint64 and fixed64 past 2^63 wrap, as Java's long); float and
//! double DOUBLE; bool BOOLEAN; string STRING; bytes BYTES; an enum STRING (the value's name); a message STRUCT
//! (fields upper-cased); `repeated` ARRAY; `map` MAP; `google.protobuf.Timestamp` TIMESTAMP; the wrappers
//! (`google.protobuf.StringValue`, `Int32Value`, ...) their primitive. A scalar that is not set reads as its proto3
//! default (0, "", false: proto3 cannot tell it from a default written), and a message field that is not set (a
//! wrapper, a timestamp, a struct) reads as NULL.
//!
//! A `oneof` is one STRUCT column, as ksqlDB infers it through Confluent's Protobuf converter (and as our Connect
//! converter maps it): named `<oneof>_<i>` (upper-cased; `i` its place among the message's oneofs, proto3
//! `optional`'s synthetic ones not counted), with a field per member, placed before the message's other fields.
//! The member that is set holds its value, the others are NULL; a oneof with no member set is NULL. A column
//! that names a member itself (a stream declared before oneofs were structs) still reads that member. Writing
//! such a STRUCT sets its one member that is not NULL (none: the oneof is left unset); a STRUCT with two members
//! set is refused, since a oneof holds one.
//!
//! Columns are matched to fields through an [`Index`] built once per compiled schema (the field named exactly,
//! else the field, then the oneof, named so but for case; a oneof's STRUCT fields among its members only), so
//! reading and writing a wide message, or each element of a repeated one, costs about a lookup per column, not
//! a scan of the message's fields.
//!
//! Bounded as the Avro path: a schema's message that contains itself, nests deeper than 64 or expands to more
//! than 10,000 types has no columns (`fjord_registry::wire`'s limits), and a record becomes at most
//! [`fjord_registry::wire::protobuf_value_budget`] values (an empty message of 2 bytes stands for a value per field).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    OneofDescriptor, ReflectMessage, Value as Proto,
};

use fjord_registry::proto_json::ProtoSchema;
use fjord_registry::wire::{MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES};

use crate::types::{SqlType, Value};

/// The message ksqlDB names the schemas it registers.
pub const MESSAGE: &str = "ConnectDefault1";

const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// A registered Protobuf schema compiled for SQL: the schema, its first message (what SQL reads and writes,
/// as ksqlDB and Confluent's tools take it when no message is named) and the [`Index`] of its messages'
/// fields. Derefs to the schema.
pub struct Compiled {
    schema: ProtoSchema,
    first: Result<(MessageDescriptor, Vec<i32>), String>,
    index: Arc<Index>,
}

impl Compiled {
    pub fn new(schema: ProtoSchema) -> Compiled {
        let index = Arc::new(Index::new(schema.file().parent_pool()));
        let first = schema.message(None);
        Compiled {
            schema,
            first,
            index,
        }
    }

    /// The schema's first message and its message indexes.
    pub fn first(&self) -> Result<&(MessageDescriptor, Vec<i32>), String> {
        self.first.as_ref().map_err(String::clone)
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }
}

impl std::ops::Deref for Compiled {
    type Target = ProtoSchema;
    fn deref(&self) -> &ProtoSchema {
        &self.schema
    }
}

/// What an SQL name of a message is: a field, or a (real) oneof, read as a STRUCT of its members, with its
/// members by name (see [`Names`]).
#[derive(Clone)]
enum Slot {
    Field(FieldDescriptor),
    Oneof(OneofDescriptor, HashMap<Arc<str>, Entry<FieldDescriptor>>),
}

/// What a name is found as: `exact` when the name is the field's own (not upper-cased).
#[derive(Clone)]
struct Entry<T> {
    target: T,
    exact: bool,
}

/// The oneofs of `m` that are not proto3 `optional`'s synthetic ones, each with its SQL name `<ONEOF>_<i>`.
fn real_oneofs(m: &MessageDescriptor) -> Vec<(String, OneofDescriptor)> {
    m.oneofs()
        .filter(|o| !o.is_synthetic())
        .enumerate()
        .map(|(i, o)| (format!("{}_{i}", o.name()).to_ascii_uppercase(), o))
        .collect()
}

/// The oneof `f` belongs to, unless it is the synthetic one of a proto3 `optional` field.
fn real_oneof(f: &FieldDescriptor) -> Option<OneofDescriptor> {
    f.containing_oneof().filter(|o| !o.is_synthetic())
}

/// `fields` by name: each by its exact name, then by its upper-cased one unless a name before took it.
fn by_name(
    fields: impl Iterator<Item = FieldDescriptor>,
) -> HashMap<Arc<str>, Entry<FieldDescriptor>> {
    let fields: Vec<FieldDescriptor> = fields.collect();
    let mut names = HashMap::with_capacity(fields.len());
    for f in fields.iter().cloned() {
        names.insert(
            f.name().into(),
            Entry {
                target: f,
                exact: true,
            },
        );
    }
    for f in fields {
        names
            .entry(f.name().to_ascii_uppercase().into())
            .or_insert(Entry {
                target: f,
                exact: false,
            });
    }
    names
}

/// What `name` finds in `names`: itself, else (when it has lower case) its upper-cased form; with the map's
/// own copy of the name found.
fn find<'a, T>(names: &'a HashMap<Arc<str>, T>, name: &str) -> Option<(&'a Arc<str>, &'a T)> {
    if let Some(found) = names.get_key_value(name) {
        return Some(found);
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return None;
    }
    names.get_key_value(&*name.to_ascii_uppercase())
}

/// The name a value read for `name` is given: the index's own copy when `name` was found as it is (shared by
/// every value read with the schema instead of a copy per value: an array of a million STRUCTs names each
/// field once).
fn shared<T>(found: Option<(&Arc<str>, T)>, name: &str) -> Arc<str> {
    match found {
        Some((k, _)) if **k == *name => k.clone(),
        _ => Arc::from(name),
    }
}

/// A message's SQL names: each field's exact name, then (where not taken) each field's upper-cased name, then
/// each real oneof's `<ONEOF>_<i>` (fields first: a field `pay_0` beside a oneof `pay` keeps the name it had
/// before oneofs were columns). Of names alike but for case, which [`columns`] refuses, the first is taken.
#[derive(Clone)]
struct Names {
    message: MessageDescriptor,
    slots: HashMap<Arc<str>, Entry<Slot>>,
}

impl Names {
    fn new(m: &MessageDescriptor) -> Names {
        let mut slots: HashMap<Arc<str>, Entry<Slot>> = by_name(m.fields())
            .into_iter()
            .map(|(n, e)| {
                (
                    n,
                    Entry {
                        target: Slot::Field(e.target),
                        exact: e.exact,
                    },
                )
            })
            .collect();
        for (n, o) in real_oneofs(m) {
            let members = by_name(o.fields());
            slots.entry(n.into()).or_insert(Entry {
                target: Slot::Oneof(o, members),
                exact: false,
            });
        }
        Names {
            message: m.clone(),
            slots,
        }
    }
}

/// Every message's [`Names`], built once per schema: what columns and STRUCT fields are matched with.
pub struct Index {
    messages: HashMap<Box<str>, Names>,
}

impl Index {
    /// The index of every message in `pool` (a schema's, with what it imports).
    pub fn new(pool: &DescriptorPool) -> Index {
        Index {
            messages: pool
                .all_messages()
                .map(|m| (m.full_name().into(), Names::new(&m)))
                .collect(),
        }
    }

    /// The names of `m`. A message not of the index's pool (one of the same name from another pool included)
    /// is never read or written with the index (its records are decoded with the schema it was built from):
    /// in a release build it is resolved the slow way.
    fn names(&self, m: &MessageDescriptor) -> std::borrow::Cow<'_, Names> {
        match self.messages.get(m.full_name()) {
            Some(names) if names.message == *m => std::borrow::Cow::Borrowed(names),
            _ => {
                debug_assert!(
                    false,
                    "the message {} is not of the index's schema",
                    m.full_name()
                );
                std::borrow::Cow::Owned(Names::new(m))
            }
        }
    }

    /// Whether `name` names a field or oneof of `m`: the field named exactly so, else the field or oneof named
    /// so but for case.
    pub fn has(&self, m: &MessageDescriptor, name: &str) -> bool {
        find(&self.names(m).slots, name).is_some()
    }
}

/// The one field of a message of one field (ksqlDB writes a key as a message of its one column, a STRUCT too).
pub fn single_field(m: &MessageDescriptor) -> Option<FieldDescriptor> {
    let mut fields = m.fields();
    match (fields.next(), fields.next()) {
        (Some(f), None) => Some(f),
        _ => None,
    }
}

/// The primitive kind a `google.protobuf` wrapper message holds (its field `value`), if `m` is one: only the
/// messages of `google/protobuf/wrappers.proto` itself, with one scalar field `value` (a schema may define its
/// own `google.protobuf.StringValue`, which must not be trusted to be a wrapper: it could contain itself).
fn wrapped(m: &MessageDescriptor) -> Option<FieldDescriptor> {
    if m.parent_file().name() != "google/protobuf/wrappers.proto" {
        return None;
    }
    let name = m.full_name().strip_prefix("google.protobuf.")?;
    if !matches!(
        name,
        "DoubleValue"
            | "FloatValue"
            | "Int64Value"
            | "UInt64Value"
            | "Int32Value"
            | "UInt32Value"
            | "BoolValue"
            | "StringValue"
            | "BytesValue"
    ) || m.fields().count() != 1
    {
        return None;
    }
    let f = m.get_field_by_name("value")?;
    (!f.is_list() && !f.is_map() && !matches!(f.kind(), Kind::Message(_))).then_some(f)
}

/// Whether `m` is `google.protobuf.Timestamp` of `google/protobuf/timestamp.proto` (not a schema's own message
/// of that name).
fn is_timestamp(m: &MessageDescriptor) -> bool {
    m.full_name() == TIMESTAMP && m.parent_file().name() == "google/protobuf/timestamp.proto"
}

/// The walk of a schema's message types, bounded as the module says.
struct Walk {
    open: Vec<String>,
    budget: usize,
}

impl Walk {
    fn step(&mut self, depth: usize) -> Result<(), String> {
        if self.budget == 0 {
            return Err(format!(
                "the Protobuf schema expands to more than {MAX_SCHEMA_NODES} types, which SQL does not read"
            ));
        }
        self.budget -= 1;
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the Protobuf schema nests messages more than {MAX_SCHEMA_DEPTH} deep, which SQL does not read"
            ));
        }
        Ok(())
    }

    fn message(
        &mut self,
        m: &MessageDescriptor,
        depth: usize,
    ) -> Result<Vec<(String, SqlType)>, String> {
        self.step(depth)?;
        let full = m.full_name().to_string();
        if self.open.contains(&full) {
            return Err(format!(
                "the Protobuf schema is recursive (message {full} contains itself), which has no SQL type"
            ));
        }
        self.open.push(full);
        let fields = self.fields(m, depth);
        self.open.pop();
        let fields = fields?;
        no_two_alike(m, fields.iter().map(|(n, _)| n.clone()))?;
        // Members too: a member `card` and a field `CARD` would be one name where a column names a member.
        no_two_alike(m, m.fields().map(|f| f.name().to_ascii_uppercase()))?;
        Ok(fields)
    }

    /// A message's columns: its real oneofs first, each a STRUCT of its members, then its other fields.
    fn fields(
        &mut self,
        m: &MessageDescriptor,
        depth: usize,
    ) -> Result<Vec<(String, SqlType)>, String> {
        let mut out = Vec::new();
        for (name, o) in real_oneofs(m) {
            self.step(depth + 1)?;
            let members = o
                .fields()
                .map(|f| self.named_field(&f, depth + 2))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| format!("oneof {}: {e}", o.name()))?;
            out.push((name, SqlType::Struct(members)));
        }
        for f in m.fields().filter(|f| real_oneof(f).is_none()) {
            out.push(self.named_field(&f, depth + 1)?);
        }
        Ok(out)
    }

    fn named_field(
        &mut self,
        f: &FieldDescriptor,
        depth: usize,
    ) -> Result<(String, SqlType), String> {
        Ok((
            f.name().to_ascii_uppercase(),
            self.field(f, depth)
                .map_err(|e| format!("field {}: {e}", f.name()))?,
        ))
    }

    fn field(&mut self, f: &FieldDescriptor, depth: usize) -> Result<SqlType, String> {
        self.step(depth)?;
        if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                return Err("a map without an entry message".into());
            };
            return Ok(SqlType::Map(
                Box::new(self.single(&entry.map_entry_key_field(), depth + 1)?),
                Box::new(self.single(&entry.map_entry_value_field(), depth + 1)?),
            ));
        }
        let t = self.single(f, depth)?;
        Ok(if f.is_list() {
            SqlType::Array(Box::new(t))
        } else {
            t
        })
    }

    /// The type of one value of `f` (an item when it is repeated).
    fn single(&mut self, f: &FieldDescriptor, depth: usize) -> Result<SqlType, String> {
        Ok(match f.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => SqlType::Int,
            Kind::Uint32
            | Kind::Fixed32
            | Kind::Int64
            | Kind::Uint64
            | Kind::Sint64
            | Kind::Fixed64
            | Kind::Sfixed64 => SqlType::Bigint,
            Kind::Float | Kind::Double => SqlType::Double,
            Kind::Bool => SqlType::Boolean,
            Kind::String | Kind::Enum(_) => SqlType::String,
            Kind::Bytes => SqlType::Bytes,
            Kind::Message(m) if is_timestamp(&m) => SqlType::Timestamp,
            Kind::Message(m) => match wrapped(&m) {
                Some(v) => self.single(&v, depth + 1)?,
                None => SqlType::Struct(self.message(&m, depth + 1)?),
            },
        })
    }
}

/// Err when two of a message's SQL names are alike (they are upper-cased).
fn no_two_alike(m: &MessageDescriptor, names: impl Iterator<Item = String>) -> Result<(), String> {
    let mut seen = HashSet::new();
    for n in names {
        if seen.contains(&n) {
            return Err(format!(
                "the message {} has two fields named {n} but for case, which SQL names alike (upper case)",
                m.full_name()
            ));
        }
        seen.insert(n);
    }
    Ok(())
}

/// The columns of a message: its fields, upper-cased as ksqlDB names them.
pub fn columns(m: &MessageDescriptor) -> Result<Vec<(String, SqlType)>, String> {
    Walk {
        open: Vec::new(),
        budget: MAX_SCHEMA_NODES,
    }
    .message(m, 0)
}

/// A key message as the key column's value: its one field, whatever the column's type (ksqlDB writes a single
/// key column, a STRUCT too, as a message of one field), or the message itself for a STRUCT key of a message
/// of several fields.
pub fn key_value(
    msg: &DynamicMessage,
    index: &Index,
    ty: &SqlType,
    left: &mut usize,
) -> Result<Value, String> {
    let d = msg.descriptor();
    match (single_field(&d), ty) {
        (Some(only), t) => field_value(msg, index, &only, t, left, 0),
        (None, SqlType::Struct(want)) => struct_value(msg, index, want, left, 0),
        (None, _) => Err(format!(
            "the key message {} has {} fields: one key column reads a message of one field",
            d.full_name(),
            d.fields().len()
        )),
    }
}

/// Takes one value from the budget.
fn spend(left: &mut usize) -> Result<(), String> {
    if *left == 0 {
        return Err("the record expands into more values than its size allows (its messages' unset fields read as defaults); it is refused as hostile or corrupt".into());
    }
    *left -= 1;
    Ok(())
}

/// The value of column `name` of type `ty` in `msg`: NULL when the message has no such field.
pub fn column(
    msg: &DynamicMessage,
    index: &Index,
    name: &str,
    ty: &SqlType,
    left: &mut usize,
) -> Result<Value, String> {
    let names = index.names(&msg.descriptor());
    let slot = find(&names.slots, name).map(|(_, e)| &e.target);
    slot_value(msg, index, slot, ty, left, 0)
}

/// How deep a value nests (messages in messages, lists, maps) before reading or writing it is refused: as deep
/// as a schema's messages may nest, whatever a schema check let through.
fn deeper(depth: usize) -> Result<usize, String> {
    // Twice the schema's limit: writing counts a message and its field as two levels.
    if depth >= 2 * MAX_SCHEMA_DEPTH {
        return Err(format!(
            "the Protobuf value nests more than {MAX_SCHEMA_DEPTH} deep, which SQL does not read or write"
        ));
    }
    Ok(depth + 1)
}

/// The value of what `slot` names in `msg` (nothing: NULL).
fn slot_value(
    msg: &DynamicMessage,
    index: &Index,
    slot: Option<&Slot>,
    ty: &SqlType,
    left: &mut usize,
    depth: usize,
) -> Result<Value, String> {
    match slot {
        Some(Slot::Field(f)) => field_value(msg, index, f, ty, left, depth),
        Some(Slot::Oneof(o, members)) => oneof_value(msg, index, o, members, ty, left, depth),
        // A NULL is a value too: a wide STRUCT type over many empty messages is as many values.
        None => spend(left).map(|()| Value::Null),
    }
}

/// A oneof as a STRUCT of its members (looked up among them, never among the message's other fields): NULL
/// when none is set, else the one set and NULL for the others.
fn oneof_value(
    msg: &DynamicMessage,
    index: &Index,
    o: &OneofDescriptor,
    members: &HashMap<Arc<str>, Entry<FieldDescriptor>>,
    ty: &SqlType,
    left: &mut usize,
    depth: usize,
) -> Result<Value, String> {
    spend(left)?;
    let depth = deeper(depth)?;
    let Some(set) = o.fields().find(|f| msg.has_field(f)) else {
        return Ok(Value::Null);
    };
    let SqlType::Struct(want) = ty else {
        return Err(format!("expected {ty}, found the oneof {}", o.name()));
    };
    want.iter()
        .map(|(n, t)| {
            let found = find(members, n);
            let v = match found {
                Some((_, e)) if e.target == set => {
                    field_value(msg, index, &e.target, t, left, depth)?
                }
                _ => spend(left).map(|()| Value::Null)?,
            };
            Ok((shared(found, n), v))
        })
        .collect::<Result<_, String>>()
        .map(Value::Struct)
}

/// A field's value: NULL for a message field (and a oneof member or proto3 `optional` field) that is not set,
/// the proto3 default for an unset scalar.
fn field_value(
    msg: &DynamicMessage,
    index: &Index,
    f: &FieldDescriptor,
    ty: &SqlType,
    left: &mut usize,
    depth: usize,
) -> Result<Value, String> {
    if !f.is_list() && !f.is_map() && f.supports_presence() && !msg.has_field(f) {
        spend(left)?;
        return Ok(Value::Null);
    }
    to_value(index, f, &msg.get_field(f), ty, left, depth)
}

/// A value of field `f` (a whole list or map, or one item) as a value of `ty`.
fn to_value(
    index: &Index,
    f: &FieldDescriptor,
    v: &Proto,
    ty: &SqlType,
    left: &mut usize,
    depth: usize,
) -> Result<Value, String> {
    spend(left)?;
    let depth = deeper(depth)?;
    let bad = || format!("expected {ty}, found the Protobuf value {}", shown(v));
    Ok(match v {
        Proto::List(items) => match ty {
            SqlType::Array(t) => Value::Array(
                items
                    .iter()
                    .map(|x| to_value(index, f, x, t, left, depth))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(format!("expected {ty}, found a repeated field")),
        },
        Proto::Map(entries) => {
            let (SqlType::Map(kt, vt), Kind::Message(entry)) = (ty, f.kind()) else {
                return Err(format!("expected {ty}, found a map"));
            };
            let value_field = entry.map_entry_value_field();
            let mut pairs: Vec<(&MapKey, &Proto)> = entries.iter().collect();
            // A map's entries have no order; sorted, the same record always gives the same row.
            pairs.sort_by(|a, b| {
                fjord_registry::proto_json::key_order(a.0)
                    .cmp(&fjord_registry::proto_json::key_order(b.0))
            });
            let mut out = Vec::with_capacity(pairs.len());
            for (k, x) in pairs {
                spend(left)?;
                let key = match k {
                    MapKey::Bool(b) => scalar_bool(*b, kt),
                    MapKey::I32(i) => int_value(i64::from(*i), kt),
                    MapKey::I64(i) => int_value(*i, kt),
                    MapKey::U32(i) => int_value(i64::from(*i), kt),
                    MapKey::U64(i) => int_value(*i as i64, kt),
                    MapKey::String(s) => text_value(s, kt),
                }
                .ok_or_else(|| format!("the map key {k:?} is not a {kt}"))?;
                out.push((key, to_value(index, &value_field, x, vt, left, depth)?));
            }
            Value::Map(out)
        }
        Proto::Bool(b) => scalar_bool(*b, ty).ok_or_else(bad)?,
        Proto::I32(i) => int_value(i64::from(*i), ty).ok_or_else(bad)?,
        Proto::I64(i) => int_value(*i, ty).ok_or_else(bad)?,
        Proto::U32(i) => int_value(i64::from(*i), ty).ok_or_else(bad)?,
        // No unsigned 64-bit SQL type: read as Java's long, as Confluent's converter does.
        Proto::U64(i) => int_value(*i as i64, ty).ok_or_else(bad)?,
        Proto::F32(x) => float_value(f64::from(*x), ty).ok_or_else(bad)?,
        Proto::F64(x) => float_value(*x, ty).ok_or_else(bad)?,
        Proto::String(s) => text_value(s, ty).ok_or_else(bad)?,
        Proto::Bytes(b) => match ty {
            SqlType::Bytes => Value::Bytes(b.to_vec()),
            SqlType::String => Value::String(String::from_utf8_lossy(b).into_owned()),
            _ => return Err(bad()),
        },
        Proto::EnumNumber(n) => {
            let name = match f.kind() {
                Kind::Enum(e) => match e.get_value(*n) {
                    Some(symbol) => symbol.name().to_string(),
                    // What protobuf-java names a number the enum does not define.
                    None => format!("UNKNOWN_ENUM_VALUE_{}_{n}", e.name()),
                },
                _ => n.to_string(),
            };
            match ty {
                SqlType::String => Value::String(name),
                other => int_value(i64::from(*n), other).ok_or_else(bad)?,
            }
        }
        Proto::Message(m) if is_timestamp(&m.descriptor()) => {
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
                .ok_or("the timestamp is out of range")?;
            int_value(millis, ty).ok_or_else(bad)?
        }
        Proto::Message(m) => {
            let d = m.descriptor();
            if let Some(inner) = wrapped(&d) {
                return to_value(index, &inner, &m.get_field(&inner), ty, left, depth);
            }
            match ty {
                SqlType::Struct(want) => struct_value(m, index, want, left, depth)?,
                _ => {
                    return Err(format!(
                        "expected {ty}, found the message {}",
                        d.full_name()
                    ))
                }
            }
        }
    })
}

/// A value as an error shows it: at most 200 characters of it (a record's value can be megabytes).
fn shown(v: &Proto) -> String {
    let mut text = format!("{v:?}");
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// A message as a STRUCT of the fields `want` names.
fn struct_value(
    msg: &DynamicMessage,
    index: &Index,
    want: &[(String, SqlType)],
    left: &mut usize,
    depth: usize,
) -> Result<Value, String> {
    let names = index.names(&msg.descriptor());
    want.iter()
        .map(|(n, t)| {
            let found = find(&names.slots, n);
            let v = slot_value(msg, index, found.map(|(_, e)| &e.target), t, left, depth)?;
            Ok((shared(found, n), v))
        })
        .collect::<Result<_, String>>()
        .map(Value::Struct)
}

fn scalar_bool(b: bool, ty: &SqlType) -> Option<Value> {
    match ty {
        SqlType::Boolean => Some(Value::Bool(b)),
        SqlType::String => Some(Value::String(b.to_string())),
        _ => None,
    }
}

/// An integer as a column of `ty` (as Avro's are read).
fn int_value(i: i64, ty: &SqlType) -> Option<Value> {
    crate::avro::int_value(i, false, ty)
}

use crate::avro::float_value;

fn text_value(s: &str, ty: &SqlType) -> Option<Value> {
    match ty {
        SqlType::String => Some(Value::String(s.to_string())),
        other => Value::from_text(s, other).ok(),
    }
}

// ---- Writing ----

/// The proto3 schema ksqlDB registers for a sink's columns: `message ConnectDefault1` with a field per column in
/// order (numbered from 1, named as the column), a STRUCT a nested message `ConnectDefaultN`, TIMESTAMP
/// `google.protobuf.Timestamp`. A NULL is written as an unset field (read back as the proto3 default, as
/// ksqlDB's default representation does). Err for what proto3 cannot hold: a column name that is not a
/// Protobuf identifier, an array of arrays or of maps, a map with keys other than STRING, INT, BIGINT or
/// BOOLEAN, and DECIMAL, DATE and TIME (not written to PROTOBUF yet).
pub fn schema_text<'a>(
    cols: impl Iterator<Item = (&'a str, &'a SqlType)>,
) -> Result<String, String> {
    let mut gen = Gen {
        next: 2,
        timestamp: false,
    };
    let cols: Vec<(&str, &SqlType)> = cols.collect();
    let body = gen.message(MESSAGE, &cols, 0)?;
    let mut out = String::from("syntax = \"proto3\";\n");
    if gen.timestamp {
        out.push_str("\nimport \"google/protobuf/timestamp.proto\";\n");
    }
    out.push('\n');
    out.push_str(&body);
    Ok(out)
}

struct Gen {
    /// The number of the next nested message (`ConnectDefault<next>`).
    next: usize,
    timestamp: bool,
}

fn identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the column {name} is not a Protobuf field name (letters, digits and _), which PROTOBUF cannot write: rename it with AS"
        ))
    }
}

impl Gen {
    fn message(
        &mut self,
        name: &str,
        fields: &[(&str, &SqlType)],
        indent: usize,
    ) -> Result<String, String> {
        let pad = "  ".repeat(indent);
        let mut nested = String::new();
        let mut lines = String::new();
        for (i, (n, t)) in fields.iter().enumerate() {
            identifier(n)?;
            let ty = match t {
                SqlType::Array(item) => {
                    if matches!(**item, SqlType::Array(_) | SqlType::Map(..)) {
                        return Err(format!(
                            "the column or field {n} is {t}: an array of arrays or maps has no proto3 type"
                        ));
                    }
                    format!("repeated {}", self.single(n, item, indent, &mut nested)?)
                }
                SqlType::Map(k, v) => {
                    let key = match **k {
                        SqlType::String => "string",
                        SqlType::Int => "int32",
                        SqlType::Bigint => "int64",
                        SqlType::Boolean => "bool",
                        _ => {
                            return Err(format!(
                                "the column or field {n} is {t}: proto3 map keys are STRING, INT, BIGINT or BOOLEAN"
                            ))
                        }
                    };
                    if matches!(**v, SqlType::Array(_) | SqlType::Map(..)) {
                        return Err(format!(
                            "the column or field {n} is {t}: a map of arrays or maps has no proto3 type"
                        ));
                    }
                    format!("map<{key}, {}>", self.single(n, v, indent, &mut nested)?)
                }
                other => self.single(n, other, indent, &mut nested)?,
            };
            let _ = writeln!(lines, "{pad}  {ty} {n} = {};", i + 1);
        }
        Ok(format!("{pad}message {name} {{\n{lines}{nested}{pad}}}\n"))
    }

    /// The proto3 type of one value of `t`; a STRUCT's message is written into `nested`.
    fn single(
        &mut self,
        name: &str,
        t: &SqlType,
        indent: usize,
        nested: &mut String,
    ) -> Result<String, String> {
        Ok(match t {
            SqlType::Boolean => "bool".into(),
            SqlType::Int => "int32".into(),
            SqlType::Bigint => "int64".into(),
            SqlType::Double => "double".into(),
            SqlType::String => "string".into(),
            SqlType::Bytes => "bytes".into(),
            SqlType::Timestamp => {
                self.timestamp = true;
                "google.protobuf.Timestamp".into()
            }
            SqlType::Struct(fields) => {
                let m = format!("ConnectDefault{}", self.next);
                self.next += 1;
                let fields: Vec<(&str, &SqlType)> =
                    fields.iter().map(|(n, t)| (n.as_str(), t)).collect();
                nested.push_str(&self.message(&m, &fields, indent + 1)?);
                m
            }
            SqlType::Decimal(..) | SqlType::Date | SqlType::Time => {
                return Err(format!(
                    "the column or field {name} is {t}, which PROTOBUF does not write yet: CAST it to DOUBLE, INT or STRING"
                ))
            }
            SqlType::Array(_) | SqlType::Map(..) => {
                return Err(format!(
                    "the column or field {name} nests {t} where proto3 has no type for it"
                ))
            }
        })
    }
}

/// A message of `m` from named values: each sets the field named exactly so, else the field or oneof named so
/// but for case (a field no value names, or named by a NULL, is left unset; a value that names nothing is not
/// written). A value named but for case does not replace a field set by a value named exactly or by one before
/// it, nor a oneof's value a member set so. A oneof's value is a STRUCT of its members of which at most one is
/// not NULL.
pub fn message<N: AsRef<str>>(
    m: &MessageDescriptor,
    index: &Index,
    values: &[(N, Value)],
) -> Result<DynamicMessage, String> {
    message_at(m, index, values, 0)
}

/// A message of one field (a key's) holding `v`; Err when `m` does not have exactly one field.
pub fn single_field_message(
    m: &MessageDescriptor,
    index: &Index,
    v: &Value,
) -> Result<DynamicMessage, String> {
    let f = single_field(m).ok_or_else(|| {
        format!(
            "the message {} has {} fields: a value that is not a STRUCT is written to a message of one field",
            m.full_name(),
            m.fields().len()
        )
    })?;
    let mut msg = DynamicMessage::new(m.clone());
    if !v.is_null() {
        let x = from_value(index, &f, v, 1).map_err(|e| format!("field {}: {e}", f.name()))?;
        msg.set_field(&f, x);
    }
    Ok(msg)
}

fn message_at<N: AsRef<str>>(
    m: &MessageDescriptor,
    index: &Index,
    values: &[(N, Value)],
    depth: usize,
) -> Result<DynamicMessage, String> {
    let depth = deeper(depth)?;
    let names = index.names(m);
    let mut msg = DynamicMessage::new(m.clone());
    // Values named exactly as their field are set first; those named so only but for case (and oneofs) after.
    let mut later: Vec<(&Slot, &Value)> = Vec::new();
    for (n, v) in values {
        let n = n.as_ref();
        if v.is_null() {
            continue;
        }
        match find(&names.slots, n) {
            Some((k, e)) if e.exact && **k == *n => {
                if let Slot::Field(f) = &e.target {
                    set_field(&mut msg, index, f, v, depth)?;
                }
            }
            Some((_, e)) => later.push((&e.target, v)),
            None => {}
        }
    }
    if later.is_empty() {
        return Ok(msg);
    }
    // A field set already (named exactly, or by a value before) is not replaced, nor a oneof one of whose
    // members is set (by its STRUCT or a member's own value).
    let mut done: HashSet<u32> = values
        .iter()
        .filter(|(_, v)| !v.is_null())
        .filter_map(|(n, _)| m.get_field_by_name(n.as_ref()))
        .map(|f| f.number())
        .collect();
    for (slot, v) in later {
        match slot {
            Slot::Field(f) => {
                let taken = match real_oneof(f) {
                    Some(o) => o.fields().any(|g| done.contains(&g.number())),
                    None => done.contains(&f.number()),
                };
                if !taken {
                    done.insert(f.number());
                    set_field(&mut msg, index, f, v, depth)?;
                }
            }
            Slot::Oneof(o, members) => {
                if o.fields().any(|f| done.contains(&f.number())) {
                    continue;
                }
                let set = set_oneof(&mut msg, index, members, v, depth)
                    .map_err(|e| format!("oneof {}: {e}", o.name()))?;
                if let Some(f) = set {
                    done.insert(f.number());
                }
            }
        }
    }
    Ok(msg)
}

fn set_field(
    msg: &mut DynamicMessage,
    index: &Index,
    f: &FieldDescriptor,
    v: &Value,
    depth: usize,
) -> Result<(), String> {
    let x = from_value(index, f, v, depth).map_err(|e| format!("field {}: {e}", f.name()))?;
    msg.set_field(f, x);
    Ok(())
}

/// Sets the member of a oneof (its `members`) that the STRUCT `v` holds (its one field that is not NULL),
/// returning it (none: the oneof is left unset).
fn set_oneof(
    msg: &mut DynamicMessage,
    index: &Index,
    members: &HashMap<Arc<str>, Entry<FieldDescriptor>>,
    v: &Value,
    depth: usize,
) -> Result<Option<FieldDescriptor>, String> {
    let Value::Struct(fields) = v else {
        return Err(format!(
            "{} is not a STRUCT of the oneof's members",
            v.to_text()
        ));
    };
    let mut set: Option<FieldDescriptor> = None;
    for (n, x) in fields {
        if x.is_null() {
            continue;
        }
        let Some((_, e)) = find(members, n) else {
            return Err(format!("{n} is not one of its members"));
        };
        let f = &e.target;
        if let Some(other) = &set {
            return Err(format!(
                "{} and {} are both set, and a oneof holds one member",
                other.name(),
                f.name()
            ));
        }
        let value = from_value(index, f, x, depth).map_err(|e| format!("{n}: {e}"))?;
        msg.set_field(f, value);
        set = Some(f.clone());
    }
    Ok(set)
}

/// A value as the value of field `f` (a whole list or map when it is one).
fn from_value(
    index: &Index,
    f: &FieldDescriptor,
    v: &Value,
    depth: usize,
) -> Result<Proto, String> {
    if f.is_map() {
        let (Value::Map(entries), Kind::Message(entry)) = (v, f.kind()) else {
            return Err(format!("{} is not a map", v.to_text()));
        };
        let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let mut out = std::collections::HashMap::new();
        for (k, x) in entries {
            let key = match single(index, &kf, k, depth)? {
                Proto::Bool(b) => MapKey::Bool(b),
                Proto::I32(i) => MapKey::I32(i),
                Proto::I64(i) => MapKey::I64(i),
                Proto::U32(i) => MapKey::U32(i),
                Proto::U64(i) => MapKey::U64(i),
                Proto::String(s) => MapKey::String(s),
                other => return Err(format!("{other:?} is not a map key")),
            };
            let x = if x.is_null() {
                Proto::default_value(&vf.kind())
            } else {
                single(index, &vf, x, depth)?
            };
            out.insert(key, x);
        }
        return Ok(Proto::Map(out));
    }
    if f.is_list() {
        let Value::Array(items) = v else {
            return Err(format!("{} is not an array", v.to_text()));
        };
        return items
            .iter()
            .map(|x| {
                if x.is_null() {
                    Err("a NULL element, which a repeated Protobuf field cannot hold".to_string())
                } else {
                    single(index, f, x, depth)
                }
            })
            .collect::<Result<_, _>>()
            .map(Proto::List);
    }
    single(index, f, v, depth)
}

/// One (non-NULL) value of `f`'s kind.
fn single(index: &Index, f: &FieldDescriptor, v: &Value, depth: usize) -> Result<Proto, String> {
    let depth = deeper(depth)?;
    let bad = || format!("the value {} does not fit {:?}", v.to_text(), f.kind());
    let int = || v.as_i64().ok_or_else(bad);
    Ok(match f.kind() {
        Kind::Bool => match v {
            Value::Bool(b) => Proto::Bool(*b),
            _ => return Err(bad()),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Proto::I32(i32::try_from(int()?).map_err(|_| bad())?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Proto::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => Proto::U32(u32::try_from(int()?).map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => Proto::U64(int()? as u64),
        Kind::Float => Proto::F32(v.as_f64().ok_or_else(bad)? as f32),
        Kind::Double => Proto::F64(v.as_f64().ok_or_else(bad)?),
        Kind::String => Proto::String(match v {
            Value::String(s) => s.clone(),
            other => other.to_text(),
        }),
        Kind::Bytes => match v {
            Value::Bytes(b) => Proto::Bytes(b.clone().into()),
            Value::String(s) => Proto::Bytes(s.clone().into_bytes().into()),
            _ => return Err(bad()),
        },
        Kind::Enum(e) => match v {
            Value::String(s) => Proto::EnumNumber(
                e.get_value_by_name(s)
                    .ok_or_else(|| format!("{s} is not a value of the enum {}", e.name()))?
                    .number(),
            ),
            other => Proto::EnumNumber(
                i32::try_from(other.as_i64().ok_or_else(bad)?).map_err(|_| bad())?,
            ),
        },
        Kind::Message(m) if is_timestamp(&m) => {
            let ms = int()?;
            let mut t = DynamicMessage::new(m.clone());
            t.set_field_by_name("seconds", Proto::I64(ms.div_euclid(1000)));
            t.set_field_by_name(
                "nanos",
                Proto::I32((ms.rem_euclid(1000) * 1_000_000) as i32),
            );
            Proto::Message(t)
        }
        Kind::Message(m) => {
            if let Some(inner) = wrapped(&m) {
                let mut w = DynamicMessage::new(m.clone());
                w.set_field(&inner, single(index, &inner, v, depth)?);
                return Ok(Proto::Message(w));
            }
            let Value::Struct(fields) = v else {
                return Err(bad());
            };
            Proto::Message(message_at(&m, index, fields, depth)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_registry::proto_json::{self, ProtoSchema};
    use prost_reflect::prost::Message as _;
    use serde_json::json;

    const SHOP: &str = r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
enum Color { RED = 0; BLUE = 1; }
message Order {
  string id = 1;
  int32 qty = 2;
  sint32 delta = 3;
  uint32 small = 4;
  uint64 big = 5;
  fixed32 f32 = 6;
  sfixed64 sf64 = 7;
  float ratio = 8;
  double price = 9;
  bool paid = 10;
  bytes raw = 11;
  Color color = 12;
  repeated string tags = 13;
  map<string, int64> totals = 14;
  google.protobuf.Timestamp at = 15;
  google.protobuf.StringValue note = 16;
  Line line = 17;
  repeated Line lines = 18;
  oneof pay { string card = 19; int32 cash = 20; }
  message Line { string sku = 1; int32 n = 2; }
}
"#;

    /// The index of `m`'s schema.
    fn ix(m: &MessageDescriptor) -> Index {
        Index::new(m.parent_pool())
    }

    fn order() -> MessageDescriptor {
        ProtoSchema::compile(SHOP, &[])
            .unwrap()
            .message(None)
            .unwrap()
            .0
    }

    fn line_ty() -> SqlType {
        SqlType::Struct(vec![
            ("SKU".into(), SqlType::String),
            ("N".into(), SqlType::Int),
        ])
    }

    #[test]
    fn protobuf_types_map_to_sql_types_as_ksqldb_maps_them() {
        let cols = columns(&order()).unwrap();
        let want = vec![
            // The oneof, first: a STRUCT of its members named after it and its place, as ksqlDB infers it.
            (
                "PAY_0",
                SqlType::Struct(vec![
                    ("CARD".into(), SqlType::String),
                    ("CASH".into(), SqlType::Int),
                ]),
            ),
            ("ID", SqlType::String),
            ("QTY", SqlType::Int),
            ("DELTA", SqlType::Int),
            ("SMALL", SqlType::Bigint),
            ("BIG", SqlType::Bigint),
            ("F32", SqlType::Bigint),
            ("SF64", SqlType::Bigint),
            ("RATIO", SqlType::Double),
            ("PRICE", SqlType::Double),
            ("PAID", SqlType::Boolean),
            ("RAW", SqlType::Bytes),
            ("COLOR", SqlType::String),
            ("TAGS", SqlType::Array(Box::new(SqlType::String))),
            (
                "TOTALS",
                SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Bigint)),
            ),
            ("AT", SqlType::Timestamp),
            ("NOTE", SqlType::String),
            ("LINE", line_ty()),
            ("LINES", SqlType::Array(Box::new(line_ty()))),
        ];
        let want: Vec<(String, SqlType)> =
            want.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        assert_eq!(cols, want);
    }

    fn row(m: &MessageDescriptor, j: serde_json::Value) -> Vec<Value> {
        let body = proto_json::from_json(m, &j).unwrap();
        let msg = proto_json::decode(m, &body).unwrap();
        let mut left = fjord_registry::wire::protobuf_value_budget(body.len());
        let index = ix(m);
        columns(m)
            .unwrap()
            .iter()
            .map(|(n, t)| column(&msg, &index, n, t, &mut left).unwrap())
            .collect()
    }

    #[test]
    fn messages_read_as_rows_with_proto3_defaults_and_nulls_for_unset_messages() {
        let m = order();
        let got = row(
            &m,
            json!({"id": "o-1", "qty": -3, "delta": -7, "small": 4000000000u32, "big": "18446744073709551615",
                   "f32": 9, "sf64": "-5", "ratio": 0.5, "price": 2.25, "paid": true, "raw": "AQI=",
                   "color": "BLUE", "tags": ["a", "b"], "totals": {"y": "2", "x": "1"},
                   "at": "2023-11-14T22:13:20.123Z", "note": "hi", "line": {"sku": "s"},
                   "lines": [{"sku": "a", "n": 1}, {}], "cash": 5}),
        );
        let line = |sku: &str, n| {
            Value::Struct(vec![
                ("SKU".into(), Value::String(sku.into())),
                ("N".into(), Value::Int(n)),
            ])
        };
        assert_eq!(
            got,
            vec![
                Value::Struct(vec![
                    ("CARD".into(), Value::Null),
                    ("CASH".into(), Value::Int(5)),
                ]),
                Value::String("o-1".into()),
                Value::Int(-3),
                Value::Int(-7),
                Value::Bigint(4_000_000_000),
                Value::Bigint(-1),
                Value::Bigint(9),
                Value::Bigint(-5),
                Value::Double(0.5),
                Value::Double(2.25),
                Value::Bool(true),
                Value::Bytes(vec![1, 2]),
                Value::String("BLUE".into()),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
                Value::Map(vec![
                    (Value::String("x".into()), Value::Bigint(1)),
                    (Value::String("y".into()), Value::Bigint(2)),
                ]),
                Value::Timestamp(1_700_000_000_123),
                Value::String("hi".into()),
                line("s", 0),
                Value::Array(vec![line("a", 1), line("", 0)]),
            ]
        );
        // Nothing set: scalars are their defaults, messages (wrapper, timestamp, struct) and the oneof NULL.
        let empty = row(&m, json!({}));
        assert_eq!(empty[1], Value::String(String::new()));
        assert_eq!(empty[2], Value::Int(0));
        assert_eq!(empty[10], Value::Bool(false));
        assert_eq!(empty[12], Value::String("RED".into()));
        assert_eq!(empty[13], Value::Array(vec![]));
        for i in [0, 15, 16, 17] {
            assert_eq!(empty[i], Value::Null, "column {i}");
        }
    }

    /// A oneof reads as one STRUCT column, writes from it (its one member not NULL), and a column naming a
    /// member itself still reads it; two members set are refused. Before, each member was a column of its own
    /// and `PAY_0` named nothing (NULL, and dropped when written).
    #[test]
    fn a_oneof_is_one_struct_column_read_and_written() {
        let m = order();
        let index = ix(&m);
        let pay = SqlType::Struct(vec![
            ("CARD".into(), SqlType::String),
            ("CASH".into(), SqlType::Int),
        ]);
        let card = Value::Struct(vec![
            ("CARD".into(), Value::String("visa".into())),
            ("CASH".into(), Value::Null),
        ]);
        let msg = message(&m, &index, &[("PAY_0", card.clone())]).unwrap();
        let back = proto_json::decode(&m, &msg.encode_to_vec()).unwrap();
        let mut left = usize::MAX;
        assert_eq!(
            column(&back, &index, "PAY_0", &pay, &mut left).unwrap(),
            card
        );
        assert_eq!(
            column(&back, &index, "card", &SqlType::String, &mut left).unwrap(),
            Value::String("visa".into())
        );
        assert_eq!(
            column(&back, &index, "CASH", &SqlType::Int, &mut left).unwrap(),
            Value::Null
        );
        let both = Value::Struct(vec![
            ("CARD".into(), Value::String("visa".into())),
            ("CASH".into(), Value::Int(1)),
        ]);
        let e = message(&m, &index, &[("PAY_0", both)]).unwrap_err();
        assert!(e.contains("both set"), "{e}");
        // Nothing set: the oneof is left unset and reads as NULL.
        let none = Value::Struct(vec![("CARD".into(), Value::Null)]);
        let msg = message(&m, &index, &[("PAY_0", none)]).unwrap();
        assert_eq!(
            column(&msg, &index, "PAY_0", &pay, &mut left).unwrap(),
            Value::Null
        );
    }

    /// The field names of STRUCTs read with a schema are the schema's own, shared: every element of a
    /// repeated message names its fields with the same `Arc<str>`, not a copy each. Before, each element
    /// cloned each name.
    #[test]
    fn struct_field_names_are_shared_across_elements() {
        let m = order();
        let index = ix(&m);
        let body = proto_json::from_json(&m, &json!({"lines": [{"sku": "a"}, {"n": 2}]})).unwrap();
        let msg = proto_json::decode(&m, &body).unwrap();
        let ty = SqlType::Array(Box::new(line_ty()));
        let Value::Array(items) =
            column(&msg, &index, "LINES", &ty, &mut usize::MAX.clone()).unwrap()
        else {
            panic!("not an array")
        };
        let names: Vec<Vec<Arc<str>>> = items
            .iter()
            .map(|v| match v {
                Value::Struct(f) => f.iter().map(|(n, _)| n.clone()).collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(&*names[0][0], "SKU");
        assert!(Arc::ptr_eq(&names[0][0], &names[1][0]));
        assert!(Arc::ptr_eq(&names[0][1], &names[1][1]));
    }

    /// Columns are matched through the schema's index: a message of 5,000 fields and a repeated message of
    /// 2,000 fields, read by upper-cased names (which miss an exact lookup) and written back, come out right.
    /// It checks correctness only, not speed (nothing is timed); before the index, each column (and each
    /// STRUCT field of each element) scanned every field of its message.
    #[test]
    fn a_wide_message_reads_and_writes_through_the_index() {
        let mut text = String::from("syntax = \"proto3\";\nmessage Wide {\n");
        for i in 0..5_000 {
            let _ = writeln!(text, "  int64 f{i} = {};", i + 1);
        }
        text.push_str("  repeated Item items = 5001;\n}\nmessage Item {\n");
        for i in 0..2_000 {
            let _ = writeln!(text, "  string g{i} = {};", i + 1);
        }
        text.push_str("}\n");
        let schema = Compiled::new(ProtoSchema::compile(&text, &[]).unwrap());
        let (m, _) = schema.first().unwrap();
        let index = schema.index();
        let cols = columns(m).unwrap();
        assert_eq!(cols.len(), 5_001);
        let item = |k: usize| {
            Value::Struct(
                (0..2_000)
                    .map(|i| (format!("G{i}").into(), Value::String(format!("{k}-{i}"))))
                    .collect(),
            )
        };
        let mut values: Vec<(String, Value)> = (0..5_000)
            .map(|i| (format!("F{i}"), Value::Bigint(i * 3)))
            .collect();
        values.push(("ITEMS".into(), Value::Array((0..50).map(item).collect())));
        let msg = message(m, index, &values).unwrap();
        let back = proto_json::decode(m, &msg.encode_to_vec()).unwrap();
        let mut left = usize::MAX;
        for ((name, ty), (_, want)) in cols.iter().zip(&values) {
            assert_eq!(
                &column(&back, index, name, ty, &mut left).unwrap(),
                want,
                "{name}"
            );
        }
    }

    /// Many empty messages in a few bytes each are many values; past the budget the record is refused, not
    /// expanded.
    #[test]
    fn a_record_of_many_empty_messages_is_refused_past_the_value_budget() {
        let m = order();
        let lines: Vec<serde_json::Value> = (0..20_000).map(|_| json!({})).collect();
        let body = proto_json::from_json(&m, &json!({ "lines": lines })).unwrap();
        let msg = proto_json::decode(&m, &body).unwrap();
        let mut left = fjord_registry::wire::protobuf_value_budget(body.len());
        let wide = SqlType::Array(Box::new(SqlType::Struct(
            (0..200).map(|i| (format!("X{i}"), SqlType::Int)).collect(),
        )));
        let e = column(&msg, &ix(&m), "LINES", &wide, &mut left).unwrap_err();
        assert!(e.contains("hostile or corrupt"), "{e}");
    }

    #[test]
    fn recursive_and_very_deep_schemas_have_no_columns() {
        let rec = "syntax = \"proto3\";\nmessage Node { Node next = 1; int32 v = 2; }\n";
        let m = ProtoSchema::compile(rec, &[])
            .unwrap()
            .message(None)
            .unwrap()
            .0;
        assert!(columns(&m).unwrap_err().contains("recursive"));
        let mut deep = String::from("syntax = \"proto3\";\nmessage M0 { int32 v = 1; }\n");
        for i in 1..70 {
            let _ = writeln!(deep, "message M{i} {{ M{} x = 1; }}", i - 1);
        }
        let s = ProtoSchema::compile(&deep, &[]).unwrap();
        let m = s.message(Some("M69")).unwrap().0;
        assert!(columns(&m).unwrap_err().contains("deep"));
    }

    /// The schema of a sink's columns compiles, reads back as the same columns, and a row written with it reads
    /// back as the row (a NULL scalar as its default, as ksqlDB's default representation).
    #[test]
    fn a_sink_schema_round_trips_its_rows() {
        let cols = vec![
            ("ID".to_string(), SqlType::String),
            ("N".to_string(), SqlType::Int),
            ("BIG".to_string(), SqlType::Bigint),
            ("AT".to_string(), SqlType::Timestamp),
            (
                "TAGS".to_string(),
                SqlType::Array(Box::new(SqlType::String)),
            ),
            (
                "M".to_string(),
                SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Double)),
            ),
            (
                "S".to_string(),
                SqlType::Struct(vec![
                    ("X".into(), SqlType::Double),
                    (
                        "T".into(),
                        SqlType::Struct(vec![("B".into(), SqlType::Boolean)]),
                    ),
                ]),
            ),
            ("RAW".to_string(), SqlType::Bytes),
        ];
        let text = schema_text(cols.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
        assert!(text.starts_with("syntax = \"proto3\";"), "{text}");
        assert!(text.contains("message ConnectDefault1 {"), "{text}");
        let schema = ProtoSchema::compile(&text, &[]).unwrap();
        let (m, path) = schema.message(None).unwrap();
        assert_eq!((m.name(), path), ("ConnectDefault1", vec![0]));
        assert_eq!(columns(&m).unwrap(), cols);
        let vals = [
            Value::String("a".into()),
            Value::Null,
            Value::Bigint(-9_000_000_000),
            Value::Timestamp(-1_500),
            Value::Array(vec![Value::String("x".into())]),
            Value::Map(vec![(Value::String("k".into()), Value::Double(0.5))]),
            Value::Struct(vec![
                ("X".into(), Value::Double(1.5)),
                (
                    "T".into(),
                    Value::Struct(vec![("B".into(), Value::Bool(true))]),
                ),
            ]),
            Value::Bytes(vec![0, 255]),
        ];
        let named: Vec<(&str, Value)> = cols
            .iter()
            .zip(&vals)
            .map(|((n, _), v)| (n.as_str(), v.clone()))
            .collect();
        let index = ix(&m);
        let msg = message(&m, &index, &named).unwrap();
        let body = msg.encode_to_vec();
        let back = proto_json::decode(&m, &body).unwrap();
        let mut left = usize::MAX;
        for ((name, ty), want) in cols.iter().zip(&vals) {
            let got = column(&back, &index, name, ty, &mut left).unwrap();
            let want = if want.is_null() {
                Value::Int(0)
            } else {
                want.clone()
            };
            assert_eq!(got, want, "{name}");
        }
        for (cols, why) in [
            (vec![("A B", SqlType::Int)], "not a Protobuf field name"),
            (
                vec![(
                    "A",
                    SqlType::Array(Box::new(SqlType::Array(Box::new(SqlType::Int)))),
                )],
                "array of arrays",
            ),
            (vec![("D", SqlType::Decimal(4, 2))], "does not write yet"),
            (
                vec![(
                    "M",
                    SqlType::Map(Box::new(SqlType::Double), Box::new(SqlType::Int)),
                )],
                "map keys",
            ),
        ] {
            let e = schema_text(cols.iter().map(|(n, t)| (*n, t))).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    /// A schema's own `google.protobuf.StringValue` that contains itself is not a wrapper: inferring columns,
    /// reading and writing all terminate (on a small stack), with an error, not a stack overflow.
    #[test]
    fn a_fake_wrapper_that_contains_itself_terminates_everywhere() {
        let t = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(|| {
                let text = "syntax = \"proto3\";\npackage google.protobuf;\nmessage StringValue { StringValue value = 1; }\n";
                let m = ProtoSchema::compile(text, &[])
                    .unwrap()
                    .message(None)
                    .unwrap()
                    .0;
                assert_eq!(m.full_name(), "google.protobuf.StringValue");
                assert!(wrapped(&m).is_none());
                let e = columns(&m).unwrap_err();
                assert!(e.contains("recursive"), "{e}");
                // A record whose `value` is set (to an empty message), read as the STRING a wrapper would be.
                let mut msg = DynamicMessage::new(m.clone());
                msg.set_field_by_name("value", Proto::Message(DynamicMessage::new(m.clone())));
                let mut left = usize::MAX;
                let e = column(&msg, &ix(&m), "VALUE", &SqlType::String, &mut left).unwrap_err();
                assert!(e.contains("expected STRING"), "{e}");
                // Writing a string into it.
                let v = Value::String("x".into());
                assert!(message(&m, &ix(&m), &[("value", v)]).is_err());
            })
            .unwrap();
        t.join().expect("no stack overflow");
    }

    /// Reading and writing carry their own depth: a STRUCT type or value nested far deeper than any schema
    /// allows is refused, even over a message that contains itself.
    #[test]
    fn reading_and_writing_are_bounded_by_depth_whatever_the_schema() {
        let t = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let rec = "syntax = \"proto3\";\nmessage Node { Node next = 1; int32 v = 2; }\n";
                let m = ProtoSchema::compile(rec, &[])
                    .unwrap()
                    .message(None)
                    .unwrap()
                    .0;
                let mut ty = SqlType::Int;
                let mut val = Value::Int(1);
                let mut msg = DynamicMessage::new(m.clone());
                msg.set_field_by_name("v", Proto::I32(1));
                for _ in 0..300 {
                    ty = SqlType::Struct(vec![("NEXT".into(), ty), ("V".into(), SqlType::Int)]);
                    val = Value::Struct(vec![("NEXT".into(), val), ("V".into(), Value::Int(1))]);
                    let mut outer = DynamicMessage::new(m.clone());
                    outer.set_field_by_name("next", Proto::Message(msg));
                    msg = outer;
                }
                let mut left = usize::MAX;
                let e = column(&msg, &ix(&m), "NEXT", &ty, &mut left).unwrap_err();
                assert!(e.contains("deep"), "{e}");
                let e = message(&m, &ix(&m), &[("next", val)]).unwrap_err();
                assert!(e.contains("deep"), "{e}");
            })
            .unwrap();
        t.join().expect("no stack overflow");
    }

    /// An error shows at most about 200 characters of the value it could not read, not the whole value.
    #[test]
    fn an_error_shows_a_long_value_cut_short() {
        let m = order();
        let mut msg = DynamicMessage::new(m.clone());
        msg.set_field_by_name("id", Proto::String("é".repeat(10_000)));
        let e = column(&msg, &ix(&m), "ID", &SqlType::Int, &mut usize::MAX.clone()).unwrap_err();
        assert!(e.contains("expected INT"), "{e}");
        assert!(e.len() < 300, "{} characters", e.len());
    }

    /// Fields named alike but for case: a schema's columns refuse them (at any depth), and writing takes the
    /// field's exact name before one alike but for case.
    #[test]
    fn fields_alike_but_for_case_are_refused_as_columns_and_written_exactly() {
        let text = "syntax = \"proto2\";\nmessage M { optional string id = 1; optional string ID = 2; }\nmessage O { optional int32 x = 1; optional M m = 2; }\n";
        let s = ProtoSchema::compile(text, &[]).unwrap();
        let m = s.message(Some("M")).unwrap().0;
        let e = columns(&m).unwrap_err();
        assert!(e.contains("two fields named ID"), "{e}");
        let o = s.message(Some("O")).unwrap().0;
        assert!(columns(&o).unwrap_err().contains("two fields named ID"));
        let cols: [(Arc<str>, Value); 2] = [
            ("id".into(), Value::String("lower".into())),
            ("ID".into(), Value::String("upper".into())),
        ];
        let v = Value::Struct(cols.to_vec());
        let mut msg = DynamicMessage::new(o.clone());
        msg.set_field_by_name(
            "m",
            from_value(&ix(&o), &o.get_field_by_name("m").unwrap(), &v, 0).unwrap(),
        );
        let inner = msg.get_field_by_name("m").unwrap();
        let inner = inner.as_message().unwrap();
        assert_eq!(
            inner.get_field_by_name("id").unwrap().as_str(),
            Some("lower")
        );
        assert_eq!(
            inner.get_field_by_name("ID").unwrap().as_str(),
            Some("upper")
        );
    }

    /// A message of `text` (its first).
    fn first_of(text: &str) -> MessageDescriptor {
        ProtoSchema::compile(text, &[])
            .unwrap()
            .message(None)
            .unwrap()
            .0
    }

    /// A oneof member `card` beside an ordinary field `CARD` (proto2: proto3 refuses names alike but for
    /// case): the schema's columns are refused (SQL names both CARD), and a stream declared with `PAY_0` reads and writes the member, looked up within its oneof, while
    /// `CARD` names the field. Before, `columns` accepted the schema (members were compared only among
    /// themselves), `PAY_0.CARD` read NULL and writing it failed "CARD is not one of its members".
    #[test]
    fn a_oneof_member_alike_an_ordinary_field_but_for_case_is_its_oneofs() {
        let m = first_of(
            "syntax = \"proto2\";\nmessage P {\n  optional string CARD = 1;\n  oneof pay { string card = 2; int32 cash = 3; }\n}\n",
        );
        let e = columns(&m).unwrap_err();
        assert!(e.contains("two fields named CARD"), "{e}");
        let index = ix(&m);
        let pay = SqlType::Struct(vec![
            ("CARD".into(), SqlType::String),
            ("CASH".into(), SqlType::Int),
        ]);
        let card = Value::Struct(vec![
            ("CARD".into(), Value::String("member".into())),
            ("CASH".into(), Value::Null),
        ]);
        let values = [
            ("CARD", Value::String("field".into())),
            ("PAY_0", card.clone()),
        ];
        let msg = message(&m, &index, &values).unwrap();
        let back = proto_json::decode(&m, &msg.encode_to_vec()).unwrap();
        assert_eq!(
            back.get_field_by_name("card").unwrap().as_str(),
            Some("member")
        );
        let mut left = usize::MAX;
        assert_eq!(
            column(&back, &index, "PAY_0", &pay, &mut left).unwrap(),
            card
        );
        assert_eq!(
            column(&back, &index, "CARD", &SqlType::String, &mut left).unwrap(),
            Value::String("field".into())
        );
    }

    /// A field named as a oneof's column (`pay_0` beside the oneof `pay`) keeps that name: a stream's column
    /// `PAY_0 INT` reads and writes the field, as before oneofs were columns. Before, the oneof took the name.
    #[test]
    fn a_field_named_as_a_oneofs_column_keeps_its_name() {
        let m = first_of(
            "syntax = \"proto3\";\nmessage P {\n  int32 pay_0 = 1;\n  oneof pay { string card = 2; }\n}\n",
        );
        let index = ix(&m);
        let msg = message(&m, &index, &[("PAY_0", Value::Int(5))]).unwrap();
        let back = proto_json::decode(&m, &msg.encode_to_vec()).unwrap();
        assert_eq!(back.get_field_by_name("pay_0").unwrap().as_i32(), Some(5));
        let mut left = usize::MAX;
        assert_eq!(
            column(&back, &index, "PAY_0", &SqlType::Int, &mut left).unwrap(),
            Value::Int(5)
        );
    }

    /// Values naming one field but for case: the first is written, as before the index (the last replaced it);
    /// a oneof's STRUCT does not replace a member a value named exactly set (it replaced it, the member being
    /// set in the first pass and the STRUCT in the second).
    #[test]
    fn the_first_value_for_a_field_wins_and_a_oneof_does_not_replace_its_member() {
        let m = order();
        let index = ix(&m);
        let values = [
            ("Id", Value::String("first".into())),
            ("ID", Value::String("second".into())),
        ];
        let msg = message(&m, &index, &values).unwrap();
        assert_eq!(msg.get_field_by_name("id").unwrap().as_str(), Some("first"));
        let cash = Value::Struct(vec![
            ("CARD".into(), Value::Null),
            ("CASH".into(), Value::Int(5)),
        ]);
        let values = [
            ("PAY_0", cash.clone()),
            ("card", Value::String("visa".into())),
        ];
        let msg = message(&m, &index, &values).unwrap();
        assert_eq!(
            msg.get_field_by_name("card").unwrap().as_str(),
            Some("visa")
        );
        let cash_field = m.get_field_by_name("cash").unwrap();
        assert!(!msg.has_field(&cash_field));
        // The oneof alone still sets its member.
        let msg = message(&m, &index, &[("PAY_0", cash)]).unwrap();
        assert_eq!(msg.get_field(&cash_field).as_i32(), Some(5));
    }

    /// A message of another pool with the same full name as one of the index's is not read with the index's
    /// fields: in a debug build it is caught (never so for a record read with its schema), otherwise resolved
    /// from its own fields. Before, the index's fields of the other message were used: the column read NULL.
    #[test]
    fn a_message_of_another_pool_is_not_read_with_the_index() {
        let ours = first_of("syntax = \"proto3\";\nmessage M { string a = 1; }\n");
        let theirs = first_of("syntax = \"proto3\";\nmessage M { string b = 1; }\n");
        let index = ix(&ours);
        let mut msg = DynamicMessage::new(theirs.clone());
        msg.set_field_by_name("b", Proto::String("x".into()));
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            column(&msg, &index, "B", &SqlType::String, &mut usize::MAX.clone())
        }));
        if cfg!(debug_assertions) {
            assert!(got.is_err(), "{got:?}");
        } else {
            assert_eq!(got.unwrap().unwrap(), Value::String("x".into()));
        }
    }
}
