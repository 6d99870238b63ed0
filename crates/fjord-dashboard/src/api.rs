//! The JSON API under `/api/`. One handler dispatches on method and path itself (rather than axum's extractors,
//! whose rejections are plain text), so that every answer, errors included, is JSON.
//!
//! Reads take partition and coordinator locks, so they run on a blocking thread (as the /metrics scrape does),
//! never on the async workers serving the Kafka protocol.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fjord_broker::admin::{self, ApiError, NewTopic};
use fjord_broker::BrokerState;
use kafka_protocol::error::ResponseError as E;
use serde_json::{json, Map, Value};

use crate::history::History;

#[derive(Clone)]
pub struct Ctx {
    pub state: Arc<BrokerState>,
    pub history: Arc<History>,
    /// Each group's lag over the last 15 minutes (the group page's chart and catch-up estimate).
    pub lag_history: Arc<crate::history::LagHistory>,
    /// Reads running at once (`MAX_READS` permits): they run on the blocking pool, which the broker's fsyncs
    /// and log reads share, so the dashboard never takes more than a few of its threads.
    pub reads: Arc<tokio::sync::Semaphore>,
    /// Message searches running at once (`search::MAX_SEARCHES` permits, not waited for).
    pub searches: Arc<tokio::sync::Semaphore>,
    /// The registry and Connect worker beside the broker, when this process runs them.
    pub services: crate::services::Services,
    /// The registry's schemas by id, compiled, for the message browser's `decode=registry`.
    pub schemas: Arc<crate::decode::SchemaCache>,
    /// The live streams' places and the overview of the last sampling round ([`crate::live`]).
    pub live: Arc<crate::live::Live>,
}

/// Dashboard reads that run at once; more wait up to `READ_WAIT` for a turn, then get 503.
pub const MAX_READS: usize = 4;
pub(crate) const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A turn to read, waiting at most `wait`: 503 (try again) when the dashboard is that busy.
pub(crate) async fn read_turn(
    reads: &Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, Fail> {
    match tokio::time::timeout(wait, reads.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(Fail {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "the dashboard is busy ({MAX_READS} reads running for over {} s); try again",
                wait.as_secs()
            ),
            code: None,
            not_running: None,
        }),
    }
}

/// Runs `f`, a read of the broker's state, on a blocking thread with a read turn (waiting at most `READ_WAIT`
/// for one: 503 beyond). A panic in `f` is a 500 that says the request failed.
pub(crate) async fn blocking_read<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce() -> Result<T, Fail> + Send + 'static,
) -> Result<T, Fail> {
    let turn = read_turn(&ctx.reads, READ_WAIT).await?;
    let run = move || {
        let _turn = turn;
        f()
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(r) => r,
        Err(e) => Err(Fail {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("the request failed: {e}"),
            code: None,
            not_running: None,
        }),
    }
}

/// Largest page of topics, partitions or groups one request returns.
pub const MAX_PAGE: usize = 500;
/// Default page size.
pub const DEFAULT_PAGE: usize = 50;
/// Most records the message browser returns at once.
pub const MAX_MESSAGES: usize = 100;
/// Records the message browser returns when neither `limit` nor `latest` says how many.
pub const DEFAULT_MESSAGES: usize = 20;
/// Most bytes of keys, values and headers (before base64) one message-browser answer holds.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Most bytes of one key, value or header shown; a longer one is cut, with `<field>_truncated` and
/// `<field>_size` (its full length) beside it.
pub const MAX_FIELD: usize = 64 << 10;
/// Most log bytes one message-browser request reads (whole batches; a batch larger than this is still read
/// once, as a consumer's fetch would).
pub const MAX_READ_BYTES: usize = 4 << 20;
/// Largest request body accepted (a topic creation with its configs fits many times over).
const MAX_BODY: usize = 64 << 10;

pub fn routes(ctx: Ctx) -> axum::Router {
    let c2 = ctx.clone();
    axum::Router::new()
        .route(
            "/api",
            axum::routing::any(move |req: axum::extract::Request| handle(c2.clone(), req)),
        )
        .route(
            "/api/{*rest}",
            axum::routing::any(move |req: axum::extract::Request| handle(ctx.clone(), req)),
        )
}

async fn handle(ctx: Ctx, req: axum::extract::Request) -> Response {
    let (parts, b) = req.into_parts();
    let session = parts.extensions.get::<crate::auth::SessionCheck>().cloned();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let client = crate::live::client_of(
        parts
            .extensions
            .get::<crate::auth::LoggedIn>()
            .map(|u| u.0.as_str()),
        peer,
    );
    dispatch(
        ctx,
        parts.method,
        parts.uri,
        parts.headers,
        b,
        (session, client),
    )
    .await
}

/// A failed request: the HTTP status and a message saying what to do; the Kafka error code when the broker's
/// admin layer refused it.
#[derive(Debug)]
pub struct Fail {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) code: Option<i16>,
    /// The service (`registry`, `connect`) this process does not run, for the page's "not running" state.
    pub(crate) not_running: Option<&'static str>,
}

pub(crate) fn bad(message: impl Into<String>) -> Fail {
    Fail {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
        code: None,
        not_running: None,
    }
}

pub(crate) fn not_found(message: impl Into<String>) -> Fail {
    Fail {
        status: StatusCode::NOT_FOUND,
        message: message.into(),
        code: None,
        not_running: None,
    }
}

/// An admin-layer refusal, worded as the CLI words it (`prefix` is e.g. "cannot create topic `t`").
fn refused(e: ApiError, prefix: &str) -> Fail {
    let status = match E::try_from_code(e.code) {
        Some(E::TopicAlreadyExists) => StatusCode::CONFLICT,
        Some(E::UnknownTopicOrPartition) => StatusCode::NOT_FOUND,
        Some(
            E::InvalidTopicException
            | E::InvalidPartitions
            | E::InvalidReplicationFactor
            | E::InvalidReplicaAssignment
            | E::InvalidConfig
            | E::InvalidRequest,
        ) => StatusCode::BAD_REQUEST,
        // Not the controller, a timeout, a disk fault: the request may succeed elsewhere or later.
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let message = if e.message.trim().is_empty() {
        fjord_broker::metrics::error_name(e.code)
    } else {
        e.message
    };
    Fail {
        status,
        message: format!("{prefix}: {message}"),
        code: Some(e.code),
        not_running: None,
    }
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let mut v = json!({ "error": self.message });
        if let Some(s) = self.not_running {
            v["not_running"] = json!(s);
        }
        if let Some(code) = self.code {
            v["kafka_error_code"] = json!(code);
            v["kafka_error"] = json!(fjord_broker::metrics::error_name(code));
        }
        json_response(self.status, &v)
    }
}

pub(crate) type Answer = Result<(StatusCode, Value), Fail>;

