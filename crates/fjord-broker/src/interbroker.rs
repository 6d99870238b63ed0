//! A small async Kafka-protocol client for what one broker asks another: follower fetches (`replication`) and
//! transaction markers for partitions led elsewhere (`transactions`). One request at a time per connection;
//! every response bounded in size and matched by correlation id.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    stream: TcpStream,
    correlation: i32,
    client_id: String,
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// One request on a fresh connection, the whole exchange (connect included) bounded by `timeout`: what a
/// coordinator's occasional calls to another broker need (markers, KIP-890 verification).
pub async fn request_once<R: Request>(
    addr: &str,
    client_id: String,
    version: i16,
    req: &R,
    timeout: Duration,
) -> std::io::Result<R::Response> {
    let exchange = async {
        let mut conn = Conn::connect(addr, timeout, client_id).await?;
        conn.request(version, req, 1 << 20).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

impl Conn {
    /// Connects to `addr` (host:port) within `timeout`; `client_id` names this broker in the peer's logs.
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        client_id: String,
    ) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            correlation: 0,
            client_id,
        })
    }

    /// Sends `req` at `version` and reads its response, refusing one larger than `max_response` bytes.
    pub async fn request<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        max_response: usize,
    ) -> std::io::Result<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(invalid)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).await?;
        let len = self.stream.read_i32().await?;
        let len = usize::try_from(len)
            .ok()
            .filter(|n| *n <= max_response)
            .ok_or_else(|| invalid(format!("response of {len} bytes")))?;
        let mut body = BytesMut::zeroed(len);
        self.stream.read_exact(&mut body).await?;
        let mut body: Bytes = body.freeze();
        let h = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(invalid)?;
        if h.correlation_id != self.correlation {
            return Err(invalid("mismatched correlation id"));
        }
        let resp = R::Response::decode(&mut body, version).map_err(invalid)?;
        if body.has_remaining() {
            tracing::debug!(left = body.remaining(), "trailing bytes after a response");
        }
        Ok(resp)
    }
}
