//! The schemas and Connect pages' API: `/api/schemas/...` over the schema registry's REST API, `/api/connect/...`
//! over the Connect worker's, both reached in-process (see [`crate::services`]). The dashboard adds what a page
//! needs and those APIs lack (pagination, a diff between two versions, one call for a connector's config and
//! status) and asks for the exact name before a delete; every check of a schema or a connector is the service's
//! own. A service this process does not run answers 503 with `not_running`, which the page shows as such.

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::api::{bad, body_object, int_field, Answer, Ctx, Fail, Query};
use crate::services::{enc, Failed, Kind};

/// Largest product of the two versions' line counts the diff compares (its table's cells).
const MAX_DIFF_CELLS: usize = 4_000_000;
/// Most lines of one version the diff takes (so that a huge version beside a small one is refused too: the
/// answer lists every line).
const MAX_DIFF_LINES: usize = 5_000;

impl From<Failed> for Fail {
    fn from(f: Failed) -> Fail {
        Fail {
            status: f.status,
            message: f.message,
            code: None,
            not_running: f.not_running.map(Kind::name),
        }
    }
}

/// Which services run, and where.
pub fn services(ctx: &Ctx) -> Value {
    let one = |k: Kind| match ctx.services.addr(k) {
        Some(a) => json!({"running": true, "address": a.to_string()}),
        None => json!({"running": false, "message": k.not_running()}),
    };
    json!({"registry": one(Kind::Registry), "connect": one(Kind::Connect)})
}

pub async fn route(ctx: &Ctx, method: &Method, seg: &[&str], q: &Query, body: &[u8]) -> Answer {
    let m = method.clone();
    match (&m, seg) {
        (&Method::GET, ["schemas"]) => subjects(ctx, q).await,
        (&Method::GET, ["schemas", s]) => subject(ctx, s).await,
        (&Method::DELETE, ["schemas", s]) => delete_subject(ctx, s, None, body).await,
        (&Method::POST, ["schemas", s, "versions"]) => register(ctx, s, body).await,
        (&Method::GET, ["schemas", s, "versions", v]) => version(ctx, s, v).await.map(ok),
        (&Method::DELETE, ["schemas", s, "versions", v]) => {
            delete_subject(ctx, s, Some(v), body).await
        }
        (&Method::GET, ["schemas", s, "diff"]) => diff(ctx, s, q).await,
        (&Method::PUT, ["schemas", s, "compatibility"]) => set_compatibility(ctx, s, body).await,
        (&Method::GET, ["connect"]) => connectors(ctx, q).await,
        (&Method::GET, ["connect", n]) => connector(ctx, n).await,
        (&Method::POST, ["connect", n, action @ ("restart" | "pause" | "resume")]) => {
            connector_action(ctx, n, action, body).await
        }
        (&Method::POST, ["connect", n, "tasks", t, "restart"]) => {
            restart_task(ctx, n, t, body).await
        }
        (
            _,
            ["schemas"]
            | ["schemas", _]
            | ["schemas", _, "versions" | "diff" | "compatibility"]
            | ["schemas", _, "versions", _]
            | ["connect"]
            | ["connect", _]
            | ["connect", _, "restart" | "pause" | "resume"]
            | ["connect", _, "tasks", _, "restart"],
        ) => Err(Fail {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} is not supported on this path"),
            code: None,
            not_running: None,
        }),
        _ => Err(crate::api::not_found(format!(
            "no such API: /api/{}; see /api/openapi.json for the endpoints",
            seg.join("/")
        ))),
    }
}

/// A service's answer, `None` for its 404, any other failure as the error.
fn found(r: Result<Value, Fail>) -> Result<Option<Value>, Fail> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(f) if f.status == StatusCode::NOT_FOUND => Ok(None),
        Err(f) => Err(f),
    }
}

fn ok(v: Value) -> (StatusCode, Value) {
    (StatusCode::OK, v)
}

async fn registry(
    ctx: &Ctx,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, Fail> {
    Ok(ctx
        .services
        .call(Kind::Registry, method, path, body)
        .await?
        .body)
}

async fn connect(
    ctx: &Ctx,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, Fail> {
    Ok(ctx
        .services
        .call(Kind::Connect, method, path, body)
        .await?
        .body)
}

/// A write's body: a JSON object, or nothing at all (an empty object).
fn optional_object(body: &[u8]) -> Result<Map<String, Value>, Fail> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Map::new())
    } else {
        body_object(body)
    }
}

