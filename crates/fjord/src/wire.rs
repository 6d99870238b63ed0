//! A tiny blocking Kafka-protocol client for the admin requests librdkafka has no API for (DescribeTransactions,
//! ListTransactions, DescribeProducers, ConsumerGroupDescribe), built on the `kafka-protocol` codec.
//!
//! One [`Connection`] is one TCP connection to one broker. Connecting sends ApiVersions first; every request
//! then goes out at the highest version both the codec and the broker speak. A request is a 4-byte big-endian
//! length followed by the request header and body; the response is read the same way, bounded in size
//! ([`MAX_RESPONSE_BYTES`]) and matched to the request by correlation id. Requests are sent one at a time.
//! Every failure becomes a [`CliError`]: a broker that cannot be reached, or that stops answering, ends the
//! command with [`EXIT_UNREACHABLE`].

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request, StrBytes, VersionRange,
};

use crate::client::{CliError, ClientArgs, EXIT_UNREACHABLE};

/// The largest response accepted; a larger length prefix means a confused peer, not a real answer.
pub const MAX_RESPONSE_BYTES: usize = 100 * 1024 * 1024;

const CLIENT_ID: &str = "fjord-cli";
/// Kafka's UNSUPPORTED_VERSION: the broker's answer to an ApiVersions request newer than it speaks (KIP-511).
const UNSUPPORTED_VERSION: i16 = 35;

/// FindCoordinator's key type for consumer group ids.
pub const GROUP_KEY: i8 = 0;
/// FindCoordinator's key type for transactional ids.
pub const TRANSACTION_KEY: i8 = 1;

/// How long to wait between attempts while a coordinator loads or moves.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// A connection to one broker, with the version ranges it announced.
pub struct Connection {
    stream: TcpStream,
    /// `host:port` as given, for messages.
    addr: String,
    timeout: Duration,
    /// API key -> (lowest, highest) version the broker serves.
    versions: BTreeMap<i16, (i16, i16)>,
    next_correlation_id: i32,
}

