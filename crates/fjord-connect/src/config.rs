//! Configuration files: Java `.properties` (worker.properties, connector.properties) and connector `.json`
//! files (`{"name": ..., "config": {...}}` as `POST /connectors` takes, or a flat map), and the worker's
//! typed configuration with Kafka Connect's property names and defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::converter::Converter;
use crate::error::{Error, Result};

/// A connector's configuration: property name to value, as Connect keeps it (every value a string).
pub type ConfigMap = BTreeMap<String, String>;

/// Parses Java properties text: `key=value`, `key: value` or `key value`, `#`/`!` comments, blank lines,
/// backslash line continuations and the usual escapes. Good enough for every file Kafka ships.
pub fn parse_properties(text: &str) -> Result<ConfigMap> {
    let mut out = ConfigMap::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.chars().rev().take_while(|c| *c == '\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let (k, v) = split_property(&logical);
        out.insert(unescape(k.trim()), unescape(v.trim_start()));
        logical.clear();
    }
    if !logical.is_empty() {
        let (k, v) = split_property(&logical);
        out.insert(unescape(k.trim()), unescape(v.trim_start()));
    }
    Ok(out)
}

fn split_property(line: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' => return (&line[..i], &line[i + 1..]),
            c if c.is_whitespace() => {
                let rest = line[i..].trim_start();
                let rest = rest
                    .strip_prefix('=')
                    .or_else(|| rest.strip_prefix(':'))
                    .unwrap_or(rest);
                return (&line[..i], rest);
            }
            _ => {}
        }
    }
    (line, "")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Reads a connector's configuration from a `.properties` or `.json` file (by its extension; `.json` takes
/// `{"name": ..., "config": {...}}` or a flat object of string values).
pub fn read_connector_file(path: &Path) -> Result<ConfigMap> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::BadRequest(format!("cannot read {}: {e}", path.display())))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if !is_json {
        return parse_properties(&text);
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::BadRequest(format!("{} is not valid JSON: {e}", path.display())))?;
    let (name, config) = match v.get("config") {
        Some(config) => (v.get("name").and_then(|n| n.as_str()), config.clone()),
        None => (None, v),
    };
    let mut map = json_config_map(&config)
        .map_err(|e| Error::BadRequest(format!("{}: {e}", path.display())))?;
    if let Some(name) = name {
        map.entry("name".into()).or_insert_with(|| name.to_string());
    }
    Ok(map)
}

/// A JSON object of configs as Connect takes it: every value a string (numbers and booleans are accepted and
/// turned into their text, as Jackson does; nested objects and arrays are refused, naming the key).
pub fn json_config_map(v: &serde_json::Value) -> std::result::Result<ConfigMap, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| "the connector config must be a JSON object of string values".to_string())?;
    let mut map = ConfigMap::new();
    for (k, v) in obj {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            _ => {
                return Err(format!(
                    "the value of config `{k}` must be a string, not {v}"
                ))
            }
        };
        map.insert(k.clone(), s);
    }
    Ok(map)
}

/// The standalone worker's configuration (Kafka Connect's `WorkerConfig`/`StandaloneConfig` names).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `offset.storage.file.filename`: where a standalone worker keeps source offsets (None in distributed
    /// mode: the offsets topic).
    pub offset_file: Option<PathBuf>,
    /// The first of `listeners` (`http://host:port`; Connect's default `http://:8083`).
    pub listener: SocketAddr,
    /// `offset.flush.interval.ms`: how often acknowledged source offsets are written to the offsets file
    /// (also at every task stop).
    pub offset_flush_interval_ms: u64,
    /// `key.converter` (+ `key.converter.schemas.enable`), the default for connectors that set none.
    pub key_converter: Converter,
    /// `value.converter` (+ `value.converter.schemas.enable`).
    pub value_converter: Converter,
    /// `producer.*` properties passed to the source tasks' producers (those librdkafka takes with Kafka's
    /// meaning, see `PRODUCER_OVERRIDES`).
    pub producer_overrides: Vec<(String, String)>,
    /// `consumer.*` properties passed to the sink tasks' consumers (see `CONSUMER_OVERRIDES`).
    pub consumer_overrides: Vec<(String, String)>,
    /// Every property given, for the converter settings of connectors and `GET /` diagnostics.
    pub props: ConfigMap,
}

