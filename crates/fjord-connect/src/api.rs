//! Kafka Connect's REST API on axum: the paths, bodies, answers and status codes of Connect's
//! `ConnectorsResource`, `ConnectorPluginsResource` and `RootResource`. Handlers only translate; what the
//! operations mean is in `worker.rs`. Every error is `{"error_code": N, "message": "..."}`; bad input is a
//! 4xx naming what is wrong, never a 500.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Value};

use crate::config::{json_config_map, ConfigMap};
use crate::error::{Error, Result};
use crate::plugins::{self, Plugin};
use crate::worker::{TargetState, Worker};

/// The largest request body accepted; connector configs are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The Connect version `GET /` reports: the Kafka Connect REST API level this worker follows.
pub const CONNECT_VERSION: &str = "4.1.0";

type W = State<Arc<Worker>>;
pub(crate) type Body = std::result::Result<Bytes, BytesRejection>;

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).delete(delete))
        .route("/connectors/{name}/config", get(get_config).put(put_config))
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/stop", put(stop))
        .route("/connectors/{name}/tasks", get(tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(restart_task),
        )
        .route(
            "/connectors/{name}/offsets",
            get(offsets).patch(alter_offsets).delete(reset_offsets),
        )
        .route("/connectors/{name}/topics", get(topics))
        .route("/connector-plugins", get(list_plugins))
        .route("/connector-plugins/{plugin}/config", get(plugin_config))
        .route("/connector-plugins/{plugin}/config/validate", put(validate))
        .route("/admin/loggers", get(crate::admin_logging::list_loggers))
        .route(
            "/admin/loggers/{name}",
            get(crate::admin_logging::get_logger).put(crate::admin_logging::put_logger),
        )
        .route("/admin/logs", get(crate::admin_logging::logs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            worker.clone(),
            standby_guard,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(worker)
}

/// The header of a request a standby forwarded: it is never forwarded again.
const FORWARDED: &str = "x-fjord-forwarded";
/// How long a forwarded request may take (a reconfiguration waits for a task to stop, at most 5 s).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A standing-by distributed worker has no connectors: requests to their paths are forwarded to the group's
/// active worker (as Connect's followers forward to the leader), or answered with Connect's rebalance 409 when
/// there is none (yet).
async fn standby_guard(
    State(w): W,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let rebalance =
        |why: String| Error::Conflict(format!("{}{why}", crate::worker::REBALANCE)).into_response();
    if answered_here(req.uri().path(), req.headers().contains_key(OWNER_QUERY)) {
        return next.run(req).await;
    }
    // A status this worker knows (a connector it runs, or the status topic's record of one another worker runs)
    // is answered here, by the leader and by the others alike, as Connect's workers answer from their status store.
    if let Some(name) = status_read(&req) {
        if w.answers_status(name.as_deref()).await {
            return next.run(req).await;
        }
    }
    if w.is_active() {
        // The leader holds every connector's config, but only the worker running one knows its tasks' statuses
        // and offsets, and restarts them.
        // A connector's restart is the leader's: it restarts each task where it runs (`restart`).
        let path = req.uri().path();
        let owner = owner_query(path)
            .filter(|_| !path.ends_with("/restart") || path_task(path).is_some())
            .and_then(|name| w.remote_owner(&name, path_task(path)));
        let Some(owner) = owner else {
            return next.run(req).await;
        };
        return match tokio::time::timeout(FORWARD_TIMEOUT, forward(&owner, req, OWNER_QUERY)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => rebalance(format!(
                " (the worker {owner} that runs the connector did not answer: {e})"
            )),
            Err(_) => rebalance(format!(
                " (the worker {owner} that runs the connector did not answer within {FORWARD_TIMEOUT:?})"
            )),
        };
    }
    if req.headers().contains_key(FORWARDED) {
        return rebalance(
            " (this request was forwarded here, but this worker stands by too)".into(),
        );
    }
    let Some(active) = w.active_worker().await else {
        return rebalance(String::new());
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, forward(&active, req, FORWARDED)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => rebalance(format!(
            " (forwarding to the active worker {active} failed: {e})"
        )),
        Err(_) => rebalance(format!(
            " (the active worker {active} did not answer within {FORWARD_TIMEOUT:?})"
        )),
    }
}

/// The header of a request the leader sends to the worker running a connector: answered there, whatever that
/// worker's role.
const OWNER_QUERY: &str = "x-fjord-owner-query";

/// Whether a request is answered by this worker whatever its role: everything outside `/connectors`, and the
/// leader asking the worker that runs a connector (the `x-fjord-owner-query` header) for what only that worker
/// can answer. The header on any other path (a config write, a delete) is ignored: a follower honouring it
/// would write to the config topic behind the leader's back.
fn answered_here(path: &str, owner_query_header: bool) -> bool {
    !path.starts_with("/connectors") || (owner_query_header && owner_query(path).is_some())
}

/// What a status read asks for: `Some(Some(name))` for `GET /connectors/{name}/status` and
/// `.../tasks/{id}/status`, `Some(None)` for `GET /connectors?expand=status`; None for anything else.
fn status_read(req: &axum::extract::Request) -> Option<Option<String>> {
    if req.method() != axum::http::Method::GET {
        return None;
    }
    let path = req.uri().path();
    if path == "/connectors" || path == "/connectors/" {
        let expands_status = query_params(&req.uri().query().map(str::to_string))
            .iter()
            .any(|(k, v)| k == "expand" && v.split(',').any(|e| e.trim() == "status"));
        return expands_status.then_some(None);
    }
    let name = owner_query(path)?;
    let sub = path.rsplit('/').next().unwrap_or("");
    (sub == "status").then_some(Some(name))
}

/// The connector of a path only the worker running it can answer: its status, offsets, restarts and tasks'
/// statuses and restarts.
fn owner_query(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/connectors/")?;
    let (name, sub) = rest.split_once('/')?;
    let answered_by_owner = matches!(sub, "status" | "offsets" | "restart")
        || (sub.starts_with("tasks/") && (sub.ends_with("/status") || sub.ends_with("/restart")));
    // A path's `+` is itself (only a query's is a space).
    answered_by_owner.then(|| percent_decode(&name.replace('+', "%2B")))
}

/// The task id of a `/connectors/{name}/tasks/{id}/...` path.
fn path_task(path: &str) -> Option<u32> {
    let rest = path.strip_prefix("/connectors/")?;
    let (_, sub) = rest.split_once('/')?;
    let mut parts = sub.split('/');
    (parts.next()? == "tasks")
        .then(|| parts.next()?.parse().ok())
        .flatten()
}

/// Sends `req` to the worker at `addr` over HTTP/1.1, marked with the header `mark`, and returns its answer as
/// it is.
async fn forward(
    addr: &str,
    req: axum::extract::Request,
    mark: &str,
) -> std::result::Result<Response, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{mark}: 1\r\n\r\n",
        parts.method,
        body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(&body).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    (&mut s)
        .take(16 * 1024 * 1024)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head =
        std::str::from_utf8(&answer[..split]).map_err(|_| "the answer's headers are not text")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("the answer has no status")?;
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Err("the answer is chunked".into());
    }
    let body = answer[split + 4..].to_vec();
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("REST request failed: {self}");
        }
        reply(
            status,
            json!({"error_code": self.status(), "message": self.to_string()}),
        )
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

