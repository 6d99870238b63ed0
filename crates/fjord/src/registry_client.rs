//! A small blocking client of the Confluent Schema Registry REST API, for `fjord schemas` and the Avro console
//! tools. It speaks plain HTTP/1.1 (hyper's client half over a Tokio socket, on a runtime of its own so that
//! the synchronous produce and consume loops can call it) to any Confluent-compatible registry, and turns its
//! failures into messages that say what to do: an unreachable registry, or Confluent's `error_code`s
//! (40401 subject not found, 409 incompatible, 42201 invalid schema, ...) in plain words.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde_json::Value;

use crate::client::{CliError, EXIT_FAILURE, EXIT_UNREACHABLE};

/// The registry `fjord start` runs, and the default of every `--registry-url`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8081";

/// Answers larger than this are refused: no registry answer a console tool needs comes near it.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Confluent's content type for requests with a body.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What went wrong with a request.
#[derive(Debug)]
pub enum RegistryError {
    /// No connection, or no answer in time: the registry is down, elsewhere or overloaded.
    Unreachable(String),
    /// The registry answered with an error: the HTTP status, Confluent's `error_code` (the status when the
    /// body has none) and its message.
    Api {
        status: u16,
        code: i64,
        message: String,
    },
    /// The answer is not what the REST API specifies (not JSON, cut short).
    Protocol(String),
}

/// The registry's base URL, split for the requests.
pub struct RegistryClient {
    url: String,
    host: String,
    port: u16,
    /// Path prefix of the API (a registry behind a proxy at `http://host/registry`), without a trailing `/`.
    prefix: String,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
}

