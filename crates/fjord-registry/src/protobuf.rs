//! Protobuf: compiling `.proto` text (or a base64 `FileDescriptorProto`, which Confluent's serializers send)
//! with `protox`, imports served from memory (the registered referenced schemas by their reference name, the
//! google/protobuf well-known types and Confluent's known types, [`KNOWN_TYPES`]), the canonical text form, the serialized form, and the
//! compatibility walk over `prost-reflect` descriptors.
//!
//! The walk follows Confluent's Protobuf rules: messages and enums are matched by name, fields by number; a
//! changed field kind (scalar, message, map), a scalar of another wire group (varint numbers and bool and
//! enums, zigzag numbers, string/bytes, 32-bit fixed, 64-bit fixed, float, double), a message type of another
//! name or an incompatible message, a removed message, a removed field of a oneof, several fields moved into
//! one oneof and added or removed required fields are breaking; added or removed fields,
//! renamed fields, messages added or moved, a changed package and enum changes are not. BACKWARD compares the old schema
//! (original) with the new one (update), FORWARD the other way round.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::diff::{Budget, Ctx, Difference, TooComplex};

use base64::Engine;
use prost_reflect::prost::Message as _;
use prost_reflect::prost_types::{
    field_descriptor_proto::{Label, Type},
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto,
};
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, FileDescriptor,
    Kind, MessageDescriptor, Value,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// The file name a registered schema compiles under (Confluent's default name).
const MAIN_FILE: &str = "default.proto";

/// A compiled Protobuf schema.
pub struct ParsedProto {
    pool: DescriptorPool,
    file_name: String,
    /// The identity form: the `.proto` text printed from the descriptor (`printed`) when that text compiles
    /// back to the same descriptor, else that text followed by the whole descriptor (base64) in a comment, so
    /// that what the printer drops (extensions, groups, some options) still tells schemas apart.
    pub canonical: String,
    /// The `.proto` text printed from the descriptor: the normalized text, and the stored text of a schema
    /// sent as a descriptor (which is refused when the text would lose part of it).
    pub printed: String,
    /// `printed` compiles back to the same descriptor.
    pub lossless: bool,
    /// The schema was sent as a serialized descriptor (base64), not as text.
    pub from_descriptor: bool,
    /// The schema has custom options (which `prost-types` descriptors drop).
    has_custom_options: bool,
}

struct MemoryResolver {
    files: HashMap<String, File>,
}

impl FileResolver for MemoryResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.files
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

/// A base64 `FileDescriptorProto`, if `text` is one.
fn decode_descriptor(text: &str) -> Option<FileDescriptorProto> {
    let t = text.trim();
    if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == ';' || c == '{') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(t).ok()?;
    FileDescriptorProto::decode(bytes.as_slice()).ok()
}

fn open(name: &str, text: &str) -> Result<(File, bool), String> {
    match decode_descriptor(text) {
        Some(_) => {
            // Decoded from its bytes, so that its custom options (extension fields of the options messages,
            // unknown to `prost-types`) are kept; renamed by appending a `name` field (field 1, a string),
            // which overrides the one before it.
            let mut bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| e.to_string())?;
            FileDescriptorProto {
                name: Some(name.to_string()),
                ..Default::default()
            }
            .encode(&mut bytes)
            .map_err(|e| e.to_string())?;
            File::decode_file_descriptor_proto(bytes.as_slice())
                .map(|f| (f, true))
                .map_err(|e| e.to_string())
        }
        None => File::from_source(name, text)
            .map(|f| (f, false))
            .map_err(|e| describe(&e)),
    }
}

fn describe(e: &protox::Error) -> String {
    let mut s = e.to_string();
    if let Some(f) = e.file() {
        if !s.contains(f) {
            s = format!("{f}: {s}");
        }
    }
    s
}

/// A Protobuf schema compiled with its imports.
pub struct Compiled {
    /// The schema's file and everything it imports.
    pub pool: DescriptorPool,
    /// The name of the schema's file in `pool`: `default.proto` (Confluent's) for text, a serialized
    /// descriptor's own name, prefixed with `_` while a reference has that name.
    pub file_name: String,
    /// The schema was sent as a serialized descriptor (base64), not as text.
    pub from_descriptor: bool,
    /// The referenced files, by import name.
    referenced_files: HashMap<String, File>,
}

/// Compiles `text` (`.proto` text, or a base64 `FileDescriptorProto` as Confluent's serializers register) with
/// its imports served from `referenced` ((import name, text) of every schema its imports reach) and from
/// google/protobuf's well-known types, never from the network or the file system. The registry and the
/// console tools (`fjord produce/consume --value-format protobuf`) both compile with this. The error says what
/// does not compile.
pub fn compile_schema(text: &str, referenced: &[(String, String)]) -> Result<Compiled, String> {
    let mut files = HashMap::new();
    for (name, t) in referenced {
        let (file, _) =
            open(name, t).map_err(|e| format!("referenced schema {name} does not compile: {e}"))?;
        files.insert(name.clone(), file);
    }
    let mut file_name = MAIN_FILE.to_string();
    if let Some(fd) = decode_descriptor(text) {
        // A serialized descriptor names itself and its imports.
        if let Some(n) = fd.name.as_deref().filter(|n| !n.is_empty()) {
            file_name = n.to_string();
        }
    }
    while files.contains_key(&file_name) {
        file_name = format!("_{file_name}");
    }
    let (main, from_descriptor) = open(&file_name, text)?;
    let referenced_files = files.clone();
    files.insert(file_name.clone(), main);
    let pool = compile(files, &file_name).map_err(|e| describe(&e))?;
    check_options(&pool)?;
    Ok(Compiled {
        pool,
        file_name,
        from_descriptor,
        referenced_files,
    })
}

/// Compiles `text`; `referenced` are (import name, schema text) of every schema reachable through its
/// references. The error is a message for `42201 Invalid schema`.
pub fn parse(text: &str, referenced: &[(String, String)]) -> Result<ParsedProto, String> {
    let Compiled {
        pool,
        file_name,
        from_descriptor,
        referenced_files,
    } = compile_schema(text, referenced).map_err(|e| format!("{text}: {e}"))?;
    let file = pool
        .get_file_by_name(&file_name)
        .ok_or_else(|| format!("{text}: the schema compiled to no file"))?;
    let fd = file.file_descriptor_proto();
    check_ranges(&fd.message_type).map_err(|e| format!("{text}: {e}"))?;
    // What a schema's custom options may print to: 8 times its size, at least 1 MiB.
    let budget = text.len().saturating_mul(8).max(1 << 20);
    let custom = CustomOptions::collect(&file, budget);
    if custom.too_large {
        return Err(format!(
            "{text}: its custom options print as more than {budget} bytes of .proto text"
        ));
    }
    let printed = print_file(fd, &custom);
    let mut loss = lost_in_text(fd, &custom, &printed, referenced_files, &file_name, budget);
    if from_descriptor && loss.is_none() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap_or_default();
        if has_unknown_fields(&bytes) {
            loss = Some("has fields unknown to descriptor.proto".to_string());
        }
    }
    let canonical = match &loss {
        None => printed.clone(),
        // The registry stores a descriptor as its printed text: refuse one that text cannot hold, rather
        // than store (and identify it by) less than was sent.
        Some(why) if from_descriptor => {
            return Err(format!(
                "{text}: this serialized descriptor {why}, which the registry cannot store as .proto text without loss; register the schema as .proto text instead"
            ))
        }
        Some(_) => {
            // With options the text cannot hold, the descriptor with its options (which `comparable`, a
            // `prost-types` descriptor, drops), so that they still tell schemas apart.
            let full = match custom.unknown.then(|| with_options(&file)).flatten() {
                Some(bytes) => bytes,
                None => {
                    let mut full = comparable(fd);
                    full.name = Some(file_name.clone());
                    full.encode_to_vec()
                }
            };
            let full = base64::engine::general_purpose::STANDARD.encode(full);
            format!("{printed}// descriptor {full}\n")
        }
    };
    Ok(ParsedProto {
        pool,
        file_name,
        canonical,
        lossless: loss.is_none(),
        printed,
        from_descriptor,
        has_custom_options: !custom.is_empty(),
    })
}

