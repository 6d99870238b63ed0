//! A registered JSON Schema as SQL columns (JSON_SR's schema inference): `$ref`s to the schema's own definitions
//! (`#/definitions/X`, `#/$defs/X`, any JSON pointer) and to the schemas its registry `references` name (Confluent's
//! JSON Schema references: the `$ref` is the reference's name, with an optional `#/...` into it), and the nullable
//! forms producers write (`type: ["null", X]`, Confluent's and Connect's `oneOf: [{"type": "null"}, X]`, `anyOf`
//! alike) are resolved. The walk is bounded: a `$ref` that comes back to itself (a recursive type, which no SQL
//! type is), nesting or a `$ref` chain deeper than [`MAX_SCHEMA_DEPTH`], or more than [`MAX_SCHEMA_NODES`] schemas
//! visited (definitions used twice per level double), is an error that says so.

use fjord_registry::wire::{MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES};
use serde_json::Value as J;

use crate::types::SqlType;

/// A JSON Schema with the schemas its references reach (by reference name).
pub struct JsonSchema {
    pub root: J,
    pub referenced: Vec<(String, J)>,
}

impl JsonSchema {
    /// `referenced`: (reference name, text) of every schema the references reach.
    pub fn parse(text: &str, referenced: &[(String, String)]) -> Result<JsonSchema, String> {
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
        Ok(JsonSchema { root, referenced })
    }

    /// The schema's SQL type (an object's is a STRUCT of its properties, upper-cased).
    pub fn sql_type(&self) -> Result<SqlType, String> {
        Walk {
            schema: self,
            budget: MAX_SCHEMA_NODES,
            active: Vec::new(),
        }
        .ty(&self.root, 0, 0)
    }

    /// Document `i`: 0 the root, then the referenced schemas in order.
    fn doc(&self, i: usize) -> &J {
        match i {
            0 => &self.root,
            i => &self.referenced[i - 1].1,
        }
    }
}

struct Walk<'a> {
    schema: &'a JsonSchema,
    budget: usize,
    /// The `$ref` targets being resolved (document, pointer): one met again is a recursive type.
    active: Vec<(usize, String)>,
}