/// Refuses what a browser would send on behalf of another site (CSRF) or to a name rebound to this address (DNS
/// rebinding), before anything else is looked at (after the login, when there is one):
/// - the `Host` must be an IP literal, `localhost` or the broker's advertised host name (a rebinding attack
///   reaches the listener under the attacker's own domain name), else 403;
/// - an `Origin` must be that same host and port, and `Sec-Fetch-Site` (when sent) `same-origin` or `none`,
///   else 403;
/// - a request other than GET or HEAD must say `Content-Type: application/json`, else 415: a cross-site page
///   can only send that with a CORS preflight, which fails (the API sends no CORS headers), while a plain form
///   (`text/plain`, `application/x-www-form-urlencoded`) needs none;
/// - and it must carry the CSRF token (the `fjord_csrf` cookie's value in an `X-CSRF-Token` header), else 403,
///   with a login or without: the browser sends basic-auth credentials with a foreign site's request too.
fn guard(ctx: &Ctx, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Fail> {
    let forbidden = |message: String| Fail {
        status: StatusCode::FORBIDDEN,
        message,
        code: None,
        not_running: None,
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .ok_or_else(|| forbidden("a Host header is required".into()))?;
    let name = host_name(&host);
    let advertised = &ctx.state.config.advertised_host;
    let allowed = name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case(advertised);
    if !allowed {
        return Err(forbidden(format!(
            "the dashboard answers only requests addressed to an IP address, localhost or {advertised}, not `{name}` (a guard against DNS rebinding); open it by address"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(&host));
        if !same {
            return Err(forbidden(format!(
                "cross-origin requests are refused: Origin `{origin}` is not this dashboard ({host})"
            )));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Err(forbidden(format!(
                "cross-origin requests are refused (Sec-Fetch-Site: {site})"
            )));
        }
    }
    if method != Method::GET && method != Method::HEAD {
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or("");
        let essence = ctype.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Fail {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!("{method} needs `Content-Type: application/json` (got `{ctype}`)"),
                code: None,
                not_running: None,
            });
        }
        // Double-submit: a page of this origin copies the cookie into the header; another site can neither read
        // the cookie nor send the header (a custom header needs a CORS preflight, which fails).
        let cookie = csrf_cookie(headers);
        let token = headers.get(CSRF_HEADER).and_then(|t| t.to_str().ok());
        let ok = matches!((cookie, token), (Some(c), Some(t)) if !c.is_empty() && crate::auth::bytes_eq(c.as_bytes(), t.as_bytes()));
        if !ok {
            return Err(forbidden(format!(
                "{method} needs the CSRF token: the `{CSRF_COOKIE}` cookie and an `X-CSRF-Token` header with the same value (the dashboard's page sends them; from a script, any random value as both, e.g. curl -b {CSRF_COOKIE}=T -H 'X-CSRF-Token: T')"
            )));
        }
    }
    Ok(())
}

/// The cookie that holds the CSRF token (set with the page, readable by its script) and the header a
/// state-changing request must repeat it in.
pub const CSRF_COOKIE: &str = "fjord_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of the `fjord_csrf` cookie, if the request has one.
pub(crate) fn csrf_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, CSRF_COOKIE)
}

/// The value of cookie `name`, if the request has one.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The host name of a `Host` value, without its port (and without the brackets of an IPv6 literal).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

async fn dispatch(
    ctx: Ctx,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    (session, client): (Option<crate::auth::SessionCheck>, Option<String>),
) -> Response {
    if let Err(f) = guard(&ctx, &method, &uri, &headers) {
        return f.into_response();
    }
    let segments: Result<Vec<String>, Fail> = uri
        .path()
        .trim_start_matches("/api")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let query = match parse_query(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(f) => return f.into_response(),
    };
    let segments = match segments {
        Ok(s) => s,
        Err(f) => return f.into_response(),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return Fail {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the request body is larger than {MAX_BODY} bytes"),
                code: None,
                not_running: None,
            }
            .into_response()
        }
    };
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    if let (&Method::GET, ["topics", name, "search"]) = (&method, seg.as_slice()) {
        // An event stream rather than one JSON answer.
        return crate::search::start(&ctx, name, &query).await;
    }
    match (&method, seg.as_slice()) {
        (&Method::GET, ["overview", "stream"]) => {
            let after = match query.int("after", 0, i64::MAX) {
                Ok(a) => a,
                Err(f) => return f.into_response(),
            };
            return crate::live::overview_stream(&ctx, session, client, after).await;
        }
        (&Method::GET, ["groups", id, "lag", "stream"]) => {
            return crate::live::group_lag_stream(&ctx, id, session, client).await
        }
        _ => {}
    }
    let answer = route(&ctx, &method, &seg, &query, body).await;
    match answer {
        Ok((status, v)) => json_response(status, &v),
        Err(f) => f.into_response(),
    }
}

async fn route(ctx: &Ctx, method: &Method, seg: &[&str], q: &Query, body: Bytes) -> Answer {
    let read = |f: fn(&Ctx, &[String], &Query) -> Result<Value, Fail>| {
        let ctx = ctx.clone();
        let seg: Vec<String> = seg.iter().map(|s| s.to_string()).collect();
        let q = q.clone();
        async move {
            let c = ctx.clone();
            blocking_read(&ctx, move || f(&c, &seg, &q))
                .await
                .map(|v| (StatusCode::OK, v))
        }
    };
    match (method, seg) {
        (&Method::GET, ["overview"]) => read(overview).await,
        (&Method::GET, ["topics"]) => read(topics).await,
        (&Method::POST, ["topics"]) => create_topic(ctx, &body).await,
        (&Method::GET, ["topics", _]) => read(topic).await,
        (&Method::DELETE, ["topics", name]) => delete_topic(ctx, name, &body).await,
        (&Method::GET, ["topics", _, "partitions"]) => read(partitions).await,
        (&Method::POST, ["topics", name, "partitions"]) => add_partitions(ctx, name, &body).await,
        (&Method::GET, ["topics", _, "messages"]) => read(messages).await,
        (&Method::POST, ["topics", name, "configs"]) => alter_configs(ctx, name, &body).await,
        (&Method::GET, ["groups"]) => read(groups).await,
        (&Method::GET, ["groups", _]) => read(group).await,
        (&Method::DELETE, ["groups", id]) => delete_group(ctx, id, &body).await,
        (&Method::POST, ["groups", id, "reset-offsets"]) => reset_offsets(ctx, id, &body).await,
        (&Method::GET, ["openapi.json"]) => Ok((StatusCode::OK, crate::openapi::spec())),
        (&Method::GET, ["services"]) => Ok((StatusCode::OK, crate::extra::services(ctx))),
        // Without a login (with one, the login check answers it with the user, see `auth::require_login`).
        (&Method::GET, ["session"]) => Ok((
            StatusCode::OK,
            serde_json::json!({"login": false, "user": null}),
        )),
        (_, ["schemas", ..] | ["connect", ..]) => {
            crate::extra::route(ctx, method, seg, q, &body).await
        }
        (
            _,
            ["overview"]
            | ["overview", "stream"]
            | ["groups", _, "lag", "stream"]
            | ["topics"]
            | ["topics", _]
            | ["topics", _, "partitions" | "messages" | "configs" | "search"]
            | ["groups"]
            | ["groups", _]
            | ["groups", _, "reset-offsets"]
            | ["openapi.json"]
            | ["services"]
            | ["session"],
        ) => Err(Fail {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{method} is not supported on this path"),
            code: None,
            not_running: None,
        }),
        _ => Err(not_found(format!(
            "no such API: /api/{}; see the dashboard's README section for the endpoints",
            seg.join("/")
        ))),
    }
}

// ---- query strings ----

#[derive(Clone, Debug, Default)]
pub struct Query(BTreeMap<String, String>);

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as a space in a query string); the result must be UTF-8.
fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, Fail> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex_val),
                    b.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(bad(format!("bad percent-encoding in `{s}`")));
                };
                out.push(h * 16 + l);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("`{s}` is not UTF-8 once decoded")))
}

fn parse_query(q: &str) -> Result<Query, Fail> {
    let mut m = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k, true)?, percent_decode(v, true)?);
    }
    Ok(Query(m))
}

