//! The raw-protocol harness shared by the protocol tests: an in-process broker on a temporary directory and a
//! client that sends any request at any version, including the ones no client library sends.

#![allow(dead_code)] // each test binary uses a different part of it

pub mod cluster;
pub mod net;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fjord_broker::config::BrokerConfig;
use fjord_broker::Broker;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    stream: TcpStream,
    correlation: i32,
    /// How long `send` waits for an answer before failing the test (30 s unless set).
    answer_within: Duration,
}

impl Client {
    pub async fn connect(broker: &Broker) -> Client {
        Client::connect_to(broker.local_addr()).await
    }

    /// A connection from another task, which holds the address rather than the broker.
    pub async fn connect_to(addr: std::net::SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            correlation: 0,
            answer_within: Duration::from_secs(30),
        }
    }

    /// The same client, waiting up to `d` for each answer (a request whose work grows with its size).
    pub fn answer_within(mut self, d: Duration) -> Client {
        self.answer_within = d;
        self
    }

    pub async fn send<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        self.correlation += 1;
        let frame = frame(version, self.correlation, req);
        let io = async {
            self.stream.write_all(&frame).await.unwrap();
            let n = self.stream.read_i32().await.unwrap();
            let mut body = vec![0u8; n as usize];
            self.stream.read_exact(&mut body).await.unwrap();
            body
        };
        let within = self.answer_within;
        let body = tokio::time::timeout(within, io)
            .await
            .unwrap_or_else(|_| panic!("the broker did not answer within {within:?}"));
        let mut buf = Bytes::from(body);
        let h = ResponseHeader::decode(&mut buf, R::Response::header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.correlation);
        R::Response::decode(&mut buf, version).unwrap()
    }
}

/// A request as a length-prefixed frame, for tests that write to a socket themselves.
pub fn frame<R: Request>(version: i16, correlation: i32, req: &R) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("protocol-test")));
    let mut frame = BytesMut::from(&[0u8; 4][..]);
    header
        .encode(&mut frame, R::header_version(version))
        .unwrap();
    req.encode(&mut frame, version).unwrap();
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

pub async fn start(dir: &std::path::Path) -> Broker {
    start_with(dir, &[]).await
}

pub async fn start_with(dir: &std::path::Path, extra: &[(&str, &str)]) -> Broker {
    let mut props = BTreeMap::new();
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    for (k, v) in [
        ("listeners", "PLAINTEXT://127.0.0.1:0".to_string()),
        ("log.dirs", dir.display().to_string()),
        ("transaction.state.log.num.partitions", "2".into()),
        ("offsets.topic.num.partitions", "2".into()),
        ("transaction.max.timeout.ms", "60000".into()),
    ] {
        props.entry(k.to_string()).or_insert(v);
    }
    Broker::start(BrokerConfig::from_properties(props).unwrap())
        .await
        .unwrap()
}

pub async fn create_topic(c: &mut Client, name: &str, partitions: i32) {
    let created = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1)]),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}
