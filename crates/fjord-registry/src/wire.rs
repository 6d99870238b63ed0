//! Records in Confluent's wire format decoded to JSON with their registered schema: a magic byte 0, the schema id
//! as 4 big-endian bytes, then the body (an Avro binary datum; JSON text; or, for Protobuf, the message-index
//! array and the message). What `fjord consume --value-format` prints and the dashboard's message browser shows,
//! from one place.
//!
//! A record is untrusted input, so decoding is bounded: an Avro length prefix may not make apache-avro allocate
//! more than [`MAX_AVRO_ALLOCATION`] (the process-wide limit, set here as by the Connect converters and SQL), an
//! Avro schema that contains itself or nests deeper than [`MAX_SCHEMA_DEPTH`] is refused before a datum is read
//! (apache-avro's reader recurses once per level, so a record of a few bytes per level could exhaust the stack),
//! a datum cut short (which apache-avro reads as null) or followed by more bytes is an error, Protobuf messages
//! nest at most 100 deep (prost's limit) and JSON 128 (serde_json's).

use apache_avro::Schema;
use serde_json::Value;

use crate::avro_json::{self, Names};
use crate::proto_json::ProtoSchema;

/// Largest single allocation decoding one Avro datum may make (a string, bytes or array length prefix).
pub const MAX_AVRO_ALLOCATION: usize = 64 << 20;
/// Deepest nesting of Avro types read (records, arrays, maps and unions in one another).
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// How many types the check of a schema expands at most: named types are expanded wherever they are used, so a
/// chain of records each using the next twice doubles per level (60 levels would be 2^60 visits, on every
/// decode).
pub const MAX_SCHEMA_NODES: usize = 10_000;

/// A record's schema id and body, or `None` when it is not in the wire format.
pub fn split(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => None,
    }
}

/// An Avro schema with the (name, text) of the schemas its references reach, dependencies first: the schema, the
/// referenced schemas, and the names of both. Each text is parsed once (the same named type given twice, under
/// two reference names, would be defined twice).
pub fn parse_avro(
    text: &str,
    referenced: &[(String, String)],
) -> Result<(Schema, Vec<Schema>, Names), String> {
    let mut texts: Vec<String> = Vec::new();
    for (_, t) in referenced {
        if !texts.contains(t) {
            texts.push(t.clone());
        }
    }
    let (schema, references) = if texts.is_empty() {
        (
            Schema::parse_str(text).map_err(|e| format!("not an Avro schema: {e}"))?,
            Vec::new(),
        )
    } else {
        // On a thread with the registry's reference stack: apache-avro's parse recurses through the chain of
        // named types across the texts, and 64 texts of 30 nested records each overflow a 2 MiB stack (a tokio
        // worker's, the dashboard's blocking thread) in a debug build, which aborts the whole process.
        crate::avro::on_reference_stack(|| {
            Schema::parse_str_with_list(text, &texts).map_err(|e| e.to_string())
        })
        .map_err(|e| format!("not an Avro schema with its references: {e}"))?
    };
    let names = {
        let mut all: Vec<&Schema> = vec![&schema];
        all.extend(references.iter());
        Names::of(&all)
    };
    Ok((schema, references, names))
}

/// A registered schema ready to decode record bodies with.
pub enum Decoder {
    /// Boxed: the Avro one is large.
    Avro(Box<AvroDecoder>),
    Json,
    Protobuf(Box<ProtoSchema>),
}

/// An Avro schema whose shape was checked ([`avro_shape_problem`]), with its references and named types.
pub struct AvroDecoder {
    schema: Schema,
    references: Vec<Schema>,
    names: Names,
}