impl Query {
    pub(crate) fn str(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(crate) fn int(&self, k: &str, min: i64, max: i64) -> Result<Option<i64>, Fail> {
        match self.str(k) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(bad(format!(
                    "`{k}` must be a whole number from {min} to {max}, not `{v}`"
                ))),
            },
        }
    }

    pub(crate) fn flag(&self, k: &str) -> Result<bool, Fail> {
        match self.str(k) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(v) => Err(bad(format!("`{k}` must be true or false, not `{v}`"))),
        }
    }

    /// (offset, limit) of a page.
    pub(crate) fn page(&self) -> Result<(usize, usize), Fail> {
        let offset = self.int("offset", 0, i32::MAX as i64)?.unwrap_or(0) as usize;
        let limit = self
            .int("limit", 1, MAX_PAGE as i64)?
            .unwrap_or(DEFAULT_PAGE as i64) as usize;
        Ok((offset, limit))
    }
}

// ---- reads ----

pub(crate) fn overview(ctx: &Ctx, _: &[String], _: &Query) -> Result<Value, Fail> {
    let s = &ctx.state;
    let meta = s.meta.state();
    let brokers: Vec<Value> = meta
        .brokers
        .values()
        .map(|b| {
            json!({
                "id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
                "live": meta.is_live(b.id), "controller": b.id == meta.controller_id,
            })
        })
        .collect();
    let mut partitions = 0usize;
    let mut under = 0usize;
    let mut offline = 0usize;
    for t in meta.topics.values() {
        for p in &t.partitions {
            partitions += 1;
            if p.isr.len() < p.replicas.len() {
                under += 1;
            }
            if p.leader == fjord_meta::NO_LEADER {
                offline += 1;
            }
        }
    }
    let rates = ctx.history.rates();
    let (bytes_in, bytes_out, messages_in) =
        rates.last().map_or((0.0, 0.0, 0.0), |r| (r.1, r.2, r.3));
    let history: Vec<Value> = rates
        .iter()
        .map(|r| json!({"at_ms": r.0, "bytes_in": r.1, "bytes_out": r.2, "messages_in": r.3}))
        .collect();
    let groups = {
        let c = s.groups.lock();
        c.list()
            .iter()
            .filter(|(g, _, _)| !c.consumer.contains(g))
            .count()
            + c.consumer.list().len()
    };
    Ok(json!({
        "cluster_id": meta.cluster_id,
        "node_id": s.config.node_id,
        "controller_id": meta.controller_id,
        "version": env!("CARGO_PKG_VERSION"),
        "brokers": brokers,
        "topics": meta.topics.values().filter(|t| !t.internal).count(),
        "internal_topics": meta.topics.values().filter(|t| t.internal).count(),
        "partitions": partitions,
        "under_replicated_partitions": under,
        "offline_partitions": offline,
        "groups": groups,
        "searches_running": crate::search::MAX_SEARCHES - ctx.searches.available_permits(),
        "bytes_in_per_sec": bytes_in,
        "bytes_out_per_sec": bytes_out,
        "messages_in_per_sec": messages_in,
        "sample_interval_ms": crate::SAMPLE_INTERVAL.as_millis() as u64,
        "history_samples": crate::HISTORY_SAMPLES,
        "history": history,
    }))
}

fn is_internal(t: &fjord_meta::TopicMeta) -> bool {
    t.internal || admin::is_internal_topic(&t.name) || admin::is_reserved_topic_name(&t.name)
}

/// Bytes of a topic's partitions hosted on this broker.
fn hosted_size(s: &BrokerState, t: &fjord_meta::TopicMeta) -> u64 {
    (0..t.partitions.len() as i32)
        .filter_map(|i| s.partitions.get(&t.name, i))
        .map(|p| p.size_bytes())
        .sum()
}