fn bool_field(m: &Map<String, Value>, k: &str) -> Result<bool, Fail> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(format!("`{k}` must be true or false, not {v}"))),
    }
}

// ---- schemas ----

/// Subjects in one page of `/api/schemas`: each costs two calls to the registry.
pub const MAX_SUBJECTS: usize = 100;

async fn subjects(ctx: &Ctx, q: &Query) -> Answer {
    let (offset, limit) = q.page()?;
    if limit > MAX_SUBJECTS {
        return Err(bad(format!(
            "limit={limit}: a page of subjects has at most {MAX_SUBJECTS} (each costs two registry calls); page with offset"
        )));
    }
    let filter = q.str("filter").map(str::to_lowercase);
    let all = registry(ctx, Method::GET, "/subjects", None).await?;
    let mut names: Vec<String> = all
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| {
        filter
            .as_deref()
            .is_none_or(|f| n.to_lowercase().contains(f))
    });
    names.sort();
    let global = registry(ctx, Method::GET, "/config", None).await?;
    let mut rows = Vec::new();
    for name in names.iter().skip(offset).take(limit) {
        // A subject deleted between the list and here (404) is left out; any other failure (a registry that
        // timed out) is the answer's, not a shorter list.
        let Some(versions) = found(
            registry(
                ctx,
                Method::GET,
                &format!("/subjects/{}/versions", enc(name)),
                None,
            )
            .await,
        )?
        else {
            continue;
        };
        let latest = found(
            registry(
                ctx,
                Method::GET,
                &format!("/subjects/{}/versions/latest", enc(name)),
                None,
            )
            .await,
        )?
        .unwrap_or(Value::Null);
        rows.push(json!({
            "subject": name,
            "versions": versions,
            "latest_version": latest.get("version"),
            "latest_id": latest.get("id"),
            "schema_type": latest.get("schemaType").and_then(Value::as_str).unwrap_or("AVRO"),
        }));
    }
    Ok(ok(json!({
        "registry": ctx.services.addr(Kind::Registry).map(|a| a.to_string()),
        "compatibility": global.get("compatibilityLevel"),
        "total": names.len(), "offset": offset, "limit": limit, "subjects": rows,
    })))
}

async fn subject(ctx: &Ctx, s: &str) -> Answer {
    let versions = registry(
        ctx,
        Method::GET,
        &format!("/subjects/{}/versions", enc(s)),
        None,
    )
    .await?;
    let latest = version(ctx, s, "latest").await?;
    // A subject without its own level follows the global one (the registry answers 404 for the subject).
    let own = found(registry(ctx, Method::GET, &format!("/config/{}", enc(s)), None).await)?
        .and_then(|c| c.get("compatibilityLevel").cloned());
    let global = registry(ctx, Method::GET, "/config", None).await?;
    let global = global
        .get("compatibilityLevel")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(ok(json!({
        "subject": s,
        "versions": versions,
        "compatibility": own.clone().unwrap_or_else(|| global.clone()),
        "compatibility_source": if own.is_some() { "subject" } else { "global" },
        "global_compatibility": global,
        "latest": latest,
    })))
}

/// One version as the page shows it: the registry's fields, the schema pretty-printed when it is JSON.
async fn version(ctx: &Ctx, s: &str, v: &str) -> Result<Value, Fail> {
    let got = registry(
        ctx,
        Method::GET,
        &format!("/subjects/{}/versions/{}", enc(s), enc(v)),
        None,
    )
    .await?;
    let schema = got.get("schema").and_then(Value::as_str).unwrap_or("");
    Ok(json!({
        "subject": got.get("subject"),
        "version": got.get("version"),
        "id": got.get("id"),
        "schema_type": got.get("schemaType").and_then(Value::as_str).unwrap_or("AVRO"),
        "references": got.get("references").cloned().unwrap_or(json!([])),
        "schema": schema,
        "pretty": pretty(schema),
    }))
}

/// A JSON schema (Avro, JSON Schema) indented one field a line, so that a diff shows fields; Protobuf as is.
fn pretty(schema: &str) -> String {
    serde_json::from_str::<Value>(schema)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| schema.to_string())
}

