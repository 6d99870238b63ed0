//! Avro schemas: parsing (with references), the identity form, and the reader/writer compatibility check.
//!
//! The check follows the Avro specification's schema resolution rules as Apache Avro's Java
//! `SchemaCompatibility` applies them, because that is what Confluent's registry runs: names compare
//! unqualified (or through the reader's aliases), logical types compare as their underlying types, a reader
//! enum with a default accepts unknown symbols, every branch of a writer union must be readable. Unlike
//! `apache_avro::schema_compatibility`, which stops at the first problem and calls a partially readable union or
//! enum "partially compatible", this walk collects every incompatibility with its path, as
//! `?verbose=true` reports them, and treats partial as incompatible (as Confluent does).

use std::collections::{HashMap, HashSet};

use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, UuidSchema};
use apache_avro::Schema;

use crate::diff::{Budget, TooComplex, Visit, Walk};

/// A parsed Avro schema with the named types of its references.
pub struct ParsedAvro {
    pub schema: Schema,
    /// The schemas named by references (and theirs), parsed in the same name space.
    pub referenced: Vec<Schema>,
    /// What makes two registrations "the same schema": the schema as Avro writes it back out (whitespace,
    /// attribute order and redundant namespaces normalized; defaults, docs, aliases and custom attributes
    /// kept, as they matter to readers). Parsing Canonical Form is *not* used for identity because it drops
    /// defaults and aliases: two schemas that differ only in a default would share an id.
    pub canonical: String,
}

/// Reads the one datum `body` holds with `reader`; the datum must take the whole body, no more and no less.
///
/// apache-avro reads a value cut short by the end of its input as null instead of failing: a string, bytes or
/// a boolean, and a union whose branch index is missing (as its branch 0, null in an optional field). So a
/// record cut short decodes "successfully", with null fields or a null value. Neither checking what is left
/// nor validating the value against the schema catches all of these (the last is a valid null of an optional
/// field); the input itself does: a complete datum never asks for a byte past its end, a datum cut short
/// always does. The console tools, SQL and Connect decode Confluent's wire format bodies through this.
pub fn read_datum(
    reader: &apache_avro::reader::datum::GenericDatumReader<'_>,
    body: &[u8],
) -> Result<apache_avro::types::Value, String> {
    let mut input = WholeInput {
        rest: body,
        ran_out: false,
    };
    let v = reader.read_value(&mut input);
    if input.ran_out {
        return Err(format!(
            "the Avro body ends early ({} bytes, a value is cut short): the record is damaged or was not written with this schema",
            body.len()
        ));
    }
    let v = v.map_err(|e| format!("the Avro body does not decode with its schema: {e}"))?;
    if !input.rest.is_empty() {
        return Err(format!(
            "{} bytes are left after the Avro datum (not written with this schema?)",
            input.rest.len()
        ));
    }
    Ok(v)
}

/// A datum's bytes that remember whether the decoder asked for more than there is.
struct WholeInput<'a> {
    rest: &'a [u8],
    ran_out: bool,
}

impl std::io::Read for WholeInput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            self.ran_out = true;
        }
        let n = buf.len().min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

/// Parses `text`, resolving named types from `referenced` (the texts of the referenced schemas, dependencies
/// first). The error is a message for `42201 Invalid schema`.
pub fn parse(text: &str, referenced: &[String]) -> Result<ParsedAvro, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{text}: not valid JSON: {e}"))?;
    let (schema, referenced) = if referenced.is_empty() {
        (
            Schema::parse(&json).map_err(|e| format!("{text}: {e}"))?,
            Vec::new(),
        )
    } else {
        parse_with_references(text, referenced).map_err(|e| format!("{text}: {e}"))?
    };
    let canonical = serde_json::to_string(&schema).map_err(|e| format!("{text}: {e}"))?;
    Ok(ParsedAvro {
        schema,
        referenced,
        canonical,
    })
}

/// The stack apache-avro resolves references on. Its resolution recurses through the chain of named types
/// across the referenced texts (about 1.3 KB of stack per JSON level in a debug build; 400 one-record texts
/// overflow a 2 MiB thread). The registry bounds that chain (references nest at most 64 deep, each text at most
/// 128 JSON levels: about 8,300 levels), and this stack holds it with room to spare; it is reserved, and only
/// touched as deep as a parse goes.
const REFERENCE_PARSE_STACK: usize = 64 * 1024 * 1024;

