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
        refuse_security_properties(client)?;
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

/// The raw-protocol client (`wire`) speaks PLAINTEXT only: a command that would silently ignore `-X`
/// security settings (and then fail obscurely, or worse, talk in clear) refuses them instead.
pub fn refuse_security_properties(client: &ClientArgs) -> Result<(), CliError> {
    let security = client.client_properties.iter().find(|p| {
        let key = p.split_once('=').map_or(p.as_str(), |(k, _)| k).trim();
        let value = p.split_once('=').map_or("", |(_, v)| v).trim();
        (key.starts_with("sasl.") || key.starts_with("ssl."))
            || (key == "security.protocol" && !value.eq_ignore_ascii_case("plaintext"))
    });
    match security {
        Some(p) => Err(CliError::failure(format!(
            "-X `{p}`: this command sends its requests in the Kafka protocol itself (so that the broker's own \
             messages reach you), over PLAINTEXT only; SSL and SASL are not supported by it"
        ))),
        None => Ok(()),
    }
}

/// The broker's message for a failed resource: its error message when it gave one, else the code's name.
pub fn broker_message(code: i16, message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => error_name(code),
    }
}

/// Topic names starting with `__` belong to the platform (`__consumer_offsets`, `__transaction_state`).
pub fn is_reserved(name: &str) -> bool {
    fjord_broker::admin::is_reserved_topic_name(name)
}

/// Whether `name` could be created as a topic: only then does a hint suggest creating it (never a reserved
/// name, a pattern or a name the broker would refuse).
fn creatable(name: &str) -> bool {
    !is_reserved(name) && fjord_meta::validate_topic_name(name).is_ok()
}

/// Exit code 4 for a topic that does not exist, with a hint that fits the name.
pub fn missing_topic(name: &str) -> CliError {
    let hint = if creatable(name) {
        format!(" Create it with `fjord topics create {name}`, or list topics with `fjord topics list`.")
    } else {
        " List topics with `fjord topics list`.".to_string()
    };
    CliError::new(
        crate::client::EXIT_UNKNOWN_TOPIC,
        format!("topic `{name}` does not exist.{hint}"),
    )
}

/// Sends `request` to the controller; a controller that moved meanwhile (NOT_CONTROLLER in any result, as
/// `not_controller` finds it) is looked up again until the client's timeout.
pub fn send_to_controller<R: kafka_protocol::protocol::Request>(
    client: &ClientArgs,
    request: &R,
    not_controller: impl Fn(&R::Response) -> bool,
) -> Result<R::Response, CliError> {
    let deadline = std::time::Instant::now() + client.timeout();
    loop {
        let mut conn = Cluster::load(client, Some(&[]))?.controller(client)?;
        let (resp, _) = conn.send(request)?;
        if !not_controller(&resp) || std::time::Instant::now() >= deadline {
            return Ok(resp);
        }
        std::thread::sleep(crate::wire::RETRY_BACKOFF);
    }
}

/// Kafka's NOT_CONTROLLER.
pub const NOT_CONTROLLER: i16 = 41;