async fn not_found() -> Response {
    Error::NotFound("HTTP 404 Not Found: no such path in Kafka Connect's REST API".into())
        .into_response()
}

async fn method_not_allowed() -> Response {
    reply(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error_code": 405, "message": "HTTP 405 Method Not Allowed"}),
    )
}

/// The request body as JSON; a missing, oversized or malformed body is a 400 saying so.
pub(crate) fn json_body(body: Body) -> Result<Value> {
    let bytes =
        body.map_err(|e| Error::BadRequest(format!("cannot read the request body: {e}")))?;
    if bytes.is_empty() {
        return Err(Error::BadRequest("the request needs a JSON body".into()));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("the request body is not valid JSON: {e}")))
}

/// Query parameters, repeated keys kept (`?expand=status&expand=info`).
pub(crate) fn query_params(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A boolean query parameter (`includeTasks=true`); anything but true/false is a 400 naming it.
fn bool_param(params: &[(String, String)], name: &str) -> Result<Option<bool>> {
    match params.iter().rev().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(Error::BadRequest(format!(
                "query parameter {name}={v}: expected true or false"
            ))),
        },
    }
}

async fn root(State(w): W) -> Response {
    ok(json!({
        "version": CONNECT_VERSION,
        "commit": concat!("fjord-", env!("CARGO_PKG_VERSION")),
        "kafka_cluster_id": w.kafka_cluster_id,
    }))
}

