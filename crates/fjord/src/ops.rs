//! What the operations commands (`topics`, `groups`, `configs`, `records`, `cluster`) share beyond
//! [`crate::client`]: the bad-arguments exit code, the cluster's brokers and controller, and connections to the
//! broker a request must go to (the controller for topic and config changes, a partition's leader for
//! DeleteRecords). These commands speak the Kafka protocol themselves (`wire`) where librdkafka drops the
//! broker's error message, so that the user reads the broker's own words.

use std::collections::BTreeMap;

use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use crate::client::{CliError, ClientArgs};
use crate::wire::{broker_connection, error_name, Connection};

/// Exit code of bad arguments (clap's, and our own validation's), as documented in `fjord --help`.
pub const EXIT_BAD_ARGS: u8 = 2;

pub fn bad_args(message: impl Into<String>) -> CliError {
    CliError::new(EXIT_BAD_ARGS, message)
}

/// The cluster as Metadata describes it.
pub struct Cluster {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    /// Broker id -> (host:port, rack).
    pub brokers: BTreeMap<i32, (String, Option<String>)>,
    pub metadata: MetadataResponse,
    /// The connection the metadata came from.
    pub conn: Connection,
}

impl Cluster {
    /// Metadata of the whole cluster (every topic when `topics` is None), asked of the bootstrap broker. A
    /// Metadata request from here never creates a topic.
    pub fn load(client: &ClientArgs, topics: Option<&[String]>) -> Result<Cluster, CliError> {
        let mut conn = Connection::bootstrap(client)?;
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(kafka_protocol::messages::TopicName(
                                kafka_protocol::protocol::StrBytes::from_string(t.clone()),
                            )))
                    })
                    .collect()
            }));
        let (metadata, _) = conn.send(&request)?;
        let brokers = metadata
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    (
                        format!("{}:{}", b.host.as_str(), b.port),
                        b.rack.as_ref().map(|r| r.to_string()),
                    ),
                )
            })
            .collect();
        Ok(Cluster {
            cluster_id: metadata.cluster_id.as_ref().map(|c| c.to_string()),
            controller_id: metadata.controller_id.0,
            brokers,
            metadata,
            conn,
        })
    }

    /// A connection to broker `id`; the bootstrap connection when that is the broker (or the cluster has one).
    pub fn connect(self, client: &ClientArgs, id: i32) -> Result<Connection, CliError> {
        let Some((addr, _)) = self.brokers.get(&id) else {
            return Err(CliError::failure(format!(
                "broker {id} is not in the cluster (brokers: {})",
                self.broker_list()
            )));
        };
        if self.brokers.len() == 1 || self.conn.addr() == addr {
            return Ok(self.conn);
        }
        broker_connection(client, id, addr)
    }

    /// A connection to the controller, which topic and config changes go to.
    pub fn controller(self, client: &ClientArgs) -> Result<Connection, CliError> {
        let id = self.controller_id;
        if id < 0 || !self.brokers.contains_key(&id) {
            // No controller known (yet): the bootstrap broker answers NOT_CONTROLLER if it is not.
            return Ok(self.conn);
        }
        self.connect(client, id)
    }

    pub fn broker_list(&self) -> String {
        let ids: Vec<String> = self.brokers.keys().map(i32::to_string).collect();
        ids.join(", ")
    }
}

/// The broker's message for a failed resource: its error message when it gave one, else the code's name.
pub fn broker_message(code: i16, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => error_name(code),
    }
}
