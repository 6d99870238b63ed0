//! The services `fjord start` runs beside the broker (the schema registry, the Connect worker), as the dashboard
//! reaches them: in-process, through each one's own REST router. A request from the dashboard runs the very
//! handlers a `curl` to :8081 or :8083 would (the same validation, the same forwarding to the registry's primary
//! or Connect's leader), without a socket, an HTTP client or a dependency on those crates.
//!
//! The binary starts its HTTP listener before the services (they are Kafka clients of the broker), so it hands
//! the dashboard a [`Services`] handle first and fills it in as each service comes up.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt as _;

/// Which service a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Registry,
    Connect,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Registry => "registry",
            Kind::Connect => "connect",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Registry => "the schema registry",
            Kind::Connect => "the Connect worker",
        }
    }

    /// Why the service is not there, and what to do about it.
    pub fn not_running(self) -> String {
        match self {
            Kind::Registry => "the schema registry is not running in this process: `fjord start` runs it on \
                 127.0.0.1:8081 unless started with `--registry-listener none` (a standalone `fjord broker` runs none; set dashboard.schema.registry.url=http://HOST:PORT to use one elsewhere)"
                .into(),
            Kind::Connect => "the Connect worker is not running in this process: `fjord start` runs it on \
                 127.0.0.1:8083 unless started with `--connect-listener none` (or with `--brokers N`, or as `fjord broker`)"
                .into(),
        }
    }
}

#[derive(Clone)]
struct Running {
    addr: SocketAddr,
    router: axum::Router,
}

#[derive(Default)]
struct Inner {
    registry: Option<Running>,
    connect: Option<Running>,
    compiler: Option<SchemaCompiler>,
}

/// Compiles a registered schema (its `schemaType`, its text, and (reference name, text) of every schema its
/// references reach, dependencies first) into a decoder of record bodies. The binary gives fjord-registry's
/// (`fjord_registry::wire::Decoder`), so the dashboard decodes as `fjord consume --value-format` does without
/// depending on the registry's crates.
pub type SchemaCompiler =
    Arc<dyn Fn(&str, &str, &[(String, String)]) -> Result<SchemaDecoder, String> + Send + Sync>;
/// A compiled schema: a record's body (after the magic byte and schema id) to JSON text, or why it cannot be.
pub type SchemaDecoder = Arc<dyn Fn(&[u8]) -> Result<String, String> + Send + Sync>;

/// The registry and Connect worker this process runs, as they come up (none until the binary says so), and the
/// permits of the calls into them.
#[derive(Clone)]
pub struct Services(Arc<RwLock<Inner>>, Arc<tokio::sync::Semaphore>);

impl Default for Services {
    fn default() -> Services {
        Services(
            Arc::default(),
            Arc::new(tokio::sync::Semaphore::new(MAX_CALLS)),
        )
    }
}

/// Calls into the services running at once, from every dashboard request together: a page of subjects makes
/// two calls per subject, so without a bound a few browsers (or a script) could keep the registry busy with
/// hundreds; the others wait, at most [`SERVICE_TIMEOUT`] in all.
pub const MAX_CALLS: usize = 8;

/// How long one request to a service may take before the dashboard answers 504.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from a service.
const MAX_ANSWER: usize = 16 << 20;

/// A service's answer: its status and JSON body (`null` when it sent none).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

/// Why a call did not get an answer (or got a failure): status and message for the dashboard's error.
pub struct Failed {
    pub status: StatusCode,
    pub message: String,
    pub not_running: Option<Kind>,
}