/// `Schema::parse_str_with_list` on a thread of its own with [`REFERENCE_PARSE_STACK`], so that a long chain
/// of references cannot overflow the stack of the thread serving the request (which may be the broker's).
fn parse_with_references(
    text: &str,
    referenced: &[String],
) -> Result<(Schema, Vec<Schema>), String> {
    on_reference_stack(|| Schema::parse_str_with_list(text, referenced).map_err(|e| e.to_string()))
}

/// Runs `f` (a walk along a chain of references) on a thread with [`REFERENCE_PARSE_STACK`].
pub(crate) fn on_reference_stack<T: Send>(
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("avro-references".into())
            .stack_size(REFERENCE_PARSE_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("cannot start a thread to walk the references: {e}"))?
            .join()
            .map_err(|_| "the references cannot be walked".to_string())?
    })
}

impl ParsedAvro {
    /// Every named type of this schema and its references, by full name.
    fn names(&self) -> HashMap<String, &Schema> {
        let mut names = HashMap::new();
        for s in self.referenced.iter().chain(std::iter::once(&self.schema)) {
            collect_names(s, &mut names);
        }
        names
    }

    /// The schema with each named type it takes from its references written out where it is first used, and
    /// named afterwards (Confluent's `format=resolved`: what Avro's Java `Schema.toString()` gives for the
    /// parsed schema), as compact JSON: a schema that parses without its references.
    pub fn resolved(&self) -> Result<String, String> {
        // Every named type the references define, nested ones too (apache-avro only looks among these).
        let mut names = HashMap::new();
        for s in &self.referenced {
            collect_names(s, &mut names);
        }
        let definitions: Vec<Schema> = names.into_values().cloned().collect();
        let mut schema = self.schema.clone();
        on_reference_stack(move || {
            schema
                .denormalize(&definitions)
                .map_err(|e| format!("the references do not resolve: {e}"))?;
            serde_json::to_string(&schema).map_err(|e| e.to_string())
        })
    }

    /// Avro's Parsing Canonical Form (for fingerprints and display; not for identity, see `canonical`).
    pub fn parsing_canonical_form(&self) -> String {
        self.schema.canonical_form()
    }
}

fn collect_names<'a>(s: &'a Schema, names: &mut HashMap<String, &'a Schema>) {
    match s {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), s);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), s);
        }
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            names.insert(f.name.fullname(None), s);
        }
        Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Fixed(f),
            ..
        }) => {
            names.insert(f.name.fullname(None), s);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, names);
            }
        }
        _ => {}
    }
}

/// The kinds of incompatibility, with Avro's (and Confluent's) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncompatibilityType {
    NameMismatch,
    FixedSizeMismatch,
    MissingEnumSymbols,
    ReaderFieldMissingDefaultValue,
    TypeMismatch,
    MissingUnionBranch,
}

impl IncompatibilityType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NameMismatch => "NAME_MISMATCH",
            Self::FixedSizeMismatch => "FIXED_SIZE_MISMATCH",
            Self::MissingEnumSymbols => "MISSING_ENUM_SYMBOLS",
            Self::ReaderFieldMissingDefaultValue => "READER_FIELD_MISSING_DEFAULT_VALUE",
            Self::TypeMismatch => "TYPE_MISMATCH",
            Self::MissingUnionBranch => "MISSING_UNION_BRANCH",
        }
    }
}

/// One reason why a reader cannot read what a writer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatibility {
    pub kind: IncompatibilityType,
    /// JSON-pointer-like path in the reader schema, e.g. `/fields/1/type`.
    pub location: String,
    /// Avro's detail: the field name, the missing symbols, "expected: X", ...
    pub detail: String,
}

