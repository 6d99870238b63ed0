//! The JSON Schema evolution table: each case is an original (old) and an update (new) schema with the
//! differences Confluent's JSON Schema provider reports between them (type and JSON path) and whether it
//! accepts the update as BACKWARD compatible. The cases follow Confluent's `diff-schema-examples.json` and
//! `diff-combined-schema-examples.json` test tables (read for their expectations, written out here).

use fjord_registry::json::{description, differences, incompatibilities, parse, ParsedJson};
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    original: Value,
    update: Value,
    changes: &'static [&'static str],
    compatible: bool,
}

fn case(
    name: &'static str,
    original: Value,
    update: Value,
    changes: &'static [&'static str],
    compatible: bool,
) -> Case {
    Case {
        name,
        original,
        update,
        changes,
        compatible,
    }
}

fn p(v: &Value) -> ParsedJson {
    parse(&v.to_string(), &[]).unwrap_or_else(|e| panic!("{v} does not parse: {e}"))
}

fn cases() -> Vec<Case> {
    let s = |t: &str| json!({ "type": t });
    vec![
        case(
            "anything can change to the empty schema",
            json!({"properties": {}}),
            json!({}),
            &[],
            true,
        ),
        case(
            "id changed",
            json!({"id": "a"}),
            json!({"id": "b"}),
            &["ID_CHANGED #/"],
            true,
        ),
        case(
            "title changed",
            json!({"title": "a"}),
            json!({"title": "b"}),
            &["TITLE_CHANGED #/"],
            true,
        ),
        case(
            "description changed",
            json!({"description": "a"}),
            json!({"description": "b"}),
            &["DESCRIPTION_CHANGED #/"],
            true,
        ),
        case(
            "type changed",
            s("object"),
            s("array"),
            &["TYPE_CHANGED #/"],
            false,
        ),
        case(
            "minLength increased",
            json!({"type": "string", "minLength": 10}),
            json!({"type": "string", "minLength": 11}),
            &["MIN_LENGTH_INCREASED #/minLength"],
            false,
        ),
        case(
            "minLength decreased",
            json!({"type": "string", "minLength": 11}),
            json!({"type": "string", "minLength": 10}),
            &["MIN_LENGTH_DECREASED #/minLength"],
            true,
        ),
        case(
            "maxLength increased",
            json!({"type": "string", "maxLength": 10}),
            json!({"type": "string", "maxLength": 12}),
            &["MAX_LENGTH_INCREASED #/maxLength"],
            true,
        ),
        case(
            "maxLength decreased",
            json!({"type": "string", "maxLength": 12}),
            json!({"type": "string", "maxLength": 10}),
            &["MAX_LENGTH_DECREASED #/maxLength"],
            false,
        ),
        case(
            "pattern removed",
            json!({"type": "string", "pattern": "uuid"}),
            s("string"),
            &["PATTERN_REMOVED #/pattern"],
            true,
        ),
        case(
            "pattern changed",
            json!({"type": "string", "pattern": "date-time"}),
            json!({"type": "string", "pattern": "uuid"}),
            &["PATTERN_CHANGED #/pattern"],
            false,
        ),
        case(
            "maximum removed",
            json!({"type": "number", "maximum": 10}),
            s("number"),
            &["MAXIMUM_REMOVED #/maximum"],
            true,
        ),
        case(
            "maximum increased",
            json!({"type": "number", "maximum": 10}),
            json!({"type": "number", "maximum": 11}),
            &["MAXIMUM_INCREASED #/maximum"],
            true,
        ),
        case(
            "maximum decreased",
            json!({"type": "number", "maximum": 11}),
            json!({"type": "number", "maximum": 10}),
            &["MAXIMUM_DECREASED #/maximum"],
            false,
        ),
        case(
            "minimum increased",
            json!({"type": "number", "minimum": 10}),
            json!({"type": "number", "minimum": 11}),
            &["MINIMUM_INCREASED #/minimum"],
            false,
        ),
        case(
            "minimum decreased",
            json!({"type": "number", "minimum": 11}),
            json!({"type": "number", "minimum": 10}),
            &["MINIMUM_DECREASED #/minimum"],
            true,
        ),
        case(
            "multipleOf reduced",
            json!({"type": "number", "multipleOf": 10}),
            json!({"type": "number", "multipleOf": 2}),
            &["MULTIPLE_OF_REDUCED #/multipleOf"],
            true,
        ),
        case(
            "multipleOf changed",
            json!({"type": "number", "multipleOf": 10}),
            json!({"type": "number", "multipleOf": 11}),
            &["MULTIPLE_OF_CHANGED #/multipleOf"],
            false,
        ),
        case(
            "number narrowed to integer",
            s("number"),
            s("integer"),
            &["TYPE_NARROWED #/"],
            false,
        ),
        case(
            "integer extended to number",
            s("integer"),
            s("number"),
            &["TYPE_EXTENDED #/"],
            true,
        ),
        case(
            "not narrowed",
            json!({"not": {"type": "number"}}),
            json!({"not": {"type": "integer"}}),
            &["NOT_TYPE_NARROWED #/not"],
            true,
        ),
        case(
            "not extended",
            json!({"not": {"type": "integer"}}),
            json!({"not": {"type": "number"}}),
            &["NOT_TYPE_EXTENDED #/not"],
            false,
        ),
        case(
            "enum removed from a string",
            json!({"type": "string", "enum": ["red"]}),
            s("string"),
            &["PRODUCT_TYPE_NARROWED #/"],
            true,
        ),
        case(
            "enum values replaced",
            json!({"allOf": [{"type": "string"}, {"enum": ["red"]}]}),
            json!({"allOf": [{"type": "string"}, {"enum": ["blue"]}]}),
            &["COMBINED_TYPE_SUBSCHEMAS_CHANGED #/"],
            false,
        ),
        case(
            "enum values extended",
            json!({"allOf": [{"type": "string"}, {"enum": ["red"]}]}),
            json!({"allOf": [{"enum": ["red", "blue"]}, {"type": "string"}]}),
            &["ENUM_ARRAY_EXTENDED #/allOf/1/enum"],
            true,
        ),
        case(
            "type array extended",
            json!({"type": ["object"]}),
            json!({"type": ["object", "array"]}),
            &["SUM_TYPE_EXTENDED #/"],
            true,
        ),
        case(
            "oneOf subschema changed",
            json!({"oneOf": [{"type": "string"}]}),
            json!({"oneOf": [{"type": "number"}]}),
            &["COMBINED_TYPE_SUBSCHEMAS_CHANGED #/"],
            false,
        ),
        case(
            "oneOf subschema added",
            json!({"oneOf": [{"type": "string"}]}),
            json!({"oneOf": [{"type": "number"}, {"type": "string"}]}),
            &["SUM_TYPE_EXTENDED #/"],
            true,
        ),
        case(
            "singleton oneOf changed to a singleton allOf",
            json!({"oneOf": [{"type": "string"}]}),
            json!({"allOf": [{"type": "string"}]}),
            &["COMBINED_TYPE_EXTENDED #/"],
            true,
        ),
        case(
            "oneOf changed to allOf",
            json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"allOf": [{"type": "string"}, {"type": "integer"}]}),
            &["COMBINED_TYPE_CHANGED #/"],
            false,
        ),
        case(
            "property renamed in an open content model",
            json!({"properties": {"foo": {"type": "string"}}}),
            json!({"properties": {"bar": {"type": "string"}}}),
            &[
                "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL #/properties/bar",
                "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL #/properties/foo",
            ],
            false,
        ),
        case(
            "property type changed",
            json!({"properties": {"foo": {"type": "string"}}}),
            json!({"properties": {"foo": {"type": "number"}}}),
            &["TYPE_CHANGED #/properties/foo"],
            false,
        ),
        case(
            "property added to an open content model",
            json!({"properties": {"foo": {"type": "string"}}}),
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}}),
            &["PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL #/properties/bar"],
            false,
        ),
        case(
            "optional property added to a closed content model",
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": false}),
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}, "additionalProperties": false}),
            &["OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar"],
            true,
        ),
        case(
            "required property added to a closed content model",
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": false}),
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}, "required": ["bar"], "additionalProperties": false}),
            &["REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar"],
            false,
        ),
        case(
            "required property with a default added to a closed content model",
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": false}),
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "number", "default": 1}}, "required": ["bar"], "additionalProperties": false}),
            &["REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar"],
            true,
        ),
        case(
            "property removed from a closed content model",
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "string"}}, "additionalProperties": false}),
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": false}),
            &["PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL #/properties/bar"],
            false,
        ),
        case(
            "property added, covered by a pattern of a partially open content model",
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": false,
                   "patternProperties": {"^S_": {"type": "string"}, "^I_": {"type": "integer"}}}),
            json!({"properties": {"foo": {"type": "string"}, "I_123": {"type": "number"}}, "additionalProperties": false,
                   "patternProperties": {"^S_": {"type": "string"}, "^I_": {"type": "integer"}}}),
            &[
                "TYPE_EXTENDED #/properties/I_123",
                "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/I_123",
                "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/I_123",
            ],
            true,
        ),
        case(
            "property added, not covered by additionalProperties",
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}, "additionalProperties": {"type": "string"}}),
            &[
                "TYPE_CHANGED #/properties/bar",
                "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
                "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar",
            ],
            false,
        ),
        case(
            "required property added, covered by additionalProperties",
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "string"}}, "required": ["bar"], "additionalProperties": {"type": "string"}}),
            &[
                "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
                "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL #/properties/bar",
            ],
            false,
        ),
        case(
            "property removed into additionalProperties of a union",
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "string"}}, "additionalProperties": false}),
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": {"oneOf": [{"type": "null"}, {"type": "string"}]}}),
            &[
                "SUM_TYPE_EXTENDED #/properties/bar",
                "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
                "ADDITIONAL_PROPERTIES_ADDED #/additionalProperties",
            ],
            true,
        ),
        case(
            "property removed, not covered by additionalProperties",
            json!({"properties": {"foo": {"type": "string"}, "bar": {"type": "number"}}, "additionalProperties": false}),
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            &[
                "TYPE_CHANGED #/properties/bar",
                "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/properties/bar",
                "ADDITIONAL_PROPERTIES_ADDED #/additionalProperties",
            ],
            false,
        ),
        case(
            "dependencies replaced",
            json!({"properties": {"foo": {"type": "number"}, "bar": {"type": "string"}}, "dependencies": {"foo": ["bar"]}}),
            json!({"properties": {"foo": {"type": "number"}, "bar": {"type": "string"}}, "dependencies": {"bar": ["foo"]}}),
            &[
                "DEPENDENCY_ARRAY_ADDED #/dependencies/bar",
                "DEPENDENCY_ARRAY_REMOVED #/dependencies/foo",
            ],
            false,
        ),
        case(
            "dependency schema removed",
            json!({"dependencies": {"foo": {"type": "string"}, "bar": {"type": "string"}}}),
            json!({"dependencies": {"foo": {"type": "string"}}}),
            &["DEPENDENCY_SCHEMA_REMOVED #/dependencies/bar"],
            true,
        ),
        case(
            "required removed",
            json!({"properties": {"foo": {"type": "string"}}, "required": ["foo"]}),
            json!({"properties": {"foo": {"type": "string"}}}),
            &["REQUIRED_ATTRIBUTE_REMOVED #/required/foo"],
            true,
        ),
        case(
            "required added",
            json!({"properties": {"foo": {"type": "string"}}}),
            json!({"properties": {"foo": {"type": "string"}}, "required": ["foo"]}),
            &["REQUIRED_ATTRIBUTE_ADDED #/required/foo"],
            false,
        ),
        case(
            "maxProperties decreased",
            json!({"maxProperties": 2}),
            json!({"maxProperties": 1}),
            &["MAX_PROPERTIES_DECREASED #/maxProperties"],
            false,
        ),
        case(
            "minProperties decreased",
            json!({"minProperties": 2}),
            json!({"minProperties": 1}),
            &["MIN_PROPERTIES_DECREASED #/minProperties"],
            true,
        ),
        case(
            "items schema added",
            s("array"),
            json!({"type": "array", "items": {"type": "string"}}),
            &["SCHEMA_ADDED #/items"],
            false,
        ),
        case(
            "items schema removed",
            json!({"type": "array", "items": {"type": "string"}}),
            s("array"),
            &["SCHEMA_REMOVED #/items"],
            true,
        ),
        case(
            "tuple items removed from an open array",
            json!({"type": "array", "items": [{"type": "string"}, {"type": "number"}]}),
            s("array"),
            &[
                "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL #/items/0",
                "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL #/items/1",
            ],
            true,
        ),
        case(
            "tuple item added, covered by additionalItems",
            json!({"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": {"type": "string"}}),
            json!({"type": "array", "items": [{"type": "string"}, {"type": "number"}, {"type": "string"}], "additionalItems": {"type": "string"}}),
            &["ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/items/2"],
            true,
        ),
        case(
            "tuple item added, not covered by additionalItems",
            json!({"type": "array", "items": [{"type": "string"}, {"type": "number"}], "additionalItems": {"type": "string"}}),
            json!({"type": "array", "items": [{"type": "string"}, {"type": "number"}, {"type": "number"}], "additionalItems": {"type": "string"}}),
            &[
                "TYPE_CHANGED #/items/2",
                "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL #/items/2",
            ],
            false,
        ),
        case(
            "tuple item type changed",
            json!({"type": "array", "items": [{"type": "string"}]}),
            json!({"type": "array", "items": [{"type": "number"}]}),
            &["TYPE_CHANGED #/items/0"],
            false,
        ),
        case(
            "maxItems decreased",
            json!({"type": "array", "maxItems": 2}),
            json!({"type": "array", "maxItems": 1}),
            &["MAX_ITEMS_DECREASED #/maxItems"],
            false,
        ),
        case(
            "minItems increased",
            json!({"type": "array", "minItems": 1}),
            json!({"type": "array", "minItems": 2}),
            &["MIN_ITEMS_INCREASED #/minItems"],
            false,
        ),
        case(
            "uniqueItems removed",
            json!({"type": "array", "uniqueItems": true}),
            s("array"),
            &["UNIQUE_ITEMS_REMOVED #/uniqueItems"],
            true,
        ),
        case(
            "a referenced definition changed type",
            json!({"type": "array", "items": {"$ref": "#/definitions/someRef"}, "definitions": {"someRef": {"type": "string"}}}),
            json!({"type": "array", "items": {"$ref": "#/definitions/someRef"}, "definitions": {"someRef": {"type": "number"}}}),
            &["TYPE_CHANGED #/items"],
            false,
        ),
        case(
            // The pointer percent-escaped, as the schema compiler reads it (before, the walk decoded only %25
            // and %22, did not resolve this $ref and saw no change).
            "a referenced definition whose name is percent-escaped changed type",
            json!({"type": "array", "items": {"$ref": "#/definitions/some%20ref"}, "definitions": {"some ref": {"type": "string"}}}),
            json!({"type": "array", "items": {"$ref": "#/definitions/some%20ref"}, "definitions": {"some ref": {"type": "number"}}}),
            &["TYPE_CHANGED #/items"],
            false,
        ),
        case(
            "moving a type into a definition",
            s("string"),
            json!({"$ref": "#/definitions/someRef", "definitions": {"someRef": {"type": "string"}}}),
            &[],
            true,
        ),
        case(
            "a nullable property (type array) from a plain one",
            json!({"properties": {"foo": {"type": "string"}}}),
            json!({"properties": {"foo": {"type": ["string", "null"]}}}),
            &["SUM_TYPE_EXTENDED #/properties/foo"],
            true,
        ),
        case(
            "a nullable property made plain",
            json!({"properties": {"foo": {"type": ["string", "null"]}}}),
            json!({"properties": {"foo": {"type": "string"}}}),
            &["TYPE_CHANGED #/properties/foo"],
            false,
        ),
        case(
            "additionalProperties closed",
            json!({"properties": {"foo": {"type": "string"}}}),
            json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": false}),
            &["ADDITIONAL_PROPERTIES_REMOVED #/additionalProperties"],
            false,
        ),
        case(
            "anyOf subschema removed",
            json!({"anyOf": [{"type": "string"}, {"type": "number"}]}),
            json!({"anyOf": [{"type": "string"}]}),
            &["SUM_TYPE_NARROWED #/"],
            false,
        ),
        case(
            "oneOf changed to anyOf",
            json!({"oneOf": [{"type": "string"}, {"type": "number"}]}),
            json!({"anyOf": [{"type": "string"}, {"type": "number"}]}),
            &["COMBINED_TYPE_EXTENDED #/"],
            true,
        ),
        case(
            "allOf subschema removed",
            json!({"allOf": [{"type": "string"}, {"maxLength": 5}]}),
            json!({"allOf": [{"type": "string"}]}),
            &["PRODUCT_TYPE_NARROWED #/"],
            true,
        ),
    ]
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn every_json_schema_case_matches_confluents_differences_and_decision() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 50, "the table has {} cases", all.len());
    for c in &all {
        let (o, u) = (p(&c.original), p(&c.update));
        let got = sorted(
            differences(&o, &u)
                .expect("within budget")
                .into_iter()
                .map(|d| format!("{} {}", d.kind, d.path))
                .collect(),
        );
        let want = sorted(c.changes.iter().map(|s| s.to_string()).collect());
        let compatible = incompatibilities(&o, &u).expect("within budget").is_empty();
        if got != want || compatible != c.compatible {
            failures.push(format!(
                "{}: changes {got:?} (want {want:?}), compatible {compatible} (want {})",
                c.name, c.compatible
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn incompatibilities_render_with_type_and_path() {
    let o = p(&json!({"properties": {"foo": {"type": "string"}}, "additionalProperties": false}));
    let u = p(
        &json!({"properties": {"foo": {"type": "number"}, "bar": {"type": "string"}},
                      "required": ["bar"], "additionalProperties": false}),
    );
    let rendered: Vec<String> = incompatibilities(&o, &u)
        .expect("within budget")
        .iter()
        .map(|d| d.render(&description(d, "new", "old")))
        .collect();
    assert_eq!(rendered.len(), 2, "{rendered:?}");
    assert!(rendered
        .iter()
        .any(|r| r.contains("errorType:\"TYPE_CHANGED\"")
            && r.contains("'#/properties/foo'")
            && r.contains("between the new schema and the old schema")));
    assert!(rendered.iter().any(|r| r
        .contains("errorType:\"REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL\"")
        && r.contains("'#/properties/bar'")));
}

#[test]
fn same_schema_written_differently_has_one_identity() {
    let a = parse(
        r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
        &[],
    )
    .unwrap();
    let b = parse(
        "{\n  \"properties\": {\"a\": {\"type\": \"string\"}},\n  \"type\": \"object\"\n}",
        &[],
    )
    .unwrap();
    assert_eq!(a.canonical, b.canonical);
    let c = parse(
        r#"{"type":"object","properties":{"a":{"type":"number"}}}"#,
        &[],
    )
    .unwrap();
    assert_ne!(a.canonical, c.canonical);
}

#[test]
fn invalid_schemas_are_refused_with_a_reason() {
    for (bad, why) in [
        ("{", "not valid JSON"),
        ("42", "object or a boolean"),
        (r#"{"type":"strin"}"#, "strin"),
        (r#"{"type":"object","required":"a"}"#, "required"),
        (r#"{"$ref":"other.json"}"#, "other.json"),
        (
            r#"{"$schema":"http://example.com/nope","type":"string"}"#,
            "unsupported $schema",
        ),
        (r#"{"minLength":-1}"#, "minLength"),
    ] {
        let err = match parse(bad, &[]) {
            Ok(_) => panic!("{bad} was accepted"),
            Err(e) => e,
        };
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn references_resolve_from_the_registered_schemas() {
    let address = r#"{"type":"object","properties":{"street":{"type":"string"}}}"#;
    let refs = vec![("address.json".to_string(), address.to_string())];
    let v1 = parse(
        r#"{"type":"object","properties":{"home":{"$ref":"address.json"}}}"#,
        &refs,
    )
    .unwrap();
    let changed = r#"{"type":"object","properties":{"street":{"type":"number"}}}"#;
    let refs2 = vec![("address.json".to_string(), changed.to_string())];
    let v2 = parse(
        r#"{"type":"object","properties":{"home":{"$ref":"address.json"}}}"#,
        &refs2,
    )
    .unwrap();
    let diffs: Vec<String> = incompatibilities(&v1, &v2)
        .expect("within budget")
        .iter()
        .map(|d| format!("{} {}", d.kind, d.path))
        .collect();
    assert_eq!(diffs, ["TYPE_CHANGED #/properties/home/properties/street"]);
}

#[test]
fn a_recursive_schema_is_compared_through_its_cycle() {
    // A tree whose children are trees (`$ref` to the document itself and through a definition); without the
    // cycle guards the loader never ends (the depth budget would then refuse it as too deep).
    let tree = |value: &str, extra: Value| {
        let mut props = json!({
            "value": {"type": value},
            "children": {"type": "array", "items": {"$ref": "#"}},
            "parent": {"$ref": "#/definitions/node"},
        });
        if let (Value::Object(p), Value::Object(e)) = (&mut props, extra) {
            p.extend(e);
        }
        json!({
            "type": "object",
            "properties": props,
            "definitions": {"node": {"type": "object", "properties": {"up": {"$ref": "#/definitions/node"}, "tree": {"$ref": "#"}}}},
        })
    };
    let v1 = p(&tree("integer", json!({})));
    // integer to number widens, and a property with the empty schema is accepted in an open model.
    let added = p(&tree("number", json!({"label": {}})));
    let changed = p(&tree("string", json!({})));
    assert!(incompatibilities(&v1, &added)
        .expect("within budget")
        .is_empty());
    let found: Vec<String> = incompatibilities(&v1, &changed)
        .expect("within budget")
        .iter()
        .map(|d| format!("{} {}", d.kind, d.path))
        .collect();
    assert!(
        found.contains(&"TYPE_CHANGED #/properties/value".to_string()),
        "{found:?}"
    );
}

/// Definitions A and C refer to each other (A.q is a C, C.p is an A); `bad` is A's one leaf.
fn a_and_c(bad: &str) -> Value {
    json!({
        "A": {"type": "object", "properties": {"q": {"$ref": "#/definitions/C"}, "bad": {"type": bad}}},
        "C": {"type": "object", "properties": {"p": {"$ref": "#/definitions/A"}}},
    })
}

#[test]
fn a_definition_reached_along_two_paths_is_compared_by_its_target_on_both() {
    // `second` reaches C directly, and C reaches A: A's leaf changed from string to integer, which must be
    // found below `second` too, however the loader first met C (inside A for `first` in the original).
    let v1 = json!({
        "type": "object",
        "properties": {"first": {"$ref": "#/definitions/A"}, "second": {"$ref": "#/definitions/C"}},
        "definitions": a_and_c("string"),
    });
    let v2 = json!({
        "type": "object",
        "properties": {
            "first": {"anyOf": [{"$ref": "#/definitions/A"}, {}]},
            "second": {"$ref": "#/definitions/C"},
        },
        "definitions": a_and_c("integer"),
    });
    let found: Vec<String> = incompatibilities(&p(&v1), &p(&v2))
        .expect("within budget")
        .iter()
        .map(|d| format!("{} {}", d.kind, d.path))
        .collect();
    assert!(
        found.contains(&"TYPE_CHANGED #/properties/second/properties/p/properties/bad".to_string()),
        "{found:?}"
    );
}

#[test]
fn definitions_met_in_another_order_are_still_the_same_schema() {
    // The update renames A to B (same text): the loader now meets C first through B, so C's reference to A
    // is no longer inside A's expansion. Nothing changed in meaning: no incompatibility.
    let v1 = json!({
        "type": "object",
        "properties": {"first": {"$ref": "#/definitions/A"}, "second": {"$ref": "#/definitions/C"}},
        "definitions": a_and_c("string"),
    });
    let mut defs = a_and_c("string");
    defs["B"] = defs["A"].clone();
    let v2 = json!({
        "type": "object",
        "properties": {"first": {"$ref": "#/definitions/B"}, "second": {"$ref": "#/definitions/C"}},
        "definitions": defs,
    });
    let found = incompatibilities(&p(&v1), &p(&v2)).expect("within budget");
    assert!(found.is_empty(), "{found:?}");
}
