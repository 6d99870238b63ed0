//! `fjord start --brokers N`: the properties of N combined broker+controller nodes on this machine, derived
//! from the one set `fjord start` was given, as an operator would write N `server.properties` files:
//!
//! - `node.id` 1..=N, data in `<each of log.dirs>/broker-<id>`;
//! - client listener: the host and port of `listeners` (default `PLAINTEXT://127.0.0.1:9092`) for broker 1,
//!   the next ports for the others (port 0: each broker gets a free one);
//! - controller listener `CONTROLLER://host:<controller port>`: `--controller-port` for broker 1 (default:
//!   the client port + 100), the next ports for the others (client port 0: free ports);
//! - `metrics.listener` (default 127.0.0.1:8080) the same way, skipping the ports of the other listeners of the
//!   process (the Schema Registry's, 8081 by default): 8080, 8082, 8083, ...;
//! - `default.replication.factor` min(N, 3) unless given.
//!
//! The voters are written to `<data>/controller.quorum.voters` at the first start and read back at every
//! later one, because the raft membership remembers the controller addresses: a restart on other ports (a
//! port 0 run) would leave the nodes unable to find each other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::client::CliError;
use crate::ops::EXIT_BAD_ARGS;

/// A machine is not a data center: more local brokers than this is a typo.
pub const MAX_LOCAL_BROKERS: u16 = 32;

/// The file under the data directory that keeps the voters of a local cluster across restarts.
const VOTERS_FILE: &str = "controller.quorum.voters";

/// Properties that `--brokers` decides per broker; giving them is a contradiction.
const PER_BROKER: &[&str] = &[
    "node.id",
    "broker.id",
    "controller.quorum.voters",
    "controller.listener.names",
    "advertised.listeners",
    "process.roles",
];

fn bad(msg: impl Into<String>) -> CliError {
    CliError::new(EXIT_BAD_ARGS, msg)
}

