//! `fjord cluster add-voter` / `remove-voter` (AddRaftVoter / RemoveRaftVoter) against real processes: three
//! combined nodes, then a controller-only node (`process.roles=controller`) found through
//! `controller.quorum.bootstrap.servers`, added as a voter and removed again; `fjord cluster status` shows it as
//! an observer, then a voter, then an observer.

mod common;

use std::time::{Duration, Instant};

use common::{fjord, ok, stderr, temp_dir, BrokerProc};

/// (voters, observers) from `fjord cluster status --output json`.
fn quorum(bootstrap: &str) -> (Vec<i64>, Vec<i64>) {
    let out = fjord(bootstrap, &["cluster", "status", "--output", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).expect("status is JSON");
    let ids = |k: &str| {
        let mut ids: Vec<i64> = v["quorum"][k]
            .as_array()
            .unwrap_or_else(|| panic!("no quorum.{k} in {v}"))
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    (ids("voters"), ids("observers"))
}

fn wait_quorum(bootstrap: &str, voters: &[i64], observers: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = quorum(bootstrap);
        if got == (voters.to_vec(), observers.to_vec()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster status says (voters, observers) = {got:?}, wanted ({voters:?}, {observers:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn add_voter_and_remove_voter_change_the_quorum_of_running_processes() {
    let ports = fjord_meta::ports::free_ports("127.0.0.1", 4).unwrap();
    let voters = (0..3)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<_> = (0..4).map(|_| temp_dir()).collect();
    let common = [
        ("controller.listener.names", "CONTROLLER".to_string()),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string(),
        ),
    ];
    // The three combined nodes start together (each waits for a quorum of the others).
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let dir = dirs[i].path().to_path_buf();
            let mut props: Vec<(String, String)> = common
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            props.push(("node.id".into(), (i + 1).to_string()));
            props.push(("process.roles".into(), "broker,controller".into()));
            props.push((
                "listeners".into(),
                format!(
                    "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{}",
                    ports[i]
                ),
            ));
            props.push(("controller.quorum.voters".into(), voters.clone()));
            std::thread::spawn(move || {
                let refs: Vec<(&str, &str)> = props
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                BrokerProc::start(&dir, &refs)
            })
        })
        .collect();
    let brokers: Vec<BrokerProc> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let bootstrap = brokers[0].bootstrap.clone();
    wait_quorum(&bootstrap, &[1, 2, 3], &[]);

    // A controller-only node, found through the bootstrap servers: it joins as an observer.
    let bootstrap_servers = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let controller_listener = format!("CONTROLLER://127.0.0.1:{}", ports[3]);
    let controller = BrokerProc::start(
        dirs[3].path(),
        &[
            ("controller.listener.names", "CONTROLLER"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("node.id", "4"),
            ("process.roles", "controller"),
            ("listeners", &controller_listener),
            ("controller.quorum.bootstrap.servers", &bootstrap_servers),
        ],
    );
    assert_eq!(controller.bootstrap, format!("127.0.0.1:{}", ports[3]));
    wait_quorum(&bootstrap, &[1, 2, 3], &[4]);

    let addr4 = format!("127.0.0.1:{}", ports[3]);
    let out = fjord(
        &bootstrap,
        &["cluster", "add-voter", "--id", "4", "--controller", &addr4],
        None,
    );
    assert!(ok(&out).contains("node 4"), "{}", ok(&out));
    wait_quorum(&brokers[1].bootstrap, &[1, 2, 3, 4], &[]);
    // Adding it again is refused with Kafka's DUPLICATE_VOTER.
    let out = fjord(
        &bootstrap,
        &["cluster", "add-voter", "--id", "4", "--controller", &addr4],
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already a voter"), "{}", stderr(&out));
    // A bad address is refused before anything is sent.
    let out = fjord(
        &bootstrap,
        &[
            "cluster",
            "add-voter",
            "--id",
            "5",
            "--controller",
            "nowhere",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = fjord(&bootstrap, &["cluster", "remove-voter", "--id", "4"], None);
    ok(&out);
    wait_quorum(&brokers[2].bootstrap, &[1, 2, 3], &[4]);
    let out = fjord(&bootstrap, &["cluster", "remove-voter", "--id", "4"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a voter"), "{}", stderr(&out));

    // Topics still work on the changed quorum.
    ok(&fjord(
        &bootstrap,
        &[
            "topics",
            "create",
            "after-voter-changes",
            "--partitions",
            "1",
        ],
        None,
    ));
    drop(controller);
    drop(brokers);
}
