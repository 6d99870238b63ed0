//! The REST API against an in-memory store: Confluent's paths, answers and error codes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fjord_registry::{api, Registry};
use serde_json::{json, Value};
use tower::ServiceExt;

const CT: &str = "application/vnd.schemaregistry.v1+json";

struct Api(axum::Router);

impl Api {
    fn new() -> Api {
        Api(api::router(Arc::new(Registry::in_memory())))
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        ct: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header("content-type", ct);
        }
        let req = req.body(body.map_or(Body::empty(), Body::from)).unwrap();
        let resp = self.0.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None, CT).await
    }
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call("DELETE", path, None, CT).await
    }
    async fn send(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(method, path, Some(body.to_string().into_bytes()), CT)
            .await
    }
    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.send(
            "POST",
            &format!("/subjects/{subject}/versions"),
            json!({"schema": schema}),
        )
        .await
    }
}

fn code(v: &Value) -> u64 {
    v["error_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no error_code in {v}"))
}

const V1: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"age","type":"int","default":0}]}"#;
const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"age","type":"int"}]}"#;

#[tokio::test]
async fn register_is_idempotent_and_ids_are_shared_across_subjects() {
    let api = Api::new();
    let (s, v) = api.register("users-value", V1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id1 = v["id"].as_i64().unwrap();
    // The same schema written differently: same version, same id.
    let spaced = V1.replace(',', " , ");
    assert_eq!(api.register("users-value", &spaced).await.1["id"], id1);
    assert_eq!(
        api.get("/subjects/users-value/versions").await.1,
        json!([1])
    );
    // Another subject, same schema: same id, version 1 there.
    assert_eq!(api.register("other", V1).await.1["id"], id1);
    let (_, v2) = api.register("users-value", V2).await;
    let id2 = v2["id"].as_i64().unwrap();
    assert_ne!(id1, id2);
    assert_eq!(
        api.get("/subjects/users-value/versions").await.1,
        json!([1, 2])
    );
    let (_, latest) = api.get("/subjects/users-value/versions/latest").await;
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], id2);
    assert_eq!(latest["subject"], "users-value");
    assert!(
        latest.get("schemaType").is_none(),
        "AVRO has no schemaType: {latest}"
    );
    assert!(latest.get("references").is_none(), "{latest}");
    assert_eq!(
        api.get("/subjects/users-value/versions/-1").await.1["version"],
        2
    );
    let (_, raw) = api.get("/subjects/users-value/versions/1/schema").await;
    assert_eq!(raw["name"], "User");
    assert_eq!(
        api.get(&format!("/schemas/ids/{id1}")).await.1,
        json!({"schema": V1})
    );
    assert_eq!(
        api.get(&format!("/schemas/ids/{id1}/subjects")).await.1,
        json!(["other", "users-value"])
    );
    assert_eq!(
        api.get(&format!("/schemas/ids/{id1}/versions")).await.1,
        json!([{"subject":"other","version":1},{"subject":"users-value","version":1}])
    );
    assert_eq!(
        api.get("/subjects").await.1,
        json!(["other", "users-value"])
    );
    assert_eq!(
        api.get("/schemas/types").await.1,
        json!(["JSON", "PROTOBUF", "AVRO"])
    );
    // Lookup.
    let (s, found) = api
        .send("POST", "/subjects/users-value", json!({"schema": V2}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (found["version"].as_i64(), found["id"].as_i64()),
        (Some(2), Some(id2))
    );
    let (s, e) = api
        .send(
            "POST",
            "/subjects/users-value",
            json!({"schema": V2_NO_DEFAULT}),
        )
        .await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40403));
    let (s, e) = api
        .send("POST", "/subjects/nobody", json!({"schema": V1}))
        .await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40401));
}