/// `host:port` of a single `NAME://host:port` listener.
fn single_listener(value: &str) -> Result<(String, String, u16), CliError> {
    let parts: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let [one] = parts[..] else {
        return Err(bad(format!(
            "with --brokers, listeners must be one client listener (NAME://host:port), got `{value}`; \
             the controller listeners are assigned per broker"
        )));
    };
    let (name, rest) = one
        .split_once("://")
        .ok_or_else(|| bad(format!("listeners `{one}` is not NAME://host:port")))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("listeners `{one}` is not NAME://host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("listeners `{one}`: `{port}` is not a port")))?;
    Ok((name.to_string(), host.to_string(), port))
}

/// `port + i`, or 0 for 0; refuses to run past 65535.
fn nth_port(base: u16, i: u16, what: &str) -> Result<u16, CliError> {
    if base == 0 {
        return Ok(0);
    }
    base.checked_add(i)
        .ok_or_else(|| bad(format!("{what} {base} + {i} is past port 65535")))
}

/// Free ports outside the kernel's ephemeral range (`fjord_meta::ports`: checked free, then released; only
/// another process picking fixed ports could take one in between, which then fails the start with an error
/// naming the port).
fn free_ports(host: &str, n: usize) -> Result<Vec<u16>, CliError> {
    fjord_meta::ports::free_ports(host, n)
        .map_err(|e| CliError::failure(format!("cannot find free ports on {host}: {e}")))
}

/// The properties of each of `n` brokers, from `base` (what `fjord start` would give one broker); `reserved`
/// are ports the process listens on besides the brokers (the registry's), which no metrics listener takes.
pub fn plan(
    base: &BTreeMap<String, String>,
    n: u16,
    controller_port: Option<u16>,
    reserved: &[u16],
) -> Result<Vec<BTreeMap<String, String>>, CliError> {
    if let Some(k) = PER_BROKER.iter().find(|k| base.contains_key(**k)) {
        return Err(bad(format!(
            "{k} is decided for each broker by --brokers; leave it out (or run `fjord broker` per node)"
        )));
    }
    let listeners = base
        .get("listeners")
        .cloned()
        .unwrap_or_else(|| "PLAINTEXT://127.0.0.1:9092".into());
    let (client_name, host, client_port) = single_listener(&listeners)?;
    if client_name == "CONTROLLER" {
        return Err(bad(
            "with --brokers, CONTROLLER is the controllers' listener name; name the client listener otherwise",
        ));
    }
    let dirs: Vec<PathBuf> = base
        .get("log.dirs")
        .or_else(|| base.get("log.dir"))
        .map(String::as_str)
        .unwrap_or("./fjord-data")
        .split(',')
        .map(|d| PathBuf::from(d.trim()))
        .collect();
    let root = dirs[0].clone();
    if root.join("__meta").exists() {
        return Err(bad(format!(
            "{} holds a single broker's data (it has __meta); give the cluster another --data-dir",
            root.display()
        )));
    }
    let voters = voters(&root, &host, n, client_port, controller_port)?;
    let metrics: Option<SocketAddr> = match base.get("metrics.listener").map(String::as_str) {
        None | Some("") => None,
        Some(m) => Some(
            m.parse()
                .map_err(|_| bad(format!("metrics.listener `{m}` is not host:port")))?,
        ),
    };
    let protocol_map = base
        .get("listener.security.protocol.map")
        .cloned()
        .unwrap_or_else(|| format!("{client_name}:PLAINTEXT,CONTROLLER:PLAINTEXT"));
    let voters_text = voters
        .iter()
        .map(|(id, port)| format!("{id}@{host}:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let metrics_ports = match metrics {
        Some(m) => metrics_ports(m.port(), n, reserved)?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for i in 0..n {
        let id = i + 1;
        let mut props = base.clone();
        props.remove("log.dir");
        let broker_dirs: Vec<PathBuf> = dirs
            .iter()
            .map(|d| d.join(format!("broker-{id}")))
            .collect();
        props.insert(
            "log.dirs".into(),
            broker_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        props.insert("node.id".into(), id.to_string());
        props.insert("process.roles".into(), "broker,controller".into());
        props.insert("controller.listener.names".into(), "CONTROLLER".into());
        props.insert(
            "listener.security.protocol.map".into(),
            protocol_map.clone(),
        );
        props.insert(
            "listeners".into(),
            format!(
                "{client_name}://{host}:{},CONTROLLER://{host}:{}",
                nth_port(client_port, i, "the client port")?,
                voters[&id]
            ),
        );
        props.insert("controller.quorum.voters".into(), voters_text.clone());
        props
            .entry("default.replication.factor".into())
            .or_insert_with(|| n.min(3).to_string());
        if let Some(m) = metrics {
            let port = metrics_ports[usize::from(i)];
            props.insert(
                "metrics.listener".into(),
                SocketAddr::new(m.ip(), port).to_string(),
            );
        }
        out.push(props);
    }
    Ok(out)
}

/// The metrics port of each of `n` brokers: `first` and the ports after it that are not `reserved` (0: 0 for
/// each, free ports).
fn metrics_ports(first: u16, n: u16, reserved: &[u16]) -> Result<Vec<u16>, CliError> {
    if first == 0 {
        return Ok(vec![0; usize::from(n)]);
    }
    let mut ports = Vec::new();
    let mut next = first;
    while ports.len() < usize::from(n) {
        if !reserved.contains(&next) {
            ports.push(next);
        }
        if ports.len() < usize::from(n) {
            next = next.checked_add(1).ok_or_else(|| {
                bad(format!(
                    "metrics.listener port {first}: the metrics ports of {n} brokers run past port 65535"
                ))
            })?;
        }
    }
    Ok(ports)
}

/// Controller port of each node id: those recorded at the first start, else chosen now and recorded.
fn voters(
    root: &Path,
    host: &str,
    n: u16,
    client_port: u16,
    controller_port: Option<u16>,
) -> Result<BTreeMap<u16, u16>, CliError> {
    let file = root.join(VOTERS_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let recorded = parse_voters(text.trim()).ok_or_else(|| {
            CliError::failure(format!(
                "{} is damaged (`{}`); it should read 1@host:port,2@host:port,...",
                file.display(),
                text.trim()
            ))
        })?;
        if recorded.len() != usize::from(n) {
            return Err(bad(format!(
                "the cluster in {} has {} brokers (see {}); start it with --brokers {}",
                root.display(),
                recorded.len(),
                file.display(),
                recorded.len()
            )));
        }
        if let Some(p) = controller_port {
            if recorded.get(&1) != Some(&p) {
                return Err(bad(format!(
                    "the cluster in {} has its controllers at {} (see {}); --controller-port {p} cannot move them",
                    root.display(),
                    text.trim(),
                    file.display()
                )));
            }
        }
        return Ok(recorded);
    }
    let ports: Vec<u16> = match (controller_port, client_port) {
        (Some(0), _) | (None, 0) => free_ports(host, usize::from(n))?,
        (Some(p), _) => (0..n)
            .map(|i| nth_port(p, i, "--controller-port"))
            .collect::<Result<_, _>>()?,
        (None, c) => {
            let first = c.checked_add(100).ok_or_else(|| {
                bad("give --controller-port: the client port + 100 is past 65535")
            })?;
            (0..n)
                .map(|i| nth_port(first, i, "the controller port"))
                .collect::<Result<_, _>>()?
        }
    };
    if client_port != 0 {
        let client: Vec<u16> = (0..n).map(|i| client_port.saturating_add(i)).collect();
        if let Some(p) = ports.iter().find(|p| client.contains(p)) {
            return Err(bad(format!(
                "controller port {p} is also a client port; pick --controller-port elsewhere"
            )));
        }
    }
    let voters: BTreeMap<u16, u16> = (1..=n).zip(ports).collect();
    let text = voters
        .iter()
        .map(|(id, port)| format!("{id}@{host}:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::create_dir_all(root)
        .and_then(|()| std::fs::write(&file, format!("{text}\n")))
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", file.display())))?;
    Ok(voters)
}

/// `1@host:port,2@host:port` → node id → port.
fn parse_voters(text: &str) -> Option<BTreeMap<u16, u16>> {
    text.split(',')
        .map(|v| {
            let (id, addr) = v.trim().split_once('@')?;
            let (_, port) = addr.rsplit_once(':')?;
            Some((id.parse().ok()?, port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut b: BTreeMap<String, String> = [
            ("log.dirs", dir.display().to_string()),
            ("metrics.listener", "127.0.0.1:8080".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            b.insert(k.to_string(), v.to_string());
        }
        b
    }

    #[test]
    fn three_brokers_get_consecutive_ports_their_own_directories_and_one_voter_set() {
        let dir = tempfile::tempdir().unwrap();
        let planned = plan(&base(dir.path(), &[]), 3, None, &[]).unwrap();
        assert_eq!(planned.len(), 3);
        let voters = "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194";
        for (i, p) in planned.iter().enumerate() {
            let id = i + 1;
            assert_eq!(p["node.id"], id.to_string());
            assert_eq!(
                p["listeners"],
                format!(
                    "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    9091 + id,
                    9191 + id
                )
            );
            assert_eq!(p["controller.quorum.voters"], voters);
            assert_eq!(p["metrics.listener"], format!("127.0.0.1:{}", 8079 + id));
            assert_eq!(p["default.replication.factor"], "3");
            assert_eq!(
                p["log.dirs"],
                dir.path()
                    .join(format!("broker-{id}"))
                    .display()
                    .to_string()
            );
            fjord_broker::config::BrokerConfig::from_properties(p.clone()).unwrap();
        }
        // Recorded, and read back at the next start even with other options.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(VOTERS_FILE)).unwrap(),
            format!("{voters}\n")
        );
        let again = plan(
            &base(dir.path(), &[("listeners", "PLAINTEXT://127.0.0.1:0")]),
            3,
            None,
            &[],
        )
        .unwrap();
        assert_eq!(again[0]["controller.quorum.voters"], voters);
        assert!(plan(&base(dir.path(), &[]), 2, None, &[])
            .unwrap_err()
            .message
            .contains("--brokers 3"));
    }

    #[test]
    fn metrics_listeners_skip_the_registrys_port() {
        let dir = tempfile::tempdir().unwrap();
        let planned = plan(&base(dir.path(), &[]), 3, None, &[8081]).unwrap();
        let metrics: Vec<&str> = planned
            .iter()
            .map(|p| p["metrics.listener"].as_str())
            .collect();
        assert_eq!(
            metrics,
            ["127.0.0.1:8080", "127.0.0.1:8082", "127.0.0.1:8083"]
        );
        assert_eq!(metrics_ports(0, 2, &[8081]).unwrap(), vec![0, 0]);
        assert_eq!(metrics_ports(65534, 2, &[]).unwrap(), vec![65534, 65535]);
        assert!(metrics_ports(65534, 2, &[65535]).is_err());
    }

    #[test]
    fn per_broker_properties_and_single_node_data_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = plan(&base(dir.path(), &[("node.id", "4")]), 3, None, &[]).unwrap_err();
        assert_eq!(e.code, EXIT_BAD_ARGS);
        assert!(e.message.contains("node.id"), "{}", e.message);
        std::fs::create_dir_all(dir.path().join("__meta")).unwrap();
        let e = plan(&base(dir.path(), &[]), 3, None, &[]).unwrap_err();
        assert!(e.message.contains("single broker"), "{}", e.message);
    }

    #[test]
    fn port_zero_picks_free_controller_ports() {
        let dir = tempfile::tempdir().unwrap();
        let planned = plan(
            &base(
                dir.path(),
                &[
                    ("listeners", "PLAINTEXT://127.0.0.1:0"),
                    ("metrics.listener", "127.0.0.1:0"),
                ],
            ),
            3,
            None,
            &[],
        )
        .unwrap();
        let voters = parse_voters(&planned[0]["controller.quorum.voters"]).unwrap();
        assert_eq!(voters.len(), 3);
        assert!(voters.values().all(|p| *p != 0));
        assert!(planned[1]["listeners"].starts_with("PLAINTEXT://127.0.0.1:0,"));
        assert_eq!(planned[2]["metrics.listener"], "127.0.0.1:0");
    }
}
