//! `/api/openapi.json`: the admin API described as OpenAPI 3.0, built here beside the routes it describes (a
//! test checks that every route answers and every path it names is routed).

use serde_json::{json, Map, Value};

fn q(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}, "description": description})
}

fn int(min: i64, max: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn page() -> Vec<Value> {
    page_up_to(crate::api::MAX_PAGE)
}

/// A page's parameters where at most `max` rows make a page.
fn page_up_to(max: usize) -> Vec<Value> {
    vec![
        q("offset", int(0, i32::MAX as i64), "first row of the page"),
        q("limit", int(1, max as i64), "rows in the page (default 50)"),
        q("filter", string(), "case-insensitive substring of the name"),
    ]
}

/// One operation: a summary, its parameters, an optional JSON body schema, and the status of success.
fn op(summary: &str, params: Vec<Value>, body: Option<Value>, ok: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            ok: {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}},
            "default": {"description": "a refusal: 4xx for the request, 503 when busy or a service is not running, 502/504 when a service failed",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    });
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

/// The message browser's and the search's `isolation`.
fn isolation() -> Value {
    q(
        "isolation",
        json!({"type": "string", "enum": ["read_uncommitted", "read_committed"]}),
        "as a consumer's isolation.level. read_uncommitted (default, as Kafka consumers and kafka-ui): every record up to the high watermark, \
         those of aborted transactions marked `aborted: true`; read_committed: up to the last stable offset (nothing of a transaction still open \
         or after its start), without aborted transactions. Transaction markers (control batches) are never shown; each record says whether it \
         is `transactional`, and the answer which `isolation` was used",
    )
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

fn confirm() -> Value {
    obj(
        json!({"confirm": {"type": "string", "description": "the exact name, as confirmation"}, "permanent": {"type": "boolean"}}),
        &["confirm"],
    )
}

pub fn spec() -> Value {
    let name = || path_param("name", "topic name");
    let group = || path_param("id", "group id");
    let subject = || path_param("subject", "subject name");
    let connector = || path_param("connector", "connector name");
    let mut paths = Map::new();
    let mut add = |p: &str, ops: Value| {
        paths.insert(p.to_string(), ops);
    };
    add(
        "/api/overview",
        json!({"get": op("Brokers, counts, rates and their last 15 minutes", vec![], None, "200")}),
    );
    let live = |summary: &str, params: Vec<Value>, events: &str| {
        let mut o = op(summary, params, None, "200");
        o["responses"]["200"] = json!({"description": events, "content": {"text/event-stream": {"schema": {"type": "string"}}}});
        o["responses"]["503"] = json!({"description": format!("{} live streams are open already", crate::live::MAX_STREAMS),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        o["responses"]["429"] = json!({"description": format!("this user (or, without a login, this address unless loopback) has {} live streams open already", crate::live::MAX_STREAMS_PER_CLIENT),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        json!({ "get": o })
    };
    add(
        "/api/overview/stream",
        live(
            "The overview, live: server-sent events, the first `history` (the overview as GET /api/overview answers it), \
             then after each sampling round (every 5 s) `sample`, the same object whose `history` holds only the new points; \
             a comment every 15 s keeps it open. With `after` (the `at_ms` of the last point the page has) the first event \
             is a `sample` with only the points after it. At most 64 streams at once (503 past that) and 16 per user or address (429), \
             each ends after 30 minutes (EventSource reconnects)",
            vec![q("after", int(0, i64::MAX), "the time (`at_ms`) of the last point the page has: the first event is then a `sample` with the points after it")],
            "`history`, then `sample` events, each's data a JSON object",
        ),
    );
    add(
        "/api/groups/{id}/lag/stream",
        live(
            "A group's lag, live: server-sent events, the first `history` ({id, lag, lag_history, catch_up, sample_interval_ms}), \
             then after each sampling round that sampled the group `sample`, the same with only the new points of `lag_history`. \
             404 for a group this broker does not coordinate",
            vec![group()],
            "`history`, then `sample` events, each's data a JSON object",
        ),
    );
    add(
        "/api/services",
        json!({"get": op("Whether the schema registry and the Connect worker run beside this broker", vec![], None, "200")}),
    );
    add(
        "/api/session",
        json!({"get": op("Whether the dashboard has a login and, when it has, the logged-in user (`POST /api/logout` ends the session)", vec![], None, "200")}),
    );
    add(
        "/api/openapi.json",
        json!({"get": op("This document", vec![], None, "200")}),
    );
    let mut topics_q = page();
    topics_q.push(q(
        "internal",
        json!({"type": "boolean"}),
        "include internal topics",
    ));
    add(
        "/api/topics",
        json!({
            "get": op("Topics, one page", topics_q, None, "200"),
            "post": op("Create a topic (the CLI's validation and messages)", vec![], Some(obj(json!({
                "name": string(), "partitions": int(1, i32::MAX as i64), "replication_factor": int(1, i16::MAX as i64),
                "configs": {"type": "object", "additionalProperties": {"type": "string"}},
            }), &["name"])), "201"),
        }),
    );
    add(
        "/api/topics/{name}",
        json!({
            "get": op("A topic: partitions count, size, configs", vec![name()], None, "200"),
            "delete": op("Delete a topic; `confirm` must be its name", vec![name()], Some(confirm()), "200"),
        }),
    );
    add(
        "/api/topics/{name}/partitions",
        json!({
            "get": op("A topic's partitions, one page", vec![name(), q("offset", int(0, i32::MAX as i64), ""), q("limit", int(1, crate::api::MAX_PAGE as i64), "")], None, "200"),
            "post": op("Grow a topic to `count` partitions", vec![name()], Some(obj(json!({"count": int(1, i32::MAX as i64)}), &["count"])), "200"),
        }),
    );
    add(
        "/api/topics/{name}/configs",
        json!({
            "post": op("Set and delete topic configs (IncrementalAlterConfigs SET/DELETE); with `validate_only` the broker only checks them", vec![name()], Some(obj(json!({
                "set": {"type": "object", "additionalProperties": {"type": "string"}},
                "delete": {"type": "array", "items": string()},
                "validate_only": {"type": "boolean"},
            }), &[])), "200"),
        }),
    );
    add(
        "/api/topics/{name}/messages",
        json!({
            "get": op("Records of one partition (keys, values, header values in base64), bounded", vec![
                name(),
                json!({"name": "partition", "in": "query", "required": true, "schema": int(0, i32::MAX as i64)}),
                q("offset", int(0, i64::MAX), "first offset (or `latest`, or `timestamp`)"),
                q("timestamp", int(0, i64::MAX), "start at the first record stamped at or after this time (ms)"),
                q("latest", int(1, crate::api::MAX_MESSAGES as i64), "the last N records; with `isolation=read_committed` the last N offsets before the last stable offset (aborted records and transaction markers take offsets, so fewer records may show)"),
                q("limit", int(1, crate::api::MAX_MESSAGES as i64), "most records returned"),
                q("decode", json!({"type": "string", "enum": ["none", "registry"]}), "registry: keys and values in Confluent's wire format also come decoded (`key_decoded`, `value_decoded`: schema_id, schema_type, value and json (the decoded JSON as text, its fields in the schema's order), or error) with their schema from the registry this process runs"),
                isolation(),
            ], None, "200"),
        }),
    );
    let mut search = op(
        "Search a bounded range of a topic for records whose key, value or headers contain a text; \
         answers with server-sent events (progress, match, done, error); closing the stream stops the search. It matches the \
         raw bytes (a record in a registry format is not decoded first)",
        vec![
            name(),
            json!({"name": "q", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": crate::search::MAX_NEEDLE}, "description": "the text to find (bytes, UTF-8)"}),
            q("in", json!({"type": "string", "enum": ["any", "key", "value", "headers"]}), "where to look (default any)"),
            q("ignore_case", json!({"type": "boolean"}), "ASCII case-insensitive"),
            q("partition", int(0, i32::MAX as i64), "one partition (default: every partition hosted here)"),
            q("from_offset", int(0, i64::MAX), "first offset of each partition"),
            q("to_offset", int(0, i64::MAX), "end offset (exclusive) of each partition"),
            q("from_time", int(0, i64::MAX), "records stamped at or after (ms)"),
            q("to_time", int(0, i64::MAX - 1), "records stamped at or before (ms)"),
            q("limit", int(1, crate::api::MAX_MESSAGES as i64), "most matches (default 20)"),
            q("max_records", int(1, crate::search::MAX_SCAN), "most records read (default 1,000,000)"),
            q("decode", json!({"type": "string", "enum": ["none", "registry"]}), "registry: each match's key and value also come decoded through the schema registry, as the message browser's (`key_decoded`, `value_decoded`); the text is still looked for in the raw bytes"),
            isolation(),
        ],
        None,
        "200",
    );
    search["responses"]["200"] = json!({"description": "the search's events", "content": {"text/event-stream": {"schema": {"type": "string"}}}});
    add("/api/topics/{name}/search", json!({ "get": search }));
    let mut groups_q = page();
    groups_q.extend([
        q(
            "state",
            string(),
            "only groups in this state (Stable, Empty, ...)",
        ),
        q(
            "sort",
            json!({"type": "string", "enum": ["id", "lag", "members", "state"]}),
            "",
        ),
        q(
            "order",
            json!({"type": "string", "enum": ["asc", "desc"]}),
            "default: desc for lag and members",
        ),
        q("min_lag", int(0, i64::MAX), ""),
        q("max_lag", int(0, i64::MAX), ""),
        q("min_members", int(0, i32::MAX as i64), ""),
        q("max_members", int(0, i32::MAX as i64), ""),
    ]);
    add(
        "/api/groups",
        json!({"get": op("Consumer groups coordinated here: filtered, sorted, one page", groups_q, None, "200")}),
    );
    add(
        "/api/groups/{id}",
        json!({
            "get": op("A group: members, assignment, offsets and lag; `lag_history` (the total lag sampled every 5 s, last 15 minutes) and `catch_up` (state caught_up, catching_up with `seconds`, falling_behind, stalled or unknown; `lag_change_per_sec` over the last 5 minutes)", vec![group()], None, "200"),
            "delete": op("Delete a group without members and its offsets (DeleteGroups); `confirm` must be its id", vec![group()], Some(obj(
                json!({"confirm": {"type": "string", "description": "the exact group id, as confirmation"}}),
                &["confirm"],
            )), "200"),
        }),
    );
    add(
        "/api/groups/{id}/reset-offsets",
        json!({
            "post": op("Reset a group's offsets on a topic (a dry run unless `execute`): to the earliest or latest offset, a given `offset`, or the first offset at or after `timestamp` (ms; the log end when none)", vec![group()], Some(obj(json!({
                "topic": string(), "to": {"type": "string", "enum": ["earliest", "latest", "offset", "timestamp"]},
                "offset": int(0, i64::MAX), "timestamp": int(0, i64::MAX),
                "partitions": {"type": "array", "items": int(0, i32::MAX as i64)},
                "execute": {"type": "boolean"},
            }), &["topic", "to"])), "200"),
        }),
    );
    add(
        "/api/schemas",
        json!({"get": op("Subjects of the schema registry, one page", page_up_to(crate::extra::MAX_SUBJECTS), None, "200")}),
    );
    add(
        "/api/schemas/{subject}",
        json!({
            "get": op("A subject: versions, compatibility level, latest schema", vec![subject()], None, "200"),
            "delete": op("Delete a subject (soft unless `permanent`); `confirm` must be its name", vec![subject()], Some(confirm()), "200"),
        }),
    );
    add(
        "/api/schemas/{subject}/versions",
        json!({
            "post": op("Register a schema, or with `dry_run` only check its compatibility", vec![subject()], Some(obj(json!({
                "schema": string(), "schema_type": {"type": "string", "enum": ["AVRO", "JSON", "PROTOBUF"]},
                "references": {"type": "array", "items": {"type": "object"}}, "dry_run": {"type": "boolean"},
            }), &["schema"])), "200"),
        }),
    );
    add(
        "/api/schemas/{subject}/versions/{version}",
        json!({
            "get": op("One version", vec![subject(), path_param("version", "a version number or `latest`")], None, "200"),
            "delete": op("Delete one version; `confirm` must be the subject's name", vec![subject(), path_param("version", "")], Some(confirm()), "200"),
        }),
    );
    add(
        "/api/schemas/{subject}/diff",
        json!({
            "get": op("A line diff between two versions", vec![
                subject(),
                json!({"name": "from", "in": "query", "required": true, "schema": string()}),
                q("to", string(), "default latest"),
            ], None, "200"),
        }),
    );
    add(
        "/api/schemas/{subject}/compatibility",
        json!({
            "put": op("Set a subject's compatibility level", vec![subject()], Some(obj(json!({"compatibility": string()}), &["compatibility"])), "200"),
        }),
    );
    let mut connect_q = page();
    connect_q.push(q("state", string(), "RUNNING, PAUSED, FAILED, ..."));
    add(
        "/api/connect",
        json!({"get": op("Connectors with their state and task counts, one page", connect_q, None, "200")}),
    );
    add(
        "/api/connect/{connector}",
        json!({"get": op("A connector: config, state, tasks with errors and traces", vec![connector()], None, "200")}),
    );
    let flags = obj(
        json!({"include_tasks": {"type": "boolean"}, "only_failed": {"type": "boolean"}}),
        &[],
    );
    add(
        "/api/connect/{connector}/restart",
        json!({"post": op("Restart a connector (and its tasks)", vec![connector()], Some(flags), "200")}),
    );
    add(
        "/api/connect/{connector}/pause",
        json!({"post": op("Pause a connector", vec![connector()], Some(obj(json!({}), &[])), "200")}),
    );
    add(
        "/api/connect/{connector}/resume",
        json!({"post": op("Resume a connector", vec![connector()], Some(obj(json!({}), &[])), "200")}),
    );
    add(
        "/api/connect/{connector}/tasks/{task}/restart",
        json!({
            "post": op("Restart one task", vec![connector(), path_param("task", "task number")], Some(obj(json!({}), &[])), "200"),
        }),
    );
    // Changes need the CSRF token (and the login where there is one).
    for ops in paths.values_mut() {
        let Some(ops) = ops.as_object_mut() else {
            continue;
        };
        for (method, o) in ops.iter_mut() {
            if matches!(method.as_str(), "post" | "put" | "patch" | "delete") {
                o["security"] = json!([
                    {"csrfHeader": [], "csrfCookie": []},
                    {"csrfHeader": [], "csrfCookie": [], "basicAuth": []},
                ]);
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Fjord dashboard admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The JSON API behind the dashboard's pages. Every answer is JSON; a refusal is `{\"error\": \"...\"}` with a 4xx status (503 when busy or when the registry or Connect does not run here, with `not_running`). Requests other than GET must say `Content-Type: application/json` and carry the CSRF token: the same value in the `fjord_csrf` cookie and the `X-CSRF-Token` header (else 403); cross-origin requests are refused. With users configured (`dashboard.auth.basic.users`, required off loopback) every request needs HTTP basic auth (else 401 with `WWW-Authenticate`).",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": obj(json!({
                "error": string(), "not_running": string(), "kafka_error_code": {"type": "integer"}, "kafka_error": string(),
            }), &["error"])},
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic", "description": "when users are configured (dashboard.auth.basic.users)"},
                "csrfHeader": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token", "description": "on every request other than GET: the value of the fjord_csrf cookie"},
                "csrfCookie": {"type": "apiKey", "in": "cookie", "name": "fjord_csrf", "description": "set with the page (GET /), or any random value a script chooses"},
            },
        },
        // Without a login on loopback (`{}`), else basic auth.
        "security": [{}, {"basicAuth": []}],
    })
}

/// The paths the document names, with `{param}` placeholders.
#[cfg(test)]
pub fn paths() -> Vec<String> {
    spec()["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_has_responses_and_path_parameters_are_declared() {
        let s = super::spec();
        for (path, ops) in s["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(op["responses"]["default"].is_object(), "{method} {path}");
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                for seg in path.split('/').filter(|s| s.starts_with('{')) {
                    let name = seg.trim_matches(|c| c == '{' || c == '}');
                    assert!(declared.contains(&name), "{method} {path}: {name}");
                }
                // A change names the CSRF token; a read does not.
                let csrf = op["security"][0]["csrfHeader"].is_array();
                assert_eq!(csrf, method != "get", "{method} {path}");
            }
        }
        for scheme in ["basicAuth", "csrfHeader", "csrfCookie"] {
            assert!(
                s["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
        assert!(super::paths().len() >= 20);
    }
}
