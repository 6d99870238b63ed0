//! The schema types (`schemaType`: AVRO, the default, JSON and PROTOBUF) behind one interface: parsing with
//! references resolved from the registry's state, the identity form (what makes two registrations the same
//! schema), the text stored for `normalize=true`, and the compatibility check in Confluent's message format.

use crate::avro::{self, ParsedAvro};
use crate::diff::{Budget, Difference, TooComplex};
use crate::json::{self, ParsedJson};
use crate::protobuf::{self, ParsedProto};
use crate::records::Reference;
use crate::state::State;

/// The types `/schemas/types` lists.
pub const TYPES: [&str; 3] = ["JSON", "PROTOBUF", "AVRO"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Avro,
    Json,
    Protobuf,
}

impl Format {
    /// The type a request names (`None`: AVRO); `Err` is the message for 42201.
    pub fn from_request(t: Option<&str>) -> Result<Format, String> {
        match t {
            None | Some("AVRO") => Ok(Format::Avro),
            Some("JSON") => Ok(Format::Json),
            Some("PROTOBUF") => Ok(Format::Protobuf),
            Some(t) => Err(format!(
                "of unknown type {t}: schemaType is one of AVRO, JSON, PROTOBUF"
            )),
        }
    }

    /// The type of a stored schema (`None` and unknown names: AVRO, which then fails to parse).
    pub fn from_stored(t: Option<&str>) -> Format {
        Format::from_request(t).unwrap_or(Format::Avro)
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Avro => "AVRO",
            Format::Json => "JSON",
            Format::Protobuf => "PROTOBUF",
        }
    }

    /// The `schemaType` a record carries: none for AVRO, as Confluent writes it.
    pub fn stored(self) -> Option<String> {
        match self {
            Format::Avro => None,
            t => Some(t.name().to_string()),
        }
    }
}

pub enum ParsedSchema {
    Avro(ParsedAvro),
    Json(ParsedJson),
    Protobuf(ParsedProto),
}

impl ParsedSchema {
    /// Parses `text` as `format` with `references` resolved from `st` in `context` (the context of the
    /// subject the schema belongs to). The error is a message for 42201.
    pub fn parse(
        format: Format,
        text: &str,
        st: &State,
        context: &str,
        references: &[Reference],
    ) -> Result<ParsedSchema, String> {
        match format {
            Format::Avro => {
                let refs = st
                    .referenced_texts(context, references)
                    .map_err(|e| format!("{text}: {e}"))?;
                avro::parse(text, &refs).map(ParsedSchema::Avro)
            }
            Format::Json => {
                let refs = st
                    .referenced_named(context, references)
                    .map_err(|e| format!("{text}: {e}"))?;
                json::parse(text, &refs).map(ParsedSchema::Json)
            }
            Format::Protobuf => {
                let refs = st
                    .referenced_named(context, references)
                    .map_err(|e| format!("{text}: {e}"))?;
                protobuf::parse(text, &refs).map(ParsedSchema::Protobuf)
            }
        }
    }

    pub fn format(&self) -> Format {
        match self {
            ParsedSchema::Avro(_) => Format::Avro,
            ParsedSchema::Json(_) => Format::Json,
            ParsedSchema::Protobuf(_) => Format::Protobuf,
        }
    }

    /// The form identity compares.
    pub fn canonical(&self) -> &str {
        match self {
            ParsedSchema::Avro(p) => &p.canonical,
            ParsedSchema::Json(p) => &p.canonical,
            ParsedSchema::Protobuf(p) => &p.canonical,
        }
    }

