//! The REST API on ksqlDB's port (8088) with ksqlDB's shapes where practical: `POST /ksql` runs statements and
//! answers a list of entities, `POST /query` streams the rows of a push query as a chunked JSON array (a header,
//! then one row per element), `GET /info`, `GET /healthcheck`. A bad request body gets 400 (413 when too large)
//! with a JSON message; a statement error gets ksqlDB's `statement_error` with code 40001; never a 500 for
//! something the client sent.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value as J};

use crate::engine::{Engine, Props};
use crate::error::{ErrorKind, SqlError};
use crate::parser::{parse_script, Statement};

/// The largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KsqlRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: serde_json::Map<String, J>,
    #[serde(default)]
    command_sequence_number: Option<i64>,
    #[serde(default)]
    session_variables: Option<serde_json::Map<String, J>>,
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/ksql", post(ksql))
        .route("/query", post(query))
        .route("/info", get(info))
        .route("/healthcheck", get(health))
        .fallback(|| async {
            json_response(StatusCode::NOT_FOUND, json!({"@type": "generic_error", "error_code": 40400,
                "message": "no such endpoint: the API is POST /ksql, POST /query, GET /info, GET /healthcheck"}))
        })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(engine)
}

/// Serves the API on `listener` in a task; returns the bound address.
pub fn serve_on(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
) -> std::io::Result<std::net::SocketAddr> {
    let addr = listener.local_addr()?;
    let app = router(engine);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the SQL server failed");
        }
    });
    Ok(addr)
}

fn json_response(status: StatusCode, v: J) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn bad_request(status: StatusCode, msg: String) -> Response {
    json_response(
        status,
        json!({"@type": "generic_error", "error_code": u32::from(status.as_u16()) * 100, "message": msg}),
    )
}

async fn read_body(body: Body) -> Result<KsqlRequest, Response> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        bad_request(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
        )
    })?;
    serde_json::from_slice::<KsqlRequest>(&bytes).map_err(|e| {
        bad_request(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {{\"ksql\": \"SHOW STREAMS;\", \"streamsProperties\": {{}}}}: {e}"),
        )
    })
}

fn props_of(req: &KsqlRequest) -> Props {
    req.streams_properties
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect()
}

fn statement_error(e: &SqlError, text: &str, entities: Vec<J>) -> Response {
    let status = match e.kind {
        ErrorKind::Execution => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut v = json!({"@type": "statement_error", "error_code": e.error_code(), "message": e.to_string(), "statementText": text, "entities": entities});
    if let Some(p) = e.pos {
        v["line"] = json!(p.line);
        v["column"] = json!(p.column);
    }
    json_response(status, v)
}

async fn ksql(State(engine): State<Arc<Engine>>, body: Body) -> Response {
    let req = match read_body(body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let _ = (&req.command_sequence_number, &req.session_variables);
    let mut props = props_of(&req);
    let statements = match parse_script(&req.ksql) {
        Ok(s) => s,
        Err(e) => return statement_error(&e, &req.ksql, vec![]),
    };
    let mut out = Vec::new();
    for st in &statements {
        match engine.execute(st, &mut props).await {
            Ok(v) => out.push(v),
            Err(e) => return statement_error(&e.with_source(&st.text), &st.text, out),
        }
    }
    json_response(StatusCode::OK, J::Array(out))
}

async fn query(State(engine): State<Arc<Engine>>, body: Body) -> Response {
    let req = match read_body(body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let props = props_of(&req);
    let mut statements = match parse_script(&req.ksql) {
        Ok(s) => s,
        Err(e) => return statement_error(&e, &req.ksql, vec![]),
    };
    if statements.len() != 1 || !matches!(statements[0].statement, Statement::Select(_)) {
        let e = SqlError::semantic(
            "/query takes exactly one SELECT statement; send other statements to /ksql",
        );
        return statement_error(&e, &req.ksql, vec![]);
    }
    let st = statements.remove(0);
    let push = match engine.push_query(&st, &props) {
        Ok(p) => p,
        Err(e) => return statement_error(&e.with_source(&st.text), &st.text, vec![]),
    };
    let schema = push
        .columns
        .iter()
        .map(|(n, t)| format!("`{n}` {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let header = json!({"header": {"queryId": push.query_id, "schema": schema}});
    // The chunked body: `[` + header, then `,\n` + each row as it comes, then `]` when the query ends (LIMIT, the
    // end of a pull query, or an error, which is sent as a last element).
    enum Phase {
        Header(J),
        Rows,
        Done,
    }
    let ended = push.ended;
    let stream = futures_util::stream::unfold(
        (Phase::Header(header), push.rows),
        move |(phase, mut rows)| {
            let ended = ended.clone();
            async move {
                match phase {
                    Phase::Header(h) => Some((
                        Ok::<_, std::convert::Infallible>(format!("[{h}")),
                        (Phase::Rows, rows),
                    )),
                    Phase::Rows => match rows.recv().await {
                        Some(Ok(r)) => Some((
                            Ok(format!(
                                ",\n{}",
                                if r.tombstone {
                                    json!({"row": {"columns": r.columns, "tombstone": true}})
                                } else {
                                    json!({"row": {"columns": r.columns}})
                                }
                            )),
                            (Phase::Rows, rows),
                        )),
                        Some(Err(e)) => Some((
                            Ok(format!(
                                ",\n{}]\n",
                                json!({"errorMessage": {"@type": "generic_error", "error_code": 50000, "message": e}})
                            )),
                            (Phase::Done, rows),
                        )),
                        None => {
                            let why = ended.lock().ok().and_then(|mut e| e.take());
                            let tail = match why {
                                Some(e) => format!(
                                    ",\n{}]\n",
                                    json!({"errorMessage": {"@type": "generic_error", "error_code": 50000, "message": e}})
                                ),
                                None => "]\n".to_string(),
                            };
                            Some((Ok(tail), (Phase::Done, rows)))
                        }
                    },
                    Phase::Done => None,
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn info(State(engine): State<Arc<Engine>>) -> Response {
    json_response(
        StatusCode::OK,
        json!({"KsqlServerInfo": {"version": env!("CARGO_PKG_VERSION"), "kafkaBootstrap": engine.bootstrap(), "ksqlServiceId": "fjord_", "serverStatus": "RUNNING"}}),
    )
}

async fn health(State(engine): State<Arc<Engine>>) -> Response {
    let ok = engine.cluster_reachable().await;
    json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        json!({"isHealthy": ok, "details": {"metastore": {"isHealthy": true}, "kafka": {"isHealthy": ok}}}),
    )
}