impl<'a> Walk<'a> {
    /// `doc`: the document `s` is in (its local `$ref`s point into it); `depth`: nesting plus `$ref`s followed.
    fn ty(&mut self, s: &'a J, doc: usize, depth: usize) -> Result<SqlType, String> {
        if self.budget == 0 {
            return Err(format!(
                "the JSON Schema expands to more than {MAX_SCHEMA_NODES} schemas, which SQL does not read"
            ));
        }
        self.budget -= 1;
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the JSON Schema nests (or chains $refs) more than {MAX_SCHEMA_DEPTH} deep, which SQL does not read"
            ));
        }
        if let Some(r) = s.get("$ref").and_then(J::as_str) {
            let (target, at, pointer) = self.resolve(r, doc)?;
            let key = (at, pointer);
            if self.active.contains(&key) {
                return Err(format!(
                    "the JSON Schema is recursive (\"$ref\": \"{r}\" refers to a schema that contains it), which no SQL type is"
                ));
            }
            self.active.push(key);
            let t = self.ty(target, at, depth + 1);
            self.active.pop();
            return t;
        }
        for k in ["oneOf", "anyOf"] {
            if let Some(branches) = s.get(k).and_then(J::as_array) {
                let mut rest = Vec::new();
                for b in branches {
                    if !self.is_null(b, doc, depth + 1)? {
                        rest.push(b);
                    }
                }
                return match rest.as_slice() {
                    [one] => self.ty(one, doc, depth + 1),
                    [] => Err(format!("{k} of only null has no SQL type")),
                    _ => Err(format!("{k} of several non-null types has no SQL type")),
                };
            }
        }
        let ty = match &s["type"] {
            J::String(t) => t.as_str(),
            J::Array(ts) => {
                let rest: Vec<&str> = ts
                    .iter()
                    .filter_map(J::as_str)
                    .filter(|t| *t != "null")
                    .collect();
                match rest.as_slice() {
                    [one] => *one,
                    _ => return Err(format!("the type {} has no SQL type", s["type"])),
                }
            }
            _ if s.get("properties").is_some() => "object",
            other => return Err(format!("no `type` ({other})")),
        };
        Ok(match ty {
            "boolean" => SqlType::Boolean,
            "integer" => match s["connect.type"].as_str() {
                Some("int32" | "int16" | "int8") => SqlType::Int,
                _ => SqlType::Bigint,
            },
            "number" => SqlType::Double,
            "string" => SqlType::String,
            "array" => SqlType::Array(Box::new(self.ty(&s["items"], doc, depth + 1)?)),
            "object" => match s.get("properties").and_then(J::as_object) {
                Some(p) => SqlType::Struct(
                    p.iter()
                        .map(|(n, t)| {
                            let t = self
                                .ty(t, doc, depth + 1)
                                .map_err(|e| format!("property {n}: {e}"))?;
                            Ok((n.to_ascii_uppercase(), t))
                        })
                        .collect::<Result<_, String>>()?,
                ),
                None => SqlType::Map(
                    Box::new(SqlType::String),
                    Box::new(match s.get("additionalProperties") {
                        Some(v @ J::Object(_)) => self.ty(v, doc, depth + 1)?,
                        _ => SqlType::String,
                    }),
                ),
            },
            other => return Err(format!("the JSON type {other} has no SQL type")),
        })
    }

    /// Whether `s` (its `$ref`s followed, at most as deep as the walk goes) is `{"type": "null"}`.
    fn is_null(&mut self, s: &'a J, doc: usize, depth: usize) -> Result<bool, String> {
        let (mut s, mut doc) = (s, doc);
        for _ in depth..=MAX_SCHEMA_DEPTH {
            match s.get("$ref").and_then(J::as_str) {
                Some(r) => {
                    let (target, at, _) = self.resolve(r, doc)?;
                    (s, doc) = (target, at);
                }
                None => return Ok(s["type"] == "null"),
            }
        }
        Err(format!(
            "the JSON Schema chains $refs more than {MAX_SCHEMA_DEPTH} deep (or in a circle), which SQL does not read"
        ))
    }

    /// The schema `$ref` `r` (in document `doc`) names: (it, its document, its JSON pointer there).
    fn resolve(&self, r: &str, doc: usize) -> Result<(&'a J, usize, String), String> {
        let schema: &'a JsonSchema = self.schema;
        let (base, fragment) = r.split_once('#').unwrap_or((r, ""));
        let at = if base.is_empty() {
            doc
        } else {
            // Relative to the document's `$id` when it has one (`https://x/order.json` makes `address.json`
            // `https://x/address.json`); a reference name or a referenced schema's `$id` may be either.
            let absolute = schema.doc(doc)["$id"]
                .as_str()
                .filter(|_| !base.contains("://"))
                .and_then(|id| id.rfind('/').map(|i| format!("{}{base}", &id[..=i])));
            let names = |n: &str| n == base || absolute.as_deref() == Some(n);
            let by_name = schema.referenced.iter().position(|(n, _)| names(n));
            let by_id = || {
                (0..=schema.referenced.len()).find(|&i| {
                    schema.doc(i)["$id"]
                        .as_str()
                        .is_some_and(|id| names(id.split('#').next().unwrap_or(id)))
                })
            };
            match by_name.map(|i| i + 1).or_else(by_id) {
                Some(i) => i,
                None => {
                    let known: Vec<&str> =
                        schema.referenced.iter().map(|(n, _)| n.as_str()).collect();
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
        let pointer = percent_decoded(fragment);
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "\"$ref\": \"{r}\": only JSON pointers (#/definitions/X) are resolved, not anchors"
            ));
        }
        match schema.doc(at).pointer(&pointer) {
            Some(target) => Ok((target, at, pointer)),
            None => Err(format!("\"$ref\": \"{r}\" points to nothing in its schema")),
        }
    }
}

