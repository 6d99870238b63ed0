//! Hostile schemas: a few kilobytes that make a naive compatibility walk exponential (a diamond of types, each
//! referring twice to the next), deep enough to overflow the stack (a chain of 2000 types), or wide
//! enough to compare millions of pairs (anyOf against anyOf), and deeply nested documents for the parsers.
//! Each runs on a thread with a 2 MiB stack (a tokio worker's) and must answer within a few seconds: a
//! compatible/incompatible answer for what is merely shared, 42201's "too deep/complex" for what exceeds the
//! walk's budget, never a hang, a stack overflow or a silent "compatible".

use std::time::Duration;

use fjord_registry::{avro, json, protobuf};

/// Runs `f` on a 2 MiB thread and waits at most 10 s for its answer.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(what.to_string())
        .stack_size(2 << 20)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what}: no answer within 10 s"))
}

// ---- JSON Schema ----------------------------------------------------------------------------------------

/// Definitions d0..d{levels}, each an object whose two properties refer to the next; the last is `leaf`.
fn json_ref_diamond(levels: usize, leaf: &str) -> String {
    let mut defs = Vec::new();
    for i in 0..levels {
        let next = format!("{{\"$ref\":\"#/definitions/d{}\"}}", i + 1);
        defs.push(format!(
            "\"d{i}\":{{\"type\":\"object\",\"properties\":{{\"a\":{next},\"b\":{next}}}}}"
        ));
    }
    defs.push(format!("\"d{levels}\":{{\"type\":\"{leaf}\"}}"));
    format!(
        "{{\"$ref\":\"#/definitions/d0\",\"definitions\":{{{}}}}}",
        defs.join(",")
    )
}

fn json_incompatibilities(old: String, new: String) -> Result<Vec<String>, String> {
    let old = json::parse(&old, &[]).map_err(|e| format!("old does not parse: {e}"))?;
    let new = json::parse(&new, &[]).map_err(|e| format!("new does not parse: {e}"))?;
    json::incompatibilities(&old, &new)
        .map(|ds| {
            ds.iter()
                .map(|d| format!("{} {}", d.kind, d.path))
                .collect()
        })
        .map_err(|e| e.to_string())
}

#[test]
fn a_json_schema_ref_diamond_is_compared_once_per_definition() {
    // 2^30 paths to the leaf, 31 definitions: answered from the memo, and the changed leaf is found.
    let found = within("json diamond", || {
        json_incompatibilities(
            json_ref_diamond(30, "string"),
            json_ref_diamond(30, "integer"),
        )
    })
    .expect("within budget");
    assert!(
        found.iter().any(|d| d.starts_with("TYPE_CHANGED")),
        "{found:?}"
    );
    let same = within("json diamond, unchanged", || {
        json_incompatibilities(
            json_ref_diamond(30, "string"),
            json_ref_diamond(30, "string"),
        )
    })
    .expect("within budget");
    assert!(same.is_empty(), "{same:?}");
}

#[test]
fn wide_any_of_pairs_exceed_the_walk_budget_and_are_refused() {
    // anyOf of 120 objects, each with an anyOf of 40: about 120^2 * 40^2 pairs for a naive walk.
    let wide = |leaf: &str| {
        let inner: Vec<String> = (0..40)
            .map(|j| format!("{{\"type\":\"{leaf}\",\"maxLength\":{j}}}"))
            .collect();
        let outer: Vec<String> = (0..120)
            .map(|i| {
                format!(
                    "{{\"type\":\"object\",\"properties\":{{\"p{i}\":{{\"anyOf\":[{}]}}}}}}",
                    inner.join(",")
                )
            })
            .collect();
        format!("{{\"anyOf\":[{}]}}", outer.join(","))
    };
    let err = within("wide anyOf", move || {
        json_incompatibilities(wide("string"), wide("integer"))
    })
    .expect_err("refused, never compatible");
    assert!(err.contains("too complex"), "{err}");
}

