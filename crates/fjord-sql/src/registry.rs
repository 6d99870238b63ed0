//! The schema registry client the AVRO, PROTOBUF and JSON_SR formats use: a Confluent-compatible REST API (Fjord's own,
//! which `fjord start` runs on :8081, or Confluent's), over hyper's HTTP/1.1 client. Schemas are cached by id;
//! subjects follow Confluent's TopicNameStrategy (`<topic>-value`, `<topic>-key`); records carry Confluent's
//! wire format (magic byte 0, the schema id as 4 bytes big-endian, the body), split and read with
//! `fjord_registry::wire` as the console tools, the dashboard and the Connect converters do: an Avro schema is
//! compiled with its shape checked (not recursive, at most 64 deep, at most 10,000 types once named types are
//! expanded, no array or map of values that take no bytes) before any record is read with it, so a schema
//! registered by anyone cannot make a few bytes of a record hang or exhaust a query. A Protobuf schema is compiled
//! with the registry's own compile (`protox`; imports served from its references and google/protobuf's
//! well-known types) and its records are read with `fjord_registry::wire::read_protobuf`.
//!
//! The calls block (with a deadline): they are made from the query threads and from `spawn_blocking`, on the
//! engine's runtime through its handle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fjord_registry::proto_json::ProtoSchema;
use fjord_registry::wire::AvroDecoder;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde_json::{json, Value as J};

/// How long one registry request may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The largest registry answer read.
const MAX_ANSWER: usize = 16 << 20;

/// How long a schema id the registry does not have (a 404) is remembered as missing: its records are refused
/// without asking again until then (Connect's `missing.id.cache.ttl.sec`, fixed here). One second: long enough
/// that a record's own reachability check and its decode ask once, not twice (a flood of records with random ids
/// costs one request each), and short so that an id registered just after its record is read (another registry
/// node lagging) is not refused to the records after it for long: Confluent's client (the default of Connect's
/// setting, 0) asks again at every record, and a query skips the records it cannot decode.
const MISSING_TTL: Duration = Duration::from_secs(1);

/// At most this many missing ids are remembered (a topic of records with random ids must not grow the cache
/// without bound): when full, the expired are dropped, and if none had expired, all.
const MAX_MISSING_IDS: usize = 10_000;

/// A schema as registered: its type and its parsed form (an Avro schema compiled for reading, its shape checked).
pub enum Registered {
    /// Boxed: the decoder is large.
    Avro(Box<AvroDecoder>),
    /// With the schemas its references reach.
    Json(Box<crate::json_schema::JsonSchema>),
    /// Compiled with the index of its messages' fields by SQL name.
    Protobuf(Box<crate::protobuf::Compiled>),
}

impl Registered {
    pub fn type_name(&self) -> &'static str {
        match self {
            Registered::Avro(_) => "AVRO",
            Registered::Json(_) => "JSON",
            Registered::Protobuf(_) => "PROTOBUF",
        }
    }
}

pub struct Registry {
    url: String,
    host: String,
    port: u16,
    prefix: String,
    handle: tokio::runtime::Handle,
    /// Schemas by id, and ids whose schema SQL refuses (with why): ids are immutable, so a refusal is final
    /// and every record written with it is refused without asking the registry again.
    by_id: Mutex<HashMap<u32, Result<Arc<Registered>, String>>>,
    /// Ids the registry answered 404 for, each until when it is remembered and why its records are refused.
    missing: Mutex<HashMap<u32, (Instant, String)>>,
    missing_ttl: Duration,
}

static GLOBAL: RwLock<Option<Arc<Registry>>> = RwLock::new(None);

/// A failed registry call: `unavailable` when the registry could not answer (unreachable, timed out, a 5xx),
/// as opposed to an answer that refuses or a schema that cannot be used.
/// `missing` when the registry answered that a schema (or a schema it references) is not there (a 404): it may
/// be registered later, so that is not remembered for good.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub unavailable: bool,
    pub missing: bool,
}