    /// The text to store for a registration of `text`: the canonical form with `normalize=true`, and for
    /// Protobuf sent as a serialized descriptor (what Confluent's serializers send), its `.proto` text
    /// (parsing refused a descriptor that text cannot hold). A Protobuf text whose printed form would lose
    /// part of it (extensions, groups, some options) is kept as sent even with `normalize=true`.
    pub fn text_to_store(&self, text: &str, normalize: bool) -> String {
        match self {
            ParsedSchema::Protobuf(p) if p.from_descriptor || (normalize && p.lossless) => {
                p.printed.clone()
            }
            ParsedSchema::Protobuf(_) => text.to_string(),
            p if normalize => p.canonical().to_string(),
            _ => text.to_string(),
        }
    }

    /// Confluent's incompatibility messages of `new` against `old` in the directions asked: backward (the
    /// new schema reads what the old one wrote) and forward. Err (a message for 42201) when the schemas are
    /// too deep or too complex to compare within the walk's budget (`diff`): never "compatible" then.
    pub fn incompatibilities(
        new: &ParsedSchema,
        old: &ParsedSchema,
        backward: bool,
        forward: bool,
        budget: &Budget,
    ) -> Result<Vec<String>, String> {
        Prepared::new(new).incompatibilities(old, backward, forward, budget)
    }
}

/// A new schema prepared once for a request that compares it with several versions: what a comparison builds
/// from it (the JSON walk's nodes) is built at the first and reused by the others.
pub struct Prepared<'a> {
    new: &'a ParsedSchema,
    json: Option<json::Prepared<'a>>,
}

impl<'a> Prepared<'a> {
    pub fn new(new: &'a ParsedSchema) -> Prepared<'a> {
        let json = match new {
            ParsedSchema::Json(j) => Some(json::Prepared::new(j)),
            _ => None,
        };
        Prepared { new, json }
    }

    /// [`ParsedSchema::incompatibilities`] of the prepared schema against `old`.
    pub fn incompatibilities(
        &self,
        old: &ParsedSchema,
        backward: bool,
        forward: bool,
        budget: &Budget,
    ) -> Result<Vec<String>, String> {
        let mut found = Vec::new();
        let too_complex = |e: TooComplex| e.to_string();
        if let (Some(prepared), ParsedSchema::Json(old)) = (&self.json, old) {
            let render = |d: &Difference, update, original| {
                d.render(&json::description(d, update, original))
            };
            if backward {
                let diffs = prepared
                    .incompatibilities_with(old, true, budget)
                    .map_err(too_complex)?;
                found.extend(diffs.iter().map(|d| render(d, "new", "old")));
            }
            if forward {
                let diffs = prepared
                    .incompatibilities_with(old, false, budget)
                    .map_err(too_complex)?;
                found.extend(diffs.iter().map(|d| render(d, "old", "new")));
            }
            return Ok(found);
        }
        match (self.new, old) {
            (ParsedSchema::Avro(new), ParsedSchema::Avro(old)) => {
                if backward {
                    let checked = avro::check_within(new, old, budget).map_err(too_complex)?;
                    found.extend(checked.iter().map(|i| i.render(true)));
                }
                if forward {
                    let checked = avro::check_within(old, new, budget).map_err(too_complex)?;
                    found.extend(checked.iter().map(|i| i.render(false)));
                }
            }
            // A JSON schema against a JSON schema is compared above, with the prepared nodes.
            (ParsedSchema::Protobuf(new), ParsedSchema::Protobuf(old)) => {
                let render = |d: &Difference, update, original| {
                    d.render(&protobuf::description(d, update, original))
                };
                if backward {
                    let diffs = protobuf::incompatibilities_within(old, new, budget).map_err(too_complex)?;
                    found.extend(diffs.iter().map(|d| render(d, "new", "old")));
                }
                if forward {
                    let diffs = protobuf::incompatibilities_within(new, old, budget).map_err(too_complex)?;
                    found.extend(diffs.iter().map(|d| render(d, "old", "new")));
                }
            }
            (new, old) => found.push(format!(
                "{{errorType:'TYPE_MISMATCH', description:'The new schema is of type {} and the old schema of type {}', additionalInfo:''}}",
                new.format().name(),
                old.format().name()
            )),
        }
        Ok(found)
    }
}
