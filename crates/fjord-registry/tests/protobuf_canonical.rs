//! The canonical `.proto` text of Protobuf schemas (the registry's identity of a schema, the stored form with
//! `normalize=true`, the text a schema sent as a descriptor is stored as): pinned for schemas without custom
//! options, so that the ids and identities of stored schemas stay what they were; and custom options (Confluent's
//! `(confluent.field_meta)` and others) kept in it.

use base64::Engine;
use fjord_registry::protobuf::{compile_schema, parse, ParsedProto};
use prost_reflect::prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage as _, Value};

fn p(text: &str) -> ParsedProto {
    parse(text, &[]).unwrap_or_else(|e| panic!("{text} does not compile: {e}"))
}

/// Schemas without custom options, with every construct the printer prints.
const PINNED: &[&str] = &[
    r#"syntax = "proto3";
package shop.v1;
import "google/protobuf/timestamp.proto";
option java_package = "com.example.shop";
option java_multiple_files = true;
option go_package = "example.com/shop";
option optimize_for = CODE_SIZE;
message Order {
  option deprecated = true;
  string id = 1 [json_name = "orderId"];
  google.protobuf.Timestamp at = 2;
  map<string, int64> counts = 3;
  repeated int32 codes = 4 [packed = false];
  optional string note = 5 [deprecated = true];
  oneof payment { string card = 6; bytes token = 7; }
  reserved 8, 10 to 12, 100 to max;
  reserved "old", "older";
  Status status = 13;
  message Line { string sku = 1; uint32 qty = 2; Order.Status s = 3; }
  repeated Line lines = 14;
  enum Status { option allow_alias = true; UNKNOWN = 0; NEW = 1; FRESH = 1; reserved 5, 7 to 9; reserved "GONE"; }
}
enum Kind { KIND_UNSPECIFIED = 0; BIG = 1; }
service Shop { rpc Put (Order) returns (Order); rpc Watch (stream Order) returns (stream Order); }
"#,
    r#"syntax = "proto2";
package legacy;
message Item {
  required string name = 1;
  optional int32 count = 2 [default = 7];
  optional string label = 3 [default = "a \"b\"\n"];
  optional double ratio = 4 [default = 0.5];
  optional Color color = 5 [default = RED];
  repeated sint64 deltas = 6 [packed = true];
  extensions 100 to 199;
  enum Color { RED = 1; BLUE = 2; }
}
"#,
    "syntax = \"proto3\";\nmessage M { int32 a = 1; }\n",
];

/// The canonical text of each [`PINNED`] schema as it was before custom options were printed.
const PINNED_CANONICAL: &[&str] = &[
    "syntax = \"proto3\";\npackage shop.v1;\n\nimport \"google/protobuf/timestamp.proto\";\n\noption java_package = \"com.example.shop\";\noption go_package = \"example.com/shop\";\noption java_multiple_files = true;\noption optimize_for = CODE_SIZE;\n\nmessage Order {\n  option deprecated = true;\n  string id = 1 [json_name = \"orderId\"];\n  .google.protobuf.Timestamp at = 2;\n  map<string, int64> counts = 3;\n  repeated int32 codes = 4 [packed = false];\n  optional string note = 5 [deprecated = true];\n  oneof payment {\n    string card = 6;\n    bytes token = 7;\n  }\n  .shop.v1.Order.Status status = 13;\n  repeated .shop.v1.Order.Line lines = 14;\n  reserved 8, 10 to 12, 100 to max;\n  reserved \"old\", \"older\";\n  message Line {\n    string sku = 1;\n    uint32 qty = 2;\n    .shop.v1.Order.Status s = 3;\n  }\n  enum Status {\n    option allow_alias = true;\n    UNKNOWN = 0;\n    NEW = 1;\n    FRESH = 1;\n    reserved 5, 7 to 9;\n    reserved \"GONE\";\n  }\n}\n\nenum Kind {\n  KIND_UNSPECIFIED = 0;\n  BIG = 1;\n}\n\nservice Shop {\n  rpc Put (.shop.v1.Order) returns (.shop.v1.Order);\n  rpc Watch (stream .shop.v1.Order) returns (stream .shop.v1.Order);\n}\n",
    "syntax = \"proto2\";\npackage legacy;\n\nmessage Item {\n  required string name = 1;\n  optional int32 count = 2 [default = 7];\n  optional string label = 3 [default = \"a \\\"b\\\"\\n\"];\n  optional double ratio = 4 [default = 0.5];\n  optional .legacy.Item.Color color = 5 [default = RED];\n  repeated sint64 deltas = 6 [packed = true];\n  extensions 100 to 199;\n  enum Color {\n    RED = 1;\n    BLUE = 2;\n  }\n}\n",
    "syntax = \"proto3\";\n\nmessage M {\n  int32 a = 1;\n}\n",
];

