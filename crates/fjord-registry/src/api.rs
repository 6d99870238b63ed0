//! The REST API: Confluent Schema Registry's paths, bodies, answers and error codes, on axum.
//!
//! Handlers only translate: path and query parameters, the JSON body (content type checked, size capped,
//! malformed JSON → 400, wrong shape → 422), the answer's JSON. What they mean is in `registry.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result, CONTENT_TYPE};
use crate::registry::{Registry, SchemaRequest, VersionSpec};

/// The largest request body accepted (Confluent's default `max.request.size`-like cap; a schema is far smaller).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

type Reg = State<Arc<Registry>>;
type Params = Query<HashMap<String, String>>;
type Body = std::result::Result<Bytes, BytesRejection>;

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/types", get(schema_types))
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compat_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compat_version),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(get_global_mode).put(put_global_mode))
        .route(
            "/mode/{subject}",
            get(get_subject_mode)
                .put(put_subject_mode)
                .delete(delete_subject_mode),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(registry)
}

fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => Error::Store(format!("cannot encode the answer: {e}")).into_response(),
    }
}

fn ok<T: Serialize>(v: &T) -> Response {
    json_response(StatusCode::OK, v)
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The `format` query parameter (`serialized` for Protobuf descriptors).
fn fmt(q: &HashMap<String, String>) -> Option<&str> {
    q.get("format").map(String::as_str)
}

/// The request body as `T`: a JSON content type (or none), at most [`MAX_BODY_BYTES`], valid JSON of the right
/// shape.
fn body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        const ACCEPTED: [&str; 4] = [
            "application/vnd.schemaregistry.v1+json",
            "application/vnd.schemaregistry+json",
            "application/json",
            "application/octet-stream",
        ];
        if !ACCEPTED.contains(&essence) {
            return Err(Error::UnsupportedMediaType(ct));
        }
    }
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge(MAX_BODY_BYTES)
        } else {
            Error::MalformedJson(r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::UnprocessableEntity(e.to_string()),
        _ => Error::MalformedJson(e.to_string()),
    })
}

fn parse_id(s: &str) -> Result<i32> {
    // Jersey answers a path parameter that is not an int with 404.
    s.parse::<i32>().map_err(|_| Error::NotFound)
}

async fn root() -> Response {
    ok(&json!({}))
}

async fn not_found() -> Response {
    Error::NotFound.into_response()
}

async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error_code": 405, "message": "HTTP 405 Method Not Allowed"}),
    )
}

async fn list_subjects(State(r): Reg, Query(q): Params) -> Response {
    ok(&r.subjects(
        flag(&q, "deleted"),
        q.get("subjectPrefix").map(String::as_str),
    ))
}