async fn diff(ctx: &Ctx, s: &str, q: &Query) -> Answer {
    let from = q
        .str("from")
        .ok_or_else(|| bad("`from` is required: a version number or `latest`"))?;
    let to = q.str("to").unwrap_or("latest");
    let (a, b) = (version(ctx, s, from).await?, version(ctx, s, to).await?);
    let text = |v: &Value| v["pretty"].as_str().unwrap_or("").to_string();
    let (ta, tb) = (text(&a), text(&b));
    let (la, lb): (Vec<&str>, Vec<&str>) = (ta.lines().collect(), tb.lines().collect());
    if la.len().saturating_mul(lb.len()) > MAX_DIFF_CELLS || la.len().max(lb.len()) > MAX_DIFF_LINES
    {
        return Err(bad(format!(
            "these versions are too large to compare here ({} and {} lines); fetch both with `fjord schemas get` and diff them locally",
            la.len(),
            lb.len()
        )));
    }
    let lines = line_diff(&la, &lb);
    let count = |op: &str| lines.iter().filter(|l| l["op"] == op).count();
    Ok(ok(json!({
        "subject": s,
        "from": {"version": a["version"], "id": a["id"], "schema_type": a["schema_type"]},
        "to": {"version": b["version"], "id": b["id"], "schema_type": b["schema_type"]},
        "added": count("+"), "removed": count("-"), "lines": lines,
    })))
}

/// A line diff by longest common subsequence: each line of `a` and `b` once, as kept (` `), removed (`-`) or
/// added (`+`), in order.
fn line_diff(a: &[&str], b: &[&str]) -> Vec<Value> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(n.max(m)));
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(json!({"op": " ", "text": a[i]}));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            // Removals before additions where either keeps the subsequence, as diff(1) shows a change.
            out.push(json!({"op": "-", "text": a[i]}));
            i += 1;
        } else {
            out.push(json!({"op": "+", "text": b[j]}));
            j += 1;
        }
    }
    out
}

/// Registers a schema, or with `dry_run` only checks it against the subject's versions under its compatibility
/// level (nothing is written).
async fn register(ctx: &Ctx, s: &str, body: &[u8]) -> Answer {
    let m = body_object(body)?;
    let schema = match m.get("schema") {
        Some(Value::String(x)) if !x.trim().is_empty() => x.clone(),
        // A schema given as JSON itself is sent as its text, as the registry expects.
        Some(v @ (Value::Object(_) | Value::Array(_))) => v.to_string(),
        _ => return Err(bad("`schema` is required: the schema's text")),
    };
    let mut req = json!({ "schema": schema });
    match m.get("schema_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t))
            if ["AVRO", "JSON", "PROTOBUF"].contains(&t.to_uppercase().as_str()) =>
        {
            req["schemaType"] = json!(t.to_uppercase());
        }
        Some(v) => {
            return Err(bad(format!(
                "`schema_type` must be AVRO, JSON or PROTOBUF, not {v}"
            )))
        }
    }
    match m.get("references") {
        None | Some(Value::Null) => {}
        Some(r @ Value::Array(_)) => req["references"] = r.clone(),
        Some(v) => return Err(bad(format!("`references` must be a list, not {v}"))),
    }
    if bool_field(&m, "dry_run")? {
        // Whether the subject has a version to compare with (the registry's check passes anything otherwise).
        let versions = format!("/subjects/{}/versions", enc(s));
        let first = match ctx
            .services
            .call(Kind::Registry, Method::GET, &versions, None)
            .await
        {
            Ok(_) => false,
            Err(f) if f.status == StatusCode::NOT_FOUND => true,
            Err(f) => return Err(f.into()),
        };
        // Against the versions the subject's level names (all of them when transitive), as registering would;
        // the schema is parsed either way, so a malformed one is refused here too.
        let path = format!("/compatibility/subjects/{}/versions?verbose=true", enc(s));
        let a = registry(ctx, Method::POST, &path, Some(&req)).await?;
        let compatible = a["is_compatible"].as_bool().unwrap_or(false);
        let message = if first {
            format!("{s} has no version yet: this would be its first; nothing was registered.")
        } else if compatible {
            format!("Compatible with the versions of {s} its compatibility level checks; nothing was registered.")
        } else {
            format!("Not compatible with the versions of {s} its compatibility level checks; nothing was registered.")
        };
        return Ok(ok(json!({
            "subject": s, "dry_run": true, "compatible": compatible, "first": first,
            "messages": a.get("messages").cloned().unwrap_or(json!([])),
            "message": message,
        })));
    }
    let got = registry(
        ctx,
        Method::POST,
        &format!("/subjects/{}/versions", enc(s)),
        Some(&req),
    )
    .await?;
    // The version it got (or already had): the registry's lookup of the same schema. The registration stands
    // even when the lookup fails; the answer then says the version is unknown rather than `null`.
    let lookup = registry(
        ctx,
        Method::POST,
        &format!("/subjects/{}", enc(s)),
        Some(&req),
    )
    .await;
    let id = got.get("id").cloned().unwrap_or(Value::Null);
    let mut answer = json!({"subject": s, "id": id});
    match lookup.ok().and_then(|f| f.get("version").cloned()) {
        Some(version) => {
            answer["message"] =
                format!("Registered under {s}: schema id {id}, version {version}.").into();
            answer["version"] = version;
        }
        None => {
            answer["message"] = format!(
                "Registered under {s}: schema id {id}; its version could not be looked up (reload the subject)."
            )
            .into();
        }
    }
    Ok((StatusCode::OK, answer))
}