fn compile(files: HashMap<String, File>, file_name: &str) -> Result<DescriptorPool, protox::Error> {
    let mut chain = ChainFileResolver::new();
    chain.add(MemoryResolver { files });
    chain.add(GoogleFileResolver::new());
    chain.add(KnownTypesResolver);
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file(file_name)?;
    Ok(compiler.descriptor_pool())
}

/// The types Confluent's registry knows besides google/protobuf's (its Protobuf converter writes Connect's
/// Decimal, Date and Time as them, and `confluent/meta.proto` carries a field's Connect parameters): imported
/// without a reference, as Confluent's registry and serializers allow. Written here from their published
/// definitions (same packages, names and field numbers).
pub const KNOWN_TYPES: &[(&str, &str)] = &[
    (
        "confluent/meta.proto",
        "syntax = \"proto3\";\npackage confluent;\nimport \"google/protobuf/descriptor.proto\";\n\
         message Meta {\n  string doc = 1;\n  map<string, string> params = 2;\n  repeated string tags = 3;\n  repeated Rule rules = 4;\n}\n\
         message Rule {\n  string name = 1;\n  string doc = 2;\n  string expr = 3;\n  string sql = 4;\n}\n\
         extend google.protobuf.FileOptions { Meta file_meta = 1088; }\n\
         extend google.protobuf.MessageOptions { Meta message_meta = 1088; }\n\
         extend google.protobuf.FieldOptions { Meta field_meta = 1088; }\n\
         extend google.protobuf.EnumOptions { Meta enum_meta = 1088; }\n\
         extend google.protobuf.EnumValueOptions { Meta enum_value_meta = 1088; }\n",
    ),
    (
        "confluent/type/decimal.proto",
        "syntax = \"proto3\";\npackage confluent.type;\n\
         message Decimal {\n  bytes value = 1;\n  uint32 precision = 2;\n  int32 scale = 3;\n}\n",
    ),
    (
        "google/type/date.proto",
        "syntax = \"proto3\";\npackage google.type;\n\
         message Date {\n  int32 year = 1;\n  int32 month = 2;\n  int32 day = 3;\n}\n",
    ),
    (
        "google/type/timeofday.proto",
        "syntax = \"proto3\";\npackage google.type;\n\
         message TimeOfDay {\n  int32 hours = 1;\n  int32 minutes = 2;\n  int32 seconds = 3;\n  int32 nanos = 4;\n}\n",
    ),
];

/// Serves [`KNOWN_TYPES`] (after the schema's own references, which may name a file the same).
struct KnownTypesResolver;

