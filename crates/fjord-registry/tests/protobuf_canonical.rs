//! The canonical `.proto` text of Protobuf schemas (the registry's identity of a schema, the stored form with
//! `normalize=true`, the text a schema sent as a descriptor is stored as): pinned for schemas without custom
//! options, so that the ids and identities of stored schemas stay what they were; and custom options (Confluent's
//! `(confluent.field_meta)` and others) kept in it.

use fjord_registry::protobuf::{parse, ParsedProto};

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
