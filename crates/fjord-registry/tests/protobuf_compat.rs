//! The Protobuf evolution table: each case is an original (old) and an update (new) `.proto` with the
//! differences Confluent's Protobuf provider reports (type and path) and whether it accepts the update as
//! BACKWARD compatible. The cases follow Confluent's protobuf-provider `diff-schema-examples.json` table (read
//! for its expectations, written out here), plus oneof and map cases.

use base64::Engine;
use fjord_registry::protobuf::{differences, incompatibilities, parse, ParsedProto};

struct Case {
    name: &'static str,
    original: &'static str,
    update: &'static str,
    changes: &'static [&'static str],
    compatible: bool,
}

fn p(text: &str) -> ParsedProto {
    parse(text, &[]).unwrap_or_else(|e| panic!("{text} does not compile: {e}"))
}

const NESTED: &str = r#"syntax = "proto3";
package foo;
message TestMessage {
    string test_string = 1;
    .foo.TestMessage.Status test_int = 2;
    message Status {
    string test_string = 1;
    }
}"#;

fn cases() -> Vec<Case> {
    let c = |name, original, update, changes, compatible| Case {
        name,
        original,
        update,
        changes,
        compatible,
    };
    vec![
        c("identical", NESTED, NESTED, &[], true),
        c(
            "package changed",
            NESTED,
            r#"syntax = "proto3";
package bar;
message TestMessage {
    string test_string = 1;
    .bar.TestMessage.Status test_int = 2;
    message Status {
    string test_string = 1;
    }
}"#,
            &["PACKAGE_CHANGED #/"],
            true,
        ),
        c(
            "name qualification changed",
            r#"syntax = "proto3";
package foo;
message TestMessage { string test_string = 1; Status test_int = 2; message Status { string test_string = 1; } }"#,
            NESTED,
            &[],
            true,
        ),
        c(
            "field added",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; string test_string2 = 2; }"#,
            &["FIELD_ADDED #/TestMessage/2"],
            true,
        ),
        c(
            "required field added",
            r#"syntax = "proto2"; message TestMessage { optional string test_string = 1; }"#,
            r#"syntax = "proto2"; message TestMessage { optional string test_string = 1; required string test_string2 = 2; }"#,
            &["REQUIRED_FIELD_ADDED #/TestMessage/2"],
            false,
        ),
        c(
            "field added to a nested type",
            r#"syntax = "proto3"; message Wrapper { int32 wrapperInt = 1; message TestMessage { string test_string = 1; } }"#,
            r#"syntax = "proto3"; message Wrapper { int32 wrapperInt = 1; message TestMessage { string test_string = 1; string test_string2 = 2; } }"#,
            &["FIELD_ADDED #/Wrapper/TestMessage/2"],
            true,
        ),
        c(
            "field removed",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; string test_string2 = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; }"#,
            &["FIELD_REMOVED #/TestMessage/2"],
            true,
        ),
        c(
            "required field removed",
            r#"syntax = "proto2"; message TestMessage { optional string test_string = 1; required string test_string2 = 2; }"#,
            r#"syntax = "proto2"; message TestMessage { optional string test_string = 1; }"#,
            &["REQUIRED_FIELD_REMOVED #/TestMessage/2"],
            false,
        ),
        c(
            "field number changed",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 2; }"#,
            &[
                "FIELD_REMOVED #/TestMessage/1",
                "FIELD_ADDED #/TestMessage/2",
            ],
            true,
        ),
        c(
            "int32 to int64 (one wire group)",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int32 test_int = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int64 test_int = 2; }"#,
            &[],
            true,
        ),
        c(
            "string to bytes",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; string test_string2 = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; bytes test_string2 = 2; }"#,
            &[],
            true,
        ),
        c(
            "int32 to an enum",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int32 test_int = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; Status test_int = 2; } enum Status { ACTIVE = 0; INACTIVE = 1; }"#,
            &["ENUM_ADDED #/Status"],
            true,
        ),
        c(
            "an enum to int32",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; Status test_int = 2; } enum Status { ACTIVE = 0; INACTIVE = 1; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int32 test_int = 2; }"#,
            &["ENUM_REMOVED #/Status"],
            true,
        ),
        c(
            "int32 to a message",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int32 test_int = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; .TestMessage.Status test_int = 2; message Status { string test_string = 1; } } enum Status { ACTIVE = 0; INACTIVE = 1; }"#,
            &[
                "FIELD_KIND_CHANGED #/TestMessage/2",
                "MESSAGE_ADDED #/TestMessage/Status",
                "ENUM_ADDED #/Status",
            ],
            false,
        ),
        c(
            "a message to int32",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; .TestMessage.Status test_int = 2; message Status { string test_string = 1; } } enum Status { ACTIVE = 0; INACTIVE = 1; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int32 test_int = 2; }"#,
            &[
                "FIELD_KIND_CHANGED #/TestMessage/2",
                "MESSAGE_REMOVED #/TestMessage/Status",
                "ENUM_REMOVED #/Status",
            ],
            false,
        ),
        c(
            "enum constant renamed",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; Status test_int = 2; } enum Status { ACTIVE = 0; INACTIVE = 1; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; Status test_int = 2; } enum Status { ACTIVE = 0; NOT_ACTIVE = 1; }"#,
            &["ENUM_CONST_CHANGED #/Status/1"],
            true,
        ),
        c(
            "one field moved into a new oneof",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; string test_string2 = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; oneof new_oneof { string test_string2 = 2; int32 other_id = 3; } }"#,
            &["ONEOF_ADDED #/TestMessage/new_oneof"],
            true,
        ),
        c(
            "several fields moved into a new oneof",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; string test_string2 = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { oneof new_oneof { string test_string = 1; string test_string2 = 2; int32 other_id = 3; } }"#,
            &[
                "MULTIPLE_FIELDS_MOVED_TO_ONEOF #/TestMessage/new_oneof",
                "ONEOF_ADDED #/TestMessage/new_oneof",
            ],
            false,
        ),
        c(
            "field added to a oneof",
            r#"syntax = "proto3"; message TestMessage { oneof new_oneof { string test_string = 1; string test_string2 = 2; } }"#,
            r#"syntax = "proto3"; message TestMessage { oneof new_oneof { string test_string = 1; string test_string2 = 2; int32 other_id = 3; } }"#,
            &["ONEOF_FIELD_ADDED #/TestMessage/new_oneof/3"],
            true,
        ),
        c(
            "field removed from a oneof",
            r#"syntax = "proto3"; message TestMessage { oneof new_oneof { string test_string = 1; string test_string2 = 2; int32 other_id = 3; } }"#,
            r#"syntax = "proto3"; message TestMessage { oneof new_oneof { string test_string = 1; string test_string2 = 2; } }"#,
            &["ONEOF_FIELD_REMOVED #/TestMessage/new_oneof/3"],
            false,
        ),
        c(
            "scalar field to a new message",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int32 test_int = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; TestMessage2 test_int = 2; } message TestMessage2 { string s1 = 1; }"#,
            &[
                "MESSAGE_ADDED #/TestMessage2",
                "FIELD_KIND_CHANGED #/TestMessage/2",
            ],
            false,
        ),
        c(
            "int32 to string, renamed",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; int32 test_int = 2; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; string test_string2 = 2; }"#,
            &[
                "FIELD_NAME_CHANGED #/TestMessage/2",
                "FIELD_SCALAR_KIND_CHANGED #/TestMessage/2",
            ],
            false,
        ),
        c(
            "message field to another message type",
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; TestMessage2 test_int = 2; } message TestMessage2 { string s1 = 1; }"#,
            r#"syntax = "proto3"; message TestMessage { string test_string = 1; TestMessage3 test_int = 2; } message TestMessage3 { string s1 = 1; }"#,
            &[
                "MESSAGE_REMOVED #/TestMessage2",
                "MESSAGE_ADDED #/TestMessage3",
                "FIELD_NAMED_TYPE_CHANGED #/TestMessage/2",
            ],
            false,
        ),
        c(
            "sint32 to int32 (zigzag to varint)",
            r#"syntax = "proto3"; message M { sint32 a = 1; }"#,
            r#"syntax = "proto3"; message M { int32 a = 1; }"#,
            &["FIELD_SCALAR_KIND_CHANGED #/M/1"],
            false,
        ),
        c(
            "fixed32 to sfixed32",
            r#"syntax = "proto3"; message M { fixed32 a = 1; }"#,
            r#"syntax = "proto3"; message M { sfixed32 a = 1; }"#,
            &[],
            true,
        ),
        c(
            "float to double",
            r#"syntax = "proto3"; message M { float a = 1; }"#,
            r#"syntax = "proto3"; message M { double a = 1; }"#,
            &["FIELD_SCALAR_KIND_CHANGED #/M/1"],
            false,
        ),
        c(
            "map value type changed",
            r#"syntax = "proto3"; message M { map<string, int32> a = 1; }"#,
            r#"syntax = "proto3"; message M { map<string, string> a = 1; }"#,
            &["FIELD_SCALAR_KIND_CHANGED #/M/1"],
            false,
        ),
        c(
            "map to a repeated string",
            r#"syntax = "proto3"; message M { map<string, int32> a = 1; }"#,
            r#"syntax = "proto3"; message M { repeated string a = 1; }"#,
            &["FIELD_KIND_CHANGED #/M/1"],
            false,
        ),
        c(
            "message removed",
            r#"syntax = "proto3"; message M { string a = 1; } message N { string b = 1; }"#,
            r#"syntax = "proto3"; message M { string a = 1; }"#,
            &["MESSAGE_REMOVED #/N"],
            false,
        ),
        c(
            "messages reordered",
            r#"syntax = "proto3"; message M { string a = 1; } message N { string b = 1; }"#,
            r#"syntax = "proto3"; message N { string b = 1; } message M { string a = 1; }"#,
            &["MESSAGE_MOVED #/M", "MESSAGE_MOVED #/N"],
            true,
        ),
        c(
            "a referenced message changed incompatibly",
            r#"syntax = "proto3"; message M { Inner i = 1; } message Inner { int32 x = 1; }"#,
            r#"syntax = "proto3"; message M { Inner i = 1; } message Inner { string x = 1; }"#,
            &[
                "FIELD_SCALAR_KIND_CHANGED #/Inner/1",
                "FIELD_SCALAR_KIND_CHANGED #/Inner/1",
                "FIELD_NAMED_TYPE_CHANGED #/M/1",
            ],
            false,
        ),
        // Labels (Confluent's FieldSchemaDiff): compared where both versions write one. A number changing
        // between singular and repeated (or optional and required) is incompatible, a string or bytes is not.
        c(
            "proto2 optional number made repeated",
            r#"syntax = "proto2"; message M { optional int32 n = 1; }"#,
            r#"syntax = "proto2"; message M { repeated int32 n = 1; }"#,
            &["FIELD_NUMERIC_LABEL_CHANGED #/M/1"],
            false,
        ),
        c(
            "proto2 repeated enum made optional",
            r#"syntax = "proto2"; enum E { A = 0; } message M { repeated E e = 1; }"#,
            r#"syntax = "proto2"; enum E { A = 0; } message M { optional E e = 1; }"#,
            &["FIELD_NUMERIC_LABEL_CHANGED #/M/1"],
            false,
        ),
        c(
            "proto2 required number made optional",
            r#"syntax = "proto2"; message M { required fixed64 n = 1; }"#,
            r#"syntax = "proto2"; message M { optional fixed64 n = 1; }"#,
            &["FIELD_NUMERIC_LABEL_CHANGED #/M/1"],
            false,
        ),
        c(
            "proto3 optional number made repeated",
            r#"syntax = "proto3"; message M { optional int64 n = 1; }"#,
            r#"syntax = "proto3"; message M { repeated int64 n = 1; }"#,
            &["FIELD_NUMERIC_LABEL_CHANGED #/M/1"],
            false,
        ),
        c(
            "proto3 number without a label made repeated (no label to compare, as in Confluent)",
            r#"syntax = "proto3"; message M { double n = 1; }"#,
            r#"syntax = "proto3"; message M { repeated double n = 1; }"#,
            &[],
            true,
        ),
        c(
            "proto2 optional string made repeated",
            r#"syntax = "proto2"; message M { optional string s = 1; }"#,
            r#"syntax = "proto2"; message M { repeated string s = 1; }"#,
            &["FIELD_STRING_OR_BYTES_LABEL_CHANGED #/M/1"],
            true,
        ),
        c(
            "proto2 map value type unchanged",
            r#"syntax = "proto2"; message M { map<string, int32> m = 1; }"#,
            r#"syntax = "proto2"; message M { map<string, int64> m = 1; }"#,
            &[],
            true,
        ),
    ]
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn every_protobuf_case_matches_confluents_differences_and_decision() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 30, "the table has {} cases", all.len());
    for c in &all {
        let (o, u) = (p(c.original), p(c.update));
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
fn the_canonical_text_ignores_layout_and_comments_and_compiles_to_the_same_descriptor() {
    let a = p(r#"syntax = "proto3";
// A comment.
package shop.v1;
import "google/protobuf/timestamp.proto";
option java_package = "com.shop";
message Order {
  string id = 1;
  repeated Line lines = 2 [deprecated = true];
  map<string, int64> counts = 3;
  optional int32 priority = 4;
  oneof payment { string card = 5; string iban = 6; }
  google.protobuf.Timestamp at = 7;
  reserved 9 to 11, 20;
  reserved "old";
  message Line { string sku = 1; uint32 qty = 2; }
  enum State { NEW = 0; PAID = 1; }
}
service Shop { rpc Place (Order) returns (stream Order); }
"#);
    let b = p(&a.canonical);
    assert_eq!(a.canonical, b.canonical, "printing is a fixed point");
    assert!(
        a.canonical.contains("map<string, int64> counts = 3;"),
        "{}",
        a.canonical
    );
    assert!(
        a.canonical.contains("optional int32 priority = 4;"),
        "{}",
        a.canonical
    );
    assert!(a.canonical.contains("oneof payment {"), "{}", a.canonical);
    assert!(!a.canonical.contains("comment"), "{}", a.canonical);
    assert!(differences(&a, &b).expect("within budget").is_empty());
    let c = p(
        r#"syntax="proto3";package shop.v1;import "google/protobuf/timestamp.proto";option java_package="com.shop";
message Order{string id=1;repeated Line lines=2[deprecated=true];map<string,int64> counts=3;optional int32 priority=4;
oneof payment{string card=5;string iban=6;}google.protobuf.Timestamp at=7;reserved 9 to 11,20;reserved "old";
message Line{string sku=1;uint32 qty=2;}enum State{NEW=0;PAID=1;}}
service Shop{rpc Place(Order)returns(stream Order);}"#,
    );
    assert_eq!(a.canonical, c.canonical);
}

#[test]
fn a_serialized_descriptor_parses_like_its_text() {
    let text = r#"syntax = "proto3"; package p; message M { string a = 1; repeated int32 b = 2; }"#;
    let a = p(text);
    let b = p(&a.serialized());
    assert!(b.from_descriptor && !a.from_descriptor);
    assert_eq!(a.canonical, b.canonical);
}

#[test]
fn invalid_schemas_are_refused_with_a_reason() {
    for (bad, why) in [
        ("message {", "expected"),
        (
            r#"syntax = "proto3"; message M { Missing m = 1; }"#,
            "Missing",
        ),
        (
            r#"syntax = "proto3"; import "other.proto"; message M { }"#,
            "other.proto",
        ),
        (
            r#"syntax = "proto3"; message M { string a = 1; int32 b = 1; }"#,
            "1",
        ),
    ] {
        let err = match parse(bad, &[]) {
            Ok(_) => panic!("{bad} was accepted"),
            Err(e) => e,
        };
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn imports_resolve_from_the_registered_references() {
    let money = r#"syntax = "proto3"; package common; message Money { int64 units = 1; string currency = 2; }"#;
    let refs = vec![("common/money.proto".to_string(), money.to_string())];
    let order = r#"syntax = "proto3"; package shop; import "common/money.proto"; message Order { common.Money total = 1; }"#;
    let v1 = parse(order, &refs).unwrap();
    let changed = r#"syntax = "proto3"; package common; message Money { string units = 1; string currency = 2; }"#;
    let refs2 = vec![("common/money.proto".to_string(), changed.to_string())];
    let v2 = parse(order, &refs2).unwrap();
    let kinds: Vec<&str> = incompatibilities(&v1, &v2)
        .expect("within budget")
        .iter()
        .map(|d| d.kind)
        .collect();
    assert!(kinds.contains(&"FIELD_NAMED_TYPE_CHANGED"), "{kinds:?}");
    assert!(parse(order, &[]).is_err(), "the import must be a reference");
}

#[test]
fn a_self_referencing_message_is_compared_through_its_cycle() {
    // Node refers to itself; without the walk's cycle guard this recursion never ends (the depth budget
    // would then refuse it as too deep).
    let v1 = p(
        r#"syntax = "proto3"; message Node { int64 v = 1; Node next = 2; repeated Node kids = 3; }"#,
    );
    let added = p(
        r#"syntax = "proto3"; message Node { int64 v = 1; Node next = 2; repeated Node kids = 3; string tag = 4; }"#,
    );
    let changed = p(
        r#"syntax = "proto3"; message Node { string v = 1; Node next = 2; repeated Node kids = 3; }"#,
    );
    assert_eq!(
        incompatibilities(&v1, &added).expect("within budget"),
        vec![],
        "a field added to a recursive message is compatible"
    );
    let kinds: Vec<String> = incompatibilities(&v1, &changed)
        .expect("within budget")
        .iter()
        .map(|d| format!("{} {}", d.kind, d.path))
        .collect();
    assert!(
        kinds.contains(&"FIELD_SCALAR_KIND_CHANGED #/Node/1".to_string()),
        "{kinds:?}"
    );
}

/// The base64 descriptor of `text` as a serializer would send it.
fn descriptor_of(text: &str) -> String {
    p(text).serialized()
}

#[test]
fn a_descriptor_the_proto_text_cannot_hold_is_refused_not_stored_lossily() {
    // The registry stores a descriptor as its printed .proto text, which has no extend blocks, groups or
    // every option: such a descriptor is refused with a reason instead of being stored (and identified) by
    // less than was sent.
    let cases = [
        (
            r#"syntax = "proto2"; message M { optional int32 a = 1; extensions 100 to 199; } extend M { optional int32 x = 100; }"#,
            "extensions",
        ),
        (
            r#"syntax = "proto2"; message M { optional group G = 1 { optional int32 a = 2; } }"#,
            "groups",
        ),
        (
            r#"syntax = "proto3"; option java_generic_services = true; message M { int32 a = 1; }"#,
            "options",
        ),
        (
            r#"syntax = "proto3"; message M { int32 a = 1 [lazy = true]; }"#,
            "options",
        ),
    ];
    for (text, why) in cases {
        let err = parse(&descriptor_of(text), &[])
            .err()
            .unwrap_or_else(|| panic!("{text}: a lossy descriptor was accepted"));
        assert!(
            err.contains(why) && err.contains("register the schema as .proto text"),
            "{text}: {err}"
        );
        // As text the schema registers, and keeps what the printer drops in its identity.
        let parsed = p(text);
        assert!(!parsed.lossless, "{text}");
        assert!(parsed.canonical.contains("// descriptor "), "{text}");
    }
    // Fields unknown to descriptor.proto (custom options) are dropped by decoding: refused as well.
    let plain = r#"syntax = "proto3"; message M { int32 a = 1; }"#;
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(descriptor_of(plain))
        .unwrap();
    bytes.extend([0x98, 0x06, 0x01]); // field 99, varint 1
    let err = parse(
        &base64::engine::general_purpose::STANDARD.encode(&bytes),
        &[],
    )
    .err()
    .expect("refused");
    assert!(err.contains("unknown"), "{err}");
    // A descriptor the text holds whole registers as before.
    let ok = parse(&descriptor_of(plain), &[]).expect("accepted");
    assert!(ok.lossless && ok.from_descriptor);
    assert_eq!(ok.canonical, ok.printed);
}

#[test]
fn schemas_that_differ_only_in_what_the_printer_drops_have_different_identities() {
    let a = p(
        r#"syntax = "proto2"; message M { optional int32 a = 1; extensions 100 to 199; } extend M { optional int32 x = 100; }"#,
    );
    let b = p(
        r#"syntax = "proto2"; message M { optional int32 a = 1; extensions 100 to 199; } extend M { optional string x = 100; }"#,
    );
    assert_eq!(a.printed, b.printed, "the printed text drops the extension");
    assert_ne!(a.canonical, b.canonical);
}
