//! A cluster of in-process brokers formed from Kafka's KRaft properties on free 127.0.0.1 ports and temporary
//! directories, and raw-protocol helpers to produce, fetch and create replicated topics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_broker::config::BrokerConfig;
use fjord_broker::Broker;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::net::{Mode, Net};
use super::{s, Client};

/// Runs the futures concurrently (each on its own task) and returns their outputs in order.
pub async fn join_all<T: Send + 'static>(
    futs: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Free ports on 127.0.0.1 outside the kernel's ephemeral range (`fjord_meta::ports`), so an outgoing connection
/// of a test running in parallel cannot take one before the node binds it.
pub fn free_ports(n: usize) -> Vec<u16> {
    fjord_meta::ports::free_ports("127.0.0.1", n).unwrap()
}

/// The properties of node `id` of a cluster whose controllers listen on `controller_ports`.
pub fn kraft_props(
    id: usize,
    dir: &std::path::Path,
    controller_ports: &[u16],
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let voters: Vec<String> = controller_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect();
    let mut props: BTreeMap<String, String> = [
        ("node.id", id.to_string()),
        ("process.roles", "broker,controller".into()),
        (
            "listeners",
            format!(
                "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{}",
                controller_ports[id - 1]
            ),
        ),
        ("controller.listener.names", "CONTROLLER".into()),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        ("controller.quorum.voters", voters.join(",")),
        ("log.dirs", dir.display().to_string()),
        ("offsets.topic.num.partitions", "2".into()),
        ("transaction.state.log.num.partitions", "2".into()),
        ("replica.fetch.wait.max.ms", "100".into()),
        ("replica.fetch.backoff.ms", "100".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        // `{dir}` stands for this node's own directory (e.g. log.dirs={dir}/a,{dir}/b).
        props.insert(
            k.to_string(),
            v.replace("{dir}", &dir.display().to_string()),
        );
    }
    props
}

pub struct Cluster {
    brokers: Vec<Option<Broker>>,
    props: Vec<BTreeMap<String, String>>,
    /// The fault-injection proxies, for a cluster started with [`Cluster::start_with_net`].
    pub net: Option<Net>,
    _dirs: Vec<tempfile::TempDir>,
    /// The controller ports of the nodes started by `start` (the initial voters), by node id - 1.
    pub controller_ports: Vec<u16>,
}

impl Cluster {
    /// Starts `n` combined broker+controller nodes at once (each waits for a quorum of the others).
    pub async fn start(n: usize, extra: &[(&str, &str)]) -> Cluster {
        Cluster::start_inner(n, extra, false).await
    }

    /// As [`Cluster::start`], with every link between brokers through a fault-injection proxy (`common::net`):
    /// each broker advertises its client proxy (which replication fetches use) and dials the other controllers
    /// through one proxy per pair. A test client may still connect to a broker's real port (`Broker::local_addr`).
    pub async fn start_with_net(n: usize, extra: &[(&str, &str)]) -> Cluster {
        Cluster::start_inner(n, extra, true).await
    }

    async fn start_inner(n: usize, extra: &[(&str, &str)], with_net: bool) -> Cluster {
        let ports = free_ports(n);
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let net = if with_net {
            Some(Net::start(n, &ports).await)
        } else {
            None
        };
        let props: Vec<BTreeMap<String, String>> = (1..=n)
            .map(|id| {
                let mut props = kraft_props(id, dirs[id - 1].path(), &ports, extra);
                if let Some(net) = &net {
                    props.insert(
                        "advertised.listeners".into(),
                        format!("PLAINTEXT://{}", net.client[id - 1].addr),
                    );
                }
                props
            })
            .collect();
        let starts = props.iter().map(|props| {
            let props = props.clone();
            async move { Broker::start(BrokerConfig::from_properties(props).unwrap()).await }
        });
        let brokers = join_all(starts.collect()).await;
        let brokers: Vec<Option<Broker>> = brokers
            .into_iter()
            .map(|b| Some(b.expect("broker starts")))
            .collect();
        if let Some(net) = &net {
            for (i, b) in brokers.iter().enumerate() {
                net.attach(i as i32 + 1, b.as_ref().unwrap());
            }
        }
        let c = Cluster {
            brokers,
            props,
            net,
            _dirs: dirs,
            controller_ports: ports,
        };
        // Registered and unfenced in every broker's view: a broker's start waits for its own unfencing only, and
        // placement (CreateTopics) counts the live brokers the receiving broker has applied.
        c.wait(
            Duration::from_secs(20),
            "every broker registered and live",
            |c| {
                c.live().all(|b| {
                    let st = b.state().meta.state();
                    st.brokers.len() == n && st.live_brokers().len() == n
                })
            },
        )
        .await;
        c
    }

    /// Starts one more node, id `n + 1`, from the properties `props` makes of its id and directory (e.g. a
    /// broker-only or controller-only node); panics if it does not start within 60 s.
    pub async fn add_node(
        &mut self,
        props: impl FnOnce(i32, &std::path::Path) -> BTreeMap<String, String>,
    ) -> i32 {
        let id = self.brokers.len() as i32 + 1;
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::from_properties(props(id, dir.path())).unwrap();
        let broker = tokio::time::timeout(Duration::from_secs(60), Broker::start(config))
            .await
            .expect("the new node starts within 60 s")
            .expect("the new node starts");
        self.brokers.push(Some(broker));
        self._dirs.push(dir);
        id
    }

    /// Starts node `id` (stopped or crashed before) again on its directory, from the properties `props` makes of
    /// its id and directory; panics if it does not start within 60 s.
    pub async fn restart_with(
        &mut self,
        id: i32,
        props: impl FnOnce(i32, &std::path::Path) -> BTreeMap<String, String>,
    ) {
        assert!(self.brokers[(id - 1) as usize].is_none(), "node {id} runs");
        let config =
            BrokerConfig::from_properties(props(id, self._dirs[(id - 1) as usize].path())).unwrap();
        let broker = tokio::time::timeout(Duration::from_secs(60), Broker::start(config))
            .await
            .expect("the node starts again within 60 s")
            .expect("the node starts again");
        self.brokers[(id - 1) as usize] = Some(broker);
    }

    /// `host:port` of every initial voter's controller listener, comma-separated (for
    /// `controller.quorum.bootstrap.servers`).
    pub fn bootstrap_servers(&self) -> String {
        self.controller_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// KRaft's isolated mode: nodes 1..=`controllers` are controller-only voters, the next `brokers` nodes
    /// broker-only observers that find them through `controller.quorum.voters`. Returns once every broker is
    /// registered and live everywhere.
    pub async fn start_isolated(controllers: usize, brokers: usize) -> Cluster {
        let n = controllers + brokers;
        let ports = free_ports(controllers);
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let props = |id: usize| {
            let mut p = kraft_props(id.min(controllers), dirs[id - 1].path(), &ports, &[]);
            p.insert("node.id".into(), id.to_string());
            if id <= controllers {
                p.insert("process.roles".into(), "controller".into());
                p.insert(
                    "listeners".into(),
                    format!("CONTROLLER://127.0.0.1:{}", ports[id - 1]),
                );
            } else {
                p.insert("process.roles".into(), "broker".into());
                p.insert("listeners".into(), "PLAINTEXT://127.0.0.1:0".into());
            }
            p
        };
        let all_props: Vec<BTreeMap<String, String>> = (1..=n).map(props).collect();
        let starts: Vec<_> =
            (1..=n)
                .map(|id| {
                    let config = BrokerConfig::from_properties(all_props[id - 1].clone()).unwrap();
                    async move {
                        tokio::time::timeout(Duration::from_secs(60), Broker::start(config)).await
                    }
                })
                .collect();
        let started = join_all(starts).await;
        let nodes: Vec<Option<Broker>> = started
            .into_iter()
            .map(|b| Some(b.expect("starts within 60 s").expect("node starts")))
            .collect();
        let c = Cluster {
            brokers: nodes,
            props: all_props,
            net: None,
            _dirs: dirs,
            controller_ports: ports,
        };
        c.wait(
            Duration::from_secs(20),
            "every broker registered and live",
            |c| {
                c.live().all(|b| {
                    let st = b.state().meta.state();
                    st.brokers.len() == brokers && st.live_brokers().len() == brokers
                })
            },
        )
        .await;
        c
    }

    pub fn live(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.iter().flatten()
    }

    /// The broker with node id `id`.
    pub fn node(&self, id: i32) -> &Broker {
        self.brokers[(id - 1) as usize]
            .as_ref()
            .expect("that broker is running")
    }

    pub async fn wait(&self, limit: Duration, what: &str, ok: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops broker `id` as a kill -9 would (no controlled shutdown, no clean close).
    pub async fn crash(&mut self, id: i32) {
        let b = self.brokers[(id - 1) as usize].take().unwrap();
        b.crash_for_test().await;
    }

    pub async fn stop(&mut self, id: i32) {
        let b = self.brokers[(id - 1) as usize].take().unwrap();
        b.shutdown().await.unwrap();
    }

    /// Starts broker `id` again (after [`Cluster::stop`]) on its directories, behind its proxies if any.
    pub async fn restart(&mut self, id: i32) {
        let i = (id - 1) as usize;
        assert!(self.brokers[i].is_none(), "broker {id} is running");
        let cfg = BrokerConfig::from_properties(self.props[i].clone()).unwrap();
        let b = Broker::start(cfg).await.expect("the broker restarts");
        if let Some(net) = &self.net {
            net.attach(id, &b);
        }
        self.brokers[i] = Some(b);
    }

    /// Sets node `id`'s links (needs [`Cluster::start_with_net`]): `Drop` isolates it from the other brokers
    /// (and from clients that connect through its advertised address), `Stall` freezes them, `Pass` heals.
    pub fn set_net(&self, id: i32, mode: Mode) {
        self.net
            .as_ref()
            .expect("a cluster started with start_with_net")
            .faults
            .set(id, mode);
    }

    /// Stops every running broker at once (one after another, the last ones would wait for a quorum that
    /// is gone).
    pub async fn shutdown(mut self) {
        let stops: Vec<_> = self
            .brokers
            .iter_mut()
            .filter_map(Option::take)
            .map(|b| async move { b.shutdown().await.unwrap() })
            .collect();
        join_all(stops).await;
    }
}

pub fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant: the encoder then writes one batch (one batch per partition per request).
            sequence: i as i32 - 1,
            timestamp: fjord_broker::now_ms(),
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut out = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    out.freeze()
}

pub async fn produce(
    c: &mut Client,
    topic: &str,
    acks: i16,
    timeout_ms: i32,
    values: &[&str],
) -> (i16, i64) {
    let resp = c
        .send(
            9,
            &ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(timeout_ms)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(values)))])]),
        )
        .await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A consumer's fetch of partition 0 at `offset`: (error, high watermark, record bytes).