fn topics(ctx: &Ctx, _: &[String], q: &Query) -> Result<Value, Fail> {
    let (offset, limit) = q.page()?;
    let filter = q.str("filter").map(str::to_lowercase);
    let internal = q.flag("internal")?;
    let meta = ctx.state.meta.state();
    let matching: Vec<&fjord_meta::TopicMeta> = meta
        .topics
        .values()
        .filter(|t| internal || !is_internal(t))
        .filter(|t| {
            filter
                .as_deref()
                .is_none_or(|f| t.name.to_lowercase().contains(f))
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|t| {
            let labels = fjord_broker::metrics::Metrics::topic(&t.name);
            json!({
                "name": t.name,
                "partitions": t.partitions.len(),
                "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                "size_bytes": hosted_size(&ctx.state, t),
                "internal": is_internal(t),
                "retention_ms": t.configs.get("retention.ms"),
                "messages_in_total": ctx.state.metrics.messages_in.get(&labels).map_or(0, |c| c.get()),
            })
        })
        .collect();
    Ok(json!({ "total": matching.len(), "offset": offset, "limit": limit, "topics": page }))
}

fn find_topic(ctx: &Ctx, name: &str) -> Result<fjord_meta::TopicMeta, Fail> {
    ctx.state
        .meta
        .state()
        .topics
        .get(name)
        .cloned()
        .ok_or_else(|| not_found(format!("topic `{name}` does not exist")))
}

fn topic(ctx: &Ctx, seg: &[String], _: &Query) -> Result<Value, Fail> {
    let t = find_topic(ctx, &seg[1])?;
    let meta = ctx.state.meta.state();
    let configs: Vec<Value> = fjord_broker::api::topic_entries(
        &ctx.state,
        &meta.broker_configs,
        &t.configs,
        None,
        false,
        false,
    )
    .into_iter()
    .map(|e| {
        json!({
            "name": e.name.to_string(),
            "value": e.value.map(|v| v.to_string()),
            "source": match e.config_source { 1 => "topic", 5 => "default", _ => "broker" },
        })
    })
    .collect();
    Ok(json!({
        "name": t.name,
        "id": t.id.to_string(),
        "internal": is_internal(&t),
        "partitions": t.partitions.len(),
        "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
        "size_bytes": hosted_size(&ctx.state, &t),
        "configs": configs,
    }))
}

fn partitions(ctx: &Ctx, seg: &[String], q: &Query) -> Result<Value, Fail> {
    let t = find_topic(ctx, &seg[1])?;
    let (offset, limit) = q.page()?;
    let rows: Vec<Value> = t
        .partitions
        .iter()
        .enumerate()
        .skip(offset)
        .take(limit)
        .map(|(i, p)| {
            let hosted = ctx.state.partitions.get(&t.name, i as i32);
            let (start, end, size) = match &hosted {
                Some(h) => {
                    let (start, hw) = h.offsets();
                    (Some(start), Some(hw), Some(h.size_bytes()))
                }
                None => (None, None, None),
            };
            json!({
                "partition": i, "leader": p.leader, "replicas": p.replicas, "isr": p.isr,
                "start_offset": start, "end_offset": end, "size_bytes": size,
            })
        })
        .collect();
    Ok(json!({
        "topic": t.name, "total": t.partitions.len(), "offset": offset, "limit": limit, "partitions": rows,
    }))
}

/// Standard base64 with padding: record bytes travel to the page as they are, which decodes them.
fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One record field for the page: its bytes in base64, at most `MAX_FIELD` of them and at most `budget` (which
/// it uses up); a field cut short also gives its full size.
fn field(into: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>, budget: &mut usize) {
    let Some(b) = bytes else {
        into.insert(name.into(), Value::Null);
        return;
    };
    let keep = b.len().min(MAX_FIELD).min(*budget);
    *budget -= keep;
    into.insert(name.into(), json!(base64(&b[..keep])));
    if keep < b.len() {
        into.insert(format!("{name}_truncated"), json!(true));
        into.insert(format!("{name}_size"), json!(b.len()));
    }
}

/// What one header costs an answer beyond its bytes (its JSON object), so that many empty headers count too.
const HEADER_OVERHEAD: usize = 32;

/// Bytes a record would return (each field up to `MAX_FIELD`, each header `HEADER_OVERHEAD` more), before base64.
fn shown_size(r: &kafka_protocol::records::Record) -> usize {
    let f = |b: Option<&[u8]>| b.map_or(0, |b| b.len().min(MAX_FIELD));
    f(r.key.as_deref())
        + f(r.value.as_deref())
        + r.headers
            .iter()
            .map(|(k, v)| HEADER_OVERHEAD + k.len().min(MAX_FIELD) + f(v.as_deref()))
            .sum::<usize>()
}

/// The offset after the record batch at the start of `bytes` (its last offset plus one, from the header, which
/// compaction leaves in place when it removes the batch's last records); `None` when no batch header is there.
pub(crate) fn batch_end(bytes: &[u8]) -> Option<i64> {
    fjord_log::batch_headers(bytes)
        .next()
        .map(|b| b.last_offset.saturating_add(1))
}

/// One record as the message browser and the search show it: offset, timestamp, whether it was written in a
/// transaction and (read_uncommitted) whether that transaction was aborted, and key, value and headers in base64,
/// each cut to what `budget` (bytes before base64) still allows.
pub(crate) fn message_json(
    r: &kafka_protocol::records::Record,
    aborted: bool,
    budget: &mut usize,
) -> Value {
    let mut m = Map::new();
    m.insert("offset".into(), json!(r.offset));
    m.insert("timestamp".into(), json!(r.timestamp));
    m.insert("transactional".into(), json!(r.transactional));
    m.insert("aborted".into(), json!(aborted));
    field(&mut m, "key", r.key.as_deref(), budget);
    field(&mut m, "value", r.value.as_deref(), budget);
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|(k, v)| {
            *budget = budget.saturating_sub(HEADER_OVERHEAD);
            let mut h = Map::new();
            let key: &str = k;
            let cut = key.len().min(MAX_FIELD).min(*budget);
            let cut = (0..=cut)
                .rev()
                .find(|&i| key.is_char_boundary(i))
                .unwrap_or(0);
            *budget -= cut;
            h.insert("key".into(), json!(&key[..cut]));
            field(&mut h, "value", v.as_deref(), budget);
            Value::Object(h)
        })
        .collect();
    m.insert("headers".into(), json!(headers));
    Value::Object(m)
}

fn messages(ctx: &Ctx, seg: &[String], q: &Query) -> Result<Value, Fail> {
    let t = find_topic(ctx, &seg[1])?;
    let n = t.partitions.len() as i64;
    if n == 0 {
        return Err(bad(format!("topic `{}` has no partitions", t.name)));
    }
    let partition =
        q.int("partition", 0, n - 1)?
            .ok_or_else(|| bad("`partition` is required (a partition number)"))? as i32;
    let latest = q.int("latest", 1, MAX_MESSAGES as i64)?;
    // "The latest N" returns N records unless `limit` says fewer.
    let limit = q
        .int("limit", 1, MAX_MESSAGES as i64)?
        .or(latest)
        .unwrap_or(DEFAULT_MESSAGES as i64) as usize;
    let mut decoding = match q.str("decode").unwrap_or("none") {
        "none" => None,
        "registry" => crate::decode::Decoding::new(&ctx.services, &ctx.schemas),
        other => {
            return Err(bad(format!(
                "`decode` must be none or registry (Avro, JSON Schema and Protobuf through the schema registry), not `{other}`"
            )))
        }
    };
    let p = ctx.state.partitions.get(&t.name, partition).ok_or_else(|| Fail {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!(
            "partition {partition} of `{}` is not hosted on this broker (node {}); open the dashboard of its leader, broker {}",
            t.name,
            ctx.state.config.node_id,
            t.partitions[partition as usize].leader
        ),
        code: None,
        not_running: None,
    })?;
    let isolation = crate::walk::Isolation::from_query(q)?;
    let (start, high_watermark) = p.offsets();
    // Where reads end: the high watermark, or with read_committed the last stable offset ("latest N" counts
    // back from there, as a read_committed consumer's end offset is the LSO).
    let end = isolation.end(&p).min(high_watermark);
    let from = match (
        q.int("offset", 0, i64::MAX)?,
        latest,
        q.int("timestamp", 0, i64::MAX)?,
    ) {
        (Some(o), None, None) => o.max(start),
        (None, Some(l), None) => (end - l).max(start),
        // The first record stamped at or after the time; none: the end (nothing to show).
        (None, None, Some(ts)) => p
            .offset_for_timestamp(ts)
            .map_err(|e| Fail {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("cannot read partition {partition} of `{}`: {e}", t.name),
                code: None,
                not_running: None,
            })?
            .map_or(end, |(o, _)| o.max(start)),
        (None, None, None) => start,
        _ => {
            return Err(bad(
                "give one of `offset`, `timestamp` or `latest`, not several",
            ))
        }
    };
    let mut out = Vec::new();
    // What the records returned may still add (key, value and headers before base64).
    let mut budget = MAX_RESPONSE_BYTES;
    // `walk.next`, the first offset not returned, is where the next page starts. Each read returns whole batches
    // from the one holding it; a batch of control records, of an aborted transaction or of offsets before
    // `from` yields nothing, so the loop also stops on bytes read, not only on records found.
    let mut walk = crate::walk::Walk::new(from, end, isolation);
    let mut read = crate::walk::partition_reader(&p, false, isolation);
    while out.len() < limit && walk.bytes_read < MAX_READ_BYTES as u64 {
        let max = MAX_READ_BYTES - walk.bytes_read as usize;
        let step = walk.step(&mut read, max, &mut |r, aborted| {
            // Full: this record is the next page's first (the first record is always returned, cut to the
            // budget, so that a page always moves on).
            if out.len() >= limit || (!out.is_empty() && shown_size(r) > budget) {
                return crate::walk::Flow::Before;
            }
            let mut m = message_json(r, aborted, &mut budget);
            if let Some(d) = decoding.as_mut() {
                // Decoded from the whole field (the base64 may be cut), the JSON charged to the budget.
                for (name, f) in [("key_decoded", &r.key), ("value_decoded", &r.value)] {
                    if let Some(b) = f {
                        m[name] = d.field(b, &mut budget);
                    }
                }
            }
            out.push(m);
            crate::walk::Flow::Next
        });
        match step {
            crate::walk::Step::Read => {}
            crate::walk::Step::Reached | crate::walk::Step::Stopped => break,
            crate::walk::Step::Failed(e) => {
                tracing::warn!(topic = %t.name, partition, error = %e, "dashboard: partition not readable");
                return Err(Fail {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!("partition {partition} of `{}`: {e}", t.name),
                    code: None,
                    not_running: None,
                });
            }
        }
    }
    let next = walk.next;
    // Under read_committed, the end the walk used (the LSO may have moved on since); else the LSO now.
    let lso = match isolation {
        crate::walk::Isolation::ReadCommitted => end,
        crate::walk::Isolation::ReadUncommitted => p.last_stable_offset(),
    };
    let mut answer = json!({
        "topic": t.name, "partition": partition, "start_offset": start, "end_offset": high_watermark,
        "isolation": isolation.name(), "last_stable_offset": lso,
        "from": from, "next_offset": next, "messages": out,
        "encoding": "key, value and header values are base64",
    });
    if let Some((a, b)) = walk.removed {
        // Retention removed them between the start of the request and their read.
        answer["removed"] = json!({"from": a, "to": b});
    }
    Ok(answer)
}

/// One group as the dashboard lists it, copied out of the coordinator.
struct GroupRow {
    id: String,
    kind: &'static str,
    protocol_type: String,
    protocol: String,
    state: String,
    members: Vec<Member>,
    offsets: Vec<((String, i32), i64)>,
}

struct Member {
    member_id: String,
    client_id: String,
    host: String,
    instance_id: Option<String>,
    assignment: Vec<(String, Vec<i32>)>,
}

/// Every group this broker coordinates (classic and KIP-848), copied under the coordinator lock.
fn group_rows(s: &BrokerState, only: Option<&str>) -> Vec<GroupRow> {
    let meta = s.meta.state();
    let names: HashMap<_, _> = meta
        .topics
        .values()
        .map(|t| (t.id, t.name.clone()))
        .collect();
    let c = s.groups.lock();
    let mut rows = Vec::new();
    for (id, ptype, state) in c.list() {
        if only.is_some_and(|o| o != id) || c.consumer.contains(&id) {
            continue;
        }
        let d = c.describe(&id);
        let members = d
            .as_ref()
            .map(|d| {
                d.members
                    .iter()
                    .map(|m| Member {
                        member_id: m.member_id.clone(),
                        client_id: m.client_id.clone(),
                        host: m.client_host.clone(),
                        instance_id: m.instance_id.clone(),
                        assignment: fjord_coordinator::consumer_protocol::assignment_partitions(
                            &m.assignment,
                        ),
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.push(GroupRow {
            offsets: c
                .fetch_offsets(&id)
                .into_iter()
                .map(|(tp, o)| (tp, o.offset))
                .collect(),
            id,
            kind: "classic",
            protocol_type: ptype,
            protocol: d.map(|d| d.protocol).unwrap_or_default(),
            state: state.name().to_string(),
            members,
        });
    }
    for (id, state) in c.consumer.list() {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let members = c
            .consumer
            .members(&id)
            .into_iter()
            .map(|m| Member {
                member_id: m.member_id,
                client_id: m.client_id,
                host: m.client_host,
                instance_id: m.instance_id,
                assignment: m
                    .assigned
                    .iter()
                    .map(|(tid, ps)| {
                        (
                            names.get(tid).cloned().unwrap_or_else(|| tid.to_string()),
                            ps.iter().copied().collect(),
                        )
                    })
                    .collect(),
            })
            .collect();
        rows.push(GroupRow {
            offsets: c
                .fetch_offsets(&id)
                .into_iter()
                .map(|(tp, o)| (tp, o.offset))
                .collect(),
            id,
            kind: "consumer",
            protocol_type: "consumer".into(),
            protocol: "uniform".into(),
            state: state.to_string(),
            members,
        });
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// A partition with a commit: (topic, partition, committed, end offset, lag); end and lag are None for a
/// partition not hosted here.
type LagRow = (String, i32, i64, Option<i64>, Option<i64>);

fn lags(s: &BrokerState, g: &GroupRow) -> Vec<LagRow> {
    let mut out: Vec<_> = g
        .offsets
        .iter()
        .filter(|(_, o)| *o >= 0)
        .map(|((t, p), o)| {
            let end = s.partitions.get(t, *p).map(|h| h.high_watermark());
            (t.clone(), *p, *o, end, end.map(|e| (e - o).max(0)))
        })
        .collect();
    out.sort();
    out
}

/// Whether this broker coordinates group `id` (classic or KIP-848).
pub(crate) fn group_exists(s: &BrokerState, id: &str) -> bool {
    let c = s.groups.lock();
    c.consumer.contains(id) || c.list().iter().any(|(g, _, _)| g == id)
}

/// A group's committed offsets: ((topic, partition), offset).
type Committed = Vec<((String, i32), i64)>;

/// Every group's total lag now (over the partitions hosted here), for the lag history: only the committed
/// offsets are copied under the coordinator lock (no members or assignments, unlike [`group_rows`]), and the
/// high watermarks are read after it is released.
pub(crate) fn group_lags(s: &BrokerState) -> Vec<(String, i64)> {
    let committed: Vec<(String, Committed)> = {
        let c = s.groups.lock();
        let mut ids: Vec<String> = c
            .list()
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| !c.consumer.contains(id))
            .collect();
        ids.extend(c.consumer.list().into_iter().map(|(id, _)| id));
        ids.into_iter()
            .map(|id| {
                let o = c
                    .fetch_offsets(&id)
                    .into_iter()
                    .map(|(tp, o)| (tp, o.offset))
                    .collect();
                (id, o)
            })
            .collect()
    };
    committed
        .into_iter()
        .map(|(id, offsets)| {
            let lag = offsets
                .iter()
                .filter(|(_, o)| *o >= 0)
                .filter_map(|((t, p), o)| {
                    let end = s.partitions.get(t, *p)?.high_watermark();
                    Some((end - o).max(0))
                })
                .sum();
            (id, lag)
        })
        .collect()
}

/// The group list: filtered by id, state, lag and member count, sorted, one page of it. All on the server, so
/// that a broker with thousands of groups answers one page as fast as a few.
fn groups(ctx: &Ctx, _: &[String], q: &Query) -> Result<Value, Fail> {
    let (offset, limit) = q.page()?;
    let filter = q.str("filter").map(str::to_lowercase);
    let state_filter = q.str("state").map(str::to_lowercase);
    let min_lag = q.int("min_lag", 0, i64::MAX)?;
    let max_lag = q.int("max_lag", 0, i64::MAX)?;
    let min_members = q.int("min_members", 0, i32::MAX as i64)?;
    let max_members = q.int("max_members", 0, i32::MAX as i64)?;
    let sort = q.str("sort").unwrap_or("id").to_string();
    if !matches!(sort.as_str(), "id" | "lag" | "members" | "state") {
        return Err(bad(format!(
            "`sort` must be id, lag, members or state, not `{sort}`"
        )));
    }
    // Numbers sort largest first by default (who is behind, who has the most members), names A to Z.
    let descending = match q.str("order") {
        None => matches!(sort.as_str(), "lag" | "members"),
        Some("asc") => false,
        Some("desc") => true,
        Some(o) => return Err(bad(format!("`order` must be asc or desc, not `{o}`"))),
    };
    let mut rows: Vec<(GroupRow, i64)> = group_rows(&ctx.state, None)
        .into_iter()
        .filter(|g| {
            filter
                .as_deref()
                .is_none_or(|f| g.id.to_lowercase().contains(f))
        })
        .filter(|g| {
            state_filter
                .as_deref()
                .is_none_or(|f| g.state.to_lowercase() == f)
        })
        .filter(|g| {
            let n = g.members.len() as i64;
            min_members.is_none_or(|m| n >= m) && max_members.is_none_or(|m| n <= m)
        })
        .map(|g| {
            let lag = lags(&ctx.state, &g).iter().filter_map(|l| l.4).sum();
            (g, lag)
        })
        .filter(|(_, lag)| min_lag.is_none_or(|m| *lag >= m) && max_lag.is_none_or(|m| *lag <= m))
        .collect();
    // Ties by id, A to Z, whichever way the key sorts.
    let key = |a: &(GroupRow, i64), b: &(GroupRow, i64)| match sort.as_str() {
        "lag" => a.1.cmp(&b.1),
        "members" => a.0.members.len().cmp(&b.0.members.len()),
        "state" => a.0.state.cmp(&b.0.state),
        _ => a.0.id.cmp(&b.0.id),
    };
    rows.sort_by(|a, b| {
        let k = key(a, b);
        let k = if descending { k.reverse() } else { k };
        k.then_with(|| a.0.id.cmp(&b.0.id))
    });
    let page: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(g, lag)| {
            json!({
                "id": g.id, "type": g.kind, "protocol_type": g.protocol_type, "state": g.state,
                "members": g.members.len(), "lag": lag,
            })
        })
        .collect();
    Ok(json!({
        "total": rows.len(), "offset": offset, "limit": limit, "sort": sort,
        "order": if descending { "desc" } else { "asc" }, "groups": page,
    }))
}

fn group(ctx: &Ctx, seg: &[String], _: &Query) -> Result<Value, Fail> {
    let id = &seg[1];
    let Some(g) = group_rows(&ctx.state, Some(id)).into_iter().next() else {
        return Err(not_found(format!(
            "group `{id}` does not exist on this broker (a group lives on its coordinator; list groups with `fjord groups list`)"
        )));
    };
    let owner: HashMap<(String, i32), String> = g
        .members
        .iter()
        .flat_map(|m| {
            m.assignment.iter().flat_map(move |(t, ps)| {
                ps.iter()
                    .map(move |p| ((t.clone(), *p), m.member_id.clone()))
            })
        })
        .collect();
    let rows = lags(&ctx.state, &g);
    let total: i64 = rows.iter().filter_map(|r| r.4).sum();
    let offsets: Vec<Value> = rows
        .iter()
        .map(|(t, p, o, end, lag)| {
            json!({
                "topic": t, "partition": p, "committed": o, "end_offset": end, "lag": lag,
                "member": owner.get(&(t.clone(), *p)),
            })
        })
        .collect();
    let members: Vec<Value> = g
        .members
        .iter()
        .map(|m| {
            let count: usize = m.assignment.iter().map(|(_, ps)| ps.len()).sum();
            json!({
                "member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                "instance_id": m.instance_id, "partition_count": count,
                "assignment": m.assignment.iter().map(|(t, ps)| json!({"topic": t, "partitions": ps})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let samples = ctx.lag_history.samples(&g.id);
    let catch_up = crate::history::catch_up(&samples, total);
    let history: Vec<Value> = samples
        .iter()
        .map(|(at, lag)| json!({"at_ms": at, "lag": lag}))
        .collect();
    Ok(json!({
        "id": g.id, "type": g.kind, "protocol_type": g.protocol_type, "protocol": g.protocol,
        "state": g.state, "members": members, "offsets": offsets, "lag": total,
        "lag_history": history, "catch_up": catch_up,
        "sample_interval_ms": crate::SAMPLE_INTERVAL.as_millis() as u64,
    }))
}

// ---- writes ----

pub(crate) fn body_object(body: &[u8]) -> Result<Map<String, Value>, Fail> {
    if body.is_empty() {
        return Err(bad("a JSON object is required as the request body"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the request body must be a JSON object")),
        Err(e) => Err(bad(format!("the request body is not valid JSON: {e}"))),
    }
}

/// An optional integer field within `min..=max`.
pub(crate) fn int_field(
    m: &Map<String, Value>,
    k: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, Fail> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(bad(format!(
                "`{k}` must be a whole number from {min} to {max}, not {n}"
            ))),
        },
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(bad(format!(
                "`{k}` must be a whole number from {min} to {max}, not `{s}`"
            ))),
        },
        Some(v) => Err(bad(format!("`{k}` must be a number, not {v}"))),
    }
}

pub(crate) fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, Fail> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(bad(format!("`{k}` is required"))),
        Some(v) => Err(bad(format!("`{k}` must be a string, not {v}"))),
    }
}

async fn create_topic(ctx: &Ctx, body: &[u8]) -> Answer {
    let m = body_object(body)?;
    let name = str_field(&m, "name")?.to_string();
    // The CLI's own check before it asks the broker (`fjord topics create`), with its words.
    if admin::is_reserved_topic_name(&name) {
        return Err(bad(admin::RESERVED_TOPIC_NAME));
    }
    // The CLI's ranges (`--partitions` and `--replication-factor` take 1 and up), in its words; absent means the
    // broker's default.
    let at_least_one = |k: &str, flag: &str| -> Result<Option<i64>, Fail> {
        match int_field(&m, k, i64::MIN, i64::MAX)? {
            Some(v) if !(1..=i32::MAX as i64).contains(&v) => Err(bad(format!(
                "invalid value '{v}' for {flag}: {v} is not in 1..={}",
                i32::MAX
            ))),
            v => Ok(v),
        }
    };
    let partitions = at_least_one("partitions", "partitions")?.unwrap_or(-1) as i32;
    let rf = match at_least_one("replication_factor", "replication factor")? {
        None => -1,
        Some(r) => i16::try_from(r).map_err(|_| {
            bad(format!(
                "--replication-factor {r} is larger than any cluster can hold ({})",
                i16::MAX
            ))
        })?,
    };
    let mut configs = Vec::new();
    match m.get("configs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) => {
            for (k, v) in c {
                let v = match v {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(bad(format!("config `{k}` must be a string, not {other}")))
                    }
                };
                // As `fjord topics create --config`: the precise reason before the broker is asked.
                fjord_broker::config::validate_topic_config(k.trim(), &v).map_err(|e| {
                    bad(format!(
                        "{e}. See `fjord topics describe TOPIC --all-configs` for names and values."
                    ))
                })?;
                configs.push((k.trim().to_string(), Some(v)));
            }
        }
        Some(v) => {
            return Err(bad(format!(
                "`configs` must be an object of names to values, not {v}"
            )))
        }
    }
    let t = NewTopic {
        name: name.clone(),
        num_partitions: partitions,
        replication_factor: rf,
        assignments: Vec::new(),
        configs,
    };
    match admin::create_topic(&ctx.state, t, false).await {
        Ok(c) => Ok((
            StatusCode::CREATED,
            json!({
                "name": name, "id": c.id.to_string(), "partitions": c.num_partitions,
                "replication_factor": c.replication_factor, "configs": c.configs,
                "message": format!("Created topic {name}."),
            }),
        )),
        Err(e) if e.code == E::TopicAlreadyExists.code() => Err(Fail {
            status: StatusCode::CONFLICT,
            message: format!("topic `{name}` already exists"),
            code: Some(e.code),
            not_running: None,
        }),
        Err(e) => Err(refused(e, &format!("cannot create topic `{name}`"))),
    }
}

/// The exact name (or id: `word`) of what a delete removes, sent as the confirmation: `{"confirm": NAME}`.
pub(crate) fn confirmed(
    m: &serde_json::Map<String, Value>,
    name: &str,
    what: &str,
    word: &str,
) -> Result<(), Fail> {
    let confirm = m.get("confirm").and_then(Value::as_str).unwrap_or("");
    if confirm != name {
        return Err(bad(format!(
            "to delete {what}, type its exact {word} as the confirmation: {{\"confirm\": \"{name}\"}} (got `{confirm}`)"
        )));
    }
    Ok(())
}

async fn delete_topic(ctx: &Ctx, name: &str, body: &[u8]) -> Answer {
    let m = body_object(body).map_err(|f| {
        bad(format!(
            "{}; send {{\"confirm\": \"{name}\"}} to delete topic `{name}`",
            f.message
        ))
    })?;
    confirmed(&m, name, &format!("topic `{name}`"), "name")?;
    if !ctx.state.meta.state().topics.contains_key(name) {
        return Err(not_found(format!("topic `{name}` does not exist")));
    }
    admin::delete_topic(&ctx.state, name)
        .await
        .map_err(|e| refused(e, &format!("cannot delete topic `{name}`")))?;
    Ok((
        StatusCode::OK,
        json!({ "name": name, "message": format!("Deleted topic {name}.") }),
    ))
}

async fn add_partitions(ctx: &Ctx, name: &str, body: &[u8]) -> Answer {
    let m = body_object(body)?;
    let count = int_field(&m, "count", i32::MIN as i64, i32::MAX as i64)?
        .ok_or_else(|| bad("`count` is required: the topic's new total number of partitions"))?
        as i32;
    // The CLI's checks (`fjord topics alter --partitions`), in its words, before the broker is asked.
    let Some(current) = ctx
        .state
        .meta
        .state()
        .topics
        .get(name)
        .map(|t| t.partitions.len())
    else {
        return Err(not_found(format!("topic `{name}` does not exist")));
    };
    admin::check_partitions_grow(name, current, count as i64, "the new count").map_err(bad)?;
    admin::create_partitions(&ctx.state, name, count, None, false)
        .await
        .map_err(|e| refused(e, &format!("cannot add partitions to `{name}`")))?;
    Ok((
        StatusCode::OK,
        json!({ "name": name, "partitions": count, "message": format!("Topic {name} now has {count} partitions.") }),
    ))
}

/// A partition and the offset it is reset to.
type Reset = ((String, i32), i64);

/// Resets a group's committed offsets on one topic (all its partitions, or those listed) to the earliest or
/// latest offset, a given one (clamped into the partition's range, as Kafka's tool does) or the first at or after
/// a timestamp (the log end offset when every record is older). A dry run unless
/// `execute` is true; either way the answer lists each partition's current and new offset. Only for a group
/// without active members.
async fn reset_offsets(ctx: &Ctx, id: &str, body: &[u8]) -> Answer {
    let m = body_object(body)?;
    let topic = str_field(&m, "topic")?.to_string();
    let t = ctx
        .state
        .meta
        .state()
        .topics
        .get(&topic)
        .cloned()
        .ok_or_else(|| not_found(format!("topic `{topic}` does not exist")))?;
    let n = t.partitions.len() as i64;
    let partitions: Vec<i32> = match m.get("partitions") {
        None | Some(Value::Null) => (0..n as i32).collect(),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| match v.as_i64() {
                Some(p) if (0..n).contains(&p) => Ok(p as i32),
                _ => Err(bad(format!(
                    "`partitions` must list partitions of `{topic}` (0 to {}), not {v}",
                    n - 1
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(bad(format!(
                "`partitions` must be a non-empty list of numbers, not {v}"
            )))
        }
    };
    let to = str_field(&m, "to")?.to_string();
    let offset = int_field(&m, "offset", 0, i64::MAX)?;
    let timestamp = int_field(&m, "timestamp", 0, i64::MAX)?;
    match (to.as_str(), offset, timestamp) {
        ("earliest" | "latest", None, None)
        | ("offset", Some(_), None)
        | ("timestamp", None, Some(_)) => {}
        ("offset", None, _) => return Err(bad("`to: offset` needs `offset`, a number")),
        ("timestamp", _, None) => {
            return Err(bad(
                "`to: timestamp` needs `timestamp`, in milliseconds since the Unix epoch",
            ))
        }
        ("earliest" | "latest" | "timestamp", Some(_), _) => {
            return Err(bad("`offset` goes only with `to: offset`"))
        }
        ("earliest" | "latest" | "offset", _, Some(_)) => {
            return Err(bad("`timestamp` goes only with `to: timestamp`"))
        }
        (other, _, _) => {
            return Err(bad(format!(
                "`to` must be earliest, latest, offset or timestamp, not `{other}`"
            )))
        }
    }
    let execute = match m.get("execute") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(bad(format!("`execute` must be true or false, not {v}"))),
    };
    let active = group_rows(&ctx.state, Some(id))
        .into_iter()
        .next()
        .is_some_and(|g| !g.members.is_empty());
    if active {
        return Err(Fail {
            status: StatusCode::CONFLICT,
            message: format!("group `{id}` has active members; stop its consumers first"),
            code: None,
            not_running: None,
        });
    }
    let current: HashMap<(String, i32), i64> = group_rows(&ctx.state, Some(id))
        .into_iter()
        .flat_map(|g| g.offsets)
        .collect();
    let mut hosted = Vec::new();
    for p in partitions {
        let Some(h) = ctx.state.partitions.get(&topic, p) else {
            return Err(Fail {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("partition {p} of `{topic}` is not hosted on this broker"),
                code: None,
                not_running: None,
            });
        };
        hosted.push((p, h));
    }
    // A timestamp lookup reads (and decompresses) batches: on the blocking pool, as a read, like ListOffsets.
    let plan = {
        let topic = topic.clone();
        let run = move || -> Result<Vec<Reset>, Fail> {
            let mut plan = Vec::new();
            for (p, h) in hosted {
                let (start, end) = h.offsets();
                let new = match (to.as_str(), offset, timestamp) {
                    ("earliest", ..) => start,
                    ("latest", ..) => end,
                    ("offset", Some(o), _) => o.clamp(start, end),
                    // ListOffsets by timestamp: the first offset at or after it below the high watermark;
                    // none (every record is older): the log end offset, as `kafka-consumer-groups
                    // --to-datetime` falls back to.
                    (_, _, Some(ts)) => h
                        .offset_for_timestamp(ts)
                        .map_err(|e| Fail {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            message: format!(
                                "cannot look up timestamp {ts} in partition {p} of `{topic}`: {e}"
                            ),
                            code: Some(e.code()),
                            not_running: None,
                        })?
                        .map(|(o, _)| o)
                        .filter(|o| *o < end)
                        .unwrap_or(end)
                        .clamp(start, end),
                    _ => unreachable!("the target was checked above"),
                };
                plan.push(((topic.clone(), p), new));
            }
            Ok(plan)
        };
        blocking_read(ctx, run).await?
    };
    if execute {
        fjord_broker::groups::reset_offsets(&ctx.state, id, plan.clone())
            .await
            .map_err(|code| {
                let conflict = [E::UnknownMemberId.code(), E::IllegalGeneration.code()].contains(&code)
                    || code == E::RebalanceInProgress.code();
                let message = if conflict {
                    format!(
                        "group `{id}` has active members (the broker refused the new offsets: {}); stop its consumers first",
                        fjord_broker::metrics::error_name(code)
                    )
                } else {
                    format!("cannot reset the offsets of group `{id}`: {}", fjord_broker::metrics::error_name(code))
                };
                Fail {
                    status: if conflict { StatusCode::CONFLICT } else { StatusCode::SERVICE_UNAVAILABLE },
                    message,
                    code: Some(code),
                    not_running: None,
                }
            })?;
    }
    let rows: Vec<Value> = plan
        .iter()
        .map(|((t, p), new)| {
            json!({"topic": t, "partition": p, "current": current.get(&(t.clone(), *p)), "new": new})
        })
        .collect();
    let mut answer = json!({"group": id, "executed": execute, "offsets": rows});
    if let Some(ts) = timestamp {
        answer["timestamp"] = json!(ts);
    }
    Ok((StatusCode::OK, answer))
}

/// Deletes a consumer group and its committed offsets (DeleteGroups, through the broker's own path), once its
/// exact id is sent as the confirmation. Refused while the group has members (409, Kafka's NON_EMPTY_GROUP, as
/// `kafka-consumer-groups --delete` is); 404 for a group this broker does not know.
async fn delete_group(ctx: &Ctx, id: &str, body: &[u8]) -> Answer {
    let m = body_object(body).map_err(|f| {
        bad(format!(
            "{}; send {{\"confirm\": \"{id}\"}} to delete group `{id}`",
            f.message
        ))
    })?;
    confirmed(&m, id, &format!("group `{id}`"), "id")?;
    let code = fjord_broker::groups::delete_groups(&ctx.state, &[id])
        .await
        .first()
        .copied()
        .unwrap_or(E::UnknownServerError.code());
    let fail = |status, message: String| Fail {
        status,
        message,
        code: Some(code),
        not_running: None,
    };
    match E::try_from_code(code) {
        None => Ok((
            StatusCode::OK,
            json!({ "group": id, "message": format!("Deleted group {id}.") }),
        )),
        Some(E::NonEmptyGroup) => Err(fail(
            StatusCode::CONFLICT,
            format!("cannot delete group `{id}`: it has active members; stop its consumers first"),
        )),
        Some(E::GroupIdNotFound) => Err(fail(
            StatusCode::NOT_FOUND,
            format!("group `{id}` does not exist on this broker (a group lives on its coordinator; list groups with `fjord groups list`)"),
        )),
        Some(E::NotCoordinator | E::CoordinatorLoadInProgress | E::CoordinatorNotAvailable) => {
            Err(fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "group `{id}` is not coordinated by this broker right now ({}); open the dashboard of its coordinator (`fjord groups describe {id}` names it) or try again",
                    fjord_broker::metrics::error_name(code)
                ),
            ))
        }
        Some(_) => Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "cannot delete group `{id}`: {}",
                fjord_broker::metrics::error_name(code)
            ),
        )),
    }
}

/// Sets and deletes configs of one topic (IncrementalAlterConfigs SET and DELETE, through the broker's own
/// path, so its checks and messages); with `validate_only` the broker checks the change and nothing is written.
/// A config to delete must be set on the topic (as `fjord topics alter --delete-config` requires).
async fn alter_configs(ctx: &Ctx, name: &str, body: &[u8]) -> Answer {
    let m = body_object(body)?;
    let validate_only = match m.get("validate_only") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(bad(format!(
                "`validate_only` must be true or false, not {v}"
            )))
        }
    };
    let mut set = BTreeMap::new();
    match m.get("set") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) => {
            for (k, v) in c {
                let v = match v {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(bad(format!(
                            "config `{k}` must be set to a string, not {other} (to remove it, list it in `delete`)"
                        )))
                    }
                };
                set.insert(k.trim().to_string(), v);
            }
        }
        Some(v) => {
            return Err(bad(format!(
                "`set` must be an object of config names to values, not {v}"
            )))
        }
    }
    let delete: Vec<String> = match m.get("delete") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(k) => Ok(k.trim().to_string()),
                other => Err(bad(format!("`delete` must list config names, not {other}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(bad(format!(
                "`delete` must be a list of config names, not {v}"
            )))
        }
    };
    if set.is_empty() && delete.is_empty() {
        return Err(bad(format!(
            "nothing to change on topic `{name}`: give `set` ({{\"retention.ms\": \"86400000\"}}) or `delete` ([\"retention.ms\"])"
        )));
    }
    if let Some(k) = delete.iter().find(|k| set.contains_key(*k)) {
        return Err(bad(format!("`{k}` is both set and deleted")));
    }
    let overrides = find_topic(ctx, name)?.configs;
    // A known config not set on the topic: deleting it would change nothing (an unknown one is the broker's
    // to refuse, below).
    let unset: Vec<String> = delete
        .iter()
        .filter(|k| {
            fjord_broker::config::topic_config_def(k).is_some() && !overrides.contains_key(*k)
        })
        .map(|k| format!("`{k}`"))
        .collect();
    if !unset.is_empty() {
        let set_list = if overrides.is_empty() {
            "none".to_string()
        } else {
            overrides.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        return Err(bad(format!(
            "cannot delete {} of topic `{name}`: not set on the topic (its value is the broker default). Configs set on {name}: {set_list}",
            unset.join(", ")
        )));
    }
    let ops: Vec<(String, i8, Option<String>)> = set
        .iter()
        .map(|(k, v)| (k.clone(), admin::OP_SET, Some(v.clone())))
        .chain(delete.iter().map(|k| (k.clone(), admin::OP_DELETE, None)))
        .collect();
    admin::incremental_alter_topic_configs(&ctx.state, name, ops, validate_only)
        .await
        .map_err(|e| refused(e, &format!("cannot change configs of `{name}`")))?;
    let message = if validate_only {
        format!("The broker accepts this change to {name}; nothing was changed.")
    } else {
        format!("Updated configs of topic {name}.")
    };
    Ok((
        StatusCode::OK,
        json!({
            "name": name, "validate_only": validate_only, "set": set, "delete": delete, "message": message,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x01]), "//4AAQ==");
    }

    #[test]
    fn reads_beyond_the_limit_wait_then_are_refused_with_503() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let reads = Arc::new(tokio::sync::Semaphore::new(MAX_READS));
            let wait = std::time::Duration::from_millis(50);
            let mut held = Vec::new();
            for _ in 0..MAX_READS {
                held.push(read_turn(&reads, wait).await.unwrap());
            }
            let e = read_turn(&reads, wait).await.unwrap_err();
            assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(e.message.contains("busy"), "{}", e.message);
            held.pop();
            assert!(read_turn(&reads, wait).await.is_ok());
        });
    }

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("evil.example:x"), "evil.example:x");
    }

    #[test]
    fn fields_are_cut_to_the_field_limit_and_the_budget() {
        let mut m = Map::new();
        let mut budget = MAX_FIELD * 3 / 2;
        let big = vec![b'a'; MAX_FIELD + 10];
        field(&mut m, "key", None, &mut budget);
        field(&mut m, "value", Some(&big), &mut budget);
        assert_eq!(m["key"], Value::Null);
        assert_eq!(
            m["value"].as_str().unwrap().len(),
            MAX_FIELD.div_ceil(3) * 4
        );
        assert_eq!(m["value_truncated"], true);
        assert_eq!(m["value_size"], MAX_FIELD + 10);
        assert_eq!(budget, MAX_FIELD / 2);
        let mut h = Map::new();
        field(&mut h, "value", Some(&big), &mut budget);
        assert_eq!(
            h["value"].as_str().unwrap().len(),
            (MAX_FIELD / 2).div_ceil(3) * 4
        );
        assert_eq!(budget, 0);
        let mut small = Map::new();
        field(&mut small, "value", Some(b"ab"), &mut 10);
        assert_eq!(small["value"], "YWI=");
        assert!(small.get("value_truncated").is_none());
    }

    #[test]
    fn empty_headers_count_against_the_answer_budget() {
        let mut r = kafka_protocol::records::Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: None,
            headers: Default::default(),
            delete_horizon: false,
        };
        for i in 0..10_000 {
            r.headers.insert(format!("{i}").into(), None);
        }
        // Ten thousand headers of a few bytes each build ten thousand JSON objects: they must cost something.
        assert!(
            shown_size(&r) >= 10_000 * HEADER_OVERHEAD,
            "{}",
            shown_size(&r)
        );
    }

    #[test]
    fn query_strings_decode_and_bad_numbers_are_refused() {
        let q = parse_query("filter=a%2Bb+c&limit=10&x").unwrap();
        assert_eq!(q.str("filter"), Some("a+b c"));
        assert_eq!(q.page().unwrap(), (0, 10));
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%ff").is_err(), "not UTF-8");
        let q = parse_query("limit=100000").unwrap();
        let e = q.page().unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("`limit`"), "{}", e.message);
        assert!(parse_query("limit=-1").unwrap().page().is_err());
        assert!(parse_query("internal=maybe")
            .unwrap()
            .flag("internal")
            .is_err());
    }

    #[test]
    fn request_bodies_must_be_objects_with_typed_fields() {
        assert!(body_object(b"").is_err());
        assert!(body_object(b"[1]").is_err());
        assert!(body_object(b"{").is_err());
        let m = body_object(br#"{"n": "12", "m": 1.5, "s": 3}"#).unwrap();
        assert_eq!(int_field(&m, "n", 0, 100).unwrap(), Some(12));
        assert!(int_field(&m, "m", 0, 100).is_err());
        assert!(int_field(&m, "n", 0, 5).is_err());
        assert_eq!(int_field(&m, "absent", 0, 5).unwrap(), None);
        assert!(str_field(&m, "s").is_err());
    }
}