async fn list(State(w): W, RawQuery(q): RawQuery) -> Result<Response> {
    let params = query_params(&q);
    let mut expand = Vec::new();
    for (k, v) in &params {
        if k == "expand" {
            for e in v.split(',') {
                match e.trim() {
                    "status" | "info" => expand.push(e.trim().to_string()),
                    other => {
                        return Err(Error::BadRequest(format!(
                            "expand={other}: expected status or info"
                        )))
                    }
                }
            }
        }
    }
    let names = w.names().await;
    if expand.is_empty() {
        return Ok(ok(json!(names)));
    }
    let mut out = serde_json::Map::new();
    for name in names {
        let mut entry = serde_json::Map::new();
        for e in &expand {
            // A connector deleted meanwhile is left out, as Connect does.
            let v = match e.as_str() {
                "status" => w.status(&name).await,
                _ => w.info(&name).await,
            };
            if let Ok(v) = v {
                entry.insert(e.clone(), v);
            }
        }
        out.insert(name, Value::Object(entry));
    }
    Ok(ok(Value::Object(out)))
}

async fn create(State(w): W, body: Body) -> Result<Response> {
    let body = json_body(body)?;
    let name = match body.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.trim().to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(Error::BadRequest(
                "Connector name must be specified: give {\"name\": ..., \"config\": {...}}".into(),
            ))
        }
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "name must be a string, not {other}"
            )))
        }
    };
    let config = body.get("config").ok_or_else(|| {
        Error::BadRequest(
            "the request has no config: give {\"name\": ..., \"config\": {...}}".into(),
        )
    })?;
    let mut config = json_config_map(config).map_err(Error::BadRequest)?;
    merge_name(&mut config, &name)?;
    let initial = match body.get("initial_state") {
        None | Some(Value::Null) => TargetState::Running,
        Some(Value::String(s)) => TargetState::parse(s).ok_or_else(|| {
            Error::BadRequest(format!(
                "initial_state {s}: expected RUNNING, PAUSED or STOPPED"
            ))
        })?,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "initial_state must be a string, not {other}"
            )))
        }
    };
    let info = w.create(config, initial).await?;
    Ok(reply(StatusCode::CREATED, info))
}

/// The connector name in a config must match the one of the request; it is filled in when absent.
fn merge_name(config: &mut ConfigMap, name: &str) -> Result<()> {
    match config.get("name") {
        Some(n) if n != name => Err(Error::BadRequest(format!(
            "Connector name configuration ({n}) doesn't match connector name in the URL ({name})"
        ))),
        _ => {
            config.insert("name".into(), name.to_string());
            Ok(())
        }
    }
}

async fn info(State(w): W, Path(name): Path<String>) -> Result<Response> {
    Ok(ok(w.info(&name).await?))
}

