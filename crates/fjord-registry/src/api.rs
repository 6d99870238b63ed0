//! The REST API: Confluent Schema Registry's paths, bodies, answers and error codes, on axum.
//!
//! Handlers only translate: path and query parameters, the JSON body (content type checked, size capped,
//! malformed JSON → 400, wrong shape → 422), the answer's JSON. What they mean is in `registry.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body as AxumBody, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::context::context_of;
use crate::error::{Error, NotPrimaryMarker, Result, CONTENT_TYPE};
use crate::forward::{forward, ForwardError, FORWARDED_HEADER};
use crate::registry::{Registry, SchemaRequest, VersionSpec};
use crate::store::Role;

/// The largest request body accepted (Confluent's default `max.request.size`-like cap; a schema is far smaller).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How long a write waits for a primary to be elected (or to come back) before answering 50004.
pub const PRIMARY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

type Reg = State<Arc<Registry>>;
type Params = Query<HashMap<String, String>>;
type Body = std::result::Result<Bytes, BytesRejection>;

pub fn router(registry: Arc<Registry>) -> Router {
    // Context URLs are rewritten before the routes are matched (and before `route_writes` decides what is a
    // write), so the router below only knows qualified subjects.
    let routes = routes(registry);
    let rewrite = axum::middleware::map_request(rewrite_context_url);
    Router::new().fallback_service(tower_layer::Layer::layer(&rewrite, routes))
}

fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1/metadata/primary", get(primary))
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
        .route("/contexts", get(list_contexts))
        .route("/contexts/{context}", axum::routing::delete(delete_context))
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
        .layer(axum::middleware::from_fn_with_state(
            registry.clone(),
            route_writes,
        ))
        .with_state(registry)
}

/// Confluent's context URLs as the paths they stand for (its `ContextFilter`): under `/contexts/{ctx}/`, the
/// subject after `subjects/` (and after a leading `config/` or `mode/`) is qualified with the context unless it
/// already names one (`:.x:s`, `:*:s`); a bare `config` or `mode` becomes the context's (`/config/:.ctx:`);
/// `schemas/ids/...` looks the id up in the context (`subject` parameter) and `subjects`/`schemas` list it
/// (`subjectPrefix`). `None` when `path` is not such a URL (`/contexts` and `/contexts/{ctx}` are routes of
/// their own); `Err` is a context name that is not one.
pub fn context_url(path: &str, query: &[(String, String)]) -> Option<Result<String, String>> {
    let rest = path.strip_prefix("/contexts/")?;
    let (raw_context, rest) = rest.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let context = match crate::context::context_name(&decode(raw_context)) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let prefix = crate::context::context_prefix(&context);
    let names_context = |s: &str| {
        let s = decode(s);
        s.starts_with(":.") || s.starts_with(crate::context::WILDCARD)
    };
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b':');
    let encoded_prefix = percent_encoding::utf8_percent_encode(&prefix, SEGMENT).to_string();
    let mut segments = Vec::new();
    let mut subject_next = false;
    let mut config_or_mode = false;
    for (i, seg) in rest.split('/').enumerate() {
        if subject_next {
            subject_next = false;
            if names_context(seg) {
                segments.push(seg.to_string());
            } else {
                segments.push(format!("{encoded_prefix}{seg}"));
            }
            continue;
        }
        if seg == "subjects" || (i == 0 && (seg == "config" || seg == "mode")) {
            subject_next = true;
            config_or_mode = i == 0 && seg != "subjects";
        }
        segments.push(seg.to_string());
    }
    if subject_next && config_or_mode && !prefix.is_empty() {
        segments.push(encoded_prefix);
    }
    let new_path = segments.join("/");
    let mut query = query.to_vec();
    let qualify = |query: &mut Vec<(String, String)>, name: &str| {
        let mut found = false;
        for (k, v) in query.iter_mut() {
            if k == name {
                found = true;
                if !names_context(v) {
                    *v = format!("{prefix}{v}");
                }
            }
        }
        if !found {
            query.push((name.to_string(), prefix.clone()));
        }
    };
    let trimmed = new_path.trim_end_matches('/');
    if trimmed.starts_with("schemas/ids") {
        qualify(&mut query, "subject");
    } else if trimmed == "subjects" || trimmed == "schemas" {
        qualify(&mut query, "subjectPrefix");
    }
    let mut out = format!("/{new_path}");
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&percent_encoding::utf8_percent_encode(k, SEGMENT).to_string());
        out.push('=');
        out.push_str(&percent_encoding::utf8_percent_encode(v, SEGMENT).to_string());
    }
    Some(Ok(out))
}

async fn rewrite_context_url(mut req: Request) -> std::result::Result<Request, Response> {
    if !req.uri().path().starts_with("/contexts/") {
        return Ok(req);
    }
    let query: Vec<(String, String)> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    match context_url(req.uri().path(), &query) {
        None => Ok(req),
        Some(Err(e)) => Err(Error::BadRequest(e).into_response()),
        Some(Ok(path_and_query)) => match path_and_query.parse() {
            Ok(uri) => {
                *req.uri_mut() = uri;
                Ok(req)
            }
            Err(e) => Err(Error::BadRequest(format!("{path_and_query}: {e}")).into_response()),
        },
    }
}