/// Deletes a subject (every version) or one version, soft unless `permanent` (which the registry allows only
/// after a soft delete).
async fn delete_subject(ctx: &Ctx, s: &str, v: Option<&str>, body: &[u8]) -> Answer {
    let m = body_object(body).map_err(|f| {
        bad(format!(
            "{}; send {{\"confirm\": \"{s}\"}} to delete it",
            f.message
        ))
    })?;
    let what = match v {
        Some(v) => format!("version {v} of subject `{s}`"),
        None => format!("subject `{s}`"),
    };
    crate::api::confirmed(&m, s, &what, "name")?;
    let permanent = bool_field(&m, "permanent")?;
    let path = match v {
        Some(v) => format!(
            "/subjects/{}/versions/{}?permanent={permanent}",
            enc(s),
            enc(v)
        ),
        None => format!("/subjects/{}?permanent={permanent}", enc(s)),
    };
    let deleted = registry(ctx, Method::DELETE, &path, None).await?;
    let how = if permanent {
        "permanently deleted"
    } else {
        "deleted (soft; delete again with permanent to purge)"
    };
    Ok(ok(json!({
        "subject": s, "deleted": deleted, "permanent": permanent,
        "message": format!("{} {how}.", capitalize(&what)),
    })))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

async fn set_compatibility(ctx: &Ctx, s: &str, body: &[u8]) -> Answer {
    let m = body_object(body)?;
    let level = match m.get("compatibility") {
        Some(Value::String(l)) => l.trim().to_uppercase(),
        _ => {
            return Err(bad(
                "`compatibility` is required: BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE",
            ))
        }
    };
    let got = registry(
        ctx,
        Method::PUT,
        &format!("/config/{}", enc(s)),
        Some(&json!({ "compatibility": level })),
    )
    .await?;
    Ok(ok(json!({
        "subject": s, "compatibility": got.get("compatibility"),
        "message": format!("Compatibility of {s} set to {level}."),
    })))
}

// ---- Connect ----

/// A connector's state and its tasks' counts, from Connect's status object.
fn summary(name: &str, status: &Value, info: &Value) -> Value {
    let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
    let count = |st: &str| tasks.iter().filter(|t| t["state"] == st).count();
    let connector_failed = status["connector"]["state"] == "FAILED";
    json!({
        "name": name,
        "type": status.get("type").or_else(|| info.get("type")),
        "class": info["config"].get("connector.class"),
        "state": status["connector"]["state"],
        "worker_id": status["connector"]["worker_id"],
        "tasks": tasks.len(),
        "tasks_running": count("RUNNING"),
        "tasks_failed": count("FAILED"),
        "errors": connector_failed || count("FAILED") > 0,
    })
}

async fn connectors(ctx: &Ctx, q: &Query) -> Answer {
    let (offset, limit) = q.page()?;
    let filter = q.str("filter").map(str::to_lowercase);
    let state = q.str("state").map(str::to_uppercase);
    let all = connect(
        ctx,
        Method::GET,
        "/connectors?expand=status&expand=info",
        None,
    )
    .await?;
    let empty = Map::new();
    let mut rows: Vec<Value> = all
        .as_object()
        .unwrap_or(&empty)
        .iter()
        .filter(|(n, _)| {
            filter
                .as_deref()
                .is_none_or(|f| n.to_lowercase().contains(f))
        })
        .map(|(n, v)| summary(n, &v["status"], &v["info"]))
        .filter(|r| state.as_deref().is_none_or(|s| r["state"] == s))
        .collect();
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(offset).take(limit).collect();
    Ok(ok(json!({
        "connect": ctx.services.addr(Kind::Connect).map(|a| a.to_string()),
        "total": total, "offset": offset, "limit": limit, "connectors": page,
    })))
}

async fn connector(ctx: &Ctx, n: &str) -> Answer {
    let info = connect(ctx, Method::GET, &format!("/connectors/{}", enc(n)), None).await?;
    let status = connect(
        ctx,
        Method::GET,
        &format!("/connectors/{}/status", enc(n)),
        None,
    )
    .await?;
    let mut out = summary(n, &status, &info);
    out["config"] = info["config"].clone();
    out["connector"] = status["connector"].clone();
    out["task_states"] = status["tasks"].clone();
    Ok(ok(out))
}

async fn connector_action(ctx: &Ctx, n: &str, action: &str, body: &[u8]) -> Answer {
    let m = optional_object(body)?;
    let (method, path) = match action {
        "restart" => {
            let include = bool_field(&m, "include_tasks")?;
            let only_failed = bool_field(&m, "only_failed")?;
            (
                Method::POST,
                format!(
                    "/connectors/{}/restart?includeTasks={include}&onlyFailed={only_failed}",
                    enc(n)
                ),
            )
        }
        other => (Method::PUT, format!("/connectors/{}/{other}", enc(n))),
    };
    let got = connect(ctx, method, &path, None).await?;
    let message = match action {
        "restart" => format!("Restart of connector {n} requested."),
        "pause" => format!("Connector {n} is pausing."),
        _ => format!("Connector {n} is resuming."),
    };
    Ok((
        StatusCode::OK,
        json!({"name": n, "action": action, "status": got, "message": message}),
    ))
}

async fn restart_task(ctx: &Ctx, n: &str, t: &str, body: &[u8]) -> Answer {
    optional_object(body)?;
    let task = int_field(
        &std::iter::once(("task".to_string(), json!(t))).collect(),
        "task",
        0,
        i32::MAX as i64,
    )?
    .unwrap_or(0);
    connect(
        ctx,
        Method::POST,
        &format!("/connectors/{}/tasks/{task}/restart", enc(n)),
        None,
    )
    .await?;
    Ok(ok(json!({
        "name": n, "task": task, "message": format!("Restart of task {task} of connector {n} requested."),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(a: &str, b: &str) -> String {
        let a: Vec<&str> = a.split(',').filter(|s| !s.is_empty()).collect();
        let b: Vec<&str> = b.split(',').filter(|s| !s.is_empty()).collect();
        line_diff(&a, &b)
            .iter()
            .map(|l| {
                format!(
                    "{}{}",
                    l["op"].as_str().unwrap(),
                    l["text"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn the_diff_keeps_common_lines_and_marks_the_rest() {
        assert_eq!(ops("a,b,c", "a,b,c"), " a, b, c");
        assert_eq!(ops("a,b,c", "a,x,c"), " a,-b,+x, c");
        assert_eq!(ops("a,b", "a,b,c"), " a, b,+c");
        assert_eq!(ops("", "a"), "+a");
        assert_eq!(ops("a", ""), "-a");
        assert_eq!(ops("{,f1,}", "{,f1,f2,}"), " {, f1,+f2, }");
    }

    #[test]
    fn json_schemas_are_pretty_printed_and_others_kept() {
        assert_eq!(
            pretty(r#"{"type":"string"}"#),
            "{\n  \"type\": \"string\"\n}"
        );
        assert_eq!(pretty("syntax = \"proto3\";"), "syntax = \"proto3\";");
    }
}
