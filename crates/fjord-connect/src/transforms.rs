//! Single message transforms (SMTs) and predicates, configured with Kafka Connect's property names:
//! `transforms=a,b`, `transforms.a.type=org.apache.kafka.connect.transforms.InsertField$Value` (or the simple
//! name `InsertField$Value`), each transform's own keys under `transforms.a.`, `predicates=p`,
//! `predicates.p.type=...TopicNameMatches|HasHeaderKey|RecordIsTombstone`, `transforms.a.predicate=p` and
//! `transforms.a.negate=true`.
//!
//! As in Connect, a source task's records pass the chain before its converters turn them into bytes, and a sink
//! task's records after its converters turned the bytes into Connect data. Data is Connect's with an optional
//! schema: a schema is kept in the form JsonConverter writes it (`{"type": "struct", "fields": [{"field": ...,
//! "type": ...}], "optional": ...}`), a value as JSON (bytes as base64 text, as JsonConverter writes them).
//! Schemaless data (JSON maps, a JsonConverter without schemas) takes the transforms' `Map` path, data with a
//! schema their `Struct` path, with Connect's errors for anything else.
//!
//! Built in: InsertField, ReplaceField, MaskField, Cast, ValueToKey, ExtractField (each `$Key`/`$Value` where
//! Connect has both), TimestampRouter, RegexRouter, Filter.

use serde_json::{json, Map, Value};

use crate::config::ConfigMap;
use crate::converter::{base64_decode, Converter, Data};

const PKG: &str = "org.apache.kafka.connect.transforms.";
const PREDICATES_PKG: &str = "org.apache.kafka.connect.transforms.predicates.";

/// Connect data with its schema (None: schemaless).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchemaAndValue {
    pub schema: Option<Value>,
    pub value: Value,
}

impl SchemaAndValue {
    pub fn null() -> SchemaAndValue {
        SchemaAndValue::default()
    }

    /// A string with Connect's string schema (a FileStreamSource line).
    pub fn string(s: String) -> SchemaAndValue {
        SchemaAndValue {
            schema: Some(json!({"type": "string", "optional": false})),
            value: Value::String(s),
        }
    }

    /// Decodes a record's key or value bytes with `converter`; a JsonConverter with schemas keeps the schema.
    pub fn decode(converter: &Converter, bytes: Option<&[u8]>) -> Result<SchemaAndValue, String> {
        if let Converter::Registry(r) = converter {
            return r.decode(bytes);
        }
        let data = converter.to_connect(bytes)?;
        let envelope_schema = || -> Option<Value> {
            let v: Value = serde_json::from_slice(bytes?).ok()?;
            v.get("schema").filter(|s| !s.is_null()).cloned()
        };
        Ok(match data {
            Data::Null => SchemaAndValue {
                schema: match converter {
                    Converter::Json {
                        schemas_enable: true,
                    } => envelope_schema(),
                    _ => None,
                },
                value: Value::Null,
            },
            Data::String(s) => SchemaAndValue::string(s),
            Data::Bytes(b) => SchemaAndValue {
                schema: Some(json!({"type": "bytes", "optional": false})),
                value: Value::String(crate::converter::base64_encode(&b)),
            },
            Data::Json(v) => SchemaAndValue {
                schema: match converter {
                    Converter::Json {
                        schemas_enable: true,
                    } => envelope_schema(),
                    _ => None,
                },
                value: v,
            },
        })
    }

    /// The converter's data for this value (bytes decoded from base64 when the schema says bytes).
    pub fn to_data(&self) -> Data {
        match (&self.value, schema_type(self.schema.as_ref())) {
            (Value::Null, _) => Data::Null,
            (Value::String(s), Some("string")) => Data::String(s.clone()),
            (Value::String(s), Some("bytes")) => match base64_decode(s) {
                Some(b) => Data::Bytes(b),
                None => Data::String(s.clone()),
            },
            (v, _) => Data::Json(v.clone()),
        }
    }

    /// Encodes this value of a record of `topic` with `converter` (None: a null key or value). A JsonConverter
    /// with schemas writes the schema in the envelope, as Connect's does; a registry converter the id of the
    /// schema `Converter::prepare_encode` registered.
    pub fn encode(&self, converter: &Converter, topic: &str) -> Result<Option<Vec<u8>>, String> {
        if self.value.is_null() {
            return Ok(None);
        }
        match converter {
            Converter::Registry(r) => r.encode(topic, self),
            Converter::Json {
                schemas_enable: true,
            } => {
                let schema = self.schema.clone().unwrap_or(Value::Null);
                Ok(Some(
                    format!("{{\"schema\":{schema},\"payload\":{}}}", self.value).into_bytes(),
                ))
            }
            c => c.from_connect(&self.to_data()),
        }
    }
}

/// A record as the transforms see it: Connect's `ConnectRecord` (a SourceRecord has no offset).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub topic: String,
    pub partition: Option<i32>,
    /// The Kafka offset of a sink record; None for a source record.
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
    pub key: SchemaAndValue,
    pub value: SchemaAndValue,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A record's key and value as bytes (None: null).
pub type Encoded = (Option<Vec<u8>>, Option<Vec<u8>>);

impl Record {
    /// A source record's key and value bytes through the converters (None: null), as a producer sends them.
    pub fn encode(&self, key: &Converter, value: &Converter) -> Result<Encoded, String> {
        Ok((
            self.key
                .encode(key, &self.topic)
                .map_err(|e| format!("key.converter failed: {e}"))?,
            self.value
                .encode(value, &self.topic)
                .map_err(|e| format!("value.converter failed: {e}"))?,
        ))
    }

    /// Registers the schemas a registry converter needs for [`encode`](Self::encode) (no-op for the others).
    /// Err: the registry cannot be asked or refuses the schema (a task failure that says what to do).
    pub async fn prepare_encode(&self, key: &Converter, value: &Converter) -> Result<(), String> {
        key.prepare_encode(&self.topic, &self.key).await?;
        value.prepare_encode(&self.topic, &self.value).await
    }
}

/// Which part of the record a transform works on (`$Key` or `$Value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Key,
    Value,
}

/// A primitive type of Cast's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    String,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s.trim() {
            "int8" => Ty::Int8,
            "int16" => Ty::Int16,
            "int32" => Ty::Int32,
            "int64" => Ty::Int64,
            "float32" => Ty::Float32,
            "float64" => Ty::Float64,
            "boolean" => Ty::Boolean,
            "string" => Ty::String,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Int8 => "int8",
            Ty::Int16 => "int16",
            Ty::Int32 => "int32",
            Ty::Int64 => "int64",
            Ty::Float32 => "float32",
            Ty::Float64 => "float64",
            Ty::Boolean => "boolean",
            Ty::String => "string",
        }
    }
}

/// An InsertField field: its name and whether it is optional (`name?`, the default) or required (`name!`).
#[derive(Debug, Clone, PartialEq)]
struct InsertSpec {
    name: String,
    optional: bool,
}

impl InsertSpec {
    fn parse(s: &str) -> Option<InsertSpec> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(if let Some(n) = s.strip_suffix('!') {
            InsertSpec {
                name: n.into(),
                optional: false,
            }
        } else {
            InsertSpec {
                name: s.strip_suffix('?').unwrap_or(s).into(),
                optional: true,
            }
        })
    }
}

/// One piece of a TimestampRouter `timestamp.format` (Java's SimpleDateFormat letters, in UTC).
#[derive(Debug, Clone, PartialEq)]
enum DatePart {
    Literal(String),
    /// A pattern letter and its repeat count.
    Field(char, usize),
}

#[derive(Debug, Clone)]
enum Kind {
    InsertField {
        topic: Option<InsertSpec>,
        partition: Option<InsertSpec>,
        offset: Option<InsertSpec>,
        timestamp: Option<InsertSpec>,
        static_field: Option<(InsertSpec, Option<String>)>,
    },
    ReplaceField {
        exclude: Vec<String>,
        include: Vec<String>,
        renames: Vec<(String, String)>,
    },
    MaskField {
        fields: Vec<String>,
        replacement: Option<String>,
    },
    Cast {
        whole: Option<Ty>,
        fields: Vec<(String, Ty)>,
    },
    ValueToKey {
        fields: Vec<String>,
    },
    ExtractField {
        field: String,
    },
    TimestampRouter {
        topic_format: String,
        timestamp_format: Vec<DatePart>,
    },
    RegexRouter {
        regex: regex::Regex,
        replacement: String,
    },
    Filter,
}

#[derive(Debug, Clone)]
enum Predicate {
    TopicNameMatches(regex::Regex),
    HasHeaderKey(String),
    RecordIsTombstone,
}

impl Predicate {
    fn test(&self, r: &Record) -> bool {
        match self {
            Predicate::TopicNameMatches(re) => re.is_match(&r.topic),
            Predicate::HasHeaderKey(name) => r.headers.iter().any(|(k, _)| k == name),
            Predicate::RecordIsTombstone => r.value.value.is_null(),
        }
    }
}