impl Connection {
    /// Connects to the first reachable address of `--bootstrap-server`; none reachable is the usual
    /// "cannot reach a broker" error (exit code 3).
    pub fn bootstrap(client: &ClientArgs) -> Result<Connection, CliError> {
        for addr in client
            .bootstrap_server
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::connect(addr, client.timeout()) {
                Ok(c) => return Ok(c),
                Err(e) if e.code == EXIT_UNREACHABLE => continue,
                Err(e) => return Err(e),
            }
        }
        Err(client.unreachable())
    }

    /// Connects to `addr` (`host:port`) with `timeout` for connecting and for every read and write, and
    /// learns the broker's API versions.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Connection, CliError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let unreachable = |why: String| {
            CliError::new(
                EXIT_UNREACHABLE,
                format!("cannot reach the broker at {addr}: {why}. Is it running?"),
            )
        };
        let targets: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve the address ({e})")))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for t in &targets {
            match TcpStream::connect_timeout(t, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            unreachable(last.map_or_else(|| "no address".to_string(), |e| e.to_string()))
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| unreachable(e.to_string()))?;
        let mut conn = Connection {
            stream,
            addr: addr.to_string(),
            timeout,
            versions: BTreeMap::new(),
            next_correlation_id: 1,
        };
        conn.negotiate()?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// ApiVersions at the codec's newest version; a broker that speaks an older one answers
    /// UNSUPPORTED_VERSION with a v0 body listing its range (KIP-511), and the request is repeated at the
    /// highest version both sides speak.
    fn negotiate(&mut self) -> Result<(), CliError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::VERSIONS.max;
        for _ in 0..2 {
            let body = self.round_trip(&request, version)?;
            let error = body
                .get(..2)
                .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]));
            // The error answer is always a v0 body, whatever version was asked for.
            let decode_version = if error == UNSUPPORTED_VERSION {
                0
            } else {
                version
            };
            let response = ApiVersionsResponse::decode(&mut body.as_slice(), decode_version)
                .map_err(|e| self.malformed(ApiKey::ApiVersions, e))?;
            let theirs = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map(|k| (k.min_version, k.max_version));
            if response.error_code == UNSUPPORTED_VERSION {
                match pick_version(ApiVersionsRequest::VERSIONS, theirs) {
                    Some(v) if v < version => {
                        version = v;
                        continue;
                    }
                    _ => break,
                }
            }
            if response.error_code != 0 {
                return Err(CliError::failure(format!(
                    "the broker at {} refused ApiVersions: {}",
                    self.addr,
                    error_name(response.error_code)
                )));
            }
            self.versions = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            return Ok(());
        }
        Err(CliError::failure(format!(
            "the broker at {} speaks no version of ApiVersions this client knows (v{}-v{}); is it a Kafka broker?",
            self.addr,
            ApiVersionsRequest::VERSIONS.min,
            ApiVersionsRequest::VERSIONS.max
        )))
    }

    /// The version `R` goes out at: the highest both the codec and the broker speak.
    pub fn version<R: Request>(&self) -> Result<i16, CliError> {
        let theirs = self.versions.get(&R::KEY).copied();
        pick_version(R::VERSIONS, theirs).ok_or_else(|| {
            let broker = theirs.map_or_else(
                || "does not offer it at all".to_string(),
                |(lo, hi)| format!("serves v{lo}-v{hi}"),
            );
            CliError::failure(format!(
                "the broker at {} does not support {} (API key {}) at a version this client speaks \
                 (v{}-v{}; the broker {broker}); it may be too old for this command",
                self.addr,
                api_name(R::KEY),
                R::KEY,
                R::VERSIONS.min,
                R::VERSIONS.max
            ))
        })
    }

    /// Sends `request` at the negotiated version; returns the response and that version.
    pub fn send<R: Request>(&mut self, request: &R) -> Result<(R::Response, i16), CliError> {
        let version = self.version::<R>()?;
        let body = self.round_trip(request, version)?;
        let response = R::Response::decode(&mut body.as_slice(), version)
            .map_err(|e| self.malformed(api_key(R::KEY), e))?;
        Ok((response, version))
    }

    /// Writes one request frame and reads its response frame; returns the response body (header removed).
    fn round_trip<R: Request>(&mut self, request: &R, version: i16) -> Result<Vec<u8>, CliError> {
        let key = api_key(R::KEY);
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = vec![0u8; 4];
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| {
                CliError::failure(format!("cannot encode {key:?} v{version} request: {e}"))
            })?;
        let len = i32::try_from(frame.len() - 4)
            .map_err(|_| CliError::failure(format!("{key:?} request too large")))?;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&frame)
            .map_err(|e| self.io_error(key, &e))?;

        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| self.io_error(key, &e))?;
        let len = i32::from_be_bytes(len);
        let len = usize::try_from(len)
            .ok()
            .filter(|n| *n <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| {
                CliError::failure(format!(
                    "the broker at {} sent a {key:?} response of {len} bytes (the limit is {MAX_RESPONSE_BYTES}); is it a Kafka broker?",
                    self.addr
                ))
            })?;
        let mut body = vec![0u8; len];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| self.io_error(key, &e))?;
        let mut buf = body.as_slice();
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(|e| self.malformed(key, e))?;
        if header.correlation_id != correlation_id {
            return Err(CliError::failure(format!(
                "the broker at {} answered {key:?} with correlation id {} (expected {correlation_id})",
                self.addr, header.correlation_id
            )));
        }
        Ok(buf.to_vec())
    }

    fn io_error(&self, key: ApiKey, e: &std::io::Error) -> CliError {
        let what = match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                "the broker at {} did not answer {key:?} within {} ms",
                self.addr,
                self.timeout.as_millis()
            ),
            ErrorKind::UnexpectedEof => format!(
                "the broker at {} closed the connection instead of answering {key:?}",
                self.addr
            ),
            _ => format!(
                "lost the connection to the broker at {} during {key:?}: {e}",
                self.addr
            ),
        };
        CliError::new(EXIT_UNREACHABLE, what)
    }

    fn malformed(&self, key: ApiKey, e: impl std::fmt::Display) -> CliError {
        CliError::failure(format!(
            "cannot decode the {key:?} response from the broker at {}: {e}",
            self.addr
        ))
    }
}

/// A connection to a broker found in the metadata or by FindCoordinator; "unreachable" names the broker and
/// its address.
pub fn broker_connection(client: &ClientArgs, id: i32, addr: &str) -> Result<Connection, CliError> {
    Connection::connect(addr, client.timeout()).map_err(|mut e| {
        e.message = format!("broker {id}: {}", e.message);
        e
    })
}