impl FileResolver for KnownTypesResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match KNOWN_TYPES.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => File::from_source(n, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// What the printed `.proto` text of `fd` loses (None: it compiles back to the same descriptor).
fn lost_in_text(
    fd: &FileDescriptorProto,
    custom: &CustomOptions,
    printed: &str,
    referenced: HashMap<String, File>,
    file_name: &str,
    budget: usize,
) -> Option<String> {
    let mut files = referenced;
    let again = match File::from_source(file_name, printed) {
        Ok(f) => f,
        Err(e) => {
            return Some(format!(
                "does not print as .proto text that compiles ({})",
                describe(&e)
            ))
        }
    };
    files.insert(file_name.to_string(), again);
    let again = match compile(files, file_name) {
        Ok(pool) => pool,
        Err(e) => {
            return Some(format!(
                "does not print as .proto text that compiles ({})",
                describe(&e)
            ))
        }
    };
    let again = again.get_file_by_name(file_name)?;
    if custom.unknown {
        return Some(
            "has options unknown to the registry (an extension no import declares), options that do not decode, \
             or custom options where the .proto text cannot write them (map entries, the oneof of a proto3 \
             optional, extension ranges, extend fields, a NaN outside a message value)"
                .to_string(),
        );
    }
    let same_options = *custom == CustomOptions::collect(&again, budget);
    if same_options && comparable(fd) == comparable(again.file_descriptor_proto()) {
        return None;
    }
    let mut uses = Vec::new();
    if !same_options {
        uses.push("custom options the .proto text printer does not keep");
    }
    if has_extensions(fd) {
        uses.push("extensions (extend)");
    }
    if has_groups(&fd.message_type) {
        uses.push("groups");
    }
    if uses.is_empty() {
        uses.push("options or details the .proto text printer does not keep");
    }
    Some(format!("uses {}", uses.join(" and ")))
}

fn has_extensions(fd: &FileDescriptorProto) -> bool {
    fn in_messages(ms: &[DescriptorProto]) -> bool {
        ms.iter()
            .any(|m| !m.extension.is_empty() || in_messages(&m.nested_type))
    }
    !fd.extension.is_empty() || in_messages(&fd.message_type)
}

fn has_groups(ms: &[DescriptorProto]) -> bool {
    ms.iter()
        .any(|m| m.field.iter().any(|f| f.r#type() == Type::Group) || has_groups(&m.nested_type))
}

/// `fd` without what does not make a schema different: its name, source info, empty options, and JSON names
/// that are the default ones (a compiler fills them in, a serialized descriptor may leave them out).
fn comparable(fd: &FileDescriptorProto) -> FileDescriptorProto {
    fn none_if_default<T: Default + PartialEq>(o: &mut Option<T>) {
        if o.as_ref().is_some_and(|v| *v == T::default()) {
            *o = None;
        }
    }
    fn field(f: &mut FieldDescriptorProto) {
        if f.json_name.as_deref() == Some(default_json_name(f.name()).as_str()) {
            f.json_name = None;
        }
        none_if_default(&mut f.options);
    }
    fn enumeration(e: &mut EnumDescriptorProto) {
        none_if_default(&mut e.options);
        for v in &mut e.value {
            none_if_default(&mut v.options);
        }
    }
    fn message(m: &mut DescriptorProto) {
        none_if_default(&mut m.options);
        m.field.iter_mut().for_each(field);
        m.extension.iter_mut().for_each(field);
        m.nested_type.iter_mut().for_each(message);
        m.enum_type.iter_mut().for_each(enumeration);
        for o in &mut m.oneof_decl {
            none_if_default(&mut o.options);
        }
        for r in &mut m.extension_range {
            none_if_default(&mut r.options);
        }
    }
    let mut fd = fd.clone();
    fd.name = None;
    fd.source_code_info = None;
    none_if_default(&mut fd.options);
    fd.message_type.iter_mut().for_each(message);
    fd.enum_type.iter_mut().for_each(enumeration);
    fd.extension.iter_mut().for_each(field);
    for s in &mut fd.service {
        none_if_default(&mut s.options);
        for m in &mut s.method {
            none_if_default(&mut m.options);
        }
    }
    fd
}

impl ParsedProto {
    fn file(&self) -> FileDescriptor {
        self.pool
            .get_file_by_name(&self.file_name)
            .expect("the compiled file is in its pool")
    }

    /// The schema as a base64 `FileDescriptorProto` (the `format=serialized` answer).
    pub fn serialized(&self) -> String {
        if self.has_custom_options {
            if let Some(bytes) = with_options(&self.file()) {
                return base64::engine::general_purpose::STANDARD.encode(bytes);
            }
        }
        let mut fd = self.file().file_descriptor_proto().clone();
        fd.source_code_info = None;
        base64::engine::general_purpose::STANDARD.encode(fd.encode_to_vec())
    }
}

/// `file` serialized with its custom options, which the `prost-types` descriptor drops: decoded as a message
/// of descriptor.proto (the options' extension fields kept as unknown fields) without its source info.
fn with_options(file: &FileDescriptor) -> Option<Vec<u8>> {
    let desc =
        DescriptorPool::global().get_message_by_name("google.protobuf.FileDescriptorProto")?;
    let mut m = DynamicMessage::decode(desc, file.encode_to_vec().as_slice()).ok()?;
    m.clear_field_by_name("source_code_info");
    Some(m.encode_to_vec())
}

/// Every options message of every file of `pool` decodes with the pool's descriptor.proto (its custom
/// options by their extensions' types). prost-reflect's `options()` of an element panics on options that do
/// not, and a serialized descriptor's option bytes are the client's: [`compile_schema`] (every pool the
/// registry and Connect's Protobuf converter read schemas from) refuses such a schema.
pub fn check_options(pool: &DescriptorPool) -> Result<(), String> {
    let Some(desc) = pool
        .get_message_by_name("google.protobuf.FileDescriptorProto")
        .or_else(|| {
            DescriptorPool::global().get_message_by_name("google.protobuf.FileDescriptorProto")
        })
    else {
        return Err("descriptor.proto is missing".to_string());
    };
    for file in pool.files() {
        DynamicMessage::decode(desc.clone(), file.encode_to_vec().as_slice())
            .map_err(|e| format!("the options in {} do not decode ({e})", file.name()))?;
    }
    Ok(())
}

/// The `format=serialized` form of a stored Protobuf schema text (with its references' texts).
pub fn serialized(text: &str, referenced: &[(String, String)]) -> Result<String, String> {
    parse(text, referenced).map(|p| p.serialized())
}

// ---- custom options -------------------------------------------------------------------------------------

/// The custom options (extensions of the `google.protobuf.*Options` messages, such as Confluent's
/// `(confluent.field_meta)`) of a file's elements, resolved through its descriptor pool: by element (see
/// [`CustomOptions::key`]), each option as its `.proto` text `(full.name) = value` (the value in protobuf's text
/// format), sorted by name, so that the canonical text prints them deterministically.
#[derive(Debug, Default)]
struct CustomOptions {
    by_element: BTreeMap<String, Vec<String>>,
    /// Some options message holds fields the pool does not know (an extension no import declares) or does
    /// not decode, or options the printer does not print: the text cannot hold them.
    unknown: bool,
    /// The printed options would exceed the budget ([`CustomOptions::collect`]).
    too_large: bool,
    /// Bytes left for printed options.
    budget: usize,
}

impl PartialEq for CustomOptions {
    fn eq(&self, other: &Self) -> bool {
        (&self.by_element, self.unknown, self.too_large)
            == (&other.by_element, other.unknown, other.too_large)
    }
}
impl Eq for CustomOptions {}

impl CustomOptions {
    /// The options of one element: `kind` is `file`, `message`, `field`, `oneof`, `enum`, `value`,
    /// `service` or `method`, `name` the element's full name (a field's, oneof's, enum value's and method's
    /// under its message's, enum's or service's full name).
    fn key(kind: &str, name: &str) -> String {
        format!("{kind} {name}")
    }

    fn of(&self, kind: &str, name: &str) -> &[String] {
        self.by_element
            .get(&Self::key(kind, name))
            .map_or(&[], Vec::as_slice)
    }

    fn is_empty(&self) -> bool {
        self.by_element.is_empty() && !self.unknown
    }

    /// The custom options of `file`'s elements, printing at most `budget` bytes of them. Its pool has passed
    /// [`check_options`] (else the options count as unknown: prost-reflect panics on options that do not decode).
    fn collect(file: &FileDescriptor, budget: usize) -> CustomOptions {
        let mut c = CustomOptions {
            budget,
            ..Default::default()
        };
        if check_options(file.parent_pool()).is_err() {
            c.unknown = true;
            return c;
        }
        c.add("file", "", &file.options());
        for x in file.extensions() {
            // Printed in no `extend` block: their options neither.
            c.unprintable(&x.options());
        }
        for m in file.messages() {
            c.add_message(&m);
        }
        for e in file.enums() {
            c.add_enum(&e);
        }
        for s in file.services() {
            c.add("service", s.full_name(), &s.options());
            for m in s.methods() {
                let name = format!("{}.{}", s.full_name(), m.name());
                c.add("method", &name, &m.options());
            }
        }
        // Extension ranges' options (`extensions 100 to 199 [(x) = 1]`), which prost-reflect does not decode
        // per range: read from the file decoded as a message of the pool's descriptor.proto.
        let desc = file
            .parent_pool()
            .get_message_by_name("google.protobuf.FileDescriptorProto")
            .or_else(|| {
                DescriptorPool::global().get_message_by_name("google.protobuf.FileDescriptorProto")
            });
        match desc.and_then(|d| DynamicMessage::decode(d, file.encode_to_vec().as_slice()).ok()) {
            Some(fd) => c.unprintable_in_ranges(&fd),
            None => c.unknown = true,
        }
        c
    }

    /// Options the printer does not print (of map entries and their fields, synthetic oneofs, extension ranges)
    /// that hold custom options or unknown fields: the text cannot hold them.
    fn unprintable(&mut self, options: &DynamicMessage) {
        if options.extensions().next().is_some() || options.unknown_fields().next().is_some() {
            self.unknown = true;
        }
    }

    fn unprintable_in_ranges(&mut self, m: &DynamicMessage) {
        let list = |m: &DynamicMessage, name: &str| -> Vec<DynamicMessage> {
            match m.get_field_by_name(name).as_deref() {
                Some(Value::List(items)) => items
                    .iter()
                    .filter_map(|i| match i {
                        Value::Message(n) => Some(n.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        for r in list(m, "extension_range") {
            if let Some(Value::Message(o)) = r.get_field_by_name("options").as_deref() {
                self.unprintable(o);
            }
        }
        for n in list(m, "message_type")
            .into_iter()
            .chain(list(m, "nested_type"))
        {
            self.unprintable_in_ranges(&n);
        }
    }

    fn add_message(&mut self, m: &MessageDescriptor) {
        if m.is_map_entry() {
            // Written as `map<K, V>`: its entry's and key's and value's options cannot be.
            self.unprintable(&m.options());
            for f in m.fields() {
                self.unprintable(&f.options());
            }
            return;
        }
        self.add("message", m.full_name(), &m.options());
        for f in m.fields() {
            let name = format!("{}.{}", m.full_name(), f.name());
            self.add("field", &name, &f.options());
        }
        for o in m.oneofs() {
            if o.is_synthetic() {
                // Written as `optional`: its oneof's options cannot be.
                self.unprintable(&o.options());
                continue;
            }
            let name = format!("{}.{}", m.full_name(), o.name());
            self.add("oneof", &name, &o.options());
        }
        for x in m.child_extensions() {
            self.unprintable(&x.options());
        }
        for n in m.child_messages() {
            self.add_message(&n);
        }
        for e in m.child_enums() {
            self.add_enum(&e);
        }
    }

    fn add_enum(&mut self, e: &EnumDescriptor) {
        self.add("enum", e.full_name(), &e.options());
        for v in e.values() {
            let name = format!("{}.{}", e.full_name(), v.name());
            self.add("value", &name, &v.options());
        }
    }

    /// An option's value written after `(name) =`: as in text format, except that the compiler reads no
    /// `inf` or `nan` there (only in a message value), so infinities are written as a float literal too large
    /// to be finite, and a NaN cannot be written.
    fn top_level_text(&mut self, v: &Value, kind: &Kind) -> String {
        let x = match v {
            Value::F32(x) => f64::from(*x),
            Value::F64(x) => *x,
            v => return value_text(v, kind, &mut self.unknown),
        };
        if x.is_nan() {
            self.unknown = true;
        }
        if x.is_infinite() {
            return if x > 0.0 { "1e999" } else { "-1e999" }.to_string();
        }
        value_text(v, kind, &mut self.unknown)
    }

    fn add(&mut self, kind: &str, name: &str, options: &DynamicMessage) {
        if options.unknown_fields().next().is_some() {
            self.unknown = true;
        }
        let mut texts: Vec<(String, String)> = Vec::new();
        for (ext, value) in options.extensions() {
            // Fully qualified (a leading dot), so that no package or message of the schema named like the
            // option's first component shadows it.
            let option = format!("(.{})", ext.full_name());
            let kind = ext.kind();
            match value {
                // A repeated option is written once per element.
                Value::List(items) => {
                    for v in items {
                        texts.push((option.clone(), self.top_level_text(v, &kind)));
                    }
                }
                v => texts.push((option, self.top_level_text(v, &kind))),
            }
        }
        if texts.is_empty() {
            return;
        }
        // A packed repeated option costs a byte a value in a serialized descriptor and prints as
        // `(name) = value` each: the printed options are bounded.
        let size: usize = texts.iter().map(|(n, v)| n.len() + v.len() + 5).sum();
        if size > self.budget {
            self.too_large = true;
            self.budget = 0;
            return;
        }
        self.budget -= size;
        // By name; a repeated option's elements keep their order.
        texts.sort_by(|a, b| a.0.cmp(&b.0));
        let texts = texts
            .into_iter()
            .map(|(n, v)| format!("{n} = {v}"))
            .collect();
        self.by_element.insert(Self::key(kind, name), texts);
    }
}

/// A value in protobuf's text format: messages as `{name: value, ...}` (fields by number, extensions as
/// `[full.name]: value`), lists as `[a, b]`, maps as lists of `{key: k, value: v}` by key, enums by name.
fn value_text(v: &Value, kind: &Kind, unknown: &mut bool) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        // `{:?}`: the shortest digits that read back as the same float, always with a `.` or an exponent
        // (Display writes 1e20 as 21 digits, an integer too large for protobuf, and -0.0 as the integer -0).
        Value::F32(x) => float_text(f64::from(*x), format!("{x:?}")),
        Value::F64(x) => float_text(*x, format!("{x:?}")),
        Value::String(s) => quote(s),
        Value::Bytes(b) => quote_bytes(b),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        Value::Message(m) => message_text(m, unknown),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(|i| value_text(i, kind, unknown)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(entries) => {
            let Kind::Message(entry) = kind else {
                *unknown = true;
                return "[]".to_string();
            };
            let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let mut items: Vec<(String, String)> = entries
                .iter()
                .map(|(k, v)| {
                    let k = value_text(&k.clone().into(), &kf.kind(), unknown);
                    let v = value_text(v, &vf.kind(), unknown);
                    (k, v)
                })
                .collect();
            items.sort();
            let items: Vec<String> = items
                .into_iter()
                .map(|(k, v)| format!("{{key: {k}, value: {v}}}"))
                .collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn message_text(m: &DynamicMessage, unknown: &mut bool) -> String {
    if m.unknown_fields().next().is_some() {
        *unknown = true;
    }
    let mut parts: Vec<String> = m
        .fields()
        .map(|(f, v)| format!("{}: {}", f.name(), value_text(v, &f.kind(), unknown)))
        .collect();
    let mut exts: Vec<String> = m
        .extensions()
        .map(|(e, v)| format!("[{}]: {}", e.full_name(), value_text(v, &e.kind(), unknown)))
        .collect();
    exts.sort();
    parts.extend(exts);
    format!("{{{}}}", parts.join(", "))
}

/// A float in text format (`inf`, `-inf`, `nan` for the values without digits).
fn float_text(x: f64, shortest: String) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        shortest
    }
}

/// Bytes as a text-format string: printable ASCII as is, the rest as octal escapes.
fn quote_bytes(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for &c in b {
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(c as char),
            c => out.push_str(&format!("\\{c:03o}")),
        }
    }
    out.push('"');
    out
}

/// A serialized `FileDescriptorProto` holds fields unknown to descriptor.proto outside its options messages
/// (whose extension fields, the custom options, [`CustomOptions`] resolves through the schema's pool).
fn has_unknown_fields(bytes: &[u8]) -> bool {
    fn walk(m: &DynamicMessage) -> bool {
        m.unknown_fields().next().is_some()
            || m.fields().any(|(f, v)| {
                f.name() != "options"
                    && match v {
                        Value::Message(n) => walk(n),
                        Value::List(items) => items.iter().any(|i| match i {
                            Value::Message(n) => walk(n),
                            _ => false,
                        }),
                        _ => false,
                    }
            })
    }
    let Some(desc) =
        DescriptorPool::global().get_message_by_name("google.protobuf.FileDescriptorProto")
    else {
        return true;
    };
    DynamicMessage::decode(desc, bytes).map_or(true, |m| walk(&m))
}

// ---- the canonical text ---------------------------------------------------------------------------------

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reserved and extension ranges are half-open `[start, end)` with `end > start`: a serialized descriptor is the
/// client's, and the compiler does not check them.
fn check_ranges(messages: &[DescriptorProto]) -> Result<(), String> {
    for m in messages {
        let ranges = m
            .reserved_range
            .iter()
            .map(|r| (r.start(), r.end()))
            .chain(m.extension_range.iter().map(|r| (r.start(), r.end())));
        for (start, end) in ranges {
            if end <= start {
                return Err(format!(
                    "message {} has a reserved or extension range {start} to {end} whose end is not after its start",
                    m.name()
                ));
            }
        }
        check_ranges(&m.nested_type)?;
    }
    Ok(())
}

fn print_file(fd: &FileDescriptorProto, custom: &CustomOptions) -> String {
    let mut out = String::new();
    let syntax = fd.syntax.as_deref().filter(|s| !s.is_empty());
    out.push_str(&format!("syntax = \"{}\";\n", syntax.unwrap_or("proto2")));
    if let Some(p) = fd.package.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(&format!("package {p};\n"));
    }
    if !fd.dependency.is_empty() {
        out.push('\n');
    }
    for (i, d) in fd.dependency.iter().enumerate() {
        let i = i as i32;
        let kind = if fd.public_dependency.contains(&i) {
            "public "
        } else if fd.weak_dependency.contains(&i) {
            "weak "
        } else {
            ""
        };
        out.push_str(&format!("import {kind}{};\n", quote(d)));
    }
    let mut opts: Vec<String> = Vec::new();
    if let Some(o) = &fd.options {
        let mut s = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                opts.push(format!("option {k} = {};", quote(v)));
            }
        };
        s("java_package", &o.java_package);
        s("java_outer_classname", &o.java_outer_classname);
        s("go_package", &o.go_package);
        s("objc_class_prefix", &o.objc_class_prefix);
        s("csharp_namespace", &o.csharp_namespace);
        s("swift_prefix", &o.swift_prefix);
        s("php_namespace", &o.php_namespace);
        s("ruby_package", &o.ruby_package);
        let mut b = |k: &str, v: Option<bool>| {
            if let Some(v) = v {
                opts.push(format!("option {k} = {v};"));
            }
        };
        b("java_multiple_files", o.java_multiple_files);
        b("java_string_check_utf8", o.java_string_check_utf8);
        b("cc_enable_arenas", o.cc_enable_arenas);
        b("deprecated", o.deprecated);
        if let Some(v) = o.optimize_for {
            let name = match v {
                2 => "CODE_SIZE",
                3 => "LITE_RUNTIME",
                _ => "SPEED",
            };
            opts.push(format!("option optimize_for = {name};"));
        }
    }
    opts.extend(custom.of("file", "").iter().map(|o| format!("option {o};")));
    if !opts.is_empty() {
        out.push('\n');
        for o in opts {
            out.push_str(&o);
            out.push('\n');
        }
    }
    let p = Printer {
        proto3: syntax == Some("proto3"),
        custom,
    };
    let scope = fd.package.as_deref().unwrap_or_default();
    for m in &fd.message_type {
        out.push('\n');
        p.message(&mut out, m, 0, scope);
    }
    for e in &fd.enum_type {
        out.push('\n');
        p.enumeration(&mut out, e, 0, scope);
    }
    for s in &fd.service {
        out.push('\n');
        p.service(&mut out, s, scope);
    }
    out
}

/// `name` in `scope` (a package or message full name, empty for none).
fn full_name(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

/// Prints `option (x) = v;` lines at `pad`.
fn option_lines(out: &mut String, pad: &str, options: &[String]) {
    for o in options {
        out.push_str(&format!("{pad}option {o};\n"));
    }
}

/// What the printing of a file's elements needs besides them.
struct Printer<'a> {
    proto3: bool,
    custom: &'a CustomOptions,
}

fn indent(level: usize) -> String {
    "  ".repeat(level)
}

fn scalar_name(t: Type) -> Option<&'static str> {
    Some(match t {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group | Type::Message | Type::Enum => return None,
    })
}

fn type_name(f: &FieldDescriptorProto) -> String {
    scalar_name(f.r#type()).map_or_else(|| f.type_name().to_string(), str::to_string)
}

/// The JSON name protoc derives from a field name (lowerCamelCase).
fn default_json_name(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn field_options(f: &FieldDescriptorProto, custom: &[String]) -> String {
    let mut opts = Vec::new();
    if let Some(d) = &f.default_value {
        let v = match f.r#type() {
            Type::String | Type::Bytes => quote(d),
            _ => d.clone(),
        };
        opts.push(format!("default = {v}"));
    }
    if let Some(j) = &f.json_name {
        if *j != default_json_name(f.name()) {
            opts.push(format!("json_name = {}", quote(j)));
        }
    }
    if let Some(o) = &f.options {
        if let Some(p) = o.packed {
            opts.push(format!("packed = {p}"));
        }
        if let Some(d) = o.deprecated {
            opts.push(format!("deprecated = {d}"));
        }
    }
    opts.extend(custom.iter().cloned());
    if opts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", opts.join(", "))
    }
}

impl Printer<'_> {
    /// A field of message `m` (whose full name is `scope`).
    fn field(
        &self,
        out: &mut String,
        f: &FieldDescriptorProto,
        m: &DescriptorProto,
        level: usize,
        scope: &str,
        in_oneof: bool,
    ) {
        let map_entry = (f.label() == Label::Repeated && f.r#type() == Type::Message)
            .then(|| {
                let short = f.type_name().rsplit('.').next().unwrap_or_default();
                m.nested_type.iter().find(|n| {
                    n.name() == short && n.options.as_ref().is_some_and(|o| o.map_entry())
                })
            })
            .flatten();
        let ty = match map_entry {
            Some(entry) => {
                let key = entry.field.iter().find(|f| f.number() == 1);
                let value = entry.field.iter().find(|f| f.number() == 2);
                format!(
                    "map<{}, {}>",
                    key.map(type_name).unwrap_or_default(),
                    value.map(type_name).unwrap_or_default()
                )
            }
            None => type_name(f),
        };
        let label = if map_entry.is_some() || in_oneof {
            ""
        } else {
            match f.label() {
                Label::Repeated => "repeated ",
                Label::Required => "required ",
                Label::Optional if !self.proto3 || f.proto3_optional() => "optional ",
                Label::Optional => "",
            }
        };
        let custom = self.custom.of("field", &full_name(scope, f.name()));
        out.push_str(&format!(
            "{}{label}{ty} {} = {}{};\n",
            indent(level),
            f.name(),
            f.number(),
            field_options(f, custom)
        ));
    }

    /// Message `m` in `scope` (a package or message full name).
    fn message(&self, out: &mut String, m: &DescriptorProto, level: usize, scope: &str) {
        let scope = full_name(scope, m.name());
        let pad = indent(level + 1);
        out.push_str(&format!("{}message {} {{\n", indent(level), m.name()));
        if let Some(o) = &m.options {
            if let Some(d) = o.deprecated {
                out.push_str(&format!("{pad}option deprecated = {d};\n"));
            }
        }
        option_lines(out, &pad, self.custom.of("message", &scope));
        let mut printed_oneofs = BTreeSet::new();
        for f in &m.field {
            let real_oneof = f.oneof_index.filter(|_| !f.proto3_optional());
            match real_oneof {
                Some(i) => {
                    if printed_oneofs.insert(i) {
                        let name = m
                            .oneof_decl
                            .get(i as usize)
                            .map(|o| o.name())
                            .unwrap_or_default();
                        out.push_str(&format!("{pad}oneof {name} {{\n"));
                        let oneof = full_name(&scope, name);
                        option_lines(out, &indent(level + 2), self.custom.of("oneof", &oneof));
                        for g in m
                            .field
                            .iter()
                            .filter(|g| g.oneof_index == Some(i) && !g.proto3_optional())
                        {
                            self.field(out, g, m, level + 2, &scope, true);
                        }
                        out.push_str(&format!("{pad}}}\n"));
                    }
                }
                None => self.field(out, f, m, level + 1, &scope, false),
            }
        }
        let ranges: Vec<String> = m
            .reserved_range
            .iter()
            .map(|r| {
                let (start, end) = (r.start(), r.end() - 1);
                if start == end {
                    start.to_string()
                } else if end >= 536_870_911 {
                    format!("{start} to max")
                } else {
                    format!("{start} to {end}")
                }
            })
            .collect();
        if !ranges.is_empty() {
            out.push_str(&format!("{pad}reserved {};\n", ranges.join(", ")));
        }
        if !m.reserved_name.is_empty() {
            let names: Vec<String> = m.reserved_name.iter().map(|n| quote(n)).collect();
            out.push_str(&format!("{pad}reserved {};\n", names.join(", ")));
        }
        for r in &m.extension_range {
            let (start, end) = (r.start(), r.end() - 1);
            if end >= 536_870_911 {
                out.push_str(&format!("{pad}extensions {start} to max;\n"));
            } else {
                out.push_str(&format!("{pad}extensions {start} to {end};\n"));
            }
        }
        for n in &m.nested_type {
            if n.options.as_ref().is_some_and(|o| o.map_entry()) {
                continue;
            }
            self.message(out, n, level + 1, &scope);
        }
        for e in &m.enum_type {
            self.enumeration(out, e, level + 1, &scope);
        }
        out.push_str(&format!("{}}}\n", indent(level)));
    }

    /// Enum `e` in `scope` (a package or message full name).
    fn enumeration(&self, out: &mut String, e: &EnumDescriptorProto, level: usize, scope: &str) {
        let scope = full_name(scope, e.name());
        let pad = indent(level + 1);
        out.push_str(&format!("{}enum {} {{\n", indent(level), e.name()));
        if let Some(o) = &e.options {
            if let Some(a) = o.allow_alias {
                out.push_str(&format!("{pad}option allow_alias = {a};\n"));
            }
            if let Some(d) = o.deprecated {
                out.push_str(&format!("{pad}option deprecated = {d};\n"));
            }
        }
        option_lines(out, &pad, self.custom.of("enum", &scope));
        for v in &e.value {
            let custom = self.custom.of("value", &full_name(&scope, v.name()));
            let options = if custom.is_empty() {
                String::new()
            } else {
                format!(" [{}]", custom.join(", "))
            };
            out.push_str(&format!("{pad}{} = {}{options};\n", v.name(), v.number()));
        }
        let ranges: Vec<String> = e
            .reserved_range
            .iter()
            .map(|r| {
                if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{} to {}", r.start(), r.end())
                }
            })
            .collect();
        if !ranges.is_empty() {
            out.push_str(&format!("{pad}reserved {};\n", ranges.join(", ")));
        }
        if !e.reserved_name.is_empty() {
            let names: Vec<String> = e.reserved_name.iter().map(|n| quote(n)).collect();
            out.push_str(&format!("{pad}reserved {};\n", names.join(", ")));
        }
        out.push_str(&format!("{}}}\n", indent(level)));
    }

    /// Service `s` of the package `scope`.
    fn service(&self, out: &mut String, s: &ServiceDescriptorProto, scope: &str) {
        let scope = full_name(scope, s.name());
        out.push_str(&format!("service {} {{\n", s.name()));
        option_lines(out, "  ", self.custom.of("service", &scope));
        for m in &s.method {
            let stream = |b: bool| if b { "stream " } else { "" };
            out.push_str(&format!(
                "  rpc {} ({}{}) returns ({}{})",
                m.name(),
                stream(m.client_streaming()),
                m.input_type(),
                stream(m.server_streaming()),
                m.output_type()
            ));
            let custom = self.custom.of("method", &full_name(&scope, m.name()));
            if custom.is_empty() {
                out.push_str(";\n");
            } else {
                out.push_str(" {\n");
                option_lines(out, "    ", custom);
                out.push_str("  }\n");
            }
        }
        out.push_str("}\n");
    }
}

// ---- differences ----------------------------------------------------------------------------------------

/// The differences Confluent's registry accepts as compatible.
const COMPATIBLE: [&str; 15] = [
    // Confluent's test table accepts a changed package: the wire format names messages by index, not name.
    "PACKAGE_CHANGED",
    "MESSAGE_ADDED",
    "MESSAGE_MOVED",
    "ENUM_ADDED",
    "ENUM_REMOVED",
    "ENUM_CONST_ADDED",
    "ENUM_CONST_CHANGED",
    "ENUM_CONST_REMOVED",
    "FIELD_ADDED",
    "FIELD_REMOVED",
    "FIELD_NAME_CHANGED",
    "FIELD_STRING_OR_BYTES_LABEL_CHANGED",
    "ONEOF_ADDED",
    "ONEOF_REMOVED",
    "ONEOF_FIELD_ADDED",
];

pub fn is_compatible_kind(kind: &str) -> bool {
    COMPATIBLE.contains(&kind)
}

/// Confluent's description of a difference, with `update`/`original` naming the two schemas ("new"/"old").
pub fn description(d: &Difference, update: &str, original: &str) -> String {
    let p = &d.path;
    match d.kind {
        "PACKAGE_CHANGED" => format!("The package at '{p}' in the {update} schema does not match the package in the {original} schema"),
        "MESSAGE_REMOVED" => format!("The {update} schema is missing a message at path '{p}' in the {original} schema"),
        "FIELD_KIND_CHANGED" => format!("The kind of a field at path '{p}' in the {update} schema does not match its kind in the {original} schema"),
        "FIELD_SCALAR_KIND_CHANGED" => format!("The kind of a SCALAR field at path '{p}' in the {update} schema does not match its kind in the {original} schema"),
        "FIELD_NAMED_TYPE_CHANGED" => format!("The type of a MESSAGE field at path '{p}' in the {update} schema does not match its type in the {original} schema"),
        "FIELD_NUMERIC_LABEL_CHANGED" => format!("The label of a NUMERIC field at path '{p}' in the {update} schema does not match its label in the {original} schema"),
        "REQUIRED_FIELD_ADDED" => format!("A required field at path '{p}' in the {update} schema is missing in the {original} schema"),
        "REQUIRED_FIELD_REMOVED" => format!("The {update} schema is missing a required field at path '{p}' in the {original} schema"),
        "ONEOF_FIELD_REMOVED" => format!("The {update} schema is missing a oneof field at path '{p}' in the {original} schema"),
        "MULTIPLE_FIELDS_MOVED_TO_ONEOF" => format!("Multiple fields in the oneof at path '{p}' in the {update} schema are outside a oneof in the {original} schema"),
        "FIELD_MOVED_TO_EXISTING_ONEOF" => format!("A field in the oneof at path '{p}' in the {update} schema is outside a oneof in the {original} schema, and the oneof already existed there"),
        _ => format!("The schemas differ at path '{p}'"),
    }
}

/// Pairs of messages by full name (original, update).
type PCtx = Ctx<(String, String)>;

/// Every difference from `original` to `update`; Err when the schemas are too deep or too complex to
/// compare within the walk's budget (see `diff`).
pub fn differences(
    original: &ParsedProto,
    update: &ParsedProto,
) -> Result<Vec<Difference>, TooComplex> {
    differences_within(original, update, &Budget::default())
}

/// [`differences`], spending from a request's `budget` too.
pub fn differences_within(
    original: &ParsedProto,
    update: &ParsedProto,
    budget: &Budget,
) -> Result<Vec<Difference>, TooComplex> {
    let (o, u) = (original.file(), update.file());
    let mut ctx = PCtx::within(is_compatible_kind, budget.clone());
    if o.package_name() != u.package_name() {
        ctx.add("PACKAGE_CHANGED");
    }
    compare_types(
        &mut ctx,
        o.messages().collect(),
        o.enums().collect(),
        u.messages().collect(),
        u.enums().collect(),
    );
    ctx.finish()
}

/// The incompatible differences from `original` to `update`.
pub fn incompatibilities(
    original: &ParsedProto,
    update: &ParsedProto,
) -> Result<Vec<Difference>, TooComplex> {
    incompatibilities_within(original, update, &Budget::default())
}

/// [`incompatibilities`], spending from a request's `budget` too.
pub fn incompatibilities_within(
    original: &ParsedProto,
    update: &ParsedProto,
    budget: &Budget,
) -> Result<Vec<Difference>, TooComplex> {
    Ok(differences_within(original, update, budget)?
        .into_iter()
        .filter(|d| !is_compatible_kind(d.kind))
        .collect())
}

fn compare_types(
    ctx: &mut PCtx,
    om: Vec<MessageDescriptor>,
    oe: Vec<EnumDescriptor>,
    um: Vec<MessageDescriptor>,
    ue: Vec<EnumDescriptor>,
) {
    // By name, with the position among the (non map-entry) messages, which MESSAGE_MOVED compares.
    let index = |ms: Vec<MessageDescriptor>| -> BTreeMap<String, (usize, MessageDescriptor)> {
        ms.into_iter()
            .filter(|m| !m.is_map_entry())
            .enumerate()
            .map(|(i, m)| (m.name().to_string(), (i, m)))
            .collect()
    };
    let (om, um) = (index(om), index(um));
    let mut names: BTreeSet<&String> = om.keys().collect();
    names.extend(um.keys());
    for name in names {
        if ctx.exhausted() {
            return;
        }
        ctx.scoped(name, |ctx| match (om.get(name), um.get(name)) {
            (Some(_), None) => ctx.add("MESSAGE_REMOVED"),
            (None, Some(_)) => ctx.add("MESSAGE_ADDED"),
            (Some((oi, o)), Some((ui, u))) => {
                compare_messages(ctx, o, u);
                if oi != ui {
                    ctx.add("MESSAGE_MOVED");
                }
            }
            (None, None) => {}
        });
    }
    let by_name = |es: Vec<EnumDescriptor>| -> BTreeMap<String, EnumDescriptor> {
        es.into_iter().map(|e| (e.name().to_string(), e)).collect()
    };
    let (oe, ue) = (by_name(oe), by_name(ue));
    let mut names: BTreeSet<&String> = oe.keys().collect();
    names.extend(ue.keys());
    for name in names {
        ctx.scoped(name, |ctx| match (oe.get(name), ue.get(name)) {
            (Some(_), None) => ctx.add("ENUM_REMOVED"),
            (None, Some(_)) => ctx.add("ENUM_ADDED"),
            (Some(o), Some(u)) => {
                let mut numbers: BTreeSet<i32> = o.values().map(|v| v.number()).collect();
                numbers.extend(u.values().map(|v| v.number()));
                for n in numbers {
                    let ov = o.get_value(n);
                    let uv = u.get_value(n);
                    ctx.scoped(&n.to_string(), |ctx| match (ov, uv) {
                        (Some(_), None) => ctx.add("ENUM_CONST_REMOVED"),
                        (None, Some(_)) => ctx.add("ENUM_CONST_ADDED"),
                        (Some(a), Some(b)) if a.name() != b.name() => ctx.add("ENUM_CONST_CHANGED"),
                        _ => {}
                    });
                }
            }
            (None, None) => {}
        });
    }
}

/// The real (not proto3-optional) oneof a field is in.
fn oneof_of(f: &FieldDescriptor) -> Option<String> {
    f.containing_oneof()
        .filter(|o| !o.is_synthetic())
        .map(|o| o.name().to_string())
}

/// Compares two messages of the same name, once per walk (see `diff`): a message type reached along many
/// fields, or through itself, is not walked again.
fn compare_messages(ctx: &mut PCtx, o: &MessageDescriptor, u: &MessageDescriptor) {
    let key = (o.full_name().to_string(), u.full_name().to_string());
    ctx.pair(key, |ctx| compare_message_bodies(ctx, o, u));
}

fn compare_message_bodies(ctx: &mut PCtx, o: &MessageDescriptor, u: &MessageDescriptor) {
    let top = |m: &MessageDescriptor| -> BTreeMap<u32, FieldDescriptor> {
        m.fields()
            .filter(|f| oneof_of(f).is_none())
            .map(|f| (f.number(), f))
            .collect()
    };
    let mut o_top = top(o);
    let u_top = top(u);
    let oneofs = |m: &MessageDescriptor| -> BTreeMap<String, BTreeMap<u32, FieldDescriptor>> {
        m.oneofs()
            .filter(|x| !x.is_synthetic())
            .map(|x| {
                let fields = x.fields().map(|f| (f.number(), f)).collect();
                (x.name().to_string(), fields)
            })
            .collect()
    };
    let (o_oneofs, u_oneofs) = (oneofs(o), oneofs(u));
    let o_in_oneof: HashSet<u32> = o_oneofs
        .values()
        .flat_map(|fs| fs.keys().copied())
        .collect();
    for (name, fields) in &u_oneofs {
        ctx.scoped(name, |ctx| {
            let mut moved = 0;
            let mut existing = 0;
            for number in fields.keys() {
                if o_top.remove(number).is_some() {
                    moved += 1;
                } else if o_in_oneof.contains(number) {
                    existing += 1;
                }
            }
            if moved > 1 {
                ctx.add("MULTIPLE_FIELDS_MOVED_TO_ONEOF");
            } else if moved == 1 && existing > 0 {
                ctx.add("FIELD_MOVED_TO_EXISTING_ONEOF");
            }
        });
    }
    let mut names: BTreeSet<&String> = o_oneofs.keys().collect();
    names.extend(u_oneofs.keys());
    for name in names {
        ctx.scoped(name, |ctx| match (o_oneofs.get(name), u_oneofs.get(name)) {
            (Some(_), None) => ctx.add("ONEOF_REMOVED"),
            (None, Some(_)) => ctx.add("ONEOF_ADDED"),
            (Some(of), Some(uf)) => {
                let mut numbers: BTreeSet<u32> = of.keys().copied().collect();
                numbers.extend(uf.keys());
                for n in numbers {
                    ctx.scoped(&n.to_string(), |ctx| match (of.get(&n), uf.get(&n)) {
                        (Some(_), None) => ctx.add("ONEOF_FIELD_REMOVED"),
                        (None, Some(_)) => ctx.add("ONEOF_FIELD_ADDED"),
                        (Some(a), Some(b)) => compare_fields(ctx, a, b),
                        (None, None) => {}
                    });
                }
            }
            (None, None) => {}
        });
    }
    let mut numbers: BTreeSet<u32> = o_top.keys().copied().collect();
    numbers.extend(u_top.keys());
    for n in numbers {
        if ctx.exhausted() {
            return;
        }
        ctx.scoped(&n.to_string(), |ctx| match (o_top.get(&n), u_top.get(&n)) {
            (Some(a), None) => ctx.add(if a.cardinality() == Cardinality::Required {
                "REQUIRED_FIELD_REMOVED"
            } else {
                "FIELD_REMOVED"
            }),
            (None, Some(b)) => ctx.add(if b.cardinality() == Cardinality::Required {
                "REQUIRED_FIELD_ADDED"
            } else {
                "FIELD_ADDED"
            }),
            (Some(a), Some(b)) => compare_fields(ctx, a, b),
            (None, None) => {}
        });
    }
    // Fields whose oneof membership changed are compared by number as well.
    let ua: HashMap<u32, FieldDescriptor> = u.fields().map(|f| (f.number(), f)).collect();
    for a in o.fields() {
        let Some(b) = ua.get(&a.number()) else {
            continue;
        };
        let (ao, bo) = (oneof_of(&a), oneof_of(b));
        if (ao.is_none() && bo.is_none()) || (ao.is_some() && ao == bo) {
            continue;
        }
        ctx.scoped(&a.number().to_string(), |ctx| compare_fields(ctx, &a, b));
    }
    compare_types(
        ctx,
        o.child_messages().collect(),
        o.child_enums().collect(),
        u.child_messages().collect(),
        u.child_enums().collect(),
    );
}

fn compare_fields(ctx: &mut PCtx, o: &FieldDescriptor, u: &FieldDescriptor) {
    if o.name() != u.name() {
        ctx.add("FIELD_NAME_CHANGED");
    }
    compare_field_types(ctx, o, u, true);
}

#[derive(PartialEq, Eq)]
enum FieldKind {
    Scalar,
    Map,
    Message,
}

fn field_kind(f: &FieldDescriptor) -> FieldKind {
    if f.is_map() {
        FieldKind::Map
    } else if matches!(f.kind(), Kind::Message(_)) {
        FieldKind::Message
    } else {
        FieldKind::Scalar
    }
}

/// The wire group of a scalar: values of one group read as each other.
fn scalar_group(k: &Kind) -> u8 {
    match k {
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => 0,
        Kind::Sint32 | Kind::Sint64 => 1,
        Kind::String | Kind::Bytes => 2,
        Kind::Fixed32 | Kind::Sfixed32 => 3,
        Kind::Fixed64 | Kind::Sfixed64 => 4,
        Kind::Float => 5,
        Kind::Double => 6,
        Kind::Message(_) => 7,
    }
}

/// The label a field is written with in `.proto` text, as Confluent's parser reads it: `repeated`,
/// `required`, and `optional` (always written in proto2, only for explicit presence in proto3); none for a
/// proto3 field without one, a field of a oneof and a map.
fn written_label(f: &FieldDescriptor) -> Option<Label> {
    if f.is_map() || oneof_of(f).is_some() {
        return None;
    }
    let p = f.field_descriptor_proto();
    match p.label() {
        Label::Repeated => Some(Label::Repeated),
        Label::Required => Some(Label::Required),
        Label::Optional
            if p.proto3_optional() || f.parent_file().syntax() == prost_reflect::Syntax::Proto2 =>
        {
            Some(Label::Optional)
        }
        Label::Optional => None,
    }
}

fn local_name(m: &MessageDescriptor) -> String {
    let package = m.package_name();
    let full = m.full_name();
    match full.strip_prefix(package).and_then(|r| r.strip_prefix('.')) {
        Some(local) if !package.is_empty() => local.to_string(),
        _ => full.to_string(),
    }
}

/// `labels`: compare the written labels too (not for the key and value of a map, which have none).
fn compare_field_types(ctx: &mut PCtx, o: &FieldDescriptor, u: &FieldDescriptor, labels: bool) {
    let (ok, uk) = (field_kind(o), field_kind(u));
    if ok != uk {
        return ctx.add("FIELD_KIND_CHANGED");
    }
    match ok {
        FieldKind::Scalar => {
            let group = scalar_group(&o.kind());
            if group != scalar_group(&u.kind()) {
                return ctx.add("FIELD_SCALAR_KIND_CHANGED");
            }
            // Confluent's rule: a label written on both sides that changed (singular <-> repeated, optional
            // <-> required). Packed repeated numbers and a singular number do not read as each other;
            // strings and bytes do.
            let (ol, ul) = if labels {
                (written_label(o), written_label(u))
            } else {
                (None, None)
            };
            if let (Some(ol), Some(ul)) = (ol, ul) {
                if ol != ul {
                    ctx.add(if group == 2 {
                        "FIELD_STRING_OR_BYTES_LABEL_CHANGED"
                    } else {
                        "FIELD_NUMERIC_LABEL_CHANGED"
                    });
                }
            }
        }
        FieldKind::Message => {
            let (Kind::Message(om), Kind::Message(um)) = (o.kind(), u.kind()) else {
                return;
            };
            compare_message_types(ctx, &om, &um);
        }
        FieldKind::Map => {
            let (Kind::Message(oe), Kind::Message(ue)) = (o.kind(), u.kind()) else {
                return;
            };
            compare_field_types(
                ctx,
                &oe.map_entry_key_field(),
                &ue.map_entry_key_field(),
                false,
            );
            compare_field_types(
                ctx,
                &oe.map_entry_value_field(),
                &ue.map_entry_value_field(),
                false,
            );
        }
    }
}

fn compare_message_types(ctx: &mut PCtx, om: &MessageDescriptor, um: &MessageDescriptor) {
    if local_name(om) != local_name(um) {
        return ctx.add("FIELD_NAMED_TYPE_CHANGED");
    }
    let mut sub = ctx.at(vec![local_name(om)]);
    compare_messages(&mut sub, om, um);
    let ok = sub.compatible();
    ctx.found.extend(sub.found);
    if !ok {
        ctx.add("FIELD_NAMED_TYPE_CHANGED");
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;
    use prost_reflect::prost_types::descriptor_proto::{ExtensionRange, ReservedRange};

    /// Confluent's known types (what its Protobuf converter writes Connect's Decimal, Date and Time as, and the
    /// field metadata it keeps their parameters in) are imported without references, as in Confluent's registry.
    #[test]
    fn confluents_known_types_are_imported_without_references() {
        let text = "syntax = \"proto3\";\nimport \"google/type/date.proto\";\nimport \"google/type/timeofday.proto\";\nimport \"confluent/type/decimal.proto\";\nimport \"confluent/meta.proto\";\nmessage M {\n  google.type.Date d = 1;\n  google.type.TimeOfDay t = 2;\n  confluent.type.Decimal p = 3 [(confluent.field_meta) = {params: [{key: \"scale\", value: \"2\"}]}];\n}\n";
        let parsed = parse(text, &[]).unwrap();
        let m = parsed.pool.get_message_by_name("M").unwrap();
        let p = m.get_field_by_name("p").unwrap();
        assert_eq!(
            p.kind().as_message().unwrap().full_name(),
            "confluent.type.Decimal"
        );
        assert!(parse(
            "syntax = \"proto3\";\nimport \"google/type/money.proto\";\n",
            &[]
        )
        .is_err());
    }

    #[test]
    fn a_descriptor_with_inverted_ranges_is_an_error_or_text_never_a_panic() {
        // Ranges come from the client's base64 descriptor; protox does not check that end > start.
        let fd = FileDescriptorProto {
            name: Some("hostile.proto".into()),
            syntax: Some("proto2".into()),
            message_type: vec![DescriptorProto {
                name: Some("M".into()),
                reserved_range: vec![ReservedRange {
                    start: Some(5),
                    end: Some(i32::MIN),
                }],
                extension_range: vec![ExtensionRange {
                    start: Some(100),
                    end: Some(i32::MIN),
                    options: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = base64::engine::general_purpose::STANDARD.encode(fd.encode_to_vec());
        let err = parse(&text, &[]).err().expect("refused");
        assert!(err.contains("range"), "{err}");
    }
}
