//! The message browser's registry decoding (`GET /api/topics/{name}/messages?decode=registry`): a key or value
//! in Confluent's wire format (magic byte 0, the schema id as 4 big-endian bytes, the body) is decoded to JSON
//! with its schema from the registry this process runs, as `fjord consume --value-format` prints it (Avro's JSON
//! encoding, the JSON itself, the proto3 JSON mapping).
//!
//! Schemas are fetched in-process through the registry's REST router (`GET /schemas/ids/{id}`, then each
//! reference's `GET /subjects/{s}/versions/{v}`), compiled by the binary's [`SchemaCompiler`] and kept by id
//! (at most [`MAX_CACHED`]; a schema id never changes its schema). A failure is shown on the record, with its
//! reason, never as an error of the whole answer: the raw bytes stay in the answer (base64), so the page still
//! shows them as hex. A failure that may pass (the registry not running or not answering, an id it does not
//! have yet) is remembered only for the request, so a page of 100 records asks once per id.
//!
//! [`SchemaCompiler`]: crate::services::SchemaCompiler

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::services::{enc, Kind, SchemaDecoder, Services};

/// Schemas kept by id; past this the cache starts over.
pub const MAX_CACHED: usize = 1000;
/// Largest key or value decoded (a larger one is shown raw, with the reason).
pub const MAX_DECODE_INPUT: usize = 1 << 20;
/// Largest decoded JSON shown for one field.
pub const MAX_DECODED: usize = 256 << 10;
/// Most schemas one record's references may reach.
const MAX_REFERENCES: usize = 64;
/// How long one request may spend asking the registry for schemas, in all.
const FETCH_BUDGET: Duration = Duration::from_secs(10);

/// A compiled schema, or why the schema cannot be used (both for good).
#[derive(Clone)]
enum Compiled {
    Ok(&'static str, SchemaDecoder),
    Unusable(String),
}

/// The schemas by id, shared by every request.
#[derive(Default)]
pub struct SchemaCache(Mutex<HashMap<u32, Compiled>>);

/// One request's decoding: its runtime (the registry is called from the blocking read thread) and what failed
/// during it.
pub(crate) struct Decoding<'a> {
    services: &'a Services,
    cache: &'a SchemaCache,
    rt: tokio::runtime::Handle,
    failed: HashMap<u32, String>,
    deadline: Instant,
}

