//! A registered JSON Schema as SQL columns (JSON_SR's schema inference): `$ref`s to the schema's own definitions
//! (`#/definitions/X`, `#/$defs/X`, any JSON pointer) and to the schemas its registry `references` name (Confluent's
//! JSON Schema references: the `$ref` is the reference's name, with an optional `#/...` into it), and the nullable
//! forms producers write (`type: ["null", X]`, Confluent's and Connect's `oneOf: [{"type": "null"}, X]`, `anyOf`
//! alike) are resolved. The walk is bounded: a `$ref` that comes back to itself (a recursive type, which no SQL
//! type is), nesting or a `$ref` chain deeper than [`MAX_SCHEMA_DEPTH`], or more than [`MAX_SCHEMA_NODES`] schemas
//! visited (definitions used twice per level double), is an error that says so; the null checks of a oneOf's
//! branches, and each `$ref` they follow, count against that budget too.
//!
//! A `$ref` names a reference as the registry matches it when it accepts the schema
//! ([`fjord_registry::json::ref_names`]: the name itself, a URL or path ending in `/name`), and also relative to
//! the document's top-level `$id` or by a referenced schema's `$id`; its fragment is a JSON pointer decoded as
//! the registry does ([`fjord_registry::json::ref_pointer`]: percent escapes, then `~1`/`~0`; `#` is the document). `$id`s nested below a document's top and relative paths (`../x.json`) are not resolved per
//! RFC 3986: a reference is found by the `$ref`'s last path segments, as the registry finds it.

use fjord_registry::json::JsonDocs;
use fjord_registry::wire::{MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES};
use serde_json::Value as J;

use crate::types::SqlType;

/// A JSON Schema with the schemas its references reach (by reference name; resolved by the registry's
/// [`JsonDocs`]).
pub struct JsonSchema(JsonDocs);

impl JsonSchema {
    /// `referenced`: (reference name, text) of every schema the references reach.
    pub fn parse(text: &str, referenced: &[(String, String)]) -> Result<JsonSchema, String> {
        JsonDocs::parse(text, referenced).map(JsonSchema)
    }

    /// The schema's SQL type (an object's is a STRUCT of its properties, upper-cased).
    pub fn sql_type(&self) -> Result<SqlType, String> {
        Walk {
            schema: &self.0,
            budget: MAX_SCHEMA_NODES,
            active: Vec::new(),
        }
        .ty(&self.0.root, 0, 0)
    }
}

struct Walk<'a> {
    schema: &'a JsonDocs,
    budget: usize,
    /// The `$ref` targets being resolved (by address): one met again is a recursive type.
    active: Vec<*const J>,
}

impl<'a> Walk<'a> {
    /// One schema visited (or one `$ref` followed, or one branch checked for null) of [`MAX_SCHEMA_NODES`].
    fn charge(&mut self) -> Result<(), String> {
        if self.budget == 0 {
            return Err(format!(
                "the JSON Schema expands to more than {MAX_SCHEMA_NODES} schemas, which SQL does not read"
            ));
        }
        self.budget -= 1;
        Ok(())
    }