impl RegistryClient {
    /// `url` is `http://HOST[:PORT][/PREFIX]`; https and credentials in the URL are refused with a message.
    pub fn new(url: &str, timeout: Duration) -> Result<RegistryClient, CliError> {
        let bad = |why: &str| {
            CliError::bad_args(format!(
                "--registry-url {url}: {why} (expected http://HOST:PORT, e.g. {DEFAULT_URL})"
            ))
        };
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(bad("https is not supported yet; use http"));
        } else if url.contains("://") {
            return Err(bad("only http:// URLs are supported"));
        } else {
            url
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?;
                (h, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
        Ok(RegistryClient {
            url: url.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
            timeout,
            rt,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn get(&self, path: &str) -> Result<Value, RegistryError> {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, RegistryError> {
        self.request("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, RegistryError> {
        self.request("PUT", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, RegistryError> {
        self.request("DELETE", path, None)
    }

    /// One request on a fresh connection (the console tools make a handful); `path` starts with `/` and has
    /// its variable parts escaped with [`segment`].
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RegistryError> {
        let fut = self.send(method, path, body);
        match self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
        {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Unreachable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RegistryError> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        // The connection task ends with the request (the client is dropped after one answer).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::ACCEPT,
                "application/vnd.schemaregistry.v1+json, application/json",
            );
        let payload = match body {
            Some(b) => {
                req = req.header(hyper::header::CONTENT_TYPE, CONTENT_TYPE);
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| RegistryError::Protocol(format!("cannot build the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| RegistryError::Protocol(format!("cannot read the answer: {e}")))?
            .to_bytes();
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return json.ok_or_else(|| {
                RegistryError::Protocol(format!(
                    "the answer to {method} {path} is not JSON: {}",
                    snippet(&bytes)
                ))
            });
        }
        let (code, message) = match &json {
            Some(v) => (
                v.get("error_code")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::from(status)),
                v.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            ),
            None => (i64::from(status), snippet(&bytes)),
        };
        Err(RegistryError::Api {
            status,
            code,
            message,
        })
    }

    /// The error as the user should read it: what failed, why in plain words, and what to do.
    pub fn explain(&self, what: &str, e: RegistryError) -> CliError {
        match e {
            RegistryError::Unreachable(why) => CliError::new(
                EXIT_UNREACHABLE,
                format!(
                    "{what}: cannot reach the schema registry at {} ({why}). Is it running? `fjord start` runs one on {DEFAULT_URL}; point elsewhere with --registry-url.",
                    self.url
                ),
            ),
            RegistryError::Protocol(why) => CliError::failure(format!(
                "{what}: {} does not answer like a Confluent schema registry: {why}",
                self.url
            )),
            RegistryError::Api {
                status,
                code,
                message,
            } => CliError::new(EXIT_FAILURE, format!("{what}: {}", plain(status, code, &message))),
        }
    }
}

/// Confluent's error codes in plain words, with the registry's own message where it says more.
fn plain(status: u16, code: i64, message: &str) -> String {
    let hint = match code {
        40401 => "subject not found (list the subjects with `fjord schemas list`)",
        40402 => "version not found (list the versions with `fjord schemas list SUBJECT`)",
        40403 => "schema not found: no schema has this id, or it was deleted",
        40404 => "the subject was soft-deleted; `fjord schemas delete SUBJECT --permanent` removes it for good",
        40405 => "the subject must be soft-deleted first: run `fjord schemas delete SUBJECT` before --permanent",
        40406 => "that version was soft-deleted; delete it with --permanent to remove it for good",
        40407 => "the version must be soft-deleted first: delete it without --permanent before --permanent",
        40408 => "the subject has no compatibility level of its own (it follows the global one)",
        40409 => "the subject has no mode of its own (it follows the global one)",
        409 => "the schema is incompatible with an earlier version under the subject's compatibility level (see why with `fjord schemas compat`)",
        42201 => "the registry refused the schema as invalid",
        42202 => "not a valid version: give a number from 1 or `latest`",
        42203 => "not a compatibility level: give NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE",
        42204 => "not a mode: give READWRITE, READONLY or IMPORT",
        42205 => "not permitted in the registry's current mode (READONLY?)",
        42206 => "other schemas reference this one; delete those first",
        50001..=50099 => "the registry failed to store or read its schemas (is its Kafka cluster up?)",
        401 | 403 => "the registry wants credentials, which fjord does not send yet",
        415 => "the registry refused the request's content type",
        _ => "",
    };
    let message = message.trim();
    match (hint.is_empty(), message.is_empty()) {
        (true, true) => format!("the registry answered HTTP {status} (error code {code})"),
        (true, false) => format!("{message} (HTTP {status}, error code {code})"),
        (false, true) => format!("{hint} (error code {code})"),
        (false, false) => format!("{hint}: {message} (error code {code})"),
    }
}

fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
    if s.trim().is_empty() {
        "an empty body".into()
    } else {
        s
    }
}

/// One path segment (a subject name) percent-encoded: subjects may hold `/`, `:`, spaces and other bytes a
/// path cannot carry as they are.
pub fn segment(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_prefix() {
        let c = RegistryClient::new("http://localhost:8081/", Duration::from_secs(1)).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("localhost", 8081, "")
        );
        let c = RegistryClient::new("http://10.0.0.1/reg/", Duration::from_secs(1)).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.prefix.as_str()),
            ("10.0.0.1", 80, "/reg")
        );
        let c = RegistryClient::new("127.0.0.1:9", Duration::from_secs(1)).unwrap();
        assert_eq!(c.port, 9);
        for bad in [
            "https://x:1",
            "ftp://x",
            "http://:1",
            "http://u:p@x:1",
            "http://x:port",
        ] {
            let e = RegistryClient::new(bad, Duration::from_secs(1))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.code, crate::client::EXIT_BAD_ARGS, "{bad}");
        }
    }

    #[test]
    fn subjects_are_escaped_as_one_path_segment() {
        assert_eq!(segment("orders-value"), "orders-value");
        assert_eq!(segment(":.ctx:a b/c"), "%3A.ctx%3Aa%20b%2Fc");
    }

    #[test]
    fn confluent_codes_read_as_plain_words() {
        let m = plain(404, 40401, "Subject 'x' not found.");
        assert!(
            m.contains("fjord schemas list") && m.contains("40401"),
            "{m}"
        );
        let m = plain(418, 418, "");
        assert!(m.contains("HTTP 418"), "{m}");
    }
}