/// The coordinator of `key` (a group id for [`GROUP_KEY`], a transactional id for [`TRANSACTION_KEY`]):
/// (node id, host:port). `noun` names the key in messages ("group", "transactional id"). Waits (until
/// `deadline`) while the coordinator is not available yet, e.g. while its internal topic is being created.
pub fn find_coordinator(
    conn: &mut Connection,
    key_type: i8,
    noun: &str,
    key: &str,
    deadline: Instant,
) -> Result<(i32, String), CliError> {
    let key_bytes = StrBytes::from_string(key.to_string());
    loop {
        let version = conn.version::<FindCoordinatorRequest>()?;
        // v4 replaced the single key with a batch of keys.
        let request = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key_bytes.clone()])
        } else {
            FindCoordinatorRequest::default().with_key(key_bytes.clone())
        }
        .with_key_type(key_type);
        let (resp, version) = conn.send(&request)?;
        let (error, message, node, host, port) = if version >= 4 {
            let c = resp.coordinators.into_iter().next().ok_or_else(|| {
                CliError::failure(format!(
                    "the broker at {} returned no coordinator for {noun} `{key}`",
                    conn.addr()
                ))
            })?;
            (c.error_code, c.error_message, c.node_id, c.host, c.port)
        } else {
            (
                resp.error_code,
                resp.error_message,
                resp.node_id,
                resp.host,
                resp.port,
            )
        };
        match error {
            0 => return Ok((node.0, format!("{}:{port}", host.as_str()))),
            c if retriable(c) && Instant::now() < deadline => std::thread::sleep(RETRY_BACKOFF),
            c => {
                let detail = message.map_or_else(String::new, |m| format!(" ({})", m.as_str()));
                return Err(CliError::failure(format!(
                    "cannot find the coordinator of {noun} `{key}`: {}{detail}",
                    error_name(c)
                )));
            }
        }
    }
}

/// Errors that go away by themselves: a coordinator or leader loading, moving or not elected yet.
pub fn retriable(code: i16) -> bool {
    [
        E::CoordinatorLoadInProgress,
        E::CoordinatorNotAvailable,
        E::NotCoordinator,
        E::NotLeaderOrFollower,
        E::LeaderNotAvailable,
    ]
    .iter()
    .any(|e| e.code() == code)
}

/// The highest version in both `ours` and `theirs`, if they overlap.
fn pick_version(ours: VersionRange, theirs: Option<(i16, i16)>) -> Option<i16> {
    let (lo, hi) = theirs?;
    let v = ours.max.min(hi);
    (v >= ours.min.max(lo)).then_some(v)
}

fn api_key(key: i16) -> ApiKey {
    // Every key this module sends comes from a generated `Request` impl, so it is known to the codec.
    ApiKey::try_from(key).unwrap_or(ApiKey::ApiVersions)
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| format!("API {key}"), |k| format!("{k:?}"))
}