    /// `doc`: the document `s` is in (its local `$ref`s point into it); `depth`: nesting plus `$ref`s followed.
    fn ty(&mut self, s: &'a J, doc: usize, depth: usize) -> Result<SqlType, String> {
        self.charge()?;
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the JSON Schema nests (or chains $refs) more than {MAX_SCHEMA_DEPTH} deep, which SQL does not read"
            ));
        }
        if let Some(r) = s.get("$ref").and_then(J::as_str) {
            let (target, at) = self.resolve(r, doc)?;
            let key = target as *const J;
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

    /// Whether `s` (its `$ref`s followed, at most as deep as the walk goes) is `{"type": "null"}` (or
    /// `{"type": ["null"]}`). The branch and every `$ref` followed are charged to the budget.
    fn is_null(&mut self, s: &'a J, doc: usize, depth: usize) -> Result<bool, String> {
        let (mut s, mut doc) = (s, doc);
        for _ in depth..=MAX_SCHEMA_DEPTH {
            self.charge()?;
            match s.get("$ref").and_then(J::as_str) {
                Some(r) => (s, doc) = self.resolve(r, doc)?,
                None => {
                    return Ok(match &s["type"] {
                        J::String(t) => t == "null",
                        J::Array(ts) => !ts.is_empty() && ts.iter().all(|t| t == "null"),
                        _ => false,
                    })
                }
            }
        }
        Err(format!(
            "the JSON Schema chains $refs more than {MAX_SCHEMA_DEPTH} deep (or in a circle), which SQL does not read"
        ))
    }

    /// The schema `$ref` `r` (in document `doc`) names: (it, its document), as the registry resolves it.
    fn resolve(&self, r: &str, doc: usize) -> Result<(&'a J, usize), String> {
        let schema: &'a JsonDocs = self.schema;
        schema.resolve(r, doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ty(root: J, referenced: &[(&str, J)]) -> Result<SqlType, String> {
        JsonSchema(JsonDocs {
            root,
            referenced: referenced
                .iter()
                .map(|(n, j)| (n.to_string(), j.clone()))
                .collect(),
        })
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
        // The null check's work counts too: a oneOf of 2000 branches, each a chain of 20 $refs to null, used
        // thousands of times through definitions that double (13 levels, 8192 uses).
        let mut defs = serde_json::Map::new();
        for i in 0..13 {
            let next = json!({"$ref": format!("#/definitions/D{}", i + 1)});
            defs.insert(
                format!("D{i}"),
                json!({"type": "object", "properties": {"a": next.clone(), "b": next}}),
            );
        }
        let mut branches = vec![json!({"$ref": "#/definitions/N0"}); 2000];
        branches.push(json!({"type": "string"}));
        defs.insert("D13".into(), json!({"oneOf": branches}));
        for i in 0..20 {
            defs.insert(
                format!("N{i}"),
                json!({"$ref": format!("#/definitions/N{}", i + 1)}),
            );
        }
        defs.insert("N20".into(), json!({"type": "null"}));
        let e = ty(
            json!({"$ref": "#/definitions/D0", "definitions": defs}),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("more than 10000 schemas"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// Percent escapes and JSON pointer escapes (`~1` is `/`, `~0` is `~`) in a `$ref`'s pointer; `#` is the
    /// document itself.
    #[test]
    fn pointer_escapes_are_decoded() {
        use fjord_registry::json::percent_decoded;
        assert_eq!(percent_decoded("/definitions/a%20b"), "/definitions/a b");
        assert_eq!(percent_decoded("/x%2"), "/x%2");
        let defs = json!({
            "a b": {"type": "boolean"},
            "a/b": {"type": "number"},
            "a~b": {"type": "string"},
            "a~1b": {"type": "integer"}
        });
        for (r, want) in [
            ("#/definitions/a%20b", SqlType::Boolean),
            ("#/definitions/a~1b", SqlType::Double),
            ("#/definitions/a~0b", SqlType::String),
            ("#/definitions/a~01b", SqlType::Bigint),
            ("#/definitions/a%7E1b", SqlType::Double),
        ] {
            let got = ty(json!({"$ref": r, "definitions": defs}), &[]).unwrap();
            assert_eq!(got, want, "{r}");
        }
        let got = ty(
            json!({"properties": {"x": {"type": "string"}, "y": {"oneOf": [{"type": "null"}, {"$ref": "#"}]}},
                   "type": "object"}),
            &[],
        )
        .unwrap_err();
        assert!(got.contains("recursive"), "{got}");
    }

    /// `{"type": ["null"]}` is a null branch of a oneOf, as `{"type": "null"}` is. Before, it was a second
    /// non-null type, and the oneOf had none.
    #[test]
    fn a_null_type_list_is_a_null_branch() {
        let got = ty(
            json!({"oneOf": [{"type": ["null"]}, {"type": "string"}]}),
            &[],
        )
        .unwrap();
        assert_eq!(got, SqlType::String);
        let e = ty(json!({"anyOf": [{"type": []}, {"type": "string"}]}), &[]).unwrap_err();
        assert!(e.contains("several non-null"), "{e}");
    }

    /// A `$ref` the registry resolves when it accepts the schema resolves here too: a URL whose last segment is
    /// the reference's name, with no `$id` anywhere (the registry matches it by that suffix). Before, SQL refused
    /// the schema ("names no schema"); the registry's own check of the same schema is part of the test.
    #[test]
    fn refs_resolve_as_the_registry_resolves_them() {
        let address = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let schema = json!({
            "type": "object",
            "properties": {
                "ship_to": {"$ref": "https://x/address.json"},
                "bill_to": {"oneOf": [{"type": "null"}, {"$ref": "https://x/address.json#"}]}
            }
        });
        let referenced = [("address.json".to_string(), address.to_string())];
        fjord_registry::json::parse(&schema.to_string(), &referenced)
            .expect("the registry accepts it");
        let got = JsonSchema::parse(&schema.to_string(), &referenced)
            .unwrap()
            .sql_type()
            .unwrap();
        let address = st(&[("CITY", SqlType::String)]);
        assert_eq!(
            got,
            st(&[("BILL_TO", address.clone()), ("SHIP_TO", address)])
        );
        assert!(fjord_registry::json::ref_names(
            "https://x/address.json",
            "address.json"
        ));
        assert!(!fjord_registry::json::ref_names(
            "https://x/myaddress.json",
            "address.json"
        ));
    }
}