impl Failure {
    fn unavailable(message: String) -> Failure {
        Failure {
            message,
            unavailable: true,
            missing: false,
        }
    }

    fn missing(message: String) -> Failure {
        Failure {
            message,
            unavailable: false,
            missing: true,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            unavailable: false,
            missing: false,
        }
    }
}

impl From<Failure> for String {
    fn from(f: Failure) -> String {
        f.message
    }
}

/// The registry the engine was started with (the record formats find it here).
pub fn global() -> Option<Arc<Registry>> {
    GLOBAL.read().ok().and_then(|g| g.clone())
}

/// Sets the process's registry (at engine start).
pub fn install(r: Option<Arc<Registry>>) {
    if let Ok(mut g) = GLOBAL.write() {
        *g = r;
    }
}

/// The registry, or an error saying how to give one.
pub fn required(what: &str) -> Result<Arc<Registry>, String> {
    global().ok_or_else(|| {
        format!("{what} needs a schema registry: `fjord start` uses the one it runs (--registry-listener), `fjord sql-server` takes --registry-url http://HOST:PORT")
    })
}

/// Splits Confluent's wire format (`fjord_registry::wire::split`): (schema id, body), or why the bytes are not in
/// it.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    fjord_registry::wire::split(bytes).ok_or_else(|| match bytes {
        [m, ..] if bytes.len() >= 5 => format!(
            "not in the schema registry's wire format (magic byte {m}, expected 0): was it written with a registry serializer?"
        ),
        _ => format!(
            "{} bytes are too short for the schema registry's wire format (magic byte, 4-byte schema id)",
            bytes.len()
        ),
    })
}

/// Confluent's wire format header for schema `id`.
pub fn wire_header(id: u32, out: &mut Vec<u8>) {
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
}

fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Registry {
    /// `url` is `http://HOST:PORT[/PREFIX]`; `handle` the runtime the requests run on.
    pub fn new(url: &str, handle: tokio::runtime::Handle) -> Result<Registry, String> {
        let bad = |why: &str| format!("registry URL {url}: {why} (expected http://HOST:PORT)");
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
            None => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Registry {
            url: url.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
            handle,
            by_id: Mutex::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            missing_ttl: MISSING_TTL,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request; `Ok(None)` for 404 (no such subject or version). Blocks (not on an async worker).
    fn request(&self, method: &str, path: &str, body: Option<&J>) -> Result<Option<J>, Failure> {
        let fut = self.send(method, path, body);
        match self
            .handle
            .block_on(async { tokio::time::timeout(TIMEOUT, fut).await })
        {
            Ok(r) => r,
            Err(_) => Err(Failure::unavailable(format!(
                "the schema registry at {} did not answer {method} {path} within {} s",
                self.url,
                TIMEOUT.as_secs()
            ))),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<&J>) -> Result<Option<J>, Failure> {
        let unreachable = |e: String| {
            Failure::unavailable(format!(
                "cannot reach the schema registry at {} ({e}): is it running?",
                self.url
            ))
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(
                hyper::header::ACCEPT,
                "application/vnd.schemaregistry.v1+json, application/json",
            );
        let payload = match body {
            Some(b) => {
                req = req.header(
                    hyper::header::CONTENT_TYPE,
                    "application/vnd.schemaregistry.v1+json",
                );
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| format!("cannot build a registry request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                Failure::unavailable(format!("cannot read the schema registry's answer: {e}"))
            })?
            .to_bytes();
        let v: Option<J> = serde_json::from_slice(&bytes).ok();
        match status {
            200..=299 => v.map(Some).ok_or_else(|| {
                Failure::from(format!(
                    "the schema registry's answer to {method} {path} is not JSON: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))
            }),
            404 => Ok(None),
            _ => Err(Failure {
                // A server error (a registry restarting, its store unavailable) passes; a 4xx is an answer.
                unavailable: status >= 500,
                missing: false,
                message: format!(
                    "the schema registry refused {method} {path}: {} (HTTP {status})",
                    v.as_ref()
                        .and_then(|v| v.get("message"))
                        .and_then(J::as_str)
                        .map_or_else(
                            || String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                            str::to_string
                        )
                ),
            }),
        }
    }

    /// `referenced`: (reference name, text) of every schema the references of `text` reach,
    /// dependencies first.
    pub(crate) fn parse(
        schema_type: &str,
        text: &str,
        referenced: &[(String, String)],
    ) -> Result<Registered, String> {
        match schema_type {
            "AVRO" => AvroDecoder::compile(text, referenced).map(|d| Registered::Avro(Box::new(d))),
            "JSON" => crate::json_schema::JsonSchema::parse(text, referenced)
                .map(|j| Registered::Json(Box::new(j))),
            "PROTOBUF" => ProtoSchema::compile(text, referenced)
                .map(|p| Registered::Protobuf(Box::new(crate::protobuf::Compiled::new(p))))
                .map_err(|e| format!("not a Protobuf schema: {e}")),
            other => Err(format!(
                "{other} schemas are not supported by SQL (AVRO, PROTOBUF and JSON are)"
            )),
        }
    }

    /// The schema with registry id `id` (cached: ids are immutable).
    pub fn by_id(&self, id: u32) -> Result<Arc<Registered>, String> {
        Ok(self.lookup_id(id)?)
    }

    /// Err only when the registry cannot say what schema `id` is (unreachable, timed out, a 5xx): a record
    /// written with it must then not be skipped as unreadable, or a registry restart would drop input.
    /// Caches the schema when it is there; an id the registry does not know is for `by_id` to report.
    pub fn reachable_for(&self, id: u32) -> Result<(), String> {
        match self.lookup_id(id) {
            Err(f) if f.unavailable => Err(f.message),
            _ => Ok(()),
        }
    }

    fn lookup_id(&self, id: u32) -> Result<Arc<Registered>, Failure> {
        if let Some(s) = self.by_id.lock().expect("schema cache").get(&id) {
            return Ok(s.clone()?);
        }
        {
            let mut missing = self.missing.lock().expect("missing ids");
            match missing.get(&id) {
                Some((until, why)) if Instant::now() < *until => return Err(why.clone().into()),
                Some(_) => {
                    missing.remove(&id);
                }
                None => {}
            }
        }
        let Some(v) = self.request("GET", &format!("/schemas/ids/{id}"), None)? else {
            let why = format!("the schema registry has no schema with id {id}");
            self.remember_missing(id, why.clone());
            return Err(why.into());
        };
        let text = v["schema"]
            .as_str()
            .ok_or_else(|| format!("the registry's schema {id} has no `schema`"))?;
        let schema_type = v["schemaType"].as_str().unwrap_or("AVRO");
        // An Avro schema's named types, a Protobuf schema's imports, a JSON Schema's `$ref`s may be defined in the
        // schemas it references (other types are refused by `parse`).
        let s = match schema_type {
            "AVRO" | "PROTOBUF" | "JSON" => self.references(&v["references"]),
            _ => Ok(Vec::new()),
        }
        .and_then(|referenced| Self::parse(schema_type, text, &referenced).map_err(Failure::from));
        let s = match s {
            Err(f) if f.unavailable => return Err(f),
            // A referenced schema the registry does not have (yet): remembered as a missing id is, for a while,
            // not kept as the id's final refusal.
            Err(f) if f.missing => {
                let why = format!("schema {id}: {}", f.message);
                self.remember_missing(id, why.clone());
                return Err(why.into());
            }
            s => s
                .map(Arc::new)
                .map_err(|f| format!("schema {id}: {}", f.message)),
        };
        self.by_id
            .lock()
            .expect("schema cache")
            .insert(id, s.clone());
        Ok(s?)
    }

    /// Remembers that the registry has no schema `id`, for `missing_ttl`.
    fn remember_missing(&self, id: u32, why: String) {
        let now = Instant::now();
        let mut missing = self.missing.lock().expect("missing ids");
        if missing.len() >= MAX_MISSING_IDS {
            missing.retain(|_, (until, _)| *until > now);
            if missing.len() >= MAX_MISSING_IDS {
                missing.clear();
            }
        }
        missing.insert(id, (now + self.missing_ttl, why));
    }

    /// The schemas `references` reach, dependencies first, each (reference name, text): the walk the CLI and
    /// Connect share ([`fjord_registry::wire::ReferenceWalk`]; `GET /subjects/<subject>/versions/<version>`).
    fn references(&self, references: &J) -> Result<Vec<(String, String)>, Failure> {
        let mut walk = fjord_registry::wire::ReferenceWalk::new(references);
        while let Some(f) = walk.next().map_err(|e| e.to_string())? {
            let v = self
                .request(
                    "GET",
                    &format!("/subjects/{}/versions/{}", segment(&f.subject), f.version),
                    None,
                )?
                .ok_or_else(|| {
                    Failure::missing(format!(
                        "the schema it references as {} ({} version {}) is not in the schema registry",
                        f.name, f.subject, f.version
                    ))
                })?;
            walk.fetched(&v);
        }
        Ok(walk.finish())
    }

    /// The latest schema registered under `subject` (`None`: no such subject).
    pub fn latest(&self, subject: &str) -> Result<Option<(u32, Arc<Registered>)>, String> {
        let Some(v) = self.request(
            "GET",
            &format!("/subjects/{}/versions/latest", segment(subject)),
            None,
        )?
        else {
            return Ok(None);
        };
        let id = v["id"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| format!("the registry's latest {subject} has no id"))?;
        Ok(Some((id, self.by_id(id)?)))
    }

    /// Registers `text` (of `schema_type`, AVRO, PROTOBUF or JSON; without references) under `subject`, or finds it registered: its id.
    pub fn register(&self, subject: &str, schema_type: &str, text: &str) -> Result<u32, String> {
        let mut body = json!({"schema": text});
        if schema_type != "AVRO" {
            body["schemaType"] = json!(schema_type);
        }
        let v = self
            .request(
                "POST",
                &format!("/subjects/{}/versions", segment(subject)),
                Some(&body),
            )?
            .ok_or_else(|| format!("the schema registry has no route to register {subject}"))?;
        let id = v["id"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| format!("the registry answered no id for {subject}: {v}"))?;
        let parsed = Arc::new(Self::parse(schema_type, text, &[])?);
        self.by_id
            .lock()
            .expect("schema cache")
            .insert(id, Ok(parsed));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_magic_zero_and_a_big_endian_id() {
        let mut b = Vec::new();
        wire_header(258, &mut b);
        b.push(7);
        assert_eq!(split_wire(&b).unwrap(), (258, &[7u8][..]));
        assert!(split_wire(b"{\"a\": 1}")
            .unwrap_err()
            .contains("magic byte"));
        assert!(split_wire(&[0, 1]).unwrap_err().contains("too short"));
    }

    /// A server on 127.0.0.1 that answers every request with `status` (and an empty JSON object).
    fn answering(status: &'static str) -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(4) {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                    )
                    .as_bytes(),
                );
            }
        });
        addr
    }

    #[test]
    fn only_a_registry_that_cannot_answer_makes_a_schema_unreachable() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let at = |addr: std::net::SocketAddr| {
            Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap()
        };
        // Nothing listens: unreachable (a record must not be skipped for it).
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = at(closed).reachable_for(7).unwrap_err();
        assert!(e.contains("cannot reach the schema registry"), "{e}");
        // A server error: the registry is there but cannot answer now.
        let e = at(answering("500 Internal Server Error"))
            .reachable_for(7)
            .unwrap_err();
        assert!(e.contains("HTTP 500"), "{e}");
        // An answer (no such id): reachable; decoding the record reports the unknown id.
        let r = at(answering("404 Not Found"));
        r.reachable_for(7).unwrap();
        match r.by_id(7) {
            Err(e) => assert!(e.contains("no schema with id 7"), "{e}"),
            Ok(_) => panic!("a 404 is no schema"),
        }
    }

    /// A schema id the registry does not have is asked for once per record, not twice (the reachability check
    /// and the decode), and then not again for `missing_ttl`; after it, once more. The remembered ids are
    /// bounded. Before, every such record asked twice: a topic of records with made-up ids made two blocking
    /// registry requests each.
    #[test]
    fn a_missing_schema_id_is_remembered_for_a_while() {
        use std::sync::atomic::Ordering::SeqCst;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (addr, served) = serving(Vec::new());
        let mut r = Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap();
        // Long enough that a stalled machine does not expire it; expiry is simulated by clearing `missing`.
        r.missing_ttl = Duration::from_secs(3600);
        for _ in 0..3 {
            // What a query does for each record: the reachability check, then the decode.
            r.reachable_for(7).unwrap();
            match r.by_id(7) {
                Err(e) => assert!(e.contains("no schema with id 7"), "{e}"),
                Ok(_) => panic!("a 404 is no schema"),
            }
        }
        assert_eq!(served.load(SeqCst), 1);
        // Expired: asked again.
        r.missing_ttl = Duration::ZERO;
        r.missing.lock().unwrap().clear();
        r.by_id(8).err().unwrap();
        r.by_id(8).err().unwrap();
        assert_eq!(served.load(SeqCst), 3);
        // Bounded: full of ids still remembered, it is emptied before one more is added.
        r.missing_ttl = Duration::from_secs(3600);
        let far = Instant::now() + Duration::from_secs(60);
        {
            let mut m = r.missing.lock().unwrap();
            for id in 0..MAX_MISSING_IDS as u32 {
                m.insert(1_000_000 + id, (far, String::new()));
            }
        }
        r.by_id(9).err().unwrap();
        assert_eq!(r.missing.lock().unwrap().len(), 1);
    }

    /// Schemas whose records would make a few bytes expand without bound: a chain of 40 records each using the
    /// next twice (2^40 values of a record of nulls, which take no bytes), and arrays of arrays of null or of an
    /// empty record (a 4-byte count claims a million values, per inner array).
    fn hostile_schemas() -> Vec<(String, &'static str)> {
        let mut chain =
            r#"{"type":"record","name":"R40","fields":[{"name":"n","type":"null"}]}"#.to_string();
        for i in (0..40).rev() {
            chain = format!(
                r#"{{"type":"record","name":"R{i}","fields":[{{"name":"a","type":{chain}}},{{"name":"b","type":"R{}"}}]}}"#,
                i + 1
            );
        }
        vec![
            (chain, "more than 10000 types"),
            (
                r#"{"type":"record","name":"V","fields":[{"name":"x","type":"int"},{"name":"junk","type":{"type":"array","items":{"type":"array","items":"null"}}}]}"#.to_string(),
                "take no bytes",
            ),
            (
                r#"{"type":"array","items":{"type":"array","items":{"type":"record","name":"E","fields":[]}}}"#.to_string(),
                "take no bytes",
            ),
        ]
    }

    /// A registry on 127.0.0.1 that answers a request for a path starting with one of `routes`' paths with its
    /// body (200), any other with 404; it counts the requests.
    fn serving(
        routes: Vec<(&'static str, String)>,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        serving_changing(Arc::new(Mutex::new(routes)))
    }

    /// [`serving`] with routes the test may add to while it serves.
    fn serving_changing(
        routes: Arc<Mutex<Vec<(&'static str, String)>>>,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(16) {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split(' ').nth(1).unwrap_or("");
                let (status, body) = match routes
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| path.starts_with(p))
                {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", "{}".to_string()),
                };
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        (addr, served)
    }

    /// A hostile schema is refused when it is compiled, with why, before any record is read with it (a record
    /// written with it was read: the chain's took 2^40 steps, the arrays' allocated gigabytes from a few bytes),
    /// quickly, and once: the refusal is kept for the id, not asked for again for every record.
    #[test]
    fn a_schema_that_would_expand_without_bound_is_refused_once_before_any_record_is_read() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        for (text, why) in hostile_schemas() {
            let started = std::time::Instant::now();
            let (addr, served) = serving(vec![("/", json!({ "schema": text }).to_string())]);
            let r = Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap();
            for _ in 0..2 {
                match r.by_id(7) {
                    Err(e) => assert!(e.contains("schema 7") && e.contains(why), "{why}: {e}"),
                    Ok(_) => panic!("{why}: the schema was accepted"),
                }
            }
            assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        // A benign schema is read through the same decoder.
        let (addr, _) = serving(vec![(
            "/",
            json!({"schema": r#"{"type":"record","name":"V","fields":[{"name":"x","type":"int"}]}"#})
                .to_string(),
        )]);
        let r = Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap();
        match &*r.by_id(7).unwrap() {
            Registered::Avro(d) => assert_eq!(
                d.read(&[0x54]).unwrap(),
                apache_avro::types::Value::Record(vec![(
                    "x".into(),
                    apache_avro::types::Value::Int(42)
                )])
            ),
            _ => panic!("not Avro"),
        }
    }

    /// An Avro schema whose named type is defined in another subject (a schema reference) is read with the
    /// referenced schema fetched, and its columns map the named type wherever it is used (twice here); a reference
    /// the registry does not have refuses the schema, saying which. Before, the references were not fetched (the
    /// schema did not parse: `Money` undefined) and a named type used a second time had no SQL type.
    #[test]
    fn an_avro_schema_with_references_is_read_and_its_named_types_map_to_columns() {
        use crate::types::SqlType;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let order = r#"{"type":"record","name":"Order","namespace":"com.example","fields":[{"name":"item","type":"string"},{"name":"price","type":"Money"},{"name":"tax","type":["null","Money"]}]}"#;
        let money = r#"{"type":"record","name":"Money","namespace":"com.example","fields":[{"name":"units","type":"long"},{"name":"currency","type":"string"}]}"#;
        let refs = json!([{"name": "com.example.Money", "subject": "money", "version": 3}]);
        let (addr, _) = serving(vec![
            (
                "/schemas/ids/7",
                json!({"schema": order, "references": refs}).to_string(),
            ),
            (
                "/subjects/money/versions/3",
                json!({ "schema": money }).to_string(),
            ),
        ]);
        let r = Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap();
        let schema = r.by_id(7).unwrap();
        let Registered::Avro(d) = &*schema else {
            panic!("not Avro")
        };
        let money_ty = SqlType::Struct(vec![
            ("UNITS".into(), SqlType::Bigint),
            ("CURRENCY".into(), SqlType::String),
        ]);
        assert_eq!(
            crate::avro::columns(d.schema(), d.names(), "ROWVAL").unwrap(),
            vec![
                ("ITEM".to_string(), SqlType::String),
                ("PRICE".to_string(), money_ty.clone()),
                ("TAX".to_string(), money_ty),
            ]
        );
        // "ab", price {5, "EU"}, tax: union branch 0 (null).
        let datum = d.read(&[4, b'a', b'b', 10, 4, b'E', b'U', 0]).unwrap();
        let apache_avro::types::Value::Record(fields) = datum else {
            panic!("not a record")
        };
        assert_eq!(fields[0].1, apache_avro::types::Value::String("ab".into()));

        let (addr, _) = serving(vec![(
            "/schemas/ids/7",
            json!({"schema": order, "references": refs}).to_string(),
        )]);
        let r = Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap();
        match r.by_id(7) {
            Err(e) => assert!(
                e.contains("com.example.Money (money version 3) is not in the schema registry"),
                "{e}"
            ),
            Ok(_) => panic!("a schema with a missing reference was accepted"),
        }
    }

    /// A JSON Schema whose `$ref` names a reference is read with the referenced schema fetched, its columns
    /// through it. A reference the registry does not have refuses the schema only for the missing-id TTL (asked
    /// once in it), not for good: registered later, it is found once the TTL is over. Before, the refusal was
    /// kept in the id's cache for the life of the process (checked: the last `by_id` failed).
    #[test]
    fn a_missing_reference_is_remembered_for_a_while_not_for_good() {
        use crate::types::SqlType;
        use std::sync::atomic::Ordering::SeqCst;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let order = r##"{"type":"object","properties":{"id":{"type":"string"},"ship_to":{"oneOf":[{"type":"null"},{"$ref":"address.json#/definitions/Address"}]}}}"##;
        let address = r#"{"definitions":{"Address":{"type":"object","properties":{"city":{"type":"string"}}}}}"#;
        let refs = json!([{"name": "address.json", "subject": "address", "version": 1}]);
        let routes = Arc::new(Mutex::new(vec![(
            "/schemas/ids/7",
            json!({"schema": order, "schemaType": "JSON", "references": refs}).to_string(),
        )]));
        let (addr, served) = serving_changing(routes.clone());
        let mut r = Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap();
        // Long enough that a stalled machine does not expire it; expiry is simulated by clearing `missing`.
        r.missing_ttl = Duration::from_secs(3600);
        for _ in 0..2 {
            match r.by_id(7) {
                Err(e) => assert!(
                    e.contains("schema 7: the schema it references as address.json (address version 1) is not in the schema registry"),
                    "{e}"
                ),
                Ok(_) => panic!("a schema with a missing reference was accepted"),
            }
        }
        // The schema and its reference, asked once.
        assert_eq!(served.load(SeqCst), 2);
        routes.lock().unwrap().push((
            "/subjects/address/versions/1",
            json!({"schema": address, "schemaType": "JSON"}).to_string(),
        ));
        // Still remembered as missing.
        assert!(r.by_id(7).is_err());
        assert_eq!(served.load(SeqCst), 2);
        // Expired: found.
        r.missing.lock().unwrap().clear();
        let schema = r.by_id(7).unwrap();
        let Registered::Json(j) = &*schema else {
            panic!("not JSON")
        };
        assert_eq!(
            j.sql_type().unwrap(),
            SqlType::Struct(vec![
                ("ID".into(), SqlType::String),
                (
                    "SHIP_TO".into(),
                    SqlType::Struct(vec![("CITY".into(), SqlType::String)])
                ),
            ])
        );
        assert_eq!(served.load(SeqCst), 4);
        // Cached now.
        r.by_id(7).unwrap();
        assert_eq!(served.load(SeqCst), 4);
    }

    /// A Protobuf schema whose import is another subject is compiled with the referenced file fetched; its
    /// records (the second message, so the index array is not the one-byte shortcut) decode to rows by column
    /// name, and records that are not Protobuf in the wire format are errors that say why (what a query skips
    /// and counts, or stops at), never a panic. A sink's value is written in the same framing and reads back.
    /// Before, a PROTOBUF schema was refused ("not supported by SQL yet") and so was every such stream.
    #[test]
    fn protobuf_records_decode_to_rows_and_bad_ones_say_why() {
        use crate::catalog::{Column, Format, SourceDef};
        use crate::parser::SourceKind;
        use crate::types::{SqlType, Value};
        use fjord_registry::proto_json;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let money = "syntax = \"proto3\";\npackage shop;\nmessage Money { int64 units = 1; string currency = 2; }\n";
        let order = "syntax = \"proto3\";\npackage shop;\nimport \"money.proto\";\nmessage Header { string source = 1; }\nmessage Order { string id = 1; shop.Money price = 2; }\n";
        let refs = json!([{"name": "money.proto", "subject": "money", "version": 1}]);
        let (addr, _) = serving(vec![
            (
                "/schemas/ids/7",
                json!({"schema": order, "schemaType": "PROTOBUF", "references": refs}).to_string(),
            ),
            (
                "/subjects/money/versions/1",
                json!({"schema": money, "schemaType": "PROTOBUF"}).to_string(),
            ),
            (
                "/schemas/ids/8",
                json!({ "schema": r#""string""# }).to_string(),
            ),
        ]);
        let r = Arc::new(Registry::new(&format!("http://{addr}"), rt.handle().clone()).unwrap());
        install(Some(r.clone()));
        let schema = r.by_id(7).unwrap();
        let Registered::Protobuf(p) = &*schema else {
            panic!("not Protobuf")
        };
        let (m, path) = p.message(Some("shop.Order")).unwrap();
        assert_eq!(path, vec![1]);
        let body = proto_json::from_json(&m, &json!({"id": "o-1", "price": {"units": 5}})).unwrap();
        let mut record = Vec::new();
        wire_header(7, &mut record);
        proto_json::write_indexes(&path, &mut record);
        record.extend_from_slice(&body);

        let money_ty = SqlType::Struct(vec![
            ("UNITS".into(), SqlType::Bigint),
            ("CURRENCY".into(), SqlType::String),
        ]);
        let col = |name: &str, ty: SqlType| Column {
            name: name.into(),
            ty,
            key: false,
        };
        let def = SourceDef {
            name: "ORDERS".into(),
            kind: SourceKind::Stream,
            columns: vec![
                col("ID", SqlType::String),
                col("PRICE", money_ty),
                col("MISSING", SqlType::Int),
            ],
            topic: "orders".into(),
            key_format: Format::Kafka,
            value_format: Format::Protobuf,
            timestamp: None,
            statement: String::new(),
            query: None,
        };
        let row = crate::format::decode(&def, None, Some(&record), (1, 0, 2))
            .unwrap()
            .unwrap();
        assert_eq!(
            row[3..],
            [
                Value::String("o-1".into()),
                Value::Struct(vec![
                    ("UNITS".into(), Value::Bigint(5)),
                    ("CURRENCY".into(), Value::String(String::new())),
                ]),
                Value::Null,
            ]
        );
        crate::format::registry_reachable(&def, None, Some(&record)).unwrap();

        let bad = |bytes: Vec<u8>, why: &str| {
            let e = crate::format::decode(&def, None, Some(&bytes), (1, 0, 2)).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        };
        bad(br#"{"id": "x"}"#.to_vec(), "magic byte");
        bad(vec![0, 0, 0], "too short");
        bad(record[..5].to_vec(), "message indexes end early");
        let mut unknown = Vec::new();
        wire_header(9, &mut unknown);
        unknown.push(0);
        bad(unknown, "no schema with id 9");
        let mut avro = Vec::new();
        wire_header(8, &mut avro);
        avro.extend_from_slice(&[2, b'x']);
        bad(avro, "is AVRO, not PROTOBUF");
        let mut far = record[..5].to_vec();
        proto_json::write_indexes(&[5], &mut far);
        bad(far, "name no message");
        let mut cut = record.clone();
        cut.pop();
        bad(cut, "does not decode as shop.Order");

        // A sink's value in the same framing: ksqlDB's schema, message indexes [0] as the byte 0.
        let text = crate::protobuf::schema_text(
            [("ID", &SqlType::String), ("N", &SqlType::Int)].into_iter(),
        )
        .unwrap();
        let own = Registry::parse("PROTOBUF", &text, &[]).unwrap();
        let Registered::Protobuf(own) = own else {
            panic!("not Protobuf")
        };
        let (m, path) = own.message(None).unwrap();
        assert_eq!((m.name(), &path), ("ConnectDefault1", &vec![0]));
        let mut out = Vec::new();
        proto_json::write_indexes(&path, &mut out);
        assert_eq!(out, [0]);
        install(None);
    }
}