impl AvroDecoder {
    /// Parses a registered Avro schema (`referenced` as for [`parse_avro`]) and checks its shape: Err says why it
    /// is not read.
    pub fn compile(text: &str, referenced: &[(String, String)]) -> Result<AvroDecoder, String> {
        let (schema, references, names) = parse_avro(text, referenced)?;
        if let Some(why) = avro_shape_problem(&schema, &names) {
            return Err(why);
        }
        Ok(AvroDecoder {
            schema,
            references,
            names,
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schemas its references reach, dependencies first (what a writer of its datums resolves names with).
    pub fn references(&self) -> &[Schema] {
        &self.references
    }

    /// The named types of the schema and its references.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// A binary datum as apache-avro's value, bounded as the module says (the shape was checked at compile).
    pub fn read(&self, body: &[u8]) -> Result<apache_avro::types::Value, String> {
        read_checked(&self.schema, &self.references, body)
    }

    /// A binary datum as Avro's JSON encoding (as kafka-avro-console-consumer prints it).
    pub fn to_json(&self, body: &[u8]) -> Result<String, String> {
        avro_json::to_json(&self.read(body)?, &self.schema, &self.names)
    }
}

impl Decoder {
    /// Compiles a registered schema: its `schemaType` (AVRO when empty), its text, and (import or reference
    /// name, text) of every schema its references reach, dependencies first.
    pub fn compile(
        schema_type: &str,
        text: &str,
        referenced: &[(String, String)],
    ) -> Result<Decoder, String> {
        match schema_type {
            "" | "AVRO" => Ok(Decoder::Avro(Box::new(AvroDecoder::compile(
                text, referenced,
            )?))),
            "JSON" => Ok(Decoder::Json),
            "PROTOBUF" => Ok(Decoder::Protobuf(Box::new(
                ProtoSchema::compile(text, referenced)
                    .map_err(|e| format!("not a Protobuf schema: {e}"))?,
            ))),
            other => Err(format!(
                "schema type {other} is not one of AVRO, JSON, PROTOBUF"
            )),
        }
    }

    /// The registry's name of the schema's type.
    pub fn schema_type(&self) -> &'static str {
        match self {
            Decoder::Avro(_) => "AVRO",
            Decoder::Json => "JSON",
            Decoder::Protobuf(_) => "PROTOBUF",
        }
    }

    /// A record's body (after the magic byte and schema id) as JSON text: Avro's JSON encoding (as
    /// kafka-avro-console-consumer prints it), the JSON itself, or the proto3 JSON mapping.
    pub fn decode(&self, body: &[u8]) -> Result<String, String> {
        match self {
            // Checked at compile: no second shape walk per record.
            Decoder::Avro(a) => a.to_json(body),
            Decoder::Json => json_text(body),
            Decoder::Protobuf(p) => decode_protobuf(p, body),
        }
    }
}

/// A JSON body, checked, on one line with its members in the order written (parsing it into a `Value` would sort
/// them): the whitespace between tokens is dropped, nothing else changes.
fn json_text(body: &[u8]) -> Result<String, String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| format!("the body is not JSON: {e}"))?;
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    Ok(out)
}

/// A Protobuf body: the message-index array names the message of the schema, the rest is that message.
pub fn decode_protobuf(schema: &ProtoSchema, body: &[u8]) -> Result<String, String> {
    let message = read_protobuf(schema, body)?;
    serde_json::to_string(&message).map_err(|e| e.to_string())
}

/// A Protobuf body as the message its index array names, decoded (what the Connect converter maps to Connect
/// data).
pub fn read_protobuf(
    schema: &ProtoSchema,
    body: &[u8],
) -> Result<prost_reflect::DynamicMessage, String> {
    let mut rest = body;
    let indexes = crate::proto_json::read_indexes(&mut rest)?;
    let message = schema.message_at(&indexes)?;
    crate::proto_json::decode(&message, rest)
}

/// Most values one Protobuf record of `body_len` bytes may become once mapped (to Connect data, to a SQL row): 64
/// per byte (a message's unset fields read as defaults, so an empty message of 2 bytes stands for a value per
/// field, and a repeated field of them for many) plus 10,000, at most 2,000,000. The mapping stops there with an
/// error: such a record is hostile or corrupt.
pub fn protobuf_value_budget(body_len: usize) -> usize {
    body_len
        .saturating_mul(64)
        .saturating_add(10_000)
        .min(2_000_000)
}

/// The datum of a schema whose shape was checked.
fn read_checked(
    schema: &Schema,
    references: &[Schema],
    body: &[u8],
) -> Result<apache_avro::types::Value, String> {
    // First caller wins: the Connect converters and SQL set the same limit.
    apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
    // Dependencies first: apache-avro resolves the list in order.
    let schemata: Vec<&Schema> = references.iter().chain(std::iter::once(schema)).collect();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .writer_schemata(schemata)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    // A body cut short anywhere (also just before an optional field, which apache-avro alone reads as that
    // field's null branch) is an error, never shown as data.
    crate::avro::read_datum(&reader, body)
}

/// Why an Avro schema is not read (a record that contains itself, or nesting deeper than [`MAX_SCHEMA_DEPTH`]);
/// `None` when it can be.
pub fn avro_shape_problem(schema: &Schema, names: &Names) -> Option<String> {
    let mut budget = MAX_SCHEMA_NODES;
    shape(schema, names, &mut Vec::new(), 0, &mut budget)
}