impl Incompatibility {
    /// Confluent's rendering, where the new schema is the reader (`reader_is_new`, BACKWARD) or the writer.
    pub fn render(&self, reader_is_new: bool) -> String {
        let (r, w) = if reader_is_new {
            ("new", "old")
        } else {
            ("old", "new")
        };
        let loc = &self.location;
        let description = match self.kind {
            IncompatibilityType::NameMismatch => {
                format!("The name of the schema has changed (path '{loc}')")
            }
            IncompatibilityType::FixedSizeMismatch => format!(
                "The size of FIXED type field at path '{loc}' in the {r} schema does not match with the {w} schema"
            ),
            IncompatibilityType::MissingEnumSymbols => format!(
                "The {r} schema is missing enum symbols '{}' at path '{loc}' in the {w} schema",
                self.detail
            ),
            IncompatibilityType::ReaderFieldMissingDefaultValue => format!(
                "The field '{}' at path '{loc}' in the {r} schema has no default value and is missing in the {w} schema",
                self.detail
            ),
            IncompatibilityType::TypeMismatch => format!(
                "The type (path '{loc}') of a field in the {r} schema does not match with the {w} schema"
            ),
            IncompatibilityType::MissingUnionBranch => format!(
                "The {r} schema is missing a type inside a union field at path '{loc}' in the {w} schema"
            ),
        };
        format!(
            "{{errorType:'{}', description:'{description}', additionalInfo:'{}'}}",
            self.kind.as_str(),
            self.detail
        )
    }
}

/// Every incompatibility found when `reader` reads data written with `writer` (empty: compatible); Err
/// when the schemas are too deep or too complex to compare within the walk's budget (see `diff`).
pub fn check(reader: &ParsedAvro, writer: &ParsedAvro) -> Result<Vec<Incompatibility>, TooComplex> {
    check_within(reader, writer, &Budget::default())
}

/// [`check`], spending from a request's `budget` too.
pub fn check_within(
    reader: &ParsedAvro,
    writer: &ParsedAvro,
    budget: &Budget,
) -> Result<Vec<Incompatibility>, TooComplex> {
    let mut c = Checker {
        reader_names: reader.names(),
        writer_names: writer.names(),
        walk: Walk::within(budget.clone()),
        found: Vec::new(),
    };
    let mut path = Vec::new();
    c.check(&reader.schema, &writer.schema, &mut path);
    c.walk.result()?;
    Ok(c.found)
}

struct Checker<'a> {
    reader_names: HashMap<String, &'a Schema>,
    writer_names: HashMap<String, &'a Schema>,
    /// Every (reader, writer) pair checked, for the whole check: a pair met again adds its first
    /// incompatibility without a second walk, and a recursive type meeting itself while still being checked
    /// is taken as compatible (its other parts are checked where the recursion started), as Avro's Java
    /// checker does.
    walk: Walk<(usize, usize), Option<(IncompatibilityType, String)>>,
    found: Vec<Incompatibility>,
}

/// The underlying Avro type of a (possibly logical) schema, which is all that schema resolution looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array,
    Map,
    Union,
    Record,
    Enum,
    Fixed,
}

fn kind(s: &Schema) -> Kind {
    match s {
        Schema::Null => Kind::Null,
        Schema::Boolean => Kind::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Kind::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Kind::Long,
        Schema::Float => Kind::Float,
        Schema::Double => Kind::Double,
        Schema::Bytes
        | Schema::BigDecimal
        | Schema::Uuid(UuidSchema::Bytes)
        | Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Bytes,
            ..
        }) => Kind::Bytes,
        Schema::String | Schema::Uuid(UuidSchema::String) => Kind::String,
        Schema::Array(_) => Kind::Array,
        Schema::Map(_) => Kind::Map,
        Schema::Union(_) => Kind::Union,
        Schema::Record(_) => Kind::Record,
        Schema::Enum(_) => Kind::Enum,
        Schema::Fixed(_)
        | Schema::Duration(_)
        | Schema::Uuid(UuidSchema::Fixed(_))
        | Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Fixed(_),
            ..
        }) => Kind::Fixed,
        // Unresolved references are resolved before `kind` is asked; one that names nothing cannot match.
        Schema::Ref { .. } => Kind::Null,
    }
}

fn fixed_of(s: &Schema) -> Option<&apache_avro::schema::FixedSchema> {
    match s {
        Schema::Fixed(f)
        | Schema::Duration(f)
        | Schema::Uuid(UuidSchema::Fixed(f))
        | Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Fixed(f),
            ..
        }) => Some(f),
        _ => None,
    }
}