#[derive(Debug, Clone)]
struct Transform {
    alias: String,
    class: String,
    part: Part,
    kind: Kind,
    /// Index into the chain's predicates; the transform applies only where it holds (or, negated, fails).
    predicate: Option<usize>,
    negate: bool,
}

/// A connector's configured transforms and predicates, applied in order.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    transforms: Vec<Transform>,
    predicates: Vec<Predicate>,
}

/// A configuration key of a transform or predicate, for `config/validate`: its definition and what was given.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub ty: &'static str,
    pub required: bool,
    pub default: Option<&'static str>,
    pub doc: &'static str,
    pub group: String,
    pub value: Option<String>,
    pub errors: Vec<String>,
}

/// The transform classes: (simple name, has `$Key`/`$Value` variants).
const TRANSFORMS: &[(&str, bool)] = &[
    ("InsertField", true),
    ("ReplaceField", true),
    ("MaskField", true),
    ("Cast", true),
    ("ValueToKey", false),
    ("ExtractField", true),
    ("TimestampRouter", false),
    ("RegexRouter", false),
    ("Filter", false),
];

const PREDICATES: &[&str] = &["TopicNameMatches", "HasHeaderKey", "RecordIsTombstone"];

/// The keys of a transform class (name, type, required, default, documentation).
fn transform_keys(
    simple: &str,
) -> &'static [(
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
    &'static str,
)] {
    match simple {
        "InsertField" => &[
            ("topic.field", "STRING", false, None, "Field name for the record topic; suffix with ! to make it a required field, or ? to keep it optional (the default)."),
            ("partition.field", "STRING", false, None, "Field name for the record partition; suffix with ! or ?."),
            ("offset.field", "STRING", false, None, "Field name for the record offset (sink connectors only); suffix with ! or ?."),
            ("timestamp.field", "STRING", false, None, "Field name for the record timestamp; suffix with ! or ?."),
            ("static.field", "STRING", false, None, "Field name for the static data field; suffix with ! or ?."),
            ("static.value", "STRING", false, None, "Static field value, if a field name is configured."),
        ],
        "ReplaceField" => &[
            ("exclude", "LIST", false, Some(""), "Fields to exclude. This takes precedence over the fields to include (old name: blacklist)."),
            ("include", "LIST", false, Some(""), "Fields to include. If specified, only these fields will be used (old name: whitelist)."),
            ("renames", "LIST", false, Some(""), "Field rename mappings, as comma-separated old:new pairs."),
            ("blacklist", "LIST", false, None, "Deprecated. Use exclude instead."),
            ("whitelist", "LIST", false, None, "Deprecated. Use include instead."),
        ],
        "MaskField" => &[
            ("fields", "LIST", true, None, "Names of fields to mask."),
            ("replacement", "STRING", false, None, "Custom value replacement, applied to all 'fields' values (numeric or non-empty string values only)."),
        ],
        "Cast" => &[("spec", "LIST", true, None, "List of fields and the type to cast them to of the form field1:type,field2:type to cast fields of Maps or Structs, or a single type to cast the entire value. Valid types are int8, int16, int32, int64, float32, float64, boolean, and string.")],
        "ValueToKey" => &[("fields", "LIST", true, None, "Field names on the record value to extract as the record key.")],
        "ExtractField" => &[("field", "STRING", true, None, "Field name to extract.")],
        "TimestampRouter" => &[
            ("topic.format", "STRING", false, Some("${topic}-${timestamp}"), "Format string which can contain ${topic} and ${timestamp} as placeholders for the topic and timestamp, respectively."),
            ("timestamp.format", "STRING", false, Some("yyyyMMdd"), "Format string for the timestamp that is compatible with java.text.SimpleDateFormat (letters y M d H m s S, quoted literals); UTC."),
        ],
        "RegexRouter" => &[
            ("regex", "STRING", true, None, "Regular expression to use for matching (the whole topic name)."),
            ("replacement", "STRING", true, None, "Replacement string ($1 for the first group)."),
        ],
        _ => &[],
    }
}

fn predicate_keys(
    simple: &str,
) -> &'static [(
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
    &'static str,
)] {
    match simple {
        "TopicNameMatches" => &[(
            "pattern",
            "STRING",
            true,
            None,
            "A Java regular expression for matching against the name of a record's topic.",
        )],
        "HasHeaderKey" => &[("name", "STRING", true, None, "The header name.")],
        _ => &[],
    }
}

fn list(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// The transform class a `transforms.<alias>.type` names: (simple name, part), or None.
fn find_transform(class: &str) -> Option<(&'static str, Part)> {
    let class = class.trim();
    let simple = class.strip_prefix(PKG).unwrap_or(class);
    let (name, part) = match simple.split_once('$') {
        Some((n, "Key")) => (n, Some(Part::Key)),
        Some((n, "Value")) => (n, Some(Part::Value)),
        Some(_) => return None,
        None => (simple, None),
    };
    let &(known, has_parts) = TRANSFORMS.iter().find(|(n, _)| *n == name)?;
    match (has_parts, part) {
        (true, Some(p)) => Some((known, p)),
        (false, None) => Some((known, Part::Value)),
        _ => None,
    }
}

fn find_predicate(class: &str) -> Option<&'static str> {
    let class = class.trim();
    let simple = class.strip_prefix(PREDICATES_PKG).unwrap_or(class);
    PREDICATES.iter().copied().find(|p| *p == simple)
}

fn invalid(key: &str, value: &str, why: &str) -> String {
    format!("Invalid value {value} for configuration {key}: {why}")
}

fn missing(key: &str) -> String {
    format!("Missing required configuration \"{key}\" which has no default value.")
}

/// Java's `$n` group references become Rust's `${n}` (Java takes as many digits as still name a group), a
/// backslash escapes the next character, `${name}` stays.
fn java_replacement(replacement: &str, groups: usize) -> String {
    let mut out = String::new();
    let chars: Vec<char> = replacement.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                if chars[i + 1] == '$' {
                    out.push_str("$$");
                } else {
                    out.push(chars[i + 1]);
                }
                i += 2;
            }
            '$' if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) => {
                let mut n = chars[i + 1].to_digit(10).unwrap_or(0) as usize;
                i += 2;
                while let Some(d) = chars.get(i).and_then(|c| c.to_digit(10)) {
                    let next = n * 10 + d as usize;
                    if next >= groups {
                        break;
                    }
                    n = next;
                    i += 1;
                }
                out.push_str(&format!("${{{n}}}"));
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn parse_date_format(f: &str) -> Result<Vec<DatePart>, String> {
    let mut parts = Vec::new();
    let chars: Vec<char> = f.chars().collect();
    let mut i = 0;
    let mut literal = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                literal.push('\'');
                i += 2;
                continue;
            }
            let Some(end) = chars[i + 1..].iter().position(|&c| c == '\'') else {
                return Err("an unterminated quote".into());
            };
            literal.extend(&chars[i + 1..i + 1 + end]);
            i += end + 2;
        } else if c.is_ascii_alphabetic() {
            if !"yMdHmsS".contains(c) {
                return Err(format!(
                    "the pattern letter '{c}' is not supported (supported: y, M, d, H, m, s, S and quoted text)"
                ));
            }
            let mut n = 1;
            while chars.get(i + n) == Some(&c) {
                n += 1;
            }
            if c == 'M' && n > 2 {
                return Err("month names (MMM) are not supported; use MM".into());
            }
            if !literal.is_empty() {
                parts.push(DatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(DatePart::Field(c, n));
            i += n;
        } else {
            literal.push(c);
            i += 1;
        }
    }
    if !literal.is_empty() {
        parts.push(DatePart::Literal(literal));
    }
    Ok(parts)
}

fn format_timestamp(parts: &[DatePart], millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    let (y, mo, d) = crate::protobuf_data::civil_from_days(days);
    let mut out = String::new();
    for p in parts {
        match p {
            DatePart::Literal(l) => out.push_str(l),
            DatePart::Field(c, n) => {
                let v: i64 = match c {
                    'y' if *n == 2 => y.rem_euclid(100),
                    'y' => y,
                    'M' => i64::from(mo),
                    'd' => i64::from(d),
                    'H' => ms_of_day / 3_600_000,
                    'm' => ms_of_day / 60_000 % 60,
                    's' => ms_of_day / 1000 % 60,
                    _ => ms_of_day % 1000,
                };
                out.push_str(&format!("{v:0width$}", width = *n));
            }
        }
    }
    out
}