async fn delete(State(w): W, Path(name): Path<String>) -> Result<Response> {
    w.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_config(State(w): W, Path(name): Path<String>) -> Result<Response> {
    Ok(ok(json!(w.config(&name).await?)))
}

async fn put_config(State(w): W, Path(name): Path<String>, body: Body) -> Result<Response> {
    let body = json_body(body)?;
    let mut config = json_config_map(&body).map_err(Error::BadRequest)?;
    merge_name(&mut config, &name)?;
    let (created, info) = w.put_config(&name, config).await?;
    Ok(reply(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        info,
    ))
}

async fn status(State(w): W, Path(name): Path<String>) -> Result<Response> {
    Ok(ok(w.status(&name).await?))
}

async fn restart(State(w): W, Path(name): Path<String>, RawQuery(q): RawQuery) -> Result<Response> {
    let params = query_params(&q);
    let include_tasks = bool_param(&params, "includeTasks")?;
    let only_failed = bool_param(&params, "onlyFailed")?;
    let new_form = include_tasks.is_some() || only_failed.is_some();
    let (answer, remote) = w
        .restart(
            &name,
            include_tasks.unwrap_or(false),
            only_failed.unwrap_or(false),
            new_form,
        )
        .await?;
    // The leader restarts the tasks other workers run there, each with its own restart.
    for (id, owner) in remote {
        let path = format!(
            "/connectors/{}/tasks/{id}/restart",
            crate::registry_converter::path_segment(&name)
        );
        let req = axum::extract::Request::builder()
            .method("POST")
            .uri(&path)
            .body(axum::body::Body::empty())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let failed =
            match tokio::time::timeout(FORWARD_TIMEOUT, forward(&owner, req, OWNER_QUERY)).await {
                Ok(Ok(r)) if r.status().is_success() => None,
                Ok(Ok(r)) => Some(format!("it answered {}", r.status())),
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("no answer within {FORWARD_TIMEOUT:?}")),
            };
        if let Some(why) = failed {
            return Err(Error::Conflict(format!(
                "{} (restarting task {id} on the worker {owner} that runs it failed: {why})",
                crate::worker::REBALANCE
            )));
        }
    }
    match answer {
        Some(status) => Ok(reply(StatusCode::ACCEPTED, status)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn set_target(w: &Worker, name: &str, target: TargetState) -> Result<Response> {
    w.set_target(name, target).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn pause(State(w): W, Path(name): Path<String>) -> Result<Response> {
    set_target(&w, &name, TargetState::Paused).await
}

async fn resume(State(w): W, Path(name): Path<String>) -> Result<Response> {
    set_target(&w, &name, TargetState::Running).await
}

async fn stop(State(w): W, Path(name): Path<String>) -> Result<Response> {
    set_target(&w, &name, TargetState::Stopped).await
}

async fn tasks(State(w): W, Path(name): Path<String>) -> Result<Response> {
    Ok(ok(w.tasks(&name).await?))
}

async fn task_status(State(w): W, Path((name, task)): Path<(String, String)>) -> Result<Response> {
    Ok(ok(w.task_status(&name, &task).await?))
}

async fn restart_task(State(w): W, Path((name, task)): Path<(String, String)>) -> Result<Response> {
    w.restart_task(&name, &task).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn offsets(State(w): W, Path(name): Path<String>) -> Result<Response> {
    Ok(ok(w.offsets(&name).await?))
}

/// `PATCH /connectors/{name}/offsets` with `{"offsets": [{"partition": {...}, "offset": {...}|null}]}`.
async fn alter_offsets(State(w): W, Path(name): Path<String>, body: Body) -> Result<Response> {
    let body = json_body(body)?;
    let entries = body
        .get("offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::BadRequest(
                "the body must be {\"offsets\": [{\"partition\": {...}, \"offset\": {...}}]}"
                    .into(),
            )
        })?;
    let mut changes = Vec::with_capacity(entries.len());
    for e in entries {
        let (Some(p), Some(o)) = (e.get("partition"), e.get("offset")) else {
            return Err(Error::BadRequest(format!(
                "offset entry {e} needs a partition and an offset (null to remove it)"
            )));
        };
        changes.push((p.clone(), o.clone()));
    }
    Ok(ok(w.change_offsets(&name, Some(changes)).await?))
}

/// `DELETE /connectors/{name}/offsets`.
async fn reset_offsets(State(w): W, Path(name): Path<String>) -> Result<Response> {
    Ok(ok(w.change_offsets(&name, None).await?))
}

async fn topics(State(w): W, Path(name): Path<String>) -> Result<Response> {
    Ok(ok(w.topics(&name).await?))
}

/// `GET /connector-plugins`; with `connectorsOnly=false` (KIP-769) the transforms and predicates too.
async fn list_plugins(RawQuery(q): RawQuery) -> Result<Response> {
    let connectors_only = bool_param(&query_params(&q), "connectorsOnly")?.unwrap_or(true);
    let mut list: Vec<Value> = Plugin::ALL.iter().map(|p| p.info()).collect();
    if !connectors_only {
        list.extend(crate::transforms::plugin_infos(plugins::PLUGIN_VERSION));
    }
    Ok(ok(Value::Array(list)))
}

fn plugin_named(name: &str) -> Result<Plugin> {
    Plugin::find(name).ok_or_else(|| crate::worker::unknown_plugin_error(name))
}

async fn plugin_config(Path(plugin): Path<String>) -> Result<Response> {
    let p = plugin_named(&plugin)?;
    let v = plugins::validate(p, &ConfigMap::new());
    let defs: Vec<Value> = v["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["definition"].clone())
        .collect();
    Ok(ok(Value::Array(defs)))
}

async fn validate(Path(plugin): Path<String>, body: Body) -> Result<Response> {
    let p = plugin_named(&plugin)?;
    let body = json_body(body)?;
    let mut config = json_config_map(&body).map_err(Error::BadRequest)?;
    match config.get("connector.class") {
        Some(c) if Plugin::find(c) != Some(p) => {
            return Err(Error::BadRequest(format!(
                "Included connector type {c} does not match request type {plugin}"
            )))
        }
        Some(_) => {}
        None => {
            config.insert("connector.class".into(), p.class().into());
        }
    }
    Ok(ok(plugins::validate(p, &config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leader forwards a task's status or restart to the worker running that task: the path names it.
    #[test]
    fn a_task_path_names_its_task() {
        assert_eq!(path_task("/connectors/a/tasks/2/restart"), Some(2));
        assert_eq!(path_task("/connectors/a/tasks/0/status"), Some(0));
        assert_eq!(path_task("/connectors/tasks/restart"), None);
        assert_eq!(path_task("/connectors/a/restart"), None);
        assert_eq!(path_task("/connectors/a/tasks"), None);
        assert_eq!(path_task("/connectors/a/tasks/x/status"), None);
    }

    #[test]
    fn the_owner_query_header_is_honoured_only_where_the_owner_answers() {
        assert!(answered_here("/connector-plugins", false));
        assert!(answered_here("/connectors/a/status", true));
        assert!(answered_here("/connectors/a/tasks/0/restart", true));
        assert!(!answered_here("/connectors/a/status", false));
        // A write with the header is not answered on a follower: it is forwarded to the leader as any other.
        assert!(!answered_here("/connectors/a/config", true));
        assert!(!answered_here("/connectors/a", true));
        assert!(!answered_here("/connectors", true));
        assert!(!answered_here("/connectors/a/pause", true));
    }

    #[test]
    fn query_parameters_keep_repeats_and_decode() {
        let p = query_params(&Some(
            "expand=status&expand=info&x=a%2Fb+c&bad=%zz&end=%4".into(),
        ));
        assert_eq!(p[0], ("expand".into(), "status".into()));
        assert_eq!(p[1], ("expand".into(), "info".into()));
        assert_eq!(p[2], ("x".into(), "a/b c".into()));
        assert_eq!(p[3], ("bad".into(), "%zz".into()));
        assert_eq!(p[4], ("end".into(), "%4".into()));
        assert!(bool_param(&p, "expand").is_err());
        assert_eq!(bool_param(&p, "none").unwrap(), None);
    }

    /// Status reads (answered by any worker that knows the status) are told apart from what only the worker
    /// running a connector answers (offsets, restarts) and from writes.
    #[test]
    fn status_reads_are_recognised() {
        let read = |method: &str, uri: &str| {
            let req = axum::extract::Request::builder()
                .method(method)
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            status_read(&req)
        };
        assert_eq!(
            read("GET", "/connectors?expand=info&expand=status"),
            Some(None)
        );
        assert_eq!(read("GET", "/connectors?expand=info,status"), Some(None));
        assert_eq!(
            read("GET", "/connectors/a%20b/status"),
            Some(Some("a b".into()))
        );
        assert_eq!(
            read("GET", "/connectors/a/tasks/0/status"),
            Some(Some("a".into()))
        );
        for (m, uri) in [
            ("GET", "/connectors"),
            ("GET", "/connectors?expand=info"),
            ("GET", "/connectors/a/offsets"),
            ("GET", "/connectors/a"),
            ("POST", "/connectors/a/restart"),
            ("POST", "/connectors/a/tasks/0/restart"),
            ("DELETE", "/connectors/a/status"),
        ] {
            assert_eq!(read(m, uri), None, "{m} {uri}");
        }
    }

    /// The leader sends to the worker running a connector only what that worker alone knows.
    #[test]
    fn only_status_offsets_and_restarts_go_to_the_worker_running_the_connector() {
        for (path, owner) in [
            ("/connectors/a%20b+c/status", Some("a b+c")),
            ("/connectors/a/offsets", Some("a")),
            ("/connectors/a/restart", Some("a")),
            ("/connectors/a/tasks/0/status", Some("a")),
            ("/connectors/a/tasks/0/restart", Some("a")),
            ("/connectors/a", None),
            ("/connectors/a/config", None),
            ("/connectors/a/tasks", None),
            ("/connectors/a/pause", None),
            ("/connectors", None),
        ] {
            assert_eq!(owner_query(path).as_deref(), owner, "{path}");
        }
    }
}
