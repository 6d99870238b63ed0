//! The canonical `.proto` text of Protobuf schemas (the registry's identity of a schema, the stored form with
//! `normalize=true`, the text a schema sent as a descriptor is stored as): pinned for schemas without custom
//! options, so that the ids and identities of stored schemas stay what they were; and custom options (Confluent's
//! `(confluent.field_meta)` and others) kept in it.

use base64::Engine;
use fjord_registry::protobuf::{compile_schema, parse, ParsedProto};
use prost_reflect::prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};

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
         message Price {\n  .confluent.type.Decimal amount = 1 [(confluent.field_meta) = {params: [{key: \"precision\", value: \"10\"}, {key: \"scale\", value: \"2\"}]}];\n  int32 small = 2 [(confluent.field_meta) = {params: [{key: \"connect.type\", value: \"int8\"}]}];\n}\n"
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

option (ext.owner) = "team-a";

message Order {
  option (ext.msg_tag) = {name: "o", nums: [1, 2], level: HIGH, raw: "\001z", ratio: 0.25};
  string id = 1 [deprecated = true, (ext.field_level) = HIGH, (ext.labels) = "b", (ext.labels) = "a"];
  oneof pay {
    option (ext.oneof_flag) = true;
    string card = 2;
  }
  enum State {
    option (ext.enum_num) = -7;
    NEW = 0 [(ext.value_weight) = 1.5];
  }
}

service Orders {
  option (ext.service_ver) = 3;
  rpc Put (.shop.Order) returns (.shop.Order) {
    option (ext.method_cost) = -2;
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
        one.canonical.contains("[(own.width) = 1]"),
        "{}",
        one.canonical
    );
    assert_ne!(one.canonical, two.canonical);
    assert_eq!(p(&schema(1)).canonical, one.canonical);
}