impl Chain {
    /// The chain a connector config describes; Err with every error, each naming its key.
    pub fn from_config(config: &ConfigMap) -> Result<Chain, Vec<String>> {
        let (chain, entries) = parse(config);
        let errors: Vec<String> = entries.into_iter().flat_map(|e| e.errors).collect();
        match chain {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(errors),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// Applies every transform in order: Ok(None) when one drops the record (Filter), Err with what went
    /// wrong (naming the transform) when one cannot apply.
    pub fn apply(&self, mut record: Record) -> Result<Option<Record>, String> {
        for t in &self.transforms {
            if let Some(p) = t.predicate {
                if self.predicates[p].test(&record) == t.negate {
                    continue;
                }
            }
            match t.apply(record) {
                Ok(Some(r)) => record = r,
                Ok(None) => return Ok(None),
                Err(e) => return Err(format!("transform {} ({}) failed: {e}", t.alias, t.class)),
            }
        }
        Ok(Some(record))
    }
}

/// Parses the transforms and predicates of `config`: the chain (None when anything is invalid) and the
/// validate entries of every key involved, with their errors.
pub fn parse(config: &ConfigMap) -> (Option<Chain>, Vec<Entry>) {
    let mut entries = Vec::new();
    let mut ok = true;
    let mut chain = Chain::default();
    // Predicates first: transforms refer to them.
    let predicate_aliases = list(config.get("predicates"));
    let mut predicate_index = std::collections::BTreeMap::new();
    entries.push(Entry {
        name: "predicates".into(),
        ty: "LIST",
        required: false,
        default: Some(""),
        doc: "Aliases for the predicates used by transformations.",
        group: "Predicates".into(),
        value: config.get("predicates").cloned(),
        errors: Vec::new(),
    });
    for alias in &predicate_aliases {
        let group = format!("Predicates: {alias}");
        let type_key = format!("predicates.{alias}.type");
        let class = config.get(&type_key).map(|s| s.trim().to_string());
        let mut type_entry = Entry {
            name: type_key.clone(),
            ty: "CLASS",
            required: true,
            default: None,
            doc: "Class for the predicate: TopicNameMatches, HasHeaderKey or RecordIsTombstone (org.apache.kafka.connect.transforms.predicates.*).",
            group: group.clone(),
            value: class.clone(),
            errors: Vec::new(),
        };
        let simple = match &class {
            None => {
                type_entry.errors.push(missing(&type_key));
                None
            }
            Some(c) => {
                let found = find_predicate(c);
                if found.is_none() {
                    type_entry.errors.push(invalid(
                        &type_key,
                        c,
                        &format!(
                            "Class {c} could not be found; the built-in predicates are {}",
                            PREDICATES
                                .iter()
                                .map(|p| format!("{PREDICATES_PKG}{p}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                found
            }
        };
        ok &= type_entry.errors.is_empty();
        entries.push(type_entry);
        let Some(simple) = simple else { continue };
        let mut keys = Vec::new();
        for &(key, ty, required, default, doc) in predicate_keys(simple) {
            let full = format!("predicates.{alias}.{key}");
            let value = config.get(&full).cloned();
            let mut errors = Vec::new();
            if required && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                errors.push(missing(&full));
            }
            keys.push((key, value.clone()));
            entries.push(Entry {
                name: full,
                ty,
                required,
                default,
                doc,
                group: group.clone(),
                value,
                errors,
            });
        }
        let get = |k: &str| {
            keys.iter()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let predicate = match simple {
            "TopicNameMatches" => {
                let pattern = get("pattern");
                match regex::Regex::new(&format!("^(?:{})$", pattern.trim())) {
                    Ok(re) if !pattern.trim().is_empty() => Some(Predicate::TopicNameMatches(re)),
                    Ok(_) => None,
                    Err(e) => {
                        let key = format!("predicates.{alias}.pattern");
                        if let Some(en) = entries.iter_mut().find(|en| en.name == key) {
                            en.errors.push(invalid(
                                &key,
                                &pattern,
                                &format!("not a regular expression: {e}"),
                            ));
                        }
                        None
                    }
                }
            }
            "HasHeaderKey" => {
                let name = get("name");
                (!name.trim().is_empty()).then(|| Predicate::HasHeaderKey(name.trim().into()))
            }
            _ => Some(Predicate::RecordIsTombstone),
        };
        match predicate {
            Some(p) => {
                predicate_index.insert(alias.clone(), chain.predicates.len());
                chain.predicates.push(p);
            }
            None => ok = false,
        }
    }

    entries.push(Entry {
        name: "transforms".into(),
        ty: "LIST",
        required: false,
        default: Some(""),
        doc: "Aliases for the transformations to be applied to records.",
        group: "Transforms".into(),
        value: config.get("transforms").cloned(),
        errors: Vec::new(),
    });
    for alias in list(config.get("transforms")) {
        let group = format!("Transforms: {alias}");
        let type_key = format!("transforms.{alias}.type");
        let class = config.get(&type_key).map(|s| s.trim().to_string());
        let mut type_entry = Entry {
            name: type_key.clone(),
            ty: "CLASS",
            required: true,
            default: None,
            doc: "Class for the transformation, e.g. org.apache.kafka.connect.transforms.InsertField$Value.",
            group: group.clone(),
            value: class.clone(),
            errors: Vec::new(),
        };
        let found = match &class {
            None => {
                type_entry.errors.push(missing(&type_key));
                None
            }
            Some(c) => {
                let f = find_transform(c);
                if f.is_none() {
                    let known: Vec<String> = TRANSFORMS
                        .iter()
                        .map(|(n, parts)| {
                            if *parts {
                                format!("{n}$Key, {n}$Value")
                            } else {
                                n.to_string()
                            }
                        })
                        .collect();
                    type_entry.errors.push(invalid(
                        &type_key,
                        c,
                        &format!(
                            "Class {c} could not be found; the built-in transformations are {PKG}{{{}}}",
                            known.join(", ")
                        ),
                    ));
                }
                f
            }
        };
        ok &= type_entry.errors.is_empty();
        entries.push(type_entry);

        // The predicate and negate keys every transform has.
        let pred_key = format!("transforms.{alias}.predicate");
        let negate_key = format!("transforms.{alias}.negate");
        let pred_value = config.get(&pred_key).map(|s| s.trim().to_string());
        let mut pred_errors = Vec::new();
        let predicate = match pred_value.as_deref() {
            None | Some("") => None,
            Some(p) => match predicate_index.get(p) {
                Some(i) => Some(*i),
                None => {
                    if !predicate_aliases.iter().any(|a| a == p) {
                        pred_errors.push(invalid(
                            &pred_key,
                            p,
                            &format!("the predicate {p} is not defined: add it to predicates and give predicates.{p}.type"),
                        ));
                    }
                    ok = false;
                    None
                }
            },
        };
        entries.push(Entry {
            name: pred_key,
            ty: "STRING",
            required: false,
            default: Some(""),
            doc: "The alias of a predicate used to determine whether to apply this transformation.",
            group: group.clone(),
            value: pred_value.clone(),
            errors: pred_errors,
        });
        let negate_value = config.get(&negate_key).map(|s| s.trim().to_string());
        let mut negate_errors = Vec::new();
        let negate = match negate_value
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                negate_errors.push(invalid(
                    &negate_key,
                    other,
                    "Expected value to be either true or false",
                ));
                false
            }
        };
        ok &= negate_errors.is_empty();
        entries.push(Entry {
            name: negate_key,
            ty: "BOOLEAN",
            required: false,
            default: Some("false"),
            doc: "Whether the configured predicate should be negated.",
            group: group.clone(),
            value: negate_value,
            errors: negate_errors,
        });

        let Some((simple, part)) = found else {
            continue;
        };
        let start = entries.len();
        for &(key, ty, required, default, doc) in transform_keys(simple) {
            let full = format!("transforms.{alias}.{key}");
            let value = config.get(&full).cloned();
            let mut errors = Vec::new();
            if required && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                errors.push(missing(&full));
            }
            entries.push(Entry {
                name: full,
                ty,
                required,
                default,
                doc,
                group: group.clone(),
                value,
                errors,
            });
        }
        let kind = build_kind(simple, &alias, config, &mut entries[start..]);
        let has_errors = entries[start..].iter().any(|e| !e.errors.is_empty());
        match kind {
            Some(kind) if !has_errors => chain.transforms.push(Transform {
                alias: alias.clone(),
                class: class.clone().unwrap_or_default(),
                part,
                kind,
                predicate,
                negate,
            }),
            _ => ok = false,
        }
    }
    (ok.then_some(chain), entries)
}

/// The transform's settings from its keys; errors go to the entry of the key at fault.
fn build_kind(
    simple: &str,
    alias: &str,
    config: &ConfigMap,
    entries: &mut [Entry],
) -> Option<Kind> {
    let key = |k: &str| format!("transforms.{alias}.{k}");
    let get = |k: &str| config.get(&key(k)).cloned();
    let mut fail = |k: &str, why: String| {
        let full = key(k);
        let value = config.get(&full).cloned().unwrap_or_default();
        if let Some(e) = entries.iter_mut().find(|e| e.name == full) {
            e.errors.push(invalid(&full, &value, &why));
        }
    };
    Some(match simple {
        "InsertField" => {
            let spec = |k: &str| get(k).as_deref().and_then(InsertSpec::parse);
            let static_field = spec("static.field").map(|s| (s, get("static.value")));
            Kind::InsertField {
                topic: spec("topic.field"),
                partition: spec("partition.field"),
                offset: spec("offset.field"),
                timestamp: spec("timestamp.field"),
                static_field,
            }
        }
        "ReplaceField" => {
            let pick = |new: &str, old: &str| {
                if config.contains_key(&key(new)) {
                    list(config.get(&key(new)))
                } else {
                    list(config.get(&key(old)))
                }
            };
            let mut renames = Vec::new();
            for r in list(config.get(&key("renames"))) {
                match r.split_once(':') {
                    Some((a, b))
                        if !a.trim().is_empty() && !b.trim().is_empty() && !b.contains(':') =>
                    {
                        renames.push((a.trim().to_string(), b.trim().to_string()))
                    }
                    _ => {
                        fail("renames", format!("Invalid rename mapping: {r} (expected old:new pairs separated by commas)"));
                        return None;
                    }
                }
            }
            Kind::ReplaceField {
                exclude: pick("exclude", "blacklist"),
                include: pick("include", "whitelist"),
                renames,
            }
        }
        "MaskField" => {
            let replacement = get("replacement");
            if replacement.as_deref() == Some("") {
                fail("replacement", "String must be non-empty".into());
                return None;
            }
            Kind::MaskField {
                fields: list(config.get(&key("fields"))),
                replacement,
            }
        }
        "Cast" => {
            let spec = list(config.get(&key("spec")));
            let mut whole = None;
            let mut fields = Vec::new();
            for s in &spec {
                match s.split_once(':') {
                    None => match Ty::parse(s) {
                        Some(t) if spec.len() == 1 => whole = Some(t),
                        Some(_) => {
                            fail("spec", "Cast transformations that specify a type to cast to for the entire value must contain only one entry".into());
                            return None;
                        }
                        None => {
                            fail("spec", format!("Invalid type found in casting spec: {s} (valid: int8, int16, int32, int64, float32, float64, boolean, string)"));
                            return None;
                        }
                    },
                    Some((f, t)) => match Ty::parse(t) {
                        Some(t) => fields.push((f.trim().to_string(), t)),
                        None => {
                            fail("spec", format!("Invalid type found in casting spec: {} (valid: int8, int16, int32, int64, float32, float64, boolean, string)", t.trim()));
                            return None;
                        }
                    },
                }
            }
            if spec.is_empty() {
                return None;
            }
            Kind::Cast { whole, fields }
        }
        "ValueToKey" => Kind::ValueToKey {
            fields: list(config.get(&key("fields"))),
        },
        "ExtractField" => Kind::ExtractField {
            field: get("field").unwrap_or_default().trim().to_string(),
        },
        "TimestampRouter" => {
            let fmt = get("timestamp.format").unwrap_or_else(|| "yyyyMMdd".into());
            match parse_date_format(&fmt) {
                Ok(parts) => Kind::TimestampRouter {
                    topic_format: get("topic.format")
                        .unwrap_or_else(|| "${topic}-${timestamp}".into()),
                    timestamp_format: parts,
                },
                Err(why) => {
                    fail("timestamp.format", why);
                    return None;
                }
            }
        }
        "RegexRouter" => {
            let pattern = get("regex")?;
            match regex::Regex::new(&format!("^(?:{})$", pattern.trim())) {
                Ok(re) => {
                    let replacement = java_replacement(&get("replacement")?, re.captures_len());
                    Kind::RegexRouter {
                        regex: re,
                        replacement,
                    }
                }
                Err(e) => {
                    fail("regex", format!("not a regular expression: {e}"));
                    return None;
                }
            }
        }
        _ => Kind::Filter,
    })
}

fn schema_type(schema: Option<&Value>) -> Option<&str> {
    schema.and_then(|s| s.get("type")).and_then(Value::as_str)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "java.lang.Boolean",
        Value::Number(n) if n.is_f64() => "java.lang.Double",
        Value::Number(_) => "java.lang.Long",
        Value::String(_) => "java.lang.String",
        Value::Array(_) => "java.util.ArrayList",
        Value::Object(_) => "java.util.HashMap",
    }
}

/// Connect's `Requirements.requireMap`.
fn require_map<'a>(v: &'a Value, purpose: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| {
        format!(
            "Only Map objects supported in absence of schema for [{purpose}], found: {}",
            type_name(v)
        )
    })
}

/// Connect's `Requirements.requireStruct`: a struct schema and an object value.
fn require_struct<'a>(
    sv: &'a SchemaAndValue,
    purpose: &str,
) -> Result<(&'a Value, &'a Map<String, Value>), String> {
    let schema = sv.schema.as_ref().expect("called with a schema");
    match (schema_type(Some(schema)), sv.value.as_object()) {
        (Some("struct"), Some(o)) => Ok((schema, o)),
        (t, _) => Err(format!(
            "Only Struct objects supported for [{purpose}], found: {}",
            t.unwrap_or("an unknown schema type")
        )),
    }
}

fn fields_of(schema: &Value) -> Vec<Value> {
    schema
        .get("fields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn field_name(f: &Value) -> &str {
    f.get("field").and_then(Value::as_str).unwrap_or("")
}

/// A struct schema like `base` (name, optional, ...) with other fields.
fn with_fields(base: &Value, fields: Vec<Value>) -> Value {
    let mut s = base.clone();
    s["fields"] = Value::Array(fields);
    s
}

fn field_schema(name: &str, ty: &str, optional: bool) -> Value {
    json!({"field": name, "type": ty, "optional": optional})
}

impl Transform {
    fn part<'a>(&self, r: &'a Record) -> &'a SchemaAndValue {
        match self.part {
            Part::Key => &r.key,
            Part::Value => &r.value,
        }
    }

