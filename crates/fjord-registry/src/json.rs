//! JSON Schema: parsing and validation of the schema document (the `jsonschema` crate, references served from
//! memory), the identity form, and the compatibility walk.
//!
//! The walk follows the rules of Confluent's JSON Schema provider: a schema is read into the same kinds of
//! nodes its loader builds (string, number, object, array, enum, const, combined, not, empty/true, false), two
//! versions are compared node by node and every difference is recorded with Confluent's type name and JSON
//! path; the change is compatible when every difference is one of the compatible kinds. BACKWARD compares
//! the old schema (original) with the new one (update), FORWARD the other way round.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::rc::{Rc, Weak};

use serde_json::Value;

use crate::diff::{Budget, Ctx, Difference, TooComplex, MAX_DEPTH};

/// A parsed JSON Schema.
pub struct ParsedJson {
    pub value: Value,
    /// Referenced schemas by their reference name (the name a `$ref` uses), transitively.
    pub referenced: HashMap<String, Value>,
    /// The identity form: the document re-serialized with sorted keys and no whitespace.
    pub canonical: String,
}

/// The draft of a schema that names none.
const DEFAULT_DRAFT: &str = "http://json-schema.org/draft-07/schema#";

/// The drafts the registry accepts in `$schema` (as Confluent's).
const KNOWN_DRAFTS: [&str; 5] = ["draft-04", "draft-06", "draft-07", "2019-09", "2020-12"];

struct MemoryRetriever {
    docs: HashMap<String, Value>,
}

impl MemoryRetriever {
    fn find(&self, uri: &str) -> Option<&Value> {
        let base = uri.split('#').next().unwrap_or(uri);
        self.docs.get(base).or_else(|| {
            self.docs
                .iter()
                .find(|(name, _)| ref_names(base, name))
                .map(|(_, v)| v)
        })
    }
}

/// Whether a `$ref`'s document part `base` (before any `#`) names the reference `name`: the same, `base` a URL
/// or path ending in `/name` (`https://x/address.json` names `address.json`), or `name` ending in `base`. How
/// the registry serves references to the schema compiler and resolves them in the compatibility walk, and how
/// SQL's JSON_SR reads them, so that a schema registered is a schema read. Nested `$id`s and relative paths
/// (`../x.json`) are not resolved per RFC 3986: a `$ref` is matched by its last path segments only.
pub fn ref_names(base: &str, name: &str) -> bool {
    !base.is_empty()
        && (base == name
            || base
                .strip_suffix(name)
                .is_some_and(|rest| rest.ends_with('/'))
            || name.ends_with(base))
}

/// The value a `$ref`'s fragment (after the `#`) points to in `doc`: a JSON pointer (RFC 6901: `""` is the
/// document, `"/"` its member named `""`, `~1`/`~0` escapes) written percent-encoded in the URI (`%20`, `%25`),
/// as the schema compiler resolves it when the schema is registered.
pub fn ref_pointer<'v>(doc: &'v Value, fragment: &str) -> Option<&'v Value> {
    doc.pointer(&percent_decoded(fragment))
}

/// A URI fragment's `%XX` escapes decoded (as JSON pointers in `$ref`s are written).
pub fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl jsonschema::Retrieve for MemoryRetriever {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.find(uri.as_str()).cloned().ok_or_else(|| {
            format!(
                "reference {uri} is not a registered reference of this schema (remote references are not fetched)"
            )
            .into()
        })
    }
}

/// A validator for a registered JSON Schema `value` whose `$ref`s may name the schemas its references reach
/// (`referenced`: reference name, schema), served from memory as when the schema was registered (nothing is
/// fetched). A schema without `$schema` is draft-07, Confluent's default; formats are not checked. For the
/// clients of the registry (Connect's JsonSchemaConverter) that validate records against it.
pub fn validator(
    value: &Value,
    referenced: &[(String, Value)],
) -> Result<jsonschema::Validator, String> {
    let docs: HashMap<String, Value> = referenced.iter().cloned().collect();
    let named = value.get("$schema").is_some();
    // jsonschema panics on a few malformed schemas (as `parse` guards).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut options = jsonschema::options()
            .with_retriever(MemoryRetriever { docs })
            .should_validate_formats(false);
        if !named {
            options = options.with_draft(jsonschema::Draft::Draft7);
        }
        options.build(value)
    }))
    .map_err(|_| "not a valid JSON Schema (it cannot be compiled)".to_string())?
    .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

/// A JSON Schema with the schemas its registry references reach, by reference name: the documents its `$ref`s
/// are resolved in, as the registry resolved them when it accepted the schema (SQL's JSON_SR inference and
/// Connect's JsonSchemaConverter walk them, each with its own depth and work budget).
pub struct JsonDocs {
    pub root: Value,
    /// (reference name, schema), transitively.
    pub referenced: Vec<(String, Value)>,
}