fn shape(
    s: &Schema,
    names: &Names,
    open: &mut Vec<String>,
    depth: usize,
    budget: &mut usize,
) -> Option<String> {
    if *budget == 0 {
        return Some(format!(
            "the Avro schema expands to more than {MAX_SCHEMA_NODES} types, which is not decoded"
        ));
    }
    *budget -= 1;
    if depth > MAX_SCHEMA_DEPTH {
        return Some(format!(
            "the Avro schema nests types more than {MAX_SCHEMA_DEPTH} deep, which is not decoded"
        ));
    }
    let s = match s {
        Schema::Ref { name } => {
            let full = name.fullname(None);
            if open.contains(&full) {
                return Some(format!(
                    "the Avro schema is recursive (record {full} contains itself), which is not decoded (a record could nest without bound)"
                ));
            }
            names.resolve(s).ok()?
        }
        other => other,
    };
    match s {
        Schema::Record(r) => {
            let full = r.name.fullname(None);
            if open.contains(&full) {
                return Some(format!(
                    "the Avro schema is recursive (record {full} contains itself), which is not decoded (a record could nest without bound)"
                ));
            }
            open.push(full);
            let found = r
                .fields
                .iter()
                .find_map(|f| shape(&f.schema, names, open, depth + 1, budget));
            open.pop();
            found
        }
        // Items that take no bytes (null, an empty record) would let a count of a few bytes make millions of
        // values: apache-avro bounds each collection's length, not their sum.
        Schema::Array(a) => shape(&a.items, names, open, depth + 1, budget)
            .or_else(|| zero_bytes(&a.items, names, 0).then(|| ZERO_BYTE_ITEMS.to_string())),
        Schema::Map(m) => shape(&m.types, names, open, depth + 1, budget)
            .or_else(|| zero_bytes(&m.types, names, 0).then(|| ZERO_BYTE_ITEMS.to_string())),
        Schema::Union(u) => u
            .variants()
            .iter()
            .find_map(|v| shape(v, names, open, depth + 1, budget)),
        _ => None,
    }
}

const ZERO_BYTE_ITEMS: &str = "the Avro schema has an array or map of values that take no bytes (null, an empty record or fixed), which is not decoded (a few bytes could claim millions of values)";

/// Whether a value of `s` can take no bytes at all (null, a zero-size fixed, a record of such fields).
fn zero_bytes(s: &Schema, names: &Names, depth: usize) -> bool {
    if depth > MAX_SCHEMA_DEPTH {
        return false;
    }
    let s = match s {
        Schema::Ref { .. } => match names.resolve(s) {
            Ok(s) => s,
            Err(_) => return false,
        },
        other => other,
    };
    match s {
        Schema::Null => true,
        Schema::Fixed(f) => f.size == 0,
        Schema::Record(r) => r
            .fields
            .iter()
            .all(|f| zero_bytes(&f.schema, names, depth + 1)),
        _ => false,
    }
}

/// Most schemas one schema's references may reach (each subject version fetched once).
pub const MAX_REFERENCES: usize = 64;

/// Why a walk of a schema's references stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReferenceError {
    /// A reference without `subject` and `version` (its JSON).
    Malformed(String),
    /// The references reach more than [`MAX_REFERENCES`] schemas.
    TooMany,
}

impl std::fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReferenceError::Malformed(r) => {
                write!(f, "a reference without subject and version: {r}")
            }
            ReferenceError::TooMany => write!(
                f,
                "its references reach more than {MAX_REFERENCES} schemas, which are not read"
            ),
        }
    }
}