    fn with(&self, mut r: Record, sv: SchemaAndValue) -> Record {
        match self.part {
            Part::Key => r.key = sv,
            Part::Value => r.value = sv,
        }
        r
    }

    fn apply(&self, r: Record) -> Result<Option<Record>, String> {
        match &self.kind {
            Kind::Filter => Ok(None),
            Kind::RegexRouter { regex, replacement } => {
                let mut r = r;
                if regex.is_match(&r.topic) {
                    r.topic = regex.replace(&r.topic, replacement.as_str()).into_owned();
                }
                Ok(Some(r))
            }
            Kind::TimestampRouter {
                topic_format,
                timestamp_format,
            } => {
                let Some(ts) = r.timestamp else {
                    return Err(format!(
                        "Timestamp missing on record of topic {}: TimestampRouter needs the record's timestamp (a source record without one gets it only from the broker)",
                        r.topic
                    ));
                };
                let mut r = r;
                r.topic = topic_format
                    .replace("${topic}", &r.topic)
                    .replace("${timestamp}", &format_timestamp(timestamp_format, ts));
                Ok(Some(r))
            }
            Kind::ValueToKey { fields } => {
                let sv = &r.value;
                let key = match &sv.schema {
                    None => {
                        let m = require_map(&sv.value, "copying fields from value to key")?;
                        let key: Map<String, Value> = fields
                            .iter()
                            .map(|f| (f.clone(), m.get(f).cloned().unwrap_or(Value::Null)))
                            .collect();
                        SchemaAndValue {
                            schema: None,
                            value: Value::Object(key),
                        }
                    }
                    Some(_) => {
                        let (schema, m) = require_struct(sv, "copying fields from value to key")?;
                        let all = fields_of(schema);
                        let mut key_fields = Vec::new();
                        let mut key = Map::new();
                        for f in fields {
                            let fs = all
                                .iter()
                                .find(|x| field_name(x) == f)
                                .ok_or_else(|| format!("Field does not exist: {f}"))?;
                            key_fields.push(fs.clone());
                            key.insert(f.clone(), m.get(f).cloned().unwrap_or(Value::Null));
                        }
                        SchemaAndValue {
                            schema: Some(
                                json!({"type": "struct", "fields": key_fields, "optional": false}),
                            ),
                            value: Value::Object(key),
                        }
                    }
                };
                let mut r = r;
                r.key = key;
                Ok(Some(r))
            }
            Kind::ExtractField { field } => {
                let sv = self.part(&r);
                let out = match &sv.schema {
                    None => {
                        if sv.value.is_null() {
                            return Ok(Some(r));
                        }
                        let m = require_map(&sv.value, "field extraction")?;
                        SchemaAndValue {
                            schema: None,
                            value: m.get(field).cloned().unwrap_or(Value::Null),
                        }
                    }
                    Some(schema) => {
                        let fs = fields_of(schema)
                            .into_iter()
                            .find(|f| field_name(f) == field);
                        if sv.value.is_null() {
                            let mut s = fs.unwrap_or(Value::Null);
                            if let Some(o) = s.as_object_mut() {
                                o.remove("field");
                            }
                            SchemaAndValue {
                                schema: (!s.is_null()).then_some(s),
                                value: Value::Null,
                            }
                        } else {
                            let (_, m) = require_struct(sv, "field extraction")?;
                            let mut fs = fs.ok_or_else(|| format!("Unknown field: {field}"))?;
                            if let Some(o) = fs.as_object_mut() {
                                o.remove("field");
                            }
                            SchemaAndValue {
                                schema: Some(fs),
                                value: m.get(field).cloned().unwrap_or(Value::Null),
                            }
                        }
                    }
                };
                Ok(Some(self.with(r, out)))
            }
            Kind::InsertField { .. }
            | Kind::ReplaceField { .. }
            | Kind::MaskField { .. }
            | Kind::Cast { .. } => {
                let sv = self.part(&r);
                if sv.value.is_null() {
                    // Connect passes null keys and values (tombstones) through these unchanged.
                    return Ok(Some(r));
                }
                let out = match &self.kind {
                    Kind::InsertField { .. } => self.insert(&r, sv)?,
                    Kind::ReplaceField {
                        exclude,
                        include,
                        renames,
                    } => replace_field(sv, exclude, include, renames)?,
                    Kind::MaskField {
                        fields,
                        replacement,
                    } => mask(sv, fields, replacement.as_deref())?,
                    Kind::Cast { whole, fields } => cast(sv, *whole, fields)?,
                    _ => unreachable!("matched above"),
                };
                Ok(Some(self.with(r, out)))
            }
        }
    }