impl Services {
    /// The schema registry serving on `addr`, reached through `router` (its REST API's router).
    pub fn set_registry(&self, addr: SocketAddr, router: axum::Router) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).registry = Some(Running { addr, router });
    }

    /// How the message browser compiles the registry's schemas (see [`SchemaCompiler`]).
    pub fn set_schema_compiler(&self, compiler: SchemaCompiler) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).compiler = Some(compiler);
    }

    pub(crate) fn schema_compiler(&self) -> Option<SchemaCompiler> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .compiler
            .clone()
    }

    /// The Connect worker's REST API on `addr`, reached through `router`.
    pub fn set_connect(&self, addr: SocketAddr, router: axum::Router) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).connect = Some(Running { addr, router });
    }

    fn get(&self, kind: Kind) -> Option<Running> {
        let inner = self.0.read().unwrap_or_else(|e| e.into_inner());
        match kind {
            Kind::Registry => inner.registry.clone(),
            Kind::Connect => inner.connect.clone(),
        }
    }

    /// The address a service listens on, if it runs.
    pub fn addr(&self, kind: Kind) -> Option<SocketAddr> {
        self.get(kind).map(|r| r.addr)
    }

    /// One request to a service's REST API: `path` with its query string (already percent-encoded), `body` sent as
    /// JSON. A 4xx answer keeps its status and the service's message; a 5xx one becomes 502 (the service failed,
    /// not the request), no answer within [`SERVICE_TIMEOUT`] 504.
    pub async fn call(
        &self,
        kind: Kind,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Failed> {
        let Some(svc) = self.get(kind) else {
            return Err(Failed {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: kind.not_running(),
                not_running: Some(kind),
            });
        };
        let failed = |status, message| Failed {
            status,
            message,
            not_running: None,
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, svc.addr.to_string())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .map_err(|e| {
                failed(
                    StatusCode::BAD_REQUEST,
                    format!("cannot build a request to {path}: {e}"),
                )
            })?;
        let permits = self.1.clone();
        let call = async {
            let _permit = permits.acquire_owned().await.map_err(|_| {
                failed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{} is shutting down", kind.title()),
                )
            })?;
            let resp = svc.router.oneshot(req).await.map_err(|e| {
                failed(
                    StatusCode::BAD_GATEWAY,
                    format!("{} failed: {e}", kind.title()),
                )
            })?;
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
                .await
                .map_err(|e| {
                    failed(
                        StatusCode::BAD_GATEWAY,
                        format!("{}'s answer could not be read: {e}", kind.title()),
                    )
                })?;
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            Ok::<_, Failed>(Answer { status, body })
        };
        let Answer { status, body } =
            tokio::time::timeout(SERVICE_TIMEOUT, call)
                .await
                .map_err(|_| {
                    failed(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "{} did not answer {method} {path} within {} s",
                            kind.title(),
                            SERVICE_TIMEOUT.as_secs()
                        ),
                    )
                })??;
        if status.is_success() {
            return Ok(Answer { status, body });
        }
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        if status.is_server_error() {
            return Err(failed(
                StatusCode::BAD_GATEWAY,
                format!("{} failed ({status}): {message}", kind.title()),
            ));
        }
        Err(failed(status, message))
    }
}

/// Percent-encodes one path segment or query value (everything but RFC 3986's unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forty calls at once into a slow service: at most MAX_CALLS run together, and every one is answered.
    #[test]
    fn calls_into_a_service_are_bounded() {
        use axum::routing::get;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (n, m) = (now.clone(), most.clone());
        let router = axum::Router::new().route(
            "/slow",
            get(move || {
                let (n, m) = (n.clone(), m.clone());
                async move {
                    let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(running, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    "{}"
                }
            }),
        );
        let s = Services::default();
        s.set_registry("127.0.0.1:1".parse().unwrap(), router);
        let answered = rt.block_on(async {
            let calls: Vec<_> = (0..40)
                .map(|_| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        s.call(Kind::Registry, Method::GET, "/slow", None)
                            .await
                            .is_ok()
                    })
                })
                .collect();
            let mut ok = 0;
            for c in calls {
                ok += usize::from(c.await.unwrap());
            }
            ok
        });
        assert_eq!(answered, 40);
        let most = most.load(Ordering::SeqCst);
        assert!((1..=MAX_CALLS).contains(&most), "{most} calls ran at once");
    }

    #[test]
    fn segments_are_encoded_whole() {
        assert_eq!(enc("a b/c?d%e"), "a%20b%2Fc%3Fd%25e");
        assert_eq!(enc("ok-1.x_~"), "ok-1.x_~");
        assert_eq!(enc("é"), "%C3%A9");
    }

    #[test]
    fn a_service_not_running_is_503_and_says_so() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let s = Services::default();
        let e = rt
            .block_on(s.call(Kind::Registry, Method::GET, "/subjects", None))
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.not_running, Some(Kind::Registry));
        assert!(
            e.message.contains("--registry-listener none"),
            "{}",
            e.message
        );
    }

    #[test]
    fn answers_pass_through_and_server_errors_become_502() {
        use axum::routing::get;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let router = axum::Router::new()
            .route("/ok", get(|| async { r#"{"a": 1}"# }))
            .route(
                "/missing",
                get(|| async {
                    (
                        StatusCode::NOT_FOUND,
                        r#"{"error_code": 40401, "message": "Subject 'x' not found."}"#,
                    )
                }),
            )
            .route(
                "/broken",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, r#"{"message": "boom"}"#) }),
            );
        let s = Services::default();
        s.set_connect("127.0.0.1:8083".parse().unwrap(), router);
        rt.block_on(async {
            let a = s
                .call(Kind::Connect, Method::GET, "/ok", None)
                .await
                .ok()
                .unwrap();
            assert_eq!(a.body["a"], 1);
            let e = s
                .call(Kind::Connect, Method::GET, "/missing", None)
                .await
                .err()
                .unwrap();
            assert_eq!(e.status, StatusCode::NOT_FOUND);
            assert_eq!(e.message, "Subject 'x' not found.");
            let e = s
                .call(Kind::Connect, Method::GET, "/broken", None)
                .await
                .err()
                .unwrap();
            assert_eq!(e.status, StatusCode::BAD_GATEWAY);
            assert!(e.message.contains("boom"), "{}", e.message);
        });
    }
}