fn type_name(s: &Schema) -> String {
    match s.name() {
        Some(n) => n.fullname(None),
        None => format!("{:?}", kind(s)).to_uppercase(),
    }
}

fn join(path: &[String]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", path.join("/"))
    }
}

impl<'a> Checker<'a> {
    fn resolve(names: &HashMap<String, &'a Schema>, s: &'a Schema) -> &'a Schema {
        match s {
            Schema::Ref { name } => names.get(&name.fullname(None)).copied().unwrap_or(s),
            _ => s,
        }
    }

    fn add(&mut self, kind: IncompatibilityType, path: &[String], detail: String) {
        self.found.push(Incompatibility {
            kind,
            location: join(path),
            detail,
        });
    }

    /// Whether the reader can read the writer, without recording anything (for union branch matching).
    fn compatible(&mut self, reader: &'a Schema, writer: &'a Schema) -> bool {
        let saved = std::mem::take(&mut self.found);
        let mut path = Vec::new();
        self.check(reader, writer, &mut path);
        let ok = self.found.is_empty();
        self.found = saved;
        ok
    }

    fn check(&mut self, reader: &'a Schema, writer: &'a Schema, path: &mut Vec<String>) {
        let reader = Self::resolve(&self.reader_names, reader);
        let writer = Self::resolve(&self.writer_names, writer);
        let key = (
            reader as *const Schema as usize,
            writer as *const Schema as usize,
        );
        match self.walk.enter(&key) {
            Visit::Skip | Visit::Known(None) => {}
            Visit::Known(Some((kind, detail))) => self.add(kind, path, detail),
            Visit::Walk => {
                let start = self.found.len();
                self.check_resolved(reader, writer, path);
                let first = self.found[start..]
                    .first()
                    .map(|i| (i.kind, i.detail.clone()));
                let compatible = first.is_none();
                self.walk.leave(key, first, compatible);
            }
        }
    }

    fn check_names(&mut self, reader: &Schema, writer: &Schema, path: &mut Vec<String>) {
        let (Some(r), Some(w)) = (reader.name(), writer.name()) else {
            return;
        };
        if r.name() == w.name() {
            return;
        }
        let w_full = w.fullname(None);
        let aliases = match reader {
            Schema::Record(rs) => rs.aliases.as_ref(),
            Schema::Enum(es) => es.aliases.as_ref(),
            _ => fixed_of(reader).and_then(|f| f.aliases.as_ref()),
        };
        let namespace = r.namespace();
        if aliases.is_some_and(|a| a.iter().any(|al| al.fullname(namespace) == w_full)) {
            return;
        }
        path.push("name".into());
        self.add(
            IncompatibilityType::NameMismatch,
            path,
            format!("expected: {w_full}"),
        );
        path.pop();
    }

    fn check_resolved(&mut self, reader: &'a Schema, writer: &'a Schema, path: &mut Vec<String>) {
        let (rk, wk) = (kind(reader), kind(writer));
        if rk == wk {
            match (reader, writer) {
                (Schema::Array(r), Schema::Array(w)) => {
                    path.push("items".into());
                    self.check(&r.items, &w.items, path);
                    path.pop();
                }
                (Schema::Map(r), Schema::Map(w)) => {
                    path.push("values".into());
                    self.check(&r.types, &w.types, path);
                    path.pop();
                }
                (Schema::Enum(r), Schema::Enum(w)) => {
                    self.check_names(reader, writer, path);
                    let symbols: HashSet<&String> = r.symbols.iter().collect();
                    let missing: Vec<&String> =
                        w.symbols.iter().filter(|s| !symbols.contains(s)).collect();
                    let default_ok = r.default.as_ref().is_some_and(|d| r.symbols.contains(d));
                    if !missing.is_empty() && !default_ok {
                        let mut sorted = missing.clone();
                        sorted.sort();
                        let list = sorted
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ");
                        path.push("symbols".into());
                        self.add(
                            IncompatibilityType::MissingEnumSymbols,
                            path,
                            format!("[{list}]"),
                        );
                        path.pop();
                    }
                }
                (Schema::Record(r), Schema::Record(w)) => {
                    self.check_names(reader, writer, path);
                    // By name only (apache-avro's `lookup` also holds the writer's aliases, which resolution
                    // does not use).
                    let by_name: HashMap<&String, &apache_avro::schema::RecordField> =
                        w.fields.iter().map(|f| (&f.name, f)).collect();
                    path.push("fields".into());
                    for (i, rf) in r.fields.iter().enumerate() {
                        path.push(i.to_string());
                        let wf = std::iter::once(&rf.name)
                            .chain(rf.aliases.iter())
                            .find_map(|n| by_name.get(n).copied());
                        match wf {
                            Some(wf) => {
                                path.push("type".into());
                                self.check(&rf.schema, &wf.schema, path);
                                path.pop();
                            }
                            None if rf.default.is_some() => {}
                            None => self.add(
                                IncompatibilityType::ReaderFieldMissingDefaultValue,
                                path,
                                rf.name.clone(),
                            ),
                        }
                        path.pop();
                    }
                    path.pop();
                }
                (Schema::Union(_), Schema::Union(w)) => {
                    for (i, wb) in w.variants().iter().enumerate() {
                        if self.walk.exhausted() {
                            break;
                        }
                        path.push(i.to_string());
                        self.check(reader, wb, path);
                        path.pop();
                    }
                }
                _ if rk == Kind::Fixed => {
                    self.check_names(reader, writer, path);
                    let (r, w) = (fixed_of(reader), fixed_of(writer));
                    if let (Some(r), Some(w)) = (r, w) {
                        if r.size != w.size {
                            path.push("size".into());
                            self.add(
                                IncompatibilityType::FixedSizeMismatch,
                                path,
                                format!("expected: {}, found: {}", w.size, r.size),
                            );
                            path.pop();
                        }
                    }
                }
                // Primitives of the same type (logical types included).
                _ => {}
            }
            return;
        }
        if let Schema::Union(w) = writer {
            for (i, wb) in w.variants().iter().enumerate() {
                if self.walk.exhausted() {
                    break;
                }
                path.push(i.to_string());
                self.check(reader, wb, path);
                path.pop();
            }
            return;
        }
        let promotable = matches!(
            (rk, wk),
            (Kind::Long, Kind::Int)
                | (Kind::Float, Kind::Int | Kind::Long)
                | (Kind::Double, Kind::Int | Kind::Long | Kind::Float)
                | (Kind::Bytes, Kind::String)
                | (Kind::String, Kind::Bytes)
        );
        if promotable {
            return;
        }
        if let Schema::Union(r) = reader {
            if r.variants()
                .iter()
                .any(|rb| self.walk.exhausted() || self.compatible(rb, writer))
            {
                return;
            }
            self.add(
                IncompatibilityType::MissingUnionBranch,
                path,
                format!("reader union lacking writer type: {}", type_name(writer)),
            );
            return;
        }
        self.add(
            IncompatibilityType::TypeMismatch,
            path,
            format!(
                "reader type: {} not compatible with writer type: {}",
                type_name(reader),
                type_name(writer)
            ),
        );
    }
}

