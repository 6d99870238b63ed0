//! A small HTTP/1.1 client for the sinks that talk HTTP (Elasticsearch/OpenSearch, the HTTP sink): hyper's
//! client half over a Tokio socket, one connection per request (each request carries a whole batch), every
//! request bounded by a timeout and every answer by a size limit. Plain `http://` only.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;

/// Answers larger than this are refused (a bulk answer for 10,000 items is a few MB).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Where requests go: `http://HOST[:PORT][/PREFIX]`, with optional basic-auth credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    host: String,
    port: u16,
    /// Path prefix without a trailing `/` (a server behind a proxy at `http://host/search`).
    prefix: String,
    /// The `Authorization` header's value.
    auth: Option<String>,
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No connection, or no complete answer in time: worth retrying.
    Unreachable(String),
    /// The answer was not HTTP, or too large.
    Protocol(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Unreachable(e) | HttpError::Protocol(e) => f.write_str(e),
        }
    }
}

impl Target {
    /// Parses `url`; https, and credentials in the URL, are refused with what to do instead.
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = url.trim();
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(format!("{url}: https is not supported yet; use an http:// URL (a TLS-terminating proxy on 127.0.0.1, for example)"));
        } else {
            return Err(format!(
                "{url}: expected an http:// URL such as http://127.0.0.1:9200"
            ));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "{url}: put credentials in connection.username and connection.password, not in the URL"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url}: the port {p} is not a number"))?,
            ),
            _ if !authority.is_empty() => (authority, 80),
            _ => return Err(format!("{url}: no host")),
        };
        Ok(Target {
            url: url.to_string(),
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            prefix: prefix.to_string(),
            auth: None,
        })
    }

    /// Sends basic-auth credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Target {
        self.auth = Some(format!(
            "Basic {}",
            crate::converter::base64_encode(format!("{user}:{password}").as_bytes())
        ));
        self
    }

    /// Sends `body` with `method` to `path` (relative to the URL's own path; empty: the URL itself) and
    /// returns the status and the answer's body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        tokio::time::timeout(timeout, self.request_inner(method, path, headers, body))
            .await
            .map_err(|_| {
                HttpError::Unreachable(format!("{} did not answer within {timeout:?}", self.url))
            })?
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            HttpError::Unreachable(format!("cannot reach {}: {e}", self.url))
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let uri = match (self.prefix.as_str(), path) {
            ("", "") => "/".to_string(),
            (prefix, path) => format!("{prefix}{path}"),
        };
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpError::Protocol(format!("cannot build the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                HttpError::Protocol(format!(
                    "reading the answer of {} failed (or it is larger than {MAX_ANSWER_BYTES} bytes): {e}",
                    self.url
                ))
            })?
            .to_bytes();
        Ok((status, body.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_host_port_and_prefix() {
        let t = Target::parse("http://127.0.0.1:9200/search/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.prefix.as_str()),
            ("127.0.0.1", 9200, "/search")
        );
        assert_eq!(Target::parse("http://es").unwrap().port, 80);
        assert!(Target::parse("https://es:9200")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(Target::parse("http://u:p@es:9200")
            .unwrap_err()
            .contains("connection.username"));
        assert!(Target::parse("es:9200").unwrap_err().contains("http://"));
        assert!(Target::parse("http://es:port").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_unreachable_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let t = Target::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = t
            .request("GET", "/", &[], Vec::new(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Unreachable(_)), "{e:?}");
    }
}