#[tokio::test]
async fn incompatible_schemas_get_409_and_verbose_messages() {
    let api = Api::new();
    api.register("s", V1).await;
    let (s, e) = api.register("s", V2_NO_DEFAULT).await;
    assert_eq!((s, code(&e)), (StatusCode::CONFLICT, 409));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
        "{e}"
    );
    let (s, v) = api
        .send(
            "POST",
            "/compatibility/subjects/s/versions/latest?verbose=true",
            json!({"schema": V2_NO_DEFAULT}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["is_compatible"], false);
    let messages: Vec<String> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert!(
        messages[0].starts_with("{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE'"),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"{oldSchemaVersion: 1}".to_string()),
        "{messages:?}"
    );
    assert_eq!(
        api.send(
            "POST",
            "/compatibility/subjects/s/versions/1",
            json!({"schema": V2})
        )
        .await
        .1,
        json!({"is_compatible": true})
    );
    // NONE lets anything in; the subject's level wins over the global one.
    assert_eq!(
        api.send("PUT", "/config/s", json!({"compatibility": "NONE"}))
            .await
            .1,
        json!({"compatibility": "NONE"})
    );
    assert_eq!(
        api.get("/config/s").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(api.register("s", V2_NO_DEFAULT).await.0, StatusCode::OK);
    let (s, e) = api.get("/config/other").await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40408));
    assert_eq!(
        api.get("/config/other?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (s, e) = api
        .send("PUT", "/config", json!({"compatibility": "SIDEWAYS"}))
        .await;
    assert_eq!((s, code(&e)), (StatusCode::UNPROCESSABLE_ENTITY, 42203));
}

#[tokio::test]
async fn transitive_levels_check_every_live_version() {
    let api = Api::new();
    let v1 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    let v2 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int","default":1}]}"#;
    let v3 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#;
    api.send(
        "PUT",
        "/config/t",
        json!({"compatibility": "BACKWARD_TRANSITIVE"}),
    )
    .await;
    api.send("PUT", "/config/n", json!({"compatibility": "BACKWARD"}))
        .await;
    for s in ["t", "n"] {
        assert_eq!(api.register(s, v1).await.0, StatusCode::OK);
        assert_eq!(api.register(s, v2).await.0, StatusCode::OK);
    }
    assert_eq!(api.register("n", v3).await.0, StatusCode::OK, "v3 reads v2");
    assert_eq!(
        api.register("t", v3).await.0,
        StatusCode::CONFLICT,
        "v3 cannot read v1"
    );
}

#[tokio::test]
async fn bad_input_gets_confluents_error_codes_never_500() {
    let api = Api::new();
    type Case = (
        &'static str,
        &'static str,
        Option<Vec<u8>>,
        &'static str,
        StatusCode,
        u64,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/subjects/s/versions",
            Some(b"{not json".to_vec()),
            CT,
            StatusCode::BAD_REQUEST,
            400,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(br#"{"schema": 5}"#.to_vec()),
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(br#"[1,2]"#.to_vec()),
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(br#"{}"#.to_vec()),
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(br#"{"schema": "{\"type\":\"nope\"}"}"#.to_vec()),
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(br#"{"schema": "\"int\"", "schemaType": "PROTOBUF"}"#.to_vec()),
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(br#"{"schema": "\"int\""}"#.to_vec()),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(vec![b' '; 17 * 1024 * 1024]),
            CT,
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
        ),
        (
            "GET",
            "/subjects/nobody/versions",
            None,
            CT,
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            "GET",
            "/subjects/nobody/versions/1",
            None,
            CT,
            StatusCode::NOT_FOUND,
            40401,
        ),
        (
            "GET",
            "/subjects/s/versions/0",
            None,
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        ),
        (
            "GET",
            "/subjects/s/versions/abc",
            None,
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        ),
        (
            "GET",
            "/schemas/ids/999",
            None,
            CT,
            StatusCode::NOT_FOUND,
            40403,
        ),
        (
            "GET",
            "/schemas/ids/xyz",
            None,
            CT,
            StatusCode::NOT_FOUND,
            404,
        ),
        ("GET", "/no/such/path", None, CT, StatusCode::NOT_FOUND, 404),
        (
            "PUT",
            "/mode",
            Some(br#"{"mode":"SLEEPY"}"#.to_vec()),
            CT,
            StatusCode::UNPROCESSABLE_ENTITY,
            42204,
        ),
        (
            "DELETE",
            "/subjects/nobody",
            None,
            CT,
            StatusCode::NOT_FOUND,
            40401,
        ),
    ];
    for (method, path, body, ct, status, error_code) in cases {
        let (s, v) = api.call(method, path, body, ct).await;
        assert_eq!(
            (s, v["error_code"].as_u64()),
            (status, Some(error_code)),
            "{method} {path}: {v}"
        );
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {v}"
        );
    }
    // A valid schema registered after all that gets id 1: nothing above wrote anything.
    assert_eq!(api.register("s", r#""int""#).await.1, json!({"id": 1}));
    let (s, e) = api.get("/subjects/s/versions/2").await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40402));
}

#[tokio::test]
async fn soft_then_permanent_deletes() {
    let api = Api::new();
    api.register("d", V1).await;
    api.register("d", V2).await;
    let (s, e) = api.delete("/subjects/d/versions/1?permanent=true").await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, 40407));
    assert_eq!(api.delete("/subjects/d/versions/1").await.1, json!(1));
    assert_eq!(code(&api.delete("/subjects/d/versions/1").await.1), 40406);
    assert_eq!(api.get("/subjects/d/versions").await.1, json!([2]));
    assert_eq!(
        api.get("/subjects/d/versions?deleted=true").await.1,
        json!([1, 2])
    );
    assert_eq!(code(&api.get("/subjects/d/versions/1").await.1), 40402);
    assert_eq!(
        api.get("/subjects/d/versions/1?deleted=true").await.1["version"],
        1
    );
    assert_eq!(
        code(&api.delete("/subjects/d?permanent=true").await.1),
        40405
    );
    assert_eq!(api.delete("/subjects/d").await.1, json!([2]));
    assert_eq!(api.get("/subjects").await.1, json!([]));
    assert_eq!(api.get("/subjects?deleted=true").await.1, json!(["d"]));
    assert_eq!(code(&api.delete("/subjects/d").await.1), 40404);
    // Re-registering a soft-deleted schema makes a new version with the same id.
    let (_, again) = api.register("d", V2).await;
    assert_eq!(again["id"], 2);
    assert_eq!(api.get("/subjects/d/versions").await.1, json!([3]));
    assert_eq!(api.delete("/subjects/d").await.1, json!([3]));
    assert_eq!(
        api.delete("/subjects/d?permanent=true").await.1,
        json!([1, 2, 3])
    );
    assert_eq!(
        code(&api.get("/subjects/d/versions?deleted=true").await.1),
        40401
    );
    assert_eq!(code(&api.get("/schemas/ids/1").await.1), 40403);
    // Ids are never reused after a permanent delete.
    assert_eq!(api.register("e", r#""string""#).await.1, json!({"id": 3}));
}

#[tokio::test]
async fn references_resolve_named_types_and_protect_what_they_name() {
    let api = Api::new();
    let address = r#"{"type":"record","name":"Address","namespace":"com.acme","fields":[{"name":"city","type":"string"}]}"#;
    let (_, a) = api.register("address", address).await;
    let person = r#"{"type":"record","name":"Person","namespace":"com.acme","fields":[{"name":"home","type":"com.acme.Address"}]}"#;
    let (s, e) = api.register("person", person).await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201),
        "an unknown named type"
    );
    let body = json!({"schema": person, "references": [{"name": "com.acme.Address", "subject": "address", "version": 1}]});
    let (s, p) = api
        .send("POST", "/subjects/person/versions", body.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let pid = p["id"].as_i64().unwrap();
    assert_ne!(pid, a["id"].as_i64().unwrap());
    let (_, by_id) = api.get(&format!("/schemas/ids/{pid}")).await;
    assert_eq!(
        by_id["references"],
        json!([{"name": "com.acme.Address", "subject": "address", "version": 1}])
    );
    assert_eq!(
        api.get("/subjects/address/versions/1/referencedby").await.1,
        json!([pid])
    );
    let (s, e) = api.delete("/subjects/address/versions/1").await;
    assert_eq!((s, code(&e)), (StatusCode::UNPROCESSABLE_ENTITY, 42206));
    assert_eq!(
        api.send("POST", "/subjects/person", body).await.1["id"],
        pid
    );
}

#[tokio::test]
async fn format_resolved_writes_out_the_named_types_an_avro_schema_takes_from_its_references() {
    let api = Api::new();
    // The referenced schema defines a nested enum as well: both are written out where first used.
    let address = r#"{"type":"record","name":"Address","namespace":"com.acme","fields":[{"name":"city","type":"string"},{"name":"kind","type":{"type":"enum","name":"Kind","symbols":["HOME","WORK"]}}]}"#;
    api.register("address", address).await;
    let person = r#"{"type":"record","name":"Person","namespace":"com.acme","fields":[{"name":"home","type":"Address"},{"name":"work","type":["null","com.acme.Address"]},{"name":"k","type":"Kind"}]}"#;
    let body = json!({"schema": person, "references": [{"name": "com.acme.Address", "subject": "address", "version": 1}]});
    let (s, p) = api.send("POST", "/subjects/person/versions", body).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let pid = p["id"].as_i64().unwrap();

    let (_, by_id) = api
        .get(&format!("/schemas/ids/{pid}?format=resolved"))
        .await;
    let resolved = by_id["schema"].as_str().unwrap().to_string();
    // It parses alone (no references), and defines Address and Kind once each.
    let schema =
        apache_avro::Schema::parse_str(&resolved).unwrap_or_else(|e| panic!("{e}: {resolved}"));
    assert_eq!(
        resolved.matches(r#""type":"enum""#).count(),
        1,
        "{resolved}"
    );
    assert_eq!(
        resolved.matches(r#""name":"city""#).count(),
        1,
        "{resolved}"
    );
    let apache_avro::Schema::Record(r) = &schema else {
        panic!("{resolved}")
    };
    assert!(
        matches!(&r.fields[0].schema, apache_avro::Schema::Record(a) if a.name.fullname(None) == "com.acme.Address"),
        "{resolved}"
    );
    // The same from the version endpoints; without the format, the text as registered.
    let (_, v) = api.get("/subjects/person/versions/1?format=resolved").await;
    assert_eq!(v["schema"], json!(resolved));
    let (_, raw) = api
        .get("/subjects/person/versions/1/schema?format=resolved")
        .await;
    assert_eq!(
        apache_avro::Schema::parse_str(&raw.to_string()).unwrap(),
        schema
    );
    assert_eq!(
        api.get(&format!("/schemas/ids/{pid}")).await.1["schema"],
        json!(person)
    );
    // A schema without references comes back as Avro writes it; other types ignore the format, as Confluent.
    let (_, a) = api
        .get("/subjects/address/versions/1?format=resolved")
        .await;
    assert!(apache_avro::Schema::parse_str(a["schema"].as_str().unwrap()).is_ok());
    let (_, j) = api
        .send(
            "POST",
            "/subjects/j/versions",
            json!({"schemaType": "JSON", "schema": r#"{"type": "object"}"#}),
        )
        .await;
    let (_, j) = api
        .get(&format!("/schemas/ids/{}?format=resolved", j["id"]))
        .await;
    assert_eq!(j["schema"], json!(r#"{"type": "object"}"#));
}

#[tokio::test]
async fn readonly_mode_refuses_writes_and_import_mode_keeps_given_ids() {
    let api = Api::new();
    assert_eq!(api.get("/mode").await.1, json!({"mode": "READWRITE"}));
    assert_eq!(
        api.send("PUT", "/mode/ro", json!({"mode": "READONLY"}))
            .await
            .1,
        json!({"mode": "READONLY"})
    );
    let (s, e) = api.register("ro", V1).await;
    assert_eq!((s, code(&e)), (StatusCode::UNPROCESSABLE_ENTITY, 42205));
    assert_eq!(
        api.register("rw", V1).await.0,
        StatusCode::OK,
        "other subjects still take writes"
    );
    assert_eq!(code(&api.get("/mode/rw").await.1), 40409);
    assert_eq!(
        api.get("/mode/rw?defaultToGlobal=true").await.1,
        json!({"mode": "READWRITE"})
    );
    // IMPORT needs an empty registry unless forced, then keeps the given id and version.
    assert_eq!(
        code(&api.send("PUT", "/mode", json!({"mode": "IMPORT"})).await.1),
        42205
    );
    assert_eq!(
        api.send("PUT", "/mode?force=true", json!({"mode": "IMPORT"}))
            .await
            .1,
        json!({"mode": "IMPORT"})
    );
    let (s, v) = api
        .send(
            "POST",
            "/subjects/imported/versions",
            json!({"schema": V2, "id": 100, "version": 7}),
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"id": 100})));
    assert_eq!(api.get("/subjects/imported/versions").await.1, json!([7]));
    api.send("PUT", "/mode", json!({"mode": "READWRITE"})).await;
    assert_eq!(
        api.register("after", r#""long""#).await.1,
        json!({"id": 101})
    );
}

/// A JSON Schema whose check against another of its kind walks about 180 x 180 pairs (anyOf x anyOf): within
/// one walk's budget; `k` makes each text (and version) different.
fn wide_json(k: usize) -> String {
    let subs: Vec<String> = (0..180)
        .map(|j| format!("{{\"type\":\"string\",\"maxLength\":{}}}", k * 1000 + j))
        .collect();
    format!(
        "{{\"type\":\"object\",\"properties\":{{\"p\":{{\"anyOf\":[{}]}}}}}}",
        subs.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_versions_each_within_a_walks_budget_exceed_the_requests_and_answer_42201_quickly() {
    let api = Api::new();
    api.send("PUT", "/config/wide", json!({"compatibility": "NONE"}))
        .await;
    let json_schema = |text: String| json!({"schemaType": "JSON", "schema": text});
    for k in 0..12 {
        let (s, v) = api
            .send("POST", "/subjects/wide/versions", json_schema(wide_json(k)))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // One comparison alone is within budget (an answer, not 42201).
    api.send("PUT", "/config/wide", json!({"compatibility": "FULL"}))
        .await;
    let (s, v) = api
        .send(
            "POST",
            "/compatibility/subjects/wide/versions/latest",
            json_schema(wide_json(99)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Against all twelve, both ways: 24 walks of one request share one budget, refused in seconds.
    api.send(
        "PUT",
        "/config/wide",
        json!({"compatibility": "FULL_TRANSITIVE"}),
    )
    .await;
    let started = std::time::Instant::now();
    let (s, v) = api
        .send(
            "POST",
            "/subjects/wide/versions",
            json_schema(wide_json(99)),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(code(&v), 42201, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too complex"),
        "{v}"
    );
    // The request's budget refused it (its message says "in all"), not one walk's.
    assert!(
        v["message"].as_str().unwrap_or_default().contains("in all"),
        "{v}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