#[test]
fn the_canonical_text_of_schemas_without_custom_options_is_unchanged() {
    for (text, expected) in PINNED.iter().zip(PINNED_CANONICAL) {
        let parsed = p(text);
        assert_eq!(parsed.canonical, *expected, "{text}");
        assert!(parsed.lossless, "{text}");
        assert_eq!(parsed.canonical, parsed.printed, "{text}");
    }
    assert_eq!(PINNED.len(), PINNED_CANONICAL.len());
}

/// A Connect decimal as Fjord's and Confluent's Protobuf converters write it, at `scale`.
fn decimal(scale: u32) -> String {
    format!(
        "syntax = \"proto3\";\npackage shop;\nimport \"confluent/meta.proto\";\nimport \"confluent/type/decimal.proto\";\n\
         message Price {{\n  confluent.type.Decimal amount = 1 [(confluent.field_meta) = {{params: [{{key: \"precision\", value: \"10\"}}, {{key: \"scale\", value: \"{scale}\"}}]}}];\n  int32 small = 2 [(confluent.field_meta) = {{params: [{{key: \"connect.type\", value: \"int8\"}}]}}];\n}}\n"
    )
}

#[test]
fn a_fields_custom_options_are_in_the_canonical_text() {
    let two = p(&decimal(2));
    assert!(two.lossless, "{}", two.canonical);
    assert_eq!(
        two.canonical,
        "syntax = \"proto3\";\npackage shop;\n\nimport \"confluent/meta.proto\";\nimport \"confluent/type/decimal.proto\";\n\n\
         message Price {\n  .confluent.type.Decimal amount = 1 [(.confluent.field_meta) = {params: [{key: \"precision\", value: \"10\"}, {key: \"scale\", value: \"2\"}]}];\n  int32 small = 2 [(.confluent.field_meta) = {params: [{key: \"connect.type\", value: \"int8\"}]}];\n}\n"
    );
    // Only the scale differs: another schema.
    let three = p(&decimal(3));
    assert_ne!(two.canonical, three.canonical);
    // The same schema in another layout (and its map entries in another order): the same text.
    let relaid = decimal(2)
        .replace(
            "{key: \"precision\", value: \"10\"}, {key: \"scale\", value: \"2\"}",
            "{ value: \"2\" key: \"scale\" }, { key: \"precision\"; value: \"10\" }",
        )
        .replace('\n', "\n\n  ");
    assert_ne!(relaid, decimal(2));
    assert_eq!(p(&relaid).canonical, two.canonical);
    // The canonical text compiles to the same canonical text.
    assert_eq!(p(&two.canonical).canonical, two.canonical);
}

/// Options declared in an imported file, on every kind of element.
const OPTS: &str = r#"syntax = "proto2";
package ext;
import "google/protobuf/descriptor.proto";
enum Level { LOW = 0; HIGH = 1; }
message Tag { optional string name = 1; repeated int32 nums = 2; optional Level level = 3; optional bytes raw = 4; optional double ratio = 5; }
extend google.protobuf.FileOptions { optional string owner = 50001; }
extend google.protobuf.MessageOptions { optional Tag msg_tag = 50002; }
extend google.protobuf.FieldOptions { repeated string labels = 50003; optional Level field_level = 50004; }
extend google.protobuf.OneofOptions { optional bool oneof_flag = 50005; }
extend google.protobuf.EnumOptions { optional int64 enum_num = 50006; }
extend google.protobuf.EnumValueOptions { optional float value_weight = 50007; }
extend google.protobuf.ServiceOptions { optional uint32 service_ver = 50008; }
extend google.protobuf.MethodOptions { optional sint32 method_cost = 50009; }
extend google.protobuf.ExtensionRangeOptions { optional bool range_flag = 50010; }
extend google.protobuf.FieldOptions { repeated int32 a_rather_long_option_name_of_many_numbers = 50011 [packed = true]; }
extend google.protobuf.FileOptions { optional double file_ratio = 50012; optional float file_weight = 50013; optional bytes file_raw = 50014; }
"#;