/// A referenced schema the walk needs: `GET /subjects/{subject}/versions/{version}`, known to the referring
/// schema as `name`.
#[derive(Debug, PartialEq, Eq)]
pub struct ReferenceFetch {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// The schemas a registered schema's `references` reach, dependencies first, as (reference name, schema text):
/// what [`parse_avro`] and Protobuf compilation take. Each subject version is fetched once (a diamond costs one
/// fetch, a cycle ends where it comes back), at most [`MAX_REFERENCES`]. The caller does the fetching, blocking or
/// async alike:
///
/// ```text
/// let mut walk = ReferenceWalk::new(&registered["references"]);
/// while let Some(f) = walk.next()? {
///     let v = fetch(&f.subject, f.version)?; // the registry's answer, or the caller's own error
///     walk.fetched(&v);
/// }
/// let referenced = walk.finish();
/// ```
pub struct ReferenceWalk {
    /// The reference lists being walked, innermost last, each with the schema that holds it.
    frames: Vec<RefFrame>,
    /// Subject versions reached: their text once fetched and walked (empty while their references are walked).
    walked: std::collections::HashMap<(String, i64), String>,
    out: Vec<(String, String)>,
    /// The reference last handed out by [`ReferenceWalk::next`], until [`ReferenceWalk::fetched`].
    pending: Option<(String, (String, i64))>,
}

struct RefFrame {
    refs: Vec<Value>,
    next: usize,
    /// The schema holding `refs` (name, subject version, text): listed once its own references are.
    owner: Option<(String, (String, i64), Option<String>)>,
}

impl ReferenceWalk {
    pub fn new(references: &Value) -> ReferenceWalk {
        ReferenceWalk {
            frames: vec![RefFrame {
                refs: references.as_array().cloned().unwrap_or_default(),
                next: 0,
                owner: None,
            }],
            walked: std::collections::HashMap::new(),
            out: Vec::new(),
            pending: None,
        }
    }

    /// The next schema to fetch, `None` when every reference is walked.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<ReferenceFetch>, ReferenceError> {
        loop {
            let Some(top) = self.frames.last_mut() else {
                return Ok(None);
            };
            if let Some(r) = top.refs.get(top.next) {
                top.next += 1;
                let (Some(subject), Some(version)) = (r["subject"].as_str(), r["version"].as_i64())
                else {
                    return Err(ReferenceError::Malformed(r.to_string()));
                };
                let name = r["name"].as_str().unwrap_or(subject).to_string();
                let key = (subject.to_string(), version);
                if let Some(text) = self.walked.get(&key) {
                    if !text.is_empty() {
                        let text = text.clone();
                        self.list(name, text);
                    }
                    continue;
                }
                if self.walked.len() >= MAX_REFERENCES {
                    return Err(ReferenceError::TooMany);
                }
                // Marked before its own references are walked, so that a cycle ends here.
                self.walked.insert(key.clone(), String::new());
                let subject = key.0.clone();
                self.pending = Some((name.clone(), key));
                return Ok(Some(ReferenceFetch {
                    name,
                    subject,
                    version,
                }));
            }
            let done = self.frames.pop().expect("a frame");
            if let Some((name, key, Some(text))) = done.owner {
                self.walked.insert(key, text.clone());
                self.list(name, text);
            }
        }
    }

    /// The registry's answer for the schema [`ReferenceWalk::next`] asked for (`{schema, references, ...}`).
    pub fn fetched(&mut self, registered: &Value) {
        let Some((name, key)) = self.pending.take() else {
            return;
        };
        self.frames.push(RefFrame {
            refs: registered["references"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            next: 0,
            owner: Some((name, key, registered["schema"].as_str().map(str::to_string))),
        });
    }

    /// The schemas reached, dependencies first: (reference name, schema text).
    pub fn finish(self) -> Vec<(String, String)> {
        self.out
    }

    fn list(&mut self, name: String, text: String) {
        if !self.out.iter().any(|(n, _)| *n == name) {
            self.out.push((name, text));
        }
    }
}

#[cfg(test)]
mod tests {
    type Walked = (Result<Vec<(String, String)>, ReferenceError>, Vec<String>);

    /// A JSON Schema record's body is shown as written, on one line: members in their order (a `Value` sorts
    /// them), whitespace inside strings and escaped quotes kept; a body that is not JSON is refused.
    #[test]
    fn json_bodies_keep_their_member_order_on_one_line() {
        let d = super::Decoder::compile("JSON", "{}", &[]).unwrap();
        let body =
            "{ \"zeta\" : 1.50,\n\t\"alpha\": [ \"a \\\" }\", {\"y\": null, \"b\":true} ]\r\n}\n";
        assert_eq!(
            d.decode(body.as_bytes()).unwrap(),
            r#"{"zeta":1.50,"alpha":["a \" }",{"y":null,"b":true}]}"#
        );
        for bad in [&b"{\"a\": }"[..], b"{\"a\": 1} x", b"\"\xff\""] {
            assert!(d.decode(bad).unwrap_err().contains("not JSON"), "{bad:?}");
        }
    }