pub async fn fetch(c: &mut Client, topic: &str, offset: i64) -> (i16, i64, usize) {
    let resp = c
        .send(
            12,
            &FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)])]),
        )
        .await;
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.as_ref().map_or(0, |r| r.len()),
    )
}

/// Creates `name` with one partition on exactly `replicas` (the first leads).
pub async fn create_on(c: &mut Client, name: &str, replicas: &[i32]) {
    create_on_with(c, name, replicas, &[]).await
}

/// [`create_on`] with topic configs.
pub async fn create_on_with(
    c: &mut Client,
    name: &str,
    replicas: &[i32],
    configs: &[(&str, &str)],
) {
    use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
    let resp = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(replicas.iter().map(|b| BrokerId(*b)).collect())])
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    )]),
        )
        .await;
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
}

pub async fn create(c: &mut Client, name: &str, rf: i16, configs: &[(&str, &str)]) {
    let resp = c
        .send(
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(1)
                    .with_replication_factor(rf)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    )]),
        )
        .await;
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
}

/// (leader, replicas, isr) of partition 0 of `topic` as broker `b`'s metadata says.
pub fn placement(b: &Broker, topic: &str) -> Option<(i32, Vec<i32>, Vec<i32>)> {
    let st = b.state().meta.state();
    let p = st.topics.get(topic)?.partitions.first()?.clone();
    Some((p.leader, p.replicas, p.isr))
}