/// The `producer.` properties a worker passes on: the ones librdkafka knows under the same name with Kafka's
/// meaning (and `max.request.size`, which becomes librdkafka's `message.max.bytes`). Others are Java-client settings
/// librdkafka would refuse; they are ignored with a warning.
pub const PRODUCER_OVERRIDES: &[&str] = &[
    "linger.ms",
    "batch.size",
    "compression.type",
    "delivery.timeout.ms",
    "message.timeout.ms",
    "request.timeout.ms",
    "retry.backoff.ms",
    "client.rack",
];

/// The `consumer.` properties a worker passes on (see `PRODUCER_OVERRIDES`).
pub const CONSUMER_OVERRIDES: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "auto.offset.reset",
    "isolation.level",
    "client.rack",
];

/// A connector's own client settings (Connect's KIP-458 `producer.override.*` for the producers of a source task
/// and of a sink's dead-letter topic, `consumer.override.*` for a sink task's consumer), applied after the worker's
/// `producer.*`/`consumer.*`; the same keys as those are passed on.
pub fn connector_overrides(config: &ConfigMap, producer: bool) -> Vec<(String, String)> {
    if producer {
        overrides(config, "producer.override.", PRODUCER_OVERRIDES)
    } else {
        overrides(config, "consumer.override.", CONSUMER_OVERRIDES)
    }
}

/// The `prefix` properties of `props` that `allowed` names, warning about the others.
fn overrides(props: &ConfigMap, prefix: &str, allowed: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in props {
        let Some(name) = k.strip_prefix(prefix) else {
            continue;
        };
        if prefix.starts_with("producer.") && name == "max.request.size" {
            // Kafka's producer limit on a record's size is librdkafka's message.max.bytes.
            out.push(("message.max.bytes".to_string(), v.trim().to_string()));
        } else if allowed.contains(&name) {
            out.push((name.to_string(), v.trim().to_string()));
        } else {
            tracing::warn!(
                "{k} is ignored: the {prefix}* settings passed on are {}",
                allowed.join(", ")
            );
        }
    }
    out
}

impl WorkerConfig {
    /// Binds the REST listener (`listeners`) and names this worker: the listener, the address it is bound to,
    /// and the worker id other workers and status records know it by (`advertised_worker_id`).
    pub async fn bind_rest(&self) -> Result<(tokio::net::TcpListener, SocketAddr, String)> {
        let listener = tokio::net::TcpListener::bind(self.listener)
            .await
            .map_err(|e| {
                Error::Internal(format!(
                    "cannot listen on {} (listeners): {e}",
                    self.listener
                ))
            })?;
        let rest = listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let worker_id = advertised_worker_id(&self.props, rest)?;
        Ok((listener, rest, worker_id))
    }

    /// A standalone worker's configuration: `offset.storage.file.filename` is required.
    pub fn from_properties(props: ConfigMap) -> Result<WorkerConfig> {
        Self::parse(props, true)
    }

    /// A distributed worker's configuration (its group and topics are `distributed::DistributedConfig`).
    pub fn from_properties_distributed(props: ConfigMap) -> Result<WorkerConfig> {
        Self::parse(props, false)
    }