    fn insert(&self, r: &Record, sv: &SchemaAndValue) -> Result<SchemaAndValue, String> {
        let Kind::InsertField {
            topic,
            partition,
            offset,
            timestamp,
            static_field,
        } = &self.kind
        else {
            unreachable!("only for InsertField")
        };
        const PURPOSE: &str = "field insertion";
        let offset_value = match offset {
            Some(_) => Some(r.offset.ok_or_else(|| {
                format!("Only SinkRecord supported for [{PURPOSE}] with offset.field, found: SourceRecord (a source record has no Kafka offset)")
            })?),
            None => None,
        };
        // (spec, schema type, logical name, value)
        let mut adds: Vec<(&InsertSpec, &str, Option<&str>, Value)> = Vec::new();
        if let Some(s) = topic {
            adds.push((s, "string", None, Value::String(r.topic.clone())));
        }
        if let Some(s) = partition {
            adds.push((
                s,
                "int32",
                None,
                r.partition.map_or(Value::Null, Value::from),
            ));
        }
        if let (Some(s), Some(o)) = (offset, offset_value) {
            adds.push((s, "int64", None, Value::from(o)));
        }
        if let Some(s) = timestamp {
            adds.push((
                s,
                "int64",
                Some("org.apache.kafka.connect.data.Timestamp"),
                r.timestamp.map_or(Value::Null, Value::from),
            ));
        }
        if let Some((s, v)) = static_field {
            adds.push((
                s,
                "string",
                None,
                v.clone().map_or(Value::Null, Value::String),
            ));
        }
        match &sv.schema {
            None => {
                let mut m = require_map(&sv.value, PURPOSE)?.clone();
                for (s, _, _, v) in adds {
                    m.insert(s.name.clone(), v);
                }
                Ok(SchemaAndValue {
                    schema: None,
                    value: Value::Object(m),
                })
            }
            Some(_) => {
                let (schema, m) = require_struct(sv, PURPOSE)?;
                let mut fields = fields_of(schema);
                let mut m = m.clone();
                for (s, ty, logical, v) in adds {
                    if v.is_null() && !s.optional {
                        return Err(format!(
                            "Invalid value: null used for required field: \"{}\", schema type: {}",
                            s.name,
                            ty.to_uppercase()
                        ));
                    }
                    let mut fs = field_schema(&s.name, ty, s.optional);
                    if let Some(l) = logical {
                        fs["name"] = Value::String(l.into());
                        fs["version"] = Value::from(1);
                    }
                    fields.retain(|f| field_name(f) != s.name);
                    fields.push(fs);
                    m.insert(s.name.clone(), v);
                }
                Ok(SchemaAndValue {
                    schema: Some(with_fields(schema, fields)),
                    value: Value::Object(m),
                })
            }
        }
    }
}

fn replace_field(
    sv: &SchemaAndValue,
    exclude: &[String],
    include: &[String],
    renames: &[(String, String)],
) -> Result<SchemaAndValue, String> {
    const PURPOSE: &str = "field replacement";
    let keep = |f: &str| {
        !exclude.iter().any(|e| e == f) && (include.is_empty() || include.iter().any(|i| i == f))
    };
    let renamed = |f: &str| {
        renames
            .iter()
            .find(|(a, _)| a == f)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| f.to_string())
    };
    match &sv.schema {
        None => {
            let m = require_map(&sv.value, PURPOSE)?;
            let out: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (renamed(k), v.clone()))
                .collect();
            Ok(SchemaAndValue {
                schema: None,
                value: Value::Object(out),
            })
        }
        Some(_) => {
            let (schema, m) = require_struct(sv, PURPOSE)?;
            let mut fields = Vec::new();
            let mut out = Map::new();
            for f in fields_of(schema) {
                let name = field_name(&f).to_string();
                if !keep(&name) {
                    continue;
                }
                let new = renamed(&name);
                let mut fs = f.clone();
                fs["field"] = Value::String(new.clone());
                fields.push(fs);
                out.insert(new, m.get(&name).cloned().unwrap_or(Value::Null));
            }
            Ok(SchemaAndValue {
                schema: Some(with_fields(schema, fields)),
                value: Value::Object(out),
            })
        }
    }
}

/// The masked form of `v` of schema type `ty` (None: schemaless, by the value's own type).
fn masked(v: &Value, ty: Option<&str>, replacement: Option<&str>) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let integral = match ty {
        Some("int8" | "int16" | "int32" | "int64") => Some(true),
        Some("float32" | "float64") => Some(false),
        Some(_) => None,
        None => match v {
            Value::Number(n) => Some(!n.is_f64()),
            _ => None,
        },
    };
    if let Some(integral) = integral {
        return match replacement {
            None if integral => Ok(json!(0)),
            None => Ok(json!(0.0)),
            Some(r) => {
                let parsed = if integral {
                    r.trim().parse::<i64>().ok().map(Value::from)
                } else {
                    r.trim().parse::<f64>().ok().map(Value::from)
                };
                parsed.ok_or_else(|| {
                    format!("Unable to convert {r} (String) to number for the masked field")
                })
            }
        };
    }
    let kind = ty.unwrap_or(match v {
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "map",
        _ => "unknown",
    });
    match (kind, replacement) {
        ("string", Some(r)) => Ok(Value::String(r.into())),
        ("string" | "bytes", None) => Ok(Value::String(String::new())),
        ("boolean", None) => Ok(Value::Bool(false)),
        ("array", None) => Ok(json!([])),
        ("map" | "struct", None) => Ok(json!({})),
        (k, Some(_)) => Err(format!(
            "Cannot mask value of type {k} with custom replacement"
        )),
        (k, None) => Err(format!("Cannot mask value of type {k}")),
    }
}

fn mask(
    sv: &SchemaAndValue,
    fields: &[String],
    replacement: Option<&str>,
) -> Result<SchemaAndValue, String> {
    const PURPOSE: &str = "mask fields";
    match &sv.schema {
        None => {
            let mut m = require_map(&sv.value, PURPOSE)?.clone();
            for f in fields {
                // As Connect's: a masked field missing from the map is put in as null.
                let v = m.get(f).cloned().unwrap_or(Value::Null);
                m.insert(f.clone(), masked(&v, None, replacement)?);
            }
            Ok(SchemaAndValue {
                schema: None,
                value: Value::Object(m),
            })
        }
        Some(_) => {
            let (schema, m) = require_struct(sv, PURPOSE)?;
            let mut m = m.clone();
            for fs in fields_of(schema) {
                let name = field_name(&fs);
                if fields.iter().any(|f| f == name) {
                    if let Some(v) = m.get_mut(name) {
                        *v = masked(v, fs.get("type").and_then(Value::as_str), replacement)?;
                    }
                }
            }
            Ok(SchemaAndValue {
                schema: sv.schema.clone(),
                value: Value::Object(m),
            })
        }
    }
}