#[test]
fn a_json_schema_ref_chain_deeper_than_the_budget_is_refused_not_accepted() {
    // Each definition wraps the next: 200 levels of references (a silent "compatible" before).
    let chain = |leaf: &str| {
        let mut defs = Vec::new();
        for i in 0..200 {
            defs.push(format!(
                "\"d{i}\":{{\"type\":\"object\",\"properties\":{{\"x\":{{\"$ref\":\"#/definitions/d{}\"}}}}}}",
                i + 1
            ));
        }
        defs.push(format!("\"d200\":{{\"type\":\"{leaf}\"}}"));
        format!(
            "{{\"$ref\":\"#/definitions/d0\",\"definitions\":{{{}}}}}",
            defs.join(",")
        )
    };
    let err = within("json chain", move || {
        json_incompatibilities(chain("string"), chain("integer"))
    })
    .expect_err("refused, never compatible");
    assert!(err.contains("too deep"), "{err}");
}

#[test]
fn deeply_nested_json_documents_are_refused_by_the_parsers() {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let doc = format!("{{\"type\":\"array\",\"default\":{nested}}}");
    let (j, a) = within("nested JSON", move || {
        (json::parse(&doc, &[]).err(), avro::parse(&doc, &[]).err())
    });
    assert!(j.is_some_and(|e| e.contains("recursion limit")));
    assert!(a.is_some_and(|e| e.contains("recursion limit")));
    let items = format!(
        "{}\"int\"{}",
        "{\"type\":\"array\",\"items\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let err =
        within("nested Avro arrays", move || avro::parse(&items, &[]).err()).expect("refused");
    assert!(
        err.contains("recursion limit"),
        "{}",
        &err[err.len() - 200..]
    );
}

// ---- Avro -----------------------------------------------------------------------------------------------

/// Records R0..R{levels}, each with two fields of the next record (the second by name); the last holds `leaf`.
fn avro_diamond(levels: usize, leaf: &str) -> String {
    let mut s = format!("{{\"type\":\"record\",\"name\":\"R{levels}\",\"fields\":[{{\"name\":\"v\",\"type\":\"{leaf}\"}}]}}");
    for i in (0..levels).rev() {
        s = format!(
            "{{\"type\":\"record\",\"name\":\"R{i}\",\"fields\":[{{\"name\":\"a\",\"type\":{s}}},{{\"name\":\"b\",\"type\":\"R{}\"}}]}}",
            i + 1
        );
    }
    s
}

#[test]
fn an_avro_record_diamond_is_checked_once_per_pair() {
    let found = within("avro diamond", || {
        let old = avro::parse(&avro_diamond(40, "int"), &[]).expect("parses");
        let new = avro::parse(&avro_diamond(40, "string"), &[]).expect("parses");
        avro::check(&new, &old).map(|v| v.len())
    })
    .expect("within budget");
    assert!(found >= 1, "the changed leaf is found");
    let same = within("avro diamond, unchanged", || {
        let a = avro::parse(&avro_diamond(40, "int"), &[]).expect("parses");
        let b = avro::parse(&avro_diamond(40, "long"), &[]).expect("parses");
        avro::check(&b, &a).map(|v| v.len())
    })
    .expect("within budget");
    assert_eq!(same, 0, "int promotes to long");
}

// ---- Protobuf -------------------------------------------------------------------------------------------

fn proto_incompatibilities(old: String, new: String) -> Result<Vec<String>, String> {
    let old = protobuf::parse(&old, &[]).map_err(|e| format!("old does not compile: {e}"))?;
    let new = protobuf::parse(&new, &[]).map_err(|e| format!("new does not compile: {e}"))?;
    protobuf::incompatibilities(&old, &new)
        .map(|ds| {
            ds.iter()
                .map(|d| format!("{} {}", d.kind, d.path))
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// Messages M0..M{levels}, M{i} holding `per_level` fields of M{i+1}; the last holds a `leaf` field.
fn proto_graph(levels: usize, per_level: usize, leaf: &str) -> String {
    let mut s = String::from("syntax = \"proto3\";\n");
    for i in 0..levels {
        s.push_str(&format!("message M{i} {{"));
        for f in 1..=per_level {
            s.push_str(&format!(" M{} f{f} = {f};", i + 1));
        }
        s.push_str(" }\n");
    }
    s.push_str(&format!("message M{levels} {{ {leaf} v = 1; }}\n"));
    s
}

#[test]
fn a_protobuf_message_diamond_is_compared_once_per_pair() {
    let found = within("protobuf diamond", || {
        proto_incompatibilities(proto_graph(40, 2, "int64"), proto_graph(40, 2, "string"))
    })
    .expect("within budget");
    assert!(
        found
            .iter()
            .any(|d| d.starts_with("FIELD_SCALAR_KIND_CHANGED")),
        "{found:?}"
    );
}

#[test]
fn a_protobuf_message_chain_thousands_deep_is_refused_not_overflowed() {
    let err = within("protobuf chain", || {
        proto_incompatibilities(
            proto_graph(2000, 1, "int64"),
            proto_graph(2000, 1, "string"),
        )
    })
    .expect_err("refused, never compatible");
    assert!(err.contains("too deep"), "{err}");
}

#[test]
fn deeply_nested_protobuf_declarations_are_refused_by_the_parser() {
    let depth = 20_000;
    let text = format!(
        "syntax = \"proto3\";\n{}{}",
        "message A { ".repeat(depth),
        "}".repeat(depth)
    );
    let err =
        within("nested protobuf", move || protobuf::parse(&text, &[]).err()).expect("refused");
    assert!(
        err.contains("nest"),
        "{}",
        &err[err.len().saturating_sub(300)..]
    );
}

#[test]
fn a_deep_schema_over_a_large_leaf_is_compared_in_time_and_memory_linear_in_its_size() {
    // 120 nested `not`s over a 40,000-symbol enum: comparing the enums pairwise is quadratic, and a node
    // keeping its subtree's text would hold 120 copies of the enum.
    let schema = |last: &str| {
        let symbols: Vec<String> = (0..40_000).map(|i| format!("\"s{i}\"")).collect();
        let mut s = format!("{{\"enum\":[{},\"{last}\"]}}", symbols.join(","));
        for _ in 0..120 {
            s = format!("{{\"not\":{s}}}");
        }
        s
    };
    let found = within("deep over a large leaf", move || {
        json_incompatibilities(schema("a"), schema("b"))
    })
    .expect("within budget");
    assert!(!found.is_empty(), "the enum changed");
}

#[test]
fn an_avro_record_chain_thousands_deep_is_refused_not_overflowed() {
    // 2000 referenced records, each holding the next by name; the registered record holds the first: flat
    // JSON, a chain 2000 records deep, which apache-avro resolves recursively (on a thread of its own) and
    // the check refuses as too deep.
    let defs = |leaf: &str| {
        let mut defs = vec![format!(
            "{{\"type\":\"record\",\"name\":\"R2000\",\"fields\":[{{\"name\":\"v\",\"type\":\"{leaf}\"}}]}}"
        )];
        for i in (1..2000).rev() {
            defs.push(format!(
                "{{\"type\":\"record\",\"name\":\"R{i}\",\"fields\":[{{\"name\":\"next\",\"type\":\"R{}\"}}]}}",
                i + 1
            ));
        }
        defs
    };
    let root = r#"{"type":"record","name":"R0","fields":[{"name":"next","type":"R1"}]}"#;
    let err = within("avro chain", move || {
        let old = avro::parse(root, &defs("int")).expect("parses");
        let new = avro::parse(root, &defs("string")).expect("parses");
        avro::check(&new, &old)
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    })
    .expect_err("refused, never compatible");
    assert!(err.contains("too deep"), "{err}");
}

#[test]
fn the_deepest_documents_the_parsers_accept_are_parsed_and_compared_on_a_small_stack() {
    // serde_json stops at 128 levels; what it accepts must parse, print and compare on a 2 MiB stack.
    let json_deep = |leaf: &str| {
        let mut s = format!("{{\"type\":\"{leaf}\"}}");
        for _ in 0..62 {
            s = format!("{{\"type\":\"object\",\"properties\":{{\"a\":{s}}}}}");
        }
        s
    };
    let found = within("deep JSON Schema", move || {
        json_incompatibilities(json_deep("string"), json_deep("integer"))
    })
    .expect("within budget");
    assert_eq!(found.len(), 1, "{found:?}");
    let avro_deep = |leaf: &str| {
        let mut s = format!("\"{leaf}\"");
        for _ in 0..126 {
            s = format!("{{\"type\":\"array\",\"items\":{s}}}");
        }
        s
    };
    let found = within("deep Avro", move || {
        let old = avro::parse(&avro_deep("int"), &[]).expect("parses");
        let new = avro::parse(&avro_deep("string"), &[]).expect("parses");
        avro::check(&new, &old)
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    })
    .expect("within budget");
    assert_eq!(found, 1);
}

#[test]
fn building_a_large_schema_for_every_version_is_charged_to_the_requests_budget() {
    // 60,000 subschemas whose root type changes: each walk is one step, but each comparison builds both trees.
    let big = |t: &str| {
        let props: Vec<String> = (0..60_000)
            .map(|i| format!("\"p{i}\": {{\"type\": \"string\"}}"))
            .collect();
        format!(
            "{{\"type\": \"{t}\", \"properties\": {{{}}}}}",
            props.join(",")
        )
    };
    let (old, new) = (
        json::parse(&big("object"), &[]).unwrap(),
        json::parse(&big("array"), &[]).unwrap(),
    );
    let budget = fjord_registry::diff::Budget::default();
    // As a FULL_TRANSITIVE check against 10 versions would: both directions per version, one shared budget.
    let refused = (0..20).any(|_| json::differences_within(&old, &new, &budget).is_err());
    assert!(
        refused,
        "20 comparisons of 120,000 built nodes each all fit the request's budget"
    );
}

#[test]
fn a_new_schema_compared_with_many_versions_is_built_once_per_request() {
    // The new schema is large (60,000 subschemas); each old version small and of another root type, so each
    // walk is one step: what costs is building the new schema's nodes, which a request now does once.
    let props: Vec<String> = (0..60_000)
        .map(|i| format!("\"p{i}\": {{\"type\": \"string\"}}"))
        .collect();
    let new = format!(
        "{{\"type\": \"object\", \"properties\": {{{}}}}}",
        props.join(",")
    );
    let new = fjord_registry::formats::ParsedSchema::Json(json::parse(&new, &[]).unwrap());
    let old = fjord_registry::formats::ParsedSchema::Json(
        json::parse(r#"{"type": "array"}"#, &[]).unwrap(),
    );
    let budget = fjord_registry::diff::Budget::default();
    // As a FULL_TRANSITIVE check against 20 versions: both directions per version, one budget.
    let prepared = fjord_registry::formats::Prepared::new(&new);
    for v in 0..20 {
        let found = prepared
            .incompatibilities(&old, true, true, &budget)
            .unwrap_or_else(|e| panic!("version {v}: {e}"));
        assert!(!found.is_empty(), "a changed root type is incompatible");
    }
    // Built for every comparison (what the request did before), the same work passes the request's budget.
    let budget = fjord_registry::diff::Budget::default();
    let refused = (0..20).any(|_| {
        fjord_registry::formats::ParsedSchema::incompatibilities(&new, &old, true, true, &budget)
            .is_err()
    });
    assert!(refused, "40 builds of 60,000 nodes fit the budget");
}
