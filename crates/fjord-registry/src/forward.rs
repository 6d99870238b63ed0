//! A secondary's forwarding of a write to the primary: one HTTP/1.1 request to the primary's advertised URL,
//! whose answer (status, content type, body) is returned verbatim.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// The header a forwarded request carries: an instance that receives it and is not the primary answers 50004
/// instead of forwarding again (no loops between instances with different views of the election).
pub const FORWARDED_HEADER: &str = "x-fjord-forwarded";

/// How long connecting to the primary may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the primary may take to answer (its write waits up to twice the store's write timeout).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The primary's answer.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum ForwardError {
    /// Nothing was sent: the primary did not accept the connection (it is gone, or not yet listening). The
    /// request may be retried against whatever primary is elected next.
    NotSent(String),
    /// The request may have reached the primary; retrying could apply a non-idempotent write twice.
    Failed(String),
}

/// `http://host:port` (a trailing path is ignored) → `host:port`.
pub fn authority(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("the primary's URL {url} is not an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("the primary's URL {url} has no host"));
    }
    Ok(authority)
}

/// Sends `method path_and_query` with `body` to the primary at `url`.
pub async fn forward(
    url: &str,
    method: Method,
    path_and_query: &str,
    content_type: Option<HeaderValue>,
    body: Bytes,
) -> Result<Answer, ForwardError> {
    let authority = authority(url).map_err(ForwardError::NotSent)?;
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(authority),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ForwardError::NotSent(format!(
                "cannot connect to {url}: {e}"
            )))
        }
        Err(_) => {
            return Err(ForwardError::NotSent(format!(
                "connecting to {url} timed out"
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ForwardError::NotSent(format!("HTTP handshake with {url}: {e}")))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, authority)
        .header(FORWARDED_HEADER, "1");
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| ForwardError::NotSent(format!("cannot build the request: {e}")))?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ForwardError::Failed(format!("{url} did not answer: {e}")))?;
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        // Bounded like a request: the primary's URL comes from a record anyone with access to the election topic
        // could write, so its answer is not trusted to be small.
        let body = Limited::new(resp.into_body(), crate::api::MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| ForwardError::Failed(format!("reading the answer of {url}: {e}")))?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    })
    .await
    .unwrap_or_else(|_| {
        Err(ForwardError::Failed(format!(
            "{url} did not answer in time"
        )))
    });
    conn.abort();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_of_advertised_urls() {
        assert_eq!(authority("http://10.0.0.1:8081"), Ok("10.0.0.1:8081"));
        assert_eq!(authority("http://reg:8081/"), Ok("reg:8081"));
        assert!(authority("https://reg:8081").is_err());
        assert!(authority("http://").is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent_so_it_may_be_retried() {
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = forward(
            &format!("http://127.0.0.1:{port}"),
            Method::PUT,
            "/config",
            None,
            Bytes::new(),
        )
        .await;
        assert!(matches!(r, Err(ForwardError::NotSent(_))), "{:?}", r.err());
    }
}