/// A Kafka error code as its name, e.g. `TRANSACTIONAL_ID_NOT_FOUND (105): The transactionalId could not be found`.
pub fn error_name(code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    match code.err() {
        None => "no error".to_string(),
        Some(e) => format!("{e:?} ({code}): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_common_version_is_picked() {
        let ours = VersionRange { min: 0, max: 2 };
        assert_eq!(pick_version(ours, Some((0, 1))), Some(1));
        assert_eq!(pick_version(ours, Some((0, 5))), Some(2));
        assert_eq!(pick_version(ours, Some((2, 2))), Some(2));
        assert_eq!(pick_version(ours, Some((3, 4))), None);
        assert_eq!(
            pick_version(VersionRange { min: 3, max: 9 }, Some((0, 2))),
            None
        );
        assert_eq!(pick_version(ours, None), None);
    }

    #[test]
    fn transient_coordinator_errors_are_retried_and_others_are_not() {
        assert!(retriable(E::CoordinatorLoadInProgress.code()));
        assert!(retriable(E::NotCoordinator.code()));
        assert!(!retriable(E::TransactionalIdNotFound.code()));
        assert!(!retriable(E::GroupIdNotFound.code()));
        assert!(!retriable(0));
    }

    #[test]
    fn error_codes_have_names() {
        assert!(error_name(105).contains("TransactionalIdNotFound"));
        assert!(error_name(0).contains("no error"));
        assert!(error_name(999).contains("999"));
    }

    /// A fake broker on a loopback port: answers one ApiVersions request (at the version asked, or with a v0
    /// UNSUPPORTED_VERSION answer above v`max_api_versions`), then sends `reply` raw to the next request.
    fn fake_broker(max_api_versions: i16, reply: Vec<u8>) -> String {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let read_frame = |s: &mut TcpStream| -> Option<Vec<u8>> {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).ok()?;
                let mut b = vec![0u8; i32::from_be_bytes(len) as usize];
                s.read_exact(&mut b).ok()?;
                Some(b)
            };
            loop {
                let Some(frame) = read_frame(&mut s) else {
                    return;
                };
                let key = i16::from_be_bytes([frame[0], frame[1]]);
                let version = i16::from_be_bytes([frame[2], frame[3]]);
                let mut buf = frame.as_slice();
                let header =
                    kafka_protocol::protocol::decode_request_header_from_buffer(&mut buf).unwrap();
                if key != ApiKey::ApiVersions as i16 {
                    s.write_all(&reply).unwrap();
                    continue;
                }
                let (error, v) = if version > max_api_versions {
                    (UNSUPPORTED_VERSION, 0)
                } else {
                    (0, version)
                };
                let resp = ApiVersionsResponse::default()
                    .with_error_code(error)
                    .with_api_keys(vec![
                        ApiVersion::default()
                            .with_api_key(ApiKey::ApiVersions as i16)
                            .with_min_version(0)
                            .with_max_version(max_api_versions),
                        ApiVersion::default()
                            .with_api_key(ApiKey::DescribeTransactions as i16)
                            .with_min_version(0)
                            .with_max_version(0),
                    ]);
                let mut out = vec![0u8; 4];
                ResponseHeader::default()
                    .with_correlation_id(header.correlation_id)
                    .encode(&mut out, 0)
                    .unwrap();
                resp.encode(&mut out, v).unwrap();
                let n = (out.len() - 4) as i32;
                out[..4].copy_from_slice(&n.to_be_bytes());
                s.write_all(&out).unwrap();
            }
        });
        addr
    }

    /// A fake broker that serves ApiVersions and FindCoordinator (up to v`max_find`), answering the
    /// FindCoordinator requests in turn with the error codes of `errors` (0: node 7 at coord:9093). Every
    /// FindCoordinator request is reported on the channel as (version, key type, keys).
    fn fake_coordinator(
        max_find: i16,
        errors: Vec<i16>,
    ) -> (String, std::sync::mpsc::Receiver<(i16, i8, Vec<String>)>) {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::find_coordinator_response::Coordinator;
        use kafka_protocol::messages::{BrokerId, FindCoordinatorResponse};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut errors = errors.into_iter();
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).is_err() {
                    return;
                }
                let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
                s.read_exact(&mut frame).unwrap();
                let key = i16::from_be_bytes([frame[0], frame[1]]);
                let version = i16::from_be_bytes([frame[2], frame[3]]);
                let mut buf = frame.as_slice();
                let header =
                    kafka_protocol::protocol::decode_request_header_from_buffer(&mut buf).unwrap();
                let mut out = vec![0u8; 4];
                if key == ApiKey::ApiVersions as i16 {
                    ResponseHeader::default()
                        .with_correlation_id(header.correlation_id)
                        .encode(&mut out, 0)
                        .unwrap();
                    let api = |k: ApiKey, max: i16| {
                        ApiVersion::default()
                            .with_api_key(k as i16)
                            .with_min_version(0)
                            .with_max_version(max)
                    };
                    ApiVersionsResponse::default()
                        .with_api_keys(vec![
                            api(ApiKey::ApiVersions, 3),
                            api(ApiKey::FindCoordinator, max_find),
                        ])
                        .encode(&mut out, version)
                        .unwrap();
                } else {
                    let req = FindCoordinatorRequest::decode(&mut buf, version).unwrap();
                    let keys = if version >= 4 {
                        req.coordinator_keys.iter().map(|k| k.to_string()).collect()
                    } else {
                        vec![req.key.to_string()]
                    };
                    tx.send((version, req.key_type, keys.clone())).unwrap();
                    let error = errors.next().unwrap_or(0);
                    let resp = if version >= 4 {
                        FindCoordinatorResponse::default().with_coordinators(vec![
                            Coordinator::default()
                                .with_key(StrBytes::from_string(keys[0].clone()))
                                .with_error_code(error)
                                .with_node_id(BrokerId(7))
                                .with_host(StrBytes::from_static_str("coord"))
                                .with_port(9093),
                        ])
                    } else {
                        FindCoordinatorResponse::default()
                            .with_error_code(error)
                            .with_node_id(BrokerId(7))
                            .with_host(StrBytes::from_static_str("coord"))
                            .with_port(9093)
                    };
                    ResponseHeader::default()
                        .with_correlation_id(header.correlation_id)
                        .encode(&mut out, FindCoordinatorResponse::header_version(version))
                        .unwrap();
                    resp.encode(&mut out, version).unwrap();
                }
                let n = (out.len() - 4) as i32;
                out[..4].copy_from_slice(&n.to_be_bytes());
                s.write_all(&out).unwrap();
            }
        });
        (addr, rx)
    }

    #[test]
    fn coordinators_are_found_by_key_type_in_either_request_layout() {
        let soon = || Instant::now() + Duration::from_secs(5);
        // v4+: a batch of keys; the group key type.
        let (addr, rx) = fake_coordinator(4, vec![]);
        let mut conn = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        let found = find_coordinator(&mut conn, GROUP_KEY, "group", "billing", soon()).unwrap();
        assert_eq!(found, (7, "coord:9093".to_string()));
        assert_eq!(rx.recv().unwrap(), (4, 0, vec!["billing".to_string()]));

        // Before v4: the single key; the transaction key type; a coordinator still loading is asked again.
        let (addr, rx) = fake_coordinator(3, vec![E::CoordinatorLoadInProgress.code()]);
        let mut conn = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        let found = find_coordinator(
            &mut conn,
            TRANSACTION_KEY,
            "transactional id",
            "tx-1",
            soon(),
        )
        .unwrap();
        assert_eq!(found, (7, "coord:9093".to_string()));
        for _ in 0..2 {
            assert_eq!(rx.recv().unwrap(), (3, 1, vec!["tx-1".to_string()]));
        }

        // Other errors end the search, naming the key with its noun.
        let (addr, _rx) = fake_coordinator(4, vec![E::GroupAuthorizationFailed.code()]);
        let mut conn = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        let e = find_coordinator(&mut conn, GROUP_KEY, "group", "billing", soon()).unwrap_err();
        assert!(
            e.message.starts_with(
                "cannot find the coordinator of group `billing`: GroupAuthorizationFailed"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn versions_are_negotiated_down_to_what_the_broker_speaks() {
        use kafka_protocol::messages::{DescribeProducersRequest, DescribeTransactionsRequest};
        let addr = fake_broker(2, Vec::new());
        let conn = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        assert_eq!(conn.version::<DescribeTransactionsRequest>().unwrap(), 0);
        let e = conn.version::<DescribeProducersRequest>().unwrap_err();
        assert!(
            e.message.contains("DescribeProducers") && e.message.contains("does not offer it"),
            "{}",
            e.message
        );
    }

    #[test]
    fn oversized_or_missing_responses_are_clear_errors() {
        use kafka_protocol::messages::DescribeTransactionsRequest;
        let huge = (i32::try_from(MAX_RESPONSE_BYTES).unwrap() + 1)
            .to_be_bytes()
            .to_vec();
        let addr = fake_broker(3, huge);
        let mut conn = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
        let e = conn
            .send(&DescribeTransactionsRequest::default())
            .unwrap_err();
        assert!(e.message.contains("limit"), "{}", e.message);

        // A reply cut short: the connection closes before the body arrives.
        let addr = fake_broker(3, 10i32.to_be_bytes().to_vec());
        let mut conn = Connection::connect(&addr, Duration::from_millis(500)).unwrap();
        let e = conn
            .send(&DescribeTransactionsRequest::default())
            .unwrap_err();
        assert_eq!(e.code, EXIT_UNREACHABLE, "{}", e.message);

        // Nobody listens.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let e = Connection::connect(&dead, Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(e.code, EXIT_UNREACHABLE);
        assert!(e.message.contains(&dead), "{}", e.message);
    }
}