#[cfg(test)]
mod datum_tests {
    use super::*;

    /// A body cut anywhere is an error, also where apache-avro alone reads it as a record with a null: inside
    /// a string (null string), and right before an optional field's branch index (a valid null, which
    /// validating the value against the schema accepts).
    #[test]
    fn a_datum_cut_short_anywhere_is_an_error_not_a_null() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"a","type":"string"},{"name":"b","type":["null","string"]}]}"#,
        )
        .unwrap();
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap();
        // a = "ab", b = branch 1, "c".
        let body = [0x04, b'a', b'b', 0x02, 0x02, b'c'];
        let v = read_datum(&reader, &body).unwrap();
        assert!(v.validate(&schema), "{v:?}");
        for cut in 0..body.len() {
            let e = read_datum(&reader, &body[..cut]).unwrap_err();
            assert!(e.contains("ends early"), "cut at {cut}: {e}");
        }
        // apache-avro on its own: the body without b reads as b = null, which fits the schema.
        let mut rest = &body[..3];
        let alone = reader.read_value(&mut rest).unwrap();
        assert!(rest.is_empty() && alone.validate(&schema), "{alone:?}");
        let e = read_datum(&reader, &[0x04, b'a', b'b', 0x00, 0x00]).unwrap_err();
        assert!(e.contains("1 bytes are left"), "{e}");
    }
}