impl JsonDocs {
    /// `referenced`: (reference name, text) of every schema the references reach.
    pub fn parse(text: &str, referenced: &[(String, String)]) -> Result<JsonDocs, String> {
        let root = serde_json::from_str(text)
            .map_err(|e| format!("the registered JSON Schema is not JSON: {e}"))?;
        let referenced = referenced
            .iter()
            .map(|(name, text)| {
                serde_json::from_str(text)
                    .map(|j| (name.clone(), j))
                    .map_err(|e| {
                        format!("the JSON Schema it references as {name} is not JSON: {e}")
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(JsonDocs { root, referenced })
    }

    /// Document `i`: 0 the root, then the referenced schemas in order.
    pub fn doc(&self, i: usize) -> &Value {
        match i {
            0 => &self.root,
            i => &self.referenced[i - 1].1,
        }
    }

    /// The schema `$ref` `r` (in document `doc`) names: (it, its document). A `$ref` names a reference as the
    /// registry matches it ([`ref_names`]: the name itself, a URL or path ending in `/name`), also relative to
    /// the document's top-level `$id` or by a referenced schema's `$id`; its fragment is a JSON pointer
    /// ([`ref_pointer`]); anchors are not resolved.
    pub fn resolve(&self, r: &str, doc: usize) -> Result<(&Value, usize), String> {
        let (base, fragment) = r.split_once('#').unwrap_or((r, ""));
        let at = if base.is_empty() {
            doc
        } else {
            // Relative to the document's `$id` when it has one (`https://x/order.json` makes `address.json`
            // `https://x/address.json`); a reference name or a referenced schema's `$id` may be either.
            let absolute = self.doc(doc)["$id"]
                .as_str()
                .filter(|_| !base.contains("://"))
                .and_then(|id| id.rfind('/').map(|i| format!("{}{base}", &id[..=i])));
            let names = |n: &str| n == base || absolute.as_deref() == Some(n);
            let by_name = self.referenced.iter().position(|(n, _)| names(n));
            let by_id = || {
                (0..=self.referenced.len()).find(|&i| {
                    self.doc(i)["$id"]
                        .as_str()
                        .is_some_and(|id| names(id.split('#').next().unwrap_or(id)))
                })
            };
            // As the registry matched it when it accepted the schema (`https://x/address.json` names the
            // reference `address.json`).
            let by_suffix = || {
                self.referenced
                    .iter()
                    .position(|(n, _)| {
                        ref_names(base, n) || absolute.as_deref().is_some_and(|a| ref_names(a, n))
                    })
                    .map(|i| i + 1)
            };
            match by_name.map(|i| i + 1).or_else(by_id).or_else(by_suffix) {
                Some(i) => i,
                None => {
                    let known: Vec<&str> =
                        self.referenced.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(format!(
                        "\"$ref\": \"{r}\" names no schema: neither a local one (#/...) nor one of the schema's references ({})",
                        if known.is_empty() {
                            "it has none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        };
        if !fragment.is_empty() && !fragment.starts_with('/') {
            return Err(format!(
                "\"$ref\": \"{r}\": only JSON pointers (#/definitions/X) are resolved, not anchors"
            ));
        }
        match ref_pointer(self.doc(at), fragment) {
            Some(target) => Ok((target, at)),
            None => Err(format!("\"$ref\": \"{r}\" points to nothing in its schema")),
        }
    }
}

/// Parses and validates `text`; `referenced` are (reference name, schema text) of every schema reachable
/// through its references. The error is a message for `42201 Invalid schema`.
pub fn parse(text: &str, referenced: &[(String, String)]) -> Result<ParsedJson, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{text}: not valid JSON: {e}"))?;
    if !value.is_object() && !value.is_boolean() {
        return Err(format!(
            "{text}: a JSON Schema is an object or a boolean, not {}",
            json_type(&value)
        ));
    }
    if let Some(s) = value.get("$schema") {
        let known = s
            .as_str()
            .is_some_and(|s| KNOWN_DRAFTS.iter().any(|d| s.contains(d)));
        if !known {
            return Err(format!(
                "{text}: unsupported $schema {s}: use draft-04, draft-06, draft-07, 2019-09 or 2020-12"
            ));
        }
    }
    let mut docs = HashMap::new();
    for (name, t) in referenced {
        let v: Value = serde_json::from_str(t)
            .map_err(|e| format!("{text}: referenced schema {name} is not valid JSON: {e}"))?;
        docs.insert(name.clone(), v);
    }
    // The meta-schema check and the compile (which resolves every $ref) must not panic on odd input; the
    // crate documents panics only for an undetectable meta-schema, which the $schema check above rules out.
    // A schema without `$schema` is draft-07, as in Confluent's registry (the crate would take 2020-12).
    let mut checked_value = value.clone();
    if let Value::Object(o) = &mut checked_value {
        o.entry("$schema")
            .or_insert_with(|| Value::String(DEFAULT_DRAFT.to_string()));
    }
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Err(e) = jsonschema::meta::validate(&checked_value) {
            return Err(format!("{text}: {e} at {}", e.instance_path()));
        }
        jsonschema::options()
            .with_retriever(MemoryRetriever { docs: docs.clone() })
            .should_validate_formats(false)
            .build(&checked_value)
            .map(|_| ())
            .map_err(|e| format!("{text}: {e}"))
    }));
    match checked {
        Ok(r) => r?,
        Err(_) => return Err(format!("{text}: the schema cannot be compiled")),
    }
    let canonical = serde_json::to_string(&value).map_err(|e| format!("{text}: {e}"))?;
    Ok(ParsedJson {
        value,
        referenced: docs,
        canonical,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---- the schema model -----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Criterion {
    All,
    Any,
    One,
}

impl Criterion {
    fn keyword(self) -> &'static str {
        match self {
            Criterion::All => "allOf",
            Criterion::Any => "anyOf",
            Criterion::One => "oneOf",
        }
    }
}

#[derive(Clone, Debug)]
enum Additional {
    /// Absent or `true`.
    Allowed,
    /// `false`.
    Forbidden,
    Schema(Box<Node>),
}

impl Additional {
    fn permits(&self) -> bool {
        !matches!(self, Additional::Forbidden)
    }
    fn schema(&self) -> Option<&Node> {
        match self {
            Additional::Schema(n) => Some(n),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct ObjectNode {
    /// In the document's order, indexed by name in `property_index` (a walk looks every name up).
    properties: Vec<(String, Node)>,
    property_index: HashMap<String, usize>,
    required: BTreeSet<String>,
    additional: Additional,
    /// Compiled once per schema (a pattern that does not compile matches nothing, as before).
    pattern_properties: Vec<(Option<regex::Regex>, Node)>,
    min_properties: Option<f64>,
    max_properties: Option<f64>,
    dependency_arrays: BTreeMap<String, BTreeSet<String>>,
    dependency_schemas: BTreeMap<String, Node>,
}

impl ObjectNode {
    fn property(&self, name: &str) -> Option<&Node> {
        self.property_index
            .get(name)
            .and_then(|i| self.properties.get(*i))
            .map(|(_, s)| s)
    }
    fn is_open(&self) -> bool {
        self.pattern_properties.is_empty() && matches!(self.additional, Additional::Allowed)
    }
    /// The schema that covers `name` in a partially open content model.
    fn partial_schema(&self, name: &str) -> Option<&Node> {
        for (pattern, schema) in &self.pattern_properties {
            if pattern.as_ref().is_some_and(|r| r.is_match(name)) {
                return Some(schema);
            }
        }
        self.additional.schema()
    }
}

#[derive(Clone, Debug)]
struct ArrayNode {
    all_items: Option<Box<Node>>,
    item_list: Vec<Node>,
    additional: Additional,
    min_items: Option<f64>,
    max_items: Option<f64>,
    unique: bool,
}

impl ArrayNode {
    fn is_open(&self) -> bool {
        matches!(self.additional, Additional::Allowed)
    }
}

#[derive(Clone, Debug)]
enum Kind {
    /// `true`, `{}`, or a schema with only annotations.
    Empty,
    False,
    Null,
    Boolean,
    String {
        min_length: Option<f64>,
        max_length: Option<f64>,
        pattern: Option<String>,
    },
    Number {
        integer: bool,
        minimum: Option<f64>,
        maximum: Option<f64>,
        exclusive_minimum: Option<f64>,
        exclusive_maximum: Option<f64>,
        multiple_of: Option<f64>,
    },
    Object(Box<ObjectNode>),
    Array(Box<ArrayNode>),
    Enum(Vec<Value>),
    Const(Value),
    Combined {
        criterion: Criterion,
        subschemas: Vec<Node>,
    },
    Not(Box<Node>),
    /// A resolved `$ref`: the node its target loaded into, shared by every reference to that target (so a
    /// definition used many times is loaded, and compared, once). Comparisons look through it (`Node::t`).
    Ref(Rc<OnceCell<Node>>),
    /// A `$ref` met inside the expansion of its own target (a recursive schema): the same shared target,
    /// held weakly so that the node graph has no cycle of strong references (the strong `Ref` that started
    /// the expansion keeps it alive). Compared like `Ref`, through the target, so the walk's in-progress
    /// pair handles the cycle; never by the reference's text, whose meaning depends on where it was met.
    Back(Weak<OnceCell<Node>>),
}

impl Kind {
    fn class(&self) -> u8 {
        match self {
            Kind::Empty => 0,
            Kind::False => 1,
            Kind::Null => 2,
            Kind::Boolean => 3,
            Kind::String { .. } => 4,
            Kind::Number { .. } => 5,
            Kind::Object(_) => 6,
            Kind::Array(_) => 7,
            Kind::Enum(_) => 8,
            Kind::Const(_) => 9,
            Kind::Combined { .. } => 10,
            Kind::Not(_) => 11,
            // Only when a chain of references leads nowhere (`Node::t` resolves every other).
            Kind::Ref(_) | Kind::Back(_) => 12,
        }
    }
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    id: Option<Value>,
    title: Option<Value>,
    description: Option<Value>,
    default: Option<Value>,
    /// A fingerprint of the source text (equal texts, equal fingerprints), to collapse duplicate subschemas
    /// of a combined schema and compare `not`s. A hash rather than the text: a node's text holds all of its
    /// subtree's, so keeping texts costs depth times the document's size.
    source: u64,
}

impl Node {
    /// The node a chain of references leads to (the node itself when it is no reference). A chain that
    /// leads nowhere (references only to each other) ends at one of its references.
    fn t(&self) -> Target<'_> {
        let first = match &self.kind {
            Kind::Ref(c) => Some(c.clone()),
            Kind::Back(w) => w.upgrade(),
            _ => None,
        };
        let Some(mut cell) = first.filter(|c| c.get().is_some()) else {
            return Target::Node(self);
        };
        for _ in 0..MAX_REF_HOPS {
            let next = match cell.get().map(|n| &n.kind) {
                Some(Kind::Ref(c)) => Some(c.clone()),
                Some(Kind::Back(w)) => w.upgrade(),
                _ => None,
            };
            match next.filter(|c| c.get().is_some()) {
                Some(c) => cell = c,
                None => break,
            }
        }
        Target::Held(cell)
    }

    fn bare(kind: Kind, source: u64) -> Node {
        Node {
            kind,
            id: None,
            title: None,
            description: None,
            default: None,
            source,
        }
    }
}

/// How many enum values (of both sides) cost one step of the walk's budget.
const ENUM_VALUES_PER_STEP: usize = 16;

/// The longest chain of references to references [`Node::t`] follows.
const MAX_REF_HOPS: usize = 1_000;

/// What [`Node::t`] leads to: the node itself, or a reference target (held, so that a target only reached
/// through a weak back-reference stays borrowed while it is compared).
enum Target<'a> {
    Node(&'a Node),
    Held(Rc<OnceCell<Node>>),
}

impl std::ops::Deref for Target<'_> {
    type Target = Node;

    fn deref(&self) -> &Node {
        match self {
            Target::Node(n) => n,
            // Filled: `Node::t` holds only filled cells (the default is never built).
            Target::Held(c) => c.get_or_init(|| Node::bare(Kind::Empty, 0)),
        }
    }
}

const OBJECT_KEYWORDS: [&str; 8] = [
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "dependencies",
    "dependentRequired",
];
const ARRAY_KEYWORDS: [&str; 7] = [
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
];
const STRING_KEYWORDS: [&str; 3] = ["minLength", "maxLength", "pattern"];
const NUMBER_KEYWORDS: [&str; 5] = [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// Reads schema documents into nodes, resolving `$ref`s within the document and to the referenced schemas.
struct Loader<'a> {
    root: &'a Value,
    referenced: &'a HashMap<String, Value>,
    /// The reference targets being expanded (cycle guard), as (document, value) addresses.
    stack: Vec<(usize, usize)>,
    /// Every reference target met so far (filled once loaded): a target referenced again shares its node.
    loaded: HashMap<(usize, usize), Rc<OnceCell<Node>>>,
    /// Nodes built so far, against [`MAX_LOADED_NODES`].
    nodes: usize,
    /// Set when the schema exceeds the loader's budget; the node tree is then incomplete.
    exceeded: Option<TooComplex>,
    /// The fingerprints of the values seen, by address (each value is hashed once, from its children's).
    fingerprints: HashMap<usize, u64>,
    /// One keyed hasher for both schemas of a comparison, so their fingerprints compare.
    hasher: &'a RandomState,
}

/// The most nodes one schema (with its referenced schemas) loads into for a compatibility check.
const MAX_LOADED_NODES: usize = 100_000;

/// How many built nodes cost one step of a request's budget (building one is cheaper than comparing a pair).
const NODES_PER_STEP: usize = 4;

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

impl<'a> Loader<'a> {
    /// The fingerprint of `v`: equal for equal JSON values.
    fn fingerprint(&mut self, v: &Value) -> u64 {
        let at = v as *const Value as usize;
        if let Some(f) = self.fingerprints.get(&at) {
            return *f;
        }
        let mut h = self.hasher.build_hasher();
        match v {
            Value::Object(o) => {
                h.write_u8(b'{');
                for (k, child) in o {
                    k.hash(&mut h);
                    h.write_u64(self.fingerprint(child));
                }
            }
            Value::Array(a) => {
                h.write_u8(b'[');
                for child in a {
                    h.write_u64(self.fingerprint(child));
                }
            }
            scalar => {
                h.write_u8(b'=');
                scalar.to_string().hash(&mut h);
            }
        }
        let f = h.finish();
        self.fingerprints.insert(at, f);
        f
    }

    /// A fingerprint of `tag` and the value `v` (a facet of one schema object).
    fn tagged(&mut self, tag: &str, v: &Value) -> u64 {
        let f = self.fingerprint(v);
        self.hasher.hash_one((tag, f))
    }

    fn resolve(&self, reference: &str, doc: &'a Value) -> Option<(&'a Value, &'a Value)> {
        let (base, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let target_doc = if base.is_empty() {
            doc
        } else {
            let retriever = self.referenced;
            retriever.get(base).or_else(|| {
                retriever
                    .iter()
                    .find(|(name, _)| ref_names(base, name))
                    .map(|(_, v)| v)
            })?
        };
        Some((ref_pointer(target_doc, fragment)?, target_doc))
    }

    fn load(&mut self, v: &'a Value, doc: &'a Value, depth: usize) -> Node {
        let source = self.fingerprint(v);
        let obj = match v {
            Value::Bool(true) => return Node::bare(Kind::Empty, source),
            Value::Bool(false) => return Node::bare(Kind::False, source),
            Value::Object(o) => o,
            _ => return Node::bare(Kind::Empty, source),
        };
        self.nodes += 1;
        if self.exceeded.is_some() {
            return Node::bare(Kind::Empty, source);
        }
        if depth > MAX_DEPTH {
            self.exceeded = Some(TooComplex(format!(
                "the schema is too deep to check for compatibility: its subschemas and references nest more than {MAX_DEPTH} levels deep"
            )));
            return Node::bare(Kind::Empty, source);
        }
        if self.nodes > MAX_LOADED_NODES {
            self.exceeded = Some(TooComplex(format!(
                "the schema is too complex to check for compatibility: it has more than {MAX_LOADED_NODES} subschemas"
            )));
            return Node::bare(Kind::Empty, source);
        }
        let mut facets: Vec<Node> = Vec::new();
        if let Some(Value::String(r)) = obj.get("$ref") {
            if let Some((target, target_doc)) = self.resolve(r, doc) {
                let key = (
                    target_doc as *const Value as usize,
                    target as *const Value as usize,
                );
                let src = self.hasher.hash_one(("$ref", r));
                // Every reference to a target shares one lazily filled node, whatever was being expanded
                // when it was met; a reference inside its own target's expansion holds it weakly.
                if self.stack.contains(&key) {
                    if let Some(cell) = self.loaded.get(&key) {
                        facets.push(Node::bare(Kind::Back(Rc::downgrade(cell)), src));
                    }
                } else if let Some(cell) = self.loaded.get(&key) {
                    facets.push(Node::bare(Kind::Ref(cell.clone()), src));
                } else {
                    let cell = Rc::new(OnceCell::new());
                    self.loaded.insert(key, cell.clone());
                    self.stack.push(key);
                    let node = self.load(target, target_doc, depth + 1);
                    self.stack.pop();
                    let _ = cell.set(node);
                    facets.push(Node::bare(Kind::Ref(cell), src));
                }
            }
        }
        let has_any = |keys: &[&str]| keys.iter().any(|k| obj.contains_key(*k));
        let types: Vec<&str> = match obj.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => {
                let mut inferred = Vec::new();
                if has_any(&OBJECT_KEYWORDS) {
                    inferred.push("object");
                }
                if has_any(&ARRAY_KEYWORDS) {
                    inferred.push("array");
                }
                if has_any(&STRING_KEYWORDS) {
                    inferred.push("string");
                }
                if has_any(&NUMBER_KEYWORDS) {
                    inferred.push("number");
                }
                inferred
            }
        };
        let typed: Vec<Node> = types.iter().map(|t| self.typed(t, v, doc, depth)).collect();
        match (typed.len(), obj.get("type")) {
            (0, _) => {}
            (1, _) => facets.extend(typed),
            (_, Some(Value::Array(_))) => facets.push(Node::bare(
                Kind::Combined {
                    criterion: Criterion::Any,
                    subschemas: typed,
                },
                self.hasher.hash_one(("types", source)),
            )),
            _ => facets.push(Node::bare(
                Kind::Combined {
                    criterion: Criterion::All,
                    subschemas: typed,
                },
                self.hasher.hash_one(("types", source)),
            )),
        }
        if let Some(Value::Array(values)) = obj.get("enum") {
            let src = self.tagged("enum", &obj["enum"]);
            facets.push(Node::bare(Kind::Enum(values.clone()), src));
        }
        if let Some(c) = obj.get("const") {
            let src = self.tagged("const", c);
            facets.push(Node::bare(Kind::Const(c.clone()), src));
        }
        for criterion in [Criterion::All, Criterion::Any, Criterion::One] {
            if let Some(Value::Array(subs)) = obj.get(criterion.keyword()) {
                let subschemas = subs.iter().map(|s| self.load(s, doc, depth + 1)).collect();
                let src = self.tagged(criterion.keyword(), &obj[criterion.keyword()]);
                facets.push(Node::bare(
                    Kind::Combined {
                        criterion,
                        subschemas,
                    },
                    src,
                ));
            }
        }
        if let Some(n) = obj.get("not") {
            let inner = self.load(n, doc, depth + 1);
            let src = self.tagged("not", n);
            facets.push(Node::bare(Kind::Not(Box::new(inner)), src));
        }
        let kind = match facets.len() {
            0 => Kind::Empty,
            1 => facets.pop().map(|f| f.kind).unwrap_or(Kind::Empty),
            _ => Kind::Combined {
                criterion: Criterion::All,
                subschemas: facets,
            },
        };
        Node {
            kind,
            id: obj.get("$id").or_else(|| obj.get("id")).cloned(),
            title: obj.get("title").cloned(),
            description: obj.get("description").cloned(),
            default: obj.get("default").cloned(),
            source,
        }
    }

    fn additional(&mut self, v: Option<&'a Value>, doc: &'a Value, depth: usize) -> Additional {
        match v {
            None | Some(Value::Bool(true)) => Additional::Allowed,
            Some(Value::Bool(false)) => Additional::Forbidden,
            Some(s) => Additional::Schema(Box::new(self.load(s, doc, depth + 1))),
        }
    }

    fn typed(&mut self, t: &str, v: &'a Value, doc: &'a Value, depth: usize) -> Node {
        let source = self.tagged(t, v);
        let kind = match t {
            "null" => Kind::Null,
            "boolean" => Kind::Boolean,
            "string" => Kind::String {
                min_length: num(v, "minLength"),
                max_length: num(v, "maxLength"),
                pattern: v.get("pattern").and_then(Value::as_str).map(str::to_string),
            },
            "number" | "integer" => Kind::Number {
                integer: t == "integer",
                minimum: num(v, "minimum"),
                maximum: num(v, "maximum"),
                exclusive_minimum: num(v, "exclusiveMinimum"),
                exclusive_maximum: num(v, "exclusiveMaximum"),
                multiple_of: num(v, "multipleOf"),
            },
            "object" => Kind::Object(Box::new(self.object(v, doc, depth))),
            "array" => Kind::Array(Box::new(self.array(v, doc, depth))),
            _ => Kind::Empty,
        };
        Node::bare(kind, source)
    }

    fn object(&mut self, v: &'a Value, doc: &'a Value, depth: usize) -> ObjectNode {
        let mut properties = Vec::new();
        let mut property_index = HashMap::new();
        if let Some(Value::Object(ps)) = v.get("properties") {
            for (name, s) in ps {
                property_index.insert(name.clone(), properties.len());
                properties.push((name.clone(), self.load(s, doc, depth + 1)));
            }
        }
        let mut pattern_properties = Vec::new();
        if let Some(Value::Object(ps)) = v.get("patternProperties") {
            for (pattern, s) in ps {
                let node = self.load(s, doc, depth + 1);
                pattern_properties.push((regex::Regex::new(pattern).ok(), node));
            }
        }
        let required = match v.get("required") {
            Some(Value::Array(r)) => r
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => BTreeSet::new(),
        };
        let mut dependency_arrays = BTreeMap::new();
        let mut dependency_schemas = BTreeMap::new();
        for key in ["dependencies", "dependentRequired", "dependentSchemas"] {
            if let Some(Value::Object(deps)) = v.get(key) {
                for (name, d) in deps {
                    match d {
                        Value::Array(names) => {
                            let names = names
                                .iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect();
                            dependency_arrays.insert(name.clone(), names);
                        }
                        s => {
                            let node = self.load(s, doc, depth + 1);
                            dependency_schemas.insert(name.clone(), node);
                        }
                    }
                }
            }
        }
        ObjectNode {
            properties,
            property_index,
            required,
            additional: self.additional(v.get("additionalProperties"), doc, depth),
            pattern_properties,
            min_properties: num(v, "minProperties"),
            max_properties: num(v, "maxProperties"),
            dependency_arrays,
            dependency_schemas,
        }
    }

    fn array(&mut self, v: &'a Value, doc: &'a Value, depth: usize) -> ArrayNode {
        let mut all_items = None;
        let mut item_list = Vec::new();
        let mut additional_src = v.get("additionalItems");
        match (v.get("prefixItems"), v.get("items")) {
            (Some(Value::Array(prefix)), items) => {
                item_list = prefix
                    .iter()
                    .map(|s| self.load(s, doc, depth + 1))
                    .collect();
                additional_src = items;
            }
            (_, Some(Value::Array(list))) => {
                item_list = list.iter().map(|s| self.load(s, doc, depth + 1)).collect();
            }
            (_, Some(items)) => all_items = Some(Box::new(self.load(items, doc, depth + 1))),
            (_, None) => {}
        }
        ArrayNode {
            all_items,
            item_list,
            additional: self.additional(additional_src, doc, depth),
            min_items: num(v, "minItems"),
            max_items: num(v, "maxItems"),
            unique: v.get("uniqueItems") == Some(&Value::Bool(true)),
        }
    }
}

impl ParsedJson {
    /// The schema as the walk's nodes (fingerprinted with `hasher`); Err when it exceeds the loader's
    /// budget.
    fn root(&self, hasher: &RandomState) -> Result<(Node, usize), TooComplex> {
        let mut loader = Loader {
            root: &self.value,
            referenced: &self.referenced,
            stack: Vec::new(),
            loaded: HashMap::new(),
            nodes: 0,
            exceeded: None,
            fingerprints: HashMap::new(),
            hasher,
        };
        let node = loader.load(loader.root, loader.root, 0);
        match loader.exceeded {
            Some(e) => Err(e),
            None => Ok((node, loader.nodes)),
        }
    }
}

// ---- differences ----------------------------------------------------------------------------------------

/// The differences Confluent's registry accepts as compatible.
const COMPATIBLE: [&str; 57] = [
    "ID_CHANGED",
    "DESCRIPTION_CHANGED",
    "TITLE_CHANGED",
    "DEFAULT_CHANGED",
    "SCHEMA_REMOVED",
    "TYPE_EXTENDED",
    "MAX_LENGTH_INCREASED",
    "MAX_LENGTH_REMOVED",
    "MIN_LENGTH_DECREASED",
    "MIN_LENGTH_REMOVED",
    "PATTERN_REMOVED",
    "MAXIMUM_INCREASED",
    "MAXIMUM_REMOVED",
    "MINIMUM_DECREASED",
    "MINIMUM_REMOVED",
    "EXCLUSIVE_MAXIMUM_INCREASED",
    "EXCLUSIVE_MAXIMUM_REMOVED",
    "EXCLUSIVE_MINIMUM_DECREASED",
    "EXCLUSIVE_MINIMUM_REMOVED",
    "MULTIPLE_OF_REDUCED",
    "MULTIPLE_OF_REMOVED",
    "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED",
    "REQUIRED_ATTRIBUTE_REMOVED",
    "DEPENDENCY_ARRAY_NARROWED",
    "DEPENDENCY_ARRAY_REMOVED",
    "DEPENDENCY_SCHEMA_REMOVED",
    "MAX_PROPERTIES_INCREASED",
    "MAX_PROPERTIES_REMOVED",
    "MIN_PROPERTIES_DECREASED",
    "MIN_PROPERTIES_REMOVED",
    "ADDITIONAL_PROPERTIES_ADDED",
    "ADDITIONAL_PROPERTIES_EXTENDED",
    "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
    "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL",
    "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
    "PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL",
    "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "MAX_ITEMS_INCREASED",
    "MAX_ITEMS_REMOVED",
    "MIN_ITEMS_DECREASED",
    "MIN_ITEMS_REMOVED",
    "UNIQUE_ITEMS_REMOVED",
    "ADDITIONAL_ITEMS_ADDED",
    "ADDITIONAL_ITEMS_EXTENDED",
    "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
    "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL",
    "ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
    "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL",
    "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
    "ENUM_ARRAY_EXTENDED",
    "COMBINED_TYPE_EXTENDED",
    "PRODUCT_TYPE_NARROWED",
    "SUM_TYPE_EXTENDED",
    "NOT_TYPE_NARROWED",
];

pub fn is_compatible_kind(kind: &str) -> bool {
    COMPATIBLE.contains(&kind)
}

/// Confluent's description of a difference, with `update`/`original` naming the two schemas ("new"/"old").
pub fn description(d: &Difference, update: &str, original: &str) -> String {
    let p = &d.path;
    let k = d.kind;
    let ends = |s: &str| k.ends_with(s);
    if k == "TYPE_CHANGED"
        || k == "TYPE_NARROWED"
        || k == "COMBINED_TYPE_CHANGED"
        || k == "COMBINED_TYPE_SUBSCHEMAS_CHANGED"
        || k == "ENUM_ARRAY_CHANGED"
    {
        format!("A type at path '{p}' is different between the {update} schema and the {original} schema")
    } else if (ends("_ADDED") && !k.contains("PROPERTY") && !k.contains("ITEM_"))
        || k == "ADDITIONAL_ITEMS_REMOVED"
        || k == "ADDITIONAL_PROPERTIES_REMOVED"
        || k == "REQUIRED_ATTRIBUTE_ADDED"
    {
        format!("The keyword at path '{p}' in the {update} schema is not present in the {original} schema")
    } else if k.starts_with("MIN") && ends("_INCREASED")
        || k == "EXCLUSIVE_MINIMUM_INCREASED"
        || k == "MULTIPLE_OF_EXPANDED"
    {
        format!("The value at path '{p}' in the {update} schema is more than its value in the {original} schema")
    } else if ends("_DECREASED") {
        format!("The value at path '{p}' in the {update} schema is less than its value in the {original} schema")
    } else if ends("_CHANGED")
        && (k.starts_with("PATTERN") || k.starts_with("MULTIPLE") || k.starts_with("DEPENDENCY"))
    {
        format!("The value at path '{p}' is different between the {update} and {original} schema")
    } else if ends("_NARROWED") {
        format!("An array or combined type at path '{p}' has fewer elements in the {update} schema than the {original} schema")
    } else if ends("_EXTENDED") {
        format!("An array or combined type at path '{p}' has more elements in the {update} schema than the {original} schema")
    } else if k.ends_with("ADDED_TO_OPEN_CONTENT_MODEL") {
        format!("The {update} schema has an open content model and has a property or item at path '{p}' which is missing in the {original} schema")
    } else if k == "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL" {
        format!("The {update} schema has an unopen content model and has a required property at path '{p}' which is missing in the {original} schema")
    } else if k.ends_with("REMOVED_FROM_CLOSED_CONTENT_MODEL") {
        format!("The {update} schema has a closed content model and is missing a property or item present at path '{p}' in the {original} schema")
    } else if k.ends_with("REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL") {
        format!("A property or item is missing in the {update} schema but present at path '{p}' in the {original} schema and is not covered by its partially open content model")
    } else if k.ends_with("ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL") {
        format!("The {update} schema has a property or item at path '{p}' which is missing in the {original} schema and is not covered by its partially open content model")
    } else {
        format!("The schemas differ at path '{p}'")
    }
}

type JCtx = Ctx<(usize, usize)>;

/// Every difference from `original` to `update` (Confluent's `SchemaDiff.compare`); Err when either schema
/// is too deep or too complex to compare within the walk's budget (see `diff`).
pub fn differences(
    original: &ParsedJson,
    update: &ParsedJson,
) -> Result<Vec<Difference>, TooComplex> {
    differences_within(original, update, &Budget::default())
}

/// [`differences`], spending from a request's `budget` too.
pub fn differences_within(
    original: &ParsedJson,
    update: &ParsedJson,
    budget: &Budget,
) -> Result<Vec<Difference>, TooComplex> {
    let hasher = RandomState::new();
    let ((o, no), (u, nu)) = (original.root(&hasher)?, update.root(&hasher)?);
    // Building the nodes is work too, done again for every version compared: a step per NODES_PER_STEP nodes.
    budget.charge((no + nu) / NODES_PER_STEP)?;
    let mut ctx = JCtx::within(is_compatible_kind, budget.clone());
    compare(&mut ctx, Some(&o), Some(&u));
    ctx.finish()
}

/// A JSON schema's walk nodes, built once for a request that compares it with several schemas (every version a
/// transitive level names, both directions for FULL), with the hasher every schema of the request is
/// fingerprinted with; the nodes are charged to the request's budget once.
pub struct Prepared<'a> {
    schema: &'a ParsedJson,
    hasher: RandomState,
    root: std::cell::OnceCell<Node>,
}

impl<'a> Prepared<'a> {
    pub fn new(schema: &'a ParsedJson) -> Prepared<'a> {
        Prepared {
            schema,
            hasher: RandomState::new(),
            root: std::cell::OnceCell::new(),
        }
    }

    fn root(&self, budget: &Budget) -> Result<&Node, TooComplex> {
        if let Some(node) = self.root.get() {
            return Ok(node);
        }
        let (node, built) = self.schema.root(&self.hasher)?;
        budget.charge(built / NODES_PER_STEP)?;
        Ok(self.root.get_or_init(|| node))
    }

    /// The incompatible differences from `other` to this schema (`self_is_update`, a BACKWARD check of this
    /// new schema against `other`) or from this schema to `other`; `other` is built for this comparison.
    pub fn incompatibilities_with(
        &self,
        other: &ParsedJson,
        self_is_update: bool,
        budget: &Budget,
    ) -> Result<Vec<Difference>, TooComplex> {
        let mine = self.root(budget)?;
        let (theirs, built) = other.root(&self.hasher)?;
        budget.charge(built / NODES_PER_STEP)?;
        let mut ctx = JCtx::within(is_compatible_kind, budget.clone());
        if self_is_update {
            compare(&mut ctx, Some(&theirs), Some(mine));
        } else {
            compare(&mut ctx, Some(mine), Some(&theirs));
        }
        Ok(ctx
            .finish()?
            .into_iter()
            .filter(|d| !is_compatible_kind(d.kind))
            .collect())
    }
}

/// The incompatible differences from `original` to `update`.
pub fn incompatibilities(
    original: &ParsedJson,
    update: &ParsedJson,
) -> Result<Vec<Difference>, TooComplex> {
    incompatibilities_within(original, update, &Budget::default())
}

/// [`incompatibilities`], spending from a request's `budget` too.
pub fn incompatibilities_within(
    original: &ParsedJson,
    update: &ParsedJson,
    budget: &Budget,
) -> Result<Vec<Difference>, TooComplex> {
    Ok(differences_within(original, update, budget)?
        .into_iter()
        .filter(|d| !is_compatible_kind(d.kind))
        .collect())
}

fn limit(
    ctx: &mut JCtx,
    keyword: &str,
    original: Option<f64>,
    update: Option<f64>,
    kinds: [&'static str; 4],
) {
    let [added, removed, increased, decreased] = kinds;
    match (original, update) {
        (None, Some(_)) => ctx.add_at(keyword, added),
        (Some(_), None) => ctx.add_at(keyword, removed),
        (Some(o), Some(u)) if o < u => ctx.add_at(keyword, increased),
        (Some(o), Some(u)) if o > u => ctx.add_at(keyword, decreased),
        _ => {}
    }
}

fn compare(ctx: &mut JCtx, original: Option<&Node>, update: Option<&Node>) {
    let (original, update) = match (original, update) {
        (None, None) => return,
        (None, Some(_)) => return ctx.add("SCHEMA_ADDED"),
        (Some(_), None) => return ctx.add("SCHEMA_REMOVED"),
        (Some(o), Some(u)) => (o, u),
    };
    // A pair is identified by the nodes its references lead to: every `$ref` to one definition shares one
    // node, so a definition reached along many paths is compared once per walk.
    let key = (
        &*original.t() as *const Node as usize,
        &*update.t() as *const Node as usize,
    );
    ctx.pair(key, |ctx| compare_nodes(ctx, original, update));
}

fn compare_nodes(ctx: &mut JCtx, original: &Node, update: &Node) {
    match (&original.t().kind, &update.t().kind) {
        (
            o,
            Kind::Combined {
                criterion,
                subschemas,
            },
        ) if !matches!(o, Kind::Combined { .. }) => {
            if subschemas.len() == 1 {
                let mut sub = ctx.sub();
                compare(&mut sub, Some(original), subschemas.first());
                if sub.compatible() {
                    ctx.found.extend(sub.found);
                    return;
                }
            } else if *criterion != Criterion::All {
                for s in subschemas {
                    if ctx.exhausted() {
                        return;
                    }
                    let mut sub = ctx.sub();
                    compare(&mut sub, Some(original), Some(s));
                    if sub.compatible() {
                        ctx.found.extend(sub.found);
                        ctx.add("SUM_TYPE_EXTENDED");
                        return;
                    }
                }
            }
        }
        (Kind::Combined { subschemas, .. }, u)
            if !matches!(u, Kind::Combined { .. }) && subschemas.len() == 1 =>
        {
            let mut sub = ctx.sub();
            compare(&mut sub, subschemas.first(), Some(update));
            if sub.compatible() {
                ctx.found.extend(sub.found);
                return;
            }
        }
        _ => {}
    }
    // A schema that is a product (allOf, or a type with an enum) on one side only: the plain side is a
    // product of one (removing the enum from `{"type":"string","enum":[...]}` narrows the product).
    match (&original.t().kind, &update.t().kind) {
        (
            Kind::Combined {
                criterion: Criterion::All,
                subschemas,
            },
            u,
        ) if !matches!(u, Kind::Combined { .. } | Kind::Empty) => {
            let single = std::slice::from_ref(update);
            return compare_combined(ctx, Criterion::All, subschemas, Criterion::All, single);
        }
        (
            o,
            Kind::Combined {
                criterion: Criterion::All,
                subschemas,
            },
        ) if !matches!(o, Kind::Combined { .. } | Kind::False) => {
            let single = std::slice::from_ref(original);
            return compare_combined(ctx, Criterion::All, single, Criterion::All, subschemas);
        }
        _ => {}
    }
    if original.t().kind.class() != update.t().kind.class() {
        if matches!(original.t().kind, Kind::False) || matches!(update.t().kind, Kind::Empty) {
            return;
        }
        return ctx.add("TYPE_CHANGED");
    }
    if original.id != update.id {
        ctx.add("ID_CHANGED");
    }
    if original.title != update.title {
        ctx.add("TITLE_CHANGED");
    }
    if original.description != update.description {
        ctx.add("DESCRIPTION_CHANGED");
    }
    if original.default != update.default {
        ctx.add("DEFAULT_CHANGED");
    }
    match (&original.t().kind, &update.t().kind) {
        (
            Kind::String {
                min_length: omin,
                max_length: omax,
                pattern: op,
            },
            Kind::String {
                min_length: umin,
                max_length: umax,
                pattern: up,
            },
        ) => {
            limit(
                ctx,
                "maxLength",
                *omax,
                *umax,
                [
                    "MAX_LENGTH_ADDED",
                    "MAX_LENGTH_REMOVED",
                    "MAX_LENGTH_INCREASED",
                    "MAX_LENGTH_DECREASED",
                ],
            );
            limit(
                ctx,
                "minLength",
                *omin,
                *umin,
                [
                    "MIN_LENGTH_ADDED",
                    "MIN_LENGTH_REMOVED",
                    "MIN_LENGTH_INCREASED",
                    "MIN_LENGTH_DECREASED",
                ],
            );
            match (op, up) {
                (None, Some(_)) => ctx.add_at("pattern", "PATTERN_ADDED"),
                (Some(_), None) => ctx.add_at("pattern", "PATTERN_REMOVED"),
                (Some(a), Some(b)) if a != b => ctx.add_at("pattern", "PATTERN_CHANGED"),
                _ => {}
            }
        }
        (
            Kind::Number {
                integer: oi,
                minimum: omin,
                maximum: omax,
                exclusive_minimum: oemin,
                exclusive_maximum: oemax,
                multiple_of: om,
            },
            Kind::Number {
                integer: ui,
                minimum: umin,
                maximum: umax,
                exclusive_minimum: uemin,
                exclusive_maximum: uemax,
                multiple_of: um,
            },
        ) => {
            limit(
                ctx,
                "maximum",
                *omax,
                *umax,
                [
                    "MAXIMUM_ADDED",
                    "MAXIMUM_REMOVED",
                    "MAXIMUM_INCREASED",
                    "MAXIMUM_DECREASED",
                ],
            );
            limit(
                ctx,
                "minimum",
                *omin,
                *umin,
                [
                    "MINIMUM_ADDED",
                    "MINIMUM_REMOVED",
                    "MINIMUM_INCREASED",
                    "MINIMUM_DECREASED",
                ],
            );
            limit(
                ctx,
                "exclusiveMaximum",
                *oemax,
                *uemax,
                [
                    "EXCLUSIVE_MAXIMUM_ADDED",
                    "EXCLUSIVE_MAXIMUM_REMOVED",
                    "EXCLUSIVE_MAXIMUM_INCREASED",
                    "EXCLUSIVE_MAXIMUM_DECREASED",
                ],
            );
            limit(
                ctx,
                "exclusiveMinimum",
                *oemin,
                *uemin,
                [
                    "EXCLUSIVE_MINIMUM_ADDED",
                    "EXCLUSIVE_MINIMUM_REMOVED",
                    "EXCLUSIVE_MINIMUM_INCREASED",
                    "EXCLUSIVE_MINIMUM_DECREASED",
                ],
            );
            match (om, um) {
                (None, Some(_)) => ctx.add_at("multipleOf", "MULTIPLE_OF_ADDED"),
                (Some(_), None) => ctx.add_at("multipleOf", "MULTIPLE_OF_REMOVED"),
                (Some(o), Some(u)) if o != u => {
                    let divides = |a: f64, b: f64| b != 0.0 && (a / b).fract() == 0.0;
                    let kind = if divides(*u, *o) {
                        "MULTIPLE_OF_EXPANDED"
                    } else if divides(*o, *u) {
                        "MULTIPLE_OF_REDUCED"
                    } else {
                        "MULTIPLE_OF_CHANGED"
                    };
                    ctx.add_at("multipleOf", kind);
                }
                _ => {}
            }
            if oi != ui {
                ctx.add(if *oi {
                    "TYPE_EXTENDED"
                } else {
                    "TYPE_NARROWED"
                });
            }
        }
        (Kind::Enum(o), Kind::Enum(u)) => {
            // The values cost the budget too (an enum can be long): a step per 16, a hash-set insert being
            // far cheaper than a pair visit.
            if !ctx.charge((o.len() + u.len()) / ENUM_VALUES_PER_STEP) {
                return;
            }
            // By their text in a hash set: an enum can be long, and a pairwise check is quadratic.
            let texts =
                |vs: &[Value]| -> HashSet<String> { vs.iter().map(Value::to_string).collect() };
            let (ot, ut) = (texts(o), texts(u));
            let contains_all =
                |a: &HashSet<String>, b: &HashSet<String>| b.iter().all(|x| a.contains(x));
            let same = contains_all(&ot, &ut) && contains_all(&ut, &ot);
            if !same {
                let kind = if contains_all(&ut, &ot) {
                    "ENUM_ARRAY_EXTENDED"
                } else if contains_all(&ot, &ut) {
                    "ENUM_ARRAY_NARROWED"
                } else {
                    "ENUM_ARRAY_CHANGED"
                };
                ctx.add_at("enum", kind);
            }
        }
        (Kind::Const(o), Kind::Const(u)) if o != u => ctx.add_at("const", "ENUM_ARRAY_CHANGED"),
        (Kind::Not(o), Kind::Not(u)) if o.source != u.source => {
            // `not X` accepts more when X shrinks: compare the negated schemas the other way round.
            let mut sub = ctx.sub();
            sub.path.push("not".into());
            compare(&mut sub, Some(u), Some(o));
            ctx.add_at(
                "not",
                if sub.compatible() {
                    "NOT_TYPE_NARROWED"
                } else {
                    "NOT_TYPE_EXTENDED"
                },
            );
        }
        (
            Kind::Combined {
                criterion: oc,
                subschemas: os,
            },
            Kind::Combined {
                criterion: uc,
                subschemas: us,
            },
        ) => compare_combined(ctx, *oc, os, *uc, us),
        (Kind::Object(o), Kind::Object(u)) => compare_objects(ctx, o, u),
        (Kind::Array(o), Kind::Array(u)) => compare_arrays(ctx, o, u),
        _ => {}
    }
}

fn dedup(nodes: &[Node]) -> Vec<&Node> {
    let mut seen = HashSet::new();
    nodes.iter().filter(|n| seen.insert(&n.source)).collect()
}

fn compare_combined(ctx: &mut JCtx, oc: Criterion, os: &[Node], uc: Criterion, us: &[Node]) {
    // allOf/oneOf to anyOf, a singleton to oneOf, and a singleton to a singleton allOf widen; the rest change.
    let widened = uc == Criterion::Any
        || (uc == Criterion::One && os.len() == 1)
        || (uc == Criterion::All && os.len() == 1 && us.len() == 1);
    let changed = if oc == uc {
        None
    } else if widened {
        Some("COMBINED_TYPE_EXTENDED")
    } else {
        Some("COMBINED_TYPE_CHANGED")
    };
    if let Some(kind) = changed {
        ctx.add(kind);
        if kind == "COMBINED_TYPE_CHANGED" {
            return;
        }
    }
    let (os, us) = (dedup(os), dedup(us));
    if os.len() < us.len() {
        ctx.add(if uc == Criterion::All {
            "PRODUCT_TYPE_EXTENDED"
        } else {
            "SUM_TYPE_EXTENDED"
        });
    } else if os.len() > us.len() {
        ctx.add(if uc == Criterion::All {
            "PRODUCT_TYPE_NARROWED"
        } else {
            "SUM_TYPE_NARROWED"
        });
    }
    // Which (original, update) pairs are compatible, with the differences each pair has.
    let mut edges: Vec<Vec<Option<Vec<Difference>>>> = Vec::new();
    for (i, o) in os.iter().enumerate() {
        let mut row = Vec::new();
        for u in &us {
            if ctx.exhausted() {
                return;
            }
            let mut sub = ctx.sub();
            sub.path.push(format!("{}/{i}", oc.keyword()));
            compare(&mut sub, Some(o), Some(u));
            row.push(sub.compatible().then_some(sub.found));
        }
        edges.push(row);
    }
    // A maximum matching of the bipartite graph (augmenting paths; the sets are small).
    let mut matched_to: Vec<Option<usize>> = vec![None; us.len()];
    fn augment(
        i: usize,
        edges: &[Vec<Option<Vec<Difference>>>],
        seen: &mut [bool],
        matched_to: &mut [Option<usize>],
    ) -> bool {
        for j in 0..matched_to.len() {
            if edges[i][j].is_some() && !seen[j] {
                seen[j] = true;
                if matched_to[j].is_none_or(|k| augment(k, edges, seen, matched_to)) {
                    matched_to[j] = Some(i);
                    return true;
                }
            }
        }
        false
    }
    let mut matching = 0;
    for i in 0..os.len() {
        let mut seen = vec![false; us.len()];
        if augment(i, &edges, &mut seen, &mut matched_to) {
            matching += 1;
        }
    }
    for (j, i) in matched_to.iter().enumerate() {
        if let Some(i) = i {
            if let Some(diffs) = &edges[*i][j] {
                ctx.found.extend(diffs.iter().cloned());
            }
        }
    }
    if matching < os.len().min(us.len()) {
        ctx.add("COMBINED_TYPE_SUBSCHEMAS_CHANGED");
    }
}

fn has_default(n: &Node) -> bool {
    n.default.is_some()
}

fn compare_objects(ctx: &mut JCtx, o: &ObjectNode, u: &ObjectNode) {
    // required
    ctx.scoped("required", |ctx| {
        for (name, _) in &o.properties {
            let Some(us) = u.property(name) else {
                continue;
            };
            let (or, ur) = (o.required.contains(name), u.required.contains(name));
            if or && !ur {
                ctx.add_at(name, "REQUIRED_ATTRIBUTE_REMOVED");
            } else if !or && ur {
                ctx.add_at(
                    name,
                    if has_default(us) {
                        "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED"
                    } else {
                        "REQUIRED_ATTRIBUTE_ADDED"
                    },
                );
            }
        }
    });
    // properties
    ctx.scoped("properties", |ctx| {
        let mut names: Vec<&String> = o.properties.iter().map(|(n, _)| n).collect();
        names.extend(
            u.properties
                .iter()
                .map(|(n, _)| n)
                .filter(|n| o.property(n).is_none()),
        );
        // Each property name costs a step of the budget (a one-sided property is no pair).
        if !ctx.charge(names.len()) {
            return;
        }
        for name in names {
            if ctx.exhausted() {
                break;
            }
            ctx.scoped(name, |ctx| match (o.property(name), u.property(name)) {
                (Some(os), None) => {
                    if u.is_open() {
                        ctx.add("PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL");
                    } else if let Some(partial) = ctx
                        .charge(u.pattern_properties.len())
                        .then(|| u.partial_schema(name))
                        .flatten()
                    {
                        let mut sub = ctx.sub();
                        compare(&mut sub, Some(os), Some(partial));
                        let ok = sub.compatible();
                        ctx.found.extend(sub.found);
                        ctx.add(if ok {
                            "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                        } else {
                            "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                        });
                    } else if matches!(os.t().kind, Kind::False) {
                        ctx.add("PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL");
                    } else {
                        ctx.add("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL");
                    }
                }
                (None, Some(us)) => {
                    if o.is_open() {
                        ctx.add(if matches!(us.t().kind, Kind::Empty) {
                            "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL"
                        } else {
                            "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"
                        });
                    } else {
                        let partial = ctx
                            .charge(o.pattern_properties.len())
                            .then(|| o.partial_schema(name))
                            .flatten();
                        if let Some(partial) = partial {
                            let mut sub = ctx.sub();
                            compare(&mut sub, Some(partial), Some(us));
                            let ok = sub.compatible();
                            ctx.found.extend(sub.found);
                            ctx.add(if ok {
                                "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                            } else {
                                "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                            });
                        }
                        ctx.add(if !u.required.contains(name) {
                            "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"
                        } else if has_default(us) {
                            "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL"
                        } else {
                            "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"
                        });
                    }
                }
                (os, us) => compare(ctx, os, us),
            });
        }
    });
    // dependencies
    ctx.scoped("dependencies", |ctx| {
        let mut keys: Vec<&String> = o.dependency_arrays.keys().collect();
        keys.extend(
            u.dependency_arrays
                .keys()
                .filter(|k| !o.dependency_arrays.contains_key(*k)),
        );
        for key in keys {
            let od = o.dependency_arrays.get(key);
            let ud = u.dependency_arrays.get(key);
            let kind = match (od, ud) {
                (_, None) => Some("DEPENDENCY_ARRAY_REMOVED"),
                (None, _) => Some("DEPENDENCY_ARRAY_ADDED"),
                (Some(a), Some(b)) if a == b => None,
                (Some(a), Some(b)) if b.is_superset(a) => Some("DEPENDENCY_ARRAY_EXTENDED"),
                (Some(a), Some(b)) if a.is_superset(b) => Some("DEPENDENCY_ARRAY_NARROWED"),
                _ => Some("DEPENDENCY_ARRAY_CHANGED"),
            };
            if let Some(kind) = kind {
                ctx.add_at(key, kind);
            }
        }
        let mut keys: Vec<&String> = o.dependency_schemas.keys().collect();
        keys.extend(
            u.dependency_schemas
                .keys()
                .filter(|k| !o.dependency_schemas.contains_key(*k)),
        );
        for key in keys {
            let od = o.dependency_schemas.get(key);
            let ud = u.dependency_schemas.get(key);
            ctx.scoped(key, |ctx| match (od, ud) {
                (_, None) => ctx.add("DEPENDENCY_SCHEMA_REMOVED"),
                (None, _) => ctx.add("DEPENDENCY_SCHEMA_ADDED"),
                (Some(a), Some(b)) => compare(ctx, Some(a), Some(b)),
            });
        }
    });
    // additionalProperties
    ctx.scoped("additionalProperties", |ctx| {
        if o.additional.permits() != u.additional.permits() {
            ctx.add(if u.additional.permits() {
                "ADDITIONAL_PROPERTIES_ADDED"
            } else {
                "ADDITIONAL_PROPERTIES_REMOVED"
            });
        } else {
            match (o.additional.schema(), u.additional.schema()) {
                (None, Some(_)) => ctx.add("ADDITIONAL_PROPERTIES_NARROWED"),
                (Some(_), None) => ctx.add("ADDITIONAL_PROPERTIES_EXTENDED"),
                (a, b) => compare(ctx, a, b),
            }
        }
    });
    limit(
        ctx,
        "maxProperties",
        o.max_properties,
        u.max_properties,
        [
            "MAX_PROPERTIES_ADDED",
            "MAX_PROPERTIES_REMOVED",
            "MAX_PROPERTIES_INCREASED",
            "MAX_PROPERTIES_DECREASED",
        ],
    );
    limit(
        ctx,
        "minProperties",
        o.min_properties,
        u.min_properties,
        [
            "MIN_PROPERTIES_ADDED",
            "MIN_PROPERTIES_REMOVED",
            "MIN_PROPERTIES_INCREASED",
            "MIN_PROPERTIES_DECREASED",
        ],
    );
}

fn compare_arrays(ctx: &mut JCtx, o: &ArrayNode, u: &ArrayNode) {
    ctx.scoped("items", |ctx| {
        compare(ctx, o.all_items.as_deref(), u.all_items.as_deref())
    });
    let common = o.item_list.len().min(u.item_list.len());
    for i in 0..common {
        ctx.scoped(&format!("items/{i}"), |ctx| {
            compare(ctx, o.item_list.get(i), u.item_list.get(i))
        });
    }
    for (i, os) in o.item_list.iter().enumerate().skip(common) {
        ctx.scoped(&format!("items/{i}"), |ctx| {
            if u.is_open() {
                ctx.add("ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL");
            } else if let Some(partial) = u.additional.schema() {
                let mut sub = ctx.sub();
                compare(&mut sub, Some(os), Some(partial));
                let ok = sub.compatible();
                ctx.found.extend(sub.found);
                ctx.add(if ok {
                    "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                } else {
                    "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                });
            } else if matches!(os.t().kind, Kind::False) {
                ctx.add("ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL");
            } else {
                ctx.add("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL");
            }
        });
    }
    for (i, us) in u.item_list.iter().enumerate().skip(common) {
        ctx.scoped(&format!("items/{i}"), |ctx| {
            if o.is_open() {
                ctx.add(if matches!(us.t().kind, Kind::Empty) {
                    "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL"
                } else {
                    "ITEM_ADDED_TO_OPEN_CONTENT_MODEL"
                });
            } else if let Some(partial) = o.additional.schema() {
                let mut sub = ctx.sub();
                compare(&mut sub, Some(partial), Some(us));
                let ok = sub.compatible();
                ctx.found.extend(sub.found);
                ctx.add(if ok {
                    "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                } else {
                    "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                });
            } else {
                ctx.add("ITEM_ADDED_TO_CLOSED_CONTENT_MODEL");
            }
        });
    }
    ctx.scoped("additionalItems", |ctx| {
        if o.additional.permits() != u.additional.permits() {
            ctx.add(if o.additional.permits() {
                "ADDITIONAL_ITEMS_REMOVED"
            } else {
                "ADDITIONAL_ITEMS_ADDED"
            });
        } else {
            match (o.additional.schema(), u.additional.schema()) {
                (None, Some(_)) => ctx.add("ADDITIONAL_ITEMS_NARROWED"),
                (Some(_), None) => ctx.add("ADDITIONAL_ITEMS_EXTENDED"),
                (a, b) => compare(ctx, a, b),
            }
        }
    });
    limit(
        ctx,
        "maxItems",
        o.max_items,
        u.max_items,
        [
            "MAX_ITEMS_ADDED",
            "MAX_ITEMS_REMOVED",
            "MAX_ITEMS_INCREASED",
            "MAX_ITEMS_DECREASED",
        ],
    );
    limit(
        ctx,
        "minItems",
        o.min_items,
        u.min_items,
        [
            "MIN_ITEMS_ADDED",
            "MIN_ITEMS_REMOVED",
            "MIN_ITEMS_INCREASED",
            "MIN_ITEMS_DECREASED",
        ],
    );
    if o.unique != u.unique {
        ctx.add_at(
            "uniqueItems",
            if o.unique {
                "UNIQUE_ITEMS_REMOVED"
            } else {
                "UNIQUE_ITEMS_ADDED"
            },
        );
    }
}
