//! Hostile and unusual subjects and contexts over the REST API (in-memory store): every refused subject gets
//! Confluent's 42208 with a message, never a 500; contexts known only from their subjects' records.

use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fjord_registry::registry::apply_raw;
use fjord_registry::state::State;
use fjord_registry::store::Store;
use fjord_registry::{api, Registry};
use serde_json::{json, Value};
use tower::ServiceExt;

const CT: &str = "application/vnd.schemaregistry.v1+json";
const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;

struct Api(axum::Router);

impl Api {
    fn on(registry: Registry) -> Api {
        Api(api::router(Arc::new(registry)))
    }

    fn new() -> Api {
        Api::on(Registry::in_memory())
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header("content-type", CT);
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
        (status, v)
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    async fn register(&self, subject: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": SCHEMA })),
        )
        .await
    }
}

fn code(v: &Value) -> i64 {
    v["error_code"].as_i64().unwrap_or(0)
}

/// Asserts a refusal with 42208 and a message naming the problem.
fn assert_invalid_subject(what: &str, (status, v): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
    assert_eq!(code(&v), 42208, "{what}: {v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains("is not valid"), "{what}: {v}");
}

/// Subjects (as URL path segments) Confluent's `QualifiedSubject.isValidSubject` refuses for schemas.
const BAD_SCHEMA_SUBJECTS: &[&str] = &[
    ":.__GLOBAL:x",
    "__GLOBAL",
    "__EMPTY",
    ":.ctx:__EMPTY",
    ":.ctx:__GLOBAL",
    ":.a%0Ab:x",
    "a%07b",
    "x%0D%0Ay",
    ":.ctx:",
    ":.ctx",
    ":*:x",
    ":*:",
];

#[tokio::test]
async fn hostile_subjects_get_42208_on_every_subject_path() {
    let api = Api::new();
    for s in BAD_SCHEMA_SUBJECTS {
        assert_invalid_subject(&format!("register {s}"), api.register(s).await);
        let body = Some(json!({ "schema": SCHEMA }));
        for (method, path, body) in [
            ("POST", format!("/subjects/{s}"), body.clone()),
            ("GET", format!("/subjects/{s}/versions"), None),
            ("GET", format!("/subjects/{s}/versions/latest"), None),
            (
                "GET",
                format!("/subjects/{s}/versions/1/referencedby"),
                None,
            ),
            ("DELETE", format!("/subjects/{s}"), None),
            ("DELETE", format!("/subjects/{s}/versions/1"), None),
            (
                "POST",
                format!("/compatibility/subjects/{s}/versions/latest"),
                body.clone(),
            ),
        ] {
            assert_invalid_subject(
                &format!("{method} {path}"),
                api.call(method, &path, body).await,
            );
        }
    }
    // Config and mode may name a context (`:.ctx:`) and the global context, never the other bad subjects.
    for s in [
        "__GLOBAL",
        "__EMPTY",
        ":.__GLOBAL:__EMPTY",
        ":.a%0Ab:",
        ":.ctx:x%0A",
        ":*:x",
    ] {
        for (method, path, body) in [
            (
                "PUT",
                format!("/config/{s}"),
                Some(json!({"compatibility": "NONE"})),
            ),
            ("GET", format!("/config/{s}"), None),
            ("DELETE", format!("/config/{s}"), None),
            (
                "PUT",
                format!("/mode/{s}"),
                Some(json!({"mode": "READONLY"})),
            ),
            ("GET", format!("/mode/{s}"), None),
            ("DELETE", format!("/mode/{s}"), None),
        ] {
            assert_invalid_subject(
                &format!("{method} {path}"),
                api.call(method, &path, body).await,
            );
        }
    }
    let (s, v) = api
        .call(
            "PUT",
            "/config/:.__GLOBAL:",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the global context's config: {v}");
    let (s, v) = api
        .call("PUT", "/mode/:.ctx:", Some(json!({"mode": "READONLY"})))
        .await;
    assert_eq!(s, StatusCode::OK, "a context's mode: {v}");
    // Nothing above created a subject or a context.
    assert_eq!(api.get("/subjects").await, json!([]));
    assert_eq!(api.get("/contexts").await, json!(["."]));
}

#[tokio::test]
async fn hostile_context_urls_are_refused_and_every_created_context_can_be_deleted() {
    let api = Api::new();
    // A control character in the context of a context URL: 400 (a context name), nothing created.
    let (s, v) = api.register_in_context("%0A").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("control"), "{v}");
    // An encoded `/` in the context name: a context like any other, which can be deleted once empty.
    let (s, v) = api.register_in_context("..%2F").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(api.get("/contexts").await, json!([".", "../"]));
    assert_eq!(api.get("/subjects").await, json!([":../:s"]));
    // An encoded `/` in a subject under a context URL stays in the subject.
    let (s, v) = api
        .call(
            "POST",
            "/contexts/.t/subjects/a%2Fb/versions",
            Some(json!({ "schema": SCHEMA })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        api.get("/contexts/.t/subjects/a%2Fb/versions").await,
        json!([1])
    );
    for (subject, context) in [(":..%2F:s", "..%2F"), (":.t:a%2Fb", ".t")] {
        for permanent in ["false", "true"] {
            let (s, v) = api
                .call(
                    "DELETE",
                    &format!("/subjects/{subject}?permanent={permanent}"),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "delete {subject}: {v}");
        }
        let (s, v) = api
            .call("DELETE", &format!("/contexts/{context}"), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "delete context {context}: {v}");
    }
    assert_eq!(api.get("/contexts").await, json!(["."]));
}

impl Api {
    async fn register_in_context(&self, context: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/contexts/{context}/subjects/s/versions"),
            Some(json!({ "schema": SCHEMA })),
        )
        .await
    }
}

#[tokio::test]
async fn a_query_value_is_decoded_once() {
    let api = Api::new();
    // A default-context subject whose name is literally `%3A.x%3Ay` (sent as `%253A.x%253Ay`).
    let (s, v) = api.register("%253A.x%253Ay").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(api.get("/subjects").await, json!(["%3A.x%3Ay"]));
    // Under a context URL, that query value is a subject to qualify with the context, not a qualified
    // subject `:.x:y` (which would be read if the value were decoded a second time).
    let (s, v) = api
        .call(
            "GET",
            "/contexts/.c/schemas/ids/1?subject=%253A.x%253Ay",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = api
        .call(
            "POST",
            "/contexts/.c/subjects/%253A.x%253Ay/versions",
            Some(json!({ "schema": SCHEMA })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let found = api
        .get("/contexts/.c/schemas/ids/1/versions?subject=%253A.x%253Ay")
        .await;
    assert_eq!(found, json!([{"subject": ":.c:%3A.x%3Ay", "version": 1}]));
}

/// Applies a raw `_schemas` record, as the store's reader does.
fn apply(state: &RwLock<State>, key: Value, value: Option<Value>) {
    let value = value.map(|v| v.to_string());
    assert!(apply_raw(
        state,
        key.to_string().as_bytes(),
        value.as_deref().map(str::as_bytes)
    ));
}

#[tokio::test]
async fn a_context_known_only_from_its_subjects_is_listed_searched_and_kept() {
    let state = Arc::new(RwLock::new(State::default()));
    // An older writer (or an import) wrote a `:.old:` schema without a CONTEXT record.
    apply(
        &state,
        json!({"keytype": "SCHEMA", "subject": ":.old:s", "version": 1, "magic": 1}),
        Some(
            json!({"subject": ":.old:s", "version": 1, "id": 7, "schema": SCHEMA, "deleted": false}),
        ),
    );
    let api = Api::on(Registry::new(state.clone(), Store::Memory(state.clone())));
    assert_eq!(api.get("/contexts").await, json!([".", ".old"]));
    // An id lookup with an unqualified subject searches the context.
    let found = api.get("/schemas/ids/7?subject=s").await;
    assert_eq!(found["schema"], json!(SCHEMA));
    // The context is not empty: it cannot be deleted.
    let (s, v) = api.call("DELETE", "/contexts/.old", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(code(&v), 42211, "{v}");
    // A CONTEXT tombstone (another writer's) does not forget a context that still holds subjects.
    apply(
        &state,
        json!({"keytype": "CONTEXT", "tenant": "default", "context": ".old", "magic": 0}),
        None,
    );
    assert_eq!(api.get("/contexts").await, json!([".", ".old"]));
    // Once its subject is gone for good, it can be deleted.
    for permanent in ["false", "true"] {
        let (s, v) = api
            .call(
                "DELETE",
                &format!("/subjects/:.old:s?permanent={permanent}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = api.call("DELETE", "/contexts/.old", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(api.get("/contexts").await, json!(["."]));
}
