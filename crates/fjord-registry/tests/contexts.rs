//! Schema contexts over the REST API (in-memory store): qualified subjects `:.ctx:s`, ids per context,
//! listings, the context URLs `/contexts/{ctx}/...`, config and mode per context, deletes.

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

    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema })),
        )
        .await
    }

    async fn id(&self, subject: &str, schema: &str) -> i64 {
        let (s, v) = self.register(subject, schema).await;
        assert_eq!(s, StatusCode::OK, "register {subject}: {v}");
        v["id"].as_i64().unwrap()
    }
}

fn record(name: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","fields":[{fields}]}}"#)
}

fn code(v: &Value) -> i64 {
    v["error_code"].as_i64().unwrap_or(0)
}

#[tokio::test]
async fn one_subject_name_in_two_contexts_has_its_own_versions_and_ids() {
    let api = Api::new();
    let plain = record("Order", r#"{"name":"id","type":"long"}"#);
    let team = record("TeamOrder", r#"{"name":"sku","type":"string"}"#);
    // Each context numbers its schemas from 1.
    assert_eq!(api.id("orders-value", &plain).await, 1);
    assert_eq!(api.id(":.team:orders-value", &team).await, 1);
    // The same text in both contexts: one id per context, not shared across them.
    assert_eq!(api.id("shared", r#""string""#).await, 2);
    assert_eq!(api.id(":.team:shared", r#""string""#).await, 2);
    assert_eq!(api.id(":.team:other", r#""int""#).await, 3);
    // Idempotent per context; `:.:s` is the default context's `s`.
    assert_eq!(api.id(":.team:orders-value", &team).await, 1);
    assert_eq!(api.id(":.:orders-value", &plain).await, 1);

    // Reads by qualified subject answer the qualified name and the context's id.
    let v = api
        .get("/subjects/:.team:orders-value/versions/latest")
        .await;
    assert_eq!(
        (v["subject"].clone(), v["id"].clone(), v["schema"].clone()),
        (json!(":.team:orders-value"), json!(1), json!(team))
    );
    let v = api.get("/subjects/orders-value/versions/1").await;
    assert_eq!(
        (v["subject"].clone(), v["schema"].clone()),
        (json!("orders-value"), json!(plain))
    );

    // Listing: every context by default, sorted by name; subjectPrefix selects like Confluent's.
    assert_eq!(
        api.get("/subjects").await,
        json!([
            ":.team:orders-value",
            ":.team:other",
            ":.team:shared",
            "orders-value",
            "shared"
        ])
    );
    assert_eq!(
        api.get("/subjects?subjectPrefix=").await,
        json!(["orders-value", "shared"])
    );
    assert_eq!(
        api.get("/subjects?subjectPrefix=:.team:").await,
        json!([":.team:orders-value", ":.team:other", ":.team:shared"])
    );
    assert_eq!(
        api.get("/subjects?subjectPrefix=:*:orders").await,
        json!([":.team:orders-value", "orders-value"])
    );
    assert_eq!(api.get("/contexts").await, json!([".", ".team"]));
    assert_eq!(
        api.get("/contexts?contextPrefix=.t").await,
        json!([".team"])
    );
    assert_eq!(
        api.get("/contexts?offset=1&limit=5").await,
        json!([".team"])
    );

    // Ids are looked up in the context the subject parameter names (the default context without one).
    assert_eq!(api.get("/schemas/ids/1").await["schema"], json!(plain));
    assert_eq!(
        api.get("/schemas/ids/1?subject=:.team:orders-value").await["schema"],
        json!(team)
    );
    assert_eq!(
        api.get("/schemas/ids/1?subject=:.team:").await["schema"],
        json!(team)
    );
    // An unqualified subject that has the id only in another context finds it there, as in Confluent.
    assert_eq!(
        api.get("/schemas/ids/3?subject=other").await["schema"],
        json!("\"int\"")
    );
    let (s, v) = api.call("GET", "/schemas/ids/3", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, 40403), "{v}");
    let (s, v) = api
        .call("GET", "/schemas/ids/2?subject=:.team:orders-value", None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, 40403), "{v}");
    assert_eq!(
        api.get("/schemas/ids/2/subjects?subject=:.team:").await,
        json!([":.team:shared"])
    );
    assert_eq!(
        api.get("/schemas/ids/2/versions").await,
        json!([{"subject": "shared", "version": 1}])
    );

    // Lookup compares within the subject's context.
    let (s, v) = api
        .call(
            "POST",
            "/subjects/:.team:orders-value",
            Some(json!({ "schema": team })),
        )
        .await;
    assert_eq!(
        (s, v["id"].clone(), v["version"].clone()),
        (StatusCode::OK, json!(1), json!(1))
    );
    let (s, v) = api
        .call(
            "POST",
            "/subjects/:.team:orders-value",
            Some(json!({ "schema": plain })),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, 40403), "{v}");
}

#[tokio::test]
async fn context_urls_reach_the_same_subjects_as_qualified_names() {
    let api = Api::new();
    let team = record("T", r#"{"name":"a","type":"string"}"#);
    let (s, v) = api
        .call(
            "POST",
            "/contexts/.team/subjects/orders/versions",
            Some(json!({ "schema": team })),
        )
        .await;
    assert_eq!((s, v["id"].clone()), (StatusCode::OK, json!(1)), "{v}");
    // A context name without its dot is the same context.
    assert_eq!(
        api.get("/contexts/team/subjects/orders/versions").await,
        json!([1])
    );
    assert_eq!(
        api.get("/subjects/:.team:orders/versions").await,
        json!([1])
    );
    assert_eq!(
        api.get("/contexts/.team/subjects").await,
        json!([":.team:orders"])
    );
    assert_eq!(api.get("/contexts/./subjects").await, json!([]));
    assert_eq!(
        api.get("/contexts/.team/schemas/ids/1").await["schema"],
        json!(team)
    );
    let (s, v) = api
        .call("GET", "/contexts/.other/schemas/ids/1", None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, 40403), "{v}");
    let (s, v) = api.call("GET", "/contexts/a:b/subjects", None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, 400), "{v}");
    assert!(v["message"].as_str().unwrap().contains("colon"), "{v}");
}

#[tokio::test]
async fn compatibility_and_mode_are_set_per_context() {
    let api = Api::new();
    let v1 = record("R", r#"{"name":"a","type":"string"}"#);
    // Adding a field without a default is not BACKWARD compatible.
    let v2 = record(
        "R",
        r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#,
    );
    api.id("s", &v1).await;
    api.id(":.team:s", &v1).await;

    // The context's level (set through its URL) applies to its subjects only.
    let (s, v) = api
        .call(
            "PUT",
            "/contexts/.team/config",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!(
        (s, v.clone()),
        (StatusCode::OK, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        api.get("/config/:.team:").await,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(
        api.get("/config/:.team:s?defaultToGlobal=true").await,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(
        api.get("/config/s?defaultToGlobal=true").await,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (s, v) = api.register("s", &v2).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, 409), "{v}");
    assert_eq!(api.id(":.team:s", &v2).await, 2);

    // The default context's level (`/config`) does not reach another context; `:.__GLOBAL:` does.
    let (s, _) = api.call("DELETE", "/config/:.team:", None).await;
    assert_eq!(s, StatusCode::OK);
    let v3 = record(
        "R",
        r#"{"name":"a","type":"string"},{"name":"b","type":"int"},{"name":"c","type":"int"}"#,
    );
    let (s, _) = api
        .call("PUT", "/config", Some(json!({"compatibility": "NONE"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.register(":.team:s", &v3).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, 409), "{v}");
    let (s, _) = api
        .call(
            "PUT",
            "/config/:.__GLOBAL:",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(api.id(":.team:s", &v3).await, 3);

    // Read-only for one context: its writes are refused, the default context's are not.
    let (s, _) = api
        .call("PUT", "/mode/:.team:", Some(json!({"mode": "READONLY"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        api.get("/contexts/.team/mode").await,
        json!({"mode": "READONLY"})
    );
    assert_eq!(
        api.get("/mode/:.team:s?defaultToGlobal=true").await,
        json!({"mode": "READONLY"})
    );
    let (s, v) = api.register(":.team:new", r#""string""#).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42205),
        "{v}"
    );
    api.id("new", r#""string""#).await;
    let (s, _) = api.call("DELETE", "/mode/:.team:", None).await;
    assert_eq!(s, StatusCode::OK);
    api.id(":.team:new", r#""string""#).await;
}

#[tokio::test]
async fn unqualified_references_resolve_in_the_referring_schemas_context() {
    let api = Api::new();
    // `Common` differs between the contexts; a team schema referencing `common` gets the team's.
    api.id("common", &record("Common", r#"{"name":"x","type":"int"}"#))
        .await;
    api.id(
        ":.team:common",
        &record("Common", r#"{"name":"y","type":"string"}"#),
    )
    .await;
    let user = record("User", r#"{"name":"c","type":"Common"}"#);
    let refs = json!([{"name": "Common", "subject": "common", "version": 1}]);
    let (s, v) = api
        .call(
            "POST",
            "/subjects/:.team:user/versions",
            Some(json!({"schema": user, "references": refs})),
        )
        .await;
    assert_eq!((s, v["id"].clone()), (StatusCode::OK, json!(2)), "{v}");
    // The team's `common` version 1 is now referenced; the default context's is not.
    assert_eq!(
        api.get("/subjects/:.team:common/versions/1/referencedby")
            .await,
        json!([2])
    );
    assert_eq!(
        api.get("/subjects/common/versions/1/referencedby").await,
        json!([])
    );
    let (s, v) = api.call("DELETE", "/subjects/:.team:common", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42206),
        "{v}"
    );
}

#[tokio::test]
async fn deletes_in_a_context_and_a_context_deleted_once_empty() {
    let api = Api::new();
    api.id(":.team:a", r#""string""#).await;
    api.id("a", r#""int""#).await;
    let (s, v) = api.call("DELETE", "/contexts/.team", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42211),
        "{v}"
    );

    let (s, v) = api.call("DELETE", "/subjects/:.team:a", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([1])));
    assert_eq!(api.get("/subjects").await, json!(["a"]));
    assert_eq!(
        api.get("/subjects?deleted=true").await,
        json!([":.team:a", "a"])
    );
    // A soft-deleted subject still holds the context.
    let (s, v) = api.call("DELETE", "/contexts/.team", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42211),
        "{v}"
    );
    let (s, v) = api
        .call("DELETE", "/subjects/:.team:a?permanent=true", None)
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!([1])));
    let (s, _) = api.call("DELETE", "/contexts/.team", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/contexts").await, json!(["."]));
    let (s, v) = api.call("DELETE", "/contexts/.team", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, 40401), "{v}");
    // The default context's subject is untouched; a new registration re-creates the context, and its ids
    // continue after the highest it ever used (an id is not reused within the running registry).
    assert_eq!(api.get("/subjects/a/versions").await, json!([1]));
    assert_eq!(api.id(":.team:b", r#""long""#).await, 2);
    assert_eq!(api.get("/contexts").await, json!([".", ".team"]));
}