    /// Walks `root`'s references against `registry` (subject, version) -> answer; the fetches in order too.
    fn walk(root: Value, registry: &[((&str, i64), Value)]) -> Walked {
        let mut w = ReferenceWalk::new(&root);
        let mut asked = Vec::new();
        loop {
            match w.next() {
                Ok(Some(f)) => {
                    asked.push(format!("{}/{}", f.subject, f.version));
                    let v = registry
                        .iter()
                        .find(|(k, _)| *k == (f.subject.as_str(), f.version))
                        .map(|(_, v)| v.clone())
                        .unwrap();
                    w.fetched(&v);
                }
                Ok(None) => return (Ok(w.finish()), asked),
                Err(e) => return (Err(e), asked),
            }
        }
    }

    fn reference(name: &str, subject: &str) -> Value {
        serde_json::json!({"name": name, "subject": subject, "version": 1})
    }

    /// Dependencies come first; a diamond is fetched once; a cycle ends; past the limit or on a malformed
    /// reference the walk stops with the reason.
    #[test]
    fn references_are_walked_dependencies_first_each_once() {
        let registry = [
            (
                ("a", 1),
                serde_json::json!({"schema": "A", "references": [reference("c.proto", "c")]}),
            ),
            (
                ("b", 1),
                serde_json::json!({"schema": "B", "references": [reference("c.proto", "c")]}),
            ),
            (
                ("c", 1),
                serde_json::json!({"schema": "C", "references": [reference("a.proto", "a")]}),
            ),
        ];
        let root = serde_json::json!([reference("a.proto", "a"), reference("b.proto", "b")]);
        let (got, asked) = walk(root, &registry);
        assert_eq!(
            asked,
            ["a/1", "c/1", "b/1"],
            "c once, the cycle back to a ends"
        );
        let names: Vec<(String, String)> = got.unwrap();
        assert_eq!(
            names,
            [
                ("c.proto".to_string(), "C".to_string()),
                ("a.proto".to_string(), "A".to_string()),
                ("b.proto".to_string(), "B".to_string())
            ]
        );
        let (got, _) = walk(serde_json::json!([{"name": "x"}]), &[]);
        assert!(matches!(got, Err(ReferenceError::Malformed(_))));
        // A chain of 70 schemas, each referencing the next.
        let chain: Vec<((&str, i64), Value)> = (0..70)
            .map(|i| {
                let subject: &'static str = Box::leak(format!("s{i}").into_boxed_str());
                let next = format!("s{}", i + 1);
                (
                    (subject, 1),
                    serde_json::json!({"schema": "X", "references": [reference(&next, &next)]}),
                )
            })
            .collect();
        let (got, asked) = walk(serde_json::json!([reference("s0", "s0")]), &chain);
        assert_eq!(got, Err(ReferenceError::TooMany));
        assert_eq!(asked.len(), MAX_REFERENCES);
        assert!(ReferenceError::TooMany.to_string().contains("more than 64"));
    }

    use super::*;