async fn list_versions(State(r): Reg, Path(subject): Path<String>, Query(q): Params) -> Response {
    match r.versions(&subject, flag(&q, "deleted")) {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

async fn register(
    State(r): Reg,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let req: SchemaRequest = match body(&headers, b) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    match r.register(&subject, &req, flag(&q, "normalize")).await {
        Ok(id) => ok(&json!({ "id": id })),
        Err(e) => e.into_response(),
    }
}

async fn lookup(
    State(r): Reg,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let req: SchemaRequest = match body(&headers, b) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    match r.lookup(&subject, &req, flag(&q, "deleted")) {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

async fn get_version(
    State(r): Reg,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    match VersionSpec::parse(&version)
        .and_then(|v| r.get_version(&subject, v, flag(&q, "deleted")))
        .and_then(|mut v| {
            v.schema = r.formatted(v.schema_type.as_deref(), &v.schema, &v.references, fmt(&q))?;
            Ok(v)
        }) {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

/// The schema itself, as JSON text (not quoted), as Confluent's `/schema` endpoints answer.
fn raw(schema: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        schema,
    )
        .into_response()
}

async fn get_version_schema(
    State(r): Reg,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    match VersionSpec::parse(&version)
        .and_then(|v| r.get_version(&subject, v, flag(&q, "deleted")))
        .and_then(|v| r.formatted(v.schema_type.as_deref(), &v.schema, &v.references, fmt(&q)))
    {
        Ok(text) => raw(text),
        Err(e) => e.into_response(),
    }
}

async fn referenced_by(
    State(r): Reg,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    match VersionSpec::parse(&version).and_then(|v| r.referenced_by(&subject, v)) {
        Ok(ids) => ok(&ids),
        Err(e) => e.into_response(),
    }
}

async fn delete_subject(State(r): Reg, Path(subject): Path<String>, Query(q): Params) -> Response {
    match r.delete_subject(&subject, flag(&q, "permanent")).await {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

async fn delete_version(
    State(r): Reg,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let spec = match VersionSpec::parse(&version) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    match r
        .delete_version(&subject, spec, flag(&q, "permanent"))
        .await
    {
        Ok(v) => ok(&v),
        Err(e) => e.into_response(),
    }
}

async fn schema_by_id(State(r): Reg, Path(id): Path<String>, Query(q): Params) -> Response {
    let found = parse_id(&id)
        .and_then(|id| r.schema_by_id(id))
        .and_then(|mut s| {
            s.schema = r.formatted(s.schema_type.as_deref(), &s.schema, &s.references, fmt(&q))?;
            Ok(s)
        });
    match found {
        Ok(s) => {
            let mut v = serde_json::Map::new();
            if let Some(t) = &s.schema_type {
                v.insert("schemaType".into(), json!(t));
            }
            if !s.references.is_empty() {
                v.insert("references".into(), json!(s.references));
            }
            v.insert("schema".into(), json!(s.schema));
            ok(&v)
        }
        Err(e) => e.into_response(),
    }
}

async fn raw_schema_by_id(State(r): Reg, Path(id): Path<String>, Query(q): Params) -> Response {
    let found = parse_id(&id)
        .and_then(|id| r.schema_by_id(id))
        .and_then(|s| r.formatted(s.schema_type.as_deref(), &s.schema, &s.references, fmt(&q)));
    match found {
        Ok(text) => raw(text),
        Err(e) => e.into_response(),
    }
}

async fn id_subjects(State(r): Reg, Path(id): Path<String>, Query(q): Params) -> Response {
    match parse_id(&id).and_then(|id| r.id_versions(id, flag(&q, "deleted"))) {
        Ok(vs) => {
            let mut subjects: Vec<String> = vs.into_iter().map(|(s, _)| s).collect();
            subjects.dedup();
            ok(&subjects)
        }
        Err(e) => e.into_response(),
    }
}

async fn id_versions(State(r): Reg, Path(id): Path<String>, Query(q): Params) -> Response {
    match parse_id(&id).and_then(|id| r.id_versions(id, flag(&q, "deleted"))) {
        Ok(vs) => ok(&vs
            .into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect::<Vec<_>>()),
        Err(e) => e.into_response(),
    }
}

async fn schema_types() -> Response {
    ok(&crate::formats::TYPES)
}

async fn compat(
    r: Arc<Registry>,
    subject: String,
    version: Option<String>,
    q: HashMap<String, String>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let req: SchemaRequest = match body(&headers, b) {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let spec = match version.as_deref().map(VersionSpec::parse).transpose() {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    match r.check_compatibility(&subject, spec, &req) {
        Ok((is_compatible, messages)) if flag(&q, "verbose") => {
            ok(&json!({"is_compatible": is_compatible, "messages": messages}))
        }
        Ok((is_compatible, _)) => ok(&json!({ "is_compatible": is_compatible })),
        Err(e) => e.into_response(),
    }
}

async fn compat_all(
    State(r): Reg,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    b: Body,
) -> Response {
    compat(r, subject, None, q, headers, b).await
}

async fn compat_version(
    State(r): Reg,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    b: Body,
) -> Response {
    compat(r, subject, Some(version), q, headers, b).await
}

#[derive(serde::Deserialize)]
struct ConfigUpdate {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

async fn get_global_config(State(r): Reg) -> Response {
    ok(&json!({ "compatibilityLevel": r.global_compatibility() }))
}

async fn put_config(r: &Registry, subject: Option<&str>, headers: &HeaderMap, b: Body) -> Response {
    let update: ConfigUpdate = match body(headers, b) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let Some(level) = update.compatibility.or(update.compatibility_level) else {
        return Error::InvalidCompatibilityLevel.into_response();
    };
    match r.set_compatibility(subject, &level).await {
        Ok(level) => ok(&json!({ "compatibility": level })),
        Err(e) => e.into_response(),
    }
}

async fn put_global_config(State(r): Reg, headers: HeaderMap, b: Body) -> Response {
    put_config(&r, None, &headers, b).await
}

async fn delete_global_config(State(r): Reg) -> Response {
    match r.delete_compatibility(None).await {
        Ok(level) => ok(&json!({ "compatibilityLevel": level })),
        Err(e) => e.into_response(),
    }
}

async fn get_subject_config(
    State(r): Reg,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Response {
    match r.subject_compatibility(&subject, flag(&q, "defaultToGlobal")) {
        Ok(level) => ok(&json!({ "compatibilityLevel": level })),
        Err(e) => e.into_response(),
    }
}

async fn put_subject_config(
    State(r): Reg,
    Path(subject): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    put_config(&r, Some(&subject), &headers, b).await
}

async fn delete_subject_config(State(r): Reg, Path(subject): Path<String>) -> Response {
    match r.delete_compatibility(Some(&subject)).await {
        Ok(level) => ok(&json!({ "compatibilityLevel": level })),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ModeUpdate {
    mode: Option<String>,
}

async fn put_mode(
    r: &Registry,
    subject: Option<&str>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    b: Body,
) -> Response {
    let update: ModeUpdate = match body(headers, b) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let Some(mode) = update.mode else {
        return Error::InvalidMode.into_response();
    };
    match r.set_mode(subject, &mode, flag(q, "force")).await {
        Ok(mode) => ok(&json!({ "mode": mode })),
        Err(e) => e.into_response(),
    }
}

async fn get_global_mode(State(r): Reg) -> Response {
    match r.mode(None, true) {
        Ok(m) => ok(&json!({ "mode": m })),
        Err(e) => e.into_response(),
    }
}

async fn put_global_mode(State(r): Reg, Query(q): Params, headers: HeaderMap, b: Body) -> Response {
    put_mode(&r, None, &q, &headers, b).await
}

async fn get_subject_mode(
    State(r): Reg,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Response {
    match r.mode(Some(&subject), flag(&q, "defaultToGlobal")) {
        Ok(m) => ok(&json!({ "mode": m })),
        Err(e) => e.into_response(),
    }
}

async fn put_subject_mode(
    State(r): Reg,
    Path(subject): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
    b: Body,
) -> Response {
    put_mode(&r, Some(&subject), &q, &headers, b).await
}

async fn delete_subject_mode(State(r): Reg, Path(subject): Path<String>) -> Response {
    match r.delete_mode(&subject).await {
        Ok(m) => ok(&json!({ "mode": m })),
        Err(e) => e.into_response(),
    }
}
