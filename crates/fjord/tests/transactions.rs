//! End-to-end tests of transactions: real broker processes driven by confluent-kafka transactional producers and
//! read_committed consumers (tests/clients/txn_*.py), across kill -9 and restarts of the broker.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Light internal topics, no initial rebalance delay, and timed-out transactions aborted within half a second.
const TXN_OVERRIDES: &[(&str, &str)] = &[
    ("transaction.state.log.num.partitions", "4"),
    ("offsets.topic.num.partitions", "4"),
    ("group.initial.rebalance.delay.ms", "0"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "500",
    ),
];

fn txn_broker(dir: &tempfile::TempDir) -> BrokerProc {
    BrokerProc::start(&dir.path().join("data"), TXN_OVERRIDES)
}

fn assert_ok(script: &str, out: &str) {
    assert!(
        out.lines().any(|l| l.starts_with("ok")),
        "{script} did not report ok:\n{out}"
    );
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[test]
fn transactions_commit_abort_and_read_committed_survive_a_restart() {
    let dir = temp_dir();
    let mut broker = txn_broker(&dir);
    let out = run_client("txn_commit_abort.py", &[&broker.bootstrap], CLIENT_TIMEOUT);
    assert_ok("txn_commit_abort.py", &out);
    for p in 0..2 {
        let segments = segment_files(&broker.data_dir.join(format!("txn-{p}")));
        assert!(
            segments > 2,
            "txn-{p}: expected transactions spread over several segments, found {segments}"
        );
    }
    // Aborted-transaction and LSO state must come back from the log after a crash.
    broker.kill9();
    broker.restart();
    let out = run_client(
        "txn_commit_abort.py",
        &[&broker.bootstrap, "verify"],
        CLIENT_TIMEOUT,
    );
    assert_ok("txn_commit_abort.py verify", &out);
}

#[test]
fn consume_transform_produce_is_exactly_once_across_kill_9() {
    let dir = temp_dir();
    let mut broker = txn_broker(&dir);
    let out = run_client(
        "txn_ctp.py",
        &[&broker.bootstrap, "seed", "300"],
        CLIENT_TIMEOUT,
    );
    assert_ok("txn_ctp.py seed", &out);

    let ready_file = dir.path().join("ready");
    let out_path = dir.path().join("ctp-first.stdout");
    let err_path = dir.path().join("ctp-first.stderr");
    let logs = || {
        format!(
            "first run stdout:\n{}\nfirst run stderr:\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default(),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    };
    let mut app = Command::new(python())
        .arg(workspace_root().join("tests/clients/txn_ctp.py"))
        .arg(&broker.bootstrap)
        .arg("run")
        .arg(&ready_file)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start the consume-transform-produce app");
    let started = Instant::now();
    while !ready_file.exists() {
        if let Some(status) = app.try_wait().unwrap() {
            panic!(
                "the app exited ({status}) before its first commit; {}",
                logs()
            );
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = app.kill();
            let _ = app.wait();
            panic!("the app committed nothing in 60 s; {}", logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Crash the broker mid-stream, with transactions (and their offset commits) in flight.
    std::thread::sleep(Duration::from_secs(1));
    if let Some(status) = app.try_wait().unwrap() {
        panic!(
            "the app exited ({status}) before the broker was killed; {}",
            logs()
        );
    }
    broker.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let _ = app.kill();
    let _ = app.wait();
    let first = logs();
    eprintln!("{first}");
    assert!(
        !first.lines().any(|l| l.starts_with("ok")),
        "the first run finished before the kill, so the crash tested nothing; {first}"
    );

    // A new instance fences the old one's transaction and finishes the job.
    broker.restart();
    let out = run_client(
        "txn_ctp.py",
        &[
            &broker.bootstrap,
            "run",
            dir.path().join("ready-2").to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_ok("txn_ctp.py run (after the restart)", &out);
    let out = run_client(
        "txn_ctp.py",
        &[&broker.bootstrap, "verify", "300"],
        CLIENT_TIMEOUT,
    );
    assert_ok("txn_ctp.py verify", &out);
}

#[test]
fn abandoned_transactions_time_out_and_new_instances_fence_old_ones() {
    let dir = temp_dir();
    let broker = txn_broker(&dir);
    let out = run_client(
        "txn_timeout_fencing.py",
        &[&broker.bootstrap, "abandon"],
        CLIENT_TIMEOUT,
    );
    assert!(out.contains("abandoned"), "{out}");
    let out = run_client(
        "txn_timeout_fencing.py",
        &[&broker.bootstrap, "after"],
        CLIENT_TIMEOUT,
    );
    assert_ok("txn_timeout_fencing.py after", &out);
    let metrics = http_get(broker.http.as_deref().unwrap(), "/metrics");
    assert!(
        metrics.contains("fjord_transactions_timed_out_total 1"),
        "the abandoned transaction was counted as timed out:\n{metrics}"
    );
}

#[test]
fn a_transaction_open_across_a_broker_crash_still_times_out() {
    let dir = temp_dir();
    let mut broker = txn_broker(&dir);
    let out = run_client(
        "txn_timeout_fencing.py",
        &[&broker.bootstrap, "abandon"],
        CLIENT_TIMEOUT,
    );
    assert!(out.contains("abandoned"), "{out}");
    // The coordinator must recover the ongoing transaction from its log and still abort it on timeout.
    broker.kill9();
    broker.restart();
    let out = run_client(
        "txn_timeout_fencing.py",
        &[&broker.bootstrap, "after"],
        CLIENT_TIMEOUT,
    );
    assert_ok("txn_timeout_fencing.py after (after a restart)", &out);
}

/// The broker's `fjord_topic_duplicate_batches_total` for `topic` (0 if absent), and the whole exposition.
fn duplicate_batches(broker: &BrokerProc, topic: &str) -> (f64, String) {
    let metrics = http_get(broker.http.as_deref().unwrap(), "/metrics");
    let prefix = format!("fjord_topic_duplicate_batches_total{{topic=\"{topic}\"}} ");
    let value = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (value, metrics)
}

/// A TCP proxy in front of the broker that cuts a connection right after forwarding a whole
/// Produce request: the broker handles the request, the client never sees the response and must retry.
struct ChaosProxy {
    addr: String,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Where new connections go; a restarted broker has a new port.
    upstream: std::sync::Arc<std::sync::Mutex<String>>,
    /// While set, new connections wait before being forwarded (set by a cut when `pause_after_cut`).
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ChaosProxy {
    /// Listens on a free loopback port; connections go to `upstream` once [`ChaosProxy::serve`] runs.
    fn bind() -> (ChaosProxy, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = ChaosProxy {
            addr: listener.local_addr().unwrap().to_string(),
            cuts: Default::default(),
            upstream: Default::default(),
            paused: Default::default(),
        };
        (proxy, listener)
    }

    /// Cuts every `every`-th Produce request's connection, at most `max_cuts` times, then just forwards. With
    /// `pause_after_cut`, a cut also holds new connections until `paused` is cleared.
    fn serve(
        &self,
        listener: std::net::TcpListener,
        upstream: String,
        every: usize,
        max_cuts: usize,
        pause_after_cut: bool,
    ) {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        *self.upstream.lock().unwrap() = upstream;
        let upstream = self.upstream.clone();
        let cuts = self.cuts.clone();
        let paused = self.paused.clone();
        let produces = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                for _ in 0..3000 {
                    if !paused.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let target = upstream.lock().unwrap().clone();
                let Ok(mut broker) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let (mut c2, mut b2) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
                // Responses: copied through until either side closes.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut b2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let (cuts, produces, paused) = (cuts.clone(), produces.clone(), paused.clone());
                // Requests: forwarded frame by frame so the API key is known.
                std::thread::spawn(move || loop {
                    let mut len = [0u8; 4];
                    if client.read_exact(&mut len).is_err() {
                        let _ = broker.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
                    if client.read_exact(&mut frame).is_err()
                        || broker.write_all(&len).is_err()
                        || broker.write_all(&frame).is_err()
                    {
                        let _ = broker.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    let is_produce = frame.len() >= 2 && frame[0] == 0 && frame[1] == 0;
                    if is_produce
                        && (produces.fetch_add(1, Ordering::SeqCst) + 1) % every == 0
                        && cuts.load(Ordering::SeqCst) < max_cuts
                    {
                        // The client loses the connection at once, so it never sees the answer; the broker
                        // side stays open a little longer so the request is surely handled.
                        if pause_after_cut {
                            paused.store(true, Ordering::SeqCst);
                        }
                        cuts.fetch_add(1, Ordering::SeqCst);
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        std::thread::sleep(Duration::from_millis(100));
                        let _ = broker.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                });
            }
        });
    }
}

#[test]
fn idempotent_producer_retries_after_lost_responses_write_each_message_once() {
    let dir = temp_dir();
    let (proxy, listener) = ChaosProxy::bind();
    // The broker advertises the proxy, so every client connection after bootstrap goes through it too.
    let advertised = format!("PLAINTEXT://{}", proxy.addr);
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("advertised.listeners", advertised.as_str())],
    );
    proxy.serve(listener, broker.bootstrap.clone(), 7, 12, false);
    let out = run_client(
        "idempotent_retries.py",
        &[&proxy.addr, "20000"],
        CLIENT_TIMEOUT,
    );
    assert!(out.contains("ok"), "{out}");
    let cuts = proxy.cuts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        cuts >= 5,
        "only {cuts} connections were cut; the test injected too few retries"
    );
    // The broker saw the retries and answered them from its producer state instead of appending again.
    let (dups, metrics) = duplicate_batches(&broker, "retried");
    eprintln!("{cuts} connections cut after a produce request; {dups} duplicate batches answered");
    assert!(
        dups >= 1.0,
        "no duplicate batch reached the broker; metrics:\n{metrics}"
    );
}

#[test]
fn kafkajs_transactions_are_read_committed_by_kafkajs_and_kcat() {
    let dir = temp_dir();
    let broker = txn_broker(&dir);
    let script = workspace_root().join("tests/clients/kafkajs/transactions.js");
    let out = run_bounded(
        Command::new("node").arg(&script).arg(&broker.bootstrap),
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kafkajs failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // librdkafka (kcat) agrees on what is committed, and sees everything when reading uncommitted.
    let read = |isolation: &str| -> Vec<String> {
        let out = kcat(
            &[
                "-b",
                &broker.bootstrap,
                "-C",
                "-t",
                "js-txn",
                "-e",
                "-o",
                "beginning",
                "-X",
                &format!("isolation.level={isolation}"),
                "-f",
                "%s\n",
            ],
            None,
            CLIENT_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    let committed: Vec<String> = (0..15).map(|i| format!("c-{i}")).collect();
    assert_eq!(read("read_committed"), committed);
    let all = read("read_uncommitted");
    assert_eq!(all.len(), 25, "{all:?}");
    assert!(all.iter().filter(|v| v.starts_with("a-")).count() == 10);
}

#[test]
fn idempotent_retries_after_a_broker_kill_9_are_still_deduplicated() {
    let dir = temp_dir();
    let (proxy, listener) = ChaosProxy::bind();
    let advertised = format!("PLAINTEXT://{}", proxy.addr);
    let mut broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("advertised.listeners", advertised.as_str())],
    );
    // One cut, after the 40th produce request has reached the broker: the client never hears back, and its
    // reconnection is held until the broker has been killed and restarted, so the retry can only be
    // recognised from the producer state the new process rebuilt from the log.
    proxy.serve(listener, broker.bootstrap.clone(), 40, 1, true);
    let out_path = dir.path().join("producer.out");
    let mut producer = Command::new(python())
        .arg(workspace_root().join("tests/clients/idempotent_retries.py"))
        .args([proxy.addr.as_str(), "30000"])
        .arg(dir.path().join("ready"))
        .arg("100")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start producer");
    let started = Instant::now();
    while proxy.cuts.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = producer.kill();
            panic!("the proxy never cut a produce request");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the broker append and fsync the request whose answer was lost, then kill it without warning.
    std::thread::sleep(Duration::from_millis(300));
    broker.kill9();
    broker.restart();
    *proxy.upstream.lock().unwrap() = broker.bootstrap.clone();
    proxy
        .paused
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(170);
    let status = loop {
        if let Some(s) = producer.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = producer.kill();
            panic!("producer did not finish after the restart");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(status.success() && out.contains("ok"), "{out}");
    // The restarted broker answered the retry from its rebuilt state instead of appending it again.
    let (dups, metrics) = duplicate_batches(&broker, "retried");
    assert!(
        dups >= 1.0,
        "the restarted broker saw no retried batch; metrics:\n{metrics}"
    );
}

#[test]
fn kafka_python_transactions_commit_abort_and_send_offsets() {
    let dir = temp_dir();
    let broker = txn_broker(&dir);
    let out = run_client(
        "kafka_python_transactions.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert_ok("kafka_python_transactions.py", &out);
}