impl<'a> Decoding<'a> {
    /// For a request running on a blocking thread of the runtime.
    pub(crate) fn new(services: &'a Services, cache: &'a SchemaCache) -> Option<Decoding<'a>> {
        Some(Decoding {
            services,
            cache,
            rt: tokio::runtime::Handle::try_current().ok()?,
            failed: HashMap::new(),
            deadline: Instant::now() + FETCH_BUDGET,
        })
    }

    /// One field decoded: `{schema_id, schema_type, value, json}`, or `{schema_id?, error}` saying why not.
    /// `json` is the decoded JSON as the decoder wrote it, its fields in the schema's order (`value`'s objects come
    /// out with their keys sorted); the page shows that one. Both are taken from `budget` (the answer's bytes).
    pub(crate) fn field(&mut self, bytes: &[u8], budget: &mut usize) -> Value {
        let Some((id, body)) = split(bytes) else {
            return json!({"error": "not in the schema registry's wire format (it does not start with magic byte 0 and a 4-byte schema id); shown as it is"});
        };
        if bytes.len() > MAX_DECODE_INPUT {
            return json!({"schema_id": id, "error": format!(
                "{} bytes, more than the {} KiB the browser decodes; view it as hex", bytes.len(), MAX_DECODE_INPUT >> 10)});
        }
        let (schema_type, decoder) = match self.schema(id) {
            Ok(Compiled::Ok(t, d)) => (t, d),
            Ok(Compiled::Unusable(why)) | Err(why) => return json!({"schema_id": id, "error": why}),
        };
        let text = match decoder(body) {
            Ok(t) => t,
            Err(e) => return json!({"schema_id": id, "schema_type": schema_type, "error": e}),
        };
        // The text goes out twice: parsed (`value`) and as written (`json`, its fields in the schema's order).
        if text.len() > MAX_DECODED || 2 * text.len() > *budget {
            return json!({"schema_id": id, "schema_type": schema_type, "error": format!(
                "decoded, it is {} bytes of JSON, more than this answer still holds ({} KiB per field, 4 MiB in all); view it as hex or load fewer records",
                text.len(), MAX_DECODED >> 10)});
        }
        *budget -= 2 * text.len();
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => {
                json!({"schema_id": id, "schema_type": schema_type, "value": value, "json": text})
            }
            Err(e) => {
                json!({"schema_id": id, "schema_type": schema_type, "error": format!("the decoder wrote no JSON: {e}")})
            }
        }
    }

    /// Schema `id`, compiled: from the cache, else fetched and compiled. `Err`: a failure that may pass.
    fn schema(&mut self, id: u32) -> Result<Compiled, String> {
        if let Some(c) = lock(self.cache).get(&id) {
            return Ok(c.clone());
        }
        if let Some(why) = self.failed.get(&id) {
            return Err(why.clone());
        }
        let fetched = self.fetch(id);
        let compiled = match fetched {
            Ok(Some((schema_type, text, referenced))) => {
                match self.services.schema_compiler() {
                    None => Err("this build of Fjord decodes no registry formats (built without the `registry` feature)".to_string()),
                    Some(compile) => Ok(match compile(&schema_type, &text, &referenced) {
                        Ok(d) => Compiled::Ok(type_name(&schema_type), d),
                        Err(e) => Compiled::Unusable(format!("schema id {id} cannot be used: {e}")),
                    }),
                }
            }
            Ok(None) => Err(format!(
                "schema id {id} is not in the schema registry (was the record written against another registry?)"
            )),
            Err(e) => Err(e),
        };
        match compiled {
            Ok(c) => {
                let mut cache = lock(self.cache);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(id, c.clone());
                Ok(c)
            }
            Err(why) => {
                self.failed.insert(id, why.clone());
                Err(why)
            }
        }
    }

    /// One GET to the registry: its JSON answer, `None` for a 404, `Err` for anything else.
    fn get(&self, path: &str) -> Result<Option<Value>, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the schema registry took over {} s to answer this page's schema requests; reload to try again",
                FETCH_BUDGET.as_secs()
            ));
        }
        let call = self.services.call(Kind::Registry, Method::GET, path, None);
        match self.rt.block_on(tokio::time::timeout(left, call)) {
            Err(_) => Err(format!(
                "the schema registry did not answer GET {path} in time; reload to try again"
            )),
            Ok(Ok(a)) => Ok(Some(a.body)),
            Ok(Err(f)) if f.status == StatusCode::NOT_FOUND => Ok(None),
            Ok(Err(f)) if f.not_running.is_some() => Err(f.message),
            Ok(Err(f)) => Err(format!(
                "the schema registry refused GET {path}: {}",
                f.message
            )),
        }
    }

    /// Schema `id`'s type, text and referenced schemas; `None`: the registry does not have it.
    #[allow(clippy::type_complexity)]
    fn fetch(&self, id: u32) -> Result<Option<(String, String, Vec<(String, String)>)>, String> {
        let Some(v) = self.get(&format!("/schemas/ids/{id}"))? else {
            return Ok(None);
        };
        let text = v["schema"]
            .as_str()
            .ok_or_else(|| format!("the registry's answer for schema id {id} has no schema"))?
            .to_string();
        let schema_type = v["schemaType"].as_str().unwrap_or("AVRO").to_string();
        let mut referenced = Vec::new();
        self.references(&v["references"], &mut referenced, &mut HashMap::new())?;
        Ok(Some((schema_type, text, referenced)))
    }

    /// The schemas `references` reach, dependencies first, each (reference name, text); at most
    /// [`MAX_REFERENCES`] fetched, each subject version once. (The same walk as `fjord_registry::wire::
    /// ReferenceWalk`, which the CLI, SQL and Connect share: the dashboard builds without the registry crate.)
    fn references(
        &self,
        references: &Value,
        out: &mut Vec<(String, String)>,
        walked: &mut HashMap<(String, i64), String>,
    ) -> Result<(), String> {
        let Some(refs) = references.as_array() else {
            return Ok(());
        };
        for r in refs {
            let (Some(subject), Some(version)) = (r["subject"].as_str(), r["version"].as_i64())
            else {
                return Err(format!("a reference without subject and version: {r}"));
            };
            let name = r["name"].as_str().unwrap_or(subject);
            let key = (subject.to_string(), version);
            if let Some(text) = walked.get(&key) {
                if !text.is_empty() && !out.iter().any(|(n, _)| n == name) {
                    out.push((name.to_string(), text.clone()));
                }
                continue;
            }
            if walked.len() >= MAX_REFERENCES {
                return Err(format!("more than {MAX_REFERENCES} referenced schemas"));
            }
            // Marked before its references are walked, so that a cycle ends here.
            walked.insert(key.clone(), String::new());
            let v = self
                .get(&format!("/subjects/{}/versions/{version}", enc(subject)))?
                .ok_or_else(|| {
                    format!("the referenced schema {subject} version {version} does not exist")
                })?;
            self.references(&v["references"], out, walked)?;
            if let Some(text) = v["schema"].as_str() {
                walked.insert(key, text.to_string());
                if !out.iter().any(|(n, _)| n == name) {
                    out.push((name.to_string(), text.to_string()));
                }
            }
        }
        Ok(())
    }
}

fn lock(c: &SchemaCache) -> std::sync::MutexGuard<'_, HashMap<u32, Compiled>> {
    c.0.lock().unwrap_or_else(|e| e.into_inner())
}

fn type_name(t: &str) -> &'static str {
    match t {
        "JSON" => "JSON",
        "PROTOBUF" => "PROTOBUF",
        _ => "AVRO",
    }
}

