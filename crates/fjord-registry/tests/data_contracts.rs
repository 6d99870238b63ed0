//! Confluent's data contract fields (`metadata`, `ruleSet`) over the REST API (in-memory store, whose records go
//! through the same encode and apply as `_schemas`): accepted, stored, answered and part of a schema's identity;
//! never enforced.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fjord_registry::{api, Registry};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", "application/vnd.schemaregistry.v1+json");
    }
    let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;

#[tokio::test]
async fn metadata_and_rule_sets_are_stored_answered_inherited_and_part_of_identity() {
    let app = api::router(Arc::new(Registry::in_memory()));
    let metadata = json!({"properties": {"owner": "team-a", "email": "a@example.com"}, "tags": {"id": ["PII"]}});
    let rule_set = json!({"domainRules": [{"name": "checkId", "kind": "CONDITION", "type": "CEL",
                                           "mode": "WRITE", "expr": "message.id > 0"}]});
    let (s, v) = call(
        &app,
        "POST",
        "/subjects/orders/versions",
        Some(json!({"schema": SCHEMA, "metadata": metadata.clone(), "ruleSet": rule_set.clone()})),
    )
    .await;
    assert_eq!((s, v.clone()), (StatusCode::OK, json!({"id": 1})));

    // Answered as registered, by version and by id.
    let (_, v) = call(&app, "GET", "/subjects/orders/versions/1", None).await;
    assert_eq!(
        v,
        json!({"subject": "orders", "version": 1, "id": 1, "metadata": metadata.clone(), "ruleSet": rule_set.clone(),
               "schema": SCHEMA})
    );
    let (_, v) = call(&app, "GET", "/schemas/ids/1", None).await;
    assert_eq!(
        v,
        json!({"schema": SCHEMA, "metadata": metadata.clone(), "ruleSet": rule_set.clone()})
    );

    // A serializer registering the same text without a contract gets the same version (the latest's contract
    // is inherited, as in Confluent), and so does its lookup.
    let (s, v) = call(
        &app,
        "POST",
        "/subjects/orders/versions",
        Some(json!({"schema": SCHEMA})),
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"id": 1})));
    let (s, v) = call(
        &app,
        "POST",
        "/subjects/orders",
        Some(json!({"schema": SCHEMA})),
    )
    .await;
    assert_eq!(
        (s, v["version"].clone(), v["metadata"].clone()),
        (StatusCode::OK, json!(1), metadata.clone())
    );
    assert_eq!(
        call(&app, "GET", "/subjects/orders/versions", None).await.1,
        json!([1])
    );

    // Other metadata (keys in another order are the same metadata) makes another schema: a new version and id.
    let same = json!({"tags": {"id": ["PII"]}, "properties": {"email": "a@example.com", "owner": "team-a"}});
    let (_, v) = call(
        &app,
        "POST",
        "/subjects/orders/versions",
        Some(json!({"schema": SCHEMA, "metadata": same.clone(), "ruleSet": rule_set.clone()})),
    )
    .await;
    assert_eq!(v, json!({"id": 1}));
    let other = json!({"properties": {"owner": "team-b"}});
    let (s, v) = call(
        &app,
        "POST",
        "/subjects/orders/versions",
        Some(json!({"schema": SCHEMA, "metadata": other.clone()})),
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"id": 2})));
    let (_, v) = call(&app, "GET", "/subjects/orders/versions/2", None).await;
    assert_eq!(
        (v["metadata"].clone(), v["ruleSet"].clone()),
        (other.clone(), rule_set.clone())
    );
    // A lookup with version 1's contract finds version 1; without one, the latest's (version 2).
    let (_, v) = call(
        &app,
        "POST",
        "/subjects/orders",
        Some(json!({"schema": SCHEMA, "metadata": metadata.clone(), "ruleSet": rule_set.clone()})),
    )
    .await;
    assert_eq!(v["version"], json!(1));
    let (_, v) = call(
        &app,
        "POST",
        "/subjects/orders",
        Some(json!({"schema": SCHEMA})),
    )
    .await;
    assert_eq!(v["version"], json!(2));

    // Not an object: Confluent's 422, never a 500.
    let (s, v) = call(
        &app,
        "POST",
        "/subjects/orders/versions",
        Some(json!({"schema": SCHEMA, "metadata": "owner=a"})),
    )
    .await;
    assert_eq!(
        (s, v["error_code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(422)),
        "{v}"
    );

    // A soft-deleted version keeps its contract.
    let (s, _) = call(&app, "DELETE", "/subjects/orders/versions/1", None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = call(
        &app,
        "GET",
        "/subjects/orders/versions/1?deleted=true",
        None,
    )
    .await;
    assert_eq!(v["metadata"], metadata);
}