const WITH_OPTIONS: &str = r#"syntax = "proto3";
package shop;
import "opts.proto";
option (ext.owner) = "team-a";
message Order {
  option (ext.msg_tag) = { name: "o" nums: [1, 2] level: HIGH raw: "\001z" ratio: 0.25 };
  string id = 1 [(ext.labels) = "b", (ext.labels) = "a", (ext.field_level) = HIGH, deprecated = true];
  oneof pay { option (ext.oneof_flag) = true; string card = 2; }
  enum State { option (ext.enum_num) = -7; NEW = 0 [(ext.value_weight) = 1.5]; }
}
service Orders { option (ext.service_ver) = 3; rpc Put (Order) returns (Order) { option (ext.method_cost) = -2; } }
"#;

fn with_opts(text: &str) -> ParsedProto {
    parse(text, &[("opts.proto".to_string(), OPTS.to_string())])
        .unwrap_or_else(|e| panic!("{text} does not compile: {e}"))
}

#[test]
fn custom_options_of_every_element_are_printed_and_compile_back() {
    let parsed = with_opts(WITH_OPTIONS);
    assert!(parsed.lossless, "{}", parsed.canonical);
    assert_eq!(
        parsed.canonical,
        r#"syntax = "proto3";
package shop;

import "opts.proto";

option (.ext.owner) = "team-a";

message Order {
  option (.ext.msg_tag) = {name: "o", nums: [1, 2], level: HIGH, raw: "\001z", ratio: 0.25};
  string id = 1 [deprecated = true, (.ext.field_level) = HIGH, (.ext.labels) = "b", (.ext.labels) = "a"];
  oneof pay {
    option (.ext.oneof_flag) = true;
    string card = 2;
  }
  enum State {
    option (.ext.enum_num) = -7;
    NEW = 0 [(.ext.value_weight) = 1.5];
  }
}

service Orders {
  option (.ext.service_ver) = 3;
  rpc Put (.shop.Order) returns (.shop.Order) {
    option (.ext.method_cost) = -2;
  }
}
"#
    );
    assert_eq!(with_opts(&parsed.canonical).canonical, parsed.canonical);
    // Each option's value counts.
    for (from, to) in [
        ("\"team-a\"", "\"team-b\""),
        ("nums: [1, 2]", "nums: [2, 1]"),
        (
            "(ext.labels) = \"b\", (ext.labels) = \"a\"",
            "(ext.labels) = \"a\", (ext.labels) = \"b\"",
        ),
        ("oneof_flag) = true", "oneof_flag) = false"),
        ("-7", "7"),
        ("1.5", "2.5"),
        ("service_ver) = 3", "service_ver) = 4"),
        ("-2", "2"),
    ] {
        let changed = WITH_OPTIONS.replace(from, to);
        assert_ne!(changed, WITH_OPTIONS, "{from}");
        assert_ne!(
            with_opts(&changed).canonical,
            parsed.canonical,
            "{from} -> {to}"
        );
    }
}

/// `text` compiled and encoded as a serializer sends it: a `FileDescriptorProto` named `name`, with its
/// custom options (prost-reflect encodes the options as compiled).
fn descriptor_bytes(text: &str, name: &str) -> Vec<u8> {
    let compiled = compile_schema(text, &[]).unwrap();
    let file = compiled.pool.get_file_by_name(&compiled.file_name).unwrap();
    let mut m = descriptor_message(&file.encode_to_vec());
    m.set_field_by_name("name", Value::String(name.to_string()));
    m.encode_to_vec()
}

