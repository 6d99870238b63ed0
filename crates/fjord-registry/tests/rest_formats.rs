//! The REST API with JSON Schema and Protobuf schemas against an in-memory store: register, lookup, get,
//! references, compatibility (with `verbose`), `normalize`, `format=serialized`, and bad schemas (42201 with
//! a message, never 500).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use fjord_registry::{api, Registry};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api(axum::Router);

impl Api {
    fn new() -> Api {
        Api(api::router(Arc::new(Registry::in_memory())))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header("content-type", "application/vnd.schemaregistry.v1+json");
        }
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        let resp = self
            .0
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        assert!(!status.is_server_error(), "{method} {path}: {status} {v}");
        (status, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn register(&self, subject: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("/subjects/{subject}/versions"), body)
            .await
    }
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

const PERSON: &str = r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}"#;
const PERSON_AGE: &str = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name"],"additionalProperties":false}"#;
const PERSON_OPEN: &str = r#"{"type":"object","properties":{"name":{"type":"string"}}}"#;

#[tokio::test]
async fn json_schemas_register_look_up_and_evolve() {
    let api = Api::new();
    let (s, v) = api
        .register("people", json!({"schema": PERSON, "schemaType": "JSON"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id1 = id(&v);
    // The same schema with other whitespace and key order: the same id, no new version.
    let reordered = r#"{ "additionalProperties": false, "required": ["name"],
        "properties": { "name": { "type": "string" } }, "type": "object" }"#;
    let (_, v) = api
        .register("people", json!({"schema": reordered, "schemaType": "JSON"}))
        .await;
    assert_eq!(id(&v), id1);
    assert_eq!(api.get("/subjects/people/versions").await.1, json!([1]));
    // Without schemaType it is Avro, and this is no Avro schema.
    let (s, v) = api.register("people", json!({"schema": PERSON})).await;
    assert_eq!(
        (s, v["error_code"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(42201))
    );
    // GETs carry the type.
    let (_, v) = api.get("/subjects/people/versions/1").await;
    assert_eq!(v["schemaType"], "JSON");
    assert_eq!(v["schema"], PERSON);
    let (_, v) = api.get(&format!("/schemas/ids/{id1}")).await;
    assert_eq!(v, json!({"schemaType": "JSON", "schema": PERSON}));
    // Lookup finds it under its type, not under another.
    let (s, v) = api
        .post(
            "/subjects/people",
            json!({"schema": reordered, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["id"].as_i64(), v["version"].as_i64()),
        (Some(id1), Some(1))
    );
    assert_eq!(v["schemaType"], "JSON");
    // An optional property added to a closed content model: BACKWARD compatible.
    let (s, v) = api
        .register(
            "people",
            json!({"schema": PERSON_AGE, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(id(&v), id1);
    // Opening the content model and dropping a property: compatible (the new schema reads all old data).
    let (s, v) = api
        .post(
            "/compatibility/subjects/people/versions/latest?verbose=true",
            json!({"schema": PERSON_OPEN, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"is_compatible": true, "messages": []}));
    // A property changing type: verbose says which and where.
    let renamed_type = r#"{"type":"object","properties":{"name":{"type":"integer"},"age":{"type":"integer"}},"required":["name"],"additionalProperties":false}"#;
    let (_, v) = api
        .post(
            "/compatibility/subjects/people/versions/latest?verbose=true",
            json!({"schema": renamed_type, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(v["is_compatible"], false, "{v}");
    let first = v["messages"][0].as_str().unwrap();
    assert!(
        first.contains("TYPE_CHANGED") && first.contains("#/properties/name"),
        "{v}"
    );
    assert!(
        v["messages"].to_string().contains("oldSchemaVersion: 2"),
        "{v}"
    );
    // A required property added to a closed model is refused with 409 and the reason.
    let required_added = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"email":{"type":"string"}},"required":["name","email"],"additionalProperties":false}"#;
    let (s, v) = api
        .register(
            "people",
            json!({"schema": required_added, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error_code"], 409);
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"),
        "{msg}"
    );
    assert!(msg.contains("#/properties/email"), "{msg}");
    // With compatibility NONE it registers.
    let (s, _) = api
        .call(
            "PUT",
            "/config/people",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .register(
            "people",
            json!({"schema": required_added, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn normalize_stores_a_new_json_schema_in_its_canonical_form() {
    let api = Api::new();
    // A schema the registry has not seen (re-registering a known one would answer the stored text anyway).
    let sent = r#"{ "type": "object",
        "properties": { "sku": { "type": "string" }, "count": { "type": "integer" } } }"#;
    let canonical =
        r#"{"properties":{"count":{"type":"integer"},"sku":{"type":"string"}},"type":"object"}"#;
    let (s, v) = api
        .post(
            "/subjects/stock-norm/versions?normalize=true",
            json!({"schema": sent, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id1 = id(&v);
    let (_, v) = api.get("/subjects/stock-norm/versions/1").await;
    assert_eq!(v["schema"].as_str(), Some(canonical), "normalized text");
    // Without normalize the text is kept as sent.
    let (_, v) = api
        .register(
            "stock-raw",
            json!({"schema": sent.replace("sku", "code"), "schemaType": "JSON"}),
        )
        .await;
    let (_, v) = api.get(&format!("/schemas/ids/{}", id(&v))).await;
    assert_eq!(
        v["schema"].as_str(),
        Some(sent.replace("sku", "code").as_str())
    );
    // Either form looks the normalized registration up.
    for text in [sent, canonical] {
        let (s, v) = api
            .post(
                "/subjects/stock-norm?normalize=true",
                json!({"schema": text, "schemaType": "JSON"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(id(&v), id1);
    }
}

#[tokio::test]
async fn json_schema_references_resolve_from_registered_subjects() {
    let api = Api::new();
    let address = r#"{"type":"object","properties":{"street":{"type":"string"}}}"#;
    let (s, v) = api
        .register("address", json!({"schema": address, "schemaType": "JSON"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let customer = r#"{"type":"object","properties":{"home":{"$ref":"address.json"}}}"#;
    let refs = json!([{"name": "address.json", "subject": "address", "version": 1}]);
    let (s, v) = api
        .register(
            "customer",
            json!({"schema": customer, "schemaType": "JSON", "references": refs}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cid = id(&v);
    let (_, v) = api.get(&format!("/schemas/ids/{cid}")).await;
    assert_eq!(v["references"], refs);
    assert_eq!(
        api.get("/subjects/address/versions/1/referencedby").await.1,
        json!([cid])
    );
    // Without the reference the $ref does not resolve: 42201, not a fetch.
    let (s, v) = api
        .register(
            "customer",
            json!({"schema": customer, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error_code"], 42201);
    assert!(
        v["message"].as_str().unwrap().contains("address.json"),
        "{v}"
    );
}

#[tokio::test]
async fn bad_json_schemas_get_42201_with_a_message() {
    let api = Api::new();
    for bad in [
        "{",
        r#"{"type":"strin"}"#,
        r#"{"type":"object","properties":{"a":{"type":7}}}"#,
        r#"{"$schema":"http://example.com/custom","type":"string"}"#,
        r#"{"$ref":"https://example.com/remote.json"}"#,
        "[1,2]",
    ] {
        let (s, v) = api
            .register("bad", json!({"schema": bad, "schemaType": "JSON"}))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert_eq!(v["error_code"], 42201, "{bad}: {v}");
        assert!(
            v["message"].as_str().unwrap().starts_with("Invalid schema"),
            "{bad}: {v}"
        );
    }
    let (s, v) = api
        .register("bad", json!({"schema": "{}", "schemaType": "XML"}))
        .await;
    assert_eq!(
        (s, v["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(42201))
    );
    assert!(v["message"].as_str().unwrap().contains("XML"), "{v}");
}

const ORDER: &str = r#"syntax = "proto3";
package shop;

message Order {
  string id = 1;
  int64 cents = 2;
}
"#;

const ORDER_V2: &str = r#"syntax = "proto3";
package shop;

message Order {
  string id = 1;
  int64 cents = 2;
  repeated string tags = 3;
}
"#;

const ORDER_BAD: &str = r#"syntax = "proto3";
package shop;

message Order {
  string id = 1;
  string cents = 2;
}
"#;

#[tokio::test]
async fn protobuf_schemas_register_look_up_evolve_and_serialize() {
    let api = Api::new();
    let (s, v) = api
        .register("orders", json!({"schema": ORDER, "schemaType": "PROTOBUF"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id1 = id(&v);
    // Layout and comments do not make another schema.
    let compact = "syntax=\"proto3\";package shop; // x\nmessage Order{string id=1;int64 cents=2;}";
    let (_, v) = api
        .register(
            "orders",
            json!({"schema": compact, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(id(&v), id1);
    let (_, v) = api.get("/subjects/orders/versions/latest").await;
    assert_eq!(
        (v["schemaType"].as_str(), v["schema"].as_str()),
        (Some("PROTOBUF"), Some(ORDER))
    );
    // format=serialized: a base64 FileDescriptorProto, which registers and looks up as the same schema.
    let (_, v) = api
        .get(&format!("/schemas/ids/{id1}?format=serialized"))
        .await;
    let serialized = v["schema"].as_str().unwrap().to_string();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&serialized)
        .expect("base64");
    assert!(
        bytes.windows(5).any(|w| w == b"Order"),
        "a descriptor naming Order"
    );
    let (_, raw) = api
        .get("/subjects/orders/versions/1/schema?format=serialized")
        .await;
    assert_eq!(raw.as_str(), Some(serialized.as_str()));
    let (s, v) = api
        .post(
            "/subjects/orders",
            json!({"schema": serialized, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"].as_i64(), Some(id1));
    // Adding a field is compatible; changing a field's wire type is not (409 with the reason).
    let (s, v) = api
        .register(
            "orders",
            json!({"schema": ORDER_V2, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .register(
            "orders",
            json!({"schema": ORDER_BAD, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("FIELD_SCALAR_KIND_CHANGED"),
        "{v}"
    );
    let (_, v) = api
        .post(
            "/compatibility/subjects/orders/versions?verbose=true",
            json!({"schema": ORDER_BAD, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(v["is_compatible"], false);
    assert!(
        v["messages"][0].as_str().unwrap().contains("#/Order/2"),
        "{v}"
    );
}

#[tokio::test]
async fn normalize_stores_a_new_protobuf_schema_in_its_canonical_form() {
    let api = Api::new();
    // A schema the registry has not seen (re-registering a known one would answer the stored text anyway).
    let sent =
        "syntax=\"proto3\";package shop; // a comment\nmessage Refund{string id=1;int64 cents=2;}";
    let (s, v) = api
        .post(
            "/subjects/refunds-norm/versions?normalize=true",
            json!({"schema": sent, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id1 = id(&v);
    let (_, v) = api.get("/subjects/refunds-norm/versions/1/schema").await;
    assert_eq!(
        v.as_str(),
        Some("syntax = \"proto3\";\npackage shop;\n\nmessage Refund {\n  string id = 1;\n  int64 cents = 2;\n}\n")
    );
    // Without normalize the text is kept as sent.
    let other = sent.replace("Refund", "Return");
    let (_, v) = api
        .register(
            "returns",
            json!({"schema": other, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_ne!(id(&v), id1);
    let (_, v) = api.get("/subjects/returns/versions/1/schema").await;
    assert_eq!(v.as_str(), Some(other.as_str()));
    let (s, v) = api
        .post(
            "/subjects/refunds-norm",
            json!({"schema": sent, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(id(&v), id1);
}

#[tokio::test]
async fn protobuf_imports_resolve_from_references_and_well_known_types() {
    let api = Api::new();
    let money = "syntax = \"proto3\";\npackage common;\nmessage Money { int64 units = 1; string currency = 2; }\n";
    let (s, v) = api
        .register("money", json!({"schema": money, "schemaType": "PROTOBUF"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let invoice = "syntax = \"proto3\";\npackage billing;\nimport \"common/money.proto\";\nimport \"google/protobuf/timestamp.proto\";\nmessage Invoice { common.Money total = 1; google.protobuf.Timestamp due = 2; }\n";
    let refs = json!([{"name": "common/money.proto", "subject": "money", "version": 1}]);
    let (s, v) = api
        .register(
            "invoices",
            json!({"schema": invoice, "schemaType": "PROTOBUF", "references": refs}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let iid = id(&v);
    let (_, v) = api
        .get(&format!("/schemas/ids/{iid}?format=serialized"))
        .await;
    assert!(
        v["schema"].as_str().is_some_and(|s| !s.contains("syntax")),
        "{v}"
    );
    assert_eq!(v["references"], refs);
    // The import is not served without its reference.
    let (s, v) = api
        .register(
            "invoices",
            json!({"schema": invoice, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(
        (s, v["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(42201))
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("common/money.proto"),
        "{v}"
    );
}

#[tokio::test]
async fn bad_protobuf_schemas_get_42201_with_a_message() {
    let api = Api::new();
    for bad in [
        "message {",
        "syntax = \"proto3\"; message M { Unknown u = 1; }",
        "syntax = \"proto3\"; message M { string a = 1; string b = 1; }",
        "syntax = \"proto4\"; message M {}",
        "bm90IGEgZGVzY3JpcHRvcg==",
        "",
    ] {
        let (s, v) = api
            .register("bad", json!({"schema": bad, "schemaType": "PROTOBUF"}))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert_eq!(v["error_code"], 42201, "{bad}: {v}");
        assert!(
            v["message"].as_str().unwrap().len() > "Invalid schema ".len(),
            "{v}"
        );
    }
}

#[tokio::test]
async fn a_subject_does_not_change_schema_type_under_a_compatibility_level() {
    let api = Api::new();
    let (s, _) = api
        .register("mixed", json!({"schema": r#""string""#}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .register("mixed", json!({"schema": PERSON, "schemaType": "JSON"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");
}

#[tokio::test]
async fn a_schema_too_deep_to_compare_is_refused_with_42201_never_accepted() {
    let api = Api::new();
    // 300 messages, each holding the next: registering the first version needs no comparison.
    let chain = |leaf: &str| {
        let mut s = String::from("syntax = \"proto3\";\n");
        for i in 0..300 {
            s.push_str(&format!("message M{i} {{ M{} next = 1; }}\n", i + 1));
        }
        s.push_str(&format!("message M300 {{ {leaf} v = 1; }}\n"));
        s
    };
    let (s, v) = api
        .register(
            "chain",
            json!({"schema": chain("int64"), "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let changed = json!({"schema": chain("string"), "schemaType": "PROTOBUF"});
    let (s, v) = api.register("chain", changed.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error_code"], 42201);
    assert!(v["message"].as_str().unwrap().contains("too deep"), "{v}");
    let (s, v) = api
        .post("/compatibility/subjects/chain/versions/latest", changed)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error_code"], 42201);
    assert_eq!(api.get("/subjects/chain/versions").await.1, json!([1]));
}

/// A Connect decimal as the Protobuf converters write it: its precision and scale in a custom option.
fn decimal_schema(scale: u32) -> String {
    format!(
        "syntax = \"proto3\";\nimport \"confluent/meta.proto\";\nimport \"confluent/type/decimal.proto\";\n\
         message Price {{\n  confluent.type.Decimal amount = 1 [(confluent.field_meta) = {{params: [{{key: \"precision\", value: \"10\"}}, {{key: \"scale\", value: \"{scale}\"}}]}}];\n}}\n"
    )
}

#[tokio::test]
async fn protobuf_schemas_differing_only_in_custom_options_get_their_own_ids() {
    let api = Api::new();
    let register = |subject: &'static str, schema: String| {
        let api = &api;
        async move {
            let (s, v) = api
                .register(subject, json!({"schema": schema, "schemaType": "PROTOBUF"}))
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            id(&v)
        }
    };
    let two = register("prices-value", decimal_schema(2)).await;
    let three = register("prices-value", decimal_schema(3)).await;
    assert_ne!(
        two, three,
        "only the scale differs, yet it is another schema"
    );
    assert_eq!(register("prices-value", decimal_schema(2)).await, two);
    assert_eq!(register("other-value", decimal_schema(3)).await, three);
    let (_, v) = api.get("/subjects/prices-value/versions").await;
    assert_eq!(v, json!([1, 2]));
    for (id, scale) in [(two, 2), (three, 3)] {
        let (_, v) = api.get(&format!("/schemas/ids/{id}")).await;
        assert_eq!(v["schema"].as_str(), Some(decimal_schema(scale).as_str()));
    }
    // normalize=true stores the canonical text, options included.
    let (s, v) = api
        .post(
            "/subjects/norm-value/versions?normalize=true",
            json!({"schema": decimal_schema(4), "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api.get("/subjects/norm-value/versions/1/schema").await;
    assert!(
        v.as_str().unwrap().contains(
            "[(.confluent.field_meta) = {params: [{key: \"precision\", value: \"10\"}, {key: \"scale\", value: \"4\"}]}]"
        ),
        "{v}"
    );
    // format=serialized keeps the options: the descriptor registers (as a serializer would send it) and is
    // the same schema.
    let (_, v) = api
        .get(&format!("/schemas/ids/{three}?format=serialized"))
        .await;
    let serialized = v["schema"].as_str().unwrap().to_string();
    assert_eq!(register("prices-value", serialized).await, three);
}