/// A consumer's fetch of partition 0 at `offset`: (error, high watermark, the records' values).
pub async fn fetch_values(c: &mut Client, topic: &str, offset: i64) -> (i16, i64, Vec<String>) {
    let resp = c
        .send(
            12,
            &FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)])]),
        )
        .await;
    let p = &resp.responses[0].partitions[0];
    let mut buf = p.records.clone().unwrap_or_default();
    (p.error_code, p.high_watermark, values_of(&mut buf))
}

/// The values of the records in `buf` (whole batches), in order.
pub fn values_of(buf: &mut Bytes) -> Vec<String> {
    kafka_protocol::records::RecordBatchDecoder::decode_all(buf)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap())
        .collect()
}

/// Every record of partition 0 of `topic` in broker `b`'s log, read directly (up to its log end, not only to
/// the high watermark): the raw bytes and the values.
pub fn replica_log(b: &Broker, topic: &str) -> (Bytes, Vec<String>) {
    let part = b.state().partitions.get(topic, 0).expect("a replica here");
    let mut bytes = bytes::BytesMut::new();
    let mut offset = 0i64;
    while offset < part.log_end_offset() {
        let chunk = part.read_to_log_end(offset, 1 << 20).unwrap();
        let Some(last) = fjord_log::batch_headers(&chunk).last() else {
            break;
        };
        offset = last.last_offset + 1;
        bytes.extend_from_slice(&chunk);
    }
    let bytes = bytes.freeze();
    let values = values_of(&mut bytes.clone());
    (bytes, values)
}