    fn parse(props: ConfigMap, standalone: bool) -> Result<WorkerConfig> {
        let bootstrap_servers = props
            .get("bootstrap.servers")
            .cloned()
            .unwrap_or_else(|| "localhost:9092".into());
        if bootstrap_servers.trim().is_empty() {
            return Err(Error::BadRequest(
                "bootstrap.servers is empty: give the Kafka cluster as host:port[,host:port...]"
                    .into(),
            ));
        }
        let offset_file = match props.get("offset.storage.file.filename") {
            _ if !standalone => None,
            Some(f) if !f.trim().is_empty() => Some(PathBuf::from(f.trim())),
            _ => {
                return Err(Error::BadRequest(
                    "offset.storage.file.filename is required in standalone mode: the file the source offsets are kept in".into(),
                ))
            }
        };
        let listener = parse_listeners(
            props
                .get("listeners")
                .map(String::as_str)
                .unwrap_or("http://:8083"),
        )?;
        let offset_flush_interval_ms = match props.get("offset.flush.interval.ms") {
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                Error::BadRequest(format!(
                    "offset.flush.interval.ms={v}: expected a number of milliseconds"
                ))
            })?,
            None => 60_000,
        };
        let key_converter = Converter::from_config(&props, "key.converter")?;
        let value_converter = Converter::from_config(&props, "value.converter")?;
        for ignored in ["plugin.path", "rest.extension.classes"] {
            if props.contains_key(ignored) {
                tracing::info!(
                    "{ignored} is ignored: Fjord's connectors and converters are built in"
                );
            }
        }
        Ok(WorkerConfig {
            bootstrap_servers,
            offset_file,
            listener,
            offset_flush_interval_ms,
            key_converter: key_converter.unwrap_or_default(),
            value_converter: value_converter.unwrap_or_default(),
            producer_overrides: overrides(&props, "producer.", PRODUCER_OVERRIDES),
            consumer_overrides: overrides(&props, "consumer.", CONSUMER_OVERRIDES),
            props,
        })
    }
}

/// The worker's id and the address other workers reach its REST API at (`host:port`), as Connect's
/// `RestServer.advertisedUrl`: `rest.advertised.host.name` and `rest.advertised.port` when set, else the bound
/// listener; a listener bound to every interface (`listeners=http://:8083`) is advertised under the machine's
/// host name, never 127.0.0.1, so that workers on different hosts get different ids and can reach each other.
/// `rest.advertised.listener` may only be `http` (the one protocol served).
pub fn advertised_worker_id(props: &ConfigMap, bound: SocketAddr) -> Result<String> {
    if let Some(l) = props.get("rest.advertised.listener").map(|v| v.trim()) {
        if !l.is_empty() && !l.eq_ignore_ascii_case("http") {
            return Err(Error::BadRequest(format!(
                "rest.advertised.listener={l}: only http is served (listeners=http://...); remove it or set it to http"
            )));
        }
    }
    let port = match props.get("rest.advertised.port").map(|v| v.trim()) {
        None | Some("") => bound.port(),
        Some(v) => match v.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(Error::BadRequest(format!(
                    "rest.advertised.port={v}: expected a port number from 1 to 65535, where other workers reach this one's REST API"
                )))
            }
        },
    };
    let host = match props.get("rest.advertised.host.name").map(|v| v.trim()) {
        Some(h) if !h.is_empty() => h.to_string(),
        _ if bound.ip().is_unspecified() => match host_name() {
            Some(h) => h,
            None => {
                tracing::warn!(
                    "the REST API listens on {bound} and the host name is unknown: this worker is advertised as                      127.0.0.1:{port}; set rest.advertised.host.name so that other workers can reach it"
                );
                "127.0.0.1".to_string()
            }
        },
        _ => bound.ip().to_string(),
    };
    Ok(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The machine's host name (Linux's /proc, else the `hostname` command).