/// `bytes` as a message of descriptor.proto (custom options kept as unknown fields).
fn descriptor_message(bytes: &[u8]) -> DynamicMessage {
    let desc = DescriptorPool::global()
        .get_message_by_name("google.protobuf.FileDescriptorProto")
        .unwrap();
    DynamicMessage::decode(desc, bytes).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_serialized_descriptor_with_custom_options_registers_as_its_text_would() {
    let text = p(&decimal(2));
    let bytes = descriptor_bytes(&decimal(2), "price.proto");
    assert!(
        descriptor_message(&bytes).unknown_fields().next().is_none(),
        "the options are inside the options messages"
    );
    let sent = p(&b64(&bytes));
    assert!(sent.from_descriptor && sent.lossless);
    assert_eq!(sent.canonical, text.canonical);
    assert_eq!(
        sent.printed, text.canonical,
        "stored as the text with its options"
    );
    // Another scale sent as a descriptor: another schema.
    let other = p(&b64(&descriptor_bytes(&decimal(3), "price.proto")));
    assert_ne!(other.canonical, sent.canonical);
    // The serialized answer keeps the options, and reads back as the same schema.
    let answered = text.serialized();
    assert_eq!(p(&answered).canonical, text.canonical);
    assert_eq!(p(&sent.serialized()).canonical, text.canonical);
    // Options of an extension no import declares cannot be printed: still refused, saying why.
    let mut orphan = descriptor_message(&descriptor_bytes(
        "syntax = \"proto3\";\nimport \"confluent/meta.proto\";\nmessage M {\n  int32 a = 1 [(confluent.field_meta) = {doc: \"x\"}];\n}\n",
        "m.proto",
    ));
    orphan.clear_field_by_name("dependency");
    let err = parse(&b64(&orphan.encode_to_vec()), &[])
        .err()
        .expect("refused");
    assert!(err.contains("unknown to the registry"), "{err}");
}

#[test]
fn a_descriptor_whose_custom_option_does_not_decode_is_refused_never_a_panic() {
    // (confluent.field_meta) is a message (length-delimited); here it is sent as a varint.
    let mut file = descriptor_message(&descriptor_bytes(
        "syntax = \"proto3\";\nimport \"confluent/meta.proto\";\nmessage M {\n  int32 a = 1;\n}\n",
        "m.proto",
    ));
    let pool = DescriptorPool::global();
    let options = DynamicMessage::decode(
        pool.get_message_by_name("google.protobuf.FieldOptions")
            .unwrap(),
        [0x80u8, 0x44, 0x05].as_slice(),
    )
    .unwrap();
    let Value::List(messages) = file.get_field_by_name_mut("message_type").unwrap() else {
        panic!("message_type is a list");
    };
    let Value::Message(m) = &mut messages[0] else {
        panic!("a message");
    };
    let Value::List(fields) = m.get_field_by_name_mut("field").unwrap() else {
        panic!("field is a list");
    };
    let Value::Message(f) = &mut fields[0] else {
        panic!("a field");
    };
    f.set_field_by_name("options", Value::Message(options));
    let result = parse(&b64(&file.encode_to_vec()), &[]);
    let err = result.err().expect("refused");
    assert!(err.contains("decode"), "{err}");
}

#[test]
fn options_of_an_extension_declared_in_the_schema_itself_count_too() {
    // The text cannot hold the extend block, so the identity is the text plus the whole descriptor; the
    // option's value is in the text.
    let schema = |v: u32| {
        format!(
            "syntax = \"proto2\";\npackage own;\nimport \"google/protobuf/descriptor.proto\";\n\
             extend google.protobuf.FieldOptions {{ optional uint32 width = 50100; }}\n\
             message M {{ optional int32 a = 1 [(width) = {v}]; }}\n"
        )
    };
    let (one, two) = (p(&schema(1)), p(&schema(2)));
    assert!(!one.lossless);
    assert!(
        one.canonical.contains("[(.own.width) = 1]"),
        "{}",
        one.canonical
    );
    assert_ne!(one.canonical, two.canonical);
    assert_eq!(p(&schema(1)).canonical, one.canonical);
}

fn opts_refs() -> Vec<(String, String)> {
    vec![("opts.proto".to_string(), OPTS.to_string())]
}

/// `text` (importing `opts.proto`) compiled and encoded as a serializer sends it, as a message of
/// descriptor.proto.
fn descriptor_with_opts(text: &str) -> DynamicMessage {
    let compiled = compile_schema(text, &opts_refs()).unwrap();
    let file = compiled.pool.get_file_by_name(&compiled.file_name).unwrap();
    descriptor_message(&file.encode_to_vec())
}

/// The message at `path` ((list field name, index) steps) inside `m`.
fn at<'a>(m: &'a mut DynamicMessage, path: &[(&str, usize)]) -> &'a mut DynamicMessage {
    let mut m = m;
    for (field, i) in path {
        let Value::List(items) = m.get_field_by_name_mut(field).unwrap() else {
            panic!("{field} is a list");
        };
        let Value::Message(n) = &mut items[*i] else {
            panic!("{field} holds messages");
        };
        m = n;
    }
    m
}