/// Casts a primitive value to `to`, as Connect's Cast: numbers narrow as Java's casts do (wrapping), booleans
/// are 1/0, strings are parsed; anything to string is its text.
fn cast_value(v: &Value, to: Ty) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if matches!(v, Value::Array(_) | Value::Object(_)) && to != Ty::String {
        return Err(format!(
            "Cast transformation does not support casting to/from {} (to {})",
            if v.is_array() { "ARRAY" } else { "MAP/STRUCT" },
            to.name()
        ));
    }
    let as_f64 = || -> Result<f64, String> {
        match v {
            Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
            Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("Value {s} cannot be cast to {}", to.name())),
            _ => Err(format!("Value {v} cannot be cast to {}", to.name())),
        }
    };
    let as_i64 = || -> Result<i64, String> {
        match v {
            Value::Number(n) => Ok(n
                .as_i64()
                .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64)),
            Value::Bool(b) => Ok(i64::from(*b)),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("Value {s} cannot be cast to {}", to.name())),
            _ => Err(format!("Value {v} cannot be cast to {}", to.name())),
        }
    };
    let range = |n: i64, lo: i64, hi: i64| -> Result<i64, String> {
        // Strings out of range fail as Java's parse does; numbers wrap as Java's narrowing casts.
        if matches!(v, Value::String(_)) && !(lo..=hi).contains(&n) {
            return Err(format!("Value {n} is out of range for {}", to.name()));
        }
        Ok(n)
    };
    Ok(match to {
        Ty::Int8 => Value::from(range(as_i64()?, i8::MIN.into(), i8::MAX.into())? as i8),
        Ty::Int16 => Value::from(range(as_i64()?, i16::MIN.into(), i16::MAX.into())? as i16),
        Ty::Int32 => Value::from(range(as_i64()?, i32::MIN.into(), i32::MAX.into())? as i32),
        Ty::Int64 => Value::from(as_i64()?),
        Ty::Float32 => Value::from(f64::from(as_f64()? as f32)),
        Ty::Float64 => Value::from(as_f64()?),
        Ty::Boolean => Value::Bool(match v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
            Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
            _ => false,
        }),
        Ty::String => Value::String(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    })
}

fn cast(
    sv: &SchemaAndValue,
    whole: Option<Ty>,
    fields: &[(String, Ty)],
) -> Result<SchemaAndValue, String> {
    const PURPOSE: &str = "cast types";
    if let Some(to) = whole {
        let schema = match &sv.schema {
            None => None,
            Some(s) => {
                let t = schema_type(Some(s)).unwrap_or("");
                if matches!(t, "struct" | "map" | "array") {
                    return Err(format!(
                        "Cast transformation does not support casting to/from {} (a whole value is cast from a primitive type)",
                        t.to_uppercase()
                    ));
                }
                let optional = s.get("optional").and_then(Value::as_bool).unwrap_or(false);
                Some(json!({"type": to.name(), "optional": optional}))
            }
        };
        return Ok(SchemaAndValue {
            schema,
            value: cast_value(&sv.value, to)?,
        });
    }
    let to_of = |f: &str| fields.iter().find(|(n, _)| n == f).map(|(_, t)| *t);
    match &sv.schema {
        None => {
            let mut m = require_map(&sv.value, PURPOSE)?.clone();
            for (f, to) in fields {
                // As Connect's: a cast field missing from the map is put in as null.
                let v = m.get(f).cloned().unwrap_or(Value::Null);
                m.insert(f.clone(), cast_value(&v, *to)?);
            }
            Ok(SchemaAndValue {
                schema: None,
                value: Value::Object(m),
            })
        }
        Some(_) => {
            let (schema, m) = require_struct(sv, PURPOSE)?;
            let mut m = m.clone();
            let mut out_fields = Vec::new();
            for mut fs in fields_of(schema) {
                let name = field_name(&fs).to_string();
                if let Some(to) = to_of(&name) {
                    let from = fs.get("type").and_then(Value::as_str).unwrap_or("");
                    if matches!(from, "struct" | "map" | "array") && to != Ty::String {
                        return Err(format!(
                            "Cast transformation does not support casting to/from {} (field {name})",
                            from.to_uppercase()
                        ));
                    }
                    let optional = fs.get("optional").and_then(Value::as_bool).unwrap_or(false);
                    fs = json!({"field": name, "type": to.name(), "optional": optional});
                    if let Some(v) = m.get_mut(&name) {
                        *v = cast_value(v, to)?;
                    }
                }
                out_fields.push(fs);
            }
            Ok(SchemaAndValue {
                schema: Some(with_fields(schema, out_fields)),
                value: Value::Object(m),
            })
        }
    }
}

/// The transforms and predicates as `GET /connector-plugins?connectorsOnly=false` lists them (KIP-769).
pub fn plugin_infos(version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, parts) in TRANSFORMS {
        let classes = if *parts {
            vec![format!("{PKG}{name}$Key"), format!("{PKG}{name}$Value")]
        } else {
            vec![format!("{PKG}{name}")]
        };
        for class in classes {
            out.push(json!({"class": class, "type": "transformation", "version": version}));
        }
    }
    for p in PREDICATES {
        out.push(json!({"class": format!("{PREDICATES_PKG}{p}"), "type": "predicate", "version": version}));
    }
    out
}

/// A consumed record as Connect's sink task sees it: key and value through the converters, then the chain.
/// Ok(None): a transform dropped it; the value's converter data otherwise.
pub fn transform_sink_message<M: rdkafka::Message>(
    ctx: &crate::worker::TaskContext,
    chain: &Chain,
    m: &M,
) -> Result<Option<Data>, String> {
    Ok(sink_record(ctx, m)
        .and_then(|r| chain.apply(r))?
        .map(|r| r.value.to_data()))
}