fn host_name() -> Option<String> {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_proc.or_else(|| {
        std::process::Command::new("hostname")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    })?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// `listeners=http://host:port[,...]`: the first one is served. An empty host means every interface.
fn parse_listeners(s: &str) -> Result<SocketAddr> {
    let first = s.split(',').next().unwrap_or("").trim();
    let bad = |why: &str| {
        Error::BadRequest(format!(
            "listeners={s}: {why}; expected http://HOST:PORT, e.g. http://127.0.0.1:8083"
        ))
    };
    let rest = if let Some(rest) = first.strip_prefix("http://") {
        rest
    } else if first.starts_with("https://") {
        return Err(bad("https listeners are not supported yet"));
    } else {
        return Err(bad("the listener must start with http://"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| bad("the host must be an IP address, localhost or empty"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_like_java() {
        let p = parse_properties(
            "# comment\n! also\nbootstrap.servers=localhost:9092\nkey.converter : org.apache.kafka.connect.json.JsonConverter\n\
             name a b\nlong=one\\\n   two\nesc=a\\=b\\nc\n\n",
        )
        .unwrap();
        assert_eq!(p["bootstrap.servers"], "localhost:9092");
        assert_eq!(
            p["key.converter"],
            "org.apache.kafka.connect.json.JsonConverter"
        );
        assert_eq!(p["name"], "a b");
        assert_eq!(p["long"], "onetwo");
        assert_eq!(p["esc"], "a=b\nc");
    }

    #[test]
    fn the_advertised_worker_id_follows_connects_settings_and_never_defaults_to_loopback() {
        let props = |kv: &[(&str, &str)]| -> ConfigMap {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let any: SocketAddr = "0.0.0.0:8083".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        // Bound to every interface: the host name, so that two hosts' workers differ.
        let id = advertised_worker_id(&props(&[]), any).unwrap();
        assert_eq!(id, format!("{}:8083", host_name().unwrap()));
        assert!(!id.starts_with("127.0.0.1"), "{id}");
        assert_eq!(
            advertised_worker_id(&props(&[]), local).unwrap(),
            "127.0.0.1:9000"
        );
        let both = props(&[
            ("rest.advertised.host.name", "worker-2.example"),
            ("rest.advertised.port", "18083"),
            ("rest.advertised.listener", "HTTP"),
        ]);
        assert_eq!(
            advertised_worker_id(&both, any).unwrap(),
            "worker-2.example:18083"
        );
        assert_eq!(
            advertised_worker_id(&props(&[("rest.advertised.host.name", "::1")]), local).unwrap(),
            "[::1]:9000"
        );
        for (k, v, says) in [
            ("rest.advertised.listener", "https", "only http"),
            ("rest.advertised.port", "0", "1 to 65535"),
            ("rest.advertised.port", "x", "1 to 65535"),
        ] {
            let e = advertised_worker_id(&props(&[(k, v)]), local)
                .unwrap_err()
                .to_string();
            assert!(e.contains(k) && e.contains(says), "{e}");
        }
    }

    #[test]
    fn listeners_take_connect_forms_and_reject_others() {
        assert_eq!(
            parse_listeners("http://:8083").unwrap().to_string(),
            "0.0.0.0:8083"
        );
        assert_eq!(
            parse_listeners("http://127.0.0.1:0,http://x:1")
                .unwrap()
                .to_string(),
            "127.0.0.1:0"
        );
        assert!(parse_listeners("https://:8443")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(parse_listeners("127.0.0.1:8083").is_err());
        assert!(parse_listeners("http://127.0.0.1:x").is_err());
    }

    #[test]
    fn only_client_overrides_librdkafka_shares_are_passed_on() {
        let mut p = ConfigMap::new();
        p.insert("offset.storage.file.filename".into(), "/tmp/x".into());
        p.insert("consumer.session.timeout.ms".into(), "6000".into());
        p.insert("consumer.partition.assignment.strategy".into(), "x".into());
        p.insert("producer.linger.ms".into(), " 20".into());
        let c = WorkerConfig::from_properties(p).unwrap();
        assert_eq!(
            c.consumer_overrides,
            [("session.timeout.ms".to_string(), "6000".to_string())]
        );
        assert_eq!(
            c.producer_overrides,
            [("linger.ms".to_string(), "20".to_string())]
        );
    }

    #[test]
    fn worker_config_requires_the_offsets_file() {
        let e = WorkerConfig::from_properties(ConfigMap::new()).unwrap_err();
        assert!(
            e.to_string().contains("offset.storage.file.filename"),
            "{e}"
        );
        let mut p = ConfigMap::new();
        p.insert("offset.storage.file.filename".into(), "/tmp/x".into());
        p.insert("offset.flush.interval.ms".into(), "soon".into());
        let e = WorkerConfig::from_properties(p).unwrap_err();
        assert!(e.to_string().contains("offset.flush.interval.ms"), "{e}");
    }
}