/// Whether a request changes the registry (and so must be served by the primary): registrations, deletes, and
/// every PUT and DELETE of config and mode. Lookups and compatibility checks are POSTs that only read.
pub fn is_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::PUT | Method::DELETE => true,
        Method::POST => {
            path.starts_with("/subjects/") && path.trim_end_matches('/').ends_with("/versions")
        }
        _ => false,
    }
}

/// Serves a write here when this instance is the primary, and forwards it to the primary otherwise: the
/// primary's answer is returned as it is, after this instance has read the topic past it (so that the client
/// reads its own write from either instance). Reads are always served here.
async fn route_writes(State(r): Reg, req: Request, next: Next) -> Response {
    if !is_write(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return Error::PayloadTooLarge(MAX_BODY_BYTES).into_response();
    };
    let forwarded = parts.headers.contains_key(FORWARDED_HEADER);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let method = parts.method.clone();
    let deadline = tokio::time::Instant::now() + PRIMARY_WAIT;
    let mut last = String::from("no primary is elected");
    loop {
        match r.store().role() {
            Role::Primary => {
                // The request's head is kept (cloned for each try): an instance demoted before it wrote
                // anything and promoted again serves the write itself.
                let resp = next
                    .clone()
                    .run(Request::from_parts(
                        parts.clone(),
                        AxumBody::from(bytes.clone()),
                    ))
                    .await;
                // Demoted before writing anything: the write goes to the new primary instead.
                if forwarded || resp.extensions().get::<NotPrimaryMarker>().is_none() {
                    return resp;
                }
                last = "this instance stopped being the primary".into();
            }
            Role::Secondary(_) if forwarded => {
                return Error::NotPrimary(
                    "this registry instance is not the primary (it received a forwarded write)"
                        .into(),
                )
                .into_response();
            }
            Role::Secondary(Some(url)) => {
                match forward(
                    &url,
                    method.clone(),
                    &path_and_query,
                    content_type.clone(),
                    bytes.clone(),
                )
                .await
                {
                    Ok(a)
                        if a.status == StatusCode::INTERNAL_SERVER_ERROR
                            && is_not_primary(&a.body) =>
                    {
                        last = format!("{url} is no longer the primary");
                    }
                    Ok(a) => {
                        if a.status.is_success() {
                            if let Err(e) = r.store().sync().await {
                                tracing::warn!("after forwarding a write to {url}: {e}");
                            }
                        }
                        let mut resp = (a.status, a.body).into_response();
                        if let Some(ct) = a.content_type {
                            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
                        }
                        return resp;
                    }
                    Err(ForwardError::NotSent(e)) => last = e,
                    Err(ForwardError::Failed(e)) => return Error::ForwardFailed(e).into_response(),
                }
            }
            Role::Secondary(None) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Error::NotPrimary(format!(
                "no primary registry could take the write within {} s ({last})",
                PRIMARY_WAIT.as_secs()
            ))
            .into_response();
        }
        r.store()
            .role_changed(std::time::Duration::from_millis(250))
            .await;
    }
}

fn is_not_primary(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error_code"].as_i64())
        == Some(50004)
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

/// The `subject` query parameter of `/schemas/ids/{id}` (which context the id is looked up in).
fn subject_param(q: &HashMap<String, String>) -> Option<&str> {
    q.get("subject").map(String::as_str)
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

/// `GET /v1/metadata/primary` (Fjord's own): whether this instance is the primary, and which one is.
async fn primary(State(r): Reg) -> Response {
    let election = r.store().election();
    let (is_primary, url) = match r.store().role() {
        Role::Primary => (true, election.map(|e| e.advertised_url.clone())),
        Role::Secondary(url) => (false, url),
    };
    ok(&json!({
        "primary": is_primary,
        "primaryUrl": url,
        "advertisedUrl": election.map(|e| &e.advertised_url),
        "groupId": election.map(|e| &e.group_id),
        "leaderEligibility": election.is_none_or(|e| e.eligible),
    }))
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
            v.schema = r.formatted(
                &context_of(&v.subject),
                v.schema_type.as_deref(),
                &v.schema,
                &v.references,
                fmt(&q),
            )?;
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
        .and_then(|v| {
            r.formatted(
                &context_of(&v.subject),
                v.schema_type.as_deref(),
                &v.schema,
                &v.references,
                fmt(&q),
            )
        }) {
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
        .and_then(|id| r.schema_by_id(id, subject_param(&q)))
        .and_then(|(ctx, mut s)| {
            s.schema = r.formatted(
                &ctx,
                s.schema_type.as_deref(),
                &s.schema,
                &s.references,
                fmt(&q),
            )?;
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
            if let Some(m) = &s.metadata {
                v.insert("metadata".into(), m.clone());
            }
            if let Some(r) = &s.rule_set {
                v.insert("ruleSet".into(), r.clone());
            }
            v.insert("schema".into(), json!(s.schema));
            ok(&v)
        }
        Err(e) => e.into_response(),
    }
}

async fn raw_schema_by_id(State(r): Reg, Path(id): Path<String>, Query(q): Params) -> Response {
    let found = parse_id(&id)
        .and_then(|id| r.schema_by_id(id, subject_param(&q)))
        .and_then(|(ctx, s)| {
            r.formatted(
                &ctx,
                s.schema_type.as_deref(),
                &s.schema,
                &s.references,
                fmt(&q),
            )
        });
    match found {
        Ok(text) => raw(text),
        Err(e) => e.into_response(),
    }
}

async fn id_subjects(State(r): Reg, Path(id): Path<String>, Query(q): Params) -> Response {
    match parse_id(&id).and_then(|id| r.id_versions(id, subject_param(&q), flag(&q, "deleted"))) {
        Ok(vs) => {
            let mut subjects: Vec<String> = vs.into_iter().map(|(s, _)| s).collect();
            subjects.dedup();
            ok(&subjects)
        }
        Err(e) => e.into_response(),
    }
}

async fn id_versions(State(r): Reg, Path(id): Path<String>, Query(q): Params) -> Response {
    match parse_id(&id).and_then(|id| r.id_versions(id, subject_param(&q), flag(&q, "deleted"))) {
        Ok(vs) => ok(&vs
            .into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect::<Vec<_>>()),
        Err(e) => e.into_response(),
    }
}

async fn list_contexts(State(r): Reg, Query(q): Params) -> Response {
    let number = |name: &str, default: i64| -> Result<i64> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| Error::BadRequest(format!("{name} must be an integer, not {v}")))
        })
    };
    let (offset, limit) = match (number("offset", 0), number("limit", -1)) {
        (Ok(o), Ok(l)) => (usize::try_from(o).unwrap_or(0), l),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    ok(&r.contexts(q.get("contextPrefix").map(String::as_str), offset, limit))
}