    fn zigzag_len(n: u64, out: &mut Vec<u8>) {
        let mut n = n << 1;
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// Schemas that make a tiny body or the check itself expensive are refused before anything is decoded: an
    /// array of nulls (a 4-byte count made a million values per array), and 40 records each using the next
    /// twice (the check expanded 2^40 types, on every decode). An array of ints is fine.
    #[test]
    fn avro_schemas_that_amplify_are_refused_before_decoding() {
        let check = |text: &str| {
            let (schema, references, names) = parse_avro(text, &[]).unwrap();
            assert!(references.is_empty());
            avro_shape_problem(&schema, &names)
        };
        let nulls = r#"{"type":"array","items":{"type":"array","items":"null"}}"#;
        assert!(check(nulls).is_some_and(|w| w.contains("take no bytes")));
        let empty = r#"{"type":"map","values":{"type":"record","name":"E","fields":[]}}"#;
        assert!(check(empty).is_some_and(|w| w.contains("take no bytes")));
        assert_eq!(check(r#"{"type":"array","items":"int"}"#), None);
        let mut chain =
            r#"{"type":"record","name":"R40","fields":[{"name":"x","type":"int"}]}"#.to_string();
        for i in (0..40).rev() {
            chain = format!(
                r#"{{"type":"record","name":"R{i}","fields":[{{"name":"a","type":{chain}}},{{"name":"b","type":"R{}"}}]}}"#,
                i + 1
            );
        }
        let started = std::time::Instant::now();
        let why = check(&chain);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("more than 10000 types")),
            "{why:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// 64 referenced texts, each a record nested 30 deep whose innermost field uses the previous text's record
    /// (about what the registry's own bounds allow: references 64 deep, texts 128 JSON levels). Parsed on a 2 MiB
    /// thread, as a tokio worker or the dashboard's blocking thread has, apache-avro's parse overflowed the stack
    /// in a debug build and aborted the process; now it is parsed on a stack of its own and refused by the shape
    /// check (1,920 levels deep).
    #[test]
    fn a_deep_chain_of_references_is_parsed_on_a_stack_of_its_own_then_refused() {
        let mut texts: Vec<(String, String)> = Vec::new();
        for k in 0..64 {
            let mut inner = if k == 0 {
                r#""int""#.to_string()
            } else {
                format!(r#""T{}""#, k - 1)
            };
            for d in (0..30).rev() {
                let name = if d == 0 {
                    format!("T{k}")
                } else {
                    format!("T{k}_{d}")
                };
                inner = format!(
                    r#"{{"type":"record","name":"{name}","fields":[{{"name":"f","type":{inner}}}]}}"#
                );
            }
            texts.push((format!("T{k}"), inner));
        }
        let top = r#"{"type":"record","name":"Top","fields":[{"name":"t","type":"T63"}]}"#;
        let why = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let (schema, _, names) = parse_avro(top, &texts)?;
                Ok::<_, String>(avro_shape_problem(&schema, &names))
            })
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(why.is_some_and(|w| w.contains("more than 64 deep")));
    }

    #[test]
    fn avro_records_decode_and_damaged_or_hostile_ones_are_errors() {
        let d = Decoder::compile(
            "AVRO",
            r#"{"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}, {"name": "n", "type": ["null", "long"]}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(d.schema_type(), "AVRO");
        // "ab", then union branch 1 (long) 3.
        let good = [0x04, b'a', b'b', 0x02, 0x06];
        assert_eq!(d.decode(&good).unwrap(), r#"{"s":"ab","n":{"long":3}}"#);
        assert!(d.decode(&good[..4]).is_err(), "cut short");
        let mut long = good.to_vec();
        long.push(0);
        assert!(d.decode(&long).unwrap_err().contains("1 bytes are left"));
        // A length prefix of 200 MiB with two bytes behind it: refused by the allocation limit.
        let mut huge = Vec::new();
        zigzag_len(200 << 20, &mut huge);
        huge.extend_from_slice(b"ab");
        let s = Decoder::compile("AVRO", r#""string""#, &[]).unwrap();
        let e = s.decode(&huge).unwrap_err();
        assert!(e.contains("67108864"), "{e}");
        // A string cut short under the limit.
        assert!(s.decode(&[0x80, 0x10, b'a', b'b']).is_err());
    }

    #[test]
    fn recursive_and_very_deep_avro_schemas_are_refused() {
        let recursive = r#"{"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]}"#;
        let e = Decoder::compile("AVRO", recursive, &[]).err().unwrap();
        assert!(e.contains("recursive"), "{e}");
        let mut deep = r#""int""#.to_string();
        for _ in 0..70 {
            deep = format!(r#"{{"type": "array", "items": {deep}}}"#);
        }
        let e = Decoder::compile("AVRO", &deep, &[]).err().unwrap();
        assert!(e.contains("deep"), "{e}");
    }

    #[test]
    fn json_and_protobuf_bodies_and_the_wire_header() {
        assert_eq!(split(&[0, 0, 0, 1, 2, 9]), Some((258, &[9u8][..])));
        assert_eq!(split(&[1, 0, 0, 1, 2]), None);
        assert_eq!(split(&[0, 0, 0, 1]), None);
        let j = Decoder::compile("JSON", "{}", &[]).unwrap();
        assert_eq!(j.decode(br#"{"a": [1]}"#).unwrap(), r#"{"a":[1]}"#);
        assert!(j.decode(b"{").is_err());
        let p = Decoder::compile(
            "PROTOBUF",
            "syntax = \"proto3\";\nmessage A { string x = 1; }\nmessage B { int32 y = 1; }\n",
            &[],
        )
        .unwrap();
        // Indexes [1] (count 1, index 1, zigzag), then field 1 = 150.
        assert_eq!(p.decode(&[2, 2, 0x08, 0x96, 0x01]).unwrap(), r#"{"y":150}"#);
        assert!(p.decode(&[2, 8, 0x08]).is_err(), "no message 4");
        assert!(Decoder::compile("XML", "", &[]).is_err());
    }
}