/// A URI fragment's `%XX` escapes decoded (as JSON pointers in `$ref`s are written).
fn percent_decoded(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ty(root: J, referenced: &[(&str, J)]) -> Result<SqlType, String> {
        JsonSchema {
            root,
            referenced: referenced
                .iter()
                .map(|(n, j)| (n.to_string(), j.clone()))
                .collect(),
        }
        .sql_type()
    }

    fn st(fields: &[(&str, SqlType)]) -> SqlType {
        SqlType::Struct(
            fields
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
        )
    }

    /// `$ref`s to `definitions` and `$defs` (also inside an array, a nullable oneOf and a map's values) and
    /// Confluent's nullable `oneOf`/`anyOf` (null first or last) resolve to the types they name. Before, a `$ref`
    /// had "no `type`" and the whole schema was refused.
    #[test]
    fn local_refs_and_nullable_one_of_resolve() {
        let address = st(&[("CITY", SqlType::String), ("ZIP", SqlType::Int)]);
        let schema = json!({
            "type": "object",
            "definitions": {
                "Address": {"type": "object", "properties": {
                    "city": {"type": "string"},
                    "zip": {"type": "integer", "connect.type": "int32"}
                }},
                "Alias": {"$ref": "#/definitions/Address"}
            },
            "$defs": {"Tag": {"type": "string"}},
            "properties": {
                "home": {"$ref": "#/definitions/Address"},
                "work": {"oneOf": [{"type": "null"}, {"$ref": "#/definitions/Alias"}]},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "n": {"oneOf": [{"type": "null"}, {"type": "integer"}]},
                "by": {"type": "object", "additionalProperties": {"$ref": "#/definitions/Address"}}
            }
        });
        assert_eq!(
            ty(schema, &[]).unwrap(),
            st(&[
                (
                    "BY",
                    SqlType::Map(Box::new(SqlType::String), Box::new(address.clone()))
                ),
                ("HOME", address.clone()),
                ("N", SqlType::Bigint),
                ("NOTE", SqlType::String),
                ("TAGS", SqlType::Array(Box::new(SqlType::String))),
                ("WORK", address),
            ])
        );
    }

    /// A `$ref` naming one of the schema's references (by its name, or relative to the schema's `$id`), with or
    /// without a pointer into it, and a local `$ref` inside the referenced schema, which points into that schema.
    #[test]
    fn refs_to_referenced_schemas_resolve_by_reference_name() {
        let address = json!({
            "$id": "https://example.com/address.json",
            "type": "object",
            "definitions": {"Zip": {"type": "integer", "connect.type": "int32"}},
            "properties": {"city": {"type": "string"}, "zip": {"$ref": "#/definitions/Zip"}}
        });
        let want = st(&[("CITY", SqlType::String), ("ZIP", SqlType::Int)]);
        let schema = json!({
            "$id": "https://example.com/order.json",
            "type": "object",
            "properties": {
                "a": {"$ref": "address.json"},
                "b": {"oneOf": [{"type": "null"}, {"$ref": "address.json#/definitions/Zip"}]}
            }
        });
        let got = ty(schema.clone(), &[("address.json", address.clone())]).unwrap();
        assert_eq!(got, st(&[("A", want.clone()), ("B", SqlType::Int)]));
        // The reference named by its full URL: found relative to the $id.
        let got = ty(
            schema.clone(),
            &[("https://example.com/address.json", address.clone())],
        )
        .unwrap();
        assert_eq!(got, st(&[("A", want.clone()), ("B", SqlType::Int)]));
        // Found by the referenced schema's own $id, whatever the reference's name.
        let got = ty(schema.clone(), &[("other.json", address.clone())]).unwrap();
        assert_eq!(got, st(&[("A", want), ("B", SqlType::Int)]));
        // Neither: says which references there are.
        let mut anonymous = address;
        anonymous.as_object_mut().unwrap().remove("$id");
        let e = ty(schema, &[("other.json", anonymous)]).unwrap_err();
        assert!(
            e.contains("\"address.json\" names no schema") && e.contains("other.json"),
            "{e}"
        );
        let e = ty(
            json!({"properties": {"x": {"$ref": "#/definitions/Nope"}}}),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("points to nothing"), "{e}");
    }

    /// A recursive type, a `$ref` circle (also between two referenced schemas, and in a oneOf's null check),
    /// nesting deeper than MAX_SCHEMA_DEPTH, and definitions that double per level are errors that say why, at
    /// once; never a stack overflow or a hang.
    #[test]
    fn recursive_deep_and_expanding_schemas_are_refused_quickly() {
        let started = std::time::Instant::now();
        let recursive = |e: String| assert!(e.contains("recursive"), "{e}");
        // A tree: Node's children are Nodes.
        recursive(
            ty(
                json!({"$ref": "#/definitions/Node", "definitions": {"Node": {"type": "object", "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}}}}}}),
                &[],
            )
            .unwrap_err(),
        );
        // A circle of $refs with nothing between.
        recursive(
            ty(
                json!({"properties": {"x": {"$ref": "#/definitions/A"}},
                       "definitions": {"A": {"$ref": "#/definitions/B"}, "B": {"$ref": "#/definitions/A"}}}),
                &[],
            )
            .unwrap_err(),
        );
        recursive(ty(json!({"$ref": "#"}), &[]).unwrap_err());
        // Two referenced schemas referring to each other.
        recursive(
            ty(
                json!({"$ref": "a.json"}),
                &[
                    ("a.json", json!({"$ref": "b.json"})),
                    ("b.json", json!({"$ref": "a.json"})),
                ],
            )
            .unwrap_err(),
        );
        // A circle inside a oneOf's branches.
        let e = ty(
            json!({"oneOf": [{"$ref": "#/definitions/A"}, {"type": "string"}],
                   "definitions": {"A": {"$ref": "#/definitions/B"}, "B": {"$ref": "#/definitions/A"}}}),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("in a circle"), "{e}");
        // A chain of 100 definitions, each the next's $ref; and objects nested 100 deep.
        let mut defs = serde_json::Map::new();
        for i in 0..100 {
            defs.insert(
                format!("D{i}"),
                json!({"$ref": format!("#/definitions/D{}", i + 1)}),
            );
        }
        defs.insert("D100".into(), json!({"type": "string"}));
        let e = ty(
            json!({"$ref": "#/definitions/D0", "definitions": defs}),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("more than 64 deep"), "{e}");
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "object", "properties": {"x": deep}});
        }
        let e = ty(deep, &[]).unwrap_err();
        assert!(e.contains("more than 64 deep"), "{e}");
        // 25 definitions each using the next twice: 2^25 schemas if expanded, though only 50 deep.
        let mut defs = serde_json::Map::new();
        for i in 0..25 {
            let next = json!({"$ref": format!("#/definitions/D{}", i + 1)});
            defs.insert(
                format!("D{i}"),
                json!({"type": "object", "properties": {"a": next.clone(), "b": next}}),
            );
        }
        defs.insert("D25".into(), json!({"type": "string"}));
        let e = ty(
            json!({"$ref": "#/definitions/D0", "definitions": defs}),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("more than 10000 schemas"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn pointer_escapes_are_decoded() {
        assert_eq!(percent_decoded("/definitions/a%20b"), "/definitions/a b");
        assert_eq!(percent_decoded("/x%2"), "/x%2");
        let got = ty(
            json!({"$ref": "#/definitions/a%20b", "definitions": {"a b": {"type": "boolean"}}}),
            &[],
        )
        .unwrap();
        assert_eq!(got, SqlType::Boolean);
    }
}