fn options_of(m: &mut DynamicMessage, path: &[(&str, usize)]) -> Value {
    at(m, path)
        .get_field_by_name("options")
        .unwrap()
        .into_owned()
}

#[test]
fn options_the_printer_cannot_print_are_refused_in_a_descriptor_and_count_in_a_texts_identity() {
    // Options on a map entry's key field and on a proto3 `optional`'s synthetic oneof (which no text can
    // write), copied from elements that have them.
    let text = "syntax = \"proto3\";\npackage t;\nimport \"opts.proto\";\n\
                message M {\n  map<string, int32> counts = 1;\n  optional string note = 2;\n  string id = 3 [(ext.field_level) = HIGH];\n  oneof pay { option (ext.oneof_flag) = true; string card = 4; }\n}\n";
    let plain = descriptor_with_opts(text);
    assert!(parse(&b64(&plain.encode_to_vec()), &opts_refs()).is_ok());
    let mut map_key = plain.clone();
    let field_options = options_of(&mut map_key, &[("message_type", 0), ("field", 2)]);
    at(
        &mut map_key,
        &[("message_type", 0), ("nested_type", 0), ("field", 0)],
    )
    .set_field_by_name("options", field_options.clone());
    let mut map_entry = plain.clone();
    // map_entry = true plus a field MessageOptions does not have (50004, a varint): an unknown field.
    let Value::Message(entry_options) =
        options_of(&mut map_entry, &[("message_type", 0), ("nested_type", 0)])
    else {
        panic!("options are a message");
    };
    let mut bytes = entry_options.encode_to_vec();
    bytes.extend([0xa0, 0xb5, 0x18, 0x01]);
    let entry_options =
        DynamicMessage::decode(entry_options.descriptor(), bytes.as_slice()).unwrap();
    at(&mut map_entry, &[("message_type", 0), ("nested_type", 0)])
        .set_field_by_name("options", Value::Message(entry_options));
    let mut synthetic = plain.clone();
    let oneof_options = options_of(&mut synthetic, &[("message_type", 0), ("oneof_decl", 0)]);
    let names: Vec<String> = (0..2)
        .map(|i| {
            at(&mut synthetic, &[("message_type", 0), ("oneof_decl", i)])
                .get_field_by_name("name")
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let note = names.iter().position(|n| n == "_note").unwrap();
    at(&mut synthetic, &[("message_type", 0), ("oneof_decl", note)])
        .set_field_by_name("options", oneof_options);
    for (what, d) in [
        ("map key", map_key),
        ("map entry", map_entry),
        ("synthetic oneof", synthetic),
    ] {
        let err = parse(&b64(&d.encode_to_vec()), &opts_refs())
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(err.contains("cannot store"), "{what}: {err}");
    }
    // Extension ranges' options (text can write them, the printer does not print them).
    let ranges = |flag: bool| {
        format!(
            "syntax = \"proto2\";\npackage t;\nimport \"opts.proto\";\n\
             message M {{\n  optional int32 a = 1;\n  extensions 100 to 199 [(ext.range_flag) = {flag}];\n}}\n"
        )
    };
    let refs = opts_refs();
    let (yes, no) = (
        parse(&ranges(true), &refs).unwrap(),
        parse(&ranges(false), &refs).unwrap(),
    );
    assert!(!yes.lossless);
    assert_ne!(yes.canonical, no.canonical);
    assert_eq!(
        parse(&ranges(true), &refs).unwrap().canonical,
        yes.canonical
    );
    let err = parse(
        &b64(&descriptor_with_opts(&ranges(true)).encode_to_vec()),
        &refs,
    )
    .err()
    .expect("a descriptor with extension range options is refused");
    assert!(err.contains("cannot store"), "{err}");
}

#[test]
fn float_options_print_as_floats_that_read_back() {
    let refs = opts_refs();
    // `top` after `option (x) =` (where the compiler reads no `inf` or `nan`), `v` in a message value.
    let schema = |top: &str, v: &str| {
        format!(
            "syntax = \"proto3\";\npackage t;\nimport \"opts.proto\";\noption (ext.file_ratio) = {top};\noption (ext.file_weight) = {top};\n\
             message M {{ option (ext.msg_tag) = {{ratio: {v}}}; int32 a = 1; }}\n"
        )
    };
    let values = [
        ("1e20", "1e20"),
        ("-1e20", "-1e20"),
        ("1e-20", "1e-20"),
        ("-0.0", "-0.0"),
        ("0.0", "0.0"),
        ("1.0", "1.0"),
        ("0.1", "0.1"),
        ("1e999", "inf"),
        ("-1e999", "-inf"),
        ("1", "nan"),
        ("123456789", "123456789"),
    ];
    let mut canonicals = Vec::new();
    for (top, v) in values {
        let parsed = parse(&schema(top, v), &refs).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(parsed.lossless, "{v}: {}", parsed.canonical);
        let again = parse(&parsed.canonical, &refs).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(again.canonical, parsed.canonical, "{v}");
        // The same value as a serialized descriptor: the same text.
        let d = descriptor_with_opts(&schema(top, v));
        let sent = parse(&b64(&d.encode_to_vec()), &refs).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(sent.canonical, parsed.canonical, "{v}");
        canonicals.push(parsed.canonical);
    }
    // Each value is another schema (-0.0 and 0.0 included).
    let distinct: std::collections::HashSet<_> = canonicals.iter().collect();
    assert_eq!(distinct.len(), values.len(), "{canonicals:#?}");
    // A NaN option value outside a message value: no text can hold it.
    let mut d = descriptor_with_opts(&schema("1", "1"));
    let desc = DescriptorPool::global()
        .get_message_by_name("google.protobuf.FileOptions")
        .unwrap();
    let mut bytes = vec![0xe1u8, 0xb5, 0x18]; // 50012, fixed64
    bytes.extend(f64::NAN.to_le_bytes());
    d.set_field_by_name(
        "options",
        Value::Message(DynamicMessage::decode(desc, bytes.as_slice()).unwrap()),
    );
    let err = parse(&b64(&d.encode_to_vec()), &refs)
        .err()
        .expect("refused");
    assert!(err.contains("cannot store"), "{err}");
}

#[test]
fn option_names_are_fully_qualified_so_that_nothing_in_the_schema_shadows_them() {
    for text in [
        "syntax = \"proto3\";\npackage acme.confluent;\nimport \"confluent/meta.proto\";\nmessage M {\n  int32 a = 1 [(.confluent.field_meta) = {doc: \"x\"}];\n}\n",
        "syntax = \"proto3\";\npackage acme;\nimport \"confluent/meta.proto\";\nmessage confluent { int32 b = 1; }\nmessage M {\n  int32 a = 1 [(.confluent.field_meta) = {doc: \"x\"}];\n}\n",
    ] {
        let parsed = p(text);
        assert!(parsed.lossless, "{}", parsed.canonical);
        assert!(
            parsed.canonical.contains("[(.confluent.field_meta) = {doc: \"x\"}]"),
            "{}",
            parsed.canonical
        );
        assert_eq!(p(&parsed.canonical).canonical, parsed.canonical);
    }
}

#[test]
fn a_descriptor_whose_options_print_far_larger_than_it_is_refused() {
    // 400,000 packed zeros: 400 KB on the wire, each `(.ext.a_rather_long_option_name_of_many_numbers) = 0`
    // (58 bytes) in the text.
    let mut d = descriptor_with_opts(
        "syntax = \"proto3\";\npackage t;\nimport \"opts.proto\";\nmessage M {\n  int32 a = 1;\n}\n",
    );
    let n = 400_000usize;
    let mut bytes = vec![0xdau8, 0xb5, 0x18]; // field 50011, length-delimited
    let mut len = n;
    while len >= 0x80 {
        bytes.push((len as u8) | 0x80);
        len >>= 7;
    }
    bytes.push(len as u8);
    bytes.resize(bytes.len() + n, 0);
    let desc = DescriptorPool::global()
        .get_message_by_name("google.protobuf.FieldOptions")
        .unwrap();
    let options = DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
    at(&mut d, &[("message_type", 0), ("field", 0)])
        .set_field_by_name("options", Value::Message(options));
    let err = parse(&b64(&d.encode_to_vec()), &opts_refs())
        .err()
        .expect("refused");
    assert!(
        err.contains("custom options print as more than"),
        "{}",
        &err[err.len() - 200..]
    );
    // A few are fine.
    let few = "syntax = \"proto3\";\npackage t;\nimport \"opts.proto\";\nmessage M {\n  int32 a = 1 [(ext.a_rather_long_option_name_of_many_numbers) = 0, (ext.a_rather_long_option_name_of_many_numbers) = 0];\n}\n";
    let parsed = parse(few, &opts_refs()).unwrap();
    assert!(parsed.lossless, "{}", parsed.canonical);
}

#[test]
fn option_bytes_that_do_not_decode_are_refused_at_compile_wherever_they_are() {
    // A map entry's key field's options: (ext.field_level), an enum (varint), sent length-delimited.
    let mut d = descriptor_with_opts(
        "syntax = \"proto3\";\npackage t;\nimport \"opts.proto\";\nmessage M {\n  map<string, int32> counts = 1;\n}\n",
    );
    let desc = DescriptorPool::global()
        .get_message_by_name("google.protobuf.FieldOptions")
        .unwrap();
    let options =
        DynamicMessage::decode(desc, [0xa2u8, 0xb5, 0x18, 0x01, 0x00].as_slice()).unwrap();
    at(
        &mut d,
        &[("message_type", 0), ("nested_type", 0), ("field", 0)],
    )
    .set_field_by_name("options", Value::Message(options));
    let text = b64(&d.encode_to_vec());
    let err = compile_schema(&text, &opts_refs()).err().expect("refused");
    assert!(err.contains("decode"), "{err}");
    let err = parse(&text, &opts_refs()).err().expect("refused");
    assert!(err.contains("decode"), "{err}");
}

#[test]
fn pinned_schemas_sent_as_descriptors_or_with_references_have_the_same_text() {
    for (text, expected) in PINNED.iter().zip(PINNED_CANONICAL) {
        let sent = p(&b64(&descriptor_bytes(text, "pinned.proto")));
        assert!(sent.from_descriptor && sent.lossless, "{text}");
        assert_eq!(sent.canonical, *expected, "{text}");
    }
    // With a reference: its types by their full names.
    let dep = "syntax = \"proto3\";\npackage dep;\nmessage Money { int64 units = 1; }\nenum Unit { UNIT_UNSPECIFIED = 0; }\n";
    let refs = vec![("dep.proto".to_string(), dep.to_string())];
    let text = "syntax = \"proto3\";\npackage shop;\nimport \"dep.proto\";\nmessage Price { dep.Money amount = 1; dep.Unit unit = 2; }\n";
    let expected = "syntax = \"proto3\";\npackage shop;\n\nimport \"dep.proto\";\n\nmessage Price {\n  .dep.Money amount = 1;\n  .dep.Unit unit = 2;\n}\n";
    let parsed = parse(text, &refs).unwrap();
    assert!(parsed.lossless);
    assert_eq!(parsed.canonical, expected);
    let compiled = compile_schema(text, &refs).unwrap();
    let file = compiled.pool.get_file_by_name(&compiled.file_name).unwrap();
    let sent = parse(
        &b64(&descriptor_message(&file.encode_to_vec()).encode_to_vec()),
        &refs,
    )
    .unwrap();
    assert!(sent.from_descriptor && sent.lossless);
    assert_eq!(sent.canonical, expected);
    // The reference itself sent as a descriptor.
    let dep_sent = vec![(
        "dep.proto".to_string(),
        b64(&descriptor_bytes(dep, "dep.proto")),
    )];
    assert_eq!(parse(text, &dep_sent).unwrap().canonical, expected);
}

#[test]
fn string_and_bytes_options_with_quotes_escapes_and_high_bytes_read_back() {
    let refs = opts_refs();
    let s = "a\"b\\c\nd\u{7f}e\u{e9}\u{1F600}\t\r\0";
    let raw: Vec<u8> = vec![b'"', b'\\', b'\n', 0x7f, 0x80, 0xff, 0, b'x'];
    let mut d = descriptor_with_opts(
        "syntax = \"proto3\";\npackage t;\nimport \"opts.proto\";\nmessage M {\n  int32 a = 1;\n}\n",
    );
    // (ext.owner) = s, (ext.file_raw) = raw, (ext.msg_tag) = {name: s, raw: raw}: written as bytes.
    let desc = DescriptorPool::global()
        .get_message_by_name("google.protobuf.FileOptions")
        .unwrap();
    let mut bytes = Vec::new();
    let field = |out: &mut Vec<u8>, key: &[u8], value: &[u8]| {
        out.extend(key);
        out.push(value.len() as u8);
        out.extend(value);
    };
    field(&mut bytes, &[0x8a, 0xb5, 0x18], s.as_bytes()); // 50001
    field(&mut bytes, &[0xf2, 0xb5, 0x18], &raw); // 50014
    let options = DynamicMessage::decode(desc, bytes.as_slice()).unwrap();
    d.set_field_by_name("options", Value::Message(options));
    let sent = parse(&b64(&d.encode_to_vec()), &refs).unwrap_or_else(|e| panic!("{e}"));
    assert!(sent.lossless, "{}", sent.canonical);
    // The printed text compiles to the same values.
    let again = compile_schema(&sent.canonical, &refs).unwrap();
    let file = again.pool.get_file_by_name(&again.file_name).unwrap();
    let options = file.options();
    let pool = &again.pool;
    let owner = options.get_extension(&pool.get_extension_by_name("ext.owner").unwrap());
    assert_eq!(owner.as_str(), Some(s));
    let got = options.get_extension(&pool.get_extension_by_name("ext.file_raw").unwrap());
    assert_eq!(got.as_bytes().map(|b| b.to_vec()), Some(raw.clone()));
    assert_eq!(
        parse(&sent.canonical, &refs).unwrap().canonical,
        sent.canonical
    );
}

#[test]
fn custom_options_of_an_extend_field_count_in_a_texts_identity() {
    // The printer writes no `extend` block (the identity is the text plus the descriptor): the options of its
    // fields are in the descriptor appended.
    let refs = opts_refs();
    let schema = |level: &str| {
        format!(
            "syntax = \"proto2\";\npackage t;\nimport \"opts.proto\";\nmessage M {{ optional int32 a = 1; extensions 100 to 199; }}\n\
             extend M {{ optional int32 b = 100 [(ext.field_level) = {level}]; }}\n"
        )
    };
    let (high, low) = (
        parse(&schema("HIGH"), &refs).unwrap(),
        parse(&schema("LOW"), &refs).unwrap(),
    );
    assert!(!high.lossless);
    assert_ne!(high.canonical, low.canonical);
    assert_eq!(
        parse(&schema("HIGH"), &refs).unwrap().canonical,
        high.canonical
    );
    let err = parse(
        &b64(&descriptor_with_opts(&schema("HIGH")).encode_to_vec()),
        &refs,
    )
    .err()
    .expect("refused");
    assert!(err.contains("cannot store"), "{err}");
}