/// A consumed record as Connect data: key and value through the task's converters, with its coordinates,
/// timestamp and headers.
pub fn sink_record<M: rdkafka::Message>(
    ctx: &crate::worker::TaskContext,
    m: &M,
) -> Result<Record, String> {
    use rdkafka::message::Headers;
    let key = SchemaAndValue::decode(&ctx.key_converter, m.key())
        .map_err(|e| format!("key.converter: {e}"))?;
    let value = SchemaAndValue::decode(&ctx.value_converter, m.payload())?;
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Record {
        topic: m.topic().to_string(),
        partition: Some(m.partition()),
        offset: Some(m.offset()),
        timestamp: m.timestamp().to_millis(),
        key,
        value,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn chain(pairs: &[(&str, &str)]) -> Chain {
        Chain::from_config(&cfg(pairs)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
        Chain::from_config(&cfg(pairs)).unwrap_err()
    }

    fn schemaless(v: Value) -> SchemaAndValue {
        SchemaAndValue {
            schema: None,
            value: v,
        }
    }

    /// A struct `{id: int64, name: string, score: float64 optional}`.
    fn person() -> SchemaAndValue {
        SchemaAndValue {
            schema: Some(
                json!({"type": "struct", "name": "person", "optional": false, "fields": [
                    {"field": "id", "type": "int64", "optional": false},
                    {"field": "name", "type": "string", "optional": false},
                    {"field": "score", "type": "float64", "optional": true},
                ]}),
            ),
            value: json!({"id": 7, "name": "ada", "score": 2.5}),
        }
    }

    fn sink_record(value: SchemaAndValue) -> Record {
        Record {
            topic: "orders".into(),
            partition: Some(3),
            offset: Some(42),
            timestamp: Some(1_700_000_000_000),
            key: SchemaAndValue::null(),
            value,
            headers: vec![("trace".into(), Some(b"x".to_vec()))],
        }
    }

    fn one(c: &Chain, r: Record) -> Record {
        c.apply(r).unwrap().expect("not dropped")
    }

    fn names(schema: &Option<Value>) -> Vec<String> {
        fields_of(schema.as_ref().unwrap())
            .iter()
            .map(|f| field_name(f).to_string())
            .collect()
    }

    #[test]
    fn insert_field_adds_metadata_to_maps_and_structs() {
        let c = chain(&[
            ("transforms", "ins"),
            (
                "transforms.ins.type",
                "org.apache.kafka.connect.transforms.InsertField$Value",
            ),
            ("transforms.ins.topic.field", "t"),
            ("transforms.ins.partition.field", "p"),
            ("transforms.ins.offset.field", "o!"),
            ("transforms.ins.timestamp.field", "ts"),
            ("transforms.ins.static.field", "origin"),
            ("transforms.ins.static.value", "fjord"),
        ]);
        let r = one(&c, sink_record(schemaless(json!({"a": 1}))));
        assert_eq!(
            r.value.value,
            json!({"a": 1, "t": "orders", "p": 3, "o": 42, "ts": 1_700_000_000_000i64, "origin": "fjord"})
        );
        assert_eq!(r.value.schema, None);
        let r = one(&c, sink_record(person()));
        assert_eq!(
            names(&r.value.schema),
            ["id", "name", "score", "t", "p", "o", "ts", "origin"]
        );
        let fields = fields_of(r.value.schema.as_ref().unwrap());
        assert_eq!(
            fields[5],
            json!({"field": "o", "type": "int64", "optional": false})
        );
        assert_eq!(fields[6]["name"], "org.apache.kafka.connect.data.Timestamp");
        assert_eq!(fields[3]["optional"], true);
        assert_eq!(r.value.value["o"], 42);
        assert_eq!(r.value.schema.as_ref().unwrap()["name"], "person");
        // Tombstones pass; a string value is neither a map nor a struct; a source record has no offset.
        let t = one(&c, sink_record(SchemaAndValue::null()));
        assert_eq!(t.value, SchemaAndValue::null());
        let e = c.apply(sink_record(schemaless(json!("text")))).unwrap_err();
        assert!(
            e.contains("Only Map objects supported") && e.contains("transform ins"),
            "{e}"
        );
        let e = c
            .apply(sink_record(SchemaAndValue::string("text".into())))
            .unwrap_err();
        assert!(e.contains("Only Struct objects supported"), "{e}");
        let mut source = sink_record(schemaless(json!({})));
        source.offset = None;
        assert!(c.apply(source).unwrap_err().contains("SinkRecord"));
    }

    #[test]
    fn insert_field_on_the_key_leaves_the_value_alone() {
        let c = chain(&[
            ("transforms", "k"),
            ("transforms.k.type", "InsertField$Key"),
            ("transforms.k.topic.field", "topic"),
        ]);
        let mut r = sink_record(schemaless(json!({"v": 1})));
        r.key = schemaless(json!({"id": 1}));
        let r = one(&c, r);
        assert_eq!(r.key.value, json!({"id": 1, "topic": "orders"}));
        assert_eq!(r.value.value, json!({"v": 1}));
    }

    #[test]
    fn replace_field_includes_excludes_and_renames_with_old_names_too() {
        let c = chain(&[
            ("transforms", "r"),
            ("transforms.r.type", "ReplaceField$Value"),
            ("transforms.r.exclude", "score"),
            ("transforms.r.renames", "name:full_name"),
        ]);
        let r = one(&c, sink_record(person()));
        assert_eq!(names(&r.value.schema), ["id", "full_name"]);
        assert_eq!(r.value.value, json!({"id": 7, "full_name": "ada"}));
        let r = one(
            &c,
            sink_record(schemaless(json!({"name": "x", "score": 1, "z": true}))),
        );
        assert_eq!(r.value.value, json!({"full_name": "x", "z": true}));
        let c = chain(&[
            ("transforms", "r"),
            (
                "transforms.r.type",
                "org.apache.kafka.connect.transforms.ReplaceField$Value",
            ),
            ("transforms.r.whitelist", "id,score"),
            ("transforms.r.blacklist", "score"),
        ]);
        let r = one(&c, sink_record(person()));
        assert_eq!(r.value.value, json!({"id": 7}));
        let e = errors(&[
            ("transforms", "r"),
            ("transforms.r.type", "ReplaceField$Value"),
            ("transforms.r.renames", "a:b,c"),
        ]);
        assert!(
            e[0].contains("configuration transforms.r.renames")
                && e[0].contains("Invalid rename mapping: c"),
            "{e:?}"
        );
    }

    #[test]
    fn mask_field_uses_the_empty_value_of_each_type_or_the_replacement() {
        let c = chain(&[
            ("transforms", "m"),
            ("transforms.m.type", "MaskField$Value"),
            ("transforms.m.fields", "id,name,score,tags,ok"),
        ]);
        let r = one(&c, sink_record(person()));
        assert_eq!(r.value.value, json!({"id": 0, "name": "", "score": 0.0}));
        assert_eq!(r.value.schema, person().schema);
        let r = one(
            &c,
            sink_record(schemaless(
                json!({"id": 5, "tags": ["a"], "ok": true, "other": 1}),
            )),
        );
        assert_eq!(
            r.value.value,
            json!({"id": 0, "tags": [], "ok": false, "other": 1, "name": null, "score": null})
        );
        let c = chain(&[
            ("transforms", "m"),
            ("transforms.m.type", "MaskField$Value"),
            ("transforms.m.fields", "name,id"),
            ("transforms.m.replacement", "9"),
        ]);
        let r = one(&c, sink_record(person()));
        assert_eq!(
            (&r.value.value["name"], &r.value.value["id"]),
            (&json!("9"), &json!(9))
        );
        let c = chain(&[
            ("transforms", "m"),
            ("transforms.m.type", "MaskField$Value"),
            ("transforms.m.fields", "id"),
            ("transforms.m.replacement", "secret"),
        ]);
        assert!(c
            .apply(sink_record(person()))
            .unwrap_err()
            .contains("Unable to convert secret"));
        let e = errors(&[
            ("transforms", "m"),
            ("transforms.m.type", "MaskField$Value"),
        ]);
        assert_eq!(e, [missing("transforms.m.fields")]);
    }

    #[test]
    fn cast_changes_types_and_schemas_of_fields_or_the_whole_value() {
        let c = chain(&[
            ("transforms", "c"),
            ("transforms.c.type", "Cast$Value"),
            ("transforms.c.spec", "id:string,score:int32,name:boolean"),
        ]);
        let r = one(&c, sink_record(person()));
        assert_eq!(r.value.value, json!({"id": "7", "name": false, "score": 2}));
        let fields = fields_of(r.value.schema.as_ref().unwrap());
        assert_eq!(
            fields[0],
            json!({"field": "id", "type": "string", "optional": false})
        );
        assert_eq!(
            fields[2],
            json!({"field": "score", "type": "int32", "optional": true})
        );
        let r = one(
            &c,
            sink_record(schemaless(
                json!({"id": 1.9, "score": "12", "name": "TRUE"}),
            )),
        );
        assert_eq!(
            r.value.value,
            json!({"id": "1.9", "score": 12, "name": true})
        );
        let c = chain(&[
            ("transforms", "c"),
            ("transforms.c.type", "Cast$Value"),
            ("transforms.c.spec", "int8"),
        ]);
        // Numbers narrow as Java's casts; strings must parse and fit.
        let r = one(&c, sink_record(schemaless(json!(300))));
        assert_eq!(r.value.value, json!(44));
        let r = one(&c, sink_record(SchemaAndValue::string("12".into())));
        assert_eq!(
            r.value,
            SchemaAndValue {
                schema: Some(json!({"type": "int8", "optional": false})),
                value: json!(12)
            }
        );
        assert!(c
            .apply(sink_record(SchemaAndValue::string("300".into())))
            .unwrap_err()
            .contains("out of range"));
        assert!(c
            .apply(sink_record(person()))
            .unwrap_err()
            .contains("does not support casting"));
        let e = errors(&[
            ("transforms", "c"),
            ("transforms.c.type", "Cast$Value"),
            ("transforms.c.spec", "a:decimal"),
        ]);
        assert!(
            e[0].contains("transforms.c.spec")
                && e[0].contains("Invalid type found in casting spec: decimal"),
            "{e:?}"
        );
        let e = errors(&[
            ("transforms", "c"),
            ("transforms.c.type", "Cast$Value"),
            ("transforms.c.spec", "int8,a:int16"),
        ]);
        assert!(e[0].contains("only one entry"), "{e:?}");
    }

    #[test]
    fn value_to_key_builds_the_key_from_value_fields() {
        let c = chain(&[
            ("transforms", "v"),
            (
                "transforms.v.type",
                "org.apache.kafka.connect.transforms.ValueToKey",
            ),
            ("transforms.v.fields", "id,name"),
        ]);
        let r = one(&c, sink_record(person()));
        assert_eq!(r.key.value, json!({"id": 7, "name": "ada"}));
        assert_eq!(names(&r.key.schema), ["id", "name"]);
        assert_eq!(r.value, person());
        let r = one(&c, sink_record(schemaless(json!({"id": 1}))));
        assert_eq!(r.key, schemaless(json!({"id": 1, "name": null})));
        let c = chain(&[
            ("transforms", "v"),
            ("transforms.v.type", "ValueToKey"),
            ("transforms.v.fields", "nope"),
        ]);
        assert!(c
            .apply(sink_record(person()))
            .unwrap_err()
            .contains("Field does not exist: nope"));
        // ValueToKey has no $Key/$Value variants.
        let e = errors(&[
            ("transforms", "v"),
            ("transforms.v.type", "ValueToKey$Value"),
            ("transforms.v.fields", "id"),
        ]);
        assert!(
            e[0].contains("transforms.v.type") && e[0].contains("could not be found"),
            "{e:?}"
        );
    }

    #[test]
    fn extract_field_replaces_the_part_with_one_field() {
        let c = chain(&[
            ("transforms", "x"),
            ("transforms.x.type", "ExtractField$Value"),
            ("transforms.x.field", "name"),
        ]);
        let r = one(&c, sink_record(person()));
        assert_eq!(r.value, SchemaAndValue::string("ada".into()));
        let r = one(&c, sink_record(schemaless(json!({"id": 1}))));
        assert_eq!(r.value, schemaless(Value::Null));
        assert_eq!(
            one(&c, sink_record(SchemaAndValue::null())).value,
            SchemaAndValue::null()
        );
        let c = chain(&[
            ("transforms", "x"),
            ("transforms.x.type", "ExtractField$Value"),
            ("transforms.x.field", "nope"),
        ]);
        assert!(c
            .apply(sink_record(person()))
            .unwrap_err()
            .contains("Unknown field: nope"));
    }

    #[test]
    fn routers_rename_the_topic() {
        let c = chain(&[
            ("transforms", "ts"),
            ("transforms.ts.type", "TimestampRouter"),
            ("transforms.ts.topic.format", "${topic}_${timestamp}"),
            (
                "transforms.ts.timestamp.format",
                "yyyy-MM-dd'T'HH:mm:ss.SSS",
            ),
        ]);
        // 1700000000123 ms is 2023-11-14T22:13:20.123Z.
        let mut r = sink_record(SchemaAndValue::null());
        r.timestamp = Some(1_700_000_000_123);
        assert_eq!(one(&c, r.clone()).topic, "orders_2023-11-14T22:13:20.123");
        let d = chain(&[
            ("transforms", "ts"),
            (
                "transforms.ts.type",
                "org.apache.kafka.connect.transforms.TimestampRouter",
            ),
        ]);
        assert_eq!(one(&d, r.clone()).topic, "orders-20231114");
        r.timestamp = None;
        assert!(c.apply(r).unwrap_err().contains("Timestamp missing"));
        let e = errors(&[
            ("transforms", "ts"),
            ("transforms.ts.type", "TimestampRouter"),
            ("transforms.ts.timestamp.format", "EEE"),
        ]);
        assert!(e[0].contains("transforms.ts.timestamp.format"), "{e:?}");

        let c = chain(&[
            ("transforms", "re"),
            (
                "transforms.re.type",
                "org.apache.kafka.connect.transforms.RegexRouter",
            ),
            ("transforms.re.regex", "(ord)(ers)"),
            ("transforms.re.replacement", "$2-$1_x\\$"),
        ]);
        assert_eq!(
            one(&c, sink_record(SchemaAndValue::null())).topic,
            "ers-ord_x$"
        );
        let mut other = sink_record(SchemaAndValue::null());
        other.topic = "orders2".into();
        assert_eq!(
            one(&c, other).topic,
            "orders2",
            "the regex must match the whole name"
        );
        let e = errors(&[
            ("transforms", "re"),
            ("transforms.re.type", "RegexRouter"),
            ("transforms.re.regex", "("),
        ]);
        assert!(
            e.iter().any(
                |l| l.contains("transforms.re.regex") && l.contains("not a regular expression")
            ),
            "{e:?}"
        );
        assert!(
            e.iter().any(|l| l == &missing("transforms.re.replacement")),
            "{e:?}"
        );
    }

    #[test]
    fn filter_with_predicates_and_negate() {
        let base = [
            ("transforms", "drop"),
            (
                "transforms.drop.type",
                "org.apache.kafka.connect.transforms.Filter",
            ),
            ("transforms.drop.predicate", "isOrders"),
            ("predicates", "isOrders,tomb,hdr"),
            (
                "predicates.isOrders.type",
                "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
            ),
            ("predicates.isOrders.pattern", "ord.*"),
            ("predicates.tomb.type", "RecordIsTombstone"),
            ("predicates.hdr.type", "HasHeaderKey"),
            ("predicates.hdr.name", "trace"),
        ];
        let c = chain(&base);
        let r = sink_record(schemaless(json!({})));
        assert_eq!(c.apply(r.clone()).unwrap(), None);
        let mut other = r.clone();
        other.topic = "xorders".into();
        assert!(c.apply(other.clone()).unwrap().is_some());
        let mut negated = base.to_vec();
        negated.push(("transforms.drop.negate", "true"));
        let c = chain(&negated);
        assert!(c.apply(r.clone()).unwrap().is_some());
        assert_eq!(c.apply(other).unwrap(), None);
        for (pred, dropped) in [("tomb", false), ("hdr", true)] {
            let mut p = base.to_vec();
            p[2] = ("transforms.drop.predicate", pred);
            assert_eq!(
                chain(&p).apply(r.clone()).unwrap().is_none(),
                dropped,
                "{pred}"
            );
        }
        let mut t = r.clone();
        t.value = SchemaAndValue::null();
        let mut p = base.to_vec();
        p[2] = ("transforms.drop.predicate", "tomb");
        assert_eq!(chain(&p).apply(t).unwrap(), None);
        // Without a predicate Filter drops everything.
        let c = chain(&[("transforms", "f"), ("transforms.f.type", "Filter")]);
        assert_eq!(c.apply(r).unwrap(), None);
    }

    #[test]
    fn transforms_apply_in_order() {
        let c = chain(&[
            ("transforms", "ins,route"),
            ("transforms.ins.type", "InsertField$Value"),
            ("transforms.ins.topic.field", "from"),
            ("transforms.route.type", "RegexRouter"),
            ("transforms.route.regex", ".*"),
            ("transforms.route.replacement", "archive"),
        ]);
        let r = one(&c, sink_record(schemaless(json!({}))));
        assert_eq!(
            (r.topic.as_str(), &r.value.value),
            ("archive", &json!({"from": "orders"}))
        );
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let e = errors(&[("transforms", "a")]);
        assert_eq!(e, [missing("transforms.a.type")]);
        let e = errors(&[
            ("transforms", "a"),
            ("transforms.a.type", "com.example.Nope"),
        ]);
        assert!(
            e[0].starts_with("Invalid value com.example.Nope for configuration transforms.a.type"),
            "{e:?}"
        );
        let e = errors(&[
            ("transforms", "a"),
            ("transforms.a.type", "Filter"),
            ("transforms.a.predicate", "p"),
        ]);
        assert!(
            e[0].contains("transforms.a.predicate") && e[0].contains("not defined"),
            "{e:?}"
        );
        let e = errors(&[
            ("transforms", "a"),
            ("transforms.a.type", "Filter"),
            ("transforms.a.negate", "maybe"),
        ]);
        assert!(e[0].contains("transforms.a.negate"), "{e:?}");
        let e = errors(&[
            ("predicates", "p"),
            ("predicates.p.type", "TopicNameMatches"),
        ]);
        assert_eq!(e, [missing("predicates.p.pattern")]);
        let e = errors(&[("predicates", "p"), ("predicates.p.type", "Nope")]);
        assert!(e[0].contains("predicates.p.type"), "{e:?}");
        assert!(Chain::from_config(&cfg(&[])).unwrap().is_empty());
    }

    #[test]
    fn json_converter_keeps_schemas_through_decode_and_encode() {
        let conv = Converter::Json {
            schemas_enable: true,
        };
        let bytes = br#"{"schema":{"type":"struct","fields":[{"field":"a","type":"int32","optional":false}],"optional":false},"payload":{"a":1}}"#;
        let sv = SchemaAndValue::decode(&conv, Some(bytes)).unwrap();
        assert_eq!(sv.value, json!({"a": 1}));
        assert_eq!(names(&sv.schema), ["a"]);
        let back: Value = serde_json::from_slice(&sv.encode(&conv, "t").unwrap().unwrap()).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(bytes).unwrap());
        let plain = SchemaAndValue::decode(
            &Converter::Json {
                schemas_enable: false,
            },
            Some(b"{\"a\":1}"),
        )
        .unwrap();
        assert_eq!(plain, schemaless(json!({"a": 1})));
        let b = SchemaAndValue::decode(&Converter::ByteArray, Some(&[0, 255, 7])).unwrap();
        assert_eq!(b.to_data(), Data::Bytes(vec![0, 255, 7]));
        assert_eq!(
            b.encode(&Converter::ByteArray, "t").unwrap(),
            Some(vec![0, 255, 7])
        );
        assert_eq!(SchemaAndValue::null().encode(&conv, "t").unwrap(), None);
    }

    #[test]
    fn every_listed_plugin_class_is_found() {
        let infos = plugin_infos("1");
        assert_eq!(infos.len(), 5 * 2 + 4 + 3);
        for i in infos {
            let class = i["class"].as_str().unwrap();
            match i["type"].as_str().unwrap() {
                "transformation" => assert!(find_transform(class).is_some(), "{class}"),
                _ => assert!(find_predicate(class).is_some(), "{class}"),
            }
        }
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        let parts = parse_date_format("yy/M/d H").unwrap();
        assert_eq!(format_timestamp(&parts, 0), "70/1/1 0");
        // 2000-02-29T23:59:59Z, a leap day; and before the epoch.
        assert_eq!(
            format_timestamp(
                &parse_date_format("yyyyMMddHHmmss").unwrap(),
                951_868_799_000
            ),
            "20000229235959"
        );
        assert_eq!(
            format_timestamp(&parse_date_format("yyyy-MM-dd").unwrap(), -1),
            "1969-12-31"
        );
    }
}
