//! The Avro evolution table: each case is an old and a new schema with what Confluent's registry decides for
//! BACKWARD (the new schema reads data written with the old) and FORWARD (the old reads the new); FULL is
//! both. Expectations follow Avro's schema resolution rules as Apache Avro's Java `SchemaCompatibility` (which
//! Confluent runs) applies them, and the cases of Confluent's `AvroCompatibilityTest` and Avro's
//! `TestSchemaCompatibility*` suites.

use fjord_registry::avro::{check, parse, IncompatibilityType};

fn rec(name: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","namespace":"com.example","fields":[{fields}]}}"#)
}

fn r(fields: &str) -> String {
    rec("myrecord", fields)
}

struct Case {
    name: &'static str,
    old: String,
    new: String,
    backward: bool,
    forward: bool,
}

fn case(name: &'static str, old: String, new: String, backward: bool, forward: bool) -> Case {
    Case {
        name,
        old,
        new,
        backward,
        forward,
    }
}

fn cases() -> Vec<Case> {
    let f1 = r#"{"name":"f1","type":"string"}"#;
    let enum_of = |syms: &str, default: Option<&str>| {
        let d = default.map_or(String::new(), |d| format!(r#","default":"{d}""#));
        r(&format!(
            r#"{{"name":"e","type":{{"type":"enum","name":"E","symbols":[{syms}]{d}}}}}"#
        ))
    };
    let field = |t: &str| r(&format!(r#"{{"name":"f","type":{t}}}"#));
    let nested = |inner: &str| {
        r(&format!(
            r#"{{"name":"inner","type":{}}}"#,
            rec("Inner", inner)
        ))
    };
    vec![
        case(
            "add field with default",
            r(f1),
            r(&format!(
                r#"{f1},{{"name":"f2","type":"string","default":"foo"}}"#
            )),
            true,
            true,
        ),
        case(
            "add field without default",
            r(f1),
            r(&format!(r#"{f1},{{"name":"f2","type":"string"}}"#)),
            false,
            true,
        ),
        case(
            "remove field with default",
            r(&format!(
                r#"{f1},{{"name":"f2","type":"string","default":"foo"}}"#
            )),
            r(f1),
            true,
            true,
        ),
        case(
            "remove field without default",
            r(&format!(r#"{f1},{{"name":"f2","type":"string"}}"#)),
            r(f1),
            true,
            false,
        ),
        case(
            "int to long",
            field(r#""int""#),
            field(r#""long""#),
            true,
            false,
        ),
        case(
            "long to int",
            field(r#""long""#),
            field(r#""int""#),
            false,
            true,
        ),
        case(
            "int to float",
            field(r#""int""#),
            field(r#""float""#),
            true,
            false,
        ),
        case(
            "long to double",
            field(r#""long""#),
            field(r#""double""#),
            true,
            false,
        ),
        case(
            "float to double",
            field(r#""float""#),
            field(r#""double""#),
            true,
            false,
        ),
        case(
            "double to float",
            field(r#""double""#),
            field(r#""float""#),
            false,
            true,
        ),
        case(
            "string to bytes",
            field(r#""string""#),
            field(r#""bytes""#),
            true,
            true,
        ),
        case(
            "bytes to string",
            field(r#""bytes""#),
            field(r#""string""#),
            true,
            true,
        ),
        case(
            "string to int",
            field(r#""string""#),
            field(r#""int""#),
            false,
            false,
        ),
        case(
            "boolean to int",
            field(r#""boolean""#),
            field(r#""int""#),
            false,
            false,
        ),
        case(
            "enum symbol added",
            enum_of(r#""A","B""#, None),
            enum_of(r#""A","B","C""#, None),
            true,
            false,
        ),
        case(
            "enum symbol removed",
            enum_of(r#""A","B","C""#, None),
            enum_of(r#""A","B""#, None),
            false,
            true,
        ),
        case(
            "enum symbol removed, new has a default",
            enum_of(r#""A","B","C""#, None),
            enum_of(r#""A","B""#, Some("A")),
            true,
            true,
        ),
        case(
            "enum symbol added, old has a default",
            enum_of(r#""A","B""#, Some("A")),
            enum_of(r#""A","B","C""#, None),
            true,
            true,
        ),
        case(
            "union widened",
            field(r#"["null","string"]"#),
            field(r#"["null","string","int"]"#),
            true,
            false,
        ),
        case(
            "union narrowed",
            field(r#"["null","string","int"]"#),
            field(r#"["null","string"]"#),
            false,
            true,
        ),
        case(
            "type to a union holding it",
            field(r#""string""#),
            field(r#"["null","string"]"#),
            true,
            false,
        ),
        case(
            "union to one of its types",
            field(r#"["null","string"]"#),
            field(r#""string""#),
            false,
            true,
        ),
        case(
            "union branch promoted",
            field(r#"["null","int"]"#),
            field(r#"["null","long"]"#),
            true,
            false,
        ),
        case(
            "required field made optional with default",
            r(&format!(r#"{f1},{{"name":"f2","type":"string"}}"#)),
            r(&format!(
                r#"{f1},{{"name":"f2","type":["null","string"],"default":null}}"#
            )),
            true,
            false,
        ),
        case(
            "field renamed with an alias",
            r(f1),
            r(r#"{"name":"f1_new","type":"string","aliases":["f1"]}"#),
            true,
            false,
        ),
        case(
            "field renamed without an alias",
            r(f1),
            r(r#"{"name":"f1_new","type":"string"}"#),
            false,
            false,
        ),
        case(
            "record renamed with an alias",
            rec("A", f1),
            format!(
                r#"{{"type":"record","name":"B","namespace":"com.example","aliases":["A"],"fields":[{f1}]}}"#
            ),
            true,
            false,
        ),
        case(
            "record renamed without an alias",
            rec("A", f1),
            rec("B", f1),
            false,
            false,
        ),
        case(
            "record namespace changed",
            rec("A", f1),
            format!(r#"{{"type":"record","name":"A","namespace":"org.other","fields":[{f1}]}}"#),
            true,
            true,
        ),
        case(
            "nested record gains a field without default",
            nested(r#"{"name":"a","type":"int"}"#),
            nested(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#),
            false,
            true,
        ),
        case(
            "nested record field promoted",
            nested(r#"{"name":"a","type":"int"}"#),
            nested(r#"{"name":"a","type":"long"}"#),
            true,
            false,
        ),
        case(
            "array items promoted",
            field(r#"{"type":"array","items":"int"}"#),
            field(r#"{"type":"array","items":"long"}"#),
            true,
            false,
        ),
        case(
            "map values narrowed",
            field(r#"{"type":"map","values":"long"}"#),
            field(r#"{"type":"map","values":"int"}"#),
            false,
            true,
        ),
        case(
            "array to map",
            field(r#"{"type":"array","items":"int"}"#),
            field(r#"{"type":"map","values":"int"}"#),
            false,
            false,
        ),
        case(
            "fixed size changed",
            field(r#"{"type":"fixed","name":"F","size":4}"#),
            field(r#"{"type":"fixed","name":"F","size":8}"#),
            false,
            false,
        ),
        case(
            "fixed unchanged",
            field(r#"{"type":"fixed","name":"F","size":4}"#),
            field(r#"{"type":"fixed","name":"F","size":4}"#),
            true,
            true,
        ),
        case(
            "fixed renamed",
            field(r#"{"type":"fixed","name":"F","size":4}"#),
            field(r#"{"type":"fixed","name":"G","size":4}"#),
            false,
            false,
        ),
        case(
            "enum renamed",
            enum_of(r#""A""#, None),
            r(r#"{"name":"e","type":{"type":"enum","name":"Other","symbols":["A"]}}"#),
            false,
            false,
        ),
        case(
            "logical type added over the same type",
            field(r#""int""#),
            field(r#"{"type":"int","logicalType":"date"}"#),
            true,
            true,
        ),
        case(
            "doc changed only",
            r(f1),
            r(r#"{"name":"f1","type":"string","doc":"the first field"}"#),
            true,
            true,
        ),
        case(
            "recursive schema gains an optional field",
            r(r#"{"name":"value","type":"int"},{"name":"next","type":["null","myrecord"]}"#),
            r(
                r#"{"name":"value","type":"int"},{"name":"next","type":["null","myrecord"]},{"name":"label","type":"string","default":""}"#,
            ),
            true,
            true,
        ),
        case(
            "whole schema string to bytes",
            r#""string""#.into(),
            r#""bytes""#.into(),
            true,
            true,
        ),
        case(
            "record in a union gains a field without default",
            field(&format!(
                r#"["null",{}]"#,
                rec("Inner", r#"{"name":"a","type":"int"}"#)
            )),
            field(&format!(
                r#"["null",{}]"#,
                rec(
                    "Inner",
                    r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#
                )
            )),
            false,
            true,
        ),
    ]
}

#[test]
fn every_evolution_case_matches_confluents_decision() {
    let cases = cases();
    assert!(cases.len() >= 30, "the table must hold at least 30 cases");
    let mut failures = Vec::new();
    for c in &cases {
        let old = parse(&c.old, &[]).unwrap_or_else(|e| panic!("{}: old: {e}", c.name));
        let new = parse(&c.new, &[]).unwrap_or_else(|e| panic!("{}: new: {e}", c.name));
        let backward = check(&new, &old).expect("within budget");
        let forward = check(&old, &new).expect("within budget");
        if backward.is_empty() != c.backward {
            failures.push(format!(
                "{}: BACKWARD expected {} got {:?}",
                c.name, c.backward, backward
            ));
        }
        if forward.is_empty() != c.forward {
            failures.push(format!(
                "{}: FORWARD expected {} got {:?}",
                c.name, c.forward, forward
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_incompatibility_is_reported_with_its_path() {
    let old = parse(&r(r#"{"name":"a","type":"int"}"#), &[]).unwrap();
    let new = parse(
        &r(r#"{"name":"a","type":"string"},{"name":"b","type":"int"},{"name":"c","type":"long"}"#),
        &[],
    )
    .unwrap();
    let found = check(&new, &old).expect("within budget");
    let kinds: Vec<(IncompatibilityType, &str)> = found
        .iter()
        .map(|i| (i.kind, i.location.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (IncompatibilityType::TypeMismatch, "/fields/0/type"),
            (
                IncompatibilityType::ReaderFieldMissingDefaultValue,
                "/fields/1"
            ),
            (
                IncompatibilityType::ReaderFieldMissingDefaultValue,
                "/fields/2"
            ),
        ]
    );
    assert_eq!(
        found[1].render(true),
        "{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', description:'The field 'b' at path '/fields/1' in the new schema has no default value and is missing in the old schema', additionalInfo:'b'}"
    );
}

#[test]
fn same_schema_written_differently_has_one_identity() {
    let a = parse(&r(r#"{"name":"f1","type":"string"}"#), &[]).unwrap();
    let b = parse(
        r#"{ "fields": [ {"type": "string", "name": "f1"} ], "name": "myrecord", "type": "record", "namespace": "com.example" }"#,
        &[],
    )
    .unwrap();
    assert_eq!(a.canonical, b.canonical);
    let with_default = parse(&r(r#"{"name":"f1","type":"string","default":"x"}"#), &[]).unwrap();
    assert_ne!(
        a.canonical, with_default.canonical,
        "a default changes the schema"
    );
    assert_eq!(
        a.parsing_canonical_form(),
        with_default.parsing_canonical_form()
    );
}

#[test]
fn invalid_schemas_are_refused() {
    for bad in [
        "",
        "{",
        r#"{"type":"record","name":"r"}"#,
        r#"{"type":"nosuchtype"}"#,
        r#"{"type":"record","name":"r","fields":[{"name":"a","type":"Unknown"}]}"#,
        r#"{"type":"enum","name":"e","symbols":["A","A"]}"#,
    ] {
        assert!(parse(bad, &[]).is_err(), "{bad} must not parse");
    }
}

#[test]
fn a_recursive_record_is_checked_through_its_cycle() {
    // A linked list refers to itself through a union; without the walk's cycle guard the check never ends
    // (the depth budget would then refuse it as too deep).
    let list = |value: &str, extra: &str| {
        format!(
            r#"{{"type":"record","name":"Node","fields":[{{"name":"value","type":"{value}"}},{{"name":"next","type":["null","Node"]}}{extra}]}}"#
        )
    };
    let v1 = parse(&list("int", ""), &[]).expect("parses");
    let with_default = parse(
        &list("int", r#",{"name":"tag","type":"string","default":""}"#),
        &[],
    )
    .expect("parses");
    let promoted = parse(&list("long", ""), &[]).expect("parses");
    let changed = parse(&list("string", ""), &[]).expect("parses");
    assert!(check(&with_default, &v1).expect("within budget").is_empty());
    assert!(check(&v1, &with_default).expect("within budget").is_empty());
    assert!(check(&promoted, &v1).expect("within budget").is_empty());
    let found = check(&changed, &v1).expect("within budget");
    assert!(
        found
            .iter()
            .any(|i| i.kind == IncompatibilityType::TypeMismatch && i.location == "/fields/0/type"),
        "{found:?}"
    );
}

#[test]
fn a_pair_that_leaned_on_an_unfinished_one_is_not_remembered_as_compatible() {
    // C refers back to A. Reading `a` tries the reader's union branches: the trial of A (its `bad` changed
    // from int to string) compares C while A is unfinished, then fails and is discarded. Field `c` then reads
    // C, whose `back` is the reader's A: incompatible there too. A walk that kept C's "compatible" from
    // inside the discarded trial reported nothing for `c`.
    let writer = r#"{"type":"record","name":"Root","fields":[
        {"name":"a","type":{"type":"record","name":"A","fields":[
            {"name":"q","type":{"type":"record","name":"C","fields":[{"name":"back","type":"A"}]}},
            {"name":"bad","type":"int"}]}},
        {"name":"c","type":"C"}]}"#;
    let reader = r#"{"type":"record","name":"Root","fields":[
        {"name":"a","type":[
            {"type":"record","name":"A","fields":[
                {"name":"q","type":{"type":"record","name":"C","fields":[{"name":"back","type":"A"}]}},
                {"name":"bad","type":"string"}]},
            {"type":"record","name":"A2","aliases":["A"],"fields":[
                {"name":"q","type":"C"},
                {"name":"bad","type":"int"}]}]},
        {"name":"c","type":"C"}]}"#;
    let (writer, reader) = (
        parse(writer, &[]).expect("parses"),
        parse(reader, &[]).expect("parses"),
    );
    let found = check(&reader, &writer).expect("within budget");
    assert!(
        found
            .iter()
            .any(|i| i.kind == IncompatibilityType::TypeMismatch && i.location == "/fields/1/type"),
        "{found:?}"
    );
}