async fn delete_context(State(r): Reg, Path(context): Path<String>) -> Response {
    match r.delete_context(&context).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_what_changes_the_registry() {
        for (m, p) in [
            (Method::POST, "/subjects/a/versions"),
            (Method::POST, "/subjects/a/versions/"),
            (Method::DELETE, "/subjects/a"),
            (Method::DELETE, "/subjects/a/versions/1"),
            (Method::PUT, "/config"),
            (Method::DELETE, "/config/a"),
            (Method::PUT, "/mode"),
            (Method::PUT, "/mode/a"),
            (Method::DELETE, "/mode/a"),
        ] {
            assert!(is_write(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::POST, "/subjects/a"),
            (Method::POST, "/compatibility/subjects/a/versions"),
            (Method::POST, "/compatibility/subjects/a/versions/1"),
            (Method::GET, "/subjects/a/versions"),
            (Method::GET, "/mode"),
        ] {
            assert!(!is_write(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn context_urls_stand_for_qualified_subjects_as_in_confluents_filter() {
        let q = |path: &str, query: &[(&str, &str)]| {
            let query: Vec<(String, String)> = query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            context_url(path, &query).map(|r| r.unwrap())
        };
        assert_eq!(
            q("/contexts/.team/subjects/orders/versions", &[]).as_deref(),
            Some("/subjects/:.team:orders/versions")
        );
        assert_eq!(
            q("/contexts/team/subjects/:.other:orders/versions/1", &[]).as_deref(),
            Some("/subjects/:.other:orders/versions/1")
        );
        assert_eq!(
            q("/contexts/.team/subjects", &[("deleted", "true")]).as_deref(),
            Some("/subjects?deleted=true&subjectPrefix=:.team:")
        );
        assert_eq!(
            q("/contexts/./subjects", &[]).as_deref(),
            Some("/subjects?subjectPrefix=")
        );
        assert_eq!(
            q("/contexts/.team/schemas/ids/1", &[]).as_deref(),
            Some("/schemas/ids/1?subject=:.team:")
        );
        assert_eq!(
            q("/contexts/.team/config", &[]).as_deref(),
            Some("/config/:.team:")
        );
        assert_eq!(
            q("/contexts/.team/mode/orders", &[]).as_deref(),
            Some("/mode/:.team:orders")
        );
        assert_eq!(
            q(
                "/contexts/.team/compatibility/subjects/o/versions/latest",
                &[]
            )
            .as_deref(),
            Some("/compatibility/subjects/:.team:o/versions/latest")
        );
        assert_eq!(q("/contexts/.team", &[]), None);
        assert_eq!(q("/contexts", &[]), None);
        assert!(context_url("/contexts/a:b/subjects", &[]).unwrap().is_err());
    }

    #[test]
    fn only_a_50004_answer_means_the_instance_was_not_the_primary() {
        let refused = Error::NotPrimary("x".into()).into_response();
        assert!(refused.extensions().get::<NotPrimaryMarker>().is_some());
        assert!(is_not_primary(br#"{"error_code":50004,"message":"m"}"#));
        assert!(!is_not_primary(br#"{"error_code":50001,"message":"m"}"#));
        assert!(!is_not_primary(b"not json"));
        let other = Error::Store("x".into()).into_response();
        assert!(other.extensions().get::<NotPrimaryMarker>().is_none());
    }
}