/// A field's schema id and body, when it is in the wire format.
fn split(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A registry router that knows schema 7 (and counts the calls), and a compiler whose decoder upper-cases.
    fn services(calls: Arc<AtomicUsize>) -> Services {
        services_decoding(
            calls,
            Arc::new(|b: &[u8]| {
                std::str::from_utf8(b)
                    .map(|s| format!("\"{}\"", s.to_uppercase()))
                    .map_err(|e| e.to_string())
            }),
        )
    }

    /// The registry router of [`services`], and a compiler whose decoder is `d`.
    fn services_decoding(calls: Arc<AtomicUsize>, d: SchemaDecoder) -> Services {
        use axum::routing::get;
        let router = axum::Router::new().route(
            "/schemas/ids/{id}",
            get(move |axum::extract::Path(id): axum::extract::Path<u32>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if id == 7 {
                        (StatusCode::OK, r#"{"schema": "{}", "schemaType": "JSON"}"#)
                    } else {
                        (
                            StatusCode::NOT_FOUND,
                            r#"{"error_code": 40403, "message": "Schema not found"}"#,
                        )
                    }
                }
            }),
        );
        let s = Services::default();
        s.set_registry("127.0.0.1:8081".parse().unwrap(), router);
        s.set_schema_compiler(Arc::new(move |t: &str, _: &str, _: &[(String, String)]| {
            assert_eq!(t, "JSON");
            Ok(d.clone())
        }));
        s
    }

    fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { tokio::task::spawn_blocking(f).await.unwrap() })
    }

    #[test]
    fn known_ids_decode_once_fetched_unknown_ones_and_other_bytes_say_why() {
        let calls = Arc::new(AtomicUsize::new(0));
        let s = services(calls.clone());
        let cache = Arc::new(SchemaCache::default());
        let (s2, c2) = (s.clone(), cache.clone());
        let out = run(move || {
            let mut d = Decoding::new(&s2, &c2).unwrap();
            let mut budget = 1 << 20;
            let mut out = Vec::new();
            for bytes in [
                &b"\0\0\0\0\x07ab"[..],
                b"\0\0\0\0\x07cd",
                b"\0\0\0\0\x09ab",
                b"\0\0\0\0\x09ab",
                b"plain",
            ] {
                out.push(d.field(bytes, &mut budget));
            }
            out
        });
        assert_eq!(
            out[0],
            json!({"schema_id": 7, "schema_type": "JSON", "value": "AB", "json": "\"AB\""})
        );
        assert_eq!(out[1]["value"], "CD");
        assert_eq!(out[2]["schema_id"], 9);
        assert!(
            out[2]["error"]
                .as_str()
                .unwrap()
                .contains("not in the schema registry"),
            "{}",
            out[2]
        );
        assert_eq!(out[3], out[2]);
        assert!(out[4]["error"].as_str().unwrap().contains("wire format"));
        // Id 7 once (then cached), id 9 once in this request.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A later request finds 7 in the cache and asks for 9 again (it may have been registered since).
        let (s3, c3) = (s.clone(), cache.clone());
        run(move || {
            let mut d = Decoding::new(&s3, &c3).unwrap();
            let mut budget = 1 << 20;
            d.field(b"\0\0\0\0\x07ab", &mut budget);
            d.field(b"\0\0\0\0\x09ab", &mut budget);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// The decoder's text comes back as written beside the parsed value: its fields in the schema's order, where
    /// `value`'s keys are sorted; both count against the answer's budget.
    #[test]
    fn the_decoded_text_keeps_its_field_order_and_counts_twice() {
        let text = r#"{"zeta":1,"alpha":{"y":2,"b":3}}"#;
        let d: SchemaDecoder = Arc::new(move |_: &[u8]| Ok(text.to_string()));
        let s = services_decoding(Arc::new(AtomicUsize::new(0)), d);
        let cache = Arc::new(SchemaCache::default());
        let (out, over) = run(move || {
            let mut d = Decoding::new(&s, &cache).unwrap();
            let mut budget = 2 * text.len();
            let out = d.field(b"\0\0\0\0\x07ab", &mut budget);
            assert_eq!(budget, 0);
            // One byte short of twice the text: refused, and the budget is left as it was.
            let mut budget = 2 * text.len() - 1;
            let over = d.field(b"\0\0\0\0\x07ab", &mut budget);
            assert_eq!(budget, 2 * text.len() - 1);
            (out, over)
        });
        assert_eq!(out["json"], text, "{out}");
        assert_eq!(out["value"], json!({"alpha": {"b": 3, "y": 2}, "zeta": 1}));
        assert!(
            out["value"].to_string().starts_with(r#"{"alpha""#),
            "serde_json sorts the keys: {out}"
        );
        assert!(
            over["error"]
                .as_str()
                .unwrap()
                .contains("more than this answer still holds"),
            "{over}"
        );
    }

    #[test]
    fn without_a_registry_each_field_says_so() {
        let out = run(|| {
            let s = Services::default();
            let cache = SchemaCache::default();
            let mut d = Decoding::new(&s, &cache).unwrap();
            d.field(b"\0\0\0\0\x07ab", &mut 100)
        });
        assert_eq!(out["schema_id"], 7);
        assert!(
            out["error"]
                .as_str()
                .unwrap()
                .contains("--registry-listener none"),
            "{out}"
        );
    }
}
